"""Per-region measurements against injected truth, contbin's own statistics and published scales."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from xmine import contbin, measure, simulate
from xmine.config import load_config
from xmine.errors import InputError
from xmine.pipeline import ClusterSpec, process_cluster
from xmine.simulate import spectra
from xmine.store import open_store

# ---------------------------------------------------------------- a simulated image with known parts


@pytest.fixture(scope="module")
def image():
    """A 160-px cluster with a flat background of 0.4 ct/pix, vignetting and a chip gap, contour-binned to S/N 12."""
    sim = simulate.simulate_cluster_image(160, total_counts=4e4, n_point_sources=4, background_per_pixel=0.4,
                                          bg_exposure_ratio=5.0, with_expmap=True, seed=3)
    bgexp = (sim.expmap * 5.0).astype(np.float32)  # the background image is 5x longer, equally vignetted
    bins = contbin.make_contour_bins(sim.counts, sn=12.0, smoothsn=12.0, bg=sim.background, expmap=sim.expmap,
                                     bgexpmap=bgexp)
    return sim, bgexp, bins.binmap


def _measure(sim, bgexp, binmap, **kw):
    expected, ratio = measure.contbin_background(sim.background, expmap=sim.expmap, bgexpmap=bgexp)
    return measure.measure_regions(binmap, sim.header, counts=sim.counts, exposure=sim.expmap,
                                   background=expected, background_ratio=ratio,
                                   centre_radec=(simulate.image.IMAGE_RA_DEG, simulate.image.IMAGE_DEC_DEG), **kw)


def test_sn_is_contbins_and_counts_add_up(image):
    sim, bgexp, binmap = image
    t = _measure(sim, bgexp, binmap)
    ref = contbin.bin_statistics(binmap, sim.counts, bg=sim.background, expmap=sim.expmap, bgexpmap=bgexp)
    assert list(t["bin_id"]) == list(ref["bin_id"])
    np.testing.assert_allclose(t["sn"], ref["sn"], rtol=1e-12)
    np.testing.assert_allclose(t["bg_counts"], ref["bg_counts"], rtol=1e-12)
    np.testing.assert_array_equal(t["n_pix"], ref["area_pix"])
    assert t["counts"].sum() == sim.counts[binmap >= 0].sum()
    assert np.median(t["sn"]) >= 12.0  # contbin's scrubbing may leave a few bins just below target


def test_background_and_net_counts_match_the_injected_truth(image):
    sim, bgexp, binmap = image
    t = _measure(sim, bgexp, binmap)
    binned = binmap >= 0
    rel = sim.expmap / sim.exposure_s
    injected_bg = sim.truth["background_per_pixel"] * rel
    # the background estimate is Poisson in a 5x longer image: its sum has sigma sqrt(B / 5)
    truth_bg = injected_bg[binned].sum()
    assert abs(t["bg_counts"].sum() - truth_bg) < 3 * math.sqrt(truth_bg / 5.0)
    # the source's expected counts per bin (cluster + point sources), from the model
    source = sim.model - injected_bg
    truth_net = np.bincount(binmap[binned], weights=source[binned])[t["bin_id"]]
    pull = (t["net_counts"] - truth_net) / t["net_err"]
    assert abs(np.mean(pull)) < 3 / math.sqrt(len(pull))
    # Gehrels' upper error is conservative: the scatter of the pulls is at most 1
    assert 0.7 < np.std(pull) < 1.05
    assert np.mean(np.abs(pull) < 3) > 0.99


def test_surface_brightness_units_and_centroids(image):
    sim, bgexp, binmap = image
    t = _measure(sim, bgexp, binmap, z=0.1, r500_kpc=1000.0)
    assert t.colnames == list(measure.COLUMNS)
    assert t["sb_cps_arcsec2"].unit == "ct / (s arcsec2)"
    assert t["area_arcsec2"].unit == "arcsec2"
    assert t["r_kpc"].unit == "kpc"
    pix_arcsec = sim.truth["pixel_arcsec"]
    np.testing.assert_allclose(t["area_arcsec2"], t["n_pix"] * pix_arcsec ** 2, rtol=1e-6)
    np.testing.assert_allclose(t["rate_cps"], t["net_counts"] / t["exposure_mean_s"])
    np.testing.assert_allclose(t["sb_cps_arcsec2"], t["rate_cps"] / t["area_arcsec2"])
    # the count-weighted centroid of one bin by hand (1-based)
    b = int(t["bin_id"][len(t) // 2])
    yy, xx = np.nonzero(binmap == b)
    w = sim.counts[yy, xx]
    row = t[t["bin_id"] == b][0]
    assert row["x_pix"] == pytest.approx(np.sum(xx * w) / w.sum() + 1)
    assert row["y_pix"] == pytest.approx(np.sum(yy * w) / w.sum() + 1)
    # physical: image = LTM * phys + LTV
    h = sim.header
    assert row["x_phys"] == pytest.approx((row["x_pix"] - h["LTV1"]) / h["LTM1_1"])
    # distances: astropy's proper scale at z = 0.1 for the default H0 = 70, Om0 = 0.3
    from astropy.cosmology import FlatLambdaCDM

    kpc = FlatLambdaCDM(H0=70, Om0=0.3).kpc_proper_per_arcmin(0.1).value
    np.testing.assert_allclose(t["r_kpc"], t["r_arcmin"] * kpc)
    np.testing.assert_allclose(t["r_r500"], t["r_kpc"] / 1000.0)
    assert t.meta["r500_source"] == "given"
    # without z nor R500 the physical distances are NaN, and without an ARF the fluxes are
    bare = _measure(sim, bgexp, binmap)
    assert np.all(np.isnan(bare["r_kpc"]))
    assert np.all(np.isnan(bare["r_r500"]))
    assert np.all(np.isnan(bare["sb_flux_cgs_arcsec2"]))


def test_annuli_agree_with_the_radial_profile(image):
    """Bins that are annuli give profiles.radial_profile's counts, background, area and surface brightness."""
    from xmine.profiles import radial_profile

    sim, bgexp, _ = image
    expected, ratio = measure.contbin_background(sim.background, expmap=sim.expmap, bgexpmap=bgexp)
    cx, cy = sim.truth["cluster"]["center_pix"]
    pix = sim.truth["pixel_arcsec"]
    edges = np.array([0.0, 5.0, 10.0, 20.0, 40.0, 70.0])
    yy, xx = np.mgrid[0:160, 0:160]
    idx = np.searchsorted(edges, np.hypot(xx - cx, yy - cy) * pix, side="right") - 1
    annuli = np.where(idx < len(edges) - 1, idx, -1)
    prof = radial_profile(sim.counts, center_xy=(cx, cy), pixel_arcsec=pix, exposure=sim.expmap,
                          background=expected, edges_arcsec=edges)
    t = measure.measure_regions(annuli, sim.header, counts=sim.counts, exposure=sim.expmap, background=expected,
                                background_ratio=ratio, centre_radec=(150.0, 2.2))
    np.testing.assert_array_equal(t["counts"], prof["counts"])
    np.testing.assert_allclose(t["bg_counts"], prof["bg_counts"], rtol=1e-12)
    np.testing.assert_allclose(t["area_arcsec2"], prof["area_arcsec2"], rtol=1e-6)
    np.testing.assert_allclose(t["sb_cps_arcsec2"], prof["sb_cps_arcsec2"], rtol=1e-6)
    # an annulus' mean pixel radius is 2/3 (r2^3 - r1^3)/(r2^2 - r1^2); its centroid lies near the centre
    from astropy.wcs import WCS

    ra_c, dec_c = WCS(sim.header).celestial.pixel_to_world_values(cx, cy)
    t = measure.measure_regions(annuli, sim.header, counts=sim.counts, exposure=sim.expmap,
                                centre_radec=(float(ra_c), float(dec_c)))
    r1, r2 = edges[1:-1], edges[2:]
    np.testing.assert_allclose(t["r_mean_arcmin"][1:], 2 / 3 * (r2**3 - r1**3) / (r2**2 - r1**2) / 60.0, rtol=0.02)
    assert np.all(t["r_arcmin"][2:] < 0.5 * t["r_mean_arcmin"][2:])


