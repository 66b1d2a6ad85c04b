"""The golden-bits fixture: short runs whose final bits must be the same on every machine.

`RUNS` lists about 20 short runs (2 epochs): both portable layouts, widths 1-16,
fixed-mask training and every method of paper (1) (and the SoS methods with a
loss of their own), from random and from the authors' fixed initialisations.
`tests/data/golden_bits.json` holds, per run, the sha256 of its stored final
weights and mask, its accuracy and loss, recorded once with

    .venv/bin/python -m tests.golden_bits --record

together with the machine that recorded them (CPU model and instruction-set
flags). `tests/test_golden_bits.py` retrains every run wherever the tests run
and compares: the portable arithmetic (cubist.portable) promises equal bits on
every x86-64 CPU with FMA under the same jaxlib.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

import jax

from cubist import engine, machine
from cubist.semantics import SEMANTICS_VERSION
from cubist.specs import ExperimentSpec
from search import phases
from search.pruning import registry

FIXTURE = Path(__file__).parent / "data" / "golden_bits.json"
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
EPOCHS = 2
# A plan that puts every width <= 64 in the per-unit layout (the same bits as "dot" here).
UNIT_PLAN = engine.ChunkPlan(unit_max_width=64)
# One phase-2 mask of the search inside (4, 2, 4) at width 16 ("n1:i1,n2:i2,n3:i3").
PHASE2_MASK = ((4, 2, 4), ((8, 0), (5, 0), (5, 1)))


def _spec(name: str, **fields) -> tuple[str, ExperimentSpec, str]:
  layout = fields.pop("layout", "dot")
  if "init" in fields:
    fields["init"] = str(DATA_DIR / fields["init"])
  if fields.pop("phase2", False):
    widths, triple = PHASE2_MASK
    fields["mask"] = phases.network_masks(widths, triple, 16)
  return (
    name,
    ExperimentSpec(seed=fields.pop("seed", 7), lr=fields.pop("lr", 0.1), epochs=EPOCHS, **fields),
    layout,
  )


RUNS = [
  _spec("plain-w1", width=1),
  _spec("plain-w2-step", width=2, schedule="step"),
  _spec("plain-w4-dot", width=4),
  _spec("plain-w4-unit", width=4, layout="unit"),
  _spec("plain-w8-constant", width=8, schedule="constant", lr=0.05),
  _spec("plain-w16", width=16),
  _spec("plain-322-in-16", width=16, widths=(3, 2, 2), seed=2, lr=0.05),
  _spec("plain-phase2-mask", width=16, phase2=True, family="phase2"),
  _spec("plain-322-unit", width=16, widths=(3, 2, 2), seed=2, lr=0.05, layout="unit"),
  _spec("plain-bench95-322", width=16, widths=(3, 2, 2), init="bench95_init.npz", seed=1),
  _spec("plain-bench995-632", width=16, widths=(6, 3, 2), init="bench995_init.npz"),
  _spec("imp-w6", width=6, method="imp", target_nnz=30),
  _spec("lth-w4", width=4, method="lth", target_nnz=20),
  _spec("snip-w8", width=8, method="snip", target_nnz=40),
  _spec("grasp-w6", width=6, method="grasp", target_nnz=30),
  _spec("synflow-w5", width=5, method="synflow", target_nnz=40),
  _spec("iter_snip-w16", width=16, method="iter_snip", target_nnz=60),
  _spec("force-w6", width=6, method="force", target_nnz=30),
  _spec("prospr-w6", width=6, method="prospr", target_nnz=30),
  _spec("rigl-w8", width=8, method="rigl", target_nnz=40, seed=3, lr=0.05),
  _spec("imp-bench995-w6", width=6, method="imp", target_nnz=30, init="bench995_init.npz"),
  _spec("lth-bench95-w3", width=3, method="lth", target_nnz=16, init="bench95_init.npz"),
  _spec("vd-w4", width=4, method="vd", strength=1e-3),
  _spec("magnitude-w8", width=8, method="magnitude", target_nnz=40),
]


def train_one(spec: ExperimentSpec, layout: str) -> dict:
  """Train one run through the engine (its default CPU plan, or the per-unit one) -> a row."""
  plan = UNIT_PLAN if layout == "unit" else engine.ChunkPlan()
  with tempfile.TemporaryDirectory(prefix="cubist-golden-") as workdir:
    with engine.run(
      [spec], workdir, plan=plan, methods=registry.get, progress_stream=io.StringIO()
    ) as store:
      (row,) = store.rows()
  return row


def digest(row: dict) -> dict:
  """What the fixture records of a row: hashes of its bits and its metrics."""
  return {
    "status": row["status"],
    "layout": row["layout"],
    "trained_width": row["trained_width"],
    "params_sha256": hashlib.sha256(bytes(row["params"])).hexdigest(),
    "mask_sha256": hashlib.sha256(bytes(row["mask"])).hexdigest(),
    "accuracy": row["accuracy"],
    "loss": row["loss"],
  }


def record(path: Path = FIXTURE) -> None:
  """Train every run here and write the fixture, with the machine that recorded it."""
  runs = {}
  for name, spec, layout in RUNS:
    runs[name] = {
      "spec": spec.to_dict() | {"init": Path(spec.init).name},
      **digest(train_one(spec, layout)),
    }
    print(name, runs[name]["accuracy"], runs[name]["params_sha256"][:12], flush=True)
  signature = machine.signature()
  fixture = {
    "semantics": SEMANTICS_VERSION,
    "epochs": EPOCHS,
    "recorded_on": signature,
    "runs": runs,
  }
  path.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
  print(f"wrote {path} ({len(runs)} runs) on {signature['cpu']}, jax {jax.__version__}")


if __name__ == "__main__":
  if sys.argv[1:] != ["--record"]:
    sys.exit("usage: python -m tests.golden_bits --record")
  record()
