"""``httpx.Auth`` for consumers: inject a stored credential; on a 401, refresh once and retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING

import httpx

from credman.lifecycle import ApiKey, BasicAuth, BearerToken, Credential, JWTBearer, OAuth2

if TYPE_CHECKING:
    from credman.manager import CredentialManager

__all__ = ["CredentialAuth", "apply_credential"]


def apply_credential(request: httpx.Request, credential: Credential) -> httpx.Request:
    """Put ``credential`` on ``request``: bearer, basic, or an API key in a header or query."""
    if isinstance(credential, OAuth2 | JWTBearer):
        token = credential.access_token.reveal() if credential.access_token else ""
        token_type = getattr(credential, "token_type", "Bearer")
        request.headers["Authorization"] = f"{token_type} {token}"
    elif isinstance(credential, BearerToken):
        request.headers["Authorization"] = f"Bearer {credential.token.reveal()}"
    elif isinstance(credential, BasicAuth):
        basic = httpx.BasicAuth(credential.username, credential.password.reveal())
        request.headers["Authorization"] = basic._auth_header
    elif isinstance(credential, ApiKey):
        value = credential.prefix + credential.key.reveal()
        if credential.query_param is not None:
            request.url = request.url.copy_merge_params({credential.query_param: value})
        else:
            request.headers[credential.header_name] = value
    return request


class CredentialAuth(httpx.Auth):
    """Authenticates requests with one stored credential, read (and refreshed) per request."""

    def __init__(self, manager: CredentialManager, credential_id: str, principal: str) -> None:
        self._manager = manager
        self._credential_id = credential_id
        self._principal = principal

    def __repr__(self) -> str:
        return f"CredentialAuth({self._credential_id!r}, principal={self._principal!r})"

    def _current(self) -> tuple[Credential, int]:
        """The credential and the version it was read at, in one audited read."""
        return self._manager._get_versioned(self._credential_id, self._principal)

    def _after_401(self, version: int) -> bool:
        """Force one refresh unless someone already replaced the token we used."""
        return self._manager._refresh_after_401(self._credential_id, self._principal, version)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        credential, version = self._current()
        response = yield apply_credential(request, credential)
        if response.status_code == 401 and credential.refreshable and self._after_401(version):
            credential, _ = self._current()
            yield apply_credential(request, credential)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        credential, version = await asyncio.to_thread(self._current)
        response = yield apply_credential(request, credential)
        if response.status_code != 401 or not credential.refreshable:
            return
        if await asyncio.to_thread(self._after_401, version):
            credential, _ = await asyncio.to_thread(self._current)
            yield apply_credential(request, credential)