def test_hardness_of_a_known_temperature(image):
    """Split the counts into bands as photons of a kT = 4 keV (z = 0) spectrum would be; the hr must follow."""
    sim, _bgexp, binmap = image
    rng = np.random.default_rng(11)
    s = spectra.band_counts("thermal", 4.0, 0.5, 2.0)
    h = spectra.band_counts("thermal", 4.0, 2.0, 7.0)
    soft = rng.binomial(sim.counts, s / (s + h))
    hard = sim.counts - soft
    t = measure.measure_regions(binmap, sim.header, counts=sim.counts, exposure=sim.expmap, soft=soft, hard=hard,
                                centre_radec=(150.0, 2.2))
    truth = (h - s) / (h + s)
    pull = (t["hr"] - truth) / t["hr_err"]
    assert abs(np.mean(pull)) < 3 / math.sqrt(len(pull))
    assert 0.7 < np.std(pull) < 1.05  # first-order propagation of Gehrels upper errors: conservative, not loose
    total = (t["hard_net"].sum() - t["soft_net"].sum()) / (t["hard_net"].sum() + t["soft_net"].sum())
    assert total == pytest.approx(truth, abs=0.02)
    assert t.meta["soft_band_kev"] == [0.5, 2.0]
    assert t.meta["hard_band_kev"] == [2.0, 7.0]


