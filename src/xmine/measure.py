"""Per-region measurements: every contour bin of a cluster as one row of numbers.

:func:`measure_regions` takes a bin map and images on its grid (counts, exposure,
expected background, soft/hard band counts) and returns one row per bin:
counts, background, net counts and their error, S/N, area, count rate, surface
brightness (and an energy flux with an ARF), a hardness ratio, the centroid in
image, physical and sky coordinates, and its distance from the cluster centre
in arcmin, kpc (with a redshift) and R500 (with an R500). :func:`measure_cluster`
does the same from the files a finished :func:`xmine.pipeline.process_cluster`
left; :func:`cluster_scales` and :func:`r500_from_tx` give the physical scales.

Conventions and approximations (against a CIAO ``dmextract``/XSPEC analysis)
----------------------------------------------------------------------------
* **Background.** ``background`` is the *expected* background counts per pixel
  at the source exposure. Its statistical error comes from ``background_ratio``,
  the exposure of the data the background was measured from divided by the
  source's (per pixel or one number; 1 = a background image as long as the
  observation, contbin's default; the pipeline's local background uses the
  annulus's pixel count). :func:`contbin_background` turns a contbin-style
  background image and ``bgexpmap`` into both.
* **Errors are contbin's.** ``net_err`` is ``√((1 + √(C + 0.75))² + (Σr²/n)(1 + √(B + 0.75))²)``
  with C the counts, B the raw background counts (expected × ratio),
  r = 1/ratio per pixel and n the pixels: Gehrels' (1986) 1σ *upper* error on
  each, combined in quadrature, used as a symmetric error. It overstates the
  error at a few counts (where the lower error is smaller) and tends to the
  Gaussian √(C + B/ratio) at many. ``sn = |net| / net_err``, exactly contbin's
  per-bin S/N (``bin.hh: error_sqd_est``), so it equals
  :func:`xmine.contbin.bin_statistics` on the same inputs. The same formula
  gives the band errors.
* **Hardness ratio** ``hr = (H − S)/(H + S)`` of the net band counts, its error
  propagated to first order from the band errors (Gaussian; poor below tens of
  counts per band, where a Bayesian estimate such as BEHR would be needed).
  Band images must come from the same events as ``counts``.
* **Exposure.** ``exposure_mean_s`` is the mean of the exposure map (seconds)
  over the bin's pixels, and ``rate_cps = net / exposure_mean_s``: exact for a
  flat exposure, a surface-brightness-unweighted average otherwise (as
  ``dmextract``'s mean exposure).
* **Energy flux** (only with an ARF, or an exposure map in cm² s, which gives the
  photon flux directly and is then multiplied by ⟨E⟩): ``flux = rate / ⟨A⟩ × ⟨E⟩`` over the band
  of ``counts``, ⟨A⟩ and ⟨E⟩ the means of the ARF and of the energy over the
  band **weighted by an assumed photon spectrum** (``flux_spectrum``; default a
  kT = 5 keV bremsstrahlung ``E^-1.4 exp(-E/kT)``, unabsorbed; :func:`measure_cluster`
  uses the cluster's Tx when known). Exact for a source of that spectrum; the
  weighting matters: a spectrum flat in photons gives twice the flux of a
  5 keV thermal one in 0.5–7 keV, while 2–10 keV thermal spectra move the
  result by −13 % … +19 % around the 5 keV default (against
  :mod:`xmine.simulate.spectra`). The ARF (one, usually on-axis) is taken as exact
  and vignetting as being in the exposure map; the flux is the observed
  (absorbed) one if the counts are. XSPEC would fold a fitted model through
  the bin's own ARF and RMF instead.
* **Area** is the pixel count times the pixel solid angle at the image's
  reference point (a TAN projection's pixels shrink by < 2e-5 within 10
  arcmin of it). Pixels with ``mask = 0``, no exposure or a negative bin number are
  left out of every column.
* **Centroid** weights pixels by their total counts (geometric centre for a
  bin with no counts); 1-based FITS pixels; physical coordinates through
  ``LTM1_1/LTM2_2/LTV1/LTV2`` (NaN without them); RA/Dec through the image WCS.
* **Distances** are angular separations of the centroid from ``centre_radec``;
  ``r_kpc`` uses the proper (angular-diameter) scale at the cluster's redshift
  from astropy's cosmology (default flat ΛCDM, H0 = 70 km/s/Mpc, Ωm = 0.3, the
  convention of most X-ray cluster papers); ``r_r500 = r_kpc / r500_kpc``, R500
  from the user's sample or the Arnaud et al. (2005) R500–T relation
  (:func:`r500_from_tx`), its source recorded in ``meta``.
* **Band backgrounds in** :func:`measure_cluster` are local (annulus, point
  sources masked) per band, whatever background the binning used: with a
  blank-sky binning background the broad and band backgrounds differ in kind.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from xmine.errors import InputError

__all__ = [
    "ARF_WEIGHTING",
    "DEFAULT_COSMOLOGY",
    "R500_RELATION",
    "ClusterScales",
    "band_flux_per_rate",
    "band_mean_energy_erg",
    "cluster_scales",
    "contbin_background",
    "measure_cluster",
    "measure_regions",
    "parse_cosmology",
    "r500_from_tx",
    "write_regions",
]

#: The default cosmology's description (see :func:`parse_cosmology`).
DEFAULT_COSMOLOGY = "FlatLambdaCDM(H0=70, Om0=0.3)"

#: The R500 scaling relation :func:`r500_from_tx` uses.
R500_RELATION = "Arnaud, Pointecouteau & Pratt 2005 (A&A 441, 893) R500-T, whole sample"

#: The count-rate → energy-flux conversion (the weighting spectrum is recorded beside it).
ARF_WEIGHTING = "flux = rate / <A> x <E>, <A> and <E> weighted by the assumed photon spectrum over the band"

_KEV_TO_ERG = 1.602176634e-9

#: Columns of :func:`measure_regions`, with their units.
COLUMNS: dict[str, str | None] = {
    "bin_id": None, "n_pix": "pix", "area_arcsec2": "arcsec2", "counts": "ct", "bg_counts": "ct",
    "net_counts": "ct", "net_err": "ct", "sn": None, "exposure_mean_s": "s", "rate_cps": "ct / s",
    "sb_cps_arcsec2": "ct / (s arcsec2)", "sb_cps_arcsec2_err": "ct / (s arcsec2)",
    "sb_flux_cgs_arcsec2": "erg / (s cm2 arcsec2)", "sb_flux_cgs_arcsec2_err": "erg / (s cm2 arcsec2)",
    "soft_net": "ct", "soft_err": "ct", "hard_net": "ct", "hard_err": "ct", "hr": None, "hr_err": None,
    "x_pix": "pix", "y_pix": "pix", "x_phys": "pix", "y_phys": "pix", "ra_deg": "deg", "dec_deg": "deg",
    "r_arcmin": "arcmin", "r_mean_arcmin": "arcmin", "r_kpc": "kpc", "r_r500": None,
}


# ---------------------------------------------------------------- cosmology and scales


_COSMO_CLASSES = ("FlatLambdaCDM", "LambdaCDM", "FlatwCDM", "wCDM", "Flatw0waCDM", "w0waCDM")


def parse_cosmology(cosmology: Any = None) -> Any:
    """Return an astropy cosmology from an object, a name or a dict of parameters.

    Parameters
    ----------
    cosmology : astropy.cosmology.Cosmology, str, dict or None
        An astropy cosmology; the name of one of astropy's realizations
        (``"Planck18"``, ``"WMAP9"``...); a call such as
        ``"FlatLambdaCDM(H0=70, Om0=0.3)"`` (numbers only); a dict
        ``{"H0": 70, "Om0": 0.3}`` (``LambdaCDM`` when it has ``Ode0``, else flat).
        None gives :data:`DEFAULT_COSMOLOGY`, flat ΛCDM with H0 = 70 km/s/Mpc and
        Ωm = 0.3, the convention of most X-ray cluster papers.

    Returns
    -------
    astropy.cosmology.Cosmology

    Raises
    ------
    xmine.errors.InputError
        An unknown name or malformed description.
    """
    import astropy.cosmology as ac
    from astropy.cosmology import realizations

    if cosmology is None:
        cosmology = DEFAULT_COSMOLOGY
    if isinstance(cosmology, ac.Cosmology):
        return cosmology
    if isinstance(cosmology, Mapping):
        params = dict(cosmology)
        cls = ac.LambdaCDM if "Ode0" in params else ac.FlatLambdaCDM
        try:
            return cls(**{k: float(v) for k, v in params.items()})
        except (TypeError, ValueError) as exc:
            msg = f"cosmology {params}: {exc}; give H0 and Om0 (and Ode0 for a non-flat one)"
            raise InputError(msg) from exc
    if not isinstance(cosmology, str):
        msg = f"cosmology {cosmology!r}: give an astropy cosmology, a name such as 'Planck18' or a dict of H0, Om0"
        raise InputError(msg)
    text = cosmology.strip()
    if text in realizations.available:
        return getattr(realizations, text)
    try:
        node = ast.parse(text, mode="eval").body
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _COSMO_CLASSES
                and not node.args):
            raise ValueError("not a call of an astropy cosmology class with keyword arguments")
        kwargs = {kw.arg: float(ast.literal_eval(kw.value)) for kw in node.keywords if kw.arg is not None}
        return getattr(ac, node.func.id)(**kwargs)
    except (SyntaxError, ValueError, TypeError) as exc:
        msg = (f"cosmology {text!r}: {exc}; use one of {', '.join(realizations.available)} or a call such as "
               f"{DEFAULT_COSMOLOGY!r}")
        raise InputError(msg) from exc


def _describe_cosmology(cosmo: Any) -> str:
    name = getattr(cosmo, "name", None)
    h0 = cosmo.H0.to_value("km / (Mpc s)")
    text = f"{type(cosmo).__name__}(H0={h0:g}, Om0={cosmo.Om0:g}, Ode0={cosmo.Ode0:g})"
    return f"{name}: {text}" if name else text


def r500_from_tx(tx_kev: float, z: float, cosmology: Any = None) -> float:
    """Return R500 (kpc) from a cluster's mean temperature through a published R500–T relation.

    Arnaud, Pointecouteau & Pratt 2005, A&A 441, 893 (Table 2, whole sample, XMM
    relaxed clusters of 2–9 keV): ``E(z) R500 = 1104 kpc (kT / 5 keV)^0.57 h70⁻¹``
    (±13 kpc, ±0.02 in the exponent), with ``E(z) = H(z)/H0`` and ``h70 = H0 / 70``
    from the cosmology. Their T is the spectroscopic temperature of
    0.1–0.5 R200 (core excluded); a core-included temperature biases R500 low
    for cool-core clusters, by a few per cent.

    Parameters
    ----------
    tx_kev : float
        Temperature (keV).
    z : float
        Redshift.
    cosmology : see :func:`parse_cosmology`

    Returns
    -------
    float
        R500 in kpc.

    Examples
    --------
    >>> round(r500_from_tx(5.04, 0.1527))  # ACCEPT's Abell 907
    1030
    """
    if not (tx_kev is not None and math.isfinite(tx_kev) and tx_kev > 0):
        msg = f"tx_kev = {tx_kev}: give a positive temperature in keV"
        raise InputError(msg)
    if not (z is not None and math.isfinite(z) and z >= 0):
        msg = f"z = {z}: give a redshift ≥ 0"
        raise InputError(msg)
    cosmo = parse_cosmology(cosmology)
    h70 = cosmo.H0.to_value("km / (Mpc s)") / 70.0
    return float(1104.0 * (tx_kev / 5.0) ** 0.57 / float(cosmo.efunc(z)) / h70)


@dataclass(frozen=True)
class ClusterScales:
    """Physical scales of a cluster.

    Attributes
    ----------
    kpc_per_arcmin : float
        Proper kpc per arcmin at z (NaN without z).
    r500_kpc : float or None
        R500 (kpc), or None when unknown.
    r500_source : str or None
        ``"sample"`` (given), ``"scaling relation (…)"`` or None.
    cosmology : str
        Description of the cosmology used.
    z : float or None
    """

    kpc_per_arcmin: float
    r500_kpc: float | None
    r500_source: str | None
    cosmology: str
    z: float | None


def _finite(v: float | None) -> bool:
    return v is not None and not np.ma.is_masked(v) and math.isfinite(float(v))


def cluster_scales(z: float | None, r500_kpc: float | None = None, tx_kev: float | None = None,
                   cosmology: Any = None) -> ClusterScales:
    """Return kpc per arcmin and R500 (and where R500 came from) for a cluster.

    Parameters
    ----------
    z : float or None
        Redshift; without it the scale is NaN and R500 can only come from ``r500_kpc``.
    r500_kpc : float, optional
        R500 from the user's sample table; used as it is (``r500_source = "sample"``).
    tx_kev : float, optional
        Mean temperature; gives R500 through :func:`r500_from_tx` when ``r500_kpc`` is missing and z known.
    cosmology : see :func:`parse_cosmology`

    Returns
    -------
    ClusterScales
    """
    cosmo = parse_cosmology(cosmology)
    zz = float(z) if z is not None and _finite(z) else None
    if zz is not None and zz < 0:
        msg = f"z = {zz}: a redshift must be ≥ 0"
        raise InputError(msg)
    scale = float(cosmo.kpc_proper_per_arcmin(zz).to_value("kpc / arcmin")) if zz is not None and zz > 0 else math.nan
    r500: float | None = None
    source: str | None = None
    if _finite(r500_kpc):
        assert r500_kpc is not None
        if not float(r500_kpc) > 0:
            msg = f"r500_kpc = {r500_kpc}: R500 must be positive (kpc)"
            raise InputError(msg)
        r500, source = float(r500_kpc), "sample"
    elif _finite(tx_kev) and zz is not None:
        assert tx_kev is not None
        r500 = r500_from_tx(float(tx_kev), zz, cosmo)
        source = f"scaling relation ({R500_RELATION}; Tx = {float(tx_kev):g} keV)"
    return ClusterScales(kpc_per_arcmin=scale, r500_kpc=r500, r500_source=source,
                         cosmology=_describe_cosmology(cosmo), z=zz)


# ---------------------------------------------------------------- helpers


def contbin_background(bg: np.ndarray, *, expmap: np.ndarray | None = None, bgexpmap: np.ndarray | None = None,
                       exposure_s: float | None = None, bg_exposure_s: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Turn a contbin-style background image into expected counts and the background's exposure ratio.

    contbin scales a background image by ``r = expmap / bgexpmap`` per pixel (or
    the images' EXPOSURE keywords); the expected background counts are
    ``bg × r`` and the background rests on ``1/r`` times the source exposure.

    Parameters
    ----------
    bg : numpy.ndarray
        Background counts image (raw, unscaled).
    expmap, bgexpmap : numpy.ndarray, optional
        The source's and the background's exposure maps.
    exposure_s, bg_exposure_s : float, optional
        Constant exposures in place of missing maps (1 when neither is given), as contbin.

    Returns
    -------
    expected : numpy.ndarray
        Expected background counts per pixel at the source exposure (float64).
    ratio : numpy.ndarray
        ``bgexpmap / expmap`` per pixel: pass as ``background_ratio`` to :func:`measure_regions`.
    """
    from xmine.contbin import _exposure_ratio

    b = np.asarray(bg, dtype=np.float64)
    if b.ndim != 2:
        msg = f"background image has {b.ndim} dimensions; need a 2-D image"
        raise InputError(msg)
    for name, m in (("expmap", expmap), ("bgexpmap", bgexpmap)):
        if m is not None and np.shape(m) != b.shape:
            msg = f"{name} shape {np.shape(m)} differs from the background image shape {b.shape}"
            raise InputError(msg)
    r = _exposure_ratio(b.shape, expmap, bgexpmap, exposure_s, bg_exposure_s).astype(np.float64)
    return b * r, 1.0 / r


