"""OIDC discovery (OpenID Connect Discovery 1.0, RFC 8414): an issuer's endpoints.

``discover(client, issuer)`` reads ``{issuer}/.well-known/openid-configuration`` and
checks it as a strict client must: the document names the same issuer, every endpoint is
an https URL (plain http only on loopback), and a provider that lists its PKCE methods
must support S256.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from credman.errors import CredentialValidationError
from credman.lifecycle.types import OAuth2

__all__ = ["ProviderMetadata", "discover", "discovery_url", "parse_discovery"]

MAX_DOCUMENT: Final = 262_144
_ENDPOINTS: Final = (
    "authorization_endpoint",
    "token_endpoint",
    "revocation_endpoint",
    "device_authorization_endpoint",
    "introspection_endpoint",
)


@dataclass(frozen=True)
class ProviderMetadata:
    """The endpoints and capabilities an issuer published."""

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    introspection_endpoint: str | None = None
    code_challenge_methods: tuple[str, ...] = ()
    token_endpoint_auth_methods: tuple[str, ...] = ()

    def credential(self, *, client_id: str, **fields: Any) -> OAuth2:
        """An OAuth2 credential for this issuer awaiting connect; ``fields`` override."""
        values: dict[str, Any] = {
            "token_url": self.token_endpoint,
            "authorization_url": self.authorization_endpoint,
            "device_authorization_url": self.device_authorization_endpoint,
            "revocation_url": self.revocation_endpoint,
            "client_id": client_id,
        }
        return OAuth2(**(values | fields))


def discovery_url(issuer: str) -> str:
    """Where the issuer's discovery document lives."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _invalid(why: str) -> CredentialValidationError:
    return CredentialValidationError(f"issuer: discovery document {why}", fields=("issuer",))


def _url_ok(value: object) -> bool:
    if not isinstance(value, str) or len(value) > 2048:
        return False
    parts = urlsplit(value)
    if parts.username or parts.password or not parts.hostname:
        return False
    if parts.scheme == "https":
        return True
    try:
        loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    return parts.scheme == "http" and loopback


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def parse_discovery(issuer: str, status: int, body: bytes) -> ProviderMetadata:
    """The metadata in a discovery response for ``issuer``; CredentialValidationError if not."""
    if status != 200:
        raise _invalid(f"could not be read: HTTP {status}")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        raise _invalid("is not a JSON object")
    if document.get("issuer") != issuer.rstrip("/") and document.get("issuer") != issuer:
        raise _invalid("names another issuer")
    endpoints = {name: document.get(name) for name in _ENDPOINTS}
    bad = [name for name, url in endpoints.items() if url is not None and not _url_ok(url)]
    if bad or endpoints["token_endpoint"] is None:
        raise _invalid(f"has no usable {', '.join(bad) or 'token_endpoint'}")
    methods = _names(document.get("code_challenge_methods_supported"))
    if methods and "S256" not in methods:
        raise _invalid("does not offer PKCE S256")
    return ProviderMetadata(
        issuer=str(document["issuer"]),
        token_endpoint=str(endpoints["token_endpoint"]),
        authorization_endpoint=endpoints["authorization_endpoint"],
        revocation_endpoint=endpoints["revocation_endpoint"],
        device_authorization_endpoint=endpoints["device_authorization_endpoint"],
        introspection_endpoint=endpoints["introspection_endpoint"],
        code_challenge_methods=methods,
        token_endpoint_auth_methods=_names(document.get("token_endpoint_auth_methods_supported")),
    )


def discover(client: httpx.Client, issuer: str, *, timeout: float = 10.0) -> ProviderMetadata:
    """Fetch and check the issuer's discovery document (no redirects, bounded size)."""
    if not _url_ok(issuer):
        raise _invalid("URL must be https (http only on loopback)")
    try:
        response = client.get(
            discovery_url(issuer), timeout=timeout, follow_redirects=False, auth=None
        )
    except httpx.RequestError:
        failure = _invalid("could not be fetched (connection failed)")
    else:
        return parse_discovery(issuer, response.status_code, response.content[:MAX_DOCUMENT])
    raise failure
