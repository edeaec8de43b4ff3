"""``credman add TYPE ID ...``: store a credential (secrets from env vars, files or stdin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from pydantic import ValidationError

from credman.cli.context import open_manager, options
from credman.cli.output import out
from credman.cli.secret_input import read_secret, secret_options
from credman.errors import CredentialValidationError
from credman.lifecycle import (
    ApiKey,
    BasicAuth,
    BearerToken,
    Credential,
    JWTBearer,
    OAuth2,
    Probe,
)

__all__ = ["ProbeExpect", "ProbeUrl", "add_app", "probe_of", "register"]

add_app = typer.Typer(help="Store a credential (secrets from env vars, files or stdin).")


ProbeUrl = Annotated[
    str | None,
    typer.Option("--probe-url", metavar="URL", help="A request that shows the credential works."),
]
ProbeExpect = Annotated[
    str,
    typer.Option(
        "--probe-expect", metavar="CODES", help="Statuses that mean it works, e.g. 200,204."
    ),
]


def probe_of(url: str | None, expect: str) -> Probe | None:
    """The probe ``--probe-url``/``--probe-expect`` describe, or None."""
    if url is None:
        return None
    codes = [code.strip() for code in expect.split(",") if code.strip()]
    if not all(code.isdigit() and len(code) == 3 for code in codes):
        raise CredentialValidationError(
            "probe-expect: comma-separated HTTP status codes, e.g. 200,204", fields=("probe",)
        )
    try:
        return Probe(url=url, expect=tuple(int(code) for code in codes))
    except ValidationError:  # the URL; the message never echoes the input
        message = "probe-url: an http(s) URL with a host, e.g. https://api.example/me"
        raise CredentialValidationError(message, fields=("probe",)) from None


Test = Annotated[
    bool,
    typer.Option(
        "--test",
        help="Before storing: a live token request (OAuth2, JWT) and the probe, if any.",
    ),
]


def _store(
    ctx: typer.Context, credential_id: str, build: Callable[[], Credential], test: bool
) -> None:
    """Store a new credential; an existing id is refused (``update`` changes it)."""
    credential = build()
    with open_manager(ctx) as manager:
        info = manager.store(
            credential_id,
            credential,
            principal=options(ctx).principal,
            create_only=True,
            test=test,
        )
    tested = ", tested" if test else ""
    out.print(
        f"stored {info.type} {credential_id!r}: {info.state.value} (version {info.version}{tested})"
    )


OAUTH_SECRET_ENV, OAUTH_SECRET_FILE = secret_options("client-secret")
ACCESS_ENV, ACCESS_FILE = secret_options("access-token")
REFRESH_ENV, REFRESH_FILE = secret_options("refresh-token")


@add_app.command("oauth2")
def add_oauth2(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    token_url: Annotated[str, typer.Option(help="The provider's token endpoint.")],
    client_id: Annotated[str, typer.Option(help="OAuth client id.")],
    scope: Annotated[str | None, typer.Option(help="Space-separated scopes.")] = None,
    expires_in: Annotated[int | None, typer.Option(help="Access token lifetime (s).")] = None,
    grant_type: Annotated[str, typer.Option(help="refresh_token|client_credentials")] = (
        "refresh_token"
    ),
    client_auth: Annotated[
        str, typer.Option(help="client_secret_post|client_secret_basic")
    ] = "client_secret_post",
    client_secret_env: Annotated[str | None, OAUTH_SECRET_ENV] = None,
    client_secret_file: Annotated[str | None, OAUTH_SECRET_FILE] = None,
    access_token_env: Annotated[str | None, ACCESS_ENV] = None,
    access_token_file: Annotated[str | None, ACCESS_FILE] = None,
    refresh_token_env: Annotated[str | None, REFRESH_ENV] = None,
    refresh_token_file: Annotated[str | None, REFRESH_FILE] = None,
    probe_url: ProbeUrl = None,
    probe_expect: ProbeExpect = "200",
    test: Test = False,
) -> None:
    """Store OAuth2 tokens (refresh-token or client-credentials grant)."""
    _store(
        ctx,
        credential_id,
        lambda: OAuth2(
            probe=probe_of(probe_url, probe_expect),
            token_url=token_url,
            client_id=client_id,
            scope=scope,
            expires_in=expires_in,
            grant_type=grant_type,
            client_auth=client_auth,
            client_secret=read_secret(
                "client-secret", client_secret_env, client_secret_file, required=False
            ),
            access_token=read_secret(
                "access-token", access_token_env, access_token_file, required=False
            ),
            refresh_token=read_secret(
                "refresh-token", refresh_token_env, refresh_token_file, required=False
            ),
        ),
        test,
    )


KEY_ENV, KEY_FILE = secret_options("api-key")


@add_app.command("api-key")
def add_api_key(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    api_key_env: Annotated[str | None, KEY_ENV] = None,
    api_key_file: Annotated[str | None, KEY_FILE] = None,
    header: Annotated[str | None, typer.Option(help="Header name (default X-API-Key).")] = None,
    query_param: Annotated[str | None, typer.Option(help="Send as this query parameter.")] = None,
    prefix: Annotated[str, typer.Option(help="Prefix, e.g. 'Bearer '.")] = "",
    probe_url: ProbeUrl = None,
    probe_expect: ProbeExpect = "200",
    test: Test = False,
) -> None:
    """Store an API key sent in a header or a query parameter."""
    _store(
        ctx,
        credential_id,
        lambda: ApiKey(
            probe=probe_of(probe_url, probe_expect),
            key=read_secret("api-key", api_key_env, api_key_file, required=True),
            header=header,
            query_param=query_param,
            prefix=prefix,
        ),
        test,
    )


PASSWORD_ENV, PASSWORD_FILE = secret_options("password")


@add_app.command("basic")
def add_basic(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    username: Annotated[str, typer.Option(help="User name.")],
    password_env: Annotated[str | None, PASSWORD_ENV] = None,
    password_file: Annotated[str | None, PASSWORD_FILE] = None,
    probe_url: ProbeUrl = None,
    probe_expect: ProbeExpect = "200",
    test: Test = False,
) -> None:
    """Store HTTP Basic credentials."""
    _store(
        ctx,
        credential_id,
        lambda: BasicAuth(
            probe=probe_of(probe_url, probe_expect),
            username=username,
            password=read_secret("password", password_env, password_file, required=True),
        ),
        test,
    )


TOKEN_ENV, TOKEN_FILE = secret_options("token")


@add_app.command("bearer")
def add_bearer(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    token_env: Annotated[str | None, TOKEN_ENV] = None,
    token_file: Annotated[str | None, TOKEN_FILE] = None,
    expires_in: Annotated[int | None, typer.Option(help="Lifetime in seconds.")] = None,
    probe_url: ProbeUrl = None,
    probe_expect: ProbeExpect = "200",
    test: Test = False,
) -> None:
    """Store a static bearer token."""
    _store(
        ctx,
        credential_id,
        lambda: BearerToken(
            probe=probe_of(probe_url, probe_expect),
            token=read_secret("token", token_env, token_file, required=True),
            expires_in=expires_in,
        ),
        test,
    )


PRIVATE_KEY_ENV, PRIVATE_KEY_FILE = secret_options("private-key")


@add_app.command("jwt")
def add_jwt(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    token_url: Annotated[str, typer.Option(help="The provider's token endpoint.")],
    issuer: Annotated[str, typer.Option(help="Assertion issuer (iss).")],
    subject: Annotated[str, typer.Option(help="Assertion subject (sub).")],
    audience: Annotated[str, typer.Option(help="Assertion audience (aud).")],
    private_key_env: Annotated[str | None, PRIVATE_KEY_ENV] = None,
    private_key_file: Annotated[str | None, PRIVATE_KEY_FILE] = None,
    algorithm: Annotated[str, typer.Option(help="Signing algorithm.")] = "RS256",
    key_id: Annotated[str | None, typer.Option(help="Key id (kid) header.")] = None,
    scope: Annotated[str | None, typer.Option(help="Space-separated scopes.")] = None,
    probe_url: ProbeUrl = None,
    probe_expect: ProbeExpect = "200",
    test: Test = False,
) -> None:
    """Store an RFC 7523 JWT bearer assertion grant."""
    _store(
        ctx,
        credential_id,
        lambda: JWTBearer(
            probe=probe_of(probe_url, probe_expect),
            token_url=token_url,
            issuer=issuer,
            subject=subject,
            audience=audience,
            private_key=read_secret(
                "private-key", private_key_env, private_key_file, required=True
            ),
            algorithm=algorithm,
            key_id=key_id,
            scope=scope,
        ),
        test,
    )


def register(app: typer.Typer) -> None:
    """Add the ``add`` group to the root app."""
    app.add_typer(add_app, name="add")
