"""A fetch killed with SIGKILL at any moment leaves the cache with the whole result or none of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from xmine import cache
from xmine.store import open_store

CHILD = textwrap.dedent("""
    import sys, numpy as np, pyarrow as pa
    from xmine import cache
    from xmine.store import open_store
    n = 2_000_000
    table = pa.table({"ra": np.linspace(0, 360, n), "dec": np.linspace(-90, 90, n), "i": np.arange(n)})
    with open_store(sys.argv[1]) as s:
        print("ready", flush=True)
        for k in range(1000):
            cache.load_query(s, f"q{k}", service="http://x.invalid", fetch=lambda: table, name=f"cache_t{k % 3}",
                             refresh=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.3, 0.9, 1.7])
def test_sigkill_during_writes_leaves_whole_tables(tmp_path, delay_s):
    path = tmp_path / "c.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(delay_s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with open_store(path) as s:
        rows = cache.list_cache(s)
        for r in rows:
            assert r["present"]
            assert cache.load_table(s, r["name"]).num_rows == r["rows"] == 2_000_000
        tables = {t[0] for t in s.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert {t for t in tables if t.startswith("cache_")} == {r["name"] for r in rows}
