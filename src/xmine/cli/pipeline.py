"""CLI verbs of the cluster chain: ``demo``, ``simulate``, ``process``, ``config``, ``bin``, ``outlines``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_commands"]


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

    result = run_demo(args.out, seed=args.seed, quiet=args.quiet)
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the cluster-chain verbs to the ``xmine`` parser."""
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
