"""Binned images of event lists, with CIAO-compatible physical and sky WCS keywords; merging and cropping.

A counts image here is what CIAO's ``dmcopy "evt2.fits[bin x=x0:x1:b,y=y0:y1:b]"``
writes: pixel ``i`` (1-based) along x covers sky x in ``[x0 + (i-1) b, x0 + i b)``,
the physical transform is written as ``LTV``/``LTM`` plus the ``CTYPE1P`` family,
and the sky WCS is the event file's tangent plane scaled by the binning. DS9,
CIAO and astropy read these headers unchanged.

Bands (:data:`BANDS`): broad 0.5–7 keV (the default), soft 0.5–2 keV, hard
2–7 keV, both ends included as CIAO's ``[energy=500:7000]``.

Merging (:func:`merge_observations`, as CIAO's ``reproject_events`` +
``merge_obs``): each observation's events go through its own sky WCS to
RA/Dec and onto one tangent plane through the chosen centre, with the same
0.492″ sky pixels and reference pixel 4096.5; counts, exposure (each
observation's map computed directly on the merged grid) and any background
images are summed. Counts are conserved: every event inside the grid is in
exactly one pixel.

Cropping (:func:`crop_image`): a square around a sky position, the physical
offsets of its lower-left corner recorded (``LTV``, ``CRVAL1P`` and
``CROPMINX``/``CROPMINY``/``CROPBIN``: contbin's ``make_region_files --minx
--miny --bin``) so outlines drawn on the crop map back to physical and sky
coordinates.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from xmine.errors import InputError
from xmine.events import EventList, selection_mask
from xmine.store import atomic_write

__all__ = [
    "BANDS",
    "Crop",
    "MergedImages",
    "celestial_wcs",
    "crop_image",
    "image_header",
    "make_band_images",
    "make_counts_image",
    "merge_observations",
    "merged_frame",
    "reproject_events",
    "sky_box",
    "write_image",
    "write_merged",
]

#: Energy bands in keV: broad (default), soft and hard.
BANDS: dict[str, tuple[float, float]] = {"broad": (0.5, 7.0), "soft": (0.5, 2.0), "hard": (2.0, 7.0)}

_COPY_KEYS = ("TELESCOP", "INSTRUME", "DETNAM", "OBS_ID", "OBJECT", "DATE-OBS", "DATE-END", "TSTART", "TSTOP",
              "MJDREF", "TIMESYS", "EXPOSURE", "LIVETIME", "ONTIME", "RA_PNT", "DEC_PNT", "ROLL_PNT", "RA_NOM",
              "DEC_NOM", "ROLL_NOM", "EQUINOX", "RADECSYS")


def celestial_wcs(header: fits.Header, *, source: str = "image") -> WCS:
    """Return the celestial WCS of an image header, or raise an :class:`InputError` naming ``source``.

    astropy's notes on repaired keywords (RADECSYS, DATE-OBS/MJDREF) are silenced:
    they do not change the celestial axes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header).celestial
        except Exception as exc:  # astropy raises several types for broken WCS
            msg = f"{source}: unusable WCS keywords ({exc}); pass the image header with CTYPE/CRVAL/CRPIX/CDELT"
            raise InputError(msg) from exc
    if not w.has_celestial or w.naxis != 2:
        msg = f"{source}: no celestial WCS (CTYPE1/2 RA---TAN/DEC--TAN); cannot place sources on the image"
        raise InputError(msg)
    return w


