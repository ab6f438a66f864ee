"""Population studies over a bulk run: per-cluster summaries, a two-group classification, odd regions, plots.

:func:`study_run` reads one run's results from the store (``clusters``,
``regions``, ``profiles``; opened read-only) and the products on disk, and
makes:

* a **per-cluster summary**: number of bins, surface-brightness range and
  central value, the hardness ratio ``hr = (H − S)/(H + S)`` (soft 0.5–2 keV,
  hard 2–7 keV) inside and outside, its gradient with radius and a
  surface-brightness concentration;
* a **classification** of the clusters into two groups (scikit-learn:
  standardised features → :class:`~sklearn.mixture.GaussianMixture`), the
  group with the more concentrated, softer-centred clusters being called
  *cool-core-like*;
* **odd regions** across the sample (:class:`~sklearn.neighbors.LocalOutlierFactor`
  over scaled radius, hardness and relative surface brightness);
* the sample's **hardness against scaled radius**;
* PNG plots, an ``index.html`` report linking them, and the tables
  ``study_clusters`` / ``study_regions`` written back to the store in one
  transaction (rows of the same run are replaced).

Definitions (what a user should know before quoting a number)
------------------------------------------------------------
* **Radius.** ``r/r500`` when every studied cluster has R500 (the regions'
  ``r_r500``), otherwise arcmin from the cluster centre for all of them
  (:attr:`StudyResult.radius_scale` says which). A region's radius is the
  mean distance of its pixels from the cluster centre, from the bin map on disk
  (:func:`bin_radii`): contour bins follow isophotes, and an outer bin can be a
  ring whose centroid (the ``regions`` table's ``r_arcmin``) lies at the centre.
  Without a bin map the recorded centroid distance is used (and said so).
* **Central surface brightness**: that of the region nearest the centre.
* **Inner / outer.** Inner: regions with radius < 0.05 r500 (0.25′); outer:
  0.1–0.3 r500 (0.5′–1.5′). When a range holds no region, inner falls back to
  the region nearest the centre and outer to the outermost quarter of the
  regions.
* **Concentration** ``c_sb = sb_inner / sb_outer`` with ``sb = Σ rate / Σ area``
  over the regions of each range (a count-rate surface brightness, counts s⁻¹
  arcsec⁻², not a flux). It resembles Santos et al. (2008)'s
  F(< 40 kpc)/F(< 400 kpc) but is a ratio of mean surface brightnesses, not of
  enclosed fluxes, and is limited to the binned field.
* **Hardness gradient.** The slope of a straight line ``hr = a + b·r`` fitted
  to all regions of a cluster by weighted least squares (weights ``1/hr_err²``);
  the error is the formal one (the fit's covariance, not rescaled by χ²).
  ``hr_slope_per_r500`` when R500 is known, and ``hr_slope_per_arcmin`` always.
  A cool core shows a positive slope (softer centre); hardness ratios are
  band-count ratios, not temperatures, and depend on the response and N_H.
* **Hardness deficit** ``hr_outer − hr_inner`` (weighted means).
* **Temperatures**, when the run fitted its regions (``region_fits``): weighted
  means of kT inside and outside (weights from the 1σ interval's half-width,
  a symmetric approximation of an asymmetric interval) and their ratio. They
  are reported, not used to classify (fits are optional and often sparse).
* **Classification features**: log₁₀ c_sb, the hardness deficit and the
  hardness slope, each standardised over the sample; clusters missing one of
  them are left unclassified (group NULL). With fewer than four classifiable
  clusters no classification is made. A mixture always makes two groups, even
  of one population: the split's mean silhouette (:class:`Classification`)
  says whether they are real (≳ 0.5 clear, ≲ 0.25 none). The group is called
  cool-core-like from these X-ray shapes alone; no temperature, entropy or
  cooling time is measured.
* **Odd regions**: LocalOutlierFactor (20 neighbours, the library's automatic
  threshold) on robust-scaled (radius, hr, log₁₀ of sb over the cluster's outer
  sb); the score is LOF's outlier factor (≈ 1 typical, larger is odder). The
  sample's outermost regions are sparse in these features and are the usual
  false alarms; errors are not used, so a faint bin's noisy hr can be flagged.

It reads the results schema of :mod:`xmine.results`; the only tables it writes
are ``study_clusters`` and ``study_regions`` (keyed by run_id, cluster[, bin_id]).
"""

from __future__ import annotations

import html
import itertools
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa

from xmine.errors import CacheError, InputError
from xmine.store import Store, atomic_write, open_store

__all__ = [
    "Classification",
    "GradientFit",
    "StudyResult",
    "bin_radii",
    "classify_clusters",
    "find_odd_regions",
    "fit_gradient",
    "hardness_profile",
    "study_run",
    "summarise_clusters",
]

log = logging.getLogger(__name__)

#: Inner and outer radial ranges by radius scale: (inner max, outer min, outer max).
RANGES: dict[str, tuple[float, float, float]] = {"r500": (0.05, 0.1, 0.3), "arcmin": (0.25, 0.5, 1.5)}

_SUMMARY_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("run_id", pa.string()), ("cluster", pa.string()), ("n_bins", pa.int64()),
    ("sb_min_cps_arcsec2", pa.float64()), ("sb_max_cps_arcsec2", pa.float64()),
    ("sb_central_cps_arcsec2", pa.float64()), ("sb_inner_cps_arcsec2", pa.float64()),
    ("sb_outer_cps_arcsec2", pa.float64()), ("log10_concentration", pa.float64()),
    ("hr_inner", pa.float64()), ("hr_inner_err", pa.float64()), ("hr_outer", pa.float64()),
    ("hr_outer_err", pa.float64()), ("hr_deficit", pa.float64()), ("hr_deficit_err", pa.float64()),
    ("kt_inner_kev", pa.float64()), ("kt_inner_err", pa.float64()), ("kt_outer_kev", pa.float64()),
    ("kt_outer_err", pa.float64()), ("kt_ratio", pa.float64()),
    ("hr_slope_per_r500", pa.float64()), ("hr_slope_per_r500_err", pa.float64()),
    ("hr_slope_per_arcmin", pa.float64()), ("hr_slope_per_arcmin_err", pa.float64()),
    ("radius_scale", pa.string()), ("grp", pa.int64()), ("cool_core_like", pa.bool_()),
    ("p_cool_core_like", pa.float64()), ("n_odd_regions", pa.int64()),
]

