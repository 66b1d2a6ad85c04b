"""Tests of IMP, LTH and SoS magnitude/random pruning (search/pruning/magnitude.py).

METHODS §E.1, §E.2, §F.1, §F.2.

Hooks are called directly on hand-set weights at tiny widths (no training).
"""

from __future__ import annotations

import dataclasses
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
from search.pruning import magnitude as G
from search.pruning import select

STATIC = MethodStatic()  # 50 x 390 = 19,500 steps
SOS_STATIC = MethodStatic(
  epochs=1, batches_per_epoch=1000, sos_begin=0.1, sos_end=0.5, sos_freq=0.1
)  # SoS events at 100, 200, ..., 500
# Width 2 (N = 14), flat magnitudes (x 0.01) in W1..W4 row-major order.
W2_MAGNITUDES = np.array([5, 12, 3, 9, 1, 14, 7, 2, 11, 6, 13, 4, 10, 8]) / 100


# --------------------------------------------------------------------------- helpers


def _params_from_flat(flat, width, biases=0.5):
  """Params of width `width` with weights from a flat W1..W4 vector and constant biases."""
  out, start = [], 0
  for weight_shape, bias_shape in mlp.layer_shapes(width):
    size = int(np.prod(weight_shape))
    out.append(
      Layer(
        jnp.asarray(flat[start : start + size], jnp.float32).reshape(weight_shape),
        jnp.full(bias_shape, biases, jnp.float32),
      )
    )
    start += size
  return tuple(out)


def _hand_params():
  signs = np.where(np.arange(14) % 2 == 0, 1.0, -1.0)
  return _params_from_flat(signs * W2_MAGNITUDES, 2)


def _random_params(seed, width):
  """Distinct nonzero magnitudes (no ties), random signs."""
  rng = np.random.default_rng(seed)
  n = mlp.num_weights(width)
  flat = (rng.permutation(n) + 1.0) / n * rng.choice([-1.0, 1.0], n)
  return _params_from_flat(flat, width, biases=0.3)


def _dense(width, full_width=None):
  full_width = full_width or width
  return jax.tree.map(jnp.asarray, M.structured_masks((width,) * 3, full_width))


def _ones_like(params):
  return jax.tree.map(jnp.ones_like, params)


def _hyper(method, f, n, static):
  return Hyper(
    target_nnz=jnp.int32(f),
    lr=jnp.float32(0.1),
    strength=jnp.float32(0.0),
    threshold=jnp.float32(3.0),
    counts=jnp.asarray(method.host_counts(f, n, static), jnp.int32),
    num_weights=jnp.int32(n),
  )


def _flat_keep(masks):
  return np.concatenate([np.asarray(m.weight, bool).ravel() for m in masks])


def _kept_indices(masks):
  return set(np.flatnonzero(_flat_keep(masks)).tolist())


def _weight_counts(masks):
  return [int(np.sum(m.weight)) for m in masks]


def _assert_consistent(params, masks, trace=None):
  """Bias rule holds, params and momentum are zero outside the masks."""
  rule = M.with_bias_rule([m.weight for m in masks])
  for mask, expected in zip(masks, rule):
    np.testing.assert_array_equal(np.asarray(mask.bias), np.asarray(expected.bias))
  for tree in (params, trace) if trace is not None else (params,):
    for layer, mask in zip(tree, masks):
      assert np.all(np.asarray(layer.weight)[~np.asarray(mask.weight, bool)] == 0)
      assert np.all(np.asarray(layer.bias)[~np.asarray(mask.bias, bool)] == 0)


@functools.cache
@functools.cache
def _jit(hook):
  """One jitted wrapper per hook, shared by the tests (compiles are the slow part).

  Event hooks take their RunState spelled out, (step, key, params, masks, momentum, ...).
  """
  if hook in (G.imp_pre_event, G.magnitude_pre_event, G.random_pre_event):

    def positional(step, key, params, masks, trace, hyper, static):
      return hook(step, key, RunState(params, masks, trace), hyper, static=static)

    return jax.jit(positional, static_argnames="static")
  return jax.jit(hook, static_argnames="static")


