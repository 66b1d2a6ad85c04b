"""Tests of the results store (cubist/store.py), schema v3, and of cubist/machine.py."""

import dataclasses
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cubist import machine, mlp
from cubist import masks as mask_ops
from cubist.semantics import SEMANTICS_VERSION
from cubist.specs import ExperimentSpec
from cubist.store import (
  RUN_COLUMNS,
  ResultStore,
  StoreError,
  StoreReader,
  SweepMismatchError,
  merge_stores,
  row_machine,
  row_masks,
  row_params,
  row_spec,
  store_path,
)
from tests.rows import stored_row

ROOT = Path(__file__).resolve().parents[1]
FP = "f" * 64


def make_row(exp_id, **overrides):
  spec = ExperimentSpec(
    seed=7,
    lr=0.5,
    width=8,
    widths=(3, 4, 5),
    epochs=10,
    repeat=2,
    family="search",
    mask_config="n1:0,n2:1,n3:2",
  )
  row = stored_row(spec)
  row.update(exp_id=exp_id, **overrides)
  return row


def test_round_trip_spec_weights_and_every_column(tmp_path):
  spec = ExperimentSpec(
    seed=7,
    lr=0.5,
    width=8,
    widths=(3, 4, 5),
    epochs=10,
    repeat=2,
    method="imp",
    target_nnz=20,
    method_options=(("clean", True),),
    family="overparam",
  )
  params = tuple(
    mlp.Layer(
      np.arange(np.prod(m.weight.shape), dtype=np.float32).reshape(m.weight.shape) * m.weight,
      np.full(m.bias.shape, 0.25, np.float32) * m.bias,
    )
    for m in spec.masks()
  )
  with ResultStore(tmp_path / "r.sqlite", "demo", FP) as store:
    store.commit_rows(
      [
        stored_row(spec, params=params),
        stored_row(dataclasses.replace(spec, seed=8), "diverged", 0.5, exp_id="b"),
      ]
    )
    rows = {r["exp_id"]: r for r in store.rows()}
    a, b = rows[spec.exp_id()], rows["b"]
    assert set(a) == set(RUN_COLUMNS)
    assert row_spec(a) == spec and row_spec(a).exp_id() == spec.exp_id()
    assert (a["repeat"], a["method"], a["family"], a["params_width"]) == (2, "imp", "overparam", 5)
    for got, want in zip(row_params(a), params):
      np.testing.assert_array_equal(got.weight, want.weight)
      np.testing.assert_array_equal(got.bias, want.bias)
    assert [m.weight.tolist() for m in row_masks(a)] == [m.weight.tolist() for m in spec.masks()]
    assert a["layout"] == "dot" and a["created_at"] > 0
    # A diverged run keeps its (NaN) weights but has no loss and no NNZ counts.
    assert (b["status"], b["loss"], b["weight_nnz"], b["model_nnz"]) == (
      "diverged",
      None,
      None,
      None,
    )
    assert np.isnan(row_params(b, 5)[0].weight).all()  # at its occupied width 5
    assert store.count() == 2 and store.count("ok") == 1 and store.count("diverged") == 1


def test_spec_json_round_trips_masks_and_options():
  masks = mask_ops.structured_masks((2, 1, 3), 16)
  masks[1].weight[0, 1] = True
  spec = ExperimentSpec(
    seed=3,
    lr=0.1,
    width=16,
    mask=masks,
    family="phase2",
    mask_config="x",
    method_options=(("sos_scope", "global"),),
    source_id="abc",
  )
  again = ExperimentSpec.from_json(spec.to_json())
  assert again == spec and again.exp_id() == spec.exp_id()
  assert [m.weight.tolist() for m in again.masks()] == [m.weight.tolist() for m in masks]
  with pytest.raises(ValueError, match="unknown spec field"):
    ExperimentSpec.from_dict({**spec.to_dict(), "colour": "red"})


def test_init_enters_the_exp_id_by_contents_not_path(tmp_path, monkeypatch):
  shared = ROOT.parent / "shared" / "data" / "bench95_init.npz"
  if not shared.is_file():
    pytest.skip("no shared init here")
  copy = tmp_path / "renamed.npz"
  copy.write_bytes(shared.read_bytes())
  monkeypatch.chdir(shared.parent)
  relative = ExperimentSpec(seed=1, lr=0.1, init="bench95_init.npz")
  for other in (str(shared), str(copy)):
    assert ExperimentSpec(seed=1, lr=0.1, init=other).exp_id() == relative.exp_id()
  digest = hashlib.sha256(shared.read_bytes()).hexdigest()[:16]
  assert relative.init_id() == f"sha256:{digest}"


