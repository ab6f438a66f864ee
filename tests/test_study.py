"""Population studies: a simulated cool-core / non-cool-core sample through the pipeline, then `xmine study`.

The results tables are written here from the pipeline's real products (crop, contbin bin map, merged band
images) with per-bin sums, in the columns of the results schema, until the bulk runner records them itself.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from xmine import simulate
from xmine.config import load_config
from xmine.errors import InputError
from xmine.pipeline import ClusterSpec, process_cluster
from xmine.simulate.population import POPULATIONS, population_truth
from xmine.store import open_store
from xmine.study import find_odd_regions, fit_gradient, study_run

N_CLUSTERS = 10
RUN_ID = "pop-run"

_DDL = {
    "clusters": """CREATE TABLE IF NOT EXISTS clusters (run_id VARCHAR, cluster VARCHAR, ra_deg DOUBLE,
        dec_deg DOUBLE, z DOUBLE, r500_kpc DOUBLE, r500_source VARCHAR, tx_kev DOUBLE, obsids VARCHAR,
        n_obsids INTEGER, exposure_s DOUBLE, n_bins INTEGER, status VARCHAR, reason VARCHAR, products_dir VARCHAR,
        recorded_at TIMESTAMPTZ, PRIMARY KEY (run_id, cluster))""",
    "regions": """CREATE TABLE IF NOT EXISTS regions (run_id VARCHAR, cluster VARCHAR, bin_id INTEGER,
        n_pix INTEGER, area_arcsec2 DOUBLE, counts DOUBLE, bg_counts DOUBLE, net_counts DOUBLE, net_err DOUBLE,
        sn DOUBLE, exposure_mean_s DOUBLE, rate_cps DOUBLE, sb_cps_arcsec2 DOUBLE, sb_cps_arcsec2_err DOUBLE,
        soft_net DOUBLE, soft_err DOUBLE, hard_net DOUBLE, hard_err DOUBLE, hr DOUBLE, hr_err DOUBLE,
        x_pix DOUBLE, y_pix DOUBLE, ra_deg DOUBLE, dec_deg DOUBLE, r_arcmin DOUBLE, r_kpc DOUBLE, r_r500 DOUBLE,
        PRIMARY KEY (run_id, cluster, bin_id))""",
    "profiles": """CREATE TABLE IF NOT EXISTS profiles (run_id VARCHAR, cluster VARCHAR, annulus INTEGER,
        r_in_arcsec DOUBLE, r_out_arcsec DOUBLE, r_mean_arcsec DOUBLE, counts DOUBLE, sb_cps_arcsec2 DOUBLE,
        sb_cps_err_lo DOUBLE, sb_cps_err_hi DOUBLE, PRIMARY KEY (run_id, cluster, annulus))""",
}


def _crop_band(merged_path: str, *, ra: float, dec: float, radius_arcmin: float) -> np.ndarray:
    from xmine.images import crop_image

    data, header = fits.getdata(merged_path, header=True)
    return np.asarray(crop_image(data, header, ra_deg=ra, dec_deg=dec, radius_arcmin=radius_arcmin)[0], dtype=float)


def _band_share(result, spec: ClusterSpec, inner_arcmin: float) -> float:
    """Soft share of the background: soft / (soft + hard) counts beyond ``inner_arcmin`` in the merged images."""
    soft = fits.getdata(result.outputs["merge"]["soft"]).astype(float)
    hard = fits.getdata(result.outputs["merge"]["hard"]).astype(float)
    mask = fits.getdata(result.outputs["masks"]["mask"]) > 0
    ny, nx = soft.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    far = np.hypot(xx - (nx - 1) / 2, yy - (ny - 1) / 2) * 0.492 > inner_arcmin * 60.0
    s, h = soft[far & mask].sum(), hard[far & mask].sum()
    return float(s / (s + h)) if s + h > 0 else 0.5


def _measure(result, spec: ClusterSpec, *, r500_kpc: float, crop_arcmin: float, bg_inner_arcmin: float):
    """Per-bin sums over the bin map: the regions rows of one cluster (the results schema's columns)."""
    from astropy.cosmology import FlatLambdaCDM

    from xmine.masks import image_wcs

    crop = result.outputs["crop"]
    counts, header = fits.getdata(crop["counts"], header=True)
    counts = counts.astype(float)
    exposure = fits.getdata(crop["exposure"]).astype(float)
    bg = fits.getdata(crop["background"]).astype(float) / float(fits.getheader(crop["background"])["EXPOSURE"])
    binmap = fits.getdata(result.outputs["contbin"]["binmap"]).astype(int)
    soft = _crop_band(result.outputs["merge"]["soft"], ra=spec.ra_deg, dec=spec.dec_deg, radius_arcmin=crop_arcmin)
    hard = _crop_band(result.outputs["merge"]["hard"], ra=spec.ra_deg, dec=spec.dec_deg, radius_arcmin=crop_arcmin)
    share = _band_share(result, spec, bg_inner_arcmin)
    wcs = image_wcs(header)
    cx, cy = wcs.world_to_pixel_values(spec.ra_deg, spec.dec_deg)
    pix = 0.492 * float(header.get("CROPBIN", 1.0))
    kpc_per_arcmin = FlatLambdaCDM(H0=70, Om0=0.3).kpc_proper_per_arcmin(spec.z).value
    yy, xx = np.mgrid[0:binmap.shape[0], 0:binmap.shape[1]]
    rows = []
    for b in range(int(binmap.max()) + 1):
        m = binmap == b
        if not m.any():
            continue
        n, bgc = counts[m].sum(), bg[m].sum()
        net, err = n - bgc, math.sqrt(max(n, 1.0))
        expo = exposure[m].mean()
        area = m.sum() * pix * pix
        s_net = soft[m].sum() - share * bgc
        h_net = hard[m].sum() - (1 - share) * bgc
        s_err, h_err = math.sqrt(max(soft[m].sum(), 1.0)), math.sqrt(max(hard[m].sum(), 1.0))
        tot = s_net + h_net
        hr = (h_net - s_net) / tot
        hr_err = 2 * math.hypot(h_net * s_err, s_net * h_err) / tot**2
        x, y = xx[m].mean(), yy[m].mean()
        ra, dec = wcs.pixel_to_world_values(x, y)
        # a bin's radius: the mean distance of its pixels (a ring-shaped bin's centroid lies near the centre)
        r_arcmin = float(np.hypot(xx[m] - cx, yy[m] - cy).mean()) * pix / 60.0
        rows.append({"bin_id": b, "n_pix": int(m.sum()), "area_arcsec2": area, "counts": n, "bg_counts": bgc,
                     "net_counts": net, "net_err": err, "sn": net / err, "exposure_mean_s": expo,
                     "rate_cps": net / expo, "sb_cps_arcsec2": net / expo / area,
                     "sb_cps_arcsec2_err": err / expo / area, "soft_net": s_net, "soft_err": s_err,
                     "hard_net": h_net, "hard_err": h_err, "hr": hr, "hr_err": hr_err, "x_pix": x, "y_pix": y,
                     "ra_deg": float(ra), "dec_deg": float(dec), "r_arcmin": r_arcmin,
                     "r_kpc": r_arcmin * kpc_per_arcmin, "r_r500": r_arcmin * kpc_per_arcmin / r500_kpc})
    return rows


def _insert(con, table: str, run_id: str, cluster: str, rows: list[dict]) -> None:
    for row in rows:
        cols = ["run_id", "cluster", *row]
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('$' + c for c in cols)})",
                    {"run_id": run_id, "cluster": cluster, **row})


