"""The components' client against a real server: uvicorn on loopback with TLS (a test CA made
here), the service's app over a manager on each engine, the project's loopback provider."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from credman import ApiKey, BearerToken, OAuth2, Permission
from credman.client import AsyncClient, Client, ServiceError
from credman.clock import ManualClock
from credman.errors import (
    AccessDenied,
    CredentialUnusable,
    CredentialValidationError,
    InvalidTransition,
    TooManyAttempts,
    Unauthenticated,
)

if TYPE_CHECKING:
    from conftest import Service

    from credman.testing.provider import TokenServer

ADMIN, WORKER = "admin", "sync-worker"


def test_client_gets_material_of_a_granted_credential(
    service: Service, canary: Callable[[str], str]
) -> None:
    """A component with `use` on github-* receives github-x's request material over HTTPS."""
    key = canary("api-key")
    service.manager.store("github-x", ApiKey(key=key), principal=ADMIN)
    with service.client() as client:
        access = client.access("github-x")
    assert {"X-API-Key": key} == dict(access.headers)
    assert ("github-x", {}) == (access.credential_id, dict(access.params))


def test_client_is_refused_other_credentials_alike(service: Service) -> None:
    """An ungranted id and a missing id are both AccessDenied (no existence oracle)."""
    service.manager.store("stripe", ApiKey(key="sk_live_x"), principal=ADMIN)
    with service.client() as client:
        with pytest.raises(AccessDenied) as existing:
            client.access("stripe")
        with pytest.raises(AccessDenied) as missing:
            client.access("no-such-credential")
    assert str(existing.value).replace("stripe", "X") == str(missing.value).replace(
        "no-such-credential", "X"
    )


def test_cache_hit_does_no_io(service: Service) -> None:
    """The second access() within max_age is answered from memory: one request, one hit."""
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    with service.client() as client:
        first = client.access("github-x")
        before = service.requests
        second = client.access("github-x")
        assert (before, 1, 1) == (service.requests, client.stats.hits, client.stats.misses)
    assert first == second


def test_cache_off_asks_every_time(service: Service) -> None:
    """cache=False sends a request per access() and counts no hit."""
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    with service.client(cache=False) as client:
        client.access("github-x")
        before = service.requests
        client.access("github-x")
        assert (before + 1, 0) == (service.requests, client.stats.hits)


def test_cache_entry_ages_out_at_max_age(service: Service, clock: ManualClock) -> None:
    """An entry serves until max_age, then the next access() asks the server."""
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    with service.client(max_age=30, clock=clock) as client:
        client.access("github-x")
        clock.advance(seconds=29.9)
        client.access("github-x")
        served_from_memory = service.requests
        clock.advance(seconds=0.1)
        client.access("github-x")
        assert (served_from_memory + 1, 1, 2) == (
            service.requests,
            client.stats.hits,
            client.stats.misses,
        )


def test_cache_entry_ends_at_its_refresh_time(service: Service, clock: ManualClock) -> None:
    """An entry whose material would not last min_ttl + headroom is not served from memory."""
    expires_at = datetime.now(UTC) + timedelta(seconds=300)
    service.manager.store(
        "github-x", BearerToken(token="t-1", expires_at=expires_at), principal=ADMIN
    )
    with service.client(max_age=3600, headroom=5, clock=clock) as client:
        access = client.access("github-x", min_ttl=30)
        assert expires_at == access.expires_at
        clock.advance(expires_at - timedelta(seconds=36) - clock.now())
        client.access("github-x", min_ttl=30)
        assert 1 == client.stats.hits
        clock.advance(expires_at - timedelta(seconds=34) - clock.now())
        client.access("github-x", min_ttl=30)
        assert (1, 2) == (client.stats.hits, client.stats.misses)


def test_a_longer_min_ttl_is_a_miss(service: Service, clock: ManualClock) -> None:
    """Material cached for one need is not served to a caller that needs it to last longer."""
    expires_at = datetime.now(UTC) + timedelta(seconds=600)
    service.manager.store(
        "github-x", BearerToken(token="t-1", expires_at=expires_at), principal=ADMIN
    )
    with service.client(max_age=3600, headroom=5, clock=clock) as client:
        client.access("github-x", min_ttl=30)
        clock.advance(expires_at - timedelta(seconds=200) - clock.now())
        client.access("github-x", min_ttl=196)
        client.access("github-x", min_ttl=10)
        assert (1, 2) == (client.stats.hits, client.stats.misses)


