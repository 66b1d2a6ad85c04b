"""What the report computes from result rows: pure functions over lists of row dicts.

Rows carry the store's RUN_COLUMNS (cubist.store). Every NNZ here is a row's
*measured* count (weight_nnz, model_nnz), never its target (METHODS §E.10,
§F.6). Only rows with status "ok" enter frontiers and minima; the tables count
the others.

- Pareto frontier (§F.6): the best accuracy at <= nnz, as the runs where it improves.
- Combinatorial-search levels and minimum (§D.6): per weight-nnz level the best
  phase-2 accuracy; the sparsest combinatorial run reaching a target.
- Gap table (§G.4): per target and method, the sparsest run reaching it (best)
  and the median over repeats of each repeat's sparsest reaching run, against
  the search's minimum.
- Overparameterisation (§G.2), connectivity (§G.1) and State-of-Sparsity
  retraining summaries (§F.5).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from search.pruning import registry
from search.pruning.registry import PAPER_METHODS, RETRAIN_METHODS, SOS_METHODS

SEARCH_METHOD = "combinatorial"  # the search's label in tables (its runs train "plain")
SEARCH_FAMILIES = ("phase1", "phase2")
RETRAIN_FAMILY = "retrain"
V1_PLAIN = ("structured", "masked", "combinatorial")  # fixed-mask labels of schema-v1 stores
# Spec fields that define a configuration: rows equal on all of them are repeats
# (they differ only in their seed and repeat index).
CONFIG_COLUMNS = (
  "family",
  "method",
  "width",
  "d1",
  "d2",
  "d3",
  "lr",
  "schedule",
  "epochs",
  "batch_size",
  "init",
  "shared_order",
  "data_order",
  "target_nnz",
  "mask_config",
  "source_id",
  "source_method",
  "count_mode",
  "strength",
  "threshold",
  "method_options",
)


def is_ok(row: dict) -> bool:
  """A finished run with metrics: status ok, accuracy and weight nnz present."""
  return (
    row.get("status") == "ok"
    and row.get("accuracy") is not None
    and row.get("weight_nnz") is not None
    and not math.isnan(row["accuracy"])
  )


def is_search(row: dict) -> bool:
  return row.get("family") in SEARCH_FAMILIES


def is_pruning(row: dict) -> bool:
  """A run of a pruning method, built in or a user's (not fixed-mask training, a
  search or a retraining run)."""
  return (
    not is_search(row)
    and row.get("family") != RETRAIN_FAMILY
    and not registry.is_plain(row.get("method"))
    and row.get("method") not in V1_PLAIN
  )


def method_order(names) -> list[str]:
  """Method names in report order: paper (1), State of Sparsity, retraining, others."""
  names = set(names)
  known = [n for n in PAPER_METHODS + SOS_METHODS + RETRAIN_METHODS if n in names]
  return known + sorted(names - set(known))


def rows_by_method(rows, pruning_only: bool = False, ok_only: bool = True) -> dict[str, list[dict]]:
  """Non-search rows grouped by method (report order); only pruning runs if `pruning_only`."""
  groups = defaultdict(list)
  for row in rows:
    if is_search(row) or (pruning_only and not is_pruning(row)):
      continue
    if ok_only and not is_ok(row):
      continue
    groups[row["method"]].append(row)
  return {name: groups[name] for name in method_order(groups)}


def point(row: dict, **extra) -> dict:
  """The plotted/tabulated facts of one run."""
  return {
    "weight_nnz": int(row["weight_nnz"]),
    "model_nnz": row.get("model_nnz"),
    "accuracy": float(row["accuracy"]),
    "exp_id": row["exp_id"],
    **extra,
  }


def pareto_frontier(rows, nnz_key: str = "weight_nnz") -> list[dict]:
  """Best accuracy at <= nnz, ascending nnz: the runs at which the best improves.

  Among runs of equal nnz the most accurate counts (ties: smallest exp_id).
  Each point is `point(row)` plus "nnz" (the value of `nnz_key`).
  """
  ordered = sorted(
    (r for r in rows if is_ok(r) and r.get(nnz_key) is not None),
    key=lambda r: (r[nnz_key], -r["accuracy"], r["exp_id"]),
  )
  frontier, best = [], -math.inf
  for row in ordered:
    if row["accuracy"] > best:
      best = row["accuracy"]
      frontier.append(point(row, nnz=int(row[nnz_key])))
  return frontier


def frontier_at(frontier: list[dict], nnz: float) -> float:
  """The frontier's best accuracy at <= nnz (nan if no run is that sparse)."""
  values = [p["accuracy"] for p in frontier if p["nnz"] <= nnz]
  return max(values) if values else math.nan


