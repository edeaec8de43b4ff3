"""OAuth2 token requests: built and parsed by pure functions, sent by httpx.

The refresh-token, client-credentials and RFC 7523 grants renew tokens; the same
builders and parser serve the authorization-code and device grants (``authorize``,
``device``). Clients authenticate with ``client_secret_post``, ``client_secret_basic`` or
``private_key_jwt`` (RFC 7523 §2.2). A provider's quirks (``ResponseQuirks``, from its
profile) are applied by the parser as flags.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote_plus

import httpx
import jwt

from credman.crypto.secret import Secret
from credman.deadline import Deadline
from credman.errors import RefreshFailed
from credman.lifecycle.types import MAX_SECRET_LENGTH, JWTBearer, OAuth2
from credman.logs import own_requests
from credman.oauth.profiles import quirks_for
from credman.oauth.quirks import STANDARD, ResponseQuirks

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "JWT_BEARER_GRANT",
    "KNOWN_ERRORS",
    "MAX_BODY",
    "MAX_EXPIRES_IN",
    "MAX_RETRY_AFTER",
    "PERMANENT_ERRORS",
    "RETRYABLE_ERRORS",
    "WHOLE_SECOND",
    "TokenGrant",
    "TokenRequest",
    "arequest_token",
    "backoff_delay",
    "build_grant_request",
    "build_token_request",
    "expires_at_from",
    "next_retry_delay",
    "parse_token_response",
    "request_token",
    "send_token_request",
]

JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
WHOLE_SECOND: Final = timedelta(seconds=1)
"""Providers compute ``exp`` from whole epoch seconds (``floor(now) + expires_in``), so a
token can die up to this much before ``sent_at + expires_in``."""
CLIENT_ASSERTION_LIFETIME: Final = 60
MAX_BODY: Final = 1_048_576
MAX_RETRY_AFTER: Final = 86_400.0
MAX_EXPIRES_IN: Final = 10 * 365 * 86_400
PERMANENT_ERRORS: Final = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
"""The provider refused the grant itself: only an operator can fix it, whatever the HTTP
status that carried the code (200 included)."""
RETRYABLE_ERRORS: Final = frozenset({"server_error", "temporarily_unavailable"})
"""Error codes that say the provider failed, whatever 4xx status carries them."""
KNOWN_ERRORS: Final = frozenset(
    {
        # RFC 6749 §4.1.2.1 and §5.2 (the IANA "OAuth Extensions Error" registry's core)
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
        "unsupported_response_type",
        "server_error",
        "temporarily_unavailable",
        # RFC 6750, RFC 8628, RFC 8693, RFC 8707, RFC 9449, RFC 7591
        "invalid_token",
        "insufficient_scope",
        "authorization_pending",
        "slow_down",
        "expired_token",
        "invalid_target",
        "invalid_dpop_proof",
        "use_dpop_nonce",
        "invalid_client_metadata",
        "invalid_redirect_uri",
        # OpenID Connect Core §3.1.2.6
        "interaction_required",
        "login_required",
        "consent_required",
        "account_selection_required",
        # providers' own, seen in the wild
        "bad_refresh_token",  # GitHub
        "bad_verification_code",  # GitHub
        "incorrect_client_credentials",  # GitHub
        "redirect_uri_mismatch",  # GitHub, Google
        "invalid_resource",  # Microsoft Entra
        "admin_policy_enforced",  # Google
        "deleted_client",  # Google
        "disabled_client",  # Google
        "org_internal",  # Google
        "inactive_user",  # Salesforce
        "inactive_org",  # Salesforce
        "rate_limit_exceeded",  # Salesforce
    }
)
"""The ``error`` values kept as they are; any other value becomes ``invalid_response``, so an
echoed token in that member never reaches an exception, ``last_error``, audit or a log."""

_MASK: Final = "**********"
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
    """What a token endpoint granted; ``expires_in`` is None when missing or unusable.

    ``metadata`` holds the non-secret response fields the provider's quirks keep.
    """

    access_token: Secret
    refresh_token: Secret | None
    expires_in: int | None
    token_type: str = "Bearer"
    scope: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def expires_at(self, sent_at: datetime, *, skew: timedelta = timedelta(0)) -> datetime | None:
        """The expiry to rely on for a token requested at ``sent_at`` (see ``expires_at_from``)."""
        return expires_at_from(sent_at, self.expires_in, skew=skew)


def expires_at_from(
    sent_at: datetime, expires_in: int | None, *, skew: timedelta = timedelta(0)
) -> datetime | None:
    """The latest moment a token is sure to work, or None when the provider did not say.

    The provider counted ``expires_in`` from the moment it answered, truncated to a whole
    second, which is no earlier than a second before ``sent_at`` (when the request left),
    give or take the clock ``skew`` between us: so ``sent_at + expires_in - 1 s - skew``,
    never before ``sent_at``.
    """
    if expires_in is None:
        return None
    lifetime = timedelta(seconds=expires_in)
    return max(sent_at, sent_at + lifetime - WHOLE_SECOND - skew)


def build_token_request(credential: OAuth2 | JWTBearer, *, now: datetime) -> TokenRequest:
    """The token request that renews ``credential``'s access token (RFC 6749 §6, §4.4; RFC 7523).

    Raises a permanent ``RefreshFailed`` when the credential cannot make one (no refresh
    token, or a private key that does not load).
    """
    if isinstance(credential, JWTBearer):
        grant = {"grant_type": JWT_BEARER_GRANT, "assertion": _assertion(credential, now)}
        return _token_request(credential.token_url, grant, credential.scope, {})
    return build_grant_request(credential, _oauth2_grant(credential), now=now)


def build_grant_request(
    credential: OAuth2, grant: Mapping[str, str], *, now: datetime, scope: bool = True
) -> TokenRequest:
    """A token request for ``grant`` (its form fields), authenticated as ``credential``'s
    client; ``scope=False`` leaves the credential's scope out (code and device grants)."""
    form, headers = _client_authentication(credential, now)
    return _token_request(
        credential.token_url, dict(grant) | form, credential.scope if scope else None, headers
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


def _client_authentication(
    credential: OAuth2, now: datetime
) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and the headers that authenticate the client (RFC 6749 §2.3.1,
    RFC 7523 §2.2)."""
    if credential.client_auth == "private_key_jwt":
        return {
            "client_id": credential.client_id,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": _client_assertion(credential, now),
        }, {}
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


def _client_assertion(credential: OAuth2, now: datetime) -> str:
    """An RFC 7523 §3 client assertion: iss = sub = client id, aud = the token endpoint."""
    issued_at = int(_aware(now).timestamp())
    claims = {
        "iss": credential.client_id,
        "sub": credential.client_id,
        "aud": credential.token_url,
        "iat": issued_at,
        "exp": issued_at + CLIENT_ASSERTION_LIFETIME,
        "jti": uuid.uuid4().hex,
    }
    key, algorithm = credential.client_key, credential.client_key_algorithm or "RS256"
    if key is None:  # the model refuses private_key_jwt without a key; be safe anyway
        raise RefreshFailed("private_key_jwt needs a client_key", permanent=True)
    return _signed(claims, key.reveal(), algorithm, credential.client_key_id)


def _signed(claims: dict[str, Any], key: str, algorithm: str, key_id: str | None) -> str:
    headers = {"kid": key_id} if key_id else None
    try:
        return jwt.encode(claims, key, algorithm=algorithm, headers=headers)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise RefreshFailed(
            f"cannot sign the assertion: the private key does not load for {algorithm}",
            permanent=True,
            error_code="invalid_key",
        ) from None


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
    return _signed(claims, credential.private_key.reveal(), credential.algorithm, credential.key_id)


def parse_token_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    max_body: int = MAX_BODY,
    quirks: ResponseQuirks = STANDARD,
) -> TokenGrant:
    """The grant in a token endpoint's response, or the ``RefreshFailed`` it amounts to.

    The error code decides first, whatever the status: ``invalid_grant``,
    ``invalid_client``, ``unauthorized_client`` and the profile's ``permanent_errors``
    are permanent (a 200 carrying one too); ``server_error`` and
    ``temporarily_unavailable`` are transient. Otherwise permanent: any 4xx except 408 and
    429 (re-sending the same request cannot help). Transient: everything else that is not
    a usable 200, including bodies that are not a JSON object, larger than ``max_body``,
    or a 200 carrying another ``error`` (or, with ``quirks.ok_field``, ``"ok": false``).
    429 and 503 carry ``retry_after`` from a valid ``Retry-After`` (seconds, clamped to
    [0, 86400]). Messages name the status and the error code only, never the body.
    """
    if len(body) > max_body:
        raise _too_large(status)
    payload = _json_object(body)
    if status == 200:
        return _grant_from(payload, quirks)
    raise _error_response(status, headers, payload, now, quirks)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting or numbers
        return None
    return payload if isinstance(payload, dict) else None


def _grant_from(payload: dict[str, Any] | None, quirks: ResponseQuirks) -> TokenGrant:
    """The whole 200 checked before anything is used: a token, a refresh token and a scope
    credman can store and send (length, no control characters), and a known ``token_type``.

    An ``error`` member (or, with ``quirks.ok_field``, ``"ok": false``) is a failure whose
    code decides permanence. A refused answer is a transient ``invalid_response`` that still
    carries a valid rotated refresh token, since the provider has spent the old one.
    """
    failed = payload is None or payload.get("error") is not None
    if failed or (quirks.ok_field and payload is not None and payload.get("ok") is False):
        code = _error_code(payload, "invalid_response", quirks)
        raise _failure(200, code, permanent=_permanent_code(code, quirks) is True)
    assert payload is not None  # for mypy: a None payload failed above
    refresh_token = _token(payload.get("refresh_token"))
    rotated = None if refresh_token is None else Secret(refresh_token)
    access_token = _token(payload.get("access_token"))
    token_type = _token_type(payload.get("token_type"))
    scope = payload.get("scope")
    valid_scope = scope is None or (_text(scope) is not None and _header_safe(scope, 2048))
    if access_token is None or token_type is None or not valid_scope:
        failure = _failure(200, "invalid_response", permanent=False)
        failure.rotated_refresh_token = rotated
        raise failure
    return TokenGrant(
        access_token=Secret(access_token),
        refresh_token=rotated,
        expires_in=_expires_in(payload.get("expires_in"), quirks.expires_in_unit),
        token_type=token_type,
        scope=None if scope is None else str(scope),
        metadata=_kept_fields(payload, quirks.keep_fields),
    )


_TOKEN_TYPES: Final = {"bearer": "Bearer", "dpop": "DPoP"}
"""The token types credman knows how to send, by their case-insensitive name (RFC 6749 §7.1)."""
_UNSAFE_TEXT: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _token(value: object) -> str | None:
    """A token credman can store and put in a header, else None."""
    text = _text(value)
    return text if text is not None and _header_safe(text, MAX_SECRET_LENGTH) else None


def _header_safe(value: object, limit: int) -> bool:
    if not isinstance(value, str) or len(value) > limit or _UNSAFE_TEXT.search(value):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape
        return False
    return True


def _token_type(value: object) -> str | None:
    """The canonical spelling of an allowed ``token_type`` (missing means Bearer), else None."""
    if value is None:
        return "Bearer"
    return _TOKEN_TYPES.get(value.strip().lower()) if isinstance(value, str) else None


def _kept_fields(payload: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """The named non-secret fields that are short plain strings."""
    values = {name: payload.get(name) for name in names}
    return {
        name: value
        for name, value in values.items()
        if isinstance(value, str) and 0 < len(value) <= 2048 and value.isprintable()
    }


def _permanent_code(code: str, quirks: ResponseQuirks) -> bool | None:
    """What an error code alone says: True permanent, False transient, None undecided."""
    if code in PERMANENT_ERRORS or code in quirks.permanent_errors:
        return True
    if code in RETRYABLE_ERRORS:
        return False
    return None


def _text(value: object) -> str | None:
    """``value`` when it is a string with something in it, else None."""
    return value if isinstance(value, str) and value.strip() else None


def _expires_in(value: object, unit: float = 1.0) -> int | None:
    """Whole seconds until expiry, or None when missing or unusable.

    Numbers may come as strings, and in ``unit`` seconds each (0.001: milliseconds).
    Zero, negative, non-numeric and absurd (more than ten years) lifetimes are all
    treated as missing rather than refused: the access token itself is fine, and the
    caller's default lifetime then schedules the next check, so it is never forgotten.
    """
    seconds = _whole_seconds(value, unit)
    return seconds if seconds is not None and 0 < seconds <= MAX_EXPIRES_IN else None


def _whole_seconds(value: object, unit: float) -> int | None:
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if unit == 1.0 else math.floor(value * unit)
    if isinstance(value, float) and math.isfinite(value):
        return math.floor(value * unit)
    return None


def _error_response(
    status: int,
    headers: Mapping[str, str],
    payload: dict[str, Any] | None,
    now: datetime,
    quirks: ResponseQuirks,
) -> RefreshFailed:
    code = _error_code(payload, f"http_{status}", quirks)
    verdict = _permanent_code(code, quirks)
    by_status = 400 <= status < 500 and status not in (408, 429)
    permanent = by_status if verdict is None else verdict
    if permanent or status not in (429, 503):
        return _failure(status, code, permanent=permanent)
    retry_after = _retry_after(_header(headers, "Retry-After"), now)
    return _failure(status, code, permanent=False, retry_after=retry_after)


def _error_code(
    payload: dict[str, Any] | None, fallback: str, quirks: ResponseQuirks = STANDARD
) -> str:
    """The provider's ``error`` when it is a known code (:data:`KNOWN_ERRORS`, or one the
    profile names in ``permanent_errors``), so it is safe to store and log; anything else
    is ``invalid_response``."""
    error = None if payload is None else payload.get("error")
    if error is None:
        return fallback
    if not isinstance(error, str):
        return "invalid_response"
    known = error in KNOWN_ERRORS or error in quirks.permanent_errors
    return error if known else "invalid_response"


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
    """Build, send and parse the request that renews ``credential``; failures are
    ``RefreshFailed``. The credential's profile decides how its response is read."""
    request = build_token_request(credential, now=now)
    quirks = quirks_for(credential) if isinstance(credential, OAuth2) else STANDARD
    return send_token_request(
        client, request, now=now, timeout=timeout, max_body=max_body, quirks=quirks
    )


