"""The report's seed-robust view: success probabilities with exact intervals, and the gap restated.

A single run's accuracy is a coin with a heavy tail, so "the sparsest run that
reached the target" (the paper's gap, §G.4) rewards the luckiest seed. Here
every configuration is judged by its runs that differ only by seed
(search/stats.py): the fraction reaching the target with its exact 95%
(Clopper-Pearson) interval.

- Pruning: a *curve* is a method at a starting width (and its family and
  init); its points are budgets (the runs' target_nnz). At each budget every
  setting (lr, schedule and the other configuration columns) has k of n seeds
  reaching the target; the point is the best setting (highest lower bound).
  The method's robust minimum at that width is the fewest nonzeros whose best
  setting is above q (lower bound >= q).
- Search: candidates are phase-1 width triples and phase-2 masks, settings
  (lr, schedule); the robust frontier is, per weight nnz, the most convincing
  candidate, and the search's robust minimum the sparsest candidate above q.
- The gap table puts each method's robust minimum beside the search's, and the
  paper's lucky-seed minima (analysis.method_minimum, analysis.search_minimum)
  next to them. The figure draws success probability against nonzeros per
  method with interval bands, and the search's robust frontier on the same axes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from cubist import masks as mask_ops
from search import stats
from search.report import analysis, plots
from search.report.page import absent, collapsed, csv_link, image, paragraph, table, write_csv

HEADING = "8. Seed-robust gap: success probabilities"
CURVE_COLUMNS = ("method", "family", "init", "width")
# Columns that tell settings of one pruning candidate apart (everything of the
# configuration but the curve and the budget).
PRUNING_SETTING_COLUMNS = tuple(
  c for c in analysis.CONFIG_COLUMNS if c not in CURVE_COLUMNS + ("target_nnz",)
)


def _pruning_candidate(row: dict) -> tuple:
  return tuple(row.get(c) for c in CURVE_COLUMNS) + (int(row["target_nnz"]),)


def _pruning_setting(row: dict) -> tuple:
  return tuple(row.get(c) for c in PRUNING_SETTING_COLUMNS)


def _setting_label(setting: tuple, columns) -> str:
  fields = dict(zip(columns, setting))
  return f"lr {fields['lr']:g}, {fields['schedule']}"


def _point(estimate: stats.CandidateEstimate, columns) -> dict:
  """The facts of a candidate's best setting, for tables, CSVs and plots."""
  return {
    "setting": _setting_label(estimate.best.setting, columns),
    "settings": len(estimate.settings),
    **stats.interval_record(estimate.best.interval),
    "decision": estimate.decision,
  }


# --- Analysis (pure functions over rows) ------------------------------------------------


def method_success_curves(
  rows, target: float, q: float = stats.DEFAULT_Q, confidence: float = stats.DEFAULT_CONFIDENCE
) -> list[dict]:
  """Per pruning method, family, init, width and budget: its best setting's success probability.

  rows: store rows (all statuses: a diverged or failed run is a failed
  trial). Runs without a target_nnz (strength-driven VD, L0) have no budget
  and are left out. Returns dicts with the curve columns, "budget", the
  best setting's label, successes, trials, estimate, lower, upper and the
  candidate's decision against q, in report order.
  """
  pruning = [r for r in rows if analysis.is_pruning(r) and r.get("target_nnz") is not None]
  counts = stats.success_counts(pruning, _pruning_candidate, _pruning_setting, target)
  order = {m: i for i, m in enumerate(analysis.method_order({r["method"] for r in pruning}))}
  points = [
    {
      "target": target,
      **dict(zip(CURVE_COLUMNS, candidate[:-1])),
      "budget": candidate[-1],
      **_point(estimate, PRUNING_SETTING_COLUMNS),
    }
    for candidate, estimate in stats.estimate_all(counts, q, confidence).items()
  ]
  return sorted(
    points,
    key=lambda p: (order[p["method"]], p["family"], str(p["init"]), p["width"], p["budget"]),
  )


def curve_key(point: dict) -> tuple:
  return tuple(point[c] for c in CURVE_COLUMNS)


