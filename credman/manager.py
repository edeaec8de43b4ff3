"""``CredentialManager``: the public facade over lifecycle, crypto, storage, access and audit.

The plumbing (transactions, audited refusals, guarded transitions) is in ``_base``, and
refresh, the sweep and ``auth`` in ``_maintenance``; this module is the API of API.md.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from loguru import logger
from sqlalchemy.exc import SQLAlchemyError

from credman import _material, keys, refresh
from credman._base import (
    Act,
    CredentialInfo,
    Transition,
    check_credential_id,
    check_reason,
    check_state,
    info_of,
    transition_of,
)
from credman._maintenance import Maintenance
from credman.access import (
    Grant,
    check_pattern,
    check_principal,
    parse_permissions,
)
from credman.audit import AuditEvent, AuditReport
from credman.auth import CredentialAuth
from credman.connect import Connecting
from credman.errors import (
    CredentialUnusable,
    CredentialValidationError,
    StorageError,
)
from credman.lifecycle import (
    CREDENTIAL_TYPES,
    Credential,
    OAuth2,
    Permission,
    State,
    next_due_at,
)
from credman.notify import CredentialEvent, EventKind
from credman.refresh import (
    ensure_usable,
    is_refreshable,
    past_expiry,
    refresh_failing,
    wants_refresh,
)
from credman.storage import engine as storage
from credman.storage import repository

__all__ = ["CredentialInfo", "CredentialManager", "Transition", "check_credential_id"]

_VIEW = frozenset({Permission.USE, Permission.MANAGE, Permission.AUDIT})
_HISTORY = frozenset({Permission.MANAGE, Permission.AUDIT})
_AUDIT = frozenset({Permission.AUDIT})
_MAX_AUDIT_LIMIT = 100_000


class CredentialManager(Connecting, Maintenance):
    """Stores, serves, refreshes and revokes credentials; see API.md for the contract."""

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
        reason = check_reason(reason)
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
            pending = isinstance(credential, OAuth2) and credential.awaiting_connect
            if row is None and pending:  # registered for connect: CREATED until authorised
                row = self._create(act, credential_id, values, reason)
                repository.insert_credential(
                    connection, {**vars(row), "version": 1, "updated_at": act.now}
                )
            elif row is None:
                row = self._create(act, credential_id, values, reason)
                self._change(act, row, "activate", reason=reason)
            elif pending:
                raise CredentialValidationError(
                    "credential: it exists; re-authorise it with connect instead of "
                    "storing one without tokens",
                    fields=("credential",),
                    credential_id=credential_id,
                )
            else:
                self._change(act, row, "update", values, reason=reason)
            info = info_of(repository.load_credential(connection, credential_id))
            action = "create" if info.version == 1 else "update"
            self._audit_ok(act, action, credential_id, type=credential.kind, version=info.version)
        logger.info("stored {} {!r} (version {})", credential.kind, credential_id, info.version)
        return info

    def _create(
        self, act: Act, credential_id: str, values: dict[str, Any], reason: str | None
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
        return self._get_versioned(credential_id, principal)[0]

    def _get_versioned(self, credential_id: str, principal: str) -> tuple[Credential, int]:
        """What ``get`` returns, with the version it was read at (for the 401 path)."""
        credential_id = check_credential_id(credential_id)
        for _ in range(3):
            read = self._read(credential_id, principal)
            if read is not None:
                return read
            self._refresh_flight(credential_id, principal, frozenset({Permission.USE}))
        message = f"credential {credential_id!r} keeps changing; try again"
        raise CredentialUnusable(credential_id, "busy", message)

    def _read(self, credential_id: str, principal: str) -> tuple[Credential, int] | None:
        """One audited read and the version read; None when a refresh must come first.

        Material past its expiry is never handed out: the credential moves to EXPIRED
        (keeping a pending retry time, if a refresh is backing off) and the read fails.
        """
        with self._operation("read", principal, credential_id) as connection:
            act = self._act(connection, principal, credential_id, {Permission.USE})
            row = repository.load_credential(connection, credential_id, for_update=True)
            if wants_refresh(row, act.now):
                return None
            ensure_usable(row, act.now)
            expired = past_expiry(row, act.now)
            if expired:
                retrying = is_refreshable(row)
                values = {} if retrying else {"next_due_at": None}
                version = self._change(act, row, "expire", values)
                self._audit_ok(act, "expire", credential_id, version=version)
            else:
                credential = self._open(row)
                self._audit_ok(act, "read", credential_id, version=row.version)
        if not expired:
            return credential, row.version
        # raised after the commit, so the expiry stays recorded
        self._emit(
            CredentialEvent(
                kind=EventKind.EXPIRED, credential_id=credential_id, state=State.EXPIRED, at=act.now
            )
        )
        if retrying:
            raise refresh_failing(row)
        raise CredentialUnusable(credential_id, State.EXPIRED, "its material has expired")

    def refresh(self, credential_id: str, *, principal: str, force: bool = False) -> CredentialInfo:
        """Refresh now (``force``) or only when due; raises RefreshFailed when it fails."""
        credential_id = check_credential_id(credential_id)
        self._refresh_flight(credential_id, principal, frozenset({Permission.MANAGE}), force=force)
        return self.info(credential_id, principal=principal)

    def auth(self, credential_id: str, *, principal: str) -> CredentialAuth:
        """An ``httpx.Auth`` (sync and async) that injects the credential and, on a 401,
        refreshes once and retries once."""
        return CredentialAuth(self, check_credential_id(credential_id), principal)

    def info(self, credential_id: str, *, principal: str) -> CredentialInfo:
        """Metadata and state; no secret values."""
        credential_id = check_credential_id(credential_id)
        with self._operation("info", principal, credential_id, writes=False) as connection:
            self._act(connection, principal, credential_id, _VIEW)
            return info_of(repository.load_credential(connection, credential_id))

    def history(self, credential_id: str, *, principal: str) -> list[Transition]:
        """Every transition of the credential, oldest first."""
        credential_id = check_credential_id(credential_id)
        with self._operation("history", principal, credential_id, writes=False) as connection:
            self._act(connection, principal, credential_id, _HISTORY)
            repository.load_credential(connection, credential_id)
            return [
                transition_of(row) for row in repository.history_rows(connection, credential_id)
            ]

    def list(
        self, *, principal: str, state: State | str | None = None
    ) -> builtins.list[CredentialInfo]:
        """The credentials ``principal`` may see (use, manage or audit), by id."""
        wanted = check_state(state) if state is not None else None
        with self._operation("list", principal, None, writes=False) as connection:
            return [
                info_of(row)
                for row in repository.iter_credentials(connection, state=wanted)
                if self._access.permissions(connection, principal, row.id) & _VIEW
            ]

    def revoke(
        self, credential_id: str, *, principal: str, reason: str | None = None
    ) -> CredentialInfo:
        """Withdraw for good: REVOKED, secret material and data key destroyed; history kept."""
        credential_id = check_credential_id(credential_id)
        reason = check_reason(reason)
        with self._operation("revoke", principal, credential_id) as connection:
            act = self._act(connection, principal, credential_id, {Permission.MANAGE})
            row = repository.load_credential(connection, credential_id, for_update=True)
            version = self._change(act, row, "revoke", _material.SHREDDED, reason=reason)
            self._audit_ok(act, "revoke", credential_id, version=version)
            info = info_of(repository.load_credential(connection, credential_id))
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
            return info_of(repository.load_credential(connection, credential_id))

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
            act = Act(connection, principal, frozenset(), self._now())
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
            act = Act(connection, principal, frozenset(), self._now())
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
