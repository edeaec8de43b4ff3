"""The HTTP service over real uvicorn with TLS on loopback: identity, least privilege, errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from credman import ApiKey, BearerToken, CredentialManager, OAuth2, Permission
from credman.clock import ManualClock
from credman.server import ServerSettings
from credman.testing.provider import TokenServer

ADMIN = "admin"


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test moves by hand."""
    return ManualClock(datetime.now(UTC))


@pytest.fixture
def mgr(make_manager: Callable[..., CredentialManager], clock: ManualClock) -> CredentialManager:
    """A manager on each engine whose clock the test moves."""
    return make_manager(clock=clock)


@pytest.fixture
def service(mgr: CredentialManager, serve_app: Callable[..., Any]) -> Iterator[Any]:
    """The HTTP API over ``mgr`` on 127.0.0.1 with TLS from a test CA."""
    with serve_app(mgr) as running:
        yield running


@pytest.fixture
def worker(mgr: CredentialManager) -> str:
    """The token of ``sync-worker``, which may use ``github-*``."""
    _, token = mgr.add_principal("sync-worker", principal=ADMIN)
    mgr.grant("sync-worker", "github-*", {Permission.USE}, principal=ADMIN)
    return token


@pytest.fixture
def admin_token(mgr: CredentialManager) -> str:
    """The token of the configured admin principal."""
    return mgr.add_principal(ADMIN, principal=ADMIN)[1]


def _store_keys(mgr: CredentialManager, canary: Callable[[str], str]) -> tuple[str, str]:
    github, stripe = canary("github"), canary("stripe")
    mgr.store("github-x", BearerToken(token=github), principal=ADMIN)
    mgr.store(
        "stripe", ApiKey(key=stripe, header="Authorization", prefix="Bearer "), principal=ADMIN
    )
    return github, stripe


def test_use_principal_gets_its_material_over_https(
    service: Any, mgr: CredentialManager, worker: str, canary: Callable[[str], str]
) -> None:
    """A component with use on github-* gets github-x's headers, not cacheable."""
    github, _ = _store_keys(mgr, canary)
    response = service.call("POST", "/v1/credentials/github-x/access", worker, json={})
    assert 200 == response.status_code
    assert {"Authorization": f"Bearer {github}"} == response.json()["headers"]
    assert "github-x" == response.json()["credential_id"]
    assert "no-store" == response.headers["cache-control"]


def test_forbidden_and_missing_ids_get_the_same_403(
    service: Any, mgr: CredentialManager, worker: str, canary: Callable[[str], str]
) -> None:
    """stripe (exists, not granted) and nope (does not exist) answer byte-identical 403s."""
    _, stripe = _store_keys(mgr, canary)
    forbidden = service.call("POST", "/v1/credentials/stripe/access", worker)
    missing = service.call("POST", "/v1/credentials/nope/access", worker)
    assert (403, 403) == (forbidden.status_code, missing.status_code)
    assert forbidden.content == missing.content
    assert "application/problem+json" == forbidden.headers["content-type"]
    assert stripe not in forbidden.text


def test_denial_is_audited_under_the_authenticated_name_with_request_id(
    service: Any, mgr: CredentialManager, worker: str, canary: Callable[[str], str]
) -> None:
    """The 403 for stripe is an audit row of sync-worker carrying the request's id and peer."""
    _store_keys(mgr, canary)
    response = service.call(
        "POST", "/v1/credentials/stripe/access", worker, headers={"X-Request-Id": "req-12345678"}
    )
    assert "req-12345678" == response.headers["x-request-id"]
    denied = mgr.audit_events(principal=ADMIN, outcome="denied", credential_id="stripe")
    assert ["sync-worker"] == [event.principal for event in denied]
    assert "req-12345678" == denied[0].detail["request_id"]
    assert denied[0].detail["peer"].startswith("127.0.0.1:")


def _changed(token: str) -> str:
    position = token.index("_", 4) + 3  # a character of the secret part
    replacement = "A" if token[position] != "A" else "B"
    return token[:position] + replacement + token[position + 1 :]


