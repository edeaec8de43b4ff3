"""The due work the scheduler runs: refresh tokens in their margin, expire what cannot refresh,
recover stale leases, re-run due probes, forget expired connect sessions. Safe to run in any
number of processes at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from loguru import logger
from sqlalchemy.exc import SQLAlchemyError

from credman._operation import Operations
from credman.access import SYSTEM
from credman.errors import CredentialError, IntegrityError, RefreshFailed, StorageError
from credman.lifecycle import Permission, State
from credman.lifecycle.decisions import is_refreshable, past_expiry
from credman.notify import CredentialEvent, EventKind, Notifier
from credman.probes import ProbeResult, Probes
from credman.refresher import Refresher, RefreshOutcome
from credman.storage import DueCredential, read, repository, write
from credman.storage import connect as connect_sessions

__all__ = ["Sweep", "SweepOutcome", "TickReport"]

_USE = frozenset({Permission.USE})
SESSION_BATCH = 1000
"""Expired connect sessions one tick deletes at most (the next tick takes the rest)."""


class SweepOutcome(StrEnum):
    """What the sweep did with one due credential."""

    REFRESHED = "refreshed"
    DEFERRED = "deferred"  # a transient refresh failure; the token still works
    FAILED = "failed"
    EXPIRED = "expired"
    SKIPPED = "skipped"  # nothing to do, or another process had it
    ERROR = "error"  # an unexpected refusal; named in TickReport.errors


@dataclass(slots=True)
class TickReport:
    """What one sweep did."""

    now: datetime
    due: int = 0
    refreshed: int = 0
    expired: int = 0
    failed: int = 0
    skipped: int = 0
    probed: int = 0
    probe_failures: int = 0
    sessions_deleted: int = 0
    errors: list[str] = field(default_factory=list)
    lateness: float = 0.0
    """Seconds the most overdue credential of this sweep was past its due time (0: none)."""

    def count(self, outcome: SweepOutcome, error: str | None = None) -> None:
        """Add one credential's outcome."""
        if outcome is SweepOutcome.REFRESHED:
            self.refreshed += 1
        elif outcome in (SweepOutcome.DEFERRED, SweepOutcome.FAILED):
            self.failed += 1
        elif outcome is SweepOutcome.EXPIRED:
            self.expired += 1
        elif outcome is SweepOutcome.ERROR:
            self.errors.append(error or "error")
        else:
            self.skipped += 1


_FROM_REFRESH = {
    RefreshOutcome.REFRESHED: SweepOutcome.REFRESHED,
    RefreshOutcome.DEFERRED: SweepOutcome.DEFERRED,
    RefreshOutcome.FAILED: SweepOutcome.FAILED,
}


