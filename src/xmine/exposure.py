"""Exposure maps without CALDB, from the events themselves.

What is computed
----------------
For each CCD the map is the live time during which a sky pixel was seen by
that CCD, summed over CCDs: the chip's footprint on the sky, moved by the
dither (and any aspect wander) frame by frame, weighted by the frame's live
time inside the CCD's good-time intervals. Chip edges come out smoothed by
the dither, and chip gaps are partly covered, as in a CIAO exposure map.

How the footprint and the dither are found
-----------------------------------------
Every level-2 event carries both its chip pixel (``ccd_id, chipx, chipy``)
and its sky position (``x, y``), which CIAO computed from the chip position
through the aspect solution. Over one CCD the chip→sky map is, to well under a
pixel, an affine map plus a time-dependent shift::

    (x, y) = L_ccd · (chipx, chipy) + c_ccd + δ(t)

where ``δ(t)`` is the dither/aspect offset, common to all CCDs. xmine fits
``L_ccd, c_ccd`` (6 numbers per CCD) and ``δ`` (a linear spline with knots
every few frames and a small curvature penalty) by alternating least squares on all
events, then uses the fitted chip geometry and offset track. Nothing from
CALDB or the aspect solution file is needed; what the events cannot tell is
listed below.

Exact dither averaging
----------------------
With ``e = L⁻¹ δ`` the offset in chip pixels and ``F(a, b)`` the live time
with ``e_x ≤ a`` and ``e_y ≤ b`` (tabulated on a 0.05-pixel grid), the live
time a sky point whose zero-offset chip position is ``u`` spends on the chip
``[0.5, 1024.5]²`` is an inclusion–exclusion of four values of ``F``. Each map
pixel is averaged over ``oversample²`` sub-positions (numba kernel, checked
against a direct frame-by-frame numpy sum in the tests).

Approximations (not a CIAO ``mkexpmap``)
----------------------------------------
* **No effective area, no quantum efficiency**: the map is in **seconds**. A
  counts image divided by it is a **count rate** (counts s⁻¹ per pixel), not a
  flux. Multiply by an ARF-weighted effective area (:func:`arf_mean_area`) for
  cm² s, and only then divide counts by it for photons cm⁻² s⁻¹.
* **No bad pixels or columns**, no node boundaries, no chip-edge event losses.
* **Vignetting** is optional and a simple model: ``1 − slope × θ`` (θ off-axis
  angle in arcmin from the nominal pointing, default slope 0.023/arcmin, at
  least ``floor``), energy independent; real HRMA vignetting depends on
  energy and azimuth.
* The chip→sky map is affine per CCD (no optical distortion inside a chip);
  the offset track is a linear spline with knots every 1–16 frames (≈ 20
  events per knot interval), so aspect jitter faster than that is averaged.

A user's CIAO exposure map (cm² s, from ``fluximage``/``mkexpmap``) can be
loaded with :func:`read_exposure_map` and is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from numba import njit, prange

from xmine.errors import InputError
from xmine.events import EventList
from xmine.gti import dead_time_correction, intersect_gti
from xmine.store import atomic_write

__all__ = [
    "ChipGeometry",
    "ExposureMap",
    "arf_mean_area",
    "coverage_reference",
    "fit_chip_geometry",
    "make_exposure_map",
    "rate_image",
    "read_exposure_map",
    "write_exposure_map",
]

CHIP_LO, CHIP_HI = 0.5, 1024.5
_GRID_STEP = 0.05


@dataclass
class ChipGeometry:
    """Chip→sky geometry and the offset track fitted from the events.

    Attributes
    ----------
    ccds : tuple of int
    linear : dict of int to numpy.ndarray
        Per CCD the 2×2 matrix ``L`` (sky pixels per chip pixel).
    offset : dict of int to numpy.ndarray
        Per CCD the shift ``c`` (sky pixels) at zero dither.
    track_time : numpy.ndarray
        Knot times (s) of the offset track.
    track : numpy.ndarray
        ``(n, 2)`` sky offsets δ (pixels) at ``track_time`` (linear in between); mean 0 over the events.
    rms_pix : float
        RMS residual of the fit (≈ 0.29 for pixel-randomised positions).
    frames_per_block : int
        Frames between knots of the track.
    """

    ccds: tuple[int, ...]
    linear: dict[int, np.ndarray]
    offset: dict[int, np.ndarray]
    track_time: np.ndarray
    track: np.ndarray
    rms_pix: float
    frames_per_block: int

    def offsets_at(self, time_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sky offsets δ (pixels) at the given times, linearly interpolated."""
        t = np.asarray(time_s, dtype=np.float64)
        return (np.interp(t, self.track_time, self.track[:, 0]), np.interp(t, self.track_time, self.track[:, 1]))

    def chip_to_sky(self, ccd: int, chipx: np.ndarray, chipy: np.ndarray, time_s: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Sky pixels of chip positions on one CCD (at zero offset, or at the given times)."""
        L, c = self.linear[ccd], self.offset[ccd]
        x = L[0, 0] * chipx + L[0, 1] * chipy + c[0]
        y = L[1, 0] * chipx + L[1, 1] * chipy + c[1]
        if time_s is not None:
            dx, dy = self.offsets_at(time_s)
            x, y = x + dx, y + dy
        return x, y


@dataclass
class ExposureMap:
    """An exposure map on an image grid.

    Attributes
    ----------
    data : numpy.ndarray of float32
        Exposure per pixel, in ``unit``.
    header : astropy.io.fits.Header
        Sky WCS and CIAO physical keywords of the grid, ``BUNIT``.
    unit : str
        ``"s"`` (live time) or ``"cm**2 s"`` (with effective area).
    meta : dict
        How it was made (method, vignetting, geometry fit RMS, …).
    """

    data: np.ndarray
    header: fits.Header
    unit: str = "s"
    meta: dict[str, Any] = field(default_factory=dict)


def _need(events: EventList, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in events.columns]
    if missing:
        src = str(events.path) if events.path else "events"
        msg = (f"{src}: {what} needs the columns {', '.join(missing)}, which were not read or are not in the file; "
               "read the events with them, or supply a CIAO exposure map (read_exposure_map)")
        raise InputError(msg)


def _frame_origin(events: EventList, gtis: Mapping[int, np.ndarray]) -> float:
    starts = [g[0, 0] for g in gtis.values() if len(g)]
    if starts:
        return float(min(starts))
    return float(events.header.get("TSTART", np.min(events["time"])))


def _spline_normal(k: np.ndarray, w: np.ndarray, nknots: int, smooth: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Banded normal matrix (upper form for ``solveh_banded``) of a linear spline plus a curvature penalty."""
    a = 1.0 - w
    diag: np.ndarray = (np.bincount(k, weights=a * a, minlength=nknots)
                        + np.bincount(k + 1, weights=w * w, minlength=nknots)).astype(np.float64)
    off1: np.ndarray = np.bincount(k, weights=a * w, minlength=nknots)[: nknots - 1].astype(np.float64)
    off2 = np.zeros(max(nknots - 2, 0))
    if nknots >= 3 and smooth > 0:
        # smooth × Σ (δ[j-1] − 2 δ[j] + δ[j+1])²
        d = np.zeros(nknots)
        d[:-2] += 1.0
        d[1:-1] += 4.0
        d[2:] += 1.0
        diag = diag + smooth * d
        o1 = np.zeros(nknots - 1)
        o1[:-1] += -2.0
        o1[1:] += -2.0
        off1 = off1 + smooth * o1
        off2 = off2 + smooth
    diag = diag + 1e-9 * max(float(diag.max()), 1.0)
    ab = np.zeros((3, nknots))
    ab[2] = diag
    ab[1, 1:] = off1
    if nknots >= 3:
        ab[0, 2:] = off2
    return ab, a, w


def fit_chip_geometry(events: EventList, *, min_events_per_knot: int = 20, max_frames_per_knot: int = 16,
                      smooth: float = 1.0, n_iter: int = 30) -> ChipGeometry:
    """Fit the per-CCD chip→sky affine maps and the common dither/aspect offset track.

    The track ``δ(t)`` is a linear spline with knots every few frames (so that
    a knot interval holds about ``min_events_per_knot`` events, at most
    ``max_frames_per_knot`` frames), fitted by least squares with a small
    curvature penalty ``smooth · Σ (Δ²δ)²`` that carries it across sparse
    stretches. The affine maps and the track are solved alternately.

    Parameters
    ----------
    events : EventList
        Events with ``time ccd_id chipx chipy x y`` (all grades and energies
        may be used: more events, a better track).
    min_events_per_knot : int
        Knots are placed so that each interval holds about this many events on average.
    max_frames_per_knot : int
        Upper limit of the knot spacing, in frames.
    smooth : float
        Weight of the curvature penalty, in units of one event's squared residual.
    n_iter : int
        Alternating least-squares iterations (stops earlier when converged).

    Returns
    -------
    ChipGeometry
    """
    from scipy.linalg import solveh_banded

    _need(events, ("time", "ccd_id", "chipx", "chipy", "x", "y"), "an exposure map from the events")
    src = str(events.path) if events.path else "events"
    n = len(events)
    if n < 100:
        msg = f"{src}: only {n} events; too few to find the chip footprints (need ≥ 100); supply an exposure map"
        raise InputError(msg)
    # events grouped by CCD once, so each CCD is a contiguous slice (no fancy indexing in the loop)
    ccd = np.asarray(events["ccd_id"]).astype(np.int64)
    order = np.argsort(ccd, kind="stable")
    ccd = ccd[order]
    t = np.asarray(events["time"], dtype=np.float64)[order]
    u = np.asarray(events["chipx"], dtype=np.float64)[order]
    v = np.asarray(events["chipy"], dtype=np.float64)[order]
    x = np.asarray(events["x"], dtype=np.float64)[order]
    y = np.asarray(events["y"], dtype=np.float64)[order]
    timedel = float(events.header.get("TIMEDEL", 3.24104))
    t0 = float(t.min())
    span = float(t.max()) - t0
    nframes = int(np.floor(span / timedel + 1e-6)) + 1
    per_frame = n / nframes
    fpk = int(np.clip(np.ceil(min_events_per_knot / max(per_frame, 1e-9)), 1, max_frames_per_knot))
    h = fpk * timedel
    nknots = int(np.floor(span / h)) + 2
    pos = (t - t0) / h
    k = np.minimum(np.floor(pos).astype(np.int64), nknots - 2)
    w = pos - k
    ab, wa, wb = _spline_normal(k, w, nknots, smooth)
    values, starts, sizes = np.unique(ccd, return_index=True, return_counts=True)
    ccds = tuple(int(c) for c in values)
    sel = {int(c): slice(int(a), int(a + m)) for c, a, m in zip(values, starts, sizes, strict=True)}
    for c, m in zip(ccds, sizes, strict=True):
        if m < 20:
            msg = f"{src}: CCD {c} has only {m} events; cannot fit its footprint (drop it with ccds=)"
            raise InputError(msg)
    dx = np.zeros(nknots)
    dy = np.zeros(nknots)
    linear: dict[int, np.ndarray] = {}
    offset: dict[int, np.ndarray] = {}
    rx = np.zeros(n)
    ry = np.zeros(n)
    # per CCD the design matrix [chipx, chipy, 1] and its normal-equation inverse, computed once
    design = {}
    for c, idx in sel.items():
        a = np.column_stack([u[idx], v[idx], np.ones(idx.stop - idx.start)])
        design[c] = (a, np.linalg.inv(a.T @ a))

    def at_events(d: np.ndarray) -> np.ndarray:
        return np.asarray(wa * d[k] + wb * d[k + 1])

    ex, ey = at_events(dx), at_events(dy)
    for _ in range(n_iter):
        for c, idx in sel.items():
            a, inv = design[c]
            px = inv @ (a.T @ (x[idx] - ex[idx]))
            py = inv @ (a.T @ (y[idx] - ey[idx]))
            linear[c] = np.array([[px[0], px[1]], [py[0], py[1]]])
            offset[c] = np.array([px[2], py[2]])
            rx[idx] = x[idx] - a @ px
            ry[idx] = y[idx] - a @ py
        new = []
        for r in (rx, ry):
            rhs = np.bincount(k, weights=wa * r, minlength=nknots) + np.bincount(k + 1, weights=wb * r,
                                                                                   minlength=nknots)
            new.append(solveh_banded(ab, rhs))
        ndx, ndy = new
        nex, ney = at_events(ndx), at_events(ndy)
        mx, my = float(nex.mean()), float(ney.mean())
        ndx, ndy, nex, ney = ndx - mx, ndy - my, nex - mx, ney - my
        change = float(max(np.max(np.abs(ndx - dx)), np.max(np.abs(ndy - dy))))
        dx, dy, ex, ey = ndx, ndy, nex, ney
        if change < 1e-3:
            break
    resid2 = (rx - ex) ** 2 + (ry - ey) ** 2
    rms = float(np.sqrt(np.mean(resid2) / 2.0))
    knots_t = t0 + h * np.arange(nknots)
    return ChipGeometry(ccds=ccds, linear=linear, offset=offset, track_time=knots_t,
                        track=np.column_stack([dx, dy]), rms_pix=rms, frames_per_block=fpk)


@njit(cache=True)
def _cumulative_lookup(f: np.ndarray, g0x: float, g0y: float, step: float, a: float, b: float) -> float:
    nx, ny = f.shape
    fa = (a - g0x) / step
    fb = (b - g0y) / step
    if fa <= 0.0 or fb <= 0.0:
        return 0.0
    if fa >= nx - 1:
        fa = nx - 1.000001
    if fb >= ny - 1:
        fb = ny - 1.000001
    ia = int(fa)
    ib = int(fb)
    wa = fa - ia
    wb = fb - ib
    value: float = ((1.0 - wa) * (1.0 - wb) * f[ia, ib] + wa * (1.0 - wb) * f[ia + 1, ib]
                    + (1.0 - wa) * wb * f[ia, ib + 1] + wa * wb * f[ia + 1, ib + 1])
    return value


@njit(cache=True, parallel=True)
def _coverage_kernel(ny: int, nx: int, nsub: int, grid_to_sky: np.ndarray, sky_to_chip: np.ndarray,
                     f: np.ndarray, g0x: float, g0y: float, step: float, lo: float, hi: float) -> np.ndarray:
    """Live time per map pixel for one CCD.

    ``grid_to_sky`` (2×3) maps continuous 0-based map coordinates to sky
    pixels; ``sky_to_chip`` (2×3) maps sky pixels to chip pixels at zero
    offset; ``f`` is the cumulative live-time table of chip-frame offsets.
    """
    out = np.zeros((ny, nx))
    gx0 = g0x + step * (f.shape[0] - 1)
    gy0 = g0y + step * (f.shape[1] - 1)
    for j in prange(ny):
        for i in range(nx):
            acc = 0.0
            for b in range(nsub):
                gy = j + (b + 0.5) / nsub
                for a in range(nsub):
                    gx = i + (a + 0.5) / nsub
                    sx = grid_to_sky[0, 0] * gx + grid_to_sky[0, 1] * gy + grid_to_sky[0, 2]
                    sy = grid_to_sky[1, 0] * gx + grid_to_sky[1, 1] * gy + grid_to_sky[1, 2]
                    cx = sky_to_chip[0, 0] * sx + sky_to_chip[0, 1] * sy + sky_to_chip[0, 2]
                    cy = sky_to_chip[1, 0] * sx + sky_to_chip[1, 1] * sy + sky_to_chip[1, 2]
                    # offsets e with cx - hi <= e <= cx - lo (and y) keep the point on the chip
                    ax1 = cx - lo
                    ay1 = cy - lo
                    ax0 = cx - hi
                    ay0 = cy - hi
                    if ax1 <= g0x or ay1 <= g0y or ax0 >= gx0 or ay0 >= gy0:
                        continue
                    acc += (_cumulative_lookup(f, g0x, g0y, step, ax1, ay1)
                            - _cumulative_lookup(f, g0x, g0y, step, ax0, ay1)
                            - _cumulative_lookup(f, g0x, g0y, step, ax1, ay0)
                            + _cumulative_lookup(f, g0x, g0y, step, ax0, ay0))
            out[j, i] = acc / (nsub * nsub)
    return out


def _other_plane(header: fits.Header, wcs: WCS) -> bool:
    """Tell whether the grid's physical pixels are not the events' own sky pixels (a merged frame)."""
    if "CRVAL1" not in header or "CRVAL2" not in header:
        return False
    same = (np.allclose([header["CRVAL1"], header["CRVAL2"]], wcs.wcs.crval, rtol=0, atol=1e-10)
            and str(header.get("CTYPE1", "")).strip() == str(wcs.wcs.ctype[0]).strip())
    return not same


def _frame_weights(t0: float, nframes: int, timedel: float, gti: np.ndarray, dtcor: float) -> np.ndarray:
    lo = t0 + timedel * np.arange(nframes)
    hi = lo + timedel
    w = np.zeros(nframes)
    for s, e in gti:
        w += np.clip(np.minimum(hi, e) - np.maximum(lo, s), 0.0, None)
    return w * dtcor


def _grid_affine(header: fits.Header, shape: tuple[int, int], wcs_events: WCS | None) -> tuple[np.ndarray, float]:
    """2×3 map from 0-based continuous grid coordinates to the events' sky pixels, and its max error (pixels)."""
    ltm1, ltm2 = float(header.get("LTM1_1", 1.0)), float(header.get("LTM2_2", 1.0))
    ltv1, ltv2 = float(header.get("LTV1", 0.0)), float(header.get("LTV2", 0.0))
    # grid coordinate g (0-based, pixel i spans [i, i+1)) is FITS image pixel g + 0.5;
    # physical = (image − LTV) / LTM
    direct = np.array([[1.0 / ltm1, 0.0, (0.5 - ltv1) / ltm1], [0.0, 1.0 / ltm2, (0.5 - ltv2) / ltm2]])
    if wcs_events is None:
        return direct, 0.0
    # the grid lives on another tangent plane: go through the sky and fit an affine map
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx, 9), np.linspace(0, ny, 9))
    px = direct[0, 0] * gx + direct[0, 2]
    py = direct[1, 1] * gy + direct[1, 2]
    from xmine.images import celestial_wcs

    grid_wcs = celestial_wcs(header, source="exposure grid")
    img_x = ltm1 * px + ltv1
    img_y = ltm2 * py + ltv2
    ra, dec = grid_wcs.all_pix2world(img_x.ravel(), img_y.ravel(), 1)
    ex, ey = wcs_events.all_world2pix(ra, dec, 1)
    a = np.column_stack([gx.ravel(), gy.ravel(), np.ones(gx.size)])
    cx, *_ = np.linalg.lstsq(a, ex, rcond=None)
    cy, *_ = np.linalg.lstsq(a, ey, rcond=None)
    err = float(np.max(np.hypot(a @ cx - ex, a @ cy - ey)))
    return np.vstack([cx, cy]), err


