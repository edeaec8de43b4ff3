"""A worker that stores or refreshes credentials in a loop until it is killed (for
tests/credman/test_crashes.py, which SIGKILLs it at random moments).

Usage: ``python _worker_crash.py store DATABASE_URL KEY_FILE`` (create and update ``s0``..``s3``
round-robin, reading each back) or ``python _worker_crash.py refresh DATABASE_URL KEY_FILE
ID,ID,...`` (force-refresh the given OAuth credentials round-robin, whatever the provider
answers). Prints ``ready`` once the manager is open.
"""

from __future__ import annotations

import itertools
import sys

from credman import ApiKey, BasicAuth, BearerToken, Credential, CredentialManager, RefreshFailed


def _material(step: int) -> Credential:
    kinds = (
        lambda: BasicAuth(username="u", password=f"pw-{step}"),
        lambda: ApiKey(key=f"key-{step}"),
        lambda: BearerToken(token=f"bt-{step}", expires_in=3600),
    )
    return kinds[step % len(kinds)]()


def store_forever(manager: CredentialManager) -> None:
    """Create, update and read four credentials round-robin."""
    for step in itertools.count():
        credential_id = f"s{step % 4}"
        manager.store(credential_id, _material(step), principal="admin")
        manager.get(credential_id, principal="admin")


def refresh_forever(manager: CredentialManager, credential_ids: list[str]) -> None:
    """Force-refresh the credentials round-robin; failures are the provider's business."""
    for step in itertools.count():
        try:
            manager.refresh(
                credential_ids[step % len(credential_ids)], principal="admin", force=True
            )
        except RefreshFailed:
            continue


def main(argv: list[str]) -> None:
    mode, database_url, key_file = argv[:3]
    manager = CredentialManager(database_url, key_file)
    print("ready", flush=True)
    if mode == "store":
        store_forever(manager)
    else:
        refresh_forever(manager, argv[3].split(","))


if __name__ == "__main__":
    main(sys.argv[1:])
