"""The combinatorial search (METHODS §D): levels, enumeration, selection, seeds, e2e, shards, errors.

Selection rules are tested on fabricated rows (`Search._train` and
`Search._rows_for` mocked), so they run in milliseconds. Real training is
limited to one tiny search (widths 1..2, one setting, one epoch), its resume,
a sharded copy of it and one chunk-composition check.
"""

import dataclasses
import io
import itertools
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from cubist import chunks, data, engine, mlp
from cubist import masks as mask_ops
from cubist import specs as spec_ops
from cubist import store as store_ops
from search import combinatorial as comb
from search import enumeration as enum
from search import phases, search_result, symmetry
from tests.rows import stored_row

REPO = Path(__file__).resolve().parents[1]
# Chunk size 1: every bucket has one chunk shape, so each width compiles once
# for the whole module (engine._cached_train is shared by all searches here).
PLAN = engine.ChunkPlan(chunk_sizes=((10_000, 1),))
TINY = dict(target=0.5, max_width=2, lrs=(0.1,), schedules=("constant",), epochs=1)


def quiet(**kwargs):
  kwargs.setdefault("plan", PLAN)
  kwargs.setdefault("progress_stream", io.StringIO())
  kwargs.setdefault("log", lambda *args: None)
  return kwargs


# --- Fabricated training results ---------------------------------------------


def fake_row(spec, status, accuracy):
  """A full store row for `spec` with the given outcome (nnz counted from the mask)."""
  return stored_row(spec, status, accuracy)


def _no_engine(*args, **kwargs):
  raise AssertionError("engine.run must not be called")


def mock_training(monkeypatch, outcome):
  """Replace training by `outcome(spec) -> (status, accuracy)`; return the trained spec lists."""
  trained = []
  monkeypatch.setattr(comb.Search, "_train", lambda self, specs: trained.append(list(specs)))
  monkeypatch.setattr(
    comb.Search, "_rows_for", lambda self, specs: [fake_row(s, *outcome(s)) for s in specs]
  )
  monkeypatch.setattr(comb.engine, "run", _no_engine)
  return trained


def phase1_outcome(table, default=("ok", 0.5)):
  """outcome() from {(triple, lr): (status, accuracy)}; other runs get `default`."""
  return lambda spec: table.get((tuple(spec.widths), spec.lr), default)


def triple_of(label):
  return tuple(tuple(int(v) for v in part.split(":")) for part in label.split(","))


def level_labels(config, widths, level):
  return [phases.mask_config_label(t) for t in phases.level_mask_triples(config, widths, level)]


# --- 1. Phase-1 levels ---------------------------------------------------------


@pytest.mark.parametrize("max_width", [1, 3, 16])
def test_phase1_levels_cover_every_triple_once_by_ascending_dense_count(max_width):
  config = phases.SearchConfig(target=0.9, max_width=max_width)
  levels = phases.phase1_levels(config)
  counts = [count for count, _ in levels]
  assert counts == sorted(set(counts))  # strictly ascending, one entry per P
  flat = [t for _, triples in levels for t in triples]
  assert sorted(flat) == list(itertools.product(range(1, max_width + 1), repeat=3))
  assert len(flat) == len(set(flat)) == max_width**3
  for count, triples in levels:
    assert triples
    for triple in triples:
      assert mask_ops.dense_parameter_count(triple) == count
  # P(d) = weights + biases of the structured (dense) sub-network (§B.4).
  for triple in flat[:50] + flat[-5:]:
    masks = mask_ops.structured_masks(triple, 16)
    assert sum(int(a.sum()) for layer in masks for a in layer) == mask_ops.dense_parameter_count(
      triple
    )
    assert sum(int(layer[0].sum()) for layer in masks) == mask_ops.dense_weight_count(triple)
  assert levels[0] == (9, [(1, 1, 1)])
  if max_width == 16:
    assert levels[-1] == (609, [(16, 16, 16)])


def test_phase1_budget_keeps_only_triples_below_the_budget():
  full = phases.phase1_levels(phases.SearchConfig(target=0.9, max_width=6))
  for budget in (9, 10, 17, 50, 10_000):
    config = phases.SearchConfig(target=0.9, max_width=6, phase1_budget=budget)
    assert phases.phase1_levels(config) == [(p, ts) for p, ts in full if p < budget]
  assert phases.phase1_levels(phases.SearchConfig(target=0.9, max_width=6, phase1_budget=9)) == []


# --- 2. Phase-1 selection (fabricated results) ----------------------------------

SMALL1 = dict(target=0.9, max_width=4, lrs=(0.05, 0.1), schedules=("constant",))


def test_phase1_picks_smallest_dense_count_by_best_accuracy_over_settings(tmp_path, monkeypatch):
  trained = mock_training(
    monkeypatch,
    phase1_outcome(
      {
        ((1, 1, 2), 0.05): ("ok", 0.89),
        ((1, 1, 2), 0.1): ("ok", 0.85),  # P=12, just below
        ((2, 1, 1), 0.05): ("ok", 0.10),
        ((2, 1, 1), 0.1): ("ok", 0.95),  # P=13, reaches at lr 0.1
        ((4, 4, 4), 0.1): ("ok", 0.99),
        ((1, 2, 3), 0.05): ("ok", 0.97),
      }
    ),
  )
  result = comb.Search(phases.SearchConfig(**SMALL1), tmp_path, **quiet()).phase1()
  assert result["widths"] == (2, 1, 1)
  assert result["dense_params"] == 13
  assert result["accuracy"] == 0.95
  assert result["row"]["lr"] == 0.1 and (result["row"]["d1"], result["row"]["d2"]) == (2, 1)
  assert "mask" not in result["row"]
  table = result["levels"]
  assert [r["dense_params"] for r in table[:3]] == [9, 12, 13]
  assert [(r["triples"], r["best_accuracy"], r["reached"]) for r in table[:3]] == [
    (1, 0.5, 0),
    (2, 0.89, 0),
    (1, 0.95, 1),
  ]
  # 64 triples x 2 settings < 256: one batch, every level trained once.
  assert len(trained) == 1 and len(trained[0]) == 128
  assert len(table) == len(phases.phase1_levels(phases.SearchConfig(**SMALL1)))


