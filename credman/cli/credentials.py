"""Commands on one credential or the list of them: list, status, history, token, header,
refresh, test, revoke."""

from __future__ import annotations

from typing import Annotated

import typer

from credman.cli.backend import open_backend
from credman.cli.context import open_manager, options
from credman.cli.output import JsonFlag, ago, err, info_record, out, print_json, table, when
from credman.errors import CredentialUnusable

__all__ = ["register"]

CredentialId = Annotated[str, typer.Argument(metavar="ID", help="The credential id.")]


def list_credentials(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(metavar="STATE", help="Only credentials in this state.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The credentials you may see."""
    with open_backend(ctx) as backend:
        infos = backend.list(state=state and state.upper())
    if as_json:
        print_json([info_record(info) for info in infos])
        return
    rows = table("id", "type", "state", "v", "expires", "next due")
    for info in infos:
        record = info_record(info)
        rows.add_row(
            record["credential_id"],
            info.type,
            info.state.value,
            str(info.version),
            ago(info.expires_at),
            ago(info.next_due_at),
        )
    out.print(rows)


def status(ctx: typer.Context, credential_id: CredentialId, as_json: JsonFlag = False) -> None:
    """A credential's state and metadata (no secret values)."""
    with open_backend(ctx) as backend:
        info = backend.info(credential_id)
    record = info_record(info)
    if as_json:
        print_json(record)
        return
    rows = table("field", "value")
    rows.show_header = False
    for name in ("credential_id", "type", "state", "version", "attempts", "key_version"):
        value = record[name]
        rows.add_row(name, "-" if value is None else str(getattr(value, "value", value)))
    rows.add_row("last_error", record["last_error"] or "-")
    for name in ("created_at", "updated_at", "expires_at", "next_due_at"):
        moment = record[name]
        rows.add_row(name, f"{when(moment)}  ({ago(moment)})" if moment else "-")
    for name, value in sorted(info.metadata.items()):
        rows.add_row(f"metadata.{name}", str(value))
    out.print(rows)


def history(ctx: typer.Context, credential_id: CredentialId, as_json: JsonFlag = False) -> None:
    """Every transition of a credential, oldest first."""
    with open_backend(ctx) as backend:
        steps = backend.history(credential_id)
    if as_json:
        print_json(
            [
                {
                    "at": step.at,
                    "from_state": step.from_state,
                    "to_state": step.to_state,
                    "trigger": step.trigger,
                    "principal": step.principal,
                    "version": step.version,
                    "reason": step.reason,
                }
                for step in steps
            ]
        )
        return
    rows = table("at", "from", "to", "trigger", "by", "v")
    for step in steps:
        why = f" ({step.reason})" if step.reason else ""
        rows.add_row(
            when(step.at).removesuffix("+00:00").replace("T", " "),
            step.from_state or "-",
            step.to_state,
            step.trigger + why,
            step.principal,
            str(step.version),
        )
    out.print(rows)


def token(ctx: typer.Context, credential_id: CredentialId) -> None:
    """Print the bare secret a request needs (refreshing first if due): for scripts.

    An access token, a bearer token or an API key, always without a prefix or header
    name; ``credman header ID`` prints the whole header line. Needs only ``use``.
    """
    with open_backend(ctx) as backend:
        access = backend.access(credential_id)
    if access.token is None:
        raise CredentialUnusable(
            credential_id, "usable", "it has no single token (try credman header)"
        )
    typer.echo(access.token.reveal())


def header(ctx: typer.Context, credential_id: CredentialId) -> None:
    """Print the ready header line, e.g. ``Authorization: Bearer ...`` (curl -H "$(...)")."""
    with open_backend(ctx) as backend:
        access = backend.access(credential_id)
    if not access.headers:
        raise CredentialUnusable(
            credential_id, "usable", "it goes in a query parameter, not a header"
        )
    for name, value in access.headers.items():
        typer.echo(f"{name}: {value}")


def refresh(
    ctx: typer.Context,
    credential_id: CredentialId,
    force: Annotated[bool, typer.Option("--force", help="Refresh even if not due.")] = False,
) -> None:
    """Refresh an OAuth2 or JWT credential now (--force) or if it is due; exit 1 on failure."""
    with open_backend(ctx) as backend:
        before = backend.info(credential_id)
        info = backend.refresh(credential_id, force=force)
    if info.last_error and info.attempts > before.attempts:
        # the provider failed but the current token still works: say so, and fail
        err.print(
            f"error: refresh of {credential_id!r} failed (error code {info.last_error!r}); "
            f"the current token still works until {when(info.expires_at)}, "
            f"next try {ago(info.next_due_at)}",
            markup=False,
        )
        raise typer.Exit(1)
    if info.version == before.version:
        due = f" (next refresh due {ago(info.next_due_at)})" if info.next_due_at else ""
        out.print(f"{credential_id!r} needs no refresh yet{due}; --force refreshes now")
        return
    out.print(
        f"refreshed {credential_id!r}: version {info.version}, expires {ago(info.expires_at)}"
    )


def test_credential(ctx: typer.Context, credential_id: CredentialId) -> None:
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


def revoke(
    ctx: typer.Context,
    credential_id: CredentialId,
    reason: Annotated[str, typer.Option(metavar="TEXT", help="Why (recorded in history).")],
) -> None:
    """Revoke a credential for good: its secret material is destroyed, its history kept."""
    with open_backend(ctx) as backend:
        info = backend.revoke(credential_id, reason=reason)
    out.print(f"revoked {credential_id!r} (version {info.version})")


def register(app: typer.Typer) -> None:
    """Add the credential commands to the root app."""
    app.command("list")(list_credentials)
    app.command()(status)
    app.command()(history)
    app.command()(token)
    app.command()(header)
    app.command()(refresh)
    app.command("test")(test_credential)
    app.command()(revoke)
