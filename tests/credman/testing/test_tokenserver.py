"""The loopback OAuth2 token endpoint behaves like a strict provider (credman.testing.provider)."""

from __future__ import annotations

import base64
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest

from credman.testing.provider import FAULT_MODES, TokenServer

CLIENT_ID = "app"
CLIENT_SECRET = "client-secret-canary-7f3a"
HS_SECRET = "hs256-shared-secret-canary-0123456789abcdef"
ISSUER = "svc@example"
START = 1_700_000_000.0


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def server(clock: Clock) -> Iterator[TokenServer]:
    options: dict[str, Any] = {
        "clients": {CLIENT_ID: CLIENT_SECRET, "other": "other-secret"},
        "jwt_keys": {ISSUER: (HS_SECRET, "HS256")},
        "clock": clock,
        "slow_seconds": 5.0,
    }
    with TokenServer(**options) as running:
        yield running


def post(
    http: httpx.Client, server: TokenServer, form: dict[str, str], **options: Any
) -> httpx.Response:
    return http.post(server.url, data=form, **options)


def refresh(
    http: httpx.Client, server: TokenServer, refresh_token: str, **extra: str
) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return post(
        http, server, form | {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET} | extra
    )


def basic(client_id: str, secret: str) -> str:
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def assertion(server: TokenServer, clock: Clock, **claims: Any) -> str:
    issued_at = int(clock.now)
    defaults = {
        "iss": ISSUER,
        "sub": ISSUER,
        "aud": server.url,
        "iat": issued_at,
        "exp": issued_at + 300,
        "jti": uuid.uuid4().hex,
    }
    present = {name: value for name, value in (defaults | claims).items() if value is not None}
    return jwt.encode(present, HS_SECRET, algorithm="HS256")


def jwt_grant(http: httpx.Client, server: TokenServer, token: str) -> httpx.Response:
    return post(
        http,
        server,
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": token},
    )


def ignoring_transport_errors(call: Callable[[], object]) -> None:
    """Make a request whose connection may legitimately fail."""
    with contextlib.suppress(httpx.TransportError):
        call()


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]


# -- refresh tokens: rotation and replay ----------------------------------------------


def test_refresh_issues_a_valid_access_token_and_a_new_refresh_token(
    http: httpx.Client, server: TokenServer
) -> None:
    """A refresh answers with a live access token and a different refresh token."""
    first = server.grant(CLIENT_ID)
    payload = refresh(http, server, first).json()
    assert True is server.is_valid(payload["access_token"])
    assert first != payload["refresh_token"]
    assert ("Bearer", 3600) == (payload["token_type"], payload["expires_in"])


def test_rotation_retires_the_old_refresh_token(http: httpx.Client, server: TokenServer) -> None:
    """After a rotation only the new refresh token is live."""
    first = server.grant(CLIENT_ID)
    second = refresh(http, server, first).json()["refresh_token"]
    assert (False, True) == (
        server.is_valid_refresh_token(first),
        server.is_valid_refresh_token(second),
    )


def test_replayed_refresh_token_revokes_the_whole_grant(
    http: httpx.Client, server: TokenServer
) -> None:
    """Presenting a rotated-out refresh token kills every token of its grant."""
    first = server.grant(CLIENT_ID)
    issued = refresh(http, server, first).json()
    replay = refresh(http, server, first)
    assert (400, "invalid_grant") == error_of(replay)
    assert [server.grant_of(first)] == server.revoked_grants
    assert False is server.is_valid(issued["access_token"])
    assert (400, "invalid_grant") == error_of(refresh(http, server, issued["refresh_token"]))


def test_concurrent_refreshes_with_one_token_revoke_the_grant(
    http: httpx.Client, server: TokenServer
) -> None:
    """Two racing refreshes with the same token: one wins, the other is a replay."""
    token = server.grant(CLIENT_ID)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def race() -> None:
        barrier.wait()
        statuses.append(refresh(http, server, token).status_code)

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [200, 400] == sorted(statuses)
    assert 1 == len(server.revoked_grants)


def test_without_rotation_the_refresh_token_stays(http: httpx.Client) -> None:
    """A non-rotating provider accepts the same refresh token again and sends none back."""
    with TokenServer(clients={CLIENT_ID: CLIENT_SECRET}, rotate_refresh_tokens=False) as srv:
        token = srv.grant(CLIENT_ID)
        first, second = refresh(http, srv, token).json(), refresh(http, srv, token).json()
    assert (False, False) == ("refresh_token" in first, "refresh_token" in second)
    assert first["access_token"] != second["access_token"]