def _stack(trees):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _unstack(tree, index):
  return jax.tree.map(lambda leaf: leaf[index], tree)


# --------------------------------------------------------------------------- registry


def test_registry_and_event_schedules():
  assert set(G.METHODS) == {"imp", "lth", "magnitude", "random"}
  imp_steps = G.IMP.pre_event_steps(STATIC)
  assert imp_steps.shape == (19_500,) and imp_steps.sum() == 201
  assert imp_steps[97] and not imp_steps[0] and imp_steps[19_497]
  assert G.LTH.rounds == 5 and G.LTH.round_end is not None and G.LTH.pre_event is None
  sos_steps = G.MAGNITUDE.pre_event_steps(SOS_STATIC)
  assert np.flatnonzero(sos_steps).tolist() == [100, 200, 300, 400, 500]
  assert np.array_equal(G.RANDOM.pre_event_steps(SOS_STATIC), sos_steps)
  assert G.IMP.host_counts(20, 560, STATIC).shape == (201,)
  assert G.LTH.host_counts(20, 560, STATIC).tolist() == [243, 105, 46, 20]
  assert G.MAGNITUDE.host_counts(11, 44, SOS_STATIC).shape == (20,)
  global_static = dataclasses.replace(SOS_STATIC, sos_scope="global")
  assert G.MAGNITUDE.host_counts(11, 44, global_static).shape == (5,)
  with pytest.raises(ValueError, match="count_mode"):
    G.IMP.host_counts(20, 560, MethodStatic(count_mode="approximate"))


def test_weight_region_is_the_top_left_block():
  params = mlp.pad_params(_hand_params(), 4)
  region = jax.jit(select.weight_region)(params, jnp.int32(14))
  dense = _dense(2, 4)
  for got, mask in zip(region, dense):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(mask.weight))
  assert all(np.all(np.asarray(r)) for r in jax.jit(select.weight_region)(_hand_params(), 14))


# --------------------------------------------------------------------------- IMP


def test_imp_event_keeps_k_minus_1_reference_and_k_exact():
  step = 150 * 97
  hyper = _hyper(G.IMP, 3, 14, STATIC)
  assert int(hyper.counts[149]) == 3  # K_150 = int(3 + 11 (1 - 150/199)^3)
  params, masks, trace = _hand_params(), _dense(2), _ones_like(_hand_params())
  new_params, new_masks, new_trace = _jit(G.imp_pre_event)(
    jnp.int32(step), jax.random.key(0), params, masks, trace, hyper, static=STATIC
  )
  # Reference: strict threshold keeps K - 1 = 2, the magnitudes 0.14 (W2[0,1]) and 0.13 (W3[1,0]).
  assert _kept_indices(new_masks) == {5, 10}
  assert [np.asarray(m.bias).tolist() for m in new_masks] == [
    [False, True],
    [True, False],
    [False, False],
    [True],
  ]
  _assert_consistent(new_params, new_masks, new_trace)
  np.testing.assert_array_equal(
    np.asarray(new_params[1].weight), np.asarray([[0.0, -0.14], [0.0, 0.0]], np.float32)
  )
  assert float(new_params[0].bias[1]) == 0.5 and float(new_trace[0].bias[1]) == 1.0
  # Exact: exactly K = 3, adding 0.12 (W1[0,1]).
  exact = MethodStatic(count_mode="exact")
  _, exact_masks, _ = _jit(G.imp_pre_event)(
    jnp.int32(step),
    jax.random.key(0),
    params,
    masks,
    trace,
    _hyper(G.IMP, 3, 14, exact),
    static=exact,
  )
  assert _kept_indices(exact_masks) == {1, 5, 10}


