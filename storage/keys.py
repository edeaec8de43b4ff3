"""The SQL of key management: the key-change lock, counts per key version, rewrap batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from credman.storage.repository import CREDENTIALS
from credman.storage.tables import KeyCheckRow

__all__ = [
    "add_key_check",
    "count_below",
    "count_by_key_version",
    "count_with_key_version",
    "delete_key_check",
    "highest_key_version",
    "key_checks",
    "lock_key_changes",
    "lock_key_changes_shared_and_highest",
    "replace_wrapped_keys",
    "rewrap_candidates",
]

_KEY_CHECKS = KeyCheckRow.__table__  # type: ignore[attr-defined]
_KEYRING_LOCK = 0x637265646B657973  # "credkeys": the PostgreSQL advisory lock of key changes
_COMPARE_AND_SET = (
    update(CREDENTIALS)
    .where(
        CREDENTIALS.c.id == bindparam("row_id"),
        CREDENTIALS.c.key_version == bindparam("old_version"),
        CREDENTIALS.c.wrapped_dek == bindparam("old_blob"),
    )
    .values(
        key_version=bindparam("new_version"),
        wrapped_dek=bindparam("new_blob"),
        record_mac=bindparam("new_mac"),
    )
)
"""Replace a wrapped data key only if the row still holds the one that was re-wrapped."""


def lock_key_changes(connection: Connection) -> None:
    """Hold the key-change lock exclusively until the transaction ends (key changes; writers
    of rows hold it shared: :func:`lock_key_changes_shared_and_highest`)."""
    if connection.dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE already holds the database's single write lock
    connection.execute(select(func.pg_advisory_xact_lock(_KEYRING_LOCK)))


_SHARED_AND_HIGHEST = select(
    func.pg_advisory_xact_lock_shared(_KEYRING_LOCK),
    select(func.max(CREDENTIALS.c.key_version)).scalar_subquery(),
)


def lock_key_changes_shared_and_highest(connection: Connection) -> int | None:
    """The shared key-change lock and :func:`highest_key_version` in one round trip.

    On PostgreSQL both are one statement, so the maximum is read in the snapshot the
    statement took before its lock was granted: a version a key change committed while this
    writer waited is not seen. That is safe: rows move to a new version only after it is in
    the key file (which the caller reloads after this returns), and a version is removed
    only under the exclusive lock, which waits for this transaction.
    """
    if connection.dialect.name != "postgresql":
        return highest_key_version(connection)  # SQLite: BEGIN IMMEDIATE is the lock
    highest = connection.execute(_SHARED_AND_HIGHEST).one()[1]
    return None if highest is None else int(highest)


def count_by_key_version(connection: Connection) -> dict[int | None, int]:
    """How many credentials each key version protects (None: shredded rows)."""
    query = select(CREDENTIALS.c.key_version, func.count()).group_by(CREDENTIALS.c.key_version)
    return {version: int(count) for version, count in connection.execute(query)}


def count_with_key_version(connection: Connection, version: int) -> int:
    """How many credentials use exactly ``version``."""
    return _count(connection, CREDENTIALS.c.key_version == version)


def highest_key_version(connection: Connection) -> int | None:
    """The highest key version any credential row is sealed under (an index lookup)."""
    highest = connection.execute(select(func.max(CREDENTIALS.c.key_version))).scalar_one()
    return None if highest is None else int(highest)


def count_below(connection: Connection, primary: int) -> int:
    """How many credentials are still on a version older than ``primary``."""
    return _count(connection, CREDENTIALS.c.key_version < primary)


def rewrap_candidates(
    connection: Connection, primary: int, after: str, limit: int
) -> Sequence[Any]:
    """Up to ``limit`` whole rows below ``primary`` after id ``after`` (their MACs are checked
    and recomputed)."""
    return connection.execute(
        select(CREDENTIALS)
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


def key_checks(connection: Connection) -> dict[int, str]:
    """The key fingerprints the database recorded, by version (0: the audit seed)."""
    query = select(_KEY_CHECKS.c.version, _KEY_CHECKS.c.fingerprint)
    return {int(version): str(check) for version, check in connection.execute(query)}


def add_key_check(connection: Connection, version: int, fingerprint: str, at: datetime) -> None:
    """Record the fingerprint of one key version."""
    connection.execute(
        insert(_KEY_CHECKS).values(version=version, fingerprint=fingerprint, created_at=at)
    )


def delete_key_check(connection: Connection, version: int) -> None:
    """Forget a retired key version's fingerprint."""
    connection.execute(delete(_KEY_CHECKS).where(_KEY_CHECKS.c.version == version))


def _count(connection: Connection, condition: Any) -> int:
    return int(connection.execute(select(func.count()).where(condition)).scalar_one())
