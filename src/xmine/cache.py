"""The catalogue cache: fetched query results as DuckDB tables, each with a provenance row.

A result is cached under a table name derived from what was asked (service
URL, query text, mode and row limit), so the same query asked again is
answered from the file with no network access. Each cached table has one row
in ``provenance`` (service, catalogue, release, query text and SHA-256,
parameters, fetch time, rows, truncation, versions, expiry). Units and
descriptions of the columns are kept as DuckDB column comments (JSON) and come
back as Arrow field metadata and astropy units.

The table and its provenance row are written in one transaction after the
whole result has arrived, so an interrupted or failed fetch leaves neither.

Offline (``offline=True`` or ``cache.offline`` in the configuration), a query
with no cached result raises :class:`~xmine.errors.CacheError` naming the
query and the command that fetches it; an expired result is returned with a
:class:`~xmine.errors.StaleCacheWarning`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from xmine.errors import CacheError, InputError, NoResultsWarning, StaleCacheWarning
from xmine.store import Store, atomic_write

__all__ = [
    "CACHE_PREFIX",
    "CachedResult",
    "bind_sql",
    "clear_cache",
    "export_table",
    "index_table",
    "list_cache",
    "load_cached",
    "load_cone",
    "load_paged",
    "load_query",
    "load_table",
    "load_tap",
    "refresh_cache",
    "run_sql",
    "show_cache",
    "store_result",
]

#: Prefix of cached result tables (so they never collide with results tables).
CACHE_PREFIX = "cache_"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass
class CachedResult:
    """A cached table and where it came from.

    Attributes
    ----------
    name : str
        The DuckDB table name.
    table : pyarrow.Table
        The rows, with units in field metadata.
    provenance : dict
        The provenance row.
    from_cache : bool
        True if no request was made.
    stale : bool
        True if past its expiry (returned only when offline).
    """

    name: str
    table: pa.Table
    provenance: dict[str, Any]
    from_cache: bool
    stale: bool = False

    def to_astropy(self) -> Any:
        """Return the rows as an astropy Table with units."""
        return arrow_to_astropy(self.table)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _versions() -> dict[str, str]:
    import astropy
    import duckdb
    import pyvo

    from xmine import __version__

    return {"xmine": __version__, "pyvo": pyvo.__version__, "astropy": astropy.__version__,
            "duckdb": duckdb.__version__}


def query_key(service: str, query_text: str, params: Mapping[str, Any] | None = None) -> str:
    """Return the SHA-256 that identifies a query (service URL, text, parameters)."""
    text = json.dumps({"service": service.rstrip("/"), "query": " ".join(query_text.split()),
                       "params": dict(params or {})}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def table_name_for(service: str, query_text: str, params: Mapping[str, Any] | None = None, *,
                   catalogue: str = "query") -> str:
    """Return the cache table name of a query: ``cache_<catalogue>_<16 hex digits>``."""
    cat = re.sub(r"[^A-Za-z0-9_]", "_", catalogue)[:24] or "query"
    return f"{CACHE_PREFIX}{cat}_{query_key(service, query_text, params)[:16]}"


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        msg = f"cache table name {name!r} must be letters, digits and _ (at most 63, not starting with a digit)"
        raise InputError(msg)
    return name


def _quote(name: str) -> str:
    return '"' + _check_name(name) + '"'


def _table_exists(store: Store, name: str) -> bool:
    rows = store.con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = $n AND schema_name = 'main'",
                             {"n": name}).fetchall()
    return bool(rows and rows[0][0])


# TIMESTAMPTZ values need pytz to reach Python; read them as epoch seconds instead
_PROV_COLUMNS = ("result_table, service, catalogue, release, query_text, query_sha256, params_json, "
                 "epoch(fetched_at) AS fetched_at, rows, truncated, versions_json, epoch(expires_at) AS expires_at")


def _prov_dict(cols: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(cols, row, strict=True))
    for key in ("fetched_at", "expires_at"):
        if d.get(key) is not None:
            d[key] = _dt.datetime.fromtimestamp(float(d[key]), tz=_dt.UTC)
    return d


def _provenance(store: Store, name: str) -> dict[str, Any] | None:
    cur = store.con.execute(f"SELECT {_PROV_COLUMNS} FROM provenance WHERE result_table = $n", {"n": name})
    rows = cur.fetchall()
    if not rows:
        return None
    return _prov_dict([d[0] for d in cur.description], rows[0])


def _expired(prov: Mapping[str, Any], now: _dt.datetime | None = None) -> bool:
    exp = prov.get("expires_at")
    if exp is None:
        return False
    if exp.tzinfo is None:
        exp = exp.replace(tzinfo=_dt.UTC)
    return bool(exp <= (now or _now()))


# ---------------------------------------------------------------------------- read / write tables
def store_result(store: Store, name: str, table: pa.Table, *, service: str, catalogue: str, query_text: str,
                 truncated: bool = False, release: str | None = None, params: Mapping[str, Any] | None = None,
                 expiry_days: float | None = 90.0, healpix: bool = True) -> dict[str, Any]:
    """Write (or replace) a cached table and its provenance row in one transaction.

    A table with sky positions (``ra``/``dec`` or 4XMM's ``sc_ra``/``sc_dec``, any
    case) gets a HEALPix index column ``hpx`` (nested, depth 16) and is stored
    sorted by it, so cone queries (:func:`xmine.sky.select_cone`) skip most rows.

    Parameters
    ----------
    store : Store
        Opened for writing.
    name : str
        Table name.
    table : pyarrow.Table
        The rows; field metadata ``unit``/``description`` become column comments.
    service, catalogue, query_text, truncated, release, params
        Provenance.
    expiry_days : float or None, optional
        Days until the result counts as stale (None: never).
    healpix : bool, optional
        Add the ``hpx`` index column when positions are found.

    Returns
    -------
    dict
        The provenance row written.
    """
    _check_name(name)
    if not isinstance(table, pa.Table):
        msg = f"store_result needs a pyarrow.Table, not {type(table).__name__}"
        raise InputError(msg)
    if healpix:
        table = _with_healpix(table)
    expires = _now() + _dt.timedelta(days=expiry_days) if expiry_days is not None else None
    view = f"_xmine_incoming_{threading.get_ident()}"
    store.con.register(view, table)
    try:
        with store.transaction() as con:
            con.execute(f"CREATE OR REPLACE TABLE {_quote(name)} AS SELECT * FROM {view}")
            _comment_columns(con, name, table.schema)
            store.record_provenance(name, service=service, catalogue=catalogue, query_text=query_text,
                                    rows=table.num_rows, truncated=truncated, release=release, params=params,
                                    versions=_versions(), expires_at=expires)
    finally:
        store.con.unregister(view)
    prov = _provenance(store, name)
    assert prov is not None
    return prov


def _comment_columns(con: Any, name: str, schema: pa.Schema) -> None:
    """Keep units and descriptions as column comments (JSON)."""
    for f in schema:
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items() if k in (b"unit", b"description")}
        if meta:
            comment = json.dumps(meta, sort_keys=True).replace("'", "''")
            col = f.name.replace('"', '""')
            con.execute(f'COMMENT ON COLUMN {_quote(name)}."{col}" IS \'{comment}\'')


_POSITION_COLUMNS = (("ra", "dec"), ("sc_ra", "sc_dec"))


def _with_healpix(table: pa.Table, hpx_col: str = "hpx") -> pa.Table:
    """Return ``table`` with a depth-16 HEALPix column, sorted by it (unchanged if it has no usable positions)."""
    from xmine.sky import healpix_index

    names = {n.lower(): n for n in table.column_names}
    if hpx_col in names or table.num_rows == 0:
        return table
    for ra_name, dec_name in _POSITION_COLUMNS:
        if ra_name in names and dec_name in names:
            ra, dec = table.column(names[ra_name]), table.column(names[dec_name])
            if not (pa.types.is_floating(ra.type) and pa.types.is_floating(dec.type)) or ra.null_count or \
                    dec.null_count:
                return table
            ra_np = ra.to_numpy(zero_copy_only=False)
            dec_np = dec.to_numpy(zero_copy_only=False)
            if not (np.all(np.isfinite(ra_np)) and np.all(np.isfinite(dec_np)) and np.all(np.abs(dec_np) <= 90)):
                return table
            hpx = healpix_index(ra_np, dec_np)
            field = pa.field(hpx_col, pa.int64(), metadata={b"description": b"HEALPix nested index, depth 16"})
            out = table.append_column(field, pa.array(hpx))
            return out.take(pa.array(np.argsort(hpx, kind="stable")))
    return table


def load_table(store: Store, name: str) -> pa.Table:
    """Return a cached (or any) table as Arrow, with units and descriptions in field metadata.

    Raises
    ------
    xmine.errors.CacheError
        If there is no such table (the message lists what is cached).
    """
    _check_name(name)
    if not _table_exists(store, name):
        known = ", ".join(r["result_table"] for r in _provenance_rows(store)) or "nothing"
        msg = f"{store.path}: no cached table {name!r}; cached: {known}"
        raise CacheError(msg)
    arrow = store.con.sql(f"SELECT * FROM {_quote(name)}").to_arrow_table()
    comments = dict(store.con.execute(
        "SELECT column_name, comment FROM duckdb_columns() WHERE table_name = $n AND schema_name = 'main'",
        {"n": name}).fetchall())
    fields = []
    for f in arrow.schema:
        raw = comments.get(f.name)
        meta = None
        if raw:
            try:
                meta = {k.encode(): str(v).encode() for k, v in json.loads(raw).items()}
            except (json.JSONDecodeError, AttributeError):
                meta = None
        fields.append(f.with_metadata(meta) if meta else f)
    return arrow.cast(pa.schema(fields))


def arrow_to_astropy(table: pa.Table) -> Any:
    """Return an astropy Table from Arrow: nulls masked, units from field metadata."""
    import numpy as np
    from astropy.table import MaskedColumn, Table

    out = Table()
    for f, col in zip(table.schema, table.columns, strict=True):
        arr = col.to_numpy(zero_copy_only=False)
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            mask = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            vals = np.array(["" if v is None else str(v) for v in col.to_pylist()], dtype=str)
            if len(vals) == 0:
                vals = np.array([], dtype="U1")
            out[f.name] = MaskedColumn(vals, mask=mask) if mask.any() else vals
        else:
            mask = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            if mask.any():
                filled = col.fill_null(False if pa.types.is_boolean(f.type) else 0).to_numpy(zero_copy_only=False)
                out[f.name] = MaskedColumn(filled, mask=mask)
            else:
                out[f.name] = arr
        meta = f.metadata or {}
        if b"unit" in meta:
            import astropy.units as u

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", u.UnitsWarning)
                out[f.name].unit = u.Unit(meta[b"unit"].decode(), parse_strict="silent")
        if b"description" in meta:
            out[f.name].description = meta[b"description"].decode()
    return out


# ---------------------------------------------------------------------------- cached queries
def load_cached(store: Store, name: str, *, offline: bool = False) -> CachedResult | None:
    """Return the cached result ``name``, or None if absent or expired (offline: stale ones with a warning)."""
    prov = _provenance(store, name)
    if prov is None or not _table_exists(store, name):
        return None
    stale = _expired(prov)
    if stale and not offline:
        return None
    if stale:
        warnings.warn(StaleCacheWarning(
            f"{name}: cached {prov['fetched_at']:%Y-%m-%d} and expired {prov['expires_at']:%Y-%m-%d}; "
            "used because offline (run `xmine cache refresh " + name + "` when online)"), stacklevel=3)
    return CachedResult(name=name, table=load_table(store, name), provenance=prov, from_cache=True, stale=stale)


def _find_by_key(store: Store, service: str, key: str) -> str | None:
    rows = store.con.execute("SELECT result_table, query_text, params_json FROM provenance "
                             "WHERE rtrim(service, '/') = $s ORDER BY fetched_at DESC",
                             {"s": service.rstrip("/")}).fetchall()
    for table, text, params in rows:
        if query_key(service, text, json.loads(params)) == key:
            return str(table)
    return None


def _fetch_command(service: str, query_text: str, kind: str) -> str:
    q = " ".join(query_text.split())
    if kind == "cone":
        ra, dec, r = [*q.split(), "nan", "nan", "nan"][:3]
        return f"xmine query cone --url {service} --ra {ra} --dec {dec} --radius-arcmin {float(r) * 60:g}"
    return f"xmine query tap --url {service} \"{q}\""


def load_query(store: Store, query_text: str, *, service: str, fetch: Callable[[], Any], catalogue: str = "query",
               release: str | None = None, params: Mapping[str, Any] | None = None, name: str | None = None,
               refresh: bool = False, offline: bool = False, expiry_days: float | None = 90.0,
               kind: Literal["tap", "cone"] = "tap", hint: str | None = None) -> CachedResult:
    """Answer a query from the cache, fetching and caching it only when needed.

    Parameters
    ----------
    store : Store
        Opened for writing (reads suffice when the answer is cached).
    query_text : str
        The query (ADQL, or a description of a cone search) — part of the key.
    service : str
        Service URL — part of the key.
    fetch : callable
        Called with no argument to fetch; returns a :class:`xmine.vo.QueryResult` (or a pyarrow/astropy table).
    catalogue, release : str, optional
        Provenance labels.
    params : mapping, optional
        Request parameters that change the answer (maxrec, mode, verbosity) — part of the key.
    name : str, optional
        Table name (default: derived from the key).
    refresh : bool, optional
        Fetch even if cached.
    offline : bool, optional
        Never fetch; raise :class:`~xmine.errors.CacheError` if nothing is cached.
    expiry_days : float or None, optional
        Lifetime of a new entry.
    kind : {"tap", "cone"}, optional
        For the message naming the fetch command.
    hint : str, optional
        The command to name in that message instead (e.g. ``xmine select clusters``).

    Returns
    -------
    CachedResult
    """
    key = query_key(service, query_text, params)
    # the same query cached under another name (another catalogue label or an explicit name) is the same result
    name = _check_name(name or _find_by_key(store, service, key)
                       or table_name_for(service, query_text, params, catalogue=catalogue))
    if offline and refresh:
        msg = "refresh and offline exclude each other"
        raise InputError(msg)
    if not refresh:
        hit = load_cached(store, name, offline=offline)
        if hit is not None:
            prov_key = query_key(hit.provenance["service"], hit.provenance["query_text"],
                                 json.loads(hit.provenance["params_json"]))
            if prov_key == key:  # a table of that name holding another query is replaced below
                return hit
    if offline:
        msg = (f"offline: nothing cached for {' '.join(query_text.split())[:200]!r} from {service} (table {name} "
               f"in {store.path}); fetch it once online with `{hint or _fetch_command(service, query_text, kind)}`")
        raise CacheError(msg)
    result = fetch()
    truncated = bool(getattr(result, "truncated", False))
    table = result.to_arrow() if hasattr(result, "to_arrow") else result
    if not isinstance(table, pa.Table):
        from xmine.vo import clean_table, to_arrow

        table = to_arrow(clean_table(table))
    prov = store_result(store, name, table, service=service, catalogue=catalogue, query_text=query_text,
                        truncated=truncated, release=release, params=params, expiry_days=expiry_days)
    return CachedResult(name=name, table=load_table(store, name), provenance=prov, from_cache=False)


# ---------------------------------------------------------------------------- management
def _provenance_rows(store: Store) -> list[dict[str, Any]]:
    cur = store.con.execute(f"SELECT {_PROV_COLUMNS} FROM provenance ORDER BY fetched_at, result_table")
    cols = [d[0] for d in cur.description]
    return [_prov_dict(cols, r) for r in cur.fetchall()]


def list_cache(store: Store) -> list[dict[str, Any]]:
    """Return one dict per cached table: name, catalogue, release, rows, truncated, fetched, expires, stale, query."""
    now = _now()
    out = []
    for p in _provenance_rows(store):
        out.append({"name": p["result_table"], "catalogue": p["catalogue"], "release": p["release"],
                    "rows": p["rows"], "truncated": p["truncated"], "fetched_at": p["fetched_at"],
                    "expires_at": p["expires_at"], "stale": _expired(p, now), "service": p["service"],
                    "query": " ".join(p["query_text"].split()), "present": _table_exists(store, p["result_table"])})
    return out


def show_cache(store: Store, name: str) -> dict[str, Any]:
    """Return the provenance of ``name`` with its columns (name, type, unit)."""
    prov = _provenance(store, name)
    if prov is None:
        known = ", ".join(r["result_table"] for r in _provenance_rows(store)) or "nothing"
        msg = f"{store.path}: no cached table {name!r}; cached: {known}"
        raise CacheError(msg)
    cols = store.con.execute(
        "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE table_name = $n AND schema_name = 'main' "
        "ORDER BY column_index", {"n": name}).fetchall()
    prov = dict(prov)
    prov["params"] = json.loads(prov.pop("params_json"))
    prov["versions"] = json.loads(prov.pop("versions_json"))
    prov["columns"] = [{"name": c, "type": t, "unit": (json.loads(m).get("unit") if m else None)}
                       for c, t, m in cols]
    prov["stale"] = _expired(prov)
    return prov


def clear_cache(store: Store, names: Sequence[str] | None = None, *, expired_only: bool = False) -> list[str]:
    """Drop cached tables and their provenance (all, the named ones, or only the expired); return the names."""
    rows = _provenance_rows(store)
    known = {r["result_table"] for r in rows}
    if names:
        missing = [n for n in names if n not in known]
        if missing:
            msg = f"{store.path}: not cached: {', '.join(missing)}; see `xmine cache list`"
            raise CacheError(msg)
        chosen = [r for r in rows if r["result_table"] in set(names)]
    else:
        chosen = rows
    if expired_only:
        chosen = [r for r in chosen if _expired(r)]
    dropped = []
    with store.transaction() as con:
        for r in chosen:
            con.execute(f"DROP TABLE IF EXISTS {_quote(r['result_table'])}")
            con.execute("DELETE FROM provenance WHERE result_table = $n", {"n": r["result_table"]})
            dropped.append(r["result_table"])
    return dropped


def refresh_cache(store: Store, names: Sequence[str] | None = None, *, expired_only: bool = False,
                  timeout_s: float = 300.0, retries: int = 3) -> list[str]:
    """Re-run the recorded queries of cached tables and replace them; return the names refreshed.

    Only queries recorded by :func:`xmine.cache.load_query` through
    :mod:`xmine.vo` (``params`` holding ``kind`` ``tap`` or ``cone``) can be re-run.
    """
    from xmine import vo

    rows = _provenance_rows(store)
    if names:
        known = {r["result_table"] for r in rows}
        missing = [n for n in names if n not in known]
        if missing:
            msg = f"{store.path}: not cached: {', '.join(missing)}; see `xmine cache list`"
            raise CacheError(msg)
        rows = [r for r in rows if r["result_table"] in set(names)]
    if expired_only:
        rows = [r for r in rows if _expired(r)]
    done = []
    for r in rows:
        params = json.loads(r["params_json"])
        kind = params.get("kind")
        if kind == "tap":
            def fetch(r: dict[str, Any] = r, params: dict[str, Any] = params) -> Any:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NoResultsWarning)
                    return vo.query_tap(r["query_text"], url=r["service"], maxrec=params.get("maxrec"),
                                        mode=params.get("mode", "sync"), timeout_s=timeout_s, retries=retries)
        elif kind == "paged":
            def fetch(r: dict[str, Any] = r, params: dict[str, Any] = params) -> Any:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NoResultsWarning)
                    return vo.query_table(params["table"], url=r["service"], key=params["key"],
                                          columns=params.get("columns"), where=params.get("where", []),
                                          page_size=params.get("page_size", 10_000), max_rows=params.get("max_rows"),
                                          mode=params.get("mode", "sync"), timeout_s=timeout_s, retries=retries)
        elif kind == "cone":
            def fetch(r: dict[str, Any] = r, params: dict[str, Any] = params) -> Any:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NoResultsWarning)
                    return vo.query_cone(r["service"], params["ra_deg"], params["dec_deg"], params["radius_deg"],
                                         verbosity=params.get("verbosity", 2), maxrec=params.get("maxrec"),
                                         timeout_s=timeout_s, retries=retries)
        else:
            msg = f"{r['result_table']}: its query ({params.get('kind', 'unknown kind')}) cannot be re-run; clear it"
            raise CacheError(msg)
        expires = r["expires_at"]
        life = None if expires is None else (expires - r["fetched_at"]).total_seconds() / 86400.0
        load_query(store, r["query_text"], service=r["service"], fetch=fetch, catalogue=r["catalogue"],
                   release=r["release"], params=params, name=r["result_table"], refresh=True, expiry_days=life,
                   kind="cone" if kind == "cone" else "tap")
        done.append(r["result_table"])
    return done


_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits",
            ".vot": "votable", ".xml": "votable", ".votable": "votable"}


def export_table(store: Store, name: str, path: str | Path, *, fmt: str | None = None,
                 overwrite: bool = False) -> Path:
    """Write a cached table to CSV, Parquet, FITS or VOTable (format from ``fmt`` or the suffix).

    Units go to Parquet field metadata, FITS ``TUNITn`` and VOTable ``unit``.
    The file is written beside its target and renamed into place.
    """
    p = Path(path)
    kind = fmt or _FORMATS.get(p.suffix.lower())
    if kind not in {"csv", "parquet", "fits", "votable"}:
        msg = f"{p}: unknown export format {fmt or p.suffix!r}; use .csv, .parquet, .fits or .xml (VOTable)"
        raise InputError(msg)
    arrow = load_table(store, name)
    with atomic_write(p, overwrite=overwrite) as tmp:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(arrow, tmp)
        else:
            t = arrow_to_astropy(arrow)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*has been deprecated in the VOUnit standard.*")
                if kind == "csv":
                    t.write(tmp, format="ascii.csv")
                elif kind == "fits":
                    t.write(tmp, format="fits")
                else:
                    t.write(tmp, format="votable")
    return p


# ---------------------------------------------------------------------------- SQL
_PARAM_RE = re.compile(r"('(?:[^']|'')*')|(\"(?:[^\"]|\"\")*\")|(::)|(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


def bind_sql(text: str) -> tuple[str, list[str]]:
    """Turn ``:name`` parameters into DuckDB ``$name``; leave ``::`` casts and quoted text alone.

    Returns
    -------
    (str, list of str)
        The SQL and the parameter names in order of first use.
    """
    names: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(4):
            if m.group(4) not in names:
                names.append(m.group(4))
            return "$" + m.group(4)
        return m.group(0)

    return _PARAM_RE.sub(sub, text), names


def _only_queries(con: Any, text: str, store_path: str | Path) -> None:
    """Refuse anything but one query: a read-only connection still lets COPY … TO or EXPORT write files."""
    import duckdb

    from xmine.errors import QueryError

    try:
        statements = con.extract_statements(text)
    except duckdb.Error as exc:
        msg = f"SQL failed: {str(exc).splitlines()[0]}"
        raise QueryError(msg, adql=text) from exc
    kinds = [s.type for s in statements]
    allowed = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
    if len(kinds) != 1 or kinds[0] not in allowed:
        shown = ", ".join(k.name for k in kinds) or "nothing"
        msg = (f"xmine sql runs one SELECT (or EXPLAIN) on {store_path}, read-only; this is {shown}. "
               "Export results with --out or `xmine results export`")
        raise InputError(msg)


def run_sql(store_path: str | Path, sql: str, params: Mapping[str, Any] | None = None, *, limit: int = 10_000,
            timeout_s: float = 60.0) -> tuple[pa.Table, bool]:
    """Run read-only SQL on the store with bound ``:name`` parameters.

    Parameters
    ----------
    store_path : path-like
        The DuckDB file (opened read-only).
    sql : str
        One statement; ``:name`` parameters are bound (never formatted in).
    params : mapping, optional
        Values for the parameters; a missing or unused one is an error.
    limit : int, optional
        At most this many rows are returned; the flag says whether more existed.
    timeout_s : float, optional
        The query is interrupted after this many seconds.

    Returns
    -------
    (pyarrow.Table, bool)
        The rows and ``truncated``.
    """
    import duckdb

    from xmine.errors import QueryError
    from xmine.store import open_store

    text, names = bind_sql(sql)
    params = dict(params or {})
    missing = [n for n in names if n not in params]
    if missing:
        msg = f"SQL parameter(s) {', '.join(':' + n for n in missing)} not given; pass them as name=value"
        raise InputError(msg)
    extra = [n for n in params if n not in names]
    if extra:
        msg = f"SQL has no parameter(s) {', '.join(':' + n for n in extra)}; it uses: {', '.join(names) or 'none'}"
        raise InputError(msg)
    # a bulk run holds the file only while it records a cluster (well under a second): wait for it
    store = open_store(store_path, read_only=True, wait_s=min(timeout_s, 30.0))
    con = store.con.cursor()  # a fresh cursor: the store's own may hold an unfinished result
    _only_queries(con, text, store_path)
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        try:
            rel = con.sql(text, params={n: params[n] for n in names} or None)
            if rel is None:
                msg = "the SQL returned no rows (xmine sql runs SELECT queries only)"
                raise InputError(msg)
            reader = rel.to_arrow_reader(batch_size=min(limit + 1, 100_000))
            batches, n = [], 0
            for b in reader:
                batches.append(b)
                n += b.num_rows
                if n > limit:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema).slice(0, limit + 1)
        except duckdb.InterruptException as exc:
            msg = f"SQL interrupted after {timeout_s:g} s (raise the time limit)"
            raise QueryError(msg, adql=sql) from exc
        except duckdb.Error as exc:
            msg = f"SQL failed: {str(exc).splitlines()[0]}"
            raise QueryError(msg, adql=sql) from exc
    finally:
        timer.cancel()
        con.close()
        store.close()
    truncated = table.num_rows > limit
    return table.slice(0, limit), truncated


# ---------------------------------------------------------------------------- cached VO queries
def load_tap(store: Store, adql: str, *, url: str, maxrec: int | None = None, mode: Literal["sync", "async"] = "sync",
             catalogue: str = "query", release: str | None = None, name: str | None = None, refresh: bool = False,
             offline: bool = False, expiry_days: float | None = 90.0, timeout_s: float = 300.0,
             retries: int = 3, hint: str | None = None, poll: Callable[[str], None] | None = None) -> CachedResult:
    """Return the result of an ADQL query from the cache, fetching it with :func:`xmine.vo.query_tap` if needed.

    Parameters are those of :func:`load_query` and :func:`xmine.vo.query_tap` (``poll`` gets the async job's phase);
    ``url``, the query text, ``maxrec`` and ``mode`` make the key. The
    provenance records ``kind = "tap"`` so ``xmine cache refresh`` can re-run it.
    """
    from xmine import vo

    params = {"kind": "tap", "maxrec": maxrec, "mode": mode}

    def fetch() -> Any:
        return vo.query_tap(adql, url=url, maxrec=maxrec, mode=mode, timeout_s=timeout_s, retries=retries, poll=poll)

    return load_query(store, adql, service=url, fetch=fetch, catalogue=catalogue, release=release, params=params,
                      name=name, refresh=refresh, offline=offline, expiry_days=expiry_days, kind="tap", hint=hint)


def load_cone(store: Store, url: str, ra_deg: float, dec_deg: float, radius_deg: float, *, verbosity: int = 2,
              maxrec: int | None = None, catalogue: str = "cone", release: str | None = None,
              name: str | None = None, refresh: bool = False, offline: bool = False,
              expiry_days: float | None = 90.0, timeout_s: float = 300.0, retries: int = 3) -> CachedResult:
    """Return a Simple Cone Search result from the cache, fetching it with :func:`xmine.vo.query_cone` if needed."""
    from xmine import vo

    text = f"{float(ra_deg)!r} {float(dec_deg)!r} {float(radius_deg)!r}"
    params = {"kind": "cone", "ra_deg": float(ra_deg), "dec_deg": float(dec_deg), "radius_deg": float(radius_deg),
              "verbosity": verbosity, "maxrec": maxrec}

    def fetch() -> Any:
        return vo.query_cone(url, ra_deg, dec_deg, radius_deg, verbosity=verbosity, maxrec=maxrec,
                             timeout_s=timeout_s, retries=retries)

    return load_query(store, text, service=url, fetch=fetch, catalogue=catalogue, release=release, params=params,
                      name=name, refresh=refresh, offline=offline, expiry_days=expiry_days, kind="cone")


def index_table(store: Store, name: str, *, ra_col: str = "ra", dec_col: str = "dec", hpx_col: str = "hpx") -> int:
    """Add (or recompute) a HEALPix index column (depth :data:`xmine.sky.HPX_DEPTH`) and sort the table by it.

    Cone queries (:func:`xmine.sky.select_cone`) then read only the row groups
    that can hold the cone. Runs in one transaction; returns the row count.
    """
    from xmine.sky import healpix_index

    arrow = load_table(store, name)
    names = {n.lower(): n for n in arrow.column_names}
    try:
        ra, dec = names[ra_col.lower()], names[dec_col.lower()]
    except KeyError as exc:
        msg = f"{name}: no column {exc.args[0]!r} to index; it has {', '.join(arrow.column_names)}"
        raise InputError(msg) from exc
    hpx = healpix_index(arrow.column(ra).to_numpy(zero_copy_only=False),
                        arrow.column(dec).to_numpy(zero_copy_only=False))
    if hpx_col in arrow.column_names:
        arrow = arrow.drop_columns([hpx_col])
    arrow = arrow.append_column(pa.field(hpx_col, pa.int64(), metadata={b"description": b"HEALPix nested index, "
                                         b"depth 16 (cdshealpix)"}), pa.array(hpx))
    arrow = arrow.take(pa.array(np.argsort(hpx, kind="stable")))
    prov = _provenance(store, name)
    if prov is None:
        msg = f"{name}: not a cached table (no provenance row)"
        raise CacheError(msg)
    view = f"_xmine_index_{threading.get_ident()}"
    store.con.register(view, arrow)
    try:
        with store.transaction() as con:
            con.execute(f"CREATE OR REPLACE TABLE {_quote(name)} AS SELECT * FROM {view}")
            _comment_columns(con, name, arrow.schema)
    finally:
        store.con.unregister(view)
    return int(arrow.num_rows)


def load_paged(store: Store, table: str, *, url: str, key: str, where: Sequence[str] = (),
               columns: Sequence[str] | None = None, page_size: int = 10_000, max_rows: int | None = None,
               mode: Literal["sync", "async"] = "sync", catalogue: str = "query", release: str | None = None,
               name: str | None = None, refresh: bool = False, offline: bool = False,
               expiry_days: float | None = 90.0, timeout_s: float = 300.0, retries: int = 3) -> CachedResult:
    """Return a whole table (or the rows meeting ``where``) from the cache, fetching it page by page if needed.

    The fetch is :func:`xmine.vo.query_table` (key-range paging: no row limit
    cuts the result, no row twice); the key, the conditions and the page size
    are recorded so ``xmine cache refresh`` can re-run it.
    """
    from xmine import vo

    plan = vo.query_table(table, url=url, key=key, columns=columns, where=where, page_size=page_size, mode=mode,
                          dry_run=True)
    assert isinstance(plan, vo.QueryPlan)
    params = {"kind": "paged", "table": table, "key": key, "where": list(where),
              "columns": list(columns) if columns else None, "page_size": page_size, "max_rows": max_rows,
              "mode": mode}

    def fetch() -> Any:
        return vo.query_table(table, url=url, key=key, columns=columns, where=where, page_size=page_size,
                              max_rows=max_rows, mode=mode, timeout_s=timeout_s, retries=retries)

    return load_query(store, plan.adql, service=url, fetch=fetch, catalogue=catalogue, release=release,
                      params=params, name=name, refresh=refresh, offline=offline, expiry_days=expiry_days,
                      hint=f"xmine query table {table} --key {key} --url {url}")
