"""Algorithm 1, the combinatorial search for the sparsest network (METHODS §D).

Phase 1 (structured): every hidden-width triple (d1, d2, d3) in 1..w, each
trained with every learning rate x schedule. A triple *reaches* the target when
its best accuracy over those settings is >= the target. The phase-1 answer is
the reaching triple with the smallest dense parameter count P(d) (§D.2).
Tie-break (the reference's is unknown, §J.1): the highest best accuracy, then
the lexicographically smallest (d1, d2, d3).

Phase 2 (unstructured): every per-layer mask triple inside the phase-1 widths
(W1 (d1, 2), W2 (d2, d1), W3 (d3, d2); classifier dense over d3), in the
reference enumeration order (search.enumerate), x every setting. The minimal
model is the mask with the smallest weight count whose best accuracy reaches
the target (§D.6).

Both phases walk their levels sparsest first (phase 1 by P(d), phase 2 by the
hidden nnz n1 + n2 + n3) and stop after the first level on which something
reaches the target: everything sparser has then been tried and failed, so the
answer is settled. `exhaustive_phase1` / `all_levels` run every level instead.

Seeds: each run's seed is a hash of what it is (phase, widths or mask
configuration, lr, schedule, repeat), so a restarted or sharded search trains
identical runs and the store recognises them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from cubist import engine, masks as mask_ops, mlp, specs as spec_ops
from cubist import store as store_ops
from cubist.mlp import Layer
from cubist.semantics import SEMANTICS_VERSION
from cubist.specs import ExperimentSpec
from search import enumerate as enum
from search import grids

PHASE1, PHASE2 = "phase1", "phase2"


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Everything that defines one search (the store's fingerprint hashes it).

  target: accuracy to reach, in (0, 1]. width: the model all masks live in (16).
  max_width: phase-1 widths range over 1..max_width (16 in the paper).
  lrs, schedules, repeats: the settings each candidate is trained with.
  init: "random" or an npz path (fixed-initialisation search).
  phase1_budget: fixed-init mode (§D.2): only triples with P(d) below this.
  exhaustive_phase1: train every triple instead of stopping at the answer level.
  all_levels: phase 2 trains every nnz level instead of stopping at the answer.
  reference_caps: reproduce the released 99.5% restrictions (§D.3): only mask
    triples with n1 + n2 + n3 < cap_sum and the first cap_w2 W2 masks per n2.
  canonical: train one representative per hidden-unit relabelling class (§D.4;
    exact only under a random init).
  """
  target: float
  width: int = 16
  max_width: int = 16
  lrs: tuple[float, ...] = grids.SEARCH_LRS
  schedules: tuple[str, ...] = grids.SCHEDULES
  repeats: int = 1
  epochs: int = 50
  init: str = spec_ops.RANDOM_INIT
  phase1_budget: int | None = None
  exhaustive_phase1: bool = False
  all_levels: bool = False
  reference_caps: bool = False
  cap_sum: int = grids.CAP_SUM["random"]
  cap_w2: int = grids.CAP_W2["random"]
  canonical: bool = False
  shared_order: bool = False
  phase1_widths: tuple[int, int, int] | None = None  # skip phase 1 with known widths
  # Extension (not in the reference): if phase 2 finds no mask inside the
  # phase-1 widths, go on to the next triple that reached the target in phase
  # 1 (in selection order), at most max_fallbacks times. Fresh seeds make a
  # triple that reached the target once by luck fail in phase 2.
  phase1_fallback: bool = False
  max_fallbacks: int = 8
  # Stop after phase 1 (e.g. the long 99.5% search in stages); rerunning without
  # it resumes the same workdir into phase 2.
  phase1_only: bool = False

  def validate(self) -> None:
    if not self.lrs:
      raise ValueError("lrs must not be empty")
    if not self.schedules:
      raise ValueError("schedules must not be empty")
    if isinstance(self.max_width, bool) or int(self.max_width) != self.max_width:
      raise ValueError(f"max_width={self.max_width} must be an integer")
    if not 0 < self.target <= 1:
      raise ValueError(f"target={self.target:g} ({100 * self.target:g}%) must be in (0, 1]")
    if not 1 <= self.max_width <= self.width:
      raise ValueError(f"max_width={self.max_width} is outside 1..{self.width}")
    if self.phase1_widths is not None:
      mask_ops.validate_widths(self.phase1_widths, self.width)
    for lr in self.lrs:
      if not lr > 0:
        raise ValueError(f"lr={lr} must be > 0")
    if self.repeats < 1:
      raise ValueError(f"repeats={self.repeats} must be >= 1")
    probe = ExperimentSpec(seed=0, lr=self.lrs[0], epochs=self.epochs, width=self.width,
                           init=self.init)
    for schedule in self.schedules:
      spec_ops.validate(dataclasses.replace(probe, schedule=schedule))

  def fingerprint(self) -> str:
    """Hash of the fields that define runs (an init by its contents) and of the
    training semantics; the fallback settings define none."""
    fields = dataclasses.asdict(self)
    for name in ("phase1_fallback", "max_fallbacks", "phase1_only"):
      fields.pop(name)
    fields["init"] = spec_ops.init_id(self.init)
    fields["semantics"] = SEMANTICS_VERSION
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _settings(config: SearchConfig):
  return list(itertools.product(config.lrs, config.schedules, range(config.repeats)))


