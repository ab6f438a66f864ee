"""Bulk runs (:func:`xmine.runner.run_sample`, ``xmine run``): executors agree, resume, failures, bad input, Dask.

Three tiny simulated clusters (:func:`xmine.simulate.population.make_population`: two obsids each, ~800 cluster
counts per obsid, coarse 4-pixel binning) go through the real chain. The serial run is the reference the other
executors, the resumed runs and the retried ones must reproduce row for row (run ids, timestamps, timings and the
absolute folders aside). The Dask tests start real ``dask scheduler`` and ``dask worker`` processes on loopback.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from astropy.table import Table

from xmine.cli import main
from xmine.config import load_config
from xmine.errors import InputError
from xmine.results import RESULT_TABLES
from xmine.runner import load_sample, run_sample
from xmine.simulate.population import make_population
from xmine.store import open_store

RUN = "bulk"
#: Columns that differ between two runs of the same data by nature: when and how fast, and the run's id.
VOLATILE = {"clusters": ["recorded_at", "seconds"]}


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk")
    made = make_population(root / "sim", 3, seed=3, cluster_counts_per_obsid=800.0, obsids_per_cluster=(2, 2),
                           point_sources_per_field=1)
    clusters, _ = load_sample(made.sample)
    return root, made, clusters, Table.read(made.catalog)


def _config(root: Path, tag: str, data_dir: Path | None = None):
    return load_config(environ={}, overrides={
        "project": {"data_dir": str(data_dir or root / "sim" / "archive"), "work_dir": str(root / tag / "work"),
                    "store": str(root / tag / "xmine.duckdb")},
        "cache": {"offline": True}, "binning": {"sn": 10.0, "smoothsn": 10.0},
        "spectra": {"responses_dir": "simulator"},
        "process": {"merge_size_arcmin": 4.0, "crop_radius_arcmin": 1.5, "binsize": 4.0, "bg_inner_arcmin": 2.0}})


def result_rows(config, run_id: str) -> dict[str, list[tuple]]:
    """Every results table of a run, sorted, without run ids, timings and the run's own folders."""
    work, data = str(Path(config.project.work_dir)), str(Path(config.project.data_dir))

    def clean(v):
        return v.replace(work, "<work>").replace(data, "<data>") if isinstance(v, str) else v

    out = {}
    with open_store(config.project.store, read_only=True, wait_s=30.0) as st:
        for table in RESULT_TABLES:
            drop = ", ".join(["run_id", *VOLATILE.get(table, [])])
            rows = st.con.execute(f"SELECT * EXCLUDE ({drop}) FROM {table} WHERE run_id = $r",
                                  {"r": run_id}).fetchall()
            out[table] = sorted((tuple(clean(v) for v in r) for r in rows), key=repr)
    return out


def _recorded_at(config, run_id: str) -> dict[str, object]:
    with open_store(config.project.store, read_only=True, wait_s=30.0) as st:
        return dict(st.con.execute("SELECT cluster, recorded_at::VARCHAR FROM clusters WHERE run_id = $r",
                                   {"r": run_id}).fetchall())


@pytest.fixture(scope="module")
def reference(population):
    """The serial run every other run must reproduce."""
    root, _, clusters, catalog = population
    config = _config(root, "serial")
    summary = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="serial")
    assert (summary.done, summary.failed) == (3, 0), summary.rows
    rows = result_rows(config, RUN)
    assert len(rows["clusters"]) == 3
    assert len(rows["regions"]) >= 6
    assert len(rows["region_spectra"]) == 3 * len(rows["regions"])  # each bin: two obsids and their sum
    return rows


def test_processes_give_the_serial_rows(population, reference):
    root, _, clusters, catalog = population
    config = _config(root, "processes")
    summary = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="processes", workers=2)
    assert (summary.done, summary.failed) == (3, 0), summary.rows
    assert result_rows(config, RUN) == reference


