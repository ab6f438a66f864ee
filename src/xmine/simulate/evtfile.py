"""Write a simulated observation as a Chandra ACIS level-2 event file.

The EVENTS table has the 19 columns of a real evt2 (``time ccd_id node_id
expno chipx chipy tdetx tdety detx dety x y pha pha_ro energy pi fltgrade
grade status``) with their TFORMs (``status`` is ``32X``), units, TLMIN/TLMAX
and the coordinate keywords of the reference files: ``chipx/chipy`` CPCX/CPCY,
``detx/dety`` LONG-TAN/NPOL-TAN and ``x/y`` RA---TAN/DEC--TAN through the
pointing at pixel 4096.5 with 0.492″ pixels. One ``GTI`` extension per CCD
(``CCD_ID`` keyword, ``HDUNAME GTIn``) follows, as CIAO writes them.

The truth beside it (``…_truth.fits``) has the ``src_id`` of every event, in
the same row order, and one row per source with expected and simulated counts.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.time import Time

from xmine.simulate.acis import PIXEL_ARCSEC, SKY_REF_PIX
from xmine.simulate.events import DTCOR, EXPTIME_S, FRAME_TIME_S, ObservationSim
from xmine.store import atomic_write

__all__ = ["EVT2_COLUMNS", "event_file_name", "write_event_file", "write_event_truth"]

MJDREF = 50814.0
_DEG_PER_PIX = PIXEL_ARCSEC / 3600.0

#: name, TFORM, unit, comment, TLMIN, TLMAX, TNULL
EVT2_COLUMNS: list[tuple[str, str, str | None, str, Any, Any, Any]] = [
    ("time", "1D", "s", "S/C TT corresponding to mid-exposure", None, None, None),
    ("ccd_id", "1I", None, "CCD reporting event", 0, 9, None),
    ("node_id", "1I", None, "CCD serial readout amplifier node", 0, 3, None),
    ("expno", "1J", None, "Exposure number of CCD frame containing event", 0, None, None),
    ("chipx", "1I", "pixel", "Chip coords", 1, 1024, None),
    ("chipy", "1I", "pixel", "Chip coords", 1, 1024, None),
    ("tdetx", "1I", "pixel", "ACIS tiled detector coordinates", 1, 8192, 9999),
    ("tdety", "1I", "pixel", "ACIS tiled detector coordinates", 1, 8192, 9999),
    ("detx", "1E", "pixel", "ACIS detector coordinates", 0.5, 8192.5, None),
    ("dety", "1E", "pixel", "ACIS detector coordinates", 0.5, 8192.5, None),
    ("x", "1E", "pixel", "sky coordinates", 0.5, 8192.5, None),
    ("y", "1E", "pixel", "sky coordinates", 0.5, 8192.5, None),
    ("pha", "1J", "adu", "total pulse height of event", 0, 36855, 0),
    ("pha_ro", "1J", "adu", "total read-out pulse height of event", 0, 36855, 0),
    ("energy", "1E", "eV", "nominal energy of event (eV)", 0.0, 1.0e6, None),
    ("pi", "1J", "chan", "pulse invariant energy of event", 1, 1024, 0),
    ("fltgrade", "1I", None, "event grade, flight system", 0, 255, None),
    ("grade", "1I", None, "binned event grade", 0, 7, None),
    ("status", "32X", None, "event status bits", None, None, None),
]


def event_file_name(obsid: int) -> str:
    """Archive-style name ``acisf{obsid:05d}N001_evt2.fits``."""
    return f"acisf{int(obsid):05d}N001_evt2.fits"


def _met_to_iso(met: float) -> str:
    t = Time(MJDREF, met / 86400.0, format="mjd", scale="tt")
    return str(t.isot)[:19]


def _coord_kwargs(name: str, ra: float, dec: float) -> dict[str, Any]:
    if name in ("chipx", "chipy"):
        return {"coord_type": "CPCX" if name == "chipx" else "CPCY", "coord_unit": "mm",
                "coord_ref_point": 0.5, "coord_ref_value": 0.0, "coord_inc": 0.023987}
    if name in ("detx", "dety"):
        return {"coord_type": "LONG-TAN" if name == "detx" else "NPOL-TAN", "coord_unit": "deg",
                "coord_ref_point": SKY_REF_PIX, "coord_ref_value": 0.0, "coord_inc": _DEG_PER_PIX}
    if name == "x":
        return {"coord_type": "RA---TAN", "coord_unit": "deg", "coord_ref_point": SKY_REF_PIX,
                "coord_ref_value": ra, "coord_inc": -_DEG_PER_PIX}
    if name == "y":
        return {"coord_type": "DEC--TAN", "coord_unit": "deg", "coord_ref_point": SKY_REF_PIX,
                "coord_ref_value": dec, "coord_inc": _DEG_PER_PIX}
    return {}


def _obs_cards(sim: ObservationSim) -> list[tuple[str, Any, str]]:
    o = sim.obs
    ra, dec, roll = float(o["ra_pnt"]), float(o["dec_pnt"]), float(o["roll_deg"]) % 360.0
    tstart, tstop = sim.gti_start, sim.gti_stop
    cards: list[tuple[str, Any, str]] = [
        ("ORIGIN", "ASC", "Source of FITS file"),
        ("CREATOR", "xmine.simulate", "tool that created this output"),
        # a fixed DATE (a day after the end) keeps files byte-identical for one seed
        ("DATE", _met_to_iso(tstop + 86400.0), "Date and time of file creation"),
        ("CONTENT", "EVT2", "What data product"),
        ("HDUCLASS", "OGIP", ""),
        ("HDUCLAS1", "EVENTS", ""),
        ("HDUCLAS2", "ACCEPTED", ""),
        ("MJD_OBS", MJDREF + tstart / 86400.0, "Modified Julian date of observation"),
        ("DS_IDENT", f"ADS/Sa.CXO#obs/{sim.obsid:05d}", "dataset identifier"),
        ("DATE-OBS", _met_to_iso(tstart), "Observation start date"),
        ("DATE-END", _met_to_iso(tstop), "Observation end date"),
        ("TIMESYS", "TT", "Time system"),
        ("MJDREF", MJDREF, "[d] MJD zero point for times"),
        ("TIMEZERO", 0.0, "[s] Clock correction"),
        ("TIMEUNIT", "s", "Time unit"),
        ("TIMEREF", "LOCAL", "Time reference (barycenter/local)"),
        ("TASSIGN", "SATELLITE", "Time assigned by clock"),
        ("CLOCKAPP", True, "default"),
        ("TSTART", tstart, "[s] Observation start time (MET)"),
        ("TSTOP", tstop, "[s] Observation end time (MET)"),
        ("OBS_MODE", "POINTING", "Observation mode"),
        ("TIMEPIXR", 0.5, "default"),
        ("DATACLAS", "SIMULATED", "xmine simulation, not observed data"),
        ("RADESYS", "ICRS", "default"),
        ("EQUINOX", 2000.0, "default"),
        ("TIMEDEL", FRAME_TIME_S, "[s] timedel Lev1"),
        ("MISSION", "AXAF", "Mission"),
        ("TELESCOP", "CHANDRA", "Telescope"),
        ("INSTRUME", "ACIS", "Instrument"),
        ("GRATING", "NONE", "Grating"),
        ("DETNAM", sim.layout.detnam, "Detector"),
        ("RA_PNT", ra, "[deg] Pointing RA"),
        ("DEC_PNT", dec, "[deg] Pointing Dec"),
        ("ROLL_PNT", roll, "[deg] Pointing Roll"),
        ("RA_TARG", ra, "[deg] Observer's specified target RA"),
        ("DEC_TARG", dec, "[deg] Observer's specified target Dec"),
        ("RA_NOM", ra, "[deg] Nominal RA"),
        ("DEC_NOM", dec, "[deg] Nominal Dec"),
        ("ROLL_NOM", roll, "[deg] Nominal Roll"),
        ("READMODE", "TIMED", "Read mode"),
        ("DATAMODE", "VFAINT", "Data mode"),
        ("GRADESYS", "ASCA", "grade system: ASCA, ACIS, or USER"),
        ("EXPTIME", EXPTIME_S, "[s]"),
        ("OBJECT", str(o.get("cluster") or "SIMULATED FIELD"), "Source name"),
        ("OBSERVER", "xmine", "Principal investigator"),
        ("OBS_ID", str(sim.obsid), "Observation id"),
        ("SEQ_NUM", f"9{sim.obsid % 100000:05d}", "Sequence number"),
        ("ONTIME", sim.ontime_s, "[s] Sum of GTIs"),
        ("LIVETIME", sim.livetime_s, "[s] Livetime"),
        ("EXPOSURE", sim.livetime_s, "[s] Exposure time"),
        ("DTCOR", DTCOR, "Dead time correction"),
    ]
    for c in sim.layout.ccd_ids:
        on_c = sum(b - a for a, b in sim.chip_gtis[c])
        cards += [(f"ONTIME{c}", on_c, "[s] Sum of GTIs"),
                  (f"LIVTIME{c}", on_c * DTCOR, "[s] Livetime"),
                  (f"EXPOSUR{c}", on_c * DTCOR, "[s] Exposure time")]
    cards += [
        ("DITHAMP", 8.0, "[arcsec] simulated dither amplitude"),
        ("DITHPERX", 1000.0, "[s] simulated dither period, detx"),
        ("DITHPERY", 707.0, "[s] simulated dither period, dety"),
        ("SIMSEED", int(sim.meta.get("seed", 0)), "xmine random seed"),
        ("SIMVIGN", bool(sim.meta.get("vignetted", True)), "vignetting applied"),
    ]
    return cards


def _mtype_cards() -> list[tuple[str, Any, str]]:
    """CIAO's vector-column names (``sky`` = x,y …) as in the reference evt2."""
    pairs = [("chip", "chipx,chipy"), ("tdet", "tdetx,tdety"), ("det", "detx,dety"), ("sky", "x,y"),
             ("CPC", "CPCX,CPCY"), ("MSC", "PHI,THETA"), ("EQPOS", "RA,DEC")]
    cards: list[tuple[str, Any, str]] = []
    for i, (mtype, mform) in enumerate(pairs, start=1):
        cards += [(f"MTYPE{i}", mtype, "DM Keyword: Descriptor name."), (f"MFORM{i}", mform, "")]
    return cards