def _spec(config: SearchConfig, family: str, label: str, lr, schedule, repeat, **fields):
  return ExperimentSpec(
      seed=spec_ops.run_seed(family, label, lr, schedule, repeat, spec_ops.init_id(config.init)),
      lr=float(lr), schedule=schedule, width=config.width, epochs=config.epochs,
      init=config.init, shared_order=config.shared_order, family=family, repeat=repeat,
      **fields)


# --- Phase 1 ----------------------------------------------------------------


def phase1_levels(config: SearchConfig) -> list[tuple[int, list[tuple[int, int, int]]]]:
  """[(P, triples with that dense parameter count)], ascending P."""
  levels = defaultdict(list)
  for triple in itertools.product(range(1, config.max_width + 1), repeat=3):
    count = mask_ops.dense_parameter_count(triple)
    if config.phase1_budget is None or count < config.phase1_budget:
      levels[count].append(triple)
  return sorted(levels.items())


def phase1_specs(config: SearchConfig, triples) -> list[ExperimentSpec]:
  return [_spec(config, PHASE1, "x".join(map(str, triple)), lr, schedule, repeat,
                widths=tuple(triple))
          for triple in triples for lr, schedule, repeat in _settings(config)]


# --- Phase 2 ----------------------------------------------------------------


def layer_shapes(widths) -> tuple[tuple[int, int], ...]:
  """(rows, cols) of the searched layers W1, W2, W3 for hidden widths (d1, d2, d3)."""
  d1, d2, d3 = widths
  return ((d1, mlp.INPUT_DIM), (d2, d1), (d3, d2))


def phase2_levels(config: SearchConfig, widths) -> list[int]:
  """Hidden nnz levels n1 + n2 + n3, ascending."""
  ranges = [enum.nnz_range(*shape) for shape in layer_shapes(widths)]
  return list(range(sum(r.start for r in ranges), sum(r.stop - 1 for r in ranges) + 1))


def level_mask_triples(config: SearchConfig, widths, level: int):
  """Every (n, index) per layer with n1 + n2 + n3 == level, in reference order.

  Yields ((n1, i1), (n2, i2), (n3, i3)). With reference caps, levels at or
  above cap_sum are empty and only the first cap_w2 W2 masks per n2 are used.
  """
  if config.reference_caps and level >= config.cap_sum:
    return
  shapes = layer_shapes(widths)
  ranges = [enum.nnz_range(*shape) for shape in shapes]
  for n1 in ranges[0]:
    for n2 in ranges[1]:
      n3 = level - n1 - n2
      if n3 not in ranges[2]:
        continue
      counts = [enum.count_layer_masks(*shape, n) for shape, n in zip(shapes, (n1, n2, n3))]
      if config.reference_caps:
        counts[1] = min(counts[1], config.cap_w2)
      for i1, i2, i3 in itertools.product(*(range(c) for c in counts)):
        yield (n1, i1), (n2, i2), (n3, i3)


