"""``httpx.Auth`` over the service: inject ``Access``; after a 401, ask once for a fresh version.

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

from credman.client._access import Access
from credman.errors import CredentialError, InvalidTransition

if TYPE_CHECKING:
    from credman.client._async import AsyncClient
    from credman.client._sync import Client

__all__ = ["AsyncServiceAuth", "ServiceAuth", "apply_access"]


def apply_access(request: httpx.Request, access: Access) -> httpx.Request:
    """Put ``access``'s headers and query parameters on ``request``."""
    request.headers.update(access.headers)
    if access.params:
        request.url = request.url.copy_merge_params(dict(access.params))
    return request


class ServiceAuth(httpx.Auth):
    """Authenticates requests with one credential's material from a :class:`Client`."""

    requires_request_body = True  # a retry after a 401 re-sends the body

    def __init__(self, client: Client, credential_id: str, *, min_ttl: float) -> None:
        self._client = client
        self._credential_id = credential_id
        self._min_ttl = min_ttl

    def __repr__(self) -> str:
        return f"ServiceAuth({self._credential_id!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        access = self._client.access(self._credential_id, min_ttl=self._min_ttl)
        response = yield apply_access(request, access)
        if response.status_code != 401:
            return
        try:
            fresh = self._client.access_after_rejection(
                self._credential_id, access.version, min_ttl=self._min_ttl
            )
        except InvalidTransition:  # nothing can replace this material: the 401 stands
            return
        if fresh.version != access.version:
            yield apply_access(request, fresh)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        raise CredentialError("Client.auth() is for httpx.Client; use AsyncClient.auth()")
        yield request  # pragma: no cover  (makes this an async generator)


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
        if response.status_code != 401:
            return
        try:
            fresh = await self._client.access_after_rejection(
                self._credential_id, access.version, min_ttl=self._min_ttl
            )
        except InvalidTransition:  # nothing can replace this material: the 401 stands
            return
        if fresh.version != access.version:
            yield apply_access(request, fresh)
