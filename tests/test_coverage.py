"""Sky coverage from simulated sensitivity maps whose area(S_lim <= S) is known analytically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from xmine.coverage import (
    mosaic_sensitivity,
    pixel_solid_angle_deg2,
    plot_coverage,
    sensitivity_from_exposure,
    sky_coverage,
)
from xmine.errors import InputError

RA0, DEC0 = 150.0, 2.0
PIX = 2.0  # arcsec
S0 = 1e-6  # photon/cm2/s at the centre
R0 = 60.0  # arcsec: S_lim = S0 (1 + (r/R0)^2)
RMAX = 180.0  # arcsec: the map's edge
UNIT = "photon cm-2 s-1"


def _map(path: Path, ra: float, dec: float, n: int = 201, unit: str = UNIT, wcs: bool = True) -> Path:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
    w.wcs.cdelt = [-PIX / 3600, PIX / 3600]
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(xx - (n - 1) / 2, yy - (n - 1) / 2) * PIX
    data = np.where(r <= RMAX, S0 * (1 + (r / R0) ** 2), 0.0)  # 0 = not covered, as outside a field of view
    hdr = w.to_header() if wcs else fits.Header()
    hdr["BUNIT"] = unit
    fits.PrimaryHDU(data, header=hdr).writeto(path)
    return path


def _radius(s: np.ndarray) -> np.ndarray:
    return np.minimum(R0 * np.sqrt(np.clip(s / S0 - 1, 0, None)), RMAX)


def _disc_deg2(rho: np.ndarray) -> np.ndarray:
    return math.pi * rho ** 2 / 3600.0 ** 2


def _union_deg2(rho: np.ndarray, d: float) -> np.ndarray:
    rho = np.asarray(rho, dtype=float)
    lens = np.zeros_like(rho)
    m = 2 * rho > d
    r = rho[m]
    lens[m] = 2 * r ** 2 * np.arccos(d / (2 * r)) - 0.5 * d * np.sqrt(4 * r ** 2 - d ** 2)
    return (2 * math.pi * rho ** 2 - lens) / 3600.0 ** 2


def test_single_map_matches_r_squared_law(tmp_path: Path) -> None:
    mos = mosaic_sensitivity([_map(tmp_path / "a_sens3.fits", RA0, DEC0)])
    assert mos.unit == UNIT
    fluxes = S0 * (1 + (np.array([20.0, 40.0, 80.0, 120.0, 170.0]) / R0) ** 2)
    cov = sky_coverage(mos, fluxes=fluxes)
    want = _disc_deg2(_radius(fluxes))
    # pixelisation: about one pixel-width band of the circle's perimeter
    tol = 2 * math.pi * _radius(fluxes) * PIX / 3600.0 ** 2
    assert np.all(np.abs(cov["area_deg2"] - want) < tol)
    assert np.all(np.abs(cov["area_deg2"] / want - 1) < 0.02)
    assert cov.meta["total_area_deg2"] == pytest.approx(_disc_deg2(np.array(RMAX))[()], rel=0.02)
    assert cov["area_deg2"].unit == "deg2"
    assert np.all(np.diff(sky_coverage(mos)["area_deg2"]) >= 0)


def test_overlapping_maps_take_the_minimum(tmp_path: Path) -> None:
    d = 120.0  # arcsec between the centres, east-west
    dra = d / 3600 / math.cos(math.radians(DEC0))
    maps = [_map(tmp_path / "a.fits", RA0 - dra / 2, DEC0), _map(tmp_path / "b.fits", RA0 + dra / 2, DEC0)]
    mos = mosaic_sensitivity(maps, region=(RA0, DEC0, 0.1))
    fluxes = S0 * (1 + (np.array([30.0, 60.0, 100.0, 150.0, 200.0]) / R0) ** 2)
    cov = sky_coverage(mos, fluxes=fluxes)
    rho = _radius(fluxes)
    want = _union_deg2(rho, d)
    tol = 2 * 2 * math.pi * rho * PIX / 3600.0 ** 2
    assert np.all(np.abs(cov["area_deg2"] - want) < tol)
    assert np.all(np.abs(cov["area_deg2"] / want - 1) < 0.02)
    # the sum of the maps would be far off where they overlap: the minimum is what was taken
    assert cov["area_deg2"][-1] < 0.8 * 2 * _disc_deg2(np.array(RMAX))[()]


def test_region_cuts_the_area(tmp_path: Path) -> None:
    far = _map(tmp_path / "far.fits", RA0 + 1.0, DEC0)  # a stack 1 degree away does not cover the region
    mos = mosaic_sensitivity([_map(tmp_path / "a.fits", RA0, DEC0), far], region=(RA0, DEC0, 60.0 / 3600))
    assert mos.inputs == [str(tmp_path / "a.fits")]
    cov = sky_coverage(mos, fluxes=[S0 * 100])
    assert cov["area_deg2"][0] == pytest.approx(_disc_deg2(np.array(60.0))[()], rel=0.04)
    with pytest.raises(InputError, match="none of the 1 sensitivity maps reaches the region"):
        mosaic_sensitivity([far], region=(RA0, DEC0, 60.0 / 3600))


def test_tan_pixel_area_falls_as_cos_cubed() -> None:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [0.0, 0.0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [-0.1, 0.1]
    a = pixel_solid_angle_deg2(w, (1, 301))
    theta = math.atan(math.radians(30.0))  # pixel 300 lies 30 deg of plane coordinate from the tangent point
    assert a[0, 300] / a[0, 0] == pytest.approx(math.cos(theta) ** 3, rel=1e-3)


def test_map_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has no sky WCS") as err:
        mosaic_sensitivity([_map(tmp_path / "nowcs.fits", RA0, DEC0, wcs=False)])
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="different units"):
        mosaic_sensitivity([_map(tmp_path / "a.fits", RA0, DEC0),
                            _map(tmp_path / "b.fits", RA0, DEC0, unit="erg cm-2 s-1")])
    with pytest.raises(InputError, match="no sensitivity maps"):
        mosaic_sensitivity([])
    with pytest.raises(InputError, match="no such sensitivity map"):
        mosaic_sensitivity([tmp_path / "missing.fits"])


def test_plot(tmp_path: Path) -> None:
    mos = mosaic_sensitivity([_map(tmp_path / "a.fits", RA0, DEC0)])
    png = plot_coverage(sky_coverage(mos), tmp_path / "cov.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hdu = mos.to_hdu()
    assert hdu.header["BUNIT"] == UNIT


def test_cli_coverage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import xmine.cli as cli

    if "xmine.cli.catalog_tools" not in cli.COMMAND_MODULES:  # until the lead registers the module
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "xmine.cli.catalog_tools"))
    monkeypatch.chdir(tmp_path)
    _map(tmp_path / "a.fits", RA0, DEC0)
    assert cli.main(["coverage", "a.fits", "--out", "cov.ecsv", "--plot", "cov.png", "--mosaic", "m.fits"]) == 0
    assert "deg2 covered" in capsys.readouterr().out
    from astropy.table import Table

    cov = Table.read(tmp_path / "cov.ecsv")
    assert cov["area_deg2"][-1] == pytest.approx(_disc_deg2(np.array(RMAX))[()], rel=0.02)
    assert (tmp_path / "cov.png").exists()
    _map(tmp_path / "nowcs.fits", RA0, DEC0, wcs=False)
    assert cli.main(["coverage", "nowcs.fits"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xmine: error: nowcs.fits: the sensitivity map has no sky WCS")
    assert err.count("\n") == 1


def test_sensitivity_from_simulated_exposure_map(tmp_path: Path) -> None:
    from xmine.simulate import demo_truth, make_exposure_map, simulate_observation, write_exposure_map

    truth = demo_truth(2026)
    obsid = int(truth.observations["obsid"][0])
    sim = simulate_observation(truth, obsid, seed=1, include=("particle",), bad_events=False)
    emap = make_exposure_map(sim, bin_px=16.0)
    path = write_exposure_map(emap, tmp_path / "expmap.fits")
    hdu = sensitivity_from_exposure(path, min_counts=10)
    assert hdu.header["BUNIT"] == "count/s"
    expo = fits.getdata(path)
    mos = mosaic_sensitivity([hdu])
    cov = sky_coverage(mos, fluxes=[10 / expo.max() * 1.0001, 1e3])
    # the deepest pixels reach 10 counts / max exposure; every exposed pixel is covered at a huge rate
    assert cov["area_deg2"][0] > 0
    covered = np.count_nonzero(expo > 0) * (16 * 0.492 / 3600) ** 2
    assert cov["area_deg2"][1] == pytest.approx(covered, rel=0.03)

