"""Store rows without training: what `chunks.result_rows` stores for a spec and an outcome.

Tests of the search, the report and the store fabricate outcomes (an accuracy,
a status) and let the engine's own code turn them into store rows, so the
rows carry every column a real run's do (spec JSON, repeat, weights, layout, machine).
"""

from __future__ import annotations

import jax
import numpy as np

from cubist import chunks, layouts
from cubist.mlp import Layer


def stored_row(
  spec,
  status: str = "ok",
  accuracy: float = 0.5,
  loss: float = 0.1,
  params=None,
  layout: str = "dot",
  **overrides,
) -> dict:
  """The row of `spec` trained to `params` (default: 0.5 on every mask entry).

  status "diverged" makes the parameters NaN; "failed" sets the method's failed
  flag. `overrides` replace columns afterwards (e.g. a measured weight_nnz).
  """
  masks = spec.masks()
  if params is None:
    params = tuple(
      Layer(
        np.where(m.weight, 0.5, 0.0).astype(np.float32),
        np.where(m.bias, 0.5, 0.0).astype(np.float32),
      )
      for m in masks
    )
  if status == "diverged":
    params = jax.tree.map(lambda a: np.full_like(a, np.nan), params)
  outcome = chunks.Outcome(
    params,
    masks,
    accuracy,
    float("nan") if status == "diverged" else loss,
    status == "failed",
    spec.width,
    layout,
    layouts.is_portable(layout, spec.width),
  )
  (row,) = chunks.result_rows([spec], [outcome], 0.0)
  row.update(overrides)
  return row
