"""A real OAuth2 provider on loopback, as strict as a production one, for tests.

Theory of operation: :class:`TokenServer` owns all the provider's state (clients,
authorization codes, device authorizations, grants, refresh and access tokens, counters)
behind one lock; a standard-library ``ThreadingHTTPServer`` bound to 127.0.0.1 only
translates HTTP to calls on it. Endpoints:

    GET  /authorize                          authorization code + PKCE (the test is the
                                             browser: ``authorize_mode`` consents or denies)
    POST /token                              authorization_code, refresh_token,
                                             client_credentials, RFC 7523 jwt-bearer and
                                             RFC 8628 device_code grants
    POST /device_authorization, GET /device  RFC 8628 device grant (GET /device?user_code=
                                             plays the user who approves or denies)
    POST /introspect, POST /revoke           RFC 7662 introspection, RFC 7009 revocation
    GET  /.well-known/openid-configuration   discovery of all of the above
    GET  /resource                           200 for a valid bearer token, else 401

Strictness: PKCE S256 is required (plain and a missing verifier are refused); the
redirect URI must match a registered one exactly, except that a loopback (127.0.0.1)
URI may use any port (RFC 8252 §7.3); codes are single use (a replay revokes what the
code granted) and expire after ``code_lifetime``. Refresh tokens rotate, and presenting
a rotated-out one revokes the whole grant, as providers that detect reuse do. With
``whole_seconds=True`` access tokens expire at ``floor(now) + expires_in``, as
oidc-provider computes ``exp``. Time comes from the ``clock`` option, so tests move it
instead of sleeping. ``python -m credman.testing.provider`` runs one from a shell.

Fault injection (``mode``, ``fail_next``) makes the provider hostile. A failure mode
answers before anything is looked at, so it never spends a refresh token:

    500                  500 with a text/plain body
    503_retry_after      503 temporarily_unavailable, Retry-After: 7
    429                  429, Retry-After: 3
    429_no_retry_after   429 without Retry-After
    slow                 stalls ``slow_seconds`` (cut short by stop()), then 504
    reset                drops the connection (TCP RST) without a response
    html                 200 with a text/html login page
    error_body_200       200 with {"error": "server_error"}
    huge                 200 with ``huge_bytes`` of valid JSON, no Content-Length
    no_access_token      200 JSON without access_token
    invalid_grant        400 invalid_grant (the grant itself is left alone)
    drip                 a 200 whose body arrives one byte every ``drip_seconds``

The quirk modes ``huge_access_token`` (20,000 characters) and ``crlf_token_type``
(``Bearer\r\nX-Injected: 1``) are real, rotating refreshes whose answer a client must
refuse: the old refresh token is spent, the new one is in the refused answer.

Providers' own quirks, for profile tests (they do not spend the refresh token):

    bad_refresh_token_200  200 {"error": "bad_refresh_token"} (GitHub)
    ok_false_200           200 {"ok": false, "error": "invalid_refresh_token"} (Slack)

The quirk modes ``no_expires_in`` and ``negative_expires_in`` are real, rotating
refreshes whose ``expires_in`` is missing or negative; ``expires_in_string`` sends it
as a string, ``expires_in_ms`` in milliseconds, ``ok_true`` adds Slack's ``"ok": true``
and ``instance_url`` sends no ``expires_in`` but Salesforce's ``instance_url``,
``issued_at`` and ``signature``. ``lost_response`` does the work
and then drops the connection: the provider has spent the old refresh token but the
client never saw the new one, so its retry is a replay that revokes the grant.

Nothing is logged: requests carry secrets.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import signal
import socket
import socketserver
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import jwt

__all__ = [
    "AUTHORIZE_MODES",
    "FAULT_MODES",
    "AuthorizationRequest",
    "DeviceAuthorization",
    "TokenServer",
    "main",
]

JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FAULT_MODES: Final = frozenset(
    {
        "ok",
        "500",
        "503_retry_after",
        "429",
        "429_no_retry_after",
        "slow",
        "reset",
        "lost_response",
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
        "bad_refresh_token_200",
        "ok_false_200",
        "expires_in_string",
        "expires_in_ms",
        "ok_true",
        "instance_url",
    }
)
AUTHORIZE_MODES: Final = frozenset({"consent", "access_denied"})
DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_VERIFIER: Final = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_CHALLENGE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_USER_CODE_ALPHABET: Final = "BCDFGHJKLMNPQRSTVWXZ"
MAX_REQUEST_BODY: Final = 65_536
MAX_ASSERTION_LIFETIME: Final = 3600
CLOCK_SKEW: Final = 60


class _Refusal(Exception):
    """An OAuth error response (RFC 6749 §5.2) ends the request."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class _Reply:
    """An HTTP answer; ``then`` says how to deliver it."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    then: Literal["send", "stream", "reset", "drip"] = "send"


@dataclass
class _Grant:
    client_id: str
    refreshes: int = 0
    revoked: bool = False


@dataclass(frozen=True)
class _AccessToken:
    grant_id: str | None
    expires_at: float
    issued_at: float
    client_id: str | None
    scope: str | None


@dataclass(frozen=True)
class AuthorizationRequest:
    """What a client asked ``/authorize`` for (kept so tests can check PKCE and redirect URI)."""

    client_id: str
    redirect_uri: str
    response_type: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    scope: str | None
    state: str | None
    params: Mapping[str, str]


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str | None
    expires_at: float
    used: bool = False
    grant_id: str | None = None


@dataclass
class DeviceAuthorization:
    """One RFC 8628 device authorization, as the provider sees it."""

    client_id: str
    user_code: str
    scope: str | None
    expires_at: float
    interval: int
    status: Literal["pending", "approved", "denied", "redeemed"] = "pending"
    polls: int = 0
    last_poll: float | None = None
    slow_down_next: int = 0


def _json(status: int, payload: Mapping[str, object], **headers: str) -> _Reply:
    no_store = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    return _Reply(status, json.dumps(payload).encode(), no_store | headers)


def _oauth_error(status: int, code: str) -> _Reply:
    if status == 401:
        return _json(status, {"error": code}, **{"WWW-Authenticate": 'Basic realm="token"'})
    return _json(status, {"error": code})


def _huge_body(size: int) -> bytes:
    # Valid JSON with a real-looking token: only a size limit keeps a client from taking it.
    head = b'{"access_token": "at_huge", "token_type": "Bearer", "padding": "'
    return head + b"a" * max(size - len(head) - 2, 0) + b'"}'


_CANNED_FAILURES: Final[Mapping[str, _Reply]] = {
    "500": _Reply(500, b"internal error", {"Content-Type": "text/plain"}),
    "503_retry_after": _json(503, {"error": "temporarily_unavailable"}, **{"Retry-After": "7"}),
    "429": _json(429, {"error": "rate_limited"}, **{"Retry-After": "3"}),
    "429_no_retry_after": _json(429, {"error": "rate_limited"}),
    "reset": _Reply(0, then="reset"),
    "html": _Reply(200, b"<html><body>Sign in</body></html>", {"Content-Type": "text/html"}),
    "error_body_200": _json(200, {"error": "server_error"}),
    "no_access_token": _json(200, {"token_type": "Bearer", "expires_in": 3600}),
    "invalid_grant": _oauth_error(400, "invalid_grant"),
    "bad_refresh_token_200": _json(
        200,
        {
            "error": "bad_refresh_token",
            "error_description": "The refresh token passed is incorrect or expired.",
        },
    ),
    "ok_false_200": _json(200, {"ok": False, "error": "invalid_refresh_token"}),
}


def _redirect(uri: str, params: Mapping[str, str | None]) -> _Reply:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    location = uri + ("&" if "?" in uri else "?") + query
    return _Reply(302, b"", {"Location": location, "Cache-Control": "no-store"})


def _page(status: int, text: str) -> _Reply:
    body = f"<!doctype html><title>{text}</title><p>{text}</p>".encode()
    return _Reply(status, body, {"Content-Type": "text/html; charset=utf-8"})


def _s256(verifier: str) -> str:
    """The RFC 7636 S256 code challenge of ``verifier``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _loopback_match(registered: str, presented: str) -> bool:
    """RFC 8252 §7.3: a loopback IP redirect URI matches on any port, all else exactly."""
    want, got = urlsplit(registered), urlsplit(presented)
    if want.scheme != "http" or want.hostname not in ("127.0.0.1", "::1"):
        return False
    try:
        got.port  # noqa: B018 (a malformed port raises)
    except ValueError:
        return False
    if got.username is not None or got.password is not None:
        return False
    same = (want.scheme, want.hostname, want.path, want.query, want.fragment)
    return same == (got.scheme, got.hostname, got.path, got.query, got.fragment)


