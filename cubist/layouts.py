"""The layouts of the trainer's arithmetic: the forward pass, the loss, the evaluation.

One network, written once for one experiment (`cubist.mlp.layer_forward`,
portable arithmetic: cubist.portable), and vmapped over the chunk's experiments
with the experiment axis in one of two places:

- "unit": the experiment axis is minor (last), so XLA fuses each layer into
  elementwise loops vectorised over experiments. Fastest at widths <= ~4.
- "dot": the experiment axis leads. Faster at widths ~5-16.

Both are the same per-experiment arithmetic (a vmap changes no element's
operations), with every sum in an order written into the program up to
`mlp.PORTABLE_MAX_WIDTH` units: a run's bits do not depend on the CPU's
instruction set nor on the chunk it shares (wider layers use library matmuls).

- "gemm": the experiment axis leads and each layer is a batched matmul handed
  to XLA's library kernels (the training semantics of v4's "dot"). Fastest at
  wide widths, but those kernels choose their summation order from the CPU
  they run on: a "gemm" run's bits are machine-specific (the store says so).

Shapes: "dot"/"gemm" weight (E, out, in), bias (E, out), inputs (E, B, 2),
logits (E, B); "unit" weight (out, in, E), bias (out, E), inputs (B, 2, E),
logits (B, E).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cubist import portable
from cubist.mlp import Params, is_portable_width, layer_forward

FORMULATIONS = ("dot", "unit", "gemm")
# Layouts whose bits are the same on every CPU of one instruction-set class.
PORTABLE_LAYOUTS = ("dot", "unit")


def experiment_axis(formulation: str) -> int:
  """Where a layout keeps the experiment axis: 0 ("dot", "gemm") or -1 ("unit")."""
  return -1 if formulation == "unit" else 0


def is_portable(formulation: str, width: int) -> bool:
  """Whether a program of this layout and hidden width sums portably (cubist.portable):
  the bits are then the same on every CPU of one class."""
  return formulation in PORTABLE_LAYOUTS and is_portable_width(width)


@jax.custom_vjp
def _gemm_bias(hidden: jax.Array, bias: jax.Array) -> jax.Array:
  """v4's bias add: hidden (B, out) + bias (out,), bias gradient a pairwise sum over B."""
  return hidden + bias


_gemm_bias.defvjp(
  lambda hidden, bias: (hidden + bias, None),
  lambda _, grad: (grad, portable.pairwise_sum(grad, axis=0)),
)


def apply_gemm(params: Params, inputs: jax.Array) -> jax.Array:
  """mlp.apply for one experiment through library matmuls (machine-specific sums)."""
  hidden = inputs
  for index, layer in enumerate(params):
    hidden = _gemm_bias(hidden @ layer.weight.T, layer.bias)
    if index < len(params) - 1:
      hidden = jax.nn.relu(hidden)
  return hidden[..., 0]


def logits(params: Params, inputs: jax.Array, formulation: str, shared_inputs: bool = False):
  """Logits of every experiment: (E, B) in "dot"/"gemm", (B, E) in "unit".

  inputs: one (B, 2) batch per experiment in the layout, or with `shared_inputs`
  one (B, 2) batch for all. The portable layouts vmap `mlp.layer_forward` layer
  by layer, with a `portable.fence` between layers (speed only).
  """
  axis = experiment_axis(formulation)
  input_axis = None if shared_inputs else axis
  if formulation == "gemm":
    return jax.vmap(apply_gemm, in_axes=(axis, input_axis), out_axes=axis)(params, inputs)
  predicate = jnp.isfinite(jnp.ravel(inputs)[0])
  if shared_inputs:  # features first: (2, B) per experiment, the batch minor
    hidden = inputs.T
  else:
    hidden = jax.vmap(jnp.transpose, in_axes=axis, out_axes=axis)(inputs)
  for index, layer in enumerate(params):
    hidden = jax.vmap(layer_forward, in_axes=(axis, input_axis), out_axes=axis)(layer, hidden)
    hidden = portable.fence(hidden, predicate)
    if index < len(params) - 1:
      hidden = jax.nn.relu(hidden)
    input_axis = axis
  return jnp.take(hidden, 0, axis=0 if formulation == "unit" else 1)


