"""Contour binning: numba kernels against slow references, contbin's rules on hand-made images,
properties on random images, bad inputs, FITS outputs, and a real Chandra image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from xmine.contbin import (
    ContourBinWarning,
    accumulative_smooth,
    bin_statistics,
    make_contour_bins,
    pixel_ranks,
    read_contbin_inputs,
    run_contbin,
)
from xmine.errors import InputError


def esq(c):
    return (1 + np.sqrt(c + 0.75)) ** 2


# ---------------------------------------------------------------------------
# slow references
# ---------------------------------------------------------------------------
def ref_smooth(img, minsn, bg=None, er=None, mask=None):
    """contbin's flux_estimator::smooth, literally: grow integer radius until S/N >= minsn."""
    ny, nx = img.shape
    mask = np.ones(img.shape, bool) if mask is None else mask
    rmax = int(np.sqrt(nx * nx + ny * ny))
    yy, xx = np.mgrid[0:ny, 0:nx]
    out = np.full(img.shape, np.nan)
    rad = np.full(img.shape, -1)
    for y in range(ny):
        for x in range(nx):
            if not mask[y, x]:
                continue
            d = np.floor(np.sqrt(((xx - x) ** 2 + (yy - y) ** 2).astype(float))).astype(int)
            for r in range(rmax + 1):
                sel = (d <= r) & mask
                F = img[sel].astype(float).sum()
                N = sel.sum()
                noise = esq(F)
                W = 0.0
                if bg is not None:
                    B = bg[sel].astype(float).sum()
                    W = (bg[sel] * er[sel]).sum()
                    noise += (er[sel] ** 2).sum() / N * esq(B)
                if (F - W) ** 2 / noise >= minsn**2 or r == rmax:
                    out[y, x] = (F - W) / N
                    rad[y, x] = r
                    break
    return out, rad


def components_ok(binmap):
    """Every bin is one 4-connected piece."""
    four = ndimage.generate_binary_structure(2, 1)
    for b in np.unique(binmap[binmap >= 0]):
        _, n = ndimage.label(binmap == b, structure=four)
        if n != 1:
            return False
    return True


def cluster_image(n=48, seed=0, peak=30.0, floor=0.5):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n]
    model = peak * (1 + ((x - 0.55 * n) ** 2 + (y - 0.45 * n) ** 2) / (n / 8) ** 2) ** -1.5 + floor
    return rng.poisson(model).astype(np.int32)


# ---------------------------------------------------------------------------
# smoothing
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_smoothing_matches_reference_without_background(seed):
    rng = np.random.default_rng(seed)
    img = rng.poisson(rng.uniform(0.1, 3.0, (13, 17)))
    s, rad = accumulative_smooth(img, smoothsn=5.0)
    s_ref, rad_ref = ref_smooth(img, 5.0)
    np.testing.assert_array_equal(rad, rad_ref)
    np.testing.assert_array_equal(s, s_ref)


def test_smoothing_matches_reference_with_background_expmap_and_mask():
    rng = np.random.default_rng(3)
    shape = (14, 15)
    img = rng.poisson(rng.uniform(0.2, 3.0, shape))
    bg = rng.poisson(1.5, shape)
    exp = rng.uniform(800, 1000, shape).astype(np.float32)
    bexp = (exp * np.float32(4.0) * rng.uniform(0.9, 1.1, shape)).astype(np.float32)
    mask = rng.uniform(size=shape) > 0.15
    er = (exp / bexp).astype(np.float32).astype(np.float64)
    s, rad = accumulative_smooth(img, smoothsn=4.0, bg=bg, expmap=exp, bgexpmap=bexp, mask=mask)
    s_ref, rad_ref = ref_smooth(img, 4.0, bg, er, mask)
    np.testing.assert_array_equal(rad, rad_ref)
    np.testing.assert_allclose(s, s_ref, rtol=1e-12, atol=1e-12)
    assert np.isnan(s[~mask]).all()


