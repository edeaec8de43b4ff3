"""Expiry you can rely on: against a provider that counts expiry from whole epoch seconds
with 2-3 s tokens, credman never hands out a token that dies sooner than ``min_ttl`` at the
provider (checked against the provider's own record of each token's expiry)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from credman import CredentialManager, OAuth2
from credman.testing.provider import TokenServer

CLIENT, SECRET = "expiry-client", "expiry-secret-canary-77aa"
WORKER = Path(__file__).with_name("_expiry_worker.py")


MIN_TTL = {2: 0.25, 3: 0.5}
"""min_ttl per token lifetime: a 2 s token is believed to live 1 s (whole-second allowance)."""


@pytest.fixture(params=[2, 3])
def provider(request: pytest.FixtureRequest) -> Iterator[TokenServer]:
    with TokenServer(
        clients={CLIENT: SECRET}, access_token_lifetime=request.param, whole_seconds=True
    ) as running:
        yield running


def short_lived(provider: TokenServer) -> OAuth2:
    return OAuth2(
        token_url=provider.url,
        client_id=CLIENT,
        client_secret=SECRET,
        refresh_token=provider.grant(CLIENT),
    )


def margins(provider: TokenServer, samples: list[tuple[str, float]]) -> list[float]:
    """Seconds each token still had at the provider when credman handed it out."""
    return [(provider.expires_at_of(token) or 0.0) - at for token, at in samples]


def test_threads_never_get_a_token_dying_within_min_ttl(
    make_manager: Callable[..., CredentialManager], provider: TokenServer
) -> None:
    """4 threads reading for 3 s with min_ttl: every token had at least min_ttl left."""
    mgr = make_manager()
    mgr.store("short", short_lived(provider), principal="admin")
    min_ttl = MIN_TTL[round(provider.access_token_lifetime)]
    samples: list[tuple[str, float]] = []
    errors: list[Exception] = []
    lock = threading.Lock()
    stop = time.monotonic() + 3.0

    def read() -> None:
        while time.monotonic() < stop:
            try:
                access = mgr.access("short", principal="admin", min_ttl=min_ttl)
            except Exception as exc:
                errors.append(exc)
                return
            assert access.token is not None
            with lock:
                samples.append((access.token.reveal(), time.time()))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    short = [m for m in margins(provider, samples) if m < min_ttl]
    assert ([], [], True) == (errors, short, provider.refreshes >= 2)


def test_believed_expiry_is_never_later_than_the_providers(
    make_manager: Callable[..., CredentialManager], provider: TokenServer
) -> None:
    """Access.expires_at is at or before the provider's whole-second expiry, on every refresh."""
    mgr = make_manager()
    mgr.store("short", short_lived(provider), principal="admin")
    late = []
    for _ in range(5):
        mgr.refresh("short", principal="admin", force=True)
        access = mgr.access("short", principal="admin")
        assert access.token is not None and access.expires_at is not None
        provider_expiry = provider.expires_at_of(access.token.reveal()) or 0.0
        if access.expires_at.timestamp() > provider_expiry:
            late.append(access.expires_at.timestamp() - provider_expiry)
    assert [] == late


@pytest.mark.slow
def test_processes_never_get_a_token_dying_within_min_ttl(
    sqlite_url: str, key_file: Path, provider: TokenServer, tmp_path: Path
) -> None:
    """2 processes reading for 3 s with min_ttl: no token had less left at the provider."""
    with CredentialManager(sqlite_url, str(key_file)) as mgr:
        mgr.store("short", short_lived(provider), principal="admin")
    min_ttl = MIN_TTL[round(provider.access_token_lifetime)]
    outputs = [tmp_path / f"worker-{n}.txt" for n in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), sqlite_url, str(key_file), "3", str(min_ttl), str(out)]
        )
        for out in outputs
    ]
    assert [0, 0] == [worker.wait(timeout=120) for worker in workers]
    samples = [
        (token, float(at))
        for out in outputs
        for token, at in (line.split() for line in out.read_text().splitlines() if line)
    ]
    short = [m for m in margins(provider, samples) if m < min_ttl]
    assert ([], True) == (short, len(samples) > 10)
