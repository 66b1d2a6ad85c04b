"""One chunk of experiments: its inputs, its training in stages, its store rows.

The engine (cubist.engine) decides which specs share a compiled program and
calls `train_chunk` per chunk. A chunk trains in one of four ways, by what
its method allows (ARCHITECTURE principle 10):

- "dense": the method's whole run at the chunk's padded width (methods whose
  mask changes during training: IMP, RigL, VD, L0; or compaction off).
- "compact": fixed-mask training of the live units only (cubist.compaction):
  the chunk's specs already share a compact width.
- "mask_then_compact": a method that fixes its mask at initialisation (SNIP,
  GraSP, SynFlow, Iter-SNIP, FORCE, ProsPr) runs its `at_init` at the full
  width (`train.make_mask_step`), then each run is trained at the compact
  width of its own live units, in groups of runs of equal compact width.
- "rounds_then_compact": a method of several rounds whose last round trains a
  fixed mask (LTH) runs all rounds but the last at the full width
  (`train.make_train(until_round=...)`), then the last round like the above.
  Only the last: a round that ends in a prune ranks every masked-in weight,
  the disconnected ones included, so it cannot drop them.

Every way ends in `Outcome`s at each run's full width (numpy), which
`result_rows` turns into store rows. Whatever the way, a run's bits
depend only on its spec and the trainer layout, never on the chunk it shares.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cubist import compaction, layouts, machine, mlp, schedules, train
from cubist import masks as mask_ops
from cubist import specs as spec_ops
from cubist.method import Hyper, Method, MethodStatic
from cubist.specs import ExperimentSpec

DENSE, COMPACT, MASK_THEN_COMPACT = "dense", "compact", "mask_then_compact"
ROUNDS_THEN_COMPACT = "rounds_then_compact"


class Outcome(NamedTuple):
  """One run's result at its full width (numpy).

  trained_width, layout: the width and layout of the program that trained it.
  portable: every program of the run (a mask step or rounds at the full width
  included) summed portably (cubist.layouts.is_portable): the bits are then the
  same on every CPU of one class.
  """

  params: mlp.Params
  masks: mlp.Params
  accuracy: float
  loss: float
  failed: bool
  trained_width: int
  layout: str
  portable: bool


# --- Inputs -----------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _batched_init(width: int):
  return jax.jit(jax.vmap(lambda key: mlp.init(key, width)))


@functools.lru_cache(maxsize=16)
def _load_init(path: str, width: int) -> mlp.Params:
  return mlp.load_init(path, width)


def initial_params_each(specs: list[ExperimentSpec]) -> list[mlp.Params]:
  """Each spec's initial weights at its own width (numpy): drawn from its seed or read."""
  per_spec = [None] * len(specs)
  by_width = defaultdict(list)
  for index, spec in enumerate(specs):
    if spec.init == spec_ops.RANDOM_INIT:
      by_width[spec.width].append(index)
    else:
      per_spec[index] = _load_init(spec.init, spec.width)
  for width, indices in by_width.items():
    keys = jnp.stack([spec_ops.run_keys(specs[i].seed)[0] for i in indices])
    drawn = jax.device_get(_batched_init(width)(keys))
    for row, index in enumerate(indices):
      per_spec[index] = jax.tree.map(lambda a, r=row: a[r], drawn)
  return per_spec


def initial_params(specs: list[ExperimentSpec], padded_width: int) -> mlp.Params:
  """Initial weights of each spec (drawn at spec.width, then sliced), stacked."""
  return _stack([mlp.slice_params(p, padded_width) for p in initial_params_each(specs)])


def _stack(trees):
  return jax.tree.map(lambda *arrays: np.stack(arrays), *trees)


def _unstack(tree, index: int):
  return jax.tree.map(lambda a: np.asarray(a[index]), tree)


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
  """Host-side TrainInputs for a chunk at a padded width (leading axis = len(specs)).

  With a (non-plain) method, its keys and Hyper are added.
  """
  masks = _stack([mlp.slice_params(spec.masks(), padded_width) for spec in specs])
  inputs = _run_inputs(specs, initial_params(specs, padded_width), masks)
  if method is None or method.is_plain:
    return inputs
  counts = [host_counts(spec, method, method_static) for spec in specs]
  length = max(len(c) for c in counts)
  hyper = Hyper(
    target_nnz=np.array([spec.target_nnz or 0 for spec in specs], np.int32),
    lr=inputs.lr,
    strength=np.array([spec.strength for spec in specs], np.float32),
    threshold=np.array([spec.threshold for spec in specs], np.float32),
    counts=np.stack([np.pad(c, (0, length - len(c)), mode="edge") for c in counts]),
    num_weights=np.array([spec.num_weights() for spec in specs], np.int32),
  )
  method_keys = np.stack([np.asarray(spec_ops.method_key(spec.seed)) for spec in specs])
  return inputs._replace(method_key=method_keys, hyper=hyper)


