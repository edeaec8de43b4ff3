"""Every fault the loopback provider can throw, through ``get`` and through ``tick``: credman
ends in the documented state, the sweep never raises, and the last good refresh token is
never lost (except where the provider itself destroyed it: ``lost_response``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credman import CredentialManager, OAuth2, RefreshFailed, State
from credman.lifecycle import RefreshPolicy
from credman.notify import CredentialEvent, EventKind
from credman.oauth import MAX_BODY
from credman.testing.provider import FAULT_MODES, TokenServer

START = datetime(2026, 3, 1, 10, tzinfo=UTC)
STORED_LIFETIME = 100
"""The stored token's lifetime: it is due for refresh 25-30 s before it expires at 10:01:40."""
DUE_AND_VALID = START + timedelta(seconds=90)
PAST_EXPIRY = START + timedelta(seconds=120)
DEFAULT_LIFETIME = RefreshPolicy().default_lifetime
POLICY = RefreshPolicy(timeout=0.3)  # "slow" stalls 5 s: the timeout, not the stall, decides

TRANSIENT = (
    "500",
    "503_retry_after",
    "429",
    "429_no_retry_after",
    "slow",
    "reset",
    "html",
    "error_body_200",
    "huge",
    "no_access_token",
    "drip",
)
PERMANENT = ("invalid_grant",)
REJECTED = ("huge_access_token", "crlf_token_type")
"""A 200 credman refuses after the provider rotated the refresh token: deferred, new RT kept."""
QUIRKS = ("no_expires_in", "negative_expires_in")
PROFILE_QUIRKS = (
    "bad_refresh_token_200",
    "ok_false_200",
    "expires_in_string",
    "expires_in_ms",
    "ok_true",
    "instance_url",
)
"""Providers' own response shapes: each is driven through its profile in test_profiles.py."""
LOST = "lost_response"
VIAS = ("get", "tick")


@pytest.fixture
def events() -> list[CredentialEvent]:
    """The notifications the manager sent."""
    return []


@pytest.fixture
def manager(
    sqlite_url: str, key_file: Path, events: list[CredentialEvent]
) -> Iterator[CredentialManager]:
    """A manager on SQLite (the provider, not the engine, is under test) recording events."""
    with CredentialManager(
        sqlite_url, str(key_file), refresh_policy=POLICY, hooks=[events.append]
    ) as running:
        yield running


@pytest.fixture
def make_provider(token_server: Callable[..., TokenServer]) -> Callable[..., TokenServer]:
    """Build (not start) a strict provider whose "huge" body is twice the limit (other
    options by keyword)."""
    return lambda **options: token_server(
        **{"access_token_lifetime": 3600, "huge_bytes": 2 * MAX_BODY, **options}
    )


@pytest.fixture
def server(make_provider: Callable[..., TokenServer]) -> Iterator[TokenServer]:
    """A strict provider: rotates refresh tokens and revokes a grant on replay."""
    with make_provider() as running:
        yield running


@pytest.fixture
def oauth(oauth_credential: Callable[..., OAuth2]) -> Callable[..., OAuth2]:
    """Build the stored OAuth2 credential: a 100 s access token and a fresh grant."""
    stored = {"access_token": "old", "expires_in": STORED_LIFETIME}
    return lambda server, **overrides: oauth_credential(server, **(stored | overrides))


def _drive(manager: CredentialManager, via: str) -> RefreshFailed | None:
    """Ask for the credential through get, or run one sweep; what get raised, if anything."""
    if via == "tick":
        report = manager.tick()
        assert [] == report.errors
        assert 1 == report.due
        return None
    try:
        manager.get("gh", principal="admin")
    except RefreshFailed as failure:
        return failure
    return None


def _stored_refresh_token(manager: CredentialManager) -> str:
    credential = manager.get("gh", principal="admin")
    return credential.refresh_token.reveal()  # type: ignore[attr-defined, no-any-return]


def _faulted(
    manager: CredentialManager,
    server: TokenServer,
    oauth: Callable[..., OAuth2],
    mode: str,
    via: str,
    at: datetime,
) -> tuple[RefreshFailed | None, Any]:
    """Store at START, meet ``mode`` at ``at`` through ``via``; what get raised and the info."""
    with freeze_time(START) as frozen:
        manager.store("gh", oauth(server), principal="admin")
        frozen.move_to(at)
        server.mode = mode
        raised = _drive(manager, via)
        return raised, manager.info("gh", principal="admin")


