"""The credential lifecycle: states, the one transition table, guards, credential types and
the timing decisions. Pure: no I/O; time is always a parameter."""

from credman.lifecycle.machine import EDGES, GUARDS, Edge, Subject, fire, legal_triggers, target_of
from credman.lifecycle.states import Permission, State
from credman.lifecycle.timing import RefreshPolicy, next_due_at, refresh_due_at
from credman.lifecycle.types import (
    CREDENTIAL_TYPES,
    ApiKey,
    BasicAuth,
    BearerToken,
    Credential,
    JWTBearer,
    OAuth2,
    Probe,
    credential_from_parts,
)

__all__ = [
    "CREDENTIAL_TYPES",
    "EDGES",
    "GUARDS",
    "ApiKey",
    "BasicAuth",
    "BearerToken",
    "Credential",
    "Edge",
    "JWTBearer",
    "OAuth2",
    "Permission",
    "Probe",
    "RefreshPolicy",
    "State",
    "Subject",
    "credential_from_parts",
    "fire",
    "legal_triggers",
    "next_due_at",
    "refresh_due_at",
    "target_of",
]