def test_imp_padded_network_selects_like_the_unpadded_one():
  step = 120 * 97
  hyper = _hyper(G.IMP, 3, 14, STATIC)
  expected = _jit(G.imp_pre_event)(
    jnp.int32(step),
    jax.random.key(0),
    _hand_params(),
    _dense(2),
    _ones_like(_hand_params()),
    hyper,
    static=STATIC,
  )
  padded = mlp.pad_params(_hand_params(), 4)
  got = _jit(G.imp_pre_event)(
    jnp.int32(step),
    jax.random.key(0),
    padded,
    _dense(2, 4),
    _ones_like(padded),
    hyper,
    static=STATIC,
  )
  for a, b in zip(expected[:2], got[:2]):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(mlp.slice_params(b, 2))):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert (
    sum(_weight_counts(got[1])) == sum(_weight_counts(expected[1])) == int(hyper.counts[119]) - 1
  )


@pytest.mark.parametrize(
  "static, final",
  [(STATIC, 1), (MethodStatic(clean=True), 2), (MethodStatic(count_mode="exact"), 3)],
)
def test_imp_all_201_events_end_at_f_minus_2_reference(static, final):
  """f = 3, N = 14: reference f - 2 (strict + overshoot), clean f - 1, exact f (§E.1, §H 1)."""
  hyper = _hyper(G.IMP, 3, 14, static)
  hook = _jit(G.imp_pre_event)
  params, masks, trace = _hand_params(), _dense(2), _ones_like(_hand_params())
  kept = []
  for step in np.flatnonzero(G.IMP.pre_event_steps(static)):
    params, masks, trace = hook(
      jnp.int32(step), jax.random.key(0), params, masks, trace, hyper, static=static
    )
    kept.append(sum(_weight_counts(masks)))
  strict = static.count_mode == "reference"
  assert kept[-1] == final == C.kept_after_events(np.asarray(hyper.counts), 14, strict)
  assert all(a >= b for a, b in zip(kept, kept[1:]))
  # With no training the survivors are the largest magnitudes.
  order = np.argsort(-W2_MAGNITUDES)
  assert _kept_indices(masks) == set(order[:final].tolist())
  _assert_consistent(params, masks, trace)


# --------------------------------------------------------------------------- LTH


def test_lth_round_end_keeps_k_r_minus_1_of_the_trained_weights():
  hyper = _hyper(G.LTH, 3, 14, STATIC)
  targets = C.lth_counts(3, 14).tolist()
  assert np.asarray(hyper.counts).tolist() == targets
  order = np.argsort(-W2_MAGNITUDES)
  masks = _dense(2)
  for round_index in range(1, 5):
    masks = _jit(G.lth_round_end)(
      jnp.int32(round_index), _hand_params(), masks, hyper, static=STATIC
    )
    assert _kept_indices(masks) == set(order[: targets[round_index - 1] - 1].tolist())
  _assert_consistent(mlp.apply_masks(_hand_params(), masks), masks)
  exact = MethodStatic(count_mode="exact")
  exact_masks = _jit(G.lth_round_end)(
    jnp.int32(2), _hand_params(), _dense(2), _hyper(G.LTH, 3, 14, exact), static=exact
  )
  assert _kept_indices(exact_masks) == set(order[: targets[1]].tolist())


def test_lth_ignores_values_at_masked_entries():
  """The trained weights are masked first: a big value under a zero mask bit stays out."""
  masks = _dense(2)
  masks = (masks[0], Layer(jnp.asarray([[True, False], [True, True]]), masks[1].bias)) + masks[2:]
  trained = _hand_params()
  trained = (trained[0], Layer(trained[1].weight.at[0, 1].set(9.0), trained[1].bias)) + trained[2:]
  got = G.lth_round_end(1, trained, masks, _hyper(G.LTH, 3, 14, STATIC), STATIC)
  assert 5 not in _kept_indices(got)


def test_lth_n44_f15_ends_at_f_minus_2():
  """int(44 (15/44)^1) = 14, strict keeps 13 = f - 2 (§E.2); exact keeps 15."""
  for static, final in ((STATIC, 13), (MethodStatic(count_mode="exact"), 15)):
    hyper = _hyper(G.LTH, 15, 44, static)
    masks = _dense(4)
    trained = _random_params(3, 4)
    for round_index in range(1, 5):
      masks = _jit(G.lth_round_end)(jnp.int32(round_index), trained, masks, hyper, static=static)
    assert sum(_weight_counts(masks)) == final


