"""The loopback provider's browser and device flows, discovery, introspection and
revocation are as strict as a production server (credman.testing.provider)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credman.testing.provider import DEVICE_CODE_GRANT, TokenServer

CLIENT_ID, CLIENT_SECRET = "app", "app-secret-canary-51d0"
PUBLIC_ID = "cli"
JWT_CLIENT = "signed-client"
REDIRECT = "https://app.example/callback"
LOOPBACK = "http://127.0.0.1/callback"
START = 1_700_000_000.25


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def client_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def server(clock: Clock, client_key: ec.EllipticCurvePrivateKey) -> Iterator[TokenServer]:
    public_pem = client_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with TokenServer(
        clients={CLIENT_ID: CLIENT_SECRET},
        public_clients=[PUBLIC_ID],
        jwt_clients={JWT_CLIENT: (public_pem.decode(), "ES256")},
        redirect_uris={CLIENT_ID: [REDIRECT], PUBLIC_ID: [LOOPBACK], JWT_CLIENT: [REDIRECT]},
        clock=clock,
        device_interval=1,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


def challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(
    http: httpx.Client, server: TokenServer, verifier: str, **overrides: str | None
) -> httpx.Response:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "state": "st-1",
        "code_challenge": challenge(verifier),
        "code_challenge_method": "S256",
        "scope": "read",
    }
    query = {k: v for k, v in (params | overrides).items() if v is not None}
    return http.get(server.authorize_url + "?" + urlencode(query))


def redirected_params(response: httpx.Response) -> dict[str, str]:
    location = response.headers["Location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(
    http: httpx.Client, server: TokenServer, code: str, verifier: str | None, **extra: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return http.post(server.url, data=form | extra)


def new_verifier() -> str:
    return secrets.token_urlsafe(32)


def code_for(http: httpx.Client, server: TokenServer, verifier: str) -> str:
    return redirected_params(authorize(http, server, verifier))["code"]


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


# -- authorization code + PKCE -----------------------------------------------------------


def test_consent_redirects_with_a_code_state_and_issuer(
    http: httpx.Client, server: TokenServer
) -> None:
    """In consent mode /authorize redirects to the exact redirect URI with code and state."""
    response = authorize(http, server, new_verifier())
    params = redirected_params(response)
    assert (302, REDIRECT, "st-1", server.issuer) == (
        response.status_code,
        response.headers["Location"].split("?")[0],
        params["state"],
        params["iss"],
    )
    assert params["code"].startswith("code_")


def test_code_with_its_verifier_buys_tokens(http: httpx.Client, server: TokenServer) -> None:
    """The code and its S256 verifier are exchanged for a live access and refresh token."""
    verifier = new_verifier()
    payload = exchange(http, server, code_for(http, server, verifier), verifier).json()
    assert (True, True) == (
        server.is_valid(payload["access_token"]),
        server.is_valid_refresh_token(payload["refresh_token"]),
    )


def test_the_provider_records_the_challenge_and_redirect_uri(
    http: httpx.Client, server: TokenServer
) -> None:
    """Tests can check the provider saw S256 PKCE and the exact redirect URI."""
    verifier = new_verifier()
    authorize(http, server, verifier)
    seen = server.authorization_requests[-1]
    assert ("S256", challenge(verifier), REDIRECT) == (
        seen.code_challenge_method,
        seen.code_challenge,
        seen.redirect_uri,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
        {"code_challenge": None},
        {"code_challenge": "too-short"},
        {"response_type": "token"},
    ],
)
def test_requests_without_s256_pkce_get_no_code(
    http: httpx.Client, server: TokenServer, overrides: dict[str, str | None]
) -> None:
    """Plain PKCE, no PKCE or another response type are refused with an error redirect."""
    params = redirected_params(authorize(http, server, new_verifier(), **overrides))
    assert "code" not in params
    assert params["error"] in ("invalid_request", "unsupported_response_type")


@pytest.mark.parametrize(
    "redirect_uri",
    ["https://app.example/callback/", "https://evil.example/callback", "", "http://127.0.0.1/cb"],
)
def test_unregistered_redirect_uri_is_refused_without_a_redirect(
    http: httpx.Client, server: TokenServer, redirect_uri: str
) -> None:
    """A redirect URI that is not registered gets a 400 page, never a redirect."""
    response = authorize(http, server, new_verifier(), redirect_uri=redirect_uri)
    assert (400, None) == (response.status_code, response.headers.get("Location"))


def test_loopback_redirect_uri_may_use_any_port(http: httpx.Client, server: TokenServer) -> None:
    """RFC 8252 §7.3: a registered 127.0.0.1 URI matches whatever port the client listens on."""
    uri = "http://127.0.0.1:53124/callback"
    response = authorize(http, server, new_verifier(), client_id=PUBLIC_ID, redirect_uri=uri)
    assert (302, uri) == (response.status_code, response.headers["Location"].split("?")[0])


def test_loopback_redirect_uri_must_match_everything_but_the_port(
    http: httpx.Client, server: TokenServer
) -> None:
    """Another host, path or user info on loopback is still refused."""
    statuses = [
        authorize(http, server, new_verifier(), client_id=PUBLIC_ID, redirect_uri=uri).status_code
        for uri in (
            "http://localhost:5000/callback",
            "http://127.0.0.1:5000/other",
            "http://x@127.0.0.1:5000/callback",
            "https://127.0.0.1:5000/callback",
        )
    ]
    assert [400, 400, 400, 400] == statuses


def test_access_denied_mode_redirects_with_the_error(
    http: httpx.Client, server: TokenServer
) -> None:
    """When the user denies consent the client gets error=access_denied with its state."""
    server.authorize_mode = "access_denied"
    params = redirected_params(authorize(http, server, new_verifier()))
    assert ("access_denied", "st-1", None) == (params["error"], params["state"], params.get("code"))


def test_missing_verifier_is_an_invalid_request(http: httpx.Client, server: TokenServer) -> None:
    """A code exchange without code_verifier is refused."""
    response = exchange(http, server, code_for(http, server, new_verifier()), None)
    assert (400, "invalid_request") == error_of(response)


def test_wrong_verifier_is_an_invalid_grant(http: httpx.Client, server: TokenServer) -> None:
    """A verifier that does not hash to the challenge is refused."""
    response = exchange(http, server, code_for(http, server, new_verifier()), new_verifier())
    assert (400, "invalid_grant") == error_of(response)


def test_plain_verifier_equal_to_the_challenge_is_refused(
    http: httpx.Client, server: TokenServer
) -> None:
    """Sending the challenge itself as the verifier (plain method) does not work."""
    verifier = new_verifier()
    code = code_for(http, server, verifier)
    assert (400, "invalid_grant") == error_of(exchange(http, server, code, challenge(verifier)))


def test_exchange_needs_the_same_redirect_uri(http: httpx.Client, server: TokenServer) -> None:
    """The token request must repeat the authorization request's redirect URI exactly."""
    verifier = new_verifier()
    code = code_for(http, server, verifier)
    response = exchange(http, server, code, verifier, redirect_uri=REDIRECT + "?x=1")
    assert (400, "invalid_grant") == error_of(response)


