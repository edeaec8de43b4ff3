"""``httpx.Auth`` for ``AsyncClient``: the async twin of the library's ``AccessAuth``.

It is given a coroutine function that returns the current ``Access`` and one that reports a
rejected version to the server (which refreshes at most once per version) and says whether
a retry is worth it. On a 401 to refreshable material it reports once and, only when fresh
material came back, retries once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator

import httpx

from credman import Access
from credman.errors import CredentialError
from credman.httpx_auth import apply_access

__all__ = ["AsyncAccessAuth"]


class AsyncAccessAuth(httpx.Auth):
    """Authenticates ``httpx.AsyncClient`` requests with one credential's material."""

    requires_request_body = True  # a retry after a 401 re-sends the body

    def __init__(
        self,
        credential_id: str,
        current: Callable[[], Awaitable[Access]],
        renew: Callable[[int], Awaitable[bool]],
    ) -> None:
        self.credential_id = credential_id
        self._current = current
        self._renew = renew

    def __repr__(self) -> str:
        return f"AsyncAccessAuth({self.credential_id!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise CredentialError("AsyncClient.auth() is for httpx.AsyncClient; use Client.auth()")
        yield request  # pragma: no cover  (makes this a generator)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        access = await self._current()
        response = yield apply_access(request, access)
        if response.status_code != 401 or not access.refreshable:
            return
        if await self._renew(access.version):
            yield apply_access(request, await self._current())
