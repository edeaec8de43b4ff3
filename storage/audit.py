"""The audit chain's SQL: lock and move the head, append rows, stream and filter them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, insert, select, update

from credman.storage.records import AuditRecord
from credman.storage.tables import AuditEventRow, AuditHeadRow

__all__ = ["insert_event", "lock_head", "move_head", "newest_events", "read_head", "stream_events"]

_EVENTS = AuditEventRow.__table__  # type: ignore[attr-defined]
_HEAD = AuditHeadRow.__table__  # type: ignore[attr-defined]
# Built once: per-call statement construction dominated the profile of every audited call.
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)
_INSERT_EVENT = insert(_EVENTS)
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1)
_FILTERS = ("principal", "outcome", "credential_id")


def lock_head(connection: Connection) -> tuple[int, str]:
    """The head (last seq and hash), locked until the transaction ends: appenders queue here."""
    row = connection.execute(_LOCK_HEAD).one()
    return int(row.seq), str(row.hash)


def read_head(connection: Connection) -> tuple[int, str]:
    """The head, unlocked."""
    row = connection.execute(_READ_HEAD).one()
    return int(row.seq), str(row.hash)


def insert_event(connection: Connection, values: Mapping[str, Any]) -> None:
    """Insert one chain row."""
    connection.execute(_INSERT_EVENT, dict(values))


def move_head(connection: Connection, seq: int, digest: str) -> None:
    """Point the head at the row just appended."""
    connection.execute(_MOVE_HEAD, {"seq": seq, "hash": digest})


def stream_events(connection: Connection, batch: int) -> Iterator[AuditRecord]:
    """Every row in sequence order, including any an attacker numbered 0 or below."""
    query = select(_EVENTS).order_by(_EVENTS.c.seq).limit(batch)
    rows = connection.execute(query).all()
    while rows:
        yield from (AuditRecord.from_row(row) for row in rows)
        rows = connection.execute(query.where(_EVENTS.c.seq > rows[-1].seq)).all()


def newest_events(
    connection: Connection, *, limit: int, **filters: str | None
) -> list[AuditRecord]:
    """The newest rows matching ``principal``/``outcome``/``credential_id``, oldest first."""
    query = select(_EVENTS).order_by(_EVENTS.c.seq.desc()).limit(limit)
    for column in _FILTERS:
        value = filters.get(column)
        if value is not None:
            query = query.where(_EVENTS.c[column] == value)
    rows = connection.execute(query).all()
    return [AuditRecord.from_row(row) for row in reversed(rows)]
