"""A process that reads a credential's access material for a while, for the expiry tests.

Usage: python tests/_expiry_worker.py DATABASE_URL KEY_FILE SECONDS MIN_TTL OUT, with
EXPIRY_INTROSPECTION_URL, EXPIRY_CLIENT_ID and EXPIRY_CLIENT_SECRET in the environment.
Writes one line per handed-out token: the token, the epoch time it was received, and what
the provider's introspection said straight after (1 or 0 for active, and ``exp``).
"""

from __future__ import annotations

import os
import sys
import time

import httpx

from credman import CredentialManager


def main() -> None:
    database_url, key_file, seconds, min_ttl, out = sys.argv[1:6]
    url = os.environ["EXPIRY_INTROSPECTION_URL"]
    client = (os.environ["EXPIRY_CLIENT_ID"], os.environ["EXPIRY_CLIENT_SECRET"])
    lines: list[str] = []
    with CredentialManager(database_url, key_file) as mgr, httpx.Client() as http:
        stop = time.monotonic() + float(seconds)
        while time.monotonic() < stop:
            access = mgr.access("short", principal="admin", min_ttl=float(min_ttl))
            assert access.token is not None
            at = time.time()
            answer = http.post(url, data={"token": access.token.reveal()}, auth=client)
            answer.raise_for_status()
            body = answer.json()
            active = "1" if body.get("active") is True else "0"
            lines.append(f"{access.token.reveal()} {at} {active} {body.get('exp', 0)}")
    with open(out, "w") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
