"""Least privilege: grants of permissions to principals on credential ids or glob patterns.

Default deny. A principal may do an operation on a credential only when it is an admin
(from configuration) or holds a grant whose pattern matches the credential id and whose
permissions include the one needed (``admin`` in a grant includes all). The scheduler acts
as the reserved ``system:scheduler`` principal, which may only do what the lifecycle does
on its own (refresh, expire, recover leases); it is a value (:data:`SYSTEM`) that the
sweep passes, not a name, so user principals cannot take it.

Patterns are segment-aware: ``/`` separates segments, ``*``, ``?`` and ``[...]`` never match
a ``/``, and ``**`` matches across segments (``team-a/*`` covers ``team-a/db`` but not
``team-a/x/db``; ``team-a/**`` covers both). The bare pattern ``*`` is the one exception: it
covers every credential. A wildcard straight after a letter or digit (``team-a*``) matches
every id with that prefix (``team-admin-root`` too): :func:`pattern_warning` says so, and
``grant()`` logs it. Checking access reads only the exact grant on the id and the principal's
glob grants (not every grant it holds), and each glob is compiled once.

Rights over every credential at once (the audit trail, the list of grants) are asked for
with the pseudo-id ``*`` (not a valid credential id). Only a grant on the pattern ``*``
itself covers it: a pattern that merely matches the text ``*`` (``?``, ``[*]``, ``[!a]``)
was meant for some credentials, not for all of them.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from credman._integrity import RecordSeals
from credman.errors import CredentialValidationError
from credman.lifecycle import Permission
from credman.storage import GrantRecord
from credman.storage import grants as grant_rows

__all__ = [
    "EVERY_CREDENTIAL",
    "SYSTEM",
    "AccessPolicy",
    "Actor",
    "Grant",
    "RejectedGrant",
    "SystemPrincipal",
    "check_pattern",
    "check_principal",
    "parse_permissions",
    "pattern_covers",
    "pattern_warning",
]


@dataclass(frozen=True, slots=True)
class SystemPrincipal:
    """The scheduler acting on its own: a value only the sweep holds, never a name a caller
    can pass (``check_principal`` refuses ``system:`` names)."""

    name: str = "system:scheduler"

    def __str__(self) -> str:
        return self.name


SYSTEM = SystemPrincipal()
"""The one system principal: what the sweep acts as."""
Actor = str | SystemPrincipal
"""Who performs an operation: a checked principal name, or the system principal."""
EVERY_CREDENTIAL = "*"
_SYSTEM_MAY = frozenset({Permission.USE})
_LOOSE_WILDCARD = re.compile(r"[A-Za-z0-9][*?\[]")
# "operator:<os user>" is how the command line records its local operator
_PRINCIPAL = re.compile(r"(?:operator:)?[A-Za-z0-9][A-Za-z0-9._@/-]{0,127}")
_PATTERN = re.compile(r"[A-Za-z0-9*?\[\]][A-Za-z0-9._:@/*?\[\]!-]{0,127}")


@dataclass(frozen=True, slots=True)
class Grant:
    """Permissions a principal holds on credentials matching ``pattern``."""

    principal: str
    pattern: str
    permissions: frozenset[Permission]
    created_at: datetime
    created_by: str


def check_principal(principal: str) -> str:
    """Validate a user principal name (letters, digits, ``._@/-``, maybe after ``operator:``;
    never ``system:``)."""
    if not isinstance(principal, str) or not _PRINCIPAL.fullmatch(principal):
        raise CredentialValidationError(
            "principal: 1-128 characters of letters, digits and ._@/- (starting with a letter "
            "or digit)",
            fields=("principal",),
        )
    return principal


def check_pattern(pattern: str) -> str:
    """Validate a grant pattern: a credential id or a glob (``*``, ``?``, ``[...]``)."""
    if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
        raise CredentialValidationError(
            "pattern: a credential id or glob of 1-128 characters", fields=("pattern",)
        )
    return pattern


def parse_permissions(values: Iterable[str | Permission]) -> frozenset[Permission]:
    """Permissions from names; an unknown name is a validation error naming it."""
    found: set[Permission] = set()
    for value in values:
        try:
            found.add(Permission(str(value).lower()))
        except ValueError:
            allowed = ", ".join(p.value for p in Permission)
            raise CredentialValidationError(
                f"permissions: unknown permission {value!r} (one of {allowed})",
                fields=("permissions",),
            ) from None
    if not found:
        raise CredentialValidationError("permissions: give at least one", fields=("permissions",))
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class RejectedGrant:
    """A grant row that failed its MAC: forged or altered without the key; it grants nothing."""

    principal: str
    pattern: str


class AccessPolicy:
    """Decides and records who may do what; reads grants inside the caller's transaction.

    Every grant row read is checked against its MAC; a row that fails grants nothing and is
    kept (per thread) for :meth:`take_rejected`, so the operation reports it after its
    transaction (no I/O while one is open).
    """

    def __init__(self, admins: Iterable[str], *, seals: RecordSeals) -> None:
        self.admins = frozenset(admins)
        self.seals = seals
        self._rejected = threading.local()

    def __repr__(self) -> str:
        return f"AccessPolicy(admins={sorted(self.admins)})"

    def permissions(
        self, connection: Connection, principal: Actor, credential_id: str
    ) -> frozenset[Permission]:
        """Everything ``principal`` may do on ``credential_id``."""
        if isinstance(principal, SystemPrincipal):
            return _SYSTEM_MAY
        if principal in self.admins:
            return frozenset(Permission)
        held: set[Permission] = set()
        for row in self._authentic(
            grant_rows.covering_candidates(connection, principal, credential_id)
        ):
            grant = _grant(row)
            if pattern_covers(grant.pattern, credential_id):
                held |= _expand(grant.permissions)
        return frozenset(held)

    def is_admin(self, connection: Connection, principal: Actor) -> bool:
        """Admins come from configuration, or hold ``admin`` on the pattern ``*``."""
        if isinstance(principal, SystemPrincipal):
            return False
        if principal in self.admins:
            return True
        return any(
            grant.pattern == EVERY_CREDENTIAL and Permission.ADMIN in grant.permissions
            for grant in self._rows(connection, principal)
        )

    def grants(self, connection: Connection, principal: str | None = None) -> list[Grant]:
        """Every authentic grant, or those of one principal."""
        rows = grant_rows.list_grants(connection, principal)
        return [_grant(row) for row in self._authentic(rows)]

    def take_rejected(self) -> list[RejectedGrant]:
        """The grant rows this thread found failing their MAC since the last call."""
        rejected: list[RejectedGrant] = getattr(self._rejected, "rows", [])
        self._rejected.rows = []
        return rejected

    def _authentic(self, rows: Iterable[GrantRecord]) -> list[GrantRecord]:
        found = []
        for row in rows:
            if self.seals.grant_authentic(row):
                found.append(row)
            else:
                if not hasattr(self._rejected, "rows"):
                    self._rejected.rows = []
                self._rejected.rows.append(RejectedGrant(row.principal, row.pattern))
        return found

    def add(
        self,
        connection: Connection,
        principal: str,
        pattern: str,
        permissions: frozenset[Permission],
        *,
        by: str,
        at: datetime,
    ) -> Grant:
        """Add permissions to the (principal, pattern) grant, creating it if needed."""
        existing = grant_rows.find_grant(connection, principal, pattern)
        if existing is not None and self._authentic([existing]):
            permissions |= _decode(existing.permissions)
            at, by = existing.created_at, existing.created_by
        # a forged row on the same (principal, pattern) is replaced by what is granted now
        columns: dict[str, str | datetime] = {
            "principal": principal,
            "pattern": pattern,
            "permissions": _encode(permissions),
            "created_at": at,
            "created_by": by,
        }
        mac = self.seals.grant_mac(columns)
        if existing is None:
            grant_rows.insert_grant(
                connection,
                principal=principal,
                pattern=pattern,
                permissions=_encode(permissions),
                created_at=at,
                created_by=by,
                record_mac=mac,
            )
        else:
            grant_rows.set_permissions(connection, existing.id, {**columns, "record_mac": mac})
        return Grant(principal, pattern, permissions, at, by)

    def remove(self, connection: Connection, principal: str, pattern: str) -> bool:
        """Delete the (principal, pattern) grant; whether there was one."""
        return grant_rows.delete_grant(connection, principal, pattern)

    def _rows(self, connection: Connection, principal: str) -> list[Grant]:
        rows = grant_rows.grants_of(connection, principal)
        return [_grant(row) for row in self._authentic(rows)]


def pattern_covers(pattern: str, credential_id: str) -> bool:
    """Whether a grant on ``pattern`` covers ``credential_id`` (segment-aware, see above)."""
    if pattern == EVERY_CREDENTIAL or credential_id == EVERY_CREDENTIAL:
        return pattern == EVERY_CREDENTIAL
    return _compiled(pattern).fullmatch(credential_id) is not None


def pattern_warning(pattern: str) -> str | None:
    """A warning when ``pattern`` covers more than it seems to (``team-a*``), else None."""
    loose = _LOOSE_WILDCARD.search(pattern)
    if loose is None:
        return None
    prefix = pattern[: loose.start() + 1]
    return (
        f"pattern {pattern!r} covers every id that starts with {prefix!r} "
        f"(e.g. {prefix + 'dmin-root'!r}); to cover one folder, grant {prefix + '/*'!r}"
    )


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    """``pattern`` as a regular expression whose wildcards stop at ``/`` (``**`` does not)."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            parts.append(".*")
            index += 2
            continue
        if char == "[":
            end = pattern.find("]", index + (3 if pattern.startswith("[!", index) else 2))
            if end != -1:
                parts.append(_char_class(pattern[index + 1 : end]))
                index = end + 1
                continue
        parts.append({"*": "[^/]*", "?": "[^/]"}.get(char) or re.escape(char))
        index += 1
    return re.compile("".join(parts))


def _char_class(body: str) -> str:
    negate = body.startswith("!")
    members = (body[1:] if negate else body).replace("\\", "\\\\").replace("[", "\\[")
    members = "\\" + members if members.startswith("^") else members
    return f"(?!/)[{'^' if negate else ''}{members}]"


def _expand(permissions: frozenset[Permission]) -> frozenset[Permission]:
    if Permission.ADMIN in permissions:
        return frozenset(Permission)
    if Permission.READ in permissions:  # the whole credential includes its request material
        return permissions | {Permission.USE}
    return permissions


def _encode(permissions: frozenset[Permission]) -> str:
    return ",".join(sorted(p.value for p in permissions))


def _decode(text: str) -> frozenset[Permission]:
    return frozenset(Permission(part) for part in text.split(",") if part)


def _grant(row: GrantRecord) -> Grant:
    return Grant(
        row.principal, row.pattern, _decode(row.permissions), row.created_at, row.created_by
    )