# --------------------------------------------------------------------------- SoS magnitude


def test_histogram_threshold_hand_case():
  threshold = jax.jit(G.histogram_threshold, static_argnames="nbins")
  values = jnp.asarray([1.0, 2.0, 3.0, 4.0])
  valid = jnp.ones(4, bool)
  # 4 bins over [0, 4]: bins 1, 2, 3, 3 -> cdf 0, .25, .5, 1 -> 2 bins below 0.5 -> 2/4 * 4.
  assert float(threshold(values, valid, jnp.float32(0.5), nbins=4)) == 2.0
  # An invalid (padding) entry changes neither the max nor the counts.
  padded = jnp.asarray([1.0, 2.0, 3.0, 4.0, 100.0])
  assert float(threshold(padded, jnp.arange(5) < 4, jnp.float32(0.5), nbins=4)) == 2.0
  # Zero sparsity: threshold 0; all-zero tensor: threshold 0.
  assert float(threshold(values, valid, jnp.float32(0.0), nbins=256)) == 0.0
  assert float(threshold(jnp.zeros(4), valid, jnp.float32(0.5), nbins=256)) == 0.0


def _numpy_histogram_threshold(values, sparsity, nbins=256):
  """tf.contrib.model_pruning's _update_mask threshold, restated in numpy float32."""
  values = np.abs(np.asarray(values, np.float32))
  max_value = values.max()
  bins = np.clip(np.floor(np.float32(nbins) * (values / max_value)), 0, nbins - 1).astype(int)
  histogram = np.bincount(bins, minlength=nbins).astype(np.float32)
  cdf = np.cumsum(histogram) / histogram.sum()
  return np.float32(np.sum(cdf < np.float32(sparsity))) / np.float32(nbins) * max_value


def test_sos_device_sparsity_matches_the_host_schedule():
  hyper = _hyper(G.MAGNITUDE, 4, 14, SOS_STATIC)
  for step in (0, 100, 250, 300, 500, 700):
    got = float(G.sos_sparsity(jnp.int32(step), hyper, SOS_STATIC))
    assert got == pytest.approx(C.sos_sparsity(step, 1 - 4 / 14, 100, 500), abs=1e-6)


def test_magnitude_layer_scope_reference_hand_case():
  """Final event (s = s_f = 5/7): per tensor, keep |w| > left edge of the quantile's bin."""
  layer_magnitudes = [
    [0.2, 0.45, 0.7, 1.0],
    [0.1, 0.225, 0.35, 0.5],
    [0.16, 0.36, 0.56, 0.8],
    [0.3, 0.6],
  ]
  flat = np.concatenate(layer_magnitudes) * np.where(np.arange(14) % 3 == 0, -1.0, 1.0)
  params = _params_from_flat(flat, 2)
  hyper = _hyper(G.MAGNITUDE, 4, 14, SOS_STATIC)
  new_params, masks, trace = _jit(G.magnitude_pre_event)(
    jnp.int32(500),
    jax.random.key(0),
    params,
    _dense(2),
    _ones_like(params),
    hyper,
    static=SOS_STATIC,
  )
  # 4 entries in bins 51, 115, 179, 255: cdf .25/.5/.75/1, 179 bins below 5/7, threshold
  # 179/256 max -> the top two survive; W4 (2 entries): 255/256 max -> the top one.
  assert _kept_indices(masks) == {2, 3, 6, 7, 10, 11, 13}
  _assert_consistent(new_params, masks, trace)
  for values, layer, mask in zip(layer_magnitudes, params, masks):
    threshold = _numpy_histogram_threshold(values, 1 - 4 / 14)
    np.testing.assert_array_equal(
      np.abs(np.asarray(layer.weight)) > threshold, np.asarray(mask.weight)
    )