def test_revoke_reaches_a_cached_client_within_max_age(
    service: Service, clock: ManualClock
) -> None:
    """After a revoke the cached entry serves until max_age; then the client is refused."""
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    with service.client(max_age=30, clock=clock) as client:
        client.access("github-x")
        service.manager.revoke("github-x", principal=ADMIN, reason="offboarded")
        clock.advance(seconds=29)
        client.access("github-x")  # the documented staleness: still cached
        clock.advance(seconds=1)
        with pytest.raises(CredentialUnusable) as raised:
            client.access("github-x")
        assert "REVOKED" == raised.value.state  # from the problem's members, not its text


def test_a_refused_transition_arrives_with_the_machines_words(service: Service) -> None:
    """A 409 for a refused trigger is an InvalidTransition carrying state and trigger."""
    service.manager.grant(WORKER, "github-*", {Permission.MANAGE}, principal=ADMIN)
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    with service.client() as client:
        client.revoke("github-x")
        with pytest.raises(InvalidTransition) as raised:
            client.revoke("github-x")
    assert ("REVOKED", "revoke") == (raised.value.state, raised.value.trigger)
    assert "already revoked" in str(raised.value)


def test_ungrant_reaches_a_cached_client_within_max_age(
    service: Service, clock: ManualClock
) -> None:
    """After an ungrant the client is refused once its entry is max_age old."""
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    with service.client(max_age=30, clock=clock) as client:
        client.access("github-x")
        service.manager.revoke_grant(WORKER, "github-*", principal=ADMIN)
        clock.advance(seconds=30)
        with pytest.raises(AccessDenied):
            client.access("github-x")


def test_auth_after_a_401_asks_for_a_fresh_version_and_retries_once(
    service: Service, provider: TokenServer, stale_oauth: OAuth2
) -> None:
    """A 401 at the resource sends rejected_version; the server refreshes once; the retry
    with the new version gets 200."""
    service.manager.store("github-x", stale_oauth, principal=ADMIN)
    with service.client() as client, httpx.Client(auth=client.auth("github-x")) as http:
        response = http.get(provider.resource_url)
        stats = client.stats
    assert (200, 1, 2) == (
        response.status_code,
        provider.token_requests,
        provider.resource_requests,
    )
    assert 1 == stats.refreshes_requested


def test_auth_does_not_retry_material_that_did_not_change(
    service: Service, provider: TokenServer
) -> None:
    """A 401 for material that cannot be refreshed is returned after one report, no retry."""
    key = ApiKey(key="unknown-to-the-provider", header="Authorization", prefix="Bearer ")
    service.manager.store("github-x", key, principal=ADMIN)
    with service.client() as client, httpx.Client(auth=client.auth("github-x")) as http:
        response = http.get(provider.resource_url)
    assert (401, 1, 0) == (
        response.status_code,
        provider.resource_requests,
        provider.token_requests,
    )


def test_concurrent_misses_in_one_client_share_one_request(service: Service) -> None:
    """Sixteen threads asking a cold client for one credential cause one server request."""
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    barrier = threading.Barrier(16)
    with service.client() as client:
        before = service.requests

        def ask() -> None:
            barrier.wait()
            client.access("github-x")

        threads = [threading.Thread(target=ask) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert (before + 1, 15) == (service.requests, client.stats.hits)


def test_async_client_gets_material_and_caches_it(service: Service) -> None:
    """AsyncClient receives the material once and answers the second call from memory."""
    service.manager.store("github-x", ApiKey(key="k-async"), principal=ADMIN)

    async def run() -> tuple[str, int]:
        url, ca = service.url, service.ca_file
        async with AsyncClient(url, token=service.token, verify=ca) as client:
            first = await client.access("github-x")
            before = service.requests
            await client.access("github-x")
            return first.headers["X-API-Key"], service.requests - before

    assert ("k-async", 0) == asyncio.run(run())


def test_async_auth_after_a_401_refreshes_once(
    service: Service, provider: TokenServer, stale_oauth: OAuth2
) -> None:
    """AsyncClient.auth() reports the rejected version and retries with the fresh one."""
    service.manager.store("github-x", stale_oauth, principal=ADMIN)

    async def run() -> int:
        url, ca = service.url, service.ca_file
        client = AsyncClient(url, token=service.token, verify=ca)
        async with client, httpx.AsyncClient(auth=client.auth("github-x")) as http:
            return (await http.get(provider.resource_url)).status_code

    assert (200, 1) == (asyncio.run(run()), provider.token_requests)


def test_bad_tokens_are_unauthenticated_and_never_echoed(service: Service) -> None:
    """A changed token is Unauthenticated; neither the message nor the repr shows a token."""
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    wrong = service.token[:-1] + ("0" if service.token[-1] != "0" else "1")
    url, ca = service.url, service.ca_file
    with Client(url, token=wrong, verify=ca) as client, pytest.raises(Unauthenticated) as caught:
        client.access("github-x")
    shown = f"{caught.value} {caught.value!r} {client!r}"
    assert (False, False) == (wrong in shown, service.token in shown)


def test_unreachable_service_is_a_service_error_without_the_token(tmp_path: Path) -> None:
    """A refused connection is a ServiceError naming the URL, not the token."""
    client = Client("http://127.0.0.1:9", token="cmp_secret_token")
    with client, pytest.raises(ServiceError) as caught:
        client.access("github-x")
    assert "cmp_secret_token" not in f"{caught.value} {caught.value!r}"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"url": "http://credman.example:8080", "token": "t"}, "url"),
        ({"url": "https://u:p@credman.example", "token": "t"}, "url"),
        ({"url": "ftp://credman.example", "token": "t"}, "url"),
        ({"url": "https://credman.example", "token": ""}, "token"),
        ({"url": "https://credman.example", "token": "a b"}, "token"),
        ({"url": "https://credman.example", "token": "t", "verify": "/no/such/ca.pem"}, "verify"),
        ({"url": "https://credman.example", "token": "t", "max_age": -1}, "max_age"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    settings: dict[str, object], field: str
) -> None:
    """Plain http off loopback, user info, empty or spaced tokens, a missing CA: refused."""
    url = settings.pop("url")
    with pytest.raises(CredentialValidationError) as caught:
        Client(url, **settings)  # type: ignore[arg-type]
    assert (field,) == caught.value.fields


