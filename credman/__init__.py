"""credman: a credential manager for integration services."""

from loguru import logger

from credman.access import Grant
from credman.audit import ArchiveReport, AuditEvent, AuditReport
from credman.audit_export import AuditForwarder, AuditHeadExporter
from credman.clock import Clock, SystemClock
from credman.connect import ConnectOutcome, ConnectSession
from credman.crypto import KeyProvider, Keyring, Secret
from credman.errors import (
    AccessDenied,
    AuditError,
    AuthorizationFailed,
    ConcurrentUpdate,
    CredentialError,
    CredentialUnusable,
    CredentialValidationError,
    DecryptionError,
    IntegrityError,
    InvalidTransition,
    KeyringError,
    NotFound,
    RefreshFailed,
    StorageError,
    TooManyAttempts,
    Unauthenticated,
    WrongKeyFile,
)
from credman.httpx_auth import AccessAuth
from credman.integrity import IntegrityReport
from credman.keys import KeyStatus, KeyVersionStatus, RewrapProgress, RewrapReport, RotationReport
from credman.lifecycle import (
    ApiKey,
    BasicAuth,
    BearerToken,
    Credential,
    JWTBearer,
    OAuth2,
    Permission,
    Probe,
    RefreshPolicy,
    State,
)
from credman.manager import CredentialManager
from credman.models import Access, CredentialInfo, Transition
from credman.notify import CredentialEvent, EventKind, Hook, WebhookNotifier
from credman.oauth.device import DeviceAuthorization
from credman.principals import PrincipalInfo
from credman.probes import ProbeResult
from credman.sweep import TickReport

__all__ = [
    "Access",
    "AccessAuth",
    "AccessDenied",
    "ApiKey",
    "ArchiveReport",
    "AuditError",
    "AuditEvent",
    "AuditForwarder",
    "AuditHeadExporter",
    "AuditReport",
    "AuthorizationFailed",
    "BasicAuth",
    "BearerToken",
    "Clock",
    "ConcurrentUpdate",
    "ConnectOutcome",
    "ConnectSession",
    "Credential",
    "CredentialError",
    "CredentialEvent",
    "CredentialInfo",
    "CredentialManager",
    "CredentialUnusable",
    "CredentialValidationError",
    "DecryptionError",
    "DeviceAuthorization",
    "EventKind",
    "Grant",
    "Hook",
    "IntegrityError",
    "IntegrityReport",
    "InvalidTransition",
    "JWTBearer",
    "KeyProvider",
    "KeyStatus",
    "KeyVersionStatus",
    "Keyring",
    "KeyringError",
    "NotFound",
    "OAuth2",
    "Permission",
    "PrincipalInfo",
    "Probe",
    "ProbeResult",
    "RefreshFailed",
    "RefreshPolicy",
    "RewrapProgress",
    "RewrapReport",
    "RotationReport",
    "Secret",
    "State",
    "StorageError",
    "SystemClock",
    "TickReport",
    "TooManyAttempts",
    "Transition",
    "Unauthenticated",
    "WebhookNotifier",
    "WrongKeyFile",
]

logger.disable("credman")  # a library stays quiet unless the application enables it
