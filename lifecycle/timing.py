"""When a credential next needs attention: pure functions of its material and ``now``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from credman.lifecycle.types import Credential

__all__ = ["RefreshPolicy", "next_due_at", "refresh_due_at"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshPolicy:
    """How far ahead of expiry to refresh, how to spread the load, how to treat silent tokens."""

    margin: timedelta = timedelta(minutes=5)
    """Refresh this long before expiry (covers clock skew and slow providers)..."""
    lifetime_fraction: float = 0.25
    """...but never earlier than this fraction of the token's lifetime before expiry."""
    spread: float = 0.2
    """Refresh up to this fraction of the margin earlier still, at random, so that many
    tokens expiring together do not reach the provider in the same second."""
    default_lifetime: timedelta = timedelta(hours=1)
    """A token without ``expires_in`` is checked again after this long, never forgotten."""
    probe_interval: timedelta = timedelta(hours=6)
    """Credentials with a probe are re-tested this often, so a silently revoked key shows."""
    lease: timedelta = timedelta(seconds=45)
    """How long a refresher holds a credential before others may take it back."""
    timeout: float = 10.0
    """Seconds for one whole token exchange, connect to last byte; credman never lets it run
    past half the ``lease``."""
    forced_refresh_interval: timedelta = timedelta(seconds=30)
    """A 401 forces no refresh of material a refresh produced less than this ago: a resource
    that rejects every token does not turn each request into a token request."""
    backoff_base: float = 2.0
    """First retry delay (seconds) after a transient failure; doubles each attempt..."""
    backoff_cap: float = 900.0
    """...up to this many seconds (full jitter below it)..."""
    cooldown: float = 30.0
    """...and never sooner than this: at most 3600/cooldown token calls an hour for a broken
    credential, whatever the jitter draws."""
    clock_skew: timedelta = timedelta(0)
    """How far the provider's clock may run ahead of ours: taken off every ``expires_at``
    (besides the second always allowed for providers that count from whole epoch seconds).
    Raise it for providers whose clocks drift; tokens living less than 1 s + skew get an
    ``expires_at`` equal to when they were requested."""


def refresh_due_at(
    expires_at: datetime, issued_at: datetime, policy: RefreshPolicy, jitter: float = 0.0
) -> datetime:
    """When to refresh a token valid from ``issued_at`` to ``expires_at``.

    The margin shrinks for short-lived tokens (a 2-second token refreshed 5 minutes ahead
    would be refreshed on every use); ``jitter`` in [0, 1) moves it earlier by up to
    ``policy.spread`` of the margin.
    """
    lifetime = max(expires_at - issued_at, timedelta(0))
    margin = min(policy.margin, lifetime * policy.lifetime_fraction)
    return expires_at - margin * (1 + policy.spread * jitter)


def next_due_at(
    credential: Credential, material_at: datetime, policy: RefreshPolicy, jitter: float = 0.0
) -> datetime | None:
    """The next time the scheduler must look at a credential, or None for never.

    ``material_at`` is when the current material was obtained. Refreshable credentials
    are due at their refresh time (after the default lifetime when the token has no
    expiry; at once when there is no access token yet); others are due at expiry, to be
    moved to EXPIRED on time.
    """
    expires_at = credential.expires_at_or_none
    if credential.refreshable:
        if getattr(credential, "access_token", None) is None:
            return material_at
        if expires_at is None:
            return material_at + policy.default_lifetime
        return refresh_due_at(expires_at, material_at, policy, jitter)
    return expires_at
