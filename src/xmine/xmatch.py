"""Cross-match an xmine source table with any VO catalogue, by TAP upload or client-side.

Matching rule
-------------
Both position errors are turned into **per-axis 1σ** of a circular Gaussian and
a pair matches when

    sep < k · √(σ_x² + σ_o²)

with ``k = 3.44`` by default: the separation of a true pair then follows a
Rayleigh law of scale √(σ_x² + σ_o²), and 3.44 keeps 99.73 % of true pairs
(√(−2 ln 0.0027)). Conventions: CSC's ``err_ellipse_r0`` is the major radius of
the 95 % ellipse, so ``err_kind="r95"`` divides it by √(−2 ln 0.05) = 2.448
(as :func:`xmine.sky.match_sources`); 4XMM's ``SC_POSERR`` and 2MASS's
``err_maj`` are 1σ (``err_kind="sigma"``). Ellipses are treated as circles of
their **major** axis (conservative: never narrower than the ellipse); this is
the one approximation against a full elliptical likelihood-ratio match, and
no prior (source density) is used: a pair is kept or not by distance alone,
the nearest in σ being the best candidate (``n_candidates`` says how many fell
inside the limit).

Paths
-----
``upload``: the source positions and 1σ radii (``row_id, ra, dec,
sig_arcsec``) are uploaded as ``TAP_UPLOAD.xsrc`` and the service joins them
with its table (``CONTAINS(POINT, CIRCLE)`` of a search radius, then the
σ-scaled cut in ``WHERE``) — one request whatever the number of rows.
``client``: the remote table is fetched in cones covering the sources (HEALPix
cells of about 1.8°) and matched locally by :func:`match_with_errors`
(declination zones one search radius high, RA-sorted, numba in parallel).
``auto`` uploads unless the service's capabilities list no upload method or
it refuses the upload, then says so in one :class:`UploadRefusedWarning` and
falls back to ``client``. Both paths give the same pairs (tested).
The remote σ above ``max_remote_err_arcsec`` is not searched beyond that
radius (the CIRCLE pre-filter / the client cell size); say a larger bound for
catalogues with larger errors.

Results are cached in DuckDB with provenance (service, the ADQL or the cone
description, the SHA-256 of the uploaded rows, k and the error conventions),
so a rerun asks nothing of the service.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import requests
from numba import njit, prange

from xmine.errors import InputError, QueryError, ServiceError, XmineWarning
from xmine.sky import R95_PER_SIGMA, crossmatch, healpix_index

__all__ = [
    "DEFAULT_K_SIGMA",
    "UploadRefusedWarning",
    "XmatchResult",
    "crossmatch_vo",
    "match_with_errors",
    "plot_colour_hardness",
    "plot_flux_magnitude",
    "sigma_arcsec",
    "upload_adql",
]

#: k of the match rule sep < k·σ: keeps 99.73 % of true pairs (Rayleigh).
DEFAULT_K_SIGMA = math.sqrt(-2.0 * math.log(0.0027))
_UPLOAD = "xsrc"
_PREFIX = "cp_"


class UploadRefusedWarning(XmineWarning):
    """The TAP service does not take uploads; the match ran client-side over cones of its table."""


def sigma_arcsec(values: Any, kind: Literal["sigma", "r95"]) -> np.ndarray:
    """Turn position errors into per-axis 1σ (arcsec).

    Parameters
    ----------
    values : array-like
        Errors, arcsec.
    kind : {"sigma", "r95"}
        ``sigma``: already 1σ; ``r95``: radius (or major radius) of the 95 % region (CSC ``err_ellipse_r0``).
    """
    arr = np.asarray(values, dtype=float)
    if kind == "sigma":
        return arr
    if kind == "r95":
        return arr / R95_PER_SIGMA
    msg = f"error convention {kind!r}; use 'sigma' (1-sigma per axis) or 'r95' (95 % radius, CSC err_ellipse_r0)"
    raise InputError(msg)


def _ident(name: str, what: str) -> str:
    import re

    plain = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?"
    quoted = r'"[^"\x00-\x1f;]+"'  # a delimited table name such as VizieR's "II/246/out"
    if not (re.fullmatch(plain, name) or (what == "remote table" and re.fullmatch(quoted, name))):
        msg = (f"{what} {name!r} is not a plain ADQL identifier (letters, digits, _; schema.table for tables, "
               'or a table name in double quotes such as "II/246/out")')
        raise InputError(msg)
    return name


def upload_adql(remote_table: str, *, k_sigma: float = DEFAULT_K_SIGMA, search_radius_arcsec: float,
                remote_ra: str = "ra", remote_dec: str = "dec", remote_err: str | None = None,
                remote_err_kind: Literal["sigma", "r95"] = "sigma", remote_err_arcsec: float = 0.0,
                remote_columns: Sequence[str] = ()) -> str:
    """Return the ADQL joining ``TAP_UPLOAD.xsrc`` (row_id, ra, dec, sig_arcsec) with a remote table.

    The remote σ is ``remote_err`` (a column, scaled from 95 % if so) or the
    constant ``remote_err_arcsec``; the cut is ``sep < k·√(σ_x² + σ_o²)``.
    """
    for v, what in ((k_sigma, "k_sigma"), (search_radius_arcsec, "search radius")):
        if not (math.isfinite(v) and v > 0):
            msg = f"{what} = {v!r}; give a positive number"
            raise InputError(msg)
    _ident(remote_table, "remote table")
    ra, dec = _ident(remote_ra, "column"), _ident(remote_dec, "column")
    if remote_err:
        scale = 1.0 if remote_err_kind == "sigma" else 1.0 / R95_PER_SIGMA
        sig_o = f"(o.{_ident(remote_err, 'column')} * {scale!r})"
    else:
        sig_o = repr(float(remote_err_arcsec))
    cols = ", ".join(f"o.{_ident(c, 'column')} AS {_PREFIX}{c}" for c in remote_columns)
    dist = f"DISTANCE(POINT('ICRS', u.ra, u.dec), POINT('ICRS', o.{ra}, o.{dec}))"
    return (f"SELECT u.row_id, o.{ra} AS {_PREFIX}ra, o.{dec} AS {_PREFIX}dec, {sig_o} AS {_PREFIX}sigma_arcsec"
            f"{', ' + cols if cols else ''}, {dist} * 3600.0 AS sep_arcsec\n"
            f"FROM TAP_UPLOAD.{_UPLOAD} AS u JOIN {remote_table} AS o\n"
            f"  ON 1 = CONTAINS(POINT('ICRS', o.{ra}, o.{dec}), "
            f"CIRCLE('ICRS', u.ra, u.dec, {search_radius_arcsec / 3600.0!r}))\n"
            f"WHERE {dist} * 3600.0 < {float(k_sigma)!r} * SQRT(u.sig_arcsec * u.sig_arcsec + {sig_o} * {sig_o})")


def match_with_errors(ra1: Any, dec1: Any, sig1: Any, ra2: Any, dec2: Any, sig2: Any, *,
                      k_sigma: float = DEFAULT_K_SIGMA, max_sig2_arcsec: float | None = None,
                      engine: Literal["zones", "healpix"] = "zones") -> pa.Table:
    """Return every pair with ``sep < k·√(σ1² + σ2²)`` (client-side path).

    Parameters
    ----------
    ra1, dec1, sig1 : array-like
        First table: degrees, and per-axis 1σ in arcsec.
    ra2, dec2, sig2 : array-like
        Second table, the same.
    k_sigma : float, optional
        See the module docstring.
    max_sig2_arcsec : float, optional
        Largest σ2 searched for (default: the largest in ``sig2``).
    engine : {"zones", "healpix"}, optional
        ``zones``: the second table sorted into declination zones one search
        radius high and by RA within them; each row of the first looks in its
        zone and the two beside it, over the RA window its radius spans (wider
        by 1/cos δ, split at RA 0/360, all RA near a pole), in parallel with
        numba. ``healpix``: :func:`xmine.sky.crossmatch` at the largest radius,
        then the σ cut. Both give the same pairs.

    Returns
    -------
    pyarrow.Table
        ``i1, i2, sep_arcsec, sigma_arcsec`` (σ the combined 1σ).
    """
    r1, d1, r2, d2 = (np.ascontiguousarray(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    s1 = np.ascontiguousarray(np.asarray(sig1, dtype=float))
    s2 = np.ascontiguousarray(np.asarray(sig2, dtype=float))
    if r1.shape != d1.shape or r1.shape != s1.shape or r2.shape != d2.shape or r2.shape != s2.shape:
        msg = "ra, dec and error arrays differ in length"
        raise InputError(msg)
    for arr in (r1, d1, r2, d2):
        if not np.all(np.isfinite(arr)):
            msg = "positions must be finite; drop rows without RA/Dec first"
            raise InputError(msg)
    if np.any(~np.isfinite(s1)) or np.any(~np.isfinite(s2)) or np.any(s1 < 0) or np.any(s2 < 0):
        msg = "position errors must be finite and >= 0; fill missing errors (e.g. with the median) first"
        raise InputError(msg)
    if not (math.isfinite(k_sigma) and k_sigma > 0):
        msg = f"k_sigma = {k_sigma!r}; give a positive number"
        raise InputError(msg)
    smax2 = float(max_sig2_arcsec if max_sig2_arcsec is not None else (s2.max() if s2.size else 0.0))
    empty = pa.table({"i1": pa.array([], pa.int64()), "i2": pa.array([], pa.int64()),
                      "sep_arcsec": pa.array([], pa.float64()), "sigma_arcsec": pa.array([], pa.float64())})
    if r1.size == 0 or r2.size == 0:
        return empty
    if engine == "healpix":
        radius = np.maximum(k_sigma * np.sqrt(s1 ** 2 + smax2 ** 2), 1e-6)
        pairs = crossmatch(r1, d1, r2, d2, radius, max_radius_arcsec=float(radius.max()))
        i1 = pairs.column("i1").to_numpy()
        i2 = pairs.column("i2").to_numpy()
        sep = pairs.column("sep_arcsec").to_numpy()
        sigma = np.hypot(s1[i1], s2[i2])
        keep = sep < k_sigma * sigma
        return pa.table({"i1": i1[keep], "i2": i2[keep], "sep_arcsec": sep[keep], "sigma_arcsec": sigma[keep]})
    if engine != "zones":
        msg = f"engine = {engine!r}; use 'zones' or 'healpix'"
        raise InputError(msg)
    s2c = np.minimum(s2, smax2)  # a remote error above the bound is searched only up to it
    height = max(float(k_sigma * math.sqrt(float(s1.max()) ** 2 + smax2 ** 2)) / 3600.0, 1e-7)
    # one sort key per side: zone * 360 + RA; the first side is sorted too, so neighbouring rows read nearby memory
    ra2m = r2 % 360.0
    zone2 = np.floor((d2 + 90.0) / height)
    order = np.argsort(zone2 * 360.0 + ra2m, kind="stable")
    ras, decs, sigs = ra2m[order], d2[order], s2c[order]
    n_zones = int(180.0 // height) + 2
    starts = np.searchsorted(zone2[order], np.arange(n_zones + 1)).astype(np.int64)
    ra1m = r1 % 360.0
    order1 = np.argsort(np.floor((d1 + 90.0) / height) * 360.0 + ra1m, kind="stable")
    a1, b1, c1 = ra1m[order1], d1[order1], s1[order1]
    counts = _zones_count(a1, b1, c1, ras, decs, sigs, starts, height, k_sigma, smax2)
    offsets = np.zeros(r1.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    k1, j2, sep = _zones_fill(a1, b1, c1, ras, decs, sigs, starts, height, k_sigma, smax2, offsets)
    i1, i2 = order1[k1], order[j2]
    return pa.table({"i1": i1, "i2": i2, "sep_arcsec": sep, "sigma_arcsec": np.hypot(s1[i1], sigs[j2])})


@njit(cache=True)
def _sep_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:  # pragma: no cover - compiled
    d = math.pi / 180.0
    h = math.sin((dec2 - dec1) * d / 2) ** 2 + math.cos(dec1 * d) * math.cos(dec2 * d) * math.sin(
        (ra2 - ra1) * d / 2) ** 2
    return 2.0 * math.asin(math.sqrt(min(max(h, 0.0), 1.0))) / d * 3600.0


@njit(cache=True)
def _windows(ra: float, dec: float, r_deg: float) -> tuple[float, float, float, float]:  # pragma: no cover
    """RA windows [a, b] and [c, d] (the second empty: c > d) around ``ra`` for radius ``r_deg`` at ``dec``."""
    top = abs(dec) + r_deg
    if top >= 89.999:
        return 0.0, 360.0, 1.0, 0.0
    alpha = r_deg / math.cos(top * math.pi / 180.0) * 1.0001 + 1e-7  # > the float64 error of the sort key
    if alpha >= 180.0:
        return 0.0, 360.0, 1.0, 0.0
    lo, hi = ra - alpha, ra + alpha
    if lo < 0.0:
        return 0.0, hi, lo + 360.0, 360.0
    if hi >= 360.0:
        return lo, 360.0, 0.0, hi - 360.0
    return lo, hi, 1.0, 0.0


@njit(cache=True)
def _bisect(a: np.ndarray, lo: int, hi: int, x: float) -> int:  # pragma: no cover - compiled
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _scan(i: int, ra1: np.ndarray, dec1: np.ndarray, s1: np.ndarray, ras: np.ndarray, decs: np.ndarray,
          sigs: np.ndarray, starts: np.ndarray, height: float, k: float, smax2: float,
          out_j: np.ndarray, out_sep: np.ndarray, pos: int) -> int:  # pragma: no cover - compiled
    """Count (``pos < 0``) or write from ``pos`` the partners of row ``i``; return the count or the next slot."""
    ra, dec = ra1[i], dec1[i]
    r_deg = k * math.sqrt(s1[i] ** 2 + smax2 ** 2) / 3600.0
    z_lo = max(int((dec - r_deg + 90.0) // height), 0)
    z_hi = min(int((dec + r_deg + 90.0) // height), starts.size - 2)
    a, b, c, d = _windows(ra, dec, r_deg)
    n = 0
    for z in range(z_lo, z_hi + 1):
        s0, s1z = starts[z], starts[z + 1]
        for w in range(2):
            lo, hi = (a, b) if w == 0 else (c, d)
            if lo > hi:
                continue
            j = _bisect(ras, s0, s1z, lo)
            while j < s1z and ras[j] <= hi:
                if abs(decs[j] - dec) <= r_deg:
                    sep = _sep_arcsec(ra, dec, ras[j], decs[j])
                    if sep < k * math.sqrt(s1[i] ** 2 + sigs[j] ** 2):
                        if pos >= 0:
                            out_j[pos + n] = j
                            out_sep[pos + n] = sep
                        n += 1
                j += 1
    return n


@njit(cache=True, parallel=True)
def _zones_count(ra1: np.ndarray, dec1: np.ndarray, s1: np.ndarray, ras: np.ndarray, decs: np.ndarray,
                 sigs: np.ndarray, starts: np.ndarray, height: float, k: float,
                 smax2: float) -> np.ndarray:  # pragma: no cover - compiled
    counts = np.zeros(ra1.size, dtype=np.int64)
    dummy_j = np.zeros(0, dtype=np.int64)
    dummy_s = np.zeros(0, dtype=np.float64)
    for i in prange(ra1.size):
        counts[i] = _scan(i, ra1, dec1, s1, ras, decs, sigs, starts, height, k, smax2, dummy_j, dummy_s, -1)
    return counts


@njit(cache=True, parallel=True)
def _zones_fill(ra1: np.ndarray, dec1: np.ndarray, s1: np.ndarray, ras: np.ndarray, decs: np.ndarray,
                sigs: np.ndarray, starts: np.ndarray, height: float, k: float, smax2: float,
                offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    total = offsets[-1]
    out_i = np.empty(total, dtype=np.int64)
    out_j = np.empty(total, dtype=np.int64)
    out_sep = np.empty(total, dtype=np.float64)
    for i in prange(ra1.size):
        p = offsets[i]
        n = _scan(i, ra1, dec1, s1, ras, decs, sigs, starts, height, k, smax2, out_j, out_sep, p)
        for q in range(n):
            out_i[p + q] = i
    return out_i, out_j, out_sep


# ---------------------------------------------------------------------------- the VO match
@dataclass
class XmatchResult:
    """A cross-match with where it came from.

    Attributes
    ----------
    table : pyarrow.Table
        The source rows (all their columns) joined with ``cp_*`` counterpart
        columns, ``sep_arcsec``, ``sigma_arcsec`` (combined 1σ), ``n_sigma`` and
        ``n_candidates``; one row per source with ``best_only``, else per pair.
    method : {"upload", "client"}
        The path that ran.
    fallback_reason : str
        Why the upload was not used ("" if it was).
    query_text : str
        The ADQL (upload) or the cone descriptions (client).
    cache_table : str or None
        The DuckDB table holding the raw pairs, when a store was given.
    from_cache : bool
        No request was made.
    """

    table: pa.Table
    method: str
    fallback_reason: str = ""
    query_text: str = ""
    cache_table: str | None = None
    from_cache: bool = False


def _column(table: Any, name: str) -> np.ndarray:
    if isinstance(table, pa.Table):
        if name not in table.column_names:
            raise KeyError(name)
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False))
    if name not in table.colnames:
        raise KeyError(name)
    col = table[name]
    return np.asarray(col.filled(np.nan) if hasattr(col, "filled") and col.dtype.kind == "f" else col)


def _as_arrow(table: Any) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    from xmine.vo import clean_table, to_arrow

    return to_arrow(clean_table(table))


def _upload_supported(url: str, session: requests.Session) -> tuple[bool | None, str]:
    """Return (True/False, reason) from the service's capabilities, or (None, why unknown)."""
    import pyvo

    try:
        methods = pyvo.dal.TAPService(url, session=session).upload_methods
    except Exception as exc:  # capabilities missing or unreadable: try the upload and see
        return None, f"capabilities unreadable ({str(exc).splitlines()[0][:120]})"
    if not methods:
        return False, f"{url} lists no upload method in its TAP capabilities"
    return True, ""


