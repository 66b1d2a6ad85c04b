"""The report's figures (matplotlib, Agg canvas; small PNGs at 100 dpi).

Each function draws one figure from analysis results and writes it to `path`.
Figures are built with `matplotlib.figure.Figure` (no pyplot, so no global
figure state), x axes are measured NNZ, and the targets are dashed lines.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from search.report import analysis

DPI = 100
SEARCH_COLOR = "black"
CLASS_COLORS = ("#f4b183", "#9dc3e6")  # class 0 (arm A), class 1 (arm B)
POINT_COLORS = ("#c55a11", "#2e75b6")


def method_colors(methods) -> dict[str, str]:
  """A fixed colour per method name (report order), from tab20."""
  palette = colormaps["tab20"].colors
  known = analysis.PAPER_METHODS + analysis.SOS_METHODS + analysis.RETRAIN_METHODS
  colors = {name: palette[(2 * i) % 20 + (2 * i) // 20] for i, name in enumerate(known)}
  extra = [m for m in methods if m not in colors]
  colors.update({name: palette[(2 * i + 1) % 20] for i, name in enumerate(extra)})
  return {name: colors[name] for name in methods}


def _save(figure: Figure, path) -> Path:
  path = Path(path)
  figure.savefig(path, dpi=DPI, bbox_inches="tight")
  return path


def _log_x(ax, base: float = 10) -> None:
  """A log x axis with plain-number tick labels (1, 2, 5, 10, 20, ... for base 10)."""
  ax.set_xscale("log", base=base)
  if base == 10:
    ax.xaxis.set_major_locator(LogLocator(10, subs=(1, 2, 5)))
  ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
  ax.xaxis.set_minor_formatter(NullFormatter())
  ax.tick_params(axis="x", which="both", labelsize=7)


def _target_lines(ax, targets) -> None:
  for target in targets:
    ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
    ax.annotate(
      f"{100 * target:g}%",
      (1.0, target),
      xycoords=("axes fraction", "data"),
      fontsize=7,
      color="grey",
      ha="right",
      va="bottom",
    )


def _frontier_xy(frontier, right_edge: float):
  """Step coordinates of a frontier (best accuracy at <= nnz), extended to right_edge."""
  xs = [p["nnz"] for p in frontier] + [right_edge]
  ys = [p["accuracy"] for p in frontier] + [frontier[-1]["accuracy"]]
  return xs, ys


def accuracy_vs_nnz(
  panels,
  runs,
  frontiers,
  search_runs,
  search_curves,
  targets,
  path,
  nnz_key: str = "weight_nnz",
  search_minima=None,
) -> Path:
  """Every run as a point, each method's Pareto frontier, the search's per-level best.

  panels: [(title, [method names])]; runs / frontiers: method -> rows / points;
  search_runs: combinatorial rows (grey dots); search_curves: label -> search_levels;
  search_minima: label -> the search's sparsest run reaching its target (a star).
  """
  colors = method_colors(list(runs))
  all_nnz = [r[nnz_key] for rows in runs.values() for r in rows]
  all_nnz += [r[nnz_key] for r in search_runs]
  right = max(all_nnz) * 1.1 if all_nnz else 10
  figure = Figure(figsize=(5.2 * len(panels), 4.0))
  axes = figure.subplots(1, len(panels), squeeze=False)[0]
  for ax, (title, methods) in zip(axes, panels):
    if search_runs:
      ax.scatter(
        [r[nnz_key] for r in search_runs],
        [r["accuracy"] for r in search_runs],
        s=3,
        color="0.75",
        label="search runs",
        rasterized=True,
        zorder=1,
      )
    for label, levels in search_curves.items():
      key = "weight_nnz" if nnz_key == "weight_nnz" else "model_nnz"
      ax.plot(
        [p[key] for p in levels],
        [p["accuracy"] for p in levels],
        color=SEARCH_COLOR,
        marker="s",
        markersize=3,
        linewidth=1.5,
        label=label,
        zorder=4,
      )
    for label, best in (search_minima or {}).items():
      ax.scatter(
        [best[nnz_key]],
        [best["accuracy"]],
        marker="*",
        s=110,
        color=SEARCH_COLOR,
        edgecolors="white",
        linewidths=0.6,
        label=label,
        zorder=5,
      )
    for method in methods:
      if method not in runs:
        continue
      color = colors[method]
      ax.scatter(
        [r[nnz_key] for r in runs[method]],
        [r["accuracy"] for r in runs[method]],
        s=8,
        color=color,
        alpha=0.45,
        linewidths=0,
        zorder=2,
      )
      if frontiers.get(method):
        xs, ys = _frontier_xy(frontiers[method], right)
        ax.step(xs, ys, where="post", color=color, linewidth=1.4, label=method, zorder=3)
    _target_lines(ax, targets)
    _log_x(ax)
    ax.set_xlabel("measured " + nnz_key.replace("_", " "))
    ax.set_ylabel("training accuracy")
    ax.set_ylim(0.45, 1.005)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    legend_below(ax)
  return _save(figure, path)


def overparam(table, targets, path) -> Path:
  """Best accuracy at weight nnz <= f against the starting width, one panel per f."""
  f_values = sorted({row["f"] for row in table})
  methods = analysis.method_order({row["method"] for row in table})
  colors = method_colors(methods)
  figure = Figure(figsize=(3.6 * len(f_values), 3.4))
  axes = figure.subplots(1, len(f_values), squeeze=False, sharey=True)[0]
  for ax, f in zip(axes, f_values):
    for method in methods:
      points = sorted(
        (r["width"], r["best_accuracy"]) for r in table if r["f"] == f and r["method"] == method
      )
      if points:
        ax.plot(*zip(*points), marker="o", markersize=3, color=colors[method], label=method)
    _target_lines(ax, targets)
    _log_x(ax, base=2)
    ax.set_xlabel("starting width w")
    ax.set_title(f"weight nnz <= {f}", fontsize=10)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("best training accuracy")
  _legend_outside(figure, axes[-1])
  return _save(figure, path)


def legend_below(ax) -> None:
  """The panel's legend under its x label (never over the data)."""
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)


