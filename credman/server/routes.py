"""The ``/v1`` routes: authenticate the caller, parse the input, call the facade, answer JSON.

Handlers are plain functions (FastAPI runs them in its thread pool) and do no work of their
own beyond shaping input and output: permissions, validation, audit and refresh all happen
in :class:`~credman.CredentialManager`. Credential ids may contain ``/``, so the id is a
``path`` parameter and the routes with a suffix are declared before the bare one.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from credman.errors import CredentialValidationError
from credman.lifecycle import CREDENTIAL_TYPES
from credman.manager import CredentialManager
from credman.models import Access
from credman.server.problems import PROBLEM_JSON

__all__ = ["router"]

NO_STORE = {"Cache-Control": "no-store"}
_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (401, 403, 404, 409, 413, 422, 429, 503)
}
router = APIRouter(prefix="/v1", responses=_ERRORS)


def manager_of(request: Request) -> CredentialManager:
    """The manager the app serves."""
    return request.app.state.manager  # type: ignore[no-any-return]


async def caller(request: Request) -> str:
    """The authenticated principal of the request (``Authorization: Bearer <token>``)."""
    header = request.headers.get("authorization")
    token: str | None = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else header
    source = request.client.host if request.client else "unix"
    manager = manager_of(request)
    name = await run_in_threadpool(manager.authenticate, token, source=source)
    request.state.principal = name
    return name


Caller = Annotated[str, Depends(caller)]
Manager = Annotated[CredentialManager, Depends(manager_of)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccessRequest(_Body):
    """What a component asks for with ``POST .../access``."""

    min_ttl: int | None = Field(default=None, ge=0, le=86400)
    rejected_version: int | None = Field(default=None, ge=1)


class AccessOut(BaseModel):
    """Request material for one credential: what to put on the request, until when."""

    credential_id: str
    version: int
    headers: dict[str, str]
    params: dict[str, str]
    expires_at: datetime | None
    token: str | None = None
    refreshable: bool = False


class GrantRequest(_Body):
    """A grant to add."""

    principal: str = Field(max_length=128)
    pattern: str = Field(max_length=128)
    permissions: list[str] = Field(min_length=1, max_length=8)


class RefreshRequest(_Body):
    """``force``: refresh even when not due."""

    force: bool = False


class RevokeRequest(_Body):
    """Why the credential is revoked."""

    reason: str | None = Field(default=None, max_length=512)


def jsonable(value: Any) -> Any:
    """A frozen dataclass (or a list of them) as JSON-ready data."""
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set):
        return sorted(str(item) for item in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@router.post(
    "/credentials/{credential_id:path}/access",
    response_model=AccessOut,
    summary="Request material (use)",
)
def access(
    credential_id: str,
    principal: Caller,
    manager: Manager,
    response: Response,
    body: Annotated[AccessRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Headers and query parameters to authenticate a request with the credential.

    With ``rejected_version`` (the resource answered 401 to that version) the server
    refreshes once, unless the stored version has already moved on.
    """
    body = body or AccessRequest()
    response.headers.update(NO_STORE)
    if body.rejected_version is not None:
        manager.renew(credential_id, principal=principal, rejected_version=body.rejected_version)
    access = manager.access(credential_id, principal=principal, min_ttl=body.min_ttl or 0)
    return _access_json(access)


def _access_json(access: Access) -> dict[str, Any]:
    return {
        "credential_id": access.credential_id,
        "version": access.version,
        "headers": dict(access.headers),
        "params": dict(access.params),
        "expires_at": access.expires_at.isoformat() if access.expires_at else None,
        "token": access.token.reveal() if access.token is not None else None,
        "refreshable": access.refreshable,
    }


@router.get("/credentials", summary="List the credentials the caller may see")
def list_credentials(principal: Caller, manager: Manager) -> list[dict[str, Any]]:
    """Information on every credential the caller holds a grant on (no secrets)."""
    return jsonable(manager.list(principal=principal))  # type: ignore[no-any-return]


@router.get("/credentials/{credential_id:path}/history", summary="Transitions, oldest first")
def history(credential_id: str, principal: Caller, manager: Manager) -> list[dict[str, Any]]:
    """Every lifecycle transition of the credential."""
    return jsonable(manager.history(credential_id, principal=principal))  # type: ignore[no-any-return]


