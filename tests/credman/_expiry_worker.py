"""A process that reads a credential's access material for a while, for the expiry tests.

Usage: python tests/_expiry_worker.py DATABASE_URL KEY_FILE SECONDS MIN_TTL OUT
Writes one line per handed-out token: the token and the epoch time it was received.
"""

from __future__ import annotations

import sys
import time

from credman import CredentialManager


def main() -> None:
    database_url, key_file, seconds, min_ttl, out = sys.argv[1:6]
    lines: list[str] = []
    with CredentialManager(database_url, key_file) as mgr:
        stop = time.monotonic() + float(seconds)
        while time.monotonic() < stop:
            access = mgr.access("short", principal="admin", min_ttl=float(min_ttl))
            assert access.token is not None
            lines.append(f"{access.token.reveal()} {time.time()}")
    with open(out, "w") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
