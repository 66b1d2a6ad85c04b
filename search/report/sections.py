"""The report's sections: each returns (anchor, heading, body html) and writes its files to `out`.

Every section reads rows (the store's RUN_COLUMNS) and the drawn models'
entries; a section whose data are absent says so in one line (page.absent).
"""

from __future__ import annotations

import html
from pathlib import Path

from cubist import data
from search import search_result
from search.report import analysis, diagrams, models, plots
from search.report.page import (
  absent,
  collapsed,
  csv_link,
  image,
  paragraph,
  percent,
  safe_name,
  table,
  write_csv,
)


def gap_section(rows, searches, targets, out: Path):
  """§G.4: per target, each method's minimum weight nnz reaching it vs the search's."""
  minima, lines = {}, []
  for target in targets:
    mine = [s for s in searches if s["target"] == target]
    if not mine:
      lines.append(
        f"{100 * target:g}%: no combinatorial search for this target in these "
        "workdirs (the table has no search column for it)."
      )
      continue
    found = analysis.search_minimum([r for s in mine for r in s["rows"]], target)
    minima[target] = found
    lines.append(
      f"{100 * target:g}%: "
      + (
        "the combinatorial search has no run reaching it."
        if found is None
        else f"combinatorial-search minimum {found['weight_nnz']} weights "
        f"({found['model_nnz']} parameters with biases), {found['family']}, accuracy "
        f"{percent(found['accuracy'])}."
      )
    )
  table_rows = analysis.gap_table(rows, targets, minima)
  if not table_rows:
    return "gap", "1. Gap table", absent("No pruning runs and no combinatorial search.")
  write_csv(out / "gap_table.csv", table_rows)
  body = [
    paragraph(
      "Best: the sparsest run reaching the target. Median: over repeats r (runs of one "
      "configuration ranked by seed), the sparsest reaching run of replica r, infinite when "
      "that replica never reaches it. Ratios divide by the search's minimum weight nnz. The "
      "search minimum is the sparsest combinatorial run reaching the target, structured "
      "(phase 1) or unstructured (phase 2)."
    )
  ]
  body += [paragraph(line) for line in lines]
  if all(r["method"] == analysis.SEARCH_METHOD for r in table_rows):
    body.append(absent("No pruning runs in these workdirs."))
  for target in targets:
    members = [r for r in table_rows if r["target"] == target]
    if not members:
      continue
    columns = [
      ("method", "method"),
      ("runs", "runs"),
      ("reaching", "reaching"),
      ("best_weight_nnz", "best weight nnz"),
      ("best_model_nnz", "its model nnz"),
      ("best_accuracy", "its accuracy", percent),
      ("median_weight_nnz", "median weight nnz"),
      ("repeats", "repeats"),
    ]
    if minima.get(target):
      columns += [
        ("search_weight_nnz", "search weight nnz"),
        ("search_model_nnz", "search model nnz"),
        ("ratio_best", "best / search"),
        ("ratio_median", "median / search"),
      ]
    body.append(f"<h3>Target {100 * target:g}%</h3>" + table(members, columns))
  for search in searches:
    if search["search"]:
      body.append(
        collapsed(
          f"search.json of {search['workdir']}",
          f"<pre>{html.escape(_format_search(search['search']))}</pre>",
        )
      )
  body.append(csv_link("gap_table.csv"))
  return "gap", "1. Gap table", "".join(body)


def _format_search(result: dict) -> str:
  try:
    return search_result.format_result(result)
  except (KeyError, TypeError, ValueError) as error:
    return f"(cannot summarise search.json: {error})"


