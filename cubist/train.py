"""The one trainer: a whole run of any method as one compiled `lax.scan`.

`make_train(static, method, method_static)` returns `train(x, y, inputs) ->
TrainResult` for a chunk of E experiments. Every field of `TrainInputs` has a
leading experiment axis E (ARCHITECTURE principle 1): seeds, learning rates,
schedule ids, initial weights, masks and method hyperparameters are arrays, so
a new value never recompiles. `TrainStatic` holds what decides the compiled
program (padded width, epochs, batch size, layout...). Fixed-mask training is
the plain method (`cubist.method.PLAIN_METHOD`, the default); a pruning method
adds its hooks (cubist.method) at init, at shared event steps, between rounds
and at the end. This is the only training scan in the code.

Reference semantics kept (METHODS §C):
- BCE-with-logits, mean over the batch of 128; 390 batches per epoch, drop last,
  a fresh permutation per epoch drawn from the experiment's own key
  (cubist.order: a keyed Feistel bijection by default, exact sort as option).
- PyTorch SGD: g <- grad + wd * theta (weight decay *before* momentum), then
  buf <- g on the first step and buf <- mu buf + g afterwards (optax.trace with
  a zero initial trace gives exactly that), theta <- theta - lr_e buf.
- The learning rate is stepped once per epoch (cubist.schedules).
- Masks multiply the parameters at installation and after every update, so
  masked entries are zero at every forward pass. Gradients are not masked: as
  §B.3 explains this gives the same trajectory for the active parameters.
- Final accuracy (logit > 0; a logit of exactly 0 is class 0) and mean loss on
  all 49,982 points, after the last epoch.

Layouts of the arithmetic (cubist.layouts: the portable "dot", experiment
axis first, and "unit", experiment axis last; "gemm", library matmuls with
machine-specific bits, for wide networks), chosen per width bucket by the
engine. Every sum of the portable layouts has its order written into the
program (cubist.portable), so a run's bits do not depend on the CPU. Method
hooks see one experiment in any layout (they are vmapped over the layout's
experiment axis); a method with its own loss sees (B, 2) batches and runs with
the experiment axis first ("dot" or "gemm").

Randomness: `inputs.key` draws the data orders; `inputs.method_key` (per
experiment) feeds `at_init` (fold 0), `aux_init` (fold 1) and, per global step
t, the events and stochastic losses (fold 2, then t). A run therefore does not
depend on the chunk it shares.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cubist import data, layouts, order, portable, schedules
from cubist.layouts import FORMULATIONS
from cubist.method import PLAIN_METHOD, Hyper, Method, MethodStatic, RunState, event_schedule
from cubist.mlp import Params

EXPERIMENT_AXIS = "experiments"
# The "unit" formulation's elementwise loops over experiments are vectorised by
# XLA in blocks; under v4, experiments that fall outside whole blocks took a
# remainder loop that rounded differently (its library reductions). Padding every
# chunk to a multiple of this many experiments keeps each run on the same code
# path whatever its chunk.
UNIT_BLOCK = 32


@dataclasses.dataclass(frozen=True)
class TrainStatic:
  """What decides the compiled program. Hashable; one compile per value and chunk size.

  width: padded hidden width of the bucket (inert units beyond a network's own
    widths are exact to drop, so the engine slices to the smallest that holds it).
  epochs: training epochs (50 in the paper).
  batch_size: minibatch size (128).
  num_points: dataset size; batches per epoch = num_points // batch_size.
  shared_order: all experiments use one data order per epoch (drawn from
    `order_seed`, not from the chunk, so results still do not depend on which
    experiments share a chunk). Cheaper; runs are then correlated, not biased.
  order: how each epoch's permutation is drawn, "feistel" (a keyed bijection
    computed per step; default) or "sort" (exactly uniform, slower): see
    cubist.order.
  formulation: the layout, "dot", "unit" or "gemm" (see module docstring).
  weight_decay, momentum: PyTorch SGD settings (5e-4, 0.9).
  record_step_losses: also return the loss of every step (for parity tests).
  eval_block: data points per block in the final full-data evaluation.
  """

  width: int
  epochs: int = 50
  batch_size: int = data.BATCH_SIZE
  num_points: int = data.NUM_POINTS
  shared_order: bool = False
  order_seed: int = 0
  order: str = "feistel"
  formulation: str = "dot"
  weight_decay: float = 5e-4
  momentum: float = 0.9
  record_step_losses: bool = False
  eval_block: int = 2048

  @property
  def batches_per_epoch(self) -> int:
    return self.num_points // self.batch_size

  def validate(self) -> None:
    """One-line errors naming the field, before anything compiles."""
    if self.width < 1:
      raise ValueError(f"width={self.width} must be >= 1")
    if self.epochs < 1:
      raise ValueError(f"epochs={self.epochs} must be >= 1")
    if not 1 <= self.batch_size <= self.num_points:
      raise ValueError(f"batch_size={self.batch_size} must be in 1..{self.num_points}")
    if self.order not in order.ORDER_METHODS:
      raise ValueError(f"order={self.order!r} is unknown; known: {order.ORDER_METHODS}")
    if self.order == "feistel":
      order.feistel_domain(self.num_points)
    if self.formulation not in FORMULATIONS:
      raise ValueError(f"formulation={self.formulation!r} is unknown; known: {FORMULATIONS}")


class TrainInputs(NamedTuple):
  """One chunk of experiments; every field has a leading axis E.

  key: uint32 (E, 2) raw PRNG keys of the data orders (spec.run_keys), each experiment's own.
  lr: float32 (E,) base learning rates (> 0).
  schedule: int32 (E,) schedule ids (cubist.schedules.SCHEDULES).
  params: initial Params at width static.width, leading E.
  masks: bool Params at width static.width, leading E (the starting network).
  method_key: uint32 (E, 2) the method's own randomness; None for the plain method.
  hyper: the method's Hyper; None for the plain method.
  """

  key: jax.Array
  lr: jax.Array
  schedule: jax.Array
  params: Params
  masks: Params
  method_key: jax.Array | None = None
  hyper: Hyper | None = None


class TrainResult(NamedTuple):
  """Per-experiment results, leading axis E.

  params: final (masked) parameters; masks: final bool masks (the input masks
  for the plain method). accuracy, loss: (E,) on all data points.
  epoch_loss: (E, rounds * epochs) mean training loss per epoch.
  step_loss: (E, rounds * epochs * batches) per-step loss, or None unless recorded.
  failed: bool (E,) runs the reference would not have produced (Method.failed).
  """

  params: Params
  masks: Params
  accuracy: jax.Array
  loss: jax.Array
  epoch_loss: jax.Array
  step_loss: jax.Array | None
  failed: jax.Array


def _epoch_states(keys: jax.Array, epoch: jax.Array, static: TrainStatic):
  """Order state of one epoch per experiment (leading E), or one shared state."""
  make = functools.partial(
    order.epoch_state,
    num_points=static.num_points,
    batch_size=static.batch_size,
    method=static.order,
  )
  if static.shared_order:
    return make(order.epoch_key(jax.random.PRNGKey(static.order_seed), epoch))
  return jax.vmap(lambda key: make(order.epoch_key(key, epoch)))(keys)


def _shared_step_indices(
  state, step: jax.Array, experiments: int, static: TrainStatic
) -> jax.Array:
  """Data indices (E, B) of one optimiser step when all experiments share the order."""
  indices = order.step_indices(
    state, step, num_points=static.num_points, batch_size=static.batch_size, method=static.order
  )
  return jnp.broadcast_to(indices, (experiments, static.batch_size))


def _epoch_indices(states, static: TrainStatic) -> jax.Array:
  """Every batch of one epoch for every experiment, in the per-step layout:
  (batches, E, B) for "dot", (batches, B, E) for "unit" (order.batches_from_states)."""
  batches = order.batches_from_states(states, static.num_points, static.batch_size, static.order)
  if static.formulation == "unit":
    return jnp.transpose(batches, (1, 2, 0))
  return jnp.swapaxes(batches, 0, 1)


# --- Method hooks over the chunk ---------------------------------------------
#
# A hook is written for one experiment; `_vmap_hook` maps it over the chunk.
# Each argument is a tree in the layout (its experiment axis is the layout's),
# a row (leading E: keys, Hyper) or shared (data, the step counter).
TREE, ROW, SHARED = "tree", "row", None


def _vmap_hook(hook: Callable, formulation: str, static: MethodStatic, args, axes):
  """hook(*args, static=static) for every experiment; tree outputs come back in the layout."""
  tree_axis = layouts.experiment_axis(formulation)
  in_axes = tuple(tree_axis if axis == TREE else 0 if axis == ROW else None for axis in axes)
  return jax.vmap(functools.partial(hook, static=static), in_axes=in_axes, out_axes=tree_axis)(
    *args
  )


def _fold(keys: jax.Array, value) -> jax.Array:
  return jax.vmap(lambda key: jax.random.fold_in(key, value))(keys)


def _as_float(masks: Params) -> Params:
  return jax.tree.map(lambda m: m.astype(jnp.float32), masks)


def _as_bool(masks: Params) -> Params:
  return jax.tree.map(lambda m: m != 0, masks)


def _sgd(static: TrainStatic):
  """PyTorch SGD as optax: weight decay added before momentum (METHODS §C)."""
  return optax.chain(
    optax.add_decayed_weights(static.weight_decay), optax.trace(decay=static.momentum)
  )


def _momentum(opt_state) -> Params:
  """The momentum buffer inside `_sgd`'s state (chain of (decay, trace))."""
  return opt_state[1].trace


