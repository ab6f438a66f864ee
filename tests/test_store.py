import json
import multiprocessing as mp

import duckdb
import numpy as np
import pytest
from astropy.io import fits

from xmine.errors import CacheError
from xmine.store import SCHEMA_VERSION, atomic_write, hash_inputs, open_store


def test_new_store_has_generic_tables(tmp_path):
    with open_store(tmp_path / "x.duckdb") as store:
        assert store.schema_version == SCHEMA_VERSION
        names = {r[0] for r in store.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"runs", "steps", "failures", "provenance", "xmine_schema"} <= names


def test_reopen_does_not_migrate_twice(tmp_path):
    path = tmp_path / "x.duckdb"
    open_store(path).close()
    with open_store(path) as store:
        assert store.con.execute("SELECT count(*) FROM xmine_schema").fetchone()[0] == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "x.duckdb"
    open_store(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO xmine_schema VALUES (99, now())")
    con.close()
    with pytest.raises(CacheError, match=r"schema version 99 .*newer xmine"):
        open_store(path)
    with pytest.raises(CacheError, match="newer xmine"):
        open_store(path, read_only=True)


def test_not_a_database(tmp_path):
    path = tmp_path / "junk.duckdb"
    path.write_bytes(b"this is not duckdb" * 100)
    with pytest.raises(CacheError, match=r"junk.duckdb: cannot open"):
        open_store(path)


def test_read_only_missing_file_names_it(tmp_path):
    with pytest.raises(CacheError, match=r"nope.duckdb: no such store"):
        open_store(tmp_path / "nope.duckdb", read_only=True)


def test_read_only_refuses_writes(tmp_path):
    path = tmp_path / "x.duckdb"
    open_store(path).close()
    with open_store(path, read_only=True) as store, pytest.raises(CacheError, match="read-only"):
        store.start_run("demo", {})


def _hold_lock(path, ready, release):
    store = open_store(path)
    ready.set()
    release.wait(20)
    store.close()


def test_second_writer_gets_one_line_error(tmp_path):
    path = tmp_path / "x.duckdb"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(path), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(CacheError, match="in use by another xmine process") as info:
            open_store(path)
        assert "\n" not in str(info.value)
    finally:
        release.set()
        proc.join(30)


def test_runs_steps_failures_roundtrip(tmp_path):
    with open_store(tmp_path / "x.duckdb") as store:
        run = store.start_run("pipeline", {"sn": 30}, seed=7)
        h = hash_inputs({"sn": 30})
        assert store.step_done(run, "A2029/1234", "events", h) is None
        store.record_step(run, "A2029/1234", "events", h, outputs={"evt": "a.fits"}, seconds=1.5)
        assert store.step_done(run, "A2029/1234", "events", h) == {"evt": "a.fits"}
        # a changed parameter hash means the step must run again
        assert store.step_done(run, "A2029/1234", "events", hash_inputs({"sn": 50})) is None
        # re-recording replaces, never duplicates
        store.record_step(run, "A2029/1234", "events", h, outputs={"evt": "b.fits"})
        assert store.con.execute("SELECT count(*) FROM steps").fetchone()[0] == 1
        store.record_failure(run, "A2029/5678", "gti", "no GTI left after deflaring")
        store.finish_run(run)
        row = store.con.execute("SELECT status, seed, params_json FROM runs").fetchone()
    assert row[0] == "finished"
    assert row[1] == 7
    assert json.loads(row[2]) == {"sn": 30}


def test_transaction_rolls_back(tmp_path):
    with open_store(tmp_path / "x.duckdb") as store:
        run = store.start_run("pipeline", {})
        with pytest.raises(RuntimeError), store.transaction():
            store.record_step(run, "c1", "bin", "h")
            raise RuntimeError("killed")
        assert store.con.execute("SELECT count(*) FROM steps").fetchone()[0] == 0


def test_provenance_row(tmp_path):
    with open_store(tmp_path / "x.duckdb") as store:
        store.record_provenance("cat_csc21_abc", service="http://localhost/tap", catalogue="csc21",
                                query_text="SELECT 1", rows=10, truncated=True, release="2.1")
        t = store.query("SELECT * FROM provenance").to_pylist()[0]
    assert t["truncated"] is True
    assert len(t["query_sha256"]) == 64


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "img.fits"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        fits.writeto(tmp, np.zeros((3, 3)))
        raise RuntimeError("killed half way")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_write_replaces_whole(tmp_path):
    target = tmp_path / "img.fits.gz"
    for value in (1, 2):
        with atomic_write(target) as tmp:
            assert tmp.name.endswith(".fits.gz")
            fits.writeto(tmp, np.full((3, 3), value))
    assert fits.getdata(target)[0, 0] == 2
    with pytest.raises(CacheError, match="file exists"), atomic_write(target, overwrite=False):
        pass


def test_hash_inputs_sees_file_changes(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("1")
    h1 = hash_inputs(f, {"a": 1})
    f.write_text("22")
    assert hash_inputs(f, {"a": 1}) != h1
    assert hash_inputs({"b": 2, "a": 1}) == hash_inputs({"a": 1, "b": 2})


def test_atomic_write_full_disk_is_one_line(tmp_path):
    import errno

    target = tmp_path / "img.fits"
    with pytest.raises(CacheError, match=r"img.fits: the disk is full .*free space in") as info, \
            atomic_write(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
