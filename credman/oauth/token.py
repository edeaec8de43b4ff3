"""OAuth2 token requests: built and parsed by pure functions, sent by httpx."""

from __future__ import annotations

import base64
import json
import math
import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote_plus

import httpx
import jwt

from credman.crypto.secret import Secret
from credman.errors import RefreshFailed
from credman.lifecycle.types import JWTBearer, OAuth2

__all__ = [
    "JWT_BEARER_GRANT",
    "MAX_BODY",
    "MAX_EXPIRES_IN",
    "MAX_RETRY_AFTER",
    "PERMANENT_ERRORS",
    "RETRYABLE_ERRORS",
    "TokenGrant",
    "TokenRequest",
    "arequest_token",
    "backoff_delay",
    "build_token_request",
    "next_retry_delay",
    "parse_token_response",
    "request_token",
]

JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_BODY: Final = 1_048_576
MAX_RETRY_AFTER: Final = 86_400.0
MAX_EXPIRES_IN: Final = 10 * 365 * 86_400
PERMANENT_ERRORS: Final = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
"""The provider refused the grant itself: only an operator can fix it."""
RETRYABLE_ERRORS: Final = frozenset({"server_error", "temporarily_unavailable"})
"""Error codes that say the provider failed, whatever 4xx status carries them."""

_MASK: Final = "**********"
_ERROR_CODE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DELTA_SECONDS: Final = re.compile(r"[0-9]{1,16}")
_DECIMAL: Final = re.compile(r"[0-9]{1,20}(?:\.[0-9]{0,20})?")
_JITTER: Final = random.SystemRandom()


@dataclass(frozen=True)
class TokenRequest:
    """One POST to a token endpoint; its repr masks every form value and the Authorization."""

    url: str
    headers: dict[str, str]
    form: dict[str, str]

    def __repr__(self) -> str:
        headers = {
            name: _MASK if name.lower() == "authorization" else value
            for name, value in self.headers.items()
        }
        form = dict.fromkeys(self.form, _MASK)
        return f"TokenRequest(url={self.url!r}, headers={headers!r}, form={form!r})"


@dataclass(frozen=True)
class TokenGrant:
    """What a token endpoint granted; ``expires_in`` is None when missing or unusable."""

    access_token: Secret
    refresh_token: Secret | None
    expires_in: int | None
    token_type: str = "Bearer"
    scope: str | None = None


def build_token_request(credential: OAuth2 | JWTBearer, *, now: datetime) -> TokenRequest:
    """The token request that renews ``credential``'s access token (RFC 6749 §6, §4.4; RFC 7523).

    Raises a permanent ``RefreshFailed`` when the credential cannot make one (no refresh
    token, or a private key that does not load).
    """
    if isinstance(credential, JWTBearer):
        grant = {"grant_type": JWT_BEARER_GRANT, "assertion": _assertion(credential, now)}
        return _token_request(credential.token_url, grant, credential.scope, {})
    form, headers = _client_authentication(credential)
    return _token_request(
        credential.token_url, _oauth2_grant(credential) | form, credential.scope, headers
    )


def _token_request(
    url: str, form: dict[str, str], scope: str | None, headers: dict[str, str]
) -> TokenRequest:
    if scope is not None:
        form = form | {"scope": scope}
    return TokenRequest(url=url, headers={"Accept": "application/json"} | headers, form=form)


def _oauth2_grant(credential: OAuth2) -> dict[str, str]:
    if credential.grant_type == "client_credentials":
        return {"grant_type": "client_credentials"}
    if credential.refresh_token is None:
        raise RefreshFailed(
            "cannot refresh: the credential has no refresh token",
            permanent=True,
            error_code="no_refresh_token",
        )
    return {"grant_type": "refresh_token", "refresh_token": credential.refresh_token.reveal()}


def _client_authentication(credential: OAuth2) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and the headers that authenticate the client (RFC 6749 §2.3.1)."""
    secret = credential.client_secret
    if credential.client_auth == "client_secret_basic" and secret is not None:
        return {}, {"Authorization": _basic_authorization(credential.client_id, secret.reveal())}
    form = {"client_id": credential.client_id}
    if secret is not None:
        form["client_secret"] = secret.reveal()
    return form, {}


def _basic_authorization(client_id: str, client_secret: str) -> str:
    # RFC 6749 §2.3.1: both parts are form-urlencoded before they are joined and encoded.
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _assertion(credential: JWTBearer, now: datetime) -> str:
    """A signed RFC 7523 assertion valid from ``now`` for the credential's assertion lifetime."""
    issued_at = int(_aware(now).timestamp())
    claims = {
        "iss": credential.issuer,
        "sub": credential.subject,
        "aud": credential.audience,
        "iat": issued_at,
        "exp": issued_at + credential.assertion_lifetime,
        "jti": uuid.uuid4().hex,
    }
    headers = {"kid": credential.key_id} if credential.key_id else None
    key, algorithm = credential.private_key.reveal(), credential.algorithm
    try:
        return jwt.encode(claims, key, algorithm=algorithm, headers=headers)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise RefreshFailed(
            f"cannot sign the assertion: the private key does not load for {algorithm}",
            permanent=True,
            error_code="invalid_key",
        ) from None


