"""``python -m bench.grants``: ``get`` for a principal holding 20,001 grants (issue 16, item 16).

The grants are 20,000 exact ids on other credentials plus one glob that covers the one read,
so every access check must find the covering grant among many. Prints p50 and p99 in ms.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from credman import ApiKey, CredentialManager, Permission
from credman.crypto import KeyFileProvider
from credman.storage import engine as storage
from credman.storage.tables import GrantRow

GRANTS = 20_000
CALLS = 50


def _setup(folder: Path) -> CredentialManager:
    key = folder / "credman.key"
    KeyFileProvider(key).create()
    manager = CredentialManager(
        f"sqlite:///{folder / 'credman.db'}", str(key), synchronous="NORMAL"
    )
    manager.store("svc/target", ApiKey(key="sk_bench"), principal="admin")
    manager.grant("bob", "svc/*", {Permission.READ}, principal="admin")
    rows = [
        {
            "principal": "bob",
            "pattern": f"other/id-{n}",
            "permissions": "use",
            "created_at": manager._now(),
            "created_by": "admin",
        }
        for n in range(GRANTS)
    ]
    with storage.write(manager._engine) as connection:  # bulk setup only, not the code measured
        connection.execute(insert(GrantRow.__table__), rows)  # type: ignore[attr-defined]
    return manager


def main() -> int:
    """Measure and print."""
    with tempfile.TemporaryDirectory() as folder:
        manager = _setup(Path(folder))
        timings = []
        for _ in range(CALLS):
            started = time.perf_counter()
            manager.get("svc/target", principal="bob")
            timings.append((time.perf_counter() - started) * 1000)
        manager.close()
    timings.sort()
    p50, p99 = statistics.median(timings), timings[int(len(timings) * 0.99) - 1]
    print(f"get with {GRANTS + 1} grants: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