def _first_radius_by_scan(P, valid, minsn):
    """The first radius reaching minsn, scanning every radius with the kernel's own disc sums."""
    from xmine.contbin import _disc_sums, _half_widths, _sn2_sums

    ny, nx = valid.shape
    rmax = int(np.sqrt(nx * nx + ny * ny))
    hw, off = _half_widths(rmax)
    out = np.full(valid.shape, np.nan)
    rad = np.full(valid.shape, -1)
    S = np.empty(5 if P.shape[2] > 2 else 2)
    for y in range(ny):
        for x in range(nx):
            if not valid[y, x]:
                continue
            for r in range(rmax + 1):
                _disc_sums(P, y, x, r, hw, off, S)
                if _sn2_sums(S) >= minsn * minsn or r == rmax:
                    break
            out[y, x] = (S[0] - (S[2] if len(S) > 2 else 0.0)) / S[1]
            rad[y, x] = r
    return out, rad


@pytest.mark.parametrize("integer", [True, False])
def test_background_smoothing_kernel_equals_a_radius_by_radius_scan(integer):
    """The range-excluding search returns exactly the first radius (and its value) a full scan finds,
    with the packed integer layout and with the float64 one (non-integer counts)."""
    from xmine.contbin import _exposure_ratio, _smooth_kernel, _smoothing_planes

    rng = np.random.default_rng(7)
    shape = (41, 47)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    model = 0.15 + 6.0 * np.exp(-((x - 30) ** 2 + (y - 15) ** 2) / 40.0) + 0.2 * (x > 35)
    img = rng.poisson(model).astype(np.float32)
    if not integer:
        img *= np.float32(1.25)
    bg = rng.poisson(2.0, shape).astype(np.float32)
    exp = rng.uniform(700, 1000, shape).astype(np.float32)
    bexp = (exp * np.float32(5.0) * rng.uniform(0.8, 1.2, shape)).astype(np.float32)
    valid = rng.uniform(size=shape) > 0.1
    valid[:, 20:22] = False
    er = _exposure_ratio(shape, exp, bexp, None, None)
    P, qmin = _smoothing_planes(img, valid, bg, er)
    assert P.shape[2] == (3 if integer else 5)
    for sn in (3.0, 8.0, 15.0):
        s, rad = _smooth_kernel(P, valid, sn, qmin)
        s_ref, rad_ref = _first_radius_by_scan(P, valid, sn)
        np.testing.assert_array_equal(rad, rad_ref)
        np.testing.assert_array_equal(s, s_ref)
    if integer:
        # both packed layouts (F, N, B in one int64 or as three int32) hold the same sums as the float64 one
        from xmine.contbin import _disc_sums, _half_widths, _prefix_planes

        P4 = _prefix_planes(img, valid, bg, er, True, 2)
        P5 = _prefix_planes(img, valid, bg, er, True, 0)
        assert (P4.shape[2], P5.shape[2]) == (4, 5)
        hw, off = _half_widths(70)
        a, b, c = np.empty(5), np.empty(5), np.empty(5)
        for yy, xx, r in ((0, 0, 60), (20, 23, 7), (40, 46, 13), (11, 30, 4)):
            _disc_sums(P, yy, xx, r, hw, off, a)
            _disc_sums(P4, yy, xx, r, hw, off, b)
            _disc_sums(P5, yy, xx, r, hw, off, c)
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, c)