def parse_token_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    max_body: int = MAX_BODY,
) -> TokenGrant:
    """The grant in a token endpoint's response, or the ``RefreshFailed`` it amounts to.

    Permanent: any 4xx except 408 and 429 (re-sending the same request cannot help),
    unless its error code is ``server_error`` or ``temporarily_unavailable``. Transient:
    everything else that is not a usable 200, including bodies that are not a JSON
    object, larger than ``max_body``, or a 200 carrying an ``error``. 429 and 503 carry
    ``retry_after`` from a valid ``Retry-After`` (seconds, clamped to [0, 86400]).
    Messages name the status and the error code only, never the body.
    """
    if len(body) > max_body:
        raise _too_large(status)
    payload = _json_object(body)
    if status == 200:
        return _grant_from(payload)
    raise _error_response(status, headers, payload, now)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting or numbers
        return None
    return payload if isinstance(payload, dict) else None


def _grant_from(payload: dict[str, Any] | None) -> TokenGrant:
    if payload is None or payload.get("error") is not None:
        raise _failure(200, _error_code(payload, "invalid_response"), permanent=False)
    access_token = _text(payload.get("access_token"))
    if access_token is None:
        raise _failure(200, "invalid_response", permanent=False)
    refresh_token = _text(payload.get("refresh_token"))
    token_type = _text(payload.get("token_type"))
    return TokenGrant(
        access_token=Secret(access_token),
        refresh_token=None if refresh_token is None else Secret(refresh_token),
        expires_in=_expires_in(payload.get("expires_in")),
        token_type=token_type if token_type is not None and len(token_type) <= 64 else "Bearer",
        scope=_text(payload.get("scope")),
    )


def _text(value: object) -> str | None:
    """``value`` when it is a string with something in it, else None."""
    return value if isinstance(value, str) and value.strip() else None


def _expires_in(value: object) -> int | None:
    """Whole seconds until expiry, or None when missing or unusable.

    Zero, negative, non-numeric and absurd (more than ten years) lifetimes are all
    treated as missing rather than refused: the access token itself is fine, and the
    caller's default lifetime then schedules the next check, so it is never forgotten.
    """
    seconds = _whole_seconds(value)
    return seconds if seconds is not None and 0 < seconds <= MAX_EXPIRES_IN else None


def _whole_seconds(value: object) -> int | None:
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, float):
        return math.floor(value) if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _error_response(
    status: int, headers: Mapping[str, str], payload: dict[str, Any] | None, now: datetime
) -> RefreshFailed:
    code = _error_code(payload, f"http_{status}")
    permanent = 400 <= status < 500 and status not in (408, 429) and code not in RETRYABLE_ERRORS
    if permanent or status not in (429, 503):
        return _failure(status, code, permanent=permanent)
    retry_after = _retry_after(_header(headers, "Retry-After"), now)
    return _failure(status, code, permanent=False, retry_after=retry_after)


def _error_code(payload: dict[str, Any] | None, fallback: str) -> str:
    """The provider's ``error`` when it is a short plain token, so it is safe to log."""
    error = None if payload is None else payload.get("error")
    if error is None:
        return fallback
    if isinstance(error, str) and _ERROR_CODE.fullmatch(error):
        return error
    return "invalid_response"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait per a ``Retry-After`` (delta-seconds or HTTP-date), clamped; else None."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = (_aware(when) - _aware(now)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _aware(moment: datetime) -> datetime:
    # A naive time is taken as UTC: HTTP-dates are GMT and credman works in UTC throughout.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _failure(
    status: int, code: str, *, permanent: bool, retry_after: float | None = None
) -> RefreshFailed:
    verdict = "refused the request" if permanent else "failed"
    return RefreshFailed(
        f"token endpoint {verdict}: HTTP {status}, error {code}",
        permanent=permanent,
        error_code=code,
        retry_after=retry_after,
    )


