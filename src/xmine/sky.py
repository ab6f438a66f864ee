"""Spherical geometry on catalogue tables: HEALPix index columns, cone queries in DuckDB, cross-matching.

HEALPix
    Nested indices from ``cdshealpix`` at depth :data:`HPX_DEPTH` (16: cells
    of about 3.2″). A cone is covered by cells at a coarser depth, turned into
    index ranges at depth 16 (nested indices nest by bit shifts), so a cone
    query is ``hpx BETWEEN a AND b OR ...`` plus the exact great-circle cut.
    Tables sorted by the index let DuckDB skip row groups.

Cross-match
    :func:`crossmatch` pairs every row of one table with every row of another
    within a radius: each side gets its cell at a depth whose cells are at
    least 2.5× the radius; both are sorted by cell, and a numba kernel (in
    parallel) compares each row of the first with the rows of the second in
    its cell and the 8 neighbours (a galloping search, since consecutive rows
    have nearby neighbours), by chord length. The first call compiles the
    kernel (a few seconds, then cached on disk). ``engine="duckdb"`` does the
    same as a DuckDB hash join on the cell.
    :func:`match_sources` matches CSC and 4XMM point sources with both position
    errors as per-axis 1σ (CSC's 95 % ellipse radii divided by
    √(−2 ln 0.05) = 2.448) and extended sources with a radius scaled by their
    extent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit, prange

from xmine.errors import InputError

__all__ = [
    "HPX_DEPTH",
    "R95_PER_SIGMA",
    "SkyIndex",
    "cone_ranges",
    "cone_sql",
    "crossmatch",
    "healpix_index",
    "match_sources",
    "neighbour_depth",
    "select_cone",
]

#: Depth of the stored HEALPix index column (nested; cells ≈ 3.2″).
HPX_DEPTH = 16
#: A 95 % radius of a circular 2-D Gaussian is this many per-axis σ: √(−2 ln 0.05).
R95_PER_SIGMA = math.sqrt(-2.0 * math.log(0.05))
_CELL_DEG_AT_0 = math.degrees(math.sqrt(4 * math.pi / 12))  # ≈ 58.6°


def _deg(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(arr)):
        msg = f"{what} has non-finite values"
        raise InputError(msg)
    return arr


def healpix_index(ra_deg: Any, dec_deg: Any, *, depth: int = HPX_DEPTH) -> np.ndarray:
    """Return nested HEALPix indices (int64) of positions at ``depth``.

    Parameters
    ----------
    ra_deg, dec_deg : array-like
        ICRS degrees.
    depth : int, optional
        HEALPix depth (order), 0–29.

    Returns
    -------
    numpy.ndarray of int64
    """
    import astropy.units as u
    from cdshealpix.nested import lonlat_to_healpix

    ra, dec = _deg(ra_deg, "ra_deg"), _deg(dec_deg, "dec_deg")
    if np.any(np.abs(dec) > 90):
        msg = "dec_deg outside [-90, 90]"
        raise InputError(msg)
    if ra.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(lonlat_to_healpix(np.mod(ra, 360.0) * u.deg, dec * u.deg, depth), dtype=np.int64)


def neighbour_depth(radius_deg: float) -> int:
    """Return the deepest HEALPix depth whose cells are at least 2.5× ``radius_deg`` across."""
    if radius_deg <= 0:
        msg = f"radius = {radius_deg} deg must be positive"
        raise InputError(msg)
    d = math.floor(math.log2(_CELL_DEG_AT_0 / (2.5 * radius_deg)))
    return max(0, min(d, 29))


def cone_ranges(ra_deg: float, dec_deg: float, radius_deg: float, *, depth: int = HPX_DEPTH) -> np.ndarray:
    """Return ``(n, 2)`` inclusive index ranges at ``depth`` covering a cone (merged, sorted)."""
    import astropy.units as u
    from cdshealpix.nested import cone_search

    if not 0 < radius_deg <= 180:
        msg = f"radius = {radius_deg} deg must be in (0, 180]"
        raise InputError(msg)
    cover = int(np.clip(math.floor(math.log2(_CELL_DEG_AT_0 / max(radius_deg, 1e-9))) + 2, 0, depth))
    ipix, _, _ = cone_search(float(ra_deg) * u.deg, float(dec_deg) * u.deg, float(radius_deg) * u.deg,
                               depth=cover, flat=True)
    ipix = np.sort(np.asarray(ipix, dtype=np.int64))
    shift = 2 * (depth - cover)
    lo, hi = ipix << shift, ((ipix + 1) << shift) - 1
    if lo.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    # merge adjacent ranges
    brk = np.nonzero(lo[1:] != hi[:-1] + 1)[0]
    starts = np.concatenate([[0], brk + 1])
    ends = np.concatenate([brk, [lo.size - 1]])
    return np.stack([lo[starts], hi[ends]], axis=1)


def _haversine_sql(ra: str, dec: str, ra0: str, dec0: str) -> str:
    return (f"degrees(2 * asin(sqrt(least(1.0, pow(sin(radians({dec} - {dec0}) / 2), 2) + "
            f"cos(radians({dec0})) * cos(radians({dec})) * pow(sin(radians({ra} - {ra0}) / 2), 2)))))")


def _ident(name: str) -> str:
    if not name.replace("_", "a").isalnum() or name[0].isdigit():
        msg = f"{name!r} is not a plain SQL identifier"
        raise InputError(msg)
    return f'"{name}"'


def cone_sql(table: str, ra_deg: float, dec_deg: float, radius_deg: float, *, ra_col: str = "ra",
             dec_col: str = "dec", hpx_col: str | None = "hpx",
             columns: Sequence[str] | None = None) -> tuple[str, dict[str, float]]:
    """Return DuckDB SQL and bound parameters for a cone query on a table.

    The HEALPix ranges (when ``hpx_col`` is given) are literal integers computed
    here; the centre and radius are bound parameters. A ``sep_arcsec`` column
    is added.
    """
    cols = ", ".join(_ident(c) for c in columns) if columns else "*"
    dist = _haversine_sql(_ident(ra_col), _ident(dec_col), "$ra0", "$dec0")
    where = [f"{dist} <= $r"]
    if hpx_col:
        rng = cone_ranges(ra_deg, dec_deg, radius_deg)
        ors = " OR ".join(f"{_ident(hpx_col)} BETWEEN {int(a)} AND {int(b)}" for a, b in rng)
        where.insert(0, f"({ors})" if ors else "FALSE")
    sql = (f"SELECT {cols}, {dist} * 3600 AS sep_arcsec FROM {_ident(table)} WHERE " + " AND ".join(where)
           + " ORDER BY sep_arcsec")
    return sql, {"ra0": float(ra_deg), "dec0": float(dec_deg), "r": float(radius_deg)}


def select_cone(con: Any, table: str, ra_deg: float, dec_deg: float, radius_deg: float, *, ra_col: str = "ra",
                dec_col: str = "dec", hpx_col: str | None = "hpx", columns: Sequence[str] | None = None) -> pa.Table:
    """Return the rows of a DuckDB table within a cone, nearest first, with ``sep_arcsec``.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection or xmine.store.Store
        Where the table is (read access suffices).
    table : str
        Table name (e.g. a cached result indexed by :func:`xmine.cache.index_table`).
    ra_deg, dec_deg, radius_deg : float
        The cone, degrees.
    ra_col, dec_col, hpx_col : str, optional
        Column names; ``hpx_col=None`` scans without the index.
    columns : sequence of str, optional
        Columns to return (default all).
    """
    c = getattr(con, "con", con)
    sql, params = cone_sql(table, ra_deg, dec_deg, radius_deg, ra_col=ra_col, dec_col=dec_col, hpx_col=hpx_col,
                           columns=columns)
    return c.sql(sql, params=params).to_arrow_table()


class SkyIndex:
    """An in-memory HEALPix index over a table, for many cone queries on the same catalogue.

    The rows are sorted by their depth-16 nested index once; a cone is then
    the index ranges covering it (:func:`cone_ranges`), a binary search per
    range, and the exact great-circle cut on the few candidates.

    Parameters
    ----------
    table : pyarrow.Table
        The catalogue (e.g. :func:`xmine.cache.load_table` of a cached result).
    ra_col, dec_col : str, optional
        Position columns (degrees).
    hpx_col : str, optional
        An existing depth-16 index column to reuse (computed if absent).

    Examples
    --------
    >>> import pyarrow as pa
    >>> idx = SkyIndex(pa.table({"ra": [10.0, 10.001, 50.0], "dec": [0.0, 0.0, 0.0]}))
    >>> idx.cone_rows(10.0, 0.0, 0.01)[0].tolist()
    [0, 1]
    """

    def __init__(self, table: pa.Table, *, ra_col: str = "ra", dec_col: str = "dec", hpx_col: str = "hpx") -> None:
        names = {n.lower(): n for n in table.column_names}
        try:
            ra = _col(table, names[ra_col.lower()]).astype(float)
            dec = _col(table, names[dec_col.lower()]).astype(float)
        except KeyError as exc:
            msg = f"no column {exc.args[0]!r} for the sky index; the table has {', '.join(table.column_names)}"
            raise InputError(msg) from exc
        hpx = (_col(table, names[hpx_col.lower()]).astype(np.int64) if hpx_col.lower() in names
               else healpix_index(ra, dec))
        self.order = np.argsort(hpx, kind="stable")
        self.hpx = hpx[self.order]
        self.ra = ra[self.order]
        self.dec = dec[self.order]
        # one chunk per column: take() on the many small batches DuckDB returns is slow
        self.table = table.combine_chunks()

    def __len__(self) -> int:
        return int(self.hpx.size)

    def cone_rows(self, ra_deg: float, dec_deg: float, radius_deg: float) -> tuple[np.ndarray, np.ndarray]:
        """Return the table's row numbers within a cone and their separations (arcsec), nearest first."""
        rng = cone_ranges(ra_deg, dec_deg, radius_deg)
        lo = np.searchsorted(self.hpx, rng[:, 0], "left")
        hi = np.searchsorted(self.hpx, rng[:, 1], "right")
        if rng.shape[0] == 0:
            cand = np.zeros(0, dtype=np.int64)
        else:
            counts = hi - lo
            cand = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        sep = _sep_deg(self.ra[cand], self.dec[cand], float(ra_deg), float(dec_deg))
        keep = sep <= radius_deg
        cand, sep = cand[keep], sep[keep]
        o = np.argsort(sep, kind="stable")
        return self.order[cand[o]], sep[o] * 3600.0

    def select(self, ra_deg: float, dec_deg: float, radius_deg: float) -> pa.Table:
        """Return the rows within a cone, nearest first, with ``sep_arcsec``."""
        rows, sep = self.cone_rows(ra_deg, dec_deg, radius_deg)
        return self.table.take(pa.array(rows)).append_column("sep_arcsec", pa.array(sep))


