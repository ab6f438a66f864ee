"""Simple X-ray spectra folded through a smooth ACIS-like effective area.

Approximations
--------------
* **Effective area.** ``A(E) = 420 cm² · (1 − exp(−(E/0.9 keV)³)) · exp(−(E/7 keV)²)``:
  a smooth curve with the low-energy loss of the contaminant and the
  high-energy fall-off of the mirrors, no edges. Used for ACIS-I and ACIS-S alike.
* **Absorption.** Galactic ``N_H = 3×10²⁰ cm⁻²``. Clusters: Morrison & McCammon (1983)
  cross-sections (XSPEC's ``wabs``, :func:`wabs_transmission`), as :mod:`xmine.fit` fits them;
  point sources: σ(E) = 2.4×10⁻²² (E/keV)^−2.6 cm².
* **Cluster (thermal continuum).** The free-free continuum of
  :func:`thermal_continuum`, ``g(E, kT) E⁻¹ exp(−E/kT_obs) / √kT_obs`` with the
  Born-approximation Gaunt factor and ``kT_obs = kT / (1 + z)``: no emission lines
  (no Fe-L, no Fe-K), no free-bound continuum. It is the very model that
  :mod:`xmine.fit` fits without XSPEC, so a simulated temperature is recoverable.
* **Point sources.** Power law ``E^−Γ``.
* **Backgrounds.** Sky: a 0.2 keV thermal-like component plus a Γ = 1.4 power
  law (70/30 in counts), folded through the area. Particle and flare: flat in
  *detected* energy over 0.3–11 keV (not folded; the 9.5–12 keV particle band
  used to renormalise blank skies thus holds 9.5–11 keV events).
* **Resolution.** Gaussian with σ = 30 eV + 0.006 E.

Count rates in truth tables are **detected** rates in the CSC broad band
0.5–7 keV; photons are drawn over 0.3–11 keV, so a source yields more events
in total than ``rate × time`` (the factor is :func:`band_fraction`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "EGRID_KEV",
    "KEV_TO_ERG",
    "band_counts",
    "band_fraction",
    "born_gaunt_factor",
    "effective_area_cm2",
    "energy_flux_per_rate",
    "morrison_mccammon_cross_section",
    "photon_spectrum",
    "sample_energies",
    "thermal_continuum",
    "wabs_transmission",
]

KEV_TO_ERG = 1.602176634e-9
#: Energy grid of the tabulated spectra (keV).
EGRID_KEV = np.linspace(0.1, 13.0, 4000)
#: Energy range of simulated photons (keV).
EMIN_KEV, EMAX_KEV = 0.3, 11.0
BROAD_BAND_KEV = (0.5, 7.0)
NH_CM2 = 3.0e20

FloatArray = NDArray[np.float64]


def effective_area_cm2(energy_kev: FloatArray) -> FloatArray:
    """Smooth ACIS-like on-axis effective area (cm²)."""
    e = np.asarray(energy_kev, dtype=np.float64)
    return 420.0 * (1.0 - np.exp(-((e / 0.9) ** 3))) * np.exp(-((e / 7.0) ** 2))


def born_gaunt_factor(energy_kev: FloatArray, kt_kev: float) -> FloatArray:
    """Velocity-averaged free-free Gaunt factor in the Born approximation.

    ``ḡ = (√3/π) exp(u/2) K₀(u/2)`` with ``u = E/kT`` (Rybicki & Lightman 1979,
    *Radiative Processes in Astrophysics*, §5.3, eq. 5.19 averaged over a
    Maxwellian; Karzas & Latter 1961 give the exact values it approaches). It holds
    in the high-temperature limit ``γ² = Z² · 13.6 eV / kT ≪ 1`` (γ² ≈ 0.003 for
    hydrogen at 5 keV) and ignores relativistic corrections (< a few per cent
    below 10 keV for kT < 10 keV).
    """
    from scipy.special import k0e

    u = np.asarray(energy_kev, dtype=np.float64) / float(kt_kev)
    return np.asarray(np.sqrt(3.0) / np.pi * k0e(u / 2.0), dtype=np.float64)


def thermal_continuum(energy_kev: FloatArray, kt_kev: float) -> FloatArray:
    """Thermal bremsstrahlung photon spectrum per unit norm (photons cm⁻² s⁻¹ keV⁻¹).

    ``N(E) = ḡ(E, kT) · kT^−1/2 · E⁻¹ · exp(−E/kT)``, the convention of XSPEC's
    ``bremss`` (its norm is ``3.02×10⁻¹⁵ / (4πD²) ∫ nₑ nᵢ dV``), with the Gaunt
    factor of :func:`born_gaunt_factor`. No lines, no free-bound emission.

    Parameters
    ----------
    energy_kev : ndarray
        Photon energies (keV), > 0.
    kt_kev : float
        Temperature (keV) in the frame of ``energy_kev``.
    """
    e = np.asarray(energy_kev, dtype=np.float64)
    kt = float(kt_kev)
    return np.asarray(born_gaunt_factor(e, kt) * np.exp(-e / kt) / (e * np.sqrt(kt)), dtype=np.float64)


#: Morrison & McCammon (1983, ApJ 270, 119) Table 2: lower edge (keV) of each range and the fit coefficients of
#: σ(E) = (c0 + c1 E + c2 E²) E⁻³ × 10⁻²⁴ cm² per H atom (solar abundances, no grains); above 10 keV the last
#: range continues, below 0.03 keV the first.
_MM83 = np.array([
    # E_lo    c0      c1       c2
    [0.030, 33.6, 0.0, 0.0],
    [0.100, 17.3, 608.1, -2150.0],
    [0.284, 34.6, 267.9, -476.1],
    [0.400, 78.1, 18.8, 4.3],
    [0.532, 71.4, 66.8, -51.4],
    [0.707, 95.5, 145.8, -61.1],
    [0.867, 308.9, -380.6, 294.0],
    [1.303, 120.6, 169.3, -47.7],
    [1.840, 141.3, 146.8, -31.5],
    [2.471, 202.7, 104.7, -17.0],
    [3.210, 342.7, 18.7, 0.0],
    [4.038, 352.2, 18.7, 0.0],
    [7.111, 433.9, -2.4, 0.75],
    [8.331, 629.0, 30.9, 0.0],
    [10.00, 701.2, 25.2, 0.0],
])


def morrison_mccammon_cross_section(energy_kev: FloatArray) -> FloatArray:
    """Photoelectric cross-section per H atom of the ISM (cm²), Morrison & McCammon (1983), as XSPEC's ``wabs``."""
    e = np.asarray(energy_kev, dtype=np.float64)
    k = np.clip(np.searchsorted(_MM83[:, 0], e, side="right") - 1, 0, len(_MM83) - 1)
    c0, c1, c2 = _MM83[k, 1], _MM83[k, 2], _MM83[k, 3]
    return np.asarray((c0 + c1 * e + c2 * e**2) / e**3 * 1e-24, dtype=np.float64)