def robust_minima(points) -> dict[tuple, dict | None]:
  """curve key -> its fewest-nonzeros point above q (None when no budget is)."""
  minima = {}
  for point in points:
    key = curve_key(point)
    minima.setdefault(key, None)
    if point["decision"] == stats.ABOVE and (
      minima[key] is None or point["budget"] < minima[key]["budget"]
    ):
      minima[key] = point
  return minima


def _search_candidate(row: dict) -> tuple:
  return (row["family"], row["d1"], row["d2"], row["d3"], row.get("mask_config"))


def _search_setting(row: dict) -> tuple:
  return (row["lr"], row["schedule"])


def _candidate_weight_nnz(candidate: tuple, rows_nnz: dict) -> int:
  """Weights a search candidate's mask allows: a phase-2 mask's target_nnz, a phase-1
  triple's dense weight count."""
  family, d1, d2, d3, _ = candidate
  if family == "phase2" and rows_nnz.get(candidate) is not None:
    return int(rows_nnz[candidate])
  return mask_ops.dense_weight_count((d1, d2, d3))


def search_success_frontier(
  rows, target: float, q: float = stats.DEFAULT_Q, confidence: float = stats.DEFAULT_CONFIDENCE
) -> list[dict]:
  """Per weight nnz of the search's candidates: the most convincing one's best setting.

  Candidates are phase-1 triples and phase-2 masks (rows of other families
  are ignored), settings (lr, schedule). Returns ascending weight nnz:
  {weight_nnz, candidate (label), family, candidates (at that nnz), setting,
  successes, trials, estimate, lower, upper, decision}.
  """
  search = [r for r in rows if analysis.is_search(r)]
  counts = stats.success_counts(search, _search_candidate, _search_setting, target)
  nnz_of_row = {_search_candidate(r): r.get("target_nnz") for r in search}
  by_nnz = defaultdict(list)
  for candidate, estimate in stats.estimate_all(counts, q, confidence).items():
    by_nnz[_candidate_weight_nnz(candidate, nnz_of_row)].append(estimate)
  frontier = []
  for nnz in sorted(by_nnz):
    best = stats.most_convincing(by_nnz[nnz], lambda c: tuple(str(v) for v in c))
    family, d1, d2, d3, mask_config = best.candidate
    frontier.append(
      {
        "weight_nnz": nnz,
        "candidate": f"({d1}, {d2}, {d3})" + (f" {mask_config}" if mask_config else ""),
        "family": family,
        "candidates": len(by_nnz[nnz]),
        **_point(best, ("lr", "schedule")),
      }
    )
  return frontier


def search_robust_minimum(frontier) -> dict | None:
  """The sparsest frontier point above q, or None."""
  return next((p for p in frontier if p["decision"] == stats.ABOVE), None)


def robust_gap_table(
  rows,
  search_rows_by_target: dict,
  targets,
  q: float = stats.DEFAULT_Q,
  confidence: float = stats.DEFAULT_CONFIDENCE,
) -> list[dict]:
  """Per target and pruning curve: its robust minimum beside the search's, and the lucky ones.

  search_rows_by_target: target -> the rows of the searches for it. A target
  with a search starts with a "combinatorial" row. Ratios divide by the
  search's minimum of the same kind (nan where either is missing). robust_*
  columns describe the best setting at the robust minimum (nothing when no
  budget is above q: then "robust_nnz" is inf if the curve has points).
  """
  out = []
  for target in targets:
    search_rows = search_rows_by_target.get(target) or []
    frontier = search_success_frontier(search_rows, target, q, confidence)
    robust_search = search_robust_minimum(frontier)
    lucky_search = analysis.search_minimum(search_rows, target) if search_rows else None
    search_robust_nnz = robust_search["weight_nnz"] if robust_search else math.nan
    search_lucky_nnz = lucky_search["weight_nnz"] if lucky_search else math.nan
    if search_rows:
      out.append(
        {
          "target": target,
          "method": analysis.SEARCH_METHOD,
          **_robust_fields(robust_search, "weight_nnz", bool(frontier)),
          "search_robust_nnz": search_robust_nnz,
          "ratio_robust": 1.0 if robust_search else math.nan,
          "lucky_nnz": search_lucky_nnz,
          "search_lucky_nnz": search_lucky_nnz,
          "ratio_lucky": 1.0 if lucky_search else math.nan,
        }
      )
    points = method_success_curves(rows, target, q, confidence)
    curves = defaultdict(list)
    for row in rows:
      if analysis.is_pruning(row):
        curves[tuple(row.get(c) for c in CURVE_COLUMNS)].append(row)
    for key, best in robust_minima(points).items():
      lucky = analysis.method_minimum(curves[key], target)["best"]
      robust_nnz = best["budget"] if best else math.inf
      lucky_nnz = lucky["weight_nnz"] if lucky else math.nan
      out.append(
        {
          "target": target,
          **dict(zip(CURVE_COLUMNS, key)),
          **_robust_fields(best, "budget", True),
          "search_robust_nnz": search_robust_nnz,
          "ratio_robust": robust_nnz / search_robust_nnz,
          "lucky_nnz": lucky_nnz,
          "search_lucky_nnz": search_lucky_nnz,
          "ratio_lucky": lucky_nnz / search_lucky_nnz,
        }
      )
  return out


