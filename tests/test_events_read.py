"""The streaming event reader: chunks, gzip, per-chunk selection, damaged files, provenance."""

import gzip

import numpy as np
import pytest
from astropy.io import fits

from xmine.errors import InputError
from xmine.events import filter_events, read_events
from xmine.simulate import demo_truth, simulate_observation, write_event_file

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@pytest.fixture(scope="module")
def evt(tmp_path_factory):
    sim = simulate_observation(demo_truth(), 90102, seed=2)
    folder = tmp_path_factory.mktemp("evt")
    return write_event_file(sim, folder / "acisf90102N001_evt2.fits"), sim


def test_chunks_and_gzip_give_the_same_events(evt, tmp_path):
    path, sim = evt
    whole = read_events(path, columns=None)
    assert len(whole) == sim.n_events
    gz = tmp_path / "acisf90102N001_evt2.fits.gz"
    gz.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    for other in (read_events(path, columns=None, chunk_rows=997), read_events(gz, columns=None, chunk_rows=5000)):
        assert set(other.columns) == set(whole.columns)
        for name, values in whole.columns.items():
            np.testing.assert_array_equal(other[name], values, err_msg=name)
        assert set(other.gti) == set(whole.gti)
    # against astropy's own reading of the same file
    with fits.open(path) as hdul:
        d = hdul["EVENTS"].data
        for name in ("time", "x", "energy", "ccd_id", "chipx", "pi"):
            np.testing.assert_array_equal(whole[name], d[name])
        status = np.packbits(np.asarray(d["status"], dtype=bool), axis=1, bitorder="big").view(">u4").ravel()
        np.testing.assert_array_equal(whole["status"], status)
        assert whole["status"].dtype == np.uint32
        assert (whole["status"] != 0).any()
        np.testing.assert_array_equal(whole.gti[7], np.column_stack([hdul[5].data["START"], hdul[5].data["STOP"]]))


def test_selection_while_reading_equals_filtering_after(evt):
    path, _ = evt
    cuts = {"emin_kev": 0.5, "emax_kev": 7.0, "grades": (0, 2, 3, 4, 6), "status_zero": True, "ccds": (6, 7)}
    early = read_events(path, columns=("time", "x", "y"), select=cuts, chunk_rows=10_000)
    late = filter_events(read_events(path), **cuts)
    np.testing.assert_array_equal(early["time"], late["time"])
    assert set(early.columns) == {"time", "x", "y"}  # cut columns are read but not kept
    assert early.provenance["selection"]["ccds"] == (6, 7)
    assert late.provenance["selection"]["emin_kev"] == 0.5


def test_provenance_keywords(evt):
    path, _ = evt
    prov = read_events(path).provenance
    for key in ("DATAMODE", "READMODE", "TIMEDEL", "OBS_ID", "DETNAM"):
        assert key in prov
    assert prov["TIMEDEL"] == pytest.approx(3.24104)
    assert prov["event_file"].endswith("acisf90102N001_evt2.fits")


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_damaged_files(evt, tmp_path):
    path, _ = evt
    data = path.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut.fits: the EVENTS table is truncated \(\d+ of \d+ rows\); download it"):
        read_events(cut)
    head = tmp_path / "head.fits"
    head.write_bytes(data[:4000])
    with pytest.raises(InputError, match=r"head.fits: the file is truncated"):
        read_events(head)
    gz = tmp_path / "bad.fits.gz"
    gz.write_bytes(gzip.compress(data)[:-5000])
    with pytest.raises(InputError, match=r"bad.fits.gz: "):
        read_events(gz)
    noxy = tmp_path / "noxy.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="time", format="D", array=np.arange(3.0))], name="EVENTS")]).writeto(noxy)
    with pytest.raises(InputError, match=r"noxy.fits: no columns named x and y"):
        read_events(noxy)
    with pytest.raises(InputError, match="chunk_rows"):
        read_events(path, chunk_rows=0)


def test_no_events_after_filtering_is_a_clear_error(evt):
    path, _ = evt
    ev = read_events(path)
    with pytest.raises(InputError, match=r"acisf90102N001_evt2.fits: filter: none of \d+ events pass .*ccds \(0, 1\)"):
        filter_events(ev, ccds=(0, 1), allow_empty=False)
    assert len(filter_events(ev, ccds=(0, 1))) == 0