def test_phase1_target_reached_with_equality(tmp_path, monkeypatch):
  mock_training(monkeypatch, phase1_outcome({((1, 1, 1), 0.05): ("ok", 0.9)}))
  result = comb.Search(phases.SearchConfig(**SMALL1), tmp_path, **quiet()).phase1()
  assert result["widths"] == (1, 1, 1) and result["accuracy"] == 0.9


@pytest.mark.parametrize(
  "accuracies, expected",
  [
    # Level P=20 holds (1,2,3), (1,3,2), (3,1,2).
    (
      {(1, 2, 3): 0.92, (1, 3, 2): 0.93, (3, 1, 2): 0.93},
      (1, 3, 2),
    ),  # accuracy, then lexicographic
    ({(1, 2, 3): 0.93, (1, 3, 2): 0.93, (3, 1, 2): 0.96}, (3, 1, 2)),  # highest accuracy wins
    ({(1, 2, 3): 0.93, (1, 3, 2): 0.93, (3, 1, 2): 0.93}, (1, 2, 3)),  # full tie: smallest triple
  ],
)
def test_phase1_tie_break_at_equal_dense_count(tmp_path, monkeypatch, accuracies, expected):
  assert [ts for p, ts in phases.phase1_levels(phases.SearchConfig(**SMALL1)) if p == 20] == [
    [(1, 2, 3), (1, 3, 2), (3, 1, 2)]
  ]
  table = {(t, 0.1): ("ok", a) for t, a in accuracies.items()}
  table[((4, 1, 1), 0.1)] = ("ok", 0.99)  # P=21: sparser answers must win regardless
  mock_training(monkeypatch, phase1_outcome(table))
  result = comb.Search(phases.SearchConfig(**SMALL1), tmp_path, **quiet()).phase1()
  assert result["widths"] == expected
  assert result["dense_params"] == 20
  assert result["accuracy"] == accuracies[expected]
  level = next(r for r in result["levels"] if r["dense_params"] == 20)
  assert level["reached"] == 3 and level["best_accuracy"] == max(accuracies.values())


def test_phase1_ignores_diverged_and_failed_runs(tmp_path, monkeypatch):
  mock_training(
    monkeypatch,
    phase1_outcome(
      {
        ((1, 1, 1), 0.1): ("diverged", 0.99),
        ((1, 1, 1), 0.05): ("ok", 0.3),
        ((1, 1, 2), 0.1): ("failed", None),
        ((1, 1, 2), 0.05): ("ok", 0.2),
        ((1, 2, 1), 0.1): ("diverged", 0.99),
        ((1, 2, 1), 0.05): ("diverged", 0.98),
        ((2, 1, 1), 0.1): ("ok", 0.95),
      }
    ),
  )
  result = comb.Search(phases.SearchConfig(**SMALL1), tmp_path, **quiet()).phase1()
  assert result["widths"] == (2, 1, 1) and result["accuracy"] == 0.95
  table = result["levels"]
  assert (table[0]["best_accuracy"], table[0]["reached"]) == (0.3, 0)
  assert (table[1]["best_accuracy"], table[1]["reached"]) == (0.2, 0)  # (1,2,1) has no ok run


def test_best_by_candidate_keeps_best_ok_run_and_nan_without_one():
  rows = [
    dict(k="a", status="ok", accuracy=0.4),
    dict(k="a", status="diverged", accuracy=0.9),
    dict(k="a", status="ok", accuracy=0.6),
    dict(k="b", status="failed", accuracy=None),
    dict(k="b", status="diverged", accuracy=1.0),
    dict(k="c", status="ok", accuracy=None),
  ]
  best = comb.best_by_candidate(rows, lambda r: r["k"])
  assert best["a"].best_accuracy == 0.6 and best["a"].runs == 3
  assert best["a"].best_row is rows[2]
  assert np.isnan(best["b"].best_accuracy) and best["b"].runs == 2
  assert np.isnan(best["c"].best_accuracy)


def test_phase1_unreachable_target_gives_no_widths(tmp_path, monkeypatch):
  trained = mock_training(monkeypatch, phase1_outcome({}))
  monkeypatch.setattr(search_result, "save_model", _no_engine)
  config = phases.SearchConfig(**{**SMALL1, "target": 0.999})
  result = comb.Search(config, tmp_path, **quiet()).run()
  assert result["phase1"]["widths"] is None
  assert "phase2" not in result and "model_path" not in result
  levels = phases.phase1_levels(config)
  assert [r["dense_params"] for r in result["phase1"]["levels"]] == [p for p, _ in levels]
  assert all(r["reached"] == 0 for r in result["phase1"]["levels"])
  assert sum(map(len, trained)) == 64 * 2
  assert json.loads((tmp_path / "search.json").read_text())["phase1"]["widths"] is None
  assert search_result.format_result(result) == "phase 1: no width triple reaches 0.999"


@pytest.mark.parametrize("exhaustive", [False, True])
def test_phase1_stops_after_the_first_reaching_level(tmp_path, monkeypatch, exhaustive):
  config = phases.SearchConfig(**{**SMALL1, "max_width": 8, "exhaustive_phase1": exhaustive})
  levels = phases.phase1_levels(config)
  assert len(levels) == 141
  trained = mock_training(
    monkeypatch,
    phase1_outcome(
      {
        ((2, 1, 1), 0.1): ("ok", 0.95),  # P=13
        ((8, 8, 8), 0.05): ("ok", 0.999),
      }
    ),
  )  # the last level: better, but denser
  result = comb.Search(config, tmp_path, **quiet()).phase1()
  assert result["widths"] == (2, 1, 1) and result["dense_params"] == 13
  table = result["levels"]
  assert [(r["dense_params"], r["triples"]) for r in table] == [
    (p, len(ts)) for p, ts in levels[: len(table)]
  ]  # a prefix of the levels
  runs = sum(map(len, trained))
  trained_triples = {s.widths for chunk in trained for s in chunk}
  assert trained_triples == {t for _, ts in levels[: len(table)] for t in ts}
  if exhaustive:
    assert len(table) == len(levels) and runs == 8**3 * 2
    assert table[-1]["reached"] == 1
  else:
    assert len(table) < len(levels) and len(trained) == 1
    # Only the grouping of small levels (batches of >= 256 runs) goes past P=13:
    # the batch holding the answer ends as soon as it is full.
    assert (
      sum(r["triples"] for r in table[:-1]) * 2
      < 256
      <= runs
      == sum(r["triples"] for r in table) * 2
    )
    assert runs < 8**3 * 2


