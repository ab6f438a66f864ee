"""Region spectra as OGIP files: writers (fitsverify, sherpa), the simulator's responses, real CIAO/CSC sets, and
spectra of a simulated cluster checked against an independent count of its events.

Real spectra are read in place through the ``shared_data`` fixture (skips locally, fails under CI when absent).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from tests.conftest import import_or_skip, skip_or_fail

from xmine.errors import InputError
from xmine.images import celestial_wcs
from xmine.simulate import spectra as simspec
from xmine.simulate.responses import CHANNEL_KEV, simulator_rmf, write_simulator_responses
from xmine.spectra import (
    SPECTRA_COLUMNS,
    extract_cluster_spectra,
    extract_region_spectra,
    read_arf,
    read_rmf,
    write_pha,
)

sherpa_ui = import_or_skip("sherpa.astro.ui.utils", "sherpa (the fit extra) is not installed")
logging.getLogger("sherpa").setLevel(logging.ERROR)


def _fitsverify(path: Path) -> None:
    exe = shutil.which("fitsverify")
    if exe is None:
        skip_or_fail("fitsverify (Debian package fitsverify) is not installed")
    out = subprocess.run([exe, "-q", "-e", str(path)], capture_output=True, text=True, check=False)
    assert "verification OK" in out.stdout, out.stdout + out.stderr
    assert out.returncode == 0


def _load(path: Path):
    s = sherpa_ui.Session()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        s.load_pha(1, str(path))
    return s


# ---------------------------------------------------------------- writers and simulator responses


def test_pha_and_responses_pass_fitsverify_and_load_in_sherpa(tmp_path):
    arf, rmf = write_simulator_responses(tmp_path / "resp")
    rng = np.random.default_rng(3)
    bkg = write_pha(tmp_path / "spec" / "bkg.pi", rng.poisson(2.0, 1024), exposure=2e4, backscal=4e-3,
                    background=True)
    src_counts = rng.poisson(5.0, 1024)
    header = fits.Header({"TELESCOP": "CHANDRA", "INSTRUME": "ACIS", "OBS_ID": "1234",
                          "DATE-OBS": "2020-01-01T00:00:00", "OBJECT": "TEST", "DETNAM": "ACIS-0123"})
    src = write_pha(tmp_path / "spec" / "src.pi", src_counts, exposure=2e4, backscal=1e-4, header_from=header,
                    respfile=rmf, ancrfile=arf, backfile=bkg, gti=np.array([[0.0, 1e4], [1.2e4, 2.2e4]]))
    for p in (arf, rmf, bkg, src):
        _fitsverify(p)
    h = fits.getheader(src, "SPECTRUM")
    assert (h["HDUCLAS2"], h["HDUCLAS4"], h["TLMIN1"], h["TLMAX1"], h["POISSERR"]) == ("TOTAL", "TYPE:I", 1, 1024,
                                                                                         True)
    assert (h["OBS_ID"], h["DETNAM"], h["OBJECT"]) == ("1234", "ACIS-0123", "TEST")
    assert fits.getheader(src, "GTI")["ONTIME"] == pytest.approx(2e4)
    s = _load(src)  # from another working directory than the files: paths are relative to the spectrum
    d = s.get_data(1)
    assert d.counts.sum() == src_counts.sum()
    assert d.exposure == pytest.approx(2e4)
    assert d.get_background().backscal == pytest.approx(4e-3)
    assert s.get_rmf(1).detchans == 1024
    assert s.get_arf(1).specresp.max() == pytest.approx(simspec.effective_area_cm2(np.linspace(0.3, 11, 2000)).max(),
                                                        rel=1e-3)


def test_write_pha_refuses_non_counts(tmp_path):
    with pytest.raises(InputError, match="non-negative integers"):
        write_pha(tmp_path / "x.pi", np.full(1024, 0.5), exposure=1.0, backscal=1.0)
    with pytest.raises(InputError, match="must be positive"):
        write_pha(tmp_path / "x.pi", np.ones(1024, int), exposure=0.0, backscal=1.0)


def test_simulator_rmf_reproduces_the_simulators_pi_histogram():
    """Energies drawn and smeared by the simulator itself, binned into PI as its event writer does, against the
    thermal spectrum folded through the written ARF x RMF."""
    rng = np.random.default_rng(11)
    kt = 4.0
    n = 400_000
    e_kev = simspec.sample_energies("thermal", kt, n, rng)
    pi = np.clip(np.floor(e_kev * 1000.0 / 14.6).astype(int) + 1, 1, 1024)
    observed = np.bincount(pi - 1, minlength=1024)
    lo, hi, matrix, _e_min, e_max = simulator_rmf()
    assert np.allclose(matrix.sum(axis=1), 1.0, atol=1e-9)
    assert e_max[0] == pytest.approx(CHANNEL_KEV)
    mid = 0.5 * (lo + hi)
    photons = simspec.photon_spectrum("thermal", kt, mid) * simspec.effective_area_cm2(mid) * (hi - lo)
    expected = photons @ matrix
    expected *= n / expected.sum()
    use = expected > 20
    chi2 = float(np.sum((observed[use] - expected[use]) ** 2 / expected[use]))
    dof = int(use.sum())
    assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)


# ---------------------------------------------------------------- real CIAO and CSC sets


def test_real_ciao_set_9774(shared_data):
    folder = shared_data / "spectra" / "3c186_obs9774"
    pi = folder / "9774.pi"
    if not pi.exists():
        skip_or_fail(f"{pi} is absent")
    s = _load(pi)
    d = s.get_data(1)
    b = d.get_background()
    assert d.counts.sum() == 4424
    assert b.counts.sum() == 1105
    scale = (d.backscal * d.exposure) / (b.backscal * b.exposure)
    assert scale == pytest.approx(0.045057, rel=1e-4)
    assert d.counts.sum() - scale * b.counts.sum() == pytest.approx(4374, abs=1)
    lo, _hi, area = read_arf(folder / "9774.arf")
    rlo, _rhi, matrix, _e_min, _e_max, first = read_rmf(folder / "9774.rmf")
    assert len(lo) == len(rlo) == 1078
    assert np.allclose(lo, rlo)
    assert area.max() == pytest.approx(681.9, abs=0.1)
    assert first == 1
    assert matrix.shape == (1078, 1024)
    # sherpa's own folding agrees with the dense matrix read here
    assert np.allclose(matrix, _dense(s.get_rmf(1)), atol=1e-6)


def _dense(rmf) -> np.ndarray:
    m = np.zeros((len(rmf.energ_lo), rmf.detchans))
    for i in range(len(rmf.energ_lo)):
        m[i] = rmf.apply_rmf(np.eye(len(rmf.energ_lo))[i])
    return m


def test_real_csc_pha3_with_background_in_the_same_file(shared_data):
    folder = shared_data / "spectra" / "csc1_obs4938_r0043"
    pha = folder / "acisf04938_000N002_r0043_pha3.fits"
    if not pha.exists():
        skip_or_fail(f"{pha} is absent")
    s = _load(pha)
    d = s.get_data(1)
    b = d.get_background()
    assert (d.counts.sum(), b.counts.sum()) == (2116, 10414)
    scale = (d.backscal * d.exposure) / (b.backscal * b.exposure)
    assert scale == pytest.approx(0.065766, rel=1e-4)
    assert d.counts.sum() - scale * b.counts.sum() == pytest.approx(1431, abs=1)
    _lo, _hi, matrix, _e_min, _e_max, _first = read_rmf(folder / "acisf04938_000N002_r0043_rmf3.fits")
    assert matrix.shape == (900, 1024)
    assert len(read_arf(folder / "acisf04938_000N002_r0043_arf3.fits")[0]) == 900


def test_real_9774_power_law_cstat(shared_data):
    """sherpa's own test fits XSPEC's wabs x powlaw with CStat over 0.3-7 keV and gets Γ ≈ 1.750, log10 nH ≈ -2
    (README); xmine's wabs (the same Morrison & McCammon cross-sections) must give the same."""
    pi = shared_data / "spectra" / "3c186_obs9774" / "9774.pi"
    if not pi.exists():
        skip_or_fail(f"{pi} is absent")
    from sherpa.models.basic import PowLaw1D

    from xmine.fit import _wabs_class

    s = _load(pi)
    s.set_stat("cstat")
    s.set_method("neldermead")
    s.notice(0.3, 7.0)
    s.get_data(1).exposure = 1.0  # as sherpa's test_cstat_stat
    absorb, pl = _wabs_class()("absorb"), PowLaw1D("pl")
    absorb.nH = 0.01
    pl.ampl = 1e-4
    s.set_source(absorb * pl)
    s.fit()
    print(pl.gamma.val, absorb.nH.val)
    assert pl.gamma.val == pytest.approx(1.750, abs=0.02)
    assert np.log10(max(absorb.nH.val, 1e-6)) == pytest.approx(-2.0, abs=0.5)


