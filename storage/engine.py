"""Database engines and transactions: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or PostgreSQL.

SQLite's default deferred BEGIN lets two writers read the same row and both write it (lost
updates) or fail with SQLITE_BUSY_SNAPSHOT; every write transaction here starts with
``BEGIN IMMEDIATE`` instead, so writers queue on the busy timeout and each sees the last
commit. Reads use a deferred BEGIN and run beside writers thanks to WAL. PostgreSQL uses
row locks (``SELECT ... FOR UPDATE``) taken by the repository.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from credman.errors import CredentialValidationError

__all__ = ["BUSY_TIMEOUT_SECONDS", "is_sqlite", "make_engine", "read", "write"]

BUSY_TIMEOUT_SECONDS = 30.0
_WRITE = "credman_write"


def is_sqlite(engine: Engine) -> bool:
    """Whether the engine talks to SQLite."""
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, synchronous: str = "FULL") -> Engine:
    """An engine for ``url`` (sqlite:///PATH or postgresql+psycopg://...) set up for credman."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CredentialValidationError(
            "database_url: not a database URL", fields=("database_url",)
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, synchronous)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    raise CredentialValidationError(
        f"database_url: unsupported database {parsed.get_backend_name()!r} "
        "(use sqlite:///PATH or postgresql+psycopg://...)",
        fields=("database_url",),
    )


def _sqlite_engine(url: str, database: str | None, synchronous: str) -> Engine:
    if not database or database == ":memory:" or database.startswith("file:"):
        raise CredentialValidationError(
            "database_url: SQLite needs a file path (sqlite:///PATH)", fields=("database_url",)
        )
    if synchronous not in {"FULL", "NORMAL", "EXTRA"}:
        raise CredentialValidationError(
            "synchronous: FULL, NORMAL or EXTRA", fields=("synchronous",)
        )
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any exception."""
    with engine.connect() as connection:
        connection.execution_options(**{_WRITE: True})
        with connection.begin():
            yield connection


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (a consistent snapshot)."""
    with engine.connect() as connection, connection.begin():
        yield connection
