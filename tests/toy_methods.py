"""Pieces of toy training methods shared by the tests of the engine's method stages."""

from __future__ import annotations

import jax.numpy as jnp

from cubist import masks as mask_ops


def first_weights_masks(params, count):
  """Masks keeping the first `count` weights in the flat W1..W4 order (a traced count),
  with the bias-mask rule: a deterministic at-init choice for toy methods."""
  sizes = [layer.weight.size for layer in params]
  flat = jnp.arange(sum(sizes)) < count
  weights, start = [], 0
  for layer, size in zip(params, sizes):
    weights.append(flat[start : start + size].reshape(layer.weight.shape))
    start += size
  return mask_ops.with_bias_rule(tuple(weights))
