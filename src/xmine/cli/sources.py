"""CLI verbs of catalogue science: ``xmine sources simulate|hardness|classify|changes``."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


@contextlib.contextmanager
def _maybe_store(args: argparse.Namespace, *, needed: bool, write: bool = False) -> Iterator[Any]:
    """Open the store when the command needs it (a table name, a cone, a recipe or --out-table)."""
    if not needed:
        yield None
        return
    from xmine.config import load_config
    from xmine.store import open_store

    path = args.store if args.store is not None else load_config(args.config).project.store
    with open_store(path, read_only=not write) as store:
        yield store


def _is_file(value: Any) -> bool:
    return value is not None and Path(str(value)).exists()


def _query_dirs(args: argparse.Namespace) -> list[Path]:
    from xmine.config import load_config

    return list(load_config(args.config).project.query_dirs)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from xmine.simulate.labels import make_epoch_pair, make_labelled_sources, write_epoch_pair
    from xmine.store import atomic_write

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labelled = make_labelled_sources(args.n, seed=args.seed)
    with atomic_write(out / "labelled.fits") as tmp:
        labelled.write(tmp, format="fits")
    files = write_epoch_pair(make_epoch_pair(seed=args.seed), out / "epochs")
    args.printer.line(f"wrote {out / 'labelled.fits'} ({len(labelled)} simulated sources labelled in column 'class')")
    if args.store is not None:
        from xmine.cache import store_result
        from xmine.store import open_store
        from xmine.vo import to_arrow

        with open_store(args.store) as store:
            store_result(store, args.table, to_arrow(labelled), service="xmine.simulate.labels", catalogue="simulated",
                         query_text=f"make_labelled_sources({args.n}, seed={args.seed})",
                         params={"n": args.n, "seed": args.seed}, expiry_days=None)
        args.printer.line(f"stored the labelled set as table {args.table} in {args.store} (HEALPix-indexed)")
    args.printer.line("wrote " + ", ".join(str(p) for p in files.values()) + " (two epochs with injected changes)")
    return 0


def _cmd_hardness(args: argparse.Namespace) -> int:
    from xmine.hardness import run_hardness
    from xmine.recipes import parse_params

    cone = (args.cone[0], args.cone[1], args.cone[2] / 60.0) if args.cone else None
    needs_store = cone is not None or args.recipe is not None or (args.source is not None
                                                                  and not _is_file(args.source))
    with _maybe_store(args, needed=needs_store) as store:
        res = run_hardness(args.source, store=store, cone=cone, table=args.table, recipe=args.recipe,
                           params=parse_params(args.param), query_dirs=_query_dirs(args) if args.recipe else (),
                           png=args.png, out_table=args.out, overwrite=args.force, min_hard_hm=args.min_hard_hm,
                           min_var_index=args.min_var_index, min_var_prob=args.min_var_prob, title=args.title or "")
    rows = [(c, res.n_sources - n, n) for c, n in res.n_null.items()]
    args.printer.table(f"hardness of {res.n_sources} sources", ["ratio", "measured", "NULL"], rows)
    args.printer.line(f"X-ray-binary candidates ({res.table.meta['xrb_rule']}): {res.n_candidates}")
    for p in (res.png, res.table_file):
        if p is not None:
            args.printer.line(f"wrote {p}")
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from xmine.classify import run_classification

    feats = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    named = [v for v in (args.train, args.predict) if v is not None and not _is_file(v)]
    with _maybe_store(args, needed=bool(named) or args.out_table is not None,
                      write=args.out_table is not None) as store:
        run = run_classification(args.train, args.label, predict=args.predict, store=store,
                                 out_table=args.out_table, model_path=args.save_model, model=args.model,
                                 features=feats, folds=args.folds, seed=args.seed, max_iter=args.max_iter)
    rep = run.trained.report
    if rep.fold_accuracy:
        args.printer.table(
            f"{len(rep.fold_accuracy)}-fold cross-validation: accuracy {rep.accuracy:.3f} "
            f"(folds {', '.join(f'{a:.3f}' for a in rep.fold_accuracy)}), balanced {rep.balanced_accuracy:.3f}",
            ["class", "rows", "precision", "recall", "f1", *(f"as {c}" for c in rep.classes)], rep.rows())
    args.printer.line(f"features: {', '.join(run.trained.features)}")
    if run.predictions is not None:
        counts: dict[str, int] = {}
        for c in run.predictions["predicted_class"]:
            counts[str(c)] = counts.get(str(c), 0) + 1
        args.printer.line("predicted: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                          + (" (the training rows themselves: in-sample, the CV above is the honest score)"
                             if args.predict is None else ""))
        if args.out:
            from xmine.store import atomic_write

            out = Path(args.out)
            fmt = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".xml": "votable"}.get(out.suffix.lower(), "fits")
            with atomic_write(out) as tmp:
                run.predictions.write(tmp, format=fmt)
            args.printer.line(f"wrote {out}")
    if run.table_name:
        args.printer.line(f"predictions and the model's provenance written to table {run.table_name}")
    if run.model_path:
        args.printer.line(f"model saved to {run.model_path} (+ .json provenance)")
    return 0


def _cmd_changes(args: argparse.Namespace) -> int:
    from xmine.changes import read_sensitivity_map, run_changes

    def _limit(value: float | None, smap: Path | None) -> Any:
        if smap is not None:
            return read_sensitivity_map(smap, flux_per_map_unit=args.map_flux_per_unit)
        return value

    named = [v for v in (args.reference, args.new) if not _is_file(v)]
    with _maybe_store(args, needed=bool(named)) as store:
        new: Any = args.new
        if args.new_ecf is not None or args.new_exposure_s is not None:
            from xmine.changes import detections_to_flux_list
            from xmine.classify import read_catalogue_table
            from xmine.errors import InputError

            if args.new_ecf is None or args.new_exposure_s is None:
                msg = "xmine detections need both --new-ecf (erg cm-2 per count) and --new-exposure-s"
                raise InputError(msg)
            new = detections_to_flux_list(read_catalogue_table(args.new, store=store), exposure_s=args.new_exposure_s,
                                          ecf_erg_cm2_per_count=args.new_ecf)
        res = run_changes(args.reference, new, out=args.out, overwrite=args.force, alerts_only=args.alerts_only,
                          factor=args.factor, match_radius_arcsec=args.radius_arcsec,
                          new_limit=_limit(args.new_limit, args.new_sensitivity_map),
                          ref_limit=_limit(args.ref_limit, args.ref_sensitivity_map),
                          ref_confidence=args.ref_confidence, new_confidence=args.new_confidence,
                          ref_band_kev=tuple(args.ref_band) if args.ref_band else None,
                          new_band_kev=tuple(args.new_band) if args.new_band else None,
                          ref_instrument=args.ref_instrument, new_instrument=args.new_instrument, store=store)
    t = res.table
    alerts = t[t["alert"]]
    args.printer.table(f"flux changes (factor {args.factor:g} beyond 90 % intervals): "
                       + ", ".join(f"{k} {v}" for k, v in res.counts.items()),
                       ["flag", "reference", "new", "ra", "dec", "ratio", "rule"],
                       [(r["flag"], r["name_ref"], r["name_new"], round(float(r["ra"]), 5), round(float(r["dec"]), 5),
                         round(float(r["ratio"]), 3), r["rule"]) for r in alerts[:50]])
    if len(alerts) > 50:
        args.printer.line(f"… {len(alerts) - 50} more alerts in the output table")
    for note in t.meta.get("notes", []):
        args.printer.line(f"warning: {note}")
    if res.out is not None:
        args.printer.line(f"wrote {res.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``xmine sources simulate|hardness|classify|changes``."""
    p = sub.add_parser("sources", help="catalogue science: hardness/variability, classification, flux changes")
    ssub = p.add_subparsers(dest="sources_command", required=True, metavar="VERB")

    def _store_opt(q: argparse.ArgumentParser) -> None:
        q.add_argument("--store", type=Path, default=None, help="DuckDB store (default: [project] store)")

    q = ssub.add_parser("simulate", help="write the bundled simulated sets: labelled.fits and two epochs")
    q.add_argument("--out-dir", type=Path, default=Path("xmine-sources"), help="folder (default xmine-sources)")
    q.add_argument("-n", type=int, default=4000, help="labelled sources (default 4000)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    q.add_argument("--store", type=Path, default=None, help="also store the labelled set in this DuckDB store")
    q.add_argument("--table", default="sim_sources", help="its table name there (default sim_sources)")
    q.set_defaults(func=_cmd_simulate)

    q = ssub.add_parser("hardness", help="hardness ratios against variability: table, PNG, XRB candidates")
    q.add_argument("source", nargs="?", help="table file (CSV/FITS/VOTable/ECSV/Parquet) or a store table name")
    q.add_argument("--cone", nargs=3, type=float, metavar=("RA", "DEC", "RADIUS_ARCMIN"),
                   help="rows of --table within this cone (degrees, arcmin)")
    q.add_argument("--table", help="store table searched by --cone (a cached CSC master_source result)")
    q.add_argument("--recipe", help="SQL recipe run on the store, e.g. sources_xrb_candidates")
    q.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="recipe parameter")
    q.add_argument("--png", type=Path, help="plot file (PNG)")
    q.add_argument("--out", type=Path, help="table file (.ecsv, .csv, .fits, .xml)")
    q.add_argument("--force", action="store_true", help="replace --out if it exists")
    q.add_argument("--min-hard-hm", type=float, default=0.0, help="XRB candidates: lowest hard_hm (default 0)")
    q.add_argument("--min-var-index", type=float, default=5.0,
                   help="XRB candidates: lowest var_inter_index_b (default 5)")
    q.add_argument("--min-var-prob", type=float, default=None,
                   help="XRB candidates: use var_inter_prob_b >= this instead of the index")
    q.add_argument("--title", help="plot title")
    _store_opt(q)
    q.set_defaults(func=_cmd_hardness)

    q = ssub.add_parser("classify", help="train a classifier on labelled sources, report CV, predict, store")
    q.add_argument("train", nargs="?", help="labelled table (file or store table name); omit with --model")
    q.add_argument("--label", default="class", help="label column (default 'class')")
    q.add_argument("--predict", help="table to classify (default the training table)")
    q.add_argument("--features", help="comma-separated feature columns (default: the catalogue properties found)")
    q.add_argument("--folds", type=int, default=5, help="stratified cross-validation folds (default 5)")
    q.add_argument("--seed", type=int, default=0, help="seed of the folds and the classifier (default 0)")
    q.add_argument("--max-iter", type=int, default=60, help="boosting iterations (default 60)")
    q.add_argument("--out-table", help="write predictions + provenance to this store table")
    q.add_argument("--out", type=Path, help="also write the predictions to a file")
    q.add_argument("--save-model", type=Path, help="save the model (joblib + .json provenance)")
    q.add_argument("--model", type=Path, help="use a saved model instead of training")
    _store_opt(q)
    q.set_defaults(func=_cmd_classify)

    q = ssub.add_parser("changes", help="flag flux changes and new sources against a reference list")
    q.add_argument("--reference", required=True, help="reference list (file or store table, e.g. cached CSC)")
    q.add_argument("--new", required=True, help="new list (file or store table, e.g. another epoch)")
    q.add_argument("--new-ecf", type=float,
                   help="--new is xmine detect output (counts): energy flux per count rate, erg cm-2 per count")
    q.add_argument("--new-exposure-s", type=float, help="exposure of the detections (s), with --new-ecf")
    q.add_argument("--factor", type=float, default=3.0, help="change factor beyond 90 %% intervals (default 3)")
    q.add_argument("--radius-arcsec", type=float, default=5.0, help="match radius (default 5)")
    q.add_argument("--new-limit", type=float, help="uniform upper limit of the new epoch (erg cm-2 s-1)")
    q.add_argument("--new-sensitivity-map", type=Path, help="limiting-flux map of the new epoch (FITS with WCS)")
    q.add_argument("--ref-limit", type=float, help="uniform limit of the reference epoch (for new sources)")
    q.add_argument("--ref-sensitivity-map", type=Path, help="limiting-flux map of the reference epoch")
    q.add_argument("--map-flux-per-unit", type=float, help="multiply maps by this to get erg cm-2 s-1")
    q.add_argument("--ref-confidence", type=float, default=0.90, help="confidence of the reference limits (0.90)")
    q.add_argument("--new-confidence", type=float, default=0.90, help="confidence of the new limits (0.90)")
    q.add_argument("--ref-band", nargs=2, type=float, metavar=("LO", "HI"), help="reference band, keV")
    q.add_argument("--new-band", nargs=2, type=float, metavar=("LO", "HI"), help="new band, keV")
    q.add_argument("--ref-instrument", help="reference instrument (ACIS, HRC, EPIC…)")
    q.add_argument("--new-instrument", help="new instrument")
    q.add_argument("--out", type=Path, help="flag table file (.ecsv, .csv, .fits, .xml)")
    q.add_argument("--alerts-only", action="store_true", help="write only alert rows to --out")
    q.add_argument("--force", action="store_true", help="replace --out if it exists")
    _store_opt(q)
    q.set_defaults(func=_cmd_changes)
