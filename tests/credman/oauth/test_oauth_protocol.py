"""OAuth2 token requests: building, parsing, sending, and backing off (credman.oauth)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from credman import CredentialValidationError, JWTBearer, OAuth2, RefreshFailed
from credman.oauth import (
    JWT_BEARER_GRANT,
    TokenGrant,
    TokenRequest,
    arequest_token,
    backoff_delay,
    build_token_request,
    next_retry_delay,
    parse_token_response,
    request_token,
)
from credman.testing.provider import TokenServer

NOW = datetime(2024, 1, 1, tzinfo=UTC)
TOKEN_URL = "http://127.0.0.1:9/token"
CLIENT_ID = "app"
CLIENT_SECRET = "client-secret-canary-7f3a"
REFRESH_TOKEN = "refresh-token-canary-91c2"
ACCESS_TOKEN = "access-token-canary-55d0"
HS_SECRET = "hs256-shared-secret-canary-0123456789abcdef"
CANARIES = (CLIENT_SECRET, REFRESH_TOKEN, ACCESS_TOKEN, HS_SECRET)


def oauth2(**overrides: Any) -> OAuth2:
    fields: dict[str, Any] = {
        "token_url": TOKEN_URL,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
    }
    return OAuth2(**(fields | overrides))


def jwt_bearer(private_pem: str, **overrides: Any) -> JWTBearer:
    fields: dict[str, Any] = {
        "token_url": TOKEN_URL,
        "issuer": "svc@example",
        "subject": "svc@example",
        "audience": TOKEN_URL,
        "private_key": private_pem,
        "algorithm": "ES256",
        "assertion_lifetime": 300,
    }
    return JWTBearer(**(fields | overrides))


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def parse_failure(
    status: int, payload: bytes, headers: dict[str, str] | None = None
) -> RefreshFailed:
    with pytest.raises(RefreshFailed) as caught:
        parse_token_response(status, headers or {}, payload, now=NOW)
    return caught.value


def assert_no_canary(text: str) -> None:
    assert [] == [canary for canary in CANARIES if canary in text]


@pytest.fixture(scope="module")
def ec_key() -> tuple[str, str]:
    """An ES256 key pair as (private PEM, public PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private.decode(), public.decode()


# -- build_token_request ---------------------------------------------------------------


def test_refresh_grant_with_client_secret_post_puts_the_client_in_the_form() -> None:
    """client_secret_post sends grant, refresh token, client id and secret as form fields."""
    request = build_token_request(oauth2(), now=NOW)
    expected = {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH_TOKEN,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert expected == request.form
    assert {"Accept": "application/json"} == request.headers
    assert TOKEN_URL == request.url


def test_refresh_grant_sends_the_scope_when_set() -> None:
    """A scope on the credential becomes the scope form field."""
    request = build_token_request(oauth2(scope="repo read:org"), now=NOW)
    assert "repo read:org" == request.form["scope"]


def test_public_client_sends_only_its_id() -> None:
    """Without a client secret, client_secret_post sends the client id alone."""
    request = build_token_request(oauth2(client_secret=None), now=NOW)
    assert {"grant_type", "refresh_token", "client_id"} == set(request.form)


def test_client_secret_basic_form_urlencodes_before_base64() -> None:
    """The Basic header follows RFC 6749 §2.3.1 and the form carries no client secret."""
    credential = oauth2(
        client_id="my app:1", client_secret="p@ss w:rd+", client_auth="client_secret_basic"
    )
    request = build_token_request(credential, now=NOW)
    scheme, encoded = request.headers["Authorization"].split(" ")
    decoded = base64.b64decode(encoded).decode()
    assert "Basic" == scheme
    assert "my+app%3A1:p%40ss+w%3Ard%2B" == decoded
    assert ["my app:1", "p@ss w:rd+"] == [unquote_plus(part) for part in decoded.split(":")]
    assert {"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN} == request.form


def test_client_credentials_grant_with_post() -> None:
    """client_credentials sends its grant type, scope and client authentication."""
    credential = oauth2(grant_type="client_credentials", refresh_token=None, scope="read")
    request = build_token_request(credential, now=NOW)
    expected = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "read",
    }
    assert expected == request.form


def test_client_credentials_grant_with_basic() -> None:
    """client_credentials with client_secret_basic authenticates in the header only."""
    credential = oauth2(
        grant_type="client_credentials", refresh_token=None, client_auth="client_secret_basic"
    )
    request = build_token_request(credential, now=NOW)
    assert {"grant_type": "client_credentials"} == request.form
    assert request.headers["Authorization"].startswith("Basic ")


def test_refresh_grant_without_refresh_token_fails_permanently() -> None:
    """A refresh_token credential holding only an access token cannot be refreshed."""
    credential = oauth2(refresh_token=None, access_token=ACCESS_TOKEN)
    with pytest.raises(RefreshFailed) as caught:
        build_token_request(credential, now=NOW)
    assert (True, "no_refresh_token") == (caught.value.permanent, caught.value.error_code)


def test_jwt_bearer_assertion_carries_rfc7523_claims(ec_key: tuple[str, str]) -> None:
    """The assertion verifies with the public key and holds iss, sub, aud, iat, exp, jti."""
    private_pem, public_pem = ec_key
    request = build_token_request(jwt_bearer(private_pem, subject="user-1"), now=NOW)
    claims = jwt.decode(
        request.form["assertion"],
        public_pem,
        algorithms=["ES256"],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_iat": False},
    )
    issued_at = int(NOW.timestamp())
    expected = {"iss": "svc@example", "sub": "user-1", "aud": TOKEN_URL, "iat": issued_at}
    assert expected | {"exp": issued_at + 300} == {k: v for k, v in claims.items() if k != "jti"}
    assert 32 == len(claims["jti"])
    assert JWT_BEARER_GRANT == request.form["grant_type"]


def test_jwt_bearer_sets_kid_only_when_key_id_is_set(ec_key: tuple[str, str]) -> None:
    """The JWT header names the key id when the credential has one."""
    with_kid = build_token_request(jwt_bearer(ec_key[0], key_id="k-1"), now=NOW)
    without = build_token_request(jwt_bearer(ec_key[0]), now=NOW)
    assert "k-1" == jwt.get_unverified_header(with_kid.form["assertion"])["kid"]
    assert "kid" not in jwt.get_unverified_header(without.form["assertion"])


def test_jwt_bearer_assertions_have_fresh_jtis(ec_key: tuple[str, str]) -> None:
    """Two assertions built at the same instant differ in jti, so neither is a replay."""
    credential = jwt_bearer(ec_key[0])
    first, second = (build_token_request(credential, now=NOW) for _ in range(2))
    claims = [
        jwt.decode(r.form["assertion"], options={"verify_signature": False})
        for r in (first, second)
    ]
    assert claims[0]["jti"] != claims[1]["jti"]


def test_jwt_bearer_with_hs256_and_scope() -> None:
    """An HS256 credential signs with its shared secret and sends its scope."""
    credential = jwt_bearer(HS_SECRET, algorithm="HS256", scope="read")
    request = build_token_request(credential, now=NOW)
    claims = jwt.decode(
        request.form["assertion"],
        HS_SECRET,
        algorithms=["HS256"],
        audience=TOKEN_URL,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert "svc@example" == claims["iss"]
    assert "read" == request.form["scope"]


def test_jwt_bearer_with_unloadable_key_is_refused_when_built() -> None:
    """A private key that does not load is refused at construction, naming the field only."""
    pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    with pytest.raises(CredentialValidationError) as caught:
        jwt_bearer(pem)
    assert ("private_key" in str(caught.value), "AAAA" in str(caught.value)) == (True, False)


@pytest.mark.parametrize("client_auth", ["client_secret_post", "client_secret_basic"])
def test_token_request_repr_masks_secrets(client_auth: str) -> None:
    """TokenRequest's repr shows the field names but no form value and no Authorization."""
    request = build_token_request(oauth2(client_auth=client_auth), now=NOW)
    text = repr(request)
    assert_no_canary(text)
    assert "Basic " not in text
    assert "refresh_token" in text


def test_token_request_repr_masks_the_jwt_assertion(ec_key: tuple[str, str]) -> None:
    """The signed assertion (a bearer secret itself) does not appear in the repr."""
    request = build_token_request(jwt_bearer(ec_key[0]), now=NOW)
    assert request.form["assertion"] not in repr(request)
    assert request.form["assertion"] not in str(request)


# -- parse_token_response --------------------------------------------------------------


def test_successful_response_becomes_a_grant() -> None:
    """A 200 with a token yields every field of the grant."""
    payload = {
        "access_token": ACCESS_TOKEN,
        "refresh_token": REFRESH_TOKEN,
        "expires_in": 3600,
        "token_type": "bearer",
        "scope": "read",
    }
    grant = parse_token_response(200, {}, body(payload), now=NOW)
    assert ACCESS_TOKEN == grant.access_token.reveal()
    assert REFRESH_TOKEN == (grant.refresh_token and grant.refresh_token.reveal())
    assert (3600, "Bearer", "read") == (grant.expires_in, grant.token_type, grant.scope)


def test_minimal_response_gets_defaults() -> None:
    """Without the optional fields there is no refresh token, no expiry and a Bearer type."""
    grant = parse_token_response(200, {}, body({"access_token": ACCESS_TOKEN}), now=NOW)
    assert (None, None, "Bearer", None) == (
        grant.refresh_token,
        grant.expires_in,
        grant.token_type,
        grant.scope,
    )


@pytest.mark.parametrize("refresh_token", ["", "   ", 42, None, ["x"]])
def test_refresh_token_is_taken_only_when_a_non_empty_string(refresh_token: object) -> None:
    """An empty or non-string refresh_token counts as absent (so the old one is kept)."""
    payload = {"access_token": ACCESS_TOKEN, "refresh_token": refresh_token}
    assert None is parse_token_response(200, {}, body(payload), now=NOW).refresh_token


def test_token_grant_repr_masks_tokens() -> None:
    """TokenGrant's repr shows neither token."""
    payload = {"access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN}
    assert_no_canary(repr(parse_token_response(200, {}, body(payload), now=NOW)))


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("3600", 3600),
        ('"3600"', 3600),
        ('" 120 "', 120),
        ("3600.7", 3600),
        ('"59.9"', 59),
        ("315360000", 315360000),
        ("315360001", None),
        (str(10**30), None),
        ("0", None),
        ('"0"', None),
        ("0.5", None),
        ("-5", None),
        ('"-5"', None),
        ('"soon"', None),
        ('"1e3"', None),
        ("null", None),
        ("true", None),
        ("Infinity", None),
        ("NaN", None),
        ("[3600]", None),
    ],
)
def test_expires_in_edge_cases(fragment: str, expected: int | None) -> None:
    """expires_in is whole positive seconds up to ten years; anything else counts as missing."""
    raw = f'{{"access_token": "{ACCESS_TOKEN}", "expires_in": {fragment}}}'.encode()
    assert expected == parse_token_response(200, {}, raw, now=NOW).expires_in


RATE = {"Retry-After": "3"}
CLASSIFICATION = [
    # status, headers, body, permanent, error_code, retry_after
    (400, {}, body({"error": "invalid_grant"}), True, "invalid_grant", None),
    (401, {}, body({"error": "invalid_client"}), True, "invalid_client", None),
    (400, {}, body({"error": "unauthorized_client"}), True, "unauthorized_client", None),
    (400, {}, body({"error": "invalid_request"}), True, "invalid_request", None),
    (400, {}, body({"error": "invalid_scope"}), True, "invalid_scope", None),
    (400, {}, body({"error": "unsupported_grant_type"}), True, "unsupported_grant_type", None),
    (400, {}, body({"error": "bad code!"}), True, "invalid_response", None),
    (400, {}, body({"error": "x" * 65}), True, "invalid_response", None),
    (403, {}, b"", True, "http_403", None),
    (404, {}, b"<html>not found</html>", True, "http_404", None),
    (400, {}, body({"error": "temporarily_unavailable"}), False, "temporarily_unavailable", None),
    (408, {}, b"", False, "http_408", None),
    (429, RATE, body({"error": "slow_down"}), False, "slow_down", 3.0),
    (429, {"retry-after": "3"}, b"", False, "http_429", 3.0),
    (429, {}, b"", False, "http_429", None),
    (429, {"Retry-After": "999999"}, b"", False, "http_429", 86400.0),
    (429, {"Retry-After": "soon"}, b"", False, "http_429", None),
    (429, {"Retry-After": "-3"}, b"", False, "http_429", None),
    (
        503,
        {"Retry-After": "7"},
        body({"error": "temporarily_unavailable"}),
        False,
        "temporarily_unavailable",
        7.0,
    ),
    (500, {}, b"internal error", False, "http_500", None),
    (502, {}, b"<html>bad gateway</html>", False, "http_502", None),
    (302, {"Location": "https://elsewhere"}, b"", False, "http_302", None),
    (200, {}, b"<html><body>Sign in</body></html>", False, "invalid_response", None),
    (200, {}, b'{"access_token": ', False, "invalid_response", None),
    (200, {}, b'["access_token"]', False, "invalid_response", None),
    (200, {}, b"\xff\xfe{}", False, "invalid_response", None),
    (200, {}, b"[" * 100_000, False, "invalid_response", None),
    (200, {}, body({"error": "server_error"}), False, "server_error", None),
    (200, {}, body({"access_token": ACCESS_TOKEN, "error": "x"}), False, "invalid_response", None),
    (200, {}, body({}), False, "invalid_response", None),
    (200, {}, body({"access_token": ""}), False, "invalid_response", None),
    (200, {}, body({"access_token": 123}), False, "invalid_response", None),
]


@pytest.mark.parametrize(
    ("status", "headers", "payload", "permanent", "error_code", "retry_after"), CLASSIFICATION
)
def test_failure_classification(
    status: int,
    headers: dict[str, str],
    payload: bytes,
    permanent: bool,
    error_code: str,
    retry_after: float | None,
) -> None:
    """Each response that is not a usable token is a RefreshFailed classified per DESIGN §5."""
    failure = parse_failure(status, payload, headers)
    assert (permanent, error_code, retry_after) == (
        failure.permanent,
        failure.error_code,
        failure.retry_after,
    )


def test_body_over_the_limit_is_transient_even_if_valid() -> None:
    """A body larger than max_body is refused unparsed, as a transient failure."""
    raw = body({"access_token": ACCESS_TOKEN, "padding": "a" * 100})
    with pytest.raises(RefreshFailed) as caught:
        parse_token_response(200, {}, raw, now=NOW, max_body=50)
    assert (False, "invalid_response") == (caught.value.permanent, caught.value.error_code)


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("Mon, 01 Jan 2024 00:00:30 GMT", 30.0),
        ("Sun, 31 Dec 2023 23:00:00 GMT", 0.0),
        ("Fri, 01 Mar 2024 00:00:00 GMT", 86400.0),
        ("Monday, 01-Jan-24 00:00:30 GMT", 30.0),
        ("Mon Jan  1 00:00:30 2024", 30.0),
        ("Mon, 01 Jan 2024 01:00:30 +0100", 30.0),
        ("yesterday", None),
        ("", None),
    ],
)
def test_retry_after_http_date_is_relative_to_now(retry_after: str, expected: float | None) -> None:
    """An HTTP-date Retry-After becomes seconds after ``now``, clamped to [0, 86400]."""
    failure = parse_failure(503, b"", {"Retry-After": retry_after})
    assert expected == failure.retry_after


