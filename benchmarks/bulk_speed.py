"""Time a bulk run of N standard simulated clusters end to end: serial against a 2-worker Dask LocalCluster.

The sample: :func:`xmine.simulate.population.population_truth` (N clusters, half cool-core, 3 ACIS-I obsids each,
point sources, no flares), with each observation's exposure set so it holds about 300,000 events (a short pilot
simulation measures each observation's total event rate, cluster + sources + background; the exposure is then
300,000 / rate). The simulation is timed separately. Then ``run_sample`` runs the whole chain (flare cleaning,
merge, exposure, masks, background, crop, contour binning at S/N 30, outlines, profile, measurement, region
spectra; no fit) twice from the same archive into separate work folders and stores:

* ``serial``: one cluster after another in this process (its first cluster pays numba's compile or cache load);
* ``dask``: a ``LocalCluster`` of 2 worker processes with one thread each (each worker pays it once).

Printed: seconds per cluster, the dask/serial speed ratio, the extrapolation to 100 clusters, and the recording
overhead (``RunSummary.record_seconds``: the driver's time opening the store and recording each cluster's
transaction, over the run's wall time). The machine is 2 cores shared with other jobs: the load average is printed
before and after each phase, and the figures are only as good as the machine was idle.

Run: ``python benchmarks/bulk_speed.py [--n 100] [--events 300000] [--seed 1]``.

Measured here (2 cores shared with ~6 other jobs, load average 1.1-3.6, 2026-11-23), ``--n 6``: simulate 15.0 s
for 18 obsids (median 299,158 events each); serial 267.3 s = 44.5 s/cluster (2778 bins at S/N 30), recording
1.45 s = 0.54 %; dask LocalCluster of 2 workers 186.9 s = 31.2 s/cluster, recording 2.11 s = 1.13 %; speed-up
1.43x. Extrapolated to 100 clusters: serial 74 min, dask 52 min (the issue's target: <= 60 min).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from xmine.config import load_config
from xmine.runner import load_sample, run_sample
from xmine.simulate import simulate_sky
from xmine.simulate.population import population_sample, population_truth
from xmine.simulate.truth import validate_truth
from xmine.store import atomic_write, open_store

PILOT_EXPOSURE_S = 5000.0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def standard_sample(root: Path, n: int, events: float, seed: int) -> tuple[Path, Path, list[int]]:
    """Simulate N clusters of 3 obsids with about ``events`` events each; return (sample, catalog, events)."""
    truth = population_truth(n, seed=seed, obsids_per_cluster=(3, 3), point_sources_per_field=3)
    obs = truth.observations.copy()
    obs["exposure_s"] = PILOT_EXPOSURE_S
    pilot = simulate_sky(validate_truth(truth.clusters, truth.point_sources, obs), root / "pilot", seed=seed)
    rate = {o.obsid: o.n_events / o.exposure_s for o in pilot.observations}
    obs["exposure_s"] = [events / rate[int(o)] for o in obs["obsid"]]
    truth = validate_truth(truth.clusters, truth.point_sources, obs)
    sky = simulate_sky(truth, root / "archive", seed=seed)
    sample = root / "sample.csv"
    with atomic_write(sample) as tmp:
        population_sample(truth).write(tmp, format="ascii.csv")
    return sample, sky.catalog_files["csc21/master_source.fits"], [o.n_events for o in sky.observations]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="clusters (default 100)")
    parser.add_argument("--events", type=float, default=300_000.0, help="events per obsid (default 300,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["serial", "dask"], help="time one executor only")
    parser.add_argument("--out", type=Path, help="keep everything here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        print(f"bulk_speed: {args.n} clusters x 3 obsids x ~{args.events:,.0f} events; load {load()} (2 cores)")
        t0 = time.perf_counter()
        sample, catalog_file, n_events = standard_sample(root, args.n, args.events, args.seed)
        t_sim = time.perf_counter() - t0
        print(f"simulate: {t_sim:.1f} s for {len(n_events)} obsids, events per obsid median {np.median(n_events):,.0f}"
              f" (min {min(n_events):,}, max {max(n_events):,}); load {load()}")
        clusters, _ = load_sample(sample)
        catalog = Table.read(catalog_file)
        seconds = {}
        for how in ("serial", "dask"):
            if args.only and how != args.only:
                continue
            config = load_config(environ={}, overrides={
                "project": {"data_dir": str(root / "archive"), "work_dir": str(root / f"work-{how}"),
                            "store": str(root / f"{how}.duckdb")},
                "cache": {"offline": True},
                "binning": {"sn": 30.0, "smoothsn": 30.0, "constrainfill": True, "constrainval": 2.0},
                "spectra": {"responses_dir": "simulator"}})
            t0 = time.perf_counter()
            summary = run_sample(clusters, config=config, catalog=catalog, run_id=f"speed-{how}", executor=how,
                                 workers=2)
            wall = time.perf_counter() - t0
            seconds[how] = wall
            bins = sum(int(r[4]) for r in summary.rows if r[1] == "done")
            per = sorted(float(r[6]) for r in summary.rows)
            print(f"{how:6s}: {wall:7.1f} s = {wall / args.n:5.1f} s/cluster, {summary.done} done, {summary.failed} "
                  f"failed, {bins} bins; recording {summary.record_seconds:.2f} s = "
                  f"{100 * summary.record_seconds / wall:.2f} % of the run; 100 clusters: "
                  f"{100 * wall / args.n / 60:.0f} min; load {load()}")
            print(f"        one cluster in its worker: median {np.median(per):.1f} s, first-to-last {per[0]:.1f}-"
                  f"{per[-1]:.1f} s (the slowest includes numba's compile or cache load)")
            with open_store(config.project.store, read_only=True) as st:
                steps = st.con.execute("SELECT step, sum(seconds) FROM steps WHERE run_id = $r GROUP BY step "
                                       "ORDER BY 2 DESC", {"r": summary.run_id}).fetchall()
            total = sum(t or 0.0 for _, t in steps) or 1.0
            print("        steps, share of the workers' time: "
                  + ", ".join(f"{name} {100 * (t or 0.0) / total:.0f} %" for name, t in steps[:6]))
            for row in summary.rows:
                if row[1] != "done":
                    print(f"  failed: {row[0]}: {row[-1]}")
        if len(seconds) == 2:
            print(f"dask (2 workers) / serial speed-up: {seconds['serial'] / seconds['dask']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
