"""credman.oauth's authorization-code + PKCE, device grant, discovery and private_key_jwt
against the strict loopback provider."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credman import CredentialValidationError, OAuth2
from credman.errors import AuthorizationFailed
from credman.oauth import (
    authorization_url,
    discover,
    exchange_code,
    expires_at_from,
    new_pkce,
    new_state,
    parse_callback,
    poll_device,
    request_token,
    start_device_authorization,
)
from credman.oauth.authorize import VERIFIER_BYTES, s256_challenge
from credman.oauth.discovery import parse_discovery
from credman.testing.provider import TokenServer

CLIENT, SECRET = "app", "app-secret-canary-3b7e"
PUBLIC = "cli"
SIGNED = "signed"
REDIRECT = "http://127.0.0.1/callback"
T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)


class FakeTime:
    """One clock for credman and the provider; sleeping moves it and records the wait."""

    def __init__(self) -> None:
        self.now = T0
        self.slept: list[float] = []
        self.on_sleep: list[Any] = []

    def epoch(self) -> float:
        return self.now.timestamp()

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)
        for hook in self.on_sleep:
            hook(len(self.slept))


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def server(time: FakeTime, key: ec.EllipticCurvePrivateKey) -> Iterator[TokenServer]:
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with TokenServer(
        clients={CLIENT: SECRET},
        public_clients=[PUBLIC],
        jwt_clients={SIGNED: (public.decode(), "ES256")},
        redirect_uris={CLIENT: [REDIRECT], PUBLIC: [REDIRECT], SIGNED: [REDIRECT]},
        clock=time.epoch,
        device_interval=1,
    ) as running:
        yield running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def pending(server: TokenServer, **fields: Any) -> OAuth2:
    values: dict[str, Any] = {
        "token_url": server.url,
        "authorization_url": server.authorize_url,
        "device_authorization_url": server.device_authorization_url,
        "client_id": CLIENT,
        "client_secret": SECRET,
        "scope": "read write",
    }
    return OAuth2(**(values | fields))


def browse(http: httpx.Client, url: str) -> str:
    """Play the browser: follow /authorize to the redirect and return where it points."""
    response = http.get(url)
    assert 302 == response.status_code
    return response.headers["Location"]


# -- PKCE and the authorization URL --------------------------------------------------------


def test_pkce_verifier_has_32_random_bytes_and_an_s256_challenge() -> None:
    """The verifier is 43 URL-safe characters; the challenge is its S256 hash."""
    pkce = new_pkce()
    verifier = pkce.verifier.reveal()
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert (43, digest.decode(), "S256") == (len(verifier), pkce.challenge, pkce.method)
    assert 32 == VERIFIER_BYTES


def test_pkce_and_state_are_fresh_each_time() -> None:
    """Two connects never share a verifier or a state."""
    assert new_pkce().verifier.reveal() != new_pkce().verifier.reveal()
    assert new_state() != new_state()


def test_pkce_repr_hides_the_verifier() -> None:
    """The verifier does not show in a repr."""
    pkce = new_pkce()
    assert pkce.verifier.reveal() not in repr(pkce)


def test_s256_matches_rfc_7636_appendix_b() -> None:
    """The RFC's example verifier hashes to its example challenge."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" == s256_challenge(verifier)


def test_authorization_url_carries_the_request(server: TokenServer) -> None:
    """The URL names client, exact redirect URI, state, S256 challenge, scope and extras."""
    credential = pending(server, authorize_params={"access_type": "offline", "state": "no"})
    url = authorization_url(credential, redirect_uri=REDIRECT, state="s1", code_challenge="c" * 43)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "state": "s1",
        "code_challenge": "c" * 43,
        "code_challenge_method": "S256",
        "scope": "read write",
        "access_type": "offline",
    } == query


def test_authorization_url_needs_an_authorization_endpoint(server: TokenServer) -> None:
    """A credential without authorization_url cannot start a connect."""
    credential = OAuth2(token_url=server.url, client_id=CLIENT, refresh_token="rt-x")
    with pytest.raises(CredentialValidationError) as raised:
        authorization_url(credential, redirect_uri=REDIRECT, state="s", code_challenge="c")
    assert ("authorization_url",) == raised.value.fields


# -- the callback ----------------------------------------------------------------------------


