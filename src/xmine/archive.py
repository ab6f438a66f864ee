"""Find or download Chandra obsid folders laid out as the Chandra Data Archive.

Layout (the CDA's ``byobsid`` tree; ``<d>`` is the obsid's last digit)::

    <base>/<d>/<obsid>/primary/acisf<obsid:05d>N00<v>_evt2.fits[.gz]
    <base>/<d>/<obsid>/secondary/…

Locally xmine also accepts ``<data_dir>/<obsid>/`` (what :func:`xmine.simulate.simulate_sky`
writes) and ``<data_dir>/byobsid/<d>/<obsid>/``. The highest processing version
``N00<v>`` wins.

Downloads
---------
The folder is listed through the server's HTML index (Apache and
``python -m http.server`` style ``href`` links). Each file is fetched to
``<name>.part`` and renamed into place only when complete and checked:

* **resumable**: an existing ``.part`` (a killed run, a dropped connection) is
  continued with an HTTP ``Range`` request; a server that ignores Range (200)
  restarts the file;
* **checked**: the size against ``Content-Length``/``Content-Range``, gzip
  files are decompressed once to check their CRC, FITS files are opened with
  their ``CHECKSUM``/``DATASUM`` verified when present, and an optional
  SHA-256 is compared;
* **retried** with exponential backoff and jitter on connection errors,
  timeouts, truncated bodies, 429 and 5xx (``Retry-After`` honoured); never on
  other 4xx. A 404 names the obsid and the address.

A ``xmine_download.json`` manifest beside the files records each file's URL,
size and SHA-256, so a rerun skips complete files without the network.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import os
import random
import re
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

import requests
from astropy.io import fits

from xmine.errors import InputError, ServiceError
from xmine.store import atomic_write

__all__ = [
    "EVT2_PATTERN",
    "ObsidFolder",
    "download_file",
    "download_obsid",
    "find_obsid",
    "get_obsid",
    "get_obsid_from_config",
    "list_remote",
    "obsid_url",
]

#: Level-2 event file names: ``acisf01234N002_evt2.fits[.gz]`` (groups: obsid, version, .gz).
EVT2_PATTERN = re.compile(r"^acisf(\d{5,})N(\d{3})_evt2\.fits(\.gz)?$")
_MANIFEST = "xmine_download.json"
_RETRY_STATUS = {429, 500, 502, 503, 504}
_USER_AGENT = "xmine-archive/0.1 (python-requests)"


@dataclass
class ObsidFolder:
    """An obsid folder on disk.

    Attributes
    ----------
    obsid : int
    root : pathlib.Path
        The ``<obsid>`` folder.
    evt2 : pathlib.Path
        The level-2 event file (highest version).
    files : list of pathlib.Path
        Every file found or downloaded under ``root``.
    source : str
        Where it came from: a URL, or the local folder.
    downloaded : list of pathlib.Path
        Files fetched by this call (empty when all were present).
    """

    obsid: int
    root: Path
    evt2: Path
    files: list[Path] = field(default_factory=list)
    source: str = ""
    downloaded: list[Path] = field(default_factory=list)


def _check_obsid(obsid: int | str) -> int:
    try:
        value = int(str(obsid).strip())
    except ValueError as exc:
        msg = f"obsid {obsid!r} is not a whole number"
        raise InputError(msg) from exc
    if value <= 0:
        msg = f"obsid {value} must be positive"
        raise InputError(msg)
    return value


def obsid_url(obsid: int, base_url: str) -> str:
    """Return ``<base_url>/<last digit>/<obsid>/`` (with a trailing slash)."""
    o = _check_obsid(obsid)
    return f"{base_url.rstrip('/')}/{o % 10}/{o}/"


def _evt2_in(folder: Path, obsid: int) -> Path | None:
    best: tuple[int, int, Path] | None = None
    primary = folder / "primary"
    for p in primary.iterdir() if primary.is_dir() else []:
        m = EVT2_PATTERN.match(p.name)
        if m and int(m.group(1)) == obsid:
            key = (int(m.group(2)), 0 if m.group(3) else 1, p)  # prefer higher version, then uncompressed
            if best is None or key[:2] > best[:2]:
                best = key
    return best[2] if best else None


def find_obsid(obsid: int | str, data_dir: str | os.PathLike[str]) -> ObsidFolder | None:
    """Find an obsid folder under a local directory.

    Looks in ``<data_dir>/<d>/<obsid>``, ``<data_dir>/byobsid/<d>/<obsid>`` and
    ``<data_dir>/<obsid>``.

    Returns
    -------
    ObsidFolder or None
        None when there is no folder for the obsid.

    Raises
    ------
    xmine.errors.InputError
        If the folder exists but holds no ``primary/acisf<obsid>N00x_evt2.fits[.gz]``.
    """
    o = _check_obsid(obsid)
    base = Path(data_dir)
    for folder in (base / str(o % 10) / str(o), base / "byobsid" / str(o % 10) / str(o), base / str(o)):
        if folder.is_dir():
            evt2 = _evt2_in(folder, o)
            if evt2 is None and any((folder / "primary").glob(f"acisf{o:05d}N*_evt2.fits*.part")):
                return None  # an interrupted download: not there yet
            if evt2 is None:
                msg = (f"{folder}: obsid {o} folder has no primary/acisf{o:05d}N00x_evt2.fits[.gz]; "
                       "remove the folder and download it again")
                raise InputError(msg)
            files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".part"))
            return ObsidFolder(obsid=o, root=folder, evt2=evt2, files=files, source=str(folder))
    return None


# ---------------------------------------------------------------- HTTP


def _session(session: requests.Session | None) -> requests.Session:
    if session is not None:
        return session
    s = requests.Session()
    s.headers["User-Agent"] = _USER_AGENT
    return s


class _RetryableError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _sleep(attempt: int, backoff_s: float, retry_after: float | None) -> None:
    if retry_after is not None:
        time.sleep(min(retry_after, 120.0))
        return
    delay = backoff_s * (2 ** attempt)
    time.sleep(delay * (0.5 + random.random()))  # jitter


def _http_error(resp: requests.Response, url: str, what: str) -> ServiceError:
    if resp.status_code == 404:
        msg = f"{what}: {url} not found (HTTP 404); check the obsid and services.chandra_archive.base_url"
    else:
        msg = f"{what}: {url} answered HTTP {resp.status_code} {resp.reason}; try again later or use a mirror"
    return ServiceError(msg, url=url, status=resp.status_code)


def list_remote(url: str, *, session: requests.Session | None = None, timeout_s: float = 300.0, retries: int = 3,
                backoff_s: float = 1.0, what: str = "archive") -> list[str]:
    """List the entries of a server's HTML directory index (names; folders end in ``/``)."""
    s = _session(session)
    for attempt in range(retries + 1):
        try:
            resp = s.get(url, timeout=timeout_s)
            if resp.status_code in _RETRY_STATUS:
                raise _RetryableError(f"HTTP {resp.status_code}", _retry_after(resp))
            if resp.status_code >= 400:
                raise _http_error(resp, url, what)
            names = []
            for href in re.findall(r"""href\s*=\s*["']([^"'#?]+)["']""", resp.text, flags=re.IGNORECASE):
                target = urljoin(url, html.unescape(href))
                if not target.startswith(url) or target == url:
                    continue
                rest = unquote(target[len(url):])
                if rest and "/" not in rest.rstrip("/"):
                    names.append(rest)
            return sorted(set(names))
        except (requests.ConnectionError, requests.Timeout, _RetryableError) as exc:
            if attempt == retries:
                msg = f"{what}: cannot list {url} after {retries + 1} attempts ({exc}); check the network or base_url"
                raise ServiceError(msg, url=url) from exc
            _sleep(attempt, backoff_s, getattr(exc, "retry_after", None))
    raise AssertionError("unreachable")  # pragma: no cover


