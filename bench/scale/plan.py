"""How big a scale run is, and the token lifetime that gives the wanted refresh rate.

With credman's default refresh policy a token of lifetime ``L`` is refreshed
``min(5 min, L/4) * (1 + 0.2 * jitter)`` before it expires, so on average every
``L - min(300 s, L/4) * 1.1`` seconds. N credentials refreshed that often give
``N / interval`` refreshes a second: the plan picks ``L`` so that this is the wanted rate
(10,000 a minute by default), whatever N is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MARGIN_CAP", "SPREAD", "Plan"]

MARGIN_CAP = 300.0
"""RefreshPolicy.margin (seconds)."""
FRACTION = 0.25
"""RefreshPolicy.lifetime_fraction."""
SPREAD = 0.2
"""RefreshPolicy.spread."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """One run: rows, the window per process count, and the side measurements."""

    rows: int
    window: float = 60.0
    processes: tuple[int, ...] = (1, 2, 4)
    due_per_minute: int = 10_000
    farm: int = 2
    interval: float = 1.0
    overdue_fraction: float = 0.06
    """Restart: this share of the rows is made overdue (60,000 of 1,000,000)..."""
    overdue_count: int | None = None
    """...unless a count is given."""
    restart_limit: float = 300.0
    """Restart: give up waiting for the backlog to clear after this many seconds."""
    tick_due: int = 1000
    """The cost curve: a tick over this many due rows (the sweep's batch limit)."""
    audit_window: float = 15.0
    readers: tuple[int, ...] = (1, 2, 4)
    static_credentials: int = 200
    """API keys the audit-throughput readers read (no expiry, so no refresh gets in)."""
    sample_every: float = 0.2
    """Seconds between sampled reads during a window (checked at the provider)."""
    skip: frozenset[str] = field(default_factory=frozenset)

    @property
    def period(self) -> float:
        """Seconds in which every credential falls due once."""
        return 60.0 * self.rows / self.due_per_minute

    @property
    def lifetime(self) -> float:
        """The provider's access-token lifetime (seconds) that gives the wanted rate."""
        short = self.period / (1 - FRACTION * (1 + SPREAD / 2))
        if short * FRACTION <= MARGIN_CAP:
            return short
        return self.period + MARGIN_CAP * (1 + SPREAD / 2)

    @property
    def margin(self) -> float:
        """How long before expiry a token of :attr:`lifetime` is refreshed (no jitter)."""
        return min(MARGIN_CAP, self.lifetime * FRACTION)

    @property
    def overdue(self) -> int:
        if self.overdue_count is not None:
            return self.overdue_count
        return max(1, round(self.rows * self.overdue_fraction))
