"""xmine.vo against the real local DaCHS TAP/SCS server (and a fault proxy in front of it)."""

from __future__ import annotations

import re
import time
import warnings

import numpy as np
import pytest
import requests
from astropy.table import Table

from xmine import vo
from xmine.errors import InputError, NoResultsWarning, QueryError, ServiceError, TruncatedWarning

pytestmark = pytest.mark.integration

GEOMETRY_WORDS = re.compile(r"\b(CONTAINS|POINT|CIRCLE|BOX|POLYGON|DISTANCE|INTERSECTS|REGION)\s*\(", re.I)


def _jobs(base: str) -> list[str]:
    text = requests.get(base + "/tap/async", timeout=10).text
    return re.findall(r"<uws:jobref[^>]*id=\"([^\"]+)\"", text)


def _our_jobs(proxy) -> set[str]:
    """Ids of the async jobs this test made (seen through the proxy): other test runs may have jobs too."""
    return {m.group(1) for _, path, _ in proxy.log for m in [re.search(r"/tap/run/async/([^/?]+)", path)] if m}


def _sep(ra, dec, ra0, dec0):
    return vo.angular_sep_deg(ra, dec, ra0, dec0)


# ---------------------------------------------------------------- plain queries, types
def test_sync_query_clean_types_and_writes(dachs, server_truth, tmp_path):
    res = vo.query_tap("SELECT * FROM csc21.master_source", url=dachs["tap"])
    t = res.table
    assert len(t) == len(server_truth["master_source"])
    assert not res.truncated
    assert all(t[c].dtype != object for c in t.colnames)
    assert t["extent_flag"].dtype == bool
    assert t["extent_flag"].sum() == np.sum(server_truth["master_source"]["extent_flag"] == "true")
    assert str(t["ra"].unit) == "deg"
    assert str(t["err_ellipse_r0"].unit) == "arcsec"
    assert t["acis_num"].dtype == np.int32
    # writes in every format
    t.write(tmp_path / "a.fits")
    t.write(tmp_path / "a.ecsv")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has been deprecated in the VOUnit standard.*")
        t.write(tmp_path / "a.xml", format="votable")
    import pyarrow.parquet as pq

    pq.write_table(res.to_arrow(), tmp_path / "a.parquet")
    back = pq.read_table(tmp_path / "a.parquet")
    assert back.num_rows == len(t)
    assert back.schema.field("ra").metadata[b"unit"] == b"deg"


def test_nulls_are_masked_and_null_in_arrow(dachs):
    res = vo.query_tap("SELECT name, flux_aper_w, var_intra_index_b FROM csc21.master_source", url=dachs["tap"])
    col = res.table["flux_aper_w"]
    assert np.ma.getmaskarray(col).all()  # the simulator writes no HRC flux
    arrow = res.to_arrow()
    assert arrow.column("flux_aper_w").null_count == len(res.table)


def test_empty_result_warns_and_is_typed(dachs):
    with pytest.warns(NoResultsWarning, match="no rows"):
        res = vo.query_tap("SELECT * FROM csc21.master_source WHERE dec > 89.99", url=dachs["tap"])
    assert len(res.table) == 0
    assert res.table["ra"].dtype == np.float64
    assert res.table["extent_flag"].dtype == bool
    assert res.table["name"].dtype.kind == "U"


@pytest.mark.parametrize(("adql", "match"), [
    ("SELEC * FROM csc21.master_source", "Could not parse"),
    ("SELECT nosuchcol FROM csc21.master_source", "nosuchcol"),
    ("SELECT * FROM csc21.nosuchtable", "nosuchtable"),
])
def test_refused_query_is_query_error_with_service_message(dachs, adql, match):
    with pytest.raises(QueryError, match=match) as info:
        vo.query_tap(adql, url=dachs["tap"])
    assert info.value.url == dachs["tap"]
    assert info.value.adql == adql
    assert "\n" not in str(info.value)