def test_phase1_budget_restricts_the_search(tmp_path, monkeypatch):
  trained = mock_training(
    monkeypatch,
    phase1_outcome(
      {
        ((2, 2, 1), 0.1): ("ok", 0.99),  # P=17: excluded by the budget
        ((1, 2, 2), 0.1): ("ok", 0.95),
      }
    ),
  )  # P=16
  config = phases.SearchConfig(**{**SMALL1, "phase1_budget": 17})
  result = comb.Search(config, tmp_path, **quiet()).phase1()
  assert result["widths"] == (1, 2, 2)
  assert {s.widths for chunk in trained for s in chunk} == {
    t for t in itertools.product(range(1, 5), repeat=3) if mask_ops.dense_parameter_count(t) < 17
  }


def test_phase1_widths_given_skips_phase1(tmp_path, monkeypatch):
  trained = mock_training(monkeypatch, lambda spec: ("ok", 0.5))
  config = phases.SearchConfig(
    target=0.9, phase1_widths=(2, 2, 2), lrs=(0.1,), schedules=("constant",)
  )
  search = comb.Search(config, tmp_path, **quiet())
  assert search.phase1() == {"widths": (2, 2, 2), "given": True, "levels": []}
  assert trained == []


# --- 3. Phase-2 enumeration -----------------------------------------------------


def expected_level_count(widths, level, cap_w2=None):
  shapes = phases.layer_shapes(widths)
  total = 0
  for ns in itertools.product(*(enum.nnz_range(*s) for s in shapes)):
    if sum(ns) == level:
      counts = [enum.count_layer_masks(*s, n) for s, n in zip(shapes, ns)]
      if cap_w2 is not None:
        counts[1] = min(counts[1], cap_w2)
      total += int(np.prod(counts))
  return total


@pytest.mark.parametrize("widths", [(3, 3, 2), (2, 2, 2), (1, 2, 3)])
def test_phase2_levels_and_mask_triples(widths):
  config = phases.SearchConfig(target=0.9)
  d1, d2, d3 = widths
  assert phases.layer_shapes(widths) == ((d1, 2), (d2, d1), (d3, d2))
  levels = phases.phase2_levels(config, widths)
  low = max(d1, 2) + max(d2, d1) + max(d3, d2)
  assert levels == list(range(low, 2 * d1 + d1 * d2 + d2 * d3 + 1))
  seen = []
  for level in levels:
    triples = list(phases.level_mask_triples(config, widths, level))
    assert len(triples) == expected_level_count(widths, level) > 0
    for (n1, i1), (n2, i2), (n3, i3) in triples:
      assert n1 + n2 + n3 == level
    seen += triples
  assert len(seen) == len(set(seen))
  if widths == (3, 3, 2):  # §D.3 per-layer table: 8 x 57 x 13 mask triples
    assert len(seen) == 8 * 57 * 13


@pytest.mark.parametrize("widths", [(3, 3, 2), (2, 2, 2)])
def test_network_masks_blocks_biases_classifier_and_connectivity(widths):
  config = phases.SearchConfig(target=0.9)
  d1, d2, d3 = widths
  triples = [
    t
    for level in phases.phase2_levels(config, widths)
    for t in phases.level_mask_triples(config, widths, level)
  ]
  labels = [phases.mask_config_label(t) for t in triples]
  assert len(set(labels)) == len(labels)
  all_masks = []
  for triple, label in zip(triples, labels):
    assert re.fullmatch(r"\d+:\d+,\d+:\d+,\d+:\d+", label)
    assert triple_of(label) == triple
    masks = phases.network_masks(widths, triple, 16)
    mask_ops.validate_masks(masks, 16)
    for l, ((rows, cols), (n, i)) in enumerate(zip(phases.layer_shapes(widths), triple)):
      block = masks[l].weight[:rows, :cols]
      assert np.array_equal(block, enum.mask_from_index(rows, cols, n, i))
      assert block.sum() == n and enum.index_of_mask(block) == i
      assert block.any(axis=0).all() and block.any(axis=1).all()  # no empty row or column
      assert masks[l].weight.sum() == n  # nothing outside the block
      assert np.array_equal(masks[l].bias, np.arange(16) < rows)
    assert np.array_equal(masks[3].weight, (np.arange(16) < d3)[None])  # dense over d3
    assert masks[3].bias.tolist() == [True]
    all_masks.append(masks)
  stacked = jax.tree.map(lambda *a: np.stack(a).astype(np.float32), *all_masks)
  counts = jax.device_get(jax.jit(jax.vmap(mask_ops.connectivity))(stacked))
  hidden = np.array([sum(n for n, _ in t) for t in triples])
  np.testing.assert_array_equal(counts["disconnected_weight_nnz"], 0)
  np.testing.assert_array_equal(counts["dead_units"], 0)
  np.testing.assert_array_equal(counts["effective_weight_nnz"], hidden + d3)
  np.testing.assert_array_equal(
    jax.vmap(mask_ops.model_nnz)(stacked), hidden + d3 + d1 + d2 + d3 + 1
  )