# ---------------------------------------------------------------- a simulated cluster through the pipeline


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """SIM-COLDFRONT (one β model, kT = 6 keV, z = 0.11), two obsids of 8 ks through the pipeline."""
    from xmine import simulate
    from xmine.config import load_config
    from xmine.pipeline import ClusterSpec, process_cluster
    from xmine.store import open_store

    truth = simulate.demo_truth(seed=7)
    name = "SIM-COLDFRONT"
    obs = truth.observations[truth.observations["cluster"] == name]
    obs["exposure_s"] = 8000.0
    truth = simulate.validate_truth(truth.clusters[truth.clusters["name"] == name],
                                    truth.point_sources[truth.point_sources["cluster"] == name], obs)
    root = tmp_path_factory.mktemp("cluster")
    products = simulate.simulate_sky(truth, root / "archive", seed=5)
    from astropy.table import Table

    catalog = Table(fits.getdata(products.catalog_files["csc21/master_source.fits"], 1))
    config = load_config(environ={}, overrides={
        "project": {"data_dir": str(root / "archive"), "work_dir": str(root / "work"),
                    "store": str(root / "xmine.duckdb")},
        "cache": {"offline": True},
        "binning": {"sn": 25.0, "smoothsn": 20.0},
        "process": {"merge_size_arcmin": 7.0, "crop_radius_arcmin": 1.5, "bg_inner_arcmin": 2.5, "detect": False}})
    c = truth.clusters[0]
    spec = ClusterSpec(name=name, ra_deg=float(c["ra_deg"]), dec_deg=float(c["dec_deg"]),
                       obsids=tuple(int(o) for o in truth.observations["obsid"]), z=float(c["z"]))
    with open_store(config.project.store) as store:
        run_id = store.start_run("process", {}, run_id="spectra")
        result = process_cluster(spec, config=config, store=store, run_id=run_id, catalog=catalog)
    arf, rmf = write_simulator_responses(root / "responses")
    responses = {o: (arf, rmf) for o in spec.obsids}
    table = extract_cluster_spectra(result.outputs, spec, config=config, out_dir=root / "spectra",
                                    responses=responses)
    return root, truth, spec, config, result, table, responses


