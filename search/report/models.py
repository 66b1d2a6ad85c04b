"""Trained networks for the report's pictures: read from the store, reproduced on request.

A schema-v2 (or later) store keeps every run's trained weights and final
masks, so a model is read, never retrained (`from_row`). `reproduce(row)` is
the reproducibility check behind the report's `--reproduce=N`: it retrains a
stored run alone from its spec, in its stored layout (through
`cubist.engine.run` in a temporary workdir), and compares. Bits where they
are comparable: the stored row and the retraining share a
`cubist.machine.bits_key` (portable arithmetic of one CPU class and jaxlib,
or the same machine); elsewhere (machine-specific bits from another machine,
or a row that did not record its machine) two trainings agree only
statistically, so the accuracies are compared within a tolerance. Each
`Reproduction` says which comparison was made and why. Runs of another
training semantics are never retrained (this code trains other bits).
Schema-v1 stores kept no weights; their search's `sparsest_<target>.npz` is
read if present.

Activations are numpy float32 forward passes (the same formula as mlp.apply).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cubist import data, engine, machine, mlp
from cubist import masks as mask_ops
from cubist import store as store_ops
from cubist.mlp import Layer, Params
from cubist.semantics import SEMANTICS_VERSION
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
  """One stored run retrained (or not), what was compared and the verdict.

  layout: the stored run's layout. comparison: "bits" (weights and accuracy
  must come out identical), "accuracy ±X pp" (the retrained accuracy must be
  within the tolerance) or "not retrained". reason: why (the arithmetic or the
  machines; another semantics; an error). passed: the comparison's verdict
  (None when not retrained). identical: the weights and accuracy came out bit
  for bit (whatever was compared).
  """

  exp_id: str
  method: str
  layout: str
  comparison: str
  reason: str
  passed: bool | None
  identical: bool
  max_abs_difference: float
  accuracy_stored: float
  accuracy_retrained: float
  seconds: float


NOT_RETRAINED = "not retrained"
# The accuracy difference (a fraction) that passes where bits cannot be compared.
TOLERANCE = 0.005
# The plan that retrains every width of a run in one stored layout (cubist.engine.ChunkPlan).
LAYOUT_PLANS = {
  "unit": dict(unit_max_width=10_000),
  "dot": dict(unit_max_width=0, dot_max_width=10_000),
  "gemm": dict(unit_max_width=0, dot_max_width=0),
}


def accuracy_label(tolerance: float) -> str:
  """The name of the accuracy comparison: "accuracy ±0.5 pp" for a tolerance of 0.005."""
  return f"accuracy ±{100 * tolerance:g} pp"


def semantics_label(semantics: int | None) -> str:
  return "none recorded" if semantics is None else f"v{semantics}"


def not_retrained(row: dict, reason: str) -> Reproduction:
  """The record of a stored run the check did not retrain, and why."""
  accuracy = row.get("accuracy")
  return Reproduction(
    row["exp_id"],
    row["method"],
    row.get("layout") or "?",
    NOT_RETRAINED,
    reason,
    None,
    False,
    float("nan"),
    float("nan") if accuracy is None else float(accuracy),
    float("nan"),
    0.0,
  )


def _layout_on(layout: str, signature: dict) -> str:
  backend = signature.get("backend")
  return layout if backend == "cpu" else f"{layout} on {backend}"


def _machine_name(signature: dict) -> str:
  key = "cpu" if signature.get("backend") == "cpu" else "device"
  return str(signature.get(key) or signature.get("cpu") or "?")


def _other_machine(there: dict, here: dict) -> str:
  """The stored run's machine by name, and what else differs from this one."""
  differs = [
    "other instruction set" if key == "isa" else f"{key} {there.get(key)}"
    for key in machine.FULL_KEY
    if key not in ("cpu", "device") and there.get(key) != here.get(key)
  ]
  return ", ".join([_machine_name(there), *differs])


