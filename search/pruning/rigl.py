"""RigL with an ERK initial mask (METHODS §E.9), as the reference's rigl-torch port runs it.

- `at_init`: draw the ERK mask, per layer a uniformly random set of
  n_l - int(S_l n_l) active weights (the count rounds up past f: 22 at w=16,
  f=20; §H 10), weights multiplied by it, biases by the rule.
- `grad_event` on global steps t with (t + 1) % 100 == 0 and t + 1 < T_end =
  int(0.75 I): per sparse layer drop to the n_keep largest |W| and grow the
  n_drop entries with the largest |dense gradient| of this iteration among the
  rest; the trainer skips this iteration's SGD update (§E.9 "instead of the
  optimiser step").

Counts come from the host (`host_counts`, float64 like the reference): the
ERK layer counts and n_drop = int(n_on * alpha_s) per update and layer, with
alpha_s = 0.15 (1 + cos(pi s / T_end)). One experiment per call; vmap for many.

Momentum. The reference masks RigL layers' gradients with a hook and zeroes
the momentum of masked weights and biases after every step, so a masked entry
always has zero momentum. Our trainer masks neither, so masked entries carry
stale momentum, which is harmless while they stay masked (their values are
re-zeroed after every update and never feed active entries, §B.3). It only
matters when an entry becomes active, which happens only here: so the update
gives every newly active weight or bias zero momentum, keeps the momentum of
entries active before and after (kept ones, and a just-dropped entry that is
regrown, which also keeps its value), and zeroes that of dropped entries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cubist import masks as mask_ops
from cubist.method import Hyper, Method, MethodStatic, RunState
from cubist.mlp import Layer
from search.pruning import counts, select

NUM_LAYERS = 4


def rigl_host_counts(f: int, num_weights: int, static: MethodStatic) -> np.ndarray:
  """int32 (4 + 4 * updates,): the ERK active count per layer, then n_drop per update and layer.

  reference: ERK rounding up (§E.9); exact: ERK apportioned to exactly f.
  Dense layers (S_l <= 0) get n_drop = 0, which leaves them untouched.
  """
  if static.count_mode not in ("reference", "exact"):
    raise ValueError(f"count_mode={static.count_mode!r} must be 'reference' or 'exact'")
  active = counts.erk_layer_counts(f, num_weights, exact=static.count_mode == "exact")
  dense = counts.rigl_dense_layers(f, num_weights)
  drops = counts.rigl_drop_counts(active, dense, static.total_steps)
  return np.concatenate([active, drops.reshape(-1)]).astype(np.int32)


def rigl_grad_event_steps(static: MethodStatic) -> np.ndarray:
  """Bool (total_steps,): True at t with (t + 1) % 100 == 0 and t + 1 < T_end (146 at 19,500)."""
  out = np.zeros(static.total_steps, bool)
  out[counts.rigl_update_steps(static.total_steps)] = True
  return out


def rigl_at_init(key, params, masks, x, y, hyper: Hyper, static: MethodStatic):
  """The ERK mask: per layer hyper.counts[l] uniformly random active weights inside `masks`.

  The reference zeroes int(S_l n_l) entries of a random permutation; keeping
  the top a_l = n_l - int(S_l n_l) of i.i.d. uniform scores is the same
  distribution. The reference first masks biases after the first optimiser
  step (§H 10); masking them now changes nothing, since a bias the rule removes
  feeds no outgoing weight. Returns (params, masks).
  """
  del x, y, static
  active = hyper.counts[:NUM_LAYERS]
  layer_keys = jax.random.split(key, NUM_LAYERS)
  weight_masks = []
  for index, (layer_key, mask) in enumerate(zip(layer_keys, masks)):
    valid = mask.weight.astype(bool)
    scores = jax.random.uniform(layer_key, valid.shape)
    keep = select.keep_top_k(scores.ravel(), active[index], valid=valid.ravel())
    weight_masks.append(keep.reshape(valid.shape))
  new_masks = mask_ops.with_bias_rule(weight_masks)
  return select.apply_weight_keep(params, new_masks), new_masks


def rigl_grad_event(
  step, key, state: RunState, grads, hyper: Hyper, static: MethodStatic
) -> RunState:
  """One RigL topology update at global step t (scheduler step s = t + 1), per layer.

  Drop: keep the n_keep = n_on - n_drop largest |W| (the reference ranks the
  whole tensor, where masked entries are 0; we rank the active ones, which is
  one of the reference's arbitrary tie orders and never revives a masked
  entry through a tie at 0). Grow: the n_drop largest |grads| among entries
  not kept (the reference sets kept scores to min - 1), inside the real
  network (padding excluded); a just-dropped entry can be regrown. New
  connections start at 0 with zero momentum; the per-layer count is
  conserved; dense layers (n_drop = 0) are unchanged. Bias masks by the rule.
  Returns the new RunState; the trainer skips this step's SGD update.
  """
  del key
  params, masks, trace = state
  event = (step + 1) // counts.RIGL_DELTA_T - 1
  drops = hyper.counts[NUM_LAYERS:].reshape(-1, NUM_LAYERS)[event]
  region = select.weight_region(params, hyper.num_weights)
  weights, weight_masks, weight_trace = [], [], []
  for index, (layer, mask, grad, valid) in enumerate(zip(params, masks, grads, region)):
    active = mask.weight.astype(bool)
    value = layer.weight * active
    n_drop = drops[index]
    n_keep = jnp.sum(active) - n_drop
    kept = select.keep_top_k(jnp.abs(value).ravel(), n_keep, valid=active.ravel())
    grown = select.keep_top_k(jnp.abs(grad.weight).ravel(), n_drop, valid=(valid.ravel() & ~kept))
    new_active = (kept | grown).reshape(active.shape)
    new_connection = grown.reshape(active.shape) & ~active
    # New connections start at 0 (the reference's grow_tensor); dropped ones are zeroed.
    weights.append(jnp.where(new_connection, 0.0, value) * new_active)
    weight_masks.append(new_active)
    # Momentum survives only where the entry was active before and after.
    weight_trace.append(jnp.where(new_active & active, trace[index].weight, 0.0))
  new_masks = mask_ops.with_bias_rule(weight_masks)
  new_params, new_trace = [], []
  for index, (layer, mask, new_mask) in enumerate(zip(params, masks, new_masks)):
    old_bias = mask.bias.astype(bool)
    new_params.append(Layer(weights[index], layer.bias * new_mask.bias))
    new_trace.append(
      Layer(weight_trace[index], jnp.where(new_mask.bias & old_bias, trace[index].bias, 0.0))
    )
  return RunState(tuple(new_params), new_masks, tuple(new_trace))


RIGL = Method(
  name="rigl",
  at_init=rigl_at_init,
  grad_event=rigl_grad_event,
  grad_event_steps=rigl_grad_event_steps,
  host_counts=rigl_host_counts,
  description="RigL (ERK init, ΔT=100, α=0.3, T_end=0.75 I), drop |W| / grow |grad| (§E.9).",
)

METHODS: dict[str, Method] = {RIGL.name: RIGL}
