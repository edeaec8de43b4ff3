"""The public surface: exactly the intended names, and every error is a CredentialError."""

from __future__ import annotations

import credman
import credman.errors

CONTRACT_NAMES = {
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
    "Unauthenticated",
    "Access",
    "CredentialInfo",
}
EXTRA_NAMES = {
    "AccessAuth",
    "AuditError",
    "AuditEvent",
    "AuditForwarder",
    "AuditHeadExporter",
    "ArchiveReport",
    "AuditReport",
    "AuthorizationFailed",
    "Clock",
    "ConcurrentUpdate",
    "ConnectOutcome",
    "ConnectSession",
    "DeviceAuthorization",
    "Credential",
    "CredentialEvent",
    "CredentialUnusable",
    "EventKind",
    "Grant",
    "Hook",
    "KeyProvider",
    "KeyStatus",
    "KeyVersionStatus",
    "Keyring",
    "KeyringError",
    "WrongKeyFile",
    "IntegrityError",
    "IntegrityReport",
    "Probe",
    "ProbeResult",
    "RefreshPolicy",
    "RewrapProgress",
    "RewrapReport",
    "RotationReport",
    "Secret",
    "PrincipalInfo",
    "StorageError",
    "TooManyAttempts",
    "SystemClock",
    "TickReport",
    "Transition",
    "WebhookNotifier",
}
"""Every other type that appears in a public signature of CredentialManager."""


def test_exported_names_are_exactly_the_intended_ones() -> None:
    """credman.__all__ is docs/api.md's names plus the documented extras, nothing else."""
    assert CONTRACT_NAMES | EXTRA_NAMES == set(credman.__all__)
    assert all(hasattr(credman, name) for name in credman.__all__)


def test_every_error_is_a_credential_error() -> None:
    """Each exception class credman exports derives from CredentialError."""
    errors = [getattr(credman.errors, name) for name in credman.errors.__all__]
    assert all(issubclass(error, credman.CredentialError) for error in errors)


def test_state_members_are_the_six_lifecycle_states() -> None:
    """State has exactly the diagram's six states, named as in it."""
    expected = ["CREATED", "ACTIVE", "REFRESHING", "UPDATED", "EXPIRED", "REVOKED"]
    assert expected == [state.value for state in credman.State]


def test_every_type_in_the_managers_signatures_is_exported() -> None:
    """Each class named in a public CredentialManager signature is importable from credman."""
    import inspect
    import typing

    exported = {getattr(credman, name) for name in credman.__all__}
    missing = set()
    for name, method in inspect.getmembers(credman.CredentialManager, inspect.isfunction):
        if name.startswith("_"):
            continue
        hints = typing.get_type_hints(method)
        for hint in hints.values():
            for kind in _classes(hint):
                if kind.__module__.startswith("credman") and kind not in exported:
                    missing.add(f"{name}: {kind.__name__}")
    assert set() == missing


def test_the_manager_is_composed_not_inherited() -> None:
    """CredentialManager has no credman base class."""
    assert [object] == [base for base in credman.CredentialManager.__mro__[1:] if base is not None]


def _classes(hint: object) -> list[type]:
    import typing

    if isinstance(hint, type):
        return [hint]
    found: list[type] = []
    for arg in typing.get_args(hint):
        found.extend(_classes(arg))
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        found.append(origin)
    return found
