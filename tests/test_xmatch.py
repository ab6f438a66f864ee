"""Cross-match by TAP upload against the local DaCHS (IR-like table with known counterparts), and its fallback."""

from __future__ import annotations

import json
import math
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from tests.query.conftest import dachs

from xmine.errors import CacheError, InputError
from xmine.store import open_store
from xmine.xmatch import (
    DEFAULT_K_SIGMA,
    UploadRefusedWarning,
    crossmatch_vo,
    match_with_errors,
    plot_colour_hardness,
    plot_flux_magnitude,
    sigma_arcsec,
    upload_adql,
)

DACHS = Path(__file__).resolve().parent / "servers" / "dachs"
IR = {"remote_table": "ir.twomass_like", "remote_err": "err_maj", "remote_columns": ["designation", "j_m", "k_m"]}
__all__ = ["dachs"]  # the session fixture of tests/query, shared here


@pytest.fixture(scope="module")
def xray() -> Table:
    return Table.read(DACHS / "csc21" / "data" / "master_source.csv", format="ascii.csv")


@pytest.fixture(scope="module")
def truth() -> dict[str, str]:
    t = Table.read(DACHS / "ir" / "truth.csv", format="ascii.csv")
    return dict(zip(t["csc_name"].tolist(), t["designation"].tolist(), strict=True))


def _scores(result: Any, truth: dict[str, str]) -> tuple[float, float]:
    names = result.table.column("name").to_pylist()
    found = result.table.column("cp_designation").to_pylist()
    hits = sum(truth.get(n) == d for n, d in zip(names, found, strict=True))
    return hits / len(truth), hits / max(len(names), 1)


# ---------------------------------------------------------------------------- a proxy that refuses uploads
class _Refuser(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _RefuserHandler)
        self.upstream, self.mode = upstream.rstrip("/"), mode
        self.refused = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/tap"


_VOTABLE_ERROR = (b'<?xml version="1.0"?><VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
                  b'<RESOURCE type="results"><INFO name="QUERY_STATUS" value="ERROR">'
                  b"Table uploads are not supported by this service</INFO></RESOURCE></VOTABLE>")


class _RefuserHandler(BaseHTTPRequestHandler):
    server: _Refuser  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, method: str) -> None:
        srv = self.server
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        if srv.mode == "error" and body and b"UPLOAD" in body.upper():
            srv.refused += 1
            self._reply(400, _VOTABLE_ERROR, "text/xml")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in {"content-type", "accept"}}
        resp = requests.request(method, srv.upstream + self.path, data=body, headers=headers, timeout=60,
                                allow_redirects=False)
        data = resp.content
        if srv.mode == "capabilities" and self.path.rstrip("/").endswith("/capabilities"):
            import re

            data = re.sub(rb"<uploadMethod[^>]*/>", b"", data)
        self._reply(resp.status_code, data, resp.headers.get("Content-Type", "text/xml"))

    def do_GET(self) -> None:
        self._forward("GET")

    def do_POST(self) -> None:
        self._forward("POST")


@pytest.fixture
def refuser(dachs: dict[str, str], request: pytest.FixtureRequest) -> Iterator[_Refuser]:
    srv = _Refuser(dachs["base"], request.param)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


# ---------------------------------------------------------------------------- against the local DaCHS
@pytest.mark.integration
def test_upload_match_recovers_injected_counterparts(dachs: dict[str, str], xray: Table,
                                                      truth: dict[str, str]) -> None:
    res = crossmatch_vo(xray, url=dachs["tap"], method="upload", **IR)
    recall, precision = _scores(res, truth)
    print(f"upload match: recall {recall:.3f}, precision {precision:.3f} ({res.table.num_rows} matches, "
          f"{len(truth)} injected)")
    assert res.method == "upload"
    assert "TAP_UPLOAD.xsrc" in res.query_text
    # k = 3.44 keeps 99.73 % of true pairs; the field density (20 / arcmin²) leaves few chance pairs
    assert recall >= 0.97
    assert precision >= 0.95
    # the X-ray columns come back with the counterpart's
    assert {"flux_aper_b", "hard_hm", "cp_k_m", "sep_arcsec", "n_sigma", "n_candidates"} <= set(
        res.table.column_names)
    assert np.all(res.table.column("n_sigma").to_numpy() < DEFAULT_K_SIGMA)


@pytest.mark.integration
def test_client_path_gives_the_same_pairs(dachs: dict[str, str], xray: Table) -> None:
    up = crossmatch_vo(xray, url=dachs["tap"], method="upload", best_only=False, **IR)
    cl = crossmatch_vo(xray, url=dachs["tap"], method="client", best_only=False, **IR)
    assert cl.method == "client"

    def pairs(r: Any) -> set[tuple[str, str]]:
        return set(zip(r.table.column("name").to_pylist(), r.table.column("cp_designation").to_pylist(),
                       strict=True))

    assert pairs(up) == pairs(cl)
    assert len(pairs(up)) > 150


