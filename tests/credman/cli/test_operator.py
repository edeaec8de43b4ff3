"""The command line as an operator meets it: exit codes, plain messages, JSON, narrow
terminals, options that mean one thing, a daemon that stops when told, nothing created by
commands that only read."""

from __future__ import annotations

import ctypes
import getpass
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.main import get_command
from typer.testing import CliRunner

from credman.cli import app
from credman.testing.provider import TokenServer

DEAD_URL = "http://127.0.0.1:9/token"  # the discard port: nothing listens on loopback


class Cli:
    """Runs `python -m credman` against one database and key file, 80 columns wide."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = os.environ | {
            "CREDMAN_DATABASE_URL": f"sqlite:///{directory / 'c.db'}",
            "CREDMAN_KEY_FILE": str(directory / "c.key"),
            "COLUMNS": "80",
            "NO_COLOR": "1",
        }

    def __call__(
        self, *args: str, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "credman", *args],
            env=self.env | env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, **env: str) -> str:
        """Run; the command must succeed; its stdout."""
        result = self(*args, **env)
        assert 0 == result.returncode, result.stderr
        return result.stdout

    def error(self, *args: str, **env: str) -> str:
        """Run; the command must fail with exit 1 and one error line; that line."""
        result = self(*args, **env)
        lines = result.stderr.strip().splitlines()
        assert (1, 1) == (result.returncode, len(lines)), result.stderr
        assert lines[0].startswith("error: ")
        return lines[0]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    runner = Cli(tmp_path)
    runner.ok("init")
    return runner


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# -- nothing created by commands that only read ------------------------------------------


def test_list_on_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    """`list` against a database that does not exist says so and leaves no folder or file."""
    target = tmp_path / "nodir" / "x.db"
    runner = Cli(tmp_path)
    runner.ok("init")
    line = runner.error("--database-url", f"sqlite:///{target}", "list")
    assert f"no credman database at {target} (run credman init)" in line
    assert not (tmp_path / "nodir").exists()


# -- plain messages ------------------------------------------------------------------------


def test_revoking_twice_says_already_revoked(cli: Cli) -> None:
    """A second revoke reads "already revoked"; -v adds the trigger and state."""
    cli.ok("add", "bearer", "t", "--token-env", "T", T="x")
    cli.ok("revoke", "t", "--reason", "leaked")
    assert "error: credential 't' is already revoked" == cli.error("revoke", "t", "--reason", "x")
    verbose = cli.error("-v", "revoke", "t", "--reason", "x")
    assert "(trigger 'revoke' in state REVOKED)" in verbose


def test_refreshing_an_api_key_is_refused_plainly(cli: Cli) -> None:
    """`refresh --force` of an API key says it cannot be refreshed, with no guard jargon."""
    cli.ok("add", "api-key", "k", "--api-key-env", "K", K="sk_1")
    line = cli.error("refresh", "k", "--force")
    assert "credential 'k' cannot be refreshed" in line
    assert "guard" not in line


# -- failures are failures ---------------------------------------------------------------


def test_failed_refresh_exits_nonzero_with_the_reason(cli: Cli) -> None:
    """With the provider down, `refresh --force` prints why and exits 1 (the token still works)."""
    cli.ok(
        *("add", "oauth2", "o", "--token-url", DEAD_URL, "--client-id", "c"),
        *("--access-token-env", "AT", "--refresh-token-env", "RT", "--expires-in", "3600"),
        AT="at-1",
        RT="rt-1",
    )
    line = cli.error("refresh", "o", "--force")
    assert "refresh of 'o' failed" in line
    assert "still works" in line


# -- ids: add refuses, update keeps, the right option names --------------------------------


def test_add_refuses_an_existing_id(cli: Cli) -> None:
    """A second `add` with the same id is refused and the first credential is untouched."""
    cli.ok(
        *("add", "api-key", "stripe", "--api-key-env", "K", "--header", "Authorization"),
        *("--prefix", "Bearer "),
        K="sk_first",
    )
    line = cli.error("add", "api-key", "stripe", "--api-key-env", "K", K="sk_second")
    assert "'stripe' already exists (active); update it instead" in line
    assert "Authorization: Bearer sk_first\n" == cli.ok("header", "stripe")


def test_update_changes_named_fields_and_keeps_the_rest(cli: Cli) -> None:
    """`update --secret-env key=VAR` replaces the key; header and prefix stay."""
    cli.ok(
        *("add", "api-key", "stripe", "--api-key-env", "K", "--header", "Authorization"),
        *("--prefix", "Bearer "),
        K="sk_old",
    )
    cli.ok("update", "stripe", "--secret-env", "key=K2", "--reason", "rotated", K2="sk_new")
    assert "Authorization: Bearer sk_new\n" == cli.ok("header", "stripe")
    assert 2 == json.loads(cli.ok("status", "stripe", "--json"))["version"]


def test_update_of_a_public_field_keeps_the_stored_secret(cli: Cli) -> None:
    """`update --set header=...` keeps the key itself, not its masked dump."""
    cli.ok("add", "api-key", "stripe", "--api-key-env", "K", K="sk_kept")
    cli.ok("update", "stripe", "--set", "header=X-Api-Key")
    assert "X-Api-Key: sk_kept\n" == cli.ok("header", "stripe")


def test_purge_frees_a_revoked_id(cli: Cli) -> None:
    """`purge` refuses a live credential; after `revoke`, `purge` lets `add` reuse the id."""
    cli.ok("add", "bearer", "t", "--token-env", "T", T="old")
    assert "cannot be purged" in cli.error("purge", "t")
    cli.ok("revoke", "t", "--reason", "rotated")
    assert "purge it first" in cli.error("add", "bearer", "t", "--token-env", "T", T="new")
    cli.ok("purge", "t")
    cli.ok("add", "bearer", "t", "--token-env", "T", T="new")
    assert "new\n" == cli.ok("token", "t")


def test_token_prints_the_bare_secret_and_header_the_line(cli: Cli) -> None:
    """For an API key with a prefix, `token` prints only the key; `header` the whole line."""
    cli.ok(
        *("add", "api-key", "stripe", "--api-key-env", "K", "--header", "Authorization"),
        *("--prefix", "Bearer "),
        K="sk_123",
    )
    assert ("sk_123\n", "Authorization: Bearer sk_123\n") == (
        cli.ok("token", "stripe"),
        cli.ok("header", "stripe"),
    )


def test_key_file_inside_add_api_key_is_now_api_key_file(cli: Cli, tmp_path: Path) -> None:
    """`add api-key --api-key-file` reads the key; `--key-file` there is no longer an option."""
    (tmp_path / "stripe.key").write_text("sk_file\n")
    cli.ok("add", "api-key", "s", "--api-key-file", str(tmp_path / "stripe.key"))
    assert "sk_file\n" == cli.ok("token", "s")
    refused = cli("add", "api-key", "s2", "--key-file", str(tmp_path / "stripe.key"))
    assert (2, True) == (refused.returncode, "No such option" in refused.stderr)


def test_malformed_pem_is_refused_at_add(cli: Cli) -> None:
    """A JWT credential whose private key is not a readable PEM key is never stored."""
    broken = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    args = ("add", "jwt", "gcp", "--token-url", "https://oauth2.example/token")
    args += ("--issuer", "i", "--subject", "s", "--audience", "a", "--algorithm", "ES256")
    line = cli.error(*args, "--private-key-env", "PEM", PEM=broken)
    assert "private_key: not a readable PEM private key" in line
    assert "not a key" not in line
    assert [] == json.loads(cli.ok("list", "--json"))
    cli.ok(*args, "--private-key-env", "PEM", PEM=_ec_pem())


def test_add_attaches_a_probe(cli: Cli) -> None:
    """`--probe-url URL --probe-expect 200,204` stores a probe that `credman test` uses."""
    cli.ok(
        *("add", "bearer", "b", "--token-env", "T", "--probe-url", "http://127.0.0.1:9/me"),
        *("--probe-expect", "200,204"),
        T="x",
    )
    probe = json.loads(cli.ok("status", "b", "--json"))["metadata"]["probe"]
    assert ("http://127.0.0.1:9/me", [200, 204]) == (probe["url"], probe["expect"])
    assert 1 == cli("test", "b").returncode


def test_add_test_requests_a_token_before_storing(cli: Cli) -> None:
    """`add ... --test` stores only what the provider accepted, with the tokens it returned;
    a refused test exits 1 with one line and stores nothing."""
    with TokenServer(clients={"app": "app-secret"}) as provider:
        base = ("add", "oauth2", "--token-url", provider.url, "--client-id", "app")
        secrets = ("--client-secret-env", "CS", "--refresh-token-env", "RT")
        line = cli.error(*base[:2], "bad", *base[2:], *secrets, "--test", CS="app-secret", RT="x")
        assert "test of 'bad' failed, nothing stored" in line and "invalid_grant" in line
        given = provider.grant("app")
        stored = cli.ok(*base[:2], "crm", *base[2:], *secrets, "--test", CS="app-secret", RT=given)
        assert "stored oauth2 'crm': ACTIVE (version 1, tested)" in stored
        assert not provider.is_valid_refresh_token(given)  # spent: the new one was stored
        assert provider.is_valid(cli.ok("token", "crm").strip())
    assert ["crm"] == [row["credential_id"] for row in json.loads(cli.ok("list", "--json"))]


def test_an_error_line_cannot_drive_the_terminal(cli: Cli, tmp_path: Path) -> None:
    """A path (or any text) in an error is printed with its control characters escaped: an
    ESC from a hostile file name never reaches the terminal."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = cli.error("diagram", "-o", str(blocker / "x\x1b]8;;evil\x07x"))
    assert "\x1b" not in line and "\x07" not in line
    assert "x\\x1b]8;;evil\\x07x" in line


