"""Flux changes and new sources: a new source list against cached catalogue fluxes.

A *reference* list (cached CSC 2.1 / 4XMM rows, or any catalogue epoch) and a
*new* list (another epoch, or xmine's own detections on an obsid via
:func:`detections_to_flux_list`) are matched one-to-one by position (nearest
first, within ``match_radius_arcsec``). Every flux is carried as a 90 %
interval ``[lo, hi]``; then, with ``factor`` (default 3, the XMM team's example
alert threshold):

``brightened``  matched, and ``lo_new / hi_ref > factor``
``faded``       matched, and ``lo_ref / hi_new > factor``
``unchanged``   matched, neither (the flux moved by less than the factor beyond the error bars)
``vanished``    a reference source with no new detection, and ``lo_ref / limit_new > factor``,
                ``limit_new`` being the new epoch's upper limit at its position (a
                sensitivity map, or a per-position or uniform limit)
``undetected``  a reference source with no new detection that the limit cannot call a change
                (``lo_ref / limit_new ≤ factor``, or no limit there: outside the map)
``new``         a new detection with no reference counterpart; ``ratio`` is
                ``lo_new / limit_ref`` when the reference epoch's limit is known
                (``exceeds_factor`` says whether it beats the factor)

Each row carries the numbers its flag rests on (both intervals, the limit, the
ratio used, the factor, and the rule as text). ``alert`` is true for
brightened, faded, vanished and new.

Intervals: the reference's ``*_lolim``/``*_hilim`` (CSC) or ``± err`` (4XMM's 1σ
``*_ERR``) are rescaled to 90 % assuming Gaussian errors: half-widths are
multiplied by z₉₀/z_c (z₉₀ = 1.645; a 1σ error has c = 0.6827). Give the
confidence of the catalogue's limits (``ref_confidence``; xmine's simulated CSC
rows use 90 %; check the column description of a real catalogue).

Comparisons across bands or instruments (CSC 0.5–7 keV ACIS against EPIC
0.2–12 keV, or ACIS against HRC) convert spectra through different responses:
a factor of a few can come from the band and the assumed spectrum alone. A
:class:`~xmine.errors.XmineWarning` is issued when the bands or instruments
given differ; compare like with like where you can.

Approximations: positions are matched within a fixed radius (no error
ellipses); a sensitivity map is sampled at the nearest pixel; limits and
intervals are taken as given (no Eddington bias correction).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from xmine.classify import read_catalogue_table
from xmine.errors import InputError, XmineWarning

__all__ = [
    "FLAGS",
    "SensitivityMap",
    "compare_fluxes",
    "detections_to_flux_list",
    "flux_list",
    "read_sensitivity_map",
    "run_changes",
]

#: The flags of :func:`compare_fluxes`.
FLAGS = ("brightened", "faded", "unchanged", "vanished", "undetected", "new")
_Z90 = 1.6448536269514722
_NAME_COLS = ("name", "iauname", "srcid", "detid", "source")
_RA_DEC = (("ra", "dec"), ("ra_deg", "dec_deg"), ("sc_ra", "sc_dec"))
_FLUX_COLS = ("flux_aper_b", "flux_aper90_b", "sc_ep_8_flux", "ep_8_flux", "flux")
#: Band (keV) and instrument of catalogue flux columns, used when the caller does not say.
_KNOWN_FLUX: dict[str, tuple[tuple[float, float], str]] = {
    "flux_aper_b": ((0.5, 7.0), "Chandra ACIS"), "flux_aper90_b": ((0.5, 7.0), "Chandra ACIS"),
    "sc_ep_8_flux": ((0.2, 12.0), "XMM-Newton EPIC"), "ep_8_flux": ((0.2, 12.0), "XMM-Newton EPIC"),
}


# ---------------------------------------------------------------------------- sensitivity maps
@dataclass
class SensitivityMap:
    """A flux-limit image with a celestial WCS.

    Attributes
    ----------
    data : numpy.ndarray
        Limits (erg cm⁻² s⁻¹ after ``flux_per_map_unit``), 2-D.
    wcs : astropy.wcs.WCS
        Celestial WCS of ``data``.
    path : Path or None
        Where it was read from.
    """

    data: np.ndarray
    wcs: Any
    path: Path | None = None

    def limit_at(self, ra_deg: Any, dec_deg: Any) -> np.ndarray:
        """Return the limit at each position (nearest pixel; NaN off the map or where it is ≤ 0 or not finite)."""
        ra, dec = np.atleast_1d(np.asarray(ra_deg, float)), np.atleast_1d(np.asarray(dec_deg, float))
        x, y = self.wcs.all_world2pix(ra, dec, 0)
        ix, iy = np.round(x), np.round(y)
        ny, nx = self.data.shape
        inside = np.isfinite(ix) & np.isfinite(iy) & (ix >= 0) & (iy >= 0) & (ix < nx) & (iy < ny)
        out = np.full(ra.shape, np.nan)
        vals = self.data[iy[inside].astype(int), ix[inside].astype(int)].astype(float)
        out[inside] = np.where(np.isfinite(vals) & (vals > 0), vals, np.nan)
        return out


def read_sensitivity_map(path: str | os.PathLike[str], *, hdu: int | str | None = None,
                         flux_per_map_unit: float | None = None) -> SensitivityMap:
    """Read a sensitivity (limiting-flux) map from FITS.

    Parameters
    ----------
    path : path-like
        FITS file; the first HDU with a 2-D image is used unless ``hdu`` is given
        (a 3-D cube with one plane is squeezed).
    hdu : int or str, optional
        HDU index or EXTNAME.
    flux_per_map_unit : float, optional
        Multiply the map by this to get erg cm⁻² s⁻¹ (needed when ``BUNIT`` is a
        photon flux or a count rate: the energy per photon or ECF of your spectrum).

    Returns
    -------
    SensitivityMap

    Raises
    ------
    xmine.errors.InputError
        No such file, no image, no celestial WCS, or a photon/count ``BUNIT`` without ``flux_per_map_unit``.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    p = Path(path)
    if not p.exists():
        msg = f"{p}: no such sensitivity map"
        raise InputError(msg)
    try:
        with fits.open(p) as hdul:
            cands = [hdul[hdu]] if hdu is not None else [h for h in hdul if h.is_image and h.data is not None
                                                         and np.squeeze(h.data).ndim == 2]
            if not cands:
                msg = f"{p}: no 2-D image HDU; a sensitivity map is an image of limiting fluxes"
                raise InputError(msg)
            h = cands[0]
            data = np.asarray(np.squeeze(h.data), dtype=float)
            header = h.header.copy()
    except (OSError, KeyError, IndexError) as exc:
        msg = f"{p}: cannot read as FITS ({str(exc).splitlines()[0]})"
        raise InputError(msg) from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FITSFixedWarning about the header's own conventions
        wcs = WCS(header, naxis=2) if header.get("NAXIS", 0) >= 2 else None
    if wcs is None or not wcs.has_celestial:
        msg = (f"{p}: the sensitivity map has no celestial WCS (CTYPE1/CTYPE2 such as RA---TAN/DEC--TAN with "
               "CRVAL/CRPIX/CDELT); xmine cannot place sources on it")
        raise InputError(msg)
    bunit = str(header.get("BUNIT", "")).lower()
    if any(w in bunit for w in ("photon", "ph ", "count", "ct")) and flux_per_map_unit is None:
        msg = (f"{p}: BUNIT is {header.get('BUNIT')!r}, not an energy flux; give flux_per_map_unit "
               "(--map-flux-per-unit, erg per photon or per count for your spectrum)")
        raise InputError(msg)
    if flux_per_map_unit is not None:
        data = data * float(flux_per_map_unit)
    return SensitivityMap(data=data, wcs=wcs.celestial, path=p)