def image_header(wcs: WCS, *, xmin: float, ymin: float, binsize: float,
                 source: fits.Header | None = None) -> fits.Header:
    """Return the header of an image binned from sky pixels starting at (xmin, ymin).

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        Sky WCS of the event ``x``/``y`` columns.
    xmin, ymin : float
        Lower edges of the first image pixel, in sky (physical) pixels.
    binsize : float
        Sky pixels per image pixel.
    source : astropy.io.fits.Header, optional
        Event header whose observation keywords (OBS_ID, EXPOSURE, …) are copied.
    """
    hdr = fits.Header()
    if source is not None:
        for key in _COPY_KEYS:
            if key in source:
                hdr[key] = source[key]
    crpix = wcs.wcs.crpix
    hdr["CTYPE1"], hdr["CTYPE2"] = wcs.wcs.ctype[0], wcs.wcs.ctype[1]
    hdr["CRVAL1"], hdr["CRVAL2"] = float(wcs.wcs.crval[0]), float(wcs.wcs.crval[1])
    hdr["CRPIX1"] = (crpix[0] - xmin) / binsize + 0.5
    hdr["CRPIX2"] = (crpix[1] - ymin) / binsize + 0.5
    hdr["CDELT1"], hdr["CDELT2"] = float(wcs.wcs.cdelt[0]) * binsize, float(wcs.wcs.cdelt[1]) * binsize
    hdr["CUNIT1"], hdr["CUNIT2"] = "deg", "deg"
    hdr["RADESYS"] = wcs.wcs.radesys or "ICRS"
    for axis, lo in ((1, xmin), (2, ymin)):
        name = "x" if axis == 1 else "y"
        hdr[f"CTYPE{axis}P"] = (name, "sky coordinates")
        hdr[f"CRVAL{axis}P"] = lo
        hdr[f"CRPIX{axis}P"] = 0.5
        hdr[f"CDELT{axis}P"] = binsize
        hdr[f"WCSTY{axis}P"] = "PHYSICAL"
        hdr[f"LTV{axis}"] = 0.5 - lo / binsize
        hdr[f"LTM{axis}_{axis}"] = 1.0 / binsize
    return hdr


def sky_box(wcs: WCS, ra_deg: float, dec_deg: float, *, size_pix: int, binsize: float) -> tuple[float, float]:
    """Return (xmin, ymin), the lower sky-pixel edges of a square image centred on a sky position.

    Edges fall on whole multiples of ``binsize`` from 0.5, as CIAO's own binning
    of the full field would, so images of one observation line up.
    """
    x, y = wcs.all_world2pix([[ra_deg, dec_deg]], 1)[0]
    half = size_pix * binsize / 2.0
    xmin = 0.5 + np.floor((x - half - 0.5) / binsize) * binsize
    ymin = 0.5 + np.floor((y - half - 0.5) / binsize) * binsize
    return float(xmin), float(ymin)


def make_counts_image(events: EventList, *, xmin: float, ymin: float, shape: tuple[int, int],
                      binsize: float = 1.0) -> tuple[np.ndarray, fits.Header]:
    """Bin events into a counts image, as ``dmcopy [bin x=xmin:xmax:binsize,y=…]``.

    Parameters
    ----------
    events : EventList
        Filtered events (see :func:`xmine.events.filter_events`).
    xmin, ymin : float
        Lower edges of the first pixel, in sky pixels.
    shape : (int, int)
        Image shape (ny, nx).
    binsize : float, optional
        Sky pixels per image pixel (1 = 0.492″).

    Returns
    -------
    image : numpy.ndarray
        int32 counts, shape ``shape``.
    header : astropy.io.fits.Header
        Sky WCS, CIAO physical transform and the observation keywords.
    """
    ny, nx = shape
    if nx <= 0 or ny <= 0 or binsize <= 0:
        msg = f"image shape {shape} and binsize {binsize} must be positive"
        raise InputError(msg)
    ix = np.floor((events["x"].astype(np.float64) - xmin) / binsize).astype(np.int64)
    iy = np.floor((events["y"].astype(np.float64) - ymin) / binsize).astype(np.int64)
    ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    image = np.bincount(iy[ok] * nx + ix[ok], minlength=nx * ny).reshape(ny, nx).astype(np.int32)
    header = image_header(events.wcs, xmin=xmin, ymin=ymin, binsize=binsize, source=events.header)
    header["BUNIT"] = ("count", "counts per pixel")
    return image, header


def write_image(path: str | os.PathLike[str], data: np.ndarray, header: fits.Header, *,
                extname: str | None = None) -> Path:
    """Write an image to FITS atomically (temp file, then rename) and return the path."""
    p = Path(path)
    hdu = fits.PrimaryHDU(data=data, header=header)
    if extname:
        hdu.header["HDUNAME"] = extname
    with atomic_write(p) as tmp:
        hdu.writeto(tmp)
    return p


