"""The command line: exit codes, one-line errors, --debug."""

import subprocess
import sys

import pytest

from xmine.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "xmine" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_xmine_error_is_one_line_exit_1(tmp_path, capsys):
    bad = tmp_path / "xmine.toml"
    bad.write_text("[pipline]\n")
    assert main(["--config", str(bad), "config", "show"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xmine: error: ")
    assert err.count("\n") == 1
    assert "unknown key 'pipline'" in err
    assert "Traceback" not in err


def test_debug_reraises(tmp_path):
    from xmine.errors import InputError

    bad = tmp_path / "xmine.toml"
    bad.write_text("[pipline]\n")
    with pytest.raises(InputError):
        main(["--debug", "--config", str(bad), "config", "show"])


def test_config_init_then_show(tmp_path, capsys):
    path = tmp_path / "xmine.toml"
    assert main(["config", "init", str(path)]) == 0
    assert main(["config", "init", str(path)]) == 1
    assert "pass --force" in capsys.readouterr().err
    assert main(["--config", str(path), "config", "show"]) == 0
    assert "[binning]" in capsys.readouterr().out


def test_console_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "xmine.cli", "--config", str(tmp_path / "none.toml"),
                             "config", "show"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("create one with `xmine config init " + str(tmp_path / "none.toml") + "`")


def test_simulate_from_edited_truth(tmp_path, capsys):
    truth_dir = tmp_path / "truth"
    assert main(["simulate", "--write-demo-truth", str(truth_dir)]) == 0
    files = sorted(truth_dir.glob("*.ecsv"))
    assert [f.stem for f in files] == ["clusters", "observations", "point_sources"]
    # keep one observation, to make it quick
    from astropy.table import Table

    obs = Table.read(truth_dir / "observations.ecsv")
    obs = obs[obs["obsid"] == obs["obsid"][0]]
    obs["exposure_s"] = 2000.0
    obs.write(truth_dir / "observations.ecsv", overwrite=True)
    assert main(["simulate", *map(str, files), "--out", str(tmp_path / "sky")]) == 0
    evt = next((tmp_path / "sky").glob("*/primary/acisf*_evt2.fits"))
    assert evt.stat().st_size > 0
    assert "events" in capsys.readouterr().out


def test_simulate_bad_truth_is_one_line(tmp_path, capsys):
    truth_dir = tmp_path / "truth"
    main(["--quiet", "simulate", "--write-demo-truth", str(truth_dir)])
    text = (truth_dir / "clusters.ecsv").read_text().replace("150.125 2.21", "150.125 95.0", 1)
    (truth_dir / "clusters.ecsv").write_text(text)
    assert main(["simulate", str(truth_dir), "--out", str(tmp_path / "sky")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "dec_deg" in err
    assert "95" in err
