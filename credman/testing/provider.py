"""A real OAuth2 token endpoint on loopback, as strict as a production provider.

Theory of operation: :class:`TokenServer` owns all the provider's state (clients,
grants, refresh and access tokens, counters) behind one lock; a standard-library
``ThreadingHTTPServer`` bound to 127.0.0.1 on an OS-assigned port only translates HTTP
to calls on it. ``POST /token`` serves the refresh_token, client_credentials and RFC 7523
jwt-bearer grants; ``GET /resource`` answers 200 to a valid bearer token and 401
otherwise. Refresh tokens rotate, and presenting a rotated-out one revokes the whole
grant, as providers that detect reuse do. Time comes from the ``clock`` option, so tests
move it instead of sleeping.

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

The quirk modes ``no_expires_in`` and ``negative_expires_in`` are real, rotating
refreshes whose ``expires_in`` is missing or negative. ``lost_response`` does the work
and then drops the connection: the provider has spent the old refresh token but the
client never saw the new one, so its retry is a replay that revokes the grant.

Nothing is logged: requests carry secrets.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import socket
import socketserver
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import jwt

__all__ = ["FAULT_MODES", "TokenServer"]

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
        "negative_expires_in",
        "no_expires_in",
        "invalid_grant",
    }
)
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
    then: Literal["send", "stream", "reset"] = "send"


@dataclass
class _Grant:
    client_id: str
    refreshes: int = 0
    revoked: bool = False


@dataclass(frozen=True)
class _AccessToken:
    grant_id: str | None
    expires_at: float


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
}


class TokenServer:
    """An OAuth2 token endpoint on 127.0.0.1; use as a context manager or start()/stop().

    Keyword-only options: ``clients`` (client_id -> secret), ``access_token_lifetime``
    (seconds, may be fractional), ``rotate_refresh_tokens``, ``issue_expires_in``,
    ``jwt_keys`` (issuer -> (public key PEM or HS secret, algorithm)), ``clock`` (epoch
    seconds), ``slow_seconds`` (how long "slow" mode stalls) and ``huge_bytes`` (the size
    of the "huge" body).
    """

    def __init__(
        self,
        *,
        clients: Mapping[str, str] | None = None,
        access_token_lifetime: float = 3600,
        rotate_refresh_tokens: bool = True,
        issue_expires_in: bool = True,
        jwt_keys: Mapping[str, tuple[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
        slow_seconds: float = 5.0,
        huge_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        if access_token_lifetime <= 0:
            raise ValueError("access_token_lifetime must be positive")
        self.access_token_lifetime = access_token_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.issue_expires_in = issue_expires_in
        self.slow_seconds = slow_seconds
        self.huge_bytes = huge_bytes
        self._clients = dict(clients or {})
        self._jwt_keys = dict(jwt_keys or {})
        self._clock = clock
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
        self._seen_jti: set[str] = set()
        self._revoked: list[str] = []
        self._token_requests = 0
        self._refreshes = 0
        self._resource_requests = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> TokenServer:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        if self._httpd is not None:
            raise RuntimeError("TokenServer is already running")
        self._stopping.clear()
        self._httpd = _HTTPServer(self)
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
            issued = self._access_tokens.get(access_token)
            if issued is None or self._clock() >= issued.expires_at:
                return False
            return issued.grant_id is None or not self._grants[issued.grant_id].revoked

    def is_valid_refresh_token(self, refresh_token: str) -> bool:
        """Whether ``refresh_token`` would be accepted now (live, grant not revoked)."""
        with self._lock:
            grant_id = self._refresh_tokens.get(refresh_token)
            return grant_id is not None and not self._grants[grant_id].revoked

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
        if grant_type == "client_credentials":
            self._authenticate(form, authorization)
            with self._lock:
                return self._access_token_payload(None, form, mode)
        if grant_type == JWT_BEARER_GRANT:
            return self._jwt_bearer(form, mode)
        raise _Refusal(400, "invalid_request" if grant_type is None else "unsupported_grant_type")

    def _resource(self, authorization: str | None) -> _Reply:
        with self._lock:
            self._resource_requests += 1
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and self.is_valid(token.strip()):
            return _json(200, {"ok": True})
        return _json(401, {"error": "invalid_token"}, **{"WWW-Authenticate": "Bearer"})

    # -- grants ------------------------------------------------------------------------

    def _authenticate(self, form: dict[str, str], authorization: str | None) -> str:
        """The client id, after checking its secret (client_secret_basic or _post, not both)."""
        if authorization is not None:
            if "client_secret" in form:
                raise _Refusal(400, "invalid_request")
            client_id, secret = _basic_credentials(authorization)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        expected = self._clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            raise _Refusal(401, "invalid_client")
        return client_id

    def _refresh(self, form: dict[str, str], client_id: str, mode: str) -> dict[str, object]:
        presented = form.get("refresh_token")
        if presented is None:
            raise _Refusal(400, "invalid_request")
        with self._lock:
            grant_id = self._redeem(presented, client_id)
            self._grants[grant_id].refreshes += 1
            self._refreshes += 1
            payload = self._access_token_payload(grant_id, form, mode)
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
        self, grant_id: str | None, form: dict[str, str], mode: str
    ) -> dict[str, object]:
        token = _new_token("at_")
        expires_at = self._clock() + self.access_token_lifetime
        self._access_tokens[token] = _AccessToken(grant_id, expires_at)
        payload: dict[str, object] = {"access_token": token, "token_type": "Bearer"}
        expires_in = self._expires_in(mode)
        if expires_in is not None:
            payload["expires_in"] = expires_in
        if "scope" in form:
            payload["scope"] = form["scope"]
        return payload

    def _expires_in(self, mode: str) -> int | None:
        seconds = max(1, round(self.access_token_lifetime))
        if mode == "negative_expires_in":
            return -seconds
        if mode == "no_expires_in" or not self.issue_expires_in:
            return None
        return seconds

    def _jwt_bearer(self, form: dict[str, str], mode: str) -> dict[str, object]:
        claims = self._verified_assertion(form.get("assertion"))
        with self._lock:
            if claims["jti"] in self._seen_jti:  # an assertion is good for one use
                raise _Refusal(400, "invalid_grant")
            self._seen_jti.add(claims["jti"])
            return self._access_token_payload(None, form, mode)

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

    def __init__(self, token_server: TokenServer) -> None:
        self.token_server = token_server
        super().__init__(("127.0.0.1", 0), _Handler)

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
        if urlsplit(self.path).path != "/token":
            self._deliver(_json(404, {"error": "not_found"}))
        elif body is None:
            self._deliver(_oauth_error(400, "invalid_request"))
        else:
            content_type = self.headers.get("Content-Type", "")
            authorization = self.headers.get("Authorization")
            self._deliver(
                self.server.token_server._token_endpoint(content_type, body, authorization)
            )

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/resource":
            self._deliver(_json(404, {"error": "not_found"}))
        else:
            self._deliver(self.server.token_server._resource(self.headers.get("Authorization")))

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
        if reply.then == "send":
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self._write(reply.body)

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
