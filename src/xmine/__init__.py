"""xmine: catalogue-driven data mining of X-ray observations.

Select galaxy clusters and their point sources from the Chandra Source Catalog
2.1 and 4XMM, cache the catalogues in DuckDB, process the Chandra observations
without CIAO (events, flare cleaning, images, exposure, masks, contour
binning), and record per-region results for population studies.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xmine")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
