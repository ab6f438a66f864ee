"""Per-source data products of the Chandra Source Catalog: find, download, load, plot and fit them.

The service
-----------
CSC 2.x per-source, per-observation products (spectrum ``pha3`` with its
``arf3`` and ``rmf3``, light curve ``lc3``, source region ``reg3``, region event
list ``regevt3``) are named like ``acisf04938_000N002_r0043_pha3.fits``
(instrument, ``obsid_obi``, processing version ``N…``, region, then for banded
products the band letter: ``r0043b_lc3``). The version is not known in advance,
so a client asks the CXC's CSC command-line interface (the one CIAO's
``search_csc`` uses) in two steps:

1. ``GET {url}/browse?packageset={obsid}.{obi}.{region_id}/{filetype}/{band}&version={version}``
   returns JSON ``[{"filename": ...}]`` (an empty list: no such product);
2. ``GET {url}/retrieveFile?filetype=…&filename=…&version=…`` returns the file,
   gzip-compressed (CIAO keeps it as ``<filename>.gz``; xmine checks it, then
   uncompresses it to ``<filename>`` so that the ``RESPFILE``/``ANCRFILE``/``BACKFILE``
   names in the headers find their files for CIAO, Sherpa and XSPEC).

``url`` is ``services.csc21.products_url`` of the configuration (default
:data:`DEFAULT_URL`), ``version`` ``rel2.1`` (or ``cur``). Which observations
and regions a source has comes from the catalogue (:func:`query_source_observations`:
``master_source`` → ``master_stack_assoc`` → ``stack_observation_assoc``) or a
cached table of those columns.

Integrity
---------
What the real service offers for checking a download is not documented: CIAO's
client reads the body whole and checks nothing, and no manifest of sizes or
sums is published. xmine checks everything it can get: the byte count against
``Content-Length`` (and ``Content-Range``), ``Content-MD5`` when sent, and the
gzip trailer (CRC-32 and length of the uncompressed data) of every file, which
the CXC's gzip encoding carries regardless of what the HTTP layer does; a file
that fails is deleted and refetched once, then reported. Each download is
recorded in ``manifest.json`` beside the files (URL, size, MD5, ETag, time).

Resume
------
Bytes arrive in ``<file>.part``. If a connection drops, the next attempt asks
for ``Range: bytes=<have>-`` (with ``If-Range`` = the ETag when there is one):
a ``206`` with the right ``Content-Range`` is appended; a ``200`` (no range
support, or the file changed) starts over. Only when all checks pass is the
``.part`` renamed into place (atomic), so an existing product file is always
complete. Retries follow :mod:`xmine.vo`: connection errors, 429 and 502–504
with backoff (``Retry-After`` honoured); other statuses fail at once.

Approximations
--------------
* Spectral plots show counts s⁻¹ keV⁻¹ against the nominal channel energies of
  the RMF's ``EBOUNDS`` (not unfolded through the response, as ``plot_data`` in
  Sherpa/XSPEC also shows them); the background is scaled by
  ``BACKSCAL × EXPOSURE`` (ratio of the source and background values), as
  CIAO/XSPEC subtract it, ``AREASCAL`` ignored (1 in CSC files).
* Light curves are read from any table with ``TIME`` and ``COUNT_RATE`` (or
  ``COUNTS`` and ``TIMEDEL``); the layout of real CSC ``lc3`` files (Gregory–
  Loredo blocks) was not checked against a real file here.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import hashlib
import importlib
import json
import logging
import os
import random
import re
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from xmine.errors import InputError, ServiceError
from xmine.store import atomic_write
from xmine.vo import RETRY_STATUS, make_session

__all__ = [
    "DEFAULT_PRODUCTS",
    "DEFAULT_URL",
    "PRODUCT_TYPES",
    "LightCurve",
    "ProductFile",
    "ProductType",
    "Spectrum",
    "fetch_products",
    "find_product_files",
    "fit_product_spectrum",
    "load_light_curve",
    "load_spectrum",
    "plot_light_curve",
    "plot_spectrum",
    "query_source_observations",
    "resolve_sources",
]

log = logging.getLogger(__name__)

#: The CXC's CSC command-line interface (browse + retrieveFile).
DEFAULT_URL = "https://cda.cfa.harvard.edu/csccli"
_CHUNK = 1 << 16
_MAX_RETRY_AFTER_S = 120.0


@dataclass(frozen=True)
class ProductType:
    """One kind of per-source product.

    Attributes
    ----------
    key : str
        xmine's short name (``pha``, ``arf``, ...).
    filetype : str
        The service's file type (``spectrum``, ``arf``, ...).
    suffix : str
        The file-name suffix (``pha3``, ...).
    banded : bool
        One file per energy band (the band letter follows the region number).
    acis_only : bool
        HRC observations have none.
    """

    key: str
    filetype: str
    suffix: str
    banded: bool = False
    acis_only: bool = False


#: Per-source, per-observation products (as CIAO's ``search_csc`` names them).
PRODUCT_TYPES: dict[str, ProductType] = {p.key: p for p in (
    ProductType("pha", "spectrum", "pha3", acis_only=True),
    ProductType("arf", "arf", "arf3"),
    ProductType("rmf", "rmf", "rmf3", acis_only=True),
    ProductType("lc", "lightcurve", "lc3", banded=True),
    ProductType("reg", "srcreg", "reg3"),
    ProductType("regevt", "regevt3", "regevt3"),
)}
#: What :func:`fetch_products` gets unless told otherwise.
DEFAULT_PRODUCTS = ("pha", "arf", "rmf", "lc", "reg", "regevt")
_BANDS = {"ACIS": "bsmhu", "HRC": "w"}


# ---------------------------------------------------------------------------- sources
def _col_values(table: Any, name: str) -> list[Any]:
    if hasattr(table, "column_names"):  # pyarrow
        if name not in table.column_names:
            raise KeyError(name)
        return list(table.column(name).to_pylist())
    if name not in table.colnames:
        raise KeyError(name)
    return [v.item() if hasattr(v, "item") else v for v in np.asarray(table[name]).tolist()]


def _instrument(stack_or_instrument: str) -> str:
    text = str(stack_or_instrument).strip().upper()
    return "HRC" if text.startswith("HRC") else "ACIS"


def resolve_sources(sources: Any, *, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Return one record per (source, observation) with what a product request needs.

    Parameters
    ----------
    sources : astropy Table, pyarrow Table or sequence of dict
        Rows with ``name``, ``obsid``, ``obi``, ``region_id`` and either
        ``instrument`` or ``detect_stack_id`` (its prefix ``acisf``/``hrcf``
        gives the instrument) — the columns of the ``csc21_master_obsids`` query.
    names : sequence of str, optional
        Keep only these sources; each must be in ``sources``.

    Returns
    -------
    list of dict
        ``name, obsid, obi, region_id, instrument``, duplicates removed, in input order.

    Raises
    ------
    xmine.errors.InputError
        A column is missing, or a name is not in the table.
    """
    if isinstance(sources, Sequence) and not isinstance(sources, str):
        rows = [dict(r) for r in sources]
        cols = set().union(*(r.keys() for r in rows)) if rows else set()
        get = {c: [r.get(c) for r in rows] for c in cols}
    else:
        cols = set(getattr(sources, "column_names", None) or getattr(sources, "colnames", []))
        get = {c: _col_values(sources, c) for c in cols}
    need = ["name", "obsid", "obi", "region_id"]
    missing = [c for c in need if c not in cols]
    if "instrument" not in cols and "detect_stack_id" not in cols:
        missing.append("instrument or detect_stack_id")
    if missing:
        msg = (f"source table lacks {', '.join(missing)}; query the sources with csc21_master_obsids "
               "(name, obsid, obi, region_id, detect_stack_id)")
        raise InputError(msg)
    inst = get.get("instrument") or get["detect_stack_id"]
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, int, int, int]] = set()
    for name, obsid, obi, region, ins in zip(get["name"], get["obsid"], get["obi"], get["region_id"], inst,
                                             strict=True):
        if obsid is None or obi is None or region is None:
            msg = f"source {name!r} has no obsid/obi/region_id in the source table; drop that row or query it again"
            raise InputError(msg)
        key = (str(name).strip(), int(obsid), int(obi), int(region))
        if key in seen:
            continue
        seen.add(key)
        out.append({"name": key[0], "obsid": key[1], "obi": key[2], "region_id": key[3],
                    "instrument": _instrument(str(ins))})
    if names is not None:
        known = {r["name"] for r in out}
        unknown = [n for n in names if n.strip() not in known]
        if unknown:
            msg = (f"source {unknown[0]!r} is not in the source table ({len(known)} sources); "
                   "check the name (CSC 2.1 names look like '2CXO J100030.0+021236') or query it first")
            raise InputError(msg)
        wanted = {n.strip() for n in names}
        out = [r for r in out if r["name"] in wanted]
    return out