def search_levels(rows) -> list[dict]:
  """Per phase-2 weight-nnz level: the best accuracy over its masks and settings.

  Returns [{weight_nnz, model_nnz, accuracy, runs, exp_id, mask_config}],
  ascending weight nnz (the combinatorial-search frontier of the page).
  """
  levels = defaultdict(list)
  for row in rows:
    if row.get("family") == "phase2" and is_ok(row):
      levels[int(row["weight_nnz"])].append(row)
  out = []
  for nnz in sorted(levels):
    best = min(levels[nnz], key=lambda r: (-r["accuracy"], r["exp_id"]))
    out.append(point(best, runs=len(levels[nnz]), mask_config=best.get("mask_config")))
  return out


def search_minimum(rows, target: float) -> dict | None:
  """The sparsest combinatorial run (phase 1 or 2) reaching `target`, or None.

  Sparsest by weight nnz, then model nnz, then highest accuracy. Adds "family"
  (phase1: a structured network; phase2: an unstructured mask).
  """
  reaching = [r for r in rows if is_search(r) and is_ok(r) and r["accuracy"] >= target]
  if not reaching:
    return None
  best = min(reaching, key=lambda r: (r["weight_nnz"], r["model_nnz"], -r["accuracy"], r["exp_id"]))
  return point(best, family=best["family"], mask_config=best.get("mask_config"))


def config_key(row: dict) -> tuple:
  return tuple(row.get(column) for column in CONFIG_COLUMNS)


def repeat_indices(rows) -> dict[str, int]:
  """exp_id -> repeat index: the store's `repeat` column.

  Schema-v1 stores kept no repeat number: there the rank of the run's seed
  among its configuration's runs stands in for it.
  """
  indices = {r["exp_id"]: int(r["repeat"]) for r in rows if r.get("repeat") is not None}
  groups = defaultdict(list)
  for row in rows:
    if row.get("repeat") is None:
      groups[config_key(row)].append(row)
  for members in groups.values():
    for rank, row in enumerate(sorted(members, key=lambda r: (r["seed"], r["exp_id"]))):
      indices[row["exp_id"]] = rank
  return indices


def method_minimum(rows, target: float) -> dict:
  """A method's sparsest runs reaching `target`.

  best: the sparsest reaching run (weight nnz, then model nnz, then accuracy)
  or None. median_weight_nnz: the median over repeats r of the sparsest
  reaching run of replica r (a replica that never reaches counts as infinite,
  so the median is inf when most replicas fail). repeats: the number of replicas.
  """
  ok = [r for r in rows if is_ok(r)]
  reaching = [r for r in ok if r["accuracy"] >= target]
  best = (
    min(reaching, key=lambda r: (r["weight_nnz"], r["model_nnz"] or 0, -r["accuracy"], r["exp_id"]))
    if reaching
    else None
  )
  index = repeat_indices(ok)
  repeats = max(index.values()) + 1 if index else 0
  per_repeat = [math.inf] * repeats
  for row in reaching:
    r = index[row["exp_id"]]
    per_repeat[r] = min(per_repeat[r], row["weight_nnz"])
  median = float(np.median(per_repeat)) if per_repeat else math.nan
  return {
    "runs": len(rows),
    "ok": len(ok),
    "reaching": len(reaching),
    "best": point(best) if best else None,
    "median_weight_nnz": median,
    "repeats": repeats,
  }


def gap_table(rows, targets, search_minima: dict) -> list[dict]:
  """Per target and non-search method: its minimum nnz reaching the target vs the search's.

  A target with a search minimum starts with a "combinatorial" row (its own
  minimum, ratio 1). search_minima: target -> `search_minimum` dict (or None when no search ran
  for that target / none of its runs reached it). Ratios are method / search
  weight nnz (nan where either is missing).
  """
  table = []
  groups = rows_by_method(rows, ok_only=False)
  for target in targets:
    search = search_minima.get(target)
    if search:
      table.append(
        {
          "target": target,
          "method": SEARCH_METHOD,
          "runs": math.nan,
          "reaching": math.nan,
          "best_weight_nnz": search["weight_nnz"],
          "best_model_nnz": search["model_nnz"],
          "best_accuracy": search["accuracy"],
          "best_exp_id": search["exp_id"],
          "median_weight_nnz": math.nan,
          "repeats": math.nan,
          "search_weight_nnz": search["weight_nnz"],
          "search_model_nnz": search["model_nnz"],
          "ratio_best": 1.0,
          "ratio_median": math.nan,
        }
      )
    for method, members in groups.items():
      found = method_minimum(members, target)
      best = found["best"]
      search_nnz = search["weight_nnz"] if search else math.nan
      best_nnz = best["weight_nnz"] if best else math.nan
      table.append(
        {
          "target": target,
          "method": method,
          "runs": found["runs"],
          "reaching": found["reaching"],
          "best_weight_nnz": best_nnz,
          "best_model_nnz": best["model_nnz"] if best else math.nan,
          "best_accuracy": best["accuracy"] if best else math.nan,
          "best_exp_id": best["exp_id"] if best else "",
          "median_weight_nnz": found["median_weight_nnz"],
          "repeats": found["repeats"],
          "search_weight_nnz": search_nnz,
          "search_model_nnz": search["model_nnz"] if search else math.nan,
          "ratio_best": best_nnz / search_nnz if search else math.nan,
          "ratio_median": found["median_weight_nnz"] / search_nnz if search else math.nan,
        }
      )
  return table