def make_exposure_map(events: EventList, header: fits.Header, shape: tuple[int, int], *,
                      geometry: ChipGeometry | None = None, gti: np.ndarray | Mapping[int, np.ndarray] | None = None,
                      oversample: int = 2, vignetting: bool = False, vignetting_slope_per_arcmin: float = 0.023,
                      vignetting_floor: float = 0.3, effective_area_cm2: float | None = None,
                      ccds: Sequence[int] | None = None) -> ExposureMap:
    """Make the exposure map of one observation on the grid of an image header.

    Parameters
    ----------
    events : EventList
        The observation's events with ``time ccd_id chipx chipy x y`` (read
        with ``columns=None`` or these columns); their GTIs (per CCD) give the
        live time. Unfiltered events give the best offset track.
    header : astropy.io.fits.Header
        The counts image's header (from :func:`xmine.images.make_counts_image`
        or a merged grid): its ``LTM``/``LTV`` physical keywords place the map;
        when the grid is on another tangent plane (a merged frame, different
        ``CRVAL``), its sky WCS is used to map it onto the events' sky pixels.
    shape : (int, int)
        (ny, nx) of the image.
    geometry : ChipGeometry, optional
        A fit to reuse (see :func:`fit_chip_geometry`).
    gti : numpy.ndarray or dict, optional
        Clean GTIs (e.g. from :func:`xmine.gti.deflare`), intersected with each CCD's own.
    oversample : int
        Sub-positions per axis averaged in each pixel.
    vignetting : bool
        Multiply by the linear vignetting model (an approximation; see the module docstring).
    vignetting_slope_per_arcmin, vignetting_floor : float
        The model ``max(1 − slope θ, floor)``.
    effective_area_cm2 : float, optional
        Multiply by this (e.g. :func:`arf_mean_area`): the map is then in cm² s.
    ccds : sequence of int, optional
        CCDs to include (default: all with events).

    Returns
    -------
    ExposureMap
    """
    geo = geometry if geometry is not None else fit_chip_geometry(events)
    src = str(events.path) if events.path else "events"
    ny, nx = shape
    timedel = float(events.header.get("TIMEDEL", 3.24104))
    dtcor = dead_time_correction(events.header)
    own = events.gti or {-1: np.array([[float(events.header["TSTART"]), float(events.header["TSTOP"])]])}
    t0 = _frame_origin(events, own)
    t_end = max(float(g[-1, 1]) for g in own.values() if len(g))
    nframes = int(np.ceil((t_end - t0) / timedel - 1e-9))
    frame_t = t0 + (np.arange(nframes) + 0.5) * timedel
    dx, dy = geo.offsets_at(frame_t)
    foreign = _other_plane(header, events.wcs)
    grid_to_sky, affine_err = _grid_affine(header, shape, events.wcs if foreign else None)
    use = [c for c in geo.ccds if ccds is None or c in ccds]
    total = np.zeros((ny, nx))
    for c in use:
        g = own.get(c, own.get(-1))
        if g is None or len(g) == 0:
            continue
        if gti is not None:
            clean = gti.get(c, gti.get(-1)) if isinstance(gti, Mapping) else gti
            g = intersect_gti(g, clean) if clean is not None else np.zeros((0, 2))
        w = _frame_weights(t0, nframes, timedel, g, dtcor)
        if not np.any(w > 0):
            continue
        L = geo.linear[c]
        Linv = np.linalg.inv(L)
        ex = Linv[0, 0] * dx + Linv[0, 1] * dy
        ey = Linv[1, 0] * dx + Linv[1, 1] * dy
        good = w > 0
        g0x = float(np.floor(ex[good].min() / _GRID_STEP) * _GRID_STEP - 1.0)
        g0y = float(np.floor(ey[good].min() / _GRID_STEP) * _GRID_STEP - 1.0)
        nxe = int(np.ceil((ex[good].max() + 1.0 - g0x) / _GRID_STEP)) + 2
        nye = int(np.ceil((ey[good].max() + 1.0 - g0y) / _GRID_STEP)) + 2
        edges_x = g0x + _GRID_STEP * np.arange(nxe + 1)
        edges_y = g0y + _GRID_STEP * np.arange(nye + 1)
        hist, _, _ = np.histogram2d(ex[good], ey[good], bins=[edges_x, edges_y], weights=w[good])
        f = np.zeros((nxe + 1, nye + 1))
        f[1:, 1:] = np.cumsum(np.cumsum(hist, axis=0), axis=1)
        s2c = np.zeros((2, 3))
        s2c[:, :2] = Linv
        s2c[:, 2] = -Linv @ geo.offset[c]
        total += _coverage_kernel(ny, nx, int(oversample), grid_to_sky, s2c, f, g0x, g0y, _GRID_STEP,
                                  CHIP_LO, CHIP_HI)
    if vignetting:
        total *= _vignetting_grid(events, grid_to_sky, shape, vignetting_slope_per_arcmin, vignetting_floor)
    unit = "s"
    if effective_area_cm2 is not None:
        total *= float(effective_area_cm2)
        unit = "cm**2 s"
    out_header = header.copy()
    for key in ("BUNIT", "HDUCLAS1", "HDUCLAS2"):
        out_header.remove(key, ignore_missing=True)
    out_header["BUNIT"] = (unit, "live time" if unit == "s" else "effective area x live time")
    out_header["HDUCLAS1"] = "EXPOSURE"
    out_header["EXPMETH"] = ("xmine-events", "chip footprints and dither fitted from the events")
    out_header["VIGNET"] = (bool(vignetting), "linear vignetting model applied")
    out_header["GEORMS"] = (geo.rms_pix, "[pixel] rms of the chip->sky fit")
    if foreign:
        out_header["GRIDERR"] = (affine_err, "[pixel] max error of the affine grid->sky map")
    meta = {"obsid": str(events.header.get("OBS_ID", "")).strip(), "ccds": use, "fit_rms_pix": geo.rms_pix,
            "frames_per_block": geo.frames_per_block, "vignetting": vignetting, "source": src,
            "grid_affine_error_pix": affine_err}
    return ExposureMap(data=total.astype(np.float32), header=out_header, unit=unit, meta=meta)


