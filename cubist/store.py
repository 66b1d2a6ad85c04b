"""The results database: one SQLite file per shard, one row per experiment.

Why SQLite: it is in the standard library, a single file is easy to copy off a
batch node, and its transactions are durable. In WAL mode with
synchronous=NORMAL a committed transaction survives the process being killed
(only a power cut can lose the last commits), and readers such as the report
never block the writer.

Why one transaction per chunk: the engine trains a chunk of experiments in one
compiled call and commits all of its rows with `commit_rows` at once. A sweep
that is killed loses at most the chunk in flight; on restart the engine drops
every spec whose `exp_id` is in `done_ids()` and carries on. Rows are written
with INSERT OR REPLACE, so re-running a chunk is idempotent.

Shard layout: an unsharded sweep writes `WORKDIR/results.sqlite`; shard i of n
(`--shard_index/--num_shards`) writes `WORKDIR/results-shard{i:03d}-of-{n:03d}.sqlite`
(see `store_path`). Each file records the sweep's name and fingerprint in a
`meta` table, so a workdir cannot silently mix two sweeps; `merge_stores`
reads the shard files back as one deduplicated list of rows.

Note: SQLite stores a NaN REAL as NULL, so a diverged run's NaN loss reads back
as None (and as nan in `to_records`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

# (column, SQL type, required). Required columns are NOT NULL; the result
# columns are optional because a 'failed' run has no metrics, but an 'ok' row
# must carry all of _OK_REQUIRED.
_SCHEMA = (
    ("exp_id", "TEXT", True),
    ("family", "TEXT", True),
    ("method", "TEXT", True),
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
    ("shared_order", "INTEGER", True),
    ("data_order", "TEXT", True),
    ("target_nnz", "INTEGER", False),
    ("mask_config", "TEXT", False),
    ("extra", "TEXT", False),
    ("count_mode", "TEXT", False),
    ("strength", "REAL", False),
    ("threshold", "REAL", False),
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
    ("seconds", "REAL", False),
    ("created_at", "REAL", True),
)
RUN_COLUMNS = tuple(name for name, _, _ in _SCHEMA)
_TYPES = {name: sql_type for name, sql_type, _ in _SCHEMA}
_REQUIRED = tuple(n for n, _, req in _SCHEMA if req and n != "created_at")
_OK_REQUIRED = ("accuracy", "loss", "weight_nnz", "model_nnz",
                "effective_weight_nnz", "mask", "mask_shape", "seconds")
STATUSES = ("ok", "diverged", "failed")

_DDL = "CREATE TABLE IF NOT EXISTS runs (\n  " + ",\n  ".join(
    f"{n} {t}" + (" PRIMARY KEY" if n == "exp_id" else "") + (" NOT NULL" if req else "")
    for n, t, req in _SCHEMA
) + ",\n  CHECK (status IN ('ok', 'diverged', 'failed'))\n)"
_INSERT = (f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})")


class SweepMismatchError(ValueError):
    """The store file belongs to a different sweep (fingerprint differs)."""


def store_path(workdir: str | os.PathLike, shard_index: int = 0, num_shards: int = 1) -> Path:
    """The store file of one shard of a sweep in `workdir`."""
    if num_shards == 1:
        return Path(workdir) / "results.sqlite"
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} is not in [0, {num_shards})")
    return Path(workdir) / f"results-shard{shard_index:03d}-of-{num_shards:03d}.sqlite"


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
    if col in ("extra", "mask_shape", "method_options") and not isinstance(value, str):
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
    """One SQLite file of experiment rows, tagged with the sweep it belongs to."""

    def __init__(self, path: str | os.PathLike, sweep_name: str, sweep_fingerprint: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(_DDL)
            self._add_missing_columns()
            self._db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                                 [("sweep_name", sweep_name), ("sweep_fingerprint", sweep_fingerprint)])
        self._read_meta()
        if self.sweep_fingerprint != sweep_fingerprint:
            self._db.close()
            raise SweepMismatchError(
                f"workdir {self.path.parent} holds sweep {self.sweep_name!r} "
                f"(fingerprint {self.sweep_fingerprint[:12]}...), not {sweep_name!r} "
                f"({sweep_fingerprint[:12]}...); use another --workdir")

    @classmethod
    def open_readonly(cls, path: str | os.PathLike) -> "ResultStore":
        """Open an existing store for reading, whatever sweep it holds."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no result store at {path}")
        self = cls.__new__(cls)
        self.path = path
        self._db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True,
                                   timeout=60, isolation_level=None)
        self._read_meta()
        return self

    def _read_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        self.sweep_name = meta["sweep_name"]
        self.sweep_fingerprint = meta["sweep_fingerprint"]

    @contextlib.contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _add_missing_columns(self) -> None:
        """Stores written before a column existed get it (NULL for their rows)."""
        present = self._columns()
        for name, sql_type, _ in _SCHEMA:
            if name not in present:
                self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {sql_type}")

    def done_ids(self) -> set[str]:
        """exp_ids of every committed row, whatever its status."""
        return {r[0] for r in self._db.execute("SELECT exp_id FROM runs")}

    def commit_rows(self, rows: list[dict]) -> None:
        """Write `rows` in one transaction: all of them or none."""
        for row in rows:
            _check_keys(row)
        now = time.time()
        with self._transaction():
            for row in rows:
                values = {**{"created_at": now}, **row}
                self._db.execute(_INSERT, [_convert(c, values.get(c)) for c in RUN_COLUMNS])

    def rows(self, where: str | None = None, params=()) -> list[dict]:
        """Rows (as dicts over RUN_COLUMNS) matching an SQL `where` clause, by exp_id."""
        # A store written before a column existed (opened read-only, so not
        # migrated) lacks it: such columns read as None.
        present = [c for c in RUN_COLUMNS if c in self._columns()]
        sql = f"SELECT {', '.join(present)} FROM runs"
        if where:
            sql += f" WHERE {where}"
        missing = dict.fromkeys(c for c in RUN_COLUMNS if c not in present)
        return [{**missing, **dict(zip(present, r))}
                for r in self._db.execute(sql + " ORDER BY exp_id", params)]

    def _columns(self) -> set[str]:
        return {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM runs WHERE status = ?", (status,)).fetchone()[0]

    def to_records(self, include_mask: bool = False, where: str | None = None,
                   params=()) -> dict[str, np.ndarray]:
        """Column -> numpy array. See `records_from_rows`."""
        return records_from_rows(self.rows(where, params), include_mask)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def records_from_rows(rows: list[dict], include_mask: bool = False) -> dict[str, np.ndarray]:
    """Column -> numpy array: REAL as float64 (NULL -> nan), INTEGER as int64
    (float64 with nan where a value is NULL), TEXT and BLOB as object arrays.
    The mask column is left out unless `include_mask`."""
    out = {}
    for col in RUN_COLUMNS:
        if col == "mask" and not include_mask:
            continue
        values = [r[col] for r in rows]
        kind = _TYPES[col]
        if kind == "REAL" or (kind == "INTEGER" and None in values):
            out[col] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif kind == "INTEGER":
            out[col] = np.array(values, dtype=np.int64)
        else:
            out[col] = np.array(values + [None], dtype=object)[:-1]  # keep 1-D even for bytes
    return out


def find_stores(workdir: str | os.PathLike) -> list[Path]:
    """Every store file (all shards) in a workdir; a one-line error if there is none."""
    paths = sorted(Path(workdir).glob("results*.sqlite"))
    if not paths:
        raise ValueError(f"no result store (results*.sqlite) in {workdir}")
    return paths


def merge_stores(paths) -> list[dict]:
    """Rows of several shard files of one sweep, deduplicated by exp_id (the
    most recently created row wins), sorted by exp_id."""
    merged: dict[str, dict] = {}
    fingerprint = first = None
    for path in paths:
        with ResultStore.open_readonly(path) as store:
            if fingerprint is None:
                fingerprint, first = store.sweep_fingerprint, path
            elif store.sweep_fingerprint != fingerprint:
                raise ValueError(
                    f"{path} holds sweep {store.sweep_name!r} (fingerprint {store.sweep_fingerprint[:12]}...), "
                    f"but {first} holds fingerprint {fingerprint[:12]}...; they cannot be merged")
            for row in store.rows():
                old = merged.get(row["exp_id"])
                if old is None or row["created_at"] >= old["created_at"]:
                    merged[row["exp_id"]] = row
    return [merged[k] for k in sorted(merged)]
