"""Band images, merging observations onto one tangent plane, cropping; real-data position and parity checks."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from xmine.errors import InputError
from xmine.events import filter_events, read_events, selection_mask
from xmine.gti import apply_gti
from xmine.images import BANDS, crop_image, make_band_images, make_counts_image, merge_observations, reproject_events
from xmine.simulate import demo_truth, simulate_observation, write_event_file, write_event_truth

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

COLUMNS = ("time", "ccd_id", "chipx", "chipy", "x", "y", "energy", "grade", "status")


@pytest.fixture(scope="module")
def merger(tmp_path_factory):
    """The two ACIS-I observations of SIM-MERGER (rolls 120° and 300°, pointings 2.4′ apart)."""
    out = tmp_path_factory.mktemp("merge")
    truth = demo_truth()
    obs = []
    for obsid in (90201, 90202):
        sim = simulate_observation(truth, obsid, seed=11, include=("clusters", "points", "sky", "particle"))
        evt = write_event_file(sim, out / f"acisf{obsid:05d}N001_evt2.fits")
        tru = write_event_truth(sim, out / f"acisf{obsid:05d}N001_truth.fits")
        full = read_events(evt, columns=COLUMNS)
        good = selection_mask(full.columns, full.header, emin_kev=None, emax_kev=None)
        ev = full.subset(good)
        src = fits.getdata(tru, "EVENT_SRC")["src_id"][good]
        obs.append((ev, src, fits.getdata(tru, "SOURCES")))
    row = truth.clusters[1]
    return obs, float(row["ra_deg"]), float(row["dec_deg"]), truth


def test_merged_counts_are_conserved_and_exposure_sums(merger, tmp_path):
    obs, ra, dec, _ = merger
    events = [o[0] for o in obs]
    merged = merge_observations(events, ra_deg=ra, dec_deg=dec, size_pix=1100, binsize=4)
    assert set(merged.counts) == set(BANDS)
    for name, (lo, hi) in BANDS.items():
        expected = sum(int(((e["energy"] >= lo * 1000) & (e["energy"] <= hi * 1000)).sum()) for e in events)
        assert merged.counts[name].sum() == expected, name
        assert [r[f"counts_{name}"] for r in merged.observations] == [
            int(((e["energy"] >= lo * 1000) & (e["energy"] <= hi * 1000)).sum()) for e in events]
    # where both fields are fully exposed, the summed exposure is the summed live time
    live = sum(float(e.header["EXPOSURE"]) for e in events)
    assert merged.exposure is not None
    assert merged.exposure.max() == pytest.approx(live, rel=2e-3)
    assert merged.header["NOBS"] == 2
    assert merged.header["BUNIT"] == "count"
    assert all(r["grid_affine_error_pix"] < 0.05 for r in merged.observations)
    from xmine.images import write_merged

    files = write_merged(merged, tmp_path)
    assert set(files) == {"broad", "soft", "hard", "exposure"}
    with fits.open(files["exposure"]) as hdul:
        assert hdul[0].header["BUNIT"] == "s"
        np.testing.assert_array_equal(hdul[0].data, merged.exposure)
    assert fits.getdata(files["soft"]).sum() == merged.counts["soft"].sum()
    w = WCS(merged.header)
    assert w.wcs.crval[0] == pytest.approx(ra)


def test_reprojected_sources_line_up(merger):
    obs, ra, dec, _ = merger
    frame = merge_observations([o[0] for o in obs], ra_deg=ra, dec_deg=dec, size_pix=8, binsize=1,
                               exposure=False).frame
    positions = []
    for ev, src_id, sources in obs:
        moved = reproject_events(ev, frame)
        points = sources[sources["kind"] == "point"]
        best = points[np.argmax(points["simulated_counts"])]
        sel = src_id == best["src_id"]
        tx, ty = frame.all_world2pix([[best["ra_deg"], best["dec_deg"]]], 1)[0]
        positions.append((np.median(moved["x"][sel]) - tx, np.median(moved["y"][sel]) - ty, sel.sum(),
                          best["name"]))
    for dx, dy, n, _ in positions:
        assert n > 50
        assert np.hypot(dx, dy) < 0.5  # sky pixels (0.25″)


def test_merge_refuses_mixed_instruments_and_bad_backgrounds(merger):
    obs, ra, dec, _ = merger
    a, b = obs[0][0], obs[1][0].subset(np.ones(len(obs[1][0]), bool))
    b.header = b.header.copy()
    b.header["INSTRUME"] = "EPN"
    with pytest.raises(InputError, match=r"different instruments.*acisf90202N001_evt2.fits \(CHANDRA EPN\)"):
        merge_observations([a, b], ra_deg=ra, dec_deg=dec, size_pix=16)
    with pytest.raises(InputError, match="background image 0 has shape"):
        merge_observations([a], ra_deg=ra, dec_deg=dec, size_pix=16, exposure=False,
                           backgrounds=[np.zeros((3, 3))])
    ok = merge_observations([a, obs[1][0]], ra_deg=ra, dec_deg=dec, size_pix=16, exposure=False,
                            backgrounds=[np.ones((16, 16)), np.full((16, 16), 2.0)])
    assert ok.background is not None
    np.testing.assert_allclose(ok.background, 3.0)
    with pytest.raises(InputError, match="no observations"):
        merge_observations([], ra_deg=ra, dec_deg=dec, size_pix=16)


def test_crop_records_physical_offsets(merger):
    obs, ra, dec, _ = merger
    merged = merge_observations([o[0] for o in obs], ra_deg=ra, dec_deg=dec, size_pix=400, binsize=4)
    images = {"counts": merged.counts["broad"], "exposure": merged.exposure}
    out, h, crop = crop_image(images, merged.header, ra_deg=ra, dec_deg=dec, radius_arcmin=3.0)
    assert crop.size == 2 * int(np.ceil(3.0 / (4 * 0.492 / 60)))
    assert out["counts"].shape == (crop.size, crop.size)
    np.testing.assert_array_equal(out["counts"], merged.counts["broad"][crop.j0:crop.j0 + crop.size,
                                                                        crop.i0:crop.i0 + crop.size])
    # make_region_files' --minx/--miny: physical coordinates of the crop's lower-left corner
    ltm, ltv = h["LTM1_1"], h["LTV1"]
    assert (0.5 - ltv) / ltm == pytest.approx(crop.minx)
    assert h["CROPMINX"] == pytest.approx(crop.minx)
    assert crop.minx == pytest.approx((0.5 - merged.header["LTV1"]) * 4 + crop.i0 * 4)
    assert h["CROPBIN"] == 4
    # one pixel maps to the same sky and physical position in crop and parent
    px, py = 17.3, 101.8
    sky_c = WCS(h).celestial.all_pix2world([[px, py]], 1)
    sky_p = WCS(merged.header).celestial.all_pix2world([[px + crop.i0, py + crop.j0]], 1)
    np.testing.assert_allclose(sky_c, sky_p, atol=1e-10)
    phys_c = (px - h["LTV1"]) / h["LTM1_1"]
    phys_p = (px + crop.i0 - merged.header["LTV1"]) / merged.header["LTM1_1"]
    assert phys_c == pytest.approx(phys_p)
    assert h["CRVAL1P"] + (px - h["CRPIX1P"]) * h["CDELT1P"] == pytest.approx(phys_c)
    # near the edge the crop is padded, far away it is refused
    w = WCS(merged.header).celestial
    ra_edge, dec_edge = w.all_pix2world([[3.0, 3.0]], 1)[0]
    padded, _, c2 = crop_image(merged.counts["broad"], merged.header, ra_deg=ra_edge, dec_deg=dec_edge, size_pix=20)
    assert c2.padded
    assert padded[:5, :5].sum() == 0
    with pytest.raises(InputError, match=r"crop: the centre RA .* outside the 400x400 image"):
        crop_image(merged.counts["broad"], merged.header, ra_deg=ra + 1.0, dec_deg=dec, size_pix=20)
    with pytest.raises(InputError, match="exactly one of"):
        crop_image(merged.counts["broad"], merged.header, ra_deg=ra, dec_deg=dec)


def test_m82_brightest_region(shared_data):
    ev = read_events(shared_data / "events" / "chandra_m82_obs10027_subset.fits")
    x, y = ev["x"], ev["y"]
    xmin = float(np.floor(x.min())) - 0.5
    ymin = float(np.floor(y.min())) - 0.5
    n = int(np.ceil(max(x.max() - xmin, y.max() - ymin) / 8)) + 1
    img, h = make_counts_image(ev, xmin=xmin, ymin=ymin, shape=(n, n), binsize=8)
    j, i = np.unravel_index(np.argmax(img), img.shape)
    ra, dec = WCS(h).celestial.all_pix2world([[i + 1, j + 1]], 1)[0]
    # README: the densest 8×8-pixel cell lies at RA, Dec ≈ 148.959, 69.680 (M82 X-1 / nuclear region)
    assert ra == pytest.approx(148.959, abs=2e-3)
    assert dec == pytest.approx(69.680, abs=1e-3)
    assert ev.provenance["ASCDSVER"]
    assert ev.provenance["TIMEDEL"] == pytest.approx(0.44104)


def test_a907_mos1_equals_sas_image(shared_data):
    folder = shared_data / "images" / "xmm_a907_0201903501"
    ev = read_events(folder / "mos1_exp1_clean_evts.fits", columns=None)
    band = filter_events(ev, emin_kev=0.5, emax_kev=2.0)  # XMM PI is in eV; both ends included
    images = make_band_images(band, xmin=3648.5, ymin=3648.5, shape=(512, 512), binsize=87,
                              bands={"sas": (0.5, 2.0)})
    img, h = images["sas"]
    with fits.open(folder / "0201903501_mos1_exp1-0.50-2.00keVimg.fits") as hdul:
        ref, rh = hdul[0].data, hdul[0].header
        assert img.sum() == 14035
        np.testing.assert_array_equal(img, ref)
        for key in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "LTV1", "LTV2", "LTM1_1", "LTM2_2"):
            assert h[key] == pytest.approx(rh[key], rel=1e-9), key
    assert set(ev.gti) == {1, 2, 3, 4, 5, 6, 7}


def test_band_images(merger):
    obs, _, _, _ = merger
    ev = obs[0][0]
    images = make_band_images(ev, xmin=3000.5, ymin=3000.5, shape=(256, 256), binsize=8)
    assert set(images) == {"broad", "soft", "hard"}
    b, s, hd = (images[k][0].sum() for k in ("broad", "soft", "hard"))
    assert s + hd >= b
    assert s + hd - b == int((ev["energy"] == 2000.0).sum())
    assert images["soft"][1]["EMAX"] == 2.0


def test_clean_events_after_gti_keep_chip_columns(merger):
    obs, _, _, _ = merger
    ev = obs[0][0]
    t0, t1 = float(ev["time"].min()), float(ev["time"].max())
    clean = apply_gti(ev, np.array([[t0, 0.5 * (t0 + t1)]]))
    assert {"chipx", "chipy"} <= set(clean.columns)
    assert clean.header["EXPOSURE"] < ev.header["EXPOSURE"]


def test_chain_archive_to_cropped_rate_image(tmp_path):
    """Archive folder -> events -> deflare -> merge (clean exposure) -> crop -> count-rate image, as the pipeline."""
    from xmine.archive import get_obsid
    from xmine.exposure import ExposureMap, rate_image
    from xmine.gti import deflare, make_light_curve, source_free
    from xmine.simulate import simulate_sky

    truth = demo_truth()
    truth.observations.remove_rows([i for i, o in enumerate(truth.observations["obsid"]) if o not in (90201, 90202)])
    simulate_sky(truth, tmp_path / "archive", seed=4)
    row = truth.clusters[1]
    ra, dec = float(row["ra_deg"]), float(row["dec_deg"])
    cleaned, gtis, lost = [], [], []
    for obsid in (90201, 90202):
        folder = get_obsid(obsid, data_dir=tmp_path / "archive", base_url=None)
        ev = filter_events(read_events(folder.evt2, columns=COLUMNS))
        cx, cy = ev.wcs.all_world2pix([[ra, dec]], 1)[0]
        lc = make_light_curve(ev, keep=source_free(ev, circles=[(cx, cy, 500.0)]))
        res = deflare(lc, sigma=3.0)
        cleaned.append(apply_gti(ev, res.gti))
        gtis.append(res.gti)
        lost.append(res.lost_exposure_s)
    assert lost[0] > 4000  # the flare of 90201 (15 % of 40 ks plus wings)
    assert lost[1] < 3 * 259.3
    merged = merge_observations(cleaned, ra_deg=ra, dec_deg=dec, size_pix=900, binsize=4)
    assert merged.counts["broad"].sum() == sum(
        int(((e["energy"] >= 500) & (e["energy"] <= 7000)).sum()) for e in cleaned)
    live = sum(float(e.header["EXPOSURE"]) for e in cleaned)
    assert merged.exposure is not None
    assert merged.exposure.max() == pytest.approx(live, rel=3e-3)
    images, header, crop = crop_image({"counts": merged.counts["broad"], "exposure": merged.exposure},
                                      merged.header, ra_deg=ra, dec_deg=dec, radius_arcmin=4.0)
    emap = ExposureMap(images["exposure"], header, unit="s")
    rate, rh = rate_image(images["counts"], emap, header=header)
    assert rh["BUNIT"] == "count/s"
    assert rh["CROPMINX"] == pytest.approx(crop.minx)
    # the cluster core, at the crop's centre, is far above the crop's typical surface brightness
    c = crop.size // 2
    core = rate[c - 10:c + 10, c - 10:c + 10].mean()
    assert core > 5 * np.median(rate[rate > 0])


def test_crop_of_a_sas_image_keeps_its_physical_alternate(shared_data):
    path = shared_data / "images" / "xmm_a907_0201903501" / "0201903501_mos1_exp1-0.50-2.00keVimg.fits"
    with fits.open(path) as hdul:
        data, header = hdul[0].data, hdul[0].header.copy()
    out, h, crop = crop_image(data, header, ra_deg=149.5917, dec_deg=-11.0629, size_pix=64)
    assert out.sum() > 0
    # XMM's 'L' physical alternate and LTV/LTM agree on the crop, and match the parent pixel
    px = 10.0
    phys_l = h["CRVAL1L"] + (px - h["CRPIX1L"]) * h["CDELT1L"]
    phys_ltv = (px - h["LTV1"]) / h["LTM1_1"]
    assert phys_l == pytest.approx(phys_ltv)
    assert phys_l == pytest.approx(header["CRVAL1L"] + (px + crop.i0 - header["CRPIX1L"]) * header["CDELT1L"])
    assert crop.minx == pytest.approx(3648.5 + 87 * crop.i0)
