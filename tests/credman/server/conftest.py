"""Fixtures for the HTTP service's tests: uvicorn on loopback with TLS from a test CA.

``serve_app(manager)`` starts uvicorn in a thread on an ephemeral port with a certificate
issued by a fresh ``trustme`` CA and yields a :class:`Service` with an httpx client that
trusts only that CA; ``tls_files`` and ``loopback_port`` serve the process tests.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvicorn

from credman import CredentialManager
from credman.server import ServerSettings, create_app


@dataclass
class Service:
    """A running service: its URL, the client that trusts it, and the CA's file."""

    url: str
    client: httpx.Client
    ca_file: Path
    app: Any

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        """One request, with ``Authorization: Bearer token`` when a token is given."""
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, path, headers=headers, **kw)


def issue_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(ca_file)
    issued.private_key_pem.write_to_path(key_file)
    cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return ca_file, cert_file, key_file


def free_port() -> int:
    """An ephemeral port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_service(
    manager: CredentialManager,
    directory: Path,
    settings: ServerSettings | None = None,
    port: int | None = None,
) -> Iterator[Service]:
    """uvicorn with TLS on 127.0.0.1 in a thread, serving ``create_app(manager)`` (on
    ``port`` when given: settings that name the service's own URL need it beforehand)."""
    ca_file, cert_file, key_file = issue_tls(directory)
    app = create_app(manager, settings)
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        access_log=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while not started.wait(0.02):
        if server.started or not thread.is_alive():
            break
    assert server.started, "the test server did not start"
    context = ssl.create_default_context(cafile=str(ca_file))
    url = f"https://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, verify=context, timeout=30)
    try:
        yield Service(url, client, ca_file, app)
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def serve_app(tmp_path: Path) -> Callable[..., Any]:
    """``serve_app(manager, settings=None, port=None)``: a context manager running the API
    over TLS."""

    def start(
        manager: CredentialManager, settings: ServerSettings | None = None, port: int | None = None
    ) -> Any:
        return running_service(manager, tmp_path, settings, port)

    return start


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    return issue_tls(tmp_path)


@pytest.fixture
def loopback_port() -> int:
    """An ephemeral port on loopback."""
    return free_port()
