"""credman as an OAuth2 client: sans-IO request builders and parsers, sent by httpx.

``token`` renews access tokens (refresh-token, client-credentials and RFC 7523 grants);
``authorize`` is the authorization-code grant with PKCE, ``device`` the RFC 8628 device
grant, ``discovery`` OIDC discovery, ``profiles`` the provider catalogue. The names other
modules use are re-exported here.
"""

from __future__ import annotations

from credman.oauth.authorize import (
    AuthorizationResponse,
    Pkce,
    authorization_url,
    exchange_code,
    new_pkce,
    new_state,
    parse_callback,
)
from credman.oauth.device import DeviceAuthorization, poll_device, start_device_authorization
from credman.oauth.discovery import ProviderMetadata, discover
from credman.oauth.profiles import ProviderProfile, catalogue, profile, quirks_for
from credman.oauth.quirks import ResponseQuirks
from credman.oauth.token import (
    JWT_BEARER_GRANT,
    MAX_BODY,
    MAX_EXPIRES_IN,
    MAX_RETRY_AFTER,
    PERMANENT_ERRORS,
    RETRYABLE_ERRORS,
    TokenGrant,
    TokenRequest,
    arequest_token,
    backoff_delay,
    build_token_request,
    expires_at_from,
    next_retry_delay,
    parse_token_response,
    request_token,
)

__all__ = [
    "JWT_BEARER_GRANT",
    "MAX_BODY",
    "MAX_EXPIRES_IN",
    "MAX_RETRY_AFTER",
    "PERMANENT_ERRORS",
    "RETRYABLE_ERRORS",
    "AuthorizationResponse",
    "DeviceAuthorization",
    "Pkce",
    "ProviderMetadata",
    "ProviderProfile",
    "ResponseQuirks",
    "TokenGrant",
    "TokenRequest",
    "arequest_token",
    "authorization_url",
    "backoff_delay",
    "build_token_request",
    "catalogue",
    "discover",
    "exchange_code",
    "expires_at_from",
    "new_pkce",
    "new_state",
    "next_retry_delay",
    "parse_callback",
    "parse_token_response",
    "poll_device",
    "profile",
    "quirks_for",
    "request_token",
    "start_device_authorization",
]