def test_refresh_token_of_another_client_is_refused(
    http: httpx.Client, server: TokenServer
) -> None:
    """A refresh token works only for the client it was issued to, and is not revoked by misuse."""
    token = server.grant("other")
    assert (400, "invalid_grant") == error_of(refresh(http, server, token))
    assert ([], True) == (server.revoked_grants, server.is_valid_refresh_token(token))


def test_unknown_refresh_token_is_invalid_grant(http: httpx.Client, server: TokenServer) -> None:
    """A refresh token the provider never issued is refused."""
    assert (400, "invalid_grant") == error_of(refresh(http, server, "rt_made_up"))


def test_revoked_grant_refuses_its_refresh_token(http: httpx.Client, server: TokenServer) -> None:
    """An operator's revocation stops the grant's refresh token."""
    token = server.grant(CLIENT_ID)
    server.revoke_grant(server.grant_of(token) or "")
    assert (400, "invalid_grant") == error_of(refresh(http, server, token))


def test_grant_accepts_a_chosen_refresh_token(http: httpx.Client, server: TokenServer) -> None:
    """grant() can seed a known refresh token, which then refreshes."""
    assert "rt-seeded" == server.grant(CLIENT_ID, "rt-seeded")
    assert 200 == refresh(http, server, "rt-seeded").status_code


def test_counters_track_requests_and_refreshes(http: httpx.Client, server: TokenServer) -> None:
    """token_requests counts every POST; refreshes and refresh_count count successes."""
    token = server.grant(CLIENT_ID)
    server.fail_next(1, "500")
    refresh(http, server, token)
    refresh(http, server, token)
    assert (2, 1, 1) == (
        server.token_requests,
        server.refreshes,
        server.refresh_count(server.grant_of(token) or ""),
    )


# -- client authentication -------------------------------------------------------------


def test_client_secret_basic_is_accepted(http: httpx.Client) -> None:
    """A form-urlencoded Basic header authenticates the client."""
    with TokenServer(clients={"my app:1": "p@ss w:rd+"}) as srv:
        token = srv.grant("my app:1")
        form = {"grant_type": "refresh_token", "refresh_token": token}
        response = post(http, srv, form, headers={"Authorization": basic("my app:1", "p@ss w:rd+")})
    assert 200 == response.status_code


@pytest.mark.parametrize(
    "credentials",
    [
        {"client_id": CLIENT_ID, "client_secret": "wrong"},
        {"client_id": CLIENT_ID},
        {"client_id": "stranger", "client_secret": CLIENT_SECRET},
        {},
    ],
)
def test_bad_client_credentials_are_invalid_client(
    http: httpx.Client, server: TokenServer, credentials: dict[str, str]
) -> None:
    """A wrong, missing or unknown client secret is a 401 invalid_client."""
    form = {"grant_type": "refresh_token", "refresh_token": server.grant(CLIENT_ID)}
    assert (401, "invalid_client") == error_of(post(http, server, form | credentials))


def test_malformed_basic_header_is_invalid_client(http: httpx.Client, server: TokenServer) -> None:
    """A Basic header that does not decode is a 401 invalid_client."""
    form = {"grant_type": "refresh_token", "refresh_token": server.grant(CLIENT_ID)}
    response = post(http, server, form, headers={"Authorization": "Basic !!!"})
    assert (401, "invalid_client") == error_of(response)


def test_two_client_authentication_methods_are_refused(
    http: httpx.Client, server: TokenServer
) -> None:
    """Basic plus a client_secret in the form is an invalid_request (RFC 6749 §2.3)."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": server.grant(CLIENT_ID),
        "client_secret": CLIENT_SECRET,
    }
    headers = {"Authorization": basic(CLIENT_ID, CLIENT_SECRET)}
    assert (400, "invalid_request") == error_of(post(http, server, form, headers=headers))


def test_client_credentials_grant_issues_an_access_token(
    http: httpx.Client, server: TokenServer
) -> None:
    """client_credentials with a good secret gets a live token and echoes the scope."""
    form = {"grant_type": "client_credentials", "scope": "read"}
    payload = post(
        http, server, form, headers={"Authorization": basic(CLIENT_ID, CLIENT_SECRET)}
    ).json()
    assert (True, "read") == (server.is_valid(payload["access_token"]), payload["scope"])


# -- jwt-bearer ------------------------------------------------------------------------


def test_valid_assertion_gets_an_access_token(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """A signed assertion for this endpoint from a known issuer gets a live token."""
    payload = jwt_grant(http, server, assertion(server, clock)).json()
    assert True is server.is_valid(payload["access_token"])


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "http://127.0.0.1:1/elsewhere"},
        {"iss": "unknown@example"},
        {"exp": int(START) - 1},
        {"iat": int(START) + 3600, "exp": int(START) + 3900},
        {"exp": int(START) + 7200},
        {"jti": None},
    ],
)
def test_bad_assertions_are_invalid_grant(
    http: httpx.Client, server: TokenServer, clock: Clock, claims: dict[str, Any]
) -> None:
    """Wrong audience, unknown issuer, expired, future, overlong or jti-less: invalid_grant."""
    token = assertion(server, clock, **claims)
    assert (400, "invalid_grant") == error_of(jwt_grant(http, server, token))


def test_assertion_signed_with_another_key_is_invalid_grant(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """The signature must verify with the issuer's registered key."""
    claims = jwt.decode(assertion(server, clock), options={"verify_signature": False})
    forged = jwt.encode(claims, "another-secret-of-enough-length-0123456789", algorithm="HS256")
    assert (400, "invalid_grant") == error_of(jwt_grant(http, server, forged))


