"""The simulator: event files like the real references, exact WCS, flat-field exposure, counts, catalogues.

Real files are read in place through the ``shared_data`` fixture (skips locally, fails under CI when absent).
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from xmine.errors import InputError
from xmine.simulate import (
    demo_truth,
    load_truth,
    make_catalogs,
    make_exposure_map,
    simulate_cluster_image,
    simulate_observation,
    simulate_sky,
    validate_truth,
    write_catalogs,
    write_event_file,
    write_event_truth,
    write_simulated_image,
    write_truth,
)
from xmine.simulate.acis import ACIS_LAYOUTS, PIXEL_ARCSEC, SKY_REF_PIX, project, unproject, vignetting
from xmine.simulate.catalogs import R95_PER_SIGMA
from xmine.simulate.morphology import BetaComponent, cluster_shape

REF_2ROWS = "events/chandra_mrk1434_obs18059_2rows.fits"
REF_1479 = "events/chandra_obs1479_acis_subset/acis_evt2.fits.gz"
REAL_CSC = "catalogs/csc20_ngc3532_conesearch.csv"
RA0, DEC0 = 150.0, 2.0


# ----------------------------------------------------------------------------- helpers
def _clusters(**over: object) -> Table:
    row = {"name": "C1", "ra_deg": RA0, "dec_deg": DEC0, "z": 0.1, "model": "beta", "rc_arcsec": 30.0,
           "beta": 0.7, "rate_cps": 0.5}
    row.update(over)
    return Table(rows=[tuple(row.values())], names=list(row.keys()))


def _observations(instrument: str = "ACIS-I", roll: float = 37.0, exposure: float = 5000.0, **over: object
                  ) -> Table:
    row = {"obsid": 1234, "cluster": "C1", "ra_pnt": RA0, "dec_pnt": DEC0, "roll_deg": roll,
           "instrument": instrument, "exposure_s": exposure}
    row.update(over)
    return Table(rows=[tuple(row.values())], names=list(row.keys()))


def _grid_points(n_side: int = 5, spacing_arcmin: float = 2.2, rate: float = 0.05) -> Table:
    """Point sources on a grid around the pointing, far enough apart for 25″ apertures."""
    rows = []
    k = 0
    rng = np.random.default_rng(11)
    for i in range(n_side):
        for j in range(n_side):
            east = (i - (n_side - 1) / 2) * spacing_arcmin * 60 + 7.0
            north = (j - (n_side - 1) / 2) * spacing_arcmin * 60 - 5.0
            ra, dec = unproject(east, north, RA0, DEC0)
            k += 1
            kind = ("sine", 0.8, 1500.0) if k % 7 == 0 else (("flare", 5.0, 800.0) if k % 11 == 0
                                                            else ("none", 0.0, 5000.0))
            rows.append((f"P{k}", float(ra), float(dec), rate * float(rng.uniform(0.3, 1.5)),
                         float(rng.uniform(1.2, 2.4)), *kind))
    return Table(rows=rows, names=["name", "ra_deg", "dec_deg", "rate_cps", "gamma", "var_kind", "var_amp",
                                   "var_period_s"])


def _sky_wcs(header: fits.Header) -> WCS:
    """The sky WCS of an event file, built from the TC* keywords of the x, y columns."""
    names = [header[f"TTYPE{i}"] for i in range(1, header["TFIELDS"] + 1)]
    cols = [names.index("x") + 1, names.index("y") + 1]
    w = WCS(naxis=2)
    w.wcs.ctype = [header[f"TCTYP{c}"] for c in cols]
    w.wcs.crval = [header[f"TCRVL{c}"] for c in cols]
    w.wcs.crpix = [header[f"TCRPX{c}"] for c in cols]
    w.wcs.cdelt = [header[f"TCDLT{c}"] for c in cols]
    w.wcs.cunit = [header[f"TCUNI{c}"] for c in cols]
    w.wcs.radesys = header["RADESYS"]
    return w


def _pixel_list_wcs(header: fits.Header) -> WCS:
    """The same through astropy's pixel-list reader (``keysel=['pixel']``), as for the real files."""
    names = [header[f"TTYPE{i}"] for i in range(1, header["TFIELDS"] + 1)]
    cols = [names.index("x") + 1, names.index("y") + 1]
    with warnings.catch_warnings():
        # astropy notes that DATE-OBS is an image keyword in a binary table: true of every real evt2 too
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, keysel=["pixel"], colsel=cols)


