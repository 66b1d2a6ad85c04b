"""The engine: run any number of experiment specs into the results store.

Data flow (ARCHITECTURE): specs -> drop those already in the store -> bucket
by static shape -> chunk -> shard the experiment axis over local devices ->
`train` -> metrics -> one transaction per chunk -> progress line -> next chunk.

Bucketing slices every network to the smallest padded width that holds its
mask (`masks.occupied_width`): units beyond it have no weights, no biases and
no connections, so dropping them is exact and a (3,3,3) network never pays for
width 16. Each bucket picks its formulation and chunk size from `ChunkPlan`
(measured by `make bench`). The last chunk of a bucket is padded with copies of
its last spec (results discarded), so each bucket compiles exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections import defaultdict
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cubist import data, mlp, schedules, specs as spec_ops, store as store_ops, train
from cubist import masks as mask_ops
from cubist.specs import ExperimentSpec


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
  """Formulation and chunk size per padded width (from `make bench` on a 2-core CPU).

  unit_max_width: widths up to this use the per-unit formulation, wider the
    batched-matmul one. chunk_sizes: (max_width, chunk_size) pairs, ascending.
  memory_budget_bytes: caps the chunk so its per-epoch data orders and
    activations fit (about 0.25 MB per experiment per epoch order).
  """
  unit_max_width: int = 4
  chunk_sizes: tuple[tuple[int, int], ...] = ((4, 256), (6, 128), (8, 512), (10_000, 128))
  memory_budget_bytes: int = 2 << 30

  def formulation(self, width: int) -> str:
    return "unit" if width <= self.unit_max_width else "dot"

  def chunk_size(self, width: int, num_devices: int = 1) -> int:
    size = next(size for max_width, size in self.chunk_sizes if width <= max_width)
    per_experiment = 4 * data.NUM_POINTS + 64 * data.BATCH_SIZE * max(width, 2) * 4
    size = min(size, max(1, self.memory_budget_bytes // per_experiment))
    return -(-size // num_devices) * num_devices


@dataclasses.dataclass(frozen=True)
class BucketKey:
  """What decides a compiled program: specs with equal keys share one."""
  width: int
  epochs: int
  batch_size: int
  shared_order: bool
  data_order: str
  method: str | None = None  # a registered pruning method, None for fixed-mask training
  method_static: object = None  # its search.pruning.base.MethodStatic


def bucket_key(spec: ExperimentSpec) -> BucketKey:
  method, method_static = None, None
  if spec_ops.is_pruning(spec):
    from search.pruning import runner  # the strategies layer, only for pruning specs
    method, method_static = spec.method, runner.method_static(spec)
  return BucketKey(mask_ops.occupied_width(spec.masks()), spec.epochs, spec.batch_size,
                   spec.shared_order, spec.data_order, method, method_static)


@functools.lru_cache(maxsize=None)
def _batched_init(width: int):
  return jax.jit(jax.vmap(lambda key: mlp.init(key, width)))


def initial_params(specs: list[ExperimentSpec], padded_width: int) -> mlp.Params:
  """Initial weights of each spec (drawn at spec.width, then sliced), stacked."""
  per_spec = [None] * len(specs)
  by_width = defaultdict(list)
  for index, spec in enumerate(specs):
    if spec.init == spec_ops.RANDOM_INIT:
      by_width[spec.width].append(index)
    else:
      per_spec[index] = mlp.slice_params(_load_init(spec.init, spec.width), padded_width)
  for width, indices in by_width.items():
    keys = jnp.stack([spec_ops.run_keys(specs[i].seed)[0] for i in indices])
    drawn = jax.device_get(_batched_init(width)(keys))
    for row, index in enumerate(indices):
      per_spec[index] = mlp.slice_params(jax.tree.map(lambda a, r=row: a[r], drawn), padded_width)
  return jax.tree.map(lambda *arrays: np.stack(arrays), *per_spec)


@functools.lru_cache(maxsize=16)
def _load_init(path: str, width: int) -> mlp.Params:
  return mlp.load_init(path, width)


def chunk_inputs(specs: list[ExperimentSpec], padded_width: int) -> train.TrainInputs:
  """Host-side TrainInputs for a chunk (leading axis = len(specs))."""
  keys = np.stack([np.asarray(spec_ops.run_keys(spec.seed)[1]) for spec in specs])
  lr = np.array([spec.lr for spec in specs], np.float32)
  schedule = np.array([schedules.schedule_id(spec.schedule) for spec in specs], np.int32)
  masks = jax.tree.map(lambda *arrays: np.stack(arrays),
                       *[mlp.slice_params(spec.masks(), padded_width) for spec in specs])
  return train.TrainInputs(keys, lr, schedule, initial_params(specs, padded_width), masks)


@jax.jit
def _metrics(params):
  counts = jax.vmap(mask_ops.connectivity)(params)
  return {"weight_nnz": jax.vmap(mask_ops.weight_nnz)(params),
          "model_nnz": jax.vmap(mask_ops.model_nnz)(params),
          "effective_weight_nnz": counts["effective_weight_nnz"],
          "dead_units": counts["dead_units"]}


def result_rows(chunk: list[ExperimentSpec], result, seconds_per_run: float) -> list[dict]:
  """Store rows for the real (unpadded) experiments of a chunk.

  result: a train.TrainResult, or a pruning run's result, whose final `masks`
  are stored instead of the spec's and whose `failed` runs get status "failed".
  """
  count = len(chunk)
  params = jax.tree.map(lambda a: a[:count], result.params)
  final_masks = getattr(result, "masks", None)
  failed = np.asarray(getattr(result, "failed", np.zeros(count, bool)))[:count]
  metrics = jax.device_get(_metrics(params))
  accuracy = np.asarray(result.accuracy[:count])
  loss = np.asarray(result.loss[:count])
  finite = np.all(np.stack([np.all(np.isfinite(np.asarray(a)).reshape(count, -1), axis=1)
                            for a in jax.tree.leaves(params)]), axis=0) & np.isfinite(loss)
  rows = []
  for i, spec in enumerate(chunk):
    if final_masks is None:
      blob, shapes = mask_ops.pack_masks(spec.masks())
    else:
      blob, shapes = mask_ops.pack_masks(tuple(
          mlp.Layer(np.asarray(l.weight[i]), np.asarray(l.bias[i])) for l in final_masks))
    status = "failed" if failed[i] else "ok" if finite[i] else "diverged"
    d1, d2, d3 = spec.hidden_widths()
    rows.append(dict(
        exp_id=spec.exp_id(), family=spec.family, method=spec.method, width=spec.width,
        d1=d1, d2=d2, d3=d3, seed=spec.seed, lr=spec.lr, schedule=spec.schedule,
        epochs=spec.epochs, batch_size=spec.batch_size, init=spec_ops.init_label(spec.init),
        shared_order=spec.shared_order, data_order=spec.data_order, target_nnz=spec.target_nnz,
        mask_config=spec.mask_config, extra=spec.extra, count_mode=spec.count_mode,
        strength=spec.strength, threshold=spec.threshold,
        method_options=dict(spec.method_options) or None, status=status,
        accuracy=float(accuracy[i]), loss=float(loss[i]) if finite[i] else None,
        weight_nnz=int(metrics["weight_nnz"][i]), model_nnz=int(metrics["model_nnz"][i]),
        effective_weight_nnz=int(metrics["effective_weight_nnz"][i]),
        dead_units=int(metrics["dead_units"][i]), mask=blob, mask_shape=shapes,
        seconds=seconds_per_run))
  return rows


class Progress:
  """A one-line progress display: experiments done/total, runs/s, ETA."""

  def __init__(self, total: int, stream=None, label: str = ""):
    self.total, self.done, self.label = total, 0, label
    self.stream = stream if stream is not None else sys.stderr
    self.start = time.perf_counter()
    self.train_seconds = 0.0

  def update(self, count: int, seconds: float, note: str = "") -> None:
    self.done += count
    self.train_seconds += seconds
    elapsed = time.perf_counter() - self.start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    remaining = (self.total - self.done) / rate if rate > 0 else float("nan")
    eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if np.isfinite(remaining) else "?"
    end = "\r" if getattr(self.stream, "isatty", lambda: False)() else "\n"
    self.stream.write(f"{self.label}{self.done}/{self.total} experiments | {rate:.1f} runs/s"
                      f" | ETA {eta} {note}{end}")
    self.stream.flush()

  def close(self) -> None:
    if getattr(self.stream, "isatty", lambda: False)():
      self.stream.write("\n")


@functools.lru_cache(maxsize=64)
def _cached_train(static: train.TrainStatic, mesh):
  """One jitted trainer per (static, mesh), reused across `run` calls.

  jit caches compiled programs per function object, so keeping the object
  alive means a search that calls `run` once per nnz level compiles each
  (bucket, chunk size) once for the whole search.
  """
  return train.make_train(static, mesh)


def select_shard(specs, shard_index: int, num_shards: int):
  """The specs of one shard: a stable split by exp_id, independent of order."""
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index={shard_index} must be in 0..{num_shards - 1}")
  if num_shards == 1:
    return list(specs)
  return [s for s in specs if int(s.exp_id(), 16) % num_shards == shard_index]


def run(specs: list[ExperimentSpec], workdir, sweep_name: str = "sweep",
        fingerprint: str | None = None, plan: ChunkPlan = ChunkPlan(),
        shard_index: int = 0, num_shards: int = 1, devices=None,
        progress_stream=None, on_chunk: Callable | None = None,
        max_traces: int | None = None) -> store_ops.ResultStore:
  """Train every spec not yet in the workdir's store; return the open store.

  fingerprint: identifies the sweep (default: a hash of all its exp_ids); a
    workdir holding another fingerprint is refused with a one-line error.
  on_chunk(chunk_specs, inputs, result): optional hook, e.g. to keep weights.
  max_traces: guard each bucket's trainer with chex.assert_max_traces (tests).
  """
  specs = list(specs)
  spec_ops.validate_all(specs)
  fingerprint = fingerprint or spec_ops.sweep_fingerprint(specs)
  specs = select_shard(specs, shard_index, num_shards)
  results = store_ops.ResultStore(store_ops.store_path(workdir, shard_index, num_shards),
                                  sweep_name, fingerprint)
  done = results.done_ids()
  todo = [s for s in dict((s.exp_id(), s) for s in specs).values() if s.exp_id() not in done]
  if not todo:
    return results
  devices = jax.local_devices() if devices is None else devices
  mesh = train.experiment_mesh(devices) if len(devices) > 1 else None
  x, y = (jnp.asarray(a) for a in data.cubist_spiral())
  buckets = defaultdict(list)
  for spec in todo:
    buckets[bucket_key(spec)].append(spec)
  progress = Progress(len(todo), progress_stream)
  for key in sorted(buckets, key=lambda k: (k.method or "", k.width, k.epochs, k.batch_size,
                                            k.shared_order, k.data_order, repr(k.method_static))):
    bucket = buckets[key]
    static = train.TrainStatic(width=key.width, epochs=key.epochs, batch_size=key.batch_size,
                               shared_order=key.shared_order, order=key.data_order,
                               formulation=plan.formulation(key.width))
    if max_traces is not None:
      import chex
      chex.clear_trace_counter()  # chex counts per definition site, not per trainer
    if key.method is not None:  # a pruning method: its own trainer and inputs
      from search.pruning import runner
      static = dataclasses.replace(static, formulation="dot")
      make_inputs = functools.partial(runner.chunk_inputs, static=key.method_static)
      train_fn = runner.trainer_for(static, key.method, key.method_static, mesh, max_traces)
    else:
      make_inputs = chunk_inputs
      train_fn = (_cached_train(static, mesh) if max_traces is None
                  else train.make_train(static, mesh, max_traces=max_traces))
    # Small buckets get the next power of two (at least the device count), so
    # the number of distinct chunk shapes, hence compilations, stays small.
    size = min(plan.chunk_size(key.width, len(devices)),
               max(len(devices), 1 << (len(bucket) - 1).bit_length()))
    size = -(-size // len(devices)) * len(devices)
    for start in range(0, len(bucket), size):
      chunk = bucket[start:start + size]
      padded = chunk + [chunk[-1]] * (size - len(chunk))
      inputs = make_inputs(padded, key.width)
      began = time.perf_counter()
      result = jax.block_until_ready(train_fn(x, y, inputs))
      seconds = time.perf_counter() - began
      results.commit_rows(result_rows(chunk, result, seconds / len(chunk)))
      if on_chunk is not None:
        on_chunk(chunk, inputs, result)
      label = f"{key.method}, " if key.method else ""
      progress.update(len(chunk), seconds, f"({label}width {key.width}, {static.formulation})")
  progress.close()
  return results