def test_background_smoothing_with_totals_too_large_to_share_an_int64():
    """Counts totalling 2^21 or more cannot share one int64 with N and B: the 32-byte layout
    (F, N, B as int32) is used, and the kernel still returns exactly what a radius-by-radius scan finds."""
    from xmine.contbin import _exposure_ratio, _prefix_planes, _smooth_kernel, _smoothing_planes

    rng = np.random.default_rng(11)
    shape = (29, 31)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    img = rng.poisson(3000.0 + 900.0 * np.exp(-((x - 20) ** 2 + (y - 9) ** 2) / 30.0)).astype(np.float32)
    bg = rng.poisson(2000.0, shape).astype(np.float32)
    exp = rng.uniform(700, 1000, shape).astype(np.float32)
    bexp = (exp * np.float32(1.1) * rng.uniform(0.9, 1.1, shape)).astype(np.float32)
    valid = rng.uniform(size=shape) > 0.1
    assert img[valid].sum() >= 2**21
    er = _exposure_ratio(shape, exp, bexp, None, None)
    P, qmin = _smoothing_planes(img, valid, bg, er)
    assert P.shape[2] == 4
    for sn in (60.0, 250.0):
        s, rad = _smooth_kernel(P, valid, sn, qmin)
        s_ref, rad_ref = _first_radius_by_scan(P, valid, sn)
        np.testing.assert_array_equal(rad, rad_ref)
        np.testing.assert_array_equal(s, s_ref)
        # and the same as from the all-float64 layout
        s5, rad5 = _smooth_kernel(_prefix_planes(img, valid, bg, er, True, 0), valid, sn, qmin)
        np.testing.assert_array_equal(rad, rad5)
        np.testing.assert_array_equal(s, s5)
    assert rad[valid].max() > 4  # the search had ranges to exclude


def test_smoothing_unreachable_uses_whole_image():
    img = np.zeros((6, 7))
    img[2, 3] = 1
    s, rad = accumulative_smooth(img, smoothsn=50.0)
    assert (rad == int(np.sqrt(6**2 + 7**2))).all()
    np.testing.assert_allclose(s, 1 / 42)


# ---------------------------------------------------------------------------
# S/N and table
# ---------------------------------------------------------------------------
def test_sn_formula_gehrels_and_background_scale():
    binmap = np.array([[0, 0], [1, -1]])
    counts = np.array([[60, 40], [9, 1000]])
    tab = bin_statistics(binmap, counts)
    assert tab["counts"][0] == 100
    assert tab["sn"][0] == pytest.approx(100 / (1 + np.sqrt(100.75)))
    assert tab["area_pix"].tolist() == [2, 1]
    bg = np.array([[10, 10], [5, 0]])
    tab = bin_statistics(binmap, counts, bg=bg, exposure_s=1000.0, bg_exposure_s=4000.0)
    r = np.float64(np.float32(1000.0) / np.float32(4000.0))
    assert tab["bg_counts"][0] == pytest.approx(20 * r)
    assert tab["bg_counts_raw"][0] == 20
    noise2 = esq(100) + (2 * r * r / 2) * esq(20)
    assert tab["sn"][0] == pytest.approx((100 - 20 * r) / np.sqrt(noise2))
    assert tab["net_counts"][0] == pytest.approx(100 - 20 * r)


def test_bin_statistics_sparse_labels_equal_dense():
    rng = np.random.default_rng(5)
    counts = rng.poisson(3.0, (9, 11))
    bg = rng.poisson(1.0, (9, 11))
    dense = rng.integers(-1, 4, (9, 11))
    sparse = np.where(dense >= 0, dense * 100_000 + 7, -1)  # labels far apart: renumbered first
    kw = dict(bg=bg, exposure_s=1000.0, bg_exposure_s=3000.0)
    a = bin_statistics(dense, counts, **kw)
    b = bin_statistics(sparse, counts, **kw)
    assert list(b["bin_id"]) == [int(i) * 100_000 + 7 for i in a["bin_id"]]
    for col in a.colnames[1:]:
        np.testing.assert_array_equal(a[col], b[col])
    assert a["area_pix"].sum() == (dense >= 0).sum()


