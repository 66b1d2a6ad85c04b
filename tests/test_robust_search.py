"""The search's robust rule (rule=robust): selection by success probability, seed rounds, e2e.

Selection and allocation are tested on a synthetic store: training is
replaced by outcomes fixed per (candidate, setting, repeat), so every success
probability, interval, round and run count is known by hand. Real training is
one tiny binary run (widths 1..2, one setting, one epoch) and its resume.
"""

import dataclasses
import hashlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from cubist import engine, mlp
from cubist import masks as mask_ops
from cubist import store as store_ops
from cubist.semantics import SEMANTICS_VERSION
from cubist.specs import ExperimentSpec
from experiments import search as search_binary
from experiments.configs import search as search_config_file
from experiments.configs import search as search_configs
from search import combinatorial as comb
from search import phases, search_result, stats
from search.report import robust
from tests.rows import stored_row

REPO = Path(__file__).resolve().parents[1]
ROBUST = dict(rule="robust", target=0.9, max_width=2, lrs=(0.05, 0.1), schedules=("constant",))
LOWER_6_OF_6 = 0.025 ** (1 / 6)  # Clopper-Pearson lower bound of 6 of 6 at 95%: 0.5407


def quiet(**kwargs):
  kwargs.setdefault("plan", engine.ChunkPlan(chunk_sizes=((10_000, 1),)))
  kwargs.setdefault("progress_stream", io.StringIO())
  kwargs.setdefault("log", lambda *args: None)
  return kwargs


def _no_engine(*args, **kwargs):
  raise AssertionError("engine.run must not be called")


class SyntheticStore:
  """Training replaced by `outcome(spec) -> (status, accuracy)`, rows kept by exp_id as a
  store keeps them, so a second search on it is a resume. `trained`: per round, the
  specs that were new."""

  def __init__(self, monkeypatch, outcome):
    self.outcome, self.rows, self.trained = outcome, {}, []
    monkeypatch.setattr(comb.Search, "_train", lambda search, specs: self.train(specs))
    monkeypatch.setattr(
      comb.Search, "_rows_for", lambda search, specs: [self.rows[s.exp_id()] for s in specs]
    )
    monkeypatch.setattr(comb.engine, "run", _no_engine)

  def train(self, specs):
    new = [s for s in specs if s.exp_id() not in self.rows]
    self.trained.append(new)
    for spec in new:
      self.rows[spec.exp_id()] = stored_row(spec, *self.outcome(spec))


def success(flag: bool):
  return ("ok", 0.95) if flag else ("ok", 0.5)


ALWAYS, NEVER = (lambda r: True), (lambda r: False)
# Phase 1 at max_width 2 (levels P = 9, 12, 12, 13, 16, 16, 17, 21): per triple and lr,
# whether repeat r reaches 0.9. (1,1,1) is lucky at repeat 0 only; (2,1,1) always
# reaches at lr 0.1; (1,1,2) one seed in three; (2,1,2) every other seed.
PHASE1 = {
  ((1, 1, 1), 0.1): lambda r: r == 0,
  ((1, 1, 2), 0.05): lambda r: r % 3 == 0,
  ((2, 1, 1), 0.1): ALWAYS,
  ((1, 2, 2), 0.05): ALWAYS,
  ((2, 1, 2), 0.1): lambda r: r % 2 == 0,
  ((2, 2, 2), 0.05): ALWAYS,
  ((2, 2, 2), 0.1): ALWAYS,
}


def phase1_outcome(spec):
  return success(PHASE1.get((tuple(spec.widths), spec.lr), NEVER)(spec.repeat))


