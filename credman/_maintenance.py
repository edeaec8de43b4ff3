"""Keeping credentials fresh: refresh as claim -> call -> commit, the sweep, the 401 path.

No database transaction is open during a token request: one short transaction claims the
credential (REFRESHING, with a lease), the HTTP call runs outside any transaction, and a
second short transaction stores the outcome only if the lease is still ours. A lock per id
makes it single-flight across threads and the lease across processes.
"""

from __future__ import annotations

import builtins
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from loguru import logger
from sqlalchemy import select

from credman import _material, keys, refresh
from credman._base import Act, ManagerBase, check_credential_id
from credman.access import SYSTEM_PRINCIPAL
from credman.auth import apply_credential
from credman.errors import (
    CredentialError,
    CredentialValidationError,
    InvalidTransition,
    RefreshFailed,
)
from credman.lifecycle import (
    Credential,
    JWTBearer,
    OAuth2,
    Permission,
    State,
    next_due_at,
)
from credman.notify import CredentialEvent, EventKind
from credman.oauth import request_token
from credman.refresh import (
    Claim,
    ProbeResult,
    TickReport,
    count_outcome,
    ensure_not_revoked,
    is_refreshable,
    lease_stale,
    needs_refresh,
    past_expiry,
    reauthorisation_required,
    target_state,
)
from credman.storage import engine as storage
from credman.storage import repository

__all__ = ["Maintenance"]

_POLL = timedelta(milliseconds=50)


