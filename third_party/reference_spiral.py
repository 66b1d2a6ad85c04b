"""PyTorch oracle for the Cubist Spiral generator (METHODS.md section A).

Provenance: written for this project from METHODS.md section A, which restates
`cubist_spiral/CubistSpiral.py` of the authors' repository (stephenqz/sparsest,
Zhang & Papyan, ICML 2024). It is our own code, not a copy. It exists only so
that `tests/test_data.py` can check that the numpy/JAX generator in
`cubist/data.py` agrees with torch arithmetic bit for bit; the engine itself
never imports torch.

The arithmetic deliberately mirrors the reference's dtypes, because every
choice below moves the last bit of some rows:

* vertices, segment lengths and proportions are float64 (numpy vertices turned
  into torch tensors);
* ``t = torch.linspace(0, 1, n)`` uses torch's default dtype, float32, and
  whatever rounding the local torch CPU kernel does (see ``cubist/data.py``:
  the SIMD-capability kernels fuse the multiply-add);
* ``t * v_i`` promotes to float64, but ``1 - t`` is a Python scalar minus a
  float32 tensor, so it is computed (and rounded) in float32 *before* it is
  promoted for the product with ``v_{i+1}``;
* the stacked points are cast to float32, centred with ``mean(dim=0)``, and the
  *centred* tensor is divided by its unbiased ``std(dim=0)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_NUM_VERTICES = 17
_ARM_OFFSET = 15.0
_SAMPLE_SIZE = 50_000


def _arm_vertices() -> tuple[torch.Tensor, torch.Tensor]:
  """The two arms' 17 octagonal-spiral vertices, float64, shifted to >= 0."""
  # theta_k = pi + k*pi/4 + 0.4*pi, with the offset written the way the
  # reference writes it ("1.6 * (1/8) * 2 pi"), evaluated left to right.
  theta = np.linspace(math.pi, 5 * math.pi, _NUM_VERTICES) + 1.6 * 1 / 8 * 2 * math.pi
  radius = 10 * theta + math.pi
  unit = np.stack([np.cos(theta), np.sin(theta)], axis=1)
  base = unit * radius[:, None]
  # (The reference adds 0 * Gaussian noise here; that changes no value.)
  arm_a = base + _ARM_OFFSET * unit
  arm_b = base - _ARM_OFFSET * unit
  shift = np.minimum(arm_a.min(axis=0), arm_b.min(axis=0))
  return torch.from_numpy(arm_a - shift), torch.from_numpy(arm_b - shift)


def _sample_arm(vertices: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
  """Points along the 16 segments of one arm (float64) and per-segment counts."""
  lengths = torch.stack(
    [torch.linalg.vector_norm(vertices[i] - vertices[i + 1]) for i in range(len(vertices) - 1)]
  )
  share = lengths / lengths.sum()
  pieces, counts = [], []
  for i in range(len(vertices) - 1):
    n = int(share[i] * _SAMPLE_SIZE / 2)  # truncation toward zero
    t = torch.linspace(0, 1, n).unsqueeze(1)  # float32 (torch default dtype)
    # float64 * float32 -> float64; (1 - t) stays float32 until the product.
    pieces.append(t * vertices[i : i + 1] + (1 - t) * vertices[i + 1 : i + 2])
    counts.append(n)
  return torch.cat(pieces), counts


def reference_cubist_spiral() -> tuple[np.ndarray, np.ndarray, dict]:
  """Generate the dataset with torch.

  Returns:
    x: float32 (N, 2), standardised points (arm A rows first).
    labels: float32 (N,), 0 for arm A, 1 for arm B.
    info: dict with ``counts_a``, ``counts_b`` (per-segment counts), ``mean``
      and ``std`` (float32 (2,) statistics used to standardise).
  """
  arm_a, arm_b = _arm_vertices()
  pts_a, counts_a = _sample_arm(arm_a)
  pts_b, counts_b = _sample_arm(arm_b)
  x = torch.cat([pts_a, pts_b]).float()
  mean = torch.mean(x, dim=0, keepdim=True)
  x = x - mean
  std = torch.std(x, dim=0, keepdim=True)  # unbiased, of the centred points
  x = x / std
  labels = torch.cat([torch.zeros(len(pts_a)), torch.ones(len(pts_b))])
  info = {
    "counts_a": counts_a,
    "counts_b": counts_b,
    "mean": mean[0].numpy().copy(),
    "std": std[0].numpy().copy(),
  }
  return x.numpy().copy(), labels.numpy().copy(), info
