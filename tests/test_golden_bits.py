"""Portable bits: the golden-bits fixture retrains to the same bits on this machine, whatever it is.

tests/data/golden_bits.json (recorded by `python -m tests.golden_bits --record`, the
recording machine named in it) holds the sha256 of the final weights and mask of
short runs of every method of paper (1), in both portable layouts, at widths 1-16,
from random and fixed initialisations. The promise (cubist.portable, README
"Portable bits"): the same bits on every x86-64 CPU with FMA under the same jaxlib.
Here that is checked three ways:

- every run retrains here to its recorded hashes and metrics;
- in a subprocess whose XLA is told to behave like another CPU (at most AVX2, 512-bit
  vectors preferred, no YNNPACK library kernels), a sample of runs gives the same
  hashes: the programs hold nothing whose order depends on the CPU;
- the compiled programs of the portable layouts contain no dot, no floating-point
  add-reduction and no library-kernel fusion (the "gemm" layout does: the check sees
  them where they are).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cubist import chunks, data, engine, machine, train
from cubist.specs import ExperimentSpec
from search.pruning import registry
from tests import golden_bits

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = json.loads(golden_bits.FIXTURE.read_text())
RUNS = {name: (spec, layout) for name, spec, layout in golden_bits.RUNS}
# XLA behaving as on another x86-64 CPU: what a machine-dependent kernel would change.
OTHER_CPU_FLAGS = (
  "--xla_cpu_max_isa=AVX2 --xla_cpu_prefer_vector_width=512 --xla_cpu_experimental_ynn_fusion_type="
)
SAMPLE = ("plain-w1", "plain-w16", "plain-322-unit", "snip-w8", "grasp-w6", "prospr-w6", "vd-w4")


def _comparable() -> str | None:
  """Why this machine's bits cannot be compared with the recording's, or None."""
  here, there = machine.signature(), FIXTURE["recorded_on"]
  if here["backend"] != "cpu":
    return f"bits are promised on CPUs; this backend is {here['backend']}"
  if here["arithmetic"] != there["arithmetic"]:
    return (
      f"recorded on a {there['arithmetic']} CPU, this one is {here['arithmetic']} (another "
      "FMA class has other bits: re-record with `python -m tests.golden_bits --record`)"
    )
  if here["jaxlib"] != there["jaxlib"]:
    return (
      f"recorded under jaxlib {there['jaxlib']}, this is {here['jaxlib']} (XLA's code "
      "generation may differ: re-record with `python -m tests.golden_bits --record`)"
    )
  return None


def _skip_unless_trainable(spec: ExperimentSpec) -> None:
  why = _comparable()
  if why:
    pytest.skip(why)
  if spec.init != "random" and not Path(spec.init).is_file():
    pytest.skip(
      f"{spec.init} is not here (the authors' initialisations: put bench95_init.npz and "
      f"bench995_init.npz in {golden_bits.DATA_DIR})"
    )


def test_the_fixture_covers_what_it_promises():
  assert FIXTURE["semantics"] == golden_bits.SEMANTICS_VERSION
  assert set(FIXTURE["runs"]) == set(RUNS)
  methods = {spec.method for spec, _ in RUNS.values()}
  assert set(registry.PAPER_METHODS) <= methods and "plain" in methods
  widths = {spec.width for spec, _ in RUNS.values()}
  assert min(widths) == 1 and max(widths) == 16
  assert {layout for _, layout in RUNS.values()} == {"dot", "unit"}
  assert {row["layout"] for row in FIXTURE["runs"].values()} >= {"dot", "unit"}
  assert any(spec.init != "random" for spec, _ in RUNS.values())
  # Each recorded spec is the one listed here (the fixture cannot drift from the code).
  for name, (spec, _) in RUNS.items():
    recorded = dict(FIXTURE["runs"][name]["spec"])
    assert recorded.pop("init") == Path(spec.init).name, name
    assert recorded == {k: v for k, v in spec.to_dict().items() if k != "init"}, name
  recorded_on = FIXTURE["recorded_on"]
  print(f"\n[golden] recorded on {recorded_on['cpu']} ({' '.join(recorded_on['isa'])})")


@pytest.mark.parametrize("name", list(RUNS))
def test_retrains_to_the_recorded_bits(name):
  spec, layout = RUNS[name]
  _skip_unless_trainable(spec)
  got = golden_bits.digest(golden_bits.train_one(spec, layout))
  want = {key: FIXTURE["runs"][name][key] for key in got}
  assert got == want


def test_the_two_portable_layouts_record_the_same_bits():
  """ "unit" and "dot" vmap one per-experiment arithmetic: the recorded runs agree."""
  runs = FIXTURE["runs"]
  for dot, unit in (("plain-w4-dot", "plain-w4-unit"), ("plain-322-in-16", "plain-322-unit")):
    assert runs[dot]["layout"] == "dot" and runs[unit]["layout"] == "unit"
    for key in ("params_sha256", "mask_sha256", "accuracy", "loss"):
      assert runs[dot][key] == runs[unit][key], (dot, key)


_OTHER_CPU = """
import json, sys
from tests import golden_bits
runs = {name: (spec, layout) for name, spec, layout in golden_bits.RUNS}
out = {name: golden_bits.digest(golden_bits.train_one(*runs[name])) for name in sys.argv[1:]}
print(json.dumps(out))
"""


def test_xla_told_it_is_another_cpu_gives_the_same_bits():
  sample = [name for name in SAMPLE if RUNS[name][0].init == "random"]
  _skip_unless_trainable(RUNS[sample[0]][0])
  env = {**os.environ, "XLA_FLAGS": OTHER_CPU_FLAGS}
  proc = subprocess.run(
    [sys.executable, "-c", _OTHER_CPU, *sample],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  for name in sample:
    want = {key: FIXTURE["runs"][name][key] for key in got[name]}
    assert got[name] == want, name


def _compiled_text(static: train.TrainStatic, method_name: str = "plain") -> str:
  x, y = data.cubist_spiral()
  method = registry.get(method_name)
  spec = ExperimentSpec(
    seed=0,
    lr=0.1,
    width=static.width,
    epochs=static.epochs,
    method=method_name,
    target_nnz=None if method.is_plain else 2 * static.width,
  )
  method_static = None if method.is_plain else spec.method_static()
  inputs = chunks.chunk_inputs([spec] * 4, static.width, method, method_static)
  if method.is_plain:
    program = train.make_train(static)
  else:
    program = train.make_train(static, method, method_static)
  return program.lower(x, y, inputs).compile().as_text()


def _machine_dependent_ops(text: str) -> dict:
  """Counts of what a CPU may compute in its own order: dots, f32 add-reduces, YNN fusions."""
  bodies = {
    match.group(1): match.group(2)
    for match in re.finditer(r"^%?(\S+) \(.*?\{\n(.*?)\n\}", text, re.M | re.S)
  }
  reduces = re.findall(r"= f32\[[^\]]*\]\S* reduce\(.*?to_apply=%([\w.\-]+)", text)
  adds = [name for name in reduces if " add(" in bodies.get(name, " add(")]
  return {
    "dot": len(re.findall(r"\bdot\(", text)),
    "reduce": len(adds),
    "ynn": text.count("__ynn_fusion"),
  }


@pytest.mark.parametrize(
  "layout, width, method",
  [("dot", 6, "plain"), ("unit", 3, "plain"), ("dot", 4, "grasp"), ("dot", 4, "prospr")],
)
def test_portable_programs_hold_no_machine_dependent_sums(layout, width, method):
  static = train.TrainStatic(width=width, epochs=1, formulation=layout)
  counts = _machine_dependent_ops(_compiled_text(static, method))
  assert counts == {"dot": 0, "reduce": 0, "ynn": 0}


def test_the_check_sees_library_matmuls_in_the_gemm_layout():
  static = train.TrainStatic(width=6, epochs=1, formulation="gemm")
  counts = _machine_dependent_ops(_compiled_text(static))
  assert counts["dot"] > 0 and counts["reduce"] > 0


def test_machine_class_of_this_cpu_is_named():
  signature = machine.signature()
  assert signature["backend"] == jax.default_backend()
  assert signature["arithmetic"]
  assert np.all([isinstance(flag, str) for flag in signature["isa"]])


def test_rows_say_whether_their_bits_are_portable(tmp_path):
  """A row is portable when every program of its run summed portably: at most
  mlp.PORTABLE_MAX_WIDTH units, a mask step at the full width included."""
  specs = {
    "plain-8": ExperimentSpec(seed=1, lr=0.1, width=8, epochs=1),
    "plain-32": ExperimentSpec(seed=1, lr=0.1, width=32, epochs=1),
    "snip-8": ExperimentSpec(seed=1, lr=0.1, width=8, epochs=1, method="snip", target_nnz=20),
    "snip-32": ExperimentSpec(seed=1, lr=0.1, width=32, epochs=1, method="snip", target_nnz=20),
  }
  with engine.run(
    list(specs.values()), tmp_path, methods=registry.get, progress_stream=io.StringIO()
  ) as store:
    rows = {row["exp_id"]: row for row in store.rows()}
  got = {
    name: (rows[s.exp_id()]["layout"], rows[s.exp_id()]["portable"]) for name, s in specs.items()
  }
  assert got["plain-8"] == ("dot", 1) and got["plain-32"] == ("gemm", 0) and got["snip-8"][1] == 1
  # SNIP from width 32 trains its live units in "dot", but its mask came from width-32 scores.
  assert rows[specs["snip-32"].exp_id()]["trained_width"] <= 16 and got["snip-32"] == ("dot", 0)
