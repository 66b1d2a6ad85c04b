"""The report: result stores in, one HTML page with its pictures and CSVs out.

`build_report(workdirs, ...)` reads every workdir's store (all shards), its
search.json and sparsest_<target>.npz if it ran a combinatorial search, and
writes REPORT/index.html (REPORT = FIRST_WORKDIR/report by default) with PNGs
and a CSV per table beside it. Sections (METHODS §G, §F.6): gap table,
accuracy vs NNZ, overparameterisation, connectivity, decision regions, network
diagrams, State of Sparsity. A section whose data are absent says so in one
line. Bad input (no store, incompatible shards, an unreadable file) raises a
one-line ValueError; stores without rows give a "nothing to report" page.

Modules: analysis (pure functions over rows), models (reproduced weights,
activations), plots, diagrams, page (HTML, CSV).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

from cubist import store as store_ops
from search.report import analysis, page

TITLE = "Cubist Spiral: sparsest networks vs pruning"


def load_workdir(workdir) -> dict:
  """{workdir, rows, sweeps, search (search.json or None), target, npz} of one workdir.

  Raises ValueError (one line) for a missing store, incompatible shards or an
  unreadable file.
  """
  workdir = Path(workdir)
  paths = store_ops.find_stores(workdir)
  try:
    rows = store_ops.merge_stores(paths)
    sweeps = []
    for path in paths:
      with store_ops.ResultStore.open_readonly(path) as shard:
        sweeps.append(shard.sweep_name)
  except (sqlite3.Error, KeyError) as error:
    raise ValueError(f"cannot read the store in {workdir}: {error}") from None
  search, target = None, None
  if (workdir / "search.json").is_file():
    try:
      search = json.loads((workdir / "search.json").read_text())
      target = float(search["config"]["target"])
    except (ValueError, KeyError, TypeError) as error:
      raise ValueError(f"{workdir}/search.json is not a search result: {error}") from None
  elif any(analysis.is_search(r) for r in rows):
    name = next((s for s in sweeps if s.startswith("search-")), "")
    try:
      target = float(name[len("search-"):])
    except ValueError:
      target = None
  npz = workdir / f"sparsest_{target:g}.npz" if target is not None else None
  for row in rows:
    row["workdir"] = str(workdir)
  return {"workdir": workdir, "rows": rows, "sweeps": sorted(set(sweeps)), "search": search,
          "target": target, "npz": npz if npz is not None and npz.is_file() else None}


def merge_workdirs(loaded) -> list[dict]:
  """All rows of several workdirs, one per exp_id (the most recently created wins)."""
  merged = {}
  for item in loaded:
    for row in item["rows"]:
      old = merged.get(row["exp_id"])
      if old is None or (row.get("created_at") or 0) >= (old.get("created_at") or 0):
        merged[row["exp_id"]] = row
  return [merged[k] for k in sorted(merged)]


def _log(message: str) -> None:
  print(f"report: {message}", file=sys.stderr, flush=True)


def build_report(workdirs, out_dir=None, init_dir="../shared/data", targets=(0.95, 0.995),
                 retrain: bool = True, log=_log) -> Path:
  """Write the report for `workdirs`; returns the path of index.html."""
  seen, loaded = set(), []
  for workdir in workdirs:
    key = Path(workdir).resolve()
    if key not in seen:
      seen.add(key)
      loaded.append(load_workdir(workdir))
  out = Path(out_dir) if out_dir else Path(workdirs[0]) / "report"
  out.mkdir(parents=True, exist_ok=True)
  rows = merge_workdirs(loaded)
  intro = _intro(loaded, rows)
  if not rows:
    body = page.absent("Nothing to report: the stores hold no runs yet.")
    return _write(out, page.render(TITLE, intro + body, []))
  searches = [item for item in loaded if item["target"] is not None
              or any(analysis.is_search(r) for r in item["rows"])]
  targets = sorted(set(float(t) for t in targets)
                   | {s["target"] for s in searches if s["target"] is not None})
  entries = collect_models(rows, searches, targets, out, init_dir, retrain, log)
  sections = [page.gap_section(rows, searches, targets, out),
              page.frontier_section(rows, searches, targets, out),
              page.overparam_section(rows, targets, out),
              page.connectivity_section(rows, out),
              page.decision_section(entries, out),
              page.diagram_section(entries, out),
              page.sos_section(rows, targets, out)]
  return _write(out, page.render(TITLE, intro, sections))


def collect_models(rows, searches, targets, out: Path, init_dir, retrain: bool, log) -> list[dict]:
  """The models to draw, as entries {name, label, model, exp_id, source, weight_nnz, ...}.

  Each search's sparsest model: its sparsest_<target>.npz, else its sparsest
  run reaching the target, retrained. Then one pruning run per method
  (analysis.pick_models at the first search model's weight nnz). Stored runs'
  weights come from REPORT/models/ or are retrained (`retrain`). A model that
  cannot be had is an entry with a "note" instead of a "model".
  """
  from search.report import models
  cache = out / "models"
  by_id = {r["exp_id"]: r for r in rows}

  def from_store(name: str, label: str, row: dict, position: str) -> dict:
    if not retrain and not (cache / f"{row['exp_id']}.npz").is_file():
      return {"name": name, "label": label, "note": "not retrained (--noretrain), not cached"}
    began = time.perf_counter()
    try:
      model, from_cache = models.load_or_reproduce(row, cache, init_dir)
    except ValueError as error:
      return {"name": name, "label": label, "note": f"cannot reproduce {row['exp_id']}: {error}"}
    if not from_cache:
      log(f"retrained {label} run {row['exp_id']} ({position}) in "
          f"{time.perf_counter() - began:.0f} s")
    return _entry(name, label, model, row["exp_id"], "cache" if from_cache else "retrained")

  entries = []
  for search in sorted((s for s in searches if s["target"] is not None),
                       key=lambda s: s["target"]):
    target = search["target"]
    name, label = f"search_{target:g}", f"search {100 * target:g}%"
    if search["npz"] is not None:
      try:
        model = models.load_model(search["npz"])
      except (OSError, ValueError, KeyError) as error:
        entries.append({"name": name, "label": label, "note": f"unreadable npz: {error}"})
        continue
      exp_id = ((search["search"] or {}).get("phase2") or {}).get("row", {}).get("exp_id", "")
      entry = _entry(name, label, model, exp_id, f"{search['workdir'].name}/{search['npz'].name}")
      if not model.reproduced_exactly and exp_id in by_id and retrain:
        # The npz's weights do not give the stored accuracy: retrain the run exactly.
        exact = from_store(name, label, by_id[exp_id], "saved model inexact")
        if "model" in exact:
          entry = {**exact, "source": f"{exact['source']} (npz: {percent(model)})"}
      entries.append(entry)
      continue
    best = analysis.search_minimum(search["rows"], target)
    if best is None:
      entries.append({"name": name, "label": label, "note": "no search run reaches the target"})
    else:
      entries.append(from_store(name, f"{label} ({best['family']})", by_id[best["exp_id"]],
                                "no saved model"))
  reference = next((e["weight_nnz"] for e in entries if "model" in e), None)
  picks = analysis.pick_models(rows, reference, targets[0] if targets else 0.95)
  for index, (method, row) in enumerate(picks.items(), start=1):
    entries.append(from_store(method, method, row, f"{index}/{len(picks)}"))
  for method in analysis.rows_by_method(rows, families=(analysis.PRUNE_FAMILY,)):
    if method not in picks:
      entries.append({"name": method, "label": method,
                      "note": f"no run with weight nnz >= {reference}"})
  return entries


def percent(model) -> str:
  return f"{100 * model.accuracy_retrained:.2f}%"


def _entry(name: str, label: str, model, exp_id: str, source: str) -> dict:
  masked = [layer.weight * mask.weight for layer, mask in zip(model.params, model.masks)]
  biases = [layer.bias * mask.bias for layer, mask in zip(model.params, model.masks)]
  weight_nnz = int(sum((w != 0).sum() for w in masked))
  return {"name": name, "label": label, "model": model, "exp_id": exp_id, "source": source,
          "weight_nnz": weight_nnz, "model_nnz": weight_nnz + int(sum((b != 0).sum()
                                                                       for b in biases))}


def _write(out: Path, text: str) -> Path:
  path = out / "index.html"
  path.write_text(text)
  return path


def _intro(loaded, rows) -> str:
  overview = []
  for item in loaded:
    statuses = {}
    for row in item["rows"]:
      statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    overview.append({"workdir": str(item["workdir"]), "sweeps": ", ".join(item["sweeps"]),
                     "runs": len(item["rows"]),
                     "statuses": ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
                     "search.json": "yes" if item["search"] else "no",
                     "sparsest model": item["npz"].name if item["npz"] else "no"})
  text = (f"{len(rows)} runs from {len(loaded)} workdir(s), generated "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}. Every NNZ on this page is the measured count "
          "of nonzero weights (weight nnz) or weights and biases (model nnz), never a "
          "method's target; accuracy is training accuracy on all 49,982 points.")
  return page.paragraph(text) + page.table(overview, [
      ("workdir", "workdir"), ("sweeps", "sweep"), ("runs", "runs"), ("statuses", "status"),
      ("search.json", "search.json"), ("sparsest model", "sparsest model")])
