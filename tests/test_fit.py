"""Temperature fits through sherpa: injected temperatures recovered from spectra folded through real (3C 186, ObsID
9774) and simulator responses, Galactic N_H from HI4PI, the low-kT warning and one-line errors.

Real responses are read in place through the ``shared_data`` fixture (skips locally, fails under CI when absent).
"""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np
import pytest
from astropy.table import Table
from tests.conftest import import_or_skip, skip_or_fail

from xmine.errors import InputError
from xmine.simulate import spectra as simspec
from xmine.simulate.responses import write_simulator_responses
from xmine.spectra import write_pha

import_or_skip("sherpa.astro.ui.utils", "sherpa (the fit extra) is not installed")
logging.getLogger("sherpa").setLevel(logging.ERROR)

from xmine.fit import (  # noqa: E402  (after the sherpa check)
    FIT_COLUMNS,
    ContinuumTemperatureWarning,
    _bremss_class,
    _fit_dataset,
    _wabs_class,
    fit_region_spectra,
    fit_spectrum,
    galactic_nh,
    has_xspec,
)


def _simulated_pha(folder, name, kt_kev, n_photons, arf, rmf, seed):
    """A spectrum made by xmine's simulator itself: photons drawn and smeared, binned into PI as its event writer."""
    rng = np.random.default_rng(seed)
    e = simspec.sample_energies("thermal", kt_kev, n_photons, rng)
    pi = np.clip(np.floor(e * 1000.0 / 14.6).astype(int) + 1, 1, 1024)
    return write_pha(folder / f"{name}.pi", np.bincount(pi - 1, minlength=1024), exposure=1e4, backscal=1e-3,
                     respfile=rmf, ancrfile=arf, keywords={"RA_OBJ": 33.71, "DEC_OBJ": 41.05})


def test_simulated_spectra_recover_kt_and_warn_below_3kev(tmp_path):
    arf, rmf = write_simulator_responses(tmp_path)
    hot = _simulated_pha(tmp_path, "hot", 5.0, 6000, arf, rmf, seed=1)
    cool = _simulated_pha(tmp_path, "cool", 1.5, 6000, arf, rmf, seed=2)
    table = Table({"bin_id": [0, 1, 2], "obsid": [0, 0, 0], "pha_file": [str(hot), str(cool), str(tmp_path / "no.pi")]})
    with pytest.warns(ContinuumTemperatureWarning, match=r"1 bin\(s\) \(1\).*Fe-L"):
        fits = fit_region_spectra(table, nh_1e22=simspec.NH_CM2 / 1e22, model="bremss")
    assert tuple(fits.colnames) == FIT_COLUMNS
    assert list(fits["bin_id"]) == [0, 1, 2]
    for row, truth in zip(fits[:2], (5.0, 1.5), strict=True):
        assert row["kt_lo"] < row["kt_kev"] < row["kt_hi"]
        sigma = 0.5 * (row["kt_hi"] - row["kt_lo"])
        assert abs(row["kt_kev"] - truth) < 3 * sigma, (row["kt_kev"], row["kt_lo"], row["kt_hi"])
        assert row["stat"] == "cstat"  # no background
        assert row["n_counts"] > 4000
    assert "Fe-L" in fits["note"][1]
    assert fits["note"][0] == ""
    assert np.isnan(fits["kt_kev"][2])
    assert "no such spectrum" in fits["note"][2]


def test_chi2_and_the_galactic_column_from_the_header(tmp_path):
    arf, rmf = write_simulator_responses(tmp_path)
    hot = _simulated_pha(tmp_path, "hot", 6.0, 8000, arf, rmf, seed=3)
    res = fit_spectrum(hot, stat="chi2", model="bremss")
    assert res.stat == "chi2"
    assert res.nh_1e22 == pytest.approx(galactic_nh(33.71, 41.05))  # RA_OBJ/DEC_OBJ of the spectrum
    assert abs(res.kt_kev - 6.0) < 3 * 0.5 * (res.kt_hi - res.kt_lo)


def test_galactic_nh_hi4pi():
    # the Lockman Hole is the lowest H I column on the sky, ~5-6e19 cm^-2; the Galactic centre is > 5e21
    assert 0.003 < galactic_nh(161.25, 57.5) < 0.009
    assert galactic_nh(266.42, -29.01) > 0.5


