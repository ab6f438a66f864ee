"""Light curves, flare cleaning (as CIAO's ``deflare``) and good-time intervals.

A light curve is binned from the events of source-free regions (the cluster
and point sources masked, see :func:`source_free`) in bins that are a whole
number of frames, ``bin_frames × TIMEDEL`` (80 × 3.24104 s = 259.28 s by
default), aligned on the start of the good time. Each bin's exposure is its
overlap with the per-CCD GTIs (weighted by the share of the light curve's
events on each CCD) times the dead-time correction ``DTCOR``.

Flare cleaning, ``method="clean"`` (CIAO ``deflare method=clean`` /
``lc_clean``, after M. Markevitch's ACIS blank-sky procedure):

1. bins with zero rate or zero exposure take no part in the statistics;
2. a quiescent mean rate is found by clipping bins farther than ``clip`` (3)
   Poisson standard deviations, ``sqrt(mean / exposure)``, from the mean;
3. bins with ``mean / scale < rate < mean × scale`` (``scale`` = 1.2) are
   good; with ``sigma`` given, ``mean ± sigma · sqrt(mean / bin width)``
   instead;
4. fewer than ``minfrac`` (10 %) good bins among the non-zero ones is an error;
5. the GTIs are the good bins' time ranges, intersected with each CCD's own GTIs.

Where xmine differs from lc_clean, and why:

* step 2 starts from the **median** rate and **iterates** the clip to
  convergence; lc_clean clips once around the plain mean, which a strong
  flare drags so high that the quiescent bins fall outside the first window
  (lc_clean then needs ``mean=`` from the user). Without flares both give the
  same mean;
* the mean is the exposure-weighted ``Σ counts / Σ exposure`` and each bin's σ
  uses its own exposure (lc_clean: the plain mean of the rates and the
  longest bin's width), so partial bins at GTI edges are not over-clipped;
* the GTIs are written directly from the bin edges (lc_clean runs ``dmgti``
  with a rate ``userlimit``, which gives the same bin edges).

``method="sigma"`` is CIAO's ``lc_sigma_clip``: iterative clipping at
``mean ± nsigma × std`` of the good bins' rates, then good runs shorter than
``minlength`` bins are dropped.

Each contiguous run of clipped bins is also reported as a :class:`Flare`
whose half-maximum times (where the excess over the quiescent rate first
and last reaches half its peak) describe the flare itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from xmine.errors import InputError
from xmine.events import EventList
from xmine.store import atomic_write

__all__ = [
    "DEFAULT_BIN_FRAMES",
    "DeflareResult",
    "Flare",
    "LightCurve",
    "apply_gti",
    "dead_time_correction",
    "deflare",
    "gti_exposure_s",
    "gti_hdu",
    "intersect_gti",
    "make_light_curve",
    "plot_light_curve",
    "source_free",
    "time_mask",
    "write_gti",
    "write_light_curve",
]

#: Frames per light-curve bin: 80 × 3.24104 s = 259.28 s for the standard ACIS frame.
DEFAULT_BIN_FRAMES = 80


@dataclass
class LightCurve:
    """A binned light curve.

    Attributes
    ----------
    time_min, time_max : numpy.ndarray
        Bin edges (s, MET).
    counts : numpy.ndarray
        Events per bin.
    exposure_s : numpy.ndarray
        Live time per bin (s): GTI overlap × DTCOR.
    bin_s : float
        Nominal bin width (s), ``bin_frames × TIMEDEL``.
    timedel_s : float or None
        Frame time the bins are a multiple of.
    meta : dict
        OBS_ID, band, number of events, CCDs.
    """

    time_min: np.ndarray
    time_max: np.ndarray
    counts: np.ndarray
    exposure_s: np.ndarray
    bin_s: float
    timedel_s: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> np.ndarray:
        """Bin centres (s)."""
        return np.asarray(0.5 * (self.time_min + self.time_max))

    @property
    def rate(self) -> np.ndarray:
        """Count rate (counts s⁻¹), 0 where a bin has no exposure."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.exposure_s > 0, self.counts / np.where(self.exposure_s > 0, self.exposure_s, 1), 0.0)

    @property
    def rate_err(self) -> np.ndarray:
        """Poisson error of the rate, ``sqrt(max(counts, 1)) / exposure``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.exposure_s > 0, np.sqrt(np.maximum(self.counts, 1))
                            / np.where(self.exposure_s > 0, self.exposure_s, 1), 0.0)

    def __len__(self) -> int:
        return int(self.counts.size)


@dataclass
class Flare:
    """One contiguous run of clipped bins.

    Attributes
    ----------
    t_start, t_stop : float
        Edges of the clipped run (s).
    t_half_start, t_half_stop : float
        First and last bin centre where the excess over the quiescent rate
        reaches half of its peak (linearly interpolated), i.e. the flare at
        half maximum; NaN for a run of low-rate bins.
    peak_rate : float
        Highest rate in the run (counts s⁻¹).
    """

    t_start: float
    t_stop: float
    t_half_start: float
    t_half_stop: float
    peak_rate: float


@dataclass
class DeflareResult:
    """What :func:`deflare` found.

    Attributes
    ----------
    light_curve : LightCurve
    good : numpy.ndarray of bool
        Per bin: inside the rate limits.
    mean_rate, min_rate, max_rate : float
        Quiescent rate and the limits (counts s⁻¹).
    gti : numpy.ndarray
        ``(n, 2)`` START, STOP of the good bins (merged), before intersection with CCD GTIs.
    method : str
        ``"clean"`` or ``"sigma"``.
    params : dict
        The parameters used.
    flares : list of Flare
        The clipped runs.
    """

    light_curve: LightCurve
    good: np.ndarray
    mean_rate: float
    min_rate: float
    max_rate: float
    gti: np.ndarray
    method: str
    params: dict[str, Any]
    flares: list[Flare] = field(default_factory=list)

    @property
    def good_exposure_s(self) -> float:
        """Live time of the good bins (s)."""
        return float(self.light_curve.exposure_s[self.good].sum())

    @property
    def lost_exposure_s(self) -> float:
        """Live time of the clipped bins (s)."""
        return float(self.light_curve.exposure_s[~self.good].sum())

    @property
    def chance_clip_fraction(self) -> float:
        """Share of bins a steady source at ``mean_rate`` would lose to Poisson noise alone with these limits.

        lc_clean's ±20 % (``scale`` 1.2) is several σ for bright light curves
        but only ≈ 2σ at ~70 counts per bin, where ~10 % of quiescent bins are
        clipped by chance: use ``sigma=3`` or longer bins then.
        """
        from scipy import stats

        lc = self.light_curve
        ok = lc.exposure_s > 0
        mu = self.mean_rate * lc.exposure_s[ok]
        low = stats.poisson.cdf(np.ceil(self.min_rate * lc.exposure_s[ok]) - 1, mu)
        high = stats.poisson.sf(np.floor(self.max_rate * lc.exposure_s[ok]), mu)
        return float(np.mean(np.clip(low + high, 0.0, 1.0))) if ok.any() else 0.0


# ---------------------------------------------------------------- GTI arithmetic


def _as_gti(g: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    a = np.asarray(g, dtype=np.float64).reshape(-1, 2)
    a = a[a[:, 1] > a[:, 0]]
    return a[np.argsort(a[:, 0], kind="stable")]


def _merge(g: np.ndarray) -> np.ndarray:
    a = _as_gti(g)
    if len(a) == 0:
        return a
    out = [list(a[0])]
    for s, e in a[1:]:
        if s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return np.asarray(out, dtype=np.float64)


def intersect_gti(a: np.ndarray | Sequence[Sequence[float]], b: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Return the intersection of two GTI lists (``(n, 2)`` START, STOP), merged and sorted."""
    x, y = _merge(np.asarray(a)), _merge(np.asarray(b))
    out = []
    i = j = 0
    while i < len(x) and j < len(y):
        s, e = max(x[i, 0], y[j, 0]), min(x[i, 1], y[j, 1])
        if e > s:
            out.append((s, e))
        if x[i, 1] < y[j, 1]:
            i += 1
        else:
            j += 1
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def time_mask(time_s: np.ndarray, gti: np.ndarray) -> np.ndarray:
    """Return ``START <= t < STOP`` for any GTI row (GTIs merged first)."""
    g = _merge(gti)
    if len(g) == 0:
        return np.zeros(np.shape(time_s), dtype=bool)
    k = np.searchsorted(g[:, 0], time_s, side="right") - 1
    ok = k >= 0
    kk = np.clip(k, 0, len(g) - 1)
    return np.asarray(ok & (time_s < g[kk, 1]))