def test_reference_rule_crowns_the_lucky_seed_and_robust_the_reliable_triple(tmp_path, monkeypatch):
  SyntheticStore(monkeypatch, phase1_outcome)
  reference = dict(ROBUST, rule="reference")
  lucky = comb.Search(phases.SearchConfig(**reference), tmp_path / "r", **quiet()).phase1()
  assert lucky["widths"] == (1, 1, 1)  # one seed each: repeat 0 of lr 0.1 reached 0.9

  store = SyntheticStore(monkeypatch, phase1_outcome)
  result = comb.Search(phases.SearchConfig(**ROBUST), tmp_path / "s", **quiet()).phase1()
  assert result["widths"] == (2, 1, 1) and result["dense_params"] == 13
  assert result["success"]["lr"] == 0.1 and result["success"]["schedule"] == "constant"
  assert (result["success"]["successes"], result["success"]["trials"]) == (6, 6)
  assert result["success"]["lower"] == pytest.approx(LOWER_6_OF_6)
  assert result["success"]["upper"] == 1.0 and result["accuracy"] == 0.95
  assert result["row"]["lr"] == 0.1 and (result["row"]["d1"], result["row"]["d2"]) == (2, 1)

  # Rounds of 3 seeds per setting (cap 12: 10 of 12 needed, so a third failure puts a
  # setting out of reach), all 8 triples in one group of levels: 48 runs, after which
  # every never-reaching setting (0/3) is out of reach; 21 more for the 7 settings with
  # at most 2 failures; then (2,1,1), (1,2,2) and (2,2,2) are above at 6/6 and the
  # others out of reach: (1,1,1) at lr 0.1 1/6, (1,1,2) at lr 0.05 2/6, (2,1,2) 3/6.
  assert [len(r) for r in store.trained] == [48, 21]
  table = {r["dense_params"]: r for r in result["levels"]}
  assert [
    (p, r["reached"], r["undecided"], r["out_of_reach"], r["runs"]) for p, r in table.items()
  ] == [
    (9, 0, 1, 1, 9),
    (12, 0, 2, 2, 15),
    (13, 1, 0, 0, 9),
    (16, 1, 1, 1, 18),
    (17, 0, 1, 1, 6),
    (21, 1, 0, 0, 12),
  ]
  assert all(r["cap_runs"] == r["triples"] * 2 * 12 for r in table.values())
  twelve = table[12]["best_success"]  # (1,1,2) at lr 0.05: 2 of 6
  assert table[12]["best_mask_config"] == "1x1x2"
  assert (twelve["successes"], twelve["trials"], twelve["lr"]) == (2, 6, 0.05)
  assert (twelve["lower"], twelve["upper"]) == pytest.approx((0.0432719, 0.7772219), abs=1e-6)
  nine = table[9]["best_success"]
  assert (nine["successes"], nine["trials"]) == (1, 6)
  assert nine["upper"] == pytest.approx(0.6412346, abs=1e-6)  # undecided, out of reach
  # The coin (2,1,2) stopped at 6 seeds: 3/6 is out of reach (and (1,2,2) settled the level).
  coin = [s for chunk in store.trained for s in chunk if s.widths == (2, 1, 2) and s.lr == 0.1]
  assert sorted(s.repeat for s in coin) == list(range(6))


def test_robust_runs_are_the_reference_runs_with_more_repeats(tmp_path, monkeypatch):
  """A run's seed depends only on (candidate, setting, repeat): the robust search's runs
  are exactly runs a reference search with enough repeats would train."""
  store = SyntheticStore(monkeypatch, phase1_outcome)
  config = phases.SearchConfig(**ROBUST)
  comb.Search(config, tmp_path, **quiet()).phase1()
  triples = [t for _, ts in phases.phase1_levels(config) for t in ts]
  reference = dataclasses.replace(config, rule="reference", repeats=12)
  every = {s.exp_id(): s for s in phases.phase1_specs(reference, triples)}
  for spec in (s for chunk in store.trained for s in chunk):
    assert every[spec.exp_id()].seed == spec.seed
    assert spec == phases.phase1_spec(config, spec.widths, spec.lr, spec.schedule, spec.repeat)


# --- Phase 2 and the whole search ------------------------------------------------------


