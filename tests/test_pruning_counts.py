"""Tests of the host-side count formulas (search/pruning/counts.py).

METHODS §E.1, §E.2, §E.9, §E.10, §F.1, §H.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from cubist import mlp
from search.pruning import counts as C

# The overparameterisation grid of §E.0 (f < N(w) only).
GRID_WIDTHS = (3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256)
GRID_TARGETS = tuple(range(15, 27)) + (30, 33, 37, 40, 44, 50, 53, 55, 57, 60, 65)


# --------------------------------------------------------------------------- geometry


def test_width_from_num_weights_inverts_n_of_w():
  for width in range(1, 300):
    assert C.width_from_num_weights(mlp.num_weights(width)) == width
  assert C.layer_sizes(16) == (32, 256, 256, 16)
  with pytest.raises(ValueError, match="not 2w"):
    C.width_from_num_weights(100)


# --------------------------------------------------------------------------- IMP


def test_imp_schedule_has_201_events_every_97_steps():
  assert C.imp_interval(19_500) == 97
  steps = C.imp_event_steps(19_500)
  assert len(steps) == 201 and steps[0] == 97 and steps[-1] == 19_497
  assert np.all(steps % 97 == 0)
  with pytest.raises(ValueError, match="200 training steps"):
    C.imp_interval(199)


def test_imp_counts_match_the_worked_example():
  k = C.imp_counts(20, 560)
  assert len(k) == 201
  assert (k[0], k[1], k[99], k[198]) == (551, 543, 86, 20)  # K_1, K_2, K_100, K_199
  assert (k[199], k[200]) == (19, 19)  # overshoot: frac > 1 (§E.1)
  assert np.all(np.diff(k) <= 0)
  clean = C.imp_counts(20, 560, clamp=True)
  assert (clean[198], clean[199], clean[200]) == (20, 20, 20)
  assert np.array_equal(clean[:199], k[:199])


def test_imp_final_count_is_f_minus_2_reference_f_minus_1_clean_f_exact():
  for width in GRID_WIDTHS:
    n = mlp.num_weights(width)
    for f in GRID_TARGETS:
      if f >= n:
        continue
      assert C.final_counts(f, n)["imp"] == f - 2
      assert C.final_counts(f, n, clean=True)["imp"] == f - 1
      assert C.final_counts(f, n, count_mode="exact")["imp"] == f


def test_kept_after_events_strict_chain():
  assert C.kept_after_events([10, 8, 9, 5], 12, strict=True) == 4
  assert C.kept_after_events([10, 8, 9, 5], 12, strict=False) == 5
  assert C.kept_after_events([], 12, strict=True) == 12


def test_target_must_be_below_n():
  with pytest.raises(ValueError, match="1..N-1"):
    C.imp_counts(27, 27)
  with pytest.raises(ValueError, match="1..N-1"):
    C.lth_counts(0, 27)


# --------------------------------------------------------------------------- LTH


def test_lth_counts_match_the_worked_examples():
  assert C.lth_counts(20, 560).tolist() == [243, 105, 46, 20]
  assert C.lth_counts(15, 44)[-1] == 14  # int(44 * (15/44)**1.0) truncates (§E.2)
  assert C.final_counts(20, 560)["lth"] == 19
  assert C.final_counts(15, 44)["lth"] == 13  # f - 2
  assert C.lth_counts(15, 44, exact=True).tolist()[:3] == C.lth_counts(15, 44).tolist()[:3]
  assert C.lth_counts(15, 44, exact=True)[-1] == 15


# --------------------------------------------------------------------------- RigL / ERK


@pytest.mark.parametrize(
  "width, f, layer_counts",
  [(16, 20, (4, 7, 7, 4)), (16, 15, (3, 5, 5, 3)), (6, 36, (8, 12, 12, 6)), (3, 15, (4, 5, 5, 3))],
)
def test_erk_counts_round_up_as_in_the_examples(width, f, layer_counts):
  n = mlp.num_weights(width)
  got = C.erk_layer_counts(f, n)
  assert tuple(got.tolist()) == layer_counts
  exact = C.erk_layer_counts(f, n, exact=True)
  assert exact.sum() == f and np.all(exact <= np.asarray(C.layer_sizes(width)))


def test_erk_densities_make_small_layers_dense():
  shapes = [ws for ws, _ in mlp.layer_shapes(3)]
  densities = C.erk_densities(shapes, 20 / 27)
  np.testing.assert_allclose(densities, [5 / 6, 2 / 3, 2 / 3, 1.0], rtol=1e-12)
  assert C.rigl_dense_layers(20, 27) == [False, False, False, True]
  # Densities (times sizes) sum to f.
  for width, f in ((16, 20), (6, 36), (3, 15), (64, 33)):
    shapes = [ws for ws, _ in mlp.layer_shapes(width)]
    n = mlp.num_weights(width)
    total = sum(d * np.prod(s) for d, s in zip(C.erk_densities(shapes, f / n), shapes))
    assert total == pytest.approx(f, rel=1e-12)


def test_rigl_schedule_146_updates_and_cosine_drop_fraction():
  steps = C.rigl_update_steps(19_500)
  assert C.rigl_end_step(19_500) == 14_625
  assert len(steps) == 146 and steps[0] == 99 and steps[-1] == 14_599
  assert np.all((steps + 1) % 100 == 0)
  fractions = C.rigl_drop_fractions(19_500)
  assert fractions[0] == pytest.approx(0.15 * (1 + np.cos(np.pi * 100 / 14_625)))
  assert np.all(np.diff(fractions) < 0) and fractions[-1] > 0
  drops = C.rigl_drop_counts([4, 7, 7, 4], [False, False, False, True], 19_500)
  assert drops.shape == (146, 4)
  assert drops[0].tolist() == [
    int(4 * fractions[0]),
    int(7 * fractions[0]),
    int(7 * fractions[0]),
    0,
  ]


# --------------------------------------------------------------------------- SoS


def test_sos_first_update_rules():
  # t_begin = 0: first update at freq (last_update starts at 0).
  assert C.sos_event_steps(1000, 0.0, 0.5, 0.1).tolist() == [100, 200, 300, 400, 500]
  # 0 < t_begin < freq: still first at freq.
  assert C.sos_event_steps(1000, 0.05, 0.5, 0.1).tolist() == [100, 200, 300, 400, 500]
  # t_begin >= freq: first at t_begin, then every freq up to t_end.
  assert C.sos_event_steps(1000, 0.25, 0.6, 0.1).tolist() == [250, 350, 450, 550]
  # Events at or after the last step are dropped.
  assert C.sos_event_steps(1000, 0.5, 1.0, 0.25).tolist() == [500, 750]
  # The default adapted schedule (§F.1): 16%-59% every 3.1% of 19,500 steps.
  assert C.sos_schedule(19_500, 0.16, 0.59, 0.031) == (3120, 11505, 604)
  steps = C.sos_event_steps(19_500, 0.16, 0.59, 0.031)
  assert steps[0] == 3120 and np.all(np.diff(steps) == 604) and steps[-1] <= 11505
  with pytest.raises(ValueError, match="begin before"):
    C.sos_schedule(1000, 0.5, 0.5, 0.1)


def test_sos_sparsity_is_the_zhu_gupta_cubic():
  s_f = 0.9
  assert C.sos_sparsity(0, s_f, 100, 500) == 0.0
  assert C.sos_sparsity(100, s_f, 100, 500) == 0.0
  assert C.sos_sparsity(300, s_f, 100, 500) == pytest.approx(s_f * (1 - 0.5**3))
  assert C.sos_sparsity(500, s_f, 100, 500) == pytest.approx(s_f)
  assert C.sos_sparsity(900, s_f, 100, 500) == pytest.approx(s_f)


def test_sos_counts_layer_and_global():
  n = mlp.num_weights(4)  # 44: layers (8, 16, 16, 4)
  global_counts = C.sos_counts(11, n, 1000, 0.1, 0.5, 0.1, "global")
  layer_counts = C.sos_counts(11, n, 1000, 0.1, 0.5, 0.1, "layer").reshape(-1, 4)
  keep = 1 - C.sos_sparsity(np.arange(100, 501, 100), 1 - 11 / 44, 100, 500)
  assert global_counts.tolist() == np.rint(44 * keep).astype(int).tolist()
  assert global_counts[0] == 44 and global_counts[-1] == 11
  assert layer_counts[-1].tolist() == [2, 4, 4, 1]  # round(n_l / 4), layer-wise uniform
  assert layer_counts.shape == (5, 4)
  with pytest.raises(ValueError, match="sos_scope"):
    C.sos_counts(11, n, 1000, 0.1, 0.5, 0.1, "block")


# --------------------------------------------------------------------------- §E.10 / §H tables


def test_h_float_truncation_examples():
  nominal = {
    w: {f: C.nominal_counts(f, mlp.num_weights(w)) for f in range(15, 27)} for w in (4, 5, 6, 8)
  }
  assert nominal[4][15]["lth"] == 14 and nominal[4][15]["snip"] == 14
  assert nominal[4][15]["force"] == 14 and nominal[4][15]["grasp"] == 15
  assert nominal[5][19]["grasp"] == 20 and nominal[5][19]["prospr"] == 20
  assert nominal[6][16]["prospr"] == 17 and nominal[6][16]["force"] == 15
  assert nominal[8][21]["prospr"] == 22


def test_e10_table_regenerated_from_the_formulas():
  rows = C.count_table(GRID_WIDTHS, GRID_TARGETS)
  assert all(row["f"] < row["N"] for row in rows)
  assert len(rows) == sum(1 for w in GRID_WIDTHS for f in GRID_TARGETS if f < mlp.num_weights(w))
  offsets = {
    method: collections.Counter(row[method] - row["f"] for row in rows)
    for method in C.TABLE_METHODS
  }
  assert set(offsets["imp"]) == {-2}
  assert set(offsets["lth"]) == {-1, -2}
  assert set(offsets["snip"]) == {0, -1}
  assert set(offsets["grasp"]) == {0, 1}
  assert set(offsets["synflow"]) == {-1}
  assert set(offsets["iter_snip"]) <= {-1, -2} and set(offsets["force"]) <= {-1, -2}
  assert set(offsets["prospr"]) == {0, 1}
  assert min(offsets["rigl"]) >= 0 and max(offsets["rigl"]) == 3
  # The examples of §E.1, §E.2, §E.9 sit in the generated table.
  by_key = {(row["w"], row["f"]): row for row in rows}
  assert by_key[16, 20]["imp"] == 18 and by_key[16, 20]["lth"] == 19
  assert by_key[16, 20]["rigl"] == 22 and by_key[16, 15]["rigl"] == 16
  assert by_key[3, 15]["rigl"] == 17 and by_key[4, 15]["lth"] == 13
  assert C.count_table((6,), (36,))[0]["rigl"] == 38
  exact = C.count_table((4, 16), (15, 20), count_mode="exact")
  assert all(row[method] == row["f"] for row in exact for method in C.TABLE_METHODS)


def test_format_count_table_is_markdown():
  rows = C.count_table((16,), (20,))
  text = C.format_count_table(rows)
  lines = text.splitlines()
  assert lines[0].startswith("| w | N | f | imp | lth")
  assert lines[2] == "| 16 | 560 | 20 | 18 | 19 | 20 | 20 | 19 | 19 | 19 | 20 | 22 |"
  nominal = C.format_count_table(rows, methods=("imp", "lth"), nominal=True)
  assert nominal.splitlines()[2] == "| 16 | 560 | 20 | 19 | 20 |"
