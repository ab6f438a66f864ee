"""Simulated, labelled CSC 2.1-like source sets for the catalogue-science demos and tests.

:func:`make_labelled_sources` makes a classification set; :func:`make_epoch_pair`
makes two epochs of one sky with injected flux changes, a vanished and new
sources, and the sensitivity map of the second epoch (see its docstring).

Four classes with overlapping but distinct property distributions, drawn
from one seed (no data file: the set is made by code):

``AGN``
    absorbed power law, Γ ~ N(1.9, 0.3), 30 % with intrinsic N_H log-uniform in
    10²¹–10²³ cm⁻²; 0.5–7 keV flux log-normal around 10⁻¹⁴ erg cm⁻² s⁻¹ (σ 0.5 dex);
    30 % long-term (inter-observation) variable, 5 % variable within an observation;
    30 % with an optical counterpart (``gaia_g_mag`` ~ N(19.5, 1)).
``star``
    soft thermal, kT log-normal around 0.6 keV; flux around 3×10⁻¹⁵ (σ 0.5 dex); 35 %
    flaring within an observation, 25 % variable between observations; 90 % with a
    bright counterpart (G ~ N(13, 2)).
``XRB``
    hard power law, Γ ~ N(1.4, 0.35), N_H log-uniform in 10²¹–5×10²² cm⁻²; flux around
    3×10⁻¹⁴ (σ 0.7 dex); 70 % long-term variable, 30 % within an observation; 20 % with
    a counterpart (G ~ N(17, 2)).
``cluster``
    thermal, kT uniform in 2–8 keV; flux around 2×10⁻¹⁴ (σ 0.4 dex); never variable;
    85 % flagged extended with a major axis of 8–60″; 10 % with a counterpart (a
    member galaxy, G ~ N(18, 1)).

From the flux and an exposure (uniform 10–100 ks, ACIS-like area of
:mod:`xmine.simulate.spectra`) each source gets Poisson broad-band counts split
multinomially into the CSC bands s 0.5–1.2, m 1.2–2 and h 2–7 keV; the hardness
ratios ``hard_hs = (h − s)/(h + s)`` etc. carry that counting noise and are NULL
when both bands are empty. Variability is only detectable with ≥ 30 counts (a
variable source with fewer looks constant). ``var_inter_*`` are NULL for sources
seen in one observation (40 %). Flux limits are 90 % (±1.645 σ of the counts).

Approximations: no background, no confusion, no Eddington bias; hardness ratios
are simple count ratios (CSC 2 uses Bayesian estimates with their own limits);
the variability columns are drawn from the class, not measured from light curves.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import MaskedColumn, Table

from xmine.simulate import spectra
from xmine.simulate.catalogs import iau_name

__all__ = ["CLASSES", "LABEL_COLUMN", "EpochPair", "make_epoch_pair", "make_labelled_sources",
           "write_epoch_pair"]

#: The classes of the simulated set, in label order.
CLASSES = ("AGN", "star", "XRB", "cluster")
#: Name of the label column.
LABEL_COLUMN = "class"
_FRACTIONS = (0.45, 0.25, 0.15, 0.15)
_BANDS = ((0.5, 1.2), (1.2, 2.0), (2.0, 7.0))
_FLUX_UNIT = "erg cm-2 s-1"


def _grid(kind: str, params: np.ndarray, nh_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band shares of detected s/m/h counts and 0.5–7 keV energy flux per count (erg cm⁻²) on a grid."""
    e = spectra.EGRID_KEV
    spec = np.stack([spectra.photon_spectrum(kind, float(p)) for p in params])  # (P, E)
    absorb = np.exp(-np.outer(nh_grid * 1e22 * 2.4e-22, e ** -2.6))  # (N, E)
    n = spec[:, None, :] * absorb[None, :, :]
    folded = n * spectra.effective_area_cm2(e)
    band = np.stack([np.trapezoid(folded[..., (e >= lo) & (e <= hi)], e[(e >= lo) & (e <= hi)], axis=-1)
                     for lo, hi in _BANDS], axis=-1)
    m = (e >= 0.5) & (e <= 7.0)
    eflux = np.trapezoid(e[m] * n[..., m], e[m], axis=-1) * spectra.KEV_TO_ERG
    ecf = np.asarray(eflux / np.trapezoid(folded[..., m], e[m], axis=-1), dtype=float)
    return np.asarray(band / band.sum(axis=-1, keepdims=True), dtype=float), ecf


