"""Sky coverage from sensitivity maps: mosaic the maps of the stacks covering a region, then area(S_lim ≤ S).

A sensitivity map (CSC's per-stack ``sens3`` image, or any image with a sky
WCS) gives in each pixel the limiting flux ``S_lim`` at which a source there
would be detected. :func:`mosaic_sensitivity` puts several maps on one
tangent-plane grid with the ``reproject`` package (``reproject_interp``, then
``reproject_and_coadd`` with ``combine_function="min"``: where stacks overlap,
the deepest map sets the limit); :func:`sky_coverage` then gives, for a grid of
fluxes S, the solid angle where ``S_lim ≤ S`` — the cumulative sky coverage
(area–flux) curve used to turn source counts into log N–log S.

Units: ``S_lim`` keeps the maps' ``BUNIT`` (CSC sensitivity maps are photon
fluxes, photons cm⁻² s⁻¹, in their band); maps with different units are refused.

Approximations
--------------
* Reprojection interpolates ``S_lim`` bilinearly between input pixels; a map's
  value is taken as constant over an output pixel. Pixels with ``S_lim`` not
  finite or ≤ 0 count as not covered.
* Solid angle per output pixel: the tangent-plane pixel area times cos³θ
  (θ the distance from the tangent point), exact for TAN to first order in the
  pixel size; for other projections the plane area is used unchanged.
* A region is a cone; a pixel belongs to it when its centre does.
* :func:`sensitivity_from_exposure` (for observations without a catalogue
  sensitivity map, e.g. xmine's simulated ones) sets ``S_lim = N_min / t_exp``,
  a count-rate limit for a fixed number of source counts: no background term,
  no PSF growth off axis (CSC's maps include both). Use it for a first look only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from xmine.errors import InputError

__all__ = [
    "SensitivityMosaic",
    "load_sensitivity_map",
    "mosaic_sensitivity",
    "pixel_solid_angle_deg2",
    "plot_coverage",
    "sensitivity_from_exposure",
    "sky_coverage",
]


@dataclass
class SensitivityMosaic:
    """Sensitivity maps on one grid.

    Attributes
    ----------
    s_lim : ndarray
        Limiting flux per pixel (NaN where no map covers it).
    wcs : astropy.wcs.WCS
        Celestial WCS of the grid.
    unit : str
        The maps' BUNIT ("" if none).
    inputs : list of str
        The maps used (those reaching the region), in order.
    """

    s_lim: np.ndarray
    wcs: WCS
    unit: str
    inputs: list[str]

    def to_hdu(self) -> fits.PrimaryHDU:
        """Return the mosaic as a FITS image (BUNIT kept)."""
        hdu = fits.PrimaryHDU(self.s_lim.astype(np.float32), header=self.wcs.to_header())
        if self.unit:
            hdu.header["BUNIT"] = self.unit
        hdu.header["HISTORY"] = f"xmine coverage: min of {len(self.inputs)} sensitivity maps"
        return hdu


def _image_hdu(hdul: fits.HDUList) -> Any:
    for hdu in hdul:
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.data is not None \
                and hdu.data.ndim == 2:
            return hdu
    return None


def load_sensitivity_map(source: str | os.PathLike[str] | fits.ImageHDU | fits.PrimaryHDU
                         ) -> tuple[np.ndarray, WCS, str, str]:
    """Read a sensitivity map: ``(s_lim, wcs, unit, label)``.

    Raises
    ------
    xmine.errors.InputError
        No 2-D image, or no celestial WCS (RA/Dec axes).
    """
    import warnings

    if isinstance(source, (fits.ImageHDU, fits.PrimaryHDU)):
        hdu, label = source, source.name or "image HDU"
        data, header = hdu.data, hdu.header
    else:
        path = Path(source)
        label = str(path)
        if not path.exists():
            msg = f"{path}: no such sensitivity map"
            raise InputError(msg)
        try:
            with fits.open(path) as hdul:
                hdu = _image_hdu(hdul)
                if hdu is None:
                    msg = f"{path}: no 2-D image; give a sensitivity map (e.g. a CSC ..._sens3.fits)"
                    raise InputError(msg)
                data, header = np.array(hdu.data), hdu.header.copy()
        except OSError as exc:
            msg = f"{path}: not a FITS file ({exc})"
            raise InputError(msg) from exc
    if data is None or np.ndim(data) != 2:
        msg = f"{label}: no 2-D image; give a sensitivity map"
        raise InputError(msg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    if not wcs.has_celestial or wcs.celestial.naxis != 2:
        msg = (f"{label}: the sensitivity map has no sky WCS (CTYPE1/2 such as RA---TAN/DEC--TAN); "
               "give the map with its WCS header")
        raise InputError(msg)
    return np.asarray(data, dtype=float), wcs.celestial, str(header.get("BUNIT", "")).strip(), label


def pixel_solid_angle_deg2(wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """Solid angle of each pixel (deg²): plane area × cos³θ for TAN, the plane area otherwise."""
    from astropy.wcs.utils import proj_plane_pixel_area

    a0 = float(proj_plane_pixel_area(wcs))
    if not all(str(wcs.wcs.ctype[i]).endswith("-TAN") for i in range(2)):
        return np.full(shape, a0)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.all_pix2world(xx, yy, 0)
    ra0, dec0 = (math.radians(v) for v in wcs.wcs.crval[:2])
    d = np.radians(dec)
    cos_t = np.sin(d) * math.sin(dec0) + np.cos(d) * math.cos(dec0) * np.cos(np.radians(ra) - ra0)
    return np.asarray(a0 * np.clip(cos_t, 0.0, 1.0) ** 3, dtype=float)


def _region_mask(wcs: WCS, shape: tuple[int, int], region: tuple[float, float, float] | None) -> np.ndarray:
    if region is None:
        return np.ones(shape, dtype=bool)
    ra0, dec0, radius = region
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    ra, dec = wcs.all_pix2world(xx, yy, 0)
    from xmine.vo import angular_sep_deg

    return np.asarray(angular_sep_deg(ra, dec, ra0, dec0) <= radius)


def sensitivity_from_exposure(expmap: str | os.PathLike[str], *, min_counts: float = 10.0) -> fits.PrimaryHDU:
    """Return a count-rate sensitivity map ``S_lim = min_counts / exposure`` (counts/s) from an exposure map.

    Parameters
    ----------
    expmap : path-like
        Exposure map in seconds, with a sky WCS (xmine's simulated ``..._expmap.fits``).
    min_counts : float, optional
        Source counts needed for a detection (see the module docstring for what this leaves out).

    Raises
    ------
    xmine.errors.InputError
        No WCS, or ``min_counts`` not positive.
    """
    if not (math.isfinite(min_counts) and min_counts > 0):
        msg = f"min_counts = {min_counts!r}; give a positive number of counts"
        raise InputError(msg)
    data, wcs, _, _ = load_sensitivity_map(expmap)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_lim = np.where(np.isfinite(data) & (data > 0), min_counts / data, np.nan)
    hdu = fits.PrimaryHDU(s_lim, header=wcs.to_header())
    hdu.header["BUNIT"] = "count/s"
    hdu.header["HISTORY"] = f"xmine: {min_counts:g} counts / exposure of {Path(expmap).name}"
    return hdu


def _reaches(wcs: WCS, shape: tuple[int, ...], region: tuple[float, float, float]) -> bool:
    """Tell whether a map's extent (centre and half-diagonal) comes within the region's radius of its centre."""
    from xmine.vo import angular_sep_deg

    ny, nx = shape[:2]
    xs = np.array([0, nx - 1, 0, nx - 1, (nx - 1) / 2])
    ys = np.array([0, 0, ny - 1, ny - 1, (ny - 1) / 2])
    ra, dec = wcs.all_pix2world(xs, ys, 0)
    half_diag = float(np.max(angular_sep_deg(ra[:4], dec[:4], ra[4], dec[4])))
    return float(angular_sep_deg(ra[4], dec[4], region[0], region[1])) <= region[2] + half_diag


def mosaic_sensitivity(maps: Sequence[str | os.PathLike[str] | fits.ImageHDU | fits.PrimaryHDU], *,
                       region: tuple[float, float, float] | None = None,
                       pixel_arcsec: float | None = None) -> SensitivityMosaic:
    """Put sensitivity maps on one tangent-plane grid, the lowest limit where they overlap.

    Parameters
    ----------
    maps : sequence of path-like or image HDU
        The maps (each with a sky WCS and the same BUNIT).
    region : (ra_deg, dec_deg, radius_deg), optional
        Centre the grid on this cone and cover just it; maps that do not reach it
        are left out (default: a grid covering all maps).
    pixel_arcsec : float, optional
        Output pixel size (default: the finest input pixel).

    Returns
    -------
    SensitivityMosaic

    Raises
    ------
    xmine.errors.InputError
        No maps, a map without WCS, or mixed units.
    """
    from reproject import reproject_interp
    from reproject.mosaicking import find_optimal_celestial_wcs, reproject_and_coadd

    if not maps:
        msg = "no sensitivity maps given; name the stacks' sens3 files"
        raise InputError(msg)
    loaded = [load_sensitivity_map(m) for m in maps]
    units = {u for _, _, u, _ in loaded}
    if len(units) > 1:
        msg = f"sensitivity maps in different units {sorted(units)}; give maps of one band and unit"
        raise InputError(msg)
    if region is not None:
        # the stacks covering the region: maps whose extent reaches the cone
        kept = [m for m in loaded if _reaches(m[1], m[0].shape, region)]
        if not kept:
            msg = (f"none of the {len(loaded)} sensitivity maps reaches the region "
                   f"(RA {region[0]}, Dec {region[1]}, radius {region[2]} deg); give the maps of the stacks there")
            raise InputError(msg)
        loaded = kept
    inputs = []
    for data, wcs, _, _ in loaded:
        clean = np.where(np.isfinite(data) & (data > 0), data, np.nan)
        inputs.append((clean, wcs))
    from astropy.wcs.utils import proj_plane_pixel_scales

    finest = min(float(np.min(proj_plane_pixel_scales(w))) * 3600.0 for _, w in inputs)
    pix = float(pixel_arcsec or finest)
    if not (math.isfinite(pix) and pix > 0):
        msg = f"pixel size {pixel_arcsec!r} arcsec; give a positive number"
        raise InputError(msg)
    if region is not None:
        ra0, dec0, radius = (float(v) for v in region)
        if not (0 < radius < 90 and -90 <= dec0 <= 90):
            msg = f"region ({ra0}, {dec0}, {radius}): need -90 <= dec <= 90 and 0 < radius < 90 degrees"
            raise InputError(msg)
        n = math.ceil(2 * radius * 3600.0 / pix) + 2
        out_wcs = WCS(naxis=2)
        out_wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        out_wcs.wcs.crval = [ra0, dec0]
        out_wcs.wcs.crpix = [(n + 1) / 2.0, (n + 1) / 2.0]
        out_wcs.wcs.cdelt = [-pix / 3600.0, pix / 3600.0]
        shape = (n, n)
    else:
        out_wcs, shape = find_optimal_celestial_wcs(inputs, resolution=pix * _arcsec())
    mosaic, footprint = reproject_and_coadd(inputs, out_wcs, shape_out=shape, reproject_function=reproject_interp,
                                            combine_function="min", blank_pixel_value=np.nan)
    mosaic = np.where((footprint > 0) & np.isfinite(mosaic), mosaic, np.nan)
    if region is not None:
        mosaic = np.where(_region_mask(out_wcs, shape, region), mosaic, np.nan)
    return SensitivityMosaic(mosaic, out_wcs, units.pop(), [lab for _, _, _, lab in loaded])


def _arcsec() -> Any:
    import astropy.units as u

    return u.arcsec


def sky_coverage(mosaic: SensitivityMosaic, *, fluxes: Sequence[float] | np.ndarray | None = None,
                 n_fluxes: int = 60) -> Table:
    """Return the cumulative sky coverage: solid angle where ``S_lim ≤ S`` for each flux S.

    Parameters
    ----------
    mosaic : SensitivityMosaic
        From :func:`mosaic_sensitivity`.
    fluxes : array-like, optional
        Fluxes S (the maps' unit). Default: ``n_fluxes − 1`` log-spaced from the
        lowest limit to where 99.9 % of the area is covered, and the highest limit.

    Returns
    -------
    astropy.table.Table
        ``flux`` (the maps' unit) and ``area_deg2``, ``area_fraction`` (of the covered area);
        metadata: the unit, the total covered area and the inputs.
    """
    s = mosaic.s_lim
    ok = np.isfinite(s)
    area = pixel_solid_angle_deg2(mosaic.wcs, s.shape)
    vals, areas = s[ok], area[ok]
    order = np.argsort(vals)
    vals, cum = vals[order], np.cumsum(areas[order])
    total = float(cum[-1]) if cum.size else 0.0
    if fluxes is None:
        if vals.size == 0:
            grid = np.array([], dtype=float)
        else:
            # log-spaced up to 99.9 % of the area (edge pixels of tiny exposure reach far), then the last limit
            top = float(vals[min(int(np.searchsorted(cum, 0.999 * total)), vals.size - 1)])
            grid = np.geomspace(vals[0], max(top, vals[0] * 1.0001), n_fluxes - 1)
            grid = np.append(grid, vals[-1]) if vals[-1] > grid[-1] else np.geomspace(vals[0], vals[-1], n_fluxes)
    else:
        grid = np.asarray(fluxes, dtype=float)
    idx = np.searchsorted(vals, grid, side="right")
    covered = np.where(idx > 0, cum[np.maximum(idx - 1, 0)] if cum.size else 0.0, 0.0)
    t = Table({"flux": grid, "area_deg2": covered, "area_fraction": covered / total if total else covered * 0.0})
    if mosaic.unit:
        import astropy.units as u

        t["flux"].unit = u.Unit(mosaic.unit, parse_strict="silent")
    t["area_deg2"].unit = "deg2"
    t.meta.update({"s_lim_unit": mosaic.unit, "total_area_deg2": total, "inputs": list(mosaic.inputs)})
    return t


def plot_coverage(coverage: Table, out_png: str | os.PathLike[str]) -> Path:
    """Plot area(S_lim ≤ S) against S (log-log) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xmine.store import atomic_write

    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    f, a = np.asarray(coverage["flux"]), np.asarray(coverage["area_deg2"])
    ok = (f > 0) & (a > 0)
    ax.step(f[ok], a[ok], where="post")
    ax.set_xscale("log")
    ax.set_yscale("log")
    unit = coverage.meta.get("s_lim_unit", "")
    ax.set_xlabel(f"flux S{f' ({unit})' if unit else ''}")
    ax.set_ylabel("area with S$_{lim}$ ≤ S (deg$^2$)")
    ax.set_title(f"total {coverage.meta.get('total_area_deg2', 0):.4g} deg², "
                 f"{len(coverage.meta.get('inputs', []))} maps", fontsize=9)
    out = Path(out_png)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out