def frontier_section(rows, searches, targets, out: Path):
  """§F.6: every run as a point, each method's Pareto frontier, the search's per-level best."""
  runs = analysis.rows_by_method(rows)
  runs = {m: r for m, r in runs.items() if m not in analysis.RETRAIN_METHODS}
  search_runs = [r for r in rows if analysis.is_search(r) and analysis.is_ok(r)]
  curves, minima = {}, {}
  for search in searches:
    levels = analysis.search_levels(search["rows"])
    label = "search" + (f" {100 * search['target']:g}%" if search["target"] else "")
    if levels:
      curves[f"{label} (phase-2 best per level)"] = levels
    best = search["target"] and analysis.search_minimum(search["rows"], search["target"])
    if best:
      minima[f"{label} minimum"] = best
  if not runs and not search_runs:
    return "frontier", "2. Accuracy vs NNZ", absent("No finished runs.")
  paper = [m for m in runs if m not in analysis.SOS_METHODS]
  sos = [m for m in runs if m in analysis.SOS_METHODS]
  panels = [
    (t, ms) for t, ms in (("paper (1) methods", paper), ("State of Sparsity methods", sos)) if ms
  ] or [("combinatorial search", [])]
  csv_rows, body = [], []
  for key in ("weight_nnz", "model_nnz"):
    frontiers = {m: analysis.pareto_frontier(r, key) for m, r in runs.items()}
    name = f"accuracy_vs_{key}.png"
    plots.accuracy_vs_nnz(
      panels, runs, frontiers, search_runs, curves, targets, out / name, key, minima
    )
    body.append(
      image(
        out,
        name,
        f"Training accuracy against measured {key.replace('_', ' ')}: "
        "every run as a point, each method's Pareto frontier as a step line, the "
        "combinatorial search's best per level in black, its minimum as a star",
        1000,
      )
    )
    csv_rows += [{"method": m, "nnz_key": key, **p} for m, f in frontiers.items() for p in f]
  for label, levels in curves.items():
    csv_rows += [
      {"method": label, "nnz_key": "weight_nnz", "nnz": p["weight_nnz"], **p} for p in levels
    ]
  write_csv(
    out / "frontiers.csv",
    csv_rows,
    ["method", "nnz_key", "nnz", "accuracy", "weight_nnz", "model_nnz", "exp_id", "runs"],
  )
  if not curves:
    body.insert(0, absent("No phase-2 combinatorial-search runs: no search frontier."))
  body.append(
    collapsed(
      "frontier points (weight nnz)",
      table(
        [r for r in csv_rows if r["nnz_key"] == "weight_nnz"],
        [
          ("method", "method"),
          ("nnz", "weight nnz"),
          ("model_nnz", "model nnz"),
          ("accuracy", "accuracy", percent),
          ("exp_id", "exp_id"),
        ],
      ),
    )
  )
  body.append(csv_link("frontiers.csv"))
  return "frontier", "2. Accuracy vs NNZ", "".join(body)


def overparam_section(rows, searches, targets, out: Path):
  """§G.2, §G.3: per method against the starting width, the fewest weights reaching each
  target and the best accuracy at weight nnz <= f."""
  heading = "3. Overparameterisation"
  prune = [r for r in rows if analysis.is_pruning(r) and analysis.is_ok(r)]
  widths = sorted({r["width"] for r in prune})
  if len(widths) < 2:
    return (
      "overparam",
      heading,
      absent(
        "Needs pruning runs at two or more starting widths; present: "
        f"{', '.join(map(str, widths)) or 'none'}."
      ),
    )
  f_values = analysis.choose_f_values(prune)
  rows_out = analysis.overparam_table(prune, f_values)
  write_csv(out / "overparam.csv", rows_out)
  plots.overparam(rows_out, targets, out / "overparam.png")
  minima = {
    t: analysis.search_minimum([r for s in searches if s["target"] == t for r in s["rows"]], t)
    for t in targets
  }
  fewest = analysis.fewest_by_width(rows, targets, minima)
  write_csv(out / "overparam_fewest.csv", fewest)
  plots.fewest_by_width(fewest, out / "overparam_fewest.png")
  body = [
    paragraph(
      "Per method and starting width w: the fewest measured weights of a run reaching each "
      "target (the overparameterisation experiment at random init, §G.2; at the optimal width "
      "and at 16 for a fixed initialisation, §G.3), against the combinatorial search's "
      "minimum (dashed) where a search for that target is among the workdirs."
    ),
    image(
      out,
      "overparam_fewest.png",
      "Fewest weights reaching each target against starting width, one panel per target, "
      "one line per method, the search minimum dashed",
      1000,
    ),
    collapsed(
      "table: fewest weights per method and width",
      table(
        fewest,
        [
          ("target", "target", percent),
          ("method", "method"),
          ("width", "width"),
          ("runs", "runs"),
          ("reaching", "reaching"),
          ("best_weight_nnz", "fewest weights"),
          ("best_model_nnz", "its parameters"),
          ("ratio", "/ search"),
        ],
      ),
    ),
    csv_link("overparam_fewest.csv"),
    paragraph(
      "Per method and starting width w: the best accuracy among pruning runs "
      "whose measured weight nnz is at most f."
    ),
    image(
      out,
      "overparam.png",
      "Best accuracy at weight nnz <= f against starting width, "
      "one panel per f, one line per method",
      1000,
    ),
    collapsed(
      "table",
      table(
        rows_out,
        [
          ("method", "method"),
          ("f", "f"),
          ("width", "width"),
          ("best_accuracy", "best accuracy", percent),
          ("weight_nnz", "its weight nnz"),
          ("runs", "runs"),
        ],
      ),
    ),
    csv_link("overparam.csv"),
  ]
  return "overparam", heading, "".join(body)


