"""The RFC 8252 native-app redirect: a one-shot listener on 127.0.0.1, ephemeral port.

``LoopbackRedirect`` binds the IP literal ``127.0.0.1`` (not ``localhost``, which may
resolve elsewhere) on a port the OS picks, serves exactly one callback on its path with a
plain page that shows no token, and hands the callback's parameters to ``wait()``.
"""

from __future__ import annotations

import socketserver
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from credman.errors import AuthorizationFailed

__all__ = ["SUCCESS_PAGE", "LoopbackRedirect"]

SUCCESS_PAGE: Final = (
    b"<!doctype html><meta charset=utf-8><title>credman</title>"
    b"<p>credman received the authorization. You can close this window.</p>"
)
_FAILURE_PAGE: Final = (
    b"<!doctype html><meta charset=utf-8><title>credman</title>"
    b"<p>The authorization did not succeed; see the terminal.</p>"
)


class LoopbackRedirect:
    """One callback on ``http://127.0.0.1:PORT/callback``; a context manager."""

    def __init__(self, path: str = "/callback") -> None:
        self.path = path
        self._params: dict[str, str] | None = None
        self._arrived = threading.Event()
        self._httpd = _Server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="credman-loopback-redirect",
            daemon=True,
        )

    @property
    def redirect_uri(self) -> str:
        """The exact redirect URI to register in the authorization request."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.path}"

    def __enter__(self) -> LoopbackRedirect:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and release the port."""
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def wait(self, timeout: float) -> dict[str, str]:
        """The callback's query parameters; ``AuthorizationFailed`` after ``timeout`` s."""
        if not self._arrived.wait(timeout) or self._params is None:
            raise AuthorizationFailed(
                f"no authorization arrived within {timeout:g} s", error_code="timeout"
            )
        return dict(self._params)

    def _receive(self, query: str) -> bool:
        """Keep the first callback that carries a state or an error; True if kept."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        if self._arrived.is_set() or not ("state" in params or "error" in params):
            return False
        self._params = params
        self._arrived.set()
        return "error" not in params


class _Server(HTTPServer):
    def __init__(self, owner: LoopbackRedirect) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Say nothing: a traceback could hold the code."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10
    server_version = "credman"
    sys_version = ""

    def do_GET(self) -> None:
        target = urlsplit(self.path)
        if target.path != self.server.owner.path:
            self._answer(404, b"not found")
            return
        ok = self.server.owner._receive(target.query)
        self._answer(200 if ok else 400, SUCCESS_PAGE if ok else _FAILURE_PAGE)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: the request line carries the authorization code."""