def _with_momentum(opt_state, momentum: Params):
  return (opt_state[0], optax.TraceState(trace=momentum))


class _Carry(NamedTuple):
  """The scan's state: the network (float 0/1 masks), optimiser states and aux parameters."""

  params: Params
  masks: Params
  opt_state: tuple
  aux: object
  aux_state: optax.TraceState


class _StepInput(NamedTuple):
  """What one step reads: its data rows in the layout (or, with a shared order, its
  index in the epoch), its global step, and whether the shared events fire."""

  batch: jax.Array
  step: jax.Array
  pre_event: jax.Array | None
  grad_event: jax.Array | None


def _train_chunk(
  x,
  y,
  inputs: TrainInputs,
  static: TrainStatic,
  method: Method,
  method_static: MethodStatic | None,
  events,
  until_round: int | None = None,
):
  """The whole run of one method for one chunk of experiments (leading axis E): a
  TrainResult; or, with `until_round`, only its rounds 1..until_round, each ended by
  `round_end`, returned as (start params, masks, failed) for the last round (at the
  inputs' width, leading axis E)."""
  formulation = static.formulation
  hook = functools.partial(_vmap_hook, formulation=formulation, static=method_static)
  hyper = inputs.hyper
  optimiser = _sgd(static)
  aux_optimiser = optax.trace(decay=static.momentum)
  masks = layouts.to_layout(_as_float(inputs.masks), formulation)
  params = jax.tree.map(jnp.multiply, layouts.to_layout(inputs.params, formulation), masks)
  if method.at_init is not None:
    params, new_masks = hook(
      method.at_init,
      args=(_fold(inputs.method_key, 0), params, _as_bool(masks), x, y, hyper),
      axes=(ROW, TREE, TREE, SHARED, SHARED, ROW),
    )
    masks = _as_float(new_masks)
    params = jax.tree.map(jnp.multiply, params, masks)
  start_params = params
  aux = ()
  if method.aux_init is not None:
    aux = hook(
      method.aux_init,
      args=(_fold(inputs.method_key, 1), params, _as_bool(masks), hyper),
      axes=(ROW, TREE, TREE, ROW),
    )
  step_keys = _fold(inputs.method_key, 2) if inputs.method_key is not None else None
  lrs = schedules.learning_rates(inputs.lr, inputs.schedule, static.epochs)  # (E, epochs)
  x_steps = x.T if formulation == "unit" else x  # columns for the per-unit gathers
  experiments = inputs.lr.shape[0]

  def losses_of(params, aux, masks, batch_x, batch_y, t):
    if method.loss is None:
      return layouts.losses(params, batch_x, batch_y, formulation)
    return hook(
      method.loss,
      args=(params, aux, _as_bool(masks), batch_x, batch_y, _fold(step_keys, t), t, hyper),
      axes=(TREE, TREE, TREE, ROW, ROW, ROW, SHARED, ROW),
    )

  value_and_grad = jax.value_and_grad(
    lambda trainable, masks, bx, by, t: (lambda l: (jnp.sum(l), l))(
      losses_of(trainable[0], trainable[1], masks, bx, by, t)
    ),
    has_aux=True,
  )

  def install(carry: _Carry, state: RunState) -> _Carry:
    """A hook's RunState back into the carry, parameters re-masked."""
    masks = _as_float(state.masks)
    return carry._replace(
      params=jax.tree.map(jnp.multiply, state.params, masks),
      masks=masks,
      opt_state=_with_momentum(carry.opt_state, state.momentum),
    )

  def run_state(carry: _Carry) -> RunState:
    return RunState(carry.params, _as_bool(carry.masks), _momentum(carry.opt_state))

  def step(carry: _Carry, step_input: _StepInput, lr, states):
    t = step_input.step
    if method.pre_event is not None:
      carry = jax.lax.cond(
        step_input.pre_event,
        lambda c: install(
          c,
          hook(
            method.pre_event,
            args=(t, _fold(step_keys, t), run_state(c), hyper),
            axes=(SHARED, ROW, TREE, ROW),
          ),
        ),
        lambda c: c,
        carry,
      )
    if static.shared_order:
      indices = _shared_step_indices(states, step_input.batch, experiments, static)
      if formulation == "unit":
        indices = indices.T  # (E, B) -> (B, E)
    else:
      indices = step_input.batch  # this step's rows of _epoch_indices, already in layout
    batch_x, batch_y = layouts.gather(x_steps, y, indices, formulation)
    (_, losses), (grads, aux_grads) = value_and_grad(
      (carry.params, carry.aux), carry.masks, batch_x, batch_y, t
    )

    def sgd(carry: _Carry) -> _Carry:
      updates, opt_state = optimiser.update(grads, carry.opt_state, carry.params)
      params = jax.tree.map(
        lambda p, u, m: (p - layouts.per_experiment(lr, u, formulation) * u) * m,
        carry.params,
        updates,
        carry.masks,
      )
      aux_updates, aux_state = aux_optimiser.update(aux_grads, carry.aux_state, carry.aux)
      aux = jax.tree.map(
        lambda a, u: a - layouts.per_experiment(lr, u, formulation) * u, carry.aux, aux_updates
      )
      return _Carry(params, carry.masks, opt_state, aux, aux_state)

    if method.grad_event is None:
      carry = sgd(carry)
    else:
      carry = jax.lax.cond(
        step_input.grad_event,
        lambda c: install(
          c,
          hook(
            method.grad_event,
            args=(t, _fold(step_keys, t), run_state(c), grads, hyper),
            axes=(SHARED, ROW, TREE, TREE, ROW),
          ),
        ),
        sgd,
        carry,
      )
    return carry, losses

  def epoch(carry: _Carry, epoch_inputs):
    epoch_index, lr, pre_events, grad_events = epoch_inputs
    states = _epoch_states(inputs.key, epoch_index, static)
    if static.shared_order:
      batches = jnp.arange(static.batches_per_epoch)
    else:
      batches = _epoch_indices(states, static)
      states = None  # not needed inside the steps
    steps = epoch_index * static.batches_per_epoch + jnp.arange(static.batches_per_epoch)
    return jax.lax.scan(
      lambda c, s: step(c, s, lr, states),
      carry,
      _StepInput(batches, steps, pre_events, grad_events),
    )

  pre_events, grad_events = (None, None) if events is None else (jnp.asarray(e) for e in events)

  def one_round(params, aux, masks):
    """A whole training run from `params` with fresh momentum and schedule."""
    params = jax.tree.map(jnp.multiply, params, masks)
    carry = _Carry(params, masks, optimiser.init(params), aux, aux_optimiser.init(aux))
    carry, losses = jax.lax.scan(
      epoch, carry, (jnp.arange(static.epochs), lrs.T, pre_events, grad_events)
    )
    return carry, losses  # losses (epochs, batches, E)

  if method.rounds == 1:
    carry, losses = one_round(params, aux, masks)
    params, aux, masks = carry.params, carry.aux, carry.masks
  else:

    def round_body(round_carry, round_index):
      masks, _, _ = round_carry
      carry, losses = one_round(start_params, aux, masks)
      next_masks = jax.lax.cond(
        round_index < method.rounds,
        lambda m: _as_float(
          hook(
            method.round_end,
            args=(round_index, carry.params, _as_bool(m), hyper),
            axes=(SHARED, TREE, TREE, ROW),
          )
        ),
        lambda m: m,
        masks,
      )
      return (next_masks, carry.params, carry.aux), (losses, masks)

    last = method.rounds if until_round is None else until_round
    (next_masks, params, aux), (losses, round_masks) = jax.lax.scan(
      round_body, (masks, start_params, aux), jnp.arange(1, last + 1)
    )
    if until_round is not None:  # the start of round until_round + 1, which trains a fixed mask
      return (
        layouts.from_layout(jax.tree.map(jnp.multiply, start_params, next_masks), formulation),
        layouts.from_layout(_as_bool(next_masks), formulation),
        _failed(hook, method, _as_bool(next_masks), hyper, experiments),
      )
    masks = jax.tree.map(lambda a: a[-1], round_masks)  # the last round's masks
    losses = losses.reshape((-1,) + losses.shape[2:])  # (rounds * epochs, batches, E)

  if method.finalize is not None:
    params, new_masks = hook(
      method.finalize, args=(params, aux, _as_bool(masks), hyper), axes=(TREE, TREE, TREE, ROW)
    )
    masks = _as_float(new_masks)
    params = jax.tree.map(jnp.multiply, params, masks)
  failed = _failed(hook, method, _as_bool(masks), hyper, experiments)
  accuracy, loss = layouts.evaluate(params, x, y, static.formulation, static.eval_block)
  epoch_loss = portable.mean(losses, axis=1).T  # (E, rounds * epochs)
  step_loss = None
  if static.record_step_losses:
    step_loss = losses.reshape(-1, losses.shape[-1]).T  # (E, rounds * epochs * batches)
  return TrainResult(
    layouts.from_layout(params, formulation),
    layouts.from_layout(_as_bool(masks), formulation),
    accuracy,
    loss,
    epoch_loss,
    step_loss,
    failed,
  )


