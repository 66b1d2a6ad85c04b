"""The engine: run any number of experiment specs into the results store.

Data flow (ARCHITECTURE): specs -> validate -> drop those already in the store
-> bucket by static shape -> chunk -> shard the experiment axis over local
devices -> the one trainer -> metrics, masks, weights -> one transaction per
chunk -> progress line -> next chunk.

Methods: a spec names its training method; the caller hands the engine a
lookup from names to `cubist.method.Method`s (`methods=registry.get` from the
strategies layer, or its own), so the world never imports the strategies. The
default knows only fixed-mask training ("plain").

Bucketing slices every network to the smallest padded width that holds its
mask (`masks.occupied_width`): units beyond it have no weights, no biases and
no connections, so dropping them is exact and a (3,3,3) network never pays for
width 16. Each bucket picks its layout and chunk size from `ChunkPlan`
(measured by `make bench`); a method that cannot run in the per-unit layout
gets "dot". The last chunk of a bucket is padded with copies of its last spec
(results discarded), so each bucket compiles exactly once.
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

from cubist import data, mlp, schedules, train
from cubist import masks as mask_ops
from cubist import specs as spec_ops
from cubist import store as store_ops
from cubist.method import Hyper, Method, MethodStatic, plain_only
from cubist.specs import ExperimentSpec, MethodLookup


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
  """What decides a compiled program: specs with equal keys share one.

  method: the Method (None for fixed-mask training, whatever its name);
  method_static: its MethodStatic (None for fixed-mask training).
  """

  width: int
  epochs: int
  batch_size: int
  shared_order: bool
  data_order: str
  method: Method | None = None
  method_static: MethodStatic | None = None

  def sort_key(self) -> tuple:
    return (
      self.method.name if self.method else "",
      self.width,
      self.epochs,
      self.batch_size,
      self.shared_order,
      self.data_order,
      repr(self.method_static),
    )


def bucket_key(spec: ExperimentSpec, methods: MethodLookup = plain_only) -> BucketKey:
  method = methods(spec.method)
  plain = method.is_plain
  return BucketKey(
    mask_ops.occupied_width(spec.masks()),
    spec.epochs,
    spec.batch_size,
    spec.shared_order,
    spec.data_order,
    None if plain else method,
    None if plain else spec.method_static(),
  )


def train_static(key: BucketKey, plan: "ChunkPlan") -> train.TrainStatic:
  """The bucket's TrainStatic: the plan's layout for its width, if its method has it."""
  formulation = plan.formulation(key.width)
  if key.method is not None and formulation not in key.method.layouts:
    formulation = "dot"
  return train.TrainStatic(
    width=key.width,
    epochs=key.epochs,
    batch_size=key.batch_size,
    shared_order=key.shared_order,
    order=key.data_order,
    formulation=formulation,
  )


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


def host_counts(spec: ExperimentSpec, method: Method, static: MethodStatic) -> np.ndarray:
  """The method's count schedule for this spec (N = its starting weights), int32 (C,)."""
  target = spec.target_nnz if spec.target_nnz is not None else 0  # VD, L0 have none
  if method.host_counts is None or spec.target_nnz is None:
    return np.array([target], np.int32)
  return np.asarray(
    method.host_counts(spec.target_nnz, spec.num_weights(), static), np.int32
  ).reshape(-1)


def chunk_inputs(
  specs: list[ExperimentSpec],
  padded_width: int,
  method: Method | None = None,
  method_static: MethodStatic | None = None,
) -> train.TrainInputs:
  """Host-side TrainInputs for a chunk (leading axis = len(specs)).

  With a (non-plain) method, its keys and Hyper are added.
  """
  keys = np.stack([np.asarray(spec_ops.run_keys(spec.seed)[1]) for spec in specs])
  lr = np.array([spec.lr for spec in specs], np.float32)
  schedule = np.array([schedules.schedule_id(spec.schedule) for spec in specs], np.int32)
  masks = jax.tree.map(
    lambda *arrays: np.stack(arrays),
    *[mlp.slice_params(spec.masks(), padded_width) for spec in specs],
  )
  inputs = train.TrainInputs(keys, lr, schedule, initial_params(specs, padded_width), masks)
  if method is None or method.is_plain:
    return inputs
  counts = [host_counts(spec, method, method_static) for spec in specs]
  length = max(len(c) for c in counts)
  hyper = Hyper(
    target_nnz=np.array([spec.target_nnz or 0 for spec in specs], np.int32),
    lr=lr,
    strength=np.array([spec.strength for spec in specs], np.float32),
    threshold=np.array([spec.threshold for spec in specs], np.float32),
    counts=np.stack([np.pad(c, (0, length - len(c)), mode="edge") for c in counts]),
    num_weights=np.array([spec.num_weights() for spec in specs], np.int32),
  )
  method_keys = np.stack([np.asarray(spec_ops.method_key(spec.seed)) for spec in specs])
  return inputs._replace(method_key=method_keys, hyper=hyper)


