"""The Cubist Spiral data set, the visualisation grid and per-epoch batch orders.

METHODS.md section A specifies the data set and section C.2 the batching. This
module has two halves:

* **Host side (numpy).** :func:`cubist_spiral` rebuilds the authors' generator
  (``cubist_spiral/CubistSpiral.py`` in stephenqz/sparsest) without torch and
  agrees with it bit for bit; ``tests/test_data.py`` checks that against the
  PyTorch oracle in ``third_party/reference_spiral.py``. Bit-exactness needs
  torch's float32 arithmetic reproduced step by step, so this half contains
  small emulations of three torch CPU kernels (``linspace``, ``sum``/``mean``
  and ``std`` over a dimension). Each is documented where it is defined.
* **Device side (JAX).** :func:`epoch_batches` draws an epoch's batch order
  from a PRNG key. It is pure, jittable and vmappable, so the trainer calls it
  inside ``vmap(lax.scan(...))`` for thousands of experiments at once.
  :func:`epoch_key` and :func:`batch_order` make the order of epoch ``e``
  depend only on the experiment's own key and ``e``, so a run gets the same
  batches alone or inside a chunk of any size (ARCHITECTURE principle 5).

Public API::

    NUM_POINTS, BATCH_SIZE, BATCHES_PER_EPOCH
    cubist_spiral(*, linspace_fma=True) -> (x float32 (N, 2), labels float32 (N,))
    standardisation_constants(*, linspace_fma=True) -> (mean float32 (2,), std float32 (2,))
    segment_counts() -> (arm A counts, arm B counts), 16 ints each
    grid_axis(resolution=512, half_width=2.25) -> float32 (resolution,)
    visualisation_grid(resolution=512, half_width=2.25) -> float32 (resolution**2, 2)
    uniform_permutation(key, n) -> int32 (n,)
    epoch_key(run_key, epoch) -> key
    epoch_batches(key, num_points=NUM_POINTS, batch_size=BATCH_SIZE) -> int32 (num_batches, batch_size)
    batch_order(run_key, epochs, num_points=NUM_POINTS, batch_size=BATCH_SIZE)
        -> int32 (epochs, num_batches, batch_size)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "BATCHES_PER_EPOCH",
    "BATCH_SIZE",
    "NUM_POINTS",
    "batch_order",
    "cubist_spiral",
    "epoch_batches",
    "epoch_key",
    "grid_axis",
    "segment_counts",
    "standardisation_constants",
    "uniform_permutation",
    "visualisation_grid",
]

NUM_POINTS = 49_982
"""Rows of the data set: 24,991 per arm (METHODS A.2)."""

BATCH_SIZE = 128
"""Mini-batch size of every experiment in paper (1) (METHODS C.2)."""

BATCHES_PER_EPOCH = 390
"""Optimiser steps per epoch. The reference code derives it as floor(50000/128);
that it equals the true floor(49982/128) is a coincidence (METHODS C.2, H #13)."""

assert NUM_POINTS // BATCH_SIZE == BATCHES_PER_EPOCH

# Generator constants (METHODS A.1, A.2).
_NUM_VERTICES = 17
_ARM_OFFSET = 15.0
_SAMPLE_SIZE = 50_000  # "sample_size" in the reference; each arm gets about half

_F32 = np.float32


# --------------------------------------------------------------------------------------
# Geometry (float64, numpy, exactly as the reference computes it)
# --------------------------------------------------------------------------------------


def _arm_vertices() -> tuple[np.ndarray, np.ndarray]:
    """Vertices of arm A (outer, label 0) and arm B (inner, label 1): float64 (17, 2).

    theta_k = pi + k*pi/4 + 0.4*pi (k = 0..16), rho_k = 10*theta_k + pi, and the arms
    are offset by +-15 along the radial unit vector (METHODS A.1). Both arms are
    translated by the per-coordinate minimum over all 34 vertices.
    """
    # Fidelity: theta is numpy's float64 linspace plus the offset written the
    # way the reference writes it, 1.6*1/8*2*pi evaluated left to right; the
    # closed form pi + k*pi/4 + 0.4*pi differs in the last bit for some k.
    theta = np.linspace(math.pi, 5 * math.pi, _NUM_VERTICES) + 1.6 * 1 / 8 * 2 * math.pi
    radius = 10 * theta + math.pi
    unit = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    base = unit * radius[:, None]
    # The reference adds 0 * Gaussian noise to `base`; adding (+/-)0.0 changes no
    # value, so we skip it (and leave numpy's global RNG untouched).
    arm_a = base + _ARM_OFFSET * unit
    arm_b = base - _ARM_OFFSET * unit
    shift = np.minimum(arm_a.min(axis=0), arm_b.min(axis=0))
    return arm_a - shift, arm_b - shift


def _segment_counts(vertices: np.ndarray) -> list[int]:
    """n_i = floor(L_i / sum_j L_j * 50000 / 2) for the 16 segments (float64)."""
    lengths = np.sqrt(np.sum((vertices[:-1] - vertices[1:]) ** 2, axis=1))
    share = lengths / lengths.sum()
    # Same expression order as the reference: (share * 50000) / 2, then truncate.
    # The fractional parts of these products are >= 0.026 away from an integer,
    # so the last-bit details of the norm and the sum cannot change a count.
    return [int(q * _SAMPLE_SIZE / 2) for q in share]


def segment_counts() -> tuple[list[int], list[int]]:
    """Points per segment for arm A and arm B, 16 ints each (METHODS A.2).

    Arm A: [831, 928, ..., 2294] and arm B: [609, 734, ..., 2521]; each sums to
    24,991, so the data set has 2 * 24,991 = 49,982 rows.
    """
    arm_a, arm_b = _arm_vertices()
    return _segment_counts(arm_a), _segment_counts(arm_b)


# --------------------------------------------------------------------------------------
# Emulations of torch CPU kernels (float32 arithmetic, bit for bit)
# --------------------------------------------------------------------------------------


def _torch_linspace_f32(n: int, *, fma: bool = True) -> np.ndarray:
    """``torch.linspace(0, 1, n)`` (float32, CPU), bit for bit.

    torch's CPU kernel computes ``step = (end - start) / (n - 1)`` in float32 and
    fills index i as ``start + step * i`` for ``i < n // 2`` and as
    ``end - step * (n - 1 - i)`` for ``i >= n // 2`` (so both end points are exact).

    Surprise: how that multiply-add rounds depends on the CPU kernel torch
    dispatches to. The AVX2 and AVX-512 builds of the kernel (what torch runs on
    any x86-64 CPU of the last decade, ``torch.backends.cpu.get_cpu_capability()``)
    are compiled with FMA contraction, so each element is rounded once:
    ``fl(end - step * k)``. The DEFAULT (non-SIMD) build, selected for example with
    ``ATEN_CPU_CAPABILITY=default``, rounds the product first and then the sum,
    which is the formula METHODS A.3 states. ``fma`` picks between the two; they
    differ in the last bit for most n (all n in 2..20000 checked against torch
    2.13 in both modes).

    Both are computed exactly in float64 and rounded to float32 at the end:
    ``step * k`` and ``1 - step * k`` are exact in float64 for any n < 2**24, so the
    single cast reproduces the fused rounding.
    """
    if n <= 0:
        return np.zeros(0, _F32)
    if n == 1:
        return np.zeros(1, _F32)  # torch fills `start`
    step = _F32(1) / _F32(n - 1)  # float32 step, as in the kernel
    half = n // 2
    k_lo = np.arange(half)
    k_hi = (n - 1) - np.arange(half, n)
    out = np.empty(n, _F32)
    if fma:
        out[:half] = (np.float64(step) * k_lo).astype(_F32)
        out[half:] = (1.0 - np.float64(step) * k_hi).astype(_F32)
    else:
        out[:half] = _F32(0) + k_lo.astype(_F32) * step
        out[half:] = _F32(1) - k_hi.astype(_F32) * step
    return out


def _ceil_log2(x: int) -> int:
    """``c10::utils::CeilLog2``: 1 for x <= 2, else ceil(log2(x))."""
    return 1 if x <= 2 else (x - 1).bit_length()


def _torch_multi_row_sum_f32(rows: np.ndarray) -> np.ndarray:
    """torch's ``multi_row_sum``: cascade sum of the columns of ``rows`` (float32).

    ``rows`` is (size, nrows); each column is summed independently with a
    four-level cascade: level 0 adds ``2**p`` consecutive rows in sequence
    (``p = max(4, ceil_log2(size) // 4)``), and after every such block level
    ``j`` is added into level ``j + 1`` whenever the running row count is a
    multiple of ``2**(j*p)``. Leftover rows go into level 0; at the end the levels
    are folded into level 0 in order 1, 2, 3. All arithmetic is float32.
    """
    size, nrows = rows.shape
    num_levels = 4
    level_power = max(4, _ceil_log2(size) // num_levels)
    level_step = 1 << level_power
    level_mask = level_step - 1
    num_blocks = size // level_step

    # Level 0 of every full block at once: a sequential float32 sum of `level_step`
    # rows, starting from 0 (0 + x == x exactly).
    blocks = rows[: num_blocks * level_step].reshape(num_blocks, level_step, nrows)
    block_sums = np.zeros((num_blocks, nrows), _F32)
    for j in range(level_step):
        block_sums = block_sums + blocks[:, j]

    acc = np.zeros((num_levels, nrows), _F32)
    for b in range(num_blocks):
        i = (b + 1) * level_step  # rows consumed so far
        acc[0] = block_sums[b]
        for j in range(1, num_levels):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = 0
            if i & (level_mask << (j * level_power)):
                break
    for row in rows[num_blocks * level_step :]:
        acc[0] = acc[0] + row
    for j in range(1, num_levels):
        acc[0] = acc[0] + acc[j]
    return acc[0]


def _torch_sum_f32(values: np.ndarray) -> np.float32:
    """``x.sum(dim=0)`` for one column of a contiguous (N, C) float32 tensor, C < 4.

    torch (CPU, >= 1.10) reduces each strided float32 column of such a tensor
    (here C = 2; with C >= 4 it would sum 4 columns at a time without the
    4-lane split) with ``row_sum``: it views the column as (N // 4, 4), cascade-sums the four interleaved lanes
    (``_torch_multi_row_sum_f32``), adds the N % 4 leftover elements to lane 0
    and folds lanes 1..3 into lane 0, all in float32 (the accumulator type of
    float32 sums on CPU is float32). Neither numpy's float32 sum (off by ~200
    ulp here) nor a float64 sum rounded to float32 (off by 1 ulp in y)
    reproduces it; this emulation matches torch 2.13 exactly on the data set
    and on random columns of many lengths (``tests/test_data.py``).
    """
    v = np.ascontiguousarray(values, dtype=_F32)
    ilp = 4
    size_ilp = v.shape[0] // ilp
    lanes = _torch_multi_row_sum_f32(v[: size_ilp * ilp].reshape(size_ilp, ilp)).copy()
    for x in v[size_ilp * ilp :]:
        lanes[0] = lanes[0] + x
    total = lanes[0]
    for k in range(1, ilp):
        total = _F32(total + lanes[k])
    return _F32(total)


def _torch_mean_f32(values: np.ndarray) -> np.float32:
    """``x.mean(dim=0)`` for one float32 column: torch's float32 sum, then a float32
    division by N (torch's CPU mean is ``sum(...).div_(N)``)."""
    return _F32(_torch_sum_f32(values) / _F32(len(values)))


def _torch_std_f32(values: np.ndarray) -> np.float32:
    """``x.std(dim=0)`` (unbiased) for one float32 column, as torch's CPU kernel does it.

    A reduction over one dimension with several outputs runs torch's Welford
    kernel with a float64 accumulator, serially per output; the square root is
    taken in float64 and the result cast to float32. Python floats are IEEE
    doubles, so this loop is that kernel (~10 ms for 50k values). Because
    the accumulation is float64, the float32 result does not depend on whether
    the compiler fused the ``m2 + delta * delta'`` update (checked against torch).
    """
    mean = 0.0
    m2 = 0.0
    n = 0
    for v in np.asarray(values, dtype=_F32).astype(np.float64).tolist():
        n += 1
        delta = v - mean
        mean = mean + delta / n
        m2 = m2 + delta * (v - mean)
    return _F32(math.sqrt(m2 / (n - 1)))


# --------------------------------------------------------------------------------------
# The data set
# --------------------------------------------------------------------------------------


def _sample_arm(vertices: np.ndarray, *, linspace_fma: bool) -> np.ndarray:
    """Points along one arm's 16 segments, float64 (sum of counts, 2)."""
    pieces = []
    for i, n in enumerate(_segment_counts(vertices)):
        t = _torch_linspace_f32(n, fma=linspace_fma)[:, None]
        # Fidelity: t is float32 and the vertices float64, so t * v_i is a float64
        # product. But (1 - t) is a Python scalar minus a float32 tensor in the
        # reference, so it is rounded to float32 *before* the float64 product with
        # v_{i+1} (for t < 0.5 that rounding is not exact). t = 0 gives v_{i+1}
        # and t = 1 gives v_i: segments run from their later vertex back.
        one_minus_t = (_F32(1) - t).astype(np.float64)
        pieces.append(t.astype(np.float64) * vertices[i] + one_minus_t * vertices[i + 1])
    return np.concatenate(pieces)


@functools.lru_cache(maxsize=2)
def _generate(linspace_fma: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    arm_a, arm_b = _arm_vertices()
    points_a = _sample_arm(arm_a, linspace_fma=linspace_fma)
    points_b = _sample_arm(arm_b, linspace_fma=linspace_fma)
    x = np.concatenate([points_a, points_b]).astype(_F32)  # cast after interpolation

    # Standardise as the reference does: subtract the float32 mean, then divide by
    # the unbiased std *of the centred tensor* (float32 elementwise ops are
    # correctly rounded in both numpy and torch, so only the statistics need care).
    mean = np.array([_torch_mean_f32(x[:, c]) for c in range(2)], _F32)
    x = x - mean
    std = np.array([_torch_std_f32(x[:, c]) for c in range(2)], _F32)
    x = x / std

    labels = np.concatenate([np.zeros(len(points_a), _F32), np.ones(len(points_b), _F32)])
    assert x.shape == (NUM_POINTS, 2) and x.dtype == _F32
    for a in (x, labels, mean, std):
        a.setflags(write=False)
    return x, labels, mean, std


def cubist_spiral(*, linspace_fma: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The standardised Cubist Spiral, bit-identical to the authors' torch generator.

    Args:
      linspace_fma: which rounding of ``torch.linspace`` to reproduce (see
        ``_torch_linspace_f32``). True (default): torch's AVX2/AVX-512 CPU kernels,
        i.e. what torch computes on any current x86-64 machine and, almost
        certainly, what the authors ran. False: torch's DEFAULT (non-SIMD)
        kernel, which is also the two-rounding formula of METHODS A.3. The two
        differ by at most 1 ulp in 1,912 of the 49,982 rows; the standardisation
        constants are identical.

    Returns:
      x: float32 (49982, 2), read-only. Rows 0..24990 are arm A (the outer arm),
        rows 24991..49981 arm B, each arm's segments in order 0..15. Columns are
        the standardised (x, y) coordinates: x in [-1.687, 1.770], y in
        [-2.202, 1.742].
      labels: float32 (49982,), read-only: 0.0 for arm A, 1.0 for arm B. (The
        reference stores them as (N, 1); add the axis where needed.)

    The arrays are computed once (~40 ms) and cached; copy before mutating.
    """
    x, labels, _, _ = _generate(bool(linspace_fma))
    return x, labels


def standardisation_constants(*, linspace_fma: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The float32 (2,) mean and unbiased std that :func:`cubist_spiral` used.

    Raw coordinates are ``x * std + mean`` (up to float32 rounding). The values
    are about mean = (145.1405, 182.7221), std = (86.0245, 82.9950). (METHODS
    A.3 quotes mean x = 145.137: that is numpy's float32 mean, which drifts by
    ~200 ulp from torch's cascade sum.)
    """
    _, _, mean, std = _generate(bool(linspace_fma))
    return mean, std


# --------------------------------------------------------------------------------------
# Visualisation grid (METHODS A.4)
# --------------------------------------------------------------------------------------


def grid_axis(resolution: int = 512, half_width: float = 2.25) -> np.ndarray:
    """float32 (resolution,): -half_width + 2*half_width*i/(resolution-1), ascending.

    With the defaults, x_i = -2.25 + 4.5*i/511 (computed in float64, then cast),
    in standardised coordinates. Both end points are exact.
    """
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    i = np.arange(resolution, dtype=np.float64)
    return (-half_width + 2.0 * half_width * i / (resolution - 1)).astype(_F32)


def visualisation_grid(resolution: int = 512, half_width: float = 2.25) -> np.ndarray:
    """float32 (resolution**2, 2): grid points in image (imshow) order.

    Row-major over the image: point ``r * resolution + c`` has
    ``x = grid_axis[c]`` (x varies fastest, left to right) and
    ``y = grid_axis[resolution - 1 - r]`` (image rows run from y = +half_width at
    the top to -half_width at the bottom). So per-point values reshape straight
    into a picture::

        img = values.reshape(resolution, resolution)
        plt.imshow(img, extent=(-h, h, -h, h))  # origin="upper", the default

    The square [-2.25, 2.25]^2 contains the whole standardised data set.
    """
    axis = grid_axis(resolution, half_width)
    ys, xs = np.meshgrid(axis[::-1], axis, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


# --------------------------------------------------------------------------------------
# Batch orders (METHODS C.2), pure JAX
# --------------------------------------------------------------------------------------

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
      * ``lax.sort`` by 64-bit keys given as two uint32 operands: ~11 ms;
      * Fisher-Yates in a ``lax.fori_loop``: ~880 ms (XLA CPU loop overhead);
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
    position = lax.iota(jnp.uint32, n)
    index_mask = jnp.uint32((1 << index_bits) - 1)
    perm = None
    for r in range(rounds):
        word = words[r // fields_per_word]
        shift = 32 - field_bits * (r % fields_per_word + 1)
        field = (word >> shift) & jnp.uint32((1 << field_bits) - 1)
        sorted_keys = lax.sort((field << index_bits) | position)
        source = (sorted_keys & index_mask).astype(jnp.int32)
        perm = source if perm is None else perm[source]
    return perm


@functools.partial(jax.jit, static_argnames=("num_points", "batch_size"))
def epoch_batches(
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


@functools.partial(jax.jit, static_argnames=("epochs", "num_points", "batch_size"))
def batch_order(
    run_key: jax.Array,
    epochs: int,
    num_points: int = NUM_POINTS,
    batch_size: int = BATCH_SIZE,
) -> jax.Array:
    """All batch orders of a run: int32 (epochs, num_points // batch_size, batch_size).

    ``batch_order(k, E)[e] == epoch_batches(epoch_key(k, e))`` for e = 0..E-1,
    i.e. exactly the batches the trainer uses. Meant for parity tests that feed
    the same orders to the PyTorch oracle (50 epochs: ~10 MB, ~0.4 s on CPU).
    """
    epoch_ids = jnp.arange(epochs, dtype=jnp.uint32)
    return jax.vmap(
        lambda e: epoch_batches(epoch_key(run_key, e), num_points=num_points, batch_size=batch_size)
    )(epoch_ids)
