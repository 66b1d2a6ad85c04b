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
  pseudo-random rather than uniform over all N! permutations. Cost: about 60
  integer operations per index (6 rounds) and no memory, which is what lets thousands of
  independent experiments train at once on a CPU.
- "sort": an exactly uniform permutation per epoch (radix-style rounds of
  single-operand sorts, `uniform_permutation`). About 7 ms per experiment
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

from cubist.data import BATCH_SIZE, NUM_POINTS

ORDER_METHODS = ("feistel", "sort")
FEISTEL_ROUNDS = 6
_MIN_FACTOR = 16


@functools.lru_cache(maxsize=None)
def feistel_domain(num_points: int) -> tuple[int, int]:
  """(a, b) with a * b == num_points and a the largest divisor <= sqrt(num_points).

  Raises a one-line ValueError if a < 16: the network would barely mix (a prime
  N gives a = 1, a mere rotation); use order="sort" for such sizes.
  """
  a = max(d for d in range(1, int(np.sqrt(num_points)) + 1) if num_points % d == 0)
  if a < _MIN_FACTOR:
    raise ValueError(
      f"num_points={num_points} has no factorisation a*b with a >= {_MIN_FACTOR}"
      " for the Feistel order; use order='sort'"
    )
  return a, num_points // a


def _round_function(right: jax.Array, round_key: jax.Array, modulus: int) -> jax.Array:
  """F(R) in [0, modulus): a keyed multiplicative hash, reduced without division.

  (R xor k) * 0x9E3779B1 (Knuth's multiplicative hash) keeps its top 16 bits,
  and Lemire's multiply-shift maps them onto [0, modulus). A handful of integer
  operations, because the trainer evaluates this for every index of every step.
  """
  hashed = ((right ^ round_key) * jnp.uint32(0x9E3779B1)) >> 16
  return (hashed * jnp.uint32(modulus)) >> 16


def feistel_permute(round_keys: jax.Array, positions: jax.Array, num_points: int) -> jax.Array:
  """The data index at each position: a keyed bijection of 0..num_points-1.

  round_keys: uint32 (FEISTEL_ROUNDS,). positions: int32 array of any shape.
  State (L, R) in Z_a x Z_b; odd rounds add F(R) mod a, even rounds mod b, and
  swap. Each round is invertible, so the whole map is a bijection of Z_N.
  """
  a, b = feistel_domain(num_points)
  positions = positions.astype(jnp.uint32)
  left, right = positions % jnp.uint32(a), positions // jnp.uint32(a)
  for j in range(FEISTEL_ROUNDS):
    modulus = a if j % 2 == 0 else b
    total = left + _round_function(right, round_keys[j], modulus)  # < 2 * modulus
    left, right = right, jnp.where(total >= modulus, total - modulus, total)
  return (jnp.uint32(a) * right + left).astype(jnp.int32)


# --- Exactly uniform permutations (order="sort") ---------------------------

# Sort keys of the permutation carry at least this many random bits per element,
# the same as jax.random.permutation at this size (two rounds of 32-bit keys).
_PERMUTATION_KEY_BITS = 64


