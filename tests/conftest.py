"""Shared fixtures: a key file, a database on each engine, a manager over both."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import create_engine, text

from credman import CredentialManager, OAuth2
from credman.crypto import KeyFileProvider
from credman.testing.provider import TokenServer

POSTGRES_URL = os.environ.get(
    "CREDMAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("CREDMAN_REQUIRE_POSTGRES") == "1"
os.environ["CREDMAN_EGRESS_ALLOW_LOOPBACK"] = "1"  # the tests' providers live on loopback
CLIENT, SECRET = "client-1", "client-secret-1"
"""The OAuth client every test token server knows (tests get it through the fixtures below)."""
LOG_LINES: list[str] = []
"""Every log line credman wrote during the session (the canary sweep scans it)."""
CANARIES: set[str] = set()
"""Every canary secret planted during the session; none may appear in any log line."""


def _postgres_problem() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL not reachable at {POSTGRES_URL} ({type(exc).__name__})"
    return None


_POSTGRES_PROBLEM: list[str | None] = []


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used (None when it can); checked once per session."""
    if not _POSTGRES_PROBLEM:
        _POSTGRES_PROBLEM.append(_postgres_problem())
    return _POSTGRES_PROBLEM[0]


def pytest_configure(config: pytest.Config) -> None:
    logger.remove()  # loguru's default stderr handler: tests add the sinks they look at
    logger.enable("credman")
    logger.add(LOG_LINES.append, level="DEBUG", format="{level} {name} {message} {extra}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = sorted(c for c in CANARIES if any(c in line for line in LOG_LINES))
    if leaked:
        print(f"\nSECRET LEAK: {len(leaked)} canary secrets appeared in credman's log output")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def log_lines() -> list[str]:
    """Every log line credman wrote so far in the session (slice it to see one test's lines)."""
    return LOG_LINES


@pytest.fixture
def canary() -> Callable[[str], str]:
    """Make a unique canary secret; the session fails if any reaches a log line."""

    def make(label: str = "secret") -> str:
        value = f"CANARY-{label}-{uuid.uuid4().hex}"
        CANARIES.add(value)
        return value

    return make


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A fresh 0600 key file."""
    path = tmp_path / "credman.key"
    KeyFileProvider(path).create()
    return path


def _postgres_schema_url() -> Iterator[str]:
    problem = postgres_problem()
    if problem:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{problem}; CREDMAN_REQUIRE_POSTGRES=1 makes this a failure")
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each engine (PostgreSQL: its own schema, dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'credman.db'}"
        return
    yield from _postgres_schema_url()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the PostgreSQL server (for tests about PostgreSQL itself)."""
    yield from _postgres_schema_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file (for tests about SQLite itself)."""
    return f"sqlite:///{tmp_path / 'credman.db'}"


@pytest.fixture
def make_manager(database_url: str, key_file: Path) -> Iterator[Callable[..., CredentialManager]]:
    """Build managers over the test database and key file; all closed at the end."""
    made: list[CredentialManager] = []

    def build(**options: Any) -> CredentialManager:
        options.setdefault("database_url", database_url)
        options.setdefault("key_file", str(key_file))
        manager = CredentialManager(**options)
        made.append(manager)
        return manager

    yield build
    for manager in made:
        manager.close()


@pytest.fixture
def manager(make_manager: Callable[..., CredentialManager]) -> CredentialManager:
    """A manager over a fresh database on each engine, admin principal 'admin'."""
    return make_manager()


@pytest.fixture
def token_server() -> Callable[..., TokenServer]:
    """Build (not start) a loopback token server that knows the test OAuth client; use it
    with ``with``: ``with token_server(slow_seconds=5) as slow: ...``."""

    def build(**options: Any) -> TokenServer:
        return TokenServer(clients={CLIENT: SECRET}, **options)

    return build


@pytest.fixture
def server(token_server: Callable[..., TokenServer]) -> Iterator[TokenServer]:
    """A strict provider on loopback: rotates refresh tokens, revokes the grant on replay."""
    with token_server(access_token_lifetime=3600) as running:
        yield running


@pytest.fixture
def oauth_credential() -> Callable[..., OAuth2]:
    """Build an OAuth2 credential for the test client at a token server: a fresh grant
    unless ``refresh_token`` is given; other fields by keyword."""

    def build(server: TokenServer, **overrides: Any) -> OAuth2:
        values: dict[str, Any] = {
            "token_url": server.url,
            "client_id": CLIENT,
            "client_secret": SECRET,
        }
        if "refresh_token" not in overrides:
            values["refresh_token"] = server.grant(CLIENT)
        return OAuth2(**(values | overrides))

    return build
