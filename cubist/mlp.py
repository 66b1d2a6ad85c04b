"""The 4-layer ReLU MLP of the Cubist-Spiral study, as pure functions (METHODS §B).

    f(x) = W4 relu(W3 relu(W2 relu(W1 x + b1) + b2) + b3) + b4

Parameters are a tuple of four `Layer(weight, bias)` records with weights in
PyTorch orientation (out_features, in_features), so that masks, the authors'
npz initialisations and the enumeration of masks (rows = output units) all
share one orientation. Shapes at width w: W1 (w, 2), W2 (w, w), W3 (w, w),
W4 (1, w); biases (w,), (w,), (w,), (1,). Batched versions carry a leading
experiment axis on every array.

Narrower networks are not separate models: the combinatorial search carves
them out of the width-16 model with masks (§B.2), so the init scale is the
full width's.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cubist import portable

INPUT_DIM = 2
NUM_LAYERS = 4


class Layer(NamedTuple):
  """One linear layer: weight (out, in) and bias (out,). Also used for masks."""

  weight: jax.Array
  bias: jax.Array


Params = tuple[Layer, Layer, Layer, Layer]


def layer_shapes(width: int) -> tuple[tuple[tuple[int, int], tuple[int]], ...]:
  """((weight_shape, bias_shape), ...) for the four layers at hidden width `width`."""
  return (
    ((width, INPUT_DIM), (width,)),
    ((width, width), (width,)),
    ((width, width), (width,)),
    ((1, width), (1,)),
  )


def num_weights(width: int) -> int:
  """N(w) = 2w + w^2 + w^2 + w: the number of weights (no biases) at width w."""
  return 2 * width * width + 3 * width


def init(key: jax.Array, width: int) -> Params:
  """PyTorch-default `nn.Linear` init at hidden width `width` (§B.2).

  kaiming_uniform(a=sqrt(5)) reduces to W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
  and the bias uses the same bound. fan_in is the full layer's in-features.
  """
  keys = jax.random.split(key, 2 * NUM_LAYERS)
  layers = []
  for index, (weight_shape, bias_shape) in enumerate(layer_shapes(width)):
    bound = 1.0 / np.sqrt(weight_shape[1])
    weight = jax.random.uniform(keys[2 * index], weight_shape, jnp.float32, -bound, bound)
    bias = jax.random.uniform(keys[2 * index + 1], bias_shape, jnp.float32, -bound, bound)
    layers.append(Layer(weight, bias))
  return tuple(layers)


def xavier_normal_weights(key: jax.Array, params: Params) -> Params:
  """Re-draw every weight matrix with Xavier-normal (gain 1), keep the biases.

  SNIP and GraSP do this in the random-init family (§B.2).
  """
  keys = jax.random.split(key, NUM_LAYERS)
  layers = []
  for layer_key, layer in zip(keys, params):
    fan_out, fan_in = layer.weight.shape[-2:]
    std = np.sqrt(2.0 / (fan_in + fan_out))
    weight = std * jax.random.normal(layer_key, layer.weight.shape, jnp.float32)
    layers.append(Layer(weight, layer.bias))
  return tuple(layers)


# The widest layer whose arithmetic is portable (cubist.portable): the studies' search
# and pruning widths. Wider layers go through the library's matmul: fast, but its sums
# are in the machine's order (and the portable sums, unrolled per unit, grow with it).
PORTABLE_MAX_WIDTH = 16


def is_portable_width(width: int) -> bool:
  """Whether a layer (or a network of hidden width) this wide computes with portable sums."""
  return width <= PORTABLE_MAX_WIDTH


def matmul(weight: jax.Array, hidden: jax.Array) -> jax.Array:
  """weight (out, in) @ hidden (in, B) -> (out, B): `portable.dense` when both sides have
  at most PORTABLE_MAX_WIDTH units, else the library's matmul (machine-specific bits)."""
  if is_portable_width(max(weight.shape)):
    return portable.dense(weight, hidden)
  return weight @ hidden


