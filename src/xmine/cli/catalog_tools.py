"""CLI verbs of the catalogue science tools: ``products fetch|show|plot``, ``xmatch``, ``coverage``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


def _source_rows(args: argparse.Namespace, config: Any) -> Any:
    """Source–observation rows from --table (cache), --sources (file) or the CSC TAP service (names)."""
    from xmine.errors import InputError

    if args.table:
        from xmine.cache import arrow_to_astropy, load_table
        from xmine.store import open_store

        with open_store(config.project.store, read_only=True) as store:
            return arrow_to_astropy(load_table(store, args.table))
    if args.sources:
        from astropy.table import Table

        path = Path(args.sources)
        if not path.exists():
            msg = f"{path}: no such source table"
            raise InputError(msg)
        fmt = "ascii.csv" if path.suffix.lower() == ".csv" else None
        return Table.read(path, format=fmt) if fmt else Table.read(path)
    if not args.names:
        msg = "name the sources, or give --table (a cached table) or --sources (a file)"
        raise InputError(msg)
    from xmine.products import query_source_observations

    csc = config.services.csc21
    return query_source_observations(args.names, tap_url=args.tap or csc.tap_url, master_source=csc.master_source,
                                     master_stack_assoc=csc.master_stack_assoc,
                                     stack_observation_assoc=csc.stack_observation_assoc,
                                     timeout_s=config.services.timeout_s, retries=config.services.retries)


def _cmd_products_fetch(args: argparse.Namespace) -> int:
    from xmine.config import load_config
    from xmine.products import DEFAULT_URL, fetch_products

    config = load_config(args.config)
    rows = _source_rows(args, config)
    url = args.url or getattr(config.services.csc21, "products_url", DEFAULT_URL)
    products = [p.strip() for p in args.products.split(",") if p.strip()]
    res = fetch_products(rows, args.out, names=args.names or None, products=products, bands=args.bands, url=url,
                         version=args.release, timeout_s=config.services.timeout_s,
                         retries=config.services.retries, missing_ok=not args.strict)
    args.printer.table(f"products from {url}", ["source", "obsid", "product", "status", "file", "bytes"],
                       [(r.name, r.obsid, r.product + (f" ({r.band})" if r.band else ""), r.status,
                         r.path.name if r.path else r.reason, r.bytes) for r in res])
    n = sum(r.status in {"downloaded", "present"} for r in res)
    args.printer.line(f"{n} of {len(res)} products in {args.out} (manifest.json lists sizes and MD5s)")
    return 0


def _folder_files(folder: Path) -> dict[str, Path]:
    from xmine.products import find_product_files

    return find_product_files(folder)


def _cmd_products_show(args: argparse.Namespace) -> int:
    from xmine.errors import InputError
    from xmine.products import load_light_curve, load_spectrum

    files = _folder_files(args.folder)
    if not files:
        msg = f"{args.folder}: no CSC products (…_pha3.fits, …_lc3.fits, …) here"
        raise InputError(msg)
    args.printer.table(f"products in {args.folder}", ["product", "file"], sorted(
        (k, v.name) for k, v in files.items()))
    if "pha" in files:
        s = load_spectrum(files["pha"])
        args.printer.line(f"spectrum: {s.counts.sum():.0f} counts in the source region, background "
                          f"{0 if s.bkg_counts is None else s.bkg_counts.sum():.0f} counts scaled by "
                          f"{s.bkg_scale:.4g}, net {s.net_counts:.1f} counts, exposure {s.exposure_s:.0f} s")
    if "lc" in files:
        lc = load_light_curve(files["lc"])
        args.printer.line(f"light curve: {lc.rate.size} bins, mean rate {lc.rate.mean():.4g} counts/s, "
                          f"max {lc.rate.max():.4g}")
    return 0


def _cmd_products_plot(args: argparse.Namespace) -> int:
    from xmine.errors import InputError
    from xmine.products import fit_product_spectrum, plot_light_curve, plot_spectrum

    files = _folder_files(args.folder)
    out = Path(args.out or args.folder)
    made = []
    if "pha" in files:
        made.append(plot_spectrum(files["pha"], out / "spectrum.png"))
    if "lc" in files:
        made.append(plot_light_curve(files["lc"], out / "lightcurve.png"))
    if not made:
        msg = f"{args.folder}: no spectrum or light curve to plot; run 'xmine products fetch' first"
        raise InputError(msg)
    for p in made:
        args.printer.line(f"wrote {p}")
    if args.fit:
        if "pha" not in files:
            msg = f"{args.folder}: no spectrum to fit"
            raise InputError(msg)
        kwargs: dict[str, Any] = {}
        if args.nh is not None:
            kwargs["nh_1e22"] = args.nh
        fit = fit_product_spectrum(files["pha"], **kwargs)
        args.printer.line(f"fit ({fit.model}, {fit.stat}): kT = {fit.kt_kev:.3g} keV "
                          f"[{fit.kt_lo:.3g}, {fit.kt_hi:.3g}] (1 sigma), "
                          f"statistic {fit.statistic:.1f} / {fit.dof} dof")
    return 0


def _cmd_xmatch(args: argparse.Namespace) -> int:
    import warnings

    from xmine.config import load_config
    from xmine.store import open_store
    from xmine.xmatch import UploadRefusedWarning, crossmatch_vo, plot_colour_hardness, plot_flux_magnitude

    config = load_config(args.config)
    if args.table:
        from xmine.cache import load_table

        with open_store(config.project.store, read_only=True) as store:
            sources = load_table(store, args.table)
    elif args.sources:
        args.names = []
        sources = _source_rows(args, config)
    else:
        from xmine.errors import InputError

        msg = "give the sources to match: --table (a cached table) or --sources (a file)"
        raise InputError(msg)
    cols = [c.strip() for c in args.remote_columns.split(",") if c.strip()]
    with warnings.catch_warnings(record=True) as caught, open_store(config.project.store) as store:
        warnings.simplefilter("always", UploadRefusedWarning)
        res = crossmatch_vo(sources, url=args.tap, remote_table=args.remote_table, remote_ra=args.remote_ra,
                            remote_dec=args.remote_dec, remote_err=args.remote_err,
                            remote_err_kind=args.remote_err_kind, remote_err_arcsec=args.remote_err_arcsec,
                            remote_columns=cols, max_remote_err_arcsec=args.max_remote_err,
                            err_col=args.err_col, err_kind=args.err_kind, k_sigma=args.k,
                            best_only=not args.all_pairs, method=args.method, store=store, refresh=args.refresh,
                            offline=args.offline or config.cache.offline, timeout_s=config.services.timeout_s,
                            retries=config.services.retries)
    for w in caught:
        if issubclass(w.category, UploadRefusedWarning):
            args.printer.line(f"note: {w.message}")
    where = "cache" if res.from_cache else args.tap
    args.printer.line(f"{res.table.num_rows} matches ({res.method} path) from {where} -> cache table "
                      f"{res.cache_table}; rule: sep < {args.k:.3g} x sqrt(sigma_x^2 + sigma_o^2), both 1-sigma")
    if args.out:
        from xmine.cache import arrow_to_astropy

        arrow_to_astropy(res.table).write(args.out, overwrite=args.force)
        args.printer.line(f"wrote {args.out}")
    if args.plots:
        out = Path(args.plots)
        for fn, name in ((plot_colour_hardness, "colour_hardness.png"), (plot_flux_magnitude, "flux_magnitude.png")):
            args.printer.line(f"wrote {fn(res.table, out / name)}")
    return 0


def _cmd_coverage(args: argparse.Namespace) -> int:
    from xmine.coverage import mosaic_sensitivity, plot_coverage, sensitivity_from_exposure, sky_coverage

    region = tuple(args.region) if args.region else None
    maps: list[Any] = list(args.maps)
    if args.from_exposure:
        maps = [sensitivity_from_exposure(m, min_counts=args.min_counts) for m in maps]
    mos = mosaic_sensitivity(maps, region=region, pixel_arcsec=args.pixel_arcsec)
    cov = sky_coverage(mos, n_fluxes=args.n_fluxes)
    total = cov.meta["total_area_deg2"]
    rows = [(f, a) for f, a in zip(cov["flux"], cov["area_deg2"], strict=True)][:: max(1, len(cov) // 10)]
    args.printer.table(f"sky coverage of {len(args.maps)} maps ({total:.4g} deg2 covered)",
                       [f"S ({mos.unit or 'map units'})", "area(S_lim <= S) deg2"], rows)
    if args.out:
        cov.write(args.out, overwrite=args.force)
        args.printer.line(f"wrote {args.out}")
    if args.plot:
        args.printer.line(f"wrote {plot_coverage(cov, args.plot)}")
    if args.mosaic:
        mos.to_hdu().writeto(args.mosaic, overwrite=args.force)
        args.printer.line(f"wrote {args.mosaic}")
    return 0


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", help="cached table of source-observation rows (name, obsid, obi, region_id, "
                                   "detect_stack_id), e.g. from the csc21_master_obsids recipe")
    p.add_argument("--sources", help="file of such rows (CSV, ECSV, FITS)")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``products``, ``xmatch`` and ``coverage`` to the ``xmine`` command."""
    from xmine.products import DEFAULT_PRODUCTS, PRODUCT_TYPES

    prod = sub.add_parser("products", help="per-source CSC data products: fetch, show, plot (and fit)")
    psub = prod.add_subparsers(dest="products_command", required=True, metavar="ACTION")
    p = psub.add_parser("fetch", help="download spectra, responses, light curves, regions, event lists")
    p.add_argument("names", nargs="*", help="CSC source names (resolved through the CSC TAP service unless --table)")
    _add_source_options(p)
    p.add_argument("--out", type=Path, default=Path("products"), help="folder (default ./products)")
    p.add_argument("--products", default=",".join(DEFAULT_PRODUCTS),
                   help=f"comma-separated, of {', '.join(PRODUCT_TYPES)} (default all)")
    p.add_argument("--bands", default="b", help="band letters of light curves (b, s, m, h, u; HRC: w)")
    p.add_argument("--url", help="csccli service (default services.csc21.products_url)")
    p.add_argument("--tap", help="CSC TAP service to resolve names (default services.csc21.tap_url)")
    p.add_argument("--release", default="rel2.1", help="catalogue release asked of the service (rel2.1, cur)")
    p.add_argument("--strict", action="store_true", help="fail if the service lacks a product for a source")
    p.set_defaults(func=_cmd_products_fetch)
    p = psub.add_parser("show", help="summarise the products in a folder (counts, background, light curve)")
    p.add_argument("folder", type=Path, help="a source's obsid folder, e.g. products/2CXOJ.../90101_000")
    p.set_defaults(func=_cmd_products_show)
    p = psub.add_parser("plot", help="plot the spectrum with its background and the light curve (PNG)")
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, help="folder for the PNGs (default: the products folder)")
    p.add_argument("--fit", action="store_true", help="fit the spectrum with xmine.fit (the fit extra, sherpa)")
    p.add_argument("--nh", type=float, help="absorbing column for the fit, 1e22 cm-2 (default: Galactic)")
    p.set_defaults(func=_cmd_products_plot)

    p = sub.add_parser("xmatch", help="cross-match sources with a VO catalogue by TAP upload (both position errors)")
    p.add_argument("--tap", required=True, help="TAP service of the other catalogue")
    p.add_argument("--remote-table", required=True, help="its table, e.g. ir.twomass_like")
    _add_source_options(p)
    p.add_argument("--remote-ra", default="ra")
    p.add_argument("--remote-dec", default="dec")
    p.add_argument("--remote-err", help="its position-error column (arcsec)")
    p.add_argument("--remote-err-kind", choices=["sigma", "r95"], default="sigma",
                   help="that column is a 1-sigma (default) or a 95%% radius")
    p.add_argument("--remote-err-arcsec", type=float, default=0.0, help="constant 1-sigma if it has no column")
    p.add_argument("--max-remote-err", type=float, default=1.0, help="largest remote 1-sigma searched (arcsec)")
    p.add_argument("--remote-columns", default="", help="its columns to bring back, comma-separated")
    p.add_argument("--err-col", default="err_ellipse_r0", help="the sources' error column (default CSC's)")
    p.add_argument("--err-kind", choices=["sigma", "r95"], default="r95",
                   help="r95 (CSC err_ellipse_r0, default) or sigma")
    p.add_argument("--k", type=float, default=3.44, help="match limit in combined sigma (3.44: 99.73%% of true pairs)")
    p.add_argument("--method", choices=["auto", "upload", "client"], default="auto")
    p.add_argument("--all-pairs", action="store_true", help="keep every candidate, not only the nearest in sigma")
    p.add_argument("--refresh", action="store_true", help="refetch even if cached")
    p.add_argument("--offline", action="store_true", help="answer from the cache only")
    p.add_argument("--out", help="write the matches (ECSV, FITS, CSV by suffix)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.add_argument("--plots", help="folder for the colour-hardness and flux-magnitude PNGs")
    p.set_defaults(func=_cmd_xmatch)

    p = sub.add_parser("coverage", help="sky coverage area(S_lim <= S) from sensitivity maps (mosaicked)")
    p.add_argument("maps", nargs="+", type=Path, help="sensitivity maps with a sky WCS (e.g. CSC stack sens3 files)")
    p.add_argument("--region", nargs=3, type=float, metavar=("RA", "DEC", "RADIUS_DEG"), help="cone to cover")
    p.add_argument("--pixel-arcsec", type=float, help="mosaic pixel (default: the finest input pixel)")
    p.add_argument("--n-fluxes", type=int, default=60, help="flux grid size (log-spaced)")
    p.add_argument("--from-exposure", action="store_true",
                   help="the maps are exposure maps (s): use S_lim = --min-counts / exposure (count/s; no background)")
    p.add_argument("--min-counts", type=float, default=10.0, help="source counts for a detection (--from-exposure)")
    p.add_argument("--out", help="write the table (ECSV, FITS, CSV by suffix)")
    p.add_argument("--plot", help="write the area-flux curve (PNG)")
    p.add_argument("--mosaic", help="write the mosaicked sensitivity map (FITS)")
    p.add_argument("--force", action="store_true", help="overwrite outputs")
    p.set_defaults(func=_cmd_coverage)
