"""Radial surface-brightness profiles in annuli around a cluster centre, and a β-model fit.

For each annulus the profile gives the counts ``N``, the expected background
``B``, the unmasked area (pixels and arcsec²), the net counts ``N − B`` and the
surface brightness:

* ``sb_counts_arcsec2 = (N − B) / area`` (counts arcsec⁻²), always;
* ``sb_cps_arcsec2 = (N − B) / Σ_pixels(exposure × pixel area)``
  (counts s⁻¹ arcsec⁻²), when an exposure map or exposure time is given.
  With a CIAO exposure map in cm² s this is a photon flux per arcsec²; with
  xmine's time-only maps it is a count rate (see :mod:`xmine.images`).

Errors are 1σ **Gehrels (1986)** confidence limits on the counts,
``σ⁺ = 1 + √(N + 0.75)``, ``σ⁻ = √(N − 0.25)`` (0 for N = 0), combined in
quadrature with the background's error (Poisson on the raw background counts
× scale², or the given rate error), so they hold for the few-count annuli of
cluster outskirts. Pixels count whole, by their centres: annuli narrower than a
pixel or two are noisy in area.

Masked pixels (``mask = 0``: point sources, chip gaps) and pixels without
exposure are left out of every column, including the area.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy import optimize

from xmine.errors import InputError
from xmine.store import atomic_write

__all__ = ["beta_model_annulus_mean", "fit_beta_profile", "radial_profile", "write_profile"]


def _gehrels(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the 1σ lower and upper Gehrels errors of counts ``n``."""
    n = np.asarray(n, dtype=np.float64)
    lo = np.sqrt(np.clip(n - 0.25, 0.0, None))
    hi = 1.0 + np.sqrt(n + 0.75)
    return lo, hi


