"""Point-source masks: PSF-sized exclusion regions, pixel masks, region files, the A907 region file."""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from xmine.errors import InputError
from xmine.events import read_events
from xmine.images import make_counts_image, sky_box
from xmine.masks import (
    catalog_point_sources,
    chandra_r90_arcsec,
    combine_sources,
    flag_core_sources,
    make_mask,
    make_point_source_mask,
    make_source_table,
    mask_radius_arcsec,
    read_region_file,
    write_mask,
    write_region_file,
)
from xmine.simulate import demo_truth, make_catalogs, simulate_observation, write_event_file

SHAPE = (1024, 1024)
pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.fixture(scope="module")
def sim_field(tmp_path_factory):
    """SIM-MERGER, ObsID 90201 (ACIS-I, 40 ks): counts image 1024² at bin 2, events' truth, CSC rows."""
    truth = demo_truth()
    sim = simulate_observation(truth, 90201, seed=1)
    path = write_event_file(sim, tmp_path_factory.mktemp("evt") / "evt2.fits")
    ev = read_events(path)
    obs = sim.obs
    xmin, ymin = sky_box(ev.wcs, obs["ra_pnt"], obs["dec_pnt"], size_pix=1024, binsize=2.0)
    image, header = make_counts_image(ev, xmin=xmin, ymin=ymin, shape=(1024, 1024), binsize=2.0)
    cats = make_catalogs(truth, seed=1)
    return {"sim": sim, "events": ev, "image": image, "header": header, "xmin": xmin, "ymin": ymin,
            "csc": cats.csc_master_source, "xmm": cats.xmm_sources, "truth": truth}


def test_chandra_psf_radius_and_growth():
    np.testing.assert_allclose(chandra_r90_arcsec([0.0, 10.0]), [1.0, 11.0])
    r = mask_radius_arcsec([5.0, 5.0, 5.0, 5.0], [10, 100, 1000, 10000], scale=1.0, min_radius_arcsec=0.0)
    assert r[0] == r[1] == pytest.approx(3.5)  # below ref_counts: the PSF r90 alone
    assert r[1] < r[2] < r[3]
    assert r[3] == pytest.approx(3.5 * 2.0)  # two decades above 100 counts, slope 0.5
    assert mask_radius_arcsec(0.0, None)[()] == pytest.approx(2.0)  # floor
    assert mask_radius_arcsec([0.0], [np.nan])[0] == pytest.approx(2.0)


def test_catalogue_masks_cover_the_simulated_photons(sim_field):
    """Each catalogued point source's own photons fall inside its PSF-sized mask."""
    f = sim_field
    src = catalog_point_sources(f["csc"], header=f["header"], shape=SHAPE)
    assert len(src) >= 5
    assert not src["masked"][src["extended"]].any()
    mask = make_mask(src, f["image"].shape)
    sim, ev = f["sim"], f["events"]
    ix = np.floor((ev["x"] - f["xmin"]) / 2.0).astype(int)
    iy = np.floor((ev["y"] - f["ymin"]) / 2.0).astype(int)
    inside_img = (ix >= 0) & (ix < 1024) & (iy >= 0) & (iy < 1024)
    points = sim.sources[sim.sources["kind"] == "point"]
    fractions = []
    wcs = WCS(f["header"])
    for p in points:
        sel = (sim.src_id == p["src_id"]) & inside_img
        if sel.sum() < 20:
            continue
        # only sources the catalogue has (the mask cannot know the others)
        px, py = wcs.world_to_pixel_values(p["ra_deg"], p["dec_deg"])
        if np.min(np.hypot(src["x_pix"] - px, src["y_pix"] - py)) > 3:
            continue
        fractions.append(1.0 - mask[iy[sel], ix[sel]].mean())
    assert len(fractions) >= 3
    assert np.median(fractions) >= 0.95
    assert min(fractions) >= 0.85


