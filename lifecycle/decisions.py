"""Every refresh and expiry decision, once: pure predicates of a stored credential and ``now``.

The guards of the state machine (``machine.py``), the refresher and the sweep all ask these
functions, so a rule such as "past expiry" or "lease is stale" is written in one place.
``StoredCredential`` is the shape of a stored record as these functions see it (storage's
``CredentialRecord`` has it); nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Protocol

from credman.errors import CredentialUnusable, RefreshFailed
from credman.lifecycle.states import State
from credman.lifecycle.types import CREDENTIAL_TYPES

__all__ = [
    "StoredCredential",
    "ensure_not_revoked",
    "ensure_usable",
    "error_code",
    "is_refreshable",
    "lease_stale",
    "needs_refresh",
    "past_expiry",
    "reauthorization_required",
    "refresh_error",
    "refresh_failing",
    "still_valid",
    "token_valid",
    "wants_refresh",
]

_TOKEN_TYPES = frozenset({"oauth2", "jwt_bearer"})


class StoredCredential(Protocol):
    """The columns of a stored credential that the decisions read."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def public(self) -> Mapping[str, Any]: ...
    @property
    def sealed(self) -> Mapping[str, str]: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def next_due_at(self) -> datetime | None: ...
    @property
    def lease_until(self) -> datetime | None: ...
    @property
    def last_error(self) -> str | None: ...


def past_expiry(expires_at: datetime | None, now: datetime) -> bool:
    """Whether material with this expiry has stopped working at ``now``."""
    return expires_at is not None and now >= expires_at


def token_valid(expires_at: datetime | None, now: datetime) -> bool:
    """Whether material with this expiry still works at ``now`` (no expiry: it does)."""
    return not past_expiry(expires_at, now)


def lease_stale(lease_until: datetime | None, now: datetime) -> bool:
    """Whether a refresh lease has run out (or was never taken)."""
    return lease_until is None or now >= lease_until


def is_refreshable(record: StoredCredential) -> bool:
    """Whether the stored credential can get new material without an operator."""
    kind = CREDENTIAL_TYPES.get(record.type)
    sealed: Collection[str] = record.sealed.keys()
    return kind is not None and kind.can_refresh(record.public, sealed)


def still_valid(record: StoredCredential, now: datetime) -> bool:
    """Whether the stored access material works at ``now`` (present and not expired)."""
    has_token = record.type not in _TOKEN_TYPES or "access_token" in record.sealed
    return has_token and token_valid(record.expires_at, now)


def needs_refresh(record: StoredCredential, now: datetime) -> bool:
    """Whether a refresh is due now (its due time, or its retry time after a failure)."""
    return (
        record.state in (State.ACTIVE, State.UPDATED, State.EXPIRED)
        and record.next_due_at is not None
        and now >= record.next_due_at
        and is_refreshable(record)
    )


def wants_refresh(record: StoredCredential, now: datetime) -> bool:
    """Whether a read must refresh first: due, or mid-refresh with no valid token to give."""
    if record.state == State.REFRESHING:
        return not still_valid(record, now)
    return needs_refresh(record, now)


def ensure_not_revoked(record: StoredCredential) -> None:
    """Raise CredentialUnusable for a revoked credential."""
    if record.state == State.REVOKED:
        raise CredentialUnusable(record.id, State.REVOKED, "it was revoked")


def ensure_usable(record: StoredCredential, now: datetime) -> None:
    """Raise unless the credential's state can yield material (EXPIRED and REVOKED cannot)."""
    ensure_not_revoked(record)
    if record.state == State.CREATED:
        raise CredentialUnusable(
            record.id, State.CREATED, "it is not connected yet (credman connect)"
        )
    if record.state != State.EXPIRED:
        return
    if not is_refreshable(record):
        raise CredentialUnusable(
            record.id, State.EXPIRED, "re-authorize it by storing new material"
        )
    if record.next_due_at is None:
        raise reauthorization_required(record)
    raise refresh_failing(record)


def reauthorization_required(record: StoredCredential) -> RefreshFailed:
    """The error for a credential whose grant the provider refused for good."""
    return refresh_error(
        record, "needs re-authorization (the provider refused the grant: {}); store new material"
    )


def refresh_failing(record: StoredCredential) -> RefreshFailed:
    """The error for an expired credential whose refresh is backing off."""
    retry = record.next_due_at.isoformat(timespec="seconds") if record.next_due_at else "unknown"
    return refresh_error(
        record, "has expired and its refresh is failing ({}); next attempt at " + retry
    )


_ERROR_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def error_code(text: str | None) -> str | None:
    """A stored ``last_error`` if it has the shape of an error code (letters, digits and
    ``_.:-``, at most 64), else ``"unrecognised"``: it is shown as data, never as advice."""
    if text is None:
        return None
    return text if _ERROR_CODE.fullmatch(text) else "unrecognised"


def refresh_error(record: StoredCredential, template: str) -> RefreshFailed:
    """RefreshFailed for a stored failure; permanent when no retry is scheduled."""
    code = error_code(record.last_error)
    message = f"credential {record.id!r} " + template.format(f"error code {code!r}")
    return RefreshFailed(
        message,
        permanent=record.next_due_at is None,
        credential_id=record.id,
        error_code=code,
    )