def _independent_counts(evt2: Path, gti_file: Path, binmap: np.ndarray, binmap_header: fits.Header) -> np.ndarray:
    """Events per bin counted without xmine: astropy columns, the column WCS to RA/Dec, the bin map's sky WCS."""
    with fits.open(evt2) as hdus:
        ev = hdus["EVENTS"]
        d, h = ev.data, ev.header
        names = [n.lower() for n in ev.columns.names]
        ix, iy = names.index("x") + 1, names.index("y") + 1
        col = WCS(naxis=2)
        col.wcs.ctype = [h[f"TCTYP{ix}"], h[f"TCTYP{iy}"]]
        col.wcs.crval = [h[f"TCRVL{ix}"], h[f"TCRVL{iy}"]]
        col.wcs.crpix = [h[f"TCRPX{ix}"], h[f"TCRPX{iy}"]]
        col.wcs.cdelt = [h[f"TCDLT{ix}"], h[f"TCDLT{iy}"]]
        status = np.asarray(d["status"])
        bad_status = status.reshape(len(d), -1).any(axis=1) if status.ndim > 1 else status != 0
        keep = np.isin(d["grade"], [0, 2, 3, 4, 6]) & ~bad_status
        with fits.open(gti_file) as g:
            start, stop = g[1].data["START"], g[1].data["STOP"]
        t = np.asarray(d["time"])
        keep &= np.any((t[:, None] >= start[None, :]) & (t[:, None] < stop[None, :]), axis=1)
        ra, dec = col.all_pix2world(np.asarray(d["x"], float)[keep], np.asarray(d["y"], float)[keep], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(binmap_header).celestial
    px, py = w.all_world2pix(ra, dec, 0)
    jx, jy = np.floor(px + 0.5).astype(int), np.floor(py + 0.5).astype(int)
    ok = (jx >= 0) & (jx < binmap.shape[1]) & (jy >= 0) & (jy < binmap.shape[0])
    b = binmap[jy[ok], jx[ok]]
    return np.bincount(b[b >= 0], minlength=int(binmap.max()) + 1)


@pytest.mark.slow
def test_region_counts_match_an_independent_count_of_the_events(cluster_run):
    _root, _truth, spec, _config, result, table, _ = cluster_run
    assert tuple(table.colnames) == SPECTRA_COLUMNS
    binmap, bh = fits.getdata(result.outputs["contbin"]["binmap"], header=True)
    n_bins = int(binmap.max()) + 1
    assert n_bins >= 3
    combined = table[table["obsid"] == 0]
    assert sorted(combined["bin_id"]) == list(range(n_bins))
    total = np.zeros(n_bins, dtype=int)
    for obsid in spec.obsids:
        o = result.outputs["obs"][str(obsid)]
        expected = _independent_counts(Path(o["evt2"]), Path(o["gti"]), binmap, bh)
        rows = table[table["obsid"] == obsid]
        got = np.zeros(n_bins, dtype=int)
        got[rows["bin_id"]] = rows["counts"]
        assert np.array_equal(got, expected[:n_bins])
        for r in rows:
            assert fits.getdata(r["pha_file"], "SPECTRUM")["COUNTS"].sum() == r["counts"]
            assert r["exposure_s"] == pytest.approx(o["good_exposure_s"], rel=2e-3)
        total += got
    assert np.array_equal(np.asarray(combined["counts"]), total)
    # combined BACKSCAL is the exposure-weighted mean of the obsids'
    for r in combined:
        parts = table[(table["bin_id"] == r["bin_id"]) & (table["obsid"] != 0)]
        assert r["exposure_s"] == pytest.approx(parts["exposure_s"].sum())
        assert r["backscal"] == pytest.approx(np.sum(parts["backscal"] * parts["exposure_s"]) / r["exposure_s"])
    # a bin fully exposed by an obsid has BACKSCAL = its area in sky pixels / 8192^2 (as dmextract)
    area = np.bincount(binmap[binmap >= 0], minlength=n_bins) * (1.0 / bh["LTM1_1"]) ** 2 / 8192.0**2
    ratio = np.asarray(table["backscal"][table["obsid"] != 0]) / area[table["bin_id"][table["obsid"] != 0]]
    assert ratio.max() == pytest.approx(1.0, abs=1e-3)
    assert np.all(ratio <= 1.0 + 1e-6)


@pytest.mark.slow
def test_region_files_pass_fitsverify_and_load_with_background(cluster_run):
    _root, _truth, _spec, _config, _result, table, _ = cluster_run
    for f in sorted({*table["pha_file"], *table["bkg_file"], *table["arf_file"], *table["rmf_file"]}):
        _fitsverify(Path(f))
    some = [*table[table["bin_id"] == 0], *table[table["obsid"] == 0][-1:]]
    for r in some:
        s = _load(Path(r["pha_file"]))
        d = s.get_data(1)
        b = d.get_background()
        assert d.counts.sum() == r["counts"]
        assert b.counts.sum() == r["bkg_counts"]
        assert b.backscal == pytest.approx(r["bkg_backscal"])
        assert s.get_arf(1) is not None
        assert s.get_rmf(1) is not None
    # the combined background subtracts what the per-obsid ones subtract together
    for r in table[table["obsid"] == 0]:
        parts = table[(table["bin_id"] == r["bin_id"]) & (table["obsid"] != 0)]
        each = np.sum(parts["bkg_counts"] * parts["backscal"] * parts["exposure_s"]
                      / (parts["bkg_backscal"] * parts["exposure_s"]))
        assert r["bkg_counts"] * r["backscal"] / r["bkg_backscal"] == pytest.approx(each, rel=1e-9)


@pytest.mark.slow
def test_whole_cluster_temperature_recovered(cluster_run, tmp_path):
    """All bins as one region, the simulator's responses, xmine's continuum: kT agrees with the injected 6 keV."""
    from xmine.fit import fit_spectrum

    _root, truth, spec, config, result, _table, responses = cluster_run
    binmap, bh = fits.getdata(result.outputs["contbin"]["binmap"], header=True)
    whole = np.where(binmap >= 0, 0, -1).astype(np.int32)
    path = tmp_path / "whole_binmap.fits"
    fits.PrimaryHDU(whole, bh).writeto(path)
    merged = result.outputs["merge"]["broad"]
    header = fits.getheader(merged)
    keep = fits.getdata(result.outputs["masks"]["mask"]) > 0
    yy, xx = np.mgrid[0:keep.shape[0], 0:keep.shape[1]]
    w = celestial_wcs(header)
    cx, cy = w.world_to_pixel_values(spec.ra_deg, spec.dec_deg)
    pix = abs(header["CDELT1"]) * 60.0
    bg = keep & (np.hypot(xx - cx, yy - cy) * pix >= config.process.bg_inner_arcmin)
    table = extract_region_spectra(path, result.outputs["obs"], out_dir=tmp_path / "whole", bg_mask=bg,
                                   bg_header=header, responses=responses)
    row = table[table["obsid"] == 0][0]
    assert row["counts"] > 5000
    fit = fit_spectrum(row["pha_file"], nh_1e22=simspec.NH_CM2 / 1e22, redshift=spec.z, model="bremss")
    kt_true = float(truth.clusters[0]["kt_kev"])
    sigma = 0.5 * (fit.kt_hi - fit.kt_lo)
    print(f"whole cluster: kT {fit.kt_kev:.2f} [{fit.kt_lo:.2f}, {fit.kt_hi:.2f}] keV (injected {kt_true}), "
          f"{fit.n_counts} counts, {fit.stat}")
    assert abs(fit.kt_kev - kt_true) < 2.5 * sigma, (fit.kt_kev, fit.kt_lo, fit.kt_hi)
    assert sigma < 0.15 * kt_true


def test_extract_refuses_an_empty_bin_map(tmp_path):
    h = fits.Header({"LTM1_1": 1.0, "LTM2_2": 1.0, "LTV1": -100.0, "LTV2": -100.0, "CRVAL1": 10.0, "CRVAL2": 0.0})
    path = tmp_path / "binmap.fits"
    fits.PrimaryHDU(np.full((4, 4), -1, np.int32), h).writeto(path)
    with pytest.raises(InputError, match="no bins"):
        extract_region_spectra(path, {1: {"evt2": "x", "gti": "y"}}, out_dir=tmp_path, bg_mask=np.ones((4, 4)),
                               bg_header=h)


def test_combined_responses_are_exposure_and_area_weighted(tmp_path):
    from xmine.simulate.responses import simulator_arf
    from xmine.spectra import _combine_responses, write_arf, write_rmf

    lo, hi, area = simulator_arf()
    rlo, rhi, matrix, e_min, e_max = simulator_rmf()
    shifted = np.roll(matrix, 3, axis=1)  # a gain shift of three channels
    a1 = write_arf(tmp_path / "a1.arf", lo, hi, area)
    a2 = write_arf(tmp_path / "a2.arf", lo, hi, 0.5 * area)
    r1 = write_rmf(tmp_path / "r1.rmf", rlo, rhi, matrix, e_min, e_max)
    r2 = write_rmf(tmp_path / "r2.rmf", rlo, rhi, shifted, e_min, e_max)
    same = _combine_responses([(str(a1), str(r1)), (str(a1), str(r1))], [1.0, 3.0], tmp_path, "same")
    assert same == (str(a1), str(r1))  # identical files are reused
    arf, rmf = _combine_responses([(str(a1), str(r1)), (str(a2), str(r2))], [1.0, 3.0], tmp_path, "mix")
    _fitsverify(Path(arf))
    _fitsverify(Path(rmf))
    assert np.allclose(read_arf(arf)[2], (1.0 * area + 3.0 * 0.5 * area) / 4.0, rtol=1e-6)
    got = read_rmf(rmf)[2]
    keep = got > 1e-4
    assert np.allclose(got[keep], ((matrix + 1.5 * shifted) / 2.5)[keep], rtol=1e-5)


@pytest.mark.slow
def test_every_bin_fits_near_the_injected_temperature(cluster_run):
    from xmine.fit import fit_region_spectra

    _root, truth, spec, _config, _result, table, _ = cluster_run
    fits_table = fit_region_spectra(table, nh_1e22=simspec.NH_CM2 / 1e22, redshift=spec.z, model="bremss",
                                    errors=False)
    assert len(fits_table) == int(np.sum(table["obsid"] == 0))
    assert np.all(np.isfinite(fits_table["kt_kev"])), list(fits_table["note"])
    kt_true = float(truth.clusters[0]["kt_kev"])
    assert np.median(fits_table["kt_kev"]) == pytest.approx(kt_true, rel=0.2)
    assert set(fits_table["stat"]) == {"wstat"}


def test_resolve_responses(tmp_path):
    from xmine.spectra import resolve_responses

    folder = tmp_path / "resp"
    folder.mkdir()
    for name in ("acisf09774_src.arf", "acisf09774_src.rmf", "acisf197740_src.arf", "notes.txt"):
        (folder / name).write_text("x")
    got = resolve_responses(folder, [9774], out_dir=tmp_path)
    assert got == {9774: (str(folder / "acisf09774_src.arf"), str(folder / "acisf09774_src.rmf"))}
    with pytest.raises(InputError, match="no ARF for obsid 1234"):
        resolve_responses(folder, [1234], out_dir=tmp_path)
    sim = resolve_responses("simulator", [1, 2], out_dir=tmp_path / "sim")
    assert sim[1] == sim[2]
    assert Path(sim[1][1]).name == "xmine_sim.rmf"
    assert resolve_responses({5: {"arf": "a.arf", "rmf": "b.rmf"}}, [5], out_dir=tmp_path)[5][0].endswith("a.arf")
    assert resolve_responses(None, [5], out_dir=tmp_path) is None
