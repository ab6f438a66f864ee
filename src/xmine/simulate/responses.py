"""OGIP responses (ARF and RMF) that describe exactly how xmine's simulator makes spectra.

The simulator (:mod:`xmine.simulate.spectra`, :mod:`xmine.simulate.events`) draws photon energies over
0.3–11 keV from a spectrum times :func:`~xmine.simulate.spectra.effective_area_cm2`, adds a Gaussian of
σ = 30 eV + 0.006 E, clips the detected energy to 0.05–14.9 keV and assigns ``PI = ⌊E/14.6 eV⌋ + 1``.
:func:`write_simulator_responses` writes the same as files a fitter reads:

* the **ARF**: ``effective_area_cm2`` at the centre of 10 eV bins over 0.3–11 keV (zero area, hence no
  photons, outside, as the simulator);
* the **RMF**: for each of those energy bins, the probability of each of the 1024 PI channels of 14.6 eV,
  the Gaussian integrated over the channel (averaged over five energies across the bin), the clipped
  tails put into the channels the clipping sends them to (4 and 1021); ``EBOUNDS`` ``(c − 1) × 14.6`` to
  ``c × 14.6`` eV.

The simulator's **vignetting is achromatic** (photons kept with probability ``V(θ)``) and its cluster
counts are set by a count *rate*, not a flux: the ARF's absolute scale (on-axis, 420 cm² peak) therefore
fixes the fitted normalisation only up to that vignetting and rate scaling; the spectral shape, and so kT
and Γ, are exact.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xmine.simulate.spectra import EMAX_KEV, EMIN_KEV, effective_area_cm2

__all__ = ["CHANNEL_KEV", "simulator_arf", "simulator_rmf", "write_simulator_responses"]

#: Width of an ACIS PI channel (keV).
CHANNEL_KEV = 0.0146
_N_CHAN = 1024
_DET_CLIP_KEV = (0.05, 14.9)


def _energy_grid(step_kev: float) -> tuple[np.ndarray, np.ndarray]:
    n = round((EMAX_KEV - EMIN_KEV) / step_kev)
    edges = np.linspace(EMIN_KEV, EMAX_KEV, n + 1)
    return edges[:-1], edges[1:]


def simulator_arf(step_kev: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(energ_lo, energ_hi, specresp_cm2)`` of the simulator's effective area."""
    lo, hi = _energy_grid(step_kev)
    return lo, hi, effective_area_cm2(0.5 * (lo + hi))


def simulator_rmf(step_kev: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(energ_lo, energ_hi, matrix, e_min, e_max)`` of the simulator's detector (dense matrix)."""
    from scipy.special import ndtr

    lo, hi = _energy_grid(step_kev)
    chan = np.arange(1, _N_CHAN + 1)
    e_min, e_max = (chan - 1) * CHANNEL_KEV, chan * CHANNEL_KEV
    # channel c receives detected energies in [e_min, e_max); clipping sends the tails to fixed channels
    c_lo = int(np.floor(_DET_CLIP_KEV[0] * 1000.0 / 14.6)) + 1
    c_hi = int(np.floor(_DET_CLIP_KEV[1] * 1000.0 / 14.6)) + 1
    edges = np.concatenate([e_min, [e_max[-1]]]).astype(np.float64)
    edges[:c_lo] = -np.inf  # everything below channel c_lo's upper edge lands in c_lo
    edges[c_hi:] = np.inf
    matrix = np.zeros((lo.size, _N_CHAN))
    fractions = (np.arange(5) + 0.5) / 5.0
    for f in fractions:
        e = lo + f * (hi - lo)
        sigma = 0.030 + 0.006 * e
        cdf = ndtr((edges[None, :] - e[:, None]) / sigma[:, None])
        matrix += np.diff(cdf, axis=1) / fractions.size
    return lo, hi, matrix, e_min, e_max


def write_simulator_responses(out_dir: str | os.PathLike[str], *, prefix: str = "xmine_sim") -> tuple[Path, Path]:
    """Write ``<prefix>.arf`` and ``<prefix>.rmf`` for spectra of xmine's simulated ACIS observations.

    Parameters
    ----------
    out_dir : path-like
        Folder (created if missing); put the spectra beside them, as their RESPFILE/ANCRFILE name them.
    prefix : str
        File name stem.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The ARF and the RMF.
    """
    from xmine.spectra import write_arf, write_rmf

    out = Path(out_dir)
    keys = {"RESPSRC": "xmine.simulate"}
    arf = write_arf(out / f"{prefix}.arf", *simulator_arf(), keywords=keys)
    rmf = write_rmf(out / f"{prefix}.rmf", *simulator_rmf(), keywords=keys)
    return arf, rmf
