"""``credman audit verify|head|tail|export|archive|verify-archive``: the tamper-evident audit
trail."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from credman.audit_export import JsonLinesSink, SyslogSink
from credman.cli.context import open_manager, options
from credman.cli.output import JsonFlag, err, out, print_json, table, when
from credman.errors import CredentialValidationError
from credman.terminal import inert

__all__ = ["audit_app", "register"]

audit_app = typer.Typer(help="The tamper-evident audit trail.")


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    anchor: Annotated[
        str | None,
        typer.Option(metavar="SEQ:HASH", help="A head kept elsewhere that must still be there."),
    ] = None,
    heads: Annotated[
        Path | None,
        typer.Option(
            "--heads",
            "--anchor-file",
            metavar="FILE",
            help="Signed heads the service exported: each must still be on the chain.",
        ),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(metavar="PEM", help="Also check the heads' Ed25519 signatures."),
    ] = None,
) -> None:
    """Recompute the hash chain and the history it binds; exit 1 naming the first bad row."""
    with open_manager(ctx) as manager:
        report = manager.verify_audit(
            _anchor(anchor) if anchor else None, heads=heads, public_key=public_key
        )
    rows = report.extra.get("integrity")
    if not report.ok and rows:  # the chain holds, but rows fail their MAC or are behind it
        err.print(
            f"audit chain ok ({report.rows_checked} rows), but {len(rows)} database row(s) "
            "FAIL the integrity check:",
            markup=False,
        )
        for problem in rows:
            err.print(inert(f"  {problem}"))
        raise typer.Exit(1)
    if not report.ok:
        where = "" if report.first_bad_seq is None else f" at row {report.first_bad_seq}"
        err.print(inert(f"audit chain BROKEN{where}: {report.problem}"))
        if rows:
            err.print(f"and {len(rows)} database row(s) FAIL the integrity check:", markup=False)
            for problem in rows:
                err.print(inert(f"  {problem}"))
        raise typer.Exit(1)
    notes = [f"{report.history_checked} history rows"]
    if report.history_unchecked:
        notes.append(f"{report.history_unchecked} older history rows not bound, not checked")
    if heads is not None:
        notes.append(f"{report.heads_checked} exported heads found")
    out.print(
        f"audit chain ok: {report.rows_checked} rows, {', '.join(notes)}, "
        f"head {report.head_seq}:{report.head_hash}; every credential and grant row "
        "authentic and as recent as the chain says"
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


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    after: Annotated[
        int, typer.Option("--after", metavar="SEQ", min=0, help="Only rows numbered above SEQ.")
    ] = 0,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", metavar="FILE", help="Append JSON lines here (0600)."),
    ] = None,
    syslog: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS", help="Send to syslog (RFC 5424): HOST:PORT (UDP) or a socket path."
        ),
    ] = None,
) -> None:
    """Every audit row after SEQ as JSON lines: to stdout, a file, or syslog."""
    if output is not None and syslog is not None:
        raise CredentialValidationError("output: give --output or --syslog, not both")
    sink: JsonLinesSink | SyslogSink
    sink = SyslogSink(syslog) if syslog is not None else JsonLinesSink(output or sys.stdout)
    try:
        with open_manager(ctx) as manager:
            count, last = manager.export_audit(sink, principal=options(ctx).principal, after=after)
    finally:
        sink.close()
    err.print(f"exported {count} audit rows after {after}, up to row {last}")


@audit_app.command("archive")
def audit_archive(
    ctx: typer.Context,
    before: Annotated[
        int, typer.Option("--before", metavar="SEQ", help="Archive the rows numbered below SEQ.")
    ],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", metavar="FILE", help="The new archive (never overwritten)."),
    ],
) -> None:
    """Move old rows to a JSON-lines file and prune them; verification starts after them."""
    with open_manager(ctx) as manager:
        report = manager.archive_audit(
            before_seq=before, path=output, principal=options(ctx).principal
        )
    out.print(
        f"archived rows {report.first_seq}-{report.anchor_seq} ({report.rows}) to "
        f"{report.path}, sha256 {report.sha256}; the chain is now verified from "
        f"{report.anchor_seq}:{report.anchor_hash}"
    )


@audit_app.command("verify-archive")
def audit_verify_archive(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="FILE", help="An archive from 'audit archive'.")],
) -> None:
    """Recompute the chain inside an archive; exit 1 naming the first bad row."""
    with open_manager(ctx) as manager:
        report = manager.verify_audit_archive(path)
    if not report.ok:
        err.print(f"archive BROKEN at row {report.first_bad_seq}: {report.problem}")
        raise typer.Exit(1)
    out.print(
        f"archive ok: {report.rows_checked} rows after {report.anchor_seq}, "
        f"ending at {report.head_seq}:{report.head_hash}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``audit`` group to the root app."""
    app.add_typer(audit_app, name="audit")
