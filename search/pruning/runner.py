"""What the engine needs to run pruning specs: their static settings, inputs and trainer.

cubist.engine treats a spec whose `method` is registered here as a pruning run
and asks this module for (1) the bucket's `MethodStatic`, (2) the chunk's
`PruneInputs` and (3) the compiled trainer. Everything else (bucketing,
chunking, sharding, the store, progress, resume) is the engine's, shared with
fixed-mask training.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from cubist import data, engine, specs as spec_ops, train
from cubist.specs import ExperimentSpec
from search.pruning import registry
from search.pruning.base import Hyper, MethodStatic
from search.pruning.trainer import PruneInputs, make_prune_train


def method_static(spec: ExperimentSpec) -> MethodStatic:
  """The MethodStatic of a pruning spec (decides its compiled program)."""
  family = "random" if spec.init == spec_ops.RANDOM_INIT else "fixed"
  static = MethodStatic(count_mode=spec.count_mode, family=family, epochs=spec.epochs,
                        batches_per_epoch=data.NUM_POINTS // spec.batch_size, batch_size=spec.batch_size)
  return dataclasses.replace(static, **dict(spec.method_options))


def method_key(seed: int) -> jax.Array:
  """The method's own PRNG stream of a seed (streams 0 and 1 are init and data order)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), 2)


def host_counts(spec: ExperimentSpec, num_weights: int, static: MethodStatic) -> np.ndarray:
  """The method's count schedule for this spec (N = num_weights), in the reference's
  float64 arithmetic."""
  method = registry.get(spec.method)
  target = spec.target_nnz if spec.target_nnz is not None else 0  # VD, L0 have none
  if method.host_counts is None or spec.target_nnz is None:
    return np.array([target], np.int32)
  return np.asarray(method.host_counts(spec.target_nnz, num_weights, static), np.int32).reshape(-1)


def chunk_inputs(specs: list[ExperimentSpec], padded_width: int,
                 static: MethodStatic) -> PruneInputs:
  """Host-side PruneInputs for a chunk of one method (leading axis = len(specs))."""
  base = engine.chunk_inputs(specs, padded_width)
  num_weights = np.array([spec.num_weights() for spec in specs], np.int32)
  counts = [host_counts(spec, int(n), static) for spec, n in zip(specs, num_weights)]
  length = max(len(c) for c in counts)
  counts = np.stack([np.pad(c, (0, length - len(c)), mode="edge") for c in counts])
  hyper = Hyper(target_nnz=np.array([spec.target_nnz or 0 for spec in specs], np.int32),
                lr=base.lr, strength=np.array([spec.strength for spec in specs], np.float32),
                threshold=np.array([spec.threshold for spec in specs], np.float32),
                counts=counts, num_weights=num_weights)
  method_keys = np.stack([np.asarray(method_key(spec.seed)) for spec in specs])
  return PruneInputs(base.key, method_keys, base.lr, base.schedule, base.params, base.masks,
                     hyper)


@functools.lru_cache(maxsize=64)
def cached_train(static: train.TrainStatic, method_name: str, method_static: MethodStatic, mesh):
  """One jitted trainer per (bucket, method, settings, mesh), reused across engine calls."""
  return make_prune_train(static, registry.get(method_name), method_static, mesh)


def trainer_for(static: train.TrainStatic, method_name: str, method_static: MethodStatic,
                mesh, max_traces: int | None = None):
  """The engine's trainer for a pruning bucket: cached, or fresh and guarded (tests)."""
  if max_traces is None:
    return cached_train(static, method_name, method_static, mesh)
  return make_prune_train(static, registry.get(method_name), method_static, mesh,
                          max_traces=max_traces)
