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
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from cubist import engine, mlp
from cubist import masks as mask_ops
from cubist import store as store_ops
from cubist.mlp import Layer
from cubist.specs import ExperimentSpec
from search.phases import (
  SearchConfig,
  level_mask_triples,
  parse_mask_config,
  phase1_levels,
  phase1_specs,
  phase2_levels,
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
    plan: engine.ChunkPlan = engine.ChunkPlan(),
    progress_stream=None,
    log=print,
    poll_seconds: float = 5.0,
  ):
    config.validate()
    if not 0 <= shard_index < num_shards:
      raise ValueError(f"shard_index={shard_index} must be in 0..{num_shards - 1}")
    self.config, self.workdir = config, Path(workdir)
    self.shard_index, self.num_shards = shard_index, num_shards
    self.plan, self.progress_stream, self.log = plan, progress_stream, log
    self.poll_seconds = poll_seconds
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.name = f"search-{config.target:g}"

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
      batch = sum(len(t) for _, t in pending) * len(settings(config))
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
              "row": _public_row(candidates[best].best_row),
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
    self._phase1_walk = self._phase1_reaching(table)
    answer = next(self._phase1_walk, None)
    if config.exhaustive_phase1:
      self._phase1_walk = iter(list(self._phase1_walk))  # train every level now
    return {**(answer or {"widths": None}), "levels": table}

  def phase2(self, widths) -> dict:
    """The sparsest mask inside `widths` reaching the target, and the per-level table."""
    config = self.config
    table, answer = [], None
    for level in phase2_levels(config, widths):
      triples = list(level_mask_triples(config, widths, level))
      if not triples:
        continue
      specs = phase2_specs(config, widths, triples)
      self._train(specs)
      candidates = best_by_candidate(self._rows_for(specs), lambda r: r["mask_config"])
      best = max(candidates.values(), key=lambda c: (np.nan_to_num(c.best_accuracy, nan=-1),))
      reached = [c for c in candidates.values() if c.best_accuracy >= config.target]
      weight_nnz = level + widths[2]
      table.append(
        {
          "hidden_nnz": level,
          "weight_nnz": weight_nnz,
          "model_nnz": weight_nnz + sum(widths) + 1,
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
          "row": _public_row(winner.best_row),
        }
        if not config.all_levels:
          break
    return {**(answer or {"mask_config": None}), "levels": table}

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
    if self.shard_index == 0:
      (self.workdir / "search.json").write_text(json.dumps(result, indent=2, default=_jsonable))
      if result.get("phase2", {}).get("mask_config"):
        result["model_path"] = str(
          save_model(self.config, result["phase2"], self._winner_row, self.workdir)
        )
    return result


def _public_row(row: dict) -> dict:
  """A row without its binary columns (for search.json)."""
  return {k: v for k, v in row.items() if k not in ("mask", "params")}


def _jsonable(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, (tuple, set)):
    return list(value)
  raise TypeError(f"cannot serialise {type(value)}")


def save_model(config: SearchConfig, answer: dict, row: dict, workdir) -> Path:
  """Save the winning run's masks, initial and trained weights (from the store) as an npz.

  Nothing is retrained: the trained weights and masks are the store row's, the
  initial weights are drawn again from the row's spec (no training involved).
  `init_*` holds them at the network's occupied width, zero-padded to the full width.
  row: the winner's full store row (weights included).
  """
  spec = store_ops.row_spec(row)
  padded = mask_ops.occupied_width(spec.masks())
  initial = _first(engine.initial_params([spec], padded))
  arrays = {}
  for prefix, tree in (
    ("init", mlp.pad_params(initial, config.width)),
    ("trained", store_ops.row_params(row, config.width)),
    ("mask", store_ops.row_masks(row)),
  ):
    arrays.update({f"{prefix}_{k}": v for k, v in mlp.to_numpy_dict(tree).items()})
  arrays = {k: (v.astype(bool) if k.startswith("mask_") else v) for k, v in arrays.items()}
  path = Path(workdir) / f"sparsest_{config.target:g}.npz"
  np.savez(
    path,
    **arrays,
    accuracy=row["accuracy"],
    seed=row["seed"],
    lr=row["lr"],
    schedule=row["schedule"],
    mask_config=row["mask_config"],
    exp_id=row["exp_id"],
    weight_nnz=answer["weight_nnz"],
    model_nnz=answer["model_nnz"],
  )
  return path


def _first(tree):
  """The first experiment of a stacked (leading-axis) Params, as numpy."""
  return tuple(Layer(np.asarray(layer.weight[0]), np.asarray(layer.bias[0])) for layer in tree)


def format_result(result: dict) -> str:
  """The printed summary: phase-1 answer, phase-2 per-level table, sparsest model."""
  lines = []
  phase1 = result["phase1"]
  target = result["config"]["target"]
  if phase1.get("widths") is None:
    lines.append(f"phase 1: no width triple reaches {target:g}")
    return "\n".join(lines)
  lines.append(
    f"phase 1: widths {tuple(phase1['widths'])}"
    + (
      f" (dense params {phase1.get('dense_params')}, best accuracy "
      f"{phase1.get('accuracy', float('nan')):.4f})"
      if not phase1.get("given")
      else " (given)"
    )
  )
  if result["config"].get("phase1_only"):
    lines.append("phase 2 not run (phase1_only)")
    return "\n".join(lines)
  for attempt in result.get("phase2_attempts", [])[:-1]:
    lines.append(
      f"phase 2 inside {tuple(attempt['widths'])}: no mask reaches {target:g}; "
      "phase-1 fallback to the next reaching widths"
    )
  phase2 = result.get("phase2", {})
  lines.append(f"phase 2 levels (widths {tuple(phase2.get('widths') or phase1['widths'])}):")
  lines.append(
    f"  {'weight_nnz':>10} {'model_nnz':>9} {'masks':>6} {'runs':>6} "
    f"{'best_acc':>9} {'reached':>7}  best mask"
  )
  for level in phase2.get("levels", []):
    lines.append(
      f"  {level['weight_nnz']:>10} {level['model_nnz']:>9} {level['masks']:>6} "
      f"{level['runs']:>6} {level['best_accuracy']:>9.4f} {level['reached']:>7}"
      f"  {level['best_mask_config']}"
    )
  if phase2.get("mask_config"):
    lines.append(
      f"sparsest model reaching {target:g}: widths {tuple(phase2['widths'])}, masks "
      f"{phase2['mask_config']}, accuracy {phase2['accuracy']:.4f}, weight nnz "
      f"{phase2['weight_nnz']}, model nnz {phase2['model_nnz']}"
    )
  else:
    lines.append(f"phase 2: no mask reaches {target:g}")
  return "\n".join(lines)
