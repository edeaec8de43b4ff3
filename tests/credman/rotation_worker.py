"""A rotation in a subprocess that SIGKILLs itself at a chosen point (for tests/credman/test_keys.py).

Usage: ``python rotation_worker.py DATABASE_URL KEY_FILE rotate|rewrap BATCH_SIZE KILL`` where
KILL is ``none``, ``batch:N`` (die once N batches have committed), ``row:N`` (die while
re-wrapping the N-th data key, inside an open transaction) or ``commit:N`` (die with the N-th
batch written but not committed).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from credman import CredentialManager, keys
from credman.audit import AuditLog
from credman.crypto import envelope


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at_batch(count: int) -> Callable[[keys.RewrapProgress], None]:
    """A progress hook that dies at its count-th call after the first (sent before batch 1)."""
    calls: list[keys.RewrapProgress] = []

    def progress(event: keys.RewrapProgress) -> None:
        calls.append(event)
        if len(calls) == count + 1:
            _die()

    return progress


def _kill_at_row(count: int) -> None:
    """Make the count-th data key re-wrap die mid-transaction."""
    original = envelope.rewrap
    calls: list[str] = []

    def rewrap(*args: Any, **kwargs: Any) -> envelope.WrappedKey:
        calls.append(kwargs["credential_id"])
        if len(calls) == count:
            _die()
        return original(*args, **kwargs)

    envelope.rewrap = rewrap  # type: ignore[assignment]


def _kill_at_commit(count: int) -> None:
    """Make the count-th batch die after its writes, just before its commit."""
    original = AuditLog.append
    calls: list[str] = []

    def append(self: AuditLog, *args: Any, **kwargs: Any) -> int:
        if kwargs["action"] == "key_rewrap":
            calls.append(kwargs["action"])
            if len(calls) == count:
                _die()
        return original(self, *args, **kwargs)

    AuditLog.append = append  # type: ignore[method-assign]


def main(url: str, key_file: str, command: str, batch_size: str, kill: str) -> None:
    """Run the rotation or rewrap, armed to die where ``kill`` says."""
    kind, _, count = kill.partition(":")
    progress = _kill_at_batch(int(count)) if kind == "batch" else None
    if kind == "row":
        _kill_at_row(int(count))
    if kind == "commit":
        _kill_at_commit(int(count))
    manager = CredentialManager(url, key_file)
    run = manager.rotate_keys if command == "rotate" else manager.rewrap_keys
    run(principal="admin", batch_size=int(batch_size), progress=progress)
    manager.close()


if __name__ == "__main__":
    main(*sys.argv[1:6])
