"""The one trainer (cubist/train.py) with toy methods: the method contract's hooks.

Width 4, 2 epochs of 8 steps on a 1,024-point subset. What they pin down, in
both layouts ("dot" and "unit") where the hooks allow:
- a method without hooks trains exactly like the plain method;
- pre-events fire at the start of exactly the scheduled steps, grad-events
  replace the SGD update on theirs, rounds rewind to the start parameters;
- aux parameters are trained and finalize sees them ("dot" only: own loss);
- `shared_order` works with every hook;
- results do not depend on the chunk (position and size);
- no recompilation across chunks of one shape.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cubist import data, layouts, mlp, train
from cubist.method import Hyper, Method, MethodStatic, RunState
from cubist.mlp import Layer

WIDTH = 4
EPOCHS = 2
NUM_POINTS = 1_024
BATCHES = NUM_POINTS // 128
CHUNK = 4
LAYOUTS = ("dot", "unit")


@pytest.fixture(scope="module")
def subset():
  x, y = data.cubist_spiral()
  rows = np.sort(np.random.default_rng(3).choice(x.shape[0], NUM_POINTS, replace=False))
  return jnp.asarray(x[rows]), jnp.asarray(y[rows])


def _statics(layout="dot", **overrides):
  static = train.TrainStatic(
    width=WIDTH, epochs=EPOCHS, num_points=NUM_POINTS, formulation=layout, **overrides
  )
  method_static = MethodStatic(epochs=EPOCHS, batches_per_epoch=BATCHES, num_points=NUM_POINTS)
  return static, method_static


def _inputs(count: int, seed: int = 0) -> train.TrainInputs:
  keys = jax.random.split(jax.random.PRNGKey(seed), count)
  params = jax.vmap(lambda k: mlp.init(k, WIDTH))(keys)
  masks = jax.tree.map(lambda a: jnp.ones(a.shape, bool), params)
  hyper = Hyper(
    target_nnz=jnp.full((count,), 10, jnp.int32),
    lr=jnp.full((count,), 0.1),
    strength=jnp.zeros((count,)),
    threshold=jnp.full((count,), 3.0),
    counts=jnp.full((count, 1), 10, jnp.int32),
    num_weights=jnp.full((count,), mlp.num_weights(WIDTH), jnp.int32),
  )
  order_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
  method_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys)
  lr = jnp.linspace(0.05, 0.1, count).astype(jnp.float32)
  schedule = jnp.arange(count, dtype=jnp.int32) % 3
  return train.TrainInputs(order_keys, lr, schedule, params, masks, method_keys, hyper)


def _take(tree, index):
  return jax.tree.map(lambda a: a[index : index + 1], tree)


def _plain_inputs(inputs: train.TrainInputs) -> train.TrainInputs:
  return inputs._replace(method_key=None, hyper=None)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_method_without_hooks_trains_like_the_plain_method(subset, layout):
  static, method_static = _statics(layout)
  inputs = _inputs(CHUNK)
  result = train.make_train(static, Method("hookless"), method_static)(*subset, inputs)
  reference = train.make_train(static)(*subset, _plain_inputs(inputs))
  chex.assert_trees_all_equal(result.params, reference.params)
  np.testing.assert_array_equal(result.accuracy, reference.accuracy)
  np.testing.assert_array_equal(result.epoch_loss, reference.epoch_loss)
  assert not np.any(result.failed)


def _prune_largest_first_layer(step, key, state, hyper, static):
  """Toy pre-event: remove W1's largest |weight|."""
  flat = jnp.abs(state.params[0].weight).ravel()
  keep = (jnp.arange(flat.size) != jnp.argmax(flat)).reshape(state.params[0].weight.shape)
  masks = (Layer(state.masks[0].weight & keep, state.masks[0].bias),) + tuple(state.masks[1:])
  momentum = (Layer(state.momentum[0].weight * keep, state.momentum[0].bias),) + tuple(
    state.momentum[1:]
  )
  return RunState(state.params, masks, momentum)


