"""``credman audit verify|head|tail``: the tamper-evident audit trail."""

from __future__ import annotations

from typing import Annotated

import typer

from credman.cli.context import open_manager, options
from credman.cli.output import JsonFlag, err, out, print_json, table, when
from credman.errors import CredentialValidationError

__all__ = ["audit_app", "register"]

audit_app = typer.Typer(help="The tamper-evident audit trail.")


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    anchor: Annotated[
        str | None,
        typer.Option(metavar="SEQ:HASH", help="A head kept elsewhere that must still be there."),
    ] = None,
) -> None:
    """Recompute the hash chain; exit 1 naming the first bad row if it is broken."""
    with open_manager(ctx) as manager:
        report = manager.verify_audit(_anchor(anchor) if anchor else None)
    if not report.ok:
        err.print(f"audit chain BROKEN at row {report.first_bad_seq}: {report.problem}")
        raise typer.Exit(1)
    out.print(
        f"audit chain ok: {report.rows_checked} rows, head {report.head_seq}:{report.head_hash}"
    )


def _anchor(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise CredentialValidationError("anchor: SEQ:HASH as printed by 'credman audit head'")
    return int(seq), digest


@audit_app.command("head")
def audit_head(ctx: typer.Context) -> None:
    """Print the chain head (sequence:hash) for anchoring outside the database."""
    with open_manager(ctx) as manager:
        seq, digest = manager.audit_head()
    out.print(f"{seq}:{digest}")


@audit_app.command("tail")
def audit_tail(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("-n", "--limit", metavar="N", min=1, help="How many events.")
    ] = 20,
    denied: Annotated[bool, typer.Option("--denied", help="Only access denials.")] = False,
    principal: Annotated[
        str | None, typer.Option("--who", metavar="PRINCIPAL", help="Only this principal.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The newest audit events."""
    with open_manager(ctx) as manager:
        events = manager.audit_events(
            principal=options(ctx).principal,
            limit=limit,
            subject=principal,
            outcome="denied" if denied else None,
        )
    if as_json:
        print_json(
            [
                {
                    "seq": event.seq,
                    "at": event.at,
                    "principal": event.principal,
                    "action": event.action,
                    "credential_id": event.credential_id,
                    "outcome": event.outcome,
                    "detail": dict(event.detail),
                }
                for event in events
            ]
        )
        return
    shown = table("seq", "at", "principal", "action", "credential", "outcome")
    for event in events:
        shown.add_row(
            str(event.seq),
            when(event.at).removesuffix("+00:00").replace("T", " "),
            event.principal,
            event.action,
            event.credential_id or "-",
            event.outcome,
        )
    out.print(shown)


def register(app: typer.Typer) -> None:
    """Add the ``audit`` group to the root app."""
    app.add_typer(audit_app, name="audit")
