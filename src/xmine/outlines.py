"""Bin outlines: a contour-binning bin map → exact pixel-edge polygons → region files.

A bin map labels every pixel with its bin number (``0, 1, …``) or ``-1`` when
the pixel is in no bin. :func:`bin_outlines` traces, for every bin, the
boundary between its pixels and the rest along pixel edges, so that the
polygons enclose exactly the bin's pixels:

* coordinates are FITS image pixels (1-based: pixel ``(i, j)`` of the array
  ``binmap[j - 1, i - 1]`` covers ``i ± 0.5``, ``j ± 0.5``), so every vertex
  is a pixel corner ``(k + 0.5, l + 0.5)``;
* a bin is split into *pieces*, its 4-connected parts: two pixels that touch
  only at a corner are separate pieces (their polygons share that vertex);
* each piece has one outer ring (counter-clockwise, x right and y up) and
  zero or more holes (clockwise); rings are simple (no repeated vertex) and
  carry no collinear vertices; a ring is not closed (the first vertex is not
  repeated);
* bins touching the image border are closed along the border.

Region files
------------
:func:`write_outline_regions` writes one file per bin and/or one file with all
bins, in image, physical (the image's ``LTM``/``LTV`` keywords: physical =
LTM⁻¹ · (image − LTV)) or celestial coordinates (the image's WCS; degrees or
sexagesimal), in DS9 or CIAO syntax, at full precision.

Holes: neither DS9 nor CIAO has a polygon with holes, so a piece is written as
its outer polygon followed at once by each hole as an *exclusion* polygon,
``-polygon(...)``. CIAO combines the shapes of a file in order (the lines
join as ``outer1-hole1-hole2+outer2-…``, and ``-`` binds tighter than
``+``), so each hole cuts only its own piece. DS9 draws exclusions with a
red bar and, like funtools, subtracts them from all included shapes;
``regions`` reads them as ``meta['include'] = False``. The two readings
differ only when a piece of a bin lies inside a hole of another piece of the
same bin (rare in contour binning); the writers cut such a bin into
hole-free polygons (:func:`split_holes`), so every reader gets the same
pixels. ``holes="split"`` does that for every bin with holes. The file with
all bins is for display and overviews: a reader that applies exclusions to
every shape of a file would cut the bins lying in another bin's hole; give
CIAO the per-bin files.

``style="make_region_files"`` writes what contbin's ``make_region_files``
writes (``xaf_<n>.reg``: a CIAO header and a stack of ``rotbox`` shapes at six
significant digits in physical coordinates) for scripts that expect it; see
:func:`write_make_region_files`. Unlike that tool, xmine writes every bin
present even when the numbering has gaps (contbin stops at the first gap).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np

from xmine.errors import InputError
from xmine.store import atomic_write

__all__ = [
    "COORDS",
    "BinOutline",
    "OutlinePiece",
    "bin_outlines",
    "image_to_coords",
    "outline_wkt",
    "outlines_to_regions",
    "read_binmap",
    "rotbox_stack",
    "split_holes",
    "write_make_region_files",
    "write_outline_regions",
]

#: Coordinate systems the region writers know. ``fk5``/``icrs`` are decimal
#: degrees, the ``_hms`` forms sexagesimal (RA h:m:s, Dec d:m:s).
COORDS = ("image", "physical", "fk5", "fk5_hms", "icrs", "icrs_hms")

Coords = Literal["image", "physical", "fk5", "fk5_hms", "icrs", "icrs_hms"]
Style = Literal["ds9", "ciao", "make_region_files"]


# ---------------------------------------------------------------------------
# data classes


@dataclass(frozen=True)
class OutlinePiece:
    """One 4-connected part of a bin: an outer ring and its holes.

    Attributes
    ----------
    outer : numpy.ndarray, shape (n, 2)
        Vertices ``(x, y)`` in FITS image pixels, counter-clockwise, not closed.
    holes : tuple of numpy.ndarray, shape (m, 2)
        Each hole's vertices, clockwise, not closed.
    """

    outer: np.ndarray
    holes: tuple[np.ndarray, ...] = ()

    @property
    def area(self) -> float:
        """Area in pixels (outer minus holes)."""
        return _ring_area(self.outer) + sum(_ring_area(h) for h in self.holes)


@dataclass(frozen=True)
class BinOutline:
    """The exact outline of one bin.

    Attributes
    ----------
    bin_id : int
        The bin's label in the bin map.
    npix : int
        Number of pixels in the bin (equals :attr:`area`).
    pieces : tuple of OutlinePiece
        The bin's 4-connected parts, in raster order of their first pixel
        (lowest row first, then lowest column).
    """

    bin_id: int
    npix: int
    pieces: tuple[OutlinePiece, ...]

    @property
    def rings(self) -> list[tuple[np.ndarray, bool]]:
        """All rings as ``(vertices, is_hole)``, each piece's outer ring before its holes."""
        out: list[tuple[np.ndarray, bool]] = []
        for piece in self.pieces:
            out.append((piece.outer, False))
            out.extend((h, True) for h in piece.holes)
        return out

    @property
    def area(self) -> float:
        """Area in pixels enclosed by the rings."""
        return sum(p.area for p in self.pieces)


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


# ---------------------------------------------------------------------------
# input


def _check_binmap(binmap: Any, *, name: str = "binmap") -> np.ndarray:
    arr = np.asarray(binmap)
    if arr.ndim != 2 or arr.size == 0:
        msg = f"{name}: expected a non-empty 2-D bin map, got shape {arr.shape}; pass one image plane"
        raise InputError(msg)
    if arr.dtype.kind in "iu":
        out = arr.astype(np.int64, copy=False)
    elif arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            j, i = np.argwhere(bad)[0]
            msg = (f"{name}: bin labels must be integers, found {arr[j, i].item()!r} at pixel "
                   f"x={i + 1}, y={j + 1}; pass the integer bin map written by the binning step")
            raise InputError(msg)
        out = arr.astype(np.int64)
    else:
        msg = f"{name}: bin labels must be integers, got dtype {arr.dtype}; pass an integer bin map"
        raise InputError(msg)
    if out.min() < -1:
        j, i = np.unravel_index(int(np.argmin(out)), out.shape)
        msg = (f"{name}: bin labels must be >= -1 (-1 = unbinned), found {out[j, i]} at pixel "
               f"x={i + 1}, y={j + 1}; relabel unbinned pixels to -1")
        raise InputError(msg)
    return np.ascontiguousarray(out)