def test_retry_after_is_ignored_on_other_statuses() -> None:
    """Only 429 and 503 carry retry_after."""
    assert None is parse_failure(500, b"", {"Retry-After": "5"}).retry_after


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (400, body({"error": "invalid_grant", "error_description": f"token {REFRESH_TOKEN}"})),
        (401, body({"error": f"bad secret {CLIENT_SECRET}"})),
        (500, f"secret={CLIENT_SECRET}".encode()),
        (200, body({"error": "server_error", "access_token": ACCESS_TOKEN})),
        (200, f"<html>{ACCESS_TOKEN}</html>".encode()),
        (429, body({"error": "slow_down", "error_description": HS_SECRET})),
    ],
)
def test_failure_messages_never_echo_the_body(status: int, payload: bytes) -> None:
    """No secret from the response body reaches the error's message, args or repr."""
    failure = parse_failure(status, payload)
    assert_no_canary(f"{failure} {failure.args!r} {failure!r} {failure.error_code}")


def test_failure_message_names_status_and_code() -> None:
    """The message says what happened: the HTTP status and the OAuth error code."""
    message = str(parse_failure(400, body({"error": "invalid_grant"})))
    assert (True, True) == ("400" in message, "invalid_grant" in message)


# -- request_token against a real token endpoint ---------------------------------------


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(clients={CLIENT_ID: CLIENT_SECRET}, slow_seconds=5.0) as running:
        yield running


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as http:
        yield http


