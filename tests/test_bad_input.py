"""Every bad input and every fault: one line on stderr, exit status 2, nothing changed.

Table-driven (issue 10). Each `Case` names a binary, its arguments, the files
it meets (`setup`) and what its one `error:` line must say. One driver
subprocess imports the library once and forks a child per case that runs the
binary exactly as `python -m experiments.<binary>` would (runpy, so absl and
ml_collections start fresh), with stdout and stderr captured; about 60 cases
take a few seconds. Before and after, every file and folder under the case's
own folder is snapshotted (names, modes, bytes): a refused command creates,
changes and removes nothing. A case that needs a read-only place runs its
child as an unprivileged user when the tests run as root (root ignores
permissions).

Also here: Ctrl-C / SIGTERM during a real (1-epoch) sweep and its resume, JAX's
start-up in the binaries (no libtpu line, one host device per core, no backend
created at import), the summaries' diverged runs, and safe file names for the
report.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from cubist import mlp, summary
from cubist.specs import ExperimentSpec
from cubist.store import ResultStore, store_path
from search.pruning import families
from search.report import page
from tests.rows import stored_row

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
AS_ROOT = os.geteuid() == 0
FP = "f" * 40

# A tiny train sweep (one 1-epoch run at (3,3,3)): what the store and workdir
# cases run, so that a case that wrongly got through would train, not hang.
TRAIN = [
  "--config=experiments/configs/train.py:quick",
  "--config.seeds=(0,)",
  "--config.lrs=(0.1,)",
  '--config.schedules=("constant",)',
  "--config.epochs=1",
  "--config.widths=((3,3,3),)",
]
PRUNE = ["--config=experiments/configs/prune.py:overparam,quick", "--config.epochs=1"]
SEARCH = ["--config=experiments/configs/search.py:quick", "--config.epochs=1"]


def _with(base, *extra) -> tuple[str, ...]:
  """`base` arguments with `extra` added; an extra --flag replaces base's (a tuple override
  given twice would be joined by ml_collections, not replaced)."""
  names = {arg.split("=", 1)[0] for arg in extra}
  return (*[arg for arg in base if arg.split("=", 1)[0] not in names], *extra)


@dataclasses.dataclass(frozen=True)
class Case:
  """One command: `binary` with `args` ({d}: the case's folder), what it must print.

  expect: substrings of the one `error:` line (status 2), or of stdout when
    `status` is not 2. setup(d): makes the files the command meets.
  readonly: run as an unprivileged user (when root), for read-only places.
  cwd: the folder to run from ({d} allowed; default the repository).
  changes: a subfolder of {d} the command may write (a report's output).
  """

  name: str
  binary: str
  args: tuple[str, ...]
  expect: tuple[str, ...]
  setup: Callable[[Path], None] | None = None
  status: int = 2
  readonly: bool = False
  cwd: str = str(ROOT)
  env: tuple[tuple[str, str], ...] = ()
  changes: str | None = None


# --- Files the cases meet ---------------------------------------------------------


def _spec(seed: int = 0) -> ExperimentSpec:
  return ExperimentSpec(seed=seed, lr=0.1, width=4, widths=(3, 3, 3), epochs=1)


def _store(path: Path, fingerprint: str = FP, rows: int = 1, name: str = "other") -> None:
  with ResultStore(path, name, fingerprint) as store:
    store.commit_rows([stored_row(_spec(seed)) for seed in range(rows)])


def _good_init(path: Path) -> None:
  rng = np.random.default_rng(0)
  arrays = {
    f"layer{i}_{kind}": rng.uniform(-0.3, 0.3, shape).astype(np.float32)
    for i, pair in enumerate(mlp.layer_shapes(16), start=1)
    for kind, shape in zip(("weight", "bias"), pair)
  }
  np.savez(path, **arrays)


def _file(name: str, data: bytes | str) -> Callable[[Path], None]:
  def make(d: Path) -> None:
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)

  return make


def _truncated_init(d: Path) -> None:
  _good_init(d / "good.npz")
  data = (d / "good.npz").read_bytes()
  (d / "init.npz").write_bytes(data[: len(data) // 2])
  (d / "good.npz").unlink()


def _npy_init(d: Path) -> None:
  np.save(d / "init.npy", np.zeros((16, 2), np.float32))


def _wrong_keys_init(d: Path) -> None:
  np.savez(d / "init.npz", weights=np.zeros(3))


def _nan_init(d: Path) -> None:
  _good_init(d / "init.npz")
  with np.load(d / "init.npz") as loaded:
    arrays = dict(loaded)
  arrays["layer2_bias"][:] = np.nan
  np.savez(d / "init.npz", **arrays)


def _dir_init(d: Path) -> None:
  (d / "init.npz").mkdir()


def _workdir(d: Path) -> None:
  (d / "w").mkdir()


def _corrupt_store(d: Path) -> None:
  _file("w/results.sqlite", b"SQLite format 3\x00" + bytes(range(256)) * 16)(d)


def _truncated_store(d: Path) -> None:
  _store(d / "w" / "results.sqlite", rows=30)
  path = d / "w" / "results.sqlite"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  (d / "w" / "results.sqlite.lock").unlink()


def _foreign_sqlite(d: Path) -> None:
  (d / "w").mkdir()
  with sqlite3.connect(d / "w" / "results.sqlite") as db:
    db.execute("CREATE TABLE songs (title TEXT)")
  db.close()


def _v1_store(d: Path) -> None:
  (d / "w").mkdir()
  with sqlite3.connect(d / "w" / "results.sqlite") as db:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("CREATE TABLE runs (exp_id TEXT PRIMARY KEY)")
    db.execute("INSERT INTO meta VALUES ('sweep_fingerprint', 'abc')")
  db.close()


def _v2_store(d: Path) -> None:
  """A store as schema v2 wrote it (no portable or machine column), of the previous semantics."""
  _store(d / "w" / "results.sqlite")
  with sqlite3.connect(d / "w" / "results.sqlite") as db:
    db.execute("ALTER TABLE runs DROP COLUMN machine")
    db.execute("ALTER TABLE runs DROP COLUMN portable")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.execute("UPDATE meta SET value = '4' WHERE key = 'semantics_version'")
  db.close()
  (d / "w" / "results.sqlite.lock").unlink()


def _other_semantics(d: Path) -> None:
  _store(d / "w" / "results.sqlite")
  with sqlite3.connect(d / "w" / "results.sqlite") as db:
    db.execute("UPDATE meta SET value = '0' WHERE key = 'semantics_version'")
  db.close()


def _other_sweep(d: Path) -> None:
  _store(d / "w" / "results.sqlite")


def _shards(count: int, done: tuple[int, ...]) -> Callable[[Path], None]:
  def make(d: Path) -> None:
    for index in done:
      _store(store_path(d / "w", index, count))

  return make


def _unsharded(d: Path) -> None:
  _store(store_path(d / "w"))


def _store_is_a_dir(d: Path) -> None:
  (d / "w" / "results.sqlite").mkdir(parents=True)


def _read_only_workdir(d: Path) -> None:
  (d / "w").mkdir()
  (d / "w").chmod(0o555)


def _read_only_parent(d: Path) -> None:
  (d / "ro").mkdir()
  (d / "ro").chmod(0o555)


def _read_only_store(d: Path) -> None:
  """A store copied off a cluster into a read-only place, and a writable place for the page."""
  _store(d / "w" / "results.sqlite", rows=2)
  (d / "w" / "results.sqlite.lock").unlink()
  (d / "w" / "results.sqlite").chmod(0o444)
  (d / "w").chmod(0o555)
  (d / "out").mkdir()
  (d / "out").chmod(0o777)


def _crafted_store(d: Path) -> None:
  """Store contents are data: a method and an exp_id that look like paths."""
  spec = ExperimentSpec(seed=3, lr=0.1, width=4, epochs=1, method="imp", target_nnz=20)
  row = stored_row(spec, accuracy=0.8, weight_nnz=20, model_nnz=28)
  row.update(method="../../evil", exp_id="../../x", family="overparam")
  with ResultStore(d / "w" / "results.sqlite", "crafted", FP) as store:
    store.commit_rows([row])


_HELD_LOCKS = []


def _locked_store(d: Path) -> None:
  """Another process (the test) holds the writer's lock of the store file."""
  (d / "w").mkdir()
  lock = open(d / "w" / "results.sqlite.lock", "a+")
  fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  lock.write("4242")
  lock.flush()
  _HELD_LOCKS.append(lock)


def _retrain_source_without_runs(d: Path) -> None:
  (d / "src").mkdir()


# --- The table --------------------------------------------------------------------

W = "--workdir={d}/w"
CASES = [
  # Config mistakes, caught while absl parses the flags.
  Case(
    "unknown variant",
    "train",
    ("--config=experiments/configs/train.py:foo", W),
    ("config (experiments/configs/train.py:foo)", "unknown train config option(s) ['foo']"),
  ),
  Case(
    "two prune families",
    "prune",
    ("--config=experiments/configs/prune.py:overparam,sos", W),
    ("choose one family", "overparam", "sos"),
  ),
  Case(
    "missing config file",
    "train",
    ("--config=experiments/configs/nope.py", W),
    ("config file (experiments/configs/nope.py): no such file",),
  ),
  Case(
    "config path relative to another folder",
    "train",
    ("--config=experiments/configs/train.py", W),
    ("no such file (relative to {d})", f"run from {ROOT}"),
    cwd="{d}",
  ),
  Case("config is a directory", "train", ("--config=experiments/configs", W), ("is a directory",)),
  Case(
    "config is not python",
    "train",
    ("--config=pyproject.toml", W),
    ("is not a Python config file",),
  ),
  Case(
    "config file with a syntax error",
    "train",
    ("--config={d}/bad.py", W),
    ("config file ({d}/bad.py:1): invalid Python",),
    setup=_file("bad.py", "def get_config(:\n"),
  ),
  Case(
    "misspelt override",
    "train",
    _with(TRAIN, "--config.foo=1", W),
    ("config override (--config.foo=1)", "no field 'foo'", "epochs"),
  ),
  Case(
    "override of the wrong type",
    "train",
    _with(TRAIN, "--config.epochs=abc", W),
    ("config override (--config.epochs=abc)",),
  ),
  Case(
    "search target not a number",
    "search",
    ("--config=experiments/configs/search.py:target=abc", W),
    ("search config option target='abc' is not a number",),
  ),
  Case(
    "search target out of range",
    "search",
    ("--config=experiments/configs/search.py:target=150", W),
    ("target=1.5 (150%) must be in (0, 1]",),
  ),
  Case(
    "search phase-2 budget not a positive integer",
    "search",
    ("--config=experiments/configs/search.py:phase2_max_masks=0", W),
    ("search config option phase2_max_masks='0' is not an integer >= 1",),
  ),
  Case(
    "search unknown option",
    "search",
    ("--config=experiments/configs/search.py:targte=95", W),
    ("unknown search config option(s) ['targte']",),
  ),
  Case(
    "prune fixed without a path",
    "prune",
    ("--config=experiments/configs/prune.py:fixed,quick", W),
    ("option fixed needs a path",),
  ),
  Case(
    "prune width not an integer",
    "prune",
    ("--config=experiments/configs/prune.py:fixed=x.npz,width=inf", W),
    ("width='inf' is not a finite number",),
  ),
  Case(
    "unknown pruning method",
    "prune",
    ("--config=experiments/configs/prune.py:overparam,quick,methods=imp+snp", W),
    ("unknown pruning method 'snp'",),
  ),
  Case("unknown flag", "train", _with(TRAIN, "--bogus=1", W), ("flag (--bogus): no such flag",)),
  Case("missing workdir flag", "train", TRAIN, ("--workdir",)),
  Case("stray argument", "train", _with(TRAIN, W, "extra"), ("unexpected arguments",)),
  Case(
    "debug shows the traceback",
    "train",
    ("--config=experiments/configs/train.py:foo", W, "--debug"),
    ("Traceback", "unknown train config option(s)"),
    status=1,
  ),
  # Sweeps that expand to zero runs: an error naming the field.
  Case(
    "unreachable prune target",
    "prune",
    _with(PRUNE, "--config.targets=(1000,)", W),
    ("config.targets=(1000,)", "no runs"),
  ),
  Case("prune width zero", "prune", _with(PRUNE, "--config.widths=(0,)", W), ("config.widths",)),
  Case("prune zero repeats", "prune", _with(PRUNE, "--config.repeats=0", W), ("config.repeats=0",)),
  Case(
    "prune no methods",
    "prune",
    _with(PRUNE, "--config.methods=()", W),
    ("config.methods is empty",),
  ),
  Case("train no seeds", "train", _with(TRAIN, "--config.seeds=()", W), ("config.seeds is empty",)),
  Case(
    "train width zero", "train", _with(TRAIN, "--config.widths=(0,)", W), ("config.widths=(0,)",)
  ),
  Case("train no lrs", "train", _with(TRAIN, "--config.lrs=()", W), ("config.lrs is empty",)),
  Case(
    "search phase-1 budget too small",
    "search",
    _with(SEARCH, "--config.phase1_budget=1", W),
    ("phase1_budget=1 leaves no width triple",),
  ),
  # Values that must be finite and in range.
  Case(
    "train lr inf", "train", _with(TRAIN, "--config.lrs=(1e999,)", W), ("lr=inf must be finite",)
  ),
  Case("train lr negative", "train", _with(TRAIN, "--config.lrs=(-0.1,)", W), ("lr=-0.1",)),
  Case(
    "search lr inf",
    "search",
    _with(SEARCH, "--config.lrs=(1e999,)", W),
    ("lr=inf must be > 0 and finite",),
  ),
  Case("batch size zero", "train", _with(TRAIN, "--config.batch_size=0", W), ("batch_size=0",)),
  Case("epochs zero", "train", _with(TRAIN, "--config.epochs=0", W), ("epochs=0",)),
  Case("width out of range", "train", _with(TRAIN, "--config.widths=((3,3,99),)", W), ("d3=99",)),
  Case(
    "zero shards", "train", _with(TRAIN, W, "--num_shards=0"), ("--num_shards=0", "must be >= 1")
  ),
  Case(
    "shard index too large",
    "train",
    _with(TRAIN, W, "--num_shards=2", "--shard_index=2"),
    ("--shard_index=2", "0..1"),
  ),
  Case("negative shard index", "prune", _with(PRUNE, W, "--shard_index=-1"), ("--shard_index=-1",)),
  Case("search zero shards", "search", _with(SEARCH, W, "--num_shards=0"), ("--num_shards=0",)),
  Case(
    "report target above 100",
    "report",
    ("--targets=150", W),
    ("--targets=150", "(0, 100]"),
    setup=_unsharded,
  ),
  Case("report target nan", "report", ("--targets=95,nan", W), ("'nan'",), setup=_unsharded),
  Case("report target text", "report", ("--targets=abc", W), ("'abc'",), setup=_unsharded),
  Case("report target zero", "report", ("--targets=0", W), ("(0, 100]",), setup=_unsharded),
  Case(
    "report negative tolerance",
    "report",
    ("--reproduce_tolerance=-0.1", W),
    ("--reproduce_tolerance",),
    setup=_unsharded,
  ),
  # Init files.
  Case(
    "init missing",
    "train",
    _with(TRAIN, "--config.init={d}/nope.npz", W),
    ("init file", "nope.npz", "No such file"),
  ),
  Case(
    "init truncated zip",
    "train",
    _with(TRAIN, "--config.init={d}/init.npz", W),
    ("init file", "init.npz", "damaged zip"),
    setup=_truncated_init,
  ),
  Case(
    "init empty file",
    "train",
    _with(TRAIN, "--config.init={d}/init.npz", W),
    ("init.npz", "empty or truncated"),
    setup=_file("init.npz", b""),
  ),
  Case(
    "init plain npy",
    "train",
    _with(TRAIN, "--config.init={d}/init.npy", W),
    ("init.npy", "single array"),
    setup=_npy_init,
  ),
  Case(
    "init is a directory",
    "train",
    _with(TRAIN, "--config.init={d}/init.npz", W),
    ("init.npz",),
    setup=_dir_init,
  ),
  Case(
    "init garbage bytes",
    "train",
    _with(TRAIN, "--config.init={d}/init.npz", W),
    ("init.npz", "not an npz archive"),
    setup=_file("init.npz", bytes(range(256)) * 4),
  ),
  Case(
    "init wrong keys",
    "train",
    _with(TRAIN, "--config.init={d}/init.npz", W),
    ("init.npz", "missing keys", "layer1_weight"),
    setup=_wrong_keys_init,
  ),
  Case(
    "init non-finite",
    "train",
    _with(TRAIN, "--config.init={d}/init.npz", W),
    ("init.npz", "non-finite"),
    setup=_nan_init,
  ),
  Case(
    "search init garbage",
    "search",
    ("--config=experiments/configs/search.py:quick,fixed={d}/init.npz", W),
    ("init.npz", "not an npz archive"),
    setup=_file("init.npz", "hello"),
  ),
  # The workdir and the store.
  Case(
    "workdir is a file",
    "train",
    _with(TRAIN, W),
    ("workdir ({d}/w): is a file",),
    setup=_file("w", "x"),
  ),
  Case(
    "parent is a file",
    "train",
    _with(TRAIN, "--workdir={d}/f/w"),
    ("cannot be created", "is a file"),
    setup=_file("f", "x"),
  ),
  Case("empty workdir flag", "train", _with(TRAIN, "--workdir="), ("workdir ('')", "empty")),
  Case(
    "read-only workdir",
    "train",
    _with(TRAIN, W),
    ("workdir ({d}/w): is not writable",),
    setup=_read_only_workdir,
    readonly=True,
  ),
  Case(
    "read-only parent",
    "prune",
    _with(PRUNE, "--workdir={d}/ro/w"),
    ("cannot be created", "not writable"),
    setup=_read_only_parent,
    readonly=True,
  ),
  Case(
    "corrupt store",
    "train",
    _with(TRAIN, W),
    ("results.sqlite is not a readable cubist result store",),
    setup=_corrupt_store,
  ),
  Case(
    "truncated store",
    "train",
    _with(TRAIN, W),
    ("results.sqlite is not a readable cubist result store",),
    setup=_truncated_store,
  ),
  Case(
    "not a database",
    "train",
    _with(TRAIN, W),
    ("results.sqlite is not a readable cubist result store",),
    setup=_file("w/results.sqlite", "these are my notes\n" * 40),
  ),
  Case(
    "foreign sqlite",
    "train",
    _with(TRAIN, W),
    ("not a cubist result store",),
    setup=_foreign_sqlite,
  ),
  Case("schema v1 store", "train", _with(TRAIN, W), ("schema-v1 store",), setup=_v1_store),
  Case(
    "schema v2 store",
    "train",
    _with(TRAIN, W),
    ("schema-v2 store", "the report still reads it"),
    setup=_v2_store,
  ),
  Case(
    "other semantics",
    "train",
    _with(TRAIN, W),
    ("training semantics v0",),
    setup=_other_semantics,
  ),
  Case("other sweep", "train", _with(TRAIN, W), ("holds sweep 'other'",), setup=_other_sweep),
  Case(
    "store is a directory",
    "train",
    _with(TRAIN, W),
    ("is a directory",),
    setup=_store_is_a_dir,
  ),
  Case(
    "locked by another process",
    "train",
    _with(TRAIN, W),
    ("in use by process 4242",),
    setup=_locked_store,
  ),
  Case(
    "2 shards rerun unsharded",
    "train",
    _with(TRAIN, W),
    ("2-shard sweep", "--num_shards=2"),
    setup=_shards(2, (0,)),
  ),
  Case(
    "2 shards rerun with 3",
    "train",
    _with(TRAIN, W, "--num_shards=3", "--shard_index=0"),
    ("2-shard sweep", "--num_shards=2", "--shard_index=0..1"),
    setup=_shards(2, (0, 1)),
  ),
  Case(
    "unsharded rerun with shards",
    "prune",
    _with(PRUNE, W, "--num_shards=2", "--shard_index=1"),
    ("unsharded store", "rerun without --num_shards"),
    setup=_unsharded,
  ),
  Case(
    "search unsharded rerun with shards",
    "search",
    _with(SEARCH, W, "--num_shards=2"),
    ("unsharded store",),
    setup=_unsharded,
  ),
  Case(
    "search workdir is a file", "search", _with(SEARCH, W), ("is a file",), setup=_file("w", "x")
  ),
  Case(
    "search corrupt store",
    "search",
    _with(SEARCH, W),
    ("not a readable cubist result store",),
    setup=_corrupt_store,
  ),
  Case(
    "retrain from a workdir without a store",
    "prune",
    ("--config=experiments/configs/prune.py:retrain={d}/src", W),
    ("no result store",),
    setup=_retrain_source_without_runs,
  ),
  # The report.
  Case("report missing workdir", "report", (W,), ("does not exist",)),
  Case("report no store", "report", (W,), ("no result store",), setup=_workdir),
  Case(
    "report corrupt store",
    "report",
    (W, "--out={d}/out"),
    ("not a readable cubist result store",),
    setup=_corrupt_store,
  ),
  Case(
    "report workdir is a file",
    "report",
    (W,),
    ("is not a directory",),
    setup=_file("w", "x"),
  ),
  Case(
    "report read-only store needs --out",
    "report",
    (W,),
    ("output folder ({d}/w/report)", "pass --out="),
    setup=_read_only_store,
    readonly=True,
  ),
  Case(
    "report out is a file",
    "report",
    (W, "--out={d}/f"),
    ("output folder ({d}/f): is a file",),
    setup=lambda d: (_unsharded(d), _file("f", "x")(d)),
  ),
  Case("report stray argument", "report", (W, "extra"), ("unexpected arguments",), setup=_workdir),
  # Not errors: what must work, and help.
  Case(
    "report reads a read-only store",
    "report",
    (W, "--out={d}/out"),
    ("report: {d}/out/index.html",),
    setup=_read_only_store,
    readonly=True,
    status=0,
    changes="out",
  ),
  Case(
    "report marks a schema v2 store of older semantics",
    "report",
    (W, "--out={d}/out"),
    ("report: {d}/out/index.html", "v4 store {d}/w/results.sqlite: trained under semantics v4"),
    setup=_v2_store,
    status=0,
    changes="out",
  ),
  Case(
    "report keeps crafted names inside its folder",
    "report",
    (W, "--out={d}/out"),
    ("report: {d}/out/index.html",),
    setup=_crafted_store,
    status=0,
    changes="out",
  ),
  *[
    Case(f"{binary} --help", binary, ("--help",), flags_, status=0)
    for binary, flags_ in (
      ("train", ("--config", "--workdir", "--num_shards", "--shard_index", "--[no]debug")),
      ("prune", ("--config", "--workdir", "--num_shards", "--shard_index", "--[no]debug")),
      ("search", ("--config", "--workdir", "--num_shards", "--distributed", "--[no]debug")),
      (
        "report",
        ("--workdir", "--out", "--targets", "--reproduce", "--reproduce_tolerance", "--[no]debug"),
      ),
    )
  ],
]
ERROR_CASES = [case for case in CASES if case.status == 2]
assert len({case.name for case in CASES}) == len(CASES)


# --- The driver: one process, a fork per case ---------------------------------------


def _drive(cases_path: str, results_path: str) -> None:
  """Run every case of cases_path (JSON) in a forked child; write their outcomes."""
  # The driver's own imports (it runs in a fresh process): the library, loaded once
  # for every child, and the flag every binary shares; no binary (their flags clash).
  import runpy
  import traceback

  import jax
  from jax._src import xla_bridge

  import experiments.cli  # noqa: F401
  import search.combinatorial  # noqa: F401
  import search.report  # noqa: F401

  assert not xla_bridge._backends, "importing the binaries' libraries created a JAX backend"
  sys.path.insert(0, str(ROOT))
  results = {}
  for case in json.loads(Path(cases_path).read_text()):
    out, err = Path(results_path + ".out"), Path(results_path + ".err")
    began = time.perf_counter()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: become `python -m experiments.<binary> ...`
      code = 1
      started = os.open(results_path + ".jax", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
      try:
        os.chdir(case["cwd"])
        os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.environ.update(case["env"])
        jax.config.update("jax_enable_compilation_cache", False)
        if case["user"] is not None:
          os.setgid(case["user"])
          os.setuid(case["user"])
        sys.argv = [str(ROOT / "experiments" / f"{case['binary']}.py"), *case["args"]]
        try:
          runpy.run_module(f"experiments.{case['binary']}", run_name="__main__", alter_sys=True)
          code = 0
        except SystemExit as done:
          if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
          code = done.code if isinstance(done.code, int) else int(done.code is not None)
      except BaseException:
        traceback.print_exc()
        code = 1
      finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(started, json.dumps(bool(xla_bridge._backends)).encode())
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results[case["name"]] = {
      "status": os.waitstatus_to_exitcode(status),
      "stdout": out.read_text(errors="replace"),
      "stderr": err.read_text(errors="replace"),
      "seconds": time.perf_counter() - began,
      "jax_started": json.loads(Path(results_path + ".jax").read_text()),
    }
  Path(results_path).write_text(json.dumps(results))


def _snapshot(folder: Path, skip: str | None = None) -> dict:
  """Every path under `folder` with its kind, mode and content hash."""
  found = {}
  for path in sorted(folder.rglob("*")):
    relative = path.relative_to(folder)
    if skip is not None and relative.parts[0] == skip:
      continue
    info = path.lstat()
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    found[str(relative)] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), digest)
  return found


def _fill(text: str, d: Path) -> str:
  return text.replace("{d}", str(d)).replace("{root}", str(ROOT))


@pytest.fixture(scope="module")
def outcomes():
  """Set up every case's folder, run them all in one driver, snapshot before and after."""
  base = Path(tempfile.mkdtemp(prefix="cubist-bad-input-"))
  base.chmod(0o755)  # an unprivileged child must reach its case's folder
  runs, folders, before = [], {}, {}
  try:
    for index, case in enumerate(CASES):
      d = base / f"case{index:02d}"
      d.mkdir()
      d.chmod(0o755)
      if case.setup is not None:
        case.setup(d)
      folders[case.name] = d
      before[case.name] = _snapshot(d, case.changes)
      user = NOBODY if case.readonly and AS_ROOT else None
      env = dict(case.env)
      if user is not None:
        env.setdefault("MPLCONFIGDIR", str(base / "mpl"))
      runs.append(
        dict(
          name=case.name,
          binary=case.binary,
          args=[_fill(a, d) for a in case.args],
          cwd=_fill(case.cwd, d),
          env=env,
          user=user,
        )
      )
    (base / "mpl").mkdir(mode=0o777)
    (base / "mpl").chmod(0o777)
    (base / "cases.json").write_text(json.dumps(runs))
    results = base / "results.json"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tests.test_bad_input import _drive; _drive(*sys.argv[1:])"
    done = subprocess.run(
      [sys.executable, "-c", code, str(base / "cases.json"), str(results)],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(results.read_text())
    after = {name: _snapshot(folders[name], CASES_BY_NAME[name].changes) for name in found}
    yield {
      name: dict(found[name], folder=folders[name], before=before[name], after=after[name])
      for name in found
    }
  finally:
    for lock in _HELD_LOCKS:
      lock.close()
    for path in [base, *base.rglob("*")]:
      if path.is_dir() and not path.is_symlink():
        path.chmod(0o755)
    shutil.rmtree(base, ignore_errors=True)


CASES_BY_NAME = {case.name: case for case in CASES}


def test_the_table_is_large_enough():
  assert len(ERROR_CASES) >= 40


@pytest.mark.parametrize("case", ERROR_CASES, ids=[case.name for case in ERROR_CASES])
def test_bad_input_is_one_line_and_changes_nothing(outcomes, case):
  got = outcomes[case.name]
  d = got["folder"]
  lines = [line for line in got["stderr"].splitlines() if line.strip()]
  assert got["status"] == 2, got["stderr"][-3000:]
  assert len(lines) == 1, got["stderr"][-3000:]
  assert lines[0].startswith("error: ")
  for text in case.expect:
    assert _fill(text, d) in lines[0], lines[0]
  assert "Traceback" not in got["stderr"]
  assert got["stdout"] == ""
  assert not got["jax_started"]  # refused before JAX made a backend, so before any compile
  assert got["after"] == got["before"]  # nothing created, changed or removed


@pytest.mark.parametrize(
  "case",
  [case for case in CASES if case.status != 2],
  ids=[case.name for case in CASES if case.status != 2],
)
def test_what_must_work_works(outcomes, case):
  got = outcomes[case.name]
  d = got["folder"]
  assert got["status"] == case.status, got["stderr"][-3000:]
  text = got["stdout"] + got["stderr"]
  for expected in case.expect:
    assert _fill(expected, d) in text, text[-3000:]
  assert got["after"] == got["before"]  # outside its output folder, nothing changed
  if case.changes is None:
    return
  written = [p.relative_to(d / case.changes) for p in (d / case.changes).rglob("*")]
  assert Path("index.html") in written
  assert not any(".." in p.parts for p in written)
  if "crafted" in case.name:
    diagrams = [p.name for p in (d / case.changes / "diagrams").iterdir()]
    assert any(n.startswith("evil-") and n.endswith(".png") for n in diagrams), diagrams
    assert not (d.parent / "evil.png").exists() and not (d / "evil.png").exists()


def test_help_is_quiet_about_test_only_flags():
  """--helpfull lists no absltest, chex or pytest flags (none of them is imported)."""
  for binary in ("train", "report"):
    done = subprocess.run(
      [sys.executable, "-m", f"experiments.{binary}", "--helpfull"],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
    )
    for name in ("absl.testing", "chex", "test_srcdir", "test_tmpdir", "pytest"):
      assert name not in done.stdout, name


# --- Ctrl-C and SIGTERM during a real sweep ------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_commits_the_chunk_in_flight_and_says_how_to_resume(tmp_path, signum):
  """Three 1-epoch runs in three width buckets (three chunks); the signal arrives after
  the first commit: the binary commits the chunk in flight, prints one line and exits 130;
  the printed command finishes the sweep. JAX_PLATFORMS is unset, as a user's is."""
  args = [
    *TRAIN[:-1],
    "--config.widths=((3,3,3),(4,4,4),(5,5,5))",
    f"--workdir={tmp_path / 'w'}",
  ]
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  command = [sys.executable, "-m", "experiments.train", *args]
  err = tmp_path / "stderr"
  with open(err, "w") as handle:
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=handle, env=env)
    deadline = time.time() + 600
    while "1/3 experiments" not in err.read_text() and proc.poll() is None:
      assert time.time() < deadline
      time.sleep(0.05)
    proc.send_signal(signum)
    stdout, _ = proc.communicate(timeout=600)
  stderr = err.read_text()
  assert proc.returncode == 130, stderr
  assert "Traceback" not in stderr and "Unable to initialize backend" not in stderr, stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("interrupted: 2 runs committed in this session"), last
  assert "1 still to train" in last and "resume with: " in last
  assert stdout == b""
  resume = last.split("resume with: ", 1)[1]
  done = subprocess.run(resume, shell=True, cwd=ROOT, capture_output=True, text=True, env=env)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "3 runs in" in done.stdout
  assert "1/1 experiments" in done.stderr  # only the run that was left


def test_second_ctrl_c_abandons_the_first_chunk_and_leaves_no_store(tmp_path):
  """Ctrl-C twice while the first chunk trains: nothing was committed, so the store is
  never created and the workdir the sweep made is removed again; one line, exit 130."""
  workdir = tmp_path / "w"
  args = [*_with(TRAIN, "--config.epochs=80"), f"--workdir={workdir}"]
  err = tmp_path / "stderr"
  with open(err, "w") as handle:
    proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.train", *args], cwd=ROOT, stderr=handle
    )
    deadline = time.time() + 600
    while not (workdir / "results.sqlite.lock").exists():  # handlers are in place
      assert proc.poll() is None and time.time() < deadline, err.read_text()
      time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    while "stopping after the chunk in flight" not in err.read_text():
      assert proc.poll() is None and time.time() < deadline, err.read_text()
      time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=600)
  stderr = err.read_text()
  assert proc.returncode == 130, stderr
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("interrupted: the chunk in flight was abandoned; 0 runs are kept"), last
  assert not workdir.exists()


