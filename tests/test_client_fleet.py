"""Twenty components behind two ``credman serve --http`` processes sharing PostgreSQL: a 401
at the resource causes exactly one token request at the provider."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from _service import make_tls
from conftest import CLIENT, SECRET

from credman import CredentialManager, OAuth2, Permission
from credman.client import Client
from credman.tokenserver import TokenServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

COMPONENTS = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str, context: ssl.SSLContext, process: subprocess.Popen[bytes]) -> None:
    """Poll /healthz until the process serves it (start-up, not a timed assertion)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", verify=context, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"credman serve at {url} did not start (exit {process.poll()})")


@contextmanager
def serve_process(database_url: str, key_file: Path, tls: tuple[Path, Path, Path]) -> Iterator[str]:
    """``credman serve --http`` on loopback TLS without the scheduler; its URL."""
    ca_file, cert_file, key_pem = tls
    port = _free_port()
    env = os.environ | {"CREDMAN_DATABASE_URL": database_url, "CREDMAN_KEY_FILE": str(key_file)}
    command = [
        *(str(Path(sys.executable).parent / "credman"), "serve", "--no-scheduler"),
        *("--http", f"127.0.0.1:{port}", "--tls-cert", str(cert_file), "--tls-key", str(key_pem)),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    try:
        _ready(url, ssl.create_default_context(cafile=str(ca_file)), process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_one_refresh_for_twenty_components_on_two_server_processes(
    postgres_url: str, key_file: Path, tmp_path: Path
) -> None:
    """20 clients on 2 server processes report the same rejected version; the provider sees
    one token request and every retry succeeds."""
    with TokenServer(clients={CLIENT: SECRET}, access_token_lifetime=3600) as provider:
        with CredentialManager(postgres_url, str(key_file)) as manager:
            manager.store(
                "github-x",
                OAuth2(
                    token_url=provider.url,
                    client_id=CLIENT,
                    client_secret=SECRET,
                    access_token="revoked-at-the-provider",
                    refresh_token=provider.grant(CLIENT),
                    expires_in=3600,
                ),
                principal="admin",
            )
            _, token = manager.add_principal("sync-worker", principal="admin")
            manager.grant("sync-worker", "github-*", {Permission.USE}, principal="admin")
        tls = make_tls(tmp_path)
        with ExitStack() as stack:
            urls = [stack.enter_context(serve_process(postgres_url, key_file, tls)) for _ in "ab"]
            clients = [
                stack.enter_context(Client(urls[i % 2], token=token, verify=tls[0]))
                for i in range(COMPONENTS)
            ]
            for client in clients:  # every component holds version 1 before the 401s
                client.access("github-x")
            barrier = threading.Barrier(COMPONENTS)
            statuses: list[int] = []

            def call(client: Client) -> None:
                with httpx.Client(auth=client.auth("github-x")) as http:
                    barrier.wait()
                    statuses.append(http.get(provider.resource_url).status_code)

            threads = [threading.Thread(target=call, args=(c,)) for c in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        assert ([200] * COMPONENTS, 1) == (statuses, provider.token_requests)
        assert COMPONENTS == sum(c.stats.refreshes_requested for c in clients)
