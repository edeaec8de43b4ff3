"""``credman demo``: the end-to-end walkthrough."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from credman.cli.output import out

__all__ = ["register"]


def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Demo folder (recreated).")] = Path(
        ".demo"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Shorter token lifetimes.")] = False,
) -> None:
    """The end-to-end walkthrough: store, grant, use, refresh, expire, revoke, audit, diagrams."""
    from credman.demo import run_demo

    lifetime, watch = (1.5, 3.5) if quick else (3.0, 7.0)
    raise typer.Exit(run_demo(directory, lifetime=lifetime, watch=watch, console=out))


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""
    app.command()(demo)