@pytest.fixture(scope="module")
def small_obs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A short ACIS-I observation with a cluster, point sources and background, written to disk."""
    truth = validate_truth(_clusters(rate_cps=0.3), _grid_points(rate=0.04), _observations(exposure=8000.0))
    sim = simulate_observation(truth, 1234, seed=7)
    out = tmp_path_factory.mktemp("obs")
    evt = write_event_file(sim, out / "1234" / "primary" / "acisf01234N001_evt2.fits")
    tru = write_event_truth(sim, out / "1234" / "secondary" / "acisf01234N001_truth.fits")
    return {"truth": truth, "sim": sim, "evt": evt, "truth_file": tru}


# ----------------------------------------------------------------------------- event-file layout
@pytest.mark.shared_data
def test_event_columns_dtypes_and_wcs_keywords_match_real_evt2(shared_data: Path, small_obs: dict) -> None:
    with fits.open(shared_data / REF_2ROWS) as ref, fits.open(small_obs["evt"]) as sim:
        r, s = ref["EVENTS"], sim["EVENTS"]
        assert s.columns.names == r.columns.names
        assert [c.format for c in s.columns] == [c.format for c in r.columns]
        assert s.header["TFORM19"] == "32X"
        assert [c.unit for c in s.columns] == [c.unit for c in r.columns]
        assert [s.data.dtype[i].base for i in range(19)] == [r.data.dtype[i].base for i in range(19)]
        assert s.data["status"].shape[1:] == r.data["status"].shape[1:] == (32,)
        rh, sh = r.header, s.header
        for i in range(1, 20):
            for key in ("TLMIN", "TLMAX", "TNULL", "TCTYP", "TCRPX", "TCUNI"):
                assert sh.get(f"{key}{i}") == rh.get(f"{key}{i}"), f"{key}{i}"
            for key in ("TCDLT",):
                if f"{key}{i}" in rh:
                    assert sh[f"{key}{i}"] == pytest.approx(rh[f"{key}{i}"], rel=1e-9), f"{key}{i}"
        assert (sh["TCTYP11"], sh["TCTYP12"]) == ("RA---TAN", "DEC--TAN")
        assert (sh["TCRVL11"], sh["TCRVL12"]) == (sh["RA_NOM"], sh["DEC_NOM"])
        for key in ("TELESCOP", "INSTRUME", "DETNAM", "OBS_ID", "DATE-OBS", "DATE-END", "TSTART", "TSTOP",
                    "MJDREF", "TIMESYS", "TIMEDEL", "EXPOSURE", "LIVETIME", "ONTIME", "RA_PNT", "DEC_PNT",
                    "ROLL_PNT", "RA_NOM", "DEC_NOM", "ROLL_NOM", "EXPTIME", "DTCOR", "DATAMODE", "HDUNAME"):
            assert key in sh, key
            assert type(sh[key]) is type(rh[key]), key
        assert sh["MJDREF"] == rh["MJDREF"] == 50814.0
        assert sh["TIMESYS"] == "TT"
        assert sh["TELESCOP"] == "CHANDRA"
        assert sh["DETNAM"] == "ACIS-0123"
        assert sh["TIMEDEL"] == pytest.approx(3.24104)
        assert sh["EXPOSURE"] == pytest.approx(sh["ONTIME"] * sh["DTCOR"])
        # DATE-OBS = MJDREF (TT) + TSTART, as in the reference
        for h in (rh, sh):
            start = Time(h["MJDREF"], h["TSTART"] / 86400.0, format="mjd", scale="tt")
            assert abs((start - Time(h["DATE-OBS"], scale="tt")).sec) < 1.0
        d = s.data
        for name in d.columns.names:  # the raw writer stores exactly the simulated values
            assert np.array_equal(d[name], small_obs["sim"].columns[name]), name
        assert d["status"].any()
        assert d["ccd_id"].min() >= 0
        assert set(np.unique(d["ccd_id"])) <= {0, 1, 2, 3}
        assert d["chipx"].min() >= 1
        assert d["chipx"].max() <= 1024
        assert np.all(np.diff(d["time"]) >= 0)
        assert np.all(d["pi"] == np.clip(np.floor(d["energy"] / 14.6).astype(int) + 1, 1, 1024))
        good = np.isin(d["grade"], [0, 2, 3, 4, 6])
        assert 0.9 < good.mean() < 0.995
        assert 0.98 < (~d["status"].any(axis=1)).mean() < 1.0


@pytest.mark.shared_data
def test_gti_extension_per_ccd_like_obs1479(shared_data: Path, small_obs: dict) -> None:
    with fits.open(shared_data / REF_1479) as ref, fits.open(small_obs["evt"]) as sim:
        ref_gtis = [h for h in ref if h.name == "GTI"]
        sim_gtis = [h for h in sim if h.name == "GTI"]
        assert [h.header["CCD_ID"] for h in sim_gtis] == [0, 1, 2, 3]
        for g in sim_gtis:
            assert g.columns.names == ref_gtis[0].columns.names == ["START", "STOP"]
            assert [c.format for c in g.columns] == [c.format for c in ref_gtis[0].columns]
            assert [c.unit for c in g.columns] == ["s", "s"]
            assert g.header["HDUNAME"] == f"GTI{g.header['CCD_ID']}"
            assert g.header["EXTVER"] == g.header["CCD_ID"]
            for key in ("MJDREF", "TIMESYS", "TSTART", "TSTOP"):
                assert key in g.header
                assert key in ref_gtis[0].header
        ev = sim["EVENTS"].data
        for g in sim_gtis:
            t = ev["time"][ev["ccd_id"] == g.header["CCD_ID"]]
            inside = np.zeros(t.size, dtype=bool)
            for start, stop in g.data:
                inside |= (t >= start) & (t < stop)
            assert inside.all()
        head = sim["EVENTS"].header
        for g in sim_gtis:  # ONTIMEn is the sum of CCD n's GTIs; ONTIME that of the aimpoint chip (I3)
            ontime = sum(float(r["STOP"] - r["START"]) for r in g.data)
            assert ontime == pytest.approx(head[f"ONTIME{g.header['CCD_ID']}"])
            assert head[f"EXPOSUR{g.header['CCD_ID']}"] == pytest.approx(ontime * head["DTCOR"])
        assert head["ONTIME"] == pytest.approx(head["ONTIME3"])
        # one CCD has a short telemetry dropout, as CCDs 3 and 6 of ObsID 1479 do
        assert sorted(len(g.data) for g in sim_gtis) == [1, 1, 1, 2]
        assert sorted(len(g.data) for g in ref_gtis) == [1, 1, 1, 2, 2]
        assert sim["EVENTS"].header["DSREF1"] == ":GTI0"


def test_acis_s_layout_and_aimpoint() -> None:
    lay = ACIS_LAYOUTS["ACIS-S"]
    assert lay.detnam == "ACIS-456789"
    ccd, cx, cy = lay.locate(np.array([SKY_REF_PIX]), np.array([SKY_REF_PIX]))
    assert ccd[0] == 7
    assert (int(cx[0]) + 1, int(cy[0]) + 1) == (210, 520)
    ox, _ = lay.origin_arrays()
    gaps = np.diff(np.sort(ox)) - 1024
    assert np.allclose(gaps * PIXEL_ARCSEC, 17.7, atol=0.1)
    ccd, *_ = ACIS_LAYOUTS["ACIS-I"].locate(np.array([SKY_REF_PIX]), np.array([SKY_REF_PIX]))
    assert ccd[0] == 3


# ----------------------------------------------------------------------------- WCS round trip
def test_sky_positions_round_trip_through_the_file_wcs(small_obs: dict) -> None:
    header = fits.getheader(small_obs["evt"], "EVENTS")
    wcs = _sky_wcs(header)
    rng = np.random.default_rng(3)
    ra = RA0 + rng.uniform(-0.2, 0.2, 500)
    dec = DEC0 + rng.uniform(-0.2, 0.2, 500)
    xi, eta = project(ra, dec, header["RA_NOM"], header["DEC_NOM"])
    x = SKY_REF_PIX - xi / PIXEL_ARCSEC
    y = SKY_REF_PIX + eta / PIXEL_ARCSEC
    px, py = wcs.all_world2pix(ra, dec, 1)
    assert np.max(np.hypot(px - x, py - y)) * PIXEL_ARCSEC < 1e-4
    px2, py2 = _pixel_list_wcs(header).all_world2pix(ra, dec, 1)
    assert np.max(np.hypot(px2 - x, py2 - y)) * PIXEL_ARCSEC < 1e-4
    back_ra, back_dec = wcs.all_pix2world(x, y, 1)
    sep = SkyCoord(back_ra, back_dec, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).arcsec
    assert sep.max() < 1e-4
    ura, udec = unproject(xi, eta, header["RA_NOM"], header["DEC_NOM"])
    assert np.allclose(ura, ra, atol=1e-10)
    assert np.allclose(udec, dec, atol=1e-10)


def test_bright_source_events_centre_on_truth_within_0p1_arcsec(tmp_path: Path) -> None:
    ra, dec = unproject(25.0, -40.0, RA0, DEC0)
    pts = Table(rows=[("BRIGHT", float(ra), float(dec), 2.0)], names=["name", "ra_deg", "dec_deg", "rate_cps"])
    truth = validate_truth(_clusters(rate_cps=0.0), pts, _observations(roll=123.0, exposure=3000.0))
    sim = simulate_observation(truth, 1234, seed=1, include=("points",))
    evt = write_event_file(sim, tmp_path / "evt2.fits")
    with fits.open(evt) as h:
        d, header = h["EVENTS"].data, h["EVENTS"].header
    assert d.size > 5000
    core = np.hypot(d["x"] - np.median(d["x"]), d["y"] - np.median(d["y"])) < 6
    mx, my = float(np.mean(d["x"][core])), float(np.mean(d["y"][core]))
    err = float(np.std(d["x"][core])) / math.sqrt(core.sum()) * PIXEL_ARCSEC
    mra, mdec = _sky_wcs(header).all_pix2world([mx], [my], 1)
    sep = SkyCoord(mra, mdec, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).arcsec[0]
    assert sep < 0.1
    assert sep < 4 * err + 0.01
    # dither moves the source on the detector by the ±8″ Lissajous pattern
    assert 8.0 < np.ptp(d["detx"][core]) * PIXEL_ARCSEC < 25.0


# ----------------------------------------------------------------------------- exposure map
@pytest.mark.parametrize(("instrument", "roll"), [("ACIS-I", 37.0), ("ACIS-S", 300.0)])
def test_flat_sky_divided_by_exposure_is_flat_across_chip_edges(instrument: str, roll: float) -> None:
    # flat sky (uniform on the sky) plus particle background (uniform on the chips): both follow the exposure map
    obs = _observations(instrument, roll, exposure=15000.0, sky_bg_cps_arcmin2=0.04, particle_bg_cps_arcmin2=0.01)
    truth = validate_truth(_clusters(rate_cps=0.0), None, obs)
    sim = simulate_observation(truth, 1234, seed=3, vignetted=False, include=("sky", "particle"))
    emap = make_exposure_map(sim, bin_px=8)
    ix, iy = emap.pixel_of(sim.columns["x"].astype(float), sim.columns["y"].astype(float))
    img = np.zeros(emap.data.shape)
    np.add.at(img, (iy, ix), 1)
    assert img.sum() == sim.n_events  # every event falls inside the map
    e = emap.data.astype(float)
    assert e.max() == pytest.approx(sim.livetime_s, rel=1e-6)
    emax = e.max()
    full = e > 0.99 * emax
    rate_full = img[full].sum() / e[full].sum()
    assert img[e < 1e-3 * emax].sum() < 1e-4 * sim.n_events  # (2×2 sub-samples can all miss a sliver)
    for lo, hi in ((0.1, 0.4), (0.4, 0.7), (0.7, 0.95)):
        edge = (e > lo * emax) & (e <= hi * emax)
        n = img[edge].sum()
        ratio = n / e[edge].sum() / rate_full
        assert n > 2000
        assert abs(ratio - 1) < 0.05, (lo, hi, ratio)
    # the per-pixel scatter of counts / exposure is Poisson, not structured
    good = e > 0.2 * emax
    resid = (img[good] - rate_full * e[good]) / np.sqrt(rate_full * e[good])
    assert abs(resid.mean()) < 0.05
    assert 0.9 < resid.std() < 1.1


def test_vignetting_and_off_axis_psf() -> None:
    obs = _observations(exposure=20000.0, sky_bg_cps_arcmin2=0.05, particle_bg_cps_arcmin2=0.0)
    truth = validate_truth(_clusters(rate_cps=0.0), None, obs)
    sim = simulate_observation(truth, 1234, seed=5, include=("sky",))
    emap = make_exposure_map(sim, bin_px=16, vignetted=True)
    flat = make_exposure_map(sim, bin_px=16, vignetted=False)
    ix, iy = emap.pixel_of(sim.columns["x"].astype(float), sim.columns["y"].astype(float))
    img = np.zeros(emap.data.shape)
    np.add.at(img, (iy, ix), 1)
    good = flat.data > 0.95 * flat.data.max()
    ratio = img[good].sum() / emap.data[good].sum()
    assert abs(img[good] / emap.data[good] / ratio - 1).mean() < 0.2
    yc, xc = np.nonzero(good)
    th = np.hypot(emap.x0 + (xc + 0.5) * 16 - SKY_REF_PIX, emap.y0 + (yc + 0.5) * 16 - SKY_REF_PIX) * PIXEL_ARCSEC / 60
    inner, outer = th < 3, th > 8
    measured = (img[good][outer].sum() / flat.data[good][outer].sum()) / (
        img[good][inner].sum() / flat.data[good][inner].sum())
    expected = vignetting(th[outer]).mean() / vignetting(th[inner]).mean()
    assert measured == pytest.approx(expected, abs=0.03)
    # PSF: an 8′ source is much wider than an on-axis one
    ra1, dec1 = unproject(10.0, 10.0, RA0, DEC0)
    ra2, dec2 = unproject(-300.0, -340.0, RA0, DEC0)
    pts = Table(rows=[("ON", float(ra1), float(dec1), 0.5), ("OFF", float(ra2), float(dec2), 0.5)],
                names=["name", "ra_deg", "dec_deg", "rate_cps"])
    t2 = validate_truth(_clusters(rate_cps=0.0), pts, _observations(exposure=4000.0))
    s2 = simulate_observation(t2, 1234, seed=2, include=("points",))
    widths = []
    for sid in (2, 3):
        m = s2.src_id == sid
        widths.append(np.median(np.hypot(s2.columns["x"][m] - np.median(s2.columns["x"][m]),
                                         s2.columns["y"][m] - np.median(s2.columns["y"][m]))))
    assert widths[1] > 4 * widths[0]


# ----------------------------------------------------------------------------- counts
def test_point_source_counts_match_truth_within_poisson(small_obs: dict) -> None:
    with fits.open(small_obs["evt"]) as h:
        d = h["EVENTS"].data
    src = Table.read(small_obs["truth_file"], hdu="SOURCES")
    src_id = Table.read(small_obs["truth_file"], hdu="EVENT_SRC")["src_id"]
    assert len(src_id) == len(d)
    points = src[src["kind"] == "point"]
    assert len(points) == 25
    chi2, dof = 0.0, 0
    for row in points:
        n_file = int(np.count_nonzero(src_id == row["src_id"]))
        assert n_file == row["simulated_counts"]
        exp = float(row["expected_counts"])
        if exp < 5:
            continue
        assert abs(n_file - exp) < 4 * math.sqrt(exp), row["name"]
        chi2 += (n_file - exp) ** 2 / exp
        dof += 1
        # a 25″ aperture around the truth position holds the source (plus a little background)
        r = np.hypot(d["x"] - row["x"], d["y"] - row["y"]) * PIXEL_ARCSEC
        in_ap = r < 25.0
        assert np.count_nonzero(in_ap & (src_id == row["src_id"])) >= 0.995 * n_file
    assert dof >= 20
    assert chi2 < dof + 4 * math.sqrt(2 * dof)
    # the cluster and backgrounds are there too
    assert np.count_nonzero(src_id == 1) == pytest.approx(src["expected_counts"][src["kind"] == "cluster"][0],
                                                          rel=0.05)
    assert np.count_nonzero(src_id == -1) > 0
    assert np.count_nonzero(src_id == 0) > 0


def test_aperture_counts_without_background_match_expected_counts() -> None:
    truth = validate_truth(_clusters(rate_cps=0.0), _grid_points(rate=0.06), _observations("ACIS-S", 200.0))
    sim = simulate_observation(truth, 1234, seed=11, include=("points",))
    x, y = sim.columns["x"], sim.columns["y"]
    chi2, dof = 0.0, 0
    for row in sim.sources:
        exp = float(row["expected_counts"])
        if exp < 5:
            continue
        n = int(np.count_nonzero(np.hypot(x - row["x"], y - row["y"]) * PIXEL_ARCSEC < 30.0))
        assert abs(n - exp) < 4 * math.sqrt(exp), row["name"]
        chi2 += (n - exp) ** 2 / exp
        dof += 1
    assert dof >= 8
    assert chi2 < dof + 4 * math.sqrt(2 * dof)


def test_variability_and_flare_light_curves() -> None:
    ra, dec = unproject(30.0, 30.0, RA0, DEC0)
    pts = Table(rows=[("VAR", float(ra), float(dec), 1.0, "sine", 0.8, 2000.0)],
                names=["name", "ra_deg", "dec_deg", "rate_cps", "var_kind", "var_amp", "var_period_s"])
    obs = _observations(exposure=10000.0, flare=True, flare_amp=8.0, particle_bg_cps_arcmin2=2e-3)
    truth = validate_truth(_clusters(rate_cps=0.0), pts, obs)
    sim = simulate_observation(truth, 1234, seed=4, include=("points", "particle", "flare"))
    t = sim.columns["time"]
    lc, _ = np.histogram(t[sim.src_id == 2], bins=50)
    assert lc.max() > 4 * max(lc.min(), 1)  # (1 + 0.8) / (1 − 0.8) = 9 peak to trough
    span = sim.gti_stop - sim.gti_start
    bg = sim.src_id < 0
    in_flare = (t > sim.gti_start + 0.57 * span) & (t < sim.gti_start + 0.68 * span)
    quiet = (t < sim.gti_start + 0.5 * span)
    rate_flare = np.count_nonzero(bg & in_flare) / (0.11 * span)
    rate_quiet = np.count_nonzero(bg & quiet) / (0.5 * span)
    assert rate_flare / rate_quiet == pytest.approx(9.0, rel=0.15)
    assert np.count_nonzero(sim.src_id == -2) > 0


def test_beta_sampling_matches_density_and_cold_front_jump() -> None:
    comp = BetaComponent(1.0, 20.0, 0.7, q=0.7, pa_deg=40.0)
    rng = np.random.default_rng(0)
    xi, eta = comp.sample(400_000, rng)
    edges = np.linspace(-100, 100, 41)
    hist, _, _ = np.histogram2d(xi, eta, bins=[edges, edges])
    centres = 0.5 * (edges[1:] + edges[:-1])
    dens = comp.density(centres[:, None], centres[None, :]) * 25.0 * 400_000
    big = dens > 200
    assert np.abs((hist[big] - dens[big]) / np.sqrt(dens[big])).mean() < 1.5
    shape = cluster_shape({"model": "beta", "rc_arcsec": 20.0, "beta": 0.7, "cf_radius_arcsec": 60.0,
                           "cf_angle_deg": 90.0, "cf_jump": 3.0})
    xi, eta, _ = shape.sample_positions(800_000, rng)
    r = np.hypot(xi, eta)
    east = np.abs(np.degrees(np.arctan2(xi, eta)) - 90.0) < 30
    west = np.abs(np.degrees(np.arctan2(-xi, eta)) - 90.0) < 30
    ring_in = (r > 50) & (r < 60)
    ring_out = (r > 60) & (r < 70)
    jump_e = (np.count_nonzero(east & ring_in) / np.count_nonzero(east & ring_out))
    jump_w = (np.count_nonzero(west & ring_in) / np.count_nonzero(west & ring_out))
    assert jump_e / jump_w == pytest.approx(3.0, rel=0.1)


# ----------------------------------------------------------------------------- catalogues
def _parse_cell(text: str) -> object:
    s = text.strip()
    if s == "":
        return None
    if s.upper() in {"TRUE", "FALSE"}:
        return s.upper() == "TRUE"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def _read_catalog_csv(path: Path) -> dict[str, list[object]]:
    """Parse a CSC CSV as a user would: trimmed cells, TRUE/FALSE/False/true → bool, sexagesimal → degrees."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    cols: dict[str, list[object]] = {h: [] for h in header}
    for r in rows[1:]:
        for h, cell in zip(header, r, strict=True):
            if h in cols and len(cols[h]) < len(rows):  # pandas-style duplicates (.1) are distinct names
                cols[h].append(_parse_cell(cell))
    for h, unit in (("ra", "hourangle"), ("dec", "deg")):
        vals = cols[h]
        if any(isinstance(v, str) for v in vals):
            cols[h] = [Angle(str(v).strip(), unit=unit).deg if v is not None else None for v in vals]
    return cols


