"""The ``xmine`` command line: parse arguments, make one API call, print a summary.

Every :class:`~xmine.errors.XmineError` (and a file the user named that cannot
be read) ends the command with one line on stderr and exit status 1; usage
mistakes exit with 2 (argparse). ``--debug`` re-raises, to show the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xmine import __version__
from xmine.errors import XmineError

__all__ = ["main"]

log = logging.getLogger("xmine")

_Handler = Callable[[argparse.Namespace], int]


class _Printer:
    """Console output of the CLI; silent with ``--quiet``."""

    def __init__(self, *, quiet: bool) -> None:
        from rich.console import Console

        self.quiet = quiet
        # a pipe or a log file gets wide lines instead of rich's 80-column default
        self.console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)

    def line(self, text: str = "") -> None:
        if not self.quiet:
            self.console.print(text, markup=False)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.quiet:
            return
        from rich.table import Table

        table = Table(title=title, title_justify="left", box=None, header_style="bold")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*(_fmt(v) for v in row))
        self.console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# -- commands ------------------------------------------------------------------------------

def _cmd_config_init(args: argparse.Namespace) -> int:
    from xmine.config import write_default_config

    path = write_default_config(args.path, overwrite=args.force)
    args.printer.line(f"wrote {path} (every key commented out at its default)")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from xmine.config import default_config_text, load_config

    config = load_config(args.config)
    sys.stdout.write(default_config_text(config, commented=False))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from xmine.demo import run_demo

    result = run_demo(args.out, seed=args.seed)
    args.printer.table(f"xmine demo: {result.out_dir}", result.columns, result.rows)
    for line in result.notes:
        args.printer.line(line)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from xmine import simulate

    if args.write_demo_truth:
        paths = simulate.write_truth(simulate.demo_truth(seed=args.seed), args.write_demo_truth)
        for p in paths:
            args.printer.line(f"wrote {p}")
        return 0
    if not args.truth:
        truth = simulate.demo_truth(seed=args.seed)
    else:  # one folder of truth tables, or the files themselves
        truth = simulate.load_truth(args.truth[0] if len(args.truth) == 1 else args.truth)
    products = simulate.simulate_sky(truth, args.out, seed=args.seed)
    columns, rows = products.summary()
    args.printer.table(f"simulated sky in {args.out}", columns, rows)
    return 0


def _cmd_bin(args: argparse.Namespace) -> int:
    from xmine.config import load_config
    from xmine.contbin import run_contbin

    # defaults: the project file's [binning] (contbin's own defaults without one), then the command line
    options = load_config(args.config).binning.model_dump()
    options.update({k: getattr(args, k) for k in ("sn", "smoothsn", "constrainval", "constrainfill")
                    if getattr(args, k) is not None})
    options["noscrub"] = options["noscrub"] or args.noscrub
    options["guarantee_sn"] = options["guarantee_sn"] or args.guarantee_sn
    paths = run_contbin(args.image, out_dir=args.out, bg_path=args.bg, expmap_path=args.expmap,
                        bgexpmap_path=args.bgexpmap, mask_path=args.mask, **options)
    from astropy.table import Table

    bins = Table.read(paths["bins"])
    if len(bins):
        sn = sorted(bins["sn"])
        args.printer.line(f"{len(bins)} bins, S/N {sn[0]:.1f} to {sn[-1]:.1f} (median {sn[len(sn) // 2]:.1f})")
    for name, p in paths.items():
        args.printer.line(f"{name}: {p}")
    return 0


def _cmd_outlines(args: argparse.Namespace) -> int:
    from astropy.io import fits

    from xmine.outlines import write_make_region_files, write_outline_regions

    header = None
    if args.header is not None:
        try:
            header = fits.getheader(args.header)
        except (OSError, ValueError) as exc:
            from xmine.errors import InputError

            msg = f"{args.header}: cannot read its header ({exc}); give the image the bins were made from"
            raise InputError(msg) from exc
    if args.style == "make_region_files" or args.minx is not None or args.miny is not None:
        paths = write_make_region_files(args.binmap, out_dir=args.out, header=header, minx=args.minx,
                                        miny=args.miny, binning=args.bin)
    else:
        paths = write_outline_regions(args.binmap, out_dir=args.out, header=header, coords=tuple(args.coords),
                                      style=args.style, per_bin=args.per_bin, combined=args.combined,
                                      prefix=args.prefix, holes=args.holes)
    args.printer.line(f"wrote {len(paths)} region file(s) in {args.out}")
    return 0


def _cmd_process(args: argparse.Namespace) -> int:
    from xmine.config import load_config
    from xmine.pipeline import load_cluster_sample, read_catalog, run_process

    config = load_config(args.config)
    clusters = load_cluster_sample(args.sample, names=args.names)
    catalog = None
    if args.catalog is not None:
        catalog = read_catalog(args.catalog)
    summary = run_process(clusters, config=config, catalog=catalog, run_id=args.run_id)
    args.printer.table(f"xmine process: run {summary.run_id}", summary.columns, summary.rows)
    for line in summary.notes:
        args.printer.line(line)
    return 1 if summary.failed == len(clusters) else 0


# -- parser --------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmine", description="Catalogue-driven data mining of X-ray observations (Chandra, CSC 2.1, 4XMM)."
    )
    parser.add_argument("--version", action="version", version=f"xmine {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="project file (default ./xmine.toml if present)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level of the library (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="simulate the bundled sample and run xmine's chain on it")
    p.add_argument("--out", type=Path, default=Path("xmine-demo"), help="output folder (default ./xmine-demo)")
    p.add_argument("--seed", type=int, default=2026, help="random seed of the simulated sky (default 2026)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("simulate", help="simulate catalogues and Chandra event files from a truth table")
    p.add_argument("truth", nargs="*", type=Path,
                   help="truth files (clusters, point sources, observations) or their folder; default: the demo sky")
    p.add_argument("--out", type=Path, default=Path("simulated"), help="output folder (default ./simulated)")
    p.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    p.add_argument("--write-demo-truth", type=Path, metavar="DIR",
                   help="only write the demo truth tables to DIR, to edit and simulate later")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("process", help="run the Chandra pipeline for clusters (obsids -> contour bins and profile)")
    p.add_argument("sample", type=Path, help="cluster table: name, ra_deg, dec_deg, obsids (and z)")
    p.add_argument("names", nargs="*", help="process only these clusters (default: all)")
    p.add_argument("--catalog", type=Path, help="catalogued point sources (FITS/CSV/ECSV; CSC, 4XMM or common columns)")
    p.add_argument("--run-id", help="resume or name this run (default: a new id)")
    p.set_defaults(func=_cmd_process)

    p = sub.add_parser("config", help="write or show the project file")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    q = csub.add_parser("init", help="write a commented default xmine.toml")
    q.add_argument("path", nargs="?", type=Path, default=Path("xmine.toml"))
    q.add_argument("--force", action="store_true", help="replace an existing file")
    q.set_defaults(func=_cmd_config_init)
    q = csub.add_parser("show", help="print the effective configuration (file + XMINE_* environment)")
    q.set_defaults(func=_cmd_config_show)

    p = sub.add_parser("bin", help="contour-bin a counts image (contbin's algorithm and options)")
    p.add_argument("image", type=Path, help="counts image (FITS)")
    p.add_argument("--out", type=Path, default=Path("contbin"), help="output folder (default ./contbin)")
    p.add_argument("--sn", type=float, default=None, help="target signal-to-noise per bin")
    p.add_argument("--smoothsn", type=float, default=None, help="S/N of the accumulative smoothing")
    p.add_argument("--constrainval", type=float, default=None, help="geometric constraint value")
    p.add_argument("--constrainfill", action=argparse.BooleanOptionalAction, default=None,
                   help="apply the geometric constraint")
    p.add_argument("--bg", type=Path, help="background counts image")
    p.add_argument("--expmap", type=Path, help="exposure map of the image")
    p.add_argument("--bgexpmap", type=Path, help="exposure map of the background image")
    p.add_argument("--mask", type=Path, help="mask image (0 = excluded)")
    p.add_argument("--noscrub", action="store_true", help="keep bins below the target S/N")
    p.add_argument("--guarantee-sn", action="store_true",
                   help="merge until every bin reaches the target S/N (contbin may leave a few below)")
    p.set_defaults(func=_cmd_bin)

    p = sub.add_parser("outlines", help="write exact bin outlines as DS9 / CIAO region files")
    p.add_argument("binmap", type=Path, help="bin map FITS (-1 = unbinned), e.g. from `xmine bin`")
    p.add_argument("--out", type=Path, default=Path("regions"), help="output folder (default ./regions)")
    p.add_argument("--header", type=Path, help="image whose WCS and physical keywords to use (default: the bin map's)")
    p.add_argument("--coords", nargs="+", default=["physical", "fk5"],
                   choices=["image", "physical", "fk5", "fk5_hms", "icrs", "icrs_hms"],
                   help="coordinate systems to write (default: physical fk5)")
    p.add_argument("--style", default="ds9", choices=["ds9", "ciao", "make_region_files"],
                   help="file syntax; make_region_files writes what contbin's tool writes (rotbox stacks)")
    p.add_argument("--per-bin", action=argparse.BooleanOptionalAction, default=True,
                   help="one file per bin, <prefix>_<n>.reg (default on)")
    p.add_argument("--combined", action=argparse.BooleanOptionalAction, default=True,
                   help="one file with all bins (default on)")
    p.add_argument("--prefix", default="xaf", help="file name prefix of per-bin files (contbin: xaf)")
    p.add_argument("--holes", default="exclude", choices=["exclude", "split"],
                   help="holes as -polygon exclusions, or bins cut into hole-free polygons")
    p.add_argument("--minx", type=float, help="make_region_files --minx (default from LTV/LTM)")
    p.add_argument("--miny", type=float, help="make_region_files --miny (default from LTV/LTM)")
    p.add_argument("--bin", type=float, help="make_region_files --bin (default from LTM)")
    p.set_defaults(func=_cmd_outlines)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xmine`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 success, 1 error, 2 usage error, 130 interrupted.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(args.log_level)
    args.printer = _Printer(quiet=args.quiet)
    try:
        return int(args.func(args))
    except XmineError as exc:
        if args.debug:
            raise
        print(f"xmine: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a path the user gave that cannot be read or written
        if args.debug:
            raise
        name = f"{exc.filename}: " if exc.filename else ""
        print(f"xmine: error: {name}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xmine: interrupted; finished steps are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
