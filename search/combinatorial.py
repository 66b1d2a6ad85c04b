"""Algorithm 1, the combinatorial search for the sparsest network (METHODS §D): the driver.

The candidates, levels and specs are search/phases.py. Phase 1 walks width
triples by dense parameter count; a triple *reaches* the target when its best
accuracy over its settings is >= the target, and the phase-1 answer is the
reaching triple with the smallest P(d) (§D.2). Tie-break (the reference's is
unknown, §J.1): the highest best accuracy, then the lexicographically smallest
(d1, d2, d3). Phase 2 walks the mask triples inside those widths by hidden nnz;
the minimal model is the mask with the smallest weight count whose best
accuracy reaches the target (§D.6).

Both phases walk their levels sparsest first and stop after the first level on
which something reaches the target: everything sparser has then been tried
and failed, so the answer is settled. `exhaustive_phase1` / `all_levels` run
every level instead. The answer's weights are read from the store (never
retrained) into sparsest_<target>.npz.

The robust rule (`rule="robust"`, search/stats.py) replaces "its best accuracy
reaches the target" by "its best setting reaches the target with probability
>= q at the lower bound of an exact interval", and trains each level in seed
rounds (`Search._allocate`): a candidate gets more seeds only while its answer
is open, and a level stops as soon as one candidate is above q or none can be.
The answer is then the level's most convincing candidate (highest lower bound,
then estimate, then the reference tie-break order); search.json records the
runs the allocation used against giving every setting max_seeds.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Hashable, Iterable

import numpy as np

from cubist import engine
from cubist import masks as mask_ops
from cubist import store as store_ops
from cubist.specs import ExperimentSpec
from search import robust_levels, search_result, stats
from search.phases import (
  PHASE1,
  PHASE2,
  SearchConfig,
  hyperparameters,
  level_mask_triple_counts,
  level_mask_triples,
  mask_config_label,
  network_masks,
  parse_mask_config,
  phase1_levels,
  phase1_spec,
  phase1_specs,
  phase2_candidates,
  phase2_levels,
  phase2_spec,
  phase2_specs,
  settings,
)

# --- Driving the phases -------------------------------------------------------


@dataclasses.dataclass
class Candidate:
  """Best result of one candidate (a width triple or a mask) over its settings."""

  label: str
  best_accuracy: float
  best_row: dict
  runs: int


def best_by_candidate(rows: Iterable[dict], key) -> dict[str, Candidate]:
  """Group rows by key(row) and keep each group's most accurate ok run."""
  groups = defaultdict(list)
  for row in rows:
    groups[key(row)].append(row)
  result = {}
  for label, members in groups.items():
    ok = [r for r in members if r["status"] == "ok" and r["accuracy"] is not None]
    best = max(ok, key=lambda r: r["accuracy"]) if ok else members[0]
    result[label] = Candidate(label, best["accuracy"] if ok else float("nan"), best, len(members))
  return result


