"""A local stand-in for the CSC per-source product service (CIAO ``search_csc``'s csccli), on loopback.

``make_products`` writes per-source products made from xmine's simulator
(power-law source, or a bremsstrahlung continuum, folded through ``xmine.simulate.spectra.effective_area_cm2``
with a Gaussian redistribution matrix, a flat background), named and laid out
as the real ones: ``acisf{obsid:05d}_{obi:03d}N{ver:03d}_r{region:04d}_pha3.fits``
with the background in a 2nd SPECTRUM extension (HDUCLAS2=BKG) and BACKFILE
naming the file itself, ``..._arf3.fits`` (SPECRESP with a PSF_FRAC column),
``..._rmf3.fits`` (RSP_MATRIX with variable-length rows, EBOUNDS), ``..._r0043b_lc3.fits``,
``..._reg3.fits``, ``..._regevt3.fits``; each stored gzip-compressed, as the
service sends them.

``ProductServer`` answers the two requests a client makes:
``GET /csccli/browse?packageset=<obsid>.<obi>.<region>/<filetype>/<band>&version=...``
→ JSON ``[{"filename": ...}]`` and ``GET /csccli/retrieveFile?filetype=&filename=&version=``
→ the gzipped bytes, with Content-Length, ETag, Content-MD5 and single-range
``Range``/``If-Range`` support (206 + Content-Range). Faults for tests:
``drop_after[filename] = n`` sends the headers of the whole answer, then only
``n`` bytes and closes the connection (once); ``corrupt[filename] = k`` flips a
byte in the next ``k`` answers; ``ranges = False`` ignores Range headers.
Every request is logged in ``log`` as ``(path, params, range_header)``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
from astropy.io import fits

from xmine.simulate.spectra import effective_area_cm2, photon_spectrum, thermal_continuum

CHANNEL_KEV = 0.0146  # ACIS PI channel width
N_CHANNELS = 1024
E_EDGES = np.round(np.arange(0.3, 11.0 + 1e-9, 0.01), 4)
TSTART = 3.0e8

FILETYPES = {"spectrum": "pha3", "arf": "arf3", "rmf": "rmf3", "lightcurve": "lc3", "srcreg": "reg3",
             "regevt3": "regevt3"}


@dataclass
class SimSource:
    """Truth of one simulated source in one observation."""

    name: str
    obsid: int
    obi: int = 0
    region_id: int = 1
    instrument: str = "ACIS"
    gamma: float = 1.7
    kt_kev: float | None = None  # a bremsstrahlung continuum (no absorption) instead of the power law
    src_counts: float = 4000.0
    bkg_counts: float = 3000.0  # in the background region
    bkg_area_ratio: float = 15.0  # background region area / source region area
    exposure_s: float = 40_000.0
    version: int = 2
    products: tuple[str, ...] = ("spectrum", "arf", "rmf", "lightcurve", "srcreg", "regevt3")
    stem: str = field(init=False, default="")

    def __post_init__(self) -> None:
        prefix = "hrcf" if self.instrument.upper().startswith("HRC") else "acisf"
        self.stem = f"{prefix}{self.obsid:05d}_{self.obi:03d}N{self.version:03d}_r{self.region_id:04d}"

    def filename(self, filetype: str, band: str = "") -> str:
        band_part = band if filetype == "lightcurve" else ""
        return f"{self.stem}{band_part}_{FILETYPES[filetype]}.fits"

    @property
    def band(self) -> str:
        """The broadest band letter of the instrument (``b`` for ACIS, ``w`` for HRC)."""
        return "w" if self.stem.startswith("hrc") else "b"


def _rmf_rows() -> tuple[np.ndarray, list[int], list[int], list[np.ndarray]]:
    emid = 0.5 * (E_EDGES[1:] + E_EDGES[:-1])
    ch_lo = np.arange(N_CHANNELS) * CHANNEL_KEV
    ch_hi = ch_lo + CHANNEL_KEV
    f_chan, n_chan, rows = [], [], []
    from scipy.special import erf

    for e in emid:
        sigma = 0.030 + 0.006 * e
        p = 0.5 * (erf((ch_hi - e) / (np.sqrt(2) * sigma)) - erf((ch_lo - e) / (np.sqrt(2) * sigma)))
        keep = np.nonzero(p > 1e-6)[0]
        lo, hi = int(keep[0]), int(keep[-1])
        f_chan.append(lo + 1)
        n_chan.append(hi - lo + 1)
        rows.append(p[lo:hi + 1].astype(np.float32))
    return emid, f_chan, n_chan, rows


def _common(hdr: fits.Header, src: SimSource) -> None:
    for k, v in (("TELESCOP", "CHANDRA"), ("INSTRUME", src.instrument), ("OBS_ID", str(src.obsid)),
                 ("OBJECT", src.name), ("TSTART", TSTART), ("TSTOP", TSTART + src.exposure_s),
                 ("ORIGIN", "xmine test server (simulated)")):
        hdr[k] = v


def _arf_hdu(src: SimSource) -> fits.BinTableHDU:
    emid = 0.5 * (E_EDGES[1:] + E_EDGES[:-1])
    area = effective_area_cm2(emid) * 0.9
    cols = [fits.Column("ENERG_LO", "E", "keV", array=E_EDGES[:-1]),
            fits.Column("ENERG_HI", "E", "keV", array=E_EDGES[1:]),
            fits.Column("SPECRESP", "E", "cm**2", array=area),
            fits.Column("PSF_FRAC", "D", array=np.full(emid.size, 0.9))]
    hdu = fits.BinTableHDU.from_columns(cols, name="SPECRESP")
    h = hdu.header
    h.update({"HDUCLASS": "OGIP", "HDUCLAS1": "RESPONSE", "HDUCLAS2": "SPECRESP", "HDUVERS": "1.1.0",
              "EXPOSURE": src.exposure_s, "CHANTYPE": "PI"})
    _common(h, src)
    return hdu


def _rmf_hdus(src: SimSource) -> list[fits.BinTableHDU]:
    _, f_chan, n_chan, rows = _rmf_rows()
    cols = [fits.Column("ENERG_LO", "E", "keV", array=E_EDGES[:-1]),
            fits.Column("ENERG_HI", "E", "keV", array=E_EDGES[1:]),
            fits.Column("N_GRP", "I", array=np.ones(len(rows), dtype=np.int16)),
            fits.Column("F_CHAN", "PI()", array=[np.array([f], dtype=np.int16) for f in f_chan]),
            fits.Column("N_CHAN", "PI()", array=[np.array([n], dtype=np.int16) for n in n_chan]),
            fits.Column("MATRIX", "PE()", array=rows)]
    mat = fits.BinTableHDU.from_columns(cols, name="RSP_MATRIX")
    mat.header.update({"HDUCLASS": "OGIP", "HDUCLAS1": "RESPONSE", "HDUCLAS2": "RSP_MATRIX", "HDUCLAS3": "REDIST",
                       "HDUVERS": "1.3.0", "DETCHANS": N_CHANNELS, "CHANTYPE": "PI", "LO_THRES": 1e-6,
                       "TLMIN4": 1, "TLMAX4": N_CHANNELS})
    ch = np.arange(1, N_CHANNELS + 1)
    eb = fits.BinTableHDU.from_columns([
        fits.Column("CHANNEL", "J", array=ch),
        fits.Column("E_MIN", "E", "keV", array=(ch - 1) * CHANNEL_KEV),
        fits.Column("E_MAX", "E", "keV", array=ch * CHANNEL_KEV)], name="EBOUNDS")
    eb.header.update({"HDUCLASS": "OGIP", "HDUCLAS1": "RESPONSE", "HDUCLAS2": "EBOUNDS", "HDUVERS": "1.3.0",
                      "DETCHANS": N_CHANNELS, "CHANTYPE": "PI", "TLMIN1": 1, "TLMAX1": N_CHANNELS})
    for h in (mat.header, eb.header):
        _common(h, src)
    return [mat, eb]


def expected_channel_counts(src: SimSource) -> tuple[np.ndarray, np.ndarray]:
    """Expected source counts (in the source region) and background-region counts per channel."""
    emid, f_chan, n_chan, rows = _rmf_rows()
    de = np.diff(E_EDGES)
    shape = (thermal_continuum(emid, src.kt_kev) if src.kt_kev is not None
             else photon_spectrum("powerlaw", src.gamma, emid))
    per_e = shape * de * effective_area_cm2(emid) * 0.9
    model = np.zeros(N_CHANNELS)
    for w, f, n, r in zip(per_e, f_chan, n_chan, rows, strict=True):
        model[f - 1:f - 1 + n] += w * r
    model *= src.src_counts / model.sum()
    ch_e = (np.arange(N_CHANNELS) + 0.5) * CHANNEL_KEV
    flat = ((ch_e > 0.3) & (ch_e < 11.0)).astype(float)
    bkg = flat * src.bkg_counts / flat.sum()
    return model, bkg


def _spectrum_hdu(counts: np.ndarray, src: SimSource, kind: str, backscal: float) -> fits.BinTableHDU:
    ch = np.arange(1, N_CHANNELS + 1)
    cols = [fits.Column("CHANNEL", "J", "channel", array=ch), fits.Column("PI", "D", "chan", array=ch.astype(float)),
            fits.Column("COUNTS", "J", "count", array=counts.astype(np.int32)),
            fits.Column("COUNT_RATE", "D", "count/s", array=counts / src.exposure_s)]
    hdu = fits.BinTableHDU.from_columns(cols, name="SPECTRUM")
    own = src.filename("spectrum")
    hdu.header.update({"HDUCLASS": "OGIP", "HDUCLAS1": "SPECTRUM", "HDUCLAS2": kind, "HDUCLAS3": "COUNT",
                       "HDUVERS": "1.1.0", "EXPOSURE": src.exposure_s, "BACKSCAL": backscal, "AREASCAL": 1.0,
                       "CORRSCAL": 0.0, "POISSERR": True, "SYS_ERR": 0, "QUALITY": 0, "GROUPING": 0,
                       "DETCHANS": N_CHANNELS, "CHANTYPE": "PI", "TLMIN1": 1, "TLMAX1": N_CHANNELS,
                       "BACKFILE": own if kind == "TOTAL" else "none",
                       "RESPFILE": src.filename("rmf") if kind == "TOTAL" else "none",
                       "ANCRFILE": src.filename("arf") if kind == "TOTAL" else "none"})
    _common(hdu.header, src)
    return hdu


def make_source_products(src: SimSource, rng: np.random.Generator) -> dict[str, fits.HDUList]:
    """Return the HDU lists of one source's products, keyed by the service file name."""
    model, bkg = expected_channel_counts(src)
    backscal = 1.0e-4
    src_region = rng.poisson(model + bkg / src.bkg_area_ratio)
    bkg_region = rng.poisson(bkg)
    out: dict[str, fits.HDUList] = {}
    out[src.filename("spectrum")] = fits.HDUList([
        fits.PrimaryHDU(), _spectrum_hdu(src_region, src, "TOTAL", backscal),
        _spectrum_hdu(bkg_region, src, "BKG", backscal * src.bkg_area_ratio)])
    out[src.filename("arf")] = fits.HDUList([fits.PrimaryHDU(), _arf_hdu(src)])
    out[src.filename("rmf")] = fits.HDUList([fits.PrimaryHDU(), *_rmf_hdus(src)])
    # events in the source region: one per count, uniform in time
    pi = np.repeat(np.arange(1, N_CHANNELS + 1), src_region)
    n = pi.size
    t = np.sort(rng.uniform(TSTART, TSTART + src.exposure_s, n))
    order = rng.permutation(n)
    pi = pi[order]
    x = 4096.5 + rng.normal(0, 1.0, n)
    y = 4096.5 + rng.normal(0, 1.0, n)
    energy = ((pi - 1) + rng.uniform(0, 1, n)) * CHANNEL_KEV * 1000.0
    evt = fits.BinTableHDU.from_columns([
        fits.Column("TIME", "D", "s", array=t), fits.Column("CCD_ID", "I", array=np.full(n, 7, np.int16)),
        fits.Column("X", "E", "pixel", array=x), fits.Column("Y", "E", "pixel", array=y),
        fits.Column("ENERGY", "E", "eV", array=energy), fits.Column("PI", "J", "chan", array=pi)], name="EVENTS")
    evt.header.update({"HDUCLASS": "OGIP", "HDUCLAS1": "EVENTS", "EXPOSURE": src.exposure_s})
    _common(evt.header, src)
    out[src.filename("regevt3")] = fits.HDUList([fits.PrimaryHDU(), evt])
    edges = np.linspace(TSTART, TSTART + src.exposure_s, 41)
    counts, _ = np.histogram(t, edges)
    dt = np.diff(edges)
    lc = fits.BinTableHDU.from_columns([
        fits.Column("TIME", "D", "s", array=0.5 * (edges[1:] + edges[:-1])), fits.Column("TIMEDEL", "D", "s", array=dt),
        fits.Column("COUNTS", "J", "count", array=counts),
        fits.Column("COUNT_RATE", "D", "count/s", array=counts / dt),
        fits.Column("COUNT_RATE_ERR", "D", "count/s", array=np.sqrt(np.maximum(counts, 1)) / dt)], name="LIGHTCURVE")
    lc.header.update({"HDUCLASS": "OGIP", "HDUCLAS1": "LIGHTCURVE", "EXPOSURE": src.exposure_s})
    _common(lc.header, src)
    out[src.filename("lightcurve", src.band)] = fits.HDUList([fits.PrimaryHDU(), lc])
    reg = fits.BinTableHDU.from_columns([
        fits.Column("SHAPE", "16A", array=["ellipse", "ellipse"]), fits.Column("X", "D", "pixel", array=[4096.5] * 2),
        fits.Column("Y", "D", "pixel", array=[4096.5] * 2),
        fits.Column("R", "2D", "pixel", array=[[4.0, 3.0], [20.0, 15.0]]),
        fits.Column("ROTANG", "D", "deg", array=[30.0, 30.0]), fits.Column("COMPONENT", "J", array=[1, 2])],
        name="SRCREG")
    _common(reg.header, src)
    out[src.filename("srcreg")] = fits.HDUList([fits.PrimaryHDU(), reg])
    return out