def test_done_ids_and_idempotent_rerun(tmp_path):
  with ResultStore(tmp_path / "r.sqlite", "demo", FP) as store:
    assert store.done_ids() == set()
    store.commit_rows([make_row("a"), make_row("b")])
    store.commit_rows([make_row("b", accuracy=0.25)])  # a re-run chunk replaces
    assert store.done_ids() == {"a", "b"}
    assert store.rows("exp_id = 'b'")[0]["accuracy"] == 0.25


@pytest.mark.parametrize(
  "bad, match",
  [
    (dict(colour="red"), "colour"),  # unknown key
    (dict(method=None), "method"),  # missing required key
    (dict(params=None), "params"),  # an 'ok' row needs its weights
    (dict(status="crashed"), "crashed"),
    (dict(width="not a number"), "not a number"),  # fails mid-transaction
  ],
)
def test_commit_is_all_or_nothing(tmp_path, bad, match):
  with ResultStore(tmp_path / "r.sqlite", "demo", FP) as store:
    store.commit_rows([make_row("old")])
    with pytest.raises(ValueError, match=match):
      store.commit_rows([make_row("a"), make_row("b", **bad), make_row("c")])
    assert store.done_ids() == {"old"}
    store.commit_rows([make_row("d")])  # the store is still usable
    assert store.done_ids() == {"old", "d"}


def test_failed_row_needs_no_metrics(tmp_path):
  row = {
    k: v
    for k, v in make_row("x", status="failed").items()
    if k not in ("accuracy", "loss", "mask", "mask_shape", "params")
  }
  with ResultStore(tmp_path / "r.sqlite", "demo", FP) as store:
    store.commit_rows([row])
    assert store.rows()[0]["accuracy"] is None


def test_no_commit_leaves_no_store_and_no_workdir(tmp_path):
  path = tmp_path / "new" / "deeper" / "results.sqlite"
  with ResultStore(path, "demo", FP) as store:
    assert store.done_ids() == set() and store.rows() == []
  assert not (tmp_path / "new").exists()


def _snapshot(folder: Path) -> dict:
  return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _v1_store(path: Path) -> None:
  db = sqlite3.connect(path)
  db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
  db.execute(
    "CREATE TABLE runs (exp_id TEXT PRIMARY KEY, family TEXT, method TEXT, status TEXT,"
    " accuracy REAL, weight_nnz INTEGER, created_at REAL, extra TEXT)"
  )
  db.executemany(
    "INSERT INTO meta VALUES (?, ?)", [("sweep_name", "old"), ("sweep_fingerprint", FP)]
  )
  db.execute("INSERT INTO runs VALUES ('a', 'prune', 'imp', 'ok', 0.9, 30, 1.0, 'overparam')")
  db.commit()
  db.close()


def _other_semantics(path: Path) -> None:
  with ResultStore(path, "demo", FP) as store:
    store.commit_rows([make_row("a")])
  db = sqlite3.connect(path)
  db.execute(
    "UPDATE meta SET value = ? WHERE key = 'semantics_version'", (str(SEMANTICS_VERSION - 1),)
  )
  db.commit()
  db.close()


def _v2_store(path: Path) -> None:
  """A store as schema v2 wrote it: no portable or machine column, semantics v4 at most."""
  with ResultStore(path, "demo", FP) as store:
    store.commit_rows([make_row("a"), make_row("b", layout="unit")])
  db = sqlite3.connect(path)
  db.execute("ALTER TABLE runs DROP COLUMN machine")
  db.execute("ALTER TABLE runs DROP COLUMN portable")
  db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
  db.execute("UPDATE meta SET value = '4' WHERE key = 'semantics_version'")
  db.commit()
  db.close()


def _foreign_sqlite(path: Path) -> None:
  db = sqlite3.connect(path)
  db.execute("CREATE TABLE customers (name TEXT)")
  db.commit()
  db.close()


def _truncated(path: Path) -> None:
  with ResultStore(path, "demo", FP) as store:
    store.commit_rows([make_row(f"r{i}") for i in range(40)])
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
  "make, match",
  [
    (_v1_store, "schema-v1 store written by older cubist code"),
    (_v2_store, "schema-v2 store written by older cubist code .* the report still reads it"),
    (_other_semantics, f"training semantics v{SEMANTICS_VERSION - 1}, this code trains"),
    (_foreign_sqlite, "not a cubist result store"),
    (lambda p: p.write_bytes(b"garbage" * 1000), "not a readable cubist result store"),
    (_truncated, "not a readable cubist result store"),
    (lambda p: p.mkdir(), "is a directory"),
  ],
)
def test_stores_that_cannot_take_runs_are_refused_and_left_untouched(tmp_path, make, match):
  path = tmp_path / "w" / "results.sqlite"
  path.parent.mkdir()
  make(path)
  before = _snapshot(path.parent)
  with pytest.raises(StoreError, match=match) as err:
    ResultStore(path, "demo", FP)
  assert "\n" not in str(err.value) and str(path) in str(err.value)
  assert _snapshot(path.parent) == before


