"""The HTTP API's shapes, without I/O: what each call sends and how its answer is read.

Each client method is a :class:`Call` (method, path, JSON body, a parser for the answer);
``Client`` and ``AsyncClient`` only send it. An answer that is not 2xx is read as RFC 9457
problem details and turned into the credman error the server meant (:func:`error_for`).
Nothing here ever puts the principal token into a message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import AwareDatetime, BaseModel, ConfigDict, TypeAdapter, ValidationError

from credman import Access, Credential, CredentialInfo, Grant, Permission, Secret, Transition
from credman.errors import (
    AccessDenied,
    ConcurrentUpdate,
    CredentialError,
    CredentialUnusable,
    CredentialValidationError,
    InvalidTransition,
    NotFound,
    RefreshFailed,
    StorageError,
    TooManyAttempts,
    Unauthenticated,
)

__all__ = ["Call", "ServiceError", "access_call", "error_for"]

T = TypeVar("T")

_INFO = TypeAdapter(CredentialInfo)
_INFOS = TypeAdapter(list[CredentialInfo])
_HISTORY = TypeAdapter(list[Transition])
_GRANT = TypeAdapter(Grant)
_GRANTS = TypeAdapter(list[Grant])
_REMOVED = TypeAdapter(dict[str, bool])


class ServiceError(CredentialError):
    """The service could not be reached or answered something the client cannot read."""

    def __init__(
        self, message: str, *, status: int | None = None, credential_id: str | None = None
    ) -> None:
        super().__init__(message, credential_id=credential_id)
        self.status = status


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request to the service and the parser of its JSON answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: Mapping[str, Any] | None = None
    credential_id: str | None = None


def _path(credential_id: str, suffix: str = "") -> str:
    if not isinstance(credential_id, str) or not credential_id:
        raise CredentialValidationError("credential_id: a non-empty string", fields=("id",))
    return f"/v1/credentials/{quote(credential_id, safe='')}{suffix}"


def _reader(adapter: TypeAdapter[T], what: str) -> Callable[[Any], T]:
    def parse(data: Any) -> T:
        try:
            return adapter.validate_python(data)
        except ValidationError:
            raise ServiceError(f"the service answered a malformed {what}") from None

    return parse


class _AccessWire(BaseModel):
    """``Access`` as the server sends it (``token`` is the bare secret, when it has one)."""

    model_config = ConfigDict(extra="ignore")

    credential_id: str
    version: int
    headers: dict[str, str]
    params: dict[str, str]
    expires_at: AwareDatetime | None
    token: str | None = None
    refreshable: bool = True  # a server that does not say: asking again may help


def _access(data: Any) -> Access:
    try:
        wire = _AccessWire.model_validate(data)
    except ValidationError:
        raise ServiceError("the service answered a malformed access") from None
    return Access(
        credential_id=wire.credential_id,
        version=wire.version,
        headers=wire.headers,
        params=wire.params,
        expires_at=wire.expires_at.astimezone(UTC) if wire.expires_at else None,
        token=Secret(wire.token) if wire.token else None,
        refreshable=wire.refreshable,
    )


def access_call(
    credential_id: str, *, min_ttl: float, rejected_version: int | None = None
) -> Call[Access]:
    """``POST /v1/credentials/{id}/access``: request material, optionally past a rejected one."""
    if not 0 <= min_ttl <= 86_400:
        raise CredentialValidationError("min_ttl: 0 to 86400 seconds", fields=("min_ttl",))
    body: dict[str, Any] = {"min_ttl": math.ceil(min_ttl)}
    if rejected_version is not None:
        body["rejected_version"] = rejected_version
    path = _path(credential_id, "/access")
    return Call("POST", path, _access, body, credential_id)


def info_call(credential_id: str) -> Call[CredentialInfo]:
    """``GET /v1/credentials/{id}``."""
    return Call("GET", _path(credential_id), _reader(_INFO, "info"), None, credential_id)


def list_call() -> Call[list[CredentialInfo]]:
    """``GET /v1/credentials``: what the caller may see."""
    return Call("GET", "/v1/credentials", _reader(_INFOS, "list"))


def history_call(credential_id: str) -> Call[list[Transition]]:
    """``GET /v1/credentials/{id}/history``: transitions, oldest first."""
    path = _path(credential_id, "/history")
    return Call("GET", path, _reader(_HISTORY, "history"), None, credential_id)


def store_call(credential_id: str, credential: Credential) -> Call[CredentialInfo]:
    """``PUT /v1/credentials/{id}``: the credential as JSON, its type under ``type``."""
    if not isinstance(credential, Credential):
        raise CredentialValidationError("credential: a credman credential", fields=("credential",))
    body = {"type": credential.kind, **credential.public_fields(), **credential.secret_values()}
    return Call("PUT", _path(credential_id), _reader(_INFO, "info"), body, credential_id)


def revoke_call(credential_id: str, reason: str | None) -> Call[CredentialInfo]:
    """``POST /v1/credentials/{id}/revoke``."""
    body = {} if reason is None else {"reason": reason}
    path = _path(credential_id, "/revoke")
    return Call("POST", path, _reader(_INFO, "info"), body, credential_id)


def refresh_call(credential_id: str, *, force: bool) -> Call[CredentialInfo]:
    """``POST /v1/credentials/{id}/refresh``."""
    path = _path(credential_id, "/refresh")
    return Call("POST", path, _reader(_INFO, "info"), {"force": force}, credential_id)


def grants_call(grantee: str | None = None) -> Call[list[Grant]]:
    """``GET /v1/grants``: every grant, or one principal's (admin)."""
    path = "/v1/grants" if grantee is None else f"/v1/grants?principal={quote(grantee)}"
    return Call("GET", path, _reader(_GRANTS, "grant list"))