def test_phase2_trains_representatives_and_keeps_the_most_convincing_mask(tmp_path, monkeypatch):
  """One round of 10 seeds (initial = cap = 10): hand-computed intervals per level."""
  widths = (2, 2, 2)
  config = phases.SearchConfig(
    **dict(ROBUST, lrs=(0.1,)),
    phase1_widths=widths,
    initial_seeds=10,
    seed_step=1,
    max_seeds=10,
  )
  assert config.trains_representatives  # robust rule under a random init
  levels = range(6, 11)
  every = {lv: list(phases.level_mask_triples(config, widths, lv)) for lv in levels}
  kept = {
    lv: [phases.mask_config_label(t) for t in phases.phase2_candidates(config, widths, every[lv])]
    for lv in levels
  }
  assert [len(every[lv]) - len(kept[lv]) for lv in levels] == [0, 0, 0, 3, 4]  # relabellings
  rates = {kept[9][0]: 3, kept[10][0]: 9, kept[10][1]: 10}  # successes in 10 seeds

  def outcome(spec):
    return success(spec.repeat < rates.get(spec.mask_config, 0))

  store = SyntheticStore(monkeypatch, outcome)
  result = comb.Search(config, tmp_path, **quiet()).phase2(widths)
  trained = [s for chunk in store.trained for s in chunk]
  assert sorted({s.mask_config for s in trained}) == sorted(l for lv in levels for l in kept[lv])
  assert len(trained) == 10 * sum(map(len, kept.values()))
  table = result["levels"]
  assert [lv["hidden_nnz"] for lv in table] == list(levels)
  assert [lv["masks"] for lv in table] == [len(kept[lv]) for lv in levels]
  # 0 of 10: upper 0.308 < q, below; 3 of 10 (the example) is undecided.
  assert [(lv["reached"], lv["undecided"]) for lv in table] == [(0, 0)] * 3 + [(0, 1), (2, 0)]
  three = table[3]["best_success"]
  assert (three["successes"], three["trials"]) == (3, 10)
  assert (three["lower"], three["upper"]) == pytest.approx((0.0667395, 0.6524529), abs=1e-6)
  assert table[0]["best_success"]["upper"] == pytest.approx(1 - 0.025**0.1)
  # At nnz 10: 10/10 (lower 0.025^0.1 = 0.6915) beats 9/10 (0.5550), both above q.
  assert result["mask_config"] == kept[10][1] == table[4]["best_mask_config"]
  assert result["success"]["lower"] == pytest.approx(0.025**0.1)
  assert result["weight_nnz"] == 10 + 2 and result["model_nnz"] == 12 + 6 + 1
  assert result["row"]["mask_config"] == kept[10][1] and result["row"]["accuracy"] == 0.95


def init_file(tmp_path) -> str:
  path = tmp_path / "init.npz"
  np.savez(path, **mlp.to_numpy_dict(jax.device_get(mlp.init(jax.random.PRNGKey(0), 16))))
  return str(path)


def test_fixed_init_robust_search_trains_every_mask(tmp_path, monkeypatch):
  """Relabelling is no symmetry under a fixed init (§D.4): every mask gets its seeds."""
  widths = (2, 2, 2)
  config = phases.SearchConfig(**ROBUST, phase1_widths=widths, init=init_file(tmp_path))
  assert not config.trains_representatives
  store = SyntheticStore(monkeypatch, lambda spec: success(spec.target_nnz >= 9))
  result = comb.Search(config, tmp_path, **quiet()).phase2(widths)
  trained = {s.mask_config for chunk in store.trained for s in chunk}
  assert trained == {
    phases.mask_config_label(t)
    for lv in (6, 7)
    for t in phases.level_mask_triples(config, widths, lv)
  }
  assert result["weight_nnz"] == 9 and result["success"]["trials"] == 6


