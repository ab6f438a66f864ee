"""Point sources → exclusion ellipses, pixel masks and DS9/CIAO region files.

A catalogue position error is **not** the size of a source on the detector:
what has to be masked is where the source's photons land, i.e. the PSF at the
source's off-axis angle in the observation, widened for bright sources whose
wings stay above the background further out. The mask radius is

``r = scale · r90(θ) · (1 + slope · log10(max(N, N_ref) / N_ref))``, at least ``min_radius_arcsec``,

with ``N`` the source counts in the observation and ``r90(θ)`` the 90 %
encircled-energy radius of a documented PSF approximation. For Chandra
:func:`chandra_r90_arcsec` uses ``r90 ≈ 1″ + 10″ (θ / 10′)²`` (1.5 keV,
Hickox & Markevitch 2006, ApJ 645, 95). This is a circular approximation: the
real off-axis PSF is elongated and energy dependent, and at 6 keV r90 is about
twice larger on axis. When ``θ`` cannot be known (no pointing) the image centre
is used.

Sources inside the cluster core are **flagged for review**
(``review = True``) and left unmasked unless ``mask_core=True``: a "point
source" in a cool core is often a knot of the cluster itself.

Pixel coordinates in tables and masks are 0-based numpy/``regions`` pixel
coordinates (DS9 ``image`` coordinates minus 1). Masks are FITS images with
1 = keep, 0 = masked, as contbin's ``--mask`` expects.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from xmine.errors import InputError
from xmine.store import atomic_write

__all__ = [
    "DEFAULT_ECF",
    "MAX_THETA_ARCMIN",
    "SOURCE_COLUMNS",
    "catalog_point_sources",
    "chandra_r90_arcsec",
    "combine_sources",
    "flag_core_sources",
    "image_wcs",
    "make_mask",
    "make_point_source_mask",
    "make_source_table",
    "mask_radius_arcsec",
    "off_axis_arcmin",
    "pointings_from_header",
    "read_region_file",
    "sources_to_regions",
    "write_mask",
    "write_region_file",
]

#: Energy conversion factor used to turn a catalogue flux into counts when no
#: counts column is given: erg cm⁻² per count, ≈ ACIS-I 0.5–7 keV for a Γ = 1.7
#: power law (a rough value; it only sets how much a mask grows with brightness).
DEFAULT_ECF = 1.0e-11

#: Sources farther than this from every pointing are dropped (arcmin).
MAX_THETA_ARCMIN = 30.0

#: Columns of a point-source table (see :func:`make_source_table`).
SOURCE_COLUMNS = ("name", "origin", "ra_deg", "dec_deg", "x_pix", "y_pix", "theta_arcmin", "counts",
                  "radius_arcsec", "a_pix", "b_pix", "angle_deg", "extended", "in_core", "review", "masked")

PsfModel = Callable[[np.ndarray], np.ndarray]


def chandra_r90_arcsec(theta_arcmin: np.ndarray | float) -> np.ndarray:
    """Chandra ACIS 90 % encircled-energy radius at 1.5 keV (arcsec) at off-axis angle θ (arcmin).

    ``r90 = 1″ + 10″ (θ / 10′)²`` (Hickox & Markevitch 2006); 1″ on axis,
    11″ at 10′. Circular and energy independent: an approximation.
    """
    th = np.asarray(theta_arcmin, dtype=np.float64)
    return 1.0 + 10.0 * (th / 10.0) ** 2


def mask_radius_arcsec(theta_arcmin: np.ndarray | float, counts: np.ndarray | float | None = None, *,
                       psf_r90_arcsec: PsfModel = chandra_r90_arcsec, scale: float = 1.5,
                       ref_counts: float = 100.0, counts_slope: float = 0.5,
                       min_radius_arcsec: float = 2.0) -> np.ndarray:
    """Return the exclusion radius (arcsec) of point sources at off-axis angles θ with ``counts`` counts.

    Parameters
    ----------
    theta_arcmin : array_like
        Off-axis angles (arcmin).
    counts : array_like or None, optional
        Source counts in the observation; NaN or None means ``ref_counts``.
    psf_r90_arcsec : callable, optional
        θ (arcmin) → 90 % encircled-energy radius (arcsec); Chandra by default.
    scale : float, optional
        Multiple of r90 for a source of ``ref_counts`` counts.
    ref_counts : float, optional
        Sources with fewer counts get ``scale · r90``.
    counts_slope : float, optional
        Growth per decade of counts above ``ref_counts``.
    min_radius_arcsec : float, optional
        Smallest radius.

    Returns
    -------
    numpy.ndarray
        Radii in arcsec.
    """
    th = np.asarray(theta_arcmin, dtype=np.float64)
    n = np.full(th.shape, ref_counts) if counts is None else np.asarray(counts, dtype=np.float64)
    n = np.where(np.isfinite(n), n, ref_counts)
    grow = 1.0 + counts_slope * np.log10(np.maximum(n, ref_counts) / ref_counts)
    r = scale * np.asarray(psf_r90_arcsec(th), dtype=np.float64) * grow
    return np.maximum(r, min_radius_arcsec)


def image_wcs(header: fits.Header, *, source: str = "image") -> WCS:
    """Return the celestial WCS of an image header, or raise an :class:`InputError` naming ``source``."""
    from xmine.images import celestial_wcs

    return celestial_wcs(header, source=source)


def _pixel_arcsec(w: WCS) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(np.abs(proj_plane_pixel_scales(w)[:2])) * 3600.0)


def pointings_from_header(header: fits.Header) -> list[tuple[float, float]]:
    """Return ``[(RA_PNT, DEC_PNT)]`` from an image or event header, or ``[]`` when absent."""
    if "RA_PNT" in header and "DEC_PNT" in header:
        return [(float(header["RA_PNT"]), float(header["DEC_PNT"]))]
    return []


def off_axis_arcmin(ra_deg: np.ndarray | float, dec_deg: np.ndarray | float,
                    pointings: Sequence[tuple[float, float]]) -> np.ndarray:
    """Largest off-axis angle (arcmin) of each position over the pointings of a (merged) image.

    The largest angle gives the widest PSF, so masks of merged images err on the safe side.
    """
    ra = np.atleast_1d(np.asarray(ra_deg, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec_deg, dtype=np.float64))
    if not pointings:
        msg = "off_axis_arcmin: no pointing given; pass pointings=[(ra_deg, dec_deg)]"
        raise InputError(msg)
    pos = SkyCoord(ra, dec, unit="deg")
    out = np.zeros(ra.shape)
    for p_ra, p_dec in pointings:
        out = np.maximum(out, pos.separation(SkyCoord(p_ra, p_dec, unit="deg")).arcmin)
    return out


def make_source_table(ra_deg: np.ndarray, dec_deg: np.ndarray, *, header: fits.Header,
                      counts: np.ndarray | None = None, names: Sequence[str] | None = None,
                      origin: str = "catalog", extended: np.ndarray | None = None,
                      pointings: Sequence[tuple[float, float]] | None = None,
                      psf_r90_arcsec: PsfModel = chandra_r90_arcsec, scale: float = 1.5,
                      min_radius_arcsec: float = 2.0, shape: tuple[int, int] | None = None,
                      source: str = "image") -> Table:
    """Build a point-source table (:data:`SOURCE_COLUMNS`) with PSF-based exclusion circles.

    Parameters
    ----------
    ra_deg, dec_deg : numpy.ndarray
        Positions (ICRS degrees).
    header : astropy.io.fits.Header
        Header of the image the mask is for (sky WCS; RA_PNT/DEC_PNT if ``pointings`` is None).
    counts : numpy.ndarray, optional
        Source counts in this image (NaN where unknown).
    names : sequence of str, optional
        Source names.
    origin : str, optional
        ``catalog`` or ``detect``.
    extended : numpy.ndarray of bool, optional
        Extended sources are listed but never masked.
    pointings : sequence of (float, float), optional
        Optical-axis positions of the observations in the image; default RA_PNT/DEC_PNT,
        else the image centre.
    psf_r90_arcsec, scale, min_radius_arcsec
        See :func:`mask_radius_arcsec`.
    shape : (int, int), optional
        Image shape (ny, nx); default NAXIS2/NAXIS1 of the header. Sources off
        the image (and positions behind the tangent plane) are dropped.
    source : str, optional
        Name of the image for error messages.

    Returns
    -------
    astropy.table.Table
    """
    w = image_wcs(header, source=source)
    ra = np.asarray(ra_deg, dtype=np.float64).ravel()
    dec = np.asarray(dec_deg, dtype=np.float64).ravel()
    n = ra.size
    if dec.size != n:
        msg = f"{source}: {n} RAs but {dec.size} Decs"
        raise InputError(msg)
    if pointings is None:
        pointings = pointings_from_header(header)
    if shape is None:
        shape = (int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0)))
    ny, nx = shape
    if not pointings:
        if nx <= 0 or ny <= 0:
            msg = (f"{source}: no RA_PNT/DEC_PNT and no image size, so off-axis angles are unknown; "
                   "pass pointings=[(ra_deg, dec_deg)] or shape=(ny, nx)")
            raise InputError(msg)
        c = w.pixel_to_world_values((nx - 1) / 2.0, (ny - 1) / 2.0)
        pointings = [(float(c[0]), float(c[1]))]
    x, y = w.world_to_pixel_values(ra, dec) if n else (np.empty(0), np.empty(0))
    theta = off_axis_arcmin(ra, dec, pointings) if n else np.empty(0)
    cnt = np.full(n, np.nan) if counts is None else np.asarray(counts, dtype=np.float64).ravel()
    radius = mask_radius_arcsec(theta, cnt, psf_r90_arcsec=psf_r90_arcsec, scale=scale,
                                min_radius_arcsec=min_radius_arcsec) if n else np.empty(0)
    pix = _pixel_arcsec(w)
    ext = np.zeros(n, bool) if extended is None else np.asarray(extended, dtype=bool).ravel()
    nm = [f"{origin}_{i + 1}" for i in range(n)] if names is None else [str(s).strip() for s in names]
    t = Table()
    t["name"] = np.array(nm, dtype=str) if n else np.array([], dtype="U1")
    t["origin"] = np.array([origin] * n, dtype="U7")
    t["ra_deg"] = ra
    t["dec_deg"] = dec
    t["x_pix"] = np.asarray(x, dtype=np.float64)
    t["y_pix"] = np.asarray(y, dtype=np.float64)
    t["theta_arcmin"] = theta
    t["counts"] = cnt
    t["radius_arcsec"] = radius
    t["a_pix"] = radius / pix
    t["b_pix"] = radius / pix
    t["angle_deg"] = np.zeros(n)
    t["extended"] = ext
    t["in_core"] = np.zeros(n, bool)
    t["review"] = np.zeros(n, bool)
    t["masked"] = ~ext
    for col, unit in (("ra_deg", "deg"), ("dec_deg", "deg"), ("x_pix", "pix"), ("y_pix", "pix"),
                      ("theta_arcmin", "arcmin"), ("counts", "count"), ("radius_arcsec", "arcsec"),
                      ("a_pix", "pix"), ("b_pix", "pix"), ("angle_deg", "deg")):
        t[col].unit = unit
    t.meta["pixel_arcsec"] = pix
    return _inside_image(t, shape)


def _inside_image(t: Table, shape: tuple[int, int]) -> Table:
    """Drop rows off the image (or with no pixel position: behind the tangent plane)."""
    ny, nx = shape
    if len(t) == 0:
        return t
    x, y, r = np.asarray(t["x_pix"]), np.asarray(t["y_pix"]), np.asarray(t["a_pix"])
    with np.errstate(invalid="ignore"):
        # nothing is detected beyond 30′ of the aimpoint (the ACIS-S row reaches ≈ 25′)
        keep = np.isfinite(x) & np.isfinite(y) & (np.asarray(t["theta_arcmin"]) <= MAX_THETA_ARCMIN)
        if nx > 0 and ny > 0:
            keep &= (x + r >= -0.5) & (x - r <= nx - 0.5) & (y + r >= -0.5) & (y - r <= ny - 0.5)
    return t[keep]


def _first(table: Table, names: Sequence[str]) -> str | None:
    low = {c.lower(): c for c in table.colnames}
    for n in names:
        if n.lower() in low:
            return low[n.lower()]
    return None


def _floats(values: Any) -> np.ndarray:
    """Float array of a (possibly masked) column, masked entries as NaN."""
    return np.asarray(np.ma.filled(np.ma.asarray(values).astype(np.float64), np.nan), dtype=np.float64)


def _as_bool(values: Any) -> np.ndarray:
    """Boolean array of a flag column (bool, 0/1, 'T'/'true'); masked entries are False."""
    marr = np.ma.asarray(values)
    if marr.dtype == bool:
        return np.asarray(marr.filled(False), dtype=bool)
    if marr.dtype.kind in "iuf":
        return np.nan_to_num(_floats(marr)) != 0
    mask = np.ma.getmaskarray(marr)
    return np.array([not m and str(v).strip().lower() in {"t", "true", "1", "y", "yes"}
                     for v, m in zip(marr.data, mask, strict=True)], dtype=bool)


def catalog_point_sources(table: Table, *, header: fits.Header, exposure_s: float | None = None,
                          ecf_erg_cm2_per_count: float = DEFAULT_ECF,
                          pointings: Sequence[tuple[float, float]] | None = None,
                          psf_r90_arcsec: PsfModel = chandra_r90_arcsec, scale: float = 1.5,
                          min_radius_arcsec: float = 2.0, shape: tuple[int, int] | None = None,
                          source: str = "catalogue") -> Table:
    """Turn catalogue rows (CSC, 4XMM or xmine's common schema) into a point-source table.

    Columns are found by name, case-insensitively: position ``ra``/``dec``
    (also ``ra_deg``, ``sc_ra``); name ``name``/``iauname``; extended sources by
    ``extent_flag``/``extended`` (true), ``sc_extent``/``extent`` (> 0) or a
    name ending in ``X`` (CSC). Counts come from a ``counts``/``net_counts``/
    ``src_cnts_aper90_b`` column if present, else from the flux
    (``flux_aper_b``, ``flux``, ``sc_ep_8_flux``) × exposure / ECF. The
    catalogue's error ellipse is not used for the size: see the module docstring.

    Parameters
    ----------
    table : astropy.table.Table
        Catalogue rows.
    header : astropy.io.fits.Header
        Header of the image to mask (sky WCS, EXPOSURE, RA_PNT/DEC_PNT).
    exposure_s : float, optional
        Exposure used to turn fluxes into counts; default the header's EXPOSURE.
    ecf_erg_cm2_per_count : float, optional
        Flux of one count per second (erg cm⁻² s⁻¹ per count s⁻¹).
    pointings, psf_r90_arcsec, scale, min_radius_arcsec, shape
        See :func:`make_source_table`.
    source : str, optional
        Name of the catalogue in error messages.

    Returns
    -------
    astropy.table.Table
        :data:`SOURCE_COLUMNS`, ``origin = "catalog"``; extended rows have ``masked = False``.
    """
    ra_c = _first(table, ("ra", "ra_deg", "sc_ra"))
    dec_c = _first(table, ("dec", "dec_deg", "sc_dec"))
    if ra_c is None or dec_c is None:
        msg = f"{source}: no ra/dec columns (have {', '.join(table.colnames[:8])}…); pass a CSC, 4XMM or xmine table"
        raise InputError(msg)
    ra = _floats(table[ra_c])
    dec = _floats(table[dec_c])
    bad = ~(np.isfinite(ra) & np.isfinite(dec))
    if bad.any():
        msg = f"{source}: row {int(np.argmax(bad)) + 1} has no position (ra/dec missing); drop it or fill it"
        raise InputError(msg)
    name_c = _first(table, ("name", "iauname"))
    names = [str(v).strip() for v in table[name_c]] if name_c else None
    ext = np.zeros(len(table), bool)
    flag_c = _first(table, ("extent_flag", "extended"))
    if flag_c:
        ext |= _as_bool(table[flag_c])
    size_c = _first(table, ("sc_extent", "extent"))
    if size_c:
        ext |= np.nan_to_num(_floats(table[size_c])) > 0
    if names is not None and flag_c is None and size_c is None:
        ext |= np.array([n.endswith("X") for n in names], dtype=bool)
    counts = None
    cnt_c = _first(table, ("counts", "net_counts", "src_cnts_aper90_b", "src_cnts_aper_b"))
    flux_c = _first(table, ("flux_aper_b", "flux", "sc_ep_8_flux", "flux_aper90_b"))
    if cnt_c:
        counts = _floats(table[cnt_c])
    elif flux_c:
        texp = exposure_s if exposure_s is not None else header.get("EXPOSURE")
        if texp is not None and float(texp) > 0:
            counts = _floats(table[flux_c]) * float(texp) / ecf_erg_cm2_per_count
    return make_source_table(ra, dec, header=header, counts=counts, names=names, origin="catalog", extended=ext,
                             pointings=pointings, psf_r90_arcsec=psf_r90_arcsec, scale=scale,
                             min_radius_arcsec=min_radius_arcsec, shape=shape, source=source)


def combine_sources(catalog: Table, detected: Table, *, match_factor: float = 1.0) -> Table:
    """Union of catalogue and detected sources.

    A detection within ``match_factor`` × the catalogue source's radius is the
    same source (the row becomes ``origin = "both"`` and keeps the larger
    radius); unmatched detections are appended.

    Parameters
    ----------
    catalog, detected : astropy.table.Table
        Tables of :data:`SOURCE_COLUMNS` on the same image.
    match_factor : float, optional
        Match radius in units of the catalogue source's exclusion radius.

    Returns
    -------
    astropy.table.Table
    """
    if len(catalog) == 0:
        return detected.copy()
    out = catalog.copy()
    if len(detected) == 0:
        return out
    cx, cy = np.asarray(out["x_pix"]), np.asarray(out["y_pix"])
    extra = []
    for i, row in enumerate(detected):
        d = np.hypot(cx - row["x_pix"], cy - row["y_pix"])
        j = int(np.argmin(d))
        if d[j] <= match_factor * max(float(out["a_pix"][j]), float(row["a_pix"])):
            out["origin"][j] = "both"
            for col in ("a_pix", "b_pix", "radius_arcsec"):
                out[col][j] = max(float(out[col][j]), float(row[col]))
            if not np.isfinite(out["counts"][j]):
                out["counts"][j] = row["counts"]
        else:
            extra.append(i)
    if extra:
        from astropy.table import vstack

        out = vstack([out, detected[extra]], metadata_conflicts="silent")
    return out


def flag_core_sources(sources: Table, *, center_x_pix: float, center_y_pix: float, core_radius_pix: float,
                      mask_core: bool = False) -> Table:
    """Flag sources within ``core_radius_pix`` of the cluster centre for review.

    Flagged sources get ``in_core = review = True``; they stay masked only with
    ``mask_core=True``. Returns a new table.
    """
    if core_radius_pix < 0 or not math.isfinite(core_radius_pix):
        msg = f"core_radius_pix = {core_radius_pix} must be a finite number ≥ 0"
        raise InputError(msg)
    out = sources.copy()
    if len(out) == 0:
        return out
    d = np.hypot(np.asarray(out["x_pix"]) - center_x_pix, np.asarray(out["y_pix"]) - center_y_pix)
    core = d <= core_radius_pix
    out["in_core"] = core
    out["review"] = core & ~np.asarray(out["extended"], dtype=bool)
    out["masked"] = ~np.asarray(out["extended"], dtype=bool) & (~core | mask_core)
    return out


def make_mask(sources: Table, shape: tuple[int, int], *, exposure: np.ndarray | None = None,
              only_masked: bool = True) -> np.ndarray:
    """Pixel mask of a source table: 1 = keep, 0 = inside a source ellipse (or zero exposure).

    Parameters
    ----------
    sources : astropy.table.Table
        :data:`SOURCE_COLUMNS` (``x_pix``, ``y_pix``, ``a_pix``, ``b_pix``, ``angle_deg``
        counter-clockwise from +x, as DS9).
    shape : (int, int)
        Image shape (ny, nx).
    exposure : numpy.ndarray, optional
        Pixels with exposure ≤ 0 are masked too.
    only_masked : bool, optional
        Use only rows with ``masked = True`` (default); False masks every row.

    Returns
    -------
    numpy.ndarray
        uint8, shape ``shape``.
    """
    ny, nx = (int(shape[0]), int(shape[1]))
    if ny <= 0 or nx <= 0:
        msg = f"mask shape {shape} must be positive"
        raise InputError(msg)
    keep = np.ones((ny, nx), dtype=np.uint8)
    if exposure is not None:
        if np.shape(exposure) != (ny, nx):
            msg = f"exposure map shape {np.shape(exposure)} differs from the image shape {(ny, nx)}"
            raise InputError(msg)
        keep[~(np.asarray(exposure) > 0)] = 0
    rows = sources if not only_masked or len(sources) == 0 else sources[np.asarray(sources["masked"], bool)]
    for r in rows:
        _fill_ellipse(keep, float(r["x_pix"]), float(r["y_pix"]), float(r["a_pix"]), float(r["b_pix"]),
                      float(r["angle_deg"]))
    return keep


def _fill_ellipse(img: np.ndarray, x0: float, y0: float, a: float, b: float, angle_deg: float) -> None:
    ny, nx = img.shape
    big = max(a, b)
    xlo, xhi = max(0, (math.floor(x0 - big))), min(nx, (math.ceil(x0 + big)) + 1)
    ylo, yhi = max(0, (math.floor(y0 - big))), min(ny, (math.ceil(y0 + big)) + 1)
    if xlo >= xhi or ylo >= yhi or a <= 0 or b <= 0:
        return
    yy, xx = np.mgrid[ylo:yhi, xlo:xhi]
    dx, dy = xx - x0, yy - y0
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    u = (dx * c + dy * s) / a
    v = (-dx * s + dy * c) / b
    img[ylo:yhi, xlo:xhi][u * u + v * v <= 1.0] = 0


def write_mask(path: str | os.PathLike[str], mask: np.ndarray, header: fits.Header) -> Path:
    """Write a mask (1 = keep) as a FITS image with the image's WCS, atomically; return the path."""
    h = fits.Header()
    for key, value in header.items():
        if key in {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BUNIT", "BSCALE", "BZERO",
                   "COMMENT", "HISTORY", ""}:
            continue
        h[key] = value
    h["HDUNAME"] = "MASK"
    h["COMMENT"] = "xmine point-source mask: 1 = keep, 0 = masked (contbin --mask)"
    p = Path(path)
    with atomic_write(p) as tmp:
        fits.PrimaryHDU(np.asarray(mask, dtype=np.uint8), header=h).writeto(tmp)
    return p


def sources_to_regions(sources: Table, *, header: fits.Header | None = None, system: str = "image",
                       only_masked: bool = False) -> Any:
    """Convert a source table to a :class:`regions.Regions` list.

    Masked sources are red; sources flagged for review are cyan and dashed with
    the text ``review``; unmasked extended sources are green.

    Parameters
    ----------
    sources : astropy.table.Table
        :data:`SOURCE_COLUMNS`.
    header : astropy.io.fits.Header, optional
        Image header; needed for ``system="fk5"``.
    system : {"image", "fk5"}
        ``image`` for DS9/contbin on this image; ``fk5`` (sky) for CIAO and DS9 on any file.
    only_masked : bool, optional
        Write only masked rows.

    Returns
    -------
    regions.Regions
    """
    from regions import CirclePixelRegion, EllipsePixelRegion, PixCoord, RegionMeta, Regions, RegionVisual

    if system not in {"image", "fk5"}:
        msg = f"region system {system!r} is not supported; use 'image', 'fk5' or (for files) 'physical'"
        raise InputError(msg)
    w = None
    if system == "fk5":
        if header is None:
            msg = "fk5 regions need the image header (its sky WCS); pass header="
            raise InputError(msg)
        w = image_wcs(header)
    out = []
    for r in sources:
        if only_masked and not r["masked"]:
            continue
        centre = PixCoord(float(r["x_pix"]), float(r["y_pix"]))
        color = "red" if r["masked"] else ("cyan" if r["review"] else "green")
        visual = RegionVisual(color=color)
        meta = RegionMeta(text=f"{r['name']}{' review' if r['review'] else ''}")
        if r["review"]:
            visual["dash"] = 1
        a, b = float(r["a_pix"]), float(r["b_pix"])
        if abs(a - b) < 1e-9:
            reg: Any = CirclePixelRegion(centre, a, meta=meta, visual=visual)
        else:
            import astropy.units as u

            reg = EllipsePixelRegion(centre, 2 * a, 2 * b, angle=float(r["angle_deg"]) * u.deg, meta=meta,
                                     visual=visual)
        if w is not None:
            reg = reg.to_sky(w)
            # written as fk5 (J2000), which CIAO's region library reads; ICRS and FK5 J2000 differ by < 0.02″
            reg.center = SkyCoord(reg.center.icrs.ra, reg.center.icrs.dec, frame="fk5", equinox="J2000")
        out.append(reg)
    return Regions(out)


def _to_physical(header: fits.Header) -> tuple[float, float, float, float, float]:
    """Return (x0, dx, y0, dy) with physical = v0 + (image_1based − 1) · d, and the radius factor."""
    for alt in ("P", "L"):
        keys = [f"CRVAL1{alt}", f"CRPIX1{alt}", f"CDELT1{alt}", f"CRVAL2{alt}", f"CRPIX2{alt}", f"CDELT2{alt}"]
        if all(k in header for k in keys):
            v1, p1, d1, v2, p2, d2 = (float(header[k]) for k in keys)
            return v1 + (1.0 - p1) * d1, d1, v2 + (1.0 - p2) * d2, d2, abs(d1)
    if all(k in header for k in ("LTV1", "LTV2", "LTM1_1", "LTM2_2")):
        m1, m2 = float(header["LTM1_1"]), float(header["LTM2_2"])
        return (1.0 - float(header["LTV1"])) / m1, 1.0 / m1, (1.0 - float(header["LTV2"])) / m2, 1.0 / m2, 1.0 / abs(m1)
    msg = ("header: no physical transform (CTYPE1P/CRVAL1P/CDELT1P, the XMM 'L' keywords, or LTV/LTM); "
           "write image or fk5 regions instead")
    raise InputError(msg)


def write_region_file(path: str | os.PathLike[str], sources: Table, *, header: fits.Header | None = None,
                      system: str = "image", only_masked: bool = False) -> Path:
    """Write a DS9 region file of the sources (see :func:`sources_to_regions`), atomically.

    ``image`` files are in DS9 image pixels (1-based); ``fk5`` files in
    degrees, readable by CIAO's region library and DS9 on any image of the
    field; ``physical`` files in the sky (physical) pixels of the event file,
    as CIAO tools and ``make_region_files`` use (needs the image header's
    physical keywords; ``regions`` has no physical frame, so the image-frame
    text is written with physical values and the frame line says ``physical``).
    """
    if system == "physical":
        if header is None:
            msg = "physical regions need the image header (its LTV/LTM or CRVAL1P keywords); pass header="
            raise InputError(msg)
        x0, dx, y0, dy, fr = _to_physical(header)
        src = sources.copy()
        # regions writes image pixel p as p + 1: give it physical − 1
        src["x_pix"] = x0 + np.asarray(sources["x_pix"], dtype=np.float64) * dx - 1.0
        src["y_pix"] = y0 + np.asarray(sources["y_pix"], dtype=np.float64) * dy - 1.0
        src["a_pix"] = np.asarray(sources["a_pix"], dtype=np.float64) * fr
        src["b_pix"] = np.asarray(sources["b_pix"], dtype=np.float64) * fr
        regs = sources_to_regions(src, system="image", only_masked=only_masked)
        frame = {"image": "physical"}
    else:
        regs = sources_to_regions(sources, header=header, system=system, only_masked=only_masked)
        # regions names FK5 'j2000'; DS9 reads both, CIAO's region library expects 'fk5'
        frame = {"j2000": "fk5"}
    p = Path(path)
    with atomic_write(p) as tmp:
        if len(regs) == 0:
            tmp.write_text("# Region file format: DS9 astropy/regions\n# no sources\n", encoding="utf-8")
        else:
            text = regs.serialize(format="ds9")
            lines = [frame.get(ln.strip(), ln) for ln in text.splitlines()]
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def read_region_file(path: str | os.PathLike[str], *, point_colors: Sequence[str] = ("red",),
                     extended_colors: Sequence[str] = ("green",)) -> Table:
    """Read ellipses and circles of a DS9 pixel-coordinate region file into a table.

    Per-line colours (``# color=green``) and the file's ``global color=`` are
    honoured; angles are normalised to [0°, 180°) (DS9 files may carry 548.975°
    or −237.7°). Positions are 0-based pixel coordinates.

    Parameters
    ----------
    path : path-like
        DS9 region file in ``image`` coordinates.
    point_colors, extended_colors : sequence of str
        Colours meaning point and extended sources; others get kind ``other``.

    Returns
    -------
    astropy.table.Table
        ``x_pix, y_pix, a_pix, b_pix, angle_deg, color, kind`` (kind ∈ point, extended, other).
    """
    from regions import CirclePixelRegion, EllipsePixelRegion, Regions

    p = Path(path)
    if not p.exists():
        msg = f"{p}: no such region file"
        raise InputError(msg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            regs = Regions.read(str(p), format="ds9")
    except Exception as exc:  # regions raises its own parser errors
        msg = f"{p}: not a readable DS9 region file ({exc}); check its syntax in DS9"
        raise InputError(msg) from exc
    rows = []
    for r in regs:
        if isinstance(r, EllipsePixelRegion):
            a, b = float(r.width) / 2, float(r.height) / 2
            ang = float(r.angle.to_value("deg"))
        elif isinstance(r, CirclePixelRegion):
            a = b = float(r.radius)
            ang = 0.0
        else:
            continue
        color = str(r.visual.get("edgecolor", r.visual.get("color", "green")))
        kind = "point" if color in point_colors else ("extended" if color in extended_colors else "other")
        rows.append((float(r.center.x), float(r.center.y), a, b, ang % 180.0, color, kind))
    if not rows:
        msg = f"{p}: no pixel ellipses or circles found; is it in image coordinates?"
        raise InputError(msg)
    t = Table(rows=rows, names=("x_pix", "y_pix", "a_pix", "b_pix", "angle_deg", "color", "kind"))
    return t


def make_point_source_mask(counts: np.ndarray, header: fits.Header, *, catalog: Table | None = None,
                           exposure: np.ndarray | None = None, background: np.ndarray | None = None,
                           detect: bool = True, false_per_field: float = 1.0,
                           cluster_center_xy: tuple[float, float] | None = None, core_radius_pix: float = 0.0,
                           mask_core: bool = False, pointings: Sequence[tuple[float, float]] | None = None,
                           psf_r90_arcsec: PsfModel = chandra_r90_arcsec, scale: float = 1.5,
                           min_radius_arcsec: float = 2.0) -> tuple[Table, np.ndarray]:
    """Catalogue sources united with xmine's own detections → source table and pixel mask, in one call.

    Parameters
    ----------
    counts : numpy.ndarray
        Counts image (merged or single observation).
    header : astropy.io.fits.Header
        Its header (sky WCS; EXPOSURE and RA_PNT/DEC_PNT when present).
    catalog : astropy.table.Table, optional
        Catalogue rows (see :func:`catalog_point_sources`).
    exposure, background : numpy.ndarray, optional
        Exposure map and expected background counts for the detection; pixels
        without exposure are masked too.
    detect : bool, optional
        Run :func:`xmine.detect.detect_sources` and add its point-like detections.
    false_per_field : float, optional
        Expected false detections per image.
    cluster_center_xy : (float, float), optional
        Cluster centre (0-based pixels); sources within ``core_radius_pix`` are flagged for review.
    core_radius_pix : float, optional
        Core radius; 0 flags nothing.
    mask_core : bool, optional
        Mask the flagged sources anyway.
    pointings, psf_r90_arcsec, scale, min_radius_arcsec
        See :func:`make_source_table`.

    Returns
    -------
    sources : astropy.table.Table
        :data:`SOURCE_COLUMNS`.
    mask : numpy.ndarray
        uint8, 1 = keep.
    """
    shape = (int(np.shape(counts)[0]), int(np.shape(counts)[1]))
    kw: dict[str, Any] = {"pointings": pointings, "psf_r90_arcsec": psf_r90_arcsec, "scale": scale,
                          "min_radius_arcsec": min_radius_arcsec, "shape": shape}
    sources = catalog_point_sources(catalog, header=header, **kw) if catalog is not None else None
    if detect:
        from xmine.detect import detect_sources, detections_to_sources

        optical_axis = None
        if pointings:
            w = image_wcs(header)
            px, py = w.world_to_pixel_values(pointings[0][0], pointings[0][1])
            optical_axis = (float(px), float(py))
        det = detect_sources(counts, exposure=exposure, background=background, header=header,
                             optical_axis_xy=optical_axis, psf_r90_arcsec=psf_r90_arcsec,
                             false_per_field=false_per_field)
        found = detections_to_sources(det, header=header, **kw)
        sources = found if sources is None else combine_sources(sources, found)
    if sources is None:
        msg = "make_point_source_mask: nothing to mask; give catalog= or leave detect=True"
        raise InputError(msg)
    if cluster_center_xy is not None and core_radius_pix > 0:
        sources = flag_core_sources(sources, center_x_pix=cluster_center_xy[0], center_y_pix=cluster_center_xy[1],
                                    core_radius_pix=core_radius_pix, mask_core=mask_core)
    return sources, make_mask(sources, shape, exposure=exposure)
