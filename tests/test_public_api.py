"""The public surface: exactly the intended names, and every error is a CredentialError."""

from __future__ import annotations

import credman
import credman.errors

API_MD_NAMES = {
    "CredentialManager",
    "BasicAuth",
    "ApiKey",
    "BearerToken",
    "OAuth2",
    "JWTBearer",
    "State",
    "Permission",
    "CredentialError",
    "NotFound",
    "AccessDenied",
    "InvalidTransition",
    "CredentialValidationError",
    "DecryptionError",
    "RefreshFailed",
}
EXTRA_NAMES = {
    "AuditError",
    "AuditEvent",
    "ArchiveReport",
    "AuditReport",
    "ConcurrentUpdate",
    "Credential",
    "CredentialInfo",
    "CredentialUnusable",
    "Grant",
    "KeyringError",
    "Secret",
    "StorageError",
    "Transition",
}


def test_exported_names_are_exactly_the_intended_ones() -> None:
    """credman.__all__ is API.md's names plus the documented extras, nothing else."""
    assert API_MD_NAMES | EXTRA_NAMES == set(credman.__all__)
    assert all(hasattr(credman, name) for name in credman.__all__)


def test_every_error_is_a_credential_error() -> None:
    """Each exception class credman exports derives from CredentialError."""
    errors = [getattr(credman.errors, name) for name in credman.errors.__all__]
    assert all(issubclass(error, credman.CredentialError) for error in errors)


def test_state_members_are_the_six_lifecycle_states() -> None:
    """State has exactly the diagram's six states, named as in it."""
    expected = ["CREATED", "ACTIVE", "REFRESHING", "UPDATED", "EXPIRED", "REVOKED"]
    assert expected == [state.value for state in credman.State]
