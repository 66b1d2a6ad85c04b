"""Trained weights for the report's pictures: reproduced runs, saved models, activations.

The store keeps each run's masks but not its trained weights. Training is
bitwise deterministic given the spec (ARCHITECTURE principle 5), so
`reproduce` rebuilds a row's ExperimentSpec and trains it alone through
`cubist.engine.run`, capturing the final parameters with an `on_chunk` hook;
the row's exp_id confirms the rebuilt spec and the retrained accuracy is
compared with the stored one. `load_or_reproduce` caches the weights as
REPORT/models/<exp_id>.npz, in the key format of the search's
`sparsest_<target>.npz` (trained_*, mask_*), so `load_model` reads both.

Activations are numpy float32 forward passes (the same formula as mlp.apply).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cubist import masks as mask_ops, mlp
from cubist.mlp import Layer, Params
from cubist.specs import PRUNE_FAMILY, RANDOM_INIT, ExperimentSpec


class Model(NamedTuple):
  """A trained network to draw.

  params: trained (masked) weights at the run's width w, numpy float32,
    PyTorch orientation. masks: bool masks at w (biases included).
  accuracy_stored: the store's (or search's) accuracy; accuracy_retrained: the
  accuracy of these weights when they were produced. spec_matches: whether the
  rebuilt spec had the row's exp_id (None for a model read from a search npz).
  """
  params: Params
  masks: Params
  accuracy_stored: float
  accuracy_retrained: float
  spec_matches: bool | None

  @property
  def reproduced_exactly(self) -> bool:
    return self.accuracy_stored == self.accuracy_retrained


def init_path(label: str, init_dir: str | os.PathLike) -> str:
  """The spec's init for a stored label: "random", or the npz file's basename in init_dir."""
  if label in (None, RANDOM_INIT):
    return RANDOM_INIT
  return os.path.join(os.fspath(init_dir), os.path.basename(label))


def candidate_specs(row: dict, init_dir: str | os.PathLike) -> list[ExperimentSpec]:
  """ExperimentSpecs a row may have come from, most likely first.

  Pruning runs start dense at their width; a phase-1 or structured training run
  names its widths; any other fixed-mask run (phase 2, retraining) carries the
  stored mask. Older stores lack the pruning settings: they read as defaults.
  """
  options = row.get("method_options")
  options = tuple(sorted(json.loads(options).items())) if options else ()
  base = dict(
      seed=int(row["seed"]), lr=float(row["lr"]), schedule=row["schedule"],
      width=int(row["width"]), epochs=int(row["epochs"]),
      batch_size=int(row.get("batch_size") or 128),
      init=init_path(row.get("init"), init_dir), shared_order=bool(row.get("shared_order")),
      data_order=row.get("data_order") or "feistel", family=row["family"],
      method=row["method"], mask_config=row.get("mask_config"),
      target_nnz=None if row.get("target_nnz") is None else int(row["target_nnz"]),
      extra=row.get("extra"), count_mode=row.get("count_mode") or "reference",
      strength=float(row.get("strength") or 0.0),
      threshold=float(3.0 if row.get("threshold") is None else row["threshold"]),
      method_options=options)
  if row["family"] == PRUNE_FAMILY:
    return [ExperimentSpec(**base)]
  widths = (int(row["d1"]), int(row["d2"]), int(row["d3"]))
  stored = mask_ops.unpack_masks(row["mask"], row["mask_shape"])
  return [ExperimentSpec(**base, mask=stored), ExperimentSpec(**base, widths=widths)]


def spec_from_row(row: dict, init_dir: str | os.PathLike) -> tuple[ExperimentSpec, bool]:
  """The row's ExperimentSpec and whether its exp_id matches the row's.

  Without a match the first candidate (the stored mask) is returned: it trains
  the same network, but the page says that the spec was not confirmed.
  """
  candidates = candidate_specs(row, init_dir)
  for spec in candidates:
    if spec.exp_id() == row["exp_id"]:
      return spec, True
  return candidates[0], False


def reproduce(row: dict, init_dir: str | os.PathLike = "../shared/data", plan=None) -> Model:
  """Retrain one stored run (engine.run in a temporary workdir) and keep its weights.

  plan: the engine.ChunkPlan the sweep used (default: the engine's). Raises
  ValueError (one line) for a run that cannot be rebuilt, e.g. a missing init file.
  """
  if plan is None:
    from cubist.engine import ChunkPlan
    plan = ChunkPlan()
  from cubist import engine  # heavy: only when something is retrained
  spec, matches = spec_from_row(row, init_dir)
  wanted = spec.exp_id()
  captured = {}

  def keep(chunk, inputs, result):
    index = next((i for i, s in enumerate(chunk) if s.exp_id() == wanted), None)
    if index is None:
      return
    take = lambda tree: mlp.pad_params(tuple(
        Layer(np.asarray(l.weight[index]), np.asarray(l.bias[index])) for l in tree), spec.width)
    captured["params"] = take(result.params)
    masks = getattr(result, "masks", None)
    captured["masks"] = take(masks if masks is not None else inputs.masks)
    captured["accuracy"] = float(np.asarray(result.accuracy)[index])

  with tempfile.TemporaryDirectory(prefix="cubist-report-") as workdir:
    # A run's bits do not depend on its chunk (cubist.train pads "unit" chunks
    # to whole vector blocks), so it can be retrained alone.
    engine.run([spec], workdir, sweep_name="report-reproduce",
               plan=plan, on_chunk=keep, progress_stream=io.StringIO()).close()
  if "params" not in captured:
    raise ValueError(f"run {row['exp_id']} was not trained (engine skipped it)")
  masks = tuple(Layer(np.asarray(l.weight, bool), np.asarray(l.bias, bool))
                for l in captured["masks"])
  params = tuple(Layer(np.asarray(l.weight, np.float32), np.asarray(l.bias, np.float32))
                 for l in captured["params"])
  return Model(params, masks, float(row["accuracy"]), captured["accuracy"], matches)


def save_model(model: Model, path: str | os.PathLike) -> Path:
  """Write a Model as an npz with trained_* and mask_* keys (the search's format)."""
  arrays = {f"trained_{k}": v for k, v in mlp.to_numpy_dict(model.params).items()}
  arrays.update({f"mask_{k}": np.asarray(v, bool)
                 for k, v in mlp.to_numpy_dict(model.masks).items()})
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp.npz")
  np.savez(tmp, **arrays, accuracy_stored=model.accuracy_stored,
           accuracy_retrained=model.accuracy_retrained,
           spec_matches=-1 if model.spec_matches is None else int(model.spec_matches))
  os.replace(tmp, path)
  return path


def load_model(path: str | os.PathLike) -> Model:
  """A Model from an npz with trained_* and mask_* keys (ours or the search's)."""
  with np.load(path) as data:
    params = mlp.from_numpy_dict({k[len("trained_"):]: data[k] for k in data.files
                                  if k.startswith("trained_")}, source=str(path))
    masks = tuple(Layer(np.asarray(data[f"mask_layer{i}_weight"], bool),
                        np.asarray(data[f"mask_layer{i}_bias"], bool)) for i in range(1, 5))
    matches = int(data["spec_matches"]) if "spec_matches" in data.files else -1
    return Model(params, masks, float(data["accuracy_stored"]),
                 float(data["accuracy_retrained"]), None if matches < 0 else bool(matches))


def load_or_reproduce(row: dict, cache_dir: str | os.PathLike,
                      init_dir: str | os.PathLike = "../shared/data") -> tuple[Model, bool]:
  """(model, from_cache): the cached REPORT/models/<exp_id>.npz, else `reproduce` and cache it."""
  path = Path(cache_dir) / f"{row['exp_id']}.npz"
  if path.is_file():
    try:
      return load_model(path), True
    except (OSError, ValueError, KeyError):
      pass  # a damaged cache entry: retrain
  model = reproduce(row, init_dir)
  save_model(model, path)
  return model, False


def forward(params: Params, points: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
  """(hidden pre-activations per layer [(n, w)] * 3, logits (n,)) for points (n, 2)."""
  hidden = np.asarray(points, np.float32)
  pre = []
  for layer in params[:-1]:
    z = hidden @ np.asarray(layer.weight, np.float32).T + np.asarray(layer.bias, np.float32)
    pre.append(z)
    hidden = np.maximum(z, 0)
  last = params[-1]
  logits = hidden @ np.asarray(last.weight, np.float32).T + np.asarray(last.bias, np.float32)
  return pre, logits[:, 0]


def decision_region(params: Params, resolution: int = 512) -> np.ndarray:
  """bool (resolution, resolution) image: class 1 where the logit > 0 (§A.4, §C.5)."""
  from cubist import data
  _, logits = forward(params, data.visualisation_grid(resolution))
  return (logits > 0).reshape(resolution, resolution)


def unit_images(params: Params, resolution: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
  """Each unit's activation over a low-resolution grid, for the diagram tiles.

  Returns ([post-ReLU activations (w, resolution, resolution)] * 3, the
  output logit (resolution, resolution)), in imshow order.
  """
  from cubist import data
  pre, logits = forward(params, data.visualisation_grid(resolution))
  images = [np.maximum(z, 0).T.reshape(-1, resolution, resolution) for z in pre]
  return images, logits.reshape(resolution, resolution)


def inactive_units(params: Params, masks: Params, points: np.ndarray) -> list[np.ndarray]:
  """§G.1(c): per hidden layer, bool (w,) units in the mask whose pre-activation is
  <= 0 on every point (a data-dependent dead ReLU)."""
  pre, _ = forward(params, points)
  present = unit_presence(masks)
  return [p & np.all(z <= 0, axis=0) for p, z in zip(present, pre)]


def unit_presence(masks: Params) -> list[np.ndarray]:
  """Per hidden layer, bool (w,): units with any incoming or outgoing weight or a bias."""
  return [np.asarray(masks[l].weight).any(axis=1) | np.asarray(masks[l + 1].weight).any(axis=0)
          | np.asarray(masks[l].bias) for l in range(3)]
