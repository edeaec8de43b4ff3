"""``credman diagram [ID]``: lifecycle diagrams, or one credential's path from its history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from credman.cli.context import open_manager, options
from credman.cli.output import out

__all__ = ["register"]


def diagram(
    ctx: typer.Context,
    credential_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="Draw this credential's actual path.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", metavar="DIR", help="Write files here.")
    ] = None,
) -> None:
    """Lifecycle diagrams from the transition table, or one credential's path from its history."""
    from credman import diagrams

    if credential_id is None:
        for path in diagrams.write_lifecycle_diagrams(output or Path("diagrams")):
            out.print(f"wrote {path}")
        return
    with open_manager(ctx) as manager:
        steps = manager.history(credential_id, principal=options(ctx).principal)
    path_steps = [(s.from_state, s.to_state, s.trigger) for s in steps]
    current = steps[-1].to_state
    if output is None:
        mermaid = diagrams.credential_path_mermaid(credential_id, path_steps, current)
        out.print(mermaid, markup=False)
        return
    written = diagrams.write_credential_path(output, credential_id, path_steps, current)
    out.print("wrote " + " and ".join(str(p) for p in written))


def register(app: typer.Typer) -> None:
    """Add ``diagram`` to the root app."""
    app.command()(diagram)