# -- who acts --------------------------------------------------------------------------


def test_operator_is_recorded_and_as_tries_a_grant(cli: Cli) -> None:
    """Without --as the history names operator:<os user>; --as P is refused without a grant."""
    cli.ok("add", "bearer", "t", "--token-env", "T", T="tok")
    steps = json.loads(cli.ok("history", "t", "--json"))
    assert f"operator:{getpass.getuser()}" == steps[-1]["principal"]
    assert "'worker'" in cli.error("--as", "worker", "token", "t")
    cli.ok("grant", "worker", "t", "use")
    assert "tok\n" == cli.ok("--as", "worker", "token", "t")


# -- output ------------------------------------------------------------------------------


def test_listings_speak_json_with_the_documented_fields(cli: Cli) -> None:
    """`list`, `status`, `history`, `grants` and `audit tail` print JSON with stable names."""
    cli.ok("add", "bearer", "t", "--token-env", "T", "--expires-in", "3600", T="x")
    cli.ok("grant", "worker", "t*", "use")
    listed = json.loads(cli.ok("list", "--json"))
    assert ["t"] == [item["credential_id"] for item in listed]
    assert {"credential_id", "type", "state", "version", "expires_at", "next_due_at"} <= set(
        listed[0]
    )
    assert 0 == json.loads(cli.ok("status", "t", "--json"))["attempts"]
    assert ["CREATED", "ACTIVE"] == [
        s["to_state"] for s in json.loads(cli.ok("history", "t", "--json"))
    ]
    assert [["use"]] == [g["permissions"] for g in json.loads(cli.ok("grants", "--json"))]
    actions = [e["action"] for e in json.loads(cli.ok("audit", "tail", "--json"))]
    assert "grant" in actions