def test_phase2_specs_fields():
  config = phases.SearchConfig(target=0.9, lrs=(0.05, 0.1), schedules=("constant", "cosine"))
  widths = (3, 3, 2)
  triples = list(phases.level_mask_triples(config, widths, 12))
  specs = phases.phase2_specs(config, widths, triples)
  assert len(specs) == 4 * len(triples)
  for index, spec in enumerate(specs):
    triple = triples[index // 4]
    assert spec.mask_config == phases.mask_config_label(triple)
    assert spec.family == phases.PHASE2 and spec.method == "plain"
    assert spec.target_nnz == 12 + 2
    assert spec.hidden_widths() == widths and spec.widths is None
    assert mask_ops.occupied_width(spec.masks()) == 3
    assert spec.width == 16 and spec.epochs == config.epochs
    comb_masks = phases.network_masks(widths, triple, 16)
    for a, b in zip(jax.tree.leaves(spec.masks()), jax.tree.leaves(comb_masks)):
      assert np.array_equal(a, b)
  assert [(s.lr, s.schedule) for s in specs[:4]] == list(
    itertools.product((0.05, 0.1), ("constant", "cosine"))
  )


def test_reference_caps():
  widths = (3, 3, 2)
  plain = phases.SearchConfig(target=0.995)
  capped = phases.SearchConfig(target=0.995, reference_caps=True, cap_sum=15, cap_w2=2)
  for level in phases.phase2_levels(plain, widths):
    full = list(phases.level_mask_triples(plain, widths, level))
    kept = list(phases.level_mask_triples(capped, widths, level))
    if level >= 15:
      assert kept == []
    else:
      assert kept == [t for t in full if t[1][1] < 2]  # first cap_w2 W2 masks per n2, order kept
      assert len(kept) == expected_level_count(widths, level, cap_w2=2)
  # The default caps (sum < 33, 3 W2 masks): nothing at (3,3,2) reaches 33, W2 capped at 3.
  default = phases.SearchConfig(target=0.995, reference_caps=True)
  triples = [
    t
    for level in phases.phase2_levels(default, widths)
    for t in phases.level_mask_triples(default, widths, level)
  ]
  assert len(triples) == 8 * sum(min(enum.count_layer_masks(3, 3, n), 3) for n in range(3, 10)) * 13
  assert max(i2 for _, (_, i2), _ in triples) == 2


@pytest.mark.parametrize("widths, levels", [((2, 2, 2), None), ((3, 3, 2), (12, 15))])
def test_canonical_keeps_one_representative_per_relabelling_class(widths, levels):
  config = phases.SearchConfig(target=0.9, lrs=(0.1,), schedules=("constant",))
  canonical = dataclasses.replace(config, canonical=True)
  levels = levels or phases.phase2_levels(config, widths)
  fewer = False
  for level in levels:
    triples = list(phases.level_mask_triples(config, widths, level))
    every = phases.phase2_specs(config, widths, triples)
    kept = phases.phase2_specs(canonical, widths, triples)
    labels = [s.mask_config for s in every]
    kept_labels = [s.mask_config for s in kept]
    # A subsequence of the full list (first representative of each class, order kept).
    assert [l for l in labels if l in set(kept_labels)] == kept_labels
    assert {s.exp_id() for s in kept} <= {s.exp_id() for s in every}

    def key(label):
      masks = phases.network_masks(widths, triple_of(label), 16)
      return symmetry.canonical_network(
        *(
          masks[l].weight[:rows, :cols]
          for l, (rows, cols) in enumerate(phases.layer_shapes(widths))
        )
      )

    kept_keys = [key(l) for l in kept_labels]
    assert len(set(kept_keys)) == len(kept_keys)  # distinct classes
    assert set(kept_keys) == {key(l) for l in labels}  # every class still represented
    fewer |= len(kept) < len(every)
  assert fewer
  if widths == (2, 2, 2):
    total = sum(
      len(phases.phase2_specs(canonical, widths, phases.level_mask_triples(config, widths, lv)))
      for lv in levels
    )
    assert total < 64


# --- 4. Phase-2 selection (fabricated results) ----------------------------------

SMALL2 = dict(target=0.9, lrs=(0.05, 0.1), schedules=("constant",), phase1_widths=(2, 2, 2))


def phase2_setup(monkeypatch, config):
  widths = (2, 2, 2)
  l7 = level_labels(config, widths, 7)
  l8 = level_labels(config, widths, 8)
  l10 = level_labels(config, widths, 10)
  a, b, c = l8[0], l8[-1], l10[0]
  table = {
    (l7[0], 0.1): ("ok", 0.899),
    (l7[-1], 0.05): ("diverged", 0.99),
    (a, 0.1): ("ok", 0.93),
    (b, 0.05): ("ok", 0.95),
    (b, 0.1): ("ok", 0.2),
    (c, 0.1): ("ok", 0.99),
  }
  trained = mock_training(
    monkeypatch, lambda spec: table.get((spec.mask_config, spec.lr), ("ok", 0.5))
  )
  return trained, SimpleNamespace(l7=l7, l8=l8, l10=l10, a=a, b=b, c=c)


@pytest.mark.parametrize("all_levels", [False, True])
def test_phase2_stops_at_the_first_reaching_level(tmp_path, monkeypatch, all_levels):
  config = phases.SearchConfig(**SMALL2, all_levels=all_levels)
  trained, labels = phase2_setup(monkeypatch, config)
  assert len(labels.l8) > 2
  result = comb.Search(config, tmp_path, **quiet()).phase2((2, 2, 2))
  assert result["mask_config"] == labels.b
  assert result["accuracy"] == 0.95 and result["widths"] == (2, 2, 2)
  assert result["weight_nnz"] == 8 + 2 and result["model_nnz"] == 10 + 6 + 1
  assert result["row"]["lr"] == 0.05 and result["row"]["mask_config"] == labels.b
  table = result["levels"]
  expected_levels = list(range(6, 13)) if all_levels else [6, 7, 8]
  assert [r["hidden_nnz"] for r in table] == expected_levels
  assert [r["weight_nnz"] for r in table] == [lv + 2 for lv in expected_levels]
  assert [r["model_nnz"] for r in table] == [lv + 2 + 7 for lv in expected_levels]
  for row, chunk in zip(table, trained):
    level_triples = level_labels(config, (2, 2, 2), row["hidden_nnz"])
    assert row["masks"] == len(level_triples) and row["runs"] == 2 * len(level_triples)
    assert sorted(s.mask_config for s in chunk) == sorted(level_triples * 2)
  assert len(trained) == len(table)
  assert (table[1]["best_accuracy"], table[1]["reached"]) == (0.899, 0)  # diverged 0.99 ignored
  assert (table[2]["best_accuracy"], table[2]["reached"], table[2]["best_mask_config"]) == (
    0.95,
    2,
    labels.b,
  )
  if all_levels:
    assert (table[4]["best_accuracy"], table[4]["reached"]) == (0.99, 1)


def test_run_given_widths_writes_json_and_format_result_prints_levels(tmp_path, monkeypatch):
  config = phases.SearchConfig(**SMALL2)
  trained, labels = phase2_setup(monkeypatch, config)
  saved = []
  monkeypatch.setattr(
    search_result,
    "save_model",
    lambda cfg, answer, row, workdir: saved.append(answer) or Path(workdir) / "m.npz",
  )
  result = comb.Search(config, tmp_path, **quiet()).run()
  assert all(s.family == phases.PHASE2 for chunk in trained for s in chunk)
  assert result["phase1"]["given"] and result["phase2"]["mask_config"] == labels.b
  assert saved == [result["phase2"]] and result["model_path"] == str(tmp_path / "m.npz")
  stored = json.loads((tmp_path / "search.json").read_text())
  assert stored["phase2"]["mask_config"] == labels.b and stored["config"]["target"] == 0.9
  assert stored["phase2"]["widths"] == [2, 2, 2] and "mask" not in stored["phase2"]["row"]
  text = search_result.format_result(result).splitlines()
  assert text[0] == "phase 1: widths (2, 2, 2) (given)"
  assert text[1] == "phase 2 levels (widths (2, 2, 2)):"
  assert text[2].split() == [
    "weight_nnz",
    "model_nnz",
    "masks",
    "runs",
    "best_acc",
    "reached",
    "best",
    "mask",
  ]
  rows = [line.split() for line in text[3:6]]
  assert [r[0] for r in rows] == ["8", "9", "10"] and [r[1] for r in rows] == ["15", "16", "17"]
  assert rows[2][4:] == ["0.9500", "2", labels.b]
  assert text[6] == (
    f"sparsest model reaching 0.9: widths (2, 2, 2), masks {labels.b}, "
    f"accuracy 0.9500, weight nnz 10, model nnz 17"
  )
  assert len(text) == 7


def test_phase2_with_caps_and_no_answer(tmp_path, monkeypatch):
  config = phases.SearchConfig(
    **{**SMALL2, "target": 0.999}, reference_caps=True, cap_sum=9, cap_w2=1
  )
  trained = mock_training(monkeypatch, lambda spec: ("ok", 0.5))
  monkeypatch.setattr(search_result, "save_model", _no_engine)
  result = comb.Search(config, tmp_path, **quiet()).run()
  table = result["phase2"]["levels"]
  assert result["phase2"]["mask_config"] is None
  assert [r["hidden_nnz"] for r in table] == [6, 7, 8]  # levels >= 9 are empty, not trained
  assert [r["masks"] for r in table] == [expected_level_count((2, 2, 2), lv, 1) for lv in (6, 7, 8)]
  assert all(triple_of(s.mask_config)[1][1] == 0 for chunk in trained for s in chunk)
  assert search_result.format_result(result).splitlines()[-1] == (
    "phase 2: no mask reaches 0.999; the dense network at the given widths (2, 2, 2) "
    "(weight nnz 14, model nnz 21) is the sparsest model known to reach it"
  )


# --- 5. Seeds and resumability ---------------------------------------------------


def test_run_seed_is_stable():
  assert spec_ops.run_seed("phase1", "1x1x1", 0.1, "constant", 0, "random") == 377756475
  assert spec_ops.run_seed(1, 2) == spec_ops.run_seed("1", "2")
  assert 0 <= spec_ops.run_seed("x") < 2**31
  assert spec_ops.run_seed("a", "b") != spec_ops.run_seed("b", "a")


def test_seeds_and_exp_ids_differ_between_specs_and_repeat_exactly():
  config = phases.SearchConfig(target=0.9, max_width=3, repeats=2)
  again = phases.SearchConfig(target=0.9, max_width=3, repeats=2)
  triples = [t for _, ts in phases.phase1_levels(config) for t in ts]
  p1 = phases.phase1_specs(config, triples)
  assert len(p1) == 27 * 2 * 3 * 2
  widths = (2, 2, 2)
  masks = [
    t
    for lv in phases.phase2_levels(config, widths)
    for t in phases.level_mask_triples(config, widths, lv)
  ]
  p2 = phases.phase2_specs(config, widths, masks)
  p2_other = phases.phase2_specs(config, (2, 2, 3), [((2, 0), (2, 0), (3, 0))])
  everything = p1 + p2 + p2_other
  assert len({s.seed for s in everything}) == len(everything)
  assert len({s.exp_id() for s in everything}) == len(everything)
  # The same config (a fresh but equal object) gives identical specs: resumable.
  assert [(s.exp_id(), s.seed) for s in phases.phase1_specs(again, triples)] == [
    (s.exp_id(), s.seed) for s in p1
  ]
  assert [(s.exp_id(), s.seed) for s in phases.phase2_specs(again, widths, masks)] == [
    (s.exp_id(), s.seed) for s in p2
  ]
  assert config.fingerprint() == again.fingerprint()
  assert config.fingerprint() != dataclasses.replace(config, target=0.95).fingerprint()
  # Seeds do not depend on the target, so a run means the same thing in any search.
  other = dataclasses.replace(config, target=0.95)
  assert [s.seed for s in phases.phase1_specs(other, triples)] == [s.seed for s in p1]


# --- 6. End-to-end tiny search ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("tiny")
  config = phases.SearchConfig(**TINY)
  logs = []
  result = comb.Search(config, workdir, **quiet(log=logs.append)).run()
  return SimpleNamespace(config=config, workdir=workdir, result=result, logs=logs)


def test_data_are_balanced_so_a_constant_predictor_scores_one_half():
  _, y = data.cubist_spiral()
  assert len(y) == 49_982 and int(np.sum(y)) == 24_991


def test_tiny_search_end_to_end(tiny):
  result, config, workdir = tiny.result, tiny.config, tiny.workdir
  phase1, phase2 = result["phase1"], result["phase2"]
  assert phase1["widths"] is not None and phase2["mask_config"] is not None
  rows = store_ops.merge_stores([workdir / "results.sqlite"])
  assert sorted(p.name for p in workdir.glob("results*.sqlite")) == ["results.sqlite"]
  assert all(r["status"] == "ok" for r in rows)

  # Phase 1 recomputed from the store: smallest P among triples reaching the target.
  p1 = [r for r in rows if r["family"] == phases.PHASE1]
  assert sorted((r["d1"], r["d2"], r["d3"]) for r in p1) == list(
    itertools.product((1, 2), repeat=3)
  )
  best = {(r["d1"], r["d2"], r["d3"]): r["accuracy"] for r in p1}
  reached = [t for t, a in best.items() if a >= config.target]
  expected = min(reached, key=lambda t: (mask_ops.dense_parameter_count(t), -best[t], t))
  assert tuple(phase1["widths"]) == expected
  assert phase1["accuracy"] == best[expected]
  widths = tuple(phase1["widths"])

  # Phase 2: levels ascending, stopped at the first reaching one; nnz as in §B.4.
  p2 = [r for r in rows if r["family"] == phases.PHASE2]
  levels = [r["hidden_nnz"] for r in phase2["levels"]]
  assert levels == sorted(levels) and levels[0] == phases.phase2_levels(config, widths)[0]
  assert [r["reached"] for r in phase2["levels"]][:-1] == [0] * (len(levels) - 1)
  assert phase2["levels"][-1]["reached"] >= 1
  assert len(p2) == sum(r["runs"] for r in phase2["levels"])
  for r in p2:
    hidden = sum(n for n, _ in triple_of(r["mask_config"]))
    assert r["weight_nnz"] == hidden + widths[2] == r["target_nnz"]
    assert r["model_nnz"] == r["weight_nnz"] + sum(widths) + 1
    assert r["effective_weight_nnz"] == r["weight_nnz"] and r["dead_units"] == 0
    assert (r["d1"], r["d2"], r["d3"]) == widths
  winner = next(r for r in p2 if r["mask_config"] == phase2["mask_config"])
  assert phase2["accuracy"] == winner["accuracy"] >= config.target
  assert phase2["weight_nnz"] == winner["weight_nnz"] == levels[-1] + widths[2]
  assert phase2["model_nnz"] == winner["model_nnz"]

  # search.json holds the result (without the model path, added after writing).
  stored = json.loads((workdir / "search.json").read_text())
  expected_json = json.loads(
    json.dumps(
      {k: v for k, v in result.items() if k != "model_path"}, default=search_result.jsonable
    )
  )
  assert stored == expected_json
  assert any(line.startswith("phase 2: weight nnz") for line in tiny.logs)

  # The sparsest model's npz: width-16 arrays, masks, the stored weights (nothing retrained).
  path = Path(result["model_path"])
  assert path == workdir / "sparsest_0.5.npz" and path.is_file()
  triple = triple_of(phase2["mask_config"])
  masks = phases.network_masks(widths, triple, 16)
  with np.load(path) as saved:
    shapes = [s for pair in mlp.layer_shapes(16) for s in pair]
    for prefix in ("init", "trained", "mask"):
      for key, shape in zip(mlp.npz_keys(), shapes):
        array = saved[f"{prefix}_{key}"]
        assert array.shape == shape
        assert array.dtype == (np.bool_ if prefix == "mask" else np.float32)
    mask = mlp.from_numpy_dict({k[5:]: saved[k] for k in saved.files if k.startswith("mask_")})
    init = mlp.from_numpy_dict({k[5:]: saved[k] for k in saved.files if k.startswith("init_")})
    trained = mlp.from_numpy_dict(
      {k[8:]: saved[k] for k in saved.files if k.startswith("trained_")}
    )
    for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(masks)):
      assert np.array_equal(a.astype(bool), b)
    # Effective init = the width-16 PyTorch-default draw of the run's seed, masked (§B.2).
    drawn = jax.device_get(mlp.init(spec_ops.run_keys(winner["seed"])[0], 16))
    for i, m, d in zip(jax.tree.leaves(init), jax.tree.leaves(mask), jax.tree.leaves(drawn)):
      assert np.array_equal(i * m, d * m)
    for t, m in zip(jax.tree.leaves(trained), jax.tree.leaves(mask)):
      assert not np.any(t[~m.astype(bool)])
    assert (
      int(saved["weight_nnz"])
      == phase2["weight_nnz"]
      == sum(int(np.count_nonzero(layer.weight)) for layer in trained)
    )
    assert (
      int(saved["model_nnz"])
      == phase2["model_nnz"]
      == sum(int(np.count_nonzero(a)) for a in jax.tree.leaves(trained))
    )
    assert (
      float(saved["accuracy"]) == winner["accuracy"] and str(saved["exp_id"]) == winner["exp_id"]
    )
    assert (
      int(saved["seed"]) == winner["seed"] and str(saved["mask_config"]) == phase2["mask_config"]
    )
    trained_saved = trained

  # The winner's spec, rebuilt as the search built it, trained in a chunk with
  # other runs: bitwise the same weights as the stored ones (chunk independence).
  spec = next(
    s for s in phases.phase2_specs(config, widths, [triple]) if s.exp_id() == winner["exp_id"]
  )
  others = [dataclasses.replace(spec, seed=spec.seed + k) for k in (1, 2, 3)]
  captured = {}

  def keep(chunk, outcomes):
    for spec_, outcome in zip(chunk, outcomes):
      captured[spec_.exp_id()] = (outcome.params, outcome.accuracy)

  engine.run(
    [others[0], spec] + others[1:],
    workdir / "chunked",
    sweep_name="chunk",
    plan=engine.ChunkPlan(chunk_sizes=((10_000, 4),)),
    progress_stream=io.StringIO(),
    on_chunk=keep,
  ).close()
  params, accuracy = captured[spec.exp_id()]
  assert accuracy == winner["accuracy"]
  for a, b in zip(jax.tree.leaves(mlp.pad_params(params, 16)), jax.tree.leaves(trained_saved)):
    assert np.array_equal(a, b)