def _check_csc_master_columns(cols: dict[str, list[object]]) -> None:
    """One type/range checker for real and simulated CSC master-source rows."""
    n = len(cols["name"])
    assert n > 0
    assert all(isinstance(v, str) and re.fullmatch(r"2CXO J\d{6}\.\d[+-]\d{6}X?", v) for v in cols["name"])
    for col, lo, hi in (("ra", 0, 360), ("dec", -90, 90), ("err_ellipse_r0", 0, 600), ("err_ellipse_r1", 0, 600),
                        ("err_ellipse_ang", 0, 360), ("significance", 0, 1e5)):
        vals = cols[col]
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals), col
        arr = np.array(vals, dtype=float)
        assert np.all((arr >= lo) & (arr <= hi)), col
    r0, r1 = np.array(cols["err_ellipse_r0"], float), np.array(cols["err_ellipse_r1"], float)
    assert np.all(r0 >= r1)
    assert np.all(r1 > 0)
    for flag in ("conf_flag", "extent_flag", "sat_src_flag", "streak_src_flag", "var_flag"):
        assert all(isinstance(v, bool) for v in cols[flag]), flag
    assert set(cols["likelihood_class"]) <= {"TRUE", "MARGINAL", True}  # TRUE parses like a boolean
    idx = [v for v in cols["var_intra_index_b"] if v is not None]
    assert all(isinstance(v, int) and 0 <= v <= 10 for v in idx)
    flux = [v for v in cols["flux_aper90_b" if "flux_aper90_b" in cols else "flux_aper_b"] if v is not None]
    assert all(isinstance(v, float) and 0 <= v < 1e-8 for v in flux)


