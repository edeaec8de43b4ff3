"""Connect over HTTP, end to end over TLS uvicorn and the loopback provider: the test plays
the browser; callbacks are authenticated by their state alone, refused ones change nothing,
and no answer carries the token, the state or the code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from credman import CredentialManager, CredentialValidationError, OAuth2, Permission, State
from credman.client import AsyncClient, Client
from credman.clock import ManualClock
from credman.server import ServerSettings
from credman.testing.provider import TokenServer

ADMIN = "admin"
CLIENT, SECRET = "http-connect-client", "http-connect-secret-canary-51f0"
RETURN_TO = "https://app.example/connected"


@pytest.fixture
def clock() -> ManualClock:
    """The manager's clock, moved by hand (session expiry)."""
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def port(loopback_port: int) -> int:
    """The service's port, known before it starts (its public URL names it)."""
    return loopback_port


@pytest.fixture
def callback(port: int) -> str:
    """The redirect URI the service's connects use."""
    return f"https://127.0.0.1:{port}/v1/oauth/callback"


@pytest.fixture
def provider(callback: str) -> Iterator[TokenServer]:
    """The loopback provider, with the service's callback registered for the client."""
    with TokenServer(clients={CLIENT: SECRET}, redirect_uris={CLIENT: [callback]}) as running:
        yield running


@pytest.fixture
def mgr(make_manager: Callable[..., CredentialManager], clock: ManualClock) -> CredentialManager:
    """A manager on each engine with a hand-moved clock."""
    return make_manager(clock=clock)


@pytest.fixture
def service(mgr: CredentialManager, serve_app: Callable[..., Any], port: int) -> Iterator[Any]:
    """The API on 127.0.0.1 over TLS, public at its own URL, allowing one return_to."""
    settings = ServerSettings(public_url=f"https://127.0.0.1:{port}", return_to=(RETURN_TO,))
    with serve_app(mgr, settings, port) as running:
        yield running


@pytest.fixture
def admin_token(mgr: CredentialManager, provider: TokenServer) -> str:
    """The admin's token; ``gh`` is stored, waiting for its first connect."""
    mgr.store(
        "gh",
        OAuth2(
            token_url=provider.url,
            authorization_url=provider.authorize_url,
            client_id=CLIENT,
            client_secret=SECRET,
            scope="read",
        ),
        principal=ADMIN,
    )
    return mgr.add_principal(ADMIN, principal=ADMIN)[1]


def start(service: Any, token: str, **body: Any) -> httpx.Response:
    """POST /v1/credentials/gh/connect."""
    return service.call("POST", "/v1/credentials/gh/connect", token, json=body)


def browse(service: Any, authorization_url: str) -> tuple[str, httpx.Response]:
    """Play the browser: the provider's consent redirects to the callback, which we follow
    without any credential of ours; the callback URL and the service's answer."""
    consent = httpx.get(authorization_url)
    assert 302 == consent.status_code
    location = consent.headers["Location"]
    return location, service.client.get(location)


def connected(service: Any, token: str, **body: Any) -> tuple[str, httpx.Response]:
    """Start a connect and follow it through the provider to the callback."""
    started = start(service, token, **body)
    assert 200 == started.status_code, started.text
    return browse(service, started.json()["authorization_url"])


def failures(mgr: CredentialManager) -> list[tuple[str, str, str | None]]:
    """Failed audit rows: (principal, action, error code)."""
    rows = mgr.audit_events(principal=ADMIN, outcome="failed")
    return [(e.principal, e.action, e.detail.get("error")) for e in rows]


def secrets_in(response: httpx.Response, location: str, mgr: CredentialManager) -> list[str]:
    """Which of the callback's state and code, and the stored tokens, the answer shows."""
    answer = response.text + str(response.headers)
    params = dict(httpx.URL(location).params)
    values = {name: params.get(name) for name in ("state", "code")}
    if mgr.info("gh", principal=ADMIN).state != State.CREATED:
        credential = mgr.get("gh", principal=ADMIN, as_type=OAuth2)
        for name, secret in (
            ("access", credential.access_token),
            ("refresh", credential.refresh_token),
        ):
            values[name] = secret.reveal() if secret is not None else None
    return [name for name, value in values.items() if value and value in answer]