def test_an_empty_file_becomes_a_store(tmp_path):
  path = tmp_path / "results.sqlite"
  path.write_bytes(b"")
  with ResultStore.open_readonly(path) as store:
    assert store.empty and store.rows() == []
  with ResultStore(path, "demo", FP) as store:
    store.commit_rows([make_row("a")])
  assert [r["exp_id"] for r in merge_stores([path])] == ["a"]


def test_old_and_other_semantics_stores_stay_readable(tmp_path):
  path = tmp_path / "results.sqlite"
  _v1_store(path)
  with ResultStore.open_readonly(path) as store:
    (row,) = store.rows()
    assert (store.schema, store.semantics, row["schema"], row["extra"]) == (1, None, 1, "overparam")
    assert row["spec"] is None and row["params"] is None
  with pytest.raises(StoreError, match="does not record its spec"):
    row_spec(row)


def test_a_schema_v2_store_reads_without_machine_columns(tmp_path):
  path = tmp_path / "results.sqlite"
  _v2_store(path)
  with StoreReader(path) as store:
    rows = store.rows()
  assert (store.schema, store.semantics) == (2, 4)
  assert [(r["exp_id"], r["layout"], r["schema"], r["semantics"]) for r in rows] == [
    ("a", "dot", 2, 4),
    ("b", "unit", 2, 4),
  ]
  assert all(r["portable"] is None and r["machine"] is None for r in rows)
  assert row_machine(rows[0]) is None and row_spec(rows[0]) == row_spec(make_row("a"))
  assert [r["exp_id"] for r in merge_stores([path])] == ["a", "b"]


def test_a_row_records_its_machine_and_whether_its_bits_are_portable(tmp_path):
  with ResultStore(tmp_path / "r.sqlite", "demo", FP) as store:
    spec = row_spec(make_row("a"))
    store.commit_rows(
      [stored_row(spec, layout=name, exp_id=name) for name in ("dot", "unit", "gemm")]
    )
    rows = {r["exp_id"]: r for r in store.rows()}
  here = machine.signature()
  assert here["backend"] == "cpu"  # the tests run on JAX's CPU backend (conftest)
  for row in rows.values():
    stored = json.loads(row["machine"])
    assert stored == here == row_machine(row)
    assert row["machine"] == json.dumps(here, sort_keys=True)
    assert set(stored) >= {"backend", "cpu", "arch", "isa", "arithmetic", "jax", "jaxlib"}
    assert stored["isa"] == sorted(stored["isa"])
  assert (rows["dot"]["portable"], rows["unit"]["portable"], rows["gemm"]["portable"]) == (1, 1, 0)
  with pytest.raises(StoreError, match="not a JSON object"):
    row_machine({"exp_id": "x", "machine": "[1, 2]"})


def _machine(**changes) -> dict:
  base = {
    "backend": "cpu",
    "device": "cpu",
    "cpu": "AMD EPYC 9654 96-Core Processor",
    "arch": "x86_64",
    "isa": ["avx", "avx2", "avx512f", "bmi2", "fma", "sse4_2"],
    "arithmetic": "x86-64+fma",
    "jax": "0.10.2",
    "jaxlib": "0.10.2",
  }
  return {**base, **changes}


