"""The per-cluster pipeline on a simulated cluster: outputs, resumption, partial reruns, failures."""

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from xmine import simulate
from xmine.config import load_config
from xmine.errors import InputError
from xmine.pipeline import ClusterSpec, load_cluster_sample, process_cluster, run_process
from xmine.store import open_store


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    """SIM-MERGER with its two obsids (one flared), at 12 ks each."""
    truth = simulate.demo_truth(seed=7)
    obs = truth.observations[truth.observations["cluster"] == "SIM-MERGER"]
    obs["exposure_s"] = 12000.0
    truth = simulate.validate_truth(truth.clusters[truth.clusters["name"] == "SIM-MERGER"],
                                    truth.point_sources[truth.point_sources["cluster"] == "SIM-MERGER"], obs)
    out = tmp_path_factory.mktemp("sky")
    products = simulate.simulate_sky(truth, out / "archive", seed=7)
    return out, truth, products


def _config(root, **binning):
    return load_config(environ={}, overrides={
        "project": {"data_dir": str(root / "archive"), "work_dir": str(root / "work"),
                    "store": str(root / "xmine.duckdb")},
        "cache": {"offline": True},
        "binning": {"sn": 15.0, "smoothsn": 15.0, **binning},
        "process": {"merge_size_arcmin": 8.0, "crop_radius_arcmin": 2.0},
    })


@pytest.fixture(scope="module")
def first_run(sky):
    root, truth, products = sky
    c = truth.clusters[0]
    spec = ClusterSpec(name=str(c["name"]), ra_deg=float(c["ra_deg"]), dec_deg=float(c["dec_deg"]),
                       obsids=tuple(int(o) for o in truth.observations["obsid"]))
    catalog = fits.getdata(products.catalog_files["csc21/master_source.fits"], 1)
    from astropy.table import Table

    config = _config(root)
    with open_store(config.project.store) as store:
        run_id = store.start_run("process", {}, run_id="t1")
        result = process_cluster(spec, config=config, store=store, run_id=run_id, catalog=Table(catalog))
    return root, spec, Table(catalog), result


def test_products_and_science(first_run):
    _root, spec, _, result = first_run
    clean = {int(k): v["clean_fraction"] for k, v in result.outputs["obs"].items()}
    flared = next(o for o in spec.obsids if o % 2 == 1)  # 90201 carries the injected flare
    quiet = next(o for o in spec.obsids if o != flared)
    assert clean[flared] < 0.9
    assert clean[quiet] > 0.95
    assert result.n_bins >= 5
    binmap, header = fits.getdata(result.outputs["contbin"]["binmap"], header=True)
    assert header["CROPMINX"] == pytest.approx(result.outputs["crop"]["minx"])
    mask = fits.getdata(result.outputs["crop"]["mask"])
    assert (binmap[mask == 0] == -1).all()  # masked point sources are never binned
    bins = fits.getdata(result.outputs["contbin"]["bins"], 1)
    # contbin's scrubbing never revisits bins, so with a background a few may end just below target
    assert np.all(bins["sn"] >= 0.99 * 15.0)
    assert np.median(bins["sn"]) >= 15.0
    assert result.outputs["background"]["rate_cps_per_pix"] > 0
    profile = fits.getdata(result.outputs["profile"]["profile"], 1)
    assert len(profile) > 3
    text = Path(result.outputs["outlines"]["combined_fk5"]).read_text()
    assert text.count("polygon(") >= result.n_bins


def test_rerun_skips_and_sn_change_reruns_only_binning(first_run):
    root, spec, catalog, _ = first_run
    config = _config(root)
    with open_store(config.project.store) as store:
        before = {(r["item"], r["step"]): r["started"] for r in
                  store.query("SELECT item, step, started FROM steps WHERE run_id = 't1'").to_pylist()}
        again = process_cluster(spec, config=config, store=store, run_id="t1", catalog=catalog)
        assert again.ran == []
        changed = process_cluster(spec, config=_config(root, sn=25.0), store=store, run_id="t1", catalog=catalog)
        after = {(r["item"], r["step"]): r["started"] for r in
                 store.query("SELECT item, step, started FROM steps WHERE run_id = 't1'").to_pylist()}
    rerun = {k for k in before if after[k] != before[k]}
    # the bins changed: binning and what is made per bin (outlines, measurements, spectra), nothing upstream
    assert rerun == {(f"cluster/{spec.name}", s) for s in ("contbin", "outlines", "measure", "spectra")}
    assert changed.n_bins < again.n_bins


