"""One audited operation at a time: the transaction, the access check, the guarded transition.

Every operation runs in one database transaction that checks access, loads the row, fires
the lifecycle trigger (if any), writes state, history and the audit event, and commits; any
error rolls all of it back. A refused operation is audited in a transaction of its own, so
denials and failures are on record even though nothing changed. Time comes from the one
clock and is passed down; the database clock is never used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from credman._integrity import RecordSeals
from credman.access import AccessPolicy, Actor, RejectedGrant, SystemPrincipal, check_principal
from credman.audit import HISTORY_DIGEST, HISTORY_IDS, AuditLog, history_digest
from credman.clock import Clock
from credman.errors import AccessDenied, CredentialError, CredentialValidationError, StorageError
from credman.lifecycle import Permission, State, Subject, fire
from credman.lifecycle.decisions import is_refreshable
from credman.storage import CredentialRecord, describe_failure, read, repository, write

__all__ = ["Act", "Operations"]


@dataclass(frozen=True, slots=True)
class Act:
    """One operation in progress: its transaction, who acts, what they hold, and when."""

    connection: Connection
    principal: Actor
    held: frozenset[Permission]
    now: datetime
    history: list[dict[str, Any]] = field(default_factory=list)
    """History rows written in this act and not yet bound by an audit row."""

    @property
    def name(self) -> str:
        """The acting principal's name, as history and audit rows record it."""
        return str(self.principal)


