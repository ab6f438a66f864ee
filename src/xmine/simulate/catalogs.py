"""CSC 2.1-like and 4XMM-like catalogue rows made from the same truth.

Chandra Source Catalog 2.1 (``csc21``)
    ``master_source`` (names ``2CXO Jhhmmss.s±ddmmss``, a trailing ``X`` for
    extended sources; ``err_ellipse_r0/r1`` are **95 %** error-ellipse radii in
    arcsec, ``err_ellipse_ang`` degrees; ``flux_aper_b`` 0.5–7 keV in
    erg cm⁻² s⁻¹; ``hard_hs/hard_ms/hard_hm`` from s 0.5–1.2, m 1.2–2,
    h 2–7 keV counts; ``var_intra_index_b`` 0–10; ``likelihood_class`` TRUE or
    MARGINAL), ``master_stack_assoc`` (name → ``detect_stack_id`` like
    ``acisfJ1105062m585043_001``, ``region_id``), ``stack_observation_assoc``
    (stack, region → obsid, obi, instrument) and an ``observations`` table.
4XMM (``xmm``)
    detections (``DETID``; ``SRCID`` shared by the detections of one source;
    ``IAUNAME`` ``4XMM Jhhmmss.s±ddmmss``; ``SC_RA/SC_DEC``; ``SC_POSERR`` the
    **1σ** per-coordinate error in arcsec; ``SC_EP_8_FLUX`` 0.2–12 keV;
    ``SC_EXTENT`` (β-model core radius, arcsec, 0 for point sources),
    ``SC_EXT_ML``; ``SC_HR1..4`` from bands 0.2–0.5–1–2–4.5–12 keV;
    ``SC_VAR_FLAG``; ``OBS_ID``) and the unique-source table of the local
    DaCHS server.

Rows are not the truth: counts are Poisson draws of the expected counts of
each observation, sources below a significance of 3 (CSC) or a detection
likelihood of 6 (4XMM) are missing, positions are scattered by the stated
errors, and fluxes and hardness ratios carry their counting noise. The
XMM observations are invented (one or two 30/15 ks EPIC pointings per cluster,
effective area 5× ACIS, PSF σ 6″, vignetting ``1 − 0.035 θ``).

``truth_match`` links every catalogue row to its truth source and gives the
1σ per-coordinate position error that was used to scatter it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table
from astropy.time import Time

from xmine.simulate import spectra
from xmine.simulate.acis import project, psf_sigma_arcsec, unproject, vignetting
from xmine.simulate.events import _Frame, _row_dict
from xmine.simulate.morphology import cluster_shape
from xmine.simulate.truth import Truth
from xmine.store import atomic_write

__all__ = ["CSC_MASTER_COLUMNS", "XMM_SOURCE_COLUMNS", "Catalogs", "iau_name", "make_catalogs",
           "write_catalogs"]

#: √χ²₂(0.95): a 95 % radius is this many 1σ per-coordinate errors (circular Gaussian).
R95_PER_SIGMA = math.sqrt(-2.0 * math.log(0.05))
#: Systematic (astrometric) 1σ per-coordinate error added to CSC / 4XMM positions (arcsec).
CSC_SYS_ARCSEC = 0.16
XMM_SYS_ARCSEC = 0.5
FLUX_UNIT = "erg cm-2 s-1"

#: master_source columns of the local DaCHS server (``csc21/q.rd``), in order.
CSC_MASTER_COLUMNS = ["name", "ra", "dec", "err_ellipse_r0", "err_ellipse_r1", "err_ellipse_ang", "conf_flag",
                      "extent_flag", "sat_src_flag", "streak_src_flag", "var_flag", "significance",
                      "likelihood_class", "flux_aper_b", "flux_aper_w", "hard_hs", "hard_ms", "hard_hm",
                      "var_intra_index_b", "acis_num", "hrc_num"]
#: xmmssc.catalogue columns of the local DaCHS server (``xmm/q.rd``), in order.
XMM_SOURCE_COLUMNS = ["SRCID", "IAUNAME", "SC_RA", "SC_DEC", "SC_POSERR", "SC_EXTENT", "SC_EXT_ML",
                      "SC_EP_8_FLUX", "SC_EP_8_FLUX_ERR", "SC_HR1", "SC_HR2", "SC_HR3", "SC_HR4",
                      "SC_VAR_FLAG", "SUM_FLAG", "N_DETECTIONS"]

_CSC_BANDS = {"s": (0.5, 1.2), "m": (1.2, 2.0), "h": (2.0, 7.0)}
_XMM_BANDS = [(0.2, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.5), (4.5, 12.0)]
_XMM_AREA_FACTOR = 5.0
_XMM_PSF_SIGMA = 6.0
_XMM_BG = 4e-3  # ct/s/arcmin² in the EPIC aperture


@dataclass
class Catalogs:
    """Simulated catalogue tables.

    Attributes
    ----------
    csc_master_source, csc_master_stack_assoc, csc_stack_observation_assoc, csc_observations : Table
        CSC 2.1-like tables.
    xmm_detections, xmm_sources, xmm_observations : Table
        4XMM-like detections, unique sources (the DaCHS ``xmmssc.catalogue``
        columns) and the invented XMM pointings.
    truth_match : Table
        ``catalogue, cat_id, truth_name, kind, ra_true, dec_true, ra_cat, dec_cat,
        pos_err_1sigma_arcsec`` per catalogue row.
    """

    csc_master_source: Table
    csc_master_stack_assoc: Table
    csc_stack_observation_assoc: Table
    csc_observations: Table
    xmm_detections: Table
    xmm_sources: Table
    xmm_observations: Table
    truth_match: Table

    def tables(self) -> dict[str, Table]:
        """Return every table by its file stem."""
        return {"csc21/master_source": self.csc_master_source,
                "csc21/master_stack_assoc": self.csc_master_stack_assoc,
                "csc21/stack_observation_assoc": self.csc_stack_observation_assoc,
                "csc21/observations": self.csc_observations,
                "xmm/detections": self.xmm_detections, "xmm/epic_source_cat": self.xmm_sources,
                "xmm/observations": self.xmm_observations, "truth_match": self.truth_match}


def _hms_dms(ra: float, dec: float) -> tuple[str, str]:
    """IAU-style truncated ``HHMMSS.s`` and ``±DDMMSS`` (no rounding, as the catalogues do)."""
    tenths = math.floor((ra % 360.0) / 15.0 * 36000.0 + 1e-9)
    hh, rest = divmod(tenths, 36000)
    mm, rest = divmod(rest, 600)
    sign = "+" if dec >= 0 else "-"
    arcsec = math.floor(abs(dec) * 3600.0 + 1e-9)
    dd, rest2 = divmod(arcsec, 3600)
    am, asec = divmod(rest2, 60)
    return f"{hh:02d}{mm:02d}{rest // 10:02d}.{rest % 10:d}", f"{sign}{dd:02d}{am:02d}{asec:02d}"


def iau_name(prefix: str, ra_deg: float, dec_deg: float, *, extended: bool = False) -> str:
    """Catalogue name such as ``2CXO J110507.4-585105`` (``X`` appended when extended)."""
    h, d = _hms_dms(ra_deg, dec_deg)
    return f"{prefix} J{h}{d}" + ("X" if extended else "")


def _stack_id(ra: float, dec: float, n: int = 1) -> str:
    h, d = _hms_dms(ra, dec)
    return f"acisfJ{h.replace('.', '')}{'p' if d[0] == '+' else 'm'}{d[1:]}_{n:03d}"


def _xmm_area(e: np.ndarray) -> np.ndarray:
    return (1.0 - np.exp(-((e / 0.35) ** 2))) * np.exp(-((e / 8.0) ** 2))


def _band_shares(kind: str, param: float, bands: list[tuple[float, float]], *, xmm: bool) -> np.ndarray:
    e = spectra.EGRID_KEV
    n = spectra.photon_spectrum(kind, param)
    a = _xmm_area(e) if xmm else spectra.effective_area_cm2(e)
    out = []
    for lo, hi in bands:
        m = (e >= lo) & (e <= hi)
        out.append(np.trapezoid((n * a)[m], e[m]))
    arr = np.array(out, dtype=np.float64)
    return np.asarray(arr / arr.sum(), dtype=np.float64)


def _ratio(a: float, b: float) -> float:
    return float("nan") if a + b <= 0 else float(np.clip((a - b) / (a + b), -1.0, 1.0))


@dataclass
class _Src:
    name: str
    kind: str  # "cluster" | "point"
    ra: float
    dec: float
    rate: float
    spec: tuple[str, float]
    extent_arcsec: float
    variable: bool


def _sources(truth: Truth) -> list[_Src]:
    out = []
    for c in truth.clusters:
        cd = _row_dict(c)
        shape = cluster_shape(cd)
        kt = sum(comp.fraction * comp.kt_kev for comp in shape.components) / sum(
            comp.fraction for comp in shape.components)
        out.append(_Src(cd["name"], "cluster", cd["ra_deg"], cd["dec_deg"],
                        cd["rate_cps"] * shape.kept_fraction(), ("thermal", kt),
                        max(comp.rc_arcsec for comp in shape.components if comp.dx_arcsec == 0), False))
    for p in truth.point_sources:
        pd = _row_dict(p)
        out.append(_Src(pd["name"], "point", pd["ra_deg"], pd["dec_deg"], pd["rate_cps"],
                        ("powerlaw", pd["gamma"]), 0.0,
                        pd["var_kind"] != "none" and pd["var_amp"] >= 0.3))
    return out


def _scatter(ra: float, dec: float, sig_maj: float, sig_min: float, ang_deg: float,
             rng: np.random.Generator) -> tuple[float, float]:
    a, b = rng.standard_normal(2)
    s, c = math.sin(math.radians(ang_deg)), math.cos(math.radians(ang_deg))
    east = a * sig_maj * s + b * sig_min * c
    north = a * sig_maj * c - b * sig_min * s
    r, d = unproject(east, north, ra, dec)
    return float(r), float(d)


def make_catalogs(truth: Truth, *, seed: int = 0) -> Catalogs:
    """Make CSC 2.1-like and 4XMM-like catalogue tables from a truth.

    Parameters
    ----------
    truth : Truth
        The sky.
    seed : int, optional
        Random seed (the Chandra dither phases use the same seed as
        :func:`~xmine.simulate.events.simulate_observation`, so the expected
        counts match the event files of that seed).

    Returns
    -------
    Catalogs
    """
    rng = np.random.default_rng([int(seed), 77])
    srcs = _sources(truth)
    obs_rows = [_row_dict(o) for o in truth.observations]
    frames = [_Frame(o, np.random.default_rng([int(seed), int(o["obsid"])])) for o in obs_rows]

    # ---- CSC stacks: observations whose pointings agree within 60″
    stacks: list[list[int]] = []
    for i, o in enumerate(obs_rows):
        for st in stacks:
            o0 = obs_rows[st[0]]
            xi, eta = project(o["ra_pnt"], o["dec_pnt"], o0["ra_pnt"], o0["dec_pnt"])
            if math.hypot(float(xi), float(eta)) < 60.0:
                st.append(i)
                break
        else:
            stacks.append([i])
    stack_ids = []
    used: dict[str, int] = {}
    for st in stacks:
        base = _stack_id(float(np.mean([obs_rows[i]["ra_pnt"] for i in st])),
                         float(np.mean([obs_rows[i]["dec_pnt"] for i in st])))
        used[base] = used.get(base, 0) + 1
        stack_ids.append(base[:-3] + f"{used[base]:03d}")

    ms_rows: list[dict[str, Any]] = []
    msa_rows: list[tuple[str, str, int, str]] = []
    soa_rows: list[tuple[str, int, int, int, str]] = []
    match_rows: list[tuple[Any, ...]] = []
    region_next = [0] * len(stacks)
    names_seen: dict[str, int] = {}
    for s in srcs:
        per_obs = []  # (obs index, expected broad counts, bg counts, psf sigma, f_on)
        for i, (o, fr) in enumerate(zip(obs_rows, frames, strict=True)):
            x, y = fr.sky_pix(s.ra, s.dec)
            th = float(fr.theta_arcmin(x, y))
            if th > 30:
                continue
            sig = float(psf_sigma_arcsec(th))
            f_on = fr.on_chip_fraction(float(x), float(y), sig) if s.kind == "point" else (
                1.0 if fr.on_chip_fraction(float(x), float(y), sig) > 0 else 0.0)
            if f_on <= 0:
                continue
            expected = s.rate * fr.livetime * float(vignetting(th)) * f_on
            r_ap = max(1.0, 2.5 * math.sqrt(sig ** 2 + (s.extent_arcsec * 1.5) ** 2))
            bg = ((o["sky_bg_cps_arcmin2"] + 0.5 * o["particle_bg_cps_arcmin2"])
                  * math.pi * r_ap ** 2 / 3600.0 * fr.livetime)
            per_obs.append((i, expected, bg, sig, f_on, fr.livetime * float(vignetting(th)) * f_on))
        if not per_obs:
            continue
        counts = np.array([rng.poisson(e + b) for _, e, b, *_ in per_obs], dtype=float)
        bgs = np.array([b for _, _, b, *_ in per_obs])
        net = counts - bgs
        c_tot, net_tot = counts.sum(), net.sum()
        significance = net_tot / (1.0 + math.sqrt(c_tot + 0.75))
        if significance < 3.0:
            continue
        # 1σ per-coordinate error: PSF (core + wing variance) over √counts, combined over observations
        var_psf = np.array([(0.85 + 0.15 * 9.0) * p[3] ** 2 for p in per_obs])
        weights = np.maximum(net, 0.5) / (var_psf + s.extent_arcsec ** 2)
        sigma = math.sqrt(1.0 / weights.sum() + CSC_SYS_ARCSEC ** 2)
        if s.kind == "cluster":  # the centre of a diffuse source is known only to a fraction of its size
            sigma = max(sigma, 0.05 * s.extent_arcsec)
        elong = rng.uniform(0.0, 0.15)
        sig_maj, sig_min = sigma * math.sqrt(1 + elong), sigma * math.sqrt(1 - elong)
        ang = float(rng.uniform(0, 180))
        ra_c, dec_c = _scatter(s.ra, s.dec, sig_maj, sig_min, ang, rng)
        exposure = sum(p[5] for p in per_obs)
        rate_meas = max(net_tot, 0.0) / exposure
        ecf = spectra.energy_flux_per_rate(*s.spec, 0.5, 7.0)
        flux = rate_meas * ecf
        ferr = math.sqrt(c_tot) / exposure * ecf
        shares = _band_shares(*s.spec, list(_CSC_BANDS.values()), xmm=False)
        bc = rng.multinomial(int(max(net_tot, 0)), shares)
        extended = s.kind == "cluster"
        name = iau_name("2CXO", ra_c, dec_c, extended=extended)
        if name in names_seen:
            # two sources within ~1″ share a name: a real catalogue would see one confused source
            ms_rows[names_seen[name]]["conf_flag"] = True
            continue
        names_seen[name] = len(ms_rows)
        variable = s.variable and c_tot >= 30
        ms_rows.append({
            "name": name, "ra": ra_c, "dec": dec_c,
            "err_ellipse_r0": R95_PER_SIGMA * sig_maj, "err_ellipse_r1": R95_PER_SIGMA * sig_min,
            "err_ellipse_ang": ang, "conf_flag": False, "extent_flag": extended, "sat_src_flag": False,
            "streak_src_flag": False, "var_flag": variable, "significance": significance,
            "likelihood_class": "TRUE" if significance >= 5 else "MARGINAL",
            "flux_aper_b": flux, "flux_aper_lolim_b": max(flux - 1.645 * ferr, 0.0),
            "flux_aper_hilim_b": flux + 1.645 * ferr, "flux_aper_w": math.nan,
            "flux_aper90_b": flux * 0.9, "hard_hs": _ratio(bc[2], bc[0]), "hard_ms": _ratio(bc[1], bc[0]),
            "hard_hm": _ratio(bc[2], bc[1]),
            "var_intra_index_b": int(rng.integers(6, 11)) if variable else int(rng.choice([0, 0, 0, 1, 2])),
            "var_intra_prob_b": float(rng.uniform(0.99, 1.0)) if variable else float(rng.uniform(0.0, 0.6)),
            "var_inter_index_b": (int(rng.integers(6, 11)) if variable else int(rng.choice([0, 0, 1])))
            if len(per_obs) > 1 else -1,
            "acis_num": len(per_obs), "hrc_num": 0,
        })
        match_rows.append(("csc21", name, s.name, s.kind, s.ra, s.dec, ra_c, dec_c, sigma))
        by_stack: dict[int, list[int]] = {}
        for p in per_obs:
            k = next(j for j, st in enumerate(stacks) if p[0] in st)
            by_stack.setdefault(k, []).append(p[0])
        for k, obs_idx in by_stack.items():
            region_next[k] += 1
            msa_rows.append((name, stack_ids[k], region_next[k], "u"))
            for i in obs_idx:
                soa_rows.append((stack_ids[k], region_next[k], int(obs_rows[i]["obsid"]), 0, "ACIS"))

    master = _typed_table(ms_rows, ["name", "ra", "dec", "err_ellipse_r0", "err_ellipse_r1", "err_ellipse_ang",
                                    "conf_flag", "extent_flag", "sat_src_flag", "streak_src_flag", "var_flag",
                                    "significance", "likelihood_class", "flux_aper_b", "flux_aper_lolim_b",
                                    "flux_aper_hilim_b", "flux_aper_w", "flux_aper90_b", "hard_hs", "hard_ms",
                                    "hard_hm", "var_intra_index_b", "var_intra_prob_b", "var_inter_index_b",
                                    "acis_num", "hrc_num"],
                          units={"ra": "deg", "dec": "deg", "err_ellipse_r0": "arcsec", "err_ellipse_r1": "arcsec",
                                 "err_ellipse_ang": "deg", "flux_aper_b": FLUX_UNIT, "flux_aper_lolim_b": FLUX_UNIT,
                                 "flux_aper_hilim_b": FLUX_UNIT, "flux_aper_w": FLUX_UNIT,
                                 "flux_aper90_b": FLUX_UNIT})
    master["var_intra_index_b"] = np.asarray(master["var_intra_index_b"], dtype=np.int32)
    # a source seen in one observation has no inter-observation index: NULL (masked; TNULL in FITS)
    master["var_inter_index_b"] = np.ma.masked_less(np.asarray(master["var_inter_index_b"], dtype=np.int32), 0)
    master["acis_num"] = np.asarray(master["acis_num"], dtype=np.int32)
    master["hrc_num"] = np.asarray(master["hrc_num"], dtype=np.int32)
    msa = Table(rows=msa_rows or None, names=["name", "detect_stack_id", "region_id", "match_type"],
                dtype=[str, str, np.int32, str])
    soa = Table(rows=soa_rows or None, names=["detect_stack_id", "region_id", "obsid", "obi", "instrument"],
                dtype=[str, np.int32, np.int32, np.int32, str])
    cobs = Table()
    cobs["obsid"] = np.array([o["obsid"] for o in obs_rows], dtype=np.int32)
    cobs["obi"] = np.zeros(len(obs_rows), dtype=np.int32)
    cobs["ra_pnt"] = np.array([o["ra_pnt"] for o in obs_rows], dtype=float)
    cobs["dec_pnt"] = np.array([o["dec_pnt"] for o in obs_rows], dtype=float)
    cobs["roll"] = np.array([o["roll_deg"] % 360.0 for o in obs_rows], dtype=float)
    cobs["instrument"] = np.array([o["instrument"] for o in obs_rows], dtype=str)
    cobs["exposure_s"] = np.array([fr.livetime for fr in frames], dtype=float)
    cobs["gti_obs"] = np.array([_iso(fr.t0) for fr in frames], dtype=str)
    cobs["gti_end"] = np.array([_iso(fr.t1) for fr in frames], dtype=str)
    cobs["target_name"] = np.array([str(o["cluster"]) or "FIELD" for o in obs_rows], dtype=str)
    cobs["detect_stack_id"] = np.array([stack_ids[next(k for k, st in enumerate(stacks) if i in st)]
                                        for i in range(len(obs_rows))], dtype=str)
    for col, unit in (("ra_pnt", "deg"), ("dec_pnt", "deg"), ("roll", "deg"), ("exposure_s", "s")):
        cobs[col].unit = unit

    xdet, xsrc, xobs, xmatch = _xmm(truth, srcs, rng)
    match = Table(rows=match_rows + xmatch or None,
                  names=["catalogue", "cat_id", "truth_name", "kind", "ra_true", "dec_true", "ra_cat", "dec_cat",
                         "pos_err_1sigma_arcsec"],
                  dtype=[str, str, str, str, float, float, float, float, float])
    for col, unit in (("ra_true", "deg"), ("dec_true", "deg"), ("ra_cat", "deg"), ("dec_cat", "deg"),
                      ("pos_err_1sigma_arcsec", "arcsec")):
        match[col].unit = unit
    return Catalogs(master, msa, soa, cobs, xdet, xsrc, xobs, match)


def _iso(met: float) -> str:
    return str(Time(50814.0, met / 86400.0, format="mjd", scale="tt").isot)[:19]


def _typed_table(rows: list[dict[str, Any]], names: list[str], *, units: dict[str, str]) -> Table:
    t = Table()
    for n in names:
        vals = [r[n] for r in rows]
        if vals and isinstance(vals[0], (bool, np.bool_)):
            t[n] = np.array(vals, dtype=bool)
        elif vals and isinstance(vals[0], str):
            t[n] = np.array(vals, dtype=str)
        elif vals and isinstance(vals[0], (int, np.integer)):
            t[n] = np.array(vals, dtype=np.int64)
        else:
            t[n] = np.array(vals, dtype=np.float64)
        if n in units:
            t[n].unit = units[n]
    return t


def _xmm(truth: Truth, srcs: list[_Src], rng: np.random.Generator
         ) -> tuple[Table, Table, Table, list[tuple[Any, ...]]]:
    xobs: list[dict[str, Any]] = []
    for k, c in enumerate(truth.clusters):
        n_obs = 2 if k % 2 == 0 else 1
        for j in range(n_obs):
            de, dn = (0.0, 0.0) if j == 0 else (3.0, -2.0)
            ra, dec = unproject(de * 60.0, dn * 60.0, float(c["ra_deg"]), float(c["dec_deg"]))
            xobs.append({"OBS_ID": f"09{(k + 1) % 10000:04d}{j + 1:02d}01", "RA": float(ra), "DEC": float(dec),
                         "EXPOSURE": 30000.0 if j == 0 else 15000.0,
                         "MJD_START": 58500.0 + 100.0 * k + 30.0 * j})
    det_rows: list[dict[str, Any]] = []
    src_rows: list[dict[str, Any]] = []
    matches: list[tuple[Any, ...]] = []
    detid = 0
    for s_idx, s in enumerate(srcs):
        dets = []
        for o in xobs:
            xi, eta = project(s.ra, s.dec, o["RA"], o["DEC"])
            th = math.hypot(float(xi), float(eta)) / 60.0
            if th > 15.0:
                continue
            vig = max(0.3, 1.0 - 0.035 * th)
            expected = s.rate * _XMM_AREA_FACTOR * o["EXPOSURE"] * vig
            r_ap = 2.5 * math.hypot(_XMM_PSF_SIGMA, 1.5 * s.extent_arcsec)
            bg = _XMM_BG * math.pi * r_ap ** 2 / 3600.0 * o["EXPOSURE"]
            c = rng.poisson(expected + bg)
            net = c - bg
            sig = net / (1.0 + math.sqrt(c + 0.75))
            det_ml = 0.5 * max(sig, 0.0) ** 2
            if det_ml < 6.0:
                continue
            poserr = math.sqrt((_XMM_PSF_SIGMA ** 2 + s.extent_arcsec ** 2) / max(net, 1.0) + XMM_SYS_ARCSEC ** 2)
            dets.append((o, net, poserr, det_ml, o["EXPOSURE"] * vig, vig))
        if not dets:
            continue
        w = np.array([1.0 / d[2] ** 2 for d in dets])
        sc_poserr = float(1.0 / math.sqrt(w.sum()))
        sc_ra, sc_dec = _scatter(s.ra, s.dec, sc_poserr, sc_poserr, 0.0, rng)
        eff = sum(d[4] for d in dets)
        net_tot = sum(d[1] for d in dets)
        ecf8 = spectra.energy_flux_per_rate(*s.spec, 0.2, 12.0) / _XMM_AREA_FACTOR
        flux = max(net_tot, 0.0) / eff * ecf8
        flux_err = math.sqrt(max(net_tot, 1.0)) / eff * ecf8
        shares = _band_shares(*s.spec, _XMM_BANDS, xmm=True)
        bcounts = rng.multinomial(int(max(net_tot, 0)), shares)
        hr = [_ratio(bcounts[i + 1], bcounts[i]) for i in range(4)]
        srcid = 209000000000000 + s_idx + 1
        extended = s.kind == "cluster"
        ext = float(min(80.0, s.extent_arcsec * rng.uniform(0.85, 1.15))) if extended else 0.0
        ext_ml = float(50.0 + 0.5 * net_tot) if extended else math.nan
        variable = s.variable and net_tot >= 50
        iau = iau_name("4XMM", sc_ra, sc_dec)
        sc_det_ml = float(sum(d[3] for d in dets))
        src_rows.append({"SRCID": srcid, "IAUNAME": iau, "SC_RA": sc_ra, "SC_DEC": sc_dec, "SC_POSERR": sc_poserr,
                         "SC_EXTENT": ext, "SC_EXT_ML": ext_ml, "SC_EP_8_FLUX": flux,
                         "SC_EP_8_FLUX_ERR": flux_err, "SC_HR1": hr[0], "SC_HR2": hr[1], "SC_HR3": hr[2],
                         "SC_HR4": hr[3], "SC_VAR_FLAG": variable, "SUM_FLAG": 0, "N_DETECTIONS": len(dets)})
        matches.append(("4xmm", str(srcid), s.name, s.kind, s.ra, s.dec, sc_ra, sc_dec, sc_poserr))
        for src_num, (o, net, poserr, det_ml, eff_o, _) in enumerate(dets, start=1):
            detid += 1
            d_ra, d_dec = _scatter(s.ra, s.dec, poserr, poserr, 0.0, rng)
            det_rows.append({
                "DETID": 109000000 + detid, "SRCID": srcid, "IAUNAME": iau, "SRC_NUM": src_num,
                "OBS_ID": o["OBS_ID"], "MJD_START": o["MJD_START"], "MJD_STOP": o["MJD_START"] + o["EXPOSURE"] / 86400,
                "RA": d_ra, "DEC": d_dec, "POSERR": poserr,
                "EP_8_FLUX": max(net, 0.0) / eff_o * ecf8, "EP_8_FLUX_ERR": math.sqrt(max(net, 1.0)) / eff_o * ecf8,
                "EP_8_CTS": max(net, 0.0), "EP_8_DET_ML": det_ml,
                "EP_EXTENT": ext, "EP_EXTENT_ML": ext_ml,
                "SC_RA": sc_ra, "SC_DEC": sc_dec, "SC_POSERR": sc_poserr, "SC_DET_ML": sc_det_ml,
                "SC_EP_8_FLUX": flux, "SC_EP_8_FLUX_ERR": flux_err,
                "SC_HR1": hr[0], "SC_HR2": hr[1], "SC_HR3": hr[2], "SC_HR4": hr[3],
                "SC_EXTENT": ext, "SC_EXT_ML": ext_ml, "SC_VAR_FLAG": variable, "SC_SUM_FLAG": 0,
                "N_DETECTIONS": len(dets)})
    det_names = ["DETID", "SRCID", "IAUNAME", "SRC_NUM", "OBS_ID", "MJD_START", "MJD_STOP", "RA", "DEC", "POSERR",
                 "EP_8_FLUX", "EP_8_FLUX_ERR", "EP_8_CTS", "EP_8_DET_ML", "EP_EXTENT", "EP_EXTENT_ML", "SC_RA",
                 "SC_DEC", "SC_POSERR", "SC_DET_ML", "SC_EP_8_FLUX", "SC_EP_8_FLUX_ERR", "SC_HR1", "SC_HR2",
                 "SC_HR3", "SC_HR4", "SC_EXTENT", "SC_EXT_ML", "SC_VAR_FLAG", "SC_SUM_FLAG", "N_DETECTIONS"]
    units = {"RA": "deg", "DEC": "deg", "SC_RA": "deg", "SC_DEC": "deg", "POSERR": "arcsec",
             "SC_POSERR": "arcsec", "EP_8_FLUX": FLUX_UNIT, "EP_8_FLUX_ERR": FLUX_UNIT, "SC_EP_8_FLUX": FLUX_UNIT,
             "SC_EP_8_FLUX_ERR": FLUX_UNIT, "EP_EXTENT": "arcsec", "SC_EXTENT": "arcsec", "MJD_START": "d",
             "MJD_STOP": "d", "EP_8_CTS": "ct"}
    det = _typed_table(det_rows, det_names, units=units)
    src = _typed_table(src_rows, XMM_SOURCE_COLUMNS, units=units)
    for t in (det, src):
        for col in ("SRCID", "DETID"):
            if col in t.colnames:
                t[col] = np.asarray(t[col], dtype=np.int64)
        for col in ("SUM_FLAG", "SC_SUM_FLAG"):
            if col in t.colnames:
                t[col] = np.asarray(t[col], dtype=np.int16)
        for col in ("N_DETECTIONS", "SRC_NUM"):
            if col in t.colnames:
                t[col] = np.asarray(t[col], dtype=np.int32)
    obs_t = Table(rows=[(o["OBS_ID"], o["RA"], o["DEC"], o["EXPOSURE"], o["MJD_START"]) for o in xobs] or None,
                  names=["OBS_ID", "RA_PNT", "DEC_PNT", "EXPOSURE", "MJD_START"],
                  dtype=[str, float, float, float, float])
    return det, src, obs_t, matches


def _csv_value(v: Any) -> str:
    if v is np.ma.masked:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else repr(float(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def _write_csv(table: Table, path: Path, columns: list[str] | None = None) -> None:
    cols = columns or table.colnames
    lines = [",".join(cols)]
    data = [table[c] if getattr(table[c], "mask", None) is not None else np.asarray(table[c]) for c in cols]
    for i in range(len(table)):
        lines.append(",".join(_csv_value(d[i]) for d in data))
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_catalogs(cats: Catalogs, folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the catalogue tables as FITS (with TUNIT) and as DaCHS-ready CSV.

    ``csc21/master_source.csv``, ``csc21/master_stack_assoc.csv``,
    ``csc21/stack_observation_assoc.csv`` and ``xmm/epic_source_cat.csv`` have
    exactly the header of the local DaCHS server's data files (``q.rd``
    columns in order; booleans ``true/false``; NULL as an empty field), so
    they can replace them. Every table is also written as FITS with all columns.

    Parameters
    ----------
    cats : Catalogs
        The tables.
    folder : path-like
        Output folder; files go to ``csc21/``, ``xmm/`` and the top level.

    Returns
    -------
    dict of str to Path
        ``"<stem>.fits"`` / ``"<stem>.csv"`` → file.
    """
    base = Path(folder)
    out: dict[str, Path] = {}
    csv_cols = {"csc21/master_source": CSC_MASTER_COLUMNS,
                "csc21/master_stack_assoc": ["name", "detect_stack_id", "region_id", "match_type"],
                "csc21/stack_observation_assoc": ["detect_stack_id", "region_id", "obsid", "obi", "instrument"],
                "xmm/epic_source_cat": XMM_SOURCE_COLUMNS}
    for stem, table in cats.tables().items():
        fpath = base / f"{stem}.fits"
        with atomic_write(fpath) as tmp:
            table.write(tmp, format="fits")
        out[f"{stem}.fits"] = fpath
        cpath = base / f"{stem}.csv"
        _write_csv(table, cpath, csv_cols.get(stem))
        out[f"{stem}.csv"] = cpath
    return out