def test_run_falls_back_records_the_allocation_and_resumes_without_training(tmp_path, monkeypatch):
  """Phase 1 answers (2,1,1); no mask inside it reaches 0.9, so the fallback moves to
  the next triple above q, (1,2,2), where every mask reaches it at lr 0.1."""

  def outcome(spec):
    if spec.family == phases.PHASE1:
      return phase1_outcome(spec)
    return success(spec.hidden_widths() == (1, 2, 2) and spec.lr == 0.1)

  store = SyntheticStore(monkeypatch, outcome)
  saved = []
  monkeypatch.setattr(
    search_result,
    "save_model",
    lambda cfg, answer, row, workdir: saved.append(row) or Path("m.npz"),
  )
  config = phases.SearchConfig(**ROBUST, phase1_fallback=True)
  result = comb.Search(config, tmp_path, **quiet()).run()
  assert [tuple(a["widths"]) for a in result["phase2_attempts"]] == [(2, 1, 1), (1, 2, 2)]
  phase2 = result["phase2"]
  first_level = phases.phase2_levels(config, (1, 2, 2))[0]
  masks = phases.phase2_candidates(
    config, (1, 2, 2), phases.level_mask_triples(config, (1, 2, 2), first_level)
  )
  assert phase2["mask_config"] == phases.mask_config_label(min(masks))  # ties: reference order
  assert [lv["hidden_nnz"] for lv in phase2["levels"]] == [first_level]
  assert saved[0]["mask_config"] == phase2["mask_config"] and saved[0]["lr"] == 0.1
  assert (phase2["success"]["successes"], phase2["success"]["trials"]) == (6, 6)

  # The saving: every run asked for, against max_seeds (12) for every setting trained.
  inside = sum(
    len(
      phases.phase2_candidates(config, (2, 1, 1), phases.level_mask_triples(config, (2, 1, 1), lv))
    )
    for lv in phases.phase2_levels(config, (2, 1, 1))
  )
  allocation = result["allocation"]
  assert allocation["runs"] == len(store.rows) == sum(map(len, store.trained))
  assert allocation["cap_runs"] == (8 + inside + len(masks)) * 2 * 12
  assert allocation["saving"] == pytest.approx(1 - allocation["runs"] / allocation["cap_runs"])
  stored = json.loads((tmp_path / "search.json").read_text())
  assert stored["allocation"] == allocation and stored["config"]["rule"] == "robust"
  assert stored["phase1"]["success"]["lower"] == pytest.approx(LOWER_6_OF_6)

  text = search_result.format_result(result).splitlines()
  assert text[0] == "phase 1: widths (2, 1, 1) (dense params 13, best accuracy 0.9500)"
  assert text[1] == (
    "  6 of 6 seeds reach 0.9 at lr 0.1, constant: p 1.000, 95% interval [0.541, 1.000] (q=0.5)"
  )
  assert "phase 2 inside (2, 1, 1): no mask reaches 0.9 with probability >= q=0.5" in text[2]
  assert text[-1] == (
    f"seed allocation: {allocation['runs']} runs, {allocation['cap_runs']} with max_seeds=12 "
    f"for every setting (saving {100 * allocation['saving']:.0f}%)"
  )

  # Resume: the same search on the same store trains nothing and answers the same.
  before = len(store.rows)
  store.trained.clear()
  again = comb.Search(config, tmp_path, **quiet()).run()
  assert len(store.rows) == before and all(chunk == [] for chunk in store.trained)
  assert again == result


def test_unreachable_target_under_the_robust_rule(tmp_path, monkeypatch):
  SyntheticStore(monkeypatch, lambda spec: success(False))
  monkeypatch.setattr(search_result, "save_model", _no_engine)
  result = comb.Search(phases.SearchConfig(**ROBUST), tmp_path, **quiet()).run()
  assert result["phase1"]["widths"] is None
  # Every setting out of reach after its first 3 seeds (0/3: 3 failures): a quarter of the cap.
  assert result["allocation"] == {"runs": 8 * 2 * 3, "cap_runs": 8 * 2 * 12, "saving": 0.75}
  assert search_result.format_result(result).splitlines() == [
    "phase 1: no width triple reaches 0.9 with probability >= q=0.5",
    "seed allocation: 48 runs, 192 with max_seeds=12 for every setting (saving 75%)",
  ]


# --- Configuration ---------------------------------------------------------------------


def test_robust_fields_enter_only_a_robust_search_fingerprint():
  reference = phases.SearchConfig(target=0.95)
  # A reference search hashes exactly the fields it hashed before the robust rule
  # existed, so the stores it made are still its own.
  before = dataclasses.asdict(reference)
  for name in (
    "phase1_fallback",
    "max_fallbacks",
    "phase1_only",
    "phase2_max_masks",
    "phase2_lrs",
    "rule",
    *phases.ROBUST_FIELDS,
  ):
    before.pop(name)
  before.update(init="random", semantics=SEMANTICS_VERSION)
  expected = hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()
  assert reference.fingerprint() == expected
  assert dataclasses.replace(reference, q=0.8, max_seeds=20).fingerprint() == (
    reference.fingerprint()
  )
  robust = dataclasses.replace(reference, rule="robust")
  assert robust.fingerprint() != reference.fingerprint()
  assert dataclasses.replace(robust, q=0.6).fingerprint() != robust.fingerprint()
  assert dataclasses.replace(robust, max_seeds=13).fingerprint() != robust.fingerprint()


