"""The benchmark's timing core: inputs, one timed configuration, chunk sweeps, the table.

`make_inputs` builds a chunk of experiments without compiling anything;
`measure` times one configuration (compile separately, warm-up excluded, real
calls or the 1- and e-epoch fit; the rules are in experiments/bench.py's module
docstring); `sweep` measures every formulation over ascending chunk sizes and
prunes dominated or over-long ones; `best_of` and `brief` pick and summarise
records; `TABLE_HEADER` and `table_row` print them. Reads no flags.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cubist import data, masks, mlp, train

DENSE_WIDTH = 16


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


def order_label(record: dict[str, Any]) -> str:
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
  """Time one configuration; returns a measurement record (see `bench._SCHEMA_DOC`).

  epochs == run_epochs: real calls (warm-up, then `repeats`). Otherwise the
  1-epoch and `epochs`-epoch programs are timed, interleaved, and the line
  through their medians gives the run_epochs time (experiments/bench.py's docstring).
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
      log(table_row(record))
      previous[formulation] = record
      if record["status"] == "ok":
        best_runs = max(best_runs, record["runs_per_s"])
  return results


def best_of(records: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
  """The record with the most runs/s (None if none was measured)."""
  ok = [r for r in records if r is not None and r.get("status") == "ok"]
  return max(ok, key=lambda r: r["runs_per_s"]) if ok else None


def brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
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


TABLE_HEADER = (
  f"{'label':<22} {'w':>2} {'form':<4} {'dev':>3} {'chunk':>5} {'order':<14} "
  f"{'ep':>3} {'compile':>7} {'call_s':>7} {'s/run':>7} {'runs/s':>8} basis"
)


def table_row(r: dict[str, Any]) -> str:
  head = (
    f"{str(r.get('label', ''))[:22]:<22} {str(r.get('width', '')):>2} "
    f"{r['formulation']:<4} {r.get('devices', 1):>3} {r['chunk']:>5} "
    f"{order_label(r):<14} {r.get('epochs', ''):>3} "
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
