r"""`make bench`, pruning part: runs/s per method and the overparameterisation projection.

  python -m experiments.bench_pruning --out=bench_pruning.json

For every registered method at w = 16 and w = 256 (f = 40): warm runs/s of a
full 50-epoch run (LTH: 5 rounds of 50), compile time separately. A full run
at w = 256 takes minutes, so each program is timed on the first 2 and 4 epochs
of the 50-epoch schedule (same events and counts) and fitted as
`fixed + per_epoch * epochs`; the fixed part holds the at-init scoring and the
final evaluation. Medians over `--repeats` warm calls. (A fit through 1 and 2
epochs proved unreliable: a 1-epoch scan compiles to a different program.)

The methods that fix their mask at initialisation (SNIP, GraSP, SynFlow,
Iter-SNIP, FORCE, ProsPr) and LTH are timed through the engine, as it trains
them: the mask step (LTH: rounds 1-4) at the full width, then only the live
units (cubist.compaction),
at every width of the family (3, 4, 6, 8, 16, 32, 64, 128, 256), 2 and 4
epochs fitted the same way (`time_engine`). At the narrow widths 3, 4, 6, 8
every method of paper (1) is also timed the way the separate pruning trainer
ran it before issue 9 (dense, batched matmuls), in the same run: the speed-up.

Projection of the whole §G.2 family (9 methods x widths 3..8, 16, ..., 256 x
targets f < N(w) x 9 settings): plain (fixed-mask) training is timed at every
width, and each method's cost at width w is the plain cost there times the
method's measured overhead at the nearest width it was timed at.
"""

from __future__ import annotations

import io
import json
import platform
import statistics
import tempfile
import time

import jax
from absl import app, flags

from cubist import chunks, data, engine, mlp, train
from cubist.method import PLAIN_METHOD
from cubist.specs import ExperimentSpec
from experiments import cli
from search import grids, study_cost
from search.pruning import registry

flags.DEFINE_string("out", "bench_pruning.json", "Where to write the JSON results.")
flags.DEFINE_list("methods", [], "Methods to time at --widths (default: all registered).")
flags.DEFINE_list("widths", ["16", "256"], "Widths at which every method is timed.")
flags.DEFINE_list(
  "narrow_widths",
  ["3", "4", "6", "8"],
  "Widths at which the paper's methods are timed in the layout the engine picks "
  "and in the batched-matmul layout the old pruning trainer always used.",
)
flags.DEFINE_list(
  "compact_widths",
  ["16", "32", "64", "128", "256"],
  "Widths beyond the narrow ones at which the at-init methods are timed through the engine "
  "(compacted: their cost no longer follows the dense width, so each width is measured).",
)
flags.DEFINE_list(
  "plain_widths",
  ["3", "4", "6", "8", "16", "32", "64", "128", "256"],
  "Widths at which plain training is timed for the projection.",
)
flags.DEFINE_integer("target", 40, "Target weight count f.")
flags.DEFINE_integer("repeats", 3, "Timed warm calls per program (median).")
flags.DEFINE_integer("epochs", 50, "Epochs of a full run.")
FLAGS = flags.FLAGS

FIT_EPOCHS = (2, 4)  # the two truncated lengths timed per program


def chunk_size(width: int) -> int:
  """Experiments per call: enough to fill the cores, small at the widest widths."""
  return 128 if width <= 16 else 16 if width <= 64 else 4 if width <= 128 else 2


def _specs(method: str, width: int, chunk: int, target: int, epochs: int):
  strength = 1.0 / data.NUM_POINTS if registry.get(method).uses_strength else 0.0
  return [
    ExperimentSpec(
      seed=i,
      lr=0.1,
      schedule="cosine",
      width=width,
      epochs=epochs,
      method=method,
      target_nnz=None if strength else target,
      strength=strength,
    )
    for i in range(chunk)
  ]