def test_connect_over_https_activates_a_working_credential(
    service: Any, mgr: CredentialManager, admin_token: str, provider: TokenServer, callback: str
) -> None:
    """POST connect -> provider consent -> callback: ACTIVE, and a component's token works."""
    started = start(service, admin_token)
    body = started.json()
    _, page = browse(service, body["authorization_url"])
    _, worker = mgr.add_principal("worker", principal=ADMIN)
    mgr.grant("worker", "gh", {Permission.USE}, principal=ADMIN)
    material = service.call("POST", "/v1/credentials/gh/access", worker, json={}).json()
    assert ("no-store", callback, "gh", 200, "Connected") == (
        started.headers["cache-control"],
        body["redirect_uri"],
        body["credential_id"],
        page.status_code,
        page.text.split("<h1>")[1].split("</h1>")[0],
    )
    assert (State.ACTIVE, True) == (
        mgr.info("gh", principal=ADMIN).state,
        provider.is_valid(material["token"]),
    )
    assert datetime.fromisoformat(body["expires_at"]) - mgr.clock.now() == timedelta(minutes=10)


def test_the_page_is_locked_down_and_shows_no_secret(
    service: Any, mgr: CredentialManager, admin_token: str
) -> None:
    """The callback page: no state, code or token; no-store, no referrer, a CSP allowing nothing."""
    location, page = connected(service, admin_token)
    assert ([], "text/html; charset=utf-8", "no-store", "no-referrer") == (
        secrets_in(page, location, mgr),
        page.headers["content-type"],
        page.headers["cache-control"],
        page.headers["referrer-policy"],
    )
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


def test_a_replayed_callback_is_refused_and_changes_nothing(
    service: Any, mgr: CredentialManager, admin_token: str
) -> None:
    """The same callback again: 400, audited as state_reused, the version unchanged."""
    location, _ = connected(service, admin_token)
    version = mgr.info("gh", principal=ADMIN).version
    again = service.client.get(location)
    assert (400, version, ("system:oauth-callback", "connect", "AuthorizationFailed"), []) == (
        again.status_code,
        mgr.info("gh", principal=ADMIN).version,
        failures(mgr)[-1],
        secrets_in(again, location, mgr),
    )
    assert "already completed" in again.text


def test_a_forged_state_is_refused(
    service: Any, mgr: CredentialManager, admin_token: str, callback: str
) -> None:
    """A state no session has: 400, audited, still CREATED, the forged state not echoed."""
    start(service, admin_token)
    forged = f"{callback}?state=forged-state-4f1d9a&code=made-up-code-77aa"
    page = service.client.get(forged)
    assert (400, State.CREATED, 1, False, False) == (
        page.status_code,
        mgr.info("gh", principal=ADMIN).state,
        len(failures(mgr)),
        "forged-state-4f1d9a" in page.text,
        "made-up-code-77aa" in page.text,
    )


def test_access_denied_is_refused_and_changes_nothing(
    service: Any, mgr: CredentialManager, admin_token: str, provider: TokenServer
) -> None:
    """The user denies consent: 400 page saying so, audited under the admin, still CREATED."""
    provider.authorize_mode = "access_denied"
    location, page = connected(service, admin_token)
    assert (400, State.CREATED, (ADMIN, "connect", "AuthorizationFailed"), []) == (
        page.status_code,
        mgr.info("gh", principal=ADMIN).state,
        failures(mgr)[-1],
        secrets_in(page, location, mgr),
    )
    assert "denied" in page.text


def test_a_provider_that_refuses_the_code_is_a_502(
    service: Any, mgr: CredentialManager, admin_token: str, provider: TokenServer
) -> None:
    """The token endpoint refuses the code exchange: 502 page, still CREATED."""
    provider.fail_next(1, "invalid_grant")
    _, page = connected(service, admin_token)
    assert (502, State.CREATED) == (page.status_code, mgr.info("gh", principal=ADMIN).state)


