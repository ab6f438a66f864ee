"""Cluster surface-brightness models: β, double β, sub-clump and cold front.

A cluster is a sum of elliptical β components, each normalised to unit counts
inside ``R_MAX_ARCSEC`` (20′), with surface brightness

``Σ(r) ∝ (1 + r²/r_c²)^(−3β + 1/2)``,  ``r² = x′² + (y′/q)²``,

where ``x′`` runs along the major axis at position angle ``pa_deg`` (east of
north) and ``q = 1 − ellipticity``. A cold front is a sharp edge: inside a
sector (``cf_angle_deg`` ± ``cf_halfwidth_deg``, east of north) the surface
brightness beyond ``cf_radius_arcsec`` drops by the factor ``cf_jump``.
The same functions give the pixel model (:func:`surface_brightness`) and the
photon positions (:func:`sample_positions`), so images and event files agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["R_MAX_ARCSEC", "BetaComponent", "ClusterShape", "cluster_shape"]

#: Truncation radius of every β component (arcsec).
R_MAX_ARCSEC = 1200.0

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class BetaComponent:
    """One elliptical β component.

    Attributes
    ----------
    fraction : float
        Share of the cluster's counts (before a cold front removes some).
    rc_arcsec, beta : float
        Core radius and slope (β > 0.5).
    q : float
        Axis ratio ``1 − ellipticity``.
    pa_deg : float
        Major-axis position angle, east of north.
    dx_arcsec, dy_arcsec : float
        Offset of the component centre (east, north) from the cluster centre.
    kt_kev : float
        Temperature used for this component's photons.
    """

    fraction: float
    rc_arcsec: float
    beta: float
    q: float = 1.0
    pa_deg: float = 0.0
    dx_arcsec: float = 0.0
    dy_arcsec: float = 0.0
    kt_kev: float = 5.0

    @property
    def _p(self) -> float:
        return 3.0 * self.beta - 0.5

    def _fmax(self) -> float:
        return float(1.0 - (1.0 + (R_MAX_ARCSEC / self.rc_arcsec) ** 2) ** (1.0 - self._p))

    def density(self, xi: FloatArray, eta: FloatArray) -> FloatArray:
        """Return counts per arcsec² (unit total inside R_MAX) at offsets (ξ east, η north)."""
        x, y = xi - self.dx_arcsec, eta - self.dy_arcsec
        s, c = np.sin(np.radians(self.pa_deg)), np.cos(np.radians(self.pa_deg))
        xp = x * s + y * c
        yp = (x * c - y * s) / self.q
        r2 = xp * xp + yp * yp
        norm = (self._p - 1.0) / (np.pi * self.rc_arcsec ** 2 * self._fmax() * self.q)
        out = norm * (1.0 + r2 / self.rc_arcsec ** 2) ** (-self._p)
        return np.where(r2 <= R_MAX_ARCSEC ** 2, out, 0.0)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """Draw ``n`` positions (ξ east, η north) in arcsec from the cluster centre."""
        u = rng.random(n) * self._fmax()
        r = self.rc_arcsec * np.sqrt((1.0 - u) ** (1.0 / (1.0 - self._p)) - 1.0)
        phi = rng.random(n) * (2 * np.pi)
        xp = r * np.cos(phi)
        yp = self.q * r * np.sin(phi)
        s, c = np.sin(np.radians(self.pa_deg)), np.cos(np.radians(self.pa_deg))
        return xp * s + yp * c + self.dx_arcsec, xp * c - yp * s + self.dy_arcsec


@dataclass(frozen=True)
class ClusterShape:
    """A cluster's components and optional cold front."""

    components: tuple[BetaComponent, ...]
    cf_radius_arcsec: float = 0.0
    cf_angle_deg: float = 0.0
    cf_halfwidth_deg: float = 60.0
    cf_jump: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def _cold_front_keep(self, xi: FloatArray, eta: FloatArray) -> FloatArray:
        """Factor (1 or 1/jump) applied by the cold front at each offset."""
        if self.cf_radius_arcsec <= 0 or self.cf_jump <= 1.0:
            return np.ones_like(xi)
        ang = np.degrees(np.arctan2(xi, eta))  # east of north
        dang = (ang - self.cf_angle_deg + 180.0) % 360.0 - 180.0
        outside = (np.hypot(xi, eta) > self.cf_radius_arcsec) & (np.abs(dang) <= self.cf_halfwidth_deg)
        return np.where(outside, 1.0 / self.cf_jump, 1.0)

    def surface_brightness(self, xi: FloatArray, eta: FloatArray) -> FloatArray:
        """Return counts per arcsec² for unit total (before the cold front) at offsets (arcsec)."""
        out = np.zeros(np.broadcast(xi, eta).shape)
        for comp in self.components:
            out += comp.fraction * comp.density(xi, eta)
        return out * self._cold_front_keep(xi, eta)

    def sample_positions(self, n: int, rng: np.random.Generator) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Draw up to ``n`` photon offsets; the cold front thins some away.

        Returns
        -------
        xi, eta : ndarray
            Offsets (arcsec, east and north).
        kt_kev : ndarray
            Temperature of the component each photon came from.
        """
        fr = np.array([c.fraction for c in self.components])
        counts = rng.multinomial(n, fr / fr.sum())
        xs, ys, ts = [], [], []
        for comp, k in zip(self.components, counts, strict=True):
            x, y = comp.sample(int(k), rng)
            xs.append(x)
            ys.append(y)
            ts.append(np.full(int(k), comp.kt_kev))
        xi, eta, kt = np.concatenate(xs), np.concatenate(ys), np.concatenate(ts)
        keep = self._cold_front_keep(xi, eta)
        if np.any(keep < 1):
            ok = rng.random(xi.size) < keep
            xi, eta, kt = xi[ok], eta[ok], kt[ok]
        return xi, eta, kt

    def kept_fraction(self) -> float:
        """Share of counts that survive the cold front (1 without one); deterministic estimate."""
        if self.cf_radius_arcsec <= 0 or self.cf_jump <= 1.0:
            return 1.0
        rng = np.random.default_rng(12345)
        xi, _, _ = self.sample_positions(400_000, rng)
        return xi.size / 400_000


def _get(row: Mapping[str, Any], key: str, default: float) -> float:
    v = row.get(key, default)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return default if not np.isfinite(f) else f


def cluster_shape(row: Mapping[str, Any]) -> ClusterShape:
    """Build the :class:`ClusterShape` of one (validated) truth cluster row."""
    model = str(row["model"])
    e = _get(row, "ellipticity", 0.0)
    pa = _get(row, "pa_deg", 0.0)
    kt = _get(row, "kt_kev", 5.0)
    z = _get(row, "z", 0.0)
    kt_obs = kt / (1.0 + z)
    beta = _get(row, "beta", 2 / 3)
    sub_frac = _get(row, "sub_frac", 0.0)
    main = 1.0 - sub_frac
    comps: list[BetaComponent] = []
    if model == "double_beta":
        core_frac = _get(row, "core_frac", 0.3)
        cool = _get(row, "core_kt_ratio", 0.6)
        comps.append(BetaComponent(main * core_frac, _get(row, "rc_arcsec", 10.0), beta, 1 - e, pa,
                                   kt_kev=kt_obs * cool))
        comps.append(BetaComponent(main * (1 - core_frac), _get(row, "rc2_arcsec", 60.0),
                                   _get(row, "beta2", beta), 1 - e, pa, kt_kev=kt_obs))
    else:
        comps.append(BetaComponent(main, _get(row, "rc_arcsec", 30.0), beta, 1 - e, pa, kt_kev=kt_obs))
    if sub_frac > 0:
        comps.append(BetaComponent(sub_frac, _get(row, "sub_rc_arcsec", 15.0), 2 / 3, 1.0, 0.0,
                                   _get(row, "sub_dx_arcsec", 0.0), _get(row, "sub_dy_arcsec", 0.0),
                                   kt_kev=kt_obs * 0.8))
    return ClusterShape(tuple(comps), cf_radius_arcsec=_get(row, "cf_radius_arcsec", 0.0),
                        cf_angle_deg=_get(row, "cf_angle_deg", 0.0),
                        cf_halfwidth_deg=_get(row, "cf_halfwidth_deg", 60.0),
                        cf_jump=_get(row, "cf_jump", 1.0))