def how_to_compare(stored: dict, fresh: dict, tolerance: float) -> tuple[str, str]:
  """("bits" or `accuracy_label`, why) for a stored row and its retraining here.

  Bits when both rows have the same `machine.bits_key`: portable rows of one
  arithmetic class and jaxlib, or machine-specific rows of one machine.
  """
  there, here = store_ops.row_machine(stored), store_ops.row_machine(fresh)
  portable, portable_here = bool(stored.get("portable")), bool(fresh.get("portable"))
  key = machine.bits_key(there, portable)
  if key is not None and key == machine.bits_key(here, portable_here):
    if portable:
      return "bits", f"portable on {there.get('arithmetic')}, jaxlib {there.get('jaxlib')}"
    return "bits", (
      f"machine-specific ({_layout_on(stored['layout'], there)}) and trained on this machine: "
      + _machine_name(there)
    )
  accuracy = accuracy_label(tolerance)
  if there is None:
    return accuracy, (
      f"the schema-v{stored.get('schema')} row does not record the machine that trained it"
    )
  if portable and portable_here:
    return accuracy, (
      f"portable, but trained on {there.get('arithmetic')}, jaxlib {there.get('jaxlib')}; "
      f"this machine: {here.get('arithmetic')}, jaxlib {here.get('jaxlib')}"
    )
  if portable:
    return accuracy, (
      f"portable on {there.get('arithmetic')}, but retrained here machine-specific "
      f"({_layout_on(fresh['layout'], here)})"
    )
  return accuracy, (
    f"machine-specific ({_layout_on(stored['layout'], there)}) and trained on another "
    f"machine: {_other_machine(there, here)}"
  )


def reproduce(
  row: dict, init_dir: str | os.PathLike | None = None, tolerance: float = TOLERANCE
) -> Reproduction:
  """Retrain one stored run alone from its spec, in its layout, and compare (module docstring).

  init_dir: where to find a fixed init file when the spec's path does not
  exist here (the file must have the same contents: exp_id checks it).
  tolerance: the largest accuracy difference (a fraction: 0.005 is half a
  percentage point) that passes where bits cannot be compared.
  A run of another training semantics is not retrained (`not_retrained`).
  Raises StoreError/ValueError (one line) for a run that cannot be rebuilt.
  """
  semantics = row.get("semantics", SEMANTICS_VERSION)
  if semantics != SEMANTICS_VERSION:
    reason = f"other semantics ({semantics_label(semantics)}): not retrained"
    if (row.get("schema") or 1) < 3 and row.get("layout") == "dot":
      reason += " (its 'dot' layout was library matmuls: machine-specific bits)"
    return not_retrained(row, reason)
  if row.get("layout") not in LAYOUT_PLANS:
    raise ValueError(f"run {row['exp_id']}: unknown layout {row.get('layout')!r}")
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
  plan = engine.ChunkPlan(**LAYOUT_PLANS[row["layout"]])
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
  return compare(row, fresh, tolerance)


def compare(stored: dict, fresh: dict, tolerance: float = TOLERANCE) -> Reproduction:
  """The Reproduction of a stored row by a fresh row of the same spec (`how_to_compare`)."""
  comparison, reason = how_to_compare(stored, fresh, tolerance)
  old, new = (np.frombuffer(r["params"], np.float32) for r in (stored, fresh))
  same_shape = old.shape == new.shape
  identical = (
    same_shape
    and bool(np.array_equal(old, new, equal_nan=True))
    and fresh["accuracy"] == stored["accuracy"]
  )
  difference = float(np.nanmax(np.abs(old - new))) if same_shape and old.size else 0.0
  difference = difference if same_shape else float("inf")
  accuracy_stored, accuracy_retrained = (
    float("nan") if r["accuracy"] is None else float(r["accuracy"]) for r in (stored, fresh)
  )
  if comparison == "bits":
    passed = identical
  else:
    passed = bool(abs(accuracy_retrained - accuracy_stored) <= tolerance + 1e-12)
  return Reproduction(
    stored["exp_id"],
    stored["method"],
    stored["layout"],
    comparison,
    reason,
    passed,
    identical,
    difference,
    accuracy_stored,
    accuracy_retrained,
    float(fresh["seconds"] or 0.0),
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