def _content_total(resp: requests.Response, have: int) -> int | None:
    if resp.status_code == 206:
        m = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != have:
            return -1
        return None if m.group(3) == "*" else int(m.group(3))
    length = resp.headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


def _copy_body(resp: requests.Response, f: Any, chunk_bytes: int) -> None:
    """Write the body as it arrives, so bytes received before a dropped connection are kept for resuming."""
    raw = resp.raw
    if resp.headers.get("Content-Encoding") in (None, "", "identity") and hasattr(raw, "read1"):
        while True:
            try:
                block = raw.read1(chunk_bytes)
            except Exception as exc:  # urllib3 raises its own errors mid-body
                raise requests.exceptions.ChunkedEncodingError(str(exc)) from exc
            if not block:
                return
            f.write(block)
            f.flush()
    for block in resp.iter_content(chunk_size=chunk_bytes):
        f.write(block)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify_content(path: Path, name: str) -> str | None:
    """Return a reason if the file's own checks fail (gzip CRC, FITS CHECKSUM/DATASUM), else None."""
    is_gz = name.endswith(".gz")
    if is_gz:
        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 22):
                    pass
        except (OSError, EOFError, zlib.error) as exc:
            return f"gzip check failed ({exc})"
    if ".fits" in name or name.endswith((".fit", ".fts")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # the name ends in .part, so astropy cannot tell gzip from the suffix: hand it the stream
                with (gzip.open(path, "rb") if is_gz else open(path, "rb")) as stream, \
                        fits.open(stream) as hdul:
                    for k, hdu in enumerate(hdul):
                        _ = hdu.data
                        datasum = str(hdu.header.get("DATASUM", "")).strip()
                        # DATASUM is sometimes written blank (e.g. ObsID 1479's primary): nothing to check then
                        if datasum.isdigit() and hdu.verify_datasum() == 0:
                            return f"FITS DATASUM mismatch in HDU {k}"
                        if datasum.isdigit() and hdu.header.get("CHECKSUM") and hdu.verify_checksum() == 0:
                            return f"FITS CHECKSUM mismatch in HDU {k}"
            except (OSError, ValueError, TypeError, EOFError) as exc:
                return f"not a readable FITS file ({exc})"
    return None


def download_file(url: str, dest: str | os.PathLike[str], *, session: requests.Session | None = None,
                  timeout_s: float = 300.0, retries: int = 3, backoff_s: float = 1.0,
                  expected_size: int | None = None, sha256: str | None = None, verify: bool = True,
                  what: str = "download", chunk_bytes: int = 1 << 20) -> Path:
    """Download one file resumably: ``<dest>.part`` (continued with HTTP Range), checked, then renamed.

    Parameters
    ----------
    url : str
        The file's address.
    dest : path-like
        Final path; its folder is created.
    session : requests.Session, optional
        Session to use (default: a new one with xmine's User-Agent).
    timeout_s : float
        Timeout per request (connect and between bytes).
    retries : int
        Further attempts after the first, on connection errors, truncated bodies, 429 and 5xx only.
    backoff_s : float
        First backoff delay; doubled each attempt, with jitter (``Retry-After`` wins).
    expected_size : int, optional
        Size in bytes the file must have.
    sha256 : str, optional
        Hex SHA-256 the file must have.
    verify : bool
        Also check gzip CRC and FITS CHECKSUM/DATASUM.
    what : str
        Subject for error messages (e.g. ``"obsid 1234"``).
    chunk_bytes : int
        Read size.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    xmine.errors.ServiceError
        On HTTP errors (404 names the URL), after the retries are used up, or when a check fails.
    """
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    s = _session(session)
    attempt = 0
    while True:
        try:
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            with s.get(url, headers=headers, stream=True, timeout=timeout_s) as resp:
                if resp.status_code == 416 and have:
                    # the part may already be complete; ask for the size
                    head = s.head(url, timeout=timeout_s, allow_redirects=True)
                    remote_size = head.headers.get("Content-Length")
                    if remote_size is not None and remote_size.isdigit() and int(remote_size) == have:
                        break
                    part.unlink()
                    raise _RetryableError("range not satisfiable; restarting the file")
                if resp.status_code in _RETRY_STATUS:
                    raise _RetryableError(f"HTTP {resp.status_code}", _retry_after(resp))
                if resp.status_code >= 400:
                    raise _http_error(resp, url, what)
                total = _content_total(resp, have)
                if total == -1:
                    part.unlink()
                    raise _RetryableError("the server answered a different byte range; restarting the file")
                mode = "ab" if resp.status_code == 206 else "wb"
                if mode == "wb":
                    have = 0
                try:
                    with open(part, mode) as f:
                        _copy_body(resp, f, chunk_bytes)
                except OSError as exc:
                    if isinstance(exc, requests.RequestException):
                        raise
                    msg = (f"{what}: cannot write {part} ({exc.strerror or exc}); free some space or fix the "
                           "folder's permissions, then run again to resume")
                    raise InputError(msg) from exc
                got = part.stat().st_size
                if total is not None and got != total:
                    raise _RetryableError(f"received {got} of {total} bytes")
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                _RetryableError) as exc:
            if attempt >= retries:
                msg = (f"{what}: {url} failed after {attempt + 1} attempts ({exc}); the partial file "
                       f"{part.name} is kept, run again to resume")
                raise ServiceError(msg, url=url) from exc
            _sleep(attempt, backoff_s, getattr(exc, "retry_after", None))
            attempt += 1
    size = part.stat().st_size
    problem = None
    if expected_size is not None and size != expected_size:
        problem = f"size {size} bytes, expected {expected_size}"
    elif sha256 is not None and _sha256(part).lower() != sha256.lower():
        problem = "SHA-256 differs from the expected one"
    elif verify:
        problem = _verify_content(part, target.name)
    if problem:
        part.unlink()
        msg = f"{what}: {url} arrived damaged ({problem}); it was removed, run again to download it afresh"
        raise ServiceError(msg, url=url)
    os.replace(part, target)
    return target