def query_source_observations(names: Sequence[str], *, tap_url: str,
                              master_source: str = "csc21.master_source",
                              master_stack_assoc: str = "csc21.master_stack_assoc",
                              stack_observation_assoc: str = "csc21.stack_observation_assoc",
                              timeout_s: float = 300.0, retries: int = 3) -> Any:
    """Ask the CSC TAP service for the observations and regions of named sources.

    Returns
    -------
    astropy.table.Table
        ``name, detect_stack_id, region_id, obsid, obi`` (the input of :func:`fetch_products`).

    Raises
    ------
    xmine.errors.InputError
        No names, or a name the catalogue does not have.
    """
    from xmine.errors import NoResultsWarning
    from xmine.vo import query_tap

    clean = [n.strip() for n in names if n.strip()]
    if not clean:
        msg = "no source names given; name CSC sources like '2CXO J100030.0+021236'"
        raise InputError(msg)
    for table in (master_source, master_stack_assoc, stack_observation_assoc):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", table):
            msg = f"table name {table!r} is not a plain identifier"
            raise InputError(msg)
    quoted = ", ".join("'" + n.replace("'", "''") + "'" for n in clean)
    adql = (f"SELECT m.name, a.detect_stack_id, a.region_id, b.obsid, b.obi "
            f"FROM {master_source} AS m, {master_stack_assoc} AS a, {stack_observation_assoc} AS b "
            f"WHERE m.name = a.name AND a.detect_stack_id = b.detect_stack_id AND a.region_id = b.region_id "
            f"AND m.name IN ({quoted})")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoResultsWarning)
        res = query_tap(adql, url=tap_url, timeout_s=timeout_s, retries=retries)
    table = res.table  # type: ignore[union-attr]
    found = {str(v).strip() for v in table["name"]}
    unknown = [n for n in clean if n not in found]
    if unknown:
        msg = (f"source {unknown[0]!r} not found in {master_source} at {tap_url}"
               f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}; check the name")
        raise InputError(msg)
    return table