def test_an_interrupted_run_resumes_without_losing_or_repeating(population, reference, monkeypatch):
    root, _, clusters, catalog = population
    config = _config(root, "resume")
    import xmine.runner as runner

    recorded = []
    real = runner.record_cluster

    def record_then_interrupt(store, run_id, outcome):
        real(store, run_id, outcome)
        recorded.append(outcome.cluster.name)
        if len(recorded) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C right after the second cluster's transaction

    monkeypatch.setattr(runner, "record_cluster", record_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="serial")
    monkeypatch.setattr(runner, "record_cluster", real)
    first = _recorded_at(config, RUN)
    assert sorted(first) == sorted(recorded)
    summary = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="serial")
    assert (summary.done, summary.failed, summary.skipped) == (1, 0, 2)
    assert result_rows(config, RUN) == reference
    after = _recorded_at(config, RUN)
    assert {k: after[k] for k in first} == first  # the two recorded clusters were skipped, not recorded again
    again = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="serial")
    assert (again.done, again.failed, again.skipped) == (0, 0, 3)


def test_a_corrupt_cluster_fails_alone_and_retry_failed_reruns_it(population, reference, tmp_path):
    _root, made, clusters, catalog = population
    data = tmp_path / "archive"
    shutil.copytree(made.sky.observations[0].event_file.parents[2], data)
    victim = clusters[1]
    saved = {}
    for obsid in victim.obsids:
        (evt2,) = (data / str(obsid)).glob("primary/*evt2*")
        saved[evt2] = evt2.read_bytes()
        evt2.write_bytes(b"SIMPLE  = this is not a FITS file" + b" " * 3000)
    config = _config(tmp_path, "corrupt", data_dir=data)
    summary = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="serial")
    assert (summary.done, summary.failed) == (2, 1)
    rows = result_rows(config, RUN)
    (_failed,) = [r for r in rows["clusters"] if r[0] == victim.name]
    with open_store(config.project.store, read_only=True) as st:
        status, reason, n_regions = st.con.execute(
            "SELECT status, reason, (SELECT count(*) FROM regions r WHERE r.run_id = c.run_id "
            "AND r.cluster = c.cluster) FROM clusters c WHERE run_id = $r AND cluster = $c",
            {"r": RUN, "c": victim.name}).fetchall()[0]
    assert status == "failed"
    assert n_regions == 0
    assert "\n" not in reason
    assert str(victim.obsids[0]) in reason or "evt2" in reason
    assert "internal error" not in reason, reason
    # the other clusters are the reference's
    for table in RESULT_TABLES:
        ok = [r for r in rows[table] if r[0] != victim.name]
        assert ok == [r for r in reference[table] if r[0] != victim.name], table
    # a rerun skips the failed cluster; with retry_failed and the files repaired it is done
    again = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="serial")
    assert (again.done, again.failed, again.skipped) == (0, 0, 3)
    for path, content in saved.items():
        path.write_bytes(content)
    retried = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="serial", retry_failed=True)
    assert (retried.done, retried.failed, retried.skipped) == (1, 0, 2)
    assert result_rows(config, RUN) == reference


def test_a_full_disk_fails_that_cluster_and_leaves_nothing_half_written(population, reference, tmp_path,
                                                                         monkeypatch):
    root, _, clusters, catalog = population
    config = _config(root, "diskfull")
    victim = clusters[2].name
    binning = Path(config.project.work_dir) / "clusters" / victim / "contbin"
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).parent == binning:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    summary = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="serial")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (summary.done, summary.failed) == (2, 1)
    with open_store(config.project.store, read_only=True) as st:
        (reason,) = st.con.execute("SELECT reason FROM clusters WHERE run_id = $r AND status = 'failed'",
                                   {"r": RUN}).fetchall()[0]
        assert st.con.execute("SELECT count(*) FROM regions WHERE cluster = $c", {"c": victim}).fetchall() == [(0,)]
    assert "disk is full" in reason
    assert "\n" not in reason
    left = [p for p in Path(config.project.work_dir).rglob("*") if ".tmp" in p.name]
    assert left == []
    assert not (binning / ".xmine-step.json").exists()  # the step is not marked done
    retried = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, executor="serial", retry_failed=True)
    assert (retried.done, retried.failed) == (1, 0)
    assert result_rows(config, RUN) == reference