def test_missing_obsid_is_recorded_and_others_go_on(first_run):
    root, spec, catalog, _ = first_run
    config = _config(root)
    with_missing = ClusterSpec(name=spec.name, ra_deg=spec.ra_deg, dec_deg=spec.dec_deg,
                               obsids=(*spec.obsids, 99999))
    summary = run_process([with_missing], config=config, catalog=catalog, run_id="t2")
    assert summary.failed == 0
    assert 99999 in summary.results[0].failed_obsids
    with open_store(config.project.store, read_only=True) as store:
        reasons = store.query("SELECT item, reason FROM failures WHERE run_id = 't2'").to_pylist()
    assert any(r["item"] == "obs/99999" and "not found" in r["reason"] for r in reasons)


def test_no_usable_obsid_fails_the_cluster_only(first_run):
    root, _spec, catalog, _ = first_run
    bad = ClusterSpec(name="NOWHERE", ra_deg=10.0, dec_deg=10.0, obsids=(99998,))
    summary = run_process([bad], config=_config(root), catalog=catalog, run_id="t3")
    assert summary.failed == 1
    assert "no observation could be processed" in summary.rows[0][-1]


def test_cluster_sample_files(tmp_path):
    csv = tmp_path / "sample.csv"
    csv.write_text("name,ra,dec,z,obsid\nA,10.0,-5.0,0.1,101\nA,10.0,-5.0,0.1,102\nB,20.0,5.0,,201;202\n")
    specs = load_cluster_sample(csv)
    assert [(s.name, s.obsids, s.z) for s in specs] == [("A", (101, 102), 0.1), ("B", (201, 202), None)]
    assert [s.name for s in load_cluster_sample(csv, names=["B"])] == ["B"]
    with pytest.raises(InputError, match="no cluster named C"):
        load_cluster_sample(csv, names=["C"])
    (tmp_path / "bad.csv").write_text("name,ra,dec\nA,1,2\n")
    with pytest.raises(InputError, match=r"bad.csv: no column obsids or obsid"):
        load_cluster_sample(tmp_path / "bad.csv")
    (tmp_path / "dec.csv").write_text("name,ra,dec,obsids\nA,1,95,3\n")
    with pytest.raises(InputError, match=r"row 1 \(A\): dec = 95.0 is outside"):
        load_cluster_sample(tmp_path / "dec.csv")


def test_flux_route_and_no_background(first_run):
    root, spec, catalog, _ = first_run
    config = load_config(environ={}, overrides={**_config(root).model_dump(mode="json"),
                                                 "process": {**_config(root).process.model_dump(),
                                                             "binning_input": "flux", "background": "none"}})
    with open_store(config.project.store) as store:
        res = process_cluster(spec, config=config, store=store, run_id="t4", catalog=catalog)
    assert "background" not in res.outputs
    assert res.outputs["contbin"]["input"] == "flux"
    flux, header = fits.getdata(Path(res.outputs["contbin"]["binmap"]).parent / "flux_scaled.fits", header=True)
    counts = fits.getdata(res.outputs["crop"]["counts"])
    exposure = fits.getdata(res.outputs["crop"]["exposure"])
    good = exposure > 0
    # k * rate * <counts>/<rate>: the image keeps the counts' mean, times k
    assert flux[good].mean() == pytest.approx(2.5 * counts[good].mean(), rel=1e-3)
    assert header["FLUXK"] == 2.5


def test_blank_sky_background(sky, first_run, tmp_path):
    root, truth, _ = sky
    _, spec, catalog, _ = first_run
    # blank sky: the same pointings three times longer, no cluster, no point sources, no flare
    clusters = truth.clusters.copy()
    clusters["rate_cps"] = 1e-6
    obs = truth.observations.copy()
    obs["exposure_s"] = 3 * obs["exposure_s"]
    obs["flare"] = False
    blank = simulate.validate_truth(clusters, truth.point_sources[:0], obs)
    made = simulate.simulate_sky(blank, tmp_path / "blank", seed=99)
    bgdir = tmp_path / "bg"
    bgdir.mkdir()
    for o in made.observations:
        (bgdir / f"acisf{o.obsid:05d}_bg_evt.fits").symlink_to(o.event_file)
    base = _config(root)
    # the 9.5-12 keV normalisation uses the image beyond bg_inner_arcmin: 2.5' of the 8' image leaves enough
    # particle events that Poisson scatter stays well inside the 20 % below (4' left only the corners)
    config = load_config(environ={}, overrides={**base.model_dump(mode="json"), "process": {
        **base.process.model_dump(mode="json"), "background": "blank_sky", "blank_sky_dir": str(bgdir),
        "bg_inner_arcmin": 2.5}})
    with open_store(config.project.store) as store:
        res = process_cluster(spec, config=config, store=store, run_id="t5", catalog=catalog)
        scales = res.outputs["merge"]["blanksky_scales"]
    # renormalised by the 9.5-12 keV (particle) rate: a third for the quiet obsid, within Poisson scatter;
    # the flared one keeps the flare's hard edges in its good time, so its particle level is higher
    flared = next(o for o in spec.obsids if o % 2 == 1)
    quiet = next(o for o in spec.obsids if o != flared)
    assert scales[str(quiet)] == pytest.approx(1 / 3, rel=0.2), scales
    assert scales[str(flared)] > scales[str(quiet)] * 0.8, scales
    assert res.n_bins > 3
    bad = load_config(environ={}, overrides={**base.model_dump(mode="json"), "project": {
        **base.project.model_dump(mode="json"), "work_dir": str(tmp_path / "w2")}, "process": {
        **base.process.model_dump(mode="json"), "background": "blank_sky", "blank_sky_dir": str(tmp_path)}})
    with open_store(config.project.store) as store, pytest.raises(InputError, match=r"no blank-sky event file"):
        process_cluster(spec, config=bad, store=store, run_id="t6", catalog=catalog)


