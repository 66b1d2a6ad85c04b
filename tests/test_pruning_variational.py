"""Tests of SoS variational dropout and L0 gates (search/pruning/variational.py), §F.3, §F.4."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cubist import data, mlp
from cubist import masks as mask_ops
from cubist.method import Hyper, MethodStatic
from cubist.mlp import Layer
from search.pruning import variational as V

LN11 = math.log(11.0)


# --------------------------------------------------------------------------- helpers


def _hyper(strength=0.0, threshold=3.0, width=4) -> Hyper:
  return Hyper(
    target_nnz=jnp.int32(0),
    lr=jnp.float32(0.1),
    strength=jnp.float32(strength),
    threshold=jnp.float32(threshold),
    counts=jnp.zeros(1, jnp.int32),
    num_weights=jnp.int32(mlp.num_weights(width)),
  )


def _dense_masks(width):
  return tuple(Layer(np.ones(ws, bool), np.ones(bs, bool)) for ws, bs in mlp.layer_shapes(width))


def _random_masks(seed, width, keep=0.6):
  """Random weight masks (every layer keeps at least one weight), biases by the rule."""
  rng = np.random.default_rng(seed)
  weights = []
  for ws, _ in mlp.layer_shapes(width):
    mask = rng.random(ws) < keep
    mask.flat[rng.integers(mask.size)] = True
    weights.append(mask)
  return tuple(
    Layer(np.asarray(l.weight), np.asarray(l.bias)) for l in mask_ops.with_bias_rule(weights)
  )


def _batch(seed, size=32):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(size, 2)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 2, size), jnp.float32)
  return x, y


STATIC = MethodStatic(epochs=1, batches_per_epoch=100, batch_size=32, num_points=3200)
WIDTH = 4  # most tests share one compiled program per method at this width and batch 32


def _evaluate_raw(name):
  """(params, aux, masks, x, y, key, step, hyper) -> (loss, (grad params, grad aux), finalize)."""
  method = V.METHODS[name]

  def evaluate(params, aux, masks, x, y, key, step, hyper):
    loss, grads = jax.value_and_grad(method.loss, argnums=(0, 1))(
      params, aux, masks, x, y, key, step, hyper, STATIC
    )
    return loss, grads, method.finalize(params, aux, masks, hyper, STATIC)

  return evaluate


@functools.cache
def _evaluate(name):
  return jax.jit(_evaluate_raw(name))


@functools.cache
def _aux_init(name):
  return jax.jit(
    lambda key, params, masks, hyper: V.METHODS[name].aux_init(key, params, masks, hyper, STATIC)
  )


def _spread(name, aux):
  """Move aux off its initial value by a position-dependent offset, the same at (row, col)
  whatever the width: VD log sigma^2 to about -3 +- 3 (log alpha inside the clip for most
  weights), L0 log alpha to about 0 +- 3 (gates closed, stochastic and open)."""
  shift = 7.0 if name == "vd" else -2.2

  def spread(a):
    rows, cols = np.indices(a.shape)
    return a + shift + 3.0 * np.sin(1.3 * rows + 2.1 * cols)

  return tuple(spread(a) for a in aux)


def _experiment(seed, name, width=WIDTH, keep=0.6):
  """Masked params, masks and spread aux for one experiment."""
  masks = _random_masks(seed, width, keep)
  params = mlp.apply_masks(mlp.init(jax.random.PRNGKey(seed), width), masks)
  aux = _spread(name, _aux_init(name)(jax.random.PRNGKey(seed + 100), params, masks, _hyper()))
  return params, masks, aux


# --------------------------------------------------------------------------- hand values


def test_vd_kl_hand_values():
  # k1 (1 - sigmoid(k2 + k3 la)) + 0.5 log(1 + e^-la), e.g. la = 0:
  # 0.63576 * (1 - sigmoid(1.8732)) + 0.5 ln 2 = 0.08468 + 0.34657.
  log_alpha = jnp.array([-8.0, 0.0, 3.0, 8.0])
  expected = [4.635899480334027, 0.4312389509903088, 0.025420043312364807, 1.6836934695541863e-4]
  np.testing.assert_allclose(V.vd_kl(log_alpha), expected, rtol=1e-5)
  dense = V.vd_kl(jnp.linspace(-8.0, 8.0, 101))
  assert np.all(np.diff(dense) < 0) and np.all(dense > 0)  # KL falls as the weight gets noisier


def test_vd_log_alpha_clipping():
  theta = jnp.array([1.0, 1e-3, 0.0])
  log_sigma2 = jnp.full(3, -10.0)
  log_alpha = V.vd_log_alpha(theta, log_sigma2)
  np.testing.assert_allclose(
    log_alpha, [-10.0, -10.0 - math.log(1e-6 + 1e-8), -10.0 - math.log(1e-8)], rtol=1e-6
  )
  np.testing.assert_allclose(V.vd_clip_log_alpha(log_alpha), [-8.0, 3.80556, 8.0], rtol=1e-5)
  # The training variance uses sigma^2 recomputed from the clipped log alpha:
  # theta = 1 -> e^-8 (not e^-10); theta = 1e-3 unclipped -> e^-10;
  # theta = 0 (active) -> e^8 * 1e-8.
  mean, variance = V.vd_layer_moments(
    jnp.ones((1, 1)), theta[:, None], log_sigma2[:, None], jnp.ones((3, 1), bool)
  )
  np.testing.assert_allclose(mean[0], theta, rtol=1e-7)
  np.testing.assert_allclose(
    variance[0], [math.exp(-8), math.exp(-10), math.exp(8) * 1e-8], rtol=1e-5
  )
  # The KL sum uses the clipped value too: one active weight at theta = 1 gives KL(-8).
  params = tuple(Layer(jnp.ones((1, 1)), jnp.zeros(1)) for _ in range(4))
  masks = tuple(Layer(jnp.array([[i == 0]]), jnp.ones(1, bool)) for i in range(4))
  kl = V.vd_kl_sum(params, tuple(jnp.full((1, 1), -10.0) for _ in range(4)), masks)
  np.testing.assert_allclose(kl, 4.635899480334027, rtol=1e-5)


def test_l0_test_gate_zero_exactly_below_minus_ln11():
  assert float(V.l0_test_gates(jnp.float32(-LN11 - 1e-3))) == 0.0
  assert float(V.l0_test_gates(jnp.float32(-LN11 + 1e-3))) > 0.0
  assert float(V.l0_test_gates(jnp.float32(LN11 + 1e-3))) == 1.0
  assert float(V.l0_test_gates(jnp.float32(LN11 - 1e-3))) < 1.0
  log_alpha = np.linspace(-8.0, 8.0, 4001, dtype=np.float32)
  gate = np.asarray(V.l0_test_gates(jnp.asarray(log_alpha)))
  assert gate.min() == 0.0 and gate.max() == 1.0
  clear = np.abs(np.abs(log_alpha) - LN11) > 1e-5  # away from the float boundary
  np.testing.assert_array_equal((gate == 0)[clear], (log_alpha <= -LN11)[clear])
  np.testing.assert_array_equal((gate == 1)[clear], (log_alpha >= LN11)[clear])
  np.testing.assert_allclose(V.l0_test_gates(jnp.float32(2.197)), 0.9799757434688033, rtol=1e-6)


def test_l0_penalty_hand_value():
  # sigmoid(la - beta log(-gamma/zeta)) = sigmoid(la + (2/3) ln 11).
  np.testing.assert_allclose(V.l0_expected_l0(jnp.float32(2.197)), 0.9780242920395975, rtol=1e-6)
  np.testing.assert_allclose(V.l0_expected_l0(jnp.float32(-2.0 / 3.0 * LN11)), 0.5, rtol=1e-6)
  log_alpha = tuple(jnp.full(l.weight.shape, 2.197) for l in _dense_masks(2))
  masks = _dense_masks(2)
  masks = (Layer(np.array([[True, False], [False, False]]), masks[0].bias), *masks[1:])
  # Active weights: 1 + 4 + 4 + 2 = 11.
  np.testing.assert_allclose(V.l0_penalty_sum(log_alpha, masks), 11 * 0.9780242920395975, rtol=1e-6)


def test_l0_train_gates_range_and_probabilities():
  uniform = jax.random.uniform(jax.random.PRNGKey(0), (200_000,))
  for log_alpha in (-3.0, -1.6, 0.0, 2.197):
    gate = np.asarray(V.l0_train_gates(jnp.float32(log_alpha), uniform))
    assert gate.min() >= 0.0 and gate.max() <= 1.0
    # P(z != 0) is exactly the expected-L0 penalty; P(z = 1) = sigmoid(la - beta ln 11).
    assert abs(np.mean(gate > 0) - float(V.l0_expected_l0(jnp.float32(log_alpha)))) < 0.005
    assert abs(np.mean(gate == 1) - 1 / (1 + math.exp(-(log_alpha - 2 / 3 * LN11)))) < 0.005
  # u = 1/2 makes the logistic noise 0: s = sigmoid(la / beta); la = 0 -> z = 0.5*1.2 - 0.1.
  np.testing.assert_allclose(V.l0_train_gates(jnp.float32(0.0), jnp.float32(0.5)), 0.5, rtol=1e-6)


def test_regulariser_ramp():
  static = MethodStatic(epochs=1, batches_per_epoch=100, ramp_begin=0.2, ramp_end=0.6)
  steps = jnp.array([0, 20, 30, 40, 60, 99])
  np.testing.assert_allclose(
    jax.vmap(lambda t: V.regulariser_ramp(t, static))(steps),
    [0.0, 0.0, 0.25, 0.5, 1.0, 1.0],
    rtol=1e-6,
  )
  step_function = MethodStatic(epochs=1, batches_per_epoch=100, ramp_begin=0.5, ramp_end=0.5)
  assert float(V.regulariser_ramp(50, step_function)) == 0.0
  assert float(V.regulariser_ramp(51, step_function)) == 1.0


@pytest.mark.parametrize("name", ["vd", "l0"])
def test_loss_is_bce_plus_ramped_regulariser(name):
  params, masks, aux = _experiment(1, name)
  key, (x, y) = jax.random.PRNGKey(3), _batch(0)
  forward = jax.jit(V.vd_noisy_logits if name == "vd" else V.l0_noisy_logits)
  bce = jnp.mean(optax.sigmoid_binary_cross_entropy(forward(params, aux, masks, x, key), y))
  regulariser = V.vd_kl_sum(params, aux, masks) if name == "vd" else V.l0_penalty_sum(aux, masks)
  assert float(regulariser) > 1.0
  for step, ramp in ((0, 0.0), (25, 0.5), (80, 1.0)):  # ramp 0 -> 0.5 of 100 steps
    for strength in (0.0, 0.3):
      loss = _evaluate(name)(params, aux, masks, x, y, key, jnp.int32(step), _hyper(strength))[0]
      np.testing.assert_allclose(loss, bce + strength * ramp * regulariser, rtol=1e-5)


def test_aux_init():
  width = 16
  params, masks = mlp.init(jax.random.PRNGKey(0), width), _dense_masks(width)
  key = jax.random.PRNGKey(5)
  vd_aux = V.METHODS["vd"].aux_init(key, params, masks, _hyper(), STATIC)
  assert all(
    np.all(np.asarray(a) == -10.0) and a.shape == l.weight.shape for a, l in zip(vd_aux, params)
  )
  l0_aux = jax.jit(V.l0_aux_init, static_argnums=4)(key, params, masks, _hyper(), STATIC)
  flat = np.concatenate([np.ravel(a) for a in l0_aux])
  assert flat.size == mlp.num_weights(width)
  assert abs(flat.mean() - 2.197) < 0.002 and 0.008 < flat.std() < 0.012


# ------------------------------------------------------------------ local reparameterisation


def test_local_reparameterisation_matches_sampled_weights():
  key_x, key_w, key_eps = jax.random.split(jax.random.PRNGKey(7), 3)
  hidden = jax.random.normal(key_x, (5, 3))
  theta = jnp.array([[0.5, -0.3, 0.8], [0.2, 0.6, -0.4], [-0.7, 0.1, 0.3], [0.4, -0.5, 0.9]])
  log_sigma2 = jnp.log(
    jnp.array([[0.04, 0.09, 0.01], [0.25, 0.02, 0.05], [0.1, 0.3, 0.06], [0.03, 0.07, 0.2]])
  )
  weight_mask = jnp.ones((4, 3), bool).at[1, 2].set(False)
  bias = jnp.array([0.1, -0.2, 0.3, 0.0])
  mean, variance = V.vd_layer_moments(hidden, theta, log_sigma2, weight_mask)

  # Monte Carlo with sampled weights w ~ N(theta, sigma^2) (masked weights 0).
  samples = 100_000
  noise = jax.random.normal(key_w, (samples, 4, 3))
  weights = (theta + jnp.exp(0.5 * log_sigma2) * noise) * weight_mask
  outputs = jnp.einsum("bi,soi->sbo", hidden, weights)
  mc_mean, mc_var = outputs.mean(0), outputs.var(0)
  np.testing.assert_allclose(mean, mc_mean, atol=float(5 * jnp.sqrt(mc_var.max() / samples)))
  np.testing.assert_allclose(variance, mc_var, rtol=0.03)

  # The noisy layer's own samples (fresh keys) have mean mu + b and variance v + 1e-8.
  layer, mask = Layer(theta, bias), Layer(weight_mask, jnp.ones(4, bool))
  keys = jax.random.split(key_eps, 10_000)
  draws = jax.jit(jax.vmap(lambda k: V.vd_noisy_layer(hidden, layer, log_sigma2, mask, k, 0)))(keys)
  np.testing.assert_allclose(
    draws.mean(0), mean + bias, atol=float(5 * jnp.sqrt(variance.max() / keys.shape[0]))
  )
  np.testing.assert_allclose(draws.var(0), variance + V.EPSILON, rtol=0.08)
  # Independent per example and unit: correlations across examples/units vanish.
  flat = (draws - draws.mean(0)).reshape(keys.shape[0], -1) / jnp.sqrt(variance.ravel())
  correlation = np.asarray(flat.T @ flat) / keys.shape[0]
  assert np.max(np.abs(correlation - np.diag(np.diag(correlation)))) < 0.05


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize("name", ["vd", "l0"])
def test_masked_weights_contribute_nothing(name):
  params, masks, aux = _experiment(3, name)
  key, step, hyper, (x, y) = jax.random.PRNGKey(11), jnp.int32(60), _hyper(0.2), _batch(1)
  # Garbage in the masked entries of weights, biases and aux.
  rng = np.random.default_rng(6)
  junk_params = tuple(
    Layer(
      jnp.where(m.weight, l.weight, rng.normal(size=l.weight.shape) * 5),
      jnp.where(m.bias, l.bias, rng.normal(size=l.bias.shape) * 5),
    )
    for l, m in zip(params, masks)
  )
  junk_aux = tuple(
    jnp.where(m.weight, a, rng.uniform(-20, 20, a.shape)) for a, m in zip(aux, masks)
  )

  loss, (grad_params, grad_aux), final = _evaluate(name)(params, aux, masks, x, y, key, step, hyper)
  junk_loss, (junk_grad_params, junk_grad_aux), junk_final = _evaluate(name)(
    junk_params, junk_aux, masks, x, y, key, step, hyper
  )
  assert float(loss) == float(junk_loss)
  for g, jg, m in zip(grad_params, junk_grad_params, masks):
    np.testing.assert_array_equal(np.where(m.weight, g.weight, 0), np.where(m.weight, jg.weight, 0))
  for g, jg, m in zip(grad_aux, junk_grad_aux, masks):
    assert np.all(np.asarray(g)[~m.weight] == 0) and np.all(np.asarray(jg)[~m.weight] == 0)
    np.testing.assert_array_equal(g, jg)
  assert any(np.any(np.asarray(g) != 0) for g in grad_aux)
  jax.tree.map(np.testing.assert_array_equal, final, junk_final)  # finalize ignores them too
  # The regulariser counts active weights only.
  if name == "vd":
    per_weight = [
      V.vd_kl(V.vd_clip_log_alpha(V.vd_log_alpha(l.weight, a))) for l, a in zip(params, aux)
    ]
    total = V.vd_kl_sum(junk_params, junk_aux, masks)
  else:
    per_weight = [V.l0_expected_l0(a) for a in aux]
    total = V.l0_penalty_sum(junk_aux, masks)
  expected = sum(float(np.sum(np.asarray(v)[m.weight])) for v, m in zip(per_weight, masks))
  np.testing.assert_allclose(total, expected, rtol=1e-5)


def _width2_fixture():
  """Width-2 network with every weight 0.5 (log theta^2 = log 0.25) and one masked W2 entry."""
  params = tuple(Layer(jnp.full(ws, 0.5), jnp.full(bs, 0.25)) for ws, bs in mlp.layer_shapes(2))
  masks = _dense_masks(2)
  masks = (masks[0], Layer(np.array([[True, False], [True, True]]), masks[1].bias), *masks[2:])
  return params, masks


def test_vd_finalize_threshold_and_bias_rule():
  params, masks = _width2_fixture()
  params = mlp.apply_masks(params, masks)
  log_theta2 = math.log(0.25)
  aux = [np.full(l.weight.shape, -10.0, np.float32) for l in params]  # log alpha ~ -8.6: keep
  aux[0][0, 0] = 2.5 + log_theta2  # log alpha 2.5: kept at tau 3, pruned at tau 2
  aux[2][:, 1] = 6.0 + log_theta2  # W3 column 1 pruned: hidden-2 unit 1 loses its outgoing edges
  aux[1][0, 1] = -30.0  # masked: stays pruned however small its log alpha
  aux = tuple(jnp.asarray(a) for a in aux)
  method = V.METHODS["vd"]

  final_params, final_masks = method.finalize(params, aux, masks, _hyper(threshold=3.0), STATIC)
  expected_weights = [
    np.ones((2, 2), bool),
    np.array([[True, False], [True, True]]),
    np.array([[True, False], [True, False]]),
    np.ones((1, 2), bool),
  ]
  for layer, mask, expected in zip(final_params, final_masks, expected_weights):
    np.testing.assert_array_equal(mask.weight, expected)
    np.testing.assert_array_equal(layer.weight, np.where(expected, 0.5, 0.0))  # theta, unscaled
  rule = mask_ops.bias_masks_from_weights([m.weight for m in final_masks])
  for mask, layer, expected in zip(final_masks, final_params, rule):
    np.testing.assert_array_equal(mask.bias, expected)
    np.testing.assert_array_equal(layer.bias, np.where(expected, 0.25, 0.0))
  np.testing.assert_array_equal(final_masks[1].bias, [True, False])  # the dead-out unit
  assert final_masks[1].bias.dtype == bool and final_masks[0].weight.dtype == bool

  _, tighter = method.finalize(params, aux, masks, _hyper(threshold=2.0), STATIC)
  np.testing.assert_array_equal(tighter[0].weight, [[False, True], [True, True]])
  assert int(mask_ops.weight_nnz(final_params)) == mlp.num_weights(2) - 1 - 2


def test_l0_finalize_gate_and_bias_rule():
  params, masks = _width2_fixture()
  params = mlp.apply_masks(params, masks)
  aux = [np.full(l.weight.shape, 2.197, np.float32) for l in params]  # z_hat = 0.98
  aux[0][1, 0] = -LN11 - 0.01  # just closed
  aux[0][1, 1] = 5.0  # fully open: z_hat = 1
  aux[2][:, 0] = -6.0  # W3 column 0 closed: hidden-2 unit 0 is dead-out
  aux = tuple(jnp.asarray(a) for a in aux)
  final_params, final_masks = V.METHODS["l0"].finalize(params, aux, masks, _hyper(), STATIC)
  gate = 0.9799757434688033
  np.testing.assert_allclose(
    final_params[0].weight, [[0.5 * gate, 0.5 * gate], [0.0, 0.5]], rtol=1e-6
  )
  np.testing.assert_allclose(
    final_params[1].weight, [[0.5 * gate, 0.0], [0.5 * gate] * 2], rtol=1e-6
  )
  np.testing.assert_array_equal(final_masks[2].weight, [[False, True], [False, True]])
  np.testing.assert_array_equal(final_masks[1].bias, [False, True])
  np.testing.assert_array_equal(final_params[1].bias, [0.0, 0.25])
  np.testing.assert_array_equal(final_masks[3].bias, [True])
  # Deterministic forward equals the plain MLP on the finalized weights.
  x, _ = _batch(2)
  np.testing.assert_allclose(
    V.l0_deterministic_logits(params, aux, masks, x), mlp.apply(final_params, x), rtol=1e-6
  )


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize("name", ["vd", "l0"])
def test_jit_vmap_over_three_experiments_matches_one_at_a_time(name):
  evaluate = _evaluate_raw(name)
  experiments = [_experiment(20 + e, name) for e in range(3)]
  params, masks, aux = (list(part) for part in zip(*experiments))
  keys = [jax.random.PRNGKey(40 + e) for e in range(3)]
  hypers = [_hyper(strength=s, threshold=t) for s, t in ((0.0, 3.0), (0.05, 1.0), (0.5, -2.0))]
  x, y = _batch(3)
  step = jnp.int32(70)

  def run(key, params, masks, hyper):
    init_key, loss_key = jax.random.split(key)
    aux = _spread(name, V.METHODS[name].aux_init(init_key, params, masks, hyper, STATIC))
    return aux, evaluate(params, aux, masks, x, y, loss_key, step, hyper)

  def run_one(key, params, masks, hyper):
    init_key, loss_key = jax.random.split(key)
    aux = _spread(name, _aux_init(name)(init_key, params, masks, hyper))
    return aux, _evaluate(name)(params, aux, masks, x, y, loss_key, step, hyper)

  stack = lambda trees: jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
  batched = jax.jit(jax.vmap(run))(stack(keys), stack(params), stack(masks), stack(hypers))
  single = stack([run_one(*args) for args in zip(keys, params, masks, hypers)])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), batched, single)
  counts = jax.vmap(mask_ops.weight_nnz)(batched[1][2][0])
  assert len(set(np.asarray(counts).tolist())) == 3  # the three experiments really differ


@pytest.mark.parametrize("name", ["vd", "l0"])
def test_padding_to_a_wider_bucket_changes_nothing(name):
  """A width-4 network zero-padded into width 6 sees the same noise, loss and result."""
  params, masks, _ = _experiment(8, name, keep=0.8)
  wide_params = mlp.pad_params(params, 6)
  wide_masks = tuple(
    Layer(l.weight.astype(bool), l.bias.astype(bool))
    for l in mlp.pad_params(
      tuple(Layer(jnp.asarray(m.weight), jnp.asarray(m.bias)) for m in masks), 6
    )
  )
  key, step, hyper, (x, y) = jax.random.PRNGKey(10), jnp.int32(90), _hyper(0.1, 1.0), _batch(4)

  def run(params, masks):
    aux = _spread(name, _aux_init(name)(key, params, masks, hyper))
    return aux, _evaluate(name)(params, aux, masks, x, y, key, step, hyper)

  (aux, (loss, grads, final)), (wide_aux, (wide_loss, wide_grads, wide_final)) = (
    run(params, masks),
    run(wide_params, wide_masks),
  )
  corner = lambda a, like: a[tuple(slice(0, n) for n in like.shape)]
  np.testing.assert_allclose(loss, wide_loss, rtol=1e-6)
  for a, b in zip(aux, wide_aux):
    np.testing.assert_array_equal(a, corner(b, a))
  for a, b in zip(jax.tree.leaves((grads, final)), jax.tree.leaves((wide_grads, wide_final))):
    np.testing.assert_allclose(a, corner(b, a), rtol=1e-5, atol=1e-7)
  assert int(mask_ops.weight_nnz(final[0])) == int(mask_ops.weight_nnz(wide_final[0]))
  assert 0 < int(mask_ops.weight_nnz(final[0])) < int(mask_ops.weight_nnz(params))


# --------------------------------------------------------------------------- training


def _train_counts(name, strengths, steps=2000, lr=0.05, width=8, seed=0):
  """Finalized weight counts after a short SGD run per strength (vmapped over strengths)."""
  x_all, y_all = data.cubist_spiral()
  x, y = jnp.asarray(x_all[::10]), jnp.asarray(y_all[::10])  # 4,999 points, both arms
  static = MethodStatic(epochs=1, batches_per_epoch=steps, batch_size=128, num_points=x.shape[0])
  method = V.METHODS[name]
  masks = _dense_masks(width)
  params0 = mlp.init(jax.random.PRNGKey(seed), width)
  param_opt = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(lr, momentum=0.9))
  aux_opt = optax.sgd(lr, momentum=0.9)
  key = jax.random.PRNGKey(seed + 1)

  def one(strength):
    hyper = _hyper(strength, threshold=V.VD_DEFAULT_THRESHOLD, width=width)
    aux0 = method.aux_init(key, params0, masks, hyper, static)

    def step(state, t):
      params, aux, param_state, aux_state = state
      step_key = jax.random.fold_in(key, t)
      rows = jax.random.randint(jax.random.fold_in(step_key, 0), (128,), 0, x.shape[0])
      grads = jax.grad(method.loss, argnums=(0, 1))(
        params, aux, masks, x[rows], y[rows], jax.random.fold_in(step_key, 1), t, hyper, static
      )
      updates, param_state = param_opt.update(grads[0], param_state, params)
      params = mlp.apply_masks(optax.apply_updates(params, updates), masks)
      updates, aux_state = aux_opt.update(grads[1], aux_state, aux)
      return (params, optax.apply_updates(aux, updates), param_state, aux_state), None

    state = (params0, aux0, param_opt.init(params0), aux_opt.init(aux0))
    (params, aux, _, _), _ = jax.lax.scan(step, state, jnp.arange(steps))
    final_params, _ = method.finalize(params, aux, masks, hyper, static)
    return mask_ops.weight_nnz(final_params)

  return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(strengths, jnp.float32)))


@pytest.mark.parametrize("name,strengths", [("vd", (0.0, 1e-3, 3e-3)), ("l0", (0.0, 0.05, 0.1))])
def test_sparsity_grows_with_strength(name, strengths):
  counts = _train_counts(name, strengths)
  dense = mlp.num_weights(8)
  print(name, dict(zip(strengths, counts.tolist())))
  assert counts[0] >= 0.9 * dense  # no regulariser: (almost) nothing is pruned
  assert np.all(np.diff(counts) <= 0), counts
  assert counts[-1] <= counts[0] // 2, counts


# --------------------------------------------------------------------------- registry and grid


def test_registry_and_proposed_grid():
  for name in ("vd", "l0"):
    method = V.METHODS[name]
    assert method.name == name and method.uses_strength
    assert method.aux_init and method.loss and method.finalize
    assert method.at_init is None and method.pre_event is None and method.grad_event is None
  np.testing.assert_allclose(V.proposed_strengths("vd", (1.0, 10.0)), [1 / 49_982, 10 / 49_982])
  grid = V.proposed_grid()
  np.testing.assert_allclose(grid["vd"]["threshold"], [0.5 * i for i in range(11)])
  for name in ("vd", "l0"):
    strengths = grid[name]["strength"]
    np.testing.assert_allclose(strengths, np.asarray(V.PROPOSED_C[name]) / 49_982)
    np.testing.assert_allclose(
      np.diff(np.log10(strengths * 49_982)), 0.5 if name == "vd" else 0.25, rtol=1e-9
    )  # a log grid
  np.testing.assert_allclose(grid["vd"]["strength"][[0, -1]] * 49_982, [0.01, 1000])
  np.testing.assert_allclose(grid["l0"]["strength"][[0, -1]] * 49_982, [10, 10_000])
