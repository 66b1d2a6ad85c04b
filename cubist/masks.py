"""Mask algebra: structured masks, the bias-mask rule, NNZ counts, connectivity.

A mask is a `Params`-shaped tuple of `Layer(weight_mask, bias_mask)` with bool
entries (METHODS §B.3). Functions here work on one network; vmap them for a
leading experiment axis. Counting functions take *values* (weights after
masking), as the reference does: an active weight that is exactly 0.0 does not
count (§B.4).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from cubist.mlp import INPUT_DIM, Layer, Params, layer_shapes


def structured_masks(widths: tuple[int, int, int], full_width: int) -> Params:
  """All-ones top-left blocks for hidden widths (d1, d2, d3) inside `full_width` (§D.2).

  Biases are kept on the first d_l units and on the classifier.
  """
  validate_widths(widths, full_width)
  d1, d2, d3 = widths
  masks = []
  for (weight_shape, bias_shape), (rows, cols) in zip(
    layer_shapes(full_width), ((d1, INPUT_DIM), (d2, d1), (d3, d2), (1, d3))
  ):
    weight = np.zeros(weight_shape, bool)
    weight[:rows, :cols] = True
    bias = np.zeros(bias_shape, bool)
    bias[:rows] = True
    masks.append(Layer(weight, bias))
  return tuple(masks)


def validate_widths(widths, full_width: int) -> None:
  """One-line ValueError unless widths is three integers in 1..full_width."""
  if len(widths) != 3:
    raise ValueError(f"widths={tuple(widths)} must be three hidden widths (d1, d2, d3)")
  for name, value in zip(("d1", "d2", "d3"), widths):
    if int(value) != value or not 1 <= value <= full_width:
      raise ValueError(f"{name}={value} is outside 1..{full_width}")


def bias_masks_from_weights(weight_masks) -> tuple:
  """The reference bias-mask rule (§B.3) from the four weight masks.

  Hidden unit j of layer l keeps its bias iff column j of W_{l+1}'s mask has a
  nonzero, i.e. the unit has an outgoing connection. Incoming connectivity is
  ignored (a unit with no inputs but an output acts as the constant relu(b)).
  The classifier bias is always kept.
  """
  hidden = [jnp.any(weight_masks[l + 1], axis=-2) for l in range(3)]
  output = jnp.ones(weight_masks[3].shape[:-2] + (1,), bool)
  return (*hidden, output)


def with_bias_rule(weight_masks) -> Params:
  """Full masks (weights and biases) from weight masks by the bias-mask rule."""
  biases = bias_masks_from_weights(weight_masks)
  return tuple(Layer(jnp.asarray(w, bool), b) for w, b in zip(weight_masks, biases))


def validate_masks(masks: Params, full_width: int) -> None:
  """One-line ValueError for a mask of the wrong structure, shape or dtype."""
  if len(masks) != 4:
    raise ValueError(f"masks must have 4 layers, got {len(masks)}")
  for index, (layer, (weight_shape, bias_shape)) in enumerate(
    zip(masks, layer_shapes(full_width)), start=1
  ):
    for kind, array, shape in (
      ("weight", layer.weight, weight_shape),
      ("bias", layer.bias, bias_shape),
    ):
      array = np.asarray(array)
      if array.dtype != np.bool_:
        raise ValueError(f"mask layer{index}_{kind} has dtype {array.dtype}, expected bool")
      if array.shape != shape:
        raise ValueError(
          f"mask layer{index}_{kind} has shape {array.shape}, expected {shape} "
          f"for width {full_width}"
        )


def weight_nnz(params: Params) -> jax.Array:
  """Number of nonzero weight values in W1..W4 (§B.4)."""
  return sum(jnp.count_nonzero(layer.weight, axis=(-2, -1)) for layer in params)


def model_nnz(params: Params) -> jax.Array:
  """Number of nonzero values over all eight tensors, weights and biases (§B.4)."""
  return weight_nnz(params) + sum(jnp.count_nonzero(layer.bias, axis=-1) for layer in params)


def dense_weight_count(widths: tuple[int, int, int]) -> int:
  """Weights of the dense 2 -> d1 -> d2 -> d3 -> 1 network: 2 d1 + d1 d2 + d2 d3 + d3."""
  d1, d2, d3 = widths
  return 2 * d1 + d1 * d2 + d2 * d3 + d3


def dense_bias_count(widths: tuple[int, int, int]) -> int:
  """Biases of the 2 -> d1 -> d2 -> d3 -> 1 network: d1 + d2 + d3 hidden and the output's."""
  return sum(widths) + 1


