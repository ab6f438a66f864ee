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
  The mirror vignetting falls ~2 %/arcmin at 1.5 keV and faster above 5 keV, and the QE/contamination
  varies across and between chips, so for bins 3–5′ from where the ARF was made the effective area is
  wrong by ~5–15 % in normalisation and its hard/soft ratio by a few per cent: kT biased by a few per
  cent, more for bins on another chip. Per-region ARFs (weighted ARFs, CIAO ``specextract
  weight=yes``) remove it.
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

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from xmine.errors import InputError
from xmine.store import atomic_write

__all__ = [
    "BACKSCAL_NORM_PIX",
    "SPECTRA_COLUMNS",
    "extract_cluster_spectra",
    "extract_region_spectra",
    "read_arf",
    "read_rmf",
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


def _gti_hdu(gti: np.ndarray | None, header: fits.Header | None) -> fits.BinTableHDU:
    rows = np.zeros((0, 2)) if gti is None else np.asarray(gti, dtype=np.float64).reshape(-1, 2)
    cols = [fits.Column(name="START", format="1D", unit="s", array=rows[:, 0]),
            fits.Column(name="STOP", format="1D", unit="s", array=rows[:, 1])]
    hdu = fits.BinTableHDU.from_columns(cols, name="GTI")
    h = hdu.header
    for key in ("TELESCOP", "INSTRUME", "OBS_ID", "MJDREF", "TIMESYS", "TIMEUNIT", "TSTART", "TSTOP"):
        if header is not None and key in header:
            h[key] = _clean_value(header[key])
    h["HDUCLASS"], h["HDUCLAS1"], h["HDUCLAS2"] = "OGIP", "GTI", "STANDARD"
    h["ONTIME"] = (float(np.sum(rows[:, 1] - rows[:, 0])), "[s] sum of GTIs")
    return hdu


def _primary(creator: str) -> fits.PrimaryHDU:
    p = fits.PrimaryHDU()
    p.header["CREATOR"] = (creator, "tool that created this output")
    return p


def _ogip_name(path: str | os.PathLike[str] | None) -> str:
    """File name as OGIP keywords hold it: the bare name when given (files sit together), else 'none'."""
    return "none" if path is None or str(path) == "" else Path(path).name


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
        The RMF, ARF and background spectrum, written by bare file name (keep them in the spectrum's folder).
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
    h["BACKFILE"] = (_ogip_name(backfile), "background spectrum")
    h["CORRFILE"] = ("none", "correction spectrum")
    h["RESPFILE"] = (_ogip_name(respfile), "redistribution matrix (RMF)")
    h["ANCRFILE"] = (_ogip_name(ancrfile), "ancillary response (ARF)")
    h["POISSERR"] = (True, "Poisson errors apply")
    h["SYS_ERR"] = (0.0, "no systematic error")
    h["GROUPING"] = (0, "no grouping")
    h["QUALITY"] = (0, "all channels good")
    h["CREATOR"] = ("xmine.spectra", "tool that created this output")
    for key, value in (keywords or {}).items():
        h[key] = _clean_value(value)
    p = Path(path)
    hdus = fits.HDUList([_primary("xmine.spectra"), hdu, _gti_hdu(gti, header_from)])
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
