"""Smoke test of the throughput benchmark (experiments/bench.py) in --quick mode."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MEASUREMENT_KEYS = {
  "label",
  "width",
  "formulation",
  "chunk",
  "epochs",
  "shared_order",
  "devices",
  "status",
  "compile_s",
  "first_call_s",
  "samples_s",
  "median_s",
  "warm",
  "seconds_per_run_epochs",
  "runs_per_s",
  "basis",
}


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
  out = tmp_path_factory.mktemp("bench") / "bench.json"
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
  env.pop("XLA_FLAGS", None)  # the parent must see one device; the child sets its own
  proc = subprocess.run(
    [sys.executable, "-m", "experiments.bench", "--quick", f"--out={out}"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text()), proc.stdout


def test_quick_bench_writes_expected_keys(quick_bench):
  result, stdout = quick_bench
  for key in (
    "schema",
    "timestamp",
    "command_line",
    "machine",
    "settings",
    "dense_w16",
    "structured_333",
    "sharded",
    "data_order",
    "extrapolation_check",
    "oracle",
    "speedup",
    "targets",
    "per_width",
    "recommendations",
    "total_seconds",
  ):
    assert key in result, key
  assert result["quick"] is True
  for key in ("processor", "uname", "cpu_count", "jax", "devices"):
    assert key in result["machine"], key
  assert "--quick" in result["command_line"]
  assert "runs/s" in stdout and "summary" in stdout


def test_quick_bench_measurements(quick_bench):
  result, _ = quick_bench
  assert result["settings"]["epochs"] == 1
  for name, width in (("dense_w16", 16), ("structured_333", 3)):
    best = result[name]["best"]
    assert MEASUREMENT_KEYS <= set(best), MEASUREMENT_KEYS - set(best)
    assert best["status"] == "ok" and best["width"] == width
    assert best["runs_per_s"] == pytest.approx(best["chunk"] / best["median_s"], rel=1e-2)
    assert best["basis"] == "measured"
    assert (best["shared_order"], best["order"]) == (False, "feistel")  # engine defaults
    target = result["targets"][name]
    assert isinstance(target["met"], bool) and target["target_runs_per_s"] > 0
  assert result["structured_333"]["slice_width"] == 3
  # --quick leaves out the slow-compiling width-16 "unit" program, recorded as skipped.
  assert any(
    r["status"] == "skipped" and r["formulation"] == "unit" for r in result["dense_w16"]["sweep"]
  )


def test_quick_bench_sharded_oracle_and_recommendations(quick_bench):
  result, _ = quick_bench
  sharded = result["sharded"]
  assert sharded["status"] == "ok", sharded
  assert sharded["device_count"] == 2
  assert sharded["structured_333"]["best"]["devices"] == 2
  if result["oracle"]["status"] == "ok":
    assert result["oracle"]["seconds_per_run"] > 0
    assert result["speedup"]["dense_w16"]["per_core"] > 0
  generation = result["data_order"]["order_generation_ms_per_key_epoch"]
  assert set(generation) == {"feistel", "sort"} and min(generation.values()) > 0
  variants = result["data_order"]["structured_333"]["variants"]
  assert {"own/feistel", "shared/feistel"} <= set(variants)
  recommendations = result["recommendations"]
  assert set(recommendations) == {str(w) for w in range(1, 17)}
  assert recommendations["1"]["formulation"] in ("dot", "unit")
  assert recommendations["2"]["measured_width"] == 3  # padded up to the next measured width
  assert recommendations["16"] is None  # --quick measures widths 1 and 3 only
  assert result["per_width"]["basis"] == "measured"  # --quick: 1-epoch runs, timed whole
  assert set(result["chunk_plan"]) >= {"unit_max_width", "chunk_sizes"}


def test_bench_portable_quick_measures_v5_against_v4_in_one_run(tmp_path):
  """experiments.bench_portable --quick: v5's plan here and the last v4 commit's source in a
  subprocess, written under "portable" beside what the file already holds."""
  out = tmp_path / "bench.json"
  out.write_text(json.dumps({"kept": 1}))
  done = subprocess.run(
    [sys.executable, "-m", "experiments.bench_portable", "--quick", f"--out={out}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["kept"] == 1
  portable = result["portable"]
  assert [r["layout"] for r in portable["after_v5"]] == ["dot", "dot", "gemm"]
  if isinstance(portable["before_v4"], str):  # a clone without the v4 commit
    pytest.skip(portable["before_v4"])
  assert [r["layout"] for r in portable["before_v4"]] == ["unit", "dot"]
  assert set(portable["ratio_after_over_before"]) == {"2", "8"}
  assert all(r["epoch_runs_per_s"] > 0 for r in portable["after_v5"] + portable["before_v4"])
