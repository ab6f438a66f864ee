"""Events and images against CIAO's own products (ObsID 1479 subset, dmcopy images)."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from xmine.errors import InputError
from xmine.events import filter_events, read_events
from xmine.images import make_counts_image

# astropy's WCS notes CIAO headers' RADECSYS and DATE-OBS/MJDREF fix-ups; informational only
pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.fixture
def obs1479(shared_data):
    return shared_data / "events" / "chandra_obs1479_acis_subset"


def test_sky_wcs_by_column_name_not_position(shared_data):
    header = fits.Header.fromtextfile(shared_data / "events" / "chandra_pixlist_wcs.hdr")
    from xmine.events import sky_wcs

    w = sky_wcs(header)
    ref = WCS(header, keysel=["image", "pixel"], colsel=[11, 12])
    assert list(w.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    np.testing.assert_allclose(w.wcs.crval, [229.38051931869, -58.81108068885])
    np.testing.assert_allclose(w.wcs.crval, ref.wcs.crval)
    np.testing.assert_allclose(w.wcs.cdelt, ref.wcs.cdelt)


def test_full_layout_file_reads(shared_data):
    ev = read_events(shared_data / "events" / "chandra_mrk1434_obs18059_2rows.fits")
    assert len(ev) == 2
    assert ev["status"].dtype == np.uint32
    assert ev.provenance["OBS_ID"].strip() == "18059"


@pytest.mark.parametrize(("name", "band", "binsize", "total"), [
    ("acis_dm_bin10_img.fits.gz", None, 10, 128),
    ("acis_dm_bin1_img.fits.gz", (2.0, 5.0), 1, 13),
])
def test_counts_image_equals_dmcopy(obs1479, name, band, binsize, total):
    ref = fits.open(obs1479 / name)[0]
    ev = read_events(obs1479 / "acis_evt2.fits.gz")
    if band:
        ev = filter_events(ev, emin_kev=band[0], emax_kev=band[1], grades=None, status_zero=False)
    ny, nx = ref.data.shape
    image, header = make_counts_image(ev, xmin=4000, ymin=4000, shape=(ny, nx), binsize=binsize)
    assert image.sum() == total
    np.testing.assert_array_equal(image, ref.data)
    for key in ("CRPIX1", "CRPIX2", "CDELT1", "CDELT2", "CRVAL1", "CRVAL2", "LTV1", "LTV2", "LTM1_1", "LTM2_2",
                "CRVAL1P", "CRPIX1P", "CDELT1P"):
        assert header[key] == pytest.approx(ref.header[key], rel=1e-10), key
    # the same pixel maps to the same sky position in both headers
    pix = [[3.3, 7.1]]
    np.testing.assert_allclose(WCS(header).all_pix2world(pix, 1), WCS(ref.header).all_pix2world(pix, 1))


def test_filters(obs1479):
    ev = read_events(obs1479 / "acis_evt2.fits.gz")
    assert set(ev.gti) == {0, 1, 2, 3, 6}
    acis_i = filter_events(ev, emin_kev=None, emax_kev=None, grades=None, status_zero=False, ccds=(0, 1, 2, 3))
    assert set(np.unique(acis_i["ccd_id"])) <= {0, 1, 2, 3}
    band = filter_events(ev, emin_kev=0.5, emax_kev=7.0)
    assert band["energy"].min() >= 500
    assert band["energy"].max() <= 7000
    assert set(np.unique(band["grade"])) <= {0, 2, 3, 4, 6}


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # astropy leaves the handle of a broken file open
def test_bad_event_files(tmp_path):
    with pytest.raises(InputError, match=r"missing.fits: no such event file"):
        read_events(tmp_path / "missing.fits")
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    with pytest.raises(InputError, match=r"junk.fits: "):
        read_events(junk)
    img = tmp_path / "img.fits"
    fits.writeto(img, np.zeros((2, 2)))
    with pytest.raises(InputError, match=r"img.fits: no EVENTS extension"):
        read_events(img)
