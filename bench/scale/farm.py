"""The provider farm: several processes of the project's loopback token server.

Each farm process runs one :class:`TokenServer` (rotating refresh tokens, revoking the
whole grant when a spent one is presented again) and owns one partition of the seeded
credentials: their ``token_url`` points at it, so no state is shared between farm
processes. The harness talks to a farm process over its stdin/stdout, one JSON line each
way:

    {"load": PATH}    create a grant for every "credential_id<TAB>refresh_token" line
    {"stats": true}   token requests, successful refreshes, revoked grants so far
    {"dump": PATH}    write per-credential refresh counts and revoked credentials to PATH
    {"quit": true}    stop serving and exit

Run as ``python -m bench.scale.farm CLIENT_ID SECRET_FILE LIFETIME``; the first line it
prints is ``{"url": ..., "resource_url": ...}``. Nothing else is printed: tokens are
secrets, even fake ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

try:  # the loopback provider moves to credman.testing.provider in the new layout
    from credman.testing.provider import TokenServer  # type: ignore[import-not-found]
except ImportError:
    from credman.testing.provider import TokenServer

__all__ = ["main"]


class Partition:
    """One farm process's token server and the credentials whose grants it holds."""

    def __init__(self, client_id: str, secret: str, lifetime: float) -> None:
        self.client_id = client_id
        self.server = TokenServer(clients={client_id: secret}, access_token_lifetime=lifetime)
        self.grants: dict[str, str] = {}  # grant id -> credential id

    def load(self, path: str) -> dict[str, Any]:
        """Create the grants listed in ``path``; how many."""
        loaded = 0
        with Path(path).open() as lines:
            for line in lines:
                credential_id, refresh_token = line.rstrip("\n").split("\t")
                token = self.server.grant(self.client_id, refresh_token)
                grant_id = self.server.grant_of(token)
                assert grant_id is not None
                self.grants[grant_id] = credential_id
                loaded += 1
        return {"loaded": loaded}

    def stats(self) -> dict[str, Any]:
        """Counters of the whole run so far."""
        return {
            "token_requests": self.server.token_requests,
            "refreshes": self.server.refreshes,
            "revoked": len(self.server.revoked_grants),
        }

    def dump(self, path: str) -> dict[str, Any]:
        """Write per-credential refresh counts (non-zero only) and revoked credentials."""
        counts = {}
        for grant_id, credential_id in self.grants.items():
            count = self.server.refresh_count(grant_id)
            if count:
                counts[credential_id] = count
        revoked = [self.grants.get(g, g) for g in self.server.revoked_grants]
        Path(path).write_text(json.dumps({"counts": counts, "revoked": revoked}))
        return {"dumped": len(counts)}


def _answer(partition: Partition, command: dict[str, Any]) -> dict[str, Any]:
    if "load" in command:
        return partition.load(command["load"])
    if "stats" in command:
        return partition.stats()
    if "dump" in command:
        return partition.dump(command["dump"])
    return {"error": "unknown command"}


def main(argv: list[str]) -> int:
    """Serve one partition until told to quit (or stdin closes)."""
    client_id, secret_file, lifetime = argv[0], argv[1], float(argv[2])
    partition = Partition(client_id, Path(secret_file).read_text().strip(), lifetime)
    with partition.server as server:
        print(json.dumps({"url": server.url, "resource_url": server.resource_url}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if "quit" in command:
                break
            print(json.dumps(_answer(partition, command)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
