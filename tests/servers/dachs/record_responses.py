"""Record a few VOTable answers of the local DaCHS server (simulated rows only) for fast unit tests.

Run with the server up (``tests/servers/dachs/up.sh``)::

    python tests/servers/dachs/record_responses.py [--base http://localhost:8080]

Writes ``tests/data/vo/*.xml``: the raw bytes the server sent, unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import requests

OUT = Path(__file__).resolve().parents[2] / "data" / "vo"

TAP = {
    "tap_master_source_top20.xml": ("SELECT TOP 20 * FROM csc21.master_source ORDER BY name", None),
    "tap_overflow_maxrec5.xml": ("SELECT * FROM csc21.master_source ORDER BY name", 5),
    "tap_empty.xml": ("SELECT * FROM csc21.master_source WHERE dec > 89.99", None),
    "tap_syntax_error.xml": ("SELEC * FROM csc21.master_source", None),
    "tap_xmm_top10.xml": ("SELECT TOP 10 * FROM xmmssc.catalogue ORDER BY SRCID", None),
}
SCS = {
    "scs_csc21_verb3.xml": ("/csc21/q/cone/scs.xml", {"RA": 150.125, "DEC": 2.21, "SR": 0.05, "VERB": 3}),
    "scs_4xmm_overflow.xml": ("/xmm/q/cone/scs.xml", {"RA": 150.125, "DEC": 2.21, "SR": 0.2, "MAXREC": 3}),
}


def main() -> None:
    """Fetch and write every response."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="http://localhost:8080")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (adql, maxrec) in TAP.items():
        data = {"LANG": "ADQL", "REQUEST": "doQuery", "QUERY": adql}
        if maxrec is not None:
            data["MAXREC"] = str(maxrec)
        r = requests.post(args.base + "/tap/sync", data=data, timeout=60)
        (OUT / name).write_bytes(r.content)
        print(OUT / name, r.status_code, len(r.content))
    for name, (path, params) in SCS.items():
        r = requests.get(args.base + path, params=params, timeout=60)
        (OUT / name).write_bytes(r.content)
        print(OUT / name, r.status_code, len(r.content))


if __name__ == "__main__":
    main()
