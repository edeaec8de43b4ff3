"""The one clock: every service and the scheduler ask it for ``now``; nothing reads time itself.

``SystemClock`` reads ``datetime.now(UTC)``, so freezegun keeps working for users who freeze
time themselves; ``credman.testing`` has a clock you move by hand.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from credman.errors import CredentialValidationError

__all__ = ["Clock", "ManualClock", "SystemClock", "as_clock"]


@runtime_checkable
class Clock(Protocol):
    """Something that tells the time as a timezone-aware datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def __repr__(self) -> str:
        return "SystemClock()"

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that stands still until moved: for tests and simulations (thread-safe)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise CredentialValidationError("start: must be timezone-aware", fields=("start",))
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"

    def now(self) -> datetime:
        """The time it was last set to."""
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | None = None, **units: float) -> datetime:
        """Move forward by ``delta`` (or ``seconds=``, ``minutes=``...); the new time."""
        step = delta if delta is not None else timedelta(**units)
        if step < timedelta(0):
            raise CredentialValidationError("delta: a clock only moves forward", fields=("delta",))
        with self._lock:
            self._now += step
            return self._now


class _CallableClock:
    """A clock over a function returning datetimes (checked to be timezone-aware)."""

    def __init__(self, function: Callable[[], datetime]) -> None:
        self._function = function

    def __repr__(self) -> str:
        return f"Clock({self._function!r})"

    def now(self) -> datetime:
        return self._function()


def as_clock(clock: Clock | Callable[[], datetime] | None) -> Clock:
    """A :class:`Clock` from a clock, a function returning datetimes, or None (the wall clock)."""
    if clock is None:
        return SystemClock()
    if isinstance(clock, Clock):
        return clock
    if callable(clock):
        return _CallableClock(clock)
    raise CredentialValidationError(
        "clock: a Clock or a function returning datetimes", fields=("clock",)
    )