def _failed(hook, method: Method, masks, hyper, experiments: int) -> jax.Array:
  """bool (E,): Method.failed of the final masks (all False without the hook)."""
  if method.failed is None:
    return jnp.zeros((experiments,), bool)
  return hook(method.failed, args=(masks, hyper), axes=(TREE, ROW))


def make_train(
  static: TrainStatic,
  method: Method = PLAIN_METHOD,
  method_static: MethodStatic | None = None,
  mesh: jax.sharding.Mesh | None = None,
  trace_guard: Callable | None = None,
  truncated: bool = False,
  until_round: int | None = None,
):
  """Compile-once trainer for a bucket: `train(x, y, inputs) -> TrainResult`.

  x: float32 (N, 2) inputs, y: float32 (N,) labels (replicated).
  inputs: TrainInputs with a leading experiment axis E (divisible by the number
    of devices in `mesh`, whose single axis shards the experiments).
  method, method_static: the training method and its static settings (the
    plain method needs none); their epochs and batches must agree with `static`.
  trace_guard: wraps the traced function, e.g. `functools.partial(
    chex.assert_max_traces, n=1)` in tests: one more trace (a new chunk shape,
    or a Python constant leaking into the program) then raises instead of
    silently recompiling per chunk.
  truncated: benchmarks only: train just the first static.epochs epochs of a
    method_static.epochs-long run (its events and counts as in the long run).
  until_round: the first stage of a method whose last round trains a fixed mask
    (Method.trains_last_round_fixed, e.g. LTH): train rounds 1..until_round only
    and return (params, masks, failed) as make_mask_step does, for the engine to
    train the last round's live units (cubist.compaction).
  """
  static.validate()
  if not method.is_plain:
    if method_static is None:
      raise ValueError(f"method {method.name!r} needs its MethodStatic")
    too_long = static.epochs > method_static.epochs
    if (
      static.batches_per_epoch != method_static.batches_per_epoch
      or too_long
      or (static.epochs != method_static.epochs and not truncated)
    ):
      raise ValueError(
        f"method_static epochs/batches ({method_static.epochs}, "
        f"{method_static.batches_per_epoch}) differ from the trainer's "
        f"({static.epochs}, {static.batches_per_epoch})"
      )
  if static.formulation not in method.layouts:
    raise ValueError(
      f"method {method.name!r} cannot train in the {static.formulation!r} "
      f"layout; it supports {method.layouts}"
    )
  if method.rounds > 1 and method.round_end is None:
    raise ValueError(f"method {method.name!r} has rounds={method.rounds} but no round_end")
  if static.record_step_losses and method.rounds > 1:
    raise ValueError("record_step_losses is for single-round methods")
  if until_round is not None and not (
    method.trains_last_round_fixed and 1 <= until_round < method.rounds
  ):
    raise ValueError(
      f"until_round={until_round} needs a method whose last round trains a fixed mask "
      f"and 1 <= until_round < rounds; {method.name!r} has rounds={method.rounds}"
    )
  events = None if method.is_plain else event_schedule(method, method_static, static.epochs)

  def train(x, y, inputs):
    if x.shape != (static.num_points, 2) or y.shape != (static.num_points,):
      raise ValueError(
        f"data of shapes {x.shape} and {y.shape} do not match num_points={static.num_points}"
      )
    if not method.is_plain and (inputs.method_key is None or inputs.hyper is None):
      raise ValueError(f"method {method.name!r} needs inputs.method_key and inputs.hyper")
    if static.formulation != "unit":
      return _train_chunk(x, y, inputs, static, method, method_static, events, until_round)
    experiments = inputs.lr.shape[0]
    pad = -experiments % UNIT_BLOCK
    padded = jax.tree.map(
      lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a, inputs
    )
    result = _train_chunk(x, y, padded, static, method, method_static, events, until_round)
    return jax.tree.map(lambda a: a[:experiments], result)

  if trace_guard is not None:
    train = trace_guard(train)

  if mesh is not None:
    spec = jax.sharding.PartitionSpec(EXPERIMENT_AXIS)
    replicated = jax.sharding.PartitionSpec()
    out_specs = TrainResult(
      spec, spec, spec, spec, spec, spec if static.record_step_losses else None, spec
    )
    if until_round is not None:
      out_specs = (spec, spec, spec)
    train = jax.shard_map(
      train,
      mesh=mesh,
      in_specs=(replicated, replicated, spec),
      out_specs=out_specs,
      check_vma=False,
    )
  return jax.jit(train)


