"""Connect sessions: opened, spent once, re-wrapped on key rotation, forgotten after expiry
(all their SQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from credman.storage.records import ConnectSessionRecord
from credman.storage.tables import ConnectSessionRow

__all__ = [
    "CONNECT_SESSIONS",
    "any_expired",
    "count_with_key_version",
    "delete_expired",
    "insert_session",
    "load_session",
    "peek_session",
    "replace_wrapped_keys",
    "rewrap_candidates",
    "spend",
]

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
_EXPIRED_BATCH = (
    select(CONNECT_SESSIONS.c.state_hash)
    .where(CONNECT_SESSIONS.c.expires_at < bindparam("b_before"))
    .order_by(CONNECT_SESSIONS.c.expires_at)
    .limit(bindparam("b_limit"))
    .scalar_subquery()
)
_DELETE_EXPIRED = delete(CONNECT_SESSIONS).where(CONNECT_SESSIONS.c.state_hash.in_(_EXPIRED_BATCH))
_ANY_EXPIRED = (
    select(CONNECT_SESSIONS.c.state_hash)
    .where(CONNECT_SESSIONS.c.expires_at < bindparam("b_before"))
    .limit(1)
)
_COMPARE_AND_SET = (
    update(CONNECT_SESSIONS)
    .where(
        CONNECT_SESSIONS.c.state_hash == bindparam("b_hash"),
        CONNECT_SESSIONS.c.key_version == bindparam("old_version"),
        CONNECT_SESSIONS.c.wrapped_dek == bindparam("old_blob"),
    )
    .values(key_version=bindparam("new_version"), wrapped_dek=bindparam("new_blob"))
)
"""Replace a session's wrapped data key only if it still holds the one that was re-wrapped
(a session spent meanwhile has none left)."""


def insert_session(connection: Connection, values: dict[str, Any]) -> None:
    """Record a new connect session."""
    connection.execute(_INSERT, values)


def load_session(connection: Connection, state_hash: str) -> ConnectSessionRecord | None:
    """The session with that state hash, locked for update, or None."""
    row = connection.execute(_LOAD, {"b_hash": state_hash}).one_or_none()
    return None if row is None else ConnectSessionRecord.from_row(row)


def peek_session(connection: Connection, state_hash: str) -> ConnectSessionRecord | None:
    """The session with that state hash, without a lock (to learn what it is bound to)."""
    query = select(CONNECT_SESSIONS).where(CONNECT_SESSIONS.c.state_hash == state_hash)
    row = connection.execute(query).one_or_none()
    return None if row is None else ConnectSessionRecord.from_row(row)


def spend(connection: Connection, state_hash: str, now: datetime) -> None:
    """Mark the session used and destroy its sealed verifier and data key."""
    connection.execute(_SPEND, {"b_hash": state_hash, "b_now": now})


def any_expired(connection: Connection, before: datetime) -> bool:
    """Whether any session expired before ``before`` (one index probe: a sweep with nothing
    to forget takes no write lock)."""
    return connection.execute(_ANY_EXPIRED, {"b_before": before}).first() is not None


def delete_expired(connection: Connection, before: datetime, limit: int = 1000) -> int:
    """Forget up to ``limit`` sessions that expired before ``before`` (oldest first); how many."""
    values = {"b_before": before, "b_limit": limit}
    return int(connection.execute(_DELETE_EXPIRED, values).rowcount or 0)


def rewrap_candidates(
    connection: Connection, primary: int, after: str, limit: int
) -> Sequence[Any]:
    """Up to ``limit`` unspent sessions (state_hash, key_version, wrapped_dek) whose data key
    is on a version below ``primary``, after state hash ``after``, locked for update."""
    return connection.execute(
        select(
            CONNECT_SESSIONS.c.state_hash,
            CONNECT_SESSIONS.c.key_version,
            CONNECT_SESSIONS.c.wrapped_dek,
        )
        .where(
            CONNECT_SESSIONS.c.key_version < primary,
            CONNECT_SESSIONS.c.wrapped_dek.is_not(None),
            CONNECT_SESSIONS.c.state_hash > after,
        )
        .order_by(CONNECT_SESSIONS.c.state_hash)
        .limit(limit)
        .with_for_update()
    ).all()


def replace_wrapped_keys(connection: Connection, changes: list[dict[str, Any]]) -> int:
    """Compare-and-set each session's wrapped data key; how many moved."""
    if not changes:
        return 0
    return int(connection.execute(_COMPARE_AND_SET, changes).rowcount)


def count_with_key_version(connection: Connection, version: int) -> int:
    """How many unspent sessions hold a data key wrapped under exactly ``version``."""
    query = select(func.count()).where(
        CONNECT_SESSIONS.c.key_version == version, CONNECT_SESSIONS.c.wrapped_dek.is_not(None)
    )
    return int(connection.execute(query).scalar_one())
