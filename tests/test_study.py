"""Population studies: a simulated cool-core / non-cool-core sample through the real chain, then `xmine study`.

The sample (:func:`xmine.simulate.population.population_truth`) is simulated and run as ``xmine run`` runs it
(:func:`xmine.runner.run_sample`: pipeline, binning, measurement, one recorded transaction per cluster); the
study must find the injected split.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from astropy.table import Table

from xmine.config import load_config
from xmine.errors import InputError
from xmine.runner import load_sample, run_sample
from xmine.simulate.population import POPULATIONS, make_population, population_truth
from xmine.store import open_store
from xmine.study import find_odd_regions, fit_gradient, study_run

N_CLUSTERS = 10
RUN_ID = "pop-run"


def _insert(con, table: str, run_id: str, cluster: str, rows: list[dict]) -> None:
    for row in rows:
        cols = ["run_id", "cluster", *row]
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('$' + c for c in cols)})",
                    {"run_id": run_id, "cluster": cluster, **row})


@pytest.fixture(scope="module")
def population_run(tmp_path_factory):
    """A 10-cluster CC/NCC sample simulated, processed, measured and recorded in a results store."""
    root = tmp_path_factory.mktemp("population")
    made = make_population(root, N_CLUSTERS, seed=11, cluster_counts_per_obsid=3000.0, obsids_per_cluster=(2, 2))
    truth = made.truth
    catalog = Table.read(made.catalog)
    config = load_config(environ={}, overrides={
        "project": {"data_dir": str(root / "archive"), "work_dir": str(root / "work"),
                    "store": str(root / "xmine.duckdb")},
        "cache": {"offline": True}, "binning": {"sn": 15.0, "smoothsn": 15.0}, "spectra": {"enabled": False},
        "process": {"merge_size_arcmin": 8.0, "crop_radius_arcmin": 2.0, "binsize": 3.0, "bg_inner_arcmin": 3.0}})
    clusters, _ = load_sample(made.sample)
    summary = run_sample(clusters, config=config, catalog=catalog, run_id=RUN_ID, executor="serial")
    assert summary.done == N_CLUSTERS, summary.rows
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


def _synthetic_store(path, *, n_per_group: int = 4, seed: int = 4) -> None:
    """A results store of clusters without products, z or R500: CC-like (peaked, soft centre) and flat ones."""
    rng = np.random.default_rng(seed)
    with open_store(path) as store:
        store.start_run("run", {}, run_id="syn")
        for i in range(2 * n_per_group):
            cc = i < n_per_group
            name = f"SYN-{i:02d}"
            _insert(store.con, "clusters", "syn", name, [{"ra_deg": 10.0 + 5 * i, "dec_deg": -5.0 + i,
                                                          "status": "done", "n_bins": 20,
                                                          "recorded_at": dt.datetime.now(dt.UTC)}])
            r = np.sort(rng.uniform(0.05, 2.0, 20))  # arcmin
            rc = 0.1 if cc else 0.8
            sb = 1e-4 * (1 + (r / rc) ** 2) ** -1.5 * 10 ** rng.normal(0, 0.03, r.size)
            hr = (-0.5 + (0.15 * np.clip(r / 0.8, 0, 1) if cc else 0.0)) + rng.normal(0, 0.02, r.size)
            _insert(store.con, "regions", "syn", name, [
                {"bin_id": b, "area_arcsec2": 100.0, "sb_cps_arcsec2": float(sb[b]), "hr": float(hr[b]),
                 "hr_err": 0.02, "r_arcmin": float(r[b]), "r_r500": None} for b in range(r.size)])
            kt = np.where(r < 0.25, 3.0, 5.0) if cc else np.full(r.size, 5.0)  # fitted kT of every other bin
            _insert(store.con, "region_fits", "syn", name, [
                {"bin_id": b, "kt_kev": float(kt[b]), "kt_lo": float(kt[b]) - 0.3, "kt_hi": float(kt[b]) + 0.3}
                for b in range(0, r.size, 2)])
        store.finish_run("syn")


def test_study_in_arcmin_without_products(tmp_path):
    store = tmp_path / "syn.duckdb"
    _synthetic_store(store)
    with open_store(store) as st:  # a study table left by an older xmine, without the newer columns
        st.con.execute("CREATE TABLE study_clusters (run_id VARCHAR, cluster VARCHAR, n_bins BIGINT, "
                       "PRIMARY KEY (run_id, cluster))")
        st.con.execute("INSERT INTO study_clusters VALUES ('older', 'X', 3)")
    result = study_run(store, out_dir=tmp_path / "out")
    assert result.run_id == "syn"
    assert result.radius_scale == "arcmin"
    found = {r["cluster"]: r["cool_core_like"] for r in result.clusters.to_pylist()}
    assert found == {f"SYN-{i:02d}": i < 4 for i in range(8)}
    slopes = {r["cluster"]: r["hr_slope_per_arcmin"] for r in result.clusters.to_pylist()}
    assert all(slopes[f"SYN-{i:02d}"] > 0.04 for i in range(4)), slopes
    assert all(abs(slopes[f"SYN-{i:02d}"]) < 0.02 for i in range(4, 8)), slopes
    assert all(r["hr_slope_per_r500"] is None for r in result.clusters.to_pylist())
    assert any("no bin map" in n for n in result.notes)
    assert not [k for k in result.plots if k.startswith("map:")]
    assert result.plots["profiles"].exists()  # drawn with a note, as the run has no profiles
    html = result.report.read_text()
    assert "radius in r_arcmin" in html
    ratios = {r["cluster"]: r["kt_ratio"] for r in result.clusters.to_pylist()}
    assert all(ratios[f"SYN-{i:02d}"] == pytest.approx(0.6) for i in range(4)), ratios
    assert all(ratios[f"SYN-{i:02d}"] == pytest.approx(1.0) for i in range(4, 8)), ratios
    with open_store(store, read_only=True) as st:
        rows = st.query("SELECT run_id, count(*) AS n, count(kt_ratio) AS k FROM study_clusters GROUP BY run_id "
                        "ORDER BY run_id").to_pylist()
    assert rows == [{"run_id": "older", "n": 1, "k": 0}, {"run_id": "syn", "n": 8, "k": 8}]


def test_classification_of_alike_or_separate_clusters():
    from xmine.study import _SUMMARY_COLUMNS, _arrow, classify_clusters

    def summary(features):
        rows = {k: [None] * len(features) for k, _ in _SUMMARY_COLUMNS}
        rows.update(cluster=[f"C{i}" for i in range(len(features))], run_id=["r"] * len(features),
                    radius_scale=["r500"] * len(features))
        for i, (c, d, s) in enumerate(features):
            rows["log10_concentration"][i], rows["hr_deficit"][i], rows["hr_slope_per_r500"][i] = c, d, s
        return _arrow(rows, _SUMMARY_COLUMNS)

    alike = classify_clusters(summary([(1.0, 0.0, 0.0)] * 5))
    assert alike.cool_group == -1
    assert (alike.group == -1).all()
    rng = np.random.default_rng(2)
    two = [(1.5, 0.1, 0.6)] * 6 + [(0.5, 0.0, 0.0)] * 6
    split = classify_clusters(summary([tuple(np.add(f, rng.normal(0, 0.03, 3))) for f in two]))
    assert split.cool_core_like.tolist() == [True] * 6 + [False] * 6
    assert split.silhouette > 0.8
    one = classify_clusters(summary([tuple(v) for v in rng.normal(0, 1, (40, 3))]))
    assert one.silhouette < 0.5  # a mixture splits one population too, and the silhouette says so
    few = classify_clusters(summary([(1.0, 0.1, 0.2), (0.2, 0.0, 0.0), (None, 0.0, 0.0), (1.1, 0.1, 0.3)]))
    assert few.cool_group == -1  # three usable clusters: no classification


def test_ring_bins_get_the_mean_distance_of_their_pixels(tmp_path):
    import pyarrow as pa
    from astropy.io import fits
    from astropy.wcs import WCS

    from xmine.study import bin_radii

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [51.0, 51.0]  # the centre at 0-based pixel (50, 50)
    w.wcs.cdelt = [-1.0 / 3600.0, 1.0 / 3600.0]  # 1 arcsec pixels
    yy, xx = np.indices((101, 101))
    r = np.hypot(xx - 50, yy - 50)
    binmap = np.where(r < 10, 0, np.where(r < 30, 1, -1)).astype(np.int32)  # a disc and a ring around it
    (tmp_path / "contbin").mkdir()
    fits.writeto(tmp_path / "contbin" / "binmap.fits", binmap, w.to_header())
    clusters = pa.table({"cluster": ["A", "B"], "ra_deg": [150.0, 150.0], "dec_deg": [2.0, 2.0],
                         "products_dir": [str(tmp_path), None]})
    regions = pa.table({"cluster": ["A", "A", "B"], "bin_id": [0, 1, 0], "r_arcmin": [0.01, 0.01, 0.2],
                        "r_r500": [0.001, 0.001, 0.02]})
    out, kept = bin_radii(regions, clusters)
    r_arcmin = out.column("r_arcmin").to_pylist()
    assert r_arcmin[0] == pytest.approx(np.mean(r[r < 10]) / 60.0)
    assert r_arcmin[1] == pytest.approx(np.mean(r[(r >= 10) & (r < 30)]) / 60.0)  # not the centroid's 0.01
    assert out.column("r_r500").to_pylist()[1] == pytest.approx(r_arcmin[1] / 10.0)  # R500 = 10 arcmin kept
    assert kept == ["B"]
    assert r_arcmin[2] == 0.2
    # a measured mean distance in the table is used as it is
    measured = regions.append_column("r_mean_arcmin", pa.array([0.1, 0.3, 0.5]))
    out, kept = bin_radii(measured, clusters)
    assert out.column("r_arcmin").to_pylist() == [0.1, 0.3, 0.5]
    assert kept == []


@pytest.mark.slow
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
    assert result.silhouette > 0.5  # a clear split
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


@pytest.mark.slow
def test_an_injected_odd_region_is_flagged_across_the_sample(population_run, tmp_path):
    import shutil

    _root, _truth, config = population_run
    store_path = tmp_path / "copy.duckdb"
    shutil.copy(config.project.store, store_path)
    with open_store(store_path) as store:
        target = store.query("SELECT cluster, bin_id, hr FROM regions WHERE run_id = $r AND cluster = 'SIMPOP-001' "
                             "ORDER BY r_r500 DESC LIMIT 1 OFFSET 2", {"r": RUN_ID}).to_pylist()[0]
        store.con.execute("UPDATE regions SET hr = hr + 0.5 WHERE run_id = $r AND cluster = $c AND bin_id = $b",
                          {"r": RUN_ID, "c": target["cluster"], "b": target["bin_id"]})
    result = study_run(store_path, RUN_ID, out_dir=tmp_path / "s", cluster_maps=False, write_back=False)
    rows = [r for r in result.regions.to_pylist() if r["cluster"] == target["cluster"]]
    odd = {r["bin_id"]: (r["odd"], r["odd_score"]) for r in rows}
    assert odd[target["bin_id"]][0], odd
    assert odd[target["bin_id"]][1] == max(v[1] for v in odd.values())
    flagged = sum(r["odd"] for r in result.regions.to_pylist())
    assert flagged < 0.1 * result.regions.num_rows


@pytest.mark.slow
def test_study_errors_are_one_line(population_run, tmp_path):
    _root, _truth, config = population_run
    with pytest.raises(InputError, match="no results for run 'nope'"):
        study_run(config.project.store, "nope", out_dir=tmp_path)
    empty = tmp_path / "empty.duckdb"
    open_store(empty).close()
    with pytest.raises(InputError, match="no finished run has results"):
        study_run(empty, out_dir=tmp_path)
    with open_store(empty) as store:
        store.start_run("run", {}, run_id="r0")
        _insert(store.con, "clusters", "r0", "A", [{"status": "failed", "reason": "no obsid",
                                                    "recorded_at": dt.datetime.now(dt.UTC)}])
        store.finish_run("r0")
    with pytest.raises(InputError, match="run r0 has no regions"):
        study_run(empty, out_dir=tmp_path)


@pytest.fixture
def study_cli(population_run, tmp_path):
    """``xmine.cli.main`` and a project file naming the population's store."""
    from xmine.cli import main

    toml = tmp_path / "xmine.toml"
    toml.write_text(f'[project]\nstore = "{population_run[2].project.store}"\n')
    return main, toml, population_run[2].project.store


