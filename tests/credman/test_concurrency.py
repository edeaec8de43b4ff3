"""Concurrent writers: no lost update, and never a history row without its state change."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from credman import BasicAuth, CredentialManager, InvalidTransition, State

WRITES = 25
PROCESS_WRITES = 100


def _assert_consistent(manager: CredentialManager, credential_id: str, successes: int) -> None:
    """Version counts every committed change; history is contiguous and ends at the state."""
    info = manager.info(credential_id, principal="admin")
    steps = manager.history(credential_id, principal="admin")
    assert 1 + successes == info.version
    assert [1, *range(1, info.version + 1)] == [step.version for step in steps]
    assert all(a.to_state == b.from_state for a, b in itertools.pairwise(steps))
    assert (info.state, info.version) == (steps[-1].to_state, steps[-1].version)


def test_threads_storing_and_revoking_lose_nothing(
    make_manager: Callable[..., CredentialManager],
) -> None:
    """Four threads update and one revokes the same credential; every commit is counted."""
    manager = make_manager()
    manager.store("shared", BasicAuth(username="u", password="p0"), principal="admin")
    successes: list[int] = []
    refused: list[int] = []
    barrier = threading.Barrier(5)

    def writer(number: int) -> None:
        barrier.wait()
        for index in range(WRITES):
            try:
                manager.store(
                    "shared",
                    BasicAuth(username="u", password=f"p{number}-{index}"),
                    principal="admin",
                )
                successes.append(1)
            except InvalidTransition:
                refused.append(1)

    def revoker() -> None:
        barrier.wait()
        manager.revoke("shared", principal="admin", reason="race")
        successes.append(1)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=revoker))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 4 * WRITES + 1 == len(successes) + len(refused)
    assert State.REVOKED == manager.info("shared", principal="admin").state
    _assert_consistent(manager, "shared", len(successes))


WORKER = textwrap.dedent(
    """
    import sys
    from credman import BasicAuth, CredentialManager, InvalidTransition
    url, key, name, count, revoke_at = sys.argv[1:6]
    manager = CredentialManager(url, key)
    done = 0
    for index in range(int(count)):
        if index == int(revoke_at):
            manager.revoke("shared", principal="admin", reason="race")
            done += 1
            continue
        try:
            manager.store("shared", BasicAuth(username="u", password=f"{name}-{index}"),
                          principal="admin")
            done += 1
        except InvalidTransition:
            pass
    print(done)
    """
)


@pytest.mark.slow
def test_processes_storing_and_revoking_lose_nothing(
    make_manager: Callable[..., CredentialManager], database_url: str, key_file: Path
) -> None:
    """Two processes update and one of them revokes midway; every commit is counted."""
    manager = make_manager()
    manager.store("shared", BasicAuth(username="u", password="p0"), principal="admin")
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                database_url,
                str(key_file),
                name,
                str(PROCESS_WRITES),
                revoke_at,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, revoke_at in (("a", "-1"), ("b", str(PROCESS_WRITES // 2)))
    ]
    done = [int(worker.communicate(timeout=120)[0]) for worker in workers]
    assert [0, 0] == [worker.returncode for worker in workers]
    assert State.REVOKED == manager.info("shared", principal="admin").state
    _assert_consistent(manager, "shared", sum(done))
