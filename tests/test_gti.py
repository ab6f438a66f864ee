"""Light curves and flare cleaning against the simulator's injected flare (FLARE_T1/T2)."""

import numpy as np
import pytest
from astropy.io import fits
from scipy import stats

from xmine.errors import CacheError, InputError
from xmine.events import filter_events, read_events
from xmine.gti import (
    LightCurve,
    apply_gti,
    deflare,
    intersect_gti,
    make_light_curve,
    plot_light_curve,
    source_free,
    time_mask,
    write_gti,
    write_light_curve,
)
from xmine.simulate import demo_truth, simulate_observation, write_event_file, write_event_truth

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

ALL = ("clusters", "points", "sky", "particle", "flare")


def _observation(tmp_path, include):
    sim = simulate_observation(demo_truth(), 90201, seed=3, include=include)
    evt = write_event_file(sim, tmp_path / "acisf90201N001_evt2.fits")
    tru = write_event_truth(sim, tmp_path / "acisf90201N001_truth.fits")
    events = filter_events(read_events(evt))
    sources = fits.getdata(tru, "SOURCES")
    # mask the cluster (4′) and every point source (10″), as the masks step would
    circles = [(r["x"], r["y"], 500.0 if r["kind"] == "cluster" else 20.0) for r in sources]
    keep = source_free(events, circles=circles)
    return sim, events, keep, fits.getheader(tru, "SOURCES"), tru


@pytest.fixture(scope="module")
def flared(tmp_path_factory):
    return _observation(tmp_path_factory.mktemp("flare"), ALL)


def test_bins_are_80_frames(flared):
    sim, events, keep, _, _ = flared
    lc = make_light_curve(events, keep=keep)
    assert lc.bin_s == pytest.approx(80 * 3.24104)
    assert lc.time_min[0] == pytest.approx(sim.gti_start)
    assert lc.counts.sum() == keep.sum()
    # full bins have the whole bin as live time, the dropout on one chip removes a little
    full = lc.exposure_s[:-1]
    assert np.median(full) == pytest.approx(lc.bin_s * 0.98733, rel=1e-6)


def test_flare_recovered_to_one_bin(flared, tmp_path):
    _, events, keep, truth_header, truth_file = flared
    t1, t2 = truth_header["FLARE_T1"], truth_header["FLARE_T2"]
    lc = make_light_curve(events, keep=keep)
    res = deflare(lc, source="acisf90201N001_evt2.fits")
    width = lc.bin_s
    # every bin touching the injected flare (half-maximum interval) is clipped
    touching = (lc.time_max > t1) & (lc.time_min < t2)
    assert not res.good[touching].any()
    # the flare's half-maximum times, measured on the light curve, are within one bin of the truth
    main = max(res.flares, key=lambda f: f.peak_rate)
    assert abs(main.t_half_start - t1) < width
    assert abs(main.t_half_stop - t2) < width
    # the clipped run also holds the flare's soft wings: ≥ 97 % of the flare's events are cut
    src_id = fits.getdata(truth_file, "EVENT_SRC")["src_id"]
    full = read_events(truth_file.with_name("acisf90201N001_evt2.fits"), columns=("time", "x", "y"))
    flare_times = full["time"][src_id == -2]
    left = time_mask(flare_times, res.gti).mean()
    assert left < 0.03
    # GTIs: per CCD, intersected with each CCD's own (one CCD has a telemetry dropout)
    clean = apply_gti(events, res.gti)
    assert set(clean.gti) == set(events.gti)
    lost = res.lost_exposure_s
    assert clean.header["EXPOSURE"] == pytest.approx(events.header["EXPOSURE"] - lost, abs=2 * width)
    assert time_mask(clean["time"], res.gti).all()
    path = write_gti(tmp_path / "clean_gti.fits", clean.gti, header=events.header, result=res)
    with fits.open(path) as hdul:
        ccds = sorted(h.header["CCD_ID"] for h in hdul[1:])
        assert ccds == [0, 1, 2, 3]
        assert all(h.name == "GTI" for h in hdul[1:])
        np.testing.assert_allclose(np.column_stack([hdul[1].data["START"], hdul[1].data["STOP"]]),
                                   clean.gti[hdul[1].header["CCD_ID"]])
    png = plot_light_curve(tmp_path / "lc.png", res)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lcf = write_light_curve(tmp_path / "lc.fits", res, header=events.header)
    tab = fits.getdata(lcf, "LIGHTCURVE")
    np.testing.assert_array_equal(tab["GOOD"], res.good)


def test_no_flare_loses_no_time_beyond_chance(tmp_path):
    _, events, keep, _, _ = _observation(tmp_path, ALL[:-1])
    lc = make_light_curve(events, keep=keep)
    res = deflare(lc)
    # chance of a quiescent bin falling outside mean/1.2 … mean×1.2 under Poisson statistics
    mu = res.mean_rate * lc.exposure_s
    lo = stats.poisson.cdf(np.ceil(res.min_rate * lc.exposure_s) - 1, mu)
    hi = stats.poisson.sf(np.floor(res.max_rate * lc.exposure_s), mu)
    p = np.clip(lo + hi, 0, 1)
    expected, spread = p.sum(), np.sqrt(np.sum(p * (1 - p)))
    n_clipped = int((~res.good).sum())
    assert res.chance_clip_fraction == pytest.approx(expected / len(lc), rel=0.05)
    assert n_clipped <= expected + 3 * spread + 1, (n_clipped, expected, spread)
    # clipped bins are scattered, not a flare-like run
    assert max((f.t_stop - f.t_start for f in res.flares), default=0.0) <= 2 * lc.bin_s + 1e-6
    # with 3σ Poisson limits instead of ±20 %, almost nothing is lost
    res3 = deflare(lc, sigma=3.0)
    assert (~res3.good).sum() <= 3


