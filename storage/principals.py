"""Row-level access to principal records, inside a caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from credman.storage.records import PrincipalRecord
from credman.storage.tables import PrincipalRow

__all__ = [
    "insert_principal",
    "list_principals",
    "load_principal",
    "load_principal_by_token_id",
    "touch_principal",
    "update_principal",
]

_PRINCIPALS = PrincipalRow.__table__  # type: ignore[attr-defined]
_BY_TOKEN_ID = select(_PRINCIPALS).where(_PRINCIPALS.c.token_id == bindparam("b_token_id"))
_BY_NAME = select(_PRINCIPALS).where(_PRINCIPALS.c.name == bindparam("b_name"))
_TOUCH = (
    update(_PRINCIPALS)
    .where(_PRINCIPALS.c.name == bindparam("b_name"))
    .values(last_used_at=bindparam("b_at"))
)


def _record(row: Any) -> PrincipalRecord | None:
    return None if row is None else PrincipalRecord.from_row(row)


def load_principal_by_token_id(connection: Connection, token_id: str) -> PrincipalRecord | None:
    """The principal whose current token has this public id, or None."""
    return _record(connection.execute(_BY_TOKEN_ID, {"b_token_id": token_id}).one_or_none())


def load_principal(
    connection: Connection, name: str, *, for_update: bool = False
) -> PrincipalRecord | None:
    """The principal called ``name``, or None."""
    query = _BY_NAME.with_for_update() if for_update else _BY_NAME
    return _record(connection.execute(query, {"b_name": name}).one_or_none())


def list_principals(connection: Connection) -> list[PrincipalRecord]:
    """Every principal, by name."""
    rows = connection.execute(select(_PRINCIPALS).order_by(_PRINCIPALS.c.name))
    return [PrincipalRecord.from_row(row) for row in rows]


def insert_principal(connection: Connection, values: Mapping[str, Any]) -> None:
    """Insert a new principal row."""
    connection.execute(insert(_PRINCIPALS), dict(values))


def update_principal(connection: Connection, name: str, values: Mapping[str, Any]) -> None:
    """Write ``values`` to the principal called ``name``."""
    connection.execute(update(_PRINCIPALS).where(_PRINCIPALS.c.name == name).values(**values))


def touch_principal(connection: Connection, name: str, at: datetime) -> None:
    """Record that the principal authenticated at ``at``."""
    connection.execute(_TOUCH, {"b_name": name, "b_at": at})