def read_binmap(path: str | os.PathLike[str]) -> tuple[np.ndarray, Any]:
    """Read a bin map FITS file: the first HDU holding a 2-D image.

    Parameters
    ----------
    path : path-like
        The FITS file (as written by ``xmine bin`` or contbin's ``--outbinmap``).

    Returns
    -------
    binmap : numpy.ndarray of int64
        The labels, ``-1`` = unbinned.
    header : astropy.io.fits.Header
        That HDU's header (WCS and physical keywords).

    Raises
    ------
    InputError
        The file cannot be read, has no 2-D image, or its labels are not integers ≥ −1.
    """
    from astropy.io import fits

    p = Path(path)
    try:
        with fits.open(p, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.is_image and hdu.data is not None and np.ndim(hdu.data) == 2:
                    return _check_binmap(hdu.data, name=str(p)), hdu.header.copy()
    except (OSError, ValueError, TypeError) as exc:
        msg = f"{p}: cannot read the bin map as FITS ({exc}); check the file name and that it is a FITS image"
        raise InputError(msg) from exc
    msg = f"{p}: no 2-D image HDU found; pass the bin map FITS file"
    raise InputError(msg)


# ---------------------------------------------------------------------------
# numba kernels


@numba.njit(cache=True)
def _label_at(lab: np.ndarray, i: int, j: int) -> int:
    ny, nx = lab.shape
    if i < 0 or j < 0 or i >= nx or j >= ny:
        return -2
    return int(lab[j, i])


@numba.njit(cache=True)
def _components(lab: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of equal labels ≥ 0, numbered in raster order."""
    ny, nx = lab.shape
    comp = np.full((ny, nx), -1, np.int64)
    stack = np.empty(ny * nx, np.int64)
    ncomp = 0
    for j0 in range(ny):
        for i0 in range(nx):
            b = lab[j0, i0]
            if b < 0 or comp[j0, i0] >= 0:
                continue
            comp[j0, i0] = ncomp
            top = 0
            stack[top] = j0 * nx + i0
            top += 1
            while top > 0:
                top -= 1
                k = stack[top]
                j = k // nx
                i = k - j * nx
                if i > 0 and lab[j, i - 1] == b and comp[j, i - 1] < 0:
                    comp[j, i - 1] = ncomp
                    stack[top] = k - 1
                    top += 1
                if i < nx - 1 and lab[j, i + 1] == b and comp[j, i + 1] < 0:
                    comp[j, i + 1] = ncomp
                    stack[top] = k + 1
                    top += 1
                if j > 0 and lab[j - 1, i] == b and comp[j - 1, i] < 0:
                    comp[j - 1, i] = ncomp
                    stack[top] = k - nx
                    top += 1
                if j < ny - 1 and lab[j + 1, i] == b and comp[j + 1, i] < 0:
                    comp[j + 1, i] = ncomp
                    stack[top] = k + nx
                    top += 1
            ncomp += 1
    return comp, ncomp


# side s of a pixel: 0 bottom, 1 right, 2 top, 3 left (counter-clockwise).
# outward normal n_s and travel direction t_s = n_{s+1} (bin on the left).
_NX = np.array([0, 1, 0, -1], np.int64)
_NY = np.array([-1, 0, 1, 0], np.int64)
# end corner of side s of pixel (i, j), whose corners are (i..i+1, j..j+1)
_EX = np.array([1, 1, 0, 0], np.int64)
_EY = np.array([0, 1, 1, 0], np.int64)


@numba.njit(cache=True)
def _trace(lab: np.ndarray, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray, np.ndarray, np.ndarray]:
    """Trace every bin boundary into simple rings of pixel-corner vertices.

    Returns vertex corner coordinates (X, Y) and per ring: start, length,
    label, component and twice the signed area.
    """
    ny, nx = lab.shape
    nxv = nx + 1
    # count boundary sides for the buffers
    nedge = 0
    for j in range(ny):
        for i in range(nx):
            b = lab[j, i]
            if b < 0:
                continue
            for s in range(4):
                if _label_at(lab, i + _NX[s], j + _NY[s]) != b:
                    nedge += 1
    visited = np.zeros((ny, nx), np.uint8)
    vx = np.empty(nedge, np.int64)
    vy = np.empty(nedge, np.int64)
    loop_v = np.empty(nedge, np.int64)   # turn vertices of the loop being traced (vertex ids)
    stack = np.empty(nedge, np.int64)
    pos = np.full((ny + 1) * nxv, -1, np.int64)
    maxr = nedge // 4 + 1
    r_start = np.empty(maxr, np.int64)
    r_len = np.empty(maxr, np.int64)
    r_lab = np.empty(maxr, np.int64)
    r_comp = np.empty(maxr, np.int64)
    r_area2 = np.empty(maxr, np.int64)
    nv = 0
    nr = 0
    for j0 in range(ny):
        for i0 in range(nx):
            b = lab[j0, i0]
            if b < 0:
                continue
            for s0 in range(4):
                if (visited[j0, i0] >> s0) & 1:
                    continue
                if _label_at(lab, i0 + _NX[s0], j0 + _NY[s0]) == b:
                    continue
                # follow the loop, bin on the left, turning left first (4-connected bins)
                i, j, s = i0, j0, s0
                nl = 0
                while True:
                    visited[j, i] |= np.uint8(1 << s)
                    ti, tj = _NX[(s + 1) % 4], _NY[(s + 1) % 4]
                    if _label_at(lab, i + ti, j + tj) != b:
                        ni, nj, ns = i, j, (s + 1) % 4
                    elif _label_at(lab, i + ti + _NX[s], j + tj + _NY[s]) != b:
                        ni, nj, ns = i + ti, j + tj, s
                    else:
                        ni, nj, ns = i + ti + _NX[s], j + tj + _NY[s], (s + 3) % 4
                    if ns != s:
                        loop_v[nl] = (j + _EY[s]) * nxv + (i + _EX[s])
                        nl += 1
                    i, j, s = ni, nj, ns
                    if i == i0 and j == j0 and s == s0:
                        break
                c = comp[j0, i0]
                # split at repeated vertices (corner-touching pinches) into simple rings
                top = 0
                for k in range(nl + 1):
                    last = k == nl
                    v = loop_v[k] if not last else -1
                    if not last and pos[v] < 0:
                        pos[v] = top
                        stack[top] = v
                        top += 1
                        continue
                    lo = pos[v] if not last else 0
                    # emit stack[lo:top] as a ring
                    r_start[nr] = nv
                    r_len[nr] = top - lo
                    r_lab[nr] = b
                    r_comp[nr] = c
                    a2 = 0
                    for q in range(lo, top):
                        va = stack[q]
                        vb = stack[q + 1] if q + 1 < top else stack[lo]
                        ya, xa = va // nxv, va % nxv
                        yb, xb = vb // nxv, vb % nxv
                        a2 += xa * yb - xb * ya
                        vx[nv] = xa
                        vy[nv] = ya
                        nv += 1
                    r_area2[nr] = a2
                    nr += 1
                    if last:
                        for q in range(lo, top):
                            pos[stack[q]] = -1
                    else:
                        for q in range(lo + 1, top):
                            pos[stack[q]] = -1
                        top = lo + 1
    return vx[:nv], vy[:nv], r_start[:nr], r_len[:nr], r_lab[:nr], r_comp[:nr], r_area2[:nr]


# ---------------------------------------------------------------------------
# outlines


def bin_outlines(binmap: np.ndarray) -> dict[int, BinOutline]:
    """Trace the exact pixel-edge outline of every bin.

    Parameters
    ----------
    binmap : numpy.ndarray, shape (ny, nx)
        Integer bin labels, ``-1`` for unbinned pixels (floats holding whole
        numbers are accepted, as FITS files often store them).

    Returns
    -------
    dict of int to BinOutline
        One entry per label ≥ 0, in increasing label order. Vertices are FITS
        image pixel coordinates (pixel centres at whole numbers, so vertices at
        ``k + 0.5``).

    Raises
    ------
    InputError
        ``binmap`` is not 2-D, not integer, or has labels below −1.

    Examples
    --------
    >>> import numpy as np
    >>> out = bin_outlines(np.array([[0, 0], [-1, 0]]))
    >>> out[0].pieces[0].outer.tolist()
    [[2.5, 0.5], [2.5, 2.5], [1.5, 2.5], [1.5, 1.5], [0.5, 1.5], [0.5, 0.5]]
    """
    lab = _check_binmap(binmap)
    comp, _ = _components(lab)
    vx, vy, r_start, r_len, r_lab, r_comp, r_area2 = _trace(lab, comp)
    xy = np.empty((vx.size, 2), np.float64)
    xy[:, 0] = vx + 0.5
    xy[:, 1] = vy + 0.5
    binned = lab[lab >= 0]
    if binned.size and binned.max() < 4 * lab.size:
        per_label = np.bincount(binned)
        labels = np.flatnonzero(per_label)
        npix = per_label[labels]
    else:  # sparse, huge label numbers
        labels, npix = np.unique(binned, return_counts=True)
    counts = dict(zip(labels.tolist(), npix.tolist(), strict=True))
    # group: by label, then component (raster order), outer ring (area > 0) first
    order = np.lexsort((r_area2 < 0, r_comp, r_lab))
    out: dict[int, BinOutline] = {}
    pieces: list[OutlinePiece] = []
    outer: np.ndarray | None = None
    holes: list[np.ndarray] = []
    cur_lab = cur_comp = -1

    def _close_piece() -> None:
        if outer is not None:
            pieces.append(OutlinePiece(outer, tuple(holes)))

    for r in order:
        b, c = int(r_lab[r]), int(r_comp[r])
        if c != cur_comp:
            _close_piece()
            outer, holes = None, []
            if b != cur_lab:
                if cur_lab >= 0:
                    out[cur_lab] = BinOutline(cur_lab, counts[cur_lab], tuple(pieces))
                pieces = []
                cur_lab = b
            cur_comp = c
        ring = xy[r_start[r]:r_start[r] + r_len[r]]
        if r_area2[r] > 0:
            outer = ring
        else:
            holes.append(ring)
    _close_piece()
    if cur_lab >= 0:
        out[cur_lab] = BinOutline(cur_lab, counts[cur_lab], tuple(pieces))
    return out


def split_holes(outline: BinOutline) -> BinOutline:
    """Return the same bin as hole-free pieces, cut along pixel column edges.

    Each piece with holes is cut by the vertical pixel edge at the left side
    of one of its holes, which opens that hole (and any hole the cut line
    crosses) to the outside; the parts are cut again until no holes remain.
    The result covers exactly the same pixels with simple polygons only, so
    every reader agrees on it, whatever it does with exclusion shapes, at the
    cost of more polygons (their shared edges show as lines in DS9).

    Parameters
    ----------
    outline : BinOutline
        One bin from :func:`bin_outlines`.

    Returns
    -------
    BinOutline
        Same ``bin_id`` and ``npix``; no piece has holes.
    """
    pieces: list[OutlinePiece] = []
    for piece in outline.pieces:
        todo = [piece]
        while todo:
            p = todo.pop()
            if not p.holes:
                pieces.append(p)
                continue
            x0, y0 = p.outer.min(axis=0)
            mask = _piece_mask(p)
            cut = round(float(p.holes[0][:, 0].min() - x0))
            lab = np.where(mask, 0, -1)
            lab[:, cut:][mask[:, cut:]] = 1
            shift = np.array([x0 - 0.5, y0 - 0.5])
            parts = [OutlinePiece(q.outer + shift, tuple(h + shift for h in q.holes))
                     for o in bin_outlines(lab).values() for q in o.pieces]
            todo.extend(reversed(parts))
    pieces.sort(key=lambda q: (q.outer[:, 1].min(), q.outer[q.outer[:, 1] == q.outer[:, 1].min(), 0].min()))
    return BinOutline(outline.bin_id, outline.npix, tuple(pieces))


def _nested(outline: BinOutline) -> bool:
    """Tell whether a piece of the bin lies inside a hole of another of its pieces."""
    holes = [h for p in outline.pieces for h in p.holes]
    if not holes or len(outline.pieces) < 2:
        return False
    # a pixel centre of each piece: left of its outer ring's first edge
    first = np.array([p.outer[0] for p in outline.pieces])
    second = np.array([p.outer[1] for p in outline.pieces])
    d = np.sign(second - first)
    pts = (first + second) / 2 + 0.5 * np.c_[-d[:, 1], d[:, 0]]
    lo = np.array([h.min(axis=0) for h in holes])
    hi = np.array([h.max(axis=0) for h in holes])
    cand = np.all((pts[:, None, :] > lo[None]) & (pts[:, None, :] < hi[None]), axis=2)
    return any(_point_in_ring(holes[k], *pts[i]) for i, k in zip(*np.nonzero(cand), strict=True))


def _point_in_ring(ring: np.ndarray, px: float, py: float) -> bool:
    x, y = ring[:, 0], ring[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    crosses = (y > py) != (yn > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        xcross = x + (py - y) * (xn - x) / (yn - y)
    return bool(np.count_nonzero(crosses & (px < xcross)) % 2)


def _piece_mask(piece: OutlinePiece) -> np.ndarray:
    """Pixels of a piece in its bounding box (rows y, columns x), by winding numbers."""
    x0, y0 = piece.outer.min(axis=0)
    x1, y1 = piece.outer.max(axis=0)
    w, h = round(x1 - x0), round(y1 - y0)
    d = np.zeros((h, w + 1), np.int64)
    for ring in (piece.outer, *piece.holes):
        xs = np.rint(ring[:, 0] - x0).astype(np.int64)
        ys = np.rint(ring[:, 1] - y0).astype(np.int64)
        xn, yn = np.roll(xs, -1), np.roll(ys, -1)
        vert = xs == xn
        for xa, ya, yb in zip(xs[vert].tolist(), ys[vert].tolist(), yn[vert].tolist(), strict=True):
            if yb < ya:  # going down: the inside is to the right
                d[yb:ya, xa] += 1
            else:
                d[ya:yb, xa] -= 1
    return np.cumsum(d, axis=1)[:, :w] > 0


# ---------------------------------------------------------------------------
# coordinates


def _physical_matrix(header: Any) -> tuple[np.ndarray, np.ndarray]:
    """LTM and LTV of ``image = LTM · physical + LTV``.

    From the IRAF/CIAO ``LTMi_j``/``LTVi`` keywords (absent ones take their
    identity defaults), or else from an alternate linear WCS named PHYSICAL
    (CIAO ``CTYPE1P``/``WCSTY1P``, XMM SAS ``CTYPE1L``/``WCSNAMEL``).
    """
    keys = ("LTM1_1", "LTM1_2", "LTM2_1", "LTM2_2", "LTV1", "LTV2")
    if header is not None and any(k in header for k in keys):
        ltm = np.array([[float(header.get("LTM1_1", 1.0)), float(header.get("LTM1_2", 0.0))],
                        [float(header.get("LTM2_1", 0.0)), float(header.get("LTM2_2", 1.0))]])
        ltv = np.array([float(header.get("LTV1", 0.0)), float(header.get("LTV2", 0.0))])
    elif header is not None and (alt := _physical_alternate(header)) is not None:
        ltm, ltv = alt
    else:
        msg = ("physical coordinates need the image's LTM1_1/LTM2_2/LTV1/LTV2 keywords (or a PHYSICAL "
               "alternate WCS), which the header lacks (or no header was given); pass the image header "
               "or use coords='image'")
        raise InputError(msg)
    if abs(np.linalg.det(ltm)) == 0.0:
        msg = f"header: the LTM matrix {ltm.tolist()} is singular; fix the LTMi_j keywords"
        raise InputError(msg)
    return ltm, ltv


def _physical_alternate(header: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """LTM, LTV from a linear alternate WCS ``a`` named PHYSICAL: x = CRVAL + CDELT · (i − CRPIX)."""
    for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        named = str(header.get(f"WCSNAME{a}", "")).strip().upper() == "PHYSICAL"
        typed = all(str(header.get(f"WCSTY{i}{a}", "")).strip().upper() == "PHYSICAL" for i in (1, 2))
        if not (named or typed):
            continue
        try:
            crval = np.array([float(header[f"CRVAL{i}{a}"]) for i in (1, 2)])
            crpix = np.array([float(header.get(f"CRPIX{i}{a}", 0.0)) for i in (1, 2)])
            cdelt = np.array([float(header.get(f"CDELT{i}{a}", 1.0)) for i in (1, 2)])
        except (KeyError, ValueError, TypeError):
            continue
        if np.any(cdelt == 0):
            continue
        # image = crpix + (physical - crval) / cdelt
        return np.diag(1.0 / cdelt), crpix - crval / cdelt
    return None


def _celestial_wcs(header: Any) -> Any:
    from astropy.wcs import WCS, FITSFixedWarning

    if header is None:
        msg = "sky coordinates need the image header with a celestial WCS; pass header= or use coords='physical'"
        raise InputError(msg)
    try:
        with warnings.catch_warnings():
            # header repairs (RADECSYS → RADESYS, DATE-OBS → MJD-OBS) do not change the celestial axes
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
    except Exception as exc:  # astropy raises assorted types for bad WCS keywords
        msg = f"header: cannot build a WCS from it ({exc}); fix the CTYPE/CRVAL/CRPIX keywords"
        raise InputError(msg) from exc
    if not wcs.has_celestial:
        ctype = list(wcs.wcs.ctype)
        msg = (f"header: no celestial WCS (CTYPE1/2 = {ctype}), so sky regions cannot be written; "
               "use coords='physical' or 'image'")
        raise InputError(msg)
    return wcs


def image_to_coords(x: np.ndarray, y: np.ndarray, *, coords: Coords, header: Any = None) -> tuple[
        np.ndarray, np.ndarray]:
    """Convert FITS image pixel coordinates to another system.

    Parameters
    ----------
    x, y : numpy.ndarray
        Image pixel coordinates (1-based).
    coords : {'image', 'physical', 'fk5', 'fk5_hms', 'icrs', 'icrs_hms'}
        The target system: ``physical`` applies the LTM/LTV keywords
        (physical = LTM⁻¹ · (image − LTV)); the sky systems give RA, Dec in
        degrees (``_hms`` only changes how files print them), transformed
        from the WCS's own frame when it differs.
    header : astropy.io.fits.Header, optional
        The image header; required for all but ``image``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(x, y)`` in the target system (RA, Dec in degrees for sky systems).

    Raises
    ------
    InputError
        Unknown system, or the header lacks what the system needs.
    """
    return _transform(coords, header)(np.asarray(x, np.float64), np.asarray(y, np.float64))


_XY = tuple[np.ndarray, np.ndarray]


def _transform(coords: str, header: Any, *, native_sky: bool = False) -> Callable[[np.ndarray, np.ndarray], _XY]:
    """Build the image → ``coords`` conversion once (WCS parsing is slow)."""
    frame = _sky_frame(coords)
    if coords == "image":
        return lambda x, y: (x, y)
    if coords == "physical":
        ltm, ltv = _physical_matrix(header)
        inv = np.linalg.inv(ltm)

        def _phys(x: np.ndarray, y: np.ndarray) -> _XY:
            dx, dy = x - ltv[0], y - ltv[1]
            return inv[0, 0] * dx + inv[0, 1] * dy, inv[1, 0] * dx + inv[1, 1] * dy

        return _phys
    wcs = _celestial_wcs(header).celestial
    convert = not native_sky and _wcs_frame_name(wcs) != frame

    def _sky(x: np.ndarray, y: np.ndarray) -> _XY:
        lon, lat = wcs.pixel_to_world_values(x - 1.0, y - 1.0)
        lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
        if convert:
            from astropy.coordinates import SkyCoord

            sc = SkyCoord(lon, lat, unit="deg", frame=_wcs_frame(wcs)).transform_to(_astropy_frame(frame))
            lon, lat = sc.spherical.lon.deg, sc.spherical.lat.deg
        return np.mod(lon, 360.0), lat

    return _sky


def _sky_frame(coords: str) -> str:
    if coords not in COORDS:
        msg = f"coords: unknown coordinate system {coords!r}; use one of {', '.join(COORDS)}"
        raise InputError(msg)
    return coords.split("_")[0]


def _astropy_frame(name: str) -> Any:
    from astropy.coordinates import FK5, ICRS

    return FK5(equinox="J2000") if name == "fk5" else ICRS()


def _wcs_frame(wcs: Any) -> Any:
    """Return the astropy frame of a celestial WCS (ICRS, or FK5 J2000 by default)."""
    from astropy.wcs.utils import wcs_to_celestial_frame

    return wcs_to_celestial_frame(wcs.celestial)


def _wcs_frame_name(wcs: Any) -> str:
    from astropy.coordinates import FK5, ICRS

    fr = _wcs_frame(wcs)
    if isinstance(fr, ICRS):
        return "icrs"
    if isinstance(fr, FK5) and abs(fr.equinox.jyear - 2000.0) < 1e-9:
        return "fk5"
    return "other"


# ---------------------------------------------------------------------------
# text formatting


def _fmt(values: np.ndarray) -> list[str]:
    # shortest text that reads back as the same double: full precision, no noise
    return [repr(v) for v in values.tolist()]


def _sexagesimal(lon: np.ndarray, lat: np.ndarray) -> tuple[list[str], list[str]]:
    # RA to 1e-5 s (0.15 mas), Dec to 1e-4 arcsec; integer rounding carries exactly
    ra_units = np.rint(np.mod(lon, 360.0) / 15.0 * 3600.0 * 1e5).astype(np.int64) % (24 * 3600 * 10**5)
    h, rem = np.divmod(ra_units, 3600 * 10**5)
    m, rem = np.divmod(rem, 60 * 10**5)
    s, frac = np.divmod(rem, 10**5)
    ras = [f"{a:02d}:{b:02d}:{c:02d}.{d:05d}" for a, b, c, d in zip(h.tolist(), m.tolist(), s.tolist(),
                                                                     frac.tolist(), strict=True)]
    dec_units = np.rint(np.abs(lat) * 3600.0 * 1e4).astype(np.int64)
    d, rem = np.divmod(dec_units, 3600 * 10**4)
    m, rem = np.divmod(rem, 60 * 10**4)
    s, frac = np.divmod(rem, 10**4)
    sign = np.where(lat < 0, "-", "+").tolist()
    decs = [f"{g}{a:02d}:{b:02d}:{c:02d}.{e:04d}" for g, a, b, c, e in zip(sign, d.tolist(), m.tolist(),
                                                                            s.tolist(), frac.tolist(),
                                                                            strict=True)]
    return ras, decs


def _convert_rings(rings: Sequence[np.ndarray], to: Callable[[np.ndarray, np.ndarray], _XY]) -> list[_XY]:
    """Convert many rings with one call (sky frame transforms cost per call, not per vertex)."""
    if not rings:
        return []
    allv = np.concatenate(rings)
    a, b = to(allv[:, 0], allv[:, 1])
    cuts = np.cumsum([len(r) for r in rings])[:-1]
    return list(zip(np.split(a, cuts), np.split(b, cuts), strict=True))


def _ring_text(a: np.ndarray, b: np.ndarray, *, coords: str, style: str) -> str:
    if coords.endswith("_hms"):
        sa, sb = _sexagesimal(a, b)
    else:
        sa, sb = _fmt(a), _fmt(b)
        if style == "ciao" and coords in ("fk5", "icrs"):
            sa = [t + "d" for t in sa]
            sb = [t + "d" for t in sb]
    return ",".join(f"{p},{q}" for p, q in zip(sa, sb, strict=True))


_DS9_FRAME = {"image": "image", "physical": "physical", "fk5": "fk5", "fk5_hms": "fk5",
              "icrs": "icrs", "icrs_hms": "icrs"}


def _region_lines(outline: BinOutline, converted: Iterator[_XY], *, coords: str, style: str) -> list[str]:
    lines: list[str] = []
    tag = f"tag={{bin {outline.bin_id}}}"
    if style == "ciao":
        lines.append(f"# bin {outline.bin_id}: {outline.npix} pixels, {len(outline.pieces)} piece(s)")
    first = True
    for _, is_hole in outline.rings:
        text = _ring_text(*next(converted), coords=coords, style=style)
        if style == "ciao":
            lines.append(f"-polygon({text})" if is_hole else f"polygon({text})")
        elif is_hole:
            lines.append(f"-polygon({text}) # {tag}")
        else:
            label = f" text={{{outline.bin_id}}}" if first else ""
            lines.append(f"polygon({text}) #{label} {tag}")
            first = False
    return lines


def _file_parts(outlines: Sequence[BinOutline], *, coords: str, header: Any, style: str,
                source: str | None) -> tuple[list[str], list[list[str]]]:
    """Header lines, and the shape lines of each outline (one transform for all)."""
    from xmine import __version__

    # no ';' in comments: DS9 and regions split lines at ';' before looking for '#'
    what = f" of {source.replace(';', '_')}" if source else ""
    if style == "ciao":
        if coords == "physical":
            system = "physical (sky x, y) coordinates"
        else:
            # CIAO region files name no frame: RA/Dec are read in the frame of the data filtered
            system = f"RA/Dec in the image's own frame ({_wcs_frame_name(_celestial_wcs(header))})"
        to = _transform(coords, header, native_sky=True)
        head = ["# Region file format: CIAO version 1.0",
                f"# xmine {__version__}: exact bin outlines{what}, {system}, holes follow as -polygon"]
    else:
        to = _transform(coords, header)
        head = ["# Region file format: DS9 version 4.1",
                f"# xmine {__version__}: exact bin outlines{what}, holes are exclusion polygons",
                "global color=green width=1 font=\"helvetica 10 normal roman\" select=1 highlite=1 "
                "edit=1 move=1 delete=1 include=1 source=1",
                _DS9_FRAME[coords]]
    converted = iter(_convert_rings([r for o in outlines for r, _ in o.rings], to))
    return head, [_region_lines(o, converted, coords=coords, style=style) for o in outlines]


# ---------------------------------------------------------------------------
# public writers


def outlines_to_regions(outlines: Mapping[int, BinOutline] | Iterable[BinOutline], *, header: Any = None,
                        coords: Literal["image", "physical", "fk5", "icrs"] = "image") -> Any:
    """Convert outlines to a :class:`regions.Regions` list of polygons.

    Each piece gives a polygon with ``meta['include'] = True``, each hole one
    with ``include = False``; every polygon carries ``meta['tag'] = ['bin n']``
    and the first polygon of a bin ``meta['text'] = 'n'``.

    Parameters
    ----------
    outlines : dict of int to BinOutline, or iterable of BinOutline
        From :func:`bin_outlines`.
    header : astropy.io.fits.Header, optional
        The image header, needed for ``physical`` and sky coordinates.
    coords : {'image', 'physical', 'fk5', 'icrs'}
        ``image`` gives :class:`regions.PolygonPixelRegion` in ``regions``'
        0-based pixels (FITS image coordinate − 1), so ``to_mask`` works on
        the image array; ``physical`` gives them with the physical values
        unchanged (``regions`` has no physical frame and its DS9 writer would
        label them ``image``: use :func:`write_outline_regions` for files);
        sky systems give :class:`regions.PolygonSkyRegion`.

    Returns
    -------
    regions.Regions
    """
    from astropy.coordinates import SkyCoord
    from regions import PixCoord, PolygonPixelRegion, PolygonSkyRegion, RegionMeta, Regions

    items = list(outlines.values() if isinstance(outlines, Mapping) else outlines)
    frame = None if coords in ("image", "physical") else _astropy_frame(_sky_frame(coords))
    to = _transform(coords, header)
    converted = iter(_convert_rings([r for o in items for r, _ in o.rings], to))
    out = []
    for o in items:
        first = True
        for _, is_hole in o.rings:
            a, b = next(converted)
            meta: dict[str, Any] = {"include": not is_hole, "tag": [f"bin {o.bin_id}"]}
            if first:
                meta["text"] = str(o.bin_id)
                first = False
            if frame is None:
                shift = 1.0 if coords == "image" else 0.0  # regions' pixel coordinates are 0-based
                reg: Any = PolygonPixelRegion(PixCoord(a - shift, b - shift), meta=RegionMeta(meta))
            else:
                reg = PolygonSkyRegion(SkyCoord(a, b, unit="deg", frame=frame), meta=RegionMeta(meta))
            out.append(reg)
    return Regions(out)


def outline_wkt(outline: BinOutline, *, header: Any = None,
                coords: Literal["image", "physical", "fk5", "icrs"] = "image") -> str:
    """Return a bin's outline as WKT, ``POLYGON`` or ``MULTIPOLYGON``.

    Rings are closed; outer rings are counter-clockwise and holes clockwise
    in the plane of the numbers written (x, y, or RA, Dec with RA unwrapped
    across 0°), as OGC and GeoJSON expect; sky rings are reversed from pixel
    ones when RA runs opposite to x. Numbers are at full double precision.

    Parameters
    ----------
    outline : BinOutline
        One bin from :func:`bin_outlines`.
    header : astropy.io.fits.Header, optional
        Needed for ``physical`` and sky coordinates.
    coords : {'image', 'physical', 'fk5', 'icrs'}
        Coordinate system of the vertices (sky: RA, Dec in degrees).

    Returns
    -------
    str
    """
    converted = iter(_convert_rings([r for r, _ in outline.rings], _transform(coords, header)))
    polys = []
    for piece in outline.pieces:
        rings = []
        for k in range(1 + len(piece.holes)):
            a, b = next(converted)
            ua = a if coords in ("image", "physical") else a[0] + (a - a[0] + 180.0) % 360.0 - 180.0
            area2 = float(np.dot(ua, np.roll(b, -1)) - np.dot(b, np.roll(ua, -1)))
            if (area2 > 0) != (k == 0):
                a, b = a[::-1], b[::-1]
            a, b = np.append(a, a[0]), np.append(b, b[0])
            rings.append("(" + ", ".join(f"{p} {q}" for p, q in zip(_fmt(a), _fmt(b), strict=True)) + ")")
        polys.append("(" + ", ".join(rings) + ")")
    if len(polys) == 1:
        return "POLYGON " + polys[0]
    return "MULTIPOLYGON (" + ", ".join(polys) + ")"


def _resolve(binmap: Any, header: Any) -> tuple[np.ndarray, Any, str | None]:
    if isinstance(binmap, (str, os.PathLike)):
        arr, file_header = read_binmap(binmap)
        return arr, (header if header is not None else file_header), Path(binmap).name
    return _check_binmap(binmap), header, None


def write_outline_regions(binmap: np.ndarray | str | os.PathLike[str], *, out_dir: str | os.PathLike[str],
                          header: Any = None, coords: Sequence[Coords] = ("physical", "fk5"),
                          style: Style = "ds9", per_bin: bool = True, combined: bool = True,
                          prefix: str = "xaf", holes: Literal["exclude", "split"] = "exclude",
                          outlines: Mapping[int, BinOutline] | None = None) -> list[Path]:
    """Write the bins' exact outlines as region files.

    Layout, for each coordinate system ``c`` in ``coords``:

    * ``out_dir/c/<prefix>_<n>.reg``, one file per bin ``n`` (``per_bin``);
    * ``out_dir/<prefix>_bins_<c>.reg``, all bins in one file (``combined``).

    DS9 files start with ``# Region file format: DS9 version 4.1``, a
    ``global`` line and the frame (``image``, ``physical``, ``fk5``,
    ``icrs``); each piece is ``polygon(...) # text={n} tag={bin n}``, each of
    its holes follows as ``-polygon(...) # tag={bin n}``. CIAO files start with
    ``# Region file format: CIAO version 1.0`` and hold bare ``polygon(...)``
    / ``-polygon(...)`` lines in physical coordinates, or in RA, Dec with a
    ``d`` suffix (degrees) or sexagesimal; CIAO has no image coordinates, and
    reads RA, Dec in the frame of the data it filters. Numbers are written
    at full precision (sexagesimal: 1e-5 s in RA, 1e-4″ in Dec).

    Parameters
    ----------
    binmap : numpy.ndarray or path-like
        The bin map, or its FITS file (whose header is then used).
    out_dir : path-like
        Folder to write into (created if missing).
    header : astropy.io.fits.Header, optional
        Image header with the WCS and physical keywords; overrides the file's.
    coords : sequence of str
        Any of ``image``, ``physical``, ``fk5``, ``fk5_hms``, ``icrs``, ``icrs_hms``.
    style : {'ds9', 'ciao', 'make_region_files'}
        File syntax; ``make_region_files`` calls :func:`write_make_region_files`
        (``coords``, ``combined`` and ``prefix`` are then ignored).
    per_bin, combined : bool
        Which files to write.
    prefix : str
        File name prefix of the per-bin files (contbin uses ``xaf``).
    holes : {'exclude', 'split'}
        ``exclude`` writes each hole as ``-polygon`` after its piece, except
        in a bin where one piece lies inside another's hole, which is split
        as below; ``split`` cuts every piece with holes into hole-free
        polygons (:func:`split_holes`).
    outlines : dict of int to BinOutline, optional
        Already traced outlines of ``binmap`` (saves tracing twice).

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    InputError
        Bad bin map or file, unknown ``coords``/``style``, image coordinates in
        CIAO style, or a header lacking what a coordinate system needs.
    """
    arr, hdr, source = _resolve(binmap, header)
    if style == "make_region_files":
        return write_make_region_files(arr, out_dir=out_dir, header=hdr)
    if style not in ("ds9", "ciao"):
        msg = f"style: unknown region style {style!r}; use 'ds9', 'ciao' or 'make_region_files'"
        raise InputError(msg)
    coords = (coords,) if isinstance(coords, str) else tuple(coords)  # type: ignore[assignment]
    for c in coords:
        _sky_frame(c)
        if style == "ciao" and c == "image":
            msg = "coords: CIAO region files have no image coordinates; use 'physical' or a sky system"
            raise InputError(msg)
        # fail before writing anything when the header cannot serve a system
        _transform(c, hdr)
    if holes not in ("exclude", "split"):
        msg = f"holes: unknown hole style {holes!r}; use 'exclude' or 'split'"
        raise InputError(msg)
    if outlines is None:
        outlines = bin_outlines(arr)
    # a piece inside a hole of its own bin reads differently in CIAO (ordered) and DS9/funtools
    # (exclusions apply to every piece): cut such bins into hole-free polygons in either mode
    outlines = {n: split_holes(o) if holes == "split" or _nested(o) else o for n, o in outlines.items()}
    base = Path(out_dir)
    items = list(outlines.values())
    written: list[Path] = []
    for c in coords:
        head, bodies = _file_parts(items, coords=c, header=hdr, style=style, source=source)
        if per_bin:
            for o, body in zip(items, bodies, strict=True):
                written.append(_write_text(base / c / f"{prefix}_{o.bin_id}.reg", "\n".join(head + body) + "\n"))
        if combined:
            text = "\n".join(head + [line for body in bodies for line in body]) + "\n"
            written.append(_write_text(base / f"{prefix}_bins_{c}.reg", text))
    return written


def _write_text(path: Path, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="ascii")
    return path


# ---------------------------------------------------------------------------
# contbin make_region_files compatibility


@numba.njit(cache=True)
def _rotboxes(lab: np.ndarray) -> np.ndarray:
    """Greedy rectangles per bin in raster order: rows (label, x0, y0, w, h), 0-based."""
    ny, nx = lab.shape
    done = np.zeros((ny, nx), np.uint8)
    out = np.empty((ny * nx, 5), np.int64)
    n = 0
    for y in range(ny):
        for x in range(nx):
            b = lab[y, x]
            if b < 0 or done[y, x]:
                continue
            w = 1
            h = 1
            while True:
                grow_y = y + h < ny
                if grow_y:
                    for xi in range(w):
                        if lab[y + h, x + xi] != b or done[y + h, x + xi]:
                            grow_y = False
                            break
                grow_x = x + w < nx
                if grow_x:
                    for yi in range(h):
                        if lab[y + yi, x + w] != b or done[y + yi, x + w]:
                            grow_x = False
                            break
                corner = False
                if x + w < nx and y + h < ny:
                    corner = lab[y + h, x + w] == b and not done[y + h, x + w]
                if not grow_x and not grow_y:
                    break
                if grow_x and grow_y and not corner:
                    w += 1
                else:
                    if grow_x:
                        w += 1
                    if grow_y:
                        h += 1
            for yi in range(h):
                for xi in range(w):
                    done[y + yi, x + xi] = 1
            out[n, 0] = b
            out[n, 1] = x
            out[n, 2] = y
            out[n, 3] = w
            out[n, 4] = h
            n += 1
    return out[:n]


def rotbox_stack(binmap: np.ndarray) -> dict[int, np.ndarray]:
    """Cover each bin with rectangles the way contbin's ``make_region_files`` does.

    Scanning rows from the bottom and columns from the left, each pixel not yet
    covered starts a rectangle that grows right and up while the new column
    and row stay inside the bin (growing only right when both would work but
    the new corner pixel is outside).

    Parameters
    ----------
    binmap : numpy.ndarray
        Integer bin labels, ``-1`` unbinned.

    Returns
    -------
    dict of int to numpy.ndarray, shape (k, 4)
        Per bin, rectangles ``(x0, y0, width, height)`` with 0-based lower-left
        pixel indices, in the order contbin writes them.
    """
    lab = _check_binmap(binmap)
    boxes = _rotboxes(lab)
    order = np.argsort(boxes[:, 0], kind="stable")
    boxes = boxes[order]
    labels, starts = np.unique(boxes[:, 0], return_index=True)
    ends = np.append(starts[1:], len(boxes))
    return {int(b): boxes[s:e, 1:] for b, s, e in zip(labels, starts, ends, strict=True)}


def _physical_origin(header: Any) -> tuple[float, float, float] | None:
    try:
        ltm, ltv = _physical_matrix(header)
    except InputError:
        return None
    if ltm[0, 1] != 0.0 or ltm[1, 0] != 0.0 or ltm[0, 0] != ltm[1, 1]:
        msg = (f"header: make_region_files needs equal square binning, but LTM is {ltm.tolist()}; "
               "pass minx=, miny=, binning= or use style='ds9'/'ciao'")
        raise InputError(msg)
    binning = 1.0 / ltm[0, 0]
    return (0.5 - ltv[0]) * binning, (0.5 - ltv[1]) * binning, binning


def write_make_region_files(binmap: np.ndarray | str | os.PathLike[str], *, out_dir: str | os.PathLike[str],
                            header: Any = None, minx: float | None = None, miny: float | None = None,
                            binning: float | None = None) -> list[Path]:
    """Write contbin ``make_region_files``-style region files.

    For each bin ``n`` the file ``out_dir/xaf_<n>.reg`` holds
    ``# Region file format: CIAO version 1.0`` and one
    ``rotbox(xc,yc,width,height,0)`` line per rectangle of :func:`rotbox_stack`,
    numbers printed like C++ streams do (six significant digits), with
    ``xc = minx + binning * (x0 + width / 2)`` and likewise in y.

    Parameters
    ----------
    binmap : numpy.ndarray or path-like
        The bin map, or its FITS file.
    out_dir : path-like
        Folder to write into.
    header : astropy.io.fits.Header, optional
        Image header; its ``LTM``/``LTV`` keywords give ``minx``, ``miny``
        and ``binning`` (the physical coordinates of the image's lower-left
        corner, and the pixel size) unless they are passed.
    minx, miny, binning : float, optional
        As contbin's ``--minx``, ``--miny``, ``--bin``. Without them or a
        header with physical keywords, contbin's defaults 0, 0, 1.

    Returns
    -------
    list of pathlib.Path
        The files written, in bin order.
    """
    arr, hdr, _ = _resolve(binmap, header)
    origin = _physical_origin(hdr) if None in (minx, miny, binning) else None
    x0, y0, bsize = origin if origin is not None else (0.0, 0.0, 1.0)
    x0 = x0 if minx is None else float(minx)
    y0 = y0 if miny is None else float(miny)
    bsize = bsize if binning is None else float(binning)
    written = []
    for n, boxes in rotbox_stack(arr).items():
        lines = ["# Region file format: CIAO version 1.0"]
        for bx, by, w, h in boxes.tolist():
            vals = (x0 + bsize * (bx + w * 0.5), y0 + bsize * (by + h * 0.5), bsize * w, bsize * h)
            lines.append("rotbox(" + ",".join(_cxx_g(v) for v in vals) + ",0)")
        written.append(_write_text(Path(out_dir) / f"xaf_{n}.reg", "\n".join(lines) + "\n"))
    return written


def _cxx_g(value: float) -> str:
    """Format like a default C++ ``ostream << double`` (``%g``, 6 significant digits)."""
    if math.isnan(value) or math.isinf(value):  # pragma: no cover - not reachable from bin maps
        return str(value)
    return f"{value:g}"