def _config_file(root: Path, tag: str, data_dir: Path | None = None) -> Path:
    c = _config(root, tag, data_dir)
    path = root / tag / "xmine.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[project]\ndata_dir = "{c.project.data_dir}"\nwork_dir = "{c.project.work_dir}"\n'
                    f'store = "{c.project.store}"\n\n[cache]\noffline = true\n')
    return path


def _sample_file(path: Path, rows: list[str]) -> Path:
    path.write_text("name,ra_deg,dec_deg,obsids\n" + "".join(r + "\n" for r in rows))
    return path


@pytest.mark.parametrize(("rows", "names", "words"), [
    ([], [], "no clusters"),
    (["A,10.0,20.0,70001", "B,11.0,21.0,70003"], ["A", "NOPE"], "no cluster named NOPE"),
    (["A,10.0,20.0,70001", "A,40.0,-20.0,70002"], [], "give each cluster one position"),
])
def test_bad_samples_are_one_line_errors(tmp_path, capsys, rows, names, words):
    cfg = _config_file(tmp_path, "cli")
    sample = _sample_file(tmp_path / "sample.csv", rows)
    code = main(["--config", str(cfg), "--quiet", "run", str(sample), *names, "--executor", "serial"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1, err
    assert err.startswith("xmine: error:")
    assert words in err


def test_the_api_refuses_an_empty_sample_and_duplicate_names(population, tmp_path):
    _, _, clusters, _ = population
    config = _config(tmp_path, "api")
    with pytest.raises(InputError, match="the sample is empty"):
        run_sample([], config=config)
    with pytest.raises(InputError, match=f"names {clusters[0].name} more than once"):
        run_sample([clusters[0], clusters[1], clusters[0]], config=config)
    assert not Path(config.project.store).exists()


def test_unknown_obsids_fail_their_cluster_in_one_line(population, tmp_path, capsys):
    root, _, clusters, _ = population
    cfg = _config_file(tmp_path, "ghost", root / "sim" / "archive")
    c = clusters[0]
    sample = _sample_file(tmp_path / "sample.csv", [f"{c.name},{c.ra_deg},{c.dec_deg},{' '.join(map(str, c.obsids))}",
                                                      "GHOST,200.0,-30.0,99998 99999"])
    code = main(["--config", str(cfg), "run", str(sample), "--executor", "serial", "--run-id", "g"])
    out = capsys.readouterr()
    assert code == 0, out.err
    config = load_config(cfg, environ={})
    with open_store(config.project.store, read_only=True) as st:
        status = dict(st.con.execute("SELECT cluster, status FROM clusters WHERE run_id = 'g'").fetchall())
        (reason,) = st.con.execute("SELECT reason FROM clusters WHERE cluster = 'GHOST'").fetchall()[0]
    assert status == {c.name: "done", "GHOST": "failed"}
    assert "\n" not in reason
    assert "99998" in reason


def test_results_and_the_cache_are_read_together_while_a_run_goes_on(population, tmp_path, capsys):
    from xmine.cache import load_query, run_sql

    root, made, clusters, catalog = population
    cfg = _config_file(tmp_path, "live", root / "sim" / "archive")
    store = load_config(cfg, environ={}).project.store
    # the simulated CSC master sources in the catalogue cache, as a catalogue query would leave them
    with open_store(store) as st:
        load_query(st, "SELECT * FROM csc21.master_source", service="simulated", fetch=lambda: catalog,
                   name="csc_sim")
    run = subprocess.Popen([sys.executable, "-m", "xmine.cli", "--config", str(cfg), "--quiet", "run",
                            str(made.sample), "--executor", "serial", "--run-id", "live"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        while run.poll() is None:
            table, _ = run_sql(store, "SELECT count(*) AS n FROM clusters WHERE run_id = :r", {"r": "live"})
            seen.append(table.column("n")[0].as_py())
            time.sleep(0.2)
    finally:
        _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert seen, "the run ended before a query"
    assert seen == sorted(seen)
    assert set(seen) <= {0, 1, 2, 3}
    # results joined with the cache: catalogue sources within 6 arcmin of each recorded cluster
    sql = ("SELECT c.cluster, count(s.name) AS n FROM clusters c LEFT JOIN csc_sim s ON "
           "degrees(acos(least(1, sin(radians(s.dec)) * sin(radians(c.dec_deg)) + cos(radians(s.dec)) * "
           "cos(radians(c.dec_deg)) * cos(radians(s.ra - c.ra_deg))))) < 0.1 "
           "WHERE c.run_id = :r GROUP BY c.cluster ORDER BY c.cluster")
    table, _ = run_sql(store, sql, {"r": "live"})
    from astropy.coordinates import SkyCoord

    src = SkyCoord(catalog["ra"], catalog["dec"], unit="deg")
    want = {c.name: int((src.separation(SkyCoord(c.ra_deg, c.dec_deg, unit="deg")).deg < 0.1).sum())
            for c in clusters}
    assert dict(zip(table.column("cluster").to_pylist(), table.column("n").to_pylist(), strict=True)) == want
    assert sum(want.values()) > 0
    assert main(["--config", str(cfg), "sql", sql.replace(":r", "'live'")]) == 0
    assert clusters[0].name in capsys.readouterr().out


# -- Dask: real scheduler and worker processes on loopback -------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskProcesses:
    """A ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, stopped by :meth:`close`."""

    def __init__(self, folder: Path, n_workers: int) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        port = self.address.rsplit(":", 1)[1]
        self.scheduler = self._start("scheduler", ["dask", "scheduler", "--host", "127.0.0.1", "--port", port,
                                                   "--no-dashboard"])
        self.workers = [self._start(f"worker{i}", ["dask", "worker", self.address, "--host", "127.0.0.1",
                                                   "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                                   "--name", f"w{i}"]) for i in range(n_workers)]
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(n_workers, timeout=120)

    def _start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        log.close()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Stop the workers first (a worker whose scheduler is gone keeps trying to reach it), then the scheduler."""
        for group in (self.workers, [self.scheduler]):
            for proc in group:
                if proc.poll() is None:
                    proc.terminate()
            for proc in group:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def dask_processes(tmp_path):
    pytest.importorskip("distributed")
    started = []

    def start(n_workers: int) -> DaskProcesses:
        d = DaskProcesses(tmp_path, n_workers)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


@pytest.mark.slow
def test_a_real_dask_cluster_gives_the_serial_rows(population, reference, dask_processes):
    root, _, clusters, catalog = population
    dask = dask_processes(2)
    config = _config(root, "dask")
    summary = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, scheduler=dask.address)
    assert (summary.done, summary.failed) == (3, 0), summary.rows
    assert result_rows(config, RUN) == reference


def _kill_a_busy_worker_after_the_first_result(address: str, killed: dict) -> None:
    """Wait for one cluster's task to finish, then SIGKILL a worker that is processing another."""
    from distributed import Client

    def states(dask_scheduler):
        return {str(k): (ts.state, ts.processing_on.address if ts.processing_on else None)
                for k, ts in dask_scheduler.tasks.items() if str(k).startswith("xmine-")}

    with Client(address, timeout="30s") as client:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            now = client.run_on_scheduler(states)
            busy = [w for state, w in now.values() if state == "processing" and w]
            if any(state == "memory" for state, _ in now.values()) and busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, worker=busy[0], states=now)
                return
            time.sleep(0.05)


@pytest.mark.slow
def test_a_dask_worker_killed_mid_run_does_not_stop_the_run(population, reference, dask_processes):
    root, _, clusters, catalog = population
    dask = dask_processes(2)
    config = _config(root, "dask-kill")
    killed: dict = {}
    watcher = threading.Thread(target=_kill_a_busy_worker_after_the_first_result, args=(dask.address, killed))
    watcher.start()
    try:
        summary = run_sample(clusters, config=config, catalog=catalog, run_id=RUN, scheduler=dask.address)
    finally:
        watcher.join(timeout=60)
    assert killed, "no worker was killed: the run finished before a second task started"
    assert sum(w.poll() is not None for w in dask.workers) == 1  # one worker is dead, the other lives
    assert (summary.done, summary.failed) == (3, 0), summary.rows
    assert result_rows(config, RUN) == reference