class Maintenance(ManagerBase):
    """Refresh, the sweep (``tick``), the 401 path and probes."""

    if TYPE_CHECKING:  # provided by CredentialManager, which this class is the base of

        def _get_versioned(self, credential_id: str, principal: str) -> tuple[Credential, int]: ...

    # -- refresh: claim -> call -> commit ---------------------------------------------------

    def _flight(self, credential_id: str) -> threading.Lock:
        with self._flights_lock:
            return self._flights.setdefault(credential_id, threading.Lock())

    def _refresh_flight(
        self,
        credential_id: str,
        principal: str,
        need: frozenset[Permission],
        *,
        force: bool = False,
        now: datetime | None = None,
        if_version: int | None = None,
        sweep: bool = False,
    ) -> str:
        """Refresh once across threads (a lock per id) and processes (the lease).

        A reader that finds another refresh in flight waits for it and uses its result
        instead of calling the provider; the sweep (``sweep``) skips it instead. Returns
        "refreshed", "deferred" (transient failure, token still valid), "fresh" (nothing to
        do) or "skipped"; raises RefreshFailed when no usable token is left.
        """
        flight = self._flight(credential_id)
        if not flight.acquire(blocking=not sweep):
            return "skipped"
        try:
            while True:
                claim = self._claim(credential_id, principal, need, force, now, if_version, sweep)
                if isinstance(claim, Claim):
                    return self._call_and_commit(claim, principal, need, now)
                if claim is None:
                    return "fresh"
                if sweep:
                    return "skipped"
                time.sleep(min(0.05, max(0.0, (claim - self._now()).total_seconds())))
        finally:
            flight.release()

    def _claim(
        self,
        credential_id: str,
        principal: str,
        need: frozenset[Permission],
        force: bool,
        now: datetime | None,
        if_version: int | None,
        sweep: bool = False,
    ) -> Claim | datetime | None:
        """Claim the credential with a lease; None if nothing to do, a time to wait until.

        The sweep claims with SKIP LOCKED (PostgreSQL): a row another process is claiming
        right now is simply not this process's work.
        """
        with self._operation("refresh", principal, credential_id) as connection:
            act = self._act(connection, principal, credential_id, need, now)
            row = repository.load_credential(
                connection, credential_id, for_update=True, skip_locked=sweep, missing_ok=sweep
            )
            if row is None:
                return None
            if row.state == State.REFRESHING:
                if not lease_stale(row, act.now):
                    wait_until: datetime = min(row.lease_until, act.now + _POLL)
                    return wait_until
                self._recover_lease(act, row)
                row = repository.load_credential(connection, credential_id)
            if not self._should_refresh(row, act.now, force, if_version):
                return None
            credential = self._open(row)
            if not isinstance(credential, OAuth2 | JWTBearer):
                raise InvalidTransition(credential_id, row.state, "start_refresh", "refreshable")
            owner = uuid.uuid4().hex
            lease_until = act.now + self._policy.lease
            lease = {"lease_owner": owner, "lease_until": lease_until, "next_due_at": lease_until}
            version = self._change(act, row, "start_refresh", lease)
            self._audit_ok(act, "refresh_started", credential_id, version=version)
            return Claim(credential_id, owner, credential, row.attempts)

    def _should_refresh(self, row: Any, now: datetime, force: bool, if_version: int | None) -> bool:
        ensure_not_revoked(row)
        if if_version is not None and row.version != if_version:
            return False  # someone refreshed or updated since the caller read it
        needs_operator = row.state == State.EXPIRED and row.next_due_at is None
        if needs_operator and is_refreshable(row) and not force:
            raise reauthorisation_required(row)
        in_backoff = row.attempts and row.next_due_at is not None and now < row.next_due_at
        if force:
            return not (in_backoff and if_version is not None)
        return needs_refresh(row, now)

    def _recover_lease(self, act: Act, row: Any) -> None:
        version = self._change(
            act,
            row,
            "lease_expired",
            {"lease_owner": None, "lease_until": None, "next_due_at": act.now},
        )
        self._audit_ok(act, "lease_recovered", row.id, version=version)
        logger.warning("recovered a stale refresh lease on {!r}", row.id)

    def _call_and_commit(
        self, claim: Claim, principal: str, need: frozenset[Permission], now: datetime | None
    ) -> str:
        started = now or self._now()
        try:
            outcome: Any = request_token(
                self._http, claim.credential, now=started, timeout=self._policy.timeout
            )
        except RefreshFailed as failure:
            outcome = failure
        result, events = self._commit(claim, principal, need, outcome, started)
        self._emit(*events)
        if isinstance(outcome, RefreshFailed) and result != "deferred":
            raise RefreshFailed(
                f"refresh of {claim.credential_id!r} failed: {outcome}",
                permanent=outcome.permanent,
                credential_id=claim.credential_id,
                error_code=outcome.error_code,
                retry_after=outcome.retry_after,
            )
        return result

    def _commit(
        self,
        claim: Claim,
        principal: str,
        need: frozenset[Permission],
        outcome: Any,
        now: datetime,
    ) -> tuple[str, list[CredentialEvent]]:
        """Store the outcome if the lease is still ours; the result and events to send."""
        with self._operation("refresh", principal, claim.credential_id) as connection:
            act = self._act(connection, principal, claim.credential_id, need, now)
            row = repository.load_credential(connection, claim.credential_id, for_update=True)
            if row.state != State.REFRESHING or row.lease_owner != claim.owner:
                self._audit_outcome(act, "refresh", row.id, "failed", error="lease_lost")
                return "lease_lost", []
            if isinstance(outcome, RefreshFailed):
                return self._record_failure(act, row, outcome)
            return self._record_success(act, row, claim, outcome)

    def _record_success(
        self, act: Act, row: Any, claim: Claim, grant: Any
    ) -> tuple[str, list[CredentialEvent]]:
        credential = refresh.merged(claim.credential, grant, act.now, self._policy.clock_skew)
        keyring = keys.keyring_for_write(self, act.connection)
        values = _material.seal(keyring, row.id, credential) | {
            "expires_at": credential.expires_at_or_none,
            "material_at": act.now,
            "next_due_at": next_due_at(credential, act.now, self._policy, refresh.jitter()),
            "lease_owner": None,
            "lease_until": None,
            "attempts": 0,
            "last_error": None,
        }
        version = self._change(act, row, "refresh_succeeded", values)
        rotated = grant.refresh_token is not None
        self._audit_ok(act, "refresh", row.id, version=version, rotated=rotated)
        logger.info("refreshed {!r} (version {})", row.id, version)
        events = []
        if claim.attempts:
            events.append(
                CredentialEvent(
                    kind=EventKind.RECOVERED,
                    credential_id=row.id,
                    state=State.UPDATED,
                    at=act.now,
                    attempts=claim.attempts,
                )
            )
        return "refreshed", events

    def _record_failure(
        self, act: Act, row: Any, failure: RefreshFailed
    ) -> tuple[str, list[CredentialEvent]]:
        trigger, values = refresh.failure_values(row, failure, act.now, self._policy)
        version = self._change(act, row, trigger, values)
        code = values["last_error"]
        self._audit_outcome(
            act,
            "refresh",
            row.id,
            "failed",
            error=code,
            permanent=failure.permanent,
            attempts=values["attempts"],
            version=version,
        )
        logger.warning("refresh of {!r} failed ({}, attempt {})", row.id, code, values["attempts"])
        kind = EventKind.REAUTHORIZATION_REQUIRED if failure.permanent else EventKind.REFRESH_FAILED
        event = CredentialEvent(
            kind=kind,
            credential_id=row.id,
            state=target_state(trigger),
            at=act.now,
            attempts=values["attempts"],
            error_code=code,
            retry_at=values["next_due_at"],
        )
        return ("deferred" if trigger == "refresh_deferred" else "failed"), [event]

    # -- the sweep ------------------------------------------------------------------------

    def tick(
        self, now: datetime | None = None, *, limit: int = 1000, workers: int = 4
    ) -> TickReport:
        """Do the due work: refresh tokens in their margin, expire what cannot refresh,
        recover stale leases. Safe to run in any number of processes at once."""
        now = now or self._now()
        report = TickReport(now=now)
        due = self._due(now, limit)
        probes = [row.id for row in self._due(now, limit, repository.CREDENTIALS.c.probe_due_at)]
        report.due = len(due)
        if not due and not probes:
            return report
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(due) + len(probes)))) as pool:
            for outcome in pool.map(lambda row: self._maintain(row, now), due):
                count_outcome(report, outcome)
            for result in pool.map(lambda cid: self._probe_due(cid, now), probes):
                report.probed += result is not None
                report.probe_failures += result is not None and not result.ok
        return report

    def _due(self, now: datetime, limit: int, column: Any = None) -> builtins.list[Any]:
        """Due rows, earliest first, with what it takes to tell refresh from expiry."""
        table = repository.CREDENTIALS
        column = table.c.next_due_at if column is None else column
        query = (
            select(table.c.id, table.c.type, table.c.public, table.c.sealed)
            .where(column <= now)
            .order_by(column)
            .limit(limit)
        )
        with storage.read(self._engine) as connection:
            return list(connection.execute(query))

    @contextmanager
    def _as_system(self) -> Iterator[None]:
        """Let this thread act as the system principal (the sweep's work only)."""
        self._sweeping.active = True
        try:
            yield
        finally:
            self._sweeping.active = False

    def _maintain(self, due: Any, now: datetime) -> str:
        """One due credential: refresh, expire or recover; never raises."""
        with self._as_system():
            return self._maintain_as_system(due.id, is_refreshable(due), now)

    def _maintain_as_system(self, credential_id: str, refreshable: bool, now: datetime) -> str:
        try:
            if not refreshable:
                return "expired" if self._expire_due(credential_id, now) else "skipped"
            result = self._refresh_flight(
                credential_id, SYSTEM_PRINCIPAL, frozenset({Permission.USE}), now=now, sweep=True
            )
        except RefreshFailed:
            return "failed"
        except CredentialError as exc:
            logger.warning("sweep could not maintain {!r}: {}", credential_id, type(exc).__name__)
            return f"error:{type(exc).__name__}"
        return result

    def next_wakeup(self) -> datetime | None:
        """The earliest due time of any credential (for the scheduler's one-shot wake-up)."""
        table = repository.CREDENTIALS
        query = select(table.c.next_due_at).where(table.c.next_due_at.is_not(None))
        with storage.read(self._engine) as connection:
            return connection.execute(query.order_by(table.c.next_due_at).limit(1)).scalar()

    def _expire_due(self, credential_id: str, now: datetime) -> bool:
        """Move a non-refreshable credential past its expiry to EXPIRED; whether it did."""
        with self._operation("expire", SYSTEM_PRINCIPAL, credential_id) as connection:
            row = repository.load_credential(
                connection, credential_id, for_update=True, skip_locked=True, missing_ok=True
            )
            if row is None or is_refreshable(row) or row.state == State.REFRESHING:
                return False
            if not past_expiry(row, now) or row.state not in (State.ACTIVE, State.UPDATED):
                return False
            act = self._act(connection, SYSTEM_PRINCIPAL, credential_id, {Permission.USE}, now)
            version = self._change(act, row, "expire", {"next_due_at": None})
            self._audit_ok(act, "expire", credential_id, version=version)
        self._emit(
            CredentialEvent(
                kind=EventKind.EXPIRED, credential_id=credential_id, state=State.EXPIRED, at=now
            )
        )
        return True

    # -- consumers ------------------------------------------------------------------------

    def _refresh_after_401(self, credential_id: str, principal: str, version: int) -> bool:
        """Refresh after the provider rejected the token of ``version``; whether to retry.

        Only the caller holding the rejected version refreshes (others just re-read), and a
        credential in backoff is not refreshed again.
        """
        try:
            result = self._refresh_flight(
                credential_id,
                principal,
                frozenset({Permission.USE}),
                force=True,
                if_version=version,
            )
        except RefreshFailed:
            return False
        return result != "deferred"

    # -- probes ---------------------------------------------------------------------------

    def test(self, credential_id: str, *, principal: str) -> ProbeResult:
        """Apply the credential to its probe request; record and audit the outcome.

        A 401 from a refreshable credential refreshes once and tests again. The outcome is
        kept on the credential (``info().metadata`` has the probe; ``probe_ok`` and
        ``probe_status`` in the row) without changing its version.
        """
        credential_id = check_credential_id(credential_id)
        credential, version = self._get_versioned(credential_id, principal)
        if credential.probe is None:
            message = f"probe: credential {credential_id!r} has no probe to test against"
            raise CredentialValidationError(message, fields=("probe",), credential_id=credential_id)
        result = self._send_probe(credential_id, credential)
        retry = result.status == 401 and credential.refreshable
        if retry and self._refresh_after_401(credential_id, principal, version):
            renewed, _ = self._get_versioned(credential_id, principal)
            result = self._send_probe(credential_id, renewed)
        self._record_probe(result, principal)
        return result

    def _send_probe(self, credential_id: str, credential: Credential) -> ProbeResult:
        probe = credential.probe
        assert probe is not None
        request = apply_credential(self._http.build_request(probe.method, probe.url), credential)
        started, at = time.perf_counter(), self._now()
        try:
            response = self._http.send(request, auth=None, follow_redirects=False)
            response.close()
        except httpx.HTTPError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            return ProbeResult(credential_id, False, None, elapsed, at, type(exc).__name__)
        elapsed = (time.perf_counter() - started) * 1000
        ok = response.status_code in probe.expect
        return ProbeResult(credential_id, ok, response.status_code, elapsed, at)

    def _record_probe(self, result: ProbeResult, principal: str) -> None:
        outcome = "ok" if result.ok else "failed"
        values = {"probe_at": result.at, "probe_status": result.status, "probe_ok": result.ok}
        with self._operation("test", principal, result.credential_id) as connection:
            act = self._act(connection, principal, result.credential_id, {Permission.USE})
            row = repository.load_credential(connection, result.credential_id, for_update=True)
            values["probe_due_at"] = act.now + self._policy.probe_interval
            repository.record_probe(connection, row.id, values)
            self._audit_outcome(
                act,
                "test",
                row.id,
                outcome,
                status=result.status,
                elapsed_ms=round(result.elapsed_ms, 1),
                error=result.error,
            )
        if result.ok:
            return
        why = str(result.status or result.error)
        logger.warning("probe of {!r} failed: {}", row.id, why)
        self._emit(
            CredentialEvent(
                kind=EventKind.PROBE_FAILED,
                credential_id=row.id,
                state=row.state,
                at=result.at,
                error_code=why,
            )
        )

    def _probe_due(self, credential_id: str, now: datetime) -> ProbeResult | None:
        """The sweep's periodic re-test of one credential; never raises."""
        try:
            with self._as_system():
                return self.test(credential_id, principal=SYSTEM_PRINCIPAL)
        except CredentialError as exc:
            logger.info("sweep could not test {!r}: {}", credential_id, type(exc).__name__)
            return None
