"""The query-layer commands of the xmine CLI against the local DaCHS server: exit codes and one-line errors."""

from __future__ import annotations

import pytest

from xmine.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def env(dachs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XMINE_SERVICES__CSC21__TAP_URL", dachs["tap"])
    monkeypatch.setenv("XMINE_SERVICES__CSC21__SCS_URL", dachs["scs_csc21"])
    monkeypatch.setenv("XMINE_SERVICES__XMM__TAP_URL", dachs["tap"])
    monkeypatch.setenv("XMINE_SERVICES__XMM__TABLE", "xmmssc.catalogue")
    return tmp_path


def test_query_tap_cache_and_export(env, capsys):
    assert main(["query", "tap", "SELECT TOP 5 name, ra, dec FROM csc21.master_source", "--out", "a.fits"]) == 0
    out = capsys.readouterr().out
    assert "5 rows from http" in out
    assert (env / "a.fits").exists()
    assert main(["query", "tap", "SELECT TOP 5 name, ra, dec FROM csc21.master_source", "--offline"]) == 0
    assert "5 rows from cache" in capsys.readouterr().out
    assert main(["cache", "list"]) == 0
    name = next(w for w in capsys.readouterr().out.split() if w.startswith("cache_csc21_"))
    assert main(["cache", "show", name]) == 0
    assert "query_sha256" in capsys.readouterr().out
    for suffix in ("csv", "parquet", "xml"):
        assert main(["cache", "export", name, f"b.{suffix}"]) == 0
        assert (env / f"b.{suffix}").exists()
    assert main(["cache", "refresh", name]) == 0
    assert main(["sql", "cache_summary", "-p", "catalogue=csc21"]) == 0
    assert name in capsys.readouterr().out
    assert main(["cache", "clear", "--all"]) == 0


def test_query_tap_async(env, capsys):
    assert main(["query", "tap", "SELECT TOP 3 name FROM csc21.master_source", "--async"]) == 0
    assert "3 rows" in capsys.readouterr().out


def test_query_table_paged(env, capsys):
    argv = ["query", "table", "csc21.master_source", "--key", "name", "--page-size", "50", "--out", "t.parquet"]
    assert main(argv) == 0
    assert "218 rows" in capsys.readouterr().out
    assert main(["query", "table", "xmmssc.catalogue", "--key", "srcid", "--where", "sc_extent > 0", "--dry-run"]) == 0
    assert "WHERE sc_extent > 0 ORDER BY srcid" in capsys.readouterr().out


def test_query_recipe_cone_and_dry_run(env, capsys):
    assert main(["query", "tap", "--recipe", "csc21_extended", "-p", "master_source=csc21.master_source",
                 "-p", "min_significance=3"]) == 0
    assert "8 rows" in capsys.readouterr().out
    assert main(["query", "cone", "--ra", "150.125", "--dec", "2.21", "--radius-arcmin", "3"]) == 0
    assert main(["query", "cone", "--ra", "150.125", "--dec", "2.21", "--catalogue", "4xmm"]) == 0
    assert main(["query", "cone", "--ra", "0.05", "--dec", "-12.3", "--tap", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "CONTAINS" not in out
    assert "ra >= 359.9" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["query", "tap", "SELEC 1"], "Could not parse"),
    (["query", "tap", "SELECT nosuchcol FROM csc21.master_source"], "nosuchcol"),
    (["query", "tap", "SELECT 1", "--url", "http://127.0.0.1:9/tap"], "cannot connect to http://127.0.0.1:9/tap"),
    (["query", "cone", "--ra", "1", "--dec", "1", "--offline"], "offline: nothing cached"),
    (["query", "tap", "--recipe", "nope"], "no query recipe 'nope'"),
    (["query", "tap", "--recipe", "csc21_extended"], "not given"),
    (["cache", "show", "cache_nope"], "no cached table"),
    (["sql", "SELECT * FROM t WHERE x = :x"], ":x not given"),
    (["select", "clusters", "--clusters", "missing.csv"], "no such cluster list"),
])
def test_bad_input_is_one_line_exit_1(env, capsys, argv, message):
    if argv[0] in {"cache", "sql"}:
        main(["query", "tap", "SELECT TOP 1 name FROM csc21.master_source"])
        capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_select_commands(env, capsys):
    assert main(["select", "clusters"]) == 0
    assert "8 clusters" in capsys.readouterr().out
    assert main(["select", "pointsources", "--out", "ps", "--offline"]) == 1  # cones not fetched yet
    capsys.readouterr()
    assert main(["select", "pointsources", "--out", "ps"]) == 0
    assert "12 region files" in capsys.readouterr().out
    assert main(["select", "pointsources", "--out", "ps2", "--offline"]) == 0
    assert len(list((env / "ps").glob("*/*.reg"))) == 12