def test_bin_statistics_takes_big_endian_fits_arrays():
    rng = np.random.default_rng(6)
    counts = rng.poisson(3, (12, 10))
    binmap = rng.integers(-1, 5, (12, 10))
    bg = rng.poisson(1, (12, 10)).astype(np.float32)
    exp = np.full((12, 10), 900.0, np.float32)
    a = bin_statistics(binmap, counts, bg=bg, expmap=exp, bgexpmap=exp * 4)
    b = bin_statistics(binmap.astype(">i4"), counts.astype(">i4"), bg=bg.astype(">f4"), expmap=exp.astype(">f4"),
                       bgexpmap=(exp * 4).astype(">f4"))
    for col in a.colnames:
        np.testing.assert_array_equal(a[col], b[col])


# ---------------------------------------------------------------------------
# growth, constraint, scrubbing on hand-made images
# ---------------------------------------------------------------------------
def test_growth_takes_the_neighbour_closest_to_the_seed_value_then_scrubs():
    counts = np.full((1, 5), 10)
    smoothed = np.array([[1.0, 5.0, 9.0, 6.0, 2.0]])
    # one pixel: S/N 2.33; two pixels: 3.59 -> sn=3 needs two pixels
    kept = make_contour_bins(counts, sn=3.0, smoothed=smoothed, noscrub=True)
    np.testing.assert_array_equal(kept.binmap, [[1, 1, 0, 0, 2]])
    assert kept.params["n_below_sn"] == 1
    res = make_contour_bins(counts, sn=3.0, smoothed=smoothed)
    np.testing.assert_array_equal(res.binmap, [[1, 1, 0, 0, 0]])
    assert (res.table["sn"] >= 3.0).all()


def test_growth_uses_four_neighbours_only():
    counts = np.full((2, 2), 10)
    smoothed = np.array([[9.0, 0.0], [0.5, 8.9]])
    res = make_contour_bins(counts, sn=3.0, smoothed=smoothed, noscrub=True)
    # seed (0,0); the diagonal 8.9 is not a neighbour, so the closer of the two 4-neighbours joins
    assert res.binmap[0, 0] == res.binmap[1, 0] == 0
    assert res.binmap[1, 1] != 0


def test_equal_candidates_follow_contbin_edge_order_or_rank():
    # the seed's two neighbours have the same smoothed value
    counts = np.array([[5, 30, 6]])
    smoothed = np.array([[4.0, 9.0, 4.0]])
    # contbin: neighbours of the first edge pixel in the order up, left, right, down -> left wins
    res = make_contour_bins(counts, sn=5.0, smoothed=smoothed, noscrub=True)
    np.testing.assert_array_equal(res.binmap, [[0, 0, 1]])
    # symmetric: the better-ranked pixel (more counts) wins
    res = make_contour_bins(counts, sn=5.0, smoothed=smoothed, noscrub=True, ties="symmetric")
    np.testing.assert_array_equal(res.binmap, [[1, 0, 0]])


def test_constraint_keeps_bins_compact():
    n = 41
    counts = np.full((n, n), 2)
    smoothed = np.zeros((n, n))
    smoothed[20, :] = 10.0  # a ridge of equal values: unconstrained growth runs along it
    free = make_contour_bins(counts, sn=6.0, smoothed=smoothed, noscrub=True)
    tied = make_contour_bins(counts, sn=6.0, smoothed=smoothed, noscrub=True, constrainfill=True,
                             constrainval=1.0)
    ys, xs = np.nonzero(free.binmap == 0)
    assert (ys == 20).all()
    assert np.ptp(xs) >= 10
    ys, xs = np.nonzero(tied.binmap == 0)
    assert np.ptp(xs) < 10
    assert (ys != 20).any()
    assert components_ok(tied.binmap)


def test_scrubbing_leaves_no_bin_below_target_without_background():
    img = cluster_image(40, seed=5)
    res = make_contour_bins(img, sn=12.0, smoothsn=12.0)
    assert (res.table["sn"] >= 12.0).all()
    kept = make_contour_bins(img, sn=12.0, smoothsn=12.0, noscrub=True)
    assert (kept.table["sn"] < 12.0).any()
    assert len(kept.table) > len(res.table)


