"""The report (search/report, experiments/report.py).

Analysis functions on hand-made rows; the page from a hand-made store with
every section's data (no training); the binary end to end on a tiny search
and pruning store made here (1 epoch; models drawn from the stored weights,
two runs reproduced bit for bit); bad input; and, where `chromium` is installed, a headless browser
that loads the page. About 2 minutes on a 2-core CPU, mostly the tiny sweeps.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cubist import engine, machine, mlp
from cubist import masks as mask_ops
from cubist.semantics import SEMANTICS_VERSION
from cubist.specs import ExperimentSpec
from cubist.store import ResultStore, StoreReader, store_path
from search import report
from search.report import analysis, diagrams, models, page, sections
from tests.rows import stored_row

ROOT = Path(__file__).resolve().parents[1]
FP = "f" * 64


SPEC_FIELDS = ("seed", "width", "target_nnz", "mask_config", "source_id", "source_method", "repeat")


def run(method="snip", weight_nnz=20, accuracy=0.9, family="overparam", **fields) -> dict:
  """A hand-made store row (through chunks.result_rows) with a measured nnz and accuracy."""
  spec_fields = {k: fields.pop(k) for k in SPEC_FIELDS if k in fields}
  spec_fields.setdefault("seed", 1)
  spec_fields.setdefault("width", 16)
  if method == "combinatorial":  # the search's runs are plain training
    method = "plain"
  spec = ExperimentSpec(lr=0.1, epochs=2, method=method, family=family, **spec_fields)
  row = stored_row(spec, fields.pop("status", "ok"), accuracy)
  row.update(
    weight_nnz=weight_nnz,
    model_nnz=weight_nnz + 10,
    effective_weight_nnz=weight_nnz,
    dead_units=0,
    seconds=1.0,
  )
  row.update(fields)
  if "exp_id" not in fields:
    row["exp_id"] = (
      f"{method}-{family}-{weight_nnz}-{accuracy}-{spec.seed}-{spec.width}-"
      f"{spec.target_nnz}-{spec.mask_config}"
    )
  return row


# --- analysis -------------------------------------------------------------------


def test_pareto_frontier_keeps_improvements_and_ignores_failed_runs():
  rows = [
    run(weight_nnz=30, accuracy=0.8),
    run(weight_nnz=20, accuracy=0.7),
    run(weight_nnz=20, accuracy=0.75, seed=2),
    run(weight_nnz=25, accuracy=0.6),
    run(weight_nnz=10, accuracy=0.99, status="diverged"),
    run(weight_nnz=40, accuracy=0.8, seed=3),
  ]
  frontier = analysis.pareto_frontier(rows)
  assert [(p["nnz"], p["accuracy"]) for p in frontier] == [(20, 0.75), (30, 0.8)]
  assert analysis.frontier_at(frontier, 29) == 0.75
  assert math.isnan(analysis.frontier_at(frontier, 19))
  by_model = analysis.pareto_frontier(rows, "model_nnz")
  assert [p["nnz"] for p in by_model] == [30, 40]


def test_search_levels_and_minimum():
  rows = [
    run("combinatorial", 29, 0.96, family="phase1"),
    run("combinatorial", 12, 0.90, family="phase2", mask_config="a"),
    run("combinatorial", 12, 0.94, family="phase2", mask_config="b"),
    run("combinatorial", 14, 0.951, family="phase2", mask_config="c"),
    run("imp", 5, 0.99),
  ]
  levels = analysis.search_levels(rows)
  assert [(p["weight_nnz"], p["accuracy"], p["runs"]) for p in levels] == [
    (12, 0.94, 2),
    (14, 0.951, 1),
  ]
  best = analysis.search_minimum(rows, 0.95)
  assert (best["weight_nnz"], best["family"]) == (14, "phase2")
  assert analysis.search_minimum(rows, 0.955)["family"] == "phase1"  # structured counts too
  assert analysis.search_minimum(rows, 0.97) is None


def test_method_minimum_median_over_repeats():
  # One configuration per target, three repeats (seeds); replica 2 never reaches 0.95.
  rows = [
    run("imp", nnz, acc, seed=seed, target_nnz=target, repeat=seed - 5)
    for target, nnz, accs in ((20, 18, (0.96, 0.5, 0.5)), (40, 38, (0.97, 0.96, 0.9)))
    for seed, acc in zip((5, 6, 7), accs)
  ]
  found = analysis.method_minimum(rows, 0.95)
  assert found["repeats"] == 3 and found["reaching"] == 3
  # Schema-v1 rows kept no repeat index: the rank of the seed stands in for it.
  assert analysis.method_minimum([{**r, "repeat": None} for r in rows], 0.95) == found
  assert found["best"]["weight_nnz"] == 18
  assert found["median_weight_nnz"] == 38  # replicas: 18, 38, inf
  assert math.isinf(analysis.method_minimum(rows[:3], 0.95)["median_weight_nnz"])


def test_gap_table_with_and_without_a_search():
  rows = [run("imp", 40, 0.96), run("snip", 30, 0.5)]
  search = {"weight_nnz": 20, "model_nnz": 31, "accuracy": 0.95, "exp_id": "s"}
  table = analysis.gap_table(rows, [0.95], {0.95: search})
  assert [r["method"] for r in table] == ["combinatorial", "imp", "snip"]
  imp, snip = table[1], table[2]
  assert (imp["best_weight_nnz"], imp["ratio_best"], imp["search_model_nnz"]) == (40, 2.0, 31)
  assert snip["reaching"] == 0 and math.isnan(snip["ratio_best"])
  alone = analysis.gap_table(rows, [0.95], {})
  assert [r["method"] for r in alone] == ["imp", "snip"]
  assert math.isnan(alone[0]["ratio_best"]) and math.isnan(alone[0]["search_weight_nnz"])


def test_overparam_connectivity_and_retrain_summaries():
  rows = [
    run("imp", 18, 0.9, width=4, target_nnz=20),
    run("imp", 38, 0.95, width=4, target_nnz=40),
    run("imp", 19, 0.7, width=16, target_nnz=20),
    run("snip", 20, 0.8, width=16, target_nnz=20, effective_weight_nnz=15, dead_units=3),
  ]
  assert analysis.choose_f_values(rows) == [20, 40]
  table = analysis.overparam_table(rows, [20, 40])
  assert {(r["method"], r["f"], r["width"], r["best_accuracy"]) for r in table} == {
    ("imp", 20, 4, 0.9),
    ("imp", 20, 16, 0.7),
    ("imp", 40, 4, 0.95),
    ("imp", 40, 16, 0.7),
    ("snip", 20, 16, 0.8),
    ("snip", 40, 16, 0.8),
  }
  snip = [r for r in analysis.connectivity_table(rows) if r["method"] == "snip"][0]
  assert (snip["disconnected_fraction"], snip["dead_units"]) == (0.25, 3.0)
  summary = {r["method"]: r for r in analysis.connectivity_summary(rows)}
  assert summary["snip"]["runs_with_dead_units"] == 1.0 and summary["imp"]["runs"] == 3
  source = run("magnitude", 40, 0.9, exp_id="src")
  retrained = [
    run(kind, 40, acc, family="retrain", seed=s, source_id="src", source_method="magnitude")
    for kind, acc, s in (("scratch_e", 0.7, 1), ("scratch_e", 0.8, 2), ("lottery", 0.85, 3))
  ]
  summary = analysis.retrain_summary([source] + retrained)
  assert [(r["kind"], r["runs"]) for r in summary] == [("scratch_e", 2), ("lottery", 1)]
  assert summary[0]["mean_accuracy"] == pytest.approx(0.75)
  assert summary[0]["source_mean_accuracy"] == 0.9


def test_pick_models_at_or_above_the_reference_nnz():
  rows = [
    run("imp", 10, 0.9),
    run("imp", 14, 0.7),
    run("imp", 14, 0.8, seed=2),
    run("snip", 8, 0.99),
    run("scratch_e", 20, 0.9, family="retrain"),
  ]
  picks = analysis.pick_models(rows, 12, 0.95)
  assert list(picks) == ["imp"] and picks["imp"]["accuracy"] == 0.8
  picks = analysis.pick_models(rows, None, 0.95)
  assert picks["snip"]["weight_nnz"] == 8 and picks["imp"]["accuracy"] == 0.9


# --- models and diagrams --------------------------------------------------------


def test_models_come_from_the_stored_weights():
  spec = ExperimentSpec(
    seed=7,
    lr=0.05,
    schedule="step",
    width=4,
    epochs=3,
    method="imp",
    target_nnz=15,
    family="overparam",
  )
  masks = spec.masks()
  params = tuple(
    mlp.Layer(
      np.where(m.weight, 0.25, 0).astype(np.float32), np.where(m.bias, -0.5, 0).astype(np.float32)
    )
    for m in masks
  )
  model = models.from_row(stored_row(spec, accuracy=0.75, params=params))
  assert model.accuracy == 0.75 and model.source == "store"
  for got, want in zip(model.params, params):
    np.testing.assert_array_equal(got.weight, want.weight)
    np.testing.assert_array_equal(got.bias, want.bias)
  old = {"exp_id": "x", "status": "ok", "params": None, "schema": 1}
  with pytest.raises(ValueError, match="has no stored weights"):
    models.from_row(old)


# --- the reproducibility check ----------------------------------------------------


def _another_machine() -> dict:
  """A machine that is not this one, whatever runs the tests (its CPU has no such name)."""
  return {**machine.signature(), "cpu": "Imaginary CPU 9000", "isa": ["sse4_2"]}


def test_how_to_compare_follows_the_bits_key():
  spec = ExperimentSpec(seed=1, lr=0.1, width=4, widths=(3, 3, 3), epochs=1)
  here = stored_row(spec, accuracy=0.75)
  assert here["portable"] and here["machine"] == machine.signature()

  def how(stored, fresh=here):
    return models.how_to_compare(stored, fresh, 0.005)

  label = machine.signature()["arithmetic"]
  assert how(here) == ("bits", f"portable on {label}, jaxlib {machine.signature()['jaxlib']}")
  other_class = {**machine.signature(), "arithmetic": "x86-64-nofma" + "?"}
  comparison, why = how({**here, "machine": json.dumps(other_class)})
  assert comparison == "accuracy ±0.5 pp" and why.startswith(
    "portable, but trained on x86-64-nofma"
  )
  gemm = stored_row(spec, layout="gemm")
  assert not gemm["portable"]
  comparison, why = how(gemm, gemm)
  assert comparison == "bits" and why.startswith("machine-specific (gemm) and trained on this")
  elsewhere = {**gemm, "machine": json.dumps(_another_machine())}
  comparison, why = how(elsewhere, gemm)
  assert comparison == "accuracy ±0.5 pp"
  assert why.startswith("machine-specific (gemm) and trained on another machine: Imaginary CPU")
  old = {**here, "machine": None, "portable": None, "schema": 2}
  assert how(old) == (
    "accuracy ±0.5 pp",
    "the schema-v2 row does not record the machine that trained it",
  )
  assert models.how_to_compare(elsewhere, gemm, 0.01)[0] == "accuracy ±1 pp"


def test_reproduce_compares_bits_when_portable_and_accuracy_from_another_machine(tmp_path):
  """A 1-epoch run in the portable "dot" layout is reproduced bit for bit; the same row
  made a "gemm" row of another machine is compared by accuracy (within the tolerance or not)."""
  spec = ExperimentSpec(seed=3, lr=0.1, width=4, widths=(3, 3, 3), epochs=1)
  plan = engine.ChunkPlan(unit_max_width=0, dot_max_width=10_000)
  path = store_path(tmp_path / "w")
  engine.run([spec], tmp_path / "w", "tiny", plan=plan, progress_stream=io.StringIO()).close()
  with StoreReader(path) as store:
    (row,) = store.rows()
  assert (row["layout"], row["portable"]) == ("dot", 1)
  bits = models.reproduce(row)
  assert (bits.comparison, bits.passed, bits.identical, bits.layout) == ("bits", True, True, "dot")
  assert bits.reason.startswith("portable on ")
  moved = row["accuracy"] + (0.25 if row["accuracy"] < 0.5 else -0.25)
  with sqlite3.connect(path) as db:
    db.execute(
      "UPDATE runs SET layout = 'gemm', portable = 0, machine = ?, accuracy = ?",
      (json.dumps(_another_machine(), sort_keys=True), moved),
    )
  db.close()
  with StoreReader(path) as store:
    (gemm,) = store.rows()
  far = models.reproduce(gemm, tolerance=0.005)
  assert (far.comparison, far.passed, far.layout) == ("accuracy ±0.5 pp", False, "gemm")
  assert "trained on another machine: Imaginary CPU 9000" in far.reason
  assert abs(far.accuracy_stored - moved) < 1e-12
  fresh = {**gemm, "machine": machine.signature(), "accuracy": moved + 0.004}
  near = models.compare(gemm, fresh, 0.005)
  assert (near.comparison, near.passed, near.identical) == ("accuracy ±0.5 pp", True, False)
  out = tmp_path / "out"
  out.mkdir()
  _, _, html_text = sections.reproduce_section([bits, far], out)
  with (out / "reproduce.csv").open(newline="") as handle:
    first, second = csv.DictReader(handle)
  assert list(first)[:7] == [
    "exp_id",
    "method",
    "layout",
    "comparison",
    "reason",
    "passed",
    "identical",
  ]
  assert (first["layout"], first["comparison"], first["passed"], first["identical"]) == (
    "dot",
    "bits",
    "yes",
    "yes",
  )
  assert first["reason"].startswith("portable on ")
  assert (second["layout"], second["comparison"], second["passed"]) == (
    "gemm",
    "accuracy ±0.5 pp",
    "NO",
  )
  assert second["reason"].startswith("machine-specific (gemm) and trained on another machine")
  assert "accuracy ±0.5 pp" in html_text and 'class="warn"' in html_text


def _old_store(path: Path, rows) -> None:
  """A store as schema v2 wrote it under the previous training semantics."""
  with ResultStore(path, "old", FP) as store:
    store.commit_rows(rows)
  with sqlite3.connect(path) as db:
    db.execute("ALTER TABLE runs DROP COLUMN machine")
    db.execute("ALTER TABLE runs DROP COLUMN portable")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.execute(
      "UPDATE meta SET value = ? WHERE key = 'semantics_version'", (str(SEMANTICS_VERSION - 1),)
    )
  db.close()


def test_stores_of_other_semantics_are_marked_and_never_retrained(tmp_path):
  old = SEMANTICS_VERSION - 1
  path = store_path(tmp_path / "w")
  path.parent.mkdir()
  _old_store(path, [run("snip", 20, 0.9, width=4, seed=s) for s in (1, 2)])
  logged = []
  index = report.build_report([tmp_path / "w"], reproduce=2, log=logged.append)
  text = index.read_text()
  note = (
    f"v{old} store {path}: trained under semantics v{old} (this code: v{SEMANTICS_VERSION}); "
    "its &#x27;dot&#x27; rows are machine-specific"
  )
  assert note in text
  assert any(
    line.startswith(f"v{old} store {path}: trained under semantics v{old}") for line in logged
  )
  with (index.parent / "reproduce.csv").open(newline="") as handle:
    (check,) = csv.DictReader(handle)  # the drawn snip model; no run of this code's semantics
  assert (check["comparison"], check["reason"], check["passed"]) == (
    "not retrained",
    f"other semantics (v{old}): not retrained (its 'dot' layout was library matmuls: "
    "machine-specific bits)",
    "-",
  )
  assert f"other semantics (v{old}): not retrained" in text


def test_path_structure_marks_disconnected_weights_and_dead_units():
  params = mlp.init(jax.random.PRNGKey(0), 4)
  masks = mask_ops.structured_masks((2, 2, 2), 4)
  masks[1].weight[1, :] = False  # hidden-2 unit 1 has no inputs: its outgoing weights dangle
  params = tuple(
    mlp.Layer(np.asarray(p.weight) * m.weight, np.asarray(p.bias) * m.bias)
    for p, m in zip(params, masks)
  )
  effective, live = diagrams.path_structure([np.asarray(l.weight) != 0 for l in params])
  counts = mask_ops.connectivity(params)
  nnz = sum(int((np.asarray(l.weight) != 0).sum()) for l in params)
  assert nnz - sum(int(e.sum()) for e in effective) == int(counts["disconnected_weight_nnz"])
  assert not live[1][1] and live[1][0]
  assert sum(int((p & ~l).sum()) for p, l in zip(mask_ops.used_units(masks), live)) == int(
    counts["dead_units"]
  )


def test_page_table_escapes_and_formats():
  html = page.table(
    [{"a": "<b>", "b": math.nan, "c": 2.0, "d": math.inf}],
    [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")],
  )
  assert "&lt;b&gt;" in html and "\u2013" in html and ">2<" in html and "\u221e" in html


# --- the page from a hand-made store (every section, no training) --------------


def test_build_report_covers_every_section_without_training(tmp_path):
  rows = []
  for method in ("imp", "snip", "magnitude", "vd"):
    for width, seed in ((4, 1), (16, 2), (16, 3)):
      for nnz, acc in ((18, 0.6), (38, 0.96)):
        rows.append(
          run(
            method,
            nnz,
            acc,
            width=width,
            seed=seed,
            target_nnz=nnz + 2,
            effective_weight_nnz=nnz - 3,
            dead_units=2,
          )
        )
  rows.append(
    run("scratch_e", 38, 0.9, family="retrain", source_id=rows[-1]["exp_id"], source_method="vd")
  )
  rows.append(run("snip", 20, 0.1, status="failed", seed=9))
  for row in rows:
    if row["status"] != "ok":
      row.update(accuracy=None, loss=None)
  with ResultStore(store_path(tmp_path / "w"), "handmade", FP) as store:
    store.commit_rows(rows)
  index = report.build_report([tmp_path / "w"], log=lambda _: None)
  text = index.read_text()
  out = index.parent
  for name in (
    "gap_table.csv",
    "frontiers.csv",
    "overparam.csv",
    "connectivity.csv",
    "connectivity_summary.csv",
    "sos_frontiers.csv",
    "retrain.csv",
    "accuracy_vs_weight_nnz.png",
    "accuracy_vs_model_nnz.png",
    "overparam.png",
    "connectivity.png",
    "sos.png",
  ):
    assert (out / name).is_file(), name
  assert "no combinatorial search for this target" in text
  assert (out / "decision_regions.png").is_file()  # drawn from the stored weights
  for src in re.findall(r'<img src="([^"]+)" alt="[^"]+" width="\d+"', text):
    assert (out / src).is_file()
  assert "http" not in text.replace("http-equiv", "")  # no external resources


# --- the binary end to end ------------------------------------------------------


def _binary(*args, timeout=600):
  return subprocess.run(
    [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
  )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A 1-epoch search (widths <= 2, target 50%: it saves a sparsest npz) and SNIP/IMP at
  width 3, then the report of both (retraining one pruning run)."""
  root = tmp_path_factory.mktemp("tiny")
  search = _binary(
    "-m",
    "experiments.search",
    "--config=experiments/configs/search.py:quick",
    "--config.epochs=1",
    "--config.max_width=2",
    "--config.target=0.5",
    "--config.lrs=(0.1,)",
    f"--workdir={root / 'search'}",
  )
  assert search.returncode == 0, search.stderr[-2000:]
  prune = _binary(
    "-m",
    "experiments.prune",
    "--config=experiments/configs/prune.py:overparam,quick",
    "--config.epochs=1",
    "--config.widths=(3,)",
    "--config.targets=(15,)",
    '--config.methods=("snip","imp")',
    f"--workdir={root / 'prune'}",
  )
  assert prune.returncode == 0, prune.stderr[-2000:]
  done = _binary(
    "-m",
    "experiments.report",
    f"--workdir={root / 'search'}",
    f"--workdir={root / 'prune'}",
    "--reproduce=2",
  )
  assert done.returncode == 0, done.stderr[-2000:]
  return root, done


