"""Write the IR-like table the local DaCHS serves for cross-match tests (``ir/data/twomass_like.csv``).

An infrared point-source catalogue laid out like 2MASS PSC as IRSA serves it
(``designation, ra, dec, err_maj, err_min, err_ang, j_m, h_m, k_m``; errors are
1σ ellipse axes in arcsec, as 2MASS gives them), made from the simulated CSC
rows the server already holds (``../csc21/data/master_source.csv``):

* a counterpart for 80 % of the point-like X-ray sources, offset from the
  X-ray position by a 2-D Gaussian with per-axis σ = √(σ_x² + σ_ir²), where
  σ_x = ``err_ellipse_r0`` / 2.448 (the CSC 95 % radius as 1σ) and σ_ir the
  IR major axis; its K magnitude follows the X-ray flux (K = 14 − 2.5 log10(F / 1e-13) ± 0.5);
* unrelated field stars, 20 per arcmin², within 45″ of every X-ray source.

The truth (which IR row is the counterpart of which CSC source) is written to
``ir/truth.csv`` beside the data, not into the served table. Same seed, same bytes.

Run: ``python tests/servers/dachs/ir/make_ir.py`` (then ``up.sh`` re-imports ``ir/q``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 88
FIELD_DENSITY_PER_ARCMIN2 = 20.0
FIELD_RADIUS_ARCSEC = 45.0
COUNTERPART_FRACTION = 0.8
R95_PER_SIGMA = math.sqrt(-2.0 * math.log(0.05))


def _designation(ra: float, dec: float) -> str:
    h = ra / 15.0
    hh, mm = int(h), int((h % 1) * 60)
    ss = ((h * 60) % 1) * 60
    sign = "+" if dec >= 0 else "-"
    d = abs(dec)
    dd, dm = int(d), int((d % 1) * 60)
    ds = ((d * 60) % 1) * 60
    return f"{hh:02d}{mm:02d}{ss:05.2f}{sign}{dd:02d}{dm:02d}{ds:04.1f}".replace(".", "")


def _offset(ra: float, dec: float, dx_arcsec: float, dy_arcsec: float) -> tuple[float, float]:
    dec2 = dec + dy_arcsec / 3600.0
    ra2 = (ra + dx_arcsec / 3600.0 / math.cos(math.radians(dec))) % 360.0
    return ra2, dec2


def main() -> None:
    rng = np.random.default_rng(SEED)
    with (HERE.parent / "csc21" / "data" / "master_source.csv").open() as fh:
        xray = list(csv.DictReader(fh))
    rows: list[dict[str, object]] = []
    truth: list[tuple[str, str]] = []
    for src in xray:
        ra, dec = float(src["ra"]), float(src["dec"])
        extended = src["extent_flag"].lower() in {"true", "t", "1"}
        # field stars around every source
        n = rng.poisson(FIELD_DENSITY_PER_ARCMIN2 * math.pi * (FIELD_RADIUS_ARCSEC / 60.0) ** 2)
        r = FIELD_RADIUS_ARCSEC * np.sqrt(rng.uniform(0, 1, n))
        phi = rng.uniform(0, 2 * math.pi, n)
        for rr, pp in zip(r, phi, strict=True):
            fra, fdec = _offset(ra, dec, rr * math.cos(pp), rr * math.sin(pp))
            err = float(rng.uniform(0.06, 0.25))
            k = float(rng.uniform(11.0, 16.5))
            jk = float(rng.normal(0.7, 0.25))
            rows.append({"ra": fra, "dec": fdec, "err_maj": err, "k_m": k, "jk": jk})
        if extended or rng.uniform() > COUNTERPART_FRACTION:
            continue
        err = float(rng.uniform(0.06, 0.25))
        sig_x = float(src["err_ellipse_r0"]) / R95_PER_SIGMA
        sig = math.hypot(sig_x, err)
        cra, cdec = _offset(ra, dec, float(rng.normal(0, sig)), float(rng.normal(0, sig)))
        flux = float(src["flux_aper_b"] or "nan")
        k = 14.0 - 2.5 * math.log10(flux / 1e-13) + float(rng.normal(0, 0.5)) if flux > 0 else 15.0
        hm = float(src["hard_hm"] or "0")
        rows.append({"ra": cra, "dec": cdec, "err_maj": err, "k_m": k, "jk": 0.9 + 0.8 * hm + float(rng.normal(0, 0.1)),
                     "truth": src["name"]})
    out_rows = []
    seen: set[str] = set()
    for row in rows:
        ra, dec = float(row["ra"]), float(row["dec"])  # type: ignore[arg-type]
        name = "J" + _designation(ra, dec)
        while name in seen:
            name += "a"
        seen.add(name)
        err_maj = float(row["err_maj"])  # type: ignore[arg-type]
        k = float(row["k_m"])  # type: ignore[arg-type]
        jk = float(row["jk"])  # type: ignore[arg-type]
        out_rows.append([name, f"{ra:.7f}", f"{dec:.7f}", f"{err_maj:.3f}", f"{err_maj * 0.8:.3f}", "0",
                         f"{k + jk:.3f}", f"{k + 0.35 * jk:.3f}", f"{k:.3f}"])
        if "truth" in row:
            truth.append((str(row["truth"]), name))
    (HERE / "data").mkdir(exist_ok=True)
    with (HERE / "data" / "twomass_like.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["designation", "ra", "dec", "err_maj", "err_min", "err_ang", "j_m", "h_m", "k_m"])
        w.writerows(out_rows)
    with (HERE / "truth.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["csc_name", "designation"])
        w.writerows(sorted(truth))


if __name__ == "__main__":
    main()