def test_search_interrupt_keeps_committed_runs_and_says_how_to_resume(tmp_path):
  """SIGTERM during the search: it stops after the chunk in flight is committed, every
  committed run stays, one line with the resume command, exit 130."""
  workdir = tmp_path / "w"
  command = [sys.executable, "-m", "experiments.search", *SEARCH, f"--workdir={workdir}"]
  err = tmp_path / "stderr"
  with open(err, "w") as handle:
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=handle)
    deadline = time.time() + 600
    while " experiments | " not in err.read_text():  # a chunk is committed
      assert proc.poll() is None and time.time() < deadline, err.read_text()
      time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=600)
  stderr = err.read_text()
  assert proc.returncode == 130, stderr
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("interrupted: "), last
  kept = int(last[len("interrupted: ") :].split()[0])
  assert kept >= 1 and "resume with: " in last and "experiments.search" in last


# --- JAX start-up in the binaries ------------------------------------------------------


def test_binaries_configure_jax_in_main_not_at_import():
  """Importing a binary creates no backend and changes no XLA flag; main()'s start-up gives
  the CPU one host device per core, with no libtpu line (a user's environment: no
  JAX_PLATFORMS, no host-device flag)."""
  code = """
import os, sys
from jax._src import xla_bridge
import experiments.train, experiments.prune  # noqa: F401
assert not xla_bridge._backends
assert "host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")
from experiments import cli
from cubist import devices
import jax
assert cli.configure_jax()
print(jax.default_backend(), jax.device_count(), min(devices.cpu_cores(), 16))
"""
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  done = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
  )
  assert done.returncode == 0, done.stderr[-3000:]
  backend, count, cores = done.stdout.split()
  assert backend == "cpu" and count == cores
  assert "Unable to initialize backend" not in done.stderr