def grant_call(grantee: str, pattern: str, permissions: Iterable[str | Permission]) -> Call[Grant]:
    """``POST /v1/grants``: give ``grantee`` permissions on ids matching ``pattern`` (admin)."""
    body = {"principal": grantee, "pattern": pattern, "permissions": [str(p) for p in permissions]}
    return Call("POST", "/v1/grants", _reader(_GRANT, "grant"), body)


def ungrant_call(grantee: str, pattern: str) -> Call[bool]:
    """``DELETE /v1/grants``: remove a grant (admin); whether there was one."""
    query = f"principal={quote(grantee)}&pattern={quote(pattern, safe='')}"
    removed = _reader(_REMOVED, "answer")
    return Call("DELETE", f"/v1/grants?{query}", lambda data: removed(data).get("removed", False))


def _retry_after(headers: Mapping[str, str], problem: Mapping[str, Any]) -> float | None:
    value = headers.get("retry-after", problem.get("retry_after"))
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _fields(problem: Mapping[str, Any]) -> tuple[str, ...]:
    named = problem.get("fields")
    if isinstance(named, list | tuple):
        return tuple(str(name) for name in named)
    errors = problem.get("errors")  # FastAPI-style [{"loc": [...]}]
    if isinstance(errors, list):
        locs = (e.get("loc") for e in errors if isinstance(e, Mapping))
        return tuple(str(loc[-1]) for loc in locs if isinstance(loc, list | tuple) and loc)
    return ()


def _conflict(
    problem: Mapping[str, Any], detail: str, credential_id: str | None
) -> CredentialError:
    """409: which conflict, from the problem's ``error`` member (and its ``state``, ``trigger``)."""
    named = str(problem.get("error", ""))
    state = str(problem.get("state", "?"))
    if named == "InvalidTransition":
        guard = problem.get("guard")
        trigger = str(problem.get("trigger", "?"))
        return InvalidTransition(credential_id, state, trigger, str(guard) if guard else None)
    if named == "CredentialUnusable":
        return CredentialUnusable(credential_id or "?", state, detail.rpartition(": ")[2])
    return ConcurrentUpdate(detail, credential_id=credential_id)


def error_for(
    status: int,
    headers: Mapping[str, str],
    problem: Mapping[str, Any],
    credential_id: str | None = None,
) -> CredentialError:
    """The credman error a problem+json answer stands for (the server's detail kept)."""
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    if status in (400, 413, 422):
        return CredentialValidationError(
            detail, fields=_fields(problem), credential_id=credential_id
        )
    if status == 401:
        return Unauthenticated(detail, credential_id=credential_id)
    if status == 403:
        principal = str(problem.get("principal", "this client"))
        return AccessDenied(principal, str(problem.get("permission", "?")), credential_id)
    if status == 404:
        return NotFound(detail, credential_id=credential_id)
    if status in (409, 410):
        return _conflict(problem, detail, credential_id)
    if status == 502:
        permanent = problem.get("permanent") is True
        return RefreshFailed(detail, permanent=permanent, credential_id=credential_id)
    if status == 429:
        wait = _retry_after(headers, problem)
        return TooManyAttempts(detail, retry_after=1.0 if wait is None else wait)
    if status == 503:
        return StorageError(detail, credential_id=credential_id)
    return ServiceError(f"the service answered {status}: {detail}", status=status)