def test_tables_fit_80_columns(cli: Cli) -> None:
    """At 80 columns no line of `list`, `grants`, `history` or `audit tail` is longer or cut."""
    long_id = "github-production-integration"
    cli.ok("add", "bearer", long_id, "--token-env", "T", "--expires-in", "86400", T="x")
    cli.ok("grant", "sync-worker-eu", "github-*", "use", "audit")
    for command in (("list",), ("grants",), ("history", long_id), ("audit", "tail")):
        lines = cli.ok(*command).splitlines()
        assert [] == [line for line in lines if len(line) > 80], command
    assert long_id in cli.ok("list")


def test_help_shows_no_python_types() -> None:
    """No command's help shows `<bool>`, `<str>`, `<int>` or `<list[...]>` artefacts."""
    runner = CliRunner()
    paths: list[list[str]] = [[]]

    def walk(command: object, path: list[str]) -> None:
        for name, child in sorted(getattr(command, "commands", {}).items()):
            paths.append([*path, name])
            walk(child, [*path, name])

    walk(get_command(app), [])
    for path in paths:
        text = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}).output
        assert [] == [t for t in ("<bool>", "<str>", "<int", "<float", "<list[") if t in text], path


def test_version_and_completion_are_offered() -> None:
    """`credman --version` prints the version; `--show-completion` exists."""
    result = subprocess.run(
        [sys.executable, "-m", "credman", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (0, True) == (result.returncode, result.stdout.startswith("credman "))
    assert "--show-completion" in CliRunner().invoke(app, ["--help"]).output


# -- serve -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--interval", "-1"),
        ("--interval", "0"),
        ("--interval", "nan"),
        ("--interval", "inf"),
        ("--workers", "0"),
        ("--workers", "100000"),
        ("--summary-every", "0"),
    ],
)
def test_serve_refuses_absurd_numbers(cli: Cli, args: tuple[str, str]) -> None:
    """`serve` refuses a non-positive, non-finite or huge number as a usage error (exit 2)."""
    result = cli("serve", *args)
    assert (2, True) == (result.returncode, args[0] in result.stderr)


