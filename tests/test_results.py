"""Results of bulk runs in DuckDB: one transaction per cluster, exports, locks, schema and read-only access.

The outcomes recorded here are real: two tiny simulated clusters (:func:`xmine.simulate.population.make_population`)
go through :func:`xmine.runner.cluster_task` (pipeline, binning, measurement, spectra) once per module; the tests
then record, replace, break and export them and check the rows against the outcome tables (the truth the worker
returned), never against what the store reads back from itself.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from astropy.table import Table

from xmine.cli import main
from xmine.config import load_config
from xmine.errors import CacheError, XmineError
from xmine.results import RESULT_TABLES, export_table, record_cluster, recorded_clusters
from xmine.runner import cluster_task, load_sample
from xmine.simulate.population import make_population
from xmine.store import SCHEMA_VERSION, open_store

RUN = "rec-run"


def _overrides(root, store) -> dict:
    return {"project": {"data_dir": str(root / "archive"), "work_dir": str(root / "work"), "store": str(store)},
            "cache": {"offline": True}, "binning": {"sn": 10.0, "smoothsn": 10.0},
            "spectra": {"responses_dir": "simulator"},
            "process": {"merge_size_arcmin": 4.0, "crop_radius_arcmin": 1.5, "binsize": 4.0, "bg_inner_arcmin": 2.0}}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Two clusters' real outcomes (regions, spectra, profile, observations), as a worker returns them."""
    root = tmp_path_factory.mktemp("results")
    made = make_population(root, 2, seed=3, cluster_counts_per_obsid=800.0, obsids_per_cluster=(2, 2),
                           point_sources_per_field=1)
    config = load_config(environ={}, overrides=_overrides(root, root / "unused.duckdb"))
    clusters, _ = load_sample(made.sample)
    out = [cluster_task(c, config, Table.read(made.catalog), run_id=RUN) for c in clusters]
    assert [o.status for o in out] == ["done", "done"], [o.reason for o in out]
    assert all(o.regions.num_rows > 0 and o.spectra.num_rows > 0 and o.profile.num_rows > 0 for o in out)
    return root, out


def _counts(store, run_id: str = RUN) -> dict[str, int]:
    return {t: store.con.execute(f"SELECT count(*) FROM {t} WHERE run_id = $r", {"r": run_id}).fetchall()[0][0]
            for t in RESULT_TABLES}


def _expected(outcomes) -> dict[str, int]:
    return {"clusters": len(outcomes), "observations": sum(len(o.observations) for o in outcomes),
            "regions": sum(o.regions.num_rows for o in outcomes), "region_spectra": sum(o.spectra.num_rows
                                                                                      for o in outcomes),
            "region_fits": 0, "profiles": sum(o.profile.num_rows for o in outcomes)}


def test_recording_twice_replaces_and_never_duplicates(outcomes, tmp_path):
    _, out = outcomes
    with open_store(tmp_path / "s.duckdb") as st:
        st.start_run("run", {}, run_id=RUN)
        for o in out:
            record_cluster(st, RUN, o)
        assert _counts(st) == _expected(out)
        for o in out:  # the same outcomes again: the same rows, not twice as many
            record_cluster(st, RUN, o)
        assert _counts(st) == _expected(out)
        # a second outcome of the first cluster, with fewer bins, replaces the first in every table
        first = out[0]
        keep = first.regions.column("bin_id").to_pylist()[:1]
        smaller = dataclasses.replace(
            first, n_bins=1, regions=first.regions.slice(0, 1),
            spectra=first.spectra.filter(pc.is_in(first.spectra.column("bin_id"), pa.array(keep))))
        record_cluster(st, RUN, smaller)
        got = st.query("SELECT bin_id, sn FROM regions WHERE run_id = $r AND cluster = $c ORDER BY bin_id",
                       {"r": RUN, "c": first.cluster.name}).to_pylist()
        assert got == [{"bin_id": keep[0], "sn": first.regions.column("sn")[0].as_py()}]
        n_spec = st.query("SELECT count(*) AS n FROM region_spectra WHERE cluster = $c",
                          {"c": first.cluster.name}).column("n")[0].as_py()
        assert n_spec == smaller.spectra.num_rows
        assert st.query("SELECT n_bins FROM clusters WHERE cluster = $c",
                        {"c": first.cluster.name}).column("n_bins").to_pylist() == [1]
        # the other cluster is untouched
        other = out[1]
        assert st.query("SELECT count(*) AS n FROM regions WHERE cluster = $c",
                        {"c": other.cluster.name}).column("n")[0].as_py() == other.regions.num_rows
        assert recorded_clusters(st, RUN) == {o.cluster.name: "done" for o in out}