def refreshing(server: TokenServer, **overrides: Any) -> OAuth2:
    return oauth2(token_url=server.url, refresh_token=server.grant(CLIENT_ID), **overrides)


def request_failure(client: httpx.Client, credential: OAuth2, **options: Any) -> RefreshFailed:
    with pytest.raises(RefreshFailed) as caught:
        request_token(client, credential, now=NOW, **options)
    return caught.value


@pytest.mark.parametrize("client_auth", ["client_secret_post", "client_secret_basic"])
def test_refresh_grant_against_the_server(
    server: TokenServer, client: httpx.Client, client_auth: str
) -> None:
    """A refresh returns a valid access token and a rotated refresh token."""
    credential = refreshing(server, client_auth=client_auth)
    grant = request_token(client, credential, now=NOW)
    assert True is server.is_valid(grant.access_token.reveal())
    assert grant.refresh_token is not None
    assert grant.refresh_token != credential.refresh_token
    assert (3600, "Bearer") == (grant.expires_in, grant.token_type)


@pytest.mark.parametrize("client_auth", ["client_secret_post", "client_secret_basic"])
def test_client_credentials_grant_against_the_server(
    server: TokenServer, client: httpx.Client, client_auth: str
) -> None:
    """client_credentials yields a valid access token and no refresh token."""
    credential = oauth2(
        token_url=server.url,
        grant_type="client_credentials",
        refresh_token=None,
        client_auth=client_auth,
        scope="read",
    )
    grant = request_token(client, credential, now=NOW)
    assert True is server.is_valid(grant.access_token.reveal())
    assert (None, "read") == (grant.refresh_token, grant.scope)


