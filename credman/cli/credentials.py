"""Commands on one credential or the list of them: status, history, list, token, refresh,
test, revoke."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from credman.cli.context import open_manager, options
from credman.cli.output import out, when
from credman.errors import CredentialUnusable
from credman.lifecycle import ApiKey, Credential
from credman.manager import CredentialInfo

__all__ = ["register"]


def _info_table(infos: list[CredentialInfo]) -> Table:
    table = Table("id", "type", "state", "version", "expires", "next due", "key")
    for info in infos:
        table.add_row(
            info.instance_id,
            info.type,
            info.state,
            str(info.version),
            when(info.expires_at),
            when(info.next_due_at),
            str(info.key_version or "-"),
        )
    return table


def status(ctx: typer.Context, credential_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """A credential's state and metadata (no secret values)."""
    with open_manager(ctx) as manager:
        info = manager.info(credential_id, principal=options(ctx).principal)
    table = Table("field", "value", show_header=False)
    for name in ("instance_id", "type", "state", "version", "attempts", "last_error"):
        table.add_row(name, str(getattr(info, name) or "-"))
    for name in ("created_at", "updated_at", "expires_at", "next_due_at", "lease_until"):
        table.add_row(name, when(getattr(info, name)))
    for name, value in sorted(info.metadata.items()):
        table.add_row(f"metadata.{name}", str(value))
    out.print(table)


def history(
    ctx: typer.Context, credential_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Every transition of a credential, oldest first."""
    with open_manager(ctx) as manager:
        steps = manager.history(credential_id, principal=options(ctx).principal)
    table = Table("at", "from", "to", "trigger", "principal", "version", "reason")
    for step in steps:
        table.add_row(
            when(step.at),
            step.from_state or "-",
            step.to_state,
            step.trigger,
            step.principal,
            str(step.version),
            step.reason or "",
        )
    out.print(table)


def list_credentials(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="Only credentials in this state.")] = None,
) -> None:
    """The credentials you may see."""
    with open_manager(ctx) as manager:
        infos = manager.list(principal=options(ctx).principal, state=state and state.upper())
    out.print(_info_table(infos))


def revoke(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Why (recorded in history).")],
) -> None:
    """Revoke a credential for good: its secret material is destroyed, its history kept."""
    with open_manager(ctx) as manager:
        info = manager.revoke(credential_id, principal=options(ctx).principal, reason=reason)
    out.print(f"revoked {info.instance_id!r} (version {info.version})")


def token(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    principal: Annotated[
        str | None, typer.Option("--principal", help="Who asks (overrides the global option).")
    ] = None,
) -> None:
    """Print a currently valid token (refreshing first if due): for scripts and pipes."""
    with open_manager(ctx) as manager:
        credential = manager.get(credential_id, principal=principal or options(ctx).principal)
    value = _token_of(credential)
    if value is None:
        raise CredentialUnusable(
            credential_id, "ACTIVE", f"a {credential.kind} credential has no token"
        )
    sys.stdout.write(value + "\n")


def _token_of(credential: Credential) -> str | None:
    for name in ("access_token", "token"):
        secret = getattr(credential, name, None)
        if secret is not None:
            return str(secret.reveal())
    if isinstance(credential, ApiKey):
        return credential.prefix + credential.key.reveal()
    return None


def test_credential(
    ctx: typer.Context, credential_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Apply the credential to its probe request; exit 1 if it does not work."""
    with open_manager(ctx) as manager:
        result = manager.test(credential_id, principal=options(ctx).principal)
    verdict = "works" if result.ok else "FAILS"
    out.print(
        f"{credential_id!r} {verdict}: HTTP {result.status or result.error} "
        f"in {result.elapsed_ms:.0f} ms"
    )
    if not result.ok:
        raise typer.Exit(1)


def refresh(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID")],
    force: Annotated[bool, typer.Option("--force", help="Refresh even if not due.")] = False,
) -> None:
    """Refresh an OAuth credential now (with --force) or if it is due."""
    with open_manager(ctx) as manager:
        info = manager.refresh(credential_id, principal=options(ctx).principal, force=force)
    out.print(
        f"{info.instance_id!r}: {info.state} (version {info.version}), "
        f"expires {when(info.expires_at)}"
    )


def register(app: typer.Typer) -> None:
    """Add the credential commands to the root app."""
    app.command()(status)
    app.command()(history)
    app.command("list")(list_credentials)
    app.command()(revoke)
    app.command()(token)
    app.command("test")(test_credential)
    app.command()(refresh)
