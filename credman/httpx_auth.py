"""``httpx.Auth`` for consumers: put request material on each request; on a 401, renew once.

The auth object knows nothing of storage or the manager: it is given a function that returns
current :class:`~credman.models.Access` material and one that asks for a renewal of a
rejected version, so the in-process manager and the remote client share it.

Injected material is bound to origins (scheme, host, port): those given as ``origins``, or
else the origin of the first request the auth object sees. A request to another origin gets
nothing, and a redirect that a client follows to another origin does not carry the injected
headers either: httpx itself strips only ``Authorization``, so a ``trace`` extension on the
request (httpx hands it to every hop, httpcore calls it before writing the headers) removes
the injected header names from any hop whose origin is not bound. A transport that is not
httpcore (e.g. ``httpx.MockTransport``) does not call it; do not follow redirects with one.

Query parameters put on the URL are removed from ``request.url`` again once the response is
back (also when httpx closes the flow on an error), so ``raise_for_status()`` messages and
``exc.request.url`` do not carry them, and httpx's own log line for the request is masked
(:func:`credman.logs.own_requests`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Collection, Generator, Iterable
from types import TracebackType
from typing import Any

import httpx

from credman.errors import CredentialValidationError
from credman.logs import own_requests
from credman.models import Access

__all__ = ["AccessAuth", "apply_access", "origin_of"]

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def apply_access(request: httpx.Request, access: Access) -> httpx.Request:
    """Put ``access``'s headers and query parameters on ``request``."""
    for name, value in access.headers.items():
        request.headers[name] = value
    if access.params:
        request.url = request.url.copy_merge_params(dict(access.params))
    return request


def origin_of(url: httpx.URL | str) -> Origin:
    """(scheme, host, port) of ``url``, with the scheme's default port filled in."""
    url = httpx.URL(url)
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 0)


def _origins(values: Iterable[str]) -> frozenset[Origin]:
    found = frozenset(origin_of(value) for value in values)
    if not found or any(not host or scheme not in _DEFAULT_PORTS for scheme, host, _ in found):
        raise CredentialValidationError(
            "origins: give http(s) origins such as https://api.example", fields=("origins",)
        )
    return found


class _OriginGuard:
    """A ``trace`` extension that strips injected headers from hops to unbound origins."""

    def __init__(self, origins: Collection[Origin], names: frozenset[str], previous: Any) -> None:
        self._origins, self._names, self._previous = origins, names, previous

    def __call__(self, event: str, info: dict[str, Any]) -> Any:
        if event.endswith("send_request_headers.started") and "request" in info:
            request = info["request"]  # an httpcore.Request, about to be written
            url = request.url
            scheme = url.scheme.decode("ascii")
            origin = (scheme, url.host.decode("ascii"), url.port or _DEFAULT_PORTS.get(scheme, 0))
            if origin not in self._origins:
                request.headers[:] = [
                    (name, value)
                    for name, value in request.headers
                    if name.decode("latin-1").lower() not in self._names
                ]
        return None if self._previous is None else self._previous(event, info)


class _AsyncOriginGuard(_OriginGuard):
    """The same guard for httpx's async interface, which wants a coroutine."""

    async def __call__(self, event: str, info: dict[str, Any]) -> Any:
        previous, self._previous = self._previous, None
        try:
            super().__call__(event, info)
        finally:
            self._previous = previous
        return None if previous is None else await previous(event, info)


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
        *,
        origins: Iterable[str] | None = None,
    ) -> None:
        self.credential_id = credential_id
        self._current = current
        self._renew = renew
        self._origins: frozenset[Origin] | None = None if origins is None else _origins(origins)

    def __repr__(self) -> str:
        return f"AccessAuth({self.credential_id!r})"

    def _bound(self, request: httpx.Request) -> bool:
        """Whether ``request`` goes to an origin the material is bound to (pinning the first)."""
        if self._origins is None:
            self._origins = frozenset({origin_of(request.url)})
        return origin_of(request.url) in self._origins

    def _prepared(
        self, request: httpx.Request, access: Access, *, asynchronous: bool = False
    ) -> httpx.Request:
        assert self._origins is not None
        names = frozenset(name.lower() for name in access.headers)
        kind = _AsyncOriginGuard if asynchronous else _OriginGuard
        guard = kind(self._origins, names, request.extensions.get("trace"))
        request.extensions = {**request.extensions, "trace": guard}
        return apply_access(request, access)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._bound(request):
            yield request
            return
        url = request.url
        with _Sending(request, url):
            access = self._current()
            response = yield self._prepared(request, access)
            request.url = url
            if response.status_code == 401 and access.refreshable and self._renew(access.version):
                yield self._prepared(request, self._current())

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self._bound(request):
            yield request
            return
        url = request.url
        with _Sending(request, url):
            access = await asyncio.to_thread(self._current)
            response = yield self._prepared(request, access, asynchronous=True)
            request.url = url
            if response.status_code != 401 or not access.refreshable:
                return
            if await asyncio.to_thread(self._renew, access.version):
                renewed = await asyncio.to_thread(self._current)
                yield self._prepared(request, renewed, asynchronous=True)


class _Sending:
    """While the flow runs: httpx log lines masked; afterwards, the URL without the params."""

    def __init__(self, request: httpx.Request, url: httpx.URL) -> None:
        self._request, self._url = request, url
        self._masked = own_requests()

    def __enter__(self) -> None:
        self._masked.__enter__()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._request.url = self._url  # also when httpx closes the flow on an error
        self._masked.__exit__(None, None, None)
