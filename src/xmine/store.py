"""The DuckDB store: schema versions, the generic run-bookkeeping tables, and safe file writes.

One file holds everything xmine records: the catalogue cache, its provenance,
and the results of runs. This module owns the file's schema version and the
tables every later step uses:

``runs``
    one row per run (pipeline, simulation, demo), with its parameters and seed.
``steps``
    one row per (run, item, step): the hash of inputs and parameters, status,
    output paths and timing. A step whose row says ``done`` with the same hash is
    not run again.
``failures``
    one row per failed (run, item, step), with the one-line reason.
``provenance``
    one row per cached catalogue result: service, query text and hash, rows,
    truncation and expiry.

Writers open the file with :func:`open_store`; DuckDB allows one writing
process at a time, so a second writer gets a :class:`~xmine.errors.CacheError`
naming the file. Readers pass ``read_only=True``.

File outputs go through :func:`atomic_write`: a temporary file beside the
target, renamed into place only when complete, so a killed run never leaves a
half-written FITS or region file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from xmine.errors import CacheError, InputError

__all__ = [
    "SCHEMA_VERSION",
    "Store",
    "atomic_write",
    "hash_inputs",
    "open_store",
    "write_table",
]

#: The schema version this xmine writes. A file with a newer version is refused.
SCHEMA_VERSION = 3

# Each entry upgrades the schema from version ``i`` to ``i + 1``; index 0 creates it.
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS runs (
            run_id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            started TIMESTAMPTZ NOT NULL,
            finished TIMESTAMPTZ,
            xmine_version VARCHAR NOT NULL,
            params_json VARCHAR NOT NULL,
            seed BIGINT,
            status VARCHAR NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS steps (
            run_id VARCHAR NOT NULL,
            item VARCHAR NOT NULL,
            step VARCHAR NOT NULL,
            inputs_hash VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            outputs_json VARCHAR NOT NULL,
            started TIMESTAMPTZ,
            seconds DOUBLE,
            PRIMARY KEY (run_id, item, step)
        )""",
        """CREATE TABLE IF NOT EXISTS failures (
            run_id VARCHAR NOT NULL,
            item VARCHAR NOT NULL,
            step VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            failed_at TIMESTAMPTZ NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS provenance (
            result_table VARCHAR PRIMARY KEY,
            service VARCHAR NOT NULL,
            catalogue VARCHAR NOT NULL,
            release VARCHAR,
            query_text VARCHAR NOT NULL,
            query_sha256 VARCHAR NOT NULL,
            params_json VARCHAR NOT NULL,
            fetched_at TIMESTAMPTZ NOT NULL,
            rows BIGINT NOT NULL,
            truncated BOOLEAN NOT NULL,
            versions_json VARCHAR NOT NULL,
            expires_at TIMESTAMPTZ
        )""",
    ],
    # 2: results of bulk runs (xmine.results writes them, one transaction per cluster)
    [
        """CREATE TABLE IF NOT EXISTS clusters (
            run_id VARCHAR NOT NULL, cluster VARCHAR NOT NULL,
            ra_deg DOUBLE, dec_deg DOUBLE, z DOUBLE, r500_kpc DOUBLE, r500_source VARCHAR, tx_kev DOUBLE,
            obsids VARCHAR, n_obsids INTEGER, exposure_s DOUBLE, n_bins INTEGER,
            status VARCHAR NOT NULL, reason VARCHAR, products_dir VARCHAR, seconds DOUBLE,
            recorded_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (run_id, cluster)
        )""",
        """CREATE TABLE IF NOT EXISTS observations (
            run_id VARCHAR NOT NULL, cluster VARCHAR NOT NULL, obsid BIGINT NOT NULL,
            evt2 VARCHAR, exposure_s DOUBLE, clean_fraction DOUBLE, n_flares INTEGER, gti_file VARCHAR,
            status VARCHAR NOT NULL, reason VARCHAR, provenance_json VARCHAR,
            PRIMARY KEY (run_id, cluster, obsid)
        )""",
        """CREATE TABLE IF NOT EXISTS regions (
            run_id VARCHAR NOT NULL, cluster VARCHAR NOT NULL, bin_id INTEGER NOT NULL,
            n_pix BIGINT, area_arcsec2 DOUBLE, counts DOUBLE, bg_counts DOUBLE, net_counts DOUBLE, net_err DOUBLE,
            sn DOUBLE, exposure_mean_s DOUBLE, rate_cps DOUBLE, sb_cps_arcsec2 DOUBLE, sb_cps_arcsec2_err DOUBLE,
            sb_flux_cgs_arcsec2 DOUBLE, sb_flux_cgs_arcsec2_err DOUBLE,
            soft_net DOUBLE, soft_err DOUBLE, hard_net DOUBLE, hard_err DOUBLE, hr DOUBLE, hr_err DOUBLE,
            x_pix DOUBLE, y_pix DOUBLE, x_phys DOUBLE, y_phys DOUBLE, ra_deg DOUBLE, dec_deg DOUBLE,
            r_arcmin DOUBLE, r_kpc DOUBLE, r_r500 DOUBLE, outline_fk5 VARCHAR, region_file VARCHAR,
            PRIMARY KEY (run_id, cluster, bin_id)
        )""",
        """CREATE TABLE IF NOT EXISTS region_spectra (
            run_id VARCHAR NOT NULL, cluster VARCHAR NOT NULL, bin_id INTEGER NOT NULL, obsid BIGINT NOT NULL,
            pha_file VARCHAR, bkg_file VARCHAR, arf_file VARCHAR, rmf_file VARCHAR, counts DOUBLE,
            bkg_counts DOUBLE, exposure_s DOUBLE, backscal DOUBLE, bkg_backscal DOUBLE,
            PRIMARY KEY (run_id, cluster, bin_id, obsid)
        )""",
        """CREATE TABLE IF NOT EXISTS region_fits (
            run_id VARCHAR NOT NULL, cluster VARCHAR NOT NULL, bin_id INTEGER NOT NULL, model VARCHAR,
            kt_kev DOUBLE, kt_lo DOUBLE, kt_hi DOUBLE, norm DOUBLE, norm_lo DOUBLE, norm_hi DOUBLE,
            nh_1e22 DOUBLE, stat VARCHAR, statistic DOUBLE, dof INTEGER, n_counts DOUBLE, note VARCHAR,
            PRIMARY KEY (run_id, cluster, bin_id)
        )""",
        """CREATE TABLE IF NOT EXISTS profiles (
            run_id VARCHAR NOT NULL, cluster VARCHAR NOT NULL, annulus INTEGER NOT NULL,
            r_in_arcsec DOUBLE, r_out_arcsec DOUBLE, r_mean_arcsec DOUBLE, counts DOUBLE, bg_counts DOUBLE,
            bg_err DOUBLE, area_pix DOUBLE, area_arcsec2 DOUBLE, net_counts DOUBLE, net_err_lo DOUBLE,
            net_err_hi DOUBLE, sb_counts_arcsec2 DOUBLE, sb_err_lo DOUBLE, sb_err_hi DOUBLE, exposure_mean DOUBLE,
            sb_cps_arcsec2 DOUBLE, sb_cps_err_lo DOUBLE, sb_cps_err_hi DOUBLE,
            PRIMARY KEY (run_id, cluster, annulus)
        )""",
    ],
    # 3: the mean distance of a region's pixels from the cluster centre (a ring's centroid lies near the centre)
    ["ALTER TABLE regions ADD COLUMN IF NOT EXISTS r_mean_arcmin DOUBLE"],
]


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def hash_inputs(*parts: Any) -> str:
    """Return a stable SHA-256 hex digest of JSON-serialisable parts.

    Paths are hashed by name, size and modification time, so a changed input
    file changes the hash without reading the whole file.

    Parameters
    ----------
    *parts
        Parameters (dicts, lists, numbers, strings) and :class:`~pathlib.Path` objects.

    Returns
    -------
    str
        64 hexadecimal characters.
    """

    def _default(obj: Any) -> Any:
        if isinstance(obj, Path):
            try:
                st = obj.stat()
            except OSError:
                return {"path": str(obj), "missing": True}
            return {"path": str(obj), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if hasattr(obj, "tolist"):
            return obj.tolist()
        return str(obj)

    text = json.dumps(parts, sort_keys=True, default=_default)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place on success.

    The temporary file is removed if the block raises, so a failed or killed
    writer never leaves a half-written ``path``.

    Parameters
    ----------
    path : path-like
        The final file name. Its folder is created if missing.
    overwrite : bool, optional
        If False, refuse to replace an existing file.

    Yields
    ------
    pathlib.Path
        Where to write; its name ends in ``.tmp`` after the real suffix is kept,
        so ``astropy.io.fits`` still recognises ``.fits`` / ``.fits.gz`` names.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from astropy.io import fits
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "img.fits"
    >>> with atomic_write(out) as tmp:
    ...     fits.writeto(tmp, np.zeros((2, 2)))
    >>> out.exists()
    True
    """
    target = Path(path)
    if target.exists() and not overwrite:
        msg = f"{target}: file exists; remove it or pass overwrite=True"
        raise CacheError(msg)
    target.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffixes last so writers that sniff the extension still work
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + "".join(target.suffixes),
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers such as astropy refuse to overwrite; let them create it
    try:
        yield tmp
        if not tmp.exists():
            msg = f"{target}: the writer produced no file"
            raise CacheError(msg)
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            msg = f"{target}: the disk is full ({exc.strerror}); free space in {target.parent} and rerun"
            raise CacheError(msg) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


#: astropy writers by file suffix for :func:`write_table` (anything else is FITS).
_TABLE_FORMATS = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".xml": "votable", ".vot": "votable",
                  ".parquet": "parquet"}


def write_table(table: Any, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write an astropy Table atomically, in the format its suffix names (FITS otherwise).

    Raises
    ------
    xmine.errors.InputError
        If the file exists and ``overwrite`` is false.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        msg = f"{target}: exists; use --force to replace it"
        raise InputError(msg)
    with atomic_write(target) as tmp:
        table.write(tmp, format=_TABLE_FORMATS.get(target.suffix.lower(), "fits"))
    return target


@dataclass
class Store:
    """An open DuckDB store.

    Use :func:`open_store` to make one; close it with :meth:`close` or a ``with`` block.
    """

    path: Path
    con: duckdb.DuckDBPyConnection
    read_only: bool

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(duckdb.Error):
            self.con.close()

    # -- schema ---------------------------------------------------------
    @property
    def schema_version(self) -> int:
        """The schema version recorded in the file (0 for an empty file)."""
        return _read_version(self.con)

    # -- runs -----------------------------------------------------------
    def start_run(self, kind: str, params: Mapping[str, Any], *, seed: int | None = None,
                  run_id: str | None = None) -> str:
        """Record a new run and return its id.

        Parameters
        ----------
        kind : str
            What runs, e.g. ``"simulate"``, ``"demo"``, ``"pipeline"``.
        params : mapping
            The full parameters, stored as JSON so the run can be repeated.
        seed : int, optional
            The random seed, for steps that draw random numbers.
        run_id : str, optional
            Resume this run instead of making a new id.
        """
        from xmine import __version__

        self._writable()
        run_id = run_id or f"{kind}-{_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        text = json.dumps(params, sort_keys=True, default=str)
        row = _first_row(self.con, "SELECT params_json, kind FROM runs WHERE run_id = $r", {"r": run_id})
        if row is not None and (row[0] != text or row[1] != kind):
            msg = (f"run {run_id} was started as a {row[1]} run with other parameters; resume it with the same "
                   "configuration or start a new run (another --run-id)")
            raise InputError(msg)
        self.con.execute(
            """INSERT INTO runs VALUES ($run_id, $kind, $started, NULL, $version, $params, $seed, 'running')
               ON CONFLICT (run_id) DO UPDATE SET status = 'running', finished = NULL""",
            {"run_id": run_id, "kind": kind, "started": _now(), "version": __version__,
             "params": text, "seed": seed},
        )
        return run_id

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """Mark a run finished (or ``failed``)."""
        self._writable()
        self.con.execute("UPDATE runs SET finished = $t, status = $s WHERE run_id = $r",
                         {"t": _now(), "s": status, "r": run_id})

    # -- steps ----------------------------------------------------------
    def step_done(self, run_id: str, item: str, step: str, inputs_hash: str) -> dict[str, Any] | None:
        """Return the outputs of a finished step with the same inputs hash, else None."""
        row = _first_row(self.con,
            """SELECT outputs_json FROM steps WHERE run_id = $r AND item = $i AND step = $s
               AND inputs_hash = $h AND status = 'done'""",
            {"r": run_id, "i": item, "s": step, "h": inputs_hash},
        )
        return None if row is None else json.loads(row[0])

    def record_step(self, run_id: str, item: str, step: str, inputs_hash: str, *,
                    status: str = "done", outputs: Mapping[str, Any] | None = None,
                    started: _dt.datetime | None = None, seconds: float | None = None) -> None:
        """Insert or replace the row of one step."""
        self._writable()
        self.con.execute(
            """INSERT OR REPLACE INTO steps VALUES ($r, $i, $s, $h, $status, $out, $started, $sec)""",
            {"r": run_id, "i": item, "s": step, "h": inputs_hash, "status": status,
             "out": json.dumps(dict(outputs or {}), sort_keys=True, default=str),
             "started": started or _now(), "sec": seconds},
        )

    def record_failure(self, run_id: str, item: str, step: str, reason: str) -> None:
        """Record why a step failed for one item; the run goes on."""
        self._writable()
        self.con.execute("INSERT INTO failures VALUES ($r, $i, $s, $reason, $t)",
                         {"r": run_id, "i": item, "s": step, "reason": reason, "t": _now()})

    # -- provenance -----------------------------------------------------
    def record_provenance(self, result_table: str, *, service: str, catalogue: str, query_text: str,
                          rows: int, truncated: bool, release: str | None = None,
                          params: Mapping[str, Any] | None = None,
                          versions: Mapping[str, str] | None = None,
                          expires_at: _dt.datetime | None = None) -> None:
        """Insert or replace the provenance row of a cached result table."""
        self._writable()
        self.con.execute(
            """INSERT OR REPLACE INTO provenance VALUES
               ($t, $svc, $cat, $rel, $q, $sha, $params, $at, $rows, $trunc, $ver, $exp)""",
            {"t": result_table, "svc": service, "cat": catalogue, "rel": release, "q": query_text,
             "sha": hashlib.sha256(query_text.encode()).hexdigest(),
             "params": json.dumps(dict(params or {}), sort_keys=True, default=str), "at": _now(),
             "rows": rows, "trunc": truncated, "ver": json.dumps(dict(versions or {}), sort_keys=True),
             "exp": expires_at},
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block in one transaction: all of its writes land, or none."""
        self._writable()
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")

    def query(self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> Any:
        """Run SQL with bound parameters and return an Arrow table."""
        return self.con.sql(sql, params=params).to_arrow_table()

    def _writable(self) -> None:
        if self.read_only:
            msg = f"{self.path}: opened read-only; open it with read_only=False to write"
            raise CacheError(msg)


def _first_row(con: duckdb.DuckDBPyConnection, sql: str,
               params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
    """Return the first row of a query, reading the result to its end.

    DuckDB 2 keeps a connection busy until a result is exhausted, so a bare
    ``fetchone()`` would block the next statement.
    """
    rows = con.execute(sql, params).fetchall()
    return rows[0] if rows else None


def _read_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = _first_row(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'xmine_schema'")
    if not exists or exists[0] == 0:
        return 0
    row = _first_row(con, "SELECT max(version) FROM xmine_schema")
    return int(row[0]) if row and row[0] is not None else 0


def _migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    version = _read_version(con)
    if version > SCHEMA_VERSION:
        msg = (f"{path}: schema version {version} was written by a newer xmine "
               f"(this one reads up to {SCHEMA_VERSION}); upgrade xmine or use another --store file")
        raise CacheError(msg)
    if version == SCHEMA_VERSION:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("CREATE TABLE IF NOT EXISTS xmine_schema (version INTEGER, applied TIMESTAMPTZ)")
        for v in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[v]:
                con.execute(statement)
            con.execute("INSERT INTO xmine_schema VALUES ($v, $t)", {"v": v + 1, "t": _now()})
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _connect(p: Path, *, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """Connect to the file, retrying for ``wait_s`` seconds while another process holds its lock."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(p), read_only=read_only)
        except duckdb.IOException as exc:
            text = str(exc).splitlines()[0]
            if "lock" in text.lower():
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                msg = f"{p}: the store is in use by another xmine process ({text}); wait for it or use another file"
            else:
                msg = f"{p}: cannot open as a DuckDB store ({text}); check the path or move the file aside"
            raise CacheError(msg) from exc
        except duckdb.Error as exc:
            msg = f"{p}: cannot open as a DuckDB store ({str(exc).splitlines()[0]})"
            raise CacheError(msg) from exc


def open_store(path: str | os.PathLike[str], *, read_only: bool = False, wait_s: float = 0.0) -> Store:
    """Open (and, for writers, create or migrate) the DuckDB store at ``path``.

    Parameters
    ----------
    path : path-like
        The ``.duckdb`` file.
    read_only : bool, optional
        Open for reading only; the file must exist and be of a known schema.
    wait_s : float, optional
        While another process holds the file (a bulk run records a cluster, a reader runs a query), retry for up
        to this many seconds before giving up.

    Returns
    -------
    Store

    Raises
    ------
    xmine.errors.CacheError
        If the file is not a DuckDB database, is locked by another writer, is
        missing (read-only), or was written by a newer xmine.
    """
    p = Path(path)
    if read_only and not p.exists():
        msg = f"{p}: no such store; run a command that writes it first (e.g. `xmine demo`)"
        raise CacheError(msg)
    if not read_only:
        p.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(p, read_only=read_only, wait_s=wait_s)
    try:
        if read_only:
            version = _read_version(con)
            if version > SCHEMA_VERSION:
                msg = (f"{p}: schema version {version} was written by a newer xmine "
                       f"(this one reads up to {SCHEMA_VERSION}); upgrade xmine")
                raise CacheError(msg)
        else:
            _migrate(con, p)
    except BaseException:
        con.close()
        raise
    return Store(path=p, con=con, read_only=read_only)