def test_tiny_search_resumes_without_training(tiny, monkeypatch):
  before = store_ops.merge_stores([tiny.workdir / "results.sqlite"])
  committed = []
  original = chunks.result_rows
  monkeypatch.setattr(
    chunks,
    "result_rows",
    lambda chunk, *a, **k: committed.append(len(chunk)) or original(chunk, *a, **k),
  )
  result = comb.Search(tiny.config, tiny.workdir, **quiet()).run()
  assert committed == []
  after = store_ops.merge_stores([tiny.workdir / "results.sqlite"])
  assert len(after) == len(before)
  assert [(r["exp_id"], r["accuracy"], r["created_at"]) for r in after] == [
    (r["exp_id"], r["accuracy"], r["created_at"]) for r in before
  ]
  assert result == tiny.result
  text = search_result.format_result(result)
  lines = text.splitlines()
  widths = tuple(result["phase1"]["widths"])
  assert lines[0].startswith(
    f"phase 1: widths {widths} (dense params "
    f"{mask_ops.dense_parameter_count(widths)}, best accuracy "
  )
  assert lines[1] == f"phase 2 levels (widths {widths}):" and lines[2].split()[0] == "weight_nnz"
  levels = result["phase2"]["levels"]
  assert len(lines) == 3 + len(levels) + 1
  for line, level in zip(lines[3:], levels):
    assert line.split()[:3] == [
      str(level["weight_nnz"]),
      str(level["model_nnz"]),
      str(level["masks"]),
    ]
    assert line.split()[-1] == level["best_mask_config"]
  assert lines[-1].startswith("sparsest model reaching 0.5: widths ")