@pytest.mark.parametrize("case", ["none", "malformed", "changed", "expired", "revoked", "basic"])
def test_bad_tokens_get_401_audited_and_nothing(
    case: str,
    service: Any,
    mgr: CredentialManager,
    clock: ManualClock,
    canary: Callable[[str], str],
) -> None:
    """No token, a malformed one, one changed character, expired, revoked: 401, audited."""
    github, _ = _store_keys(mgr, canary)
    _, token = mgr.add_principal("sync-worker", expires_in=3600, principal=ADMIN)
    mgr.grant("sync-worker", "github-*", {Permission.USE}, principal=ADMIN)
    headers: dict[str, str] = {}
    if case == "malformed":
        headers["Authorization"] = "Bearer cmp_not-a-token"
    elif case == "changed":
        headers["Authorization"] = f"Bearer {_changed(token)}"
    elif case == "basic":
        headers["Authorization"] = "Basic c3luYy13b3JrZXI6eA=="
    elif case in ("expired", "revoked"):
        headers["Authorization"] = f"Bearer {token}"
        if case == "expired":
            clock.advance(seconds=3601)
        else:
            mgr.revoke_principal("sync-worker", principal=ADMIN)
    response = service.call("POST", "/v1/credentials/github-x/access", headers=headers)
    assert 401 == response.status_code
    assert 'Bearer realm="credman"' == response.headers["www-authenticate"]
    assert github not in response.text and token not in response.text
    refused = mgr.audit_events(principal=ADMIN, subject="anonymous", outcome="denied")
    assert ["authenticate"] == [event.action for event in refused]


def test_changed_character_is_audited_by_reason(
    service: Any, mgr: CredentialManager, worker: str
) -> None:
    """A token with a wrong secret but a right id is audited as such, with its public id."""
    forged = _changed(worker)
    service.call("GET", "/v1/credentials", forged)
    (event,) = mgr.audit_events(principal=ADMIN, subject="anonymous")
    assert event.detail["reason"] in {"malformed", "wrong_secret"}
    assert worker not in json.dumps(dict(event.detail))


def test_revoke_takes_effect_on_the_next_request(
    service: Any, mgr: CredentialManager, worker: str
) -> None:
    """A request after the revoke is refused, though the one before it succeeded."""
    assert 200 == service.call("GET", "/v1/credentials", worker).status_code
    mgr.revoke_principal("sync-worker", principal=ADMIN)
    assert 401 == service.call("GET", "/v1/credentials", worker).status_code


def test_rotation_retires_the_old_token(service: Any, mgr: CredentialManager, worker: str) -> None:
    """After rotate, the old token is refused and the new one works."""
    _, new = mgr.rotate_principal("sync-worker", principal=ADMIN)
    assert 401 == service.call("GET", "/v1/credentials", worker).status_code
    assert 200 == service.call("GET", "/v1/credentials", new).status_code


def test_repeated_failures_lock_out_with_429(
    service: Any, mgr: CredentialManager, worker: str
) -> None:
    """Past the limit a token id gets 429 with Retry-After, even with the right secret."""
    mgr.configure_auth_throttle(max_failures=3, lockout=120)
    for _ in range(3):
        assert 401 == service.call("GET", "/v1/credentials", _changed(worker)).status_code
    locked = service.call("GET", "/v1/credentials", worker)
    assert 429 == locked.status_code
    assert 1 <= int(locked.headers["retry-after"]) <= 120
    lockouts = mgr.audit_events(principal=ADMIN, subject="anonymous")
    assert "lockout" in {event.action for event in lockouts}


def test_lockout_ends_after_its_time(
    service: Any, mgr: CredentialManager, worker: str, clock: ManualClock
) -> None:
    """When the lockout has passed, the right token works again."""
    mgr.configure_auth_throttle(max_failures=2, lockout=60)
    for _ in range(2):
        service.call("GET", "/v1/credentials", _changed(worker))
    clock.advance(seconds=61)
    assert 200 == service.call("GET", "/v1/credentials", worker).status_code


