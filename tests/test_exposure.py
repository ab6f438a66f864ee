"""Exposure maps from the events against the simulator's exact exposure map and a flat sky."""

import numpy as np
import pytest
from astropy.io import fits

from xmine.errors import InputError
from xmine.events import read_events
from xmine.exposure import (
    ExposureMap,
    arf_mean_area,
    coverage_reference,
    fit_chip_geometry,
    make_exposure_map,
    rate_image,
    read_exposure_map,
    write_exposure_map,
)
from xmine.images import image_header, make_counts_image
from xmine.simulate import demo_truth, simulate_observation, write_event_file
from xmine.simulate import make_exposure_map as true_exposure_map

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.fixture(scope="module")
def flat_sky(tmp_path_factory):
    """A flat, unvignetted sky on ACIS-I (ObsID 90202, 25 ks, roll 300°), ≈ 0.9 million events."""
    truth = demo_truth()
    obs = truth.observations
    i = list(obs["obsid"]).index(90202)
    obs["sky_bg_cps_arcmin2"][i] = 0.1
    sim = simulate_observation(truth, 90202, seed=5, vignetted=False, include=("sky",), bad_events=False)
    path = write_event_file(sim, tmp_path_factory.mktemp("flat") / "acisf90202N001_evt2.fits")
    events = read_events(path, columns=None)
    truth_map = true_exposure_map(sim, bin_px=4)
    return sim, events, truth_map


def test_geometry_fit_recovers_chips_and_dither(flat_sky):
    sim, events, _ = flat_sky
    geo = fit_chip_geometry(events)
    assert geo.ccds == (0, 1, 2, 3)
    roll = np.radians(float(sim.obs["roll_deg"]))
    rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    for c in geo.ccds:
        np.testing.assert_allclose(geo.linear[c], rot, atol=2e-4)
    # pixel randomisation of uniform sub-pixel positions: σ = 1/√12 = 0.289 pixels
    assert geo.rms_pix == pytest.approx(1 / np.sqrt(12), abs=0.01)
    # the fitted offset track follows the simulated Lissajous dither (8″ amplitude) to 0.1 pixel
    from xmine.simulate.acis import dither_offsets

    t = geo.track_time
    ddx, ddy = dither_offsets(t - sim.gti_start, phase=sim.dither_phase)
    sx, sy = rot @ np.vstack([ddx, ddy])
    sx, sy = sx - sx.mean(), sy - sy.mean()
    assert np.max(np.hypot(geo.track[:, 0] - sx, geo.track[:, 1] - sy)) < 0.15


def test_exposure_map_equals_simulator_truth(flat_sky):
    _, events, truth_map = flat_sky
    header = image_header(events.wcs, xmin=truth_map.x0, ymin=truth_map.y0, binsize=truth_map.bin_px)
    emap = make_exposure_map(events, header, truth_map.data.shape)
    assert emap.unit == "s"
    assert emap.header["BUNIT"] == "s"
    true = truth_map.data.astype(float)
    mine = emap.data.astype(float)
    covered = true > 0.1 * true.max()
    ratio = mine[covered] / true[covered]
    assert abs(ratio.mean() - 1) < 1e-3
    assert ratio.std() < 2e-3
    assert np.max(np.abs(mine - true)) < 0.01 * true.max()  # chip edges and gaps included
    assert mine.sum() == pytest.approx(true.sum(), rel=1e-3)


def test_flat_sky_divided_by_exposure_is_flat_across_gaps(flat_sky):
    _, events, truth_map = flat_sky
    header = image_header(events.wcs, xmin=truth_map.x0, ymin=truth_map.y0, binsize=truth_map.bin_px)
    shape = truth_map.data.shape
    counts, _ = make_counts_image(events, xmin=truth_map.x0, ymin=truth_map.y0, shape=shape, binsize=4)
    emap = make_exposure_map(events, header, shape)
    e = emap.data.astype(float)
    frac = e / e.max()
    inside = frac > 0.1
    mean_rate = counts[inside].sum() / e[inside].sum()
    # the dithered chip edges and gaps are where the exposure is partial: the rate there must not differ
    for lo, hi in [(0.1, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 0.97), (0.97, 1.01)]:
        sel = (frac >= lo) & (frac < hi)
        n = counts[sel].sum()
        rate = n / e[sel].sum()
        assert n > 4000  # ≤ 1.6 % Poisson noise
        assert abs(rate / mean_rate - 1) < 0.05, (lo, hi, rate / mean_rate)
    rate_img, h = rate_image(counts, emap, min_exposure_frac=0.1)
    assert h["BUNIT"] == "count/s"
    assert rate_img[inside].sum() > 0


