r"""Throughput benchmark of the vectorised trainer: `python -m cubist.bench --out=bench.json`.

Measures warm runs per second of whole training runs at the paper's settings
(50 epochs, batch 128, all 49,982 points) for

  (a) dense width 16 (all-ones masks), formulations "dot" and "unit", a sweep
      of chunk sizes (experiments per compiled call);
  (b) the (3,3,3) structured mask, sliced to the smallest padded width that
      holds it (3: exact, the units beyond are inert), both formulations, a
      sweep of chunk sizes;

then, for the fastest configuration of each, a real 50-epoch call (the
headline), the same configurations sharded over all local CPU devices (in a
subprocess, because `--xla_force_host_platform_device_count` must be set
before jax is imported), the cost of per-experiment data orders
(`shared_order=False`) against one shared order, the PyTorch oracle's seconds
per run (`third_party.torch_reference.seconds_per_run`) and the speed-ups, and
a per-width table of the fastest formulation and chunk size
(`measure_recommendations`) for the engine's width buckets.

Timing rules (see `measure`):
  * compile time is measured separately: `jit(...).lower(...).compile()`;
  * the first execution of each compiled program is timed and reported as
    `first_call_s` but excluded; throughput is the median of `repeats` later
    calls, each ended by `jax.block_until_ready`;
  * runs/s = chunk size / (median seconds of one 50-epoch call);
  * sweep entries time a call of `sweep_epochs` epochs and extrapolate
    linearly to 50 (`basis: "extrapolated"`). This slightly over-counts the
    one final full-data evaluation of each call (it is counted 50/sweep_epochs
    times), so extrapolated runs/s are a little pessimistic. The headline
    numbers are real 50-epoch calls (`basis: "measured"`), and
    `extrapolation_check` compares them with the sweep's extrapolation.
  * A configuration whose predicted call time exceeds `call_limit_s`, or whose
    compile took longer than `compile_limit_s`, is recorded as skipped with
    the reason; a call slower than `call_limit_s` is kept as a single cold
    sample (`warm: false`). An in-process compile cannot be interrupted, so the
    compile limit is checked after the fact.

Output: a readable table on stdout and a JSON file (schema in `_SCHEMA_DOC`).
`--quick` runs a seconds-long smoke version (1 epoch, tiny chunks).
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

from absl import app
from absl import flags

import jax
import jax.numpy as jnp
import numpy as np

from cubist import data, masks, mlp, train

_SCHEMA = "cubist.bench/1"
_SCHEMA_DOC = """\
schema, timestamp, command_line, argv, quick, total_seconds, loadavg{start,end},
machine{platform, processor, uname, cpu_count, python, jax, jaxlib, numpy, devices, backend,
        xla_flags},
settings{epochs, batch_size, num_points, batches_per_epoch, repeats, sweep_epochs, shared_order,
         call_limit_s, compile_limit_s, tolerance, statistic, extrapolation},