# ---------------------------------------------------------------------------- download
@dataclass
class ProductFile:
    """One product of one source in one observation.

    Attributes
    ----------
    name : str
        The master source name.
    obsid, obi, region_id : int
        The observation and the source's region in it.
    product : str
        Key in :data:`PRODUCT_TYPES`.
    band : str
        Band letter for banded products, else ``""``.
    filename : str or None
        The service's file name (None when the service has no such product).
    path : Path or None
        The local (uncompressed) file.
    status : str
        ``downloaded``, ``present`` (already complete on disk), ``missing``
        (not offered for this source) or ``skipped`` (not made for HRC).
    bytes : int
        Size on disk.
    md5 : str
        MD5 (hex) of the bytes as downloaded (gzip-compressed).
    resumed : bool
        The download was continued from a ``.part`` file.
    """

    name: str
    obsid: int
    obi: int
    region_id: int
    product: str
    band: str = ""
    filename: str | None = None
    path: Path | None = None
    status: str = "missing"
    bytes: int = 0
    md5: str = ""
    resumed: bool = False
    reason: str = ""


@dataclass
class _Retrier:
    retries: int = 3
    base_s: float = 1.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(0.0, float(retry_after)), _MAX_RETRY_AFTER_S)
            except ValueError:
                pass
        return self.rng.uniform(0.5, 1.0) * min(60.0, self.base_s * 2.0 ** attempt)


def _connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                            ConnectionError, TimeoutError))


def _fail(what: str, url: str, exc: BaseException | None, status: int | None, attempts: int) -> ServiceError:
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if status is not None:
        msg = f"{what}: HTTP {status} from {url}{tries}"
        msg += "; the service is busy or down, try later" if status in RETRY_STATUS else "; check the URL"
    elif isinstance(exc, requests.Timeout):
        msg = f"{what}: {url} timed out{tries}; raise services.timeout_s or try later"
    else:
        msg = f"{what}: cannot connect to {url}{tries}; check services.csc21_products.url and the network"
    return ServiceError(msg, url=url, status=status)


