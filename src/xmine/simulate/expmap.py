"""Exact exposure maps of simulated observations, and image WCS headers.

The exposure of a sky position is the live time times the share of frames in
which the dithered chips cover it (× vignetting, optionally). The share is
computed exactly from the frame-by-frame dither offsets the event simulation
uses: with ``F(a, b) = P(dx ≤ a, dy ≤ b)`` the joint distribution of the
offsets over the frames, the chance that a sky point at det position ``u``
falls on a chip ``[ox, ox+1024) × [oy, oy+1024)`` is an inclusion–exclusion of
four values of ``F``. ``F`` is tabulated on a 0.05-pixel grid and each output
pixel is averaged over ``oversample²`` sub-positions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from numba import njit
from numpy.typing import NDArray

from xmine.simulate.acis import (
    CHIP_PIX,
    DITHER_AMPLITUDE_ARCSEC,
    PIXEL_ARCSEC,
    SKY_REF_PIX,
    det_to_sky,
    vignetting,
)
from xmine.simulate.events import FRAME_TIME_S, ObservationSim, _Frame
from xmine.store import atomic_write

__all__ = ["ExposureMap", "image_header", "make_exposure_map", "write_exposure_map"]


def image_header(ra_deg: float, dec_deg: float, x0: float, y0: float, bin_px: float) -> fits.Header:
    """Sky WCS and CIAO physical keywords of an image binned from sky pixels.

    Parameters
    ----------
    ra_deg, dec_deg : float
        Tangent point (the event file's TCRVL), at sky pixel 4096.5.
    x0, y0 : float
        Sky (physical) coordinates of the image's lower-left pixel edge.
    bin_px : float
        Sky pixels per image pixel.

    Returns
    -------
    astropy.io.fits.Header
        ``CTYPE/CRVAL/CRPIX/CDELT/CUNIT`` (RA---TAN, DEC--TAN), the physical
        system ``CTYPE1P = 'x'`` … ``WCSTY1P = 'PHYSICAL'`` and ``LTM1_1``,
        ``LTV1`` … as CIAO's ``dmcopy [bin …]`` writes them.
    """
    from astropy.wcs import WCS

    from xmine.images import image_header as _binned_header

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra_deg, dec_deg]
    wcs.wcs.crpix = [SKY_REF_PIX, SKY_REF_PIX]
    wcs.wcs.cdelt = [-PIXEL_ARCSEC / 3600.0, PIXEL_ARCSEC / 3600.0]
    wcs.wcs.radesys = "ICRS"
    h = _binned_header(wcs, xmin=x0, ymin=y0, binsize=bin_px)
    h["EQUINOX"] = 2000.0
    return h


class ExposureMap:
    """An exposure map and its header.

    Attributes
    ----------
    data : ndarray of float32
        Exposure (s) per image pixel, (ny, nx).
    header : astropy.io.fits.Header
        WCS, physical keywords, ``BUNIT = 's'``, ``EXPOSURE``.
    x0, y0 : float
        Sky coordinates of the lower-left edge.
    bin_px : float
        Sky pixels per image pixel.
    """

    def __init__(self, data: NDArray[np.float32], header: fits.Header, x0: float, y0: float,
                 bin_px: float) -> None:
        self.data = data
        self.header = header
        self.x0 = x0
        self.y0 = y0
        self.bin_px = bin_px

    def pixel_of(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Image (column, row) indices, 0-based, of sky positions."""
        return (np.floor((x - self.x0) / self.bin_px).astype(np.int64),
                np.floor((y - self.y0) / self.bin_px).astype(np.int64))


@njit(cache=True)
def _lookup(f: NDArray[np.float64], g0: float, gs: float, a: float, b: float) -> float:
    n = f.shape[0]
    fa = (a - g0) / gs
    fb = (b - g0) / gs
    if fa <= 0.0 or fb <= 0.0:
        return 0.0
    if fa >= n - 1:
        fa = n - 1.000001
    if fb >= n - 1:
        fb = n - 1.000001
    ia = int(fa)
    ib = int(fb)
    wa = fa - ia
    wb = fb - ib
    return float((1 - wa) * (1 - wb) * f[ia, ib] + wa * (1 - wb) * f[ia + 1, ib]
                 + (1 - wa) * wb * f[ia, ib + 1] + wa * wb * f[ia + 1, ib + 1])


@njit(cache=True)
def _expmap_kernel(x0: float, y0: float, bin_px: float, nx: int, ny: int, nsub: int, cos_r: float,
                   sin_r: float, ox: NDArray[np.float64], oy: NDArray[np.float64], chip: float,
                   f: NDArray[np.float64], g0: float, gs: float, ref: float) -> NDArray[np.float64]:
    out = np.zeros((ny, nx))
    reach = -g0 + 1.0
    for j in range(ny):
        for i in range(nx):
            acc = 0.0
            for b in range(nsub):
                ys = y0 + (j + (b + 0.5) / nsub) * bin_px - ref
                for a in range(nsub):
                    xs = x0 + (i + (a + 0.5) / nsub) * bin_px - ref
                    ux = ref + cos_r * xs + sin_r * ys
                    uy = ref - sin_r * xs + cos_r * ys
                    for k in range(ox.size):
                        lx = ux - ox[k]
                        ly = uy - oy[k]
                        if lx < -reach or ly < -reach or lx > chip + reach or ly > chip + reach:
                            continue
                        fk = f[k]
                        acc += (_lookup(fk, g0, gs, lx, ly) - _lookup(fk, g0, gs, lx - chip, ly)
                                - _lookup(fk, g0, gs, lx, ly - chip) + _lookup(fk, g0, gs, lx - chip, ly - chip))
            out[j, i] = acc / (nsub * nsub)
    return out


def make_exposure_map(sim: ObservationSim, *, bin_px: float = 4.0, vignetted: bool = False,
                      oversample: int = 2) -> ExposureMap:
    """Compute the exposure map of a simulated observation.

    Parameters
    ----------
    sim : ObservationSim
        The observation (its dither phases, frames, roll and layout are used).
    bin_px : float, optional
        Sky pixels per map pixel (default 4, i.e. 1.968″).
    vignetted : bool, optional
        Multiply by the vignetting at each pixel centre (as an exposure map
        for a flux image would); off by default, the truth of the chip
        coverage alone.
    oversample : int, optional
        Sub-positions per axis averaged in each pixel.

    Returns
    -------
    ExposureMap
        In seconds: live time × dithered chip coverage (× vignetting).
    """
    fr = _Frame(sim.obs, np.random.default_rng(0))
    fr.phase = sim.dither_phase
    fr.dropout_ccd, *drop = sim.meta["dropout"]
    fr.dropout = (int(drop[0]), int(drop[1]))
    times = np.asarray(fr.t0 + (np.arange(fr.nframes) + 0.5) * FRAME_TIME_S, dtype=np.float64)
    dx, dy = fr.dither(times)
    amp = DITHER_AMPLITUDE_ARCSEC / PIXEL_ARCSEC
    gs = 0.05
    g0 = -amp - 1.0
    edges = g0 + gs * np.arange(int(np.ceil(2 * (amp + 1.0) / gs)) + 2)
    # one joint dither distribution per CCD, over the frames in its GTIs, normalised to all frames
    f = np.zeros((len(sim.layout.ccd_ids), edges.size, edges.size))
    for k, ccd in enumerate(sim.layout.ccd_ids):
        good = fr.good_frames(ccd)
        hist, _, _ = np.histogram2d(dx[good], dy[good], bins=[edges, edges])
        f[k, 1:, 1:] = np.cumsum(np.cumsum(hist, axis=0), axis=1) / dx.size
    # footprint bounds in sky pixels
    xmin, xmax, ymin, ymax = sim.layout.bounds()
    pad = amp + 2.0
    cx = np.array([xmin - pad, xmax + pad, xmax + pad, xmin - pad])
    cy = np.array([ymin - pad, ymin - pad, ymax + pad, ymax + pad])
    sx, sy = det_to_sky(cx, cy, fr.roll)
    x0 = np.floor((sx.min() - 0.5) / bin_px) * bin_px + 0.5
    y0 = np.floor((sy.min() - 0.5) / bin_px) * bin_px + 0.5
    nx = int(np.ceil((sx.max() - x0) / bin_px))
    ny = int(np.ceil((sy.max() - y0) / bin_px))
    ox, oy = sim.layout.origin_arrays()
    r = np.radians(fr.roll)
    cover = _expmap_kernel(float(x0), float(y0), float(bin_px), nx, ny, int(oversample), float(np.cos(r)),
                           float(np.sin(r)), ox, oy, float(CHIP_PIX), f, float(g0), gs, SKY_REF_PIX)
    data = cover * sim.livetime_s
    if vignetted:
        xc = x0 + (np.arange(nx) + 0.5) * bin_px
        yc = y0 + (np.arange(ny) + 0.5) * bin_px
        th = np.hypot(xc[None, :] - SKY_REF_PIX, yc[:, None] - SKY_REF_PIX) * PIXEL_ARCSEC / 60.0
        data = data * vignetting(th)
    header = image_header(float(sim.obs["ra_pnt"]), float(sim.obs["dec_pnt"]), float(x0), float(y0), bin_px)
    header["BUNIT"] = ("s", "exposure time")
    header["EXPOSURE"] = (sim.livetime_s, "[s] live time of the observation")
    header["OBS_ID"] = str(sim.obsid)
    header["DETNAM"] = sim.layout.detnam
    header["VIGNET"] = (bool(vignetted), "vignetting applied")
    header["HDUCLAS1"] = "EXPOSURE"
    return ExposureMap(data.astype(np.float32), header, float(x0), float(y0), float(bin_px))


def write_exposure_map(emap: ExposureMap, path: str | os.PathLike[str]) -> Path:
    """Write an exposure map as a FITS image (atomically)."""
    target = Path(path)
    with atomic_write(target) as tmp:
        fits.PrimaryHDU(emap.data, header=emap.header).writeto(tmp)
    return target