def test_async_query_equals_sync_and_deletes_job(dachs, proxy):
    adql = "SELECT * FROM xmmssc.catalogue"
    phases: list[str] = []
    a = vo.query_tap(adql, url=proxy.url_for(dachs["tap"]), mode="async", poll=phases.append)
    s = vo.query_tap(adql, url=dachs["tap"])
    assert sorted(a.table["SRCID"]) == sorted(s.table["SRCID"])
    assert phases[-1] == "COMPLETED"
    ours = _our_jobs(proxy)
    assert len(ours) == 1
    assert not ours & set(_jobs(dachs["base"]))


def test_async_interrupt_deletes_job(dachs, proxy):
    def interrupt(phase: str) -> None:
        assert _our_jobs(proxy) <= set(_jobs(dachs["base"])), "the job should exist while it runs"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vo.query_tap("SELECT * FROM csc21.master_source", url=proxy.url_for(dachs["tap"]), mode="async",
                     poll=interrupt)
    ours = _our_jobs(proxy)
    assert len(ours) == 1
    assert not ours & set(_jobs(dachs["base"]))


def test_async_syntax_error(dachs, proxy):
    with pytest.raises(QueryError, match="Could not parse"):
        vo.query_tap("SELEC 1", url=proxy.url_for(dachs["tap"]), mode="async")
    ours = _our_jobs(proxy)
    assert len(ours) == 1
    assert not ours & set(_jobs(dachs["base"]))


# ---------------------------------------------------------------- overflow and paging
def test_overflow_warns_with_query_and_rows(dachs):
    with pytest.warns(TruncatedWarning, match=r"SELECT \* FROM csc21.master_source.*truncated at 25 rows"):
        res = vo.query_tap("SELECT * FROM csc21.master_source", url=dachs["tap"], maxrec=25)
    assert res.truncated
    assert len(res.table) == 25


def test_overflow_with_top_above_maxrec(dachs):
    with pytest.warns(TruncatedWarning):
        res = vo.query_tap("SELECT TOP 50 * FROM csc21.master_source", url=dachs["tap"], maxrec=10)
    assert res.truncated


@pytest.mark.parametrize("page_size", [7, 50, 217, 218, 219])
def test_paging_equals_unpaged_without_duplicates(dachs, page_size):
    full = vo.query_tap("SELECT * FROM csc21.master_source", url=dachs["tap"]).table
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paged = vo.query_table("csc21.master_source", url=dachs["tap"], key="name", page_size=page_size)
    names = list(paged.table["name"])
    assert len(names) == len(set(names)) == len(full)
    assert set(names) == set(full["name"])
    assert not paged.truncated
    assert paged.pages == len(full) // page_size + 1
    a, b = full[np.argsort(full["name"])], paged.table[np.argsort(paged.table["name"])]
    assert np.array_equal(np.asarray(a["ra"]), np.asarray(b["ra"]))


def test_paging_numeric_key_and_where(dachs):
    full = vo.query_tap("SELECT * FROM xmmssc.catalogue WHERE SC_EXTENT > 0", url=dachs["tap"]).table
    paged = vo.query_table("xmmssc.catalogue", url=dachs["tap"], key="SRCID", where=["SC_EXTENT > 0"],
                           page_size=3).table
    assert sorted(paged["SRCID"]) == sorted(full["SRCID"])
    assert len(set(paged["SRCID"])) == len(paged)


