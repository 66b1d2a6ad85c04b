"""Train only the live units: gather a network's live hidden units to the front (ARCHITECTURE 10).

A run whose mask is fixed for the rest of its training need not pay for its
full width. A hidden unit is *live* when it can reach the output through the
mask (METHODS §G.1's backward-reachable set B_l, computed on mask bits): only
live units influence the logits. The engine gathers the live units of every
hidden layer to the front, in their order, trains the compact network in the
smallest bucket width that holds it, and scatters the result back to the full
width for the store.

What happens to the rest: a masked-in weight or bias of a unit that is not
live gets an exactly zero gradient (no path carries a loss signal to it), so
its value only follows PyTorch SGD's weight decay and momentum, a recurrence
that needs no data (`cubist.train.make_decay`). Those entries (`dropped`) are
advanced by that recurrence and scattered back too, so disconnected weights
stay in the store and in its NNZ counts exactly as full-width training leaves
them (they are what METHODS §G.1 counts).

Exactness: in the portable layouts every unit's input sum runs over its inputs
in index order (cubist.portable), so the dropped units' exact-zero terms change
no partial sum; but XLA may contract a multiply and an add into one FMA in the
program of one width and not in the other's, so compaction can move results by
float rounding (without FMA they are equal bit for bit, tested): the trained
width is part of the training semantics (cubist.semantics) and of every row.
In the library-matmul layout ("gemm") the kernels block sums by their length too.

All functions work on ONE network (host-side numpy), weights (out, in).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cubist.mlp import Layer, Params, layer_shapes

# Widths a compact network is trained at: exact up to 4 (the per-unit layout, whose
# cost grows with the width), then powers of two. Measured on a 2-core CPU
# (bench_pruning.json, plain training): a batched-matmul run at width 8 is faster
# than at 6, and compacted runs split over the widths 5, 6, 7, 8 trained as four
# small programs cost 2-3x one program at 8 (per-step overhead, not arithmetic,
# dominates below 16). Few widths also mean few compilations.
BUCKET_WIDTHS = (1, 2, 3, 4, 8, 16, 32, 64, 128, 256)


def live_units(masks: Params) -> list[np.ndarray]:
  """Per hidden layer, bool (w,): the units with a masked-in path to the output (B_l)."""
  weights = [np.asarray(layer.weight, bool) for layer in masks]
  reach = np.ones(1, bool)  # the output unit
  live = []
  for weight in reversed(weights[1:]):  # W4, W3, W2: (out, in)
    reach = np.any(weight & reach[:, None], axis=0)
    live.insert(0, reach)
  return live


def bucket_width(width: int) -> int:
  """The smallest bucket width that holds `width` units (widths beyond the last stay)."""
  return next((b for b in BUCKET_WIDTHS if b >= width), width)


class Compaction(NamedTuple):
  """How one network maps into its compact form.

  units: per hidden layer, int (k_l,) the live units' indices, ascending.
  width: the bucket width of the compact network (>= every k_l, >= 1).
  full_width: the network's width.
  dropped: per layer, (weight bool (out, in), bias bool (out,)) at the full
    width: the masked-in entries of units that are not live.
  """

  units: tuple[np.ndarray, np.ndarray, np.ndarray]
  width: int
  full_width: int
  dropped: Params


def plan(masks: Params) -> Compaction:
  """The compaction of a network with these (full-width, bool) masks."""
  masks = tuple(Layer(np.asarray(l.weight, bool), np.asarray(l.bias, bool)) for l in masks)
  live = live_units(masks)
  units = tuple(np.flatnonzero(layer) for layer in live)
  full_width = masks[0].weight.shape[0]
  # Never wider than the network itself (a width-6 network with 5 live units: 6, not 8).
  width = min(bucket_width(max(1, *(len(u) for u in units))), full_width)
  out_live = [*live, np.ones(1, bool)]
  dropped = tuple(
    Layer(m.weight & ~out_live[l][:, None], m.bias & ~out_live[l]) for l, m in enumerate(masks)
  )
  return Compaction(units, width, full_width, dropped)


def _indices(compaction: Compaction):
  """(rows, cols) index arrays per layer: the full-width entries of the compact block."""
  hidden = list(compaction.units)
  rows = [*hidden, np.zeros(1, int)]
  cols = [np.arange(2), *hidden]
  return rows, cols


def gather(tree: Params, compaction: Compaction, width: int | None = None) -> Params:
  """A full-width network (params or masks) as its compact network (zeros beyond the live
  units), at the compaction's width or a wider one."""
  rows, cols = _indices(compaction)
  out = []
  for l, ((weight_shape, bias_shape), layer) in enumerate(
    zip(layer_shapes(width or compaction.width), tree)
  ):
    weight = np.zeros(weight_shape, np.asarray(layer.weight).dtype)
    bias = np.zeros(bias_shape, np.asarray(layer.bias).dtype)
    weight[: len(rows[l]), : len(cols[l])] = np.asarray(layer.weight)[np.ix_(rows[l], cols[l])]
    bias[: len(rows[l])] = np.asarray(layer.bias)[rows[l]]
    out.append(Layer(weight, bias))
  return tuple(out)


def scatter(compact: Params, into: Params, compaction: Compaction) -> Params:
  """`into` (full width) with the compact network's entries written back in place."""
  rows, cols = _indices(compaction)
  out = []
  for l, (small, big) in enumerate(zip(compact, into)):
    weight, bias = np.array(big.weight), np.array(big.bias)
    weight[np.ix_(rows[l], cols[l])] = np.asarray(small.weight)[: len(rows[l]), : len(cols[l])]
    bias[rows[l]] = np.asarray(small.bias)[: len(rows[l])]
    out.append(Layer(weight, bias))
  return tuple(out)


def zeros(compaction: Compaction) -> Params:
  """A full-width network of zeros (float32)."""
  return tuple(
    Layer(np.zeros(w, np.float32), np.zeros(b, np.float32))
    for w, b in layer_shapes(compaction.full_width)
  )


def full_masks(compact: Params, compaction: Compaction) -> Params:
  """The full-width bool masks of a network from its compact masks and its dropped entries."""
  live = scatter(
    compact,
    tuple(
      Layer(np.zeros(w, bool), np.zeros(b, bool)) for w, b in layer_shapes(compaction.full_width)
    ),
    compaction,
  )
  return tuple(
    Layer(l.weight | d.weight, l.bias | d.bias) for l, d in zip(live, compaction.dropped)
  )


def dropped_values(params: Params, compaction: Compaction) -> np.ndarray:
  """The dropped entries of a full-width network, flattened in layer order (weight, bias)."""
  return np.concatenate(
    [
      np.asarray(array)[mask]
      for layer, dropped in zip(params, compaction.dropped)
      for array, mask in ((layer.weight, dropped.weight), (layer.bias, dropped.bias))
    ]
  )


def with_dropped(params: Params, values: np.ndarray, compaction: Compaction) -> Params:
  """`params` with its dropped entries replaced by `values` (the order of `dropped_values`)."""
  out, start = [], 0
  for layer, dropped in zip(params, compaction.dropped):
    arrays = []
    for array, mask in ((layer.weight, dropped.weight), (layer.bias, dropped.bias)):
      array = np.array(array)
      count = int(mask.sum())
      array[mask] = values[start : start + count]
      start += count
      arrays.append(array)
    out.append(Layer(*arrays))
  return tuple(out)
