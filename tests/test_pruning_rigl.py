"""Tests of RigL with the ERK initial mask (search/pruning/rigl.py), METHODS §E.9, §H 10.

Hooks are called directly on hand-set weights, gradients and momenta (no training).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cubist import masks as M
from cubist import mlp
from cubist.method import Hyper, MethodStatic, RunState
from cubist.mlp import Layer
from search.pruning import counts as C
from search.pruning import rigl as R

STATIC = MethodStatic()  # 19,500 steps: updates at t = 99, 199, ..., 14,599
EVENTS = 146


# --------------------------------------------------------------------------- helpers


def _hyper(f, n, static=STATIC, counts=None):
  counts = R.RIGL.host_counts(f, n, static) if counts is None else counts
  return Hyper(
    target_nnz=jnp.int32(f),
    lr=jnp.float32(0.1),
    strength=jnp.float32(0.0),
    threshold=jnp.float32(3.0),
    counts=jnp.asarray(counts, jnp.int32),
    num_weights=jnp.int32(n),
  )


def _dense(width, full_width=None):
  full_width = full_width or width
  return jax.tree.map(jnp.asarray, M.structured_masks((width,) * 3, full_width))


def _random_tree(seed, width, low=0.1, high=1.0):
  """A Params-shaped tree of distinct-ish nonzero values with random signs."""
  rng = np.random.default_rng(seed)

  def draw(shape):
    return jnp.asarray(rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape), jnp.float32)

  return tuple(Layer(draw(ws), draw(bs)) for ws, bs in mlp.layer_shapes(width))


@functools.cache
def _at_init():
  return jax.jit(R.rigl_at_init, static_argnames="static")


def _grad_event_positional(step, key, params, masks, trace, grads, hyper, static):
  """The hook with its RunState spelled out (params, masks, momentum)."""
  return R.rigl_grad_event(step, key, RunState(params, masks, trace), grads, hyper, static=static)


@functools.cache
def _grad_event():
  return jax.jit(_grad_event_positional, static_argnames="static")


def _init(seed, width, f, static=STATIC, key=0):
  params = _random_tree(seed, width)
  return _at_init()(
    jax.random.key(key),
    params,
    _dense(width),
    None,
    None,
    _hyper(f, mlp.num_weights(width), static),
    static=static,
  )


def _weight_counts(masks):
  return [int(np.sum(m.weight)) for m in masks]


def _assert_rule(params, masks):
  rule = M.with_bias_rule([m.weight for m in masks])
  for mask, expected, layer in zip(masks, rule, params):
    np.testing.assert_array_equal(np.asarray(mask.bias), np.asarray(expected.bias))
    assert np.all(np.asarray(layer.weight)[~np.asarray(mask.weight, bool)] == 0)
    assert np.all(np.asarray(layer.bias)[~np.asarray(mask.bias, bool)] == 0)


def _stack(trees):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _unstack(tree, index):
  return jax.tree.map(lambda leaf: leaf[index], tree)


# --------------------------------------------------------------------------- schedule and counts


def test_registry_schedule_and_host_counts():
  assert set(R.METHODS) == {"rigl"}
  steps = R.RIGL.grad_event_steps(STATIC)
  assert steps.shape == (19_500,) and steps.sum() == EVENTS
  assert np.all((np.flatnonzero(steps) + 1) % 100 == 0)
  assert steps[99] and steps[14_599] and not steps[14_699] and not steps[0]
  counts = R.RIGL.host_counts(20, 27, STATIC)  # w = 3: the classifier is dense
  assert counts.shape == (4 + 4 * EVENTS,)
  assert counts[:4].tolist() == [6, 6, 6, 3]
  drops = counts[4:].reshape(EVENTS, 4)
  assert np.all(drops[:, 3] == 0)
  alpha = C.rigl_drop_fractions(19_500)
  assert drops[:, 1].tolist() == [int(6 * a) for a in alpha]
  exact = R.RIGL.host_counts(20, 560, MethodStatic(count_mode="exact"))
  assert exact[:4].sum() == 20


# --------------------------------------------------------------------------- at_init (ERK)


@pytest.mark.parametrize(
  "width, f, layer_counts",
  [(16, 20, [4, 7, 7, 4]), (16, 15, [3, 5, 5, 3]), (6, 36, [8, 12, 12, 6]), (3, 15, [4, 5, 5, 3])],
)
def test_at_init_draws_the_erk_mask(width, f, layer_counts):
  params, masks = _init(0, width, f)
  assert _weight_counts(masks) == layer_counts  # totals 22, 16, 38, 17 (§E.9)
  _assert_rule(params, masks)
  # Surviving weights keep their initial values.
  start = _random_tree(0, width)
  for layer, mask, before in zip(params, masks, start):
    kept = np.asarray(mask.weight, bool)
    np.testing.assert_array_equal(np.asarray(layer.weight)[kept], np.asarray(before.weight)[kept])


def test_at_init_is_random_per_key_and_exact_mode_hits_f():
  _, first = _init(0, 16, 20, key=1)
  _, second = _init(0, 16, 20, key=2)
  assert any(
    not np.array_equal(np.asarray(a.weight), np.asarray(b.weight)) for a, b in zip(first, second)
  )
  _, exact = _init(0, 16, 20, static=MethodStatic(count_mode="exact"))
  assert sum(_weight_counts(exact)) == 20


def test_at_init_stays_inside_a_padded_network():
  params = mlp.pad_params(_random_tree(0, 3), 16)
  region = _dense(3, 16)
  new_params, masks = _at_init()(
    jax.random.key(0), params, region, None, None, _hyper(15, 27), static=STATIC
  )
  assert _weight_counts(masks) == [4, 5, 5, 3]
  for mask, valid in zip(masks, region):
    assert not np.any(np.asarray(mask.weight) & ~np.asarray(valid.weight))
    assert not np.any(np.asarray(mask.bias) & ~np.asarray(valid.bias))
  _assert_rule(new_params, masks)


# --------------------------------------------------------------------------- grad_event


def _hand_case():
  """Width 2: W1 dense, W2 and W3 drop one each at the first update, W4 dense."""
  masks = (
    Layer(jnp.ones((2, 2), bool), jnp.ones(2, bool)),
    Layer(jnp.asarray([[True, True], [True, False]]), jnp.asarray([True, False])),
    Layer(jnp.asarray([[True, False], [True, False]]), jnp.asarray([True, False])),
    Layer(jnp.asarray([[True, False]]), jnp.ones(1, bool)),
  )
  params = (
    Layer(jnp.asarray([[0.4, -0.6], [0.2, 0.9]]), jnp.asarray([0.1, 0.2])),
    Layer(jnp.asarray([[0.5, -0.1], [0.3, 0.0]]), jnp.asarray([0.3, 0.0])),
    Layer(jnp.asarray([[0.5, 0.0], [-0.05, 0.0]]), jnp.asarray([0.6, 0.0])),
    Layer(jnp.asarray([[0.7, 0.0]]), jnp.asarray([0.8])),
  )
  grads = (
    Layer(jnp.full((2, 2), 5.0), jnp.zeros(2)),
    Layer(jnp.asarray([[0.0, 0.9], [0.2, 0.4]]), jnp.zeros(2)),
    Layer(jnp.asarray([[0.1, 0.8], [0.3, 0.2]]), jnp.zeros(2)),
    Layer(jnp.asarray([[0.0, 0.5]]), jnp.zeros(1)),
  )
  # Stale momentum everywhere, masked entries included (the trainer masks no gradients).
  trace = jax.tree.map(lambda x: jnp.ones_like(x, jnp.float32), params)
  counts = np.zeros(4 + 4 * EVENTS, np.int32)
  counts[:4] = [4, 3, 2, 1]
  counts[4:8] = [0, 1, 1, 0]  # n_drop at the first update (t = 99)
  return params, masks, grads, trace, _hyper(3, 14, counts=counts)


def test_grad_event_hand_case():
  params, masks, grads, trace, hyper = _hand_case()
  new_params, new_masks, new_trace = _grad_event()(
    jnp.int32(99), jax.random.key(0), params, masks, trace, grads, hyper, static=STATIC
  )
  as_np = lambda tree: [(np.asarray(l.weight).tolist(), np.asarray(l.bias).tolist()) for l in tree]
  # W2: drop -0.1 (smallest |W|), then regrow it (largest |grad| 0.9 among non-kept): it keeps
  # its value and momentum, and the mask is unchanged. W3: drop -0.05, grow (0, 1) (|grad| 0.8)
  # as a new connection at 0 with zero momentum; unit 1 of hidden layer 2 gains an outgoing
  # weight, so its bias mask turns on, with value 0 and zero momentum. W1, W4 (n_drop 0) unchanged.
  assert as_np(new_masks) == [
    ([[True, True], [True, True]], [True, True]),
    ([[True, True], [True, False]], [True, True]),
    ([[True, True], [False, False]], [True, False]),
    ([[True, False]], [True]),
  ]
  assert _weight_counts(new_masks) == _weight_counts(masks)
  np.testing.assert_array_equal(
    np.asarray(new_params[1].weight), np.asarray([[0.5, -0.1], [0.3, 0.0]], np.float32)
  )
  np.testing.assert_array_equal(
    np.asarray(new_params[2].weight), np.asarray([[0.5, 0.0], [0.0, 0.0]], np.float32)
  )
  np.testing.assert_array_equal(np.asarray(new_params[1].bias), np.asarray([0.3, 0.0], np.float32))
  assert as_np(new_trace) == [
    ([[1.0, 1.0], [1.0, 1.0]], [1.0, 1.0]),
    ([[1.0, 1.0], [1.0, 0.0]], [1.0, 0.0]),
    ([[1.0, 0.0], [0.0, 0.0]], [1.0, 0.0]),
    ([[1.0, 0.0]], [1.0]),
  ]
  for before, after in ((params[0], new_params[0]), (params[3], new_params[3])):
    for a, b in zip(before, after):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _numpy_rigl_layer(weight, mask, grad, valid, n_drop):
  """Reference drop/grow for one layer with distinct scores: (new mask, grown-new entries)."""
  n_keep = int(mask.sum()) - n_drop
  drop_score = np.where(mask, np.abs(weight), -np.inf).ravel()
  kept = np.zeros(mask.size, bool)
  kept[np.argsort(-drop_score, kind="stable")[:n_keep]] = True
  grow_score = np.where(valid.ravel() & ~kept, np.abs(grad).ravel(), -np.inf)
  grown = np.zeros(mask.size, bool)
  grown[np.argsort(-grow_score, kind="stable")[:n_drop]] = True
  new = (kept | grown).reshape(mask.shape)
  return new, grown.reshape(mask.shape) & ~mask


@pytest.mark.parametrize("width, f, padded_to", [(16, 20, None), (6, 36, None), (4, 15, 16)])
def test_grad_event_conserves_counts_and_zeroes_new_momentum(width, f, padded_to):
  n = mlp.num_weights(width)
  params, masks = _init(1, width, f)
  if padded_to:
    params, masks = mlp.pad_params(params, padded_to), mlp.pad_params(masks, padded_to)
    masks = jax.tree.map(lambda m: m.astype(bool), masks)
  full = padded_to or width
  # Large gradients in the padding must not be grown there.
  grads = jax.tree.map(lambda x: x * 10.0, mlp.pad_params(_random_tree(2, width), full))
  grads = jax.tree.map(lambda g: jnp.where(g == 0, 50.0, g), grads)
  trace = _random_tree(3, full, low=1.0, high=2.0)  # nonzero everywhere (stale where masked)
  hyper = _hyper(f, n)
  step = 4 * 100 - 1  # the fourth update
  new_params, new_masks, new_trace = _grad_event()(
    jnp.int32(step), jax.random.key(0), params, masks, trace, grads, hyper, static=STATIC
  )
  drops = np.asarray(hyper.counts[4:]).reshape(EVENTS, 4)[3]
  region = _dense(width, full)
  assert _weight_counts(new_masks) == _weight_counts(masks)
  assert sum(drops) > 0
  for index in range(4):
    old = np.asarray(masks[index].weight, bool)
    new = np.asarray(new_masks[index].weight, bool)
    valid = np.asarray(region[index].weight, bool)
    expected, new_connections = _numpy_rigl_layer(
      np.asarray(params[index].weight),
      old,
      np.asarray(grads[index].weight),
      valid,
      int(drops[index]),
    )
    np.testing.assert_array_equal(new, expected)
    assert not np.any(new & ~valid)
    weight, momentum = np.asarray(new_params[index].weight), np.asarray(new_trace[index].weight)
    stayed = new & old
    np.testing.assert_array_equal(weight[stayed], np.asarray(params[index].weight)[stayed])
    np.testing.assert_array_equal(momentum[stayed], np.asarray(trace[index].weight)[stayed])
    assert np.all(weight[new_connections] == 0) and np.all(momentum[new_connections] == 0)
    assert np.all(weight[~new] == 0) and np.all(momentum[~new] == 0)
    old_bias = np.asarray(masks[index].bias, bool)
    new_bias = np.asarray(new_masks[index].bias, bool)
    bias_momentum = np.asarray(new_trace[index].bias)
    assert np.all(bias_momentum[new_bias & ~old_bias] == 0)
    np.testing.assert_array_equal(
      bias_momentum[new_bias & old_bias], np.asarray(trace[index].bias)[new_bias & old_bias]
    )
  _assert_rule(new_params, new_masks)


def test_grad_event_leaves_dense_layers_untouched():
  """w = 3, f = 20: ERK makes the classifier dense (density 1), RigL never updates it."""
  params, masks = _init(4, 3, 20)
  assert _weight_counts(masks)[3] == 3
  grads = _random_tree(5, 3)
  trace = _random_tree(6, 3)
  new_params, new_masks, new_trace = _grad_event()(
    jnp.int32(99), jax.random.key(0), params, masks, trace, grads, _hyper(20, 27), static=STATIC
  )
  for tree_a, tree_b in ((params, new_params), (masks, new_masks), (trace, new_trace)):
    np.testing.assert_array_equal(np.asarray(tree_a[3].weight), np.asarray(tree_b[3].weight))


# --------------------------------------------------------------------------- vmap


def test_jit_vmap_equals_one_at_a_time():
  targets = (15, 20, 25)
  keys = jax.random.split(jax.random.key(7), 3)
  params = [_random_tree(seed, 16) for seed in range(3)]
  dense = [_dense(16)] * 3
  hypers = [_hyper(f, 560) for f in targets]
  init = jax.jit(jax.vmap(lambda key, p, m, h: R.rigl_at_init(key, p, m, None, None, h, STATIC)))
  batched_params, batched_masks = init(keys, _stack(params), _stack(dense), _stack(hypers))
  grads = [_random_tree(10 + seed, 16) for seed in range(3)]
  traces = [_random_tree(20 + seed, 16) for seed in range(3)]
  event = jax.jit(
    jax.vmap(
      functools.partial(_grad_event_positional, static=STATIC), in_axes=(None, 0, 0, 0, 0, 0, 0)
    )
  )
  batched = event(
    jnp.int32(199),
    keys,
    batched_params,
    batched_masks,
    _stack(traces),
    _stack(grads),
    _stack(hypers),
  )
  for index in range(3):
    one_params, one_masks = _at_init()(
      keys[index], params[index], dense[index], None, None, hypers[index], static=STATIC
    )
    for a, b in zip(
      jax.tree.leaves((one_params, one_masks)),
      jax.tree.leaves(_unstack((batched_params, batched_masks), index)),
    ):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    expected = _grad_event()(
      jnp.int32(199),
      keys[index],
      one_params,
      one_masks,
      traces[index],
      grads[index],
      hypers[index],
      static=STATIC,
    )
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(_unstack(batched, index))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
