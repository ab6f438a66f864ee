"""CLI verbs of the query layer: ``query``, ``cache``, ``select``, ``sql``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

__all__ = ["add_commands"]


def _catalogue_url(config: Any, catalogue: str | None, url: str | None, *, scs: bool = False) -> tuple[str, str]:
    """Return (service URL, catalogue label) from --url or --catalogue."""
    if url:
        return url, catalogue or "query"
    svc = {"csc21": config.services.csc21, "4xmm": config.services.xmm}.get(catalogue or "csc21")
    if svc is None:
        from xmine.errors import InputError

        msg = f"--catalogue {catalogue!r}: use csc21 or 4xmm, or give --url"
        raise InputError(msg)
    if scs:
        scs_url = getattr(svc, "scs_url", None)
        if not scs_url:
            from xmine.errors import InputError

            msg = f"{catalogue} has no cone-search URL in the configuration; use --tap or --url"
            raise InputError(msg)
        return scs_url, catalogue or "csc21"
    return svc.tap_url, catalogue or "csc21"


def _print_cached(args: argparse.Namespace, res: Any, what: str) -> None:
    prov = res.provenance
    source = "cache" if res.from_cache else prov["service"]
    args.printer.line(f"{what}: {prov['rows']} rows from {source} -> cache table {res.name}"
                      f"{' (stale: past its expiry)' if res.stale else ''}")
    if prov["truncated"]:
        args.printer.line("note: the result was cut at the row limit (maxrec); raise --maxrec or narrow the query")
    if args.out:
        from xmine.cache import export_table
        from xmine.store import open_store

        with open_store(args.config_obj.project.store, read_only=True) as store:
            path = export_table(store, res.name, args.out, overwrite=args.force)
        args.printer.line(f"wrote {path}")


def _cmd_query_tap(args: argparse.Namespace) -> int:
    from xmine import cache, vo
    from xmine.config import load_config
    from xmine.recipes import Identifier, load_recipe, parse_params, render_adql
    from xmine.store import open_store

    config = args.config_obj = load_config(args.config)
    url, catalogue = _catalogue_url(config, args.catalogue, args.url)
    if args.recipe:
        params = {k: Identifier(v) if isinstance(v, str) else v for k, v in parse_params(args.param).items()}
        adql = render_adql(load_recipe(args.recipe, config.project.query_dirs), params)
    elif args.adql:
        adql = args.adql
    else:
        args.parser.error("give an ADQL query or --recipe NAME")
    mode: Literal["sync", "async"] = "async" if args.use_async else "sync"
    maxrec = args.maxrec or config.services.maxrec
    if args.dry_run:
        plan = vo.query_tap(adql, url=url, maxrec=maxrec, mode=mode, dry_run=True)
        args.printer.line(f"POST {plan.url}")
        args.printer.line(f"MAXREC={plan.params.get('MAXREC')}")
        args.printer.line(plan.adql)
        return 0
    offline = args.offline or config.cache.offline
    status = None if args.quiet or mode != "async" else args.printer.console.status("TAP job: submitting")
    if status is not None:
        status.start()
    try:
        with open_store(config.project.store) as store:
            res = cache.load_tap(store, adql, url=url, maxrec=maxrec, mode=mode, catalogue=catalogue,
                                 refresh=args.refresh, offline=offline, expiry_days=config.cache.expiry_days,
                                 timeout_s=config.services.timeout_s, retries=config.services.retries, name=args.name,
                                 poll=None if status is None else (lambda phase: status.update(f"TAP job: {phase}")))
    finally:
        if status is not None:
            status.stop()
    _print_cached(args, res, "query")
    return 0


def _cmd_query_table(args: argparse.Namespace) -> int:
    from xmine import cache, vo
    from xmine.config import load_config
    from xmine.store import open_store

    config = args.config_obj = load_config(args.config)
    url, catalogue = _catalogue_url(config, args.catalogue, args.url)
    if args.dry_run:
        plan = vo.query_table(args.table, url=url, key=args.key, where=args.where, page_size=args.page_size,
                              dry_run=True)
        args.printer.line(f"POST {plan.url} MAXREC={args.page_size}, first page:")
        args.printer.line(plan.adql)
        return 0
    with open_store(config.project.store) as store:
        res = cache.load_paged(store, args.table, url=url, key=args.key, where=args.where, page_size=args.page_size,
                               max_rows=args.max_rows, catalogue=catalogue, refresh=args.refresh,
                               offline=args.offline or config.cache.offline, expiry_days=config.cache.expiry_days,
                               timeout_s=config.services.timeout_s, retries=config.services.retries)
    _print_cached(args, res, "table")
    return 0


def _cmd_query_cone(args: argparse.Namespace) -> int:
    from xmine import cache, vo
    from xmine.config import load_config
    from xmine.store import open_store

    config = args.config_obj = load_config(args.config)
    radius_deg = args.radius_arcmin / 60.0
    offline = args.offline or config.cache.offline
    use_tap = args.tap or (args.url is None and (args.catalogue or "csc21") == "4xmm")
    if use_tap:  # an ADQL cone in the catalogue's dialect
        from xmine.catalogs import load_catalog

        url, catalogue = _catalogue_url(config, args.catalogue, args.url)
        cat = load_catalog(catalogue, config.project.catalog_dirs)
        table = config.services.xmm.table if catalogue == "4xmm" else config.services.csc21.master_source
        ra_col = cat["columns"]["ra"]["native"]
        dec_col = cat["columns"]["dec"]["native"]
        dialect = "geometry" if (config.services.xmm.adql_geometry if catalogue == "4xmm"
                                 else config.services.csc21.adql_geometry) else "csc"
        q = vo.cone_adql(table, args.ra, args.dec, radius_deg, dialect=dialect, ra_col=ra_col, dec_col=dec_col)
        if args.dry_run:
            args.printer.line(f"POST {url.rstrip('/')}/sync")
            args.printer.line(q.text)
            if q.cone is not None:
                args.printer.line("(the box is cut to the circle after the fetch)")
            return 0
        with open_store(config.project.store) as store:
            res = cache.load_tap(store, q.text, url=url, maxrec=args.maxrec or config.services.maxrec,
                                 catalogue=catalogue, refresh=args.refresh, offline=offline,
                                 expiry_days=config.cache.expiry_days, timeout_s=config.services.timeout_s,
                                 retries=config.services.retries)
        _print_cached(args, res, "cone (box rows; cut to the circle when read)" if q.cone else "cone")
        return 0
    url, catalogue = _catalogue_url(config, args.catalogue, args.url, scs=True)
    if args.dry_run:
        plan = vo.query_cone(url, args.ra, args.dec, radius_deg, verbosity=args.verbosity, maxrec=args.maxrec,
                             dry_run=True)
        args.printer.line(f"GET {plan.url} " + " ".join(f"{k}={v}" for k, v in plan.params.items()))
        return 0
    with open_store(config.project.store) as store:
        res = cache.load_cone(store, url, args.ra, args.dec, radius_deg, verbosity=args.verbosity,
                              maxrec=args.maxrec, catalogue=catalogue, refresh=args.refresh, offline=offline,
                              expiry_days=config.cache.expiry_days, timeout_s=config.services.timeout_s,
                              retries=config.services.retries)
    _print_cached(args, res, "cone search")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from xmine import cache
    from xmine.config import load_config
    from xmine.store import open_store

    config = load_config(args.config)
    action = args.cache_command
    with open_store(config.project.store, read_only=action in ("list", "show", "export")) as store:
        if action == "list":
            rows = [[r["name"], r["catalogue"], r["rows"], "yes" if r["truncated"] else "",
                     f"{r['fetched_at']:%Y-%m-%d %H:%M}", "stale" if r["stale"] else "", r["query"][:80]]
                    for r in cache.list_cache(store)]
            args.printer.table(f"cached results in {config.project.store}",
                               ["table", "catalogue", "rows", "truncated", "fetched (UTC)", "", "query"], rows)
        elif action == "show":
            info = cache.show_cache(store, args.name)
            for key in ("result_table", "service", "catalogue", "release", "rows", "truncated", "fetched_at",
                        "expires_at", "stale", "query_sha256", "params", "versions"):
                args.printer.line(f"{key}: {info[key]}")
            args.printer.line(f"query: {info['query_text']}")
            args.printer.table("columns", ["name", "type", "unit"],
                               [[c["name"], c["type"], c["unit"] or ""] for c in info["columns"]])
        elif action == "refresh":
            done = cache.refresh_cache(store, args.names or None, expired_only=args.expired,
                                       timeout_s=config.services.timeout_s, retries=config.services.retries)
            args.printer.line(f"refreshed {len(done)} result(s): {' '.join(done) or '-'}")
        elif action == "clear":
            if not args.names and not args.all and not args.expired:
                args.parser.error("name the tables to clear, or give --all or --expired")
            done = cache.clear_cache(store, args.names or None, expired_only=args.expired)
            args.printer.line(f"cleared {len(done)} result(s): {' '.join(done) or '-'}")
        else:
            path = cache.export_table(store, args.name, args.file, fmt=args.format, overwrite=args.force)
            args.printer.line(f"wrote {path}")
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from xmine.config import load_config
    from xmine.select import run_selection

    config = load_config(args.config)
    status = None if args.quiet else args.printer.console.status("xmine select: starting")
    if status is not None:
        status.start()
    try:
        res = run_selection(config, out_dir=args.out, clusters_file=args.clusters,
                            point_sources=args.select_command == "pointsources", refresh=args.refresh,
                            offline=True if args.offline else None, obs_tap=args.obs_url, obs_table=args.obs_table,
                            min_significance=args.min_significance, min_ext_ml=args.min_ext_ml,
                            max_sum_flag=args.max_sum_flag, field_radius_arcmin=args.field_radius_arcmin,
                            core_radius_arcsec=args.core_radius_arcsec, mask_core=args.mask_core,
                            progress=None if status is None else (lambda text: status.update(f"xmine select: {text}")))
    finally:
        if status is not None:
            status.stop()
    columns, rows = res.summary()
    if args.select_command == "clusters":
        columns, rows = columns[:4], [r[:4] for r in rows]
    args.printer.table(f"{len(rows)} clusters -> {args.out}", columns, rows)
    regions = sum(1 for f in res.files if f.suffix == ".reg")
    args.printer.line(f"wrote {len(res.files) - regions} tables" + (f" and {regions} region files" if regions else ""))
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from xmine.cache import arrow_to_astropy, run_sql
    from xmine.config import load_config
    from xmine.recipes import parse_params, sql_text

    config = load_config(args.config)
    text = sql_text(args.query, config.project.query_dirs)
    table, truncated = run_sql(config.project.store, text, parse_params(args.param), limit=args.limit,
                               timeout_s=args.timeout)
    if args.out:
        from xmine.store import atomic_write

        t = arrow_to_astropy(table)
        with atomic_write(args.out, overwrite=args.force) as tmp:
            t.write(tmp, format="ascii.csv" if args.out.suffix.lower() == ".csv" else None)
        args.printer.line(f"wrote {table.num_rows} rows to {args.out}")
    else:
        args.printer.table("", table.column_names, [list(r.values()) for r in table.to_pylist()])
    if truncated:
        args.printer.line(f"note: only the first {args.limit} rows are shown (--limit)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the query-layer verbs to the ``xmine`` parser."""
    def _export_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--out", type=Path, help="also export to CSV, Parquet, FITS or VOTable (.xml)")
        q.add_argument("--force", action="store_true", help="replace --out if it exists")

    def _cache_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--refresh", action="store_true", help="fetch again even if cached")
        q.add_argument("--offline", action="store_true", help="answer from the cache only (no network)")

    p = sub.add_parser("query", help="query CSC 2.1 / 4XMM services (TAP, cone search); results are cached")
    qsub = p.add_subparsers(dest="query_command", required=True, metavar="KIND")
    q = qsub.add_parser("tap", help="run ADQL (or a named recipe) on a TAP service")
    q.add_argument("adql", nargs="?", help="the ADQL query (or use --recipe)")
    q.add_argument("--recipe", help="named ADQL recipe from queries/ (e.g. csc21_extended)")
    q.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="recipe parameter (numbers, or table/column names)")
    q.add_argument("--catalogue", choices=["csc21", "4xmm"], help="service from the configuration (default csc21)")
    q.add_argument("--url", help="TAP base URL (overrides --catalogue)")
    q.add_argument("--maxrec", type=int, help="row limit (default services.maxrec)")
    q.add_argument("--async", dest="use_async", action="store_true", help="run as an async job (deleted after)")
    q.add_argument("--name", help="cache table name (default derived from the query)")
    _export_opts(q)
    q.add_argument("--dry-run", action="store_true", help="print the URL and ADQL; send nothing")
    _cache_opts(q)
    q.set_defaults(func=_cmd_query_tap, parser=q)
    q = qsub.add_parser("table", help="fetch a whole table (or the rows meeting --where), paged by a unique key")
    q.add_argument("table", help="qualified table name, e.g. csc21.master_source")
    q.add_argument("--key", required=True, help="unique sortable column to page on (e.g. name, srcid)")
    q.add_argument("--where", action="append", default=[], help="ADQL condition (repeatable; ANDed)")
    q.add_argument("--page-size", type=int, default=10_000, help="rows per request (default 10000)")
    q.add_argument("--max-rows", type=int, help="stop after this many rows (marked truncated)")
    q.add_argument("--catalogue", choices=["csc21", "4xmm"], help="service from the configuration (default csc21)")
    q.add_argument("--url", help="TAP base URL (overrides --catalogue)")
    _export_opts(q)
    q.add_argument("--dry-run", action="store_true", help="print the first page's ADQL; send nothing")
    _cache_opts(q)
    q.set_defaults(func=_cmd_query_table, parser=q)
    q = qsub.add_parser("cone", help="cone search around a position (SCS, or ADQL in the catalogue's dialect)")
    q.add_argument("--ra", type=float, required=True, help="centre RA, degrees (ICRS)")
    q.add_argument("--dec", type=float, required=True, help="centre Dec, degrees (ICRS)")
    q.add_argument("--radius-arcmin", type=float, default=5.0, help="radius, arcmin (default 5)")
    q.add_argument("--catalogue", choices=["csc21", "4xmm"], help="catalogue (default csc21)")
    q.add_argument("--url", help="cone-search URL (or TAP base URL with --tap)")
    q.add_argument("--tap", action="store_true", help="ask the TAP service with ADQL instead of cone search")
    q.add_argument("--verbosity", type=int, default=2, choices=[1, 2, 3], help="SCS column set (default 2)")
    q.add_argument("--maxrec", type=int, help="row limit")
    _export_opts(q)
    q.add_argument("--dry-run", action="store_true", help="print the request; send nothing")
    _cache_opts(q)
    q.set_defaults(func=_cmd_query_cone, parser=q)

    p = sub.add_parser("cache", help="list, show, refresh, clear or export cached query results")
    csub = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    q = csub.add_parser("list", help="one line per cached result")
    q.set_defaults(func=_cmd_cache, parser=q)
    q = csub.add_parser("show", help="provenance and columns of one cached result")
    q.add_argument("name", help="cache table name (see xmine cache list)")
    q.set_defaults(func=_cmd_cache, parser=q)
    q = csub.add_parser("refresh", help="re-run the recorded queries (all, the named, or --expired)")
    q.add_argument("names", nargs="*")
    q.add_argument("--expired", action="store_true", help="only results past their expiry")
    q.set_defaults(func=_cmd_cache, parser=q)
    q = csub.add_parser("clear", help="drop cached results")
    q.add_argument("names", nargs="*")
    q.add_argument("--all", action="store_true", help="drop every cached result")
    q.add_argument("--expired", action="store_true", help="only results past their expiry")
    q.set_defaults(func=_cmd_cache, parser=q)
    q = csub.add_parser("export", help="write a cached result to CSV, Parquet, FITS or VOTable")
    q.add_argument("name")
    q.add_argument("file", type=Path, help="output file; the format follows the suffix (.csv .parquet .fits .xml)")
    q.add_argument("--format", choices=["csv", "parquet", "fits", "votable"], help="format (default: from suffix)")
    q.add_argument("--force", action="store_true", help="replace an existing file")
    q.set_defaults(func=_cmd_cache, parser=q)

    p = sub.add_parser("select", help="select clusters, their Chandra obsids and point sources to exclude")
    ssub = p.add_subparsers(dest="select_command", required=True, metavar="WHAT")
    for what, text in (("clusters", "cluster candidates (extended in CSC and 4XMM) and their ACIS obsids"),
                       ("pointsources", "clusters, obsids and point sources per field with region files")):
        q = ssub.add_parser(what, help=text)
        q.add_argument("--clusters", type=Path, help="start from this list (name, ra, dec), e.g. the ACCEPT sample")
        q.add_argument("--out", type=Path, default=Path("selection"), help="output folder (default ./selection)")
        q.add_argument("--obs-url", help="TAP URL of the Chandra observation table (default: the CSC TAP URL)")
        q.add_argument("--obs-table", default="chandra.observations", help="observation table name")
        q.add_argument("--min-significance", type=float, default=3.0, help="CSC significance cut (default 3)")
        q.add_argument("--min-ext-ml", type=float, default=10.0, help="4XMM SC_EXT_ML cut (default 10)")
        q.add_argument("--max-sum-flag", type=int, default=0, help="largest 4XMM summary flag kept (default 0)")
        q.add_argument("--field-radius-arcmin", type=float, default=10.0, help="point-source cone (default 10)")
        q.add_argument("--core-radius-arcsec", type=float, help="flag sources nearer the centre for review")
        q.add_argument("--mask-core", action="store_true", help="also mask the core sources flagged for review")
        _cache_opts(q)
        q.set_defaults(func=_cmd_select, parser=q)

    p = sub.add_parser("sql", help="read-only SQL (or a named .sql recipe) on the cache and results")
    p.add_argument("query", help="SQL text, or the name of a queries/*.sql recipe")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="bound :name parameter")
    p.add_argument("--limit", type=int, default=1000, help="rows shown (default 1000; a notice says if cut)")
    p.add_argument("--timeout", type=float, default=60.0, help="time limit, seconds (default 60)")
    p.add_argument("--out", type=Path, help="write the rows to a file (.csv, .fits, .ecsv, ...)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_sql, parser=p)
