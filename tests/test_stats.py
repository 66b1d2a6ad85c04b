"""Success probabilities, exact intervals and sequential seed allocation (search/stats.py).

Intervals are checked against hand-computed Clopper-Pearson values and their
closed forms (k = 0 and k = n), decisions at their boundaries, and the
allocation on simulated levels whose outcomes are fixed per seed, so every
round's seeds can be counted by hand.
"""

import math

import pytest
from scipy import stats as scipy_stats

from search import stats

# --- Intervals ----------------------------------------------------------------------


@pytest.mark.parametrize(
  "successes, trials, lower, upper",
  [
    (3, 10, 0.0667395, 0.6524529),  # the issue's example
    (0, 6, 0.0, 1 - 0.025 ** (1 / 6)),  # k = 0: upper = 1 - (alpha/2)^(1/n)
    (6, 6, 0.025 ** (1 / 6), 1.0),  # k = n: lower = (alpha/2)^(1/n) = 0.5407
    (1, 1, 0.025, 1.0),
    (5, 5, 0.025 ** (1 / 5), 1.0),  # 0.4782: five of five does not establish p >= 0.5
    (6, 12, 0.2109446, 0.7890554),  # symmetric around 1/2
  ],
)
def test_clopper_pearson_interval_matches_hand_computed_values(successes, trials, lower, upper):
  interval = stats.success_interval(successes, trials)
  assert interval.successes == successes and interval.trials == trials
  assert interval.estimate == successes / trials
  assert interval.lower == pytest.approx(lower, abs=1e-7)
  assert interval.upper == pytest.approx(upper, abs=1e-7)
  # The definition through beta quantiles (independent of binomtest).
  if 0 < successes:
    assert interval.lower == pytest.approx(
      scipy_stats.beta.ppf(0.025, successes, trials - successes + 1), abs=1e-9
    )
  if successes < trials:
    assert interval.upper == pytest.approx(
      scipy_stats.beta.ppf(0.975, successes + 1, trials - successes), abs=1e-9
    )


def test_interval_confidence_level_and_edge_cases():
  narrow = stats.success_interval(3, 10, confidence=0.5)
  wide = stats.success_interval(3, 10, confidence=0.99)
  middle = stats.success_interval(3, 10)
  assert wide.lower < middle.lower < narrow.lower < 0.3 < narrow.upper < middle.upper < wide.upper
  assert stats.success_interval(10, 10, confidence=0.9).lower == pytest.approx(0.05**0.1)
  empty = stats.success_interval(0, 0)
  assert math.isnan(empty.estimate) and (empty.lower, empty.upper) == (0.0, 1.0)
  for bad in ((4, 3), (-1, 3)):
    with pytest.raises(ValueError, match="successes="):
      stats.success_interval(*bad)


def test_decisions_at_their_boundaries():
  interval = stats.Interval(3, 3, 1.0, 0.5, 1.0)
  assert stats.decide(interval, 0.5) == stats.ABOVE  # lower == q is above
  assert stats.decide(interval, 0.5000001) == stats.UNDECIDED
  assert stats.decide(stats.Interval(0, 3, 0.0, 0.0, 0.5), 0.5) == stats.UNDECIDED  # upper == q
  assert stats.decide(stats.Interval(0, 3, 0.0, 0.0, 0.4999), 0.5) == stats.BELOW
  assert stats.decide(stats.success_interval(6, 6), 0.5) == stats.ABOVE
  assert stats.decide(stats.success_interval(0, 6), 0.5) == stats.BELOW
  assert stats.decide(stats.success_interval(3, 10), 0.5) == stats.UNDECIDED
  assert stats.decide(stats.success_interval(3, 10), 0.06) == stats.ABOVE
  assert stats.decide(stats.success_interval(3, 10), 0.66) == stats.BELOW