# --- Summaries: diverged runs apart, never nan% ------------------------------------------


def _rows(statuses):
  rows = []
  for seed, (status, accuracy) in enumerate(statuses):
    spec = ExperimentSpec(
      seed=seed, lr=0.1, width=4, epochs=1, method="imp", target_nnz=20, family="overparam"
    )
    rows.append(stored_row(spec, status, accuracy))
  return rows


def test_summaries_count_diverged_runs_apart_from_accuracies():
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no numpy warning (mean of nothing, all-NaN)
    rows = _rows([("ok", 0.9), ("diverged", 0.1), ("ok", 0.7)])
    table = summary.table(rows, group_by=("width",))
    assert "80.00%" in table and "90.00%" in table  # the diverged run's 10% is not in
    header, line = table.splitlines()
    assert dict(zip(header.split(), line.split()))["diverged"] == "1"
    (row,) = families.summary_rows(rows)
    assert (row["runs"], row["diverged"], row["failed"]) == (3, 1, 0)
    assert row["best"] == pytest.approx(0.9) and row["median"] == pytest.approx(0.8)
    everything_diverged = _rows([("diverged", 0.5), ("diverged", 0.5)])
    assert "nan" not in summary.table(everything_diverged, group_by=("width",))
    (row,) = families.summary_rows(everything_diverged)
    assert row["best"] is None and row["median"] is None and row["weight_nnz"] == []