def test_flux_with_an_arf():
    e = spectra.EGRID_KEV
    arf = (e[:-1], e[1:], spectra.effective_area_cm2(0.5 * (e[:-1] + e[1:])))
    # exact for the spectrum it assumes: a flat ARF of 400 cm2 and a spectrum flat in photons
    flat = (e[:-1], e[1:], np.full(e.size - 1, 400.0))
    assert measure.band_flux_per_rate(flat, (0.5, 7.0), spectrum="flat") == pytest.approx(
        3.75 * spectra.KEV_TO_ERG / 400.0, rel=1e-3)
    # the simulator's thermal spectra: the 5 keV default within 5 %, and as stated for 2 and 10 keV
    k = measure.band_flux_per_rate(arf, (0.5, 7.0))
    for kt, lo, hi in ((5.0, 0.95, 1.05), (2.0, 1.0, 1.25), (10.0, 0.8, 1.0)):
        assert lo < k / spectra.energy_flux_per_rate("thermal", kt, 0.5, 7.0) < hi
    with pytest.raises(InputError, match="flux_spectrum"):
        measure.band_flux_per_rate(arf, (0.5, 7.0), spectrum=("blackbody", 1.0))


def test_flux_columns(image):
    sim, bgexp, binmap = image
    e = spectra.EGRID_KEV
    arf = {"energ_lo": e[:-1], "energ_hi": e[1:], "specresp": spectra.effective_area_cm2(0.5 * (e[:-1] + e[1:]))}
    t = _measure(sim, bgexp, binmap, arf=arf, flux_spectrum=("bremsstrahlung", 5.0))
    k = measure.band_flux_per_rate(arf, (0.5, 7.0))
    np.testing.assert_allclose(t["sb_flux_cgs_arcsec2"], t["sb_cps_arcsec2"] * k)
    np.testing.assert_allclose(t["sb_flux_cgs_arcsec2_err"], t["sb_cps_arcsec2_err"] * k)
    assert "bremsstrahlung kT = 5 keV" in t.meta["flux"]


