"""Kill ``xmine run`` with SIGKILL at random moments, resume it each time, and compare with a clean run.

A sample of small simulated clusters (:func:`xmine.simulate.population.make_population`, default 20 clusters,
2-3 obsids each, spectra on) is run twice from the same simulated archive (``project.data_dir`` is only read):

1. a clean reference run, ``xmine run`` to completion, into ``ref/`` (its own work folder and store);
2. the same ``xmine run`` into ``killed/`` (another work folder, so no product of the clean run is reused), killed
   with SIGKILL at a random moment (seeded) ``--kills`` times, resumed with the same ``--run-id`` after each kill,
   then run to completion.

Every results table of the two runs is compared by its key (cluster, obsid, bin, annulus), without run ids,
timestamps, timings and the two runs' own folders: rows lost, duplicated, extra and differing are counted per
table. ``--kill group`` (default) kills the run's whole process group (the driver and its worker processes, as an
out-of-memory killer or a lost node would); ``--kill driver`` kills only the driver, leaving its workers orphaned.

Run: ``python benchmarks/kill_resume.py [--n 20] [--kills 10] [--seed 7] [--executor processes]``.

Measured here (2 cores, shared, 2026-11-23): clean run 40.0 s; 10 kills in 10 attempts at 3.2-9.3 s, 0 to 17
clusters recorded before each; the final resume finished the rest. clusters 20, observations 52, regions 216,
region_spectra 789, profiles 400 rows: lost 0, duplicated 0, extra 0, differing 0 in every table (also with
``--kill driver``, after which no orphaned worker process was left).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xmine.results import RESULT_TABLES
from xmine.simulate.population import make_population
from xmine.store import open_store

RUN_ID = "kill-resume"
KEYS = {"clusters": ["cluster"], "observations": ["cluster", "obsid"], "regions": ["cluster", "bin_id"],
        "region_spectra": ["cluster", "bin_id", "obsid"], "region_fits": ["cluster", "bin_id"],
        "profiles": ["cluster", "annulus"]}
VOLATILE = {"run_id", "recorded_at", "seconds"}
SETTINGS = """
[cache]
offline = true

[binning]
sn = 10.0
smoothsn = 10.0

[spectra]
responses_dir = "simulator"

[process]
merge_size_arcmin = 4.0
crop_radius_arcmin = 1.5
binsize = 4.0
bg_inner_arcmin = 2.0
"""


def write_config(folder: Path, data_dir: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "xmine.toml"
    path.write_text(f'[project]\ndata_dir = "{data_dir}"\nwork_dir = "{folder / "work"}"\n'
                    f'store = "{folder / "xmine.duckdb"}"\n' + SETTINGS)
    return path


def run_command(config: Path, sample: Path, catalog: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "xmine.cli", "--config", str(config), "--quiet", "run", str(sample), "--catalog",
            str(catalog), "--run-id", RUN_ID, "--executor", args.executor, "--workers", str(args.workers)]


def recorded(store: Path) -> dict[str, int]:
    """Clusters recorded so far, by status."""
    if not store.exists():
        return {}
    with open_store(store, read_only=True, wait_s=60.0) as st:
        return dict(st.con.execute("SELECT status, count(*) FROM clusters WHERE run_id = $r GROUP BY status",
                                   {"r": RUN_ID}).fetchall())


def table_rows(folder: Path, data_dir: Path) -> dict[str, dict[tuple, list[tuple]]]:
    """{table: {key: [row, ...]}} of the run, volatile columns dropped and the run's own folders blanked."""
    work = str(folder / "work")

    def clean(v: object) -> object:
        return v.replace(work, "<work>").replace(str(data_dir), "<data>") if isinstance(v, str) else v

    out = {}
    with open_store(folder / "xmine.duckdb", read_only=True, wait_s=60.0) as st:
        for table in RESULT_TABLES:
            cols = [r[0] for r in st.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $t ORDER BY ordinal_position",
                {"t": table}).fetchall() if r[0] not in VOLATILE]
            rows = st.con.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE run_id = $r",
                                  {"r": RUN_ID}).fetchall()
            by_key = collections.defaultdict(list)
            key_idx = [cols.index(k) for k in KEYS[table]]
            for r in rows:
                by_key[tuple(r[i] for i in key_idx)].append(tuple(clean(v) for v in r))
            out[table] = by_key
    return out


