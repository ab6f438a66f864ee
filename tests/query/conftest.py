"""Fixtures for the query-layer tests: the local DaCHS TAP/SCS server and a fault-injecting proxy.

The server is GAVO DaCHS on loopback, loaded with rows from xmine's simulator
(``tests/servers/dachs``). If ``XMINE_TEST_TAP_URL`` is set it is used as is;
otherwise the session runs ``tests/servers/dachs/up.sh`` (idempotent: about a
minute the first time, as it apt-installs DaCHS and PostgreSQL, under a second
after). When no server can be had, integration tests skip with the reason —
except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
DACHS_DIR = REPO / "tests" / "servers" / "dachs"
sys.path.insert(0, str(REPO / "tests" / "servers"))

from faultproxy import FaultProxy  # noqa: E402


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _skip_or_fail(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: the local TAP server must run)")
    pytest.skip(reason)


def _tap_answers(url: str) -> bool:
    try:
        r = requests.post(url.rstrip("/") + "/sync", timeout=10,
                          data={"LANG": "ADQL", "REQUEST": "doQuery",
                                "QUERY": "SELECT TOP 1 table_name FROM TAP_SCHEMA.tables"})
    except requests.RequestException:
        return False
    return r.ok and 'name="QUERY_STATUS" value="OK"' in r.text


@pytest.fixture(scope="session")
def dachs() -> dict[str, str]:
    """URLs of the local DaCHS server: ``tap``, ``scs_csc21``, ``scs_4xmm``, ``base``."""
    url = os.environ.get("XMINE_TEST_TAP_URL")
    port = os.environ.get("DACHS_PORT", "8080")
    if url:
        if not _tap_answers(url):
            _skip_or_fail(f"XMINE_TEST_TAP_URL={url} does not answer an ADQL query")
    else:
        url = f"http://localhost:{port}/tap"
        if os.geteuid() != 0:
            if not _tap_answers(url):
                _skip_or_fail(f"no TAP server at {url} and not root, so {DACHS_DIR}/up.sh cannot start one; "
                              "run it as root or set XMINE_TEST_TAP_URL")
        else:
            env = dict(os.environ, XMINE_PYTHON=sys.executable)
            try:
                proc = subprocess.run(["bash", str(DACHS_DIR / "up.sh")], capture_output=True, text=True,
                                      timeout=900, env=env, check=False)
            except subprocess.TimeoutExpired:
                _skip_or_fail(f"{DACHS_DIR}/up.sh did not finish within 900 s")
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                _skip_or_fail(f"{DACHS_DIR}/up.sh failed: {last}")
    base = url.rsplit("/tap", 1)[0]
    return {"tap": url, "base": base,
            "scs_csc21": os.environ.get("XMINE_TEST_SCS_CSC21", f"{base}/csc21/q/cone/scs.xml"),
            "scs_4xmm": os.environ.get("XMINE_TEST_SCS_4XMM", f"{base}/xmm/q/cone/scs.xml")}


@pytest.fixture
def proxy(dachs: dict[str, str]) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the DaCHS server (``proxy.url_for(dachs['tap'])``)."""
    p = FaultProxy(dachs["base"]).start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def server_truth() -> dict[str, object]:
    """The CSVs the server was loaded with, as astropy tables (for exact comparisons)."""
    from astropy.table import Table

    out: dict[str, object] = {}
    for key, rel in {"master_source": "csc21/data/master_source.csv",
                     "master_stack_assoc": "csc21/data/master_stack_assoc.csv",
                     "stack_observation_assoc": "csc21/data/stack_observation_assoc.csv",
                     "stack_source": "csc21/data/stack_source.csv",
                     "observation_source": "csc21/data/observation_source.csv",
                     "observations": "chandra/data/observations.csv",
                     "xmm": "xmm/data/epic_source_cat.csv", "truth_match": "truth_match.csv"}.items():
        out[key] = Table.read(DACHS_DIR / rel, format="ascii.csv")
    return out
