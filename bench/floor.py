"""The floor: the least work an audited, fail-closed read can do, hand-written on SQLAlchemy Core.

One transaction (``BEGIN IMMEDIATE``, as credman's writes) selects the row's sealed fields,
opens one field with AES-GCM under its data key, inserts an audit row and commits, on the
same SQLite file with the same pragmas as the manager. Everything that can be prepared is
prepared once: statements, data keys (unwrapped up front) and associated data. What
credman does above this (access check, lifecycle checks, unwrap, opening every field,
building the credential, the HMAC chain) is its cost on top.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    select,
)

from bench.measure import Operation
from bench.phase import Phase
from bench.workload import WORKER
from credman import _sealing as _material
from credman.crypto import Keyring, WrappedKey, open_field, unwrap

__all__ = ["floor_read"]

_FIELD = "access_token"
_METADATA = MetaData()
_CREDENTIAL = Table(
    "credential",
    _METADATA,
    Column("id", String(128), primary_key=True),
    Column("type", String(32)),
    Column("public", JSON),
    Column("sealed", JSON),
    Column("key_version", Integer),
    Column("wrapped_dek", LargeBinary),
)
_AUDIT = Table(
    "bench_floor_audit",
    _METADATA,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True)),
    Column("principal", String(128)),
    Column("action", String(32)),
    Column("credential_id", String(128)),
)
_SELECT = select(_CREDENTIAL.c.sealed).where(_CREDENTIAL.c.id == bindparam("id"))
_INSERT = insert(_AUDIT)


def _pragmas(synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # BEGIN is issued below
    for pragma in (
        "journal_mode=WAL",
        f"synchronous={synchronous}",
        "busy_timeout=30000",
        "foreign_keys=ON",
    ):
        dbapi_connection.execute(f"PRAGMA {pragma}")


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def floor_engine(url: str, synchronous: str) -> Engine:
    """An engine with credman's SQLite settings: WAL, ``synchronous``, BEGIN IMMEDIATE."""
    engine = create_engine(url, connect_args={"timeout": 30.0})
    event.listen(engine, "connect", partial(_pragmas, synchronous))
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _opening_keys(
    engine: Engine, keyring: Keyring, ids: list[str]
) -> dict[str, tuple[bytes, bytes]]:
    """Per id: the unwrapped data key and the digest its fields are bound to."""
    query = select(_CREDENTIAL).where(_CREDENTIAL.c.id.in_(ids))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return {
        row.id: (
            unwrap(keyring, WrappedKey(row.key_version, row.wrapped_dek), credential_id=row.id),
            _material.binding(row.type, row.public),
        )
        for row in rows
    }


class _FloorRead:
    """Select one row, open one field, insert one audit row, commit."""

    def __init__(self, engine: Engine, keys: Mapping[str, tuple[bytes, bytes]]) -> None:
        self.engine = engine
        self._keys = keys

    def __call__(self, credential_id: str) -> str:
        data_key, bound = self._keys[credential_id]
        with self.engine.begin() as connection:
            sealed = connection.execute(_SELECT, {"id": credential_id}).scalar_one()
            blob = base64.b64decode(sealed[_FIELD])
            secret = open_field(
                data_key, blob, credential_id=credential_id, field=_FIELD, bound=bound
            )
            connection.execute(
                _INSERT,
                {
                    "at": datetime.now(UTC),
                    "principal": WORKER,
                    "action": "read",
                    "credential_id": credential_id,
                },
            )
        return secret


def floor_read(phase: Phase) -> Operation:
    """The floor over the phase's file and settings, reading ids in the same order as ``get``."""
    engine = floor_engine(phase.url, phase.synchronous)
    phase.closers.callback(engine.dispose)
    _METADATA.create_all(engine, tables=[_AUDIT])
    read = _FloorRead(engine, _opening_keys(engine, phase.keyring, phase.pool))
    pick = phase.picks()
    return lambda: read(pick())