def test_code_is_single_use_and_a_replay_revokes_its_grant(
    http: httpx.Client, server: TokenServer
) -> None:
    """Redeeming a code twice fails and kills the tokens the first redemption got."""
    verifier = new_verifier()
    code = code_for(http, server, verifier)
    first = exchange(http, server, code, verifier).json()
    replay = exchange(http, server, code, verifier)
    assert ((400, "invalid_grant"), False) == (
        error_of(replay),
        server.is_valid(first["access_token"]),
    )


def test_code_expires(http: httpx.Client, server: TokenServer, clock: Clock) -> None:
    """A code redeemed after code_lifetime is refused."""
    verifier = new_verifier()
    code = code_for(http, server, verifier)
    clock.now += server.code_lifetime
    assert (400, "invalid_grant") == error_of(exchange(http, server, code, verifier))


def test_code_belongs_to_its_client(http: httpx.Client, server: TokenServer) -> None:
    """Another client cannot redeem a client's code."""
    verifier = new_verifier()
    code = code_for(http, server, verifier)
    response = http.post(
        server.url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": PUBLIC_ID,
            "code_verifier": verifier,
        },
    )
    assert (400, "invalid_grant") == error_of(response)


# -- client authentication -----------------------------------------------------------------


def client_assertion(server: TokenServer, key: ec.EllipticCurvePrivateKey, **claims: Any) -> str:
    now = int(START)
    values = {"iss": JWT_CLIENT, "sub": JWT_CLIENT, "aud": server.url, "exp": now + 60}
    values |= {"iat": now, "jti": uuid.uuid4().hex} | claims
    return jwt.encode(values, key, algorithm="ES256")