def _ds_cards(ccds: tuple[int, ...]) -> list[tuple[str, Any, str]]:
    cards: list[tuple[str, Any, str]] = [("DSTYP1", "time", "DM Keyword: Descriptor name."),
                                         ("DSVAL1", "TABLE", "[s]"), ("DSFORM1", "D", ""),
                                         ("DSUNIT1", "s", "")]
    for i, c in enumerate(ccds):
        cards.append((("" if i == 0 else str(i + 1)) + "DSREF1", f":GTI{c}", ""))
    cards += [("DSTYP2", "ccd_id", "DM Keyword: Descriptor name."), ("DSFORM2", "I", "")]
    for i, c in enumerate(ccds):
        cards.append((("" if i == 0 else str(i + 1)) + "DSVAL2", f"{c}:{c}", ""))
    return cards


def _events_hdu(sim: ObservationSim, *, with_data: bool = True) -> fits.BinTableHDU:
    ra, dec = float(sim.obs["ra_pnt"]), float(sim.obs["dec_pnt"])
    cols = []
    for name, form, unit, _, _, _, null in EVT2_COLUMNS:
        array = sim.columns[name] if with_data else sim.columns[name][:0]
        kw: dict[str, Any] = {"name": name, "format": form, "array": array}
        if unit:
            kw["unit"] = unit
        if null is not None:
            kw["null"] = null
        kw.update(_coord_kwargs(name, ra, dec))
        cols.append(fits.Column(**kw))
    hdu = fits.BinTableHDU.from_columns(cols, name="EVENTS")
    h = hdu.header
    if not with_data:
        h["NAXIS2"] = sim.n_events
    h.set("HDUNAME", "EVENTS", "ASCDM block name", after="EXTNAME")
    for i, (_, _, _, comment, lo, hi, _) in enumerate(EVT2_COLUMNS, start=1):
        h.comments[f"TTYPE{i}"] = comment
        if lo is not None:
            h.set(f"TLMIN{i}", lo, after=f"TFORM{i}" if f"TUNIT{i}" not in h else f"TUNIT{i}")
        if hi is not None:
            h.set(f"TLMAX{i}", hi, after=f"TLMIN{i}")
    # the extra coordinate descriptors of the reference (detx/dety as a PHI/THETA tangent plane)
    h.set("TCNA9", "PHI", after="TCUNI9")
    h.set("LONP9", 270.0, after="TCNA9")
    h.set("LATP9", 90.0, after="LONP9")
    h.set("TCNA10", "THETA", after="TCUNI10")
    for key, value, comment in _obs_cards(sim) + _mtype_cards() + _ds_cards(sim.layout.ccd_ids):
        h[key] = (value, comment)
    return hdu