def test_seeds_to_establish_and_allocation_validation():
  assert stats.seeds_to_establish(0.5) == 6  # 0.025^(1/6) = 0.541 >= 0.5 > 0.025^(1/5)
  assert stats.seeds_to_establish(0.8) == 17  # ln 0.025 / ln 0.8 = 16.5
  # At 50% confidence: 2 of 2 has lower bound 0.25^(1/2) = 0.5 (>= q), 1 of 1 only 0.25.
  assert stats.seeds_to_establish(0.5, confidence=0.5) == 2
  stats.validate_allocation(stats.Allocation(initial=2, step=2, cap=6))
  bad = [
    (dict(cap=5), r"max_seeds=5 can never establish .* q=0.5 at 95% \(needs at least 6 seeds\)"),
    (dict(q=1.0), r"q=1 must be in \(0, 1\)"),
    (dict(q=0.0), r"q=0 must be in \(0, 1\)"),
    (dict(confidence=1.0), r"confidence=1 must be in"),
    (dict(initial=0), r"initial_seeds=0 and seed_step=3 must be >= 1"),
    (dict(step=0), r"seed_step=0 must be >= 1"),
    (dict(initial=13), r"max_seeds=12 must be >= initial_seeds=13"),
  ]
  for fields, match in bad:
    with pytest.raises(ValueError, match=match) as info:
      stats.validate_allocation(stats.Allocation()._replace(**fields))
    assert "\n" not in str(info.value)


# --- Counting rows and estimating candidates -----------------------------------------


def row(candidate, setting, status="ok", accuracy=0.9):
  return {"candidate": candidate, "setting": setting, "status": status, "accuracy": accuracy}


def test_success_counts_count_failed_and_diverged_runs_as_failed_trials():
  rows = [
    row("a", 1, accuracy=0.95),
    row("a", 1, accuracy=0.9),  # exactly the target: a success
    row("a", 1, accuracy=0.89),
    row("a", 2, status="diverged", accuracy=0.99),
    row("a", 2, status="failed", accuracy=None),
    row("b", 1, accuracy=float("nan")),
    row("c", 3, accuracy=0.99),
  ]
  counts = stats.success_counts(
    rows, lambda r: r["candidate"], lambda r: r["setting"], 0.9, ["b", "a", "z"], [1, 2]
  )
  assert list(counts) == ["b", "a", "z", "c"]  # listed candidates first, then others as seen
  assert counts["a"] == {1: (2, 3), 2: (0, 2)}
  assert counts["b"] == {1: (0, 1), 2: (0, 0)}
  assert counts["z"] == {1: (0, 0), 2: (0, 0)}
  assert counts["c"] == {3: (1, 1)}
  assert stats.is_success(row("a", 1, accuracy=0.9), 0.9)
  assert not stats.is_success(row("a", 1, status="diverged", accuracy=0.99), 0.9)


def test_candidate_estimate_best_setting_and_decision():
  count = stats.Count
  a = stats.estimate_candidate("a", {"s1": count(3, 10), "s2": count(6, 6), "s3": count(0, 6)})
  assert a.best.setting == "s2" and a.decision == stats.ABOVE
  assert [s.decision for s in a.settings] == [stats.UNDECIDED, stats.ABOVE, stats.BELOW]
  assert a.settings[0].interval.lower == pytest.approx(0.0667395, abs=1e-7)
  assert a.trials == 22
  # Highest lower bound wins over highest estimate: 9/10 (0.555) beats 3/3 (0.292).
  b = stats.estimate_candidate("b", {"s1": count(3, 3), "s2": count(9, 10)})
  assert b.best.setting == "s2" and b.decision == stats.ABOVE
  # Equal lower bounds: the higher estimate, then the first setting.
  c = stats.estimate_candidate("c", {"s1": count(0, 3), "s2": count(0, 4), "s3": count(0, 0)})
  assert c.best.setting == "s1" and c.decision == stats.UNDECIDED  # s3 has no runs yet
  d = stats.estimate_candidate("d", {"s1": count(0, 6), "s2": count(0, 8)})
  assert d.decision == stats.BELOW and d.best.setting == "s1"
  with pytest.raises(ValueError, match="no settings"):
    stats.estimate_candidate("e", {})