def make_band_images(events: EventList, *, xmin: float, ymin: float, shape: tuple[int, int], binsize: float = 1.0,
                     bands: Mapping[str, tuple[float, float]] | None = None
                     ) -> dict[str, tuple[np.ndarray, fits.Header]]:
    """Return counts images in energy bands (default :data:`BANDS`), on one grid.

    The events should already be cleaned (grades, status, GTIs); only the
    energy cut is applied here, both ends included.

    Returns
    -------
    dict of str to (numpy.ndarray, astropy.io.fits.Header)
        Band name → image and header (``BAND``, ``EMIN``, ``EMAX`` in keV recorded).
    """
    out = {}
    for name, (lo, hi) in (bands or BANDS).items():
        keep = selection_mask(events.columns, events.header, emin_kev=lo, emax_kev=hi, grades=None,
                              status_zero=False, ccds=None)
        image, header = make_counts_image(events.subset(keep), xmin=xmin, ymin=ymin, shape=shape, binsize=binsize)
        header["BAND"] = (name, "energy band")
        header["EMIN"] = (lo, "[keV] lower band edge (included)")
        header["EMAX"] = (hi, "[keV] upper band edge (included)")
        out[name] = (image, header)
    return out


# ---------------------------------------------------------------- merging


def merged_frame(ra_deg: float, dec_deg: float, *, like: EventList | None = None, pixel_arcsec: float = 0.492,
                 ref_pix: float = 4096.5) -> WCS:
    """Return the sky-pixel WCS of a merged frame: a tangent plane through (ra, dec).

    Pixels are those of ``like`` (its ``TCDLT``) or ``pixel_arcsec``, x increasing
    to the west, the tangent point at ``ref_pix`` (CIAO's 4096.5).
    """
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(ra_deg), float(dec_deg)]
    w.wcs.crpix = [ref_pix, ref_pix]
    if like is not None:
        w.wcs.cdelt = [float(like.wcs.wcs.cdelt[0]), float(like.wcs.wcs.cdelt[1])]
        w.wcs.radesys = like.wcs.wcs.radesys or "ICRS"
        w.wcs.equinox = like.wcs.wcs.equinox
    else:
        d = pixel_arcsec / 3600.0
        w.wcs.cdelt = [-d, d]
        w.wcs.radesys = "ICRS"
        w.wcs.equinox = 2000.0
    w.wcs.cunit = ["deg", "deg"]
    return w


def _set_sky_keys(header: fits.Header, frame: WCS) -> fits.Header:
    h = header.copy()
    for axis, name in ((0, "x"), (1, "y")):
        i = 0
        for key, value in header.items():
            if key.startswith("TTYPE") and key[5:].isdigit() and str(value).strip().lower() == name:
                i = int(key[5:])
        if i:
            h[f"TCTYP{i}"] = frame.wcs.ctype[axis]
            h[f"TCRVL{i}"] = float(frame.wcs.crval[axis])
            h[f"TCRPX{i}"] = float(frame.wcs.crpix[axis])
            h[f"TCDLT{i}"] = float(frame.wcs.cdelt[axis])
    return h


def reproject_events(events: EventList, frame: WCS) -> EventList:
    """Move events onto another tangent plane, as CIAO's ``reproject_events``.

    x, y go through the file's own WCS to RA/Dec, then to the frame's sky
    pixels. Other columns, GTIs and provenance are kept; the header's x/y
    column WCS is updated to the frame.
    """
    ra, dec = events.wcs.all_pix2world(np.asarray(events["x"], dtype=np.float64),
                                       np.asarray(events["y"], dtype=np.float64), 1)
    x, y = frame.all_world2pix(ra, dec, 1)
    cols = dict(events.columns)
    cols["x"], cols["y"] = x, y
    header = _set_sky_keys(events.header, frame)
    return EventList(columns=cols, header=header, wcs=frame.deepcopy(), gti=events.gti, path=events.path,
                     selection={**events.selection, "reprojected_to": [float(v) for v in frame.wcs.crval]})


@dataclass
class MergedImages:
    """Counts (per band), exposure and background of several observations on one grid.

    Attributes
    ----------
    counts : dict of str to numpy.ndarray
        Band → summed counts (int64).
    exposure : numpy.ndarray or None
        Summed exposure (s, or cm² s if the maps had effective area).
    background : numpy.ndarray or None
        Summed background images, when given.
    header : astropy.io.fits.Header
        Grid WCS (the merged tangent plane) and physical keywords.
    frame : astropy.wcs.WCS
        Sky-pixel WCS of the merged frame.
    observations : list of dict
        Per observation: obsid, instrument, events read, events on the grid per band, live time, exposure unit.
    """

    counts: dict[str, np.ndarray]
    exposure: np.ndarray | None
    background: np.ndarray | None
    header: fits.Header
    frame: WCS
    observations: list[dict[str, Any]] = field(default_factory=list)


