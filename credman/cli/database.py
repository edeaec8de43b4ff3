"""``credman init`` and ``credman migrate``: the key file and the database schema."""

from __future__ import annotations

import typer

from credman.cli.context import open_manager, options
from credman.cli.output import out
from credman.config import Settings
from credman.crypto import KeyFileProvider
from credman.errors import KeyringError

__all__ = ["register"]


def init(ctx: typer.Context) -> None:
    """Create the key file (0600) if missing and bring the database to the current schema."""
    settings = Settings.from_env(key_file=options(ctx).key_file)
    provider = KeyFileProvider(settings.key_file)
    try:
        provider.create()
        out.print(f"created key file {provider.path} (mode 0600): back it up, keep it secret")
    except KeyringError:
        if not provider.path.exists():
            raise
        out.print(f"key file {provider.path} exists; keeping it")
    with open_manager(ctx, create=True) as manager:
        out.print(f"database ready at {manager.database_url}")


def migrate(ctx: typer.Context) -> None:
    """Upgrade the database schema to this version's (also done on every start)."""
    with open_manager(ctx, create=True) as manager:
        revision = manager.migrate()
    out.print(f"database {manager.database_url} at schema revision {revision}")


def register(app: typer.Typer) -> None:
    """Add ``init`` and ``migrate`` to the root app."""
    app.command()(init)
    app.command()(migrate)
