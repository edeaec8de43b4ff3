"""The plumbing under ``CredentialManager``: configuration, transactions that audit their
refusals, guarded transitions, and the value types the manager returns.

Every operation runs in one database transaction that checks access, loads the row, fires
the lifecycle trigger (if any), writes state, history and the audit event, and commits; any
error rolls all of it back. A refused operation is audited in a transaction of its own, so
denials and failures are on record even though nothing changed. Time comes from one clock
(``clock``, default ``datetime.now(UTC)``) and is passed down; the database clock is never
used.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import httpx
from loguru import logger
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from credman import _material
from credman.access import (
    SYSTEM_PRINCIPAL,
    AccessPolicy,
    check_principal,
)
from credman.audit import AuditLog
from credman.config import Settings
from credman.crypto import EnvKeyProvider, KeyFileProvider, KeyProvider, Keyring
from credman.egress import EgressPolicy, EgressTransport
from credman.errors import (
    AccessDenied,
    CredentialError,
    CredentialValidationError,
    StorageError,
)
from credman.lifecycle import (
    Credential,
    Permission,
    RefreshPolicy,
    State,
    Subject,
    fire,
)
from credman.notify import CredentialEvent, Hook
from credman.refresh import is_refreshable
from credman.storage import engine as storage
from credman.storage import migrate, repository

__all__ = [
    "Act",
    "CredentialInfo",
    "ManagerBase",
    "Transition",
    "check_credential_id",
    "check_reason",
    "check_state",
    "info_of",
    "transition_of",
]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
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


def check_reason(reason: str | None) -> str | None:
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


def check_state(state: State | str) -> str:
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
class Act:
    """One operation in progress: its transaction, who acts, what they hold, and when."""

    connection: Connection
    principal: str
    held: frozenset[Permission]
    now: datetime


def info_of(row: Any) -> CredentialInfo:
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


def transition_of(row: Any) -> Transition:
    before = State(row.from_state) if row.from_state else None
    return Transition(
        before, State(row.to_state), row.trigger, row.principal, row.reason, row.at, row.version
    )


class ManagerBase:
    """Configuration, transactions and guarded transitions shared by the manager's parts."""

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
        egress: EgressPolicy | None = None,
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
        self._egress = egress or EgressPolicy.from_env()
        self._http = http_client or httpx.Client(
            follow_redirects=False, transport=EgressTransport(self._egress)
        )
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
    ) -> Act:
        """What ``principal`` holds on the credential; AccessDenied unless one of ``need``."""
        held = self._access.permissions(connection, principal, credential_id)
        if not held & need:
            raise AccessDenied(principal, "|".join(sorted(p.value for p in need)), credential_id)
        return Act(connection, principal, held, now or self._now())

    def _require_admin(self, connection: Connection, principal: str) -> None:
        if not self._access.is_admin(connection, principal):
            raise AccessDenied(principal, Permission.ADMIN.value)

    def _change(
        self,
        act: Act,
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

    def _audit_ok(self, act: Act, action: str, credential_id: str | None, **detail: Any) -> None:
        self._audit_outcome(act, action, credential_id, "ok", **detail)

    def reload_keys(self) -> Keyring:
        """Re-read the keyring from its provider (e.g. after another process rotated it)."""
        with self._keyring_lock:
            self._keyring = self._provider.load()
        return self._keyring

    def _open(self, row: Any) -> Credential:
        return _material.open_row(self._keyring, row, reload=self.reload_keys)

    def _audit_outcome(
        self, act: Act, action: str, credential_id: str | None, outcome: str, **detail: Any
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
