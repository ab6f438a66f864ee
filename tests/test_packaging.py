"""catalogs/ and queries/ ship as package data, and user folders override them."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from xmine.catalogs import bundled_dir, catalog_names, find_catalog, load_catalog
from xmine.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def test_bundled_catalogs_load():
    assert {"csc21", "4xmm"} <= set(catalog_names())
    csc = load_catalog("csc21")
    assert csc["service"]["adql_geometry"] is False
    assert csc["columns"]["flux"]["band_kev"] == [0.5, 7.0]
    assert load_catalog("4xmm")["columns"]["flux"]["band_kev"] == [0.2, 12.0]
    assert (REPO / "catalogs" / "csc21.toml").resolve() == (bundled_dir() / "csc21.toml").resolve()


def test_user_folder_overrides_and_errors(tmp_path):
    (tmp_path / "csc21.toml").write_text('name = "csc21"\n[service]\n[tables]\n[columns]\n')
    assert find_catalog("csc21", [tmp_path]) == tmp_path / "csc21.toml"
    with pytest.raises(InputError, match=r"no catalogue description 'sdss'.*known: csc21, 4xmm"):
        find_catalog("sdss", [tmp_path])
    (tmp_path / "bad.toml").write_text("name = \n")
    with pytest.raises(InputError, match=r"bad.toml: not valid TOML"):
        load_catalog("bad", [tmp_path])
    (tmp_path / "thin.toml").write_text('name = "thin"\n')
    with pytest.raises(InputError, match=r"thin.toml: missing \[service\]"):
        load_catalog("thin", [tmp_path])


@pytest.mark.slow
def test_wheel_contains_package_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("xmine-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "xmine/catalogs/csc21.toml" in names
    assert "xmine/catalogs/4xmm.toml" in names
    assert "xmine/py.typed" in names