def test_magnitude_global_scope_reference_matches_numpy():
  static = dataclasses.replace(SOS_STATIC, sos_scope="global")
  params = _random_params(5, 4)
  hyper = _hyper(G.MAGNITUDE, 11, 44, static)
  _, masks, _ = _jit(G.magnitude_pre_event)(
    jnp.int32(300), jax.random.key(0), params, _dense(4), _ones_like(params), hyper, static=static
  )
  flat = np.concatenate([np.asarray(layer.weight).ravel() for layer in params])
  sparsity = np.float32(1 - 11 / 44) * np.float32(1 - 0.5**3)
  np.testing.assert_array_equal(
    _flat_keep(masks), np.abs(flat) > _numpy_histogram_threshold(flat, sparsity)
  )


def test_magnitude_pruned_zeros_stay_pruned_over_events():
  params, masks, trace = _random_params(6, 4), _dense(4), _ones_like(_random_params(6, 4))
  hyper = _hyper(G.MAGNITUDE, 11, 44, SOS_STATIC)
  previous = _flat_keep(masks)
  for step in (100, 200, 300, 400, 500):
    params, masks, trace = _jit(G.magnitude_pre_event)(
      jnp.int32(step), jax.random.key(0), params, masks, trace, hyper, static=SOS_STATIC
    )
    current = _flat_keep(masks)
    assert np.all(current <= previous)
    previous = current
  _assert_consistent(params, masks, trace)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_exact_keeps_exactly_the_count_with_ties(scope):
  static = dataclasses.replace(SOS_STATIC, count_mode="exact", sos_scope=scope)
  params = _params_from_flat(np.full(44, 0.5), 4)  # every magnitude ties
  hyper = _hyper(G.MAGNITUDE, 11, 44, static)
  table = np.asarray(hyper.counts).reshape(5, -1)
  masks, trace = _dense(4), _ones_like(params)
  for event, step in enumerate((100, 200, 300, 400, 500)):
    params, masks, trace = _jit(G.magnitude_pre_event)(
      jnp.int32(step), jax.random.key(0), params, masks, trace, hyper, static=static
    )
    if scope == "layer":
      assert _weight_counts(masks) == table[event].tolist()
    else:
      assert sum(_weight_counts(masks)) == table[event, 0]
  if scope == "layer":
    # Ties go to the lower index: the first entries of every tensor.
    for mask, count in zip(masks, table[-1]):
      assert np.flatnonzero(np.asarray(mask.weight).ravel()).tolist() == list(range(count))
  else:
    assert sorted(_kept_indices(masks)) == list(range(11))
  _assert_consistent(params, masks, trace)


def test_magnitude_exact_layer_scope_keeps_the_largest_per_tensor():
  static = dataclasses.replace(SOS_STATIC, count_mode="exact")
  hyper = _hyper(G.MAGNITUDE, 4, 14, static)
  assert np.asarray(hyper.counts).reshape(5, 4)[-1].tolist() == [1, 1, 1, 1]
  _, masks, _ = _jit(G.magnitude_pre_event)(
    jnp.int32(500),
    jax.random.key(0),
    _hand_params(),
    _dense(2),
    _ones_like(_hand_params()),
    hyper,
    static=static,
  )
  # Largest per tensor: W1 0.12 (1), W2 0.14 (5), W3 0.13 (10), W4 0.10 (12).
  assert _kept_indices(masks) == {1, 5, 10, 12}


