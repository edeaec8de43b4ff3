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

from sqlalchemy import Connection, insert, select, update

from credman.errors import ConcurrentUpdate, NotFound
from credman.storage.tables import CredentialRow, HistoryRow

__all__ = [
    "CREDENTIALS",
    "HISTORY",
    "append_history",
    "history_rows",
    "insert_credential",
    "iter_credentials",
    "load_credential",
    "record_probe",
    "update_credential",
]

CREDENTIALS = CredentialRow.__table__  # type: ignore[attr-defined]
HISTORY = HistoryRow.__table__  # type: ignore[attr-defined]


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
    query = select(CREDENTIALS).where(CREDENTIALS.c.id == credential_id)
    if for_update or skip_locked:
        query = query.with_for_update(skip_locked=skip_locked)
    row = connection.execute(query).one_or_none()
    if row is None and not missing_ok:
        raise NotFound(f"no credential {credential_id!r}", credential_id=credential_id)
    return row


def insert_credential(connection: Connection, values: dict[str, Any]) -> None:
    """Insert a new credential row."""
    connection.execute(insert(CREDENTIALS).values(**values))


def update_credential(
    connection: Connection, credential_id: str, expected_version: int, values: dict[str, Any]
) -> int:
    """Write ``values`` and bump the version by one, only if it is still ``expected_version``."""
    version = expected_version + 1
    result = connection.execute(
        update(CREDENTIALS)
        .where(CREDENTIALS.c.id == credential_id, CREDENTIALS.c.version == expected_version)
        .values(**values, version=version)
    )
    if result.rowcount != 1:
        raise ConcurrentUpdate(
            f"credential {credential_id!r} changed concurrently; retry",
            credential_id=credential_id,
        )
    return version


def record_probe(connection: Connection, credential_id: str, values: dict[str, Any]) -> None:
    """Write a probe outcome; not a change of material or state, so the version stays."""
    connection.execute(
        update(CREDENTIALS).where(CREDENTIALS.c.id == credential_id).values(**values)
    )


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
        insert(HISTORY).values(
            credential_id=credential_id,
            from_state=from_state,
            to_state=to_state,
            trigger=trigger,
            principal=principal,
            reason=reason,
            at=at,
            version=version,
        )
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