def compare(ref: dict, got: dict) -> dict[str, dict[str, int]]:
    counts = {}
    for table in RESULT_TABLES:
        a, b = ref[table], got[table]
        counts[table] = {
            "reference rows": sum(len(v) for v in a.values()),
            "rows": sum(len(v) for v in b.values()),
            "lost": sum(1 for k in a if k not in b),
            "duplicated": sum(len(v) - 1 for v in b.values() if len(v) > 1),
            "extra": sum(1 for k in b if k not in a),
            "differing": sum(1 for k in a if k in b and sorted(map(repr, a[k])) != sorted(map(repr, b[k]))),
        }
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="clusters (default 20)")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs mid-run, then run to the end (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sample and of the kill moments")
    parser.add_argument("--executor", default="processes", choices=["serial", "processes", "dask"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill", choices=["group", "driver"], default="group",
                        help="kill the run's process group (default) or only the driver")
    parser.add_argument("--out", type=Path, help="keep everything here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        t0 = time.perf_counter()
        made = make_population(root / "sim", args.n, seed=args.seed, cluster_counts_per_obsid=800.0,
                               point_sources_per_field=1)
        data_dir = root / "sim" / "archive"
        n_obs = len(made.truth.observations)
        print(f"simulated {args.n} clusters, {n_obs} obsids in {time.perf_counter() - t0:.1f} s")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores, shared)")

        ref_cfg = write_config(root / "ref", data_dir)
        t0 = time.perf_counter()
        subprocess.run(run_command(ref_cfg, made.sample, made.catalog, args), check=True)
        t_ref = time.perf_counter() - t0
        print(f"clean run: {t_ref:.1f} s, recorded {recorded(root / 'ref' / 'xmine.duckdb')}")

        kill_cfg = write_config(root / "killed", data_dir)
        store = root / "killed" / "xmine.duckdb"
        rng = np.random.default_rng(args.seed)
        cmd = run_command(kill_cfg, made.sample, made.catalog, args)
        kills, attempt = 0, 0
        while kills < args.kills and attempt < 4 * args.kills:
            attempt += 1
            # the clean run's time includes several seconds of start-up (imports, spawning workers)
            delay = float(rng.uniform(0.08, 0.25) * t_ref)
            proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=delay)
                what = f"finished before the kill (exit {proc.returncode})"
            except subprocess.TimeoutExpired:
                if args.kill == "group":
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                what = f"kill {kills}"
            if args.kill == "group":  # nothing of the run may survive into the next attempt
                time.sleep(0.2)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            print(f"attempt {attempt:2d}: SIGKILL at {delay:5.1f} s: {what}; recorded so far {recorded(store)}")
            if proc.returncode == 0:
                break
        print(f"{kills} kills in {attempt} attempts (wanted {args.kills})")
        t0 = time.perf_counter()
        final = subprocess.run(cmd, check=False)
        print(f"final resume: exit {final.returncode} in {time.perf_counter() - t0:.1f} s, recorded {recorded(store)}")
        if args.kill == "driver":
            time.sleep(5.0)  # orphaned workers of killed drivers may still be finishing a cluster

        counts = compare(table_rows(root / "ref", data_dir), table_rows(root / "killed", data_dir))
        bad = 0
        for table, c in counts.items():
            bad += c["lost"] + c["duplicated"] + c["extra"] + c["differing"]
            print(f"{table:15s} {c['rows']:5d} rows (reference {c['reference rows']:5d}): lost {c['lost']}, "
                  f"duplicated {c['duplicated']}, extra {c['extra']}, differing {c['differing']}")
        print("RESULT: the resumed run equals the clean run" if bad == 0 else f"RESULT: {bad} rows differ")
        return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