def test_flux_from_an_area_weighted_exposure_map(image):
    """A cm2 s map of a flat 400 cm2 ARF gives the flux of the ARF route (and no count rates)."""
    sim, bgexp, binmap = image
    e = spectra.EGRID_KEV
    flat = (e[:-1], e[1:], np.full(e.size - 1, 400.0))
    by_arf = _measure(sim, bgexp, binmap, arf=flat)
    expected, ratio = measure.contbin_background(sim.background, expmap=sim.expmap, bgexpmap=bgexp)
    by_map = measure.measure_regions(binmap, sim.header, counts=sim.counts, exposure=sim.expmap * 400.0,
                                     exposure_unit="cm**2 s", background=expected, background_ratio=ratio,
                                     centre_radec=(150.0, 2.2))
    np.testing.assert_allclose(by_map["sb_flux_cgs_arcsec2"], by_arf["sb_flux_cgs_arcsec2"], rtol=1e-3)
    np.testing.assert_allclose(by_map["sb_flux_cgs_arcsec2_err"], by_arf["sb_flux_cgs_arcsec2_err"], rtol=1e-3)
    assert np.all(np.isnan(by_map["rate_cps"]))
    with pytest.raises(InputError, match="already holds the effective area"):
        measure.measure_regions(binmap, sim.header, counts=sim.counts, exposure=sim.expmap, exposure_unit="cm2 s",
                                arf=flat, centre_radec=(150.0, 2.2))
    with pytest.raises(InputError, match="exposure_unit"):
        measure.measure_regions(binmap, sim.header, counts=sim.counts, exposure=sim.expmap, exposure_unit="ks",
                                centre_radec=(150.0, 2.2))


def test_cosmologies():
    from astropy.cosmology import Planck18

    assert measure.parse_cosmology("Planck18") is Planck18
    c = measure.parse_cosmology("FlatLambdaCDM(H0=67.5, Om0=0.31)")
    assert c.H0.value == 67.5
    assert c.Om0 == 0.31
    d = measure.parse_cosmology({"H0": 70, "Om0": 0.3, "Ode0": 0.6})
    assert d.Ode0 == 0.6
    assert measure.parse_cosmology(None).H0.value == 70.0
    for bad in ("Planck99", "os.system('ls')", "FlatLambdaCDM(70, 0.3)", {"H0": "x"}):
        with pytest.raises(InputError, match="cosmology"):
            measure.parse_cosmology(bad)


def test_r500_of_abell_907(shared_data):
    """ACCEPT's A907 (z 0.1527, Tx 5.04 keV) through Arnaud et al. 2005 and against Vikhlinin et al. 2009."""
    path = shared_data / "samples" / "accept_catalog.csv"
    with path.open() as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Abell_907")
    z, tx = float(row["z"]), float(row["Tx"])
    assert (z, tx) == (0.1527, 5.04)
    r500 = measure.r500_from_tx(tx, z)
    # by hand from the published coefficients: E(z) for Om0 = 0.3, flat
    ez = math.sqrt(0.3 * (1 + z) ** 3 + 0.7)
    assert r500 == pytest.approx(1104.0 * (tx / 5.0) ** 0.57 / ez, rel=1e-6)
    assert r500 == pytest.approx(1030.0, abs=2.0)
    # an independent relation: Vikhlinin et al. 2009 M500 = 3.02e14 h^-1 Msun (T/5)^1.53 / E(z)
    from astropy import units as u
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=70, Om0=0.3)
    m500 = 3.02e14 / 0.7 * (tx / 5.0) ** 1.53 / ez * u.Msun
    rho = 500 * cosmo.critical_density(z)
    r_v09 = ((3 * m500 / (4 * math.pi * rho)) ** (1 / 3)).to_value(u.kpc)
    assert r500 == pytest.approx(r_v09, rel=0.08)
    sc = measure.cluster_scales(z, tx_kev=tx)
    assert sc.r500_kpc == pytest.approx(r500)
    assert sc.r500_source.startswith("scaling relation (Arnaud")
    assert sc.kpc_per_arcmin == pytest.approx(cosmo.kpc_proper_per_arcmin(z).value)
    assert measure.cluster_scales(z, r500_kpc=1200.0, tx_kev=tx).r500_source == "sample"
    none = measure.cluster_scales(None, tx_kev=tx)
    assert none.r500_kpc is None
    assert math.isnan(none.kpc_per_arcmin)
    # another cosmology changes E(z) and h
    assert measure.r500_from_tx(tx, z, "Planck18") != pytest.approx(r500, rel=1e-3)