def make_mask_step(method: Method, method_static: MethodStatic, mesh=None):
  """The first stage of a method that fixes its mask at initialisation: `at_init` alone.

  Returns `mask_step(x, y, inputs) -> (params, masks, failed)`, leading axis E,
  at the inputs' width: the (masked) weights training starts from, the bool
  masks it trains, and Method.failed of those masks. The engine then trains
  the live units only (cubist.compaction); `at_init` sees exactly what it sees
  inside the full trainer.
  """

  def mask_step(x, y, inputs: TrainInputs):
    masks = _as_float(inputs.masks)
    params = jax.tree.map(jnp.multiply, inputs.params, masks)
    params, masks = _vmap_hook(
      method.at_init,
      "dot",
      method_static,
      (_fold(inputs.method_key, 0), params, _as_bool(masks), x, y, inputs.hyper),
      (ROW, TREE, TREE, SHARED, SHARED, ROW),
    )
    params = jax.tree.map(jnp.multiply, params, _as_float(masks))
    if method.failed is None:
      failed = jnp.zeros(inputs.lr.shape, bool)
    else:
      failed = _vmap_hook(method.failed, "dot", method_static, (masks, inputs.hyper), (TREE, ROW))
    return params, _as_bool(masks), failed

  if mesh is not None:
    spec = jax.sharding.PartitionSpec(EXPERIMENT_AXIS)
    replicated = jax.sharding.PartitionSpec()
    mask_step = jax.shard_map(
      mask_step,
      mesh=mesh,
      in_specs=(replicated, replicated, spec),
      out_specs=(spec, spec, spec),
      check_vma=False,
    )
  return jax.jit(mask_step)


