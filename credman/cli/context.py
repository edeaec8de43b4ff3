"""The global options every command sees, who acts, and the manager they name.

The local operator (whoever can read the key file) has full power and is recorded as
``operator:<os user>``; ``--as PRINCIPAL`` acts as someone else instead, to try that
principal's grants, and every audit row then names that principal.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import typer

from credman.config import Settings
from credman.manager import CredentialManager

__all__ = ["Options", "open_manager", "operator_principal", "options"]

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._@/-]")


def operator_principal() -> str:
    """``operator:<os user>``: who the local operator is recorded as."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "unknown"
    return "operator:" + (_NOT_IN_NAMES.sub("_", user)[:100] or "unknown")


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """The global options, resolved."""

    database_url: str | None = None
    key_file: str | None = None
    acting_as: str | None = None
    verbose: bool = False

    @property
    def principal(self) -> str:
        """Who acts: the ``--as`` principal, or the local operator."""
        return self.acting_as or operator_principal()

    def manager(self, *, create: bool = False) -> CredentialManager:
        """Open the manager these options name; only ``create`` may create or migrate."""
        settings = Settings.from_env(database_url=self.database_url, key_file=self.key_file)
        return CredentialManager(
            self.database_url,
            self.key_file,
            admins=(*settings.admins, operator_principal()),
            migrate_schema=create,
        )


def options(ctx: typer.Context) -> Options:
    """The global options of the running command."""
    found = ctx.find_object(Options)
    assert found is not None
    return found


@contextmanager
def open_manager(ctx: typer.Context, *, create: bool = False) -> Iterator[CredentialManager]:
    """The manager the global options name, closed when the block ends.

    Only ``credman init`` and ``credman migrate`` pass ``create``: every other command
    refuses a missing database or an old schema instead of making one.
    """
    manager = options(ctx).manager(create=create)
    try:
        yield manager
    finally:
        manager.close()