def test_callback_gives_state_and_code() -> None:
    """A redirect URL yields its state and the code as a Secret."""
    answer = parse_callback("http://127.0.0.1:5000/callback?code=abc&state=xyz&iss=https%3A%2F%2Fi")
    assert ("xyz", "abc", "https://i") == (answer.state, answer.code.reveal(), answer.issuer)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("error=access_denied&state=s", "access_denied"),
        ("error=invalid_scope&state=s", "invalid_scope"),
        ("error=%3Cscript%3E&state=s", "invalid_callback"),
        ("code=abc", "invalid_callback"),
        ("state=s", "invalid_callback"),
        ("code=a&code=b&state=s", "invalid_callback"),
    ],
)
def test_callback_errors_are_authorization_failures(query: str, code: str) -> None:
    """Provider errors and malformed callbacks raise AuthorizationFailed naming the code."""
    with pytest.raises(AuthorizationFailed) as raised:
        parse_callback("?" + query)
    assert code == raised.value.error_code


def test_access_denied_message_is_clear() -> None:
    """access_denied says that access was denied."""
    with pytest.raises(AuthorizationFailed, match="denied access"):
        parse_callback({"error": "access_denied", "state": "s"})


# -- code exchange end to end ---------------------------------------------------------------


def test_code_flow_end_to_end_gets_tokens(
    http: httpx.Client, server: TokenServer, time: FakeTime
) -> None:
    """authorization_url -> provider -> callback -> exchange_code yields working tokens."""
    credential, pkce, state = pending(server), new_pkce(), new_state()
    url = authorization_url(
        credential, redirect_uri=REDIRECT, state=state, code_challenge=pkce.challenge
    )
    answer = parse_callback(browse(http, url))
    grant = exchange_code(
        http,
        credential,
        code=answer.code,
        redirect_uri=REDIRECT,
        verifier=pkce.verifier,
        now=time(),
    )
    assert (state, True, True) == (
        answer.state,
        server.is_valid(grant.access_token.reveal()),
        grant.refresh_token is not None,
    )
    assert "S256" == server.authorization_requests[-1].code_challenge_method


def test_exchange_with_a_refused_code_is_an_authorization_failure(
    http: httpx.Client, server: TokenServer, time: FakeTime
) -> None:
    """A code the provider refuses raises AuthorizationFailed(invalid_grant)."""
    with pytest.raises(AuthorizationFailed) as raised:
        exchange_code(
            http,
            pending(server),
            code=new_pkce().verifier,
            redirect_uri=REDIRECT,
            verifier=new_pkce().verifier,
            now=time(),
        )
    assert "invalid_grant" == raised.value.error_code


def test_public_client_exchanges_with_pkce_alone(
    http: httpx.Client, server: TokenServer, time: FakeTime
) -> None:
    """A client without a secret sends client_id and the verifier only."""
    credential, pkce = pending(server, client_id=PUBLIC, client_secret=None), new_pkce()
    url = authorization_url(
        credential, redirect_uri=REDIRECT, state="s", code_challenge=pkce.challenge
    )
    answer = parse_callback(browse(http, url))
    exchange_code(
        http,
        credential,
        code=answer.code,
        redirect_uri=REDIRECT,
        verifier=pkce.verifier,
        now=time(),
    )
    assert "none" == server.client_auth_methods[-1]


# -- private_key_jwt -------------------------------------------------------------------------


