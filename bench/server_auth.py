"""``python -m bench.server_auth``: what the service adds per request (SQLite, loopback TLS).

Measures, on one machine, with real uvicorn over TLS and keep-alive:
- principal-token verification (``mgr.authenticate``) per call;
- in-process ``mgr.access`` per call;
- ``POST /v1/credentials/{id}/access`` over HTTPS (token verification included), one client.
Prints p50/p99 in milliseconds. Not a test: nothing is asserted.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import trustme
import uvicorn

from credman import BearerToken, CredentialManager, Permission
from credman.crypto import KeyFileProvider
from credman.server import create_app

CALLS = 2000


def _percentiles(call: Callable[[], object], calls: int) -> tuple[float, float]:
    for _ in range(min(100, calls)):  # warm-up
        call()
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def _serve(
    manager: CredentialManager, directory: Path
) -> tuple[uvicorn.Server, str, ssl.SSLContext]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = directory / "cert.pem", directory / "key.pem"
    issued.private_key_pem.write_to_path(key)
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(manager),
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        access_log=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return server, f"https://127.0.0.1:{port}", context


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else CALLS
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        KeyFileProvider(directory / "k").create()
        manager = CredentialManager(f"sqlite:///{directory / 'db'}", str(directory / "k"))
        manager.store("github-x", BearerToken(token="bench-token"), principal="admin")
        _, token = manager.add_principal("worker", principal="admin")
        manager.grant("worker", "github-*", {Permission.USE}, principal="admin")
        rows = {
            "authenticate (token verification)": lambda: manager.authenticate(
                token, source="127.0.0.1"
            ),
            "in-process access()": lambda: manager.access("github-x", principal="worker"),
        }
        server, url, context = _serve(manager, directory)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, verify=context, headers=headers) as client:
            rows["HTTPS POST .../access (keep-alive)"] = lambda: client.post(
                "/v1/credentials/github-x/access"
            ).raise_for_status()
            print(f"| operation ({calls} calls, SQLite) | p50 ms | p99 ms |")
            print("|---|---|---|")
            for name, call in rows.items():
                p50, p99 = _percentiles(call, calls)
                print(f"| {name} | {p50:.3f} | {p99:.3f} |")
        server.should_exit = True
        manager.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