@pytest.mark.integration
@pytest.mark.parametrize("refuser", ["error", "capabilities"], indirect=True)
def test_refused_upload_falls_back_with_one_line(refuser: _Refuser, xray: Table, truth: dict[str, str]) -> None:
    with pytest.warns(UploadRefusedWarning, match="refused the TAP upload") as rec:
        res = crossmatch_vo(xray, url=refuser.url, **IR)
    msg = str(rec[0].message)
    assert "\n" not in msg
    if refuser.mode == "error":
        assert refuser.refused == 1
        assert "not supported" in msg
    else:
        assert "lists no upload method" in msg
    assert res.method == "client"
    assert res.fallback_reason
    recall, precision = _scores(res, truth)
    assert recall >= 0.97
    assert precision >= 0.95


@pytest.mark.integration
def test_results_cached_with_provenance(dachs: dict[str, str], xray: Table, tmp_path: Path) -> None:
    with open_store(tmp_path / "x.duckdb") as store:
        with pytest.raises(CacheError, match="offline: nothing cached"):
            crossmatch_vo(xray, url=dachs["tap"], store=store, offline=True, **IR)
        first = crossmatch_vo(xray, url=dachs["tap"], store=store, **IR)
        again = crossmatch_vo(xray, url=dachs["tap"], store=store, offline=True, **IR)
        assert not first.from_cache
        assert again.from_cache
        assert again.cache_table == first.cache_table
        assert again.table.column("name").to_pylist() == first.table.column("name").to_pylist()
        prov = store.con.execute("SELECT service, query_text, params_json FROM provenance WHERE result_table = $t",
                                 {"t": first.cache_table}).fetchall()
    assert prov[0][0] == dachs["tap"]
    assert "TAP_UPLOAD.xsrc" in prov[0][1]
    params = json.loads(prov[0][2])
    assert len(params["upload_sha256"]) == 64
    assert params["method"] == "upload"


