"""A simulated cluster image for contour-binning tests and benchmarks.

The image is a Chandra-like sky image binned ×2 (0.984″ pixels) of a
cool-core double-β cluster with ellipticity and a sub-clump, point sources,
a flat background and, optionally, an exposure map with a dithered chip gap
and vignetting. Sizes scale with ``npix`` so images of any size look alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from xmine.simulate.acis import DITHER_AMPLITUDE_ARCSEC, PIXEL_ARCSEC, SKY_REF_PIX, vignetting
from xmine.simulate.expmap import image_header
from xmine.simulate.morphology import BetaComponent, ClusterShape
from xmine.store import atomic_write

__all__ = ["SimulatedImage", "simulate_cluster_image", "write_simulated_image"]

#: Sky pixels per image pixel, exposure, and tangent point of the simulated image.
IMAGE_BIN = 2
IMAGE_EXPOSURE_S = 50_000.0
IMAGE_RA_DEG, IMAGE_DEC_DEG = 150.0, 2.2


@dataclass
class SimulatedImage:
    """A simulated counts image and its truth.

    Attributes
    ----------
    counts : ndarray of int32
        (ny, nx) Poisson counts: cluster + point sources + background.
    model : ndarray of float64
        Expected counts (the truth of ``counts``).
    background : ndarray of int32 or None
        Counts of an independent, longer blank-sky background exposure
        (``bg_exposure_s``), or None without background.
    expmap : ndarray of float32 or None
        Exposure map (s), or None.
    exposure_s : float
        Exposure of ``counts``.
    bg_exposure_s : float or None
        Exposure of ``background``.
    header : astropy.io.fits.Header
        Sky WCS (RA---TAN/DEC--TAN, 0.492″ × binning) and CIAO physical keywords.
    truth : dict
        ``cluster`` (parameters, pixel centre), ``point_sources`` (x, y 0-based
        pixels, counts, sigma_pix), ``background_per_pixel``, ``cluster_model``
        (expected cluster counts per pixel), ``pixel_arcsec``, ``seed``.
    """

    counts: np.ndarray
    model: np.ndarray
    background: np.ndarray | None
    expmap: np.ndarray | None
    exposure_s: float
    bg_exposure_s: float | None
    header: fits.Header
    truth: dict[str, Any]


def _relative_exposure(npix: int, pix_arcsec: float) -> np.ndarray:
    """Vignetting × a dithered chip gap crossing the image at 70 % of its width."""
    yy, xx = np.mgrid[0:npix, 0:npix].astype(np.float64)
    c = (npix - 1) / 2.0
    theta = np.hypot(xx - c, yy - c) * pix_arcsec / 60.0
    # a 18″ gap whose edges are smeared by the ±8″ dither: linear ramps of 16″ on each side
    gap_centre = 0.7 * npix + 0.15 * (yy - c)
    d = np.abs(xx - gap_centre) * pix_arcsec
    half_gap, ramp = 9.0, 2 * DITHER_AMPLITUDE_ARCSEC
    cover = np.clip((d - half_gap + ramp / 2) / ramp, 0.0, 1.0)
    return np.asarray(cover * vignetting(theta), dtype=np.float64)


def simulate_cluster_image(npix: int = 512, *, total_counts: float = 2e5, n_point_sources: int = 30,
                           background_per_pixel: float = 0.0, bg_exposure_ratio: float = 5.0,
                           with_expmap: bool = False, seed: int = 0) -> SimulatedImage:
    """Simulate a Chandra-like counts image of a merging cool-core cluster.

    Parameters
    ----------
    npix : int, optional
        Image side in pixels (0.984″ each).
    total_counts : float, optional
        Expected cluster counts in the image (at full exposure).
    n_point_sources : int, optional
        Number of point sources (20–2000 counts each, log-uniform).
    background_per_pixel : float, optional
        Expected background counts per pixel at full exposure; 0 gives no
        background and no background image.
    bg_exposure_ratio : float, optional
        Background-image exposure / image exposure.
    with_expmap : bool, optional
        Modulate the model with an exposure map (vignetting and a dithered
        chip gap) and return it (in seconds).
    seed : int, optional
        Random seed; the same seed gives the same arrays.

    Returns
    -------
    SimulatedImage

    Examples
    --------
    >>> sim = simulate_cluster_image(128, total_counts=1e4, n_point_sources=3, seed=1)
    >>> sim.counts.shape, sim.counts.dtype.name
    ((128, 128), 'int32')
    """
    if npix < 16:
        from xmine.errors import InputError

        msg = f"npix = {npix} is too small; use at least 16"
        raise InputError(msg)
    rng = np.random.default_rng(seed)
    pix = PIXEL_ARCSEC * IMAGE_BIN
    c = (npix - 1) / 2.0
    cx, cy = c + 0.03 * npix, c - 0.02 * npix
    scale = npix * pix  # arcsec across the image
    comps = (
        BetaComponent(0.9 * 0.35, 0.012 * scale, 0.60, q=0.8, pa_deg=30.0, kt_kev=3.0),
        BetaComponent(0.9 * 0.65, 0.08 * scale, 0.70, q=0.8, pa_deg=30.0, kt_kev=6.0),
        BetaComponent(0.10, 0.025 * scale, 2 / 3, dx_arcsec=-0.20 * scale, dy_arcsec=-0.12 * scale, kt_kev=5.0),
    )
    shape = ClusterShape(comps)
    x = np.arange(npix, dtype=np.float64)
    xi = -(x - cx) * pix  # east is to the left (x increases to the west)
    eta = (x - cy) * pix
    sb = shape.surface_brightness(xi[None, :], eta[:, None])
    cluster = sb * (total_counts / sb.sum())
    model = cluster.copy()
    points = []
    lo, hi = np.log10(20.0), np.log10(2000.0)
    for _ in range(int(n_point_sources)):
        px, py = rng.uniform(0.05 * npix, 0.95 * npix, 2)
        counts = float(10 ** rng.uniform(lo, hi))
        r = np.hypot(px - c, py - c) / npix
        sigma = 0.7 + 2.0 * r * r
        half = int(np.ceil(5 * sigma))
        x0, x1 = max(0, int(px) - half), min(npix, int(px) + half + 2)
        y0, y1 = max(0, int(py) - half), min(npix, int(py) + half + 2)
        gx = np.exp(-0.5 * ((np.arange(x0, x1) - px) / sigma) ** 2)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) - py) / sigma) ** 2)
        stamp = gy[:, None] * gx[None, :]
        model[y0:y1, x0:x1] += counts * stamp / (2 * np.pi * sigma * sigma)
        points.append({"x": float(px), "y": float(py), "counts": counts, "sigma_pix": float(sigma)})
    if background_per_pixel > 0:
        model += background_per_pixel
    rel = _relative_exposure(npix, pix) if with_expmap else None
    if rel is not None:
        model *= rel
        cluster = cluster * rel
    counts_img = rng.poisson(model).astype(np.int32)
    background = bg_exposure = None
    if background_per_pixel > 0:
        bg_mean = background_per_pixel * bg_exposure_ratio * (rel if rel is not None else 1.0)
        background = rng.poisson(np.broadcast_to(bg_mean, (npix, npix))).astype(np.int32)
        bg_exposure = IMAGE_EXPOSURE_S * bg_exposure_ratio
    x0_sky = SKY_REF_PIX - IMAGE_BIN * npix / 2.0
    header = image_header(IMAGE_RA_DEG, IMAGE_DEC_DEG, x0_sky, x0_sky, IMAGE_BIN)
    truth = {
        "cluster": {"center_pix": (cx, cy), "components": [vars(cp) for cp in comps],
                    "counts": float(cluster.sum())},
        "point_sources": points,
        "background_per_pixel": float(background_per_pixel),
        "cluster_model": cluster,
        "pixel_arcsec": pix,
        "seed": seed,
    }
    return SimulatedImage(counts=counts_img, model=model, background=background,
                          expmap=None if rel is None else (rel * IMAGE_EXPOSURE_S).astype(np.float32),
                          exposure_s=IMAGE_EXPOSURE_S, bg_exposure_s=bg_exposure, header=header, truth=truth)


def write_simulated_image(sim: SimulatedImage, folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``counts.fits``, ``model.fits`` and, when present, ``bg.fits`` and ``expmap.fits``.

    Every image carries the WCS/physical header and ``EXPOSURE`` (the
    background's is ``exposure × bg_exposure_ratio``).

    Parameters
    ----------
    sim : SimulatedImage
        The simulation.
    folder : path-like
        Output folder (created if needed).

    Returns
    -------
    dict of str to Path
        ``counts``, ``model`` (and ``bg``, ``expmap``) → file.
    """
    out: dict[str, Path] = {}
    items: list[tuple[str, np.ndarray, float, str]] = [("counts", sim.counts, sim.exposure_s, "count"),
                                                       ("model", sim.model, sim.exposure_s, "count")]
    if sim.background is not None:
        items.append(("bg", sim.background, float(sim.bg_exposure_s or 0.0), "count"))
    if sim.expmap is not None:
        items.append(("expmap", sim.expmap, sim.exposure_s, "s"))
    for name, data, exposure, bunit in items:
        h = sim.header.copy()
        h["BUNIT"] = bunit
        h["EXPOSURE"] = (float(exposure), "[s] exposure time")
        h["ONTIME"] = (float(exposure), "[s] exposure time")
        h["CREATOR"] = "xmine.simulate.simulate_cluster_image"
        target = Path(folder) / f"{name}.fits"
        with atomic_write(target) as tmp:
            fits.PrimaryHDU(data, header=h).writeto(tmp)
        out[name] = target
    return out