def _browse(session: requests.Session, url: str, version: str, rec: Mapping[str, Any], ptype: ProductType,
            band: str, retry: _Retrier) -> str | None:
    params = {"packageset": f"{rec['obsid']}.{rec['obi']}.{rec['region_id']}/{ptype.filetype}/{band}",
              "version": version}
    endpoint = url.rstrip("/") + "/browse"
    what = f"listing {ptype.key} of {rec['name']} in obsid {rec['obsid']}"
    attempt = 0
    while True:
        try:
            resp = session.get(endpoint, params=params)
        except requests.RequestException as exc:
            if _connection_error(exc) and attempt < retry.retries:
                retry.sleep(retry.delay(attempt, None))
                attempt += 1
                continue
            raise _fail(what, endpoint, exc, None, attempt + 1) from exc
        if resp.status_code in RETRY_STATUS and attempt < retry.retries:
            retry.sleep(retry.delay(attempt, resp.headers.get("Retry-After")))
            attempt += 1
            continue
        if resp.status_code == 404:
            return None
        if not resp.ok:
            raise _fail(what, endpoint, None, resp.status_code, attempt + 1)
        try:
            listing = resp.json()
        except ValueError as exc:
            msg = f"{what}: {endpoint} did not answer JSON ({resp.text[:80]!r}); is it a CSC csccli service?"
            raise ServiceError(msg, url=endpoint, status=resp.status_code) from exc
        names = [str(item["filename"]) for item in listing if isinstance(item, Mapping) and item.get("filename")]
        return sorted(names)[-1] if names else None  # the highest processing version


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _check_gzip(path: Path) -> str | None:
    """Return why a gzip file is damaged (CRC, length, truncation), or None."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        return f"gzip check failed ({exc})"
    return None


def _blocks(resp: requests.Response) -> Iterable[bytes]:
    """Yield the body as it arrives; every byte received before a cut is yielded (kept for the resume)."""
    raw = resp.raw
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 < 2: whole chunks only
        yield from resp.iter_content(8192)
        return
    try:
        while block := read1(_CHUNK):
            yield block
    except Exception as exc:  # urllib3 errors become requests' so the retry rule sees a dropped connection
        raise requests.exceptions.ChunkedEncodingError(exc) from exc


def _download(session: requests.Session, endpoint: str, params: Mapping[str, str], target: Path, what: str,
              retry: _Retrier, progress: Callable[[str, int, int], None] | None) -> dict[str, Any]:
    """Fetch into ``target.part`` with Range resume; return headers and whether it resumed."""
    part = target.with_name(target.name + ".part")
    attempt = 0
    resumed = False
    etag = ""
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            if etag:
                headers["If-Range"] = etag
        try:
            with session.get(endpoint, params=params, headers=headers, stream=True) as resp:
                status = resp.status_code
                if status in RETRY_STATUS and attempt < retry.retries:
                    retry.sleep(retry.delay(attempt, resp.headers.get("Retry-After")))
                    attempt += 1
                    continue
                if status == 416 and have:  # our part is already the whole file (or bigger): start over
                    part.unlink()
                    continue
                if status == 404:
                    msg = f"{what}: the service has no such file (HTTP 404 from {endpoint}); drop it from --products"
                    raise ServiceError(msg, url=endpoint, status=404)
                if status not in (200, 206):
                    raise _fail(what, endpoint, None, status, attempt + 1)
                etag = resp.headers.get("ETag", etag)
                length = resp.headers.get("Content-Length")
                if status == 206:
                    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != have:
                        part.unlink(missing_ok=True)  # a range we did not ask for: start over
                        continue
                    total = int(m.group(3)) if m.group(3) != "*" else None
                    mode, resumed = "ab", True
                else:
                    total = int(length) if length is not None else None
                    mode, have = "wb", 0
                got = have
                with part.open(mode) as fh:
                    for block in _blocks(resp):
                        fh.write(block)
                        got += len(block)
                        if progress is not None:
                            progress(target.name, got, total or 0)
                if total is not None and got != total:
                    # urllib3 normally raises on a short body; a server that closes early without it lands here
                    raise requests.exceptions.ChunkedEncodingError(f"{got} of {total} bytes")
                return {"etag": etag, "content_md5": resp.headers.get("Content-MD5", ""), "size": got,
                        "resumed": resumed, "url": resp.url}
        except ServiceError:
            raise
        except requests.RequestException as exc:
            if _connection_error(exc) and attempt < retry.retries:
                log.info("%s: %s; resuming (%d/%d)", what, exc, attempt + 1, retry.retries)
                retry.sleep(retry.delay(attempt, None))
                attempt += 1
                continue
            raise _fail(what, endpoint, exc, None, attempt + 1) from exc


def _manifest_path(out_dir: Path) -> Path:
    return out_dir / "manifest.json"


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = _manifest_path(out_dir)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(out_dir: Path, manifest: Mapping[str, Any]) -> None:
    with atomic_write(_manifest_path(out_dir)) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _fetch_one(session: requests.Session, url: str, version: str, pf: ProductFile, ptype: ProductType,
               out_dir: Path, manifest: dict[str, Any], retry: _Retrier,
               progress: Callable[[str, int, int], None] | None) -> None:
    what = f"{ptype.key} of {pf.name} (obsid {pf.obsid})"
    folder = out_dir / pf.name.replace(" ", "") / f"{pf.obsid:05d}_{pf.obi:03d}"
    target = folder / str(pf.filename)
    rel = str(target.relative_to(out_dir))
    known = manifest.get(rel)
    if target.exists() and known and target.stat().st_size == known.get("bytes"):
        pf.path, pf.status, pf.bytes = target, "present", int(known["bytes"])
        pf.md5 = str(known.get("download_md5", ""))
        return
    folder.mkdir(parents=True, exist_ok=True)
    endpoint = url.rstrip("/") + "/retrieveFile"
    params = {"filetype": ptype.filetype, "filename": str(pf.filename), "version": version}
    download = target.with_name(target.name + ".gz")
    part = download.with_name(download.name + ".part")
    for check in range(2):
        info = _download(session, endpoint, params, download, what, retry, progress)
        problem = None
        md5 = _md5(part)
        if info["content_md5"]:
            want = info["content_md5"]
            got64 = base64.b64encode(bytes.fromhex(md5)).decode()
            if want not in (got64, md5):
                problem = f"MD5 {got64} differs from the server's Content-MD5 {want}"
        gzipped = _is_gzip(part)
        if problem is None and gzipped:
            problem = _check_gzip(part)
        if problem is None:
            break
        part.unlink(missing_ok=True)
        if check == 1:
            msg = f"{what}: the download from {endpoint} is damaged twice ({problem}); try again later"
            raise ServiceError(msg, url=endpoint)
        log.warning("%s: %s; downloading again", what, problem)
    # complete and checked: uncompress (or rename) into place atomically, so tools find RESPFILE/ANCRFILE by name
    with atomic_write(target) as tmp:
        if gzipped:
            with gzip.open(part, "rb") as src, tmp.open("wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
        else:
            os.replace(part, tmp)
    part.unlink(missing_ok=True)
    size = target.stat().st_size
    pf.path, pf.status, pf.bytes, pf.md5, pf.resumed = target, "downloaded", size, md5, info["resumed"]
    manifest[rel] = {"url": info["url"], "bytes": size, "download_bytes": info["size"], "download_md5": md5,
                     "gzip": gzipped, "etag": info["etag"],
                     "fetched_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                     "source": pf.name, "obsid": pf.obsid, "product": pf.product, "band": pf.band}


def fetch_products(sources: Any, out_dir: str | os.PathLike[str], *, names: Sequence[str] | None = None,
                   products: Iterable[str] = DEFAULT_PRODUCTS, bands: str = "b", url: str = DEFAULT_URL,
                   version: str = "rel2.1", timeout_s: float = 300.0, retries: int = 3, backoff_s: float = 1.0,
                   session: requests.Session | None = None, missing_ok: bool = True,
                   progress: Callable[[str, int, int], None] | None = None) -> list[ProductFile]:
    """Download per-source products of CSC sources, resumably and checked.

    Parameters
    ----------
    sources : table or sequence of dict
        Source–observation rows (see :func:`resolve_sources`).
    out_dir : path-like
        Files go to ``<out_dir>/<name without spaces>/<obsid>_<obi>/<filename>``, with
        ``manifest.json`` in ``out_dir``.
    names : sequence of str, optional
        Only these sources (each must be in ``sources``).
    products : iterable of str, optional
        Keys of :data:`PRODUCT_TYPES`.
    bands : str, optional
        Band letters for banded products (``b`` broad, ``s``, ``m``, ``h``, ``u``; HRC has ``w`` only).
    url, version : str, optional
        The csccli service and the catalogue release (``rel2.1``, ``cur``).
    timeout_s, retries, backoff_s : optional
        Per-request timeout (s); retries on dropped connections, 429 and 502–504; first backoff (s).
    session : requests.Session, optional
        Default: one with xmine's User-Agent and ``timeout_s``.
    missing_ok : bool, optional
        A product the service does not have for a source is reported with
        ``status="missing"``; with False it raises.
    progress : callable, optional
        ``progress(file_name, bytes_so_far, total_bytes)``.

    Returns
    -------
    list of ProductFile

    Raises
    ------
    xmine.errors.InputError
        Unknown product type or source name.
    xmine.errors.ServiceError
        The service is down, refuses, or sends damaged files twice; or a
        product is missing and ``missing_ok`` is False.
    """
    keys = list(products)
    bad = [k for k in keys if k not in PRODUCT_TYPES]
    if bad:
        msg = f"unknown product type {bad[0]!r}; use some of {', '.join(PRODUCT_TYPES)}"
        raise InputError(msg)
    records = resolve_sources(sources, names=names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out)
    retry = _Retrier(retries, base_s=backoff_s)
    own = session is None
    sess = session if session is not None else make_session(timeout_s)
    results: list[ProductFile] = []
    try:
        for rec in records:
            for key in keys:
                ptype = PRODUCT_TYPES[key]
                inst_bands = _BANDS[rec["instrument"]]
                band_list = [b for b in bands if b in inst_bands] if ptype.banded else [""]
                if ptype.banded and not band_list:
                    band_list = [inst_bands[0]]
                for band in band_list:
                    pf = ProductFile(rec["name"], rec["obsid"], rec["obi"], rec["region_id"], key, band)
                    results.append(pf)
                    if ptype.acis_only and rec["instrument"] != "ACIS":
                        pf.status, pf.reason = "skipped", f"{rec['instrument']} observations have no {key}"
                        continue
                    pf.filename = _browse(sess, url, version, rec, ptype, band, retry)
                    if pf.filename is None:
                        pf.reason = f"{url} lists no {ptype.filetype} for this source in obsid {rec['obsid']}"
                        if not missing_ok:
                            msg = (f"{key} of {rec['name']} in obsid {rec['obsid']}: the service has none "
                                   f"({url}); drop it from the products asked for")
                            raise ServiceError(msg, url=url, status=404)
                        continue
                    _fetch_one(sess, url, version, pf, ptype, out, manifest, retry, progress)
                    _write_manifest(out, manifest)
    finally:
        if own:
            sess.close()
    return results


def find_product_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Return the products found in a folder, by key (``pha``, ``arf``, ``rmf``, ``lc``, ``reg``, ``regevt``)."""
    path = Path(folder)
    if not path.is_dir():
        msg = f"{path}: not a folder of products; run 'xmine products fetch' first"
        raise InputError(msg)
    found: dict[str, Path] = {}
    for f in sorted(path.iterdir()):
        m = re.search(r"_([a-z]+3)\.fits(\.gz)?$", f.name)
        if not m:
            continue
        for key, ptype in PRODUCT_TYPES.items():
            if ptype.suffix == m.group(1):
                found.setdefault(key, f)
    return found


