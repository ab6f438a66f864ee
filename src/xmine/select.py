"""Selection: cluster candidates, the Chandra obsids covering each, and the point sources in each field.

1. **Clusters** (:func:`select_clusters`): convex-hull extended CSC 2.1 sources
   (names ending in ``X``; recipe ``csc21_extended.adql``) matched with
   extended 4XMM sources (``SC_EXTENT``, ``SC_EXT_ML``, a clean summary flag,
   one row per ``SRCID``; recipe ``xmm_extended.adql``) by a radius scaled by
   the extent (:func:`xmine.sky.match_sources`). Or the user's own list
   (:func:`clusters_from_file`, e.g. the ACCEPT sample).
2. **Observations** (:func:`observations_covering`): ACIS imaging obsids from an
   observation table (recipe ``chandra_observations.adql``; not from CSC
   detections, which end in 2021) whose field holds the cluster centre.
3. **Point sources** (:func:`select_point_sources`): CSC and 4XMM sources in each
   field (a 4XMM source with a CSC counterpart is listed once, with the CSC
   position), with exclusion radii that follow the Chandra PSF at the source's
   off-axis angle in each obsid and grow with its counts
   (:func:`xmine.masks.mask_radius_arcsec`) — the catalogue error ellipse is
   not the source's size. Sources inside the cluster core are flagged for
   review, not masked. One DS9 fk5 region file per cluster and obsid.

Every catalogue query goes through the cache (:func:`xmine.cache.load_tap`), so
a second run needs no network and ``offline=True`` works once fetched.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from astropy.table import Table, vstack

from xmine import cache, sky, vo
from xmine.errors import InputError, NoResultsWarning
from xmine.recipes import Identifier, load_recipe, render_adql
from xmine.store import Store

__all__ = [
    "ACIS_FIELD_RADIUS_ARCMIN",
    "PointSourceSelection",
    "SelectionResult",
    "Services",
    "clusters_from_file",
    "load_observations",
    "match_clusters",
    "observations_covering",
    "run_selection",
    "select_clusters",
    "select_from_tables",
    "select_point_sources",
    "services_from_config",
]

#: Radius around the pointing within which a target counts as covered (arcmin): the
#: ACIS-I 16.9′ square's inscribed circle, and ACIS-S's S3 chip plus its neighbours.
ACIS_FIELD_RADIUS_ARCMIN = {"ACIS-I": 8.0, "ACIS-S": 6.0}
_ACIS_PIXEL_ARCSEC = 0.492


@dataclass(frozen=True)
class Services:
    """Where the catalogues are and what their tables are called.

    Attributes
    ----------
    csc_tap, xmm_tap, obs_tap : str
        TAP base URLs of CSC 2.1, 4XMM and the Chandra observation table.
    csc_master, csc_master_stack_assoc, csc_stack_observation_assoc : str
        CSC table names.
    xmm_table : str
        4XMM table (detections or unique sources).
    xmm_quality_col : str
        4XMM summary-flag column (``sc_sum_flag`` at XSA, ``sum_flag`` on the test server).
    obs_table : str
        Chandra observation table (obsid, obi, ra_pnt, dec_pnt, roll, instrument, exposure_s).
    csc_dialect, xmm_dialect : str
        ``csc`` (no ADQL geometry) or ``geometry``.
    """

    csc_tap: str
    xmm_tap: str
    obs_tap: str
    csc_master: str = "csc21.master_source"
    csc_master_stack_assoc: str = "csc21.master_stack_assoc"
    csc_stack_observation_assoc: str = "csc21.stack_observation_assoc"
    xmm_table: str = "xsa.v_epic_source_cat"
    xmm_quality_col: str = "sc_sum_flag"
    obs_table: str = "chandra.observations"
    csc_dialect: str = "csc"
    xmm_dialect: str = "geometry"
    timeout_s: float = 300.0
    retries: int = 3
    expiry_days: float | None = 90.0
    extra: Mapping[str, Any] = field(default_factory=dict)


def services_from_config(config: Any, *, obs_tap: str | None = None, obs_table: str = "chandra.observations",
                         xmm_quality_col: str | None = None) -> Services:
    """Build :class:`Services` from an :class:`xmine.config.XmineConfig`.

    The observation table is not in the configuration yet: it defaults to a
    ``chandra.observations`` table on the CSC TAP service (the local test server has one).
    """
    svc = config.services
    xmm_table = svc.xmm.table
    quality = xmm_quality_col or ("sum_flag" if not xmm_table.lower().startswith("xsa.") else "sc_sum_flag")
    return Services(csc_tap=svc.csc21.tap_url, xmm_tap=svc.xmm.tap_url, obs_tap=obs_tap or svc.csc21.tap_url,
                    csc_master=svc.csc21.master_source, csc_master_stack_assoc=svc.csc21.master_stack_assoc,
                    csc_stack_observation_assoc=svc.csc21.stack_observation_assoc, xmm_table=xmm_table,
                    xmm_quality_col=quality, obs_table=obs_table,
                    csc_dialect="geometry" if svc.csc21.adql_geometry else "csc",
                    xmm_dialect="geometry" if svc.xmm.adql_geometry else "csc", timeout_s=svc.timeout_s,
                    retries=svc.retries, expiry_days=config.cache.expiry_days)


def _fetch(store: Store, services: Services, adql: str, *, url: str, catalogue: str, refresh: bool,
           offline: bool) -> Table:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoResultsWarning)
        res = cache.load_tap(store, adql, url=url, catalogue=catalogue, refresh=refresh, offline=offline,
                             expiry_days=services.expiry_days, timeout_s=services.timeout_s,
                             retries=services.retries, hint="the same xmine select command without --offline")
    return res.to_astropy()


def _col(t: Table, *names: str) -> str:
    low = {c.lower(): c for c in t.colnames}
    for n in names:
        if n.lower() in low:
            return str(low[n.lower()])
    msg = f"table has none of the columns {', '.join(names)} (it has {', '.join(t.colnames)})"
    raise InputError(msg)


# ---------------------------------------------------------------------------- clusters
def select_clusters(store: Store, services: Services, *, min_significance: float = 3.0,
                    min_extent_arcsec: float = 0.0, min_ext_ml: float = 10.0, max_sum_flag: int = 0,
                    extent_factor: float = 1.0, min_match_arcsec: float = 15.0, require_both: bool = True,
                    refresh: bool = False, offline: bool = False,
                    query_dirs: Iterable[Path] = ()) -> Table:
    """Return cluster candidates: extended CSC sources matched with extended 4XMM sources.

    Parameters
    ----------
    store : Store
        The cache.
    services : Services
        Services and table names.
    min_significance : float, optional
        CSC flux significance cut.
    min_extent_arcsec, min_ext_ml, max_sum_flag : float, optional
        4XMM cuts: ``SC_EXTENT >``, ``SC_EXT_ML >=``, summary flag ``<=``.
    extent_factor, min_match_arcsec : float, optional
        Match radius ``max(extent_factor · SC_EXTENT, min_match_arcsec)``.
    require_both : bool, optional
        Keep only candidates seen extended in both catalogues (else also the unmatched ones of each).
    refresh, offline : bool, optional
        Cache behaviour (see :func:`xmine.cache.load_query`).
    query_dirs : iterable of Path, optional
        User recipe folders.

    Returns
    -------
    astropy.table.Table
        ``name, ra_deg, dec_deg, csc_name, xmm_srcid, xmm_extent_arcsec, sep_arcsec, origin``, sorted by RA.

    Warns
    -----
    xmine.errors.NoResultsWarning
        When no candidate is found (an empty, typed table is returned).
    """
    csc_q = render_adql(load_recipe("csc21_extended", query_dirs),
                        {"master_source": Identifier(services.csc_master), "min_significance": float(min_significance)})
    xmm_q = render_adql(load_recipe("xmm_extended", query_dirs),
                        {"xmm_table": Identifier(services.xmm_table),
                         "quality_col": Identifier(services.xmm_quality_col),
                         "min_extent": float(min_extent_arcsec), "min_ext_ml": float(min_ext_ml),
                         "max_sum_flag": int(max_sum_flag)})
    csc = _fetch(store, services, csc_q, url=services.csc_tap, catalogue="csc21", refresh=refresh, offline=offline)
    xmm = _fetch(store, services, xmm_q, url=services.xmm_tap, catalogue="4xmm", refresh=refresh, offline=offline)
    return match_clusters(csc, xmm, extent_factor=extent_factor, min_match_arcsec=min_match_arcsec,
                          require_both=require_both)


def match_clusters(csc: Table, xmm: Table, *, extent_factor: float = 1.0, min_match_arcsec: float = 15.0,
                   require_both: bool = True) -> Table:
    """Match extended CSC sources with extended 4XMM sources (no network; see :func:`select_clusters`).

    Parameters
    ----------
    csc : Table
        Extended CSC master sources (``name, ra, dec, err_ellipse_r0``).
    xmm : Table
        Extended 4XMM sources (``srcid, iauname, sc_ra, sc_dec, sc_poserr, sc_extent``, any case;
        detections are reduced to one row per SRCID).
    extent_factor, min_match_arcsec, require_both
        See :func:`select_clusters`.

    Returns
    -------
    Table
    """
    if len(xmm):  # XSA's view has one row per detection: one row per SRCID
        sid = _col(xmm, "srcid")
        _, first = np.unique(np.asarray(xmm[sid]), return_index=True)
        xmm = xmm[np.sort(first)]
    pairs = sky.match_sources(csc, xmm, extent_factor=extent_factor, min_extended_arcsec=min_match_arcsec,
                              xmm_ra=_col(xmm, "sc_ra") if len(xmm) else "SC_RA",
                              xmm_dec=_col(xmm, "sc_dec") if len(xmm) else "SC_DEC",
                              xmm_err=_col(xmm, "sc_poserr") if len(xmm) else "SC_POSERR",
                              xmm_extent=_col(xmm, "sc_extent") if len(xmm) else "SC_EXTENT",
                              xmm_id=_col(xmm, "srcid") if len(xmm) else "SRCID") \
        if len(csc) and len(xmm) else None
    rows: list[tuple[Any, ...]] = []
    matched_csc: set[str] = set()
    matched_xmm: set[int] = set()
    if pairs is not None and pairs.num_rows:
        csc_by = {str(n): i for i, n in enumerate(csc["name"])}
        sid = _col(xmm, "srcid")
        xmm_by = {int(s): i for i, s in enumerate(xmm[sid])}
        for p in pairs.to_pylist():
            if not p["extended"]:
                continue
            c, x = csc[csc_by[p["csc_name"]]], xmm[xmm_by[int(p["xmm_id"])]]
            matched_csc.add(p["csc_name"])
            matched_xmm.add(int(p["xmm_id"]))
            rows.append((p["csc_name"], float(c["ra"]), float(c["dec"]), p["csc_name"], int(p["xmm_id"]),
                         float(x[_col(xmm, "sc_extent")]), float(p["sep_arcsec"]), "csc+4xmm"))
    if not require_both:
        for c in csc:
            if str(c["name"]) not in matched_csc:
                rows.append((str(c["name"]), float(c["ra"]), float(c["dec"]), str(c["name"]), -1, math.nan,
                             math.nan, "csc"))
        for x in xmm:
            if int(x[_col(xmm, "srcid")]) not in matched_xmm:
                rows.append((str(x[_col(xmm, "iauname")]), float(x[_col(xmm, "sc_ra")]),
                             float(x[_col(xmm, "sc_dec")]), "", int(x[_col(xmm, "srcid")]),
                             float(x[_col(xmm, "sc_extent")]), math.nan, "4xmm"))
    out = Table(rows=rows or None, names=["name", "ra_deg", "dec_deg", "csc_name", "xmm_srcid", "xmm_extent_arcsec",
                                          "sep_arcsec", "origin"],
                dtype=[str, float, float, str, np.int64, float, float, str])
    for c, unit in (("ra_deg", "deg"), ("dec_deg", "deg"), ("xmm_extent_arcsec", "arcsec"), ("sep_arcsec", "arcsec")):
        out[c].unit = unit
    if len(out) == 0:
        warnings.warn(NoResultsWarning(f"no cluster candidates: {len(csc)} extended CSC and {len(xmm)} extended "
                                       "4XMM sources, none matched"), stacklevel=2)
        return out
    out.sort("ra_deg")
    return out


def clusters_from_file(path: str | os.PathLike[str]) -> Table:
    """Read the user's cluster list (CSV/ECSV/FITS/VOTable with name and RA/Dec in degrees).

    Column names are found case-insensitively: ``name``; ``ra``/``ra_deg``/``xapa_ra``;
    ``dec``/``dec_deg``/``xapa_dec``. Extra columns (z, kT, …) are kept.
    """
    p = Path(path)
    if not p.exists():
        msg = f"{p}: no such cluster list"
        raise InputError(msg)
    try:
        fmt = "ascii.csv" if p.suffix.lower() == ".csv" else None
        t = Table.read(p, format=fmt, comment="#") if fmt else Table.read(p)
    except Exception as exc:
        msg = f"{p}: cannot read a table ({exc}); give CSV, ECSV, FITS or VOTable with name, ra, dec"
        raise InputError(msg) from exc
    try:
        name = _col(t, "name", "cluster")
        ra = _col(t, "ra_deg", "ra", "xapa_ra", "rm_ra")
        dec = _col(t, "dec_deg", "dec", "xapa_dec", "rm_dec")
    except InputError as exc:
        msg = f"{p}: {exc}"
        raise InputError(msg) from exc
    out = Table()
    out["name"] = np.array([str(v).strip() for v in t[name]], dtype=str)
    out["ra_deg"] = np.asarray(t[ra], dtype=float)
    out["dec_deg"] = np.asarray(t[dec], dtype=float)
    bad = ~np.isfinite(out["ra_deg"]) | ~np.isfinite(out["dec_deg"]) | (np.abs(out["dec_deg"]) > 90)
    if bad.any():
        i = int(np.argmax(bad))
        msg = f"{p}: row {i + 1} ({out['name'][i]}) has no valid RA/Dec"
        raise InputError(msg)
    for c in t.colnames:
        if c not in (name, ra, dec) and c not in out.colnames:
            out[c] = t[c]
    out["ra_deg"].unit = "deg"
    out["dec_deg"].unit = "deg"
    return out


# ---------------------------------------------------------------------------- observations
def load_observations(store: Store, services: Services, *, min_exposure_s: float = 1000.0, refresh: bool = False,
                      offline: bool = False, query_dirs: Iterable[Path] = ()) -> Table:
    """Return the ACIS imaging observations of the observation table (cached)."""
    q = render_adql(load_recipe("chandra_observations", query_dirs),
                    {"obs_table": Identifier(services.obs_table), "min_exposure_s": float(min_exposure_s)})
    return _fetch(store, services, q, url=services.obs_tap, catalogue="chandra_obs", refresh=refresh,
                  offline=offline)


def observations_covering(clusters: Table, observations: Table, *,
                          field_radius_arcmin: Mapping[str, float] | float | None = None) -> Table:
    """Return one row per (cluster, obsid) whose ACIS field holds the cluster centre.

    Parameters
    ----------
    clusters : Table
        ``name, ra_deg, dec_deg``.
    observations : Table
        ``obsid, ra_pnt, dec_pnt, instrument, exposure_s`` (``roll`` kept if present).
    field_radius_arcmin : mapping or float, optional
        Per instrument (default :data:`ACIS_FIELD_RADIUS_ARCMIN`) or one radius for all.

    Returns
    -------
    Table
        ``cluster, obsid, instrument, exposure_s, offset_arcmin, ra_pnt, dec_pnt, roll``.
    """
    radii = ACIS_FIELD_RADIUS_ARCMIN if field_radius_arcmin is None else field_radius_arcmin
    rows = []
    if len(observations):
        ora = np.asarray(observations[_col(observations, "ra_pnt")], dtype=float)
        odec = np.asarray(observations[_col(observations, "dec_pnt")], dtype=float)
        inst = [str(v).strip().upper() for v in observations[_col(observations, "instrument")]]
        rad = np.array([radii if isinstance(radii, (int, float)) else radii.get(i, min(radii.values()))
                        for i in inst], dtype=float)
        roll = (np.asarray(observations["roll"], dtype=float) if "roll" in observations.colnames
                else np.full(len(observations), np.nan))
        for c in clusters:
            off = vo.angular_sep_deg(ora, odec, float(c["ra_deg"]), float(c["dec_deg"])) * 60.0
            for j in np.nonzero(off <= rad)[0]:
                o = observations[j]
                rows.append((str(c["name"]), int(o["obsid"]), inst[j], float(o["exposure_s"]), float(off[j]),
                             float(ora[j]), float(odec[j]), float(roll[j])))
    out = Table(rows=rows or None, names=["cluster", "obsid", "instrument", "exposure_s", "offset_arcmin", "ra_pnt",
                                          "dec_pnt", "roll"],
                dtype=[str, np.int64, str, float, float, float, float, float])
    for c, unit in (("exposure_s", "s"), ("offset_arcmin", "arcmin"), ("ra_pnt", "deg"), ("dec_pnt", "deg"),
                    ("roll", "deg")):
        out[c].unit = unit
    if len(out):
        out.sort(["cluster", "obsid"])
    return out


# ---------------------------------------------------------------------------- point sources
@dataclass
class PointSourceSelection:
    """Point sources per cluster field and observation, and the region files written.

    Attributes
    ----------
    sources : Table
        ``cluster, obsid, name, catalogue, ra_deg, dec_deg, theta_arcmin, counts, radius_arcsec, extended,
        in_core, review, masked``.
    region_files : list of Path
        One DS9 fk5 file per (cluster, obsid).
    """

    sources: Table
    region_files: list[Path]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name).strip("_") or "cluster"


def _field_header(ra: float, dec: float, radius_arcmin: float, exposure_s: float) -> Any:
    from astropy.io import fits

    n = int(2 * radius_arcmin * 60.0 / _ACIS_PIXEL_ARCSEC) + 2
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = n
    h["NAXIS2"] = n
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CRPIX1"] = h["CRPIX2"] = (n + 1) / 2.0
    h["CDELT1"], h["CDELT2"] = -_ACIS_PIXEL_ARCSEC / 3600.0, _ACIS_PIXEL_ARCSEC / 3600.0
    h["CUNIT1"] = h["CUNIT2"] = "deg"
    h["RA_PNT"], h["DEC_PNT"] = ra, dec
    h["EXPOSURE"] = exposure_s
    return h


def _cone(store: Store, services: Services, *, catalogue: str, ra: float, dec: float, radius_deg: float,
          refresh: bool, offline: bool) -> Table:
    if catalogue == "csc21":
        q = vo.cone_adql(services.csc_master, ra, dec, radius_deg, dialect=services.csc_dialect)
        url = services.csc_tap
    else:
        q = vo.cone_adql(services.xmm_table, ra, dec, radius_deg, dialect=services.xmm_dialect, ra_col="sc_ra",
                         dec_col="sc_dec")
        url = services.xmm_tap
    t = _fetch(store, services, q.text, url=url, catalogue=catalogue, refresh=refresh, offline=offline)
    if q.cone is not None and len(t):  # the CSC box, cut to the circle here
        ra_c, dec_c = _col(t, q.ra_col), _col(t, q.dec_col)
        t = t[vo.angular_sep_deg(np.asarray(t[ra_c], float), np.asarray(t[dec_c], float), ra, dec) <= radius_deg]
    return t


def select_point_sources(store: Store, services: Services, clusters: Table, coverage: Table, *,
                         out_dir: str | os.PathLike[str], field_radius_arcmin: float = 10.0,
                         core_radius_arcsec: float | None = None, mask_core: bool = False,
                         ecf_erg_cm2_per_count: float | None = None, refresh: bool = False,
                         offline: bool = False, progress: Callable[[str], None] | None = None) -> PointSourceSelection:
    """List the catalogued point sources in each cluster field and write their region files.

    Parameters
    ----------
    store, services
        Cache and services.
    clusters : Table
        From :func:`select_clusters` or :func:`clusters_from_file` (``name, ra_deg, dec_deg``;
        ``xmm_extent_arcsec`` sets the core radius when present).
    coverage : Table
        From :func:`observations_covering`.
    out_dir : path-like
        Region files go to ``out_dir/<cluster>/<obsid>_pointsources.reg``.
    field_radius_arcmin : float, optional
        Cone radius around each cluster.
    core_radius_arcsec : float, optional
        Sources nearer the centre are flagged for review (default: the 4XMM extent, at least 30″).
    mask_core : bool, optional
        Also mask the flagged core sources.
    ecf_erg_cm2_per_count : float, optional
        Flux → counts (default :data:`xmine.masks.DEFAULT_ECF`).
    refresh, offline : bool, optional
        Cache behaviour.
    progress : callable, optional
        Called with each cluster's name before its field is done (progress display).

    Returns
    -------
    PointSourceSelection
    """
    def cone(catalogue: str, ra: float, dec: float, radius_deg: float) -> Table:
        return _cone(store, services, catalogue=catalogue, ra=ra, dec=dec, radius_deg=radius_deg, refresh=refresh,
                     offline=offline)

    return _point_sources(clusters, coverage, cone, out_dir=out_dir, field_radius_arcmin=field_radius_arcmin,
                          core_radius_arcsec=core_radius_arcsec, mask_core=mask_core,
                          ecf_erg_cm2_per_count=ecf_erg_cm2_per_count, progress=progress)


def _point_sources(clusters: Table, coverage: Table, cone: Any, *, out_dir: str | os.PathLike[str],
                   field_radius_arcmin: float, core_radius_arcsec: float | None, mask_core: bool,
                   ecf_erg_cm2_per_count: float | None,
                   progress: Callable[[str], None] | None = None) -> PointSourceSelection:
    from xmine import masks

    ecf = masks.DEFAULT_ECF if ecf_erg_cm2_per_count is None else ecf_erg_cm2_per_count
    out_dir = Path(out_dir)
    tables, files = [], []
    r_deg = field_radius_arcmin / 60.0
    for c in clusters:
        name = str(c["name"])
        ra0, dec0 = float(c["ra_deg"]), float(c["dec_deg"])
        obs = coverage[coverage["cluster"] == name] if len(coverage) else coverage
        if len(obs) == 0:
            continue
        if progress is not None:
            progress(name)
        csc = cone("csc21", ra0, dec0, r_deg)
        xmm = cone("4xmm", ra0, dec0, r_deg)
        if len(xmm) and len(csc):  # a 4XMM source with a CSC counterpart is listed once, at the CSC position
            pairs = sky.match_sources(csc, xmm, xmm_ra=_col(xmm, "sc_ra"), xmm_dec=_col(xmm, "sc_dec"),
                                      xmm_err=_col(xmm, "sc_poserr"), xmm_extent=_col(xmm, "sc_extent"),
                                      xmm_id=_col(xmm, "srcid"))
            dup = {int(v) for v in pairs.column("xmm_id").to_pylist()}
            xmm = xmm[[int(v) not in dup for v in xmm[_col(xmm, "srcid")]]]
        ext = float(c["xmm_extent_arcsec"]) if "xmm_extent_arcsec" in clusters.colnames else math.nan
        core = core_radius_arcsec if core_radius_arcsec is not None else max(30.0, ext if math.isfinite(ext) else 0.0)
        for o in obs:
            hdr = _field_header(ra0, dec0, field_radius_arcmin, float(o["exposure_s"]))
            pnt = [(float(o["ra_pnt"]), float(o["dec_pnt"]))]
            parts = []
            for cat_name, t in (("csc21", csc), ("4xmm", xmm)):
                if len(t) == 0:
                    continue
                s = masks.catalog_point_sources(t, header=hdr, exposure_s=float(o["exposure_s"]),
                                                ecf_erg_cm2_per_count=ecf, pointings=pnt, source=cat_name)
                s["catalogue"] = np.array([cat_name] * len(s), dtype="U5")
                parts.append(s)
            if not parts:
                continue
            src = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
            pix = _ACIS_PIXEL_ARCSEC
            cx, cy = (float(hdr["CRPIX1"]) - 1.0, float(hdr["CRPIX2"]) - 1.0)
            src = masks.flag_core_sources(src, center_x_pix=cx, center_y_pix=cy, core_radius_pix=core / pix,
                                          mask_core=mask_core)
            path = out_dir / _safe(name) / f"{int(o['obsid'])}_pointsources.reg"
            masks.write_region_file(path, src, header=hdr, system="fk5")
            files.append(path)
            keep = src["name", "catalogue", "ra_deg", "dec_deg", "theta_arcmin", "counts", "radius_arcsec",
                       "extended", "in_core", "review", "masked"]
            keep.add_column(np.array([name] * len(keep), dtype=str), index=0, name="cluster")
            keep.add_column(np.full(len(keep), int(o["obsid"]), dtype=np.int64), index=1, name="obsid")
            keep.meta.clear()
            tables.append(keep)
    if tables:
        result = vstack(tables, metadata_conflicts="silent")
    else:
        result = Table(names=["cluster", "obsid", "name", "catalogue", "ra_deg", "dec_deg", "theta_arcmin", "counts",
                              "radius_arcsec", "extended", "in_core", "review", "masked"],
                       dtype=[str, np.int64, str, str, float, float, float, float, float, bool, bool, bool, bool])
        warnings.warn(NoResultsWarning("no point sources: no cluster has a covering observation"), stacklevel=2)
    return PointSourceSelection(sources=result, region_files=files)


def to_arrow(table: Table) -> pa.Table:
    """Return a selection table as Arrow (units in field metadata)."""
    return vo.to_arrow(vo.clean_table(table))


# ---------------------------------------------------------------------------- one call per CLI command
@dataclass
class SelectionResult:
    """What ``xmine select clusters`` / ``xmine select pointsources`` produce.

    Attributes
    ----------
    clusters, coverage : Table
        Cluster candidates and their covering obsids.
    point_sources : Table or None
        Point sources per cluster and obsid (None when not asked).
    files : list of Path
        Tables and region files written.
    """

    clusters: Table
    coverage: Table
    point_sources: Table | None
    files: list[Path]

    def summary(self) -> tuple[list[str], list[list[Any]]]:
        """Return ``(columns, rows)``: one row per cluster with its obsids and source counts."""
        cols = ["cluster", "ra_deg", "dec_deg", "obsids", "point sources", "masked", "review"]
        rows: list[list[Any]] = []
        for c in self.clusters:
            name = str(c["name"])
            obsids = sorted({int(o) for o in self.coverage["obsid"][self.coverage["cluster"] == name]}) \
                if len(self.coverage) else []
            n = m = r = 0
            if self.point_sources is not None and len(self.point_sources):
                ps = self.point_sources[self.point_sources["cluster"] == name]
                uniq = {str(v) for v in ps["name"][~ps["extended"]]}
                n, m = len(uniq), len({str(v) for v in ps["name"][ps["masked"]]})
                r = len({str(v) for v in ps["name"][ps["review"]]})
            rows.append([name, float(c["ra_deg"]), float(c["dec_deg"]), " ".join(map(str, obsids)) or "-", n, m, r])
        return cols, rows


def _write_table(t: Table, path: Path) -> Path:
    from xmine.store import atomic_write

    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has been deprecated in the VOUnit standard.*")
        t.write(tmp, format="ascii.ecsv")
    return path


def run_selection(config: Any, *, out_dir: str | os.PathLike[str], clusters_file: str | os.PathLike[str] | None = None,
                  point_sources: bool = True, refresh: bool = False, offline: bool | None = None,
                  obs_tap: str | None = None, obs_table: str = "chandra.observations",
                  min_significance: float = 3.0, min_ext_ml: float = 10.0, max_sum_flag: int = 0,
                  field_radius_arcmin: float = 10.0, core_radius_arcsec: float | None = None,
                  mask_core: bool = False, progress: Callable[[str], None] | None = None) -> SelectionResult:
    """Select clusters (or read the user's list), their obsids and, optionally, their point sources.

    Writes ``clusters.ecsv``, ``observations.ecsv`` and (with ``point_sources``)
    ``point_sources.ecsv`` plus ``<cluster>/<obsid>_pointsources.reg`` under ``out_dir``.
    Catalogue queries are cached in the configuration's store.

    Parameters
    ----------
    config : xmine.config.XmineConfig
        Services, store, cache expiry and offline default, recipe folders.
    out_dir : path-like
        Output folder.
    clusters_file : path-like, optional
        Start from this list instead of the catalogues (see :func:`clusters_from_file`).
    point_sources : bool, optional
        Also list point sources and write region files.
    refresh, offline : bool, optional
        Cache behaviour (``offline`` defaults to ``cache.offline``).
    obs_tap, obs_table : str, optional
        The Chandra observation table (default: ``chandra.observations`` on the CSC TAP URL).
    min_significance, min_ext_ml, max_sum_flag : optional
        Cluster-candidate cuts (see :func:`select_clusters`).
    field_radius_arcmin, core_radius_arcsec, mask_core : optional
        Point-source options (see :func:`select_point_sources`).
    progress : callable, optional
        Called with a short text at each step (progress display; the library itself prints nothing).

    Returns
    -------
    SelectionResult
    """
    from xmine.store import open_store

    services = services_from_config(config, obs_tap=obs_tap, obs_table=obs_table)
    off = config.cache.offline if offline is None else offline
    out = Path(out_dir)
    qdirs = list(config.project.query_dirs)
    files: list[Path] = []
    with open_store(config.project.store) as store:
        if progress is not None:
            progress("cluster candidates")
        if clusters_file is not None:
            clusters = clusters_from_file(clusters_file)
        else:
            clusters = select_clusters(store, services, min_significance=min_significance, min_ext_ml=min_ext_ml,
                                       max_sum_flag=max_sum_flag, refresh=refresh, offline=off, query_dirs=qdirs)
        if progress is not None:
            progress("observations")
        obs = load_observations(store, services, refresh=refresh, offline=off, query_dirs=qdirs)
        coverage = observations_covering(clusters, obs)
        files.append(_write_table(clusters, out / "clusters.ecsv"))
        files.append(_write_table(coverage, out / "observations.ecsv"))
        sources = None
        if point_sources:
            sel = select_point_sources(store, services, clusters, coverage, out_dir=out,
                                       field_radius_arcmin=field_radius_arcmin, core_radius_arcsec=core_radius_arcsec,
                                       mask_core=mask_core, refresh=refresh, offline=off,
                                       progress=None if progress is None else (lambda n: progress(f"field {n}")))
            sources = sel.sources
            files.append(_write_table(sources, out / "point_sources.ecsv"))
            files.extend(sel.region_files)
    return SelectionResult(clusters=clusters, coverage=coverage, point_sources=sources, files=files)


def select_from_tables(csc_master: Table, xmm_sources: Table, observations: Table, *,
                       out_dir: str | os.PathLike[str], min_significance: float = 3.0, min_extent_arcsec: float = 0.0,
                       min_ext_ml: float = 10.0, max_sum_flag: int = 0, field_radius_arcmin: float = 10.0,
                       core_radius_arcsec: float | None = None, mask_core: bool = False) -> SelectionResult:
    """Run the whole selection on catalogue tables already at hand (no service, no cache).

    For catalogues read from files, e.g. the simulator's CSC-like ``master_source``,
    4XMM-like sources and observation table (``xmine demo``). The same cuts as
    the recipes are applied here, and cones use an in-memory :class:`xmine.sky.SkyIndex`.

    Parameters
    ----------
    csc_master : Table
        CSC master sources (``name, ra, dec, err_ellipse_r0, significance, flux_aper_b``, ...).
    xmm_sources : Table
        4XMM sources (``SRCID, IAUNAME, SC_RA, SC_DEC, SC_POSERR, SC_EXTENT, SC_EXT_ML`` and
        ``SC_SUM_FLAG`` or ``SUM_FLAG``; any case).
    observations : Table
        ``obsid, ra_pnt, dec_pnt, instrument, exposure_s`` (ACIS rows are used).
    out_dir : path-like
        Where tables and region files go.
    min_significance, min_extent_arcsec, min_ext_ml, max_sum_flag, field_radius_arcmin, core_radius_arcsec, mask_core
        As for :func:`select_clusters` and :func:`select_point_sources`.

    Returns
    -------
    SelectionResult
    """
    csc_t = vo.clean_table(csc_master)
    xmm_t = vo.clean_table(xmm_sources)
    if len(xmm_t):
        _, first = np.unique(np.asarray(xmm_t[_col(xmm_t, "srcid")]), return_index=True)
        xmm_t = xmm_t[np.sort(first)]
    sig = np.nan_to_num(np.asarray(csc_t[_col(csc_t, "significance")], dtype=float), nan=0.0)
    ext_csc = csc_t[np.char.endswith(np.asarray(csc_t[_col(csc_t, "name")]).astype(str), "X")
                    & (sig >= min_significance)]
    qual = np.asarray(xmm_t[_col(xmm_t, "sc_sum_flag", "sum_flag")], dtype=float)
    ext = np.nan_to_num(np.asarray(xmm_t[_col(xmm_t, "sc_extent")], dtype=float), nan=0.0)
    ml = np.nan_to_num(np.asarray(xmm_t[_col(xmm_t, "sc_ext_ml")], dtype=float), nan=-np.inf)
    ext_xmm = xmm_t[(ext > min_extent_arcsec) & (ml >= min_ext_ml) & (qual <= max_sum_flag)]
    clusters = match_clusters(ext_csc, ext_xmm)
    inst = np.array([str(v).upper() for v in observations[_col(observations, "instrument")]])
    coverage = observations_covering(clusters, observations[np.char.startswith(inst, "ACIS")])
    index = {"csc21": (csc_t, sky.SkyIndex(vo.to_arrow(csc_t[[_col(csc_t, "ra"), _col(csc_t, "dec")]]),
                                           ra_col=_col(csc_t, "ra"), dec_col=_col(csc_t, "dec"))),
             "4xmm": (xmm_t, sky.SkyIndex(vo.to_arrow(xmm_t[[_col(xmm_t, "sc_ra"), _col(xmm_t, "sc_dec")]]),
                                          ra_col=_col(xmm_t, "sc_ra"), dec_col=_col(xmm_t, "sc_dec")))}

    def cone(catalogue: str, ra: float, dec: float, radius_deg: float) -> Table:
        table, idx = index[catalogue]
        rows, _ = idx.cone_rows(ra, dec, radius_deg)
        return table[np.sort(rows)]

    out = Path(out_dir)
    sel = _point_sources(clusters, coverage, cone, out_dir=out, field_radius_arcmin=field_radius_arcmin,
                         core_radius_arcsec=core_radius_arcsec, mask_core=mask_core, ecf_erg_cm2_per_count=None)
    files = [_write_table(clusters, out / "clusters.ecsv"), _write_table(coverage, out / "observations.ecsv"),
             _write_table(sel.sources, out / "point_sources.ecsv"), *sel.region_files]
    return SelectionResult(clusters=clusters, coverage=coverage, point_sources=sel.sources, files=files)