def test_the_table_covers_every_fault_mode() -> None:
    """Each of the provider's fault modes has an expected outcome below."""
    assert FAULT_MODES - {"ok"} == {
        *TRANSIENT,
        *PERMANENT,
        *QUIRKS,
        *REJECTED,
        *PROFILE_QUIRKS,
        LOST,
    }


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("mode", TRANSIENT)
def test_transient_fault_with_a_valid_token_is_deferred(
    manager: CredentialManager,
    server: TokenServer,
    events: list[CredentialEvent],
    mode: str,
    via: str,
    oauth: Callable[..., OAuth2],
) -> None:
    """A transient fault while the token still works: ACTIVE, one attempt, a later retry."""
    raised, info = _faulted(manager, server, oauth, mode, via, DUE_AND_VALID)
    assert None is raised
    assert (State.ACTIVE, 1) == (info.state, info.attempts)
    assert info.next_due_at > DUE_AND_VALID
    assert manager.flush_events()
    assert [EventKind.REFRESH_FAILED] == [event.kind for event in events]
    assert [] == server.revoked_grants


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("mode", TRANSIENT)
def test_transient_fault_with_an_expired_token_expires_until_the_retry(
    manager: CredentialManager,
    server: TokenServer,
    events: list[CredentialEvent],
    mode: str,
    via: str,
    oauth: Callable[..., OAuth2],
) -> None:
    """A transient fault with no valid token: EXPIRED with a retry time, a transient error,
    and an ``expired`` event when the credential stops working."""
    raised, info = _faulted(manager, server, oauth, mode, via, PAST_EXPIRY)
    if via == "get":
        assert isinstance(raised, RefreshFailed)
        assert False is raised.permanent
    assert (State.EXPIRED, 1) == (info.state, info.attempts)
    assert info.next_due_at > PAST_EXPIRY
    assert manager.flush_events()
    kinds = [event.kind for event in events]
    assert [EventKind.REFRESH_FAILED, EventKind.EXPIRED] == kinds
    assert [] == server.revoked_grants


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("at", [DUE_AND_VALID, PAST_EXPIRY], ids=["valid", "expired"])
def test_invalid_grant_needs_reauthorization(
    manager: CredentialManager,
    server: TokenServer,
    events: list[CredentialEvent],
    at: datetime,
    via: str,
    oauth: Callable[..., OAuth2],
) -> None:
    """invalid_grant, valid token or not: EXPIRED, never due again, a permanent error."""
    raised, info = _faulted(manager, server, oauth, "invalid_grant", via, at)
    if via == "get":
        assert isinstance(raised, RefreshFailed)
        assert True is raised.permanent
    assert (State.EXPIRED, None, "invalid_grant") == (
        info.state,
        info.next_due_at,
        info.last_error,
    )
    assert manager.flush_events()
    assert [EventKind.REAUTHORIZATION_REQUIRED] == [event.kind for event in events]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("at", [DUE_AND_VALID, PAST_EXPIRY], ids=["valid", "expired"])
@pytest.mark.parametrize("mode", QUIRKS)
def test_missing_or_negative_expires_in_gets_the_default_lifetime(
    manager: CredentialManager,
    server: TokenServer,
    mode: str,
    at: datetime,
    via: str,
    oauth: Callable[..., OAuth2],
) -> None:
    """A token without a usable expires_in is a success, checked again a default lifetime on."""
    raised, info = _faulted(manager, server, oauth, mode, via, at)
    assert None is raised
    assert (State.UPDATED, 0, None) == (info.state, info.attempts, info.expires_at)
    assert at + DEFAULT_LIFETIME == info.next_due_at
    assert server.is_valid_refresh_token(_stored_refresh_token(manager))


@contextmanager
def _mocked(
    sqlite_url: str, key_file: Path, provider: Callable[[httpx.Request], httpx.Response]
) -> Iterator[CredentialManager]:
    """A manager whose token endpoint is ``provider``, holding a due OAuth2 credential "gh"."""
    with (
        httpx.Client(transport=httpx.MockTransport(provider)) as client,
        CredentialManager(sqlite_url, str(key_file), http_client=client) as manager,
    ):
        credential = OAuth2(
            token_url="https://provider.example/token", client_id="client-1", refresh_token="rt"
        )
        manager.store("gh", credential, principal="admin")
        yield manager


