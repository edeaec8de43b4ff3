"""``CredentialManager``: the public facade that ties lifecycle, crypto, storage, access and audit.

Every operation runs in one database transaction that checks access, loads the row, fires
the lifecycle trigger (if any), writes state, history and the audit event, and commits; any
error rolls all of it back. A refused operation is audited in a transaction of its own, so
denials and failures are on record even though nothing changed. Time comes from one clock
(``clock``, default ``datetime.now(UTC)``) and is passed down; the database clock is never
used.
"""

from __future__ import annotations

import builtins
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, Self

import httpx
from loguru import logger
from sqlalchemy import Connection, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from credman import _material, keys, refresh
from credman.access import (
    SYSTEM_PRINCIPAL,
    AccessPolicy,
    Grant,
    check_pattern,
    check_principal,
    parse_permissions,
)
from credman.audit import AuditEvent, AuditLog, AuditReport
from credman.auth import CredentialAuth, apply_credential
from credman.config import Settings
from credman.crypto import EnvKeyProvider, KeyFileProvider, KeyProvider, Keyring
from credman.errors import (
    AccessDenied,
    CredentialError,
    CredentialUnusable,
    CredentialValidationError,
    InvalidTransition,
    RefreshFailed,
    StorageError,
)
from credman.lifecycle import (
    CREDENTIAL_TYPES,
    Credential,
    JWTBearer,
    OAuth2,
    Permission,
    RefreshPolicy,
    State,
    Subject,
    fire,
    next_due_at,
)
from credman.notify import CredentialEvent, EventKind, Hook
from credman.oauth import request_token
from credman.refresh import (
    Claim,
    ProbeResult,
    TickReport,
    is_refreshable,
    needs_refresh,
    still_valid,
)
from credman.storage import engine as storage
from credman.storage import migrate, repository

__all__ = ["CredentialInfo", "CredentialManager", "Transition", "check_credential_id"]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_VIEW = frozenset({Permission.USE, Permission.MANAGE, Permission.AUDIT})
_HISTORY = frozenset({Permission.MANAGE, Permission.AUDIT})
_AUDIT = frozenset({Permission.AUDIT})
_MAX_REASON = 512


def check_credential_id(credential_id: object) -> str:
    """Validate a credential id: 1-128 of letters, digits and ``._:@/-``."""
    if not isinstance(credential_id, str) or not _ID.fullmatch(credential_id):
        raise CredentialValidationError(
            "credential_id: 1-128 characters of letters, digits and ._:@/- "
            "(starting with a letter or digit)",
            fields=("credential_id",),
        )
    return credential_id


def _check_reason(reason: str | None) -> str | None:
    if reason is not None and not (
        isinstance(reason, str) and len(reason) <= _MAX_REASON and _is_text(reason)
    ):
        raise CredentialValidationError(
            f"reason: UTF-8 text of at most {_MAX_REASON} characters", fields=("reason",)
        )
    return reason


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


_MAX_AUDIT_LIMIT = 100_000


def _check_state(state: State | str) -> str:
    try:
        return State(state).value
    except ValueError:
        names = ", ".join(s.value for s in State)
        raise CredentialValidationError(f"state: one of {names}", fields=("state",)) from None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """What is known about a credential, without any secret value."""

    instance_id: str
    type: str
    state: State
    version: int
    expires_at: datetime | None
    updated_at: datetime
    created_at: datetime
    next_due_at: datetime | None
    key_version: int | None
    attempts: int
    last_error: str | None
    lease_until: datetime | None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of a credential's recorded history."""

    from_state: State | None
    to_state: State
    trigger: str
    principal: str
    reason: str | None
    at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class _Act:
    """One operation in progress: its transaction, who acts, what they hold, and when."""

    connection: Connection
    principal: str
    held: frozenset[Permission]
    now: datetime


def _info(row: Any) -> CredentialInfo:
    return CredentialInfo(
        instance_id=row.id,
        type=row.type,
        state=State(row.state),
        version=row.version,
        expires_at=row.expires_at,
        updated_at=row.updated_at,
        created_at=row.created_at,
        next_due_at=row.next_due_at,
        key_version=row.key_version,
        attempts=row.attempts,
        last_error=row.last_error,
        lease_until=row.lease_until,
        metadata=dict(row.public),
    )