def _lc(rates, width=259.28):
    n = len(rates)
    lo = 1e8 + width * np.arange(n)
    exp = np.full(n, width)
    return LightCurve(time_min=lo, time_max=lo + width, counts=np.rint(np.asarray(rates) * width).astype(int),
                      exposure_s=exp, bin_s=width, timedel_s=3.24104)


def test_clean_matches_lc_clean_without_flares_and_sigma_clip():
    rng = np.random.default_rng(1)
    rates = rng.poisson(0.5 * 259.28, 200) / 259.28
    lc = _lc(rates)
    res = deflare(lc)
    # lc_clean: one 3σ Poisson clip about the plain mean, then mean × / ÷ 1.2
    r = lc.rate
    m0 = r[r > 0].mean()
    s0 = np.sqrt(m0 / 259.28)
    m1 = r[(r > m0 - 3 * s0) & (r < m0 + 3 * s0)].mean()
    assert res.max_rate == pytest.approx(m1 * 1.2, rel=2e-3)
    np.testing.assert_array_equal(res.good, (r > res.min_rate) & (r < res.max_rate))
    # lc_sigma_clip: iterative mean ± 3 std; a 5-bin flare goes, short good runs are dropped
    rates2 = rates.copy()
    rates2[100:105] = 3.0
    res2 = deflare(_lc(rates2), method="sigma")
    assert not res2.good[100:105].any()
    assert res2.good.sum() >= 190


def test_empty_gti_after_cleaning_is_a_clear_error(flared):
    _, events, keep, _, _ = flared
    lc = make_light_curve(events, keep=keep)
    with pytest.raises(InputError, match=r"acisf90201N001_evt2.fits: deflare: only 0 of \d+ light-curve bins.*mean="):
        deflare(lc, mean=50.0, source="acisf90201N001_evt2.fits")
    with pytest.raises(InputError, match=r"acisf90201N001_evt2.fits: no good time is left"):
        apply_gti(events, np.array([[1.0, 2.0]]))
    with pytest.raises(InputError, match="method 'median'"):
        deflare(lc, method="median")


def test_missing_timedel_names_the_file(flared):
    _, events, _, _, _ = flared
    header = events.header.copy()
    del header["TIMEDEL"]
    ev = events.subset(np.ones(len(events), bool))
    ev.header = header
    with pytest.raises(InputError, match=r"acisf90201N001_evt2.fits: no TIMEDEL.*bin_s="):
        make_light_curve(ev)
    lc = make_light_curve(ev, bin_s=100.0)
    assert lc.bin_s == 100.0


def test_gti_arithmetic_against_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(20):
        a = np.sort(rng.uniform(0, 100, (6, 2)), axis=1)
        b = np.sort(rng.uniform(0, 100, (4, 2)), axis=1)
        t = rng.uniform(-5, 105, 5000)
        in_a = ((t[:, None] >= a[:, 0]) & (t[:, None] < a[:, 1])).any(axis=1)
        in_b = ((t[:, None] >= b[:, 0]) & (t[:, None] < b[:, 1])).any(axis=1)
        np.testing.assert_array_equal(time_mask(t, a), in_a)
        np.testing.assert_array_equal(time_mask(t, intersect_gti(a, b)), in_a & in_b)


def test_source_free_from_a_mask_image_equals_circles(flared):
    from xmine.images import make_counts_image

    _, events, _, _, truth_file = flared
    src = fits.getdata(truth_file, "SOURCES")
    cluster = src[src["kind"] == "cluster"][0]
    _, header = make_counts_image(events, xmin=3000.5, ymin=3000.5, shape=(1024, 1024), binsize=2.0)
    # image pixel centres (1-based i) sit at physical 3000.5 + 2 (i - 0.5)
    px = 3000.5 + 2.0 * (np.arange(1024) + 0.5)
    mask = (px[None, :] - cluster["x"]) ** 2 + (px[:, None] - cluster["y"]) ** 2 <= 300.0 ** 2
    by_mask = source_free(events, mask=mask, mask_header=header)
    by_circle = source_free(events, circles=[(cluster["x"], cluster["y"], 300.0)])
    # the two agree except within a pixel of the circle's edge
    r = np.hypot(events["x"] - cluster["x"], events["y"] - cluster["y"])
    far = np.abs(r - 300.0) > 1.5
    np.testing.assert_array_equal(by_mask[far], by_circle[far])
    assert (~by_mask).sum() > 1000


def test_full_disk_leaves_no_gti_file(flared, tmp_path, monkeypatch):
    import errno

    _, events, keep, _, _ = flared
    res = deflare(make_light_curve(events, keep=keep))

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", full)
    with pytest.raises(CacheError, match=r"gti.fits: the disk is full"):
        write_gti(tmp_path / "gti.fits", res.gti, result=res)
    assert list(tmp_path.iterdir()) == []