def time_program(
  method_name: str | None,
  width: int,
  target: int,
  epochs: int,
  repeats: int,
  layout: str | None = None,
  chunk: int | None = None,
) -> dict:
  """Fitted warm seconds of one full run of `method_name` (None: plain training) at `width`.

  layout: "dot" or "unit"; default the one the engine picks for this method and width.
  chunk: experiments per call (default `chunk_size(width)`, tuned for a 2-core CPU).
  """
  x, y = (jax.numpy.asarray(a) for a in data.cubist_spiral())
  chunk = chunk or chunk_size(width)
  name = method_name or "snip"  # plain training still needs a spec to build inputs
  specs = _specs(name, width, chunk, min(target, mlp.num_weights(width) - 1), epochs)
  method = registry.get(method_name) if method_name else PLAIN_METHOD
  method_static = specs[0].method_static()
  inputs = chunks.chunk_inputs(specs, width, method, method_static)
  key = engine.bucket_key(specs[0], registry.get, engine.ChunkPlan(compact=False))
  if method_name is None:
    key = engine.BucketKey(width, epochs, data.BATCH_SIZE, False, "feistel")
  layout = layout or engine.train_static(key, engine.ChunkPlan()).formulation
  mesh = train.experiment_mesh() if len(jax.local_devices()) > 1 else None
  if mesh is not None:  # as the engine does: the experiment axis sharded over the devices
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.EXPERIMENT_AXIS))
    inputs = jax.device_put(inputs, sharding)
  calls = {}
  for short in FIT_EPOCHS:
    static = train.TrainStatic(width=width, epochs=short, formulation=layout)
    fn = train.make_train(static, method, method_static, mesh=mesh, truncated=True)
    began = time.perf_counter()
    jax.block_until_ready(fn(x, y, inputs))
    first = time.perf_counter() - began
    seconds = []
    for _ in range(repeats):
      began = time.perf_counter()
      jax.block_until_ready(fn(x, y, inputs))
      seconds.append(time.perf_counter() - began)
    calls[short] = dict(
      median_s=statistics.median(seconds),
      all_s=seconds,
      compile_s=max(first - statistics.median(seconds), 0.0),
    )
  low = FIT_EPOCHS[0]
  return _fitted(
    {e: call["median_s"] for e, call in calls.items()},
    method.rounds,
    epochs,
    chunk,
    method=method_name or "plain",
    width=width,
    layout=layout,
    devices=1 if mesh is None else mesh.size,
    calls=calls,
    compile_s=calls[low]["compile_s"],
  )


def _fitted(seconds: dict, rounds: int, epochs: int, chunk: int, **fields) -> dict:
  """A benchmark record from the seconds of one call at each FIT_EPOCHS length: the fit
  `fixed + per_epoch * rounds * epochs` (per_epoch: one epoch of one round) of a full run,
  and per-run rates for a chunk of `chunk` runs; `fields` describe what was timed."""
  low, high = FIT_EPOCHS
  per_epoch = max(seconds[high] - seconds[low], 0.0) / (rounds * (high - low))
  fixed = max(seconds[low] - rounds * low * per_epoch, 0.0)
  full = fixed + per_epoch * rounds * epochs
  return dict(
    fields,
    chunk=chunk,
    rounds=rounds,
    fixed_s=fixed,
    per_epoch_s=per_epoch,
    full_call_s=full,
    seconds_per_run=full / chunk,
    runs_per_second=chunk / full,
  )


def time_engine(
  method_name: str, width: int, target: int, epochs: int, chunk: int | None = None
) -> dict:
  """Warm seconds per run of `method_name` at `width` through the engine, as it trains them.

  For a method that fixes its mask at initialisation this is the mask step at
  the full width plus the training of each run's live units (cubist.compaction).
  A chunk of `chunk_size(width)` specs (seeds 0..) runs once to compile, then
  again into a fresh workdir; runs of 2 and 4 epochs give fixed + per-epoch
  seconds, as `time_program`.
  """
  chunk = chunk or chunk_size(max(width, 16))
  specs = {
    e: _specs(method_name, width, chunk, min(target, mlp.num_weights(width) - 1), e)
    for e in FIT_EPOCHS
  }
  seconds, compile_s = {}, {}
  with tempfile.TemporaryDirectory(prefix="cubist-bench-") as root:
    for e, batch in specs.items():
      for attempt in ("cold", "warm"):
        began = time.perf_counter()
        engine.run(
          batch, f"{root}/{e}-{attempt}", methods=registry.get, progress_stream=io.StringIO()
        ).close()
        elapsed = time.perf_counter() - began
        if attempt == "cold":
          compile_s[e] = elapsed
        else:
          seconds[e] = elapsed
          compile_s[e] = max(compile_s[e] - elapsed, 0.0)
  return _fitted(
    seconds,
    registry.get(method_name).rounds,
    epochs,
    chunk,
    method=method_name,
    width=width,
    layout="engine",
    devices=len(jax.local_devices()),
    calls=seconds,
    compile_s=compile_s[FIT_EPOCHS[0]],
    basis="engine",
  )


def overparam_runs() -> dict[tuple[str, int], int]:
  """Runs of the §G.2 family per (method, width)."""
  settings = len(grids.PRUNING_LRS) * len(grids.SCHEDULES)
  return {
    (m, w): settings * sum(f < mlp.num_weights(w) for f in grids.OVERPARAM_TARGETS)
    for m in registry.PAPER_METHODS
    for w in grids.OVERPARAM_WIDTHS
  }