@pytest.fixture(scope="module")
def demo_catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    cats = make_catalogs(demo_truth(), seed=3)
    out = tmp_path_factory.mktemp("cats")
    return {"cats": cats, "files": write_catalogs(cats, out), "dir": out}


@pytest.mark.shared_data
def test_catalog_rows_pass_the_same_checks_as_real_csc_rows(shared_data: Path, demo_catalogs: dict) -> None:
    real = _read_catalog_csv(shared_data / REAL_CSC)
    _check_csc_master_columns(real)
    files = demo_catalogs["files"]
    sim = _read_catalog_csv(files["csc21/master_source.csv"])
    assert list(sim) == ["name", "ra", "dec", "err_ellipse_r0", "err_ellipse_r1", "err_ellipse_ang", "conf_flag",
                         "extent_flag", "sat_src_flag", "streak_src_flag", "var_flag", "significance",
                         "likelihood_class", "flux_aper_b", "flux_aper_w", "hard_hs", "hard_ms", "hard_hm",
                         "var_intra_index_b", "acis_num", "hrc_num"]
    _check_csc_master_columns(sim)
    fits_table = Table.read(files["csc21/master_source.fits"])
    _check_csc_master_columns({c: [v.item() if hasattr(v, "item") else v for v in fits_table[c]]
                               for c in fits_table.colnames})
    assert str(fits_table["err_ellipse_r0"].unit) == "arcsec"
    assert fits_table["flux_aper_b"].unit.is_equivalent("erg cm-2 s-1")
    for col in fits_table.colnames:
        assert fits_table[col].dtype.kind != "O", col
    names = np.asarray(fits_table["name"]).astype(str)
    assert sum(n.endswith("X") for n in names) == 3  # the three clusters
    assert np.all(fits_table["extent_flag"] == np.char.endswith(names, "X"))