# ---------------------------------------------------------------- dialects
@pytest.mark.parametrize(("ra0", "dec0", "r"), [
    (0.05, -12.3, 0.15),      # straddles RA 0/360
    (359.95, -12.3, 0.12),    # the same field from the other side
    (75.0, 88.7, 0.14),       # 1.3 deg from the pole: the RA range is wide
    (0.0, 90.0, 1.5),         # contains the pole: no RA cut at all
    (150.125, 2.21, 0.1),     # an ordinary field
])
def test_csc_dialect_has_no_geometry_and_returns_the_right_rows(dachs, server_truth, ra0, dec0, r):
    q = vo.cone_adql("csc21.master_source", ra0, dec0, r, dialect="csc")
    assert not GEOMETRY_WORDS.search(q.text), q.text
    if dec0 < 89:
        assert "BETWEEN" in q.text
    ms = server_truth["master_source"]
    expected = set(ms["name"][_sep(ms["ra"], ms["dec"], ra0, dec0) <= r])
    assert expected, "the test field must hold sources"
    got = vo.query_tap(q, url=dachs["tap"]).table
    assert set(got["name"]) == expected
    geo = vo.query_tap(vo.cone_adql("csc21.master_source", ra0, dec0, r, dialect="geometry"), url=dachs["tap"])
    assert set(geo.table["name"]) == expected


def test_csc_box_alone_needs_the_split(dachs):
    unsplit = "SELECT name FROM csc21.master_source WHERE ra BETWEEN 359.9 AND 0.1"
    with pytest.warns(NoResultsWarning):
        assert len(vo.query_tap(unsplit, url=dachs["tap"]).table) == 0
    box = vo.box_adql(0.0, -12.3, 0.3)
    assert "OR" in box
    assert len(vo.query_tap(f"SELECT name FROM csc21.master_source WHERE {box}", url=dachs["tap"]).table) > 0


def test_paged_cone_query(dachs, server_truth):
    cone = vo.cone_adql("csc21.master_source", 0.05, -12.3, 0.2, dialect="csc")
    res = vo.query_table("csc21.master_source", url=dachs["tap"], key="name", cone=cone, page_size=5)
    ms = server_truth["master_source"]
    assert set(res.table["name"]) == set(ms["name"][_sep(ms["ra"], ms["dec"], 0.05, -12.3) <= 0.2])


def test_recipe_join_master_to_obsid(dachs, server_truth):
    adql = ("SELECT m.name, b.obsid FROM csc21.master_source AS m, csc21.master_stack_assoc AS a, "
            "csc21.stack_observation_assoc AS b WHERE m.name = a.name AND a.detect_stack_id = b.detect_stack_id "
            "AND a.region_id = b.region_id AND m.extent_flag = 'T'")
    t = vo.query_tap(adql, url=dachs["tap"]).table
    assert len(t) > 0
    assert all(str(n).endswith("X") for n in t["name"])


def test_upload_join(dachs, server_truth):
    ms = server_truth["master_source"]
    up = Table({"id": ["a", "b"], "ra": [float(ms["ra"][0]), 0.05], "dec": [float(ms["dec"][0]), -12.3]})
    adql = ("SELECT u.id, m.name FROM TAP_UPLOAD.mine AS u JOIN csc21.master_source AS m "
            "ON 1 = CONTAINS(POINT('ICRS', m.ra, m.dec), CIRCLE('ICRS', u.ra, u.dec, 2.0/3600))")
    t = vo.query_tap(adql, url=dachs["tap"], uploads={"mine": up}).table
    assert str(ms["name"][0]) in set(t["name"])


# ---------------------------------------------------------------- cone search
def test_cone_search_verbosity(dachs):
    ncols = []
    for verb in (1, 2, 3):
        t = vo.query_cone(dachs["scs_csc21"], 150.125, 2.21, 0.1, verbosity=verb).table
        assert len(t) > 0
        assert all(t[c].dtype != object for c in t.colnames)
        ncols.append(len(t.colnames))
    assert ncols[0] <= ncols[1] <= ncols[2]
    assert ncols[0] < ncols[2]


def test_cone_search_overflow_is_detected(dachs):
    with pytest.warns(TruncatedWarning, match="truncated at 3 rows"):
        res = vo.query_cone(dachs["scs_4xmm"], 150.125, 2.21, 0.2, maxrec=3)
    assert res.truncated