# --------------------------------------------------------------------------- SoS random


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_random_is_cumulative_and_keeps_the_counts(scope):
  static = dataclasses.replace(SOS_STATIC, sos_scope=scope)
  hyper = _hyper(G.RANDOM, 11, 44, static)
  table = np.asarray(hyper.counts).reshape(5, -1)
  params, masks, trace = _random_params(7, 4), _dense(4), _ones_like(_random_params(7, 4))
  previous = _flat_keep(masks)
  for event, step in enumerate((100, 200, 300, 400, 500)):
    params, masks, trace = _jit(G.random_pre_event)(
      jnp.int32(step), jax.random.key(11), params, masks, trace, hyper, static=static
    )
    current = _flat_keep(masks)
    assert np.all(current <= previous)  # pruned weights stay pruned
    previous = current
    if scope == "layer":
      assert _weight_counts(masks) == table[event].tolist()
    else:
      assert sum(_weight_counts(masks)) == table[event, 0]
  _assert_consistent(params, masks, trace)
  # Another key draws other survivors.
  _, other, _ = _jit(G.random_pre_event)(
    jnp.int32(300), jax.random.key(12), _random_params(7, 4), _dense(4), trace, hyper, static=static
  )
  _, same, _ = _jit(G.random_pre_event)(
    jnp.int32(300), jax.random.key(11), _random_params(7, 4), _dense(4), trace, hyper, static=static
  )
  assert not np.array_equal(_flat_keep(other), _flat_keep(same))


def test_random_stays_inside_the_real_network_when_padded():
  hyper = _hyper(G.RANDOM, 11, 44, SOS_STATIC)
  params = mlp.pad_params(_random_params(8, 4), 6)
  _, masks, _ = _jit(G.random_pre_event)(
    jnp.int32(100),
    jax.random.key(0),
    params,
    _dense(4, 6),
    _ones_like(params),
    hyper,
    static=SOS_STATIC,
  )
  for mask, region in zip(masks, _dense(4, 6)):
    assert not np.any(np.asarray(mask.weight) & ~np.asarray(region.weight))
  assert _weight_counts(masks) == np.asarray(hyper.counts).reshape(5, 4)[0].tolist()


# --------------------------------------------------------------------------- vmap


EVENT_CASES = [
  ("imp", STATIC, 120 * 97),
  ("imp", MethodStatic(count_mode="exact"), 199 * 97),
  ("magnitude", SOS_STATIC, 300),
  ("magnitude", dataclasses.replace(SOS_STATIC, count_mode="exact"), 400),
  ("magnitude", dataclasses.replace(SOS_STATIC, sos_scope="global"), 200),
  ("random", SOS_STATIC, 500),
]


@pytest.mark.parametrize("name, static, step", EVENT_CASES)
def test_pre_event_jit_vmap_equals_one_at_a_time(name, static, step):
  method = G.METHODS[name]
  targets = (11, 15, 20)
  params = [_random_params(seed, 4) for seed in range(3)]
  masks = [_dense(4)] * 3
  traces = [jax.tree.map(lambda x, s=seed: x * (s + 2.0), p) for seed, p in enumerate(params)]
  hypers = [_hyper(method, f, 44, static) for f in targets]
  keys = jax.random.split(jax.random.key(3), 3)
  batched = jax.jit(
    jax.vmap(functools.partial(method.pre_event, static=static), in_axes=(None, 0, 0, 0))
  )(jnp.int32(step), keys, RunState(_stack(params), _stack(masks), _stack(traces)), _stack(hypers))
  one = _jit(method.pre_event)
  for index in range(3):
    expected = one(
      jnp.int32(step),
      keys[index],
      params[index],
      masks[index],
      traces[index],
      hypers[index],
      static=static,
    )
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(_unstack(batched, index))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_lth_round_end_jit_vmap_equals_one_at_a_time():
  targets = (11, 15, 20)
  params = _stack([_random_params(seed, 4) for seed in range(3)])
  hypers = _stack([_hyper(G.LTH, f, 44, STATIC) for f in targets])
  masks = _stack([_dense(4)] * 3)
  batched = jax.jit(
    jax.vmap(functools.partial(G.lth_round_end, static=STATIC), in_axes=(None, 0, 0, 0))
  )(jnp.int32(2), params, masks, hypers)
  for index in range(3):
    expected = G.lth_round_end(
      2, _unstack(params, index), _unstack(masks, index), _unstack(hypers, index), STATIC
    )
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(_unstack(batched, index))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert sum(_weight_counts(expected)) == C.lth_counts(targets[index], 44)[1] - 1