def wabs_transmission(energy_kev: FloatArray, nh_cm2: float) -> FloatArray:
    """ISM transmission ``exp(−N_H σ(E))`` with :func:`morrison_mccammon_cross_section`."""
    return np.asarray(np.exp(-float(nh_cm2) * morrison_mccammon_cross_section(energy_kev)), dtype=np.float64)


def photon_spectrum(kind: str, param: float, energy_kev: FloatArray = EGRID_KEV) -> FloatArray:
    """Unnormalised absorbed photon spectrum (photons / keV).

    Parameters
    ----------
    kind : {"thermal", "powerlaw", "skybg"}
        Spectral shape.
    param : float
        kT_obs (keV) for ``thermal``, photon index Γ for ``powerlaw``; unused for ``skybg``.
    energy_kev : ndarray, optional
        Energies (keV).
    """
    e = np.asarray(energy_kev, dtype=np.float64)
    absorb = np.exp(-NH_CM2 * 2.4e-22 * e ** -2.6)
    if kind == "thermal":
        return thermal_continuum(e, param) * wabs_transmission(e, NH_CM2)
    elif kind == "powerlaw":
        n = e ** -param
    elif kind == "skybg":
        soft = e ** -0.4 * np.exp(-e / 0.2)
        hard = e ** -1.4
        a = effective_area_cm2(e)
        mask = (e >= EMIN_KEV) & (e <= EMAX_KEV)
        s_int = np.trapezoid(soft * a * mask, e)
        h_int = np.trapezoid(hard * a * mask, e)
        n = 0.7 * soft / s_int + 0.3 * hard / h_int
        return n  # sky background is only a local foreground, no extra absorption
    else:  # pragma: no cover - internal
        msg = f"unknown spectrum kind {kind!r}"
        raise ValueError(msg)
    return n * absorb


def _folded(kind: str, param: float) -> FloatArray:
    return photon_spectrum(kind, param) * effective_area_cm2(EGRID_KEV)


def band_counts(kind: str, param: float, emin_kev: float, emax_kev: float, *,
                folded: bool = True) -> float:
    """Integral of the (folded) spectrum over a band, in arbitrary units."""
    e = EGRID_KEV
    f = _folded(kind, param) if folded else photon_spectrum(kind, param)
    m = (e >= emin_kev) & (e <= emax_kev)
    return float(np.trapezoid(f[m], e[m]))


def band_fraction(kind: str, param: float) -> float:
    """Return detected counts over 0.3–11 keV divided by those over 0.5–7 keV."""
    return band_counts(kind, param, EMIN_KEV, EMAX_KEV) / band_counts(kind, param, *BROAD_BAND_KEV)


def energy_flux_per_rate(kind: str, param: float, emin_kev: float, emax_kev: float) -> float:
    """Energy flux (erg cm⁻² s⁻¹) in a band per detected count s⁻¹ in 0.5–7 keV."""
    e = EGRID_KEV
    n = photon_spectrum(kind, param)
    m = (e >= emin_kev) & (e <= emax_kev)
    eflux = float(np.trapezoid(e[m] * n[m], e[m])) * KEV_TO_ERG
    return eflux / band_counts(kind, param, *BROAD_BAND_KEV)


@lru_cache(maxsize=256)
def _cdf(kind: str, param: float) -> tuple[FloatArray, FloatArray]:
    e = EGRID_KEV
    m = (e >= EMIN_KEV) & (e <= EMAX_KEV)
    e = e[m]
    f = np.ones_like(e) if kind == "flat" else _folded(kind, param)[m]
    c = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(e))])
    return e, c / c[-1]


def sample_energies(kind: str, param: float, n: int, rng: np.random.Generator, *,
                    smear: bool = True) -> FloatArray:
    """Draw detected photon energies (keV).

    Parameters
    ----------
    kind : {"thermal", "powerlaw", "skybg", "flat"}
        Spectrum (``flat``: uniform in detected energy, for particle events).
    param : float
        See :func:`photon_spectrum`.
    n : int
        Number of photons.
    rng : numpy.random.Generator
        Random generator.
    smear : bool, optional
        Apply the detector resolution.
    """
    e, c = _cdf(kind, float(param))
    out = np.interp(rng.random(n), c, e)
    if smear and kind != "flat":
        out = out + rng.standard_normal(n) * (0.030 + 0.006 * out)
    return np.clip(out, 0.05, 14.9)