def merge_observations(observations: Sequence[EventList], *, ra_deg: float, dec_deg: float, size_pix: int,
                       binsize: float = 1.0, bands: Mapping[str, tuple[float, float]] | None = None,
                       exposure: bool = True, gtis: Sequence[Any] | None = None,
                       backgrounds: Sequence[np.ndarray] | None = None, exposure_kwargs: Mapping[str, Any] | None = None
                       ) -> MergedImages:
    """Merge observations onto one tangent plane: summed counts per band, exposure and background.

    Parameters
    ----------
    observations : sequence of EventList
        Cleaned events of each observation (GTIs applied); read with
        ``chipx, chipy, ccd_id, time`` for the exposure maps.
    ra_deg, dec_deg : float
        Tangent point and centre of the square grid (e.g. the cluster).
    size_pix : int
        Image side in image pixels.
    binsize : float
        Sky pixels per image pixel.
    bands : mapping, optional
        Energy bands (default :data:`BANDS`).
    exposure : bool
        Compute each observation's exposure map on the merged grid and sum them.
    gtis : sequence, optional
        Per observation, clean GTIs for its exposure map (None: the events' GTIs).
    backgrounds : sequence of numpy.ndarray, optional
        Per observation, a background image on the merged grid; summed.
    exposure_kwargs : mapping, optional
        Extra keywords for :func:`xmine.exposure.make_exposure_map` (e.g. ``vignetting=True``).

    Returns
    -------
    MergedImages

    Raises
    ------
    xmine.errors.InputError
        No observations, observations of different telescopes/instruments, or
        a background image whose shape is not the grid's.
    """
    if not observations:
        msg = "merge: no observations given"
        raise InputError(msg)
    kinds = {(str(o.header.get("TELESCOP", "")).strip(), str(o.header.get("INSTRUME", "")).strip())
             for o in observations}
    if len(kinds) > 1:
        names = ", ".join(f"{o.path.name if o.path else '?'} ({str(o.header.get('TELESCOP', '')).strip()} "
                          f"{str(o.header.get('INSTRUME', '')).strip()})" for o in observations)
        msg = f"merge: observations of different instruments cannot be merged: {names}; merge each instrument alone"
        raise InputError(msg)
    frame = merged_frame(ra_deg, dec_deg, like=observations[0])
    xmin, ymin = sky_box(frame, ra_deg, dec_deg, size_pix=size_pix, binsize=binsize)
    shape = (int(size_pix), int(size_pix))
    bands = dict(bands or BANDS)
    counts = {b: np.zeros(shape, dtype=np.int64) for b in bands}
    total_exp = np.zeros(shape, dtype=np.float64) if exposure else None
    bkg = None
    info = []
    header: fits.Header | None = None
    exp_unit = None
    for k, ev in enumerate(observations):
        moved = reproject_events(ev, frame)
        images = make_band_images(moved, xmin=xmin, ymin=ymin, shape=shape, binsize=binsize, bands=bands)
        row: dict[str, Any] = {"obsid": str(ev.header.get("OBS_ID", "")).strip(),
                               "instrument": str(ev.header.get("DETNAM", ev.header.get("INSTRUME", ""))).strip(),
                               "events": len(ev), "event_file": str(ev.path) if ev.path else None,
                               "livetime_s": float(ev.header.get("EXPOSURE", np.nan))}
        for b, (img, h) in images.items():
            counts[b] += img
            row[f"counts_{b}"] = int(img.sum())
            if header is None:
                header = h.copy()
        if exposure and total_exp is not None:
            from xmine.exposure import make_exposure_map

            grid_header = image_header(frame, xmin=xmin, ymin=ymin, binsize=binsize)
            emap = make_exposure_map(ev, grid_header, shape, gti=None if gtis is None else gtis[k],
                                     **dict(exposure_kwargs or {}))
            total_exp += emap.data
            exp_unit = emap.unit
            row["exposure_unit"] = emap.unit
            row["grid_affine_error_pix"] = emap.meta.get("grid_affine_error_pix")
        if backgrounds is not None:
            b_img = np.asarray(backgrounds[k], dtype=np.float64)
            if b_img.shape != shape:
                msg = (f"merge: background image {k} has shape {b_img.shape}, not the merged grid's {shape}; "
                       "make it on the merged grid")
                raise InputError(msg)
            bkg = b_img.copy() if bkg is None else bkg + b_img
        info.append(row)
    assert header is not None
    for key in ("BAND", "EMIN", "EMAX", "OBS_ID", "EXPOSURE", "LIVETIME", "ONTIME", "DETNAM", "TSTART", "TSTOP",
                "DATE-OBS", "DATE-END", "RA_PNT", "DEC_PNT", "ROLL_PNT", "RA_NOM", "DEC_NOM", "ROLL_NOM"):
        header.remove(key, ignore_missing=True)
    header["OBS_ID"] = ("MERGED", "merged observations")
    header["NOBS"] = (len(observations), "observations merged")
    for k, row in enumerate(info, start=1):
        header[f"OBSID{k:03d}"] = row["obsid"]
    header["EXPOSURE"] = (float(np.nansum([r["livetime_s"] for r in info])), "[s] summed live time")
    if exp_unit is not None:
        header["XUNIT"] = (exp_unit, "unit of the summed exposure map")
    return MergedImages(counts=counts, exposure=None if total_exp is None else total_exp.astype(np.float32),
                        background=bkg, header=header, frame=frame, observations=info)