# --- 7. Sharded search ----------------------------------------------------------


def test_sharded_search_matches_unsharded(tiny, tmp_path):
  config = phases.SearchConfig(**TINY)
  results, errors = {}, []

  def shard(index):
    try:
      search = comb.Search(
        config, tmp_path, shard_index=index, num_shards=2, **quiet(poll_seconds=0.05)
      )
      results[index] = search.run()
    except BaseException as error:  # reported below; the other shard would wait forever
      errors.append(error)

  threads = [threading.Thread(target=shard, args=(i,), daemon=True) for i in (0, 1)]
  for thread in threads:
    thread.start()
  deadline = time.monotonic() + 240
  while any(t.is_alive() for t in threads) and not errors and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not errors, errors
  assert not any(t.is_alive() for t in threads), "a shard did not finish"

  def answer(phase):  # the row's wall-clock fields (created_at, seconds) differ, of course
    return {
      **phase,
      "row": {k: v for k, v in phase["row"].items() if k not in ("created_at", "seconds")},
    }

  reference = tiny.result
  for index in (0, 1):
    assert answer(results[index]["phase1"]) == answer(reference["phase1"])
    assert answer(results[index]["phase2"]) == answer(reference["phase2"])
  assert "model_path" in results[0] and "model_path" not in results[1]
  stored = json.loads((tmp_path / "search.json").read_text())
  assert answer(stored["phase2"]) == answer(
    json.loads(json.dumps(reference["phase2"], default=search_result.jsonable))
  )
  with np.load(tmp_path / "sparsest_0.5.npz") as a, np.load(reference["model_path"]) as b:
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
      assert np.array_equal(a[key], b[key]), key

  names = sorted(p.name for p in tmp_path.glob("results*.sqlite"))
  assert names == ["results-shard000-of-002.sqlite", "results-shard001-of-002.sqlite"]
  merged = store_ops.merge_stores([tmp_path / n for n in names])
  unsharded = store_ops.merge_stores([tiny.workdir / "results.sqlite"])
  assert [(r["exp_id"], r["accuracy"], r["loss"]) for r in merged] == [
    (r["exp_id"], r["accuracy"], r["loss"]) for r in unsharded
  ]
  for index, name in enumerate(names):
    own = store_ops.merge_stores([tmp_path / name])
    assert own and all(int(r["exp_id"], 16) % 2 == index for r in own)