_REGION_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("run_id", pa.string()), ("cluster", pa.string()), ("bin_id", pa.int64()), ("radius", pa.float64()),
    ("radius_scale", pa.string()), ("hr", pa.float64()), ("hr_err", pa.float64()),
    ("sb_cps_arcsec2", pa.float64()), ("log10_sb_rel_outer", pa.float64()), ("odd", pa.bool_()),
    ("odd_score", pa.float64()),
]


# ------------------------------------------------------------------------------------------ fits and features
@dataclass(frozen=True)
class GradientFit:
    """A weighted straight-line fit ``y = intercept + slope · x`` (formal 1σ errors)."""

    slope: float
    slope_err: float
    intercept: float
    intercept_err: float
    chi2: float
    dof: int
    n: int


def fit_gradient(x: np.ndarray, y: np.ndarray, y_err: np.ndarray) -> GradientFit:
    """Fit ``y = a + b·x`` by weighted least squares (weights ``1/y_err²``).

    Points with a non-finite value or a non-positive error are left out. The
    errors are the formal ones from the fit's covariance (``(XᵀWX)⁻¹``), not
    rescaled by the reduced χ².

    Parameters
    ----------
    x, y, y_err : numpy.ndarray
        Abscissa (e.g. r/r500), values (e.g. hardness ratio) and their 1σ errors.

    Returns
    -------
    GradientFit
        NaN slope and intercept when fewer than two distinct usable x remain.

    Examples
    --------
    >>> fit = fit_gradient(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]), np.ones(3))
    >>> round(fit.slope, 6), round(fit.slope_err, 4)
    (2.0, 0.7071)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    e = np.asarray(y_err, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(e) & (e > 0)
    x, y, w = x[ok], y[ok], 1.0 / e[ok] ** 2
    n = int(x.size)
    if n < 2 or np.ptp(x) == 0:
        return GradientFit(math.nan, math.nan, math.nan, math.nan, math.nan, max(n - 2, 0), n)
    s, sx, sxx = w.sum(), (w * x).sum(), (w * x * x).sum()
    sy, sxy = (w * y).sum(), (w * x * y).sum()
    det = s * sxx - sx * sx
    slope = (s * sxy - sx * sy) / det
    intercept = (sxx * sy - sx * sxy) / det
    chi2 = float((w * (y - intercept - slope * x) ** 2).sum())
    return GradientFit(float(slope), float(math.sqrt(s / det)), float(intercept), float(math.sqrt(sxx / det)),
                       chi2, n - 2, n)


def _weighted_mean(v: np.ndarray, err: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(v) & np.isfinite(err) & (err > 0)
    if not ok.any():
        return math.nan, math.nan
    w = 1.0 / err[ok] ** 2
    return float((w * v[ok]).sum() / w.sum()), float(1.0 / math.sqrt(w.sum()))


def _col(table: pa.Table, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Return a column as numpy with nulls as NaN (floats) or None (objects)."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan) if dtype is np.float64 else np.full(table.num_rows, None)
    values = table.column(name).to_pylist()
    if dtype is np.float64:
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.array(values, dtype=dtype)


def _inner_outer(radius: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Boolean selections of the inner and outer regions (see the module docstring)."""
    r_in, o_lo, o_hi = RANGES[scale]
    inner = radius < r_in
    if not inner.any() and np.isfinite(radius).any():
        inner = radius == np.nanmin(radius)
    outer = (radius >= o_lo) & (radius <= o_hi)
    if not outer.any() and np.isfinite(radius).sum() >= 2:
        outer = radius >= np.nanpercentile(radius, 75)
        outer &= ~inner
    return inner, outer


def _radius(regions: pa.Table, scale: str) -> np.ndarray:
    return _col(regions, "r_r500") if scale == "r500" else _col(regions, "r_arcmin")


def _bin_radii(binmap_path: Path, ra_deg: float, dec_deg: float) -> dict[int, float]:
    """Return each bin's mean pixel distance from the cluster centre (arcmin), from its bin map on disk."""
    from astropy.io import fits
    from astropy.wcs.utils import proj_plane_pixel_scales

    from xmine.images import celestial_wcs

    binmap, header = fits.getdata(binmap_path, header=True)
    w = celestial_wcs(header, source=str(binmap_path))
    cx, cy = (float(v) for v in w.world_to_pixel_values(ra_deg, dec_deg))
    pix_arcmin = float(np.mean(np.abs(proj_plane_pixel_scales(w)[:2]))) * 60.0
    ids = np.asarray(binmap).astype(np.int64).ravel()
    yy, xx = np.indices(np.shape(binmap), dtype=np.float64)
    dist = np.hypot(xx.ravel() - cx, yy.ravel() - cy) * pix_arcmin
    ok = ids >= 0
    n = np.bincount(ids[ok])
    total = np.bincount(ids[ok], weights=dist[ok])
    return {int(b): float(total[b] / n[b]) for b in np.nonzero(n)[0]}