@pytest.fixture(scope="module")
def population_run(tmp_path_factory):
    """A 10-cluster CC/NCC sample simulated, processed and recorded in a results store."""
    root = tmp_path_factory.mktemp("population")
    truth = population_truth(N_CLUSTERS, seed=11, cluster_counts_per_obsid=5000.0)
    products = simulate.simulate_sky(truth, root / "archive", seed=11)
    catalog = Table.read(products.catalog_files["csc21/master_source.fits"])
    crop_arcmin, bg_inner = 2.0, 3.0
    config = load_config(environ={}, overrides={
        "project": {"data_dir": str(root / "archive"), "work_dir": str(root / "work"),
                    "store": str(root / "xmine.duckdb")},
        "cache": {"offline": True}, "binning": {"sn": 15.0, "smoothsn": 15.0},
        "process": {"merge_size_arcmin": 8.0, "crop_radius_arcmin": crop_arcmin, "binsize": 2.0,
                    "bg_inner_arcmin": bg_inner}})
    with open_store(config.project.store) as store:
        store.start_run("run", {"sample": "population"}, run_id=RUN_ID)
        for c in truth.clusters:
            obsids = tuple(int(o) for o in truth.observations["obsid"][truth.observations["cluster"] == c["name"]])
            spec = ClusterSpec(name=str(c["name"]), ra_deg=float(c["ra_deg"]), dec_deg=float(c["dec_deg"]),
                               obsids=obsids, z=float(c["z"]), r500_kpc=float(c["r500_kpc"]))
            res = process_cluster(spec, config=config, store=store, run_id=RUN_ID, catalog=catalog)
            regions = _measure(res, spec, r500_kpc=float(c["r500_kpc"]), crop_arcmin=crop_arcmin,
                               bg_inner_arcmin=bg_inner)
            prof = Table.read(res.outputs["profile"]["profile"]).filled(np.nan)
            with store.transaction() as con:
                for ddl in _DDL.values():
                    con.execute(ddl)
                _insert(con, "clusters", RUN_ID, spec.name, [{
                    "ra_deg": spec.ra_deg, "dec_deg": spec.dec_deg, "z": spec.z, "r500_kpc": spec.r500_kpc,
                    "r500_source": "sample", "tx_kev": float(c["kt_kev"]), "obsids": " ".join(map(str, obsids)),
                    "n_obsids": len(obsids), "exposure_s": 0.0, "n_bins": res.n_bins, "status": "done",
                    "reason": None, "products_dir": str(Path(res.outputs["crop"]["counts"]).parents[1]),
                    "recorded_at": dt.datetime.now(dt.UTC)}])
                _insert(con, "regions", RUN_ID, spec.name, regions)
                _insert(con, "profiles", RUN_ID, spec.name, [{
                    "annulus": i, "r_in_arcsec": float(p["r_in_arcsec"]), "r_out_arcsec": float(p["r_out_arcsec"]),
                    "r_mean_arcsec": float(p["r_mean_arcsec"]), "counts": float(p["counts"]),
                    "sb_cps_arcsec2": float(p["sb_cps_arcsec2"]), "sb_cps_err_lo": float(p["sb_cps_err_lo"]),
                    "sb_cps_err_hi": float(p["sb_cps_err_hi"])} for i, p in enumerate(prof)])
        store.finish_run(RUN_ID)
    return root, truth, config


