"""Credentials as their users see them: store, read (whole or as request material), describe,
list, revoke. Every call is one audited transaction (see ``_operation``); reads that find a
refresh due hand over to the refresher first, then read again.
"""

from __future__ import annotations

import base64
import builtins
from datetime import timedelta
from typing import Any

from loguru import logger

from credman import _sealing
from credman._operation import Act, Operations
from credman.access import Actor
from credman.errors import CredentialUnusable, CredentialValidationError, InvalidTransition
from credman.keys import KeyManager
from credman.lifecycle import (
    CREDENTIAL_TYPES,
    ApiKey,
    BasicAuth,
    BearerToken,
    Credential,
    JWTBearer,
    OAuth2,
    Permission,
    RefreshPolicy,
    State,
    next_due_at,
)
from credman.lifecycle.decisions import (
    ensure_usable,
    is_refreshable,
    past_expiry,
    refresh_failing,
    wants_refresh,
)
from credman.models import Access, CredentialInfo, Transition, info_of, transition_of
from credman.notify import CredentialEvent, EventKind, Notifier
from credman.refresher import Refresher, jitter
from credman.storage import CredentialRecord, checkpoint, repository
from credman.validation import check_credential_id, check_min_ttl, check_reason, check_state

__all__ = ["VIEW", "Credentials", "access_of"]

VIEW = frozenset({Permission.USE, Permission.READ, Permission.MANAGE, Permission.AUDIT})
"""Any of these lets a principal see a credential's metadata."""
_HISTORY = frozenset({Permission.MANAGE, Permission.AUDIT})
_READ_ATTEMPTS = 3
_RENEW_ATTEMPTS = 2

Opened = tuple[Credential, int]
"""A decrypted credential and the version it was read at."""


def access_of(credential_id: str, version: int, credential: Credential) -> Access:
    """The request material of ``credential``: headers, query parameters, the bare token."""
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    token = None
    if isinstance(credential, OAuth2 | JWTBearer):
        token = credential.access_token
        value = token.reveal() if token is not None else ""
        headers["Authorization"] = f"{getattr(credential, 'token_type', 'Bearer')} {value}"
    elif isinstance(credential, BearerToken):
        token = credential.token
        headers["Authorization"] = f"Bearer {token.reveal()}"
    elif isinstance(credential, BasicAuth):
        pair = f"{credential.username}:{credential.password.reveal()}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    elif isinstance(credential, ApiKey):
        token = credential.key
        value = credential.prefix + token.reveal()
        if credential.query_param is not None:
            params[credential.query_param] = value
        else:
            headers[credential.header_name] = value
    expires_at = credential.expires_at_or_none
    refreshable = credential.refreshable
    return Access(credential_id, version, headers, params, expires_at, token, refreshable)