def connectivity_section(rows, out: Path):
  """§G.1: disconnected weights and dead units per method against nnz."""
  heading = "4. Connectivity"
  per_nnz = analysis.connectivity_table(rows)
  if not per_nnz:
    return "connectivity", heading, absent("No finished runs.")
  summary = analysis.connectivity_summary(rows)
  write_csv(out / "connectivity.csv", per_nnz)
  write_csv(out / "connectivity_summary.csv", summary)
  plots.connectivity(per_nnz, out / "connectivity.png")
  body = [
    paragraph(
      "Disconnected weights: nonzero weights on no input-output path "
      "(1 - effective / weight nnz); dead units: hidden units with a mask entry "
      "that are not on such a path (§G.1, strict path definition). Combinatorial "
      "masks have none by construction (§D.5)."
    ),
    image(
      out,
      "connectivity.png",
      "Mean fraction of disconnected weights and mean number of "
      "dead units per method against measured weight nnz",
      1000,
    ),
    table(
      summary,
      [
        ("method", "method"),
        ("runs", "runs"),
        ("mean_disconnected_fraction", "mean disconnected fraction"),
        ("runs_with_disconnected", "share of runs with any", percent),
        ("mean_dead_units", "mean dead units"),
        ("runs_with_dead_units", "share of runs with any", percent),
      ],
    ),
    csv_link("connectivity.csv") + csv_link("connectivity_summary.csv"),
  ]
  return "connectivity", heading, "".join(body)


def sos_section(rows, targets, out: Path):
  """§F.5-F.6: SoS frontiers and retraining (scratch_e, scratch_b, lottery) mean and spread."""
  heading = "7. State of Sparsity comparison"
  runs = {
    m: r
    for m, r in analysis.rows_by_method(rows, pruning_only=True).items()
    if m in analysis.SOS_METHODS
  }
  retrain = analysis.retrain_summary(rows)
  if not runs and not retrain:
    return (
      "sos",
      heading,
      absent("No State-of-Sparsity (magnitude, random, vd, l0) or retraining runs."),
    )
  frontiers = {m: analysis.pareto_frontier(r) for m, r in runs.items()}
  prune_runs = analysis.rows_by_method(rows, pruning_only=True)
  sources = {r["source_method"] for r in retrain}
  source_frontiers = {
    m: analysis.pareto_frontier(prune_runs[m]) for m in sources if m in prune_runs
  }
  plots.sos(runs, frontiers, retrain, source_frontiers, targets, out / "sos.png")
  write_csv(
    out / "sos_frontiers.csv",
    [{"method": m, **p} for m, f in frontiers.items() for p in f],
    ["method", "weight_nnz", "model_nnz", "accuracy", "exp_id"],
  )
  body = [
    image(
      out,
      "sos.png",
      "State-of-Sparsity methods: runs and Pareto frontiers against "
      "measured weight nnz, with retraining runs as mean and min-max per nnz",
      800,
    )
  ]
  if retrain:
    write_csv(out / "retrain.csv", retrain)
    body.append(
      paragraph(
        "Retraining (§F.5) with the learned masks of the source method: "
        "scratch_e (fresh init, same epochs), scratch_b (fresh init, twice "
        "the epochs), lottery (the source run's own initialisation)."
      )
    )
    body.append(
      table(
        retrain,
        [
          ("kind", "kind"),
          ("source_method", "source"),
          ("weight_nnz", "weight nnz"),
          ("runs", "runs"),
          ("mean_accuracy", "mean", percent),
          ("std_accuracy", "std"),
          ("min_accuracy", "min", percent),
          ("max_accuracy", "max", percent),
          ("source_mean_accuracy", "source runs' mean", percent),
        ],
      )
    )
    body.append(csv_link("retrain.csv"))
  else:
    body.append(absent("No retraining runs (family retrain)."))
  body.append(csv_link("sos_frontiers.csv"))
  return "sos", heading, "".join(body)


def decision_section(entries, out: Path):
  """§A.4: decision regions of the sparsest search model and each method's pick."""
  heading = "5. Decision regions"
  drawn = [e for e in entries if e.get("model") is not None]
  notes = [
    paragraph(f"{e['label']}: {e['note']}", "warn") for e in entries if e.get("model") is None
  ]
  if not drawn:
    return (
      "regions",
      heading,
      absent("No model to draw (no search model and no pruning run with stored weights).")
      + "".join(notes),
    )
  points, labels = data.cubist_spiral()
  panels = [
    (
      f"{e['label']}\n{e['weight_nnz']} weights, {percent(e['model'].accuracy)}",
      models.decision_region(e["model"].params),
    )
    for e in drawn
  ]
  plots.decision_regions(panels, points, labels, out / "decision_regions.png")
  for e in drawn:
    e["accuracy"] = e["model"].accuracy
  write_csv(
    out / "models.csv", drawn, ["label", "exp_id", "weight_nnz", "model_nnz", "accuracy", "source"]
  )
  body = [
    paragraph(
      "The sparsest combinatorial-search model and, per pruning method, its most "
      "accurate run at the smallest weight nnz at or above the search model's "
      "(without a search model: its sparsest run reaching the first target, else "
      "its most accurate run). Weights are the stored ones: nothing is "
      "retrained to draw them (the report's --reproduce=N checks that retraining "
      "gives the same bits)."
    ),
    image(
      out,
      "decision_regions.png",
      "Decision regions on the 512 x 512 grid (orange: "
      "class 0, blue: class 1) with a subsample of the training points, one panel "
      "per model",
      1000,
    ),
    table(
      drawn,
      [
        ("label", "model"),
        ("exp_id", "exp_id"),
        ("weight_nnz", "weight nnz"),
        ("model_nnz", "model nnz"),
        ("accuracy", "accuracy", percent),
        ("source", "weights from"),
      ],
    ),
    *notes,
    csv_link("models.csv"),
  ]
  return "regions", heading, "".join(body)