@pytest.mark.shared_data
def test_dachs_csv_headers_match_the_local_server(shared_data: Path, demo_catalogs: dict) -> None:
    rd = shared_data.parent / "tools" / "dachs"
    if not (rd / "csc21" / "q.rd").exists():
        pytest.skip(f"{rd} (the DaCHS resource descriptors) is absent")
    files = demo_catalogs["files"]
    for ours, qrd, table in (("csc21/master_source.csv", "csc21/q.rd", "master_source"),
                             ("csc21/master_stack_assoc.csv", "csc21/q.rd", "master_stack_assoc"),
                             ("csc21/stack_observation_assoc.csv", "csc21/q.rd", "stack_observation_assoc"),
                             ("xmm/epic_source_cat.csv", "xmm/q.rd", "catalogue")):
        text = (rd / qrd).read_text()
        block = text.split(f'<table id="{table}"', 1)[1].split("</table>", 1)[0]
        expected = re.findall(r'<column name="([^"]+)"', block)
        assert files[ours].read_text().splitlines()[0].split(",") == expected
    cats = demo_catalogs["cats"]
    ids = cats.csc_master_stack_assoc["detect_stack_id"]
    assert all(re.fullmatch(r"acisfJ\d{7}[pm]\d{6}_\d{3}", s) for s in ids)
    keys = {(s, r) for s, r in cats.csc_stack_observation_assoc["detect_stack_id", "region_id"]}
    assert {(s, r) for s, r in cats.csc_master_stack_assoc["detect_stack_id", "region_id"]} == keys
    assert set(cats.csc_stack_observation_assoc["obsid"]) <= set(cats.csc_observations["obsid"])
    assert set(cats.csc_master_stack_assoc["name"]) == set(cats.csc_master_source["name"])


