"""State of Sparsity's regularisation methods: sparse variational dropout and L0 gates.

Two methods that learn sparsity through an extra trainable parameter per
weight and a regulariser, rather than by ranking weights (METHODS §F.3, §F.4;
paper (2), State of Sparsity = SoS):

- "vd", sparse variational dropout (Molchanov et al. 2017). Every weight is a
  Gaussian N(theta, sigma^2); `aux` holds log sigma^2. Training uses the local
  reparameterisation trick and the approximate KL of the log-uniform prior;
  evaluation keeps theta where log alpha = log sigma^2 - log theta^2 < tau.
- "l0", L0 regularisation with hard-concrete gates (Louizos et al. 2018). Every
  weight is theta * z with a stochastic gate z in [0, 1]; `aux` holds log alpha.
  Training samples the gates and penalises the expected number of open gates;
  evaluation uses the deterministic test-time gate, exactly 0 for
  log alpha <= -ln 11.

Why: SoS found these the strongest learned-sparsity baselines next to gradual
magnitude pruning; they place each model at an *emergent* sparsity set by the
regulariser weight (and, for VD, tau), which is then read off and frontiered
(§F.6). Hyper.strength is VD's beta_max or L0's lambda; Hyper.threshold is VD's
tau (L0 ignores it).

Contract (search/pruning/base.py): every function works on ONE experiment and is
jittable and vmappable; the trainer vmaps them over the experiment axis and
trains params (SGD, weight decay 5e-4, momentum 0.9, re-masked after every
update) and aux (same SGD, no weight decay) on

    loss = mean_batch BCE(stochastic forward) + lambda_t * regulariser,
    lambda_t = strength * min(max(t - t0, 0) / (t1 - t0), 1)     (§F.3 linear ramp)

with t the 0-based global step and t0/t1 = MethodStatic.ramp_begin/ramp_end
fractions of total_steps.

Shapes (width w): params and masks are `Params` (cubist.mlp) with weights
(out, in); aux is a 4-tuple of float32 arrays shaped like the four weights
((w, 2), (w, w), (w, w), (1, w)): VD log sigma^2 or L0 log alpha. Biases carry
no aux and stay deterministic. x is (B, 2), y (B,), logits (B,).

Choices METHODS leaves open (also commented where they are made):
- Masked (inactive) weights contribute nothing: they are zeroed in the forward
  (theta, VD variance, L0 gated weight), excluded from the regulariser sums, and
  their aux gets no gradient, so it stays at its initial value.
- Random draws do not depend on padding: a network zero-padded into a wider
  bucket sees exactly the same noise on its own units (ARCHITECTURE principles
  4, 5; tested). JAX's (partitionable, the default) threefry gives element k of
  a draw from its flat index k alone, so a draw is padding-invariant when the
  padded axis is the major one: VD's noise is one (units, B) draw per layer;
  L0's per-weight draws (units, inputs) pad both axes, so each output unit
  folds its index into the layer's key and draws a 1-D vector over inputs.
- Bias gradients use the trainer's fixed-order `pairwise_sum`, as the plain
  trainer does, so results do not depend on the chunk size.
- Ramp: t0 = round(ramp_begin * total_steps), t1 = round(ramp_end * total_steps);
  a zero-length ramp (t1 <= t0) uses a length of 1 step, i.e. full strength from
  t0 + 1 (what SoS's "duration 1" runs do).
- L0 init N(2.197, 0.01) reads 0.01 as the standard deviation (SoS's
  `random_normal_initializer(mean, stddev)`).
- L0 log(1 - u) is computed as log1p(-u) (u in [0, 1), so finite).
- finalize: bias masks are the bias rule (§B.3) of the new weight masks, also
  intersected with the starting bias masks (identical whenever the starting
  masks obey the rule, as every dense or carved start does).
- VD finalize zeroes a weight iff log alpha >= tau (the kept set is
  log alpha < tau, §F.3), and L0 finalize keeps theta * z_hat (weights are
  *scaled* by the test gate, as SoS evaluates them); a weight that ends up exactly
  0.0 is pruned (NNZ counts values, §B.4).

Grids for our scale (§J.11, a proposal that neither paper provides):
`proposed_grid()`, i.e. strength = c / 49,982 with c on a per-method log grid
(`PROPOSED_C`, calibrated as `proposed_strengths` explains) and VD's tau in
{0, 0.5, ..., 5} (`PROPOSED_THRESHOLDS`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from cubist import data, mlp, portable
from cubist import masks as mask_ops
from cubist.layouts import bce_with_logits
from cubist.method import Hyper, Method, MethodStatic
from cubist.mlp import Layer, Params

EPSILON = 1e-8  # SoS common.EPSILON: inside log(theta^2 + eps) and sqrt(var + eps)

# Variational dropout (§F.3).
VD_LOG_SIGMA2_INIT = -10.0
VD_CLIP_LOG_ALPHA = 8.0
VD_K1, VD_K2, VD_K3 = 0.63576, 1.8732, 1.48695
VD_DEFAULT_THRESHOLD = 3.0

# L0 hard-concrete gates (§F.4).
L0_BETA = 2.0 / 3.0
L0_GAMMA = -0.1
L0_ZETA = 1.1
L0_LOG_ALPHA_INIT_MEAN = 2.197
L0_LOG_ALPHA_INIT_STD = 0.01
L0_ZERO_LOG_ALPHA = -math.log(11.0)  # test gate is exactly 0 iff log alpha <= this

# Proposed sweep for our scale (§F.3 "Adaptation", §J.11): strength = c / N_train with
# c on a log grid per method (see `proposed_strengths` for how it was chosen).
NUM_TRAIN = data.NUM_POINTS
PROPOSED_C = {
  "vd": tuple(np.logspace(-2, 3, 11)),  # 0.01, 0.0316, ..., 1000: half-decades
  "l0": tuple(np.logspace(1, 4, 13)),  # 10, 17.8, ..., 10,000: quarter-decades
}
PROPOSED_THRESHOLDS = np.arange(11) * 0.5  # tau in {0, 0.5, ..., 5}, as SoS's Transformer CSVs


# --------------------------------------------------------------------------- shared pieces


def regulariser_ramp(step: jax.Array, static: MethodStatic) -> jax.Array:
  """Linear ramp in [0, 1] at 0-based global `step`: min(max(t - t0, 0) / (t1 - t0), 1)."""
  begin = round(static.ramp_begin * static.total_steps)
  end = round(static.ramp_end * static.total_steps)
  length = float(max(end - begin, 1))  # zero-length ramp: full strength one step after t0
  progress = jnp.maximum(jnp.asarray(step, jnp.float32) - begin, 0.0) / length
  return jnp.minimum(progress, 1.0)


def _unit_keys(key: jax.Array, layer_index: int, units: int) -> jax.Array:
  """One key per output unit of a layer: fold_in(fold_in(key, layer), unit)."""
  layer_key = jax.random.fold_in(key, layer_index)
  return jax.vmap(jax.random.fold_in, (None, 0))(layer_key, jnp.arange(units))


def per_unit_normal(key: jax.Array, layer_index: int, shape: tuple[int, int]) -> jax.Array:
  """N(0, 1) of `shape` (units, n): row j is a 1-D draw from unit j's key (padding-invariant)."""
  keys = _unit_keys(key, layer_index, shape[0])
  return jax.vmap(lambda k: jax.random.normal(k, (shape[1],), jnp.float32))(keys)