def _overlap(edges_lo: np.ndarray, edges_hi: np.ndarray, gti: np.ndarray) -> np.ndarray:
    """Seconds of each bin [lo, hi) inside the GTIs."""
    g = _merge(gti)
    out = np.zeros(edges_lo.size)
    for s, e in g:
        out += np.clip(np.minimum(edges_hi, e) - np.maximum(edges_lo, s), 0.0, None)
    return out


def dead_time_correction(header: fits.Header) -> float:
    """``DTCOR``, else ``LIVETIME / ONTIME``, else 1."""
    if "DTCOR" in header:
        return float(header["DTCOR"])
    if header.get("ONTIME") and header.get("LIVETIME"):
        return float(header["LIVETIME"]) / float(header["ONTIME"])
    return 1.0


def _event_gtis(events: EventList) -> dict[int, np.ndarray]:
    if events.gti:
        return {int(k): _merge(v) for k, v in events.gti.items()}
    h = events.header
    if "TSTART" in h and "TSTOP" in h:
        return {-1: np.array([[float(h["TSTART"]), float(h["TSTOP"])]])}
    t = events["time"]
    return {-1: np.array([[float(t.min()), float(t.max())]])} if len(t) else {-1: np.zeros((0, 2))}


def _gti_for_ccd(gtis: Mapping[int, np.ndarray], ccd: int) -> np.ndarray:
    if ccd in gtis:
        return gtis[ccd]
    if -1 in gtis:
        return gtis[-1]
    return np.zeros((0, 2))


