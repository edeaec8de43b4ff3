"""Canary sweep: planted secrets never reach the database files, history, audit, logs, errors,
reprs or CLI output, after successful and failing operations alike."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update

from credman import (
    ApiKey,
    BasicAuth,
    BearerToken,
    CredentialError,
    CredentialManager,
    OAuth2,
)
from credman.storage.repository import CREDENTIALS
from credman.storage.tables import AuditEventRow, HistoryRow

URL = "https://provider.example/token"


def _credentials(canary: Callable[[str], str]) -> dict[str, Any]:
    return {
        "oauth": OAuth2(
            token_url=URL,
            client_id="cid",
            client_secret=canary("client-secret"),
            access_token=canary("access"),
            refresh_token=canary("refresh"),
        ),
        "key": ApiKey(key=canary("api-key"), query_param="api_key"),
        "basic": BasicAuth(username="svc", password=canary("password")),
        "bearer": BearerToken(token=canary("bearer"), expires_in=3600),
    }


def _exercise(manager: CredentialManager, credentials: dict[str, Any], canary: Any) -> list[str]:
    """Run successful and failing operations; return every message and repr they produced."""
    seen: list[str] = [repr(manager)]
    for name, credential in credentials.items():
        seen.append(repr(manager.store(name, credential, principal="admin")))
        got = manager.get(name, principal="admin")
        seen += [repr(got), str(got), repr(manager.info(name, principal="admin"))]
        seen.append(repr(manager.history(name, principal="admin")))
    failing: list[Callable[[], object]] = [
        lambda: manager.get("oauth", principal="intruder"),
        lambda: manager.store(
            "x y", BasicAuth(username="u", password=canary("bad-id")), principal="admin"
        ),
        lambda: BasicAuth(username="u:v", password=canary("invalid")),
        lambda: OAuth2(
            token_url=f"https://u:{canary('in-url')}@x.example/t",
            client_id="c",
            refresh_token=canary("rt"),
        ),
        lambda: ApiKey(key=canary("huge") * 2000),
        lambda: manager.store(
            "basic", BasicAuth(username="u", password=canary("denied")), principal="intruder"
        ),
    ]
    for call in failing:
        with pytest.raises(CredentialError) as raised:
            call()
        seen += [str(raised.value), repr(raised.value)]
    seen.append(
        repr(
            manager.store(
                "basic", BasicAuth(username="u", password=canary("new")), principal="admin"
            )
        )
    )
    seen.append(repr(manager.revoke("oauth", principal="admin", reason="sweep")))
    seen.append(repr(manager.audit_events(principal="admin", limit=1000)))
    return seen


def _database_bytes(database_url: str) -> bytes:
    path = Path(database_url.removeprefix("sqlite:///"))
    return b"".join(
        p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def _table_text(manager: CredentialManager) -> str:
    engine = create_engine(manager.engine.url)
    with engine.connect() as connection:
        rows = [
            *connection.execute(select(HistoryRow.__table__)),  # type: ignore[attr-defined]
            *connection.execute(select(AuditEventRow.__table__)),  # type: ignore[attr-defined]
            *connection.execute(select(CREDENTIALS)),
        ]
    engine.dispose()
    return "\n".join(repr(tuple(row)) for row in rows)


def _needles(canaries: list[str]) -> list[bytes]:
    return [n for c in canaries for n in (c.encode(), base64.b64encode(c.encode()))]


def test_no_canary_anywhere_after_every_operation(
    manager: CredentialManager,
    database_url: str,
    canary: Callable[[str], str],
    log_lines: list[str],
) -> None:
    """Store, get, update, revoke and failing calls leave no canary in any output or table."""
    planted: list[str] = []

    def plant(label: str) -> str:
        value = canary(label)
        planted.append(value)
        return value

    logs_before = len(log_lines)
    seen = _exercise(manager, _credentials(plant), plant)
    haystacks = [
        "\n".join(seen).encode(),
        _table_text(manager).encode(),
        "\n".join(log_lines[logs_before:]).encode(),
    ]
    if database_url.startswith("sqlite"):
        manager.close()
        haystacks.append(_database_bytes(database_url))
    assert log_lines[logs_before:], "the sweep must see some log output to be meaningful"
    leaks = [n for n in _needles(planted) for h in haystacks if n in h]
    assert [] == leaks


def test_decryption_failure_leaks_nothing(
    manager: CredentialManager, canary: Callable[[str], str], log_lines: list[str]
) -> None:
    """A DecryptionError's message, repr and the logs carry no secret."""
    secret = canary("tamper")
    manager.store("c", BasicAuth(username="u", password=secret), principal="admin")
    engine = create_engine(manager.engine.url)
    with engine.begin() as connection:
        connection.execute(update(CREDENTIALS).values(public={"username": "x"}))
    engine.dispose()
    with pytest.raises(CredentialError) as raised:
        manager.get("c", principal="admin")
    assert secret not in str(raised.value) + repr(raised.value) + "\n".join(log_lines)


def test_cli_output_carries_no_secret(tmp_path: Path, canary: Callable[[str], str]) -> None:
    """Adding, listing, inspecting and failing through the CLI prints no secret."""
    secret = canary("cli")
    env = os.environ | {
        "CREDMAN_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "CREDMAN_KEY_FILE": str(tmp_path / "c.key"),
        "SECRET_VALUE": secret,
    }
    commands = [
        ["init"],
        ["add", "api-key", "k", "--api-key-env", "SECRET_VALUE"],
        ["add", "basic", "b", "--username", "u", "--password-env", "SECRET_VALUE"],
        ["add", "basic", "bad", "--username", "a:b", "--password-env", "SECRET_VALUE"],
        ["-v", "status", "k"],
        ["-v", "list"],
        ["history", "b"],
        ["--as", "intruder", "status", "k"],
        ["audit", "tail", "-n", "100"],
        ["revoke", "k", "--reason", "done"],
    ]
    output = ""
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-m", "credman", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output += result.stdout + result.stderr
    assert "stored api_key 'k'" in output
    assert secret not in output
    assert secret.encode() not in _database_bytes(env["CREDMAN_DATABASE_URL"])
