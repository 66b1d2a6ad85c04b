r"""The prepared accelerator check: one command, a few minutes, the figures a GPU decides.

  python -m experiments.gpu_check --out_dir=.            # on the GPU machine, < 8 minutes

Measures, with the engine's plan for the backend (`ChunkPlan.for_backend`:
large chunks, library matmuls ("gemm") everywhere), warm runs/s of
  - plain training at widths 3, 4, 7 and 16 (the searches: dense width 16,
    the (3,3,3) network, the 99.5% search's width 7),
  - plain training at width 256 dense,
  - SNIP at width 256 through the engine (mask step, then the live units),
  - IMP at width 256 (dense: its mask changes during training),
each from 2- and 4-epoch runs fitted as fixed + per-epoch seconds (as
experiments/bench_pruning.py). It writes bench_gpu.json and
bench_pruning_gpu.json in the schemas of bench.json and bench_pruning.json
(the study's dry run reads them: `python -m experiments.study ... --dry_run`
then shows a GPU column) and prints the projected time of every family of the
reference study and of the whole study on this machine.

Methods it did not time (the other at-init methods, LTH, RigL) take the
overhead of their nearest timed kin: at-init methods SNIP's, LTH five times
IMP's, RigL IMP's. `--quick` runs it in seconds on a CPU (the code path the
tests check, at widths 3 and 16 only; no accelerator is needed for that).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import jax
from absl import flags

from cubist import engine
from experiments import bench_pruning, cli
from experiments.configs import study as study_configs
from search import study, study_cost
from search.pruning import registry

_OUT_DIR = flags.DEFINE_string(
  "out_dir", ".", "Where bench_gpu.json and bench_pruning_gpu.json go."
)
_QUICK = flags.DEFINE_bool("quick", False, "Seconds on a CPU: tiny chunks (a smoke test).")
flags.adopt_module_key_flags(cli)

SEARCH_WIDTHS = (3, 4, 7, 16)
WIDE = 256
TARGET = 40
# Untimed methods take the measured overhead of their nearest kin (times rounds for LTH).
KIN = {
  "grasp": "snip",
  "synflow": "snip",
  "iter_snip": "snip",
  "force": "snip",
  "prospr": "snip",
  "rigl": "imp",
  "lth": "imp",
}


def measure(quick: bool) -> tuple[dict, dict]:
  """(bench, bench_pruning) dicts in the committed files' schemas."""
  plan = engine.ChunkPlan.for_backend(jax.default_backend())
  chunk = (lambda width: 8) if quick else (lambda width: plan.chunk_size(width, jax.device_count()))
  machine = dict(
    platform=platform.platform(),
    processor=platform.processor(),
    backend=jax.default_backend(),
    devices=[str(d) for d in jax.devices()],
    cpus=jax.device_count(),
  )
  widths, wide = ((3, 16), 16) if quick else (SEARCH_WIDTHS, WIDE)
  plain = []
  for width in widths + (wide,) * (wide not in widths):
    record = bench_pruning.time_program(
      None, width, TARGET, 50, 1 if quick else 3, plan.formulation(width), chunk=chunk(width)
    )
    plain.append(record)
    print(f"plain      w={width:>3}: {record['runs_per_second']:10.1f} runs/s", flush=True)
  methods = []
  snip = bench_pruning.time_engine("snip", WIDE, TARGET, 50, chunk=chunk(WIDE))
  imp = bench_pruning.time_program(
    "imp", WIDE, TARGET, 50, 1 if quick else 3, plan.formulation(WIDE), chunk=chunk(WIDE)
  )
  for record in (snip, imp):
    methods.append(record)
    print(f"{record['method']:<10} w={WIDE}: {record['runs_per_second']:10.1f} runs/s", flush=True)
  measured = {r["method"]: r for r in methods}
  for name, kin in KIN.items():
    rounds = registry.get(name).rounds
    methods.append(
      {
        **measured[kin],
        "method": name,
        "basis": f"{kin}'s overhead x {rounds}",
        "seconds_per_run": measured[kin]["seconds_per_run"] * rounds,
      }
    )
  rates = {str(r["width"]): r["runs_per_second"] for r in plain if r["width"] <= 16}
  bench = dict(
    machine=machine,
    quick=quick,
    settings=dict(epochs=50),
    search_projection=dict(rates_runs_per_s=rates),
    plain=plain,
  )
  pruning = dict(
    machine=machine, quick=quick, epochs=50, target=TARGET, plain=plain, methods=methods
  )
  return bench, pruning


def main(argv):
  cli.no_arguments(argv)
  bench, pruning = measure(_QUICK.value)
  out = Path(_OUT_DIR.value)
  out.mkdir(parents=True, exist_ok=True)
  (out / "bench_gpu.json").write_text(json.dumps(bench, indent=2))
  (out / "bench_pruning_gpu.json").write_text(json.dumps(pruning, indent=2))
  rates = (study_cost.rates_from_bench("this accelerator", bench, pruning, "gpu_check"),)
  config = study.StudyConfig.from_dict(study_configs.get_config("reference").to_dict())
  print(
    study_cost.format_plan(
      config, "/nonexistent", study_cost.plan(config, "/nonexistent", rates), rates
    )
  )


if __name__ == "__main__":
  cli.run(main)