def test_jwt_bearer_grant_against_the_server(ec_key: tuple[str, str], client: httpx.Client) -> None:
    """The server verifies the assertion with the issuer's public key and issues a token."""
    private_pem, public_pem = ec_key
    clock_start = NOW.timestamp()
    with TokenServer(
        jwt_keys={"svc@example": (public_pem, "ES256")}, clock=lambda: clock_start
    ) as srv:
        credential = jwt_bearer(private_pem, token_url=srv.url, audience=srv.url)
        grant = request_token(client, credential, now=NOW)
        assert True is srv.is_valid(grant.access_token.reveal())


def test_async_twin_refreshes_against_the_server(server: TokenServer) -> None:
    """arequest_token does what request_token does, on an AsyncClient."""

    async def refresh() -> TokenGrant:
        async with httpx.AsyncClient() as http:
            return await arequest_token(http, refreshing(server), now=NOW)

    grant = asyncio.run(refresh())
    assert True is server.is_valid(grant.access_token.reveal())


def test_async_twin_reports_transport_failures(server: TokenServer) -> None:
    """arequest_token turns a reset connection into a transient RefreshFailed."""

    async def refresh() -> None:
        async with httpx.AsyncClient() as http:
            await arequest_token(http, refreshing(server), now=NOW)

    server.fail_next(1, "reset")
    with pytest.raises(RefreshFailed) as caught:
        asyncio.run(refresh())
    assert (False, "connection_error") == (caught.value.permanent, caught.value.error_code)