def signed_exchange(
    http: httpx.Client, server: TokenServer, assertion: str, verifier: str, code: str
) -> httpx.Response:
    return http.post(
        server.url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )


def signed_code(http: httpx.Client, server: TokenServer) -> tuple[str, str]:
    verifier = new_verifier()
    params = redirected_params(authorize(http, server, verifier, client_id=JWT_CLIENT))
    return verifier, params["code"]


def test_private_key_jwt_authenticates_the_client(
    http: httpx.Client, server: TokenServer, client_key: ec.EllipticCurvePrivateKey
) -> None:
    """An RFC 7523 §2.2 client assertion signed with the client's key is accepted."""
    verifier, code = signed_code(http, server)
    response = signed_exchange(http, server, client_assertion(server, client_key), verifier, code)
    assert (200, "private_key_jwt") == (response.status_code, server.client_auth_methods[-1])


def test_replayed_client_assertion_is_refused(
    http: httpx.Client, server: TokenServer, client_key: ec.EllipticCurvePrivateKey
) -> None:
    """A client assertion is good for one request."""
    assertion = client_assertion(server, client_key)
    signed_exchange(http, server, assertion, *signed_code(http, server))
    response = signed_exchange(http, server, assertion, *signed_code(http, server))
    assert (401, "invalid_client") == error_of(response)


@pytest.mark.parametrize(
    "claims", [{"aud": "https://elsewhere/token"}, {"exp": int(START) - 1}, {"sub": "someone"}]
)
def test_client_assertion_for_elsewhere_or_expired_is_refused(
    http: httpx.Client,
    server: TokenServer,
    client_key: ec.EllipticCurvePrivateKey,
    claims: dict[str, Any],
) -> None:
    """Wrong audience, past expiry or a subject other than the client: invalid_client."""
    response = signed_exchange(
        http, server, client_assertion(server, client_key, **claims), *signed_code(http, server)
    )
    assert (401, "invalid_client") == error_of(response)


def test_assertion_signed_by_another_key_is_refused(
    http: httpx.Client, server: TokenServer
) -> None:
    """A client assertion signed with a key the provider does not know is refused."""
    stranger = ec.generate_private_key(ec.SECP256R1())
    response = signed_exchange(
        http, server, client_assertion(server, stranger), *signed_code(http, server)
    )
    assert (401, "invalid_client") == error_of(response)


# -- device authorization (RFC 8628) -------------------------------------------------------


def start_device(http: httpx.Client, server: TokenServer) -> dict[str, Any]:
    response = http.post(server.device_authorization_url, data={"client_id": PUBLIC_ID})
    payload: dict[str, Any] = response.json()
    return payload


def poll(http: httpx.Client, server: TokenServer, device_code: str) -> httpx.Response:
    form = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code, "client_id": PUBLIC_ID}
    return http.post(server.url, data=form)


def test_device_authorization_answers_codes_and_interval(
    http: httpx.Client, server: TokenServer
) -> None:
    """The device endpoint gives a device code, a user code, where to go and the interval."""
    payload = start_device(http, server)
    assert (1, server.base_url + "/device", 600) == (
        payload["interval"],
        payload["verification_uri"],
        payload["expires_in"],
    )
    assert payload["verification_uri_complete"].endswith(payload["user_code"])