def test_barrier_waits_for_a_shard_store_that_is_being_created(tmp_path):
  config = phases.SearchConfig(**TINY)
  search = comb.Search(config, tmp_path, shard_index=0, num_shards=2, **quiet(poll_seconds=0.01))
  specs = phases.phase1_specs(config, [(1, 1, 1), (1, 1, 2)])
  with store_ops.ResultStore(
    store_ops.store_path(tmp_path, 0, 2), search.name, config.fingerprint()
  ) as own:
    own.commit_rows([fake_row(s, "ok", 0.5) for s in specs])
  # Shard 1 is inside ResultStore.__init__: the file exists, its tables do not yet.
  other = store_ops.store_path(tmp_path, 1, 2)
  raw = sqlite3.connect(other, isolation_level=None, check_same_thread=False)
  raw.execute("PRAGMA journal_mode=WAL")

  def finish():
    time.sleep(0.3)
    raw.close()
    store_ops.ResultStore(other, search.name, config.fingerprint()).close()

  finisher = threading.Thread(target=finish, daemon=True)
  finisher.start()
  try:
    rows = search._rows_for(specs)
  finally:
    finisher.join()
  assert sorted(r["exp_id"] for r in rows) == sorted(s.exp_id() for s in specs)


# --- 8. Bad input ---------------------------------------------------------------


def bad_init_file(tmp_path):
  path = tmp_path / "partial.npz"
  arrays = mlp.to_numpy_dict(jax.device_get(mlp.init(jax.random.PRNGKey(0), 16)))
  del arrays["layer3_bias"]
  np.savez(path, **arrays)
  return str(path)


@pytest.mark.parametrize(
  "fields, match",
  [
    (dict(target=0), r"target=0 \(0%\) must be in \(0, 1\]"),
    (dict(target=1.5), r"target=1.5 \(150%\) must be in \(0, 1\]"),
    (dict(target=-0.1), r"target=-0.1 \(-10%\) must be in \(0, 1\]"),
    (dict(target=float("nan")), r"target=nan \(nan%\) must be in"),
    (dict(max_width=0), r"max_width=0 is outside 1..16"),
    (dict(max_width=17), r"max_width=17 is outside 1..16"),
    (dict(schedules=("constant", "linear")), r"schedule='linear' is unknown"),
    (dict(lrs=(0.1, 0.0)), r"lr=0.0 must be > 0"),
    (dict(lrs=(-0.05,)), r"lr=-0.05 must be > 0"),
    (dict(repeats=0), r"repeats=0 must be >= 1"),
    (dict(epochs=0), r"epochs=0 must be >= 1"),
    (dict(phase1_widths=(0, 2, 2)), r"d1=0 is outside 1..16"),
    (dict(phase1_widths=(2, 17, 2)), r"d2=17 is outside 1..16"),
    (dict(phase1_widths=(2, 2)), r"must be three hidden widths"),
    (dict(init="BAD_INIT"), r"missing keys \['layer3_bias'\]"),
    (dict(init="/nonexistent/init.npz"), r"does not exist"),
    (dict(shard=(2, 2)), r"shard_index=2 must be in 0..1"),
    (dict(shard=(-1, 1)), r"shard_index=-1 must be in 0..0"),
  ],
)
def test_bad_input_is_one_line_value_error_before_training(tmp_path, monkeypatch, fields, match):
  monkeypatch.setattr(comb.engine, "run", _no_engine)
  fields = dict(fields)
  shard_index, num_shards = fields.pop("shard", (0, 1))
  if fields.get("init") == "BAD_INIT":
    fields["init"] = bad_init_file(tmp_path)
  workdir = tmp_path / "work"
  with pytest.raises(ValueError, match=match) as info:
    comb.Search(
      phases.SearchConfig(**{"target": 0.9, **fields}),
      workdir,
      shard_index=shard_index,
      num_shards=num_shards,
      **quiet(),
    )
  assert "\n" not in str(info.value)
  assert not workdir.exists()