def test_error_conventions_csc_95_percent_and_xmm_1_sigma() -> None:
    rng = np.random.default_rng(8)
    n = 400
    east, north = rng.uniform(-420, 420, n), rng.uniform(-420, 420, n)
    ra, dec = unproject(east, north, RA0, DEC0)
    pts = Table({"name": [f"S{i}" for i in range(n)], "ra_deg": ra, "dec_deg": dec,
                 "rate_cps": 10 ** rng.uniform(-3.3, -1.5, n), "gamma": rng.uniform(1.2, 2.4, n)})
    obs = Table(rows=[(1, "", RA0, DEC0, 10.0, "ACIS-I", 40000.0), (2, "", RA0 + 0.02, DEC0, 100.0, "ACIS-I",
                                                                      20000.0)],
                names=["obsid", "cluster", "ra_pnt", "dec_pnt", "roll_deg", "instrument", "exposure_s"])
    truth = validate_truth(_clusters(rate_cps=0.5), pts, obs)
    cats = make_catalogs(truth, seed=2)
    master, match = cats.csc_master_source, cats.truth_match
    csc = match[match["catalogue"] == "csc21"]
    assert 50 < len(master) < n  # a detection threshold: faint sources are missed
    assert len(csc) == len(master)
    assert len(set(master["name"])) == len(master)  # the DaCHS primary key
    assert len(set(cats.xmm_sources["SRCID"])) == len(cats.xmm_sources)
    # r0, r1 are 95 % radii: √χ²₂(0.95) = 2.448 times the 1σ per-axis error (slightly elongated ellipses)
    geo = np.sqrt(master["err_ellipse_r0"] * master["err_ellipse_r1"])
    pts_only = ~master["extent_flag"]
    assert np.allclose(geo[pts_only] / csc["pos_err_1sigma_arcsec"][pts_only], R95_PER_SIGMA, rtol=0.012)
    assert pytest.approx(2.4477, abs=1e-4) == R95_PER_SIGMA
    # the truth falls inside the 95 % ellipse about 95 % of the time
    inside = []
    for m, t in zip(master[pts_only], csc[pts_only], strict=True):
        de, dn = project(t["ra_true"], t["dec_true"], m["ra"], m["dec"])
        a = math.radians(m["err_ellipse_ang"])
        u = de * math.sin(a) + dn * math.cos(a)
        v = de * math.cos(a) - dn * math.sin(a)
        inside.append((u / m["err_ellipse_r0"]) ** 2 + (v / m["err_ellipse_r1"]) ** 2 <= 1)
    assert 0.91 < np.mean(inside) < 0.985
    # 4XMM: SC_POSERR is the 1σ error per coordinate
    src = cats.xmm_sources
    xm = match[match["catalogue"] == "4xmm"]
    de, dn = project(xm["ra_true"], xm["dec_true"], xm["ra_cat"], xm["dec_cat"])
    z = np.concatenate([de, dn]) / np.concatenate([src["SC_POSERR"], src["SC_POSERR"]])
    assert np.std(z) == pytest.approx(1.0, abs=0.12)
    assert np.all(src["SC_POSERR"] > 0)
    det = cats.xmm_detections
    for srcid in np.unique(det["SRCID"]):
        rows = det[det["SRCID"] == srcid]
        assert len(rows) == rows["N_DETECTIONS"][0]
        assert len(set(rows["IAUNAME"])) == 1
        assert len(set(rows["OBS_ID"])) == len(rows)
    assert len(set(det["DETID"])) == len(det)
    assert any(det["N_DETECTIONS"] > 1)
    assert all(re.fullmatch(r"4XMM J\d{6}\.\d[+-]\d{6}", s) for s in src["IAUNAME"])
    ext = src[src["SC_EXTENT"] > 0]
    assert len(ext) == 1
    assert ext["SC_EXT_ML"][0] > 6
    assert np.all(np.isnan(src["SC_EXT_ML"][src["SC_EXTENT"] == 0]))