class Operations:
    """Transactions that audit their refusals, access checks, and guarded transitions."""

    def __init__(self, engine: Engine, audit: AuditLog, policy: AccessPolicy, clock: Clock) -> None:
        self.engine = engine
        self.audit_log = audit
        self.policy = policy
        self.clock = clock
        self.seals: RecordSeals = policy.seals

    def __repr__(self) -> str:
        return f"Operations({self.engine.url.render_as_string(hide_password=True)!r})"

    def now(self) -> datetime:
        """The clock's time, checked to be timezone-aware, in UTC."""
        now = self.clock.now()
        if now.tzinfo is None:
            raise CredentialValidationError("clock: must return timezone-aware datetimes")
        return now.astimezone(UTC)

    @contextmanager
    def run(
        self, action: str, principal: Actor, credential_id: str | None, *, writes: bool = True
    ) -> Iterator[Connection]:
        """One transaction; a CredentialError inside is audited as denied/failed, then raised."""
        if not isinstance(principal, SystemPrincipal):
            check_principal(principal)
        transaction = write if writes else read
        started = time.monotonic()
        self.policy.take_rejected()  # only this operation's findings are reported below
        try:
            with transaction(self.engine) as connection:
                yield connection
        except CredentialError as exc:
            self._report_rejected(action, principal)
            self.record_refusal(action, principal, credential_id, exc)
            raise
        except SQLAlchemyError as exc:
            waited = time.monotonic() - started
            message = f"{action} failed: {describe_failure(exc, self.engine, waited=waited)}"
            logger.error("{}", message)
            raise StorageError(message, credential_id=credential_id) from None
        self._report_rejected(action, principal)

    def _report_rejected(self, action: str, principal: Actor) -> None:
        """Log and audit the grant rows that failed their MAC (after the transaction)."""
        rejected = self.policy.take_rejected()
        for grant in dict.fromkeys(rejected):
            self._report_grant(action, principal, grant)

    def _report_grant(self, action: str, principal: Actor, grant: RejectedGrant) -> None:
        logger.error(
            "grant row ({!r}, {!r}) fails its MAC (written without the key): it grants nothing",
            grant.principal[:128],
            grant.pattern[:128],
        )
        try:
            with write(self.engine) as connection:
                self.audit_log.append(
                    connection,
                    at=self.now(),
                    principal=str(principal),
                    action="grant_rejected",
                    credential_id=None,
                    outcome="failed",
                    detail={
                        "grantee": grant.principal[:128],
                        "pattern": grant.pattern[:128],
                        "during": action,
                        "error": "IntegrityError",
                    },
                )
        except (SQLAlchemyError, CredentialError) as audit_exc:
            logger.error("could not audit a rejected grant: {}", type(audit_exc).__name__)

    def record_refusal(
        self, action: str, principal: Actor, credential_id: str | None, exc: CredentialError
    ) -> None:
        """Audit a refused operation in a transaction of its own (also for refusals decided
        after an earlier transaction committed, as a spent connect session's)."""
        denied = isinstance(exc, AccessDenied)
        detail: dict[str, Any] = {"error": type(exc).__name__}
        if isinstance(exc, AccessDenied):
            detail["permission"] = exc.permission
            logger.warning("access denied: {} lacks {} for {}", principal, exc.permission, action)
        try:
            with write(self.engine) as connection:
                self.audit_log.append(
                    connection,
                    at=self.now(),
                    principal=str(principal),
                    action=action,
                    credential_id=credential_id,
                    outcome="denied" if denied else "failed",
                    detail=detail,
                )
        except (SQLAlchemyError, CredentialError) as audit_exc:
            logger.error("could not audit a refused {}: {}", action, type(audit_exc).__name__)

    def act(
        self,
        connection: Connection,
        principal: Actor,
        credential_id: str,
        need: AbstractSet[Permission],
        now: datetime | None = None,
    ) -> Act:
        """What ``principal`` holds on the credential; AccessDenied unless one of ``need``."""
        held = self.policy.permissions(connection, principal, credential_id)
        if not held & need:
            wanted = "|".join(sorted(p.value for p in need))
            raise AccessDenied(str(principal), wanted, credential_id)
        return Act(connection, principal, held, now or self.now())

    def act_as_admin(self, connection: Connection, principal: Actor) -> Act:
        """An admin's act; AccessDenied for anyone else."""
        if not self.policy.is_admin(connection, principal):
            raise AccessDenied(str(principal), Permission.ADMIN.value)
        return Act(connection, principal, frozenset(Permission), self.now())

    def load(
        self,
        connection: Connection,
        credential_id: str,
        *,
        for_update: bool = False,
        skip_locked: bool = False,
    ) -> CredentialRecord:
        """The credential's row, checked: IntegrityError when it fails its MAC or is older
        than its history (NotFound when there is none)."""
        found = repository.load_credential_checked(
            connection, credential_id, for_update=for_update, skip_locked=skip_locked
        )
        assert found is not None
        return self.seals.check_credential(*found)

    def load_if_any(
        self,
        connection: Connection,
        credential_id: str,
        *,
        for_update: bool = False,
        skip_locked: bool = False,
    ) -> CredentialRecord | None:
        """Like :meth:`load`; None when there is no row (or, with ``skip_locked``, it is busy)."""
        found = repository.load_credential_checked(
            connection,
            credential_id,
            for_update=for_update,
            skip_locked=skip_locked,
            missing_ok=True,
        )
        return None if found is None else self.seals.check_credential(*found)

    def new_record(
        self, act: Act, credential_id: str, values: Mapping[str, Any]
    ) -> CredentialRecord:
        """A credential in CREATED, not yet inserted (version 0); the next change inserts it."""
        columns: dict[str, Any] = {
            "probe_at": None,
            "probe_status": None,
            "probe_ok": None,
            "probe_due_at": None,
            "record_mac": None,
            **values,
            "id": credential_id,
            "state": State.CREATED.value,
            "version": 0,
            "created_at": act.now,
            "updated_at": act.now,
        }
        return CredentialRecord.from_row(columns)

    def change(
        self,
        act: Act,
        record: CredentialRecord,
        trigger: str,
        values: Mapping[str, Any] | None = None,
        *,
        reason: str | None = None,
    ) -> int:
        """Fire ``trigger``, then write the new state, ``values`` and history; the new version."""
        subject = Subject(
            credential_id=record.id,
            state=State(record.state),
            now=act.now,
            principal=act.name,
            may=act.held.__contains__,
            expires_at=record.expires_at,
            lease_until=record.lease_until,
            refreshable=is_refreshable(record),
        )
        state = fire(subject, trigger)
        version = record.version + 1
        self.append_history(
            act,
            credential_id=record.id,
            from_state=record.state,
            to_state=state,
            trigger=trigger,
            principal=act.name,
            reason=reason,
            at=act.now,
            version=version,
        )
        changes = {**(values or {}), "state": state, "updated_at": act.now}
        row = {**record.columns(), **changes, "version": version}
        changes["record_mac"] = self.seals.credential_mac(row)
        if record.version == 0:  # not yet inserted: CREATED exists only inside this transaction
            repository.insert_credential(act.connection, {**row, **changes})
            return version
        return repository.update_credential(act.connection, record.id, record.version, changes)

    def append_history(self, act: Act, **values: Any) -> None:
        """Write one history row; the act's next audit row binds it (ids and a digest)."""
        row_id = repository.append_history(act.connection, **values)
        act.history.append({**values, "id": row_id})

    def audit(
        self,
        act: Act,
        action: str,
        credential_id: str | None,
        outcome: str = "ok",
        **detail: Any,
    ) -> None:
        """Append an audit event inside the act's transaction; it binds the history rows the
        act wrote since its last audit event (their ids and a digest of their fields)."""
        if act.history:
            detail[HISTORY_IDS] = ",".join(str(row["id"]) for row in act.history)
            detail[HISTORY_DIGEST] = history_digest(act.history)
            act.history.clear()
        self.audit_log.append(
            act.connection,
            at=act.now,
            principal=act.name,
            action=action,
            credential_id=credential_id,
            outcome=outcome,
            detail=detail,
        )