def test_population_truth_has_the_documented_split():
    truth = population_truth(40, seed=5, cool_core_fraction=0.25)
    c = truth.clusters
    cc = c["population"] == POPULATIONS[0]
    assert cc.sum() == 10
    assert set(c["model"][cc]) == {"double_beta"}
    assert set(c["model"][~cc]) == {"beta"}
    assert np.all((c["core_kt_ratio"][cc] >= 0.5) & (c["core_kt_ratio"][cc] <= 0.6))
    assert np.all(c["rc_arcsec"][cc].max() < c["rc_arcsec"][~cc].min())
    obs_per = [np.sum(truth.observations["cluster"] == n) for n in c["name"]]
    assert min(obs_per) >= 2
    from astropy.coordinates import SkyCoord

    sky = SkyCoord(c["ra_deg"], c["dec_deg"], unit="deg")
    _, sep, _ = sky.match_to_catalog_sky(sky, nthneighbor=2)
    assert sep.deg.min() >= 2.0
    assert np.std(np.log10(c["rate_cps"])) > 0.2  # a luminosity function, not one brightness
    with pytest.raises(InputError, match=r"cool_core_fraction = 1\.5"):
        population_truth(3, seed=1, cool_core_fraction=1.5)


def test_gradient_fit_recovers_a_known_slope():
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 0.5, 200)
    err = rng.uniform(0.02, 0.08, x.size)
    slopes, pulls = [], []
    for _ in range(200):
        y = -0.2 + 0.6 * x + rng.normal(0.0, err)
        f = fit_gradient(x, y, err)
        slopes.append(f.slope)
        pulls.append((f.slope - 0.6) / f.slope_err)
    assert np.mean(slopes) == pytest.approx(0.6, abs=0.01)
    assert np.std(pulls) == pytest.approx(1.0, abs=0.15)  # the formal error is the right size
    bad = fit_gradient(np.array([1.0, 1.0]), np.array([0.0, 1.0]), np.ones(2))
    assert math.isnan(bad.slope)


