"""Portable float arithmetic: every sum in an order written into the program.

Why (README, "Portable bits"): XLA on CPU hands a dot, and a plain
`reduce_sum`, to a library kernel (YNNPACK, Eigen) that picks its blocking and
its vector accumulators from the CPU it runs on (AVX-512 here, AVX2 there), so
the same program summed in another order on another machine, and 19,500 SGD
steps turned the last-bit difference into other accuracies. Automatic
differentiation adds reductions of its own: the gradient of a broadcast (a
bias added to every row of a batch, a weight multiplying every example) is a
`reduce_sum`.

Here every sum is a chain of elementwise adds in a fixed association, so
nothing is left for a kernel to reorder:
- `sequential_sum` ((v0 + v1) + v2) + ... for sums over units (a layer's
  inputs or outputs): the inert units of a padded width add exact zeros;
- `pairwise_sum` (repeated halving) for sums over a batch or data points;
- `expand` broadcasts along a new axis with one of those sums as its gradient,
  and `ordered_sum` has the broadcast as its gradient, so gradients (and
  gradients of gradients: GraSP, ProsPr) contain no reduction either.

`dense`, `add_bias` and `mean` build the network's arithmetic from these, with
the activations features-first (in, B): the batch is the minor axis.

What is left to the machine: XLA contracts `a * b + c` into one fused
multiply-add where the CPU has FMA, and decides which pairs to contract from
the program alone (its fusions), never from the CPU. So one program gives the
same bits on every x86-64 CPU with FMA (AVX2 or AVX-512 alike: XLA emits
256-bit vectors on both), other bits on a CPU without FMA, and two programs of
the same arithmetic (another layout, a compact width) may differ by the
rounding of an FMA. cubist.machine records the class a row was trained on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def pairwise_sum(values: jax.Array, axis: int) -> jax.Array:
  """Sum over `axis` by repeated halving: (v0 + v_h) + ..., one fixed order of additions."""
  axis = axis % values.ndim
  while values.shape[axis] > 1:
    size = values.shape[axis]
    half = size // 2
    summed = jax.lax.slice_in_dim(values, 0, half, axis=axis) + jax.lax.slice_in_dim(
      values, half, 2 * half, axis=axis
    )
    if size % 2:
      summed = jnp.concatenate(
        [summed, jax.lax.slice_in_dim(values, 2 * half, size, axis=axis)], axis
      )
    values = summed
  return jax.lax.index_in_dim(values, 0, axis=axis, keepdims=False)


def sequential_sum(values: jax.Array, axis: int) -> jax.Array:
  """Sum over `axis` left to right: ((v0 + v1) + v2) + ...; trailing zeros add exactly."""
  axis = axis % values.ndim
  total = jax.lax.index_in_dim(values, 0, axis=axis, keepdims=False)
  for index in range(1, values.shape[axis]):
    total = total + jax.lax.index_in_dim(values, index, axis=axis, keepdims=False)
  return total


_SUMS = {"pairwise": pairwise_sum, "sequential": sequential_sum}


# `ordered_sum` and `expand` are each other's transpose, and each says so in its
# custom VJP: the gradient of a sum is a plain broadcast (not the pads and adds
# of differentiating its slices), and the gradient of a broadcast is the sum in
# the same order (not XLA's reduce). Gradients of gradients stay in the pair.


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def ordered_sum(values: jax.Array, axis: int, order: str) -> jax.Array:
  """`pairwise_sum` or `sequential_sum` by name ("pairwise", "sequential"); `axis` >= 0."""
  return _SUMS[order](values, axis)


def _sum_fwd(values, axis, order):
  return ordered_sum(values, axis, order), values.shape[axis]


def _sum_bwd(axis, order, size, grad):
  return (expand(grad, axis, size, order),)


ordered_sum.defvjp(_sum_fwd, _sum_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def expand(x: jax.Array, axis: int, size: int, order: str) -> jax.Array:
  """x with a new axis of `size` copies inserted at `axis` (>= 0, an index of the result).

  Its gradient sums the copies with `ordered_sum(..., order)`, never XLA's reduce.
  """
  expanded = jnp.expand_dims(x, axis)
  shape = list(expanded.shape)
  shape[axis] = size
  return jnp.broadcast_to(expanded, tuple(shape))


def _expand_fwd(x, axis, size, order):
  return expand(x, axis, size, order), None


def _expand_bwd(axis, size, order, _, grad):
  return (ordered_sum(grad, axis, order),)


expand.defvjp(_expand_fwd, _expand_bwd)


def fence(values: jax.Array, predicate: jax.Array) -> jax.Array:
  """`values`, unchanged, computed once and kept, and so is its gradient.

  Speed only, never bits: XLA on CPU otherwise fuses a layer's sums into every
  consumer and recomputes them once per unit of the next layer (or of a weight
  gradient). A conditional is a boundary XLA does not fuse across (CPU drops
  `optimization_barrier`s); `predicate` is any runtime bool that is the same for
  the whole chunk (both branches are the identity: v * 1.0 is exact).
  """
  return jax.lax.cond(predicate, lambda v: v, lambda v: v * 1.0, values)


def _accumulate(weight: jax.Array, hidden: jax.Array) -> jax.Array:
  """sum over i of weight[:, i] (x) hidden[i], left to right: (out, in), (in, B) -> (out, B).

  The broadcasts are `expand`s even here: a gradient of a gradient (GraSP, ProsPr)
  differentiates `dense`'s forward rule as plain code, and a plain broadcast's
  gradient would be XLA's reduce.
  """
  (out, inputs), batch = weight.shape, hidden.shape[-1]
  total = None
  for index in range(inputs):
    column = jax.lax.index_in_dim(weight, index, axis=1, keepdims=False)
    row = jax.lax.index_in_dim(hidden, index, axis=0, keepdims=False)
    term = expand(column, 1, batch, "pairwise") * expand(row, 0, out, "sequential")
    total = term if total is None else total + term
  return total


@jax.custom_vjp
def dense(weight: jax.Array, hidden: jax.Array) -> jax.Array:
  """weight (out, in) @ hidden (in, B) -> (out, B), portably (features first, batch last).

  Products summed over `in` left to right; the gradient sums over `out` left to
  right for `hidden` (the same accumulation with weight.T), and pairwise over the
  batch for `weight`. Each sum is one loop over (units, batch) with the batch
  minor; no (out, in, B) array is stored in the forward pass.
  """
  return _accumulate(weight, hidden)


def _dense_fwd(weight, hidden):
  return _accumulate(weight, hidden), (weight, hidden)


def _dense_bwd(saved, grad):
  weight, hidden = saved
  out, inputs = weight.shape
  grad_hidden = dense(weight.T, grad)
  products = expand(grad, 1, inputs, "sequential") * expand(hidden, 0, out, "sequential")
  return ordered_sum(products, 2, "pairwise"), grad_hidden


dense.defvjp(_dense_fwd, _dense_bwd)


def add_bias(hidden: jax.Array, bias: jax.Array) -> jax.Array:
  """hidden (out, B) + bias (out,), whose bias gradient is a pairwise sum over B."""
  return hidden + expand(bias, 1, hidden.shape[-1], "pairwise")


def mean(values: jax.Array, axis: int) -> jax.Array:
  """Mean over `axis`: a pairwise sum divided by the count."""
  axis = axis % values.ndim
  return ordered_sum(values, axis, "pairwise") / values.shape[axis]


def total(values: jax.Array) -> jax.Array:
  """The sum of every element, flattened, pairwise."""
  return ordered_sum(jnp.ravel(values), 0, "pairwise")


def vdot(a: jax.Array, b: jax.Array) -> jax.Array:
  """sum(a * b) over every element, flattened, pairwise."""
  return total(a * b)