def _fire_at(steps, static):
  flags = np.zeros(static.total_steps, bool)
  flags[list(steps)] = True
  return flags


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shared_order", (False, True))
def test_pre_events_fire_on_scheduled_steps_only(subset, layout, shared_order):
  static, method_static = _statics(layout, shared_order=shared_order)
  fire_at = (3, 9, 10)
  method = Method(
    "toy_pre",
    pre_event=_prune_largest_first_layer,
    pre_event_steps=functools.partial(_fire_at, fire_at),
  )
  result = train.make_train(static, method, method_static)(*subset, _inputs(CHUNK))
  removed = (~np.asarray(result.masks[0].weight)).sum(axis=(1, 2))
  np.testing.assert_array_equal(removed, len(fire_at))
  assert np.all(np.asarray(result.params[0].weight)[~np.asarray(result.masks[0].weight)] == 0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_grad_event_replaces_the_update(subset, layout):
  static, method_static = _statics(layout)

  def freeze(step, key, state, grads, hyper, static):
    return state

  method = Method(
    "toy_freeze", grad_event=freeze, grad_event_steps=lambda s: np.ones(s.total_steps, bool)
  )
  inputs = _inputs(CHUNK)
  result = train.make_train(static, method, method_static)(*subset, inputs)
  # Every update was replaced by a no-op: the parameters never moved.
  chex.assert_trees_all_equal(result.params, inputs.params)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rounds_rewind_and_use_round_end_masks(subset, layout):
  static, method_static = _statics(layout)

  def round_end(round_index, trained, masks, hyper, static):
    # Keep W2 entries only where the round index allows, a visible function of the round.
    keep = jnp.arange(masks[1].weight.size).reshape(masks[1].weight.shape) >= round_index
    return (masks[0], Layer(masks[1].weight & keep, masks[1].bias)) + tuple(masks[2:])

  method = Method("toy_rounds", rounds=3, round_end=round_end)
  inputs = _inputs(CHUNK)
  result = train.make_train(static, method, method_static)(*subset, inputs)
  # After rounds 1 and 2, entries 0 and 1 of W2 are pruned; round 3 trains with them off.
  w2 = np.asarray(result.masks[1].weight).reshape(CHUNK, -1)
  assert not w2[:, :2].any() and w2[:, 2:].all()
  assert result.epoch_loss.shape == (CHUNK, 3 * EPOCHS)
  # The last round started from the saved start: training it alone with those masks agrees.
  alone = train.make_train(static)(*subset, _plain_inputs(inputs)._replace(masks=result.masks))
  chex.assert_trees_all_close(result.params, alone.params, rtol=1e-5, atol=1e-6)


def _toy_aux_method():
  def aux_init(key, params, masks, hyper, static):
    return jnp.zeros(())

  def loss(params, aux, masks, batch_x, batch_y, key, step, hyper, static):
    logits = mlp.apply(params, batch_x)
    return layouts.bce_with_logits(logits, batch_y).mean() + (aux - 1.0) ** 2

  def finalize(params, aux, masks, hyper, static):
    # Drop W4 entirely when aux has moved towards 1 (it must have).
    keep = aux < 0.5
    return params, (tuple(masks[:3]) + (Layer(masks[3].weight & keep, masks[3].bias),))

  return Method("toy_aux", aux_init=aux_init, loss=loss, finalize=finalize)


def test_aux_is_trained_and_finalize_sees_it(subset):
  static, method_static = _statics()
  result = train.make_train(static, _toy_aux_method(), method_static)(*subset, _inputs(CHUNK))
  assert not np.asarray(result.masks[3].weight).any()
  assert np.all(np.asarray(result.params[3].weight) == 0)


def test_a_method_with_its_own_loss_is_refused_in_the_unit_layout():
  static, method_static = _statics("unit")
  with pytest.raises(ValueError, match="cannot train in the 'unit' layout"):
    train.make_train(static, _toy_aux_method(), method_static)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_chunk_independence_and_no_recompilation(subset, layout):
  static, method_static = _statics(layout)
  method = Method(
    "toy_pre",
    pre_event=_prune_largest_first_layer,
    pre_event_steps=lambda s: np.arange(s.total_steps) % 5 == 4,
  )
  chex.clear_trace_counter()
  guarded = train.make_train(
    static, method, method_static, trace_guard=functools.partial(chex.assert_max_traces, n=1)
  )
  inputs = _inputs(CHUNK)
  together = guarded(*subset, inputs)
  other = guarded(*subset, _inputs(CHUNK, seed=5))  # same shape: no new trace
  assert other.accuracy.shape == (CHUNK,)
  alone = train.make_train(static, method, method_static)(*subset, _take(inputs, 2))
  chex.assert_trees_all_equal(_take(together.params, 2), alone.params)
  np.testing.assert_array_equal(together.accuracy[2:3], alone.accuracy)


def test_mismatched_epochs_is_one_line_error():
  static, _ = _statics()
  with pytest.raises(ValueError, match="epochs/batches"):
    train.make_train(
      static,
      Method("toy_pre", pre_event=_prune_largest_first_layer),
      MethodStatic(epochs=3, batches_per_epoch=BATCHES),
    )
