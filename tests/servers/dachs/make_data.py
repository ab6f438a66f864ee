"""Write the local DaCHS server's CSV files from xmine's simulator.

The sky: the three demo clusters plus five more fields chosen to exercise the
query layer — one straddling RA = 0/360 (``SIM-RAZERO``), one 1.3° from the
north celestial pole (``SIM-POLAR``) and three ordinary ones — each with 1–2
Chandra ACIS observations and ~40 point sources bright enough for both
catalogues, so CSC × 4XMM counterparts exist. Rows are generated (never real
data) and the same seed gives the same bytes.

Run with the project's Python (``python tests/servers/dachs/make_data.py``);
``up.sh`` runs it when a data file is missing. Writes::

    csc21/data/master_source.csv, master_stack_assoc.csv, stack_observation_assoc.csv
    chandra/data/observations.csv
    xmm/data/epic_source_cat.csv
    truth_match.csv      (catalogue row -> truth source, for cross-match tests)
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

from xmine.simulate import demo_truth, make_catalogs, validate_truth, write_catalogs

HERE = Path(__file__).resolve().parent
SEED = 2026

#: extra fields: name, ra, dec, z, rate, rc, instrument plan [(obsid, inst, exposure, roll, (dE, dN))]
EXTRA_FIELDS = [
    ("SIM-RAZERO", 0.05, -12.3, 0.09, 2.0, 35.0, [(90401, "ACIS-I", 40000.0, 30.0, (0.4, 0.3)),
                                                  (90402, "ACIS-S", 25000.0, 200.0, (-1.0, 0.5))]),
    ("SIM-POLAR", 75.0, 88.7, 0.15, 1.5, 25.0, [(90501, "ACIS-I", 35000.0, 100.0, (0.3, -0.2))]),
    ("SIM-A", 207.22, 26.59, 0.06, 3.0, 50.0, [(90601, "ACIS-I", 30000.0, 60.0, (0.2, 0.2))]),
    ("SIM-B", 227.73, 5.74, 0.08, 2.5, 40.0, [(90701, "ACIS-S", 30000.0, 250.0, (-0.3, 0.4))]),
    ("SIM-C", 320.5, -45.1, 0.3, 1.0, 20.0, [(90801, "ACIS-I", 50000.0, 10.0, (0.1, 0.1))]),
]
N_POINTS = 40


def make_truth(seed: int = SEED):
    """Return the server's truth: the demo sky plus :data:`EXTRA_FIELDS`."""
    from xmine.simulate.truth import _offset_deg

    demo = demo_truth(seed)
    rng = np.random.default_rng(seed + 1)
    crow, orow, prow = [], [], []
    for k, (name, ra, dec, z, rate, rc, plan) in enumerate(EXTRA_FIELDS):
        crow.append({"name": name, "ra_deg": ra, "dec_deg": dec, "z": z, "model": "beta", "rc_arcsec": rc,
                     "beta": 0.65, "rate_cps": rate, "kt_kev": 5.0})
        for j, (obsid, inst, expo, roll, (de, dn)) in enumerate(plan):
            pra, pdec = _offset_deg(ra, dec, de, dn)
            orow.append({"obsid": obsid, "cluster": name, "ra_pnt": pra % 360.0, "dec_pnt": pdec, "roll_deg": roll,
                         "instrument": inst, "exposure_s": expo, "flare": False,
                         "tstart": 7.0e8 + 3.0e6 * k + 4.0e5 * j})
        for i in range(N_POINTS):
            r_arcmin = 8.0 * math.sqrt(rng.uniform(0.03, 1.0))
            ang = rng.uniform(0, 2 * math.pi)
            sra, sdec = _offset_deg(ra, dec, r_arcmin * math.sin(ang), r_arcmin * math.cos(ang))
            prow.append({"name": f"{name}-P{i + 1:02d}", "ra_deg": sra % 360.0, "dec_deg": sdec,
                         "rate_cps": float(10 ** rng.uniform(-2.7, -1.3)),
                         "gamma": float(np.clip(rng.normal(1.7, 0.3), 0.8, 3.0)), "var_kind": "none",
                         "var_amp": 0.0, "var_period_s": 5000.0, "cluster": name})
    clusters = vstack([demo.clusters, Table(rows=crow)], metadata_conflicts="silent")
    points = vstack([demo.point_sources, Table(rows=prow)], metadata_conflicts="silent")
    observations = vstack([demo.observations, Table(rows=orow)], metadata_conflicts="silent")
    return validate_truth(clusters, points, observations)


def write_all(out: Path = HERE, seed: int = SEED) -> list[Path]:
    """Write every CSV below ``out`` and return their paths."""
    cats = make_catalogs(make_truth(seed), seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_catalogs(cats, tmp)
        wanted = {"csc21/master_source.csv": "csc21/data/master_source.csv",
                  "csc21/master_stack_assoc.csv": "csc21/data/master_stack_assoc.csv",
                  "csc21/stack_observation_assoc.csv": "csc21/data/stack_observation_assoc.csv",
                  "csc21/observations.csv": "chandra/data/observations.csv",
                  "xmm/epic_source_cat.csv": "xmm/data/epic_source_cat.csv",
                  "truth_match.csv": "truth_match.csv"}
        written = []
        for src, dst in wanted.items():
            target = out / dst
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files[src], target)
            written.append(target)
    return written


def main() -> None:
    """Write the CSVs (``--only-missing``: only if one is absent)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only-missing", action="store_true", help="do nothing if every file exists")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    names = ["csc21/data/master_source.csv", "csc21/data/master_stack_assoc.csv",
             "csc21/data/stack_observation_assoc.csv", "chandra/data/observations.csv",
             "xmm/data/epic_source_cat.csv"]
    if args.only_missing and all((args.out / n).exists() for n in names):
        return
    for p in write_all(args.out):
        print(p)


if __name__ == "__main__":
    main()