def _vignetting_grid(events: EventList, grid_to_sky: np.ndarray, shape: tuple[int, int], slope: float,
                     floor: float) -> np.ndarray:
    h = events.header
    ny, nx = shape
    gx, gy = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5)
    sx = grid_to_sky[0, 0] * gx + grid_to_sky[0, 1] * gy + grid_to_sky[0, 2]
    sy = grid_to_sky[1, 0] * gx + grid_to_sky[1, 1] * gy + grid_to_sky[1, 2]
    ra0 = h.get("RA_NOM", h.get("RA_PNT"))
    dec0 = h.get("DEC_NOM", h.get("DEC_PNT"))
    if ra0 is None or dec0 is None:
        ox, oy = events.wcs.wcs.crpix
    else:
        ox, oy = events.wcs.all_world2pix([[float(ra0), float(dec0)]], 1)[0]
    pix_arcmin = abs(float(events.wcs.wcs.cdelt[0])) * 60.0
    theta = np.hypot(sx - ox, sy - oy) * pix_arcmin
    return np.asarray(np.clip(1.0 - slope * theta, floor, 1.0))


def coverage_reference(events: EventList, geometry: ChipGeometry, ccd: int, sky_x: np.ndarray, sky_y: np.ndarray,
                       *, gti: np.ndarray | None = None) -> np.ndarray:
    """Live time at sky points for one CCD by a direct frame-by-frame sum (numpy; slow, for tests).

    The reference for the numba kernel: for every frame, map the points to
    the chip with the frame's offset and add the frame's live time where
    they fall on ``[0.5, 1024.5]²``.
    """
    timedel = float(events.header.get("TIMEDEL", 3.24104))
    dtcor = dead_time_correction(events.header)
    own = events.gti or {-1: np.array([[float(events.header["TSTART"]), float(events.header["TSTOP"])]])}
    g = own.get(ccd, own.get(-1))
    if g is None:
        return np.zeros(np.shape(sky_x))
    if gti is not None:
        g = intersect_gti(g, gti)
    t0 = _frame_origin(events, own)
    t_end = max(float(v[-1, 1]) for v in own.values() if len(v))
    nframes = int(np.ceil((t_end - t0) / timedel - 1e-9))
    w = _frame_weights(t0, nframes, timedel, g, dtcor)
    frame_t = t0 + (np.arange(nframes) + 0.5) * timedel
    dx, dy = geometry.offsets_at(frame_t)
    Linv = np.linalg.inv(geometry.linear[ccd])
    c = geometry.offset[ccd]
    out = np.zeros(np.shape(sky_x))
    for k in np.nonzero(w > 0)[0]:
        px = sky_x - c[0] - dx[k]
        py = sky_y - c[1] - dy[k]
        u = Linv[0, 0] * px + Linv[0, 1] * py
        v = Linv[1, 0] * px + Linv[1, 1] * py
        out += w[k] * ((u >= CHIP_LO) & (u <= CHIP_HI) & (v >= CHIP_LO) & (v <= CHIP_HI))
    return out