def test_binary_draws_stored_weights_and_reproduces_runs_bit_for_bit(tiny):
  root, done = tiny
  out = root / "search" / "report"
  assert f"report: {out / 'index.html'}" in done.stdout
  text = (out / "index.html").read_text()
  for anchor in (
    "gap",
    "frontier",
    "overparam",
    "connectivity",
    "regions",
    "diagrams",
    "sos",
    "reproduce",
  ):
    assert f'<section id="{anchor}">' in text
  assert "combinatorial-search minimum 5 weights" in text  # the (1, 1, 1) network
  assert "Needs pruning runs at two or more starting widths" in text
  assert (out / "decision_regions.png").is_file() and (out / "diagrams/search_0.5.png").is_file()
  models_csv = (out / "models.csv").read_text()
  assert ",store" in models_csv and "retrained" not in models_csv  # nothing retrained to draw
  reproduced = (out / "reproduce.csv").read_text().splitlines()
  assert len(reproduced) == 3 and all(",yes," in line for line in reproduced[1:]), reproduced
  assert "bit for bit" in done.stderr


def test_bad_input_is_one_line(tmp_path):
  def check(done, message):
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], done.stderr[-1000:]
    assert "Traceback" not in done.stderr

  check(
    _binary("-m", "experiments.report", f"--workdir={tmp_path / 'none'}"),
    "does not exist or is not a directory",
  )
  (tmp_path / "empty").mkdir()
  check(_binary("-m", "experiments.report", f"--workdir={tmp_path / 'empty'}"), "no result store")
  for index, fingerprint in enumerate((FP, "e" * 64)):
    with ResultStore(store_path(tmp_path / "mixed", index, 2), f"sweep{index}", fingerprint) as s:
      s.commit_rows([run(seed=index)])
  check(_binary("-m", "experiments.report", f"--workdir={tmp_path / 'mixed'}"), "cannot be merged")
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "results.sqlite").write_bytes(b"not a database" * 100)
  with pytest.raises(ValueError, match="not a readable cubist result store"):
    report.build_report([tmp_path / "junk"])


