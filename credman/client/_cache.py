"""The client's in-memory cache of ``Access``: one entry per credential, bounded in age.

An entry serves a request for ``min_ttl`` seconds of validity while both hold:

- it is younger than ``max_age`` (so a revoke or an ungrant on the server reaches this
  process within ``max_age``: the staleness bound), and
- its material still has ``min_ttl + headroom`` seconds left before ``expires_at`` (the
  material's refresh time for that need; material without an expiry is bounded by
  ``max_age`` alone).

A lookup does no I/O: a lock, a dictionary read and two comparisons. A hit is a call
answered from memory (also after waiting for another thread's request to land); a miss is
a call that sent a request; the client also counts the refreshes it asked the server for.
Time comes from the ``clock`` (a :class:`credman.Clock`), so tests move it instead of sleeping.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from credman import Access, Clock

__all__ = ["AccessCache", "ClientStats"]


@dataclass(frozen=True, slots=True)
class ClientStats:
    """What the client's cache did: lookups answered from memory, lookups that went to the
    server, and refreshes requested after a resource refused the material (401)."""

    hits: int = 0
    misses: int = 0
    refreshes_requested: int = 0


@dataclass(frozen=True, slots=True)
class _Entry:
    access: Access
    stale_at: datetime


class AccessCache:
    """Thread-safe ``Access`` per credential, valid until ``max_age`` or its refresh time."""

    def __init__(
        self,
        *,
        max_age: timedelta,
        headroom: timedelta,
        clock: Clock,
        enabled: bool = True,
    ) -> None:
        self.max_age = max_age
        self.headroom = headroom
        self.enabled = enabled
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._refreshes = 0

    def lookup(self, credential_id: str, min_ttl: float) -> Access | None:
        """The cached material if it is fresh enough for ``min_ttl`` (counted as a hit)."""
        now = self._clock.now()
        with self._lock:
            entry = self._entries.get(credential_id) if self.enabled else None
            if entry is not None and self._serves(entry, now, min_ttl):
                self._hits += 1
                return entry.access
            return None

    def peek(self, credential_id: str, min_ttl: float) -> Access | None:
        """Like :meth:`lookup`, uncounted (the 401 path checks what is already here)."""
        now = self._clock.now()
        with self._lock:
            entry = self._entries.get(credential_id) if self.enabled else None
            return entry.access if entry and self._serves(entry, now, min_ttl) else None

    def count_miss(self) -> None:
        """Record a lookup that had to ask the server."""
        with self._lock:
            self._misses += 1

    def store(self, access: Access) -> None:
        """Keep ``access`` for up to ``max_age`` from now."""
        if not self.enabled:
            return
        entry = _Entry(access, self._clock.now() + self.max_age)
        with self._lock:
            self._entries[access.credential_id] = entry

    def drop(self, credential_id: str | None = None) -> None:
        """Forget one credential's material, or all of it."""
        with self._lock:
            if credential_id is None:
                self._entries.clear()
            else:
                self._entries.pop(credential_id, None)

    def count_refresh(self) -> None:
        """Record one refresh requested after a 401 at a resource."""
        with self._lock:
            self._refreshes += 1

    def stats(self) -> ClientStats:
        """A snapshot of the counters."""
        with self._lock:
            return ClientStats(self._hits, self._misses, self._refreshes)

    def _serves(self, entry: _Entry, now: datetime, min_ttl: float) -> bool:
        if now >= entry.stale_at:
            return False
        expires_at = entry.access.expires_at
        needed = timedelta(seconds=min_ttl) + self.headroom
        return expires_at is None or expires_at - now > needed
