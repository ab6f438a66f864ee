"""Simulated skies: one truth → Chandra event files, exposure maps, catalogue rows, images.

The public entry points:

* :func:`load_truth`, :func:`write_truth`, :func:`demo_truth` — the truth tables
  (clusters, point sources, observations), validated on load;
* :func:`simulate_sky` — every observation of a truth as archive-like obsid
  folders (evt2 files, exposure maps, per-event truth) plus CSC 2.1-like and
  4XMM-like catalogue files, returning :class:`SimulationProducts`;
* :func:`simulate_observation`, :func:`write_event_file`,
  :func:`make_exposure_map`, :func:`make_catalogs` — the pieces;
* :func:`simulate_cluster_image`, :func:`write_simulated_image` — a counts image
  with its model, background and exposure map for contour-binning benchmarks.

Modules: :mod:`~xmine.simulate.truth`, :mod:`~xmine.simulate.acis` (detector
geometry, dither, PSF, vignetting), :mod:`~xmine.simulate.spectra`,
:mod:`~xmine.simulate.morphology`, :mod:`~xmine.simulate.events`,
:mod:`~xmine.simulate.evtfile`, :mod:`~xmine.simulate.expmap`,
:mod:`~xmine.simulate.catalogs`, :mod:`~xmine.simulate.image`,
:mod:`~xmine.simulate.sky`, :mod:`~xmine.simulate.population` (a cool-core / non-cool-core cluster sample),
:mod:`~xmine.simulate.responses` (the simulator's ARF and RMF), :mod:`~xmine.simulate.labels` (labelled
catalogue sources, epochs with flux changes). Each states the approximations it makes.
"""

from __future__ import annotations

from xmine.simulate.catalogs import Catalogs, make_catalogs, write_catalogs
from xmine.simulate.events import ObservationSim, simulate_observation
from xmine.simulate.evtfile import event_file_name, write_event_file, write_event_truth
from xmine.simulate.expmap import ExposureMap, image_header, make_exposure_map, write_exposure_map
from xmine.simulate.image import SimulatedImage, simulate_cluster_image, write_simulated_image
from xmine.simulate.population import make_population, population_sample, population_truth
from xmine.simulate.sky import ObservationProducts, SimulationProducts, simulate_sky
from xmine.simulate.truth import Truth, demo_truth, load_truth, validate_truth, write_truth

__all__ = [
    "Catalogs",
    "ExposureMap",
    "ObservationProducts",
    "ObservationSim",
    "SimulatedImage",
    "SimulationProducts",
    "Truth",
    "demo_truth",
    "event_file_name",
    "image_header",
    "load_truth",
    "make_catalogs",
    "make_exposure_map",
    "make_population",
    "population_sample",
    "population_truth",
    "simulate_cluster_image",
    "simulate_observation",
    "simulate_sky",
    "validate_truth",
    "write_catalogs",
    "write_event_file",
    "write_event_truth",
    "write_exposure_map",
    "write_simulated_image",
    "write_truth",
]