def mask_config_label(triple) -> str:
  """The reference's per-layer (nnz, mask_config) indices, as stored."""
  return ",".join(f"{n}:{i}" for n, i in triple)


def parse_mask_config(label: str) -> tuple[tuple[int, int], ...]:
  """Inverse of `mask_config_label`: "n1:i1,n2:i2,n3:i3" -> ((n1, i1), (n2, i2), (n3, i3))."""
  return tuple(tuple(int(v) for v in part.split(":")) for part in label.split(","))


def network_masks(widths, triple, full_width: int) -> mlp.Params:
  """Full bool masks at `full_width` for a phase-2 mask triple (classifier dense over d3).

  Biases follow the comb-search rule: kept on the first d_l units (every such
  unit has an outgoing edge because no column is empty) and on the classifier.
  """
  d1, d2, d3 = widths
  blocks = [enum.mask_from_index(*shape, n, i)
            for shape, (n, i) in zip(layer_shapes(widths), triple)]
  structured = mask_ops.structured_masks(widths, full_width)
  layers = []
  for l, layer in enumerate(structured):
    weight = np.zeros_like(layer.weight)
    if l < 3:
      rows, cols = blocks[l].shape
      weight[:rows, :cols] = blocks[l]
    else:
      weight = layer.weight.copy()
    layers.append(Layer(weight, layer.bias.copy()))
  return tuple(layers)