def _gti_hdus(sim: ObservationSim) -> list[fits.BinTableHDU]:
    out = []
    for c in sim.layout.ccd_ids:
        rows = np.array(sim.chip_gtis[c], dtype=np.float64)
        cols = [fits.Column(name="START", format="1D", unit="s", array=rows[:, 0]),
                fits.Column(name="STOP", format="1D", unit="s", array=rows[:, 1])]
        g = fits.BinTableHDU.from_columns(cols, name="GTI")
        g.header["EXTVER"] = c
        g.header["HDUNAME"] = (f"GTI{c}", "ASCDM block name")
        for key, value, comment in (("MISSION", "AXAF", "Mission"), ("TELESCOP", "CHANDRA", "Telescope"),
                                    ("INSTRUME", "ACIS", "Instrument"),
                                    ("MJDREF", MJDREF, "MJD zero point for times"),
                                    ("TSTART", sim.gti_start, "Observation start time"),
                                    ("TSTOP", sim.gti_stop, "Observation end time"),
                                    ("TIMESYS", "TT", "Time system"), ("TIMEUNIT", "s", "Time unit"),
                                    ("CCD_ID", c, "CCD for this table")):
            g.header[key] = (value, comment)
        out.append(g)
    return out


def _events_record(sim: ObservationSim) -> np.ndarray:
    """Return the EVENTS rows as big-endian FITS bytes (``status`` packed to 4 bytes, first bit = MSB)."""
    fields = []
    for name, form, *_ in EVT2_COLUMNS:
        fields.append((name, "u1", (4,)) if name == "status" else (name, _FITS_DTYPE[form[-1]]))
    rec = np.empty(sim.n_events, dtype=fields)
    for name, *_ in EVT2_COLUMNS:
        if name == "status":
            rec[name] = np.packbits(sim.columns["status"], axis=1, bitorder="big")
        else:
            rec[name] = sim.columns[name]
    return rec