def bin_radii(regions: pa.Table, clusters: pa.Table) -> tuple[pa.Table, list[str]]:
    """Replace the regions' ``r_arcmin``/``r_r500`` by each bin's mean pixel distance from the centre.

    A contour bin that follows an isophote can be a ring, whose centroid lies near the centre; the mean
    distance of its pixels places it where it is. A ``r_mean_arcmin`` column of the regions table (that
    distance, measured) is used when present; otherwise the bin maps are read from each cluster's
    ``products_dir`` (``contbin/binmap.fits``). ``r_r500`` keeps the ratio ``r_arcmin/r_r500`` (R500 in
    arcmin) the run recorded. Clusters without either keep the recorded values.

    Returns
    -------
    regions : pyarrow.Table
        A copy with the two columns replaced.
    kept : list of str
        Clusters whose recorded (centroid) radii were kept.
    """
    names = _col(regions, "cluster", object)
    bins = np.array([-1 if v is None else int(v) for v in regions.column("bin_id").to_pylist()], dtype=np.int64)
    r_arcmin, r_r500 = _col(regions, "r_arcmin").copy(), _col(regions, "r_r500").copy()
    r_mean = _col(regions, "r_mean_arcmin")
    kept = []
    for row in clusters.to_pylist():
        name = row["cluster"]
        sel = names == name
        if not sel.any():
            continue
        if np.isfinite(r_mean[sel]).all():
            new = r_mean[sel]
        else:
            path = _product(row.get("products_dir"), "contbin/binmap.fits", "contbin/contbin_binmap.fits")
            radii: dict[int, float] | None = None
            if path is not None and row.get("ra_deg") is not None and row.get("dec_deg") is not None:
                try:
                    radii = _bin_radii(path, float(row["ra_deg"]), float(row["dec_deg"]))
                except (OSError, ValueError, InputError) as exc:
                    log.warning("%s: cannot read the bin map %s (%s); keeping the recorded radii", name, path, exc)
            if radii is None or not all(int(b) in radii for b in bins[sel]):
                kept.append(name)
                continue
            new = np.array([radii[int(b)] for b in bins[sel]])
        ratio = r_arcmin[sel] / r_r500[sel]
        ok = np.isfinite(ratio) & (ratio > 0)
        r500_arcmin = float(np.median(ratio[ok])) if ok.any() else math.nan
        r_arcmin[sel] = new
        r_r500[sel] = new / r500_arcmin
    out = regions
    for name, values in (("r_arcmin", r_arcmin), ("r_r500", r_r500)):
        arr = pa.array([None if not math.isfinite(v) else float(v) for v in values], pa.float64())
        i = out.schema.get_field_index(name)
        out = out.set_column(i, name, arr) if i >= 0 else out.append_column(name, arr)
    return out, kept


def _with_temperatures(regions: pa.Table, fits: pa.Table | None) -> pa.Table:
    """Add ``kt_kev``/``kt_err`` (NaN where a region has no fit) from ``region_fits`` rows."""
    found: dict[tuple[str, int], tuple[float, float]] = {}
    if fits is not None:
        for r in fits.to_pylist():
            if r["kt_kev"] is not None and r["kt_err"] is not None:
                found[(r["cluster"], int(r["bin_id"]))] = (float(r["kt_kev"]), float(r["kt_err"]))
    keys = zip(regions.column("cluster").to_pylist(), regions.column("bin_id").to_pylist(), strict=True)
    pairs = [found.get((c, int(b)), (math.nan, math.nan)) if b is not None else (math.nan, math.nan) for c, b in keys]
    for i, name in enumerate(("kt_kev", "kt_err")):
        arr = pa.array([p[i] for p in pairs], pa.float64())
        j = regions.schema.get_field_index(name)
        regions = regions.set_column(j, name, arr) if j >= 0 else regions.append_column(name, arr)
    return regions


def summarise_clusters(regions: pa.Table, *, radius_scale: str, run_id: str = "") -> pa.Table:
    """Per-cluster summary of a run's regions (one row per cluster, in name order).

    Parameters
    ----------
    regions : pyarrow.Table
        Rows of the ``regions`` table (columns ``cluster, bin_id, sb_cps_arcsec2, area_arcsec2,
        hr, hr_err, r_arcmin, r_r500``; optional ``kt_kev, kt_err`` from spectral fits).
    radius_scale : {"r500", "arcmin"}
        Which radius the inner/outer ranges use (see the module docstring).
    run_id : str, optional
        Written into the ``run_id`` column.

    Returns
    -------
    pyarrow.Table
        The columns of ``study_clusters`` (group columns still NULL).
    """
    if radius_scale not in RANGES:
        msg = f"radius_scale = {radius_scale!r} is not one of {', '.join(RANGES)}"
        raise InputError(msg)
    names = _col(regions, "cluster", object)
    sb = _col(regions, "sb_cps_arcsec2")
    area = _col(regions, "area_arcsec2")
    hr, hr_err = _col(regions, "hr"), _col(regions, "hr_err")
    kt, kt_err = _col(regions, "kt_kev"), _col(regions, "kt_err")
    r_arcmin, r_r500 = _col(regions, "r_arcmin"), _col(regions, "r_r500")
    radius = r_r500 if radius_scale == "r500" else r_arcmin
    rows: dict[str, list[Any]] = {name: [] for name, _ in _SUMMARY_COLUMNS}
    for name in sorted(set(names.tolist())):
        sel = names == name
        r, s, a, h, he = radius[sel], sb[sel], area[sel], hr[sel], hr_err[sel]
        inner, outer = _inner_outer(r, radius_scale)

        def mean_sb(m: np.ndarray, s: np.ndarray = s, a: np.ndarray = a) -> float:
            ok = m & np.isfinite(s) & np.isfinite(a) & (a > 0)
            return float((s[ok] * a[ok]).sum() / a[ok].sum()) if ok.any() else math.nan

        sb_in, sb_out = mean_sb(inner), mean_sb(outer)
        conc = math.log10(sb_in / sb_out) if sb_in > 0 and sb_out > 0 else math.nan
        h_in, h_in_err = _weighted_mean(h[inner], he[inner])
        h_out, h_out_err = _weighted_mean(h[outer], he[outer])
        k_in, k_in_err = _weighted_mean(kt[sel][inner], kt_err[sel][inner])
        k_out, k_out_err = _weighted_mean(kt[sel][outer], kt_err[sel][outer])
        slope_r500 = fit_gradient(r_r500[sel], h, he)
        slope_arcmin = fit_gradient(r_arcmin[sel], h, he)
        central = s[np.nanargmin(r)] if np.isfinite(r).any() else math.nan
        values = {
            "run_id": run_id, "cluster": name, "n_bins": int(sel.sum()),
            "sb_min_cps_arcsec2": float(np.nanmin(s)) if np.isfinite(s).any() else math.nan,
            "sb_max_cps_arcsec2": float(np.nanmax(s)) if np.isfinite(s).any() else math.nan,
            "sb_central_cps_arcsec2": float(central), "sb_inner_cps_arcsec2": sb_in,
            "sb_outer_cps_arcsec2": sb_out, "log10_concentration": conc,
            "hr_inner": h_in, "hr_inner_err": h_in_err, "hr_outer": h_out, "hr_outer_err": h_out_err,
            "hr_deficit": h_out - h_in, "hr_deficit_err": math.hypot(h_in_err, h_out_err),
            "kt_inner_kev": k_in, "kt_inner_err": k_in_err, "kt_outer_kev": k_out, "kt_outer_err": k_out_err,
            "kt_ratio": k_in / k_out if k_out > 0 else math.nan,
            "hr_slope_per_r500": slope_r500.slope, "hr_slope_per_r500_err": slope_r500.slope_err,
            "hr_slope_per_arcmin": slope_arcmin.slope, "hr_slope_per_arcmin_err": slope_arcmin.slope_err,
            "radius_scale": radius_scale, "grp": None, "cool_core_like": None, "p_cool_core_like": None,
            "n_odd_regions": 0,
        }
        for k, v in values.items():
            rows[k].append(v)
    return _arrow(rows, _SUMMARY_COLUMNS)


