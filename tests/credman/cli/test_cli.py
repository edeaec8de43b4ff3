"""The command line, run as a user runs it: one-line errors, secrets never from argv."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from credman import CredentialManager
from credman.crypto.tokens import parse_token


class Cli:
    """Runs `python -m credman` against one database and key file."""

    def __init__(self, directory: Path) -> None:
        self.env = os.environ | {
            "CREDMAN_DATABASE_URL": f"sqlite:///{directory / 'c.db'}",
            "CREDMAN_KEY_FILE": str(directory / "c.key"),
            "COLUMNS": "200",
        }
        self.key_file = directory / "c.key"

    def __call__(
        self, *args: str, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "credman", *args],
            env=self.env | env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    runner = Cli(tmp_path)
    assert 0 == runner("init").returncode
    return runner


def test_init_creates_a_private_key_file(cli: Cli) -> None:
    """`credman init` leaves a 0600 key file and is safe to run again."""
    assert 0o600 == stat.S_IMODE(os.stat(cli.key_file).st_mode)
    again = cli("init")
    assert (0, True) == (again.returncode, "exists; keeping it" in again.stdout)


def test_secrets_come_from_env_file_or_stdin(cli: Cli, tmp_path: Path) -> None:
    """Each secret source works: env var, file, stdin."""
    (tmp_path / "pw").write_text("from-file\n")
    assert (
        0
        == cli("add", "basic", "a", "--username", "u", "--password-env", "PW", PW="env").returncode
    )
    assert (
        0
        == cli(
            "add", "basic", "b", "--username", "u", "--password-file", str(tmp_path / "pw")
        ).returncode
    )
    assert 0 == cli("add", "bearer", "c", "--token-file", "-", stdin="from-stdin").returncode
    listing = cli("list").stdout
    assert all(name in listing for name in ("a", "b", "c"))


def test_there_is_no_way_to_pass_a_secret_on_argv(cli: Cli) -> None:
    """Options like --password or --token do not exist."""
    for args in (
        ("add", "basic", "x", "--username", "u", "--password", "p"),
        ("add", "bearer", "x", "--token", "t"),
    ):
        result = cli(*args)
        assert 0 != result.returncode
        assert "No such option" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (
            ("add", "basic", "x", "--username", "a:b", "--password-env", "PW"),
            {"PW": "p"},
            "username",
        ),
        (("add", "basic", "x", "--username", "u", "--password-env", "NOPE"), {}, "NOPE is not set"),
        (("add", "basic", "x", "--username", "u"), {}, "password: required"),
        (("add", "basic", "x", "--username", "u", "--password-env", "PW"), {"PW": ""}, "password"),
        (
            (
                "add",
                "oauth2",
                "x",
                "--token-url",
                "http://evil.example/t",
                "--client-id",
                "c",
                "--refresh-token-env",
                "PW",
            ),
            {"PW": "r"},
            "token_url",
        ),
        (("add", "bearer", "bad id", "--token-env", "PW"), {"PW": "t"}, "credential_id"),
        (
            ("add", "bearer", "x", "--token-env", "PW", "--expires-in", "-3"),
            {"PW": "t"},
            "expires_in",
        ),
        (("status", "missing"), {}, "no credential 'missing'"),
        (("--as", "bob", "list"), {}, None),
        (("grant", "bob", "x", "fly"), {}, "permissions"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    cli: Cli, args: tuple[str, ...], env: dict[str, str], words: str | None
) -> None:
    """A CredentialError prints one line naming the problem, exit code 1, no traceback."""
    result = cli(*args, **env)
    if words is None:  # listing with no grants is not an error: it is empty
        assert 0 == result.returncode
        return
    assert 1 == result.returncode
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    assert lines[0].startswith("error: ")
    assert words in lines[0]
    assert "Traceback" not in result.stderr


def test_unsafe_key_file_is_one_line(cli: Cli) -> None:
    """A world-readable key file is refused in one line telling how to fix it."""
    os.chmod(cli.key_file, 0o644)
    result = cli("list")
    assert (1, 1) == (result.returncode, len(result.stderr.strip().splitlines()))
    assert "chmod 600" in result.stderr


def test_denied_access_is_visible_in_audit_tail(cli: Cli) -> None:
    """Repeated denials for one principal show up with `audit tail --denied`."""
    cli("add", "bearer", "t", "--token-env", "PW", PW="x")
    for _ in range(3):
        assert 1 == cli("--as", "mallory", "status", "t").returncode
    tail = cli("audit", "tail", "--denied").stdout
    assert 3 == tail.count("mallory")


def test_audit_verify_and_head(cli: Cli) -> None:
    """`audit verify` succeeds on an intact chain and `audit head` prints seq:hash."""
    cli("add", "bearer", "t", "--token-env", "PW", PW="x")
    assert 0 == cli("audit", "verify").returncode
    seq, digest = cli("audit", "head").stdout.strip().split(":")
    assert (1, 64) == (int(seq), len(digest))


def test_history_and_revoke(cli: Cli) -> None:
    """revoke needs --reason; history shows the path with the reason."""
    cli("add", "bearer", "t", "--token-env", "PW", PW="x")
    assert 0 != cli("revoke", "t").returncode
    assert 0 == cli("revoke", "t", "--reason", "leaked").returncode
    history = cli("history", "t").stdout
    assert "REVOKED" in history and "leaked" in history


def test_token_prints_a_valid_token_for_the_principal_acted_as(cli: Cli) -> None:
    """`credman --as P token ID` prints the token only when P holds `use`."""
    cli("add", "bearer", "t", "--token-env", "PW", PW="tok-123")
    assert 1 == cli("--as", "worker", "token", "t").returncode
    cli("grant", "worker", "t", "use")
    result = cli("--as", "worker", "token", "t")
    assert (0, "tok-123\n") == (result.returncode, result.stdout)


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