def _robust_fields(point: dict | None, nnz_key: str, has_points: bool) -> dict:
  if point is None:
    return {"robust_nnz": math.inf if has_points else math.nan}
  return {
    "robust_nnz": point[nnz_key],
    "robust_setting": point["setting"],
    "robust_successes": point["successes"],
    "robust_trials": point["trials"],
    "robust_estimate": point["estimate"],
    "robust_lower": point["lower"],
    "robust_upper": point["upper"],
  }


# --- The figure ---------------------------------------------------------------------------


def success_plot(points, frontier, q: float, target: float, path) -> Path:
  """Success probability against nonzeros: one panel per starting width.

  Each pruning curve (method at that width) is its best setting's estimate
  per budget with the interval as a band; the search's robust frontier
  (black, grey band) is on every panel; the dashed line is q; a star marks
  each curve's robust minimum (its sparsest point above q).
  """
  widths = sorted({p["width"] for p in points}) or [None]
  curves = defaultdict(list)
  for point in points:
    curves[curve_key(point)].append(point)
  colors = plots.method_colors(list(dict.fromkeys(p["method"] for p in points)))
  families = defaultdict(set)
  for method, family, _, _ in curves:
    families[method].add(family)
  columns = min(len(widths), 3)
  rows = -(-len(widths) // columns)
  figure = Figure(figsize=(4.6 * columns, 3.4 * rows))
  axes = figure.subplots(rows, columns, squeeze=False).ravel()
  for ax, width in zip(axes, widths):
    if frontier:
      _band(ax, [p["weight_nnz"] for p in frontier], frontier, plots.SEARCH_COLOR, "search")
    for (method, family, init, curve_width), members in curves.items():
      if curve_width != width:
        continue
      label = method + (f" [{family}]" if len(families[method]) > 1 else "")
      _band(ax, [p["budget"] for p in members], members, colors[method], label)
    ax.axhline(q, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(10, subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"width {width}" if width is not None else "combinatorial search", fontsize=9)
    ax.set_xlabel("nonzero weights (budget)", fontsize=8)
    ax.set_ylabel(f"P(accuracy >= {100 * target:g}%)", fontsize=8)
    ax.tick_params(labelsize=7)
    plots.legend_below(ax)
  for ax in axes[len(widths) :]:
    ax.set_visible(False)
  figure.suptitle(
    f"Success probability at {100 * target:g}% with exact 95% intervals (q = {q:g} dashed)",
    fontsize=9,
  )
  path = Path(path)
  figure.savefig(path, dpi=plots.DPI, bbox_inches="tight")
  return path


def _band(ax, xs, points, color, label) -> None:
  """A curve's estimates as a line, its interval as a band, its robust minimum as a star."""
  ax.fill_between(
    xs,
    [p["lower"] for p in points],
    [p["upper"] for p in points],
    color=color,
    alpha=0.15,
    linewidth=0,
  )
  ax.plot(xs, [p["estimate"] for p in points], color=color, marker="o", markersize=3, label=label)
  above = [(x, p) for x, p in zip(xs, points) if p["decision"] == stats.ABOVE]
  if above:
    x, point = above[0]
    ax.scatter([x], [point["estimate"]], marker="*", s=90, color=color, zorder=5)


# --- The section -----------------------------------------------------------------------------


def robust_section(rows, searches, targets, out: Path):
  """The seed-robust gap: per target, pruning success curves, the search's robust
  frontier and the gap table with its lucky-seed counterpart."""
  q, confidence = _q_and_confidence(searches)
  search_rows = {
    t: [r for s in searches if s["target"] == t for r in s["rows"] if analysis.is_search(r)]
    for t in targets
  }
  has_pruning = any(analysis.is_pruning(r) and r.get("target_nnz") is not None for r in rows)
  if not has_pruning and not any(search_rows.values()):
    return "robust", HEADING, absent("No pruning runs with a budget and no combinatorial search.")
  gap = robust_gap_table(rows, search_rows, targets, q, confidence)
  body = [
    paragraph(
      f"Each configuration judged by its runs that differ only by seed: the fraction reaching "
      f"the target with its exact (Clopper-Pearson) {100 * confidence:g}% interval. Robust "
      f"nonzeros: the fewest (a method's budget, the search's weight nnz) whose best setting "
      f"reaches the target with probability >= q = {q:g} at the interval's lower bound; "
      "\u221e when none does. Lucky nonzeros: the sparsest single run that reached it (the "
      "paper's rule, the gap table above). A setting with one seed can never be above q."
    )
  ]
  curves_csv, frontier_csv = [], []
  for target in targets:
    points = method_success_curves(rows, target, q, confidence)
    frontier = search_success_frontier(search_rows[target], target, q, confidence)
    if not points and not frontier:
      continue
    name = f"success_vs_nnz_{100 * target:g}.png"
    success_plot(points, frontier, q, target, out / name)
    members = [r for r in gap if r["target"] == target]
    body.append(f"<h3>Target {100 * target:g}%</h3>")
    body.append(
      image(
        out,
        name,
        f"Success probability of reaching {100 * target:g}% against nonzero weights, per "
        "method and starting width with 95% interval bands, and the combinatorial "
        "search's robust frontier in black",
        1000,
      )
    )
    body.append(
      table(
        members,
        [
          ("method", "method"),
          ("family", "family"),
          ("width", "width"),
          ("robust_nnz", "robust nnz"),
          ("robust_setting", "its setting"),
          ("robust_successes", "k"),
          ("robust_trials", "n"),
          ("robust_lower", "lower"),
          ("robust_upper", "upper"),
          ("search_robust_nnz", "search robust nnz"),
          ("ratio_robust", "robust / search"),
          ("lucky_nnz", "lucky nnz"),
          ("search_lucky_nnz", "search lucky nnz"),
          ("ratio_lucky", "lucky / search"),
        ],
      )
    )
    if not frontier:
      body.append(absent(f"No combinatorial search for {100 * target:g}%: no robust frontier."))
    curves_csv += points
    frontier_csv += [{"target": target, **p} for p in frontier]
  write_csv(out / "robust_gap.csv", gap)
  write_csv(out / "success_curves.csv", curves_csv)
  write_csv(out / "search_success.csv", frontier_csv)
  if frontier_csv:
    body.append(
      collapsed(
        "search robust frontier",
        table(
          frontier_csv,
          [
            ("target", "target"),
            ("weight_nnz", "weight nnz"),
            ("candidate", "most convincing candidate"),
            ("candidates", "candidates"),
            ("setting", "setting"),
            ("successes", "k"),
            ("trials", "n"),
            ("lower", "lower"),
            ("upper", "upper"),
          ],
        ),
      )
    )
  body.append(
    csv_link("robust_gap.csv") + csv_link("success_curves.csv") + csv_link("search_success.csv")
  )
  return "robust", HEADING, "".join(body)


def _q_and_confidence(searches) -> tuple[float, float]:
  """q and the confidence level of the first robust search.json, else the defaults."""
  for search in searches:
    config = (search.get("search") or {}).get("config", {})
    if config.get("rule") == "robust":
      return float(config["q"]), float(config["confidence"])
  return stats.DEFAULT_Q, stats.DEFAULT_CONFIDENCE
