"""Bulk runs: every cluster of a sample through the pipeline, binning and measurement, recorded in DuckDB.

:func:`run_sample` is the driver. It hands each cluster to a worker
(:func:`cluster_task`: :func:`xmine.pipeline.process_cluster` with its measure,
spectra and fit steps), and records what comes back (:func:`xmine.results.record_cluster`),
one transaction per cluster. Workers never write to the database: they return a
:class:`~xmine.results.ClusterOutcome`; the driver opens the store only while it
records one, so ``xmine sql`` and other readers can query the results (and the
catalogue cache) while a run goes on.

Executors (``executor``):

``serial``     in this process, one cluster after another;
``processes``  a pool of local worker processes (the default, ``workers`` of them);
``dask``       an existing Dask cluster (``scheduler="tcp://host:port"``), or a
               ``LocalCluster`` of ``workers`` processes when no address is given.
               Workers on other machines must see the same ``project.data_dir`` and
               ``project.work_dir`` paths (a shared filesystem): products are files.

Resuming: a run id names the run. Rerunning it skips clusters already recorded
as done (and, unless ``retry_failed``, those recorded as failed); a cluster a
killed run had half processed resumes from its finished steps (the marker files
beside each step's outputs), so nothing is lost or recorded twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmine.config import XmineConfig
from xmine.errors import InputError, XmineError
from xmine.pipeline import ClusterSpec, StepRunner, process_cluster
from xmine.results import ClusterOutcome, record_cluster, recorded_clusters
from xmine.store import open_store

__all__ = ["RunSummary", "cluster_task", "load_sample", "run_sample"]

log = logging.getLogger(__name__)

#: Seconds the driver waits for the store while a reader holds it.
STORE_WAIT_S = 120.0


@dataclass
class RunSummary:
    """What :func:`run_sample` did."""

    run_id: str
    store: Path
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    #: Of ``seconds``, the driver's time spent recording results (opening the store, one transaction per cluster).
    record_seconds: float = 0.0
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- the worker side ------------------------------------------------------------------------

def _read_table(path: str, fmt: str | None = None) -> Any:
    """Read a table file a step wrote as Arrow (the form results are recorded in)."""
    from astropy.table import Table

    from xmine.vo import to_arrow

    return to_arrow(Table.read(path, format=fmt) if fmt else Table.read(path))


def _observations(outputs: dict[str, Any], failed: dict[int, str]) -> list[dict[str, Any]]:
    rows = []
    for obsid, o in outputs.get("obs", {}).items():
        rows.append({"obsid": int(obsid), "evt2": o.get("evt2"), "exposure_s": o.get("good_exposure_s"),
                     "clean_fraction": o.get("clean_fraction"), "n_flares": o.get("n_flares"), "gti": o.get("gti"),
                     "status": "done", "provenance": {"lc_png": o.get("lc_png")}})
    rows += [{"obsid": int(k), "status": "failed", "reason": v} for k, v in failed.items()]
    return rows


def cluster_task(cluster: ClusterSpec, config: XmineConfig, catalog: Any = None, *, run_id: str,
                 on_step: Callable[[str, str], None] | None = None) -> ClusterOutcome:
    """Process, bin and measure one cluster; return its outcome (never raises for the cluster's own failure).

    Runs in a worker: it writes products under ``project.work_dir`` but nothing to the database.

    Parameters
    ----------
    cluster : ClusterSpec
    config : XmineConfig
    catalog : astropy.table.Table, optional
        Catalogued point sources.
    run_id : str
    on_step : callable, optional
        Called with ``(item, step)`` when a step starts.
    """
    from xmine import measure

    t0 = time.perf_counter()
    runner = StepRunner(None, run_id, on_step=on_step)
    products = str(Path(config.project.work_dir) / "clusters" / cluster.name)
    try:
        res = process_cluster(cluster, config=config, store=None, run_id=run_id, catalog=catalog, runner=runner)
        out = res.outputs
        scales = measure.cluster_scales(cluster.z, cluster.r500_kpc, cluster.tx_kev,
                                        cosmology=config.measure.cosmology)
        regions = _read_table(out["measure"]["regions"])
        spectra = _read_table(out["spectra"]["table"], "ascii.ecsv") if "spectra" in out else None
        fits = _read_table(out["fit"]["table"], "ascii.ecsv") if "fit" in out else None
        profile = _read_table(out["profile"]["profile"])
        import pyarrow as pa

        profile = profile.append_column("annulus", pa.array(range(profile.num_rows), pa.int32()))
        return ClusterOutcome(cluster=cluster, status="done", seconds=time.perf_counter() - t0,
                              products_dir=products, r500_kpc=scales.r500_kpc, r500_source=scales.r500_source,
                              n_bins=res.n_bins, observations=_observations(out, res.failed_obsids),
                              regions=regions, spectra=spectra, fits=fits, profile=profile, steps=runner.records,
                              summary={"masked": out["masks"]["n_masked"]})
    except XmineError as exc:
        reason = str(exc)
    except Exception as exc:  # a bug must not stop the other clusters of a bulk run: record where it happened
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f"internal error {type(exc).__name__}: {exc} (at {Path(tb.filename).name}:{tb.lineno}); please report"
        log.exception("cluster %s", cluster.name)
    return ClusterOutcome(cluster=cluster, status="failed", reason=reason, seconds=time.perf_counter() - t0,
                          products_dir=products, steps=runner.records)


def _queue_task(cluster: ClusterSpec, config: XmineConfig, catalog: Any, run_id: str, q: Any) -> ClusterOutcome:
    """:func:`cluster_task` reporting its steps through a queue (local worker processes)."""

    def on_step(item: str, step: str) -> None:
        with contextlib.suppress(Exception):
            q.put_nowait((cluster.name, step))

    return cluster_task(cluster, config, catalog, run_id=run_id, on_step=on_step)


# -- samples --------------------------------------------------------------------------------

def load_sample(sample: str | os.PathLike[str], *, names: Sequence[str] = ()) -> tuple[list[ClusterSpec], Any]:
    """Read the clusters of a bulk run and their point-source catalogue.

    Parameters
    ----------
    sample : path-like
        A table of clusters (see :func:`xmine.pipeline.load_cluster_sample`), or the folder
        ``xmine select clusters|pointsources`` wrote (``clusters.ecsv``, ``observations.ecsv`` and,
        when present, ``point_sources.ecsv``, used as the catalogue of point sources).
    names : sequence of str, optional
        Only these clusters.

    Returns
    -------
    (list of ClusterSpec, astropy.table.Table or None)
    """
    import numpy as np
    from astropy.table import Table

    from xmine.pipeline import load_cluster_sample

    p = Path(sample)
    if not p.exists():
        msg = f"{p}: no such sample; give a cluster table (name, ra, dec, obsids) or a folder from `xmine select`"
        raise InputError(msg)
    if not p.is_dir():
        return load_cluster_sample(p, names=names), None
    cl, obs = p / "clusters.ecsv", p / "observations.ecsv"
    if not cl.exists() or not obs.exists():
        msg = f"{p}: not a selection folder (no clusters.ecsv and observations.ecsv); run `xmine select` first"
        raise InputError(msg)
    clusters, observations = Table.read(cl), Table.read(obs)
    specs = []
    for row in clusters:
        name = str(row["name"])
        if names and name not in names:
            continue
        obsids = tuple(sorted({int(o) for o in observations["obsid"][observations["cluster"] == name]}))
        if not obsids:
            log.warning("%s: no observation in %s", name, obs)
            continue
        z = float(row["z"]) if "z" in clusters.colnames and not np.ma.is_masked(row["z"]) else None
        specs.append(ClusterSpec(name=name.replace(" ", "_"), ra_deg=float(row["ra_deg"]),
                                 dec_deg=float(row["dec_deg"]), obsids=obsids, z=z))
    missing = [n for n in names if n not in {str(r["name"]) for r in clusters}]
    if missing:
        msg = f"{p}: no cluster named {', '.join(missing)}"
        raise InputError(msg)
    if not specs:
        msg = f"{p}: the selection holds no cluster with observations"
        raise InputError(msg)
    ps = p / "point_sources.ecsv"
    return specs, (Table.read(ps) if ps.exists() else None)


# -- the driver ----------------------------------------------------------------------------

class _Progress:
    """Rich progress (done/failed, what runs, ETA) on stderr; nothing when quiet."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.quiet = quiet
        self.failed = 0
        self.running: dict[str, str] = {}
        if quiet:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("[bold]clusters"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.description}"),
                                 console=Console(stderr=True), transient=False)
        self.task = self.progress.add_task("", total=total, failed=0)
        self.progress.start()

    def _describe(self) -> str:
        return "  ".join(f"{n}: {s}" for n, s in list(self.running.items())[:3])

    def step(self, name: str, step: str) -> None:
        self.running[name] = step
        if not self.quiet:
            self.progress.update(self.task, description=self._describe())

    def finished(self, name: str, ok: bool) -> None:
        self.running.pop(name, None)
        self.failed += not ok
        if not self.quiet:
            self.progress.update(self.task, advance=1, failed=self.failed, description=self._describe())

    def close(self) -> None:
        if not self.quiet:
            self.progress.stop()


