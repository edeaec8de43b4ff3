"""A real ``serve`` process: SIGTERM under load finishes or fails each request cleanly, and
nothing it prints (stdout, stderr, its access log) carries a secret or a token."""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from credman import BearerToken, CredentialManager, Permission

WORKER = Path(__file__).with_name("_serve_process.py")
ADMIN = "admin"
CLIENTS = 8
REQUESTS_EACH = 150


@pytest.fixture
def process(
    database_url: str,
    key_file: Path,
    manager: CredentialManager,
    tls_files: tuple[Path, Path, Path],
    loopback_port: int,
) -> Iterator[tuple[subprocess.Popen[str], str, ssl.SSLContext]]:
    """A serve process on an ephemeral loopback port with TLS from a test CA."""
    ca_file, cert_file, tls_key = tls_files
    port = loopback_port
    child = subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            database_url,
            str(key_file),
            f"127.0.0.1:{port}",
            str(cert_file),
            str(tls_key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert "ready" == child.stdout.readline().strip(), "the server did not start"
    try:
        yield child, f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=str(ca_file))
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)


def _load(
    url: str, context: ssl.SSLContext, token: str, index: int, results: list[tuple[int, int]]
) -> None:
    """Store a credential again and again until the server goes away."""
    with httpx.Client(base_url=url, verify=context, timeout=30) as client:
        for count in range(REQUESTS_EACH):
            body = {"type": "bearer", "token": f"CANARY-load-{index}-{count}"}
            try:
                response = client.put(
                    f"/v1/credentials/load-{index}",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError:
                results.append((index, 0))
                return
            results.append((index, response.status_code))


def test_sigterm_under_load_finishes_or_fails_cleanly(
    process: tuple[subprocess.Popen[str], str, ssl.SSLContext],
    manager: CredentialManager,
    canary: Callable[[str], str],
) -> None:
    """Every request got 200 or a transport error, the process exits 0, history and audit hold."""
    child, url, context = process
    _, token = manager.add_principal("loader", principal=ADMIN)
    manager.grant("loader", "load-*", {Permission.MANAGE}, principal=ADMIN)
    results: list[tuple[int, int]] = []
    threads = [
        threading.Thread(target=_load, args=(url, context, token, i, results))
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    while len(results) < CLIENTS * 10:  # let the load get going, then stop the server
        threads[0].join(0.01)
    child.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=60)
    assert 0 == child.wait(timeout=60)
    assert set() == {status for _, status in results} - {0, 200}
    assert manager.verify_audit().ok
    for info in manager.list(principal=ADMIN):
        index = int(info.credential_id.removeprefix("load-"))
        stored = sum(1 for i, status in results if (i, status) == (index, 200))
        history = manager.history(info.credential_id, principal=ADMIN)
        assert (info.version, info.state) == (history[-1].version, history[-1].to_state)
        assert stored <= info.version <= stored + 1  # +1: committed, answer cut off
    _, stderr = child.communicate(timeout=30)
    assert "Traceback" not in stderr
    assert token not in stderr and "CANARY-load" not in stderr


def test_server_output_carries_no_secret_or_token(
    process: tuple[subprocess.Popen[str], str, ssl.SSLContext],
    manager: CredentialManager,
    canary: Callable[[str], str],
) -> None:
    """Access, refusals and errors leave no secret, token or query string in the output."""
    child, url, context = process
    secret = canary("served")
    _, token = manager.add_principal("reader", principal=ADMIN)
    manager.grant("reader", "svc", {Permission.USE}, principal=ADMIN)
    manager.store("svc", BearerToken(token=secret), principal=ADMIN)
    with httpx.Client(base_url=url, verify=context, timeout=30) as client:
        auth = {"Authorization": f"Bearer {token}"}
        got = client.post("/v1/credentials/svc/access", headers=auth)
        client.get("/v1/credentials?token=CANARY-query-string", headers=auth)
        client.get("/v1/credentials", headers={"Authorization": f"Bearer {token[:-1]}x"})
        client.get("/v1/credentials/svc", headers={"Authorization": "Bearer CANARY-bad-token"})
    assert secret in got.text
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=60)
    output = stdout + stderr
    assert "GET /v1/credentials 200" in output  # the access log is there, without the query
    for leaked in (secret, token, token[:-1], "CANARY-query-string", "CANARY-bad-token"):
        assert leaked not in output
