"""Archive downloads against a real HTTP server on loopback serving a byobsid tree (simulated and real files)."""

import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from xmine.archive import download_file, download_obsid, find_obsid, get_obsid, get_obsid_from_config, obsid_url
from xmine.config import load_config
from xmine.errors import InputError, ServiceError
from xmine.events import read_events
from xmine.simulate import demo_truth, simulate_sky

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support and scripted faults (cut connections, 503s)."""

    plan: dict[str, list[str]] = {}  # noqa: RUF012 - per-server script, reset by the fixture
    log: list[tuple[str, str, str | None]] = []  # noqa: RUF012

    def log_message(self, format, *args):
        pass

    def _fault(self):
        steps = self.plan.get(self.path)
        return steps.pop(0) if steps else None

    def do_HEAD(self):
        self.log.append(("HEAD", self.path, self.headers.get("Range")))
        super().do_HEAD()

    def do_GET(self):
        self.log.append(("GET", self.path, self.headers.get("Range")))
        fault = self._fault()
        if fault and fault.startswith("status:"):
            code = int(fault.split(":")[1])
            self.send_response(code)
            if code == 503:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = Path(self.translate_path(self.path))
        if path.is_dir() or not path.exists():
            super().do_GET()
            return
        data = path.read_bytes()
        start = 0
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if fault and fault.startswith("cut:"):
            # send part of the body, then drop the connection
            self.wfile.write(body[:int(fault.split(":")[1])])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def archive_tree(tmp_path_factory, shared_data):
    """A byobsid tree: two simulated obsids and the real ObsID 1479 subset (gzipped evt2)."""
    sim_dir = tmp_path_factory.mktemp("sim")
    truth = demo_truth()
    truth.observations.remove_rows([i for i, o in enumerate(truth.observations["obsid"]) if o not in (90101, 90202)])
    products = simulate_sky(truth, sim_dir, seed=1)
    root = tmp_path_factory.mktemp("served")
    tree = root / "byobsid"
    for p in products.observations:
        shutil.copytree(sim_dir / str(p.obsid), tree / str(p.obsid % 10) / str(p.obsid))
    real = tree / "9" / "1479" / "primary"
    real.mkdir(parents=True)
    shutil.copy(shared_data / "events" / "chandra_obs1479_acis_subset" / "acis_evt2.fits.gz",
                real / "acisf01479N001_evt2.fits.gz")
    (tree / "4" / "4444" / "primary").mkdir(parents=True)  # a folder with no event file
    return root


@pytest.fixture
def server(archive_tree):
    RangeHandler.plan = {}
    RangeHandler.log = []

    def handler(*args, **kwargs):
        return RangeHandler(*args, directory=str(archive_tree), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/byobsid", archive_tree
    httpd.shutdown()
    httpd.server_close()


def test_obsid_url():
    assert obsid_url(1479, "https://cxc.cfa.harvard.edu/cdaftp/byobsid/") == \
        "https://cxc.cfa.harvard.edu/cdaftp/byobsid/9/1479/"
    with pytest.raises(InputError, match="obsid 'abc' is not a whole number"):
        obsid_url("abc", "x")


def test_download_simulated_and_real_obsids(server, tmp_path):
    base, tree = server
    for obsid, name in ((90202, "acisf90202N001_evt2.fits"), (1479, "acisf01479N001_evt2.fits.gz")):
        folder = download_obsid(obsid, tmp_path, base_url=base, secondary=("*_expmap.fits",), backoff_s=0.01)
        assert folder.evt2.name == name
        assert folder.evt2 == tmp_path / str(obsid % 10) / str(obsid) / "primary" / name
        src = tree / "byobsid" / str(obsid % 10) / str(obsid) / "primary" / name
        assert folder.evt2.read_bytes() == src.read_bytes()
        assert not list(folder.root.rglob("*.part"))
        assert len(read_events(folder.evt2)) > 0
    assert (tmp_path / "2" / "90202" / "secondary" / "acisf90202N001_expmap.fits").exists()
    assert not (tmp_path / "2" / "90202" / "secondary" / "acisf90202N001_truth.fits").exists()
    # a rerun finds everything complete and fetches nothing
    RangeHandler.log.clear()
    again = download_obsid(90202, tmp_path, base_url=base, secondary=("*_expmap.fits",))
    assert again.downloaded == []
    assert not [r for r in RangeHandler.log if r[1].endswith(".fits")]
    # and get_obsid finds it locally without asking the server at all
    RangeHandler.log.clear()
    assert get_obsid(90202, data_dir=tmp_path, base_url=base).evt2 == again.evt2
    assert RangeHandler.log == []


def test_interrupted_download_resumes_with_range(server, tmp_path):
    base, tree = server
    path = "/byobsid/2/90202/primary/acisf90202N001_evt2.fits"
    RangeHandler.plan[path] = ["cut:100000", "status:503", "cut:50000"]
    folder = download_obsid(90202, tmp_path, base_url=base, backoff_s=0.01)
    src = tree / "byobsid" / "2" / "90202" / "primary" / "acisf90202N001_evt2.fits"
    assert folder.evt2.read_bytes() == src.read_bytes()
    gets = [r for r in RangeHandler.log if r[0] == "GET" and r[1] == path]
    assert [g[2] for g in gets] == [None, "bytes=100000-", "bytes=100000-", "bytes=150000-"]


def test_killed_run_part_file_is_resumed(server, tmp_path):
    base, tree = server
    src = tree / "byobsid" / "9" / "1479" / "primary" / "acisf01479N001_evt2.fits.gz"
    dest = tmp_path / "9" / "1479" / "primary" / "acisf01479N001_evt2.fits.gz"
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(src.read_bytes()[:20000])
    assert get_obsid(1479, data_dir=tmp_path, base_url=base).evt2.read_bytes() == src.read_bytes()
    assert RangeHandler.log[-1][2] == "bytes=20000-"


def test_retries_run_out_and_keep_the_part(server, tmp_path):
    base, _ = server
    path = "/byobsid/9/1479/primary/acisf01479N001_evt2.fits.gz"
    RangeHandler.plan[path] = ["cut:1000", "cut:10", "cut:10"]
    with pytest.raises(ServiceError, match=r"obsid 1479: http://127.0.0.1:\d+/byobsid/9/1479/primary/acisf01479N001"
                                           r"_evt2.fits.gz failed after 3 attempts .*run again to resume"):
        download_obsid(1479, tmp_path, base_url=base, retries=2, backoff_s=0.01)
    part = tmp_path / "9" / "1479" / "primary" / "acisf01479N001_evt2.fits.gz.part"
    assert part.stat().st_size == 1020
    assert not part.with_name("acisf01479N001_evt2.fits.gz").exists()


def test_not_found_and_bad_folders(server, tmp_path):
    base, _ = server
    with pytest.raises(ServiceError, match=r"obsid 12345: http://127.0.0.1:\d+/byobsid/5/12345/primary/ not found "
                                           r"\(HTTP 404\)") as info:
        download_obsid(12345, tmp_path, base_url=base, backoff_s=0.01)
    assert info.value.status == 404
    with pytest.raises(ServiceError, match=r"obsid 4444: .*/4/4444/primary/ lists no acisf04444N00x_evt2"):
        download_obsid(4444, tmp_path, base_url=base)
    # 404 is not retried
    assert sum(1 for r in RangeHandler.log if "12345" in r[1]) == 1
    # a local folder without an evt2 says so
    (tmp_path / "7" / "777" / "primary").mkdir(parents=True)
    with pytest.raises(InputError, match=r"777: obsid 777 folder has no primary/acisf00777N00x_evt2.fits"):
        find_obsid(777, tmp_path)
    with pytest.raises(InputError, match=r"obsid 90101: not found under .* downloads are off"):
        get_obsid(90101, data_dir=tmp_path / "empty", base_url=base, offline=True)


def test_damaged_download_is_refused(server, tmp_path):
    base, tree = server
    bad = tree / "byobsid" / "1" / "90101" / "secondary" / "broken.fits.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(200))
    with pytest.raises(ServiceError, match=r"broken.fits.gz arrived damaged \(gzip check failed"):
        download_file(f"{base}/1/90101/secondary/broken.fits.gz", tmp_path / "broken.fits.gz", backoff_s=0.01)
    assert not (tmp_path / "broken.fits.gz").exists()
    assert not (tmp_path / "broken.fits.gz.part").exists()
    good = tree / "byobsid" / "1" / "90101" / "primary" / "acisf90101N001_evt2.fits"
    with pytest.raises(ServiceError, match=r"size .* expected 7"):
        download_file(f"{base}/1/90101/primary/{good.name}", tmp_path / "x.fits", expected_size=7)
    out = download_file(f"{base}/1/90101/primary/{good.name}", tmp_path / "y.fits",
                        sha256=__import__("hashlib").sha256(good.read_bytes()).hexdigest())
    assert out.stat().st_size == good.stat().st_size


def test_local_base_and_config(server, tmp_path):
    _, tree = server
    folder = download_obsid(90202, tmp_path, base_url=str(tree / "byobsid"))
    assert folder.root == tree / "byobsid" / "2" / "90202"
    cfg = load_config(None, environ={}, overrides={"project": {"data_dir": str(tree / "byobsid")},
                                                   "services": {"chandra_archive": {"base_url": "file:///nowhere"}}})
    assert get_obsid_from_config(1479, cfg).evt2.name == "acisf01479N001_evt2.fits.gz"
    # simulate_sky's own layout (<out>/<obsid>/) is found too
    assert find_obsid(90101, tree / "byobsid" / "1").root == tree / "byobsid" / "1" / "90101"


def test_disk_full_during_download_is_one_clear_line(server, tmp_path, monkeypatch):
    import errno

    import xmine.archive as archive

    base, _ = server

    def full(resp, f, chunk):
        f.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive, "_copy_body", full)
    with pytest.raises(InputError, match=r"obsid 1479: cannot write .*\.part \(No space left on device\); free some "
                                         r"space"):
        download_obsid(1479, tmp_path, base_url=base)
    assert not (tmp_path / "9" / "1479" / "primary" / "acisf01479N001_evt2.fits.gz").exists()