def radial_profile(counts: np.ndarray, *, center_xy: tuple[float, float], pixel_arcsec: float,
                   exposure: np.ndarray | None = None, exposure_s: float | None = None,
                   background: np.ndarray | None = None, background_scale: float = 1.0,
                   background_rate_cps_per_pix: float | None = None, background_rate_err: float = 0.0,
                   mask: np.ndarray | None = None, r_min_arcsec: float = 0.0, r_max_arcsec: float | None = None,
                   n_bins: int = 20, log_bins: bool = True, edges_arcsec: np.ndarray | None = None) -> Table:
    """Radial surface-brightness profile of a counts image in annuli around ``center_xy``.

    Parameters
    ----------
    counts : numpy.ndarray
        Counts image.
    center_xy : (float, float)
        Cluster centre, 0-based pixel coordinates.
    pixel_arcsec : float
        Pixel size.
    exposure : numpy.ndarray, optional
        Exposure map (s, or cm² s); pixels ≤ 0 are left out.
    exposure_s : float, optional
        A single exposure time when there is no map.
    background : numpy.ndarray, optional
        Background counts image; expected background = ``background × background_scale``
        (e.g. :class:`xmine.background.BackgroundImage` ``counts`` and ``scale``).
    background_scale : float, optional
        See ``background``.
    background_rate_cps_per_pix : float, optional
        A flat background rate (counts s⁻¹ pixel⁻¹, e.g. from
        :func:`xmine.background.local_background`) times the exposure; needs an exposure.
    background_rate_err : float, optional
        1σ error of that rate.
    mask : numpy.ndarray, optional
        1 = use, 0 = leave out (point sources), as :func:`xmine.masks.make_mask`.
    r_min_arcsec, r_max_arcsec : float, optional
        Radial range; ``r_max`` defaults to the largest centre-to-edge distance inside the image.
    n_bins : int, optional
        Number of annuli.
    log_bins : bool, optional
        Logarithmic annuli (the first starts at ``r_min``, the second edge at
        ``max(r_min, pixel)``); False gives linear ones.
    edges_arcsec : numpy.ndarray, optional
        Explicit annulus edges (overrides the three options above).

    Returns
    -------
    astropy.table.Table
        ``r_in_arcsec, r_out_arcsec, r_mean_arcsec`` (mean radius of the used
        pixels), ``counts, bg_counts, bg_err, area_pix, area_arcsec2, net_counts,
        net_err_lo, net_err_hi, sb_counts_arcsec2, sb_err_lo, sb_err_hi`` and,
        with an exposure, ``exposure_mean, sb_cps_arcsec2, sb_cps_err_lo,
        sb_cps_err_hi``. ``meta`` records the centre, pixel size and error method.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2:
        msg = f"counts image has {c.ndim} dimensions; need a 2-D image"
        raise InputError(msg)
    if not pixel_arcsec > 0:
        msg = f"pixel_arcsec = {pixel_arcsec} must be positive"
        raise InputError(msg)
    ny, nx = c.shape
    cx, cy = float(center_xy[0]), float(center_xy[1])
    if not (math.isfinite(cx) and math.isfinite(cy)):
        msg = f"centre {center_xy} is not a finite pixel position"
        raise InputError(msg)
    if exposure is not None:
        e = np.asarray(exposure, dtype=np.float64)
        if e.shape != c.shape:
            msg = f"exposure map shape {e.shape} differs from the counts image shape {c.shape}"
            raise InputError(msg)
        e = np.where(np.isfinite(e) & (e > 0), e, 0.0)
    elif exposure_s is not None:
        if not exposure_s > 0:
            msg = f"exposure_s = {exposure_s} must be positive"
            raise InputError(msg)
        e = np.full(c.shape, float(exposure_s))
    else:
        e = None
    use = np.ones(c.shape, bool) if e is None else e > 0
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != c.shape:
            msg = f"mask shape {m.shape} differs from the counts image shape {c.shape}"
            raise InputError(msg)
        use &= m > 0
    bg = bg_var = None
    if background is not None:
        b = np.asarray(background, dtype=np.float64)
        if b.shape != c.shape:
            msg = f"background image shape {b.shape} differs from the counts image shape {c.shape}"
            raise InputError(msg)
        if not background_scale > 0:
            msg = f"background_scale = {background_scale} must be positive"
            raise InputError(msg)
        bg = b * background_scale
        bg_var = b * background_scale ** 2
    elif background_rate_cps_per_pix is not None:
        if e is None:
            msg = "background_rate_cps_per_pix needs exposure= or exposure_s= to turn a rate into counts"
            raise InputError(msg)
        bg = background_rate_cps_per_pix * e
        bg_var = None
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot(xx - cx, yy - cy) * pixel_arcsec
    if edges_arcsec is not None:
        edges = np.asarray(edges_arcsec, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
            msg = "edges_arcsec must be ≥ 0 and strictly increasing, with at least two values"
            raise InputError(msg)
    else:
        if n_bins < 1:
            msg = f"n_bins = {n_bins} must be ≥ 1"
            raise InputError(msg)
        r_max = float(r_max_arcsec) if r_max_arcsec is not None else float(r[use].max()) if use.any() else 0.0
        if not r_max > r_min_arcsec >= 0:
            msg = f"radial range r_min = {r_min_arcsec}″, r_max = {r_max}″: need 0 ≤ r_min < r_max"
            raise InputError(msg)
        if log_bins:
            first = max(r_min_arcsec, pixel_arcsec)
            if first >= r_max:
                msg = f"r_max = {r_max}″ is within one pixel of the centre; use linear bins or a larger r_max"
                raise InputError(msg)
            inner = np.geomspace(first, r_max, n_bins if r_min_arcsec < first else n_bins + 1)
            edges = np.concatenate([[r_min_arcsec], inner]) if r_min_arcsec < first else inner
        else:
            edges = np.linspace(r_min_arcsec, r_max, n_bins + 1)
    nb = edges.size - 1
    idx = np.searchsorted(edges, r, side="right") - 1
    sel = use & (idx >= 0) & (idx < nb)
    k = idx[sel]

    def _sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(k, weights=values[sel], minlength=nb)

    n = _sum(c)
    area_pix = np.bincount(k, minlength=nb).astype(np.int64)
    r_mean = np.divide(_sum(r), area_pix, out=np.full(nb, np.nan), where=area_pix > 0)
    b_cnt = _sum(bg) if bg is not None else np.zeros(nb)
    if bg_var is not None:
        b_err = np.sqrt(_sum(bg_var))
    elif bg is not None and e is not None:
        b_err = background_rate_err * _sum(e)
    else:
        b_err = np.zeros(nb)
    lo, hi = _gehrels(n)
    net = n - b_cnt
    net_lo, net_hi = np.hypot(lo, b_err), np.hypot(hi, b_err)
    area = area_pix * pixel_arcsec ** 2
    t = Table()
    t["r_in_arcsec"] = edges[:-1]
    t["r_out_arcsec"] = edges[1:]
    t["r_mean_arcsec"] = r_mean
    t["counts"] = n.round().astype(np.int64)
    t["bg_counts"] = b_cnt
    t["bg_err"] = b_err
    t["area_pix"] = area_pix
    t["area_arcsec2"] = area
    t["net_counts"] = net
    t["net_err_lo"] = net_lo
    t["net_err_hi"] = net_hi
    with np.errstate(divide="ignore", invalid="ignore"):
        t["sb_counts_arcsec2"] = np.where(area > 0, net / area, np.nan)
        t["sb_err_lo"] = np.where(area > 0, net_lo / area, np.nan)
        t["sb_err_hi"] = np.where(area > 0, net_hi / area, np.nan)
        if e is not None:
            e_area = _sum(e) * pixel_arcsec ** 2
            t["exposure_mean"] = np.where(area_pix > 0, _sum(e) / np.maximum(area_pix, 1), np.nan)
            t["sb_cps_arcsec2"] = np.where(e_area > 0, net / e_area, np.nan)
            t["sb_cps_err_lo"] = np.where(e_area > 0, net_lo / e_area, np.nan)
            t["sb_cps_err_hi"] = np.where(e_area > 0, net_hi / e_area, np.nan)
    units = {"r_in_arcsec": "arcsec", "r_out_arcsec": "arcsec", "r_mean_arcsec": "arcsec", "counts": "count",
             "bg_counts": "count", "bg_err": "count", "area_pix": "pix", "area_arcsec2": "arcsec2",
             "net_counts": "count", "net_err_lo": "count", "net_err_hi": "count",
             "sb_counts_arcsec2": "count / arcsec2", "sb_err_lo": "count / arcsec2", "sb_err_hi": "count / arcsec2",
             "exposure_mean": "s", "sb_cps_arcsec2": "count / (s arcsec2)", "sb_cps_err_lo": "count / (s arcsec2)",
             "sb_cps_err_hi": "count / (s arcsec2)"}
    for col, unit in units.items():
        if col in t.colnames:
            t[col].unit = unit
    t.meta.update({"CENTER_X": cx, "CENTER_Y": cy, "PIXSCALE": pixel_arcsec, "ERRORS": "Gehrels 1986 1-sigma",
                   "BINNING": "explicit" if edges_arcsec is not None else ("log" if log_bins else "linear")})
    return t


def write_profile(path: str | os.PathLike[str], profile: Table) -> Path:
    """Write a profile as a FITS binary table (EXTNAME PROFILE, units in TUNITn), atomically."""
    hdu = fits.table_to_hdu(profile)
    hdu.name = "PROFILE"
    p = Path(path)
    with atomic_write(p) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)
    return p


def beta_model_annulus_mean(r_in: np.ndarray, r_out: np.ndarray, s0: float, rc: float, beta: float,
                            const: float = 0.0) -> np.ndarray:
    """Area-averaged β model ``S0 (1 + r²/rc²)^(−3β + 1/2) + const`` over annuli (exact integral)."""
    r1, r2 = np.asarray(r_in, dtype=np.float64), np.asarray(r_out, dtype=np.float64)
    p = 3.0 * beta - 0.5
    u1, u2 = 1.0 + (r1 / rc) ** 2, 1.0 + (r2 / rc) ** 2
    integral = np.log(u2 / u1) if abs(p - 1.0) < 1e-9 else (u2 ** (1.0 - p) - u1 ** (1.0 - p)) / (1.0 - p)
    return s0 * rc * rc * integral / (r2 * r2 - r1 * r1) + const


def fit_beta_profile(profile: Table, *, column: str = "sb_counts_arcsec2", fit_const: bool = False,
                     p0: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """Fit a β model (area-averaged over each annulus) to a profile by weighted least squares.

    Parameters
    ----------
    profile : astropy.table.Table
        From :func:`radial_profile`.
    column : str, optional
        ``sb_counts_arcsec2`` or ``sb_cps_arcsec2``; its errors are the mean of
        the Gehrels lower and upper errors.
    fit_const : bool, optional
        Also fit a constant (residual background).
    p0 : (float, float, float), optional
        Start values (S0, rc_arcsec, β).

    Returns
    -------
    dict
        ``s0, rc_arcsec, beta`` (and ``const``), their 1σ errors ``*_err``,
        ``chi2``, ``dof``.
    """
    err_cols = {"sb_counts_arcsec2": ("sb_err_lo", "sb_err_hi"), "sb_cps_arcsec2": ("sb_cps_err_lo", "sb_cps_err_hi")}
    if column not in err_cols or column not in profile.colnames:
        msg = f"profile has no column {column!r} to fit; use one of {', '.join(c for c in err_cols)}"
        raise InputError(msg)
    ok = np.asarray(profile["area_pix"]) > 0
    r1 = np.asarray(profile["r_in_arcsec"], dtype=np.float64)[ok]
    r2 = np.asarray(profile["r_out_arcsec"], dtype=np.float64)[ok]
    y = np.asarray(profile[column], dtype=np.float64)[ok]
    lo_c, hi_c = err_cols[column]
    sig = 0.5 * (np.asarray(profile[lo_c], dtype=np.float64) + np.asarray(profile[hi_c], dtype=np.float64))[ok]
    npar = 4 if fit_const else 3
    if y.size <= npar:
        msg = f"profile has {y.size} usable annuli; a β-model fit needs more than {npar}"
        raise InputError(msg)
    if p0 is None:
        p0 = (float(max(y[0], 1e-12)), float(max(np.median(r2) / 4, 1e-3)), 0.67)
    start = [*p0, 0.0] if fit_const else list(p0)

    def model(_: np.ndarray, *par: float) -> np.ndarray:
        return beta_model_annulus_mean(r1, r2, par[0], par[1], par[2], par[3] if fit_const else 0.0)

    lower = [0.0, 1e-6, 0.34] + ([-np.inf] if fit_const else [])
    upper = [np.inf, np.inf, 5.0] + ([np.inf] if fit_const else [])
    try:
        popt, pcov = optimize.curve_fit(model, r1, y, p0=start, sigma=sig, absolute_sigma=True,
                                        bounds=(lower, upper), maxfev=20000)
    except (RuntimeError, ValueError) as exc:
        msg = f"β-model fit did not converge ({exc}); try p0= or fewer, wider annuli"
        raise InputError(msg) from exc
    perr = np.sqrt(np.diag(pcov))
    chi2 = float(np.sum(((y - model(r1, *popt)) / sig) ** 2))
    out: dict[str, Any] = {"s0": popt[0], "rc_arcsec": popt[1], "beta": popt[2], "s0_err": perr[0],
                           "rc_arcsec_err": perr[1], "beta_err": perr[2], "chi2": chi2, "dof": int(y.size - npar)}
    if fit_const:
        out["const"], out["const_err"] = popt[3], perr[3]
    return out
