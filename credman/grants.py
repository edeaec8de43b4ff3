"""Grant management: give, take back and list permissions (admin and audit only), audited."""

from __future__ import annotations

from collections.abc import Iterable

from credman._operation import Operations
from credman.access import (
    EVERY_CREDENTIAL,
    Actor,
    Grant,
    check_pattern,
    check_principal,
    parse_permissions,
)
from credman.lifecycle import Permission

__all__ = ["Grants"]

_AUDIT = frozenset({Permission.AUDIT})


class Grants:
    """Adds, removes and lists grants through audited transactions."""

    def __init__(self, operations: Operations) -> None:
        self._operations = operations

    def __repr__(self) -> str:
        return "Grants()"

    def grant(
        self,
        grantee: str,
        pattern: str,
        permissions: Iterable[str | Permission],
        *,
        principal: Actor,
    ) -> Grant:
        """Give ``grantee`` permissions on credentials matching ``pattern`` (admin only)."""
        check_principal(grantee)
        check_pattern(pattern)
        wanted = parse_permissions(permissions)
        ops = self._operations
        with ops.run("grant", principal, None) as connection:
            act = ops.act_as_admin(connection, principal)
            grant = ops.policy.add(connection, grantee, pattern, wanted, by=act.name, at=act.now)
            names = ",".join(sorted(wanted))
            ops.audit(act, "grant", None, grantee=grantee, pattern=pattern, permissions=names)
        return grant

    def revoke(self, grantee: str, pattern: str, *, principal: Actor) -> bool:
        """Remove ``grantee``'s grant on ``pattern`` (admin only); whether one existed."""
        check_principal(grantee)
        check_pattern(pattern)
        ops = self._operations
        with ops.run("revoke_grant", principal, None) as connection:
            act = ops.act_as_admin(connection, principal)
            removed = ops.policy.remove(connection, grantee, pattern)
            ops.audit(act, "revoke_grant", None, grantee=grantee, pattern=pattern, removed=removed)
        return removed

    def list(self, *, principal: Actor, grantee: str | None = None) -> list[Grant]:
        """The grants in force (needs ``audit`` on ``*``)."""
        if grantee is not None:
            check_principal(grantee)
        ops = self._operations
        with ops.run("grants", principal, None, writes=False) as connection:
            ops.act(connection, principal, EVERY_CREDENTIAL, _AUDIT)
            return ops.policy.grants(connection, grantee)
