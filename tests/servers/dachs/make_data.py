"""Write the local DaCHS server's CSV files from xmine's simulator.

The sky: the three demo clusters plus five more fields chosen to exercise the
query layer — one straddling RA = 0/360 (``SIM-RAZERO``), one 1.3° from the
north celestial pole (``SIM-POLAR``) and three ordinary ones — each with 1–2
Chandra ACIS observations and ~40 point sources bright enough for both
catalogues, so CSC × 4XMM counterparts exist. Rows are generated (never real
data) and the same seed gives the same bytes.

Run with the project's Python (``python tests/servers/dachs/make_data.py``);
``up.sh`` runs it when a data file is missing. Writes::

    csc21/data/master_source.csv, master_stack_assoc.csv, stack_observation_assoc.csv,
               stack_source.csv, observation_source.csv
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


#: counts per (erg cm-2 s-1 x s): the ECF used to turn a flux into counts for observation_source
ECF_ERG_CM2 = 1.0e-11


def _level_tables(cats) -> tuple[Table, Table]:
    """stack_source and observation_source rows derived from the master rows and the associations.

    Positions and fluxes are the master source's; ``theta`` (off-axis angle) comes from each
    observation's pointing and ``src_cnts_aper_b`` from the flux, the exposure and a fixed ECF,
    dimmed by 1 - 0.035 theta (vignetting). A subset of the real tables' columns.
    """
    ms = {str(r["name"]): r for r in cats.csc_master_source}
    obs = {int(r["obsid"]): r for r in cats.csc_observations}
    st_rows, ob_rows = [], []
    for a in cats.csc_master_stack_assoc:
        m = ms[str(a["name"])]
        st_rows.append((str(a["detect_stack_id"]), int(a["region_id"]), float(m["ra"]), float(m["dec"]),
                        float(m["flux_aper_b"]), float(m["significance"])))
    name_of = {(str(a["detect_stack_id"]), int(a["region_id"])): str(a["name"]) for a in cats.csc_master_stack_assoc}
    for b in cats.csc_stack_observation_assoc:
        m = ms[name_of[(str(b["detect_stack_id"]), int(b["region_id"]))]]
        o = obs[int(b["obsid"])]
        c_ra, c_dec = math.radians(float(m["ra"])), math.radians(float(m["dec"]))
        p_ra, p_dec = math.radians(float(o["ra_pnt"])), math.radians(float(o["dec_pnt"]))
        cosd = math.sin(c_dec) * math.sin(p_dec) + math.cos(c_dec) * math.cos(p_dec) * math.cos(c_ra - p_ra)
        theta = math.degrees(math.acos(min(1.0, max(-1.0, cosd)))) * 60.0
        counts = float(m["flux_aper_b"]) * float(o["exposure_s"]) / ECF_ERG_CM2 * max(0.3, 1 - 0.035 * theta)
        ob_rows.append((int(b["obsid"]), int(b["obi"]), int(b["region_id"]), float(m["ra"]), float(m["dec"]),
                        theta, float(m["flux_aper_b"]), round(counts, 2)))
    stack = Table(rows=st_rows, names=["detect_stack_id", "region_id", "ra", "dec", "flux_aper_b", "significance"])
    observation = Table(rows=ob_rows, names=["obsid", "obi", "region_id", "ra", "dec", "theta", "flux_aper_b",
                                             "src_cnts_aper_b"])
    return stack, observation


def write_all(out: Path = HERE, seed: int = SEED) -> list[Path]:
    """Write every CSV below ``out`` and return their paths."""
    cats = make_catalogs(make_truth(seed), seed=seed)
    stack, observation = _level_tables(cats)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_catalogs(cats, tmp)
        files["csc21/stack_source.csv"] = Path(tmp) / "stack_source.csv"
        stack.write(files["csc21/stack_source.csv"], format="ascii.csv")
        files["csc21/observation_source.csv"] = Path(tmp) / "observation_source.csv"
        observation.write(files["csc21/observation_source.csv"], format="ascii.csv")
        wanted = {"csc21/master_source.csv": "csc21/data/master_source.csv",
                  "csc21/master_stack_assoc.csv": "csc21/data/master_stack_assoc.csv",
                  "csc21/stack_observation_assoc.csv": "csc21/data/stack_observation_assoc.csv",
                  "csc21/stack_source.csv": "csc21/data/stack_source.csv",
                  "csc21/observation_source.csv": "csc21/data/observation_source.csv",
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
             "csc21/data/stack_observation_assoc.csv", "csc21/data/stack_source.csv",
             "csc21/data/observation_source.csv", "chandra/data/observations.csv",
             "xmm/data/epic_source_cat.csv"]
    if args.only_missing and all((args.out / n).exists() for n in names):
        return
    for p in write_all(args.out):
        print(p)


if __name__ == "__main__":
    main()
