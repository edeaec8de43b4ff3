"""An id's lifecycle: store refuses an existing id when asked to create, purge frees a
revoked one, and both leave history and audit behind."""

from __future__ import annotations

import pytest

from credman import (
    AccessDenied,
    BearerToken,
    CredentialManager,
    CredentialValidationError,
    InvalidTransition,
)


def test_create_only_refuses_an_existing_id_and_changes_nothing(manager: CredentialManager) -> None:
    """store(create_only=True) on an existing id raises, and the stored version stays 1."""
    manager.store("t", BearerToken(token="first"), principal="admin")
    with pytest.raises(CredentialValidationError, match="'t' already exists"):
        manager.store("t", BearerToken(token="second"), principal="admin", create_only=True)
    assert (1, "first") == (
        manager.info("t", principal="admin").version,
        manager.access("t", principal="admin").token.reveal(),  # type: ignore[union-attr]
    )


def test_purge_frees_a_revoked_id_and_keeps_its_history(manager: CredentialManager) -> None:
    """After revoke and purge the id can be stored anew; the old history rows remain."""
    manager.store("t", BearerToken(token="old"), principal="admin")
    manager.revoke("t", principal="admin", reason="leaked")
    manager.purge("t", principal="admin")
    manager.store("t", BearerToken(token="new"), principal="admin", create_only=True)
    triggers = [step.trigger for step in manager.history("t", principal="admin")]
    assert ["create", "activate", "revoke", "create", "activate"] == triggers
    actions = [e.action for e in manager.audit_events(principal="admin", credential_id="t")]
    assert "purge" in actions


def test_purge_refuses_a_credential_that_is_not_revoked(manager: CredentialManager) -> None:
    """Purging a live credential is refused in plain words and the credential stays."""
    manager.store("t", BearerToken(token="x"), principal="admin")
    with pytest.raises(InvalidTransition, match="cannot be purged"):
        manager.purge("t", principal="admin")
    assert "ACTIVE" == manager.info("t", principal="admin").state


def test_purge_needs_manage(manager: CredentialManager) -> None:
    """A principal without manage cannot purge."""
    manager.store("t", BearerToken(token="x"), principal="admin")
    manager.revoke("t", principal="admin", reason="done")
    with pytest.raises(AccessDenied):
        manager.purge("t", principal="mallory")