# ---------------------------------------------------------------------------- load
@dataclass
class Spectrum:
    """A PHA spectrum with its background.

    Attributes
    ----------
    channel : ndarray
        Channel numbers.
    counts, bkg_counts : ndarray
        Source-region and background-region counts per channel (``bkg_counts`` None if there is none).
    exposure_s, bkg_exposure_s : float
        Exposure times, seconds.
    backscal, bkg_backscal : float
        Region areas (BACKSCAL).
    e_min_kev, e_max_kev : ndarray or None
        Nominal channel energies from the RMF's EBOUNDS, when the RMF was found.
    path : Path
    respfile, ancrfile : str
        The response file names written in the header.
    """

    channel: np.ndarray
    counts: np.ndarray
    exposure_s: float
    backscal: float
    path: Path
    bkg_counts: np.ndarray | None = None
    bkg_exposure_s: float = 0.0
    bkg_backscal: float = 1.0
    e_min_kev: np.ndarray | None = None
    e_max_kev: np.ndarray | None = None
    respfile: str = ""
    ancrfile: str = ""

    @property
    def bkg_scale(self) -> float:
        """Factor turning background-region counts into source-region counts."""
        if self.bkg_counts is None or self.bkg_backscal <= 0 or self.bkg_exposure_s <= 0:
            return 0.0
        return (self.backscal * self.exposure_s) / (self.bkg_backscal * self.bkg_exposure_s)

    @property
    def net_counts(self) -> float:
        """Total counts minus the scaled background counts."""
        bkg = 0.0 if self.bkg_counts is None else float(self.bkg_counts.sum()) * self.bkg_scale
        return float(self.counts.sum()) - bkg