SECRET_ROUTES = [
    ("GET", "/v1/credentials"),
    ("GET", "/v1/credentials/github-oauth"),
    ("GET", "/v1/credentials/github-oauth/history"),
    ("POST", "/v1/credentials/github-oauth/access"),
    ("GET", "/v1/credentials/github-oauth/secret"),
    ("POST", "/v1/credentials/github-oauth/refresh"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/grants"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
]


def test_use_principal_never_sees_refresh_token_or_client_secret(
    service: Any,
    mgr: CredentialManager,
    worker: str,
    canary: Callable[[str], str],
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """No route hands a use principal the refresh token or the client secret."""
    refresh_canary = canary("refresh")
    server_grant = oauth_credential(server)
    credential = OAuth2(
        **{
            **server_grant.model_dump(),
            "client_secret": server_grant.client_secret.reveal(),
            "refresh_token": refresh_canary,
            "access_token": canary("access"),
            "expires_in": 3600,
        }
    )
    mgr.store("github-oauth", credential, principal=ADMIN)
    bodies = [service.call(m, p, worker).text for m, p in SECRET_ROUTES]
    assert all(refresh_canary not in body for body in bodies)
    assert all(server_grant.client_secret.reveal() not in body for body in bodies)


BAD_INPUT: list[tuple[str, str, Any, str]] = [
    ("POST", "/v1/credentials/github-x/access", {"min_ttl": "soon"}, "min_ttl"),
    ("POST", "/v1/credentials/github-x/access", {"min_ttl": -1}, "min_ttl"),
    ("POST", "/v1/credentials/github-x/access", {"rejected_version": 0}, "rejected_version"),
    ("POST", "/v1/credentials/github-x/access", {"surprise": 1}, "surprise"),
    ("POST", "/v1/credentials/github-x/access", [1, 2], "body"),
    ("PUT", "/v1/credentials/new-one", {"type": "nonsense"}, "type"),
    ("PUT", "/v1/credentials/new-one", {"type": "bearer"}, "token"),
    ("PUT", "/v1/credentials/new-one", {"type": "api_key", "key": "k", "bogus": 1}, "bogus"),
    ("PUT", "/v1/credentials/bad id!", {"type": "bearer", "token": "t"}, "credential_id"),
    ("POST", "/v1/credentials/github-x/refresh", {"force": "maybe"}, "force"),
    ("POST", "/v1/credentials/github-x/revoke", {"reason": 7}, "reason"),
    ("POST", "/v1/grants", {"principal": "p", "pattern": "x"}, "permissions"),
    (
        "POST",
        "/v1/grants",
        {"principal": "p", "pattern": "x", "permissions": ["fly"]},
        "permissions",
    ),
    (
        "POST",
        "/v1/grants",
        {"principal": "no way", "pattern": "x", "permissions": ["use"]},
        "principal",
    ),
    ("DELETE", "/v1/grants?principal=p", None, "pattern"),
    ("GET", "/v1/audit?limit=0", None, "limit"),
    ("GET", "/v1/audit?principal=bad%20name", None, "principal"),
    ("GET", "/v1/credentials/bad%20id", None, "credential_id"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD_INPUT)
def test_bad_input_is_a_problem_naming_the_field_and_writes_nothing(
    method: str,
    path: str,
    body: Any,
    field: str,
    service: Any,
    mgr: CredentialManager,
    admin_token: str,
    canary: Callable[[str], str],
) -> None:
    """Each bad input is a 4xx problem+json that names the field; no credential or grant changes."""
    _store_keys(mgr, canary)
    before = (mgr.list(principal=ADMIN), mgr.grants(principal=ADMIN))
    kwargs = {} if body is None else {"json": body}
    response = service.call(method, path, admin_token, **kwargs)
    assert 400 <= response.status_code < 500
    assert "application/problem+json" == response.headers["content-type"]
    assert field in response.json()["detail"]
    assert before == (mgr.list(principal=ADMIN), mgr.grants(principal=ADMIN))


def test_body_over_the_limit_is_413(
    mgr: CredentialManager, serve_app: Callable[..., Any], admin_token: str
) -> None:
    """A body longer than max_body_bytes is refused before it is parsed."""
    with serve_app(mgr, ServerSettings(max_body_bytes=2048)) as service:
        response = service.call(
            "PUT", "/v1/credentials/big", admin_token, json={"type": "bearer", "token": "x" * 4096}
        )
    assert 413 == response.status_code
    assert [] == mgr.list(principal=ADMIN)


def test_manage_routes_store_refresh_and_revoke(
    service: Any, mgr: CredentialManager, admin_token: str, canary: Callable[[str], str]
) -> None:
    """PUT stores, info shows it without secrets, revoke revokes it."""
    token = canary("put")
    stored = service.call(
        "PUT", "/v1/credentials/svc", admin_token, json={"type": "bearer", "token": token}
    )
    assert (200, 1) == (stored.status_code, stored.json()["version"])
    info = service.call("GET", "/v1/credentials/svc", admin_token)
    assert "ACTIVE" == info.json()["state"] and token not in info.text
    revoked = service.call("POST", "/v1/credentials/svc/revoke", admin_token, json={"reason": "r"})
    assert "REVOKED" == revoked.json()["state"]
    again = service.call("POST", "/v1/credentials/svc/revoke", admin_token)
    assert 409 == again.status_code
    problem = again.json()  # which conflict, in members a client reads without parsing text
    assert ("InvalidTransition", "REVOKED", "revoke") == (
        problem["error"],
        problem["state"],
        problem["trigger"],
    )


def test_grants_can_be_added_listed_and_removed_by_an_admin_only(
    service: Any, mgr: CredentialManager, admin_token: str, worker: str
) -> None:
    """POST/GET/DELETE /v1/grants work for an admin; a use principal gets 403."""
    body = {"principal": "etl", "pattern": "erp", "permissions": ["use"]}
    assert 200 == service.call("POST", "/v1/grants", admin_token, json=body).status_code
    listed = service.call("GET", "/v1/grants?principal=etl", admin_token).json()
    assert [("etl", "erp", ["use"])] == [
        (g["principal"], g["pattern"], g["permissions"]) for g in listed
    ]
    assert 403 == service.call("POST", "/v1/grants", worker, json=body).status_code
    removed = service.call("DELETE", "/v1/grants?principal=etl&pattern=erp", admin_token)
    assert {"removed": True} == removed.json()


def test_audit_routes_need_audit(
    service: Any, mgr: CredentialManager, admin_token: str, worker: str
) -> None:
    """The audit trail, its verification and head answer an admin and refuse a use principal."""
    assert True is service.call("GET", "/v1/audit/verify", admin_token).json()["ok"]
    head = service.call("GET", "/v1/audit/head", admin_token).json()
    assert head["seq"] >= 1
    assert 403 == service.call("GET", "/v1/audit/verify", worker).status_code
    assert 403 == service.call("GET", "/v1/audit", worker).status_code


def test_health_readiness_and_metrics(service: Any, worker: str) -> None:
    """healthz and readyz answer without a token; metrics count requests by route template."""
    assert 200 == service.call("GET", "/healthz").status_code
    assert 200 == service.call("GET", "/readyz").status_code
    service.call("GET", "/v1/credentials/github-a", worker)
    text = service.call("GET", "/metrics").text
    assert 'route="/v1/credentials/{credential_id:path}"' in text
    assert "github-a" not in text


def test_the_401_path_refreshes_once_per_rejected_version(
    service: Any,
    mgr: CredentialManager,
    worker: str,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """rejected_version refreshes once; a second report of the same version does not.

    The stored material comes from an operator (a refresh moments ago would be protected by
    the forced-refresh interval)."""
    credential = oauth_credential(server, access_token="stored-at", expires_in=3600)
    mgr.store("github-o", credential, principal=ADMIN)
    first = service.call("POST", "/v1/credentials/github-o/access", worker).json()
    url = "/v1/credentials/github-o/access"
    body = {"rejected_version": first["version"]}
    moved = service.call("POST", url, worker, json=body).json()
    again = service.call("POST", url, worker, json=body).json()
    assert moved["version"] > first["version"]
    assert moved["version"] == again["version"]
    assert moved["headers"] != first["headers"]


def test_storage_down_is_503(
    service: Any, mgr: CredentialManager, worker: str, database_url: str
) -> None:
    """When the database cannot answer, requests and readiness get 503, not 500."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE credential RENAME TO credential_gone"))
        connection.execute(text("ALTER TABLE audit_head RENAME TO audit_head_gone"))
    engine.dispose()
    listed = service.call("GET", "/v1/credentials", worker)
    assert (503, "application/problem+json") == (listed.status_code, listed.headers["content-type"])
    assert 503 == service.call("GET", "/readyz").status_code


def test_the_whole_credential_needs_read(
    service: Any, mgr: CredentialManager, worker: str, canary: Callable[[str], str]
) -> None:
    """GET .../secret is 403 for use and answers a read principal, never cacheable."""
    github, _ = _store_keys(mgr, canary)
    assert 403 == service.call("GET", "/v1/credentials/github-x/secret", worker).status_code
    _, reader = mgr.add_principal("exporter", principal=ADMIN)
    mgr.grant("exporter", "github-x", {Permission.READ}, principal=ADMIN)
    response = service.call("GET", "/v1/credentials/github-x/secret", reader)
    assert ("bearer", github) == (response.json()["type"], response.json()["token"])
    assert "no-store" == response.headers["cache-control"]


def test_unix_socket_serves_the_same_api(
    mgr: CredentialManager, worker: str, tmp_path: Path, canary: Callable[[str], str]
) -> None:
    """Over --uds a component gets its material; audit rows name the peer 'unix'."""
    import threading

    import httpx
    import uvicorn

    from credman.server import create_app

    github, _ = _store_keys(mgr, canary)
    path = tmp_path / "credman.sock"
    server = uvicorn.Server(uvicorn.Config(create_app(mgr), uds=str(path), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.02)
    transport = httpx.HTTPTransport(uds=str(path))
    try:
        with httpx.Client(transport=transport, base_url="http://credman") as client:
            auth = {"Authorization": f"Bearer {worker}"}
            got = client.post("/v1/credentials/github-x/access", headers=auth)
            client.post("/v1/credentials/stripe/access", headers=auth)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert f"Bearer {github}" == got.json()["headers"]["Authorization"]
    (denied,) = mgr.audit_events(principal=ADMIN, outcome="denied", credential_id="stripe")
    assert "unix" == denied.detail["peer"]
