"""The global options every command sees, and the manager they name."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import typer

from credman.manager import CredentialManager

__all__ = ["Options", "open_manager", "options"]


@dataclass(slots=True)
class Options:
    """The global options, resolved."""

    database_url: str | None
    key_file: str | None
    principal: str

    def manager(self) -> CredentialManager:
        """Open the manager these options name."""
        return CredentialManager(self.database_url, self.key_file)


def options(ctx: typer.Context) -> Options:
    """The global options of the running command."""
    found = ctx.find_object(Options)
    assert found is not None
    return found


@contextmanager
def open_manager(ctx: typer.Context) -> Iterator[CredentialManager]:
    """The manager the global options name, closed when the block ends."""
    manager = options(ctx).manager()
    try:
        yield manager
    finally:
        manager.close()
