"""Keeping OAuth material fresh: refresh as claim -> call -> commit, single flight, the 401 path.

No database transaction is open during a token request: one short transaction claims the
credential (REFRESHING, with a lease), the HTTP call runs outside any transaction, and a
second short transaction stores the outcome only if the lease is still ours. A lock per id
makes it single-flight across threads and the lease across processes; a caller that finds
a refresh in flight waits for it and uses its result instead of calling the provider.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
from loguru import logger

from credman._operation import Act, Operations
from credman.access import Actor
from credman.errors import CredentialValidationError, InvalidTransition, RefreshFailed
from credman.keys import KeyManager
from credman.lifecycle import (
    Credential,
    JWTBearer,
    OAuth2,
    Permission,
    RefreshPolicy,
    State,
    next_due_at,
)
from credman.lifecycle.decisions import (
    ensure_not_revoked,
    is_refreshable,
    lease_stale,
    needs_refresh,
    reauthorization_required,
    still_valid,
)
from credman.notify import CredentialEvent, EventKind, Notifier
from credman.oauth import TokenGrant, next_retry_delay, request_token
from credman.storage import CredentialRecord

__all__ = ["Claim", "RefreshOutcome", "Refresher", "failure_values", "jitter", "merged"]

_POLL = timedelta(milliseconds=50)
_SPREAD = random.SystemRandom()
_USE = frozenset({Permission.USE})
_MANAGE = frozenset({Permission.MANAGE})


class RefreshOutcome(StrEnum):
    """What one refresh attempt came to."""

    REFRESHED = "refreshed"  # new material stored
    DEFERRED = "deferred"  # a transient failure while the current token still works
    FAILED = "failed"  # no usable token is left (RefreshFailed is raised to callers)
    FRESH = "fresh"  # nothing to do: not due, or someone else already refreshed
    SKIPPED = "skipped"  # the sweep found it claimed elsewhere and moved on
    LEASE_LOST = "lease_lost"  # our lease was taken back before we could commit


@dataclass(frozen=True, slots=True)
class Claim:
    """A credential claimed for refresh: the lease owner and the material to refresh."""

    credential_id: str
    owner: str
    credential: OAuth2 | JWTBearer
    attempts: int
    was_live: bool = True
    """Whether the credential was usable (ACTIVE/UPDATED) when claimed."""


def jitter() -> float:
    """A random fraction in [0, 1) to spread due times."""
    return _SPREAD.random()


def merged(
    credential: Credential, grant: TokenGrant, sent_at: datetime, skew: timedelta = timedelta(0)
) -> Credential:
    """The credential with the new tokens; a response without a refresh token keeps the old.

    ``expires_at`` counts from ``sent_at`` (when the token request left), less a second for
    providers' whole-second truncation and ``skew`` (see ``expires_at_from``). The kept
    response fields are merged into an OAuth2 credential's ``metadata``.
    """
    changes: dict[str, Any] = {
        "access_token": grant.access_token,
        "expires_in": None,
        "expires_at": grant.expires_at(sent_at, skew=skew),
    }
    if grant.refresh_token is not None and "refresh_token" in type(credential).model_fields:
        changes["refresh_token"] = grant.refresh_token
    if isinstance(credential, OAuth2) and grant.metadata:
        changes["metadata"] = dict(credential.metadata or {}) | dict(grant.metadata)
    if "token_type" in type(credential).model_fields:
        bearer = grant.token_type.lower() == "bearer"
        changes["token_type"] = "Bearer" if bearer else grant.token_type[:64] or "Bearer"
    return credential.with_material(**changes)


def failure_values(
    record: CredentialRecord, failure: RefreshFailed, now: datetime, policy: RefreshPolicy
) -> tuple[str, dict[str, Any]]:
    """The trigger and column values after a failed refresh.

    Permanent: EXPIRED with no next due time (an operator must re-authorize). Transient:
    retried after exponential backoff with full jitter (at least ``Retry-After``); the
    credential stays usable (ACTIVE) while its token is valid, else EXPIRED until a retry
    succeeds.
    """
    attempts = record.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_error": (failure.error_code or "error")[:64],
        "lease_owner": None,
        "lease_until": None,
    }
    if failure.permanent:
        return "refresh_failed", values | {"next_due_at": None}
    delay = next_retry_delay(
        attempts - 1, failure.retry_after, base=policy.backoff_base, cap=policy.backoff_cap
    )
    values["next_due_at"] = now + timedelta(seconds=max(delay, policy.cooldown))
    trigger = "refresh_deferred" if still_valid(record, now) else "refresh_failed"
    return trigger, values


class Refresher:
    """Refreshes one credential at a time per id, across threads and processes."""

    def __init__(
        self,
        operations: Operations,
        keys: KeyManager,
        notifier: Notifier,
        policy: RefreshPolicy,
        http: httpx.Client,
    ) -> None:
        self._operations = operations
        self._keys = keys
        self._notifier = notifier
        self._policy = policy
        self._http = http
        self._flights: dict[str, threading.Lock] = {}
        self._flights_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Refresher(lease={self._policy.lease})"

    # -- entry points ---------------------------------------------------------------------

    def refresh(self, credential_id: str, principal: Actor, *, force: bool) -> RefreshOutcome:
        """An operator's refresh (MANAGE): now with ``force``, else only when due."""
        return self.flight(credential_id, principal, _MANAGE, force=force)

    def refresh_due(self, credential_id: str, principal: Actor) -> RefreshOutcome:
        """A reader's refresh (USE) of a credential found due."""
        return self.flight(credential_id, principal, _USE)

    def renew(self, credential_id: str, principal: Actor, version: int) -> bool:
        """Refresh because the material of ``version`` was refused (or is too short-lived).

        Only a caller still holding that version refreshes (others just re-read), and a
        credential in backoff is not refreshed again. Whether a retry is worth it.
        """
        try:
            outcome = self.flight(credential_id, principal, _USE, force=True, if_version=version)
        except RefreshFailed:
            return False
        return outcome is not RefreshOutcome.DEFERRED

    # -- claim -> call -> commit ----------------------------------------------------------

    def _flight_lock(self, credential_id: str) -> threading.Lock:
        with self._flights_lock:
            return self._flights.setdefault(credential_id, threading.Lock())

    def flight(
        self,
        credential_id: str,
        principal: Actor,
        need: frozenset[Permission],
        *,
        force: bool = False,
        now: datetime | None = None,
        if_version: int | None = None,
        sweep: bool = False,
    ) -> RefreshOutcome:
        """Refresh once across threads (a lock per id) and processes (the lease).

        A reader that finds another refresh in flight waits for it; the sweep (``sweep``)
        skips it instead. Raises RefreshFailed when no usable token is left.
        """
        flight = self._flight_lock(credential_id)
        if not flight.acquire(blocking=not sweep):
            return RefreshOutcome.SKIPPED
        try:
            while True:
                claim = self._claim(credential_id, principal, need, force, now, if_version, sweep)
                if isinstance(claim, Claim):
                    return self._call_and_commit(claim, principal, need, now)
                if claim is None:
                    return RefreshOutcome.FRESH
                if sweep:
                    return RefreshOutcome.SKIPPED
                wait = (claim - self._operations.now()).total_seconds()
                time.sleep(min(0.05, max(0.0, wait)))
        finally:
            flight.release()

    def _claim(
        self,
        credential_id: str,
        principal: Actor,
        need: frozenset[Permission],
        force: bool,
        now: datetime | None,
        if_version: int | None,
        sweep: bool,
    ) -> Claim | datetime | None:
        """Claim the credential with a lease; None if nothing to do, a time to wait until.

        The sweep claims with SKIP LOCKED (PostgreSQL): a row another process is claiming
        right now is simply not this process's work.
        """
        recovered: list[str] = []
        claim = self._claim_in(
            credential_id, principal, need, (force, now, if_version, sweep), recovered
        )
        if recovered:  # logged after the commit: no I/O while a transaction is open
            logger.warning("recovered a stale refresh lease on {!r}", credential_id)
        return claim

    def _claim_in(
        self,
        credential_id: str,
        principal: Actor,
        need: frozenset[Permission],
        how: tuple[bool, datetime | None, int | None, bool],
        recovered: list[str],
    ) -> Claim | datetime | None:
        force, now, if_version, sweep = how
        ops = self._operations
        with ops.run("refresh", principal, credential_id) as connection:
            act = ops.act(connection, principal, credential_id, need, now)
            if sweep:
                record = ops.load_if_any(connection, credential_id, skip_locked=True)
            else:
                record = ops.load(connection, credential_id, for_update=True)
            if record is None:
                return None
            if record.state == State.REFRESHING:
                if not self._lease_over(record, act.now):
                    assert record.lease_until is not None
                    return min(record.lease_until, act.now + _POLL)
                self._recover_lease(act, record)
                recovered.append(credential_id)
                record = ops.load(connection, credential_id)
            if not self._should_refresh(record, act.now, force, if_version):
                return None
            credential = self._keys.open(record)
            if not isinstance(credential, OAuth2 | JWTBearer):
                raise InvalidTransition(credential_id, record.state, "start_refresh", "refreshable")
            owner = uuid.uuid4().hex
            lease_until = act.now + self._policy.lease
            lease = {"lease_owner": owner, "lease_until": lease_until, "next_due_at": lease_until}
            version = ops.change(act, record, "start_refresh", lease)
            ops.audit(act, "refresh_started", credential_id, version=version)
            live = record.state in (State.ACTIVE, State.UPDATED)
            return Claim(credential_id, owner, credential, record.attempts, live)

    def _lease_over(self, record: CredentialRecord, now: datetime) -> bool:
        """Whether a refresh lease may be recovered: it ran out, or it is longer than the
        leases this policy grants (from the claim, ``updated_at``, to ``lease_until``), so
        no lease is trusted for longer than that."""
        if lease_stale(record.lease_until, now):
            return True
        assert record.lease_until is not None
        return record.lease_until - record.updated_at > self._policy.lease

    def _should_refresh(
        self, record: CredentialRecord, now: datetime, force: bool, if_version: int | None
    ) -> bool:
        ensure_not_revoked(record)
        if if_version is not None and record.version != if_version:
            return False  # someone refreshed or updated since the caller read it
        needs_operator = record.state == State.EXPIRED and record.next_due_at is None
        if needs_operator and is_refreshable(record) and not force:
            raise reauthorization_required(record)
        in_backoff = record.attempts and record.next_due_at is not None and now < record.next_due_at
        if force and if_version is not None:  # the 401 path: rate-limited per credential
            young = (  # material a refresh (not an operator) produced only moments ago
                record.state == State.UPDATED
                and record.material_at is not None
                and now - record.material_at < self._policy.forced_refresh_interval
            )
            return not (in_backoff or young)
        if force:
            return True
        return needs_refresh(record, now)

    def _recover_lease(self, act: Act, record: CredentialRecord) -> None:
        if record.lease_until is not None and record.lease_until > act.now:
            record = dataclasses.replace(record, lease_until=act.now)  # too long: ends now
        version = self._operations.change(
            act,
            record,
            "lease_expired",
            {"lease_owner": None, "lease_until": None, "next_due_at": act.now},
        )
        self._operations.audit(act, "lease_recovered", record.id, version=version)

    def _call_and_commit(
        self, claim: Claim, principal: Actor, need: frozenset[Permission], now: datetime | None
    ) -> RefreshOutcome:
        started = now or self._operations.now()
        outcome: TokenGrant | RefreshFailed
        try:
            outcome = request_token(
                self._http, claim.credential, now=started, timeout=self._exchange_deadline()
            )
        except RefreshFailed as failure:
            outcome = failure
        result, events = self._commit(claim, principal, need, outcome, started)
        _log_outcome(claim.credential_id, result, events)  # after the commit, never inside it
        self._notifier.emit(*events)
        if isinstance(outcome, RefreshFailed) and result is not RefreshOutcome.DEFERRED:
            raise RefreshFailed(
                f"refresh of {claim.credential_id!r} failed: {outcome}",
                permanent=outcome.permanent,
                credential_id=claim.credential_id,
                error_code=outcome.error_code,
                retry_after=outcome.retry_after,
            )
        return result

    def _exchange_deadline(self) -> float:
        """Seconds the whole token exchange may take: the policy's, within half the lease,
        so the holder gives up long before anyone may recover its lease."""
        return min(self._policy.timeout, self._policy.lease.total_seconds() / 2)

    def _commit(
        self,
        claim: Claim,
        principal: Actor,
        need: frozenset[Permission],
        outcome: TokenGrant | RefreshFailed,
        now: datetime,
    ) -> tuple[RefreshOutcome, list[CredentialEvent]]:
        """Store the outcome if the lease is still ours; the result and events to send."""
        ops = self._operations
        with ops.run("refresh", principal, claim.credential_id) as connection:
            act = ops.act(connection, principal, claim.credential_id, need, now)
            record = ops.load(connection, claim.credential_id, for_update=True)
            if record.state != State.REFRESHING or record.lease_owner != claim.owner:
                ops.audit(act, "refresh", record.id, "failed", error="lease_lost")
                return RefreshOutcome.LEASE_LOST, []
            if not isinstance(outcome, RefreshFailed):
                try:
                    return self._record_success(act, record, claim, outcome)
                except CredentialValidationError:  # a grant the credential cannot hold
                    outcome = RefreshFailed(
                        "token endpoint failed: HTTP 200, error invalid_response",
                        permanent=False,
                        error_code="invalid_response",
                        rotated_refresh_token=outcome.refresh_token,
                    )
            return self._record_failure(act, record, outcome, claim)

    def _record_success(
        self, act: Act, record: CredentialRecord, claim: Claim, grant: TokenGrant
    ) -> tuple[RefreshOutcome, list[CredentialEvent]]:
        credential = merged(claim.credential, grant, act.now, self._policy.clock_skew)
        values = self._keys.seal(act.connection, record.id, credential) | {
            "expires_at": credential.expires_at_or_none,
            "material_at": act.now,
            "next_due_at": next_due_at(credential, act.now, self._policy, jitter()),
            "lease_owner": None,
            "lease_until": None,
            "attempts": 0,
            "last_error": None,
        }
        version = self._operations.change(act, record, "refresh_succeeded", values)
        rotated = grant.refresh_token is not None
        self._operations.audit(act, "refresh", record.id, version=version, rotated=rotated)
        events = [
            CredentialEvent(
                kind=EventKind.REFRESHED,
                credential_id=record.id,
                state=State.UPDATED,
                at=act.now,
                attempts=claim.attempts,
            )
        ]
        if claim.attempts:
            events.append(
                CredentialEvent(
                    kind=EventKind.RECOVERED,
                    credential_id=record.id,
                    state=State.UPDATED,
                    at=act.now,
                    attempts=claim.attempts,
                )
            )
        return RefreshOutcome.REFRESHED, events

    def _record_failure(
        self, act: Act, record: CredentialRecord, failure: RefreshFailed, claim: Claim
    ) -> tuple[RefreshOutcome, list[CredentialEvent]]:
        trigger, values = failure_values(record, failure, act.now, self._policy)
        rotated = failure.rotated_refresh_token
        if rotated is not None and isinstance(claim.credential, OAuth2):
            # the provider spent the old refresh token: the refused answer's new one is kept
            kept = claim.credential.with_material(refresh_token=rotated)
            values |= self._keys.seal(act.connection, record.id, kept)
        version = self._operations.change(act, record, trigger, values)
        code = values["last_error"]
        self._operations.audit(
            act,
            "refresh",
            record.id,
            "failed",
            error=code,
            permanent=failure.permanent,
            attempts=values["attempts"],
            version=version,
        )
        kind = EventKind.REAUTHORIZATION_REQUIRED if failure.permanent else EventKind.REFRESH_FAILED
        deferred = trigger == "refresh_deferred"
        event = CredentialEvent(
            kind=kind,
            credential_id=record.id,
            state=State.ACTIVE if deferred else State.EXPIRED,
            at=act.now,
            attempts=values["attempts"],
            error_code=code,
            retry_at=values["next_due_at"],
        )
        events = [event]
        if not deferred and not failure.permanent and claim.was_live:
            events.append(  # the token ran out during the outage: say so, once
                CredentialEvent(
                    kind=EventKind.EXPIRED, credential_id=record.id, state=State.EXPIRED, at=act.now
                )
            )
        return (RefreshOutcome.DEFERRED if deferred else RefreshOutcome.FAILED), events


def _log_outcome(credential_id: str, result: RefreshOutcome, events: list[CredentialEvent]) -> None:
    """The log line of a committed refresh (written after the transaction, so a blocked log
    sink can never hold a database lock)."""
    failure = next((e for e in events if e.error_code is not None), None)
    if result is RefreshOutcome.REFRESHED:
        logger.info("refreshed {!r}", credential_id)
    elif failure is not None:
        logger.warning(
            "refresh of {!r} failed ({}, attempt {})",
            credential_id,
            failure.error_code,
            failure.attempts,
        )
