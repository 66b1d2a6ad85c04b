"""The pruning binary end to end: every registered method runs from the quick configs.

One epoch at width 4 (paper methods) and 16 (State of Sparsity), one target:
about a minute on a 2-core CPU, mostly compilation (one program per method).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cubist import store as store_ops
from search.pruning import registry

ROOT = Path(__file__).resolve().parents[1]


def _run(config: str, workdir: Path, *overrides: str) -> str:
  command = [
    sys.executable,
    "-m",
    "experiments.prune",
    f"--config={config}",
    f"--workdir={workdir}",
    *overrides,
  ]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout


@pytest.mark.parametrize(
  "family, overrides, methods",
  [
    ("overparam,quick", ("--config.widths=(4,)", "--config.targets=(20,)"), registry.PAPER_METHODS),
    ("sos,quick", ("--config.targets=(40,)",), registry.SOS_METHODS),
  ],
)
def test_every_method_runs_from_the_quick_config(tmp_path, family, overrides, methods):
  out = _run(f"experiments/configs/prune.py:{family}", tmp_path, "--config.epochs=1", *overrides)
  rows = store_ops.merge_stores(store_ops.find_stores(tmp_path))
  assert {r["method"] for r in rows} == set(methods)
  assert all(r["status"] == "ok" and r["weight_nnz"] is not None for r in rows)
  for method in methods:
    assert f" {method} " in out
  # Resumable: the same command trains nothing more.
  again = _run(f"experiments/configs/prune.py:{family}", tmp_path, "--config.epochs=1", *overrides)
  assert f"{len(rows)} runs in" in again


def test_unknown_method_is_a_one_line_error(tmp_path):
  command = [
    sys.executable,
    "-m",
    "experiments.prune",
    "--config=experiments/configs/prune.py:overparam,quick,methods=imp+snp",
    f"--workdir={tmp_path}",
  ]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert "unknown pruning method 'snp'; known: imp, lth" in done.stderr
  assert "Traceback" not in done.stderr
