"""``credman principal add|list|rotate|revoke``: component identities and their tokens.

``add`` and ``rotate`` print the new token once, alone on stdout's last line (so
``credman principal add etl | tail -1`` captures it); it is never stored or logged.
Registered on the root app by :func:`register` as ``credman principal``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from credman.cli.context import open_manager, options
from credman.cli.output import err, out, table, when
from credman.principals import PrincipalInfo, parse_duration

__all__ = ["principal_app", "register"]

principal_app = typer.Typer(
    help="Component identities and their tokens: add, list, rotate, revoke.",
    no_args_is_help=True,
)
Name = Annotated[str, typer.Argument(metavar="NAME", help="The principal's name.")]
ExpiresIn = Annotated[
    str | None,
    typer.Option("--expires-in", metavar="DURATION", help="Token lifetime: 90d, 12h, 30m."),
]


def _print_token(info: PrincipalInfo, token: str) -> None:
    expiry = info.expires_at.isoformat() if info.expires_at else "never"
    err.print(f"principal {info.name}: token id {info.token_id}, expires {expiry}", markup=False)
    out.print(token, markup=False)


@principal_app.command("add")
def add(
    ctx: typer.Context,
    name: Name,
    expires_in: ExpiresIn = None,
    description: Annotated[
        str | None, typer.Option(metavar="TEXT", help="What the principal is for.")
    ] = None,
) -> None:
    """Create a principal; its token is printed once, alone on the last line."""
    lifetime = parse_duration(expires_in) if expires_in is not None else None
    with open_manager(ctx) as manager:
        info, token = manager.add_principal(
            name, expires_in=lifetime, description=description, principal=options(ctx).principal
        )
    _print_token(info, token)


@principal_app.command("list")
def list_principals(ctx: typer.Context) -> None:
    """Every principal, with its token's public id, expiry and last use."""
    with open_manager(ctx) as manager:
        infos = manager.list_principals(principal=options(ctx).principal)
    rows = table("name", "token id", "expires", "revoked", "last used", "description")
    for info in infos:
        rows.add_row(
            info.name,
            info.token_id,
            when(info.expires_at),
            when(info.revoked_at),
            when(info.last_used_at),
            info.description or "",
        )
    out.print(rows)


@principal_app.command("rotate")
def rotate(ctx: typer.Context, name: Name, expires_in: ExpiresIn = None) -> None:
    """A new token for NAME (printed once); the old one stops working at once."""
    lifetime = parse_duration(expires_in) if expires_in is not None else None
    with open_manager(ctx) as manager:
        info, token = manager.rotate_principal(
            name, expires_in=lifetime, principal=options(ctx).principal
        )
    _print_token(info, token)


@principal_app.command("revoke")
def revoke(ctx: typer.Context, name: Name) -> None:
    """Refuse NAME's token from the next request on."""
    with open_manager(ctx) as manager:
        manager.revoke_principal(name, principal=options(ctx).principal)
    out.print(f"revoked principal {name}")


def register(app: typer.Typer) -> None:
    """Add the ``principal`` group to the root app."""
    app.add_typer(principal_app, name="principal")
