r"""Throughput benchmark of the vectorised trainer: `python -m experiments.bench --out=bench.json`.

Measures warm runs per second of whole training runs at the paper's settings
(50 epochs, batch 128, all 49,982 points) with the engine's data order (each
experiment its own per-epoch permutation, `order="feistel"`; see flags) for

  (a) dense width 16 (all-ones masks), formulations "dot" and "unit", a sweep
      of chunk sizes (experiments per compiled call);
  (b) the (3,3,3) structured mask, sliced to the smallest padded width that
      holds it (3: exact, the units beyond are inert), both formulations, a
      sweep of chunk sizes;

then, for the fastest configuration of each, a real 50-epoch call (the
headline), the same configurations sharded over all local CPU devices (in a
subprocess, because `--xla_force_host_platform_device_count` must be set
before jax is imported), the cost of the data order (shared vs per-experiment,
Feistel vs sort), the PyTorch oracle's seconds per run
(`third_party.torch_reference.seconds_per_run`) and the speed-ups, and a
per-width table of the fastest formulation and chunk size
(`measure_recommendations`) for the engine's `ChunkPlan`.

Timing rules (see `measure`):
  * compile time is measured separately: `jit(...).lower(...).compile()`;
    throughput never includes it;
  * every timed call ends with `jax.block_until_ready`; a configuration's
    first call is a warm-up, reported as `first_call_s` and excluded;
  * runs/s = chunk size / (seconds of one 50-epoch call);
  * real 50-epoch calls (`basis: "measured"`): warm-up, then the median of
    `repeats` calls. The headline `best` entries are such calls;
  * sweep entries (`basis: "extrapolated"`) time programs of 1 and
    `sweep_epochs` epochs, interleaved, `repeats` each, and fit the line
    T(e) = fixed + e * per_epoch through the two medians: the fixed part (the
    final full-data evaluation, layout changes) is counted once, not 50/e
    times. T(50) = fixed + 50 * per_epoch. `extrapolation_check` compares this
    with the real 50-epoch calls of the headline configurations;
  * a configuration whose 1-epoch warm-up already shows it is slower than
    `prune_ratio` x the best so far, or slower than `call_limit_s`, keeps that
    single cold sample, plainly scaled (`extrapolation: "plain"`, pessimistic),
    and its formulation's larger chunks are skipped; so is a chunk whose
    call time, predicted linearly from the previous chunk, exceeds
    `call_limit_s`. A compile longer than `compile_limit_s` marks the
    configuration skipped (an in-process compile cannot be interrupted, so this
    is checked after the fact).

Output: a readable table on stdout and a JSON file (layout in `_SCHEMA_DOC`).
`--quick` runs a smoke version (1 epoch, tiny chunks, well under a minute).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cubist import data, masks, mlp, order, train
from experiments import projection

_SCHEMA = "cubist.bench/2"
_SCHEMA_DOC = """\
schema, timestamp, command_line, argv, quick, total_seconds, loadavg{start,end},
machine{platform, processor, uname, cpu_count, python, jax, jaxlib, numpy, backend, devices,
        xla_flags},
settings{epochs, sweep_epochs, repeats, shared_order, order, batch_size, num_points,
         batches_per_epoch, call_limit_s, compile_limit_s, prune_ratio, tolerance, statistic,
         extrapolation, ...},
