"""The six lifecycle states and the permissions that guard their edges."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Permission", "State"]


class State(StrEnum):
    """Where a credential stands in its lifecycle; names as in the diagram."""

    CREATED = "CREATED"
    ACTIVE = "ACTIVE"
    REFRESHING = "REFRESHING"
    UPDATED = "UPDATED"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"


class Permission(StrEnum):
    """What a grant allows a principal to do with a credential."""

    USE = "use"  # request material only (access, auth, token); may cause due refreshes
    READ = "read"  # the whole decrypted credential (get): refresh tokens, client secrets, keys
    MANAGE = "manage"  # store, update, refresh on demand, revoke
    AUDIT = "audit"  # read metadata, history and the audit trail
    ADMIN = "admin"  # everything, including grants and key rotation
