"""Connect over HTTP: ``POST /v1/credentials/{id}/connect`` and the provider's callback.

The callback is reached by the user's browser, which carries no bearer token: the state is
the authentication, and the connect completes as the principal that opened the session
(:meth:`~credman.CredentialManager.complete_callback`). It answers a small HTML page, or,
when the connect was started with an allowed ``return_to``, a 303 to it with only
``credman_connect=ok|error`` and ``credential_id``. Nothing it answers holds the token, the
state, the code or the provider's error description; every answer is ``no-store``, sends
no referrer and allows no script, style, frame or form.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from credman import ConnectOutcome
from credman.errors import AuthorizationFailed, CredentialError
from credman.server.problems import PROBLEM_JSON, problem, problem_for
from credman.server.routes import NO_STORE, Caller, Manager, manager_of
from credman.server.settings import ServerSettings
from credman.server.urls import allowed_return_to, with_query

__all__ = ["CALLBACK_PATH", "callback_uri", "router"]

CALLBACK_PATH = "/v1/oauth/callback"
_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_PAGE_HEADERS = {
    **NO_STORE,
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_BAD_CALLBACK = frozenset(
    {
        "invalid_state",
        "state_reused",
        "session_expired",
        "principal_mismatch",
        "redirect_uri_mismatch",
        "invalid_callback",
    }
)
_PROVIDER_TROUBLE = frozenset({"server_error", "temporarily_unavailable"})
_WHY = {
    "invalid_state": "This link is not from a connect in progress, or the connect expired.",
    "state_reused": "This connect was already completed or refused.",
    "session_expired": "The connect was not finished within 10 minutes and expired.",
    "redirect_uri_mismatch": "The connect was started for another callback address.",
    "invalid_callback": "The provider's answer was incomplete.",
    "access_denied": "Access was denied at the provider.",
}
router = APIRouter(prefix="/v1")


class ConnectRequest(BaseModel):
    """``scope`` replaces the credential's for this connect; ``return_to`` (allow-listed) is
    where the browser goes once the callback is done."""

    model_config = ConfigDict(extra="forbid")

    scope: str | None = Field(default=None, min_length=1, max_length=2048)
    return_to: str | None = Field(default=None, min_length=1, max_length=2048)


class ConnectOut(BaseModel):
    """Where to send the user, before when, and the callback the provider must allow."""

    credential_id: str
    authorization_url: str
    redirect_uri: str
    expires_at: datetime


def callback_uri(settings: ServerSettings) -> str | None:
    """The redirect URI of connects over HTTP, or None when ``public_url`` is not set."""
    if settings.public_url is None:
        return None
    return settings.public_url.rstrip("/") + CALLBACK_PATH


def _settings(request: Request) -> ServerSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


_NOT_CONFIGURED = (
    "connect over HTTP is not configured: set [server] public_url (CREDMAN_PUBLIC_URL) to "
    "the service's public https base URL"
)


@router.post(
    "/credentials/{credential_id:path}/connect",
    response_model=ConnectOut,
    summary="Start a connect: where to send the user (manage)",
    responses={status: _PROBLEM for status in (400, 501)},
)
def connect(
    credential_id: str,
    principal: Caller,
    manager: Manager,
    request: Request,
    response: Response,
    body: Annotated[ConnectRequest | None, Body()] = None,
) -> Any:
    """Open a connect session (authorization code + PKCE); the callback comes back to
    ``public_url`` + ``/v1/oauth/callback``. A ``return_to`` outside the allow-list is a 400."""
    body = body or ConnectRequest()
    settings = _settings(request)
    redirect_uri = callback_uri(settings)
    if redirect_uri is None:
        return problem(501, _NOT_CONFIGURED)
    return_to = None
    if body.return_to is not None:
        return_to = allowed_return_to(body.return_to, settings.return_to)
        if return_to is None:
            detail = "return_to: not under any URL of the service's allow-list ([server] return_to)"
            return problem(400, detail, fields=["return_to"])
    session = manager.connect(
        credential_id,
        redirect_uri=redirect_uri,
        scope=body.scope,
        principal=principal,
        return_to=return_to,
    )
    response.headers.update(NO_STORE)
    return {
        "credential_id": session.credential_id,
        "authorization_url": session.authorization_url,
        "redirect_uri": session.redirect_uri,
        "expires_at": session.expires_at,
    }


@router.get(
    "/oauth/callback",
    summary="The provider's redirect after consent (no bearer token: the state authenticates)",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {}}, "description": "connected (an HTML page)"},
        303: {"description": "to the connect's return_to, with credman_connect=ok|error"},
        400: {"content": {"text/html": {}}, "description": "refused: bad, replayed or expired"},
        502: {"content": {"text/html": {}}, "description": "the provider failed"},
    },
)
def oauth_callback(request: Request) -> Response:
    """Complete the connect the state names, as the principal that started it."""
    redirect_uri = callback_uri(_settings(request))
    if redirect_uri is None:
        return _page(501, "Not configured", "This service does not accept OAuth callbacks.")
    pairs = request.query_params.multi_items()
    params = dict(pairs)
    if len(params) != len(pairs):
        return _page(400, "Not connected", "The callback repeats a parameter; nothing changed.")
    try:
        outcome = manager_of(request).complete_callback(
            state=params.get("state", ""),
            code=params.get("code"),
            redirect_uri=redirect_uri,
            error=params.get("error"),
        )
    except CredentialError as exc:  # the store failed before any session was found
        return _page(problem_for(exc).status_code, "Not connected", "Try again later.")
    return _answer(outcome, provider_error="error" in params)


def _answer(outcome: ConnectOutcome, *, provider_error: bool) -> Response:
    if outcome.return_to is not None and outcome.credential_id is not None:
        result = {"credman_connect": "ok" if outcome.ok else "error"}
        location = with_query(outcome.return_to, result | {"credential_id": outcome.credential_id})
        return Response(status_code=303, headers=_PAGE_HEADERS | {"Location": location})
    if outcome.failure is None:
        text = f"Credential {outcome.credential_id} is connected. You can close this window."
        return _page(200, "Connected", text)
    status, why = _refusal(outcome.failure, provider_error=provider_error)
    return _page(status, "Not connected", f"{why} Nothing changed; start the connect again.")


def _refusal(failure: CredentialError, *, provider_error: bool) -> tuple[int, str]:
    """The status and the sentence for a refused callback."""
    if not isinstance(failure, AuthorizationFailed):
        return problem_for(failure).status_code, "The connect could not be completed."
    code = failure.error_code
    why = _WHY.get(code, f"The provider refused ({code[:64]}).")
    if code in _BAD_CALLBACK:
        return 400, why
    if provider_error:
        return (502 if code in _PROVIDER_TROUBLE else 400), why
    return 502, f"The provider did not accept the authorization ({code[:64]})."


def _page(status: int, title: str, text: str) -> Response:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>credman: {html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return Response(body, status_code=status, media_type="text/html", headers=_PAGE_HEADERS)