def _lookup(grid: tuple[np.ndarray, np.ndarray], params: np.ndarray, nh_grid: np.ndarray, p: np.ndarray,
            nh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-grid-point band shares and ECF (grids are fine enough for a demo set)."""
    i = np.clip(np.searchsorted(params, p), 0, params.size - 1)
    j = np.clip(np.searchsorted(nh_grid, nh), 0, nh_grid.size - 1)
    return grid[0][i, j], grid[1][i, j]


def _ratio(a: np.ndarray, b: np.ndarray) -> MaskedColumn:
    tot = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(tot > 0, (a - b) / np.where(tot > 0, tot, 1), 0.0)
    return MaskedColumn(r, mask=tot <= 0)


def make_labelled_sources(n: int = 4000, *, seed: int = 0, ra_deg: float = 150.0, dec_deg: float = 2.0,
                          radius_deg: float = 1.0) -> Table:
    """Make a labelled, CSC 2.1-like source table (see the module docstring for the classes).

    Parameters
    ----------
    n : int, optional
        Number of sources.
    seed : int, optional
        Random seed; the same seed gives the same table.
    ra_deg, dec_deg, radius_deg : float, optional
        Sources are spread uniformly over this cone (degrees).

    Returns
    -------
    astropy.table.Table
        ``name, ra, dec, err_ellipse_r0, significance, flux_aper_b, flux_aper_lolim_b,
        flux_aper_hilim_b, hard_hs, hard_ms, hard_hm, var_intra_index_b, var_intra_prob_b,
        var_inter_index_b, var_inter_prob_b, var_flag, extent_flag, major_axis, acis_num,
        gaia_g_mag, class`` (NULLs masked; ``class`` one of :data:`CLASSES`).

    Examples
    --------
    >>> from xmine.simulate.labels import make_labelled_sources
    >>> t = make_labelled_sources(200, seed=1)
    >>> sorted(set(t["class"])) == sorted(CLASSES)
    True
    """
    if n < len(CLASSES):
        msg = f"make_labelled_sources: n={n} is fewer than the {len(CLASSES)} classes"
        raise ValueError(msg)
    rng = np.random.default_rng([int(seed), 8])
    cls = rng.choice(len(CLASSES), size=n, p=_FRACTIONS)
    cls[: len(CLASSES)] = np.arange(len(CLASSES))  # every class present, even for small n
    is_agn, is_star, is_xrb, is_cl = (cls == k for k in range(4))

    gam_grid = np.linspace(0.4, 3.2, 57)
    kt_grid = np.geomspace(0.1, 12.0, 60)
    nh_grid = np.concatenate([[0.0], np.geomspace(0.01, 20.0, 40)])
    pl = _grid("powerlaw", gam_grid, nh_grid)
    th = _grid("thermal", kt_grid, nh_grid)

    param = np.empty(n)
    nh22 = np.zeros(n)
    param[is_agn] = np.clip(rng.normal(1.9, 0.3, is_agn.sum()), 0.5, 3.2)
    absorbed = is_agn & (rng.random(n) < 0.3)
    nh22[absorbed] = 10 ** rng.uniform(-1, 1, absorbed.sum())
    param[is_star] = np.clip(np.exp(rng.normal(math.log(0.6), 0.4, is_star.sum())), 0.15, 3.0)
    param[is_xrb] = np.clip(rng.normal(1.4, 0.35, is_xrb.sum()), 0.4, 3.2)
    nh22[is_xrb] = 10 ** rng.uniform(-1, math.log10(5.0), is_xrb.sum())
    param[is_cl] = rng.uniform(2.0, 8.0, is_cl.sum())
    thermal = is_star | is_cl
    shares = np.empty((n, 3))
    ecf = np.empty(n)
    for mask, grid, pgrid in ((~thermal, pl, gam_grid), (thermal, th, kt_grid)):
        shares[mask], ecf[mask] = _lookup(grid, pgrid, nh_grid, param[mask], nh22[mask])

    log_flux_med = np.array([-14.0, -14.5, -13.5, -13.7])[cls]
    log_flux_sig = np.array([0.5, 0.5, 0.7, 0.4])[cls]
    true_flux = 10 ** rng.normal(log_flux_med, log_flux_sig)
    exposure_s = rng.uniform(10e3, 100e3, n)
    counts = rng.poisson(true_flux / ecf * exposure_s).astype(float)
    band = _multinomial_fast(rng, counts, shares)
    s_c, m_c, h_c = band[:, 0].astype(float), band[:, 1].astype(float), band[:, 2].astype(float)

    flux = counts * ecf / exposure_s
    ferr = np.sqrt(np.maximum(counts, 1.0)) * ecf / exposure_s
    significance = counts / (1.0 + np.sqrt(counts + 0.75))

    p_intra = np.array([0.05, 0.35, 0.30, 0.0])[cls]
    p_inter = np.array([0.30, 0.25, 0.70, 0.0])[cls]
    detectable = counts >= 30
    var_intra = (rng.random(n) < p_intra) & detectable
    var_inter = (rng.random(n) < p_inter) & detectable
    acis_num = np.where(rng.random(n) < 0.4, 1, rng.integers(2, 8, n))
    single = acis_num == 1
    var_inter &= ~single

    def _prob(var: np.ndarray) -> np.ndarray:
        return np.where(var, rng.uniform(0.95, 1.0, n), rng.beta(1.0, 3.0, n) * 0.95)

    def _index(var: np.ndarray) -> np.ndarray:
        return np.where(var, rng.integers(5, 11, n), rng.choice([0, 0, 0, 1, 2, 3], n)).astype(np.int32)

    extent = is_cl & (rng.random(n) < 0.85)
    extent |= ~is_cl & (rng.random(n) < 0.03)
    major = np.where(extent, rng.uniform(8.0, 60.0, n), np.nan)
    major = np.where(extent & ~is_cl, rng.uniform(2.0, 10.0, n), major)

    p_opt = np.array([0.30, 0.90, 0.20, 0.10])[cls]
    g_mean = np.array([19.5, 13.0, 17.0, 18.0])[cls]
    g_sig = np.array([1.0, 2.0, 2.0, 1.0])[cls]
    has_opt = rng.random(n) < p_opt
    gmag = rng.normal(g_mean, g_sig)

    # positions: uniform over the cone
    r = radius_deg * np.sqrt(rng.random(n))
    pa = rng.uniform(0, 2 * np.pi, n)
    dec = np.clip(dec_deg + r * np.cos(pa), -90, 90)
    ra = (ra_deg + r * np.sin(pa) / np.cos(np.radians(dec))) % 360.0
    err95 = 2.4477 * np.sqrt(0.5 ** 2 / np.maximum(counts, 1.0) * 4 + 0.16 ** 2)

    t = Table()
    t["name"] = np.array([iau_name("2CXO", a, d, extended=bool(x)) for a, d, x in
                          zip(ra, dec, is_cl & extent, strict=True)], dtype=str)
    t["ra"] = ra
    t["dec"] = dec
    t["err_ellipse_r0"] = err95
    t["significance"] = significance
    t["flux_aper_b"] = flux
    t["flux_aper_lolim_b"] = np.maximum(flux - 1.645 * ferr, 0.0)
    t["flux_aper_hilim_b"] = flux + 1.645 * ferr
    t["hard_hs"] = _ratio(h_c, s_c)
    t["hard_ms"] = _ratio(m_c, s_c)
    t["hard_hm"] = _ratio(h_c, m_c)
    t["var_intra_index_b"] = _index(var_intra)
    t["var_intra_prob_b"] = _prob(var_intra)
    t["var_inter_index_b"] = MaskedColumn(_index(var_inter), mask=single)
    t["var_inter_prob_b"] = MaskedColumn(_prob(var_inter), mask=single)
    t["var_flag"] = var_intra | var_inter
    t["extent_flag"] = extent
    t["major_axis"] = MaskedColumn(np.nan_to_num(major), mask=~extent)
    t["acis_num"] = acis_num.astype(np.int32)
    t["gaia_g_mag"] = MaskedColumn(gmag, mask=~has_opt)
    t[LABEL_COLUMN] = np.array(CLASSES)[cls]
    for col, unit in (("ra", "deg"), ("dec", "deg"), ("err_ellipse_r0", "arcsec"), ("major_axis", "arcsec"),
                      ("flux_aper_b", _FLUX_UNIT), ("flux_aper_lolim_b", _FLUX_UNIT),
                      ("flux_aper_hilim_b", _FLUX_UNIT), ("gaia_g_mag", "mag")):
        t[col].unit = unit
    t.meta["ORIGIN"] = "xmine.simulate.labels"
    t.meta["SEED"] = int(seed)
    return t


def _multinomial_fast(rng: np.random.Generator, counts: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Multinomial draws for many rows at once (conditional binomials)."""
    out = np.empty((counts.size, 3), dtype=np.int64)
    left = counts.astype(np.int64)
    rest = np.ones(counts.size)
    for k in range(2):
        p = np.clip(shares[:, k] / np.maximum(rest, 1e-12), 0.0, 1.0)
        out[:, k] = rng.binomial(left, p)
        left = left - out[:, k]
        rest = rest - shares[:, k]
    out[:, 2] = left
    return out


@dataclass
class EpochPair:
    """Two simulated epochs of one sky with injected changes.

    Attributes
    ----------
    reference, new : astropy.table.Table
        Source lists (``name, ra, dec, flux_aper_b, flux_aper_lolim_b, flux_aper_hilim_b``, 90 % limits).
    truth : astropy.table.Table
        Per true source: ``truth_name, ra, dec, flux_ref_true, flux_new_true, injected`` (one of
        ``brightened, faded, vanished, new, unchanged``), and the names it got in each list ('' if undetected).
    limit_map : numpy.ndarray
        Limiting flux (erg cm⁻² s⁻¹) of the new epoch on a TAN grid.
    header : astropy.io.fits.Header
        WCS of ``limit_map``.
    """

    reference: Table
    new: Table
    truth: Table
    limit_map: np.ndarray
    header: object


def make_epoch_pair(n: int = 300, *, seed: int = 0, change_factor: float = 5.0, n_up: int = 5, n_down: int = 5,
                    n_vanished: int = 3, n_new: int = 3, ra_deg: float = 150.0, dec_deg: float = 2.0,
                    radius_deg: float = 0.3, min_counts: float = 8.0) -> EpochPair:
    """Make two epochs of a sky of point sources with injected flux changes.

    The true 0.5–7 keV fluxes are log-normal around 3×10⁻¹⁴ erg cm⁻² s⁻¹ (σ 0.4
    dex); each epoch observes them for 50 ks with an ECF of 1×10⁻¹¹ erg cm⁻² per
    count and a vignetting-like exposure ``1 / (1 + (r / radius)²)``. Measured counts
    are Poisson; a source is detected with ≥ ``min_counts`` counts, so the new
    epoch's limiting flux at radius r is ``min_counts × ECF / exposure(r)`` (the
    map). ``n_up`` bright sources get ``× change_factor``, ``n_down`` get ``÷``,
    ``n_vanished`` go dark (0) in the new epoch and ``n_new`` appear (true flux
    10× the local limit). Reported intervals are 90 % (±1.645 √counts).

    Returns
    -------
    EpochPair
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = np.random.default_rng([int(seed), 9])
    ecf, t_exp, r0 = 1e-11, 50e3, radius_deg
    n_tot = n + n_new
    r = radius_deg * np.sqrt(rng.random(n_tot))
    pa = rng.uniform(0, 2 * np.pi, n_tot)
    dec = dec_deg + r * np.cos(pa)
    ra = ra_deg + r * np.sin(pa) / np.cos(np.radians(dec))

    def _exposure(ra_: np.ndarray, dec_: np.ndarray) -> np.ndarray:
        dx = (ra_ - ra_deg) * np.cos(np.radians(dec_deg))
        rr = np.hypot(dx, dec_ - dec_deg)
        return np.asarray(t_exp / (1 + (rr / r0) ** 2), dtype=float)

    f_ref = 10 ** rng.normal(math.log10(3e-14), 0.4, n_tot)
    f_new = f_ref.copy()
    injected = np.array(["unchanged"] * n_tot, dtype="U10")
    order = np.argsort(-f_ref[:n])  # changes on well-measured sources, so the factor is visible beyond errors
    bright = order[: 2 * (n_up + n_down + n_vanished)]
    pick = rng.permutation(bright)
    up, down, gone = pick[:n_up], pick[n_up:n_up + n_down], pick[n_up + n_down:n_up + n_down + n_vanished]
    f_new[up] *= change_factor
    f_new[down] /= change_factor
    f_new[gone] = 0.0
    injected[up], injected[down], injected[gone] = "brightened", "faded", "vanished"
    newi = np.arange(n, n_tot)
    f_ref[newi] = 0.0
    f_new[newi] = 10 * min_counts * ecf / _exposure(ra[newi], dec[newi])
    injected[newi] = "new"
    expo = _exposure(ra, dec)

    def _epoch(flux: np.ndarray, tag: str) -> tuple[Table, np.ndarray]:
        c = rng.poisson(flux / ecf * expo).astype(float)
        det = c >= min_counts
        idx = np.flatnonzero(det)
        t = Table()
        t["name"] = np.array([f"{tag}{k + 1:04d}" for k in range(idx.size)], dtype=str)
        # measured positions scatter by 0.5″
        t["ra"] = ra[idx] + rng.normal(0, 0.5 / 3600, idx.size) / np.cos(np.radians(dec[idx]))
        t["dec"] = dec[idx] + rng.normal(0, 0.5 / 3600, idx.size)
        fl = c[idx] * ecf / expo[idx]
        err = np.sqrt(c[idx]) * ecf / expo[idx]
        t["flux_aper_b"] = fl
        t["flux_aper_lolim_b"] = np.maximum(fl - 1.645 * err, 0.0)
        t["flux_aper_hilim_b"] = fl + 1.645 * err
        for col in ("flux_aper_b", "flux_aper_lolim_b", "flux_aper_hilim_b"):
            t[col].unit = _FLUX_UNIT
        names = np.array([""] * n_tot, dtype="U12")
        names[idx] = np.asarray(t["name"])
        return t, names

    ref, ref_names = _epoch(f_ref, "REF")
    new, new_names = _epoch(f_new, "NEW")
    truth = Table()
    truth["truth_name"] = np.array([f"T{k + 1:04d}" for k in range(n_tot)], dtype=str)
    truth["ra"], truth["dec"] = ra, dec
    truth["flux_ref_true"], truth["flux_new_true"] = f_ref, f_new
    truth["injected"] = injected
    truth["name_ref"], truth["name_new"] = ref_names, new_names

    npix, pix_deg = 256, 2.6 * radius_deg / 256
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra_deg, dec_deg]
    w.wcs.crpix = [npix / 2 + 0.5, npix / 2 + 0.5]
    w.wcs.cdelt = [-pix_deg, pix_deg]
    yy, xx = np.mgrid[0:npix, 0:npix]
    gra, gdec = w.all_pix2world(xx, yy, 0)
    limit = min_counts * ecf / _exposure(gra, gdec)
    header = w.to_header()
    header["BUNIT"] = "erg/cm2/s"
    header["COMMENT"] = "simulated limiting 0.5-7 keV flux of the new epoch (xmine.simulate.labels)"
    assert isinstance(header, fits.Header)
    return EpochPair(ref, new, truth, limit.astype(np.float32), header)


def write_epoch_pair(pair: EpochPair, folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``reference.fits``, ``new.fits``, ``truth.fits`` and the limit maps into ``folder``.

    ``new_sensitivity.fits`` and ``reference_sensitivity.fits`` are the same map
    (both epochs have the same exposure).
    """
    from astropy.io import fits

    from xmine.store import atomic_write

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for stem, t in (("reference", pair.reference), ("new", pair.new), ("truth", pair.truth)):
        with atomic_write(out / f"{stem}.fits") as tmp:
            t.write(tmp, format="fits")
        files[stem] = out / f"{stem}.fits"
    for stem in ("new_sensitivity", "reference_sensitivity"):  # same exposure in both epochs
        with atomic_write(out / f"{stem}.fits") as tmp:
            fits.PrimaryHDU(pair.limit_map, header=pair.header).writeto(tmp)
        files[stem] = out / f"{stem}.fits"
    return files