def _sep_deg(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    d1, d0 = np.radians(dec), math.radians(dec0)
    h = np.sin((d1 - d0) / 2) ** 2 + np.cos(d1) * math.cos(d0) * np.sin(np.radians(ra - ra0) / 2) ** 2
    return np.asarray(np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))), dtype=float)


# ---------------------------------------------------------------------------- cross-match
def crossmatch(ra1: Any, dec1: Any, ra2: Any, dec2: Any, radius_arcsec: float | Any, *,
               max_radius_arcsec: float | None = None, threads: int | None = None, sort: bool = False,
               engine: str = "numba") -> pa.Table:
    """Return every pair of positions closer than a radius.

    Parameters
    ----------
    ra1, dec1, ra2, dec2 : array-like
        Positions, ICRS degrees.
    radius_arcsec : float or array-like
        Match radius; an array gives one radius per row of the first table
        (then ``max_radius_arcsec`` sets the cell size, default its maximum).
    max_radius_arcsec : float, optional
        Largest radius (for per-row radii).
    threads : int, optional
        DuckDB threads (default: all cores; ``engine="duckdb"`` only).
    sort : bool, optional
        Sort the pairs (the DuckDB engine always does).
    engine : {"numba", "duckdb"}, optional
        ``numba``: both sides in HEALPix cells, the second sorted by cell, each
        row of the first compared (as unit vectors) with the rows in its cell
        and the 8 neighbours, in parallel; ``duckdb``: the same cells as a hash
        join. Both give the same pairs.

    Returns
    -------
    pyarrow.Table
        ``i1``, ``i2`` (row numbers, int64) and ``sep_arcsec``; sorted by ``i1``, ``sep_arcsec`` with
        ``sort=True``, else in an unspecified order.
    """
    from cdshealpix.nested import neighbours

    if engine not in {"numba", "duckdb"}:
        msg = f"engine = {engine!r}; use 'numba' or 'duckdb'"
        raise InputError(msg)
    ra1, dec1, ra2, dec2 = (_deg(v, n) for v, n in ((ra1, "ra1"), (dec1, "dec1"), (ra2, "ra2"), (dec2, "dec2")))
    if ra1.shape != dec1.shape or ra2.shape != dec2.shape:
        msg = "ra and dec arrays differ in length"
        raise InputError(msg)
    radius = np.broadcast_to(np.asarray(radius_arcsec, dtype=float), ra1.shape)
    rmax = float(max_radius_arcsec if max_radius_arcsec is not None else (radius.max() if radius.size else 1.0))
    if rmax <= 0 or np.any(radius < 0):
        msg = "match radius must be positive"
        raise InputError(msg)
    empty = pa.table({"i1": pa.array([], pa.int64()), "i2": pa.array([], pa.int64()),
                      "sep_arcsec": pa.array([], pa.float64())})
    if ra1.size == 0 or ra2.size == 0:
        return empty
    depth = neighbour_depth(rmax / 3600.0)
    c1 = healpix_index(ra1, dec1, depth=depth)
    c2 = healpix_index(ra2, dec2, depth=depth)
    if engine == "duckdb":
        nb = np.asarray(neighbours(c1.astype(np.uint64), depth), dtype=np.int64)  # (n, 9), -1 where none
        return _crossmatch_duckdb(nb, ra1, dec1, radius, c2, ra2, dec2, threads=threads)
    # both sides in cell order: the neighbour look-ups of consecutive rows then stay in cache
    order1 = np.argsort(c1)
    order2 = np.argsort(c2)
    nb = np.asarray(neighbours(c1[order1].astype(np.uint64), depth), dtype=np.int64)  # (n, 9), -1 where none
    pos1 = np.ascontiguousarray(np.radians(np.stack([ra1[order1], dec1[order1]], axis=1)))
    pos2 = np.ascontiguousarray(np.radians(np.stack([ra2[order2], dec2[order2]], axis=1)))
    # compare squared chords: |v1 - v2|^2 <= (2 sin(r / 2))^2
    r0 = radius.flat[0] if radius.size else 0.0
    if np.all(radius == r0):
        chord2 = np.full(ra1.size, (2.0 * np.sin(np.radians(r0 / 3600.0) / 2.0)) ** 2)
    else:
        chord2 = np.ascontiguousarray((2.0 * np.sin(np.radians(radius[order1] / 3600.0) / 2.0)) ** 2)
    cells2 = np.ascontiguousarray(c2[order2])
    # one pass keeps up to `cap` partners per row; the few rows with more are done again in full
    cap = 4
    slots, counts = _match_capped(nb, cells2, pos1, pos2, chord2, cap)
    over = np.nonzero(counts > cap)[0]
    k1, slot = np.nonzero(slots >= 0)
    j2 = slots[k1, slot]
    if over.size:
        keep = counts[k1] <= cap
        k1, j2 = k1[keep], j2[keep]
        starts = np.concatenate([[0], np.cumsum(counts[over])]).astype(np.int64)
        ko, jo = _fill_pairs(nb[over], cells2, pos1[over], pos2, chord2[over], starts)
        k1, j2 = np.concatenate([k1, over[ko]]), np.concatenate([j2, jo])
    i1, i2 = order1[k1], order2[j2]
    sep = _pair_sep_arcsec(ra1[i1], dec1[i1], ra2[i2], dec2[i2])
    if sort:
        o = np.lexsort((sep, i1))
        i1, i2, sep = i1[o], i2[o], sep[o]
    return pa.table({"i1": i1, "i2": i2, "sep_arcsec": sep})


