"""Database failures in an operator's words: what is locked and for how long, which
PostgreSQL server failed and why; never a bare driver class name."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from credman.storage import describe_failure, make_engine, migrate, write


def test_a_locked_sqlite_database_is_named_with_the_wait(tmp_path: Path) -> None:
    """A writer blocked by another process's lock hears which file is locked and how long
    it waited."""
    database = tmp_path / "c.db"
    engine = make_engine(f"sqlite:///{database}", busy_timeout=0.2)
    migrate.upgrade(engine)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError) as caught, write(engine) as connection:
            connection.execute(text("SELECT 1"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
    message = describe_failure(caught.value, engine, waited=0.2)
    assert f"the SQLite database {database} is locked by another process (waited 0.2 s" in (message)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (
            "postgresql+psycopg://nobody@127.0.0.1:9/x",
            "127.0.0.1:9 (database 'x'): connection refused",
        ),
        ("postgresql+psycopg://nobody:hunter2@127.0.0.1:9/x", "connection refused"),
    ],
)
def test_postgres_connection_problems_name_host_port_and_reason(
    url: str, words: str, tmp_path: Path
) -> None:
    """`credman list` against an unreachable server says host, port and why, in one line,
    and never the password."""
    key = tmp_path / "c.key"
    subprocess.run(
        [sys.executable, "-m", "credman", "--key-file", str(key), "init"],
        env=os.environ | {"CREDMAN_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"},
        capture_output=True,
        timeout=120,
        check=True,
    )
    result = subprocess.run(
        [sys.executable, "-m", "credman", "--database-url", url, "--key-file", str(key), "list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (1, True, False) == (
        result.returncode,
        words in result.stderr,
        "hunter2" in result.stderr,
    )