def test_odd_region_detector_flags_an_injected_region():
    rng = np.random.default_rng(8)
    r = rng.uniform(0.01, 0.4, 400)
    hr = -0.3 + 0.4 * np.sqrt(r) + rng.normal(0.0, 0.03, r.size)
    sb = -2.5 * np.log10(r / 0.1) + rng.normal(0.0, 0.1, r.size)
    r[17], hr[17], sb[17] = 0.3, -0.6, 0.1  # too soft (and bright) for its radius
    odd, score = find_odd_regions(r, hr, sb)
    assert odd[17]
    assert score[17] == np.nanmax(score)
    assert odd.mean() < 0.05


def test_population_split_is_recovered(population_run, tmp_path):
    _root, truth, config = population_run
    result = study_run(config.project.store, out_dir=tmp_path / "study")
    assert result.run_id == RUN_ID
    assert result.radius_scale == "r500"
    truth_cc = {str(n): p == POPULATIONS[0] for n, p in zip(truth.clusters["name"], truth.clusters["population"],
                                                            strict=True)}
    found = {r["cluster"]: r["cool_core_like"] for r in result.clusters.to_pylist()}
    assert set(found) == set(truth_cc)
    names = sorted(truth_cc)
    right = np.mean([found[n] is truth_cc[n] for n in names])
    assert right >= 0.9, {n: (truth_cc[n], found[n]) for n in names}
    # the statistic discriminates: against shuffled labels it fails
    shuffled = np.random.default_rng(1).permutation([truth_cc[n] for n in names])
    assert np.mean([found[n] is bool(s) for n, s in zip(names, shuffled, strict=True)]) < 0.9
    # cool cores: softer centres, positive hardness gradients, more concentrated
    rows = {r["cluster"]: r for r in result.clusters.to_pylist()}
    cc = [rows[n] for n in names if truth_cc[n]]
    ncc = [rows[n] for n in names if not truth_cc[n]]
    assert np.median([r["hr_slope_per_r500"] for r in cc]) > 0
    assert np.median([r["hr_deficit"] for r in cc]) > np.median([r["hr_deficit"] for r in ncc])
    assert min(r["log10_concentration"] for r in cc) > np.median([r["log10_concentration"] for r in ncc])
    # products
    html = result.report.read_text()
    for key in ("sky", "profiles", "hardness"):
        assert result.plots[key].exists()
        assert result.plots[key].name in html
    maps = [k for k in result.plots if k.startswith("map:")]
    assert len(maps) == N_CLUSTERS
    assert "maps/SIMPOP-001.png" in html
    # written back, keyed by run, replaced on a rerun
    study_run(config.project.store, RUN_ID, out_dir=tmp_path / "study2", cluster_maps=False)
    with open_store(config.project.store, read_only=True) as store:
        n = store.query("SELECT count(*) AS n, count(DISTINCT cluster) AS c FROM study_clusters").to_pylist()[0]
        nr = store.query("SELECT count(*) AS n FROM study_regions WHERE run_id = $r", {"r": RUN_ID}).to_pylist()[0]
        nreg = store.query("SELECT count(*) AS n FROM regions").to_pylist()[0]
    assert n == {"n": N_CLUSTERS, "c": N_CLUSTERS}
    assert nr["n"] == nreg["n"]


def test_study_errors_are_one_line(population_run, tmp_path):
    _root, _truth, config = population_run
    with pytest.raises(InputError, match="no results for run 'nope'"):
        study_run(config.project.store, "nope", out_dir=tmp_path)
    empty = tmp_path / "empty.duckdb"
    open_store(empty).close()
    with pytest.raises(InputError, match="no clusters table"):
        study_run(empty, out_dir=tmp_path)
    with open_store(empty) as store:
        for ddl in _DDL.values():
            store.con.execute(ddl)
        store.start_run("run", {}, run_id="r0")
        _insert(store.con, "clusters", "r0", "A", [{"status": "failed", "reason": "no obsid",
                                                    "recorded_at": dt.datetime.now(dt.UTC)}])
        store.finish_run("r0")
    with pytest.raises(InputError, match="run r0 has no regions"):
        study_run(empty, out_dir=tmp_path)
