"""``AsyncClient``: the asyncio twin of :class:`credman.client.Client` (same cache, same calls)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from credman import (
    Access,
    ConnectSession,
    Credential,
    CredentialInfo,
    Grant,
    Permission,
    Transition,
)
from credman.client import _wire as wire
from credman.client._auth import AsyncAccessAuth
from credman.client._cache import ClientStats
from credman.client._common import (
    DEFAULT_MIN_TTL,
    ClockLike,
    http_options,
    new_cache,
    read_answer,
    unreachable,
)
from credman.client._config import Verify, check_url, from_environment, ssl_context
from credman.crypto import Secret
from credman.errors import InvalidTransition

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """Talks to ``credman serve --http`` from asyncio code; caches ``Access`` like ``Client``.

    A cache hit does no I/O and does not yield to the event loop. Concurrent misses for one
    credential in this client share one request.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | Secret,
        verify: Verify = True,
        max_age: float | timedelta = 30.0,
        headroom: float | timedelta = 5.0,
        cache: bool = True,
        timeout: float = 10.0,
        uds: str | None = None,
        clock: ClockLike | None = None,
    ) -> None:
        self._url = check_url(url)
        self._cache = new_cache(cache=cache, max_age=max_age, headroom=headroom, clock=clock)
        self._fetching: dict[str, asyncio.Lock] = {}
        tls = ssl_context(verify)
        self._http = httpx.AsyncClient(
            **http_options(token, timeout),
            base_url=self._url,
            verify=tls,
            transport=httpx.AsyncHTTPTransport(uds=uds, verify=tls) if uds else None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """A client from CREDMAN_URL, CREDMAN_TOKEN and (optional) CREDMAN_CA."""
        settings = from_environment(environ)
        return cls(settings.url, token=settings.token, verify=settings.verify, **options)

    def __repr__(self) -> str:
        cache = f"max_age={self._cache.max_age.total_seconds():g}" if self._cache.enabled else ""
        return f"AsyncClient({self._url!r}, {cache or 'cache=False'})"

    @property
    def stats(self) -> ClientStats:
        """Cache hits, misses and refreshes requested so far."""
        return self._cache.stats()

    async def access(self, credential_id: str, *, min_ttl: float = DEFAULT_MIN_TTL) -> Access:
        """Request material valid for at least ``min_ttl`` seconds (needs ``use``)."""
        cached = self._cache.lookup(credential_id, min_ttl)
        if cached is not None:
            return cached
        async with self._fetching.setdefault(credential_id, asyncio.Lock()):
            cached = self._cache.lookup(credential_id, min_ttl)  # filled while we waited?
            if cached is not None:
                return cached
            self._cache.count_miss()
            access = await self._send(wire.access_call(credential_id, min_ttl=min_ttl))
            self._cache.store(access)
            return access

    async def access_after_rejection(
        self, credential_id: str, version: int, *, min_ttl: float = DEFAULT_MIN_TTL
    ) -> Access:
        """Material newer than ``version``, which a resource refused (see ``Client``)."""
        async with self._fetching.setdefault(credential_id, asyncio.Lock()):
            cached = self._cache.peek(credential_id, min_ttl)
            if cached is not None and cached.version != version:
                return cached  # another caller here already got past the rejected version
            self._cache.drop(credential_id)
            self._cache.count_refresh()
            call = wire.access_call(credential_id, min_ttl=min_ttl, rejected_version=version)
            access = await self._send(call)
            self._cache.store(access)
            return access

    def auth(self, credential_id: str, *, min_ttl: float = DEFAULT_MIN_TTL) -> httpx.Auth:
        """``httpx.Auth`` for ``httpx.AsyncClient``: injects; a 401 reports the version to the
        server (which refreshes at most once per version) and retries once if it moved on."""

        async def current() -> Access:
            return await self.access(credential_id, min_ttl=min_ttl)

        async def renew(version: int) -> bool:
            try:
                fresh = await self.access_after_rejection(credential_id, version, min_ttl=min_ttl)
            except InvalidTransition:  # nothing can replace this material: the 401 stands
                return False
            return fresh.version != version

        return AsyncAccessAuth(credential_id, current, renew)

    async def info(self, credential_id: str) -> CredentialInfo:
        """What the service knows of the credential, no secrets."""
        return await self._send(wire.info_call(credential_id))

    async def list(self) -> builtins.list[CredentialInfo]:
        """The credentials this principal may see."""
        return await self._send(wire.list_call())

    async def history(self, credential_id: str) -> builtins.list[Transition]:
        """The credential's transitions, oldest first."""
        return await self._send(wire.history_call(credential_id))

    async def grants(self, grantee: str | None = None) -> builtins.list[Grant]:
        """Every grant, or those of ``grantee`` (admin)."""
        return await self._send(wire.grants_call(grantee))

    async def grant(
        self, grantee: str, pattern: str, permissions: Iterable[str | Permission]
    ) -> Grant:
        """Give ``grantee`` permissions on credentials matching ``pattern`` (admin)."""
        return await self._send(wire.grant_call(grantee, pattern, permissions))

    async def ungrant(self, grantee: str, pattern: str) -> bool:
        """Remove ``grantee``'s grant on ``pattern`` (admin); whether there was one."""
        return await self._send(wire.ungrant_call(grantee, pattern))

    async def store(self, credential_id: str, credential: Credential) -> CredentialInfo:
        """Create or replace the credential (needs ``manage``)."""
        self._cache.drop(credential_id)
        return await self._send(wire.store_call(credential_id, credential))

    async def refresh(self, credential_id: str, *, force: bool = False) -> CredentialInfo:
        """Refresh now (needs ``manage``)."""
        self._cache.drop(credential_id)
        return await self._send(wire.refresh_call(credential_id, force=force))

    async def revoke(self, credential_id: str, *, reason: str | None = None) -> CredentialInfo:
        """Revoke the credential for good (needs ``manage``)."""
        self._cache.drop(credential_id)
        return await self._send(wire.revoke_call(credential_id, reason))

    async def connect(
        self, credential_id: str, *, scope: str | None = None, return_to: str | None = None
    ) -> ConnectSession:
        """Start a connect (needs ``manage``): send the user to ``authorization_url`` before
        ``expires_at``; the provider comes back to the service, which stores the tokens and
        then sends the browser to ``return_to`` (one the service allows) or shows a page."""
        call = wire.connect_call(credential_id, scope=scope, return_to=return_to)
        return await self._send(call)

    def clear_cache(self, credential_id: str | None = None) -> None:
        """Forget cached material for one credential, or all."""
        self._cache.drop(credential_id)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: wire.Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, json=call.body)
        except httpx.TransportError as exc:
            raise unreachable(self._url, exc) from None
        return read_answer(call, response)