# ---------------------------------------------------------------------------
# properties on random images
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "constrain"), [(0, False), (1, True)])
def test_partition_connected_and_deterministic(seed, constrain):
    img = cluster_image(48, seed=seed)
    mask = np.ones(img.shape, bool)
    mask[5:9, 30:40] = False
    kw = dict(sn=10.0, smoothsn=10.0, constrainfill=constrain, constrainval=2.0, mask=mask)
    a = make_contour_bins(img, **kw)
    b = make_contour_bins(img.copy(), **kw)
    np.testing.assert_array_equal(a.binmap, b.binmap)
    assert a.binmap.dtype == np.int32
    assert ((a.binmap >= 0) == mask).all()
    assert components_ok(a.binmap)
    assert a.table["area_pix"].sum() == mask.sum()
    assert a.table["bin_id"].tolist() == list(range(len(a.table)))
    assert (a.table["sn"] >= 10.0).all()
    assert np.isnan(a.smoothed[~mask]).all()
    # smoothed values are float32 numbers (what the binning compares, as contbin)
    sm = a.smoothed[mask]
    np.testing.assert_array_equal(sm, sm.astype(np.float32))


@pytest.mark.parametrize("flip", ["lr", "ud", "transpose"])
def test_mirror_image_gives_mirrored_bins(flip):
    img = cluster_image(40, seed=7, peak=20.0, floor=2.0)
    f = {"lr": np.fliplr, "ud": np.flipud, "transpose": np.transpose}[flip]
    kw = dict(sn=9.0, smoothsn=9.0, constrainfill=True, constrainval=2.0, ties="symmetric")
    a = make_contour_bins(img, **kw)
    b = make_contour_bins(np.ascontiguousarray(f(img)), **kw)
    np.testing.assert_array_equal(f(b.binmap), a.binmap)


def test_pixel_ranks_order():
    s = np.array([[1.0, 2.0, 2.0], [2.0, 0.5, 2.0]], np.float32)
    counts = np.array([[0, 1, 3], [1, 0, 3]])
    valid = np.ones(s.shape, bool)
    order, rank = pixel_ranks(s, counts, valid)
    # value 2.0 is tied four ways: the two pixels with 3 counts come first, then the two with 1;
    # the lowest values (1.0 at index 0, 0.5 at index 4) come last
    assert order[-1] == 4
    assert order[-2] == 0
    assert set(order[:2].tolist()) == {2, 5}
    assert rank[order].tolist() == list(range(6))
    up, _ = pixel_ranks(s, counts, valid, binup=True)
    assert up[0] == 4


def test_seed_order_matches_gcc_std_sort():
    # GCC 12 std::sort of indices 0..39 by value, descending (printed by a 6-line C++ program):
    # equal values come out in introsort's order, which contbin's seeds follow
    from xmine.contbin import _unstable_sort

    v = np.array([2, 3, 0, 3, 1, 2, 2, 1, 3, 0, 1, 1, 2, 1, 0, 0, 0, 0, 0, 3, 0, 2, 3, 0, 1, 1, 1, 3, 0, 3,
                  3, 3, 0, 1, 2, 1, 2, 2, 2, 0], np.float32)
    expected = [1, 29, 30, 27, 31, 22, 19, 8, 3, 38, 0, 5, 21, 6, 34, 36, 37, 12, 35, 33, 13, 11, 4, 24, 25,
                26, 10, 7, 32, 39, 28, 23, 20, 18, 17, 16, 15, 14, 9, 2]
    x = np.arange(40, dtype=np.int64)
    _unstable_sort(x, v, True)
    assert x.tolist() == expected
    big = np.random.default_rng(0).integers(0, 3, 5000).astype(np.float32)
    x = np.arange(5000, dtype=np.int64)
    _unstable_sort(x, big, True)
    assert sorted(x.tolist()) == list(range(5000))
    assert (np.diff(big[x]) <= 0).all()