def _pair_sep_arcsec(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray) -> np.ndarray:
    d1, d2 = np.radians(dec1), np.radians(dec2)
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(np.radians(ra2 - ra1) / 2) ** 2
    return np.asarray(np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))) * 3600.0, dtype=float)


@njit(cache=True, inline="always")
def _chord2(x1: float, y1: float, z1: float, ra2: float, dec2: float) -> float:  # pragma: no cover - compiled
    """Squared chord between a unit vector and a position (radians)."""
    cd = math.cos(dec2)
    dx = x1 - cd * math.cos(ra2)
    dy = y1 - cd * math.sin(ra2)
    dz = z1 - math.sin(dec2)
    return dx * dx + dy * dy + dz * dz


@njit(cache=True, inline="always")
def _seek(cells2: np.ndarray, cell: int, start: int) -> int:  # pragma: no cover - compiled
    """First index of ``cells2`` (sorted) not below ``cell``, galloping from ``start`` (a recent answer)."""
    m = cells2.size
    start = min(max(start, 0), m)
    if start < m and cells2[start] < cell:  # forward
        step = 1
        lo = start
        hi = start + 1
        while hi < m and cells2[hi] < cell:
            lo = hi
            step *= 2
            hi = lo + step
        hi = min(hi, m)
    else:  # backward
        step = 1
        hi = start
        lo = start - 1
        while lo > 0 and cells2[lo] >= cell:
            hi = lo
            step *= 2
            lo = hi - step
        lo = max(lo, 0)
        if lo < m and cells2[lo] >= cell:
            return lo
    # cells2[lo] < cell <= cells2[hi] (or hi == m)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cells2[mid] < cell:
            lo = mid
        else:
            hi = mid
    return hi


