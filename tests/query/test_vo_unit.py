"""xmine.vo without a server: ADQL builders, retry rules, and VOTables recorded from the local DaCHS server."""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import pyvo
import requests
from astropy.io.votable import parse
from astropy.table import MaskedColumn, Table

from xmine import vo
from xmine.errors import InputError, QueryError, ServiceError

DATA = Path(__file__).resolve().parents[1] / "data" / "vo"
GEOMETRY = re.compile(r"\b(CONTAINS|POINT|CIRCLE|BOX|POLYGON|DISTANCE|INTERSECTS)\s*\(", re.I)


def _results(name: str, cls=pyvo.dal.TAPResults):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has been deprecated in the VOUnit standard.*")
        return cls(parse(DATA / name))


# ---------------------------------------------------------------- recorded responses
def test_recorded_sync_result_clean_types():
    res = _results("tap_master_source_top20.xml")
    assert not vo._overflowed(res)
    t = vo.clean_table(vo._to_table(res))
    assert len(t) == 20
    assert all(t[c].dtype != object for c in t.colnames)
    assert t["name"].dtype.kind == "U"
    assert t["conf_flag"].dtype == bool
    assert str(t["ra"].unit) == "deg"
    arrow = vo.to_arrow(t)
    assert arrow.schema.field("flux_aper_w").type == "double"
    assert arrow.column("flux_aper_w").null_count == 20


def test_recorded_overflow_is_detected():
    res = _results("tap_overflow_maxrec5.xml")
    assert vo._overflowed(res)
    assert len(res) == 5


def test_recorded_empty_result_is_typed():
    t = vo.clean_table(vo._to_table(_results("tap_empty.xml")))
    assert len(t) == 0
    assert t["name"].dtype.kind == "U"
    assert t["extent_flag"].dtype == bool
    assert t["acis_num"].dtype == np.int32


def test_recorded_syntax_error_becomes_query_error():
    with pytest.raises(QueryError, match=r"TAP query refused by http://x/tap: .*Could not parse"):
        vo._call(lambda: _results("tap_syntax_error.xml"), retry=vo._Retry(3), url="http://x/tap",
                 adql="SELEC", what="TAP query")


def test_recorded_xmm_upper_case_names():
    t = vo.clean_table(vo._to_table(_results("tap_xmm_top10.xml")))
    assert "SC_RA" in t.colnames
    assert t["SRCID"].dtype == np.int64
    assert t["SC_VAR_FLAG"].dtype == bool


def test_recorded_scs_overflow_is_detected_although_pyvo_says_ok():
    res = _results("scs_4xmm_overflow.xml", pyvo.dal.SCSResults)
    assert res.status[0] == "OK"
    assert vo._overflowed(res)
    assert not vo._overflowed(_results("scs_csc21_verb3.xml", pyvo.dal.SCSResults))


# ---------------------------------------------------------------- ADQL
def test_box_splits_at_ra_zero_both_ways():
    a = vo.box_adql(0.05, -12.3, 0.1)
    b = vo.box_adql(359.95, -12.3, 0.1)
    assert " OR " in a
    assert " OR " in b
    assert "BETWEEN" in vo.box_adql(150.0, 2.0, 0.1)
    assert " OR " not in vo.box_adql(150.0, 2.0, 0.1)


def test_box_near_pole_has_no_ra_cut_and_clips_dec():
    text = vo.box_adql(75.0, 89.95, 0.1)
    assert "ra" not in text.replace("dec", "")
    assert "90.0" in text


@pytest.mark.parametrize(("ra", "dec"), [(0.0, 0.0), (359.99, 45.0), (10.0, 88.0), (200.0, -89.5), (120.0, 60.0)])
def test_csc_box_contains_the_cone(ra, dec):
    """Every point of the circle satisfies the box condition (evaluated in Python)."""
    r = 0.3
    text = vo.box_adql(ra, dec, r)
    cond = text.replace("BETWEEN", ">=").replace(" AND ", " and ").replace(" OR ", " or ")
    cond = re.sub(r"dec >= (\S+) and (\S+)", r"(\1 <= dec <= \2)", cond)
    cond = re.sub(r"ra >= (\S+) and (\S+)(\)?)", r"(\1 <= ra <= \2)\3", cond)
    rng = np.random.default_rng(0)
    phi = rng.uniform(0, 2 * np.pi, 2000)
    rho = r * np.sqrt(rng.uniform(0, 1, 2000)) * 0.999
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    pts = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(phi * u.rad, rho * u.deg)
    for p_ra, p_dec in zip(pts.ra.deg, pts.dec.deg, strict=True):
        assert eval(cond, {}, {"ra": p_ra, "dec": p_dec}), (cond, p_ra, p_dec)


