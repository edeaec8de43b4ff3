"""The ``credman principal`` commands: add, list, rotate and revoke component identities.

``add`` and ``rotate`` print the new token once, alone on the last line of stdout (so
``credman principal add etl | tail -1`` captures it); it is never stored or logged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from credman import cli
from credman.principals import PrincipalInfo, parse_duration

__all__ = ["principal_app"]

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
    cli.err.print(f"principal {info.name}: token id {info.token_id}, expires {expiry}")
    cli.out.print(token, markup=False)


@principal_app.command("add")
def add(
    ctx: typer.Context,
    name: Name,
    expires_in: ExpiresIn = None,
    description: Annotated[str | None, typer.Option(help="What the principal is for.")] = None,
) -> None:
    """Create a principal; its token is printed once, alone on the last line."""
    lifetime = parse_duration(expires_in) if expires_in is not None else None
    with cli._manager(ctx) as manager:
        principal = cli._options(ctx).principal
        info, token = manager.add_principal(
            name, expires_in=lifetime, description=description, principal=principal
        )
    _print_token(info, token)


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


@principal_app.command("list")
def list_principals(ctx: typer.Context) -> None:
    """Every principal, with its token's public id, expiry and last use."""
    with cli._manager(ctx) as manager:
        infos = manager.list_principals(principal=cli._options(ctx).principal)
    table = Table("name", "token id", "expires", "revoked", "last used", "description")
    for info in infos:
        table.add_row(
            info.name,
            info.token_id,
            _when(info.expires_at),
            _when(info.revoked_at),
            _when(info.last_used_at),
            info.description or "",
        )
    cli.out.print(table)


@principal_app.command("rotate")
def rotate(ctx: typer.Context, name: Name, expires_in: ExpiresIn = None) -> None:
    """A new token for NAME (printed once); the old one stops working at once."""
    lifetime = parse_duration(expires_in) if expires_in is not None else None
    with cli._manager(ctx) as manager:
        info, token = manager.rotate_principal(
            name, expires_in=lifetime, principal=cli._options(ctx).principal
        )
    _print_token(info, token)


@principal_app.command("revoke")
def revoke(ctx: typer.Context, name: Name) -> None:
    """Refuse NAME's token from the next request on."""
    with cli._manager(ctx) as manager:
        manager.revoke_principal(name, principal=cli._options(ctx).principal)
    cli.out.print(f"revoked principal {name}")
