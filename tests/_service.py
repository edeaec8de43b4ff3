"""A real uvicorn on loopback with TLS, for client tests: a test CA (trustme), a server
certificate for 127.0.0.1, a pre-bound socket (so no wait for start-up), and a counter of
the HTTP requests the app received."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import uvicorn


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


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A fresh CA and a 127.0.0.1 certificate: (ca.pem, cert.pem, key.pem)."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    issued.cert_chain_pems[0].write_to_path(str(cert_file))
    issued.private_key_pem.write_to_path(str(key_file))
    return ca_file, cert_file, key_file


@contextmanager
def serve_tls(app: Any, directory: Path) -> Iterator[Serving]:
    """Serve ``app`` with uvicorn over TLS on 127.0.0.1 (an OS-assigned port) in a thread."""
    ca_file, cert_file, key_file = make_tls(directory)
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
