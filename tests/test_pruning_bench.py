"""The pruning benchmark's bookkeeping: the §G.2 run count and the projection."""

from __future__ import annotations

import pytest

from experiments import bench_pruning as bench
from search.pruning import registry


def test_overparam_family_has_the_reference_run_count():
  assert sum(bench.overparam_runs().values()) == 18_954  # METHODS §G.2


def test_projection_scales_plain_cost_by_method_overhead():
  widths = (3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256)
  plain = [dict(width=w, seconds_per_run=0.01 * w) for w in widths]
  methods = [
    dict(method=m, width=w, seconds_per_run=(2.0 if m == "lth" else 1.0) * 0.01 * w)
    for m in registry.PAPER_METHODS
    for w in (16, 256)
  ]
  projection = bench.project_overparam(methods, plain)
  expected = sum(
    runs * 0.01 * width * (2.0 if method == "lth" else 1.0)
    for (method, width), runs in bench.overparam_runs().items()
  )
  assert projection["hours"] == pytest.approx(expected / 3600)
  assert projection["methods_missing"] == []


def test_each_method_is_scaled_by_its_own_nearest_timed_width():
  """A method timed only at 16 and 256 is projected from those, even where other
  methods were timed at more widths (the rule once dropped it as 'missing')."""
  widths = (3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256)
  plain = [dict(width=w, seconds_per_run=0.01 * w) for w in widths]
  methods = [dict(method="snip", width=w, seconds_per_run=0.01 * w) for w in widths]
  methods += [
    dict(method=m, width=w, seconds_per_run=3.0 * 0.01 * w)
    for m in registry.PAPER_METHODS
    if m != "snip"
    for w in (16, 256)
  ]
  projection = bench.project_overparam(methods, plain)
  expected = sum(
    runs * 0.01 * width * (1.0 if method == "snip" else 3.0)
    for (method, width), runs in bench.overparam_runs().items()
  )
  assert projection["methods_missing"] == []
  assert projection["hours"] == pytest.approx(expected / 3600)