@pytest.mark.parametrize(
  "fields, match",
  [
    (dict(rule="lucky"), r"rule='lucky' is unknown; known: \['reference', 'robust'\]"),
    (dict(rule="robust", repeats=2), r"repeats=2: rule=robust allocates seeds itself"),
    (dict(rule="robust", max_seeds=5), r"max_seeds=5 can never establish"),
    (dict(rule="robust", q=1.2), r"q=1.2 must be in \(0, 1\)"),
    (dict(rule="robust", initial_seeds=13), r"max_seeds=12 must be >= initial_seeds=13"),
  ],
)
def test_bad_robust_settings_are_one_line_errors_before_training(
  tmp_path, monkeypatch, fields, match
):
  monkeypatch.setattr(comb.engine, "run", _no_engine)
  with pytest.raises(ValueError, match=match) as info:
    comb.Search(phases.SearchConfig(target=0.9, **fields), tmp_path / "w", **quiet())
  assert "\n" not in str(info.value)
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
  "arg, checks",
  [
    ("", dict(rule="reference", q=0.5, initial_seeds=3, seed_step=3, max_seeds=12)),
    ("rule=robust", dict(rule="robust", q=0.5, max_seeds=12, trains_representatives=True)),
    ("quick,rule=robust", dict(initial_seeds=3, seed_step=3, max_seeds=9, target=0.7)),
    ("rule=robust,q=0.8", dict(q=0.8, max_seeds=17)),  # raised to what can establish 0.8
    ("rule=robust,fixed=INIT", dict(trains_representatives=False)),
  ],
)
def test_config_variants(tmp_path, arg, checks):
  config = search_binary.search_config(
    search_configs.get_config(arg.replace("INIT", init_file(tmp_path)))
  )
  config.validate()
  for name, value in checks.items():
    assert getattr(config, name) == (pytest.approx(value) if isinstance(value, float) else value)


def test_config_rejects_a_bad_q():
  config = search_binary.search_config(search_configs.get_config("rule=robust,q=2"))
  with pytest.raises(ValueError, match=r"q=2 must be in \(0, 1\)"):
    config.validate()
  with pytest.raises(ValueError, match="q='half' is not a number"):
    search_configs.get_config("rule=robust,q=half")


# --- End to end: the binary, real training -----------------------------------------------


def test_binary_runs_a_robust_quick_search_and_resumes_without_training(tmp_path, monkeypatch):
  workdir = tmp_path / "w"
  overrides = [
    "--config.epochs=1",
    "--config.max_width=2",
    "--config.target=0.5",
    "--config.lrs=(0.1,)",
  ]
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.search",
      "--config=experiments/configs/search.py:quick,rule=robust",
      *overrides,
      f"--workdir={workdir}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((workdir / "search.json").read_text())
  config = result["config"]
  assert (config["rule"], config["initial_seeds"], config["max_seeds"]) == ("robust", 3, 9)
  rows = store_ops.merge_stores([workdir / "results.sqlite"])
  assert len(rows) == result["allocation"]["runs"] <= result["allocation"]["cap_runs"]
  assert sorted({r["repeat"] for r in rows}) == list(range(max(r["repeat"] for r in rows) + 1))

  # Phase 1 recomputed from the store with the library's own statistics: the triple
  # with the smallest dense count whose lr-0.1 runs are above q=0.5.
  counts = stats.success_counts(
    [r for r in rows if r["family"] == phases.PHASE1],
    lambda r: (r["d1"], r["d2"], r["d3"]),
    lambda r: (r["lr"], r["schedule"]),
    0.5,
  )
  estimates = stats.estimate_all(counts)
  above = [t for t, e in estimates.items() if e.decision == stats.ABOVE]
  assert above, "no triple reached 0.5 in 6 of 6 seeds"
  expected = min(above, key=lambda t: (mask_ops.dense_parameter_count(t), t))
  assert tuple(result["phase1"]["widths"]) == expected
  interval = estimates[expected].best.interval
  assert result["phase1"]["success"]["lower"] == pytest.approx(interval.lower)
  assert interval.trials == 6 and interval.lower >= 0.5

  phase2 = result["phase2"]
  assert phase2["mask_config"] is not None
  winner = [r for r in rows if r["mask_config"] == phase2["mask_config"]]
  assert sum(stats.is_success(r, 0.5) for r in winner) == phase2["success"]["successes"] == 6
  assert (workdir / "sparsest_0.5.npz").is_file()
  assert "seed allocation:" in proc.stdout and "6 of 6 seeds reach 0.5" in proc.stdout

  # Resume in process: nothing is trained again, the answer is the same.
  fields = search_configs.get_config("quick,rule=robust")
  fields.unlock()
  fields.update(epochs=1, max_width=2, target=0.5, lrs=(0.1,))
  monkeypatch.setattr(comb.engine.chunks, "result_rows", _no_engine)
  again = comb.Search(search_binary.search_config(fields), workdir, **quiet()).run()
  assert again["phase2"]["mask_config"] == phase2["mask_config"]
  assert again["allocation"] == result["allocation"]
  assert math.isclose(again["phase1"]["success"]["lower"], result["phase1"]["success"]["lower"])