def layer_forward(layer: Layer, hidden: jax.Array) -> jax.Array:
  """One layer's pre-activation (out, B) from features-first activations (in, B).

  Portable arithmetic (cubist.portable) up to PORTABLE_MAX_WIDTH units: each unit
  sums its inputs left to right, and the gradients sum over the batch pairwise,
  so the bits do not depend on the CPU. Wider layers use library matmuls.
  """
  pre = matmul(layer.weight, hidden)
  if is_portable_width(max(layer.weight.shape)):
    return portable.add_bias(pre, layer.bias)
  return pre + layer.bias[:, None]


def apply(params: Params, x: jax.Array) -> jax.Array:
  """Logits of shape (B,) for inputs x of shape (B, 2). Masks must already be applied.

  The arithmetic of `layer_forward`, which the trainer's layouts vmap layer by
  layer (cubist.layouts): the same bits as a run's own forward pass.
  """
  hidden = x.T  # (2, B): features first, the batch minor
  for index, layer in enumerate(params):
    hidden = layer_forward(layer, hidden)
    if index < len(params) - 1:
      hidden = jax.nn.relu(hidden)
  return hidden[0]


def apply_masks(params: Params, masks: Params) -> Params:
  """Zero the masked entries of every weight and bias (masks are 0/1 or bool)."""
  return jax.tree.map(lambda value, mask: value * mask.astype(value.dtype), params, masks)


def npz_keys() -> list[str]:
  """Keys of an initialisation file: layer{1..4}_weight and layer{1..4}_bias."""
  return [f"layer{i}_{kind}" for i in range(1, NUM_LAYERS + 1) for kind in ("weight", "bias")]


def to_numpy_dict(params: Params) -> dict[str, np.ndarray]:
  """The npz key format (PyTorch orientation), e.g. for saving a model."""
  out = {}
  for index, layer in enumerate(params, start=1):
    out[f"layer{index}_weight"] = np.asarray(layer.weight, np.float32)
    out[f"layer{index}_bias"] = np.asarray(layer.bias, np.float32)
  return out


def from_numpy_dict(arrays, source: str = "params") -> Params:
  """Build Params from a mapping with the npz keys; a one-line error names a missing key."""
  missing = [key for key in npz_keys() if key not in arrays]
  if missing:
    raise ValueError(f"{source}: missing keys {missing}; expected {npz_keys()}")
  return tuple(
    Layer(
      np.asarray(arrays[f"layer{i}_weight"], np.float32),
      np.asarray(arrays[f"layer{i}_bias"], np.float32),
    )
    for i in range(1, NUM_LAYERS + 1)
  )


