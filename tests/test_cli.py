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