@pytest.mark.parametrize("value", [b"1000000000000", b"1e400", b"Infinity", b"0", b'"3600s"'])
def test_absurd_expires_in_is_treated_as_missing(
    sqlite_url: str,
    key_file: Path,
    value: bytes,
) -> None:
    """A 200 whose expires_in is absurd or unusable: success, default-lifetime next check."""

    def provider(request: httpx.Request) -> httpx.Response:
        body = b'{"access_token": "at-new", "token_type": "Bearer", "expires_in": ' + value + b"}"
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    with freeze_time(START), _mocked(sqlite_url, key_file, provider) as manager:
        token = manager.get("gh", principal="admin").access_token.reveal()  # type: ignore[attr-defined]
        info = manager.info("gh", principal="admin")
    assert ("at-new", State.UPDATED) == (token, info.state)
    assert (None, START + DEFAULT_LIFETIME) == (info.expires_at, info.next_due_at)


def test_one_sweep_survives_every_fault_at_once(
    manager: CredentialManager,
    oauth: Callable[..., OAuth2],
    make_provider: Callable[..., TokenServer],
) -> None:
    """One tick over credentials whose providers each misbehave differently: no error, each
    credential gets its own outcome."""
    modes = sorted(FAULT_MODES - {"ok", *PROFILE_QUIRKS})  # those: per profile, test_profiles
    with ExitStack() as stack, freeze_time(START) as frozen:
        for mode in modes:
            provider = stack.enter_context(make_provider())
            manager.store(mode, oauth(provider), principal="admin")
            provider.mode = mode
        frozen.move_to(DUE_AND_VALID)
        report = manager.tick()
        states = {mode: manager.info(mode, principal="admin").state for mode in modes}
    assert ([], len(modes)) == (report.errors, report.due)
    assert (len(QUIRKS), len(modes) - len(QUIRKS)) == (report.refreshed, report.failed)
    expected = {mode: State.ACTIVE for mode in (*TRANSIENT, *REJECTED, LOST)}
    expected |= {mode: State.UPDATED for mode in QUIRKS}
    expected |= {mode: State.EXPIRED for mode in PERMANENT}
    assert expected == states


@pytest.fixture
def patient_manager(sqlite_url: str, key_file: Path) -> Iterator[CredentialManager]:
    """A manager whose exchange deadline no loaded machine reaches on loopback: with the
    0.3 s one, a healthy answer that came late was a lost response (the provider had
    rotated, the manager had not stored), so the next refresh replayed a spent token."""
    with CredentialManager(
        sqlite_url, str(key_file), refresh_policy=RefreshPolicy(timeout=10)
    ) as running:
        yield running


@pytest.fixture
def quick_faults_server(make_provider: Callable[..., TokenServer]) -> Iterator[TokenServer]:
    """A strict provider whose "slow" stall (then 504) and "drip" (a 200 error body, byte by
    byte) end in well under a second: faults the deadline need not cut."""
    with make_provider(slow_seconds=0.05, drip_seconds=0.005) as running:
        yield running


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(faults=st.lists(st.sampled_from([*TRANSIENT, *PERMANENT, *QUIRKS]), max_size=5))
def test_last_good_refresh_token_survives_any_faults(
    patient_manager: CredentialManager,
    quick_faults_server: TokenServer,
    faults: list[str],
    oauth: Callable[..., OAuth2],
) -> None:
    """Any run of faults (lost_response aside), then a healthy provider: the refresh succeeds
    and the grant was never revoked."""
    manager, server = patient_manager, quick_faults_server
    credential_id = f"gh-{uuid.uuid4().hex}"
    manager.store(credential_id, oauth(server), principal="admin")
    for mode in faults:
        server.fail_next(1, mode)
        with suppress(RefreshFailed):
            manager.refresh(credential_id, principal="admin", force=True)
    info = manager.refresh(credential_id, principal="admin", force=True)
    stored = manager.get(credential_id, principal="admin").refresh_token.reveal()  # type: ignore[attr-defined]
    assert (State.UPDATED, 0) == (info.state, info.attempts)
    assert server.is_valid_refresh_token(stored)
    assert [] == server.revoked_grants


def test_refresh_token_rotated_only_on_some_responses_is_kept(
    manager: CredentialManager,
    server: TokenServer,
    oauth: Callable[..., OAuth2],
) -> None:
    """A provider that rotates on some responses only: the stored refresh token stays live."""
    manager.store("gh", oauth(server), principal="admin")
    for rotate in (True, False, False, True, False, True, True, False):
        server.rotate_refresh_tokens = rotate
        manager.refresh("gh", principal="admin", force=True)
        assert server.is_valid_refresh_token(_stored_refresh_token(manager))
    assert [] == server.revoked_grants


