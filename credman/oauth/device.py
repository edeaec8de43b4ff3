"""The device authorization grant (RFC 8628) for hosts without a browser.

``start_device_authorization`` asks for a device code and the user code to show;
``poll_device`` then asks for the tokens every ``interval`` seconds, adding 5 s on each
``slow_down``, until the user approves, denies, the code expires or the caller's
deadline passes. Time and sleep are injected, so tests move a clock instead of waiting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import httpx

from credman.crypto.secret import Secret
from credman.errors import AuthorizationFailed, CredentialValidationError, RefreshFailed
from credman.lifecycle.types import OAuth2
from credman.oauth.profiles import quirks_for
from credman.oauth.token import (
    MAX_BODY,
    TokenGrant,
    TokenRequest,
    build_grant_request,
    send_token_request,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "DEVICE_CODE_GRANT",
    "SLOW_DOWN_STEP",
    "DeviceAuthorization",
    "build_device_request",
    "build_device_token_request",
    "parse_device_response",
    "poll_device",
    "start_device_authorization",
]

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL: Final = 5
"""Seconds between polls when the provider does not say (RFC 8628 §3.2)."""
SLOW_DOWN_STEP: Final = 5
"""Seconds added to the interval on every ``slow_down`` (RFC 8628 §3.5)."""
_KEEP_POLLING: Final = frozenset({"authorization_pending", "slow_down"})


@dataclass(frozen=True)
class DeviceAuthorization:
    """What the device endpoint answered: the secret device code and what to show the user."""

    device_code: Secret
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


def build_device_request(credential: OAuth2, *, now: datetime) -> TokenRequest:
    """The device authorization request (RFC 8628 §3.1), authenticated as the client."""
    endpoint = credential.device_authorization_url
    if endpoint is None:
        raise CredentialValidationError(
            "device_authorization_url: the credential has none for the device grant",
            fields=("device_authorization_url",),
        )
    request = build_grant_request(credential, {}, now=now)
    return TokenRequest(url=endpoint, headers=request.headers, form=request.form)


def parse_device_response(status: int, body: bytes) -> DeviceAuthorization:
    """The device authorization in a response; ``AuthorizationFailed`` otherwise."""
    payload = _json_object(body)
    if status != 200 or payload is None:
        code = payload.get("error") if payload else None
        error_code = code if isinstance(code, str) and code.isidentifier() else f"http_{status}"
        raise AuthorizationFailed(
            f"the device authorization endpoint refused: HTTP {status}, {error_code}",
            error_code=error_code,
        )
    try:
        return DeviceAuthorization(
            device_code=Secret(_text(payload, "device_code")),
            user_code=_text(payload, "user_code"),
            verification_uri=_text(payload, "verification_uri"),
            verification_uri_complete=payload.get("verification_uri_complete")
            if isinstance(payload.get("verification_uri_complete"), str)
            else None,
            expires_in=_seconds(payload.get("expires_in"), default=None),
            interval=_seconds(payload.get("interval"), default=DEFAULT_INTERVAL),
        )
    except (TypeError, ValueError):
        failure = AuthorizationFailed(
            "the device authorization response is incomplete", error_code="invalid_response"
        )
    raise failure


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def _text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > 2048:
        raise ValueError(name)
    return value


def _seconds(value: object, *, default: int | None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 86_400:
        return value
    raise ValueError("seconds")


def start_device_authorization(
    client: httpx.Client, credential: OAuth2, *, now: datetime, timeout: float = 10.0
) -> DeviceAuthorization:
    """Ask the provider for a device code and a user code."""
    request = build_device_request(credential, now=now)
    try:
        outgoing = client.build_request(
            "POST", request.url, data=request.form, headers=request.headers, timeout=timeout
        )
        response = client.send(outgoing, auth=None, follow_redirects=False)
    except httpx.RequestError:
        failure = AuthorizationFailed(
            "the device authorization request failed to connect", error_code="connection_error"
        )
    else:
        return parse_device_response(response.status_code, response.content[:MAX_BODY])
    raise failure


def build_device_token_request(
    credential: OAuth2, device_code: Secret, *, now: datetime
) -> TokenRequest:
    """One poll of the token endpoint for the device grant (RFC 8628 §3.4)."""
    grant = {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code.reveal()}
    return build_grant_request(credential, grant, now=now, scope=False)


def poll_device(
    client: httpx.Client,
    credential: OAuth2,
    authorization: DeviceAuthorization,
    *,
    now: Callable[[], datetime],
    sleep: Callable[[float], None],
    deadline: datetime | None = None,
    timeout: float = 10.0,
) -> TokenGrant:
    """Poll until the user decides; the grant, or ``AuthorizationFailed`` with the reason.

    Waits ``interval`` seconds before each poll, adds ``SLOW_DOWN_STEP`` on each
    ``slow_down``, keeps going on ``authorization_pending`` and on transient failures,
    and stops with ``expired_token`` once the device code or ``deadline`` runs out.
    """
    interval = authorization.interval
    expires = now() + timedelta(seconds=authorization.expires_in)
    stop_at = expires if deadline is None else min(deadline, expires)
    quirks = quirks_for(credential)
    while True:
        sleep(interval)
        moment = now()
        if moment >= stop_at:
            raise AuthorizationFailed(
                "the device authorization expired before the user approved it",
                error_code="expired_token",
            )
        request = build_device_token_request(credential, authorization.device_code, now=moment)
        try:
            return send_token_request(client, request, now=moment, timeout=timeout, quirks=quirks)
        except RefreshFailed as failure:
            if failure.error_code == "slow_down":
                interval += SLOW_DOWN_STEP
            elif failure.error_code not in _KEEP_POLLING and failure.permanent:
                refused = AuthorizationFailed(
                    f"the device authorization ended: {failure.error_code}",
                    error_code=failure.error_code or "error",
                )
                raise refused from None
