"""``Client``: a component's connection to the credman service (httpx, keep-alive, TLS)."""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from credman import (
    Access,
    AccessAuth,
    ConnectSession,
    Credential,
    CredentialInfo,
    Grant,
    Permission,
    Transition,
)
from credman.client import _wire as wire
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

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Talks to ``credman serve --http`` with a principal token; caches ``Access`` in memory.

    ``access()`` answers from the cache while the entry is younger than ``max_age`` and its
    material has ``min_ttl + headroom`` seconds left; a revoke or an ungrant therefore
    reaches this client within ``max_age``. ``cache=False`` asks the server every time.
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
        self._fetching: dict[str, threading.Lock] = {}
        self._fetching_lock = threading.Lock()
        tls = ssl_context(verify)
        self._http = httpx.Client(
            **http_options(token, timeout),
            base_url=self._url,
            verify=tls,
            transport=httpx.HTTPTransport(uds=uds, verify=tls) if uds else None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """A client from CREDMAN_URL, CREDMAN_TOKEN and (optional) CREDMAN_CA."""
        settings = from_environment(environ)
        return cls(settings.url, token=settings.token, verify=settings.verify, **options)

    def __repr__(self) -> str:
        cache = f"max_age={self._cache.max_age.total_seconds():g}" if self._cache.enabled else ""
        return f"Client({self._url!r}, {cache or 'cache=False'})"

    @property
    def stats(self) -> ClientStats:
        """Cache hits, misses and refreshes requested so far."""
        return self._cache.stats()

    def access(self, credential_id: str, *, min_ttl: float = DEFAULT_MIN_TTL) -> Access:
        """Request material valid for at least ``min_ttl`` seconds (needs ``use``)."""
        cached = self._cache.lookup(credential_id, min_ttl)
        if cached is not None:
            return cached
        with self._fetch_lock(credential_id):  # one request per credential at a time
            cached = self._cache.lookup(credential_id, min_ttl)  # filled while we waited?
            if cached is not None:
                return cached
            self._cache.count_miss()
            access = self._send(wire.access_call(credential_id, min_ttl=min_ttl))
            self._cache.store(access)
            return access

    def access_after_rejection(
        self, credential_id: str, version: int, *, min_ttl: float = DEFAULT_MIN_TTL
    ) -> Access:
        """Material newer than ``version``, which a resource refused (the server refreshes at
        most once per version); the answer replaces the cached entry."""
        with self._fetch_lock(credential_id):
            cached = self._cache.peek(credential_id, min_ttl)
            if cached is not None and cached.version != version:
                return cached  # another caller here already got past the rejected version
            self._cache.drop(credential_id)
            self._cache.count_refresh()
            call = wire.access_call(credential_id, min_ttl=min_ttl, rejected_version=version)
            access = self._send(call)
            self._cache.store(access)
            return access

    def auth(self, credential_id: str, *, min_ttl: float = DEFAULT_MIN_TTL) -> AccessAuth:
        """``httpx.Auth`` (the library's :class:`credman.AccessAuth`) over this client: injects;
        a 401 reports the version to the server (which refreshes at most once per version)
        and retries once, only when the version moved on."""
        return AccessAuth(
            credential_id,
            lambda: self.access(credential_id, min_ttl=min_ttl),
            lambda version: self._renewed(credential_id, version, min_ttl),
        )

    def _renewed(self, credential_id: str, version: int, min_ttl: float) -> bool:
        try:
            fresh = self.access_after_rejection(credential_id, version, min_ttl=min_ttl)
        except InvalidTransition:  # nothing can replace this material: the 401 stands
            return False
        return fresh.version != version

    def info(self, credential_id: str) -> CredentialInfo:
        """What the service knows of the credential, no secrets."""
        return self._send(wire.info_call(credential_id))

    def list(self) -> list[CredentialInfo]:
        """The credentials this principal may see."""
        return self._send(wire.list_call())

    def history(self, credential_id: str) -> builtins.list[Transition]:
        """The credential's transitions, oldest first."""
        return self._send(wire.history_call(credential_id))

    def grants(self, grantee: str | None = None) -> builtins.list[Grant]:
        """Every grant, or those of ``grantee`` (admin)."""
        return self._send(wire.grants_call(grantee))

    def grant(self, grantee: str, pattern: str, permissions: Iterable[str | Permission]) -> Grant:
        """Give ``grantee`` permissions on credentials matching ``pattern`` (admin)."""
        return self._send(wire.grant_call(grantee, pattern, permissions))

    def ungrant(self, grantee: str, pattern: str) -> bool:
        """Remove ``grantee``'s grant on ``pattern`` (admin); whether there was one."""
        return self._send(wire.ungrant_call(grantee, pattern))

    def store(self, credential_id: str, credential: Credential) -> CredentialInfo:
        """Create or replace the credential (needs ``manage``)."""
        self._cache.drop(credential_id)
        return self._send(wire.store_call(credential_id, credential))

    def refresh(self, credential_id: str, *, force: bool = False) -> CredentialInfo:
        """Refresh now (needs ``manage``)."""
        self._cache.drop(credential_id)
        return self._send(wire.refresh_call(credential_id, force=force))

    def revoke(self, credential_id: str, *, reason: str | None = None) -> CredentialInfo:
        """Revoke the credential for good (needs ``manage``)."""
        self._cache.drop(credential_id)
        return self._send(wire.revoke_call(credential_id, reason))

    def connect(
        self, credential_id: str, *, scope: str | None = None, return_to: str | None = None
    ) -> ConnectSession:
        """Start a connect (needs ``manage``): send the user to ``authorization_url`` before
        ``expires_at``; the provider comes back to the service, which stores the tokens and
        then sends the browser to ``return_to`` (one the service allows) or shows a page."""
        call = wire.connect_call(credential_id, scope=scope, return_to=return_to)
        return self._send(call)

    def clear_cache(self, credential_id: str | None = None) -> None:
        """Forget cached material for one credential, or all."""
        self._cache.drop(credential_id)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _fetch_lock(self, credential_id: str) -> threading.Lock:
        with self._fetching_lock:
            return self._fetching.setdefault(credential_id, threading.Lock())

    def _send(self, call: wire.Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, json=call.body)
        except httpx.TransportError as exc:
            raise unreachable(self._url, exc) from None
        return read_answer(call, response)