def _cone_cells(ra: np.ndarray, dec: np.ndarray, pad_arcsec: float) -> list[tuple[float, float, float]]:
    """Cones (ra, dec, radius deg) covering the positions, one per HEALPix cell of depth 5 (≈1.8°)."""
    cells = healpix_index(ra, dec, depth=5)
    cones = []
    for cell in np.unique(cells):
        m = cells == cell
        v = np.stack([np.cos(np.radians(dec[m])) * np.cos(np.radians(ra[m])),
                      np.cos(np.radians(dec[m])) * np.sin(np.radians(ra[m])), np.sin(np.radians(dec[m]))])
        c = v.mean(axis=1)
        c /= np.linalg.norm(c)
        cra = math.degrees(math.atan2(c[1], c[0])) % 360.0
        cdec = math.degrees(math.asin(max(-1.0, min(1.0, c[2]))))
        r = float(np.degrees(np.arccos(np.clip(c @ v, -1.0, 1.0))).max()) + pad_arcsec / 3600.0
        cones.append((cra, cdec, min(max(r, 1e-4), 90.0)))
    return cones


def _fetch_client(url: str, remote_table: str, cones: list[tuple[float, float, float]], *, remote_ra: str,
                  remote_dec: str, columns: list[str], dialect: str, timeout_s: float, retries: int,
                  session: requests.Session | None, maxrec: int | None) -> pa.Table:
    from xmine.errors import NoResultsWarning
    from xmine.vo import cone_adql, query_tap, to_arrow

    parts = []
    for ra, dec, r in cones:
        if remote_table.startswith('"') and dialect == "geometry":  # a delimited name vo.cone_adql does not take
            q: Any = (f"SELECT {', '.join(columns)} FROM {remote_table} WHERE 1 = CONTAINS(POINT('ICRS', "
                      f"{remote_ra}, {remote_dec}), CIRCLE('ICRS', {ra!r}, {dec!r}, {r!r}))")
        else:
            q = cone_adql(remote_table, ra, dec, r, dialect=dialect, ra_col=remote_ra, dec_col=remote_dec,
                          columns=columns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoResultsWarning)
            res = query_tap(q, url=url, timeout_s=timeout_s, retries=retries, session=session, maxrec=maxrec)
        parts.append(to_arrow(res.table))  # type: ignore[union-attr]
    if not parts:
        return pa.table({})
    table = pa.concat_tables(parts, promote_options="permissive")
    # cones of neighbouring cells overlap: keep each remote row once
    key = np.round(np.stack([table.column(remote_ra).to_numpy(), table.column(remote_dec).to_numpy()]), 9)
    _, first = np.unique(key, axis=1, return_index=True)
    return table.take(pa.array(np.sort(first)))


