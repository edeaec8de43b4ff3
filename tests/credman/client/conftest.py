"""Fixtures for the client tests: the service on loopback TLS (uvicorn in a thread on a
pre-bound socket, a trustme CA made here, a count of the requests the app received), service
processes for tests across processes, the loopback provider, and a clock the test moves."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvicorn

from credman import CredentialManager, OAuth2, Permission
from credman.client import Client
from credman.clock import ManualClock
from credman.server import create_app
from credman.testing.provider import TokenServer

ADMIN = "admin"
WORKER = "sync-worker"
OAUTH_CLIENT, OAUTH_SECRET = "client-app", "client-app-secret"
"""The OAuth client the provider of these tests knows."""

TLS = tuple[Path, Path, Path]
"""(CA file, certificate chain, private key)."""


@dataclass
class CountingApp:
    """ASGI middleware counting HTTP requests (how a test sees that a cache hit did no I/O)."""

    app: Any
    requests: int = 0
    paths: list[str] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@dataclass
class Service:
    """A running service, its manager, the CA that verifies it, a worker principal's token."""

    manager: CredentialManager
    url: str
    ca_file: Path
    counter: CountingApp
    token: str

    def client(self, **options: Any) -> Client:
        """A client for the worker principal that trusts the test CA."""
        return Client(self.url, token=self.token, verify=self.ca_file, **options)

    @property
    def requests(self) -> int:
        """HTTP requests the app has received so far."""
        return self.counter.requests


def issue_tls(directory: Path) -> TLS:
    """A fresh CA and a certificate for 127.0.0.1 in ``directory``."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files[0]))
    files[1].write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(files[2]))
    return files


@contextmanager
def serve_in_thread(app: Any, tls: TLS) -> Iterator[tuple[str, CountingApp]]:
    """uvicorn over TLS on 127.0.0.1 (an OS-assigned port) in a thread; URL and counter."""
    counter = CountingApp(app)
    config = uvicorn.Config(
        counter,
        ssl_certfile=str(tls[1]),
        ssl_keyfile=str(tls[2]),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue here until uvicorn's loop accepts them
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}", counter
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def tls(tmp_path: Path) -> TLS:
    """A test CA and a 127.0.0.1 certificate it issued."""
    return issue_tls(tmp_path)


@pytest.fixture
def service(manager: CredentialManager, tls: TLS) -> Iterator[Service]:
    """The service over ``manager`` on loopback TLS; WORKER may use ``github-*``."""
    _, token = manager.add_principal(WORKER, principal=ADMIN)
    manager.grant(WORKER, "github-*", {Permission.USE}, principal=ADMIN)
    with serve_in_thread(create_app(manager), tls) as (url, counter):
        yield Service(manager, url, tls[0], counter, token)


@pytest.fixture
def clock() -> ManualClock:
    """A clock for the client's cache that moves only when the test moves it."""
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def provider() -> Iterator[TokenServer]:
    """The project's loopback OAuth provider (rotating refresh tokens)."""
    with TokenServer(clients={OAUTH_CLIENT: OAUTH_SECRET}, access_token_lifetime=3600) as running:
        yield running


@pytest.fixture
def stale_oauth(provider: TokenServer) -> OAuth2:
    """OAuth2 material whose access token the provider does not accept (its grant is valid)."""
    return OAuth2(
        token_url=provider.url,
        client_id=OAUTH_CLIENT,
        client_secret=OAUTH_SECRET,
        access_token="revoked-at-the-provider",
        refresh_token=provider.grant(OAUTH_CLIENT),
        expires_in=3600,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str, ca_file: Path, process: subprocess.Popen[bytes]) -> None:
    """Poll /healthz until the process serves it (start-up, not a timed assertion)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", verify=context, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"the service at {url} did not start (exit {process.poll()})")


@contextmanager
def _serve_process(database_url: str, key_file: Path, tls: TLS) -> Iterator[str]:
    port = _free_port()
    env = os.environ | {
        "CREDMAN_DATABASE_URL": database_url,
        "CREDMAN_KEY_FILE": str(key_file),
    }
    command = [
        *(str(Path(sys.executable).parent / "credman"), "serve", "--no-scheduler"),
        *("--http", f"127.0.0.1:{port}", "--tls-cert", str(tls[1]), "--tls-key", str(tls[2])),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    try:
        _ready(url, tls[0], process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def service_process(key_file: Path, tls: TLS) -> Iterator[Callable[[str], str]]:
    """Start ``credman serve --http`` processes (loopback TLS, no scheduler) over a database
    URL; each call returns its URL; all are stopped at the end."""
    with ExitStack() as stack:
        yield lambda database_url: stack.enter_context(_serve_process(database_url, key_file, tls))
