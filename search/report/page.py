"""The report's HTML and CSV output.

One self-contained page: inline CSS, PNG images beside it (relative links),
tables, and a small inline script that records JavaScript errors and how many
images loaded (`data-images-loaded` / `data-images-total` on <body>, errors in
#js-errors), so a headless browser can check the page. No external resources.
"""

from __future__ import annotations

import csv
import html
import math
import struct
from pathlib import Path

from search.report import analysis, plots

CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222;
       line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.6em 0; }
.note { color: #555; font-size: 0.9em; } .absent { color: #888; font-style: italic; }
.warn { color: #b00; } pre { background: #f6f6f6; padding: 0.6em; font-size: 0.8em;
       overflow-x: auto; } details { margin: 0.5em 0; } #js-errors:empty { display: none; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.5em; } .gallery figure { margin: 0; }
figcaption { font-size: 0.8em; color: #555; }
"""

SCRIPT = """
window.reportErrors = [];
function reportError(text) {
  window.reportErrors.push(text);
  document.documentElement.setAttribute('data-js-errors', String(window.reportErrors.length));
  var box = document.getElementById('js-errors');
  if (box) { box.textContent = window.reportErrors.join('\\n'); }
}
window.onerror = function (message, source, line) {
  reportError(String(message) + ' (' + source + ':' + line + ')');
};
window.addEventListener('error', function (event) {
  var target = event.target;
  if (target && target.tagName === 'IMG') { reportError('image failed: ' + target.src); }
}, true);
window.addEventListener('load', function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
  }
  document.body.dataset.imagesLoaded = String(loaded);
  document.body.dataset.imagesTotal = String(images.length);
});
"""


def fmt(value) -> str:
  """A cell: ints as ints, floats to 4 significant digits, nan/None as an en dash."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "\u2013"
  if isinstance(value, float):
    if math.isinf(value):
      return "\u221e"
    return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"
  return str(value)


def percent(value) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "\u2013"
  return f"{100 * value:.2f}%"


def table(rows, columns) -> str:
  """An HTML table. columns: [(key, header)] or [(key, header, formatter)]."""
  if not rows:
    return '<p class="absent">(no rows)</p>'
  spec = [(c[0], c[1], c[2] if len(c) > 2 else fmt) for c in columns]
  head = "".join(
      f'<th class="{"text" if isinstance(rows[0].get(k), str) else ""}">{html.escape(h)}</th>'
      for k, h, _ in spec)
  body = []
  for row in rows:
    cells = "".join(
        f'<td class="{"text" if isinstance(row.get(k), str) else ""}">'
        f"{html.escape(f(row.get(k)))}</td>" for k, _, f in spec)
    body.append(f"<tr>{cells}</tr>")
  return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png_size(path) -> tuple[int, int]:
  """(width, height) in pixels from a PNG's header."""
  with open(path, "rb") as handle:
    header = handle.read(24)
  return struct.unpack(">II", header[16:24])


def image(out: Path, src: str, alt: str, width: int) -> str:
  """An <img> for out/src, shown at most `width` pixels wide (never enlarged)."""
  width = min(int(width), png_size(out / src)[0])
  return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" width="{width}">'


def paragraph(text: str, kind: str = "note") -> str:
  return f'<p class="{kind}">{html.escape(text)}</p>'


def absent(text: str) -> str:
  """The one line a section shows when its data are absent."""
  return paragraph(text, "absent")


def collapsed(summary: str, body: str) -> str:
  return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def csv_link(name: str) -> str:
  return f'<p class="note">CSV: <a href="{html.escape(name)}">{html.escape(name)}</a></p>'


def render(title: str, intro: str, sections) -> str:
  """The whole page. sections: [(anchor, heading, body html)]."""
  toc = "".join(f'<li><a href="#{a}">{html.escape(h)}</a></li>' for a, h, _ in sections)
  parts = [f'<section id="{a}"><h2>{html.escape(h)}</h2>{body}</section>'
           for a, h, body in sections]
  return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<title>{html.escape(title)}</title><style>{CSS}</style>"
          f"<script>{SCRIPT}</script></head>\n<body>"
          f"<h1>{html.escape(title)}</h1>{intro}"
          f"<pre id=\"js-errors\" class=\"warn\"></pre>"
          f"<ul>{toc}</ul>{''.join(parts)}</body></html>\n")


