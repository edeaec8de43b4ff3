"""Every error credman raises on purpose, in one tree.

    CredentialError                  base: catch this to catch everything credman means
    ├── NotFound                     no credential (or grant) with that id
    ├── Unauthenticated              no, bad, expired or revoked principal token
    │   └── TooManyAttempts          too many failed authentications: wait ``retry_after`` seconds
    ├── AccessDenied                 the principal lacks the permission; audited as a security event
    ├── InvalidTransition            the lifecycle has no such edge from the current state,
    │                                or a guard refused it; nothing changed
    ├── CredentialValidationError    bad input; the message names the field
    ├── CredentialUnusable           the credential exists but cannot be used now (revoked, expired)
    ├── DecryptionError              a ciphertext did not open; deliberately says nothing more
    ├── KeyringError                 key material missing, malformed, unsafe or lacking a version
    │   └── WrongKeyFile             the key file is not the one this database was written with
    ├── IntegrityError               a row fails its MAC (forged, altered or rolled back without
    │                                the key); refused, never opened
    ├── ConcurrentUpdate             another writer changed the credential first; retry
    ├── AuditError                   the audit trail could not be written or read; fail closed
    ├── StorageError                 the database failed or has a schema this version does not know
    ├── RefreshFailed                the token endpoint refused (.permanent) or failed (transient)
    └── AuthorizationFailed          a connect did not authorise: the provider or user refused
                                     (access_denied...), or a forged, replayed, expired or
                                     mismatched callback; .error_code says which

Messages never carry secret values: they name credentials, fields, states and triggers.
This module imports nothing from credman, so every layer may raise these.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AuditError",
    "AuthorizationFailed",
    "ConcurrentUpdate",
    "CredentialError",
    "CredentialUnusable",
    "CredentialValidationError",
    "DecryptionError",
    "IntegrityError",
    "InvalidTransition",
    "KeyringError",
    "NotFound",
    "RefreshFailed",
    "StorageError",
    "TooManyAttempts",
    "Unauthenticated",
    "WrongKeyFile",
]


class CredentialError(Exception):
    """Base of every error credman raises on purpose."""

    def __init__(self, message: str, *, credential_id: str | None = None) -> None:
        super().__init__(message)
        self.credential_id = credential_id


class NotFound(CredentialError):
    """No credential (or grant) exists under that id."""


class Unauthenticated(CredentialError):
    """The caller could not be identified: no token, or a malformed, unknown, expired one."""


class TooManyAttempts(Unauthenticated):
    """Too many failed authentications from one source or for one token id; retry later."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AccessDenied(CredentialError):
    """The principal has no grant for this operation; the denial is audited."""

    def __init__(self, principal: str, permission: str, credential_id: str | None = None) -> None:
        target = f" on {credential_id!r}" if credential_id else ""
        super().__init__(
            f"access denied: principal {principal!r} lacks {permission!r}{target}",
            credential_id=credential_id,
        )
        self.principal = principal
        self.permission = permission


class InvalidTransition(CredentialError):
    """The lifecycle refused a trigger in the current state; nothing changed.

    The message says it plainly ("credential 'x' is already revoked"); ``state``,
    ``trigger`` and ``guard`` keep the state machine's words for logs and tools.
    """

    def __init__(
        self,
        credential_id: str | None,
        state: str,
        trigger: str,
        guard: str | None = None,
    ) -> None:
        super().__init__(
            _plain_refusal(credential_id, state, trigger, guard), credential_id=credential_id
        )
        self.state = state
        self.trigger = trigger
        self.guard = guard


_ACTIONS = {
    "activate": "activated",
    "update": "updated",
    "start_refresh": "refreshed",
    "refresh_succeeded": "refreshed",
    "refresh_deferred": "refreshed",
    "refresh_failed": "refreshed",
    "lease_expired": "taken back from its refresher",
    "expire": "expired",
    "revoke": "revoked",
    "purge": "purged (only a revoked credential can be)",
}
_GUARDS = {
    "refreshable": "it has no way to get a new token (only OAuth2 with a refresh token or "
    "client credentials, and JWT assertions, refresh)",
    "past_expiry": "its material has not expired yet",
    "token_valid": "its token is no longer valid",
    "lease_stale": "its refresher still holds the lease",
}


def _plain_refusal(credential_id: str | None, state: str, trigger: str, guard: str | None) -> str:
    """What an operator should read when the lifecycle says no."""
    subject = f"credential {credential_id!r}" if credential_id else "the credential"
    state_name = str(getattr(state, "value", state))
    if trigger == "revoke" and state_name == "REVOKED":
        return f"{subject} is already revoked"
    action = _ACTIONS.get(trigger, f"changed by {trigger}")
    if state_name == "REVOKED":
        return f"{subject} is revoked and cannot be {action}"
    if guard in _GUARDS:
        return f"{subject} cannot be {action}: {_GUARDS[guard]}"
    return f"{subject} cannot be {action} while it is {state_name.lower()}"


class CredentialValidationError(CredentialError, ValueError):
    """Input failed validation; ``fields`` names every offending field."""

    def __init__(
        self, message: str, *, fields: tuple[str, ...] = (), credential_id: str | None = None
    ) -> None:
        super().__init__(message, credential_id=credential_id)
        self.fields = fields


class CredentialUnusable(CredentialError):
    """The credential exists but is in a state that yields no usable secret."""

    def __init__(self, credential_id: str, state: str, why: str) -> None:
        super().__init__(
            f"credential {credential_id!r} is {state}: {why}", credential_id=credential_id
        )
        self.state = state


class DecryptionError(CredentialError):
    """A ciphertext failed to open: tampered, misplaced or under an unknown key."""


class KeyringError(CredentialError):
    """Key material is missing, malformed, readable by others or lacks a needed version."""


class WrongKeyFile(KeyringError):
    """The keyring's fingerprints differ from those the database recorded: another key file."""


class IntegrityError(CredentialError):
    """A database row fails its MAC or is older than the audit trail says: someone without
    the key wrote it. The row is refused and never opened."""


class ConcurrentUpdate(CredentialError):
    """Another writer committed a change to the credential first."""


class AuditError(CredentialError):
    """The audit trail could not be written; the operation did not happen."""


class StorageError(CredentialError):
    """The database failed, or holds a schema this version of credman does not know."""


class RefreshFailed(CredentialError):
    """The token endpoint did not yield a token; ``permanent`` means re-authorization is needed."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        credential_id: str | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
        rotated_refresh_token: object | None = None,
    ) -> None:
        super().__init__(message, credential_id=credential_id)
        self.permanent = permanent
        self.error_code = error_code
        self.retry_after = retry_after
        self.rotated_refresh_token = rotated_refresh_token
        """A ``Secret``: the refresh token a refused 200 rotated to (the old one is spent)."""


class AuthorizationFailed(CredentialError):
    """A connect (authorization code or device grant) did not authorise; nothing changed."""

    def __init__(self, message: str, *, error_code: str, credential_id: str | None = None) -> None:
        super().__init__(message, credential_id=credential_id)
        self.error_code = error_code
