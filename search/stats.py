"""Success probabilities of seed-repeated runs, their exact intervals, and sequential seed allocation.

A single run's final accuracy on the Cubist Spiral is a coin with a heavy tail:
the same configuration reaches the target with one seed and collapses to 50%
with another. So the question "does this configuration reach the target?" is
answered here as a probability, estimated from runs that differ only by seed.

Vocabulary (pure functions over counts; rows are the store's dicts):
- candidate: what is being judged (a width triple, a mask, a pruning method at
  a budget and width); setting: one way of training it (lr, schedule, ...);
  the runs of one candidate-setting differ only by seed (their repeat index).
- `Count(successes, trials)` per candidate-setting, a success being an "ok"
  run whose accuracy reaches the target (a diverged or failed run is a trial
  that failed); `success_counts` tallies rows into {candidate: {setting: Count}}.
- `success_interval`: the estimate k/n with the exact (Clopper-Pearson)
  interval at `confidence`, from scipy.stats.binomtest.
- decisions against a required probability q: a candidate-setting is *above*
  when its interval's lower bound is >= q, *below* when its upper bound is < q,
  else *undecided*. A candidate's best setting is the one with the highest
  lower bound; the candidate is above when that setting is, below when every
  setting is below, else undecided (`estimate_candidate`).
- sequential allocation (`next_seeds`): every candidate-setting of a level
  starts with `initial` seeds; each later round adds `step` seeds, up to `cap`,
  only to the undecided settings of undecided candidates that can still be
  above q within the cap (`can_reach`: with q = 0.5 and cap 12 a setting needs
  10 of 12, so its third failure ends it; such a setting could never change the
  search's answer, so stopping it changes no selection, only saves runs); a
  level is settled, and gets no more seeds, as soon as one of its candidates is
  above, or when nothing is left to add (all below, or undecided at the cap or
  out of reach).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import NamedTuple

from scipy import stats as scipy_stats

ABOVE, BELOW, UNDECIDED = "above", "below", "undecided"
DEFAULT_Q = 0.5
DEFAULT_CONFIDENCE = 0.95


class Count(NamedTuple):
  """Runs of one candidate-setting: how many reached the target, of how many."""

  successes: int
  trials: int


class Interval(NamedTuple):
  """A success probability: k of n, the estimate k/n (nan for n = 0) and its
  exact (Clopper-Pearson) interval [lower, upper] ([0, 1] for n = 0)."""

  successes: int
  trials: int
  estimate: float
  lower: float
  upper: float


class SettingEstimate(NamedTuple):
  """One setting of a candidate: its interval and its decision against q."""

  setting: Hashable
  interval: Interval
  decision: str


class CandidateEstimate(NamedTuple):
  """A candidate over its settings.

  settings: every setting's estimate, in the order given; best: the setting
  with the highest lower bound (ties: higher estimate, then the first given);
  decision: above / below / undecided (module docstring).
  """

  candidate: Hashable
  settings: tuple[SettingEstimate, ...]
  best: SettingEstimate
  decision: str

  @property
  def trials(self) -> int:
    return sum(s.interval.trials for s in self.settings)


class Allocation(NamedTuple):
  """Sequential seed allocation: seeds per setting in the first round, seeds
  added per later round, the most seeds one setting gets, the required
  probability q and the interval's confidence level."""

  initial: int = 3
  step: int = 3
  cap: int = 12
  q: float = DEFAULT_Q
  confidence: float = DEFAULT_CONFIDENCE


# --- Intervals and decisions --------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def success_interval(
  successes: int, trials: int, confidence: float = DEFAULT_CONFIDENCE
) -> Interval:
  """k of n with its exact two-sided Clopper-Pearson interval (scipy.stats.binomtest).

  Cached: a report over many thousands of candidates meets few distinct (k, n)."""
  successes, trials = int(successes), int(trials)
  if not 0 <= successes <= trials:
    raise ValueError(f"successes={successes} must be in 0..trials={trials}")
  if trials == 0:
    return Interval(0, 0, math.nan, 0.0, 1.0)
  bounds = scipy_stats.binomtest(successes, trials).proportion_ci(
    confidence_level=confidence, method="exact"
  )
  return Interval(successes, trials, successes / trials, float(bounds.low), float(bounds.high))