def test_replayed_refresh_token_is_a_permanent_invalid_grant(
    server: TokenServer, client: httpx.Client
) -> None:
    """Using a refresh token twice against a rotating provider fails permanently."""
    credential = refreshing(server)
    request_token(client, credential, now=NOW)
    failure = request_failure(client, credential)
    assert (True, "invalid_grant") == (failure.permanent, failure.error_code)


def test_retry_after_from_the_server(server: TokenServer, client: httpx.Client) -> None:
    """A 503 with Retry-After: 7 is transient with retry_after 7."""
    server.fail_next(1, "503_retry_after")
    failure = request_failure(client, refreshing(server))
    assert (False, 7.0) == (failure.permanent, failure.retry_after)


def test_slow_server_is_a_transient_timeout(server: TokenServer, client: httpx.Client) -> None:
    """A provider slower than the timeout gives a transient "timeout"."""
    server.fail_next(1, "slow")
    failure = request_failure(client, refreshing(server), timeout=0.2)
    assert (False, "timeout") == (failure.permanent, failure.error_code)


def test_reset_connection_is_a_transient_connection_error(
    server: TokenServer, client: httpx.Client
) -> None:
    """A connection dropped without a response gives a transient "connection_error"."""
    server.fail_next(1, "reset")
    failure = request_failure(client, refreshing(server))
    assert (False, "connection_error") == (failure.permanent, failure.error_code)