def test_ranking_of_candidates_above_q():
  count = stats.Count
  estimates = stats.estimate_all(
    {
      (2, 1, 1): {"s": count(6, 6)},
      (1, 1, 2): {"s": count(6, 6)},
      (1, 2, 1): {"s": count(11, 12)},  # lower 0.615 > 0.541
      (3, 1, 1): {"s": count(1, 6)},
    }
  )
  ranked = stats.ranked_above(estimates, order_key=lambda t: t)
  assert [e.candidate for e in ranked] == [(1, 2, 1), (1, 1, 2), (2, 1, 1)]
  assert stats.most_convincing(estimates.values(), lambda t: t).candidate == (1, 2, 1)
  assert stats.most_convincing([]) is None


# --- Sequential allocation --------------------------------------------------------------


def simulate(outcomes, allocation, settings=("s1", "s2")):
  """Run `next_seeds` rounds on one level; outcomes: candidate -> setting -> f(repeat) -> bool.

  Returns (counts, seeds asked for per round).
  """
  runs = {}  # (candidate, setting) -> [success per repeat]
  rounds = []
  while True:
    counts = {
      c: {s: stats.Count(sum(runs.get((c, s), [])), len(runs.get((c, s), []))) for s in settings}
      for c in outcomes
    }
    wanted = stats.next_seeds(counts, allocation)
    if not wanted:
      return counts, rounds
    rounds.append(sum(n - counts[c][s].trials for (c, s), n in wanted.items()))
    for (c, s), n in wanted.items():
      done = runs.setdefault((c, s), [])
      done += [outcomes[c][s](r) for r in range(len(done), n)]


ALWAYS, NEVER = (lambda r: True), (lambda r: False)
ALTERNATE = lambda r: r % 2 == 0  # 1 of 2, 2 of 4, ...
ONE_IN_THREE = lambda r: r % 3 == 0


def test_allocation_stops_a_level_as_soon_as_a_candidate_is_above():
  allocation = stats.Allocation(initial=2, step=2, cap=6)
  counts, rounds = simulate(
    {
      "sure": {"s1": NEVER, "s2": ALWAYS},
      "coin": {"s1": ALTERNATE, "s2": ALTERNATE},
      "bad": {"s1": NEVER, "s2": NEVER},
    },
    allocation,
  )
  # 2 seeds each. With a cap of 6 only 6 of 6 is above q = 0.5 (5/6 has lower bound
  # 0.36), so one failure puts a setting out of reach: only sure's s2 goes on, to 6/6.
  assert rounds == [12, 2, 2]
  assert counts["sure"] == {"s1": (0, 2), "s2": (6, 6)}
  assert counts["coin"] == {"s1": (1, 2), "s2": (1, 2)}
  # At a cap of 12 (10 of 12 needed), the coin's 2/3 is in reach and gets a second
  # round beside sure's 3/3; the level settles when sure's 6/6 is above.
  counts, rounds = simulate(
    {
      "sure": {"s1": NEVER, "s2": ALWAYS},
      "coin": {"s1": ALTERNATE, "s2": ALTERNATE},
      "bad": {"s1": NEVER, "s2": NEVER},
    },
    stats.Allocation(initial=3, step=3, cap=12),
  )
  assert rounds == [18, 9]
  assert counts["sure"] == {"s1": (0, 3), "s2": (6, 6)}
  assert counts["coin"] == {"s1": (3, 6), "s2": (3, 6)}
  assert counts["bad"] == {"s1": (0, 3), "s2": (0, 3)}


