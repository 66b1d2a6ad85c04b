"""The study's progress on disk: what each family has finished in its sub-workdir,
the phase-1 answers the adaptive plan reads from finished phase-1 families, and the
store files a shard would write (read-only: nothing here changes a workdir).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from cubist import store as store_ops
from search import combinatorial, phases
from search.study import (
  FIXED,
  PHASE1,
  RANDOM,
  Answers,
  Job,
  StudyConfig,
  all_families,
  count,
  execution_order,
  fingerprint,
  reference_answers,
  resolve,
  selected_families,
)


class Done(NamedTuple):
  """runs: distinct finished experiments of the family's sweep in its stores;
  foreign: rows in stores of another sweep (a run would refuse that sub-workdir)."""

  runs: int
  foreign: int


def _stores(family_dir: Path) -> list[Path]:
  return sorted(Path(family_dir).glob("results*.sqlite")) if Path(family_dir).is_dir() else []


def done(job: Job, family_dir) -> Done:
  """Finished experiments of the job in `family_dir`, read without changing anything."""
  if job.waiting or (job.search is None and job.specs is None):
    return Done(0, 0)
  wanted = fingerprint(job)
  ids, foreign = set(), 0
  for path in _stores(family_dir):
    with store_ops.StoreReader(path, missing_ok=True) as store:
      if store.empty:
        continue
      if store.sweep_fingerprint == wanted:
        ids |= store.done_ids()
      else:
        foreign += store.count()
  if job.specs is not None:
    ids &= {s.exp_id() for s in job.specs}
  return Done(len(ids), foreign)


def finished_rows(job: Job, family_dir) -> list[dict] | None:
  """Every row of a finished job (all shards merged), or None if it is not finished."""
  total = count(job)
  if total is None or done(job, family_dir).runs < total:
    return None
  wanted = fingerprint(job)
  paths = []
  for path in _stores(family_dir):
    with store_ops.StoreReader(path, missing_ok=True) as store:
      if not store.empty and store.sweep_fingerprint == wanted:
        paths.append(path)
  return store_ops.merge_stores(paths)


def phase1_answer(config: phases.SearchConfig, rows, target: float):
  """The phase-1 widths for `target` from a finished phase-1 grid's rows, by the
  search's rule (§D.2): the smallest dense parameter count with a triple whose
  best accuracy over its settings reaches the target; among those the highest
  best accuracy, then the smallest triple (Search.phase1's tie-break). None if
  no triple reaches it."""
  candidates = combinatorial.best_by_candidate(
    [r for r in rows if r["family"] == phases.PHASE1], lambda r: (r["d1"], r["d2"], r["d3"])
  )
  for _, triples in phases.phase1_levels(config):
    reached = [t for t in triples if t in candidates and candidates[t].best_accuracy >= target]
    if reached:
      return min(reached, key=lambda t: (-candidates[t].best_accuracy, t))
  return None


def record_answers(config, family, job, rows, answers: Answers) -> None:
  """Fill `answers` from a finished phase-1 family's rows (adaptive plans only)."""
  if config.reference:
    return
  if family.start == RANDOM:
    for arm, target in enumerate(config.targets):
      answers[(RANDOM, arm)] = phase1_answer(job.search, rows, target)
  else:
    found = phase1_answer(job.search, rows, config.targets[family.arm])
    # Nothing below the budget: the random-init widths (the budget's triple) stand in.
    answers[(FIXED, family.arm)] = found or answers.get((RANDOM, family.arm))


def read_answers(config: StudyConfig, workdir) -> Answers:
  """The phase-1 answers the plan can know now: a reference config's, or those of
  the phase-1 families already finished in `workdir` (read-only)."""
  answers = reference_answers(config)
  if config.reference:
    return answers
  for family in execution_order([f for f in all_families(config) if f.kind == PHASE1]):
    job = resolve(config, family, answers)
    if job.waiting:
      continue
    rows = finished_rows(job, Path(workdir) / family.name)
    if rows is not None:
      record_answers(config, family, job, rows, answers)
  return answers


class StoreTarget(NamedTuple):
  """The store file one shard of a family writes, and the sweep it must belong to."""

  family: str
  path: Path
  sweep_name: str
  fingerprint: str


def store_targets(config: StudyConfig, workdir, shard_index: int = 0, num_shards: int = 1):
  """The store files this shard would write for the families it can resolve now (the
  families waiting for a phase 1 are checked by the engine when they start)."""
  answers = read_answers(config, workdir)
  out = []
  for family in selected_families(config):
    job = resolve(config, family, answers)
    if job.waiting or not count(job):
      continue
    # Search names its sweep after its target (combinatorial.Search.name).
    name = f"search-{job.search.target:g}" if job.search is not None else family.name
    path = store_ops.store_path(Path(workdir) / family.name, shard_index, num_shards)
    out.append(StoreTarget(family.name, path, name, fingerprint(job)))
  return out