def test_an_expired_session_is_refused(
    service: Any, mgr: CredentialManager, admin_token: str, clock: ManualClock
) -> None:
    """A callback ten minutes after the connect started: 400, still CREATED."""
    started = start(service, admin_token).json()
    clock.advance(minutes=10)
    _, page = browse(service, started["authorization_url"])
    assert (400, State.CREATED) == (page.status_code, mgr.info("gh", principal=ADMIN).state)
    assert "expired" in page.text


def test_an_allowed_return_to_gets_a_303_with_the_outcome_only(
    service: Any, mgr: CredentialManager, admin_token: str
) -> None:
    """return_to under the allow-list: 303 to it with credman_connect=ok and the id, no more."""
    location, answer = connected(service, admin_token, return_to=RETURN_TO + "/team-a?tab=2")
    assert (303, f"{RETURN_TO}/team-a?tab=2&credman_connect=ok&credential_id=gh", []) == (
        answer.status_code,
        answer.headers["location"],
        secrets_in(answer, location, mgr),
    )
    assert ("no-store", "no-referrer") == (
        answer.headers["cache-control"],
        answer.headers["referrer-policy"],
    )


def test_a_refused_callback_with_return_to_redirects_with_error(
    service: Any, mgr: CredentialManager, admin_token: str, provider: TokenServer
) -> None:
    """access_denied on a connect with return_to: 303 with credman_connect=error."""
    provider.authorize_mode = "access_denied"
    _, answer = connected(service, admin_token, return_to=RETURN_TO)
    assert (303, f"{RETURN_TO}?credman_connect=error&credential_id=gh", State.CREATED) == (
        answer.status_code,
        answer.headers["location"],
        mgr.info("gh", principal=ADMIN).state,
    )


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.example/connected",
        "https://app.example/connectedness",
        "https://app.example/connected/../admin",
        "http://app.example/connected",
        "https://app.example:8443/connected",
        "https://user@app.example/connected",
    ],
)
def test_a_return_to_outside_the_allow_list_is_a_400(
    return_to: str, service: Any, mgr: CredentialManager, admin_token: str
) -> None:
    """Another host, a longer segment, a dot segment, http, another port, user info: 400."""
    answer = start(service, admin_token, return_to=return_to)
    started = [e for e in mgr.audit_events(principal=ADMIN) if e.action == "connect"]
    assert (400, "application/problem+json", ["return_to"], []) == (
        answer.status_code,
        answer.headers["content-type"],
        answer.json()["fields"],
        started,
    )


def test_connect_needs_manage(service: Any, mgr: CredentialManager, admin_token: str) -> None:
    """A principal with use only gets the 403 every refusal gets."""
    _, worker = mgr.add_principal("worker", principal=ADMIN)
    mgr.grant("worker", "gh", {Permission.USE}, principal=ADMIN)
    assert 403 == start(service, worker).status_code


def test_without_a_public_url_connect_is_not_configured(
    mgr: CredentialManager, admin_token: str, serve_app: Callable[..., Any]
) -> None:
    """No [server] public_url: POST connect is a 501 problem naming the setting."""
    with serve_app(mgr, ServerSettings()) as bare:
        answer = start(bare, admin_token)
    assert (501, True) == (answer.status_code, "public_url" in answer.json()["detail"])


def test_the_clients_connect_and_complete(
    service: Any, mgr: CredentialManager, admin_token: str, callback: str
) -> None:
    """Client.connect and AsyncClient.connect return the session; its repr hides the state."""
    ca = str(service.ca_file)
    with Client(service.url, token=admin_token, verify=ca) as client:
        session = client.connect("gh", scope="read write", return_to=RETURN_TO)
        with pytest.raises(CredentialValidationError, match="return_to"):
            client.connect("gh", return_to="https://evil.example/")

    async def run() -> Any:
        async with AsyncClient(service.url, token=admin_token, verify=ca) as client:
            return await client.connect("gh")

    other = asyncio.run(run())
    state = dict(httpx.URL(session.authorization_url).params)["state"]
    _, answer = browse(service, session.authorization_url)
    assert ("gh", callback, callback, False, 303, State.ACTIVE) == (
        session.credential_id,
        session.redirect_uri,
        other.redirect_uri,
        state in repr(session),
        answer.status_code,
        mgr.info("gh", principal=ADMIN).state,
    )