@pytest.mark.parametrize("at", [DUE_AND_VALID, PAST_EXPIRY], ids=["valid", "expired"])
def test_lost_response_first_looks_transient(
    manager: CredentialManager,
    server: TokenServer,
    at: datetime,
    oauth: Callable[..., OAuth2],
) -> None:
    """A lost response is a connection error to credman, but the provider has already spent
    the stored refresh token: nothing revoked yet, nothing usable to retry with."""
    with freeze_time(START) as frozen:
        credential = oauth(server)
        manager.store("gh", credential, principal="admin")
        frozen.move_to(at)
        server.fail_next(1, LOST)
        raised = _drive(manager, "get")
        info = manager.info("gh", principal="admin")
    assert "connection_error" == info.last_error
    assert (at >= PAST_EXPIRY) is isinstance(raised, RefreshFailed)
    assert False is server.is_valid_refresh_token(credential.refresh_token.reveal())  # type: ignore[union-attr]
    assert [] == server.revoked_grants


@pytest.mark.parametrize("via", VIAS)
def test_lost_response_retry_replays_and_needs_reauthorization(
    manager: CredentialManager,
    server: TokenServer,
    events: list[CredentialEvent],
    via: str,
    oauth: Callable[..., OAuth2],
) -> None:
    """The retry after a lost response replays the spent refresh token: the strict provider
    revokes the grant and credman stops at EXPIRED, re-authorization required."""
    with freeze_time(START) as frozen:
        manager.store("gh", oauth(server), principal="admin")
        frozen.move_to(DUE_AND_VALID)
        server.fail_next(1, LOST)
        manager.get("gh", principal="admin")
        retry_at = manager.info("gh", principal="admin").next_due_at
        frozen.move_to(retry_at)
        raised = _drive(manager, via)
        info = manager.info("gh", principal="admin")
    if via == "get":
        assert isinstance(raised, RefreshFailed)
        assert True is raised.permanent
    assert (State.EXPIRED, None, "invalid_grant") == (
        info.state,
        info.next_due_at,
        info.last_error,
    )
    assert manager.flush_events()
    assert 1 == len(server.revoked_grants)
    assert [EventKind.REFRESH_FAILED, EventKind.REAUTHORIZATION_REQUIRED] == [
        event.kind for event in events
    ]


def test_lost_response_does_not_loop(
    manager: CredentialManager,
    server: TokenServer,
    oauth: Callable[..., OAuth2],
) -> None:
    """After the replay is refused, a day of sweeps and reads makes no further token call."""
    with freeze_time(START) as frozen:
        manager.store("gh", oauth(server), principal="admin")
        frozen.move_to(DUE_AND_VALID)
        server.fail_next(1, LOST)
        manager.get("gh", principal="admin")
        frozen.move_to(manager.info("gh", principal="admin").next_due_at)
        manager.tick()
        calls = server.token_requests
        for _ in range(48):
            frozen.tick(timedelta(minutes=30))
            assert [] == manager.tick().errors
            with pytest.raises(RefreshFailed):
                manager.get("gh", principal="admin")
    assert 2 == calls
    assert calls == server.token_requests


def test_token_that_expires_during_backoff_is_not_served(
    manager: CredentialManager,
    server: TokenServer,
    oauth: Callable[..., OAuth2],
) -> None:
    """A token deferred at 10:01:30 expires at 10:01:40, before its retry at 10:02:00 or
    later: a get at 10:01:50 raises a transient RefreshFailed instead of returning it."""
    with freeze_time(START) as frozen:
        manager.store("gh", oauth(server), principal="admin")
        frozen.move_to(DUE_AND_VALID)
        server.mode = "500"
        manager.get("gh", principal="admin")
        frozen.move_to(START + timedelta(seconds=STORED_LIFETIME + 10))
        with pytest.raises(RefreshFailed) as raised:
            manager.get("gh", principal="admin")
        info = manager.info("gh", principal="admin")
    assert False is raised.value.permanent
    assert State.EXPIRED == info.state
    assert info.next_due_at is not None


def test_absurd_retry_after_is_clamped_to_a_day(
    sqlite_url: str,
    key_file: Path,
) -> None:
    """A 503 asking to wait 10**15 seconds: the credential is still retried within a day."""

    def provider(request: httpx.Request) -> httpx.Response:
        headers = {"Retry-After": str(10**15), "Content-Type": "application/json"}
        body = json.dumps({"error": "temporarily_unavailable"}).encode()
        return httpx.Response(503, content=body, headers=headers)

    with freeze_time(START), _mocked(sqlite_url, key_file, provider) as manager:
        with pytest.raises(RefreshFailed) as raised:
            manager.get("gh", principal="admin")
        info = manager.info("gh", principal="admin")
    assert False is raised.value.permanent
    assert START + timedelta(days=1) == info.next_due_at