def choose_f_values(rows, count: int = 4) -> list[int]:
  """A few nnz budgets f for the overparameterisation panels.

  The targets of the pruning runs (spread evenly when more than `count`), or
  quantiles of the measured weight nnz when no run has a target.
  """
  targets = sorted({int(r["target_nnz"]) for r in rows if r.get("target_nnz") is not None})
  if not targets:
    targets = sorted({int(r["weight_nnz"]) for r in rows if r.get("weight_nnz") is not None})
  if len(targets) <= count:
    return targets
  picks = np.linspace(0, len(targets) - 1, count).round().astype(int)
  return [targets[i] for i in sorted(set(picks))]


def overparam_table(rows, f_values) -> list[dict]:
  """Per method, width and f: the best accuracy of pruning runs with weight nnz <= f.

  Pruning family only (§G.2); widths without such a run are left out.
  """
  table = []
  for method, members in rows_by_method(rows, pruning_only=True).items():
    by_width = defaultdict(list)
    for row in members:
      by_width[int(row["width"])].append(row)
    for f in f_values:
      for width in sorted(by_width):
        within = [r for r in by_width[width] if r["weight_nnz"] <= f]
        if not within:
          continue
        best = min(within, key=lambda r: (-r["accuracy"], r["weight_nnz"], r["exp_id"]))
        table.append(
          {
            "method": method,
            "f": int(f),
            "width": width,
            "best_accuracy": best["accuracy"],
            "weight_nnz": best["weight_nnz"],
            "runs": len(within),
            "exp_id": best["exp_id"],
          }
        )
  return table


def fewest_by_width(rows, targets, search_minima: dict) -> list[dict]:
  """Per target, pruning method and starting width: the fewest weights (and parameters) of
  a run reaching the target, and its ratio to the search's minimum (§G.2, §G.3).

  search_minima: target -> `search_minimum` dict or None. Widths where no run of a
  method reaches the target get best_weight_nnz nan (they still count their runs).
  """
  table = []
  for target in targets:
    search = search_minima.get(target)
    for method, members in rows_by_method(rows, pruning_only=True, ok_only=False).items():
      by_width = defaultdict(list)
      for row in members:
        by_width[int(row["width"])].append(row)
      for width in sorted(by_width):
        ok = [r for r in by_width[width] if is_ok(r)]
        reaching = [r for r in ok if r["accuracy"] >= target]
        best = (
          min(
            reaching,
            key=lambda r: (r["weight_nnz"], r["model_nnz"] or 0, -r["accuracy"], r["exp_id"]),
          )
          if reaching
          else None
        )
        nnz = best["weight_nnz"] if best else math.nan
        table.append(
          {
            "target": target,
            "method": method,
            "width": width,
            "runs": len(by_width[width]),
            "reaching": len(reaching),
            "best_weight_nnz": nnz,
            "best_model_nnz": best["model_nnz"] if best else math.nan,
            "best_accuracy": best["accuracy"] if best else math.nan,
            "search_weight_nnz": search["weight_nnz"] if search else math.nan,
            "ratio": nnz / search["weight_nnz"] if search and best else math.nan,
            "exp_id": best["exp_id"] if best else "",
          }
        )
  return table


def disconnected_fraction(row: dict) -> float:
  """1 - effective / weight nnz: the share of a run's weights on no input-output path."""
  nnz, effective = row.get("weight_nnz"), row.get("effective_weight_nnz")
  if not nnz or effective is None:
    return math.nan
  return 1.0 - effective / nnz