def test_assertion_expires_by_the_servers_clock(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """Moving the server's clock past exp makes the assertion stale."""
    token = assertion(server, clock)
    clock.advance(301)
    assert (400, "invalid_grant") == error_of(jwt_grant(http, server, token))


def test_replayed_assertion_is_invalid_grant(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """An assertion (its jti) is good for one use only."""
    token = assertion(server, clock)
    jwt_grant(http, server, token)
    assert (400, "invalid_grant") == error_of(jwt_grant(http, server, token))


# -- access tokens and the resource endpoint ------------------------------------------


def test_access_token_expires_by_the_clock(http: httpx.Client, clock: Clock) -> None:
    """A fractional lifetime is honoured against the server's clock."""
    with TokenServer(
        clients={CLIENT_ID: CLIENT_SECRET}, access_token_lifetime=2.0, clock=clock
    ) as srv:
        payload = refresh(http, srv, srv.grant(CLIENT_ID)).json()
        token = payload["access_token"]
        valid_before = srv.is_valid(token)
        clock.advance(1.999)
        valid_at_the_end = srv.is_valid(token)
        clock.advance(0.001)
        assert (2, True, True, False) == (
            payload["expires_in"],
            valid_before,
            valid_at_the_end,
            srv.is_valid(token),
        )


def test_unknown_access_token_is_not_valid(server: TokenServer) -> None:
    """A token the server never issued is not valid."""
    assert False is server.is_valid("at_made_up")


def test_resource_accepts_a_valid_bearer_token(http: httpx.Client, server: TokenServer) -> None:
    """GET /resource with a live token is a 200."""
    token = refresh(http, server, server.grant(CLIENT_ID)).json()["access_token"]
    response = http.get(server.resource_url, headers={"Authorization": f"Bearer {token}"})
    assert (200, 1) == (response.status_code, server.resource_requests)


@pytest.mark.parametrize("authorization", [None, "Bearer at_made_up", "Basic abc"])
def test_resource_refuses_other_credentials(
    http: httpx.Client, server: TokenServer, authorization: str | None
) -> None:
    """GET /resource without a live bearer token is a 401 with WWW-Authenticate."""
    headers = {} if authorization is None else {"Authorization": authorization}
    response = http.get(server.resource_url, headers=headers)
    assert (401, "Bearer") == (response.status_code, response.headers["WWW-Authenticate"])


def test_resource_refuses_an_expired_token(
    http: httpx.Client, server: TokenServer, clock: Clock
) -> None:
    """An access token past its lifetime is refused by the resource."""
    token = refresh(http, server, server.grant(CLIENT_ID)).json()["access_token"]
    clock.advance(3600)
    response = http.get(server.resource_url, headers={"Authorization": f"Bearer {token}"})
    assert 401 == response.status_code


# -- malformed requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        (b"grant_type=password", "application/x-www-form-urlencoded", "unsupported_grant_type"),
        (b"scope=read", "application/x-www-form-urlencoded", "invalid_request"),
        (
            b"grant_type=client_credentials&grant_type=client_credentials",
            "application/x-www-form-urlencoded",
            "invalid_request",
        ),
        (b'{"grant_type": "client_credentials"}', "application/json", "invalid_request"),
        (b"grant_type=%ff", "application/x-www-form-urlencoded", "invalid_request"),
    ],
)
def test_malformed_token_requests_are_refused(
    http: httpx.Client, server: TokenServer, content: bytes, content_type: str, expected: str
) -> None:
    """Unknown grants, missing or repeated parameters and non-form bodies are 400s."""
    headers = {"Content-Type": content_type, "Authorization": basic(CLIENT_ID, CLIENT_SECRET)}
    response = http.post(server.url, content=content, headers=headers)
    assert (400, expected) == error_of(response)