def send_token_request(
    client: httpx.Client,
    request: TokenRequest,
    *,
    now: datetime,
    timeout: float = 10.0,
    max_body: int = MAX_BODY,
    quirks: ResponseQuirks = STANDARD,
) -> TokenGrant:
    """Send one token request and parse the answer; every failure is a ``RefreshFailed``.

    The client's own auth and redirects are not used for this request, and at most
    ``max_body`` bytes (plus one, to notice more) of the response are read. ``timeout``
    bounds the whole exchange, connect to last byte (:class:`credman.deadline.Deadline`),
    not each read.
    """
    deadline = Deadline(timeout)
    try:
        with (
            own_requests(),
            deadline,
            client.stream("POST", request.url, **_send_options(request, deadline)) as response,
        ):
            body = _BodyBuffer(response, max_body)
            for chunk in response.iter_bytes():
                deadline.check()
                if body.add(chunk):
                    break
    except httpx.RequestError as exc:
        failure = _transport_failure(exc, deadline)
    else:
        return body.parse(now, quirks)
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
    deadline = Deadline(timeout)
    quirks = quirks_for(credential) if isinstance(credential, OAuth2) else STANDARD
    try:
        with own_requests(), deadline:
            options = _send_options(request, deadline) | {"extensions": {"trace": deadline.atrace}}
            async with (
                asyncio.timeout(timeout),
                client.stream("POST", request.url, **options) as response,
            ):
                body = _BodyBuffer(response, max_body)
                async for chunk in response.aiter_bytes():
                    deadline.check()
                    if body.add(chunk):
                        break
    except TimeoutError:
        failure = _transport_failure(httpx.ReadTimeout("deadline"), deadline)
    except httpx.RequestError as exc:
        failure = _transport_failure(exc, deadline)
    else:
        return body.parse(now, quirks)
    raise failure  # outside the except block: the httpx error (URL, request) is not chained


def _send_options(request: TokenRequest, deadline: Deadline) -> dict[str, Any]:
    return {
        "data": request.form,
        "headers": request.headers,
        "timeout": deadline.timeout(),
        "extensions": {"trace": deadline.trace},
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

    def parse(self, now: datetime, quirks: ResponseQuirks) -> TokenGrant:
        """The grant or failure the body amounts to."""
        body = bytes(self._body)
        return parse_token_response(
            self._status, self._headers, body, now=now, max_body=self._limit, quirks=quirks
        )


def _declared_length(headers: httpx.Headers) -> int:
    try:
        return int(headers.get("Content-Length", "0"))
    except ValueError:
        return 0


def _transport_failure(exc: httpx.RequestError, deadline: Deadline) -> RefreshFailed:
    if isinstance(exc, httpx.TimeoutException) or deadline.expired:
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