def arf_mean_area(arf_path: str | os.PathLike[str], *, emin_kev: float = 0.5, emax_kev: float = 7.0,
                  weights: Any = None) -> float:
    """Return the mean effective area (cm²) of an ARF over a band, optionally spectrum weighted.

    Parameters
    ----------
    arf_path : path-like
        ARF with ``ENERG_LO ENERG_HI`` (keV) and ``SPECRESP`` (cm²).
    emin_kev, emax_kev : float
        The band.
    weights : callable, optional
        Photon spectrum ``w(E_keV)`` to weight with (default flat in photons).

    Returns
    -------
    float
        ``Σ A(E) w(E) dE / Σ w(E) dE`` over the band, cm².
    """
    p = Path(arf_path)
    try:
        with fits.open(p) as hdul:
            hdu = next(h for h in hdul[1:] if "SPECRESP" in getattr(h, "columns", fits.ColDefs([])).names)
            lo, hi, area = (np.asarray(hdu.data[c], dtype=float) for c in ("ENERG_LO", "ENERG_HI", "SPECRESP"))
    except (OSError, StopIteration, KeyError) as exc:
        msg = f"{p}: not an ARF with ENERG_LO, ENERG_HI, SPECRESP ({exc}); pass the .arf of this observation"
        raise InputError(msg) from exc
    mid = 0.5 * (lo + hi)
    width = np.clip(np.minimum(hi, emax_kev) - np.maximum(lo, emin_kev), 0.0, None)
    w = width * (np.asarray(weights(mid), dtype=float) if weights is not None else 1.0)
    if w.sum() <= 0:
        msg = f"{p}: the band {emin_kev}-{emax_kev} keV lies outside the ARF's {lo.min()}-{hi.max()} keV"
        raise InputError(msg)
    return float(np.sum(area * w) / np.sum(w))