def test_refused_connection_is_a_transient_connection_error(client: httpx.Client) -> None:
    """Nothing listening on the port gives a transient "connection_error"."""
    with TokenServer() as gone:
        url = gone.url
    failure = request_failure(client, oauth2(token_url=url))
    assert (False, "connection_error") == (failure.permanent, failure.error_code)


def test_transport_errors_are_not_chained(server: TokenServer, client: httpx.Client) -> None:
    """The httpx exception (which holds the request) is neither cause nor context."""
    server.fail_next(1, "reset")
    failure = request_failure(client, refreshing(server))
    assert (None, None) == (failure.__cause__, failure.__context__)


def test_huge_body_from_the_server_is_transient(server: TokenServer, client: httpx.Client) -> None:
    """A multi-megabyte 200 is refused as a transient invalid response."""
    server.fail_next(1, "huge")
    failure = request_failure(client, refreshing(server))
    assert (False, "invalid_response") == (failure.permanent, failure.error_code)


@pytest.mark.parametrize(
    "mode",
    [
        "500",
        "503_retry_after",
        "429",
        "html",
        "error_body_200",
        "no_access_token",
        "invalid_grant",
        "reset",
    ],
)
def test_server_failures_never_leak_secrets(
    server: TokenServer, client: httpx.Client, mode: str
) -> None:
    """Whatever the provider does, the RefreshFailed carries no secret."""
    credential = refreshing(server, client_auth="client_secret_basic")
    server.fail_next(1, mode)
    failure = request_failure(client, credential)
    secrets = (CLIENT_SECRET, credential.refresh_token and credential.refresh_token.reveal())
    text = f"{failure} {failure!r} {failure.error_code}"
    assert [] == [secret for secret in secrets if secret and secret in text]


# -- request_token on a mock transport ---------------------------------------------------


def mock_client(handler: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_streamed_body_is_read_only_up_to_the_limit() -> None:
    """An endless body is abandoned just past max_body instead of being buffered."""
    sent: list[int] = []

    def endless() -> Iterator[bytes]:
        while sum(sent) < 10_000_000:
            sent.append(1000)
            yield b"a" * 1000
        raise AssertionError("read the whole body")

    with mock_client(lambda request: httpx.Response(200, content=endless())) as http:
        failure = request_failure(http, oauth2(), max_body=10_000)
    assert "invalid_response" == failure.error_code
    assert sum(sent) <= 11_000


def test_declared_oversized_body_is_not_read_at_all() -> None:
    """A Content-Length over max_body is refused before any of the body is read."""
    read: list[bytes] = []

    def untouchable() -> Iterator[bytes]:
        read.append(b"x")
        yield b"{}"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "5000000"}, content=untouchable())

    with mock_client(handler) as http:
        failure = request_failure(http, oauth2())
    assert ("invalid_response", []) == (failure.error_code, read)