def _legend_outside(figure: Figure, ax) -> None:
  """One legend for the figure, to the right of the panels (never over the data)."""
  handles, labels = ax.get_legend_handles_labels()
  if handles:
    figure.legend(
      handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False
    )


def fewest_by_width(table, path) -> Path:
  """Fewest weights reaching each target against the starting width, one panel per target,
  one line per method, the search's minimum as a dashed line."""
  targets = sorted({row["target"] for row in table})
  methods = analysis.method_order({row["method"] for row in table})
  colors = method_colors(methods)
  figure = Figure(figsize=(4.2 * len(targets), 3.6))
  axes = figure.subplots(1, len(targets), squeeze=False)[0]
  for ax, target in zip(axes, targets):
    members = [r for r in table if r["target"] == target]
    for method in methods:
      points = sorted(
        (r["width"], r["best_weight_nnz"])
        for r in members
        if r["method"] == method and not math.isnan(r["best_weight_nnz"])
      )
      if points:
        ax.plot(*zip(*points), marker="o", markersize=3, color=colors[method], label=method)
    search = [r["search_weight_nnz"] for r in members if not math.isnan(r["search_weight_nnz"])]
    if search:
      ax.axhline(search[0], color=SEARCH_COLOR, linestyle="--", linewidth=1, label="search minimum")
    _log_x(ax, base=2)
    ax.set_xlabel("starting width w")
    ax.set_ylabel("fewest weights reaching the target")
    ax.set_title(f"target {100 * target:g}%", fontsize=10)
    ax.grid(alpha=0.3)
  _legend_outside(figure, axes[-1])
  return _save(figure, path)


def connectivity(table, path) -> Path:
  """Mean disconnected-weight fraction and dead units per method against weight nnz."""
  methods = analysis.method_order({row["method"] for row in table})
  colors = method_colors(methods)
  colors[analysis.SEARCH_METHOD] = SEARCH_COLOR
  figure = Figure(figsize=(10, 3.6))
  left, right = figure.subplots(1, 2)
  for method in methods:
    rows = [r for r in table if r["method"] == method]
    xs = [r["weight_nnz"] for r in rows]
    left.plot(
      xs,
      [r["disconnected_fraction"] for r in rows],
      marker="o",
      markersize=3,
      linewidth=0.6,
      alpha=0.8,
      color=colors[method],
      label=method,
    )
    right.plot(
      xs,
      [r["dead_units"] for r in rows],
      marker="o",
      markersize=3,
      linewidth=0.6,
      alpha=0.8,
      color=colors[method],
      label=method,
    )
  left.set_ylabel("disconnected weights (1 - effective / nnz)")
  right.set_ylabel("dead units (mean)")
  for ax in (left, right):
    _log_x(ax)
    ax.set_xlabel("measured weight nnz")
    ax.grid(alpha=0.3, which="both")
  left.set_ylim(-0.03, 1.03)
  most_dead = max((r["dead_units"] for r in table if not math.isnan(r["dead_units"])), default=0)
  right.set_ylim(-0.5, max(most_dead, 1) * 1.08 + 0.5)
  legend_below(right)
  return _save(figure, path)