def test_contbin_ties_equal_bins_from_mirrored_symmetric_mode_differ_only_in_ties():
    img = cluster_image(40, seed=7, peak=20.0, floor=2.0)
    a = make_contour_bins(img, sn=9.0, smoothsn=9.0)
    b = make_contour_bins(img, sn=9.0, smoothsn=9.0, ties="symmetric")
    # same rules, different tie order: same number of bins within a few, both partitions valid
    assert abs(len(a.table) - len(b.table)) <= 3
    assert components_ok(a.binmap)
    assert (a.table["sn"] >= 9.0).all()


def test_guarantee_sn_with_background():
    rng = np.random.default_rng(11)
    n = 48
    img = cluster_image(n, seed=11, peak=15.0, floor=1.0)
    bg = rng.poisson(4.0, (n, n))
    exp = rng.uniform(0.7, 1.0, (n, n)).astype(np.float32) * 1000
    bexp = exp * np.float32(4.0)
    kw = dict(sn=8.0, smoothsn=8.0, constrainfill=True, constrainval=2.0, bg=bg, expmap=exp, bgexpmap=bexp)
    res = make_contour_bins(img, guarantee_sn=True, **kw)
    assert (res.table["sn"] >= 8.0).all()
    assert components_ok(res.binmap)
    assert res.params["n_below_sn"] == 0


def test_guarantee_sn_unbins_isolated_islands():
    img = cluster_image(32, seed=2)
    mask = np.ones(img.shape, bool)
    mask[:, 28] = False  # cuts off a 3-pixel-wide strip with too few counts
    img[:, 29:] = 0
    with pytest.warns(ContourBinWarning, match="isolated"):
        res = make_contour_bins(img, sn=8.0, smoothsn=8.0, mask=mask, guarantee_sn=True)
    assert (res.binmap[:, 29:] == -1).all()
    assert (res.table["sn"] >= 8.0).all()


def test_automask_masks_empty_blocks():
    img = cluster_image(32, seed=3)
    img[8:16, 16:24] = 0
    res = make_contour_bins(img, sn=8.0, smoothsn=8.0, automask=True)
    assert (res.binmap[8:16, 16:24] == -1).all()
    assert (res.binmap[:8] >= 0).all()


def test_expmap_below_one_is_masked_and_background_scaled():
    img = cluster_image(32, seed=4)
    exp = np.full(img.shape, 500.0, np.float32)
    exp[:, :4] = 0.5
    bg = np.ones(img.shape, np.int32)
    res = make_contour_bins(img, sn=8.0, smoothsn=8.0, bg=bg, expmap=exp, bg_exposure_s=2000.0)
    assert (res.binmap[:, :4] == -1).all()
    assert (res.binmap[:, 4:] >= 0).all()
    np.testing.assert_allclose(res.table["bg_counts"], res.table["area_pix"] * 0.25)
    assert "sb" in res.table.colnames


def test_background_without_exposures_warns():
    img = cluster_image(24, seed=1)
    with pytest.warns(ContourBinWarning, match="scaling the background by 1"):
        make_contour_bins(img, sn=6.0, bg=np.zeros_like(img))


# ---------------------------------------------------------------------------
# bad inputs: one-line InputError naming the problem
# ---------------------------------------------------------------------------
def one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 3, 4)), np.zeros((0, 3))])
def test_not_a_2d_image(bad):
    with pytest.raises(InputError) as ei:
        make_contour_bins(bad)
    assert "counts" in one_line(ei)


def test_nan_and_negative_counts():
    img = cluster_image(16)
    nan = img.astype(float)
    nan[3, 4] = np.nan
    with pytest.raises(InputError, match=r"NaN.*x=4, y=3") as ei:
        make_contour_bins(nan)
    one_line(ei)
    neg = img.copy()
    neg[2, 1] = -3
    with pytest.raises(InputError, match=r"negative \(min -3") as ei:
        make_contour_bins(neg)
    one_line(ei)
    with pytest.raises(InputError, match="bg: 1 pixels are negative"):
        make_contour_bins(img, bg=np.where(img > -1, -1, 0) * (np.arange(img.size).reshape(img.shape) == 0),
                          exposure_s=1.0, bg_exposure_s=1.0)


