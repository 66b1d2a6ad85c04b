"""Tests of the results store (cubist/store.py)."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cubist.store import (RUN_COLUMNS, ResultStore, SweepMismatchError, merge_stores,
                          store_path)

ROOT = Path(__file__).resolve().parents[1]
FP = "f" * 64


def make_row(exp_id, **overrides):
    row = dict(
        exp_id=exp_id, family="search", method="dense", width=np.int64(8), d1=3, d2=4, d3=5,
        seed=np.int32(7), lr=np.float32(0.5), schedule="cosine", epochs=10, batch_size=64,
        init="kaiming", shared_order=True, data_order="feistel", target_nnz=None, mask_config="n1:0,n2:1,n3:2",
        extra={"beta": 0.1}, status="ok", accuracy=0.97, loss=np.float64(0.08),
        weight_nnz=40, model_nnz=52, effective_weight_nnz=38, dead_units=None,
        mask=np.packbits(np.array([1, 0, 1, 1, 0, 0, 0, 1, 1], bool)).tobytes(),
        mask_shape=[[2, 8], [8], [8, 8], [8], [8, 8], [8], [8, 1], [1]], seconds=1.25)
    row.update(overrides)
    return row


def test_round_trip_all_column_types(tmp_path):
    with ResultStore(tmp_path / "r.sqlite", "demo", FP) as store:
        store.commit_rows([make_row("a"), make_row("b", target_nnz=30, dead_units=2,
                                                   status="diverged", loss=float("nan"))])
        a, b = store.rows()
        assert set(a) == set(RUN_COLUMNS)
        assert (a["width"], a["seed"], a["shared_order"], a["target_nnz"]) == (8, 7, 1, None)
        assert a["lr"] == 0.5 and a["accuracy"] == 0.97 and a["loss"] == 0.08
        assert json.loads(a["extra"]) == {"beta": 0.1}
        assert json.loads(a["mask_shape"])[0] == [2, 8]
        assert a["mask"] == make_row("a")["mask"] and isinstance(a["mask"], bytes)
        assert a["created_at"] > 0
        assert (b["target_nnz"], b["dead_units"], b["loss"]) == (30, 2, None)  # NaN -> NULL
        assert store.count() == 2 and store.count("ok") == 1 and store.count("diverged") == 1
        assert [r["exp_id"] for r in store.rows("status = ?", ("diverged",))] == ["b"]

        rec = store.to_records()
        assert "mask" not in rec
        assert rec["width"].dtype == np.int64 and rec["accuracy"].dtype == np.float64
        assert math.isnan(rec["loss"][1]) and math.isnan(rec["target_nnz"][0])
        assert list(rec["exp_id"]) == ["a", "b"]
        assert store.to_records(include_mask=True)["mask"].shape == (2,)


def test_done_ids_and_idempotent_rerun(tmp_path):
    with ResultStore(tmp_path / "r.sqlite", "demo", FP) as store:
        assert store.done_ids() == set()
        store.commit_rows([make_row("a"), make_row("b")])
        store.commit_rows([make_row("b", accuracy=0.5)])  # a re-run chunk replaces
        assert store.done_ids() == {"a", "b"}
        assert store.rows("exp_id = 'b'")[0]["accuracy"] == 0.5


@pytest.mark.parametrize("bad, match", [
    (dict(colour="red"), "colour"),                 # unknown key
    (dict(method=None), "method"),                  # missing required key
    (dict(accuracy=None), "accuracy"),              # an 'ok' row needs its metrics
    (dict(status="crashed"), "crashed"),
    (dict(width="not a number"), "not a number"),   # fails mid-transaction
])
def test_commit_is_all_or_nothing(tmp_path, bad, match):
    with ResultStore(tmp_path / "r.sqlite", "demo", FP) as store:
        store.commit_rows([make_row("old")])
        with pytest.raises(ValueError, match=match):
            store.commit_rows([make_row("a"), make_row("b", **bad), make_row("c")])
        assert store.done_ids() == {"old"}
        store.commit_rows([make_row("d")])  # the store is still usable
        assert store.done_ids() == {"old", "d"}


def test_failed_row_needs_no_metrics(tmp_path):
    row = {k: v for k, v in make_row("x", status="failed").items()
           if k not in ("accuracy", "loss", "mask", "mask_shape")}
    with ResultStore(tmp_path / "r.sqlite", "demo", FP) as store:
        store.commit_rows([row])
        assert store.rows()[0]["accuracy"] is None


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
        s0.commit_rows([make_row("a"), make_row("b", accuracy=0.1)])
        s1.commit_rows([make_row("c"), make_row("b", accuracy=0.9)])  # later wins
    rows = merge_stores(paths)
    assert [r["exp_id"] for r in rows] == ["a", "b", "c"]
    assert rows[1]["accuracy"] == 0.9
    other = tmp_path / "other.sqlite"
    ResultStore(other, "other", "e" * 64).close()
    with pytest.raises(ValueError, match="fingerprint") as err:
        merge_stores(paths + [other])
    assert "\n" not in str(err.value)


def test_store_path_naming(tmp_path):
    assert store_path(tmp_path) == tmp_path / "results.sqlite"
    assert store_path("w", 3, 16) == Path("w") / "results-shard003-of-016.sqlite"
    with pytest.raises(ValueError):
        store_path("w", 16, 16)
