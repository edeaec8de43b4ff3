"""Errors as RFC 9457 problem details (``application/problem+json``), never a traceback.

Each ``CredentialError`` maps to one status. A refusal says the same thing whether or not
the credential exists (no existence oracle); bodies name fields, never echo values.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException

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

__all__ = ["PROBLEM_JSON", "ProblemResponse", "problem", "problem_for", "register"]

PROBLEM_JSON = "application/problem+json"
_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    422: "Invalid input",
    429: "Too many failed authentications",
    500: "Internal error",
    502: "Provider failure",
    503: "Service unavailable",
}
_DENIED = "the caller may not do this to this credential, or it does not exist"


class ProblemResponse(JSONResponse):
    """A JSON response with the problem media type."""

    media_type = PROBLEM_JSON


def problem(status: int, detail: str, **extra: Any) -> ProblemResponse:
    """A problem response of ``status`` with ``detail`` and any ``extra`` members."""
    body = {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status}
    body |= {"detail": detail, **extra}
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="credman"'
    return ProblemResponse(body, status_code=status, headers=headers)


def problem_for(exc: CredentialError) -> ProblemResponse:
    """The problem response for a credman error."""
    if isinstance(exc, TooManyAttempts):
        response = problem(429, "too many failed authentications; retry later")
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    if isinstance(exc, Unauthenticated):
        return problem(401, "a valid principal token is required (Authorization: Bearer)")
    if isinstance(exc, AccessDenied):
        return problem(403, _DENIED)
    if isinstance(exc, NotFound):
        return problem(404, str(exc))
    if isinstance(exc, CredentialValidationError):
        return problem(422, str(exc), fields=list(exc.fields))
    if isinstance(exc, InvalidTransition):
        words = {"state": exc.state, "trigger": exc.trigger, "guard": exc.guard}
        return problem(409, str(exc), error=_name(exc), **words)
    if isinstance(exc, CredentialUnusable):
        return problem(409, str(exc), error=_name(exc), state=exc.state)
    if isinstance(exc, ConcurrentUpdate):
        return problem(409, str(exc), error=_name(exc))
    if isinstance(exc, RefreshFailed):
        return problem(502, str(exc), permanent=exc.permanent)
    if isinstance(exc, StorageError):
        return problem(503, "the credential store is unavailable; retry later")
    logger.error("request failed: {}", type(exc).__name__)
    return problem(500, f"the request failed ({type(exc).__name__})")


def _name(exc: CredentialError) -> str:
    """The ``error`` member: which 409 this is, so a client need not parse ``detail``."""
    return type(exc).__name__


def _validation(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    fields = sorted({_field(error.get("loc", ())) for error in exc.errors()})
    return problem(422, f"invalid input: {', '.join(fields)}", fields=fields)


def _field(location: Any) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _http(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, str(exc.detail))


def _credential(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, CredentialError)
    return problem_for(exc)


def _unexpected(_: Request, exc: Exception) -> ProblemResponse:
    logger.error("unexpected error: {}", type(exc).__name__)
    return problem(500, "internal error")


def register(app: Any) -> None:
    """Install the handlers on a FastAPI app."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(CredentialError, _credential)
    app.add_exception_handler(Exception, _unexpected)
