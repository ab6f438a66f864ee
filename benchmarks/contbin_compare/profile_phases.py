"""Time each phase of ``xmine.contbin.make_contour_bins`` on one benchmark case.

Run ``python benchmarks/contbin_compare/profile_phases.py [--case NAME] [--repeats N]``
(``NUMBA_NUM_THREADS=1`` for the one-thread figures).  The phases are called
the way ``make_contour_bins`` calls them (private functions, so this script
follows the module): checks and exposure ratio, prefix planes, accumulative
smoothing, seed order (contbin's introsort), bin growth, scrubbing and the bin
table.  Each is timed warm (a full call first compiles or loads every kernel);
the medians of ``--repeats`` runs are printed as wall and CPU seconds, with
the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench


def _phases(C, inp: dict, opts: dict) -> dict[str, tuple[float, float]]:
    """One pass over the phases; returns {phase: (wall s, cpu s)}."""
    out: dict[str, tuple[float, float]] = {}
    clock = [time.perf_counter(), time.process_time()]

    def lap(name: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        out[name] = (w - clock[0], c - clock[1])
        clock[:] = [time.perf_counter(), time.process_time()]

    cnt32 = C._check_counts("counts", inp["counts"])
    shape = cnt32.shape
    valid = np.ones(shape, bool)
    exp_arr = None if inp.get("expmap") is None else inp["expmap"].astype(np.float32)
    if exp_arr is not None:
        valid &= np.isfinite(exp_arr) & (exp_arr >= 1)
    bgexp = None if inp.get("bgexpmap") is None else inp["bgexpmap"].astype(np.float32)
    bg32 = None if inp.get("bg") is None else C._check_counts("bg", inp["bg"])
    er32 = None
    if bg32 is not None:
        er32 = C._exposure_ratio(shape, exp_arr, bgexp, inp.get("exposure_s"), inp.get("bg_exposure_s"))
    lap("checks, exposure ratio")
    P, qmin = C._smoothing_planes(cnt32, valid, bg32, er32)
    lap("prefix planes")
    sm64, _ = C._smooth_kernel(P, valid, float(opts["smoothsn"]), qmin)
    del P
    lap("accumulative smoothing")
    s32 = sm64.astype(np.float32)
    s32[~valid] = 0.0
    order, rank = C.pixel_ranks(s32, cnt32, valid, like_contbin=True)
    lap("seed order (introsort)")
    ny, nx = shape
    areas = C._areas_table(nx, ny)
    has_bg = bg32 is not None
    dummy = np.zeros(1, np.float32)
    bgvf, erf = (bg32.ravel(), er32.ravel()) if has_bg else (dummy, dummy)
    thr2 = float(opts["sn"]) ** 2
    cval2 = float(opts["constrainval"]) ** 2
    s = s32.ravel()
    binmap, st, arrival = C._grow_bins(s, order, rank, valid.ravel(), nx, cnt32.ravel(), bgvf, erf, has_bg, thr2,
                                       bool(opts["constrainfill"]), cval2, areas, True)
    lap("bin growth")
    stuck = np.zeros(st.shape[0], np.bool_)
    C._scrub(st, binmap, s, rank, nx, cnt32.ravel(), bgvf, erf, has_bg, thr2, bool(opts["constrainfill"]), cval2,
             areas, stuck, arrival, True)
    lap("scrubbing")
    keep = st[:, 0] > 0
    new = np.full(st.shape[0] + 1, -1, np.int32)
    new[:-1][keep] = np.arange(int(keep.sum()), dtype=np.int32)
    C.bin_statistics(new[binmap].reshape(shape), cnt32, bg=bg32, expmap=exp_arr, bgexpmap=bgexp,
                     exposure_s=inp.get("exposure_s"), bg_exposure_s=inp.get("bg_exposure_s"))
    lap("bin table")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="sim1024_bg_exp_sn30", help="a case name of run.py")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    import numba

    import xmine.contbin as C  # noqa: N812

    cases = bench.build_cases(False, [args.case])
    if not cases:
        raise SystemExit(f"no case {args.case!r}; see run.py's case names")
    case = cases[0]
    inp = bench._load(case.files)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    C.make_contour_bins(**inp, **case.opts)
    first = time.perf_counter() - t0
    _phases(C, inp, case.opts)  # compiles the private kernels for these argument types, if needed
    totals, runs = [], []
    for _ in range(args.repeats):
        w, c = time.perf_counter(), time.process_time()
        C.make_contour_bins(**inp, **case.opts)
        totals.append((time.perf_counter() - w, time.process_time() - c))
        runs.append(_phases(C, inp, case.opts))
    print(f"{case.name}: {numba.get_num_threads()} numba threads, load average {load0:.2f} -> "
          f"{os.getloadavg()[0]:.2f}; first call {first:.2f} s (kernels compiled or loaded from numba's cache)")
    print(f"{'phase':26s} {'wall s':>8s} {'cpu s':>8s}   (medians of {args.repeats})")
    for name in runs[0]:
        print(f"{name:26s} {np.median([r[name][0] for r in runs]):8.3f} {np.median([r[name][1] for r in runs]):8.3f}")
    print(f"{'make_contour_bins, total':26s} {np.median([t[0] for t in totals]):8.3f} "
          f"{np.median([t[1] for t in totals]):8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