def _too_large(status: int) -> RefreshFailed:
    return RefreshFailed(
        f"token endpoint failed: HTTP {status}, response body too large",
        permanent=False,
        error_code="invalid_response",
    )


def request_token(
    client: httpx.Client,
    credential: OAuth2 | JWTBearer,
    *,
    now: datetime,
    timeout: float = 10.0,
    max_body: int = MAX_BODY,
) -> TokenGrant:
    """Build, send and parse one token request; every failure is a ``RefreshFailed``.

    The client's own auth and redirects are not used for this request, and at most
    ``max_body`` bytes (plus one, to notice more) of the response are read.
    """
    request = build_token_request(credential, now=now)
    try:
        with client.stream("POST", request.url, **_send_options(request, timeout)) as response:
            body = _BodyBuffer(response, max_body)
            for chunk in response.iter_bytes():
                if body.add(chunk):
                    break
    except httpx.RequestError as exc:
        failure = _transport_failure(exc)
    else:
        return body.parse(now)
    raise failure  # outside the except block: the httpx error (URL, request) is not chained


async def arequest_token(
    client: httpx.AsyncClient,
    credential: OAuth2 | JWTBearer,
    *,
    now: datetime,
    timeout: float = 10.0,
    max_body: int = MAX_BODY,
) -> TokenGrant:
    """The async twin of :func:`request_token`."""
    request = build_token_request(credential, now=now)
    try:
        async with client.stream(
            "POST", request.url, **_send_options(request, timeout)
        ) as response:
            body = _BodyBuffer(response, max_body)
            async for chunk in response.aiter_bytes():
                if body.add(chunk):
                    break
    except httpx.RequestError as exc:
        failure = _transport_failure(exc)
    else:
        return body.parse(now)
    raise failure  # outside the except block: the httpx error (URL, request) is not chained


def _send_options(request: TokenRequest, timeout: float) -> dict[str, Any]:
    return {
        "data": request.form,
        "headers": request.headers,
        "timeout": httpx.Timeout(timeout),
        "auth": None,  # a client-wide auth (even credman's own) must not touch token requests
        "follow_redirects": False,  # a redirect must not carry the secrets elsewhere
    }


class _BodyBuffer:
    """A response body kept up to one byte past the limit, so a larger one is noticed unread."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        if _declared_length(response.headers) > limit:
            raise _too_large(response.status_code)
        self._status = response.status_code
        self._headers = response.headers
        self._limit = limit
        self._body = bytearray()

    def add(self, chunk: bytes) -> bool:
        """Keep ``chunk``; True when enough has been read to decide."""
        self._body += chunk[: self._limit + 1 - len(self._body)]
        return len(self._body) > self._limit

    def parse(self, now: datetime) -> TokenGrant:
        """The grant or failure the body amounts to."""
        body = bytes(self._body)
        return parse_token_response(
            self._status, self._headers, body, now=now, max_body=self._limit
        )


def _declared_length(headers: httpx.Headers) -> int:
    try:
        return int(headers.get("Content-Length", "0"))
    except ValueError:
        return 0


def _transport_failure(exc: httpx.RequestError) -> RefreshFailed:
    if isinstance(exc, httpx.TimeoutException):
        code, what = "timeout", "timed out"
    elif isinstance(exc, httpx.TransportError):
        code, what = "connection_error", "lost its connection"
    else:  # e.g. a body whose declared content encoding does not decode
        code, what = "invalid_response", "got an undecodable response"
    return RefreshFailed(f"token request {what}", permanent=False, error_code=code)


def backoff_delay(
    attempt: int, *, base: float = 1.0, cap: float = 900.0, rng: random.Random | None = None
) -> float:
    """Seconds before retry ``attempt`` (0-based), with full jitter.

    Uniform in [0, min(cap, base * 2**attempt)]: spreading retries over the whole window
    keeps many failing credentials from hitting their provider in lockstep.
    """
    if attempt < 0 or base < 0 or cap < 0:
        raise ValueError("attempt, base and cap must not be negative")
    ceiling = min(cap, base * 2.0 ** min(attempt, 1023))  # past 2**1023 the cap rules anyway
    return (rng or _JITTER).uniform(0.0, ceiling)


def next_retry_delay(
    attempt: int,
    retry_after: float | None,
    *,
    base: float = 1.0,
    cap: float = 900.0,
    rng: random.Random | None = None,
) -> float:
    """The backoff delay, but never sooner than the provider's ``Retry-After``."""
    delay = backoff_delay(attempt, base=base, cap=cap, rng=rng)
    return delay if retry_after is None else max(retry_after, delay)
