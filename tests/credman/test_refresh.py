"""OAuth token lifecycle against a real token server on loopback: refresh, rotation, grants,
failure classes and backoff, time-frozen margins, single flight, crash recovery."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from freezegun import freeze_time

from credman import (
    CredentialManager,
    JWTBearer,
    OAuth2,
    Permission,
    RefreshFailed,
    State,
)
from credman.lifecycle import RefreshPolicy
from credman.notify import CredentialEvent, EventKind
from credman.testing.provider import TokenServer


def _token(manager: CredentialManager, credential_id: str = "gh") -> str:
    return manager.get(credential_id, principal="admin").access_token.reveal()  # type: ignore[attr-defined, no-any-return]


def test_get_refreshes_a_due_token_first(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A credential with no access token is refreshed on first get; the token works."""
    manager.store("gh", oauth_credential(server), principal="admin")
    token = _token(manager)
    assert server.is_valid(token)
    assert State.UPDATED == manager.info("gh", principal="admin").state
    triggers = [step.trigger for step in manager.history("gh", principal="admin")]
    assert ["create", "activate", "start_refresh", "refresh_succeeded"] == triggers


def test_fresh_token_is_not_refreshed(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A token outside its margin is returned as stored, with no call to the provider."""
    manager.store(
        "gh", oauth_credential(server, access_token="stored", expires_in=3600), principal="admin"
    )
    assert "stored" == _token(manager)
    assert 0 == server.token_requests


def test_rotated_refresh_token_is_kept(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """The rotated refresh token is stored with the new access token; reuse never happens."""
    manager.store("gh", oauth_credential(server), principal="admin")
    first = manager.get("gh", principal="admin").refresh_token.reveal()  # type: ignore[union-attr, attr-defined]
    manager.refresh("gh", principal="admin", force=True)
    second = manager.get("gh", principal="admin").refresh_token.reveal()  # type: ignore[union-attr, attr-defined]
    assert first != second
    assert server.is_valid_refresh_token(second)
    assert [] == server.revoked_grants


def test_response_without_refresh_token_keeps_the_old_one(
    manager: CredentialManager,
    oauth_credential: Callable[..., OAuth2],
    token_server: Callable[..., TokenServer],
) -> None:
    """A provider that does not rotate: the stored refresh token stays."""
    with token_server(rotate_refresh_tokens=False) as quiet:
        credential = oauth_credential(quiet)
        original = credential.refresh_token.reveal()  # type: ignore[union-attr]
        manager.store("gh", credential, principal="admin")
        manager.refresh("gh", principal="admin", force=True)
        stored = manager.get("gh", principal="admin").refresh_token.reveal()  # type: ignore[union-attr, attr-defined]
    assert original == stored


def test_token_without_expires_in_is_checked_again(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """No expires_in: the next check is the default lifetime away, never 'never'."""
    server.mode = "no_expires_in"
    with freeze_time("2026-03-01 10:00:00"):
        manager.store("gh", oauth_credential(server), principal="admin")
        _token(manager)
        info = manager.info("gh", principal="admin")
    assert (None, datetime(2026, 3, 1, 11, tzinfo=UTC)) == (info.expires_at, info.next_due_at)


def test_client_credentials_grant(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A client-credentials credential gets its token from the client secret alone."""
    credential = oauth_credential(
        server,
        refresh_token=None,
        grant_type="client_credentials",
        client_auth="client_secret_basic",
    )
    manager.store("erp", credential, principal="admin")
    assert server.is_valid(_token(manager, "erp"))


def test_jwt_bearer_grant(manager: CredentialManager) -> None:
    """An RFC 7523 assertion signed with the stored key is traded for an access token."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with TokenServer(jwt_keys={"svc@example": (public, "RS256")}) as provider:
        credential = JWTBearer(
            token_url=provider.url,
            issuer="svc@example",
            subject="svc",
            audience=provider.url,
            private_key=private,
        )
        manager.store("gcp", credential, principal="admin")
        assert provider.is_valid(_token(manager, "gcp"))


TRANSIENT = [
    "500",
    "503_retry_after",
    "429",
    "429_no_retry_after",
    "reset",
    "html",
    "error_body_200",
    "no_access_token",
    "huge",
]


@pytest.mark.parametrize("mode", TRANSIENT)
def test_transient_failure_keeps_a_valid_token_and_backs_off(
    manager: CredentialManager,
    server: TokenServer,
    mode: str,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A transient failure with a still-valid token: ACTIVE, attempt counted, retry later."""
    with freeze_time("2026-03-01 10:00:00"):
        manager.store(
            "gh", oauth_credential(server, access_token="old", expires_in=100), principal="admin"
        )
    server.mode = mode
    with freeze_time("2026-03-01 10:01:30"):
        assert "old" == _token(manager)
        info = manager.info("gh", principal="admin")
    assert (State.ACTIVE, 1) == (info.state, info.attempts)
    assert info.last_error
    assert info.next_due_at is not None
    assert info.next_due_at >= datetime(2026, 3, 1, 10, 2, tzinfo=UTC)
    assert [] == server.revoked_grants


def test_transient_failure_with_expired_token_raises(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A transient failure and no valid token: EXPIRED, RefreshFailed(permanent=False)."""
    manager.store("gh", oauth_credential(server), principal="admin")
    server.mode = "500"
    with pytest.raises(RefreshFailed) as raised:
        _token(manager)
    assert raised.value.permanent is False
    assert State.EXPIRED == manager.info("gh", principal="admin").state


def test_timeout_is_transient(
    make_manager: Callable[..., CredentialManager],
    oauth_credential: Callable[..., OAuth2],
    token_server: Callable[..., TokenServer],
) -> None:
    """A provider slower than the timeout is a transient failure, not a hang."""
    manager = make_manager(refresh_policy=RefreshPolicy(timeout=0.3))
    with token_server(slow_seconds=5) as slow:
        manager.store("gh", oauth_credential(slow), principal="admin")
        slow.mode = "slow"
        with pytest.raises(RefreshFailed) as raised:
            _token(manager)
    assert ("timeout", False) == (raised.value.error_code, raised.value.permanent)


def test_retry_after_is_honoured(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A 503 with Retry-After: 7 and backoff: the next attempt is no sooner than that."""
    with freeze_time("2026-03-01 10:00:00"):
        manager.store("gh", oauth_credential(server), principal="admin")
        server.mode = "503_retry_after"
        with pytest.raises(RefreshFailed) as raised:
            _token(manager)
        info = manager.info("gh", principal="admin")
    assert 7 == raised.value.retry_after
    assert info.next_due_at is not None
    assert info.next_due_at >= datetime(2026, 3, 1, 10, 0, 7, tzinfo=UTC)


def test_permanent_failure_requires_reauthorization(
    make_manager: Callable[..., CredentialManager],
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """invalid_grant: EXPIRED, no further calls, a re-authorization event; store revives it."""
    events: list[CredentialEvent] = []
    manager = make_manager(hooks=[events.append])
    manager.store("gh", oauth_credential(server), principal="admin")
    server.mode = "invalid_grant"
    for _ in range(3):
        with pytest.raises(RefreshFailed) as raised:
            _token(manager)
        assert raised.value.permanent is True
    assert 1 == server.token_requests
    info = manager.info("gh", principal="admin")
    assert (State.EXPIRED, None, "invalid_grant") == (info.state, info.next_due_at, info.last_error)
    assert manager.flush_events()
    assert [EventKind.REAUTHORIZATION_REQUIRED] == [e.kind for e in events]
    server.mode = "ok"
    manager.store("gh", oauth_credential(server), principal="admin", reason="re-authorized")
    assert server.is_valid(_token(manager))


def test_recovery_after_failures_is_announced(
    make_manager: Callable[..., CredentialManager],
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A refresh that succeeds after failures resets the attempts and sends 'recovered'."""
    events: list[CredentialEvent] = []
    manager = make_manager(hooks=[events.append])
    with freeze_time("2026-03-01 10:00:00") as frozen:
        manager.store("gh", oauth_credential(server), principal="admin")
        server.fail_next(1, "500")
        with pytest.raises(RefreshFailed):
            _token(manager)
        frozen.tick(timedelta(hours=1))
        _token(manager)
    assert 0 == manager.info("gh", principal="admin").attempts
    # no token was ever usable, so the failed first refresh also reports it expired
    assert manager.flush_events()
    kinds = [e.kind for e in events]
    assert [EventKind.REFRESH_FAILED, EventKind.EXPIRED, EventKind.RECOVERED] == kinds


@pytest.mark.parametrize(("mode", "bound"), [("invalid_grant", 1), ("500", 3600 // 30)])
def test_failing_credential_makes_bounded_calls_per_hour(
    manager: CredentialManager,
    server: TokenServer,
    mode: str,
    bound: int,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """Ticks every 10 s for an hour against a failing provider: calls stay bounded."""
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    with freeze_time(start) as frozen:
        manager.store("gh", oauth_credential(server), principal="admin")
        server.mode = mode
        for _ in range(360):
            manager.tick()
            frozen.tick(timedelta(seconds=10))
    assert server.token_requests <= bound
    assert server.token_requests <= 40 or mode == "invalid_grant"
    assert [] == server.revoked_grants


def test_refresh_happens_in_the_margin_not_before(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """tick() leaves a token alone until its refresh time, then refreshes it once."""
    with freeze_time("2026-03-01 10:00:00") as frozen:
        manager.store(
            "gh", oauth_credential(server, access_token="a", expires_in=3600), principal="admin"
        )
        due = manager.info("gh", principal="admin").next_due_at
        assert due is not None
        assert datetime(2026, 3, 1, 10, 55, tzinfo=UTC) - timedelta(minutes=1) <= due
        assert due <= datetime(2026, 3, 1, 10, 55, tzinfo=UTC)
        frozen.move_to(due - timedelta(seconds=1))
        assert 0 == manager.tick().refreshed
        frozen.move_to(due)
        assert 1 == manager.tick().refreshed
    assert 1 == server.refreshes


def test_short_lived_token_margin_shrinks(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A 2-second token is refreshed in its last quarter (plus spread), not 5 minutes early."""
    with freeze_time("2026-03-01 10:00:00"):
        info = manager.store(
            "gh", oauth_credential(server, access_token="a", expires_in=2), principal="admin"
        )
    assert info.next_due_at is not None
    ahead = (datetime(2026, 3, 1, 10, 0, 2, tzinfo=UTC) - info.next_due_at).total_seconds()
    assert 0.5 <= ahead <= 0.6


def test_threads_share_one_refresh(
    make_manager: Callable[..., CredentialManager],
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """Eight threads reading a due credential cause exactly one token request."""
    manager = make_manager()
    manager.store("gh", oauth_credential(server), principal="admin")
    barrier = threading.Barrier(8)
    tokens: list[str] = []

    def read() -> None:
        barrier.wait()
        tokens.append(_token(manager))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (1, 1) == (server.token_requests, len(set(tokens)))


def test_http_auth_injects_and_refreshes_once_on_401(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """httpx.Auth adds the bearer token; a 401 forces one refresh and one retry."""
    manager.store(
        "gh",
        oauth_credential(server, access_token="revoked-at-provider", expires_in=3600),
        principal="admin",
    )
    manager.grant("worker", "gh", {Permission.USE}, principal="admin")
    with httpx.Client(auth=manager.auth("gh", principal="worker")) as client:
        response = client.get(server.resource_url)
    assert (200, 1) == (response.status_code, server.refreshes)


def test_async_http_auth_injects_and_refreshes(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """The same auth object works with httpx.AsyncClient."""
    import asyncio

    manager.store(
        "gh", oauth_credential(server, access_token="stale", expires_in=3600), principal="admin"
    )

    async def call() -> int:
        async with httpx.AsyncClient(auth=manager.auth("gh", principal="admin")) as client:
            return (await client.get(server.resource_url)).status_code

    assert 200 == asyncio.run(call())


def test_a_long_tick_claims_each_credential_at_the_time_of_its_claim(
    make_manager: Any, token_server: Any, oauth_credential: Any
) -> None:
    """Without an explicit ``now``, a credential claimed after a slow neighbour's refresh is
    claimed (and its lease counted) from that moment, not from the tick's start: with a
    2-second lease, the old stamp would have given it a lease already expired."""
    policy = RefreshPolicy(lease=timedelta(seconds=2), timeout=1.0)
    manager: CredentialManager = make_manager(refresh_policy=policy)
    with token_server(slow_seconds=5) as slow, token_server() as healthy:
        slow.mode = "slow"
        manager.store("slow", oauth_credential(slow), principal="admin")
        time.sleep(0.01)  # due first
        manager.store("healthy", oauth_credential(healthy), principal="admin")
        report = manager.tick(workers=1)
    assert (1, 1) == (report.refreshed, report.failed)
    claimed = [
        step.at
        for step in manager.history("healthy", principal="admin")
        if step.to_state is State.REFRESHING
    ]
    assert 1 == len(claimed)
    # the slow exchange was cut off at its 1-second deadline before this claim began
    assert claimed[0] - report.now >= timedelta(seconds=0.9)


def test_a_stopped_tick_finishes_what_is_in_flight_and_starts_nothing_more(
    make_manager: Any, token_server: Any, oauth_credential: Any
) -> None:
    """``stop`` set while the first refresh talks to its (slow) provider: that refresh ends
    as it would have, the two credentials behind it are not started (left for the next sweep)."""
    manager: CredentialManager = make_manager(refresh_policy=RefreshPolicy(timeout=1.0))
    with token_server(slow_seconds=5) as slow, token_server() as healthy:
        slow.mode = "slow"
        manager.store("a-slow", oauth_credential(slow), principal="admin")
        for name in ("b", "c"):
            time.sleep(0.01)  # due after a-slow
            manager.store(name, oauth_credential(healthy), principal="admin")
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        report = manager.tick(workers=1, stop=stop)
        assert (3, 1, 2, 0) == (report.due, report.failed, report.skipped, report.refreshed)
        assert 0 == healthy.token_requests
        assert 2 == manager.tick(workers=1).refreshed  # the next sweep does them


def test_the_tick_report_says_how_late_the_most_overdue_credential_was(
    make_manager: Any, server: TokenServer, oauth_credential: Any
) -> None:
    """``TickReport.lateness``: seconds past the earliest due time among the due credentials
    (what ``credman_sweep_lateness_seconds`` exports); 0 when nothing is due."""
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    manager: CredentialManager = make_manager(clock=lambda: start)
    manager.store("crm", oauth_credential(server), principal="admin")  # no token: due now
    assert 0.0 == manager.tick(start - timedelta(seconds=1)).lateness  # not due yet
    report = manager.tick(start + timedelta(seconds=90))
    assert (1, 90.0) == (report.refreshed, report.lateness)