@pytest.mark.parametrize("fields", [dict(lrs=()), dict(schedules=())])
def test_empty_settings_are_one_line_value_errors(tmp_path, monkeypatch, fields):
  monkeypatch.setattr(
    comb.engine, "run", lambda specs, *a, **k: SimpleNamespace(close=lambda: None)
  )
  monkeypatch.setattr(comb.Search, "_rows_for", lambda self, specs: [])
  try:
    comb.Search(
      phases.SearchConfig(target=0.9, max_width=1, **fields), tmp_path / "w", **quiet()
    ).run()
  except ValueError as error:
    assert "\n" not in str(error)
    return
  pytest.fail("no ValueError")


def run_binary(*args):
  return subprocess.run(
    [sys.executable, "-m", "experiments.search", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )


ABSL_LOG = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d")


def test_binary_reports_a_bad_target_in_one_line(tmp_path):
  workdir = tmp_path / "w"
  proc = run_binary("--config=experiments/configs/search.py:target=150", f"--workdir={workdir}")
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.strip() and not ABSL_LOG.match(l)]
  assert lines == ["error: target=1.5 (150%) must be in (0, 1]"], proc.stderr
  assert proc.stdout == ""
  assert not workdir.exists()


def test_binary_rejects_an_unknown_config_option(tmp_path):
  proc = run_binary(
    "--config=experiments/configs/search.py:targte=95", f"--workdir={tmp_path / 'w'}"
  )
  assert proc.returncode != 0
  assert "unknown search config option(s) ['targte']" in proc.stderr
  assert (
    "known: ['canonical', 'exhaustive', 'fallback', 'fixed', 'phase1_only', 'phase2_max_masks', 'q', 'quick', 'reference_caps', 'rule', 'target']"
    in proc.stderr
  )
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
  "arg, checks",
  [
    ("", dict(target=0.95, max_width=16, lrs=(0.05, 0.1), reference_caps=False)),
    (
      "target=99.5,reference_caps",
      dict(
        target=0.995,
        lrs=(0.05, 0.1),
        phase2_lrs=(0.05,),
        reference_caps=True,
        cap_sum=33,
        cap_w2=3,
      ),
    ),
    ("quick", dict(target=0.7, max_width=3, epochs=10, schedules=("constant",))),
    ("exhaustive,canonical", dict(exhaustive_phase1=True, all_levels=True, canonical=True)),
    (
      "fixed=INIT,target=99.5,reference_caps",
      dict(cap_sum=31, cap_w2=6, lrs=(0.05, 0.1), phase2_lrs=(0.05,)),
    ),
  ],
)
def test_config_variants_give_valid_search_configs(tmp_path, arg, checks):
  from experiments import search as search_binary
  from experiments.configs import search as search_configs

  path = tmp_path / "init.npz"
  np.savez(path, **mlp.to_numpy_dict(jax.device_get(mlp.init(jax.random.PRNGKey(0), 16))))
  config = search_binary.search_config(search_configs.get_config(arg.replace("INIT", str(path))))
  config.validate()
  for name, value in checks.items():
    expected = pytest.approx(value) if isinstance(value, float) else value
    assert getattr(config, name) == expected, name
  if "fixed" in arg:
    assert config.init == str(path)


# --- Phase-1 fallback (extension) -------------------------------------------------


@pytest.mark.parametrize("fallback", [False, True])
def test_phase1_fallback_moves_to_the_next_reaching_triple(tmp_path, monkeypatch, fallback):
  """(1,1,2) reaches the target in phase 1 but no mask inside it does in phase 2;
  (2,1,1) reaches it at a higher dense count and has a mask that does."""

  def outcome(spec):
    if spec.family == phases.PHASE1:
      return ("ok", 0.95) if tuple(spec.widths) in ((1, 1, 2), (2, 1, 1)) else ("ok", 0.5)
    return ("ok", 0.95) if spec.hidden_widths() == (2, 1, 1) else ("ok", 0.6)

  trained = mock_training(monkeypatch, outcome)
  monkeypatch.setattr(search_result, "save_model", lambda *a, **k: Path(tmp_path) / "m.npz")
  config = phases.SearchConfig(
    target=0.9, max_width=2, lrs=(0.1,), schedules=("constant",), phase1_fallback=fallback
  )
  assert (
    config.fingerprint() == dataclasses.replace(config, phase1_fallback=not fallback).fingerprint()
  )
  result = comb.Search(config, tmp_path, **quiet()).run()
  first = tuple(result["phase1"]["widths"])
  assert mask_ops.dense_parameter_count(first) < mask_ops.dense_parameter_count((2, 1, 1))
  attempts = [tuple(a["widths"]) for a in result["phase2_attempts"]]
  if fallback:
    assert attempts == [first, (2, 1, 1)]
    assert result["phase2"]["mask_config"] is not None
    assert "phase-1 fallback" in search_result.format_result(result)
  else:
    assert attempts == [first]
    assert result["phase2"]["mask_config"] is None
    # Phase 1's dense (1, 1, 2) stays the answer: 2 + 1 + 2 + 2 = 7 weights, + 4 biases.
    assert first == (1, 1, 2)
    assert search_result.format_result(result).splitlines()[-1] == (
      "phase 2: no mask reaches 0.9; the sparsest model found is phase 1's dense network "
      "(1, 1, 2), weight nnz 7, model nnz 12"
    )
  assert all(trained)
