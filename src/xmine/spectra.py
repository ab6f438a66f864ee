"""Per-region X-ray spectra as OGIP files: PHA type I spectra, ARFs and RMFs, and their extraction from contour bins.

Files (all written atomically, each passes ``fitsverify`` and loads in sherpa):

* :func:`write_pha` — an OGIP PHA type I spectrum (``SPECTRUM`` extension, ``CHANNEL``/``COUNTS``,
  1024 PI channels for ACIS with ``TLMIN``/``TLMAX``, ``HDUCLAS1..4``, ``POISSERR``, ``EXPOSURE``,
  ``BACKSCAL``, ``AREASCAL``, ``CORRSCAL``, ``RESPFILE``/``ANCRFILE``/``BACKFILE`` by name, the observation
  keywords of the event file) plus a ``GTI`` extension;
* :func:`write_arf`, :func:`write_rmf` — OGIP ``SPECRESP`` and ``MATRIX`` + ``EBOUNDS`` (variable-length
  ``F_CHAN``/``N_CHAN``/``MATRIX``), and :func:`read_arf`, :func:`read_rmf` (the matrix found by
  ``HDUCLAS2 = RSP_MATRIX``, whatever its EXTNAME).

Extraction (:func:`extract_region_spectra`, :func:`extract_cluster_spectra`): for every contour bin and
obsid, the events of the obsid — filtered by grade and status as the pipeline's ``[events]``, with no
energy cut, inside its flare-cleaned GTIs — are moved onto the merged tangent plane
(:func:`xmine.images.reproject_events`, :func:`xmine.images.merged_frame`) and placed on the bin map's
grid through its CIAO physical keywords (``LTM``/``LTV``, the same transform as
:func:`xmine.images.make_counts_image`); a PI histogram is made per bin. ``obsid = 0`` is the combined
spectrum of each bin.

Keywords and how they are computed
----------------------------------
* ``EXPOSURE`` — the obsid's flare-cleaned live time, ``Σ GTI × DTCOR`` of the largest CCD after the
  clean GTIs are intersected with each CCD's own (:func:`xmine.gti.apply_gti`).
* ``BACKSCAL`` — as CIAO's ``dmextract`` for ACIS: the region's area in sky pixels (0.492″) divided by
  8192². Unlike ``dmextract``, which counts the geometric area, each pixel counts by the share of the
  obsid's live time it was exposed (its exposure map on the merged grid over ``EXPOSURE``), so a
  region or background annulus partly off the chips, or across a dithered chip gap, is scaled by the
  area that was really observed.
* Background — one spectrum per obsid from the local annulus (radius beyond ``process.bg_inner_arcmin``
  around the cluster, point sources masked, as :func:`xmine.background.local_background`), the same
  events and cuts.
* Combined (``obsid = 0``) — ``COUNTS = Σ Cᵢ``, ``EXPOSURE = Σ tᵢ``, ``BACKSCAL = Σ sᵢ tᵢ / Σ tᵢ``
  (CIAO ``combine_spectra``'s exposure weighting). Its background holds ``Σ Bᵢ`` counts over
  ``Σ tᵢ'`` with ``BACKSCAL b = s t Σ Bᵢ / (t' Σ Bᵢ sᵢ tᵢ / (bᵢ tᵢ'))``, chosen so the background
  sherpa/XSPEC subtract from the combined spectrum equals the sum of the per-obsid ones (ASCA's
  ``addascaspec`` would instead reweight the background spectra with non-integer counts; this keeps
  integer counts, so ``wstat`` applies, at the price of averaging the background *shape* with weights
  ``Bᵢ`` rather than ``Bᵢ sᵢ tᵢ / (bᵢ tᵢ')``). Responses are combined when every obsid has them:
  ``ARF = Σ tᵢ Aᵢ / Σ tᵢ``, ``RMF = Σ tᵢ Aᵢ(E) Rᵢ(E, c) / Σ tᵢ Aᵢ(E)`` (as ``addarf``/``addrmf``); identical
  files are reused, not copied.

Approximations (what CIAO's ``specextract`` would do differently)
-----------------------------------------------------------------
* **One response per obsid for every region** (``responses=`` maps an obsid to its ARF/RMF, made e.g.
  by CIAO ``specextract`` at the cluster centre; a ``(bin_id, obsid)`` key gives a region its own).
  The mirror vignetting is stronger at high energy and the QE/contamination varies across and between
  chips, so away from where the ARF was made the hard/soft effective-area ratio is off, by a few to
  ~10 % between 1.5 and 6 keV at 3–6′ off-axis. Measured with xmine's own model folded through the
  9774 responses (2×10⁶ counts, fitted with the untilted ARF): an area 5 % (10 %) lower at 6 keV than
  at 1.5 keV gives kT −2 % (−4 %) at 2 keV, −5 % (−9 %) at 5 keV, −7 % (−13 %) at 8 keV. The
  normalisation follows the mean vignetting (~10 % at 5′). Per-region ARFs (CIAO ``specextract
  weight=yes``) remove the bias.
* **No PSF correction** (extended emission: none needed at the bin scale, but a bin's counts include
  PSF-scattered photons of its neighbours).
* **Background from the same obsid's annulus**: the sky component is vignetted and the particle
  component is not, so scaling by area (not by the exposure map's vignetting) is right for the
  particles and over-subtracts the sky component's vignetted share where the annulus is further
  off-axis than the region (a few per cent of the background at 5′); the annulus may hold cluster
  emission if ``bg_inner_arcmin`` is too small.
* The per-obsid exposure maps are xmine's (:mod:`xmine.exposure`: no bad pixels, no QE map).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from xmine.errors import InputError
from xmine.gti import gti_hdu
from xmine.store import atomic_write

__all__ = [
    "BACKSCAL_NORM_PIX",
    "SPECTRA_COLUMNS",
    "extract_cluster_spectra",
    "extract_region_spectra",
    "read_arf",
    "read_rmf",
    "resolve_responses",
    "write_arf",
    "write_pha",
    "write_rmf",
]

#: BACKSCAL = area in sky pixels / BACKSCAL_NORM_PIX² (CIAO dmextract for ACIS).
BACKSCAL_NORM_PIX = 8192.0
#: Columns of the table :func:`extract_region_spectra` returns (the ``region_spectra`` table).
SPECTRA_COLUMNS = ("bin_id", "obsid", "pha_file", "bkg_file", "arf_file", "rmf_file", "counts", "bkg_counts",
                   "exposure_s", "backscal", "bkg_backscal")

_N_PI = 1024
_OBS_KEYS = ("TELESCOP", "INSTRUME", "DETNAM", "GRATING", "OBS_ID", "OBJECT", "DATE-OBS", "DATE-END", "MJDREF",
             "TIMESYS", "TIMEUNIT", "TSTART", "TSTOP", "RA_PNT", "DEC_PNT", "ROLL_PNT", "RA_NOM", "DEC_NOM",
             "ROLL_NOM", "EQUINOX", "DTCOR", "ASCDSVER", "CALDBVER", "DATAMODE", "READMODE")


# ---------------------------------------------------------------- writers


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("ascii", "replace").decode()
    return value


def _primary(creator: str) -> fits.PrimaryHDU:
    p = fits.PrimaryHDU()
    p.header["CREATOR"] = (creator, "tool that created this output")
    return p


def _ogip_name(path: str | os.PathLike[str] | None, folder: Path) -> str:
    """File name as the keyword holds it: relative to the spectrum's folder (sherpa and XSPEC look there), or 'none'."""
    if path is None or str(path) in ("", "none", "NONE"):
        return "none"
    return os.path.relpath(Path(path).resolve(), folder)


