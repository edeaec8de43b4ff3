"""Connect sessions: opened, spent once, forgotten after expiry (all their SQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from credman.storage.records import ConnectSessionRecord
from credman.storage.tables import ConnectSessionRow

__all__ = ["CONNECT_SESSIONS", "delete_expired", "insert_session", "load_session", "spend"]

CONNECT_SESSIONS = ConnectSessionRow.__table__  # type: ignore[attr-defined]

_INSERT = insert(CONNECT_SESSIONS)
_LOAD = (
    select(CONNECT_SESSIONS)
    .where(CONNECT_SESSIONS.c.state_hash == bindparam("b_hash"))
    .with_for_update()
)
_SPEND = (
    update(CONNECT_SESSIONS)
    .where(CONNECT_SESSIONS.c.state_hash == bindparam("b_hash"))
    .values(used_at=bindparam("b_now"), sealed_verifier=None, wrapped_dek=None, key_version=None)
)
_DELETE_EXPIRED = delete(CONNECT_SESSIONS).where(
    CONNECT_SESSIONS.c.expires_at < bindparam("b_before")
)


def insert_session(connection: Connection, values: dict[str, Any]) -> None:
    """Record a new connect session."""
    connection.execute(_INSERT, values)


def load_session(connection: Connection, state_hash: str) -> ConnectSessionRecord | None:
    """The session with that state hash, locked for update, or None."""
    row = connection.execute(_LOAD, {"b_hash": state_hash}).one_or_none()
    return None if row is None else ConnectSessionRecord.from_row(row)


def spend(connection: Connection, state_hash: str, now: datetime) -> None:
    """Mark the session used and destroy its sealed verifier and data key."""
    connection.execute(_SPEND, {"b_hash": state_hash, "b_now": now})


def delete_expired(connection: Connection, before: datetime) -> int:
    """Forget sessions that expired before ``before``; how many."""
    return int(connection.execute(_DELETE_EXPIRED, {"b_before": before}).rowcount or 0)
