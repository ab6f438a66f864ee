"""Level-2 event lists (Chandra ACIS, and XMM-Newton EPIC for parity tests): read, filter, sky WCS.

The sky WCS is taken from the ``TCTYP``/``TCRVL``/``TCRPX``/``TCDLT`` keywords
of the columns *named* ``x`` and ``y`` (found by name, any case, never by
position: an evt2 file also carries chip and detector pixel WCSs on other
columns).

Reading is a single streaming pass over the file, plain or gzip-compressed:
headers are parsed as they come, the EVENTS rows are read ``chunk_rows`` at a
time straight into a structured numpy dtype that holds only the requested
columns, optionally filtered chunk by chunk (``select=``), and the GTI tables
that follow are read last. Peak memory is the kept events plus one chunk, so a
10-million-event file fits comfortably (≈ 30 bytes per kept event with the
default columns). The 32-bit ``status`` column (``32X``) is read as one
``uint32`` (first bit most significant), never as 32 booleans.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from xmine.errors import InputError

__all__ = [
    "GOOD_GRADES",
    "EventList",
    "energy_ev",
    "filter_events",
    "read_events",
    "selection_mask",
    "sky_wcs",
]

#: ASCA grades CIAO keeps by default.
GOOD_GRADES = (0, 2, 3, 4, 6)

_DEFAULT_COLUMNS = ("time", "ccd_id", "chipx", "chipy", "x", "y", "energy", "pi", "grade", "status")
_PROVENANCE_KEYS = ("OBS_ID", "TELESCOP", "INSTRUME", "ASCDSVER", "CALDBVER", "DATAMODE", "READMODE", "TIMEDEL",
                    "DETNAM", "EXPOSURE", "LIVETIME", "ONTIME", "DTCOR", "TSTART", "TSTOP", "DATE-OBS", "RA_PNT",
                    "DEC_PNT", "ROLL_PNT")
_BLOCK = 2880
_DEFAULT_CHUNK_ROWS = 1_000_000


@dataclass
class EventList:
    """Events of one observation as numpy columns, with their header, sky WCS and GTIs.

    Attributes
    ----------
    columns : dict of str to numpy.ndarray
        Lower-case column name → values (native byte order). ``status`` is a
        ``uint32`` bit mask.
    header : astropy.io.fits.Header
        The EVENTS header.
    wcs : astropy.wcs.WCS
        Sky tangent-plane WCS of the ``x``/``y`` columns (physical sky pixels, 1-based).
    gti : dict of int to numpy.ndarray
        ``CCD_ID`` → ``(n, 2)`` array of START, STOP in s (key -1 for a GTI without CCD_ID).
    path : pathlib.Path or None
        Where the events came from.
    selection : dict
        The cuts applied so far (by ``read_events(select=…)`` or :func:`filter_events`).
    """

    columns: dict[str, np.ndarray]
    header: fits.Header
    wcs: WCS
    gti: dict[int, np.ndarray] = field(default_factory=dict)
    path: Path | None = None
    selection: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def provenance(self) -> dict[str, object]:
        """Processing keywords a result should record (ASCDSVER, CALDBVER, DATAMODE, READMODE, TIMEDEL, …).

        Keywords absent from the file are absent here; the cuts applied are
        under ``"selection"`` and the file under ``"event_file"``.
        """
        out: dict[str, object] = {k: self.header[k] for k in _PROVENANCE_KEYS if k in self.header}
        if self.selection:
            out["selection"] = dict(self.selection)
        if self.path is not None:
            out["event_file"] = str(self.path)
        return out

    def subset(self, keep: np.ndarray, **selection: Any) -> EventList:
        """Return the events where ``keep`` is True (a bool mask or an index array)."""
        return EventList(columns={k: v[keep] for k, v in self.columns.items()}, header=self.header, wcs=self.wcs,
                         gti=self.gti, path=self.path, selection={**self.selection, **selection})


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


# ---------------------------------------------------------------- streaming FITS reader

_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])")
_CODE_BYTES = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16, "P": 8, "Q": 16}
_CODE_DTYPE = {"L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


class _TruncatedError(Exception):
    pass


def _open_stream(p: Path) -> IO[bytes]:
    with open(p, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(p, "rb")  # type: ignore[return-value]  # a binary stream like any other
    return open(p, "rb")


def _read_exact(f: IO[bytes], n: int) -> bytes:
    buf = f.read(n)
    if len(buf) != n:
        raise _TruncatedError(f"{len(buf)} of {n} bytes")
    return buf


def _read_header(f: IO[bytes]) -> fits.Header | None:
    """Read one header (None at a clean end of file)."""
    blocks: list[bytes] = []
    while True:
        block = f.read(_BLOCK)
        if not block and not blocks:
            return None
        if len(block) != _BLOCK:
            raise _TruncatedError("a header block is incomplete")
        blocks.append(block)
        cards = [block[i:i + 80] for i in range(0, _BLOCK, 80)]
        if any(c.startswith(b"END") and c[3:].strip() == b"" for c in cards):
            break
        if len(blocks) > 2000:
            raise _TruncatedError("no END card in 2000 header blocks")
    text = b"".join(blocks).decode("ascii", errors="replace")
    return fits.Header.fromstring(text)


def _data_bytes(h: fits.Header) -> int:
    naxis = int(h.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = abs(int(h["BITPIX"])) // 8
    for i in range(1, naxis + 1):
        n *= int(h[f"NAXIS{i}"])
    return (n + int(h.get("PCOUNT", 0))) * int(h.get("GCOUNT", 1))


def _skip(f: IO[bytes], nbytes: int) -> None:
    padded = nbytes + (-nbytes) % _BLOCK
    if padded == 0:
        return
    if isinstance(f, io.BufferedReader | io.FileIO):
        pos = f.tell()
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if pos + nbytes > end:
            raise _TruncatedError(f"{end - pos} of {nbytes} data bytes")
        f.seek(min(pos + padded, end))
        return
    left = padded
    while left > 0:
        got = f.read(min(left, 1 << 22))
        if not got:
            if padded - left < nbytes:
                raise _TruncatedError(f"{padded - left} of {nbytes} data bytes")
            return
        left -= len(got)


def _table_layout(h: fits.Header) -> tuple[list[str], list[int], list[str], list[int]]:
    """Column names (lower case), byte offsets, TFORM codes and repeats of a binary table."""
    names, offsets, codes, repeats = [], [], [], []
    pos = 0
    for i in range(1, int(h["TFIELDS"]) + 1):
        m = _TFORM.match(str(h[f"TFORM{i}"]))
        if not m:
            msg = f"unsupported TFORM{i} = {h[f'TFORM{i}']!r}"
            raise ValueError(msg)
        r = int(m.group(1)) if m.group(1) else 1
        code = m.group(2)
        size = (r + 7) // 8 if code == "X" else (_CODE_BYTES[code] if code in "PQ" else r * _CODE_BYTES[code])
        names.append(str(h.get(f"TTYPE{i}", f"col{i}")).strip().lower())
        offsets.append(pos)
        codes.append(code)
        repeats.append(r)
        pos += size
    if pos != int(h["NAXIS1"]):
        msg = f"columns span {pos} bytes but NAXIS1 = {h['NAXIS1']}"
        raise ValueError(msg)
    return names, offsets, codes, repeats


def _field_dtype(code: str, repeat: int) -> Any:
    if code == "X":
        nbytes = (repeat + 7) // 8
        return {1: "u1", 2: ">u2", 4: ">u4", 8: ">u8"}.get(nbytes, ("u1", (nbytes,)))
    if code == "A":
        return f"S{repeat}"
    if code in _CODE_DTYPE:
        return _CODE_DTYPE[code] if repeat == 1 else (_CODE_DTYPE[code], (repeat,))
    msg = f"column type {code} is not supported"
    raise ValueError(msg)


def _convert(name: str, raw: np.ndarray, h: fits.Header, index: int) -> np.ndarray:
    out = np.asarray(raw)
    if out.dtype.kind in "iuf" and out.dtype.byteorder not in ("=", "|"):
        out = out.astype(out.dtype.newbyteorder("="))
    scale = h.get(f"TSCAL{index}", 1)
    zero = h.get(f"TZERO{index}", 0)
    if name == "status" or out.dtype.kind not in "iuf":
        return np.array(out, copy=True) if out.base is not None else out
    if scale == 1 and zero != 0 and float(zero).is_integer() and out.dtype.kind == "i":
        # unsigned integers stored with an offset (TZERO = 2**(n-1))
        target = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[out.dtype.itemsize]
        return (out.astype(np.int64) + int(zero)).astype(target)
    if scale != 1 or zero != 0:
        return out * float(scale) + float(zero)
    return np.array(out, copy=True) if out.base is not None else out


def _status_uint32(raw: np.ndarray) -> np.ndarray:
    a = np.asarray(raw)
    if a.ndim == 2:  # more than 64 bits, or 3/5-7 bytes: keep the first 32 bits
        a = np.ascontiguousarray(a[:, :4]).view(">u4").ravel()
    return a.astype(np.uint32)


def _gti_ccd(h: fits.Header) -> int | None:
    name = str(h.get("EXTNAME", "")).strip().upper()
    if name == "GTI":
        return int(h.get("CCD_ID", -1))
    if name.startswith("STDGTI"):  # XMM-Newton, one per CCD
        ccd = h.get("CCDID")
        if ccd is None:
            digits = name[6:]
            ccd = int(digits) if digits.isdigit() else -1
        return int(ccd)
    return None


def read_events(path: str | os.PathLike[str], *, columns: tuple[str, ...] | None = _DEFAULT_COLUMNS,
                select: Mapping[str, Any] | None = None, chunk_rows: int = _DEFAULT_CHUNK_ROWS) -> EventList:
    """Read an event file (``.fits`` or ``.fits.gz``) in one streaming pass, chunk by chunk.

    Parameters
    ----------
    path : path-like
        Level-2 event file with an ``EVENTS`` extension.
    columns : tuple of str or None, optional
        Columns to read (any case; stored lower case); columns missing from
        the file are skipped (``x``, ``y`` are required). None reads every
        fixed-width column.
    select : mapping, optional
        Cuts applied to every chunk as it is read, the keywords of
        :func:`filter_events` (``emin_kev``, ``emax_kev``, ``grades``,
        ``status_zero``, ``ccds``), so that only kept events are held in memory.
    chunk_rows : int, optional
        Rows read per chunk (default 10⁶).

    Returns
    -------
    EventList

    Raises
    ------
    xmine.errors.InputError
        If the file is missing, not FITS, truncated, has no EVENTS table or no
        sky x/y columns, each naming the file and what to do.
    """
    p = Path(path)
    if not p.exists():
        msg = f"{p}: no such event file"
        raise InputError(msg)
    if chunk_rows <= 0:
        msg = f"chunk_rows = {chunk_rows} must be positive"
        raise InputError(msg)
    try:
        f = _open_stream(p)
    except OSError as exc:
        msg = f"{p}: cannot be opened ({exc}); check its permissions"
        raise InputError(msg) from exc
    seen: list[str] = []
    header: fits.Header | None = None
    out: dict[str, np.ndarray] = {}
    gti: dict[int, np.ndarray] = {}
    try:
        with f:
            while True:
                h = _read_header(f)
                if h is None:
                    break
                if not seen and "SIMPLE" not in h:
                    msg = "the first header has no SIMPLE card"
                    raise ValueError(msg)
                name = "PRIMARY" if not seen else str(h.get("EXTNAME", "")).strip() or f"HDU{len(seen)}"
                seen.append(name)
                nbytes = _data_bytes(h)
                ccd = _gti_ccd(h) if seen[1:] else None
                if header is None and name.upper() == "EVENTS" and h.get("XTENSION", "").strip() == "BINTABLE":
                    header = h
                    out = _read_event_rows(f, h, p, columns, select, chunk_rows)
                    _skip_padding(f, nbytes)
                elif ccd is not None and h.get("XTENSION", "").strip() == "BINTABLE":
                    gti[ccd] = _read_gti_rows(f, h, nbytes)
                else:
                    _skip(f, nbytes)
    except _TruncatedError as exc:
        msg = f"{p}: the file is truncated ({exc}); download it again"
        raise InputError(msg) from exc
    except (OSError, ValueError, EOFError, KeyError, gzip.BadGzipFile) as exc:
        if isinstance(exc, InputError):
            raise
        msg = f"{p}: not a readable FITS file ({exc}); download it again"
        raise InputError(msg) from exc
    if header is None:
        msg = f"{p}: no EVENTS extension (extensions: {', '.join(seen)})"
        raise InputError(msg)
    wcs = sky_wcs(header, source=str(p))
    return EventList(columns=out, header=header, wcs=wcs, gti=gti, path=p, selection=dict(select or {}))


def _skip_padding(f: IO[bytes], nbytes: int) -> None:
    pad = (-nbytes) % _BLOCK
    if pad:
        f.read(pad)  # a missing final pad is harmless


def _read_gti_rows(f: IO[bytes], h: fits.Header, nbytes: int) -> np.ndarray:
    raw = _read_exact(f, nbytes)
    _skip_padding(f, nbytes)
    names, offsets, codes, repeats = _table_layout(h)
    if "start" not in names or "stop" not in names:
        return np.zeros((0, 2))
    nrows = int(h["NAXIS2"])
    dt = np.dtype({"names": ["start", "stop"],
                   "formats": [_field_dtype(codes[names.index(n)], repeats[names.index(n)]) for n in ("start",
                                                                                                  "stop")],
                   "offsets": [offsets[names.index("start")], offsets[names.index("stop")]],
                   "itemsize": int(h["NAXIS1"])})
    rec = np.frombuffer(raw[:nrows * dt.itemsize], dtype=dt, count=nrows)
    return np.column_stack([rec["start"].astype(float), rec["stop"].astype(float)])


def _read_event_rows(f: IO[bytes], h: fits.Header, p: Path, columns: tuple[str, ...] | None,
                     select: Mapping[str, Any] | None, chunk_rows: int) -> dict[str, np.ndarray]:
    names, offsets, codes, repeats = _table_layout(h)
    fixed = [n for n, c in zip(names, codes, strict=True) if c not in "PQCM"]
    wanted = fixed if columns is None else [c.lower() for c in columns if c.lower() in names]
    wanted = list(dict.fromkeys(wanted))
    needed = list(wanted)
    cuts = dict(select or {})
    for extra in _columns_for_selection(cuts, names):
        if extra not in needed:
            needed.append(extra)
    idx = [names.index(n) for n in needed]
    dt = np.dtype({"names": needed, "formats": [_field_dtype(codes[i], repeats[i]) for i in idx],
                   "offsets": [offsets[i] for i in idx], "itemsize": int(h["NAXIS1"])})
    nrows = int(h["NAXIS2"])
    width = dt.itemsize
    parts: dict[str, list[np.ndarray]] = {n: [] for n in wanted}
    done = 0
    while done < nrows:
        n = min(chunk_rows, nrows - done)
        buf = f.read(n * width)
        if len(buf) < n * width:
            msg = f"{p}: the EVENTS table is truncated ({done + len(buf) // width} of {nrows} rows); download it again"
            raise InputError(msg)
        rec = np.frombuffer(buf, dtype=dt, count=n)
        chunk = {}
        for name, i in zip(needed, idx, strict=True):
            values = rec[name]
            chunk[name] = _status_uint32(values) if name == "status" else _convert(name, values, h, i + 1)
        if cuts:
            keep = selection_mask(chunk, h, **cuts)
            for name in wanted:
                parts[name].append(chunk[name][keep])
        elif n == nrows:
            for name in wanted:
                parts[name].append(chunk[name])
        else:
            # no cuts: fill arrays of the final size, so the peak is the events plus one chunk, not twice the events
            for name in wanted:
                if not parts[name]:
                    parts[name].append(np.empty((nrows, *chunk[name].shape[1:]), dtype=chunk[name].dtype))
                parts[name][0][done:done + n] = chunk[name]
        done += n
    out = {}
    for name in wanted:
        if len(parts[name]) == 1:
            out[name] = parts[name][0]
        elif parts[name]:
            out[name] = np.concatenate(parts[name])
        else:
            fields: Mapping[str, Any] = dt.fields or {}
            dtype = np.dtype(np.uint32) if name == "status" else np.dtype(fields[name][0]).newbyteorder("=")
            out[name] = np.zeros(0, dtype=dtype)
    return out


def _columns_for_selection(cuts: Mapping[str, Any], names: list[str]) -> list[str]:
    extra = []
    if cuts.get("emin_kev") is not None or cuts.get("emax_kev") is not None:
        extra += ["energy"] if "energy" in names else ["pi"]
    if cuts.get("grades") is not None:
        extra.append("grade")
    if cuts.get("status_zero"):
        extra.append("status")
    if cuts.get("ccds") is not None:
        extra.append("ccd_id")
    return [c for c in extra if c in names]


# ---------------------------------------------------------------- filtering


def energy_ev(columns: Mapping[str, np.ndarray], header: fits.Header) -> np.ndarray | None:
    """Return event energies in eV: the ``energy`` column, or XMM-Newton's ``PI`` (which is in eV).

    Chandra's ``pi`` is a channel (14.6 eV each), not an energy, so it is not
    used; None when no energy is available.
    """
    if "energy" in columns:
        return np.asarray(columns["energy"])
    if "pi" in columns:
        telescope = str(header.get("TELESCOP", "")).strip().upper()
        unit = str(header.get(f"TUNIT{_column_index(header, 'pi')}", "")).strip().lower()
        if telescope == "XMM" or unit == "ev":
            return np.asarray(columns["pi"])
    return None


def selection_mask(columns: Mapping[str, np.ndarray], header: fits.Header, *, emin_kev: float | None = 0.5,
                   emax_kev: float | None = 7.0, grades: tuple[int, ...] | None = GOOD_GRADES,
                   status_zero: bool = True, ccds: tuple[int, ...] | None = None) -> np.ndarray:
    """Return the boolean mask of events passing energy, grade, status and CCD cuts.

    Energies are compared in eV as ``emin <= energy <= emax``, both ends
    included, as CIAO's ``[energy=500:7000]`` and SAS's ``PI in [500:2000]``
    filters do. A cut on a column the events lack is skipped.
    """
    n = len(next(iter(columns.values()))) if columns else 0
    keep = np.ones(n, dtype=bool)
    if emin_kev is not None or emax_kev is not None:
        energy = energy_ev(columns, header)
        if energy is not None:
            if emin_kev is not None:
                keep &= energy >= emin_kev * 1000.0
            if emax_kev is not None:
                keep &= energy <= emax_kev * 1000.0
    if grades is not None and "grade" in columns:
        keep &= np.isin(columns["grade"], grades)
    if status_zero and "status" in columns:
        keep &= columns["status"] == 0
    if ccds is not None and "ccd_id" in columns:
        keep &= np.isin(columns["ccd_id"], ccds)
    return keep


def filter_events(events: EventList, *, emin_kev: float | None = 0.5, emax_kev: float | None = 7.0,
                  grades: tuple[int, ...] | None = GOOD_GRADES, status_zero: bool = True,
                  ccds: tuple[int, ...] | None = None, allow_empty: bool = True) -> EventList:
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
    allow_empty : bool
        If False, no surviving events is an error (the pipeline's choice).

    Returns
    -------
    EventList
        The kept events; the cuts are added to ``selection`` (and so to ``provenance``).

    Raises
    ------
    xmine.errors.InputError
        With ``allow_empty=False``, if events were given but none pass: the
        message names the file and the cuts.
    """
    keep = selection_mask(events.columns, events.header, emin_kev=emin_kev, emax_kev=emax_kev, grades=grades,
                          status_zero=status_zero, ccds=ccds)
    if not allow_empty and len(events) and not keep.any():
        src = str(events.path) if events.path else "events"
        msg = (f"{src}: filter: none of {len(events)} events pass energy {emin_kev}-{emax_kev} keV, grades {grades}, "
               f"status_zero={status_zero}, ccds {ccds}; widen the cuts or check the ccds of this observation")
        raise InputError(msg)
    return events.subset(keep, emin_kev=emin_kev, emax_kev=emax_kev, grades=grades, status_zero=status_zero,
                         ccds=ccds)
