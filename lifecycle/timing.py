"""When a credential next needs attention: pure functions of its material and ``now``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from credman.lifecycle.types import Credential

__all__ = ["RefreshPolicy", "next_due_at", "refresh_due_at"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshPolicy:
    """How far ahead of expiry to refresh, and how to treat tokens that never say."""

    margin: timedelta = timedelta(minutes=5)
    """Refresh this long before expiry (covers clock skew and slow providers)..."""
    lifetime_fraction: float = 0.5
    """...but never earlier than this fraction of the token's lifetime before expiry."""
    default_lifetime: timedelta = timedelta(hours=1)
    """A token without ``expires_in`` is checked again after this long, never forgotten."""


def refresh_due_at(expires_at: datetime, issued_at: datetime, policy: RefreshPolicy) -> datetime:
    """When to refresh a token valid from ``issued_at`` to ``expires_at``.

    The margin shrinks for short-lived tokens: a 2-second token refreshed 5 minutes
    ahead would be refreshed on every use.
    """
    lifetime = max(expires_at - issued_at, timedelta(0))
    return expires_at - min(policy.margin, lifetime * policy.lifetime_fraction)


def next_due_at(
    credential: Credential, material_at: datetime, policy: RefreshPolicy
) -> datetime | None:
    """The next time the scheduler must look at a credential, or None for never.

    ``material_at`` is when the current material was obtained. Refreshable credentials
    are due at their refresh time (or after the default lifetime when the token has no
    expiry); others are due at expiry, to be moved to EXPIRED on time.
    """
    expires_at = credential.expires_at_or_none
    if credential.refreshable:
        if expires_at is None:
            return material_at + policy.default_lifetime
        return refresh_due_at(expires_at, material_at, policy)
    return expires_at
