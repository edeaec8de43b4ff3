"""The SQLModel tables: credentials, their history, the audit chain, grants and principals.

The schema is created and changed only by the Alembic migrations beside this module; a
test checks the migrations produce exactly these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "AuditEventRow",
    "AuditHeadRow",
    "ConnectSessionRow",
    "CredentialRow",
    "GrantRow",
    "HistoryRow",
    "KeyCheckRow",
    "PrincipalRow",
]


class CredentialRow(SQLModel, table=True):
    """One credential: lifecycle state, sealed secret fields, non-secret metadata, timers."""

    __tablename__ = "credential"
    __table_args__ = (
        Index("ix_credential_next_due_at", "next_due_at"),
        Index("ix_credential_probe_due_at", "probe_due_at"),
    )

    id: str = Field(primary_key=True, max_length=128)
    type: str = Field(max_length=32)
    state: str = Field(max_length=16, index=True)
    version: int
    key_version: int | None = Field(default=None, index=True)
    wrapped_dek: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    sealed: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    public: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    expires_at: datetime | None = None
    material_at: datetime
    next_due_at: datetime | None = None
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: datetime | None = None
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=256)
    probe_at: datetime | None = None
    probe_status: int | None = None
    probe_ok: bool | None = None
    probe_due_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    record_mac: str | None = Field(default=None, max_length=64)
    """MAC of the row (all but the probe columns) under a keyring-derived key; NULL only for
    a row written before migration 0006 that the manager has not sealed yet."""


class HistoryRow(SQLModel, table=True):
    """One fired transition; append-only (database triggers refuse UPDATE and DELETE)."""

    __tablename__ = "credential_history"
    __table_args__ = (Index("ix_credential_history_credential_id_id", "credential_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    credential_id: str = Field(max_length=128, index=True)
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str = Field(max_length=16)
    trigger: str = Field(max_length=32)
    principal: str = Field(max_length=128)
    reason: str | None = Field(default=None, max_length=512)
    at: datetime
    version: int


class AuditEventRow(SQLModel, table=True):
    """One audit event, hash-chained to the one before; append-only."""

    __tablename__ = "audit_event"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime
    principal: str = Field(max_length=128, index=True)
    action: str = Field(max_length=32)
    credential_id: str | None = Field(default=None, max_length=128, index=True)
    outcome: str = Field(max_length=16)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHeadRow(SQLModel, table=True):
    """The chain's head (last sequence number and hash): the row writers lock to append.

    The anchor is the last archived row (sequence number and hash): verification starts
    after it, and rows up to it may be pruned (GENESIS and 0 until the first archive).
    """

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int
    hash: str = Field(max_length=64)
    anchor_seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    anchor_hash: str = Field(
        default="0" * 64, max_length=64, sa_column_kwargs={"server_default": "0" * 64}
    )


class GrantRow(SQLModel, table=True):
    """Permissions of one principal on credentials whose id matches ``pattern``."""

    __tablename__ = "access_grant"
    __table_args__ = (UniqueConstraint("principal", "pattern", name="uq_grant_principal_pattern"),)

    id: int | None = Field(default=None, primary_key=True)
    principal: str = Field(max_length=128, index=True)
    pattern: str = Field(max_length=128)
    permissions: str = Field(max_length=64)
    created_at: datetime
    created_by: str = Field(max_length=128)
    record_mac: str | None = Field(default=None, max_length=64)
    """MAC of principal, pattern, permissions, created_at and created_by (NULL: a row from
    before migration 0006 not yet sealed)."""


class KeyCheckRow(SQLModel, table=True):
    """A fingerprint of one key version (0: the audit seed) of the key file that writes this
    database, so opening it with another key file is named as such."""

    __tablename__ = "key_check"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    fingerprint: str = Field(max_length=64)
    created_at: datetime


class ConnectSessionRow(SQLModel, table=True):
    """One authorization-code connect in progress: single use, bound, short-lived.

    The state is stored only as its SHA-256; the PKCE verifier is sealed under its own data
    key (wrapped by the keyring); ``used_at`` marks it spent, and spending destroys the
    sealed verifier and its key. ``return_to`` is where the HTTP service sends the browser
    once the callback is done (a URL the service's allow-list accepted), or None.
    """

    __tablename__ = "connect_session"

    state_hash: str = Field(primary_key=True, max_length=64)
    credential_id: str = Field(max_length=128, index=True)
    principal: str = Field(max_length=128)
    redirect_uri: str = Field(max_length=2048)
    scope: str | None = Field(default=None, max_length=2048)
    return_to: str | None = Field(default=None, max_length=2048)
    sealed_verifier: str | None = Field(default=None, max_length=512)
    wrapped_dek: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    key_version: int | None = None
    created_at: datetime
    expires_at: datetime = Field(index=True)
    used_at: datetime | None = None


class PrincipalRow(SQLModel, table=True):
    """A component's identity: its token's public id and keyed hash (never the token).

    ``record_mac`` authenticates every field but ``last_used_at`` under a keyring-derived
    key, so a database writer without the key cannot forge, extend or un-revoke a principal.
    """

    __tablename__ = "principal"

    name: str = Field(primary_key=True, max_length=128)
    token_id: str = Field(max_length=16, unique=True)
    token_hash: str = Field(max_length=64)
    description: str | None = Field(default=None, max_length=256)
    created_at: datetime
    created_by: str = Field(max_length=128)
    token_issued_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    record_mac: str = Field(max_length=64)
