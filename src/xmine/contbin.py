"""Contour binning (Sanders 2006, MNRAS 371, 829) as Jeremy Sanders' ``contbin`` 1.7 does it.

The image is accumulatively smoothed to a signal-to-noise ratio ``smoothsn``;
bins are then seeded at the brightest unbinned pixel of the smoothed image and
grown, one 4-connected neighbour at a time, by the pixel whose smoothed value
is closest to the seed's, until the bin reaches ``sn``; finally bins below
``sn`` are dissolved into their neighbours ("scrubbing").  Options keep
contbin's names, meanings and defaults (``contbin.cc: program::program``):
``sn=15``, ``smoothsn=15``, ``constrainfill=False``, ``constrainval=3``,
``automask=False``, ``noscrub=False``, ``binup=False``, ``scrub_large=None``
(contbin's ``--scrublarge``, off).

What contbin does, and xmine with it
------------------------------------
* Noise (``bin.hh: error_sqd_est``): Gehrels' upper error ``N² = (1+√(C+0.75))²``
  on the total counts C; with a background image the background term
  ``(Σ r²/n)·(1+√(B+0.75))²`` is added, where ``r = expmap/bgexpmap`` per pixel
  (``float32`` division, as contbin), ``B`` the raw background counts and
  ``n`` the number of pixels; the signal is ``C − Σ bg·r``.
* Without maps, ``expmap`` is the image's EXPOSURE keyword and ``bgexpmap`` the
  background's (1 if absent), constant over the image; pixels with
  ``expmap < 1`` are masked; ``expmap`` only enters through ``r``: nothing is
  exposure-corrected (the table's ``sb`` column is the one exposure-corrected
  output).  Maps are floored at 1e-7 (``trim_up``) before dividing.
* Smoothing (``flux_estimator.cc: flux_estimator::smooth``): for each unmasked
  pixel the disc of integer radius R — offsets with ``floor(√(dx²+dy²)) ≤ R`` —
  grows from R = 0 until its S/N reaches ``smoothsn`` (or covers the image);
  the smoothed value is the disc's net counts per unmasked pixel, stored as
  ``float32`` (contbin's image type; the binning compares these values).
* Seeds (``binner.cc: binner::find_next_pixel``): unmasked pixels in order of
  decreasing smoothed value (increasing with ``binup``).
* Growth (``bin.cc: bin::add_next_pixel``): candidates are unbinned, unmasked
  4-neighbours (up, left, right, down) of the bin; the one with the smallest
  ``|smoothed − smoothed(seed)|`` is added until S/N ≥ ``sn`` or no candidate
  is left.  With ``constrainfill``, a candidate is allowed only if its distance
  to the bin's centroid (weighted by net counts floored at 1e-7) is below
  ``constrainval`` times ``R+1``, R the smallest disc radius holding more
  offsets than the bin has pixels (``bin::check_constraint``).
* Scrubbing (``scrubber.cc: scrubber::scrub``): bins below ``sn`` are taken
  lowest S/N first; each gives its pixels away one at a time, always the
  (pixel, neighbouring bin) pair with the closest smoothed values, honouring
  the constraint measured at the neighbour's pixel if possible; bins that
  rise above ``sn`` meanwhile leave the list and are never revisited.

Where xmine deliberately differs
--------------------------------
* **Ties: contbin's order by default, a mirror-symmetric order on request.**
  contbin orders equal smoothed values with GCC's ``std::sort`` (introsort,
  not stable) over its row-major pixel list, and breaks growth and scrubbing
  ties by its edge-list order (the bin pixel that joined first, then its
  neighbours up, left, right, down).  Both are deterministic for a given
  image, so with ``ties="contbin"`` (default) xmine reproduces them: an
  independent implementation of the published introsort algorithm orders the
  seeds, and the heaps carry the edge-list position as tie key.  This is
  what makes xmine's bins equal to contbin's.  Neither rule is symmetric, so
  contbin's (and this mode's) bins change when the image is mirrored.
  ``ties="symmetric"`` ranks every unmasked pixel by smoothed value, then by
  its counts, then by the counts in centred (2k+1)² boxes, k = 1, 2, 4, 8, 16
  (larger first), then by (y, x); seeds follow the rank and growth/scrubbing
  ties go to the better-ranked pixel.  All keys but the last are invariant
  under mirroring, flipping and transposing, so the bins of a mirrored image
  are exactly the mirror of the bins, except where two tied pixels also have
  identical box sums at every scale (a locally symmetric image) or a
  background-weighted sum rounds differently (≈ 1e-16).  Equal-S/N scrubbing
  ties go to the older bin in both modes (as contbin).
* **Accumulative smoothing is exact but fast.**  Disc sums come from row-wise
  prefix sums (O(R) per disc).  Without background S/N grows with R, so the
  left neighbour's radius settles a pixel in two or three discs.  With
  background it need not, so a radius is the answer only once every smaller
  one is excluded: whole ranges of radii are excluded by a rigorous upper
  bound on the S/N over the range from exact sums at its ends (counts,
  background, pixel and ``r²`` sums only grow with R), and the ends that
  proved the previous pixel's answer are tried first, so a pixel costs about
  ten discs, not one per radius.  It returns contbin's radius.  Sums use
  float64 as contbin does; only their summation order differs (integer
  counts are summed exactly, as integers when counts and background are
  whole numbers: then counts, pixels and background share one int64 per
  position when each image total is below 2²¹, so a disc row costs three
  loads per end).  Rows are smoothed in bands of 16, column by column, so
  that vertically neighbouring pixels share the cached prefix rows, and the
  bands are spread over numba's threads.
* **Labels.** Bins are numbered 0.. in creation order after scrubbing
  (contbin renumbers with the unstable ``std::partition``).
* ``guarantee_sn=True`` rescrubs until every bin reaches ``sn`` (contbin never
  revisits a bin that a scrubbed neighbour pushed back below target); regions
  that can never reach it (isolated islands) become unbinned (−1) with a
  warning.
* Errors instead of crashes: NaN or negative counts, all pixels masked, shape
  mismatches, unreadable files and a target S/N above the whole image's raise
  :class:`~xmine.errors.InputError` (contbin aborts or writes nonsense).  A
  non-finite exposure map value masks its pixel.  Mask values ≥ 1 keep a pixel
  (contbin uses ≥ 1 for seeding but == 1 for growth).
* Outputs go into a chosen folder (:func:`run_contbin`), never the current
  directory; masked pixels are NaN in the smoothed image (contbin leaves 0).
* Not supported: ``--noisemap`` and ``--smoothed`` as files (pass ``smoothed=``
  as an array instead).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from numba import njit, prange

from xmine.errors import InputError, XmineWarning

__all__ = [
    "ContourBinWarning",
    "ContourBins",
    "accumulative_smooth",
    "bin_statistics",
    "make_contour_bins",
    "pixel_ranks",
    "read_contbin_inputs",
    "run_contbin",
]

_TRIM = np.float32(1e-7)
_TIE_BOXES = (1, 2, 4, 8, 16)
_SHIFT = 21  # bits per field when integer F, N, B share one int64 (see _prefix_planes)
_FIELD = (1 << _SHIFT) - 1
_BAND = 16  # rows smoothed side by side, sharing the cache (see _smooth_band_bg)


class ContourBinWarning(XmineWarning):
    """Contour binning finished, but not every pixel or bin is as asked (the message says which)."""


@dataclass
class ContourBins:
    """The result of :func:`make_contour_bins`.

    Attributes
    ----------
    binmap : numpy.ndarray
        int32 bin number per pixel, 0..n-1; −1 for masked or unbinned pixels.
    smoothed : numpy.ndarray
        float64 accumulatively smoothed image (net counts per pixel), holding
        the float32 values the binning compared; NaN where masked.
    table : astropy.table.Table
        One row per bin: ``bin_id``, ``counts``, ``bg_counts`` (background
        scaled to the image, Σ bg·r), ``bg_counts_raw``, ``net_counts``,
        ``area_pix``, ``sn``, ``x_pix``/``y_pix`` (mean pixel position,
        0-based numpy/astropy convention: add 1 for FITS/DS9 image
        coordinates), ``ra_deg``/``dec_deg`` when a celestial WCS is given,
        and ``exposure_mean``/``sb`` (net counts s⁻¹ pixel⁻¹) when an
        exposure is known.
    params : dict
        The options used and a few run facts (``n_bins``, ``n_below_sn``...).
    """

    binmap: np.ndarray
    smoothed: np.ndarray
    table: Table
    params: dict[str, Any] = field(default_factory=dict)


# =============================================================================
# numba kernels
# =============================================================================
@njit(cache=True)
def _esq(c: float) -> float:
    e = 1.0 + math.sqrt(c + 0.75)
    return e * e


@njit(cache=True)
def _half_widths(rmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Half width of the disc of radius R in row dy: the largest dx with dx² + dy² < (R+1)²."""
    off = np.empty(rmax + 2, np.int64)
    off[0] = 0
    for r in range(rmax + 1):
        off[r + 1] = off[r] + r + 1
    hw = np.empty(off[rmax + 1], np.int32)
    for r in range(rmax + 1):
        lim = (r + 1) * (r + 1) - 1
        for dy in range(r + 1):
            k = lim - dy * dy
            w = int(math.sqrt(k))
            while w * w > k:
                w -= 1
            while (w + 1) * (w + 1) <= k:
                w += 1
            hw[off[r] + dy] = w
    return hw, off