def decision_regions(panels, points, labels, path, max_points: int = 3000) -> Path:
  """Decision regions on the 512 x 512 grid, one panel per model, with training points.

  panels: [(title, bool image (r, r))]; points (N, 2) and labels (N,) are
  subsampled evenly to `max_points` for the overlay.
  """
  columns = min(4, len(panels))
  rows = math.ceil(len(panels) / columns)
  figure = Figure(figsize=(2.6 * columns, 2.8 * rows))
  axes = figure.subplots(rows, columns, squeeze=False).ravel()
  step = max(1, len(points) // max_points)
  sub_x, sub_y = np.asarray(points)[::step], np.asarray(labels)[::step].astype(int)
  for ax in axes[len(panels) :]:
    ax.set_axis_off()
  for ax, (title, image) in zip(axes, panels):
    ax.imshow(
      image.astype(int),
      cmap=ListedColormap(CLASS_COLORS),
      vmin=0,
      vmax=1,
      extent=(-2.25, 2.25, -2.25, 2.25),
      interpolation="nearest",
    )
    ax.scatter(
      sub_x[:, 0],
      sub_x[:, 1],
      s=0.6,
      c=[POINT_COLORS[c] for c in sub_y],
      linewidths=0,
      rasterized=True,
    )
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
  return _save(figure, path)


def sos(runs, frontiers, retrain_table, source_frontiers, targets, path) -> Path:
  """State-of-Sparsity frontiers and the retraining runs' mean and spread per nnz.

  runs / frontiers: SoS method -> rows / points; retrain_table: analysis.
  retrain_summary rows; source_frontiers: source method -> frontier (the pruned
  frontier the retraining runs are compared with).
  """
  methods = list(runs)
  kinds = analysis.method_order({r["kind"] for r in retrain_table})
  colors = method_colors(analysis.method_order(set(methods) | set(kinds) | set(source_frontiers)))
  all_nnz = [r["weight_nnz"] for rows in runs.values() for r in rows]
  all_nnz += [r["weight_nnz"] for r in retrain_table]
  right = max(all_nnz) * 1.1 if all_nnz else 10
  figure = Figure(figsize=(6.4, 4.2))
  ax = figure.subplots()
  for method in methods:
    ax.scatter(
      [r["weight_nnz"] for r in runs[method]],
      [r["accuracy"] for r in runs[method]],
      s=8,
      color=colors[method],
      alpha=0.4,
      linewidths=0,
    )
    if frontiers.get(method):
      ax.step(
        *_frontier_xy(frontiers[method], right),
        where="post",
        color=colors[method],
        linewidth=1.4,
        label=f"{method} frontier",
      )
  for source, frontier in source_frontiers.items():
    if source not in methods and frontier:
      ax.step(
        *_frontier_xy(frontier, right),
        where="post",
        color=colors[source],
        linewidth=1.4,
        label=f"{source} frontier (pruned)",
      )
  for index, kind in enumerate(kinds):
    rows = [r for r in retrain_table if r["kind"] == kind]
    shift = 1 + 0.03 * (index - 1)  # side by side on the log axis
    xs = [r["weight_nnz"] * shift for r in rows]
    means = np.array([r["mean_accuracy"] for r in rows])
    low = means - np.array([r["min_accuracy"] for r in rows])
    high = np.array([r["max_accuracy"] for r in rows]) - means
    ax.errorbar(
      xs,
      means,
      yerr=[low, high],
      fmt="D",
      markersize=4,
      capsize=2,
      color=colors[kind],
      label=f"{kind} (mean, min-max)",
    )
  _target_lines(ax, targets)
  _log_x(ax)
  ax.set_xlabel("measured weight nnz")
  ax.set_ylabel("training accuracy")
  ax.set_ylim(0.45, 1.005)
  ax.grid(alpha=0.3, which="both")
  legend_below(ax)
  return _save(figure, path)