def _spectrum_hdus(hdul: Any) -> list[Any]:
    return [h for h in hdul[1:] if str(h.header.get("HDUCLAS1", "")).upper() == "SPECTRUM"
            or h.name == "SPECTRUM"]


def _counts(hdu: Any) -> np.ndarray:
    names = [n.upper() for n in hdu.columns.names]
    if "COUNTS" in names:
        return np.asarray(hdu.data["COUNTS"], dtype=float)
    if "RATE" in names:
        return np.asarray(hdu.data["RATE"], dtype=float) * float(hdu.header.get("EXPOSURE", 1.0))
    msg = "no COUNTS or RATE column"
    raise KeyError(msg)


def _find_beside(path: Path, name: str) -> Path | None:
    name = name.strip()
    if not name or name.lower() == "none":
        return None
    for cand in (path.parent / name, path.parent / (name + ".gz"), path.parent / name.removesuffix(".gz")):
        if cand.exists():
            return cand
    return None


def load_spectrum(path: str | os.PathLike[str]) -> Spectrum:
    """Read a PHA spectrum and its background (a 2nd SPECTRUM extension, as in CSC pha3, or BACKFILE).

    Parameters
    ----------
    path : path-like
        The ``pha3`` (or any OGIP type I PHA) file, gzipped or not.

    Returns
    -------
    Spectrum
        With the RMF's EBOUNDS energies when RESPFILE is found beside it (the
        matrix is located by ``HDUCLAS2``, so ``RSP_MATRIX`` and ``MATRIX`` both work).

    Raises
    ------
    xmine.errors.InputError
        The file is missing or holds no spectrum.
    """
    from astropy.io import fits

    p = Path(path)
    if not p.exists():
        msg = f"{p}: no such spectrum; run 'xmine products fetch' first"
        raise InputError(msg)
    try:
        with fits.open(p) as hdul:
            specs = _spectrum_hdus(hdul)
            if not specs:
                msg = f"{p}: no SPECTRUM extension; give a PHA file (…_pha3.fits)"
                raise InputError(msg)
            src = next((h for h in specs if str(h.header.get("HDUCLAS2", "")).upper() != "BKG"), specs[0])
            hdr = src.header
            chan_col = "CHANNEL" if "CHANNEL" in [n.upper() for n in src.columns.names] else src.columns.names[0]
            spec = Spectrum(channel=np.asarray(src.data[chan_col], dtype=int), counts=_counts(src),
                            exposure_s=float(hdr.get("EXPOSURE", 0.0)), backscal=float(hdr.get("BACKSCAL", 1.0)),
                            path=p, respfile=str(hdr.get("RESPFILE", "")), ancrfile=str(hdr.get("ANCRFILE", "")))
            bkg = next((h for h in specs if str(h.header.get("HDUCLAS2", "")).upper() == "BKG"), None)
            if bkg is not None:
                spec.bkg_counts = _counts(bkg)
                spec.bkg_exposure_s = float(bkg.header.get("EXPOSURE", spec.exposure_s))
                spec.bkg_backscal = float(bkg.header.get("BACKSCAL", 1.0))
            backfile = str(hdr.get("BACKFILE", ""))
    except (OSError, KeyError) as exc:
        msg = f"{p}: cannot read the spectrum ({exc}); is it a PHA file?"
        raise InputError(msg) from exc
    if spec.bkg_counts is None:
        bpath = _find_beside(p, backfile)
        if bpath is not None and bpath.resolve() != p.resolve():
            b = load_spectrum(bpath)
            spec.bkg_counts, spec.bkg_exposure_s, spec.bkg_backscal = b.counts, b.exposure_s, b.backscal
    rmf = _find_beside(p, spec.respfile)
    if rmf is not None:
        with fits.open(rmf) as hdul:
            eb = next((h for h in hdul[1:] if str(h.header.get("HDUCLAS2", "")).upper() == "EBOUNDS"
                       or h.name == "EBOUNDS"), None)
            if eb is not None:
                lut = {int(c): i for i, c in enumerate(eb.data["CHANNEL"])}
                idx = np.array([lut.get(int(c), -1) for c in spec.channel])
                ok = idx >= 0
                emin = np.full(spec.channel.size, np.nan)
                emax = np.full(spec.channel.size, np.nan)
                emin[ok] = np.asarray(eb.data["E_MIN"], dtype=float)[idx[ok]]
                emax[ok] = np.asarray(eb.data["E_MAX"], dtype=float)[idx[ok]]
                spec.e_min_kev, spec.e_max_kev = emin, emax
    return spec


