"""Per-source products: download from a local csccli stand-in on loopback, resume, checks, load, plot, fit."""

from __future__ import annotations

import gzip
import importlib.util
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from tests.query.conftest import dachs

from xmine.errors import InputError, ServiceError
from xmine.products import (
    fetch_products,
    find_product_files,
    fit_product_spectrum,
    load_light_curve,
    load_spectrum,
    plot_light_curve,
    plot_spectrum,
    resolve_sources,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "servers"))
from products_http import ProductServer, SimSource, expected_channel_counts, make_products

pytestmark = pytest.mark.integration
__all__ = ["dachs"]  # the local DaCHS fixture of tests/query, for resolving names through TAP

ACIS = SimSource("2CXO J100030.0+021236", 90101, region_id=43, gamma=1.7, src_counts=4000.0)
HRC = SimSource("2CXO J140150.2-122213", 90102, instrument="HRC-I",
                products=("arf", "srcreg", "regevt3"))  # no light curve on the service
THERMAL = SimSource("2CXO J100031.0+021300", 90101, region_id=44, kt_kev=6.0, src_counts=8000.0, bkg_counts=2000.0)
SOURCES = [ACIS, HRC, THERMAL]
ROWS = [{"name": s.name, "obsid": s.obsid, "obi": s.obi, "region_id": s.region_id,
         "detect_stack_id": ("hrcf" if s.instrument.startswith("HRC") else "acisf") + "J1000320p021259_001"}
        for s in SOURCES]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csccli")
    make_products(root, SOURCES, seed=3)
    return root


@pytest.fixture
def server(archive: Path) -> Iterator[ProductServer]:
    srv = ProductServer(archive).start()
    yield srv
    srv.stop()


def _served(archive: Path, name: str) -> bytes:
    return gzip.decompress((archive / f"{name}.gz").read_bytes())


def _fetch(server: ProductServer, out: Path, **kw: object) -> list:
    kw.setdefault("backoff_s", 0.01)
    return fetch_products(ROWS, out, url=server.url, timeout_s=10, **kw)  # type: ignore[arg-type]


def test_fetch_all_products_byte_identical(server: ProductServer, archive: Path, tmp_path: Path) -> None:
    res = _fetch(server, tmp_path)
    by = {(r.name, r.product): r for r in res}
    acis = [r for r in res if r.name == ACIS.name]
    assert [r.status for r in acis] == ["downloaded"] * 6
    for r in acis:
        assert r.path is not None
        assert r.path.read_bytes() == _served(archive, r.filename)
        assert r.path.parent == tmp_path / "2CXOJ100030.0+021236" / "90101_000"
    assert by[(ACIS.name, "lc")].filename == "acisf90101_000N002_r0043b_lc3.fits"
    assert by[(ACIS.name, "pha")].filename == "acisf90101_000N002_r0043_pha3.fits"
    # HRC: no pha/rmf made for it; the light curve is not on the service
    assert by[(HRC.name, "pha")].status == "skipped"
    assert by[(HRC.name, "rmf")].status == "skipped"
    assert by[(HRC.name, "lc")].status == "missing"
    assert by[(HRC.name, "lc")].band == "w"
    assert by[(HRC.name, "regevt")].status == "downloaded"
    assert not list(tmp_path.rglob("*.part"))
    assert not list(tmp_path.rglob("*.tmp*"))
    assert (tmp_path / "manifest.json").exists()
    # a rerun finds everything complete and asks for no file
    n = len(server.log)
    again = _fetch(server, tmp_path)
    assert {r.status for r in again if r.name == ACIS.name} == {"present"}
    assert not [p for p, _, _ in server.log[n:] if p.endswith("retrieveFile")]


def test_resume_after_dropped_connection(server: ProductServer, archive: Path, tmp_path: Path) -> None:
    name = ACIS.filename("rmf")
    size = (archive / f"{name}.gz").stat().st_size
    server.drop_after[name] = size // 3
    res = _fetch(server, tmp_path, products=["rmf"], names=[ACIS.name])
    assert res[0].status == "downloaded"
    assert res[0].resumed
    assert res[0].path is not None
    assert res[0].path.read_bytes() == _served(archive, name)
    asks = [(params, rng) for path, params, rng in server.log if path.endswith("retrieveFile")]
    assert [rng for _, rng in asks] == [None, f"bytes={size // 3}-"]


