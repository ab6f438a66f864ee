"""Results of bulk runs in the DuckDB store: what each cluster, observation and region measured.

Tables (created by the store's schema 2, keyed by ``run_id`` and ``cluster``):

``clusters``       one row per cluster of a run: position, z, R500 and its source, obsids, exposure,
                   number of bins, ``status`` (``done`` | ``failed``) and the failure ``reason``;
``observations``   one row per (cluster, obsid): the evt2 used, flare-cleaned exposure and fraction;
``regions``        one row per contour bin: the measurements of :func:`xmine.measure.measure_regions`, the
                   bin's outline in fk5 (DS9 syntax) and its region file;
``region_spectra`` one row per (bin, obsid) and ``obsid = 0`` for the combined spectrum of the bin;
``region_fits``    one row per fitted bin (the ``fit`` extra);
``profiles``       the radial surface-brightness profile of each cluster.

A cluster is recorded in **one transaction** (:func:`record_cluster`): its earlier rows in every table are
deleted and the new ones inserted, so recording twice never duplicates and a killed driver leaves either the
old rows or the new ones. Workers never write here: they return a :class:`ClusterOutcome` and the driver
records it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from xmine.errors import InputError
from xmine.store import Store, atomic_write

__all__ = ["RESULT_TABLES", "ClusterOutcome", "export_table", "record_cluster", "record_run_tables",
           "recorded_clusters"]

#: The tables a cluster's results go to, each keyed by (run_id, cluster, ...).
RESULT_TABLES: tuple[str, ...] = ("clusters", "observations", "regions", "region_spectra", "region_fits",
                                  "profiles")


@dataclass
class ClusterOutcome:
    """What a worker returns for one cluster: plain values and Arrow tables, no open handles.

    ``cluster`` is a :class:`xmine.pipeline.ClusterSpec`; ``steps`` are its
    :class:`xmine.pipeline.StepRecord` s, written to ``steps``/``failures`` with the results.
    """

    cluster: Any
    status: str
    reason: str | None = None
    seconds: float = 0.0
    products_dir: str | None = None
    r500_kpc: float | None = None
    r500_source: str | None = None
    n_bins: int = 0
    observations: list[dict[str, Any]] = field(default_factory=list)
    regions: pa.Table | None = None
    spectra: pa.Table | None = None
    fits: pa.Table | None = None
    profile: pa.Table | None = None
    steps: list[Any] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _columns(con: Any, table: str) -> list[str]:
    rows = con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = $t "
                       "ORDER BY ordinal_position", {"t": table}).fetchall()
    return [r[0] for r in rows]


def _insert_arrow(con: Any, table: str, data: pa.Table | None, keys: Mapping[str, Any]) -> int:
    """Insert the columns of ``data`` that ``table`` has, with the key columns set; return the rows inserted."""
    if data is None or data.num_rows == 0:
        return 0
    target = _columns(con, table)
    for name, value in keys.items():
        col = pa.array([value] * data.num_rows)
        data = data.set_column(data.schema.get_field_index(name), name, col) if name in data.column_names \
            else data.append_column(name, col)
    cols = [c for c in target if c in data.column_names]
    view = f"_xmine_insert_{table}"
    con.register(view, data.select(cols))
    try:
        names = ", ".join(f'"{c}"' for c in cols)
        con.execute(f'INSERT INTO {table} ({names}) SELECT {names} FROM {view}')
    finally:
        _unregister(con, view)
    return data.num_rows


def _unregister(con: Any, view: str) -> None:
    """Drop a registered Arrow view, without hiding the error of a failed statement.

    After a failed statement DuckDB refuses everything until ROLLBACK; the caller's transaction rolls back and
    re-raises the statement's own error.
    """
    import duckdb

    with contextlib.suppress(duckdb.Error):
        con.unregister(view)


def record_cluster(store: Store, run_id: str, outcome: ClusterOutcome) -> None:
    """Record one cluster's outcome in one transaction, replacing any earlier rows of it in this run.

    Parameters
    ----------
    store : Store
        Open and writable.
    run_id : str
    outcome : ClusterOutcome
    """
    from xmine.pipeline import write_step_records

    c = outcome.cluster
    keys = {"run_id": run_id, "cluster": c.name}
    exposure = sum(float(o.get("exposure_s") or 0.0) for o in outcome.observations if o.get("status") == "done")
    with store.transaction() as con:
        for table in RESULT_TABLES:
            con.execute(f"DELETE FROM {table} WHERE run_id = $run_id AND cluster = $cluster", keys)
        con.execute(
            """INSERT INTO clusters (run_id, cluster, ra_deg, dec_deg, z, r500_kpc, r500_source, tx_kev, obsids,
                   n_obsids, exposure_s, n_bins, status, reason, products_dir, seconds, recorded_at)
               VALUES ($run_id, $cluster, $ra, $dec, $z, $r500, $r500_source, $tx, $obsids, $n_obsids, $exposure,
                   $n_bins, $status, $reason, $products, $seconds, $now)""",
            {**keys, "ra": c.ra_deg, "dec": c.dec_deg, "z": c.z, "r500": outcome.r500_kpc,
             "r500_source": outcome.r500_source, "tx": c.tx_kev, "obsids": " ".join(map(str, c.obsids)),
             "n_obsids": len(c.obsids), "exposure": exposure if outcome.observations else None,
             "n_bins": outcome.n_bins, "status": outcome.status, "reason": outcome.reason,
             "products": outcome.products_dir, "seconds": outcome.seconds, "now": _dt.datetime.now(_dt.UTC)})
        for o in outcome.observations:
            con.execute(
                """INSERT INTO observations VALUES ($run_id, $cluster, $obsid, $evt2, $exposure, $clean, $flares,
                       $gti, $status, $reason, $prov)""",
                {**keys, "obsid": int(o["obsid"]), "evt2": o.get("evt2"), "exposure": o.get("exposure_s"),
                 "clean": o.get("clean_fraction"), "flares": o.get("n_flares"), "gti": o.get("gti"),
                 "status": o.get("status", "done"), "reason": o.get("reason"),
                 "prov": json.dumps(o.get("provenance", {}), sort_keys=True, default=str)})
        _insert_arrow(con, "regions", outcome.regions, keys)
        _insert_arrow(con, "region_spectra", outcome.spectra, keys)
        _insert_arrow(con, "region_fits", outcome.fits, keys)
        _insert_arrow(con, "profiles", outcome.profile, keys)
        write_step_records(store, run_id, outcome.steps)
        if outcome.status == "failed":
            store.record_failure(run_id, f"cluster/{c.name}", "run", outcome.reason or "")


_SQL_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.float64(): "DOUBLE",
              pa.bool_(): "BOOLEAN"}


def record_run_tables(store: Store, run_id: str,
                      tables: Sequence[tuple[str, pa.Table, Sequence[tuple[str, pa.DataType]], Sequence[str]]]) -> None:
    """Replace a run's rows of tables derived from its results (e.g. the study's) in one transaction.

    Parameters
    ----------
    store : Store
        Open and writable.
    run_id : str
    tables : sequence of (name, rows, columns, key)
        Each table's name, its rows (Arrow, with a ``run_id`` column), its columns as (name, Arrow type), and
        its primary key. A missing table is created; columns a table made by an earlier xmine lacks are added.
    """
    with store.transaction() as con:
        for name, rows, columns, key in tables:
            cols_sql = ", ".join(f"{n} {_SQL_TYPES[t]}" for n, t in columns)
            con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols_sql}, PRIMARY KEY ({', '.join(key)}))")
            have = set(_columns(con, name))
            for col, dtype in columns:
                if col not in have:
                    con.execute(f"ALTER TABLE {name} ADD COLUMN {col} {_SQL_TYPES[dtype]}")
            con.execute(f"DELETE FROM {name} WHERE run_id = $r", {"r": run_id})
            view = f"_xmine_rows_{name}"
            con.register(view, rows)
            try:
                cols = ", ".join(c for c, _ in columns)
                con.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM {view}")
            finally:
                _unregister(con, view)


def recorded_clusters(store: Store, run_id: str) -> dict[str, str]:
    """Return {cluster: status} of the clusters already recorded in a run."""
    rows = store.con.execute("SELECT cluster, status FROM clusters WHERE run_id = $r", {"r": run_id}).fetchall()
    return {name: status for name, status in rows}


_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits", ".csv": "csv",
            ".vot": "votable", ".xml": "votable", ".votable": "votable", ".ecsv": "ecsv"}


def export_table(store: Store, sql: str, path: str | Path, *, params: Mapping[str, Any] | Sequence[Any] | None = None,
                 fmt: str | None = None, overwrite: bool = False) -> Path:
    """Write the rows of a query (e.g. one table of one run) to Parquet, FITS, VOTable, ECSV or CSV, atomically.

    Parameters
    ----------
    store : Store
    sql : str
        A SELECT with bound parameters (``$name``), never formatted values.
    path : path-like
        Output file; the format comes from its suffix unless ``fmt`` is given.
    params : mapping or sequence, optional
    fmt : {"parquet", "fits", "votable", "ecsv", "csv"}, optional
    overwrite : bool, optional
        Replace an existing file.
    """
    p = Path(path)
    kind = fmt or _FORMATS.get(p.suffix.lower())
    if kind is None:
        msg = f"{p}: unknown output format; use .parquet, .fits, .xml/.vot (VOTable), .ecsv or .csv, or --format"
        raise InputError(msg)
    table = store.query(sql, params)
    with atomic_write(p, overwrite=overwrite) as tmp:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            from xmine.cache import arrow_to_astropy

            t = arrow_to_astropy(table)
            fmt_name = {"fits": "fits", "votable": "votable", "ecsv": "ascii.ecsv", "csv": "ascii.csv"}[kind]
            t.write(tmp, format=fmt_name)
    return p