def _band_kev(band: str | Sequence[float]) -> tuple[float, float]:
    from xmine.images import BANDS

    if isinstance(band, str):
        if band not in BANDS:
            msg = f"band {band!r}: use one of {', '.join(BANDS)} or (emin_kev, emax_kev)"
            raise InputError(msg)
        return BANDS[band]
    lo, hi = (float(v) for v in band)
    if not 0 < lo < hi:
        msg = f"band {band}: need 0 < emin_kev < emax_kev"
        raise InputError(msg)
    return lo, hi


def _read_arf(arf: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Return (energ_lo, energ_hi, specresp, label) of an ARF path, a mapping or a 3-sequence of arrays."""
    if isinstance(arf, (str, Path)):
        p = Path(arf)
        try:
            with fits.open(p) as hdul:
                hdu = next(h for h in hdul[1:] if "SPECRESP" in getattr(h, "columns", fits.ColDefs([])).names)
                lo, hi, area = (np.asarray(hdu.data[c], dtype=float) for c in ("ENERG_LO", "ENERG_HI", "SPECRESP"))
        except (OSError, StopIteration, KeyError, TypeError, ValueError) as exc:
            msg = f"{p}: not an ARF with ENERG_LO, ENERG_HI, SPECRESP ({exc}); pass the observation's .arf"
            raise InputError(msg) from exc
        return lo, hi, area, str(p)
    try:
        if isinstance(arf, Mapping):
            lo, hi, area = (np.asarray(arf[k], dtype=float) for k in ("energ_lo", "energ_hi", "specresp"))
        else:
            lo, hi, area = (np.asarray(a, dtype=float) for a in arf)
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"arf: {exc}; give a path or (energ_lo_kev, energ_hi_kev, specresp_cm2) arrays"
        raise InputError(msg) from exc
    if not (lo.shape == hi.shape == area.shape and lo.ndim == 1 and lo.size):
        msg = "arf: energ_lo, energ_hi and specresp must be 1-D arrays of one length"
        raise InputError(msg)
    return lo, hi, area, "arrays"


def _photon_weights(spectrum: Any) -> tuple[Any, str]:
    """Return a photon spectrum ``w(E_keV)`` (photons/keV, unnormalised) and its description."""
    if callable(spectrum):
        return spectrum, "a user photon spectrum"
    if spectrum == "flat":
        return (lambda e: np.ones_like(e)), "flat in photons"
    try:
        kind, value = spectrum
        value = float(value)
    except (TypeError, ValueError) as exc:
        msg = (f"flux_spectrum = {spectrum!r}: give 'flat', ('powerlaw', photon_index), ('bremsstrahlung', kT_keV) "
               "or a function of energy (keV)")
        raise InputError(msg) from exc
    if kind == "powerlaw":
        return (lambda e: np.power(e, -value)), f"power law, photon index {value:g}"
    if kind == "bremsstrahlung" and value > 0:
        return ((lambda e: np.power(e, -1.4) * np.exp(-e / value)),
                f"bremsstrahlung kT = {value:g} keV, N(E) ~ E^-1.4 exp(-E/kT) (Gaunt factor ~ (E/kT)^-0.4)")
    msg = f"flux_spectrum = {spectrum!r}: kind must be 'powerlaw' or 'bremsstrahlung' (kT > 0)"
    raise InputError(msg)


def band_flux_per_rate(arf: Any, band_kev: tuple[float, float], *,
                       spectrum: Any = ("bremsstrahlung", 5.0)) -> float:
    """Return the energy flux (erg cm⁻² s⁻¹) per count s⁻¹ in a band, ``⟨E⟩ / ⟨A⟩`` weighted by a photon spectrum.

    ``⟨A⟩ = ∫A w dE / ∫w dE`` and ``⟨E⟩ = ∫E w dE / ∫w dE`` over the band, so the
    ratio ``∫E w dE / ∫A w dE`` is exact for a source of spectrum ``w``.

    Parameters
    ----------
    arf : path-like, mapping or sequence
        An ARF file, ``{"energ_lo", "energ_hi", "specresp"}`` or ``(energ_lo, energ_hi, specresp)``
        arrays (keV, keV, cm²).
    band_kev : (float, float)
    spectrum : str, tuple or callable, optional
        ``"flat"`` (in photons), ``("powerlaw", photon_index)``,
        ``("bremsstrahlung", kT_keV)`` (``E^-1.4 exp(-E/kT)``, the default at 5 keV), or a
        function of energy (keV) giving photons per keV.
    """
    lo, hi, area, label = _read_arf(arf)
    w_of, _ = _photon_weights(spectrum)
    e1, e2 = band_kev
    width = np.clip(np.minimum(hi, e2) - np.maximum(lo, e1), 0.0, None)
    inside = width > 0
    mid = 0.5 * (np.maximum(lo, e1) + np.minimum(hi, e2))
    w = np.zeros_like(width)
    w[inside] = width[inside] * np.asarray(w_of(mid[inside]), dtype=float)
    if w.sum() <= 0 or np.sum(area * w) <= 0:
        msg = f"{label}: the band {e1:g}-{e2:g} keV has no effective area in the ARF ({lo.min():g}-{hi.max():g} keV)"
        raise InputError(msg)
    return float(np.sum(mid * w) * _KEV_TO_ERG / np.sum(area * w))


def band_mean_energy_erg(band_kev: tuple[float, float], *, spectrum: Any = ("bremsstrahlung", 5.0)) -> float:
    """Return the mean photon energy (erg) over a band, weighted by a photon spectrum (see :func:`band_flux_per_rate`).

    It turns a photon flux (from an ARF-weighted exposure map) into an energy flux.
    """
    w_of, _ = _photon_weights(spectrum)
    e = np.linspace(band_kev[0], band_kev[1], 4001)
    w = np.asarray(w_of(e), dtype=float)
    return float(np.trapezoid(e * w, e) / np.trapezoid(w, e)) * _KEV_TO_ERG


def _gehrels_noise2(c: np.ndarray, b_raw: np.ndarray | None, q: np.ndarray | None) -> np.ndarray:
    """Return contbin's squared noise: Gehrels upper errors of the counts and of the scaled raw background."""
    n2 = (1.0 + np.sqrt(c + 0.75)) ** 2
    if b_raw is not None and q is not None:
        n2 = n2 + q * (1.0 + np.sqrt(np.clip(b_raw, 0.0, None) + 0.75)) ** 2
    return n2


def _image(name: str, a: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(shape, float(arr))
    if arr.shape != shape:
        msg = f"{name} shape {arr.shape} differs from the bin map's {shape}; give images on the bin map's grid"
        raise InputError(msg)
    return arr


# ---------------------------------------------------------------- the measurement


def measure_regions(binmap: np.ndarray, header: fits.Header, *, counts: np.ndarray, exposure: np.ndarray | float,
                    background: np.ndarray | None = None, background_ratio: np.ndarray | float = 1.0,
                    soft: np.ndarray | None = None, hard: np.ndarray | None = None,
                    soft_background: np.ndarray | None = None, hard_background: np.ndarray | None = None,
                    band_background_ratio: np.ndarray | float | None = None, mask: np.ndarray | None = None,
                    centre_radec: tuple[float, float], z: float | None = None, r500_kpc: float | None = None,
                    r500_source: str | None = None, cosmology: Any = None, arf: Any = None,
                    flux_spectrum: Any = ("bremsstrahlung", 5.0), exposure_unit: str = "s",
                    band_kev: tuple[float, float] | None = None,
                    hardness_bands: tuple[str | Sequence[float], str | Sequence[float]] = ("soft", "hard")) -> Table:
    """Measure every bin of a bin map (see the module docstring for the definitions).

    Parameters
    ----------
    binmap : numpy.ndarray
        Bin number per pixel; negative = unbinned.
    header : astropy.io.fits.Header
        The grid's header: celestial WCS, optional CIAO physical ``LTM/LTV`` and ``EMIN/EMAX`` (keV).
    counts : numpy.ndarray
        Counts image (the binned band).
    exposure : numpy.ndarray or float
        Exposure map (s) or one exposure; pixels ≤ 0 or non-finite are left out.
        An ARF-weighted map (cm² s, CIAO ``fluximage``) with ``exposure_unit="cm2 s"``.
    background : numpy.ndarray, optional
        Expected background counts per pixel at the source exposure
        (the pipeline's local background: ``rate_cps_per_pix × exposure``; a
        contbin-style image: :func:`contbin_background`).
    background_ratio : numpy.ndarray or float, optional
        Exposure the background was measured from / source exposure (per pixel or
        one number): sets the background's error. 1 as contbin with a background image
        of the observation's length; ``numpy.inf`` for a background known exactly.
    soft, hard : numpy.ndarray, optional
        Counts images in the two ``hardness_bands``; without them the band columns are NaN.
    soft_background, hard_background : numpy.ndarray, optional
        Their expected background counts per pixel.
    band_background_ratio : numpy.ndarray or float, optional
        As ``background_ratio`` for the band backgrounds (default: ``background_ratio``).
    mask : numpy.ndarray, optional
        1 = use, 0 = leave out (point sources).
    centre_radec : (float, float)
        Cluster centre (deg).
    z : float, optional
        Redshift, for ``r_kpc``.
    r500_kpc : float, optional
        R500, for ``r_r500``.
    r500_source : str, optional
        Where R500 came from (recorded in ``meta``; default ``"given"`` when R500 is).
    cosmology : see :func:`parse_cosmology`
    arf : path-like, mapping or sequence, optional
        ARF for the energy-flux columns (see :func:`band_flux_per_rate`); NaN without.
    flux_spectrum : str, tuple or callable, optional
        Photon spectrum weighting the ARF and the energies (see :func:`band_flux_per_rate`).
    exposure_unit : {"s", "cm2 s"}, optional
        Unit of ``exposure`` (a FITS ``BUNIT`` such as ``cm**2 s`` is accepted). With
        ``cm2 s`` the map holds the effective area: the count-rate columns and
        ``exposure_mean_s`` are NaN and the flux is the photon flux ``net / ⟨exposure⟩``
        times the spectrum-weighted mean photon energy (no ``arf`` then).
    band_kev : (float, float), optional
        Band of ``counts`` (default: the header's EMIN/EMAX, else 0.5–7 keV).
    hardness_bands : pair of band names or (emin, emax) tuples
        The bands of ``soft`` and ``hard`` (names from :data:`xmine.images.BANDS`).

    Returns
    -------
    astropy.table.Table
        One row per bin number ≥ 0 with at least one used pixel, sorted by ``bin_id``;
        columns as :data:`COLUMNS`, units in ``table[col].unit``; ``meta`` records the bands,
        cosmology, R500 and its source, the centre and the approximations.
    """
    from astropy.coordinates import SkyCoord
    from astropy.wcs.utils import proj_plane_pixel_scales

    from xmine.images import celestial_wcs

    bm = np.asarray(binmap)
    if bm.ndim != 2:
        msg = f"bin map has {bm.ndim} dimensions; need a 2-D image"
        raise InputError(msg)
    if bm.dtype.kind not in "iu":
        if not np.all(np.isfinite(bm)) or np.any(bm != np.round(bm)):
            msg = "bin map holds non-integer or non-finite values; pass contbin's binmap (integers, -1 unbinned)"
            raise InputError(msg)
        bm = bm.astype(np.int64)
    shape = bm.shape
    c_img = _image("counts", counts, shape)
    if np.any(~np.isfinite(c_img)) or np.any(c_img < 0):
        msg = "counts image holds negative or non-finite values; pass a counts image"
        raise InputError(msg)
    e_img = _image("exposure", exposure, shape)
    used = (bm >= 0) & np.isfinite(e_img) & (e_img > 0)
    if mask is not None:
        used &= _image("mask", mask, shape) > 0
    ids, inv = np.unique(bm[used], return_inverse=True)
    nb = len(ids)

    def sums(a: np.ndarray) -> np.ndarray:
        return np.bincount(inv, weights=a[used], minlength=nb).astype(np.float64)

    n_pix = np.bincount(inv, minlength=nb).astype(np.int64)
    C = sums(c_img)
    e_mean = sums(e_img) / np.maximum(n_pix, 1)

    def net_and_err(cimg: np.ndarray, bimg: np.ndarray | None, ratio: Any) -> tuple[np.ndarray, ...]:
        c = sums(cimg)
        if bimg is None:
            return c, np.zeros(nb), c, np.sqrt(_gehrels_noise2(c, None, None))
        ratio_img = _image("background ratio", ratio, shape)
        if np.any(~(ratio_img[used] > 0)):
            msg = "background_ratio must be > 0 (inf for an exactly known background) on every binned pixel"
            raise InputError(msg)
        w = sums(bimg)
        finite = np.isfinite(ratio_img)
        b_raw = sums(np.where(finite, bimg * np.where(finite, ratio_img, 0.0), 0.0))
        q = sums(np.where(finite, 1.0 / np.where(finite, ratio_img, 1.0), 0.0) ** 2) / np.maximum(n_pix, 1)
        return c, w, c - w, np.sqrt(_gehrels_noise2(c, b_raw, q))

    b_img = None if background is None else _image("background", background, shape)
    _, W, net, err = net_and_err(c_img, b_img, background_ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        sn = np.abs(net) / err

    # geometry
    wcs = celestial_wcs(header, source="bin map header")
    scales = proj_plane_pixel_scales(wcs)[:2] * 3600.0
    pix_area = float(abs(scales[0] * scales[1]))
    area = n_pix * pix_area
    grid: np.ndarray = np.indices(shape, dtype=np.float64)
    yy, xx = grid[0], grid[1]
    cx = sums(xx * c_img)
    cy = sums(yy * c_img)
    with np.errstate(divide="ignore", invalid="ignore"):
        x0 = np.where(C > 0, cx / C, sums(xx) / n_pix)
        y0 = np.where(C > 0, cy / C, sums(yy) / n_pix)
    del grid, xx, yy
    ra, dec = wcs.pixel_to_world_values(x0, y0)
    ra = np.asarray(ra, dtype=float) % 360.0
    dec = np.asarray(dec, dtype=float)
    try:
        ltm1, ltm2 = float(header["LTM1_1"]), float(header["LTM2_2"])
        ltv1, ltv2 = float(header["LTV1"]), float(header["LTV2"])
        x_phys, y_phys = (x0 + 1.0 - ltv1) / ltm1, (y0 + 1.0 - ltv2) / ltm2
    except (KeyError, TypeError, ValueError):
        x_phys = y_phys = np.full(nb, np.nan)
    ra_c, dec_c = (float(v) for v in centre_radec)
    if not (math.isfinite(ra_c) and -90.0 <= dec_c <= 90.0):
        msg = f"centre_radec = {centre_radec}: give the cluster centre RA, Dec in degrees"
        raise InputError(msg)
    r_arcmin = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(ra_c, dec_c, unit="deg")).arcmin
    # the mean distance of the bin's pixels from the centre: contour bins follow isophotes, and an outer bin
    # can be a ring whose centroid (r_arcmin) lies near the centre
    cpx, cpy = (float(v) for v in wcs.world_to_pixel_values(ra_c, dec_c))
    yy, xx = np.indices(shape, dtype=np.float64)
    r_mean_arcmin = sums(np.hypot(xx - cpx, yy - cpy)) / np.maximum(n_pix, 1) * math.sqrt(pix_area) / 60.0
    del xx, yy
    scale = cluster_scales(z, r500_kpc, None, cosmology)
    r_kpc = np.asarray(r_arcmin) * scale.kpc_per_arcmin
    r_r500 = r_kpc / scale.r500_kpc if scale.r500_kpc else np.full(nb, np.nan)

    # rates, surface brightness, flux
    if band_kev is None:
        band_kev = ((float(header["EMIN"]), float(header["EMAX"])) if "EMIN" in header and "EMAX" in header
                    else _band_kev("broad"))
    unit = exposure_unit.replace("**", "").replace("^", "").replace(" ", "").lower()
    if unit not in ("s", "cm2s", "scm2"):
        msg = f"exposure_unit = {exposure_unit!r}: give 's' (time) or 'cm2 s' (an ARF-weighted exposure map)"
        raise InputError(msg)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = net / e_mean
        sb = rate / area
        sb_err = err / e_mean / area
    if unit == "s":
        flux_per_rate = (band_flux_per_rate(arf, band_kev, spectrum=flux_spectrum) if arf is not None
                         else math.nan)
        flux_note = (f"{ARF_WEIGHTING}; spectrum: {_photon_weights(flux_spectrum)[1]}; ARF {_read_arf(arf)[3]}"
                     if arf is not None else "no ARF: flux columns NaN")
    else:
        if arf is not None:
            msg = "an exposure map in cm2 s already holds the effective area; do not also give an ARF"
            raise InputError(msg)
        flux_per_rate = band_mean_energy_erg(band_kev, spectrum=flux_spectrum)
        flux_note = (f"photon flux (exposure map in {exposure_unit}) x mean photon energy, spectrum: "
                     f"{_photon_weights(flux_spectrum)[1]}")
    flux, flux_err = sb * flux_per_rate, sb_err * flux_per_rate
    if unit != "s":
        e_mean = rate = sb = sb_err = np.full(nb, np.nan)

    # bands
    bands = tuple(_band_kev(b) for b in hardness_bands)
    if len(bands) != 2:
        msg = f"hardness_bands = {hardness_bands}: give two bands (soft, hard)"
        raise InputError(msg)
    ratio_b = background_ratio if band_background_ratio is None else band_background_ratio
    band_cols: dict[str, np.ndarray] = {}
    for label, img, bimg in (("soft", soft, soft_background), ("hard", hard, hard_background)):
        if img is None:
            band_cols[f"{label}_net"] = band_cols[f"{label}_err"] = np.full(nb, np.nan)
            continue
        bi = _image(f"{label} counts", img, shape)
        if np.any(~np.isfinite(bi[used])) or np.any(bi[used] < 0):
            msg = f"{label} counts image holds negative or non-finite values; pass a counts image"
            raise InputError(msg)
        _, _, band_net, band_err = net_and_err(
            bi, None if bimg is None else _image(f"{label} background", bimg, shape), ratio_b)
        band_cols[f"{label}_net"], band_cols[f"{label}_err"] = band_net, band_err
    S, H = band_cols["soft_net"], band_cols["hard_net"]
    sS, sH = band_cols["soft_err"], band_cols["hard_err"]
    with np.errstate(divide="ignore", invalid="ignore"):
        hr = (H - S) / (H + S)
        hr_err = 2.0 * np.sqrt((S * sH) ** 2 + (H * sS) ** 2) / (H + S) ** 2

    tab = Table()
    values: dict[str, Any] = {
        "bin_id": ids.astype(np.int32), "n_pix": n_pix, "area_arcsec2": area, "counts": C, "bg_counts": W,
        "net_counts": net, "net_err": err, "sn": sn, "exposure_mean_s": e_mean, "rate_cps": rate,
        "sb_cps_arcsec2": sb, "sb_cps_arcsec2_err": sb_err, "sb_flux_cgs_arcsec2": flux,
        "sb_flux_cgs_arcsec2_err": flux_err, **band_cols, "hr": hr, "hr_err": hr_err,
        "x_pix": x0 + 1.0, "y_pix": y0 + 1.0, "x_phys": x_phys, "y_phys": y_phys, "ra_deg": ra, "dec_deg": dec,
        "r_arcmin": np.asarray(r_arcmin, dtype=float), "r_mean_arcmin": r_mean_arcmin, "r_kpc": r_kpc,
        "r_r500": r_r500,
    }
    for name, col_unit in COLUMNS.items():
        col = np.asarray(values[name])
        tab[name] = col if col.dtype.kind in "iu" else col.astype(np.float64)
        if col_unit is not None:
            tab[name].unit = col_unit
    tab.meta.update({
        "band_kev": list(band_kev),
        "soft_band_kev": list(bands[0]),
        "hard_band_kev": list(bands[1]),
        "hardness": "hr = (hard_net - soft_net) / (hard_net + soft_net), first-order propagated error",
        "errors": "contbin/Gehrels: net_err^2 = (1+sqrt(C+0.75))^2 + (sum r^2/n)(1+sqrt(B_raw+0.75))^2; sn = |net|/err",
        "flux": flux_note,
        "pixel_arcsec2": pix_area,
        "centre_ra_deg": ra_c,
        "centre_dec_deg": dec_c,
        "z": scale.z,
        "cosmology": scale.cosmology,
        "kpc_per_arcmin": scale.kpc_per_arcmin,
        "r500_kpc": scale.r500_kpc,
        "r500_source": (r500_source or "given") if scale.r500_kpc is not None else None,
        "centroid": "count-weighted, 1-based FITS image pixels; physical via LTM/LTV",
        "exposure": "mean of the exposure map over the bin (s); rate = net / mean exposure",
    })
    return tab


# ---------------------------------------------------------------- from the pipeline's files


def _need(outputs: Mapping[str, Any], step: str, key: str) -> Path:
    try:
        value = outputs[step][key]
    except (KeyError, TypeError) as exc:
        msg = (f"the pipeline outputs have no {step}[{key!r}]; run process_cluster to the end "
               "(or pass ClusterResult.outputs)")
        raise InputError(msg) from exc
    p = Path(value)
    if not p.exists():
        msg = f"{p}: no such file (the {step} step's {key}); rerun xmine process for this cluster"
        raise InputError(msg)
    return p


def _read(path: Path, what: str) -> tuple[np.ndarray, fits.Header]:
    from xmine.contbin import _read_image

    return _read_image(path, what)


_BKGREG = re.compile(r"annulus\s+([0-9.eE+-]+)\s*[-–]\s*([0-9.eE+a-z-]+)\s+px")


def _annulus_r_in(header: fits.Header, path: Path) -> float | None:
    reg = str(header.get("BKGREG", ""))
    m = _BKGREG.search(reg)
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError as exc:  # pragma: no cover - the pattern only admits numbers
        msg = f"{path}: BKGREG {reg!r} is not an annulus; rerun the background step"
        raise InputError(msg) from exc


def measure_cluster(outputs: Mapping[str, Any], cluster: Any, *, cosmology: Any = None, arf: Any = None,
                    flux_spectrum: Any = None,
                    hardness_bands: tuple[str, str] = ("soft", "hard"),
                    bg_inner_arcmin: float | None = None) -> Table:
    """Measure every contour bin of a cluster from the files :func:`xmine.pipeline.process_cluster` wrote.

    The cropped counts, exposure, mask and background (and ``bgexpmap``) and the
    bin map are read as binned; the band images named in ``hardness_bands`` are
    cut from the merged images on the crop's grid (checked through the crop's
    ``LTV``), and their backgrounds are estimated with
    :func:`xmine.background.local_background` on the merged band images, with the
    pipeline's annulus (from the background image's ``BKGREG``) and mask.

    Parameters
    ----------
    outputs : mapping
        ``ClusterResult.outputs``: ``merge``, ``masks``, ``background`` (optional),
        ``crop`` and ``contbin`` entries with the paths the steps wrote.
    cluster : xmine.pipeline.ClusterSpec
        Name, centre, ``z``, ``r500_kpc`` and ``tx_kev`` (for R500 through :func:`cluster_scales`).
    cosmology : see :func:`parse_cosmology`
    arf : optional
        ARF for the flux columns (see :func:`measure_regions`).
    flux_spectrum : optional
        Weighting spectrum of the flux (see :func:`band_flux_per_rate`); default a
        bremsstrahlung at the cluster's ``tx_kev``, else at 5 keV.
    hardness_bands : (str, str)
        Merged band images used as soft and hard (keys of ``outputs["merge"]``).
    bg_inner_arcmin : float, optional
        Inner radius of the band-background annulus when the background image
        does not record it (blank-sky backgrounds); default: the background's
        ``BKGREG``, else ``process.bg_inner_arcmin``'s default.

    Returns
    -------
    astropy.table.Table
        As :func:`measure_regions`, ``meta`` adding the cluster name and the band backgrounds used.

    Raises
    ------
    xmine.errors.InputError
        A step's output is missing or unreadable, or the grids do not match.
    """
    from xmine import images
    from xmine.background import local_background
    from xmine.config import ProcessConfig

    counts_path = _need(outputs, "crop", "counts")
    counts, header = _read(counts_path, "cropped counts image")
    exposure, exp_header = _read(_need(outputs, "crop", "exposure"), "cropped exposure map")
    mask, _ = _read(_need(outputs, "crop", "mask"), "cropped mask")
    binmap_path = _need(outputs, "contbin", "binmap")
    binmap, _ = _read(binmap_path, "bin map")
    for name, arr in (("exposure", exposure), ("mask", mask), ("binmap", binmap)):
        if arr.shape != counts.shape:
            msg = f"the {name} has shape {arr.shape} but {counts_path} has {counts.shape}; rerun xmine process"
            raise InputError(msg)
    exposure = np.clip(np.nan_to_num(exposure.astype(np.float64)), 0.0, None)

    background = ratio = None
    bk = outputs.get("background") or {}
    bg_note = "none"
    if bk:
        bg_path = _need(outputs, "crop", "background")
        raw, _ = _read(bg_path, "cropped background image")
        bgexp, _ = _read(_need(outputs, "crop", "bgexpmap"), "cropped background exposure map")
        background, ratio = contbin_background(raw, expmap=exposure, bgexpmap=bgexp)
        bg_note = f"binning background {bg_path} scaled by exposure/bgexpmap"

    # band images on the crop grid, cut as the crop step cut the broad band
    merged_counts_path = _need(outputs, "merge", "broad")
    merged_header = fits.getheader(merged_counts_path)
    band_imgs: dict[str, np.ndarray] = {}
    merged_bands: dict[str, np.ndarray] = {}
    for label, band in zip(("soft", "hard"), hardness_bands, strict=True):
        path = _need(outputs, "merge", band)
        img, h = _read(path, f"merged {band} image")
        cut, ch, _ = images.crop_image(img, h, ra_deg=cluster.ra_deg, dec_deg=cluster.dec_deg,
                                       size_pix=counts.shape[0])
        for key in ("LTV1", "LTV2"):
            if key not in header or abs(float(ch[key]) - float(header[key])) > 1e-6 or cut.shape != counts.shape:
                msg = (f"{path}: cut to the crop grid, it does not match {counts_path} ({key}); "
                       "rerun xmine process so the merged images and the crop agree")
                raise InputError(msg)
        band_imgs[label] = cut
        merged_bands[label] = img

    band_bg: dict[str, np.ndarray | None] = {"soft": None, "hard": None}
    band_ratio: float | None = None
    if bk:
        bh = fits.getheader(_need(outputs, "background", "background"))
        r_in_pix = _annulus_r_in(bh, Path(outputs["background"]["background"]))
        w = images.celestial_wcs(merged_header, source=str(merged_counts_path))
        if bg_inner_arcmin is not None or r_in_pix is None:
            inner = (bg_inner_arcmin if bg_inner_arcmin is not None
                     else float(ProcessConfig.model_fields["bg_inner_arcmin"].default))
            from astropy.wcs.utils import proj_plane_pixel_scales

            r_in_pix = inner * 60.0 / float(np.mean(proj_plane_pixel_scales(w)[:2]) * 3600.0)
        m_exposure = np.clip(np.nan_to_num(_read(_need(outputs, "merge", "exposure"), "merged exposure map")[0]
                                           .astype(np.float64)), 0.0, None)
        m_mask, _ = _read(_need(outputs, "masks", "mask"), "point-source mask")
        cx, cy = (float(v) for v in w.world_to_pixel_values(cluster.ra_deg, cluster.dec_deg))
        areas = []
        for label in ("soft", "hard"):
            est = local_background(merged_bands[label], exposure=m_exposure, mask=m_mask, center_xy=(cx, cy),
                                   r_in_pix=r_in_pix)
            band_bg[label] = est.expected_counts(exposure)
            areas.append(est.area_pix)
        band_ratio = float(max(min(areas), 1))
        bg_note += (f"; band backgrounds: local annulus r > {r_in_pix:.1f} px around the cluster, point sources "
                    f"masked, ratio {band_ratio:g} (annulus pixels)")

    tx = float(cluster.tx_kev) if _finite(getattr(cluster, "tx_kev", None)) and cluster.tx_kev > 0 else 5.0
    scales = cluster_scales(getattr(cluster, "z", None), getattr(cluster, "r500_kpc", None),
                            getattr(cluster, "tx_kev", None), cosmology)
    tab = measure_regions(binmap, header, counts=counts, exposure=exposure, background=background,
                          background_ratio=1.0 if ratio is None else ratio, soft=band_imgs["soft"],
                          hard=band_imgs["hard"], soft_background=band_bg["soft"],
                          hard_background=band_bg["hard"], band_background_ratio=band_ratio, mask=mask,
                          centre_radec=(cluster.ra_deg, cluster.dec_deg), z=scales.z, r500_kpc=scales.r500_kpc,
                          r500_source=scales.r500_source, cosmology=cosmology, arf=arf,
                          flux_spectrum=flux_spectrum if flux_spectrum is not None else ("bremsstrahlung", tx),
                          exposure_unit=str(exp_header.get("BUNIT", "s")),
                          hardness_bands=hardness_bands)
    tab.meta["cluster"] = cluster.name
    tab.meta["background"] = bg_note
    tab.meta["binmap"] = str(binmap_path)
    return tab


def write_regions(path: str | Path, table: Table) -> Path:
    """Write a :func:`measure_regions` table as a FITS binary table, atomically.

    Column units become ``TUNIT``; metadata with FITS-sized names become header
    keywords, the others (and lists, None) one ``COMMENT`` line each, so
    astropy, CIAO and ``fitsverify`` read the file unchanged.

    Parameters
    ----------
    path : path-like
    table : astropy.table.Table

    Returns
    -------
    pathlib.Path
    """
    from xmine.store import atomic_write

    out = table.copy(copy_data=False)
    meta: dict[str, Any] = {}
    comments = []
    for key, value in table.meta.items():
        if (len(key) <= 8 and key.replace("_", "").isalnum() and isinstance(value, (int, float, str))
                and len(str(value)) <= 60):
            meta[key.upper()] = value.encode("ascii", "replace").decode() if isinstance(value, str) else value
        else:
            comments.append(f"{key} = {value}".encode("ascii", "replace").decode())
    meta["EXTNAME"] = "REGIONS"
    meta["COMMENT"] = comments
    out.meta = meta
    target = Path(path)
    with atomic_write(target) as tmp:
        out.write(tmp, format="fits")
    return target