def test_error_ellipse_is_not_the_source_size(sim_field):
    f = sim_field
    t = Table(f["csc"][:5], copy=True)
    a = catalog_point_sources(t, header=f["header"], shape=SHAPE)
    t["err_ellipse_r0"] *= 50
    t["err_ellipse_r1"] *= 50
    b = catalog_point_sources(t, header=f["header"], shape=SHAPE)
    np.testing.assert_allclose(a["radius_arcsec"], b["radius_arcsec"])


def test_masked_and_string_columns(sim_field):
    """Masked fluxes fall back to the reference counts; 'T'/'F' flags and masked flags are read."""
    from astropy.table import MaskedColumn

    f = sim_field
    t = Table(f["csc"], copy=True, masked=True)
    t["flux_aper_b"] = MaskedColumn(np.asarray(t["flux_aper_b"]), mask=np.ones(len(t), bool))
    t["extent_flag"] = MaskedColumn(np.where(np.asarray(t["extent_flag"]), "T", "F"), mask=np.zeros(len(t), bool))
    src = catalog_point_sources(t, header=f["header"], shape=SHAPE)
    assert np.isnan(src["counts"]).all()
    ref = catalog_point_sources(f["csc"], header=f["header"], shape=SHAPE)
    ref_by_name = {r["name"]: r for r in ref}  # (a bright source's bigger circle may reach into the image)
    assert set(src["name"]) <= set(ref_by_name)
    for r in src:
        assert r["extended"] == ref_by_name[r["name"]]["extended"]
        assert r["radius_arcsec"] <= ref_by_name[r["name"]]["radius_arcsec"] + 1e-9


def test_4xmm_rows_and_extended(sim_field):
    f = sim_field
    src = catalog_point_sources(f["xmm"], header=f["header"], shape=SHAPE)
    ext_rows = np.asarray(f["xmm"]["SC_EXTENT"]) > 0
    assert ext_rows.any()
    assert len(src) > 0
    assert not src["masked"][src["extended"]].any()


def test_core_sources_flagged_for_review(sim_field):
    f = sim_field
    src = catalog_point_sources(f["csc"], header=f["header"], shape=SHAPE)
    pts = src[~src["extended"]]
    cx, cy = float(pts["x_pix"][0]), float(pts["y_pix"][0])
    flagged = flag_core_sources(src, center_x_pix=cx, center_y_pix=cy, core_radius_pix=5.0)
    i = int(np.flatnonzero(~flagged["extended"] & flagged["in_core"])[0])
    assert flagged["review"][i]
    assert not flagged["masked"][i]
    masked = flag_core_sources(src, center_x_pix=cx, center_y_pix=cy, core_radius_pix=5.0, mask_core=True)
    assert masked["masked"][i]
    assert masked["review"][i]
    m = make_mask(flagged, f["image"].shape)
    assert m[round(cy), round(cx)] == 1  # a review source is not masked
    assert make_mask(masked, f["image"].shape)[round(cy), round(cx)] == 0
    with pytest.raises(InputError, match="core_radius_pix"):
        flag_core_sources(src, center_x_pix=cx, center_y_pix=cy, core_radius_pix=-1.0)


def test_ellipse_fill_matches_regions():
    import astropy.units as u
    from regions import EllipsePixelRegion, PixCoord

    t = Table({"x_pix": [30.3], "y_pix": [20.7], "a_pix": [12.0], "b_pix": [5.0], "angle_deg": [548.975],
               "masked": [True]})
    ours = make_mask(t, (50, 64))
    reg = EllipsePixelRegion(PixCoord(30.3, 20.7), 24.0, 10.0, angle=548.975 * u.deg)
    ref = reg.to_mask(mode="center").to_image((50, 64)).astype(bool)
    assert np.count_nonzero(ours == 0) == pytest.approx(np.pi * 60, rel=0.05)
    assert np.count_nonzero((ours == 0) != ref) <= 2  # boundary pixels at most


