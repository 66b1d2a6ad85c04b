"""Tests of cubist/data.py: the Cubist Spiral (METHODS A) and the grid (A.4)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cubist import data

REPO = Path(__file__).resolve().parents[1]

# METHODS A.2 [SIM].
COUNTS_A = [
  831,
  928,
  1025,
  1123,
  1220,
  1318,
  1415,
  1513,
  1610,
  1708,
  1806,
  1903,
  2001,
  2099,
  2197,
  2294,
]
COUNTS_B = [
  609,
  734,
  860,
  987,
  1114,
  1241,
  1369,
  1497,
  1624,
  1752,
  1880,
  2008,
  2137,
  2265,
  2393,
  2521,
]
PER_ARM = 24_991


# --------------------------------------------------------------------------- (a) counts


def test_segment_counts_match_methods():
  counts_a, counts_b = data.segment_counts()
  assert counts_a == COUNTS_A
  assert counts_b == COUNTS_B
  assert sum(counts_a) == sum(counts_b) == PER_ARM
  assert sum(counts_a) + sum(counts_b) == data.NUM_POINTS == 49_982


def test_constants():
  assert (data.NUM_POINTS, data.BATCH_SIZE, data.BATCHES_PER_EPOCH) == (49_982, 128, 390)
  assert data.NUM_POINTS // data.BATCH_SIZE == data.BATCHES_PER_EPOCH


# --------------------------------------------------------------------------- (b) bit-exact vs torch


def _torch_linspace_uses_fma(torch) -> bool:
  """Which rounding this torch's CPU linspace kernel does (see data._torch_linspace_f32)."""
  ns = range(2, 400)
  fused = all(
    np.array_equal(torch.linspace(0, 1, n).numpy(), data._torch_linspace_f32(n, fma=True))
    for n in ns
  )
  plain = all(
    np.array_equal(torch.linspace(0, 1, n).numpy(), data._torch_linspace_f32(n, fma=False))
    for n in ns
  )
  assert fused != plain, "torch.linspace matches neither emulation (or both)"
  return fused


def test_linspace_emulation_matches_torch():
  torch = pytest.importorskip("torch")
  fma = _torch_linspace_uses_fma(torch)
  for n in [0, 1, *range(2, 1500), *COUNTS_A, *COUNTS_B, 49_999]:
    np.testing.assert_array_equal(
      torch.linspace(0, 1, n).numpy(), data._torch_linspace_f32(n, fma=fma), err_msg=f"n={n}"
    )


def test_spiral_matches_torch_reference_bit_for_bit():
  torch = pytest.importorskip("torch")
  from third_party.reference_spiral import reference_cubist_spiral

  fma = _torch_linspace_uses_fma(torch)
  x_ref, labels_ref, info = reference_cubist_spiral()
  x, labels = data.cubist_spiral(linspace_fma=fma)
  assert info["counts_a"] == COUNTS_A and info["counts_b"] == COUNTS_B
  assert x.dtype == x_ref.dtype == np.float32 and labels.dtype == np.float32
  assert np.array_equal(x, x_ref)
  assert np.array_equal(labels, labels_ref)
  mean, std = data.standardisation_constants(linspace_fma=fma)
  assert np.array_equal(mean, info["mean"]) and np.array_equal(std, info["std"])


