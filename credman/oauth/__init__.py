"""credman as an OAuth2 client: sans-IO request builders and parsers, sent by httpx.

``token`` renews access tokens (refresh-token, client-credentials and RFC 7523 grants);
the names other modules use are re-exported here.
"""

from __future__ import annotations

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
    "TokenGrant",
    "TokenRequest",
    "arequest_token",
    "backoff_delay",
    "build_token_request",
    "next_retry_delay",
    "parse_token_response",
    "request_token",
]
