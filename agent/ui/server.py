"""The status page's HTTP server: stdlib, its own thread, read-only, never serves evidence."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.ui.settings import split_listen

logger = logging.getLogger(__name__)

StatusSource = Callable[[], dict[str, Any]]
MetricsSource = Callable[[str | None], tuple[bytes, str]]  # Accept header -> (body, content type)

# The page needs nothing from anywhere else; the browser is told so.
_SECURITY = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a client that stalls loses its thread after this, not the daemon

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, "text/html; charset=utf-8", self.server.page)
        elif path == "/api/status":
            self._status()
        elif path == "/metrics" and self.server.metrics is not None:
            self._metrics(self.server.metrics)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _refuse(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"read-only\n", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _status(self) -> None:
        try:
            body = json.dumps(self.server.status(), ensure_ascii=False).encode()
        except Exception:
            logger.exception("status page: building the status failed")
            self._send(500, "application/json", b'{"error": "status unavailable"}')
            return
        self._send(200, "application/json; charset=utf-8", body)

    def _metrics(self, metrics: MetricsSource) -> None:
        try:
            body, kind = metrics(self.headers.get("Accept"))
        except Exception:
            logger.exception("status page: collecting the metrics failed")
            self._send(500, "text/plain; charset=utf-8", b"metrics unavailable\n")
            return
        self._send(200, kind, body)

    def _send(self, code: int, kind: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**_SECURITY, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("status page: %s", format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        page: bytes,
        status: StatusSource,
        metrics: MetricsSource | None,
    ) -> None:
        self.page = page
        self.status = status
        self.metrics = metrics
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


class PageServer:
    """Daemon plugin: serves the page, /api/status and /metrics (when given) from its own thread."""

    def __init__(
        self, listen: str, page: str, status: StatusSource, metrics: MetricsSource | None = None
    ) -> None:
        address = split_listen(listen)
        if address is None:
            raise ValueError(f"bad listen address {listen!r}")
        self._address = address
        self._page = page.encode()
        self._status = status
        self._metrics = metrics
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str | None:
        """The page's address once serving (the real port when 0 was asked for)."""
        if self._httpd is None:
            return None
        host, port = str(self._httpd.server_address[0]), int(self._httpd.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> None:
        """Bind and serve; a port in use is logged, the daemon runs on without a page."""
        try:
            self._httpd = _Server(self._address, self._page, self._status, self._metrics)
        except OSError as exc:
            logger.error("status page: cannot listen on %s:%s: %s", *self._address, exc)
            return
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.5,), name="status-page", daemon=True
        )
        self._thread.start()
        logger.info("status page on %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(5)
        self._httpd = None
