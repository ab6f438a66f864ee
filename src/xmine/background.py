"""Background for cluster images: a local estimate, or blank-sky / background event files renormalised.

Two routes:

* :func:`local_background` — the mean count rate (counts s⁻¹ per pixel) of
  source-free pixels in the observation itself: an annulus beyond the
  cluster, or the field edges, with point sources masked. It includes the
  cluster's own emission if the annulus is not far enough out; choose the
  radius from the surface-brightness profile (:mod:`xmine.profiles`).
* :func:`make_background_image` — a user-supplied blank-sky or background
  event file (already on the observation's sky frame, e.g. made by CIAO's
  ``blanksky``/``reproject_events``, or a stowed-background file of the same
  instrument) binned onto the observation's image grid, and renormalised by
  the **9.5–12 keV count rate**: there the ACIS effective area is negligible,
  so counts are particle background in both files and their ratio
  ``s = N_obs(9.5–12) / N_bg(9.5–12)`` scales the background to the
  observation. The particle background is **not vignetted**, so the background
  image is not multiplied or divided by the observation's exposure map; the
  scale is carried as an ``EXPOSURE`` keyword, ``EXPOSURE_bg = EXPOSURE_obs / s``,
  so contbin-style scaling (``bg × EXPOSURE_obs / EXPOSURE_bg``) gives the
  renormalised background. Do not pass the observation's vignetted exposure
  map as contbin's ``--bgexpmap`` for such an image.

What evt2-only processing cannot do
-----------------------------------
xmine starts from level-2 event files and never re-runs calibration, so:

* **VFAINT background cleaning** (``acis_process_events check_vf_pha=yes``)
  needs the 5×5 event islands of the level-1 file; evt2 files keep only the
  result. Observations taken in VFAINT mode but not cleaned keep their higher
  particle background; blank-sky files cleaned that way are then *not* a match
  (the 9.5–12 keV renormalisation corrects the level, not the spectral shape).
* **Re-running calibration** (new gain, CTI, time-dependent gain, the ACIS
  contamination model, bad-pixel lists, afterglow detection) needs level-1
  data and the CALDB; xmine records ``CALDBVER``/``ASCDSVER`` so results from
  old processing can be found and redone with CIAO.
* **Exposure maps with effective area** need the CALDB (ARFs, QE maps); see
  :mod:`xmine.images` for the approximation used without them.
* **Read-out (out-of-time) streaks** of bright sources are not modelled
  (CIAO ``make_readout_bg``).

Images are counts images (numpy arrays, ``(ny, nx)``) on the observation's
grid; rates are counts s⁻¹ per image pixel.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from xmine.errors import InputError
from xmine.events import EventList, filter_events
from xmine.images import make_counts_image
from xmine.store import atomic_write

__all__ = [
    "PARTICLE_BAND_KEV",
    "BackgroundImage",
    "LocalBackground",
    "hard_band_counts",
    "local_background",
    "make_background_image",
    "reproject_events",
    "write_background_image",
]

#: Band where ACIS counts are particle background (keV).
PARTICLE_BAND_KEV = (9.5, 12.0)


@dataclass
class LocalBackground:
    """A local background level.

    Attributes
    ----------
    rate_cps_per_pix : float
        Counts s⁻¹ per image pixel.
    rate_err_cps_per_pix : float
        1σ Poisson error (``√N / Σ exposure``; ``1 / Σ exposure`` when N = 0).
    counts : int
        Counts in the region.
    area_pix : int
        Pixels used.
    exposure_sum_s : float
        Sum of the exposure (s) over those pixels.
    region : str
        ``annulus r_in–r_out px around (x, y)`` or ``edges w px``.
    """

    rate_cps_per_pix: float
    rate_err_cps_per_pix: float
    counts: int
    area_pix: int
    exposure_sum_s: float
    region: str

    def expected_counts(self, exposure: np.ndarray | float) -> np.ndarray:
        """Return the expected background counts per pixel for an exposure map (s) or a single exposure."""
        return self.rate_cps_per_pix * np.asarray(exposure, dtype=np.float64)


def _exposure_map(shape: tuple[int, int], exposure: np.ndarray | None, exposure_s: float | None) -> np.ndarray:
    if exposure is not None:
        e = np.asarray(exposure, dtype=np.float64)
        if e.shape != shape:
            msg = f"exposure map shape {e.shape} differs from the counts image shape {shape}"
            raise InputError(msg)
        return np.where(np.isfinite(e) & (e > 0), e, 0.0)
    if exposure_s is None or not exposure_s > 0:
        msg = f"exposure_s = {exposure_s}: give the image's exposure in seconds or an exposure map"
        raise InputError(msg)
    return np.full(shape, float(exposure_s))


def local_background(counts: np.ndarray, *, exposure: np.ndarray | None = None, exposure_s: float | None = None,
                     mask: np.ndarray | None = None, center_xy: tuple[float, float] | None = None,
                     r_in_pix: float | None = None, r_out_pix: float | None = None,
                     edge_width_pix: float | None = None) -> LocalBackground:
    """Estimate the background rate from source-free pixels: an annulus or the field edges.

    Parameters
    ----------
    counts : numpy.ndarray
        Counts image.
    exposure : numpy.ndarray, optional
        Exposure map in seconds (pixels ≤ 0 are ignored). A vignetted map makes
        the rate the on-axis one; see the module docstring for the particle part.
    exposure_s : float, optional
        Exposure (s) when there is no map.
    mask : numpy.ndarray, optional
        1 = keep, 0 = excluded (point sources), as :func:`xmine.masks.make_mask`.
    center_xy : (float, float), optional
        Annulus centre (0-based pixels), usually the cluster centre.
    r_in_pix, r_out_pix : float, optional
        Annulus radii; ``r_out_pix`` defaults to the whole image.
    edge_width_pix : float, optional
        Use the pixels within this distance of the image border instead of an annulus.

    Returns
    -------
    LocalBackground
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2:
        msg = f"counts image has {c.ndim} dimensions; need a 2-D image"
        raise InputError(msg)
    e = _exposure_map(c.shape, exposure, exposure_s)
    ny, nx = c.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    if edge_width_pix is not None:
        if center_xy is not None or not edge_width_pix > 0:
            msg = f"edge_width_pix = {edge_width_pix}: give a positive width and no annulus (center_xy)"
            raise InputError(msg)
        w = float(edge_width_pix)
        sel = (xx < w) | (yy < w) | (xx >= nx - w) | (yy >= ny - w)
        label = f"edges {w:g} px"
    else:
        if center_xy is None or r_in_pix is None:
            msg = "local_background needs center_xy and r_in_pix (an annulus) or edge_width_pix (field edges)"
            raise InputError(msg)
        r_out = float(r_out_pix) if r_out_pix is not None else math.inf
        if not 0 <= r_in_pix < r_out:
            msg = f"annulus radii r_in_pix = {r_in_pix}, r_out_pix = {r_out_pix}: need 0 ≤ r_in < r_out"
            raise InputError(msg)
        r = np.hypot(xx - center_xy[0], yy - center_xy[1])
        sel = (r >= r_in_pix) & (r < r_out)
        label = f"annulus {r_in_pix:g}–{r_out:g} px around ({center_xy[0]:g}, {center_xy[1]:g})"
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != c.shape:
            msg = f"mask shape {m.shape} differs from the counts image shape {c.shape}"
            raise InputError(msg)
        sel &= m > 0
    sel &= e > 0
    n_pix = int(sel.sum())
    if n_pix == 0:
        msg = f"background region ({label}) holds no exposed, unmasked pixel; choose another region"
        raise InputError(msg)
    n = float(c[sel].sum())
    t = float(e[sel].sum())
    return LocalBackground(rate_cps_per_pix=n / t, rate_err_cps_per_pix=max(math.sqrt(n), 1.0) / t,
                           counts=round(n), area_pix=n_pix, exposure_sum_s=t, region=label)