def read_exposure_map(path: str | os.PathLike[str]) -> ExposureMap:
    """Load a user-supplied exposure map (e.g. CIAO ``fluximage``, cm² s) to be used as it is.

    The unit comes from ``BUNIT`` (CIAO writes ``cm**2 s`` or ``cm^2 s``;
    none means seconds is *not* assumed: it is recorded as ``"unknown"``).
    """
    p = Path(path)
    try:
        with fits.open(p) as hdul:
            hdu = next(h for h in hdul if getattr(h, "data", None) is not None and h.data.ndim == 2)
            data = np.asarray(hdu.data, dtype=np.float32)
            header = hdu.header.copy()
    except (OSError, StopIteration, TypeError) as exc:
        msg = f"{p}: no 2-D image in this file ({exc}); pass the exposure map FITS image"
        raise InputError(msg) from exc
    unit = str(header.get("BUNIT", "unknown")).strip() or "unknown"
    return ExposureMap(data=data, header=header, unit=unit, meta={"source": str(p), "method": "user"})


def write_exposure_map(path: str | os.PathLike[str], emap: ExposureMap) -> Path:
    """Write an exposure map as a FITS image (atomically)."""
    target = Path(path)
    with atomic_write(target) as tmp:
        fits.PrimaryHDU(emap.data, header=emap.header).writeto(tmp)
    return target