def diagram_section(entries, out: Path):
  """§G.4 fig. 6: each drawn model as a network diagram."""
  heading = "6. Network diagrams"
  drawn = [e for e in entries if e.get("model") is not None]
  if not drawn:
    return "diagrams", heading, absent("No model to draw.")
  points, _ = data.cubist_spiral()
  (out / "diagrams").mkdir(exist_ok=True)
  figures = []
  for e in drawn:
    model = e["model"]
    name = f"diagrams/{safe_name(e['name'])}.png"  # e["name"] comes from the store
    inactive = models.inactive_units(model.params, model.masks, points)
    diagrams.draw_network(
      model.params,
      model.masks,
      f"{e['label']}: {e['weight_nnz']} weights, {percent(model.accuracy)}",
      out / name,
      inactive,
    )
    figures.append(
      f"<figure>{image(out, name, 'Network diagram of ' + e['label'], 520)}"
      f"<figcaption>{html.escape(e['label'])}</figcaption></figure>"
    )
  return (
    "diagrams",
    heading,
    (
      paragraph(
        "Tiles show each unit's activation over the square [-2.25, 2.25]^2 (64 x 64); lines are "
        "live weights, blue positive and orange negative, width ~ |w|. Dashed grey: "
        "disconnected weights; red outline: dead unit (no input-output path); dashed purple "
        "outline: unit inactive on every training point."
      )
      + f'<div class="gallery">{"".join(figures)}</div>'
    ),
  )


def reproduce_section(checks, out: Path, tolerance: float = models.TOLERANCE):
  """The reproducibility check: stored runs retrained from their specs, in their layouts, and
  compared bit for bit where the stored bits are comparable here, else by accuracy."""
  heading = "8. Reproducibility check"
  if not checks:
    return "reproduce", heading, absent("No run could be retrained (no stored run with a spec).")

  def verdict(value):
    return "-" if value is None else "yes" if value else "NO"

  rows = [c._asdict() for c in checks]
  for row, check in zip(rows, checks):
    row["passed"] = verdict(check.passed)
    retrained = check.comparison != models.NOT_RETRAINED
    row["identical"] = verdict(check.identical if retrained else None)
  write_csv(out / "reproduce.csv", rows, list(models.Reproduction._fields))
  by_bits = [c for c in checks if c.comparison == "bits"]
  skipped = [c for c in checks if c.comparison == models.NOT_RETRAINED]
  by_accuracy = [c for c in checks if c.comparison not in ("bits", models.NOT_RETRAINED)]
  text = (
    f"{len(checks) - len(skipped)} stored runs retrained alone from their stored specs, in "
    f"their stored layouts. {len(by_bits)} compared bit for bit (portable arithmetic of "
    "this machine's class and jaxlib, or trained on this machine): "
    f"{sum(c.passed for c in by_bits)} gave the stored weights bit for bit. "
    f"{len(by_accuracy)} compared by accuracy within ±{100 * tolerance:g} percentage points "
    "(machine-specific bits from another machine, or no machine recorded: only statistics "
    f"can agree): {sum(c.passed for c in by_accuracy)} within."
  )
  if skipped:
    text += f" {len(skipped)} not retrained (another training semantics, or an error)."
  passed = all(c.passed for c in by_bits + by_accuracy) and not skipped
  body = [
    paragraph(text, "note" if passed else "warn"),
    table(
      rows,
      [
        ("exp_id", "exp_id"),
        ("method", "method"),
        ("layout", "layout"),
        ("comparison", "compared"),
        ("reason", "why"),
        ("passed", "agrees"),
        ("identical", "bit for bit"),
        ("max_abs_difference", "max |dw|"),
        ("accuracy_stored", "stored", percent),
        ("accuracy_retrained", "retrained", percent),
        ("seconds", "seconds"),
      ],
    ),
    csv_link("reproduce.csv"),
  ]
  return "reproduce", heading, "".join(body)