def crossmatch_vo(sources: Any, *, url: str, remote_table: str, remote_ra: str = "ra", remote_dec: str = "dec",
                  remote_err: str | None = None, remote_err_kind: Literal["sigma", "r95"] = "sigma",
                  remote_err_arcsec: float = 0.0, remote_columns: Sequence[str] = (),
                  max_remote_err_arcsec: float = 1.0, ra_col: str = "ra", dec_col: str = "dec",
                  err_col: str = "err_ellipse_r0", err_kind: Literal["sigma", "r95"] = "r95",
                  k_sigma: float = DEFAULT_K_SIGMA, best_only: bool = True, exclude_extended: bool = True,
                  method: Literal["auto", "upload", "client"] = "auto", dialect: str = "geometry",
                  store: Any = None, refresh: bool = False, offline: bool = False, timeout_s: float = 300.0,
                  retries: int = 3, maxrec: int | None = None,
                  session: requests.Session | None = None) -> XmatchResult:
    """Match sources with a catalogue on a TAP service, with both position errors.

    Parameters
    ----------
    sources : astropy Table or pyarrow Table
        xmine sources with ``ra_col``, ``dec_col`` (degrees) and ``err_col`` (arcsec).
    url : str
        TAP base URL.
    remote_table : str
        Qualified table name on the service (e.g. ``ir.twomass_like``), or a delimited one in double
        quotes (VizieR's 2MASS PSC: ``'"II/246/out"'`` with ``RAJ2000``, ``DEJ2000``, ``errMaj``).
    remote_ra, remote_dec : str, optional
        Its position columns.
    remote_err, remote_err_kind, remote_err_arcsec : optional
        Its error column and convention, or a constant 1σ (arcsec) when it has none.
    remote_columns : sequence of str, optional
        Its columns to bring back (as ``cp_<name>``).
    max_remote_err_arcsec : float, optional
        Largest remote 1σ searched for (sets the search radius).
    ra_col, dec_col, err_col, err_kind : optional
        The sources' columns and error convention (default: CSC's ``err_ellipse_r0``, a 95 % radius).
    k_sigma : float, optional
        The match limit in combined σ (default 3.44: 99.73 % of true pairs).
    best_only : bool, optional
        Keep the nearest (in σ) counterpart per source.
    exclude_extended : bool, optional
        Leave out rows with ``extent_flag`` true (their position error is not a point-source error).
    method : {"auto", "upload", "client"}, optional
        See the module docstring.
    dialect : {"geometry", "csc"}, optional
        ADQL dialect of the cone queries of the client path.
    store : xmine.store.Store, optional
        Cache the pairs (with provenance) and answer reruns from it.
    refresh, offline : bool, optional
        Refetch even if cached; never fetch.
    timeout_s, retries, maxrec, session : optional
        As in :func:`xmine.vo.query_tap`.

    Returns
    -------
    XmatchResult

    Raises
    ------
    xmine.errors.InputError
        Missing columns or bad numbers.
    xmine.errors.QueryError, xmine.errors.ServiceError
        The service refused the query (not for an upload refusal, which falls
        back) or could not be reached.

    Warns
    -----
    UploadRefusedWarning
        The upload was refused (or not offered); the client path ran instead.
    """
    from xmine.vo import make_session, query_tap

    if method not in ("auto", "upload", "client"):
        msg = f"method = {method!r}; use 'auto', 'upload' or 'client'"
        raise InputError(msg)
    src = _as_arrow(sources)
    try:
        ra, dec, err = (_column(src, c).astype(float) for c in (ra_col, dec_col, err_col))
    except KeyError as exc:
        msg = (f"source table has no column {exc.args[0]!r} (columns: {', '.join(src.column_names[:12])}...); "
               "say which with ra_col/dec_col/err_col")
        raise InputError(msg) from exc
    keep = np.isfinite(ra) & np.isfinite(dec)
    if exclude_extended and "extent_flag" in src.column_names:
        ext = np.asarray(src.column("extent_flag").to_pylist(), dtype=object)
        keep &= ~np.array([str(v).strip().lower() in {"true", "t", "1"} for v in ext])
    rows = np.nonzero(keep)[0]
    sig = sigma_arcsec(err[rows], err_kind)
    fill = float(np.nanmedian(sig)) if np.isfinite(sig).any() else 1.0
    sig = np.where(np.isfinite(sig) & (sig >= 0), sig, fill)
    upload = pa.table({"row_id": pa.array(rows, pa.int64()), "ra": ra[rows], "dec": dec[rows], "sig_arcsec": sig})
    sig_o_max = float(max_remote_err_arcsec if remote_err else remote_err_arcsec)
    search = k_sigma * math.sqrt(float(sig.max() if sig.size else 0.0) ** 2 + sig_o_max ** 2)
    search = max(search, 1e-3)
    adql = upload_adql(remote_table, k_sigma=k_sigma, search_radius_arcsec=search, remote_ra=remote_ra,
                       remote_dec=remote_dec, remote_err=remote_err, remote_err_kind=remote_err_kind,
                       remote_err_arcsec=remote_err_arcsec, remote_columns=remote_columns)
    digest = hashlib.sha256()
    for name in upload.column_names:
        digest.update(np.ascontiguousarray(upload.column(name).to_numpy()).tobytes())
    params = {"upload_sha256": digest.hexdigest(), "k_sigma": k_sigma, "err_kind": err_kind,
              "remote_err_kind": remote_err_kind, "maxrec": maxrec}
    own = session is None
    sess = session if session is not None else make_session(timeout_s)
    state: dict[str, Any] = {"method": method if method != "auto" else "upload", "reason": ""}

    def fetch_upload() -> pa.Table:
        res = query_tap(adql, url=url, uploads={_UPLOAD: upload}, timeout_s=timeout_s, retries=retries,
                        session=sess, maxrec=maxrec)
        return res.to_arrow()  # type: ignore[union-attr]

    def fetch_client() -> pa.Table:
        extra = [remote_ra, remote_dec, *([remote_err] if remote_err else []),
                 *[c for c in remote_columns if c not in (remote_ra, remote_dec, remote_err)]]
        cones = _cone_cells(upload.column("ra").to_numpy(), upload.column("dec").to_numpy(), search)
        remote = _fetch_client(url, remote_table, cones, remote_ra=remote_ra, remote_dec=remote_dec, columns=extra,
                               dialect=dialect, timeout_s=timeout_s, retries=retries, session=sess, maxrec=maxrec)
        if remote.num_rows == 0:
            return _empty_pairs(remote_columns)
        r_ra = remote.column(remote_ra).to_numpy().astype(float)
        r_dec = remote.column(remote_dec).to_numpy().astype(float)
        if remote_err:
            r_sig = sigma_arcsec(remote.column(remote_err).to_numpy(zero_copy_only=False).astype(float),
                                 remote_err_kind)
            r_sig = np.where(np.isfinite(r_sig), r_sig, 0.0)
        else:
            r_sig = np.full(r_ra.size, float(remote_err_arcsec))
        pairs = match_with_errors(upload.column("ra").to_numpy(), upload.column("dec").to_numpy(), sig,
                                  r_ra, r_dec, r_sig, k_sigma=k_sigma, max_sig2_arcsec=sig_o_max)
        i1, i2 = pairs.column("i1").to_numpy(), pairs.column("i2").to_numpy()
        cols: dict[str, Any] = {"row_id": rows[i1], f"{_PREFIX}ra": r_ra[i2], f"{_PREFIX}dec": r_dec[i2],
                                f"{_PREFIX}sigma_arcsec": r_sig[i2]}
        for c in remote_columns:
            cols[f"{_PREFIX}{c}"] = remote.column(c).take(pa.array(i2))
        cols["sep_arcsec"] = pairs.column("sep_arcsec")
        return pa.table(cols)

    try:
        if method == "auto":
            ok, why = _upload_supported(url, sess)
            if ok is False:
                state.update(method="client", reason=why)
        pairs, from_cache, cache_name = _run(state, store, adql, url, remote_table, params, fetch_upload,
                                             fetch_client, refresh=refresh, offline=offline, search=search,
                                             fallback=method == "auto")
    finally:
        if own:
            sess.close()
    if state["reason"]:
        warnings.warn(UploadRefusedWarning(f"{url} refused the TAP upload ({state['reason']}); "
                                           f"matched client-side over cones of {remote_table}"), stacklevel=2)
    table = _finish(src, pairs, best_only=best_only, k_sigma=k_sigma, sig_by_row=dict(zip(rows.tolist(), sig,
                                                                                             strict=True)))
    return XmatchResult(table=table, method=state["method"], fallback_reason=state["reason"],
                        query_text=adql if state["method"] == "upload" else _client_text(adql),
                        cache_table=cache_name, from_cache=from_cache)


