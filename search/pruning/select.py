"""Global selection of weights by score, with the reference's and exact count semantics.

All pruning methods of paper (1) score the weights of all four matrices
together (biases are never scored; their masks follow the bias rule, §B.3) and
keep the best ones. The reference does it with a threshold read off a sorted
array at an index computed in Python floats, and a strict or non-strict
comparison; `count_mode="exact"` keeps exactly k, ties broken by index
(METHODS §E.10, §I "Top-k with per-model k"). Counts `k` may be traced
per-experiment integers: nothing here depends on them statically.

One experiment; vmap for a leading axis. `flat` vectors concatenate W1..W4
row-major (PyTorch orientation), length N(w) = 2w^2 + 3w.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cubist import masks as mask_ops
from cubist.mlp import Layer, Params


def flat_weights(params: Params) -> jax.Array:
  """The four weight matrices (or weight masks) concatenated: (N,)."""
  return jnp.concatenate([jnp.ravel(layer.weight) for layer in params])


def unflat_weights(flat: jax.Array, like: Params) -> tuple:
  """Split a flat (N,) vector back into four arrays shaped like `like`'s weights."""
  out, start = [], 0
  for layer in like:
    size = layer.weight.size
    out.append(flat[start:start + size].reshape(layer.weight.shape))
    start += size
  return tuple(out)


def masks_from_flat(keep: jax.Array, like: Params) -> Params:
  """Bool masks (weights from the flat keep vector, biases by the rule)."""
  return mask_ops.with_bias_rule(unflat_weights(keep.astype(bool), like))


def threshold_keep(scores: jax.Array, index: jax.Array, strict: bool = True) -> jax.Array:
  """Reference selection: sort ascending, threshold = sorted[index], keep s > t (or >= t).

  With no ties and strict, this keeps N - index - 1 entries (the off-by-one the
  reference inherits, §H 2).
  """
  threshold = jnp.sort(scores)[jnp.clip(index, 0, scores.shape[0] - 1)]
  return scores > threshold if strict else scores >= threshold


def kth_largest(scores: jax.Array, k: jax.Array) -> jax.Array:
  """The k-th largest score (1-based k), e.g. SNIP's `acceptable_score`."""
  descending = -jnp.sort(-scores)
  return descending[jnp.clip(k - 1, 0, scores.shape[0] - 1)]


def keep_top_k(scores: jax.Array, k: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Exactly min(k, #valid) entries with the highest scores; ties go to the lower index.

  valid: bool (N,) entries that may be kept (e.g. inside the run's width mask).
  """
  if valid is not None:
    scores = jnp.where(valid, scores, -jnp.inf)
  order = jnp.argsort(-scores, stable=True)
  ranks = jnp.zeros_like(order).at[order].set(jnp.arange(scores.shape[0]))
  keep = ranks < k
  return keep if valid is None else keep & valid


def apply_weight_keep(params: Params, keep_masks: Params) -> Params:
  """Zero pruned weights and the biases the rule removes."""
  return tuple(Layer(layer.weight * mask.weight, layer.bias * mask.bias)
               for layer, mask in zip(params, keep_masks))
