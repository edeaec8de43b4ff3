"""Typed records: what the storage layer hands back, instead of raw SQLAlchemy rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self

__all__ = [
    "AuditHead",
    "AuditRecord",
    "ConnectSessionRecord",
    "CredentialRecord",
    "DueCredential",
    "GrantRecord",
    "HistoryRecord",
    "PrincipalRecord",
]


_NAMES: dict[type, tuple[str, ...]] = {}


class _FromRow:
    """Build a record from a row (or mapping) holding at least the record's columns."""

    __slots__ = ()

    @classmethod
    def from_row(cls, row: Any) -> Self:
        mapping: Mapping[str, Any] = row._mapping if hasattr(row, "_mapping") else row
        return cls(*[mapping[name] for name in cls.column_names()])

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        names = _NAMES.get(cls)
        if names is None:
            names = _NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        return names


@dataclass(frozen=True, slots=True)
class CredentialRecord(_FromRow):
    """One stored credential: lifecycle state, sealed secrets, non-secret fields, timers."""

    id: str
    type: str
    state: str
    version: int
    key_version: int | None
    wrapped_dek: bytes | None
    sealed: Mapping[str, str]
    public: Mapping[str, Any]
    expires_at: datetime | None
    material_at: datetime
    next_due_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    attempts: int
    last_error: str | None
    probe_at: datetime | None
    probe_status: int | None
    probe_ok: bool | None
    probe_due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    record_mac: str | None

    def columns(self) -> dict[str, Any]:
        """Every column's value, for an insert."""
        return {name: getattr(self, name) for name in self.column_names()}


@dataclass(frozen=True, slots=True)
class DueCredential(_FromRow):
    """A credential the sweep found due: enough to tell a refresh from an expiry."""

    id: str
    type: str
    state: str
    public: Mapping[str, Any]
    sealed: Mapping[str, str]
    expires_at: datetime | None
    next_due_at: datetime | None
    lease_until: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class HistoryRecord(_FromRow):
    """One fired transition."""

    credential_id: str
    from_state: str | None
    to_state: str
    trigger: str
    principal: str
    reason: str | None
    at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class GrantRecord(_FromRow):
    """One grant row: permissions (comma-separated names) on credentials matching a pattern."""

    id: int
    principal: str
    pattern: str
    permissions: str
    created_at: datetime
    created_by: str
    record_mac: str | None


@dataclass(frozen=True, slots=True)
class AuditRecord(_FromRow):
    """One audit chain row."""

    seq: int
    at: datetime
    principal: str
    action: str
    credential_id: str | None
    outcome: str
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditHead(_FromRow):
    """The chain's head and its anchor (the last archived row; 0 and GENESIS before any)."""

    seq: int
    hash: str
    anchor_seq: int
    anchor_hash: str


@dataclass(frozen=True, slots=True)
class ConnectSessionRecord(_FromRow):
    """One connect session: hashed state, bindings, expiry, the sealed PKCE verifier."""

    state_hash: str
    credential_id: str
    principal: str
    redirect_uri: str
    scope: str | None
    return_to: str | None
    sealed_verifier: str | None
    wrapped_dek: bytes | None
    key_version: int | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True, slots=True)
class PrincipalRecord(_FromRow):
    """One principal: its token's public id and keyed hash, lifetime, and the row's MAC."""

    name: str
    token_id: str
    token_hash: str
    description: str | None
    created_at: datetime
    created_by: str
    token_issued_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    record_mac: str

    def authenticated_fields(self) -> dict[str, Any]:
        """The fields the record MAC covers: all but ``last_used_at`` and the MAC itself."""
        return {
            name: getattr(self, name)
            for name in self.column_names()
            if name not in ("last_used_at", "record_mac")
        }