def _rates(specs) -> tuple[np.ndarray, np.ndarray]:
  """float32 (E,) base learning rates and int32 (E,) schedule ids."""
  lr = np.array([spec.lr for spec in specs], np.float32)
  schedule = np.array([schedules.schedule_id(spec.schedule) for spec in specs], np.int32)
  return lr, schedule


def _run_inputs(specs, params, masks) -> train.TrainInputs:
  """Plain TrainInputs: the specs' data-order keys, learning rates and schedules."""
  keys = np.stack([np.asarray(spec_ops.run_keys(spec.seed)[1]) for spec in specs])
  return train.TrainInputs(keys, *_rates(specs), params, masks)


# --- Training a chunk ----------------------------------------------------------------


class Programs(NamedTuple):
  """Where a chunk gets its compiled programs (the engine caches them).

  train(static, method | None, method_static | None) -> train function;
  mask_step(method, method_static) -> train.make_mask_step's function;
  rounds_step(static, method, method_static) -> the first stage of a
    "rounds_then_compact" method (train.make_train with until_round=rounds - 1);
  decay(static) -> train.make_decay's function; layout(width) -> "dot" | "unit";
  group_size(count) -> the padded size of a group of `count` runs.
  """

  train: Callable
  mask_step: Callable
  rounds_step: Callable
  decay: Callable
  layout: Callable[[int], str]
  group_size: Callable[[int], int]


def train_chunk(
  specs, x, y, way: str, static: train.TrainStatic, method, method_static, programs: Programs
) -> list[Outcome]:
  """Train a (padded) chunk one of the four ways; one Outcome per spec.

  (The engine stages a "mask_then_compact" bucket itself, so that runs of equal
  compact width from several chunks train together: `stage` then `train_staged`.)
  """
  if way == DENSE:
    inputs = chunk_inputs(specs, static.width, method, method_static)
    result = jax.device_get(programs.train(static, method, method_static)(x, y, inputs))
    return [
      Outcome(
        mlp.pad_params(_unstack(result.params, i), spec.width),
        mlp.pad_params(_unstack(result.masks, i), spec.width),
        float(result.accuracy[i]),
        float(result.loss[i]),
        bool(result.failed[i]),
        static.width,
        static.formulation,
        layouts.is_portable(static.formulation, static.width),
      )
      for i, spec in enumerate(specs)
    ]
  staged = stage(specs, x, y, way, static, method, method_static, programs)
  outcomes = [None] * len(specs)
  groups = defaultdict(list)
  for index, run in enumerate(staged):
    groups[run.plan.width].append(index)
  for members in groups.values():
    for index, outcome in zip(
      members, train_staged([staged[i] for i in members], x, y, static, programs)
    ):
      outcomes[index] = outcome
  return outcomes


class Staged(NamedTuple):
  """A run ready to train its live units: what `train_staged` needs, at the compact width.

  start, masks: its compact network (the plan's width); dropped: the values its
  dropped entries start from (compaction.dropped_values); failed: Method.failed;
  portable: whether its first stage (if any) summed portably.
  """

  spec: ExperimentSpec
  plan: compaction.Compaction
  start: mlp.Params
  masks: mlp.Params
  dropped: np.ndarray
  failed: bool
  portable: bool


def stage(specs, x, y, way: str, static, method, method_static, programs) -> list[Staged]:
  """The compact form of each run: from its spec ("compact"), after its method's mask
  step at the full width ("mask_then_compact"), or after all its rounds but the last
  at the full width ("rounds_then_compact")."""
  if way == COMPACT:
    masks = [spec.masks() for spec in specs]
    starts = [mlp.apply_masks(params, m) for params, m in zip(initial_params_each(specs), masks)]
    failed = [False] * len(specs)
    portable = True  # no first stage
  else:
    inputs = chunk_inputs(specs, static.width, method, method_static)
    if way == MASK_THEN_COMPACT:  # at_init with the model's own arithmetic (mlp.apply)
      first_stage = programs.mask_step(method, method_static)
      portable = mlp.is_portable_width(static.width)
    else:  # ROUNDS_THEN_COMPACT
      first_stage = programs.rounds_step(static, method, method_static)
      portable = layouts.is_portable(static.formulation, static.width)
    params, masks_out, failed_out = jax.device_get(first_stage(x, y, inputs))
    starts = [mlp.pad_params(_unstack(params, i), s.width) for i, s in enumerate(specs)]
    masks = [mlp.pad_params(_unstack(masks_out, i), s.width) for i, s in enumerate(specs)]
    failed = [bool(f) for f in np.asarray(failed_out)]
  staged = []
  for spec, start, mask, fail in zip(specs, starts, masks, failed):
    plan = compaction.plan(mask)
    staged.append(
      Staged(
        spec,
        plan,
        compaction.gather(start, plan),
        compaction.gather(mask, plan),
        compaction.dropped_values(start, plan),
        fail,
        portable,
      )
    )
  return staged


