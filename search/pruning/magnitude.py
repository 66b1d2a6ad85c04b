"""Magnitude-family pruning: IMP, LTH and State-of-Sparsity magnitude/random pruning.

- `imp` (METHODS §E.1): gradual global magnitude pruning, 201 events during training.
- `lth` (§E.2): global magnitude pruning of the trained weights after rounds
  1..4, each round rewound to the initial weights by the trainer.
- `magnitude` (§F.1): Zhu-Gupta gradual pruning with SoS's schedule, per
  weight tensor ("layer", SoS) or global, histogram threshold (reference).
- `random` (§F.2): the same schedule and scope, random survivors (cumulative).

Every hook works on ONE experiment (the trainer vmaps them) and is jittable:
counts come from `hyper.counts` (computed on the host by `host_counts`, in
float64 as the reference does, search/pruning/counts.py) and event indices are
derived from the traced `step`. Biases follow the bias rule at every event
(§B.3): a hidden unit keeps its bias iff it keeps an outgoing weight.

Momentum: every mask here only shrinks (pruned weights are zero, so no
magnitude criterion can bring them back; exact and random selection only pick
among current survivors). The momentum of masked entries then never reaches
an active weight (§B.3), so zeroing the momentum of pruned entries, as the
events below do, is equivalent to the reference and keeps the state tidy.

Shapes (one experiment): a RunState's params, masks, momentum are `Params` (cubist.mlp);
weights (out, in), possibly zero-padded to a wider array whose real width w is
given by hyper.num_weights = N(w) (METHODS §I).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cubist import masks as mask_ops
from cubist.method import Hyper, Method, MethodStatic, RunState
from cubist.mlp import Params
from search.pruning import counts, select

# --------------------------------------------------------------------------- shared helpers


def install_weight_masks(state: RunState, weight_masks) -> RunState:
  """Full masks by the bias rule from weight masks; params and momentum zeroed outside them.

  Zeroing the momentum of pruned entries is what the reference's momentum
  amounts to when masks only shrink (module docstring).
  """
  masks = mask_ops.with_bias_rule(weight_masks)
  return RunState(
    select.apply_weight_keep(state.params, masks),
    masks,
    select.apply_weight_keep(state.momentum, masks),
  )


def _masked(params: Params, masks: Params) -> Params:
  return select.apply_weight_keep(params, masks)


def _global_magnitude_keep(
  params: Params, masks: Params, target: jax.Array, static: MethodStatic
) -> jax.Array:
  """Global magnitude selection (§E.1 "Selection at each event"): flat bool (size,).

  reference: pool |W| over every weight including pruned zeros, sort
  ascending, threshold = sorted[N - K], keep |W| > threshold (strict: K - 1
  kept without ties, §H 2). Padding adds zeros at the front of the sorted
  array, so the index is size - K (the same threshold as the unpadded N - K).
  exact: exactly K of the current survivors, ties to the lower index.
  """
  scores = jnp.abs(select.flat_weights(_masked(params, masks)))
  if static.count_mode == "reference":
    return select.threshold_keep(scores, scores.shape[0] - target, strict=True)
  return select.keep_top_k(scores, target, valid=select.flat_weights(masks).astype(bool))


def _check_count_mode(static: MethodStatic) -> None:
  if static.count_mode not in ("reference", "exact"):
    raise ValueError(f"count_mode={static.count_mode!r} must be 'reference' or 'exact'")


# --------------------------------------------------------------------------- IMP (§E.1)


def imp_host_counts(f: int, num_weights: int, static: MethodStatic) -> np.ndarray:
  """K_k for every IMP event (int32 (events,)); exact or clean mode clamps frac <= 1 (§H 1)."""
  _check_count_mode(static)
  clamp = static.clean or static.count_mode == "exact"
  return counts.imp_counts(f, num_weights, static.total_steps, clamp=clamp)


def imp_pre_event_steps(static: MethodStatic) -> np.ndarray:
  """Bool (total_steps,): t % Δ == 0 and t > 0, Δ = int(I / 200) (201 events at I = 19,500)."""
  out = np.zeros(static.total_steps, bool)
  out[counts.imp_event_steps(static.total_steps)] = True
  return out


def imp_pre_event(step, key, state: RunState, hyper: Hyper, static: MethodStatic) -> RunState:
  """IMP event k = step // Δ: keep the K_k largest |W| globally (reference: K_k - 1).

  Quirks kept in reference mode (§E.1, §H 1-2): the strict threshold keeps
  K_k - 1, and events 200-201 ask for f - 1 (frac > 1), ending at f - 2.
  """
  del key
  event = step // counts.imp_interval(static.total_steps)  # 1-based event index
  target = hyper.counts[event - 1]
  keep = _global_magnitude_keep(state.params, state.masks, target, static)
  return install_weight_masks(state, select.unflat_weights(keep, state.params))


# --------------------------------------------------------------------------- LTH (§E.2)


def lth_host_counts(f: int, num_weights: int, static: MethodStatic) -> np.ndarray:
  """K_r = int(N (f/N)^(r/4)) for r = 1..4 (int32 (4,)); exact mode asks for f at the end."""
  _check_count_mode(static)
  return counts.lth_counts(f, num_weights, counts.LTH_ROUNDS, exact=static.count_mode == "exact")


def lth_round_end(round_index, trained_params, masks, hyper: Hyper, static: MethodStatic):
  """Masks of the next round: global magnitude prune of the trained weights to K_r.

  round_index r = 1..4. Reference: strict threshold, K_r - 1 kept (§E.2). The
  trainer rewinds every parameter to the saved init, applies these masks
  (zeroing weights and dead-out biases) and resets momentum and schedule.
  """
  target = hyper.counts[round_index - 1]
  keep = _global_magnitude_keep(trained_params, masks, target, static)
  return mask_ops.with_bias_rule(select.unflat_weights(keep, trained_params))


# --------------------------------------------------------------------------- SoS (§F.1, §F.2)


def _sos_schedule(static: MethodStatic) -> tuple[int, int, int]:
  return counts.sos_schedule(static.total_steps, static.sos_begin, static.sos_end, static.sos_freq)


def _sos_steps(static: MethodStatic) -> np.ndarray:
  return counts.sos_event_steps(
    static.total_steps, static.sos_begin, static.sos_end, static.sos_freq
  )


def sos_host_counts(f: int, num_weights: int, static: MethodStatic) -> np.ndarray:
  """Kept counts per SoS event: int32 (events * 4,) for scope "layer", (events,) for "global"."""
  _check_count_mode(static)
  return counts.sos_counts(
    f,
    num_weights,
    static.total_steps,
    static.sos_begin,
    static.sos_end,
    static.sos_freq,
    static.sos_scope,
  )


def sos_pre_event_steps(static: MethodStatic) -> np.ndarray:
  """Bool (total_steps,) of the SoS mask updates (counts.sos_event_steps)."""
  out = np.zeros(static.total_steps, bool)
  out[_sos_steps(static)] = True
  return out


def _sos_event_index(step, static: MethodStatic):
  """Event index from the step: events sit at first, first + freq, ... (counts.sos_event_steps)."""
  steps = _sos_steps(static)
  _, _, frequency = _sos_schedule(static)
  first = int(steps[0]) if steps.size else 0
  return (step - first) // frequency


def _sos_event_counts(step, hyper: Hyper, static: MethodStatic) -> jax.Array:
  """This event's kept counts: (4,) per layer (scope "layer") or () (scope "global")."""
  event = _sos_event_index(step, static)
  if static.sos_scope == "layer":
    return hyper.counts.reshape(-1, 4)[event]
  return hyper.counts[event]