class Credentials:
    """Store, get, access, info, history, list and revoke."""

    def __init__(
        self,
        operations: Operations,
        keys: KeyManager,
        refresher: Refresher,
        notifier: Notifier,
        policy: RefreshPolicy,
    ) -> None:
        self._operations = operations
        self._keys = keys
        self._refresher = refresher
        self._notifier = notifier
        self._policy = policy

    def __repr__(self) -> str:
        return "Credentials()"

    # -- writes ---------------------------------------------------------------------------

    def store(
        self,
        credential_id: str,
        credential: Credential,
        *,
        principal: Actor,
        reason: str | None,
        create_only: bool = False,
    ) -> CredentialInfo:
        """Validate, encrypt and upsert; a new credential ends ACTIVE, an update UPDATED.
        With ``create_only`` an existing id (revoked ones included) is refused, unchanged."""
        credential_id = check_credential_id(credential_id)
        reason = check_reason(reason)
        if not isinstance(credential, Credential):
            names = ", ".join(cls.__name__ for cls in CREDENTIAL_TYPES.values())
            raise CredentialValidationError(
                f"credential: expected one of {names}", fields=("credential",)
            )
        ops = self._operations
        with ops.run("store", principal, credential_id) as connection:
            act = ops.act(connection, principal, credential_id, {Permission.MANAGE})
            credential = credential.resolved(act.now)
            values = self._keys.seal(connection, credential_id, credential) | {
                "expires_at": credential.expires_at_or_none,
                "material_at": act.now,
                "next_due_at": next_due_at(credential, act.now, self._policy, jitter()),
                "lease_owner": None,
                "lease_until": None,
                "attempts": 0,
                "last_error": None,
                "probe_due_at": act.now if credential.probe else None,
            }
            record = ops.load_if_any(connection, credential_id, for_update=True)
            if record is not None and create_only:
                raise _exists(credential_id, record.state)
            pending = isinstance(credential, OAuth2) and credential.awaiting_connect
            if record is None and pending:  # registered for connect: CREATED until authorised
                record = self._create(act, credential_id, values, reason)
                row = {**record.columns(), "version": 1}
                row["record_mac"] = ops.seals.credential_mac(row)
                repository.insert_credential(connection, row)
                version = 1
            elif record is None:
                record = self._create(act, credential_id, values, reason)
                version = ops.change(act, record, "activate", reason=reason)
            elif pending:
                raise CredentialValidationError(
                    "credential: it exists; re-authorize it with connect instead of "
                    "storing one without tokens",
                    fields=("credential",),
                    credential_id=credential_id,
                )
            else:
                version = ops.change(act, record, "update", values, reason=reason)
            action = "create" if version == 1 else "update"
            ops.audit(act, action, credential_id, type=credential.kind, version=version)
            info = info_of(ops.load(connection, credential_id))
        logger.info("stored {} {!r} (version {})", credential.kind, credential_id, version)
        return info

    def _create(
        self, act: Act, credential_id: str, values: dict[str, Any], reason: str | None
    ) -> CredentialRecord:
        """The CREATED credential, recorded in history; the ``activate`` that follows inserts it."""
        self._operations.append_history(
            act,
            credential_id=credential_id,
            from_state=None,
            to_state=State.CREATED,
            trigger="create",
            principal=act.name,
            reason=reason,
            at=act.now,
            version=1,
        )
        return self._operations.new_record(act, credential_id, values)

    def revoke(self, credential_id: str, *, principal: Actor, reason: str | None) -> CredentialInfo:
        """Withdraw for good: REVOKED, secret material and data key destroyed; history kept."""
        credential_id = check_credential_id(credential_id)
        reason = check_reason(reason)
        ops = self._operations
        with ops.run("revoke", principal, credential_id) as connection:
            act = ops.act(connection, principal, credential_id, {Permission.MANAGE})
            # not checked: revoking only destroys, so it also clears a row that fails its MAC
            record = repository.load_credential(connection, credential_id, for_update=True)
            version = ops.change(act, record, "revoke", _sealing.SHREDDED, reason=reason)
            ops.audit(act, "revoke", credential_id, version=version)
            info = info_of(ops.load(connection, credential_id))
        checkpoint(ops.engine)  # SQLite: no copy of the old pages stays in the WAL
        logger.info("revoked {!r}", credential_id)
        self._notifier.emit(
            CredentialEvent(
                kind=EventKind.REVOKED,
                credential_id=credential_id,
                state=State.REVOKED,
                at=info.updated_at,
            )
        )
        return info

    def purge(self, credential_id: str, *, principal: Actor) -> None:
        """Remove a revoked credential's row so the id can be stored anew (MANAGE, audited);
        its history and audit rows stay. Refused for a credential that is not revoked."""
        credential_id = check_credential_id(credential_id)
        ops = self._operations
        with ops.run("purge", principal, credential_id) as connection:
            act = ops.act(connection, principal, credential_id, {Permission.MANAGE})
            # not checked: purging only deletes a REVOKED row (also one that fails its MAC)
            record = repository.load_credential(connection, credential_id, for_update=True)
            if record.state != State.REVOKED:
                raise InvalidTransition(credential_id, record.state, "purge")
            repository.delete_revoked_credential(connection, credential_id)
            ops.audit(act, "purge", credential_id, version=record.version)
        logger.info("purged {!r}", credential_id)

    def force_transition(
        self, credential_id: str, trigger: str, *, principal: Actor, reason: str | None
    ) -> CredentialInfo:
        """Fire a bare trigger with no other change (operators' repairs; guarded and audited)."""
        credential_id = check_credential_id(credential_id)
        reason = check_reason(reason)
        ops = self._operations
        with ops.run("transition", principal, credential_id) as connection:
            act = ops.act(connection, principal, credential_id, {Permission.MANAGE})
            record = ops.load(connection, credential_id, for_update=True)
            version = ops.change(act, record, trigger, reason=reason)
            ops.audit(act, "transition", credential_id, trigger=trigger, version=version)
            return info_of(ops.load(connection, credential_id))

    # -- reads ----------------------------------------------------------------------------

    def get(self, credential_id: str, *, principal: Actor) -> Opened:
        """The whole decrypted credential (READ) and its version, refreshed first when due."""
        return self._read_fresh(credential_id, principal, Permission.READ, "read")

    def open_for_use(self, credential_id: str, *, principal: Actor) -> Opened:
        """The credential opened for applying it (USE), for in-process callers that never hand
        the whole of it out (``access``, probes)."""
        return self._read_fresh(credential_id, principal, Permission.USE, "access")

    def access(self, credential_id: str, *, principal: Actor, min_ttl: float = 0) -> Access:
        """Request material (USE) valid for at least ``min_ttl`` seconds, refreshed if need be."""
        min_ttl = check_min_ttl(min_ttl)
        credential, version = self.open_for_use(credential_id, principal=principal)
        if not self._expires_within(credential, min_ttl):
            return access_of(credential_id, version, credential)
        for _ in range(_RENEW_ATTEMPTS if credential.refreshable else 0):
            # twice: another caller's refresh may have landed just before ours was due
            self._refresher.renew(credential_id, principal, version)
            credential, version = self.open_for_use(credential_id, principal=principal)
            if not self._expires_within(credential, min_ttl):
                return access_of(credential_id, version, credential)
        why = f"its material expires in less than min_ttl ({min_ttl:g} s)"
        raise CredentialUnusable(credential_id, "short-lived", why)

    def _expires_within(self, credential: Credential, seconds: float) -> bool:
        expires_at = credential.expires_at_or_none
        if expires_at is None or seconds <= 0:
            return False
        return expires_at - self._operations.now() < timedelta(seconds=seconds)

    def _read_fresh(
        self, credential_id: str, principal: Actor, need: Permission, action: str
    ) -> Opened:
        credential_id = check_credential_id(credential_id)
        for _ in range(_READ_ATTEMPTS):
            opened = self._read(credential_id, principal, need, action)
            if opened is not None:
                return opened
            self._refresher.refresh_due(credential_id, principal)
        message = f"credential {credential_id!r} keeps changing; try again"
        raise CredentialUnusable(credential_id, "busy", message)

    def _read(
        self, credential_id: str, principal: Actor, need: Permission, action: str
    ) -> Opened | None:
        """One audited read and the version read; None when a refresh must come first.

        Material past its expiry is never handed out: the credential moves to EXPIRED
        (keeping a pending retry time, if a refresh is backing off) and the read fails.
        """
        ops = self._operations
        with ops.run(action, principal, credential_id) as connection:
            act = ops.act(connection, principal, credential_id, {need})
            record = ops.load(connection, credential_id, for_update=True)
            if wants_refresh(record, act.now):
                return None
            ensure_usable(record, act.now)
            if past_expiry(record.expires_at, act.now):
                self._expire(act, record)
            else:
                credential = self._keys.open(record)
                ops.audit(act, action, credential_id, version=record.version)
                return credential, record.version
        # raised after the commit, so the expiry stays recorded
        self._notifier.emit(
            CredentialEvent(
                kind=EventKind.EXPIRED, credential_id=credential_id, state=State.EXPIRED, at=act.now
            )
        )
        if is_refreshable(record):
            raise refresh_failing(record)
        raise CredentialUnusable(credential_id, State.EXPIRED, "its material has expired")

    def _expire(self, act: Act, record: CredentialRecord) -> None:
        values = {} if is_refreshable(record) else {"next_due_at": None}
        version = self._operations.change(act, record, "expire", values)
        self._operations.audit(act, "expire", record.id, version=version)

    def info(self, credential_id: str, *, principal: Actor) -> CredentialInfo:
        """Metadata and state; no secret values."""
        credential_id = check_credential_id(credential_id)
        ops = self._operations
        with ops.run("info", principal, credential_id, writes=False) as connection:
            ops.act(connection, principal, credential_id, VIEW)
            return info_of(ops.load(connection, credential_id))

    def history(self, credential_id: str, *, principal: Actor) -> builtins.list[Transition]:
        """Every transition of the credential, oldest first."""
        credential_id = check_credential_id(credential_id)
        ops = self._operations
        with ops.run("history", principal, credential_id, writes=False) as connection:
            ops.act(connection, principal, credential_id, _HISTORY)
            repository.load_credential(connection, credential_id)
            rows = repository.history_rows(connection, credential_id)
            return [transition_of(row) for row in rows]

    def list(
        self, *, principal: Actor, state: State | str | None = None
    ) -> builtins.list[CredentialInfo]:
        """The credentials ``principal`` may see, by id."""
        wanted = check_state(state) if state is not None else None
        ops = self._operations
        with ops.run("list", principal, None, writes=False) as connection:
            visible = [
                record
                for record in repository.iter_credentials(connection, state=wanted)
                if ops.policy.permissions(connection, principal, record.id) & VIEW
            ]
        found, tampered = [], []
        for record in visible:
            if ops.seals.credential_authentic(record):
                found.append(info_of(record))
            else:
                tampered.append(record.id)
        for credential_id in tampered:  # logged after the transaction
            logger.error("credential {!r} fails its MAC: left out of the list", credential_id)
        return found


def _exists(credential_id: str, state: str) -> CredentialValidationError:
    hint = "purge it first" if state == State.REVOKED else "update it instead"
    return CredentialValidationError(
        f"credential_id: {credential_id!r} already exists ({str(state).lower()}); {hint}",
        fields=("credential_id",),
        credential_id=credential_id,
    )
