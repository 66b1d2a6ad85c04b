"""Projected wall time of a full combinatorial search from measured throughput.

The exhaustive 95% search of the paper trains phase 1 (every (d1, d2, d3) in
1..16^3 x 6 settings) and phase 2 (every mask triple inside the phase-1 widths
x 6 settings). Each run is trained at the padded width that holds it (the
largest of its hidden widths), so its cost is 1 / runs_per_second(width) as
measured by `make bench` (the per-width table). Widths without a measurement
take the next measured width above (pessimistic).
"""

from __future__ import annotations

import itertools
from collections import Counter

from search import enumeration as enum
from search.phases import layer_shapes


def phase1_runs_by_width(max_width: int = 16, settings: int = 6) -> Counter:
  """Phase-1 runs per padded width: a triple pads to max(d1, d2, d3)."""
  counts = Counter()
  for triple in itertools.product(range(1, max_width + 1), repeat=3):
    counts[max(triple)] += settings
  return counts


def phase2_mask_triples(widths) -> int:
  """Every mask triple inside the widths (all nnz levels), counted without materialising."""
  total = 1
  for rows, cols in layer_shapes(widths):
    total *= sum(enum.count_layer_masks(rows, cols, n) for n in enum.nnz_range(rows, cols))
  return total


def rate_at(width: int, runs_per_second: dict[int, float]) -> float:
  """Measured runs/s at `width`, or at the next measured width above it."""
  measured = sorted(w for w, rate in runs_per_second.items() if rate and rate > 0)
  above = [w for w in measured if w >= width]
  return runs_per_second[above[0] if above else measured[-1]]


def project(
  runs_per_second: dict[int, float], phase2_widths, max_width: int = 16, settings: int = 6
) -> dict:
  """Projected seconds of phase 1, of the exhaustive phase 2 inside `phase2_widths`, and total."""
  phase1 = phase1_runs_by_width(max_width, settings)
  phase1_seconds = sum(runs / rate_at(width, runs_per_second) for width, runs in phase1.items())
  phase2_runs = phase2_mask_triples(phase2_widths) * settings
  phase2_rate = rate_at(max(phase2_widths), runs_per_second)
  phase2_seconds = phase2_runs / phase2_rate
  return {
    "phase1_runs": sum(phase1.values()),
    "phase1_seconds": phase1_seconds,
    "phase2_widths": list(phase2_widths),
    "phase2_runs": phase2_runs,
    "phase2_runs_per_second": phase2_rate,
    "phase2_seconds": phase2_seconds,
    "total_seconds": phase1_seconds + phase2_seconds,
    "total_hours": (phase1_seconds + phase2_seconds) / 3600,
  }
