"""Expiry you can rely on: against a provider that counts expiry from whole epoch seconds
with 2-3 s tokens, credman never hands out a token that dies sooner than ``min_ttl`` at the
provider. Each handed-out token is sampled through the provider's RFC 7662 introspection
endpoint straight after it was handed out (active, and its ``exp``); each test asserts a
minimum number of samples and tokens, so it cannot pass by sampling nothing, and prints
its counts (``pytest -s``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from credman import CredentialManager, OAuth2
from credman.testing.provider import TokenServer

CLIENT, SECRET = "expiry-client", "expiry-secret-canary-77aa"
WORKER = Path(__file__).with_name("_expiry_worker.py")


MIN_TTL = {2: 0.25, 3: 0.5}
"""min_ttl per token lifetime: a 2 s token is believed to live 1 s (whole-second allowance)."""
MIN_SAMPLES = 20
"""Fewest introspected hand-outs a 3-second run must have (several hundred on a quiet host)."""
MIN_TOKENS = 2
"""Fewest distinct tokens: the run must span at least one refresh."""


class Sample(NamedTuple):
    """One handed-out token as the provider's introspection saw it just after."""

    token: str
    at: float  # epoch seconds when credman handed it out
    active: bool
    exp: float  # the provider's expiry (0 when inactive)


def introspect(http: httpx.Client, url: str, token: str, at: float) -> Sample:
    """Ask the provider's introspection endpoint about ``token`` (client authentication)."""
    answer = http.post(url, data={"token": token}, auth=(CLIENT, SECRET))
    answer.raise_for_status()
    body = answer.json()
    return Sample(token, at, body.get("active") is True, float(body.get("exp", 0)))


def verdict(samples: list[Sample], min_ttl: float, label: str) -> tuple[list[Sample], list[float]]:
    """The samples inactive at the provider and the margins under ``min_ttl``; prints counts."""
    inactive = [s for s in samples if not s.active]
    margins = sorted(s.exp - s.at for s in samples if s.active)
    tokens = len({s.token for s in samples})
    least = f"{margins[0]:.3f}" if margins else "-"
    print(
        f"\n{label}: {len(samples)} hand-outs introspected, {tokens} distinct tokens, "
        f"{len(inactive)} inactive, least margin {least} s (min_ttl {min_ttl} s)"
    )
    return inactive, [m for m in margins if m < min_ttl]


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


def test_threads_never_get_a_token_dying_within_min_ttl(
    make_manager: Callable[..., CredentialManager], provider: TokenServer
) -> None:
    """4 threads reading for 3 s with min_ttl: every token introspected active with at least
    min_ttl left, over enough samples and tokens."""
    mgr = make_manager()
    mgr.store("short", short_lived(provider), principal="admin")
    lifetime = round(provider.access_token_lifetime)
    min_ttl = MIN_TTL[lifetime]
    samples: list[Sample] = []
    errors: list[Exception] = []
    lock = threading.Lock()
    stop = time.monotonic() + 3.0

    def read(http: httpx.Client) -> None:
        while time.monotonic() < stop:
            try:
                access = mgr.access("short", principal="admin", min_ttl=min_ttl)
                assert access.token is not None
                sample = introspect(
                    http, provider.introspection_url, access.token.reveal(), time.time()
                )
            except Exception as exc:
                errors.append(exc)
                return
            with lock:
                samples.append(sample)

    with httpx.Client() as http:
        threads = [threading.Thread(target=read, args=(http,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    inactive, short = verdict(samples, min_ttl, f"threads, {lifetime} s tokens")
    assert ([], [], [], True, True, True) == (
        errors,
        inactive,
        short,
        len(samples) >= MIN_SAMPLES,
        len({s.token for s in samples}) >= MIN_TOKENS,
        provider.refreshes >= 2,
    )


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
    """2 processes reading for 3 s with min_ttl, introspecting each token: none inactive or
    with less than min_ttl left, over enough samples and tokens."""
    with CredentialManager(sqlite_url, str(key_file)) as mgr:
        mgr.store("short", short_lived(provider), principal="admin")
    min_ttl = MIN_TTL[round(provider.access_token_lifetime)]
    outputs = [tmp_path / f"worker-{n}.txt" for n in range(2)]
    environment = os.environ | {
        "EXPIRY_INTROSPECTION_URL": provider.introspection_url,
        "EXPIRY_CLIENT_ID": CLIENT,
        "EXPIRY_CLIENT_SECRET": SECRET,  # the environment, not argv: no secret in argv
    }
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), sqlite_url, str(key_file), "3", str(min_ttl), str(out)],
            env=environment,
        )
        for out in outputs
    ]
    assert [0, 0] == [worker.wait(timeout=120) for worker in workers]
    samples = [
        Sample(token, float(at), active == "1", float(exp))
        for out in outputs
        for token, at, active, exp in (
            line.split() for line in out.read_text().splitlines() if line
        )
    ]
    lifetime = round(provider.access_token_lifetime)
    inactive, short = verdict(samples, min_ttl, f"processes, {lifetime} s tokens")
    assert ([], [], True, True) == (
        inactive,
        short,
        len(samples) >= MIN_SAMPLES,
        len({s.token for s in samples}) >= MIN_TOKENS,
    )
