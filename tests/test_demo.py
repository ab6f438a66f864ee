"""`xmine demo` end to end: simulate, select, process, bin, measure, record, study; a rerun resumes."""

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from regions import Regions

from xmine.cli import main
from xmine.store import open_store


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "xmine-demo"
    assert main(["--quiet", "demo", "--out", str(out)]) == 0
    return out


def test_demo_records_every_step(demo_dir):
    with open_store(demo_dir / "xmine.duckdb", read_only=True) as store:
        runs = store.query("SELECT run_id, kind, status, seed FROM runs").to_pylist()
        steps = store.query("SELECT item, step, status FROM steps ORDER BY item, step").to_pylist()
        failures = store.query("SELECT * FROM failures").num_rows
        clusters = store.query("SELECT cluster, status, n_bins FROM clusters ORDER BY cluster").to_pylist()
        regions = store.query("SELECT cluster, count(*) AS n, min(sn) AS sn_min, count(hr) AS n_hr, "
                              "count(*) FILTER (WHERE outline_fk5 LIKE 'polygon%') AS n_outline "
                              "FROM regions GROUP BY cluster ORDER BY cluster").to_pylist()
        files = [r["region_file"] for r in store.query("SELECT region_file FROM regions").to_pylist()]
        spectra = store.query("SELECT cluster, bin_id, count(*) AS n FROM region_spectra GROUP BY ALL").to_pylist()
    assert runs == [{"run_id": "demo-seed2026", "kind": "demo", "status": "finished", "seed": 2026}]
    assert failures == 0
    # the sky and the selection; per obsid archive and deflare; per cluster merge, masks, background, crop,
    # contbin, outlines, profile, measure, spectra
    assert len(steps) == 2 + 6 * 2 + 3 * 9
    assert {s["status"] for s in steps} == {"done"}
    assert [c["status"] for c in clusters] == ["done"] * 3
    # every bin of every cluster is a region row with its measurements, at the target S/N (20)
    assert [r["n"] for r in regions] == [c["n_bins"] for c in clusters]
    for r in regions:
        assert r["sn_min"] >= 0.99 * 20.0  # contbin never revisits scrubbed bins: a few may end just below
        assert r["n_hr"] == r["n_outline"] == r["n"]
    assert all(Path(f).is_file() for f in files)
    # two obsids and the combined spectrum for every bin
    assert {s["n"] for s in spectra} == {3}


def test_demo_study_finds_the_cool_core(demo_dir):
    with open_store(demo_dir / "xmine.duckdb", read_only=True) as store:
        rows = store.query("SELECT cluster, hr_inner, hr_outer FROM study_clusters ORDER BY hr_inner").to_pylist()
    assert (demo_dir / "study" / "index.html").exists()
    # the simulated cool core (SIM-COOLCORE at 10:00:30 +02:12:36) is the softest at its centre
    assert rows[0]["cluster"].startswith("2CXO_J100030")
    assert rows[0]["hr_outer"] > rows[0]["hr_inner"]


def test_demo_products_are_consistent(demo_dir):
    folders = sorted((demo_dir / "products" / "clusters").iterdir())
    # the three simulated clusters are found in the simulated catalogues, as extended CSC sources
    assert [f.name[-1] for f in folders] == ["X", "X", "X"]
    for folder in folders:
        image = fits.getdata(folder / "crop" / "counts.fits")
        binmap, header = fits.getdata(folder / "contbin" / "binmap.fits", header=True)
        assert binmap.shape == image.shape
        assert "LTV1" in header
        assert "CRVAL1" in header
        nbins = binmap.max() + 1
        assert nbins > 10  # thousands of counts at S/N 20 make dozens of bins
        regions = Regions.read(folder / "outlines" / "xaf_bins_fk5.reg", format="ds9")
        tags = {r.meta["tag"][0] for r in regions if "tag" in r.meta}
        assert len(tags) == nbins
        # every counted photon of a binned pixel belongs to exactly one bin
        assert np.isin(np.unique(binmap), np.arange(-1, nbins)).all()


def test_rerun_resumes_without_redoing(demo_dir, capsys):
    with open_store(demo_dir / "xmine.duckdb", read_only=True) as store:
        before = store.query("SELECT item, step, started FROM steps ORDER BY item, step").to_pylist()
    assert main(["demo", "--out", str(demo_dir)]) == 0
    printed = capsys.readouterr().out
    assert "reused 6 observations" in printed
    with open_store(demo_dir / "xmine.duckdb", read_only=True) as store:
        after = store.query("SELECT item, step, started FROM steps ORDER BY item, step").to_pylist()
    assert after == before
