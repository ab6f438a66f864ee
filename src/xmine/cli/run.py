"""CLI verbs of bulk runs: ``run`` (a sample through the pipeline) and ``results`` (export a run's tables)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_commands"]


def _cmd_run(args: argparse.Namespace) -> int:
    from xmine.config import load_config
    from xmine.pipeline import read_catalog
    from xmine.runner import load_sample, run_sample

    config = load_config(args.config)
    clusters, catalog = load_sample(args.sample, names=args.names)
    if args.catalog is not None:
        catalog = read_catalog(args.catalog)
    summary = run_sample(clusters, config=config, catalog=catalog, run_id=args.run_id, executor=args.executor,
                         workers=args.workers, scheduler=args.scheduler, retry_failed=args.retry_failed,
                         quiet=args.quiet)
    args.printer.table(f"xmine run {summary.run_id}: {summary.done} done, {summary.failed} failed, "
                       f"{summary.skipped} skipped, {summary.seconds:.0f} s", summary.columns, summary.rows)
    for line in summary.notes:
        args.printer.line(line)
    return 1 if summary.failed and not summary.done else 0


def _cmd_results_export(args: argparse.Namespace) -> int:
    from xmine.config import load_config
    from xmine.results import RESULT_TABLES, export_table
    from xmine.store import open_store

    config = load_config(args.config)
    if args.table not in RESULT_TABLES:
        from xmine.errors import InputError

        msg = f"unknown results table {args.table!r}; one of {', '.join(RESULT_TABLES)}"
        raise InputError(msg)
    with open_store(config.project.store, read_only=True, wait_s=60.0) as st:
        run_id = args.run_id or _latest_run(st)
        path = export_table(st, f"SELECT * FROM {args.table} WHERE run_id = $r ORDER BY ALL", args.out,
                            params={"r": run_id}, fmt=args.format, overwrite=args.force)
    args.printer.line(f"wrote {args.table} of run {run_id} to {path}")
    return 0


def _latest_run(store: object) -> str:
    from xmine.errors import InputError

    rows = store.con.execute("SELECT run_id FROM runs WHERE kind IN ('run', 'demo') ORDER BY started DESC "  # type: ignore[attr-defined]
                             "LIMIT 1").fetchall()
    if not rows:
        msg = "no bulk run in the store yet; run `xmine run SAMPLE` (or `xmine demo`) first"
        raise InputError(msg)
    return str(rows[0][0])


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the bulk-run verbs to the ``xmine`` parser."""
    p = sub.add_parser("run", help="run a cluster sample through pipeline, binning and measurement; results in DuckDB")
    p.add_argument("sample", type=Path,
                   help="cluster table (name, ra, dec, obsids; z, r500_kpc, tx_kev) or a folder from `xmine select`")
    p.add_argument("names", nargs="*", help="run only these clusters (default: all)")
    p.add_argument("--catalog", type=Path, help="catalogued point sources (default: the selection's, if any)")
    p.add_argument("--run-id", help="resume or name this run (default: a new id)")
    p.add_argument("--executor", choices=["serial", "processes", "dask"],
                   help="where clusters run (default: [executor] kind, local processes)")
    p.add_argument("--workers", type=int, help="worker processes (default: [executor] workers)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="an existing Dask scheduler (workers need the same data and work folders)")
    p.add_argument("--retry-failed", action="store_true", help="run again the clusters this run recorded as failed")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("results", help="export the results tables of a run")
    rsub = p.add_subparsers(dest="results_command", required=True, metavar="ACTION")
    q = rsub.add_parser("export", help="write one results table of a run to Parquet, FITS, VOTable, ECSV or CSV")
    q.add_argument("table", help="clusters | observations | regions | region_spectra | region_fits | profiles")
    q.add_argument("out", type=Path, help="output file (.parquet, .fits, .xml/.vot, .ecsv, .csv)")
    q.add_argument("--run-id", help="the run (default: the latest)")
    q.add_argument("--format", choices=["parquet", "fits", "votable", "ecsv", "csv"], help="default: from suffix")
    q.add_argument("--force", action="store_true", help="replace an existing file")
    q.set_defaults(func=_cmd_results_export)