def uniform_permutation(key: jax.Array, n: int) -> jax.Array:
  """A uniformly random permutation of 0..n-1, int32 (n,), pure JAX.

  ``n`` is a static Python int; ``key`` any JAX key (jit/vmap over keys freely).

  Method: a few rounds of "stable sort by fresh random bits", i.e. an LSD radix
  sort of every element by one long random key, but each round is a
  *single-operand* uint32 sort. In round r the sort key of the element now at
  position p is ``(random field << b) | p`` with ``b = ceil(log2 n)`` index bits
  (16 for 49,982) and 32 - b random bits in the field; the sorted keys' low bits
  are the source positions, so the round's permutation costs a mask and one
  gather. Since p is unique, equal random fields keep their previous order,
  which is exactly the stable-sort step of radix sorting. After R rounds the
  order is that of the composite key (field_R, ..., field_1), ties broken by
  original index, so the result is an exactly uniform permutation unless two
  composite keys tie, with probability at most C(n, 2) / 2**(R * (32 - b)).
  R is the smallest count with at least 64 random bits (R = 4 for n = 49,982:
  tie probability <= 6.8e-11, the same bound as ``jax.random.permutation``,
  which sorts twice by 32-bit keys).

  Why this and not the obvious calls: measured on the project's 2-core CPU
  (jax 0.10.2, XLA CPU), jit(vmap(...)) over 256 keys, n = 49,982, warm, CPU
  time per key (wall time matches it when the machine is otherwise idle):
   * ``jax.random.permutation(key, n)``:           18.9 ms (2 key-value sorts);
   * ``jnp.argsort(jax.random.bits(key, (n,)))``:   9.7 ms (1 key-value sort),
    and *not* uniform: 32-bit keys collide with probability ~0.25 at this n
    (expected n**2 / 2**33 = 0.29 colliding pairs), and the stable argsort
    then fixes the pair's relative order;
   * ``jax.lax.sort`` by 64-bit keys given as two uint32 operands: ~11 ms;
   * Fisher-Yates in a ``jax.lax.fori_loop``: ~880 ms (XLA CPU loop overhead);
   * this, 4 packed single-operand sorts + 3 gathers: 7.65 ms, of which
    1.3 ms is drawing the 2 x n random words (3 rounds, 48 random bits and
    a tie bound of 4.4e-6, would take 6.2 ms).
  XLA's CPU sort of a single integer operand is ~5x faster than a sort that
  carries a payload or compares two keys, which is why four packed rounds
  beat one key-value sort. (On GPU, XLA can hand single-operand integer
  sorts to a CUB radix sort, so the method should suit accelerators too;
  not measured here.)
  """
  if n <= 1:
    return jnp.zeros((n,), jnp.int32)
  index_bits = max(1, (n - 1).bit_length())
  field_bits = 32 - index_bits
  if field_bits < 8:
    raise ValueError(f"n = {n} is too large for 32-bit packed sort keys")
  rounds = -(-_PERMUTATION_KEY_BITS // field_bits)
  fields_per_word = 32 // field_bits
  words = jax.random.bits(key, (-(-rounds // fields_per_word), n), jnp.uint32)
  position = jax.lax.iota(jnp.uint32, n)
  index_mask = jnp.uint32((1 << index_bits) - 1)
  perm = None
  for r in range(rounds):
    word = words[r // fields_per_word]
    shift = 32 - field_bits * (r % fields_per_word + 1)
    field = (word >> shift) & jnp.uint32((1 << field_bits) - 1)
    sorted_keys = jax.lax.sort((field << index_bits) | position)
    source = (sorted_keys & index_mask).astype(jnp.int32)
    perm = source if perm is None else perm[source]
  return perm


@functools.partial(jax.jit, static_argnames=("num_points", "batch_size"))
def sorted_epoch_batches(
  key: jax.Array, num_points: int = NUM_POINTS, batch_size: int = BATCH_SIZE
) -> jax.Array:
  """One epoch's mini-batches: int32 (num_points // batch_size, batch_size).

  Row b holds the data indices of optimiser step b. Like PyTorch's
  ``DataLoader(shuffle=True, drop_last=True)`` (METHODS C.2): a fresh uniform
  permutation of all ``num_points`` indices, cut into consecutive batches, the
  last ``num_points % batch_size`` (62 for the spiral) dropped, so a different
  set of points is left out each epoch. With the defaults: 390 batches of 128.

  Pure and deterministic in ``key`` (any JAX key: typed or raw uint32); jit,
  vmap and scan it freely. vmapped over keys it gives exactly the per-key
  results. Cost: ~7.7 ms per key on one CPU core (see :func:`uniform_permutation`).
  """
  num_batches = num_points // batch_size
  if num_batches < 1:
    raise ValueError(f"batch_size {batch_size} exceeds num_points {num_points}")
  perm = uniform_permutation(key, num_points)
  return perm[: num_batches * batch_size].reshape(num_batches, batch_size)


def epoch_key(run_key: jax.Array, epoch: int | jax.Array) -> jax.Array:
  """The key of epoch ``epoch`` (0-based) of a run: ``fold_in(run_key, epoch)``.

  The order of epoch e therefore depends only on the experiment's own key and
  e, never on which other experiments share its chunk or device. (0-based here;
  the learning-rate schedules of METHODS C.4 number epochs from 1.)
  """
  return jax.random.fold_in(run_key, epoch)


def epoch_state(key: jax.Array, num_points: int, batch_size: int, method: str):
  """What one experiment needs to produce the batches of the epoch with `key`.

  "feistel": uint32 (FEISTEL_ROUNDS,) round keys. "sort": int32 (batches, B).
  """
  if method == "feistel":
    feistel_domain(num_points)
    return jax.random.bits(key, (FEISTEL_ROUNDS,), jnp.uint32)
  if method == "sort":
    return sorted_epoch_batches(key, num_points=num_points, batch_size=batch_size)
  raise ValueError(f"order={method!r} is unknown; known: {ORDER_METHODS}")


def step_indices(
  state, step: jax.Array, num_points: int, batch_size: int, method: str
) -> jax.Array:
  """Data indices (B,) of optimiser step `step` (0-based within the epoch)."""
  if method == "feistel":
    positions = step * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    return feistel_permute(state, positions, num_points)
  return state[step]


def batches_from_states(states, num_points: int, batch_size: int, method: str) -> jax.Array:
  """All batches of one epoch for E experiments, int32 (E, batches, B).

  states: `epoch_state` of each experiment, stacked on a leading axis E. The
  Feistel indices of the whole epoch are one large elementwise op (each
  experiment's round keys broadcast against every position).
  """
  if method == "sort":
    return states
  batches = num_points // batch_size
  positions = jnp.arange(batches * batch_size, dtype=jnp.int32)
  flat = feistel_permute(states.T[:, :, None], positions[None, :], num_points)
  return flat.reshape(flat.shape[0], batches, batch_size)


def epoch_batches(key: jax.Array, num_points: int, batch_size: int, method: str) -> jax.Array:
  """All batches of one epoch, int32 (num_points // batch_size, batch_size)."""
  state = epoch_state(key, num_points, batch_size, method)
  return batches_from_states(state[None], num_points, batch_size, method)[0]


def batch_order(
  run_key: jax.Array, epochs: int, num_points: int, batch_size: int, method: str = "feistel"
) -> np.ndarray:
  """The trainer's batches for a whole run, int32 (epochs, batches, B): for parity tests."""
  return np.stack(
    [
      np.asarray(epoch_batches(epoch_key(run_key, e), num_points, batch_size, method))
      for e in range(epochs)
    ]
  )
