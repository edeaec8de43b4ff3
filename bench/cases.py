"""The registry: every operation measured, how to build it, how many calls, its target.

A case is built once per database (a :class:`~bench.phase.Phase`) into a no-argument
operation. ``stages`` says where it runs: ``base`` (each ``synchronous`` mode, the plan's
small table), ``large`` (FULL, the large table; a case also in ``base`` is re-timed on the
small table beside it), ``postgres`` (a PostgreSQL schema seeded like the small table; the
case is re-timed on the small FULL table beside it), ``rotation`` (FULL tables of the
plan's two rotation sizes, timed beside each other), ``burst`` (a FULL table of its own
with its own token server) or ``once`` (no database needed). A case that
``needs`` a ``CredentialManager`` attribute is skipped as not yet available until the
attribute exists, so refresh and tick light up when they land. Consecutive cases of one
``group`` are timed interleaved, so the ratios between them are fair on a busy machine.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime, timedelta

from bench.floor import floor_read
from bench.measure import Operation
from bench.model import Target
from bench.peers import (
    authlib_refresh,
    credman_request_token,
    envelope_round_trip,
    fernet_round_trip,
    field_round_trip,
)
from bench.phase import Phase
from bench.workload import ADMIN, TOKEN_LIFETIME, WORKER, sample_credential
from credman import CredentialManager

__all__ = [
    "BASE",
    "BESIDE",
    "BURST",
    "BURST_COUNT",
    "CASES",
    "DUE_COUNT",
    "HIDDEN",
    "LARGE",
    "ONCE",
    "POSTGRES",
    "ROTATION",
    "ROTATION_BATCH",
    "SMALL",
    "Builder",
    "Case",
]

BASE, LARGE, ONCE = "base", "large", "once"
POSTGRES, ROTATION, BURST = "postgres", "rotation", "burst"
SMALL = "small"
"""Rows of a case on the small table re-timed beside its ``large`` run (not a case stage)."""
BESIDE = "beside"
"""Rows of a case on the small FULL table re-timed beside its ``postgres`` run (not a stage)."""
HIDDEN = frozenset({SMALL, BESIDE})
"""Re-timed rows: they feed the scale and ratio tables, not the operations table."""
DUE_COUNT = 100
ROTATION_BATCH = 500
BURST_COUNT = 1000
"""Credentials whose tokens expire in the same minute, for the burst case."""
BURST_LEAD = timedelta(minutes=10)
"""How far ahead that minute starts: the tokens are in their refresh margin, not expired."""
_MAX_BURST_TICKS = 20

CACHED_RETRIEVAL = Target("p99", 500.0)
UNCACHED_RETRIEVAL = Target("p99", 1000.0)
STORAGE = Target("p99", 3000.0)
REFRESH = Target("p99", 10_000.0)

Builder = Callable[[Phase], Operation]


@dataclass(frozen=True, slots=True)
class Case:
    """One operation to measure."""

    key: str
    label: str
    build: Builder | None
    budget: str
    stages: AbstractSet[str]
    target: Target | None = None
    needs: str | None = None
    absent: str | None = None
    group: str | None = None

    def skip_reason(self) -> str | None:
        """Why this case cannot be measured now, or None."""
        if self.absent is not None:
            return self.absent
        if self.needs is not None and not hasattr(CredentialManager, self.needs):
            return f"not yet available (CredentialManager has no {self.needs!r})"
        return None


def _get(phase: Phase) -> Operation:
    manager, pick = phase.manager, phase.picks()
    return lambda: manager.get(pick(), principal=WORKER)


def _info(phase: Phase) -> Operation:
    manager, pick = phase.manager, phase.picks()
    return lambda: manager.info(pick(), principal=WORKER)


def _store_update(phase: Phase) -> Operation:
    manager, pick, credential = phase.manager, phase.picks(), sample_credential()
    return lambda: manager.store(pick(), credential, principal=ADMIN)


def _store_new(phase: Phase) -> Operation:
    manager, credential = phase.manager, sample_credential()
    return lambda: manager.store(phase.new_id(), credential, principal=ADMIN)


def _refresh(phase: Phase) -> Operation:
    manager, credential_id = phase.manager, phase.oauth_credential()
    return lambda: manager.refresh(credential_id, principal=ADMIN, force=True)


class _Ticks:
    """``tick`` at the given moments; ``note`` tells what the last sweep did."""

    def __init__(self, manager: CredentialManager, moments: Iterator[datetime | None]) -> None:
        self._manager = manager
        self._moments = moments
        self.note = ""

    def __call__(self) -> None:
        report = self._manager.tick(now=next(self._moments))
        counts = asdict(report) if is_dataclass(report) else {}
        done = ", ".join(f"{k} {v}" for k, v in counts.items() if type(v) is int and v)
        self.note = f"last sweep: {done or 'nothing due'}"


class _Rotations:
    """One whole key rotation per call: a new primary version, every data key re-wrapped."""

    def __init__(self, manager: CredentialManager) -> None:
        self._manager = manager
        self.note = ""

    def __call__(self) -> None:
        report = self._manager.rotate_keys(principal=ADMIN, batch_size=ROTATION_BATCH)
        rewrap = report.rewrap
        self.note = (
            f"batch {ROTATION_BATCH}; last call: key v{report.previous_primary} -> "
            f"v{report.primary}, {rewrap.rewrapped:,} data keys re-wrapped in "
            f"{rewrap.batches} batches, {rewrap.remaining} left"
        )


def _rotate_keys(phase: Phase) -> Operation:
    return _Rotations(phase.manager)


class _Burst:
    """Sweep at the start of the minute until nothing is due; what it did, in ``figures``.

    Usable once: the first call refreshes every credential of the burst.
    """

    def __init__(self, phase: Phase, moment: datetime, count: int) -> None:
        self._manager, self._server = phase.manager, phase.server
        self._moment, self._count = moment, count
        self._requests_before = phase.server.token_requests
        self._revoked_before = len(phase.server.revoked_grants)
        self.note = ""
        self.figures: dict[str, float] = {}

    def __call__(self) -> None:
        ticks = refreshed = failed = 0
        start = time.perf_counter()
        while ticks < _MAX_BURST_TICKS:  # a bound, in case something stayed due
            report = self._manager.tick(now=self._moment, limit=self._count)
            ticks += 1
            refreshed += report.refreshed
            failed += report.failed
            if report.due == 0:
                break
        elapsed = time.perf_counter() - start
        requests = self._server.token_requests - self._requests_before
        revoked = len(self._server.revoked_grants) - self._revoked_before
        self.figures = {
            "credentials": self._count,
            "ticks": ticks,
            "refreshed": refreshed,
            "failed": failed,
            "wall_s": round(elapsed, 4),
            "refreshes_per_s": round(refreshed / elapsed, 1),
            "token_requests": requests,
            "grants_revoked": revoked,
        }
        self.note = (
            f"{ticks} ticks (the last found nothing due) in {elapsed:.2f} s; "
            f"refreshed {refreshed:,} (failed {failed}), "
            f"{refreshed / elapsed:,.0f} refreshes/s; provider token requests {requests:,}; "
            f"grants revoked {revoked}"
        )


def _tick_burst(phase: Phase) -> Operation:
    """``BURST_COUNT`` tokens expiring evenly over one minute, ``BURST_LEAD`` from now."""
    minute = datetime.now(UTC).replace(microsecond=0) + BURST_LEAD
    step = timedelta(minutes=1) / BURST_COUNT
    for number in range(BURST_COUNT):
        phase.oauth_credential(expires_at=minute + step * (number + 0.5))
    return _Burst(phase, minute, BURST_COUNT)


def _tick_idle(phase: Phase) -> Operation:
    return _Ticks(phase.manager, itertools.repeat(None))


def _tick_due(phase: Phase) -> Operation:
    """Each sweep runs two token lifetimes after the last, so the same credentials are due.

    OAuth credentials stored before (the refresh case's) are revoked first, so that exactly
    ``DUE_COUNT`` fall due.
    """
    for credential_id in phase.oauth_ids:
        phase.manager.revoke(credential_id, principal=ADMIN, reason="benchmark: retired")
    phase.oauth_ids.clear()
    for _ in range(DUE_COUNT):
        phase.oauth_credential()
    start, step = datetime.now(UTC), timedelta(seconds=2 * TOKEN_LIFETIME)
    return _Ticks(phase.manager, (start + step * n for n in itertools.count(1)))


CASES: tuple[Case, ...] = (
    Case(
        "get_cached",
        "get (cached)",
        None,
        "read",
        {ONCE},
        CACHED_RETRIEVAL,
        absent="not measured: credman has no cache; every get reads, decrypts, audits, commits",
    ),
    Case(
        "get",
        "get (uncached)",
        _get,
        "read",
        {BASE, LARGE, POSTGRES},
        UNCACHED_RETRIEVAL,
        group="read",
    ),
    Case(
        "floor",
        "floor: Core select + AES-GCM open + audit insert",
        floor_read,
        "read",
        {BASE},
        group="read",
    ),
    Case("info", "info", _info, "read", {BASE}),
    Case(
        "store_update",
        "store (update existing)",
        _store_update,
        "write",
        {BASE, LARGE, POSTGRES},
        STORAGE,
    ),
    Case("store_new", "store (new id)", _store_new, "write", {BASE, LARGE, POSTGRES}, STORAGE),
    Case(
        "refresh",
        "refresh (forced, loopback token server)",
        _refresh,
        "http",
        {BASE, POSTGRES},
        REFRESH,
        needs="refresh",
    ),
    Case("tick_idle", "tick (nothing due)", _tick_idle, "read", {BASE, LARGE}, needs="tick"),
    Case("tick_due", f"tick ({DUE_COUNT} due)", _tick_due, "sweep", {LARGE}, needs="tick"),
    Case(
        "tick_burst",
        f"tick until none due, one process: {BURST_COUNT:,} tokens expiring in the same minute",
        _tick_burst,
        "burst",
        {BURST},
        needs="tick",
    ),
    Case(
        "rotate_keys",
        "rotate_keys (whole rotation)",
        _rotate_keys,
        "rotation",
        {ROTATION},
        needs="rotate_keys",
        group="rotation",
    ),
    Case(
        "fernet",
        "Fernet encrypt+decrypt (Airflow)",
        fernet_round_trip,
        "crypto",
        {ONCE},
        group="crypto",
    ),
    Case(
        "envelope",
        "envelope seal+open (new data key, wrap, seal, unwrap, open)",
        envelope_round_trip,
        "crypto",
        {ONCE},
        group="crypto",
    ),
    Case(
        "field",
        "AES-GCM seal+open, one field",
        field_round_trip,
        "crypto",
        {ONCE},
        group="crypto",
    ),
    Case(
        "authlib_refresh",
        "Authlib OAuth2Client.refresh_token",
        authlib_refresh,
        "http",
        {ONCE},
        group="oauth",
    ),
    Case(
        "request_token",
        "credman.oauth.request_token",
        credman_request_token,
        "http",
        {ONCE},
        group="oauth",
    ),
)
"""Every case, in the order they run and are shown."""