def per_unit_uniform(key: jax.Array, layer_index: int, shape: tuple[int, int]) -> jax.Array:
  """U[0, 1) of `shape` (units, n): row j is a 1-D draw from unit j's key (padding-invariant)."""
  keys = _unit_keys(key, layer_index, shape[0])
  return jax.vmap(lambda k: jax.random.uniform(k, (shape[1],), jnp.float32))(keys)


def _matmul(hidden: jax.Array, weight: jax.Array) -> jax.Array:
  """hidden (B, in) @ weight.T (out, in) -> (B, out) in the trainer's arithmetic (mlp.matmul)."""
  return mlp.matmul(weight, hidden.T).T


def _add_bias(hidden: jax.Array, bias: jax.Array) -> jax.Array:
  """hidden (B, out) + bias (out,), whose bias gradient is the trainer's pairwise sum over B."""
  if not mlp.is_portable_width(bias.shape[0]):
    return hidden + bias
  return portable.add_bias(hidden.T, bias).T


def deterministic_logits(weights, params: Params, masks: Params, x: jax.Array) -> jax.Array:
  """Logits (B,) of the plain MLP with the given four weight matrices and params' biases, masked."""
  hidden = x
  for index, (weight, layer, mask) in enumerate(zip(weights, params, masks)):
    bias = layer.bias * jnp.asarray(mask.bias, layer.bias.dtype)
    hidden = _add_bias(_matmul(hidden, weight * jnp.asarray(mask.weight, weight.dtype)), bias)
    if index < len(params) - 1:
      hidden = jax.nn.relu(hidden)
  return hidden[..., 0]


