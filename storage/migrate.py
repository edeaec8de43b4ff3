"""Schema migrations with Alembic: bring a database to the current schema, safely in parallel."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from credman.errors import StorageError
from credman.storage.engine import read, write

__all__ = ["MIGRATIONS", "check_current", "current_revision", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x63726D6E  # "crmn": serialises concurrent upgrades on PostgreSQL


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with read(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade to ``revision`` in one write transaction; concurrent callers wait, then no-op."""
    with write(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        command.upgrade(_config(connection), revision)


def check_current(engine: Engine, where: str) -> None:
    """Raise StorageError unless the database at ``where`` is at the code's revision."""
    current = current_revision(engine)
    if current is None:
        raise StorageError(f"no credman database at {where} (run credman init)")
    if current != head_revision():
        raise StorageError(f"the schema at {where} is at revision {current}: run credman migrate")