def _arrow(rows: dict[str, list[Any]], columns: list[tuple[str, pa.DataType]]) -> pa.Table:
    """Build a typed Arrow table; NaN floats become NULL."""
    arrays = []
    for name, dtype in columns:
        values = rows[name]
        if pa.types.is_floating(dtype):
            values = [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]
        arrays.append(pa.array(values, type=dtype))
    return pa.Table.from_arrays(arrays, schema=pa.schema([pa.field(n, t) for n, t in columns]))


#: Summary columns used to classify, by radius scale.
def _features(scale: str) -> tuple[str, str, str]:
    return ("log10_concentration", "hr_deficit", "hr_slope_per_r500" if scale == "r500" else "hr_slope_per_arcmin")


@dataclass(frozen=True)
class Classification:
    """Two groups of clusters (see :func:`classify_clusters`).

    Attributes
    ----------
    group : numpy.ndarray of int
        0 or 1 per cluster, −1 where a feature is missing (or no classification was possible).
    cool_core_like : numpy.ndarray of bool
        Whether the cluster's group is the cool-core-like one.
    p_cool_core_like : numpy.ndarray
        Mixture probability of the cool-core-like group (NaN when unclassified).
    cool_group : int
        The cool-core-like group's number (−1 when none).
    silhouette : float
        Mean silhouette of the split in the standardised features (scikit-learn): near 1 two clear groups,
        ≲ 0.25 no real split (a mixture always makes two groups, even of one population). NaN when none.
    """

    group: np.ndarray
    cool_core_like: np.ndarray
    p_cool_core_like: np.ndarray
    cool_group: int
    silhouette: float


def classify_clusters(summary: pa.Table, *, seed: int = 0) -> Classification:
    """Split clusters into two groups and name the cool-core-like one.

    Standardised features (log₁₀ concentration, hardness deficit, hardness
    slope) → a two-component :class:`~sklearn.mixture.GaussianMixture`
    (diagonal covariances, 10 starts). The cool-core-like group is the one whose
    mean standardised concentration plus hardness deficit is larger.

    Parameters
    ----------
    summary : pyarrow.Table
        From :func:`summarise_clusters`.
    seed : int, optional
        Seed of the mixture's starts.

    Returns
    -------
    Classification
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    scale = str(summary.column("radius_scale")[0]) if summary.num_rows else "arcmin"
    x = np.column_stack([_col(summary, c) for c in _features(scale)]) if summary.num_rows else np.zeros((0, 3))
    ok = np.isfinite(x).all(axis=1)
    n = summary.num_rows
    group = np.full(n, -1, dtype=np.int64)
    cool = np.zeros(n, dtype=bool)
    prob = np.full(n, np.nan)
    none = Classification(group, cool, prob, -1, math.nan)
    if ok.sum() < 4:
        return none
    z = StandardScaler().fit_transform(x[ok])
    if len(np.unique(np.round(z, 9), axis=0)) < 2:  # every cluster alike: nothing to split
        return none
    gmm = GaussianMixture(n_components=2, covariance_type="diag", n_init=10, random_state=seed, reg_covar=1e-3)
    with warnings.catch_warnings():
        # few distinct points: the k-means start may find fewer groups; the result is checked below
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = gmm.fit_predict(z)
    if len(set(labels.tolist())) < 2:
        return none
    score = z[:, 0] + z[:, 1]
    cool_group = int(np.argmax([score[labels == g].mean() for g in (0, 1)]))
    group[ok] = labels
    cool[ok] = labels == cool_group
    prob[ok] = gmm.predict_proba(z)[:, cool_group]
    silhouette = float(silhouette_score(z, labels)) if ok.sum() > 2 else math.nan
    return Classification(group, cool, prob, cool_group, silhouette)


def find_odd_regions(radius: np.ndarray, hr: np.ndarray, log_sb_rel: np.ndarray, *, n_neighbors: int = 20
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Flag regions whose hardness or surface brightness is odd for their scaled radius.

    :class:`~sklearn.neighbors.LocalOutlierFactor` with the library's
    automatic threshold on the robust-scaled (median/IQR) features.

    Parameters
    ----------
    radius : numpy.ndarray
        Scaled radius of each region (r/r500 or arcmin).
    hr : numpy.ndarray
        Hardness ratio.
    log_sb_rel : numpy.ndarray
        log₁₀ of the region's surface brightness over its cluster's outer surface brightness.
    n_neighbors : int, optional
        LOF neighbours (at most the number of usable regions − 1).

    Returns
    -------
    odd : numpy.ndarray of bool
        Flag per region (False where a feature is missing).
    score : numpy.ndarray
        LOF outlier factor (NaN where a feature is missing).
    """
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.preprocessing import RobustScaler

    x = np.column_stack([radius, hr, log_sb_rel]).astype(np.float64)
    ok = np.isfinite(x).all(axis=1)
    odd = np.zeros(len(x), dtype=bool)
    score = np.full(len(x), np.nan)
    if ok.sum() < 5:
        return odd, score
    z = RobustScaler().fit_transform(x[ok])
    lof = LocalOutlierFactor(n_neighbors=min(n_neighbors, int(ok.sum()) - 1))
    with warnings.catch_warnings():
        # many identical regions (e.g. copied rows) make LOF warn; their scores are still defined (1)
        warnings.filterwarnings("ignore", message="Duplicate values", category=UserWarning)
        odd[ok] = lof.fit_predict(z) == -1
    score[ok] = -lof.negative_outlier_factor_
    return odd, score