def _finalize_weights(weights, params: Params, masks: Params) -> tuple[Params, Params]:
  """(params, masks) from final weight values: mask = value != 0 inside `masks`, biases by rule."""
  weight_masks = [
    (weight != 0) & jnp.asarray(mask.weight, bool) for weight, mask in zip(weights, masks)
  ]
  rule = mask_ops.with_bias_rule(weight_masks)
  new_masks = tuple(
    Layer(rule_layer.weight, rule_layer.bias & jnp.asarray(mask.bias, bool))
    for rule_layer, mask in zip(rule, masks)
  )
  new_params = tuple(
    Layer(
      jnp.where(mask.weight, weight, 0.0).astype(layer.weight.dtype),
      jnp.where(mask.bias, layer.bias, 0.0).astype(layer.bias.dtype),
    )
    for weight, layer, mask in zip(weights, params, new_masks)
  )
  return new_params, new_masks


def _mean_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean BCE-with-logits over the batch (§C.1), the trainer's own elementwise loss."""
  return portable.mean(bce_with_logits(logits, labels), 0)


# --------------------------------------------------------------------------- variational dropout


def vd_log_alpha(theta: jax.Array, log_sigma2: jax.Array) -> jax.Array:
  """Unclipped log alpha = log sigma^2 - log(theta^2 + 1e-8), elementwise."""
  return log_sigma2 - jnp.log(jnp.square(theta) + EPSILON)


def vd_clip_log_alpha(log_alpha: jax.Array) -> jax.Array:
  """The training clip of log alpha to [-8, 8] (SoS clip_alpha = 8)."""
  return jnp.clip(log_alpha, -VD_CLIP_LOG_ALPHA, VD_CLIP_LOG_ALPHA)


def vd_kl(log_alpha: jax.Array) -> jax.Array:
  """Positive KL per weight: -(k1 sigmoid(k2 + k3 la) - 0.5 log(1 + e^-la) - k1), elementwise.

  Written as k1 sigmoid(-(k2 + k3 la)) + 0.5 softplus(-la), the same value
  without float32 cancellation in k1 - k1 sigmoid(.) at large log alpha.
  """
  return VD_K1 * jax.nn.sigmoid(-(VD_K2 + VD_K3 * log_alpha)) + 0.5 * jax.nn.softplus(-log_alpha)


def vd_kl_sum(params: Params, log_sigma2, masks: Params) -> jax.Array:
  """Sum of `vd_kl` over active weights, on the training (clipped) log alpha."""
  total = jnp.float32(0.0)
  for layer, layer_log_sigma2, mask in zip(params, log_sigma2, masks):
    log_alpha = vd_clip_log_alpha(vd_log_alpha(layer.weight, layer_log_sigma2))
    total = total + portable.total(jnp.where(mask.weight, vd_kl(log_alpha), 0.0))
  return total