def test_serve_says_what_it_does_and_stops_on_sigterm(cli: Cli) -> None:
    """`serve` announces database, credentials and next due time, then exits 0 on SIGTERM."""
    cli.ok("add", "bearer", "t", "--token-env", "T", "--expires-in", "3600", T="x")
    process = subprocess.Popen(
        [sys.executable, "-m", "credman", "serve", "--interval", "0.5"],
        env=cli.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # blocks until the announcement
        process.send_signal(signal.SIGTERM)
        assert 0 == process.wait(timeout=60)
        rest = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "1 credentials (1 active)" in first
    assert str(cli.directory / "c.db") in first
    assert "next due" in first
    assert "credman.cli" not in first  # no module:function:line without -v
    assert "stopped" in rest


def _tgkill(pid: int, tid: int, number: int) -> None:
    """Send ``number`` to one thread of ``pid`` (Linux tgkill), as the kernel may do with a
    process-directed signal."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(234, pid, tid, number) != 0:  # SYS_tgkill on x86-64
        raise OSError(ctypes.get_errno(), "tgkill")


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
    reason="tgkill by syscall number: Linux x86-64",
)
def test_serve_stops_on_a_sigterm_another_thread_received(cli: Cli) -> None:
    """A SIGTERM the kernel hands to a worker thread, not the main one, still stops `serve`
    at once: before the fix the main thread slept through it until the next summary (an
    hour here), so a supervisor's stop went unnoticed (seen in bench-scale)."""
    cli.ok("add", "bearer", "t", "--token-env", "T", "--expires-in", "3600", T="x")
    process = subprocess.Popen(
        [sys.executable, "-m", "credman", "serve", "--interval", "0.5", "--summary-every", "3600"],
        env=cli.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        process.stderr.readline()  # the announcement: the scheduler starts right after it
        deadline, others = time.monotonic() + 30, []
        while not others and time.monotonic() < deadline:
            others = sorted(int(t) for t in os.listdir(f"/proc/{process.pid}/task"))[1:]
            time.sleep(0.05)
        assert others, "serve runs a scheduler thread"
        time.sleep(0.5)  # the scheduler's own threads are up, not only the first
        _tgkill(process.pid, others[-1], signal.SIGTERM)
        assert 0 == process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_with_a_config_says_what_it_does_without_the_webhook_path(cli: Cli) -> None:
    """`serve --config` announces database, next due time, the sweep and the webhook's
    origin (a webhook's path can be its secret: Slack's are), then exits 0 on SIGTERM."""
    pytest.importorskip("uvicorn")
    (cli.directory / "hook.secret").write_text("whsec-canary")
    (cli.directory / "hook.secret").chmod(0o600)
    config = cli.directory / "serve.toml"
    config.write_text(
        '[notify]\nwebhook_url = "https://hooks.example/services/T0/B0/PATHSECRET"\n'
        f'webhook_secret_file = "{cli.directory / "hook.secret"}"\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "credman", "serve", "--config", str(config)],
        env=cli.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        process.send_signal(signal.SIGTERM)
        assert 0 == process.wait(timeout=60)
        rest = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert str(cli.directory / "c.db") in first and "sweeping every 30 s" in first
    assert "webhook https://hooks.example/..." in first
    assert "PATHSECRET" not in first + rest and "whsec-canary" not in first + rest