def hardness_profile(radius: np.ndarray, hr: np.ndarray, hr_err: np.ndarray, edges: np.ndarray) -> pa.Table:
    """Sample-wide hardness against scaled radius: weighted mean hr in radial bins.

    Returns
    -------
    pyarrow.Table
        ``r_lo, r_hi, n_regions, hr_mean, hr_mean_err`` (weighted by 1/hr_err²) and ``hr_scatter``
        (unweighted standard deviation of the regions' hr).
    """
    rows: dict[str, list[Any]] = {k: [] for k in ("r_lo", "r_hi", "n_regions", "hr_mean", "hr_mean_err",
                                                   "hr_scatter")}
    for lo, hi in itertools.pairwise(edges):
        m = (radius >= lo) & (radius < hi) & np.isfinite(hr)
        mean, err = _weighted_mean(hr[m], hr_err[m])
        rows["r_lo"].append(float(lo))
        rows["r_hi"].append(float(hi))
        rows["n_regions"].append(int(m.sum()))
        rows["hr_mean"].append(mean)
        rows["hr_mean_err"].append(err)
        rows["hr_scatter"].append(float(np.std(hr[m])) if m.sum() > 1 else math.nan)
    cols = [("r_lo", pa.float64()), ("r_hi", pa.float64()), ("n_regions", pa.int64()), ("hr_mean", pa.float64()),
            ("hr_mean_err", pa.float64()), ("hr_scatter", pa.float64())]
    return _arrow(rows, cols)


# ------------------------------------------------------------------------------------------------ reading
def _has_table(store: Store, name: str) -> bool:
    rows = store.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = $t", {"t": name})
    return bool(rows.column("n")[0].as_py())


def _pick_run(store: Store, run_id: str | None) -> str:
    for t in ("clusters", "regions"):
        if not _has_table(store, t):
            msg = (f"{store.path}: no {t} table, so no bulk run is recorded here; run `xmine run SAMPLE` "
                   "first or give the store of that run (--db)")
            raise InputError(msg)
    recorded = [r["run_id"] for r in store.query(
        "SELECT run_id, max(recorded_at) AS t FROM clusters GROUP BY run_id ORDER BY t DESC").to_pylist()]
    if run_id is None:
        finished: list[str] = []
        if _has_table(store, "runs"):
            finished = [r["run_id"] for r in store.query(
                "SELECT run_id FROM runs WHERE status LIKE 'finished%' ORDER BY finished DESC").to_pylist()]
        chosen = next((r for r in finished if r in recorded), None)
        if chosen is None:
            msg = (f"{store.path}: no finished run has results in the clusters table; finish a run with "
                   "`xmine run SAMPLE` or give a RUN_ID")
            raise InputError(msg)
        return chosen
    if run_id not in recorded:
        known = ", ".join(recorded[:5]) + (" …" if len(recorded) > 5 else "") if recorded else "none"
        msg = f"{store.path}: no results for run {run_id!r} (runs with results: {known}); check the RUN_ID"
        raise InputError(msg)
    return run_id


