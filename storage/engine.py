"""Database engines and transactions: SQLite (WAL, busy timeout, BEGIN IMMEDIATE) or PostgreSQL.

SQLite's default deferred BEGIN lets two writers read the same row and both write it (lost
updates) or fail with SQLITE_BUSY_SNAPSHOT; every write transaction here starts with
``BEGIN IMMEDIATE`` instead, so writers queue on the busy timeout and each sees the last
commit. Reads use a deferred BEGIN and run beside writers thanks to WAL. PostgreSQL uses
row locks (``SELECT ... FOR UPDATE``) taken by the repository.

SQLite runs with ``secure_delete`` on, so content freed by an update or delete (a revoked
credential's ciphertexts and wrapped data key) is overwritten with zeros rather than left
in free space; :func:`checkpoint` then moves the scrubbed pages into the database file and
empties the WAL, which still holds the older page images until then.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from credman.errors import CredentialValidationError, StorageError

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "checkpoint",
    "describe_failure",
    "is_sqlite",
    "make_engine",
    "read",
    "write",
]

BUSY_TIMEOUT_SECONDS = 30.0
_WRITE = "credman_write"


def is_sqlite(engine: Engine) -> bool:
    """Whether the engine talks to SQLite."""
    return engine.dialect.name == "sqlite"


def make_engine(
    url: str,
    *,
    synchronous: str = "FULL",
    create: bool = True,
    busy_timeout: float = BUSY_TIMEOUT_SECONDS,
) -> Engine:
    """An engine for ``url`` (sqlite:///PATH or postgresql+psycopg://...) set up for credman.

    With ``create=False`` a missing SQLite file (or its folder) is an error, not created.
    ``busy_timeout``: how long a SQLite writer waits for another's lock.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CredentialValidationError(
            "database_url: not a database URL", fields=("database_url",)
        ) from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, synchronous, create, busy_timeout)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    raise CredentialValidationError(
        f"database_url: unsupported database {parsed.get_backend_name()!r} "
        "(use sqlite:///PATH or postgresql+psycopg://...)",
        fields=("database_url",),
    )


def _sqlite_engine(
    url: str, database: str | None, synchronous: str, create: bool, busy_timeout: float
) -> Engine:
    if not database or database == ":memory:" or database.startswith("file:"):
        raise CredentialValidationError(
            "database_url: SQLite needs a file path (sqlite:///PATH)", fields=("database_url",)
        )
    if synchronous not in {"FULL", "NORMAL", "EXTRA"}:
        raise CredentialValidationError(
            "synchronous: FULL, NORMAL or EXTRA", fields=("synchronous",)
        )
    path = Path(database).expanduser()
    if not create and not path.is_file():
        raise StorageError(f"no credman database at {path} (run credman init)")
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")  # freed content is zeroed, not left behind
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


def checkpoint(engine: Engine) -> bool:
    """SQLite: copy every WAL page into the database file and truncate the WAL.

    Until this runs, the WAL keeps older images of rewritten pages (e.g. the ciphertexts a
    revoke just destroyed). True when the WAL was emptied; False when a reader or writer
    kept it busy (the next automatic checkpoint will catch up) or the engine is not SQLite.
    """
    if not is_sqlite(engine):
        return False
    with engine.connect() as connection:  # outside any transaction: the driver's own call
        driver = connection.connection.driver_connection
        assert driver is not None
        busy, _, _ = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return bool(busy == 0)


_PG_REASONS = (  # what the server or libpq said -> the words an operator needs
    ("password authentication failed", "authentication failed"),
    ("authentication failed", "authentication failed"),
    ("no password supplied", "authentication failed (no password given)"),
    ("connection refused", "connection refused"),
    ("timeout expired", "connection timed out"),
    ("could not translate host name", "unknown host"),
    ("does not exist", "no such database or role"),
    ("too many clients", "the server has too many connections"),
    ("server closed the connection", "the server closed the connection"),
)


def describe_failure(exc: SQLAlchemyError, engine: Engine, *, waited: float | None = None) -> str:
    """A driver error in an operator's words: what is locked and how long we waited (SQLite),
    which server failed and why (PostgreSQL). Names no password and no SQL parameters."""
    reason = " ".join(str(getattr(exc, "orig", None) or "").split()).lower()
    url = engine.url
    if is_sqlite(engine):
        if "locked" in reason or "busy" in reason:
            how_long = f"{waited:.1f} s" if waited is not None else f"{BUSY_TIMEOUT_SECONDS:g} s"
            return (
                f"the SQLite database {url.database} is locked by another process "
                f"(waited {how_long} for its write to finish); try again"
            )
        if "unable to open" in reason:
            return f"cannot open the SQLite database {url.database}"
        return f"SQLite error on {url.database}: {type(exc).__name__}"
    where = f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"
    for marker, words in _PG_REASONS:
        if marker in reason:
            return f"cannot use {where} (database {url.database!r}): {words}"
    return f"database error on {where}: {type(exc).__name__}"