def test_a_failure_inside_the_transaction_keeps_the_old_rows(outcomes, tmp_path):
    _, out = outcomes
    first = out[0]
    # a profile whose counts are text: the insert of the profile (after regions and spectra) fails in DuckDB
    bad_profile = first.profile.set_column(first.profile.schema.get_field_index("counts"), "counts",
                                           pa.array(["not a number"] * first.profile.num_rows))
    broken = dataclasses.replace(first, n_bins=999, regions=first.regions.slice(0, 1), profile=bad_profile)
    with open_store(tmp_path / "s.duckdb") as st:
        st.start_run("run", {}, run_id=RUN)
        record_cluster(st, RUN, first)
        before = {t: st.query(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY ALL").to_pylist() for t in RESULT_TABLES}
        with pytest.raises(Exception, match=r"(?i)convert|cast"):
            record_cluster(st, RUN, broken)
        after = {t: st.query(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY ALL").to_pylist() for t in RESULT_TABLES}
    assert after == before
    assert before["clusters"][0]["n_bins"] == first.n_bins


def test_values_are_bound_never_formatted(outcomes, tmp_path):
    _, out = outcomes
    evil = "X'); DROP TABLE regions; --"
    o = dataclasses.replace(out[0], cluster=dataclasses.replace(out[0].cluster, name=evil), reason="it's \"quoted\"")
    with open_store(tmp_path / "s.duckdb") as st:
        st.start_run("run", {}, run_id=evil)
        record_cluster(st, evil, o)
        record_cluster(st, evil, o)
        assert recorded_clusters(st, evil) == {evil: "done"}
        assert st.query("SELECT count(*) AS n FROM regions WHERE cluster = $c",
                        {"c": evil}).column("n")[0].as_py() == o.regions.num_rows


@pytest.mark.parametrize("suffix", [".parquet", ".fits", ".xml", ".csv", ".ecsv"])
def test_export_reads_back_equal(outcomes, tmp_path, suffix):
    _, out = outcomes
    with open_store(tmp_path / "s.duckdb") as st:
        st.start_run("run", {}, run_id=RUN)
        for o in out:
            record_cluster(st, RUN, o)
        path = export_table(st, "SELECT * FROM regions WHERE run_id = $r ORDER BY cluster, bin_id", tmp_path /
                            f"regions{suffix}", params={"r": RUN})
        with pytest.raises(CacheError, match="exists"):
            export_table(st, "SELECT 1 AS x", path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        back = Table(pq.read_table(path).to_pydict())
    else:
        back = Table.read(path)
    # the truth is what the workers returned, in the order of the query
    truth = pa.concat_tables([o.regions for o in out])
    assert len(back) == truth.num_rows
    assert list(back["cluster"]) == [o.cluster.name for o in out for _ in range(o.regions.num_rows)]
    for name in truth.column_names:
        want = truth.column(name).to_pylist()
        got = list(back[name])
        if isinstance(want[0], str):
            assert [str(g) for g in got] == want, name
        else:
            w = np.array([math.nan if v is None else v for v in want], dtype=float)
            g = np.array(np.ma.filled(np.ma.asarray(back[name], dtype=float), np.nan), dtype=float)
            np.testing.assert_allclose(g, w, rtol=1e-12, equal_nan=True, err_msg=name)


def test_unknown_export_format_is_one_line(outcomes, tmp_path):
    with open_store(tmp_path / "s.duckdb") as st, pytest.raises(XmineError) as info:
        export_table(st, "SELECT 1 AS x", tmp_path / "x.xlsx")
    assert "\n" not in str(info.value)
    assert "unknown output format" in str(info.value)


def test_a_store_from_a_newer_schema_is_refused(tmp_path, capsys):
    path = tmp_path / "new.duckdb"
    with open_store(path) as st:
        st.con.execute("INSERT INTO xmine_schema VALUES ($v, now())", {"v": SCHEMA_VERSION + 1})
    for read_only in (False, True):
        with pytest.raises(CacheError) as info:
            open_store(path, read_only=read_only)
        text = str(info.value)
        assert "\n" not in text
        assert "newer xmine" in text
        assert str(path) in text
    cfg = _config_file(tmp_path, path)
    assert main(["--config", str(cfg), "sql", "SELECT 1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "newer xmine" in err
    assert "Traceback" not in err


def _config_file(tmp_path, store):
    cfg = tmp_path / "xmine.toml"
    cfg.write_text(f'[project]\nstore = "{store}"\n\n[cache]\noffline = true\n')
    return cfg


def _hold_writer(store, seconds: float) -> subprocess.Popen:
    """Another process that opens the store for writing, in a transaction, for ``seconds``; 'held' when it has it."""
    code = textwrap.dedent(f"""
        import sys, time
        from xmine.store import open_store
        with open_store({str(store)!r}) as st, st.transaction() as con:
            con.execute("UPDATE clusters SET seconds = seconds + 0 WHERE run_id = 'none'")
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def recorded_store(outcomes, tmp_path):
    _, out = outcomes
    path = tmp_path / "s.duckdb"
    with open_store(path) as st:
        st.start_run("run", {}, run_id=RUN)
        for o in out:
            record_cluster(st, RUN, o)
    return path, out


def test_a_locked_store_is_waited_for_then_one_line(recorded_store):
    path, out = recorded_store
    proc = _hold_writer(path, 1.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(CacheError) as info:
            open_store(path, wait_s=0.3)
        text = str(info.value)
        assert "\n" not in text
        assert "in use by another xmine process" in text
        assert str(path) in text
        assert time.monotonic() - t0 >= 0.3
        with open_store(path, wait_s=30.0) as st:  # waits for the other writer, then has the file
            assert recorded_clusters(st, RUN) == {o.cluster.name: "done" for o in out}
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == 0


def test_xmine_sql_reads_while_a_writer_holds_the_store_briefly(recorded_store, tmp_path, capsys):
    path, out = recorded_store
    cfg = _config_file(tmp_path, path)
    proc = _hold_writer(path, 1.0)
    try:
        code = main(["--config", str(cfg), "sql", "SELECT count(*) AS n FROM regions WHERE cluster = :c",
                     "--param", f"c={out[0].cluster.name}"])
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"{out[0].regions.num_rows}" in captured.out


@pytest.mark.parametrize("sql", [
    "DELETE FROM regions",
    "INSERT INTO clusters (run_id, cluster) VALUES ('x', 'y')",
    "UPDATE clusters SET n_bins = 0",
    "DROP TABLE regions",
    "CREATE TABLE evil (x INTEGER)",
    "ATTACH '{other}' AS other",
    # COPY ... TO would write a file even from a read-only connection: run_sql runs one SELECT only
    "COPY regions TO '{out}'",
    "EXPORT DATABASE '{out}'",
    "SELECT 1; DELETE FROM regions",
])
def test_xmine_sql_cannot_modify_the_store(recorded_store, tmp_path, capsys, sql):
    path, out = recorded_store
    cfg = _config_file(tmp_path, path)
    text = sql.format(other=tmp_path / "other.duckdb", out=tmp_path / "dump.csv")
    assert main(["--config", str(cfg), "sql", text]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("xmine: error:")
    assert "Traceback" not in err
    assert not (tmp_path / "dump.csv").exists()
    assert not (tmp_path / "other.duckdb").exists()
    with open_store(path, read_only=True) as st:
        assert _counts(st) == _expected(out)
        assert "evil" not in {r[0] for r in st.con.execute("SELECT table_name FROM information_schema.tables")
                              .fetchall()}