@dataclass
class StudyResult:
    """What :func:`study_run` made.

    Attributes
    ----------
    run_id : str
    out_dir : Path
    radius_scale : {"r500", "arcmin"}
        The radius used for inner/outer ranges, gradients and the sample's hardness profile.
    clusters : pyarrow.Table
        The per-cluster summary with group labels (as written to ``study_clusters``).
    regions : pyarrow.Table
        Per-region scaled radius, hr, relative sb and odd-region flags (as in ``study_regions``).
    hardness : pyarrow.Table
        Weighted mean hr in bins of scaled radius over the whole sample.
    cool_core_group : int
        The cool-core-like group number (−1 when no classification was possible).
    silhouette : float
        Mean silhouette of the two groups (see :class:`Classification`).
    report : Path
        ``index.html``.
    plots : dict of str to Path
        ``sky``, ``profiles``, ``hardness``, and ``map:<cluster>`` for each bin map.
    notes : list of str
        What was skipped and why.
    """

    run_id: str
    out_dir: Path
    radius_scale: str
    clusters: pa.Table
    regions: pa.Table
    hardness: pa.Table
    cool_core_group: int
    report: Path
    silhouette: float = math.nan
    plots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary_rows(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Return printable columns and rows of the per-cluster summary."""
        slope = "hr_slope_per_r500" if self.radius_scale == "r500" else "hr_slope_per_arcmin"
        cols = ["cluster", "bins", "sb min", "sb max", "log c_sb", "hr in", "hr out", f"d(hr)/d({self._unit()})",
                "kT in/out", "group", "odd"]
        rows = []
        for r in self.clusters.to_pylist():
            g = "-" if r["grp"] is None else ("CC-like" if r["cool_core_like"] else "NCC-like")
            rows.append((r["cluster"], r["n_bins"], _fmt(r["sb_min_cps_arcsec2"]), _fmt(r["sb_max_cps_arcsec2"]),
                         _fmt(r["log10_concentration"], 2), _fmt(r["hr_inner"], 2), _fmt(r["hr_outer"], 2),
                         f"{_fmt(r[slope], 3)} ± {_fmt(r[slope + '_err'], 3)}", _fmt(r["kt_ratio"], 2), g,
                         r["n_odd_regions"]))
        return cols, rows

    def _unit(self) -> str:
        return "r/r500" if self.radius_scale == "r500" else "r_arcmin"


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.{digits}f}"
    return str(v)


def study_run(store_path: str | os.PathLike[str], run_id: str | None = None, *,
              out_dir: str | os.PathLike[str] | None = None, seed: int = 0, cluster_maps: bool = True,
              write_back: bool = True) -> StudyResult:
    """Study one run: summaries, classification, odd regions, plots, an HTML report, and the study tables.

    Parameters
    ----------
    store_path : path-like
        The DuckDB store holding the run's ``clusters``/``regions``/``profiles``.
    run_id : str, optional
        The run; default the latest finished run with results.
    out_dir : path-like, optional
        Folder for the PNGs and ``index.html`` (created); default ``study/<run_id>`` beside the store.
    seed : int, optional
        Seed of the classification's starts.
    cluster_maps : bool, optional
        Also draw each cluster's bin map over its counts image (reads its products).
    write_back : bool, optional
        Write ``study_clusters`` and ``study_regions`` to the store (one transaction, replacing
        this run's rows). The store is opened writable only for that moment.

    Returns
    -------
    StudyResult

    Raises
    ------
    xmine.errors.InputError
        No results tables, an unknown run, or a run without regions (one line naming the store and run).
    xmine.errors.CacheError
        The store is missing, unreadable, or (to write back) held by another writer.
    """
    with open_store(store_path, read_only=True, wait_s=30.0) as store:
        rid = _pick_run(store, run_id)
        clusters = store.query("SELECT * FROM clusters WHERE run_id = $r AND status = 'done' ORDER BY cluster",
                               {"r": rid})
        regions = store.query("SELECT * FROM regions WHERE run_id = $r ORDER BY cluster, bin_id", {"r": rid})
        profiles = (store.query("SELECT * FROM profiles WHERE run_id = $r ORDER BY cluster, annulus", {"r": rid})
                    if _has_table(store, "profiles") else None)
        fits = (store.query("SELECT cluster, bin_id, kt_kev, (kt_hi - kt_lo) / 2 AS kt_err FROM region_fits "
                            "WHERE run_id = $r AND kt_hi > kt_lo", {"r": rid})
                if _has_table(store, "region_fits") else None)
    if regions.num_rows == 0:
        msg = f"{store_path}: run {rid} has no regions (no cluster was binned and measured); nothing to study"
        raise InputError(msg)
    out = Path(out_dir) if out_dir is not None else Path(store_path).parent / "study" / rid
    notes: list[str] = []
    regions, kept = bin_radii(regions, clusters)
    regions = _with_temperatures(regions, fits)
    if kept:
        notes.append(f"no bin map for {', '.join(kept[:10])}{' …' if len(kept) > 10 else ''}: their radii are "
                     "the recorded centroid distances")
    r500_known = np.isfinite(_col(regions, "r_r500"))
    scale = "r500" if r500_known.all() else "arcmin"
    if scale == "arcmin" and r500_known.any():
        notes.append("some clusters have no R500: radii are in arcmin for all clusters")
    summary = summarise_clusters(regions, radius_scale=scale, run_id=rid)
    split = classify_clusters(summary, seed=seed)
    group, cool, prob, cool_group = split.group, split.cool_core_like, split.p_cool_core_like, split.cool_group
    if cool_group < 0:
        notes.append("fewer than four clusters with every feature (or one group only): no classification")
    else:
        verdict = "clear" if split.silhouette >= 0.5 else ("weak" if split.silhouette >= 0.25 else "no real")
        notes.append(f"the two groups have a mean silhouette of {split.silhouette:.2f} ({verdict} split; a "
                     "mixture makes two groups even of one population)")

    # regions: scaled radius, relative sb, odd flags
    names = _col(regions, "cluster", object)
    radius = _radius(regions, scale)
    sb = _col(regions, "sb_cps_arcsec2")
    hr, hr_err = _col(regions, "hr"), _col(regions, "hr_err")
    outer_sb = dict(zip(summary.column("cluster").to_pylist(),
                        _col(summary, "sb_outer_cps_arcsec2").tolist(), strict=True))
    ref = np.array([outer_sb.get(n, math.nan) for n in names], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_rel = np.where((sb > 0) & (ref > 0), np.log10(sb / ref), np.nan)
    odd, odd_score = find_odd_regions(radius, hr, log_rel)
    region_rows = {
        "run_id": [rid] * regions.num_rows, "cluster": names.tolist(),
        "bin_id": [int(v) for v in regions.column("bin_id").to_pylist()], "radius": radius.tolist(),
        "radius_scale": [scale] * regions.num_rows, "hr": hr.tolist(), "hr_err": hr_err.tolist(),
        "sb_cps_arcsec2": sb.tolist(), "log10_sb_rel_outer": log_rel.tolist(), "odd": odd.tolist(),
        "odd_score": odd_score.tolist(),
    }
    study_regions = _arrow(region_rows, _REGION_COLUMNS)
    n_odd = {n: int(odd[names == n].sum()) for n in set(names.tolist())}
    cl_names = summary.column("cluster").to_pylist()
    summary = summary.set_column(summary.schema.get_field_index("grp"), "grp",
                                 pa.array([None if g < 0 else int(g) for g in group], pa.int64()))
    summary = summary.set_column(summary.schema.get_field_index("cool_core_like"), "cool_core_like",
                                 pa.array([None if g < 0 else bool(c) for g, c in zip(group, cool, strict=True)],
                                          pa.bool_()))
    summary = summary.set_column(summary.schema.get_field_index("p_cool_core_like"), "p_cool_core_like",
                                 pa.array([None if not np.isfinite(p) else float(p) for p in prob], pa.float64()))
    summary = summary.set_column(summary.schema.get_field_index("n_odd_regions"), "n_odd_regions",
                                 pa.array([n_odd.get(n, 0) for n in cl_names], pa.int64()))
    edges = np.array([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0]) if scale == "r500" else \
        np.array([0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0])
    hardness = hardness_profile(radius, hr, hr_err, edges)

    out.mkdir(parents=True, exist_ok=True)
    result = StudyResult(run_id=rid, out_dir=out, radius_scale=scale, clusters=summary, regions=study_regions,
                         hardness=hardness, cool_core_group=cool_group, report=out / "index.html", notes=notes,
                         silhouette=split.silhouette)
    result.plots["sky"] = _plot_sky(out / "sky.png", clusters, summary)
    result.plots["profiles"] = _plot_profiles(out / "profiles.png", profiles, regions, summary, scale=scale)
    result.plots["hardness"] = _plot_hardness(out / "hardness_radius.png", study_regions, hardness, summary,
                                              unit=result._unit())
    if cluster_maps:
        for row in clusters.to_pylist():
            path = _plot_bin_map(out / "maps" / f"{row['cluster']}.png", row, regions)
            if path is None:
                notes.append(f"{row['cluster']}: no counts image or bin map under {row.get('products_dir')}; "
                             "no bin map drawn")
            else:
                result.plots[f"map:{row['cluster']}"] = path
    _write_report(result)
    if write_back:
        _write_tables(store_path, rid, summary, study_regions)
    return result


# ------------------------------------------------------------------------------------------------ plots
_GROUP_COLOURS = {True: "#d62728", False: "#1f77b4", None: "#7f7f7f"}
_GROUP_LABELS = {True: "cool-core-like", False: "non-cool-core-like", None: "unclassified"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _cool_by_cluster(summary: pa.Table) -> dict[str, bool | None]:
    return dict(zip(summary.column("cluster").to_pylist(), summary.column("cool_core_like").to_pylist(),
                    strict=True))


def _plot_sky(path: Path, clusters: pa.Table, summary: pa.Table) -> Path:
    """Draw the sample on the sky (Mollweide, RA increasing to the left), coloured by group."""
    plt = _pyplot()
    cool = _cool_by_cluster(summary)
    fig = plt.figure(figsize=(8, 4.5))
    ax = fig.add_subplot(111, projection="mollweide")
    names = clusters.column("cluster").to_pylist()
    ra, dec = _col(clusters, "ra_deg"), _col(clusters, "dec_deg")
    lon = -np.radians(((ra + 180.0) % 360.0) - 180.0)
    for flag in (True, False, None):
        m = np.array([cool.get(n) is flag for n in names], dtype=bool)
        if m.any():
            ax.scatter(lon[m], np.radians(dec[m]), s=25, color=_GROUP_COLOURS[flag], label=_GROUP_LABELS[flag])
    if len(names) <= 30:
        for n, x, y in zip(names, lon, np.radians(dec), strict=True):
            ax.annotate(n, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xticks(np.radians(np.arange(-150, 181, 60)))
    ax.set_xticklabels([f"{(-d) % 360:.0f}°" for d in range(-150, 181, 60)])
    ax.grid(True, alpha=0.4)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(f"{len(names)} clusters (ICRS)")
    return _save(fig, path)


def _r500_arcmin(regions: pa.Table) -> dict[str, float]:
    """R500 in arcmin per cluster, from the regions' r_arcmin / r_r500 (the run's own cosmology)."""
    names = _col(regions, "cluster", object)
    ra, rr = _col(regions, "r_arcmin"), _col(regions, "r_r500")
    out = {}
    for n in set(names.tolist()):
        m = (names == n) & np.isfinite(ra) & np.isfinite(rr) & (rr > 0)
        if m.any():
            out[n] = float(np.median(ra[m] / rr[m]))
    return out


def _plot_profiles(path: Path, profiles: pa.Table | None, regions: pa.Table, summary: pa.Table, *,
                   scale: str) -> Path:
    """Draw the surface-brightness profiles of every cluster (from ``profiles``), coloured by group."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    cool = _cool_by_cluster(summary)
    r500 = _r500_arcmin(regions) if scale == "r500" else {}
    drawn = 0
    if profiles is not None and profiles.num_rows:
        names = _col(profiles, "cluster", object)
        r = _col(profiles, "r_mean_arcsec") / 60.0
        sb = _col(profiles, "sb_cps_arcsec2")
        lo, hi = _col(profiles, "sb_cps_err_lo"), _col(profiles, "sb_cps_err_hi")
        seen: set[Any] = set()
        for n in sorted(set(names.tolist())):
            m = (names == n) & (sb > 0) & np.isfinite(r) & (r > 0)
            if not m.any() or (scale == "r500" and n not in r500):
                continue
            x = r[m] / r500[n] if scale == "r500" else r[m]
            flag = cool.get(n)
            ax.errorbar(x, sb[m], yerr=[np.minimum(np.nan_to_num(lo[m]), 0.999 * sb[m]), np.nan_to_num(hi[m])],
                        color=_GROUP_COLOURS[flag], alpha=0.6, lw=1, marker=".", ms=3,
                        label=None if flag in seen else _GROUP_LABELS[flag])
            seen.add(flag)
            drawn += 1
    if drawn:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no surface-brightness profiles in this run", ha="center", transform=ax.transAxes)
    ax.set_xlabel("r / r500" if scale == "r500" else "r (arcmin)")
    ax.set_ylabel("surface brightness (counts s$^{-1}$ arcsec$^{-2}$, 0.5–7 keV)")
    ax.set_title(f"radial profiles of {drawn} clusters")
    return _save(fig, path)


def _plot_hardness(path: Path, regions: pa.Table, hardness: pa.Table, summary: pa.Table, *, unit: str) -> Path:
    """Draw the hardness ratio of every region against scaled radius; odd regions ringed; the weighted mean in bins."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    cool = _cool_by_cluster(summary)
    names = _col(regions, "cluster", object)
    r, hr, err = _col(regions, "radius"), _col(regions, "hr"), _col(regions, "hr_err")
    odd = np.array(regions.column("odd").to_pylist(), dtype=bool)
    flags = np.array([cool.get(n) for n in names], dtype=object)
    positive = np.isfinite(r) & (r > 0)
    for flag in (True, False, None):
        m = np.array([f is flag for f in flags], dtype=bool) & positive & np.isfinite(hr)
        if m.any():
            ax.errorbar(r[m], hr[m], yerr=np.nan_to_num(err[m]), fmt="o", ms=3, lw=0.5, alpha=0.5,
                        color=_GROUP_COLOURS[flag], label=_GROUP_LABELS[flag])
    m = odd & positive & np.isfinite(hr)
    if m.any():
        ax.scatter(r[m], hr[m], s=80, facecolors="none", edgecolors="k", label="odd region")
    mid = np.sqrt(np.clip(_col(hardness, "r_lo"), 1e-3, None) * _col(hardness, "r_hi"))
    mean, merr = _col(hardness, "hr_mean"), _col(hardness, "hr_mean_err")
    ok = np.isfinite(mean)
    if ok.any():
        ax.errorbar(mid[ok], mean[ok], yerr=merr[ok], fmt="s-", color="k", ms=5, label="weighted mean")
    if positive.any():
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel(unit)
    ax.set_ylabel("hardness ratio (H−S)/(H+S)")
    ax.set_title("hardness against scaled radius, all regions")
    return _save(fig, path)


def _product(products_dir: str | None, *names: str) -> Path | None:
    if not products_dir:
        return None
    for n in names:
        p = Path(products_dir) / n
        if p.exists():
            return p
    return None


def _plot_bin_map(path: Path, cluster: dict[str, Any], regions: pa.Table) -> Path | None:
    """Draw one cluster's counts image with its bin outlines, and the bins coloured by hardness ratio."""
    from astropy.io import fits

    counts_path = _product(cluster.get("products_dir"), "crop/counts.fits")
    binmap_path = _product(cluster.get("products_dir"), "contbin/binmap.fits", "contbin/contbin_binmap.fits")
    if counts_path is None or binmap_path is None:
        return None
    plt = _pyplot()
    image = np.asarray(fits.getdata(counts_path), dtype=float)
    binmap = np.asarray(fits.getdata(binmap_path)).astype(np.int64)
    names = _col(regions, "cluster", object)
    sel = names == cluster["cluster"]
    ids = np.array(regions.column("bin_id").to_pylist(), dtype=object)[sel]
    hr = _col(regions, "hr")[sel]
    lut = np.full(int(max(binmap.max(), 0)) + 2, np.nan)
    for b, h in zip(ids, hr, strict=True):
        if b is not None and 0 <= int(b) < lut.size - 1:
            lut[int(b)] = h
    coloured = np.where(binmap >= 0, lut[np.clip(binmap, 0, lut.size - 1)], np.nan)
    edges = np.zeros(binmap.shape, dtype=bool)
    edges[:, 1:] |= binmap[:, 1:] != binmap[:, :-1]
    edges[1:, :] |= binmap[1:, :] != binmap[:-1, :]
    edge_img = np.where(edges, 1.0, np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))  # no layout engine: one per cluster, kept cheap
    fig.subplots_adjust(left=0.06, right=0.93, bottom=0.1, top=0.88, wspace=0.2)
    axes[0].imshow(np.log1p(image), origin="lower", cmap="magma")
    axes[0].imshow(edge_img, origin="lower", cmap="cool", interpolation="nearest", alpha=0.8)
    axes[0].set_title("counts (log) and bin outlines")
    if np.isfinite(coloured).any():
        im = axes[1].imshow(coloured, origin="lower", cmap="coolwarm")
        fig.colorbar(im, ax=axes[1], label="hardness ratio (H−S)/(H+S)")
    axes[1].imshow(edge_img, origin="lower", cmap="gray", interpolation="nearest")
    axes[1].set_title(f"{int(binmap.max()) + 1} bins by hardness")
    for ax in axes:
        ax.set_xlabel("image x")
    fig.suptitle(str(cluster["cluster"]))
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------ writing
def _write_tables(store_path: str | os.PathLike[str], run_id: str, clusters: pa.Table, regions: pa.Table) -> None:
    """Replace this run's rows of ``study_clusters``/``study_regions`` (one transaction, :mod:`xmine.results`)."""
    from xmine.results import record_run_tables

    try:
        store = open_store(store_path, wait_s=30.0)
    except CacheError as exc:
        msg = f"{exc}; the study's plots and report are written, its tables are not"
        raise CacheError(msg) from exc
    with store:
        record_run_tables(store, run_id, [("study_clusters", clusters, _SUMMARY_COLUMNS, ("run_id", "cluster")),
                                          ("study_regions", regions, _REGION_COLUMNS, ("run_id", "cluster", "bin_id"))])