# --- The report: success probabilities and the gap restated ---------------------------------

REPORT_TARGET = 0.9


def pruning_rows(method, budget, lr, successes, trials, width=4):
  """`trials` seeds of one pruning configuration, the first `successes` reaching 0.9."""
  rows = []
  for repeat in range(trials):
    spec = ExperimentSpec(
      seed=1000 * budget + 100 * int(10 * lr) + repeat,
      lr=lr,
      schedule="constant",
      width=width,
      epochs=2,
      method=method,
      family="overparam",
      target_nnz=budget,
      repeat=repeat,
    )
    status, accuracy = success(repeat < successes)
    rows.append(stored_row(spec, status, accuracy, weight_nnz=budget, model_nnz=budget + 5))
  return rows


def search_rows(widths, triple, successes, trials):
  config = phases.SearchConfig(target=REPORT_TARGET, lrs=(0.1,), schedules=("constant",))
  return [
    stored_row(
      phases.phase2_spec(config, widths, triple, 0.1, "constant", repeat),
      *success(repeat < successes),
    )
    for repeat in range(trials)
  ]


@pytest.fixture(scope="module")
def report_rows():
  widths = (2, 2, 2)
  sparse = ((2, 0), (2, 0), (2, 0))  # weight nnz 6 + 2
  dense = next(iter(phases.level_mask_triples(phases.SearchConfig(target=0.9), widths, 10)))
  search = search_rows(widths, sparse, 1, 6) + search_rows(widths, dense, 6, 6)
  pruning = (
    pruning_rows("snip", 10, 0.1, 3, 10)  # 3 of 10: (0.0667, 0.6525), undecided
    + pruning_rows("snip", 10, 0.2, 0, 10)
    + pruning_rows("snip", 20, 0.1, 6, 6)  # 6 of 6: above
    + pruning_rows("snip", 20, 0.2, 5, 6)
    + pruning_rows("imp", 10, 0.1, 0, 6)  # below
    + pruning_rows("imp", 20, 0.1, 2, 6)  # (0.043, 0.777): undecided, no robust minimum
  )
  return SimpleNamespace(search=search, pruning=pruning, dense=phases.mask_config_label(dense))


def test_method_success_curves_and_robust_minima(report_rows):
  points = robust.method_success_curves(report_rows.pruning + report_rows.search, REPORT_TARGET)
  facts = [
    (p["method"], p["width"], p["budget"], p["setting"], p["successes"], p["trials"], p["decision"])
    for p in points
  ]
  assert facts == [
    ("imp", 4, 10, "lr 0.1, constant", 0, 6, stats.BELOW),
    ("imp", 4, 20, "lr 0.1, constant", 2, 6, stats.UNDECIDED),
    ("snip", 4, 10, "lr 0.1, constant", 3, 10, stats.UNDECIDED),  # best of lr 0.1 and 0.2
    ("snip", 4, 20, "lr 0.1, constant", 6, 6, stats.ABOVE),
  ]
  snip10 = points[2]
  assert (snip10["lower"], snip10["upper"]) == pytest.approx((0.0667395, 0.6524529), abs=1e-6)
  assert snip10["settings"] == 2
  minima = robust.robust_minima(points)
  assert minima[("imp", "overparam", "random", 4)] is None
  assert minima[("snip", "overparam", "random", 4)]["budget"] == 20


