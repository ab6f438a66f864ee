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

__all__ = ["bundled_dir", "catalog_names", "find_catalog", "load_catalog"]


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