def _html_table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _write_report(result: StudyResult) -> Path:
    """Write ``index.html``: the summary, the groups, odd regions and links to every plot (relative)."""
    def rel(p: Path) -> str:
        return html.escape(quote(os.path.relpath(p, result.out_dir).replace(os.sep, "/")))

    cols, rows = result.summary_rows()
    odd = [r for r in result.regions.to_pylist() if r["odd"]]
    odd.sort(key=lambda r: -(r["odd_score"] or 0.0))
    odd_rows = [(r["cluster"], r["bin_id"], _fmt(r["radius"]), _fmt(r["hr"], 2), _fmt(r["log10_sb_rel_outer"], 2),
                 _fmt(r["odd_score"], 2)) for r in odd[:50]]
    hard_rows = [(f"{r['r_lo']:g}–{r['r_hi']:g}", r["n_regions"], _fmt(r["hr_mean"], 3), _fmt(r["hr_mean_err"], 2),
                  _fmt(r["hr_scatter"], 2)) for r in result.hardness.to_pylist()]
    unit = result._unit()
    maps = [(k.split(":", 1)[1], p) for k, p in result.plots.items() if k.startswith("map:")]
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>xmine study of run {html.escape(result.run_id)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:90%}"
        "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}img{max-width:32%;margin:2px}</style>",
        "</head><body>",
        f"<h1>Population study of run {html.escape(result.run_id)}</h1>",
        f"<p>{result.clusters.num_rows} clusters, {result.regions.num_rows} regions; radius in {unit}. "
        "Surface brightness is a count rate per arcsec² (0.5–7 keV), hr = (H−S)/(H+S) with S 0.5–2 keV, "
        "H 2–7 keV. Groups: two-component Gaussian mixture over log concentration, hardness deficit and "
        "hardness slope; the cool-core-like group is the more concentrated and softer-centred.</p>",
        "".join(f"<p><em>{html.escape(n)}</em></p>" for n in result.notes),
        "<h2>Clusters</h2>", _html_table(cols, rows),
        "<h2>Plots</h2>",
        "".join(f"<a href='{rel(result.plots[k])}'><img src='{rel(result.plots[k])}' alt='{k}'></a>"
                for k in ("sky", "profiles", "hardness") if k in result.plots),
        f"<h2>Hardness against {unit} (all regions)</h2>",
        _html_table([unit, "regions", "hr (weighted mean)", "error", "scatter"], hard_rows),
        f"<h2>Odd regions ({len(odd)})</h2>",
        _html_table(["cluster", "bin", unit, "hr", "log sb/sb_outer", "LOF score"], odd_rows) if odd_rows
        else "<p>none</p>",
        "<h2>Bin maps</h2>",
        "".join(f"<a href='{rel(p)}'><img src='{rel(p)}' alt='{html.escape(n)}' title='{html.escape(n)}'></a>"
                for n, p in maps) or "<p>none drawn</p>",
        "</body></html>",
    ]
    with atomic_write(result.report) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return result.report
