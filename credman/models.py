"""The values the manager returns: credential metadata, history steps and request material."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from credman.crypto import Secret
from credman.lifecycle import State
from credman.lifecycle.decisions import error_code
from credman.storage import CredentialRecord, HistoryRecord

__all__ = ["Access", "CredentialInfo", "Transition", "info_of", "transition_of"]


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """What is known about a credential, without any secret value."""

    credential_id: str
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


@dataclass(frozen=True, slots=True, repr=False)
class Access:
    """Request material: what to put on a request to the external system, and until when.

    ``headers`` and ``params`` carry the secret values (that is their purpose); the repr
    shows only their names. ``token`` is the bare secret (access token, bearer token or API
    key) for tools that need it alone; None for basic auth. ``refreshable``: whether asking
    for fresh material after a 401 can help. Never the refresh token, client secret or
    private key.
    """

    credential_id: str
    version: int
    headers: Mapping[str, str]
    params: Mapping[str, str]
    expires_at: datetime | None
    token: Secret | None = None
    refreshable: bool = False

    def __repr__(self) -> str:
        return (
            f"Access(credential_id={self.credential_id!r}, version={self.version}, "
            f"headers={sorted(self.headers)}, params={sorted(self.params)}, "
            f"expires_at={self.expires_at!r})"
        )


def info_of(record: CredentialRecord) -> CredentialInfo:
    """The metadata view of a stored credential."""
    return CredentialInfo(
        credential_id=record.id,
        type=record.type,
        state=State(record.state),
        version=record.version,
        expires_at=record.expires_at,
        updated_at=record.updated_at,
        created_at=record.created_at,
        next_due_at=record.next_due_at,
        key_version=record.key_version,
        attempts=record.attempts,
        last_error=error_code(record.last_error),
        lease_until=record.lease_until,
        metadata=dict(record.public),
    )


def transition_of(record: HistoryRecord) -> Transition:
    """The public view of a history row."""
    before = State(record.from_state) if record.from_state else None
    return Transition(
        before,
        State(record.to_state),
        record.trigger,
        record.principal,
        record.reason,
        record.at,
        record.version,
    )