def _client_text(adql: str) -> str:
    return "client-side match over cones of the remote table; the equivalent upload query:\n" + adql


def _empty_pairs(remote_columns: Sequence[str]) -> pa.Table:
    cols = {"row_id": pa.array([], pa.int64()), f"{_PREFIX}ra": pa.array([], pa.float64()),
            f"{_PREFIX}dec": pa.array([], pa.float64()), f"{_PREFIX}sigma_arcsec": pa.array([], pa.float64())}
    for c in remote_columns:
        cols[f"{_PREFIX}{c}"] = pa.array([], pa.float64())
    cols["sep_arcsec"] = pa.array([], pa.float64())
    return pa.table(cols)


def _run(state: dict[str, Any], store: Any, adql: str, url: str, remote_table: str, params: dict[str, Any],
         fetch_upload: Any, fetch_client: Any, *, refresh: bool, offline: bool, search: float,
         fallback: bool) -> tuple[pa.Table, bool, str | None]:
    def once() -> tuple[pa.Table, bool, str | None]:
        fetch = fetch_upload if state["method"] == "upload" else fetch_client
        if store is None:
            return fetch(), False, None
        from xmine.cache import load_query

        text = adql if state["method"] == "upload" else _client_text(adql)
        res = load_query(store, text, service=url, fetch=fetch, catalogue=f"xmatch_{remote_table}",
                         params={**params, "method": state["method"], "search_arcsec": search}, refresh=refresh,
                         offline=offline, hint="xmine xmatch (online)")
        return res.table, res.from_cache, res.name

    try:
        return once()
    except (QueryError, ServiceError) as exc:
        status = getattr(exc, "status", None)
        refused = isinstance(exc, QueryError) or (status is not None and 400 <= status < 600
                                                  and status not in (429, 502, 503, 504))
        if not (fallback and state["method"] == "upload" and refused):
            raise
        state.update(method="client", reason=str(exc).splitlines()[0][:200])
        return once()