dense_w16{description, width, masks, sweep[measurement], best(measurement, real epochs)},
structured_333{..., slice_width, sweep, best},
sharded{device_count, xla_flags, status, dense_w16{sweep, best}, structured_333{sweep, best}},
data_order{epoch_batches_ms_per_key, dense_w16{shared, per_experiment, ...}, structured_333{...}},
extrapolation_check{tolerance, valid, checks[...]},
oracle{seconds_per_run, seconds_per_run_min, ..., raw},
speedup{dense_w16{...}, structured_333{...}},
targets{dense_w16{target_runs_per_s, achieved_runs_per_s, config, met}, structured_333{...}},
per_width{epochs_timed, basis, widths{w: {best, measurements}}},
recommendations{"1".."16": {formulation, chunk, runs_per_s, measured_width, basis}}.
A measurement: {label, width, masks, formulation, chunk, epochs, shared_order, devices, status
("ok"|"skipped"), reason?, lower_s, compile_s, first_call_s, samples_s, median_s, warm,
seconds_per_run_epochs (a full run's call, measured or extrapolated), runs_per_s, basis
("measured"|"extrapolated"), loadavg_1m}."""

DENSE_WIDTH = 16
STRUCTURED_WIDTHS = (3, 3, 3)
TARGETS = {"dense_w16": 4.0, "structured_333": 25.0}
DEFAULT_PER_WIDTH_WIDTHS = (1, 2, 3, 4, 6, 8, 12, 16)

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "bench.json", "Where to write the JSON results.")
flags.DEFINE_bool("quick", False, "Tiny smoke version: 1 epoch, tiny chunks, seconds.")
flags.DEFINE_integer("epochs", 50, "Epochs of a full run (the paper's 50).")
flags.DEFINE_integer("repeats", 3, "Timed warm calls per configuration (median reported).")
flags.DEFINE_integer("sweep_epochs", 2, "Epochs per timed call in sweeps (extrapolated).")
flags.DEFINE_list("dense_chunks", ["64", "128", "256", "512"], "Chunk sizes for (a).")
flags.DEFINE_list("sparse_chunks", ["128", "256", "512", "1024", "2048"],
                  "Chunk sizes for (b).")
flags.DEFINE_list("formulations", list(train.FORMULATIONS), "Formulations to measure.")
flags.DEFINE_bool("shared_order", True,
                  "Sweeps and headline use one shared data order per epoch "
                  "(per-experiment orders are measured separately under data_order).")
flags.DEFINE_float("call_limit_s", 40.0,
                   "Skip a configuration whose predicted call time exceeds this; a slower "
                   "first call is kept as a single cold sample.")
flags.DEFINE_float("compile_limit_s", 120.0, "Record a configuration whose compile exceeds "
                   "this as skipped (its calls are not run).")
flags.DEFINE_float("prune_ratio", 0.33,
                   "In sweeps, a configuration slower than this fraction of the best runs/s "
                   "so far gets one cold sample and ends its formulation's series (0: off).")
flags.DEFINE_float("tolerance", 0.05, "Allowed relative error of the epoch extrapolation.")
flags.DEFINE_bool("headline", True, "Run real full-epoch calls for the best configurations.")
flags.DEFINE_bool("sharded", True, "Measure the best configurations sharded over all local "
                  "devices in a subprocess.")
flags.DEFINE_integer("sharded_devices", 0, "Host devices for the sharded subprocess "
                     "(0: os.cpu_count()).")
flags.DEFINE_bool("data_order", True, "Measure shared_order=False for the best configurations.")
flags.DEFINE_bool("oracle", True, "Time the PyTorch oracle.")
flags.DEFINE_bool("per_width", True, "Measure the per-width recommendation table.")
flags.DEFINE_list("per_width_widths", [str(w) for w in DEFAULT_PER_WIDTH_WIDTHS],
                  "Widths measured for the recommendation table.")
flags.DEFINE_string("sharded_child", None, "Internal: JSON spec of the sharded measurements.")
flags.DEFINE_string("child_out", None, "Internal: where the sharded child writes its JSON.")


# --------------------------------------------------------------------------- inputs


def spiral() -> tuple[jax.Array, jax.Array]:
  """The Cubist Spiral as device arrays: x float32 (N, 2), y float32 (N,)."""
  x, y = data.cubist_spiral()
  return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def make_inputs(chunk: int, mask_widths: Sequence[int] | None, width: int | None = None,
                seed: int = 0) -> tuple[train.TrainInputs, int]:
  """A chunk of `chunk` experiments and the width it runs at.

  Initial weights are width-16 PyTorch-default draws, U(-1/sqrt(fan_in),
  1/sqrt(fan_in)) as `mlp.init`, made with numpy so that building a chunk
  compiles nothing (the cost of a run does not depend on the values), then
  sliced as the search carves narrower networks out of the width-16 model.
  `mask_widths=(d1, d2, d3)` gives the structured mask inside width 16, sliced
  to its occupied width (exact: the units beyond are inert); `mask_widths=None`
  gives all-ones masks at `width`. Keys are random raw uint32 pairs; learning
  rates and schedules vary across the chunk (they are data, not constants).
  """
  rng = np.random.default_rng(seed)
  params = []
  for weight_shape, bias_shape in mlp.layer_shapes(DENSE_WIDTH):
    bound = 1.0 / np.sqrt(weight_shape[1])
    params.append(mlp.Layer(
        rng.uniform(-bound, bound, (chunk,) + weight_shape).astype(np.float32),
        rng.uniform(-bound, bound, (chunk,) + bias_shape).astype(np.float32)))
  if mask_widths is None:
    full = masks.structured_masks((DENSE_WIDTH,) * 3, DENSE_WIDTH)
    run_width = DENSE_WIDTH if width is None else width
  else:
    full = masks.structured_masks(tuple(mask_widths), DENSE_WIDTH)
    run_width = masks.occupied_width(full)
  mask = mlp.slice_params(
      tuple(mlp.Layer(*(np.broadcast_to(a, (chunk,) + a.shape) for a in layer)) for layer in full),
      run_width)
  if mask_widths is None:
    mask = tuple(mlp.Layer(*(np.ones(a.shape, bool) for a in layer)) for layer in mask)
  inputs = train.TrainInputs(
      key=rng.integers(0, 2**32, (chunk, 2), dtype=np.uint32),
      lr=rng.uniform(0.01, 0.1, chunk).astype(np.float32),
      schedule=(np.arange(chunk) % 3).astype(np.int32),
      params=mlp.slice_params(tuple(params), run_width), masks=mask)
  return jax.device_put(jax.tree.map(np.ascontiguousarray, inputs)), run_width


# --------------------------------------------------------------------------- timing


def _loadavg() -> float | None:
  try:
    return round(os.getloadavg()[0], 2)
  except OSError:
    return None


def _extrapolated(seconds: float, epochs_timed: int, epochs: int) -> float:
  return seconds * epochs / epochs_timed


def measure(x, y, *, label: str, mask_widths: Sequence[int] | None, width: int | None,
            formulation: str, chunk: int, epochs: int, run_epochs: int, repeats: int,
            shared_order: bool, call_limit_s: float, compile_limit_s: float,
            mesh: jax.sharding.Mesh | None = None,
            predicted_call_s: float | None = None,
            dominated_below: float = 0.0) -> dict[str, Any]:
  """Time one configuration; returns a measurement record (see `_SCHEMA_DOC`).

  epochs: epochs per timed call; run_epochs: epochs of a full run (50). If they
  differ the per-run seconds are extrapolated linearly (basis "extrapolated").
  dominated_below: if the first call's runs/s is below this, keep it as a single
  cold sample (no repeats) and mark the record `dominated`.
  """
  record: dict[str, Any] = {
      "label": label, "masks": "dense" if mask_widths is None else list(mask_widths),
      "formulation": formulation, "chunk": chunk, "epochs": epochs, "run_epochs": run_epochs,
      "shared_order": shared_order, "devices": 1 if mesh is None else mesh.size,
      "basis": "measured" if epochs == run_epochs else "extrapolated",
      "loadavg_1m": _loadavg()}
  if mesh is not None and chunk % mesh.size:
    return {**record, "width": width, "status": "skipped",
            "reason": f"chunk {chunk} is not divisible by {mesh.size} devices"}
  if predicted_call_s is not None and predicted_call_s > call_limit_s:
    return {**record, "width": width, "status": "skipped",
            "reason": (f"predicted call time {predicted_call_s:.1f} s (linear in chunk from "
                       f"the previous chunk) exceeds call_limit_s={call_limit_s:g}"),
            "predicted_call_s": round(predicted_call_s, 2)}
  inputs, run_width = make_inputs(chunk, mask_widths, width)
  record["width"] = run_width
  static = train.TrainStatic(width=run_width, epochs=epochs, formulation=formulation,
                             shared_order=shared_order)
  if mesh is not None:
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.EXPERIMENT_AXIS))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    inputs = jax.device_put(inputs, spec)
    x, y = jax.device_put(x, rep), jax.device_put(y, rep)
  jax.block_until_ready((x, y, inputs))
  jitted = train.make_train(static, mesh=mesh)
  t0 = time.perf_counter()
  lowered = jitted.lower(x, y, inputs)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  record.update(lower_s=round(t1 - t0, 3), compile_s=round(t2 - t1, 3))
  if t2 - t0 > compile_limit_s:
    return {**record, "status": "skipped",
            "reason": f"compile took {t2 - t0:.1f} s > compile_limit_s={compile_limit_s:g}"}

  def call() -> float:
    start = time.perf_counter()
    jax.block_until_ready(compiled(x, y, inputs))
    return time.perf_counter() - start

  first = call()
  record["first_call_s"] = round(first, 4)
  first_runs = chunk / _extrapolated(first, epochs, run_epochs)
  if first_runs < dominated_below:
    samples, warm = [first], False
    record["dominated"] = True
    record["note"] = (f"dominated: first call gives {first_runs:.2f} runs/s < "
                      f"{dominated_below:.2f} (prune_ratio x best so far); single cold sample")
  elif first > call_limit_s:
    samples, warm = [first], False
    record["note"] = (f"first call took {first:.1f} s > call_limit_s={call_limit_s:g}: "
                      "kept as a single cold sample")
  else:
    samples, warm = [call() for _ in range(max(1, repeats))], True
  median = float(np.median(samples))
  per_run = _extrapolated(median, epochs, run_epochs)
  record.update(status="ok", samples_s=[round(s, 4) for s in samples],
                median_s=round(median, 4), warm=warm,
                seconds_per_run_epochs=round(per_run, 3),
                runs_per_s=round(chunk / per_run, 4),
                ms_per_experiment_epoch=round(1e3 * median / (chunk * epochs), 4))
  record["loadavg_1m_end"] = _loadavg()
  return record


def sweep(x, y, *, label: str, mask_widths, width, formulations: Iterable[str],
          chunks: Iterable[int], epochs: int, run_epochs: int, repeats: int,
          shared_order: bool, call_limit_s: float, compile_limit_s: float,
          prune_ratio: float = 0.0, mesh=None, log: Callable[[str], None] = print,
          reuse: dict | None = None) -> list[dict[str, Any]]:
  """`measure` every formulation at every chunk size, chunks ascending.

  Two rules keep slow configurations from eating the time budget:
  * a formulation's next chunk is skipped if its call time, predicted
    linearly from that formulation's previous chunk, exceeds `call_limit_s`
    (and every larger chunk after a skip is skipped too);
  * with `prune_ratio > 0`, a configuration whose first call is slower than
    `prune_ratio` x the best runs/s so far in this sweep keeps that single cold
    sample (no repeats) and the formulation's larger chunks are skipped
    ("dominated").
  `reuse` maps (width, formulation, chunk) to existing records used as is.
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
      elif last is not None and (last["status"] != "ok" or last.get("dominated")):
        record = {k: v for k, v in last.items()
                  if k in ("masks", "formulation", "epochs", "run_epochs", "shared_order",
                           "devices", "basis", "width")}
        why = last.get("reason") or last.get("note")
        record.update(label=label, chunk=chunk, status="skipped",
                      reason=f"after chunk {last['chunk']}: {why}")
      else:
        predicted = None if last is None else last["median_s"] * chunk / last["chunk"]
        record = measure(x, y, label=label, mask_widths=mask_widths, width=width,
                         formulation=formulation, chunk=chunk, epochs=epochs,
                         run_epochs=run_epochs, repeats=repeats, shared_order=shared_order,
                         call_limit_s=call_limit_s, compile_limit_s=compile_limit_s,
                         mesh=mesh, predicted_call_s=predicted,
                         dominated_below=prune_ratio * best_runs)
      results.append(record)
      log(_row(record))
      previous[formulation] = record
      if record["status"] == "ok":
        best_runs = max(best_runs, record["runs_per_s"])
  return results


def best_of(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
  """The record with the most runs/s (None if none was measured)."""
  ok = [r for r in records if r.get("status") == "ok"]
  return max(ok, key=lambda r: r["runs_per_s"]) if ok else None


# --------------------------------------------------------------------------- table


_HEADER = (f"{'label':<16} {'w':>2} {'form':<4} {'dev':>3} {'chunk':>5} {'ep':>3} "
           f"{'order':<6} {'compile':>7} {'median':>8} {'s/run':>8} {'runs/s':>8} basis")


def _row(r: dict[str, Any]) -> str:
  order = "shared" if r.get("shared_order") else "own"
  head = (f"{r.get('label', ''):<16} {str(r.get('width', '')):>2} {r['formulation']:<4} "
          f"{r.get('devices', 1):>3} {r['chunk']:>5} {r['epochs']:>3} {order:<6} ")
  if r.get("status") != "ok":
    compile_s = r.get("compile_s")
    return head + (f"{compile_s:>7.1f} " if compile_s is not None else f"{'-':>7} ") + \
        f"skipped: {r.get('reason', '')}"
  per_run_per_exp = r["seconds_per_run_epochs"] / r["chunk"]
  return head + (f"{r['compile_s']:>7.1f} {r['median_s']:>8.3f} {per_run_per_exp:>8.4f} "
                 f"{r['runs_per_s']:>8.2f} {r['basis']}{'' if r.get('warm', True) else ' (cold)'}")


# --------------------------------------------------------------------------- per width


def default_chunks(width: int) -> tuple[int, ...]:
  """Chunk sizes tried for the recommendation table: wider nets, smaller chunks."""
  if width <= 2:
    return (512, 2048, 4096)
  if width <= 4:
    return (256, 1024, 2048)
  if width <= 8:
    return (128, 512)
  return (64, 256)


def measure_recommendations(
    x, y, *, widths: Sequence[int] = DEFAULT_PER_WIDTH_WIDTHS,
    chunks_for_width: Callable[[int], Sequence[int]] = default_chunks,
    formulations: Sequence[str] = train.FORMULATIONS, epochs: int = 2, run_epochs: int = 50,
    repeats: int = 3, shared_order: bool = True, call_limit_s: float = 40.0,
    compile_limit_s: float = 120.0, prune_ratio: float = 0.33, reuse: dict | None = None,
    max_width: int = DENSE_WIDTH, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Fastest formulation and chunk size per width bucket (extrapolated from short calls).

  Each width in `widths` is timed with all-ones masks at that width for every
  formulation and `chunks_for_width(width)` chunk size, `epochs` epochs per
  warm call, extrapolated linearly to `run_epochs` (basis "extrapolated": for
  ranking; the fixed final-evaluation cost is over-counted alike in all).
  `reuse` maps (width, formulation, chunk) to an existing record of the same
  epochs and settings, which is reused instead of re-measured.

  Returns {"epochs_timed", "run_epochs", "basis", "widths": {str(w): {"best",
  "measurements"}}, "buckets": {str(w) for 1..max_width: {"formulation",
  "chunk", "runs_per_s", "measured_width", "basis"}}}. A width that was not
  measured takes the recommendation of the smallest measured width above it
  (the engine pads a network up to its bucket's width, which is exact).
  """
  measured: dict[str, Any] = {}
  for width in sorted(set(int(w) for w in widths)):
    records = sweep(x, y, label=f"per-width w{width}", mask_widths=None, width=width,
                    formulations=formulations, chunks=chunks_for_width(width), epochs=epochs,
                    run_epochs=run_epochs, repeats=repeats, shared_order=shared_order,
                    call_limit_s=call_limit_s, compile_limit_s=compile_limit_s,
                    prune_ratio=prune_ratio, log=log, reuse=reuse)
    measured[str(width)] = {"best": _brief(best_of(records)), "measurements": records}
  buckets: dict[str, Any] = {}
  measured_widths = sorted(int(w) for w, v in measured.items() if v["best"] is not None)
  for width in range(1, max_width + 1):
    above = [w for w in measured_widths if w >= width]
    if not above:
      buckets[str(width)] = None
      continue
    best = measured[str(above[0])]["best"]
    buckets[str(width)] = {"formulation": best["formulation"], "chunk": best["chunk"],
                           "runs_per_s": best["runs_per_s"], "measured_width": above[0],
                           "basis": best["basis"]}
  return {"epochs_timed": epochs, "run_epochs": run_epochs,
          "basis": "extrapolated" if epochs != run_epochs else "measured",
          "shared_order": shared_order, "widths": measured, "buckets": buckets}


def _brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
  if record is None:
    return None
  keys = ("width", "formulation", "chunk", "devices", "epochs", "median_s",
          "seconds_per_run_epochs", "runs_per_s", "basis", "shared_order")
  return {k: record[k] for k in keys if k in record}


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
  result: dict[str, Any] = {"device_count": mesh.size,
                            "devices": [str(d) for d in mesh.devices.flat],
                            "xla_flags": os.environ.get("XLA_FLAGS", "")}
  common = dict(run_epochs=spec["run_epochs"], repeats=spec["repeats"],
                shared_order=spec["shared_order"], call_limit_s=spec["call_limit_s"],
                compile_limit_s=spec["compile_limit_s"], mesh=mesh)
  for name, config in spec["configs"].items():
    mask_widths = config["mask_widths"]
    records = []
    for chunk in config["chunks"]:
      records.append(measure(x, y, label=f"{name} sharded", mask_widths=mask_widths,
                             width=config["width"], formulation=config["formulation"],
                             chunk=chunk, epochs=spec["sweep_epochs"], **common))
      print(_row(records[-1]), flush=True)
    entry: dict[str, Any] = {"sweep": records, "best": None}
    top = best_of(records)
    if top is not None and spec["headline"]:
      entry["best"] = measure(x, y, label=f"{name} sharded", mask_widths=mask_widths,
                              width=config["width"], formulation=config["formulation"],
                              chunk=top["chunk"], epochs=spec["run_epochs"],
                              **{**common, "call_limit_s": float("inf")})
      print(_row(entry["best"]), flush=True)
    elif top is not None:
      entry["best"] = top
    result[name] = entry
  with open(out_path, "w") as f:
    json.dump(result, f, indent=1)


def run_sharded(spec: dict[str, Any], devices: int, timeout_s: float,
                log: Callable[[str], None] = print) -> dict[str, Any]:
  """Run `_run_sharded_child` in a subprocess with `devices` host devices."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
  with tempfile.TemporaryDirectory() as tmp:
    out_path = os.path.join(tmp, "sharded.json")
    command = [sys.executable, "-m", "cubist.bench", f"--sharded_child={json.dumps(spec)}",
               f"--child_out={out_path}"]
    start = time.perf_counter()
    try:
      proc = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True,
                            timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
      return {"status": "failed", "reason": f"timed out after {timeout_s:.0f} s"}
    for line in proc.stdout.splitlines():
      log(line)
    if proc.returncode != 0 or not os.path.exists(out_path):
      return {"status": "failed", "reason": f"exit code {proc.returncode}",
              "stderr_tail": proc.stderr[-2000:]}
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
  raw = torch_reference.seconds_per_run(width=DENSE_WIDTH, epochs=epochs, run_epochs=run_epochs,
                                        repeats=repeats)
  return {"status": "ok", "width": DENSE_WIDTH,
          "seconds_per_run": raw["seconds_per_epoch_median"] * run_epochs,
          "seconds_per_run_min": raw["projected_seconds_per_run"],
          "statistic": (f"median (and min) of {raw['repeats']} calls of {epochs} epoch(s), "
                        f"extrapolated linearly to {run_epochs} epochs"),
          "basis": "extrapolated" if epochs != run_epochs else "measured",
          "threads": raw["num_threads"], "raw": raw}


# --------------------------------------------------------------------------- main flow


def _parse_chunks(values: Sequence[str]) -> list[int]:
  return sorted({int(v) for v in values})


def _combined_best(*records) -> dict[str, Any] | None:
  return best_of([r for r in records if r is not None])


def _speedup(best: dict[str, Any] | None, oracle: dict[str, Any], cores: int):
  if best is None or oracle.get("status") != "ok":
    return None
  runs = best["runs_per_s"]
  seconds = oracle["seconds_per_run"]
  return {"runs_per_s": runs, "config": _brief(best), "oracle_seconds_per_run": seconds,
          "oracle_threads": oracle["threads"], "cores": cores,
          "per_machine": round(runs * seconds, 2),
          "per_core": round(runs * seconds / cores, 2),
          "note": ("per_machine = runs/s x oracle s/run (oracle on one thread); per_core "
                   "divides by the machine's cores, i.e. against one oracle per core")}


def run_bench(settings: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
  """The whole benchmark; returns the JSON-able results."""
  start = time.perf_counter()
  result: dict[str, Any] = {
      "schema": _SCHEMA, "schema_doc": _SCHEMA_DOC,
      "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command_line": " ".join([os.path.basename(sys.executable)] + sys.argv),
      "argv": list(sys.argv), "quick": settings["quick"],
      "loadavg": {"start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
      "machine": machine_info()}
  run_epochs, sweep_epochs = settings["epochs"], settings["sweep_epochs"]
  result["settings"] = {
      **{k: v for k, v in settings.items() if k != "quick"},
      "batch_size": data.BATCH_SIZE, "num_points": data.NUM_POINTS,
      "batches_per_epoch": data.NUM_POINTS // data.BATCH_SIZE,
      "statistic": ("median of `repeats` warm calls (jax.block_until_ready); compile "
                    "(lower + compile) timed separately; the first call timed separately "
                    "and excluded"),
      "extrapolation": (f"sweeps time {sweep_epochs}-epoch calls and scale linearly to "
                        f"{run_epochs} epochs; headline 'best' entries are real "
                        f"{run_epochs}-epoch calls")}
  log(f"machine: {result['machine']['processor'] or result['machine']['platform']}, "
      f"{result['machine']['cpu_count']} cpus, jax {jax.__version__}, "
      f"devices {result['machine']['devices']}, load {result['loadavg']['start']}")
  x, y = spiral()
  common = dict(repeats=settings["repeats"], shared_order=settings["shared_order"],
                call_limit_s=settings["call_limit_s"], prune_ratio=settings["prune_ratio"],
                compile_limit_s=settings["compile_limit_s"], log=log)
  sections = {
      "dense_w16": dict(mask_widths=None, width=DENSE_WIDTH, chunks=settings["dense_chunks"],
                        formulations=settings.get("dense_formulations",
                                                  settings["formulations"]),
                        description="dense width 16 (all-ones masks)"),
      "structured_333": dict(mask_widths=STRUCTURED_WIDTHS, width=None,
                             chunks=settings["sparse_chunks"],
                             formulations=settings["formulations"],
                             description=("(3,3,3) structured mask inside width 16, sliced to "
                                          "its occupied width 3 (exact)")),
  }
  log(_HEADER)
  for name, section in sections.items():
    records = sweep(x, y, label=name, mask_widths=section["mask_widths"],
                    width=section["width"], formulations=section["formulations"],
                    chunks=section["chunks"], epochs=sweep_epochs, run_epochs=run_epochs,
                    **common)
    for formulation in settings["formulations"]:
      if formulation not in section["formulations"]:
        records.extend({"label": name, "width": section["width"], "formulation": formulation,
                        "chunk": chunk, "epochs": sweep_epochs, "status": "skipped",
                        "shared_order": settings["shared_order"], "devices": 1,
                        "reason": "not run with --quick (slow compile)"}
                       for chunk in section["chunks"])
    entry = {"description": section["description"],
             "masks": "dense" if section["mask_widths"] is None else list(section["mask_widths"]),
             "sweep": records, "best": None}
    ok = [r for r in records if r["status"] == "ok"]
    if ok:
      entry["width"] = ok[0]["width"]
    if section["mask_widths"] is not None:
      entry["slice_width"] = masks.occupied_width(
          masks.structured_masks(section["mask_widths"], DENSE_WIDTH))
    top = best_of(records)
    if top is not None:
      if settings["headline"] and sweep_epochs != run_epochs:
        entry["best"] = measure(
            x, y, label=f"{name} best", mask_widths=section["mask_widths"],
            width=section["width"], formulation=top["formulation"], chunk=top["chunk"],
            epochs=run_epochs, run_epochs=run_epochs, repeats=settings["repeats"],
            shared_order=settings["shared_order"], call_limit_s=float("inf"),
            compile_limit_s=settings["compile_limit_s"])
        log(_row(entry["best"]))
      else:
        entry["best"] = top
    result[name] = entry

  # Extrapolation check: the sweep's extrapolation of the best config vs its real run.
  checks = []
  for name in sections:
    best = result[name]["best"]
    if best is None or best["basis"] != "measured" or best.get("status") != "ok":
      continue
    swept = [r for r in result[name]["sweep"] if r["status"] == "ok"
             and r["formulation"] == best["formulation"] and r["chunk"] == best["chunk"]]
    if not swept or swept[0]["basis"] != "extrapolated":
      continue
    s = swept[0]
    error = s["seconds_per_run_epochs"] / best["median_s"] - 1.0
    slope = (best["median_s"] - s["median_s"]) / (run_epochs - s["epochs"])
    checks.append({
        "config": name, "formulation": best["formulation"], "chunk": best["chunk"],
        "sweep_epochs": s["epochs"], "extrapolated_s": s["seconds_per_run_epochs"],
        "measured_s": best["median_s"], "relative_error": round(error, 4),
        "within_tolerance": abs(error) <= settings["tolerance"],
        "seconds_per_epoch_fit": round(slope, 4),
        "fixed_seconds_per_call_fit": round(s["median_s"] - slope * s["epochs"], 4)})
  result["extrapolation_check"] = {
      "tolerance": settings["tolerance"], "checks": checks,
      "valid": bool(checks) and all(c["within_tolerance"] for c in checks),
      "note": ("extrapolated = sweep median x run_epochs / sweep_epochs; fit = the line through "
               "the sweep and real calls (its intercept is the per-call fixed cost, mostly the "
               "final full-data evaluation)")}

  # Sharded over all local devices, in a subprocess.
  devices = settings["sharded_devices"] or os.cpu_count() or 1
  if settings["sharded"]:
    configs = {}
    for name, section in sections.items():
      top = best_of(result[name]["sweep"])
      if top is None:
        continue
      base = top["chunk"] - top["chunk"] % devices or devices
      configs[name] = {"mask_widths": section["mask_widths"], "width": section["width"],
                       "formulation": top["formulation"],
                       "chunks": sorted({m * base for m in settings.get("sharded_chunk_multiples",
                                                                        (1, 2))})}
    spec = {"configs": configs, "run_epochs": run_epochs, "sweep_epochs": sweep_epochs,
            "repeats": settings["repeats"], "shared_order": settings["shared_order"],
            "call_limit_s": settings["call_limit_s"],
            "compile_limit_s": settings["compile_limit_s"],
            "headline": settings["headline"] and sweep_epochs != run_epochs}
    log(f"sharded over {devices} host devices (subprocess):")
    result["sharded"] = run_sharded(spec, devices, timeout_s=settings["sharded_timeout_s"],
                                    log=log)
  else:
    result["sharded"] = {"status": "skipped", "reason": "--nosharded"}

  # Data order: per-experiment permutations vs one shared order.
  if settings["data_order"]:
    result["data_order"] = _measure_data_order(x, y, result, sections, settings, log)
  else:
    result["data_order"] = {"status": "skipped", "reason": "--nodata_order"}

  # The PyTorch oracle.
  if settings["oracle"]:
    log("PyTorch oracle (width 16, one thread) ...")
    oracle = measure_oracle(run_epochs, repeats=settings["repeats"])
  else:
    oracle = {"status": "skipped", "reason": "--nooracle"}
  result["oracle"] = oracle

  cores = os.cpu_count() or 1
  result["speedup"] = {}
  result["targets"] = {}
  for name in sections:
    sharded_best = None
    if result["sharded"].get("status") == "ok" and name in result["sharded"]:
      sharded_best = result["sharded"][name]["best"]
    best = _combined_best(result[name]["best"], sharded_best)
    result["speedup"][name] = _speedup(best, oracle, cores)
    result["targets"][name] = {
        "target_runs_per_s": TARGETS[name],
        "achieved_runs_per_s": None if best is None else best["runs_per_s"],
        "config": _brief(best),
        "met": best is not None and best["runs_per_s"] >= TARGETS[name]}
    if settings["quick"]:
      result["targets"][name]["note"] = (
          f"--quick: {run_epochs}-epoch runs and tiny chunks; not a real result")

  if settings["per_width"]:
    reuse = {}
    for name in sections:
      for r in result[name]["sweep"]:
        if "--quick" not in r.get("reason", ""):
          reuse[(r["width"], r["formulation"], r["chunk"])] = r
    log("per-width recommendations:")
    per_width = measure_recommendations(
        x, y, widths=settings["per_width_widths"], chunks_for_width=settings["chunks_for_width"],
        formulations=settings.get("per_width_formulations", settings["formulations"]),
        epochs=sweep_epochs, run_epochs=run_epochs,
        repeats=settings["repeats"], shared_order=settings["shared_order"],
        call_limit_s=settings["call_limit_s"], compile_limit_s=settings["compile_limit_s"],
        prune_ratio=settings["prune_ratio"], reuse=reuse, log=log)
    result["per_width"] = per_width
    result["recommendations"] = per_width["buckets"]
  else:
    result["per_width"] = {"status": "skipped", "reason": "--noper_width"}
    result["recommendations"] = None

  result["loadavg"]["end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
  result["total_seconds"] = round(time.perf_counter() - start, 1)
  return result


def _measure_data_order(x, y, result, sections, settings, log) -> dict[str, Any]:
  """shared_order=False for the best sweep configurations, and the permutation alone."""
  out: dict[str, Any] = {"status": "ok"}
  keys = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, (256, 2), dtype=np.uint32))
  permute = jax.jit(jax.vmap(data.epoch_batches))
  jax.block_until_ready(permute(keys))
  samples = []
  for _ in range(max(1, settings["repeats"])):
    t0 = time.perf_counter()
    jax.block_until_ready(permute(keys))
    samples.append(time.perf_counter() - t0)
  out["epoch_batches_ms_per_key"] = round(1e3 * float(np.median(samples)) / keys.shape[0], 3)
  out["epoch_batches_note"] = "jit(vmap(data.epoch_batches)) over 256 keys, warm median"
  for name, section in sections.items():
    shared = best_of(result[name]["sweep"])
    if shared is None or name not in settings.get("data_order_sections", sections):
      continue
    order = "own" if shared["shared_order"] else "shared"
    own = measure(x, y, label=f"{name} {order} order", mask_widths=section["mask_widths"],
                  width=section["width"], formulation=shared["formulation"],
                  chunk=shared["chunk"], epochs=shared["epochs"],
                  run_epochs=settings["epochs"], repeats=settings["repeats"],
                  shared_order=not shared["shared_order"],
                  call_limit_s=settings["call_limit_s"],
                  compile_limit_s=settings["compile_limit_s"],
                  predicted_call_s=None)
    log(_row(own))
    entry = {"shared": _brief(shared), "per_experiment": own if own["status"] != "ok"
             else _brief(own) | {"samples_s": own["samples_s"]}}
    if own["status"] == "ok":
      a, b = (shared, own) if shared["shared_order"] else (own, shared)
      extra = b["median_s"] - a["median_s"]  # per-experiment minus shared
      entry.update(
          order_ms_per_experiment_epoch=round(1e3 * extra / (shared["chunk"] * shared["epochs"]),
                                              3),
          order_fraction_of_per_experiment_time=round(extra / b["median_s"], 3),
          ceiling_runs_per_s_from_orders_alone=None if extra <= 0 else round(
              shared["chunk"] * shared["epochs"] / (extra * settings["epochs"]), 2))
    out[name] = entry
  return out


def print_summary(result: dict[str, Any], log: Callable[[str], None] = print) -> None:
  log("")
  log("=" * 100)
  log(f"summary ({'quick' if result['quick'] else 'full'}; load average start "
      f"{result['loadavg']['start']}, end {result['loadavg']['end']}; "
      f"{result['total_seconds']} s)")
  log(_HEADER)
  for name in ("dense_w16", "structured_333"):
    for r in result[name]["sweep"]:
      log(_row(r))
    if result[name]["best"] is not None:
      log(_row(result[name]["best"]))
    sharded = result.get("sharded", {})
    if sharded.get("status") == "ok" and sharded.get(name, {}).get("best") is not None:
      log(_row(sharded[name]["best"]))
  order = result.get("data_order", {})
  if order.get("status") == "ok":
    log(f"data order: epoch_batches {order['epoch_batches_ms_per_key']} ms per key per epoch")
    for name in ("dense_w16", "structured_333"):
      if "order_ms_per_experiment_epoch" in order.get(name, {}):
        e = order[name]
        log(f"  {name}: per-experiment orders cost {e['order_ms_per_experiment_epoch']} ms per "
            f"experiment-epoch ({100 * e['order_fraction_of_per_experiment_time']:.0f}% of the "
            f"time); order generation alone caps at "
            f"{e['ceiling_runs_per_s_from_orders_alone']} runs/s")
  for check in result["extrapolation_check"]["checks"]:
    log(f"extrapolation check {check['config']}: {check['extrapolated_s']:.2f} s extrapolated vs "
        f"{check['measured_s']:.2f} s measured ({100 * check['relative_error']:+.1f}%, "
        f"{'ok' if check['within_tolerance'] else 'OUTSIDE'} "
        f"{100 * result['extrapolation_check']['tolerance']:.0f}%)")
  oracle = result["oracle"]
  if oracle.get("status") == "ok":
    log(f"oracle: {oracle['seconds_per_run']:.2f} s per {result['settings']['epochs']}-epoch run "
        f"(median; min {oracle['seconds_per_run_min']:.2f} s), one thread")
  for name, target in result["targets"].items():
    speed = result["speedup"].get(name)
    extra = ""
    if speed:
      extra = f"; speed-up {speed['per_machine']}x per machine, {speed['per_core']}x per core"
    log(f"target {name}: >= {target['target_runs_per_s']} runs/s, achieved "
        f"{target['achieved_runs_per_s']} -> {'MET' if target['met'] else 'not met'}{extra}")
  if result.get("recommendations"):
    log("recommendations (width: formulation chunk runs/s [measured width], extrapolated):")
    for width, rec in result["recommendations"].items():
      if rec:
        log(f"  w{width:>2}: {rec['formulation']:<4} {rec['chunk']:>5} "
            f"{rec['runs_per_s']:>8.2f} [w{rec['measured_width']}]")


def _settings_from_flags() -> dict[str, Any]:
  per_width_widths = [int(w) for w in FLAGS.per_width_widths]
  if FLAGS.quick:
    return {
        "quick": True, "epochs": 1, "sweep_epochs": 1, "repeats": 1,
        "dense_chunks": [8], "sparse_chunks": [16], "formulations": ["dot", "unit"],
        "dense_formulations": ["dot"],
        "shared_order": FLAGS.shared_order, "call_limit_s": 30.0, "prune_ratio": 0.0,
        "compile_limit_s": FLAGS.compile_limit_s, "tolerance": FLAGS.tolerance,
        "headline": True, "sharded": FLAGS.sharded, "sharded_devices": 2,
        "sharded_timeout_s": 120.0, "data_order": FLAGS.data_order, "oracle": FLAGS.oracle,
        "per_width": FLAGS.per_width, "per_width_widths": [1, 3],
        "per_width_formulations": ["dot"], "sharded_chunk_multiples": [1],
        "data_order_sections": ["structured_333"],
        "chunks_for_width": lambda w: (16,)}
  return {
      "quick": False, "epochs": FLAGS.epochs,
      "sweep_epochs": min(FLAGS.sweep_epochs, FLAGS.epochs),
      "repeats": FLAGS.repeats, "dense_chunks": _parse_chunks(FLAGS.dense_chunks),
      "sparse_chunks": _parse_chunks(FLAGS.sparse_chunks),
      "formulations": list(FLAGS.formulations), "shared_order": FLAGS.shared_order,
      "call_limit_s": FLAGS.call_limit_s, "compile_limit_s": FLAGS.compile_limit_s,
      "prune_ratio": FLAGS.prune_ratio, "tolerance": FLAGS.tolerance,
      "headline": FLAGS.headline, "sharded": FLAGS.sharded,
      "sharded_devices": FLAGS.sharded_devices, "sharded_timeout_s": 1800.0,
      "data_order": FLAGS.data_order, "oracle": FLAGS.oracle, "per_width": FLAGS.per_width,
      "per_width_widths": per_width_widths, "chunks_for_width": default_chunks}


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
      raise app.UsageError(f"--formulations: {formulation!r} is unknown; known: "
                           f"{train.FORMULATIONS}")
  log = lambda line: print(line, flush=True)
  result = run_bench(settings, log=log)
  result["settings"].pop("chunks_for_width", None)
  print_summary(result, log=log)
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  os.makedirs(out_dir, exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(result, f, indent=1, default=_json_default)
  log(f"wrote {FLAGS.out}")


def _json_default(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, tuple):
    return list(value)
  if callable(value):
    return getattr(value, "__name__", repr(value))
  raise TypeError(f"not JSON serialisable: {type(value)}")


if __name__ == "__main__":
  app.run(main)