@pytest.mark.slow
def test_study_command_and_recipes(study_cli, tmp_path, capsys):
    main, toml, store_path = study_cli
    assert main(["--config", str(toml), "study", RUN_ID, "--out", str(tmp_path / "s"), "--no-maps"]) == 0
    out = capsys.readouterr().out
    assert "SIMPOP-001" in out
    assert "cool-core-like" in out
    assert str(tmp_path / "s" / "index.html") in out
    assert main(["--config", str(toml), "study", "no-such-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("xmine: error:")
    assert "no results for run 'no-such-run'" in err
    assert len(err.splitlines()) == 1
    # recipes on the same store (the hardness profile reads the study_regions the command wrote)
    assert main(["--config", str(toml), "sql", "study_sb_profiles", "-p", f"run_id={RUN_ID}",
                 "-p", "cluster=SIMPOP-004", "--out", str(tmp_path / "sb.csv")]) == 0
    sb = Table.read(tmp_path / "sb.csv", format="ascii.csv")
    assert len(sb) >= 5
    assert set(sb["cluster"]) == {"SIMPOP-004"}
    assert np.all(np.diff(sb["annulus"]) > 0)
    ok = np.isfinite(sb["r_mean_r500"])
    assert np.all(sb["r_mean_r500"][ok] < sb["r_mean_arcsec"][ok])  # R500 is arcminutes, so r/r500 < r/arcsec
    assert main(["--config", str(toml), "sql", "study_hardness_profiles", "-p", f"run_id={RUN_ID}",
                 "-p", "bin_width=0.05", "--out", str(tmp_path / "hr.csv")]) == 0
    hr = Table.read(tmp_path / "hr.csv", format="ascii.csv")
    assert set(hr["cluster"]) == {f"SIMPOP-{i:03d}" for i in range(1, N_CLUSTERS + 1)}
    assert np.all(hr["radius_hi"] - hr["radius_lo"] == pytest.approx(0.05))
    with open_store(store_path, read_only=True) as store:
        total = store.query("SELECT count(*) AS n FROM regions WHERE run_id = $r", {"r": RUN_ID}).to_pylist()[0]["n"]
        above = store.query("SELECT count(*) AS n FROM regions WHERE run_id = $r AND hr > -0.4",
                            {"r": RUN_ID}).to_pylist()[0]["n"]
    assert main(["--config", str(toml), "sql", "study_hard_regions", "-p", f"run_id={RUN_ID}",
                 "-p", "threshold=-0.4", "--out", str(tmp_path / "hard.csv")]) == 0
    hard = Table.read(tmp_path / "hard.csv", format="ascii.csv")
    assert 0 < len(hard) == above < total
    assert np.all(hard["hr"] > -0.4)
    assert np.all(np.diff(hard["hr"]) <= 0)