def test_bad_inputs(image):
    sim, _, binmap = image
    with pytest.raises(InputError, match="differs from the bin map"):
        measure.measure_regions(binmap, sim.header, counts=sim.counts[1:], exposure=1e4, centre_radec=(150, 2.2))
    with pytest.raises(InputError, match="non-integer"):
        measure.measure_regions(binmap + 0.5, sim.header, counts=sim.counts, exposure=1e4, centre_radec=(150, 2.2))
    with pytest.raises(InputError, match=r"band .ultra."):
        measure.measure_regions(binmap, sim.header, counts=sim.counts, exposure=1e4, centre_radec=(150, 2.2),
                                hardness_bands=("soft", "ultra"))
    with pytest.raises(InputError, match="tx_kev"):
        measure.r500_from_tx(-1.0, 0.1)


# ---------------------------------------------------------------- end to end on the pipeline


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """SIM-MERGER's two obsids at 12 ks each, through process_cluster (about 10 s)."""
    truth = simulate.demo_truth(seed=7)
    obs = truth.observations[truth.observations["cluster"] == "SIM-MERGER"]
    obs["exposure_s"] = 12000.0
    truth = simulate.validate_truth(truth.clusters[truth.clusters["name"] == "SIM-MERGER"],
                                    truth.point_sources[truth.point_sources["cluster"] == "SIM-MERGER"], obs)
    root = tmp_path_factory.mktemp("measure_sky")
    products = simulate.simulate_sky(truth, root / "archive", seed=7)
    config = load_config(environ={}, overrides={
        "project": {"data_dir": str(root / "archive"), "work_dir": str(root / "work"),
                    "store": str(root / "xmine.duckdb")},
        "cache": {"offline": True},
        "binning": {"sn": 15.0, "smoothsn": 15.0},
        "process": {"merge_size_arcmin": 8.0, "crop_radius_arcmin": 2.0},
    })
    c = truth.clusters[0]
    spec = ClusterSpec(name=str(c["name"]), ra_deg=float(c["ra_deg"]), dec_deg=float(c["dec_deg"]),
                       obsids=tuple(int(o) for o in truth.observations["obsid"]), z=float(c["z"]),
                       tx_kev=float(c["kt_kev"]))
    catalog = Table(fits.getdata(products.catalog_files["csc21/master_source.fits"], 1))
    with open_store(config.project.store) as store:
        run_id = store.start_run("process", {}, run_id="m1")
        result = process_cluster(spec, config=config, store=store, run_id=run_id, catalog=catalog)
    return spec, c, result, config, catalog