def train_staged(staged: list[Staged], x, y, static, programs) -> list[Outcome]:
  """Fixed-mask training of runs of one compact width (padded to a group size); their
  dropped entries follow the weight-decay recurrence; all scattered back to full width."""
  width = staged[0].plan.width
  size = programs.group_size(len(staged))
  padded = staged + [staged[-1]] * (size - len(staged))
  specs = [run.spec for run in padded]
  inputs = _run_inputs(specs, _stack([r.start for r in padded]), _stack([r.masks for r in padded]))
  layout = programs.layout(width)
  group_static = train.TrainStatic(
    width=width,
    epochs=static.epochs,
    batch_size=static.batch_size,
    shared_order=static.shared_order,
    order=static.order,
    formulation=layout,
  )
  result = jax.device_get(programs.train(group_static, None, None)(x, y, inputs))
  longest = max(len(run.dropped) for run in staged)
  decayed = None
  if longest:
    values = np.zeros((size, 1 << (longest - 1).bit_length()), np.float32)
    for i, run in enumerate(staged):
      values[i, : len(run.dropped)] = run.dropped
    decayed = np.asarray(programs.decay(static)(values, *_rates(specs)))
  outcomes = []
  for row, run in enumerate(staged):
    plan = run.plan
    params = compaction.scatter(_unstack(result.params, row), compaction.zeros(plan), plan)
    params = (
      compaction.with_dropped(params, decayed[row, : len(run.dropped)], plan)
      if len(run.dropped)
      else params
    )
    outcomes.append(
      Outcome(
        params,
        compaction.full_masks(run.masks, plan),
        float(result.accuracy[row]),
        float(result.loss[row]),
        run.failed,
        width,
        layout,
        run.portable and layouts.is_portable(layout, width),
      )
    )
  return outcomes


# --- Store rows ------------------------------------------------------------------------


@jax.jit
def _metrics(params):
  counts = jax.vmap(mask_ops.connectivity)(params)
  return {
    "weight_nnz": jax.vmap(mask_ops.weight_nnz)(params),
    "model_nnz": jax.vmap(mask_ops.model_nnz)(params),
    "effective_weight_nnz": counts["effective_weight_nnz"],
    "dead_units": counts["dead_units"],
  }


def _metrics_each(params: list[mlp.Params]) -> list[dict]:
  """NNZ counts and connectivity of each network, grouped by width for one jit call each."""
  out = [None] * len(params)
  by_width = defaultdict(list)
  for index, tree in enumerate(params):
    by_width[tree[0].weight.shape[0]].append(index)
  for indices in by_width.values():
    metrics = jax.device_get(_metrics(_stack([params[i] for i in indices])))
    for row, index in enumerate(indices):
      out[index] = {name: int(values[row]) for name, values in metrics.items()}
  return out


def result_rows(
  chunk: list[ExperimentSpec], outcomes: list[Outcome], seconds_per_run: float
) -> list[dict]:
  """Store rows for the real (unpadded) experiments of a chunk.

  Each row holds the spec (JSON), its final masks and its trained parameters
  at their occupied width, the width and layout that trained them, and this
  machine's signature with whether the bits are portable (cubist.machine).
  Status: "failed" (Method.failed), "diverged" (a non-finite parameter or
  loss: no NNZ counts) or "ok".
  """
  outcomes = outcomes[: len(chunk)]
  metrics = _metrics_each([o.params for o in outcomes])
  signature = machine.signature()
  rows = []
  for spec, outcome, counted in zip(chunk, outcomes, metrics):
    finite = all(np.all(np.isfinite(a)) for a in jax.tree.leaves(outcome.params))
    finite = finite and bool(np.isfinite(outcome.loss))
    status = "failed" if outcome.failed else "ok" if finite else "diverged"
    params_width = mask_ops.occupied_width(outcome.masks)
    blob, shapes = mask_ops.pack_masks(outcome.masks)
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
        accuracy=outcome.accuracy,
        loss=outcome.loss if finite else None,
        **{name: value if status != "diverged" else None for name, value in counted.items()},
        mask=blob,
        mask_shape=shapes,
        params=mlp.pack_params(mlp.slice_params(outcome.params, params_width)),
        params_width=params_width,
        trained_width=outcome.trained_width,
        layout=outcome.layout,
        portable=outcome.portable and signature["backend"] == "cpu",
        machine=signature,
        seconds=seconds_per_run,
      )
    )
  return rows
