import tomllib

import pytest

from xmine.config import XmineConfig, default_config_text, load_config, write_default_config
from xmine.errors import InputError


def test_defaults_without_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.binning.sn == 15.0  # contbin's default
    assert config.services.csc21.adql_geometry is False
    assert config.project.store == tmp_path / "xmine.duckdb"


def test_init_file_roundtrips_to_defaults(tmp_path):
    path = write_default_config(tmp_path / "xmine.toml")
    assert load_config(path, environ={}) == XmineConfig().resolve(tmp_path)
    # the uncommented form round-trips too, value for value
    config = load_config(overrides={"binning": {"sn": 55.0}}, environ={})
    text = default_config_text(config, commented=False)
    (tmp_path / "full.toml").write_text(text)
    assert load_config(tmp_path / "full.toml", environ={}).binning.sn == 55.0
    assert tomllib.loads(text)["services"]["csc21"]["tap_url"] == config.services.csc21.tap_url


def test_every_key_is_documented():
    text = default_config_text()
    for section in ("project", "services.csc21", "services.xmm", "cache", "events", "binning", "process",
                    "executor"):
        assert f"[{section}]" in text
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# ") and " = " in line and not line.startswith("# e.g."):
            assert lines[i - 1].startswith("# "), f"undocumented key: {line}"


def test_unknown_section_named_with_path(tmp_path):
    path = tmp_path / "xmine.toml"
    path.write_text("[pipline]\nsn = 30\n")
    with pytest.raises(InputError, match=r"xmine.toml: unknown key 'pipline'; the top level takes: binning"):
        load_config(path, environ={})


def test_unknown_nested_key_named_with_path(tmp_path):
    path = tmp_path / "xmine.toml"
    path.write_text("[services.csc21]\ntap_ulr = 'http://x'\n")
    with pytest.raises(InputError, match=r"unknown key 'services.csc21.tap_ulr'; \[services.csc21\] takes: "):
        load_config(path, environ={})


def test_bad_value_and_bad_toml(tmp_path):
    path = tmp_path / "xmine.toml"
    path.write_text("[binning]\nsn = -3\n")
    with pytest.raises(InputError, match=r"binning.sn = -3: .*greater than 0"):
        load_config(path, environ={})
    path.write_text("[binning\n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(path, environ={})
    with pytest.raises(InputError, match="no such configuration file; create one with `xmine config init"):
        load_config(tmp_path / "missing.toml", environ={})


def test_environment_overrides_file(tmp_path):
    path = tmp_path / "xmine.toml"
    path.write_text("[services.csc21]\ntap_url = 'http://file'\n[binning]\nsn = 40\n")
    env = {
        "XMINE_SERVICES__CSC21__TAP_URL": "http://localhost:8080/tap",
        "XMINE_SERVICES__XMM__TABLE": "xmmssc.catalogue",
        "XMINE_EVENTS__GRADES": "[0, 2]",
        "UNRELATED": "1",
    }
    config = load_config(path, environ=env)
    assert config.services.csc21.tap_url == "http://localhost:8080/tap"
    assert config.services.xmm.table == "xmmssc.catalogue"
    assert config.events.grades == [0, 2]
    assert config.binning.sn == 40
    with pytest.raises(InputError, match=r"XMINE_\* environment: unknown key 'binning.snn'"):
        load_config(path, environ={"XMINE_BINNING__SNN": "3"})


def test_init_refuses_to_overwrite(tmp_path):
    path = write_default_config(tmp_path / "xmine.toml")
    with pytest.raises(InputError, match="file exists; pass --force"):
        write_default_config(path)
    write_default_config(path, overwrite=True)