def test_spiral_matches_torch_default_cpu_kernel():
  """The other linspace rounding (METHODS A.3's formula) against torch's non-SIMD kernel."""
  pytest.importorskip("torch")
  script = (
    "import sys, numpy as np, torch;"
    "from third_party.reference_spiral import reference_cubist_spiral;"
    "assert torch.backends.cpu.get_cpu_capability() == 'DEFAULT';"
    "x, y, _ = reference_cubist_spiral(); np.save(sys.stdout.buffer, x)"
  )
  env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
  out = subprocess.run(
    [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, check=True
  )
  x_ref = np.load(io.BytesIO(out.stdout))
  x_plain, _ = data.cubist_spiral(linspace_fma=False)
  x_fused, _ = data.cubist_spiral(linspace_fma=True)
  if not np.array_equal(x_plain, x_ref) and np.array_equal(x_fused, x_ref):
    pytest.skip("this platform's DEFAULT torch kernel fuses the multiply-add too")
  assert np.array_equal(x_plain, x_ref)
  # The two roundings differ in the last bit of some rows, but not in the statistics.
  assert 0 < np.count_nonzero(np.any(x_plain != x_fused, axis=1)) < 5000
  np.testing.assert_array_equal(
    data.standardisation_constants(linspace_fma=False)[1], data.standardisation_constants()[1]
  )


@pytest.mark.parametrize("n", [1, 3, 7, 15, 16, 17, 100, 1025, 4097, 24_991, 49_982, 65_537])
def test_reduction_emulations_match_torch(n):
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(n)
  a = (rng.standard_normal((n, 2)) * rng.uniform(1, 100) + rng.uniform(-300, 300)).astype(
    np.float32
  )
  t = torch.from_numpy(a)
  for c in range(2):
    assert data._torch_sum_f32(a[:, c]) == t.sum(dim=0).numpy()[c]
    assert data._torch_mean_f32(a[:, c]) == t.mean(dim=0).numpy()[c]
    if n > 1:
      assert data._torch_std_f32(a[:, c]) == t.std(dim=0).numpy()[c]


# --------------------------------------------------------------------------- (c) statistics, labels


def test_spiral_statistics_and_labels():
  x, labels = data.cubist_spiral()
  assert x.shape == (data.NUM_POINTS, 2) and labels.shape == (data.NUM_POINTS,)
  assert x.dtype == np.float32 and labels.dtype == np.float32
  x64 = x.astype(np.float64)
  assert np.round(x64.min(axis=0), 3).tolist() == [-1.687, -2.202]  # METHODS A.3
  assert np.round(x64.max(axis=0), 3).tolist() == [1.770, 1.742]
  np.testing.assert_allclose(x64.mean(axis=0), 0.0, atol=1e-6)
  np.testing.assert_allclose(x64.std(axis=0, ddof=1), 1.0, atol=1e-6)
  assert np.all(labels[:PER_ARM] == 0.0) and np.all(labels[PER_ARM:] == 1.0)
  mean, std = data.standardisation_constants()
  np.testing.assert_allclose(
    mean, [145.1405, 182.7221], atol=1e-3
  )  # METHODS A.3 says ~(145.137, 182.721), numpy float32
  np.testing.assert_allclose(std, [86.024, 82.995], atol=1e-3)


def test_spiral_geometry():
  """Segments run from the later vertex back to the earlier one; interior vertices appear twice."""
  x, _ = data.cubist_spiral()
  mean, std = data.standardisation_constants()
  raw = x.astype(np.float64) * std + mean
  arm_a, _ = data._arm_vertices()
  np.testing.assert_allclose(raw[0], arm_a[1], atol=1e-3)  # t = 0 of segment 0 is v_1
  np.testing.assert_allclose(raw[COUNTS_A[0] - 1], arm_a[0], atol=1e-3)  # t = 1 is v_0
  np.testing.assert_allclose(raw[COUNTS_A[0]], arm_a[2], atol=1e-3)  # segment 1 starts at v_2
  np.testing.assert_allclose(raw[PER_ARM - 1], arm_a[15], atol=1e-3)


def test_spiral_is_cached_and_read_only():
  x1, y1 = data.cubist_spiral()
  x2, y2 = data.cubist_spiral()
  assert x1 is x2 and y1 is y2
  assert not x1.flags.writeable and not y1.flags.writeable
  with pytest.raises(ValueError):
    x1[0, 0] = 0.0


# --------------------------------------------------------------------------- (d) grid


def test_grid_axis():
  axis = data.grid_axis()
  assert axis.shape == (512,) and axis.dtype == np.float32
  assert axis[0] == -2.25 and axis[-1] == 2.25
  expected = (-2.25 + 4.5 * np.arange(512) / 511).astype(np.float32)
  np.testing.assert_array_equal(axis, expected)
  assert np.all(np.diff(axis) > 0)
  assert data.grid_axis(5, 1.0).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_visualisation_grid_layout():
  g = data.visualisation_grid()
  assert g.shape == (512 * 512, 2) and g.dtype == np.float32
  # imshow order: row 0 is the top (y = +2.25), x varies fastest.
  assert g[0].tolist() == [-2.25, 2.25]
  assert g[511].tolist() == [2.25, 2.25]
  assert g[-512].tolist() == [-2.25, -2.25]
  assert g[-1].tolist() == [2.25, -2.25]
  axis = data.grid_axis()
  img = g.reshape(512, 512, 2)
  np.testing.assert_array_equal(img[7, :, 0], axis)
  np.testing.assert_array_equal(img[:, 9, 1], axis[::-1])
  small = data.visualisation_grid(3, 1.0)
  assert small.tolist() == [
    [-1, 1],
    [0, 1],
    [1, 1],
    [-1, 0],
    [0, 0],
    [1, 0],
    [-1, -1],
    [0, -1],
    [1, -1],
  ]
  # The grid contains the whole standardised data set.
  x, _ = data.cubist_spiral()
  assert np.all(np.abs(x) < 2.25)