def make_products(folder: str | Path, sources: list[SimSource], *, seed: int = 11) -> dict[tuple[Any, ...], str]:
    """Write every source's products gzipped into ``folder``; return the browse index.

    The index maps ``(obsid, obi, region_id, filetype, band)`` to the file name.
    """
    rng = np.random.default_rng(seed)
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    index: dict[tuple[Any, ...], str] = {}
    for src in sources:
        for name, hdul in make_source_products(src, rng).items():
            ftype = next(k for k, v in FILETYPES.items() if name.endswith(f"_{v}.fits"))
            if ftype not in src.products:
                continue
            buf = io.BytesIO()
            hdul.writeto(buf)
            (root / f"{name}.gz").write_bytes(gzip.compress(buf.getvalue(), mtime=0))
            band = src.band if ftype == "lightcurve" else ""
            index[(src.obsid, src.obi, src.region_id, ftype, band)] = name
    (root / "index.json").write_text(json.dumps([[*k, v] for k, v in index.items()]))
    return index


class _Handler(BaseHTTPRequestHandler):
    server: ProductServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        srv = self.server
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        with srv.lock:
            srv.log.append((url.path, params, self.headers.get("Range")))
        if url.path.endswith("/csccli/browse"):
            try:
                ids, ftype, band = params["packageset"].split("/")
                obsid, obi, region = (int(v) for v in ids.split("."))
            except (KeyError, ValueError):
                self._send(400, b"bad packageset", "text/plain")
                return
            name = srv.index.get((obsid, obi, region, ftype, band))
            body = json.dumps([{"filename": name}] if name else []).encode()
            self._send(200, body, "application/json")
            return
        if not url.path.endswith("/csccli/retrieveFile"):
            self._send(404, b"not found", "text/plain")
            return
        name = params.get("filename", "")
        path = srv.root / f"{name}.gz"
        if "/" in name or not path.exists():
            self._send(404, f"no file {name}".encode(), "text/plain")
            return
        data = path.read_bytes()
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        md5_b64 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        start = 0
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        status = 200
        if srv.ranges and rng and rng.startswith("bytes=") and (if_range is None or if_range == etag):
            first = rng[6:].split("-")[0]
            start = int(first)
            if start >= len(data):
                self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
        body = data[start:]
        with srv.lock:
            corrupt = srv.corrupt.get(name, 0)
            if corrupt:
                srv.corrupt[name] = corrupt - 1
            drop = srv.drop_after.pop(name, None)
        if corrupt:
            i = len(body) // 2
            body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Content-MD5", md5_b64)
        self.send_header("Accept-Ranges", "bytes" if srv.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if drop is not None:
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class ProductServer(ThreadingHTTPServer):
    """The stand-in service; ``url`` is the csccli base (``http://127.0.0.1:<port>/csccli``)."""

    daemon_threads = True

    def __init__(self, root: str | Path, *, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = Path(root)
        raw = json.loads((self.root / "index.json").read_text())
        self.index = {tuple(r[:5]): r[5] for r in raw}
        self.lock = threading.Lock()
        self.log: list[tuple[str, dict[str, str], str | None]] = []
        self.drop_after: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.ranges = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/csccli"

    def start(self) -> ProductServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def sources_from_dachs_rows(names: list[str] | None = None, limit: int = 5) -> list[SimSource]:
    """SimSources for the simulated CSC rows the local DaCHS serves (``dachs/csc21/data``)."""
    import csv

    data = Path(__file__).resolve().parent / "dachs" / "csc21" / "data"
    with (data / "master_stack_assoc.csv").open() as fh:
        assoc = list(csv.DictReader(fh))
    with (data / "stack_observation_assoc.csv").open() as fh:
        obs = list(csv.DictReader(fh))
    out: list[SimSource] = []
    wanted = names or sorted({a["name"] for a in assoc if not a["name"].endswith("X")})[:limit]
    for a in assoc:
        if a["name"] not in wanted:
            continue
        for o in obs:
            if o["detect_stack_id"] == a["detect_stack_id"] and o["region_id"] == a["region_id"]:
                out.append(SimSource(a["name"], int(o["obsid"]), obi=int(o["obi"]), region_id=int(a["region_id"]),
                                     instrument=o.get("instrument") or "ACIS"))
    return out


def main(argv: list[str] | None = None) -> None:
    """Serve simulated products of the local DaCHS sources: ``python tests/servers/products_http.py DIR``."""
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="where the gzipped products are written")
    ap.add_argument("names", nargs="*", help="CSC names (default: the first 5 point sources)")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args(argv)
    make_products(args.folder, sources_from_dachs_rows(args.names or None))
    srv = ProductServer(args.folder, port=args.port).start()
    print(f"csccli stand-in at {srv.url} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
