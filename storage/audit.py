"""The audit chain's SQL: lock and move the head, append rows, stream and filter them, move
the anchor and prune the rows an archive holds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from credman.storage.records import AuditHead, AuditRecord
from credman.storage.tables import AuditEventRow, AuditHeadRow, HistoryRow

__all__ = [
    "HISTORY_FIELDS",
    "append_event",
    "events_after",
    "events_between",
    "history_by_id",
    "history_ids",
    "insert_event",
    "insert_events",
    "lock_head",
    "move_anchor",
    "move_head",
    "newest_events",
    "prune_archived",
    "read_anchored_head",
    "read_head",
    "stream_events",
]

_EVENTS = AuditEventRow.__table__  # type: ignore[attr-defined]
_HEAD = AuditHeadRow.__table__  # type: ignore[attr-defined]
# Built once: per-call statement construction dominated the profile of every audited call.
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)
_ANCHORED_HEAD = select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.anchor_seq, _HEAD.c.anchor_hash).where(
    _HEAD.c.id == 1
)
_INSERT_EVENT = insert(_EVENTS)
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1)
_EVENT_COLUMNS = (
    "seq",
    "at",
    "principal",
    "action",
    "credential_id",
    "outcome",
    "detail",
    "prev_hash",
    "hash",
)
# PostgreSQL: the row and the head's move in one statement (a data-modifying CTE), so the
# head lock is held one round trip less; SQLite (no DML in a CTE) runs the two statements.
_APPEND = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=bindparam("seq"), hash=bindparam("hash"))
    .add_cte(
        insert(_EVENTS)
        .values({name: bindparam(name, type_=_EVENTS.c[name].type) for name in _EVENT_COLUMNS})
        .cte("appended")
    )
)
_FILTERS = ("principal", "outcome", "credential_id")
_HISTORY = HistoryRow.__table__  # type: ignore[attr-defined]
HISTORY_FIELDS = (
    "id",
    "credential_id",
    "from_state",
    "to_state",
    "trigger",
    "principal",
    "reason",
    "at",
    "version",
)
"""The history columns an audit row binds (by digest), in digest order."""


def lock_head(connection: Connection) -> tuple[int, str]:
    """The head (last seq and hash), locked until the transaction ends: appenders queue here."""
    row = connection.execute(_LOCK_HEAD).one()
    return int(row.seq), str(row.hash)


def read_head(connection: Connection) -> tuple[int, str]:
    """The head, unlocked."""
    row = connection.execute(_READ_HEAD).one()
    return int(row.seq), str(row.hash)


def append_event(connection: Connection, values: Mapping[str, Any]) -> None:
    """Insert one chain row and point the head at it (the head locked by :func:`lock_head`)."""
    if connection.dialect.name == "postgresql":
        connection.execute(_APPEND, {name: values[name] for name in _EVENT_COLUMNS})
        return
    insert_event(connection, values)
    move_head(connection, values["seq"], values["hash"])


def insert_event(connection: Connection, values: Mapping[str, Any]) -> None:
    """Insert one chain row."""
    connection.execute(_INSERT_EVENT, dict(values))


def insert_events(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert chain rows in one executemany (bulk appends)."""
    connection.execute(_INSERT_EVENT, [dict(row) for row in rows])


def move_head(connection: Connection, seq: int, digest: str) -> None:
    """Point the head at the row just appended."""
    connection.execute(_MOVE_HEAD, {"seq": seq, "hash": digest})


def read_anchored_head(connection: Connection, *, lock: bool = False) -> AuditHead:
    """The head with its anchor; with ``lock``, locked until the transaction ends."""
    query = _ANCHORED_HEAD.with_for_update() if lock else _ANCHORED_HEAD
    return AuditHead.from_row(connection.execute(query).one())


def move_anchor(connection: Connection, seq: int, digest: str) -> None:
    """Verification now starts after row ``seq`` (whose hash is ``digest``)."""
    connection.execute(_MOVE_HEAD, {"anchor_seq": seq, "anchor_hash": digest})


def stream_events(connection: Connection, batch: int, *, after: int = 0) -> Iterator[AuditRecord]:
    """Every row after the anchor ``after`` in sequence order, including any an attacker
    numbered 0 or below (rows 1..after are archived and may still await pruning)."""
    query = select(_EVENTS).order_by(_EVENTS.c.seq).limit(batch)
    low = connection.execute(query.where(_EVENTS.c.seq <= 0)).all()
    yield from (AuditRecord.from_row(row) for row in low)
    rows = connection.execute(query.where(_EVENTS.c.seq > after)).all()
    while rows:
        yield from (AuditRecord.from_row(row) for row in rows)
        rows = connection.execute(query.where(_EVENTS.c.seq > rows[-1].seq)).all()


def events_after(connection: Connection, after: int, limit: int) -> list[AuditRecord]:
    """Up to ``limit`` rows with ``seq > after``, in sequence order."""
    query = select(_EVENTS).where(_EVENTS.c.seq > after).order_by(_EVENTS.c.seq).limit(limit)
    return [AuditRecord.from_row(row) for row in connection.execute(query)]


def events_between(connection: Connection, after: int, before: int) -> Iterator[AuditRecord]:
    """The rows with ``after < seq < before``, in sequence order (streamed)."""
    query = select(_EVENTS).where(_EVENTS.c.seq > after, _EVENTS.c.seq < before)
    for row in connection.execute(query.order_by(_EVENTS.c.seq)):
        yield AuditRecord.from_row(row)


def prune_archived(connection: Connection, anchor_seq: int, limit: int) -> int:
    """Delete up to ``limit`` of the archived rows (1..anchor_seq); how many went.

    The database refuses to delete any other row (the append-only trigger checks the anchor).
    """
    seqs = list(
        connection.execute(
            select(_EVENTS.c.seq)
            .where(_EVENTS.c.seq >= 1, _EVENTS.c.seq <= anchor_seq)
            .order_by(_EVENTS.c.seq)
            .limit(limit)
        ).scalars()
    )
    if seqs:
        connection.execute(
            delete(_EVENTS).where(_EVENTS.c.seq >= seqs[0], _EVENTS.c.seq <= seqs[-1])
        )
    return len(seqs)


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


def history_by_id(connection: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The history rows with these ids (absent ones are missing from the answer)."""
    found: dict[int, dict[str, Any]] = {}
    columns = [_HISTORY.c[name] for name in HISTORY_FIELDS]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for row in connection.execute(select(*columns).where(_HISTORY.c.id.in_(chunk))):
            found[int(row.id)] = dict(row._mapping)
    return found


def history_ids(connection: Connection, batch: int) -> Iterator[int]:
    """Every history row id, ascending (fetched ``batch`` at a time)."""
    query = select(_HISTORY.c.id).order_by(_HISTORY.c.id).limit(batch)
    ids = list(connection.execute(query).scalars())
    while ids:
        yield from ids
        ids = list(connection.execute(query.where(_HISTORY.c.id > ids[-1])).scalars())