def _set_path(header: fits.Header, key: str, value: str, comment: str) -> None:
    """Set a file-name keyword; a long one loses its comment and uses the OGIP long-string convention."""
    if len(value) + len(comment) <= 60:
        header[key] = (value, comment)
        return
    header[key] = value
    if len(value) > 68:
        header["LONGSTRN"] = ("OGIP 1.0", "the OGIP long string convention may be used")


def write_pha(path: str | os.PathLike[str], counts: np.ndarray, *, exposure: float, backscal: float,
              areascal: float = 1.0, header_from: fits.Header | None = None, respfile: str | os.PathLike[str] | None
              = None, ancrfile: str | os.PathLike[str] | None = None, backfile: str | os.PathLike[str] | None = None,
              gti: np.ndarray | None = None, background: bool = False, first_channel: int = 1,
              keywords: Mapping[str, Any] | None = None) -> Path:
    """Write an OGIP PHA type I spectrum (PI channels) with a GTI extension, atomically.

    Parameters
    ----------
    path : path-like
        Output file (``.pi``).
    counts : numpy.ndarray
        Integer counts per channel (1024 for ACIS PI).
    exposure : float
        ``EXPOSURE`` (s): the live time.
    backscal : float
        ``BACKSCAL``: region area in sky pixels / 8192² (CIAO's ACIS convention).
    areascal : float
        ``AREASCAL`` (1 unless the area is scaled).
    header_from : astropy.io.fits.Header, optional
        The event header whose TELESCOP, INSTRUME, DETNAM, OBS_ID, DATE-OBS, OBJECT and time keywords are copied.
    respfile, ancrfile, backfile : path-like, optional
        The RMF, ARF and background spectrum (relative paths are from the working directory); the
        keywords hold them relative to the spectrum's folder, where sherpa and XSPEC look.
    gti : numpy.ndarray, optional
        ``(n, 2)`` START, STOP (s) of the clean time.
    background : bool
        ``HDUCLAS2 = BKG`` (a background spectrum) instead of ``TOTAL``.
    first_channel : int
        Number of the first channel (1 for ACIS PI).
    keywords : mapping, optional
        Extra keywords (8-character names) to record.

    Returns
    -------
    pathlib.Path
    """
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0:
        msg = f"{path}: counts must be a 1-D array of channels, got shape {c.shape}"
        raise InputError(msg)
    if np.any(c < 0) or not np.all(np.equal(np.mod(c, 1), 0)):
        msg = f"{path}: counts must be non-negative integers for a PHA type I spectrum with Poisson errors"
        raise InputError(msg)
    if not (np.isfinite(exposure) and exposure > 0 and np.isfinite(backscal) and backscal > 0):
        msg = f"{path}: EXPOSURE = {exposure} s and BACKSCAL = {backscal} must be positive"
        raise InputError(msg)
    channel = np.arange(first_channel, first_channel + c.size, dtype=np.int32)
    cols = [fits.Column(name="CHANNEL", format="1J", array=channel),
            fits.Column(name="COUNTS", format="1J", unit="count", array=c.astype(np.int32))]
    hdu = fits.BinTableHDU.from_columns(cols, name="SPECTRUM")
    h = hdu.header
    h["TLMIN1"] = (int(first_channel), "first channel")
    h["TLMAX1"] = (int(first_channel + c.size - 1), "last channel")
    if header_from is not None:
        for key in _OBS_KEYS:
            if key in header_from:
                h[key] = _clean_value(header_from[key])
    h.setdefault("TELESCOP", "CHANDRA")
    h.setdefault("INSTRUME", "ACIS")
    h["FILTER"] = ("none", "filter")
    h["HDUCLASS"] = ("OGIP", "format conforms to OGIP standard")
    h["HDUCLAS1"] = ("SPECTRUM", "PHA dataset")
    h["HDUCLAS2"] = ("BKG" if background else "TOTAL", "background spectrum" if background else "source + bkg")
    h["HDUCLAS3"] = ("COUNT", "counts, not rates")
    h["HDUCLAS4"] = ("TYPE:I", "single spectrum")
    h["HDUVERS"] = ("1.2.1", "OGIP/92-007 version")
    h["CHANTYPE"] = ("PI", "pulse invariant channels")
    h["DETCHANS"] = (int(c.size), "number of channels")
    h["EXPOSURE"] = (float(exposure), "[s] live time (sum of clean GTIs x DTCOR)")
    h["LIVETIME"] = (float(exposure), "[s] live time")
    h["AREASCAL"] = (float(areascal), "area scaling")
    h["BACKSCAL"] = (float(backscal), "area in sky pixels / 8192**2")
    h["CORRSCAL"] = (0.0, "no correction file")
    p = Path(path)
    folder = p.resolve().parent
    _set_path(h, "BACKFILE", _ogip_name(backfile, folder), "background spectrum")
    h["CORRFILE"] = ("none", "correction spectrum")
    _set_path(h, "RESPFILE", _ogip_name(respfile, folder), "redistribution matrix (RMF)")
    _set_path(h, "ANCRFILE", _ogip_name(ancrfile, folder), "ancillary response (ARF)")
    h["POISSERR"] = (True, "Poisson errors apply")
    h["SYS_ERR"] = (0.0, "no systematic error")
    h["GROUPING"] = (0, "no grouping")
    h["QUALITY"] = (0, "all channels good")
    h["CREATOR"] = ("xmine.spectra", "tool that created this output")
    for key, value in (keywords or {}).items():
        h[key] = _clean_value(value)
    hdus = fits.HDUList([_primary("xmine.spectra"), hdu, gti_hdu(gti, header_from)])
    with atomic_write(p) as tmp:
        hdus.writeto(tmp, checksum=True)
    return p


