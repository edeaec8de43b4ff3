"""``credman grant``, ``ungrant`` and ``grants``: who may do what on which credentials."""

from __future__ import annotations

from typing import Annotated

import typer

from credman.cli.context import open_manager, options
from credman.cli.output import JsonFlag, out, print_json, table, when

__all__ = ["register"]


def grant(
    ctx: typer.Context,
    grantee: Annotated[str, typer.Argument(metavar="PRINCIPAL")],
    pattern: Annotated[str, typer.Argument(metavar="PATTERN")],
    permissions: Annotated[list[str], typer.Argument(metavar="PERMISSION")],
) -> None:
    """Grant permissions (use, manage, audit, admin) on ids matching PATTERN."""
    with open_manager(ctx) as manager:
        result = manager.grant(grantee, pattern, permissions, principal=options(ctx).principal)
    out.print(f"{grantee} may {','.join(sorted(result.permissions))} on {pattern!r}")


def ungrant(
    ctx: typer.Context,
    grantee: Annotated[str, typer.Argument(metavar="PRINCIPAL")],
    pattern: Annotated[str, typer.Argument(metavar="PATTERN")],
) -> None:
    """Remove a principal's grant on PATTERN."""
    with open_manager(ctx) as manager:
        removed = manager.revoke_grant(grantee, pattern, principal=options(ctx).principal)
    out.print(f"removed {grantee} on {pattern!r}" if removed else "no such grant")


def grants(
    ctx: typer.Context,
    grantee: Annotated[str | None, typer.Argument(metavar="[PRINCIPAL]")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The grants in force."""
    with open_manager(ctx) as manager:
        rows = manager.grants(principal=options(ctx).principal, grantee=grantee)
    if as_json:
        print_json(
            [
                {
                    "principal": row.principal,
                    "pattern": row.pattern,
                    "permissions": sorted(row.permissions),
                    "created_by": row.created_by,
                    "created_at": row.created_at,
                }
                for row in rows
            ]
        )
        return
    shown = table("principal", "pattern", "permissions", "granted by", "at")
    for row in rows:
        shown.add_row(
            row.principal,
            row.pattern,
            ",".join(sorted(row.permissions)),
            row.created_by,
            when(row.created_at)[:10],
        )
    out.print(shown)


def register(app: typer.Typer) -> None:
    """Add the grant commands to the root app."""
    app.command()(grant)
    app.command()(ungrant)
    app.command()(grants)
