"""The two layouts of the trainer's arithmetic: the forward pass, the loss, the evaluation.

- "dot": the experiment axis leads and each layer is a batched matmul
  (vmap of x @ W.T). Best for wide layers.
- "unit": the experiment axis is minor (last) and each hidden unit is an
  explicit sum over its inputs, so XLA fuses a layer into elementwise loops that
  vectorise over experiments. Far faster than tiny batched matmuls for w <= ~4.

Both give the same results up to float rounding (tested); which one trained a
run is part of its bits (the store records it). Sums whose order XLA would
otherwise pick by chunk size are written as fixed pairwise halvings, so a run
does not depend on the chunk it shares.

Shapes: "dot" layout weight (E, out, in), bias (E, out), inputs (E, B, 2),
logits (E, B); "unit" layout weight (out, in, E), bias (out, E), inputs
(2, B, E), logits (B, E).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cubist.mlp import Params

FORMULATIONS = ("dot", "unit")


def pairwise_sum(values: jax.Array, axis: int) -> jax.Array:
  """Sum over `axis` by repeated halving: one fixed order of additions.

  XLA vectorises a plain reduction differently depending on the sizes of the
  other axes, i.e. on the chunk size, which moves results by an ulp that grows
  chaotically over 19,500 steps. Elementwise adds of fixed halves do not.
  """
  values = jnp.moveaxis(values, axis, 0)
  while values.shape[0] > 1:
    half = values.shape[0] // 2
    summed = values[:half] + values[half : 2 * half]
    values = jnp.concatenate([summed, values[2 * half :]]) if values.shape[0] % 2 else summed
  return values[0]


@jax.custom_vjp
def add_bias(hidden: jax.Array, bias: jax.Array) -> jax.Array:
  """hidden (B, out) + bias (out,), whose bias gradient is a `pairwise_sum` over B."""
  return hidden + bias


add_bias.defvjp(
  lambda hidden, bias: (hidden + bias, None), lambda _, grad: (grad, pairwise_sum(grad, axis=0))
)


def apply_one(params: Params, inputs: jax.Array) -> jax.Array:
  """mlp.apply for one experiment, with chunk-size-independent bias gradients."""
  hidden = inputs
  for index, layer in enumerate(params):
    hidden = add_bias(hidden @ layer.weight.T, layer.bias)
    if index < len(params) - 1:
      hidden = jax.nn.relu(hidden)
  return hidden[..., 0]


def logits_dot(params: Params, inputs: jax.Array) -> jax.Array:
  return jax.vmap(apply_one)(params, inputs)


def logits_unit(params: Params, inputs: jax.Array) -> jax.Array:
  hidden = list(inputs)  # one (B, E) array per unit
  for index, layer in enumerate(params):
    pre = [
      sum(h * layer.weight[j, i] for i, h in enumerate(hidden)) + layer.bias[j]
      for j in range(layer.weight.shape[0])
    ]
    hidden = pre if index == len(params) - 1 else [jax.nn.relu(p) for p in pre]
  return hidden[0]


def to_layout(tree, formulation: str):
  """Leading-E pytree -> the formulation's layout (E moved last for "unit")."""
  if formulation == "dot":
    return tree
  return jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1), tree)


def from_layout(tree, formulation: str):
  if formulation == "dot":
    return tree
  return jax.tree.map(lambda a: jnp.moveaxis(a, -1, 0), tree)


def per_experiment(values: jax.Array, leaf: jax.Array, formulation: str) -> jax.Array:
  """Broadcast an (E,) vector against a leaf in the formulation's layout."""
  if formulation == "dot":
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
  """Inputs and labels for row indices: (E, B) for "dot", (B, E) for "unit"."""
  if formulation == "dot":
    return x[indices], y[indices]
  return jnp.stack([x[0][indices], x[1][indices]]), y[indices]  # x is (2, N) here


def losses(params: Params, inputs, labels, formulation: str) -> jax.Array:
  """Per-experiment mean BCE over the batch, shape (E,)."""
  if formulation == "dot":
    logits = logits_dot(params, inputs)
    return bce_with_logits(logits, labels).mean(axis=1)
  logits = logits_unit(params, inputs)
  return bce_with_logits(logits, labels).mean(axis=0)


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

  def body(totals, blocks):
    x_block, y_block, w_block = blocks
    if formulation == "dot":
      experiments = jax.tree.leaves(params)[0].shape[0]
      logits = logits_dot(params, jnp.broadcast_to(x_block, (experiments,) + x_block.shape))
      weight = w_block[None, :]
      labels = y_block[None, :]
      axis = 1
    else:
      logits = logits_unit(params, x_block.T[:, :, None])
      weight = w_block[:, None]
      labels = y_block[:, None]
      axis = 0
    correct = ((logits > 0).astype(jnp.float32) == labels).astype(jnp.float32)
    loss = bce_with_logits(logits, labels)
    return (
      totals[0] + pairwise_sum(correct * weight, axis=axis),
      totals[1] + pairwise_sum(loss * weight, axis=axis),
    ), None

  experiments = jax.tree.leaves(params)[0].shape[0 if formulation == "dot" else -1]
  zeros = jnp.zeros((experiments,), jnp.float32)
  (correct, loss_sum), _ = jax.lax.scan(body, (zeros, zeros), (xs, ys, weights))
  return correct / x.shape[0], loss_sum / x.shape[0]