def test_prune_summary_never_prints_nan_percent():
  """The prune binary's table for a group whose runs all diverged (in a subprocess: a
  binary's module defines absl flags, which must not meet the other binaries' here)."""
  code = """
from tests.test_bad_input import _rows
import experiments.prune as prune_binary
print(prune_binary.format_summary(_rows([("diverged", 0.5)])))
"""
  done = subprocess.run(
    [sys.executable, "-W", "error", "-c", code],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  header, line = done.stdout.strip().splitlines()
  names = ("runs", "diverged", "failed", "best", "median", "weight_nnz")
  cells = dict(zip(names, line.split()[-len(names) :]))  # (the empty setting has no cell)
  assert header.split()[-len(names) :] == list(names)
  assert cells["runs"] == "1" and cells["diverged"] == "1" and cells["weight_nnz"] == "-"
  assert cells["best"] == "-" and cells["median"] == "-" and "nan" not in done.stdout


# --- Store contents as file names ------------------------------------------------------


@pytest.mark.parametrize(
  "text", ["../../x", "a/b", ".hidden", "x..y", "", "a" * 300, "é", "x.", "..", "/abs"]
)
def test_safe_name_stays_inside_its_folder(text, tmp_path):
  name = page.safe_name(text)
  assert "/" not in name and not name.startswith(".") and ".." not in name
  assert 0 < len(name) <= 64
  assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_safe_name_keeps_plain_names_and_separates_different_texts():
  for plain in ("snip", "search_0.95", "lottery", "scratch_e", "gmp+clean", "a-b"):
    assert page.safe_name(plain) == plain
  assert page.safe_name("a/b") != page.safe_name("a_b") and page.safe_name("a/b") != page.safe_name(
    "a?b"
  )
