"""Flux changes and new sources against injected truth (xmine.simulate) and exact rule boundaries."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.stats import chi2

from xmine.changes import (
    SensitivityMap,
    compare_fluxes,
    detections_to_flux_list,
    flux_list,
    read_sensitivity_map,
    run_changes,
)
from xmine.errors import InputError, XmineWarning
from xmine.simulate.labels import make_epoch_pair, write_epoch_pair


def _flag_of(result: Table, truth_row) -> tuple[str, bool]:
    if truth_row["name_ref"]:
        k = np.flatnonzero(np.asarray(result["name_ref"]) == truth_row["name_ref"])
    else:
        k = np.flatnonzero(np.asarray(result["name_new"]) == truth_row["name_new"])
    assert k.size == 1, truth_row
    return str(result["flag"][k[0]]), bool(result["exceeds_factor"][k[0]])


@pytest.mark.parametrize("seed", [0, 3])
def test_injected_changes_are_flagged_and_unchanged_sources_are_not(tmp_path, seed):
    pair = make_epoch_pair(seed=seed)
    files = write_epoch_pair(pair, tmp_path)
    smap = read_sensitivity_map(files["new_sensitivity"])
    res = compare_fluxes(files["reference"], files["new"], new_limit=smap, ref_limit=smap)
    truth = pair.truth
    for injected in ("brightened", "faded", "vanished", "new"):
        rows = truth[truth["injected"] == injected]
        assert len(rows) >= 3
        for r in rows:
            flag, exceeds = _flag_of(res, r)
            assert flag == injected, (injected, r["truth_name"], flag)
            assert exceeds, (injected, r["truth_name"])
    # sources whose flux did not change: detected in both epochs and matched -> never brightened/faded
    same = truth[(truth["injected"] == "unchanged") & (truth["name_ref"] != "") & (truth["name_new"] != "")]
    flags = [_flag_of(res, r)[0] for r in same]
    assert len(same) > 200
    assert sum(f in ("brightened", "faded") for f in flags) == 0
    seen = truth[(truth["injected"] == "unchanged") & ((truth["name_ref"] != "") | (truth["name_new"] != ""))]
    alerts = [f for f, e in (_flag_of(res, r) for r in seen) if e]
    assert len(alerts) <= 2  # near-coincident pairs may be confused; 1 % at most


def test_each_flag_row_carries_its_numbers(tmp_path):
    pair = make_epoch_pair(seed=1)
    smap = SensitivityMap(pair.limit_map, WCS(pair.header))
    res = compare_fluxes(pair.reference, pair.new, new_limit=smap)
    up = res[res["flag"] == "brightened"]
    assert np.allclose(up["ratio"], up["flux_new_lo90"] / up["flux_ref_hi90"])
    assert np.all(up["ratio"] > 3)
    down = res[res["flag"] == "faded"]
    assert np.allclose(down["ratio"], down["flux_ref_lo90"] / down["flux_new_hi90"])
    gone = res[res["flag"] == "vanished"]
    assert np.allclose(gone["ratio"], gone["flux_ref_lo90"] / gone["limit_new"])
    assert all("limit" in str(r) for r in gone["rule"])
    out = run_changes(pair.reference, pair.new, new_limit=smap, out=tmp_path / "flags.ecsv", alerts_only=True)
    back = Table.read(out.out)
    assert set(back["flag"]) <= {"brightened", "faded", "vanished", "new"}
    assert len(back) == int(np.sum(out.table["alert"]))


def _one(name, flux, lo, hi, ra=10.0):
    return Table({"name": [name], "ra": [ra], "dec": [0.0], "flux": [flux], "flux_lo": [lo], "flux_hi": [hi]})


def test_rule_boundaries():
    ref = _one("r", 1.0e-14, 0.9e-14, 1.0e-14)
    # new lower limit exactly 3x the reference upper limit: not beyond the factor
    assert str(compare_fluxes(ref, _one("n", 3.5e-14, 3.0e-14, 4e-14))["flag"][0]) == "unchanged"
    assert str(compare_fluxes(ref, _one("n", 3.5e-14, 3.01e-14, 4e-14))["flag"][0]) == "brightened"
    # a factor 10 change of the best values inside wide error bars is not a change
    assert str(compare_fluxes(ref, _one("n", 1e-13, 5e-15, 2e-13))["flag"][0]) == "unchanged"
    assert str(compare_fluxes(ref, _one("n", 1e-13, 5e-15, 2e-13), factor=1.5)["flag"][0]) == "unchanged"
    assert str(compare_fluxes(ref, _one("n", 2e-15, 1e-15, 2.9e-15))["flag"][0]) == "faded"
    # not detected: the new limit decides
    far = _one("n", 1e-14, 9e-15, 1.1e-14, ra=20.0)
    assert str(compare_fluxes(ref, far, new_limit=2.9e-15)["flag"][0]) == "vanished"
    assert str(compare_fluxes(ref, far, new_limit=3.1e-15)["flag"][0]) == "undetected"
    assert str(compare_fluxes(ref, far)["flag"][0]) == "undetected"
    res = compare_fluxes(ref, far, ref_limit=1e-15)
    new_row = res[res["flag"] == "new"][0]
    assert new_row["ratio"] == pytest.approx(9.0)
    assert bool(new_row["exceeds_factor"])


def test_confidence_rescaling_and_1sigma_errors():
    t = Table({"name": ["a"], "ra": [1.0], "dec": [1.0], "flux_aper_b": [10.0], "flux_aper_lolim_b": [9.0],
               "flux_aper_hilim_b": [11.0]})
    fl = flux_list(t, confidence=0.6827)
    assert fl["flux_hi90"][0] == pytest.approx(10 + 1.645, abs=2e-3)
    x = Table({"IAUNAME": ["4XMM J1"], "SC_RA": [1.0], "SC_DEC": [1.0], "SC_EP_8_FLUX": [10.0],
               "SC_EP_8_FLUX_ERR": [2.0]})
    fl = flux_list(x)
    assert fl["flux_lo90"][0] == pytest.approx(10 - 1.645 * 2, rel=1e-3)
    assert str(fl["name"][0]) == "4XMM J1"


def test_band_and_instrument_mismatch_warns():
    ref = _one("r", 1.0e-14, 0.9e-14, 1.1e-14)
    with pytest.warns(XmineWarning, match="bands differ"):
        res = compare_fluxes(ref, ref, ref_band_kev=(0.5, 7.0), new_band_kev=(0.2, 12.0))
    assert res.meta["notes"]
    with pytest.warns(XmineWarning, match="instruments differ"):
        compare_fluxes(ref, ref, ref_instrument="ACIS", new_instrument="EPIC")


def test_sensitivity_map_errors(tmp_path):
    plain = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.ones((10, 10), dtype=np.float32)).writeto(plain)
    with pytest.raises(InputError, match="no celestial WCS") as err:
        read_sensitivity_map(plain)
    assert "\n" not in str(err.value)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, 0.0]
    w.wcs.crpix = [5.5, 5.5]
    w.wcs.cdelt = [-0.01, 0.01]
    hdr = w.to_header()
    hdr["BUNIT"] = "photon/cm**2/s"
    phot = tmp_path / "phot.fits"
    fits.PrimaryHDU(np.full((10, 10), 2e-6, dtype=np.float32), header=hdr).writeto(phot)
    with pytest.raises(InputError, match="flux_per_map_unit"):
        read_sensitivity_map(phot)
    m = read_sensitivity_map(phot, flux_per_map_unit=1e-9)
    lim = m.limit_at([10.0, 50.0], [0.0, 0.0])
    assert lim[0] == pytest.approx(2e-15, rel=1e-5)
    assert math.isnan(lim[1])  # off the map: no limit
    with pytest.raises(InputError, match="no such sensitivity map"):
        read_sensitivity_map(tmp_path / "absent.fits")


def test_missing_columns_error_is_one_line():
    bad = Table({"name": ["a"], "ra": [1.0], "dec": [1.0]})
    with pytest.raises(InputError, match="flux column") as err:
        compare_fluxes(bad, bad)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="factor"):
        compare_fluxes(_one("r", 1, 1, 1), _one("r", 1, 1, 1), factor=1.0)


def test_detections_to_flux_list_uses_exact_poisson_intervals():
    det = Table({"ra_deg": [1.0, 2.0], "dec_deg": [0.0, 0.0], "aper_counts": [10.0, 0.0],
                 "aper_bkg": [0.0, 0.0], "net_counts": [10.0, 0.0]})
    fl = detections_to_flux_list(det, exposure_s=1e4, ecf_erg_cm2_per_count=1e-11)
    # Gehrels (1986) table: 90 % two-sided (5 %/95 %) limits for n = 10 are 5.43 and 16.96
    assert fl["flux_lo"][0] * 1e4 / 1e-11 == pytest.approx(5.425, abs=0.01)
    assert fl["flux_hi"][0] * 1e4 / 1e-11 == pytest.approx(16.96, abs=0.01)
    assert fl["flux_hi"][1] * 1e4 / 1e-11 == pytest.approx(chi2.ppf(0.95, 2) / 2)
    assert fl["flux_lo"][1] == 0.0
    # a detection list goes straight into the comparison
    res = compare_fluxes(fl, fl)
    assert set(res["flag"]) == {"unchanged"}


def test_epoch_pair_is_seeded():
    a, b = make_epoch_pair(seed=5), make_epoch_pair(seed=5)
    assert np.array_equal(a.reference["flux_aper_b"], b.reference["flux_aper_b"])
    c = dataclasses.replace(a)
    assert c.truth is a.truth


def test_csc_like_epochs_from_the_sky_simulator():
    """Two CSC-like epochs of the demo sky (xmine.simulate): rates changed in the truth, catalogued, compared."""
    from xmine.simulate import demo_truth, make_catalogs

    truth = demo_truth(seed=2026)
    ref_cats = make_catalogs(truth, seed=0)
    ref = ref_cats.csc_master_source
    match = ref_cats.truth_match[ref_cats.truth_match["catalogue"] == "csc21"]
    to_truth = dict(zip(np.asarray(match["cat_id"]), np.asarray(match["truth_name"]), strict=True))
    point = ~np.asarray(ref["extent_flag"], dtype=bool)
    order = np.argsort(-np.asarray(ref["flux_aper_b"]))
    bright = [str(ref["name"][i]) for i in order if point[i]][:3]
    down, up, gone = (to_truth[n] for n in bright)

    ps = truth.point_sources.copy()
    names = np.asarray(ps["name"])
    ps["rate_cps"][names == up] *= 5.0
    ps["rate_cps"][names == down] /= 5.0
    new_row = ps[names == up][0]
    ps.remove_rows(np.flatnonzero(names == gone))
    ps.add_row({**{c: new_row[c] for c in ps.colnames}, "name": "INJECTED-NEW",
                "dec_deg": float(new_row["dec_deg"]) + 1.5 / 60})
    new_cats = make_catalogs(dataclasses.replace(truth, point_sources=ps), seed=1)
    new = new_cats.csc_master_source
    nmatch = new_cats.truth_match[new_cats.truth_match["catalogue"] == "csc21"]
    new_truth = dict(zip(np.asarray(nmatch["cat_id"]), np.asarray(nmatch["truth_name"]), strict=True))

    limit = float(np.min(new["flux_aper_b"]))  # the faintest new detection stands for the new epoch's limit
    res = compare_fluxes(ref, new, new_limit=limit)
    by_truth = {}
    for r in res:
        key = to_truth.get(str(r["name_ref"])) or new_truth.get(str(r["name_new"]))
        by_truth.setdefault(key, []).append(str(r["flag"]))
    assert by_truth[up] == ["brightened"]
    assert by_truth[down] == ["faded"]
    assert by_truth[gone] == ["vanished"]
    assert by_truth["INJECTED-NEW"] == ["new"]
    same = [k for k in by_truth if k not in (up, down, gone, "INJECTED-NEW")]
    assert len(same) > 20
    assert not any(f in ("brightened", "faded") for k in same for f in by_truth[k])


def test_xmine_detections_against_a_reference_through_the_cli(tmp_path):
    """xmine's own detections on a simulated field (xmine.detect) as the new list, through `xmine sources changes`."""
    from astropy.wcs import WCS as _WCS
    from tests.test_hardness import run_sources_cli

    from xmine.detect import detect_sources, simulate_detection_field

    img, hdr, truth, _ = simulate_detection_field(512, n_sources=25, counts_range=(40, 800), cluster_counts=2e4,
                                                  seed=3)
    det = detect_sources(img, header=hdr)
    det.meta.clear()  # detect keeps its thresholds in meta (long keys): not needed here
    det.write(tmp_path / "det.fits")
    ecf, expo = 1e-11, 1e4  # erg cm-2 per count, s: 1 count = 1e-15 erg cm-2 s-1
    k = ecf / expo
    ra, dec = _WCS(hdr).all_pix2world(np.asarray(truth["x_pix"]), np.asarray(truth["y_pix"]), 0)
    counts = np.asarray(truth["counts"], float)
    bright = np.flatnonzero(counts >= 250)
    assert bright.size >= 4
    faded, brightened, new = bright[:3]
    ref_flux = counts * k
    ref_flux[faded] *= 5.0  # the reference epoch saw it 5x brighter
    ref_flux[brightened] /= 5.0
    keep = np.ones(counts.size, dtype=bool)
    keep[new] = False  # not in the reference: a new source
    # a reference source where the field has nothing: vanished below the new limit
    x_gone, y_gone = 60.0, 450.0
    assert np.min(np.hypot(truth["x_pix"] - x_gone, truth["y_pix"] - y_gone)) > 30
    ra_gone, dec_gone = _WCS(hdr).all_pix2world([x_gone], [y_gone], 0)
    ref = Table({"name": [f"T{i}" for i in np.flatnonzero(keep)] + ["GONE"],
                 "ra": np.r_[ra[keep], ra_gone], "dec": np.r_[dec[keep], dec_gone],
                 "flux": np.r_[ref_flux[keep], 400 * k]})
    ref["flux_lo"] = 0.9 * ref["flux"]
    ref["flux_hi"] = 1.1 * ref["flux"]
    ref.write(tmp_path / "ref.fits")
    code, out = run_sources_cli(["changes", "--reference", str(tmp_path / "ref.fits"), "--new",
                                 str(tmp_path / "det.fits"), "--new-ecf", str(ecf), "--new-exposure-s", str(expo),
                                 "--new-limit", str(20 * k), "--out", str(tmp_path / "flags.ecsv")])
    assert code == 0, out
    res = Table.read(tmp_path / "flags.ecsv")
    flag = {str(r["name_ref"]): str(r["flag"]) for r in res if r["name_ref"]}
    assert flag[f"T{faded}"] == "faded"
    assert flag[f"T{brightened}"] == "brightened"
    assert flag["GONE"] == "vanished"
    sep = SkyCoord(res["ra"], res["dec"], unit="deg").separation(SkyCoord(ra[new], dec[new], unit="deg")).arcsec
    assert str(res["flag"][np.argmin(sep)]) == "new"
    assert np.min(sep) < 2
    steady = [f"T{i}" for i in np.flatnonzero(keep & (counts >= 100)) if i not in (faded, brightened)]
    assert len(steady) >= 5
    assert all(flag[n] == "unchanged" for n in steady)
    code, out = run_sources_cli(["changes", "--reference", str(tmp_path / "ref.fits"), "--new",
                                 str(tmp_path / "det.fits"), "--new-ecf", str(ecf)])
    assert code == 1
    assert "--new-exposure-s" in out


