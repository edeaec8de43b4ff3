"""Row-level access to credentials and their history, inside a caller's transaction.

Writes are compare-and-set on ``version`` (the second line of defence after the
transaction's lock): a write whose expected version is stale raises ``ConcurrentUpdate``
and the caller's transaction rolls back. Rows are read ``FOR UPDATE`` when they will be
written (PostgreSQL row lock; SQLite already holds the write lock from BEGIN IMMEDIATE).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from credman.errors import ConcurrentUpdate, NotFound
from credman.storage.tables import ConnectSessionRow, CredentialRow, HistoryRow

__all__ = [
    "CONNECT_SESSIONS",
    "CREDENTIALS",
    "HISTORY",
    "append_history",
    "delete_expired_connect_sessions",
    "history_rows",
    "insert_connect_session",
    "insert_credential",
    "iter_credentials",
    "load_connect_session",
    "load_credential",
    "record_probe",
    "spend_connect_session",
    "update_credential",
]

CREDENTIALS = CredentialRow.__table__  # type: ignore[attr-defined]
HISTORY = HistoryRow.__table__  # type: ignore[attr-defined]
CONNECT_SESSIONS = ConnectSessionRow.__table__  # type: ignore[attr-defined]


# Statements are built once: constructing a Core statement per call cost more than the
# SQLite work itself in the profile of ``get`` (see the README's benchmark notes).
_BY_ID = select(CREDENTIALS).where(CREDENTIALS.c.id == bindparam("b_id"))
_LOAD = {
    (False, False): _BY_ID,
    (True, False): _BY_ID.with_for_update(),
    (True, True): _BY_ID.with_for_update(skip_locked=True),
}
_INSERT = insert(CREDENTIALS)
_UPDATE_IF_VERSION = update(CREDENTIALS).where(
    CREDENTIALS.c.id == bindparam("b_id"), CREDENTIALS.c.version == bindparam("b_version")
)
_UPDATE = update(CREDENTIALS).where(CREDENTIALS.c.id == bindparam("b_id"))
_APPEND_HISTORY = insert(HISTORY)


def load_credential(
    connection: Connection,
    credential_id: str,
    *,
    for_update: bool = False,
    skip_locked: bool = False,
    missing_ok: bool = False,
) -> Any:
    """The credential row, or NotFound (or None with ``missing_ok``).

    ``skip_locked`` (PostgreSQL) gives None instead of waiting when another transaction
    holds the row, so a sweep moves on to the next due credential.
    """
    query = _LOAD[(for_update or skip_locked, skip_locked)]
    row = connection.execute(query, {"b_id": credential_id}).one_or_none()
    if row is None and not missing_ok:
        raise NotFound(f"no credential {credential_id!r}", credential_id=credential_id)
    return row


def insert_credential(connection: Connection, values: dict[str, Any]) -> None:
    """Insert a new credential row."""
    connection.execute(_INSERT, values)


def update_credential(
    connection: Connection, credential_id: str, expected_version: int, values: dict[str, Any]
) -> int:
    """Write ``values`` and bump the version by one, only if it is still ``expected_version``."""
    version = expected_version + 1
    parameters = {
        **values,
        "version": version,
        "b_id": credential_id,
        "b_version": expected_version,
    }
    result = connection.execute(_UPDATE_IF_VERSION, parameters)
    if result.rowcount != 1:
        raise ConcurrentUpdate(
            f"credential {credential_id!r} changed concurrently; retry",
            credential_id=credential_id,
        )
    return version


def record_probe(connection: Connection, credential_id: str, values: dict[str, Any]) -> None:
    """Write a probe outcome; not a change of material or state, so the version stays."""
    connection.execute(_UPDATE, {**values, "b_id": credential_id})


def append_history(
    connection: Connection,
    *,
    credential_id: str,
    from_state: str | None,
    to_state: str,
    trigger: str,
    principal: str,
    reason: str | None,
    at: datetime,
    version: int,
) -> None:
    """Record one fired transition."""
    connection.execute(
        _APPEND_HISTORY,
        {
            "credential_id": credential_id,
            "from_state": from_state,
            "to_state": to_state,
            "trigger": trigger,
            "principal": principal,
            "reason": reason,
            "at": at,
            "version": version,
        },
    )


def history_rows(connection: Connection, credential_id: str) -> list[Any]:
    """A credential's transitions, oldest first."""
    query = select(HISTORY).where(HISTORY.c.credential_id == credential_id).order_by(HISTORY.c.id)
    return list(connection.execute(query))


def iter_credentials(
    connection: Connection, *, state: str | None = None, batch: int = 1000
) -> Iterator[Any]:
    """Every credential row in id order, fetched in batches (keyset pagination)."""
    last = ""
    while True:
        query = select(CREDENTIALS).where(CREDENTIALS.c.id > last).order_by(CREDENTIALS.c.id)
        if state is not None:
            query = query.where(CREDENTIALS.c.state == state)
        rows = connection.execute(query.limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id


def insert_connect_session(connection: Connection, values: dict[str, Any]) -> None:
    """Record a new connect session."""
    connection.execute(insert(CONNECT_SESSIONS), values)


def load_connect_session(connection: Connection, state_hash: str) -> Any:
    """The session with that state hash, locked for update, or None."""
    statement = (
        select(CONNECT_SESSIONS)
        .where(CONNECT_SESSIONS.c.state_hash == state_hash)
        .with_for_update()
    )
    return connection.execute(statement).one_or_none()


def spend_connect_session(connection: Connection, state_hash: str, now: datetime) -> None:
    """Mark the session used and destroy its sealed verifier and data key."""
    connection.execute(
        update(CONNECT_SESSIONS)
        .where(CONNECT_SESSIONS.c.state_hash == state_hash)
        .values(used_at=now, sealed_verifier=None, wrapped_dek=None, key_version=None)
    )


def delete_expired_connect_sessions(connection: Connection, before: datetime) -> int:
    """Forget sessions that expired before ``before``; how many."""
    result = connection.execute(
        CONNECT_SESSIONS.delete().where(CONNECT_SESSIONS.c.expires_at < before)
    )
    return int(result.rowcount or 0)