def load_init(path: str | os.PathLike, width: int | None = None) -> Params:
  """Load an initialisation such as ../shared/data/bench95_init.npz, sliced to `width`.

  The file holds a width-W model in PyTorch orientation. Slicing keeps the
  top-left block (§B.2: W1[:w], W2[:w,:w], W3[:w,:w], W4[:, :w], b4 whole), so
  the sliced weights keep their width-W scale. An init file is user input: a
  missing file, a directory, a file that is not an npz archive (empty,
  truncated, a plain .npy, garbage), missing keys, non-numeric or non-finite
  values, inconsistent shapes or a width outside 1..W are each a one-line
  ValueError that names the file (never numpy's advice to unpickle it).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise ValueError(f"init file {path!r} does not exist; {_INIT_HINT}")
  if not os.path.isfile(path):
    raise ValueError(f"init file {path!r} is not a file; {_INIT_HINT}")
  arrays = _read_npz(path)
  missing = [key for key in npz_keys() if key not in arrays]
  if missing:
    raise ValueError(f"init file {path!r}: missing keys {missing}; {_INIT_HINT}")
  params = from_numpy_dict(arrays, source=f"init file {path!r}")
  first = params[0].weight.shape
  if len(first) != 2 or first[0] < 1:
    raise ValueError(
      f"init file {path!r}: layer1_weight has shape {first}, expected (W, {INPUT_DIM}) "
      "for a width W >= 1"
    )
  full_width = first[0]
  expected = layer_shapes(full_width)
  for index, (layer, (weight_shape, bias_shape)) in enumerate(zip(params, expected), start=1):
    if layer.weight.shape != weight_shape or layer.bias.shape != bias_shape:
      raise ValueError(
        f"init file {path!r}: layer{index} has weight {layer.weight.shape} and bias "
        f"{layer.bias.shape}, expected {weight_shape} and {bias_shape} for width {full_width}"
      )
    if not (np.all(np.isfinite(layer.weight)) and np.all(np.isfinite(layer.bias))):
      raise ValueError(f"init file {path!r}: layer{index} holds non-finite values; {_INIT_HINT}")
  if width is None:
    return params
  if isinstance(width, bool) or int(width) != width or not 1 <= width <= full_width:
    raise ValueError(f"width={width} is outside 1..{full_width} of init file {path!r}")
  return slice_params(params, width)


_INIT_HINT = "give an npz written by numpy.savez with keys layer{1..4}_{weight,bias}"


def _read_npz(path: str) -> dict[str, np.ndarray]:
  """The numeric arrays of an npz archive, or a one-line ValueError saying why it is not one.

  Pickles are never loaded (allow_pickle=False), and numpy's own message for a
  file it does not recognise (which suggests unpickling it) is not passed on.
  """
  try:
    loaded = np.load(path, allow_pickle=False)
  except EOFError:
    raise ValueError(f"init file {path!r} is empty or truncated; {_INIT_HINT}") from None
  except zipfile.BadZipFile as error:
    raise ValueError(
      f"init file {path!r} is a damaged zip archive ({error}); {_INIT_HINT}"
    ) from None
  except (OSError, ValueError):
    raise ValueError(
      f"init file {path!r} is not an npz archive (unrecognised contents); {_INIT_HINT}"
    ) from None
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    raise ValueError(f"init file {path!r} holds a single array (.npy), not an npz; {_INIT_HINT}")
  with loaded:
    try:
      arrays = {key: loaded[key] for key in loaded.files if key in npz_keys()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
      raise ValueError(
        f"init file {path!r} has an unreadable member ({_one_line(error)}); {_INIT_HINT}"
      ) from None
  for key, array in arrays.items():
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
      raise ValueError(
        f"init file {path!r}: {key} has dtype {array.dtype}, not numbers; {_INIT_HINT}"
      )
  return arrays


def _one_line(error: BaseException) -> str:
  return " ".join(str(error).split()) or type(error).__name__


def slice_params(params: Params, width: int) -> Params:
  """The top-left width-`width` block of every layer (exact for inert units beyond it)."""
  w1, w2, w3, w4 = params
  return (
    Layer(w1.weight[..., :width, :], w1.bias[..., :width]),
    Layer(w2.weight[..., :width, :width], w2.bias[..., :width]),
    Layer(w3.weight[..., :width, :width], w3.bias[..., :width]),
    Layer(w4.weight[..., :, :width], w4.bias),
  )


def pad_params(params: Params, width: int) -> Params:
  """Zero-pad a narrower model to hidden width `width` (the inverse of slicing)."""

  def pad(array, target_shape):
    pads = [(0, 0)] * (array.ndim - len(target_shape))
    pads += [(0, t - s) for s, t in zip(array.shape[-len(target_shape) :], target_shape)]
    return jnp.pad(array, pads) if isinstance(array, jax.Array) else np.pad(array, pads)

  return tuple(
    Layer(pad(layer.weight, weight_shape), pad(layer.bias, bias_shape))
    for layer, (weight_shape, bias_shape) in zip(params, layer_shapes(width))
  )


def pack_params(params: Params) -> bytes:
  """One network's parameters as float32 bytes (W1, b1, ..., W4, b4, row-major).

  The width is implied by the sizes (`unpack_params`); the store keeps them
  at the network's occupied width, a few hundred bytes for a sparse network.
  """
  return b"".join(np.asarray(array, np.float32).tobytes() for layer in params for array in layer)


def unpack_params(blob: bytes, width: int) -> Params:
  """Inverse of `pack_params` for a network of hidden width `width`."""
  flat = np.frombuffer(blob, np.float32)
  sizes = [int(np.prod(shape)) for pair in layer_shapes(width) for shape in pair]
  if flat.size != sum(sizes):
    raise ValueError(
      f"{flat.size} stored parameters do not make a width-{width} network ({sum(sizes)})"
    )
  arrays, offset = [], 0
  for shape, size in zip((shape for pair in layer_shapes(width) for shape in pair), sizes):
    arrays.append(flat[offset : offset + size].reshape(shape).copy())
    offset += size
  return tuple(Layer(arrays[2 * i], arrays[2 * i + 1]) for i in range(NUM_LAYERS))