def test_cone_search_bad_radius(dachs):
    with pytest.raises(InputError, match="radius"):
        vo.query_cone(dachs["scs_csc21"], 150.0, 2.0, 95.0)


# ---------------------------------------------------------------- faults
def test_dry_run_sends_nothing():
    plan = vo.query_tap("SELECT 1", url="http://127.0.0.1:9/tap", maxrec=5, dry_run=True)
    assert isinstance(plan, vo.QueryPlan)
    assert plan.url == "http://127.0.0.1:9/tap/sync"
    assert plan.adql == "SELECT 1"
    assert plan.params["MAXREC"] == 5


def test_refused_connection_after_retries_names_url():
    url = "http://127.0.0.1:9/tap"
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match=r"cannot connect to http://127.0.0.1:9/tap after 3 attempts"):
        vo.query_tap("SELECT 1", url=url, retries=2, backoff_s=0.05)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("code", [429, 502, 503, 504])
def test_transient_status_is_retried(dachs, proxy, code):
    proxy.queue(("status", code, None), ("status", code, None))
    res = vo.query_tap("SELECT TOP 3 * FROM csc21.master_source", url=proxy.url_for(dachs["tap"]),
                       retries=3, backoff_s=0.05)
    assert len(res.table) == 3
    assert [w for _, _, w in proxy.log].count("forwarded") == 1
    assert len(proxy.log) == 3


def test_retry_after_is_honoured(dachs, proxy):
    proxy.queue(("status", 503, 2))
    t0 = time.monotonic()
    res = vo.query_tap("SELECT TOP 2 * FROM csc21.master_source", url=proxy.url_for(dachs["tap"]),
                       retries=1, backoff_s=0.01)
    assert time.monotonic() - t0 >= 2.0
    assert len(res.table) == 2


def test_other_http_errors_are_not_retried(dachs, proxy):
    proxy.queue(("status", 500, None), ("status", 500, None))
    with pytest.raises(ServiceError, match="HTTP 500") as info:
        vo.query_tap("SELECT TOP 2 * FROM csc21.master_source", url=proxy.url_for(dachs["tap"]), retries=3,
                     backoff_s=0.01)
    assert info.value.status == 500
    assert len(proxy.log) == 1


def test_persistent_429_gives_up(dachs, proxy):
    proxy.queue(*[("status", 429, 0)] * 3)
    with pytest.raises(ServiceError, match="HTTP 429 after 3 attempts"):
        vo.query_tap("SELECT 1", url=proxy.url_for(dachs["tap"]), retries=2, backoff_s=0.01)


def test_stall_times_out_then_retry_succeeds(dachs, proxy):
    proxy.queue(("stall", 6.0))  # the timeout leaves a loaded server time to answer the retry
    res = vo.query_tap("SELECT TOP 4 * FROM csc21.master_source", url=proxy.url_for(dachs["tap"]), timeout_s=3.0,
                       retries=2, backoff_s=0.01)
    assert len(res.table) == 4


def test_stall_every_time_is_a_timeout_error(dachs, proxy):
    proxy.queue(("stall", 2.0), ("stall", 2.0))
    with pytest.raises(ServiceError, match=r"timed out at .* after 2 attempts"):
        vo.query_tap("SELECT 1", url=proxy.url_for(dachs["tap"]), timeout_s=0.5, retries=1, backoff_s=0.01)


@pytest.mark.parametrize("fault", [("cut", 200), ("reset",)])
def test_cut_connection_is_retried(dachs, proxy, fault):
    proxy.queue(fault)
    res = vo.query_tap("SELECT TOP 5 * FROM csc21.master_source", url=proxy.url_for(dachs["tap"]), retries=2,
                       backoff_s=0.01)
    assert len(res.table) == 5
    assert len(proxy.log) == 2