def gti_exposure_s(gti: np.ndarray, *, dtcor: float = 1.0) -> float:
    """Live time of a GTI list (s): ``Σ (STOP − START) × DTCOR``."""
    g = _merge(gti)
    return float(np.sum(g[:, 1] - g[:, 0]) * dtcor)


# ---------------------------------------------------------------- source-free events


def source_free(events: EventList, *, mask: np.ndarray | None = None, mask_header: fits.Header | None = None,
                circles: Sequence[tuple[float, float, float]] = ()) -> np.ndarray:
    """Return True for events outside the masked sources (for a background light curve).

    Parameters
    ----------
    events : EventList
    mask : numpy.ndarray of bool, optional
        Image, True where a source (cluster, point source) is; events off the
        image are kept.
    mask_header : astropy.io.fits.Header, optional
        The mask's header; its ``LTM1_1``/``LTV1`` … physical keywords map sky
        x/y to image pixels (without them the mask must be in sky pixels).
    circles : sequence of (x, y, r)
        Extra circles to exclude, in sky pixels.

    Returns
    -------
    numpy.ndarray of bool
    """
    x = np.asarray(events["x"], dtype=np.float64)
    y = np.asarray(events["y"], dtype=np.float64)
    keep = np.ones(x.size, dtype=bool)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        h = mask_header if mask_header is not None else fits.Header()
        ix = np.floor(float(h.get("LTM1_1", 1.0)) * x + float(h.get("LTV1", 0.0)) - 0.5).astype(np.int64)
        iy = np.floor(float(h.get("LTM2_2", 1.0)) * y + float(h.get("LTV2", 0.0)) - 0.5).astype(np.int64)
        on = (ix >= 0) & (iy >= 0) & (ix < m.shape[1]) & (iy < m.shape[0])
        hit = np.zeros(x.size, dtype=bool)
        hit[on] = m[iy[on], ix[on]]
        keep &= ~hit
    for cx, cy, r in circles:
        keep &= (x - cx) ** 2 + (y - cy) ** 2 > r * r
    return keep


# ---------------------------------------------------------------- light curve


