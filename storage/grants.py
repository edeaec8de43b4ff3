"""The grant table's SQL: read, add, widen and remove grants inside a caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, insert, or_, select, update

from credman.storage.records import GrantRecord
from credman.storage.tables import GrantRow

__all__ = [
    "any_sealed_grant",
    "covering_candidates",
    "delete_grant",
    "find_grant",
    "grants_of",
    "insert_grant",
    "list_grants",
    "set_grant_mac",
    "set_permissions",
    "unsealed_grants",
]

_GRANTS = GrantRow.__table__  # type: ignore[attr-defined]
_OF_PRINCIPAL = select(_GRANTS).where(_GRANTS.c.principal == bindparam("b"))  # built once
_ONE = select(_GRANTS).where(
    _GRANTS.c.principal == bindparam("b_principal"), _GRANTS.c.pattern == bindparam("b_pattern")
)
_COVERING = select(_GRANTS).where(  # the exact grant on an id and every glob: built once
    _GRANTS.c.principal == bindparam("b"),
    or_(
        _GRANTS.c.pattern == bindparam("id"),
        _GRANTS.c.pattern.contains("*", autoescape=True),
        _GRANTS.c.pattern.contains("?", autoescape=True),
        _GRANTS.c.pattern.contains("[", autoescape=True),
    ),
)


def covering_candidates(
    connection: Connection, principal: str, credential_id: str
) -> list[GrantRecord]:
    """The principal's grants that may cover ``credential_id``: the exact one and the globs
    (not the thousands of exact grants on other ids)."""
    rows = connection.execute(_COVERING, {"b": principal, "id": credential_id})
    return [GrantRecord.from_row(row) for row in rows]


def grants_of(connection: Connection, principal: str) -> list[GrantRecord]:
    """Every grant of ``principal``."""
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
    record_mac: str,
) -> None:
    """Insert a new grant row."""
    connection.execute(
        insert(_GRANTS).values(
            principal=principal,
            pattern=pattern,
            permissions=permissions,
            created_at=created_at,
            created_by=created_by,
            record_mac=record_mac,
        )
    )


def set_permissions(
    connection: Connection, grant_id: int, values: dict[str, str | datetime]
) -> None:
    """Replace the permissions of one grant (with its MAC, and whatever else ``values`` sets)."""
    connection.execute(update(_GRANTS).where(_GRANTS.c.id == grant_id).values(**values))


def unsealed_grants(connection: Connection) -> list[GrantRecord]:
    """Grants without a MAC (written before migration 0006)."""
    query = select(_GRANTS).where(_GRANTS.c.record_mac.is_(None)).with_for_update()
    return [GrantRecord.from_row(row) for row in connection.execute(query)]


def any_sealed_grant(connection: Connection) -> bool:
    """Whether any grant row carries a MAC."""
    query = select(_GRANTS.c.id).where(_GRANTS.c.record_mac.is_not(None)).limit(1)
    return connection.execute(query).first() is not None


def set_grant_mac(connection: Connection, grant_id: int, mac: str) -> None:
    """Store one grant's MAC."""
    connection.execute(update(_GRANTS).where(_GRANTS.c.id == grant_id).values(record_mac=mac))


def delete_grant(connection: Connection, principal: str, pattern: str) -> bool:
    """Delete the (principal, pattern) grant; whether there was one."""
    result = connection.execute(
        delete(_GRANTS).where(_GRANTS.c.principal == principal, _GRANTS.c.pattern == pattern)
    )
    return bool(result.rowcount)