def test_search_success_frontier_and_robust_gap_table(report_rows):
  frontier = robust.search_success_frontier(report_rows.search, REPORT_TARGET)
  assert [(p["weight_nnz"], p["successes"], p["trials"], p["decision"]) for p in frontier] == [
    (8, 1, 6, stats.UNDECIDED),
    (12, 6, 6, stats.ABOVE),
  ]
  assert frontier[1]["candidate"] == f"(2, 2, 2) {report_rows.dense}"
  assert robust.search_robust_minimum(frontier)["weight_nnz"] == 12

  table = robust.robust_gap_table(
    report_rows.pruning, {REPORT_TARGET: report_rows.search}, [REPORT_TARGET, 0.99]
  )
  rows = {(r["target"], r["method"]): r for r in table}
  search = rows[(0.9, "combinatorial")]
  assert (search["robust_nnz"], search["lucky_nnz"]) == (12, 8)  # one lucky seed at 8
  assert search["robust_lower"] == pytest.approx(LOWER_6_OF_6)
  snip = rows[(0.9, "snip")]
  assert (snip["robust_nnz"], snip["robust_successes"], snip["robust_trials"]) == (20, 6, 6)
  assert snip["ratio_robust"] == pytest.approx(20 / 12)
  assert (snip["lucky_nnz"], snip["ratio_lucky"]) == (10, pytest.approx(10 / 8))
  imp = rows[(0.9, "imp")]
  assert math.isinf(imp["robust_nnz"]) and math.isinf(imp["ratio_robust"])
  assert imp["lucky_nnz"] == 20 and imp["ratio_lucky"] == pytest.approx(20 / 8)
  # No search for 99%: no search row, search columns nan; nothing reaches 0.99.
  assert (0.99, "combinatorial") not in rows
  assert math.isnan(rows[(0.99, "snip")]["search_robust_nnz"])
  assert math.isinf(rows[(0.99, "snip")]["robust_nnz"])


def test_robust_section_writes_its_figure_and_tables(report_rows, tmp_path):
  searches = [{"target": REPORT_TARGET, "rows": report_rows.search, "search": None}]
  anchor, heading, body = robust.robust_section(
    report_rows.pruning + report_rows.search, searches, [REPORT_TARGET], tmp_path
  )
  assert anchor == "robust" and heading.endswith("success probabilities")
  png = tmp_path / "success_vs_nnz_90.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert 'src="success_vs_nnz_90.png"' in body
  gap = (tmp_path / "robust_gap.csv").read_text().splitlines()
  assert gap[0].startswith("target,method,robust_nnz") and len(gap) == 1 + 3
  assert len((tmp_path / "success_curves.csv").read_text().splitlines()) == 1 + 4
  assert len((tmp_path / "search_success.csv").read_text().splitlines()) == 1 + 2
  empty = robust.robust_section([], [], [REPORT_TARGET], tmp_path / "none")
  assert "No pruning runs with a budget and no combinatorial search" in empty[2]


# --- The phase-2 budget ------------------------------------------------------------------


def test_level_mask_triple_counts_count_what_each_level_yields():
  for config, widths in [
    (phases.SearchConfig(target=0.9), (3, 3, 3)),
    (phases.SearchConfig(target=0.995, reference_caps=True), (7, 2, 4)),
  ]:
    for level in phases.phase2_levels(config, widths)[:6] + [config.cap_sum]:
      assert phases.level_mask_triple_counts(config, widths).get(level, 0) == len(
        list(phases.level_mask_triples(config, widths, level))
      )