_FITS_DTYPE = {"D": ">f8", "E": ">f4", "J": ">i4", "I": ">i2"}


def _pad(n: int) -> bytes:
    return b"\0" * ((-n) % 2880)


def write_event_file(sim: ObservationSim, path: str | os.PathLike[str], *, compresslevel: int = 4) -> Path:
    """Write the evt2 file (gzip-compressed if the name ends in ``.gz``).

    The EVENTS data are written straight from a big-endian record array (the
    header is astropy's); astropy, CIAO and fitsio read the file as any other.

    Parameters
    ----------
    sim : ObservationSim
        The simulated observation.
    path : path-like
        Output file, e.g. ``<out>/<obsid>/primary/acisf01234N001_evt2.fits``.
    compresslevel : int, optional
        zlib level for ``.gz`` names (4 is 4× faster than astropy's 9, files 10 % larger).

    Returns
    -------
    pathlib.Path
        The file written (atomically).
    """
    primary = fits.PrimaryHDU()
    for key, value, comment in (("ORIGIN", "ASC", "Source of FITS file"),
                                ("CREATOR", "xmine.simulate", "tool that created this output"),
                                ("TELESCOP", "CHANDRA", "Telescope"), ("INSTRUME", "ACIS", "Instrument"),
                                ("OBS_ID", str(sim.obsid), "Observation id"),
                                ("DATE-OBS", _met_to_iso(sim.gti_start), "Observation start date")):
        primary.header[key] = (value, comment)
    header = _events_hdu(sim, with_data=False).header
    rec = _events_record(sim)
    target = Path(path)
    with atomic_write(target) as tmp:
        opener = (lambda p: gzip.open(p, "wb", compresslevel=compresslevel)) if target.name.endswith(".gz") \
            else (lambda p: open(p, "wb"))  # noqa: SIM115 - closed by the with below
        with opener(tmp) as f:
            f.write(primary.header.tostring().encode("ascii"))
            f.write(header.tostring().encode("ascii"))
            data = rec.tobytes()
            f.write(data)
            f.write(_pad(len(data)))
            for g in _gti_hdus(sim):
                f.write(g.header.tostring().encode("ascii"))
                raw = np.empty(len(g.data), dtype=[("START", ">f8"), ("STOP", ">f8")])
                raw["START"] = g.data["START"]
                raw["STOP"] = g.data["STOP"]
                f.write(raw.tobytes())
                f.write(_pad(raw.nbytes))
    return target


def write_event_truth(sim: ObservationSim, path: str | os.PathLike[str]) -> Path:
    """Write the truth beside an event file: per-event ``src_id`` and per-source counts.

    HDU ``EVENT_SRC`` holds ``src_id`` (int32) in the event file's row order
    (clusters 1…, then point sources; 0 sky background, −1 particle, −2 flare);
    HDU ``SOURCES`` has one row per source with ``expected_counts`` (all
    energies, vignetting and chip gaps included), ``expected_counts_b``
    (0.5–7 keV) and the simulated counts.
    """
    primary = fits.PrimaryHDU()
    primary.header["OBS_ID"] = (str(sim.obsid), "Observation id")
    primary.header["CONTENT"] = ("SIMTRUTH", "xmine simulation truth")
    ev = fits.BinTableHDU.from_columns([fits.Column(name="src_id", format="1J", array=sim.src_id)],
                                       name="EVENT_SRC")
    src = fits.table_to_hdu(sim.sources)
    src.name = "SOURCES"
    flare = sim.meta.get("flare_interval")
    if flare is not None:
        src.header["FLARE_T1"] = (float(flare[0]), "[s] flare start (MET, half maximum)")
        src.header["FLARE_T2"] = (float(flare[1]), "[s] flare end (MET, half maximum)")
    src.header["DITHPH1"] = (sim.dither_phase[0], "[rad] dither phase, detx")
    src.header["DITHPH2"] = (sim.dither_phase[1], "[rad] dither phase, dety")
    target = Path(path)
    with atomic_write(target) as tmp:
        fits.HDUList([primary, ev, src]).writeto(tmp)
    return target
