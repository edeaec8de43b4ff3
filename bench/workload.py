"""What is measured with: principals, the sample credential, the loopback token server."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta
from typing import Final

from credman import OAuth2
from credman.testing.provider import TokenServer

__all__ = [
    "ACCESS_TOKEN",
    "ADMIN",
    "AUTHLIB_CLIENT",
    "CLIENT_SECRETS",
    "CREDMAN_CLIENT",
    "MANAGER_CLIENT",
    "TOKEN_LIFETIME",
    "WORKER",
    "sample_credential",
    "token_server",
]

ADMIN: Final = "bench-admin"
"""A configured admin: stores and refreshes."""
WORKER: Final = "bench-worker"
"""A component holding ``use`` on ``*``: reads. Its grant lookup is part of every read."""

AUTHLIB_CLIENT: Final = "bench-authlib"
CREDMAN_CLIENT: Final = "bench-credman-oauth"
MANAGER_CLIENT: Final = "bench-manager"
CLIENT_SECRETS: Final = {
    name: secrets.token_urlsafe(30) for name in (AUTHLIB_CLIENT, CREDMAN_CLIENT, MANAGER_CLIENT)
}
TOKEN_LIFETIME: Final = 3600


def _jwt_like(length: int) -> str:
    """A random token shaped like a signed JWT (three base64url parts) of ``length`` chars."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(length)).decode().rstrip("=")
    body = raw[: length - 2]
    third = len(body) // 3
    return f"{body[:third]}.{body[third : 2 * third]}.{body[2 * third :]}"


ACCESS_TOKEN: Final = _jwt_like(800)
"""A token-sized secret: 800 characters, about the size of a provider's JWT access token."""


def sample_credential() -> OAuth2:
    """The OAuth2 credential stored and read: three secret fields, valid for a year."""
    return OAuth2(
        token_url="https://provider.example/oauth/token",
        client_id="bench-client",
        client_secret=secrets.token_urlsafe(30),
        access_token=ACCESS_TOKEN,
        refresh_token=secrets.token_urlsafe(48),
        expires_at=datetime.now(UTC) + timedelta(days=365),
        scope="repo read:org",
    )


def token_server() -> TokenServer:
    """The loopback token server every OAuth client here talks to; refresh tokens rotate."""
    return TokenServer(
        clients=CLIENT_SECRETS,
        access_token_lifetime=TOKEN_LIFETIME,
        rotate_refresh_tokens=True,
    )
