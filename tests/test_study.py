"""The whole study as one plan (search/study.py, experiments/study.py, configs/study.py).

Counts: the reference plan reproduces the authors' three launchers (METHODS
§0.2) from the generators that train, phase 2 counted per level equals the
enumeration. Dry run: the last line, nothing created, stores read-only, done
counts, the adaptive plan waiting for its phase 1; bad input and a store of
another sweep are one error line, before anything changes. Projection: the
same numbers as `make bench`'s own projections. End to end: a tiny adaptive
study (1 epoch, one pruning method) trained in-process, resumed without
training, and the same study trained by two jax.distributed processes (one
shard each) gives bit-identical rows (about 40 s). About a minute and a half on
a 2-core CPU, mostly compilation.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cubist import masks as mask_ops
from cubist import mlp
from cubist import store as store_ops
from cubist.specs import ExperimentSpec
from experiments import bench_pruning, projection
from experiments.configs import study as study_configs
from search import grids, phases, study, study_cost, study_runner, study_stores
from search.pruning import registry
from tests.rows import stored_row

ROOT = Path(__file__).resolve().parents[1]
TINY = "quick,methods=snip"  # the adaptive quick study with one pruning method


def config_of(options: str) -> study.StudyConfig:
  return study.StudyConfig.from_dict(study_configs.get_config(options).to_dict())


def by_launcher(plans) -> dict[str, int]:
  out = {}
  for item in plans:
    out[item.family.launcher] = out.get(item.family.launcher, 0) + item.experiments
  return out


def _binary(*arguments, timeout=600):
  return subprocess.run(
    [sys.executable, "-m", "experiments.study", *arguments],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _tree_digest(folder: Path) -> dict[str, str]:
  return {
    str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted(folder.rglob("*"))
    if p.is_file()
  }


# --- 1. The reference plan's counts -------------------------------------------------


def test_reference_plan_reproduces_the_three_launchers(tmp_path):
  config = config_of("reference")
  plans = study_cost.plan(config, tmp_path / "absent")
  counts = {p.family.name: p.experiments for p in plans}
  # METHODS §0.2: the launchers' sizes and the abstract's total.
  assert by_launcher(plans) == {
    "fixed-init 95%": 12_774,
    "fixed-init 99.5%": 83_958,
    "random init": 389_106,
  }
  assert sum(counts.values()) == 485_838
  assert counts["random_overparam"] == 18_954 and counts["random_phase1"] == 24_576
  assert not (tmp_path / "absent").exists()

  # Every count is what the generators that train produce (pruning: the §G.2
  # bookkeeping of the benchmark, and methods x settings x repeats x the f < N(w) pairs).
  assert counts["random_overparam"] == sum(bench_pruning.overparam_runs().values())
  for name, widths, targets in (
    ("fixed95_prune", (3, 16), grids.FIXED_TARGETS[0.95]),
    ("fixed995_prune", (6, 16), grids.FIXED_TARGETS[0.995]),
  ):
    pairs = sum(f < mlp.num_weights(w) for w in widths for f in targets)
    settings = len(grids.PRUNING_LRS) * len(grids.SCHEDULES) * grids.FIXED_REPEATS
    assert counts[name] == len(registry.PAPER_METHODS) * settings * pairs
  for item in plans:
    job = item.job
    if job.family.kind == study.PHASE1:
      triples = study.phase1_triples(job.search)
      assert item.experiments == len(phases.phase1_specs(job.search, triples))
    elif job.family.kind == study.PHASE2:
      triples = sum(
        len(list(phases.level_mask_triples(job.search, job.widths, level)))
        for level in phases.phase2_levels(job.search, job.widths)
      )
      assert item.experiments == triples * len(phases.settings(job.search, phases.PHASE2))

  # The released settings behind them (§C.3, §D.2, §D.3, §E.0, §G.3).
  jobs = {p.family.name: p.job for p in plans}
  assert jobs["fixed95_phase1"].search.phase1_budget == mask_ops.dense_parameter_count((3, 3, 3))
  assert jobs["fixed995_phase1"].search.phase1_budget == mask_ops.dense_parameter_count((7, 3, 3))
  assert jobs["random_phase2_995"].search.reference_caps
  assert (jobs["random_phase2_995"].search.cap_sum, jobs["random_phase2_995"].search.cap_w2) == (
    33,
    3,
  )
  assert (jobs["fixed995_phase2"].search.cap_sum, jobs["fixed995_phase2"].search.cap_w2) == (31, 6)
  assert not jobs["random_phase2_95"].search.reference_caps
  assert jobs["fixed995_phase2"].search.lrs == (0.05,)
  assert jobs["fixed95_phase2"].search.lrs == grids.SEARCH_LRS
  assert {s.width for s in jobs["fixed95_prune"].specs} == {3, 16}
  assert {s.width for s in jobs["fixed995_prune"].specs} == {6, 16}
  assert {s.repeat for s in jobs["fixed995_prune"].specs} == set(range(5))
  assert {s.init for s in jobs["fixed995_prune"].specs} == {config.fixed_inits[1]}


@pytest.mark.parametrize(
  "widths, caps",
  [
    ((1, 1, 1), None),
    ((2, 1, 3), None),
    ((3, 2, 2), None),
    ((3, 3, 3), (20, 3)),
    ((4, 2, 3), (15, 2)),
  ],
)
def test_phase2_level_counts_equal_the_enumeration(widths, caps):
  config = phases.SearchConfig(target=0.95)
  if caps:
    config = phases.SearchConfig(target=0.95, reference_caps=True, cap_sum=caps[0], cap_w2=caps[1])
  counts = phases.level_mask_triple_counts(config, widths)
  enumerated = {
    level: len(list(phases.level_mask_triples(config, widths, level)))
    for level in phases.phase2_levels(config, widths)
  }
  assert counts == {level: n for level, n in enumerated.items() if n}


def test_dry_run_of_the_reference_plan_creates_nothing(tmp_path):
  workdir = tmp_path / "study"
  done = _binary(
    "--config=experiments/configs/study.py:reference", f"--workdir={workdir}", "--dry_run"
  )
  assert done.returncode == 0, done.stderr[-2000:]
  lines = done.stdout.strip().splitlines()
  assert lines[-1] == "total: 485,838 experiments"
  assert "done: 0 of 485,838" in lines
  for name, count in (("random_phase2_95", "155,952"), ("fixed995_phase2", "70,584")):
    assert any(line.split()[:2] == [name, count] for line in lines)
  if (ROOT / "bench.json").is_file():
    assert any(line.startswith("this machine (bench.json") for line in lines)
  assert not workdir.exists()


@pytest.mark.parametrize(
  "arguments, message",
  [
    (("--config=experiments/configs/study.py:nonsense",), "unknown study config option"),
    (("--config=experiments/configs/study.py:methods=snp",), "unknown pruning method 'snp'"),
    (("--config=experiments/configs/study.py:families=phase3",), "unknown study families"),
    (("--config=experiments/configs/study.py:bench95=/no/such.npz",), "cannot be read"),
    (("--config=experiments/configs/study.py", "--bogus"), "bogus"),
  ],
)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, arguments, message):
  done = _binary(*arguments, f"--workdir={tmp_path / 'w'}", "--dry_run", timeout=120)
  assert done.returncode == 2
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
  assert not (tmp_path / "w").exists()


def test_a_store_of_another_sweep_is_reported_and_refused_before_anything_changes(tmp_path):
  folder = tmp_path / "study" / "random_overparam"
  spec = ExperimentSpec(seed=0, lr=0.1, width=4, epochs=1)
  with store_ops.ResultStore(store_ops.store_path(folder), "other", "f" * 40) as store:
    store.commit_rows([stored_row(spec)])
  digest = _tree_digest(tmp_path)
  config = [f"--config=experiments/configs/study.py:{TINY}", f"--workdir={tmp_path / 'study'}"]
  dry = _binary(*config, "--dry_run", timeout=120)
  assert dry.returncode == 0, dry.stderr[-2000:]
  assert f"note: {folder} holds 1 run(s) of another sweep" in dry.stdout
  refused = _binary(*config, timeout=120)
  assert refused.returncode == 2
  lines = refused.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "'other'" in lines[0]
  assert _tree_digest(tmp_path) == digest


# --- 2. Projection: the benchmarks' own arithmetic ------------------------------------


def test_study_json_keeps_the_families_of_earlier_stages_of_the_same_plan():
  """A study run in stages lists every family it ran; another plan's record is dropped."""
  first = config_of("reference,families=fixed95_prune")
  second = config_of("reference,families=fixed95_phase1+fixed95_phase2")
  a, b, c = (
    {"family": name, "experiments": n}
    for name, n in (("fixed95_prune", 9720), ("fixed95_phase1", 558), ("fixed95_phase2", 2496))
  )
  earlier = study_runner.study_record(first, [a], None)
  assert earlier["families"] == [a] and earlier["config"]["families"] == ["fixed95_prune"]
  stored = json.loads(json.dumps(earlier))  # as read back from study.json
  record = study_runner.study_record(second, [b, c], stored)
  assert record["families"] == [a, b, c]
  assert record["config"]["families"] == ["fixed95_phase1", "fixed95_phase2"]
  # Rerunning a family replaces its summary instead of listing it twice.
  again = dict(a, experiments=1)
  assert study_runner.study_record(first, [again], record)["families"] == [b, c, again]
  # Another plan (here: other methods) keeps nothing of the earlier record.
  other = config_of("reference,families=fixed95_phase1,methods=snip")
  assert study_runner.study_record(other, [b], stored)["families"] == [b]


