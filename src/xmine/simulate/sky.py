"""Simulate a whole truth: archive-like obsid folders, exposure maps, catalogues, truth files.

Layout of ``out_dir``::

    truth/clusters.ecsv, point_sources.ecsv, observations.ecsv   (write_truth)
    catalogs/csc21/*.fits|csv, catalogs/xmm/*.fits|csv, catalogs/truth_match.*
    <obsid>/primary/acisf<obsid:05d>N001_evt2.fits[.gz]
    <obsid>/secondary/acisf<obsid:05d>N001_truth.fits    (src_id per event, counts per source)
    <obsid>/secondary/acisf<obsid:05d>N001_expmap.fits   (exposure map truth, s)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmine.simulate.catalogs import make_catalogs, write_catalogs
from xmine.simulate.events import simulate_observation
from xmine.simulate.evtfile import event_file_name, write_event_file, write_event_truth
from xmine.simulate.expmap import make_exposure_map, write_exposure_map
from xmine.simulate.truth import Truth, write_truth

__all__ = ["ObservationProducts", "SimulationProducts", "simulate_sky"]


@dataclass
class ObservationProducts:
    """Files written for one observation."""

    obsid: int
    cluster: str
    instrument: str
    exposure_s: float
    n_events: int
    event_file: Path
    expmap_file: Path
    truth_file: Path
    flare: bool


@dataclass
class SimulationProducts:
    """Everything :func:`simulate_sky` wrote.

    Attributes
    ----------
    out_dir : Path
        The output folder.
    seed : int
        The seed used.
    observations : list of ObservationProducts
        One per obsid, in truth order.
    catalog_files : dict of str to Path
        ``"csc21/master_source.fits"`` … → file.
    truth_files : list of Path
        The truth tables (``clusters``, ``point_sources``, ``observations``).
    """

    out_dir: Path
    seed: int
    observations: list[ObservationProducts] = field(default_factory=list)
    catalog_files: dict[str, Path] = field(default_factory=dict)
    truth_files: list[Path] = field(default_factory=list)

    def summary(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Return column names and printable rows: one per observation, then one per catalogue table.

        Returns
        -------
        columns : list of str
            ``product, obsid, name, instrument, exposure_s, rows, flare, path``.
        rows : list of tuple
            Observations: ``("events", obsid, cluster, instrument, exposure_s,
            n_events, flare, event file)``; catalogues: ``("catalog", "", table
            name, "", "", number of rows, "", FITS file)``; paths relative to ``out_dir``.
        """
        from astropy.io import fits

        columns = ["product", "obsid", "name", "instrument", "exposure_s", "rows", "flare", "path"]

        def rel(p: Path) -> str:
            try:
                return str(p.relative_to(self.out_dir))
            except ValueError:
                return str(p)

        rows: list[tuple[Any, ...]] = []
        for o in self.observations:
            rows.append(("events", o.obsid, o.cluster, o.instrument, round(o.exposure_s, 1), o.n_events,
                         "yes" if o.flare else "", rel(o.event_file)))
        for name, path in self.catalog_files.items():
            if name.endswith(".fits"):
                nrows = int(fits.getheader(path, 1)["NAXIS2"])
                rows.append(("catalog", "", name[:-5], "", "", nrows, "", rel(path)))
        return columns, rows


def simulate_sky(truth: Truth, out_dir: str | os.PathLike[str], *, seed: int = 0, gzip: bool = False,
                 expmap_bin_px: float = 4.0, expmap_vignetted: bool = False) -> SimulationProducts:
    """Simulate every observation of a truth and its catalogues, and write them.

    Parameters
    ----------
    truth : Truth
        The sky (see :func:`~xmine.simulate.load_truth`, :func:`~xmine.simulate.demo_truth`).
    out_dir : path-like
        Output folder, laid out like the Chandra archive (see the module docstring).
    seed : int, optional
        Random seed: the same truth and seed give the same files.
    gzip : bool, optional
        Write ``…_evt2.fits.gz``.
    expmap_bin_px : float, optional
        Sky pixels per exposure-map pixel.
    expmap_vignetted : bool, optional
        Include vignetting in the exposure maps.

    Returns
    -------
    SimulationProducts
    """
    out = Path(out_dir)
    products = SimulationProducts(out_dir=out, seed=int(seed))
    products.truth_files = write_truth(truth, out / "truth")
    for row in truth.observations:
        obsid = int(row["obsid"])
        sim = simulate_observation(truth, obsid, seed=seed)
        name = event_file_name(obsid) + (".gz" if gzip else "")
        evt = write_event_file(sim, out / f"{obsid}" / "primary" / name)
        stem = f"acisf{obsid:05d}N001"
        tru = write_event_truth(sim, out / f"{obsid}" / "secondary" / f"{stem}_truth.fits")
        emap = make_exposure_map(sim, bin_px=expmap_bin_px, vignetted=expmap_vignetted)
        exp_path = write_exposure_map(emap, out / f"{obsid}" / "secondary" / f"{stem}_expmap.fits")
        products.observations.append(ObservationProducts(
            obsid=obsid, cluster=str(row["cluster"]), instrument=str(row["instrument"]),
            exposure_s=sim.livetime_s, n_events=sim.n_events, event_file=evt, expmap_file=exp_path,
            truth_file=tru, flare=bool(row["flare"])))
    products.catalog_files = write_catalogs(make_catalogs(truth, seed=seed), out / "catalogs")
    return products
