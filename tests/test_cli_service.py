"""The CLI's service commands: principal add/list/rotate/revoke and serve's start checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import Cli

from credman import CredentialManager
from credman.crypto.tokens import parse_token


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A CLI over a fresh database and key file."""
    runner = Cli(tmp_path)
    assert 0 == runner("init").returncode
    return runner


def test_principal_add_prints_the_token_alone_on_the_last_line(cli: Cli, tmp_path: Path) -> None:
    """The token is stdout's last line and authenticates; list shows its id, not the token."""
    added = cli("principal", "add", "etl", "--expires-in", "90d", "--description", "ETL")
    token = added.stdout.splitlines()[-1]
    assert (0, True) == (added.returncode, parse_token(token) is not None)
    with CredentialManager(cli.env["CREDMAN_DATABASE_URL"], str(cli.key_file)) as manager:
        assert "etl" == manager.authenticate(token, source="cli-test")
    listed = cli("principal", "list")
    assert token.split("_")[1] in listed.stdout and token not in listed.stdout


def test_principal_rotate_and_revoke(cli: Cli) -> None:
    """rotate prints a new token; revoke makes it fail."""
    cli("principal", "add", "etl")
    rotated = cli("principal", "rotate", "etl").stdout.splitlines()[-1]
    assert 0 == cli("principal", "revoke", "etl").returncode
    with CredentialManager(cli.env["CREDMAN_DATABASE_URL"], str(cli.key_file)) as manager:
        assert [True] == [
            p.revoked_at is not None for p in manager.list_principals(principal="admin")
        ]
    assert parse_token(rotated) is not None


def test_serve_refuses_plaintext_on_a_public_bind(cli: Cli) -> None:
    """--http 0.0.0.0 without TLS exits 1 with one line naming the setting."""
    result = cli("serve", "--http", "0.0.0.0:8443")
    assert (1, 1) == (result.returncode, len(result.stderr.strip().splitlines()))
    assert result.stderr.startswith("error: http:")