def test_restart_when_server_ignores_range(server: ProductServer, archive: Path, tmp_path: Path) -> None:
    name = ACIS.filename("regevt3")
    server.ranges = False
    server.drop_after[name] = 5000
    res = _fetch(server, tmp_path, products=["regevt"], names=[ACIS.name])
    assert res[0].status == "downloaded"
    assert not res[0].resumed
    assert res[0].path is not None
    assert res[0].path.read_bytes() == _served(archive, name)


def test_damaged_download_is_refetched_then_refused(server: ProductServer, archive: Path, tmp_path: Path) -> None:
    name = ACIS.filename("arf")
    server.corrupt[name] = 1
    res = _fetch(server, tmp_path, products=["arf"], names=[ACIS.name])
    assert res[0].path is not None
    assert res[0].path.read_bytes() == _served(archive, name)
    out2 = tmp_path / "again"
    server.corrupt[name] = 2
    with pytest.raises(ServiceError, match="damaged twice") as err:
        _fetch(server, out2, products=["arf"], names=[ACIS.name])
    assert "\n" not in str(err.value)
    assert not [p for p in out2.rglob("*") if p.is_file() and p.name != "manifest.json"]


def test_missing_product_and_404_are_one_line(server: ProductServer, archive: Path, tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"lc of 2CXO J140150\.2-122213 in obsid 90102: the service has none"):
        _fetch(server, tmp_path, products=["lc"], names=[HRC.name], missing_ok=False)
    # listed by browse but gone from the archive: HTTP 404 from retrieveFile
    server.index[(ACIS.obsid, ACIS.obi, ACIS.region_id, "srcreg", "")] = "acisf90101_000N009_r0043_reg3.fits"
    with pytest.raises(ServiceError, match="HTTP 404") as err:
        _fetch(server, tmp_path, products=["reg"], names=[ACIS.name])
    assert "\n" not in str(err.value)


def test_server_down_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServiceError, match=r"cannot connect to .* after 2 attempts") as err:
        fetch_products(ROWS, tmp_path, url=f"http://127.0.0.1:{port}/csccli", retries=1, backoff_s=0.01,
                       timeout_s=5)
    assert "\n" not in str(err.value)


def test_bad_names_and_product_types(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"source '2CXO J000000\.0\+000000' is not in the source table"):
        fetch_products(ROWS, tmp_path, names=["2CXO J000000.0+000000"])
    with pytest.raises(InputError, match="unknown product type 'spectrum'"):
        fetch_products(ROWS, tmp_path, products=["spectrum"])
    with pytest.raises(InputError, match="lacks region_id"):
        resolve_sources([{"name": "x", "obsid": 1, "obi": 0, "instrument": "ACIS"}])


def test_loaded_spectrum_matches_injected_truth(server: ProductServer, tmp_path: Path) -> None:
    res = _fetch(server, tmp_path, names=[ACIS.name])
    files = find_product_files(res[0].path.parent)  # type: ignore[union-attr]
    assert set(files) == {"pha", "arf", "rmf", "lc", "reg", "regevt"}
    spec = load_spectrum(files["pha"])
    model, bkg = expected_channel_counts(ACIS)
    assert spec.bkg_scale == pytest.approx(1 / ACIS.bkg_area_ratio)
    # net counts within 4 sigma of the injected source counts
    sigma = np.sqrt(model.sum() + bkg.sum() / ACIS.bkg_area_ratio + bkg.sum() / ACIS.bkg_area_ratio ** 2)
    assert abs(spec.net_counts - ACIS.src_counts) < 4 * sigma
    assert spec.e_min_kev is not None
    assert spec.e_min_kev[100] == pytest.approx(100 * 0.0146, rel=1e-5)
    # the event list holds exactly the source-region counts, the light curve their times
    with fits.open(files["regevt"]) as h:
        assert len(h["EVENTS"].data) == spec.counts.sum()
    lc = load_light_curve(files["lc"])
    assert np.sum(lc.rate * 1000.0) == pytest.approx(spec.counts.sum(), rel=1e-9)  # 40 bins of 1000 s
    for png in (plot_spectrum(spec, tmp_path / "s.png"), plot_light_curve(lc, tmp_path / "lc.png")):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.shared_data