def test_empty_store_gives_a_nothing_to_report_page(tmp_path):
  store_path(tmp_path).write_bytes(b"")  # a store being created: no tables yet
  done = _binary("-m", "experiments.report", f"--workdir={tmp_path}")
  assert done.returncode == 0, done.stderr[-1000:]
  assert "Nothing to report" in (tmp_path / "report" / "index.html").read_text()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_page_loads_in_headless_chromium(tiny):
  root, _ = tiny
  out = root / "search" / "report"
  url = (out / "index.html").resolve().as_uri()
  browser = [
    "chromium",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--virtual-time-budget=5000",
  ]
  done = subprocess.run(
    browser + ["--enable-logging=stderr", "--v=0", "--dump-dom", url],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 0, done.stderr[-2000:]
  console = [l for l in done.stderr.splitlines() if "CONSOLE" in l]
  assert not [l for l in console if "error" in l.lower()], console
  body = re.search(r"<body([^>]*)>", done.stdout).group(1)
  loaded = re.search(r'data-images-loaded="(\d+)"', body)
  total = re.search(r'data-images-total="(\d+)"', body)
  assert loaded and total, body
  assert int(total.group(1)) > 0 and loaded.group(1) == total.group(1)
  assert "data-js-errors" not in re.search(r"<html[^>]*>", done.stdout).group(0)
  assert re.search(r'<pre id="js-errors"[^>]*></pre>', done.stdout)
  shot = out / "screenshot.png"
  done = subprocess.run(
    browser + ["--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,4000", url],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
  assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_csv_keeps_the_columns_of_every_row(tmp_path):
  """A table whose first row (the search's) lacks the methods' columns keeps them all."""
  rows = [
    {"target": 0.95, "method": "combinatorial"},
    {"target": 0.95, "method": "imp", "width": 3},
  ]
  text = page.write_csv(tmp_path / "t.csv", rows).read_text().splitlines()
  assert text == ["target,method,width", "0.95,combinatorial,", "0.95,imp,3"]
