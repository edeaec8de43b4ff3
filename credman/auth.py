"""``httpx.Auth`` for consumers: inject a stored credential; on a 401, refresh once and retry.

Injected material is bound to origins (scheme, host, port): those given to ``auth()``, or
else the origin of the first request the auth object sees. A request to another origin gets
nothing, and a redirect that a client follows to another origin does not carry the injected
headers either: httpx itself strips only ``Authorization``, so a ``trace`` extension on the
request (httpx hands it to every hop, httpcore calls it before writing the headers) removes
the injected header names from any hop whose origin is not bound. A transport that is not
httpcore (e.g. ``httpx.MockTransport``) does not call it; do not follow redirects with one.

A key placed in the query is removed from ``request.url`` again once the response is back,
so ``raise_for_status()`` messages and ``exc.request.url`` do not carry it, and httpx's own
log line for the request is masked (:func:`credman.logs.own_requests`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Collection, Generator, Iterable
from typing import TYPE_CHECKING, Any

import httpx

from credman.errors import CredentialValidationError
from credman.lifecycle import ApiKey, BasicAuth, BearerToken, Credential, JWTBearer, OAuth2
from credman.logs import own_requests

if TYPE_CHECKING:
    from credman.manager import CredentialManager

__all__ = ["CredentialAuth", "apply_credential", "injected_names", "origin_of"]

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


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


def injected_names(credential: Credential) -> frozenset[str]:
    """The header names (lower case) :func:`apply_credential` sets for ``credential``."""
    if isinstance(credential, ApiKey):
        return (
            frozenset() if credential.query_param else frozenset({credential.header_name.lower()})
        )
    return frozenset({"authorization"})


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

    def __init__(
        self,
        manager: CredentialManager,
        credential_id: str,
        principal: str,
        origins: Iterable[str] | None = None,
    ) -> None:
        self._manager = manager
        self._credential_id = credential_id
        self._principal = principal
        self._origins: frozenset[Origin] | None = None if origins is None else _origins(origins)

    def __repr__(self) -> str:
        return f"CredentialAuth({self._credential_id!r}, principal={self._principal!r})"

    def _current(self) -> tuple[Credential, int]:
        """The credential and the version it was read at, in one audited read."""
        return self._manager._get_versioned(self._credential_id, self._principal)

    def _after_401(self, version: int) -> bool:
        """Force one refresh unless someone already replaced the token we used."""
        return self._manager._refresh_after_401(self._credential_id, self._principal, version)

    def _bound(self, request: httpx.Request) -> bool:
        """Whether ``request`` goes to an origin the material is bound to (pinning the first)."""
        if self._origins is None:
            self._origins = frozenset({origin_of(request.url)})
        return origin_of(request.url) in self._origins

    def _prepared(self, request: httpx.Request, credential: Credential) -> httpx.Request:
        assert self._origins is not None
        request.extensions = {
            **request.extensions,
            "trace": _OriginGuard(
                self._origins, injected_names(credential), request.extensions.get("trace")
            ),
        }
        return apply_credential(request, credential)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._bound(request):
            yield request
            return
        url = request.url
        with _Sending(request, url):
            credential, version = self._current()
            response = yield self._prepared(request, credential)
            request.url = url
            if response.status_code == 401 and credential.refreshable and self._after_401(version):
                credential, _ = self._current()
                yield self._prepared(request, credential)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self._bound(request):
            yield request
            return
        url = request.url
        with _Sending(request, url):
            credential, version = await asyncio.to_thread(self._current)
            response = yield self._prepared(request, credential)
            request.url = url
            if response.status_code != 401 or not credential.refreshable:
                return
            if await asyncio.to_thread(self._after_401, version):
                credential, _ = await asyncio.to_thread(self._current)
                yield self._prepared(request, credential)


class _Sending:
    """While the flow runs: httpx log lines masked; afterwards, the URL without the key."""

    def __init__(self, request: httpx.Request, url: httpx.URL) -> None:
        self._request, self._url = request, url
        self._masked = own_requests()

    def __enter__(self) -> None:
        self._masked.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._request.url = self._url  # also when httpx closes the flow on an error
        self._masked.__exit__(None, None, None)