def write_merged(merged: MergedImages, out_dir: str | os.PathLike[str], *, prefix: str = "merged"
                 ) -> dict[str, Path]:
    """Write merged images as FITS files, atomically.

    Files ``<prefix>_<band>_img.fits``, ``<prefix>_expmap.fits`` and
    ``<prefix>_bkg.fits``; each carries the merged grid's WCS and physical keywords and its ``BUNIT``
    (``count``; the exposure map's unit, ``s`` or ``cm**2 s``).

    Returns
    -------
    dict of str to pathlib.Path
        ``"<band>"``, ``"exposure"``, ``"background"`` → file.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for band, img in merged.counts.items():
        h = merged.header.copy()
        lo, hi = BANDS.get(band, (None, None))
        h["BAND"] = band
        if lo is not None:
            h["EMIN"], h["EMAX"] = (lo, "[keV]"), (hi, "[keV]")
        h["BUNIT"] = "count"
        paths[band] = write_image(out / f"{prefix}_{band}_img.fits", img.astype(np.int32), h)
    if merged.exposure is not None:
        h = merged.header.copy()
        h["BUNIT"] = str(merged.header.get("XUNIT", "s"))
        h["HDUCLAS1"] = "EXPOSURE"
        paths["exposure"] = write_image(out / f"{prefix}_expmap.fits", merged.exposure, h)
    if merged.background is not None:
        h = merged.header.copy()
        h["BUNIT"] = "count"
        paths["background"] = write_image(out / f"{prefix}_bkg.fits", merged.background.astype(np.float32), h)
    return paths


# ---------------------------------------------------------------- cropping


@dataclass(frozen=True)
class Crop:
    """Where a crop sits in its parent image and in physical (sky-pixel) coordinates.

    Attributes
    ----------
    minx, miny : float
        Physical coordinates of the crop's lower-left corner (make_region_files' ``--minx``/``--miny``).
    binsize : float
        Physical pixels per image pixel (``--bin``).
    i0, j0 : int
        0-based column and row of the crop's first pixel in the parent image (may be < 0 when padded).
    size : int
        Side in pixels.
    padded : bool
        Part of the crop lies off the parent image (filled with ``fill``).
    """

    minx: float
    miny: float
    binsize: float
    i0: int
    j0: int
    size: int
    padded: bool


def _physical(header: fits.Header) -> tuple[float, float, float, float]:
    try:
        ltm1, ltm2 = float(header["LTM1_1"]), float(header["LTM2_2"])
        ltv1, ltv2 = float(header["LTV1"]), float(header["LTV2"])
    except KeyError as exc:
        msg = f"image header has no physical keyword {exc.args[0]}; crop needs LTM/LTV (CIAO or xmine images)"
        raise InputError(msg) from exc
    return ltm1, ltm2, ltv1, ltv2


def crop_image(data: np.ndarray | Mapping[str, np.ndarray], header: fits.Header, *, ra_deg: float, dec_deg: float,
               size_pix: int | None = None, radius_arcmin: float | None = None, fill: float = 0
               ) -> tuple[Any, fits.Header, Crop]:
    """Cut a square around a sky position, keeping WCS and physical keywords right.

    Parameters
    ----------
    data : numpy.ndarray or mapping of str to numpy.ndarray
        The image, or several images on one grid (counts, exposure, background).
    header : astropy.io.fits.Header
        Their header (sky WCS + CIAO physical ``LTM``/``LTV``).
    ra_deg, dec_deg : float
        Centre of the crop (e.g. the cluster's catalogue position).
    size_pix : int, optional
        Side in image pixels.
    radius_arcmin : float, optional
        Or the cluster's extent: the side is the smallest even number of
        pixels covering ``2 × radius``.
    fill : float
        Value of crop pixels off the parent image.

    Returns
    -------
    cropped : numpy.ndarray or dict
        Same kind as ``data``.
    header : astropy.io.fits.Header
        ``CRPIXn`` (also the ``P``/``L`` alternates), ``LTVn`` shifted;
        ``CROPMINX``, ``CROPMINY``, ``CROPBIN`` recorded.
    crop : Crop

    Raises
    ------
    xmine.errors.InputError
        If the centre lies outside the image, or neither/both of size_pix and radius_arcmin are given.
    """
    images = dict(data) if isinstance(data, Mapping) else {"_": np.asarray(data)}
    shape = next(iter(images.values())).shape
    if any(v.shape != shape for v in images.values()):
        msg = f"crop: the images differ in shape ({[v.shape for v in images.values()]}); crop each grid alone"
        raise InputError(msg)
    ltm1, ltm2, ltv1, ltv2 = _physical(header)
    w = celestial_wcs(header, source="crop")
    px, py = w.all_world2pix([[ra_deg, dec_deg]], 0)[0]
    ny, nx = shape
    if not (0 <= px < nx and 0 <= py < ny):
        msg = (f"crop: the centre RA {ra_deg:.5f}, Dec {dec_deg:.5f} falls at image pixel ({px + 1:.1f}, "
               f"{py + 1:.1f}), outside the {nx}x{ny} image; check the cluster position or make a larger image")
        raise InputError(msg)
    if (size_pix is None) == (radius_arcmin is None):
        msg = "crop: give exactly one of size_pix= and radius_arcmin="
        raise InputError(msg)
    if size_pix is None:
        assert radius_arcmin is not None
        pix_arcmin = float(np.sqrt(abs(np.linalg.det(w.pixel_scale_matrix)))) * 60.0
        size_pix = 2 * math.ceil(radius_arcmin / pix_arcmin)
    size = int(size_pix)
    if size <= 0:
        msg = f"crop: size {size} must be positive"
        raise InputError(msg)
    i0 = int(np.floor(px + 0.5 - size / 2.0))
    j0 = int(np.floor(py + 0.5 - size / 2.0))
    padded = i0 < 0 or j0 < 0 or i0 + size > nx or j0 + size > ny
    out = {}
    for name, img in images.items():
        res = np.full((size, size), fill, dtype=img.dtype)
        si0, sj0 = max(i0, 0), max(j0, 0)
        si1, sj1 = min(i0 + size, nx), min(j0 + size, ny)
        res[sj0 - j0:sj1 - j0, si0 - i0:si1 - i0] = img[sj0:sj1, si0:si1]
        out[name] = res
    h = header.copy()
    for axis, off in ((1, i0), (2, j0)):
        # sky WCS and XMM's 'L' physical alternate: the reference pixel moves with the cut
        for key in (f"CRPIX{axis}", f"CRPIX{axis}L"):
            if key in h:
                h[key] = float(h[key]) - off
        # CIAO's 'P' physical alternate keeps CRPIXnP = 0.5: its value there moves instead
        if f"CRVAL{axis}P" in h:
            h[f"CRVAL{axis}P"] = float(h[f"CRVAL{axis}P"]) + off * float(h.get(f"CDELT{axis}P", 1.0))
        h[f"LTV{axis}"] = (ltv1 if axis == 1 else ltv2) - off
    binsize = 1.0 / ltm1
    minx = (0.5 - float(h["LTV1"])) / ltm1
    miny = (0.5 - float(h["LTV2"])) / ltm2
    h["CROPMINX"] = (minx, "physical x of the lower-left corner (--minx)")
    h["CROPMINY"] = (miny, "physical y of the lower-left corner (--miny)")
    h["CROPBIN"] = (binsize, "physical pixels per image pixel (--bin)")
    crop = Crop(minx=minx, miny=miny, binsize=binsize, i0=i0, j0=j0, size=size, padded=padded)
    result: Any = out if isinstance(data, Mapping) else out["_"]
    return result, h, crop