def test_projection_matches_the_benchmarks_projections():
  bench = json.loads((ROOT / "bench.json").read_text())
  pruning = json.loads((ROOT / "bench_pruning.json").read_text())
  rates = study_cost.rates_from_bench("here", bench, pruning, "bench.json + bench_pruning.json")
  config = config_of("reference")
  jobs = {
    f.name: study.resolve(config, f, study.reference_answers(config))
    for f in study.all_families(config)
  }
  # The overparameterisation family as experiments.bench_pruning projects it.
  seconds = study_cost.project_seconds(study.workload(jobs["random_overparam"]), rates, 50)
  expected = bench_pruning.project_overparam(pruning["methods"], pruning["plain"])
  assert seconds / 3600 == pytest.approx(expected["hours"], rel=1e-9)
  # Phase 1 + phase 2 at the (3,3,3) widths as experiments.projection projects a search.
  search = study.workload(jobs["random_phase1"]) + study.workload(jobs["random_phase2_95"])
  expected = projection.project(rates.search, (3, 3, 3))
  assert study_cost.project_seconds(search, rates, 50) == pytest.approx(expected["total_seconds"])
  # Shorter runs cost proportionally less; a missing rate is unknown, not zero.
  assert study_cost.project_seconds(search, rates, 5) == pytest.approx(
    expected["total_seconds"] / 10
  )
  empty = study_cost.Rates("none", "", {}, {}, {})
  assert study_cost.project_seconds(search, empty, 50) is None