def test_device_poll_is_pending_until_approved(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """Polling says authorization_pending until the user approves, then hands out tokens."""
    payload = start_device(http, server)
    pending = poll(http, server, payload["device_code"])
    server.approve_device(payload["user_code"])
    clock.now += 1
    granted = poll(http, server, payload["device_code"]).json()
    assert ((400, "authorization_pending"), True) == (
        error_of(pending),
        server.is_valid(granted["access_token"]),
    )


def test_device_poll_too_soon_slows_down_by_five_seconds(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """Polling faster than the interval answers slow_down and adds 5 s to the interval."""
    payload = start_device(http, server)
    poll(http, server, payload["device_code"])
    clock.now += 0.5
    too_soon = poll(http, server, payload["device_code"])
    assert ((400, "slow_down"), 6) == (
        error_of(too_soon),
        server.device_authorization(payload["user_code"]).interval,
    )


def test_device_code_expires(http: httpx.Client, server: TokenServer, clock: Clock) -> None:
    """A device code polled after its lifetime answers expired_token."""
    payload = start_device(http, server)
    clock.now += 600
    assert (400, "expired_token") == error_of(poll(http, server, payload["device_code"]))


def test_denied_device_answers_access_denied(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """A user who denies the device makes the next poll answer access_denied."""
    payload = start_device(http, server)
    server.approve_device(payload["user_code"], approve=False)
    assert (400, "access_denied") == error_of(poll(http, server, payload["device_code"]))


def test_device_page_approves_like_a_user(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """GET of verification_uri_complete plays the user who approves."""
    payload = start_device(http, server)
    page = http.get(payload["verification_uri_complete"])
    assert (200, "approved") == (
        page.status_code,
        server.device_authorization(payload["user_code"]).status,
    )


def test_device_code_is_redeemed_once(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """After the tokens were handed out the device code is spent."""
    payload = start_device(http, server)
    server.approve_device(payload["user_code"])
    poll(http, server, payload["device_code"])
    clock.now += 5
    assert (400, "invalid_grant") == error_of(poll(http, server, payload["device_code"]))


# -- discovery, introspection, revocation ---------------------------------------------------


def test_discovery_names_every_endpoint(http: httpx.Client, server: TokenServer) -> None:
    """/.well-known/openid-configuration lists the endpoints and only S256 PKCE."""
    document = http.get(server.issuer + "/.well-known/openid-configuration").json()
    assert (
        server.issuer,
        server.authorize_url,
        server.url,
        server.revocation_url,
        server.device_authorization_url,
        server.introspection_url,
        ["S256"],
    ) == (
        document["issuer"],
        document["authorization_endpoint"],
        document["token_endpoint"],
        document["revocation_endpoint"],
        document["device_authorization_endpoint"],
        document["introspection_endpoint"],
        document["code_challenge_methods_supported"],
    )


def tokens(http: httpx.Client, server: TokenServer) -> dict[str, Any]:
    verifier = new_verifier()
    payload: dict[str, Any] = exchange(
        http, server, code_for(http, server, verifier), verifier
    ).json()
    return payload


def introspect(http: httpx.Client, server: TokenServer, token: str) -> httpx.Response:
    return http.post(
        server.introspection_url, data={"token": token}, auth=(CLIENT_ID, CLIENT_SECRET)
    )


def test_introspection_reports_an_active_token_with_its_expiry(
    http: httpx.Client, server: TokenServer
) -> None:
    """RFC 7662: a live access token is active, with client_id and exp."""
    answer = introspect(http, server, tokens(http, server)["access_token"]).json()
    assert (True, CLIENT_ID, START + 3600) == (answer["active"], answer["client_id"], answer["exp"])


def test_introspection_of_an_expired_or_unknown_token_is_inactive(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """Expired and unknown tokens are {"active": false}."""
    access = tokens(http, server)["access_token"]
    clock.now += 3600
    answers = [introspect(http, server, t).json() for t in (access, "at_unknown")]
    assert [{"active": False}, {"active": False}] == answers


def test_introspection_needs_client_authentication(http: httpx.Client, server: TokenServer) -> None:
    """Anonymous introspection is refused."""
    response = http.post(server.introspection_url, data={"token": "x", "client_id": PUBLIC_ID})
    assert (401, "invalid_client") == error_of(response)


def test_whole_second_mode_expires_at_floor_of_now_plus_ttl(
    http: httpx.Client, server: TokenServer
) -> None:
    """In whole-second mode exp = floor(now) + expires_in, up to a second early."""
    server.whole_seconds = True
    server.access_token_lifetime = 3
    answer = introspect(http, server, tokens(http, server)["access_token"]).json()
    assert (int(START) + 3, int(START)) == (answer["exp"], answer["iat"])


def test_revoking_the_refresh_token_revokes_the_grant(
    http: httpx.Client, server: TokenServer
) -> None:
    """RFC 7009: revoking a refresh token stops its access tokens too."""
    issued = tokens(http, server)
    response = http.post(
        server.revocation_url,
        data={"token": issued["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert (200, False, False) == (
        response.status_code,
        server.is_valid(issued["access_token"]),
        server.is_valid_refresh_token(issued["refresh_token"]),
    )


def test_revoking_an_access_token_leaves_the_refresh_token(
    http: httpx.Client, server: TokenServer
) -> None:
    """Revoking an access token stops only it."""
    issued = tokens(http, server)
    http.post(
        server.revocation_url,
        data={"token": issued["access_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert (False, True) == (
        server.is_valid(issued["access_token"]),
        server.is_valid_refresh_token(issued["refresh_token"]),
    )


def test_revoking_another_clients_token_is_refused(http: httpx.Client, server: TokenServer) -> None:
    """A client cannot revoke tokens issued to another client."""
    issued = tokens(http, server)
    response = http.post(
        server.revocation_url, data={"token": issued["refresh_token"], "client_id": PUBLIC_ID}
    )
    assert ((400, "invalid_request"), True) == (
        error_of(response),
        server.is_valid_refresh_token(issued["refresh_token"]),
    )


def test_revoking_an_unknown_token_is_fine(http: httpx.Client, server: TokenServer) -> None:
    """RFC 7009 §2.2: an invalid token is answered 200."""
    response = http.post(
        server.revocation_url, data={"token": "rt_unknown"}, auth=(CLIENT_ID, CLIENT_SECRET)
    )
    assert 200 == response.status_code


# -- quirk modes -------------------------------------------------------------------------


def refresh(http: httpx.Client, server: TokenServer) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": server.grant(CLIENT_ID),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    return http.post(server.url, data=form)


@pytest.mark.parametrize(
    ("mode", "field", "expected"),
    [
        ("expires_in_string", "expires_in", "3600"),
        ("expires_in_ms", "expires_in", 3_600_000),
        ("ok_true", "ok", True),
        ("instance_url", "expires_in", None),
        ("bad_refresh_token_200", "error", "bad_refresh_token"),
        ("ok_false_200", "ok", False),
    ],
)
def test_quirk_modes_shape_the_response_like_their_provider(
    http: httpx.Client, server: TokenServer, mode: str, field: str, expected: object
) -> None:
    """Each quirk mode answers 200 with the provider's peculiar field."""
    server.mode = mode
    response = refresh(http, server)
    assert (200, expected) == (response.status_code, response.json().get(field))


def test_salesforce_mode_sends_an_instance_url(http: httpx.Client, server: TokenServer) -> None:
    """instance_url mode carries instance_url and issued_at beside the token."""
    server.mode = "instance_url"
    payload = refresh(http, server).json()
    assert (server.base_url + "/instance", True) == (
        payload["instance_url"],
        payload["issued_at"].isdigit(),
    )


# -- runnable ----------------------------------------------------------------------------


def test_python_m_runs_a_provider_until_terminated() -> None:
    """`python -m credman.testing.provider` prints its issuer and serves discovery."""
    env = os.environ | {"CREDMAN_PROVIDER_CLIENT_SECRET": "s3cret-canary-xyz"}
    process = subprocess.Popen(
        [sys.executable, "-m", "credman.testing.provider", "--client-id", "demo"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        issuer = process.stdout.readline().split()[1]
        document = httpx.get(issuer + "/.well-known/openid-configuration", timeout=5).json()
        assert issuer + "/token" == document["token_endpoint"]
    finally:
        process.terminate()
        process.wait(timeout=10)