def test_cone_search_retried_through_proxy(dachs, proxy):
    proxy.queue(("status", 503, 0))
    res = vo.query_cone(proxy.url_for(dachs["scs_csc21"]), 150.125, 2.21, 0.1, retries=1, backoff_s=0.01)
    assert len(res.table) > 0


# ---------------------------------------------------------------- all CSC levels through the named join recipes
def _csc_tables() -> dict[str, object]:
    from xmine.recipes import Identifier

    return {k: Identifier(f"csc21.{k}") for k in ("master_source", "master_stack_assoc", "stack_observation_assoc",
                                                 "observation_source", "stack_source")}


def test_recipe_master_to_obsids(dachs, server_truth):
    from xmine.recipes import load_recipe, render_adql

    t = _csc_tables()
    adql = render_adql(load_recipe("csc21_master_obsids"), {
        "master_source": t["master_source"], "master_stack_assoc": t["master_stack_assoc"],
        "stack_observation_assoc": t["stack_observation_assoc"], "min_significance": 0})
    res = vo.query_tap(adql, url=dachs["tap"]).table
    assert len(res) == len(server_truth["stack_observation_assoc"])
    assert set(res["obsid"]) == set(server_truth["observations"]["obsid"])


def test_recipe_observation_sources_of_an_obsid(dachs, server_truth):
    from xmine.recipes import load_recipe, render_adql

    t = _csc_tables()
    adql = render_adql(load_recipe("csc21_observation_sources"), {
        "master_source": t["master_source"], "master_stack_assoc": t["master_stack_assoc"],
        "stack_observation_assoc": t["stack_observation_assoc"], "observation_source": t["observation_source"],
        "obsid": 90101})
    res = vo.query_tap(adql, url=dachs["tap"]).table
    soa = server_truth["stack_observation_assoc"]
    assert len(res) == int((soa["obsid"] == 90101).sum())
    assert set(res["obsid"]) == {90101}
    assert str(res["theta"].unit) == "arcmin"
    assert np.all(res["src_cnts_aper_b"] > 0)


def test_recipe_stack_sources(dachs, server_truth):
    from xmine.recipes import load_recipe, render_adql

    t = _csc_tables()
    adql = render_adql(load_recipe("csc21_stack_sources"), {
        "master_source": t["master_source"], "master_stack_assoc": t["master_stack_assoc"],
        "stack_source": t["stack_source"], "min_significance": 0})
    res = vo.query_tap(adql, url=dachs["tap"]).table
    assert len(res) == len(server_truth["master_stack_assoc"])


def test_async_job_survives_faults_and_is_deleted(dachs, proxy):
    # 503 on submission, then a reset connection on a later request (run or poll): both retried
    proxy.queue(("status", 503, 0))
    url = proxy.url_for(dachs["tap"])
    phases: list[str] = []

    def poll(phase: str) -> None:
        if not phases:
            proxy.queue(("reset",))
        phases.append(phase)

    res = vo.query_tap("SELECT TOP 7 * FROM csc21.master_source", url=url, mode="async", retries=3, backoff_s=0.05,
                       poll=poll)
    assert len(res.table) == 7
    assert any("503" in w for _, _, w in proxy.log)
    assert any("reset" in w for _, _, w in proxy.log)
    assert all(path.startswith(("/tap/", "/__system__/tap/")) for _, path, _ in proxy.log)
    assert proxy.log[-1][0] == "DELETE"  # the job was deleted through the same (faulty) path
    assert not _our_jobs(proxy) & set(_jobs(dachs["base"]))


def test_paging_when_the_service_limit_is_below_the_page_size(dachs, server_truth):
    # MAXREC 20 plays a service cap below TOP 50: every page is cut at 20 rows and flagged OVERFLOW
    res = vo.query_table("csc21.master_source", url=dachs["tap"], key="name", page_size=50, maxrec=20)
    names = list(res.table["name"])
    assert len(names) == len(set(names)) == len(server_truth["master_source"])
    assert res.pages >= len(names) // 20
