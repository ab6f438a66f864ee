"""A simplified Chandra ACIS: chip layout, dither, PSF, vignetting, sky projection.

Coordinates
-----------
``sky``
    CIAO sky pixels ``x, y`` (0.492″, tangent plane through the pointing,
    RA---TAN/DEC--TAN, reference pixel 4096.5, x increasing to the west).
``det``
    focal-plane pixels ``detx, dety`` (0.492″, optical axis at 4096.5). A sky
    offset is turned into the detector frame by the roll angle, and the dither
    moves the whole pattern: ``det = rot(-roll) · (sky − 4096.5) − dither(t) + 4096.5``.
``chip``
    ``chipx, chipy`` 1–1024 on each CCD; chip axes are parallel to det axes
    (real ACIS chips are flipped and slightly rotated: not modelled).

Approximations (stated so tests and users know what they rely on)
------------------------------------------------------------------
* **Layout.** ACIS-I: chips 0–3 in a 2×2 array (I0 I1 over I2 I3), aimpoint
  on I3 at chip (100, 924), about 50″ from the two inner edges. ACIS-S: chips
  4–9 in a row, aimpoint on S3 (ccd 7) at chip (210, 520). Gaps of 36 pixels
  (17.7″) between chips. The optical axis coincides with the aimpoint.
* **Dither.** Lissajous pattern of amplitude 8″ (16″ peak to peak, as for
  ACIS) with periods 1000 s and 707 s, evaluated per event at its frame time.
* **PSF.** Circular two-Gaussian: 85 % in a core of σ(θ) = 0.30″ + 0.04″ θ²
  (θ off-axis angle in arcmin; 4.3″ at 10′), 15 % in a wing of 3σ(θ).
  Energy independent. Real PSFs are asymmetric off axis; this is not.
* **Vignetting.** ``V(θ) = 1 − 0.023 θ`` (θ arcmin), 77 % at 10′, clipped to
  ≥ 0.3; energy independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ACIS_LAYOUTS",
    "DITHER_AMPLITUDE_ARCSEC",
    "DITHER_PERIODS_S",
    "PIXEL_ARCSEC",
    "SKY_REF_PIX",
    "ChipLayout",
    "det_to_sky",
    "dither_offsets",
    "project",
    "psf_sigma_arcsec",
    "sky_to_det",
    "unproject",
    "vignetting",
]

#: ACIS sky / det pixel size in arcsec.
PIXEL_ARCSEC = 0.492
#: Reference pixel of sky and det coordinates (TCRPX).
SKY_REF_PIX = 4096.5
#: Lissajous dither amplitude (half of the 16″ peak-to-peak ACIS pattern).
DITHER_AMPLITUDE_ARCSEC = 8.0
#: Dither periods along detx and dety.
DITHER_PERIODS_S = (1000.0, 707.0)
#: Chip side in pixels and the gap between chips.
CHIP_PIX = 1024
GAP_PIX = 36

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ChipLayout:
    """Where the CCDs of one ACIS configuration sit in det pixels.

    Attributes
    ----------
    instrument : str
        ``"ACIS-I"`` or ``"ACIS-S"``.
    ccd_ids : tuple of int
        The CCDs that are read out.
    origins : tuple of (float, float)
        Lower-left det corner of each chip: ``chipx = floor(detx - ox) + 1``.
    aimpoint_ccd : int
        The CCD holding the aimpoint.
    """

    instrument: str
    ccd_ids: tuple[int, ...]
    origins: tuple[tuple[float, float], ...]
    aimpoint_ccd: int

    @property
    def detnam(self) -> str:
        """The DETNAM keyword, e.g. ``ACIS-0123``."""
        return "ACIS-" + "".join(str(c) for c in self.ccd_ids)

    def origin_arrays(self) -> tuple[FloatArray, FloatArray]:
        """Return the chip origins as two float arrays (ox, oy)."""
        o = np.asarray(self.origins, dtype=np.float64)
        return o[:, 0].copy(), o[:, 1].copy()

    def locate(self, detx: FloatArray, dety: FloatArray) -> tuple[NDArray[np.int16], FloatArray, FloatArray]:
        """Find the chip under det positions.

        Parameters
        ----------
        detx, dety : ndarray
            Det pixel positions.

        Returns
        -------
        ccd_id : ndarray of int16
            CCD id, or −1 where the position falls in a gap or off the array.
        cx, cy : ndarray
            Continuous chip coordinates (``chipx = floor(cx) + 1``).
        """
        ccd = np.full(detx.shape, -1, dtype=np.int16)
        cx = np.zeros_like(detx)
        cy = np.zeros_like(dety)
        for cid, (ox, oy) in zip(self.ccd_ids, self.origins, strict=True):
            lx = detx - ox
            ly = dety - oy
            on = (lx >= 0) & (lx < CHIP_PIX) & (ly >= 0) & (ly < CHIP_PIX)
            ccd[on] = cid
            cx[on] = lx[on]
            cy[on] = ly[on]
        return ccd, cx, cy

    def bounds(self) -> tuple[float, float, float, float]:
        """Return (xmin, xmax, ymin, ymax) of the array in det pixels."""
        ox, oy = self.origin_arrays()
        return float(ox.min()), float(ox.max() + CHIP_PIX), float(oy.min()), float(oy.max() + CHIP_PIX)


def _acis_i() -> ChipLayout:
    step = CHIP_PIX + GAP_PIX
    ox3, oy3 = SKY_REF_PIX - 99.5, SKY_REF_PIX - 923.5  # aimpoint at chip (100, 924) of I3
    origins = ((ox3 - step, oy3 + step), (ox3, oy3 + step), (ox3 - step, oy3), (ox3, oy3))
    return ChipLayout("ACIS-I", (0, 1, 2, 3), origins, 3)


def _acis_s() -> ChipLayout:
    step = CHIP_PIX + GAP_PIX
    ox7, oy7 = SKY_REF_PIX - 209.5, SKY_REF_PIX - 519.5  # aimpoint at chip (210, 520) of S3
    origins = tuple((ox7 + (cid - 7) * step, oy7) for cid in range(4, 10))
    return ChipLayout("ACIS-S", (4, 5, 6, 7, 8, 9), origins, 7)


#: The two supported configurations.
ACIS_LAYOUTS: dict[str, ChipLayout] = {"ACIS-I": _acis_i(), "ACIS-S": _acis_s()}


def dither_offsets(time_s: FloatArray, *, phase: tuple[float, float] = (0.0, 0.0),
                   amplitude_arcsec: float = DITHER_AMPLITUDE_ARCSEC,
                   periods_s: tuple[float, float] = DITHER_PERIODS_S) -> tuple[FloatArray, FloatArray]:
    """Lissajous dither offsets in det pixels at the given times.

    Parameters
    ----------
    time_s : ndarray
        Times (s); only differences matter.
    phase : (float, float), optional
        Phases (rad) of the two axes.
    amplitude_arcsec : float, optional
        Half of the peak-to-peak excursion.
    periods_s : (float, float), optional
        Periods along detx and dety.

    Returns
    -------
    dx, dy : ndarray
        Offsets in pixels.
    """
    a = amplitude_arcsec / PIXEL_ARCSEC
    t = np.asarray(time_s, dtype=np.float64)
    return (a * np.sin(2 * np.pi * t / periods_s[0] + phase[0]),
            a * np.sin(2 * np.pi * t / periods_s[1] + phase[1]))


def psf_sigma_arcsec(theta_arcmin: FloatArray | float) -> FloatArray:
    """Core Gaussian σ of the PSF (arcsec) at off-axis angle θ (arcmin).

    ``σ = 0.30″ + 0.04″ θ²``; the wing component has 3σ and 15 % of the counts.
    """
    th = np.asarray(theta_arcmin, dtype=np.float64)
    return 0.30 + 0.04 * th * th


#: Fraction of PSF counts in the wide component and its width relative to the core.
PSF_WING_FRACTION = 0.15
PSF_WING_SCALE = 3.0


def vignetting(theta_arcmin: FloatArray | float) -> FloatArray:
    """Relative effective area at off-axis angle θ (arcmin): ``1 − 0.023 θ``, ≥ 0.3."""
    th = np.asarray(theta_arcmin, dtype=np.float64)
    return np.clip(1.0 - 0.023 * th, 0.3, 1.0)


def project(ra_deg: FloatArray | float, dec_deg: FloatArray | float, ra0_deg: float,
            dec0_deg: float) -> tuple[FloatArray, FloatArray]:
    """Gnomonic (TAN) standard coordinates (ξ east, η north) in arcsec.

    Matches FITS ``RA---TAN/DEC--TAN`` with the reference point at (ra0, dec0).
    """
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    a0, d0 = np.radians(ra0_deg), np.radians(dec0_deg)
    da = ra - a0
    cosd = np.cos(dec)
    den = np.sin(dec) * np.sin(d0) + cosd * np.cos(d0) * np.cos(da)
    xi = cosd * np.sin(da) / den
    eta = (np.sin(dec) * np.cos(d0) - cosd * np.sin(d0) * np.cos(da)) / den
    k = np.degrees(1.0) * 3600.0
    return xi * k, eta * k


def unproject(xi_arcsec: FloatArray | float, eta_arcsec: FloatArray | float, ra0_deg: float,
              dec0_deg: float) -> tuple[FloatArray, FloatArray]:
    """Inverse of :func:`project`: standard coordinates (arcsec) → (ra, dec) in degrees."""
    k = np.radians(1.0 / 3600.0)
    xi = np.asarray(xi_arcsec, dtype=np.float64) * k
    eta = np.asarray(eta_arcsec, dtype=np.float64) * k
    a0, d0 = np.radians(ra0_deg), np.radians(dec0_deg)
    den = np.cos(d0) - eta * np.sin(d0)
    ra = a0 + np.arctan2(xi, den)
    dec = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def sky_to_det(x: FloatArray, y: FloatArray, roll_deg: float, dx: FloatArray | float = 0.0,
               dy: FloatArray | float = 0.0) -> tuple[FloatArray, FloatArray]:
    """Sky pixels → det pixels for a roll angle and dither offsets (pixels)."""
    r = np.radians(roll_deg)
    c, s = np.cos(r), np.sin(r)
    px = x - SKY_REF_PIX
    py = y - SKY_REF_PIX
    return (SKY_REF_PIX + c * px + s * py - dx, SKY_REF_PIX - s * px + c * py - dy)


def det_to_sky(detx: FloatArray, dety: FloatArray, roll_deg: float, dx: FloatArray | float = 0.0,
               dy: FloatArray | float = 0.0) -> tuple[FloatArray, FloatArray]:
    """Det pixels (with dither offsets) → sky pixels; inverse of :func:`sky_to_det`."""
    r = np.radians(roll_deg)
    c, s = np.cos(r), np.sin(r)
    ux = detx + dx - SKY_REF_PIX
    uy = dety + dy - SKY_REF_PIX
    return (SKY_REF_PIX + c * ux - s * uy, SKY_REF_PIX + s * ux + c * uy)
