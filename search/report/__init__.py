"""The report: result stores in, one HTML page with its pictures and CSVs out.

`build_report(workdirs, ...)` reads every workdir's store (all shards), its
search.json and sparsest_<target>.npz if it ran a combinatorial search, and
writes REPORT/index.html (REPORT = FIRST_WORKDIR/report by default) with PNGs
and a CSV per table beside it. Sections (METHODS §G, §F.6): gap table,
accuracy vs NNZ, overparameterisation, connectivity, decision regions, network
diagrams, State of Sparsity. A section whose data are absent says so in one
line. Nothing is retrained to draw a model: the weights come from the store;
`reproduce=N` retrains N stored runs to check them (their bits where the
stored run's bits are comparable here, cubist.machine; else their accuracy
within `reproduce_tolerance`). Stores of older schemas or other training
semantics are read and marked as such (a line on the page and on stderr per
store); their runs are never retrained. Bad input
(no store, incompatible shards, an unreadable file) raises a one-line
ValueError; stores without rows give a "nothing to report" page.

Modules: analysis (pure functions over rows), models (stored weights,
reproduction, activations), plots, diagrams, sections (one per part of the
page), page (HTML, CSV).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

from cubist import store as store_ops
from cubist.semantics import SEMANTICS_VERSION
from search.report import analysis, models, page, robust, sections

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
    sweeps, versions, stores = [], set(), []
    for path in paths:
      with store_ops.ResultStore.open_readonly(path) as shard:
        sweeps.append(shard.sweep_name)
        versions.add((shard.schema, shard.semantics))
        if not shard.empty:
          stores.append((path, shard.schema, shard.semantics))
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
      target = float(name[len("search-") :])
    except ValueError:
      target = None
  npz = workdir / f"sparsest_{target:g}.npz" if target is not None else None
  for row in rows:
    row["workdir"] = str(workdir)
  return {
    "workdir": workdir,
    "rows": rows,
    "sweeps": sorted(set(sweeps)),
    "search": search,
    "target": target,
    "npz": npz if npz is not None and npz.is_file() else None,
    "versions": sorted(versions, key=str),
    "stores": stores,
  }


def version_label(schema: int, semantics: int | None) -> str:
  """How the page names a store's versions; old ones are marked."""
  if schema == 1:
    return "schema v1 (old: no weights, no spec)"
  label = f"schema v{schema}, semantics v{semantics}"
  return label if semantics == SEMANTICS_VERSION else label + f" (this code: v{SEMANTICS_VERSION})"


def old_store_notes(loaded) -> list[str]:
  """One line per store of another training semantics than this code's: its rows are
  shown, but they are other bits and are never retrained."""
  notes = []
  for item in loaded:
    for path, schema, semantics in item.get("stores", ()):
      if semantics == SEMANTICS_VERSION:
        continue
      if semantics is None:
        notes.append(
          f"v1 store {path}: schema v1, written before training-semantics versions (no "
          "weights, no spec); not reproduced here"
        )
        continue
      note = (
        f"v{semantics} store {path}: trained under semantics v{semantics} "
        f"(this code: v{SEMANTICS_VERSION})"
      )
      if schema < 3:
        note += "; its 'dot' rows are machine-specific (library matmuls; not reproduced here)"
      else:
        note += "; not reproduced here"
      notes.append(note)
  return notes


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


def build_report(
  workdirs,
  out_dir=None,
  init_dir="../shared/data",
  targets=(0.95, 0.995),
  reproduce: int = 0,
  log=_log,
  reproduce_tolerance: float = models.TOLERANCE,
) -> Path:
  """Write the report for `workdirs`; returns the path of index.html.

  reproduce: retrain this many stored runs (the drawn models first) and check
  them (a section of the page): their weights bit for bit where the stored
  bits are comparable on this machine (cubist.machine.bits_key), else their
  accuracy within `reproduce_tolerance` (a fraction: 0.005 is half a
  percentage point).
  """
  seen, loaded = set(), []
  for workdir in workdirs:
    key = Path(workdir).resolve()
    if key not in seen:
      seen.add(key)
      loaded.append(load_workdir(workdir))
  out = Path(out_dir) if out_dir else Path(workdirs[0]) / "report"
  out.mkdir(parents=True, exist_ok=True)
  rows = merge_workdirs(loaded)
  notes = old_store_notes(loaded)
  for note in notes:
    log(note)
  intro = _intro(loaded, rows) + "".join(page.paragraph(note, "warn") for note in notes)
  if not rows:
    body = page.absent("Nothing to report: the stores hold no runs yet.")
    return _write(out, page.render(TITLE, intro + body, []))
  searches = [
    item
    for item in loaded
    if item["target"] is not None or any(analysis.is_search(r) for r in item["rows"])
  ]
  targets = sorted(
    set(float(t) for t in targets) | {s["target"] for s in searches if s["target"] is not None}
  )
  entries = collect_models(rows, searches, targets)
  checks = (
    reproduce_runs(rows, entries, reproduce, init_dir, log, reproduce_tolerance)
    if reproduce
    else []
  )
  section_list = [
    sections.gap_section(rows, searches, targets, out),
    sections.frontier_section(rows, searches, targets, out),
    sections.overparam_section(rows, searches, targets, out),
    sections.connectivity_section(rows, out),
    sections.decision_section(entries, out),
    sections.diagram_section(entries, out),
    sections.sos_section(rows, targets, out),
    robust.robust_section(rows, searches, targets, out),
  ]
  if reproduce:
    section_list.append(sections.reproduce_section(checks, out, reproduce_tolerance))
  return _write(out, page.render(TITLE, intro, section_list))


