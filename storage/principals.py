"""Row-level access to principal records, inside a caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from credman.storage.tables import PrincipalRow

__all__ = [
    "PRINCIPAL_FIELDS",
    "PrincipalRecord",
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
PRINCIPAL_FIELDS = (
    "name",
    "token_id",
    "token_hash",
    "description",
    "created_at",
    "created_by",
    "token_issued_at",
    "expires_at",
    "revoked_at",
)
"""The fields the record MAC covers (everything but ``last_used_at``)."""

PrincipalRecord = Mapping[str, Any]
"""A principal row as read: the fields above plus ``last_used_at`` and ``record_mac``."""


def _record(row: Any) -> PrincipalRecord | None:
    return None if row is None else dict(row._mapping)


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
    return [dict(row._mapping) for row in rows]


def insert_principal(connection: Connection, values: Mapping[str, Any]) -> None:
    """Insert a new principal row."""
    connection.execute(insert(_PRINCIPALS), dict(values))


def update_principal(connection: Connection, name: str, values: Mapping[str, Any]) -> None:
    """Write ``values`` to the principal called ``name``."""
    connection.execute(update(_PRINCIPALS).where(_PRINCIPALS.c.name == name).values(**dict(values)))


def touch_principal(connection: Connection, name: str, at: datetime) -> None:
    """Record that the principal authenticated at ``at``."""
    connection.execute(_TOUCH, {"b_name": name, "b_at": at})
