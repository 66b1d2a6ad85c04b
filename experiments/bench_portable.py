"""What portable bits cost: warm training rates of semantics v5 against v4, in one run.

    python -m experiments.bench_portable --out=bench.json

"after" trains one epoch per call with this tree's default plan (cubist.engine.ChunkPlan:
the portable "dot" layout at widths <= 16, its chunk sizes) and, for comparison, the
library-matmul "gemm" layout; "before" runs the same measurement in a subprocess on the source of
the last v4 commit (`--before_commit`, extracted with `git archive`): v4's "unit"
layout at widths <= 4 and its "dot" (library matmuls) above, at v4's chunk sizes. Each figure is the median
of `--repeats` warm calls, in experiment-epochs per second (a full 50-epoch run is
50 of them); `first_call_s` is the compile plus the first call (the end-to-end cost
a new program pays once). The ratio after / before is measured on the same machine in
the same invocation. The results go into `--out` under "portable" (other keys kept).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The last commit of training semantics v4 (before cubist.portable).
V4_COMMIT = "cae6d8c"
# (width, chunk size of v4's plan: ChunkPlan.chunk_sizes ((4, 256), (6, 128), (8, 512), ...)).
# v5 is measured at its own plan's chunk size for the width.
CASES = ((1, 256), (2, 256), (3, 256), (4, 256), (8, 512), (16, 128))


def measure(cases, repeats: int) -> list[dict]:
  """Warm and first-call rates of one-epoch plain training, each case (layout, width, chunk)."""
  import jax
  import numpy as np

  from cubist import chunks, data, train
  from cubist.specs import ExperimentSpec

  x, y = data.cubist_spiral()
  records = []
  for layout, width, chunk in cases:
    static = train.TrainStatic(width=width, epochs=1, formulation=layout)
    specs = [ExperimentSpec(seed=i, lr=0.1, width=width, epochs=1) for i in range(chunk)]
    inputs = chunks.chunk_inputs(specs, width, None, None)
    start = time.perf_counter()
    compiled = train.make_train(static).lower(x, y, inputs).compile()
    jax.block_until_ready(compiled(x, y, inputs))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(compiled(x, y, inputs))
      times.append(time.perf_counter() - start)
    records.append(
      {
        "layout": layout,
        "width": width,
        "chunk": chunk,
        "first_call_s": round(first, 3),
        "warm_call_s": round(float(np.median(times)), 4),
        "epoch_runs_per_s": round(chunk / float(np.median(times)), 1),
      }
    )
    print(json.dumps(records[-1]), file=sys.stderr, flush=True)
  return records


def _before(cases, repeats: int, commit: str) -> list[dict] | str:
  """The same measurement on the v4 source tree, in a subprocess; or why it could not run."""
  with tempfile.TemporaryDirectory(prefix="cubist-v4-") as tree:
    archive = subprocess.run(
      ["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=False
    )
    if archive.returncode != 0:
      return f"git archive {commit} failed: {archive.stderr.decode().strip()}"
    subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
    env = {**os.environ, "PYTHONPATH": tree}
    child = subprocess.run(
      [sys.executable, __file__, "--child", json.dumps([list(c) for c in cases]), str(repeats)],
      env=env,
      capture_output=True,
      text=True,
      check=False,
    )
    if child.returncode != 0:
      return f"the v4 measurement failed: {child.stderr.strip().splitlines()[-1:]}"
    return json.loads(child.stdout)


def main(argv) -> None:
  if argv[1:2] == ["--child"]:  # runs on the v4 tree (PYTHONPATH), imports only cubist
    print(json.dumps(measure([tuple(c) for c in json.loads(argv[2])], int(argv[3]))))
    return
  from absl import flags

  flags.DEFINE_string("out", "bench.json", "JSON file to add the 'portable' results to.")
  flags.DEFINE_integer("repeats", 3, "Timed warm calls per program (median reported).")
  flags.DEFINE_string("before_commit", V4_COMMIT, "The v4 commit measured as 'before'.")
  flags.DEFINE_bool("quick", False, "Smoke version: widths 2 and 8, chunks of 8, one repeat.")
  flags.FLAGS(argv)
  options = flags.FLAGS

  from cubist import engine, machine

  plan = engine.ChunkPlan()
  cases = ((2, 8), (8, 8)) if options.quick else CASES
  repeats = 1 if options.quick else options.repeats
  chunk = (lambda width: 8) if options.quick else plan.chunk_size
  after_cases = [(plan.formulation(w), w, chunk(w)) for w, _ in cases]
  after_cases += [("gemm", w, chunk(w)) for w, _ in cases if w >= 8]
  before_cases = [("unit" if w <= 4 else "dot", w, c) for w, c in cases]
  after = measure(after_cases, repeats)
  before = _before(before_cases, repeats, options.before_commit)
  ratios = {}
  if isinstance(before, list):
    for new, old in zip(after, before):
      ratios[str(new["width"])] = round(new["epoch_runs_per_s"] / old["epoch_runs_per_s"], 3)
  result = {
    "machine": machine.signature(),
    "python": platform.python_version(),
    "units": "experiment-epochs per second, median of warm one-epoch calls",
    "after_v5": after,
    "before_v4": before,
    "before_commit": options.before_commit,
    "ratio_after_over_before": ratios,
  }
  out = Path(options.out)
  existing = json.loads(out.read_text()) if out.exists() else {}
  existing["portable"] = result
  out.write_text(json.dumps(existing, indent=1) + "\n")
  print(f"{'width':>5} {'v4 layout':>9} {'v4 runs/s':>10} {'v5 layout':>9} {'v5 runs/s':>10} ratio")
  for index, (width, _) in enumerate(cases):
    new = after[index]
    old = before[index] if isinstance(before, list) else None
    print(
      f"{width:>5} {old['layout'] if old else '-':>9} "
      f"{old['epoch_runs_per_s'] if old else float('nan'):>10.1f} {new['layout']:>9} "
      f"{new['epoch_runs_per_s']:>10.1f} {ratios.get(str(width), float('nan')):.2f}"
    )
  for record in after[len(cases) :]:
    print(f"{record['width']:>5} {'':>9} {'':>10} {'gemm':>9} {record['epoch_runs_per_s']:>10.1f}")
  print(f"machine: {result['machine'].get('cpu')}; written to {out} under 'portable'")


if __name__ == "__main__":
  main(sys.argv)