def _transition(row: Any) -> Transition:
    before = State(row.from_state) if row.from_state else None
    return Transition(
        before, State(row.to_state), row.trigger, row.principal, row.reason, row.at, row.version
    )


class CredentialManager:
    """Stores, serves, refreshes and revokes credentials; see API.md for the contract."""

    def __init__(
        self,
        database_url: str | None = None,
        key_file: str | None = None,
        *,
        key_provider: KeyProvider | None = None,
        admins: Iterable[str] | None = None,
        refresh_policy: RefreshPolicy | None = None,
        clock: Callable[[], datetime] | None = None,
        synchronous: str = "FULL",
        migrate_schema: bool = True,
        hooks: Iterable[Hook] = (),
        http_client: httpx.Client | None = None,
    ) -> None:
        settings = Settings.from_env(database_url=database_url, key_file=key_file)
        self._provider: KeyProvider = key_provider or (
            EnvKeyProvider(settings.key_env)
            if settings.key_env
            else KeyFileProvider(settings.key_file)
        )
        self._keyring: Keyring = self._provider.load()  # no key, no start
        self._keyring_lock = threading.Lock()
        self._audit = AuditLog(self._keyring.audit_key())
        self._access = AccessPolicy(settings.admins if admins is None else admins)
        self._policy = refresh_policy or RefreshPolicy()
        self._clock = clock or _utcnow
        self._hooks = tuple(hooks)
        self._http = http_client or httpx.Client(follow_redirects=False)
        self._owns_http = http_client is None
        self._flights: dict[str, threading.Lock] = {}
        self._sweeping = threading.local()
        self._flights_lock = threading.Lock()
        self._engine = storage.make_engine(settings.database_url, synchronous=synchronous)
        self.database_url = make_url(settings.database_url).render_as_string(hide_password=True)
        try:
            if migrate_schema:
                self._ensure_schema()
        except BaseException:
            self._engine.dispose()
            raise

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A manager configured from CREDMAN_* environment variables."""
        return cls(**overrides)

    def __repr__(self) -> str:
        return f"CredentialManager(database_url={self.database_url!r}, keyring={self._keyring!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Release database connections and the HTTP client."""
        self._engine.dispose()
        if self._owns_http:
            self._http.close()

    def _ensure_schema(self) -> None:
        try:
            if migrate.current_revision(self._engine) != migrate.head_revision():
                migrate.upgrade(self._engine)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot prepare the database: {type(exc).__name__}") from None
        except CredentialError:
            raise
        except Exception as exc:  # alembic: a revision this code does not know
            raise StorageError(
                "the database schema is not one this version of credman knows "
                f"({type(exc).__name__}); upgrade credman"
            ) from None

    # -- plumbing -------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise CredentialValidationError("clock: must return timezone-aware datetimes")
        return now.astimezone(UTC)

    @contextmanager
    def _operation(
        self, action: str, principal: str, credential_id: str | None, *, writes: bool = True
    ) -> Iterator[Connection]:
        """One transaction; a CredentialError inside is audited as denied/failed, then raised."""
        if not (principal == SYSTEM_PRINCIPAL and getattr(self._sweeping, "active", False)):
            check_principal(principal)  # the system principal exists only inside the sweep
        transaction = storage.write if writes else storage.read
        try:
            with transaction(self._engine) as connection:
                yield connection
        except CredentialError as exc:
            self._record_refusal(action, principal, credential_id, exc)
            raise
        except SQLAlchemyError as exc:
            logger.error("database error during {}: {}", action, type(exc).__name__)
            message = f"database error during {action}: {type(exc).__name__}"
            raise StorageError(message, credential_id=credential_id) from None

    def _record_refusal(
        self, action: str, principal: str, credential_id: str | None, exc: CredentialError
    ) -> None:
        denied = isinstance(exc, AccessDenied)
        detail: dict[str, Any] = {"error": type(exc).__name__}
        if isinstance(exc, AccessDenied):
            detail["permission"] = exc.permission
            logger.warning("access denied: {} lacks {} for {}", principal, exc.permission, action)
        try:
            with storage.write(self._engine) as connection:
                self._audit.append(
                    connection,
                    at=self._now(),
                    principal=principal,
                    action=action,
                    credential_id=credential_id,
                    outcome="denied" if denied else "failed",
                    detail=detail,
                )
        except (SQLAlchemyError, CredentialError) as audit_exc:
            logger.error("could not audit a refused {}: {}", action, type(audit_exc).__name__)

    def _act(
        self,
        connection: Connection,
        principal: str,
        credential_id: str,
        need: AbstractSet[Permission],
        now: datetime | None = None,
    ) -> _Act:
        """What ``principal`` holds on the credential; AccessDenied unless one of ``need``."""
        held = self._access.permissions(connection, principal, credential_id)
        if not held & need:
            raise AccessDenied(principal, "|".join(sorted(p.value for p in need)), credential_id)
        return _Act(connection, principal, held, now or self._now())

    def _require_admin(self, connection: Connection, principal: str) -> None:
        if not self._access.is_admin(connection, principal):
            raise AccessDenied(principal, Permission.ADMIN.value)

    def _change(
        self,
        act: _Act,
        row: Any,
        trigger: str,
        values: Mapping[str, Any] | None = None,
        *,
        reason: str | None = None,
    ) -> int:
        """Fire ``trigger``, then write the new state, ``values`` and history; the new version."""
        subject = Subject(
            credential_id=row.id,
            state=State(row.state),
            now=act.now,
            principal=act.principal,
            may=act.held.__contains__,
            expires_at=row.expires_at,
            lease_until=row.lease_until,
            refreshable=is_refreshable(row),
        )
        state = fire(subject, trigger)
        version = int(row.version) + 1
        repository.append_history(
            act.connection,
            credential_id=row.id,
            from_state=row.state,
            to_state=state,
            trigger=trigger,
            principal=act.principal,
            reason=reason,
            at=act.now,
            version=version,
        )
        changes = {**(values or {}), "state": state, "updated_at": act.now}
        if row.version == 0:  # not yet inserted: CREATED exists only inside this transaction
            repository.insert_credential(act.connection, {**vars(row), **changes, "version": 1})
            return version
        return repository.update_credential(act.connection, row.id, row.version, changes)

    def _audit_ok(self, act: _Act, action: str, credential_id: str | None, **detail: Any) -> None:
        self._audit.append(
            act.connection,
            at=act.now,
            principal=act.principal,
            action=action,
            credential_id=credential_id,
            detail=detail,
        )

    def reload_keys(self) -> Keyring:
        """Re-read the keyring from its provider (e.g. after another process rotated it)."""
        with self._keyring_lock:
            self._keyring = self._provider.load()
        return self._keyring

    def _open(self, row: Any) -> Credential:
        return _material.open_row(self._keyring, row, reload=self.reload_keys)

    # -- credentials ----------------------------------------------------------------------

    def store(
        self,
        credential_id: str,
        credential: Credential,
        *,
        principal: str,
        reason: str | None = None,
    ) -> CredentialInfo:
        """Validate, encrypt and upsert; a new credential ends ACTIVE, an update UPDATED."""
        credential_id = check_credential_id(credential_id)
        reason = _check_reason(reason)
        if not isinstance(credential, Credential):
            names = ", ".join(cls.__name__ for cls in CREDENTIAL_TYPES.values())
            raise CredentialValidationError(
                f"credential: expected one of {names}", fields=("credential",)
            )
        with self._operation("store", principal, credential_id) as connection:
            act = self._act(connection, principal, credential_id, {Permission.MANAGE})
            credential = credential.resolved(act.now)
            keyring = keys.keyring_for_write(self, connection)
            values = _material.seal(keyring, credential_id, credential) | {
                "expires_at": credential.expires_at_or_none,
                "material_at": act.now,
                "next_due_at": next_due_at(credential, act.now, self._policy, refresh.jitter()),
                "lease_owner": None,
                "lease_until": None,
                "attempts": 0,
                "last_error": None,
                "probe_due_at": act.now if credential.probe else None,
            }
            row = repository.load_credential(
                connection, credential_id, for_update=True, missing_ok=True
            )
            if row is None:
                row = self._create(act, credential_id, values, reason)
                self._change(act, row, "activate", reason=reason)
            else:
                self._change(act, row, "update", values, reason=reason)
            info = _info(repository.load_credential(connection, credential_id))
            action = "create" if info.version == 1 else "update"
            self._audit_ok(act, action, credential_id, type=credential.kind, version=info.version)
        logger.info("stored {} {!r} (version {})", credential.kind, credential_id, info.version)
        return info

    def _create(
        self, act: _Act, credential_id: str, values: dict[str, Any], reason: str | None
    ) -> SimpleNamespace:
        """The CREATED credential, recorded in history; the ``activate`` that follows inserts it."""
        repository.append_history(
            act.connection,
            credential_id=credential_id,
            from_state=None,
            to_state=State.CREATED,
            trigger="create",
            principal=act.principal,
            reason=reason,
            at=act.now,
            version=1,
        )
        return SimpleNamespace(
            id=credential_id, state=State.CREATED, version=0, created_at=act.now, **values
        )

    def get(self, credential_id: str, *, principal: str) -> Credential:
        """The decrypted credential, refreshed first when due; secret fields are ``Secret``.

        Audited. A credential within its refresh margin is refreshed before it is returned
        (once, however many callers ask at the same time); a transient refresh failure
        while the current token still works returns the current token.
        """
        credential_id = check_credential_id(credential_id)
        for _ in range(3):
            credential = self._read(credential_id, principal)
            if credential is not None:
                return credential
            self._refresh_flight(credential_id, principal, frozenset({Permission.USE}))
        message = f"credential {credential_id!r} keeps changing; try again"
        raise CredentialUnusable(credential_id, "busy", message)

    def _read(self, credential_id: str, principal: str) -> Credential | None:
        """One audited read; None when a refresh must come first.

        Material past its expiry is never handed out: the credential moves to EXPIRED
        (keeping a pending retry time, if a refresh is backing off) and the read fails.
        """
        with self._operation("read", principal, credential_id) as connection:
            act = self._act(connection, principal, credential_id, {Permission.USE})
            row = repository.load_credential(connection, credential_id, for_update=True)
            if _wants_refresh(row, act.now):
                return None
            _ensure_usable(row, act.now)
            expired = _past_expiry(row, act.now)
            if expired:
                retrying = is_refreshable(row)
                values = {} if retrying else {"next_due_at": None}
                version = self._change(act, row, "expire", values)
                self._audit_ok(act, "expire", credential_id, version=version)
            else:
                credential = self._open(row)
                self._audit_ok(act, "read", credential_id, version=row.version)
        if not expired:
            return credential
        # raised after the commit, so the expiry stays recorded
        self._emit(
            CredentialEvent(
                kind=EventKind.EXPIRED, credential_id=credential_id, state=State.EXPIRED, at=act.now
            )
        )
        if retrying:
            raise _refresh_failing(row)
        raise CredentialUnusable(credential_id, State.EXPIRED, "its material has expired")

    # -- refresh: claim -> call -> commit ---------------------------------------------------

    def refresh(self, credential_id: str, *, principal: str, force: bool = False) -> CredentialInfo:
        """Refresh now (``force``) or only when due; raises RefreshFailed when it fails."""
        credential_id = check_credential_id(credential_id)
        self._refresh_flight(credential_id, principal, frozenset({Permission.MANAGE}), force=force)
        return self.info(credential_id, principal=principal)

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
                if not _lease_stale(row, act.now):
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
        _ensure_not_revoked(row)
        if if_version is not None and row.version != if_version:
            return False  # someone refreshed or updated since the caller read it
        needs_operator = row.state == State.EXPIRED and row.next_due_at is None
        if needs_operator and is_refreshable(row) and not force:
            raise _reauthorisation_required(row)
        in_backoff = row.attempts and row.next_due_at is not None and now < row.next_due_at
        if force:
            return not (in_backoff and if_version is not None)
        return needs_refresh(row, now)

    def _recover_lease(self, act: _Act, row: Any) -> None:
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
        self, act: _Act, row: Any, claim: Claim, grant: Any
    ) -> tuple[str, list[CredentialEvent]]:
        credential = refresh.merged(claim.credential, grant, act.now)
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
        self, act: _Act, row: Any, failure: RefreshFailed
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
            state=_target_state(trigger),
            at=act.now,
            attempts=values["attempts"],
            error_code=code,
            retry_at=values["next_due_at"],
        )
        return ("deferred" if trigger == "refresh_deferred" else "failed"), [event]

    def _audit_outcome(
        self, act: _Act, action: str, credential_id: str | None, outcome: str, **detail: Any
    ) -> None:
        self._audit.append(
            act.connection,
            at=act.now,
            principal=act.principal,
            action=action,
            credential_id=credential_id,
            outcome=outcome,
            detail=detail,
        )

    def _emit(self, *events: CredentialEvent) -> None:
        for event in events:
            for hook in self._hooks:
                try:
                    hook(event)
                except Exception as exc:  # a hook never undoes or fails a committed change
                    logger.error("notification hook failed: {}", type(exc).__name__)

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
                _count(report, outcome)
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
            if not _past_expiry(row, now) or row.state not in (State.ACTIVE, State.UPDATED):
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

    # -- probes ---------------------------------------------------------------------------

    def test(self, credential_id: str, *, principal: str) -> ProbeResult:
        """Apply the credential to its probe request; record and audit the outcome.

        A 401 from a refreshable credential refreshes once and tests again. The outcome is
        kept on the credential (``info().metadata`` has the probe; ``probe_ok`` and
        ``probe_status`` in the row) without changing its version.
        """
        credential_id = check_credential_id(credential_id)
        credential = self.get(credential_id, principal=principal)
        if credential.probe is None:
            message = f"probe: credential {credential_id!r} has no probe to test against"
            raise CredentialValidationError(message, fields=("probe",), credential_id=credential_id)
        version = self.info(credential_id, principal=principal).version
        result = self._send_probe(credential_id, credential)
        retry = result.status == 401 and credential.refreshable
        if retry and self._refresh_after_401(credential_id, principal, version):
            result = self._send_probe(credential_id, self.get(credential_id, principal=principal))
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

    def auth(self, credential_id: str, *, principal: str) -> CredentialAuth:
        """An ``httpx.Auth`` (sync and async) that injects the credential and, on a 401,
        refreshes once and retries once."""
        return CredentialAuth(self, check_credential_id(credential_id), principal)

    def info(self, credential_id: str, *, principal: str) -> CredentialInfo:
        """Metadata and state; no secret values."""
        credential_id = check_credential_id(credential_id)
        with self._operation("info", principal, credential_id, writes=False) as connection:
            self._act(connection, principal, credential_id, _VIEW)
            return _info(repository.load_credential(connection, credential_id))

    def history(self, credential_id: str, *, principal: str) -> list[Transition]:
        """Every transition of the credential, oldest first."""
        credential_id = check_credential_id(credential_id)
        with self._operation("history", principal, credential_id, writes=False) as connection:
            self._act(connection, principal, credential_id, _HISTORY)
            repository.load_credential(connection, credential_id)
            return [_transition(row) for row in repository.history_rows(connection, credential_id)]

    def list(
        self, *, principal: str, state: State | str | None = None
    ) -> builtins.list[CredentialInfo]:
        """The credentials ``principal`` may see (use, manage or audit), by id."""
        wanted = _check_state(state) if state is not None else None
        with self._operation("list", principal, None, writes=False) as connection:
            return [
                _info(row)
                for row in repository.iter_credentials(connection, state=wanted)
                if self._access.permissions(connection, principal, row.id) & _VIEW
            ]

    def revoke(
        self, credential_id: str, *, principal: str, reason: str | None = None
    ) -> CredentialInfo:
        """Withdraw for good: REVOKED, secret material and data key destroyed; history kept."""
        credential_id = check_credential_id(credential_id)
        reason = _check_reason(reason)
        with self._operation("revoke", principal, credential_id) as connection:
            act = self._act(connection, principal, credential_id, {Permission.MANAGE})
            row = repository.load_credential(connection, credential_id, for_update=True)
            version = self._change(act, row, "revoke", _material.SHREDDED, reason=reason)
            self._audit_ok(act, "revoke", credential_id, version=version)
            info = _info(repository.load_credential(connection, credential_id))
        storage.checkpoint(self._engine)  # SQLite: no copy of the old pages stays in the WAL
        logger.info("revoked {!r}", credential_id)
        self._emit(
            CredentialEvent(
                kind=EventKind.REVOKED,
                credential_id=credential_id,
                state=State.REVOKED,
                at=info.updated_at,
            )
        )
        return info

    def _force(
        self, credential_id: str, trigger: str, *, principal: str, reason: str | None = None
    ) -> CredentialInfo:
        """Fire a bare trigger with no other change (tests and repairs; still guarded)."""
        with self._operation("transition", principal, credential_id) as connection:
            act = self._act(connection, principal, credential_id, {Permission.MANAGE})
            row = repository.load_credential(connection, credential_id, for_update=True)
            version = self._change(act, row, trigger, reason=reason)
            self._audit_ok(act, "transition", credential_id, trigger=trigger, version=version)
            return _info(repository.load_credential(connection, credential_id))

    # -- access ---------------------------------------------------------------------------

    def grant(
        self,
        grantee: str,
        pattern: str,
        permissions: Iterable[str | Permission],
        *,
        principal: str,
    ) -> Grant:
        """Give ``grantee`` permissions on credentials matching ``pattern`` (admin only)."""
        check_principal(grantee)
        check_pattern(pattern)
        wanted = parse_permissions(permissions)
        with self._operation("grant", principal, None) as connection:
            self._require_admin(connection, principal)
            act = _Act(connection, principal, frozenset(), self._now())
            grant = self._access.add(connection, grantee, pattern, wanted, by=principal, at=act.now)
            permissions_text = ",".join(sorted(wanted))
            self._audit_ok(
                act, "grant", None, grantee=grantee, pattern=pattern, permissions=permissions_text
            )
        return grant

    def revoke_grant(self, grantee: str, pattern: str, *, principal: str) -> bool:
        """Remove ``grantee``'s grant on ``pattern`` (admin only); whether one existed."""
        check_principal(grantee)
        check_pattern(pattern)
        with self._operation("revoke_grant", principal, None) as connection:
            self._require_admin(connection, principal)
            act = _Act(connection, principal, frozenset(), self._now())
            removed = self._access.remove(connection, grantee, pattern)
            self._audit_ok(
                act, "revoke_grant", None, grantee=grantee, pattern=pattern, removed=removed
            )
        return removed

    def grants(self, *, principal: str, grantee: str | None = None) -> builtins.list[Grant]:
        """The grants in force (needs ``audit`` on ``*``)."""
        if grantee is not None:
            check_principal(grantee)
        with self._operation("grants", principal, None, writes=False) as connection:
            self._act(connection, principal, "*", _AUDIT)
            return self._access.grants(connection, grantee)

    # -- keys -----------------------------------------------------------------------------

    def rotate_keys(
        self,
        *,
        principal: str,
        batch_size: int = keys.DEFAULT_BATCH_SIZE,
        progress: keys.Progress | None = None,
    ) -> keys.RotationReport:
        """Add a new primary key version and re-wrap every data key under it (admin)."""
        return keys.rotate_keys(self, principal=principal, batch_size=batch_size, progress=progress)

    def rewrap_keys(
        self,
        *,
        principal: str,
        batch_size: int = keys.DEFAULT_BATCH_SIZE,
        progress: keys.Progress | None = None,
    ) -> keys.RewrapReport:
        """Re-wrap data keys not yet on the primary; finishes an interrupted rotation (admin)."""
        return keys.rewrap(self, principal=principal, batch_size=batch_size, progress=progress)

    def key_status(self, *, principal: str) -> keys.KeyStatus:
        """Key versions, the primary, and how many credentials each protects (admin)."""
        return keys.key_status(self, principal=principal)

    def retire_key(self, version: int, *, principal: str) -> tuple[int, ...]:
        """Remove a key version for good; refused while any row uses it (admin)."""
        return keys.retire_key(self, version, principal=principal)

    # -- audit ----------------------------------------------------------------------------

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> AuditReport:
        """Recompute the audit chain; the report names the first bad row.

        Pass an ``anchor`` (a head exported earlier) to detect a rewrite of the newest rows.
        """
        try:
            return self._audit.verify(self._engine, anchor=anchor)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the audit trail: {type(exc).__name__}") from None

    def audit_head(self) -> tuple[int, str]:
        """The audit chain's last sequence number and hash, for anchoring elsewhere."""
        return self._audit.head(self._engine)

    def audit_events(
        self,
        *,
        principal: str,
        limit: int = 50,
        outcome: str | None = None,
        subject: str | None = None,
        credential_id: str | None = None,
    ) -> builtins.list[AuditEvent]:
        """The newest audit events (needs ``audit`` on ``*``), oldest first."""
        if not isinstance(limit, int) or not 1 <= limit <= _MAX_AUDIT_LIMIT:
            message = f"limit: a whole number from 1 to {_MAX_AUDIT_LIMIT}"
            raise CredentialValidationError(message, fields=("limit",))
        if subject is not None:
            check_principal(subject)
        if credential_id is not None:
            check_credential_id(credential_id)
        with self._operation("audit_read", principal, None, writes=False) as connection:
            self._act(connection, principal, "*", _AUDIT)
        try:
            return self._audit.events(
                self._engine,
                limit=limit,
                principal=subject,
                outcome=outcome,
                credential_id=credential_id,
            )
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the audit trail: {type(exc).__name__}") from None


