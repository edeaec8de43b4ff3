"""``credman connect``: authorise (or re-authorise) an OAuth2 credential from a terminal.

The RFC 8252 native-app flow: a one-shot listener on 127.0.0.1 (ephemeral port) receives
the provider's redirect; the authorization URL is opened in a browser or, with
``--no-browser``, printed. ``--device`` uses the RFC 8628 device grant instead: it prints
the verification URI and user code and polls. Registered on the main app by
:func:`register` as ``credman connect``.
"""

from __future__ import annotations

import webbrowser
from datetime import UTC, datetime, timedelta
from typing import Annotated

import httpx
import typer

from credman.cli.context import open_manager, options
from credman.cli.output import out
from credman.cli.secret_input import read_secret
from credman.errors import CredentialValidationError, NotFound
from credman.lifecycle import OAuth2
from credman.manager import CredentialManager
from credman.oauth.device import DeviceAuthorization
from credman.oauth.discovery import discover
from credman.oauth.loopback import LoopbackRedirect
from credman.oauth.profiles import profile

__all__ = ["connect", "register"]


def _variables(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise CredentialValidationError("var: give NAME=VALUE", fields=("var",))
        values[name] = value
    return values


def _new_credential(
    profile_name: str | None,
    issuer: str | None,
    client_id: str | None,
    client_secret: str | None,
    scope: str | None,
    variables: dict[str, str],
) -> OAuth2:
    if client_id is None:
        raise CredentialValidationError(
            "client-id: required with --profile or --issuer", fields=("client_id",)
        )
    if profile_name is not None:
        scopes = scope.split() if scope else None
        return profile(profile_name).credential(
            client_id=client_id, client_secret=client_secret, variables=variables, scopes=scopes
        )
    assert issuer is not None
    with httpx.Client() as http:
        metadata = discover(http, issuer)
    return metadata.credential(client_id=client_id, client_secret=client_secret, scope=scope)


def _register(
    manager: CredentialManager, credential_id: str, credential: OAuth2, principal: str
) -> None:
    try:
        manager.info(credential_id, principal=principal)
    except NotFound:
        manager.store(credential_id, credential, principal=principal)
        return
    raise CredentialValidationError(
        f"credential {credential_id!r} exists: run connect without --profile/--issuer "
        "to re-authorise it",
        fields=("credential_id",),
    )


def _show_device(authorization: DeviceAuthorization) -> None:
    where = authorization.verification_uri_complete or authorization.verification_uri
    print(f"open {where} and enter the code {authorization.user_code}", flush=True)
    print(f"user code: {authorization.user_code}", flush=True)


def _browser_flow(
    manager: CredentialManager,
    credential_id: str,
    principal: str,
    *,
    scope: str | None,
    open_browser: bool,
    timeout: float,
) -> str:
    with LoopbackRedirect() as listener:
        session = manager.connect(
            credential_id, redirect_uri=listener.redirect_uri, scope=scope, principal=principal
        )
        opened = open_browser and webbrowser.open(session.authorization_url)
        prefix = "if the browser did not open, visit" if opened else "visit"
        print(f"{prefix}: {session.authorization_url}", flush=True)
        params = listener.wait(timeout)
    info = manager.complete_connect(
        state=params.get("state", ""),
        code=params.get("code"),
        error=params.get("error"),
        redirect_uri=listener.redirect_uri,
        principal=principal,
    )
    return f"connected {credential_id!r}: {info.state} (version {info.version})"


def connect(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    profile_name: Annotated[
        str | None, typer.Option("--profile", help="Register ID from a provider profile.")
    ] = None,
    issuer: Annotated[
        str | None, typer.Option("--issuer", help="Register ID from OIDC discovery.")
    ] = None,
    client_id: Annotated[str | None, typer.Option("--client-id")] = None,
    client_secret_env: Annotated[
        str | None,
        typer.Option("--client-secret-env", metavar="VAR", help="client secret from env var."),
    ] = None,
    client_secret_file: Annotated[
        str | None,
        typer.Option("--client-secret-file", metavar="PATH", help="client secret file, - stdin."),
    ] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="Profile variable NAME=VALUE (tenant...).")
    ] = None,
    scope: Annotated[str | None, typer.Option("--scope", help="Scopes to ask for.")] = None,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL instead of opening it.")
    ] = False,
    device: Annotated[bool, typer.Option("--device", help="Use the device grant.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the authorization.")
    ] = 300.0,
) -> None:
    """Connect (authorise) an OAuth2 credential, or re-authorise it."""
    if profile_name is not None and issuer is not None:
        raise CredentialValidationError("give --profile or --issuer, not both")
    principal = options(ctx).principal
    secret = read_secret("client-secret", client_secret_env, client_secret_file, required=False)
    with open_manager(ctx) as manager:
        if profile_name is not None or issuer is not None:
            credential = _new_credential(
                profile_name, issuer, client_id, secret, scope, _variables(var or [])
            )
            _register(manager, credential_id, credential, principal)
        if device:
            deadline = datetime.now(UTC) + timedelta(seconds=timeout)
            info = manager.connect_device(
                credential_id, principal=principal, show=_show_device, deadline=deadline
            )
            message = f"connected {credential_id!r}: {info.state} (version {info.version})"
        else:
            message = _browser_flow(
                manager,
                credential_id,
                principal,
                scope=scope,
                open_browser=not no_browser,
                timeout=timeout,
            )
    out.print(message, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``connect`` to the root app."""
    app.command("connect")(connect)
