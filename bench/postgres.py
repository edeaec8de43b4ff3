"""The PostgreSQL server the PostgreSQL stage runs on, and a fresh schema on it for one run.

The server is the one the test suite uses (``CREDMAN_TEST_POSTGRES_URL``). The stage works
in a schema of its own, created empty and dropped with everything in it at the end, and
reaches it through the URL's ``search_path`` option, so credman's migrations build their
tables there and nothing else on the server is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = ["DEFAULT_URL", "POSTGRES_URL", "fresh_schema", "shown", "unreachable"]

DEFAULT_URL: Final = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_URL: Final = os.environ.get("CREDMAN_TEST_POSTGRES_URL", DEFAULT_URL)
_CONNECT_TIMEOUT = 3


def shown(url: str = POSTGRES_URL) -> str:
    """The URL as the report may print it (no password)."""
    return make_url(url).render_as_string(hide_password=True)


def unreachable() -> tuple[str | None, str]:
    """Why the server cannot be used (None when it can), and its version when it can."""
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": _CONNECT_TIMEOUT})
        try:
            with engine.connect() as connection:
                version = str(connection.execute(text("SHOW server_version")).scalar())
        finally:
            engine.dispose()
    except Exception as exc:  # any failure to connect means: skip the stage, say why
        return f"PostgreSQL not reachable at {shown()} ({type(exc).__name__})", ""
    return None, version


@contextmanager
def fresh_schema() -> Iterator[tuple[str, str]]:
    """A new empty schema ``bench_<hex>``: its name and a URL whose search_path is it.

    The schema is dropped, with everything in it, when the block ends.
    """
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": _CONNECT_TIMEOUT})
    try:
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            separator = "&" if "?" in POSTGRES_URL else "?"
            yield schema, f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
        finally:
            with admin.begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()
