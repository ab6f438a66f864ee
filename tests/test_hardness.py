"""Hardness-variability tables, plots and XRB-candidate recipes against the simulated truth."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table

from xmine.cache import store_result
from xmine.errors import InputError, XmineWarning
from xmine.hardness import hardness_table, load_sources, run_hardness, xrb_candidates
from xmine.simulate.labels import make_labelled_sources
from xmine.store import open_store
from xmine.vo import to_arrow


def run_sources_cli(argv: list[str]) -> tuple[int, str]:
    """Run ``xmine sources …`` through xmine's own main (registering the module if the lead has not yet)."""
    import xmine.cli as cli

    mods = cli.COMMAND_MODULES
    if "xmine.cli.sources" not in mods:
        cli.COMMAND_MODULES = (*mods, "xmine.cli.sources")
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["sources", *argv])
    finally:
        cli.COMMAND_MODULES = mods
    return code, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def sky() -> Table:
    return make_labelled_sources(3000, seed=5)


def test_xrb_candidates_recover_hard_variable_sources(sky):
    cand = xrb_candidates(sky)
    cls = np.asarray(sky["class"])
    # truth: XRBs whose injected long-term variability is detectable (index >= 5 only for injected variables)
    variable_xrb = (cls == "XRB") & (np.ma.filled(sky["var_inter_index_b"], 0) >= 5)
    assert variable_xrb.sum() > 50
    assert np.mean(cand[variable_xrb]) > 0.85  # hardness with its counting noise keeps most of them
    assert np.mean(cls[cand] == "XRB") > 0.5  # XRBs are 15 % of the sky, most of the selection
    assert not np.any(cand & (cls == "cluster"))  # clusters are never variable
    assert np.mean(cls[cand] == "star") < 0.02  # stars are soft


def test_sql_recipe_and_cone_on_the_store(tmp_path, sky):
    with open_store(tmp_path / "x.duckdb") as store:
        store_result(store, "cache_sim_master", to_arrow(sky), service="simulated", catalogue="csc21",
                     query_text="simulated labelled set")
        rows = load_sources(store=store, recipe="sources_xrb_candidates",
                            params={"table": "cache_sim_master", "min_hard_hm": 0.0, "min_var_index": 5})
        expect = set(np.asarray(sky["name"])[xrb_candidates(sky)])
        assert set(np.asarray(rows["name"])) == expect
        cone = load_sources(store=store, cone=(150.0, 2.0, 0.3), table="cache_sim_master")
        sep = SkyCoord(np.asarray(sky["ra"]), np.asarray(sky["dec"]), unit="deg").separation(
            SkyCoord(150.0, 2.0, unit="deg")).deg
        assert set(np.asarray(cone["name"])) == set(np.asarray(sky["name"])[sep <= 0.3])
        with pytest.raises(InputError, match="exactly one"):
            load_sources(store=store)
        with pytest.raises(InputError, match="--table"):
            load_sources(store=store, cone=(150.0, 2.0, 0.1))


def test_table_keeps_nulls_and_conventions(sky):
    ht = hardness_table(sky)
    for c in ("hard_hs", "hard_ms", "hard_hm"):
        assert np.sum(~np.isfinite(np.asarray(np.ma.filled(ht[c], np.nan), float))) == np.ma.count_masked(sky[c])
        vals = np.ma.compressed(ht[c])
        assert vals.min() >= -1
        assert vals.max() <= 1
    single = np.ma.getmaskarray(sky["var_inter_prob_b"])
    assert np.all(np.isnan(ht["var_inter_colour"][single]))
    assert "probability" in ht["var_inter_colour"].description
    # without the probability column the index / 10 is used, and the label says so
    no_prob = sky.copy()
    del no_prob["var_inter_prob_b"]
    ht2 = hardness_table(no_prob)
    assert "index" in ht2["var_inter_colour"].description
    ok = ~single
    assert np.allclose(ht2["var_inter_colour"][ok], np.asarray(sky["var_inter_index_b"][ok], float) / 10)


