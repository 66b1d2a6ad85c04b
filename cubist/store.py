"""The results database: one SQLite file per shard, one row per experiment (schema v3).

A row says everything about its run (ARCHITECTURE principle 7): the full spec
as JSON that round-trips to an `ExperimentSpec` (`row_spec`), the repeat
index, status, metrics, measured NNZ counts, the packed final mask and the
trained parameters at the network's occupied width (`row_params`), the
width and layout of the program that trained them (part of the bits, with the
spec), and where those bits hold: `machine`, the signature of the machine that
trained it (cubist.machine, JSON; `row_machine`), and `portable`, 1 when its
bits are the same on every CPU of that machine's arithmetic class (a portable
layout, cubist.layouts, on a CPU), 0 when they are that machine's own
(`machine.bits_key` says when two rows' bits are comparable). The file's
`meta` table records the schema version, the training-semantics version
(cubist.semantics) and the sweep's name and fingerprint.

Schemas: v1 (no semantics version, no spec, no weights), v2 (no `portable` or
`machine`: a v2 row's "dot" layout was library matmuls, machine-specific), v3.

Why SQLite: it is in the standard library, a single file is easy to copy off a
batch node, and its transactions are durable. In WAL mode with
synchronous=NORMAL a committed transaction survives the process being killed,
and readers such as the report never block the writer.

Why one transaction per chunk: the engine trains a chunk in one compiled call
and commits its rows with `commit_rows` at once. A sweep that is killed loses
at most the chunk in flight; on restart the engine skips every exp_id in
`done_ids()`. Rows are written with INSERT OR REPLACE, so re-running a chunk is
idempotent.

Refusals: opening a store to add runs first reads an existing file without
changing it. A file that is not SQLite, an SQLite file that is not a cubist
store, a store of an unknown schema, of an older schema (v1: no semantics
version; v2: no machine per row), of other training semantics or of another
sweep is refused with a one-line `StoreError` naming the file and what to do.
Old and foreign-version stores stay readable (`open_readonly`, `merge_stores`):
columns an old schema lacks read as None, and rows carry `schema` and
`semantics` so the report can mark them.

A writer holds an exclusive lock (`<store>.lock`, with its pid) for as long as
the store is open: two processes cannot train into one file; shards still run
concurrently, each on its own file. The store file itself is created at the
first commit, so a sweep that fails before finishing a chunk leaves none.

Shard layout: an unsharded sweep writes `WORKDIR/results.sqlite`; shard i of n
writes `WORKDIR/results-shard{i:03d}-of-{n:03d}.sqlite` (`store_path`). A
workdir holds one layout: a writer beside store files of another layout is
refused (`check_layout`), naming the layout found and the flags that continue it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import sqlite3
import time
from pathlib import Path

from cubist import masks as mask_ops
from cubist import mlp
from cubist.semantics import SEMANTICS_VERSION
from cubist.specs import ExperimentSpec

SCHEMA_VERSION = 3

# (column, SQL type, required). Required columns are NOT NULL; result columns
# are optional because a 'failed' run has no metrics (an 'ok' row must carry
# all of _OK_REQUIRED) and a diverged run has no meaningful NNZ.
_SCHEMA = (
  ("exp_id", "TEXT", True),
  ("spec", "TEXT", True),
  ("family", "TEXT", True),
  ("method", "TEXT", True),
  ("repeat", "INTEGER", True),
  ("width", "INTEGER", True),
  ("d1", "INTEGER", True),
  ("d2", "INTEGER", True),
  ("d3", "INTEGER", True),
  ("seed", "INTEGER", True),
  ("lr", "REAL", True),
  ("schedule", "TEXT", True),
  ("epochs", "INTEGER", True),
  ("batch_size", "INTEGER", True),
  ("init", "TEXT", True),
  ("init_id", "TEXT", True),
  ("shared_order", "INTEGER", True),
  ("data_order", "TEXT", True),
  ("target_nnz", "INTEGER", False),
  ("mask_config", "TEXT", False),
  ("source_id", "TEXT", False),
  ("source_method", "TEXT", False),
  ("count_mode", "TEXT", True),
  ("strength", "REAL", True),
  ("threshold", "REAL", True),
  ("method_options", "TEXT", False),
  ("status", "TEXT", True),
  ("accuracy", "REAL", False),
  ("loss", "REAL", False),
  ("weight_nnz", "INTEGER", False),
  ("model_nnz", "INTEGER", False),
  ("effective_weight_nnz", "INTEGER", False),
  ("dead_units", "INTEGER", False),
  ("mask", "BLOB", False),
  ("mask_shape", "TEXT", False),
  ("params", "BLOB", False),
  ("params_width", "INTEGER", False),
  ("trained_width", "INTEGER", True),
  ("layout", "TEXT", True),
  ("portable", "INTEGER", True),
  ("machine", "TEXT", True),
  ("seconds", "REAL", False),
  ("created_at", "REAL", True),
)
RUN_COLUMNS = tuple(name for name, _, _ in _SCHEMA)
_TYPES = {name: sql_type for name, sql_type, _ in _SCHEMA}
_REQUIRED = tuple(n for n, _, req in _SCHEMA if req and n != "created_at")
_OK_REQUIRED = (
  "accuracy",
  "loss",
  "weight_nnz",
  "model_nnz",
  "effective_weight_nnz",
  "mask",
  "mask_shape",
  "params",
  "params_width",
  "seconds",
)
STATUSES = ("ok", "diverged", "failed")

_DDL = (
  "CREATE TABLE runs (\n  "
  + ",\n  ".join(
    f"{n} {t}" + (" PRIMARY KEY" if n == "exp_id" else "") + (" NOT NULL" if req else "")
    for n, t, req in _SCHEMA
  )
  + ",\n  CHECK (status IN ('ok', 'diverged', 'failed'))\n)"
)
_INSERT = (
  f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) "
  f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})"
)


class StoreError(ValueError):
  """A store file that cannot be used as asked (one line: which file, why, what to do)."""


class SweepMismatchError(StoreError):
  """The store file belongs to a different sweep (fingerprint differs)."""


def store_path(workdir: str | os.PathLike, shard_index: int = 0, num_shards: int = 1) -> Path:
  """The store file of one shard of a sweep in `workdir`."""
  if num_shards < 1:
    raise ValueError(f"num_shards={num_shards} must be >= 1")
  if num_shards == 1:
    return Path(workdir) / "results.sqlite"
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index={shard_index} must be in 0..{num_shards - 1}")
  return Path(workdir) / f"results-shard{shard_index:03d}-of-{num_shards:03d}.sqlite"


_SHARD_NAME = re.compile(r"results-shard(\d{3,})-of-(\d{3,})\.sqlite")


def store_layout(path: str | os.PathLike) -> int | None:
  """The shard count a store file's name belongs to: 1 for results.sqlite, n for
  results-shardIII-of-NNN.sqlite, None for any other name."""
  name = Path(path).name
  if name == "results.sqlite":
    return 1
  match = _SHARD_NAME.fullmatch(name)
  return int(match.group(2)) if match else None


def check_layout(path: str | os.PathLike) -> None:
  """Raise StoreError if `path`'s workdir holds store files of another shard layout.

  A sweep rerun with another --num_shards would otherwise ignore the finished
  files of the first layout and silently train everything again (into new
  files that the report then merges with the old). The error names the layout
  found and the flags that continue it. Nothing is changed.
  """
  path = Path(path)
  layout = store_layout(path)
  if layout is None or not path.parent.is_dir():
    return
  found = sorted(
    p.name for p in path.parent.glob("results*.sqlite") if store_layout(p) not in (None, layout)
  )
  if not found:
    return
  layouts = sorted({store_layout(name) for name in found})
  this = "an unsharded store" if layout == 1 else f"the files of {layout} shards"
  if layouts == [1]:
    raise StoreError(
      f"workdir {path.parent} holds an unsharded store (results.sqlite) but this run writes "
      f"{this}; rerun without --num_shards/--shard_index to continue it, or use another --workdir"
    )
  count = layouts[-1]
  raise StoreError(
    f"workdir {path.parent} holds the store files of a {count}-shard sweep ({len(found)} "
    f"file(s): {found[0]}, ...) but this run writes {this}; rerun with --num_shards={count} "
    f"and --shard_index=0..{count - 1} (one process each) to continue it, or use another --workdir"
  )


def _connect_readonly(path: Path) -> sqlite3.Connection:
  """A read-only connection that leaves a cleanly closed store byte for byte as it was.

  Without a -wal file everything is in the main file, so it is opened
  `immutable` (no -shm is created, and it works in a read-only folder). With
  one (a writer is running, or was killed), a plain read-only connection sees
  the committed transactions in it; in a read-only folder, where that
  connection cannot create its -shm, the immutable fallback reads the main
  file only.
  """
  uri = path.resolve().as_uri()
  if not path.with_name(path.name + "-wal").exists():
    return sqlite3.connect(uri + "?immutable=1", uri=True, timeout=60, isolation_level=None)
  db = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=60, isolation_level=None)
  try:
    db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
  except sqlite3.OperationalError:
    db.close()
    db = sqlite3.connect(uri + "?immutable=1", uri=True, timeout=60, isolation_level=None)
  return db


def read_meta(path: str | os.PathLike) -> dict | None:
  """The meta table of an existing store file, without changing it.

  Returns {"schema": int, "semantics": int | None, "sweep_name", "sweep_fingerprint"},
  or None for an empty database (no tables: a store being created, or an empty file).
  Raises StoreError for a file that is not SQLite, not a cubist store, or damaged.
  """
  path = Path(path)
  if not os.access(path, os.R_OK):
    raise StoreError(f"{path} cannot be read (permission denied); check the file's permissions")
  try:
    db = _connect_readonly(path)
    try:
      tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
      if not tables:
        return None
      if not {"meta", "runs"} <= tables:
        raise StoreError(
          f"{path} is an SQLite file but not a cubist result store (no "
          "meta/runs tables); move it away or use another --workdir"
        )
      meta = dict(db.execute("SELECT key, value FROM meta"))
      db.execute("SELECT exp_id FROM runs").fetchall()  # reads every page of the index
    finally:
      db.close()
  except sqlite3.DatabaseError as error:
    raise StoreError(
      f"{path} is not a readable cubist result store ({error}: a corrupt, "
      "truncated or foreign file); move it away or use another --workdir"
    ) from None
  if "sweep_fingerprint" not in meta:
    raise StoreError(
      f"{path} is an SQLite file but not a cubist result store (no sweep "
      "fingerprint); move it away or use another --workdir"
    )
  semantics = meta.get("semantics_version")
  return {
    "schema": int(meta.get("schema_version", 1)),
    "semantics": None if semantics is None else int(semantics),
    "sweep_name": meta.get("sweep_name", "?"),
    "sweep_fingerprint": meta["sweep_fingerprint"],
  }


# What an older schema lacks, for the refusal of a writer.
_OLD_SCHEMAS = {
  1: "no training-semantics version",
  2: "its rows do not record the machine that trained them",
}


def check_writable(path: str | os.PathLike, sweep_name: str, sweep_fingerprint: str) -> None:
  """Raise StoreError unless runs of this sweep and code may be added to `path`.

  A missing file is fine (it will be created). Nothing is changed.
  """
  path = Path(path)
  if not path.exists():
    return
  if path.is_dir():
    raise StoreError(f"{path} is a directory, not a result store; move it away")
  meta = read_meta(path)
  if meta is None:
    return  # empty: the writer creates the tables
  if meta["schema"] in _OLD_SCHEMAS:
    raise StoreError(
      f"{path} is a schema-v{meta['schema']} store written by older cubist code "
      f"({_OLD_SCHEMAS[meta['schema']]}); the report still reads it, but new runs cannot "
      "join it: use another --workdir"
    )
  if meta["schema"] != SCHEMA_VERSION:
    raise StoreError(
      f"{path} has store schema v{meta['schema']}, which this code (v"
      f"{SCHEMA_VERSION}) does not know; use the code that wrote it or another "
      "--workdir"
    )
  if meta["semantics"] != SEMANTICS_VERSION:
    raise StoreError(
      f"{path} holds runs of training semantics v{meta['semantics']}, this code trains "
      f"v{SEMANTICS_VERSION}; they must not be mixed: use another --workdir (the report reads both)"
    )
  if meta["sweep_fingerprint"] != sweep_fingerprint:
    raise SweepMismatchError(
      f"workdir {path.parent} holds sweep {meta['sweep_name']!r} "
      f"(fingerprint {meta['sweep_fingerprint'][:12]}...), not {sweep_name!r} "
      f"({sweep_fingerprint[:12]}...); use another --workdir"
    )


def _convert(col: str, value):
  """A Python/numpy value as the plain type sqlite3 binds for `col`."""
  if value is None:
    return None
  kind = _TYPES[col]
  if kind == "INTEGER":
    return int(value)
  if kind == "REAL":
    return float(value)
  if kind == "BLOB":
    return bytes(value)
  if col in ("mask_shape", "method_options", "machine") and not isinstance(value, str):
    return json.dumps(value, sort_keys=True)
  return str(value)


def _check_keys(row: dict) -> None:
  unknown = [k for k in row if k not in _TYPES]
  if unknown:
    raise ValueError(f"unknown run column(s) {unknown} in row {row.get('exp_id')!r}")
  required = _REQUIRED + (_OK_REQUIRED if row.get("status") == "ok" else ())
  missing = [k for k in required if row.get(k) is None]
  if missing:
    raise ValueError(f"row {row.get('exp_id')!r} lacks required column(s) {missing}")
  if row["status"] not in STATUSES:
    raise ValueError(f"row {row['exp_id']!r}: status {row['status']!r} is not one of {STATUSES}")


class ResultStore:
  """One SQLite store file of one sweep, opened to add runs (see the module docstring)."""

  def __init__(self, path: str | os.PathLike, sweep_name: str, sweep_fingerprint: str):
    """Check an existing file (nothing changes on a refusal), then take the writer's lock."""
    self.path = Path(path)
    self.sweep_name, self.sweep_fingerprint = sweep_name, sweep_fingerprint
    check_layout(self.path)
    check_writable(self.path, sweep_name, sweep_fingerprint)
    self._db = None
    self._made_dirs = []
    self._lock = self._take_lock()
    if self.path.exists():
      self._open()

  def _take_lock(self):
    """An exclusive flock on `<store>.lock` (creating the workdir if needed)."""
    parent = self.path.parent
    missing = []
    while not parent.exists():
      missing.append(parent)
      parent = parent.parent
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self._made_dirs = missing
      lock = open(self.lock_path, "a+")
    except OSError as error:
      why = error.strerror
      if isinstance(error, (FileExistsError, NotADirectoryError)):
        why = "a file is in the way: it or a parent is not a directory"
      raise StoreError(
        f"cannot write to {self.path.parent} ({why}); choose a writable --workdir"
      ) from None
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      lock.seek(0)
      holder = lock.read().strip() or "?"
      lock.close()
      raise StoreError(
        f"{self.path} is in use by process {holder}; wait for it to finish "
        "or stop it (two processes must not train into one store)"
      ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock

  @property
  def lock_path(self) -> Path:
    return self.path.with_name(self.path.name + ".lock")

  def _open(self) -> None:
    """Open (creating at the first commit) the file for writing."""
    self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
    self._db.execute("PRAGMA journal_mode=WAL")
    self._db.execute("PRAGMA synchronous=NORMAL")
    if not self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
      with self._transaction():
        self._db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute(_DDL)
        self._db.executemany(
          "INSERT INTO meta VALUES (?, ?)",
          [
            ("schema_version", str(SCHEMA_VERSION)),
            ("semantics_version", str(SEMANTICS_VERSION)),
            ("sweep_name", self.sweep_name),
            ("sweep_fingerprint", self.sweep_fingerprint),
          ],
        )

  @classmethod
  def open_readonly(cls, path: str | os.PathLike) -> "StoreReader":
    """Open an existing store for reading, whatever sweep, schema or semantics it holds."""
    return StoreReader(path)

  @contextlib.contextmanager
  def _transaction(self):
    self._db.execute("BEGIN IMMEDIATE")
    try:
      yield
    except BaseException:
      self._db.execute("ROLLBACK")
      raise
    self._db.execute("COMMIT")

  def done_ids(self) -> set[str]:
    """exp_ids of every committed row, whatever its status."""
    if self._db is None:
      return set()
    return {r[0] for r in self._db.execute("SELECT exp_id FROM runs")}

  def commit_rows(self, rows: list[dict]) -> None:
    """Write `rows` in one transaction: all of them or none."""
    for row in rows:
      _check_keys(row)
    if self._db is None:
      self._open()
    now = time.time()
    with self._transaction():
      for row in rows:
        values = {**{"created_at": now}, **row}
        self._db.execute(_INSERT, [_convert(c, values.get(c)) for c in RUN_COLUMNS])

  def rows(self, where: str | None = None, params=()) -> list[dict]:
    """Rows (dicts over RUN_COLUMNS) matching an SQL `where` clause, by exp_id."""
    if self._db is None:
      return []
    return _select(self._db, RUN_COLUMNS, where, params)

  def count(self, status: str | None = None) -> int:
    if self._db is None:
      return 0
    if status is None:
      return self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    return self._db.execute("SELECT COUNT(*) FROM runs WHERE status = ?", (status,)).fetchone()[0]

  def close(self) -> None:
    """Close the file and release the lock; a store that never committed leaves nothing."""
    if self._db is not None:
      self._db.close()
      self._db = None
    if self._lock is not None:
      if not self.path.exists():
        self.lock_path.unlink(missing_ok=True)
        for folder in self._made_dirs:  # innermost first
          with contextlib.suppress(OSError):
            folder.rmdir()
      self._lock.close()
      self._lock = None

  def __enter__(self) -> "ResultStore":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:  # not contextlib.suppress: at interpreter exit module globals may be gone
      self.close()
    except Exception:
      pass


def _select(db: sqlite3.Connection, wanted, where=None, params=()) -> list[dict]:
  """Rows with every `wanted` column (None where the table lacks it) and any other it has."""
  columns = [row[1] for row in db.execute("PRAGMA table_info(runs)")]
  sql = f"SELECT {', '.join(columns)} FROM runs"
  if where:
    sql += f" WHERE {where}"
  missing = dict.fromkeys(c for c in wanted if c not in columns)
  return [
    {**missing, **dict(zip(columns, r))} for r in db.execute(sql + " ORDER BY exp_id", params)
  ]


class StoreReader:
  """A store opened read-only, whatever its schema, semantics or sweep (for the report).

  Rows carry every RUN_COLUMN (None where an old schema lacks it) plus
  `schema` and `semantics`, the store's versions. An empty database (a store
  being created) reads as no rows, with `empty` set.
  """

  def __init__(self, path: str | os.PathLike, missing_ok: bool = False):
    """missing_ok: a file that does not exist (nothing committed yet) reads as empty."""
    self.path = Path(path)
    self._db = None
    if not self.path.is_file() and not (missing_ok and not self.path.exists()):
      raise StoreError(f"no result store at {self.path}")
    meta = read_meta(self.path) if self.path.exists() else None
    self.empty = meta is None
    meta = meta or {
      "schema": SCHEMA_VERSION,
      "semantics": SEMANTICS_VERSION,
      "sweep_name": "",
      "sweep_fingerprint": "",
    }
    self.schema, self.semantics = meta["schema"], meta["semantics"]
    self.sweep_name, self.sweep_fingerprint = meta["sweep_name"], meta["sweep_fingerprint"]
    if not self.empty:
      self._db = _connect_readonly(self.path)

  def rows(self, where: str | None = None, params=()) -> list[dict]:
    if self.empty:
      return []
    rows = _select(self._db, RUN_COLUMNS, where, params)
    for row in rows:
      row["schema"], row["semantics"] = self.schema, self.semantics
    return rows

  def count(self, status: str | None = None) -> int:
    return len(self.rows("status = ?", (status,)) if status else self.done_ids())

  def done_ids(self) -> set[str]:
    return set() if self.empty else {r[0] for r in self._db.execute("SELECT exp_id FROM runs")}

  def close(self) -> None:
    if self._db is not None:
      self._db.close()
      self._db = None

  def __enter__(self) -> "StoreReader":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def row_spec(row: dict) -> ExperimentSpec:
  """The ExperimentSpec a (schema v2 or later) row was trained from."""
  if not row.get("spec"):
    raise StoreError(
      f"run {row.get('exp_id')} comes from a schema-v{row.get('schema', 1)} store, "
      "which does not record its spec"
    )
  return ExperimentSpec.from_json(row["spec"])


def row_params(row: dict, width: int | None = None) -> mlp.Params:
  """A row's trained parameters (numpy float32), zero-padded to `width` (default: the run's)."""
  if row.get("params") is None:
    raise StoreError(
      f"run {row.get('exp_id')} has no stored weights (status "
      f"{row.get('status')}, schema v{row.get('schema', SCHEMA_VERSION)})"
    )
  params = mlp.unpack_params(row["params"], int(row["params_width"]))
  return mlp.pad_params(params, int(row["width"] if width is None else width))


def row_machine(row: dict) -> dict | None:
  """The signature of the machine that trained a row (cubist.machine); None for a row of
  a store older than schema v3, which did not record it."""
  text = row.get("machine")
  if text is None:
    return None
  if isinstance(text, dict):  # a row not yet stored (chunks.result_rows)
    return dict(text)
  try:
    machine = json.loads(text)
  except (TypeError, ValueError):
    machine = None
  if not isinstance(machine, dict):
    raise StoreError(f"run {row.get('exp_id')}: its machine column is not a JSON object")
  return machine


def row_masks(row: dict) -> mlp.Params:
  """A row's final bool masks at the run's full width."""
  return mask_ops.unpack_masks(row["mask"], row["mask_shape"])


def find_stores(workdir: str | os.PathLike) -> list[Path]:
  """Every store file (all shards) in a workdir; a one-line error if there is none."""
  workdir = Path(workdir)
  if not workdir.is_dir():
    raise StoreError(f"workdir {workdir} does not exist or is not a directory")
  paths = sorted(workdir.glob("results*.sqlite"))
  if not paths:
    raise StoreError(f"no result store (results*.sqlite) in {workdir}")
  return paths


def merge_stores(paths) -> list[dict]:
  """Rows of several shard files of one sweep, deduplicated by exp_id (the most
  recently created row wins), sorted by exp_id."""
  merged: dict[str, dict] = {}
  fingerprint = first = None
  for path in paths:
    with StoreReader(path) as store:
      if store.empty:
        continue
      if fingerprint is None:
        fingerprint, first = store.sweep_fingerprint, path
      elif store.sweep_fingerprint != fingerprint:
        raise StoreError(
          f"{path} holds sweep {store.sweep_name!r} (fingerprint {store.sweep_fingerprint[:12]}...), "
          f"but {first} holds fingerprint {fingerprint[:12]}...; they cannot be merged"
        )
      for row in store.rows():
        old = merged.get(row["exp_id"])
        if old is None or row["created_at"] >= old["created_at"]:
          merged[row["exp_id"]] = row
  return [merged[k] for k in sorted(merged)]