@njit(cache=True)
def _disc_sums(P: np.ndarray, y0: int, x0: int, r: int, hw: np.ndarray, off: np.ndarray,
               out: np.ndarray) -> None:
    """Sum the prefix-summed planes of P (C order) over the disc of radius r around (x0, y0).

    Rows are added in a fixed order (y0, then y0 − dy before y0 + dy for
    dy = 1, 2, ...), so the float sums are the same wherever this is called.
    Flat unsigned indices spare numba's negative-index checks.
    """
    ny = P.shape[0]
    nx = P.shape[1] - 1
    nk = P.shape[2]
    stride = (nx + 1) * nk
    P1 = P.reshape(-1)
    base = off[r]
    up = min(r, y0)  # rows above (y0 - dy >= 0)
    down = min(r, ny - 1 - y0)  # rows below
    both = min(up, down)
    w = hw[base]
    ia = np.uint64(y0 * stride + min(nx, x0 + w + 1) * nk)
    ib = np.uint64(y0 * stride + max(0, x0 - w) * nk)
    one = np.uint64(1)
    if nk == 2:
        s0 = P1[ia] - P1[ib]
        s1 = P1[ia + one] - P1[ib + one]
        for dy in range(1, max(up, down) + 1):
            w = hw[base + dy]
            xr = min(nx, x0 + w + 1) * nk
            xl = max(0, x0 - w) * nk
            if dy <= up:
                i = (y0 - dy) * stride
                ia = np.uint64(i + xr)
                ib = np.uint64(i + xl)
                s0 += P1[ia] - P1[ib]
                s1 += P1[ia + one] - P1[ib + one]
            if dy <= down:
                i = (y0 + dy) * stride
                ia = np.uint64(i + xr)
                ib = np.uint64(i + xl)
                s0 += P1[ia] - P1[ib]
                s1 += P1[ia + one] - P1[ib + one]
        out[0] = s0
        out[1] = s1
        return
    two = np.uint64(2)
    if nk == 3:
        # packed: W, Q as float64, then F + N·2^21 + B·2^42 as one int64 (see _prefix_planes)
        Pi = P1.view(np.int64)
        s2 = P1[ia] - P1[ib]
        s4 = P1[ia + one] - P1[ib + one]
        fnb = Pi[ia + two] - Pi[ib + two]
        # rows above and below together while both exist, then the longer side alone (the order of
        # the other layouts: y0 - dy before y0 + dy); columns clipped to the image
        c = y0 * stride + x0 * nk
        for dy in range(1, both + 1):
            w = hw[base + dy]
            cu = np.uint64(c - dy * stride)
            cd = np.uint64(c + dy * stride)
            dr = np.uint64((min(nx - x0, w + 1)) * nk)
            dl = np.uint64(min(x0, w) * nk)
            ia = cu + dr
            ib = cu - dl
            s2 += P1[ia] - P1[ib]
            s4 += P1[ia + one] - P1[ib + one]
            fnb += Pi[ia + two] - Pi[ib + two]
            ia = cd + dr
            ib = cd - dl
            s2 += P1[ia] - P1[ib]
            s4 += P1[ia + one] - P1[ib + one]
            fnb += Pi[ia + two] - Pi[ib + two]
        sgn = -1 if up > down else 1
        for dy in range(both + 1, max(up, down) + 1):
            w = hw[base + dy]
            cu = np.uint64(c + sgn * dy * stride)
            ia = cu + np.uint64((min(nx - x0, w + 1)) * nk)
            ib = cu - np.uint64(min(x0, w) * nk)
            s2 += P1[ia] - P1[ib]
            s4 += P1[ia + one] - P1[ib + one]
            fnb += Pi[ia + two] - Pi[ib + two]
        out[0] = float(fnb & _FIELD)
        out[1] = float((fnb >> _SHIFT) & _FIELD)
        out[2] = s2
        out[3] = float(fnb >> (2 * _SHIFT))
        out[4] = s4
        return
    if nk == 4:
        # packed: W, Q as float64, then F, N, B as int32 (see _prefix_planes)
        Pi = P1.view(np.int32)
        four = np.uint64(4)
        s2 = P1[ia] - P1[ib]
        s4 = P1[ia + one] - P1[ib + one]
        ja = ia * two + four
        jb = ib * two + four
        f = np.int64(Pi[ja]) - np.int64(Pi[jb])
        n = np.int64(Pi[ja + one]) - np.int64(Pi[jb + one])
        b = np.int64(Pi[ja + two]) - np.int64(Pi[jb + two])
        for dy in range(1, max(up, down) + 1):
            w = hw[base + dy]
            xr = min(nx, x0 + w + 1) * nk
            xl = max(0, x0 - w) * nk
            if dy <= up:
                i = (y0 - dy) * stride
                ia = np.uint64(i + xr)
                ib = np.uint64(i + xl)
                s2 += P1[ia] - P1[ib]
                s4 += P1[ia + one] - P1[ib + one]
                ja = ia * two + four
                jb = ib * two + four
                f += np.int64(Pi[ja]) - np.int64(Pi[jb])
                n += np.int64(Pi[ja + one]) - np.int64(Pi[jb + one])
                b += np.int64(Pi[ja + two]) - np.int64(Pi[jb + two])
            if dy <= down:
                i = (y0 + dy) * stride
                ia = np.uint64(i + xr)
                ib = np.uint64(i + xl)
                s2 += P1[ia] - P1[ib]
                s4 += P1[ia + one] - P1[ib + one]
                ja = ia * two + four
                jb = ib * two + four
                f += np.int64(Pi[ja]) - np.int64(Pi[jb])
                n += np.int64(Pi[ja + one]) - np.int64(Pi[jb + one])
                b += np.int64(Pi[ja + two]) - np.int64(Pi[jb + two])
        out[0] = float(f)
        out[1] = float(n)
        out[2] = s2
        out[3] = float(b)
        out[4] = s4
        return
    three = np.uint64(3)
    four = np.uint64(4)
    s0 = P1[ia] - P1[ib]
    s1 = P1[ia + one] - P1[ib + one]
    s2 = P1[ia + two] - P1[ib + two]
    s3 = P1[ia + three] - P1[ib + three]
    s4 = P1[ia + four] - P1[ib + four]
    for dy in range(1, both + 1):
        w = hw[base + dy]
        xr = min(nx, x0 + w + 1) * nk
        xl = max(0, x0 - w) * nk
        i = (y0 - dy) * stride
        ia = np.uint64(i + xr)
        ib = np.uint64(i + xl)
        s0 += P1[ia] - P1[ib]
        s1 += P1[ia + one] - P1[ib + one]
        s2 += P1[ia + two] - P1[ib + two]
        s3 += P1[ia + three] - P1[ib + three]
        s4 += P1[ia + four] - P1[ib + four]
        i = (y0 + dy) * stride
        ia = np.uint64(i + xr)
        ib = np.uint64(i + xl)
        s0 += P1[ia] - P1[ib]
        s1 += P1[ia + one] - P1[ib + one]
        s2 += P1[ia + two] - P1[ib + two]
        s3 += P1[ia + three] - P1[ib + three]
        s4 += P1[ia + four] - P1[ib + four]
    for dy in range(both + 1, max(up, down) + 1):
        w = hw[base + dy]
        i = (y0 - dy if up > down else y0 + dy) * stride
        ia = np.uint64(i + min(nx, x0 + w + 1) * nk)
        ib = np.uint64(i + max(0, x0 - w) * nk)
        s0 += P1[ia] - P1[ib]
        s1 += P1[ia + one] - P1[ib + one]
        s2 += P1[ia + two] - P1[ib + two]
        s3 += P1[ia + three] - P1[ib + three]
        s4 += P1[ia + four] - P1[ib + four]
    out[0] = s0
    out[1] = s1
    out[2] = s2
    out[3] = s3
    out[4] = s4


@njit(cache=True)
def _sn2_sums(S: np.ndarray) -> float:
    """S/N² of disc sums: S = (F, N) without background, (F, N, W, B, Q) with."""
    noise = _esq(S[0])
    if S.shape[0] > 2:
        noise += (S[4] / S[1]) * _esq(S[3])
        sig = S[0] - S[2]
    else:
        sig = S[0]
    return sig * sig / noise


@njit(cache=True)
def _sn2_bound(Sa: np.ndarray, Sb: np.ndarray, qmin: float) -> float:
    """Bound S/N² from above over all radii between a and b (sums at a ≤ sums at b).

    Counts F, background B and W and the sums N and Q only grow with the
    radius.  The signal F − W is largest with F = F_b, W = W_a (S/N² grows
    with F while F ≥ W); the noise is smallest with F = F_a or F_b as the
    sign asks and B = B_a; the mean Q/N of r² over a disc between a and b is
    at least min(Q_a/N_a, (Q_a + qmin·(N_b − N_a))/N_b), qmin the smallest
    r² of any unmasked pixel.
    """
    Fa, Fb = Sa[0], Sb[0]
    if Sa.shape[0] > 2:
        Wa, Wb = Sa[2], Sb[2]
        Na, Nb, Qa = Sa[1], Sb[1], Sa[4]
        qn = (Qa + qmin * (Nb - Na)) / Nb
        if Na > 0.0:
            qn = min(qn, Qa / Na)
        cmin = max(qn, 0.0) * _esq(Sa[3])
    else:
        Wa = Wb = 0.0
        cmin = 0.0
    ub = 0.0
    pos = Fb - Wa
    if pos > 0.0:
        ub = pos * pos / (_esq(Fb) + cmin)
    neg = Wb - Fa
    if neg > 0.0:
        ub = max(ub, neg * neg / (_esq(Fa) + cmin))
    return ub * (1.0 + 1e-9) + 1e-300


@njit(cache=True)
def _first_in(P: np.ndarray, y: int, x: int, a: int, Sa: np.ndarray, hi: int, t2: float, hw: np.ndarray,
              off: np.ndarray, Sb: np.ndarray, step0: int) -> int:
    """Smallest radius in (a, hi] whose disc reaches S/N² ≥ t2 (its sums left in Sb), else −1.

    Gallops upwards from a, skipping a range of radii only when :func:`_sn2_bound`
    proves that none of them reaches the target (used without background,
    where S/N grows with R).  ``Sa`` (sums at a) is overwritten.
    """
    step = max(1, step0)
    while a < hi:
        b = a + step
        if b > hi:
            b = hi
            step = b - a
        _disc_sums(P, y, x, b, hw, off, Sb)
        if step == 1:
            if _sn2_sums(Sb) >= t2:
                return b
            a = b
            Sa[:] = Sb
            step = 2
        elif _sn2_bound(Sa, Sb, 0.0) < t2:
            a = b
            Sa[:] = Sb
            step = 2 * step
        else:
            step //= 2
    return -1


@njit(cache=True)
def _smooth_pixel_bg(P: np.ndarray, y: int, x: int, rmax: int, t2: float, qmin: float, hw: np.ndarray,
                     off: np.ndarray, out: np.ndarray, rad: np.ndarray, k: int, hint: np.ndarray,
                     cov: np.ndarray, ncov: np.ndarray, pr: np.ndarray, ps: np.ndarray, ph: np.ndarray,
                     Sa: np.ndarray) -> None:
    """Accumulative smoothing of unmasked pixel (x, y) with background: the first radius reaching S/N² ≥ t2.

    S/N need not grow with R here, so a radius is the answer only once every
    smaller one is excluded.  Radii are excluded a range at a time by
    :func:`_sn2_bound` from exact disc sums at the range's ends.  The ends
    that proved the left neighbour's answer (its cover, ``cov[k]``) are tried
    first, as are its radius (``hint[k]``) and the ones just above:
    neighbouring pixels' S/N curves are nearly the same, so a pixel usually
    needs about as many disc sums as its cover has ends (≈ 10) instead of one
    per radius.  A range the bound cannot exclude is halved; an end whose
    neighbour range can be excluded together with the next is dropped, so
    covers stay short.  ``pr``, ``ps``, ``ph``, ``Sa`` are scratch.
    """
    _disc_sums(P, y, x, 0, hw, off, Sa)
    if _sn2_sums(Sa) >= t2 or rmax == 0:
        out[y, x] = (Sa[0] - Sa[2]) / Sa[1]
        rad[y, x] = 0
        hint[k] = 0
        ncov[k] = 0
        return
    h = min(max(hint[k], 1), rmax)
    m = 0
    for j in range(ncov[k]):
        if cov[k, j] >= h:
            break
        pr[m] = cov[k, j]
        ph[m] = False
        m += 1
    # an upper end that reaches the target: the hint, else gallop upwards from it
    pr[m] = h
    _disc_sums(P, y, x, h, hw, off, ps[m])
    ph[m] = True
    m += 1
    step = 1
    while _sn2_sums(ps[m - 1]) < t2 and pr[m - 1] < rmax:
        pr[m] = min(pr[m - 1] + step, rmax)
        _disc_sums(P, y, x, pr[m], hw, off, ps[m])
        ph[m] = True
        m += 1
        step *= 2
    # exclude (0, U) range by range, from the bottom; the first radius left is the answer
    ncov[k] = 0
    a = 0
    i = 0
    res = -1
    while i < m:
        if i + 1 < m:
            # can the next end be dropped?
            if not ph[i + 1]:
                _disc_sums(P, y, x, pr[i + 1], hw, off, ps[i + 1])
                ph[i + 1] = True
            if _sn2_bound(Sa, ps[i + 1], qmin) < t2:
                a = pr[i + 1]
                Sa[:] = ps[i + 1]
                cov[k, ncov[k]] = a
                ncov[k] += 1
                i += 2
                continue
        b = pr[i]
        if not ph[i]:
            _disc_sums(P, y, x, b, hw, off, ps[i])
            ph[i] = True
        if b == a + 1:
            if _sn2_sums(ps[i]) >= t2:
                res = b
                break
        elif _sn2_bound(Sa, ps[i], qmin) >= t2:
            # halve the range: a new end in the middle
            for j in range(m, i, -1):
                pr[j] = pr[j - 1]
                ph[j] = ph[j - 1]
                if ph[j]:
                    ps[j] = ps[j - 1]
            m += 1
            pr[i] = (a + b) // 2
            _disc_sums(P, y, x, pr[i], hw, off, ps[i])
            ph[i] = True
            continue
        a = b
        Sa[:] = ps[i]
        cov[k, ncov[k]] = a
        ncov[k] += 1
        i += 1
    if res < 0:
        res = rmax
        _disc_sums(P, y, x, rmax, hw, off, ps[0])
        i = 0
        ncov[k] = 0
    out[y, x] = (ps[i, 0] - ps[i, 2]) / ps[i, 1]
    rad[y, x] = res
    hint[k] = res