_POLL = timedelta(milliseconds=50)


def _ensure_not_revoked(row: Any) -> None:
    if row.state == State.REVOKED:
        raise CredentialUnusable(row.id, State.REVOKED, "it was revoked")


def _reauthorisation_required(row: Any) -> RefreshFailed:
    return _refresh_error(
        row, "needs re-authorisation (the provider refused the grant: {}); store new material"
    )


def _wants_refresh(row: Any, now: datetime) -> bool:
    """Whether a read must refresh first: due, or mid-refresh with no valid token to give."""
    if row.state == State.REFRESHING:
        return not still_valid(row, now)
    return needs_refresh(row, now)


def _ensure_usable(row: Any, now: datetime) -> None:
    _ensure_not_revoked(row)
    if row.state != State.EXPIRED:
        return
    if not is_refreshable(row):
        raise CredentialUnusable(row.id, State.EXPIRED, "re-authorise it by storing new material")
    if row.next_due_at is None:
        raise _reauthorisation_required(row)
    raise _refresh_failing(row)


def _refresh_failing(row: Any) -> RefreshFailed:
    retry = row.next_due_at.isoformat(timespec="seconds") if row.next_due_at else "unknown"
    return _refresh_error(
        row, "has expired and its refresh is failing ({}); next attempt at " + retry
    )


def _refresh_error(row: Any, template: str) -> RefreshFailed:
    """RefreshFailed for a stored failure; permanent when no retry is scheduled."""
    message = f"credential {row.id!r} " + template.format(row.last_error)
    permanent = row.next_due_at is None
    return RefreshFailed(
        message, permanent=permanent, credential_id=row.id, error_code=row.last_error
    )


def _lease_stale(row: Any, now: datetime) -> bool:
    return row.lease_until is None or now >= row.lease_until


def _target_state(trigger: str) -> State:
    """Where a failure trigger leads from REFRESHING."""
    return State.ACTIVE if trigger == "refresh_deferred" else State.EXPIRED


def _count(report: TickReport, outcome: str) -> None:
    if outcome in ("refreshed", "deferred"):
        report.refreshed += outcome == "refreshed"
        report.failed += outcome == "deferred"
    elif outcome == "expired":
        report.expired += 1
    elif outcome == "failed":
        report.failed += 1
    elif outcome.startswith("error:"):
        report.errors.append(outcome)
    else:
        report.skipped += 1


def _past_expiry(row: Any, now: datetime) -> bool:
    return row.expires_at is not None and now >= row.expires_at