class Sweep:
    """Finds due credentials and does their work with bounded concurrency."""

    def __init__(
        self,
        operations: Operations,
        refresher: Refresher,
        probes: Probes,
        notifier: Notifier,
    ) -> None:
        self._operations = operations
        self._refresher = refresher
        self._probes = probes
        self._notifier = notifier

    def __repr__(self) -> str:
        return "Sweep()"

    def tick(
        self,
        now: datetime | None = None,
        *,
        limit: int = 1000,
        workers: int = 4,
        stop: threading.Event | None = None,
    ) -> TickReport:
        """Do the work due at ``now`` (default: the clock's time).

        With an explicit ``now`` (time travel in tests and benchmarks) every credential's
        work happens at that moment. Without it, each claim, exchange and commit reads the
        clock when it happens: a long tick must not stamp a lease taken a minute in with the
        tick's start, or the lease would be born expired. Once ``stop`` is set no further
        credential is started: the ones in flight finish (a refresh the provider has made
        is committed), the rest are counted as skipped and left for the next sweep.
        """
        at = now  # None: each credential's work takes the clock's time itself
        now = now or self._operations.now()
        report = TickReport(now=now)
        with read(self._operations.engine) as connection:
            due = repository.due_credentials(connection, now, limit)
            probes = repository.due_credentials(connection, now, limit, due="probe_due_at")
            stale_sessions = connect_sessions.any_expired(connection, now)
        if stale_sessions:  # no write transaction for a sweep with nothing to forget
            report.sessions_deleted = self._forget_expired_sessions(now)
        report.due = len(due)
        dues = [record.next_due_at for record in due if record.next_due_at is not None]
        if dues:
            report.lateness = max(0.0, (now - min(dues)).total_seconds())
        if not due and not probes:
            return report
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(due) + len(probes)))) as pool:
            for outcome, error in pool.map(lambda record: self._maintain(record, at, stop), due):
                report.count(outcome, error)
            for result in pool.map(lambda record: self._test_due(record.id, stop), probes):
                report.probed += result is not None
                report.probe_failures += result is not None and not result.ok
        return report

    def _forget_expired_sessions(self, now: datetime) -> int:
        """Delete up to SESSION_BATCH connect sessions past expiry, in a short transaction."""
        try:
            with write(self._operations.engine) as connection:
                deleted = connect_sessions.delete_expired(connection, now, SESSION_BATCH)
        except SQLAlchemyError as exc:  # housekeeping: the due work goes on without it
            logger.warning(
                "sweep could not delete expired connect sessions: {}", type(exc).__name__
            )
            return 0
        if deleted:
            logger.info("sweep deleted {} expired connect session(s)", deleted)
        return deleted

    def next_wakeup(self) -> datetime | None:
        """The earliest due time of any credential (for the scheduler's one-shot wake-up)."""
        with read(self._operations.engine) as connection:
            return repository.earliest_due(connection)

    def _maintain(
        self, due: DueCredential, now: datetime | None, stop: threading.Event | None = None
    ) -> tuple[SweepOutcome, str | None]:
        """One due credential: refresh, expire or recover; never raises.

        Anything unexpected (a malformed row: NULL JSON, an unknown type, a column that does
        not decode, a row that fails its MAC) is this credential's problem only: it is
        logged, audited as a failed ``maintain`` and counted in ``TickReport.errors`` as
        ``error:broken_row``, and the rest of the tick goes on.
        """
        if stop is not None and stop.is_set():
            return SweepOutcome.SKIPPED, None
        try:
            return self._maintain_one(due, now)
        except Exception as exc:  # isolate the row: one bad credential must not stop the sweep
            self._report_broken(due.id, exc)
            return SweepOutcome.ERROR, "error:broken_row"

    def _report_broken(self, credential_id: str, exc: Exception) -> None:
        logger.error(
            "sweep skipped malformed credential {!r}: {}", credential_id, type(exc).__name__
        )
        broken = StorageError(
            f"credential {credential_id!r} is malformed ({type(exc).__name__})",
            credential_id=credential_id,
        )
        self._operations.record_refusal("maintain", SYSTEM, credential_id, broken)

    def _test_due(
        self, credential_id: str, stop: threading.Event | None = None
    ) -> ProbeResult | None:
        if stop is not None and stop.is_set():
            return None
        try:
            return self._probes.test_due(credential_id)
        except Exception as exc:  # a malformed row: reported, the sweep goes on
            self._report_broken(credential_id, exc)
            return None

    def _maintain_one(
        self, due: DueCredential, now: datetime | None
    ) -> tuple[SweepOutcome, str | None]:
        try:
            if not is_refreshable(due):
                expired = self._expire_due(due.id, now)
                return (SweepOutcome.EXPIRED if expired else SweepOutcome.SKIPPED), None
            outcome = self._refresher.flight(due.id, SYSTEM, _USE, now=now, sweep=True)
        except RefreshFailed:
            return SweepOutcome.FAILED, None
        except IntegrityError:
            raise  # a row that fails its MAC is a broken row (see _maintain)
        except CredentialError as exc:
            logger.warning("sweep could not maintain {!r}: {}", due.id, type(exc).__name__)
            return SweepOutcome.ERROR, f"error:{type(exc).__name__}"
        return _FROM_REFRESH.get(outcome, SweepOutcome.SKIPPED), None

    def _expire_due(self, credential_id: str, now: datetime | None) -> bool:
        """Move a non-refreshable credential past its expiry to EXPIRED; whether it did."""
        ops = self._operations
        now = now or ops.now()
        with ops.run("expire", SYSTEM, credential_id) as connection:
            record = ops.load_if_any(connection, credential_id, skip_locked=True)
            if record is None or is_refreshable(record) or record.state == State.REFRESHING:
                return False
            live = record.state in (State.ACTIVE, State.UPDATED)
            if not (live and past_expiry(record.expires_at, now)):
                return False
            act = ops.act(connection, SYSTEM, credential_id, _USE, now)
            version = ops.change(act, record, "expire", {"next_due_at": None})
            ops.audit(act, "expire", credential_id, version=version)
        self._notifier.emit(
            CredentialEvent(
                kind=EventKind.EXPIRED, credential_id=credential_id, state=State.EXPIRED, at=now
            )
        )
        return True
