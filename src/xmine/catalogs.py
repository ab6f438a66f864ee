"""Catalogue descriptions: ``catalogs/*.toml`` shipped with xmine, plus the user's own folders.

A description names a catalogue's services and tables, its ADQL dialect, and
how its native columns map to xmine's common source schema. The user's folders
(``project.catalog_dirs``) are searched before the bundled one, so a file of
the same name there replaces the bundled description.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from xmine.errors import InputError

#: xmine's common source schema: column -> (Arrow type name, unit). Every catalogue maps
#: what it has; the rest are null. ``catalogue`` and ``release`` are always filled.
COMMON_COLUMNS: dict[str, tuple[str, str | None]] = {
    "catalogue": ("string", None),
    "release": ("string", None),
    "name": ("string", None),
    "ra": ("float64", "deg"),
    "dec": ("float64", "deg"),
    "pos_err_1sigma": ("float64", "arcsec"),
    "extent": ("float64", "arcsec"),
    "extended": ("bool", None),
    "flux": ("float64", "erg / (s cm2)"),
    "flux_band_lo": ("float64", "keV"),
    "flux_band_hi": ("float64", "keV"),
    "variable": ("bool", None),
    "quality": ("int64", None),
}

__all__ = ["COMMON_COLUMNS", "bundled_dir", "catalog_names", "find_catalog", "load_catalog", "to_common"]


def bundled_dir(kind: str = "catalogs") -> Path:
    """Return the folder of xmine's bundled ``catalogs`` or ``queries`` (package data)."""
    return Path(str(resources.files("xmine") / kind))


def _search_path(extra_dirs: Iterable[Path]) -> list[Path]:
    return [Path(d) for d in extra_dirs] + [bundled_dir("catalogs")]


def catalog_names(extra_dirs: Iterable[Path] = ()) -> list[str]:
    """Return the names of every catalogue description found (user folders first)."""
    names: dict[str, None] = {}
    for folder in _search_path(extra_dirs):
        for p in sorted(folder.glob("*.toml")):
            names.setdefault(p.stem, None)
    return list(names)


def find_catalog(name: str, extra_dirs: Iterable[Path] = ()) -> Path:
    """Return the path of catalogue description ``name`` (e.g. ``"csc21"``)."""
    dirs = _search_path(extra_dirs)
    for folder in dirs:
        candidate = folder / f"{name}.toml"
        if candidate.exists():
            return candidate
    known = ", ".join(catalog_names(extra_dirs)) or "none"
    msg = f"no catalogue description {name!r} in {', '.join(map(str, dirs))}; known: {known}"
    raise InputError(msg)


def load_catalog(name: str, extra_dirs: Iterable[Path] = ()) -> dict[str, Any]:
    """Load catalogue description ``name`` as a dict (see ``catalogs/csc21.toml``)."""
    path = find_catalog(name, extra_dirs)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: not valid TOML ({exc})"
        raise InputError(msg) from exc
    for key in ("name", "service", "tables", "columns"):
        if key not in data:
            msg = f"{path}: missing [{key}]; see the bundled csc21.toml for the layout"
            raise InputError(msg)
    data["path"] = str(path)
    return data


def _find_native(names: dict[str, str], spec: dict[str, Any]) -> str | None:
    for cand in [spec.get("native"), *spec.get("aliases", [])]:
        if cand and cand.lower() in names:
            return names[cand.lower()]
    return None


def to_common(table: Any, catalog: dict[str, Any] | str, *, extra_dirs: Iterable[Path] = ()) -> Any:
    """Map a catalogue table's native columns to xmine's common schema (:data:`COMMON_COLUMNS`).

    Columns are found case-insensitively (``SC_RA`` and ``sc_ra`` alike), by the
    description's ``native`` name or its ``aliases``; ``scale`` converts
    conventions (CSC's 95 % radius to 1σ); ``name_suffix`` and ``positive``
    derive booleans. Units go to the Arrow field metadata.

    Parameters
    ----------
    table : pyarrow.Table or astropy.table.Table
        Rows with native column names.
    catalog : dict or str
        A loaded description or its name.
    extra_dirs : iterable of Path, optional
        User catalogue folders (when ``catalog`` is a name).

    Returns
    -------
    pyarrow.Table
        The common columns, in :data:`COMMON_COLUMNS` order, null where the catalogue has no such column.
    """
    import numpy as np
    import pyarrow as pa

    cat = load_catalog(catalog, extra_dirs) if isinstance(catalog, str) else catalog
    if not isinstance(table, pa.Table):
        from xmine.vo import clean_table, to_arrow

        table = to_arrow(clean_table(table))
    names = {n.lower(): n for n in table.column_names}
    n = table.num_rows
    cols = cat.get("columns", {})
    arrays, fields = [], []
    for col, (typ, unit) in COMMON_COLUMNS.items():
        arrow_type = pa.from_numpy_dtype(np.dtype({"string": "U", "float64": "f8", "bool": "?", "int64": "i8"}[typ])) \
            if typ != "string" else pa.utf8()
        if col == "catalogue":
            arr = pa.array([str(cat.get("name", ""))] * n, pa.utf8())
        elif col == "release":
            arr = pa.array([str(cat.get("release", ""))] * n, pa.utf8())
        elif col in ("flux_band_lo", "flux_band_hi"):
            band = cols.get("flux", {}).get("band_kev")
            arr = pa.array([float(band[0 if col.endswith("lo") else 1])] * n if band else [None] * n, pa.float64())
        else:
            spec = cols.get(col)
            arr = pa.nulls(n, arrow_type)
            if spec is not None:
                if "name_suffix" in spec:
                    src = _find_native(names, cols.get("name", {}))
                    if src is not None:
                        vals = table.column(src).to_pylist()
                        arr = pa.array([None if v is None else str(v).strip().endswith(spec["name_suffix"])
                                        for v in vals], pa.bool_())
                else:
                    src = _find_native(names, spec)
                    if src is not None:
                        data = table.column(src)
                        if spec.get("positive"):
                            vals = data.to_pylist()
                            arr = pa.array([None if v is None else bool(v and float(v) > 0) for v in vals], pa.bool_())
                        else:
                            if "scale" in spec:
                                import pyarrow.compute as pc

                                data = pc.multiply(data.cast(pa.float64()), float(spec["scale"]))
                            arr = data.cast(arrow_type)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        arrays.append(arr)
        fields.append(pa.field(col, arr.type, metadata={b"unit": unit.encode()} if unit else None))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