def write_arf(path: str | os.PathLike[str], energ_lo: np.ndarray, energ_hi: np.ndarray, specresp: np.ndarray, *,
              telescope: str = "CHANDRA", instrument: str = "ACIS", keywords: Mapping[str, Any] | None = None) -> Path:
    """Write an OGIP ARF (``SPECRESP``: ``ENERG_LO ENERG_HI`` keV, ``SPECRESP`` cm²), atomically."""
    lo, hi, a = (np.asarray(v, dtype=np.float32) for v in (energ_lo, energ_hi, specresp))
    if not (lo.shape == hi.shape == a.shape) or lo.ndim != 1 or np.any(hi <= lo) or np.any(a < 0):
        msg = f"{path}: ARF needs equal-length 1-D ENERG_LO < ENERG_HI (keV) and SPECRESP >= 0 (cm2)"
        raise InputError(msg)
    cols = [fits.Column(name="ENERG_LO", format="1E", unit="keV", array=lo),
            fits.Column(name="ENERG_HI", format="1E", unit="keV", array=hi),
            fits.Column(name="SPECRESP", format="1E", unit="cm**2", array=a)]
    hdu = fits.BinTableHDU.from_columns(cols, name="SPECRESP")
    h = hdu.header
    h["TELESCOP"], h["INSTRUME"], h["FILTER"] = telescope, instrument, "none"
    h["HDUCLASS"], h["HDUCLAS1"], h["HDUCLAS2"] = "OGIP", "RESPONSE", "SPECRESP"
    h["HDUVERS"] = "1.1.0"
    h["CREATOR"] = ("xmine.spectra", "tool that created this output")
    for key, value in (keywords or {}).items():
        h[key] = _clean_value(value)
    p = Path(path)
    with atomic_write(p) as tmp:
        fits.HDUList([_primary("xmine.spectra"), hdu]).writeto(tmp, checksum=True)
    return p


def write_rmf(path: str | os.PathLike[str], energ_lo: np.ndarray, energ_hi: np.ndarray, matrix: np.ndarray,
              e_min: np.ndarray, e_max: np.ndarray, *, first_channel: int = 1, threshold: float = 1e-7,
              telescope: str = "CHANDRA", instrument: str = "ACIS", keywords: Mapping[str, Any] | None = None
              ) -> Path:
    """Write an OGIP RMF (``MATRIX`` with variable-length columns, and ``EBOUNDS``), atomically.

    Parameters
    ----------
    matrix : numpy.ndarray
        Dense ``(n_energy, n_channel)`` redistribution probabilities (rows sum to ≤ 1); entries below
        ``threshold`` are dropped (``LO_THRES``). Each row is stored as its runs of kept channels.
    e_min, e_max : numpy.ndarray
        Nominal channel energy bounds (keV) for ``EBOUNDS``.
    """
    lo, hi = np.asarray(energ_lo, dtype=np.float32), np.asarray(energ_hi, dtype=np.float32)
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != lo.size or lo.shape != hi.shape or np.any(hi <= lo):
        msg = f"{path}: RMF matrix shape {m.shape} must be (n_energy = {lo.size}, n_channel) with ENERG_LO < ENERG_HI"
        raise InputError(msg)
    n_chan = m.shape[1]
    if np.asarray(e_min).size != n_chan or np.asarray(e_max).size != n_chan:
        msg = f"{path}: EBOUNDS needs {n_chan} channels"
        raise InputError(msg)
    n_grp = np.zeros(lo.size, dtype=np.int16)
    f_chan: list[np.ndarray] = []
    n_ch: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for i, row in enumerate(m):
        keep = row >= threshold
        if not keep.any():
            f_chan.append(np.zeros(0, np.int32))
            n_ch.append(np.zeros(0, np.int32))
            values.append(np.zeros(0, np.float32))
            continue
        edges = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
        starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        n_grp[i] = starts.size
        f_chan.append((starts + first_channel).astype(np.int32))
        n_ch.append((stops - starts).astype(np.int32))
        values.append(np.concatenate([row[a:b] for a, b in zip(starts, stops, strict=True)]).astype(np.float32))
    cols = [fits.Column(name="ENERG_LO", format="1E", unit="keV", array=lo),
            fits.Column(name="ENERG_HI", format="1E", unit="keV", array=hi),
            fits.Column(name="N_GRP", format="1I", array=n_grp),
            fits.Column(name="F_CHAN", format="PJ()", array=np.array(f_chan, dtype=object)),
            fits.Column(name="N_CHAN", format="PJ()", array=np.array(n_ch, dtype=object)),
            fits.Column(name="MATRIX", format="PE()", array=np.array(values, dtype=object))]
    mat = fits.BinTableHDU.from_columns(cols, name="MATRIX")
    ebounds = fits.BinTableHDU.from_columns(
        [fits.Column(name="CHANNEL", format="1J", array=np.arange(first_channel, first_channel + n_chan,
                                                                   dtype=np.int32)),
         fits.Column(name="E_MIN", format="1E", unit="keV", array=np.asarray(e_min, dtype=np.float32)),
         fits.Column(name="E_MAX", format="1E", unit="keV", array=np.asarray(e_max, dtype=np.float32))],
        name="EBOUNDS")
    for hdu, clas2 in ((mat, "RSP_MATRIX"), (ebounds, "EBOUNDS")):
        h = hdu.header
        h["TELESCOP"], h["INSTRUME"], h["FILTER"] = telescope, instrument, "none"
        h["CHANTYPE"] = ("PI", "pulse invariant channels")
        h["DETCHANS"] = (int(n_chan), "number of channels")
        h["HDUCLASS"], h["HDUCLAS1"], h["HDUCLAS2"], h["HDUCLAS3"] = "OGIP", "RESPONSE", clas2, "REDIST"
        h["HDUVERS"] = "1.3.0"
        h["CREATOR"] = ("xmine.spectra", "tool that created this output")
        for key, value in (keywords or {}).items():
            h[key] = _clean_value(value)
    mat.header["LO_THRES"] = (float(threshold), "smallest matrix element kept")
    mat.header["TLMIN4"] = (int(first_channel), "first channel")
    mat.header["TLMAX4"] = (int(first_channel + n_chan - 1), "last channel")
    ebounds.header["TLMIN1"] = (int(first_channel), "first channel")
    ebounds.header["TLMAX1"] = (int(first_channel + n_chan - 1), "last channel")
    p = Path(path)
    with atomic_write(p) as tmp:
        fits.HDUList([_primary("xmine.spectra"), mat, ebounds]).writeto(tmp, checksum=True)
    return p


