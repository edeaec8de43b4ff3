"""The service for client tests: uvicorn on loopback with TLS (servicekit's test CA) in a
thread, on a pre-bound socket (no wait for start-up), counting the HTTP requests the app
received; and ``credman serve`` processes for tests across processes."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from servicekit import free_port, issue_tls


@dataclass
class CountingApp:
    """ASGI middleware that counts HTTP requests (how a test sees that a cache hit did no I/O)."""

    app: Any
    requests: int = 0
    paths: list[str] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Serving:
    """A running server: its base URL, the CA file that verifies it, the request counter."""

    url: str
    ca_file: Path
    counter: CountingApp


@contextmanager
def serve_tls(app: Any, directory: Path) -> Iterator[Serving]:
    """Serve ``app`` with uvicorn over TLS on 127.0.0.1 (an OS-assigned port) in a thread."""
    ca_file, cert_file, key_file = issue_tls(directory)
    counter = CountingApp(app)
    config = uvicorn.Config(
        counter,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue here until uvicorn's loop accepts them
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield Serving(f"https://127.0.0.1:{port}", ca_file, counter)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


SERVE = """
import os
from credman import CredentialManager
from credman.server import load_settings, serve

def manager(**options):
    env = os.environ
    return CredentialManager(env["CREDMAN_DATABASE_URL"], env["CREDMAN_KEY_FILE"], **options)

raise SystemExit(serve(load_settings(), manager))
"""


def _ready(url: str, context: ssl.SSLContext, process: subprocess.Popen[bytes]) -> None:
    """Poll /healthz until the process serves it (start-up, not a timed assertion)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", verify=context, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"the service at {url} did not start (exit {process.poll()})")


@contextmanager
def serve_process(database_url: str, key_file: Path, tls: tuple[Path, Path, Path]) -> Iterator[str]:
    """A service process (``credman.server.serve``) on loopback TLS, no scheduler; its URL."""
    ca_file, cert_file, key_pem = tls
    port = free_port()
    env = os.environ | {
        "CREDMAN_DATABASE_URL": database_url,
        "CREDMAN_KEY_FILE": str(key_file),
        "CREDMAN_HTTP": f"127.0.0.1:{port}",
        "CREDMAN_TLS_CERT": str(cert_file),
        "CREDMAN_TLS_KEY": str(key_pem),
        "CREDMAN_SCHEDULER": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"https://127.0.0.1:{port}"
    try:
        _ready(url, ssl.create_default_context(cafile=str(ca_file)), process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
