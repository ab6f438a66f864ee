"""Virtual Observatory queries: TAP (sync, async, uploads, paging) and Simple Cone Search, through pyvo.

Every function here talks to the network (``query_*``) or builds what would be
sent (``*_adql``); none touches the cache (see :mod:`xmine.cache`).

What it adds to pyvo
--------------------
* A timeout on every HTTP request (pyvo's sync queries have none) and a
  User-Agent naming xmine.
* Retries with exponential backoff and jitter, **only** on connection errors
  (refused, reset, cut mid-response, timed out — pyvo wraps a refused
  connection in ``DALFormatError``, so the cause is inspected) and on HTTP 429
  and 502–504, honouring ``Retry-After``. A query the service refuses (ADQL
  syntax error, unknown column) is never retried and raises
  :class:`~xmine.errors.QueryError` with the service's message.
* maxrec overflow detection (``result.status[0] == 'OVERFLOW'`` for TAP; the
  ``QUERY_STATUS`` INFO for cone search, which pyvo ignores), reported as a
  :class:`~xmine.errors.TruncatedWarning` naming the query and the row count —
  or, for :func:`query_table`, automatic key-range paging whose concatenated
  result equals the unpaged one with no duplicate row.
* Async jobs polled with backoff and always deleted: when done, on error and
  on ``KeyboardInterrupt``.
* Results as astropy tables with clean types: no ``object`` columns (strings
  are ``str``, masked where NULL), booleans ``bool``, units kept; and
  :func:`to_arrow` for DuckDB/Parquet.
* ``dry_run=True`` returns a :class:`QueryPlan` (ADQL, URL, parameters)
  without a request.

ADQL dialects
-------------
``geometry`` (XSA, HEASARC, DaCHS): cones are
``1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', ra0, dec0, r))``.
``csc`` (the CSC 2.1 service, reported to lack ADQL geometry): cones are
``dec BETWEEN`` / ``ra BETWEEN`` boxes, the RA range split at 0/360 and dropped
near a pole, refined client-side by the exact great-circle distance (or, with
``refine="cone_distance"``, by the service's ``dbo.cone_distance``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import requests
from astropy.table import MaskedColumn, Table, vstack

from xmine.errors import InputError, NoResultsWarning, QueryError, ServiceError, TruncatedWarning

__all__ = [
    "RETRY_STATUS",
    "AdqlQuery",
    "Dialect",
    "QueryPlan",
    "QueryResult",
    "box_adql",
    "clean_table",
    "cone_adql",
    "query_cone",
    "query_table",
    "query_tap",
    "select_adql",
    "to_arrow",
]

log = logging.getLogger(__name__)

#: HTTP statuses that are retried (with Retry-After honoured).
RETRY_STATUS = frozenset({429, 502, 503, 504})
_USER_AGENT = "xmine/{version} (pyvo; IVOA-science)"
_MAX_RETRY_AFTER_S = 120.0


# ---------------------------------------------------------------------------- results
@dataclass
class QueryPlan:
    """What a query would send (``dry_run=True``); no request was made.

    Attributes
    ----------
    url : str
        The service endpoint (TAP base URL or cone-search URL).
    adql : str
        The ADQL text (empty for a cone search).
    params : dict
        The other request parameters (``MAXREC``, ``RA``, ``DEC``, ``SR``, ...).
    """

    url: str
    adql: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class QueryResult:
    """A fetched result with what was asked.

    Attributes
    ----------
    table : astropy.table.Table
        Clean types: no ``object`` columns; units kept.
    url, adql : str
        The service and the query text (for paged queries, the first page's text).
    params : dict
        Other request parameters.
    truncated : bool
        True if a row limit cut the result (a :class:`~xmine.errors.TruncatedWarning` was issued).
    pages : int
        Number of requests the result took.
    elapsed_s : float
        Wall time, seconds.
    """

    table: Table
    url: str
    adql: str
    params: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False
    pages: int = 1
    elapsed_s: float = 0.0

    def to_arrow(self) -> pa.Table:
        """Return the table as Arrow (see :func:`to_arrow`)."""
        return to_arrow(self.table)


# ---------------------------------------------------------------------------- dialects and ADQL
@dataclass(frozen=True)
class Dialect:
    """How a TAP service wants its ADQL.

    Attributes
    ----------
    name : str
        ``"geometry"`` or ``"csc"``.
    geometry : bool
        The service understands ``CONTAINS``/``POINT``/``CIRCLE``.
    boolean_true : str
        The literal a boolean column is compared with (``'T'`` or ``'true'``).
    """

    name: str
    geometry: bool
    boolean_true: str = "'T'"

    @classmethod
    def from_catalog(cls, cat: Mapping[str, Any]) -> Dialect:
        """Return the dialect of a catalogue description (``catalogs/*.toml``)."""
        svc = cat.get("service", {})
        geometry = bool(svc.get("adql_geometry", True))
        return cls(name=str(svc.get("dialect", "geometry" if geometry else "csc")), geometry=geometry,
                   boolean_true=str(svc.get("boolean_true", "'T'")))


GEOMETRY = Dialect("geometry", geometry=True, boolean_true="'true'")
CSC = Dialect("csc", geometry=False, boolean_true="'T'")


@dataclass
class AdqlQuery:
    """ADQL text plus the client-side refinement the dialect needs.

    Attributes
    ----------
    text : str
        The ADQL.
    cone : tuple of float, optional
        ``(ra_deg, dec_deg, radius_deg)`` when rows must still be cut to the
        exact circle after the fetch (CSC box queries).
    ra_col, dec_col : str
        The position columns, for that cut.
    """

    text: str
    cone: tuple[float, float, float] | None = None
    ra_col: str = "ra"
    dec_col: str = "dec"

    def __str__(self) -> str:
        return self.text


def _num(value: float, what: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        msg = f"{what} = {value!r} is not a number"
        raise InputError(msg) from exc
    if not math.isfinite(v):
        msg = f"{what} = {value!r} is not finite"
        raise InputError(msg)
    return repr(v)


def _ident(name: str, what: str = "column") -> str:
    """Validate an ADQL identifier (``schema.table``, ``alias.col``); ADQL cannot bind names."""
    parts = name.split(".")
    if not parts or not all(p and (p[0].isalpha() or p[0] == "_") and all(c.isalnum() or c == "_" for c in p)
                            for p in parts):
        msg = f"{what} name {name!r} is not a plain ADQL identifier (letters, digits, _ and . only)"
        raise InputError(msg)
    return name


def _check_position(ra_deg: float, dec_deg: float, radius_deg: float) -> tuple[float, float, float]:
    ra, dec, r = float(_num(ra_deg, "ra_deg")), float(_num(dec_deg, "dec_deg")), float(_num(radius_deg, "radius"))
    if not -90.0 <= dec <= 90.0:
        msg = f"dec_deg = {dec} is outside [-90, 90]"
        raise InputError(msg)
    if not 0.0 < r <= 90.0:
        msg = f"radius = {r} deg must be in (0, 90]"
        raise InputError(msg)
    return ra % 360.0, dec, r


def _ra_halfwidth(dec_deg: float, radius_deg: float) -> float | None:
    """Half-width in RA of the box around a cone, or None if the cone reaches a pole."""
    if abs(dec_deg) + radius_deg >= 89.999:
        return None
    # exact: the RA extent of a small circle, asin(sin r / cos dec)
    s = math.sin(math.radians(radius_deg)) / math.cos(math.radians(dec_deg))
    if s >= 1.0:
        return None
    return math.degrees(math.asin(s)) * 1.000001 + 1e-9


def box_adql(ra_deg: float, dec_deg: float, radius_deg: float, *, ra_col: str = "ra", dec_col: str = "dec") -> str:
    """Return a geometry-free ADQL condition for the box around a cone.

    The Dec range is clipped to ±90; the RA range is split at 0/360 when it
    crosses it (``ra BETWEEN 359.9 AND 0.1`` matches nothing) and omitted when
    the cone reaches a pole.

    Parameters
    ----------
    ra_deg, dec_deg : float
        Centre, degrees (ICRS).
    radius_deg : float
        Cone radius, degrees.
    ra_col, dec_col : str, optional
        Column names.

    Returns
    -------
    str
        A parenthesised condition.

    Examples
    --------
    >>> box_adql(0.05, -12.3, 0.1)  # doctest: +ELLIPSIS
    '(dec BETWEEN -12.4 AND -12.2... AND (ra >= 359.947... OR ra <= 0.152...))'
    """
    ra, dec, r = _check_position(ra_deg, dec_deg, radius_deg)
    ra_col, dec_col = _ident(ra_col), _ident(dec_col)
    lo, hi = max(dec - r, -90.0), min(dec + r, 90.0)
    cond = f"{dec_col} BETWEEN {lo!r} AND {hi!r}"
    half = _ra_halfwidth(dec, r)
    if half is not None:
        a, b = ra - half, ra + half
        if a < 0.0:
            cond += f" AND ({ra_col} >= {a + 360.0!r} OR {ra_col} <= {b!r})"
        elif b >= 360.0:
            cond += f" AND ({ra_col} >= {a!r} OR {ra_col} <= {b - 360.0!r})"
        else:
            cond += f" AND {ra_col} BETWEEN {a!r} AND {b!r}"
    return f"({cond})"


def select_adql(table: str, *, columns: Sequence[str] | None = None, where: Sequence[str] = (),
                order_by: str | None = None, top: int | None = None) -> str:
    """Return ``SELECT [TOP n] cols FROM table [WHERE ...] [ORDER BY ...]``.

    ``where`` items are ADQL conditions the caller built from validated values
    (ADQL has no bound parameters); they are joined with ``AND``.
    """
    cols = ", ".join(_ident(c) for c in columns) if columns else "*"
    text = "SELECT " + (f"TOP {int(top)} " if top is not None else "") + f"{cols} FROM {_ident(table, 'table')}"
    conds = [w for w in where if w]
    if conds:
        text += " WHERE " + " AND ".join(f"({w})" if " OR " in w.upper() and not w.startswith("(") else w
                                         for w in conds)
    if order_by:
        text += f" ORDER BY {_ident(order_by)}"
    return text


def cone_adql(table: str, ra_deg: float, dec_deg: float, radius_deg: float, *,
              dialect: Dialect | str = GEOMETRY, ra_col: str = "ra", dec_col: str = "dec",
              columns: Sequence[str] | None = None, where: Sequence[str] = (), top: int | None = None,
              refine: Literal["client", "cone_distance"] = "client") -> AdqlQuery:
    """Return the ADQL of a cone query in a service's dialect.

    Parameters
    ----------
    table : str
        Qualified table name.
    ra_deg, dec_deg : float
        Centre, degrees (ICRS).
    radius_deg : float
        Radius, degrees (0 < r ≤ 90).
    dialect : Dialect or {"geometry", "csc"}, optional
        ``geometry`` writes ``CONTAINS(POINT, CIRCLE)``; ``csc`` writes a
        geometry-free box (see :func:`box_adql`).
    ra_col, dec_col : str, optional
        Position columns.
    columns : sequence of str, optional
        Columns to select (default ``*``).
    where : sequence of str, optional
        Extra conditions, ANDed.
    top : int, optional
        ``TOP n``.
    refine : {"client", "cone_distance"}, optional
        For ``csc``: cut the box to the circle after the fetch (works on any
        server), or add the CSC service's ``dbo.cone_distance(...) <= r_arcmin``.

    Returns
    -------
    AdqlQuery
    """
    d = dialect if isinstance(dialect, Dialect) else {"geometry": GEOMETRY, "csc": CSC}.get(dialect)
    if d is None:
        msg = f"unknown ADQL dialect {dialect!r}; use 'geometry' or 'csc'"
        raise InputError(msg)
    ra, dec, r = _check_position(ra_deg, dec_deg, radius_deg)
    conds = list(where)
    cone: tuple[float, float, float] | None = None
    if d.geometry:
        conds.insert(0, f"1 = CONTAINS(POINT('ICRS', {_ident(ra_col)}, {_ident(dec_col)}), "
                        f"CIRCLE('ICRS', {ra!r}, {dec!r}, {r!r}))")
    else:
        conds.insert(0, box_adql(ra, dec, r, ra_col=ra_col, dec_col=dec_col))
        if refine == "cone_distance":
            conds.insert(1, f"dbo.cone_distance({ra_col}, {dec_col}, {ra!r}, {dec!r}) <= {r * 60.0!r}")
        else:
            cone = (ra, dec, r)
    return AdqlQuery(select_adql(table, columns=columns, where=conds, top=top), cone=cone,
                     ra_col=ra_col, dec_col=dec_col)


def angular_sep_deg(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle distance in degrees (haversine; arrays broadcast)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(x, dtype=float)) for x in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.asarray(np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))), dtype=float)


def _refine(table: Table, q: AdqlQuery) -> Table:
    if q.cone is None or len(table) == 0:
        return table
    names = {n.lower(): n for n in table.colnames}
    ra_c, dec_c = names.get(q.ra_col.split(".")[-1].lower()), names.get(q.dec_col.split(".")[-1].lower())
    if ra_c is None or dec_c is None:
        msg = f"cone refinement needs the columns {q.ra_col} and {q.dec_col} in the result; select them"
        raise InputError(msg)
    ra0, dec0, r = q.cone
    keep = angular_sep_deg(np.asarray(table[ra_c], float), np.asarray(table[dec_c], float), ra0, dec0) <= r
    return table[keep]


# ---------------------------------------------------------------------------- types
def clean_table(table: Table, *, booleans: Sequence[str] = ()) -> Table:
    """Return ``table`` with clean column types.

    ``object`` columns (how VOTable strings arrive) become ``str`` (bytes
    decoded as UTF-8), masked where NULL; columns named in ``booleans`` that
    hold ``'T'/'F'``/``'true'/'false'`` text become ``bool``; units and
    descriptions are kept; ``meta`` is emptied of non-scalar values so FITS
    writes work.

    Parameters
    ----------
    table : astropy.table.Table
    booleans : sequence of str, optional
        Columns to parse as booleans when they arrive as text (case-insensitive names).

    Returns
    -------
    astropy.table.Table
    """
    out = Table(masked=False)
    want_bool = {b.lower() for b in booleans}
    for name in table.colnames:
        col = table[name]
        mask = np.ma.getmaskarray(col) if getattr(col, "mask", None) is not None else None
        data = np.asarray(col.data if hasattr(col, "data") else col)
        if data.dtype == object or data.dtype.kind in "SU":
            vals = [("" if v is None or v is np.ma.masked else
                     (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))) for v in data.tolist()]
            if data.dtype == object:
                nulls = np.array([v is None or v is np.ma.masked for v in data.tolist()], dtype=bool)
                mask = nulls if mask is None else (mask | nulls)
            if name.lower() in want_bool:
                low = [v.strip().lower() for v in vals]
                arr = np.array([v in {"t", "true", "1", "yes", "y"} for v in low], dtype=bool)
                bad = mask | np.array([v == "" for v in low]) if mask is not None else np.array([v == "" for v in low])
                newcol = MaskedColumn(arr, mask=bad) if bad.any() else arr
            else:
                arr = np.array(vals, dtype=str) if vals else np.array([], dtype="U1")
                newcol = MaskedColumn(arr, mask=mask) if mask is not None and mask.any() else arr
        else:
            newcol = MaskedColumn(data, mask=mask) if mask is not None and mask.any() else data
        out[name] = newcol
        out[name].unit = getattr(col, "unit", None)
        out[name].description = getattr(col, "description", None)
    return out


def to_arrow(table: Table) -> pa.Table:
    """Convert an astropy table to Arrow: masked values null, strings utf8, units in field metadata.

    Raises
    ------
    xmine.errors.InputError
        If a column is still of ``object`` type (run :func:`clean_table` first).
    """
    arrays, fields = [], []
    for name in table.colnames:
        col = table[name]
        data = np.asarray(col)
        if data.dtype == object:
            msg = f"column {name!r} has object type; clean the table with xmine.vo.clean_table first"
            raise InputError(msg)
        if data.ndim > 1:
            msg = f"column {name!r} is multidimensional {data.shape}; Arrow tables here take scalars only"
            raise InputError(msg)
        mask = np.ma.getmaskarray(col) if getattr(col, "mask", None) is not None else None
        if data.dtype.kind == "U":
            arr = pa.array(data.astype(str).tolist(), type=pa.utf8(),
                           mask=mask if mask is not None and mask.any() else None)
        elif data.dtype.kind == "S":
            arr = pa.array([v.decode() for v in data.tolist()], type=pa.utf8(),
                           mask=mask if mask is not None and mask.any() else None)
        else:
            native = data.astype(data.dtype.newbyteorder("="), copy=False)
            arr = pa.array(native, mask=mask if mask is not None and mask.any() else None)
        meta = {}
        if getattr(col, "unit", None) is not None:
            meta[b"unit"] = str(col.unit).encode()
        if getattr(col, "description", None):
            meta[b"description"] = str(col.description).encode()
        arrays.append(arr)
        fields.append(pa.field(name, arr.type, metadata=meta or None))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# ---------------------------------------------------------------------------- HTTP
class _Session(requests.Session):
    """A requests session with a default timeout on every request and xmine's User-Agent."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        from xmine import __version__

        self.timeout_s = timeout_s
        self.headers["User-Agent"] = _USER_AGENT.format(version=__version__)

        self._responses: list[requests.Response] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override,unused-ignore]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        response = super().request(method, url, *args, **kwargs)  # type: ignore[arg-type,unused-ignore]
        # pyvo streams responses and does not always close them (job creation): close them with the session
        self._responses.append(response)
        return response

    def close(self) -> None:
        for response in self._responses:
            response.close()
        self._responses.clear()
        super().close()


def make_session(timeout_s: float = 300.0) -> requests.Session:
    """Return a session whose requests time out after ``timeout_s`` seconds unless told otherwise."""
    return _Session(timeout_s)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        nxt = getattr(cur, "cause", None)
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    return seen


def _http_status(exc: BaseException) -> tuple[int | None, float | None]:
    """HTTP status and Retry-After (seconds) found in an exception chain."""
    for e in _chain(exc):
        resp = getattr(e, "response", None)
        if resp is not None and getattr(resp, "status_code", None):
            retry_after = None
            raw = resp.headers.get("Retry-After") if hasattr(resp, "headers") else None
            if raw:
                try:
                    retry_after = max(0.0, float(raw))
                except ValueError:
                    from email.utils import parsedate_to_datetime

                    with contextlib.suppress(TypeError, ValueError):
                        retry_after = max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
            return int(resp.status_code), retry_after
    for e in _chain(exc):
        code = getattr(e, "code", None)
        if isinstance(code, int) and code >= 100:
            return code, None
    return None, None


def _is_connection_error(exc: BaseException) -> bool:
    import http.client

    import urllib3.exceptions

    kinds = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
             urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError, http.client.IncompleteRead,
             http.client.RemoteDisconnected, ConnectionError, TimeoutError)
    return any(isinstance(e, kinds) for e in _chain(exc))


def _is_timeout(exc: BaseException) -> bool:
    # not urllib3's TimeoutError: its NewConnectionError (a refused connection) derives from it
    chain = _chain(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return False
    return any(isinstance(e, (requests.Timeout, TimeoutError)) for e in chain)


@dataclass
class _Retry:
    retries: int
    base_s: float = 1.0
    max_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER_S)
        # full jitter on an exponential backoff
        return self.rng.uniform(0.5, 1.0) * min(self.max_s, self.base_s * 2.0 ** attempt)


def _call(fn: Callable[[], Any], *, retry: _Retry, url: str, adql: str | None, what: str) -> Any:
    """Run ``fn`` with retries on transient failures; translate errors to xmine's."""
    import pyvo

    attempt = 0
    while True:
        try:
            return fn()
        except pyvo.dal.DALQueryError as exc:
            msg = f"{what} refused by {url}: {str(exc).strip()}"
            raise QueryError(msg, url=url, adql=adql) from exc
        except (pyvo.dal.DALAccessError, requests.RequestException, OSError) as exc:
            status, retry_after = _http_status(exc)
            transient = status in RETRY_STATUS or (status is None and _is_connection_error(exc))
            if transient and attempt < retry.retries:
                wait = retry.delay(attempt, retry_after)
                log.info("%s: %s; retry %d/%d in %.1f s", url, _short(exc), attempt + 1, retry.retries, wait)
                retry.sleep(wait)
                attempt += 1
                continue
            tries = f" after {attempt + 1} attempts" if attempt else ""
            if status is not None and status not in RETRY_STATUS:
                msg = f"{what} failed at {url}: HTTP {status} ({_short(exc)}); check the URL"
            elif status is not None:
                msg = f"{what} failed at {url}: HTTP {status}{tries}; the service is busy or down, try later"
            elif _is_timeout(exc):
                msg = f"{what} timed out at {url}{tries}; raise the timeout (services.timeout_s) or try later"
            elif transient:
                msg = f"{what}: cannot connect to {url}{tries} ({_short(exc)}); check the URL and network"
            else:
                msg = f"{what}: bad answer from {url} ({_short(exc)})"
                raise QueryError(msg, url=url, adql=adql) from exc
            raise ServiceError(msg, url=url, status=status) from exc


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 300 else text[:297] + "..."


# ---------------------------------------------------------------------------- TAP
def _overflowed(result: Any) -> bool:
    status = getattr(result, "status", None)
    if status and str(status[0]).upper() == "OVERFLOW":
        return True
    with contextlib.suppress(Exception):
        for info in result.votable.resources[0].infos:
            if info.name == "QUERY_STATUS" and str(info.value).upper() == "OVERFLOW":
                return True
    return False


def _to_table(result: Any) -> Table:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has been deprecated in the VOUnit standard.*")
        return result.to_table()


def _uploads_param(uploads: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not uploads:
        return None
    out = {}
    for name, tab in uploads.items():
        _ident(name, "upload")
        if isinstance(tab, pa.Table):
            tab = Table(tab.to_pydict())
        out[name] = tab
    return out


def _run_async(service: Any, adql: str, *, maxrec: int | None, uploads: Any, retry: _Retry, url: str,
               timeout_s: float, poll: Callable[[str], None] | None) -> Any:
    job = _call(lambda: service.submit_job(adql, maxrec=maxrec, uploads=uploads), retry=retry, url=url,
                adql=adql, what="TAP async submission")
    try:
        _call(job.run, retry=retry, url=url, adql=adql, what="TAP async run")
        start, wait = time.monotonic(), 0.25
        while True:
            phase = _call(lambda: job.phase, retry=retry, url=url, adql=adql, what="TAP async poll")
            if poll is not None:
                poll(str(phase))
            if phase == "COMPLETED":
                break
            if phase in {"ERROR", "ABORTED"}:
                import pyvo

                try:
                    job.raise_if_error()
                except pyvo.dal.DALQueryError as exc:
                    msg = f"TAP async query refused by {url}: {str(exc).strip()}"
                    raise QueryError(msg, url=url, adql=adql) from exc
                msg = f"TAP async job {job.job_id} at {url} ended in phase {phase}"
                raise QueryError(msg, url=url, adql=adql)
            if time.monotonic() - start > timeout_s:
                msg = f"TAP async job {job.job_id} at {url} still {phase} after {timeout_s:.0f} s; raise the timeout"
                raise ServiceError(msg, url=url)
            time.sleep(wait)
            wait = min(wait * 1.5, 10.0)
        return _call(job.fetch_result, retry=retry, url=url, adql=adql, what="TAP async result")
    finally:
        # done, failed or interrupted (KeyboardInterrupt included): leave no job on the server
        try:
            job.delete()
        except Exception as exc:
            log.warning("could not delete TAP job %s: %s", getattr(job, "url", "?"), exc)


def query_tap(adql: str | AdqlQuery, *, url: str, maxrec: int | None = None, mode: Literal["sync", "async"] = "sync",
              uploads: Mapping[str, Table | pa.Table] | None = None, timeout_s: float = 300.0, retries: int = 3,
              session: requests.Session | None = None, booleans: Sequence[str] = (), dry_run: bool = False,
              warn_truncated: bool = True, poll: Callable[[str], None] | None = None, backoff_s: float = 1.0,
              _retry: _Retry | None = None) -> QueryResult | QueryPlan:
    """Run an ADQL query on a TAP service.

    Parameters
    ----------
    adql : str or AdqlQuery
        The query. An :class:`AdqlQuery` with a cone is cut to the exact circle after the fetch.
    url : str
        TAP base URL (``.../tap``).
    maxrec : int, optional
        Row limit asked of the service (default: the service's).
    mode : {"sync", "async"}, optional
        ``async`` submits a UWS job, polls it with backoff, fetches the result
        and deletes the job (also when interrupted).
    uploads : mapping of str to Table, optional
        Tables to upload, queried as ``TAP_UPLOAD.<name>``.
    timeout_s : float, optional
        Per-request timeout, seconds (and the whole wait for an async job).
    retries : int, optional
        Retries on connection errors, HTTP 429 and 502–504.
    session : requests.Session, optional
        Session to use (default: one with ``timeout_s`` and xmine's User-Agent).
    booleans : sequence of str, optional
        Columns to parse as booleans if they arrive as text.
    dry_run : bool, optional
        Return a :class:`QueryPlan` and send nothing.
    warn_truncated : bool, optional
        Issue :class:`~xmine.errors.TruncatedWarning` on overflow (``query_table`` pages instead).
    poll : callable, optional
        Called with the job phase at each async poll (progress display).
    backoff_s : float, optional
        First retry delay, seconds; doubled per retry (×0.5–1 jitter, at most
        60 s). A ``Retry-After`` header wins (at most 120 s).

    Returns
    -------
    QueryResult or QueryPlan

    Raises
    ------
    xmine.errors.QueryError
        The service refused the query (syntax error, unknown column or table); its message is shown.
    xmine.errors.ServiceError
        The service could not be reached, timed out or kept failing after the retries.

    Warns
    -----
    xmine.errors.TruncatedWarning
        The result was cut at maxrec.
    xmine.errors.NoResultsWarning
        Nothing matched; the table is empty with its columns typed.
    """
    import pyvo

    q = adql if isinstance(adql, AdqlQuery) else AdqlQuery(str(adql))
    text = q.text.strip()
    if not text:
        msg = "empty ADQL query"
        raise InputError(msg)
    if mode not in {"sync", "async"}:
        msg = f"mode = {mode!r}; use 'sync' or 'async'"
        raise InputError(msg)
    params: dict[str, Any] = {"LANG": "ADQL", "REQUEST": "doQuery"}
    if maxrec is not None:
        params["MAXREC"] = int(maxrec)
    if uploads:
        params["UPLOAD"] = ",".join(f"{n},param:{n}" for n in uploads)
    endpoint = url.rstrip("/") + ("/sync" if mode == "sync" else "/async")
    if dry_run:
        return QueryPlan(url=endpoint, adql=text, params=params)
    retry = _retry or _Retry(retries, base_s=backoff_s)
    with _session_scope(session, timeout_s) as sess:
        service = pyvo.dal.TAPService(url, session=sess)
        t0 = time.monotonic()
        result, table = _tap_fetch(service, text, url=url, maxrec=maxrec, mode=mode, uploads=_uploads_param(uploads),
                                   retry=retry, timeout_s=timeout_s, poll=poll, booleans=booleans)
    truncated = _overflowed(result)
    table = _refine(table, q)
    if truncated and warn_truncated:
        warnings.warn(TruncatedWarning(
            f"result of {_one_line(text)!r} at {url} truncated at {len(result)} rows (maxrec={maxrec}); "
            "raise maxrec or use query_table/tiles to page"), stacklevel=2)
    if len(table) == 0:
        warnings.warn(NoResultsWarning(f"no rows from {_one_line(text)!r} at {url}"), stacklevel=2)
    return QueryResult(table=table, url=url, adql=text, params=params, truncated=truncated,
                       elapsed_s=time.monotonic() - t0)


@contextlib.contextmanager
def _session_scope(session: requests.Session | None, timeout_s: float) -> Any:
    """Yield the caller's session, or a new one that is closed afterwards."""
    if session is not None:
        yield session
        return
    sess = make_session(timeout_s)
    try:
        yield sess
    finally:
        sess.close()


def _tap_fetch(service: Any, text: str, *, url: str, maxrec: int | None, mode: str, uploads: Any, retry: _Retry,
               timeout_s: float, poll: Callable[[str], None] | None, booleans: Sequence[str]) -> tuple[Any, Table]:
    import pyvo

    with warnings.catch_warnings():
        # pyvo's own overflow warning is replaced by ours, which names the query
        warnings.filterwarnings("ignore", category=pyvo.dal.DALOverflowWarning)
        warnings.filterwarnings("ignore", message=".*has been deprecated in the VOUnit standard.*")
        if mode == "sync":
            result = _call(lambda: service.run_sync(text, maxrec=maxrec, uploads=uploads), retry=retry, url=url,
                           adql=text, what="TAP query")
        else:
            result = _run_async(service, text, maxrec=maxrec, uploads=uploads, retry=retry, url=url,
                                timeout_s=timeout_s, poll=poll)
        return result, clean_table(_to_table(result), booleans=booleans)


def _one_line(text: str, n: int = 160) -> str:
    s = " ".join(text.split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _key_literal(value: Any) -> str:
    if isinstance(value, (str, np.str_)):
        return "'" + str(value).replace("'", "''") + "'"
    if isinstance(value, (bool, np.bool_)):
        msg = "a boolean column cannot be a paging key"
        raise InputError(msg)
    return repr(value.item() if hasattr(value, "item") else value)


def query_table(table: str, *, url: str, key: str, columns: Sequence[str] | None = None,
                where: Sequence[str] = (), cone: AdqlQuery | None = None, page_size: int = 10_000,
                max_rows: int | None = None, mode: Literal["sync", "async"] = "sync", timeout_s: float = 300.0,
                retries: int = 3, session: requests.Session | None = None, booleans: Sequence[str] = (),
                dry_run: bool = False, backoff_s: float = 1.0, maxrec: int | None = None) -> QueryResult | QueryPlan:
    """Fetch every row of a table (or of a condition on it), paging by a unique key.

    Each page is ``SELECT TOP page_size ... WHERE <where> AND key > <last key>
    ORDER BY key`` with ``MAXREC = page_size``; paging stops at the first short
    page that the service did not flag as cut. The concatenated result equals
    the unpaged one, without duplicates, whatever row limit the service
    imposes: a page cut below ``page_size`` by the service's own limit
    (overflow status) is followed by the next one from its last key.

    Parameters
    ----------
    table : str
        Qualified table name.
    url : str
        TAP base URL.
    key : str
        A unique, sortable column (``name``, ``srcid``).
    columns : sequence of str, optional
        Columns to select (the key is added if missing).
    where : sequence of str, optional
        Validated ADQL conditions, ANDed.
    cone : AdqlQuery, optional
        A cone from :func:`cone_adql` whose condition and refinement apply.
    page_size : int, optional
        Rows per request.
    max_rows : int, optional
        Stop after this many rows (the result is then marked truncated, with a warning).
    mode, timeout_s, retries, session, booleans, dry_run, backoff_s
        As for :func:`query_tap`.
    maxrec : int, optional
        MAXREC sent with each page (default ``page_size``); a service limit below it is handled.

    Returns
    -------
    QueryResult or QueryPlan
    """
    _ident(key)
    cols = list(columns) if columns else None
    if cols is not None and key.lower() not in {c.lower() for c in cols}:
        cols.append(key)
    base_where = list(where)
    if cone is not None:
        # take the cone's WHERE clause from its text
        wtext = cone.text.split(" WHERE ", 1)
        if len(wtext) == 2:
            base_where.insert(0, wtext[1])
    first = select_adql(table, columns=cols, where=base_where, order_by=key, top=page_size)
    if dry_run:
        return QueryPlan(url=url.rstrip("/") + ("/sync" if mode == "sync" else "/async"), adql=first,
                         params={"MAXREC": page_size, "LANG": "ADQL", "REQUEST": "doQuery"})
    retry = _Retry(retries, base_s=backoff_s)
    with _session_scope(session, timeout_s) as sess:
        return _page(table, url=url, key=key, cols=cols, base_where=base_where, cone=cone, page_size=page_size,
                     max_rows=max_rows, mode=mode, timeout_s=timeout_s, sess=sess, booleans=booleans, retry=retry,
                     first=first, maxrec=page_size if maxrec is None else int(maxrec))


def _page(table: str, *, url: str, key: str, cols: list[str] | None, base_where: list[str], cone: AdqlQuery | None,
          page_size: int, max_rows: int | None, mode: Literal["sync", "async"], timeout_s: float,
          sess: requests.Session, booleans: Sequence[str], retry: _Retry, first: str, maxrec: int) -> QueryResult:
    pages: list[Table] = []
    last: Any = None
    n = 0
    truncated = False
    t0 = time.monotonic()
    while True:
        conds = list(base_where)
        if last is not None:
            conds.append(f"{key} > {_key_literal(last)}")
        text = select_adql(table, columns=cols, where=conds, order_by=key, top=page_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoResultsWarning)
            res = query_tap(text, url=url, maxrec=maxrec, mode=mode, timeout_s=timeout_s, session=sess,
                            booleans=booleans, warn_truncated=False, _retry=retry)
        assert isinstance(res, QueryResult)
        page = res.table
        pages.append(page)
        n += len(page)
        log.debug("page %d: %d rows%s", len(pages), len(page), " (cut by the service)" if res.truncated else "")
        # a short page ends the table, unless the service cut it at a row limit below page_size
        if len(page) == 0 or (len(page) < page_size and not res.truncated):
            break
        kname = {c.lower(): c for c in page.colnames}[key.split(".")[-1].lower()]
        last = page[kname][-1]
        if max_rows is not None and n >= max_rows:
            truncated = True
            break
    nonempty = [p for p in pages if len(p)]
    result = vstack(nonempty, metadata_conflicts="silent") if nonempty else pages[0]
    if len(nonempty) > 1:
        result = clean_table(result)
    if cone is not None:
        result = _refine(result, cone)
    if truncated:
        warnings.warn(TruncatedWarning(f"{table} at {url}: stopped at max_rows={max_rows} ({n} rows fetched, "
                                       "more remain); raise max_rows"), stacklevel=2)
    if len(result) == 0:
        warnings.warn(NoResultsWarning(f"no rows from {_one_line(first)!r} at {url}"), stacklevel=2)
    return QueryResult(table=result, url=url, adql=first, params={"MAXREC": page_size, "key": key},
                       truncated=truncated, pages=len(pages), elapsed_s=time.monotonic() - t0)


# ---------------------------------------------------------------------------- SCS
def query_cone(url: str, ra_deg: float, dec_deg: float, radius_deg: float, *, verbosity: int = 2,
               maxrec: int | None = None, timeout_s: float = 300.0, retries: int = 3,
               session: requests.Session | None = None, booleans: Sequence[str] = (),
               dry_run: bool = False, backoff_s: float = 1.0) -> QueryResult | QueryPlan:
    """Run a Simple Cone Search.

    Parameters
    ----------
    url : str
        The cone-search URL (ending in ``scs.xml`` or ``coneSearch``).
    ra_deg, dec_deg : float
        Centre, degrees (ICRS).
    radius_deg : float
        Radius, degrees.
    verbosity : {1, 2, 3}, optional
        Column set (1 fewest, 3 all).
    maxrec : int, optional
        Row limit; overflow is read from the ``QUERY_STATUS`` INFO (pyvo does not look).
    timeout_s, retries, session, booleans, dry_run, backoff_s
        As for :func:`query_tap`.

    Returns
    -------
    QueryResult or QueryPlan
    """
    import pyvo

    ra, dec, r = _check_position(ra_deg, dec_deg, radius_deg)
    if verbosity not in (1, 2, 3):
        msg = f"verbosity = {verbosity!r}; use 1, 2 or 3"
        raise InputError(msg)
    params: dict[str, Any] = {"RA": ra, "DEC": dec, "SR": r, "VERB": verbosity}
    if maxrec is not None:
        params["MAXREC"] = int(maxrec)
    if dry_run:
        return QueryPlan(url=url, adql="", params=params)
    retry = _Retry(retries, base_s=backoff_s)
    extra = {"maxrec": int(maxrec)} if maxrec is not None else {}
    t0 = time.monotonic()
    with warnings.catch_warnings(), _session_scope(session, timeout_s) as sess:
        service = pyvo.dal.SCSService(url, session=sess)
        warnings.filterwarnings("ignore", message=".*has been deprecated in the VOUnit standard.*")
        result = _call(lambda: service.search((ra, dec), r, verbosity=verbosity, **extra), retry=retry, url=url,
                       adql=None, what="cone search")
        table = clean_table(_to_table(result), booleans=booleans)
    truncated = _overflowed(result)
    what = f"cone search RA={ra} Dec={dec} r={r} deg"
    if truncated:
        warnings.warn(TruncatedWarning(f"{what} at {url} truncated at {len(table)} rows (maxrec={maxrec}); "
                                       "raise maxrec or use smaller cones"), stacklevel=2)
    if len(table) == 0:
        warnings.warn(NoResultsWarning(f"no rows from {what} at {url}"), stacklevel=2)
    return QueryResult(table=table, url=url, adql="", params=params, truncated=truncated,
                       elapsed_s=time.monotonic() - t0)
