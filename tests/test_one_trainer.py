"""The one trainer replays runs recorded before it existed, bit for bit.

tests/data/pre_v2_runs.json holds 14 runs (2 epochs each) trained by the engine
at commit eebc67f (recorded by tests/data/make_pre_v2_fixture.py of commit 186f340), when fixed-mask training and pruning had separate scans:
structured networks in both layouts, a phase-2 mask, the BENCH-95 init and
seven pruning methods (the old pruning trainer always used the batched-matmul
layout). Their final weights, accuracies and per-epoch losses must come out of
`cubist.train` unchanged: the plain method through the engine as before, the
pruning methods with the layout pinned to "dot".
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest

from cubist import engine
from cubist import store as store_ops
from cubist.specs import ExperimentSpec
from search import phases
from search.pruning import registry

FIXTURE = Path(__file__).parent / "data" / "pre_v2_runs.json"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _spec(recorded: dict) -> ExperimentSpec:
  fields = dict(recorded)
  triple, widths = fields.pop("mask_triple", None), fields.pop("mask_widths", None)
  if triple is not None:
    fields["mask"] = phases.network_masks(tuple(widths), tuple(map(tuple, triple)), 16)
  if fields.get("widths") is not None:
    fields["widths"] = tuple(fields["widths"])
  if "init" in fields:
    fields["init"] = str(SHARED / Path(fields["init"]).name)
  return ExperimentSpec(**fields)


def _runs():
  return json.loads(FIXTURE.read_text())["runs"]


@pytest.mark.parametrize(
  "index",
  range(len(_runs())),
  ids=[r["spec"].get("method", "plain") + f"-{i}" for i, r in enumerate(_runs())],
)
def test_replays_a_run_of_the_old_trainers_bit_for_bit(index, tmp_path):
  recorded = _runs()[index]
  spec = _spec(recorded["spec"])
  if spec.init != "random" and not Path(spec.init).is_file():
    pytest.skip(f"{spec.init} is not here")
  # The old pruning trainer always used "dot"; plain training used the plan's layout.
  plan = (
    engine.ChunkPlan(compact=False)
    if registry.is_plain(spec.method)
    else engine.ChunkPlan(unit_max_width=0, compact=False)
  )
  with engine.run(
    [spec], tmp_path, plan=plan, methods=registry.get, progress_stream=io.StringIO()
  ) as store:
    (row,) = store.rows()
  assert row["status"] == "ok"
  assert (
    engine.train_static(engine.bucket_key(spec, registry.get, plan), plan).formulation
    == recorded["formulation"]
  )
  assert row["accuracy"] == recorded["accuracy"]
  assert row["loss"] == pytest.approx(recorded["loss"], rel=0, abs=0)
  width = recorded["occupied_width"]
  expected = np.frombuffer(base64.b64decode(recorded["params"]), np.float32)
  stored = store_ops.row_params(row, width)
  got = np.concatenate([np.asarray(a).ravel() for layer in stored for a in layer])
  np.testing.assert_array_equal(got, expected)