@njit(cache=True, parallel=True)
def _match_capped(nb: np.ndarray, cells2: np.ndarray, v1: np.ndarray, v2: np.ndarray, chord2: np.ndarray,
                  cap: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    n = nb.shape[0]
    m = cells2.size
    slots = np.full((n, cap), -1, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    nchunk = max(1, min(n, 64))
    size = (n + nchunk - 1) // nchunk
    for ch in prange(nchunk):
        # rows are in cell order, so each neighbour direction's answer moves little from row to row
        last = np.zeros(nb.shape[1], dtype=np.int64)
        first = True
        for i in range(ch * size, min(n, (ch + 1) * size)):
            c = 0
            cd1 = np.cos(v1[i, 1])
            x1, y1, z1 = cd1 * np.cos(v1[i, 0]), cd1 * np.sin(v1[i, 0]), np.sin(v1[i, 1])
            for k in range(nb.shape[1]):
                cell = nb[i, k]
                if cell < 0:
                    continue
                j = np.searchsorted(cells2, cell) if first else _seek(cells2, cell, last[k])
                last[k] = j
                while j < m and cells2[j] == cell:
                    if _chord2(x1, y1, z1, v2[j, 0], v2[j, 1]) <= chord2[i]:
                        if c < cap:
                            slots[i, c] = j
                        c += 1
                    j += 1
            first = False
            counts[i] = c
    return slots, counts


@njit(cache=True, parallel=True)
def _fill_pairs(nb: np.ndarray, cells2: np.ndarray, v1: np.ndarray, v2: np.ndarray, chord2: np.ndarray,
                starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    n = nb.shape[0]
    m = cells2.size
    i1 = np.empty(starts[-1], dtype=np.int64)
    j2 = np.empty(starts[-1], dtype=np.int64)
    for i in prange(n):
        pos = starts[i]
        cd1 = np.cos(v1[i, 1])
        x1, y1, z1 = cd1 * np.cos(v1[i, 0]), cd1 * np.sin(v1[i, 0]), np.sin(v1[i, 1])
        for k in range(nb.shape[1]):
            cell = nb[i, k]
            if cell < 0:
                continue
            j = np.searchsorted(cells2, cell)
            while j < m and cells2[j] == cell:
                if _chord2(x1, y1, z1, v2[j, 0], v2[j, 1]) <= chord2[i]:
                    i1[pos] = i
                    j2[pos] = j
                    pos += 1
                j += 1
    return i1, j2


def _crossmatch_duckdb(nb: np.ndarray, ra1: np.ndarray, dec1: np.ndarray, radius: np.ndarray, c2: np.ndarray,
                       ra2: np.ndarray, dec2: np.ndarray, *, threads: int | None) -> pa.Table:
    import duckdb

    k = nb.shape[1]
    i1 = np.repeat(np.arange(ra1.size, dtype=np.int64), k)
    cells = nb.ravel()
    ok = cells >= 0
    a = pa.table({"cell": cells[ok], "i1": i1[ok], "ra": np.repeat(ra1, k)[ok], "dec": np.repeat(dec1, k)[ok],
                  "r": np.repeat(radius, k)[ok]})
    b = pa.table({"cell": c2, "i2": np.arange(ra2.size, dtype=np.int64), "ra": ra2, "dec": dec2})
    con = duckdb.connect()
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.register("a", a)
        con.register("b", b)
        dist = _haversine_sql("b.ra", "b.dec", "a.ra", "a.dec")
        out = con.sql(f"SELECT a.i1, b.i2, {dist} * 3600 AS sep_arcsec FROM a JOIN b ON a.cell = b.cell "
                      f"WHERE sep_arcsec <= a.r ORDER BY a.i1, sep_arcsec").to_arrow_table()
    finally:
        con.close()
    return out


def _col(table: Any, name: str) -> np.ndarray:
    if isinstance(table, pa.Table):
        col = table.column(name)
        if pa.types.is_floating(col.type):
            return np.asarray(col.fill_null(np.nan).to_numpy(zero_copy_only=False))
        return np.asarray(col.to_numpy(zero_copy_only=False))
    data = table[name]
    if getattr(data, "mask", None) is not None and np.ma.getmaskarray(data).any():
        return np.ma.filled(np.ma.asarray(data, dtype=float), np.nan)
    return np.asarray(data)


def match_sources(csc: Any, xmm: Any, *, k_sigma: float = 3.44, max_point_arcsec: float = 10.0,
                  extent_factor: float = 1.0, min_extended_arcsec: float = 15.0,
                  csc_ra: str = "ra", csc_dec: str = "dec", csc_err95: str = "err_ellipse_r0",
                  csc_name: str = "name", xmm_ra: str = "SC_RA", xmm_dec: str = "SC_DEC",
                  xmm_err: str = "SC_POSERR", xmm_extent: str = "SC_EXTENT", xmm_id: str = "SRCID",
                  best_only: bool = True) -> pa.Table:
    """Cross-match CSC and 4XMM sources with both position errors as per-axis 1σ.

    Point sources match if their separation is at most
    ``k_sigma · √(σ_csc² + σ_xmm²)`` (and ``max_point_arcsec``), with
    ``σ_csc = err_ellipse_r0 / 2.448`` (the 95 % major radius turned into 1σ)
    and ``σ_xmm = SC_POSERR``. The default ``k_sigma`` = 3.44 keeps 99.73 % of
    true pairs (Rayleigh). Extended sources (a CSC name ending in ``X`` or a
    4XMM ``SC_EXTENT > 0``) match within ``max(extent_factor · SC_EXTENT,
    min_extended_arcsec)`` of each other, not by position error.

    Parameters
    ----------
    csc, xmm : pyarrow.Table or astropy.table.Table
        The two catalogues with their native column names.
    k_sigma, max_point_arcsec, extent_factor, min_extended_arcsec : float, optional
        Matching rule (see above).
    csc_*, xmm_* : str, optional
        Column names.
    best_only : bool, optional
        Keep only the nearest (in σ) counterpart of each CSC source, and each
        4XMM source at most once.

    Returns
    -------
    pyarrow.Table
        ``csc_name, xmm_id, sep_arcsec, sigma_arcsec, n_sigma, extended``, one row per pair.
    """
    ra1, dec1 = _col(csc, csc_ra).astype(float), _col(csc, csc_dec).astype(float)
    ra2, dec2 = _col(xmm, xmm_ra).astype(float), _col(xmm, xmm_dec).astype(float)
    names = np.asarray(_col(csc, csc_name)).astype(str)
    ids = _col(xmm, xmm_id)
    s1 = _col(csc, csc_err95).astype(float) / R95_PER_SIGMA
    s2 = _col(xmm, xmm_err).astype(float)
    ext2 = np.nan_to_num(_col(xmm, xmm_extent).astype(float), nan=0.0)
    ext1 = np.char.endswith(names, "X")
    s1 = np.where(np.isfinite(s1), s1, np.nanmedian(s1) if np.isfinite(s1).any() else 1.0)
    s2 = np.where(np.isfinite(s2), s2, np.nanmedian(s2) if np.isfinite(s2).any() else 1.5)
    big = max(max_point_arcsec, float(np.max(extent_factor * ext2, initial=0.0)), min_extended_arcsec)
    pairs = crossmatch(ra1, dec1, ra2, dec2, big)
    i1 = pairs.column("i1").to_numpy()
    i2 = pairs.column("i2").to_numpy()
    sep = pairs.column("sep_arcsec").to_numpy()
    sigma = np.hypot(s1[i1], s2[i2])
    extended = ext1[i1] | (ext2[i2] > 0)
    ext_radius = np.maximum(extent_factor * ext2[i2], min_extended_arcsec)
    point_ok = ~extended & (sep <= np.minimum(k_sigma * sigma, max_point_arcsec))
    # an extended source matches an extended source, by extent
    ext_ok = ext1[i1] & (ext2[i2] > 0) & (sep <= ext_radius)
    keep = point_ok | ext_ok
    i1, i2, sep, sigma, extended = i1[keep], i2[keep], sep[keep], sigma[keep], extended[keep]
    nsig = sep / sigma
    if best_only and i1.size:
        score = np.where(extended, sep / np.maximum(ext_radius[keep], 1e-9), nsig)
        order = np.lexsort((score, i1))
        first = np.ones(order.size, dtype=bool)
        first[1:] = i1[order][1:] != i1[order][:-1]
        sel = order[first]
        # each 4XMM source used once: keep its best CSC partner
        order2 = sel[np.lexsort((score[sel], i2[sel]))]
        first2 = np.ones(order2.size, dtype=bool)
        first2[1:] = i2[order2][1:] != i2[order2][:-1]
        sel = np.sort(order2[first2])
        i1, i2, sep, sigma, nsig, extended = i1[sel], i2[sel], sep[sel], sigma[sel], nsig[sel], extended[sel]
    # FITS columns arrive big-endian; Arrow takes native byte order only
    xmm_ids = np.asarray(ids[i2])
    xmm_ids = xmm_ids.astype(xmm_ids.dtype.newbyteorder("="))
    return pa.table({"csc_name": pa.array(names[i1].tolist(), pa.utf8()), "xmm_id": pa.array(xmm_ids),
                     "sep_arcsec": sep, "sigma_arcsec": sigma, "n_sigma": nsig, "extended": extended})