dense_w16 / structured_333{description, masks, width, slice_width?, sweep[measurement],
         best (measurement: a real run_epochs call of the sweep's fastest configuration)},
sharded{status, device_count, devices, xla_flags, child_seconds,
        dense_w16 / structured_333{sweep[measurement], best}},
data_order{order_generation_ms_per_key_epoch{feistel, sort}, dense_w16 / structured_333{
           variants{"own/feistel", "shared/feistel", "own/sort", "shared/sort": measurement},
           ms_per_experiment_epoch_vs_shared_feistel{...}}},
extrapolation_check{tolerance, valid, checks[{config, extrapolated_s, measured_s,
                    relative_error, within_tolerance, ...}]},
oracle{status, seconds_per_run (median-based), seconds_per_run_min, threads, raw},
speedup{dense_w16 / structured_333{runs_per_s, config, oracle_seconds_per_run, per_machine,
        per_core, cores}},
targets{dense_w16 / structured_333{target_runs_per_s, achieved_runs_per_s, config, met}},
per_width{epochs_timed, run_epochs, basis, widths{"w": {best, measurements}}, buckets, chunk_plan},
recommendations{"1".."16": {formulation, chunk, runs_per_s, measured_width, basis} | null},
chunk_plan{unit_max_width, chunk_sizes[[max_width, chunk], ...]} (engine.ChunkPlan fields).
A measurement: {label, masks, width, formulation, chunk, devices, shared_order, order, epochs
(of the timed call), run_epochs, status "ok"|"skipped", reason?, note?, basis
"measured"|"extrapolated", extrapolation "fit"|"plain"?, lower_s, compile_s, first_call_s,
samples_s (epochs-epoch calls), median_s, samples_1epoch_s?, median_1epoch_s?, fit{
per_epoch_s, fixed_s}?, samples_cpu_s?, median_cpu_s, median_1epoch_cpu_s?,
cpu_seconds_per_run_epochs (process CPU time, same rules), warm,
seconds_per_run_epochs (one run_epochs call), runs_per_s,
ms_per_experiment_epoch, loadavg_1m, loadavg_1m_end}."""

DENSE_WIDTH = 16
STRUCTURED_WIDTHS = (3, 3, 3)
TARGETS = {"dense_w16": 4.0, "structured_333": 25.0}
SECTIONS = ("dense_w16", "structured_333")
DEFAULT_PER_WIDTH_WIDTHS = (1, 2, 3, 4, 6, 8, 12, 16)
# The phase-1 answer of our random-init 95% search (README).
SEARCH95_WIDTHS = (4, 2, 4)  # our random-init 95% phase-1 answer (README)

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "bench.json", "Where to write the JSON results.")
flags.DEFINE_bool("quick", False, "Smoke version: 1 epoch, tiny chunks, well under a minute.")
flags.DEFINE_integer("epochs", 50, "Epochs of a full run (the paper's 50).")
flags.DEFINE_integer("repeats", 3, "Timed warm calls per program (median reported).")
flags.DEFINE_integer("sweep_epochs", 2, "Epochs of the longer sweep program (fit with 1 epoch).")
flags.DEFINE_list("dense_chunks", ["64", "128", "256", "512"], "Chunk sizes for (a).")
flags.DEFINE_list("sparse_chunks", ["128", "256", "512", "1024", "2048"], "Chunk sizes for (b).")
flags.DEFINE_list("formulations", list(train.FORMULATIONS), "Formulations to measure.")
flags.DEFINE_bool(
  "shared_order",
  False,
  "Sweeps and headline share one data order per epoch across experiments "
  "(default: each experiment its own, as the engine runs them).",
)
flags.DEFINE_enum(
  "order",
  "feistel",
  list(order.ORDER_METHODS),
  "How epoch permutations are drawn in sweeps and headline (cubist.order).",
)
flags.DEFINE_float(
  "call_limit_s",
  40.0,
  "Skip a configuration whose predicted call time "
  "exceeds this; a slower warm-up keeps a single cold sample.",
)
flags.DEFINE_float(
  "compile_limit_s",
  120.0,
  "Record a configuration whose compile exceeds this as skipped (its calls are not run).",
)
flags.DEFINE_float(
  "prune_ratio",
  0.33,
  "A configuration whose warm-up is below this fraction "
  "of the best runs/s so far in its sweep keeps one cold sample and ends its "
  "formulation's series (0: off).",
)
flags.DEFINE_float("tolerance", 0.05, "Allowed relative error of the epoch extrapolation.")
flags.DEFINE_bool("headline", True, "Run real full-epoch calls for the best configurations.")
flags.DEFINE_bool(
  "headline_warmup",
  False,
  "Precede the real full-epoch calls with an untimed "
  "one (default: the first call after the ahead-of-time compile is a sample).",
)
flags.DEFINE_bool(
  "sharded",
  True,
  "Measure the best configurations sharded over all local devices, in a subprocess.",
)
flags.DEFINE_integer(
  "sharded_devices", 0, "Host devices of the sharded subprocess (0: os.cpu_count())."
)
flags.DEFINE_bool("data_order", True, "Measure the other data orders for the best configs.")
flags.DEFINE_bool("oracle", True, "Time the PyTorch oracle.")
flags.DEFINE_bool("per_width", True, "Measure the per-width recommendation table.")
flags.DEFINE_list(
  "per_width_widths",
  [str(w) for w in DEFAULT_PER_WIDTH_WIDTHS],
  "Widths measured for the recommendation table.",
)
flags.DEFINE_string("sharded_child", None, "Internal: JSON spec of the sharded measurements.")
flags.DEFINE_string("child_out", None, "Internal: where the sharded child writes its JSON.")


# --------------------------------------------------------------------------- inputs


def spiral() -> tuple[jax.Array, jax.Array]:
  """The Cubist Spiral as device arrays: x float32 (N, 2), y float32 (N,)."""
  x, y = data.cubist_spiral()
  return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def make_inputs(
  chunk: int, mask_widths: Sequence[int] | None, width: int | None = None, seed: int = 0
) -> tuple[train.TrainInputs, int]:
  """A chunk of `chunk` experiments and the width it runs at.

  Initial weights are width-16 PyTorch-default draws, U(-1/sqrt(fan_in),
  1/sqrt(fan_in)) as `mlp.init`, made with numpy so that building a chunk
  compiles nothing, then sliced as the search carves narrower networks out of
  the width-16 model. `mask_widths=(d1, d2, d3)` gives the structured mask
  inside width 16, sliced to its occupied width (exact: the units beyond are
  inert); `mask_widths=None` gives all-ones masks at `width` (default 16).
  Keys are random raw uint32 pairs; learning rates (0.01..0.1) and schedules
  vary across the chunk, as in a sweep.
  """
  rng = np.random.default_rng(seed)
  params = []
  for weight_shape, bias_shape in mlp.layer_shapes(DENSE_WIDTH):
    bound = 1.0 / np.sqrt(weight_shape[1])
    params.append(
      mlp.Layer(
        rng.uniform(-bound, bound, (chunk,) + weight_shape).astype(np.float32),
        rng.uniform(-bound, bound, (chunk,) + bias_shape).astype(np.float32),
      )
    )
  if mask_widths is None:
    run_width = DENSE_WIDTH if width is None else width
    mask = tuple(
      mlp.Layer(np.ones((chunk,) + w, bool), np.ones((chunk,) + b, bool))
      for w, b in mlp.layer_shapes(run_width)
    )
  else:
    full = masks.structured_masks(tuple(mask_widths), DENSE_WIDTH)
    run_width = masks.occupied_width(full)
    mask = mlp.slice_params(
      tuple(mlp.Layer(*(np.broadcast_to(a, (chunk,) + a.shape) for a in layer)) for layer in full),
      run_width,
    )
  inputs = train.TrainInputs(
    key=rng.integers(0, 2**32, (chunk, 2), dtype=np.uint32),
    lr=rng.uniform(0.01, 0.1, chunk).astype(np.float32),
    schedule=(np.arange(chunk) % 3).astype(np.int32),
    params=mlp.slice_params(tuple(params), run_width),
    masks=mask,
  )
  return jax.device_put(jax.tree.map(np.ascontiguousarray, inputs)), run_width


# --------------------------------------------------------------------------- timing


def _loadavg() -> float | None:
  try:
    return round(os.getloadavg()[0], 2)
  except OSError:
    return None


def _order_label(record: dict[str, Any]) -> str:
  return f"{'shared' if record.get('shared_order') else 'own'}/{record.get('order', '?')}"


def _call_seconds(record: dict[str, Any], epochs: int) -> float:
  """A record's (estimated) seconds for one `epochs`-epoch call."""
  return record["seconds_per_run_epochs"] * epochs / record["run_epochs"]


def measure(
  x,
  y,
  *,
  label: str,
  mask_widths: Sequence[int] | None,
  width: int | None,
  formulation: str,
  chunk: int,
  epochs: int,
  run_epochs: int,
  repeats: int,
  shared_order: bool,
  order_method: str,
  call_limit_s: float,
  compile_limit_s: float,
  mesh: jax.sharding.Mesh | None = None,
  predicted_call_s: float | None = None,
  dominated_below: float = 0.0,
  warmup: bool = True,
) -> dict[str, Any]:
  """Time one configuration; returns a measurement record (see `_SCHEMA_DOC`).

  epochs == run_epochs: real calls (warm-up, then `repeats`). Otherwise the
  1-epoch and `epochs`-epoch programs are timed, interleaved, and the line
  through their medians gives the run_epochs time (module docstring).
  predicted_call_s: skip if above call_limit_s. dominated_below: runs/s under
  which the warm-up is kept as a single cold sample (record `dominated`).
  warmup=False (real calls only): the first call after the ahead-of-time
  compile counts as the first of the `repeats` samples; used for the long
  headline calls, where `first_call_over_median` in the sweeps shows that a
  first call after `.compile()` costs the same as later ones.
  """
  record: dict[str, Any] = {
    "label": label,
    "masks": "dense" if mask_widths is None else list(mask_widths),
    "width": width,
    "formulation": formulation,
    "chunk": chunk,
    "devices": 1 if mesh is None else mesh.size,
    "shared_order": shared_order,
    "order": order_method,
    "epochs": epochs,
    "run_epochs": run_epochs,
    "basis": "measured" if epochs == run_epochs else "extrapolated",
    "loadavg_1m": _loadavg(),
  }
  if mesh is not None and chunk % mesh.size:
    return {
      **record,
      "status": "skipped",
      "reason": f"chunk {chunk} is not divisible by {mesh.size} devices",
    }
  if predicted_call_s is not None and predicted_call_s > call_limit_s:
    return {
      **record,
      "status": "skipped",
      "predicted_call_s": round(predicted_call_s, 2),
      "reason": (
        f"predicted call {predicted_call_s:.1f} s (linear in chunk) > call_limit_s={call_limit_s:g}"
      ),
    }
  inputs, run_width = make_inputs(chunk, mask_widths, width)
  record["width"] = run_width
  if mesh is not None:
    experiments = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(train.EXPERIMENT_AXIS)
    )
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    inputs = jax.device_put(inputs, experiments)
    x, y = jax.device_put(x, replicated), jax.device_put(y, replicated)
  jax.block_until_ready((x, y, inputs))
  # Process CPU time of every call, by program: robust to other processes taking
  # cores (wall time is not), so a loaded machine can still check linearity.
  cpu_seconds: dict[int, list[float]] = {}

  def build(program_epochs: int):
    static = train.TrainStatic(
      width=run_width,
      epochs=program_epochs,
      formulation=formulation,
      shared_order=shared_order,
      order=order_method,
    )
    t0 = time.perf_counter()
    lowered = train.make_train(static, mesh=mesh).lower(x, y, inputs)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    record["lower_s"] = round(record.get("lower_s", 0.0) + t1 - t0, 3)
    record["compile_s"] = round(record.get("compile_s", 0.0) + t2 - t1, 3)
    if t2 - t0 > compile_limit_s:
      return None

    def call() -> float:
      start, cpu_start = time.perf_counter(), time.process_time()
      jax.block_until_ready(compiled(x, y, inputs))
      cpu_seconds.setdefault(program_epochs, []).append(time.process_time() - cpu_start)
      return time.perf_counter() - start

    return call

  def too_slow():
    return {
      **record,
      "status": "skipped",
      "reason": f"compile took {record['compile_s']:.1f} s > compile_limit_s={compile_limit_s:g}",
    }

  fit = epochs != run_epochs and epochs > 1
  first_epochs = 1 if fit else epochs
  first_program = build(first_epochs)
  if first_program is None:
    return too_slow()
  first = first_program()
  record["first_call_s"] = round(first, 4)
  plain_per_run = first * run_epochs / first_epochs
  single = None
  if chunk / plain_per_run < dominated_below:
    single = (
      f"dominated: warm-up gives {chunk / plain_per_run:.2f} runs/s < "
      f"{dominated_below:.2f} (prune_ratio x best so far)"
    )
    record["dominated"] = True
  elif first * epochs / first_epochs > call_limit_s:
    single = f"a call takes ~{first * epochs / first_epochs:.1f} s > call_limit_s={call_limit_s:g}"
  if single is not None:
    record.update(
      status="ok",
      warm=False,
      samples_s=[round(first, 4)],
      median_s=round(first, 4),
      note=single + "; single cold sample, plain scaling",
    )
    if fit:
      record.update(extrapolation="plain", epochs=first_epochs)
    return _finish(record, plain_per_run, chunk, first_epochs, first)

  if not fit:
    samples = [] if warmup else [first]
    samples += [first_program() for _ in range(max(1, repeats) - len(samples))]
    median = float(np.median(samples))
    cpu = cpu_seconds[epochs][-len(samples) :]
    record.update(
      status="ok",
      warm=True,
      samples_s=[round(s, 4) for s in samples],
      median_s=round(median, 4),
      samples_cpu_s=[round(c, 4) for c in cpu],
      median_cpu_s=round(float(np.median(cpu)), 4),
      cpu_seconds_per_run_epochs=round(float(np.median(cpu)) * run_epochs / epochs, 4),
    )
    return _finish(record, median * run_epochs / epochs, chunk, epochs, median)

  long_program = build(epochs)
  if long_program is None:
    return too_slow()
  short, long = [], []
  for _ in range(max(1, repeats)):
    short.append(first_program())
    long.append(long_program())
  t_short, t_long = float(np.median(short)), float(np.median(long))
  per_epoch = (t_long - t_short) / (epochs - 1)
  record.update(
    status="ok",
    warm=True,
    samples_s=[round(s, 4) for s in long],
    median_s=round(t_long, 4),
    samples_1epoch_s=[round(s, 4) for s in short],
    median_1epoch_s=round(t_short, 4),
  )
  c_short = float(np.median(cpu_seconds[1][-len(short) :]))
  c_long = float(np.median(cpu_seconds[epochs][-len(long) :]))
  c_per_epoch = (c_long - c_short) / (epochs - 1)
  record.update(
    median_cpu_s=round(c_long, 4),
    median_1epoch_cpu_s=round(c_short, 4),
    cpu_seconds_per_run_epochs=round(
      c_short + c_per_epoch * (run_epochs - 1) if c_per_epoch > 0 else c_long * run_epochs / epochs,
      4,
    ),
  )
  if per_epoch <= 0:  # noise swamped the slope: fall back to plain scaling of the long call
    record.update(
      extrapolation="plain", note="non-positive fitted slope (timing noise): plain scaling"
    )
    return _finish(record, t_long * run_epochs / epochs, chunk, epochs, t_long)
  fixed = t_short - per_epoch
  record.update(
    extrapolation="fit", fit={"per_epoch_s": round(per_epoch, 5), "fixed_s": round(fixed, 5)}
  )
  return _finish(record, fixed + per_epoch * run_epochs, chunk, 1, per_epoch)


def _finish(record, per_run: float, chunk: int, epochs: int, seconds: float):
  record.update(
    seconds_per_run_epochs=round(per_run, 4),
    runs_per_s=round(chunk / per_run, 4),
    ms_per_experiment_epoch=round(1e3 * seconds / (chunk * epochs), 4),
    loadavg_1m_end=_loadavg(),
  )
  return record


def sweep(
  x,
  y,
  *,
  label: str,
  mask_widths,
  width,
  formulations: Iterable[str],
  chunks: Iterable[int],
  epochs: int,
  run_epochs: int,
  repeats: int,
  shared_order: bool,
  order_method: str,
  call_limit_s: float,
  compile_limit_s: float,
  prune_ratio: float = 0.0,
  mesh=None,
  log: Callable[[str], None] = print,
  reuse: dict | None = None,
) -> list[dict[str, Any]]:
  """`measure` every formulation at every chunk size, chunks ascending.

  A formulation's series stops (larger chunks recorded as skipped) after a
  skipped, dominated or over-long configuration; the next chunk's call time is
  predicted linearly from the previous one. `reuse` maps (width, formulation,
  chunk) to records of the same settings, used as they are.
  """
  results = []
  previous: dict[str, dict[str, Any]] = {}
  best_runs = 0.0
  for chunk in sorted(chunks):
    for formulation in formulations:
      key = (width, formulation, chunk)
      last = previous.get(formulation)
      if reuse is not None and key in reuse:
        record = dict(reuse[key], label=label)
      elif last is not None and (last["status"] != "ok" or not last.get("warm", True)):
        record = {
          k: last[k]
          for k in (
            "masks",
            "width",
            "formulation",
            "devices",
            "shared_order",
            "order",
            "epochs",
            "run_epochs",
            "basis",
          )
          if k in last
        }
        why = last.get("root_reason") or last.get("reason") or last.get("note")
        record.update(
          label=label,
          chunk=chunk,
          status="skipped",
          root_reason=why,
          reason=f"stopped at chunk {last.get('stopped_at', last['chunk'])}: {why}",
          stopped_at=last.get("stopped_at", last["chunk"]),
        )
      else:
        predicted = None if last is None else _call_seconds(last, epochs) * chunk / last["chunk"]
        record = measure(
          x,
          y,
          label=label,
          mask_widths=mask_widths,
          width=width,
          formulation=formulation,
          chunk=chunk,
          epochs=epochs,
          run_epochs=run_epochs,
          repeats=repeats,
          shared_order=shared_order,
          order_method=order_method,
          call_limit_s=call_limit_s,
          compile_limit_s=compile_limit_s,
          mesh=mesh,
          predicted_call_s=predicted,
          dominated_below=prune_ratio * best_runs,
        )
      results.append(record)
      log(_row(record))
      previous[formulation] = record
      if record["status"] == "ok":
        best_runs = max(best_runs, record["runs_per_s"])
  return results


def best_of(records: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
  """The record with the most runs/s (None if none was measured)."""
  ok = [r for r in records if r is not None and r.get("status") == "ok"]
  return max(ok, key=lambda r: r["runs_per_s"]) if ok else None


def _brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
  if record is None:
    return None
  keys = (
    "width",
    "formulation",
    "chunk",
    "devices",
    "shared_order",
    "order",
    "epochs",
    "median_s",
    "seconds_per_run_epochs",
    "runs_per_s",
    "basis",
    "extrapolation",
  )
  return {k: record[k] for k in keys if k in record}


# --------------------------------------------------------------------------- table


_HEADER = (
  f"{'label':<22} {'w':>2} {'form':<4} {'dev':>3} {'chunk':>5} {'order':<14} "
  f"{'ep':>3} {'compile':>7} {'call_s':>7} {'s/run':>7} {'runs/s':>8} basis"
)


def _row(r: dict[str, Any]) -> str:
  head = (
    f"{str(r.get('label', ''))[:22]:<22} {str(r.get('width', '')):>2} "
    f"{r['formulation']:<4} {r.get('devices', 1):>3} {r['chunk']:>5} "
    f"{_order_label(r):<14} {r.get('epochs', ''):>3} "
  )
  compile_s = r.get("compile_s")
  head += f"{compile_s:>7.1f} " if compile_s is not None else f"{'-':>7} "
  if r.get("status") != "ok":
    return head + f"skipped: {r.get('reason', '')}"
  per_run = r["seconds_per_run_epochs"] / r["chunk"]
  basis = r["basis"] + (f" ({r['extrapolation']})" if "extrapolation" in r else "")
  return head + (
    f"{r['median_s']:>7.3f} {per_run:>7.4f} {r['runs_per_s']:>8.2f} {basis}"
    f"{'' if r.get('warm', True) else ', cold'}"
  )


# --------------------------------------------------------------------------- per width


def default_chunks(width: int) -> tuple[int, ...]:
  """Chunk sizes tried for the recommendation table: wider nets, smaller chunks."""
  if width <= 2:
    return (512, 2048)
  if width <= 4:
    return (256, 1024)
  if width <= 8:
    return (128, 512)
  return (64, 256)


def chunk_plan(buckets: dict[str, Any]) -> dict[str, Any] | None:
  """`engine.ChunkPlan` fields from per-width buckets: unit up to a width, chunk per range."""
  widths = sorted(int(w) for w, b in buckets.items() if b is not None)
  if not widths:
    return None
  unit_max = 0
  for w in widths:
    if buckets[str(w)]["formulation"] != "unit":
      break
    unit_max = w
  sizes: list[list[int]] = []
  for w in widths:
    chunk = buckets[str(w)]["chunk"]
    if sizes and sizes[-1][1] == chunk:
      sizes[-1][0] = w
    else:
      sizes.append([w, chunk])
  return {
    "unit_max_width": unit_max,
    "chunk_sizes": sizes,
    "note": "widths above unit_max_width use dot; chunk_sizes are (max_width, chunk)",
  }


def measure_recommendations(
  x,
  y,
  *,
  widths: Sequence[int] = DEFAULT_PER_WIDTH_WIDTHS,
  chunks_for_width: Callable[[int], Sequence[int]] = default_chunks,
  formulations: Sequence[str] = train.FORMULATIONS,
  epochs: int = 2,
  run_epochs: int = 50,
  repeats: int = 3,
  shared_order: bool = False,
  order_method: str = "feistel",
  call_limit_s: float = 40.0,
  compile_limit_s: float = 120.0,
  prune_ratio: float = 0.33,
  reuse: dict | None = None,
  max_width: int = DENSE_WIDTH,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Fastest formulation and chunk size per width bucket (extrapolated from short calls).

  Each width in `widths` is timed with all-ones masks for every formulation
  and `chunks_for_width(width)` chunk, with `sweep`'s rules (1- and
  `epochs`-epoch programs, fitted and extrapolated to `run_epochs`). `reuse`
  maps (width, formulation, chunk) to existing records of the same settings.

  Returns {"epochs_timed", "run_epochs", "basis", "shared_order", "order",
  "widths": {str(w): {"best", "measurements"}}, "buckets": {str(w) for w in
  1..max_width: {"formulation", "chunk", "runs_per_s", "measured_width",
  "basis"} or None}, "chunk_plan"}. A width that was not measured takes the
  recommendation of the smallest measured width above it (the engine pads a
  network up to its bucket's width, which is exact).
  """
  measured: dict[str, Any] = {}
  for width in sorted({int(w) for w in widths}):
    records = sweep(
      x,
      y,
      label=f"per-width w{width}",
      mask_widths=None,
      width=width,
      formulations=formulations,
      chunks=chunks_for_width(width),
      epochs=epochs,
      run_epochs=run_epochs,
      repeats=repeats,
      shared_order=shared_order,
      order_method=order_method,
      call_limit_s=call_limit_s,
      compile_limit_s=compile_limit_s,
      prune_ratio=prune_ratio,
      log=log,
      reuse=reuse,
    )
    measured[str(width)] = {"best": _brief(best_of(records)), "measurements": records}
  buckets: dict[str, Any] = {}
  measured_widths = sorted(int(w) for w, v in measured.items() if v["best"] is not None)
  for width in range(1, max_width + 1):
    above = [w for w in measured_widths if w >= width]
    if not above:
      buckets[str(width)] = None
      continue
    best = measured[str(above[0])]["best"]
    buckets[str(width)] = {
      "formulation": best["formulation"],
      "chunk": best["chunk"],
      "runs_per_s": best["runs_per_s"],
      "measured_width": above[0],
      "basis": best["basis"],
    }
  return {
    "epochs_timed": epochs,
    "run_epochs": run_epochs,
    "basis": "extrapolated" if epochs != run_epochs else "measured",
    "shared_order": shared_order,
    "order": order_method,
    "widths": measured,
    "buckets": buckets,
    "chunk_plan": chunk_plan(buckets),
  }


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
  import jaxlib  # pylint: disable=import-outside-toplevel

  return {
    "platform": platform.platform(),
    "processor": platform.processor(),
    "uname": platform.uname()._asdict(),
    "cpu_count": os.cpu_count(),
    "python": sys.version.split()[0],
    "jax": jax.__version__,
    "jaxlib": getattr(jaxlib, "__version__", None),
    "numpy": np.__version__,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


# --------------------------------------------------------------------------- sharded child


def _run_sharded_child(spec: dict[str, Any], out_path: str) -> None:
  """In a process started with N host devices: measure the spec's configurations sharded."""
  x, y = spiral()
  mesh = train.experiment_mesh()
  result: dict[str, Any] = {
    "device_count": mesh.size,
    "devices": [str(d) for d in mesh.devices.flat],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  common = dict(
    run_epochs=spec["run_epochs"],
    repeats=spec["repeats"],
    shared_order=spec["shared_order"],
    order_method=spec["order"],
    compile_limit_s=spec["compile_limit_s"],
    mesh=mesh,
  )
  for name, config in spec["configs"].items():
    records = []
    for chunk in config["chunks"]:
      records.append(
        measure(
          x,
          y,
          label=f"{name} sharded",
          mask_widths=config["mask_widths"],
          width=config["width"],
          formulation=config["formulation"],
          chunk=chunk,
          epochs=spec["sweep_epochs"],
          call_limit_s=spec["call_limit_s"],
          **common,
        )
      )
      print(_row(records[-1]), flush=True)
    entry: dict[str, Any] = {"sweep": records, "best": None}
    top = best_of(records)
    if top is not None and spec["headline"]:
      entry["best"] = measure(
        x,
        y,
        label=f"{name} sharded best",
        mask_widths=config["mask_widths"],
        width=config["width"],
        formulation=config["formulation"],
        chunk=top["chunk"],
        epochs=spec["run_epochs"],
        call_limit_s=float("inf"),
        warmup=spec["headline_warmup"],
        **common,
      )
      print(_row(entry["best"]), flush=True)
    else:
      entry["best"] = top
    result[name] = entry
  with open(out_path, "w") as f:
    json.dump(result, f, indent=1)


def run_sharded(
  spec: dict[str, Any], devices: int, timeout_s: float, log: Callable[[str], None] = print
) -> dict[str, Any]:
  """Run `_run_sharded_child` in a subprocess with `devices` host devices."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
  ).strip()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
  with tempfile.TemporaryDirectory() as tmp:
    out_path = os.path.join(tmp, "sharded.json")
    command = [
      sys.executable,
      "-m",
      "experiments.bench",
      f"--sharded_child={json.dumps(spec)}",
      f"--child_out={out_path}",
    ]
    start = time.perf_counter()
    try:
      proc = subprocess.run(
        command, env=env, cwd=root, capture_output=True, text=True, timeout=timeout_s, check=False
      )
    except subprocess.TimeoutExpired:
      return {"status": "failed", "reason": f"timed out after {timeout_s:.0f} s"}
    for line in proc.stdout.splitlines():
      log(line)
    if proc.returncode != 0 or not os.path.exists(out_path):
      return {
        "status": "failed",
        "reason": f"exit code {proc.returncode}",
        "stderr_tail": proc.stderr[-2000:],
      }
    with open(out_path) as f:
      result = json.load(f)
  result.update(status="ok", child_seconds=round(time.perf_counter() - start, 1))
  return result


# --------------------------------------------------------------------------- oracle


def measure_oracle(run_epochs: int, repeats: int, epochs: int = 1) -> dict[str, Any]:
  """PyTorch oracle's seconds per `run_epochs`-epoch run at width 16 (one CPU thread)."""
  try:
    from third_party import torch_reference  # pylint: disable=import-outside-toplevel
  except ImportError as error:  # torch is a test-only dependency
    return {"status": "skipped", "reason": f"cannot import the oracle: {error}"}
  raw = torch_reference.seconds_per_run(
    width=DENSE_WIDTH, epochs=epochs, run_epochs=run_epochs, repeats=repeats
  )
  return {
    "status": "ok",
    "width": DENSE_WIDTH,
    "seconds_per_run": raw["seconds_per_epoch_median"] * run_epochs,
    "seconds_per_run_min": raw["projected_seconds_per_run"],
    "statistic": (
      f"median (and min) of {raw['repeats']} calls of {epochs} epoch(s), "
      f"scaled linearly to {run_epochs} epochs"
    ),
    "basis": "extrapolated" if epochs != run_epochs else "measured",
    "threads": raw["num_threads"],
    "raw": raw,
  }


def _speedup(best: dict[str, Any] | None, oracle: dict[str, Any], cores: int):
  if best is None or oracle.get("status") != "ok":
    return None
  runs = best["runs_per_s"]
  seconds = oracle["seconds_per_run"]
  return {
    "runs_per_s": runs,
    "config": _brief(best),
    "oracle_seconds_per_run": seconds,
    "oracle_width": oracle["width"],
    "oracle_threads": oracle["threads"],
    "cores": cores,
    "per_machine": round(runs * seconds, 2),
    "per_core": round(runs * seconds / cores, 2),
    "note": (
      "per_machine = runs/s x oracle s/run (the oracle on one thread, dense width "
      "16, as the reference trains masked networks at full width); per_core "
      "divides by the machine's cores, i.e. against one oracle per core"
    ),
  }


# --------------------------------------------------------------------------- data order


def _order_generation_ms(keys: int = 256, repeats: int = 3) -> dict[str, float]:
  """ms per key and epoch to draw one epoch's batches alone, per order method."""
  key_array = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, (keys, 2), np.uint32))
  out = {}
  for method in order.ORDER_METHODS:
    fn = jax.jit(
      jax.vmap(lambda k, m=method: order.epoch_batches(k, data.NUM_POINTS, data.BATCH_SIZE, m))
    )
    jax.block_until_ready(fn(key_array))
    samples = []
    for _ in range(max(1, repeats)):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(key_array))
      samples.append(time.perf_counter() - t0)
    out[method] = round(1e3 * float(np.median(samples)) / keys, 4)
  return out


def _measure_data_order(x, y, result, sections, settings, log) -> dict[str, Any]:
  """Every (shared, method) data order for the best sweep configuration of each section."""
  out: dict[str, Any] = {
    "status": "ok",
    "order_generation_ms_per_key_epoch": _order_generation_ms(settings["order_keys"]),
    "order_generation_note": (
      f"jit(vmap(order.epoch_batches)) over {settings['order_keys']} "
      "keys, all 390 batches of one epoch, warm median"
    ),
  }
  for name, section in sections.items():
    base = best_of(result[name]["sweep"])
    if base is None or name not in settings.get("data_order_sections", sections):
      continue
    variants = {_order_label(base): base}
    for shared in (False, True):
      for method in order.ORDER_METHODS:
        label = f"{'shared' if shared else 'own'}/{method}"
        if label in variants or label not in settings["data_order_variants"]:
          continue
        variants[label] = measure(
          x,
          y,
          label=f"{name} order",
          mask_widths=section["mask_widths"],
          width=section["width"],
          formulation=base["formulation"],
          chunk=base["chunk"],
          epochs=settings["sweep_epochs"],
          run_epochs=settings["epochs"],
          repeats=settings["repeats"],
          shared_order=shared,
          order_method=method,
          call_limit_s=settings["call_limit_s"],
          compile_limit_s=settings["compile_limit_s"],
        )
        log(_row(variants[label]))
    entry: dict[str, Any] = {
      "formulation": base["formulation"],
      "chunk": base["chunk"],
      "variants": {k: _brief(v) if v["status"] == "ok" else v for k, v in variants.items()},
    }
    reference = variants.get("shared/feistel")
    if reference is not None and reference["status"] == "ok":
      entry["ms_per_experiment_epoch_vs_shared_feistel"] = {
        k: round(
          1e3
          * (v["seconds_per_run_epochs"] - reference["seconds_per_run_epochs"])
          / (v["chunk"] * v["run_epochs"]),
          4,
        )
        for k, v in variants.items()
        if v["status"] == "ok"
      }
    out[name] = entry
  return out


# --------------------------------------------------------------------------- main flow


def run_bench(settings: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
  """The whole benchmark; returns the JSON-able results."""
  start = time.perf_counter()
  result: dict[str, Any] = {
    "schema": _SCHEMA,
    "schema_doc": _SCHEMA_DOC,
    "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "command_line": " ".join([os.path.basename(sys.executable)] + sys.argv),
    "argv": list(sys.argv),
    "quick": settings["quick"],
    "loadavg": {"start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
    "machine": machine_info(),
  }
  run_epochs, sweep_epochs = settings["epochs"], settings["sweep_epochs"]
  result["settings"] = {
    **{k: v for k, v in settings.items() if k not in ("quick", "chunks_for_width")},
    "batch_size": data.BATCH_SIZE,
    "num_points": data.NUM_POINTS,
    "batches_per_epoch": data.NUM_POINTS // data.BATCH_SIZE,
    "statistic": (
      "median of `repeats` warm calls, each ended by jax.block_until_ready; "
      "compile (lower + compile) timed separately; each configuration's first "
      "call is a warm-up, timed separately and excluded"
    ),
    "extrapolation": (
      f"sweeps fit T(e) = fixed + e * per_epoch through 1- and "
      f"{sweep_epochs}-epoch calls and report T({run_epochs}); headline "
      f"'best' entries are real {run_epochs}-epoch calls"
    ),
  }
  machine = result["machine"]
  log(
    f"machine: {machine['processor'] or machine['platform']}, {machine['cpu_count']} cpus, "
    f"jax {jax.__version__}, devices {machine['devices']}, "
    f"load {result['loadavg']['start']}"
  )
  x, y = spiral()
  order_kw = dict(shared_order=settings["shared_order"], order_method=settings["order"])
  common = dict(
    repeats=settings["repeats"],
    call_limit_s=settings["call_limit_s"],
    compile_limit_s=settings["compile_limit_s"],
    **order_kw,
  )
  sections = {
    "dense_w16": dict(
      mask_widths=None,
      width=DENSE_WIDTH,
      chunks=settings["dense_chunks"],
      formulations=settings.get("dense_formulations", settings["formulations"]),
      description="dense width 16 (all-ones masks)",
    ),
    "structured_333": dict(
      mask_widths=STRUCTURED_WIDTHS,
      width=None,
      chunks=settings["sparse_chunks"],
      formulations=settings["formulations"],
      description=(
        "(3,3,3) structured mask inside width 16, sliced to its occupied width 3 (exact)"
      ),
    ),
  }
  log(_HEADER)
  for name, section in sections.items():
    records = sweep(
      x,
      y,
      label=name,
      mask_widths=section["mask_widths"],
      width=section["width"],
      formulations=section["formulations"],
      chunks=section["chunks"],
      epochs=sweep_epochs,
      run_epochs=run_epochs,
      prune_ratio=settings["prune_ratio"],
      log=log,
      **common,
    )
    for formulation in settings["formulations"]:
      if formulation not in section["formulations"]:
        records.extend(
          {
            "label": name,
            "width": section["width"],
            "formulation": formulation,
            "chunk": chunk,
            "devices": 1,
            "epochs": sweep_epochs,
            "run_epochs": run_epochs,
            "status": "skipped",
            "shared_order": settings["shared_order"],
            "order": settings["order"],
            "reason": "not run with --quick (slow compile)",
          }
          for chunk in section["chunks"]
        )
    entry: dict[str, Any] = {
      "description": section["description"],
      "masks": ("dense" if section["mask_widths"] is None else list(section["mask_widths"])),
      "sweep": records,
      "best": None,
    }
    ok = [r for r in records if r["status"] == "ok"]
    if ok:
      entry["width"] = ok[0]["width"]
    if section["mask_widths"] is not None:
      entry["slice_width"] = masks.occupied_width(
        masks.structured_masks(section["mask_widths"], DENSE_WIDTH)
      )
    top = best_of(records)
    if top is not None and settings["headline"] and sweep_epochs != run_epochs:
      entry["best"] = measure(
        x,
        y,
        label=f"{name} best",
        mask_widths=section["mask_widths"],
        width=section["width"],
        formulation=top["formulation"],
        chunk=top["chunk"],
        epochs=run_epochs,
        run_epochs=run_epochs,
        warmup=settings["headline_warmup"],
        **{**common, "call_limit_s": float("inf")},
      )
      log(_row(entry["best"]))
    else:
      entry["best"] = top
    result[name] = entry
  result["extrapolation_check"] = _extrapolation_check(result, settings)
  result["first_call_over_median"] = _first_call_ratio(
    [r for name in sections for r in result[name]["sweep"]]
  )

  devices = settings["sharded_devices"] or os.cpu_count() or 1
  if settings["sharded"]:
    configs = {}
    for name, section in sections.items():
      top = best_of(result[name]["sweep"])
      if top is None:
        continue
      base = max(devices, top["chunk"] - top["chunk"] % devices)
      configs[name] = {
        "mask_widths": section["mask_widths"],
        "width": section["width"],
        "formulation": top["formulation"],
        "chunks": sorted({m * base for m in settings["sharded_chunk_multiples"]}),
      }
    spec = {
      "configs": configs,
      "run_epochs": run_epochs,
      "sweep_epochs": sweep_epochs,
      "repeats": settings["repeats"],
      "shared_order": settings["shared_order"],
      "order": settings["order"],
      "call_limit_s": settings["call_limit_s"],
      "compile_limit_s": settings["compile_limit_s"],
      "headline": settings["headline"] and sweep_epochs != run_epochs,
      "headline_warmup": settings["headline_warmup"],
    }
    log(f"sharded over {devices} host devices (subprocess):")
    result["sharded"] = run_sharded(spec, devices, timeout_s=settings["sharded_timeout_s"], log=log)
  else:
    result["sharded"] = {"status": "skipped", "reason": "--nosharded"}

  if settings["data_order"]:
    log("data orders:")
    result["data_order"] = _measure_data_order(x, y, result, sections, settings, log)
  else:
    result["data_order"] = {"status": "skipped", "reason": "--nodata_order"}

  if settings["oracle"]:
    log("PyTorch oracle (width 16, one thread) ...")
    oracle = measure_oracle(run_epochs, repeats=settings["repeats"])
  else:
    oracle = {"status": "skipped", "reason": "--nooracle"}
  result["oracle"] = oracle

  cores = os.cpu_count() or 1
  result["speedup"], result["targets"] = {}, {}
  for name in sections:
    sharded_best = None
    if result["sharded"].get("status") == "ok" and name in result["sharded"]:
      sharded_best = result["sharded"][name]["best"]
    best = best_of([result[name]["best"], sharded_best])
    result["speedup"][name] = _speedup(best, oracle, cores)
    result["targets"][name] = {
      "target_runs_per_s": TARGETS[name],
      "achieved_runs_per_s": None if best is None else best["runs_per_s"],
      "config": _brief(best),
      "met": best is not None and best["runs_per_s"] >= TARGETS[name],
    }
    if settings["quick"]:
      result["targets"][name]["note"] = (
        f"--quick: {run_epochs}-epoch runs and tiny chunks; not a real result"
      )

  if settings["per_width"]:
    reuse = {}
    for name in sections:
      for r in result[name]["sweep"]:
        if "--quick" not in r.get("reason", ""):
          reuse[(r["width"], r["formulation"], r["chunk"])] = r
    log("per-width recommendations:")
    per_width = measure_recommendations(
      x,
      y,
      widths=settings["per_width_widths"],
      chunks_for_width=settings["chunks_for_width"],
      formulations=settings.get("per_width_formulations", settings["formulations"]),
      epochs=sweep_epochs,
      run_epochs=run_epochs,
      prune_ratio=settings["prune_ratio"],
      reuse=reuse,
      log=log,
      **common,
    )
    result["per_width"] = per_width
    result["recommendations"] = per_width["buckets"]
    result["chunk_plan"] = per_width["chunk_plan"]
  else:
    result["per_width"] = {"status": "skipped", "reason": "--noper_width"}
    result["recommendations"] = None
    result["chunk_plan"] = None

  result["loadavg"]["end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
  result["total_seconds"] = round(time.perf_counter() - start, 1)
  return result


def _first_call_ratio(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
  """How much slower a program's first call after `.compile()` is than its warm median."""
  ratios = []
  for r in records:
    if r.get("status") == "ok" and r.get("warm"):
      median = r.get("median_1epoch_s", r["median_s"])
      if median > 0:
        ratios.append(r["first_call_s"] / median)
  if not ratios:
    return None
  return {
    "median": round(float(np.median(ratios)), 4),
    "max": round(max(ratios), 4),
    "count": len(ratios),
    "note": "first_call_s / warm median of the same program, over the (a) and (b) sweeps",
  }


def _extrapolation_check(result: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
  """The sweep's extrapolation of each headline configuration vs its real full-length run."""
  checks = []
  for name in SECTIONS:
    best = result.get(name, {}).get("best")
    if best is None or best.get("status") != "ok" or best["basis"] != "measured":
      continue
    swept = [
      r
      for r in result[name]["sweep"]
      if r["status"] == "ok"
      and r.get("warm")
      and r["basis"] == "extrapolated"
      and r["formulation"] == best["formulation"]
      and r["chunk"] == best["chunk"]
    ]
    if not swept:
      continue
    s = swept[0]
    error = s["seconds_per_run_epochs"] / best["median_s"] - 1.0
    check = {
      "config": name,
      "formulation": best["formulation"],
      "chunk": best["chunk"],
      "method": s.get("extrapolation"),
      "sweep_epochs": s["epochs"],
      "extrapolated_s": s["seconds_per_run_epochs"],
      "measured_s": best["median_s"],
      "relative_error": round(error, 4),
      "within_tolerance": abs(error) <= settings["tolerance"],
    }
    if "cpu_seconds_per_run_epochs" in s and best.get("median_cpu_s"):
      check["cpu_extrapolated_s"] = s["cpu_seconds_per_run_epochs"]
      check["cpu_measured_s"] = best["median_cpu_s"]
      check["cpu_relative_error"] = round(
        s["cpu_seconds_per_run_epochs"] / best["median_cpu_s"] - 1.0, 4
      )
    plain = s["median_s"] * best["run_epochs"] / s["epochs"]
    check["plain_scaling_s"] = round(plain, 4)
    check["plain_scaling_relative_error"] = round(plain / best["median_s"] - 1.0, 4)
    if "fit" in s:
      check["fit"] = s["fit"]
    checks.append(check)
  return {
    "tolerance": settings["tolerance"],
    "checks": checks,
    "valid": bool(checks) and all(c["within_tolerance"] for c in checks),
    "note": (
      "cpu_* repeat the check in process CPU time, which other processes on a "
      "shared machine disturb far less than wall time. "
      "extrapolated = fixed + run_epochs x per_epoch from the sweep's 1- and "
      "sweep_epochs-epoch calls; plain_scaling = sweep call x run_epochs / "
      "sweep_epochs (counts the fixed cost, mostly the final evaluation, "
      "run_epochs / sweep_epochs times)"
    ),
  }


def print_summary(result: dict[str, Any], log: Callable[[str], None] = print) -> None:
  log("")
  log("=" * 110)
  log(
    f"summary ({'quick' if result['quick'] else 'full'}; load average start "
    f"{[round(v, 2) for v in result['loadavg']['start'] or []]}, end "
    f"{[round(v, 2) for v in result['loadavg']['end'] or []]}; {result['total_seconds']} s)"
  )
  log(_HEADER)
  sharded = result.get("sharded", {})
  for name in SECTIONS:
    for r in result[name]["sweep"]:
      log(_row(r))
    if result[name]["best"] is not None and result[name]["best"] not in result[name]["sweep"]:
      log(_row(result[name]["best"]))
    if sharded.get("status") == "ok" and sharded.get(name, {}).get("best") is not None:
      log(_row(sharded[name]["best"]))
  if sharded.get("status") not in ("ok", "skipped"):
    log(f"sharded: {sharded.get('status')}: {sharded.get('reason')}")
  orders = result.get("data_order", {})
  if orders.get("status") == "ok":
    log(f"order generation alone, ms per key-epoch: {orders['order_generation_ms_per_key_epoch']}")
    for name in SECTIONS:
      costs = orders.get(name, {}).get("ms_per_experiment_epoch_vs_shared_feistel")
      if costs:
        log(f"  {name}: extra ms per experiment-epoch vs shared/feistel: {costs}")
  for check in result["extrapolation_check"]["checks"]:
    log(
      f"extrapolation check {check['config']}: {check['extrapolated_s']:.2f} s extrapolated "
      f"({check['method']}) vs {check['measured_s']:.2f} s measured "
      f"({100 * check['relative_error']:+.1f}%, "
      f"{'ok' if check['within_tolerance'] else 'OUTSIDE'} "
      f"{100 * result['extrapolation_check']['tolerance']:.0f}%; plain scaling "
      f"{100 * check['plain_scaling_relative_error']:+.1f}%; in CPU time "
      f"{100 * check.get('cpu_relative_error', float('nan')):+.1f}%)"
    )
  oracle = result["oracle"]
  if oracle.get("status") == "ok":
    log(
      f"oracle: {oracle['seconds_per_run']:.2f} s per {result['settings']['epochs']}-epoch "
      f"run (median; min {oracle['seconds_per_run_min']:.2f} s), width 16, one thread"
    )
  for name, target in result["targets"].items():
    speed = result["speedup"].get(name)
    extra = ""
    if speed:
      extra = f"; speed-up {speed['per_machine']}x per machine, {speed['per_core']}x per core"
    log(
      f"target {name}: >= {target['target_runs_per_s']} runs/s, achieved "
      f"{target['achieved_runs_per_s']} -> {'MET' if target['met'] else 'not met'}{extra}"
    )
  if result.get("recommendations"):
    log("recommendations (width: formulation chunk runs/s [measured width]):")
    for width, rec in result["recommendations"].items():
      if rec:
        log(
          f"  w{width:>2}: {rec['formulation']:<4} {rec['chunk']:>5} "
          f"{rec['runs_per_s']:>8.2f} [w{rec['measured_width']}, {rec['basis']}]"
        )
    log(f"chunk_plan: {result['chunk_plan']}")


def _settings_from_flags() -> dict[str, Any]:
  common = {
    "shared_order": FLAGS.shared_order,
    "order": FLAGS.order,
    "compile_limit_s": FLAGS.compile_limit_s,
    "tolerance": FLAGS.tolerance,
    "sharded": FLAGS.sharded,
    "data_order": FLAGS.data_order,
    "oracle": FLAGS.oracle,
    "per_width": FLAGS.per_width,
    "headline_warmup": FLAGS.headline_warmup,
  }
  if FLAGS.quick:
    return {
      **common,
      "quick": True,
      "epochs": 1,
      "sweep_epochs": 1,
      "repeats": 1,
      "dense_chunks": [8],
      "sparse_chunks": [16],
      "formulations": list(train.FORMULATIONS),
      "dense_formulations": ["dot"],
      "call_limit_s": 30.0,
      "prune_ratio": 0.0,
      "headline": True,
      "sharded_devices": 2,
      "sharded_chunk_multiples": [1],
      "sharded_timeout_s": 120.0,
      "data_order_sections": ["structured_333"],
      "data_order_variants": ["shared/feistel"],
      "order_keys": 16,
      "per_width_widths": [1, 3],
      "per_width_formulations": ["dot"],
      "chunks_for_width": lambda w: (16,),
    }
  return {
    **common,
    "quick": False,
    "epochs": FLAGS.epochs,
    "sweep_epochs": min(FLAGS.sweep_epochs, FLAGS.epochs),
    "repeats": FLAGS.repeats,
    "dense_chunks": sorted({int(v) for v in FLAGS.dense_chunks}),
    "sparse_chunks": sorted({int(v) for v in FLAGS.sparse_chunks}),
    "formulations": list(FLAGS.formulations),
    "call_limit_s": FLAGS.call_limit_s,
    "prune_ratio": FLAGS.prune_ratio,
    "headline": FLAGS.headline,
    "sharded_devices": FLAGS.sharded_devices,
    "sharded_chunk_multiples": [1, 2],
    "sharded_timeout_s": 1800.0,
    "order_keys": 256,
    "data_order_variants": ["own/feistel", "shared/feistel", "own/sort", "shared/sort"],
    "per_width_widths": [int(w) for w in FLAGS.per_width_widths],
    "chunks_for_width": default_chunks,
  }


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.sharded_child is not None:
    if not FLAGS.child_out:
      raise app.UsageError("--sharded_child needs --child_out")
    _run_sharded_child(json.loads(FLAGS.sharded_child), FLAGS.child_out)
    return
  settings = _settings_from_flags()
  for formulation in settings["formulations"]:
    if formulation not in train.FORMULATIONS:
      raise app.UsageError(
        f"--formulations: {formulation!r} is unknown; known: {train.FORMULATIONS}"
      )
  if settings["sweep_epochs"] < 1:
    raise app.UsageError(f"--sweep_epochs={settings['sweep_epochs']} must be >= 1")
  log = lambda line: print(line, flush=True)
  result = run_bench(settings, log=log)
  print_summary(result, log=log)
  result["search_projection"] = search_projection(result, log=log)
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  os.makedirs(out_dir, exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(result, f, indent=1, default=_json_default)
  log(f"wrote {FLAGS.out}")


def search_projection(
  result: dict[str, Any],
  log: Callable[[str], None] = print,
  phase2_widths: Sequence[int] = SEARCH95_WIDTHS,
) -> dict[str, Any]:
  """Projected wall time of the full 95% search (issue: under 3 hours on this CPU).

  Rates per padded width come from the per-width table and the two measured
  headlines (width 3 and width 16); phase 2 is every mask triple inside
  `phase2_widths` (our random-init phase-1 answer) x 6 settings.
  """
  rates = {
    int(w): b["runs_per_s"]
    for w, b in result.get("per_width", {}).get("buckets", {}).items()
    if b and b.get("runs_per_s")
  }
  for name, width in (("structured_333", 3), ("dense_w16", 16)):
    achieved = result.get("targets", {}).get(name, {}).get("achieved_runs_per_s")
    if achieved:
      rates[width] = achieved
  if not rates:
    return {"status": "skipped: no rates"}
  out = projection.project(rates, tuple(phase2_widths))
  out["rates_runs_per_s"] = rates
  log(
    f"phase 2 at the 95% widths {tuple(phase2_widths)}: {out['phase2_runs_per_second']:.2f} runs/s; "
    f"projected full 95% search (phase 1 {out['phase1_runs']} runs + phase 2 "
    f"{out['phase2_runs']} runs): {out['total_hours']:.2f} h on this machine"
  )
  return out


def _json_default(value):
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  if isinstance(value, (tuple, np.ndarray)):
    return list(value)
  raise TypeError(f"not JSON serialisable: {type(value)}")


if __name__ == "__main__":
  app.run(main)