def phase2_specs(config: SearchConfig, widths, triples) -> list[ExperimentSpec]:
  triples = list(triples)
  if config.canonical:
    keys = [tuple(network_masks(widths, t, config.width)[l].weight[:widths[l], :cols]
                  for l, cols in enumerate((mlp.INPUT_DIM, widths[0], widths[1])))
            for t in triples]
    triples = [triples[i] for i in enum.network_representatives(keys)]
  specs = []
  for triple in triples:
    label = mask_config_label(triple)
    masks = network_masks(widths, triple, config.width)
    for lr, schedule, repeat in _settings(config):
      specs.append(_spec(config, PHASE2, f"{widths}:{label}", lr, schedule, repeat,
                         mask=masks, mask_config=label,
                         target_nnz=sum(n for n, _ in triple) + widths[2]))
  return specs


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

  def __init__(self, config: SearchConfig, workdir, shard_index: int = 0, num_shards: int = 1,
               plan: engine.ChunkPlan = engine.ChunkPlan(), progress_stream=None,
               log=print, poll_seconds: float = 5.0):
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
    store = engine.run(specs, self.workdir, sweep_name=self.name,
                       fingerprint=self.config.fingerprint(), plan=self.plan,
                       shard_index=self.shard_index, num_shards=self.num_shards,
                       progress_stream=self.progress_stream)
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
      batch = sum(len(t) for _, t in pending) * len(_settings(config))
      if batch < 256 and index < len(levels) - 1:
        continue
      specs = phase1_specs(config, [t for _, ts in pending for t in ts])
      self._train(specs)
      candidates = best_by_candidate(self._rows_for(specs),
                                     lambda r: (r["d1"], r["d2"], r["d3"]))
      group, pending = pending, []
      reaching = []
      for count, triples in group:
        accuracies = [candidates[t].best_accuracy for t in triples]
        reached = [t for t in triples if candidates[t].best_accuracy >= config.target]
        table.append({"dense_params": count, "triples": len(triples),
                      "best_accuracy": float(np.nanmax(accuracies)), "reached": len(reached)})
        for best in sorted(reached, key=lambda t: (-candidates[t].best_accuracy, t)):
          reaching.append({"widths": best, "dense_params": count,
                           "accuracy": candidates[best].best_accuracy,
                           "row": _public_row(candidates[best].best_row)})
      self.log(f"phase 1: dense params <= {group[-1][0]}: best accuracy "
               f"{max(r['best_accuracy'] for r in table[-len(group):]):.4f}")
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
      table.append({"hidden_nnz": level, "weight_nnz": weight_nnz,
                    "model_nnz": weight_nnz + sum(widths) + 1, "masks": len(candidates),
                    "runs": len(specs), "best_accuracy": best.best_accuracy,
                    "best_mask_config": best.label, "reached": len(reached)})
      self.log(f"phase 2: weight nnz {weight_nnz}: {len(candidates)} masks, best accuracy "
               f"{best.best_accuracy:.4f} ({best.label}), {len(reached)} reach {config.target:g}")
      if reached and answer is None:
        winner = sorted(reached, key=lambda c: (-c.best_accuracy, parse_mask_config(c.label)))[0]
        self._winner_row = winner.best_row  # with its weights, for save_model
        answer = {"widths": tuple(widths), "mask_config": winner.label,
                  "accuracy": winner.best_accuracy, "weight_nnz": winner.best_row["weight_nnz"],
                  "model_nnz": winner.best_row["model_nnz"],
                  "row": _public_row(winner.best_row)}
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
      if (phase2.get("mask_config") or not config.phase1_fallback
          or len(attempts) > config.max_fallbacks):
        break
      following = next(self._phase1_walk, None)
      widths = following and following["widths"]
      if widths is not None:
        self.log(f"phase 2 found no mask inside {attempts[-1]['widths']}; phase-1 fallback "
                 f"to the next reaching widths {widths}")
    result["phase2_attempts"] = attempts
    if self.shard_index == 0:
      (self.workdir / "search.json").write_text(json.dumps(result, indent=2, default=_jsonable))
      if result.get("phase2", {}).get("mask_config"):
        result["model_path"] = str(save_model(self.config, result["phase2"], self._winner_row,
                                              self.workdir))
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
  for prefix, tree in (("init", mlp.pad_params(initial, config.width)),
                       ("trained", store_ops.row_params(row, config.width)),
                       ("mask", store_ops.row_masks(row))):
    arrays.update({f"{prefix}_{k}": v for k, v in mlp.to_numpy_dict(tree).items()})
  arrays = {k: (v.astype(bool) if k.startswith("mask_") else v) for k, v in arrays.items()}
  path = Path(workdir) / f"sparsest_{config.target:g}.npz"
  np.savez(path, **arrays, accuracy=row["accuracy"], seed=row["seed"], lr=row["lr"],
           schedule=row["schedule"], mask_config=row["mask_config"], exp_id=row["exp_id"],
           weight_nnz=answer["weight_nnz"], model_nnz=answer["model_nnz"])
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
  lines.append(f"phase 1: widths {tuple(phase1['widths'])}"
               + (f" (dense params {phase1.get('dense_params')}, best accuracy "
                  f"{phase1.get('accuracy', float('nan')):.4f})" if not phase1.get("given") else
                  " (given)"))
  if result["config"].get("phase1_only"):
    lines.append("phase 2 not run (phase1_only)")
    return "\n".join(lines)
  for attempt in result.get("phase2_attempts", [])[:-1]:
    lines.append(f"phase 2 inside {tuple(attempt['widths'])}: no mask reaches {target:g}; "
                 "phase-1 fallback to the next reaching widths")
  phase2 = result.get("phase2", {})
  lines.append(f"phase 2 levels (widths {tuple(phase2.get('widths') or phase1['widths'])}):")
  lines.append(f"  {'weight_nnz':>10} {'model_nnz':>9} {'masks':>6} {'runs':>6} "
               f"{'best_acc':>9} {'reached':>7}  best mask")
  for level in phase2.get("levels", []):
    lines.append(f"  {level['weight_nnz']:>10} {level['model_nnz']:>9} {level['masks']:>6} "
                 f"{level['runs']:>6} {level['best_accuracy']:>9.4f} {level['reached']:>7}"
                 f"  {level['best_mask_config']}")
  if phase2.get("mask_config"):
    lines.append(f"sparsest model reaching {target:g}: widths {tuple(phase2['widths'])}, masks "
                 f"{phase2['mask_config']}, accuracy {phase2['accuracy']:.4f}, weight nnz "
                 f"{phase2['weight_nnz']}, model nnz {phase2['model_nnz']}")
  else:
    lines.append(f"phase 2: no mask reaches {target:g}")
  return "\n".join(lines)