Limit = float | SensitivityMap | str | os.PathLike[str] | Callable[[np.ndarray, np.ndarray], np.ndarray] | np.ndarray


def _limits(limit: Limit | None, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    if limit is None:
        return np.full(ra.shape, np.nan)
    if isinstance(limit, (str, os.PathLike)):
        limit = read_sensitivity_map(limit)
    if isinstance(limit, SensitivityMap):
        return limit.limit_at(ra, dec)
    if callable(limit):
        return np.asarray(limit(ra, dec), dtype=float)
    arr = np.asarray(limit, dtype=float)
    if arr.ndim == 0:
        return np.full(ra.shape, float(arr))
    if arr.shape != ra.shape:
        msg = f"per-position limits: {arr.size} values for {ra.size} positions"
        raise InputError(msg)
    return arr


# ---------------------------------------------------------------------------- flux lists
def _find(t: Table, names: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in t.colnames}
    return next((lower[n.lower()] for n in names if n.lower() in lower), None)


def _vals(t: Table, col: str) -> np.ndarray:
    c = t[col]
    v = np.asarray(c.data if hasattr(c, "data") else c).astype(float)
    return np.where(np.ma.getmaskarray(c), np.nan, v) if getattr(c, "mask", None) is not None else v


def flux_list(table: Any, *, flux: str | None = None, lo: str | None = None, hi: str | None = None,
              err: str | None = None, confidence: float = 0.90, store: Any = None, what: str = "table") -> Table:
    """Normalise a source list to ``name, ra, dec, flux, flux_lo90, flux_hi90``.

    Columns are found case-insensitively: name (``name``, ``iauname``, ``srcid``…),
    position (``ra/dec``, ``ra_deg/dec_deg``, ``sc_ra/sc_dec``), flux (``flux_aper_b``,
    ``flux_aper90_b``, ``sc_ep_8_flux``, ``ep_8_flux``, ``flux``), and its interval: CSC's
    ``<flux>_lolim``/``_hilim`` (band suffix after, as ``flux_aper_lolim_b``), ``flux_lo``/``flux_hi``,
    or a 1σ error ``<flux>_err``.

    Parameters
    ----------
    table : table source
        File, store table name, or table (:func:`xmine.classify.read_catalogue_table`).
    flux, lo, hi, err : str, optional
        Column names, when not found automatically.
    confidence : float, optional
        Confidence of the ``lo``/``hi`` limits (rescaled to 90 %, Gaussian); a 1σ
        ``err`` is always taken as 68.27 %.
    store : xmine.store.Store, optional
        To read ``table`` by name.
    what : str, optional
        Name of the list in error messages.

    Returns
    -------
    astropy.table.Table
    """
    t = read_catalogue_table(table, store=store)
    pos = next(((r, d) for r, d in _RA_DEC if _find(t, [r]) and _find(t, [d])), None)
    fcol = _find(t, [flux]) if flux else _find(t, _FLUX_COLS)
    if pos is None or fcol is None:
        msg = (f"{what}: needs positions (ra/dec, ra_deg/dec_deg or sc_ra/sc_dec) and a flux column "
               f"({', '.join(_FLUX_COLS)}, or name it); it has {', '.join(t.colnames[:30])}")
        raise InputError(msg)
    f = _vals(t, fcol)
    base, _, band = fcol.rpartition("_")
    lo_col = _find(t, [lo]) if lo else _find(t, [f"{base}_lolim_{band}", f"{fcol}_lolim", "flux_lo"])
    hi_col = _find(t, [hi]) if hi else _find(t, [f"{base}_hilim_{band}", f"{fcol}_hilim", "flux_hi"])
    err_col = _find(t, [err]) if err else _find(t, [f"{fcol}_err", "flux_err"])
    if lo_col and hi_col:
        scale = _Z90 / _z(confidence)
        f_lo, f_hi = _vals(t, lo_col), _vals(t, hi_col)
        f_lo90 = f - (f - f_lo) * scale
        f_hi90 = f + (f_hi - f) * scale
        how = f"{lo_col}/{hi_col} ({confidence:.0%}) rescaled to 90 %"
    elif err_col:
        e = _vals(t, err_col)
        f_lo90, f_hi90 = f - _Z90 * e, f + _Z90 * e
        how = f"{fcol} ± 1.645 × {err_col} (1σ)"
    else:
        msg = f"{what}: no interval for {fcol} (no {base}_lolim_{band}/_hilim_{band}, flux_lo/flux_hi or {fcol}_err)"
        raise InputError(msg)
    out = Table()
    ncol = _find(t, _NAME_COLS)
    out["name"] = np.array([str(v) for v in t[ncol]], dtype=str) if ncol else \
        np.array([f"{what}_{i + 1}" for i in range(len(t))], dtype=str)
    out["ra"] = _vals(t, _find(t, [pos[0]]) or pos[0])
    out["dec"] = _vals(t, _find(t, [pos[1]]) or pos[1])
    out["flux"] = f
    out["flux_lo90"] = np.maximum(f_lo90, 0.0)
    out["flux_hi90"] = f_hi90
    for c in ("flux", "flux_lo90", "flux_hi90"):
        out[c].unit = "erg cm-2 s-1"
    out.meta["flux_column"] = fcol
    out.meta["interval"] = how
    return out


def _z(confidence: float) -> float:
    from scipy.special import ndtri

    if not 0 < confidence < 1:
        msg = f"confidence {confidence} must be between 0 and 1 (e.g. 0.90 or 0.6827)"
        raise InputError(msg)
    return float(ndtri(0.5 + confidence / 2))


def detections_to_flux_list(detections: Table, *, exposure_s: float, ecf_erg_cm2_per_count: float,
                            confidence: float = 0.90) -> Table:
    """Turn :func:`xmine.detect.detect_sources` output into a flux list with 90 % intervals.

    ``flux = net_counts × ecf / exposure``. The interval is the exact Poisson
    interval of the aperture counts (``aper_counts``; chi-square form, Garwood)
    minus the background counts taken as known, clipped at 0; the aperture is
    detect's 2 × r90, not aperture-corrected (a few per cent low for point sources).

    Parameters
    ----------
    detections : astropy.table.Table
        Rows with ``ra_deg, dec_deg, aper_counts, aper_bkg, net_counts``.
    exposure_s : float
        Exposure at the sources (s; vignetting ignored).
    ecf_erg_cm2_per_count : float
        Energy flux per count rate for the assumed spectrum and band (erg cm⁻² per count).
    confidence : float, optional
        Interval width (0.90).
    """
    from scipy.stats import chi2

    if exposure_s <= 0 or ecf_erg_cm2_per_count <= 0:
        msg = "exposure_s and ecf_erg_cm2_per_count must be positive"
        raise InputError(msg)
    n = np.asarray(detections["aper_counts"], float)
    b = np.asarray(detections["aper_bkg"], float)
    a = 1 - confidence
    lo_c = np.where(n > 0, chi2.ppf(a / 2, 2 * n) / 2, 0.0)
    hi_c = chi2.ppf(1 - a / 2, 2 * n + 2) / 2
    k = ecf_erg_cm2_per_count / exposure_s
    out = Table()
    out["name"] = np.array([f"det_{i + 1}" for i in range(len(detections))], dtype=str)
    out["ra"] = np.asarray(detections["ra_deg"], float)
    out["dec"] = np.asarray(detections["dec_deg"], float)
    out["flux"] = np.asarray(detections["net_counts"], float) * k
    out["flux_lo"] = np.maximum(lo_c - b, 0.0) * k
    out["flux_hi"] = np.maximum(hi_c - b, 0.0) * k
    out.meta["confidence"] = confidence
    return out


# ---------------------------------------------------------------------------- comparison
def _match(ref: Table, new: Table, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one nearest matches within the radius: (new index per ref or −1, separation arcsec)."""
    from astropy.coordinates import SkyCoord

    r2n = np.full(len(ref), -1, dtype=np.int64)
    sep_out = np.full(len(ref), np.nan)
    if len(ref) == 0 or len(new) == 0:
        return r2n, sep_out
    c1 = SkyCoord(np.asarray(ref["ra"]), np.asarray(ref["dec"]), unit="deg")
    c2 = SkyCoord(np.asarray(new["ra"]), np.asarray(new["dec"]), unit="deg")
    import astropy.units as u

    i1, i2, sep, _ = c2.search_around_sky(c1, radius_arcsec * u.arcsec)
    order = np.argsort(sep.arcsec, kind="stable")
    used = np.zeros(len(new), dtype=bool)
    for k in order:
        if r2n[i1[k]] < 0 and not used[i2[k]]:
            r2n[i1[k]] = i2[k]
            sep_out[i1[k]] = sep.arcsec[k]
            used[i2[k]] = True
    return r2n, sep_out


def _warn_mismatch(ref_band: tuple[float, float] | None, new_band: tuple[float, float] | None,
                   ref_inst: str | None, new_inst: str | None) -> list[str]:
    notes = []
    if ref_band and new_band and tuple(map(float, ref_band)) != tuple(map(float, new_band)):
        notes.append(f"bands differ ({ref_band[0]}–{ref_band[1]} keV against {new_band[0]}–{new_band[1]} keV)")
    if ref_inst and new_inst and ref_inst.strip().upper() != new_inst.strip().upper():
        notes.append(f"instruments differ ({ref_inst} against {new_inst})")
    if notes:
        warnings.warn("flux comparison: " + " and ".join(notes) + "; a factor of a few can come from the bands, "
                      "responses and the assumed spectrum alone: compare like with like", XmineWarning, stacklevel=3)
    return notes


def compare_fluxes(reference: Any, new: Any, *, factor: float = 3.0, match_radius_arcsec: float = 5.0,
                   new_limit: Limit | None = None, ref_limit: Limit | None = None, ref_confidence: float = 0.90,
                   new_confidence: float = 0.90, ref_band_kev: tuple[float, float] | None = None,
                   new_band_kev: tuple[float, float] | None = None, ref_instrument: str | None = None,
                   new_instrument: str | None = None, store: Any = None) -> Table:
    """Compare a new source list with a reference and flag flux changes and new sources.

    Parameters
    ----------
    reference, new : table source
        Source lists (files, store tables or tables; see :func:`flux_list`).
    factor : float, optional
        Change factor beyond the 90 % intervals (the module docstring gives the rules).
    match_radius_arcsec : float, optional
        Positional match radius.
    new_limit : float, SensitivityMap, path, callable or array, optional
        Upper limit of the new epoch at reference positions (erg cm⁻² s⁻¹): a
        uniform value, a sensitivity map (object or FITS path), a function of
        (ra, dec), or one value per reference row.
    ref_limit : same, optional
        The reference epoch's limit at positions of new detections.
    ref_confidence, new_confidence : float, optional
        Confidence of each list's ``lo``/``hi`` limits (rescaled to 90 %).
    ref_band_kev, new_band_kev, ref_instrument, new_instrument : optional
        What each flux means; a warning is issued when they differ. When not given
        they are known for CSC's ``flux_aper_b``/``flux_aper90_b`` (0.5–7 keV, Chandra ACIS)
        and 4XMM's ``sc_ep_8_flux``/``ep_8_flux`` (0.2–12 keV, XMM-Newton EPIC).
    store : xmine.store.Store, optional
        To read lists by table name.

    Returns
    -------
    astropy.table.Table
        One row per reference source and per unmatched new detection: ``flag, alert,
        name_ref, name_new, ra, dec, sep_arcsec, flux_ref, flux_ref_lo90, flux_ref_hi90,
        flux_new, flux_new_lo90, flux_new_hi90, limit_new, limit_ref, ratio, factor,
        exceeds_factor, rule``. ``meta["notes"]`` lists band/instrument mismatches.
    """
    if not (factor > 1):
        msg = f"factor {factor} must be above 1"
        raise InputError(msg)
    ref = flux_list(reference, confidence=ref_confidence, store=store, what="reference")
    nw = flux_list(new, confidence=new_confidence, store=store, what="new")
    known_ref = _KNOWN_FLUX.get(ref.meta["flux_column"].lower(), (None, None))
    known_new = _KNOWN_FLUX.get(nw.meta["flux_column"].lower(), (None, None))
    notes = _warn_mismatch(ref_band_kev or known_ref[0], new_band_kev or known_new[0],
                           ref_instrument or known_ref[1], new_instrument or known_new[1])
    r2n, sep = _match(ref, nw, match_radius_arcsec)
    lim_new = _limits(new_limit, np.asarray(ref["ra"]), np.asarray(ref["dec"]))
    matched_new = np.zeros(len(nw), dtype=bool)
    matched_new[r2n[r2n >= 0]] = True
    unmatched = np.flatnonzero(~matched_new)
    lim_ref = _limits(ref_limit, np.asarray(nw["ra"])[unmatched], np.asarray(nw["dec"])[unmatched])
    rows: list[tuple[Any, ...]] = []
    nan = math.nan
    for i in range(len(ref)):
        f, lo, hi = (float(ref[c][i]) for c in ("flux", "flux_lo90", "flux_hi90"))
        j = int(r2n[i])
        if j >= 0:
            fn, lon, hin = (float(nw[c][j]) for c in ("flux", "flux_lo90", "flux_hi90"))
            up = lon / hi if hi > 0 else math.inf
            down = lo / hin if hin > 0 else math.inf
            if up > factor:
                flag, ratio = "brightened", up
                rule = f"new lo90 {lon:.3g} / reference hi90 {hi:.3g} = {up:.3g} > {factor:g}"
            elif down > factor:
                flag, ratio = "faded", down
                rule = f"reference lo90 {lo:.3g} / new hi90 {hin:.3g} = {down:.3g} > {factor:g}"
            else:
                ratio = max(up, down)
                flag, rule = "unchanged", (f"max(new lo90 / reference hi90 = {up:.3g}, reference lo90 / new hi90 = "
                                           f"{down:.3g}) ≤ {factor:g}")
            rows.append((flag, ref["name"][i], nw["name"][j], ref["ra"][i], ref["dec"][i], sep[i], f, lo, hi, fn, lon,
                         hin, lim_new[i], nan, ratio, flag != "unchanged", rule))
        else:
            ln = float(lim_new[i])
            if np.isfinite(ln):
                ratio = lo / ln if ln > 0 else math.inf
                flag = "vanished" if ratio > factor else "undetected"
                rule = (f"not detected; reference lo90 {lo:.3g} / new limit {ln:.3g} = {ratio:.3g} "
                        f"{'>' if flag == 'vanished' else '≤'} {factor:g}")
            else:
                ratio, flag = nan, "undetected"
                rule = "not detected; no new upper limit at this position (outside the map or none given)"
            rows.append((flag, ref["name"][i], "", ref["ra"][i], ref["dec"][i], nan, f, lo, hi, nan, nan, nan, ln,
                         nan, ratio, flag == "vanished", rule))
    for k, j in enumerate(unmatched.tolist()):
        fn, lon, hin = (float(nw[c][j]) for c in ("flux", "flux_lo90", "flux_hi90"))
        lr = float(lim_ref[k])
        if np.isfinite(lr):
            ratio = lon / lr if lr > 0 else math.inf
            rule = (f"no reference counterpart within {match_radius_arcsec:g}″; new lo90 {lon:.3g} / reference "
                    f"limit {lr:.3g} = {ratio:.3g} {'>' if ratio > factor else '≤'} {factor:g}")
        else:
            ratio = nan
            rule = f"no reference counterpart within {match_radius_arcsec:g}″; no reference limit given"
        rows.append(("new", "", nw["name"][j], nw["ra"][j], nw["dec"][j], nan, nan, nan, nan, fn, lon, hin, nan, lr,
                     ratio, bool(np.isfinite(ratio) and ratio > factor), rule))
    names = ["flag", "name_ref", "name_new", "ra", "dec", "sep_arcsec", "flux_ref", "flux_ref_lo90", "flux_ref_hi90",
             "flux_new", "flux_new_lo90", "flux_new_hi90", "limit_new", "limit_ref", "ratio", "exceeds_factor",
             "rule"]
    dtypes = [str, str, str, float, float, float, float, float, float, float, float, float, float, float, float, bool,
              str]
    out = Table(rows=rows or None, names=names, dtype=dtypes)
    out.add_column(np.isin(np.asarray(out["flag"], dtype=str), ["brightened", "faded", "vanished", "new"]),
                   name="alert", index=1)
    out.add_column(np.full(len(out), float(factor)), name="factor", index=out.colnames.index("ratio") + 1)
    for c in ("flux_ref", "flux_ref_lo90", "flux_ref_hi90", "flux_new", "flux_new_lo90", "flux_new_hi90",
              "limit_new", "limit_ref"):
        out[c].unit = "erg cm-2 s-1"
    out["ra"].unit = out["dec"].unit = "deg"
    out["sep_arcsec"].unit = "arcsec"
    out.meta["notes"] = notes
    out.meta["reference_interval"] = ref.meta["interval"]
    out.meta["new_interval"] = nw.meta["interval"]
    return out


@dataclass
class ChangesResult:
    """What :func:`run_changes` made."""

    table: Table
    counts: dict[str, int]
    out: Path | None


def run_changes(reference: Any, new: Any, *, out: str | os.PathLike[str] | None = None, overwrite: bool = True,
                alerts_only: bool = False, **kwargs: Any) -> ChangesResult:
    """Compare (see :func:`compare_fluxes`) and write the flag table (``.ecsv``, ``.csv``, ``.fits``, ``.xml``).

    Examples
    --------
    >>> from astropy.table import Table
    >>> ref = Table({"name": ["a"], "ra": [10.0], "dec": [0.0], "flux": [1e-14], "flux_lo": [8e-15],
    ...              "flux_hi": [1.2e-14]})
    >>> new = Table({"name": ["a2"], "ra": [10.0], "dec": [0.0], "flux": [6e-14], "flux_lo": [5e-14],
    ...              "flux_hi": [7e-14]})
    >>> str(run_changes(ref, new).table["flag"][0])
    'brightened'
    """
    from xmine.store import write_table

    t = compare_fluxes(reference, new, **kwargs)
    counts = {f: int(np.sum(np.asarray(t["flag"], dtype=str) == f)) for f in FLAGS}
    written = None
    if out is not None:
        shown = t[np.asarray(t["alert"], dtype=bool)] if alerts_only else t
        shown = shown.copy()
        shown.meta = {k: (" | ".join(v) if isinstance(v, list) else v) for k, v in shown.meta.items()}
        written = write_table(shown, out, overwrite=overwrite)
    return ChangesResult(t, counts, written)
