"""The engine: run any number of experiment specs into the results store.

Data flow (ARCHITECTURE): specs -> validate -> drop those already in the store
-> bucket by static shape (by live width) -> chunk -> shard the experiment axis
over local devices -> the one trainer -> metrics, masks, weights -> one
transaction per chunk -> progress line -> next chunk.

Methods: a spec names its training method; the caller hands the engine a
lookup from names to `cubist.method.Method`s (`methods=registry.get` from the
strategies layer, or its own), so the world never imports the strategies. The
default knows only fixed-mask training ("plain").

Train only what lives (ARCHITECTURE principle 10, cubist.compaction): with
`ChunkPlan.compact` (the default) a fixed-mask run is bucketed by the compact
width of its live units and trained there; a method that fixes its mask at
initialisation runs `at_init` at the full width, then the same way; a method
whose rounds end in prunes and restart from the start weights (LTH) trains all
rounds but the last at the full width, chunk by chunk, and its last round the
same way. Methods whose masks change during training run "dense" at the smallest padded width
that holds their starting mask (`masks.occupied_width`). Each bucket picks its
layout and chunk size from `ChunkPlan` (measured by `make bench`); a method
that cannot run in the per-unit layout gets "dot". The last chunk of a bucket
is padded with copies of its last spec (results discarded), so each bucket
compiles exactly once. The chunk-level work is cubist.chunks.
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

from cubist import chunks, compaction, data, mlp, train
from cubist import masks as mask_ops
from cubist import specs as spec_ops
from cubist import store as store_ops
from cubist.method import Method, MethodStatic, plain_only
from cubist.specs import ExperimentSpec, MethodLookup


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
  """Layout and chunk size per padded width (from `make bench` on a 2-core CPU).

  unit_max_width: widths up to this use the per-unit layout ("unit");
  dot_max_width: wider widths up to this the experiment-leading layout ("dot"),
    wider still the library matmuls ("gemm", machine-specific bits; cubist.layouts).
    "unit" and "dot" sum portably up to mlp.PORTABLE_MAX_WIDTH (the default here):
    their bits are then the same on every CPU of one class.
  chunk_sizes: (max_width, chunk_size) pairs, ascending.
  memory_budget_bytes: caps the chunk so its per-epoch data orders and
    activations fit (about 0.25 MB per experiment per epoch order).
  compact: train fixed-mask runs at the width of their live units
    (cubist.compaction); part of the training semantics.
  """

  unit_max_width: int = 0
  dot_max_width: int = mlp.PORTABLE_MAX_WIDTH
  chunk_sizes: tuple[tuple[int, int], ...] = ((8, 512), (10_000, 128))
  memory_budget_bytes: int = 2 << 30
  compact: bool = True

  @classmethod
  def for_backend(cls, backend: str) -> "ChunkPlan":
    """The plan for a JAX backend: measured on a 2-core CPU; on an accelerator, large
    chunks in the library-matmul layout everywhere (the per-unit layout's elementwise
    loops are a CPU vectorisation trick, and an accelerator's bits are its own in any
    layout) and a larger memory budget."""
    if backend == "cpu":
      return cls()
    return cls(
      unit_max_width=0,
      dot_max_width=0,
      chunk_sizes=((16, 8192), (64, 2048), (10_000, 512)),
      memory_budget_bytes=32 << 30,
    )

  def formulation(self, width: int) -> str:
    if width <= self.unit_max_width:
      return "unit"
    return "dot" if width <= self.dot_max_width else "gemm"

  def chunk_size(self, width: int, num_devices: int = 1) -> int:
    size = next(size for max_width, size in self.chunk_sizes if width <= max_width)
    per_experiment = 4 * data.NUM_POINTS + 64 * data.BATCH_SIZE * max(width, 2) * 4
    size = min(size, max(1, self.memory_budget_bytes // per_experiment))
    return -(-size // num_devices) * num_devices


@dataclasses.dataclass(frozen=True)
class BucketKey:
  """What decides a compiled program: specs with equal keys share one.

  width: the compact width (way "compact"), else the padded full width.
  way: how the chunk trains (cubist.chunks: "dense", "compact", "mask_then_compact",
    "rounds_then_compact").
  method: the Method (None for fixed-mask training, whatever its name);
  method_static: its MethodStatic (None for fixed-mask training).
  """

  width: int
  epochs: int
  batch_size: int
  shared_order: bool
  data_order: str
  way: str = chunks.DENSE
  method: Method | None = None
  method_static: MethodStatic | None = None

  def sort_key(self) -> tuple:
    return (
      self.method.name if self.method else "",
      self.way,
      self.width,
      self.epochs,
      self.batch_size,
      self.shared_order,
      self.data_order,
      repr(self.method_static),
    )


def bucket_key(
  spec: ExperimentSpec, methods: MethodLookup = plain_only, plan: "ChunkPlan | None" = None
) -> BucketKey:
  """Which program trains a spec, and how (see the module docstring)."""
  plan = plan or ChunkPlan()
  method = methods(spec.method)
  common = (spec.epochs, spec.batch_size, spec.shared_order, spec.data_order)
  masks = spec.masks()
  if method.is_plain:
    if plan.compact:
      return BucketKey(compaction.plan(masks).width, *common, chunks.COMPACT)
    return BucketKey(mask_ops.occupied_width(masks), *common, chunks.DENSE)
  way = chunks.DENSE
  if plan.compact and method.fixes_mask_at_init:
    way = chunks.MASK_THEN_COMPACT
  elif plan.compact and method.trains_last_round_fixed:
    way = chunks.ROUNDS_THEN_COMPACT
  return BucketKey(mask_ops.occupied_width(masks), *common, way, method, spec.method_static())


def train_static(key: BucketKey, plan: "ChunkPlan") -> train.TrainStatic:
  """The bucket's TrainStatic: the plan's layout for its width, if its method has it."""
  formulation = plan.formulation(key.width)
  if key.method is not None and formulation not in key.method.layouts:
    formulation = "dot"  # the same bits as "unit" (cubist.layouts)
  return train.TrainStatic(
    width=key.width,
    epochs=key.epochs,
    batch_size=key.batch_size,
    shared_order=key.shared_order,
    order=key.data_order,
    formulation=formulation,
  )


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


@functools.lru_cache(maxsize=16)
def _cached_mask_step(method: Method, method_static: MethodStatic, mesh):
  return train.make_mask_step(method, method_static, mesh)


@functools.lru_cache(maxsize=16)
def _cached_rounds_step(static, method: Method, method_static: MethodStatic, mesh):
  return train.make_train(static, method, method_static, mesh, until_round=method.rounds - 1)


@functools.lru_cache(maxsize=16)
def _cached_decay(static: train.TrainStatic):
  return train.make_decay(static)


def _programs(plan: "ChunkPlan", mesh, num_devices: int, trace_guard) -> chunks.Programs:
  """The compiled programs a chunk asks for (cached, or fresh and guarded in tests)."""

  guarded = {}

  def trainer(static, method, method_static):
    if trace_guard is None:
      return _cached_train(static, method, method_static, mesh)
    key = (static, method, method_static)
    if key not in guarded:  # one guarded program per key for this run: chunks reuse it
      guarded[key] = _make_train(static, method, method_static, mesh, trace_guard)
    return guarded[key]

  def group_size(count: int) -> int:
    size = max(num_devices, 1 << (count - 1).bit_length())
    return -(-size // num_devices) * num_devices

  return chunks.Programs(
    train=trainer,
    mask_step=lambda method, method_static: _cached_mask_step(method, method_static, mesh),
    rounds_step=lambda static, method, method_static: _cached_rounds_step(
      static, method, method_static, mesh
    ),
    decay=lambda static: _cached_decay(dataclasses.replace(static, formulation="dot", width=1)),
    layout=plan.formulation,
    group_size=group_size,
  )


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
  plan: ChunkPlan | None = None,
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
  plan: layouts and chunk sizes (default: ChunkPlan.for_backend of JAX's backend).
  fingerprint: identifies the sweep (default: a hash of all its exp_ids); a
    workdir holding another fingerprint is refused with a one-line error.
  on_chunk(chunk_specs, outcomes): optional hook after each chunk's commit
    (cubist.chunks.Outcome per spec: full-width params, masks, metrics).
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
  # Only now, after validation and the store checks, may JAX start a backend.
  plan = plan or ChunkPlan.for_backend(jax.default_backend())
  devices = jax.local_devices() if devices is None else devices
  mesh = train.experiment_mesh(devices) if len(devices) > 1 else None
  x, y = (jnp.asarray(a) for a in data.cubist_spiral())
  buckets = defaultdict(list)
  for spec in todo:
    buckets[bucket_key(spec, methods, plan)].append(spec)
  programs = _programs(plan, mesh, len(devices), trace_guard)
  progress = Progress(len(todo), progress_stream)

  def chunked(items, width: int):
    """`items` in chunks of the plan's size at `width`; a smaller (last) chunk is padded with
    its last item to the next power of two only (few distinct shapes, hence compilations,
    and little padded work)."""
    full = plan.chunk_size(width, len(devices))
    for start in range(0, len(items), full):
      chunk = items[start : start + full]
      size = min(full, max(len(devices), 1 << (len(chunk) - 1).bit_length()))
      size = -(-size // len(devices)) * len(devices)
      yield chunk, chunk + [chunk[-1]] * (size - len(chunk))

  def commit(chunk_specs, outcomes, seconds, note):
    results.commit_rows(chunks.result_rows(chunk_specs, outcomes, seconds / len(chunk_specs)))
    if on_chunk is not None:
      on_chunk(chunk_specs, outcomes[: len(chunk_specs)])
    layouts = "/".join(sorted({o.layout for o in outcomes}))
    progress.update(len(chunk_specs), seconds, f"({note}, {layouts})")
    if stop is not None and stop():
      progress.close()
      raise Interrupted(progress.done, progress.total - progress.done)

  for key in sorted(buckets, key=BucketKey.sort_key):
    bucket = buckets[key]
    static = train_static(key, plan)
    label = f"{key.method.name}, " if key.method else ""
    if key.way != chunks.MASK_THEN_COMPACT:
      # Chunk by chunk ("rounds_then_compact" too: its first stage is most of a run's
      # cost, so each chunk is committed before the next one starts).
      for chunk, padded in chunked(bucket, key.width):
        began = time.perf_counter()
        outcomes = chunks.train_chunk(
          padded, x, y, key.way, static, key.method, key.method_static, programs
        )
        commit(chunk, outcomes, time.perf_counter() - began, f"{label}width {key.width}")
      continue
    # The mask step of every run first (nothing to commit yet: cheap to lose), then the
    # runs of each compact width together, whichever chunk their mask step was in.
    began, staged = time.perf_counter(), []
    for chunk, padded in chunked(bucket, key.width):
      staged += chunks.stage(
        padded, x, y, key.way, static, key.method, key.method_static, programs
      )[: len(chunk)]
    mask_seconds = (time.perf_counter() - began) / len(staged)
    groups = defaultdict(list)
    for run in staged:
      groups[run.plan.width].append(run)
    for width in sorted(groups):
      for group, padded in chunked(groups[width], width):
        began = time.perf_counter()
        outcomes = chunks.train_staged(padded, x, y, static, programs)
        seconds = time.perf_counter() - began + mask_seconds * len(group)
        commit(
          [run.spec for run in group], outcomes, seconds, f"{label}width {key.width} -> {width}"
        )
  progress.close()
