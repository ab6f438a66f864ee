"""Steps 2-4 of the cluster pipeline on one simulated 1-million-event ACIS-I obsid, against plain numpy.

xmine: read (streaming, chunked) -> filter (energy, grade, status) -> source-free light curve (80-frame bins)
-> deflare (lc_clean) -> apply GTIs -> counts image -> exposure map (chip geometry and dither fitted from
the events, dither-smoothed footprints, per-CCD GTI live time).

numpy baseline, in the same run: astropy ``fits.open`` + column reads, the same energy cut,
``numpy.histogram`` light curve and ``numpy.histogram2d`` image (no cleaning, no exposure map).

Prints the seconds per step, events/s of both, their ratio and whether xmine's steps 2-4 fit the 15 s target.

    python benchmarks/events_speed.py [--events 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from xmine.events import filter_events, read_events
from xmine.exposure import fit_chip_geometry, make_exposure_map
from xmine.gti import apply_gti, deflare, make_light_curve, source_free
from xmine.images import make_counts_image
from xmine.simulate import demo_truth, simulate_observation, write_event_file, write_event_truth

COLUMNS = ("time", "ccd_id", "chipx", "chipy", "x", "y", "energy", "grade", "status")
TARGET_S = 15.0


def make_input(folder: Path, n_target: int) -> tuple[Path, Path]:
    truth = demo_truth()
    obs = truth.observations
    i = list(obs["obsid"]).index(90201)
    scale = n_target / 1.0e6
    obs["sky_bg_cps_arcmin2"][i] = 0.05 * scale
    obs["particle_bg_cps_arcmin2"][i] = 0.015 * scale
    sim = simulate_observation(truth, 90201, seed=1)
    return (write_event_file(sim, folder / "acisf90201N001_evt2.fits"),
            write_event_truth(sim, folder / "acisf90201N001_truth.fits"))


def run_xmine(evt: Path, circles: list[tuple[float, float, float]]) -> tuple[dict[str, float], int, dict]:
    t = {}
    t0 = time.perf_counter()
    raw = read_events(evt, columns=COLUMNS)
    t["read"] = time.perf_counter() - t0
    n = len(raw)
    t0 = time.perf_counter()
    ev = filter_events(raw)
    t["filter"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lc = make_light_curve(ev, keep=source_free(ev, circles=circles))
    t["light curve"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = deflare(lc)
    clean = apply_gti(ev, res.gti)
    t["deflare + GTI"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    xmin, ymin, size, binsize = 3048.5, 3048.5, 512, 4.0
    image, header = make_counts_image(clean, xmin=xmin, ymin=ymin, shape=(size, size), binsize=binsize)
    t["image"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    geo = fit_chip_geometry(raw)
    emap = make_exposure_map(raw, header, image.shape, geometry=geo, gti=res.gti)
    t["exposure map"] = time.perf_counter() - t0
    info = {"kept": len(clean), "clipped_ks": res.lost_exposure_s / 1e3, "image_counts": int(image.sum()),
            "exposure_max_s": float(emap.data.max()), "fit_rms_pix": geo.rms_pix}
    return t, n, info


def run_numpy(evt: Path) -> tuple[dict[str, float], int]:
    t = {}
    t0 = time.perf_counter()
    with fits.open(evt, memmap=True) as hdul:
        d = hdul["EVENTS"].data
        cols = {c: np.array(d[c]) for c in ("time", "x", "y", "energy")}
    t["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    keep = (cols["energy"] >= 500) & (cols["energy"] <= 7000)
    x, y, tt = cols["x"][keep], cols["y"][keep], cols["time"][keep]
    t["filter"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    edges = np.arange(tt.min(), tt.max() + 259.28, 259.28)
    np.histogram(tt, bins=edges)
    t["light curve"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    e = 3048.5 + 4.0 * np.arange(513)
    np.histogram2d(y, x, bins=[e, e])
    t["image"] = time.perf_counter() - t0
    return t, len(cols["time"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="approximate number of events")
    p.add_argument("--keep", type=Path, help="keep the simulated files in this folder")
    args = p.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="xmine_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    evt, tru = make_input(folder, args.events)
    print(f"simulated {evt.name} in {time.perf_counter() - t0:.1f} s ({os.path.getsize(evt) / 1e6:.0f} MB)")
    src = fits.getdata(tru, "SOURCES")
    circles = [(float(r["x"]), float(r["y"]), 500.0 if r["kind"] == "cluster" else 20.0) for r in src]
    # compile the numba kernels once (cached on disk afterwards), as any second run would find them
    t0 = time.perf_counter()
    small = read_events(evt, columns=COLUMNS)
    hdr = make_counts_image(small, xmin=4000.5, ymin=4000.5, shape=(4, 4), binsize=4.0)[1]
    make_exposure_map(small, hdr, (4, 4))
    print(f"warm-up (numba compile or cache load) {time.perf_counter() - t0:.1f} s")
    tx, n, info = run_xmine(evt, circles)
    tn, n2 = run_numpy(evt)
    total_x, total_n = sum(tx.values()), sum(tn.values())
    print(f"\n{n:,} events, {os.cpu_count()} CPUs")
    print(f"{'step':<16}{'xmine s':>10}{'numpy s':>10}")
    for step in tx:
        print(f"{step:<16}{tx[step]:>10.2f}{tn.get(step, float('nan')):>10.2f}")
    print(f"{'total':<16}{total_x:>10.2f}{total_n:>10.2f}")
    rate_x, rate_n = n / total_x, n2 / total_n
    print(f"\nxmine steps 2-4: {rate_x:,.0f} events/s; numpy baseline (no cleaning, no exposure map): "
          f"{rate_n:,.0f} events/s; ratio xmine/numpy = {rate_x / rate_n:.2f}")
    same = {k for k in tn if k in tx}
    sx, sn = sum(tx[k] for k in same), sum(tn[k] for k in same)
    print(f"like-for-like steps ({', '.join(sorted(same))}): xmine {n / sx:,.0f} ev/s, numpy {n2 / sn:,.0f} ev/s, "
          f"ratio {sn / sx:.2f}")
    print(f"kept {info['kept']:,} events, {info['clipped_ks']:.2f} ks clipped, image {info['image_counts']:,} counts, "
          f"exposure max {info['exposure_max_s']:.0f} s, chip fit rms {info['fit_rms_pix']:.3f} px")
    print(f"target <= {TARGET_S:.0f} s: {'met' if total_x <= TARGET_S else 'MISSED'} ({total_x:.1f} s)")


if __name__ == "__main__":
    main()