# --- 3. A tiny study end to end ----------------------------------------------------------


def quiet():
  return dict(progress_stream=io.StringIO(), log=lambda *args: None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("study")
  config = config_of(TINY)
  before = study_cost.plan(config, workdir)
  summaries = study_runner.run(config, workdir, **quiet())
  return SimpleNamespace(config=config, workdir=workdir, before=before, summaries=summaries)


def _rows(folder: Path) -> dict[str, dict]:
  return {r["exp_id"]: r for r in store_ops.merge_stores(store_ops.find_stores(folder))}


def test_adaptive_plan_waits_for_phase1_then_follows_its_answers(tiny):
  waiting = {p.family.name: p.job.waiting for p in tiny.before if p.experiments is None}
  assert waiting["random_phase2_50"] == "depends on random_phase1"
  assert waiting["fixed50_phase1"] == "depends on random_phase1"
  assert waiting["fixed50_phase2"] == "depends on fixed50_phase1"
  assert waiting["fixed50_prune"] == "depends on fixed50_phase1"
  assert "random_overparam" not in waiting and "random_phase1" not in waiting

  config, workdir = tiny.config, tiny.workdir
  summary = {s["family"]: s for s in tiny.summaries}
  # The random phase 1 trains once for both targets; its answer per target is the
  # search's rule, the same as Search wrote in search.json for the first target.
  search = json.loads((workdir / "random_phase1" / "search.json").read_text())
  answer = search["phase1"]["widths"]
  assert summary["random_phase1"]["answers"]["50"] == answer
  assert len(_rows(workdir / "random_phase1")) == 8  # widths 1..2, one setting
  # Phase 2 trains inside the answer; the fixed-init budget is its dense count.
  phase2 = _rows(workdir / "random_phase2_50")
  assert {(r["d1"], r["d2"], r["d3"]) for r in phase2.values()} == {tuple(answer)}
  family = next(f for f in study.all_families(config) if f.name == "fixed50_phase1")
  fixed = study.resolve(config, family, study_stores.read_answers(config, workdir))
  assert fixed.search.phase1_budget == mask_ops.dense_parameter_count(answer)
  # Every family trained exactly what the plan counts, each in its own sub-workdir.
  after = {p.family.name: p for p in study_cost.plan(config, workdir)}
  for name, item in after.items():
    assert item.experiments is not None and item.done.runs == item.experiments, name
    assert summary[name]["experiments"] == item.experiments
    if item.experiments:
      assert len(_rows(workdir / name)) == item.experiments
  # The optimal pruning width is the largest of the fixed-init widths (and 16).
  widths = tuple(summary["fixed50_phase2"]["widths"])
  assert {r["width"] for r in _rows(workdir / "fixed50_prune").values()} <= {max(widths), 16}
  assert json.loads((workdir / "study.json").read_text())["families"] == json.loads(
    json.dumps(tiny.summaries)
  )


def test_dry_run_reads_only_and_rerun_trains_nothing(tiny):
  digest = _tree_digest(tiny.workdir)
  done = _binary(
    f"--config=experiments/configs/study.py:{TINY}", f"--workdir={tiny.workdir}", "--dry_run"
  )
  assert done.returncode == 0, done.stderr[-2000:]
  total = sum(s["experiments"] for s in tiny.summaries)
  lines = done.stdout.strip().splitlines()
  assert lines[-2:] == [f"done: {total:,} of {total:,}", f"total: {total:,} experiments"]
  assert _tree_digest(tiny.workdir) == digest  # the dry run wrote nothing
  stamps = {
    name: [(r["exp_id"], r["created_at"]) for r in store_ops.merge_stores(paths)]
    for name in (s["family"] for s in tiny.summaries)
    if (paths := sorted((tiny.workdir / name).glob("results*.sqlite")))
  }
  summaries = study_runner.run(tiny.config, tiny.workdir, **quiet())
  assert summaries == tiny.summaries
  for name, before in stamps.items():
    paths = sorted((tiny.workdir / name).glob("results*.sqlite"))
    assert [(r["exp_id"], r["created_at"]) for r in store_ops.merge_stores(paths)] == before


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def test_two_distributed_processes_equal_the_unsharded_study(tiny, tmp_path):
  """Two jax.distributed processes, one shard each, train the tiny study; the merged
  rows equal the unsharded ones bit for bit (accuracy, stored weights and masks)."""
  workdir, port = tmp_path / "sharded", _free_port()
  command = [
    sys.executable,
    "-m",
    "experiments.study",
    f"--config=experiments/configs/study.py:{TINY}",
    f"--workdir={workdir}",
    "--distributed",
    f"--coordinator_address=localhost:{port}",
    "--num_processes=2",
    "--poll_seconds=0.2",
  ]
  processes = [
    subprocess.Popen(
      command + [f"--process_id={i}"],
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in (0, 1)
  ]
  outputs = [p.communicate(timeout=300) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  for summary in tiny.summaries:
    name = summary["family"]
    if not summary["experiments"]:
      assert not list((workdir / name).glob("results*.sqlite"))
      continue
    # One store file per shard (a shard with no run of a family writes none).
    for index in (0, 1):
      path = store_ops.store_path(workdir / name, index, 2)
      own = store_ops.merge_stores([path]) if path.exists() else []
      assert all(int(r["exp_id"], 16) % 2 == index for r in own)
    assert {p.name for p in (workdir / name).glob("results*.sqlite")} <= {
      "results-shard000-of-002.sqlite",
      "results-shard001-of-002.sqlite",
    }
    sharded, unsharded = _rows(workdir / name), _rows(tiny.workdir / name)
    assert sorted(sharded) == sorted(unsharded), name
    for exp_id, row in unsharded.items():
      other = sharded[exp_id]
      assert other["accuracy"] == row["accuracy"], (name, exp_id)
      assert other["params"] == row["params"] and other["mask"] == row["mask"], (name, exp_id)
  assert json.loads((workdir / "study.json").read_text())["config"]["methods"] == ["snip"]