def test_can_reach_is_whether_the_remaining_seeds_could_make_a_setting_above():
  count, allocation = stats.Count, stats.Allocation(initial=3, step=3, cap=12)
  # q = 0.5 at 95% and a cap of 12 need 10 of 12 (lower bound 0.516; 9/12: 0.428),
  # so a setting is in reach while it has at most 2 failures.
  assert stats.success_interval(10, 12).lower == pytest.approx(0.5159, abs=1e-4)
  assert stats.success_interval(9, 12).lower == pytest.approx(0.4281, abs=1e-4)
  assert stats.can_reach(count(0, 0), allocation)
  assert stats.can_reach(count(1, 3), allocation)
  assert stats.can_reach(count(4, 6), allocation)
  assert not stats.can_reach(count(0, 3), allocation)
  assert not stats.can_reach(count(3, 6), allocation)
  # Past the cap (runs kept from an earlier allocation), the count itself decides.
  assert stats.can_reach(count(13, 14), allocation)
  assert not stats.can_reach(count(9, 14), allocation)
  estimate = stats.estimate_candidate("c", {"s1": count(0, 3), "s2": count(1, 6)})
  assert estimate.decision == stats.UNDECIDED  # 0/3: (0, 0.708), 1/6: (0.004, 0.641)
  assert stats.out_of_reach(estimate, allocation)
  estimate = stats.estimate_candidate("c", {"s1": count(0, 3), "s2": count(1, 3)})
  assert not stats.out_of_reach(estimate, allocation)


def test_allocation_stops_settings_out_of_reach_and_candidates_undecided_at_the_cap():
  allocation = stats.Allocation(initial=3, step=3, cap=12)
  counts, rounds = simulate(
    {
      "bad": {"s1": NEVER, "s2": NEVER},  # 0/3: 3 failures, out of reach after round 1
      "half": {"s1": NEVER, "s2": ALTERNATE},  # s2: 2/3 in reach, 3/6 out
      "third": {"s1": ONE_IN_THREE, "s2": NEVER},  # s1: 1/3 in reach, 2/6 out
    },
    allocation,
  )
  assert counts["bad"] == {"s1": (0, 3), "s2": (0, 3)}
  assert counts["half"] == {"s1": (0, 3), "s2": (3, 6)}
  assert counts["third"] == {"s1": (2, 6), "s2": (0, 3)}
  assert rounds == [18, 6]
  estimates = stats.estimate_all(counts)
  # 0/3 has upper bound 0.708: undecided, but none of them could be above within 12.
  assert [e.decision for e in estimates.values()] == [stats.UNDECIDED] * 3
  assert all(stats.out_of_reach(e, allocation) for e in estimates.values())
  assert sum(rounds) == 24 < 3 * 2 * 12  # the saving against the cap
  # A setting in reach to the end stays undecided at the cap: 9 of 12 (ALTERNATE
  # would be out of reach; three successes then one failure stays in reach to 9/12).
  counts, rounds = simulate({"near": {"s1": lambda r: r % 4 != 3}}, allocation, ("s1",))
  assert counts["near"] == {"s1": (9, 12)}
  assert rounds == [3, 3, 3, 3]
  assert stats.estimate_all(counts)["near"].decision == stats.UNDECIDED


def test_allocation_settles_at_once_when_a_candidate_is_already_above():
  count = stats.Count
  allocation = stats.Allocation(initial=2, step=2, cap=12)
  level = {"a": {"s1": count(6, 6)}, "b": {"s1": count(1, 2)}}
  assert stats.next_seeds(level, allocation) == {}
  # A new candidate joining a settled level is still brought up to the first round.
  assert stats.next_seeds({"b": {"s1": count(1, 2)}, "c": {"s1": count(0, 0)}}, allocation) == {
    ("b", "s1"): 4,
    ("c", "s1"): 2,
  }
  # A step past the cap stops at the cap (a cap of 7 needs 7 of 7; 5/5 is undecided).
  odd = stats.Allocation(initial=2, step=3, cap=7)
  assert stats.next_seeds({"b": {"s1": count(5, 5)}}, odd) == {("b", "s1"): 7}
  assert stats.next_seeds({"b": {"s1": count(6, 7)}}, odd) == {}