def test_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no such spectrum"):
        fit_spectrum(tmp_path / "missing.pi", nh_1e22=0.01)
    with pytest.raises(InputError, match="fit model 'mekal'"):
        fit_spectrum(tmp_path / "missing.pi", nh_1e22=0.01, model="mekal")
    if not has_xspec():
        with pytest.raises(InputError, match="needs sherpa built with XSPEC"):
            fit_spectrum(tmp_path / "missing.pi", nh_1e22=0.01, model="xsapec")
    empty = write_pha(tmp_path / "empty.pi", np.zeros(1024, int), exposure=1e3, backscal=1e-3,
                      respfile=write_simulator_responses(tmp_path)[1])
    with pytest.raises(InputError, match="too few to fit"):
        fit_spectrum(empty, nh_1e22=0.01)
    monkeypatch.setitem(sys.modules, "sherpa.astro.ui.utils", None)
    with pytest.raises(InputError, match=r"pip install 'xmine\[fit\]'"):
        fit_spectrum(empty, nh_1e22=0.01)


@pytest.mark.slow
def test_100_spectra_at_5kev_through_the_9774_responses_are_unbiased(shared_data):
    """100 spectra faked by sherpa (fixed seed) from xmine's model through the real 3C 186 ARF/RMF, fitted as
    fit_spectrum does: the mean kT is within 1σ of the scatter of 5 keV (and within 3 standard errors), and the
    1σ conf interval of one fit matches the scatter."""
    from sherpa.astro.ui.utils import Session

    folder = shared_data / "spectra" / "3c186_obs9774"
    if not (folder / "9774.arf").exists():
        skip_or_fail(f"{folder} is absent")
    s = Session()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        arf = s.unpack_arf(str(folder / "9774.arf"))
        rmf = s.unpack_rmf(str(folder / "9774.rmf"))
    absorb, thermal = _wabs_class()("a"), _bremss_class()("t")
    absorb.nH = 0.05
    thermal.kT = 5.0
    thermal.norm = 1.0
    s.set_rng(np.random.default_rng(2026))
    s.dataspace1d(1, 1024, 1, id=1, dstype=__import__("sherpa.astro.data", fromlist=["DataPHA"]).DataPHA)
    s.set_source(1, absorb * thermal)
    s.fake_pha(1, arf=arf, rmf=rmf, exposure=1e4)
    thermal.norm = 3000.0 / float(s.get_data(1).counts.sum())  # ~3000 counts per spectrum
    kts = []
    one = None
    for k in range(100):
        s.set_source(1, absorb * thermal)
        s.fake_pha(1, arf=arf, rmf=rmf, exposure=1e4)
        res = _fit_dataset(s, f"fake {k}", nh_1e22=0.05, z=0.0, model="bremss", emin=0.5, emax=7.0, stat="cstat",
                           kt_start_kev=3.0, errors=(k == 0), abundance=0.3)
        if k == 0:
            one = res
        kts.append(res.kt_kev)
    kts = np.array(kts)
    bias, scatter = float(kts.mean() - 5.0), float(kts.std(ddof=1))
    half = 0.5 * (one.kt_hi - one.kt_lo)
    print(f"kT: mean bias {bias:+.3f} keV, scatter {scatter:.3f} keV, conf 1 sigma {half:.3f}, "
          f"{one.n_counts} counts, dof {one.dof}")
    assert abs(bias) < scatter
    assert abs(bias) < 3 * scatter / np.sqrt(kts.size), (bias, scatter)
    half = 0.5 * (one.kt_hi - one.kt_lo)
    assert half == pytest.approx(scatter, rel=0.35), (half, scatter)


def test_config_model_names_and_cstat_with_a_background(tmp_path):
    arf, rmf = write_simulator_responses(tmp_path)
    bkg = write_pha(tmp_path / "bkg.pi", np.random.default_rng(4).poisson(0.5, 1024), exposure=1e4, backscal=1e-2,
                    background=True)
    rng = np.random.default_rng(5)
    e = simspec.sample_energies("thermal", 5.0, 5000, rng)
    pi = np.clip(np.floor(e * 1000.0 / 14.6).astype(int) + 1, 1, 1024)
    src = write_pha(tmp_path / "src.pi", np.bincount(pi - 1, minlength=1024), exposure=1e4, backscal=1e-3,
                    respfile=rmf, ancrfile=arf, backfile=bkg)
    res = fit_spectrum(src, nh_1e22=0.03, model="brems", stat="cstat", errors=False)
    assert res.model == "bremss"
    assert any("cstat ignores the background" in w for w in res.warnings)
    assert fit_spectrum(src, nh_1e22=0.03, model="brems", errors=False).stat == "wstat"
