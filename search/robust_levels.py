"""The robust rule's level records: what one level's seed rounds produced
(`LevelOutcome`), its row in the level table (`level_summary`), and the answer
fields of a candidate above q (`robust_answer`). The rounds themselves are
`combinatorial.Search._allocate`; the statistics are search/stats.py.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

from search import search_result, stats


class LevelOutcome(NamedTuple):
  """One level after its seed rounds: every candidate's estimate, the rows of
  its runs, the runs max_seeds per setting would have cost, and how many undecided
  candidates were stopped because no setting could be above q within max_seeds."""

  estimates: dict[Hashable, stats.CandidateEstimate]
  rows: list[dict]
  cap_runs: int
  out_of_reach: int


def setting_of(row: dict) -> tuple[float, str]:
  return (row["lr"], row["schedule"])


def triple_of(row: dict) -> tuple[int, int, int]:
  return (row["d1"], row["d2"], row["d3"])


def mask_of(row: dict) -> str:
  return row["mask_config"]


def success_record(estimate: stats.SettingEstimate) -> dict:
  """A setting's success probability as search.json fields."""
  lr, schedule = estimate.setting
  return {"lr": lr, "schedule": schedule, **stats.interval_record(estimate.interval)}


def level_summary(outcome: LevelOutcome, order_key) -> dict:
  """A robust level's table fields: runs used (and at the cap), the best accuracy
  of any run, how many candidates are above q and undecided (and of those, out of
  reach within max_seeds), and the most convincing candidate with its best setting's success probability."""
  ok = [r["accuracy"] for r in outcome.rows if r["status"] == "ok" and r["accuracy"] is not None]
  decisions = [e.decision for e in outcome.estimates.values()]
  best = stats.most_convincing(outcome.estimates.values(), order_key)
  label = best.candidate if isinstance(best.candidate, str) else "x".join(map(str, best.candidate))
  return {
    "runs": len(outcome.rows),
    "cap_runs": outcome.cap_runs,
    "best_accuracy": max((a for a in ok if a == a), default=float("nan")),
    "reached": decisions.count(stats.ABOVE),
    "undecided": decisions.count(stats.UNDECIDED),
    "out_of_reach": outcome.out_of_reach,
    "best_mask_config": label,
    "best_success": success_record(best.best),
  }


def robust_answer(
  estimate: stats.CandidateEstimate, rows, candidate_of, target: float
) -> tuple[dict, dict]:
  """(answer fields, full row) of a candidate above q: its best setting's success
  probability, and that setting's most accurate run (the model to save; above
  q means at least one of its runs reaches the target)."""
  runs = [
    r
    for r in rows
    if candidate_of(r) == estimate.candidate
    and setting_of(r) == estimate.best.setting
    and stats.is_success(r, target)
  ]
  row = max(runs, key=lambda r: r["accuracy"])
  fields = {
    "accuracy": row["accuracy"],
    "row": search_result.public_row(row),
    "success": success_record(estimate.best),
  }
  return fields, row