def test_unknown_paths_are_not_found(http: httpx.Client, server: TokenServer) -> None:
    """Only /token and /resource exist."""
    assert (404, 404) == (
        http.get(server.base_url + "/nope").status_code,
        http.post(server.base_url + "/resource").status_code,
    )


def test_responses_are_not_cacheable(http: httpx.Client, server: TokenServer) -> None:
    """Token responses carry Cache-Control: no-store (RFC 6749 §5.1)."""
    response = refresh(http, server, server.grant(CLIENT_ID))
    assert "no-store" == response.headers["Cache-Control"]


# -- fault injection -------------------------------------------------------------------

FAILURES = {
    "500": 500,
    "503_retry_after": 503,
    "429": 429,
    "429_no_retry_after": 429,
    "html": 200,
    "error_body_200": 200,
    "no_access_token": 200,
    "invalid_grant": 400,
    "huge": 200,
}


@pytest.mark.parametrize(("mode", "status"), FAILURES.items())
def test_failure_modes_answer_with_their_status(
    http: httpx.Client, server: TokenServer, mode: str, status: int
) -> None:
    """Each HTTP failure mode answers with its status."""
    server.fail_next(1, mode)
    form = {"grant_type": "refresh_token", "refresh_token": server.grant(CLIENT_ID)}
    with http.stream("POST", server.url, data=form) as response:
        assert status == response.status_code


@pytest.mark.parametrize(
    ("mode", "retry_after"), [("503_retry_after", "7"), ("429", "3"), ("429_no_retry_after", None)]
)
def test_retry_after_headers(
    http: httpx.Client, server: TokenServer, mode: str, retry_after: str | None
) -> None:
    """The throttling modes send their Retry-After, or none."""
    server.fail_next(1, mode)
    assert retry_after == refresh(http, server, server.grant(CLIENT_ID)).headers.get("Retry-After")


def test_html_mode_is_html(http: httpx.Client, server: TokenServer) -> None:
    """html answers 200 with a text/html page."""
    server.fail_next(1, "html")
    response = refresh(http, server, server.grant(CLIENT_ID))
    assert "text/html" == response.headers["Content-Type"]


def test_huge_mode_sends_megabytes(http: httpx.Client) -> None:
    """huge answers with a body of huge_bytes, without a Content-Length."""
    with TokenServer(clients={CLIENT_ID: CLIENT_SECRET}, huge_bytes=3_000_000) as srv:
        srv.mode = "huge"
        response = refresh(http, srv, srv.grant(CLIENT_ID))
    assert (3_000_000, None) == (len(response.content), response.headers.get("Content-Length"))


@pytest.mark.parametrize("mode", sorted(FAILURES.keys() | {"reset", "slow"}))
def test_failures_do_not_spend_the_refresh_token(
    http: httpx.Client, server: TokenServer, mode: str
) -> None:
    """A failing provider touches nothing: the refresh token still works afterwards."""
    token = server.grant(CLIENT_ID)
    server.fail_next(1, mode)
    form = {"grant_type": "refresh_token", "refresh_token": token}
    auth = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    ignoring_transport_errors(lambda: http.post(server.url, data=form | auth, timeout=0.2))
    assert (0, True) == (server.refreshes, server.is_valid_refresh_token(token))
    assert 200 == refresh(http, server, token).status_code


def test_reset_mode_drops_the_connection(http: httpx.Client, server: TokenServer) -> None:
    """reset closes the connection without any response."""
    server.fail_next(1, "reset")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        refresh(http, server, server.grant(CLIENT_ID))


def test_slow_mode_outlasts_a_short_timeout(http: httpx.Client, server: TokenServer) -> None:
    """slow stalls longer than the client waits."""
    server.fail_next(1, "slow")
    with pytest.raises(httpx.ReadTimeout):
        http.post(server.url, data={"grant_type": "client_credentials"}, timeout=0.1)


@pytest.mark.parametrize(
    ("mode", "expires_in"), [("no_expires_in", None), ("negative_expires_in", -3600)]
)
def test_quirk_modes_succeed_with_an_odd_expires_in(
    http: httpx.Client, server: TokenServer, mode: str, expires_in: int | None
) -> None:
    """no_expires_in and negative_expires_in are real, rotating refreshes with an odd lifetime."""
    token = server.grant(CLIENT_ID)
    server.fail_next(1, mode)
    payload = refresh(http, server, token).json()
    assert (expires_in, True) == (
        payload.get("expires_in"),
        server.is_valid(payload["access_token"]),
    )
    assert False is server.is_valid_refresh_token(token)


