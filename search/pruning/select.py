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
    out.append(flat[start : start + size].reshape(layer.weight.shape))
    start += size
  return tuple(out)


def masks_from_flat(keep: jax.Array, like: Params) -> Params:
  """Bool masks (weights from the flat keep vector, biases by the rule)."""
  return mask_ops.with_bias_rule(unflat_weights(keep.astype(bool), like))


def threshold_keep(scores: jax.Array, index: jax.Array, strict: bool = True) -> jax.Array:
  """Reference selection: sort ascending, threshold = sorted[index], keep s > t (or >= t).

  With no ties and strict, this keeps N - index - 1 entries (the off-by-one the
  reference inherits, §H 2). On padded arrays the padding's zeros are sorted
  too: pass index = size - K (not N - K) to get the reference's threshold, or
  use `kth_largest` on scores set to -inf outside the network.
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
  return tuple(
    Layer(layer.weight * mask.weight, layer.bias * mask.bias)
    for layer, mask in zip(params, keep_masks)
  )


def weight_region(like: Params, num_weights: jax.Array) -> tuple:
  """Bool (out, in) per weight matrix: the entries of the real width-w network.

  w solves N(w) = 2w^2 + 3w = num_weights (traced; sqrt is exact in float32 for
  these perfect squares). The network occupies the top-left block of every
  matrix (§B.2, §I), so a network stored at its own width gets all-True.
  Needed where the reference looks at a whole tensor including its pruned
  zeros (SoS histograms, RigL growth) but must not see padding.
  """
  width = jnp.round((jnp.sqrt(9.0 + 8.0 * jnp.asarray(num_weights, jnp.float32)) - 3.0) / 4.0)
  width = width.astype(jnp.int32)
  regions = []
  for index, layer in enumerate(like):
    rows, cols = layer.weight.shape[-2:]
    row_ok = jnp.arange(rows) < (1 if index == 3 else width)
    col_ok = jnp.arange(cols) < (cols if index == 0 else width)
    regions.append(row_ok[:, None] & col_ok[None, :])
  return tuple(regions)
