"""Trained networks for the report's pictures: read from the store, reproduced on request.

A schema-v2 store keeps every run's trained weights and final masks, so a
model is read, never retrained (`from_row`). `reproduce(row)` is the
reproducibility check behind the report's `--reproduce=N`: it retrains a
stored run alone from its spec (through `cubist.engine.run` in a temporary
workdir) and says whether the weights came out bit for bit. Schema-v1 stores
kept no weights; their search's `sparsest_<target>.npz` is read if present.

Activations are numpy float32 forward passes (the same formula as mlp.apply).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cubist import data, engine, mlp
from cubist import masks as mask_ops
from cubist import store as store_ops
from cubist.mlp import Layer, Params
from search.pruning import registry


class Model(NamedTuple):
  """A trained network to draw.

  params: trained (masked) weights at the run's width w, numpy float32,
    PyTorch orientation. masks: bool masks at w (biases included).
  accuracy: the stored training accuracy. source: where the weights came from.
  """

  params: Params
  masks: Params
  accuracy: float
  source: str


def from_row(row: dict) -> Model:
  """The stored weights and masks of a (schema v2) row; StoreError if it has none."""
  return Model(store_ops.row_params(row), store_ops.row_masks(row), float(row["accuracy"]), "store")


def load_npz(path: str | os.PathLike) -> Model:
  """A Model from a search's sparsest_<target>.npz (trained_* and mask_* keys)."""
  with np.load(path) as arrays:
    params = mlp.from_numpy_dict(
      {k[len("trained_") :]: arrays[k] for k in arrays.files if k.startswith("trained_")},
      source=str(path),
    )
    masks = tuple(
      Layer(
        np.asarray(arrays[f"mask_layer{i}_weight"], bool),
        np.asarray(arrays[f"mask_layer{i}_bias"], bool),
      )
      for i in range(1, 5)
    )
    key = "accuracy" if "accuracy" in arrays.files else "accuracy_stored"
    return Model(params, masks, float(arrays[key]), Path(path).name)


class Reproduction(NamedTuple):
  """One stored run retrained: whether its weights and accuracy came out identical."""

  exp_id: str
  method: str
  identical: bool
  max_abs_difference: float
  accuracy_stored: float
  accuracy_retrained: float
  seconds: float


def reproduce(row: dict, init_dir: str | os.PathLike | None = None) -> Reproduction:
  """Retrain one stored run alone from its spec, in its layout, and compare the weights bit for bit.

  init_dir: where to find a fixed init file when the spec's path does not
  exist here (the file must have the same contents: exp_id checks it).
  Raises StoreError/ValueError (one line) for a run that cannot be rebuilt.
  """
  spec = store_ops.row_spec(row)
  if spec.init != "random" and not os.path.exists(spec.init) and init_dir is not None:
    spec = spec.__class__.from_dict(
      {**spec.to_dict(), "init": os.path.join(init_dir, os.path.basename(spec.init))}
    )
  if spec.exp_id() != row["exp_id"]:
    raise ValueError(
      f"run {row['exp_id']}: its spec hashes to {spec.exp_id()} here (another "
      "init file or code); it cannot be reproduced"
    )
  plan = engine.ChunkPlan(unit_max_width=10_000 if row["layout"] == "unit" else 0)
  with tempfile.TemporaryDirectory(prefix="cubist-reproduce-") as workdir:
    with engine.run(
      [spec],
      workdir,
      sweep_name="reproduce",
      plan=plan,
      methods=registry.get,
      progress_stream=io.StringIO(),
    ) as store:
      (fresh,) = store.rows()
  stored, retrained = (np.frombuffer(r["params"], np.float32) for r in (row, fresh))
  same_shape = stored.shape == retrained.shape
  identical = (
    same_shape
    and bool(np.array_equal(stored, retrained, equal_nan=True))
    and fresh["accuracy"] == row["accuracy"]
  )
  difference = float(np.nanmax(np.abs(stored - retrained))) if same_shape else float("inf")
  return Reproduction(
    row["exp_id"],
    row["method"],
    identical,
    difference,
    float(row["accuracy"]),
    float(fresh["accuracy"]),
    float(fresh["seconds"]),
  )


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
  _, logits = forward(params, data.visualisation_grid(resolution))
  return (logits > 0).reshape(resolution, resolution)


def unit_images(params: Params, resolution: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
  """Each unit's activation over a low-resolution grid, for the diagram tiles.

  Returns ([post-ReLU activations (w, resolution, resolution)] * 3, the
  output logit (resolution, resolution)), in imshow order.
  """
  pre, logits = forward(params, data.visualisation_grid(resolution))
  images = [np.maximum(z, 0).T.reshape(-1, resolution, resolution) for z in pre]
  return images, logits.reshape(resolution, resolution)


def inactive_units(params: Params, masks: Params, points: np.ndarray) -> list[np.ndarray]:
  """§G.1(c): per hidden layer, bool (w,) units in the mask whose pre-activation is
  <= 0 on every point (a data-dependent dead ReLU)."""
  pre, _ = forward(params, points)
  present = mask_ops.used_units(masks)
  return [p & np.all(z <= 0, axis=0) for p, z in zip(present, pre)]