def vd_layer_moments(
  hidden: jax.Array, theta: jax.Array, log_sigma2: jax.Array, weight_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Pre-activation mean x @ theta.T and variance x^2 @ sigma^2.T, each (B, out), no bias.

  sigma^2 is recomputed from the clipped log alpha (§F.3); masked weights have
  theta = sigma^2 = 0.
  """
  mask = jnp.asarray(weight_mask, theta.dtype)
  theta = theta * mask
  log_theta2 = jnp.log(jnp.square(theta) + EPSILON)
  clipped_log_sigma2 = vd_clip_log_alpha(log_sigma2 - log_theta2) + log_theta2
  sigma2 = jnp.exp(clipped_log_sigma2) * mask
  return _matmul(hidden, theta), _matmul(jnp.square(hidden), sigma2)


def vd_noisy_layer(
  hidden: jax.Array,
  layer: Layer,
  log_sigma2: jax.Array,
  mask: Layer,
  key: jax.Array,
  layer_index: int,
) -> jax.Array:
  """One noisy pre-activation (B, out): mu + sqrt(v + 1e-8) eps + bias (local reparameterisation).

  eps ~ N(0, 1) per example and output unit, one (out, B) draw from
  fold_in(key, layer_index): the batch is the minor axis, so unit j's noise does
  not depend on how many units the layer is padded to. The bias is deterministic.
  """
  mean, variance = vd_layer_moments(hidden, layer.weight, log_sigma2, mask.weight)
  noise_shape = (layer.weight.shape[0], hidden.shape[0])
  noise = jax.random.normal(jax.random.fold_in(key, layer_index), noise_shape, jnp.float32).T
  bias = layer.bias * jnp.asarray(mask.bias, layer.bias.dtype)
  return _add_bias(mean + jnp.sqrt(variance + EPSILON) * noise, bias)


def vd_noisy_logits(
  params: Params, log_sigma2, masks: Params, x: jax.Array, key: jax.Array
) -> jax.Array:
  """Training forward: logits (B,) with `vd_noisy_layer` at every layer, fresh noise per layer."""
  hidden = x
  for index, (layer, layer_log_sigma2, mask) in enumerate(zip(params, log_sigma2, masks)):
    hidden = vd_noisy_layer(hidden, layer, layer_log_sigma2, mask, key, index)
    if index < len(params) - 1:
      hidden = jax.nn.relu(hidden)
  return hidden[..., 0]


def vd_eval_weights(params: Params, log_sigma2, masks: Params, threshold: jax.Array) -> tuple:
  """Deterministic weights theta * 1[log alpha < tau] (unclipped log alpha), inside `masks`."""
  return tuple(
    jnp.where(
      jnp.asarray(mask.weight, bool) & (vd_log_alpha(layer.weight, layer_log_sigma2) < threshold),
      layer.weight,
      0.0,
    )
    for layer, layer_log_sigma2, mask in zip(params, log_sigma2, masks)
  )


def vd_aux_init(
  key: jax.Array, params: Params, masks: Params, hyper: Hyper, static: MethodStatic
) -> tuple:
  """log sigma^2 = -10 for every weight (§F.3)."""
  del key, masks, hyper, static
  return tuple(jnp.full(layer.weight.shape, VD_LOG_SIGMA2_INIT, jnp.float32) for layer in params)


def vd_loss(
  params: Params,
  aux,
  masks: Params,
  batch_x: jax.Array,
  batch_y: jax.Array,
  key: jax.Array,
  step: jax.Array,
  hyper: Hyper,
  static: MethodStatic,
) -> jax.Array:
  """Mean BCE of the noisy forward + beta_max * ramp(t) * KL summed over active weights."""
  logits = vd_noisy_logits(params, aux, masks, batch_x, key)
  weight = hyper.strength * regulariser_ramp(step, static)
  return _mean_bce(logits, batch_y) + weight * vd_kl_sum(params, aux, masks)


def vd_finalize(
  params: Params, aux, masks: Params, hyper: Hyper, static: MethodStatic
) -> tuple[Params, Params]:
  """Deterministic VD weights at tau = hyper.threshold and their bool masks (biases by the rule)."""
  del static
  return _finalize_weights(vd_eval_weights(params, aux, masks, hyper.threshold), params, masks)


def vd_deterministic_logits(
  params: Params, aux, masks: Params, x: jax.Array, threshold: jax.Array
) -> jax.Array:
  """Logits (B,) of the evaluation network theta * 1[log alpha < tau]."""
  return deterministic_logits(vd_eval_weights(params, aux, masks, threshold), params, masks, x)


# --------------------------------------------------------------------------- L0 hard-concrete gates


def l0_train_gates(log_alpha: jax.Array, uniform: jax.Array) -> jax.Array:
  """Hard-concrete sample z in [0, 1] from uniform noise u of the same shape.

  s = sigmoid((log(u + 1e-8) - log(1 - u) + log alpha) / beta),
  z = clip(s (zeta - gamma) + gamma, 0, 1).
  """
  logistic = jnp.log(uniform + EPSILON) - jnp.log1p(-uniform)
  stretched = jax.nn.sigmoid((logistic + log_alpha) / L0_BETA) * (L0_ZETA - L0_GAMMA) + L0_GAMMA
  return jnp.clip(stretched, 0.0, 1.0)


def l0_test_gates(log_alpha: jax.Array) -> jax.Array:
  """Deterministic gate z_hat = clip(sigmoid(log alpha) (zeta - gamma) + gamma, 0, 1)."""
  return jnp.clip(jax.nn.sigmoid(log_alpha) * (L0_ZETA - L0_GAMMA) + L0_GAMMA, 0.0, 1.0)


def l0_expected_l0(log_alpha: jax.Array) -> jax.Array:
  """P(gate != 0) = sigmoid(log alpha - beta log(-gamma / zeta)), elementwise."""
  return jax.nn.sigmoid(log_alpha - L0_BETA * math.log(-L0_GAMMA / L0_ZETA))


def l0_penalty_sum(log_alpha, masks: Params) -> jax.Array:
  """Expected L0 norm: `l0_expected_l0` summed over active weights."""
  return sum(
    portable.total(jnp.where(mask.weight, l0_expected_l0(layer_log_alpha), 0.0))
    for layer_log_alpha, mask in zip(log_alpha, masks)
  )


def l0_sample_gates(key: jax.Array, log_alpha) -> tuple:
  """One gate sample per weight (4-tuple like the weights), shared by the whole minibatch."""
  return tuple(
    l0_train_gates(layer_log_alpha, per_unit_uniform(key, index, layer_log_alpha.shape))
    for index, layer_log_alpha in enumerate(log_alpha)
  )


def l0_noisy_logits(
  params: Params, log_alpha, masks: Params, x: jax.Array, key: jax.Array
) -> jax.Array:
  """Training forward with weights theta * z, z sampled once for the batch: logits (B,)."""
  gates = l0_sample_gates(key, log_alpha)
  weights = tuple(layer.weight * gate for layer, gate in zip(params, gates))
  return deterministic_logits(weights, params, masks, x)


def l0_eval_weights(params: Params, log_alpha, masks: Params) -> tuple:
  """Deterministic weights theta * z_hat inside `masks`."""
  return tuple(
    jnp.where(jnp.asarray(mask.weight, bool), layer.weight * l0_test_gates(layer_log_alpha), 0.0)
    for layer, layer_log_alpha, mask in zip(params, log_alpha, masks)
  )


def l0_aux_init(
  key: jax.Array, params: Params, masks: Params, hyper: Hyper, static: MethodStatic
) -> tuple:
  """log alpha ~ N(2.197, 0.01^2) per weight (§F.4: gates start ~90% open), per-unit draws."""
  del masks, hyper, static
  return tuple(
    L0_LOG_ALPHA_INIT_MEAN + L0_LOG_ALPHA_INIT_STD * per_unit_normal(key, index, layer.weight.shape)
    for index, layer in enumerate(params)
  )


def l0_loss(
  params: Params,
  aux,
  masks: Params,
  batch_x: jax.Array,
  batch_y: jax.Array,
  key: jax.Array,
  step: jax.Array,
  hyper: Hyper,
  static: MethodStatic,
) -> jax.Array:
  """Mean BCE of the gated forward + lambda * ramp(t) * expected L0 over active weights."""
  logits = l0_noisy_logits(params, aux, masks, batch_x, key)
  weight = hyper.strength * regulariser_ramp(step, static)
  return _mean_bce(logits, batch_y) + weight * l0_penalty_sum(aux, masks)


def l0_finalize(
  params: Params, aux, masks: Params, hyper: Hyper, static: MethodStatic
) -> tuple[Params, Params]:
  """Deterministic L0 weights theta * z_hat and their bool masks (biases by the rule)."""
  del hyper, static
  return _finalize_weights(l0_eval_weights(params, aux, masks), params, masks)


def l0_deterministic_logits(params: Params, aux, masks: Params, x: jax.Array) -> jax.Array:
  """Logits (B,) of the evaluation network theta * z_hat."""
  return deterministic_logits(l0_eval_weights(params, aux, masks), params, masks, x)


# --------------------------------------------------------------------------- host-side grids


def proposed_strengths(name: str, c_values=None, num_train: int = NUM_TRAIN) -> np.ndarray:
  """PROPOSAL (§J.11): strengths c / N_train (float64) for "vd" (beta_max) or "l0" (lambda).

  SoS expresses beta_max (and L0's lambda) per training example; we transfer
  that with N_train = 49,982 and a log grid of c (default PROPOSED_C[name]).
  Neither paper gives values for our scale. The default ranges come from a
  small calibration (width 8, dense, 19,500 steps of batch 128, SGD momentum 0.9
  at a constant lr 0.1, ramp 0 -> 50%, seeds 0 and 1; weight counts at tau = 3):
  VD already sparsifies at c = 0.01 (about 100 of 152 weights left, accuracy
  1.0), reaches 24-74 weights at c = 1..100 with accuracy 0.73-1.0 and
  collapses (accuracy 0.5) from c ~ 300-1000 on; L0 leaves all gates open up to
  c ~ 100, prunes to 30-93 weights at c = 200-1000 and collapses from c ~ 2000
  (its transition is sharp, hence the finer grid). SoS's RN50 sweep stops at
  c = 100 and the Transformer's at c ~ 10: our per-weight SGD gradients are not
  Adam-normalised and the network is tiny, so L0 needs far larger c. Single
  runs at a constant lr 0.1 are noisy (one of two plain dense runs collapsed
  too): read the frontier off the real sweep, with its lr schedules and seeds.
  """
  c_values = PROPOSED_C[name] if c_values is None else c_values
  return np.asarray(c_values, np.float64) / float(num_train)


def proposed_grid() -> dict[str, dict[str, np.ndarray]]:
  """PROPOSAL (§J.11): {"vd": {"strength", "threshold"}, "l0": {"strength", "threshold"}}.

  VD sweeps tau over {0, 0.5, ..., 5} (§F.3; it only changes `finalize`, so one
  trained model serves every tau); L0 has no threshold, so its single value
  (VD's default 3.0) is a placeholder it ignores.
  """
  return {
    "vd": {"strength": proposed_strengths("vd"), "threshold": PROPOSED_THRESHOLDS.copy()},
    "l0": {"strength": proposed_strengths("l0"), "threshold": np.array([VD_DEFAULT_THRESHOLD])},
  }


METHODS = {
  "vd": Method(
    name="vd",
    aux_init=vd_aux_init,
    loss=vd_loss,
    finalize=vd_finalize,
    uses_strength=True,
    description="SoS sparse variational dropout (§F.3): local reparameterisation, "
    "KL ramped to beta_max = strength; keep log alpha < tau = threshold.",
  ),
  "l0": Method(
    name="l0",
    aux_init=l0_aux_init,
    loss=l0_loss,
    finalize=l0_finalize,
    uses_strength=True,
    description="SoS L0 hard-concrete gates (§F.4): expected-L0 penalty ramped to "
    "lambda = strength; evaluate theta * deterministic gate.",
  ),
}
