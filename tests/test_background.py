"""Background: local estimates from source-free pixels, blank-sky event files renormalised at 9.5–12 keV."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from xmine.background import (
    PARTICLE_BAND_KEV,
    hard_band_counts,
    local_background,
    make_background_image,
    write_background_image,
)
from xmine.errors import InputError
from xmine.events import filter_events, read_events
from xmine.images import sky_box
from xmine.masks import make_mask
from xmine.simulate import simulate_observation, validate_truth, write_event_file

RA0, DEC0 = 150.0, 2.0


def _truth(obsid, *, exposure_s, particle, sky, flare=False):
    clusters = Table(rows=[("BG-TEST", RA0, DEC0, 0.1, "beta", 30.0, 0.65, 1.5)],
                     names=["name", "ra_deg", "dec_deg", "z", "model", "rc_arcsec", "beta", "rate_cps"])
    points = Table(rows=[("P1", RA0 + 0.03, DEC0 + 0.02, 0.01)], names=["name", "ra_deg", "dec_deg", "rate_cps"])
    obs = Table(rows=[(obsid, "BG-TEST", RA0 + 0.004, DEC0 - 0.003, 30.0, "ACIS-I", exposure_s, flare, sky,
                       particle)],
                names=["obsid", "cluster", "ra_pnt", "dec_pnt", "roll_deg", "instrument", "exposure_s", "flare",
                       "sky_bg_cps_arcmin2", "particle_bg_cps_arcmin2"])
    return validate_truth(clusters, points, obs)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("bg")
    obs_sim = simulate_observation(_truth(91001, exposure_s=40_000.0, particle=1.0e-3, sky=6e-4), 91001, seed=1)
    # a blank-sky file: twice as long, particle (and sky) 1.3× higher, no cluster or point sources
    bg_sim = simulate_observation(_truth(91002, exposure_s=80_000.0, particle=1.3e-3, sky=7.8e-4), 91002, seed=2,
                                  include=("sky", "particle"))
    obs = read_events(write_event_file(obs_sim, d / "obs_evt2.fits"))
    bg = read_events(write_event_file(bg_sim, d / "bg_evt2.fits"))
    xmin, ymin = sky_box(obs.wcs, RA0 + 0.004, DEC0 - 0.003, size_pix=1024, binsize=2.0)
    # the cluster is bright enough to matter at 9.5–12 keV: keep it out of the particle-band rates
    cx, cy = obs.wcs.all_world2pix([[RA0, DEC0]], 1)[0]
    yy, xx = np.mgrid[0:1024, 0:1024]
    away = np.hypot(xx + 0.5 - (cx - xmin) / 2.0, yy + 0.5 - (cy - ymin) / 2.0) > 250
    grid = {"xmin": xmin, "ymin": ymin, "shape": (1024, 1024), "binsize": 2.0}
    return {"obs": obs, "bg": bg, "obs_sim": obs_sim, "away": away, "grid": grid}


def test_blank_sky_renormalised_by_particle_band(pair, tmp_path):
    obs, bg, grid = pair["obs"], pair["bg"], pair["grid"]
    b = make_background_image(obs, bg, mask=pair["away"], **grid)
    expected_scale = (1.0e-3 * 40_000.0) / (1.3e-3 * 80_000.0)
    err = b.scale * np.sqrt(1 / b.hard_counts_obs + 1 / b.hard_counts_bg)
    assert abs(b.scale - expected_scale) < 4 * err
    assert b.hard_counts_obs > 500  # enough 9.5-12 keV events for the 4-sigma check above to mean something
    # the renormalised background predicts the observation's own sky + particle counts (0.5–7 keV)
    src = pair["obs_sim"].src_id
    e = obs["energy"]
    ix = np.floor((obs["x"] - grid["xmin"]) / 2.0)
    iy = np.floor((obs["y"] - grid["ymin"]) / 2.0)
    on = (ix >= 0) & (ix < 1024) & (iy >= 0) & (iy < 1024) & (e >= 500) & (e <= 7000)
    true_bg = np.count_nonzero(on & (src <= 0))
    predicted = b.expected_counts().sum()
    assert predicted == pytest.approx(true_bg, rel=0.05)
    # contbin's scaling from the EXPOSURE keywords gives the same thing
    t_obs = float(obs.header["EXPOSURE"])
    assert b.counts.sum() * t_obs / b.header["EXPOSURE"] == pytest.approx(predicted, rel=1e-9)
    assert b.header["BKGSCALE"] == pytest.approx(b.scale)
    assert b.header["BGEXPOSR"] == pytest.approx(float(bg.header["EXPOSURE"]))
    p = write_background_image(tmp_path / "bg.fits", b)
    with fits.open(p) as hdul:
        np.testing.assert_array_equal(hdul[0].data, b.counts)
        assert hdul[0].header["EXPOSURE"] == pytest.approx(b.exposure_s)
        assert hdul[0].header["LTV1"] == b.header["LTV1"]


def test_particle_background_is_not_vignetted(pair):
    """The 9.5–12 keV events (particles) are flat across the field, unlike the vignetted sky."""
    obs, grid = pair["obs"], pair["grid"]
    hard = filter_events(obs, emin_kev=PARTICLE_BAND_KEV[0], emax_kev=PARTICLE_BAND_KEV[1], grades=None,
                         status_zero=False)
    src = pair["obs_sim"].src_id
    e = obs["energy"]
    ix = np.floor((obs["x"] - grid["xmin"]) / 2).astype(int)
    iy = np.floor((obs["y"] - grid["ymin"]) / 2).astype(int)
    on = (ix >= 0) & (ix < 1024) & (iy >= 0) & (iy < 1024)
    sel = (e >= 9500) & (e <= 12000)
    away = np.zeros(len(e), bool)
    away[on] = pair["away"][iy[on], ix[on]]
    assert np.mean(src[sel & away] == -1) > 0.95  # away from the cluster the band is particle-dominated
    # unvignetted: the particle-band counts per pixel are the same near the axis and far off it
    r = np.hypot(ix - 512, iy - 512)
    inner, outer = sel & on & (r < 250) & (src == -1), sel & on & (r >= 250) & (r < 500) & (src == -1)
    dens = np.array([inner.sum() / (np.pi * 250**2), outer.sum() / (np.pi * (500**2 - 250**2))])
    assert abs(dens[0] / dens[1] - 1) < 0.15
    n_all = hard_band_counts(obs, **grid)
    assert n_all == np.count_nonzero(sel & (np.floor((obs["x"] - grid["xmin"]) / 2) >= 0)
                                     & (np.floor((obs["x"] - grid["xmin"]) / 2) < 1024)
                                     & (np.floor((obs["y"] - grid["ymin"]) / 2) >= 0)
                                     & (np.floor((obs["y"] - grid["ymin"]) / 2) < 1024))
    assert len(hard) >= n_all


def test_local_background_annulus_and_edges():
    rng = np.random.default_rng(4)
    ny = nx = 300
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot(xx - 150, yy - 150)
    expo = 20_000.0 * np.clip(1 - 0.002 * r, 0.3, 1)  # vignetted exposure map (s)
    rate = 2e-6  # counts/s/pixel
    cluster = 50.0 * (1 + (r / 10.0) ** 2) ** -3 * expo / 20_000.0
    bright = 300.0 * np.exp(-0.5 * ((xx - 240) ** 2 + (yy - 150) ** 2) / 1.5**2) / (2 * np.pi * 1.5**2)
    img = rng.poisson(rate * expo + cluster + bright)
    src = Table({"x_pix": [240.0], "y_pix": [150.0], "a_pix": [8.0], "b_pix": [8.0], "angle_deg": [0.0],
                 "masked": [True]})
    mask = make_mask(src, img.shape)
    lb = local_background(img, exposure=expo, mask=mask, center_xy=(150, 150), r_in_pix=80, r_out_pix=140)
    assert abs(lb.rate_cps_per_pix - rate) < 3 * lb.rate_err_cps_per_pix
    assert lb.area_pix < np.count_nonzero((r >= 80) & (r < 140))
    unmasked = local_background(img, exposure=expo, center_xy=(150, 150), r_in_pix=80, r_out_pix=140)
    assert unmasked.rate_cps_per_pix > lb.rate_cps_per_pix + 3 * lb.rate_err_cps_per_pix
    edges = local_background(img, exposure=expo, edge_width_pix=20)
    assert abs(edges.rate_cps_per_pix - rate) < 3 * edges.rate_err_cps_per_pix
    np.testing.assert_allclose(edges.expected_counts(expo)[0, 0], rate * expo[0, 0], rtol=0.2)
    flat = local_background(img, exposure_s=20_000.0, edge_width_pix=20)
    assert flat.exposure_sum_s == pytest.approx(20_000.0 * flat.area_pix)


def test_bad_inputs(pair):
    img = np.ones((50, 50))
    with pytest.raises(InputError, match="exposure_s"):
        local_background(img, edge_width_pix=5)
    with pytest.raises(InputError, match="r_in < r_out"):
        local_background(img, exposure_s=1.0, center_xy=(25, 25), r_in_pix=10, r_out_pix=5)
    with pytest.raises(InputError, match="no exposed, unmasked pixel"):
        local_background(img, exposure_s=1.0, center_xy=(25, 25), r_in_pix=100)
    with pytest.raises(InputError, match="center_xy and r_in_pix"):
        local_background(img, exposure_s=1.0)
    with pytest.raises(InputError, match="exposure map shape"):
        local_background(img, exposure=np.ones((5, 5)), edge_width_pix=5)
    with pytest.raises(InputError, match="mask shape"):
        local_background(img, exposure_s=1.0, edge_width_pix=5, mask=np.ones((3, 3)))
    obs, bg, grid = pair["obs"], pair["bg"], pair["grid"]
    soft = filter_events(bg, emin_kev=0.5, emax_kev=7.0, grades=None, status_zero=False)
    with pytest.raises(InputError, match=r"9\.5–12 keV"):
        make_background_image(obs, soft, **grid)
    with pytest.raises(InputError, match="must be positive"):
        make_background_image(obs, bg, scale=-1.0, **grid)
    no_exp = read_events(obs.path)
    del no_exp.header["EXPOSURE"]
    del no_exp.header["LIVETIME"]
    with pytest.raises(InputError, match="EXPOSURE"):
        make_background_image(no_exp, bg, **grid)
