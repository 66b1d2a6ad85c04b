"""Per-epoch data orders: which points form each minibatch (METHODS §C.2).

Each epoch is a fresh permutation of all N points drawn from the experiment's
own key, cut into N // B batches of B, the last N % B points dropped (390
batches of 128 and 62 dropped points for the spiral), like PyTorch's
`DataLoader(shuffle=True, drop_last=True)`.

Two ways to draw the permutation, a static option of the trainer:

- "feistel" (default): a keyed bijection of Z_N evaluated on the fly for the
  128 positions of each step. N is split as a * b (134 * 373 for the spiral)
  and a generalised Feistel network with alternating moduli (Black & Rogaway,
  "Ciphers with arbitrary finite domains", 2002) maps position p to a data
  index. It is an exact permutation of all N indices by construction; it is
  pseudo-random rather than uniform over all N! permutations. Cost: a few dozen
  integer operations per index and no memory, which is what lets thousands of
  independent experiments train at once on a CPU.
- "sort": an exactly uniform permutation per epoch (radix-style rounds of
  single-operand sorts, `data.uniform_permutation`). About 7 ms per experiment
  and epoch on one CPU core, i.e. more than the training itself at small
  widths, so it is an option for those who want exact uniformity.

The reference draws with torch.randperm from an unseeded generator (§C.5), so
no order can be reproduced exactly; both methods are statistically faithful to
"a fresh random permutation per epoch". Orders depend only on (key, epoch).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

ORDER_METHODS = ("feistel", "sort")
FEISTEL_ROUNDS = 8
_MIN_FACTOR = 16


@functools.lru_cache(maxsize=None)
def feistel_domain(num_points: int) -> tuple[int, int]:
  """(a, b) with a * b == num_points and a the largest divisor <= sqrt(num_points).

  Raises a one-line ValueError if a < 16: the network would barely mix (a prime
  N gives a = 1, a mere rotation); use order="sort" for such sizes.
  """
  a = max(d for d in range(1, int(np.sqrt(num_points)) + 1) if num_points % d == 0)
  if a < _MIN_FACTOR:
    raise ValueError(f"num_points={num_points} has no factorisation a*b with a >= {_MIN_FACTOR}"
                     " for the Feistel order; use order='sort'")
  return a, num_points // a


def _mix32(x: jax.Array) -> jax.Array:
  """A 32-bit integer finaliser (lowbias32): a bijection of uint32 with good avalanche."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def feistel_permute(round_keys: jax.Array, positions: jax.Array, num_points: int) -> jax.Array:
  """The data index at each position: a keyed bijection of 0..num_points-1.

  round_keys: uint32 (FEISTEL_ROUNDS,). positions: int32 array of any shape.
  State (L, R) in Z_a x Z_b; odd rounds add F(R) mod a, even rounds mod b, and
  swap. Each round is invertible, so the whole map is a bijection of Z_N.
  """
  a, b = feistel_domain(num_points)
  left, right = positions % a, positions // a
  for j in range(FEISTEL_ROUNDS):
    modulus = a if j % 2 == 0 else b
    mixed = (_mix32(right.astype(jnp.uint32) ^ round_keys[j]) % jnp.uint32(modulus)).astype(jnp.int32)
    left, right = right, (left + mixed) % modulus
  return a * right + left


def epoch_state(key: jax.Array, num_points: int, batch_size: int, method: str):
  """What one experiment needs to produce the batches of the epoch with `key`.

  "feistel": uint32 (FEISTEL_ROUNDS,) round keys. "sort": int32 (batches, B).
  """
  if method == "feistel":
    feistel_domain(num_points)
    return jax.random.bits(key, (FEISTEL_ROUNDS,), jnp.uint32)
  if method == "sort":
    from cubist import data
    return data.epoch_batches(key, num_points=num_points, batch_size=batch_size)
  raise ValueError(f"order={method!r} is unknown; known: {ORDER_METHODS}")


def step_indices(state, step: jax.Array, num_points: int, batch_size: int,
                 method: str) -> jax.Array:
  """Data indices (B,) of optimiser step `step` (0-based within the epoch)."""
  if method == "feistel":
    positions = step * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    return feistel_permute(state, positions, num_points)
  return state[step]


def epoch_batches(key: jax.Array, num_points: int, batch_size: int, method: str) -> jax.Array:
  """All batches of one epoch, int32 (num_points // batch_size, batch_size)."""
  state = epoch_state(key, num_points, batch_size, method)
  steps = jnp.arange(num_points // batch_size)
  return jax.vmap(lambda s: step_indices(state, s, num_points, batch_size, method))(steps)


def batch_order(run_key: jax.Array, epochs: int, num_points: int, batch_size: int,
                method: str = "feistel") -> np.ndarray:
  """The trainer's batches for a whole run, int32 (epochs, batches, B): for parity tests."""
  from cubist import data
  return np.stack([np.asarray(epoch_batches(data.epoch_key(run_key, e), num_points,
                                            batch_size, method)) for e in range(epochs)])
