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

This module holds the flags and the main flow (`run_bench`, `main`); the pieces live in
  * experiments/bench_timing.py: inputs, `measure`, `sweep`, the table;
  * experiments/bench_per_width.py: the per-width table and its `chunk_plan`;
  * experiments/bench_extras.py: machine info, the sharded subprocess (started
    as `python -m experiments.bench --sharded_child=...`), the PyTorch oracle,
    the data orders;
  * experiments/bench_report.py: the extrapolation check, the first-call ratio, the
    printed summary and the projected 95% search.

Timing rules (see `bench_timing.measure`):
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
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import app, flags

from cubist import data, masks, order, train
from experiments.bench_extras import (
  machine_info,
  measure_data_order,
  measure_oracle,
  run_sharded,
  run_sharded_child,
  speedup,
)
from experiments.bench_per_width import (
  DEFAULT_PER_WIDTH_WIDTHS,
  default_chunks,
  measure_recommendations,
)
from experiments.bench_report import (
  extrapolation_check,
  first_call_ratio,
  print_summary,
  search_projection,
)
from experiments.bench_timing import (
  DENSE_WIDTH,
  TABLE_HEADER,
  best_of,
  brief,
  measure,
  spiral,
  sweep,
  table_row,
)

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

STRUCTURED_WIDTHS = (3, 3, 3)
TARGETS = {"dense_w16": 4.0, "structured_333": 25.0}

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
  log(TABLE_HEADER)
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
      log(table_row(entry["best"]))
    else:
      entry["best"] = top
    result[name] = entry
  result["extrapolation_check"] = extrapolation_check(result, settings)
  result["first_call_over_median"] = first_call_ratio(
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
    result["data_order"] = measure_data_order(x, y, result, sections, settings, log)
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
    result["speedup"][name] = speedup(best, oracle, cores)
    result["targets"][name] = {
      "target_runs_per_s": TARGETS[name],
      "achieved_runs_per_s": None if best is None else best["runs_per_s"],
      "config": brief(best),
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
    run_sharded_child(json.loads(FLAGS.sharded_child), FLAGS.child_out)
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