def _serial(todo: Sequence[ClusterSpec], config: XmineConfig, catalog: Any, run_id: str,
            progress: _Progress) -> Iterator[ClusterOutcome]:
    for c in todo:
        progress.step(c.name, "starting")

        def on_step(item: str, step: str, name: str = c.name) -> None:
            progress.step(name, step)

        yield cluster_task(c, config, catalog, run_id=run_id, on_step=on_step)


def _processes(todo: Sequence[ClusterSpec], config: XmineConfig, catalog: Any, run_id: str, progress: _Progress,
               workers: int) -> Iterator[ClusterOutcome]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing.managers import SyncManager

    ctx = mp.get_context("spawn")  # no fork of the driver's threads (numba, duckdb)
    manager = SyncManager(ctx=ctx)
    manager.start(_exit_with_parent, (os.getpid(),))
    with manager, ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
                                      initargs=(os.getpid(),)) as pool:
        q = manager.Queue()
        pending = {pool.submit(_queue_task, c, config, catalog, run_id, q): c for c in todo}
        for c in todo[:workers]:
            progress.step(c.name, "starting")
        try:
            while pending:
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                with contextlib.suppress(queue.Empty):
                    while True:
                        name, step = q.get_nowait()
                        progress.step(name, step)
                for fut in done:
                    c = pending.pop(fut)
                    try:
                        yield fut.result()
                    except BrokenProcessPool as exc:
                        msg = (f"a worker process died while processing {c.name} (killed, or out of memory); "
                               f"finished clusters are recorded: rerun with --run-id {run_id} to resume")
                        raise XmineError(msg) from exc
        except BaseException:
            # Ctrl-C, or the driver stopped reading: the pool's exit would otherwise run every queued cluster
            # (whose results nobody records) before returning; only the running ones are waited for
            for fut in pending:
                fut.cancel()
            raise


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker process within a second of the driver's death (e.g. SIGKILL), even mid-cluster.

    Pool workers and the progress queue's manager hold both ends of their pipes, so a killed driver would leave
    them waiting forever. Stopping mid-cluster is safe: products are written atomically and marked done per step.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="xmine-exit-with-parent", daemon=True).start()


