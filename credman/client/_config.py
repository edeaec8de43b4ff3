"""Checking the client's settings: the service URL, the principal token, TLS verification.

Every refusal is a :class:`CredentialValidationError` naming the setting; none echoes the
token. A plain ``http://`` URL is accepted only for a loopback host, so a token never
crosses a network in clear.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from credman.crypto import Secret
from credman.errors import CredentialValidationError

__all__ = [
    "BearerAuth",
    "Settings",
    "Verify",
    "check_token",
    "check_url",
    "from_environment",
    "seconds",
    "ssl_context",
]

Verify = ssl.SSLContext | str | Path | bool
"""A CA bundle path, a ready ``SSLContext``, or True (system CAs) / False (no checks)."""

ENV_URL, ENV_TOKEN, ENV_CA = "CREDMAN_URL", "CREDMAN_TOKEN", "CREDMAN_CA"


@dataclass(frozen=True, slots=True)
class Settings:
    """What :meth:`Client.from_env` reads: the URL, the token, the CA (if any)."""

    url: str
    token: Secret
    verify: Verify


def _refuse(field: str, why: str) -> CredentialValidationError:
    return CredentialValidationError(f"{field}: {why}", fields=(field,))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """The service's base URL without a trailing slash; https, or http on loopback only."""
    if not isinstance(url, str):
        raise _refuse("url", "a string such as https://credman.internal:8443")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse("url", "an http(s) URL such as https://credman.internal:8443")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise _refuse("url", "no user info, query or fragment (the token goes in CREDMAN_TOKEN)")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise _refuse("url", "plain http only on loopback; use https")
    return url.rstrip("/")


def check_token(token: str | Secret) -> Secret:
    """The principal token as a :class:`Secret`, refused when empty or not one header line."""
    value = token.reveal() if isinstance(token, Secret) else token
    if not isinstance(value, str) or not value.strip():
        raise _refuse("token", "a non-empty principal token")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise _refuse("token", "printable ASCII without spaces")
    return Secret(value)


def ssl_context(verify: Verify) -> ssl.SSLContext | bool:
    """What httpx needs for ``verify``: a CA path becomes a context trusting only that CA."""
    if isinstance(verify, ssl.SSLContext | bool):
        return verify
    path = Path(verify)
    if not path.is_file():
        raise _refuse("verify", f"no CA file at {str(path)!r}")
    try:
        return ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError):
        raise _refuse("verify", f"{str(path)!r} holds no PEM certificate") from None


def seconds(value: float | timedelta, field: str) -> timedelta:
    """A non-negative duration from seconds or a timedelta."""
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        raise _refuse(field, "must not be negative")
    return delta


def from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """CREDMAN_URL and CREDMAN_TOKEN (both required) and CREDMAN_CA (optional)."""
    env = os.environ if environ is None else environ
    url, token = env.get(ENV_URL, ""), env.get(ENV_TOKEN, "")
    if not url:
        raise _refuse(ENV_URL, "not set (the credman service URL)")
    if not token:
        raise _refuse(ENV_TOKEN, "not set (this component's principal token)")
    ca = env.get(ENV_CA)
    return Settings(url, Secret(token), ca if ca else True)


class BearerAuth(httpx.Auth):
    """Puts the principal token on every request to the service; its repr hides it."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "BearerAuth(token=**********)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request
