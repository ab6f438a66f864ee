"""Compare xmine's contour binning with Jeremy Sanders' contbin on the same images.

Run ``python benchmarks/contbin_compare/run.py [--quick] [--cases NAME ...]``;
see README.md for building contbin (outside the repository).  contbin's outputs
are cached under ``~/.cache/xmine-bench/contbin/<hash>/`` keyed by the input
files' bytes and the options, so only the first run of a case pays contbin's
time (about 10 minutes for the 1024² background case).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("XMINE_SHARED_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("XMINE_BENCH_CACHE", Path.home() / ".cache" / "xmine-bench"))
CONTBIN = Path(os.environ.get("CONTBIN", "/work/contbin-build/contbin"))


# ----------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------
def _standin_simulate(npix: int, *, total_counts: float, n_point_sources: int, background_per_pixel: float,
                      bg_exposure_ratio: float, with_expmap: bool, seed: int) -> dict:
    """A private stand-in for ``xmine.simulate.simulate_cluster_image`` (used only while it is absent)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:npix, 0:npix].astype(float)
    xc, yc = 0.52 * npix, 0.47 * npix
    rc = 0.06 * npix
    # elliptical beta model (beta = 2/3) plus a cool-core spike and an offset subclump
    r2 = ((x - xc) / 1.0) ** 2 + ((y - yc) / 0.8) ** 2
    model = (1 + r2 / rc**2) ** -1.5
    model += 0.5 * np.exp(-(((x - xc) ** 2 + (y - yc) ** 2) / (2 * (0.01 * npix) ** 2)))
    model += 0.15 * (1 + (((x - 0.3 * npix) ** 2 + (y - 0.65 * npix) ** 2) / (0.03 * npix) ** 2)) ** -1.5
    for _ in range(n_point_sources):
        px, py = rng.uniform(0.05, 0.95, 2) * npix
        amp = rng.lognormal(0.0, 1.0) * 0.02 * model.max()
        model += amp * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * 1.2**2))
    exposure_s = 50_000.0
    expmap = None
    vign = np.ones_like(model)
    if with_expmap:
        rr = np.hypot(x - npix / 2, y - npix / 2) / npix
        vign = 1.0 - 0.6 * rr**2
        gap = max(2, npix // 128)
        vign[:, npix // 3:npix // 3 + gap] = 0.0
        vign[2 * npix // 3:2 * npix // 3 + gap, :] = 0.0
        expmap = (exposure_s * vign).astype(np.float32)
    model = model / (model * vign).sum() * total_counts
    bkg = background_per_pixel * vign
    counts = rng.poisson(model * vign + bkg).astype(np.int32)
    background = None
    bg_exposure_s = None
    if background_per_pixel > 0:
        bg_exposure_s = exposure_s * bg_exposure_ratio
        background = rng.poisson(bkg * bg_exposure_ratio).astype(np.int32)
    hdr = fits.Header()
    hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
    hdr["CRPIX1"], hdr["CRPIX2"] = npix / 2 + 0.5, npix / 2 + 0.5
    hdr["CRVAL1"], hdr["CRVAL2"] = 149.59, -11.06
    hdr["CDELT1"], hdr["CDELT2"] = -0.492 / 3600, 0.492 / 3600
    hdr["CUNIT1"], hdr["CUNIT2"] = "deg", "deg"
    hdr["LTM1_1"], hdr["LTM2_2"] = 1.0, 1.0
    hdr["LTV1"], hdr["LTV2"] = -(4096.5 - npix / 2), -(4096.5 - npix / 2)
    hdr["EXPOSURE"] = exposure_s
    return {"counts": counts, "background": background, "expmap": expmap, "exposure_s": exposure_s,
            "bg_exposure_s": bg_exposure_s, "header": hdr}


def _write_standin(sim: dict, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {"image": folder / "img.fits"}
    fits.writeto(out["image"], sim["counts"], sim["header"], overwrite=True)
    if sim["background"] is not None:
        h = sim["header"].copy()
        h["EXPOSURE"] = sim["bg_exposure_s"]
        out["bg"] = folder / "bg.fits"
        fits.writeto(out["bg"], sim["background"], h, overwrite=True)
    if sim["expmap"] is not None:
        out["expmap"] = folder / "expmap.fits"
        fits.writeto(out["expmap"], sim["expmap"], sim["header"], overwrite=True)
        if sim["background"] is not None:
            out["bgexpmap"] = folder / "bgexpmap.fits"
            fits.writeto(out["bgexpmap"], sim["expmap"] * np.float32(sim["bg_exposure_s"] / sim["exposure_s"]),
                         sim["header"], overwrite=True)
    return out


def simulated_inputs(npix: int, *, background: bool, expmap: bool, seed: int) -> tuple[dict[str, Path], str]:
    """Write (once) a simulated cluster and return its file paths and a description.

    Uses ``xmine.simulate.simulate_cluster_image`` (the private stand-in only if it
    cannot be imported).  With a background and an exposure map, a background
    exposure map ``expmap × bg_exposure_ratio`` is written too, so that contbin's
    per-pixel scale ``expmap/bgexpmap`` is the true one.
    """
    scale = (npix / 512) ** 2
    kw = dict(total_counts=2.0e5 * scale, n_point_sources=int(30 * scale),
              background_per_pixel=0.1 if background else 0.0, bg_exposure_ratio=5.0,
              with_expmap=expmap, seed=seed)
    try:
        from xmine.simulate import simulate_cluster_image, write_simulated_image
    except ImportError:
        simulate_cluster_image = write_simulated_image = None
    source = "xmine.simulate.simulate_cluster_image" if simulate_cluster_image is not None else "stand-in"
    folder = CACHE / "inputs" / (f"sim{npix}_bg{int(background)}_exp{int(expmap)}_seed{seed}"
                                 + ("" if simulate_cluster_image is not None else "_standin"))
    desc = f"{source}({npix}, " + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"
    marker = folder / "files.json"
    if marker.exists():
        return {k: Path(v) for k, v in json.loads(marker.read_text()).items()}, desc
    if simulate_cluster_image is not None:
        sim = simulate_cluster_image(npix, **kw)
        written = write_simulated_image(sim, folder)
        files = {"image": Path(written["counts"])}
        if "bg" in written:
            files["bg"] = Path(written["bg"])
        if "expmap" in written:
            files["expmap"] = Path(written["expmap"])
            if "bg" in written:
                h = fits.getheader(written["expmap"])
                h["EXPOSURE"] = float(sim.bg_exposure_s)
                files["bgexpmap"] = folder / "bgexpmap.fits"
                fits.writeto(files["bgexpmap"], (sim.expmap * np.float32(kw["bg_exposure_ratio"])), h,
                             overwrite=True)
    else:
        files = _write_standin(_standin_simulate(npix, **kw), folder)
    marker.write_text(json.dumps({k: str(v) for k, v in files.items()}))
    return files, desc


@dataclass
class Case:
    name: str
    files: dict[str, Path]
    desc: str
    opts: dict = field(default_factory=dict)
    has_bg: bool = False


def build_cases(quick: bool, only: list[str] | None) -> list[Case]:
    cases: list[Case] = []
    common = {"constrainfill": True, "constrainval": 2.0}

    def add(name: str, files: dict[str, Path], desc: str, sn: float, has_bg: bool) -> None:
        if only and name not in only:
            return
        cases.append(Case(name, files, desc, {"sn": sn, "smoothsn": sn, **common}, has_bg))

    for npix in (512, 1024):
        for bg in (False, True):
            sns = (30, 50, 70) if not (npix == 1024 and bg) else (30,)
            if quick:
                sns = (30,)
                if npix == 1024:
                    continue
            for sn in sns:
                name = f"sim{npix}_{'bg_exp' if bg else 'plain'}_sn{sn}"
                if only and name not in only and not (bg and npix == 512 and sn == 30
                                                      and "sim512_bg_exp_nobgexp_sn30" in only):
                    continue
                files, desc = simulated_inputs(npix, background=bg, expmap=bg, seed=1000 + npix)
                add(name, files, desc, sn, bg)
                if bg and npix == 512 and sn == 30:
                    # contbin's usual call: background scaled by expmap / the background's EXPOSURE
                    # keyword (no --bgexpmap); the scale varies per pixel, so the smoothed image has no ties
                    add("sim512_bg_exp_nobgexp_sn30", {k: v for k, v in files.items() if k != "bgexpmap"},
                        desc + " without --bgexpmap", sn, bg)
    g21 = SHARED / "images" / "chandra_g21.5-0.9_obs1838_img.fits"
    if g21.exists():
        add("g21.5_chandra_sn30", {"image": g21}, f"real: {g21.name}", 30, False)
    a907 = SHARED / "images" / "xmm_a907_0201903501"
    if a907.exists() and not quick:
        add("a907_xmm_merged_sn30",
            {"image": a907 / "0201903501-0.50-2.00keVmerged_img.fits",
             "expmap": a907 / "0201903501_mos1_exp1-0.50-2.00keVexpmap.fits"},
            "real: A907 pn+MOS merged image, MOS1 expmap (masks exposure < 1)", 30, False)
        add("a907_xmm_mos1_sn30",
            {"image": a907 / "0201903501_mos1_exp1-0.50-2.00keVimg.fits",
             "expmap": a907 / "0201903501_mos1_exp1-0.50-2.00keVexpmap.fits"},
            "real: A907 MOS1 0.5-2 keV counts image with its expmap", 30, False)
    return cases


# ----------------------------------------------------------------------------
# contbin, cached
# ----------------------------------------------------------------------------
def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _contbin_args(files: dict[str, Path], opts: dict) -> list[str]:
    args = [f"--sn={opts['sn']}", f"--smoothsn={opts['smoothsn']}"]
    if opts.get("constrainfill"):
        args += ["--constrainfill", f"--constrainval={opts['constrainval']}"]
    for key in ("bg", "expmap", "bgexpmap", "mask"):
        if key in files:
            args.append(f"--{key}={files[key].name}")
    return [*args, files["image"].name]


def run_contbin(files: dict[str, Path], opts: dict, *, mirror: bool) -> dict:
    """Run contbin once (cached); with ``mirror`` on left-right mirrored inputs, result mirrored back."""
    key = {"inputs": {k: _sha(v) for k, v in sorted(files.items())}, "opts": opts, "mirror": mirror,
           "contbin": _sha(CONTBIN) if CONTBIN.exists() else "absent"}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = CACHE / "contbin" / digest
    result_file = folder / "result.json"
    if result_file.exists():
        res = json.loads(result_file.read_text())
        res["binmap"] = fits.getdata(folder / "contbin_binmap.fits").astype(np.int64)
        res["smoothed"] = None
        if mirror:
            res["binmap"] = res["binmap"][:, ::-1]
        return res
    if not CONTBIN.exists():
        raise SystemExit(f"contbin not found at {CONTBIN}; build it (README.md) or set CONTBIN=/path/to/contbin")
    tmp = Path(tempfile.mkdtemp(prefix="run.", dir=CACHE.mkdir(parents=True, exist_ok=True) or CACHE))
    local = {}
    for k, src in files.items():
        dst = tmp / f"{k}.fits"
        if mirror:
            with fits.open(src) as hdul:
                fits.writeto(dst, np.ascontiguousarray(hdul[0].data[:, ::-1]), hdul[0].header)
        else:
            os.symlink(src, dst)
        local[k] = dst
    cmd = ["/usr/bin/time", "-v", str(CONTBIN), *_contbin_args(local, opts)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"contbin failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rss_kb = 0
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss_kb = int(line.split(":")[1])
    res = {"wall_s": wall, "max_rss_mb": rss_kb / 1024, "cmd": " ".join(cmd[2:])}
    (tmp / "result.json").write_text(json.dumps(res))
    (tmp / "stdout.txt").write_text(proc.stdout[-20000:])
    for k in local:
        (tmp / f"{k}.fits").unlink()
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return run_contbin(files, opts, mirror=mirror)


# ----------------------------------------------------------------------------
# xmine
# ----------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _RssSampler:
    def __init__(self) -> None:
        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.002)

    def __enter__(self) -> _RssSampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())


def _load(files: dict[str, Path]) -> dict:
    from xmine.contbin import read_contbin_inputs

    return read_contbin_inputs(files["image"], bg_path=files.get("bg"), expmap_path=files.get("expmap"),
                               bgexpmap_path=files.get("bgexpmap"), mask_path=files.get("mask"))


def run_xmine(files: dict[str, Path], opts: dict, *, mirror: bool = False, repeats: int = 2) -> dict:
    from xmine.contbin import make_contour_bins

    inputs = _load(files)
    if mirror:
        inputs = {k: (np.ascontiguousarray(v[:, ::-1]) if isinstance(v, np.ndarray) else v)
                  for k, v in inputs.items()}
    import gc

    gc.collect()
    times = []
    base = _rss_mb()
    with _RssSampler() as s:
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = make_contour_bins(**inputs, **opts)
            times.append(time.perf_counter() - t0)
    binmap = res.binmap.astype(np.int64)
    if mirror:
        binmap = binmap[:, ::-1]
    return {"wall_s": min(times), "mem_growth_mb": s.peak - base, "binmap": binmap, "table": res.table,
            "smoothed": res.smoothed}


def jit_compile_seconds() -> float:
    """Time the one-off compilation (or cache load) of the kernels on a tiny image."""
    t0 = time.perf_counter()
    from xmine.contbin import make_contour_bins

    rng = np.random.default_rng(0)
    img = rng.poisson(3.0, (24, 24))
    make_contour_bins(img, sn=5, smoothsn=5, constrainfill=True, constrainval=2.0,
                      bg=rng.poisson(1.0, (24, 24)), exposure_s=1.0, bg_exposure_s=4.0)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------
# comparison metrics
# ----------------------------------------------------------------------------
def _contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse contingency of two labelings on pixels labelled in both: (labels a, labels b, counts)."""
    m = (a >= 0) & (b >= 0)
    a, b = a[m].astype(np.int64), b[m].astype(np.int64)
    key = a * (int(b.max()) + 1) + b
    uniq, cnt = np.unique(key, return_counts=True)
    return uniq // (int(b.max()) + 1), uniq % (int(b.max()) + 1), cnt


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """ARI (Hubert & Arabie 1985) of two labelings of the pixels labelled (>= 0) in both."""
    ia, ib, nij = _contingency(a, b)
    n = nij.sum()

    def comb2(x: np.ndarray) -> float:
        x = x.astype(np.float64)
        return float((x * (x - 1) / 2).sum())

    sum_ij = comb2(nij)
    sum_a = comb2(np.bincount(ia, weights=nij).astype(np.int64))
    sum_b = comb2(np.bincount(ib, weights=nij).astype(np.int64))
    expected = sum_a * sum_b / (n * (n - 1) / 2)
    maxi = (sum_a + sum_b) / 2
    return float((sum_ij - expected) / (maxi - expected)) if maxi != expected else 1.0


def matched_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels (labelled in either map) whose bins match after a one-to-one overlap matching.

    Bins are matched greedily by decreasing overlap (each bin of either map used at most once).
    """
    ia, ib, nij = _contingency(a, b)
    order = np.argsort(-nij, kind="stable")
    used_a, used_b = set(), set()
    agree = 0
    for k in order:
        if ia[k] in used_a or ib[k] in used_b:
            continue
        used_a.add(ia[k])
        used_b.add(ib[k])
        agree += nij[k]
    total = int(((a >= 0) | (b >= 0)).sum())
    return agree / total if total else 1.0


def ks_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic."""
    from scipy.stats import ks_2samp

    if len(x) == 0 or len(y) == 0:
        return float("nan")
    return float(ks_2samp(x, y).statistic)


def bin_stats(binmap: np.ndarray, files: dict[str, Path], opts: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin area and S/N of any bin map, computed the same way (xmine's formula) for both programs."""
    from xmine.contbin import bin_statistics

    inp = _load(files)
    tab = bin_statistics(binmap, inp["counts"], bg=inp.get("bg"), expmap=inp.get("expmap"),
                         bgexpmap=inp.get("bgexpmap"), exposure_s=inp.get("exposure_s"),
                         bg_exposure_s=inp.get("bg_exposure_s"))
    return np.asarray(tab["area_pix"], float), np.asarray(tab["sn"], float)


# ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="512² cases at sn 30 and G21.5 only")
    p.add_argument("--cases", nargs="*", help="run only these case names")
    p.add_argument("--contbin-only", action="store_true", help="only fill contbin's cache")
    p.add_argument("--no-mirror", action="store_true", help="skip contbin's mirrored baseline runs")
    args = p.parse_args(argv)

    cases = build_cases(args.quick, args.cases)
    if args.contbin_only:
        for c in cases:
            print(f"{c.name}: contbin ...", flush=True)
            r = run_contbin(c.files, c.opts, mirror=False)
            print(f"  {r['wall_s']:.1f} s, {r['max_rss_mb']:.0f} MB", flush=True)
            if not args.no_mirror:
                r = run_contbin(c.files, c.opts, mirror=True)
                print(f"  mirrored: {r['wall_s']:.1f} s", flush=True)
        return 0

    jit = jit_compile_seconds()
    print(f"xmine one-off JIT compile (or numba cache load) on a 24² image: {jit:.2f} s")
    print("inputs:")
    seen = set()
    for c in cases:
        if c.desc not in seen:
            print(f"  {c.desc}")
            seen.add(c.desc)
    print("options: sn = smoothsn as named, constrainfill, constrainval 2 (contbin defaults otherwise)")
    hdr = (f"{'case':26s} {'cb s':>7s} {'xm s':>6s} {'ratio':>6s} {'cb MB':>6s} {'xm MB':>6s} "
           f"{'cb n':>5s} {'xm n':>5s} {'ARI':>5s} {'agree':>6s} {'mirARI':>6s} {'mirAgr':>6s} "
           f"{'KSa':>5s} {'KSsn':>5s} {'mKSa':>5s} {'mKSsn':>5s} {'cb minSN':>8s} {'cb medSN':>8s} "
           f"{'xm minSN':>8s} {'xm medSN':>8s} {'ties':>6s} {'xmMir':>6s}")
    print(hdr)
    print("-" * len(hdr))
    for c in cases:
        cb = run_contbin(c.files, c.opts, mirror=False)
        cbm = None if args.no_mirror else run_contbin(c.files, c.opts, mirror=True)
        from xmine.errors import InputError

        try:
            xm = run_xmine(c.files, c.opts)
        except InputError as exc:
            print(f"{c.name:26s} {cb['wall_s']:7.1f}  xmine refuses the input: {exc}", flush=True)
            continue
        xmm = run_xmine(c.files, c.opts, mirror=True, repeats=1)
        xmir = matched_agreement(xmm["binmap"], xm["binmap"])
        a_cb, s_cb = bin_stats(cb["binmap"], c.files, c.opts)
        a_xm, s_xm = bin_stats(xm["binmap"], c.files, c.opts)
        ari = adjusted_rand_index(xm["binmap"], cb["binmap"])
        agr = matched_agreement(xm["binmap"], cb["binmap"])
        if cbm is not None:
            a_m, s_m = bin_stats(cbm["binmap"], c.files, c.opts)
            mari = adjusted_rand_index(cbm["binmap"], cb["binmap"])
            magr = matched_agreement(cbm["binmap"], cb["binmap"])
            mksa, mkss = ks_distance(a_m, a_cb), ks_distance(s_m, s_cb)
        else:
            mari = magr = mksa = mkss = float("nan")
        sm = xm["smoothed"][xm["binmap"] >= 0]
        ties = 1.0 - len(np.unique(sm)) / max(len(sm), 1)
        print(f"{c.name:26s} {cb['wall_s']:7.1f} {xm['wall_s']:6.2f} {cb['wall_s'] / xm['wall_s']:6.0f} "
              f"{cb['max_rss_mb']:6.0f} {xm['mem_growth_mb']:6.0f} {len(a_cb):5d} {len(a_xm):5d} "
              f"{ari:5.3f} {agr:6.3f} {mari:6.3f} {magr:6.3f} {ks_distance(a_xm, a_cb):5.3f} "
              f"{ks_distance(s_xm, s_cb):5.3f} {mksa:5.3f} {mkss:5.3f} {s_cb.min():8.2f} {np.median(s_cb):8.2f} "
              f"{s_xm.min():8.2f} {np.median(s_xm):8.2f} {ties:6.3f} {xmir:6.3f}", flush=True)
    print("columns: cb = contbin 1.7, xm = xmine (warm, best of 2); ratio = cb s / xm s; cb MB = contbin max RSS;")
    print("  xm MB = xmine RSS growth above its pre-call baseline; n = bins; ARI / agree = xmine vs contbin")
    print("  (adjusted Rand index; pixel agreement after one-to-one matching of bins by overlap);")
    print("  mirARI / mirAgr / mKSa / mKSsn = contbin on the mirrored image (mirrored back) vs contbin;")
    print("  KSa / KSsn = two-sample KS distance of per-bin area / S/N, xmine vs contbin;")
    print("  S/N of both maps computed by the same formula; ties = fraction of binned pixels whose")
    print("  smoothed value equals another's (0 means the order is fully determined by values);")
    print("  xmMir = xmine on the mirrored image (mirrored back) vs xmine, pixel agreement")
    return 0


if __name__ == "__main__":
    sys.exit(main())