def test_png_and_table_files(tmp_path, sky):
    res = run_hardness(sky, png=tmp_path / "hv.png", out_table=tmp_path / "hv.ecsv")
    assert res.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = Table.read(tmp_path / "hv.ecsv")
    assert len(back) == 3000
    assert int(np.sum(back["xrb_candidate"])) == res.n_candidates
    with pytest.raises(InputError, match="exists"):
        run_hardness(sky, out_table=tmp_path / "hv.ecsv", overwrite=False)


def test_errors_and_instrument_warning(sky):
    with pytest.raises(InputError, match="no hardness columns") as err:
        hardness_table(Table({"name": ["a"], "ra": [1.0], "dec": [2.0]}))
    assert "\n" not in str(err.value)
    mixed = sky[:50].copy()
    mixed["instrument"] = ["ACIS"] * 25 + ["HRC"] * 25
    with pytest.warns(XmineWarning, match="compare like with like"):
        hardness_table(mixed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hardness_table(sky[:50])


@pytest.mark.shared_data
def test_real_csc_table_without_hardness_is_one_line(shared_data):
    with pytest.raises(InputError, match="no hardness columns"):
        run_hardness(shared_data / "catalogs" / "csc20_ngc3532_conesearch.csv")


def test_cli_hardness(tmp_path, sky):
    sky.write(tmp_path / "sky.fits")
    code, out = run_sources_cli(["hardness", str(tmp_path / "sky.fits"), "--png", str(tmp_path / "p.png"),
                                 "--out", str(tmp_path / "t.csv")])
    assert code == 0
    assert "X-ray-binary candidates" in out
    assert (tmp_path / "p.png").exists()
    code, out = run_sources_cli(["hardness", str(tmp_path / "absent.fits"), "--store", str(tmp_path / "no.duckdb")])
    assert code == 1
    assert out.count("\n") == 1


def test_cli_simulate_store_cone_and_recipe(tmp_path):
    db = str(tmp_path / "x.duckdb")
    code, out = run_sources_cli(["simulate", "--out-dir", str(tmp_path / "demo"), "-n", "800", "--store", db])
    assert code == 0, out
    assert (tmp_path / "demo" / "epochs" / "new_sensitivity.fits").exists()
    code, out = run_sources_cli(["hardness", "--store", db, "--cone", "150", "2", "20", "--table", "sim_sources"])
    assert code == 0, out
    sky = Table.read(tmp_path / "demo" / "labelled.fits")
    n_in = int(np.sum(SkyCoord(sky["ra"], sky["dec"], unit="deg").separation(
        SkyCoord(150, 2, unit="deg")).arcmin <= 20))
    assert f"hardness of {n_in} sources" in out
    code, out = run_sources_cli(["hardness", "--store", db, "--recipe", "sources_xrb_candidates", "-p",
                                 "table=sim_sources", "-p", "min_hard_hm=0.2", "-p", "min_var_index=6",
                                 "--min-hard-hm", "0.2", "--min-var-index", "6"])
    assert code == 0, out
    n_cand = int(np.sum(xrb_candidates(sky, min_hard_hm=0.2, min_var_index=6)))
    assert f"hardness of {n_cand} sources" in out
    assert f">= 6.0): {n_cand}" in out  # every recipe row is a candidate under the same rule


def test_adql_recipes_render_for_the_csc_service():
    from xmine.recipes import Identifier, load_recipe, render_adql

    text = render_adql(load_recipe("sources_xrb_candidates_csc21"),
                       {"master_source": Identifier("csc21.master_source"), "min_hard_hm": 0.0, "min_var_index": 5})
    assert text.endswith("FROM csc21.master_source WHERE hard_hm >= 0.0 AND var_inter_index_b >= 5")
    text = render_adql(load_recipe("sources_hardness_variability"),
                       {"master_source": Identifier("csc21.master_source"), "min_significance": 3})
    assert "hard_hs, hard_ms, hard_hm" in text
    assert text.endswith("WHERE significance >= 3")