@dataclass
class LightCurve:
    """A binned light curve.

    Attributes
    ----------
    time_s : ndarray
        Bin centres (mission seconds, or whatever the file's TIME holds).
    rate, rate_err : ndarray
        Count rate and its error, counts/s.
    path : Path
    """

    time_s: np.ndarray
    rate: np.ndarray
    rate_err: np.ndarray
    path: Path


def load_light_curve(path: str | os.PathLike[str]) -> LightCurve:
    """Read a light curve with ``TIME`` and ``COUNT_RATE`` (or ``COUNTS`` and ``TIMEDEL``) columns.

    Raises
    ------
    xmine.errors.InputError
        The file is missing or has no such columns.
    """
    from astropy.io import fits

    p = Path(path)
    if not p.exists():
        msg = f"{p}: no such light curve; run 'xmine products fetch' first"
        raise InputError(msg)
    with fits.open(p) as hdul:
        hdu = next((h for h in hdul[1:] if hasattr(h, "columns") and "TIME" in [n.upper() for n in h.columns.names]),
                   None)
        if hdu is None:
            msg = f"{p}: no table with a TIME column; give a light curve (…_lc3.fits)"
            raise InputError(msg)
        names = [n.upper() for n in hdu.columns.names]
        t = np.asarray(hdu.data["TIME"], dtype=float)
        if "COUNT_RATE" in names:
            rate = np.asarray(hdu.data["COUNT_RATE"], dtype=float)
            err = (np.asarray(hdu.data["COUNT_RATE_ERR"], dtype=float) if "COUNT_RATE_ERR" in names
                   else np.full_like(rate, np.nan))
        elif "COUNTS" in names:
            dt = (np.asarray(hdu.data["TIMEDEL"], dtype=float) if "TIMEDEL" in names
                  else np.full_like(t, float(hdu.header.get("TIMEDEL", 1.0))))
            counts = np.asarray(hdu.data["COUNTS"], dtype=float)
            rate, err = counts / dt, np.sqrt(counts) / dt
        else:
            msg = f"{p}: no COUNT_RATE or COUNTS column; give a light curve (…_lc3.fits)"
            raise InputError(msg)
    return LightCurve(t, rate, err, p)


