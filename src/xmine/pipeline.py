"""The per-cluster Chandra pipeline: which steps run, with what, and what already ran.

For one cluster (a name, a position and its obsids) :func:`process_cluster` runs

per obsid, under ``<work_dir>/obs/<obsid>/<step>/`` (shared by clusters that share an obsid)
    ``archive``  find the obsid folder locally or download it (:mod:`xmine.archive`);
    ``deflare``  light curve of the source-free field (cluster and point sources
                 excluded) in bins of whole frames, lc_clean-style clipping → GTI
                 file and a PNG (:mod:`xmine.gti`);

per cluster, under ``<work_dir>/clusters/<name>/<step>/``
    ``merge``    events filtered (band, grade, status) and cleaned (GTIs), merged
                 onto one tangent plane at the cluster: counts in the broad, soft
                 and hard bands and the summed exposure map (:mod:`xmine.images`,
                 :mod:`xmine.exposure`);
    ``masks``    catalogued point sources (PSF-sized) united with xmine's own
                 detections; sources in the core are flagged for review, not
                 masked (:mod:`xmine.masks`);
    ``background`` the local background rate (an annulus beyond the cluster,
                 point sources masked) as a background image for binning
                 (:mod:`xmine.background`); ``process.background = "none"`` skips it;
    ``crop``     a square around the cluster, recording the physical offsets;
    ``contbin``  contour bins of the cropped counts with its exposure map, background
                 and the point-source mask (:mod:`xmine.contbin`), so the S/N of each
                 bin is the Poisson S/N of its net counts. ``process.binning_input =
                 "flux"`` bins the hand pipeline's rescaled flux image instead
                 (``k · rate · ⟨counts⟩/⟨rate⟩``), whose nominal S/N is not a Poisson S/N;
    ``outlines`` the bins as region files in physical and fk5 coordinates;
    ``profile``  radial surface-brightness profile (count rate per arcsec²).

Each step is a function of its inputs and parameters. Its outputs are written
atomically into its own folder, beside a marker file ``.xmine-step.json`` that
holds the hash of inputs and parameters; the store's ``steps`` table holds the
same. A rerun skips every step whose hash is unchanged and whose files exist, a
changed parameter reruns what depends on it, and a failed obsid is recorded in
``failures`` while the cluster goes on with the others.

Approximations against a CIAO analysis are those of the modules named above
(exposure maps without CALDB, a circular PSF model for masks). The local
background is one rate per second per pixel times the exposure map: it treats
sky and particle background alike (both vignetted) and assumes the cluster is
negligible beyond ``bg_inner_arcmin``. Its statistical error enters contbin's
noise through an equivalent exposure ratio, the number of annulus pixels, as if
independent per pixel; the real error is correlated across a bin, so it is
underestimated by the bin's pixel count, negligible while the annulus is much
larger than a bin.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmine import __version__
from xmine.config import XmineConfig
from xmine.errors import InputError, XmineError
from xmine.store import Store, atomic_write, hash_inputs

__all__ = ["ClusterResult", "ClusterSpec", "ProcessSummary", "StepRecord", "StepRunner", "load_cluster_sample",
           "process_cluster", "read_catalog", "run_process", "write_step_records"]

log = logging.getLogger(__name__)

_MARKER = ".xmine-step.json"


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster to process.

    Attributes
    ----------
    name : str
    ra_deg, dec_deg : float
        Centre (ICRS).
    obsids : tuple of int
        Chandra ACIS observations covering it.
    z : float or None
        Redshift, when known.
    r500_kpc : float or None
        R500 from the user's sample table, when known.
    tx_kev : float or None
        Global temperature from the sample table (for an R500 scaling relation), when known.
    """

    name: str
    ra_deg: float
    dec_deg: float
    obsids: tuple[int, ...]
    z: float | None = None
    r500_kpc: float | None = None
    tx_kev: float | None = None


@dataclass
class ClusterResult:
    """What :func:`process_cluster` produced for one cluster."""

    cluster: ClusterSpec
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    failed_obsids: dict[int, str] = field(default_factory=dict)

    @property
    def n_bins(self) -> int:
        """Number of contour bins (0 before binning)."""
        return int(self.outputs.get("contbin", {}).get("n_bins", 0))


@dataclass
class StepRecord:
    """One step as a worker saw it, for the driver to write into the store's ``steps``/``failures``."""

    item: str
    step: str
    inputs_hash: str
    status: str  # "done" (ran or reused) or "failed"
    outputs: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    reason: str | None = None


