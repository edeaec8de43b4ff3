"""SIGKILL in the middle of storing and of refreshing, again and again: after every kill a
fresh manager opens every credential (or gets a documented error), recovers every lease,
and finds history, audit and the audit chain consistent."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from credman import (
    CredentialManager,
    CredentialUnusable,
    OAuth2,
    RefreshFailed,
    State,
)
from credman.lifecycle import RefreshPolicy
from credman.testing.provider import TokenServer

WORKER = Path(__file__).with_name("_worker_crash.py")
CLIENT, SECRET = "client-1", "client-secret-1"
ROUNDS = 5
OAUTH_IDS = ("o0", "o1", "o2")
LEASE = RefreshPolicy().lease
UNAUDITED = {"create"}
"""Triggers with no audit event of their own: ``create`` shares the ``activate`` event."""


def _start(mode: str, database_url: str, key_file: Path, *extra: str) -> subprocess.Popen[str]:
    """A worker running ``mode``, once it has opened its manager."""
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), mode, database_url, str(key_file), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert "ready" == worker.stdout.readline().strip(), "the worker did not start"
    return worker


def _kill_after(worker: subprocess.Popen[str], delay: float) -> None:
    # Real time on purpose: the worker is a real process, and the point is to stop it
    # wherever it happens to be after ``delay`` seconds of work.
    time.sleep(delay)
    worker.kill()
    worker.wait(timeout=30)
    assert worker.stdout is not None
    worker.stdout.close()


def _recover_leases(manager: CredentialManager) -> None:
    """Sweep just past the latest lease: nothing may be left REFRESHING after it."""
    stuck = [i for i in manager.list(principal="admin") if i.state == State.REFRESHING]
    for info in stuck:
        assert info.lease_until is not None
        assert info.lease_until - info.updated_at <= LEASE
    if stuck:
        latest = max(i.lease_until for i in stuck if i.lease_until is not None)
        assert [] == manager.tick(latest + timedelta(seconds=1)).errors
    left = [i.credential_id for i in manager.list(principal="admin") if i.state == State.REFRESHING]
    assert [] == left


def _assert_opens(manager: CredentialManager, credential_id: str) -> None:
    """get works, or refuses with a documented lifecycle error (a refresh that failed, or a
    credential that cannot be used), never a DecryptionError or anything else."""
    with suppress(RefreshFailed, CredentialUnusable):
        manager.get(credential_id, principal="admin")


def _assert_history_and_audit_agree(manager: CredentialManager, credential_id: str) -> None:
    """One unbroken path ending at the row's state and version; each step audited."""
    info = manager.info(credential_id, principal="admin")
    steps = manager.history(credential_id, principal="admin")
    assert [("create", None, 1), ("activate", State.CREATED, 1)] == [
        (s.trigger, s.from_state, s.version) for s in steps[:2]
    ]
    for before, after in pairwise(steps[1:]):
        assert (before.to_state, before.version + 1) == (after.from_state, after.version)
    assert (info.state, info.version) == (steps[-1].to_state, steps[-1].version)
    events = manager.audit_events(principal="admin", limit=100_000, credential_id=credential_id)
    audited = {e.detail.get("version") for e in events if e.outcome != "denied"}
    unaudited = [(s.trigger, s.version) for s in steps if s.trigger not in UNAUDITED]
    assert [] == [step for step in unaudited if step[1] not in audited]


def _assert_consistent(manager: CredentialManager) -> list[str]:
    """Every check after a crash; the ids found."""
    _recover_leases(manager)
    ids = [info.credential_id for info in manager.list(principal="admin")]
    for credential_id in ids:
        _assert_opens(manager, credential_id)
        _assert_history_and_audit_agree(manager, credential_id)
    assert manager.verify_audit().ok
    return ids


@pytest.fixture
def delays() -> Iterator[list[float]]:
    """Random kill delays, shown in the report when a round fails."""
    rng = random.Random()
    chosen = [rng.uniform(0.0, 0.6) for _ in range(ROUNDS)]
    yield chosen


@pytest.mark.slow
def test_sigkill_during_store_leaves_everything_consistent(
    database_url: str, key_file: Path, delays: list[float]
) -> None:
    """A store/update loop killed at random moments, five times: every credential still
    opens, history and audit agree, and the chain verifies."""
    for delay in delays:
        _kill_after(_start("store", database_url, key_file), delay)
        with CredentialManager(database_url, str(key_file)) as manager:
            ids = _assert_consistent(manager)
    assert ids, "the workers were killed before storing anything"
    assert {"s0", "s1", "s2", "s3"} >= set(ids)


def _reauthorize_dead(manager: CredentialManager, server: TokenServer) -> None:
    """Store a fresh grant for every credential the provider no longer honours."""
    for credential_id in OAUTH_IDS:
        info = manager.info(credential_id, principal="admin")
        if info.state == State.EXPIRED and info.next_due_at is None:
            manager.store(credential_id, _oauth(server), principal="admin", reason="re-authorized")


def _oauth(server: TokenServer) -> OAuth2:
    return OAuth2(
        token_url=server.url,
        client_id=CLIENT,
        client_secret=SECRET,
        refresh_token=server.grant(CLIENT),
    )


@pytest.mark.slow
def test_sigkill_during_refresh_leaves_everything_consistent(
    database_url: str, key_file: Path, delays: list[float]
) -> None:
    """A force-refresh loop against a fast or stalling provider, killed at random moments,
    five times: leases are recovered, credentials open or need re-authorization, history
    and audit agree, and the chain verifies."""
    with (
        TokenServer(clients={CLIENT: SECRET}, slow_seconds=0.3) as server,
        CredentialManager(database_url, str(key_file)) as setup,
    ):
        for credential_id in OAUTH_IDS:
            setup.store(credential_id, _oauth(server), principal="admin")
        modes = ["ok", "slow"] * ROUNDS
        for delay, mode in zip(delays, modes, strict=False):
            server.mode = mode
            _kill_after(_start("refresh", database_url, key_file, ",".join(OAUTH_IDS)), delay)
            server.mode = "ok"
            with CredentialManager(database_url, str(key_file)) as manager:
                _assert_consistent(manager)
                _reauthorize_dead(manager, server)
        claims = [
            step
            for credential_id in OAUTH_IDS
            for step in setup.history(credential_id, principal="admin")
            if (step.trigger, step.principal) == ("start_refresh", "admin")
        ]
    assert claims, "the workers were killed before claiming any refresh"