# ---------------------------------------------------------------------------- plots and fits
def plot_spectrum(spectrum: Spectrum | str | os.PathLike[str], out_png: str | os.PathLike[str], *,
                  emin_kev: float = 0.3, emax_kev: float = 8.0, min_counts: int = 15) -> Path:
    """Plot a spectrum and its scaled background (counts s⁻¹ keV⁻¹) to a PNG.

    Channels are grouped to at least ``min_counts`` source counts for display only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = spectrum if isinstance(spectrum, Spectrum) else load_spectrum(spectrum)
    if spec.e_min_kev is not None and spec.e_max_kev is not None:
        lo, hi, xlabel = spec.e_min_kev, spec.e_max_kev, "energy (keV, nominal channel energy)"
    else:
        lo, hi, xlabel = spec.channel - 0.5, spec.channel + 0.5, "channel"
        emin_kev, emax_kev = float(spec.channel.min()), float(spec.channel.max())
    keep = np.isfinite(lo) & (lo >= emin_kev) & (hi <= emax_kev)
    c = spec.counts[keep]
    b = spec.bkg_counts[keep] * spec.bkg_scale if spec.bkg_counts is not None else np.zeros_like(c)
    lo, hi = lo[keep], hi[keep]
    # group channels to min_counts source counts
    groups, acc, start = [], 0.0, 0
    for i, v in enumerate(c):
        acc += v
        if acc >= min_counts:
            groups.append((start, i + 1))
            acc, start = 0.0, i + 1
    if start < c.size:
        groups.append((start, c.size))
    exp = spec.exposure_s or 1.0
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for arr, label, colour in ((c, "source region", "C0"), (b, "background (scaled)", "C3")):
        x, y, ye = [], [], []
        for g0, g1 in groups:
            width = hi[g1 - 1] - lo[g0]
            n = float(arr[g0:g1].sum())
            scale = spec.bkg_scale if arr is b else 1.0
            x.append(0.5 * (lo[g0] + hi[g1 - 1]))
            y.append(n / exp / width)
            ye.append(np.sqrt(max(n / scale if scale else n, 0.0)) * scale / exp / width)
        ax.errorbar(x, y, yerr=ye, fmt=".", color=colour, label=label, ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("counts s$^{-1}$ keV$^{-1}$")
    ax.set_yscale("log")
    ax.set_title(f"{spec.path.name}: {spec.counts.sum():.0f} counts, net {spec.net_counts:.0f}", fontsize=9)
    ax.legend(fontsize=8)
    out = Path(out_png)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out


def plot_light_curve(lc: LightCurve | str | os.PathLike[str], out_png: str | os.PathLike[str]) -> Path:
    """Plot a light curve (count rate against time since its start) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = lc if isinstance(lc, LightCurve) else load_light_curve(lc)
    t0 = float(curve.time_s.min()) if curve.time_s.size else 0.0
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.errorbar((curve.time_s - t0) / 1e3, curve.rate, yerr=curve.rate_err, fmt=".", ms=3)
    ax.set_xlabel(f"time − {t0:.0f} s (ks)")
    ax.set_ylabel("count rate (counts/s)")
    ax.set_title(curve.path.name, fontsize=9)
    out = Path(out_png)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out


def fit_product_spectrum(pha_path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Fit a downloaded spectrum with :func:`xmine.fit.fit_spectrum` (the ``fit`` extra, Sherpa).

    The gzipped products are fitted as they are: the PHA names its ARF, RMF and
    (its own 2nd extension as) background. Keyword arguments go to ``fit_spectrum``.

    Raises
    ------
    xmine.errors.InputError
        The ``fit`` extra is not installed.
    """
    try:
        fit = importlib.import_module("xmine.fit")
    except ImportError as exc:
        msg = f"fitting {pha_path} needs the fit extra (Sherpa): pip install 'xmine[fit]'"
        raise InputError(msg) from exc
    return fit.fit_spectrum(Path(pha_path), **kwargs)