@router.post("/credentials/{credential_id:path}/refresh", summary="Refresh now (manage)")
def refresh(
    credential_id: str,
    principal: Caller,
    manager: Manager,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Refresh the credential (when due, or always with ``force``)."""
    force = (body or RefreshRequest()).force
    return jsonable(manager.refresh(credential_id, principal=principal, force=force))  # type: ignore[no-any-return]


@router.post("/credentials/{credential_id:path}/revoke", summary="Revoke for good (manage)")
def revoke(
    credential_id: str,
    principal: Caller,
    manager: Manager,
    body: Annotated[RevokeRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Withdraw the credential: its material is destroyed, its history kept."""
    reason = (body or RevokeRequest()).reason
    return jsonable(manager.revoke(credential_id, principal=principal, reason=reason))  # type: ignore[no-any-return]


@router.get("/credentials/{credential_id:path}/secret", summary="The whole credential (read)")
def secret(
    credential_id: str, principal: Caller, manager: Manager, response: Response
) -> dict[str, Any]:
    """Every field of the credential, secrets included (export, migration); never cached."""
    credential = manager.get(credential_id, principal=principal)
    response.headers.update(NO_STORE)
    fields = credential.model_dump(
        mode="json", exclude_none=True, context={"reveal_secrets": True}
    )  # this route exists to carry the secrets (read permission); dumps mask them otherwise
    return {"type": credential.kind, **fields}


@router.get("/credentials/{credential_id:path}", summary="Credential information")
def info(credential_id: str, principal: Caller, manager: Manager) -> dict[str, Any]:
    """State, version, expiry and metadata; no secret values."""
    return jsonable(manager.info(credential_id, principal=principal))  # type: ignore[no-any-return]


@router.put("/credentials/{credential_id:path}", summary="Store or update (manage)")
def store(
    credential_id: str,
    principal: Caller,
    manager: Manager,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    """Store the credential given as JSON (``type`` is one of the credential types)."""
    data = dict(body)
    kind = data.pop("type", None)
    reason = data.pop("reason", None)
    cls = CREDENTIAL_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        names = ", ".join(sorted(CREDENTIAL_TYPES))
        raise CredentialValidationError(f"type: one of {names}", fields=("type",))
    credential = cls(**data)
    return jsonable(  # type: ignore[no-any-return]
        manager.store(credential_id, credential, principal=principal, reason=reason)
    )


@router.get("/grants", summary="Grants in force")
def grants(
    principal: Caller,
    manager: Manager,
    grantee: Annotated[str | None, Query(alias="principal", max_length=128)] = None,
) -> list[dict[str, Any]]:
    """Every grant, or those of one principal."""
    return jsonable(manager.grants(principal=principal, grantee=grantee))  # type: ignore[no-any-return]


@router.post("/grants", summary="Add a grant (admin)")
def add_grant(body: GrantRequest, principal: Caller, manager: Manager) -> dict[str, Any]:
    """Give a principal permissions on credentials matching a pattern."""
    grant = manager.grant(body.principal, body.pattern, body.permissions, principal=principal)
    return jsonable(grant)  # type: ignore[no-any-return]


@router.delete("/grants", summary="Remove a grant (admin)")
def remove_grant(
    principal: Caller,
    manager: Manager,
    grantee: Annotated[str, Query(alias="principal", max_length=128)],
    pattern: Annotated[str, Query(max_length=128)],
) -> dict[str, Any]:
    """Remove a principal's grant on a pattern; ``removed`` says whether there was one."""
    return {"removed": manager.revoke_grant(grantee, pattern, principal=principal)}


@router.get("/audit", summary="Audit events, oldest first (audit)")
def audit(
    principal: Caller,
    manager: Manager,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
    outcome: Annotated[str | None, Query(max_length=16)] = None,
    subject: Annotated[str | None, Query(alias="principal", max_length=128)] = None,
    credential_id: Annotated[str | None, Query(max_length=128)] = None,
) -> list[dict[str, Any]]:
    """The newest audit events matching the filters."""
    events = manager.audit_events(
        principal=principal,
        limit=limit,
        outcome=outcome,
        subject=subject,
        credential_id=credential_id,
    )
    return jsonable(events)  # type: ignore[no-any-return]


@router.get("/audit/verify", summary="Verify the audit chain (audit)")
def audit_verify(principal: Caller, manager: Manager) -> dict[str, Any]:
    """Recompute the chain; the report names the first bad row."""
    manager.audit_events(principal=principal, limit=1)  # the audit permission check
    return jsonable(manager.verify_audit())  # type: ignore[no-any-return]


@router.get("/audit/head", summary="The chain's head, for anchoring (audit)")
def audit_head(principal: Caller, manager: Manager) -> dict[str, Any]:
    """The last sequence number and hash."""
    manager.audit_events(principal=principal, limit=1)  # the audit permission check
    seq, digest = manager.audit_head()
    return {"seq": seq, "hash": digest}
