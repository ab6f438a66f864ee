"""The bundled example: a simulated sky run through xmine's chain, offline and resumable.

``run_demo`` simulates the demo sample (:func:`xmine.simulate.demo_truth`:
three clusters, two Chandra observations each, their point sources and
CSC 2.1-/4XMM-like catalogue rows), then for every cluster takes its deepest
observation, filters the events (0.5–7 keV, good grades, status 0), bins a
counts image centred on the cluster, contour-bins it and writes the bin
outlines as region files in physical and sky coordinates. Every step is
recorded in the store (``runs``/``steps``); a rerun with the same seed and
parameters skips finished steps, so an interrupted demo resumes.

Approximations of this demo, to be replaced by the cluster pipeline: one
observation per cluster (no merging), no flare cleaning, no point-source
masking and no exposure map in the binning.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmine import __version__
from xmine.store import Store, hash_inputs, open_store

__all__ = ["DEMO_PARAMS", "DemoResult", "run_demo", "write_quicklook"]

#: Parameters of the demo chain (recorded with the run).
DEMO_PARAMS: dict[str, Any] = {
    "emin_kev": 0.5,
    "emax_kev": 7.0,
    "image_size_pix": 256,
    "binsize": 2.0,
    "sn": 20.0,
    "smoothsn": 20.0,
    "constrainfill": True,
    "constrainval": 2.0,
}


@dataclass
class DemoResult:
    """What :func:`run_demo` did: a printable table and notes."""

    out_dir: Path
    run_id: str
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _step(store: Store, run_id: str, item: str, step: str, inputs: Any,
          work: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """Run ``work`` unless the store says this step finished with the same inputs; return (outputs, ran)."""
    h = hash_inputs(inputs, __version__)
    done = store.step_done(run_id, item, step, h)
    if done is not None and all(Path(p).exists() for p in done.get("files", [])):
        return done, False
    t0 = time.perf_counter()
    try:
        outputs = work()
    except Exception as exc:
        store.record_failure(run_id, item, step, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    store.record_step(run_id, item, step, h, outputs=outputs, seconds=time.perf_counter() - t0)
    return outputs, True


def run_demo(out_dir: str | os.PathLike[str] = "xmine-demo", *, seed: int = 2026,
             params: dict[str, Any] | None = None) -> DemoResult:
    """Simulate the demo sky and run the chain on each cluster.

    Parameters
    ----------
    out_dir : path-like
        Folder for everything (simulated archive, products, ``xmine.duckdb``).
    seed : int, optional
        Seed of the simulated sky.
    params : dict, optional
        Overrides of :data:`DEMO_PARAMS`.

    Returns
    -------
    DemoResult
        One row per cluster: obsid used, counts in the image, bins, S/N range and
        the region file.
    """
    from xmine import simulate

    out = Path(out_dir)
    p = {**DEMO_PARAMS, **(params or {})}
    run_id = f"demo-seed{seed}"
    result = DemoResult(out_dir=out, run_id=run_id,
                        columns=["cluster", "z", "obsid", "exp_ks", "counts", "bins", "S/N min", "S/N med",
                                 "sky regions"])
    with open_store(out / "xmine.duckdb") as store:
        store.start_run("demo", {"seed": seed, **p}, seed=seed, run_id=run_id)
        truth = simulate.demo_truth(seed=seed)

        def _simulate() -> dict[str, Any]:
            products = simulate.simulate_sky(truth, out / "archive", seed=seed)
            obs = {str(o.obsid): {"cluster": o.cluster, "instrument": o.instrument, "exposure_s": o.exposure_s,
                                  "event_file": str(o.event_file), "expmap_file": str(o.expmap_file)}
                   for o in products.observations}
            files = [o["event_file"] for o in obs.values()] + [str(f) for f in products.catalog_files.values()]
            return {"observations": obs, "catalogs": {k: str(v) for k, v in products.catalog_files.items()},
                    "files": files}

        sky, ran = _step(store, run_id, "sky", "simulate", {"seed": seed}, _simulate)
        result.notes.append(("simulated" if ran else "reused") + f" {len(sky['observations'])} observations and "
                            f"{len(sky['catalogs'])} catalogue tables in {out / 'archive'}")
        for cluster in truth.clusters:
            name = str(cluster["name"])
            obs = {k: v for k, v in sky["observations"].items() if v["cluster"] == name}
            obsid = max(obs, key=lambda k: obs[k]["exposure_s"])
            row = _cluster_chain(store, run_id, out, name, float(cluster["ra_deg"]), float(cluster["dec_deg"]),
                                 obsid, obs[obsid], p)
            result.rows.append((name, float(cluster["z"]), f"{obsid} {obs[obsid]['instrument']}",
                                round(obs[obsid]["exposure_s"] / 1e3, 1), *row))
        store.finish_run(run_id)
    result.notes.append(f"runs and steps recorded in {out / 'xmine.duckdb'} (run {run_id}); "
                        "rerun to resume, delete the folder to start again")
    return result


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


def _cluster_chain(store: Store, run_id: str, out: Path, name: str, ra: float, dec: float, obsid: str,
                   obs: dict[str, Any], p: dict[str, Any]) -> tuple[Any, ...]:
    import numpy as np

    from xmine.contbin import run_contbin
    from xmine.events import filter_events, read_events
    from xmine.images import make_counts_image, sky_box, write_image
    from xmine.outlines import write_outline_regions

    folder = out / "products" / name
    item = f"{name}/{obsid}"
    event_file = Path(obs["event_file"])

    def _image() -> dict[str, Any]:
        ev = filter_events(read_events(event_file), emin_kev=p["emin_kev"], emax_kev=p["emax_kev"])
        n = int(p["image_size_pix"])
        xmin, ymin = sky_box(ev.wcs, ra, dec, size_pix=n, binsize=p["binsize"])
        image, header = make_counts_image(ev, xmin=xmin, ymin=ymin, shape=(n, n), binsize=p["binsize"])
        path = write_image(folder / f"{obsid}_img.fits", image, header)
        return {"image": str(path), "counts": int(image.sum()), "files": [str(path)]}

    img, _ = _step(store, run_id, item, "image", {"events": event_file, **p, "ra": ra, "dec": dec}, _image)

    def _bin() -> dict[str, Any]:
        paths = run_contbin(img["image"], out_dir=folder / "contbin", sn=p["sn"], smoothsn=p["smoothsn"],
                            constrainfill=p["constrainfill"], constrainval=p["constrainval"])
        return {k: str(v) for k, v in paths.items()} | {"files": [str(v) for v in paths.values()]}

    bins, _ = _step(store, run_id, item, "contbin", {"image": Path(img["image"]), **p}, _bin)

    def _outlines() -> dict[str, Any]:
        files = write_outline_regions(bins["binmap"], out_dir=folder / "regions", coords=("physical", "fk5"),
                                      per_bin=False)
        return {"files": [str(f) for f in files]}

    regs, _ = _step(store, run_id, item, "outlines", {"binmap": Path(bins["binmap"])}, _outlines)

    def _quicklook() -> dict[str, Any]:
        path = write_quicklook(folder / "quicklook.png", img["image"], bins["binmap"], title=f"{name}  ObsID {obsid}")
        return {"files": [str(path)]}

    _step(store, run_id, item, "quicklook", {"binmap": Path(bins["binmap"])}, _quicklook)

    from astropy.table import Table

    table = Table.read(bins["bins"])
    sn = np.asarray(table["sn"], dtype=float)
    fk5 = next((f for f in regs["files"] if f.endswith("fk5.reg")), regs["files"][-1])
    return (img["counts"], len(table), round(float(sn.min()), 1) if len(sn) else "-",
            round(float(np.median(sn)), 1) if len(sn) else "-", os.path.relpath(fk5, out))