def test_mask_and_region_files_round_trip(sim_field, tmp_path):
    from regions import CircleSkyRegion, Regions

    f = sim_field
    src = catalog_point_sources(f["csc"], header=f["header"], shape=SHAPE)
    mask = make_mask(src, f["image"].shape, exposure=np.ones(f["image"].shape))
    p = write_mask(tmp_path / "mask.fits", mask, f["header"])
    with fits.open(p) as hdul:
        assert hdul[0].data.dtype == np.uint8
        np.testing.assert_array_equal(hdul[0].data, mask)
        assert set(np.unique(hdul[0].data)) <= {0, 1}
        assert hdul[0].header["CRVAL1"] == f["header"]["CRVAL1"]
        assert hdul[0].header["LTV1"] == f["header"]["LTV1"]
    img = Regions.read(str(write_region_file(tmp_path / "src_img.reg", src, system="image")), format="ds9")
    assert len(img) == len(src)
    np.testing.assert_allclose([r.center.x for r in img], src["x_pix"], atol=1e-6)
    np.testing.assert_allclose([r.radius for r in img], src["a_pix"], rtol=1e-6)
    sky = Regions.read(str(write_region_file(tmp_path / "src_fk5.reg", src, header=f["header"], system="fk5")),
                       format="ds9")
    assert all(isinstance(r, CircleSkyRegion) for r in sky)
    sep = SkyCoord([r.center for r in sky]).separation(SkyCoord(src["ra_deg"], src["dec_deg"], unit="deg"))
    assert sep.arcsec.max() < 0.05  # written as FK5 J2000: < 0.02″ from ICRS
    np.testing.assert_allclose([r.radius.to_value("arcsec") for r in sky], src["radius_arcsec"], rtol=1e-3)
    assert "\nfk5\n" in (tmp_path / "src_fk5.reg").read_text()


def test_physical_region_file(sim_field, tmp_path):
    """Physical (sky pixel) regions, as CIAO and make_region_files use: centres map back to the events' x/y."""
    f = sim_field
    src = catalog_point_sources(f["csc"], header=f["header"], shape=SHAPE)
    text = write_region_file(tmp_path / "phys.reg", src, header=f["header"], system="physical").read_text()
    lines = text.splitlines()
    assert "physical" in lines
    circles = [ln for ln in lines if ln.startswith("circle(")]
    assert len(circles) == len(src)
    vals = np.array([[float(v) for v in ln[ln.index("(") + 1:ln.index(")")].split(",")] for ln in circles])
    # image pixel (0-based) i covers sky x in [xmin + 2i, xmin + 2i + 2): its centre is xmin + 2i + 1
    np.testing.assert_allclose(vals[:, 0], f["xmin"] + 2 * np.asarray(src["x_pix"]) + 1.0, atol=1e-6)
    np.testing.assert_allclose(vals[:, 1], f["ymin"] + 2 * np.asarray(src["y_pix"]) + 1.0, atol=1e-6)
    np.testing.assert_allclose(vals[:, 2], 2 * np.asarray(src["a_pix"]), rtol=1e-6)
    # the same through the sky WCS of the event file
    ra, dec = f["events"].wcs.all_pix2world(vals[:, 0], vals[:, 1], 1)
    sep = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(src["ra_deg"], src["dec_deg"], unit="deg"))
    assert sep.arcsec.max() < 1e-3


def test_one_call_catalogue_plus_detection(sim_field):
    f = sim_field
    cat = catalog_point_sources(f["csc"], header=f["header"], shape=SHAPE)
    pts = cat[~cat["extended"]]
    centre = (float(pts["x_pix"][0]), float(pts["y_pix"][0]))
    sources, mask = make_point_source_mask(f["image"], f["header"], catalog=f["csc"], cluster_center_xy=centre,
                                           core_radius_pix=3.0)
    assert mask.shape == SHAPE
    assert set(sources["origin"]) >= {"catalog"}
    assert "both" in set(sources["origin"])  # bright catalogue sources are also detected
    assert sources["review"].sum() >= 1
    # every masked row is masked in the image
    for r in sources[sources["masked"]]:
        x, y = round(float(r["x_pix"])), round(float(r["y_pix"]))
        if 0 <= x < 1024 and 0 <= y < 1024:
            assert mask[y, x] == 0