def test_all_masked():
    img = cluster_image(16)
    with pytest.raises(InputError, match="all 256 pixels") as ei:
        make_contour_bins(img, mask=np.zeros(img.shape))
    one_line(ei)
    with pytest.raises(InputError, match="masked"):
        make_contour_bins(img, expmap=np.zeros(img.shape))


def test_unreachable_sn_says_counts_needed():
    img = np.zeros((10, 10), int)
    img[5, 5] = 20
    with pytest.raises(InputError, match=r"hold 20 counts .* S/N 15 needs at least 2\d\d net counts") as ei:
        make_contour_bins(img, sn=15.0)
    one_line(ei)


@pytest.mark.parametrize("name", ["bg", "expmap", "bgexpmap", "mask"])
def test_shape_mismatch_names_both_shapes(name):
    img = cluster_image(16)
    kw = {name: np.ones((16, 15))}
    if name == "bgexpmap":
        kw["bg"] = np.ones((16, 16))
    with pytest.raises(InputError, match=rf"^{name}: shape \(16, 15\) differs .* \(16, 16\)") as ei:
        make_contour_bins(img, exposure_s=1.0, bg_exposure_s=1.0, **kw)
    one_line(ei)


@pytest.mark.parametrize(("kw", "pattern"), [
    ({"sn": 0}, "sn: 0 is not a positive number"),
    ({"smoothsn": float("nan")}, "smoothsn"),
    ({"constrainval": -1.0}, "constrainval"),
    ({"guarantee_sn": True, "noscrub": True}, "guarantee_sn"),
    ({"scrub_large": 2.0}, "scrub_large"),
    ({"ties": "random"}, "ties: 'random'"),
    ({"bgexpmap": np.ones((16, 16))}, "bgexpmap: given without bg"),
])
def test_bad_options(kw, pattern):
    with pytest.raises(InputError, match=pattern) as ei:
        make_contour_bins(cluster_image(16), **kw)
    one_line(ei)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match=r"nope\.fits: no such file") as ei:
        run_contbin(tmp_path / "nope.fits", out_dir=tmp_path / "out")
    one_line(ei)
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"this is not FITS at all" * 200)
    with pytest.raises(InputError, match=r"bad\.fits: cannot read the counts image") as ei:
        run_contbin(bad, out_dir=tmp_path / "out")
    one_line(ei)
    img = tmp_path / "img.fits"
    fits.writeto(img, cluster_image(16))
    small = tmp_path / "bg.fits"
    fits.writeto(small, np.ones((8, 8)))
    with pytest.raises(InputError, match=r"bg.fits: the bg has shape \(8, 8\) .* \(16, 16\)"):
        run_contbin(img, out_dir=tmp_path / "out", bg_path=small)
    cube = tmp_path / "cube.fits"
    fits.writeto(cube, np.ones((2, 16, 16)))
    with pytest.raises(InputError, match="not a 2-D image"):
        run_contbin(cube, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------
def wcs_header(n):
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRPIX1"], h["CRPIX2"] = n / 2, n / 2
    h["CRVAL1"], h["CRVAL2"] = 278.39, -10.57
    h["CDELT1"], h["CDELT2"] = -0.000273, 0.000273
    h["LTM1_1"], h["LTM2_2"] = 0.5, 0.5
    h["LTV1"], h["LTV2"] = -1898.75, -2009.25
    h["MTYPE1"], h["MFORM1"] = "sky", "x,y"
    h["EXPOSURE"] = 1000.0
    return h


def test_run_contbin_writes_products_with_wcs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n = 40
    img = cluster_image(n, seed=9)
    fits.writeto(tmp_path / "img.fits", img, wcs_header(n))
    bgh = wcs_header(n)
    bgh["EXPOSURE"] = 4000.0
    fits.writeto(tmp_path / "bg.fits", np.random.default_rng(0).poisson(2.0, (n, n)), bgh)
    mask = np.ones((n, n), np.int16)
    mask[:3] = 0
    fits.writeto(tmp_path / "mask.fits", mask)
    out = tmp_path / "out"
    paths = run_contbin(tmp_path / "img.fits", out_dir=out, bg_path=tmp_path / "bg.fits",
                        mask_path=tmp_path / "mask.fits", sn=8.0, smoothsn=8.0, constrainfill=True)
    assert sorted(paths) == ["binmap", "bins", "mask", "out", "smoothed", "sn"]
    assert all(p.parent == out and p.exists() for p in paths.values())
    assert sorted(os.listdir(tmp_path)) == ["bg.fits", "img.fits", "mask.fits", "out"]
    assert not [p for p in os.listdir(out) if p.endswith(".tmp") or p.startswith(".")]
    with fits.open(paths["binmap"]) as hdul:
        h = hdul[0].header
        bm = hdul[0].data
        assert bm.dtype.kind == "i"
        for key in ("CTYPE1", "CRVAL1", "CRPIX2", "CDELT2", "LTM1_1", "LTV1", "LTV2", "MTYPE1", "EXPOSURE"):
            assert h[key] == wcs_header(n)[key]
    assert (bm[:3] == -1).all()
    assert (bm[3:] >= 0).all()
    tab = Table.read(paths["bins"])
    assert len(tab) == bm.max() + 1
    assert {"ra_deg", "dec_deg", "x_pix", "y_pix", "sn", "area_pix", "bg_counts"} <= set(tab.colnames)
    # background scaled by the EXPOSURE keywords (1000 / 4000)
    bgdata = fits.getdata(tmp_path / "bg.fits")
    b0 = bm == 0
    assert tab["bg_counts"][0] == pytest.approx(bgdata[b0].sum() * 0.25)
    from astropy.wcs import WCS

    ra, dec = WCS(wcs_header(n)).pixel_to_world_values(tab["x_pix"][0], tab["y_pix"][0])
    assert tab["ra_deg"][0] == pytest.approx(float(ra))
    assert tab["dec_deg"][0] == pytest.approx(float(dec))
    sn_img = fits.getdata(paths["sn"])
    assert sn_img[b0][0] == pytest.approx(tab["sn"][0])
    assert (sn_img[:3] == -1).all()


def test_read_inputs_takes_exposure_keywords(tmp_path):
    fits.writeto(tmp_path / "a.fits", np.ones((4, 4)), wcs_header(4))
    got = read_contbin_inputs(tmp_path / "a.fits")
    assert got["exposure_s"] == 1000.0
    assert got["bg_exposure_s"] is None


@pytest.mark.shared_data
def test_real_chandra_image(shared_data, tmp_path):
    path = shared_data / "images" / "chandra_g21.5-0.9_obs1838_img.fits"
    if not path.exists():
        pytest.fail(f"{path} is missing from the shared data folder")
    paths = run_contbin(path, out_dir=tmp_path, sn=30.0, smoothsn=30.0, constrainfill=True, constrainval=2.0)
    bm = fits.getdata(paths["binmap"])
    tab = Table.read(paths["bins"])
    img = fits.getdata(path)
    assert bm.shape == img.shape == (216, 261)
    assert (bm >= 0).all()
    assert tab["counts"].sum() == img.sum()
    assert (tab["sn"] >= 30.0).all()
    assert 20 < len(tab) < 60
    assert components_ok(bm)
    h = fits.getheader(paths["binmap"])
    assert h["LTM1_1"] == 0.5
    assert h["LTV1"] == -1898.75
    # the brightest bin is small and sits on the pulsar (brightest pixel (136, 116), 0-based x, y)
    brightest = tab[np.argmax(tab["counts"] / tab["area_pix"])]
    assert abs(brightest["x_pix"] - 136) < 3
    assert abs(brightest["y_pix"] - 116) < 3
    assert Path(paths["smoothed"]).exists()
