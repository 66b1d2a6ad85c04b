"""The accelerator code paths, on the CPU (CI has no GPU): the GPU chunk plan and the
prepared GPU check in --quick mode, which writes the files the study's dry run reads."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from cubist import engine
from cubist.specs import ExperimentSpec

ROOT = Path(__file__).resolve().parents[1]


def test_the_accelerator_plan_trains_on_the_cpu(tmp_path):
  plan = engine.ChunkPlan.for_backend("gpu")
  assert plan.formulation(3) == "gemm" and plan.chunk_size(16) >= 4096
  assert engine.ChunkPlan.for_backend("cpu") == engine.ChunkPlan()
  specs = [ExperimentSpec(seed=s, lr=0.1, widths=(3, 3, 3), epochs=1) for s in range(3)]
  with engine.run(specs, tmp_path, plan=plan, progress_stream=io.StringIO()) as reader:
    rows = reader.rows()
  assert len(rows) == 3 and {r["layout"] for r in rows} == {"gemm"}
  assert {r["portable"] for r in rows} == {0}  # library matmuls: machine-specific bits


def test_gpu_check_quick_writes_bench_files_and_projects_the_study(tmp_path):
  done = subprocess.run(
    [sys.executable, "-m", "experiments.gpu_check", "--quick", f"--out_dir={tmp_path}"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  bench = json.loads((tmp_path / "bench_gpu.json").read_text())
  pruning = json.loads((tmp_path / "bench_pruning_gpu.json").read_text())
  assert set(bench["search_projection"]["rates_runs_per_s"]) == {"3", "16"}
  assert {"snip", "imp", "lth", "grasp", "rigl"} <= {m["method"] for m in pruning["methods"]}
  assert "total: 485,838 experiments" in done.stdout
  assert "this accelerator" in done.stdout
