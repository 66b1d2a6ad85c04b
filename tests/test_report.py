"""The report (search/report, experiments/report.py).

Analysis functions on hand-made rows; the page from a hand-made store with
every section's data (no training); the binary end to end on a tiny search
and pruning store made here (1 epoch; it retrains one pruning run, then reuses
the cache); bad input; and, where `chromium` is installed, a headless browser
that loads the page. About 2 minutes on a 2-core CPU, mostly the tiny sweeps.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cubist import masks as mask_ops, mlp
from cubist.specs import ExperimentSpec
from cubist.store import ResultStore, store_path
from search import report
from search.report import analysis, diagrams, models, page

ROOT = Path(__file__).resolve().parents[1]
FP = "f" * 64


def run(method="snip", weight_nnz=20, accuracy=0.9, family="prune", **fields) -> dict:
  """A hand-made ok row; exp_id from the fields unless given."""
  row = dict(family=family, method=method, width=16, d1=16, d2=16, d3=16, seed=1, lr=0.1,
             schedule="cosine", epochs=2, batch_size=128, init="random", shared_order=0,
             data_order="feistel", target_nnz=None, mask_config=None, extra=None,
             count_mode="reference", strength=0.0, threshold=3.0, method_options=None,
             status="ok", accuracy=accuracy, loss=0.3, weight_nnz=weight_nnz,
             model_nnz=weight_nnz + 10, effective_weight_nnz=weight_nnz, dead_units=0,
             seconds=1.0, created_at=1.0)
  row.update(fields)
  row.setdefault("exp_id", f"{method}-{family}-{weight_nnz}-{accuracy}-{row['seed']}-"
                           f"{row['width']}-{row['target_nnz']}")
  return row


# --- analysis -------------------------------------------------------------------


def test_pareto_frontier_keeps_improvements_and_ignores_failed_runs():
  rows = [run(weight_nnz=30, accuracy=0.8), run(weight_nnz=20, accuracy=0.7),
          run(weight_nnz=20, accuracy=0.75, seed=2), run(weight_nnz=25, accuracy=0.6),
          run(weight_nnz=10, accuracy=0.99, status="diverged"),
          run(weight_nnz=40, accuracy=0.8, seed=3)]
  frontier = analysis.pareto_frontier(rows)
  assert [(p["nnz"], p["accuracy"]) for p in frontier] == [(20, 0.75), (30, 0.8)]
  assert analysis.frontier_at(frontier, 29) == 0.75
  assert math.isnan(analysis.frontier_at(frontier, 19))
  by_model = analysis.pareto_frontier(rows, "model_nnz")
  assert [p["nnz"] for p in by_model] == [30, 40]


def test_search_levels_and_minimum():
  rows = [run("combinatorial", 29, 0.96, family="phase1"),
          run("combinatorial", 12, 0.90, family="phase2", mask_config="a"),
          run("combinatorial", 12, 0.94, family="phase2", mask_config="b"),
          run("combinatorial", 14, 0.951, family="phase2", mask_config="c"),
          run("imp", 5, 0.99)]
  levels = analysis.search_levels(rows)
  assert [(p["weight_nnz"], p["accuracy"], p["runs"]) for p in levels] == [
      (12, 0.94, 2), (14, 0.951, 1)]
  best = analysis.search_minimum(rows, 0.95)
  assert (best["weight_nnz"], best["family"]) == (14, "phase2")
  assert analysis.search_minimum(rows, 0.955)["family"] == "phase1"  # structured counts too
  assert analysis.search_minimum(rows, 0.97) is None


def test_method_minimum_median_over_repeats():
  # One configuration per target, three repeats (seeds); replica 2 never reaches 0.95.
  rows = [run("imp", nnz, acc, seed=seed, target_nnz=target)
          for target, nnz, accs in ((20, 18, (0.96, 0.5, 0.5)), (40, 38, (0.97, 0.96, 0.9)))
          for seed, acc in zip((5, 6, 7), accs)]
  found = analysis.method_minimum(rows, 0.95)
  assert found["repeats"] == 3 and found["reaching"] == 3
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
  rows = [run("imp", 18, 0.9, width=4, target_nnz=20), run("imp", 38, 0.95, width=4, target_nnz=40),
          run("imp", 19, 0.7, width=16, target_nnz=20),
          run("snip", 20, 0.8, width=16, target_nnz=20, effective_weight_nnz=15, dead_units=3)]
  assert analysis.choose_f_values(rows) == [20, 40]
  table = analysis.overparam_table(rows, [20, 40])
  assert {(r["method"], r["f"], r["width"], r["best_accuracy"]) for r in table} == {
      ("imp", 20, 4, 0.9), ("imp", 20, 16, 0.7), ("imp", 40, 4, 0.95), ("imp", 40, 16, 0.7),
      ("snip", 20, 16, 0.8), ("snip", 40, 16, 0.8)}
  snip = [r for r in analysis.connectivity_table(rows) if r["method"] == "snip"][0]
  assert (snip["disconnected_fraction"], snip["dead_units"]) == (0.25, 3.0)
  summary = {r["method"]: r for r in analysis.connectivity_summary(rows)}
  assert summary["snip"]["runs_with_dead_units"] == 1.0 and summary["imp"]["runs"] == 3
  source = run("magnitude", 40, 0.9, exp_id="src")
  retrained = [run(kind, 40, acc, family="retrain", seed=s, mask_config="src", extra="magnitude")
               for kind, acc, s in (("scratch_e", 0.7, 1), ("scratch_e", 0.8, 2),
                                    ("lottery", 0.85, 3))]
  summary = analysis.retrain_summary([source] + retrained)
  assert [(r["kind"], r["runs"]) for r in summary] == [("scratch_e", 2), ("lottery", 1)]
  assert summary[0]["mean_accuracy"] == pytest.approx(0.75)
  assert summary[0]["source_mean_accuracy"] == 0.9


def test_pick_models_at_or_above_the_reference_nnz():
  rows = [run("imp", 10, 0.9), run("imp", 14, 0.7), run("imp", 14, 0.8, seed=2),
          run("snip", 8, 0.99), run("scratch_e", 20, 0.9, family="retrain")]
  picks = analysis.pick_models(rows, 12, 0.95)
  assert list(picks) == ["imp"] and picks["imp"]["accuracy"] == 0.8
  picks = analysis.pick_models(rows, None, 0.95)
  assert picks["snip"]["weight_nnz"] == 8 and picks["imp"]["accuracy"] == 0.9


# --- models and diagrams --------------------------------------------------------


def _row_of(spec: ExperimentSpec, masks) -> dict:
  """What the engine stores for a spec (the fields spec_from_row reads)."""
  blob, shapes = mask_ops.pack_masks(masks)
  d1, d2, d3 = spec.hidden_widths()
  return run(spec.method, 1, 0.5, family=spec.family, exp_id=spec.exp_id(), width=spec.width,
             d1=d1, d2=d2, d3=d3, seed=spec.seed, lr=spec.lr, schedule=spec.schedule,
             epochs=spec.epochs, init=spec.init, target_nnz=spec.target_nnz,
             mask_config=spec.mask_config, extra=spec.extra, strength=spec.strength,
             method_options='{"clean": true}' if spec.method_options else None,
             mask=blob, mask_shape=shapes)


def test_spec_from_row_rebuilds_the_exp_id():
  prune = ExperimentSpec(seed=7, lr=0.05, schedule="step", width=4, epochs=3, family="prune",
                         method="imp", target_nnz=15, extra="overparam",
                         method_options=(("clean", True),))
  masks = mask_ops.structured_masks((2, 1, 3), 16)
  phase2 = ExperimentSpec(seed=3, lr=0.1, width=16, mask=masks, family="phase2",
                          method="combinatorial", mask_config="2:0,2:0,3:0", target_nnz=10,
                          extra='{"repeat": 0}')
  phase1 = ExperimentSpec(seed=4, lr=0.1, width=16, widths=(2, 1, 3), family="phase1",
                          method="combinatorial", extra='{"repeat": 0}')
  for spec in (prune, phase2, phase1):
    rebuilt, matches = models.spec_from_row(_row_of(spec, spec.masks()), "/nowhere")
    assert matches and rebuilt.exp_id() == spec.exp_id()
  assert models.init_path("bench95_init.npz", "/data") == "/data/bench95_init.npz"
  assert models.init_path("random", "/data") == "random"


def test_path_structure_marks_disconnected_weights_and_dead_units():
  params = mlp.init(jax.random.PRNGKey(0), 4)
  masks = mask_ops.structured_masks((2, 2, 2), 4)
  masks[1].weight[1, :] = False  # hidden-2 unit 1 has no inputs: its outgoing weights dangle
  params = tuple(mlp.Layer(np.asarray(p.weight) * m.weight, np.asarray(p.bias) * m.bias)
                 for p, m in zip(params, masks))
  effective, live = diagrams.path_structure([np.asarray(l.weight) != 0 for l in params])
  counts = mask_ops.connectivity(params)
  nnz = sum(int((np.asarray(l.weight) != 0).sum()) for l in params)
  assert nnz - sum(int(e.sum()) for e in effective) == int(counts["disconnected_weight_nnz"])
  assert not live[1][1] and live[1][0]
  assert sum(int((p & ~l).sum()) for p, l in zip(models.unit_presence(masks), live)) == int(
      counts["dead_units"])


def test_page_table_escapes_and_formats():
  html = page.table([{"a": "<b>", "b": math.nan, "c": 2.0, "d": math.inf}],
                    [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")])
  assert "&lt;b&gt;" in html and "\u2013" in html and ">2<" in html and "\u221e" in html


# --- the page from a hand-made store (every section, no training) --------------


def _masks_blob():
  return mask_ops.pack_masks(mask_ops.structured_masks((2, 2, 2), 16))


def test_build_report_covers_every_section_without_training(tmp_path):
  blob, shapes = _masks_blob()
  rows = []
  for method in ("imp", "snip", "magnitude", "vd"):
    for width, seed in ((4, 1), (16, 2), (16, 3)):
      for nnz, acc in ((18, 0.6), (38, 0.96)):
        rows.append(run(method, nnz, acc, width=width, seed=seed, target_nnz=nnz + 2,
                        effective_weight_nnz=nnz - 3, dead_units=2))
  rows.append(run("scratch_e", 38, 0.9, family="retrain", mask_config=rows[-1]["exp_id"],
                  extra="vd"))
  rows.append(run("snip", 20, 0.1, status="failed", seed=9))
  for row in rows:
    row.update(mask=blob, mask_shape=shapes)
    if row["status"] != "ok":
      row.update(accuracy=None, loss=None)
  with ResultStore(store_path(tmp_path / "w"), "handmade", FP) as store:
    store.commit_rows([{k: v for k, v in r.items() if k != "created_at"} for r in rows])
  index = report.build_report([tmp_path / "w"], retrain=False, log=lambda _: None)
  text = index.read_text()
  out = index.parent
  for name in ("gap_table.csv", "frontiers.csv", "overparam.csv", "connectivity.csv",
               "connectivity_summary.csv", "sos_frontiers.csv", "retrain.csv",
               "accuracy_vs_weight_nnz.png", "accuracy_vs_model_nnz.png", "overparam.png",
               "connectivity.png", "sos.png"):
    assert (out / name).is_file(), name
  assert "no combinatorial search for this target" in text
  assert "not retrained (--noretrain)" in text  # decision regions: nothing cached
  for src in re.findall(r'<img src="([^"]+)" alt="[^"]+" width="\d+"', text):
    assert (out / src).is_file()
  assert "http" not in text.replace("http-equiv", "")  # no external resources


# --- the binary end to end ------------------------------------------------------


def _binary(*args, timeout=600):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A 1-epoch search (widths <= 2, target 50%: it saves a sparsest npz) and SNIP/IMP at
  width 3, then the report of both (retraining one pruning run)."""
  root = tmp_path_factory.mktemp("tiny")
  search = _binary("-m", "experiments.search", "--config=experiments/configs/search.py:quick",
                   "--config.epochs=1", "--config.max_width=2", "--config.target=0.5",
                   "--config.lrs=(0.1,)", f"--workdir={root / 'search'}")
  assert search.returncode == 0, search.stderr[-2000:]
  prune = _binary("-m", "experiments.prune",
                  "--config=experiments/configs/prune.py:overparam,quick", "--config.epochs=1",
                  "--config.widths=(3,)", "--config.targets=(15,)",
                  '--config.methods=("snip","imp")', f"--workdir={root / 'prune'}")
  assert prune.returncode == 0, prune.stderr[-2000:]
  done = _binary("-m", "experiments.report", f"--workdir={root / 'search'}",
                 f"--workdir={root / 'prune'}")
  assert done.returncode == 0, done.stderr[-2000:]
  return root, done


