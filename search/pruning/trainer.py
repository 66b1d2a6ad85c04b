"""The method-aware trainer: `cubist.train`'s run with a pruning method's hooks.

`make_prune_train(static, method, method_static)` returns `train(x, y, inputs)`
for a chunk of E experiments of one method, exactly like `cubist.train.make_train`
(same data orders, loss, PyTorch SGD, per-epoch schedules, masks re-applied
after every update, full-data evaluation; its building blocks are reused), plus
the hooks of `search.pruning.base.Method`:

    at_init -> [aux_init] -> rounds x (epochs x steps: [pre_event] forward,
    gradient, [grad_event | SGD update]) -> [round_end, rewind] -> [finalize]
    -> evaluate

Events happen at steps shared by the whole chunk (host-side bool schedules
scanned as inputs), so each is one `lax.cond` with an unbatched predicate: a
real branch, not a select evaluated every step (ARCHITECTURE principle 3).

Only the batched-matmul ("dot") layout is used: pruning starts from dense
networks of width >= 3, where it is the faster formulation anyway.

Randomness: `inputs.method_key` (per experiment, from its seed only) feeds
`at_init` (fold 0), `aux_init` (fold 1) and, per global step t, the events and
stochastic losses (fold 2, then t); the data order uses `inputs.key` as in
cubist.train. A run therefore does not depend on the chunk it shares.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cubist import schedules, train as train_ops
from cubist.mlp import Params
from search.pruning.base import Hyper, Method, MethodStatic


class PruneInputs(NamedTuple):
  """One chunk of experiments; every field has a leading axis E.

  key: uint32 (E, 2) data-order keys (as cubist.train.TrainInputs.key).
  method_key: uint32 (E, 2) the method's own randomness.
  lr: float32 (E,); schedule: int32 (E,); params: initial Params; masks: bool
  Params (the starting network, e.g. dense at the run's width); hyper: Hyper.
  """
  key: jax.Array
  method_key: jax.Array
  lr: jax.Array
  schedule: jax.Array
  params: Params
  masks: Params
  hyper: Hyper


class PruneResult(NamedTuple):
  """Per-experiment results, leading axis E.

  params: final (masked) parameters; masks: final bool masks; start_params:
  the parameters training started from (after at_init, e.g. Xavier re-init),
  which a lottery-ticket retraining rewinds to. accuracy, loss: (E,) on all
  points; epoch_loss: (E, rounds * epochs); failed: bool (E,) runs the
  reference would not have produced (Method.failed).
  """
  params: Params
  masks: Params
  start_params: Params
  accuracy: jax.Array
  loss: jax.Array
  epoch_loss: jax.Array
  failed: jax.Array


def _vmap(fn, *args, shared=()):
  """vmap `fn` over the leading axis of every argument except positions in `shared`."""
  in_axes = tuple(None if i in shared else 0 for i in range(len(args)))
  return jax.vmap(fn, in_axes=in_axes)(*args)


def _fold(keys: jax.Array, value) -> jax.Array:
  return jax.vmap(lambda key: jax.random.fold_in(key, value))(keys)


def event_schedule(method: Method, method_static: MethodStatic,
                   epochs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Host-side bool (epochs, batches) schedules of the pre- and grad-events.

  epochs: keep only the first `epochs` epochs of the method's schedule (the
  truncated runs of benchmarks); default all.
  """
  shape = (method_static.epochs, method_static.batches_per_epoch)
  pre = np.asarray(method.pre_event_steps(method_static), bool).reshape(shape)
  grad = np.asarray(method.grad_event_steps(method_static), bool).reshape(shape)
  return pre[:epochs], grad[:epochs]


def _train_chunk(x, y, inputs: PruneInputs, static: train_ops.TrainStatic, method: Method,
                 method_static: MethodStatic) -> PruneResult:
  hyper = inputs.hyper
  masks = jax.tree.map(lambda m: m.astype(bool), inputs.masks)
  params = jax.tree.map(lambda p, m: p * m, inputs.params, masks)
  if method.at_init is not None:
    params, masks = _vmap(functools.partial(method.at_init, static=method_static),
                          _fold(inputs.method_key, 0), params, masks, x, y, hyper, shared=(3, 4))
    masks = jax.tree.map(lambda m: m.astype(bool), masks)
    params = jax.tree.map(lambda p, m: p * m, params, masks)
  start_params = params
  aux = ()
  if method.aux_init is not None:
    aux = _vmap(functools.partial(method.aux_init, static=method_static),
                _fold(inputs.method_key, 1), params, masks, hyper)
  step_keys = _fold(inputs.method_key, 2)

  param_optimiser = optax.chain(optax.add_decayed_weights(static.weight_decay),
                                optax.trace(decay=static.momentum))
  aux_optimiser = optax.trace(decay=static.momentum)
  lrs = schedules.learning_rates(inputs.lr, inputs.schedule, static.epochs)  # (E, epochs)
  pre_flags, grad_flags = (jnp.asarray(a) for a in event_schedule(method, method_static,
                                                                  static.epochs))

  def losses_of(params, aux, masks, batch_x, batch_y, t):
    if method.loss is None:
      return train_ops._losses(params, batch_x, batch_y, "dot")
    keys = _fold(step_keys, t)
    return _vmap(functools.partial(method.loss, static=method_static),
                 params, aux, masks, batch_x, batch_y, keys, t, hyper, shared=(6,))

  value_and_grad = jax.value_and_grad(
      lambda trainable, masks, bx, by, t: (lambda l: (jnp.sum(l), l))(
          losses_of(trainable[0], trainable[1], masks, bx, by, t)), has_aux=True)

  def with_trace(opt_state, trace):
    return (opt_state[0], optax.TraceState(trace=trace))

  def step(carry, step_inputs):
    params, aux, masks, opt_state, aux_state, lr = carry
    indices, t, pre_flag, grad_flag = step_inputs
    if method.pre_event is not None:
      def pre(operands):
        params, masks, trace = operands
        return _vmap(functools.partial(method.pre_event, static=method_static),
                     t, _fold(step_keys, t), params, masks, trace, hyper, shared=(0,))
      params, masks, trace = jax.lax.cond(pre_flag, pre, lambda operands: operands,
                                          (params, masks, opt_state[1].trace))
      params = jax.tree.map(lambda p, m: p * m, params, masks)
      opt_state = with_trace(opt_state, trace)
    batch_x, batch_y = train_ops._gather(x, y, indices, "dot")
    (_, losses), (grads, aux_grads) = value_and_grad((params, aux), masks, batch_x, batch_y, t)

    def sgd(operands):
      params, aux, masks, opt_state, aux_state = operands
      updates, opt_state = param_optimiser.update(grads, opt_state, params)
      params = jax.tree.map(
          lambda p, u, m: (p - train_ops._per_experiment(lr, u, "dot") * u) * m,
          params, updates, masks)
      aux_updates, aux_state = aux_optimiser.update(aux_grads, aux_state, aux)
      aux = jax.tree.map(lambda a, u: a - train_ops._per_experiment(lr, u, "dot") * u,
                         aux, aux_updates)
      return params, aux, masks, opt_state, aux_state

    operands = (params, aux, masks, opt_state, aux_state)
    if method.grad_event is None:
      params, aux, masks, opt_state, aux_state = sgd(operands)
    else:
      def event(operands):
        params, aux, masks, opt_state, aux_state = operands
        params, masks, trace = _vmap(functools.partial(method.grad_event, static=method_static),
                                     t, _fold(step_keys, t), params, masks, opt_state[1].trace,
                                     grads, hyper, shared=(0,))
        masks = jax.tree.map(lambda m: m.astype(bool), masks)
        params = jax.tree.map(lambda p, m: p * m, params, masks)
        return params, aux, masks, with_trace(opt_state, trace), aux_state
      params, aux, masks, opt_state, aux_state = jax.lax.cond(grad_flag, event, sgd, operands)
    return (params, aux, masks, opt_state, aux_state, lr), losses

  def epoch(carry, epoch_inputs):
    params, aux, masks, opt_state, aux_state = carry
    epoch_index, lr, pre_epoch, grad_epoch = epoch_inputs
    states = train_ops._epoch_states(inputs.key, epoch_index, static)
    indices = train_ops._epoch_indices(states, static)  # (batches, E, B)
    steps = epoch_index * static.batches_per_epoch + jnp.arange(static.batches_per_epoch)
    (params, aux, masks, opt_state, aux_state, _), losses = jax.lax.scan(
        step, (params, aux, masks, opt_state, aux_state, lr),
        (indices, steps, pre_epoch, grad_epoch))
    return (params, aux, masks, opt_state, aux_state), losses

  def one_round(params, aux, masks):
    """A whole training run from `params` (masked) with fresh momentum and schedule."""
    params = jax.tree.map(lambda p, m: p * m, params, masks)
    carry = (params, aux, masks, param_optimiser.init(params), aux_optimiser.init(aux))
    (params, aux, masks, _, _), losses = jax.lax.scan(
        epoch, carry, (jnp.arange(static.epochs), lrs.T, pre_flags, grad_flags))
    return params, aux, masks, jnp.mean(losses, axis=1)  # losses (epochs, E)

  if method.rounds == 1:
    params, aux, masks, epoch_losses = one_round(params, aux, masks)
  else:
    def round_body(carry, round_index):
      masks, _, _ = carry
      trained, trained_aux, masks, losses = one_round(start_params, aux, masks)
      next_masks = jax.lax.cond(
          round_index < method.rounds,
          lambda m: jax.tree.map(lambda a: a.astype(bool), _vmap(
              functools.partial(method.round_end, static=method_static),
              round_index, trained, m, hyper, shared=(0,))),
          lambda m: m, masks)
      return (next_masks, trained, trained_aux), (losses, masks)

    init = (masks, start_params, aux)
    (_, params, aux), (losses, round_masks) = jax.lax.scan(
        round_body, init, jnp.arange(1, method.rounds + 1))
    masks = jax.tree.map(lambda a: a[-1], round_masks)  # the last round's masks
    epoch_losses = losses.reshape(-1, losses.shape[-1])  # (rounds * epochs, E)

  if method.finalize is not None:
    params, masks = _vmap(functools.partial(method.finalize, static=method_static),
                          params, aux, masks, hyper)
    masks = jax.tree.map(lambda m: m.astype(bool), masks)
    params = jax.tree.map(lambda p, m: p * m, params, masks)
  experiments = inputs.lr.shape[0]
  if method.failed is not None:
    failed = _vmap(functools.partial(method.failed, static=method_static), masks, hyper)
  else:
    failed = jnp.zeros((experiments,), bool)
  accuracy, loss = train_ops._evaluate(params, x, y, static)
  return PruneResult(params, masks, start_params, accuracy, loss, epoch_losses.T, failed)


def make_prune_train(static: train_ops.TrainStatic, method: Method, method_static: MethodStatic,
                     mesh: jax.sharding.Mesh | None = None, max_traces: int | None = None,
                     truncated: bool = False):
  """Compile-once trainer for one method and bucket: `train(x, y, inputs) -> PruneResult`.

  static: the bucket's TrainStatic (its formulation is forced to "dot");
  method_static: the method's static settings (epochs and batches must agree).
  mesh, max_traces: as cubist.train.make_train.
  truncated: benchmarks only: train just the first static.epochs epochs of a
    method_static.epochs-long run (its events and counts as in the long run).
  """
  static = dataclasses.replace(static, formulation="dot", record_step_losses=False)
  static.validate()
  too_long = static.epochs > method_static.epochs
  if static.batches_per_epoch != method_static.batches_per_epoch or too_long or (
      static.epochs != method_static.epochs and not truncated):
    raise ValueError(f"method_static epochs/batches ({method_static.epochs}, "
                     f"{method_static.batches_per_epoch}) differ from the trainer's "
                     f"({static.epochs}, {static.batches_per_epoch})")
  if method.rounds > 1 and method.round_end is None:
    raise ValueError(f"method {method.name!r} has rounds={method.rounds} but no round_end")

  def train(x, y, inputs):
    return _train_chunk(x, y, inputs, static, method, method_static)

  if max_traces is not None:
    train = chex.assert_max_traces(train, n=max_traces)
  if mesh is not None:
    spec = jax.sharding.PartitionSpec(train_ops.EXPERIMENT_AXIS)
    replicated = jax.sharding.PartitionSpec()
    train = jax.shard_map(train, mesh=mesh, in_specs=(replicated, replicated, spec),
                          out_specs=PruneResult(*([spec] * 7)), check_vma=False)
  return jax.jit(train)