@jax.jit
def _metrics(params):
  counts = jax.vmap(mask_ops.connectivity)(params)
  return {
    "weight_nnz": jax.vmap(mask_ops.weight_nnz)(params),
    "model_nnz": jax.vmap(mask_ops.model_nnz)(params),
    "effective_weight_nnz": counts["effective_weight_nnz"],
    "dead_units": counts["dead_units"],
  }


def result_rows(
  chunk: list[ExperimentSpec], result: train.TrainResult, seconds_per_run: float, layout: str
) -> list[dict]:
  """Store rows for the real (unpadded) experiments of a chunk.

  Each row holds the spec (JSON), its final masks and its trained parameters
  at their occupied width, and the layout that trained them. Status: "failed" (Method.failed), "diverged" (a
  non-finite parameter or loss: no NNZ counts) or "ok".
  """
  count = len(chunk)
  result = jax.device_get(jax.tree.map(lambda a: a[:count], result))
  metrics = _metrics(result.params)
  finite = np.all(
    np.stack(
      [np.all(np.isfinite(a).reshape(count, -1), axis=1) for a in jax.tree.leaves(result.params)]
    ),
    axis=0,
  )
  finite &= np.isfinite(result.loss)
  rows = []
  for i, spec in enumerate(chunk):
    masks = tuple(mlp.Layer(l.weight[i], l.bias[i]) for l in result.masks)
    params = tuple(mlp.Layer(l.weight[i], l.bias[i]) for l in result.params)
    params_width = mask_ops.occupied_width(masks)
    blob, shapes = mask_ops.pack_masks(mlp.pad_params(masks, spec.width))
    status = "failed" if result.failed[i] else "ok" if finite[i] else "diverged"
    counted = status != "diverged"
    d1, d2, d3 = spec.hidden_widths()
    rows.append(
      dict(
        exp_id=spec.exp_id(),
        spec=spec.to_json(),
        family=spec.family,
        method=spec.method,
        repeat=spec.repeat,
        width=spec.width,
        d1=d1,
        d2=d2,
        d3=d3,
        seed=spec.seed,
        lr=spec.lr,
        schedule=spec.schedule,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        init=spec_ops.init_label(spec.init),
        init_id=spec.init_id(),
        shared_order=spec.shared_order,
        data_order=spec.data_order,
        target_nnz=spec.target_nnz,
        mask_config=spec.mask_config,
        source_id=spec.source_id,
        source_method=spec.source_method,
        count_mode=spec.count_mode,
        strength=spec.strength,
        threshold=spec.threshold,
        method_options=[list(pair) for pair in spec.method_options] or None,
        status=status,
        accuracy=float(result.accuracy[i]),
        loss=float(result.loss[i]) if finite[i] else None,
        **{
          name: int(metrics[name][i]) if counted else None
          for name in ("weight_nnz", "model_nnz", "effective_weight_nnz", "dead_units")
        },
        mask=blob,
        mask_shape=shapes,
        params=mlp.pack_params(mlp.slice_params(params, params_width)),
        params_width=params_width,
        layout=layout,
        seconds=seconds_per_run,
      )
    )
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
    self.stream.write(
      f"{self.label}{self.done}/{self.total} experiments | {rate:.1f} runs/s"
      f" | ETA {eta} {note}{end}"
    )
    self.stream.flush()

  def close(self) -> None:
    if getattr(self.stream, "isatty", lambda: False)():
      self.stream.write("\n")


@functools.lru_cache(maxsize=64)
def _cached_train(
  static: train.TrainStatic, method: Method | None, method_static: MethodStatic | None, mesh
):
  """One jitted trainer per (static, method, settings, mesh), reused across `run` calls.

  jit caches compiled programs per function object, so keeping the object
  alive means a search that calls `run` once per nnz level compiles each
  (bucket, chunk size) once for the whole search.
  """
  return _make_train(static, method, method_static, mesh)


def _make_train(static, method, method_static, mesh, trace_guard=None):
  if method is None:
    return train.make_train(static, mesh=mesh, trace_guard=trace_guard)
  return train.make_train(static, method, method_static, mesh=mesh, trace_guard=trace_guard)