def _dask(todo: Sequence[ClusterSpec], config: XmineConfig, catalog: Any, run_id: str, progress: _Progress,
          workers: int, scheduler: str | None) -> Iterator[ClusterOutcome]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        msg = "the dask executor needs dask.distributed: pip install 'xmine[dask]'"
        raise InputError(msg) from exc
    stack = contextlib.ExitStack()
    with stack:
        if scheduler:
            try:
                client = stack.enter_context(Client(scheduler, timeout="20s"))
            except (OSError, TimeoutError) as exc:
                msg = f"cannot reach the Dask scheduler at {scheduler} ({exc}); start it or check the address"
                raise InputError(msg) from exc
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        cat = client.scatter(catalog, broadcast=True) if catalog is not None else None
        futures = {client.submit(cluster_task, c, config, cat, run_id=run_id, pure=False,
                                 key=f"xmine-{run_id}-{c.name}", retries=2): c for c in todo}
        for c in todo[:workers]:
            progress.step(c.name, "queued on dask")
        for fut in as_completed(futures):
            c = futures[fut]
            try:
                yield fut.result()
            except Exception as exc:  # the task itself never raises; this is a lost worker beyond its retries
                yield ClusterOutcome(cluster=c, status="failed", reason=f"dask: {type(exc).__name__}: {exc}")


