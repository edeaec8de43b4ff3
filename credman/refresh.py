"""Refresh decisions and bookkeeping: when a stored credential needs new tokens, how a token
response becomes new material, and what a failure does to the schedule.

Pure functions of a credential row (or credential), a token response and ``now``; the
manager runs them inside its claim -> call -> commit transactions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from credman.errors import CredentialUnusable, RefreshFailed
from credman.lifecycle import CREDENTIAL_TYPES, Credential, JWTBearer, OAuth2, RefreshPolicy, State
from credman.oauth import TokenGrant, next_retry_delay

__all__ = [
    "Claim",
    "ProbeResult",
    "TickReport",
    "count_outcome",
    "ensure_not_revoked",
    "ensure_usable",
    "failure_values",
    "is_refreshable",
    "lease_stale",
    "merged",
    "needs_refresh",
    "past_expiry",
    "reauthorisation_required",
    "refresh_error",
    "refresh_failing",
    "still_valid",
    "target_state",
    "wants_refresh",
]

_SPREAD = random.SystemRandom()


def is_refreshable(row: Any) -> bool:
    """Whether the stored credential can get new material without an operator."""
    kind = CREDENTIAL_TYPES.get(row.type)
    return kind is not None and kind.can_refresh(row.public, row.sealed.keys())


def still_valid(row: Any, now: datetime) -> bool:
    """Whether the stored access material works at ``now`` (not expired, and present)."""
    token_based = row.type in ("oauth2", "jwt_bearer")
    has_token = not token_based or "access_token" in row.sealed
    return has_token and (row.expires_at is None or now < row.expires_at)


def needs_refresh(row: Any, now: datetime) -> bool:
    """Whether a refresh is due now (its due time, or its retry time after a failure)."""
    return (
        row.state in (State.ACTIVE, State.UPDATED, State.EXPIRED)
        and row.next_due_at is not None
        and now >= row.next_due_at
        and is_refreshable(row)
    )


def jitter() -> float:
    """A random fraction in [0, 1) to spread due times."""
    return _SPREAD.random()


def merged(
    credential: Credential, grant: TokenGrant, sent_at: datetime, skew: timedelta = timedelta(0)
) -> Credential:
    """The credential with the new tokens; a response without a refresh token keeps the old.

    ``expires_at`` counts from ``sent_at`` (when the token request left), less a second for
    providers' whole-second truncation and ``skew`` (see ``expires_at_from``). The kept
    response fields are merged into an OAuth2 credential's ``metadata``.
    """
    changes: dict[str, Any] = {
        "access_token": grant.access_token,
        "expires_in": None,
        "expires_at": grant.expires_at(sent_at, skew=skew),
    }
    if grant.refresh_token is not None and "refresh_token" in type(credential).model_fields:
        changes["refresh_token"] = grant.refresh_token
    if isinstance(credential, OAuth2) and grant.metadata:
        changes["metadata"] = dict(credential.metadata or {}) | dict(grant.metadata)
    if "token_type" in type(credential).model_fields:
        bearer = grant.token_type.lower() == "bearer"
        changes["token_type"] = "Bearer" if bearer else grant.token_type[:64] or "Bearer"
    return credential.with_material(**changes)


def failure_values(
    row: Any, failure: RefreshFailed, now: datetime, policy: RefreshPolicy
) -> tuple[str, dict[str, Any]]:
    """The trigger and column values after a failed refresh.

    Permanent: EXPIRED with no next due time (an operator must re-authorise). Transient:
    retried after exponential backoff with full jitter (at least ``Retry-After``); the
    credential stays usable (ACTIVE) while its token is valid, else EXPIRED until a retry
    succeeds.
    """
    attempts = int(row.attempts) + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_error": (failure.error_code or "error")[:64],
        "lease_owner": None,
        "lease_until": None,
    }
    if failure.permanent:
        return "refresh_failed", values | {"next_due_at": None}
    delay = next_retry_delay(
        attempts - 1, failure.retry_after, base=policy.backoff_base, cap=policy.backoff_cap
    )
    values["next_due_at"] = now + timedelta(seconds=max(delay, policy.cooldown))
    trigger = "refresh_deferred" if still_valid(row, now) else "refresh_failed"
    return trigger, values


@dataclass(frozen=True, slots=True)
class Claim:
    """A credential claimed for refresh: the lease owner and the material to refresh."""

    credential_id: str
    owner: str
    credential: OAuth2 | JWTBearer
    attempts: int


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of testing a credential against its probe."""

    credential_id: str
    ok: bool
    status: int | None
    elapsed_ms: float
    at: datetime
    error: str | None = None


@dataclass(slots=True)
class TickReport:
    """What one sweep did."""

    now: datetime
    due: int = 0
    refreshed: int = 0
    expired: int = 0
    failed: int = 0
    skipped: int = 0
    probed: int = 0
    probe_failures: int = 0
    errors: list[str] = field(default_factory=list)


def ensure_not_revoked(row: Any) -> None:
    if row.state == State.REVOKED:
        raise CredentialUnusable(row.id, State.REVOKED, "it was revoked")


def reauthorisation_required(row: Any) -> RefreshFailed:
    return refresh_error(
        row, "needs re-authorisation (the provider refused the grant: {}); store new material"
    )


def wants_refresh(row: Any, now: datetime) -> bool:
    """Whether a read must refresh first: due, or mid-refresh with no valid token to give."""
    if row.state == State.REFRESHING:
        return not still_valid(row, now)
    return needs_refresh(row, now)


def ensure_usable(row: Any, now: datetime) -> None:
    ensure_not_revoked(row)
    if row.state == State.CREATED:
        raise CredentialUnusable(row.id, State.CREATED, "it is not connected yet (credman connect)")
    if row.state != State.EXPIRED:
        return
    if not is_refreshable(row):
        raise CredentialUnusable(row.id, State.EXPIRED, "re-authorise it by storing new material")
    if row.next_due_at is None:
        raise reauthorisation_required(row)
    raise refresh_failing(row)


def refresh_failing(row: Any) -> RefreshFailed:
    retry = row.next_due_at.isoformat(timespec="seconds") if row.next_due_at else "unknown"
    return refresh_error(
        row, "has expired and its refresh is failing ({}); next attempt at " + retry
    )


def refresh_error(row: Any, template: str) -> RefreshFailed:
    """RefreshFailed for a stored failure; permanent when no retry is scheduled."""
    message = f"credential {row.id!r} " + template.format(row.last_error)
    permanent = row.next_due_at is None
    return RefreshFailed(
        message, permanent=permanent, credential_id=row.id, error_code=row.last_error
    )


def lease_stale(row: Any, now: datetime) -> bool:
    return row.lease_until is None or now >= row.lease_until


def target_state(trigger: str) -> State:
    """Where a failure trigger leads from REFRESHING."""
    return State.ACTIVE if trigger == "refresh_deferred" else State.EXPIRED


def count_outcome(report: TickReport, outcome: str) -> None:
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


def past_expiry(row: Any, now: datetime) -> bool:
    return row.expires_at is not None and now >= row.expires_at