def _finish(src: pa.Table, pairs: pa.Table, *, best_only: bool, k_sigma: float,
            sig_by_row: dict[int, float]) -> pa.Table:
    drop = [c for c in ("hpx",) if c in pairs.column_names]
    if drop:
        pairs = pairs.drop(drop)
    row = pairs.column("row_id").to_numpy().astype(np.int64) if pairs.num_rows else np.array([], np.int64)
    sep = pairs.column("sep_arcsec").to_numpy().astype(float) if pairs.num_rows else np.array([], float)
    sig_o = (pairs.column(f"{_PREFIX}sigma_arcsec").to_numpy(zero_copy_only=False).astype(float)
             if pairs.num_rows else np.array([], float))
    sig_x = np.array([sig_by_row.get(int(r), np.nan) for r in row], dtype=float)
    sigma = np.hypot(sig_x, np.nan_to_num(sig_o))
    nsig = sep / np.where(sigma > 0, sigma, np.nan)
    counts = np.bincount(row, minlength=src.num_rows) if row.size else np.zeros(src.num_rows, int)
    order = np.lexsort((nsig, row))
    if best_only and order.size:
        first = np.ones(order.size, dtype=bool)
        first[1:] = row[order][1:] != row[order][:-1]
        order = order[first]
    take = pa.array(order)
    out = src.take(pa.array(row[order])) if order.size else src.slice(0, 0)
    for name in pairs.column_names:
        if name in ("row_id", "sep_arcsec"):
            continue
        out = out.append_column(name, pairs.column(name).take(take))
    out = out.append_column("sep_arcsec", pa.array(sep[order]))
    out = out.append_column("sigma_arcsec", pa.array(sigma[order]))
    out = out.append_column("n_sigma", pa.array(nsig[order]))
    out = out.append_column("n_candidates", pa.array(counts[row[order]].astype(np.int64)))
    return out