def test_real_csc_pha3_background_in_second_extension(shared_data: Path) -> None:
    folder = shared_data / "spectra" / "csc1_obs4938_r0043"
    spec = load_spectrum(folder / "acisf04938_000N002_r0043_pha3.fits")
    assert spec.counts.sum() == 2116
    assert spec.bkg_counts is not None
    assert spec.bkg_counts.sum() == 10414
    assert spec.bkg_scale == pytest.approx(0.065766, rel=1e-4)
    assert spec.net_counts == pytest.approx(1431, abs=1)
    # EBOUNDS found beside it in the RMF whose matrix extension is RSP_MATRIX
    assert spec.e_max_kev is not None
    assert spec.e_max_kev[-1] > 10


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such spectrum"):
        load_spectrum(tmp_path / "nothing_pha3.fits")
    fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2)))]).writeto(tmp_path / "img.fits")
    with pytest.raises(InputError, match="no SPECTRUM extension"):
        load_spectrum(tmp_path / "img.fits")
    with pytest.raises(InputError, match="no table with a TIME column"):
        load_light_curve(tmp_path / "img.fits")


@pytest.mark.slow
def test_fit_downloaded_spectrum_recovers_temperature(server: ProductServer, tmp_path: Path) -> None:
    if importlib.util.find_spec("xmine.fit") is None or importlib.util.find_spec("sherpa") is None:
        with pytest.raises(InputError, match="fit extra"):
            fit_product_spectrum(tmp_path / "x_pha3.fits")
        pytest.skip("xmine.fit with sherpa (the fit extra) is not installed")  # an optional extra, as in test_fit
    res = _fetch(server, tmp_path, names=[THERMAL.name], products=["pha", "arf", "rmf"])
    # the response and background are found by the header names of the uncompressed products
    fit = fit_product_spectrum(res[0].path, nh_1e22=0.0, model="bremss")
    assert fit.kt_lo < THERMAL.kt_kev < fit.kt_hi or fit.kt_kev == pytest.approx(THERMAL.kt_kev, rel=0.1)
    assert fit.kt_kev == pytest.approx(THERMAL.kt_kev, rel=0.2)


@pytest.fixture
def xmine_main(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    import xmine.cli as cli

    if "xmine.cli.catalog_tools" not in cli.COMMAND_MODULES:  # until the lead registers the module
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "xmine.cli.catalog_tools"))
    monkeypatch.chdir(tmp_path)
    return cli.main


def test_cli_products_fetch_show_plot(server: ProductServer, xmine_main: Any, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from astropy.table import Table

    Table(rows=[(r["name"], r["obsid"], r["obi"], r["region_id"], r["detect_stack_id"]) for r in ROWS],
          names=["name", "obsid", "obi", "region_id", "detect_stack_id"]).write(tmp_path / "src.ecsv")
    assert xmine_main(["products", "fetch", ACIS.name, "--sources", "src.ecsv", "--url", server.url,
                       "--out", "prod"]) == 0
    out = capsys.readouterr().out
    assert "6 of 6 products in prod" in out
    folder = tmp_path / "prod" / "2CXOJ100030.0+021236" / "90101_000"
    assert xmine_main(["products", "show", str(folder)]) == 0
    assert "net" in capsys.readouterr().out
    assert xmine_main(["products", "plot", str(folder)]) == 0
    assert (folder / "spectrum.png").exists()
    assert (folder / "lightcurve.png").exists()
    # errors: one line, exit 1
    assert xmine_main(["products", "fetch", ACIS.name, "--sources", "src.ecsv", "--url", server.url,
                       "--products", "pha,image"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xmine: error: unknown product type 'image'")
    assert err.count("\n") == 1
    assert xmine_main(["products", "fetch", "2CXO J000000.0+000000", "--sources", "src.ecsv",
                       "--url", server.url]) == 1
    assert "is not in the source table" in capsys.readouterr().err


@pytest.mark.integration
def test_cli_resolves_names_through_tap(dachs: dict[str, str], server: ProductServer, xmine_main: Any,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XMINE_SERVICES__CSC21__TAP_URL", dachs["tap"])
    assert xmine_main(["products", "fetch", "2CXO J000000.0+000000", "--url", server.url]) == 1
    err = capsys.readouterr().err
    assert "not found in csc21.master_source" in err
    assert err.count("\n") == 1
