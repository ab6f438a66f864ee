"""Binned images of event lists, with CIAO-compatible physical and sky WCS keywords.

A counts image here is what CIAO's ``dmcopy "evt2.fits[bin x=x0:x1:b,y=y0:y1:b]"``
writes: pixel ``i`` (1-based) along x covers sky x in ``[x0 + (i-1) b, x0 + i b)``,
the physical transform is written as ``LTV``/``LTM`` plus the ``CTYPE1P`` family,
and the sky WCS is the event file's tangent plane scaled by the binning. DS9,
CIAO and astropy read these headers unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from xmine.errors import InputError
from xmine.events import EventList
from xmine.store import atomic_write

__all__ = ["image_header", "make_counts_image", "sky_box", "write_image"]

_COPY_KEYS = ("TELESCOP", "INSTRUME", "DETNAM", "OBS_ID", "OBJECT", "DATE-OBS", "DATE-END", "TSTART", "TSTOP",
              "MJDREF", "TIMESYS", "EXPOSURE", "LIVETIME", "ONTIME", "RA_PNT", "DEC_PNT", "ROLL_PNT", "RA_NOM",
              "DEC_NOM", "ROLL_NOM", "EQUINOX", "RADECSYS")


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
