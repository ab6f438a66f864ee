"""xmine.cache: provenance, no-network repeats, refresh, expiry, offline, management, exports, SQL."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table

from xmine import cache, vo
from xmine.errors import CacheError, InputError, QueryError, StaleCacheWarning
from xmine.store import open_store

SERVICE = "http://example.invalid/tap"
ADQL = "SELECT * FROM csc21.master_source"


def _arrow(n: int = 5) -> pa.Table:
    t = Table({"name": [f"2CXO J{i:06d}" for i in range(n)], "ra": np.linspace(1, 2, n),
               "flag": np.arange(n) % 2 == 0, "flux": np.ma.masked_array(np.ones(n), mask=np.arange(n) == 1)})
    t["ra"].unit = "deg"
    t["flux"].unit = "erg / (s cm2)"
    return vo.to_arrow(t)


class Fetcher:
    def __init__(self, table: pa.Table | None = None) -> None:
        self.calls = 0
        self.table = table if table is not None else _arrow()

    def __call__(self) -> pa.Table:
        self.calls += 1
        return self.table


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "c.duckdb")
    yield s
    s.close()


def test_repeat_is_answered_from_cache(store):
    f = Fetcher()
    a = cache.load_query(store, ADQL, service=SERVICE, fetch=f, catalogue="csc21", params={"kind": "tap"})
    b = cache.load_query(store, ADQL, service=SERVICE, fetch=f, catalogue="csc21", params={"kind": "tap"})
    assert f.calls == 1
    assert not a.from_cache
    assert b.from_cache
    assert b.table.equals(a.table)
    assert b.provenance["rows"] == 5
    assert b.provenance["query_text"] == ADQL
    assert len(b.provenance["query_sha256"]) == 64
    assert b.provenance["expires_at"] > b.provenance["fetched_at"]
    t = b.to_astropy()
    assert str(t["ra"].unit) == "deg"
    assert t["flag"].dtype == bool
    assert t["flux"].mask.tolist() == [False, True, False, False, False]


def test_whitespace_does_not_change_the_key_but_params_do(store):
    f = Fetcher()
    cache.load_query(store, ADQL, service=SERVICE, fetch=f, params={"maxrec": 10})
    cache.load_query(store, "  SELECT *\n FROM csc21.master_source ", service=SERVICE, fetch=f, params={"maxrec": 10})
    assert f.calls == 1
    cache.load_query(store, ADQL, service=SERVICE, fetch=f, params={"maxrec": 20})
    assert f.calls == 2


def test_refresh_fetches_again(store):
    f = Fetcher()
    cache.load_query(store, ADQL, service=SERVICE, fetch=f)
    f.table = _arrow(7)
    r = cache.load_query(store, ADQL, service=SERVICE, fetch=f, refresh=True)
    assert f.calls == 2
    assert r.table.num_rows == 7
    assert len(cache.list_cache(store)) == 1


def test_expired_is_refetched_online_and_stale_offline(store):
    f = Fetcher()
    cache.load_query(store, ADQL, service=SERVICE, fetch=f, expiry_days=1e-9)
    time.sleep(0.01)
    with pytest.warns(StaleCacheWarning, match="expired"):
        r = cache.load_query(store, ADQL, service=SERVICE, fetch=f, offline=True)
    assert r.stale
    assert f.calls == 1
    cache.load_query(store, ADQL, service=SERVICE, fetch=f)
    assert f.calls == 2


def test_offline_with_nothing_cached_names_the_command(store):
    with pytest.raises(CacheError, match=r"offline: nothing cached .*xmine query tap --url http://example.invalid/tap"):
        cache.load_query(store, ADQL, service=SERVICE, fetch=Fetcher(), offline=True)


def test_interrupted_fetch_leaves_nothing(store):
    def boom() -> pa.Table:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.load_query(store, ADQL, service=SERVICE, fetch=boom)
    assert cache.list_cache(store) == []


def test_failed_write_leaves_no_half_table(store, monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(store), "record_provenance", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        cache.load_query(store, ADQL, service=SERVICE, fetch=Fetcher(), name="cache_half")
    monkeypatch.undo()
    tables = [r[0] for r in store.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
    assert "cache_half" not in tables
    assert cache.list_cache(store) == []


def test_list_show_clear(store):
    cache.load_query(store, ADQL, service=SERVICE, fetch=Fetcher(), catalogue="csc21", release="2.1")
    cache.load_query(store, "SELECT 1", service=SERVICE, fetch=Fetcher(_arrow(2)), catalogue="4xmm")
    rows = cache.list_cache(store)
    assert [r["catalogue"] for r in rows] == ["csc21", "4xmm"]
    info = cache.show_cache(store, rows[0]["name"])
    assert info["release"] == "2.1"
    assert {"name": "ra", "type": "DOUBLE", "unit": "deg"} in info["columns"]
    with pytest.raises(CacheError, match="no cached table 'cache_nope'"):
        cache.show_cache(store, "cache_nope")
    assert cache.clear_cache(store, [rows[1]["name"]]) == [rows[1]["name"]]
    assert len(cache.list_cache(store)) == 1
    with pytest.raises(CacheError, match="not cached"):
        cache.clear_cache(store, ["cache_nope"])
    cache.clear_cache(store)
    assert cache.list_cache(store) == []


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits", ".xml"])
def test_export_formats(store, tmp_path, suffix):
    r = cache.load_query(store, ADQL, service=SERVICE, fetch=Fetcher())
    out = cache.export_table(store, r.name, tmp_path / f"out{suffix}")
    if suffix == ".parquet":
        back = pq.read_table(out)
        assert back.schema.field("ra").metadata[b"unit"] == b"deg"
        assert back.column("flux").null_count == 1
    elif suffix == ".fits":
        with fits.open(out) as hdul:
            h = hdul[1].header
            units = {h[f"TTYPE{i}"]: h.get(f"TUNIT{i}") for i in range(1, h["TFIELDS"] + 1)}
        assert units["ra"] == "deg"
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*has been deprecated in the VOUnit standard.*")
            back = Table.read(out, format="votable" if suffix == ".xml" else "ascii.csv")
        assert len(back) == 5
    with pytest.raises(CacheError, match="file exists"):
        cache.export_table(store, r.name, out)


def test_export_bad_format(store, tmp_path):
    r = cache.load_query(store, ADQL, service=SERVICE, fetch=Fetcher())
    with pytest.raises(InputError, match="unknown export format"):
        cache.export_table(store, r.name, tmp_path / "x.txt")


def test_corrupt_cache_file(tmp_path):
    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CacheError, match=r"bad\.duckdb"):
        open_store(bad)


# ---------------------------------------------------------------- SQL
def test_bind_sql_leaves_casts_and_strings():
    text, names = cache.bind_sql("SELECT ra::DOUBLE, ':no' AS s FROM t WHERE dec > :dmin AND x = :dmin OR y < :r")
    assert text == "SELECT ra::DOUBLE, ':no' AS s FROM t WHERE dec > $dmin AND x = $dmin OR y < $r"
    assert names == ["dmin", "r"]


def test_run_sql(tmp_path):
    path = tmp_path / "c.duckdb"
    with open_store(path) as s:
        r = cache.load_query(s, ADQL, service=SERVICE, fetch=Fetcher(_arrow(50)))
    table, truncated = cache.run_sql(path, f"SELECT name, ra::FLOAT AS ra FROM {r.name} WHERE ra > :lo", {"lo": 1.5},
                                     limit=10)
    assert table.num_rows == 10
    assert truncated
    table, truncated = cache.run_sql(path, f"SELECT count(*) AS n FROM {r.name}")
    assert table.column("n").to_pylist() == [50]
    assert not truncated
    with pytest.raises(InputError, match=":lo not given"):
        cache.run_sql(path, f"SELECT * FROM {r.name} WHERE ra > :lo")
    with pytest.raises(InputError, match="no parameter"):
        cache.run_sql(path, f"SELECT * FROM {r.name}", {"lo": 1})
    with pytest.raises(InputError, match=r"one SELECT .* this is DELETE"):
        cache.run_sql(path, f"DELETE FROM {r.name}")
    with pytest.raises(QueryError, match="nosuch"):
        cache.run_sql(path, "SELECT * FROM nosuch")
    with pytest.raises(QueryError, match=r"interrupted after 0\.5 s"):
        cache.run_sql(path, "SELECT count(*) FROM range(3000000000) a, range(1000) b", timeout_s=0.5)


# ---------------------------------------------------------------- against the server
@pytest.mark.integration
def test_cached_tap_query_needs_no_network_the_second_time(dachs, proxy, tmp_path):
    url = proxy.url_for(dachs["tap"])
    with open_store(tmp_path / "c.duckdb") as s:
        def fetch():
            return vo.query_tap(ADQL, url=url)

        a = cache.load_query(s, ADQL, service=url, fetch=fetch, catalogue="csc21", params={"kind": "tap"})
        n_requests = len(proxy.log)
        proxy.stop()
        t0 = time.perf_counter()
        b = cache.load_query(s, ADQL, service=url, fetch=fetch, catalogue="csc21", params={"kind": "tap"})
        elapsed = time.perf_counter() - t0
    assert n_requests == 1
    assert b.from_cache
    assert b.table.num_rows == a.table.num_rows
    assert elapsed < 0.5


@pytest.mark.integration
def test_refresh_cache_reruns_recorded_query(dachs, tmp_path):
    with open_store(tmp_path / "c.duckdb") as s:
        r = cache.load_query(s, ADQL, service=dachs["tap"], fetch=lambda: vo.query_tap(ADQL, url=dachs["tap"]),
                             catalogue="csc21", params={"kind": "tap"})
        before = r.provenance["fetched_at"]
        assert cache.refresh_cache(s) == [r.name]
        after = cache.show_cache(s, r.name)
    assert after["fetched_at"] > before
    assert after["rows"] == r.table.num_rows


@pytest.mark.integration
def test_load_tap_and_load_cone(dachs, tmp_path):
    with open_store(tmp_path / "c.duckdb") as s:
        a = cache.load_tap(s, ADQL, url=dachs["tap"], catalogue="csc21")
        b = cache.load_tap(s, ADQL, url=dachs["tap"], catalogue="csc21", offline=True)
        c = cache.load_cone(s, dachs["scs_csc21"], 150.125, 2.21, 0.1, catalogue="csc21")
        d = cache.load_cone(s, dachs["scs_csc21"], 150.125, 2.21, 0.1, catalogue="csc21", offline=True)
        with pytest.raises(CacheError, match=r"xmine query cone --url .* --ra 150.125 --dec 2.21 --radius-arcmin 12"):
            cache.load_cone(s, dachs["scs_csc21"], 150.125, 2.21, 0.2, offline=True)
        assert cache.refresh_cache(s) == [a.name, c.name]
    assert b.from_cache
    assert d.from_cache
    assert c.table.num_rows > 0


@pytest.mark.integration
def test_load_paged_whole_table_and_refresh(dachs, tmp_path):
    with open_store(tmp_path / "c.duckdb") as s:
        a = cache.load_paged(s, "csc21.master_source", url=dachs["tap"], key="name", page_size=40, catalogue="csc21")
        names = a.table.column("name").to_pylist()
        assert len(names) == len(set(names)) == 218
        assert not a.provenance["truncated"]
        b = cache.load_paged(s, "csc21.master_source", url=dachs["tap"], key="name", page_size=40, offline=True)
        assert b.from_cache
        assert cache.refresh_cache(s, [a.name]) == [a.name]
        assert cache.show_cache(s, a.name)["rows"] == 218


def test_same_query_under_another_label_is_a_hit(store):
    f = Fetcher()
    a = cache.load_query(store, ADQL, service=SERVICE, fetch=f, catalogue="csc21")
    b = cache.load_query(store, ADQL, service=SERVICE + "/", fetch=f, catalogue="other", offline=True)
    assert b.name == a.name
    assert f.calls == 1


def test_explicit_name_holding_another_query_is_refetched(store):
    f = Fetcher()
    cache.load_query(store, "SELECT 1", service=SERVICE, fetch=f, name="cache_mine")
    g = Fetcher(_arrow(3))
    r = cache.load_query(store, "SELECT 2", service=SERVICE, fetch=g, name="cache_mine")
    assert g.calls == 1
    assert r.table.num_rows == 3
    assert cache.show_cache(store, "cache_mine")["query_text"] == "SELECT 2"