# ---------------------------------------------------------------- readers


def _find_hdu(hdus: fits.HDUList, clas2: str, names: Sequence[str], path: Path, what: str) -> Any:
    for hdu in hdus[1:]:
        if str(hdu.header.get("HDUCLAS2", "")).strip().upper() == clas2:
            return hdu
    for hdu in hdus[1:]:
        if hdu.name.upper() in names:
            return hdu
    msg = f"{path}: no {what} extension (HDUCLAS2 = {clas2} or EXTNAME {'/'.join(names)}); is it an OGIP {what}?"
    raise InputError(msg)


def read_arf(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(energ_lo, energ_hi, specresp)`` of an OGIP ARF (keV, keV, cm²)."""
    p = Path(path)
    try:
        with fits.open(p) as hdus:
            d = _find_hdu(hdus, "SPECRESP", ("SPECRESP",), p, "ARF").data
            return (np.asarray(d["ENERG_LO"], float), np.asarray(d["ENERG_HI"], float),
                    np.asarray(d["SPECRESP"], float))
    except OSError as exc:
        msg = f"{p}: cannot read the ARF ({exc})"
        raise InputError(msg) from exc


def read_rmf(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Return ``(energ_lo, energ_hi, matrix, e_min, e_max, first_channel)`` of an OGIP RMF, the matrix dense.

    The matrix extension is found by ``HDUCLAS2 = RSP_MATRIX`` (CSC's is named ``RSP_MATRIX``, CIAO's
    ``MATRIX``); channels are numbered from the ``F_CHAN`` column's ``TLMIN`` (1 when absent, as ACIS).
    """
    p = Path(path)
    try:
        with fits.open(p) as hdus:
            mat = _find_hdu(hdus, "RSP_MATRIX", ("MATRIX", "SPECRESP MATRIX", "RSP_MATRIX"), p, "RMF")
            eb = _find_hdu(hdus, "EBOUNDS", ("EBOUNDS",), p, "RMF EBOUNDS")
            names = [c.upper() for c in mat.columns.names]
            first = int(mat.header.get(f"TLMIN{names.index('F_CHAN') + 1}", 1))
            n_chan = int(eb.header.get("DETCHANS", len(eb.data)))
            d = mat.data
            m = np.zeros((len(d), n_chan))
            for i in range(len(d)):
                f = np.atleast_1d(d["F_CHAN"][i]).astype(int)
                n = np.atleast_1d(d["N_CHAN"][i]).astype(int)
                v = np.atleast_1d(d["MATRIX"][i]).astype(float)
                k = 0
                for a, b in zip(f[: int(d["N_GRP"][i])], n[: int(d["N_GRP"][i])], strict=True):
                    m[i, a - first:a - first + b] = v[k:k + b]
                    k += b
            return (np.asarray(d["ENERG_LO"], float), np.asarray(d["ENERG_HI"], float), m,
                    np.asarray(eb.data["E_MIN"], float), np.asarray(eb.data["E_MAX"], float), first)
    except OSError as exc:
        msg = f"{p}: cannot read the RMF ({exc})"
        raise InputError(msg) from exc


# ---------------------------------------------------------------- extraction


def _physical_grid(header: fits.Header, source: str) -> tuple[float, float, float]:
    """Return (xmin, ymin, binsize): sky-pixel edges of the first pixel and sky pixels per image pixel."""
    try:
        ltm1, ltm2 = float(header["LTM1_1"]), float(header["LTM2_2"])
        ltv1, ltv2 = float(header["LTV1"]), float(header["LTV2"])
    except KeyError as exc:
        msg = f"{source}: no physical keyword {exc.args[0]}; give the pipeline's bin map / merged image (LTM/LTV)"
        raise InputError(msg) from exc
    if not math.isclose(ltm1, ltm2):
        msg = f"{source}: unequal x/y binning (LTM1_1 = {ltm1}, LTM2_2 = {ltm2}); bin maps have square pixels"
        raise InputError(msg)
    return (0.5 - ltv1) / ltm1, (0.5 - ltv2) / ltm2, 1.0 / ltm1


def _pixel_index(x: np.ndarray, y: np.ndarray, grid: tuple[float, float, float], shape: tuple[int, ...]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0-based (iy, ix) and in-grid flag of sky positions, as :func:`xmine.images.make_counts_image` bins."""
    xmin, ymin, b = grid
    ix = np.floor((np.asarray(x, np.float64) - xmin) / b).astype(np.int64)
    iy = np.floor((np.asarray(y, np.float64) - ymin) / b).astype(np.int64)
    ok = (ix >= 0) & (ix < shape[1]) & (iy >= 0) & (iy < shape[0])
    return np.where(ok, iy, 0), np.where(ok, ix, 0), ok


def _read_gti_file(path: str | os.PathLike[str]) -> np.ndarray | dict[int, np.ndarray]:
    """GTIs of a CIAO/xmine GTI file: one list, or one per CCD when the extensions carry CCD_ID."""
    p = Path(path)
    try:
        with fits.open(p) as hdus:
            tables = [h for h in hdus[1:] if isinstance(h, fits.BinTableHDU) and "START" in h.columns.names]
            per_ccd: dict[int, np.ndarray] = {}
            for h in tables:
                g = np.column_stack([h.data["START"], h.data["STOP"]]).astype(float)
                per_ccd[int(h.header.get("CCD_ID", -1))] = g
    except (OSError, KeyError) as exc:
        msg = f"{p}: cannot read GTIs ({exc}); give the deflare step's GTI file"
        raise InputError(msg) from exc
    if not per_ccd:
        msg = f"{p}: no GTI table"
        raise InputError(msg)
    return per_ccd[-1] if list(per_ccd) == [-1] else per_ccd


def _largest_gti(gtis: Mapping[int, np.ndarray]) -> np.ndarray | None:
    """Return the GTIs of the CCD with the most good time (the one EXPOSURE is computed from)."""
    if not gtis:
        return None
    return max(gtis.values(), key=lambda g: float(np.sum(g[:, 1] - g[:, 0])) if len(g) else 0.0)


def _check_frame(frame: Any, header: fits.Header, grid: tuple[float, float, float], source: str) -> None:
    """Check that an image's sky WCS and its physical keywords agree with the merged frame (< 0.05 pixel)."""
    from xmine.images import celestial_wcs

    w = celestial_wcs(header, source=source)
    ny, nx = int(header.get("NAXIS2", 1)), int(header.get("NAXIS1", 1))
    px, py = np.array([0.0, nx - 1.0]), np.array([0.0, ny - 1.0])
    ra, dec = w.all_pix2world(px, py, 0)
    sx, sy = frame.all_world2pix(ra, dec, 1)
    xmin, ymin, b = grid
    ex, ey = xmin + (px + 0.5) * b, ymin + (py + 0.5) * b
    err = float(np.max(np.hypot(sx - ex, sy - ey)))
    if err > 0.05 * b:
        msg = (f"{source}: its sky WCS and physical keywords disagree with the merged frame at RA/Dec "
               f"{frame.wcs.crval[0]:.5f}, {frame.wcs.crval[1]:.5f} by {err:.2f} sky pixels; give images "
               "from the same pipeline run")
        raise InputError(msg)


def _response_for(responses: Mapping[Any, Any] | None, bin_id: int, obsid: int) -> tuple[str, str] | None:
    if not responses:
        return None
    got = responses.get((bin_id, obsid), responses.get(obsid, responses.get(str(obsid))))
    if got is None:
        return None
    return _response_pair(got)


def _combined_background_backscal(s_comb: float, t_comb: float, tb_comb: float, parts: Sequence[tuple[int, float,
                                  float, float, float]]) -> float:
    """BACKSCAL of the summed background preserving the background subtracted (see the module docstring).

    ``parts``: per obsid ``(B_i, s_i, t_i, b_i, t'_i)``.
    """
    total_b = sum(p[0] for p in parts)
    expected = sum(bi * si * ti / (b * tbi) for bi, si, ti, b, tbi in parts if b > 0 and tbi > 0)
    if total_b > 0 and expected > 0:
        return s_comb * t_comb * total_b / (tb_comb * expected)
    # no background counts at all: the exposure-weighted mean (combine_spectra's time weighting)
    return sum(b * tbi for _, _, _, b, tbi in parts) / max(tb_comb, 1e-300)


def _combine_responses(paths: Sequence[tuple[str, str]], weights: Sequence[float], out: Path, stem: str
                       ) -> tuple[str, str]:
    """Exposure-weighted ARF and area-weighted RMF of several obsids (identical files are reused)."""
    arfs = sorted({a for a, _ in paths})
    rmfs = sorted({r for _, r in paths})
    if len(arfs) == 1 and len(rmfs) == 1:
        return arfs[0], rmfs[0]
    w = np.asarray(weights, dtype=float) / float(np.sum(weights))
    loaded = [read_arf(a) for a, _ in paths]
    lo, hi = loaded[0][0], loaded[0][1]
    if any(len(x[0]) != len(lo) or not np.allclose(x[0], lo) for x in loaded):
        msg = f"{stem}: the obsids' ARFs have different energy grids; make them on one grid to combine"
        raise InputError(msg)
    areas = np.array([x[2] for x in loaded])
    arf = np.sum(w[:, None] * areas, axis=0)
    arf_path = write_arf(out / f"{stem}.arf", lo, hi, arf, keywords={"RESPSRC": "xmine combined"})
    if len(rmfs) == 1:
        return str(arf_path), rmfs[0]
    mats = [read_rmf(r) for _, r in paths]
    if any(m[2].shape != mats[0][2].shape for m in mats):
        msg = f"{stem}: the obsids' RMFs have different grids; make them on one grid to combine"
        raise InputError(msg)
    weight_e = w[:, None] * areas  # t_i A_i(E)
    norm = np.where(weight_e.sum(axis=0) > 0, weight_e.sum(axis=0), 1.0)
    matrix = sum(weight_e[i][:, None] * mats[i][2] for i in range(len(mats))) / norm[:, None]
    rmf_path = write_rmf(out / f"{stem}.rmf", mats[0][0], mats[0][1], matrix, mats[0][3], mats[0][4],
                         first_channel=mats[0][5], keywords={"RESPSRC": "xmine combined"})
    return str(arf_path), str(rmf_path)


def extract_region_spectra(binmap_path: str | os.PathLike[str], observations: Mapping[Any, Mapping[str, Any]], *,
                           out_dir: str | os.PathLike[str], bg_mask: np.ndarray, bg_header: fits.Header,
                           grades: tuple[int, ...] | None = (0, 2, 3, 4, 6), status_zero: bool = True,
                           responses: Mapping[Any, Any] | None = None) -> Table:
    """Write the PI spectrum of every contour bin per obsid and combined, with backgrounds; return their table.

    Parameters
    ----------
    binmap_path : path-like
        Bin map FITS (contbin's, on the cropped merged grid, bins ≥ 0, −1 unbinned), with sky WCS and
        CIAO physical ``LTM``/``LTV`` keywords.
    observations : mapping
        obsid → ``{"evt2": path, "gti": path}`` (``ClusterResult.outputs["obs"]``).
    out_dir : path-like
        Where ``obs<obsid>/bin<id>.pi``, ``obs<obsid>/bkg.pi`` and ``combined/bin<id>.pi`` (+ ``_bkg.pi``,
        combined responses) are written.
    bg_mask : numpy.ndarray
        Background pixels (True/1) on the merged grid: the annulus beyond ``bg_inner_arcmin``, point sources
        masked.
    bg_header : astropy.io.fits.Header
        Header of the merged grid (sky WCS + physical keywords), e.g. the merged counts image's.
    grades, status_zero
        Event cuts (the pipeline's ``[events]``); no energy cut.
    responses : mapping, optional
        obsid (or ``(bin_id, obsid)``) → ``(arf, rmf)`` or ``{"arf": …, "rmf": …}``.

    Returns
    -------
    astropy.table.Table
        One row per (bin_id, obsid) with exposed area, and ``obsid = 0`` for each bin's combined spectrum;
        columns :data:`SPECTRA_COLUMNS` (file paths absolute, ``""`` when absent).
    """
    from xmine.events import filter_events, read_events
    from xmine.exposure import make_exposure_map
    from xmine.gti import apply_gti
    from xmine.images import merged_frame, reproject_events

    bpath = Path(binmap_path)
    try:
        binmap, bh = fits.getdata(bpath, header=True)
    except OSError as exc:
        msg = f"{bpath}: cannot read the bin map ({exc})"
        raise InputError(msg) from exc
    binmap = np.asarray(binmap, dtype=np.int64)
    grid = _physical_grid(bh, str(bpath))
    mask = np.asarray(bg_mask) > 0
    bgrid = _physical_grid(bg_header, "background grid")
    if not math.isclose(grid[2], bgrid[2]):
        msg = f"{bpath}: binning {grid[2]} differs from the merged grid's {bgrid[2]}; give the same run's files"
        raise InputError(msg)
    off_x, off_y = round((grid[0] - bgrid[0]) / grid[2]), round((grid[1] - bgrid[1]) / grid[2])
    ra0, dec0 = float(bh["CRVAL1"]), float(bh["CRVAL2"])
    n_bins = int(binmap.max()) + 1 if (binmap >= 0).any() else 0
    if n_bins == 0:
        msg = f"{bpath}: no bins (every pixel is -1); nothing to extract"
        raise InputError(msg)
    if not observations:
        msg = "extract_region_spectra: no observations given"
        raise InputError(msg)
    out = Path(out_dir)
    pix_area = grid[2] ** 2 / BACKSCAL_NORM_PIX ** 2
    flat = binmap.ravel()
    binned = flat >= 0
    rows: list[dict[str, Any]] = []
    per_obs: dict[int, dict[str, Any]] = {}
    for key, obs in observations.items():
        obsid = int(key)
        ev = read_events(obs["evt2"])
        ev = filter_events(ev, emin_kev=None, emax_kev=None, grades=grades, status_zero=status_zero)
        gti = _read_gti_file(obs["gti"])
        ev = apply_gti(ev, gti)
        exposure = float(ev.header["EXPOSURE"])
        frame = merged_frame(ra0, dec0, like=ev)
        if not per_obs:
            _check_frame(frame, bh, grid, str(bpath))
            _check_frame(frame, bg_header, bgrid, "merged grid")
        moved = reproject_events(ev, frame)
        pi = np.clip(np.asarray(moved["pi"], dtype=np.int64), 1, _N_PI)
        iy, ix, ok = _pixel_index(moved["x"], moved["y"], grid, binmap.shape)
        bid = np.where(ok, binmap[iy, ix], -1)
        sel = bid >= 0
        hist = np.bincount(bid[sel] * _N_PI + pi[sel] - 1, minlength=n_bins * _N_PI).reshape(n_bins, _N_PI)
        jy, jx, okb = _pixel_index(moved["x"], moved["y"], bgrid, mask.shape)
        in_bg = okb & mask[jy, jx]
        bg_hist = np.bincount(pi[in_bg] - 1, minlength=_N_PI)
        emap = make_exposure_map(ev, bg_header, mask.shape, gti=gti)
        share = np.clip(np.asarray(emap.data, dtype=np.float64) / exposure, 0.0, 1.0)
        crop_share = np.zeros(binmap.shape)
        ys0, xs0 = max(off_y, 0), max(off_x, 0)
        ys1, xs1 = min(off_y + binmap.shape[0], mask.shape[0]), min(off_x + binmap.shape[1], mask.shape[1])
        if ys1 > ys0 and xs1 > xs0:
            crop_share[ys0 - off_y:ys1 - off_y, xs0 - off_x:xs1 - off_x] = share[ys0:ys1, xs0:xs1]
        backscal = np.bincount(flat[binned], weights=crop_share.ravel()[binned], minlength=n_bins) * pix_area
        bkg_backscal = float(share[mask].sum()) * pix_area
        folder = out / f"obs{obsid}"
        gti_rows = _largest_gti(ev.gti)
        bkg_path = None
        if bkg_backscal > 0:
            bkg_path = write_pha(folder / "bkg.pi", bg_hist, exposure=exposure, backscal=bkg_backscal,
                                 header_from=ev.header, gti=gti_rows, background=True,
                                 keywords={"BKGREGN": "local annulus, point sources masked"})
        per_obs[obsid] = {"exposure": exposure, "bkg_counts": int(bg_hist.sum()), "bkg_backscal": bkg_backscal,
                          "bkg_hist": bg_hist, "header": ev.header, "gti": gti_rows}
        for b in range(n_bins):
            if not backscal[b] > 0:
                continue  # the bin was not exposed by this obsid
            resp = _response_for(responses, b, obsid)
            pha = write_pha(folder / f"bin{b:04d}.pi", hist[b], exposure=exposure, backscal=float(backscal[b]),
                            header_from=ev.header, gti=gti_rows, respfile=resp[1] if resp else None,
                            ancrfile=resp[0] if resp else None, backfile=bkg_path,
                            keywords={"BIN_ID": b, "RA_OBJ": ra0, "DEC_OBJ": dec0})
            rows.append({"bin_id": b, "obsid": obsid, "pha_file": str(pha.resolve()),
                         "bkg_file": str(bkg_path.resolve()) if bkg_path else "",
                         "arf_file": resp[0] if resp else "", "rmf_file": resp[1] if resp else "",
                         "counts": int(hist[b].sum()), "bkg_counts": per_obs[obsid]["bkg_counts"],
                         "exposure_s": exposure, "backscal": float(backscal[b]),
                         "bkg_backscal": bkg_backscal, "_hist": hist[b]})
    rows += _combined_rows(rows, per_obs, out / "combined", ra0=ra0, dec0=dec0)
    table = Table(rows=[[r[c] for c in SPECTRA_COLUMNS] for r in rows], names=SPECTRA_COLUMNS,
                  dtype=[np.int64, np.int64, str, str, str, str, np.int64, np.int64, float, float, float])
    table["exposure_s"].unit = "s"
    table.sort(["bin_id", "obsid"])
    return table


def _combined_rows(rows: list[dict[str, Any]], per_obs: Mapping[int, Mapping[str, Any]], folder: Path, *,
                   ra0: float, dec0: float) -> list[dict[str, Any]]:
    """Write the combined spectrum of each bin over its obsids (obsid = 0); formulas in the module docstring."""
    out: list[dict[str, Any]] = []
    by_bin: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_bin.setdefault(int(r["bin_id"]), []).append(r)
    for b, parts in sorted(by_bin.items()):
        counts = np.sum([p["_hist"] for p in parts], axis=0)
        t = float(sum(p["exposure_s"] for p in parts))
        s = float(sum(p["backscal"] * p["exposure_s"] for p in parts)) / t
        with_bkg = [p for p in parts if p["bkg_file"]]
        bkg_path = None
        bkg_counts, bkg_backscal = 0, 0.0
        if with_bkg and len(with_bkg) == len(parts):
            bkg_hist = np.sum([per_obs[p["obsid"]]["bkg_hist"] for p in parts], axis=0)
            tb = t  # each background has its obsid's exposure
            bkg_backscal = _combined_background_backscal(
                s, t, tb, [(per_obs[p["obsid"]]["bkg_counts"], p["backscal"], p["exposure_s"], p["bkg_backscal"],
                            p["exposure_s"]) for p in parts])
            bkg_counts = int(bkg_hist.sum())
            bkg_path = write_pha(folder / f"bin{b:04d}_bkg.pi", bkg_hist, exposure=tb, backscal=bkg_backscal,
                                 header_from=_combined_header(parts, per_obs), background=True,
                                 keywords={"NOBS": len(parts)})
        resp = None
        if all(p["arf_file"] and p["rmf_file"] for p in parts):
            resp = _combine_responses([(p["arf_file"], p["rmf_file"]) for p in parts],
                                      [p["exposure_s"] for p in parts], folder, f"bin{b:04d}")
        keys = {"BIN_ID": b, "RA_OBJ": ra0, "DEC_OBJ": dec0, "NOBS": len(parts)}
        for k, p in enumerate(parts, start=1):
            keys[f"OBSID{k:03d}"] = int(p["obsid"])
        pha = write_pha(folder / f"bin{b:04d}.pi", counts, exposure=t, backscal=s,
                        header_from=_combined_header(parts, per_obs), respfile=resp[1] if resp else None,
                        ancrfile=resp[0] if resp else None, backfile=bkg_path, keywords=keys)
        out.append({"bin_id": b, "obsid": 0, "pha_file": str(pha.resolve()),
                    "bkg_file": str(bkg_path.resolve()) if bkg_path else "",
                    "arf_file": str(Path(resp[0]).resolve()) if resp else "",
                    "rmf_file": str(Path(resp[1]).resolve()) if resp else "", "counts": int(counts.sum()),
                    "bkg_counts": bkg_counts, "exposure_s": t, "backscal": s, "bkg_backscal": bkg_backscal})
    return out


def _combined_header(parts: Sequence[Mapping[str, Any]], per_obs: Mapping[int, Mapping[str, Any]]) -> fits.Header:
    h = fits.Header()
    first = per_obs[int(parts[0]["obsid"])]["header"]
    for key in ("TELESCOP", "INSTRUME", "OBJECT", "MJDREF", "TIMESYS", "TIMEUNIT", "EQUINOX"):
        if key in first:
            h[key] = first[key]
    h["OBS_ID"] = "MERGED" if len(parts) > 1 else first.get("OBS_ID", "")
    h["DATE-OBS"] = min(str(per_obs[int(p["obsid"])]["header"].get("DATE-OBS", "")) for p in parts)
    return h


def resolve_responses(responses: Mapping[Any, Any] | str | os.PathLike[str] | None, obsids: Sequence[int], *,
                      out_dir: str | os.PathLike[str]) -> dict[Any, tuple[str, str]] | None:
    """Turn the ways a user names responses into obsid → (ARF, RMF).

    Parameters
    ----------
    responses : mapping, str, path-like or None
        A mapping (returned with absolute paths); ``"simulator"`` for xmine's simulated observations (the
        simulator's own ARF/RMF, :mod:`xmine.simulate.responses`, written into ``out_dir``); or a folder
        holding one ``*<obsid>*.arf`` and one ``*<obsid>*.rmf`` per obsid (e.g. CIAO ``specextract``
        outputs; the obsid must not be part of a longer number). None: no responses.
    obsids : sequence of int
    out_dir : path-like
        Where the simulator's responses are written.

    Raises
    ------
    xmine.errors.InputError
        A folder lacks an obsid's ARF or RMF, or holds several.
    """
    import re

    if responses is None:
        return None
    if isinstance(responses, Mapping):
        return {k: _response_pair(v) for k, v in responses.items()}
    if str(responses) == "simulator":
        from xmine.simulate.responses import write_simulator_responses

        arf, rmf = write_simulator_responses(Path(out_dir))
        return {int(o): (str(arf.resolve()), str(rmf.resolve())) for o in obsids}
    folder = Path(responses)
    if not folder.is_dir():
        msg = f"responses {folder}: not a folder; give a folder of *<obsid>*.arf/.rmf files, 'simulator' or a mapping"
        raise InputError(msg)
    out: dict[Any, tuple[str, str]] = {}
    for obsid in obsids:
        pattern = re.compile(rf"(?<!\d)0*{int(obsid)}(?!\d)")
        pair = []
        for kind in ("arf", "rmf"):
            found = sorted(p for p in folder.iterdir() if pattern.search(p.name) and kind in p.name.lower()
                           and p.suffix.lower() in (f".{kind}", ".fits", ".gz"))
            if len(found) != 1:
                what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
                msg = (f"responses {folder}: {what} {kind.upper()} for obsid {obsid}; keep exactly one "
                       f"*{obsid}*.{kind} there")
                raise InputError(msg)
            pair.append(str(found[0].resolve()))
        out[int(obsid)] = (pair[0], pair[1])
    return out


def _response_pair(value: Any) -> tuple[str, str]:
    arf, rmf = (value.get("arf"), value.get("rmf")) if isinstance(value, Mapping) else value
    return (str(Path(arf).resolve()) if arf else "", str(Path(rmf).resolve()) if rmf else "")


def extract_cluster_spectra(outputs: Mapping[str, Any], cluster: Any, *, config: Any,
                            out_dir: str | os.PathLike[str],
                            responses: Mapping[Any, Any] | str | os.PathLike[str] | None = None) -> Table:
    """Region spectra of one processed cluster from :class:`xmine.pipeline.ClusterResult` outputs.

    The background region is the pipeline's: an annulus beyond ``process.bg_inner_arcmin`` around the
    cluster on the merged grid, point sources masked (``outputs["masks"]["mask"]``).

    Parameters
    ----------
    outputs : mapping
        ``ClusterResult.outputs`` (``obs``, ``merge``, ``masks``, ``contbin``).
    cluster : xmine.pipeline.ClusterSpec
        Its ``ra_deg``/``dec_deg`` centre the background annulus.
    config : xmine.config.XmineConfig
        ``events.grades``, ``events.status_zero``, ``process.bg_inner_arcmin`` are used.
    out_dir : path-like
    responses : mapping, str or path-like, optional
        A mapping as :func:`extract_region_spectra` takes, ``"simulator"`` or a folder: see
        :func:`resolve_responses`.
    """
    from xmine.masks import image_wcs

    try:
        binmap = outputs["contbin"]["binmap"]
        merged = outputs["merge"]["broad"]
        point_mask = outputs["masks"]["mask"]
        observations = outputs["obs"]
    except KeyError as exc:
        msg = f"{getattr(cluster, 'name', 'cluster')}: pipeline outputs lack {exc.args[0]}; run process first"
        raise InputError(msg) from exc
    header = fits.getheader(merged)
    keep = np.asarray(fits.getdata(point_mask)) > 0
    x, y = image_wcs(header).world_to_pixel_values(float(cluster.ra_deg), float(cluster.dec_deg))
    pix_arcsec = float(np.sqrt(abs(np.linalg.det(image_wcs(header).pixel_scale_matrix)))) * 3600.0
    yy, xx = np.mgrid[0:keep.shape[0], 0:keep.shape[1]]
    annulus = np.hypot(xx - float(x), yy - float(y)) >= config.process.bg_inner_arcmin * 60.0 / pix_arcsec
    resolved = resolve_responses(responses, [int(o) for o in observations], out_dir=Path(out_dir) / "responses")
    return extract_region_spectra(binmap, observations, out_dir=out_dir, bg_mask=annulus & keep, bg_header=header,
                                  grades=tuple(config.events.grades), status_zero=config.events.status_zero,
                                  responses=resolved)