@njit(cache=True)
def _smooth_band_bg(P: np.ndarray, valid: np.ndarray, y0: int, y1: int, rmax: int, t2: float, qmin: float,
                    hw: np.ndarray, off: np.ndarray, out: np.ndarray, rad: np.ndarray) -> None:
    """Accumulative smoothing with background of rows y0 .. y1−1, column by column.

    Each row is scanned left to right as by itself (:func:`_smooth_pixel_bg`
    keeps a state per row), but the rows of the band take their turns pixel by
    pixel: vertically neighbouring pixels sum nearly the same rows of the
    prefix planes, so these stay in the cache instead of being read from
    memory once per row of the image.
    """
    nx = valid.shape[1]
    nk = 5  # sums F, N, W, B, Q whatever the layout of P
    cap = rmax + 2  # ends are distinct radii in (0, rmax]
    nb = y1 - y0
    pr = np.empty(cap, np.int64)  # pending ends, increasing radius
    ps = np.empty((cap, nk))  # their disc sums
    ph = np.zeros(cap, np.bool_)  # sums computed
    cov = np.empty((nb, cap), np.int64)  # per row: the previous pixel's cover, excluded ends > 0
    ncov = np.zeros(nb, np.int64)
    hint = np.zeros(nb, np.int64)
    Sa = np.empty(nk)
    for x in range(nx):
        for k in range(nb):
            if valid[y0 + k, x]:
                _smooth_pixel_bg(P, y0 + k, x, rmax, t2, qmin, hw, off, out, rad, k, hint, cov, ncov,
                                 pr, ps, ph, Sa)


@njit(cache=True, parallel=True)
def _smooth_kernel(P: np.ndarray, valid: np.ndarray, minsn: float, qmin: float) -> tuple[np.ndarray, np.ndarray]:
    """Run contbin's accumulative smoothing exactly for every unmasked pixel (rows in parallel).

    Without background S/N grows with R, so with the left neighbour's radius
    h as a guess, testing h−1 and h (stepping down if needed) settles a pixel.
    With background see :func:`_smooth_band_bg`.  ``P`` comes from
    :func:`_prefix_planes`; ``qmin`` is the smallest ``r²`` of an unmasked
    pixel (0 without background).
    """
    ny, nx = valid.shape
    rmax = int(math.sqrt(float(nx * nx + ny * ny)))
    hw, off = _half_widths(rmax)
    t2 = minsn * minsn
    out = np.full((ny, nx), np.nan)
    rad = np.full((ny, nx), -1, np.int32)
    # rows cost unequal amounts (large discs near a bright source): each task takes every
    # nt-th row, so that the static split of the tasks over threads stays balanced
    nt = min(ny, 64)
    if P.shape[2] > 2:
        # bands of _BAND rows (see _smooth_band_bg); each task takes every nt-th band
        nband = (ny + _BAND - 1) // _BAND
        ntb = min(nband, 16)
        for task in prange(ntb):
            for band in range(task, nband, ntb):
                _smooth_band_bg(P, valid, band * _BAND, min(ny, (band + 1) * _BAND), rmax, t2, qmin, hw, off,
                                out, rad)
        return out, rad
    for task in prange(nt):
        for y in range(task, ny, nt):
            _smooth_row(P, valid, y, rmax, t2, qmin, hw, off, out, rad)
    return out, rad


@njit(cache=True)
def _smooth_row(P: np.ndarray, valid: np.ndarray, y: int, rmax: int, t2: float, qmin: float,
                hw: np.ndarray, off: np.ndarray, out: np.ndarray, rad: np.ndarray) -> None:
    """Accumulative smoothing of row y without background (with it see :func:`_smooth_band_bg`)."""
    nx = valid.shape[1]
    nk = P.shape[2]
    Sa = np.empty(nk)
    Sb = np.empty(nk)
    Sc = np.empty(nk)
    hint = 0
    for x in range(nx):
        if not valid[y, x]:
            continue
        _disc_sums(P, y, x, 0, hw, off, Sa)
        if _sn2_sums(Sa) >= t2 or rmax == 0:
            out[y, x] = Sa[0] / Sa[1]
            rad[y, x] = 0
            hint = 0
            continue
        if hint >= 2:
            # S/N grows with R: find h' with cond(h'-1) false, cond(h') true near the hint
            hh = min(hint, rmax)
            _disc_sums(P, y, x, hh - 1, hw, off, Sc)
            if _sn2_sums(Sc) < t2:
                Sa[:] = Sc
                res = _first_in(P, y, x, hh - 1, Sa, rmax, t2, hw, off, Sb, 1)
            else:
                # the answer is at most hh - 1: step down while the target still holds
                lo = hh - 1
                Sb[:] = Sc
                found = False
                for _ in range(2):
                    if lo - 1 < 0:
                        break
                    _disc_sums(P, y, x, lo - 1, hw, off, Sc)
                    if _sn2_sums(Sc) < t2:
                        found = True
                        break
                    lo -= 1
                    Sb[:] = Sc
                res = lo if found else _first_in(P, y, x, 0, Sa, lo, t2, hw, off, Sb, 1)
        else:
            res = _first_in(P, y, x, 0, Sa, rmax, t2, hw, off, Sb, 1)
        if res < 0:
            res = rmax
            _disc_sums(P, y, x, rmax, hw, off, Sb)
        out[y, x] = Sb[0] / Sb[1]
        rad[y, x] = res
        hint = res


@njit(cache=True)
def _heap_push(hk: np.ndarray, ht: np.ndarray, hp: np.ndarray, n: int, k: float, t: int, p: int) -> int:
    i = n
    while i > 0:
        par = (i - 1) >> 1
        if hk[par] < k or (hk[par] == k and ht[par] <= t):
            break
        hk[i] = hk[par]
        ht[i] = ht[par]
        hp[i] = hp[par]
        i = par
    hk[i] = k
    ht[i] = t
    hp[i] = p
    return n + 1


@njit(cache=True)
def _heap_pop(hk: np.ndarray, ht: np.ndarray, hp: np.ndarray, n: int) -> tuple[int, float, int, int]:
    """Remove the smallest (key, tie); return (new size, key, tie, payload)."""
    topk = hk[0]
    topt = ht[0]
    top = hp[0]
    n -= 1
    if n > 0:
        k = hk[n]
        t = ht[n]
        p = hp[n]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and (hk[c + 1] < hk[c] or (hk[c + 1] == hk[c] and ht[c + 1] < ht[c])):
                c += 1
            if hk[c] < k or (hk[c] == k and ht[c] < t):
                hk[i] = hk[c]
                ht[i] = ht[c]
                hp[i] = hp[c]
                i = c
            else:
                break
        hk[i] = k
        ht[i] = t
        hp[i] = p
    return n, topk, topt, top