def reproject_events(events: EventList, target: EventList) -> EventList:
    """Put events on another observation's sky pixel frame (through both files' sky WCS).

    Returns a new :class:`~xmine.events.EventList` whose ``x``/``y`` are in
    ``target``'s sky pixels and whose ``wcs`` is ``target``'s.
    """
    x = np.asarray(events["x"], dtype=np.float64)
    y = np.asarray(events["y"], dtype=np.float64)
    if x.size:
        ra, dec = events.wcs.all_pix2world(x, y, 1)
        x, y = target.wcs.all_world2pix(ra, dec, 1)
    cols = dict(events.columns)
    cols["x"], cols["y"] = np.asarray(x), np.asarray(y)
    return EventList(columns=cols, header=events.header, wcs=target.wcs, gti=events.gti, path=events.path)


def _name(ev: EventList, fallback: str) -> str:
    return str(ev.path) if ev.path is not None else fallback


def hard_band_counts(events: EventList, *, xmin: float, ymin: float, shape: tuple[int, int], binsize: float,
                     mask: np.ndarray | None = None, band_kev: tuple[float, float] = PARTICLE_BAND_KEV) -> int:
    """Count events in ``band_kev`` on the image footprint (optionally only where ``mask`` = 1)."""
    hard = filter_events(events, emin_kev=band_kev[0], emax_kev=band_kev[1], grades=None, status_zero=False)
    img, _ = make_counts_image(hard, xmin=xmin, ymin=ymin, shape=shape, binsize=binsize)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != tuple(shape):
            msg = f"mask shape {m.shape} differs from the image shape {tuple(shape)}"
            raise InputError(msg)
        img = img * (m > 0)
    return int(img.sum())