def rate_image(counts: np.ndarray, exposure: ExposureMap, *, min_exposure_frac: float = 0.1,
               header: fits.Header | None = None) -> tuple[np.ndarray, fits.Header]:
    """Divide a counts image by an exposure map, naming the result honestly.

    ``s`` maps give a **count rate** (``BUNIT = 'count/s'`` per pixel); ``cm**2 s``
    maps give a **photon flux** (``photon/cm**2/s``); any other unit is
    written as ``count/(<unit>)``. Pixels with exposure below
    ``min_exposure_frac`` of the maximum are set to 0.

    Returns
    -------
    image : numpy.ndarray of float32
    header : astropy.io.fits.Header
    """
    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(exposure.data, dtype=np.float64)
    if c.shape != e.shape:
        msg = f"counts image {c.shape} and exposure map {e.shape} differ in shape; make them on one grid"
        raise InputError(msg)
    good = e > min_exposure_frac * float(e.max()) if e.size and e.max() > 0 else np.zeros(e.shape, bool)
    out = np.zeros_like(c)
    out[good] = c[good] / e[good]
    h = (header if header is not None else exposure.header).copy()
    unit = exposure.unit.replace("^", "**").strip()
    if unit == "s":
        h["BUNIT"] = ("count/s", "count rate per pixel (no effective area)")
    elif unit.replace(" ", "") in ("cm**2s", "scm**2"):
        h["BUNIT"] = ("photon/cm**2/s", "photon flux per pixel")
    else:
        h["BUNIT"] = (f"count/({unit})", "counts per exposure-map unit")
    return out.astype(np.float32), h