def test_kernel_matches_frame_by_frame_reference(flat_sky):
    _, events, _ = flat_sky
    geo = fit_chip_geometry(events)
    # a small grid around a corner of I2 (dithered edges on two sides), one sample per pixel
    cx, cy = geo.chip_to_sky(2, np.array([1024.5]), np.array([1024.5]))
    x0, y0 = float(cx[0]) - 120, float(cy[0]) - 120
    header = image_header(events.wcs, xmin=x0, ymin=y0, binsize=8)
    emap = make_exposure_map(events, header, (30, 30), geometry=geo, oversample=1, ccds=(2,))
    gx, gy = np.meshgrid(x0 + 8 * (np.arange(30) + 0.5), y0 + 8 * (np.arange(30) + 0.5))
    ref = coverage_reference(events, geo, 2, gx, gy)
    assert ref.max() > 0
    assert np.max(np.abs(emap.data - ref)) < 0.005 * ref.max()


def test_user_exposure_map_used_as_is(tmp_path, flat_sky):
    data = np.full((4, 5), 3.0e6, dtype=np.float32)
    hdr = fits.Header()
    hdr["BUNIT"] = "cm**2 s"
    fits.writeto(tmp_path / "ciao_expmap.fits", data, hdr)
    emap = read_exposure_map(tmp_path / "ciao_expmap.fits")
    assert emap.unit == "cm**2 s"
    np.testing.assert_array_equal(emap.data, data)
    img, h = rate_image(np.full((4, 5), 6.0), emap)
    assert h["BUNIT"] == "photon/cm**2/s"
    np.testing.assert_allclose(img, 2e-6)
    out = write_exposure_map(tmp_path / "copy.fits", emap)
    assert fits.getheader(out)["BUNIT"] == "cm**2 s"
    with pytest.raises(InputError, match="differ in shape"):
        rate_image(np.zeros((3, 3)), ExposureMap(np.ones((4, 4), np.float32), fits.Header()))


def test_exposure_needs_chip_columns(shared_data):
    ev = read_events(shared_data / "events" / "chandra_m82_obs10027_subset.fits")
    with pytest.raises(InputError, match=r"chandra_m82_obs10027_subset.fits: .*chipx, chipy.*exposure map"):
        fit_chip_geometry(ev)


def test_vignetting_and_effective_area(flat_sky, shared_data):
    sim, events, _ = flat_sky
    truth_v = true_exposure_map(sim, bin_px=16, vignetted=True)
    header = image_header(events.wcs, xmin=truth_v.x0, ymin=truth_v.y0, binsize=16)
    emap = make_exposure_map(events, header, truth_v.data.shape, vignetting=True)
    assert emap.header["VIGNET"]
    covered = truth_v.data > 0.3 * truth_v.data.max()
    np.testing.assert_allclose(emap.data[covered], truth_v.data[covered], rtol=0.01)
    area = arf_mean_area(shared_data / "spectra" / "3c186_obs9774" / "9774.arf", emin_kev=0.5, emax_kev=7.0)
    assert 100 < area < 682  # cm², below the ARF's peak of 681.9
    with_area = make_exposure_map(events, header, truth_v.data.shape, effective_area_cm2=area)
    assert with_area.unit == "cm**2 s"
    assert with_area.header["BUNIT"] == "cm**2 s"
    _, h = rate_image(np.ones(truth_v.data.shape), with_area)
    assert h["BUNIT"] == "photon/cm**2/s"
    with pytest.raises(InputError, match="lies outside the ARF"):
        arf_mean_area(shared_data / "spectra" / "3c186_obs9774" / "9774.arf", emin_kev=20, emax_kev=30)


def test_geometry_on_real_acis_i_events(shared_data):
    """ObsID 1479 (1,306 real events on I0-I3): chips are mirrored on the sky, the fit is good to a pixel fraction."""
    ev = read_events(shared_data / "events" / "chandra_obs1479_acis_subset" / "acis_evt2.fits.gz", columns=None)
    geo = fit_chip_geometry(ev)
    assert geo.ccds == (0, 1, 2, 3)
    for c in geo.ccds:
        assert np.linalg.det(geo.linear[c]) == pytest.approx(-1.0, abs=0.03)  # chip axes flipped relative to sky
    assert geo.rms_pix < 0.4
    # the dither (16″ peak to peak = 32.5 pixels, plus aspect wander) is seen in the track
    assert 25 < np.ptp(geo.track[:, 0]) < 60
