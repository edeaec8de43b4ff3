"""APScheduler wiring: a periodic sweep and a one-shot wake-up at the earliest due time.

The database is the only source of truth: every credential row carries its next due
time, and the sweep calls :meth:`CredentialManager.tick`, which claims due rows itself.
APScheduler only decides *when* to sweep, so its in-memory job store is never shared
between processes and any number of processes may run it. Jobs coalesce and have
no misfire grace limit on purpose: after downtime, everything overdue is swept once, at
once, instead of being dropped (APScheduler's default grace of 1 s would drop it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from loguru import logger

if TYPE_CHECKING:
    from credman import TickReport
    from credman.manager import CredentialManager

__all__ = ["CredentialScheduler"]

_SWEEP, _WAKEUP = "credman-sweep", "credman-wakeup"


class CredentialScheduler:
    """Keeps credentials fresh in the background: ``start()``, ``wakeup()``, ``shutdown()``."""

    def __init__(
        self,
        manager: CredentialManager,
        *,
        interval: float = 30.0,
        workers: int = 4,
        limit: int = 1000,
        on_report: Callable[[TickReport], None] | None = None,
    ) -> None:
        self.manager = manager
        self._on_report = on_report
        self.interval = interval
        self._workers, self._limit = workers, limit
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._sweeping = threading.Lock()
        self._stopping = threading.Event()
        self.last_report: TickReport | None = None
        self.sweeps = 0

    def __repr__(self) -> str:
        return f"CredentialScheduler(interval={self.interval})"

    def start(self) -> None:
        """Start the periodic sweep and arm the first wake-up."""
        self._scheduler.add_job(
            self.sweep,
            IntervalTrigger(seconds=self.interval, timezone=UTC),
            id=_SWEEP,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        self._scheduler.start()
        self._arm()

    def wakeup(self) -> None:
        """Ask the scheduler to look at its jobs now (e.g. after the clock moved in a test)."""
        self._scheduler.wakeup()

    def shutdown(self, wait: bool = True) -> None:
        """Stop; with ``wait``, let a running sweep finish the refreshes it has in flight
        first (it starts no further credential once shutdown is asked for)."""
        self._stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    def sweep(self) -> TickReport | None:
        """One tick of the manager (skipped if this process is already sweeping)."""
        if not self._sweeping.acquire(blocking=False):
            return None
        try:
            report = self.manager.tick(
                workers=self._workers, limit=self._limit, stop=self._stopping
            )
            self.last_report, self.sweeps = report, self.sweeps + 1
            if self._on_report is not None:
                self._on_report(report)
            if report.due:
                logger.info(
                    "sweep: {} due, {} refreshed, {} expired, {} failed, {} skipped",
                    report.due,
                    report.refreshed,
                    report.expired,
                    report.failed,
                    report.skipped,
                )
        except Exception as exc:  # the daemon must outlive a bad sweep
            logger.error("sweep failed: {}", type(exc).__name__)
            return None
        finally:
            self._sweeping.release()
        self._arm()
        return report

    def _arm(self) -> None:
        """Schedule a one-shot sweep at the earliest due time, so work is not late by a sweep."""
        due = self.manager.next_wakeup()
        if due is None or not self._scheduler.running:
            return
        self._scheduler.add_job(
            self.sweep,
            DateTrigger(run_date=max(due, self.manager.clock.now()), timezone=UTC),
            id=_WAKEUP,
            replace_existing=True,
            coalesce=True,
            misfire_grace_time=None,
        )