def test_process_command(first_run, tmp_path, capsys):
    from xmine.cli import main

    root, spec, _, _ = first_run
    sample = tmp_path / "sample.csv"
    sample.write_text(f"name,ra_deg,dec_deg,obsids\n{spec.name},{spec.ra_deg},{spec.dec_deg},"
                      f"{' '.join(map(str, spec.obsids))}\n")
    toml = tmp_path / "xmine.toml"
    toml.write_text(f'[project]\ndata_dir = "{root / "archive"}"\nwork_dir = "{root / "work"}"\n'
                    f'store = "{tmp_path / "x.duckdb"}"\n[cache]\noffline = true\n'
                    '[process]\nmerge_size_arcmin = 8.0\ncrop_radius_arcmin = 2.0\n')
    assert main(["--config", str(toml), "process", str(sample)]) == 0
    out = capsys.readouterr().out
    assert spec.name in out
    assert "xaf_bins_fk5.reg" in out
    assert main(["--config", str(toml), "process", str(sample), "NOPE"]) == 1
    assert capsys.readouterr().err.strip().endswith("no cluster named NOPE")


def test_bad_sample_and_catalogue_files_are_one_line_errors(tmp_path):
    from xmine.pipeline import read_catalog

    cases = {
        "nan.csv": ("name,ra,dec,obsids\nA,nan,2,3\n", r"ra = nan is outside \[0, 360\)"),
        "path.csv": ("name,ra,dec,obsids\n../evil,1,2,3\n", "cannot name a folder"),
        "dup.csv": ("name,ra,dec,obsids\nA,1,2,3\nA,2,2,4\n", "differs from the same name's earlier row"),
        "empty.csv": ("name,ra,dec,obsids\n", "no clusters in the sample"),
        "odd.xyz": ("whatever", r"odd.xyz: cannot read the cluster sample"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=match):
            load_cluster_sample(tmp_path / name)
    (tmp_path / "cat.csv").write_text("ra,dec\n150.1,abc\n")
    with pytest.raises(InputError, match=r"cat.csv: column dec is not numeric"):
        read_catalog(tmp_path / "cat.csv")
    (tmp_path / "cat2.csv").write_text("x,y\n1,2\n")
    with pytest.raises(InputError, match=r"cat2.csv: no ra/dec"):
        read_catalog(tmp_path / "cat2.csv")


def test_marker_is_the_truth_about_a_shared_step_folder(tmp_path):
    from xmine.pipeline import StepRunner

    with open_store(tmp_path / "x.duckdb") as store:
        a, b = StepRunner(store, "r1"), StepRunner(store, "r2")

        def work(value):
            def _w(folder):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "out.txt").write_text(value)
                return {"value": value, "files": [str(folder / "out.txt")]}
            return _w

        assert a.run("c", "s", tmp_path / "step", {"p": 1}, work("one")) == ({"value": "one", "files":
                                                                               [str(tmp_path / "step/out.txt")]}, True)
        b.run("c", "s", tmp_path / "step", {"p": 2}, work("two"))  # another run rewrites the shared folder
        _, ran = a.run("c", "s", tmp_path / "step", {"p": 1}, work("one"))
        assert ran  # r1's stored row no longer describes the folder: rerun
        assert (tmp_path / "step/out.txt").read_text() == "one"

        def killed(folder):
            (folder / "out.txt").write_text("half")
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            a.run("c", "s", tmp_path / "step", {"p": 3}, killed)
        _, ran = a.run("c", "s", tmp_path / "step", {"p": 1}, work("one"))
        assert ran  # the old marker was removed before the interrupted work began


def test_resuming_a_run_with_other_parameters_is_refused(tmp_path):
    with open_store(tmp_path / "x.duckdb") as store:
        store.start_run("process", {"sn": 15}, run_id="r")
        store.start_run("process", {"sn": 15}, run_id="r")
        with pytest.raises(InputError, match="run r was started as a process run with other parameters"):
            store.start_run("process", {"sn": 30}, run_id="r")