# ----------------------------------------------------------------------------- bad input
def _write(tmp_path: Path, clusters: Table, points: Table | None, obs: Table) -> Path:
    clusters.write(tmp_path / "clusters.ecsv")
    if points is not None:
        points.write(tmp_path / "point_sources.csv")
    obs.write(tmp_path / "observations.ecsv")
    return tmp_path


def test_bad_truth_names_row_and_column(tmp_path: Path) -> None:
    pts = Table(rows=[("P1", RA0, DEC0, 0.1), ("P2", RA0, DEC0, -1.0)], names=["name", "ra_deg", "dec_deg",
                                                                               "rate_cps"])
    cases = [
        (_clusters(dec_deg=95.0), None, _observations(),
         r"^clusters\.ecsv row 1 \(C1\): column dec_deg = 95\.0 is outside \[-90, 90\]$"),
        (_clusters(), pts, _observations(),
         r"^point_sources\.csv row 2 \(P2\): column rate_cps = -1\.0 is outside .*must not be negative$"),
        (_clusters(), None, _observations(instrument="HRC-I"),
         r"^observations\.ecsv row 1 \(1234\): column instrument = 'HRC-I' is not one of ACIS-I, ACIS-S$"),
        (_clusters(), None, _observations(exposure=0.0),
         r"^observations\.ecsv row 1 \(1234\): column exposure_s = 0\.0 is outside \(0, "),
        (_clusters(model="king"), None, _observations(), r"row 1 \(C1\): column model = 'king'"),
        (_clusters(model="double_beta"), None, _observations(), r"row 1 \(C1\): column rc2_arcsec is empty"),
        (_clusters(), None, _observations(cluster="NOPE"), r"row 1 \(1234\): column cluster = 'NOPE'"),
    ]
    for i, (c, p, o, pattern) in enumerate(cases):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        with pytest.raises(InputError, match=pattern) as info:
            load_truth(_write(folder, c, p, o))
        assert "\n" not in str(info.value)
    missing = _clusters()
    missing.remove_column("rate_cps")
    folder = tmp_path / "missing"
    folder.mkdir()
    with pytest.raises(InputError, match=r"^clusters\.ecsv: missing column 'rate_cps'"):
        load_truth(_write(folder, missing, None, _observations()))
    with pytest.raises(InputError, match="no observations table"):
        load_truth([folder / "clusters.ecsv"])
    bad_csv = tmp_path / "observations.csv"
    bad_csv.write_text("obsid,ra_pnt,dec_pnt,roll_deg,instrument,exposure_s\n7,150,2,0,ACIS-I,abc\n")
    good = tmp_path / "clusters.ecsv"
    _clusters().write(good)
    with pytest.raises(InputError, match=r"observations\.csv row 1 \(7\): column exposure_s = 'abc' is not a number"):
        load_truth([good, bad_csv])


@pytest.mark.parametrize("fmt", ["ecsv", "csv", "fits", "parquet"])
def test_truth_round_trips_through_every_format(tmp_path: Path, fmt: str) -> None:
    truth = demo_truth()
    files = write_truth(truth, tmp_path, fmt=fmt)
    assert [f.name for f in files] == [f"{n}.{fmt}" for n in ("clusters", "point_sources", "observations")]
    back = load_truth(tmp_path)
    for name, table in truth.tables().items():
        other = back.tables()[name]
        assert other.colnames[: len(table.colnames)] == table.colnames
        for col in table.colnames:
            a, b = np.asarray(table[col]), np.asarray(other[col])
            if a.dtype.kind == "f":
                assert np.allclose(a, b, equal_nan=True), (name, col)
            else:
                assert list(a) == list(b), (name, col)