def run_sample(clusters: Sequence[ClusterSpec], *, config: XmineConfig, catalog: Any = None,
               run_id: str | None = None, executor: str | None = None, workers: int | None = None,
               scheduler: str | None = None, retry_failed: bool = False, quiet: bool = True, kind: str = "run",
               extra_params: dict[str, Any] | None = None) -> RunSummary:
    """Run every cluster through the pipeline and record the results; resumable.

    Parameters
    ----------
    clusters : sequence of ClusterSpec
    config : XmineConfig
    catalog : astropy.table.Table, optional
        Catalogued point sources (all fields).
    run_id : str, optional
        Resume (or name) this run.
    executor : {"serial", "processes", "dask"}, optional
        Default ``config.executor.kind``.
    workers : int, optional
        Worker processes (default ``config.executor.workers``).
    scheduler : str, optional
        Address of a Dask scheduler (implies ``executor="dask"``; default ``config.executor.dask_address``).
    retry_failed : bool, optional
        Run again the clusters this run recorded as failed.
    quiet : bool, optional
        No progress display.
    kind : str, optional
        The kind recorded in ``runs`` (``"run"``; the demo records ``"demo"``).
    extra_params : dict, optional
        More parameters to record with the run (e.g. the seed of a simulated sample).
    """
    if not clusters:
        msg = "the sample is empty: no cluster to run"
        raise InputError(msg)
    names = [c.name for c in clusters]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        msg = f"the sample names {', '.join(dup)} more than once; give each cluster one row (or one name)"
        raise InputError(msg)
    ex = config.executor
    scheduler = scheduler or ex.dask_address or None
    how = "dask" if scheduler else (executor or ex.kind)
    if how not in ("serial", "processes", "dask"):
        msg = f"unknown executor {how!r}; use serial, processes or dask"
        raise InputError(msg)
    n_workers = workers or ex.workers
    t0 = time.perf_counter()
    store_path = Path(config.project.store)
    params = {"config": config.model_dump(mode="json", exclude={"executor"}), "clusters": sorted(names),
              **(extra_params or {})}
    with open_store(store_path, wait_s=STORE_WAIT_S) as st:
        rid = st.start_run(kind, params, run_id=run_id, seed=(extra_params or {}).get("seed"))
        recorded = recorded_clusters(st, rid)
    summary = RunSummary(run_id=rid, store=store_path,
                         columns=["cluster", "status", "obsids", "masked", "bins", "median S/N", "seconds",
                                  "reason"])
    todo = []
    for c in clusters:
        state = recorded.get(c.name)
        if state == "done" or (state == "failed" and not retry_failed):
            summary.skipped += 1
            continue
        todo.append(c)
    progress = _Progress(len(todo), quiet=quiet or not todo)
    status = "failed"
    try:
        if how == "serial":
            outcomes = _serial(todo, config, catalog, rid, progress)
        elif how == "processes":
            outcomes = _processes(todo, config, catalog, rid, progress, n_workers)
        else:
            outcomes = _dask(todo, config, catalog, rid, progress, n_workers, scheduler)
        for outcome in outcomes:
            t_record = time.perf_counter()
            with open_store(store_path, wait_s=STORE_WAIT_S) as st:
                record_cluster(st, rid, outcome)
            summary.record_seconds += time.perf_counter() - t_record
            progress.finished(outcome.cluster.name, outcome.status == "done")
            if outcome.status == "done":
                summary.done += 1
            else:
                summary.failed += 1
            summary.rows.append(_row(outcome))
        status = "finished" if summary.failed == 0 else "finished with failures"
    finally:
        progress.close()
        with contextlib.suppress(XmineError), open_store(store_path, wait_s=STORE_WAIT_S) as st:
            st.finish_run(rid, status)
    summary.seconds = time.perf_counter() - t0
    if summary.skipped:
        summary.notes.append(f"{summary.skipped} cluster(s) already recorded in run {rid} were skipped"
                             + ("" if retry_failed else " (failed ones rerun with --retry-failed)"))
    summary.notes.append(f"results are in {store_path} (run {rid}): tables clusters, observations, regions, "
                         "region_spectra, region_fits, profiles; e.g. xmine sql \"SELECT * FROM regions "
                         f"WHERE run_id = '{rid}'\"")
    return summary


def _row(o: ClusterOutcome) -> tuple[Any, ...]:
    import numpy as np

    sn = "-"
    if o.regions is not None and o.regions.num_rows and "sn" in o.regions.column_names:
        sn = round(float(np.median(o.regions.column("sn").to_numpy())), 1)
    ok = o.status == "done"
    return (o.cluster.name, o.status, " ".join(map(str, o.cluster.obsids)), o.summary.get("masked", "-"),
            o.n_bins if ok else "-", sn, round(o.seconds, 1), o.reason or "")