def test_private_key_jwt_refresh(
    http: httpx.Client, server: TokenServer, key: ec.EllipticCurvePrivateKey, time: FakeTime
) -> None:
    """A credential with client_auth=private_key_jwt refreshes with a signed assertion."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    credential = OAuth2(
        token_url=server.url,
        client_id=SIGNED,
        client_auth="private_key_jwt",
        client_key=pem,
        client_key_algorithm="ES256",
        refresh_token=server.grant(SIGNED),
    )
    grant = request_token(http, credential, now=time())
    assert (True, "private_key_jwt") == (
        server.is_valid(grant.access_token.reveal()),
        server.client_auth_methods[-1],
    )


def test_private_key_jwt_needs_a_key(server: TokenServer) -> None:
    """private_key_jwt without client_key is refused at construction."""
    with pytest.raises(CredentialValidationError, match="client_key"):
        OAuth2(
            token_url=server.url, client_id=SIGNED, client_auth="private_key_jwt", refresh_token="r"
        )


# -- device grant ----------------------------------------------------------------------------


def device_credential(server: TokenServer) -> OAuth2:
    return pending(server, client_id=PUBLIC, client_secret=None)


def test_device_flow_polls_until_approved(
    http: httpx.Client, server: TokenServer, time: FakeTime
) -> None:
    """Polling at the interval gets tokens once the user approves, without real sleeps."""
    credential = device_credential(server)
    started = start_device_authorization(http, credential, now=time())
    time.on_sleep.append(lambda n: n == 3 and server.approve_device(started.user_code))
    grant = poll_device(http, credential, started, now=time, sleep=time.sleep)
    assert ([1, 1, 1], True) == (time.slept, server.is_valid(grant.access_token.reveal()))


def test_device_flow_adds_five_seconds_on_slow_down(
    http: httpx.Client, server: TokenServer, time: FakeTime
) -> None:
    """After slow_down the client waits 5 s longer, and the strict provider accepts it."""
    credential = device_credential(server)
    started = start_device_authorization(http, credential, now=time())
    server.slow_down_next(started.user_code)
    time.on_sleep.append(lambda n: n == 2 and server.approve_device(started.user_code))
    poll_device(http, credential, started, now=time, sleep=time.sleep)
    assert [1, 6] == time.slept


def test_device_flow_denied_is_access_denied(
    http: httpx.Client, server: TokenServer, time: FakeTime
) -> None:
    """A user who denies ends the polling with AuthorizationFailed(access_denied)."""
    credential = device_credential(server)
    started = start_device_authorization(http, credential, now=time())
    server.approve_device(started.user_code, approve=False)
    with pytest.raises(AuthorizationFailed) as raised:
        poll_device(http, credential, started, now=time, sleep=time.sleep)
    assert "access_denied" == raised.value.error_code


def test_device_flow_stops_at_the_deadline(
    http: httpx.Client, server: TokenServer, time: FakeTime
) -> None:
    """Nobody approves: the poller gives up at the caller's deadline with expired_token."""
    credential = device_credential(server)
    started = start_device_authorization(http, credential, now=time())
    deadline = time() + timedelta(seconds=10)
    with pytest.raises(AuthorizationFailed) as raised:
        poll_device(http, credential, started, now=time, sleep=time.sleep, deadline=deadline)
    assert ("expired_token", 10) == (raised.value.error_code, len(time.slept))


def test_device_flow_needs_a_device_endpoint(http: httpx.Client, server: TokenServer) -> None:
    """A credential without device_authorization_url cannot use the device grant."""
    credential = pending(server, device_authorization_url=None)
    with pytest.raises(CredentialValidationError):
        start_device_authorization(http, credential, now=T0)


# -- discovery -------------------------------------------------------------------------------


def test_discovery_reads_every_endpoint(http: httpx.Client, server: TokenServer) -> None:
    """discover() returns the authorization, token, revocation and device endpoints."""
    metadata = discover(http, server.issuer)
    assert (
        server.authorize_url,
        server.url,
        server.revocation_url,
        server.device_authorization_url,
    ) == (
        metadata.authorization_endpoint,
        metadata.token_endpoint,
        metadata.revocation_endpoint,
        metadata.device_authorization_endpoint,
    )


def test_discovered_metadata_makes_a_connectable_credential(
    http: httpx.Client, server: TokenServer
) -> None:
    """The metadata builds an OAuth2 credential that awaits connect."""
    credential = discover(http, server.issuer).credential(client_id=CLIENT, client_secret=SECRET)
    assert (True, server.authorize_url) == (
        credential.awaiting_connect,
        credential.authorization_url,
    )


def test_discovery_of_a_wrong_issuer_is_refused(server: TokenServer) -> None:
    """A document naming another issuer is refused (OIDC Discovery §4.3)."""
    body = json.dumps(server.discovery_document()).encode()
    with pytest.raises(CredentialValidationError, match="another issuer"):
        parse_discovery("https://issuer.example", 200, body)


def test_discovery_without_s256_is_refused(server: TokenServer) -> None:
    """A provider that lists only plain PKCE is refused."""
    document = server.discovery_document() | {"code_challenge_methods_supported": ["plain"]}
    with pytest.raises(CredentialValidationError, match="S256"):
        parse_discovery(server.issuer, 200, json.dumps(document).encode())


def test_discovery_refuses_plain_http_off_loopback(http: httpx.Client) -> None:
    """An http issuer that is not loopback is refused before any request."""
    with pytest.raises(CredentialValidationError, match="https"):
        discover(http, "http://issuer.example")


# -- expiry arithmetic -------------------------------------------------------------------------


def test_expiry_allows_for_whole_second_truncation_and_skew() -> None:
    """expires_at = sent_at + expires_in - 1 s - skew."""
    assert T0 + timedelta(seconds=3600 - 1 - 2) == expires_at_from(
        T0, 3600, skew=timedelta(seconds=2)
    )


def test_expiry_is_never_before_the_request() -> None:
    """A lifetime shorter than the allowance gives expires_at = sent_at, not the past."""
    assert T0 == expires_at_from(T0, 1, skew=timedelta(seconds=5))