class TokenServer:
    """An OAuth2 provider on 127.0.0.1; use as a context manager or start()/stop().

    Keyword-only options: ``clients`` (client_id -> secret), ``public_clients`` (ids that
    authenticate with PKCE alone), ``jwt_clients`` (client_id -> (public key PEM or HS
    secret, algorithm) for ``private_key_jwt``), ``redirect_uris`` (client_id -> the
    registered redirect URIs), ``access_token_lifetime`` (seconds, may be fractional),
    ``whole_seconds`` (expiry from whole epoch seconds), ``rotate_refresh_tokens``,
    ``issue_expires_in``, ``jwt_keys`` (issuer -> (key, algorithm) for jwt-bearer
    grants), ``authorize_mode`` ("consent" or "access_denied"), ``code_lifetime``,
    ``device_interval``, ``device_code_lifetime``, ``clock`` (epoch seconds), ``port``
    (0: any free one), ``slow_seconds`` (how long "slow" mode stalls) and ``huge_bytes``
    (the size of the "huge" body).
    """

    def __init__(
        self,
        *,
        clients: Mapping[str, str] | None = None,
        public_clients: Collection[str] = (),
        jwt_clients: Mapping[str, tuple[str, str]] | None = None,
        redirect_uris: Mapping[str, Collection[str]] | None = None,
        access_token_lifetime: float = 3600,
        whole_seconds: bool = False,
        rotate_refresh_tokens: bool = True,
        issue_expires_in: bool = True,
        jwt_keys: Mapping[str, tuple[str, str]] | None = None,
        authorize_mode: str = "consent",
        code_lifetime: float = 60.0,
        device_interval: int = 5,
        device_code_lifetime: float = 600.0,
        clock: Callable[[], float] = time.time,
        port: int = 0,
        slow_seconds: float = 5.0,
        huge_bytes: int = 8 * 1024 * 1024,
        drip_seconds: float = 0.5,
    ) -> None:
        if access_token_lifetime <= 0:
            raise ValueError("access_token_lifetime must be positive")
        self.access_token_lifetime = access_token_lifetime
        self.whole_seconds = whole_seconds
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.issue_expires_in = issue_expires_in
        self.authorize_mode = authorize_mode
        self.code_lifetime = code_lifetime
        self.device_interval = device_interval
        self.device_code_lifetime = device_code_lifetime
        self.slow_seconds = slow_seconds
        self.huge_bytes = huge_bytes
        self.drip_seconds = drip_seconds
        self._clients = dict(clients or {})
        self._public_clients = frozenset(public_clients)
        self._jwt_clients = dict(jwt_clients or {})
        self._redirect_uris = {k: tuple(v) for k, v in (redirect_uris or {}).items()}
        self._jwt_keys = dict(jwt_keys or {})
        self._clock = clock
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._mode = "ok"
        self._faults: deque[str] = deque()
        self._grants: dict[str, _Grant] = {}
        self._refresh_tokens: dict[str, str] = {}  # live refresh token -> grant id
        self._spent_refresh_tokens: dict[str, str] = {}  # rotated out -> grant id
        self._access_tokens: dict[str, _AccessToken] = {}
        self._revoked_access_tokens: set[str] = set()
        self._seen_jti: set[str] = set()
        self._revoked: list[str] = []
        self._codes: dict[str, _Code] = {}
        self._devices: dict[str, DeviceAuthorization] = {}  # device_code -> authorization
        self._authorization_requests: list[AuthorizationRequest] = []
        self._code_exchanges: list[Mapping[str, str]] = []
        self._client_auth_methods: list[str] = []
        self._token_requests = 0
        self._refreshes = 0
        self._resource_requests = 0

    @property
    def authorize_mode(self) -> str:
        """How ``/authorize`` and ``GET /device`` answer: "consent" or "access_denied"."""
        return self._authorize_mode

    @authorize_mode.setter
    def authorize_mode(self, mode: str) -> None:
        if mode not in AUTHORIZE_MODES:
            raise ValueError(f"unknown authorize mode {mode!r}; known: {sorted(AUTHORIZE_MODES)}")
        self._authorize_mode = mode

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> TokenServer:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        if self._httpd is not None:
            raise RuntimeError("TokenServer is already running")
        self._stopping.clear()
        self._httpd = _HTTPServer(self, self._port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},  # stop() waits at most this long for the loop
            name="credman-tokenserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; stalled "slow" handlers are woken up."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``; only while running."""
        if self._httpd is None:
            raise RuntimeError("TokenServer is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def url(self) -> str:
        """The token endpoint; also the audience jwt-bearer assertions must name."""
        return self.base_url + "/token"

    @property
    def resource_url(self) -> str:
        """A protected resource that accepts the access tokens this server issued."""
        return self.base_url + "/resource"

    @property
    def issuer(self) -> str:
        """The OIDC issuer: discovery lives at ``issuer + /.well-known/openid-configuration``."""
        return self.base_url

    @property
    def authorize_url(self) -> str:
        """The authorization endpoint (authorization code + PKCE)."""
        return self.base_url + "/authorize"

    @property
    def device_authorization_url(self) -> str:
        """The RFC 8628 device authorization endpoint."""
        return self.base_url + "/device_authorization"

    @property
    def introspection_url(self) -> str:
        """The RFC 7662 introspection endpoint."""
        return self.base_url + "/introspect"

    @property
    def revocation_url(self) -> str:
        """The RFC 7009 revocation endpoint."""
        return self.base_url + "/revoke"

    def discovery_document(self) -> dict[str, object]:
        """What ``/.well-known/openid-configuration`` answers."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorize_url,
            "token_endpoint": self.url,
            "device_authorization_endpoint": self.device_authorization_url,
            "introspection_endpoint": self.introspection_url,
            "revocation_endpoint": self.revocation_url,
            "response_types_supported": ["code"],
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "client_credentials",
                JWT_BEARER_GRANT,
                DEVICE_CODE_GRANT,
            ],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none",
            ],
        }

    # -- test helpers ------------------------------------------------------------------

    def grant(self, client_id: str, refresh_token: str | None = None) -> str:
        """Create a grant for ``client_id`` and return its first refresh token."""
        token = refresh_token or _new_token("rt_")
        with self._lock:
            if token in self._refresh_tokens or token in self._spent_refresh_tokens:
                raise ValueError("that refresh token is already in use")
            grant_id = _new_token("grant_")
            self._grants[grant_id] = _Grant(client_id)
            self._refresh_tokens[token] = grant_id
        return token

    def grant_of(self, token: str) -> str | None:
        """The grant a refresh token (live or spent) or an access token belongs to."""
        with self._lock:
            access = self._access_tokens.get(token)
            return (
                self._refresh_tokens.get(token)
                or self._spent_refresh_tokens.get(token)
                or (access.grant_id if access else None)
            )

    def refresh_count(self, grant_id: str) -> int:
        """How many refreshes succeeded on ``grant_id``."""
        with self._lock:
            return self._grants[grant_id].refreshes

    def revoke_grant(self, grant_id: str) -> None:
        """Revoke a grant as the provider's operator would: all its tokens stop working."""
        with self._lock:
            self._revoke(grant_id)

    def is_valid(self, access_token: str) -> bool:
        """Whether ``access_token`` was issued here, has not expired and its grant stands."""
        with self._lock:
            return self._access_token_active(access_token)

    def _access_token_active(self, access_token: str) -> bool:
        issued = self._access_tokens.get(access_token)
        if issued is None or self._clock() >= issued.expires_at:
            return False
        if access_token in self._revoked_access_tokens:
            return False
        return issued.grant_id is None or not self._grants[issued.grant_id].revoked

    def is_valid_refresh_token(self, refresh_token: str) -> bool:
        """Whether ``refresh_token`` would be accepted now (live, grant not revoked)."""
        with self._lock:
            grant_id = self._refresh_tokens.get(refresh_token)
            return grant_id is not None and not self._grants[grant_id].revoked

    def register_redirect_uri(self, client_id: str, redirect_uri: str) -> None:
        """Register one more redirect URI for ``client_id``."""
        with self._lock:
            self._redirect_uris[client_id] = (*self._redirect_uris.get(client_id, ()), redirect_uri)

    @property
    def authorization_requests(self) -> list[AuthorizationRequest]:
        """Every request ``/authorize`` received from a known client, oldest first."""
        with self._lock:
            return list(self._authorization_requests)

    @property
    def code_exchanges(self) -> list[Mapping[str, str]]:
        """The ``redirect_uri`` and ``code_verifier`` of every authorization_code request."""
        with self._lock:
            return list(self._code_exchanges)

    @property
    def client_auth_methods(self) -> list[str]:
        """How each authenticated token request authenticated its client, oldest first."""
        with self._lock:
            return list(self._client_auth_methods)

    def device_authorization(self, user_code: str) -> DeviceAuthorization:
        """The device authorization a user code belongs to (KeyError when unknown)."""
        with self._lock:
            return next(d for d in self._devices.values() if d.user_code == user_code)

    def approve_device(self, user_code: str, *, approve: bool = True) -> None:
        """Play the user who enters ``user_code`` and approves (or denies) the device."""
        with self._lock:
            device = next((d for d in self._devices.values() if d.user_code == user_code), None)
            if device is None or device.status != "pending":
                raise KeyError("no pending device authorization with that user code")
            device.status = "approved" if approve else "denied"

    def slow_down_next(self, user_code: str, polls: int = 1) -> None:
        """Answer the next ``polls`` polls of that device with ``slow_down``."""
        with self._lock:
            device = next(d for d in self._devices.values() if d.user_code == user_code)
            device.slow_down_next += polls

    def expires_at_of(self, access_token: str) -> float | None:
        """When an access token issued here expires (epoch seconds), even after it did."""
        with self._lock:
            issued = self._access_tokens.get(access_token)
            return None if issued is None else issued.expires_at

    def introspect(self, token: str) -> dict[str, object]:
        """What ``/introspect`` would answer about ``token`` (RFC 7662 §2.2)."""
        with self._lock:
            return self._introspection(token)

    @property
    def revoked_grants(self) -> list[str]:
        """Ids of the grants revoked so far (by replay detection or ``revoke_grant``)."""
        with self._lock:
            return list(self._revoked)

    @property
    def token_requests(self) -> int:
        """Every POST to the token endpoint, faulty answers included."""
        with self._lock:
            return self._token_requests

    @property
    def refreshes(self) -> int:
        """Successful refresh_token grants."""
        with self._lock:
            return self._refreshes

    @property
    def resource_requests(self) -> int:
        """Every GET of the resource endpoint."""
        with self._lock:
            return self._resource_requests

    @property
    def mode(self) -> str:
        """How the token endpoint answers when no ``fail_next`` fault is queued."""
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self._mode = _checked_mode(mode)

    def fail_next(self, n: int, mode: str) -> None:
        """Answer the next ``n`` token requests in ``mode``, then go back to ``self.mode``."""
        mode = _checked_mode(mode)
        with self._lock:
            self._faults.extend([mode] * n)

    # -- the endpoints (called from handler threads) -----------------------------------

    def _token_endpoint(self, content_type: str, body: bytes, authorization: str | None) -> _Reply:
        mode = self._next_mode()
        failure = self._failure_reply(mode)
        if failure is not None:
            return failure
        try:
            tokens = self._grant_tokens(_form(content_type, body), authorization, mode)
        except _Refusal as refusal:
            return _oauth_error(refusal.status, refusal.code)
        return _Reply(0, then="reset") if mode == "lost_response" else _json(200, tokens)

    def _next_mode(self) -> str:
        with self._lock:
            self._token_requests += 1
            return self._faults.popleft() if self._faults else self._mode

    def _failure_reply(self, mode: str) -> _Reply | None:
        """The answer of a failure mode, given before the request is even parsed."""
        if mode == "slow":
            self._stopping.wait(self.slow_seconds)  # stop() cuts the stall short
            return _oauth_error(504, "temporarily_unavailable")
        if mode == "drip":
            return _Reply(200, b'{"error": "server_error", "padding": "........"}', then="drip")
        if mode == "huge":
            headers = {"Content-Type": "application/json"}
            return _Reply(200, _huge_body(self.huge_bytes), headers, then="stream")
        return _CANNED_FAILURES.get(mode)

    def _grant_tokens(
        self, form: dict[str, str], authorization: str | None, mode: str
    ) -> dict[str, object]:
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            return self._refresh(form, self._authenticate(form, authorization), mode)
        if grant_type == "authorization_code":
            return self._code_grant(form, self._authenticate(form, authorization), mode)
        if grant_type == DEVICE_CODE_GRANT:
            return self._device_grant(form, self._authenticate(form, authorization), mode)
        if grant_type == "client_credentials":
            client_id = self._authenticate(form, authorization, public_ok=False)
            with self._lock:
                return self._access_token_payload(None, client_id, form.get("scope"), mode)
        if grant_type == JWT_BEARER_GRANT:
            return self._jwt_bearer(form, mode)
        raise _Refusal(400, "invalid_request" if grant_type is None else "unsupported_grant_type")

    # -- authorization code + PKCE ---------------------------------------------------

    def _authorize(self, query: str) -> _Reply:
        """``GET /authorize``: a redirect with a code, or with an error, or a 400 page."""
        try:
            params = _query(query)
        except _Refusal:
            return _page(400, "invalid request")
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        with self._lock:
            if not self._redirect_allowed(client_id, redirect_uri):
                # never redirect to a URI that is not the client's (RFC 6749 §4.1.2.1)
                return _page(400, "unknown client or unregistered redirect_uri")
            request = _authorization_request(client_id, redirect_uri, params)
            self._authorization_requests.append(request)
            return self._authorization_answer(request)

    def _authorization_answer(self, request: AuthorizationRequest) -> _Reply:
        error = _authorization_error(request) or (
            "access_denied" if self._authorize_mode == "access_denied" else None
        )
        answer: dict[str, str | None] = {"state": request.state, "iss": self.issuer}
        if error is not None:
            return _redirect(request.redirect_uri, {"error": error} | answer)
        code = _new_token("code_")
        self._codes[code] = _Code(
            client_id=request.client_id,
            redirect_uri=request.redirect_uri,
            challenge=request.code_challenge or "",
            scope=request.scope,
            expires_at=self._clock() + self.code_lifetime,
        )
        return _redirect(request.redirect_uri, {"code": code} | answer)

    def _redirect_allowed(self, client_id: str, redirect_uri: str) -> bool:
        known = client_id in self._clients or client_id in self._public_clients
        known = known or client_id in self._jwt_clients
        registered = self._redirect_uris.get(client_id, ())
        return known and any(
            uri == redirect_uri or _loopback_match(uri, redirect_uri) for uri in registered
        )

    def _code_grant(self, form: dict[str, str], client_id: str, mode: str) -> dict[str, object]:
        code, verifier = form.get("code"), form.get("code_verifier")
        if code is None or form.get("redirect_uri") is None or verifier is None:
            raise _Refusal(400, "invalid_request")
        with self._lock:
            exchange = {"redirect_uri": form["redirect_uri"], "code_verifier": verifier}
            self._code_exchanges.append(exchange)
            issued = self._redeem_code(code, client_id, form["redirect_uri"], verifier)
            grant_id = _new_token("grant_")
            self._grants[grant_id] = _Grant(client_id)
            issued.grant_id = grant_id
            payload = self._access_token_payload(grant_id, client_id, issued.scope, mode)
            payload["refresh_token"] = self._new_refresh_token(grant_id)
            return payload

    def _redeem_code(self, code: str, client_id: str, redirect_uri: str, verifier: str) -> _Code:
        issued = self._codes.get(code)
        if issued is None:
            raise _Refusal(400, "invalid_grant")
        if issued.used:  # a replayed code: revoke what it granted (RFC 6749 §4.1.2)
            if issued.grant_id is not None:
                self._revoke(issued.grant_id)
            raise _Refusal(400, "invalid_grant")
        issued.used = True
        fresh = self._clock() < issued.expires_at
        bound = issued.client_id == client_id and issued.redirect_uri == redirect_uri
        proven = _VERIFIER.fullmatch(verifier) is not None and hmac.compare_digest(
            _s256(verifier), issued.challenge
        )
        if not (fresh and bound and proven):
            raise _Refusal(400, "invalid_grant")
        return issued

    # -- device authorization (RFC 8628) -------------------------------------------

    def _device_authorization(
        self, content_type: str, body: bytes, authorization: str | None
    ) -> _Reply:
        try:
            form = _form(content_type, body)
            client_id = self._authenticate(form, authorization)
        except _Refusal as refusal:
            return _oauth_error(refusal.status, refusal.code)
        device_code, user_code = _new_token("dc_"), _user_code()
        with self._lock:
            self._devices[device_code] = DeviceAuthorization(
                client_id=client_id,
                user_code=user_code,
                scope=form.get("scope"),
                expires_at=self._clock() + self.device_code_lifetime,
                interval=self.device_interval,
            )
        verification_uri = self.base_url + "/device"
        return _json(
            200,
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": verification_uri,
                "verification_uri_complete": verification_uri + "?user_code=" + user_code,
                "expires_in": math.ceil(self.device_code_lifetime),
                "interval": self.device_interval,
            },
        )

    def _device_page(self, query: str) -> _Reply:
        """``GET /device?user_code=``: the user approves (or, in access_denied mode, denies)."""
        user_code = dict(parse_qsl(query)).get("user_code", "")
        try:
            self.approve_device(user_code, approve=self._authorize_mode == "consent")
        except KeyError:
            return _page(400, "unknown or used user code")
        return _page(200, "device approved" if self._authorize_mode == "consent" else "denied")

    def _device_grant(self, form: dict[str, str], client_id: str, mode: str) -> dict[str, object]:
        with self._lock:
            device = self._devices.get(form.get("device_code", ""))
            if device is None or device.client_id != client_id or device.status == "redeemed":
                raise _Refusal(400, "invalid_grant")
            self._poll(device)
            grant_id = _new_token("grant_")
            self._grants[grant_id] = _Grant(client_id)
            device.status = "redeemed"
            payload = self._access_token_payload(grant_id, client_id, device.scope, mode)
            payload["refresh_token"] = self._new_refresh_token(grant_id)
            return payload

    def _poll(self, device: DeviceAuthorization) -> None:
        """Refuse a poll that may not have the tokens yet (RFC 8628 §3.5)."""
        now = self._clock()
        device.polls += 1
        too_soon = device.last_poll is not None and now - device.last_poll < device.interval
        device.last_poll = now
        if now >= device.expires_at:
            raise _Refusal(400, "expired_token")
        if device.status == "denied":
            raise _Refusal(400, "access_denied")
        if too_soon or device.slow_down_next > 0:
            device.slow_down_next = max(0, device.slow_down_next - 1)
            device.interval += 5
            raise _Refusal(400, "slow_down")
        if device.status == "pending":
            raise _Refusal(400, "authorization_pending")

    # -- introspection and revocation --------------------------------------------------

    def _introspect_endpoint(
        self, content_type: str, body: bytes, authorization: str | None
    ) -> _Reply:
        try:
            form = _form(content_type, body)
            self._authenticate(form, authorization, public_ok=False)
        except _Refusal as refusal:
            return _oauth_error(refusal.status, refusal.code)
        with self._lock:
            return _json(200, self._introspection(form.get("token", "")))

    def _introspection(self, token: str) -> dict[str, object]:
        issued = self._access_tokens.get(token)
        if issued is not None and self._access_token_active(token):
            return {
                "active": True,
                "token_type": "Bearer",
                "client_id": issued.client_id,
                "scope": issued.scope,
                "iat": _numeric_date(issued.issued_at),
                "exp": _numeric_date(issued.expires_at),
            }
        grant_id = self._refresh_tokens.get(token)
        if grant_id is not None and not self._grants[grant_id].revoked:
            return {"active": True, "token_type": "refresh_token"}
        return {"active": False}

    def _revoke_endpoint(self, content_type: str, body: bytes, authorization: str | None) -> _Reply:
        try:
            form = _form(content_type, body)
            client_id = self._authenticate(form, authorization)
            token = form.get("token")
            if token is None:
                raise _Refusal(400, "invalid_request")
            with self._lock:
                self._revoke_token(token, client_id)
        except _Refusal as refusal:
            return _oauth_error(refusal.status, refusal.code)
        return _Reply(200, b"", {"Cache-Control": "no-store"})

    def _revoke_token(self, token: str, client_id: str) -> None:
        """RFC 7009 §2.1: a refresh token takes its grant with it; unknown tokens are fine."""
        grant_id = self._refresh_tokens.get(token) or self._spent_refresh_tokens.get(token)
        access = self._access_tokens.get(token)
        owner = self._grants[grant_id].client_id if grant_id else (access and access.client_id)
        if owner is not None and owner != client_id:
            raise _Refusal(400, "invalid_request")
        if grant_id is not None:
            self._revoke(grant_id)
        elif access is not None:
            self._revoked_access_tokens.add(token)

    def _resource(self, authorization: str | None) -> _Reply:
        with self._lock:
            self._resource_requests += 1
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and self.is_valid(token.strip()):
            return _json(200, {"ok": True})
        return _json(401, {"error": "invalid_token"}, **{"WWW-Authenticate": "Bearer"})

    # -- grants ------------------------------------------------------------------------

    def _authenticate(
        self, form: dict[str, str], authorization: str | None, *, public_ok: bool = True
    ) -> str:
        """The client id, authenticated one way only: client_secret_basic, client_secret_post,
        private_key_jwt, or (for a public client, when ``public_ok``) none."""
        methods = [authorization is not None, "client_secret" in form, "client_assertion" in form]
        if sum(methods) > 1:
            raise _Refusal(400, "invalid_request")
        if "client_assertion" in form:
            return self._record_auth("private_key_jwt", self._assertion_client(form))
        if authorization is None and "client_secret" not in form:
            client_id = form.get("client_id", "")
            if not (public_ok and client_id in self._public_clients):
                raise _Refusal(401, "invalid_client")
            return self._record_auth("none", client_id)
        if authorization is not None:
            client_id, secret = _basic_credentials(authorization)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        expected = self._clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            raise _Refusal(401, "invalid_client")
        method = "client_secret_basic" if authorization is not None else "client_secret_post"
        return self._record_auth(method, client_id)

    def _record_auth(self, method: str, client_id: str) -> str:
        with self._lock:
            self._client_auth_methods.append(method)
        return client_id

    def _assertion_client(self, form: dict[str, str]) -> str:
        """The client an RFC 7523 §2.2 client assertion authenticates (single use, for us)."""
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise _Refusal(400, "invalid_request")
        assertion = form["client_assertion"]
        try:
            client_id = str(jwt.decode(assertion, options={"verify_signature": False})["iss"])
            key, algorithm = self._jwt_clients[client_id]
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key,
                algorithms=[algorithm],
                audience=self.url,
                issuer=client_id,
                options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_exp": False},
            )
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            raise _Refusal(401, "invalid_client") from None
        fresh = _is_number(claims["exp"]) and self._clock() < claims["exp"]
        if claims["sub"] != client_id or form.get("client_id", client_id) != client_id:
            fresh = False
        with self._lock:
            if not fresh or claims["jti"] in self._seen_jti:
                raise _Refusal(401, "invalid_client")
            self._seen_jti.add(claims["jti"])
        return client_id

    def _refresh(self, form: dict[str, str], client_id: str, mode: str) -> dict[str, object]:
        presented = form.get("refresh_token")
        if presented is None:
            raise _Refusal(400, "invalid_request")
        with self._lock:
            grant_id = self._redeem(presented, client_id)
            self._grants[grant_id].refreshes += 1
            self._refreshes += 1
            payload = self._access_token_payload(grant_id, client_id, form.get("scope"), mode)
            if self.rotate_refresh_tokens:
                del self._refresh_tokens[presented]
                self._spent_refresh_tokens[presented] = grant_id
                payload["refresh_token"] = self._new_refresh_token(grant_id)
            return payload

    def _redeem(self, refresh_token: str, client_id: str) -> str:
        """The grant of a live refresh token; a replayed (spent) one revokes its whole grant."""
        replayed = self._spent_refresh_tokens.get(refresh_token)
        if replayed is not None:
            self._revoke(replayed)
            raise _Refusal(400, "invalid_grant")
        grant_id = self._refresh_tokens.get(refresh_token)
        if grant_id is None:
            raise _Refusal(400, "invalid_grant")
        grant = self._grants[grant_id]
        if grant.revoked or grant.client_id != client_id:
            raise _Refusal(400, "invalid_grant")
        return grant_id

    def _revoke(self, grant_id: str) -> None:
        grant = self._grants[grant_id]
        if not grant.revoked:
            grant.revoked = True
            self._revoked.append(grant_id)

    def _new_refresh_token(self, grant_id: str) -> str:
        token = _new_token("rt_")
        self._refresh_tokens[token] = grant_id
        return token

    def _access_token_payload(
        self, grant_id: str | None, client_id: str | None, scope: str | None, mode: str
    ) -> dict[str, object]:
        token = _new_token("at_")
        now = self._clock()
        expires_in = max(1, round(self.access_token_lifetime))
        if self.whole_seconds:  # oidc-provider: iat = floor(now), exp = iat + expires_in
            issued_at = float(math.floor(now))
            expires_at = issued_at + expires_in
        else:
            issued_at, expires_at = now, now + self.access_token_lifetime
        self._access_tokens[token] = _AccessToken(grant_id, expires_at, issued_at, client_id, scope)
        payload: dict[str, object] = {"access_token": token, "token_type": "Bearer"}
        if scope is not None:
            payload["scope"] = scope
        if mode == "huge_access_token":
            payload["access_token"] = token + "x" * 20_000
        if mode == "crlf_token_type":
            payload["token_type"] = "Bearer\r\nX-Injected: 1"
        return payload | self._lifetime_fields(mode, expires_in, now)

    def _lifetime_fields(self, mode: str, seconds: int, now: float) -> dict[str, object]:
        """``expires_in`` as the mode sends it, plus the fields some providers add."""
        if mode == "negative_expires_in":
            return {"expires_in": -seconds}
        if mode == "no_expires_in" or not self.issue_expires_in:
            return {}
        if mode == "instance_url":  # Salesforce: no expires_in, an instance URL, issued_at
            return {
                "instance_url": self.base_url + "/instance",
                "issued_at": str(int(now * 1000)),
                "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        quirks: dict[str, dict[str, object]] = {
            "expires_in_string": {"expires_in": str(seconds)},
            "expires_in_ms": {"expires_in": seconds * 1000},
            "ok_true": {"ok": True, "expires_in": seconds},
        }
        return quirks.get(mode, {"expires_in": seconds})

    def _jwt_bearer(self, form: dict[str, str], mode: str) -> dict[str, object]:
        claims = self._verified_assertion(form.get("assertion"))
        with self._lock:
            if claims["jti"] in self._seen_jti:  # an assertion is good for one use
                raise _Refusal(400, "invalid_grant")
            self._seen_jti.add(claims["jti"])
            return self._access_token_payload(None, None, form.get("scope"), mode)

    def _verified_assertion(self, assertion: str | None) -> dict[str, Any]:
        """The claims of an RFC 7523 assertion signed by a known issuer, for this endpoint."""
        if not assertion:
            raise _Refusal(400, "invalid_request")
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False})["iss"]
            key, algorithm = self._jwt_keys[issuer]
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key,
                algorithms=[algorithm],
                audience=self.url,
                issuer=issuer,
                # times are checked against the server's clock below, not the real one
                options={
                    "require": ["iss", "sub", "aud", "exp", "iat", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            raise _Refusal(400, "invalid_grant") from None
        self._check_assertion_times(claims)
        return claims

    def _check_assertion_times(self, claims: dict[str, Any]) -> None:
        issued_at, expires_at, jti = claims["iat"], claims["exp"], claims["jti"]
        if not (_is_number(issued_at) and _is_number(expires_at) and isinstance(jti, str)):
            raise _Refusal(400, "invalid_grant")
        now = self._clock()
        fresh = issued_at - CLOCK_SKEW <= now < expires_at
        if not fresh or expires_at - issued_at > MAX_ASSERTION_LIFETIME:
            raise _Refusal(400, "invalid_grant")


def _query(query: str) -> dict[str, str]:
    """Query parameters; a repeated one is an error (RFC 6749 §3.1)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs):
        raise _Refusal(400, "invalid_request")
    return params


def _authorization_request(
    client_id: str, redirect_uri: str, params: dict[str, str]
) -> AuthorizationRequest:
    return AuthorizationRequest(
        client_id=client_id,
        redirect_uri=redirect_uri,
        response_type=params.get("response_type"),
        code_challenge=params.get("code_challenge"),
        code_challenge_method=params.get("code_challenge_method"),
        scope=params.get("scope"),
        state=params.get("state"),
        params=dict(params),
    )


def _authorization_error(request: AuthorizationRequest) -> str | None:
    """Why the request cannot get a code: PKCE S256 is required, plain is refused."""
    if request.response_type != "code":
        return "unsupported_response_type"
    challenge = request.code_challenge or ""
    if request.code_challenge_method != "S256" or not _CHALLENGE.fullmatch(challenge):
        return "invalid_request"
    return None


def _user_code() -> str:
    letters = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def _numeric_date(moment: float) -> int | float:
    return int(moment) if moment == int(moment) else moment


def _checked_mode(mode: str) -> str:
    if mode not in FAULT_MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(sorted(FAULT_MODES))}")
    return mode


def _new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(24)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _form(content_type: str, body: bytes) -> dict[str, str]:
    """The form parameters; a repeated parameter is an error (RFC 6749 §3.2)."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise _Refusal(400, "invalid_request")
    try:
        pairs = parse_qsl(body.decode("ascii"), errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise _Refusal(400, "invalid_request") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise _Refusal(400, "invalid_request")
    return form


def _basic_credentials(authorization: str) -> tuple[str, str]:
    """(client_id, secret) from a Basic header, each form-urldecoded (RFC 6749 §2.3.1)."""
    scheme, _, encoded = authorization.partition(" ")
    try:
        if scheme.lower() != "basic":
            raise ValueError(scheme)
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (ValueError, binascii.Error):
        raise _Refusal(401, "invalid_client") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _Refusal(401, "invalid_client")
    return unquote_plus(client_id), unquote_plus(secret)


class _HTTPServer(ThreadingHTTPServer):
    """Serves one :class:`TokenServer`; quiet about clients that hang up."""

    daemon_threads = True

    def __init__(self, token_server: TokenServer, port: int) -> None:
        self.token_server = token_server
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look up the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Say nothing: clients hanging up is routine here, and tracebacks could hold tokens."""


class _Handler(BaseHTTPRequestHandler):
    """Translates HTTP to calls on the TokenServer and delivers its replies."""

    server: _HTTPServer
    timeout = 10  # a stalled peer cannot pin a handler thread for ever
    server_version = "credman-tokenserver"
    sys_version = ""

    def do_POST(self) -> None:
        body = self._body()
        provider = self.server.token_server
        endpoints = {
            "/token": provider._token_endpoint,
            "/device_authorization": provider._device_authorization,
            "/introspect": provider._introspect_endpoint,
            "/revoke": provider._revoke_endpoint,
        }
        endpoint = endpoints.get(urlsplit(self.path).path)
        if endpoint is None:
            self._deliver(_json(404, {"error": "not_found"}))
        elif body is None:
            self._deliver(_oauth_error(400, "invalid_request"))
        else:
            content_type = self.headers.get("Content-Type", "")
            self._deliver(endpoint(content_type, body, self.headers.get("Authorization")))

    def do_GET(self) -> None:
        provider = self.server.token_server
        target = urlsplit(self.path)
        if target.path == "/resource":
            self._deliver(provider._resource(self.headers.get("Authorization")))
        elif target.path == "/authorize":
            self._deliver(provider._authorize(target.query))
        elif target.path == "/device":
            self._deliver(provider._device_page(target.query))
        elif target.path == "/.well-known/openid-configuration":
            self._deliver(_json(200, provider.discovery_document()))
        else:
            self._deliver(_json(404, {"error": "not_found"}))

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: request lines and headers can carry secrets."""

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return self.rfile.read(length) if 0 <= length <= MAX_REQUEST_BODY else None

    def _deliver(self, reply: _Reply) -> None:
        if reply.then == "reset":
            self._reset()
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.then in ("send", "drip"):
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.then == "drip":
            self._drip(reply.body)
            return
        self._write(reply.body)

    def _drip(self, body: bytes) -> None:
        stopping, pause = self.server.token_server._stopping, self.server.token_server.drip_seconds
        try:
            for index in range(len(body)):
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
                if stopping.wait(pause):
                    break
        except OSError:
            pass
        self.close_connection = True

    def _write(self, body: bytes) -> None:
        # In chunks, so a client that stops reading a huge body ends the write early.
        view = memoryview(body)
        try:
            for start in range(0, len(view), 65_536):
                self.wfile.write(view[start : start + 65_536])
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        """Drop the connection with a TCP RST and no response."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


def main(argv: list[str] | None = None) -> None:
    """``python -m credman.testing.provider``: serve a provider until SIGINT or SIGTERM.

    The client secret comes from ``CREDMAN_PROVIDER_CLIENT_SECRET`` (never from argv, where
    ``ps`` would show it); without it the client is public (PKCE alone).
    """
    parser = argparse.ArgumentParser(
        prog="python -m credman.testing.provider", description=main.__doc__
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--client-id", default="credman-test")
    parser.add_argument("--redirect-uri", action="append", default=[], help="repeatable")
    parser.add_argument("--lifetime", type=float, default=3600, help="access token seconds")
    parser.add_argument("--whole-seconds", action="store_true", help="exp = floor(now) + ttl")
    parser.add_argument("--authorize-mode", choices=sorted(AUTHORIZE_MODES), default="consent")
    parser.add_argument("--device-interval", type=int, default=5)
    options = parser.parse_args(argv)
    secret = os.environ.get("CREDMAN_PROVIDER_CLIENT_SECRET")
    server = TokenServer(
        clients={options.client_id: secret} if secret else {},
        public_clients=() if secret else (options.client_id,),
        redirect_uris={options.client_id: options.redirect_uri or ["http://127.0.0.1/callback"]},
        access_token_lifetime=options.lifetime,
        whole_seconds=options.whole_seconds,
        authorize_mode=options.authorize_mode,
        device_interval=options.device_interval,
        port=options.port,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(f"issuer {server.issuer}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):  # short waits: the main thread must run the handler
                pass


if __name__ == "__main__":
    main()
