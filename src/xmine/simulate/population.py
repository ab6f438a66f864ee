"""A simulated cluster population with a known cool-core / non-cool-core split.

:func:`population_truth` draws ``n_clusters`` well-separated clusters (at least
``min_separation_deg`` apart on the sky), each observed by two or more ACIS-I
pointings, with the population label in the truth: the clusters table gains
the columns ``population`` (``"cool_core"`` or ``"non_cool_core"``),
``r500_kpc`` and ``r500_arcsec``.

The two populations
-------------------
* **Cool core** (CC): ``model = "double_beta"``; a bright compact core (inner
  core radius 15–35 kpc, 35–55 % of the counts) at ``core_kt_ratio`` 0.5–0.6
  of the cluster kT, inside an outer β component of core radius 100–200 kpc.
* **Non-cool core** (NCC): ``model = "beta"``; one isothermal β component of
  core radius 150–350 kpc (``core_kt_ratio = 1``, unused by the model).

Both have β ∈ [0.6, 0.75], ellipticity ≤ 0.25, z uniform in ``z_range``,
kT log-uniform in ``kt_range_kev``.

Scalings and approximations (a simulation, not a fit to a survey)
-----------------------------------------------------------------
* Distances and angular scales: flat ΛCDM, H0 = 70, Ωm = 0.3 (astropy).
* R500 from kT: Arnaud, Pointecouteau & Pratt (2005),
  ``R500 = 1104 kpc · E(z)⁻¹ · (kT / 5 keV)^0.57``.
* Luminosity ∝ kT³ · E(z) with 0.15 dex log-normal scatter, CC clusters 1.5×
  brighter at the same kT; the on-axis 0.5–7 keV rate is that luminosity over
  4π D_L², normalised so a 5 keV NCC cluster at z = 0.15 gives ``rate_ref_cps``.
  No K-correction beyond the simulator's own redshifted spectrum.
* Exposure: each observation of a cluster gets ``cluster_counts_per_obsid /
  rate`` seconds with 0.1 dex scatter (as proposals ask for counts), clipped
  to 0.5–200 ks; ``cluster_counts_per_obsid`` therefore sets the events per
  obsid (plus about 0.45 ct/s of sky and particle background over ACIS-I).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from xmine.errors import InputError
from xmine.simulate.sky import SimulationProducts
from xmine.simulate.truth import Truth, _offset_deg, validate_truth

__all__ = ["POPULATIONS", "PopulationProducts", "make_population", "population_sample", "population_truth"]

#: Population labels written in the clusters table's ``population`` column.
POPULATIONS: tuple[str, str] = ("cool_core", "non_cool_core")

_H0, _OM0 = 70.0, 0.3


def _cosmology() -> object:
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=_H0, Om0=_OM0)


def _sky_positions(n: int, rng: np.random.Generator, min_sep_deg: float) -> list[tuple[float, float]]:
    """Draw ``n`` positions uniform on the sphere at |Dec| < 70°, at least ``min_sep_deg`` apart."""
    out: list[np.ndarray] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            msg = f"cannot place {n} clusters {min_sep_deg} deg apart; lower min_separation_deg"
            raise InputError(msg)
        ra = rng.uniform(0.0, 360.0)
        dec = math.degrees(math.asin(rng.uniform(-math.sin(math.radians(70)), math.sin(math.radians(70)))))
        v = np.array([math.cos(math.radians(dec)) * math.cos(math.radians(ra)),
                      math.cos(math.radians(dec)) * math.sin(math.radians(ra)), math.sin(math.radians(dec))])
        if out and np.max(np.stack(out) @ v) > math.cos(math.radians(min_sep_deg)):
            continue
        out.append(v)
    pos = []
    for v in out:
        ra = math.degrees(math.atan2(v[1], v[0])) % 360.0
        pos.append((ra, math.degrees(math.asin(float(np.clip(v[2], -1, 1))))))
    return pos


def population_truth(n_clusters: int, *, seed: int, cool_core_fraction: float = 0.5,
                     cluster_counts_per_obsid: float = 6000.0, obsids_per_cluster: tuple[int, int] = (2, 3),
                     z_range: tuple[float, float] = (0.1, 0.3), kt_range_kev: tuple[float, float] = (3.0, 9.0),
                     rate_ref_cps: float = 1.0, point_sources_per_field: int = 3, flare_fraction: float = 0.0,
                     first_obsid: int = 70001, min_separation_deg: float = 2.0, name_prefix: str = "SIMPOP"
                     ) -> Truth:
    """Return a truth of ``n_clusters`` clusters split into cool-core and non-cool-core populations.

    Parameters
    ----------
    n_clusters : int
        Number of clusters (≥ 1).
    seed : int
        Seed of every draw: the same arguments give the same truth.
    cool_core_fraction : float, optional
        Share of cool-core clusters; the count is ``round(n · fraction)``, shuffled over the sample.
    cluster_counts_per_obsid : float, optional
        Mean cluster counts (0.5–7 keV, on axis) per observation; sets the exposures and so the
        events per obsid and the processing time.
    obsids_per_cluster : (int, int), optional
        Inclusive range of the number of observations of each cluster (at least 2).
    z_range : (float, float), optional
        Redshift range (uniform).
    kt_range_kev : (float, float), optional
        Temperature range (log-uniform), keV.
    rate_ref_cps : float, optional
        On-axis 0.5–7 keV rate of a 5 keV non-cool-core cluster at z = 0.15, counts s⁻¹.
    point_sources_per_field : int, optional
        Point sources within 6′ of each cluster (rates log-uniform in 5×10⁻⁴–5×10⁻³ ct/s).
    flare_fraction : float, optional
        Share of observations with a background flare.
    first_obsid : int, optional
        ObsIDs are numbered from here.
    min_separation_deg : float, optional
        Smallest separation between clusters.
    name_prefix : str, optional
        Clusters are named ``<prefix>-001`` …; the name does not carry the label.

    Returns
    -------
    Truth
        Validated; the clusters table has the extra columns ``population``, ``r500_kpc`` and
        ``r500_arcsec``.

    Raises
    ------
    xmine.errors.InputError
        On a bad argument (named with its value).

    Examples
    --------
    >>> t = population_truth(4, seed=1)
    >>> sorted(set(t.clusters["population"]))
    ['cool_core', 'non_cool_core']
    """
    lo_obs, hi_obs = obsids_per_cluster
    checks = [
        (n_clusters >= 1, f"n_clusters = {n_clusters} must be at least 1"),
        (0.0 <= cool_core_fraction <= 1.0, f"cool_core_fraction = {cool_core_fraction} is outside [0, 1]"),
        (cluster_counts_per_obsid > 0, f"cluster_counts_per_obsid = {cluster_counts_per_obsid} must be positive"),
        (2 <= lo_obs <= hi_obs, f"obsids_per_cluster = {obsids_per_cluster}: give (lo, hi) with 2 <= lo <= hi"),
        (0 < z_range[0] <= z_range[1] <= 2, f"z_range = {z_range}: give 0 < lo <= hi <= 2"),
        (0.5 <= kt_range_kev[0] <= kt_range_kev[1] <= 20, f"kt_range_kev = {kt_range_kev}: give 0.5 <= lo <= hi <= 20"),
        (rate_ref_cps > 0, f"rate_ref_cps = {rate_ref_cps} must be positive"),
        (0.0 <= flare_fraction <= 1.0, f"flare_fraction = {flare_fraction} is outside [0, 1]"),
        (point_sources_per_field >= 0, f"point_sources_per_field = {point_sources_per_field} must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise InputError(msg)
    rng = np.random.default_rng(seed)
    cosmo = _cosmology()
    n_cc = round(n_clusters * cool_core_fraction)
    labels = np.array([POPULATIONS[0]] * n_cc + [POPULATIONS[1]] * (n_clusters - n_cc))
    rng.shuffle(labels)
    positions = _sky_positions(n_clusters, rng, min_separation_deg)
    z = rng.uniform(*z_range, n_clusters)
    kt = np.exp(rng.uniform(math.log(kt_range_kev[0]), math.log(kt_range_kev[1]), n_clusters))
    ez = np.asarray(cosmo.efunc(z))  # type: ignore[attr-defined]
    kpc_per_arcsec = np.asarray(cosmo.kpc_proper_per_arcmin(z).value) / 60.0  # type: ignore[attr-defined]
    d_l = np.asarray(cosmo.luminosity_distance(z).value)  # type: ignore[attr-defined]
    d_ref = float(cosmo.luminosity_distance(0.15).value)  # type: ignore[attr-defined]
    e_ref = float(cosmo.efunc(0.15))  # type: ignore[attr-defined]
    r500 = 1104.0 / ez * (kt / 5.0) ** 0.57
    cc = labels == POPULATIONS[0]
    lum = (kt / 5.0) ** 3 * (ez / e_ref) * 10 ** rng.normal(0.0, 0.15, n_clusters) * np.where(cc, 1.5, 1.0)
    rate = rate_ref_cps * lum * (d_ref / d_l) ** 2

    rows = []
    for i in range(n_clusters):
        scale = kpc_per_arcsec[i]
        beta = rng.uniform(0.6, 0.75)
        ell = rng.uniform(0.0, 0.25)
        pa = rng.uniform(0.0, 180.0)
        if cc[i]:
            model, rc = "double_beta", rng.uniform(15.0, 35.0) / scale
            rc2, core_frac, core_kt = rng.uniform(100.0, 200.0) / scale, rng.uniform(0.35, 0.55), rng.uniform(0.5, 0.6)
        else:
            model, rc = "beta", rng.uniform(150.0, 350.0) / scale
            rc2, core_frac, core_kt = math.nan, 0.3, 1.0
        rows.append((f"{name_prefix}-{i + 1:03d}", positions[i][0], positions[i][1], float(z[i]), model, float(rc),
                     float(beta), float(rate[i]), float(kt[i]), float(ell), float(pa), float(rc2), float(core_frac),
                     float(core_kt), str(labels[i]), float(r500[i]), float(r500[i] / scale)))
    names = ["name", "ra_deg", "dec_deg", "z", "model", "rc_arcsec", "beta", "rate_cps", "kt_kev", "ellipticity",
             "pa_deg", "rc2_arcsec", "core_frac", "core_kt_ratio", "population", "r500_kpc", "r500_arcsec"]
    clusters = Table(rows=rows, names=names)
    clusters["r500_kpc"].unit = "kpc"
    clusters["r500_arcsec"].unit = "arcsec"
    clusters["population"].description = "cool_core (double beta, cool compact core) or non_cool_core (isothermal β)"

    obs_rows, src_rows = [], []
    obsid = first_obsid
    for i, c in enumerate(clusters):
        n_obs = int(rng.integers(lo_obs, hi_obs + 1))
        for j in range(n_obs):
            if obsid > 99999:
                msg = f"first_obsid = {first_obsid} leaves too few obsids below 99999 for this sample; lower it"
                raise InputError(msg)
            r_off = rng.uniform(0.3, 1.5)
            ang = rng.uniform(0.0, 2 * math.pi)
            ra, dec = _offset_deg(float(c["ra_deg"]), float(c["dec_deg"]), r_off * math.sin(ang),
                                  r_off * math.cos(ang))
            expo = float(np.clip(cluster_counts_per_obsid / float(c["rate_cps"]) * 10 ** rng.normal(0.0, 0.1),
                                 500.0, 2.0e5))
            obs_rows.append((obsid, str(c["name"]), ra, dec, float(rng.uniform(0.0, 360.0)), "ACIS-I", expo,
                             bool(rng.random() < flare_fraction), 6.5e8 + 1.0e6 * i + 2.0e5 * j))
            obsid += 1
        for k in range(point_sources_per_field):
            r_arcmin = 6.0 * math.sqrt(rng.uniform(0.05, 1.0))
            ang = rng.uniform(0.0, 2 * math.pi)
            ra, dec = _offset_deg(float(c["ra_deg"]), float(c["dec_deg"]), r_arcmin * math.sin(ang),
                                  r_arcmin * math.cos(ang))
            src_rows.append((f"{c['name']}-P{k + 1:02d}", ra, dec, float(10 ** rng.uniform(math.log10(5e-4),
                                                                                         math.log10(5e-3))),
                             float(np.clip(rng.normal(1.7, 0.3), 0.8, 3.0)), str(c["name"])))
    observations = Table(rows=obs_rows, names=["obsid", "cluster", "ra_pnt", "dec_pnt", "roll_deg", "instrument",
                                               "exposure_s", "flare", "tstart"])
    points = (Table(rows=src_rows, names=["name", "ra_deg", "dec_deg", "rate_cps", "gamma", "cluster"])
              if src_rows else None)
    return validate_truth(clusters, points, observations)


def population_sample(truth: Truth) -> Table:
    """Return the cluster sample of a population truth as ``xmine run SAMPLE`` reads it.

    Columns ``name, ra_deg, dec_deg, obsids`` (space-separated), ``z``, ``r500_kpc``, ``tx_kev`` and the
    truth's ``population`` label (ignored by the runner; kept so a study can be checked against it).

    Parameters
    ----------
    truth : Truth
        From :func:`population_truth` (or any truth whose observations name their cluster).

    Returns
    -------
    astropy.table.Table
        One row per cluster with at least one observation; write it as CSV or ECSV.
    """
    c = truth.clusters
    obs = truth.observations
    rows = []
    for row in c:
        obsids = [int(o) for o in obs["obsid"][obs["cluster"] == row["name"]]]
        if not obsids:
            continue
        rows.append((str(row["name"]), float(row["ra_deg"]), float(row["dec_deg"]), " ".join(map(str, obsids)),
                     float(row["z"]), float(row["r500_kpc"]) if "r500_kpc" in c.colnames else math.nan,
                     float(row["kt_kev"]), str(row["population"]) if "population" in c.colnames else ""))
    return Table(rows=rows, names=["name", "ra_deg", "dec_deg", "obsids", "z", "r500_kpc", "tx_kev", "population"])


@dataclass
class PopulationProducts:
    """What :func:`make_population` wrote.

    Attributes
    ----------
    truth : Truth
    sample : Path
        ``<out_dir>/sample.csv``, the table ``xmine run`` reads (see :func:`population_sample`).
    catalog : Path
        The simulated CSC master sources, the point-source catalogue for ``xmine run --catalog``.
    sky : SimulationProducts
        The archive-like obsid folders under ``<out_dir>/archive`` (``project.data_dir``).
    """

    truth: Truth
    sample: Path
    catalog: Path
    sky: SimulationProducts


def make_population(out_dir: str | os.PathLike[str], n_clusters: int, *, seed: int, **truth_options: Any
                    ) -> PopulationProducts:
    """Simulate a population's observations and write the sample table a bulk run reads.

    Parameters
    ----------
    out_dir : path-like
        Folder for ``archive/`` (the simulated obsids and catalogues) and ``sample.csv``.
    n_clusters : int
    seed : int
        Seed of the truth and of the events.
    **truth_options
        Passed to :func:`population_truth` (``cluster_counts_per_obsid``, ``cool_core_fraction`` …).

    Returns
    -------
    PopulationProducts

    Examples
    --------
    Run it with ``xmine run OUT/sample.csv --catalog OUT/archive/catalogs/csc21/master_source.fits`` and
    ``project.data_dir = OUT/archive``.
    """
    from xmine.simulate.sky import simulate_sky
    from xmine.store import atomic_write

    out = Path(out_dir)
    truth = population_truth(n_clusters, seed=seed, **truth_options)
    sky = simulate_sky(truth, out / "archive", seed=seed)
    sample = out / "sample.csv"
    with atomic_write(sample) as tmp:
        population_sample(truth).write(tmp, format="ascii.csv")
    return PopulationProducts(truth=truth, sample=sample, catalog=sky.catalog_files["csc21/master_source.fits"],
                              sky=sky)