def test_combine_catalogue_and_detections(sim_field):
    f = sim_field
    cat = catalog_point_sources(f["csc"], header=f["header"], shape=SHAPE)
    pts = cat[~cat["extended"]]
    w = WCS(f["header"])
    ra1, dec1 = w.pixel_to_world_values(pts["x_pix"][0] + 0.5, pts["y_pix"][0])
    ra2, dec2 = w.pixel_to_world_values(100.0, 900.0)
    det = make_source_table(np.array([ra1, ra2]), np.array([dec1, dec2]), header=f["header"], origin="detect",
                            counts=np.array([50.0, 20.0]))
    both = combine_sources(cat, det)
    assert len(both) == len(cat) + 1
    assert "both" in list(both["origin"])
    assert both["origin"][-1] == "detect"


def test_a907_region_file(shared_data):
    reg = read_region_file(shared_data / "images" / "xmm_a907_0201903501" / "0201903501_sources.reg")
    assert len(reg) == 32  # the file holds 32 ellipses (its README says 33)
    assert list(reg["kind"]).count("point") == 29
    assert list(reg["kind"]).count("extended") == 2
    assert list(reg["kind"]).count("other") == 1
    assert ((reg["angle_deg"] >= 0) & (reg["angle_deg"] < 180)).all()
    assert reg["angle_deg"][0] == pytest.approx(548.975 - 540)
    a907 = reg[(reg["kind"] == "extended") & (reg["a_pix"] > 20)][0]
    assert (a907["x_pix"], a907["y_pix"]) == pytest.approx((257.748, 275.575))  # DS9 (258.748, 276.575)
    magenta = reg[reg["kind"] == "other"][0]
    assert magenta["angle_deg"] == pytest.approx(-237.7 % 180)
    # mask the red ones, keep A907
    t = Table(reg, copy=True)
    t["masked"] = t["kind"] == "point"
    m = make_mask(t, (512, 512))
    assert m[276, 258] == 1
    assert m[142, 238] == 0


def test_bad_inputs(sim_field, tmp_path):
    f = sim_field
    with pytest.raises(InputError, match="no ra/dec"):
        catalog_point_sources(Table({"x": [1.0]}), header=f["header"], shape=SHAPE)
    bad = Table(f["csc"][:2], copy=True)
    bad["ra"][1] = np.nan
    with pytest.raises(InputError, match="row 2 has no position"):
        catalog_point_sources(bad, header=f["header"], shape=SHAPE)
    with pytest.raises(InputError, match="no celestial WCS"):
        catalog_point_sources(f["csc"], header=fits.Header({"NAXIS": 2, "NAXIS1": 10, "NAXIS2": 10}))
    with pytest.raises(InputError, match="exposure map shape"):
        make_mask(Table(), (10, 10), exposure=np.ones((5, 5)))
    with pytest.raises(InputError, match="no such region file"):
        read_region_file(tmp_path / "none.reg")
    junk = tmp_path / "junk.reg"
    junk.write_text("image\npolygon(1,2,3,4,5,6)\n")
    with pytest.raises(InputError, match="no pixel ellipses or circles"):
        read_region_file(junk)
    src = catalog_point_sources(f["csc"], header=f["header"], shape=SHAPE)
    with pytest.raises(InputError, match="'galactic'"):
        write_region_file(tmp_path / "x.reg", src, system="galactic")
    with pytest.raises(InputError, match="need the image header"):
        write_region_file(tmp_path / "x.reg", src, system="physical")
    with pytest.raises(InputError, match="no physical transform"):
        write_region_file(tmp_path / "x.reg", src, system="physical", header=fits.Header({"CRVAL1": 1.0}))
    assert not (tmp_path / "x.reg").exists()
    bare = f["header"].copy()
    del bare["RA_PNT"], bare["DEC_PNT"]
    with pytest.raises(InputError, match="off-axis angles are unknown"):
        catalog_point_sources(f["csc"], header=bare)
    assert len(catalog_point_sources(f["csc"], header=bare, shape=SHAPE)) > 0
    with pytest.raises(InputError, match="nothing to mask"):
        make_point_source_mask(f["image"], f["header"], detect=False)