@dataclass
class BackgroundImage:
    """A background counts image on an observation's grid, renormalised by the particle band.

    Attributes
    ----------
    counts : numpy.ndarray
        int32 background counts (not scaled).
    header : astropy.io.fits.Header
        Observation image WCS and physical keywords; ``EXPOSURE`` = observation
        exposure / ``scale``; ``BKGSCALE``, ``HARDOBS``, ``HARDBG``, ``BGEXPOSR``.
    scale : float
        Multiply ``counts`` by this for the expected background counts of the observation.
    hard_counts_obs, hard_counts_bg : int
        9.5–12 keV counts of the two files on the footprint.
    exposure_s : float
        The ``EXPOSURE`` written.
    meta : dict
        Bands and files.
    """

    counts: np.ndarray
    header: fits.Header
    scale: float
    hard_counts_obs: int
    hard_counts_bg: int
    exposure_s: float
    meta: dict[str, Any] = field(default_factory=dict)

    def expected_counts(self) -> np.ndarray:
        """Return the expected background counts per pixel in the observation (``counts × scale``)."""
        return self.counts.astype(np.float64) * self.scale


def make_background_image(obs_events: EventList, bg_events: EventList, *, xmin: float, ymin: float,
                          shape: tuple[int, int], binsize: float = 1.0, emin_kev: float = 0.5,
                          emax_kev: float = 7.0, mask: np.ndarray | None = None,
                          hard_band_kev: tuple[float, float] = PARTICLE_BAND_KEV,
                          scale: float | None = None) -> BackgroundImage:
    """Bin a blank-sky/background event file onto an observation's image and renormalise it.

    Both event lists must have the same grade/status filtering and must still
    contain their 9.5–12 keV events (filter energies here, not before).

    Parameters
    ----------
    obs_events, bg_events : EventList
        The observation and the background events (the latter on the same sky
        or reprojectable through its own sky WCS).
    xmin, ymin, shape, binsize
        The observation image's grid (as :func:`xmine.images.make_counts_image`).
    emin_kev, emax_kev : float, optional
        Image band.
    mask : numpy.ndarray, optional
        1 = use for the hard-band rates (mask bright sources and the cluster core if you like).
    hard_band_kev : (float, float), optional
        Particle band.
    scale : float, optional
        Use this renormalisation instead of the hard-band ratio.

    Returns
    -------
    BackgroundImage
    """
    t_obs = obs_events.header.get("EXPOSURE", obs_events.header.get("LIVETIME"))
    if t_obs is None or not float(t_obs) > 0:
        msg = f"{_name(obs_events, 'observation events')}: no EXPOSURE/LIVETIME keyword; cannot match the background"
        raise InputError(msg)
    bg = reproject_events(bg_events, obs_events)
    h_obs = hard_band_counts(obs_events, xmin=xmin, ymin=ymin, shape=shape, binsize=binsize, mask=mask,
                             band_kev=hard_band_kev)
    h_bg = hard_band_counts(bg, xmin=xmin, ymin=ymin, shape=shape, binsize=binsize, mask=mask,
                            band_kev=hard_band_kev)
    if scale is None:
        for n, ev in ((h_obs, obs_events), (h_bg, bg_events)):
            if n == 0:
                who = _name(ev, "events")
                msg = (f"{who}: no {hard_band_kev[0]:g}–{hard_band_kev[1]:g} keV events on the image; "
                       "do not cut energies before make_background_image, or pass scale=")
                raise InputError(msg)
        scale = h_obs / h_bg
    elif not scale > 0:
        msg = f"background scale = {scale} must be positive"
        raise InputError(msg)
    band = filter_events(bg, emin_kev=emin_kev, emax_kev=emax_kev, grades=None, status_zero=False)
    img, header = make_counts_image(band, xmin=xmin, ymin=ymin, shape=shape, binsize=binsize)
    for key in ("OBS_ID", "DATE-OBS", "TSTART", "TSTOP", "RA_PNT", "DEC_PNT", "ROLL_PNT"):
        if key in obs_events.header:
            header[key] = obs_events.header[key]
    exposure = float(t_obs) / float(scale)
    t_bg = bg_events.header.get("EXPOSURE", bg_events.header.get("LIVETIME"))
    header["EXPOSURE"] = (exposure, "[s] obs EXPOSURE / BKGSCALE (contbin scaling)")
    header["LIVETIME"] = (exposure, "[s] = EXPOSURE")
    header["BKGSCALE"] = (float(scale), "bg counts x BKGSCALE = expected obs bg counts")
    header["HARDOBS"] = (h_obs, f"obs counts {hard_band_kev[0]:g}-{hard_band_kev[1]:g} keV on the image")
    header["HARDBG"] = (h_bg, f"bg counts {hard_band_kev[0]:g}-{hard_band_kev[1]:g} keV on the image")
    if t_bg is not None:
        header["BGEXPOSR"] = (float(t_bg), "[s] original EXPOSURE of the background file")
    header["BUNIT"] = ("count", "background counts, not scaled")
    header["COMMENT"] = "particle background is not vignetted: no exposure-map correction applied"
    return BackgroundImage(counts=img, header=header, scale=float(scale), hard_counts_obs=h_obs,
                           hard_counts_bg=h_bg, exposure_s=exposure,
                           meta={"band_kev": (emin_kev, emax_kev), "hard_band_kev": hard_band_kev,
                                 "obs_file": _name(obs_events, ""), "bg_file": _name(bg_events, "")})


def write_background_image(path: str | os.PathLike[str], background: BackgroundImage) -> Path:
    """Write a :class:`BackgroundImage` as a FITS counts image (with its EXPOSURE), atomically."""
    p = Path(path)
    with atomic_write(p) as tmp:
        fits.PrimaryHDU(background.counts.astype(np.int32), header=background.header).writeto(tmp)
    return p
