"""CLI verb of population studies: ``study`` (summaries, groups, odd regions, plots and a report of one run)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_commands"]


def _cmd_study(args: argparse.Namespace) -> int:
    from xmine.config import load_config
    from xmine.study import study_run

    store = args.db if args.db is not None else load_config(args.config).project.store
    result = study_run(store, args.run_id, out_dir=args.out, seed=args.seed, cluster_maps=not args.no_maps,
                       write_back=not args.no_write)
    columns, rows = result.summary_rows()
    n_cc = sum(1 for r in result.clusters.to_pylist() if r["cool_core_like"])
    n_odd = sum(1 for r in result.regions.to_pylist() if r["odd"])
    args.printer.table(f"xmine study of run {result.run_id}: {result.clusters.num_rows} clusters "
                       f"({n_cc} cool-core-like), {result.regions.num_rows} regions ({n_odd} odd)", columns, rows)
    for line in result.notes:
        args.printer.line(f"note: {line}")
    if not args.no_write:
        args.printer.line(f"tables study_clusters and study_regions (run {result.run_id}) written to {store}")
    args.printer.line(f"report: {result.report}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``study`` verb to the ``xmine`` parser."""
    p = sub.add_parser("study", help="population study of a run: summaries, cool-core-like groups, odd regions, "
                                     "plots and an HTML report")
    p.add_argument("run_id", nargs="?", default=None, metavar="RUN_ID",
                   help="the run to study (default: the latest finished run with results)")
    p.add_argument("--db", type=Path, default=None, help="the results store (default: [project] store)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the plots and index.html (default: study/RUN_ID beside the store)")
    p.add_argument("--seed", type=int, default=0, help="seed of the classification's starts (default 0)")
    p.add_argument("--no-maps", action="store_true", help="skip the per-cluster bin-map plots")
    p.add_argument("--no-write", action="store_true",
                   help="do not write the study_clusters/study_regions tables to the store")
    p.set_defaults(func=_cmd_study)
