"""The SQL of key management: the key-change lock, counts per key version, rewrap batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from credman.storage.repository import CREDENTIALS

__all__ = [
    "count_below",
    "count_by_key_version",
    "count_with_key_version",
    "lock_key_changes",
    "replace_wrapped_keys",
    "rewrap_candidates",
]

_KEYRING_LOCK = 0x637265646B657973  # "credkeys": the PostgreSQL advisory lock of key changes
_COMPARE_AND_SET = (
    update(CREDENTIALS)
    .where(
        CREDENTIALS.c.id == bindparam("row_id"),
        CREDENTIALS.c.key_version == bindparam("old_version"),
        CREDENTIALS.c.wrapped_dek == bindparam("old_blob"),
    )
    .values(key_version=bindparam("new_version"), wrapped_dek=bindparam("new_blob"))
)
"""Replace a wrapped data key only if the row still holds the one that was re-wrapped."""


def lock_key_changes(connection: Connection, *, exclusive: bool) -> None:
    """Hold the key-change lock until the transaction ends (shared for writers of rows)."""
    if connection.dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE already holds the database's single write lock
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    connection.execute(select(getattr(func, function)(_KEYRING_LOCK)))


def count_by_key_version(connection: Connection) -> dict[int | None, int]:
    """How many credentials each key version protects (None: shredded rows)."""
    query = select(CREDENTIALS.c.key_version, func.count()).group_by(CREDENTIALS.c.key_version)
    return {version: int(count) for version, count in connection.execute(query)}


def count_with_key_version(connection: Connection, version: int) -> int:
    """How many credentials use exactly ``version``."""
    return _count(connection, CREDENTIALS.c.key_version == version)


def count_below(connection: Connection, primary: int) -> int:
    """How many credentials are still on a version older than ``primary``."""
    return _count(connection, CREDENTIALS.c.key_version < primary)


def rewrap_candidates(
    connection: Connection, primary: int, after: str, limit: int
) -> Sequence[Any]:
    """Up to ``limit`` rows (id, key_version, wrapped_dek) below ``primary`` after id ``after``."""
    return connection.execute(
        select(CREDENTIALS.c.id, CREDENTIALS.c.key_version, CREDENTIALS.c.wrapped_dek)
        .where(CREDENTIALS.c.key_version < primary, CREDENTIALS.c.id > after)
        .order_by(CREDENTIALS.c.id)
        .limit(limit)
        .with_for_update()
    ).all()


def replace_wrapped_keys(connection: Connection, changes: list[dict[str, Any]]) -> int:
    """Compare-and-set each row's wrapped data key; how many rows moved."""
    if not changes:
        return 0
    return int(connection.execute(_COMPARE_AND_SET, changes).rowcount)


def _count(connection: Connection, condition: Any) -> int:
    return int(connection.execute(select(func.count()).where(condition)).scalar_one())