@pytest.mark.slow
def test_measure_cluster_end_to_end(processed, tmp_path):
    spec, truth_row, result, _, _ = processed
    t = measure.measure_cluster(result.outputs, spec)
    assert t.colnames == list(measure.COLUMNS)
    for name, unit in measure.COLUMNS.items():
        assert (t[name].unit is None) == (unit is None), name
    assert len(t) == result.n_bins
    # the pipeline's own per-bin table: same bins, same S/N
    bins = Table.read(result.outputs["contbin"]["bins"])
    np.testing.assert_array_equal(t["bin_id"], bins["bin_id"])
    np.testing.assert_allclose(t["sn"], bins["sn"], rtol=1e-9)
    # every unmasked binned pixel counted once
    counts = fits.getdata(result.outputs["crop"]["counts"])
    binmap = fits.getdata(result.outputs["contbin"]["binmap"])
    mask = fits.getdata(result.outputs["crop"]["mask"])
    assert t["counts"].sum() == counts[(binmap >= 0) & (mask > 0)].sum()
    assert t["n_pix"].sum() == np.sum((binmap >= 0) & (mask > 0))
    # soft (0.5-2) and hard (2-7 keV) split the broad band's events
    assert (t["soft_net"] + t["hard_net"]).sum() == pytest.approx(t["net_counts"].sum(), rel=0.01)
    # the cluster's hardness against the simulator's spectrum of its (mostly 8 keV) gas at z = 0.22
    kt_obs = float(truth_row["kt_kev"]) / (1 + float(truth_row["z"]))
    s = spectra.band_counts("thermal", kt_obs, 0.5, 2.0)
    h = spectra.band_counts("thermal", kt_obs, 2.0, 7.0)
    hr = (t["hard_net"].sum() - t["soft_net"].sum()) / (t["hard_net"].sum() + t["soft_net"].sum())
    assert hr == pytest.approx((h - s) / (h + s), abs=0.03)
    # scales: z and Tx from the spec; R500 through the scaling relation
    assert t.meta["z"] == pytest.approx(0.22)
    assert t.meta["r500_source"].startswith("scaling relation")
    assert np.all(np.isfinite(t["r_r500"]))
    assert np.all(t["r_arcmin"] < 2.0 * math.sqrt(2))
    assert np.all(t["bg_counts"] > 0)
    # the FITS table: units and values round-trip, astropy reads it back
    path = measure.write_regions(tmp_path / "regions.fits", t)
    back = Table.read(path, hdu="REGIONS")
    assert back.colnames == t.colnames
    for name in ("sb_cps_arcsec2", "r_kpc", "area_arcsec2", "counts"):
        assert back[name].unit == t[name].unit
        np.testing.assert_array_equal(back[name], t[name])
    assert "cosmology = FlatLambdaCDM(H0=70" in " ".join(fits.getheader(path, "REGIONS")["COMMENT"])
    assert "band backgrounds: local annulus" in t.meta["background"]


@pytest.mark.slow
def test_measure_cluster_without_background(processed):
    spec, _, _, config, catalog = processed
    config = load_config(environ={}, overrides={**config.model_dump(mode="json"),
                                                 "process": {**config.process.model_dump(mode="json"),
                                                             "background": "none"}})
    with open_store(config.project.store) as store:
        result = process_cluster(spec, config=config, store=store, run_id="m2", catalog=catalog)
    t = measure.measure_cluster(result.outputs, spec)
    assert len(t) == result.n_bins
    assert np.all(t["bg_counts"] == 0)
    np.testing.assert_array_equal(t["net_counts"], t["counts"])
    bins = Table.read(result.outputs["contbin"]["bins"])
    np.testing.assert_allclose(t["sn"], bins["sn"], rtol=1e-9)
    assert t.meta["background"] == "none"


@pytest.mark.slow
def test_measure_cluster_bad_outputs(processed, tmp_path):
    spec, _, result, _, _ = processed
    broken = {k: dict(v) if isinstance(v, dict) else v for k, v in result.outputs.items()}
    broken["contbin"]["binmap"] = str(tmp_path / "gone.fits")
    with pytest.raises(InputError, match=r"gone.fits: no such file") as exc:
        measure.measure_cluster(broken, spec)
    assert "\n" not in str(exc.value)
    junk = tmp_path / "junk.fits"
    junk.write_text("not FITS")
    broken["contbin"]["binmap"] = str(junk)
    with pytest.raises(InputError, match=r"junk.fits: cannot read the bin map") as exc:
        measure.measure_cluster(broken, spec)
    assert "\n" not in str(exc.value)
    del broken["crop"]
    with pytest.raises(InputError, match=r"no crop\['counts'\]"):
        measure.measure_cluster(broken, spec)
    assert Path(result.outputs["contbin"]["binmap"]).exists()