def make_light_curve(events: EventList, *, keep: np.ndarray | None = None, bin_frames: int = DEFAULT_BIN_FRAMES,
                     bin_s: float | None = None, gti: np.ndarray | None = None) -> LightCurve:
    """Bin events into a light curve whose bins are a whole number of frames.

    Parameters
    ----------
    events : EventList
        Filtered events (energy band, grades, status); needs ``time`` and,
        for per-CCD exposure, ``ccd_id``.
    keep : numpy.ndarray of bool, optional
        Which events to use, e.g. :func:`source_free`.
    bin_frames : int, optional
        Frames per bin (default 80: 259.28 s for TIMEDEL 3.24104 s).
    bin_s : float, optional
        Bin width in s instead; rounded to a whole number of frames when the
        header has TIMEDEL.
    gti : numpy.ndarray, optional
        Restrict to these intervals (``(n, 2)``), e.g. an earlier cleaning.

    Returns
    -------
    LightCurve
    """
    src = str(events.path) if events.path else "events"
    timedel = float(events.header["TIMEDEL"]) if "TIMEDEL" in events.header else None
    if bin_s is None:
        if timedel is None:
            msg = f"{src}: no TIMEDEL keyword to make frame-multiple light-curve bins; pass bin_s="
            raise InputError(msg)
        if int(bin_frames) < 1:
            msg = f"bin_frames = {bin_frames} must be at least 1"
            raise InputError(msg)
        width = int(bin_frames) * timedel
    else:
        if bin_s <= 0:
            msg = f"bin_s = {bin_s} must be positive"
            raise InputError(msg)
        width = max(1, round(bin_s / timedel)) * timedel if timedel else float(bin_s)
    gtis = _event_gtis(events)
    if gti is not None:
        gtis = {k: intersect_gti(v, gti) for k, v in gtis.items()}
    starts = [g[0, 0] for g in gtis.values() if len(g)]
    stops = [g[-1, 1] for g in gtis.values() if len(g)]
    if not starts:
        msg = f"{src}: the good-time intervals are empty; nothing to make a light curve of"
        raise InputError(msg)
    t0, t1 = min(starts), max(stops)
    nbins = max(1, int(np.ceil((t1 - t0) / width - 1e-9)))
    lo = t0 + width * np.arange(nbins)
    hi = lo + width
    t = np.asarray(events["time"], dtype=np.float64)
    sel = np.ones(t.size, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    ccd = np.asarray(events["ccd_id"]) if "ccd_id" in events.columns else np.full(t.size, -1)
    in_gti = np.zeros(t.size, dtype=bool)
    for c in np.unique(ccd[sel]) if sel.any() else []:
        m = sel & (ccd == c)
        in_gti[m] = time_mask(t[m], _gti_for_ccd(gtis, int(c)))
    use = sel & in_gti
    idx = np.floor((t[use] - t0) / width).astype(np.int64)
    idx = np.clip(idx, 0, nbins - 1)
    counts = np.bincount(idx, minlength=nbins).astype(np.int64)
    # exposure: GTI overlap per CCD, weighted by the CCD's share of the light-curve events
    used_ccds, n_per = np.unique(ccd[use], return_counts=True)
    if used_ccds.size == 0:
        used_ccds = np.array(sorted(gtis))
        n_per = np.ones(used_ccds.size, dtype=np.int64)
    weights = n_per / n_per.sum()
    overlap = np.zeros(nbins)
    for c, w in zip(used_ccds, weights, strict=True):
        overlap += w * _overlap(lo, hi, _gti_for_ccd(gtis, int(c)))
    exposure = overlap * dead_time_correction(events.header)
    meta = {"OBS_ID": str(events.header.get("OBS_ID", "")).strip(), "n_events": int(use.sum()),
            "ccds": [int(c) for c in used_ccds], "selection": dict(events.selection)}
    return LightCurve(time_min=lo, time_max=hi, counts=counts, exposure_s=exposure, bin_s=float(width),
                      timedel_s=timedel, meta=meta)


# ---------------------------------------------------------------- cleaning


def _runs(flag: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of runs of True."""
    d = np.diff(np.concatenate(([0], flag.astype(np.int8), [0])))
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist(), strict=True))


def _quiescent_mean(counts: np.ndarray, exposure: np.ndarray, *, clip: float, max_iter: int) -> float:
    rate = counts / exposure
    mean = float(np.median(rate))
    for _ in range(max_iter):
        sig = np.sqrt(max(mean, 1e-30) / exposure)
        inside = np.abs(rate - mean) < clip * sig
        if not inside.any():
            break
        new = float(counts[inside].sum() / exposure[inside].sum())
        if abs(new - mean) <= 1e-9 * max(abs(mean), 1e-30):
            mean = new
            break
        mean = new
    return mean


def _flares(lc: LightCurve, good: np.ndarray, mean: float) -> list[Flare]:
    rate = lc.rate
    t = lc.time
    out = []
    for i0, i1 in _runs(~good & (lc.exposure_s > 0)):
        seg = rate[i0:i1]
        peak = float(seg.max())
        excess = peak - mean
        if excess <= 0:
            out.append(Flare(float(lc.time_min[i0]), float(lc.time_max[i1 - 1]), np.nan, np.nan, peak))
            continue
        half = mean + 0.5 * excess
        # look one bin outside the run too, for interpolation
        a, b = max(i0 - 1, 0), min(i1 + 1, rate.size)
        r, tt = rate[a:b], t[a:b]
        above = np.nonzero(r >= half)[0]
        k0, k1 = int(above[0]), int(above[-1])
        t_start = float(tt[k0]) if k0 == 0 else float(np.interp(half, [r[k0 - 1], r[k0]], [tt[k0 - 1], tt[k0]]))
        t_stop = (float(tt[k1]) if k1 == r.size - 1
                  else float(np.interp(half, [r[k1 + 1], r[k1]], [tt[k1 + 1], tt[k1]])))
        out.append(Flare(float(lc.time_min[i0]), float(lc.time_max[i1 - 1]), t_start, t_stop, peak))
    return out


def deflare(lc: LightCurve, *, method: str = "clean", clip: float = 3.0, scale: float = 1.2,
            sigma: float | None = None, mean: float | None = None, minfrac: float = 0.1, nsigma: float = 3.0,
            minlength: int = 3, max_iter: int = 50, source: str = "light curve") -> DeflareResult:
    """Find the good time of a light curve, as CIAO's ``deflare`` (see the module docstring).

    Parameters
    ----------
    lc : LightCurve
        From :func:`make_light_curve`.
    method : {"clean", "sigma"}
        ``lc_clean`` (default) or ``lc_sigma_clip``.
    clip : float
        clean: Poisson σ for the quiescent mean (deflare ``nsigma``; default 3).
    scale : float
        clean: good rates lie within ``mean / scale`` and ``mean × scale`` (1.2).
    sigma : float, optional
        clean: use ``mean ± sigma · sqrt(mean / bin width)`` instead of ``scale``.
    mean : float, optional
        clean: a fixed quiescent rate (counts s⁻¹) instead of the clipped mean.
    minfrac : float
        clean: the least fraction of non-zero bins that must be good (0.1).
    nsigma : float
        sigma: clipping level in standard deviations of the rates (3).
    minlength : int
        sigma: good runs shorter than this many bins are dropped (3).
    max_iter : int
        Iteration limit of the clipping loops.
    source : str
        Name used in error messages (the event file).

    Returns
    -------
    DeflareResult

    Raises
    ------
    xmine.errors.InputError
        If the light curve is empty, or too few bins survive (an empty GTI):
        the message names the source, the limits and what to change.
    """
    counts = lc.counts.astype(np.float64)
    exposure = lc.exposure_s
    rate = lc.rate
    usable = (exposure > 0) & (counts > 0)
    if usable.sum() < 2:
        msg = (f"{source}: deflare: the light curve has {int(usable.sum())} non-empty bins; use a longer "
               "observation, a larger region or larger bins")
        raise InputError(msg)
    if method == "clean":
        if scale < 1.0 or clip <= 0 or (sigma is not None and sigma <= 0):
            msg = f"deflare: need scale >= 1, clip > 0, sigma > 0 (got scale={scale}, clip={clip}, sigma={sigma})"
            raise InputError(msg)
        m = float(mean) if mean is not None else _quiescent_mean(counts[usable], exposure[usable], clip=clip,
                                                                  max_iter=max_iter)
        if sigma is None:
            lo, hi = m / scale, m * scale
        else:
            sv = float(np.sqrt(m / lc.bin_s))
            lo, hi = m - sigma * sv, m + sigma * sv
        good = (rate > lo) & (rate < hi) & (exposure > 0)
        frac = good.sum() / usable.sum()
        params: dict[str, Any] = {"clip": clip, "scale": scale, "sigma": sigma, "mean": mean, "minfrac": minfrac}
        if good.sum() == 0 or frac < minfrac:
            msg = (f"{source}: deflare: only {int(good.sum())} of {int(usable.sum())} light-curve bins lie within "
                   f"{lo:.4g}-{hi:.4g} ct/s (below minfrac {minfrac}); the good time would be empty or nearly so: "
                   "check the source mask, or pass mean= or a larger scale")
            raise InputError(msg)
    elif method == "sigma":
        f = usable.copy()
        lo = hi = m = float("nan")
        for _ in range(max_iter):
            if not f.any():
                break
            r = rate[f]
            m, sd = float(r.mean()), float(r.std())
            lo, hi = m - nsigma * sd, m + nsigma * sd
            bad = f & ((rate < lo) | (rate > hi))
            if not bad.any():
                break
            f &= ~bad
        good = f.copy()
        for i0, i1 in _runs(good):
            if i1 - i0 < minlength:
                good[i0:i1] = False
        params = {"nsigma": nsigma, "minlength": minlength}
        if not good.any():
            msg = (f"{source}: deflare: no run of {minlength} good bins survives {nsigma}-sigma clipping; the good "
                   "time would be empty: check the source mask or use method='clean'")
            raise InputError(msg)
    else:
        msg = f"deflare: method {method!r} is not 'clean' or 'sigma'"
        raise InputError(msg)
    mean_rate = float(counts[good].sum() / exposure[good].sum())
    gti = np.array([(lc.time_min[i0], lc.time_max[i1 - 1]) for i0, i1 in _runs(good)], dtype=np.float64)
    params.update(bin_s=lc.bin_s, timedel_s=lc.timedel_s, method=method)
    return DeflareResult(light_curve=lc, good=good, mean_rate=mean_rate, min_rate=float(lo), max_rate=float(hi),
                         gti=gti.reshape(-1, 2), method=method, params=params, flares=_flares(lc, good, m))


# ---------------------------------------------------------------- applying GTIs


def apply_gti(events: EventList, gti: np.ndarray | Mapping[int, np.ndarray]) -> EventList:
    """Keep the events inside the GTIs and intersect the per-CCD GTIs with them.

    Parameters
    ----------
    events : EventList
    gti : numpy.ndarray or dict of int to numpy.ndarray
        ``(n, 2)`` START, STOP for all CCDs, or one array per CCD.

    Returns
    -------
    EventList
        With ``gti`` intersected per CCD and a header whose ``ONTIME``,
        ``LIVETIME``, ``EXPOSURE`` (the largest CCD's) and per-CCD
        ``ONTIMEn``/``LIVTIMEn``/``EXPOSURn`` are the clean values.

    Raises
    ------
    xmine.errors.InputError
        If no good time is left.
    """
    src = str(events.path) if events.path else "events"
    old = _event_gtis(events)
    new: dict[int, np.ndarray] = {}
    for c, g in old.items():
        other = gti.get(c, gti.get(-1)) if isinstance(gti, Mapping) else gti
        new[c] = intersect_gti(g, other) if other is not None else np.zeros((0, 2))
    if all(len(v) == 0 for v in new.values()):
        msg = f"{src}: no good time is left after applying the GTIs; check the flare cleaning (deflare) limits"
        raise InputError(msg)
    t = np.asarray(events["time"], dtype=np.float64)
    ccd = np.asarray(events["ccd_id"]) if "ccd_id" in events.columns else np.full(t.size, -1)
    keep = np.zeros(t.size, dtype=bool)
    for c in np.unique(ccd):
        m = ccd == c
        keep[m] = time_mask(t[m], _gti_for_ccd(new, int(c)))
    out = events.subset(keep, gti_applied=True)
    out.gti = {c: v for c, v in new.items()}
    header = events.header.copy()
    dtcor = dead_time_correction(header)
    ontimes = {c: float(np.sum(v[:, 1] - v[:, 0])) if len(v) else 0.0 for c, v in new.items()}
    for c, on in ontimes.items():
        if c >= 0:
            header[f"ONTIME{c}"] = (on, "[s] Sum of clean GTIs")
            header[f"LIVTIME{c}"] = (on * dtcor, "[s] Livetime")
            header[f"EXPOSUR{c}"] = (on * dtcor, "[s] Exposure time")
    on = max(ontimes.values())
    header["ONTIME"] = (on, "[s] Sum of GTIs (largest CCD)")
    header["LIVETIME"] = (on * dtcor, "[s] Livetime")
    header["EXPOSURE"] = (on * dtcor, "[s] Exposure time")
    out.header = header
    return out


# ---------------------------------------------------------------- files


def gti_hdu(gti: np.ndarray | None, header: fits.Header | None = None) -> fits.BinTableHDU:
    """Return an OGIP ``GTI`` extension (START, STOP in s, ONTIME) with the time keywords of ``header``."""
    rows = np.zeros((0, 2)) if gti is None else np.asarray(gti, dtype=np.float64).reshape(-1, 2)
    cols = [fits.Column(name="START", format="1D", unit="s", array=rows[:, 0]),
            fits.Column(name="STOP", format="1D", unit="s", array=rows[:, 1])]
    hdu = fits.BinTableHDU.from_columns(cols, name="GTI")
    h = hdu.header
    for key in ("TELESCOP", "INSTRUME", "OBS_ID", "MJDREF", "TIMESYS", "TIMEUNIT", "TSTART", "TSTOP"):
        if header is not None and key in header:
            value = header[key]
            h[key] = value.encode("ascii", "replace").decode() if isinstance(value, str) else value
    h["HDUCLASS"], h["HDUCLAS1"], h["HDUCLAS2"] = "OGIP", "GTI", "STANDARD"
    h["ONTIME"] = (float(np.sum(rows[:, 1] - rows[:, 0])), "[s] sum of GTIs")
    return hdu


def write_gti(path: str | os.PathLike[str], gti: np.ndarray | Mapping[int, np.ndarray], *,
              header: fits.Header | None = None, result: DeflareResult | None = None) -> Path:
    """Write GTIs as CIAO does: one ``GTI`` extension per CCD (``CCD_ID`` keyword), START/STOP in s.

    Parameters
    ----------
    path : path-like
        Output FITS file (written atomically).
    gti : numpy.ndarray or dict of int to numpy.ndarray
        One list for all CCDs (a single extension without CCD_ID), or per CCD.
    header : astropy.io.fits.Header, optional
        Event header whose time keywords (MJDREF, TIMESYS, OBS_ID, …) are copied.
    result : DeflareResult, optional
        Its method, limits and mean rate are recorded as keywords.
    """
    per_ccd = dict(gti) if isinstance(gti, Mapping) else {-1: np.asarray(gti)}
    primary = fits.PrimaryHDU()
    primary.header["CREATOR"] = ("xmine.gti", "tool that created this output")
    hdus: list[fits.hdu.base.ExtensionHDU] = []
    for c in sorted(per_ccd):
        g = gti_hdu(_merge(per_ccd[c]), header)
        h = g.header
        if c >= 0:
            h["CCD_ID"] = (int(c), "CCD for this table")
            h["HDUNAME"] = f"GTI{c}"
        if result is not None:
            h["DFMETHOD"] = (result.method, "deflare method (lc_clean or lc_sigma_clip)")
            h["DFMEAN"] = (result.mean_rate, "[ct/s] mean rate of the good bins")
            h["DFMINRT"] = (result.min_rate, "[ct/s] lower rate limit")
            h["DFMAXRT"] = (result.max_rate, "[ct/s] upper rate limit")
            h["DFBIN"] = (result.light_curve.bin_s, "[s] light-curve bin")
            h["DFCHANCE"] = (result.chance_clip_fraction, "share of steady bins clipped by chance")
        hdus.append(g)
    target = Path(path)
    with atomic_write(target) as tmp:
        fits.HDUList([primary, *hdus]).writeto(tmp)
    return target


def write_light_curve(path: str | os.PathLike[str], result: DeflareResult | LightCurve, *,
                      header: fits.Header | None = None) -> Path:
    """Write a light curve table with dmextract's columns, readable by CIAO's ``deflare``.

    Columns ``TIME_MIN TIME_MAX TIME COUNTS EXPOSURE COUNT_RATE COUNT_RATE_ERR``,
    plus ``GOOD`` when a :class:`DeflareResult` is given.
    """
    lc = result.light_curve if isinstance(result, DeflareResult) else result
    cols = [fits.Column(name="TIME_MIN", format="1D", unit="s", array=lc.time_min),
            fits.Column(name="TIME_MAX", format="1D", unit="s", array=lc.time_max),
            fits.Column(name="TIME", format="1D", unit="s", array=lc.time),
            fits.Column(name="COUNTS", format="1J", unit="count", array=lc.counts),
            fits.Column(name="EXPOSURE", format="1D", unit="s", array=lc.exposure_s),
            fits.Column(name="COUNT_RATE", format="1D", unit="count/s", array=lc.rate),
            fits.Column(name="COUNT_RATE_ERR", format="1D", unit="count/s", array=lc.rate_err)]
    if isinstance(result, DeflareResult):
        cols.append(fits.Column(name="GOOD", format="1L", array=result.good))
    t = fits.BinTableHDU.from_columns(cols, name="LIGHTCURVE")
    for key in ("TELESCOP", "INSTRUME", "OBS_ID", "MJDREF", "TIMESYS", "TIMEDEL", "DTCOR"):
        if header is not None and key in header:
            t.header[key] = header[key]
    t.header["BINSIZE"] = (lc.bin_s, "[s] light-curve bin")
    target = Path(path)
    with atomic_write(target) as tmp:
        fits.HDUList([fits.PrimaryHDU(), t]).writeto(tmp)
    return target


def plot_light_curve(path: str | os.PathLike[str], result: DeflareResult, *, title: str | None = None) -> Path:
    """Write a PNG of the light curve with the clipped bins marked.

    Good bins are green circles, clipped bins red squares; the rate limits
    are dashed, the mean dotted, and the excluded time is shaded.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lc = result.light_curve
    t0 = float(lc.time_min[0])
    tk = (lc.time - t0) / 1e3
    rate, err = lc.rate, lc.rate_err
    fig, ax = plt.subplots(figsize=(8, 3.6))
    bad = ~result.good
    for i0, i1 in _runs(bad):
        ax.axvspan((lc.time_min[i0] - t0) / 1e3, (lc.time_max[i1 - 1] - t0) / 1e3, color="#f4cccc", lw=0)
    ax.errorbar(tk[result.good], rate[result.good], yerr=err[result.good], fmt="o", ms=3, color="#2e8b57",
                elinewidth=0.6, label="good")
    if bad.any():
        ax.errorbar(tk[bad], rate[bad], yerr=err[bad], fmt="s", ms=3.5, color="#c0392b", elinewidth=0.6,
                    label="clipped")
    ax.axhline(result.mean_rate, ls=":", color="k", lw=1, label=f"mean {result.mean_rate:.3g} ct/s")
    for v in (result.min_rate, result.max_rate):
        if np.isfinite(v):
            ax.axhline(v, ls="--", color="#555555", lw=0.8)
    ax.set_xlabel(f"time − {t0:.1f} s (MET) [ks]")
    ax.set_ylabel("count rate [ct/s]")
    lost = result.lost_exposure_s
    ax.set_title(title or (f"ObsID {lc.meta.get('OBS_ID', '')}: {result.method}, bins {lc.bin_s:.2f} s, "
                           f"{lost / 1e3:.2f} ks clipped"), fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    target = Path(path)
    with atomic_write(target) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return target
