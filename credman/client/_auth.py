"""``httpx.Auth`` for ``AsyncClient`` (``Client`` uses the library's ``AccessAuth``): inject
``Access``; after a 401, ask once for a fresh version.

On a 401 from the resource the flow sends the version it used as ``rejected_version``; the
server refreshes at most once per version (whichever component reports it first) and
answers the current material to everyone else. The request is retried once, and only when
the version moved on (retrying the same material would get the same 401); when the server
cannot replace the material (a static key: no refresh edge), the 401 is the answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING

import httpx

from credman.errors import CredentialError, InvalidTransition
from credman.httpx_auth import apply_access

if TYPE_CHECKING:
    from credman.client._async import AsyncClient

__all__ = ["AsyncServiceAuth"]


class AsyncServiceAuth(httpx.Auth):
    """Authenticates requests with one credential's material from an :class:`AsyncClient`."""

    requires_request_body = True

    def __init__(self, client: AsyncClient, credential_id: str, *, min_ttl: float) -> None:
        self._client = client
        self._credential_id = credential_id
        self._min_ttl = min_ttl

    def __repr__(self) -> str:
        return f"AsyncServiceAuth({self._credential_id!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise CredentialError("AsyncClient.auth() is for httpx.AsyncClient; use Client.auth()")
        yield request  # pragma: no cover

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        access = await self._client.access(self._credential_id, min_ttl=self._min_ttl)
        response = yield apply_access(request, access)
        if response.status_code != 401 or not access.refreshable:
            return
        try:
            fresh = await self._client.access_after_rejection(
                self._credential_id, access.version, min_ttl=self._min_ttl
            )
        except InvalidTransition:  # nothing can replace this material: the 401 stands
            return
        if fresh.version != access.version:
            yield apply_access(request, fresh)