# ----------------------------------------------------------------------------- determinism and demo
def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    truth = validate_truth(_clusters(rate_cps=0.2), _grid_points(3), _observations(exposure=2000.0))
    paths = []
    for k, seed in enumerate((5, 5, 6)):
        sim = simulate_observation(truth, 1234, seed=seed)
        paths.append(write_event_file(sim, tmp_path / f"e{k}.fits"))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()
    a = simulate_cluster_image(64, total_counts=1e4, n_point_sources=3, background_per_pixel=0.1, seed=9)
    b = simulate_cluster_image(64, total_counts=1e4, n_point_sources=3, background_per_pixel=0.1, seed=9)
    c = simulate_cluster_image(64, total_counts=1e4, n_point_sources=3, background_per_pixel=0.1, seed=10)
    assert np.array_equal(a.counts, b.counts)
    assert np.array_equal(a.background, b.background)
    assert not np.array_equal(a.counts, c.counts)
    ca, cb = make_catalogs(truth, seed=1), make_catalogs(truth, seed=1)
    assert all(np.array_equal(np.asarray(x[col]), np.asarray(y[col])) or (x[col].dtype.kind == "f"
               and np.allclose(x[col], y[col], equal_nan=True))
               for x, y in zip(ca.tables().values(), cb.tables().values(), strict=True) for col in x.colnames)
    assert demo_truth(1).point_sources["ra_deg"][0] != demo_truth(2).point_sources["ra_deg"][0]


def test_simulate_sky_writes_archive_layout(tmp_path: Path) -> None:
    truth = demo_truth()
    truth.observations["exposure_s"] = 1500.0  # short, for speed
    products = simulate_sky(truth, tmp_path, seed=4)
    again = simulate_sky(truth, tmp_path / "again", seed=4)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file() and "again" not in p.parts)
    assert len(written) == 6 * 3 + 3 + 16  # per obsid: events, truth, exposure map; truth tables; catalogues
    assert written == sorted(p.relative_to(again.out_dir) for p in again.out_dir.rglob("*") if p.is_file())
    for rel in written:  # the same truth and seed give the same bytes, file for file
        assert (tmp_path / rel).read_bytes() == (again.out_dir / rel).read_bytes(), rel
    assert len(products.observations) == 6
    assert {o.instrument for o in products.observations} == {"ACIS-I", "ACIS-S"}
    assert sum(o.flare for o in products.observations) == 1
    for o in products.observations:
        assert o.event_file == tmp_path / str(o.obsid) / "primary" / f"acisf{o.obsid:05d}N001_evt2.fits"
        assert o.expmap_file.parent.name == "secondary"
        assert o.truth_file.exists()
        with fits.open(o.event_file) as h:
            assert h["EVENTS"].header["OBS_ID"] == str(o.obsid)
            assert len(h["EVENTS"].data) == o.n_events
        emap = fits.getheader(o.expmap_file)
        assert emap["BUNIT"] == "s"
        assert emap["CTYPE1"] == "RA---TAN"
        assert "LTM1_1" in emap
    columns, rows = products.summary()
    assert columns[:2] == ["product", "obsid"]
    assert all(len(r) == len(columns) for r in rows)
    assert [r[1] for r in rows if r[0] == "events"] == list(truth.observations["obsid"])
    assert any(r[0] == "catalog" and r[2] == "csc21/master_source" and r[5] > 0 for r in rows)
    assert load_truth(tmp_path / "truth").observations["exposure_s"][0] == 1500.0
    clusters = demo_truth().clusters
    assert len(clusters) >= 3
    assert set(clusters["model"]) == {"beta", "double_beta"}
    assert np.any(clusters["sub_frac"] > 0)
    assert np.any(clusters["cf_jump"] > 1)
    assert len(set(np.round(clusters["z"], 3))) == 3


# ----------------------------------------------------------------------------- cluster image
def test_simulated_cluster_image_api_and_files(tmp_path: Path) -> None:
    sim = simulate_cluster_image(256, total_counts=5e4, n_point_sources=10, background_per_pixel=0.3,
                                 bg_exposure_ratio=4.0, with_expmap=True, seed=2)
    assert sim.counts.dtype == np.int32
    assert sim.counts.shape == (256, 256)
    assert sim.model.dtype == np.float64
    assert sim.background.dtype == np.int32
    assert sim.expmap.dtype == np.float32
    assert sim.expmap.max() <= sim.exposure_s
    assert sim.bg_exposure_s == pytest.approx(4.0 * sim.exposure_s)
    assert abs(sim.counts.sum() - sim.model.sum()) < 5 * math.sqrt(sim.model.sum())
    rel = sim.expmap / sim.exposure_s
    assert sim.background.sum() == pytest.approx(0.3 * 4.0 * rel.sum(), rel=0.02)
    assert len(sim.truth["point_sources"]) == 10
    cx, cy = sim.truth["cluster"]["center_pix"]
    peak = np.unravel_index(np.argmax(sim.truth["cluster_model"]), sim.model.shape)
    assert abs(peak[0] - cy) <= 1
    assert abs(peak[1] - cx) <= 1
    wcs = WCS(sim.header)
    assert wcs.celestial.wcs.ctype[0] == "RA---TAN"
    assert abs(sim.header["CDELT1"]) * 3600 == pytest.approx(0.984)
    assert sim.header["LTM1_1"] == pytest.approx(0.5)
    files = write_simulated_image(sim, tmp_path)
    assert set(files) == {"counts", "model", "bg", "expmap"}
    assert fits.getheader(files["bg"])["EXPOSURE"] == pytest.approx(4.0 * fits.getheader(files["counts"])["EXPOSURE"])
    assert np.array_equal(fits.getdata(files["counts"]), sim.counts)
    plain = simulate_cluster_image(64, total_counts=1e3, n_point_sources=0)
    assert plain.background is None
    assert plain.expmap is None
    assert plain.bg_exposure_s is None


def test_cluster_image_1024_is_fast() -> None:
    import time

    simulate_cluster_image(64, seed=0)
    t0 = time.perf_counter()
    sim = simulate_cluster_image(1024, background_per_pixel=0.2, with_expmap=True, seed=0)
    assert time.perf_counter() - t0 < 2.0  # ≈ 0.3 s here; 2 s leaves room for slow CI machines
    assert sim.counts.shape == (1024, 1024)
