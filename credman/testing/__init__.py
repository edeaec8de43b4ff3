"""Helpers for your own time-frozen tests of code that uses credman.

    from credman.testing import time_machine

    def test_token_is_refreshed(manager):
        with time_machine(manager, "2026-01-01 00:00:00") as clock:
            manager.store("gh", OAuth2(..., expires_in=3600), principal="admin")
            report = clock.advance(minutes=56)      # moves time and runs the due work
            assert report.refreshed == 1

``time_machine`` freezes time with freezegun (process-wide), lets you move it, and runs
:meth:`CredentialManager.tick` at the new time, as the scheduler would. No sleeps.
freezegun comes with the ``testing`` extra: ``pip install 'credman[testing]'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from credman.errors import CredentialError

if TYPE_CHECKING:
    from credman import TickReport
    from credman.manager import CredentialManager

__all__ = ["TimeMachine", "time_machine"]


class TimeMachine:
    """A frozen clock bound to a manager: move it, then run what became due."""

    def __init__(self, manager: CredentialManager, frozen: Any) -> None:
        self.manager = manager
        self._frozen = frozen

    def now(self) -> datetime:
        """The frozen time (UTC)."""
        return datetime.now(UTC)

    def advance(self, delta: timedelta | None = None, **units: float) -> TickReport:
        """Move time forward by ``delta`` (or ``minutes=``, ``seconds=``...) and run due work."""
        self._frozen.tick(delta or timedelta(**units))
        return self.run_due()

    def move_to(self, when: datetime | str) -> TickReport:
        """Jump to ``when`` and run due work."""
        self._frozen.move_to(when)
        return self.run_due()

    def run_due(self) -> TickReport:
        """Run the scheduler's sweep once at the current frozen time; when it returns, the
        hooks have every event it emitted (hooks run in a background thread)."""
        report = self.manager.tick(self.now())
        self.manager.flush_events(10.0)
        return report


@contextmanager
def time_machine(
    manager: CredentialManager, start: datetime | str | None = None
) -> Iterator[TimeMachine]:
    """Freeze time at ``start`` (default: now) for the block; yield a :class:`TimeMachine`."""
    try:
        from freezegun import freeze_time
    except ImportError:
        raise CredentialError(
            "time_machine needs the 'testing' extra (freezegun): pip install 'credman[testing]'"
        ) from None
    with freeze_time(start or datetime.now(UTC)) as frozen:
        yield TimeMachine(manager, frozen)
