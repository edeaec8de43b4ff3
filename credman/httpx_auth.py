"""``httpx.Auth`` for consumers: put request material on each request; on a 401, renew once.

The auth object knows nothing of storage or the manager: it is given a function that returns
current :class:`~credman.models.Access` material and one that asks for a renewal of a
rejected version, so the in-process manager and the remote client share it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Generator

import httpx

from credman.models import Access

__all__ = ["AccessAuth", "apply_access"]


def apply_access(request: httpx.Request, access: Access) -> httpx.Request:
    """Put ``access``'s headers and query parameters on ``request``."""
    for name, value in access.headers.items():
        request.headers[name] = value
    if access.params:
        request.url = request.url.copy_merge_params(dict(access.params))
    return request


class AccessAuth(httpx.Auth):
    """Authenticates requests with one credential's material, fetched per request.

    ``current()`` returns the material; ``renew(version)`` is called once when the resource
    answers 401 to refreshable material of that version, and says whether fresh material is
    worth a retry.
    """

    def __init__(
        self,
        credential_id: str,
        current: Callable[[], Access],
        renew: Callable[[int], bool],
    ) -> None:
        self.credential_id = credential_id
        self._current = current
        self._renew = renew

    def __repr__(self) -> str:
        return f"AccessAuth({self.credential_id!r})"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        access = self._current()
        response = yield apply_access(request, access)
        if response.status_code == 401 and access.refreshable and self._renew(access.version):
            yield apply_access(request, self._current())

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        access = await asyncio.to_thread(self._current)
        response = yield apply_access(request, access)
        if response.status_code != 401 or not access.refreshable:
            return
        if await asyncio.to_thread(self._renew, access.version):
            yield apply_access(request, await asyncio.to_thread(self._current))