def write_csv(path, rows, columns=None) -> Path:
  """Write dict rows as CSV (columns: the first row's keys unless given)."""
  path = Path(path)
  columns = list(columns or (rows[0].keys() if rows else []))
  with path.open("w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _csv_value(row.get(k)) for k in columns})
  return path


def _csv_value(value):
  """nan and None as empty cells."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ""
  return value


# --- Sections: each returns (anchor, heading, body html) and writes its files to `out`.


def gap_section(rows, searches, targets, out: Path):
  """§G.4: per target, each method's minimum weight nnz reaching it vs the search's."""
  minima, lines = {}, []
  for target in targets:
    mine = [s for s in searches if s["target"] == target]
    if not mine:
      lines.append(f"{100 * target:g}%: no combinatorial search for this target in these "
                   "workdirs (the table has no search column for it).")
      continue
    found = analysis.search_minimum([r for s in mine for r in s["rows"]], target)
    minima[target] = found
    lines.append(f"{100 * target:g}%: " + (
        "the combinatorial search has no run reaching it." if found is None else
        f"combinatorial-search minimum {found['weight_nnz']} weights "
        f"({found['model_nnz']} parameters with biases), {found['family']}, accuracy "
        f"{percent(found['accuracy'])}."))
  table_rows = analysis.gap_table(rows, targets, minima)
  if not table_rows:
    return "gap", "1. Gap table", absent("No pruning runs and no combinatorial search.")
  write_csv(out / "gap_table.csv", table_rows)
  body = [paragraph(
      "Best: the sparsest run reaching the target. Median: over repeats r (runs of one "
      "configuration ranked by seed), the sparsest reaching run of replica r, infinite when "
      "that replica never reaches it. Ratios divide by the search's minimum weight nnz. The "
      "search minimum is the sparsest combinatorial run reaching the target, structured "
      "(phase 1) or unstructured (phase 2).")]
  body += [paragraph(line) for line in lines]
  if all(r["method"] == analysis.SEARCH_METHOD for r in table_rows):
    body.append(absent("No pruning runs in these workdirs."))
  for target in targets:
    members = [r for r in table_rows if r["target"] == target]
    if not members:
      continue
    columns = [("method", "method"), ("runs", "runs"), ("reaching", "reaching"),
               ("best_weight_nnz", "best weight nnz"), ("best_model_nnz", "its model nnz"),
               ("best_accuracy", "its accuracy", percent),
               ("median_weight_nnz", "median weight nnz"), ("repeats", "repeats")]
    if minima.get(target):
      columns += [("search_weight_nnz", "search weight nnz"),
                  ("search_model_nnz", "search model nnz"),
                  ("ratio_best", "best / search"), ("ratio_median", "median / search")]
    body.append(f"<h3>Target {100 * target:g}%</h3>" + table(members, columns))
  for search in searches:
    if search["search"]:
      body.append(collapsed(f"search.json of {search['workdir']}",
                            f"<pre>{html.escape(_format_search(search['search']))}</pre>"))
  body.append(csv_link("gap_table.csv"))
  return "gap", "1. Gap table", "".join(body)


def _format_search(result: dict) -> str:
  from search import combinatorial
  try:
    return combinatorial.format_result(result)
  except (KeyError, TypeError, ValueError) as error:
    return f"(cannot summarise search.json: {error})"


def frontier_section(rows, searches, targets, out: Path):
  """§F.6: every run as a point, each method's Pareto frontier, the search's per-level best."""
  runs = analysis.rows_by_method(rows, families=None)
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
  panels = [(t, ms) for t, ms in (("paper (1) methods", paper), ("State of Sparsity methods", sos))
            if ms] or [("combinatorial search", [])]
  csv_rows, body = [], []
  for key in ("weight_nnz", "model_nnz"):
    frontiers = {m: analysis.pareto_frontier(r, key) for m, r in runs.items()}
    name = f"accuracy_vs_{key}.png"
    plots.accuracy_vs_nnz(panels, runs, frontiers, search_runs, curves, targets, out / name, key,
                          minima)
    body.append(image(out, name, f"Training accuracy against measured {key.replace('_', ' ')}: "
                      "every run as a point, each method's Pareto frontier as a step line, the "
                      "combinatorial search's best per level in black, its minimum as a star", 1000))
    csv_rows += [{"method": m, "nnz_key": key, **p} for m, f in frontiers.items() for p in f]
  for label, levels in curves.items():
    csv_rows += [{"method": label, "nnz_key": "weight_nnz", "nnz": p["weight_nnz"], **p}
                 for p in levels]
  write_csv(out / "frontiers.csv", csv_rows, ["method", "nnz_key", "nnz", "accuracy",
                                               "weight_nnz", "model_nnz", "exp_id", "runs"])
  if not curves:
    body.insert(0, absent("No phase-2 combinatorial-search runs: no search frontier."))
  body.append(collapsed("frontier points (weight nnz)", table(
      [r for r in csv_rows if r["nnz_key"] == "weight_nnz"],
      [("method", "method"), ("nnz", "weight nnz"), ("model_nnz", "model nnz"),
       ("accuracy", "accuracy", percent), ("exp_id", "exp_id")])))
  body.append(csv_link("frontiers.csv"))
  return "frontier", "2. Accuracy vs NNZ", "".join(body)


def overparam_section(rows, targets, out: Path):
  """§G.2: best accuracy at weight nnz <= f against the starting width."""
  heading = "3. Overparameterisation"
  prune = [r for r in rows if r["family"] == analysis.PRUNE_FAMILY and analysis.is_ok(r)]
  widths = sorted({r["width"] for r in prune})
  if len(widths) < 2:
    return "overparam", heading, absent(
        "Needs pruning runs at two or more starting widths; present: "
        f"{', '.join(map(str, widths)) or 'none'}.")
  f_values = analysis.choose_f_values(prune)
  rows_out = analysis.overparam_table(prune, f_values)
  write_csv(out / "overparam.csv", rows_out)
  plots.overparam(rows_out, targets, out / "overparam.png")
  body = [paragraph("Per method and starting width w: the best accuracy among pruning runs "
                    "whose measured weight nnz is at most f."),
          image(out, "overparam.png", "Best accuracy at weight nnz <= f against starting width, "
                "one panel per f, one line per method", 1000),
          collapsed("table", table(rows_out, [("method", "method"), ("f", "f"),
                                              ("width", "width"),
                                              ("best_accuracy", "best accuracy", percent),
                                              ("weight_nnz", "its weight nnz"),
                                              ("runs", "runs")])),
          csv_link("overparam.csv")]
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
  body = [paragraph("Disconnected weights: nonzero weights on no input-output path "
                    "(1 - effective / weight nnz); dead units: hidden units with a mask entry "
                    "that are not on such a path (§G.1, strict path definition). Combinatorial "
                    "masks have none by construction (§D.5)."),
          image(out, "connectivity.png", "Mean fraction of disconnected weights and mean number of "
                "dead units per method against measured weight nnz", 1000),
          table(summary, [("method", "method"), ("runs", "runs"),
                          ("mean_disconnected_fraction", "mean disconnected fraction"),
                          ("runs_with_disconnected", "share of runs with any", percent),
                          ("mean_dead_units", "mean dead units"),
                          ("runs_with_dead_units", "share of runs with any", percent)]),
          csv_link("connectivity.csv") + csv_link("connectivity_summary.csv")]
  return "connectivity", heading, "".join(body)


def sos_section(rows, targets, out: Path):
  """§F.5-F.6: SoS frontiers and retraining (scratch_e, scratch_b, lottery) mean and spread."""
  heading = "7. State of Sparsity comparison"
  runs = {m: r for m, r in analysis.rows_by_method(
      rows, families=(analysis.PRUNE_FAMILY,)).items() if m in analysis.SOS_METHODS}
  retrain = analysis.retrain_summary(rows)
  if not runs and not retrain:
    return "sos", heading, absent("No State-of-Sparsity (magnitude, random, vd, l0) or "
                                  "retraining runs.")
  frontiers = {m: analysis.pareto_frontier(r) for m, r in runs.items()}
  prune_runs = analysis.rows_by_method(rows, families=(analysis.PRUNE_FAMILY,))
  sources = {r["source_method"] for r in retrain}
  source_frontiers = {m: analysis.pareto_frontier(prune_runs[m]) for m in sources
                      if m in prune_runs}
  plots.sos(runs, frontiers, retrain, source_frontiers, targets, out / "sos.png")
  write_csv(out / "sos_frontiers.csv",
            [{"method": m, **p} for m, f in frontiers.items() for p in f],
            ["method", "weight_nnz", "model_nnz", "accuracy", "exp_id"])
  body = [image(out, "sos.png", "State-of-Sparsity methods: runs and Pareto frontiers against "
                "measured weight nnz, with retraining runs as mean and min-max per nnz", 800)]
  if retrain:
    write_csv(out / "retrain.csv", retrain)
    body.append(paragraph("Retraining (§F.5) with the learned masks of the source method: "
                          "scratch_e (fresh init, same epochs), scratch_b (fresh init, twice "
                          "the epochs), lottery (the source run's own initialisation)."))
    body.append(table(retrain, [
        ("kind", "kind"), ("source_method", "source"), ("weight_nnz", "weight nnz"),
        ("runs", "runs"), ("mean_accuracy", "mean", percent), ("std_accuracy", "std"),
        ("min_accuracy", "min", percent), ("max_accuracy", "max", percent),
        ("source_mean_accuracy", "source runs' mean", percent)]))
    body.append(csv_link("retrain.csv"))
  else:
    body.append(absent("No retraining runs (family retrain)."))
  body.append(csv_link("sos_frontiers.csv"))
  return "sos", heading, "".join(body)


def decision_section(entries, out: Path):
  """§A.4: decision regions of the sparsest search model and each method's pick."""
  heading = "5. Decision regions"
  drawn = [e for e in entries if e.get("model") is not None]
  notes = [paragraph(f"{e['label']}: {e['note']}", "warn") for e in entries
           if e.get("model") is None]
  if not drawn:
    return "regions", heading, absent(
        "No model to draw (no sparsest search model and no pruning run could be "
        "reproduced).") + "".join(notes)
  from cubist import data
  from search.report import models
  points, labels = data.cubist_spiral()
  panels = [(f"{e['label']}\n{e['weight_nnz']} weights, "
             f"{percent(e['model'].accuracy_retrained)}",
             models.decision_region(e["model"].params)) for e in drawn]
  plots.decision_regions(panels, points, labels, out / "decision_regions.png")
  for e in drawn:
    model = e["model"]
    e["accuracy_stored"], e["accuracy_retrained"] = model.accuracy_stored, model.accuracy_retrained
    e["exact"] = "yes" if model.reproduced_exactly else "NO"
    e["confirmed"] = {None: "\u2013", True: "yes", False: "NO"}[model.spec_matches]
  write_csv(out / "models.csv", drawn, ["label", "exp_id", "weight_nnz", "model_nnz",
                                        "accuracy_stored", "accuracy_retrained", "exact",
                                        "confirmed", "source"])
  differs = [e["label"] for e in drawn if e["exact"] != "yes"]
  body = [paragraph("The sparsest combinatorial-search model (its saved npz) and, per pruning "
                    "method, its most accurate run at the smallest weight nnz at or above the "
                    "search model's (without a search model: its sparsest run reaching the "
                    "first target, else its most accurate run). The store keeps masks, not "
                    "weights: each run was retrained alone from its spec (bitwise "
                    "deterministic) and its weights cached in models/."),
          image(out, "decision_regions.png", "Decision regions on the 512 x 512 grid (orange: "
                "class 0, blue: class 1) with a subsample of the training points, one panel "
                "per model", 1000),
          paragraph("Retrained accuracy equals the stored one for every model." if not differs
                    else "Retrained accuracy DIFFERS from the stored one for: "
                    + ", ".join(differs) + ".", "note" if not differs else "warn"),
          table(drawn, [("label", "model"), ("exp_id", "exp_id"), ("weight_nnz", "weight nnz"),
                        ("model_nnz", "model nnz"), ("accuracy_stored", "stored", percent),
                        ("accuracy_retrained", "retrained", percent),
                        ("exact", "reproduced exactly"), ("confirmed", "spec = exp_id"),
                        ("source", "weights from")]),
          *notes, csv_link("models.csv")]
  return "regions", heading, "".join(body)


def diagram_section(entries, out: Path):
  """§G.4 fig. 6: each drawn model as a network diagram."""
  heading = "6. Network diagrams"
  drawn = [e for e in entries if e.get("model") is not None]
  if not drawn:
    return "diagrams", heading, absent("No model to draw.")
  from cubist import data
  from search.report import diagrams, models
  points, _ = data.cubist_spiral()
  (out / "diagrams").mkdir(exist_ok=True)
  figures = []
  for e in drawn:
    model = e["model"]
    name = f"diagrams/{e['name']}.png"
    inactive = models.inactive_units(model.params, model.masks, points)
    diagrams.draw_network(model.params, model.masks,
                          f"{e['label']}: {e['weight_nnz']} weights, "
                          f"{percent(model.accuracy_retrained)}", out / name, inactive)
    figures.append(f"<figure>{image(out, name, 'Network diagram of ' + e['label'], 520)}"
                   f"<figcaption>{html.escape(e['label'])}</figcaption></figure>")
  return "diagrams", heading, (paragraph(
      "Tiles show each unit's activation over the square [-2.25, 2.25]^2 (64 x 64); lines are "
      "live weights, blue positive and orange negative, width ~ |w|. Dashed grey: "
      "disconnected weights; red outline: dead unit (no input-output path); dashed purple "
      "outline: unit inactive on every training point.")
      + f'<div class="gallery">{"".join(figures)}</div>')