class Search:
  """Runs both phases into one workdir; resumable and shardable."""

  def __init__(
    self,
    config: SearchConfig,
    workdir,
    shard_index: int = 0,
    num_shards: int = 1,
    plan: engine.ChunkPlan | None = None,
    progress_stream=None,
    log=print,
    poll_seconds: float = 5.0,
    stop=None,
  ):
    """stop: polled after every committed chunk (engine.run); when it returns True the
    search ends with engine.Interrupted, and the same call resumes."""
    config.validate()
    if not 0 <= shard_index < num_shards:
      raise ValueError(f"shard_index={shard_index} must be in 0..{num_shards - 1}")
    self.config, self.workdir = config, Path(workdir)
    self.shard_index, self.num_shards = shard_index, num_shards
    self.plan, self.progress_stream, self.log = plan, progress_stream, log
    self.poll_seconds, self.stop = poll_seconds, stop
    self.name = f"search-{config.target:g}"
    # Robust rule: runs the seed allocation asked for, and what giving every
    # trained candidate-setting max_seeds would have cost.
    self.allocated = {"runs": 0, "cap_runs": 0}

  # The store of this shard, and a merged view of every shard's rows.
  def _train(self, specs: list[ExperimentSpec]) -> None:
    store = engine.run(
      specs,
      self.workdir,
      sweep_name=self.name,
      fingerprint=self.config.fingerprint(),
      plan=self.plan,
      shard_index=self.shard_index,
      num_shards=self.num_shards,
      progress_stream=self.progress_stream,
      stop=self.stop,
    )
    store.close()

  def _store_paths(self) -> list[Path]:
    return sorted(self.workdir.glob("results*.sqlite"))

  def _rows_for(self, specs: list[ExperimentSpec]) -> list[dict]:
    """Rows of these specs from all shards, waiting for other shards if needed."""
    wanted = {s.exp_id() for s in specs}
    while True:
      paths = self._store_paths()
      try:
        rows = [r for r in store_ops.merge_stores(paths) if r["exp_id"] in wanted]
      except (sqlite3.Error, store_ops.StoreError):
        if self.num_shards == 1:
          raise
        rows = []  # another shard is still creating its store file
      if len(rows) >= len(wanted):
        return rows
      if self.num_shards == 1:
        missing = len(wanted) - len(rows)
        raise RuntimeError(f"{missing} runs missing from the store after training")
      time.sleep(self.poll_seconds)  # another shard is still on this level

  def _phase1_reaching(self, table: list):
    """Yield the triples reaching the target in selection order, training lazily.

    Levels are trained sparsest first (small levels grouped so chunks stay
    full); each finished level appends a row to `table`. Within a level the
    order is the tie-break: highest best accuracy, then the smallest triple.
    """
    config = self.config
    pending = []
    levels = phase1_levels(config)
    for index, (count, triples) in enumerate(levels):
      pending.append((count, triples))
      batch = sum(len(t) for _, t in pending) * len(settings(config, PHASE1))
      if batch < 256 and index < len(levels) - 1:
        continue
      specs = phase1_specs(config, [t for _, ts in pending for t in ts])
      self._train(specs)
      candidates = best_by_candidate(self._rows_for(specs), lambda r: (r["d1"], r["d2"], r["d3"]))
      group, pending = pending, []
      reaching = []
      for count, triples in group:
        accuracies = [candidates[t].best_accuracy for t in triples]
        reached = [t for t in triples if candidates[t].best_accuracy >= config.target]
        table.append(
          {
            "dense_params": count,
            "triples": len(triples),
            "best_accuracy": max((a for a in accuracies if a == a), default=float("nan")),
            "reached": len(reached),
          }
        )
        for best in sorted(reached, key=lambda t: (-candidates[t].best_accuracy, t)):
          reaching.append(
            {
              "widths": best,
              "dense_params": count,
              "accuracy": candidates[best].best_accuracy,
              "row": search_result.public_row(candidates[best].best_row),
            }
          )
      self.log(
        f"phase 1: dense params <= {group[-1][0]}: best accuracy "
        f"{max(r['best_accuracy'] for r in table[-len(group) :]):.4f}"
      )
      yield from reaching

  def phase1(self) -> dict:
    """The phase-1 answer and its per-level table.

    Keeps the level walk in `self._phase1_walk`, so a phase-1 fallback can ask
    for the next reaching triple (training further levels if needed).
    """
    config = self.config
    if config.phase1_widths is not None:
      self._phase1_walk = iter(())
      return {"widths": tuple(config.phase1_widths), "given": True, "levels": []}
    table = []
    walk = self._phase1_reaching_robust if config.robust else self._phase1_reaching
    self._phase1_walk = walk(table)
    answer = next(self._phase1_walk, None)
    if config.exhaustive_phase1:
      self._phase1_walk = iter(list(self._phase1_walk))  # train every level now
    return {**(answer or {"widths": None}), "levels": table}

  def phase2(self, widths) -> dict:
    """The sparsest mask inside `widths` reaching the target, and the per-level table."""
    config = self.config
    if config.robust:
      return self._phase2_robust(widths)
    table, answer, stopped = [], None, None
    budget = self._budget_counts(widths)
    for level in phase2_levels(config, widths):
      stopped = self._over_budget(budget, widths, level)
      if stopped:
        break
      triples = list(level_mask_triples(config, widths, level))
      if not triples:
        continue
      specs = phase2_specs(config, widths, triples)
      self._train(specs)
      candidates = best_by_candidate(self._rows_for(specs), lambda r: r["mask_config"])
      best = max(candidates.values(), key=lambda c: (np.nan_to_num(c.best_accuracy, nan=-1),))
      reached = [c for c in candidates.values() if c.best_accuracy >= config.target]
      counts = _level_counts(level, widths)
      weight_nnz = counts["weight_nnz"]
      table.append(
        {
          **counts,
          "masks": len(candidates),
          "runs": len(specs),
          "best_accuracy": best.best_accuracy,
          "best_mask_config": best.label,
          "reached": len(reached),
        }
      )
      self.log(
        f"phase 2: weight nnz {weight_nnz}: {len(candidates)} masks, best accuracy "
        f"{best.best_accuracy:.4f} ({best.label}), {len(reached)} reach {config.target:g}"
      )
      if reached and answer is None:
        winner = sorted(reached, key=lambda c: (-c.best_accuracy, parse_mask_config(c.label)))[0]
        self._winner_row = winner.best_row  # with its weights, for save_model
        answer = {
          "widths": tuple(widths),
          "mask_config": winner.label,
          "accuracy": winner.best_accuracy,
          "weight_nnz": winner.best_row["weight_nnz"],
          "model_nnz": winner.best_row["model_nnz"],
          "row": search_result.public_row(winner.best_row),
        }
        if not config.all_levels:
          break
    return _phase2_result(answer, table, stopped)

  def _budget_counts(self, widths) -> dict[int, int] | None:
    """{level: mask triples} inside `widths`, counted once per phase-2 walk, for
    `_over_budget`; None without a phase2_max_masks budget."""
    if self.config.phase2_max_masks is None:
      return None
    return level_mask_triple_counts(self.config, widths)

  def _over_budget(self, budget: dict[int, int] | None, widths, level: int) -> dict | None:
    """Where phase 2 stops for `phase2_max_masks` (logged), or None to go on.

    budget: `_budget_counts(widths)`."""
    config = self.config
    if budget is None:
      return None
    count = budget.get(level, 0)
    if count <= config.phase2_max_masks:
      return None
    stopped = {**_level_counts(level, widths), "mask_triples": count}
    self.log(
      f"phase 2: stopped before weight nnz {stopped['weight_nnz']}: {count:,} mask triples > "
      f"phase2_max_masks={config.phase2_max_masks:,} (raise it and rerun to go on)"
    )
    return stopped

  # --- The robust rule ---------------------------------------------------------

  def _allocate(
    self,
    levels: list[list[Hashable]],
    spec_of: Callable[[Hashable, tuple, int], ExperimentSpec],
    candidate_of: Callable[[dict], Hashable],
    phase: str,
  ) -> list["robust_levels.LevelOutcome"]:
    """Train the candidates of `levels` in seed rounds until each level is settled.

    levels: [[candidate, ...], ...], candidates distinct across levels; phase:
    PHASE1 or PHASE2 (whose learning rates the settings take).
    spec_of(candidate, (lr, schedule), repeat): its run; candidate_of(row): the
    inverse. Each level is allocated on its own (stats.next_seeds); the rounds
    of all levels train together so chunks stay full. A round gives a
    candidate-setting the repeats n..n'-1 after the n it has, and a run's seed
    depends only on what it is, so a resumed or sharded search (every shard
    reads the same merged rows, hence takes the same decisions) trains
    identical runs.
    """
    config = self.config
    allocation, grid = config.allocation(), hyperparameters(config, phase)
    candidates = [c for level in levels for c in level]
    rows = []
    while True:
      counts = stats.success_counts(
        rows, candidate_of, robust_levels.setting_of, config.target, candidates, grid
      )
      specs = [
        spec_of(candidate, setting, repeat)
        for level in levels
        for (candidate, setting), seeds in stats.next_seeds(
          {c: counts[c] for c in level}, allocation
        ).items()
        for repeat in range(counts[candidate][setting].trials, seeds)
      ]
      if not specs:
        break
      self._train(specs)
      rows += self._rows_for(specs)
    outcomes = []
    for level in levels:
      members = set(level)
      level_rows = [r for r in rows if candidate_of(r) in members]
      estimates = stats.estimate_all(
        {c: counts[c] for c in level}, allocation.q, allocation.confidence
      )
      out_of_reach = sum(stats.out_of_reach(e, allocation) for e in estimates.values())
      outcome = robust_levels.LevelOutcome(
        estimates, level_rows, allocation.cap * len(grid) * len(level), out_of_reach
      )
      self.allocated["runs"] += len(level_rows)
      self.allocated["cap_runs"] += outcome.cap_runs
      outcomes.append(outcome)
    return outcomes

  def _phase1_reaching_robust(self, table: list):
    """`_phase1_reaching` under the robust rule: the triples above q, in selection order.

    Small levels are grouped as in the reference walk (by their first round's
    runs); within a level the order is the most convincing first, then the
    smallest triple.
    """
    config = self.config
    first_round = len(hyperparameters(config, PHASE1)) * config.initial_seeds
    pending = []
    levels = phase1_levels(config)
    for index, (count, triples) in enumerate(levels):
      pending.append((count, triples))
      if sum(len(t) for _, t in pending) * first_round < 256 and index < len(levels) - 1:
        continue
      group, pending = pending, []
      outcomes = self._allocate(
        [list(triples) for _, triples in group],
        lambda triple, setting, repeat: phase1_spec(config, triple, *setting, repeat),
        robust_levels.triple_of,
        PHASE1,
      )
      reaching = []
      for (count, triples), outcome in zip(group, outcomes):
        table.append(
          {
            "dense_params": count,
            "triples": len(triples),
            **robust_levels.level_summary(outcome, tuple),
          }
        )
        for estimate in stats.ranked_above(outcome.estimates, tuple):
          fields, _ = robust_levels.robust_answer(
            estimate, outcome.rows, robust_levels.triple_of, config.target
          )
          reaching.append({"widths": estimate.candidate, "dense_params": count, **fields})
      done = table[-len(group) :]
      self.log(
        f"phase 1: dense params <= {group[-1][0]}: {sum(r['reached'] for r in done)} above "
        f"q={config.q:g}, {sum(r['undecided'] for r in done)} undecided "
        f"({sum(r['out_of_reach'] for r in done)} out of reach), "
        f"{sum(r['runs'] for r in done)} runs"
      )
      yield from reaching

  def _phase2_robust(self, widths) -> dict:
    """`phase2` under the robust rule: the sparsest level with a mask above q, and the
    per-level table (one mask per relabelling class under a random init)."""
    config = self.config
    table, answer, stopped = [], None, None
    budget = self._budget_counts(widths)
    for level in phase2_levels(config, widths):
      stopped = self._over_budget(budget, widths, level)
      if stopped:
        break
      triples = phase2_candidates(config, widths, level_mask_triples(config, widths, level))
      if not triples:
        continue
      masks = {mask_config_label(t): network_masks(widths, t, config.width) for t in triples}
      (outcome,) = self._allocate(
        [list(masks)],
        lambda label, setting, repeat: phase2_spec(
          config, widths, parse_mask_config(label), *setting, repeat, masks[label]
        ),
        robust_levels.mask_of,
        PHASE2,
      )
      summary = robust_levels.level_summary(outcome, parse_mask_config)
      counts = _level_counts(level, widths)
      weight_nnz = counts["weight_nnz"]
      table.append(
        {
          **counts,
          "masks": len(masks),
          **summary,
        }
      )
      self.log(
        f"phase 2: weight nnz {weight_nnz}: {len(masks)} masks, {summary['runs']} runs, "
        f"{summary['reached']} above q={config.q:g}, {summary['undecided']} undecided "
        f"({summary['out_of_reach']} out of reach)"
      )
      above = stats.ranked_above(outcome.estimates, parse_mask_config)
      if above and answer is None:
        fields, self._winner_row = robust_levels.robust_answer(
          above[0], outcome.rows, robust_levels.mask_of, config.target
        )
        answer = {
          "widths": tuple(widths),
          "mask_config": above[0].candidate,
          "weight_nnz": self._winner_row["weight_nnz"],
          "model_nnz": self._winner_row["model_nnz"],
          **fields,
        }
        if not config.all_levels:
          break
    return _phase2_result(answer, table, stopped)

  def run(self) -> dict:
    """Both phases; writes search.json and the sparsest model's npz to the workdir."""
    config = self.config
    phase1 = self.phase1()
    result = {"config": dataclasses.asdict(config), "phase1": phase1}
    widths, attempts = phase1.get("widths"), []
    while widths is not None and not config.phase1_only:
      phase2 = self.phase2(tuple(widths))
      attempts.append({"widths": tuple(widths), "mask_config": phase2.get("mask_config")})
      result["phase2"] = phase2
      if (
        phase2.get("mask_config")
        or not config.phase1_fallback
        or len(attempts) > config.max_fallbacks
      ):
        break
      following = next(self._phase1_walk, None)
      widths = following and following["widths"]
      if widths is not None:
        self.log(
          f"phase 2 found no mask inside {attempts[-1]['widths']}; phase-1 fallback "
          f"to the next reaching widths {widths}"
        )
    result["phase2_attempts"] = attempts
    if config.robust:
      used, cap = self.allocated["runs"], self.allocated["cap_runs"]
      result["allocation"] = {
        "runs": used,
        "cap_runs": cap,
        "saving": 1 - used / cap if cap else 0.0,
      }
    if self.shard_index == 0:
      self.workdir.mkdir(parents=True, exist_ok=True)  # the stores made it, unless all was given
      (self.workdir / "search.json").write_text(
        json.dumps(result, indent=2, default=search_result.jsonable)
      )
      if result.get("phase2", {}).get("mask_config"):
        result["model_path"] = str(
          search_result.save_model(self.config, result["phase2"], self._winner_row, self.workdir)
        )
    return result


def _phase2_result(answer: dict | None, table: list, stopped: dict | None) -> dict:
  """Phase 2's answer (or mask_config None), its level table, and where the
  phase2_max_masks budget stopped it, if it did."""
  result = {**(answer or {"mask_config": None}), "levels": table}
  if stopped is not None:
    result["stopped"] = stopped
  return result


def _level_counts(level: int, widths) -> dict:
  """A phase-2 level's counts inside `widths`, as its table reports them: `level` weights
  in W1..W3 plus the d3 output weights, and for model_nnz also the d1 + d2 + d3 hidden
  biases and the output bias (the same for both rules)."""
  weight_nnz = level + widths[2]
  model_nnz = weight_nnz + mask_ops.dense_bias_count(widths)
  return {"hidden_nnz": level, "weight_nnz": weight_nnz, "model_nnz": model_nnz}
