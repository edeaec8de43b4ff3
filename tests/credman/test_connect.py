"""Connect and re-authorise through the facade, on both engines, against the strict
loopback provider: sessions are single use, bound and short-lived; refusals change nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from credman import (
    CredentialManager,
    CredentialUnusable,
    CredentialValidationError,
    OAuth2,
    RefreshFailed,
    State,
)
from credman.connect import ConnectSession
from credman.errors import AuthorizationFailed, IntegrityError
from credman.notify import CredentialEvent, EventKind
from credman.oauth import parse_callback
from credman.testing.provider import TokenServer

CLIENT, SECRET = "connect-client", "connect-secret-canary-9d1e"
PUBLIC = "device-client"
REDIRECT = "https://app.example/oauth/callback"


class Clock:
    """Real time, moved forward on demand (for session expiry)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def epoch(self) -> float:
        return self().timestamp()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider(clock: Clock) -> Iterator[TokenServer]:
    with TokenServer(
        clients={CLIENT: SECRET},
        public_clients=[PUBLIC],
        redirect_uris={CLIENT: [REDIRECT], PUBLIC: [REDIRECT]},
        clock=clock.epoch,
        device_interval=1,
    ) as running:
        yield running


@pytest.fixture
def events() -> list[CredentialEvent]:
    return []


@pytest.fixture
def mgr(
    make_manager: Callable[..., CredentialManager], clock: Clock, events: list[CredentialEvent]
) -> CredentialManager:
    return make_manager(clock=clock, hooks=[events.append])


def pending(provider: TokenServer, **fields: Any) -> OAuth2:
    values: dict[str, Any] = {
        "token_url": provider.url,
        "authorization_url": provider.authorize_url,
        "device_authorization_url": provider.device_authorization_url,
        "client_id": CLIENT,
        "client_secret": SECRET,
        "scope": "read",
    }
    return OAuth2(**(values | fields))


def browse(session: ConnectSession) -> dict[str, str]:
    """Play the browser: visit the authorization URL, return the redirect's parameters."""
    response = httpx.get(session.authorization_url)
    assert 302 == response.status_code
    location = response.headers["Location"]
    assert location.startswith(session.redirect_uri + "?")
    answer = httpx.URL(location).params
    return dict(answer)


def connected(mgr: CredentialManager, provider: TokenServer, credential_id: str = "gh") -> Any:
    mgr.store(credential_id, pending(provider), principal="admin")
    session = mgr.connect(credential_id, redirect_uri=REDIRECT, principal="admin")
    params = browse(session)
    return mgr.complete_connect(state=params["state"], code=params["code"], principal="admin")


def token_of(mgr: CredentialManager, credential_id: str = "gh") -> str:
    credential = mgr.get(credential_id, principal="admin")
    assert isinstance(credential, OAuth2) and credential.access_token is not None
    return credential.access_token.reveal()