def sos_sparsity(step, hyper: Hyper, static: MethodStatic) -> jax.Array:
  """Zhu-Gupta s_t (s_i = 0, s_f = 1 - f/N), in float32 as tf.contrib.model_pruning computes it."""
  t_begin, t_end, _ = _sos_schedule(static)
  progress = (jnp.asarray(step) - t_begin).astype(jnp.float32) / jnp.float32(t_end - t_begin)
  progress = jnp.clip(progress, 0.0, 1.0)
  target = 1.0 - hyper.target_nnz.astype(jnp.float32) / hyper.num_weights.astype(jnp.float32)
  return (0.0 - target) * (1.0 - progress) ** 3 + target


def histogram_threshold(
  abs_values: jax.Array, valid: jax.Array, sparsity: jax.Array, nbins: int = counts.SOS_NBINS
) -> jax.Array:
  """model_pruning's threshold: the `sparsity` quantile of |w| read off a histogram (§F.1).

  Histogram with `nbins` equal bins over [0, max|w|] (bin floor(nbins |w| /
  max), clipped to the last bin), normalised cumulative counts c_i, threshold
  = #{i : c_i < sparsity} / nbins * max. Only `valid` entries count (pruned
  zeros do, padding does not). Any shapes; returns a float32 scalar.
  """
  abs_values = jnp.where(valid, abs_values, 0.0).astype(jnp.float32)
  max_value = jnp.max(abs_values)
  scale = jnp.where(max_value > 0, max_value, 1.0)
  bins = jnp.clip(jnp.floor(jnp.float32(nbins) * (abs_values / scale)), 0, nbins - 1)
  histogram = (
    jnp.zeros(nbins, jnp.float32)
    .at[bins.astype(jnp.int32).ravel()]
    .add(valid.astype(jnp.float32).ravel())
  )
  cumulative = jnp.cumsum(histogram)
  normalised = cumulative / jnp.maximum(cumulative[-1], 1.0)
  below = jnp.sum((normalised < sparsity).astype(jnp.float32))
  return below / jnp.float32(nbins) * max_value


