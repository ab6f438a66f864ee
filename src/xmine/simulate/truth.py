"""The truth of a simulated sky: clusters, point sources and observations.

Three tables (astropy :class:`~astropy.table.Table`), each read from ECSV,
CSV, FITS or Parquet and validated on load. Required columns must be present;
optional ones get the documented default. Every bad value raises an
:class:`~xmine.errors.InputError` naming the table, the row (1-based) and its
name, the column, the value and the allowed range, e.g.::

    clusters.ecsv row 3 (A2029): column dec_deg = 95.0 is outside [-90, 90]

Rates are **detected count rates** (counts s⁻¹) in the CSC broad band
0.5–7 keV for an on-axis position, before vignetting; see
:mod:`xmine.simulate.spectra`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import MaskedColumn, Table

from xmine.errors import InputError
from xmine.store import atomic_write

__all__ = [
    "CLUSTER_COLUMNS",
    "OBSERVATION_COLUMNS",
    "POINT_SOURCE_COLUMNS",
    "Truth",
    "demo_truth",
    "load_truth",
    "validate_truth",
    "write_truth",
]


@dataclass(frozen=True)
class _Col:
    kind: str  # "f" float, "i" int, "s" str, "b" bool
    required: bool
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] | None = None
    unit: str | None = None
    doc: str = ""


_INF = math.inf

#: Cluster table columns: name → (kind, required, default, range, unit, description).
CLUSTER_COLUMNS: dict[str, _Col] = {
    "name": _Col("s", True, doc="cluster name"),
    "ra_deg": _Col("f", True, lo=0, hi=360, hi_open=True, unit="deg", doc="centre RA (ICRS)"),
    "dec_deg": _Col("f", True, lo=-90, hi=90, unit="deg", doc="centre Dec (ICRS)"),
    "z": _Col("f", True, lo=0, hi=5, doc="redshift"),
    "model": _Col("s", True, choices=("beta", "double_beta"), doc="surface-brightness model"),
    "rc_arcsec": _Col("f", True, lo=0, hi=3600, lo_open=True, unit="arcsec",
                      doc="core radius (the inner one for double_beta)"),
    "beta": _Col("f", True, lo=0.5, hi=3, lo_open=True, doc="β slope (> 0.5)"),
    "rate_cps": _Col("f", True, lo=0, hi=1e4, unit="ct/s", doc="on-axis detected rate, 0.5–7 keV"),
    "kt_kev": _Col("f", False, 5.0, lo=0.1, hi=30, unit="keV", doc="temperature"),
    "ellipticity": _Col("f", False, 0.0, lo=0, hi=0.9, doc="1 − axis ratio"),
    "pa_deg": _Col("f", False, 0.0, lo=-360, hi=360, unit="deg", doc="major axis, east of north"),
    "rc2_arcsec": _Col("f", False, math.nan, lo=0, hi=3600, lo_open=True, unit="arcsec",
                       doc="outer core radius (double_beta only)"),
    "beta2": _Col("f", False, math.nan, lo=0.5, hi=3, lo_open=True, doc="outer β (default: beta)"),
    "core_frac": _Col("f", False, 0.3, lo=0, hi=1, lo_open=True, hi_open=True,
                      doc="share of counts in the inner component (double_beta)"),
    "core_kt_ratio": _Col("f", False, 0.6, lo=0.05, hi=2, doc="kT of the cool core / kt_kev"),
    "sub_dx_arcsec": _Col("f", False, 0.0, lo=-3600, hi=3600, unit="arcsec", doc="sub-clump offset east"),
    "sub_dy_arcsec": _Col("f", False, 0.0, lo=-3600, hi=3600, unit="arcsec", doc="sub-clump offset north"),
    "sub_rc_arcsec": _Col("f", False, 15.0, lo=0, hi=3600, lo_open=True, unit="arcsec",
                          doc="sub-clump core radius"),
    "sub_frac": _Col("f", False, 0.0, lo=0, hi=1, hi_open=True, doc="share of counts in the sub-clump"),
    "cf_radius_arcsec": _Col("f", False, 0.0, lo=0, hi=3600, unit="arcsec",
                             doc="cold-front radius (0: none)"),
    "cf_angle_deg": _Col("f", False, 0.0, lo=-360, hi=360, unit="deg", doc="cold-front direction, E of N"),
    "cf_halfwidth_deg": _Col("f", False, 60.0, lo=0, hi=180, lo_open=True, unit="deg",
                             doc="half opening angle of the cold-front sector"),
    "cf_jump": _Col("f", False, 1.0, lo=1, hi=100, doc="surface-brightness drop across the front"),
}

#: Point-source table columns.
POINT_SOURCE_COLUMNS: dict[str, _Col] = {
    "name": _Col("s", True, doc="source name"),
    "ra_deg": _Col("f", True, lo=0, hi=360, hi_open=True, unit="deg", doc="RA (ICRS)"),
    "dec_deg": _Col("f", True, lo=-90, hi=90, unit="deg", doc="Dec (ICRS)"),
    "rate_cps": _Col("f", True, lo=0, hi=1e3, unit="ct/s", doc="mean on-axis detected rate, 0.5–7 keV"),
    "gamma": _Col("f", False, 1.7, lo=-1, hi=5, doc="power-law photon index (sets the hardness)"),
    "var_kind": _Col("s", False, "none", choices=("none", "sine", "flare"), doc="light-curve shape"),
    "var_amp": _Col("f", False, 0.0, lo=0, hi=100, doc="fractional amplitude (sine ≤ 1; flare: peak/mean − 1)"),
    "var_period_s": _Col("f", False, 5000.0, lo=0, hi=1e9, lo_open=True, unit="s",
                         doc="sine period or flare decay time"),
    "cluster": _Col("s", False, "", doc="field (cluster name) the source belongs to, or empty"),
}

#: Observation table columns.
OBSERVATION_COLUMNS: dict[str, _Col] = {
    "obsid": _Col("i", True, lo=1, hi=99999, doc="Chandra ObsID"),
    "cluster": _Col("s", False, "", doc="target cluster name, or empty"),
    "ra_pnt": _Col("f", True, lo=0, hi=360, hi_open=True, unit="deg", doc="pointing RA"),
    "dec_pnt": _Col("f", True, lo=-90, hi=90, unit="deg", doc="pointing Dec"),
    "roll_deg": _Col("f", True, lo=-360, hi=360, unit="deg", doc="roll angle"),
    "instrument": _Col("s", True, choices=("ACIS-I", "ACIS-S"), doc="detector configuration"),
    "exposure_s": _Col("f", True, lo=0, hi=2e6, lo_open=True, unit="s", doc="live time (EXPOSURE)"),
    "flare": _Col("b", False, False, doc="add a background flare"),
    "flare_amp": _Col("f", False, 6.0, lo=0, hi=1e3, doc="peak background rate increase during the flare"),
    "sky_bg_cps_arcmin2": _Col("f", False, 6e-4, lo=0, hi=10, unit="ct s-1 arcmin-2",
                               doc="vignetted sky background, 0.5–7 keV"),
    "particle_bg_cps_arcmin2": _Col("f", False, 1.0e-3, lo=0, hi=10, unit="ct s-1 arcmin-2",
                                    doc="unvignetted particle background, 0.3–12 keV"),
    "tstart": _Col("f", False, math.nan, lo=0, hi=2e9, unit="s",
                   doc="start time, Chandra MET (default from the row order)"),
}

_TABLES = {"clusters": CLUSTER_COLUMNS, "point_sources": POINT_SOURCE_COLUMNS,
           "observations": OBSERVATION_COLUMNS}


@dataclass
class Truth:
    """A validated truth: three tables.

    Attributes
    ----------
    clusters, point_sources, observations : astropy.table.Table
        With every column of :data:`CLUSTER_COLUMNS`, :data:`POINT_SOURCE_COLUMNS`
        and :data:`OBSERVATION_COLUMNS` present and typed.
    """

    clusters: Table
    point_sources: Table
    observations: Table

    def tables(self) -> dict[str, Table]:
        """Return the tables by name."""
        return {"clusters": self.clusters, "point_sources": self.point_sources,
                "observations": self.observations}


def _fmt_range(c: _Col) -> str:
    lo = "(" if c.lo_open else "["
    hi = ")" if c.hi_open else "]"

    def g(v: float | None) -> str:
        return f"{v:g}" if v is not None else ""

    return f"{lo}{g(c.lo)}, {g(c.hi)}{hi}"


def _row_label(label: str, i: int, names: list[str] | None) -> str:
    who = f" ({names[i]})" if names is not None and names[i] else ""
    return f"{label} row {i + 1}{who}"


def _is_missing(v: Any) -> bool:
    if v is None or v is np.ma.masked:
        return True
    if isinstance(v, (float, np.floating)) and not np.isfinite(v):
        return False  # NaN is a value; ranges reject it below
    return isinstance(v, str) and v.strip() == ""


def _to_bool(v: Any) -> bool | None:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return bool(v) if v in (0, 1) else None
    s = str(v).strip().lower()
    if s in {"true", "t", "1", "yes", "y"}:
        return True
    if s in {"false", "f", "0", "no", "n", ""}:
        return False
    return None


def _validate_table(table: Table, kind: str, label: str) -> Table:
    schema = _TABLES[kind]
    present = set(table.colnames)
    missing = [n for n, c in schema.items() if c.required and n not in present]
    if missing:
        need = ", ".join(n for n, c in schema.items() if c.required)
        msg = f"{label}: missing column {missing[0]!r}; the {kind} table needs the columns {need}"
        raise InputError(msg)
    nrow = len(table)
    names: list[str] | None = None
    name_col = "name" if "name" in present else ("obsid" if "obsid" in present else None)
    if name_col is not None:
        names = ["" if _is_missing(v) else str(v).strip() for v in table[name_col]]
    out = Table(meta=dict(table.meta))
    for col, spec in schema.items():
        if col not in present:
            if spec.kind == "s":
                out[col] = np.array([spec.default] * nrow, dtype=object).astype(str) if nrow else \
                    np.array([], dtype="U1")
            elif spec.kind == "b":
                out[col] = np.full(nrow, bool(spec.default))
            elif spec.kind == "i":
                out[col] = np.full(nrow, int(spec.default or 0), dtype=np.int64)
            else:
                out[col] = np.full(nrow, float(spec.default), dtype=np.float64)
        else:
            raw = table[col]
            # masked (blank) cells come out as np.ma.masked
            values = list(raw) if isinstance(raw, MaskedColumn) else list(np.asarray(raw))
            conv: list[Any] = []
            for i, v in enumerate(values):
                where = _row_label(label, i, names)
                if _is_missing(v):
                    if spec.required:
                        msg = f"{where}: column {col} is empty; give a value"
                        raise InputError(msg)
                    conv.append(spec.default)
                    continue
                if isinstance(v, bytes):
                    v = v.decode()
                if spec.kind == "s":
                    conv.append(str(v).strip())
                elif spec.kind == "b":
                    b = _to_bool(v)
                    if b is None:
                        msg = f"{where}: column {col} = {_show(v)} is not a boolean; use true or false"
                        raise InputError(msg)
                    conv.append(b)
                else:
                    try:
                        f = float(v)
                    except (TypeError, ValueError):
                        msg = f"{where}: column {col} = {_show(v)} is not a number"
                        raise InputError(msg) from None
                    if spec.kind == "i":
                        if not f.is_integer():
                            msg = f"{where}: column {col} = {_show(v)} is not an integer"
                            raise InputError(msg)
                        conv.append(int(f))
                    else:
                        conv.append(f)
            if spec.kind == "s":
                out[col] = np.array(conv, dtype=str) if nrow else np.array([], dtype="U1")
            elif spec.kind == "b":
                out[col] = np.array(conv, dtype=bool)
            elif spec.kind == "i":
                out[col] = np.array(conv, dtype=np.int64)
            else:
                out[col] = np.array(conv, dtype=np.float64)
        if spec.unit:
            out[col].unit = spec.unit
        out[col].description = spec.doc
        _check_values(out[col], col, spec, label, names)
    # keep extra columns the user added, after ours
    for col in table.colnames:
        if col not in schema:
            out[col] = table[col]
    _check_rows(out, kind, label, names)
    return out


def _show(v: Any) -> str:
    """Show a value as the user wrote it: 95.0, 'HRC-I' (no numpy reprs)."""
    v = v.item() if hasattr(v, "item") else v
    return repr(float(v)) if isinstance(v, float) else repr(v)


def _check_values(col: Any, name: str, spec: _Col, label: str, names: list[str] | None) -> None:
    data = np.asarray(col).tolist()
    for i, v in enumerate(data):
        where = _row_label(label, i, names)
        if spec.choices is not None and str(v) not in spec.choices:
            msg = (f"{where}: column {name} = {_show(v)} is not one of "
                   f"{', '.join(spec.choices)}")
            raise InputError(msg)
        if spec.kind in "fi" and (spec.lo is not None or spec.hi is not None):
            f = float(v)
            if spec.kind == "f" and not spec.required and math.isnan(f) and math.isnan(float(spec.default)):
                continue
            bad = (not math.isfinite(f)
                   or (spec.lo is not None and (f < spec.lo or (spec.lo_open and f == spec.lo)))
                   or (spec.hi is not None and (f > spec.hi or (spec.hi_open and f == spec.hi))))
            if bad:
                msg = f"{where}: column {name} = {_show(v)} is outside {_fmt_range(spec)}"
                if name.endswith(("rate_cps", "_s")) and f < 0:
                    msg += "; it must not be negative"
                raise InputError(msg)
        if spec.kind == "s" and spec.required and not str(v).strip():
            msg = f"{where}: column {name} is empty; give a value"
            raise InputError(msg)


def _check_rows(t: Table, kind: str, label: str, names: list[str] | None) -> None:
    key = "obsid" if kind == "observations" else "name"
    seen: dict[Any, int] = {}
    for i, v in enumerate(t[key]):
        k = v.item() if hasattr(v, "item") else v
        if k in seen:
            msg = (f"{_row_label(label, i, names)}: column {key} = {_show(k)} repeats row {seen[k] + 1}; "
                   "names must be unique")
            raise InputError(msg)
        seen[k] = i
    if kind == "clusters":
        for i in range(len(t)):
            if t["model"][i] == "double_beta" and not np.isfinite(t["rc2_arcsec"][i]):
                msg = (f"{_row_label(label, i, names)}: column rc2_arcsec is empty; "
                       "a double_beta cluster needs the outer core radius")
                raise InputError(msg)


def validate_truth(clusters: Table, point_sources: Table | None, observations: Table, *,
                   labels: Mapping[str, str] | None = None) -> Truth:
    """Check and type the three truth tables.

    Parameters
    ----------
    clusters, point_sources, observations : astropy.table.Table
        The tables; ``point_sources`` may be None (no point sources).
    labels : mapping, optional
        How to call each table in messages (e.g. its file name).

    Returns
    -------
    Truth

    Raises
    ------
    xmine.errors.InputError
        Naming the table, row, column and bad value.
    """
    lab = {"clusters": "clusters", "point_sources": "point_sources", "observations": "observations"}
    lab.update(labels or {})
    if point_sources is None:
        point_sources = Table({"name": np.array([], dtype="U1"), "ra_deg": np.array([], dtype=float),
                               "dec_deg": np.array([], dtype=float), "rate_cps": np.array([], dtype=float)})
    c = _validate_table(clusters, "clusters", lab["clusters"])
    p = _validate_table(point_sources, "point_sources", lab["point_sources"])
    o = _validate_table(observations, "observations", lab["observations"])
    known = set(map(str, c["name"]))
    for tname, t in (("point_sources", p), ("observations", o)):
        for i, v in enumerate(t["cluster"]):
            if str(v) and str(v) not in known:
                who = t["name"][i] if "name" in t.colnames else t["obsid"][i]
                msg = (f"{lab[tname]} row {i + 1} ({who}): column cluster = {str(v)!r} is not a cluster "
                       "of the clusters table; fix the name or leave it empty")
                raise InputError(msg)
    # default start times: one observation after the other from MET 6.5e8 s (2018-08)
    ts = np.asarray(o["tstart"], dtype=float)
    for i in range(len(o)):
        if not np.isfinite(ts[i]):
            ts[i] = 6.5e8 + 2.0e5 * i
    o["tstart"] = ts
    o["tstart"].unit = "s"
    return Truth(clusters=c, point_sources=p, observations=o)


_FORMATS = {".ecsv": "ascii.ecsv", ".csv": "ascii.csv", ".fits": "fits", ".fit": "fits",
            ".fits.gz": "fits", ".parquet": "parquet"}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".fits.gz", ".ecsv", ".csv", ".fits", ".fit", ".parquet"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def _read_table(path: Path) -> Table:
    fmt = _FORMATS.get(_suffix(path))
    if fmt is None:
        msg = f"{path}: unknown table format {path.suffix!r}; use .ecsv, .csv, .fits or .parquet"
        raise InputError(msg)
    try:
        if fmt == "parquet":
            t = _read_parquet(path)
        else:
            t = Table.read(path, format="fits", hdu=1) if fmt == "fits" else Table.read(path, format=fmt)
    except (OSError, ValueError) as exc:
        msg = f"{path}: cannot read the table ({str(exc).splitlines()[0]}); check the file"
        raise InputError(msg) from exc
    for col in t.colnames:  # FITS strings arrive as bytes
        if t[col].dtype.kind == "S":
            t[col] = np.char.decode(np.asarray(t[col]), "utf-8")
    return t


def _read_parquet(path: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        at = pq.read_table(path)
    except pa.ArrowException as exc:
        raise ValueError(str(exc)) from exc
    t = Table()
    for name in at.column_names:
        col = at.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            t[name] = np.array(col.to_pylist(), dtype=str) if len(col) else np.array([], dtype="U1")
        else:
            t[name] = col.to_numpy(zero_copy_only=False)
    return t


def _write_parquet(table: Table, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays, fields = [], []
    for name in table.colnames:
        data = np.asarray(table[name])
        arr = pa.array(data.tolist(), type=pa.string()) if data.dtype.kind in "US" else pa.array(data)
        unit = table[name].unit
        fields.append(pa.field(name, arr.type, metadata={"unit": str(unit)} if unit is not None else None))
        arrays.append(arr)
    pq.write_table(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), path)


def _kind_of(path: Path, table: Table) -> str:
    stem = path.name.lower()
    if stem.startswith("cluster"):
        return "clusters"
    if stem.startswith(("point", "source", "src")):
        return "point_sources"
    if stem.startswith("obs"):
        return "observations"
    cols = set(table.colnames)
    if "obsid" in cols:
        return "observations"
    if "model" in cols:
        return "clusters"
    if "rate_cps" in cols:
        return "point_sources"
    msg = (f"{path}: cannot tell which truth table this is; name it clusters.*, point_sources.* "
           "or observations.*")
    raise InputError(msg)


def load_truth(path_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> Truth:
    """Read and validate a truth from files.

    Parameters
    ----------
    path_or_paths : path-like or iterable of path-like
        A folder holding ``clusters.*``, ``observations.*`` and optionally
        ``point_sources.*`` (``.ecsv``, ``.csv``, ``.fits``, ``.parquet``), or
        the files themselves. A file's table is known by its name, else by
        its columns.

    Returns
    -------
    Truth

    Raises
    ------
    xmine.errors.InputError
        If a file is missing or unreadable, or a value is bad (the message
        names file, row, column and value).

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_truth(demo_truth(), folder)
    >>> len(load_truth(folder).clusters)
    3
    """
    if isinstance(path_or_paths, (str, os.PathLike)):
        p = Path(path_or_paths)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and _suffix(f) in _FORMATS
                           and not f.name.startswith("."))
        elif p.exists():
            files = [p]
        else:
            msg = f"{p}: no such file or folder; give the truth folder or its table files"
            raise InputError(msg)
    else:
        files = [Path(f) for f in path_or_paths]
    found: dict[str, tuple[Path, Table]] = {}
    for f in files:
        if not f.exists():
            msg = f"{f}: no such file"
            raise InputError(msg)
        t = _read_table(f)
        kind = _kind_of(f, t)
        if kind in found:
            msg = f"{f}: a second {kind} table (the first is {found[kind][0].name}); give only one"
            raise InputError(msg)
        found[kind] = (f, t)
    for kind in ("clusters", "observations"):
        if kind not in found:
            msg = f"{path_or_paths}: no {kind} table; add a file {kind}.ecsv (or .csv/.fits/.parquet)"
            raise InputError(msg)
    labels = {k: v[0].name for k, v in found.items()}
    return validate_truth(found["clusters"][1], found.get("point_sources", (None, None))[1],
                          found["observations"][1], labels=labels)


def write_truth(truth: Truth, folder: str | os.PathLike[str], *, fmt: str = "ecsv") -> list[Path]:
    """Write the truth tables as editable files that :func:`load_truth` reads back.

    Parameters
    ----------
    truth : Truth
        The truth to write.
    folder : path-like
        Output folder (created if needed).
    fmt : {"ecsv", "csv", "fits", "parquet"}, optional
        File format; ECSV keeps units and types.

    Returns
    -------
    list of Path
        ``<folder>/clusters.<ext>``, ``point_sources.<ext>``, ``observations.<ext>``.
    """
    fmts = {"ecsv": ("ascii.ecsv", ".ecsv"), "csv": ("ascii.csv", ".csv"), "fits": ("fits", ".fits"),
            "parquet": ("parquet", ".parquet")}
    if fmt not in fmts:
        msg = f"fmt = {fmt!r} is not one of {', '.join(fmts)}"
        raise InputError(msg)
    astro_fmt, ext = fmts[fmt]
    out: list[Path] = []
    for name, table in truth.tables().items():
        target = Path(folder) / f"{name}{ext}"
        with atomic_write(target) as tmp:
            if fmt == "parquet":
                _write_parquet(table, tmp)
            else:
                table.write(tmp, format=astro_fmt)
        out.append(target)
    return out


# ---------------------------------------------------------------------------- demo
def _offset_deg(ra: float, dec: float, east_arcmin: float, north_arcmin: float) -> tuple[float, float]:
    from xmine.simulate.acis import unproject

    r, d = unproject(east_arcmin * 60.0, north_arcmin * 60.0, ra, dec)
    return float(r), float(d)


def demo_truth(seed: int = 2026) -> Truth:
    """Return the bundled demo sky: three clusters, six observations, their point sources.

    * ``SIM-COOLCORE`` (z = 0.06): double-β cool core (kT 4 keV, core at 0.6 kT),
      slightly elliptical; one ACIS-I and one ACIS-S observation.
    * ``SIM-MERGER`` (z = 0.22): elliptical β model with a sub-clump holding 20 %
      of the counts; two ACIS-I observations, the first with a background flare.
    * ``SIM-COLDFRONT`` (z = 0.11): β model with a cold front (jump 2 at 70″ to
      the south-east); one ACIS-S and one ACIS-I observation.

    Each field has 14 point sources within 9′ (rates log-uniform between
    3×10⁻⁴ and 2×10⁻² ct/s, Γ ≈ 1.7 ± 0.3, a few variable).

    Parameters
    ----------
    seed : int, optional
        Seed of the point-source draw; the clusters and observations are fixed.

    Returns
    -------
    Truth
    """
    rng = np.random.default_rng(seed)
    clusters = Table(rows=[
        ("SIM-COOLCORE", 150.1250, 2.2100, 0.06, "double_beta", 8.0, 0.62, 2.5, 4.0, 0.15, 30.0,
         70.0, 0.45, 0.6, 0.0, 0.0, 15.0, 0.0, 0.0, 0.0, 60.0, 1.0),
        ("SIM-MERGER", 210.4600, -12.3700, 0.22, "beta", 40.0, 0.70, 1.2, 8.0, 0.30, 110.0,
         math.nan, 0.3, 0.6, 80.0, -45.0, 12.0, 0.20, 0.0, 0.0, 60.0, 1.0),
        ("SIM-COLDFRONT", 33.7100, 41.0500, 0.11, "beta", 30.0, 0.66, 1.5, 6.0, 0.10, 20.0,
         math.nan, 0.3, 0.6, 0.0, 0.0, 15.0, 0.0, 70.0, 135.0, 70.0, 2.0),
    ], names=["name", "ra_deg", "dec_deg", "z", "model", "rc_arcsec", "beta", "rate_cps", "kt_kev",
              "ellipticity", "pa_deg", "rc2_arcsec", "core_frac", "core_kt_ratio", "sub_dx_arcsec",
              "sub_dy_arcsec", "sub_rc_arcsec", "sub_frac", "cf_radius_arcsec", "cf_angle_deg",
              "cf_halfwidth_deg", "cf_jump"])
    obs_rows = []
    plan = {  # obsid, instrument, exposure, roll, pointing offset (arcmin E, N), flare
        "SIM-COOLCORE": [(90101, "ACIS-I", 30000.0, 45.0, (0.5, 0.4), False),
                         (90102, "ACIS-S", 20000.0, 210.0, (-1.5, 1.0), False)],
        "SIM-MERGER": [(90201, "ACIS-I", 40000.0, 120.0, (0.3, -0.5), True),
                       (90202, "ACIS-I", 25000.0, 300.0, (2.0, 1.5), False)],
        "SIM-COLDFRONT": [(90301, "ACIS-S", 30000.0, 300.0, (-0.5, 0.2), False),
                          (90302, "ACIS-I", 20000.0, 80.0, (1.0, -2.0), False)],
    }
    for k, c in enumerate(clusters):
        for j, (obsid, inst, expo, roll, (de, dn), flare) in enumerate(plan[str(c["name"])]):
            ra, dec = _offset_deg(float(c["ra_deg"]), float(c["dec_deg"]), de, dn)
            obs_rows.append((obsid, str(c["name"]), ra, dec, roll, inst, expo, flare,
                             6.5e8 + 3.0e6 * k + 4.0e5 * j))
    observations = Table(rows=obs_rows, names=["obsid", "cluster", "ra_pnt", "dec_pnt", "roll_deg",
                                               "instrument", "exposure_s", "flare", "tstart"])
    src_rows = []
    for c in clusters:
        for i in range(14):
            r_arcmin = 9.0 * np.sqrt(rng.uniform(0.02, 1.0))
            ang = rng.uniform(0, 2 * np.pi)
            ra, dec = _offset_deg(float(c["ra_deg"]), float(c["dec_deg"]),
                                  r_arcmin * np.sin(ang), r_arcmin * np.cos(ang))
            rate = float(10 ** rng.uniform(np.log10(3e-4), np.log10(2e-2)))
            gamma = float(np.clip(rng.normal(1.7, 0.3), 0.8, 3.0))
            u = rng.random()
            kind, amp, per = ("sine", 0.6, 8000.0) if u < 0.12 else (("flare", 4.0, 3000.0) if u < 0.2
                                                                    else ("none", 0.0, 5000.0))
            src_rows.append((f"{c['name']}-P{i + 1:02d}", ra, dec, rate, gamma, kind, amp, per,
                             str(c["name"])))
    points = Table(rows=src_rows, names=["name", "ra_deg", "dec_deg", "rate_cps", "gamma", "var_kind",
                                         "var_amp", "var_period_s", "cluster"])
    return validate_truth(clusters, points, observations)