def test_cone_adql_dialects():
    csc = vo.cone_adql("csc21.master_source", 0.05, -12.3, 0.1, dialect="csc")
    assert not GEOMETRY.search(csc.text)
    assert csc.cone == (0.05, -12.3, 0.1)
    geo = vo.cone_adql("xsa.v_epic_source_cat", 0.05, -12.3, 0.1, dialect="geometry", ra_col="sc_ra",
                       dec_col="sc_dec", columns=["srcid", "sc_ra", "sc_dec"])
    assert geo.text == ("SELECT srcid, sc_ra, sc_dec FROM xsa.v_epic_source_cat WHERE 1 = CONTAINS(POINT('ICRS', "
                        "sc_ra, sc_dec), CIRCLE('ICRS', 0.05, -12.3, 0.1))")
    assert geo.cone is None
    cd = vo.cone_adql("csc21.master_source", 10.0, 5.0, 0.1, dialect="csc", refine="cone_distance")
    assert "dbo.cone_distance(ra, dec, 10.0, 5.0) <= 6.0" in cd.text


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"radius_deg": 0.0}, "radius"), ({"radius_deg": 91.0}, "radius"), ({"dec_deg": 91.0}, "dec_deg"),
    ({"ra_deg": float("nan")}, "not finite"), ({"ra_deg": "x"}, "not a number"),
])
def test_cone_adql_bad_input(kwargs, match):
    args = {"ra_deg": 1.0, "dec_deg": 1.0, "radius_deg": 0.1} | kwargs
    with pytest.raises(InputError, match=match):
        vo.cone_adql("t", args["ra_deg"], args["dec_deg"], args["radius_deg"])


def test_identifiers_are_validated():
    with pytest.raises(InputError, match="not a plain ADQL identifier"):
        vo.select_adql("csc21.master_source; DROP TABLE x")
    with pytest.raises(InputError, match="not a plain ADQL identifier"):
        vo.select_adql("t", columns=["ra", "dec--"])


def test_refine_cuts_box_to_circle():
    t = Table({"ra": [0.0, 0.09, 0.0], "dec": [0.0, 0.09, 0.099]})
    q = vo.AdqlQuery("x", cone=(0.0, 0.0, 0.1))
    assert len(vo._refine(t, q)) == 2


def test_clean_table_text_booleans_and_masks():
    t = Table({"flag": np.array(["T", "F", "", "true"], dtype=object),
               "s": MaskedColumn(np.array([b"a", b"b", b"c", b"d"], dtype=object), mask=[False, True, False, False])})
    out = vo.clean_table(t, booleans=["FLAG"])
    assert out["flag"].dtype == bool
    assert list(out["flag"].mask) == [False, False, True, False]
    assert out["s"].dtype.kind == "U"
    assert list(out["s"].mask) == [False, True, False, False]


def test_dry_runs():
    plan = vo.query_cone("http://x/scs.xml", 10.0, 20.0, 0.1, verbosity=3, maxrec=7, dry_run=True)
    assert plan.params == {"RA": 10.0, "DEC": 20.0, "SR": 0.1, "VERB": 3, "MAXREC": 7}
    plan = vo.query_table("csc21.master_source", url="http://x/tap", key="name", page_size=100, dry_run=True)
    assert plan.adql == "SELECT TOP 100 * FROM csc21.master_source ORDER BY name"
    with pytest.raises(InputError, match="verbosity"):
        vo.query_cone("http://x/scs.xml", 10.0, 20.0, 0.1, verbosity=4)


# ---------------------------------------------------------------- retry rules
class _Resp:
    def __init__(self, status, headers=None):
        self.status_code = status
        self.headers = headers or {}


def _http_error(status, retry_after=None):
    err = requests.HTTPError(f"{status} error")
    err.response = _Resp(status, {"Retry-After": retry_after} if retry_after is not None else {})
    return pyvo.dal.DALServiceError(f"{status}", status, err, "http://x")


def test_status_and_retry_after_from_pyvo_errors():
    assert vo._http_status(_http_error(503, "7")) == (503, 7.0)
    status, after = vo._http_status(_http_error(429, "Wed, 21 Oct 2015 07:28:00 GMT"))
    assert status == 429
    assert after == 0.0
    refused = pyvo.dal.DALFormatError(requests.ConnectionError("Connection refused"), "http://x")
    assert vo._is_connection_error(refused)
    assert vo._http_status(refused) == (None, None)


def test_retry_policy():
    sleeps: list[float] = []
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise _http_error(503, "2" if calls["n"] == 1 else None)
        return "ok"

    retry = vo._Retry(3, base_s=1.0, sleep=sleeps.append, rng=random.Random(0))
    assert vo._call(flaky, retry=retry, url="http://x", adql=None, what="q") == "ok"
    assert sleeps[0] == 2.0  # Retry-After honoured
    assert 1.0 <= sleeps[1] <= 2.0  # second retry: 2 s base x [0.5, 1] jitter

    calls["n"] = 0

    def bad_request():
        calls["n"] += 1
        raise _http_error(400)

    with pytest.raises(ServiceError, match="HTTP 400"):
        vo._call(bad_request, retry=vo._Retry(3, sleep=sleeps.append), url="http://x", adql=None, what="q")
    assert calls["n"] == 1
