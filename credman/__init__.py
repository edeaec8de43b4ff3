"""credman: a credential manager for integration services."""

from loguru import logger

from credman.access import Grant
from credman.audit import ArchiveReport, AuditEvent, AuditReport
from credman.crypto import Secret
from credman.errors import (
    AccessDenied,
    AuditError,
    ConcurrentUpdate,
    CredentialError,
    CredentialUnusable,
    CredentialValidationError,
    DecryptionError,
    InvalidTransition,
    KeyringError,
    NotFound,
    RefreshFailed,
    StorageError,
)
from credman.lifecycle import (
    ApiKey,
    BasicAuth,
    BearerToken,
    Credential,
    JWTBearer,
    OAuth2,
    Permission,
    State,
)
from credman.manager import CredentialInfo, CredentialManager, Transition

__all__ = [
    "AccessDenied",
    "ApiKey",
    "ArchiveReport",
    "AuditError",
    "AuditEvent",
    "AuditReport",
    "BasicAuth",
    "BearerToken",
    "ConcurrentUpdate",
    "Credential",
    "CredentialError",
    "CredentialInfo",
    "CredentialManager",
    "CredentialUnusable",
    "CredentialValidationError",
    "DecryptionError",
    "Grant",
    "InvalidTransition",
    "JWTBearer",
    "KeyringError",
    "NotFound",
    "OAuth2",
    "Permission",
    "RefreshFailed",
    "Secret",
    "State",
    "StorageError",
    "Transition",
]

logger.disable("credman")  # a library stays quiet unless the application enables it
