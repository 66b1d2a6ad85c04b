"""The Cubist Spiral data set and the visualisation grid (batch orders: cubist.order).

METHODS.md section A specifies the data set and section C.2 the batching. This
module rebuilds the data on the host:

* **Host side (numpy).** :func:`cubist_spiral` rebuilds the authors' generator
  (``cubist_spiral/CubistSpiral.py`` in stephenqz/sparsest) without torch and
  agrees with it bit for bit; ``tests/test_data.py`` checks that against the
  PyTorch oracle in ``third_party/reference_spiral.py``. Bit-exactness needs
  torch's float32 arithmetic reproduced step by step, so this half contains
  small emulations of three torch CPU kernels (``linspace``, ``sum``/``mean``
  and ``std`` over a dimension). Each is documented where it is defined.
Public API::

    NUM_POINTS, BATCH_SIZE, BATCHES_PER_EPOCH
    cubist_spiral(*, linspace_fma=True) -> (x float32 (N, 2), labels float32 (N,))
    standardisation_constants(*, linspace_fma=True) -> (mean float32 (2,), std float32 (2,))
    segment_counts() -> (arm A counts, arm B counts), 16 ints each
    grid_axis(resolution=512, half_width=2.25) -> float32 (resolution,)
    visualisation_grid(resolution=512, half_width=2.25) -> float32 (resolution**2, 2)
    batch_order(run_key, epochs, num_points=NUM_POINTS, batch_size=BATCH_SIZE)
        -> int32 (epochs, num_batches, batch_size)
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
  "BATCHES_PER_EPOCH",
  "BATCH_SIZE",
  "NUM_POINTS",
  "cubist_spiral",
  "grid_axis",
  "segment_counts",
  "standardisation_constants",
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
