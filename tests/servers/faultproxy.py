"""A small fault-injecting HTTP proxy on loopback, in front of a real server.

It forwards every request to ``upstream`` unchanged, except that the next
queued faults are applied first, one per request:

``("status", code, retry_after)``
    answer ``code`` (e.g. 429, 503, 500) with a text/plain body and, if
    ``retry_after`` is not None, a ``Retry-After`` header; upstream is not asked.
``("stall", seconds)``
    wait ``seconds`` before forwarding (a client timeout fires first).
``("cut", nbytes)``
    forward, then send the status line, headers with the full Content-Length
    and only ``nbytes`` of the body, and close the connection.
``("reset",)``
    close the connection without answering.

Used only by tests, to produce what the real DaCHS server cannot: it is never
a fake service — every successful answer comes from the real server.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
import urllib.parse
from collections import deque
from typing import Any

import requests

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "content-length", "content-encoding", "host"}


class FaultProxy:
    """Run a proxy to ``upstream`` (``http://host:port``) on 127.0.0.1 in a thread.

    Attributes
    ----------
    url : str
        The proxy's base URL (same paths as upstream).
    faults : deque
        Faults still to apply, in order.
    log : list of tuple
        ``(method, path, what)`` per request received, ``what`` the fault or ``"forwarded"``.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: deque[tuple[Any, ...]] = deque()
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    fault = proxy.faults.popleft() if proxy.faults else None
                    proxy.log.append((self.command, self.path, repr(fault) if fault else "forwarded"))
                if fault and fault[0] == "status":
                    _, code, retry_after = fault
                    text = f"injected HTTP {code}\n".encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(text)))
                    if retry_after is not None:
                        self.send_header("Retry-After", str(retry_after))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                if fault and fault[0] == "reset":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault and fault[0] == "stall":
                    time.sleep(fault[1])
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                resp = requests.request(self.command, proxy.upstream + self.path, data=body, headers=headers,
                                        allow_redirects=False, timeout=120)
                content = resp.content
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in _HOP:
                        if k.lower() == "location":
                            v = v.replace(proxy.upstream, proxy.url)
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                if fault and fault[0] == "cut":
                    self.end_headers()
                    self.wfile.write(content[: fault[1]])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = _handle  # noqa: N815

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FaultProxy:
        """Start serving; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def url_for(self, upstream_url: str) -> str:
        """Return ``upstream_url`` with the proxy's host and port."""
        p = urllib.parse.urlsplit(upstream_url)
        return self.url + p.path + (f"?{p.query}" if p.query else "")

    def queue(self, *faults: tuple[Any, ...]) -> None:
        """Append faults, applied to the next requests in order."""
        with self._lock:
            self.faults.extend(faults)