@pytest.mark.parametrize("rule", ["reference", "robust"])
def test_phase2_max_masks_stops_before_a_level_too_large_and_resumes(tmp_path, monkeypatch, rule):
  # Inside (2, 2, 2) the hidden-nnz levels 6, 7, 8, ... hold 1, 6, 15, 20, 15, 6, 1 mask
  # triples; nothing reaches the target, so only the budget stops the walk.
  store = SyntheticStore(monkeypatch, lambda spec: success(False))
  fields = dict(ROBUST, rule=rule, phase1_widths=(2, 2, 2))
  config = phases.SearchConfig(**fields, phase2_max_masks=10)
  assert config.fingerprint() == phases.SearchConfig(**fields).fingerprint()
  result = comb.Search(config, tmp_path, **quiet()).run()
  phase2 = result["phase2"]
  assert phase2["mask_config"] is None
  assert [level["hidden_nnz"] for level in phase2["levels"]] == [6, 7]
  assert phase2["stopped"] == {
    "hidden_nnz": 8,
    "weight_nnz": 10,
    "model_nnz": 17,
    "mask_triples": 15,
  }
  assert (
    json.loads((tmp_path / "search.json").read_text())["phase2"]["stopped"] == (phase2["stopped"])
  )
  assert search_result.format_result(result).splitlines()[-1 if rule == "reference" else -2] == (
    "phase 2: no mask reaches 0.9"
    + (" with probability >= q=0.5" if rule == "robust" else "")
    + " below weight nnz 10, where it stopped (15 mask triples > phase2_max_masks=10); "
    "the dense network at the given widths (2, 2, 2) (weight nnz 14, model nnz 21) is the "
    "sparsest model known to reach it"
  )
  trained = len(store.rows)
  # Raised budget, same store: levels 6 and 7 are read back, the walk goes on to the end.
  store.trained.clear()
  again = comb.Search(dataclasses.replace(config, phase2_max_masks=None), tmp_path, **quiet())
  result = again.run()
  assert "stopped" not in result["phase2"]
  assert [level["hidden_nnz"] for level in result["phase2"]["levels"]] == list(range(6, 13))
  new = [spec for chunk in store.trained for spec in chunk]
  assert new and all(parse_hidden_nnz(spec) >= 8 for spec in new)
  assert len(store.rows) == trained + len(new)


def parse_hidden_nnz(spec) -> int:
  return sum(n for n, _ in phases.parse_mask_config(spec.mask_config))


def test_phase2_max_masks_must_be_a_positive_integer():
  with pytest.raises(ValueError, match="phase2_max_masks=0 must be an integer >= 1"):
    phases.SearchConfig(target=0.9, phase2_max_masks=0).validate()


# --- Phase 2's own learning rates --------------------------------------------------------


@pytest.mark.parametrize("rule", ["reference", "robust"])
def test_phase2_lrs_apply_to_phase2_only(tmp_path, monkeypatch, rule):
  # §C.3: the released 99.5% phase 2 trains at lr 0.05 only, phase 1 at {0.05, 0.1}.
  store = SyntheticStore(monkeypatch, lambda spec: success(True))
  monkeypatch.setattr(search_result, "save_model", lambda *args: Path("m.npz"))
  config = phases.SearchConfig(**dict(ROBUST, rule=rule), phase2_lrs=(0.05,))
  comb.Search(config, tmp_path, **quiet()).run()
  specs = [s for chunk in store.trained for s in chunk]
  assert {s.lr for s in specs if s.family == phases.PHASE1} == {0.05, 0.1}
  assert {s.lr for s in specs if s.family == phases.PHASE2} == {0.05}
  # None leaves the fingerprint as it was before the field (see the fingerprint test
  # above); a value changes it.
  plain = phases.SearchConfig(target=0.995)
  assert plain.fingerprint() != phases.SearchConfig(target=0.995, phase2_lrs=(0.05,)).fingerprint()
  with pytest.raises(ValueError, match="phase2_lrs must not be empty"):
    phases.SearchConfig(target=0.995, phase2_lrs=()).validate()


def test_reference_caps_at_99_5_keep_both_lrs_in_phase1():
  config = search_config_file.get_config("target=99.5,reference_caps")
  assert tuple(config.lrs) == (0.05, 0.1) and tuple(config.phase2_lrs) == (0.05,)
  assert search_config_file.get_config("target=95").phase2_lrs is None
