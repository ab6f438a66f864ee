"""Named queries: ``queries/*.adql`` (run on a TAP service) and ``queries/*.sql`` (run on the DuckDB store).

A recipe is a file whose name is its name; its first ``--`` comment lines
describe it and its parameters. Parameters are written ``:name`` in both
languages.

SQL recipes are bound: ``:name`` becomes DuckDB's ``$name`` and the value is
passed separately (never formatted into the text); ``::`` casts and quoted
text are left alone. ADQL has no bound parameters, so an ADQL recipe accepts
only numbers (written as Python ``repr`` of a float or int) and
:class:`Identifier` values (table and column names, validated as plain ADQL
identifiers, e.g. from ``catalogs/*.toml``); a string value is refused.

The user's folders (``project.query_dirs``) are searched before the bundled
``queries/``, so a file of the same name there replaces the bundled recipe.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmine.catalogs import bundled_dir
from xmine.errors import InputError

__all__ = ["Identifier", "Recipe", "bound_sql", "find_recipe", "load_recipe", "parse_params", "recipe_names",
           "render_adql", "sql_text"]

_PARAM_RE = re.compile(r"('(?:[^']|'')*')|(\"(?:[^\"]|\"\")*\")|(--[^\n]*)|(::)|(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Identifier(str):
    """A table or column name to put into ADQL (validated: letters, digits, ``_`` and ``.``)."""

    __slots__ = ()

    def __new__(cls, value: str) -> Identifier:
        """Validate ``value`` and return it as an identifier."""
        if not _IDENT_RE.match(str(value)):
            msg = f"{value!r} is not a plain ADQL identifier (letters, digits, _ and . only)"
            raise InputError(msg)
        return super().__new__(cls, value)


@dataclass(frozen=True)
class Recipe:
    """A named query.

    Attributes
    ----------
    name : str
        File stem.
    kind : {"adql", "sql"}
        The language (from the suffix).
    text : str
        The query text with ``:name`` parameters.
    params : tuple of str
        Parameter names in order of first use.
    path : Path
        Where it was read from.
    description : str
        Its leading ``--`` comment lines.
    """

    name: str
    kind: str
    text: str
    params: tuple[str, ...]
    path: Path
    description: str


def _dirs(extra_dirs: Iterable[Path]) -> list[Path]:
    return [Path(d) for d in extra_dirs] + [bundled_dir("queries")]


def recipe_names(extra_dirs: Iterable[Path] = ()) -> list[str]:
    """Return every recipe as ``name.adql`` / ``name.sql`` (user folders first)."""
    seen: dict[str, None] = {}
    for d in _dirs(extra_dirs):
        for p in sorted(d.glob("*.adql")) + sorted(d.glob("*.sql")):
            seen.setdefault(p.name, None)
    return list(seen)


def find_recipe(name: str, extra_dirs: Iterable[Path] = ()) -> Path:
    """Return the path of recipe ``name`` (with or without its suffix)."""
    stems = [name] if name.endswith((".adql", ".sql")) else [f"{name}.adql", f"{name}.sql"]
    for d in _dirs(extra_dirs):
        for stem in stems:
            if (d / stem).exists():
                return d / stem
    known = ", ".join(recipe_names(extra_dirs)) or "none"
    msg = f"no query recipe {name!r} in {', '.join(map(str, _dirs(extra_dirs)))}; known: {known}"
    raise InputError(msg)


def _scan(text: str) -> list[str]:
    names: list[str] = []
    for m in _PARAM_RE.finditer(text):
        if m.group(5) and m.group(5) not in names:
            names.append(m.group(5))
    return names


def load_recipe(name: str, extra_dirs: Iterable[Path] = ()) -> Recipe:
    """Load a recipe by name (see the module docstring)."""
    path = find_recipe(name, extra_dirs)
    text = path.read_text(encoding="utf-8")
    desc = "\n".join(line[2:].strip() for line in text.splitlines() if line.startswith("--"))
    return Recipe(name=path.stem, kind=path.suffix[1:], text=text, params=tuple(_scan(text)), path=path,
                  description=desc)


def _check_params(recipe: Recipe, params: Mapping[str, Any]) -> None:
    missing = [p for p in recipe.params if p not in params]
    if missing:
        msg = (f"recipe {recipe.name}: parameter(s) {', '.join(':' + p for p in missing)} not given "
               f"(it takes {', '.join(':' + p for p in recipe.params)})")
        raise InputError(msg)
    extra = [p for p in params if p not in recipe.params]
    if extra:
        msg = (f"recipe {recipe.name}: no parameter(s) {', '.join(':' + p for p in extra)} "
               f"(it takes {', '.join(':' + p for p in recipe.params) or 'none'})")
        raise InputError(msg)


def _adql_literal(recipe: str, name: str, value: Any) -> str:
    if isinstance(value, Identifier):
        return str(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = (f"recipe {recipe}: :{name} = {value!r}; ADQL recipes take numbers and identifiers only "
               "(strings cannot be bound safely)")
        raise InputError(msg)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        msg = f"recipe {recipe}: :{name} = {value!r} is not finite"
        raise InputError(msg)
    return repr(v)


def render_adql(recipe: Recipe, params: Mapping[str, Any]) -> str:
    """Return the ADQL of a recipe with its parameters written in (numbers and identifiers only)."""
    if recipe.kind != "adql":
        msg = f"recipe {recipe.name} is {recipe.kind}, not ADQL; run it on the store with xmine sql"
        raise InputError(msg)
    _check_params(recipe, params)

    def sub(m: re.Match[str]) -> str:
        if m.group(3):
            return ""  # comments do not go to the service
        if m.group(5):
            return _adql_literal(recipe.name, m.group(5), params[m.group(5)])
        return m.group(0)

    text = _PARAM_RE.sub(sub, recipe.text)
    return " ".join(text.split())


def bound_sql(recipe: Recipe, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return a SQL recipe as DuckDB text with ``$name`` parameters and the values to bind."""
    from xmine.cache import bind_sql

    if recipe.kind != "sql":
        msg = f"recipe {recipe.name} is {recipe.kind}, not SQL; run it on a TAP service with xmine query tap"
        raise InputError(msg)
    _check_params(recipe, params)
    text, names = bind_sql(recipe.text)
    return text, {n: params[n] for n in names}


def sql_text(name_or_sql: str, extra_dirs: Iterable[Path] = ()) -> str:
    """Return the text of a SQL recipe given by name, or ``name_or_sql`` itself when it is a query."""
    s = name_or_sql.strip()
    if re.fullmatch(r"[A-Za-z0-9_.-]+", s) and not s.upper().startswith(("SELECT", "WITH", "FROM")):
        recipe = load_recipe(s, extra_dirs)
        if recipe.kind != "sql":
            msg = f"recipe {recipe.name} is ADQL; run it with xmine query tap --recipe {recipe.name}"
            raise InputError(msg)
        return recipe.text
    return name_or_sql


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``name=value`` strings (from the command line): integers, then floats, else text."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            msg = f"parameter {item!r} is not name=value"
            raise InputError(msg)
        value: Any
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw
        out[name] = value
    return out