def test_issue_expires_in_false_omits_it(http: httpx.Client) -> None:
    """A provider configured not to send expires_in never does."""
    with TokenServer(clients={CLIENT_ID: CLIENT_SECRET}, issue_expires_in=False) as srv:
        payload = refresh(http, srv, srv.grant(CLIENT_ID)).json()
    assert "expires_in" not in payload


def test_lost_response_spends_the_token_the_client_never_saw(
    http: httpx.Client, server: TokenServer
) -> None:
    """lost_response rotates and then drops the connection, so a retry is a replay."""
    token = server.grant(CLIENT_ID)
    server.fail_next(1, "lost_response")
    with pytest.raises(httpx.TransportError):
        refresh(http, server, token)
    assert (400, "invalid_grant") == error_of(refresh(http, server, token))
    assert [server.grant_of(token)] == server.revoked_grants


def test_fail_next_then_back_to_the_mode(http: httpx.Client, server: TokenServer) -> None:
    """fail_next(n) affects exactly the next n requests."""
    server.fail_next(2, "500")
    statuses = [
        post(http, server, {"grant_type": "client_credentials"}).status_code for _ in range(3)
    ]
    assert [500, 500, 401] == statuses


def test_mode_persists_until_changed(http: httpx.Client, server: TokenServer) -> None:
    """A set mode answers every request until set back to ok."""
    server.mode = "429"
    throttled = [refresh(http, server, "x").status_code for _ in range(2)]
    server.mode = "ok"
    assert ([429, 429], 400) == (throttled, refresh(http, server, "x").status_code)


def test_unknown_mode_is_refused(server: TokenServer) -> None:
    """A misspelt mode fails loudly instead of silently being "ok"."""
    with pytest.raises(ValueError):
        server.fail_next(1, "timeout")


def test_every_documented_mode_exists() -> None:
    """The modes the hostile-provider tests rely on are all known."""
    expected = {
        "ok",
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
        "huge_access_token",
        "crlf_token_type",
        "negative_expires_in",
        "no_expires_in",
        "invalid_grant",
        "lost_response",
        "bad_refresh_token_200",
        "ok_false_200",
        "expires_in_string",
        "expires_in_ms",
        "ok_true",
        "instance_url",
    }
    assert expected == set(FAULT_MODES)


# -- lifecycle -------------------------------------------------------------------------


def test_url_is_a_loopback_token_endpoint(server: TokenServer) -> None:
    """The endpoint is on 127.0.0.1 at an OS-assigned port."""
    url = httpx.URL(server.url)
    assert ("127.0.0.1", "/token", True) == (url.host, url.path, (url.port or 0) > 0)


def test_url_before_start_is_an_error() -> None:
    """A server that is not running has no URL."""
    with pytest.raises(RuntimeError):
        _ = TokenServer().url


def test_stop_is_prompt_with_a_stalled_request_in_flight(http: httpx.Client) -> None:
    """stop() wakes a "slow" handler and returns quickly, and the port stops answering."""
    server = TokenServer(slow_seconds=30.0).start()
    server.mode = "slow"
    url = server.url
    caller = threading.Thread(
        target=lambda: ignoring_transport_errors(lambda: http.post(url, data={}, timeout=5))
    )
    caller.start()
    while server.token_requests == 0:
        time.sleep(0.005)
    started = time.monotonic()
    server.stop()
    caller.join()
    assert time.monotonic() - started < 1.0
    with pytest.raises(httpx.ConnectError):
        http.post(url, data={})


def test_stop_twice_is_harmless() -> None:
    """Stopping a stopped server does nothing."""
    server = TokenServer().start()
    server.stop()
    server.stop()
    with pytest.raises(RuntimeError):
        _ = server.url


def test_nothing_is_printed(
    http: httpx.Client, server: TokenServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """Requests, errors and dropped connections leave stdout and stderr empty."""
    token = server.grant(CLIENT_ID)
    refresh(http, server, token)
    server.fail_next(1, "reset")
    ignoring_transport_errors(lambda: refresh(http, server, token))
    server.fail_next(1, "huge")
    with http.stream("POST", server.url, data={}) as response:
        next(response.iter_bytes())
    refresh(http, server, "unknown")
    assert ("", "") == tuple(capfd.readouterr())