def to_layout(tree, formulation: str):
  """Leading-E pytree -> the formulation's layout (E moved last for "unit")."""
  if formulation != "unit":
    return tree
  return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1), tree)


def from_layout(tree, formulation: str):
  if formulation != "unit":
    return tree
  return jax.tree.map(lambda a: jnp.moveaxis(a, -1, 0), tree)


def per_experiment(values: jax.Array, leaf: jax.Array, formulation: str) -> jax.Array:
  """Broadcast an (E,) vector against a leaf in the formulation's layout."""
  if formulation != "unit":
    return values.reshape(values.shape + (1,) * (leaf.ndim - 1))
  return values


@jax.custom_vjp
def bce_with_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Elementwise BCE-with-logits, max(z, 0) - z y + log(1 + exp(-|z|)).

  The same value as PyTorch's BCEWithLogitsLoss (and optax's), with one exp
  and one log1p forward; the gradient sigmoid(z) - y reuses exp(-|z|). At
  small widths the loss's transcendentals rival the network's arithmetic.
  """
  return _bce_forward(logits, labels)[0]


def _bce_forward(logits, labels):
  decay = jnp.exp(-jnp.abs(logits))
  loss = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(decay)
  return loss, (logits, labels, decay)


def _bce_backward(saved, grad):
  logits, labels, decay = saved
  sigmoid = jnp.where(logits >= 0, 1.0, decay) / (1.0 + decay)
  return grad * (sigmoid - labels), -grad * logits


bce_with_logits.defvjp(_bce_forward, _bce_backward)


def gather(x: jax.Array, y: jax.Array, indices: jax.Array, formulation: str):
  """Inputs and labels for row indices: (E, B, 2) and (E, B), or in "unit" (B, 2, E) and
  (B, E) with x given as columns (2, N) (the per-column gathers are faster there)."""
  if formulation != "unit":
    return x[indices], y[indices]
  return jnp.stack([x[0][indices], x[1][indices]], axis=1), y[indices]


def losses(params: Params, inputs, labels, formulation: str) -> jax.Array:
  """Per-experiment mean BCE over the batch, shape (E,)."""
  batch_axis = 0 if formulation == "unit" else 1
  per_point = bce_with_logits(logits(params, inputs, formulation), labels)
  if formulation == "gemm":
    return per_point.mean(axis=batch_axis)  # v4's reduction, machine-specific like its matmuls
  return portable.mean(per_point, axis=batch_axis)


def evaluate(params: Params, x: jax.Array, y: jax.Array, formulation: str, eval_block: int):
  """Accuracy and mean loss of every experiment on all points, in blocks of `eval_block`.

  The data are padded to a whole number of blocks; padded points are weighted 0.
  """
  block = min(eval_block, x.shape[0])
  num_blocks = -(-x.shape[0] // block)
  pad = num_blocks * block - x.shape[0]
  weights = jnp.pad(jnp.ones(x.shape[0], jnp.float32), (0, pad)).reshape(num_blocks, block)
  xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(num_blocks, block, 2)
  ys = jnp.pad(y, (0, pad)).reshape(num_blocks, block)
  unit = formulation == "unit"
  batch_axis = 0 if unit else 1

  def body(totals, blocks):
    x_block, y_block, w_block = blocks
    block_logits = logits(params, x_block, formulation, shared_inputs=True)
    weight = w_block[:, None] if unit else w_block[None, :]
    labels = y_block[:, None] if unit else y_block[None, :]
    correct = ((block_logits > 0).astype(jnp.float32) == labels).astype(jnp.float32)
    loss = bce_with_logits(block_logits, labels)
    return (
      totals[0] + portable.pairwise_sum(correct * weight, axis=batch_axis),
      totals[1] + portable.pairwise_sum(loss * weight, axis=batch_axis),
    ), None

  experiments = jax.tree.leaves(params)[0].shape[experiment_axis(formulation)]
  zeros = jnp.zeros((experiments,), jnp.float32)
  (correct, loss_sum), _ = jax.lax.scan(body, (zeros, zeros), (xs, ys, weights))
  return correct / x.shape[0], loss_sum / x.shape[0]