# ---------------------------------------------------------------------------- diagrams
def _plot_arrays(table: Any, *names: str) -> list[np.ndarray]:
    t = _as_arrow(table)
    out = []
    for n in names:
        if n not in t.column_names:
            msg = f"match table has no column {n!r} (columns: {', '.join(t.column_names)})"
            raise InputError(msg)
        out.append(np.asarray(t.column(n).to_numpy(zero_copy_only=False), dtype=float))
    return out


def plot_colour_hardness(matches: Any, out_png: str | os.PathLike[str], *, blue: str = "cp_j_m",
                         red: str = "cp_k_m", hardness: str = "hard_hm") -> Path:
    """Colour (``blue − red`` magnitudes) against X-ray hardness ratio, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xmine.store import atomic_write

    b, r, h = _plot_arrays(matches, blue, red, hardness)
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    ok = np.isfinite(b) & np.isfinite(r) & np.isfinite(h)
    ax.scatter(h[ok], (b - r)[ok], s=8)
    ax.set_xlabel(f"X-ray hardness {hardness}")
    ax.set_ylabel(f"{blue.removeprefix(_PREFIX)} − {red.removeprefix(_PREFIX)} (mag)")
    ax.set_title(f"{int(ok.sum())} matched sources", fontsize=9)
    out = Path(out_png)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out


def plot_flux_magnitude(matches: Any, out_png: str | os.PathLike[str], *, flux: str = "flux_aper_b",
                        magnitude: str = "cp_k_m") -> Path:
    """X-ray flux (log) against the counterpart's magnitude, with lines of constant X-ray/optical-IR ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xmine.store import atomic_write

    f, m = _plot_arrays(matches, flux, magnitude)
    ok = np.isfinite(f) & np.isfinite(m) & (f > 0)
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    ax.scatter(m[ok], f[ok], s=8)
    ax.set_yscale("log")
    if ok.any():
        mm = np.linspace(float(m[ok].min()) - 0.5, float(m[ok].max()) + 0.5, 10)
        # log(F_X / F_IR) = log F_X + m / 2.5 + c: lines of slope -0.4 dex per magnitude
        zero = float(np.median(np.log10(f[ok]) + m[ok] / 2.5))
        for d in (-1.0, 0.0, 1.0):
            ax.plot(mm, 10 ** (zero + d - mm / 2.5), ls=":", color="grey", lw=0.8)
    ax.set_xlabel(f"{magnitude.removeprefix(_PREFIX)} (mag)")
    ax.set_ylabel(f"{flux} (erg cm$^{{-2}}$ s$^{{-1}}$)")
    ax.set_title("dotted: constant flux ratio, median and ±1 dex", fontsize=9)
    out = Path(out_png)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out