def connectivity_table(rows) -> list[dict]:
  """Per method (combinatorial search included) and weight nnz: mean disconnected
  fraction and dead units over the ok runs."""
  groups = defaultdict(list)
  for row in rows:
    if is_ok(row):
      method = SEARCH_METHOD if is_search(row) else row["method"]
      groups[(method, int(row["weight_nnz"]))].append(row)
  order = {m: i for i, m in enumerate(method_order({m for m, _ in groups}))}
  table = []
  for method, nnz in sorted(groups, key=lambda k: (order[k[0]], k[1])):
    members = groups[(method, nnz)]
    fractions = [disconnected_fraction(r) for r in members]
    dead = [r["dead_units"] for r in members if r.get("dead_units") is not None]
    table.append(
      {
        "method": method,
        "weight_nnz": nnz,
        "runs": len(members),
        "disconnected_fraction": float(np.nanmean(fractions))
        if not all(map(math.isnan, fractions))
        else math.nan,
        "dead_units": float(np.mean(dead)) if dead else math.nan,
        "max_dead_units": max(dead) if dead else math.nan,
      }
    )
  return table


def connectivity_summary(rows) -> list[dict]:
  """Per method: runs, mean disconnected fraction, share of runs with any
  disconnected weight, mean dead units and share of runs with a dead unit."""
  groups = defaultdict(list)
  for row in rows:
    if is_ok(row):
      groups[SEARCH_METHOD if is_search(row) else row["method"]].append(row)
  table = []
  for method in method_order(groups):
    members = groups[method]
    fractions = np.array([disconnected_fraction(r) for r in members], float)
    dead = np.array([r["dead_units"] for r in members if r.get("dead_units") is not None], float)
    valid = fractions[~np.isnan(fractions)]
    table.append(
      {
        "method": method,
        "runs": len(members),
        "mean_disconnected_fraction": float(valid.mean()) if valid.size else math.nan,
        "runs_with_disconnected": float((valid > 0).mean()) if valid.size else math.nan,
        "mean_dead_units": float(dead.mean()) if dead.size else math.nan,
        "runs_with_dead_units": float((dead > 0).mean()) if dead.size else math.nan,
      }
    )
  return table


def retrain_summary(rows) -> list[dict]:
  """§F.5 retraining runs: per (kind, source method, weight nnz) the mean and spread
  of accuracy, and the mean accuracy of their source runs where those are present
  (`source_id`, `source_method`; schema-v1 stores kept them in `mask_config`, `extra`)."""
  by_id = {r["exp_id"]: r for r in rows}
  groups = defaultdict(list)
  for row in rows:
    if row.get("family") == RETRAIN_FAMILY and is_ok(row):
      source = row.get("source_method") or row.get("extra") or ""
      groups[(row["method"], source, int(row["weight_nnz"]))].append(row)
  order = {m: i for i, m in enumerate(method_order({k[0] for k in groups}))}
  table = []
  for key in sorted(groups, key=lambda k: (order[k[0]], k[1], k[2])):
    kind, source, nnz = key
    accuracy = np.array([r["accuracy"] for r in groups[key]], float)
    ids = [r.get("source_id") or r.get("mask_config") for r in groups[key]]
    sources = [by_id[i] for i in ids if i in by_id and is_ok(by_id[i])]
    table.append(
      {
        "kind": kind,
        "source_method": source,
        "weight_nnz": nnz,
        "runs": len(accuracy),
        "mean_accuracy": float(accuracy.mean()),
        "std_accuracy": float(accuracy.std()),
        "min_accuracy": float(accuracy.min()),
        "max_accuracy": float(accuracy.max()),
        "source_mean_accuracy": float(np.mean([s["accuracy"] for s in sources]))
        if sources
        else math.nan,
      }
    )
  return table


def pick_models(rows, reference_nnz: int | None, target: float) -> dict[str, dict]:
  """One pruning run per method to draw (decision regions, network diagram).

  With a reference nnz (the search's sparsest model): the runs at the smallest
  weight nnz >= reference, the most accurate of them. Without: the method's
  sparsest run reaching `target`, else its most accurate run.
  """
  picks = {}
  for method, members in rows_by_method(rows, pruning_only=True).items():
    if reference_nnz is not None:
      above = [r for r in members if r["weight_nnz"] >= reference_nnz]
      if not above:
        continue
      level = min(r["weight_nnz"] for r in above)
      candidates = [r for r in above if r["weight_nnz"] == level]
      picks[method] = min(candidates, key=lambda r: (-r["accuracy"], r["exp_id"]))
      continue
    reaching = [r for r in members if r["accuracy"] >= target]
    if reaching:
      picks[method] = min(reaching, key=lambda r: (r["weight_nnz"], -r["accuracy"], r["exp_id"]))
    else:
      picks[method] = min(members, key=lambda r: (-r["accuracy"], r["weight_nnz"], r["exp_id"]))
  return picks