def test_from_env_names_the_missing_variable() -> None:
    """Client.from_env() without CREDMAN_TOKEN names that variable."""
    with pytest.raises(CredentialValidationError) as caught:
        Client.from_env({"CREDMAN_URL": "https://credman.example"})
    assert ("CREDMAN_TOKEN",) == caught.value.fields


CHILD = """
import json, os, sys
from credman.client import Client
with Client.from_env() as client:
    access = client.access("github-x")
print(json.dumps({"env": sorted(os.environ), "cwd": sorted(os.listdir(".")),
                  "headers": dict(access.headers)}))
"""


def test_client_process_holds_neither_key_file_nor_database_url(
    service: Service, tmp_path: Path
) -> None:
    """A component process with only CREDMAN_URL/TOKEN/CA gets its material; it has no key
    file or database URL in its environment or working directory."""
    service.manager.store("github-x", ApiKey(key="k-child"), principal=ADMIN)
    workdir = tmp_path / "component"
    workdir.mkdir()
    env = {
        "CREDMAN_URL": service.url,
        "CREDMAN_TOKEN": service.token,
        "CREDMAN_CA": str(service.ca_file),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, cwd=workdir, capture_output=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert ["CREDMAN_CA", "CREDMAN_TOKEN", "CREDMAN_URL"] == [
        name for name in seen["env"] if name not in ("LC_CTYPE",)
    ]
    assert ([], {"X-API-Key": "k-child"}) == (seen["cwd"], seen["headers"])


def test_ssl_context_is_accepted_as_verify(service: Service) -> None:
    """verify= may be a ready SSLContext trusting the service's CA."""
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    context = ssl.create_default_context(cafile=str(service.ca_file))
    url = service.url
    with Client(url, token=service.token, verify=context) as client:
        assert "k-1" == client.access("github-x").headers["X-API-Key"]


def test_a_client_that_does_not_trust_the_ca_is_refused(service: Service) -> None:
    """Without the test CA, the TLS handshake fails: a ServiceError, no material."""
    client = Client(service.url, token=service.token)
    with client, pytest.raises(ServiceError):
        client.access("github-x")


def test_the_token_reaches_no_log_line(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    """With httpx and httpcore logging at DEBUG, no log record carries the principal token."""
    service.manager.store("github-x", ApiKey(key="k-1"), principal=ADMIN)
    with caplog.at_level(logging.DEBUG), service.client(cache=False) as client:
        client.access("github-x")
        with pytest.raises(AccessDenied):
            client.access("stripe")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert (True, False) == ("HTTP Request" in logged, service.token in logged)


def test_repeated_bad_tokens_are_too_many_attempts_with_retry_after(service: Service) -> None:
    """Past the failure limit for a token id the client raises TooManyAttempts with the
    server's Retry-After."""
    service.manager.configure_auth_throttle(max_failures=2, lockout=120)
    wrong = service.token[:-1] + ("0" if service.token[-1] != "0" else "1")
    url, ca = service.url, service.ca_file
    with Client(url, token=wrong, verify=ca, cache=False) as client:
        for _ in range(2):
            with pytest.raises(Unauthenticated):
                client.access("github-x")
        with pytest.raises(TooManyAttempts) as caught:
            client.access("github-x")
    assert 0 < caught.value.retry_after <= 120