def decide(interval: Interval, q: float) -> str:
  """above (lower >= q), below (upper < q) or undecided."""
  if interval.lower >= q:
    return ABOVE
  if interval.upper < q:
    return BELOW
  return UNDECIDED


def seeds_to_establish(q: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
  """The fewest seeds with which a setting can be above q (all of them succeeding).

  E.g. 6 for q = 0.5 at 95%: 6 of 6 has lower bound 0.541, 5 of 5 only 0.478.
  A cap below this makes every candidate undecided at best.
  """
  if not 0 < q < 1:
    raise ValueError(f"q={q:g} must be in (0, 1)")
  trials = 1
  while success_interval(trials, trials, confidence).lower < q:
    trials += 1
  return trials


def can_reach(count: Count, allocation: Allocation) -> bool:
  """Whether a candidate-setting could still be above q within the cap: if every
  seed it has left succeeded. With the failures fixed, the lower bound grows
  with the trials, so the cap is where it is highest."""
  trials = max(allocation.cap, count.trials)
  best = success_interval(count.successes + trials - count.trials, trials, allocation.confidence)
  return best.lower >= allocation.q


def out_of_reach(estimate: CandidateEstimate, allocation: Allocation) -> bool:
  """An undecided candidate none of whose settings can be above q within the cap."""
  return estimate.decision == UNDECIDED and not any(
    can_reach(Count(s.interval.successes, s.interval.trials), allocation) for s in estimate.settings
  )


def validate_allocation(allocation: Allocation) -> None:
  """One-line ValueError for settings with which no candidate could ever be above q."""
  if not 0 < allocation.q < 1:
    raise ValueError(f"q={allocation.q:g} must be in (0, 1)")
  if not 0 < allocation.confidence < 1:
    raise ValueError(f"confidence={allocation.confidence:g} must be in (0, 1)")
  if allocation.initial < 1 or allocation.step < 1:
    raise ValueError(
      f"initial_seeds={allocation.initial} and seed_step={allocation.step} must be >= 1"
    )
  if allocation.cap < allocation.initial:
    raise ValueError(f"max_seeds={allocation.cap} must be >= initial_seeds={allocation.initial}")
  needed = seeds_to_establish(allocation.q, allocation.confidence)
  if allocation.cap < needed:
    raise ValueError(
      f"max_seeds={allocation.cap} can never establish a success probability >= "
      f"q={allocation.q:g} at {100 * allocation.confidence:g}% (needs at least {needed} seeds)"
    )


# --- Counting rows ------------------------------------------------------------------


def is_success(row: Mapping, target: float) -> bool:
  """An ok run whose accuracy reaches the target (diverged and failed runs never do)."""
  accuracy = row.get("accuracy")
  return (
    row.get("status") == "ok"
    and accuracy is not None
    and not math.isnan(accuracy)
    and accuracy >= target
  )


def success_counts(
  rows: Iterable[Mapping],
  candidate_of: Callable[[Mapping], Hashable],
  setting_of: Callable[[Mapping], Hashable],
  target: float,
  candidates: Iterable[Hashable] = (),
  settings: Iterable[Hashable] = (),
) -> dict[Hashable, dict[Hashable, Count]]:
  """{candidate: {setting: Count}} over `rows`.

  `candidates` x `settings` are listed first with Count(0, 0) (so untrained
  ones are present, in that order); rows of other candidates or settings are
  added after them in the order they come.
  """
  settings = list(settings)
  counts = {c: {s: Count(0, 0) for s in settings} for c in candidates}
  for row in rows:
    by_setting = counts.setdefault(candidate_of(row), {})
    setting = setting_of(row)
    done = by_setting.get(setting, Count(0, 0))
    by_setting[setting] = Count(done.successes + is_success(row, target), done.trials + 1)
  return counts


# --- Estimates ------------------------------------------------------------------------


def estimate_candidate(
  candidate: Hashable,
  counts: Mapping[Hashable, Count],
  q: float = DEFAULT_Q,
  confidence: float = DEFAULT_CONFIDENCE,
) -> CandidateEstimate:
  """A candidate's settings, its best setting (highest lower bound) and its decision."""
  if not counts:
    raise ValueError(f"candidate {candidate!r} has no settings")
  settings = []
  for setting, (successes, trials) in counts.items():
    interval = success_interval(successes, trials, confidence)
    settings.append(SettingEstimate(setting, interval, decide(interval, q)))
  best = min(
    enumerate(settings),
    key=lambda item: (-item[1].interval.lower, -_or(item[1].interval.estimate, -1.0), item[0]),
  )[1]
  if best.decision == ABOVE:
    decision = ABOVE
  elif all(s.decision == BELOW for s in settings):
    decision = BELOW
  else:
    decision = UNDECIDED
  return CandidateEstimate(candidate, tuple(settings), best, decision)


def estimate_all(
  counts: Mapping[Hashable, Mapping[Hashable, Count]],
  q: float = DEFAULT_Q,
  confidence: float = DEFAULT_CONFIDENCE,
) -> dict[Hashable, CandidateEstimate]:
  """`estimate_candidate` for every candidate of `counts`, in its order."""
  return {c: estimate_candidate(c, by_setting, q, confidence) for c, by_setting in counts.items()}


def ranked_above(
  estimates: Mapping[Hashable, CandidateEstimate], order_key: Callable[[Hashable], object]
) -> list[CandidateEstimate]:
  """The candidates above q, most convincing first (`most_convincing`'s order)."""
  above = [e for e in estimates.values() if e.decision == ABOVE]
  return sorted(above, key=lambda e: _rank(e, order_key))


def most_convincing(
  estimates: Iterable[CandidateEstimate], order_key: Callable[[Hashable], object] = lambda c: 0
) -> CandidateEstimate | None:
  """The estimate whose best setting has the highest lower bound (ties: higher
  estimate, then `order_key(candidate)` ascending), or None for none."""
  return min(estimates, key=lambda e: _rank(e, order_key), default=None)


def _rank(estimate: CandidateEstimate, order_key) -> tuple:
  best = estimate.best.interval
  return (-best.lower, -_or(best.estimate, -1.0), order_key(estimate.candidate))


# --- Sequential allocation ------------------------------------------------------------


def next_seeds(
  counts: Mapping[Hashable, Mapping[Hashable, Count]], allocation: Allocation
) -> dict[tuple[Hashable, Hashable], int]:
  """How many seeds each candidate-setting of one level should have after the next round.

  counts: {candidate: {setting: Count}} for every candidate and setting of the
  level (Count(0, 0) where nothing ran yet). Returns {(candidate, setting):
  seeds}, only for those that need more: every setting below `initial` is
  brought up to it; after that, while no candidate is above q, each undecided
  setting of an undecided candidate that can still be above q (`can_reach`)
  gets `step` more, up to `cap`. An empty dict means the level is settled.
  """
  wanted = {}
  estimates = estimate_all(counts, allocation.q, allocation.confidence)
  if any(e.decision == ABOVE for e in estimates.values()):
    return wanted
  for candidate, by_setting in counts.items():
    undecided = estimates[candidate].decision == UNDECIDED
    for (setting, count), estimate in zip(by_setting.items(), estimates[candidate].settings):
      if count.trials < allocation.initial:
        wanted[(candidate, setting)] = allocation.initial
      elif (
        undecided
        and estimate.decision == UNDECIDED
        and count.trials < allocation.cap
        and can_reach(count, allocation)
      ):
        wanted[(candidate, setting)] = min(count.trials + allocation.step, allocation.cap)
  return wanted


def interval_record(interval: Interval) -> dict:
  """An interval as JSON-ready fields (for search.json and the report's tables)."""
  return {
    "successes": interval.successes,
    "trials": interval.trials,
    "estimate": interval.estimate,
    "lower": interval.lower,
    "upper": interval.upper,
  }


def _or(value: float, default: float) -> float:
  return default if math.isnan(value) else value
