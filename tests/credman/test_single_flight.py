"""Single-flight refresh across threads and processes against a strict provider, and recovery
from a refresher killed mid-flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from credman import CredentialManager, OAuth2, Permission, State
from credman.testing.provider import TokenServer

LIFETIME = 3.0
"""The provider's token lifetime; credman uses 1 s less (whole-second truncation)."""
USABLE = LIFETIME - 1.0
RUN_SECONDS = 7.0

READER = textwrap.dedent(
    """
    import json, sys, time
    import httpx
    from credman import CredentialManager
    url, key, resource, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    manager = CredentialManager(url, key)
    counts = {"ok": 0, "rejected": 0, "start": time.time()}
    deadline = time.monotonic() + seconds
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            token = manager.access("gh", principal="worker").token.reveal()
            status = client.get(resource, headers={"Authorization": f"Bearer {token}"}).status_code
            counts["ok" if status == 200 else "rejected"] += 1
    counts["end"] = time.time()
    print(json.dumps(counts))
    """
)


def _read_loop(manager: CredentialManager, resource: str, counts: dict[str, float]) -> None:
    counts["start"] = time.time()
    deadline = time.monotonic() + RUN_SECONDS
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            token = manager.access("gh", principal="worker").token.reveal()  # type: ignore[union-attr]
            status = client.get(resource, headers={"Authorization": f"Bearer {token}"}).status_code
            key = "ok" if status == 200 else "rejected"
            counts[key] = counts.get(key, 0) + 1
    counts["end"] = time.time()


@pytest.mark.slow
def test_threads_and_processes_refresh_once_per_lifetime(
    make_manager: Callable[..., CredentialManager],
    database_url: str,
    key_file: Path,
    oauth_credential: Callable[..., OAuth2],
    token_server: Callable[..., TokenServer],
) -> None:
    """8 threads + 4 processes reading a 3-second token for several lifetimes: the grant is
    never revoked, every token works, and the provider sees about one refresh per lifetime."""
    with token_server(access_token_lifetime=LIFETIME) as server:
        manager = make_manager()
        manager.store("gh", oauth_credential(server), principal="admin")
        manager.grant("worker", "gh", {Permission.USE}, principal="admin")
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    READER,
                    database_url,
                    str(key_file),
                    server.resource_url,
                    str(RUN_SECONDS),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        thread_counts = [dict[str, float]() for _ in range(8)]
        threads = [
            threading.Thread(target=_read_loop, args=(manager, server.resource_url, c))
            for c in thread_counts
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outputs = [json.loads(p.communicate(timeout=120)[0]) for p in processes]
        refreshes, revoked = server.refreshes, server.revoked_grants
    counts = [*thread_counts, *outputs]
    assert [0] * 4 == [p.returncode for p in processes]
    assert [] == revoked
    assert 0 == sum(c.get("rejected", 0) for c in counts)
    assert all(c.get("ok", 0) > 0 for c in counts)
    # the readers overlap for RUN_SECONDS at least; on a loaded machine the processes start
    # late, so reads span longer, and each usable lifetime of that span may cost a refresh
    span = max(c["end"] for c in counts) - min(c["start"] for c in counts)
    assert RUN_SECONDS / USABLE <= refreshes <= 2 * span / USABLE + 2, (refreshes, span)


REFRESHER = textwrap.dedent(
    """
    import sys
    from credman import CredentialManager
    manager = CredentialManager(sys.argv[1], sys.argv[2])
    manager.refresh("gh", principal="admin", force=True)
    """
)


@pytest.mark.slow
def test_refresher_killed_mid_flight_is_recovered(
    make_manager: Callable[..., CredentialManager],
    database_url: str,
    key_file: Path,
    oauth_credential: Callable[..., OAuth2],
    token_server: Callable[..., TokenServer],
) -> None:
    """SIGKILL while REFRESHING: after the lease runs out the sweep takes it back and refreshes."""
    with token_server(slow_seconds=30) as server:
        manager = make_manager()
        manager.store("gh", oauth_credential(server), principal="admin")
        server.fail_next(1, "slow")
        child = subprocess.Popen([sys.executable, "-c", REFRESHER, database_url, str(key_file)])
        deadline = time.monotonic() + 30
        # kill only once the request is at the provider (stalled), not between claim and send
        while server.token_requests < 1:
            assert time.monotonic() < deadline, "the child never reached the provider"
            time.sleep(0.05)
        assert State.REFRESHING == manager.info("gh", principal="admin").state
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        stuck = manager.info("gh", principal="admin")
        assert stuck.lease_until is not None
        assert 0 == manager.tick(stuck.lease_until - timedelta(seconds=1)).refreshed
        report = manager.tick(stuck.lease_until + timedelta(seconds=1))
        info = manager.info("gh", principal="admin")
        triggers = [step.trigger for step in manager.history("gh", principal="admin")]
    assert 1 == report.refreshed
    assert State.UPDATED == info.state
    assert ["start_refresh", "lease_expired", "start_refresh", "refresh_succeeded"] == triggers[2:]
