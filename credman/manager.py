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
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Self

from loguru import logger
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from credman import _material
from credman.access import (
    SYSTEM_PRINCIPAL,
    AccessPolicy,
    Grant,
    check_pattern,
    check_principal,
    parse_permissions,
)
from credman.audit import AuditEvent, AuditLog, AuditReport
from credman.config import Settings
from credman.crypto import EnvKeyProvider, KeyFileProvider, KeyProvider, Keyring
from credman.errors import (
    AccessDenied,
    CredentialError,
    CredentialUnusable,
    CredentialValidationError,
    StorageError,
)
from credman.lifecycle import (
    CREDENTIAL_TYPES,
    Credential,
    Permission,
    RefreshPolicy,
    State,
    Subject,
    fire,
    next_due_at,
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
    if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_REASON):
        raise CredentialValidationError(
            f"reason: text of at most {_MAX_REASON} characters", fields=("reason",)
        )
    return reason


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
        """Release database connections."""
        self._engine.dispose()

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
        if principal != SYSTEM_PRINCIPAL:
            check_principal(principal)
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
    ) -> _Act:
        """What ``principal`` holds on the credential; AccessDenied unless one of ``need``."""
        held = self._access.permissions(connection, principal, credential_id)
        if not held & need:
            raise AccessDenied(principal, "|".join(sorted(p.value for p in need)), credential_id)
        return _Act(connection, principal, held, self._now())

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
            refreshable=_refreshable(row),
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
            values = _material.seal(self._keyring, credential_id, credential) | {
                "expires_at": credential.expires_at_or_none,
                "material_at": act.now,
                "next_due_at": next_due_at(credential, act.now, self._policy),
                "lease_owner": None,
                "lease_until": None,
                "attempts": 0,
                "last_error": None,
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
        """The decrypted credential; its secret fields are ``Secret`` values. Audited."""
        credential_id = check_credential_id(credential_id)
        expired = False
        with self._operation("read", principal, credential_id) as connection:
            act = self._act(connection, principal, credential_id, {Permission.USE})
            row = repository.load_credential(connection, credential_id, for_update=True)
            _ensure_not_dead(row)
            expired = _past_expiry(row, act.now) and not _refreshable(row)
            if expired:
                version = self._change(act, row, "expire", {"next_due_at": None})
                self._audit_ok(act, "expire", credential_id, version=version)
            else:
                credential = self._open(row)
                self._audit_ok(act, "read", credential_id, version=row.version)
        if expired:  # raised after the commit, so the expiry stays recorded
            raise CredentialUnusable(credential_id, State.EXPIRED, "its material has expired")
        return credential

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
        wanted = State(state).value if state is not None else None
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
        logger.info("revoked {!r}", credential_id)
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
        with self._operation("grants", principal, None, writes=False) as connection:
            self._act(connection, principal, "*", _AUDIT)
            return self._access.grants(connection, grantee)

    # -- audit ----------------------------------------------------------------------------

    def verify_audit(self) -> AuditReport:
        """Recompute the audit chain; the report names the first bad row."""
        try:
            return self._audit.verify(self._engine)
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
        with self._operation("audit_read", principal, None, writes=False) as connection:
            self._act(connection, principal, "*", _AUDIT)
        return self._audit.events(
            self._engine,
            limit=limit,
            principal=subject,
            outcome=outcome,
            credential_id=credential_id,
        )


def _ensure_not_dead(row: Any) -> None:
    if row.state == State.REVOKED:
        raise CredentialUnusable(row.id, State.REVOKED, "it was revoked")
    if row.state == State.EXPIRED:
        raise CredentialUnusable(row.id, State.EXPIRED, "re-authorise it by storing new material")


def _past_expiry(row: Any, now: datetime) -> bool:
    return row.expires_at is not None and now >= row.expires_at


def _refreshable(row: Any) -> bool:
    kind = CREDENTIAL_TYPES.get(row.type)
    return kind is not None and kind.can_refresh(row.public, row.sealed.keys())