def collect_models(rows, searches, targets) -> list[dict]:
  """The models to draw, as entries {name, label, model, exp_id, source, weight_nnz, ...}.

  Each search's sparsest run reaching its target, then one pruning run per
  method (analysis.pick_models at the first search model's weight nnz), all
  with their stored weights. A schema-v1 store kept none: its search's
  sparsest_<target>.npz is used if present. A model that cannot be had is an
  entry with a "note" instead of a "model".
  """
  by_id = {r["exp_id"]: r for r in rows}

  def from_store(name: str, label: str, row: dict) -> dict:
    try:
      return _entry(name, label, models.from_row(row), row["exp_id"])
    except store_ops.StoreError as error:
      return {"name": name, "label": label, "note": str(error)}

  entries = []
  for search in sorted((s for s in searches if s["target"] is not None), key=lambda s: s["target"]):
    target = search["target"]
    name, label = f"search_{target:g}", f"search {100 * target:g}%"
    best = analysis.search_minimum(search["rows"], target)
    if best is None:
      entries.append({"name": name, "label": label, "note": "no search run reaches the target"})
    elif by_id[best["exp_id"]].get("params") is None and search["npz"] is not None:
      try:
        entries.append(_entry(name, label, models.load_npz(search["npz"]), best["exp_id"]))
      except (OSError, ValueError, KeyError) as error:
        entries.append({"name": name, "label": label, "note": f"unreadable npz: {error}"})
    else:
      entries.append(from_store(name, f"{label} ({best['family']})", by_id[best["exp_id"]]))
  reference = next((e["weight_nnz"] for e in entries if "model" in e), None)
  picks = analysis.pick_models(rows, reference, targets[0] if targets else 0.95)
  for method, row in picks.items():
    entries.append(from_store(method, method, row))
  for method in analysis.rows_by_method(rows, pruning_only=True):
    if method not in picks:
      entries.append(
        {"name": method, "label": method, "note": f"no run with weight nnz >= {reference}"}
      )
  return entries


def reproduce_runs(
  rows, entries, count: int, init_dir, log, tolerance: float = models.TOLERANCE
) -> list:
  """Retrain `count` stored runs (the drawn models first, then a spread over the
  rest of this code's training semantics) and compare each with its stored row:
  the reproducibility check (models.reproduce). A drawn model of another
  semantics is listed, not retrained."""
  by_id = {r["exp_id"]: r for r in rows}
  chosen = [e["exp_id"] for e in entries if "model" in e and e["exp_id"] in by_id]
  others = sorted(
    r["exp_id"]
    for r in rows
    if r.get("spec") and r["status"] == "ok" and r.get("semantics") == SEMANTICS_VERSION
  )
  step = max(1, len(others) // max(count, 1))
  chosen += [exp_id for exp_id in others[::step] if exp_id not in chosen]
  checks = []
  for exp_id in list(dict.fromkeys(chosen))[:count]:
    try:
      check = models.reproduce(by_id[exp_id], init_dir, tolerance)
    except ValueError as error:
      log(f"cannot reproduce {exp_id}: {error}")
      checks.append(models.not_retrained(by_id[exp_id], f"cannot reproduce: {error}"))
      continue
    if check.comparison == models.NOT_RETRAINED:
      log(f"{check.method} run {exp_id}: {check.reason}")
    elif check.comparison == "bits":
      log(
        f"reproduced {check.method} run {exp_id} in {check.seconds:.0f} s ({check.reason}): "
        + ("bit for bit" if check.identical else f"DIFFERS (max |dw| {check.max_abs_difference:g})")
      )
    else:
      log(
        f"reproduced {check.method} run {exp_id} in {check.seconds:.0f} s ({check.reason}): "
        f"accuracy {100 * check.accuracy_retrained:.2f}% vs stored "
        f"{100 * check.accuracy_stored:.2f}%, "
        + ("within" if check.passed else "OUTSIDE")
        + f" {check.comparison}"
      )
    checks.append(check)
  return checks


def _entry(name: str, label: str, model, exp_id: str) -> dict:
  masked = [layer.weight * mask.weight for layer, mask in zip(model.params, model.masks)]
  biases = [layer.bias * mask.bias for layer, mask in zip(model.params, model.masks)]
  weight_nnz = int(sum((w != 0).sum() for w in masked))
  return {
    "name": name,
    "label": label,
    "model": model,
    "exp_id": exp_id,
    "source": model.source,
    "weight_nnz": weight_nnz,
    "model_nnz": weight_nnz + int(sum((b != 0).sum() for b in biases)),
  }


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
    overview.append(
      {
        "workdir": str(item["workdir"]),
        "sweeps": ", ".join(item["sweeps"]),
        "runs": len(item["rows"]),
        "statuses": ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
        "store": "; ".join(version_label(*v) for v in item["versions"]),
        "search.json": "yes" if item["search"] else "no",
        "sparsest model": item["npz"].name if item["npz"] else "no",
      }
    )
  text = (
    f"{len(rows)} runs from {len(loaded)} workdir(s), generated "
    f"{time.strftime('%Y-%m-%d %H:%M:%S')}. Every NNZ on this page is the measured count "
    "of nonzero weights (weight nnz) or weights and biases (model nnz), never a "
    "method's target; accuracy is training accuracy on all 49,982 points."
  )
  return page.paragraph(text) + page.table(
    overview,
    [
      ("workdir", "workdir"),
      ("sweeps", "sweep"),
      ("runs", "runs"),
      ("statuses", "status"),
      ("store", "store"),
      ("search.json", "search.json"),
      ("sparsest model", "sparsest model"),
    ],
  )