def test_csc_against_4xmm_columns_warns_without_being_told():
    csc = Table({"name": ["c"], "ra": [1.0], "dec": [1.0], "flux_aper_b": [1e-14], "flux_aper_lolim_b": [9e-15],
                 "flux_aper_hilim_b": [1.1e-14]})
    xmm = Table({"IAUNAME": ["x"], "SC_RA": [1.0], "SC_DEC": [1.0], "SC_EP_8_FLUX": [1.5e-14],
                 "SC_EP_8_FLUX_ERR": [1e-15]})
    with pytest.warns(XmineWarning, match=r"0.5–7.0 keV against 0.2–12.0 keV.*Chandra ACIS against XMM-Newton EPIC"):
        res = compare_fluxes(csc, xmm)
    assert str(res["flag"][0]) == "unchanged"


def test_reference_from_a_cached_table(tmp_path):
    from xmine.cache import store_result
    from xmine.store import open_store
    from xmine.vo import to_arrow

    pair = make_epoch_pair(seed=2)
    with open_store(tmp_path / "x.duckdb") as store:
        store_result(store, "cache_csc21_ref", to_arrow(pair.reference), service="simulated", catalogue="csc21",
                     query_text="reference epoch")
        res = compare_fluxes("cache_csc21_ref", pair.new, store=store)
    direct = compare_fluxes(pair.reference, pair.new)
    assert sorted(map(str, res["flag"])) == sorted(map(str, direct["flag"]))
    assert int(np.sum(res["flag"] == "brightened")) == 5
