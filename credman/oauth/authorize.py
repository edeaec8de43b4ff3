"""The authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636 S256), sans-IO.

A connect makes a PKCE pair and a state, sends the user to ``authorization_url``, reads
the provider's redirect with ``parse_callback`` and trades the code for tokens with
``build_code_request`` (sent by ``exchange_code``). Only S256 is ever used: the plain
method would hand the verifier to anyone who sees the authorization request.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from credman.crypto.secret import Secret
from credman.errors import AuthorizationFailed, CredentialValidationError, RefreshFailed
from credman.lifecycle.types import OAuth2
from credman.oauth.profiles import quirks_for
from credman.oauth.token import TokenGrant, TokenRequest, build_grant_request, send_token_request

__all__ = [
    "STATE_BYTES",
    "VERIFIER_BYTES",
    "AuthorizationResponse",
    "Pkce",
    "authorization_url",
    "build_code_request",
    "exchange_code",
    "new_pkce",
    "new_state",
    "parse_callback",
    "s256_challenge",
]

VERIFIER_BYTES: Final = 32
"""Random bytes in a PKCE verifier (43 base64url characters; RFC 7636 asks for 32+)."""
STATE_BYTES: Final = 32
"""Random bytes (256 bits) in a state."""
_RESERVED: Final = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "scope",
    }
)
_ERROR_CODE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Pkce:
    """A PKCE verifier (secret) and its S256 challenge (sent in the authorization URL)."""

    verifier: Secret
    challenge: str
    method: str = "S256"


def s256_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(verifier)) without padding (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce() -> Pkce:
    """A fresh verifier of ``VERIFIER_BYTES`` random bytes and its S256 challenge."""
    verifier = secrets.token_urlsafe(VERIFIER_BYTES)
    return Pkce(verifier=Secret(verifier), challenge=s256_challenge(verifier))


def new_state() -> str:
    """A fresh state of 256 random bits, URL-safe."""
    return secrets.token_urlsafe(STATE_BYTES)


def authorization_url(
    credential: OAuth2,
    *,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    scope: str | None = None,
) -> str:
    """Where to send the user: the credential's authorization endpoint with the request.

    The profile's extra parameters (``authorize_params``) are added but cannot replace
    the parameters the grant itself needs.
    """
    endpoint = credential.authorization_url
    if endpoint is None:
        raise CredentialValidationError(
            "authorization_url: the credential has none to connect with",
            fields=("authorization_url",),
            credential_id=None,
        )
    params = {
        "response_type": "code",
        "client_id": credential.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    chosen_scope = scope if scope is not None else credential.scope
    if chosen_scope:
        params["scope"] = chosen_scope
    extra = {k: v for k, v in (credential.authorize_params or {}).items() if k not in _RESERVED}
    joiner = "&" if urlsplit(endpoint).query else "?"
    return endpoint + joiner + urlencode(params | extra)


@dataclass(frozen=True)
class AuthorizationResponse:
    """What the provider's redirect carried: the state and the (secret) code."""

    state: str
    code: Secret
    issuer: str | None = None


def parse_callback(callback: str | Mapping[str, str]) -> AuthorizationResponse:
    """The code and state of a redirect (a URL, a query string or its parameters).

    An ``error`` (``access_denied``, ``invalid_scope``...) raises ``AuthorizationFailed``
    carrying that code; a callback without state or code, or with a parameter twice, is an
    ``AuthorizationFailed`` with ``invalid_callback``. Messages never hold the code.
    """
    params = _callback_params(callback)
    error = params.get("error")
    if error is not None:
        code = error if _ERROR_CODE.fullmatch(error) else "invalid_callback"
        raise AuthorizationFailed(_refusal_message(code), error_code=code)
    state, code_value = params.get("state"), params.get("code")
    if not state or not code_value:
        missing = "state" if not state else "code"
        raise AuthorizationFailed(
            f"the callback has no {missing}: not an answer to an authorization request",
            error_code="invalid_callback",
        )
    return AuthorizationResponse(state=state, code=Secret(code_value), issuer=params.get("iss"))


def _refusal_message(code: str) -> str:
    if code == "access_denied":
        return "authorization refused: the user or the provider denied access (access_denied)"
    return f"authorization refused by the provider: {code}"


def _callback_params(callback: str | Mapping[str, str]) -> dict[str, str]:
    if not isinstance(callback, str):
        return dict(callback)
    query = urlsplit(callback).query if "://" in callback else callback.lstrip("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs):
        raise AuthorizationFailed("the callback repeats a parameter", error_code="invalid_callback")
    return params


def build_code_request(
    credential: OAuth2, *, code: Secret, redirect_uri: str, verifier: Secret, now: datetime
) -> TokenRequest:
    """The token request that trades ``code`` for tokens (RFC 6749 §4.1.3, RFC 7636 §4.5)."""
    grant = {
        "grant_type": "authorization_code",
        "code": code.reveal(),
        "redirect_uri": redirect_uri,
        "code_verifier": verifier.reveal(),
    }
    return build_grant_request(credential, grant, now=now, scope=False)


def exchange_code(
    client: httpx.Client,
    credential: OAuth2,
    *,
    code: Secret,
    redirect_uri: str,
    verifier: Secret,
    now: datetime,
    timeout: float = 10.0,
) -> TokenGrant:
    """Send the code exchange; any failure is an ``AuthorizationFailed`` with its code.

    A code is single use, so a failed exchange is never retried: the user connects again.
    """
    request = build_code_request(
        credential, code=code, redirect_uri=redirect_uri, verifier=verifier, now=now
    )
    try:
        return send_token_request(
            client, request, now=now, timeout=timeout, quirks=quirks_for(credential)
        )
    except RefreshFailed as failure:
        refused = AuthorizationFailed(
            f"the code exchange failed: {failure}", error_code=failure.error_code or "error"
        )
    raise refused