def project_overparam(method_records: list[dict], plain_records: list[dict]) -> dict:
  """Projected hours of the whole overparameterisation family on this machine.

  A method's cost at width w: plain training's measured cost at w times the
  method's measured overhead at the nearest width (log scale) that method was
  timed at, in the layout the engine picks (search.study_cost's rule, which the
  study's dry run uses too).
  """
  rates = study_cost.rates_from_bench(
    "here", None, dict(methods=method_records, plain=plain_records)
  )
  total, missing = 0.0, []
  for (method, width), runs in overparam_runs().items():
    per_run = study_cost.pruning_seconds_per_run(method, width, rates)
    if per_run is None:
      missing.append(method)
      continue
    total += runs * per_run
  return dict(
    runs=sum(overparam_runs().values()), hours=total / 3600, methods_missing=sorted(set(missing))
  )


def _staged(method) -> bool:
  """The engine trains it in two stages, the second on the live units only."""
  return method.fixes_mask_at_init or method.trains_last_round_fixed


def main(argv):
  del argv
  cli.configure_jax()  # as the binaries run: every core, the compilation cache
  names = FLAGS.methods or list(registry.names())
  result = dict(
    machine=dict(
      platform=platform.platform(),
      processor=platform.processor(),
      cpus=len(jax.devices()),
      backend=jax.default_backend(),
    ),
    target=FLAGS.target,
    epochs=FLAGS.epochs,
    repeats=FLAGS.repeats,
    command="python -m experiments.bench_pruning "
    + " ".join(
      f"--{k}={v}"
      for k, v in (
        ("methods", ",".join(FLAGS.methods)),
        ("widths", ",".join(FLAGS.widths)),
        ("narrow_widths", ",".join(FLAGS.narrow_widths)),
      )
      if v
    ),
    methods=[],
    plain=[],
  )
  for width in (int(w) for w in FLAGS.plain_widths):
    record = time_program(None, width, FLAGS.target, FLAGS.epochs, FLAGS.repeats)
    result["plain"].append(record)
    print(
      f"plain      w={width:>3}: {record['runs_per_second']:8.2f} runs/s "
      f"({record['seconds_per_run']:.3f} s/run)",
      flush=True,
    )
  for width in (int(w) for w in FLAGS.widths):
    for name in names:
      if name in registry.PAPER_METHODS and _staged(registry.get(name)):
        continue  # timed through the engine below, as it trains them
      record = time_program(name, width, FLAGS.target, FLAGS.epochs, FLAGS.repeats)
      result["methods"].append(record)
      print(
        f"{name:<10} w={width:>3}: {record['runs_per_second']:8.2f} runs/s "
        f"(compile {record['compile_s']:.1f} s)",
        flush=True,
      )
  result["narrow"] = []
  compact_widths = sorted({int(w) for w in FLAGS.narrow_widths + FLAGS.compact_widths})
  for name in [m for m in registry.PAPER_METHODS if m in names]:
    staged = _staged(registry.get(name))  # the engine trains its live units
    widths = compact_widths if staged else [int(w) for w in FLAGS.narrow_widths]
    for width in widths:
      if staged:
        record = time_engine(name, width, FLAGS.target, FLAGS.epochs)
      else:
        record = time_program(name, width, FLAGS.target, FLAGS.epochs, FLAGS.repeats)
      result["methods"].append(record)
      if width not in {int(w) for w in FLAGS.narrow_widths}:
        print(
          f"{name:<10} w={width:>3}: {record['runs_per_second']:8.2f} runs/s ({record['layout']})",
          flush=True,
        )
        continue
      # The old pruning trainer: every method dense, in batched matmuls.
      before = time_program(name, width, FLAGS.target, FLAGS.epochs, FLAGS.repeats, "dot")
      result["methods"].append({**before, "engine_layout": False})
      entry = dict(
        method=name,
        width=width,
        layout=record["layout"],
        runs_per_second=record["runs_per_second"],
        dot_runs_per_second=before["runs_per_second"],
        speedup=record["runs_per_second"] / before["runs_per_second"],
      )
      result["narrow"].append(entry)
      print(
        f"{name:<10} w={width:>3}: {entry['runs_per_second']:8.2f} runs/s ({entry['layout']}),"
        f" {entry['dot_runs_per_second']:8.2f} as before (dot): {entry['speedup']:.2f}x",
        flush=True,
      )
  result["overparam_projection"] = project_overparam(result["methods"], result["plain"])
  projection = result["overparam_projection"]
  print(
    f"overparameterisation family: {projection['runs']} runs, projected "
    f"{projection['hours']:.1f} h on this machine"
  )
  with open(FLAGS.out, "w") as handle:
    json.dump(result, handle, indent=2)


if __name__ == "__main__":
  app.run(main)