@pytest.mark.integration
def test_diagrams(dachs: dict[str, str], xray: Table, tmp_path: Path) -> None:
    res = crossmatch_vo(xray, url=dachs["tap"], **IR)
    for png in (plot_colour_hardness(res.table, tmp_path / "ch.png"),
                plot_flux_magnitude(res.table, tmp_path / "fm.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="no column 'cp_w1'"):
        plot_flux_magnitude(res.table, tmp_path / "x.png", magnitude="cp_w1")


# ---------------------------------------------------------------------------- no server
def test_k_sigma_keeps_9973_percent_of_true_pairs() -> None:
    # injected truth: 20,000 pairs offset by Gaussians of known per-axis sigma
    rng = np.random.default_rng(4)
    n = 20_000
    ra = rng.uniform(10, 20, n)
    dec = rng.uniform(-5, 5, n)
    s1 = rng.uniform(0.2, 1.0, n)
    s2 = rng.uniform(0.1, 0.5, n)
    s = np.hypot(s1, s2)
    dx, dy = rng.normal(0, s), rng.normal(0, s)
    ra2 = ra + dx / 3600 / np.cos(np.radians(dec))
    dec2 = dec + dy / 3600
    pairs = match_with_errors(ra, dec, s1, ra2, dec2, s2)
    i1, i2 = pairs.column("i1").to_numpy(), pairs.column("i2").to_numpy()
    recall = np.mean(np.isin(np.arange(n), i1[i1 == i2]))
    assert recall == pytest.approx(1 - 0.0027, abs=0.0015)


def test_client_pairs_equal_astropy_brute_force() -> None:
    rng = np.random.default_rng(5)
    ra1, dec1 = rng.uniform(0, 0.2, 3000), rng.uniform(0, 0.2, 3000)
    ra2, dec2 = rng.uniform(0, 0.2, 5000), rng.uniform(0, 0.2, 5000)
    s1, s2 = rng.uniform(0.5, 2, 3000), rng.uniform(0.1, 1, 5000)
    got = match_with_errors(ra1, dec1, s1, ra2, dec2, s2, k_sigma=3.0)
    c1, c2 = SkyCoord(ra1, dec1, unit="deg"), SkyCoord(ra2, dec2, unit="deg")
    j1, j2, sep, _ = c2.search_around_sky(c1, seplimit=3.0 * math.hypot(2, 1) * 1.01 / 3600 * c1.ra.unit)
    ok = sep.arcsec < 3.0 * np.hypot(s1[j1], s2[j2])
    want = set(zip(j1[ok].tolist(), j2[ok].tolist(), strict=True))
    assert set(zip(got.column("i1").to_pylist(), got.column("i2").to_pylist(), strict=True)) == want
    assert len(want) > 50


@pytest.mark.parametrize(("ra0", "dec0"), [(0.0, -12.3), (359.99, 40.0), (75.0, 89.98), (10.0, -89.99)])
def test_zones_across_ra_zero_and_near_poles(ra0: float, dec0: float) -> None:
    rng = np.random.default_rng(6)
    n1, n2 = 2000, 4000
    c = SkyCoord(ra0, dec0, unit="deg")
    pa1 = rng.uniform(0, 360, n1) * u.deg
    pa2 = rng.uniform(0, 360, n2) * u.deg
    p1 = c.directional_offset_by(pa1, np.sqrt(rng.uniform(0, 1, n1)) * 60 * u.arcsec)
    p2 = c.directional_offset_by(pa2, np.sqrt(rng.uniform(0, 1, n2)) * 60 * u.arcsec)
    s1, s2 = rng.uniform(0.5, 1.5, n1), rng.uniform(0.1, 0.5, n2)
    want = set()
    j1, j2, sep, _ = p2.search_around_sky(p1, seplimit=3.44 * math.hypot(1.5, 0.5) * 1.01 * u.arcsec)
    ok = sep.arcsec < 3.44 * np.hypot(s1[j1], s2[j2])
    want = set(zip(j1[ok].tolist(), j2[ok].tolist(), strict=True))
    for engine in ("zones", "healpix"):
        got = match_with_errors(p1.ra.deg, p1.dec.deg, s1, p2.ra.deg, p2.dec.deg, s2, k_sigma=3.44, engine=engine)
        assert set(zip(got.column("i1").to_pylist(), got.column("i2").to_pylist(), strict=True)) == want
    assert len(want) > 20


def test_conventions_and_bad_input(xray: Table) -> None:
    assert sigma_arcsec([2.448], "r95")[0] == pytest.approx(1.0, rel=1e-3)
    assert sigma_arcsec([0.7], "sigma")[0] == 0.7
    with pytest.raises(InputError, match="error convention 'r90'"):
        sigma_arcsec([1.0], "r90")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no column 'pos_err'"):
        crossmatch_vo(xray, url="http://127.0.0.1:9/tap", err_col="pos_err", **IR)
    with pytest.raises(InputError, match="not a plain ADQL identifier"):
        upload_adql("ir.x; DROP", search_radius_arcsec=2.0)
    with pytest.raises(InputError, match="not a plain ADQL identifier"):
        upload_adql('"II/246/out"', search_radius_arcsec=2.0, remote_err='"errMaj"')
    vizier = upload_adql('"II/246/out"', search_radius_arcsec=2.0, remote_ra="RAJ2000", remote_dec="DEJ2000",
                         remote_err="errMaj", remote_columns=["Jmag", "Kmag"])
    assert 'JOIN "II/246/out" AS o' in vizier
    with pytest.raises(InputError, match="method = 'both'"):
        crossmatch_vo(xray, url="http://127.0.0.1:9/tap", method="both", **IR)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adql = upload_adql("ir.twomass_like", search_radius_arcsec=2.0, remote_err="err_maj", remote_err_kind="r95")
    assert "SQRT(u.sig_arcsec * u.sig_arcsec + (o.err_maj * 0.408" in adql


@pytest.mark.integration
def test_cli_xmatch(dachs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    import xmine.cli as cli

    if "xmine.cli.catalog_tools" not in cli.COMMAND_MODULES:  # until the lead registers the module
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "xmine.cli.catalog_tools"))
    monkeypatch.chdir(tmp_path)
    args = ["xmatch", "--tap", dachs["tap"], "--remote-table", "ir.twomass_like", "--remote-err", "err_maj",
            "--remote-columns", "designation,j_m,k_m", "--sources", str(DACHS / "csc21" / "data" / "master_source.csv")]
    assert cli.main([*args, "--out", "m.ecsv", "--plots", "plots"]) == 0
    out = capsys.readouterr().out
    assert "matches (upload path)" in out
    assert len(Table.read(tmp_path / "m.ecsv")) > 150
    assert (tmp_path / "plots" / "colour_hardness.png").exists()
    assert (tmp_path / "plots" / "flux_magnitude.png").exists()
    assert cli.main([*args, "--offline"]) == 0
    assert "from cache" in capsys.readouterr().out
    assert cli.main([*args, "--err-col", "pos_err"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xmine: error: source table has no column 'pos_err'")
    assert err.count("\n") == 1