def magnitude_pre_event(step, key, state: RunState, hyper: Hyper, static: MethodStatic) -> RunState:
  """SoS magnitude pruning event: sparsity s_t per weight tensor (scope "layer") or globally.

  reference: mask = |w| > histogram threshold (§F.1, 256 bins). Difference
  from SoS kept by construction: in SoS pruned weights keep their raw values
  (masked only in the forward pass), still enter the histogram and could in
  principle re-enter; here the trainer stores them as 0, so they sit in bin 0
  and never come back. exact: keep exactly round(n (1 - s_t)) survivors by |w|,
  ties to the lower index (counts from the host). Kept as in SoS (§F.1): the
  last update sits on the freq grid, so s_f is reached only if t_end does (the
  default 16%-59% / 3.1% schedule ends at t = 10,972 with s_t = 0.9997 s_f);
  scope "layer" gives every tensor the same sparsity, which at tiny f can
  leave W1 or W4 with no weight (§F.1 "W4 with under 1"). Scope "global" (our
  extension) reads one histogram over all four tensors.
  """
  del key
  params = _masked(state.params, state.masks)
  state = state._replace(params=params)
  current = [mask.weight.astype(bool) for mask in state.masks]
  magnitudes = [jnp.abs(layer.weight) for layer in params]
  if static.count_mode == "reference":
    region = select.weight_region(params, hyper.num_weights)
    sparsity = sos_sparsity(step, hyper, static)
    if static.sos_scope == "layer":
      keep = [
        (value > histogram_threshold(value, valid, sparsity)) & mask
        for value, valid, mask in zip(magnitudes, region, current)
      ]
    else:
      flat = jnp.concatenate([value.ravel() for value in magnitudes])
      flat_valid = jnp.concatenate([valid.ravel() for valid in region])
      threshold = histogram_threshold(flat, flat_valid, sparsity)
      keep = [(value > threshold) & mask for value, mask in zip(magnitudes, current)]
    return install_weight_masks(state, keep)
  return install_weight_masks(state, _keep_by_scores(magnitudes, current, step, hyper, static))


def _keep_by_scores(scores, current, step, hyper: Hyper, static: MethodStatic) -> list:
  """Exactly this event's counts of the highest-scoring current survivors, per layer or globally.

  scores, current: per weight matrix, (out, in) float and bool. Returns bool per matrix.
  """
  targets = _sos_event_counts(step, hyper, static)
  if static.sos_scope == "layer":
    return [
      select.keep_top_k(score.ravel(), targets[index], valid=mask.ravel()).reshape(mask.shape)
      for index, (score, mask) in enumerate(zip(scores, current))
    ]
  flat = jnp.concatenate([score.ravel() for score in scores])
  flat_valid = jnp.concatenate([mask.ravel() for mask in current])
  keep = select.keep_top_k(flat, targets, valid=flat_valid)
  sizes = np.cumsum([mask.size for mask in current])[:-1]
  return [part.reshape(mask.shape) for part, mask in zip(jnp.split(keep, sizes), current)]


def random_pre_event(step, key, state: RunState, hyper: Hyper, static: MethodStatic) -> RunState:
  """SoS random pruning event: keep this event's count of current survivors uniformly at random.

  Cumulative (§F.2 [INFER] "random_cumulative"): pruned weights stay pruned,
  each event removes further random survivors. The key is folded with the
  step, so events draw independently even if the trainer passes one key per
  run. Both count modes keep exactly round(n (1 - s_t)): there is no threshold.
  """
  event_key = jax.random.fold_in(key, step)
  current = [mask.weight.astype(bool) for mask in state.masks]
  layer_keys = jax.random.split(event_key, len(current))
  scores = [
    jax.random.uniform(layer_key, mask.shape) for layer_key, mask in zip(layer_keys, current)
  ]
  keep = _keep_by_scores(scores, current, step, hyper, static)
  return install_weight_masks(state._replace(params=_masked(state.params, state.masks)), keep)


# --------------------------------------------------------------------------- registry

IMP = Method(
  name="imp",
  pre_event=imp_pre_event,
  pre_event_steps=imp_pre_event_steps,
  host_counts=imp_host_counts,
  description="Gradual global magnitude pruning (IMP), 201 cubic-schedule events (§E.1).",
)

LTH = Method(
  name="lth",
  rounds=counts.LTH_ROUNDS,
  round_end=lth_round_end,
  host_counts=lth_host_counts,
  description="Lottery ticket: global magnitude prune after rounds 1-4, rewind to init (§E.2).",
)

MAGNITUDE = Method(
  name="magnitude",
  pre_event=magnitude_pre_event,
  pre_event_steps=sos_pre_event_steps,
  host_counts=sos_host_counts,
  description="SoS Zhu-Gupta magnitude pruning, layer-wise or global, histogram (§F.1).",
)

RANDOM = Method(
  name="random",
  pre_event=random_pre_event,
  pre_event_steps=sos_pre_event_steps,
  host_counts=sos_host_counts,
  description="SoS cumulative random pruning on the Zhu-Gupta schedule (§F.2).",
)

METHODS: dict[str, Method] = {method.name: method for method in (IMP, LTH, MAGNITUDE, RANDOM)}