class Interrupted(Exception):
  """Training stopped on request (the caller's `stop()`) right after a committed chunk."""

  def __init__(self, committed: int, remaining: int):
    super().__init__(f"stopped after committing {committed} runs; {remaining} remain")
    self.committed, self.remaining = committed, remaining


def select_shard(specs, shard_index: int, num_shards: int):
  """The specs of one shard: a stable split by exp_id, independent of order."""
  if num_shards < 1:
    raise ValueError(f"num_shards={num_shards} must be >= 1")
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index={shard_index} must be in 0..{num_shards - 1}")
  if num_shards == 1:
    return list(specs)
  return [s for s in specs if int(s.exp_id(), 16) % num_shards == shard_index]


def run(
  specs: list[ExperimentSpec],
  workdir,
  sweep_name: str = "sweep",
  fingerprint: str | None = None,
  plan: ChunkPlan = ChunkPlan(),
  shard_index: int = 0,
  num_shards: int = 1,
  devices=None,
  progress_stream=None,
  on_chunk: Callable | None = None,
  trace_guard: Callable | None = None,
  methods: MethodLookup = plain_only,
  stop: Callable[[], bool] | None = None,
) -> store_ops.StoreReader:
  """Train every spec not yet in the workdir's store; return the store opened for reading.

  methods: name -> cubist.method.Method for the specs' methods (default: only
    "plain"); e.g. search.pruning.registry.get.
  fingerprint: identifies the sweep (default: a hash of all its exp_ids); a
    workdir holding another fingerprint is refused with a one-line error.
  on_chunk(chunk_specs, inputs, result): optional hook after each chunk's commit.
  trace_guard: wraps each bucket's trainer (e.g. chex.assert_max_traces; tests).
  stop: polled after every committed chunk; when it returns True, `Interrupted`
    is raised (a binary's Ctrl-C / SIGTERM handler sets it): nothing committed is
    lost and the same call resumes.
  """
  specs = list(specs)
  spec_ops.validate_all(specs, methods)
  fingerprint = fingerprint or spec_ops.sweep_fingerprint(specs)
  specs = select_shard(specs, shard_index, num_shards)
  path = store_ops.store_path(workdir, shard_index, num_shards)
  with store_ops.ResultStore(path, sweep_name, fingerprint) as results:
    _train_into(
      results, specs, plan, devices, progress_stream, on_chunk, trace_guard, methods, stop
    )
  return store_ops.StoreReader(path, missing_ok=True)


def _train_into(
  results, specs, plan, devices, progress_stream, on_chunk, trace_guard, methods, stop
):
  done = results.done_ids()
  todo = [s for s in dict((s.exp_id(), s) for s in specs).values() if s.exp_id() not in done]
  if not todo:
    return
  devices = jax.local_devices() if devices is None else devices
  mesh = train.experiment_mesh(devices) if len(devices) > 1 else None
  x, y = (jnp.asarray(a) for a in data.cubist_spiral())
  buckets = defaultdict(list)
  for spec in todo:
    buckets[bucket_key(spec, methods)].append(spec)
  progress = Progress(len(todo), progress_stream)
  for key in sorted(buckets, key=BucketKey.sort_key):
    bucket = buckets[key]
    static = train_static(key, plan)
    if trace_guard is None:
      train_fn = _cached_train(static, key.method, key.method_static, mesh)
    else:
      train_fn = _make_train(static, key.method, key.method_static, mesh, trace_guard)
    # Small buckets get the next power of two (at least the device count), so
    # the number of distinct chunk shapes, hence compilations, stays small.
    size = min(
      plan.chunk_size(key.width, len(devices)),
      max(len(devices), 1 << (len(bucket) - 1).bit_length()),
    )
    size = -(-size // len(devices)) * len(devices)
    for start in range(0, len(bucket), size):
      chunk = bucket[start : start + size]
      padded = chunk + [chunk[-1]] * (size - len(chunk))
      inputs = chunk_inputs(padded, key.width, key.method, key.method_static)
      began = time.perf_counter()
      result = jax.block_until_ready(train_fn(x, y, inputs))
      seconds = time.perf_counter() - began
      results.commit_rows(result_rows(chunk, result, seconds / len(chunk), static.formulation))
      if on_chunk is not None:
        on_chunk(chunk, inputs, result)
      label = f"{key.method.name}, " if key.method else ""
      progress.update(len(chunk), seconds, f"({label}width {key.width}, {static.formulation})")
      if stop is not None and stop():
        progress.close()
        raise Interrupted(progress.done, progress.total - progress.done)
  progress.close()
