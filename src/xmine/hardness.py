"""Hardness ratios against variability for catalogue sources: tables, PNG plots and X-ray-binary candidates.

CSC hardness conventions (master_source ``hard_hs``, ``hard_ms``, ``hard_hm``)
    ``hard_xy = (F_x − F_y) / (F_x + F_y)`` of the source's net intensities in
    the bands s 0.5–1.2, m 1.2–2 and h 2–7 keV (as CSC defines them: see its
    column descriptions), so −1 (all soft) … +1 (all hard). CSC 2 gives them as
    Bayesian estimates with ``_lolim`` / ``_hilim``; a source with no counts in both bands has NULL hardness, and ±1
    means one band is empty, not an infinitely hard or soft spectrum. HRC-only
    sources have no bands and hence no hardness. xmine plots the values as given,
    counts NULLs per ratio, and never fills them in.
What hardness measures
    Hardness is counts, not spectra: it folds the source spectrum through the
    instrument's response. ACIS lost soft-band effective area as contamination
    built up on its filter, so the same source is "harder" in later epochs; ACIS-I
    and ACIS-S differ below 1 keV, and EPIC's hardness ratios (``SC_HR1..4``,
    other bands) are not comparable at all. Across instruments and epochs a
    hardness difference mostly measures the responses: compare like with like.
    A warning is issued when a table mixes instruments.
Variability
    Points are coloured by the intra-observation (``var_intra_prob_b``) and the
    inter-observation (``var_inter_prob_b``) variability probabilities; where a
    probability column is absent the 0–10 index (``var_intra_index_b`` /
    ``var_inter_index_b``, divided by 10) is used and the colour bar says so.
    Sources seen in one observation have NULL inter-observation values: grey.
X-ray-binary candidates
    Hard and long-term variable: ``hard_hm ≥ min_hard_hm`` (default 0) and
    ``var_inter_index_b ≥ min_var_index`` (default 5; or ``var_inter_prob_b ≥
    min_var_prob`` when that column exists). The same rule is the recipe
    ``queries/sources_xrb_candidates.sql`` (on a cached table) and
    ``sources_xrb_candidates_csc21.adql`` (on a CSC TAP service). The thresholds are xmine's defaults, not CSC's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from xmine.classify import read_catalogue_table
from xmine.errors import InputError, XmineWarning

__all__ = [
    "BANDS_KEV",
    "HARDNESS_COLUMNS",
    "HARDNESS_PAIRS",
    "HardnessResult",
    "hardness_table",
    "load_sources",
    "plot_hardness_variability",
    "run_hardness",
    "xrb_candidates",
]

#: CSC's hardness ratios.
HARDNESS_COLUMNS = ("hard_hs", "hard_ms", "hard_hm")
#: (x, y) pairs plotted, one row of panels each.
HARDNESS_PAIRS = (("hard_ms", "hard_hm"), ("hard_hs", "hard_ms"), ("hard_hs", "hard_hm"))
#: CSC bands (keV).
BANDS_KEV = {"s": (0.5, 1.2), "m": (1.2, 2.0), "h": (2.0, 7.0)}
_CONTEXT = ("name", "ra", "dec", "significance", "flux_aper_b", "flux_aper90_b", "var_flag", "extent_flag",
            "acis_num", "hrc_num", "instrument")


# ---------------------------------------------------------------------------- input
def load_sources(source: Any = None, *, store: Any = None, cone: tuple[float, float, float] | None = None,
                 table: str | None = None, recipe: str | None = None, params: Mapping[str, Any] | None = None,
                 query_dirs: Iterable[Path] = ()) -> Table:
    """Return catalogue rows from a table file, a store table, a cone on a store table, or a SQL recipe.

    Parameters
    ----------
    source : str, Path or Table, optional
        A table file or in-memory table (:func:`xmine.classify.read_catalogue_table`),
        or a table name in ``store``.
    store : xmine.store.Store, optional
        The DuckDB store (for ``table``, ``cone`` and ``recipe``).
    cone : (ra_deg, dec_deg, radius_deg), optional
        Rows of ``table`` within this cone (:func:`xmine.sky.select_cone`).
    table : str, optional
        Store table for ``cone`` (a cached CSC/4XMM result with its ``hpx`` index).
    recipe : str, optional
        A SQL recipe (``queries/*.sql``) run on the store with ``params``.
    params : mapping, optional
        Recipe parameters.
    query_dirs : iterable of Path, optional
        The user's recipe folders.

    Returns
    -------
    astropy.table.Table
        Clean types (:func:`xmine.classify.clean_catalogue_table`).
    """
    from xmine.cache import arrow_to_astropy

    given = sum(x is not None for x in (source, cone, recipe))
    if given != 1:
        msg = "give exactly one of a table (file or store name), a cone (with --table) or a SQL recipe"
        raise InputError(msg)
    if source is not None:
        return read_catalogue_table(source, store=store)
    if store is None:
        msg = "a cone or a recipe runs on the store: give the store (--store or project.store)"
        raise InputError(msg)
    if cone is not None:
        from xmine.cache import load_table
        from xmine.sky import select_cone

        if not table:
            msg = "a cone needs the store table to search (--table, e.g. a cached csc21 master_source result)"
            raise InputError(msg)
        load_table(store, table)  # the cache's own one-line error for an unknown table
        names = {r[0] for r in store.con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = $t", {"t": table}).fetchall()}
        ra_col, dec_col = ("ra", "dec") if "ra" in names else ("sc_ra", "sc_dec")
        ra, dec, radius = cone
        arrow = select_cone(store, table, float(ra), float(dec), float(radius), ra_col=ra_col, dec_col=dec_col,
                            hpx_col="hpx" if "hpx" in names else None)
        return read_catalogue_table(arrow_to_astropy(arrow))
    from xmine.recipes import bound_sql, load_recipe

    name = str(recipe) if str(recipe).endswith((".sql", ".adql")) else f"{recipe}.sql"
    sql, bound = bound_sql(load_recipe(name, query_dirs), dict(params or {}))
    return read_catalogue_table(arrow_to_astropy(store.query(sql, bound)))


# ---------------------------------------------------------------------------- table
def _values(t: Table, name: str) -> np.ndarray:
    col = t[name]
    v = np.asarray(col.data if hasattr(col, "data") else col).astype(float)
    if getattr(col, "mask", None) is not None:
        v = np.where(np.ma.getmaskarray(col), np.nan, v)
    return v


def _variability(t: Table, kind: str) -> tuple[np.ndarray, str]:
    """Return the colour values (0–1, NaN = NULL) and their label for ``intra`` or ``inter``."""
    prob, index = f"var_{kind}_prob_b", f"var_{kind}_index_b"
    if prob in t.colnames and np.isfinite(_values(t, prob)).any():
        return _values(t, prob), f"{prob} (probability)"
    if index in t.colnames:
        return _values(t, index) / 10.0, f"{index} / 10 (no {prob} in the table)"
    return np.full(len(t), np.nan), f"no {kind}-observation variability column"


def _check_instruments(t: Table) -> None:
    mixed = False
    if "instrument" in t.colnames:
        vals = {str(v).strip().upper() for v in np.asarray(t["instrument"]) if str(v).strip()}
        mixed = len(vals) > 1
    if "acis_num" in t.colnames and "hrc_num" in t.colnames:
        acis, hrc = _values(t, "acis_num"), _values(t, "hrc_num")
        mixed = mixed or bool(np.any((hrc > 0) & ~(acis > 0)) and np.any(acis > 0))
    if mixed:
        warnings.warn("the table mixes instruments (ACIS/HRC or several); hardness across instruments and "
                      "epochs mostly measures their responses: compare like with like", XmineWarning, stacklevel=3)


def xrb_candidates(t: Table, *, min_hard_hm: float = 0.0, min_var_index: float = 5.0,
                   min_var_prob: float | None = None) -> np.ndarray:
    """Return a boolean mask of hard, long-term variable sources (see the module docstring).

    Parameters
    ----------
    t : astropy.table.Table
        Rows with ``hard_hm`` and ``var_inter_index_b`` (or ``var_inter_prob_b``).
    min_hard_hm : float, optional
        Lowest ``hard_hm``.
    min_var_index : float, optional
        Lowest ``var_inter_index_b`` (0–10).
    min_var_prob : float, optional
        If given, use ``var_inter_prob_b ≥ min_var_prob`` instead of the index.
    """
    if "hard_hm" not in t.colnames:
        msg = "no hard_hm column: X-ray-binary candidates need CSC's hardness ratios"
        raise InputError(msg)
    hard = _values(t, "hard_hm") >= min_hard_hm
    col = "var_inter_prob_b" if min_var_prob is not None else "var_inter_index_b"
    if col not in t.colnames:
        msg = f"no {col} column: long-term variability is needed for X-ray-binary candidates"
        raise InputError(msg)
    var = _values(t, col) >= (min_var_prob if min_var_prob is not None else min_var_index)
    return np.asarray(hard & var, dtype=bool)


def hardness_table(t: Table, *, min_hard_hm: float = 0.0, min_var_index: float = 5.0,
                   min_var_prob: float | None = None) -> Table:
    """Return the hardness–variability table of catalogue rows.

    Parameters
    ----------
    t : astropy.table.Table
        Catalogue rows with CSC hardness columns.
    min_hard_hm, min_var_index, min_var_prob
        The X-ray-binary candidate rule (:func:`xrb_candidates`).

    Returns
    -------
    astropy.table.Table
        Identifiers, the three hardness ratios (and their ``_lolim/_hilim`` when
        present), the variability columns found, ``var_intra_colour`` and
        ``var_inter_colour`` (the plotted 0–1 values, NaN = NULL) and ``xrb_candidate``.

    Raises
    ------
    xmine.errors.InputError
        If the table has none of the hardness columns.
    """
    have = [c for c in HARDNESS_COLUMNS if c in t.colnames]
    if not have:
        msg = ("the table has no hardness columns (hard_hs, hard_ms, hard_hm); select them from CSC's "
               "master_source (e.g. recipe sources_hardness_variability)")
        raise InputError(msg)
    _check_instruments(t)
    out = Table()
    for c in _CONTEXT:
        if c in t.colnames:
            out[c] = t[c]
    for c in HARDNESS_COLUMNS:
        out[c] = t[c] if c in t.colnames else np.full(len(t), np.nan)
        for lim in (f"{c}_lolim", f"{c}_hilim"):
            if lim in t.colnames:
                out[lim] = t[lim]
    for c in ("var_intra_index_b", "var_intra_prob_b", "var_inter_index_b", "var_inter_prob_b"):
        if c in t.colnames:
            out[c] = t[c]
    for kind in ("intra", "inter"):
        vals, label = _variability(t, kind)
        out[f"var_{kind}_colour"] = vals
        out[f"var_{kind}_colour"].description = label
    can = "hard_hm" in t.colnames and ("var_inter_prob_b" if min_var_prob is not None
                                       else "var_inter_index_b") in t.colnames
    out["xrb_candidate"] = xrb_candidates(t, min_hard_hm=min_hard_hm, min_var_index=min_var_index,
                                          min_var_prob=min_var_prob) if can else np.zeros(len(t), dtype=bool)
    out.meta["xrb_rule"] = (f"hard_hm >= {min_hard_hm} and "
                            + (f"var_inter_prob_b >= {min_var_prob}" if min_var_prob is not None
                               else f"var_inter_index_b >= {min_var_index}"))
    return out


# ---------------------------------------------------------------------------- plot
def plot_hardness_variability(table: Table, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write a PNG: hardness pairs (rows) coloured by intra- and inter-observation variability (columns).

    Parameters
    ----------
    table : astropy.table.Table
        The output of :func:`hardness_table`.
    path : path-like
        PNG file (written atomically).
    title : str, optional
        Figure title.

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xmine.store import atomic_write

    fig, axes = plt.subplots(len(HARDNESS_PAIRS), 2, figsize=(10, 4.2 * len(HARDNESS_PAIRS)),
                             constrained_layout=True, squeeze=False)
    cand = np.asarray(table["xrb_candidate"], dtype=bool) if "xrb_candidate" in table.colnames else None
    for j, kind in enumerate(("intra", "inter")):
        colour = np.asarray(table[f"var_{kind}_colour"], dtype=float)
        label = table[f"var_{kind}_colour"].description or f"var_{kind}"
        for i, (xc, yc) in enumerate(HARDNESS_PAIRS):
            ax = axes[i, j]
            x, y = _values(table, xc), _values(table, yc)
            ok = np.isfinite(x) & np.isfinite(y)
            null_c = ok & ~np.isfinite(colour)
            ax.scatter(x[null_c], y[null_c], s=10, facecolors="none", edgecolors="0.6", linewidths=0.6,
                       label=f"{kind} variability NULL ({int(null_c.sum())})")
            has_c = ok & np.isfinite(colour)
            sc = ax.scatter(x[has_c], y[has_c], c=colour[has_c], s=12, cmap="viridis", vmin=0, vmax=1)
            if cand is not None and np.any(cand & ok):
                ax.scatter(x[cand & ok], y[cand & ok], s=40, facecolors="none", edgecolors="red", linewidths=0.8,
                           label=f"XRB candidates ({int((cand & ok).sum())})")
            ax.set_xlim(-1.05, 1.05)
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="0.85", lw=0.5, zorder=0)
            ax.axvline(0, color="0.85", lw=0.5, zorder=0)
            ax.set_xlabel(f"{xc}  ({_band_text(xc)})")
            ax.set_ylabel(f"{yc}  ({_band_text(yc)})")
            ax.set_title(f"{int(ok.sum())} of {len(table)} with both ratios", fontsize=9)
            ax.legend(loc="lower right", fontsize=7)
            fig.colorbar(sc, ax=ax, label=label, shrink=0.85)
    fig.suptitle((title + "\n" if title else "")
                 + "hardness folds the spectrum through the response: compare like with like (instrument, epoch)",
                 fontsize=10)
    out = Path(path)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out


def _band_text(col: str) -> str:
    a, b = col[-2], col[-1]
    (alo, ahi), (blo, bhi) = BANDS_KEV[a], BANDS_KEV[b]
    return f"({a}−{b})/({a}+{b}), {a} {alo}–{ahi}, {b} {blo}–{bhi} keV"


# ---------------------------------------------------------------------------- one call
@dataclass
class HardnessResult:
    """What :func:`run_hardness` made."""

    table: Table
    png: Path | None
    table_file: Path | None
    n_sources: int
    n_null: dict[str, int] = field(default_factory=dict)
    n_candidates: int = 0


def run_hardness(source: Any = None, *, store: Any = None, cone: tuple[float, float, float] | None = None,
                 table: str | None = None, recipe: str | None = None, params: Mapping[str, Any] | None = None,
                 query_dirs: Iterable[Path] = (), png: str | os.PathLike[str] | None = None,
                 out_table: str | os.PathLike[str] | None = None, overwrite: bool = True, min_hard_hm: float = 0.0,
                 min_var_index: float = 5.0, min_var_prob: float | None = None, title: str = "") -> HardnessResult:
    """Load catalogue rows (see :func:`load_sources`), build the hardness table, write it and the PNG.

    Parameters
    ----------
    source, store, cone, table, recipe, params, query_dirs
        Where the rows come from (:func:`load_sources`).
    png : path-like, optional
        Plot file.
    out_table : path-like, optional
        Table file (format from the suffix: ``.ecsv``, ``.csv``, ``.fits``, ``.xml``).
    overwrite : bool, optional
        Replace existing files.
    min_hard_hm, min_var_index, min_var_prob
        X-ray-binary candidate rule (:func:`xrb_candidates`).
    title : str, optional
        Plot title.

    Returns
    -------
    HardnessResult

    Examples
    --------
    >>> from xmine.simulate.labels import make_labelled_sources
    >>> res = run_hardness(make_labelled_sources(300, seed=3))
    >>> res.n_sources
    300
    """
    from xmine.store import write_table

    rows = load_sources(source, store=store, cone=cone, table=table, recipe=recipe, params=params,
                        query_dirs=query_dirs)
    ht = hardness_table(rows, min_hard_hm=min_hard_hm, min_var_index=min_var_index, min_var_prob=min_var_prob)
    n_null = {c: int(np.sum(~np.isfinite(_values(ht, c)))) for c in HARDNESS_COLUMNS}
    png_path = plot_hardness_variability(ht, png, title=title) if png is not None else None
    table_path = None
    if out_table is not None:
        table_path = write_table(ht, out_table, overwrite=overwrite)
    return HardnessResult(ht, png_path, table_path, len(ht), n_null, int(np.sum(ht["xrb_candidate"])))