def make_decay(static: TrainStatic):
  """The weight-decay-only trajectory of parameters that get no gradient.

  Returns `decay(values, lr, schedule) -> values`: values float32 (E, K), lr
  (E,), schedule (E,) ids. Every step applies PyTorch SGD to a zero gradient
  exactly as `_train_chunk` does (`_sgd`, then p <- p - lr_e u), for
  static.epochs epochs of static.batches_per_epoch steps: what full-width
  training does to a masked-in weight or bias of a unit that cannot reach the
  output (cubist.compaction's dropped entries).
  """
  optimiser = _sgd(static)

  def decay(values, lr, schedule):
    lrs = schedules.learning_rates(lr, schedule, static.epochs)  # (E, epochs)

    def step(carry, _, lr):
      params, opt_state = carry
      updates, opt_state = optimiser.update(jnp.zeros_like(params), opt_state, params)
      return (params - lr[:, None] * updates, opt_state), None

    def epoch(carry, lr):
      return jax.lax.scan(
        lambda c, s: step(c, s, lr), carry, None, length=static.batches_per_epoch
      )[0], None

    (values, _), _ = jax.lax.scan(epoch, (values, optimiser.init(values)), lrs.T)
    return values

  return jax.jit(decay)


def experiment_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over all local devices (or the given ones) for the experiment axis."""
  devices = jax.local_devices() if devices is None else devices
  return jax.sharding.Mesh(devices, (EXPERIMENT_AXIS,))