def test_bits_key_says_when_bits_are_comparable():
  epyc = _machine()
  haswell = _machine(cpu="Intel(R) Xeon(R) CPU E5-2680 v3", isa=["avx", "avx2", "fma", "sse4_2"])
  nofma = _machine(cpu="Intel(R) Xeon(R) CPU E5-2670", isa=["avx", "sse4_2"])
  nofma["arithmetic"] = machine.arithmetic_class("x86_64", nofma["isa"])
  assert nofma["arithmetic"] == "x86-64-nofma"
  key = machine.bits_key
  # Portable rows: one key for every CPU of one arithmetic class under one jaxlib.
  assert key(epyc, True) == key(haswell, True) == key(_machine(jax="0.10.1"), True)
  assert key(epyc, True) != key(nofma, True)
  assert key(epyc, True) != key(_machine(jaxlib="0.10.1"), True)
  assert key(epyc, True) != key(epyc, False)
  # Machine-specific rows ("gemm", accelerators): the whole signature.
  assert key(epyc, False) == key(_machine(), False)
  assert key(epyc, False) != key(haswell, False)
  assert key(epyc, False) != key(_machine(isa=["avx", "avx2", "fma"]), False)
  assert key(epyc, False) != key(_machine(jax="0.10.1"), False)
  gpu = _machine(backend="gpu", device="NVIDIA H100 80GB HBM3")
  assert key(gpu, True) == key(gpu, False) != key(_machine(backend="gpu", device="A100"), True)
  # Unknown: an old row without a machine; an x86-64 CPU whose flags were unreadable.
  assert key(None, True) is None
  unknown = _machine(isa=[], arithmetic=machine.arithmetic_class("x86_64", None))
  assert unknown["arithmetic"] == "x86-64-unknown"
  assert key(unknown, True) == key(unknown, False) != key(_machine(isa=[]), True)
  assert machine.arithmetic_class("aarch64", ["asimd"]) == "aarch64"


def test_reopen_same_and_different_fingerprint(tmp_path):
  path = tmp_path / "w" / "results.sqlite"
  with ResultStore(path, "demo", FP) as store:
    store.commit_rows([make_row("a")])
  with ResultStore(path, "demo", FP) as store:
    assert store.done_ids() == {"a"}
  with pytest.raises(SweepMismatchError) as err:
    ResultStore(path, "other", "0123456789abcdef")
  msg = str(err.value)
  assert "\n" not in msg and "'demo'" in msg and "'other'" in msg and "--workdir" in msg
  assert str(path.parent) in msg
  with ResultStore.open_readonly(path) as store:  # reports skip the check
    assert (store.sweep_name, store.count()) == ("demo", 1)


def test_one_writer_per_store_file(tmp_path):
  path = tmp_path / "results.sqlite"
  with ResultStore(path, "demo", FP) as store:
    store.commit_rows([make_row("a")])
    code = (
      f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
      "from cubist.store import ResultStore\n"
      f"ResultStore({str(path)!r}, 'demo', {FP!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert f"is in use by process {os.getpid()}" in proc.stderr
  with ResultStore(path, "demo", FP) as store:  # released on close
    assert store.done_ids() == {"a"}


def test_read_only_store_opens_for_reading(tmp_path):
  folder = tmp_path / "copied"
  with ResultStore(folder / "results.sqlite", "demo", FP) as store:
    store.commit_rows([make_row("a"), make_row("b")])
  folder.chmod(0o555)
  (folder / "results.sqlite").chmod(0o444)
  try:
    assert [r["exp_id"] for r in merge_stores([folder / "results.sqlite"])] == ["a", "b"]
  finally:
    folder.chmod(0o755)


def test_killed_process_keeps_committed_rows(tmp_path):
  path = tmp_path / "r.sqlite"
  code = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.test_store import make_row, FP
from cubist.store import ResultStore
store = ResultStore({str(path)!r}, "demo", FP)
store.commit_rows([make_row("a"), make_row("b")])
os.kill(os.getpid(), signal.SIGKILL)
"""
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert proc.returncode == -signal.SIGKILL, proc.stderr
  with ResultStore(path, "demo", FP) as store:
    assert store.done_ids() == {"a", "b"}


def test_merge_stores(tmp_path):
  paths = [store_path(tmp_path, i, 2) for i in range(2)]
  with ResultStore(paths[0], "demo", FP) as s0, ResultStore(paths[1], "demo", FP) as s1:
    s0.commit_rows([make_row("a"), make_row("b", accuracy=0.125)])
    s1.commit_rows([make_row("c"), make_row("b", accuracy=0.875)])  # later wins
  rows = merge_stores(paths)
  assert [r["exp_id"] for r in rows] == ["a", "b", "c"]
  assert rows[1]["accuracy"] == 0.875
  other = tmp_path / "other.sqlite"
  with ResultStore(other, "other", "e" * 64) as store:
    store.commit_rows([make_row("z")])
  with pytest.raises(ValueError, match="fingerprint") as err:
    merge_stores(paths + [other])
  assert "\n" not in str(err.value)


def test_store_path_naming(tmp_path):
  assert store_path(tmp_path) == tmp_path / "results.sqlite"
  assert store_path("w", 3, 16) == Path("w") / "results-shard003-of-016.sqlite"
  for bad in ((16, 16), (0, 0)):
    with pytest.raises(ValueError):
      store_path("w", *bad)
