"""The bundled example: a simulated sky run through xmine's chain, offline and resumable.

``run_demo`` simulates the demo sample (:func:`xmine.simulate.demo_truth`:
three clusters, two Chandra observations each, one with a flare, their point
sources and CSC 2.1-/4XMM-like catalogue rows), selects cluster candidates from
the simulated catalogues as a user would from the real ones (extended CSC
sources matched with extended 4XMM sources, the obsids covering each, their
point sources: :func:`xmine.select.select_from_tables`), then runs the cluster
pipeline (:func:`xmine.pipeline.process_cluster`) on every selected cluster with
the simulated CSC sources as the point-source catalogue: flare cleaning, merging of the two
obsids, exposure map, point-source masks, crop, contour binning, outlines as
region files, radial profile, and a quick-look PNG. Every step is recorded in
the store (``runs``/``steps``); a rerun with the same seed and parameters
skips finished steps, so an interrupted demo resumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmine.store import open_store

__all__ = ["DEMO_PARAMS", "DemoResult", "run_demo", "write_quicklook"]

#: Configuration of the demo chain (recorded with the run); everything else is the default.
DEMO_PARAMS: dict[str, Any] = {
    "binning": {"sn": 20.0, "smoothsn": 20.0, "constrainfill": True, "constrainval": 2.0},
    "process": {"merge_size_arcmin": 10.0, "crop_radius_arcmin": 2.5, "binsize": 1.0},
}


@dataclass
class DemoResult:
    """What :func:`run_demo` did: a printable table and notes."""

    out_dir: Path
    run_id: str
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_demo(out_dir: str | os.PathLike[str] = "xmine-demo", *, seed: int = 2026,
             params: dict[str, Any] | None = None) -> DemoResult:
    """Simulate the demo sky and run the cluster pipeline on each cluster.

    Parameters
    ----------
    out_dir : path-like
        Folder for everything (simulated archive, products, ``xmine.duckdb``).
    seed : int, optional
        Seed of the simulated sky.
    params : dict, optional
        Configuration overrides merged over :data:`DEMO_PARAMS` (same layout as ``xmine.toml``).

    Returns
    -------
    DemoResult
        One row per cluster: obsids and their clean fraction, point sources,
        bins, S/N range, and the outline region file.
    """
    from astropy.table import Table

    from xmine import simulate
    from xmine.config import _merge, load_config
    from xmine.pipeline import ClusterSpec, StepRunner, process_cluster

    out = Path(out_dir)
    overrides = _merge({"project": {"data_dir": str(out / "archive"), "work_dir": str(out / "products"),
                                    "store": str(out / "xmine.duckdb")},
                        "cache": {"offline": True}}, _merge(DEMO_PARAMS, params or {}))
    config = load_config(environ={}, overrides=overrides)
    run_id = f"demo-seed{seed}"
    result = DemoResult(out_dir=out, run_id=run_id,
                        columns=["catalogue cluster", "truth", "obsids (clean %)", "masked", "bins", "S/N min",
                                 "S/N med", "bin outlines (fk5)"])
    with open_store(config.project.store) as store:
        store.start_run("demo", {"seed": seed, **config.model_dump(mode="json")}, seed=seed, run_id=run_id)
        truth = simulate.demo_truth(seed=seed)

        def _simulate(folder: Path) -> dict[str, Any]:
            products = simulate.simulate_sky(truth, out / "archive", seed=seed)
            files = [str(o.event_file) for o in products.observations]
            return {"n_obs": len(products.observations),
                    "catalogs": {k: str(v) for k, v in products.catalog_files.items()},
                    "files": files + [str(v) for v in products.catalog_files.values()]}

        sky, ran = StepRunner(store, run_id).run("sky", "simulate", out / "archive", {"seed": seed}, _simulate)
        result.notes.append(("simulated" if ran else "reused") + f" {sky['n_obs']} observations and "
                            f"{len(sky['catalogs'])} catalogue tables in {out / 'archive'}")
        catalog = Table.read(sky["catalogs"]["csc21/master_source.fits"])

        def _select(folder: Path) -> dict[str, Any]:
            from xmine.select import select_from_tables

            sel = select_from_tables(catalog, Table.read(sky["catalogs"]["xmm/epic_source_cat.fits"]),
                                     Table.read(sky["catalogs"]["csc21/observations.fits"]), out_dir=folder)
            clusters = []
            for c in sel.clusters:
                name = str(c["name"])
                obsids = sorted({int(o) for o in sel.coverage["obsid"][sel.coverage["cluster"] == name]})
                clusters.append({"name": name, "ra_deg": float(c["ra_deg"]), "dec_deg": float(c["dec_deg"]),
                                 "obsids": obsids})
            return {"clusters": clusters, "files": [str(f) for f in sel.files]}

        selection, _ = StepRunner(store, run_id).run("sky", "select", out / "selection", {"sky": sky["files"]},
                                                     _select)
        result.notes.append(f"selected {len(selection['clusters'])} cluster candidates (extended CSC sources "
                            f"matched with extended 4XMM sources) and their obsids; tables and point-source "
                            f"region files in {out / 'selection'}")
        for sel in selection["clusters"]:
            truth_name, z = _nearest_truth(truth.clusters, sel["ra_deg"], sel["dec_deg"])
            spec = ClusterSpec(name=sel["name"].replace(" ", "_"), ra_deg=sel["ra_deg"], dec_deg=sel["dec_deg"],
                               obsids=tuple(sel["obsids"]), z=z)
            res = process_cluster(spec, config=config, store=store, run_id=run_id, catalog=catalog)
            folder = out / "products" / "clusters" / spec.name
            write_quicklook(folder / "quicklook.png", res.outputs["crop"]["counts"], res.outputs["contbin"]["binmap"],
                            title=f"{sel['name']} ({truth_name})  ObsIDs {' '.join(map(str, spec.obsids))}")
            sn = np.asarray(Table.read(res.outputs["contbin"]["bins"])["sn"], dtype=float)
            clean = " ".join(f"{o} ({100 * v['clean_fraction']:.0f})" for o, v in res.outputs["obs"].items())
            result.rows.append((sel["name"], truth_name, clean, res.outputs["masks"]["n_masked"], res.n_bins,
                                round(float(sn.min()), 1) if len(sn) else "-",
                                round(float(np.median(sn)), 1) if len(sn) else "-",
                                os.path.relpath(res.outputs["outlines"]["combined_fk5"], out)))
        store.finish_run(run_id)
    result.notes.append(f"quick looks: {out / 'products' / 'clusters' / '*' / 'quicklook.png'}")
    result.notes.append(f"runs and steps recorded in {out / 'xmine.duckdb'} (run {run_id}); "
                        "rerun to resume, delete the folder to start again")
    return result


def _nearest_truth(clusters: Any, ra_deg: float, dec_deg: float) -> tuple[str, float | None]:
    """Return the simulated cluster (name, z) nearest a catalogue position, within 1 arcmin."""
    from astropy.coordinates import SkyCoord

    sky = SkyCoord(np.asarray(clusters["ra_deg"], dtype=float), np.asarray(clusters["dec_deg"], dtype=float),
                   unit="deg")
    sep = sky.separation(SkyCoord(ra_deg, dec_deg, unit="deg")).arcmin
    i = int(np.argmin(sep))
    return (str(clusters["name"][i]), float(clusters["z"][i])) if sep[i] < 1.0 else ("-", None)


def write_quicklook(path: str | os.PathLike[str], image_path: str | os.PathLike[str],
                    binmap_path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write a PNG of a counts image (log scale) with its bin boundaries drawn on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from astropy.io import fits
    from matplotlib.colors import ListedColormap

    from xmine.store import atomic_write

    image = fits.getdata(image_path).astype(float)
    binmap = fits.getdata(binmap_path)
    edges = np.zeros(binmap.shape, dtype=bool)
    edges[:, 1:] |= binmap[:, 1:] != binmap[:, :-1]
    edges[1:, :] |= binmap[1:, :] != binmap[:-1, :]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    axes[0].imshow(np.log1p(image), origin="lower", cmap="magma")
    axes[0].set_title("counts (log)")
    shown = np.where(binmap >= 0, image, np.nan)
    axes[1].imshow(np.log1p(shown), origin="lower", cmap="magma")
    axes[1].imshow(np.where(edges, 1.0, np.nan), origin="lower", cmap=ListedColormap(["#00e5ff"]),
                   interpolation="nearest")
    axes[1].set_title(f"{int(binmap.max()) + 1} contour bins")
    for ax in axes:
        ax.set_xlabel("image x")
    fig.suptitle(title)
    out = Path(path)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out
