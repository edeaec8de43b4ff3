"""The grant table's SQL: read, add, widen and remove grants inside a caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from credman.storage.records import GrantRecord
from credman.storage.tables import GrantRow

__all__ = [
    "delete_grant",
    "find_grant",
    "grants_of",
    "insert_grant",
    "list_grants",
    "set_permissions",
]

_GRANTS = GrantRow.__table__  # type: ignore[attr-defined]
_OF_PRINCIPAL = select(_GRANTS).where(_GRANTS.c.principal == bindparam("b"))  # built once
_ONE = select(_GRANTS).where(
    _GRANTS.c.principal == bindparam("b_principal"), _GRANTS.c.pattern == bindparam("b_pattern")
)


def grants_of(connection: Connection, principal: str) -> list[GrantRecord]:
    """Every grant of ``principal`` (the hot path of every access check)."""
    return [
        GrantRecord.from_row(row) for row in connection.execute(_OF_PRINCIPAL, {"b": principal})
    ]


def list_grants(connection: Connection, principal: str | None = None) -> list[GrantRecord]:
    """Every grant (or one principal's), by principal and pattern."""
    query = select(_GRANTS).order_by(_GRANTS.c.principal, _GRANTS.c.pattern)
    if principal is not None:
        query = query.where(_GRANTS.c.principal == principal)
    return [GrantRecord.from_row(row) for row in connection.execute(query)]


def find_grant(connection: Connection, principal: str, pattern: str) -> GrantRecord | None:
    """The (principal, pattern) grant, if there is one."""
    row = connection.execute(_ONE, {"b_principal": principal, "b_pattern": pattern}).one_or_none()
    return None if row is None else GrantRecord.from_row(row)


def insert_grant(
    connection: Connection,
    *,
    principal: str,
    pattern: str,
    permissions: str,
    created_at: datetime,
    created_by: str,
) -> None:
    """Insert a new grant row."""
    connection.execute(
        insert(_GRANTS).values(
            principal=principal,
            pattern=pattern,
            permissions=permissions,
            created_at=created_at,
            created_by=created_by,
        )
    )


def set_permissions(connection: Connection, grant_id: int, permissions: str) -> None:
    """Replace the permissions of one grant."""
    connection.execute(
        update(_GRANTS).where(_GRANTS.c.id == grant_id).values(permissions=permissions)
    )


def delete_grant(connection: Connection, principal: str, pattern: str) -> bool:
    """Delete the (principal, pattern) grant; whether there was one."""
    result = connection.execute(
        delete(_GRANTS).where(_GRANTS.c.principal == principal, _GRANTS.c.pattern == pattern)
    )
    return bool(result.rowcount)