# ---------------------------------------------------------------- obsid folders


def _is_local(base: str) -> Path | None:
    parsed = urlparse(base)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(base)
    return None


def _read_manifest(root: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((root / _MANIFEST).read_text()))
    except (OSError, ValueError):
        return {}


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    with atomic_write(root / _MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def download_obsid(obsid: int | str, dest_dir: str | os.PathLike[str], *, base_url: str,
                   secondary: Sequence[str] = (), session: requests.Session | None = None, timeout_s: float = 300.0,
                   retries: int = 3, backoff_s: float = 1.0, verify: bool = True) -> ObsidFolder:
    """Download an obsid's level-2 event file (and chosen secondary files) into ``<dest_dir>/<d>/<obsid>/``.

    Parameters
    ----------
    obsid : int
    dest_dir : path-like
        Local archive root.
    base_url : str
        Archive root laid out as ``<last digit>/<obsid>/`` (``config.services.chandra_archive.base_url``);
        a local folder or ``file://`` URL is used in place, nothing is copied.
    secondary : sequence of str
        Glob patterns of ``secondary/`` files to fetch too (e.g. ``"*_msk1.fits*"``, ``"*_bpix1.fits*"``).
    session, timeout_s, retries, backoff_s, verify
        As :func:`download_file`.

    Returns
    -------
    ObsidFolder

    Raises
    ------
    xmine.errors.ServiceError
        The obsid folder or file is missing on the server (404 names the obsid and URL), or the download failed.
    xmine.errors.InputError
        A local archive has no such obsid, or its folder has no evt2 file.
    """
    o = _check_obsid(obsid)
    what = f"obsid {o}"
    local = _is_local(base_url)
    if local is not None:
        found = find_obsid(o, local)
        if found is None:
            msg = f"{local}: no folder for obsid {o} (looked in {o % 10}/{o}, byobsid/{o % 10}/{o} and {o})"
            raise InputError(msg)
        return found
    url = obsid_url(o, base_url)
    root = Path(dest_dir) / str(o % 10) / str(o)
    s = _session(session)
    names = list_remote(url + "primary/", session=s, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                        what=what)
    evts = [(int(m.group(2)), 0 if m.group(3) else 1, n) for n in names
            if (m := EVT2_PATTERN.match(n)) and int(m.group(1)) == o]
    if not evts:
        msg = (f"{what}: {url}primary/ lists no acisf{o:05d}N00x_evt2.fits[.gz] (found: {', '.join(names) or 'none'})"
               "; the obsid may not be public yet or not an ACIS observation")
        raise ServiceError(msg, url=url + "primary/")
    wanted = [("primary", max(evts)[2])]
    if secondary:
        try:
            snames = list_remote(url + "secondary/", session=s, timeout_s=timeout_s, retries=retries,
                                 backoff_s=backoff_s, what=what)
        except ServiceError as exc:
            if exc.status != 404:
                raise
            snames = []  # no secondary folder: nothing to fetch from it
        wanted += [("secondary", n) for n in snames if not n.endswith("/") and any(fnmatch(n, p) for p in secondary)]
    manifest = _read_manifest(root)
    downloaded = []
    for sub, name in wanted:
        rel = f"{sub}/{name}"
        dest = root / sub / name
        entry = manifest.get(rel)
        if dest.exists() and entry and dest.stat().st_size == entry.get("size"):
            continue
        download_file(url + rel, dest, session=s, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                      verify=verify, what=what)
        manifest[rel] = {"url": url + rel, "size": dest.stat().st_size, "sha256": _sha256(dest),
                         "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_manifest(root, manifest)
        downloaded.append(dest)
    found = find_obsid(o, dest_dir)
    assert found is not None
    found.source = url
    found.downloaded = downloaded
    return found


def get_obsid(obsid: int | str, *, data_dir: str | os.PathLike[str], base_url: str | None = None,
              offline: bool = False, **kwargs: Any) -> ObsidFolder:
    """Return an obsid folder: found under ``data_dir``, else downloaded there from ``base_url``.

    Parameters
    ----------
    obsid : int
    data_dir : path-like
        Local archive root (``config.project.data_dir``).
    base_url : str, optional
        Archive root to download from; None or ``offline=True`` never touches the network.
    **kwargs
        Passed to :func:`download_obsid` (``secondary``, ``session``, ``timeout_s``, ``retries`` …).

    Raises
    ------
    xmine.errors.InputError
        Not found locally and no download allowed: the message says where it looked and what to set.
    """
    o = _check_obsid(obsid)
    found = find_obsid(o, data_dir)
    if found is not None and (base_url is None or offline or not any(found.root.rglob("*.part"))):
        return found  # complete, or only a secondary file left half-fetched and no network allowed
    if base_url is None or offline:
        msg = (f"obsid {o}: not found under {data_dir} and downloads are off; set "
               "services.chandra_archive.base_url (and cache.offline = false) or copy the folder there")
        raise InputError(msg)
    return download_obsid(o, data_dir, base_url=base_url, **kwargs)


def get_obsid_from_config(obsid: int | str, config: Any, *, secondary: Sequence[str] = (),
                          session: requests.Session | None = None) -> ObsidFolder:
    """:func:`get_obsid` with the project's settings.

    Uses ``config.project.data_dir``, ``config.services.chandra_archive.base_url``,
    ``config.services.timeout_s``, ``config.services.retries`` and ``config.cache.offline``.
    """
    return get_obsid(obsid, data_dir=config.project.data_dir, base_url=config.services.chandra_archive.base_url,
                     offline=bool(config.cache.offline), secondary=secondary, session=session,
                     timeout_s=float(config.services.timeout_s), retries=int(config.services.retries))