@njit(cache=True)
def _heap_room(hk: np.ndarray, ht: np.ndarray, hp: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the heap arrays, doubled in size if they are full."""
    if n < hk.shape[0]:
        return hk, ht, hp
    m = 2 * hk.shape[0]
    hk2 = np.empty(m)
    ht2 = np.empty(m, np.int64)
    hp2 = np.empty(m, np.int64)
    hk2[:n] = hk[:n]
    ht2[:n] = ht[:n]
    hp2[:n] = hp[:n]
    return hk2, ht2, hp2


# per-bin statistics columns
_F, _N, _W, _B, _Q, _CX, _CY, _CW, _SEED, _NEXT = range(10)
_NSTAT = 10


@njit(cache=True)
def _bin_sn2(st: np.ndarray, b: int, has_bg: bool) -> float:
    F = st[b, _F]
    noise = _esq(F)
    sig = F
    if has_bg:
        noise += (st[b, _Q] / st[b, _N]) * _esq(st[b, _B])
        sig = F - st[b, _W]
    if noise < 1e-7:
        return 1e-7
    return sig * sig / noise


@njit(cache=True)
def _add_pixel(st: np.ndarray, b: int, p: int, nx: int, cnt: np.ndarray, bgv: np.ndarray, er: np.ndarray,
               has_bg: bool, binmap: np.ndarray, arrival: np.ndarray) -> None:
    # float32 inputs; the weights bg·r and r² are formed in float64 here (no full-size planes)
    c = np.float64(cnt[p])
    st[b, _F] += c
    st[b, _N] += 1.0
    sig = c
    if has_bg:
        bv = np.float64(bgv[p])
        e = np.float64(er[p])
        w = bv * e
        st[b, _B] += bv
        st[b, _W] += w
        st[b, _Q] += e * e
        sig = c - w
    cs = sig if sig >= 1e-7 else 1e-7
    st[b, _CX] += (p % nx) * cs
    st[b, _CY] += (p // nx) * cs
    st[b, _CW] += cs
    binmap[p] = b
    arrival[p] = int(st[b, _NEXT])  # order of arrival in the bin: contbin's edge-list order
    st[b, _NEXT] += 1.0


@njit(cache=True)
def _remove_pixel(st: np.ndarray, b: int, p: int, cnt: np.ndarray, bgv: np.ndarray, er: np.ndarray,
                  has_bg: bool, binmap: np.ndarray) -> None:
    # like contbin, the centroid of the dissolving bin is not updated
    st[b, _F] -= np.float64(cnt[p])
    st[b, _N] -= 1.0
    if has_bg:
        bv = np.float64(bgv[p])
        e = np.float64(er[p])
        st[b, _B] -= bv
        st[b, _W] -= bv * e
        st[b, _Q] -= e * e
    binmap[p] = -1


@njit(cache=True)
def _constraint_ok(st: np.ndarray, b: int, p: int, nx: int, areas: np.ndarray, cval2: float) -> bool:
    cx = st[b, _CX] / st[b, _CW]
    cy = st[b, _CY] / st[b, _CW]
    dx = cx - (p % nx)
    dy = cy - (p // nx)
    r2 = dx * dx + dy * dy
    cr = np.searchsorted(areas, st[b, _N], side="right") + 1
    return r2 / float(cr * cr) < cval2


@njit(cache=True)
def _constraint_margin(st: np.ndarray, b: int, p: int, nx: int, areas: np.ndarray, cval: float) -> float:
    """Distance by which pixel p lies outside bin b's constraint circle (≤ 0 inside, roughly)."""
    cx = st[b, _CX] / st[b, _CW]
    cy = st[b, _CY] / st[b, _CW]
    dx = cx - (p % nx)
    dy = cy - (p // nx)
    cr = np.searchsorted(areas, st[b, _N], side="right") + 1
    return math.sqrt(dx * dx + dy * dy) - cval * cr


@njit(cache=True)
def _grow_bins(s: np.ndarray, order: np.ndarray, rank: np.ndarray, valid: np.ndarray, nx: int,
               cnt: np.ndarray, bgv: np.ndarray, er: np.ndarray, has_bg: bool,
               thr2: float, constrain: bool, cval2: float, areas: np.ndarray,
               contbin_ties: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seed and grow every bin (contbin's ``binner::do_binning``).

    Candidates wait in a heap keyed by (|s − aim|, rank).  With the constraint,
    a candidate outside the constraint circle is parked with the distance it
    lies outside; it is re-offered only once the centroid has moved, and the
    circle grown, by at least that much in total (both change the margin by at
    most that), so every step still takes the best candidate inside the circle.
    """
    npix = s.shape[0]
    ny = npix // nx
    cval = math.sqrt(cval2)
    binmap = np.full(npix, -1, np.int32)
    arrival = np.zeros(npix, np.int32)
    tie = np.zeros(npix, np.int64)
    stamp = np.full(npix, -1, np.int32)
    hcap = min(npix, 4096)
    hk = np.empty(hcap)
    ht = np.empty(hcap, np.int64)
    hp = np.empty(hcap, np.int64)
    dk = np.empty(hcap)
    dt = np.empty(hcap, np.int64)
    dp = np.empty(hcap, np.int64)
    cap = 64
    st = np.zeros((cap, _NSTAT))
    nb = 0
    pos = 0
    nval = order.shape[0]
    dxs = (0, -1, 1, 0)
    dys = (-1, 0, 0, 1)
    while True:
        while pos < nval and binmap[order[pos]] >= 0:
            pos += 1
        if pos == nval:
            break
        seed = order[pos]
        if nb == cap:
            cap *= 2
            st2 = np.zeros((cap, _NSTAT))
            st2[:nb] = st[:nb]
            st = st2
        b = nb
        nb += 1
        aim = np.float64(s[seed])
        st[b, _SEED] = seed
        _add_pixel(st, b, seed, nx, cnt, bgv, er, has_bg, binmap, arrival)
        stamp[seed] = b
        hn = 0
        dn = 0
        slack = 0.0  # total possible decrease of any parked pixel's margin so far
        cur = seed
        while True:
            # offer the neighbours of the pixel just added
            cx = cur % nx
            cy = cur // nx
            for k in range(4):
                xx = cx + dxs[k]
                yy = cy + dys[k]
                if xx < 0 or yy < 0 or xx >= nx or yy >= ny:
                    continue
                pp = yy * nx + xx
                if valid[pp] and binmap[pp] < 0 and stamp[pp] != b:
                    stamp[pp] = b
                    # contbin scans edge pixels in order of arrival, neighbours up, left, right, down
                    tie[pp] = arrival[cur] * 4 + k if contbin_ties else rank[pp]
                    if hn == hk.shape[0]:
                        hk, ht, hp = _heap_room(hk, ht, hp, hn)
                    hn = _heap_push(hk, ht, hp, hn, abs(np.float64(s[pp]) - aim), tie[pp], pp)
            if _bin_sn2(st, b, has_bg) >= thr2:
                break
            # parked pixels that may have come inside the circle go back on offer
            while dn > 0 and dk[0] <= slack:
                dn, _, _, pp = _heap_pop(dk, dt, dp, dn)
                if hn == hk.shape[0]:
                    hk, ht, hp = _heap_room(hk, ht, hp, hn)
                hn = _heap_push(hk, ht, hp, hn, abs(np.float64(s[pp]) - aim), tie[pp], pp)
            got = -1
            while hn > 0:
                hn, _, _, pp = _heap_pop(hk, ht, hp, hn)
                if binmap[pp] >= 0:
                    continue
                if constrain and not _constraint_ok(st, b, pp, nx, areas, cval2):
                    m = _constraint_margin(st, b, pp, nx, areas, cval)
                    thr = slack + m * (1.0 - 1e-9) - 1e-9
                    if dn == dk.shape[0]:
                        dk, dt, dp = _heap_room(dk, dt, dp, dn)
                    dn = _heap_push(dk, dt, dp, dn, thr, tie[pp], pp)
                    continue
                got = pp
                break
            if got < 0:
                break
            if constrain:
                ox = st[b, _CX] / st[b, _CW]
                oy = st[b, _CY] / st[b, _CW]
                ocr = np.searchsorted(areas, st[b, _N], side="right") + 1
            _add_pixel(st, b, got, nx, cnt, bgv, er, has_bg, binmap, arrival)
            if constrain:
                ncx = st[b, _CX] / st[b, _CW]
                ncy = st[b, _CY] / st[b, _CW]
                ncr = np.searchsorted(areas, st[b, _N], side="right") + 1
                slack += math.sqrt((ncx - ox) ** 2 + (ncy - oy) ** 2) * (1.0 + 1e-9) + cval * (ncr - ocr)
            cur = got
    return binmap, st[:nb].copy(), arrival


@njit(cache=True)
def _dissolve(b: int, st: np.ndarray, binmap: np.ndarray, s: np.ndarray, rank: np.ndarray, nx: int,
              cnt: np.ndarray, bgv: np.ndarray, er: np.ndarray, has_bg: bool,
              constrain: bool, cval2: float, areas: np.ndarray, work: np.ndarray, arrival: np.ndarray,
              contbin_ties: bool) -> bool:
    """Give the pixels of bin b to neighbouring bins; False if some could not be given away."""
    npix = s.shape[0]
    ny = npix // nx
    nrank = npix + 1
    dxs = (0, -1, 1, 0)
    dys = (-1, 0, 0, 1)
    # the bin's pixels: flood fill from its seed (bins stay connected until dissolved)
    seed = int(st[b, _SEED])
    if binmap[seed] != b:
        return False
    n = 0
    work[0] = seed
    n = 1
    binmap[seed] = -2 - b  # temporary visited mark
    i = 0
    while i < n:
        p = work[i]
        i += 1
        px = p % nx
        py = p // nx
        for k in range(4):
            xx = px + dxs[k]
            yy = py + dys[k]
            if 0 <= xx < nx and 0 <= yy < ny:
                pp = yy * nx + xx
                if binmap[pp] == b:
                    binmap[pp] = -2 - b
                    work[n] = pp
                    n += 1
    for i in range(n):
        binmap[work[i]] = b
    cap = 8 * n + 16
    hk = np.empty(cap)
    ht = np.empty(cap, np.int64)
    hp = np.empty(cap, np.int64)
    defer = np.empty(cap, np.int64)
    hn = 0
    for i in range(n):
        p = work[i]
        px = p % nx
        py = p // nx
        for k in range(4):
            xx = px + dxs[k]
            yy = py + dys[k]
            if 0 <= xx < nx and 0 <= yy < ny:
                pp = yy * nx + xx
                c = binmap[pp]
                if c >= 0 and c != b:
                    t = arrival[p] * 4 + k if contbin_ties else rank[p] * nrank + rank[pp]
                    hn = _heap_push(hk, ht, hp, hn, abs(np.float64(s[p]) - np.float64(s[pp])), t, p * npix + pp)
    deft = np.empty(cap, np.int64)
    while st[b, _N] > 0:
        got = -1
        nd = 0
        while hn > 0:
            hn, _, t, pay = _heap_pop(hk, ht, hp, hn)
            p = pay // npix
            pp = pay % npix
            if binmap[p] != b:
                continue
            if constrain and not _constraint_ok(st, binmap[pp], pp, nx, areas, cval2):
                defer[nd] = pay
                deft[nd] = t
                nd += 1
                continue
            got = pay
            break
        if got < 0 and nd > 0:
            # nothing within the constraint: take the best pair regardless (contbin does the same)
            got = defer[0]
            for i in range(1, nd):
                defer[i - 1] = defer[i]
                deft[i - 1] = deft[i]
            nd -= 1
        for i in range(nd):
            pay = defer[i]
            p = pay // npix
            pp = pay % npix
            hn = _heap_push(hk, ht, hp, hn, abs(np.float64(s[p]) - np.float64(s[pp])), deft[i], pay)
        if got < 0:
            return False
        p = got // npix
        c = binmap[got % npix]
        _remove_pixel(st, b, p, cnt, bgv, er, has_bg, binmap)
        _add_pixel(st, c, p, nx, cnt, bgv, er, has_bg, binmap, arrival)
        px = p % nx
        py = p // nx
        for k in range(4):
            xx = px + dxs[k]
            yy = py + dys[k]
            if 0 <= xx < nx and 0 <= yy < ny:
                pp = yy * nx + xx
                if binmap[pp] == b:
                    t = arrival[pp] * 4 + (3 - k) if contbin_ties else rank[pp] * nrank + rank[p]
                    if hn >= hk.shape[0]:
                        hk2 = np.empty(2 * hk.shape[0])
                        ht2 = np.empty(2 * hk.shape[0], np.int64)
                        hp2 = np.empty(2 * hk.shape[0], np.int64)
                        hk2[:hn] = hk[:hn]
                        ht2[:hn] = ht[:hn]
                        hp2[:hn] = hp[:hn]
                        hk, ht, hp = hk2, ht2, hp2
                    hn = _heap_push(hk, ht, hp, hn, abs(np.float64(s[pp]) - np.float64(s[p])), t, pp * npix + p)
        if defer.shape[0] < hk.shape[0]:
            defer = np.empty(hk.shape[0], np.int64)
            deft = np.empty(hk.shape[0], np.int64)
    return True


@njit(cache=True)
def _scrub(st: np.ndarray, binmap: np.ndarray, s: np.ndarray, rank: np.ndarray, nx: int, cnt: np.ndarray,
           bgv: np.ndarray, er: np.ndarray, has_bg: bool, thr2: float, constrain: bool,
           cval2: float, areas: np.ndarray, stuck: np.ndarray, arrival: np.ndarray, contbin_ties: bool) -> int:
    """One contbin scrubbing pass; returns the number of bins dissolved."""
    nb = st.shape[0]
    low = np.empty(nb, np.int64)
    nl = 0
    for b in range(nb):
        if st[b, _N] > 0 and not stuck[b] and _bin_sn2(st, b, has_bg) < thr2:
            low[nl] = b
            nl += 1
    work = np.empty(s.shape[0], np.int64)
    done = 0
    while True:
        best = -1
        bestsn = 1e300
        j = 0
        for i in range(nl):
            b = low[i]
            v = _bin_sn2(st, b, has_bg)
            if v >= thr2:
                continue
            low[j] = b
            j += 1
            if v < bestsn:
                bestsn = v
                best = b
        nl = j
        if best < 0:
            break
        if not _dissolve(best, st, binmap, s, rank, nx, cnt, bgv, er, has_bg, constrain, cval2, areas,
                         work, arrival, contbin_ties):
            stuck[best] = True
        done += 1
        j = 0
        for i in range(nl):
            if low[i] != best:
                low[j] = low[i]
                j += 1
        nl = j
    return done


# =============================================================================
# numpy helpers
# =============================================================================
def _as_image(name: str, arr: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        msg = f"{name}: expected a 2-D image, got shape {a.shape}; pass one image plane"
        raise InputError(msg)
    if a.size == 0:
        msg = f"{name}: the image is empty (shape {a.shape})"
        raise InputError(msg)
    if shape is not None and a.shape != shape:
        msg = (f"{name}: shape {a.shape} differs from the counts image's {shape}; "
               "use maps on the same pixel grid")
        raise InputError(msg)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        msg = f"{name}: expected numbers, got dtype {a.dtype}"
        raise InputError(msg)
    return a


def _check_counts(name: str, a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        y, x = np.argwhere(bad)[0]
        msg = (f"{name}: {int(bad.sum())} pixels are NaN or infinite (first at x={x}, y={y}, 0-based); "
               "set them to 0 and mask them")
        raise InputError(msg)
    neg = a < 0
    if neg.any():
        y, x = np.unravel_index(int(np.argmin(a)), a.shape)
        msg = (f"{name}: {int(neg.sum())} pixels are negative (min {float(a.min()):g} at x={x}, y={y}, "
               "0-based); contour binning needs counts >= 0 (pass a background image instead of "
               "subtracting it)")
        raise InputError(msg)
    return a


def _automask(counts: np.ndarray) -> np.ndarray:
    """Contbin's ``--automask``: 8×8 blocks (from the origin) without counts are masked."""
    ny, nx = counts.shape
    by, bx = -(-ny // 8), -(-nx // 8)
    pad = np.zeros((by * 8, bx * 8), np.float64)
    pad[:ny, :nx] = counts
    sums = pad.reshape(by, 8, bx, 8).sum(axis=(1, 3))
    keep = np.abs(sums) >= 1e-5
    return np.repeat(np.repeat(keep, 8, axis=0), 8, axis=1)[:ny, :nx]


@njit(cache=True)
def _tie_keys(sat: np.ndarray, pix: np.ndarray, nx: int, half: np.ndarray) -> np.ndarray:
    """Minus the counts in the (2k+1)² box around each pixel, one column per half width k."""
    ny = sat.shape[0] - 1
    keys = np.empty((pix.shape[0], half.shape[0]))
    for i in range(pix.shape[0]):
        y = pix[i] // nx
        x = pix[i] % nx
        for j in range(half.shape[0]):
            k = half[j]
            y0 = max(y - k, 0)
            y1 = min(y + k + 1, ny)
            x0 = max(x - k, 0)
            x1 = min(x + k + 1, nx)
            keys[i, j] = -(sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0])
    return keys


@njit(cache=True)
def _sort_tied_groups(keys: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Stable lexicographic sort of the rows of ``keys`` within each run [bounds[i], bounds[i+1])."""
    n, nk = keys.shape
    perm = np.arange(n)
    tmp = np.empty(n, np.int64)
    for g in range(bounds.shape[0] - 1):
        lo = bounds[g]
        hi = bounds[g + 1]
        width = 1
        while width < hi - lo:
            i = lo
            while i < hi:
                mid = min(i + width, hi)
                end = min(i + 2 * width, hi)
                a = i
                b = mid
                k = i
                while a < mid and b < end:
                    pa = perm[a]
                    pb = perm[b]
                    take_b = False
                    for j in range(nk):
                        if keys[pb, j] < keys[pa, j]:
                            take_b = True
                            break
                        if keys[pb, j] > keys[pa, j]:
                            break
                    if take_b:
                        tmp[k] = pb
                        b += 1
                    else:
                        tmp[k] = pa
                        a += 1
                    k += 1
                while a < mid:
                    tmp[k] = perm[a]
                    a += 1
                    k += 1
                while b < end:
                    tmp[k] = perm[b]
                    b += 1
                    k += 1
                i = end
            for t in range(lo, hi):
                perm[t] = tmp[t]
            width *= 2
    return perm


@njit(cache=True, inline="always")
def _gt(v: np.ndarray, a: int, b: int, down: bool) -> bool:
    return v[a] > v[b] if down else v[a] < v[b]


@njit(cache=True)
def _adjust_heap(x: np.ndarray, first: int, hole: int, n: int, value: int, v: np.ndarray, down: bool) -> None:
    top = hole
    child = hole
    while child < (n - 1) // 2:
        child = 2 * (child + 1)
        if _gt(v, x[first + child], x[first + child - 1], down):
            child -= 1
        x[first + hole] = x[first + child]
        hole = child
    if (n & 1) == 0 and child == (n - 2) // 2:
        child = 2 * (child + 1)
        x[first + hole] = x[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and _gt(v, x[first + parent], value, down):
        x[first + hole] = x[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    x[first + hole] = value


@njit(cache=True)
def _unstable_sort(x: np.ndarray, v: np.ndarray, down: bool) -> None:
    """Sort pixel indices x by v[x] (descending if ``down``) exactly as GCC's ``std::sort`` orders them.

    contbin sorts its row-major pixel list with ``std::sort`` (introsort:
    median-of-three quicksort, heapsort past depth 2·log2 n, insertion sort
    below 16 elements); equal values end up in an order that only this
    algorithm reproduces.  This is an independent implementation of that
    published algorithm (not contbin code), used for ``ties="contbin"``.
    """
    n = x.shape[0]
    if n < 2:
        return
    lg = 0
    while (1 << (lg + 1)) <= n:
        lg += 1
    stack = np.empty((2 * lg + 8, 3), np.int64)
    sp = 0
    stack[0, 0] = 0
    stack[0, 1] = n
    stack[0, 2] = 2 * lg
    sp = 1
    while sp > 0:
        sp -= 1
        first = stack[sp, 0]
        last = stack[sp, 1]
        depth = stack[sp, 2]
        while last - first > 16:
            if depth == 0:
                m = last - first
                parent = (m - 2) // 2
                while True:
                    _adjust_heap(x, first, parent, m, x[first + parent], v, down)
                    if parent == 0:
                        break
                    parent -= 1
                end = last
                while end - first > 1:
                    end -= 1
                    val = x[end]
                    x[end] = x[first]
                    _adjust_heap(x, first, 0, end - first, val, v, down)
                last = first
                break
            depth -= 1
            mid = first + (last - first) // 2
            a = first + 1
            c = last - 1
            if _gt(v, x[a], x[mid], down):
                if _gt(v, x[mid], x[c], down):
                    sw = mid
                elif _gt(v, x[a], x[c], down):
                    sw = c
                else:
                    sw = a
            elif _gt(v, x[a], x[c], down):
                sw = a
            elif _gt(v, x[mid], x[c], down):
                sw = c
            else:
                sw = mid
            t = x[first]
            x[first] = x[sw]
            x[sw] = t
            lo = first + 1
            hi = last
            pv = x[first]
            while True:
                while _gt(v, x[lo], pv, down):
                    lo += 1
                hi -= 1
                while _gt(v, pv, x[hi], down):
                    hi -= 1
                if not lo < hi:
                    break
                t = x[lo]
                x[lo] = x[hi]
                x[hi] = t
                lo += 1
            cut = lo
            stack[sp, 0] = cut
            stack[sp, 1] = last
            stack[sp, 2] = depth
            sp += 1
            last = cut
    # final insertion sort
    lim = min(n, 16)
    for i in range(1, lim):
        val = x[i]
        if _gt(v, val, x[0], down):
            for j in range(i, 0, -1):
                x[j] = x[j - 1]
            x[0] = val
        else:
            j = i
            while _gt(v, val, x[j - 1], down):
                x[j] = x[j - 1]
                j -= 1
            x[j] = val
    for i in range(16, n):
        val = x[i]
        j = i
        while _gt(v, val, x[j - 1], down):
            x[j] = x[j - 1]
            j -= 1
        x[j] = val


def pixel_ranks(smoothed32: np.ndarray, counts: np.ndarray, valid: np.ndarray, *,
                binup: bool = False, like_contbin: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Order unmasked pixels for seeding: by smoothed value, ties by mirror-invariant keys, then (y, x).

    Parameters
    ----------
    smoothed32 : numpy.ndarray
        The float32 smoothed image.
    counts : numpy.ndarray
        The counts image (tie keys: the pixel's counts, then box sums of
        half width 1, 2, 4, 8, 16, larger first).
    valid : numpy.ndarray
        bool, True for unmasked pixels.
    binup : bool, optional
        Lowest smoothed value first (contbin's ``--binup``).
    like_contbin : bool, optional
        Order equal values as contbin's ``std::sort`` does (GCC's introsort
        of the row-major pixel list) instead of by the tie keys.

    Returns
    -------
    order : numpy.ndarray
        int64 flat indices of the unmasked pixels, first seed first.
    rank : numpy.ndarray
        int64 position of each flat pixel in ``order`` (−1 where masked).
    """
    flat_valid = np.flatnonzero(valid.ravel())
    if like_contbin:
        order = flat_valid.astype(np.int64)
        _unstable_sort(order, smoothed32.ravel().astype(np.float32), not binup)
        rank = np.full(valid.size, -1, np.int64)
        rank[order] = np.arange(len(order))
        return order, rank
    v = smoothed32.ravel()[flat_valid].astype(np.float32)
    key = v if binup else -v
    # stable: equal values keep the (y, x) order of flat_valid, the last tie-breaker
    o = np.argsort(key, kind="stable")
    sv = key[o]
    eq = sv[1:] == sv[:-1]
    tied = np.zeros(len(sv), bool)
    tied[1:] |= eq
    tied[:-1] |= eq
    idx = np.flatnonzero(tied)
    if idx.size:
        start = np.ones(len(idx), bool)
        start[1:] = ~(eq[idx[1:] - 1] & (idx[1:] == idx[:-1] + 1))
        nx = valid.shape[1]
        c = np.where(valid, counts, 0).astype(np.float64)
        sat = np.zeros((c.shape[0] + 1, c.shape[1] + 1))
        sat[1:, 1:] = c.cumsum(0).cumsum(1)
        keys = _tie_keys(sat, flat_valid[o[idx]], nx, np.array((0, *_TIE_BOXES)))
        bounds = np.flatnonzero(np.r_[start, True])
        o[idx] = o[idx][_sort_tied_groups(keys, bounds)]
    order = flat_valid[o]
    rank = np.full(valid.size, -1, np.int64)
    rank[order] = np.arange(len(order))
    return order, rank


def _areas_table(nx: int, ny: int) -> np.ndarray:
    """Contbin's ``bin_helper::precalculate_areas``: offsets of the (2nx−1)×(2ny−1) grid within each radius."""
    rmax = math.isqrt(nx * nx + ny * ny)
    dx = np.arange(0, nx)
    counts = np.zeros(rmax + 2, np.int64)
    for dy in range(0, ny):
        r = np.floor(np.sqrt((dx * dx + dy * dy).astype(np.float64))).astype(np.int64)
        mult = np.where(dx == 0, 1, 2) * (1 if dy == 0 else 2)
        np.add.at(counts, r, mult)
    return np.cumsum(counts[: rmax + 1]).astype(np.float64)


@njit(cache=True)
def _int_rows_ok(a: np.ndarray, valid: np.ndarray) -> bool:
    """Whether the unmasked values of a are integers whose row sums fit an int32."""
    ny, nx = a.shape
    for y in range(ny):
        t = 0.0
        for x in range(nx):
            if valid[y, x]:
                v = np.float64(a[y, x])
                if v != math.floor(v):
                    return False
                t += v
        if t > 2147483647.0:
            return False
    return True


@njit(cache=True, parallel=True)
def _prefix_planes(cnt: np.ndarray, valid: np.ndarray, bg: np.ndarray, er: np.ndarray, has_bg: bool,
                   packed: int) -> np.ndarray:
    """Row-wise prefix sums P[y, x] = Σ_{x' < x} of the unmasked planes for :func:`_disc_sums`.

    Planes F (counts), N (unmasked pixels) and, with background, W = bg·r,
    B = bg and Q = r², r the exposure ratio (float32 values as float64; the
    float sums are sequential like ``np.cumsum``).  With integer counts and
    background, ``packed`` = 1 stores each position in 24 bytes: W, Q as
    float64, then F + N·2^21 + B·2^42 as one int64 (every field's image total
    must stay below 2^21, so that no sum of differences carries into the
    next field); ``packed`` = 2 in 32 bytes: W, Q as float64, then F, N, B as
    int32 (row sums below 2^31).  Otherwise (F, N, W, B, Q) as float64.
    """
    ny, nx = cnt.shape
    nk = (3 if packed == 1 else 4 if packed == 2 else 5) if has_bg else 2
    P = np.zeros((ny, nx + 1, nk))
    for y in prange(ny):
        f = 0.0
        n = 0.0
        w = 0.0
        b = 0.0
        q = 0.0
        for x in range(nx):
            if valid[y, x]:
                c = np.float64(cnt[y, x])
                f += c
                n += 1.0
                if has_bg:
                    e = np.float64(er[y, x])
                    bv = np.float64(bg[y, x])
                    w += bv * e
                    b += bv
                    q += e * e
            if not has_bg:
                P[y, x + 1, 0] = f
                P[y, x + 1, 1] = n
            elif packed > 0:
                P[y, x + 1, 0] = w
                P[y, x + 1, 1] = q
            else:
                P[y, x + 1, 0] = f
                P[y, x + 1, 1] = n
                P[y, x + 1, 2] = w
                P[y, x + 1, 3] = b
                P[y, x + 1, 4] = q
        if packed > 0:
            Pl = P[y].reshape(-1).view(np.int64)
            Pi = P[y].reshape(-1).view(np.int32)
            fi = 0
            ni = 0
            bi = 0
            for x in range(nx):
                if valid[y, x]:
                    fi += int(cnt[y, x])
                    ni += 1
                    bi += int(bg[y, x])
                if packed == 1:
                    Pl[3 * (x + 1) + 2] = fi + (ni << _SHIFT) + (bi << (2 * _SHIFT))
                else:
                    j = 8 * (x + 1) + 4
                    Pi[j] = fi
                    Pi[j + 1] = ni
                    Pi[j + 2] = bi
    return P


def _exposure_ratio(shape: tuple[int, int], expmap: np.ndarray | None, bgexpmap: np.ndarray | None,
                    exposure_s: float | None, bg_exposure_s: float | None) -> np.ndarray:
    """float32 ``max(expmap, 1e-7) / max(bgexpmap, 1e-7)`` per pixel (NaN → 0 first), as contbin."""

    def trimmed(a: np.ndarray | None, const: float | None) -> np.ndarray | np.float32:
        if a is None:
            return np.maximum(np.float32(1.0 if const is None else const), _TRIM)
        out = np.array(a, dtype=np.float32)
        np.nan_to_num(out, copy=False, nan=0.0)
        return np.maximum(out, _TRIM, out=out)

    fg = trimmed(expmap, exposure_s)
    bgx = trimmed(bgexpmap, bg_exposure_s)
    if isinstance(fg, np.ndarray):
        return np.divide(fg, bgx, out=fg)
    if isinstance(bgx, np.ndarray):
        return np.divide(fg, bgx, out=bgx)
    return np.full(shape, np.float32(fg / bgx), np.float32)


def _smoothing_planes(cnt32: np.ndarray, valid: np.ndarray, bg32: np.ndarray | None,
                      er32: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Prefix planes for :func:`_smooth_kernel` (packed when counts and background are integers) and qmin."""
    if bg32 is None:
        dummy = np.zeros((1, 1), np.float32)
        return _prefix_planes(cnt32, valid, dummy, dummy, False, 0), 0.0
    packed = 0
    if _int_rows_ok(cnt32, valid) and _int_rows_ok(bg32, valid):
        packed = 2
        lim = float(1 << _SHIFT)
        if (valid.sum() < lim and float(np.sum(cnt32, where=valid, dtype=np.float64)) < lim
                and float(np.sum(bg32, where=valid, dtype=np.float64)) < lim):
            packed = 1
    emin = float(np.min(er32, where=valid, initial=np.inf)) if valid.any() else 0.0
    return _prefix_planes(cnt32, valid, bg32, er32, True, packed), emin * emin


def accumulative_smooth(counts: np.ndarray, *, smoothsn: float = 15.0, bg: np.ndarray | None = None,
                        expmap: np.ndarray | None = None, bgexpmap: np.ndarray | None = None,
                        mask: np.ndarray | None = None, exposure_s: float | None = None,
                        bg_exposure_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Accumulatively smooth an image to a signal-to-noise ratio (contbin's smoothing).

    Parameters
    ----------
    counts : numpy.ndarray
        2-D counts image (≥ 0).
    smoothsn : float, optional
        Target S/N of each pixel's disc.
    bg, expmap, bgexpmap : numpy.ndarray, optional
        Background counts image and the exposure maps giving its per-pixel
        scale ``expmap/bgexpmap``; see the module docstring.
    mask : numpy.ndarray, optional
        bool, True for pixels to use (already combined with ``expmap >= 1``).
    exposure_s, bg_exposure_s : float, optional
        Constant exposures used in place of missing maps (default 1).

    Returns
    -------
    smoothed : numpy.ndarray
        float64 net counts per unmasked pixel of each pixel's disc (not yet
        rounded to float32); NaN where masked.
    radius : numpy.ndarray
        int32 disc radius used per pixel (−1 where masked).
    """
    counts = _check_counts("counts", _as_image("counts", counts))
    valid = np.ones(counts.shape, bool) if mask is None else np.ascontiguousarray(mask, bool)
    bg32 = er32 = None
    if bg is not None:
        bg32 = _check_counts("bg", _as_image("bg", bg, counts.shape))
        er32 = _exposure_ratio(counts.shape, expmap, bgexpmap, exposure_s, bg_exposure_s)
    P, qmin = _smoothing_planes(counts, valid, bg32, er32)
    return _smooth_kernel(P, valid, float(smoothsn), qmin)


@njit(cache=True)
def _bin_sums(lab: np.ndarray, counts: np.ndarray, bg: np.ndarray, er: np.ndarray, expo: np.ndarray,
              has_bg: bool, exp_mode: int, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label 0..nb−1 (negative: none): pixel count and sums of counts, bg, bg·r, r², x, y, exposure.

    Pixels are added in row-major order, as ``np.bincount`` over the selected pixels would.
    """
    ny, nx = lab.shape
    area = np.zeros(nb, np.int64)
    out = np.zeros((nb, 7))
    for y in range(ny):
        for x in range(nx):
            b = lab[y, x]
            if b < 0:
                continue
            area[b] += 1
            out[b, 0] += np.float64(counts[y, x])
            if has_bg:
                bv = np.float64(bg[y, x])
                e = np.float64(er[y, x])
                out[b, 1] += bv
                out[b, 2] += bv * e
                out[b, 3] += e * e
            out[b, 4] += np.float64(x)
            out[b, 5] += np.float64(y)
            if exp_mode == 2:
                out[b, 6] += np.float64(expo[y, x])
            elif exp_mode == 1:
                out[b, 6] += expo[0, 0]
    return area, out


def bin_statistics(binmap: np.ndarray, counts: np.ndarray, *, bg: np.ndarray | None = None,
                   expmap: np.ndarray | None = None, bgexpmap: np.ndarray | None = None,
                   exposure_s: float | None = None, bg_exposure_s: float | None = None,
                   header: fits.Header | None = None) -> Table:
    """Per-bin counts, background, area, S/N (contbin's formula) and centroid of any bin map.

    Parameters
    ----------
    binmap : numpy.ndarray
        Integer bin number per pixel, −1 (or any negative) for none.
    counts, bg, expmap, bgexpmap, exposure_s, bg_exposure_s
        As for :func:`make_contour_bins`.
    header : astropy.io.fits.Header, optional
        Adds ``ra_deg``/``dec_deg`` of the centroids when it has a celestial WCS.

    Returns
    -------
    astropy.table.Table
        One row per bin number present, sorted by ``bin_id``; columns as in
        :class:`ContourBins`.
    """
    def native(a: Any) -> np.ndarray:
        a = np.asarray(a)
        return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))  # FITS data are big-endian

    bm = native(binmap)
    if bm.dtype.kind not in "iu":
        bm = bm.astype(np.int64)
    top = int(bm.max()) if bm.size else -1
    if top >= 4 * bm.size + 64:
        # sparse labels: number them 0.. first
        sel = bm >= 0
        idmap, inv = np.unique(bm[sel], return_inverse=True)
        lab = np.full(bm.shape, -1, np.int64)
        lab[sel] = inv
        del sel, inv
    else:
        lab = bm
        idmap = np.arange(max(top + 1, 0))
    has_bg = bg is not None
    er = dummy = np.zeros((1, 1), np.float32)
    bgarr = dummy
    if has_bg:
        er = _exposure_ratio(bm.shape, expmap, bgexpmap, exposure_s, bg_exposure_s)
        bgarr = native(bg)
    exp_mode = 0 if expmap is None and exposure_s is None else (1 if expmap is None else 2)
    expo = native(expmap) if exp_mode == 2 else np.full((1, 1), float(exposure_s or 0.0))
    area, sums = _bin_sums(lab, native(counts), bgarr, er, expo, has_bg, exp_mode, len(idmap))
    keep = area > 0
    ids = idmap[keep]
    area = area[keep]
    sums = sums[keep]
    nb = len(ids)
    F = sums[:, 0]
    tab = Table()
    tab["bin_id"] = ids.astype(np.int32)
    tab["counts"] = F
    if has_bg:
        B = sums[:, 1]
        W = sums[:, 2]
        Q = sums[:, 3]
        noise2 = (1 + np.sqrt(F + 0.75)) ** 2 + (Q / area) * (1 + np.sqrt(B + 0.75)) ** 2
    else:
        B = np.zeros(nb)
        W = np.zeros(nb)
        noise2 = (1 + np.sqrt(F + 0.75)) ** 2
    tab["bg_counts"] = W
    tab["bg_counts_raw"] = B
    tab["net_counts"] = F - W
    tab["area_pix"] = area
    tab["sn"] = np.abs(F - W) / np.sqrt(noise2)
    tab["x_pix"] = sums[:, 4] / area
    tab["y_pix"] = sums[:, 5] / area
    if exp_mode:
        tab["exposure_mean"] = sums[:, 6] / area
        with np.errstate(divide="ignore", invalid="ignore"):
            tab["sb"] = tab["net_counts"] / (area * tab["exposure_mean"])
        tab["exposure_mean"].unit = "s"
        tab["sb"].unit = "ct / (s pix)"
    if header is not None and nb:
        from astropy.wcs import WCS, FITSFixedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            w = WCS(header, naxis=2)
        if w.has_celestial:
            ra, dec = w.celestial.pixel_to_world_values(tab["x_pix"], tab["y_pix"])
            tab["ra_deg"] = np.asarray(ra) % 360.0
            tab["dec_deg"] = np.asarray(dec)
            tab["ra_deg"].unit = tab["dec_deg"].unit = "deg"
    for col in ("counts", "bg_counts", "bg_counts_raw", "net_counts"):
        tab[col].unit = "ct"
    tab["area_pix"].unit = "pix"
    tab["x_pix"].unit = tab["y_pix"].unit = "pix"
    return tab


def _needed_counts(sn: float) -> float:
    # C / (1 + sqrt(C + 0.75)) = sn  ->  u = sqrt(C + 0.75) solves u² − sn·u − (sn + 0.75) = 0
    u = (sn + math.sqrt(sn * sn + 4 * (sn + 0.75))) / 2
    return u * u - 0.75


def make_contour_bins(counts: np.ndarray, *, sn: float = 15.0, smoothsn: float = 15.0,
                      constrainfill: bool = False, constrainval: float = 3.0, bg: np.ndarray | None = None,
                      expmap: np.ndarray | None = None, bgexpmap: np.ndarray | None = None,
                      mask: np.ndarray | None = None, automask: bool = False, noscrub: bool = False,
                      binup: bool = False, scrub_large: float | None = None, guarantee_sn: bool = False,
                      exposure_s: float | None = None, bg_exposure_s: float | None = None,
                      header: fits.Header | None = None, smoothed: np.ndarray | None = None,
                      ties: str = "contbin") -> ContourBins:
    """Contour-bin a counts image as contbin 1.7 does (see the module docstring for the differences).

    Parameters
    ----------
    counts : numpy.ndarray
        2-D counts image, values ≥ 0 and finite.
    sn : float, optional
        Target signal-to-noise ratio of each bin (contbin ``--sn``, default 15).
    smoothsn : float, optional
        S/N of the accumulative smoothing (``--smoothsn``, default 15).
    constrainfill : bool, optional
        Apply the geometric constraint (``--constrainfill``).
    constrainval : float, optional
        Its ratio (``--constrainval``, default 3).
    bg : numpy.ndarray, optional
        Background counts image (``--bg``), scaled per pixel by ``expmap/bgexpmap``.
    expmap, bgexpmap : numpy.ndarray, optional
        Exposure maps of image and background (``--expmap``, ``--bgexpmap``);
        pixels with ``expmap < 1`` (or non-finite) are masked.
    mask : numpy.ndarray, optional
        Pixels with value ≥ 1 (or True) are used (``--mask``).
    automask : bool, optional
        Mask 8×8 blocks without counts (``--automask``).
    noscrub : bool, optional
        Keep bins below ``sn`` (``--noscrub``).
    binup : bool, optional
        Seed from the faintest pixel (``--binup``).
    scrub_large : float, optional
        Unbin bins holding at least this fraction of the binned pixels
        (``--scrublarge``; ignored with ``noscrub`` as in contbin).
    guarantee_sn : bool, optional
        Rescrub until every bin reaches ``sn`` (xmine only).
    exposure_s, bg_exposure_s : float, optional
        Exposures of image and background, used where ``expmap``/``bgexpmap``
        are absent (contbin reads the EXPOSURE keywords; default 1).
    header : astropy.io.fits.Header, optional
        Image header; its celestial WCS gives the table's ``ra_deg``/``dec_deg``.
    smoothed : numpy.ndarray, optional
        A ready smoothed image (``--smoothed``), skipping the smoothing.
    ties : {"contbin", "symmetric"}, optional
        How exact ties are broken.  ``"contbin"`` (default) orders seeds of
        equal smoothed value as contbin's ``std::sort`` does and breaks growth
        and scrubbing ties by contbin's edge-list order (the bin pixel that
        joined first, then its neighbour up, left, right, down): the bins
        equal contbin's.  ``"symmetric"`` uses the mirror-invariant rank of
        :func:`pixel_ranks` throughout, so the bins of a mirrored or
        transposed image are the mirror of these (see module docstring).

    Returns
    -------
    ContourBins

    Raises
    ------
    xmine.errors.InputError
        For a non-2-D or empty image, NaN or negative counts/background,
        maps of another shape, bad option values, all pixels masked, or a
        target S/N the whole unmasked image does not reach.

    Warns
    -----
    ContourBinWarning
        When a background is given without any exposure information (scale 1
        assumed) or when ``guarantee_sn`` had to unbin isolated regions.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(1).poisson(4.0, (32, 32))
    >>> res = make_contour_bins(img, sn=10, smoothsn=10)
    >>> bool((res.table["sn"] >= 10).all())
    True
    """
    counts_in = _as_image("counts", counts)
    cnt32 = _check_counts("counts", counts_in)
    shape = cnt32.shape
    for name, val in (("sn", sn), ("smoothsn", smoothsn), ("constrainval", constrainval)):
        if not (isinstance(val, (int, float, np.floating, np.integer)) and math.isfinite(val) and val > 0):
            msg = f"{name}: {val!r} is not a positive number; contbin's default is {15 if 'sn' in name else 3}"
            raise InputError(msg)
    if scrub_large is not None and not (0 < scrub_large <= 1):
        msg = f"scrub_large: {scrub_large!r} must be a fraction in (0, 1] (or None to keep large bins)"
        raise InputError(msg)
    if ties not in ("contbin", "symmetric"):
        msg = f"ties: {ties!r} is not one of 'contbin', 'symmetric'"
        raise InputError(msg)
    if guarantee_sn and noscrub:
        msg = "guarantee_sn=True needs scrubbing; drop noscrub=True"
        raise InputError(msg)
    for name, val in (("exposure_s", exposure_s), ("bg_exposure_s", bg_exposure_s)):
        if val is not None and not (math.isfinite(val) and val > 0):
            msg = f"{name}: {val!r} must be a positive exposure in seconds"
            raise InputError(msg)

    valid = np.ones(shape, bool)
    if mask is not None:
        m = _as_image("mask", mask, shape)
        valid &= np.nan_to_num(m.astype(np.float64), nan=0.0) >= 1
    if automask:
        valid &= _automask(cnt32)
    exp_arr = bgexp_arr = None
    if expmap is not None:
        exp_arr = _as_image("expmap", expmap, shape).astype(np.float32)
        valid &= np.isfinite(exp_arr) & (exp_arr >= 1)
    if bgexpmap is not None:
        bgexp_arr = _as_image("bgexpmap", bgexpmap, shape).astype(np.float32)
    bg32 = None
    if bg is not None:
        bg32 = _check_counts("bg", _as_image("bg", bg, shape))
        if exp_arr is None and bgexp_arr is None and (exposure_s is None or bg_exposure_s is None):
            warnings.warn("bg: no exposure maps and no exposure times for image and background; "
                          "scaling the background by 1 (as contbin does without EXPOSURE keywords)",
                          ContourBinWarning, stacklevel=2)
    elif bgexp_arr is not None:
        msg = "bgexpmap: given without bg; pass the background image too (or drop bgexpmap)"
        raise InputError(msg)
    nvalid = int(valid.sum())
    if nvalid == 0:
        msg = (f"mask: all {valid.size} pixels of the {shape[1]}×{shape[0]} image are masked "
               "(mask < 1, expmap < 1 or automask); check the mask and exposure map")
        raise InputError(msg)

    has_bg = bg32 is not None
    ny, nx = shape
    er32 = None
    # the whole unmasked image as one bin: can the target be reached at all?  (float64 sums as numpy
    # forms them; the full-size float64 planes are temporary)
    Ft = float(np.where(valid, cnt32, 0).astype(np.float64).sum())
    if has_bg:
        er32 = _exposure_ratio(shape, exp_arr, bgexp_arr, exposure_s, bg_exposure_s)
        tmp = np.where(valid, bg32, 0).astype(np.float64)
        Bt = float(tmp.sum())
        er = er32.astype(np.float64)
        tmp *= er
        Wt = float(tmp.sum())
        del tmp
        er *= er
        er[~valid] = 0.0
        Qt = float(er.sum())
        del er
        noise = (1 + math.sqrt(Ft + 0.75)) ** 2 + (Qt / nvalid) * (1 + math.sqrt(Bt + 0.75)) ** 2
        net = Ft - Wt
    else:
        noise = (1 + math.sqrt(Ft + 0.75)) ** 2
        net = Ft
    sn_all = abs(net) / math.sqrt(noise)
    if sn_all < sn:
        msg = (f"counts: all {nvalid} unmasked pixels together hold {Ft:.0f} counts ({net:.1f} net) and reach "
               f"S/N {sn_all:.2f} < sn={sn:g}; S/N {sn:g} needs at least {_needed_counts(sn):.0f} net counts "
               "without background: lower sn or use a deeper image")
        raise InputError(msg)

    if smoothed is None:
        P, qmin = _smoothing_planes(cnt32, valid, bg32, er32)
        sm64, radius = _smooth_kernel(P, valid, float(smoothsn), qmin)
        del P, radius
    else:
        sm64 = _as_image("smoothed", smoothed, shape).astype(np.float64)
    s32 = sm64.astype(np.float32)
    del sm64
    s32[~valid] = 0.0
    s = s32.ravel()

    order, rank = pixel_ranks(s32, cnt32, valid, binup=binup, like_contbin=ties == "contbin")
    areas = _areas_table(nx, ny)
    thr2 = float(sn) * float(sn)
    cval2 = float(constrainval) * float(constrainval)
    vflat = valid.ravel()
    cntf = cnt32.ravel()
    dummy = np.zeros(1, np.float32)
    bgvf, erf = (bg32.ravel(), er32.ravel()) if has_bg else (dummy, dummy)
    cties = ties == "contbin"
    binmap, st, arrival = _grow_bins(s, order, rank, vflat, nx, cntf, bgvf, erf, has_bg, thr2,
                                 bool(constrainfill), cval2, areas, cties)
    n_grown = st.shape[0]
    stuck = np.zeros(n_grown, np.bool_)
    n_dissolved = 0
    n_unbinned_islands = 0
    if not noscrub:
        n_dissolved += _scrub(st, binmap, s, rank, nx, cntf, bgvf, erf, has_bg, thr2,
                              bool(constrainfill), cval2, areas, stuck, arrival, cties)
        if guarantee_sn:
            while True:
                k = _scrub(st, binmap, s, rank, nx, cntf, bgvf, erf, has_bg, thr2,
                           bool(constrainfill), cval2, areas, stuck, arrival, cties)
                n_dissolved += k
                if k == 0:
                    break
            # what is left below target cannot reach it: isolated islands
            n = st[:, _N]
            F = st[:, _F]
            if has_bg:
                noise = (1 + np.sqrt(F + 0.75)) ** 2 + (st[:, _Q] / np.maximum(n, 1)) * (
                    1 + np.sqrt(st[:, _B] + 0.75)) ** 2
                sig = F - st[:, _W]
            else:
                noise = (1 + np.sqrt(F + 0.75)) ** 2
                sig = F
            below = (n > 0) & (sig * sig / noise < thr2)
            if below.any():
                drop = np.isin(binmap, np.flatnonzero(below))
                n_unbinned_islands = int(drop.sum())
                binmap[drop] = -1
                st[below, _N] = 0
                warnings.warn(f"guarantee_sn: {int(below.sum())} isolated regions ({n_unbinned_islands} pixels) "
                              f"cannot reach S/N {sn:g}; they are left unbinned (-1)",
                              ContourBinWarning, stacklevel=2)
        if scrub_large is not None:
            tot = st[:, _N].sum()
            large = st[:, _N] / tot >= scrub_large
            if large.any():
                binmap[np.isin(binmap, np.flatnonzero(large))] = -1
                st[large, _N] = 0
        # renumber: bins that still hold pixels, in creation order
        keep = st[:, _N] > 0
        new = np.full(n_grown + 1, -1, np.int32)
        new[:-1][keep] = np.arange(int(keep.sum()), dtype=np.int32)
        binmap = new[binmap]  # -1 indexes the trailing -1
    binmap = binmap.reshape(shape).astype(np.int32)
    del order, rank, arrival, stuck

    table = bin_statistics(binmap, cnt32, bg=bg32, expmap=exp_arr, bgexpmap=bgexp_arr, exposure_s=exposure_s,
                           bg_exposure_s=bg_exposure_s, header=header)
    smooth_out = s32.astype(np.float64)
    del s32, s
    smooth_out[~valid] = np.nan
    params: dict[str, Any] = {
        "sn": float(sn), "smoothsn": float(smoothsn), "constrainfill": bool(constrainfill),
        "constrainval": float(constrainval), "automask": bool(automask), "noscrub": bool(noscrub),
        "binup": bool(binup), "scrub_large": scrub_large, "guarantee_sn": bool(guarantee_sn), "ties": ties,
        "exposure_s": exposure_s, "bg_exposure_s": bg_exposure_s, "has_bg": has_bg,
        "has_expmap": exp_arr is not None, "has_bgexpmap": bgexp_arr is not None, "has_mask": mask is not None,
        "n_bins": len(table), "n_grown": int(n_grown), "n_dissolved": int(n_dissolved),
        "n_below_sn": int((table["sn"] < sn).sum()), "n_unmasked": nvalid,
        "n_unbinned_islands": n_unbinned_islands,
    }
    return ContourBins(binmap=binmap, smoothed=smooth_out, table=table, params=params)


# =============================================================================
# files
# =============================================================================
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "XTENSION", "PCOUNT",
               "GCOUNT", "BZERO", "BSCALE", "BUNIT", "DATASUM", "CHECKSUM", "BLANK", "EXTNAME", "EXTVER",
               "DATAMIN", "DATAMAX", "HDUCLASS", "HDUCLAS1", "HDUCLAS2", "HDUCLAS3", "HDUNAME"}


def _read_image(path: Path | str, what: str) -> tuple[np.ndarray, fits.Header]:
    p = Path(path)
    if not p.exists():
        msg = f"{p}: no such file (the {what}); check the path"
        raise InputError(msg)
    try:
        with fits.open(p, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                    data = np.array(hdu.data)
                    header = hdu.header.copy()
                    if "EXPOSURE" not in header and "EXPOSURE" in hdul[0].header:
                        header["EXPOSURE"] = hdul[0].header["EXPOSURE"]
                    break
            else:
                msg = f"{p}: no image HDU in the file (the {what}); pass a FITS image"
                raise InputError(msg)
    except InputError:
        raise
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        msg = f"{p}: cannot read the {what} as FITS ({text}); check the file"
        raise InputError(msg) from exc
    if data.ndim != 2:
        msg = f"{p}: the {what} has shape {data.shape}, not a 2-D image; pass one image plane"
        raise InputError(msg)
    return data, header


def _exposure_keyword(header: fits.Header, path: Path | str) -> float | None:
    if "EXPOSURE" not in header:
        return None
    try:
        val = float(header["EXPOSURE"])
    except (TypeError, ValueError) as exc:
        msg = f"{path}: EXPOSURE keyword {header['EXPOSURE']!r} is not a number; fix the header"
        raise InputError(msg) from exc
    return val if val > 0 else None


def read_contbin_inputs(image_path: Path | str, *, bg_path: Path | str | None = None,
                        expmap_path: Path | str | None = None, bgexpmap_path: Path | str | None = None,
                        mask_path: Path | str | None = None) -> dict[str, Any]:
    """Read contbin's input files into keyword arguments of :func:`make_contour_bins`.

    Parameters
    ----------
    image_path : path-like
        Counts image (first image HDU); its EXPOSURE keyword gives ``exposure_s``.
    bg_path, expmap_path, bgexpmap_path, mask_path : path-like, optional
        Background image (its EXPOSURE gives ``bg_exposure_s``), exposure maps, mask.

    Returns
    -------
    dict
        ``counts``, ``header``, ``exposure_s``, ``bg_exposure_s`` and whichever of
        ``bg``, ``expmap``, ``bgexpmap``, ``mask`` were given.

    Raises
    ------
    xmine.errors.InputError
        A file is missing, unreadable, not a 2-D image, or of another shape than the image.
    """
    counts, header = _read_image(image_path, "counts image")
    out: dict[str, Any] = {"counts": counts, "header": header,
                           "exposure_s": _exposure_keyword(header, image_path), "bg_exposure_s": None}
    for key, path in (("bg", bg_path), ("expmap", expmap_path), ("bgexpmap", bgexpmap_path),
                      ("mask", mask_path)):
        if path is None:
            continue
        data, h = _read_image(path, {"bg": "background image", "expmap": "exposure map",
                                     "bgexpmap": "background exposure map", "mask": "mask"}[key])
        if data.shape != counts.shape:
            msg = (f"{path}: the {key} has shape {data.shape} but the image {image_path} has {counts.shape}; "
                   "use maps on the same pixel grid")
            raise InputError(msg)
        out[key] = data
        if key == "bg":
            out["bg_exposure_s"] = _exposure_keyword(h, path)
    return out


def _out_header(header: fits.Header | None, params: dict[str, Any], what: str) -> fits.Header:
    h = fits.Header()
    if header is not None:
        for card in header.cards:
            if card.keyword in _STRUCTURAL or card.keyword.startswith(("NAXIS", "TTYPE", "TFORM", "TUNIT")):
                continue
            if card.keyword in ("HISTORY", "COMMENT", ""):
                continue
            h.append(card, end=True)
    h["CONTENT"] = what[:68]
    from xmine import __version__

    h["CREATOR"] = f"xmine {__version__} xmine.contbin"
    for k in ("sn", "smoothsn", "constrainfill", "constrainval", "noscrub", "guarantee_sn"):
        h.add_history(f"xmine.contbin {k} = {params.get(k)}")
    return h


def run_contbin(image_path: Path | str, *, out_dir: Path | str, bg_path: Path | str | None = None,
                expmap_path: Path | str | None = None, bgexpmap_path: Path | str | None = None,
                mask_path: Path | str | None = None, **options: Any) -> dict[str, Path]:
    """Contour-bin FITS files and write the products into ``out_dir``.

    Parameters
    ----------
    image_path : path-like
        Counts image; its EXPOSURE keyword (and the background's) set the
        background scale when no exposure maps are given, as in contbin.
    out_dir : path-like
        Folder for the outputs (created if missing); nothing is written elsewhere.
    bg_path, expmap_path, bgexpmap_path, mask_path : path-like, optional
        contbin's ``--bg``, ``--expmap``, ``--bgexpmap`` and ``--mask`` files.
    **options
        Keyword options of :func:`make_contour_bins` (``sn``, ``smoothsn``,
        ``constrainfill``, ``constrainval``, ``noscrub``, ``guarantee_sn``...);
        ``exposure_s``/``bg_exposure_s`` override the keywords.

    Returns
    -------
    dict of str to pathlib.Path
        ``binmap`` (int32, −1 unbinned; the input header's WCS and physical
        LTM/LTV keywords kept), ``smoothed`` (float32, NaN masked), ``sn``
        (per-pixel S/N of its bin, −1 unbinned, contbin's ``contbin_sn.fits``),
        ``out`` (net counts per pixel of its bin, contbin's ``contbin_out.fits``),
        ``mask`` (uint8, 1 = used) and ``bins`` (the per-bin table).

    Raises
    ------
    xmine.errors.InputError
        Unreadable or mismatched files, bad options, or inputs
        :func:`make_contour_bins` refuses.
    """
    from xmine.store import atomic_write

    inputs = read_contbin_inputs(image_path, bg_path=bg_path, expmap_path=expmap_path,
                                 bgexpmap_path=bgexpmap_path, mask_path=mask_path)
    for key in ("exposure_s", "bg_exposure_s"):
        if options.get(key) is not None:
            inputs[key] = options.pop(key)
        else:
            options.pop(key, None)
    unknown = set(options) - {"sn", "smoothsn", "constrainfill", "constrainval", "automask", "noscrub",
                              "binup", "scrub_large", "guarantee_sn", "smoothed", "ties"}
    if unknown:
        msg = f"run_contbin: unknown option(s) {sorted(unknown)}; see make_contour_bins for the names"
        raise InputError(msg)
    res = make_contour_bins(**inputs, **options)
    out = Path(out_dir)
    header = inputs["header"]
    bm = res.binmap
    tab = res.table
    sn_img = np.full(bm.shape, -1.0, np.float32)
    out_img = np.full(bm.shape, -1.0, np.float32)
    if len(tab):
        lut_sn = np.full(int(tab["bin_id"].max()) + 1, -1.0)
        lut_out = np.full_like(lut_sn, -1.0)
        lut_sn[tab["bin_id"]] = tab["sn"]
        lut_out[tab["bin_id"]] = tab["net_counts"] / tab["area_pix"]
        sel = bm >= 0
        sn_img[sel] = lut_sn[bm[sel]]
        out_img[sel] = lut_out[bm[sel]]
    images = {
        "binmap": (bm.astype(np.int32), "bin number, -1 = unbinned"),
        "smoothed": (res.smoothed.astype(np.float32), "accumulatively smoothed net counts per pixel"),
        "sn": (sn_img, "signal to noise of the pixel's bin, -1 = unbinned"),
        "out": (out_img, "net counts per pixel of the pixel's bin, -1 = unbinned"),
        "mask": (np.isfinite(res.smoothed).astype(np.uint8), "1 = pixel used, 0 = masked"),
    }
    paths: dict[str, Path] = {}
    for name, (data, what) in images.items():
        target = out / f"{name}.fits"
        with atomic_write(target) as tmp:
            fits.PrimaryHDU(data, header=_out_header(header, res.params, what)).writeto(tmp)
        paths[name] = target
    target = out / "bins.fits"
    tab = tab.copy()
    tab.meta.update({k.upper()[:8]: v for k, v in res.params.items() if isinstance(v, (int, float, bool, str))})
    with atomic_write(target) as tmp:
        tab.write(tmp, format="fits")
    paths["bins"] = target
    return paths
