"""Time the whole cluster pipeline (steps 1-10 of ``xmine process``) on the standard simulated cluster.

The standard cluster: SIM-MERGER of the demo truth with three ACIS-I obsids at different pointings and
rolls, exposures set so each has about 300,000 events. Simulation is not timed. The pipeline runs twice
in one process: the first run includes numba's JIT compile (or cache load), the second, on a fresh work
folder, is the warm figure compared with the issue's target (<= 30 s; 100 clusters an hour).

CIAO is not available here, so there is no peer to time in the same run; the figure stands alone.

Measured here (2 cores, shared, 2026-11-23): 885,076 events, 412 bins at S/N 30; cold 15.6 s, warm 13.1 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from astropy.table import Table, vstack

from xmine import simulate
from xmine.config import load_config
from xmine.pipeline import ClusterSpec, process_cluster
from xmine.store import open_store


def standard_cluster(exposure_s: float) -> simulate.Truth:
    truth = simulate.demo_truth(seed=11)
    name = "SIM-MERGER"
    obs = truth.observations[truth.observations["cluster"] == name]
    third = Table(obs[:1], copy=True)
    third["obsid"] = 90203
    third["roll_deg"] = 210.0
    third["ra_pnt"] = third["ra_pnt"] + 0.02
    third["flare"] = False
    obs = vstack([obs, third])
    obs["exposure_s"] = exposure_s
    obs["instrument"] = "ACIS-I"
    return simulate.validate_truth(truth.clusters[truth.clusters["name"] == name],
                                   truth.point_sources[truth.point_sources["cluster"] == name], obs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposure-s", type=float, default=180_000.0, help="per obsid (default ~300k events each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        truth = standard_cluster(args.exposure_s)
        products = simulate.simulate_sky(truth, root / "archive", seed=11)
        n_events = [o.n_events for o in products.observations]
        catalog = Table.read(products.catalog_files["csc21/master_source.fits"])
        c = truth.clusters[0]
        spec = ClusterSpec(name=str(c["name"]), ra_deg=float(c["ra_deg"]), dec_deg=float(c["dec_deg"]),
                           obsids=tuple(int(o) for o in truth.observations["obsid"]))
        times = []
        for attempt in ("cold", "warm"):
            config = load_config(environ={}, overrides={
                "project": {"data_dir": str(root / "archive"), "work_dir": str(root / f"work-{attempt}"),
                            "store": str(root / f"{attempt}.duckdb")},
                "cache": {"offline": True}, "binning": {"sn": 30.0, "smoothsn": 30.0, "constrainfill": True,
                                                        "constrainval": 2.0}})
            with open_store(config.project.store) as store:
                t0 = time.perf_counter()
                result = process_cluster(spec, config=config, store=store, run_id=attempt, catalog=catalog)
                times.append(time.perf_counter() - t0)
        total = sum(n_events)
        print(f"pipeline_speed: 3 obsids, {total:,} events ({', '.join(f'{n:,}' for n in n_events)}), "
              f"{result.n_bins} bins at S/N 30")
        print(f"  cold (incl. JIT compile or cache load): {times[0]:.1f} s")
        print(f"  warm: {times[1]:.1f} s = {total / times[1]:,.0f} events/s; target <= 30 s "
              f"({'met' if times[1] <= 30 else 'NOT met'}); 100 clusters: {100 * times[1] / 60:.0f} min")


if __name__ == "__main__":
    main()
