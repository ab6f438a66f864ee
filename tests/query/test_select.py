"""Recipes, the common schema, and cluster / obsid / point-source selection against the local DaCHS server."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from regions import Regions

from xmine import select
from xmine.catalogs import COMMON_COLUMNS, to_common
from xmine.errors import CacheError, InputError, NoResultsWarning, QueryError
from xmine.recipes import Identifier, bound_sql, load_recipe, recipe_names, render_adql
from xmine.store import open_store

DACHS_DIR = Path(__file__).resolve().parents[1] / "servers" / "dachs"


# ---------------------------------------------------------------- recipes
def test_bundled_recipes_and_their_parameters():
    names = recipe_names()
    assert {"csc21_extended.adql", "xmm_extended.adql", "chandra_observations.adql", "csc21_master_obsids.adql",
            "cache_summary.sql"} <= set(names)
    r = load_recipe("xmm_extended")
    assert r.kind == "adql"
    assert set(r.params) == {"xmm_table", "quality_col", "min_extent", "min_ext_ml", "max_sum_flag"}
    text = render_adql(r, {"xmm_table": Identifier("xmmssc.catalogue"), "quality_col": Identifier("sum_flag"),
                           "min_extent": 0.0, "min_ext_ml": 10, "max_sum_flag": 0})
    assert "FROM xmmssc.catalogue WHERE sc_extent > 0.0 AND sc_ext_ml >= 10 AND sum_flag <= 0" in text
    assert "--" not in text


def test_recipe_errors():
    r = load_recipe("csc21_extended")
    with pytest.raises(InputError, match=r"parameter\(s\) :min_significance not given"):
        render_adql(r, {"master_source": Identifier("csc21.master_source")})
    with pytest.raises(InputError, match="no parameter"):
        render_adql(r, {"master_source": Identifier("a.b"), "min_significance": 3, "bogus": 1})
    with pytest.raises(InputError, match="numbers and identifiers only"):
        render_adql(r, {"master_source": Identifier("a.b"), "min_significance": "3; DROP TABLE x"})
    with pytest.raises(InputError, match="not a plain ADQL identifier"):
        Identifier("csc21.master_source; DROP")
    with pytest.raises(InputError, match=r"no query recipe 'nope'.*known: .*csc21_extended.adql"):
        load_recipe("nope")
    text, params = bound_sql(load_recipe("cache_summary"), {"catalogue": "csc21"})
    assert "$catalogue" in text
    assert "::DATE" in text
    assert params == {"catalogue": "csc21"}


def test_user_recipe_overrides(tmp_path):
    (tmp_path / "csc21_extended.adql").write_text("SELECT TOP :n name FROM :t\n")
    r = load_recipe("csc21_extended", [tmp_path])
    text = render_adql(r, {"n": 5, "t": Identifier("csc21.master_source")})
    assert text == "SELECT TOP 5 name FROM csc21.master_source"


def test_to_common_schema():
    ms = Table.read(DACHS_DIR / "csc21/data/master_source.csv", format="ascii.csv")
    xm = Table.read(DACHS_DIR / "xmm/data/epic_source_cat.csv", format="ascii.csv")
    a, b = to_common(ms, "csc21"), to_common(xm, "4xmm")
    assert a.column_names == b.column_names == list(COMMON_COLUMNS)
    assert a.schema == b.schema
    # CSC 95 % radius -> 1 sigma
    assert np.allclose(a.column("pos_err_1sigma").to_numpy(), np.asarray(ms["err_ellipse_r0"]) / 2.4477, rtol=1e-4)
    assert a.column("extended").to_pylist() == [str(n).endswith("X") for n in ms["name"]]
    assert b.column("extended").to_pylist() == [bool(v > 0) for v in xm["SC_EXTENT"]]
    assert b.column("quality").to_pylist() == list(xm["SUM_FLAG"])  # found through its alias
    assert a.schema.field("ra").metadata[b"unit"] == b"deg"
    assert set(a.column("flux_band_hi").to_pylist()) == {7.0}


# ---------------------------------------------------------------- selection on the server
@pytest.fixture
def services(dachs):
    return select.Services(csc_tap=dachs["tap"], xmm_tap=dachs["tap"], obs_tap=dachs["tap"],
                           xmm_table="xmmssc.catalogue", xmm_quality_col="sum_flag", obs_table="chandra.observations")


@pytest.mark.integration
def test_select_clusters_obsids_and_point_sources(services, server_truth, tmp_path):
    with open_store(tmp_path / "s.duckdb") as st:
        clusters = select.select_clusters(st, services)
        obs = select.load_observations(st, services)
        cov = select.observations_covering(clusters, obs)
        sel = select.select_point_sources(st, services, clusters, cov, out_dir=tmp_path / "regions")
    # every simulated cluster is found, once, near its true centre
    assert len(clusters) == 8
    assert all(n.endswith("X") for n in clusters["name"])
    assert set(clusters["origin"]) == {"csc+4xmm"}
    # each cluster is covered by exactly its own observations
    truth_obs = server_truth["observations"]
    assert sorted(cov["obsid"]) == sorted(int(o) for o in truth_obs["obsid"])
    assert len(sel.region_files) == len(cov)
    for f in sel.region_files:
        regs = Regions.read(f, format="ds9")
        assert len(regs) > 0
    src = sel.sources
    # the extended cluster source is listed but not masked; point sources are masked with PSF radii
    assert not src["masked"][src["extended"]].any()
    pts = src[~src["extended"]]
    assert pts["masked"].all()
    assert np.all(np.diff(pts["radius_arcsec"][np.argsort(pts["theta_arcmin"])]) > -20)
    far, near = pts["theta_arcmin"] > 6, pts["theta_arcmin"] < 2
    assert np.median(pts["radius_arcsec"][far]) > np.median(pts["radius_arcsec"][near])
    assert set(src["catalogue"]) <= {"csc21", "4xmm"}


@pytest.mark.integration
def test_core_sources_are_flagged_not_masked(services, tmp_path):
    clusters = Table({"name": ["C"], "ra_deg": [150.1252], "dec_deg": [2.2102], "xmm_extent_arcsec": [300.0]})
    with open_store(tmp_path / "s.duckdb") as st:
        obs = select.load_observations(st, services)
        cov = select.observations_covering(clusters, obs)
        sel = select.select_point_sources(st, services, clusters, cov, out_dir=tmp_path)
    src = sel.sources
    core = src["in_core"] & ~src["extended"]
    assert core.any()
    assert src["review"][core].all()
    assert not src["masked"][core].any()
    text = sel.region_files[0].read_text()
    assert "review" in text


@pytest.mark.integration
def test_second_selection_runs_offline(services, tmp_path):
    with open_store(tmp_path / "s.duckdb") as st:
        a = select.select_clusters(st, services)
        b = select.select_clusters(st, services, offline=True)
        assert list(a["name"]) == list(b["name"])
        with pytest.raises(CacheError, match="offline: nothing cached"):
            select.select_clusters(st, services, min_significance=4.0, offline=True)


@pytest.mark.integration
def test_unknown_table_in_recipe_is_a_query_error(services, tmp_path):
    bad = select.Services(**{**services.__dict__, "csc_master": "csc21.nosuchtable"})
    with open_store(tmp_path / "s.duckdb") as st, pytest.raises(QueryError, match="nosuchtable"):
        select.select_clusters(st, bad)


@pytest.mark.integration
def test_user_cluster_list(services, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("Name,RA,Dec,z\n#,deg,deg,\nA,150.1252,2.2102,0.06\nB,10.0,10.0,0.1\n")
    clusters = select.clusters_from_file(path)
    assert list(clusters["name"]) == ["A", "B"]
    assert "z" in clusters.colnames
    with open_store(tmp_path / "s.duckdb") as st:
        cov = select.observations_covering(clusters, select.load_observations(st, services))
    assert set(cov["cluster"]) == {"A"}


def test_cluster_list_errors(tmp_path):
    with pytest.raises(InputError, match="no such cluster list"):
        select.clusters_from_file(tmp_path / "none.csv")
    p = tmp_path / "bad.csv"
    p.write_text("name,foo\nA,1\n")
    with pytest.raises(InputError, match="none of the columns"):
        select.clusters_from_file(p)


def test_accept_sample_reads(shared_data):
    t = select.clusters_from_file(shared_data / "samples" / "accept_catalog.csv")
    assert len(t) > 200
    assert np.all(np.abs(t["dec_deg"]) <= 90)


def test_no_coverage_warns():
    clusters = Table({"name": ["X"], "ra_deg": [1.0], "dec_deg": [1.0]})
    obs = Table({"obsid": [1], "ra_pnt": [100.0], "dec_pnt": [1.0], "instrument": ["ACIS-I"], "exposure_s": [1e4]})
    cov = select.observations_covering(clusters, obs)
    assert len(cov) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NoResultsWarning):
            select.select_point_sources(None, None, clusters, cov, out_dir=".")


@pytest.mark.integration
def test_run_selection_from_config(dachs, tmp_path):
    from xmine.config import load_config

    env = {"XMINE_SERVICES__CSC21__TAP_URL": dachs["tap"], "XMINE_SERVICES__XMM__TAP_URL": dachs["tap"],
           "XMINE_SERVICES__XMM__TABLE": "xmmssc.catalogue", "XMINE_PROJECT__STORE": str(tmp_path / "x.duckdb")}
    config = load_config(environ=env)
    steps: list[str] = []
    res = select.run_selection(config, out_dir=tmp_path / "sel", progress=steps.append)
    assert steps[:2] == ["cluster candidates", "observations"]
    assert sum(s.startswith("field ") for s in steps) == 8
    cols, rows = res.summary()
    assert len(rows) == 8
    assert all(r[3] != "-" for r in rows)
    assert (tmp_path / "sel" / "clusters.ecsv").exists()
    assert (tmp_path / "sel" / "point_sources.ecsv").exists()
    assert sum(f.suffix == ".reg" for f in res.files) == 12
    again = select.run_selection(config, out_dir=tmp_path / "sel2", offline=True)
    assert again.summary() == (cols, rows)


def test_sql_text_and_params(tmp_path):
    from xmine.recipes import parse_params, sql_text

    assert "FROM provenance" in sql_text("cache_summary")
    assert sql_text("SELECT 1") == "SELECT 1"
    with pytest.raises(InputError, match="is ADQL"):
        sql_text("csc21_extended")
    assert parse_params(["a=1", "b=2.5", "c=csc21"]) == {"a": 1, "b": 2.5, "c": "csc21"}
    with pytest.raises(InputError, match="not name=value"):
        parse_params(["oops"])


def test_select_from_simulated_catalogue_tables(tmp_path):
    """The demo path: the simulator's own catalogue tables, no service."""
    from xmine.simulate import demo_truth, make_catalogs

    truth = demo_truth()
    cats = make_catalogs(truth, seed=0)
    res = select.select_from_tables(cats.csc_master_source, cats.xmm_sources, cats.csc_observations,
                                    out_dir=tmp_path)
    assert len(res.clusters) == len(truth.clusters)
    for c in truth.clusters:  # each true cluster found within 10"
        d = np.hypot((res.clusters["ra_deg"] - c["ra_deg"]) * np.cos(np.radians(c["dec_deg"])),
                     res.clusters["dec_deg"] - c["dec_deg"]) * 3600
        assert d.min() < 10
    assert sorted(res.coverage["obsid"]) == sorted(truth.observations["obsid"])
    assert sum(f.suffix == ".reg" for f in res.files) == len(truth.observations)
    # the simulated point sources of each field are in the list, masked
    ps = res.point_sources[~res.point_sources["extended"]]
    assert ps["masked"].all()
    assert len(set(ps["name"])) >= 0.8 * sum(truth.point_sources["cluster"] != "")


def test_unknown_catalogue_is_an_input_error():
    with pytest.raises(InputError, match=r"no catalogue description 'sdss'.*known: .*csc21"):
        to_common(Table({"ra": [1.0], "dec": [1.0]}), "sdss")