def dense_parameter_count(widths: tuple[int, int, int]) -> int:
  """P(d1,d2,d3): the dense weights and biases, for phase-1 selection."""
  return dense_weight_count(widths) + dense_bias_count(widths)


def connectivity(params: Params) -> dict[str, jax.Array]:
  """Effective (path) weights, disconnected weights and dead units (§G.1).

  A nonzero weight W_l[j, i] is effective iff its input unit i is reachable
  forward from the inputs and its output unit j reaches the output backward.
  A hidden unit is structurally dead unless it is in both sets. Two boolean
  sweeps; vmaps over a leading axis. Strict path definition: a unit with no
  incoming path but a live bias is still dead and its weights disconnected.

  Returns {"effective_weight_nnz", "disconnected_weight_nnz", "dead_units"}.
  """
  edges = [layer.weight != 0 for layer in params]  # (out, in) each
  forward = [jnp.ones(edges[0].shape[:-2] + (INPUT_DIM,), bool)]
  for edge in edges:
    forward.append(jnp.any(edge & forward[-1][..., None, :], axis=-1))
  backward = [jnp.ones(edges[3].shape[:-2] + (1,), bool)]
  for edge in reversed(edges):
    backward.insert(0, jnp.any(edge & backward[0][..., :, None], axis=-2))
  effective = sum(
    jnp.count_nonzero(
      edge & forward[l][..., None, :] & backward[l + 1][..., :, None], axis=(-2, -1)
    )
    for l, edge in enumerate(edges)
  )
  live_units = [forward[l] & backward[l] for l in range(1, 4)]
  # A dead unit only matters if the layer slot exists; padded units are always
  # unreachable, so count dead units among units that carry any weight or bias.
  present = used_units(params)
  dead = sum(jnp.count_nonzero(p & ~live, axis=-1) for p, live in zip(present, live_units))
  nnz = weight_nnz(params)
  return {
    "effective_weight_nnz": effective,
    "disconnected_weight_nnz": nnz - effective,
    "dead_units": dead,
  }


def pack_masks(masks: Params) -> tuple[bytes, str]:
  """Pack one network's masks to bytes (np.packbits over the 8 flattened arrays).

  Returns (blob, shapes_json), the shapes in layer order weight, bias.
  """
  arrays = [np.asarray(a, bool) for layer in masks for a in layer]
  flat = np.concatenate([a.ravel() for a in arrays])
  return np.packbits(flat).tobytes(), json.dumps([list(a.shape) for a in arrays])


def unpack_masks(blob: bytes, shapes_json: str) -> Params:
  """Inverse of `pack_masks`."""
  shapes = [tuple(s) for s in json.loads(shapes_json)]
  sizes = [int(np.prod(s)) for s in shapes]
  flat = np.unpackbits(np.frombuffer(blob, np.uint8), count=sum(sizes)).astype(bool)
  arrays, offset = [], 0
  for shape, size in zip(shapes, sizes):
    arrays.append(flat[offset : offset + size].reshape(shape))
    offset += size
  return tuple(Layer(arrays[2 * i], arrays[2 * i + 1]) for i in range(len(arrays) // 2))


def used_units(masks: Params) -> list:
  """Per hidden layer, bool (..., w): units that carry any weight (in or out) or a bias.

  `masks` may be bool masks or values (nonzero = present), numpy or jax, with
  any leading axes. A unit that is not used is inert: removing it changes no
  computation. (Whether a used unit can also reach the output is
  `connectivity`'s question.)
  """
  present = [(layer.weight != 0, layer.bias != 0) for layer in masks]
  return [
    present[l][0].any(axis=-1) | present[l + 1][0].any(axis=-2) | present[l][1] for l in range(3)
  ]


def occupied_width(masks: Params) -> int:
  """Smallest hidden width holding every used unit: slicing to it is exact.

  Units beyond it have all-zero weight rows/columns and biases in the mask, so
  they are inert and removing them changes no computation.
  """
  used = 0
  for unit_used in used_units(
    tuple(Layer(np.asarray(l.weight), np.asarray(l.bias)) for l in masks)
  ):
    while unit_used.ndim > 1:
      unit_used = np.any(unit_used, axis=0)
    indices = np.flatnonzero(unit_used)
    if indices.size:
      used = max(used, int(indices[-1]) + 1)
  return max(used, 1)
