r"""`make bench`, end to end: a binary's rate with compilation, first and second invocation.

  python -m experiments.bench_binary --out=bench_binary.json

Runs `python -m experiments.train` twice on the same sweep, each time into a
fresh workdir, with one fresh persistent compilation cache: the first
invocation compiles every program and fills the cache, the second finds them
there (the binaries' `--compile_cache`). Two sweeps, each at the paper's 50
epochs: dense width 16 (132 runs) and the (3,3,3) network (516 runs).
Reported: wall seconds of the whole process (start-up, data, compilation,
training, store) and runs/s end to end, beside the warm rate of the same
configuration in bench.json (its `targets`: the warm headline rates on every
core) when it exists.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
_OUT = flags.DEFINE_string("out", "bench_binary.json", "Where to write the JSON results.")
_EPOCHS = flags.DEFINE_integer("epochs", 50, "Epochs per run.")
_QUICK = flags.DEFINE_bool("quick", False, "1 epoch and few seeds (a smoke test).")

# (name, widths, seeds): 6 settings each (2 lrs x 3 schedules), as the train config.
SWEEPS = (("dense_w16", "((16,16,16),)", 22), ("structured_333", "((3,3,3),)", 86))


def invoke(widths: str, seeds: int, epochs: int, workdir: Path, cache: Path) -> dict:
  """One run of the train binary: its wall seconds and runs."""
  command = [
    sys.executable,
    "-m",
    "experiments.train",
    "--config=experiments/configs/train.py",
    f"--config.widths={widths}",
    f"--config.seeds={tuple(range(seeds))}",
    f"--config.epochs={epochs}",
    f"--workdir={workdir}",
    f"--compile_cache={cache}",
  ]
  began = time.perf_counter()
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  seconds = time.perf_counter() - began
  if done.returncode != 0:
    raise SystemExit(f"error: {' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
  runs = 6 * seeds
  return dict(seconds=seconds, runs=runs, runs_per_s=runs / seconds)


def main(argv):
  del argv
  epochs = 1 if _QUICK.value else _EPOCHS.value
  warm = {}
  bench_file = ROOT / "bench.json"
  if bench_file.is_file():
    bench = json.loads(bench_file.read_text())
    targets = bench.get("targets") or {}  # the warm headline rates, every core
    warm = {name: (targets.get(name) or {}).get("achieved_runs_per_s") for name, _, _ in SWEEPS}
  result = dict(
    machine=dict(
      platform=platform.platform(), processor=platform.processor(), python=sys.version.split()[0]
    ),
    epochs=epochs,
    sweeps={},
  )
  for name, widths, seeds in SWEEPS:
    seeds = 2 if _QUICK.value else seeds
    with tempfile.TemporaryDirectory(prefix="cubist-bench-binary-") as root:
      root = Path(root)
      first = invoke(widths, seeds, epochs, root / "first", root / "cache")
      second = invoke(widths, seeds, epochs, root / "second", root / "cache")
    entry = dict(
      first=first,
      second=second,
      warm_runs_per_s=warm.get(name),
      compilation_saved_s=first["seconds"] - second["seconds"],
    )
    result["sweeps"][name] = entry
    print(
      f"{name}: {first['runs']} runs; first invocation {first['seconds']:.1f} s "
      f"({first['runs_per_s']:.2f} runs/s end to end), second {second['seconds']:.1f} s "
      f"({second['runs_per_s']:.2f} runs/s); warm in bench.json: {warm.get(name)}",
      flush=True,
    )
  Path(_OUT.value).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
