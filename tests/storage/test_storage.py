"""Storage: migrations match the models on both engines, SQLite settings, schema upgrades."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

import credman.storage.tables  # noqa: F401  (registers the tables)
from credman import BasicAuth, CredentialManager, CredentialValidationError, StorageError
from credman.storage import migrate
from credman.storage.engine import make_engine, read, write


def test_migrations_produce_exactly_the_models(database_url: str) -> None:
    """Upgrading an empty database to head yields the SQLModel schema, nothing more or less."""
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    engine.dispose()
    assert [] == differences


def test_sqlite_runs_in_wal_with_busy_timeout(sqlite_url: str) -> None:
    """Every SQLite connection is in WAL mode, waits on locks, and syncs fully."""
    engine = make_engine(sqlite_url)
    with read(engine) as connection:
        pragmas = [
            connection.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "busy_timeout", "synchronous")
        ]
    engine.dispose()
    assert ["wal", 30000, 2] == pragmas


def test_upgrade_from_the_first_schema_keeps_data(sqlite_url: str, key_file: Path) -> None:
    """A database created at revision 0001 is upgraded on start and its credentials still open."""
    engine = make_engine(sqlite_url)
    migrate.upgrade(engine, "0001")
    engine.dispose()
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        manager.store("k", BasicAuth(username="u", password="p"), principal="admin")
        assert migrate.head_revision() == migrate.current_revision(manager.engine)
        assert "p" == manager.get("k", principal="admin").password.reveal()  # type: ignore[attr-defined]


def test_unknown_schema_revision_is_refused(sqlite_url: str, key_file: Path) -> None:
    """A database from a newer credman is refused with a clear StorageError."""
    engine = make_engine(sqlite_url)
    migrate.upgrade(engine)
    with write(engine) as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StorageError, match="upgrade credman"):
        CredentialManager(sqlite_url, str(key_file))


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "mysql://x/y", "not a url", "sqlite://"])
def test_unsupported_database_urls_are_refused(url: str) -> None:
    """Only file SQLite and PostgreSQL are accepted, with a message naming database_url."""
    with pytest.raises(CredentialValidationError) as raised:
        make_engine(url)
    assert ("database_url",) == raised.value.fields


@pytest.mark.parametrize("table", ["credential_history", "audit_event"])
def test_append_only_tables_refuse_changes(manager: CredentialManager, table: str) -> None:
    """History and audit rows cannot be updated or deleted, on either engine."""
    manager.store("k", BasicAuth(username="u", password="p"), principal="admin")
    for statement in (f"UPDATE {table} SET principal = 'mallory'", f"DELETE FROM {table}"):
        with pytest.raises(Exception, match="append-only"), write(manager.engine) as connection:
            connection.execute(text(statement))