def test_request_is_a_form_post_without_the_clients_auth() -> None:
    """The POST is form-encoded, asks for JSON, and ignores an auth set on the client."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": ACCESS_TOKEN})

    transport = httpx.MockTransport(handler)
    with httpx.Client(transport=transport, auth=httpx.BasicAuth("other", "pw")) as http:
        request_token(http, oauth2(), now=NOW)
    (request,) = seen
    assert "application/x-www-form-urlencoded" == request.headers["Content-Type"]
    assert ("application/json", None) == (
        request.headers["Accept"],
        request.headers.get("Authorization"),
    )
    assert REFRESH_TOKEN in request.content.decode()


def test_redirects_are_not_followed() -> None:
    """A redirect is a transient failure; the secrets are not re-sent to the new location."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(307, headers={"Location": "https://elsewhere.example/token"})

    with httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=True) as http:
        failure = request_failure(http, oauth2())
    assert ([TOKEN_URL], "http_307") == (calls, failure.error_code)


def test_undecodable_body_is_transient() -> None:
    """A body that claims gzip but is not is a transient invalid response."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    with mock_client(handler) as http:
        failure = request_failure(http, oauth2())
    assert (False, "invalid_response") == (failure.permanent, failure.error_code)


# -- backoff ---------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=0, max_value=64),
    base=st.floats(min_value=0.0, max_value=100.0),
    cap=st.floats(min_value=0.0, max_value=10_000.0),
    seed=st.integers(),
)
def test_backoff_delay_stays_within_the_full_jitter_window(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    """0 <= delay <= min(cap, base * 2**attempt) for every attempt."""
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2**attempt)


def test_backoff_delay_survives_absurd_attempts() -> None:
    """A huge attempt count is capped rather than overflowing."""
    assert 0.0 <= backoff_delay(100_000, cap=900.0) <= 900.0


def test_backoff_delay_is_pure_given_the_rng() -> None:
    """The same seed gives the same delay."""
    first = backoff_delay(5, rng=random.Random(7))
    assert first == backoff_delay(5, rng=random.Random(7))


def test_backoff_delay_refuses_negative_attempts() -> None:
    """A negative attempt is a programming error."""
    with pytest.raises(ValueError):
        backoff_delay(-1)


def test_next_retry_delay_honours_retry_after() -> None:
    """A provider's Retry-After longer than the backoff wins."""
    assert 600.0 == next_retry_delay(0, 600.0, rng=random.Random(1))


def test_next_retry_delay_keeps_a_longer_backoff() -> None:
    """A short Retry-After does not shorten the backoff."""
    backoff = backoff_delay(10, rng=random.Random(3))
    assert backoff == next_retry_delay(10, 0.0, rng=random.Random(3))


def test_next_retry_delay_without_retry_after_is_the_backoff() -> None:
    """No Retry-After means plain backoff."""
    assert backoff_delay(4, rng=random.Random(5)) == next_retry_delay(4, None, rng=random.Random(5))


def test_no_request_is_built_from_a_stale_clock() -> None:
    """The assertion's iat comes from ``now``, whatever the real time is."""
    later = NOW + timedelta(days=400)
    request = build_token_request(jwt_bearer(HS_SECRET, algorithm="HS256"), now=later)
    claims = jwt.decode(request.form["assertion"], options={"verify_signature": False})
    assert int(later.timestamp()) == claims["iat"]


def test_token_request_is_a_frozen_value() -> None:
    """TokenRequest cannot be modified after building."""
    request = TokenRequest(url=TOKEN_URL, headers={}, form={})
    with pytest.raises(AttributeError):
        request.url = "http://127.0.0.1:1/other"  # type: ignore[misc]