class StepRunner:
    """Runs steps once: skips those whose marker beside the outputs carries the same inputs hash.

    Parameters
    ----------
    store : Store or None
        An open, writable store that each step is recorded in as it ends; ``None`` in a worker, which never
        writes to the database: the steps are kept in :attr:`records` for the driver to write.
    run_id : str
        The run the steps belong to.
    on_step : callable, optional
        Called with ``(item, step)`` before a step starts (progress display).
    """

    def __init__(self, store: Store | None, run_id: str, *,
                 on_step: Callable[[str, str], None] | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.on_step = on_step
        self.records: list[StepRecord] = []

    def run(self, item: str, step: str, folder: Path, inputs: Mapping[str, Any],
            work: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Run ``work(folder)`` unless it already ran with the same inputs; return (outputs, ran).

        ``work`` returns a JSON-serialisable dict; its ``files`` entry lists the
        files it wrote, which must all still exist for the step to count as done.
        """
        h = hash_inputs(dict(inputs), __version__)
        marker = folder / _MARKER
        done = self._done(marker, item, step, h)
        if done is not None:
            return done, False
        if self.on_step is not None:
            self.on_step(item, step)
        # the folder is about to change: a marker left from other inputs must not vouch for it if we die half way
        marker.unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            outputs = work(folder)
        except XmineError as exc:
            self._record(StepRecord(item, step, h, "failed", reason=str(exc)))
            raise
        seconds = time.perf_counter() - t0
        with atomic_write(marker) as tmp:
            tmp.write_text(json.dumps({"step": step, "item": item, "inputs_hash": h, "outputs": outputs},
                                      sort_keys=True, default=str))
        self._record(StepRecord(item, step, h, "done", outputs=outputs, seconds=seconds))
        log.info("%s %s: %.1f s", item, step, seconds)
        return outputs, True

    def _record(self, rec: StepRecord) -> None:
        if self.store is None:
            self.records.append(rec)
        else:
            write_step_records(self.store, self.run_id, [rec])

    def _done(self, marker: Path, item: str, step: str, h: str) -> dict[str, Any] | None:
        """Return the outputs if the folder holds this step's results for these inputs.

        The marker beside the outputs is the truth about what is on disk (step folders are shared by
        runs and by workers); the store's row is recorded from it.
        """
        try:
            saved = json.loads(marker.read_text())
        except (OSError, ValueError):
            return None
        outputs = saved.get("outputs")
        if saved.get("inputs_hash") != h or not isinstance(outputs, dict) or not _files_exist(outputs):
            return None
        if self.store is None or self.store.step_done(self.run_id, item, step, h) is None:
            self._record(StepRecord(item, step, h, "done", outputs=outputs))
        return outputs


def write_step_records(store: Store, run_id: str, records: Sequence[StepRecord]) -> None:
    """Write steps a runner (or a worker) saw into the store: done steps to ``steps``, failures to ``failures``."""
    for rec in records:
        if rec.status == "failed":
            store.record_failure(run_id, rec.item, rec.step, rec.reason or "")
        else:
            store.record_step(run_id, rec.item, rec.step, rec.inputs_hash, outputs=rec.outputs, seconds=rec.seconds)


def _files_exist(outputs: Mapping[str, Any]) -> bool:
    return all(Path(p).exists() for p in outputs.get("files", []))


#: The parameters each step depends on; a changed one reruns that step and, through the
#: hashes of its output files, only the steps downstream of it.
_STEP_PARAMS: dict[str, tuple[str, ...]] = {
    "deflare": ("events.*", "process.lc_exclude_arcsec", "process.lc_bin_frames", "process.deflare_sigma",
                "process.deflare_scale"),
    "merge": ("events.*", "process.binsize", "process.merge_size_arcmin", "process.background"),
    "merge_blank_sky": ("process.blank_sky_dir", "process.bg_inner_arcmin"),
    "masks": ("process.detect", "process.false_detections_per_field", "process.core_radius_arcsec"),
    "background": ("process.background", "process.bg_inner_arcmin"),
    "crop": ("process.crop_radius_arcmin",),
    "contbin": ("binning.*", "process.binning_input", "process.flux_k"),
    "profile": ("process.profile_bins", "process.crop_radius_arcmin"),
    "measure": ("measure.*", "process.bg_inner_arcmin"),
    "spectra": ("spectra.*", "events.grades", "events.status_zero", "process.bg_inner_arcmin"),
    "fit": ("fit.*",),
}


def _params(config: XmineConfig, step: str) -> dict[str, Any]:
    """Return the configuration values ``step`` depends on (see ``_STEP_PARAMS``)."""
    out: dict[str, Any] = {}
    for key in _STEP_PARAMS.get(step, ()):
        section, name = key.split(".")
        values = getattr(config, section).model_dump()
        if name == "*":
            out[section] = values
        else:
            out[key] = values[name]
    return out


def _source_circles(catalog: Any, events: Any, pixel_arcsec: float) -> list[tuple[float, float, float]]:
    """Circles (sky pixels) around catalogued point sources on the observation: 1.5 × r90 at their off-axis angle.

    Keeps variable point sources (an AGN flare) out of the background light curve.
    """
    if catalog is None or len(catalog) == 0:
        return []
    from xmine import masks

    ra_col = masks._first(catalog, ("ra", "ra_deg", "sc_ra"))
    dec_col = masks._first(catalog, ("dec", "dec_deg", "sc_dec"))
    if ra_col is None or dec_col is None or "RA_PNT" not in events.header:
        return []
    ra = np.asarray(catalog[ra_col], dtype=float)
    dec = np.asarray(catalog[dec_col], dtype=float)
    ok = np.isfinite(ra) & np.isfinite(dec)
    theta = masks.off_axis_arcmin(ra[ok], dec[ok], [(float(events.header["RA_PNT"]), float(events.header["DEC_PNT"]))])
    near = theta < 20.0
    x, y = events.wcs.all_world2pix(ra[ok][near], dec[ok][near], 1)
    r_pix = 1.5 * np.asarray(masks.chandra_r90_arcsec(theta[near])) / pixel_arcsec
    return [(float(a), float(b), float(c)) for a, b, c in zip(x, y, r_pix, strict=True)]


def _circle_pix(frame_wcs: Any, ra: float, dec: float, radius_arcsec: float, pixel_arcsec: float
                ) -> tuple[float, float, float]:
    x, y = frame_wcs.all_world2pix([[ra, dec]], 1)[0]
    return float(x), float(y), radius_arcsec / pixel_arcsec


def process_cluster(cluster: ClusterSpec, *, config: XmineConfig, store: Store | None, run_id: str,
                    catalog: Any = None, runner: StepRunner | None = None) -> ClusterResult:
    """Run the pipeline for one cluster (see the module docstring); return its outputs.

    Parameters
    ----------
    cluster : ClusterSpec
    config : XmineConfig
        ``project.work_dir``/``data_dir``, ``events``, ``binning`` and ``process`` sections are used.
    store : Store or None
        Writable store; steps and failures are recorded there. ``None`` in a worker: they are kept in the
        runner's ``records`` (and the result's ``steps``) for the driver to write.
    run_id : str
    catalog : astropy.table.Table, optional
        Catalogued point sources of the field (CSC, 4XMM or common-schema columns).
    runner : StepRunner, optional
        Use this runner (e.g. one with a progress callback) instead of a new one.

    Raises
    ------
    xmine.errors.InputError
        If no obsid of the cluster could be processed (each reason is in ``failures``).
    """
    from xmine import archive, gti

    runner = runner or StepRunner(store, run_id)
    work = Path(config.project.work_dir)
    proc = config.process
    result = ClusterResult(cluster=cluster)
    clean: dict[int, dict[str, Any]] = {}
    catalog_hash = _table_hash(catalog)
    for obsid in cluster.obsids:
        obs_dir = work / "obs" / str(obsid)
        item = f"obs/{obsid}"
        try:
            def _archive(folder: Path, obsid: int = obsid) -> dict[str, Any]:
                found = archive.get_obsid_from_config(obsid, config)
                return {"evt2": str(found.evt2), "source": found.source, "files": [str(found.evt2)]}

            got, ran = runner.run(item, "archive", obs_dir / "archive",
                                  {"obsid": obsid, "data_dir": str(config.project.data_dir)}, _archive)
            evt2 = Path(got["evt2"])

            def _deflare(folder: Path, evt2: Path = evt2, obsid: int = obsid) -> dict[str, Any]:
                from xmine.events import filter_events, read_events

                ev = filter_events(read_events(evt2), emin_kev=config.events.emin_kev,
                                   emax_kev=config.events.emax_kev, grades=tuple(config.events.grades),
                                   status_zero=config.events.status_zero, allow_empty=False)
                pix = float(abs(ev.wcs.wcs.cdelt[0])) * 3600.0
                circles = [_circle_pix(ev.wcs, cluster.ra_deg, cluster.dec_deg, proc.lc_exclude_arcsec, pix)]
                circles += _source_circles(catalog, ev, pix)
                keep = gti.source_free(ev, circles=circles)
                lc = gti.make_light_curve(ev, keep=keep, bin_frames=proc.lc_bin_frames)
                # lc_clean's +-20 % limits clip ~10 % of quiescent bins at ~70 counts per bin: Poisson sigma limits
                # by default, the CIAO limits when deflare_scale is set
                limits = ({"scale": proc.deflare_scale} if proc.deflare_scale > 1
                          else {"sigma": proc.deflare_sigma})
                res = gti.deflare(lc, source=f"{evt2.name} light curve", **limits)
                gti_path = gti.write_gti(folder / f"{obsid}_gti.fits", res.gti, header=ev.header, result=res)
                png = gti.plot_light_curve(folder / f"{obsid}_lc.png", res, title=f"ObsID {obsid}")
                total = res.good_exposure_s + res.lost_exposure_s
                return {"gti": str(gti_path), "lc_png": str(png), "good_exposure_s": res.good_exposure_s,
                        "clean_fraction": res.good_exposure_s / total if total > 0 else 0.0,
                        "n_flares": len(res.flares), "files": [str(gti_path), str(png)]}

            # the source-free light curve depends on the cluster: one folder per cluster in the shared obsid folder
            fl, ran_fl = runner.run(f"{item}/{cluster.name}", "deflare", obs_dir / "deflare" / cluster.name,
                                    {"evt2": evt2, "ra": cluster.ra_deg, "dec": cluster.dec_deg,
                                     "catalog": catalog_hash, **_params(config, "deflare")},
                                    _deflare)
            clean[obsid] = {"evt2": evt2, **fl}
            result.outputs.setdefault("obs", {})[str(obsid)] = {"evt2": str(evt2), **fl}
            if ran or ran_fl:
                result.ran.append(f"{item}")
        except XmineError as exc:
            result.failed_obsids[obsid] = str(exc)
            log.warning("%s skipped: %s", item, exc)
    if not clean:
        reasons = "; ".join(f"{o}: {r}" for o, r in result.failed_obsids.items())
        msg = f"{cluster.name}: no observation could be processed ({reasons})"
        raise InputError(msg)
    _cluster_steps(cluster, clean, runner=runner, config=config, catalog=catalog, result=result)
    return result


def _cluster_steps(cluster: ClusterSpec, clean: Mapping[int, Mapping[str, Any]], *, runner: StepRunner,
                   config: XmineConfig, catalog: Any, result: ClusterResult) -> None:
    from astropy.io import fits

    from xmine import background, contbin, images, masks, outlines, profiles
    from xmine.events import filter_events, read_events
    from xmine.gti import apply_gti

    proc = config.process
    cdir = Path(config.project.work_dir) / "clusters" / cluster.name
    item = f"cluster/{cluster.name}"
    pix_arcsec = 0.492 * proc.binsize
    size_pix = round(proc.merge_size_arcmin * 60.0 / pix_arcsec)

    def _merge(folder: Path) -> dict[str, Any]:
        evs, gtis = [], []
        for obs in clean.values():
            ev = filter_events(read_events(obs["evt2"]), emin_kev=None, emax_kev=None,
                               grades=tuple(config.events.grades), status_zero=config.events.status_zero)
            good = fits.getdata(obs["gti"], 1)
            g = np.column_stack([good["START"], good["STOP"]]).astype(float)
            evs.append(apply_gti(ev, g))
            gtis.append(g)
        merged = images.merge_observations(evs, ra_deg=cluster.ra_deg, dec_deg=cluster.dec_deg, size_pix=size_pix,
                                           binsize=proc.binsize, gtis=gtis)
        paths = images.write_merged(merged, folder)
        extra: dict[str, Any] = {}
        if proc.background == "blank_sky":
            extra = _blank_sky(evs, list(clean), cluster, folder, size_pix=size_pix)
        return {**{k: str(v) for k, v in paths.items()}, **extra, "observations": merged.observations,
                "files": [str(v) for v in paths.values()] + extra.get("files", [])}

    def _blank_sky(evs: list[Any], obsids: list[int], cluster: ClusterSpec, folder: Path, *,
                   size_pix: int) -> dict[str, Any]:
        """Blank-sky events of each obsid, renormalised by 9.5-12 keV and summed on the merged grid."""
        if proc.blank_sky_dir is None:
            msg = "process.background = 'blank_sky' needs process.blank_sky_dir (one background event file per obsid)"
            raise InputError(msg)
        frame = images.merged_frame(cluster.ra_deg, cluster.dec_deg, like=evs[0])
        xmin, ymin = images.sky_box(frame, cluster.ra_deg, cluster.dec_deg, size_pix=size_pix, binsize=proc.binsize)
        raw = np.zeros((size_pix, size_pix))
        expected = np.zeros((size_pix, size_pix))
        # the cluster also emits at 9.5-12 keV: leave it out of the particle-band normalisation
        yy, xx = np.mgrid[0:size_pix, 0:size_pix]
        cx, cy = (size_pix - 1) / 2.0, (size_pix - 1) / 2.0
        outside = (np.hypot(xx - cx, yy - cy) * 0.492 * proc.binsize > proc.bg_inner_arcmin * 60.0).astype(np.uint8)
        scales = {}
        for ev, obsid in zip(evs, obsids, strict=True):
            pattern = re.compile(rf"(?<!\d)0*{obsid}(?!\d).*bg.*\.fits(\.gz)?$")
            found = sorted(p for p in Path(proc.blank_sky_dir).iterdir() if pattern.search(p.name))
            if len(found) > 1:
                msg = (f"obsid {obsid}: several blank-sky files match in {proc.blank_sky_dir} "
                       f"({', '.join(p.name for p in found)}); keep one per obsid")
                raise InputError(msg)
            if not found:
                msg = (f"obsid {obsid}: no blank-sky event file *{obsid}*bg*.fits[.gz] in {proc.blank_sky_dir}; "
                       "make one (e.g. CIAO blanksky) or set process.background = 'local'")
                raise InputError(msg)
            bg_ev = filter_events(read_events(found[0]), emin_kev=None, emax_kev=None,
                                  grades=tuple(config.events.grades), status_zero=config.events.status_zero)
            bi = background.make_background_image(images.reproject_events(ev, frame), bg_ev, xmin=xmin, ymin=ymin,
                                                  shape=(size_pix, size_pix), binsize=proc.binsize,
                                                  emin_kev=config.events.emin_kev, emax_kev=config.events.emax_kev,
                                                  mask=outside)
            raw += bi.counts
            expected += bi.expected_counts()
            scales[str(obsid)] = bi.scale
        header = fits.getheader(folder / "merged_broad_img.fits")
        header["BUNIT"] = "count"
        r = images.write_image(folder / "blanksky_raw.fits", raw.astype(np.float32), header)
        e = images.write_image(folder / "blanksky_expected.fits", expected.astype(np.float32), header)
        return {"blanksky_raw": str(r), "blanksky_expected": str(e), "blanksky_scales": scales,
                "files": [str(r), str(e)]}

    merged, _ = runner.run(item, "merge", cdir / "merge",
                           {"obs": {str(k): [v["evt2"], Path(v["gti"])] for k, v in clean.items()},
                            "ra": cluster.ra_deg, "dec": cluster.dec_deg, **_params(config, "merge"),
                            **(_params(config, "merge_blank_sky") if proc.background == "blank_sky" else {})},
                           _merge)
    result.outputs["merge"] = merged
    counts_path, exp_path = Path(merged["broad"]), Path(merged["exposure"])

    def _centre(header: fits.Header) -> tuple[float, float]:
        """Return the cluster centre in 0-based pixels of an image."""
        x, y = masks.image_wcs(header).world_to_pixel_values(cluster.ra_deg, cluster.dec_deg)
        return float(x), float(y)

    def _merged_exposure() -> np.ndarray:
        # summed exposure maps can hold -1e-13 rounding residues at chip edges
        return np.clip(fits.getdata(exp_path).astype(np.float64), 0.0, None)

    def _masks(folder: Path) -> dict[str, Any]:
        counts, header = fits.getdata(counts_path, header=True)
        exposure = fits.getdata(exp_path)
        cx, cy = _centre(header)
        heads = [fits.getheader(obs["evt2"], "EVENTS") for obs in clean.values()]
        pointings = [(float(h["RA_PNT"]), float(h["DEC_PNT"])) for h in heads if "RA_PNT" in h] or None
        sources, mask = masks.make_point_source_mask(
            counts, header, catalog=catalog, exposure=exposure, detect=proc.detect,
            false_per_field=proc.false_detections_per_field, cluster_center_xy=(cx, cy),
            core_radius_pix=proc.core_radius_arcsec / pix_arcsec, pointings=pointings)
        mpath = masks.write_mask(folder / "mask.fits", mask, header)
        reg = masks.write_region_file(folder / "pointsources_fk5.reg", sources, header=header, system="fk5")
        regp = masks.write_region_file(folder / "pointsources_physical.reg", sources, header=header,
                                       system="physical")
        table = folder / "pointsources.fits"
        with atomic_write(table) as tmp:
            _fits_safe_meta(sources).write(tmp, format="fits")
        n_review = int(np.sum(sources["review"])) if "review" in sources.colnames else 0
        n_masked = int(np.sum(sources["masked"])) if "masked" in sources.colnames else len(sources)
        return {"mask": str(mpath), "regions_fk5": str(reg), "sources": str(table), "n_sources": len(sources),
                "n_masked": n_masked, "n_review": n_review, "files": [str(mpath), str(reg), str(regp), str(table)]}

    mk, _ = runner.run(item, "masks", cdir / "masks",
                       {"counts": counts_path, "exposure": exp_path, "catalog": _table_hash(catalog),
                        **_params(config, "masks")},
                       _masks)
    result.outputs["masks"] = mk

    def _background(folder: Path) -> dict[str, Any]:
        counts, header = fits.getdata(counts_path, header=True)
        exposure = _merged_exposure()
        cx, cy = _centre(header)
        est = background.local_background(counts, exposure=exposure, mask=fits.getdata(mk["mask"]),
                                          center_xy=(cx, cy),
                                          r_in_pix=proc.bg_inner_arcmin * 60.0 / pix_arcsec)
        # the rate is known from area_pix pixels: a background "observation" area_pix times longer
        ratio = float(max(est.area_pix, 1))
        h = header.copy()
        h["BUNIT"] = "count"
        h["EXPOSURE"] = (ratio, "equivalent exposure ratio of the model")
        h["BKGRATE"] = (est.rate_cps_per_pix, "[ct/s/pix] local background rate")
        h["BKGRERR"] = (est.rate_err_cps_per_pix, "[ct/s/pix] 1 sigma error")
        h["BKGREG"] = est.region.replace("–", "-").encode("ascii", "replace").decode()
        bg = images.write_image(folder / "background.fits", (est.expected_counts(exposure) * ratio).astype(np.float32),
                                h)
        he = fits.getheader(exp_path).copy()
        bgexp = images.write_image(folder / "bgexpmap.fits", (exposure * ratio).astype(np.float32), he)
        return {"background": str(bg), "bgexpmap": str(bgexp), "rate_cps_per_pix": est.rate_cps_per_pix,
                "rate_err_cps_per_pix": est.rate_err_cps_per_pix, "area_pix": est.area_pix,
                "files": [str(bg), str(bgexp)]}

    def _blank_background(folder: Path) -> dict[str, Any]:
        raw, header = fits.getdata(merged["blanksky_raw"], header=True)
        expected = fits.getdata(merged["blanksky_expected"]).astype(np.float64)
        exposure = _merged_exposure()
        # contbin scales a background image by expmap/bgexpmap per pixel: choose bgexpmap so that the raw
        # blank-sky counts scale to the expected ones (each obsid renormalised by its 9.5-12 keV rate)
        mean_scale = float(expected.sum() / raw.sum()) if raw.sum() > 0 else 1.0
        ratio = np.where(raw > 0, expected / np.where(raw > 0, raw, 1.0), mean_scale)
        bgexp = np.where(ratio > 0, exposure / np.where(ratio > 0, ratio, 1.0), 0.0)
        h = header.copy()
        h["BKGSCALE"] = (mean_scale, "mean blank-sky scale (expected/raw)")
        bg = images.write_image(folder / "background.fits", raw.astype(np.float32), h)
        he = fits.getheader(exp_path).copy()
        bge = images.write_image(folder / "bgexpmap.fits", bgexp.astype(np.float32), he)
        return {"background": str(bg), "bgexpmap": str(bge), "mean_scale": mean_scale,
                "files": [str(bg), str(bge)]}

    bk: dict[str, Any] = {}
    if proc.background == "blank_sky":
        bk, _ = runner.run(item, "background", cdir / "background",
                           {"raw": Path(merged["blanksky_raw"]), "exposure": exp_path,
                            **_params(config, "background")}, _blank_background)
        result.outputs["background"] = bk
    if proc.background == "local":
        bk, _ = runner.run(item, "background", cdir / "background",
                           {"counts": counts_path, "exposure": exp_path, "mask": Path(mk["mask"]),
                            **_params(config, "background")}, _background)
        result.outputs["background"] = bk

    def _crop(folder: Path) -> dict[str, Any]:
        header = fits.getheader(counts_path)
        data = {"counts": fits.getdata(counts_path), "exposure": fits.getdata(exp_path),
                "mask": fits.getdata(mk["mask"])}
        if bk:
            data |= {"background": fits.getdata(bk["background"]), "bgexpmap": fits.getdata(bk["bgexpmap"])}
        cropped, h, crop = images.crop_image(data, header, ra_deg=cluster.ra_deg, dec_deg=cluster.dec_deg,
                                             radius_arcmin=proc.crop_radius_arcmin)
        out = {}
        for name, arr in cropped.items():
            hh = h.copy()
            if name in ("exposure", "bgexpmap"):
                hh["BUNIT"] = fits.getheader(exp_path).get("BUNIT", "s")
            if name == "background" and "EXPOSURE" in fits.getheader(bk["background"]):
                hh["EXPOSURE"] = fits.getheader(bk["background"])["EXPOSURE"]
            out[name] = str(images.write_image(folder / f"{name}.fits", arr, hh))
        return {**out, "minx": crop.minx, "miny": crop.miny, "binsize": crop.binsize, "files": list(out.values())}

    cr, _ = runner.run(item, "crop", cdir / "crop",
                       {"counts": counts_path, "exposure": exp_path, "mask": Path(mk["mask"]),
                        "background": Path(bk["background"]) if bk else None, **_params(config, "crop")}, _crop)
    result.outputs["crop"] = cr

    def _bin(folder: Path) -> dict[str, Any]:
        b = config.binning
        image = cr["counts"]
        bg_path = cr.get("background")
        bgexp_path = cr.get("bgexpmap")
        if proc.binning_input == "flux":
            image = str(_flux_image(Path(cr["counts"]), Path(cr["exposure"]), folder / "flux_scaled.fits",
                                    k=proc.flux_k))
            bg_path = bgexp_path = None  # as the hand pipeline: the flux image is binned without a background
        paths = contbin.run_contbin(image, out_dir=folder, expmap_path=cr["exposure"], mask_path=cr["mask"],
                                    bg_path=bg_path, bgexpmap_path=bgexp_path, sn=b.sn, smoothsn=b.smoothsn,
                                    constrainfill=b.constrainfill, constrainval=b.constrainval, noscrub=b.noscrub,
                                    guarantee_sn=b.guarantee_sn)
        n_bins = int(fits.getheader(paths["bins"], 1)["NAXIS2"])
        return {**{k: str(v) for k, v in paths.items()}, "n_bins": n_bins, "input": proc.binning_input,
                "files": [str(v) for v in paths.values()]}

    bn, _ = runner.run(item, "contbin", cdir / "contbin",
                       {k: Path(v) for k, v in cr.items() if k in ("counts", "exposure", "mask", "background")}
                       | _params(config, "contbin"), _bin)
    result.outputs["contbin"] = bn

    def _outlines(folder: Path) -> dict[str, Any]:
        files = outlines.write_outline_regions(bn["binmap"], out_dir=folder, coords=("physical", "fk5"))
        return {"combined_fk5": str(folder / "xaf_bins_fk5.reg"), "n_files": len(files),
                "files": [str(folder / "xaf_bins_fk5.reg"), str(folder / "xaf_bins_physical.reg")]}

    ol, _ = runner.run(item, "outlines", cdir / "outlines", {"binmap": Path(bn["binmap"])}, _outlines)
    result.outputs["outlines"] = ol

    def _profile(folder: Path) -> dict[str, Any]:
        counts, header = fits.getdata(cr["counts"], header=True)
        cx, cy = _centre(header)
        prof = profiles.radial_profile(counts, center_xy=(cx, cy), pixel_arcsec=pix_arcsec,
                                       exposure=fits.getdata(cr["exposure"]), mask=fits.getdata(cr["mask"]) > 0,
                                       r_max_arcsec=proc.crop_radius_arcmin * 60.0, n_bins=proc.profile_bins)
        path = profiles.write_profile(folder / "profile.fits", prof)
        return {"profile": str(path), "n_annuli": len(prof), "files": [str(path)]}

    pf, _ = runner.run(item, "profile", cdir / "profile",
                       {"counts": Path(cr["counts"]), "exposure": Path(cr["exposure"]),
                        "mask": Path(cr["mask"]), **_params(config, "profile")}, _profile)
    result.outputs["profile"] = pf

    def _measure(folder: Path) -> dict[str, Any]:
        from xmine import measure

        table = measure.measure_cluster(result.outputs, cluster, cosmology=config.measure.cosmology,
                                        arf=config.measure.arf)
        per_bin = Path(ol["combined_fk5"]).parent / "fk5"  # the outlines step's one file per bin
        files = [per_bin / f"xaf_{int(b)}.reg" for b in table["bin_id"]]
        table["outline_fk5"] = [_region_shapes(f) for f in files]
        table["region_file"] = [str(f) if f.exists() else "" for f in files]
        path = measure.write_regions(folder / "regions.fits", table)
        return {"regions": str(path), "n_regions": len(table), "files": [str(path)]}

    ms, _ = runner.run(item, "measure", cdir / "measure",
                       {"binmap": Path(bn["binmap"]), "counts": Path(cr["counts"]), "merged": [
                           Path(merged[b]) for b in ("broad", "soft", "hard") if b in merged],
                        "background": Path(bk["background"]) if bk else None, "outlines": ol.get("files", []),
                        "z": cluster.z, "r500": cluster.r500_kpc, "tx": cluster.tx_kev,
                        **_params(config, "measure")}, _measure)
    result.outputs["measure"] = ms

    if not config.spectra.enabled:
        return
    # a folder of *<obsid>*.arf/.rmf, "simulator" (xmine's simulated observations) or none
    responses = None if config.spectra.responses_dir is None else str(config.spectra.responses_dir)

    def _spectra(folder: Path) -> dict[str, Any]:
        from xmine import spectra

        table = spectra.extract_cluster_spectra(result.outputs, cluster, config=config, out_dir=folder,
                                                responses=responses)
        path = folder / "region_spectra.ecsv"
        with atomic_write(path) as tmp:
            table.write(tmp, format="ascii.ecsv")
        files = [str(path), *sorted({str(f) for c in ("pha_file", "bkg_file") for f in table[c] if f})]
        return {"table": str(path), "n_spectra": len(table), "files": files}

    sp, _ = runner.run(item, "spectra", cdir / "spectra",
                       {"binmap": Path(bn["binmap"]), "obs": {str(k): [v["evt2"], Path(v["gti"])]
                                                              for k, v in clean.items()},
                        "mask": Path(mk["mask"]), "responses": responses, **_params(config, "spectra")}, _spectra)
    result.outputs["spectra"] = sp
    if not config.fit.enabled:
        return

    def _fit(folder: Path) -> dict[str, Any]:
        from astropy.table import Table

        from xmine import fit

        f = config.fit
        table = fit.fit_region_spectra(Table.read(sp["table"], format="ascii.ecsv"), nh_1e22=f.nh_1e22,
                                       redshift=cluster.z, model=f.model, emin=f.emin_kev, emax=f.emax_kev,
                                       stat=f.stat, ra_deg=cluster.ra_deg, dec_deg=cluster.dec_deg,
                                       errors=f.errors)
        path = folder / "region_fits.ecsv"
        with atomic_write(path) as tmp:
            table.write(tmp, format="ascii.ecsv")
        return {"table": str(path), "n_fits": len(table), "files": [str(path)]}

    ft, _ = runner.run(item, "fit", cdir / "fit", {"spectra": Path(sp["table"]), "z": cluster.z,
                                                   **_params(config, "fit")}, _fit)
    result.outputs["fit"] = ft


def _region_shapes(path: Path) -> str:
    """Return the shapes of a DS9 region file (fk5) on one line, ``;``-separated; empty if there is none."""
    if not path.exists():
        return ""
    shapes = [ln.strip() for ln in path.read_text().splitlines()
              if ln.strip().lstrip("-").startswith(("polygon", "box", "circle", "ellipse"))]
    return "; ".join(shapes)


def _flux_image(counts_path: Path, exposure_path: Path, out: Path, *, k: float) -> Path:
    """Write the hand pipeline's binning input: ``k · rate · ⟨counts⟩/⟨rate⟩`` where exposure > 0, else 0.

    Its values are not counts, so contbin's S/N on it is nominal, not a Poisson S/N.
    """
    from astropy.io import fits

    from xmine.images import write_image

    counts, header = fits.getdata(counts_path, header=True)
    exposure = fits.getdata(exposure_path).astype(np.float64)
    good = exposure > 0
    rate = np.zeros(counts.shape)
    rate[good] = counts[good] / exposure[good]
    scale = k * counts[good].mean() / rate[good].mean() if good.any() and rate[good].mean() > 0 else 0.0
    header = header.copy()
    header["BUNIT"] = ("count", "k*rate*<counts>/<rate>: nominal, not Poisson")
    header["FLUXK"] = (k, "flux route scale k")
    return write_image(out, (rate * scale).astype(np.float32), header)


def _fits_safe_meta(table: Any) -> Any:
    """Return a view of a table whose metadata are valid FITS keywords (long names go to HISTORY)."""
    out = table.copy(copy_data=False)
    meta: dict[str, Any] = {}
    for key, value in table.meta.items():
        if len(key) <= 8 and key.replace("_", "").isalnum() and not isinstance(value, (dict, list)):
            meta[key.upper()] = value
        else:
            meta.setdefault("HISTORY", []).append(f"{key} = {value}")
    out.meta = meta
    return out


def _table_hash(table: Any) -> str | None:
    if table is None:
        return None
    import io

    buf = io.StringIO()
    table.write(buf, format="ascii.ecsv")
    return hash_inputs(buf.getvalue())


def load_cluster_sample(path: str | Path, *, names: Sequence[str] = ()) -> list[ClusterSpec]:
    """Read clusters to process from a table (CSV, ECSV, FITS).

    Columns: ``name``, ``ra_deg`` (or ``ra``), ``dec_deg`` (or ``dec``), ``obsids``
    (space-, comma- or semicolon-separated) or one row per (name, ``obsid``), optional ``z``
    (or ``redshift``), ``r500_kpc`` (or ``r500``, XCS's ``xcs_r500``) and ``tx_kev`` (or ``tx``).

    Parameters
    ----------
    path : path-like
    names : sequence of str, optional
        Keep only these clusters (all when empty).
    """
    p = Path(path)
    t = _read_table(p, "the cluster sample")
    cols = {c.lower(): c for c in t.colnames}

    def col(*choices: str) -> str:
        for c in choices:
            if c in cols:
                return cols[c]
        msg = f"{p}: no column {' or '.join(choices)} (columns: {', '.join(t.colnames)})"
        raise InputError(msg)

    cname, cra, cdec = col("name"), col("ra_deg", "ra"), col("dec_deg", "dec")
    cobs = col("obsids", "obsid")
    cz = cols.get("z") or cols.get("redshift")
    cr500 = next((cols[c] for c in ("r500_kpc", "r500", "xcs_r500") if c in cols), None)
    ctx = next((cols[c] for c in ("tx_kev", "tx", "kt_kev") if c in cols), None)
    specs: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(t):
        name = str(row[cname]).strip()
        if names and name not in names:
            continue
        raw = str(row[cobs]).replace(";", " ").replace(",", " ").split()
        try:
            obsids = [int(o) for o in raw]
            ra, dec = float(row[cra]), float(row[cdec])
        except (ValueError, TypeError) as exc:
            msg = f"{p} row {i + 1} ({name}): {exc}; obsids must be integers and ra/dec degrees"
            raise InputError(msg) from exc
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            msg = f"{p} row {i + 1}: cluster name {name!r} cannot name a folder; use letters, digits, + - _ and spaces"
            raise InputError(msg)
        if not (np.isfinite(ra) and 0.0 <= ra < 360.0):
            msg = f"{p} row {i + 1} ({name}): {cra} = {ra} is outside [0, 360)"
            raise InputError(msg)
        if not -90.0 <= dec <= 90.0:
            msg = f"{p} row {i + 1} ({name}): {cdec} = {dec} is outside [-90, 90]"
            raise InputError(msg)
        if not obsids:
            msg = f"{p} row {i + 1} ({name}): no obsid given"
            raise InputError(msg)
        spec = specs.setdefault(name, {"ra": ra, "dec": dec, "obsids": [], "z": None, "r500": None, "tx": None})
        if abs(spec["ra"] - ra) * np.cos(np.radians(dec)) * 3600 > 5 or abs(spec["dec"] - dec) * 3600 > 5:
            msg = (f"{p} row {i + 1} ({name}): position {ra}, {dec} differs from the same name's earlier row "
                   f"({spec['ra']}, {spec['dec']}); give each cluster one position")
            raise InputError(msg)
        spec["obsids"].extend(o for o in obsids if o not in spec["obsids"])
        for key, c in (("z", cz), ("r500", cr500), ("tx", ctx)):
            if c is not None and not np.ma.is_masked(row[c]):
                try:
                    spec[key] = float(row[c])
                except (TypeError, ValueError) as exc:
                    msg = f"{p} row {i + 1} ({name}): {c} = {row[c]!r} is not a number"
                    raise InputError(msg) from exc
    if not specs and not names:
        msg = f"{p}: no clusters in the sample"
        raise InputError(msg)
    missing = [n for n in names if n not in specs]
    if missing:
        msg = f"{p}: no cluster named {', '.join(missing)}"
        raise InputError(msg)
    return [ClusterSpec(name=n, ra_deg=s["ra"], dec_deg=s["dec"], obsids=tuple(s["obsids"]), z=s["z"],
                        r500_kpc=s["r500"], tx_kev=s["tx"]) for n, s in specs.items()]


def _read_table(p: Path, what: str) -> Any:
    from astropy.io.registry import IORegistryError
    from astropy.table import Table

    fmt = {".csv": "ascii.csv", ".txt": "ascii", ".dat": "ascii", ".tsv": "ascii.tab"}.get(p.suffix.lower())
    try:
        return Table.read(p, format=fmt)
    except (OSError, ValueError, TypeError, IORegistryError) as exc:
        msg = f"{p}: cannot read {what} ({str(exc).splitlines()[0]}); give a CSV, ECSV, FITS or VOTable file"
        raise InputError(msg) from exc


def read_catalog(path: str | Path) -> Any:
    """Read a table of catalogued point sources (FITS, CSV, ECSV, VOTable) for the masks.

    It needs numeric position columns (``ra``/``dec``, ``ra_deg``/``dec_deg`` or 4XMM's ``SC_RA``/``SC_DEC``).
    """
    from xmine import masks

    p = Path(path)
    table = _read_table(p, "the point-source catalogue")
    cols = [masks._first(table, ("ra", "ra_deg", "sc_ra")), masks._first(table, ("dec", "dec_deg", "sc_dec"))]
    if None in cols:
        msg = f"{p}: no ra/dec (or ra_deg/dec_deg, SC_RA/SC_DEC) columns (columns: {', '.join(table.colnames)})"
        raise InputError(msg)
    for c in cols:
        try:
            np.asarray(table[c], dtype=float)
        except (ValueError, TypeError) as exc:
            msg = f"{p}: column {c} is not numeric degrees ({exc}); sexagesimal positions must be converted first"
            raise InputError(msg) from exc
    return table


@dataclass
class ProcessSummary:
    """What :func:`run_process` did: one printable row per cluster."""

    run_id: str
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: list[ClusterResult] = field(default_factory=list)
    failed: int = 0


def run_process(clusters: Sequence[ClusterSpec], *, config: XmineConfig, catalog: Any = None,
                run_id: str | None = None, store: Store | None = None) -> ProcessSummary:
    """Process clusters one after the other, recording the run; a failed cluster does not stop the others.

    Parameters
    ----------
    clusters : sequence of ClusterSpec
    config : XmineConfig
    catalog : astropy.table.Table, optional
        Catalogued point sources (all fields together).
    run_id : str, optional
        Resume this run (finished steps are skipped).
    store : Store, optional
        An open writable store (default: ``config.project.store``).
    """
    from xmine.store import open_store

    own = store is None
    st = open_store(config.project.store) if store is None else store
    rid: str | None = None
    status = "failed"  # until the loop below finishes: a traceback or Ctrl-C leaves a failed run, not a running one
    try:
        rid = st.start_run("process", {"config": config.model_dump(mode="json"),
                                       "clusters": [c.name for c in clusters]}, run_id=run_id)
        summary = ProcessSummary(run_id=rid, columns=["cluster", "obsids", "clean", "masked", "review", "bins",
                                                      "outlines (fk5)"])
        for c in clusters:
            try:
                res = process_cluster(c, config=config, store=st, run_id=rid, catalog=catalog)
            except XmineError as exc:
                summary.failed += 1
                st.record_failure(rid, f"cluster/{c.name}", "process", str(exc))
                summary.rows.append((c.name, " ".join(map(str, c.obsids)), "-", "-", "-", "-", f"failed: {exc}"))
                continue
            summary.results.append(res)
            obs = res.outputs.get("obs", {})
            clean = " ".join(f"{100 * o['clean_fraction']:.0f}%" for o in obs.values())
            used = " ".join(obs) + (f" ({len(res.failed_obsids)} failed)" if res.failed_obsids else "")
            summary.rows.append((c.name, used, clean, res.outputs["masks"]["n_masked"],
                                 res.outputs["masks"]["n_review"], res.n_bins,
                                 res.outputs["outlines"]["combined_fk5"]))
        status = "finished" if summary.failed == 0 else "finished with failures"
        summary.notes.append(f"steps, outputs and failures are in {st.path} (run {rid}); rerun with "
                             f"--run-id {rid} to resume")
    finally:
        if rid is not None:
            with contextlib.suppress(XmineError):
                st.finish_run(rid, status)
        if own:
            st.close()
    return summary
