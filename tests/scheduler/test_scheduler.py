"""Time-based transitions: the sweep, APScheduler wiring, `credman serve`, the testing helper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from credman import BearerToken, CredentialManager, OAuth2, State
from credman.scheduler import CredentialScheduler
from credman.testing import time_machine
from credman.testing.provider import TokenServer

START = datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_static_token_expires_exactly_at_expiry(manager: CredentialManager) -> None:
    """A non-refreshable token stays ACTIVE until its expiry and is EXPIRED at it."""
    with freeze_time(START) as frozen:
        manager.store("b", BearerToken(token="t", expires_in=60), principal="admin")
        frozen.tick(timedelta(seconds=59.999))
        assert 0 == manager.tick().expired
        frozen.tick(timedelta(milliseconds=1))
        assert 1 == manager.tick().expired
    assert State.EXPIRED == manager.info("b", principal="admin").state


def test_downtime_of_a_day_is_caught_up_in_one_tick(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """After a day down, one tick refreshes or expires every overdue credential exactly once."""
    with freeze_time(START) as frozen:
        for number in range(10):
            manager.store(
                f"o{number}",
                oauth_credential(server, access_token="a", expires_in=600),
                principal="admin",
            )
            manager.store(f"b{number}", BearerToken(token="t", expires_in=600), principal="admin")
        frozen.tick(timedelta(days=1))
        report = manager.tick()
        again = manager.tick()
    assert (20, 10, 10) == (report.due, report.refreshed, report.expired)
    assert (10, 0) == (server.refreshes, again.due)


def test_next_wakeup_is_the_earliest_due_time(manager: CredentialManager) -> None:
    """The scheduler's one-shot wake-up targets the earliest next_due_at."""
    with freeze_time(START):
        manager.store("late", BearerToken(token="t", expires_in=600), principal="admin")
        manager.store("soon", BearerToken(token="t", expires_in=60), principal="admin")
    assert START + timedelta(seconds=60) == manager.next_wakeup()


def test_apscheduler_fires_the_transition_when_the_clock_moves(
    manager: CredentialManager,
) -> None:
    """Real APScheduler, frozen clock moved past expiry, wakeup(): the credential expires."""
    ran = threading.Event()
    with freeze_time(START) as frozen:
        manager.store("b", BearerToken(token="t", expires_in=60), principal="admin")
        scheduler = CredentialScheduler(
            manager, interval=3600, on_report=lambda report: ran.set() if report.due else None
        )
        scheduler.start()
        try:
            frozen.tick(timedelta(seconds=61))
            scheduler.wakeup()
            assert ran.wait(timeout=30)
        finally:
            scheduler.shutdown()
    assert State.EXPIRED == manager.info("b", principal="admin").state
    assert scheduler.last_report is not None
    assert 1 == scheduler.last_report.expired


def test_time_machine_helper_runs_due_work(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """credman.testing.time_machine moves time and runs the sweep, for users' own tests."""
    with time_machine(manager, START) as clock:
        manager.store(
            "gh", oauth_credential(server, access_token="a", expires_in=3600), principal="admin"
        )
        assert 0 == clock.advance(minutes=50).refreshed
        assert 1 == clock.advance(minutes=6).refreshed
        assert START + timedelta(minutes=56) == clock.now()


@pytest.mark.slow
def test_serve_processes_never_refresh_twice(
    make_manager: Callable[..., CredentialManager],
    database_url: str,
    key_file: Path,
    oauth_credential: Callable[..., OAuth2],
    token_server: Callable[..., TokenServer],
) -> None:
    """Three `credman serve` processes over one database: each grant refreshed once per cycle."""
    with token_server(access_token_lifetime=4) as provider:
        manager = make_manager()
        grants = []
        for number in range(12):
            credential = oauth_credential(provider)
            grants.append(provider.grant_of(credential.refresh_token.reveal()))  # type: ignore[union-attr]
            manager.store(f"c{number}", credential, principal="admin")
        env = os.environ | {"CREDMAN_DATABASE_URL": database_url, "CREDMAN_KEY_FILE": str(key_file)}
        daemons = [
            subprocess.Popen(
                [sys.executable, "-m", "credman", "serve", "--interval", "0.5"],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        time.sleep(9)  # real daemons, real time: two to three token lifetimes
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        codes = [daemon.wait(timeout=30) for daemon in daemons]
        logs = [daemon.stderr.read() for daemon in daemons if daemon.stderr]
        per_grant = [provider.refresh_count(grant) for grant in grants if grant]
        revoked = provider.revoked_grants
    assert [0, 0, 0] == codes
    assert [] == revoked
    assert all(2 <= count <= 5 for count in per_grant), per_grant
    assert all("stopping" in log for log in logs)
    for number in range(12):
        steps = manager.history(f"c{number}", principal="admin")
        starts = [s for s in steps if s.trigger == "start_refresh"]
        successes = [s for s in steps if s.trigger == "refresh_succeeded"]
        assert len(starts) == len(successes)
