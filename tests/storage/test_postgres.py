"""PostgreSQL for several processes: SKIP LOCKED sweeps and reads across 8 processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert

from credman import CredentialManager, OAuth2, State
from credman._sealing import seal
from credman.storage.repository import CREDENTIALS, HISTORY
from credman.testing.provider import TokenServer

CLIENT, SECRET = "client-1", "client-secret-1"
COUNT, PROCESSES = 2000, 8

WORKER = textwrap.dedent(
    """
    import json, random, sys
    from credman import CredentialManager
    url, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    manager = CredentialManager(url, key)
    totals = {"refreshed": 0, "reads": 0, "sweeps": 0}
    while True:
        report = manager.tick(limit=200, workers=4)
        totals["sweeps"] += 1
        totals["refreshed"] += report.refreshed
        for _ in range(5):
            manager.get(f"c{random.randrange(count)}", principal="admin")
            totals["reads"] += 1
        if report.due == 0:
            break
    print(json.dumps(totals))
    """
)


def _bulk_store(manager: CredentialManager, server: TokenServer) -> list[str]:
    """Insert COUNT due OAuth credentials in one transaction (sealed per id and MACed, as
    store does)."""
    grants, rows, history = [], [], []
    keyring = manager.keys.keyring
    now = datetime.now(UTC)
    for number in range(COUNT):
        token = server.grant(CLIENT)
        grants.append(server.grant_of(token) or "")
        credential = OAuth2(
            token_url=server.url, client_id=CLIENT, client_secret=SECRET, refresh_token=token
        )
        rows.append(
            seal(keyring, f"c{number}", credential)
            | {
                "id": f"c{number}",
                "state": State.ACTIVE,
                "version": 1,
                "expires_at": None,
                "material_at": now,
                "next_due_at": now,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        history.append(
            {
                "credential_id": f"c{number}",
                "from_state": State.CREATED,
                "to_state": State.ACTIVE,
                "trigger": "activate",
                "principal": "admin",
                "at": now,
                "version": 1,
            }
        )
    unset = {"lease_owner": None, "lease_until": None, "last_error": None}
    for row in rows:  # the row MAC store would compute (only the key holder can)
        row["record_mac"] = manager.keys.seals.credential_mac(unset | row)
    engine = create_engine(manager.engine.url)
    with engine.begin() as connection:
        connection.execute(insert(CREDENTIALS), rows)
        connection.execute(insert(HISTORY), history)
    engine.dispose()
    return grants


@pytest.mark.slow
@pytest.mark.postgres
def test_eight_processes_refresh_each_due_credential_once(
    postgres_url: str, key_file: Path
) -> None:
    """8 processes ticking and reading over 2,000 due credentials: each refreshed exactly once."""
    with TokenServer(clients={CLIENT: SECRET}) as server:
        manager = CredentialManager(postgres_url, str(key_file))
        grants = _bulk_store(manager, server)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, postgres_url, str(key_file), str(COUNT)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(PROCESSES)
        ]
        totals = [json.loads(worker.communicate(timeout=600)[0]) for worker in workers]
        per_grant = [server.refresh_count(grant) for grant in grants]
        revoked = server.revoked_grants
    assert [0] * PROCESSES == [worker.returncode for worker in workers]
    assert [] == revoked
    assert [1] * COUNT == per_grant
    assert COUNT >= sum(t["refreshed"] for t in totals)
    for number in range(0, COUNT, 97):
        steps = manager.history(f"c{number}", principal="admin")
        triggers = [step.trigger for step in steps]
        assert ["activate", "start_refresh", "refresh_succeeded"] == triggers
        assert [1, 2, 3] == [step.version for step in steps]
        assert steps[-1].version == manager.info(f"c{number}", principal="admin").version
    assert manager.verify_audit().ok
    manager.close()
