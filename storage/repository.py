"""Row-level access to credentials and their history, inside a caller's transaction.

Writes are compare-and-set on ``version`` (the second line of defence after the
transaction's lock): a write whose expected version is stale raises ``ConcurrentUpdate``
and the caller's transaction rolls back. Rows are read ``FOR UPDATE`` when they will be
written (PostgreSQL row lock; SQLite already holds the write lock from BEGIN IMMEDIATE).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal, overload

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from credman.errors import ConcurrentUpdate, NotFound
from credman.storage.records import CredentialRecord, DueCredential, HistoryRecord
from credman.storage.tables import CredentialRow, HistoryRow

__all__ = [
    "CREDENTIALS",
    "HISTORY",
    "any_sealed_credential",
    "append_history",
    "delete_revoked_credential",
    "due_credentials",
    "earliest_due",
    "history_rows",
    "insert_credential",
    "iter_credentials",
    "load_credential",
    "load_credential_checked",
    "record_probe",
    "set_record_mac",
    "unsealed_credentials",
    "update_credential",
]

CREDENTIALS = CredentialRow.__table__  # type: ignore[attr-defined]
HISTORY = HistoryRow.__table__  # type: ignore[attr-defined]


# Statements are built once: constructing a Core statement per call cost more than the
# SQLite work itself in the profile of ``get`` (see the README's benchmark notes).
_BY_ID = select(CREDENTIALS).where(CREDENTIALS.c.id == bindparam("b_id"))
_LOAD = {
    (False, False): _BY_ID,
    (True, False): _BY_ID.with_for_update(),
    (True, True): _BY_ID.with_for_update(skip_locked=True),
}
_NEWEST_HISTORY_VERSION = (
    select(HISTORY.c.version)
    .where(HISTORY.c.credential_id == CREDENTIALS.c.id)
    .order_by(HISTORY.c.id.desc())
    .limit(1)
    .correlate(CREDENTIALS)
    .scalar_subquery()
    .label("history_version")
)
_BY_ID_CHECKED = select(CREDENTIALS, _NEWEST_HISTORY_VERSION).where(
    CREDENTIALS.c.id == bindparam("b_id")
)
_LOAD_CHECKED = {
    (False, False): _BY_ID_CHECKED,
    (True, False): _BY_ID_CHECKED.with_for_update(of=CREDENTIALS),
    (True, True): _BY_ID_CHECKED.with_for_update(of=CREDENTIALS, skip_locked=True),
}
_INSERT = insert(CREDENTIALS)
_UPDATE_IF_VERSION = update(CREDENTIALS).where(
    CREDENTIALS.c.id == bindparam("b_id"), CREDENTIALS.c.version == bindparam("b_version")
)
_UPDATE = update(CREDENTIALS).where(CREDENTIALS.c.id == bindparam("b_id"))
_APPEND_HISTORY = insert(HISTORY)


@overload
def load_credential(
    connection: Connection,
    credential_id: str,
    *,
    for_update: bool = ...,
    skip_locked: bool = ...,
    missing_ok: Literal[False] = ...,
) -> CredentialRecord: ...
@overload
def load_credential(
    connection: Connection,
    credential_id: str,
    *,
    for_update: bool = ...,
    skip_locked: bool = ...,
    missing_ok: bool,
) -> CredentialRecord | None: ...
def load_credential(
    connection: Connection,
    credential_id: str,
    *,
    for_update: bool = False,
    skip_locked: bool = False,
    missing_ok: bool = False,
) -> CredentialRecord | None:
    """The credential, or NotFound (or None with ``missing_ok``).

    ``skip_locked`` (PostgreSQL) gives None instead of waiting when another transaction
    holds the row, so a sweep moves on to the next due credential.
    """
    query = _LOAD[(for_update or skip_locked, skip_locked)]
    row = connection.execute(query, {"b_id": credential_id}).one_or_none()
    if row is None:
        if missing_ok:
            return None
        raise NotFound(f"no credential {credential_id!r}", credential_id=credential_id)
    return CredentialRecord.from_row(row)


def load_credential_checked(
    connection: Connection,
    credential_id: str,
    *,
    for_update: bool = False,
    skip_locked: bool = False,
    missing_ok: bool = False,
) -> tuple[CredentialRecord, int | None] | None:
    """Like :func:`load_credential`, with the version of the credential's newest history row
    (None when it has none), read in the same statement (one index probe)."""
    query = _LOAD_CHECKED[(for_update or skip_locked, skip_locked)]
    row = connection.execute(query, {"b_id": credential_id}).one_or_none()
    if row is None:
        if missing_ok:
            return None
        raise NotFound(f"no credential {credential_id!r}", credential_id=credential_id)
    return CredentialRecord.from_row(row), row.history_version


def unsealed_credentials(connection: Connection) -> list[CredentialRecord]:
    """Rows without a MAC (written before migration 0006), locked for the sealing write."""
    query = select(CREDENTIALS).where(CREDENTIALS.c.record_mac.is_(None)).with_for_update()
    return [CredentialRecord.from_row(row) for row in connection.execute(query)]


def any_sealed_credential(connection: Connection) -> bool:
    """Whether any credential row carries a MAC."""
    query = select(CREDENTIALS.c.id).where(CREDENTIALS.c.record_mac.is_not(None)).limit(1)
    return connection.execute(query).first() is not None


def set_record_mac(connection: Connection, credential_id: str, version: int, mac: str) -> bool:
    """Store the MAC of a row still at ``version``; whether it was."""
    result = connection.execute(
        update(CREDENTIALS)
        .where(CREDENTIALS.c.id == credential_id, CREDENTIALS.c.version == version)
        .values(record_mac=mac)
    )
    return bool(result.rowcount == 1)


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


_DELETE_REVOKED = delete(CREDENTIALS).where(
    CREDENTIALS.c.id == bindparam("b_id"), CREDENTIALS.c.state == "REVOKED"
)


def delete_revoked_credential(connection: Connection, credential_id: str) -> bool:
    """Remove a REVOKED credential's row (its history rows stay); whether one was removed."""
    return bool(connection.execute(_DELETE_REVOKED, {"b_id": credential_id}).rowcount == 1)


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
) -> int:
    """Record one fired transition; its row id."""
    result = connection.execute(
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
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def history_rows(connection: Connection, credential_id: str) -> list[HistoryRecord]:
    """A credential's transitions, oldest first."""
    query = select(HISTORY).where(HISTORY.c.credential_id == credential_id).order_by(HISTORY.c.id)
    return [HistoryRecord.from_row(row) for row in connection.execute(query)]


_DUE_COLUMNS = [CREDENTIALS.c[name] for name in DueCredential.column_names()]
_DUE = {
    column: select(*_DUE_COLUMNS)
    .where(CREDENTIALS.c[column] <= bindparam("b_now"))
    .order_by(CREDENTIALS.c[column])
    .limit(bindparam("b_limit"))
    for column in ("next_due_at", "probe_due_at")
}
_EARLIEST = (
    select(CREDENTIALS.c.next_due_at)
    .where(CREDENTIALS.c.next_due_at.is_not(None))
    .order_by(CREDENTIALS.c.next_due_at)
    .limit(1)
)


def due_credentials(
    connection: Connection,
    now: datetime,
    limit: int,
    *,
    due: Literal["next_due_at", "probe_due_at"] = "next_due_at",
) -> list[DueCredential]:
    """Credentials whose ``due`` time has come, earliest first (an index scan on ``due``)."""
    rows = connection.execute(_DUE[due], {"b_now": now, "b_limit": limit})
    return [DueCredential.from_row(row) for row in rows]


def earliest_due(connection: Connection) -> datetime | None:
    """The earliest next due time of any credential."""
    value: datetime | None = connection.execute(_EARLIEST).scalar()
    return value


def iter_credentials(
    connection: Connection, *, state: str | None = None, batch: int = 1000
) -> Iterator[CredentialRecord]:
    """Every credential row in id order, fetched in batches (keyset pagination)."""
    last = ""
    while True:
        query = select(CREDENTIALS).where(CREDENTIALS.c.id > last).order_by(CREDENTIALS.c.id)
        if state is not None:
            query = query.where(CREDENTIALS.c.state == state)
        rows = connection.execute(query.limit(batch)).all()
        if not rows:
            return
        yield from (CredentialRecord.from_row(row) for row in rows)
        last = rows[-1].id