def test_binary_writes_the_page_and_reuses_retrained_weights(tiny):
  root, done = tiny
  out = root / "search" / "report"
  assert f"report: {out / 'index.html'}" in done.stdout
  text = (out / "index.html").read_text()
  for anchor in ("gap", "frontier", "overparam", "connectivity", "regions", "diagrams", "sos"):
    assert f'<section id="{anchor}">' in text
  assert "combinatorial-search minimum 5 weights" in text  # the (1, 1, 1) network
  assert "Needs pruning runs at two or more starting widths" in text
  assert (out / "decision_regions.png").is_file() and (out / "diagrams/search_0.5.png").is_file()
  models_csv = (out / "models.csv").read_text()
  assert "retrained" in models_csv and ",NO," not in models_csv  # reproduced exactly
  cached = list((out / "models").glob("*.npz"))
  assert cached
  again = _binary("-m", "experiments.report", f"--workdir={root / 'search'}",
                  f"--workdir={root / 'prune'}")
  assert again.returncode == 0 and "retrained" not in again.stderr
  assert ",cache" in (out / "models.csv").read_text()
  # The cached weights are the retrained run's: its accuracy recomputed from them.
  model = models.load_model(cached[0])
  assert model.accuracy_stored == model.accuracy_retrained


def test_bad_input_is_one_line(tmp_path):
  def check(done, message):
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], done.stderr[-1000:]
    assert "Traceback" not in done.stderr
  check(_binary("-m", "experiments.report", f"--workdir={tmp_path / 'none'}"),
        "no result store")
  for index, fingerprint in enumerate((FP, "e" * 64)):
    ResultStore(store_path(tmp_path / "mixed", index, 2), f"sweep{index}", fingerprint).close()
  check(_binary("-m", "experiments.report", f"--workdir={tmp_path / 'mixed'}"),
        "cannot be merged")
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "results.sqlite").write_bytes(b"not a database" * 100)
  with pytest.raises(ValueError, match="cannot read the store"):
    report.build_report([tmp_path / "junk"])


def test_empty_store_gives_a_nothing_to_report_page(tmp_path):
  ResultStore(store_path(tmp_path), "empty", FP).close()
  done = _binary("-m", "experiments.report", f"--workdir={tmp_path}")
  assert done.returncode == 0, done.stderr[-1000:]
  assert "Nothing to report" in (tmp_path / "report" / "index.html").read_text()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_page_loads_in_headless_chromium(tiny):
  root, _ = tiny
  out = root / "search" / "report"
  url = (out / "index.html").resolve().as_uri()
  browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
             "--virtual-time-budget=5000"]
  done = subprocess.run(browser + ["--enable-logging=stderr", "--v=0", "--dump-dom", url],
                        capture_output=True, text=True, timeout=120)
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
  done = subprocess.run(browser + ["--hide-scrollbars", f"--screenshot={shot}",
                                   "--window-size=1280,4000", url],
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
  assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
