"""The ``credman keys`` commands: rotate, rewrap, status and retire the key-encryption keys.

Registered on the root app by :func:`register` as ``credman keys``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from credman import KeyVersionStatus, RewrapProgress, RewrapReport
from credman.cli.context import open_manager, options
from credman.cli.output import err, out

__all__ = ["keys_app", "register"]

DEFAULT_BATCH_SIZE = 500  # the manager's default (rotate_keys, rewrap_keys)
MAX_BATCH_SIZE = 10_000  # the manager refuses larger batches

keys_app = typer.Typer(
    help="Key-encryption keys: rotate, rewrap, status, retire.", no_args_is_help=True
)

BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size",
        min=1,
        max=MAX_BATCH_SIZE,
        help="Credentials re-wrapped per transaction.",
    ),
]


@contextmanager
def _progress_bar() -> Iterator[Callable[[RewrapProgress], None]]:
    """A rich progress bar on stderr, and the callback that moves it."""
    columns = (
        TextColumn("re-wrapping data keys"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as bar:
        task = bar.add_task("rewrap", total=None)

        def advance(event: RewrapProgress) -> None:
            bar.update(task, total=event.total, completed=event.done + event.unreadable)

        yield advance


def _print_rewrap(report: RewrapReport) -> None:
    """Say what a rewrap did; exit 1 if rows are left on older versions."""
    out.print(
        f"re-wrapped {report.rewrapped} data keys under version {report.primary} "
        f"in {report.batches} batches"
    )
    if report.unreadable:
        shown = ", ".join(report.unreadable[:10]) + (", ..." if len(report.unreadable) > 10 else "")
        err.print(
            f"warning: {len(report.unreadable)} data keys did not open and keep their old "
            f"version: {shown}",
            markup=False,
        )
    if report.remaining:
        err.print(
            f"{report.remaining} credentials are still on older key versions: "
            "run 'credman keys rewrap' again",
            markup=False,
        )
        raise typer.Exit(1)


@keys_app.command()
def rotate(ctx: typer.Context, batch_size: BatchSize = DEFAULT_BATCH_SIZE) -> None:
    """Add a new primary key version and re-wrap every data key under it."""
    principal = options(ctx).principal
    with open_manager(ctx) as manager, _progress_bar() as progress:
        report = manager.rotate_keys(principal=principal, batch_size=batch_size, progress=progress)
    out.print(f"key version {report.primary} is primary (was {report.previous_primary})")
    _print_rewrap(report.rewrap)


@keys_app.command()
def rewrap(ctx: typer.Context, batch_size: BatchSize = DEFAULT_BATCH_SIZE) -> None:
    """Re-wrap data keys not yet on the primary (finishes an interrupted rotation)."""
    principal = options(ctx).principal
    with open_manager(ctx) as manager, _progress_bar() as progress:
        report = manager.rewrap_keys(principal=principal, batch_size=batch_size, progress=progress)
    _print_rewrap(report)


def _note(version: KeyVersionStatus) -> str:
    if not version.in_ring:
        return "MISSING from the keyring: these credentials cannot be opened"
    if not version.primary and not version.credentials:
        return "unused: may be retired"
    return ""


@keys_app.command()
def status(ctx: typer.Context) -> None:
    """Key versions, which is primary, and how many credentials each protects."""
    with open_manager(ctx) as manager:
        report = manager.key_status(principal=options(ctx).principal)
    table = Table("version", "primary", "credentials", "note")
    for version in report.versions:
        primary = "yes" if version.primary else ""
        table.add_row(str(version.version), primary, str(version.credentials), _note(version))
    out.print(table)
    out.print(f"revoked credentials with no data key (shredded): {report.shredded}")
    if report.pending:
        out.print(f"{report.pending} credentials not on the primary: run 'credman keys rewrap'")
    if report.missing:
        missing = ", ".join(map(str, report.missing))
        err.print(f"key versions referenced but not in the keyring: {missing}", markup=False)
        raise typer.Exit(1)


@keys_app.command()
def retire(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1, help="The version to drop.")],
) -> None:
    """Remove a key version for good; refused while any credential still uses it."""
    with open_manager(ctx) as manager:
        left = manager.retire_key(version, principal=options(ctx).principal)
    out.print(
        f"retired key version {version}; the keyring holds {', '.join(map(str, left))} "
        "(copies of the key file made earlier still hold it)"
    )


def register(app: typer.Typer) -> None:
    """Add the ``keys`` group to the root app."""
    app.add_typer(keys_app, name="keys")