def test_a_credential_registered_for_connect_is_created(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """Storing an OAuth2 credential without tokens but with an authorization_url leaves it CREATED."""
    info = mgr.store("gh", pending(provider), principal="admin")
    assert (State.CREATED, 1) == (info.state, info.version)


def test_a_created_credential_hands_out_nothing(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """A credential that is not connected yet is unusable, with a message saying so."""
    mgr.store("gh", pending(provider), principal="admin")
    with pytest.raises(CredentialUnusable, match="not connected"):
        mgr.get("gh", principal="admin")


def test_connect_end_to_end_activates_with_working_tokens(
    mgr: CredentialManager, provider: TokenServer, events: list[CredentialEvent]
) -> None:
    """connect -> provider -> complete_connect: ACTIVE, a token the provider accepts, an event."""
    info = connected(mgr, provider)
    assert mgr.flush_events()
    assert (State.ACTIVE, True, [EventKind.CONNECTED]) == (
        info.state,
        provider.is_valid(token_of(mgr)),
        [e.kind for e in events],
    )


def test_the_provider_saw_s256_pkce_and_the_exact_redirect_uri(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """The authorization request used S256 and the bound redirect URI, the exchange too."""
    connected(mgr, provider)
    seen = provider.authorization_requests[-1]
    assert ("S256", REDIRECT, REDIRECT) == (
        seen.code_challenge_method,
        seen.redirect_uri,
        provider.code_exchanges[-1]["redirect_uri"],
    )


def test_history_of_a_first_connect(mgr: CredentialManager, provider: TokenServer) -> None:
    """The history reads create (CREATED), then activate (ACTIVE)."""
    connected(mgr, provider)
    steps = [(t.trigger, t.to_state) for t in mgr.history("gh", principal="admin")]
    assert [("create", State.CREATED), ("activate", State.ACTIVE)] == steps


def test_session_repr_hides_the_state(mgr: CredentialManager, provider: TokenServer) -> None:
    """The session's repr does not show the state carried in its URL."""
    mgr.store("gh", pending(provider), principal="admin")
    session = mgr.connect("gh", redirect_uri=REDIRECT, principal="admin")
    state = dict(httpx.URL(session.authorization_url).params)["state"]
    assert state not in repr(session)


def test_session_expires_in_ten_minutes(mgr: CredentialManager, provider: TokenServer) -> None:
    """The session's expiry is ten minutes after it was opened."""
    mgr.store("gh", pending(provider), principal="admin")
    before = datetime.now(UTC)
    session = mgr.connect("gh", redirect_uri=REDIRECT, principal="admin")
    assert timedelta(minutes=10) <= session.expires_at - before < timedelta(minutes=10, seconds=5)


# -- refusals: audited, notified, nothing changed -------------------------------------------


def refused(mgr: CredentialManager, **callback: Any) -> tuple[str, State, int, str | None]:
    """Complete with ``callback``; the error code, and the credential's state and version."""
    with pytest.raises(AuthorizationFailed) as raised:
        mgr.complete_connect(principal=callback.pop("principal", "admin"), **callback)
    info = mgr.info("gh", principal="admin")
    failures = mgr.audit_events(principal="admin", outcome="failed")
    return raised.value.error_code, info.state, info.version, failures[-1].action


def started(mgr: CredentialManager, provider: TokenServer) -> tuple[ConnectSession, dict[str, str]]:
    mgr.store("gh", pending(provider), principal="admin")
    session = mgr.connect("gh", redirect_uri=REDIRECT, principal="admin")
    return session, browse(session)


def test_a_replayed_callback_is_refused(mgr: CredentialManager, provider: TokenServer) -> None:
    """The same state and code a second time: state_reused, the credential untouched."""
    _, params = started(mgr, provider)
    mgr.complete_connect(state=params["state"], code=params["code"], principal="admin")
    assert ("state_reused", State.ACTIVE, 2, "connect") == refused(
        mgr, state=params["state"], code=params["code"]
    )


def test_a_forged_state_is_refused(mgr: CredentialManager, provider: TokenServer) -> None:
    """A state no session has: invalid_state, nothing changed."""
    _, params = started(mgr, provider)
    assert ("invalid_state", State.CREATED, 1, "connect") == refused(
        mgr, state="forged-" + params["state"], code=params["code"]
    )


def test_an_expired_session_is_refused(
    mgr: CredentialManager, provider: TokenServer, clock: Clock
) -> None:
    """A callback after ten minutes: session_expired, nothing changed."""
    _, params = started(mgr, provider)
    clock.offset += timedelta(minutes=10)
    assert ("session_expired", State.CREATED, 1, "connect") == refused(
        mgr, state=params["state"], code=params["code"]
    )


def test_a_callback_at_another_redirect_uri_is_refused(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """The callback arrived elsewhere than the bound redirect URI: refused."""
    _, params = started(mgr, provider)
    assert ("redirect_uri_mismatch", State.CREATED, 1, "connect") == refused(
        mgr,
        state=params["state"],
        code=params["code"],
        redirect_uri="https://evil.example/oauth/callback",
    )


def test_another_principal_cannot_complete(mgr: CredentialManager, provider: TokenServer) -> None:
    """A session is bound to the principal that opened it."""
    from credman import Permission

    mgr.grant("ops", "gh", {Permission.MANAGE}, principal="admin")
    _, params = started(mgr, provider)
    assert ("principal_mismatch", State.CREATED, 1, "connect") == refused(
        mgr, state=params["state"], code=params["code"], principal="ops"
    )


def test_access_denied_is_refused_and_notified(
    mgr: CredentialManager, provider: TokenServer, events: list[CredentialEvent]
) -> None:
    """The user denies consent: access_denied, connect_failed reaches the hooks, still CREATED."""
    provider.authorize_mode = "access_denied"
    _, params = started(mgr, provider)
    outcome = refused(mgr, state=params["state"], code=None, error=params["error"])
    assert mgr.flush_events()
    assert (("access_denied", State.CREATED, 1, "connect"), [EventKind.CONNECT_FAILED]) == (
        outcome,
        [e.kind for e in events],
    )


def test_a_callback_error_parsed_by_the_library_is_clear() -> None:
    """parse_callback of access_denied says what happened."""
    with pytest.raises(AuthorizationFailed, match="denied"):
        parse_callback("https://app.example/cb?error=access_denied&state=s")


def test_storing_a_tokenless_credential_over_an_existing_one_is_refused(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """Re-authorisation goes through connect, not a store that would drop the tokens."""
    connected(mgr, provider)
    with pytest.raises(CredentialValidationError, match="connect"):
        mgr.store("gh", pending(provider), principal="admin")


def test_connect_needs_an_authorization_url(mgr: CredentialManager, provider: TokenServer) -> None:
    """A plain refresh-token credential cannot start a connect."""
    mgr.store(
        "plain",
        OAuth2(token_url=provider.url, client_id=CLIENT, refresh_token=provider.grant(CLIENT)),
        principal="admin",
    )
    with pytest.raises(CredentialValidationError, match="authorization_url"):
        mgr.connect("plain", redirect_uri=REDIRECT, principal="admin")


def test_connect_refuses_a_plain_http_redirect_off_loopback(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """redirect_uri must be https, or http on loopback."""
    mgr.store("gh", pending(provider), principal="admin")
    with pytest.raises(CredentialValidationError, match="redirect_uri"):
        mgr.connect("gh", redirect_uri="http://app.example/cb", principal="admin")


def session_rows(database_url: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(text("SELECT * FROM connect_session"))]
    engine.dispose()
    return rows


def test_state_and_verifier_are_not_stored_in_clear(
    mgr: CredentialManager, provider: TokenServer, database_url: str
) -> None:
    """The session row holds a hash of the state and a sealed verifier, neither in clear;
    completing it destroys the sealed verifier."""
    _, params = started(mgr, provider)
    before = repr(session_rows(database_url))
    mgr.complete_connect(state=params["state"], code=params["code"], principal="admin")
    verifier = provider.code_exchanges[-1]["code_verifier"]
    after = session_rows(database_url)
    assert (False, False, None) == (
        params["state"] in before,
        verifier in before,
        after[0]["sealed_verifier"],
    )


# -- re-authorise ---------------------------------------------------------------------------


def test_reauthorise_after_the_provider_revoked_the_grant(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """Grant revoked -> refresh refused -> EXPIRED -> connect again -> UPDATED and working."""
    connected(mgr, provider)
    provider.revoke_grant(provider.grant_of(token_of(mgr)) or "")
    with pytest.raises(RefreshFailed):
        mgr.refresh("gh", principal="admin", force=True)
    assert State.EXPIRED == mgr.info("gh", principal="admin").state
    session = mgr.connect("gh", redirect_uri=REDIRECT, principal="admin")
    params = browse(session)
    info = mgr.complete_connect(state=params["state"], code=params["code"], principal="admin")
    steps = [t.trigger for t in mgr.history("gh", principal="admin")]
    assert (State.UPDATED, True) == (info.state, provider.is_valid(token_of(mgr)))
    assert ["create", "activate", "start_refresh", "refresh_failed", "reauthorize"] == steps


def test_reauthorise_a_live_credential(mgr: CredentialManager, provider: TokenServer) -> None:
    """A connect on an ACTIVE credential replaces its tokens: UPDATED."""
    connected(mgr, provider)
    session = mgr.connect("gh", redirect_uri=REDIRECT, principal="admin")
    params = browse(session)
    info = mgr.complete_connect(state=params["state"], code=params["code"], principal="admin")
    assert State.UPDATED == info.state


def test_refreshes_after_connect_use_the_new_refresh_token(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """The connected credential refreshes with the refresh token the code bought."""
    connected(mgr, provider)
    info = mgr.refresh("gh", principal="admin", force=True)
    assert (State.UPDATED, True) == (info.state, provider.is_valid(token_of(mgr)))


# -- the device grant -----------------------------------------------------------------------


def test_device_connect_polls_until_approved(
    mgr: CredentialManager, provider: TokenServer, clock: Clock, events: list[CredentialEvent]
) -> None:
    """connect_device shows the user code, polls at the interval, and activates."""
    mgr.store("dev", pending(provider, client_id=PUBLIC, client_secret=None), principal="admin")
    shown: list[str] = []

    def show(authorization: Any) -> None:
        shown.append(authorization.user_code)
        provider.approve_device(authorization.user_code)

    info = mgr.connect_device("dev", principal="admin", show=show, sleep=clock.sleep)
    assert mgr.flush_events()
    assert (State.ACTIVE, 1, [1], [EventKind.CONNECTED]) == (
        info.state,
        len(shown),
        clock.slept,
        [e.kind for e in events],
    )


def test_device_connect_denied_changes_nothing(
    mgr: CredentialManager, provider: TokenServer, clock: Clock
) -> None:
    """A denied device: AuthorizationFailed(access_denied), still CREATED."""
    mgr.store("dev", pending(provider, client_id=PUBLIC, client_secret=None), principal="admin")

    def deny(authorization: Any) -> None:
        provider.approve_device(authorization.user_code, approve=False)

    with pytest.raises(AuthorizationFailed) as raised:
        mgr.connect_device("dev", principal="admin", show=deny, sleep=clock.sleep)
    assert ("access_denied", State.CREATED) == (
        raised.value.error_code,
        mgr.info("dev", principal="admin").state,
    )


# -- the callback entry (state alone), the sweep, key rotation -------------------------------


def test_a_callback_completes_as_the_principal_that_opened_it(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """complete_callback needs no principal: the session's (ops) completes it, audited as ops."""
    from credman import Permission

    mgr.grant("ops", "gh", {Permission.MANAGE}, principal="admin")
    mgr.store("gh", pending(provider), principal="admin")
    session = mgr.connect(
        "gh", redirect_uri=REDIRECT, principal="ops", return_to="https://app.example/done"
    )
    params = browse(session)
    outcome = mgr.complete_callback(
        state=params["state"], code=params["code"], redirect_uri=REDIRECT
    )
    completed = [
        e.principal
        for e in mgr.audit_events(principal="admin", credential_id="gh")
        if e.action == "connect" and e.detail.get("stage") == "completed"
    ]
    assert (True, "gh", "https://app.example/done", State.ACTIVE, ["ops"]) == (
        outcome.ok,
        outcome.credential_id,
        outcome.return_to,
        outcome.info.state if outcome.info else None,
        completed,
    )


def test_a_callback_with_an_unknown_state_is_refused_as_the_callback(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """A forged state: invalid_state, no credential named, audited as system:oauth-callback."""
    _, params = started(mgr, provider)
    outcome = mgr.complete_callback(
        state="forged-" + params["state"], code=params["code"], redirect_uri=REDIRECT
    )
    failure = mgr.audit_events(principal="admin", outcome="failed")[-1]
    assert outcome.failure is not None and isinstance(outcome.failure, AuthorizationFailed)
    assert ("invalid_state", None, "system:oauth-callback", State.CREATED) == (
        outcome.failure.error_code,
        outcome.credential_id,
        failure.principal,
        mgr.info("gh", principal="admin").state,
    )


def test_a_replayed_callback_is_refused_with_the_session_return_to(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """The second callback with the same state: state_reused, credential and return_to named."""
    mgr.store("gh", pending(provider), principal="admin")
    session = mgr.connect(
        "gh", redirect_uri=REDIRECT, principal="admin", return_to="https://app.example/done"
    )
    params = browse(session)
    first = mgr.complete_callback(state=params["state"], code=params["code"], redirect_uri=REDIRECT)
    again = mgr.complete_callback(state=params["state"], code=params["code"], redirect_uri=REDIRECT)
    assert isinstance(again.failure, AuthorizationFailed)
    assert (True, "state_reused", "gh", "https://app.example/done", 2) == (
        first.ok,
        again.failure.error_code,
        again.credential_id,
        again.return_to,
        mgr.info("gh", principal="admin").version,
    )


def test_a_callback_for_another_redirect_uri_is_refused(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """A session opened for REDIRECT cannot be completed through another callback address."""
    _, params = started(mgr, provider)
    outcome = mgr.complete_callback(
        state=params["state"], code=params["code"], redirect_uri="https://other.example/cb"
    )
    assert isinstance(outcome.failure, AuthorizationFailed)
    assert ("redirect_uri_mismatch", State.CREATED) == (
        outcome.failure.error_code,
        mgr.info("gh", principal="admin").state,
    )


def test_the_connect_scope_reaches_the_provider(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """connect(scope=...) asks the provider for that scope instead of the credential's."""
    mgr.store("gh", pending(provider), principal="admin")
    browse(mgr.connect("gh", redirect_uri=REDIRECT, principal="admin", scope="read write"))
    assert "read write" == provider.authorization_requests[-1].scope


def test_return_to_must_be_an_https_url(mgr: CredentialManager, provider: TokenServer) -> None:
    """A return_to that is not an https URL is refused naming the field."""
    mgr.store("gh", pending(provider), principal="admin")
    with pytest.raises(CredentialValidationError, match="return_to"):
        mgr.connect("gh", redirect_uri=REDIRECT, principal="admin", return_to="javascript:x")


def test_the_sweep_forgets_expired_sessions_only(
    mgr: CredentialManager, provider: TokenServer, clock: Clock, database_url: str
) -> None:
    """At 11 minutes the tick deletes the session opened at 0, keeps the one opened at 5."""
    _, old = started(mgr, provider)
    clock.offset += timedelta(minutes=5)
    young_session = mgr.connect("gh", redirect_uri=REDIRECT, principal="admin")
    clock.offset += timedelta(minutes=6)
    report = mgr.tick()
    left = session_rows(database_url)
    young = browse(young_session)  # the provider's code lives a minute: ask for it now
    outcome = mgr.complete_callback(state=old["state"], code=old["code"], redirect_uri=REDIRECT)
    assert isinstance(outcome.failure, AuthorizationFailed)
    assert (1, 1, "invalid_state", True) == (
        report.sessions_deleted,
        len(left),
        outcome.failure.error_code,
        mgr.complete_callback(state=young["state"], code=young["code"], redirect_uri=REDIRECT).ok,
    )


def test_the_sweep_deletes_in_bounded_batches(
    mgr: CredentialManager, provider: TokenServer, clock: Clock
) -> None:
    """delete_expired takes at most its limit, oldest first; the rest wait for the next call."""
    from credman.storage import connect as connect_rows
    from credman.storage import write

    mgr.store("gh", pending(provider), principal="admin")
    for _ in range(3):
        mgr.connect("gh", redirect_uri=REDIRECT, principal="admin")
    with write(mgr.engine) as connection:
        first = connect_rows.delete_expired(connection, clock() + timedelta(hours=1), 2)
    with write(mgr.engine) as connection:
        second = connect_rows.delete_expired(connection, clock() + timedelta(hours=1), 2)
    assert (2, 1) == (first, second)


def test_a_session_opened_before_a_rotation_completes_after_retiring_the_old_key(
    mgr: CredentialManager, provider: TokenServer, database_url: str
) -> None:
    """Rotate (which re-wraps the session's data key), retire the old version, then complete."""
    _, params = started(mgr, provider)
    old = mgr.key_status(principal="admin").primary
    mgr.rotate_keys(principal="admin")
    versions = mgr.retire_key(old, principal="admin")
    on_disk = session_rows(database_url)[0]["key_version"]
    info = mgr.complete_connect(state=params["state"], code=params["code"], principal="admin")
    assert (old not in versions, old + 1, State.ACTIVE, True) == (
        True,
        on_disk,
        info.state,
        provider.is_valid(token_of(mgr)),
    )


def test_connect_refuses_an_older_row_put_back(
    mgr: CredentialManager, provider: TokenServer
) -> None:
    """The CREATED row from before the first connect, restored whole (MAC and all) after it,
    is behind its history: connect and re-authorise refuse it instead of working on it."""
    from sqlalchemy import select, update

    from credman.storage.repository import CREDENTIALS as table

    engine = create_engine(mgr.engine.url)
    mgr.store("gh", pending(provider), principal="admin")
    with engine.connect() as connection:
        old = dict(connection.execute(select(table).where(table.c.id == "gh")).one()._mapping)
    session = mgr.connect("gh", redirect_uri=REDIRECT, principal="admin")
    params = browse(session)
    mgr.complete_connect(state=params["state"], code=params["code"], principal="admin")
    with engine.begin() as connection:
        values = {k: v for k, v in old.items() if k != "id"}
        connection.execute(update(table).where(table.c.id == "gh").values(**values))
    engine.dispose()
    with pytest.raises(IntegrityError, match="older row was restored"):
        mgr.connect("gh", redirect_uri=REDIRECT, principal="admin")
