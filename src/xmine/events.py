"""Chandra ACIS level-2 event lists: read, filter, and the sky WCS of their x/y columns.

The sky WCS is taken from the ``TCTYP``/``TCRVL``/``TCRPX``/``TCDLT`` keywords
of the columns *named* ``x`` and ``y`` (found by name, never by position: an
evt2 file also carries chip and detector pixel WCSs on other columns).
Files are opened memory-mapped, and only the columns asked for are read.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.wcs import WCS

from xmine.errors import InputError

__all__ = ["GOOD_GRADES", "EventList", "filter_events", "read_events", "sky_wcs"]

#: ASCA grades CIAO keeps by default.
GOOD_GRADES = (0, 2, 3, 4, 6)

_DEFAULT_COLUMNS = ("time", "ccd_id", "x", "y", "energy", "pi", "grade", "status")
_PROVENANCE_KEYS = ("OBS_ID", "ASCDSVER", "CALDBVER", "DATAMODE", "READMODE", "TIMEDEL", "DETNAM", "INSTRUME",
                    "EXPOSURE", "LIVETIME", "ONTIME", "TSTART", "TSTOP", "DATE-OBS", "RA_PNT", "DEC_PNT", "ROLL_PNT")


@dataclass
class EventList:
    """Events of one observation as numpy columns, with their header, sky WCS and GTIs.

    Attributes
    ----------
    columns : dict of str to numpy.ndarray
        Lower-case column name → values. ``status`` is a ``uint32`` bit mask.
    header : astropy.io.fits.Header
        The EVENTS header.
    wcs : astropy.wcs.WCS
        Sky tangent-plane WCS of the ``x``/``y`` columns (physical sky pixels, 1-based).
    gti : dict of int to numpy.ndarray
        ``CCD_ID`` → ``(n, 2)`` array of START, STOP in s (key -1 for a GTI without CCD_ID).
    path : pathlib.Path or None
        Where the events came from.
    """

    columns: dict[str, np.ndarray]
    header: fits.Header
    wcs: WCS
    gti: dict[int, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def provenance(self) -> dict[str, object]:
        """Processing keywords a result should record (ASCDSVER, CALDBVER, DATAMODE, TIMEDEL, …)."""
        return {k: self.header[k] for k in _PROVENANCE_KEYS if k in self.header}


def _column_index(header: fits.Header, name: str) -> int:
    for key, value in header.items():
        if key.startswith("TTYPE") and key[5:].isdigit() and str(value).strip().lower() == name:
            return int(key[5:])
    return 0


def sky_wcs(header: fits.Header, *, source: str = "events") -> WCS:
    """Return the sky WCS of an event list from the TC* keywords of its ``x`` and ``y`` columns.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header of the EVENTS binary table.
    source : str, optional
        Name used in error messages (the file).

    Returns
    -------
    astropy.wcs.WCS
        Two-axis celestial WCS mapping (x, y) sky pixels (1-based, FITS) to RA/Dec.
    """
    ix, iy = _column_index(header, "x"), _column_index(header, "y")
    if not ix or not iy:
        msg = f"{source}: no columns named x and y; is this a level-2 event file?"
        raise InputError(msg)
    w = WCS(naxis=2)
    try:
        w.wcs.ctype = [header[f"TCTYP{ix}"], header[f"TCTYP{iy}"]]
        w.wcs.crval = [header[f"TCRVL{ix}"], header[f"TCRVL{iy}"]]
        w.wcs.crpix = [header[f"TCRPX{ix}"], header[f"TCRPX{iy}"]]
        w.wcs.cdelt = [header[f"TCDLT{ix}"], header[f"TCDLT{iy}"]]
    except KeyError as exc:
        msg = f"{source}: the x/y columns have no sky WCS keyword {exc.args[0]}; cannot place events on the sky"
        raise InputError(msg) from exc
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = str(header.get("RADECSYS", header.get("RADESYS", "ICRS"))).strip() or "ICRS"
    w.wcs.equinox = float(header.get("EQUINOX", 2000.0))
    if not w.has_celestial:
        msg = f"{source}: x/y column types {w.wcs.ctype[0]!r}, {w.wcs.ctype[1]!r} are not a sky projection"
        raise InputError(msg)
    return w


def _status_to_uint32(raw: np.ndarray) -> np.ndarray:
    """Pack a 32X status column (bool bits, first bit most significant) into uint32."""
    bits = np.asarray(raw)
    if bits.dtype == bool and bits.ndim == 2:
        return np.packbits(bits, axis=1, bitorder="big").view(">u4").ravel().astype(np.uint32)
    if bits.dtype == np.uint8 and bits.ndim == 2:  # 32X read as 4 bytes
        return bits.copy().view(">u4").ravel().astype(np.uint32)
    return bits.astype(np.uint32).ravel()


def read_events(path: str | os.PathLike[str], *, columns: tuple[str, ...] | None = _DEFAULT_COLUMNS) -> EventList:
    """Read an event file (``.fits`` or ``.fits.gz``), memory-mapped where possible.

    Parameters
    ----------
    path : path-like
        Level-2 event file with an ``EVENTS`` extension.
    columns : tuple of str or None, optional
        Lower-case columns to read; columns missing from the file are skipped
        (``x``, ``y`` are required). None reads every column.

    Returns
    -------
    EventList
    """
    p = Path(path)
    try:
        with warnings.catch_warnings():
            # a damaged file warns before it raises; the error below says it all
            warnings.simplefilter("ignore", VerifyWarning)
            hdul = fits.open(p, memmap=True)
    except FileNotFoundError as exc:
        msg = f"{p}: no such event file"
        raise InputError(msg) from exc
    except (OSError, ValueError, TypeError) as exc:
        msg = f"{p}: not a readable FITS file ({exc}); download it again"
        raise InputError(msg) from exc
    with hdul:
        if "EVENTS" not in hdul:
            msg = f"{p}: no EVENTS extension (extensions: {', '.join(h.name for h in hdul)})"
            raise InputError(msg)
        hdu = hdul["EVENTS"]
        header = hdu.header.copy()
        wcs = sky_wcs(header, source=str(p))
        names = [n.lower() for n in hdu.columns.names]
        wanted = names if columns is None else [c for c in columns if c in names]
        try:
            data = hdu.data
            out: dict[str, np.ndarray] = {}
            for name in wanted:
                values = data.field(names.index(name))
                if name == "status":
                    out[name] = _status_to_uint32(values)
                else:
                    out[name] = np.array(values, dtype=values.dtype.newbyteorder("="))
        except (OSError, ValueError, TypeError, EOFError) as exc:
            msg = f"{p}: the EVENTS table cannot be read ({exc}); the file may be truncated"
            raise InputError(msg) from exc
        gti: dict[int, np.ndarray] = {}
        for h in hdul[1:]:
            if h.name == "GTI" and h.data is not None:
                ccd = int(h.header.get("CCD_ID", -1))
                gti[ccd] = np.column_stack([h.data["START"], h.data["STOP"]]).astype(float)
    return EventList(columns=out, header=header, wcs=wcs, gti=gti, path=p)


def filter_events(events: EventList, *, emin_kev: float | None = 0.5, emax_kev: float | None = 7.0,
                  grades: tuple[int, ...] | None = GOOD_GRADES, status_zero: bool = True,
                  ccds: tuple[int, ...] | None = None) -> EventList:
    """Return the events passing energy, grade, status and CCD cuts.

    Energies are compared in eV as ``emin <= energy <= emax``, both ends
    included, as CIAO's ``[energy=500:7000]`` filter does.

    Parameters
    ----------
    events : EventList
    emin_kev, emax_kev : float or None
        Energy band in keV; None leaves that side open.
    grades : tuple of int or None
        ASCA grades to keep (default 0, 2, 3, 4, 6); None keeps all.
    status_zero : bool
        Keep only events with all status bits clear.
    ccds : tuple of int or None
        CCD ids to keep, e.g. (0, 1, 2, 3) for ACIS-I.
    """
    keep = np.ones(len(events), dtype=bool)
    cols = events.columns
    if (emin_kev is not None or emax_kev is not None) and "energy" in cols:
        energy = cols["energy"]
        if emin_kev is not None:
            keep &= energy >= emin_kev * 1000.0
        if emax_kev is not None:
            keep &= energy <= emax_kev * 1000.0
    if grades is not None and "grade" in cols:
        keep &= np.isin(cols["grade"], grades)
    if status_zero and "status" in cols:
        keep &= cols["status"] == 0
    if ccds is not None and "ccd_id" in cols:
        keep &= np.isin(cols["ccd_id"], ccds)
    return EventList(columns={k: v[keep] for k, v in cols.items()}, header=events.header, wcs=events.wcs,
                     gti=events.gti, path=events.path)
