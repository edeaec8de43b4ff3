"""The audit trail outside the database (issue #16, item 8): signed heads the service
exports and ``verify --heads`` checks, history rows bound into the chain, export of the
rows as JSON lines or syslog, and what PostgreSQL's table owner can do to the triggers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from credman import ApiKey, BasicAuth, CredentialManager, CredentialValidationError
from credman.audit_export import head_payload
from credman.server import load_settings


def _work(manager: CredentialManager, name: str) -> None:
    """Three audited changes: create, update, revoke (four history rows: create and
    activate, update, revoke)."""
    manager.store(name, BasicAuth(username="u", password="p"), principal="admin")
    manager.store(name, BasicAuth(username="u", password="q"), principal="admin")
    manager.revoke(name, principal="admin")


def _grants(manager: CredentialManager, count: int) -> None:
    """``count`` audited changes that write no history row (grants)."""
    for n in range(count):
        manager.grant("bob", f"p{n}-{uuid.uuid4().hex[:6]}", ["use"], principal="admin")


@contextmanager
def _attacker(url: str, *tables: str) -> Iterator[Connection]:
    """A raw connection with the append-only triggers of ``tables`` off (the table owner
    may do this on PostgreSQL; anyone who can write the file may on SQLite)."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for table in tables:
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")
                else:
                    connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_update")
                    connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_delete")
            yield connection
    finally:
        engine.dispose()


def _truncate(url: str, keep: int) -> None:
    """Delete every audit row after ``keep`` and move the head back to it."""
    with _attacker(url, "audit_event") as connection:
        connection.execute(text("DELETE FROM audit_event WHERE seq > :keep"), {"keep": keep})
        previous = connection.execute(
            text("SELECT hash FROM audit_event WHERE seq = :keep"), {"keep": keep}
        ).scalar_one()
        connection.execute(
            text("UPDATE audit_head SET seq = :keep, hash = :hash"),
            {"keep": keep, "hash": previous},
        )


def _ed25519(tmp_path: Path, name: str = "head") -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / f"{name}.key", tmp_path / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


# -- signed heads ---------------------------------------------------------------------------


def test_an_untouched_database_passes_against_every_exported_head(
    manager: CredentialManager, tmp_path: Path
) -> None:
    """Heads exported between changes: all are found on the chain; the file is 0600 JSON
    lines with the seq, hash, time, database (no password) and a MAC."""
    heads = tmp_path / "heads.jsonl"
    exporter = manager.audit_head_exporter(file=heads)
    for name in ("a", "b", "c"):
        _work(manager, name)
        exporter.export()
    report = manager.verify_audit(heads=heads)
    lines = [json.loads(line) for line in heads.read_text().splitlines()]
    assert (True, 3, 12, 0) == (
        report.ok,
        report.heads_checked,
        report.history_checked,
        report.history_unchecked,
    )
    assert [3, 6, 9] == [line["seq"] for line in lines]
    assert {"format", "seq", "hash", "at", "database", "mac"} == set(lines[0])
    assert manager.database_url == lines[0]["database"]
    assert 0o600 == stat.S_IMODE(heads.stat().st_mode)


def test_a_truncated_tail_with_a_moved_head_fails_against_the_heads(
    manager: CredentialManager, database_url: str, tmp_path: Path
) -> None:
    """Rows deleted from the tail and the head moved back to match pass a plain verify but
    fail against the head exported after them, naming that row. (The deleted rows bind no
    history: rows that did would leave their history rows unbound, which verify reports
    on its own.)"""
    heads = tmp_path / "heads.jsonl"
    exporter = manager.audit_head_exporter(file=heads)
    _work(manager, "a")
    exporter.export()  # head 3
    _grants(manager, 3)
    exporter.export()  # head 6
    _truncate(database_url, keep=4)
    assert manager.verify_audit().ok  # nothing inside the database shows it
    report = manager.verify_audit(heads=heads)
    assert (False, 6) == (report.ok, report.first_bad_seq)
    assert "anchored row 6 is missing or differs (newer than the chain's head)" in str(
        report.problem
    )


def test_a_forged_head_line_is_refused(manager: CredentialManager, tmp_path: Path) -> None:
    """A head edited (or written) without the keyring fails on its MAC, naming the line."""
    heads = tmp_path / "heads.jsonl"
    exporter = manager.audit_head_exporter(file=heads)
    _work(manager, "a")
    exporter.export()
    exporter.export()
    lines = heads.read_text().splitlines()
    forged = json.loads(lines[1]) | {"seq": 2}
    heads.write_text(lines[0] + "\n" + json.dumps(forged) + "\n")
    report = manager.verify_audit(heads=heads)
    assert (False, None) == (report.ok, report.first_bad_seq)
    assert "exported head on line 2: its MAC does not match" in str(report.problem)


def test_ed25519_heads_verify_with_the_public_key_alone(
    manager: CredentialManager, tmp_path: Path
) -> None:
    """With a signing key, a third party checks a head with the public key and the
    documented payload only; verify --public-key checks every line, and another key fails."""
    private, public = _ed25519(tmp_path)
    heads = tmp_path / "heads.jsonl"
    _work(manager, "a")
    manager.audit_head_exporter(file=heads, signing_key=private).export()
    head = json.loads(heads.read_text())
    loaded = serialization.load_pem_public_key(public.read_bytes())
    payload = json.dumps(
        {k: head[k] for k in ("format", "seq", "hash", "at", "database")},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert payload == head_payload(head)
    loaded.verify(base64.b64decode(head["ed25519"]), payload)  # type: ignore[union-attr]
    assert manager.verify_audit(heads=heads, public_key=public).ok
    _, other = _ed25519(tmp_path, "other")
    report = manager.verify_audit(heads=heads, public_key=other)
    assert (False, True) == (report.ok, "Ed25519 signature" in str(report.problem))


def test_heads_are_posted_to_a_webhook_signed_without_the_secret_in_the_body(
    manager: CredentialManager,
) -> None:
    """The head webhook POSTs the same line, with the webhook HMAC header."""
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            got.append((dict(self.headers), self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    secret = b"head-webhook-secret-123"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/heads"
        _work(manager, "a")
        manager.audit_head_exporter(webhook_url=url, webhook_secret=secret).export()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    headers, body = got[0]
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert (expected, "audit_head", 3) == (
        headers["X-Credman-Signature"],
        headers["X-Credman-Event"],
        json.loads(body)["seq"],
    )
    assert secret not in body


def test_a_head_webhook_needs_a_secret(manager: CredentialManager) -> None:
    with pytest.raises(CredentialValidationError, match="head_webhook_url: needs the webhook"):
        manager.audit_head_exporter(webhook_url="https://anchor.example/h")


def test_audit_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """[audit] head_file/head_interval in TOML, CREDMAN_AUDIT_HEAD_INTERVAL wins; a bad
    interval is one line naming it."""
    config = tmp_path / "credman.toml"
    config.write_text(
        f'[server]\nhttp = "127.0.0.1:0"\n[audit]\nhead_file = "{tmp_path}/h.jsonl"\n'
        "head_interval = 60\n"
    )
    settings = load_settings(config, environ={"CREDMAN_AUDIT_HEAD_INTERVAL": "30"})
    assert (f"{tmp_path}/h.jsonl", 30.0) == (settings.head_file, settings.head_interval)
    with pytest.raises(CredentialValidationError, match="head_interval: seconds"):
        load_settings(config, environ={"CREDMAN_AUDIT_HEAD_INTERVAL": "0.5"})


# -- history bound into the chain -------------------------------------------------------------


@pytest.mark.parametrize(
    ("tampering", "statement", "problem"),
    [
        (
            "altered",
            "UPDATE credential_history SET principal = 'someone' WHERE id = 3",
            "history row(s) 3 differ from what audit row 2 bound (altered)",
        ),
        (
            "deleted",
            "DELETE FROM credential_history WHERE id = 2",
            "history row 2, bound by audit row 1, is deleted",
        ),
        (
            "inserted",
            "INSERT INTO credential_history (credential_id, from_state, to_state, trigger, "
            "principal, reason, at, version) VALUES ('a', 'ACTIVE', 'ACTIVE', 'update', "
            "'admin', NULL, '2026-01-01 00:00:00', 9)",
            "history row 5 is bound by no audit row (inserted)",
        ),
    ],
)
def test_a_changed_history_row_is_reported(
    manager: CredentialManager, database_url: str, tampering: str, statement: str, problem: str
) -> None:
    """History rows (1, 2: create and activate; 3: update; 4: revoke) are bound by the
    audit rows of their operations (1, 2, 3): an edited, deleted or inserted one fails."""
    _work(manager, "a")
    assert manager.verify_audit().ok
    with _attacker(database_url, "credential_history") as connection:
        connection.execute(text(statement))
    report = manager.verify_audit()
    assert (False, problem) == (report.ok, report.problem), tampering
    assert report.bad_history_id == int(problem.split(" ")[2].rstrip(","))


def test_history_written_before_binding_is_counted_not_checked(
    manager: CredentialManager, database_url: str
) -> None:
    """Rows older than every bound one (an upgraded database's) are counted as unchecked;
    a row numbered 0 or below is never taken for one."""
    insert = (
        "INSERT INTO credential_history ({id}credential_id, from_state, to_state, trigger, "
        "principal, reason, at, version) VALUES ({value}'old', NULL, 'ACTIVE', 'create', "
        "'admin', NULL, '2025-01-01 00:00:00', 1)"
    )
    engine = create_engine(database_url)
    with engine.begin() as connection:  # written as an older credman did: not bound
        connection.execute(text(insert.format(id="", value="")))
        connection.execute(text(insert.format(id="", value="")))
    _work(manager, "a")
    report = manager.verify_audit()
    assert (True, 4, 2) == (report.ok, report.history_checked, report.history_unchecked)
    with engine.begin() as connection:
        connection.execute(text(insert.format(id="id, ", value="0, ")))
    engine.dispose()
    report = manager.verify_audit()
    assert (False, "history row 0 is bound by no audit row (inserted)", 0) == (
        report.ok,
        report.problem,
        report.bad_history_id,
    )


def test_history_bound_by_archived_rows_is_counted_and_newer_history_still_checked(
    manager: CredentialManager, database_url: str, tmp_path: Path
) -> None:
    """After an archive, the history rows the archived audit rows bound are counted as
    unchecked (the archive event records how far they go); newer ones are still checked."""
    _work(manager, "a")  # audit 1-3, history 1-4
    manager.archive_audit(before_seq=3, path=tmp_path / "a.jsonl", principal="admin")
    _work(manager, "b")
    report = manager.verify_audit()
    # rows 1-2 archived (history 1-3); live: row 3 binds history 4, rows 5-7 bind 5-8
    assert (True, 2, 5, 3) == (
        report.ok,
        report.anchor_seq,
        report.history_checked,
        report.history_unchecked,
    )
    with _attacker(database_url, "credential_history") as connection:
        connection.execute(text("UPDATE credential_history SET reason = 'x' WHERE id = 8"))
    assert "history row(s) 8 differ" in str(manager.verify_audit().problem)


# -- export -----------------------------------------------------------------------------------


def _cli(url: str, key_file: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {
        "CREDMAN_DATABASE_URL": url,
        "CREDMAN_KEY_FILE": str(key_file),
        "COLUMNS": "200",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "credman", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_export_after_seq_to_a_file(sqlite_url: str, key_file: Path, tmp_path: Path) -> None:
    """`credman audit export --after 2 -o FILE`: rows 3.. as JSON lines with their hashes,
    appended to a 0600 file; a second export appends after the first."""
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        _work(manager, "a")
        rows = {e.seq: e for e in manager.audit_events(principal="admin")}
    out = tmp_path / "audit.jsonl"
    first = _cli(sqlite_url, key_file, "audit", "export", "--after", "1", "-o", str(out))
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        manager.store("b", ApiKey(key="k"), principal="admin")
    second = _cli(sqlite_url, key_file, "audit", "export", "--after", "3", "-o", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert (0, 0) == (first.returncode, second.returncode), first.stderr + second.stderr
    assert "exported 2 audit rows after 1, up to row 3" == first.stderr.strip()
    assert ([2, 3, 4], rows[3].hash) == ([line["seq"] for line in lines], lines[1]["hash"])
    assert {"seq", "at", "principal", "action", "credential_id", "outcome", "detail"} < set(
        lines[0]
    )
    assert 0o600 == stat.S_IMODE(out.stat().st_mode)
    nowhere = _cli(sqlite_url, key_file, "audit", "export", "-o", str(tmp_path / "no" / "x"))
    assert (1, ["error: output: cannot open"]) == (
        nowhere.returncode,
        [line[:26] for line in nowhere.stderr.strip().splitlines()],
    )


def test_cli_export_to_syslog_sends_rfc5424(sqlite_url: str, key_file: Path) -> None:
    """`--syslog 127.0.0.1:PORT`: one RFC 5424 datagram per row (facility auth, info)."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(10)
    port = receiver.getsockname()[1]
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        _work(manager, "a")
    result = _cli(sqlite_url, key_file, "audit", "export", "--syslog", f"127.0.0.1:{port}")
    messages = [receiver.recv(65536).decode() for _ in range(3)]
    receiver.close()
    assert 0 == result.returncode, result.stderr
    header, _, body = messages[0].partition(" - {")
    assert header.startswith("<38>1 ")  # auth (4) * 8 + info (6); RFC 5424 version 1
    _, _, _, app, pid, msgid = header.split(" ")
    assert ("credman", True, "audit") == (app, pid.isdigit(), msgid)
    assert 1 == json.loads("{" + body)["seq"]


def test_cli_verify_heads_exit_codes(sqlite_url: str, key_file: Path, tmp_path: Path) -> None:
    """`credman audit verify --heads FILE`: 0 on an untouched chain, 1 with a one-line
    reason after the tail was truncated and the head moved."""
    heads = tmp_path / "heads.jsonl"
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        _work(manager, "a")
        _grants(manager, 1)
        manager.audit_head_exporter(file=heads).export()
    good = _cli(sqlite_url, key_file, "audit", "verify", "--heads", str(heads))
    _truncate(sqlite_url, keep=3)
    bad = _cli(sqlite_url, key_file, "audit", "verify", "--heads", str(heads))
    plain = _cli(sqlite_url, key_file, "audit", "verify")
    assert (0, 1, 0) == (good.returncode, bad.returncode, plain.returncode)
    assert "1 exported heads found" in good.stdout
    assert bad.stderr.strip().startswith("audit chain BROKEN at row 4: the anchored row 4")
    missing = _cli(sqlite_url, key_file, "audit", "verify", "--heads", str(tmp_path / "nope"))
    assert (1, 1) == (missing.returncode, len(missing.stderr.strip().splitlines()))


def test_the_scheduler_service_exports_heads_at_its_interval(
    sqlite_url: str, key_file: Path, tmp_path: Path
) -> None:
    """`credman serve` (scheduler only) with CREDMAN_AUDIT_HEAD_FILE and a 1 s interval
    appends signed heads while it runs and one last head when it stops."""
    heads = tmp_path / "heads.jsonl"
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        _work(manager, "a")
    environment = os.environ | {
        "CREDMAN_DATABASE_URL": sqlite_url,
        "CREDMAN_KEY_FILE": str(key_file),
        "CREDMAN_AUDIT_HEAD_FILE": str(heads),
        "CREDMAN_AUDIT_HEAD_INTERVAL": "1",
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "credman", "serve", "--interval", "60"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            not heads.exists() or len(heads.read_text().splitlines()) < 2
        ):
            time.sleep(0.1)
        with CredentialManager(sqlite_url, str(key_file)) as manager:
            manager.store("b", ApiKey(key="k"), principal="admin")
        time.sleep(1.5)
    finally:
        service.send_signal(signal.SIGTERM)
        _, stderr = service.communicate(timeout=30)
    seqs = [json.loads(line)["seq"] for line in heads.read_text().splitlines()]
    assert 0 == service.returncode, stderr
    assert "exporting signed audit heads every 1 s" in stderr
    assert len(seqs) >= 3 and seqs[0] == 3 and seqs[-1] == 4, seqs
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        report = manager.verify_audit(heads=heads)
    assert (True, 2) == (report.ok, report.heads_checked)  # heads at rows 3 and 4


# -- the PostgreSQL owner -----------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_runtime_role_that_does_not_own_the_tables_cannot_lift_the_triggers(
    key_file: Path, postgres_url: str
) -> None:
    """The table owner can disable the append-only triggers; a runtime role granted only
    DML on tables an owner role created runs credman but cannot, nor delete audit rows."""
    server_url = postgres_url.split("?")[0]
    suffix = uuid.uuid4().hex[:8]
    owner, runtime, schema = f"cm_owner_{suffix}", f"cm_app_{suffix}", f"cm_{suffix}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    base = server_url.rsplit("@", 1)[1]
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {owner} LOGIN")
        connection.exec_driver_sql(f"CREATE ROLE {runtime} LOGIN")
        connection.exec_driver_sql(f"CREATE SCHEMA {schema} AUTHORIZATION {owner}")
    owner_url = f"postgresql+psycopg://{owner}@{base}?options=-csearch_path%3D{schema}"
    runtime_url = f"postgresql+psycopg://{runtime}@{base}?options=-csearch_path%3D{schema}"
    try:
        CredentialManager(owner_url, str(key_file)).close()  # the owner migrates
        with create_engine(owner_url).begin() as connection:
            for grant in (
                f"GRANT USAGE ON SCHEMA {schema} TO {runtime}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} "
                f"TO {runtime}",
                f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {runtime}",
            ):
                connection.exec_driver_sql(grant)
        with CredentialManager(runtime_url, str(key_file), migrate_schema=False) as manager:
            _work(manager, "a")
            assert manager.verify_audit().ok
        runtime_engine = create_engine(runtime_url)
        with (
            pytest.raises(ProgrammingError, match="must be owner"),
            runtime_engine.begin() as connection,
        ):
            connection.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER USER")
        with pytest.raises(DBAPIError, match="append-only"), runtime_engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM audit_event WHERE seq = 3")
        with pytest.raises(DBAPIError, match="append-only"), runtime_engine.begin() as connection:
            connection.exec_driver_sql("UPDATE credential_history SET principal = 'x'")
        with (
            pytest.raises(ProgrammingError, match="must be owner"),
            runtime_engine.begin() as connection,
        ):
            connection.exec_driver_sql("DROP TRIGGER audit_event_append_only ON audit_event")
        runtime_engine.dispose()
        owner_engine = create_engine(owner_url)
        with owner_engine.begin() as connection:  # the weakness: the owner can
            connection.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER USER")
            connection.exec_driver_sql("DELETE FROM audit_event WHERE seq = 3")
        owner_engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            connection.exec_driver_sql(f"DROP OWNED BY {runtime}")
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {runtime}")
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {owner}")
        admin.dispose()


# -- forwarding -------------------------------------------------------------------------------


def test_forwarding_to_a_file_resumes_after_its_last_row(
    manager: CredentialManager, tmp_path: Path
) -> None:
    """A forwarder appends the new rows; a new one (a restarted service) resumes after the
    file's last row: every row once, in order."""
    out = tmp_path / "forward.jsonl"
    _work(manager, "a")
    first = manager.audit_forwarder(file=str(out))
    assert 3 == first.forward()
    _grants(manager, 2)
    assert 2 == first.forward()
    first.stop()
    _grants(manager, 1)
    second = manager.audit_forwarder(file=str(out))
    assert (5, 1) == (second.after, second.forward())
    second.stop()
    seqs = [json.loads(line)["seq"] for line in out.read_text().splitlines()]
    assert [1, 2, 3, 4, 5, 6] == seqs


def test_the_configured_service_exports_heads_and_forwards_rows(
    sqlite_url: str, key_file: Path, tmp_path: Path
) -> None:
    """`credman serve --config` (the scheduler, no listener) with [audit] head_file and
    forward_file: signed heads and every row reach their files while it runs."""
    heads, forward = tmp_path / "heads.jsonl", tmp_path / "forward.jsonl"
    config = tmp_path / "credman.toml"
    config.write_text(
        f'[audit]\nhead_file = "{heads}"\nhead_interval = 1\n'
        f'forward_file = "{forward}"\nforward_interval = 0.2\n'
    )
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        _work(manager, "a")
    environment = os.environ | {
        "CREDMAN_DATABASE_URL": sqlite_url,
        "CREDMAN_KEY_FILE": str(key_file),
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "credman", "serve", "--config", str(config)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (heads.exists() and forward.exists()):
            time.sleep(0.1)
        with CredentialManager(sqlite_url, str(key_file)) as manager:
            _grants(manager, 1)
        while time.monotonic() < deadline and len(forward.read_text().splitlines()) < 4:
            time.sleep(0.1)
    finally:
        service.send_signal(signal.SIGTERM)
        _, stderr = service.communicate(timeout=30)
    assert 0 == service.returncode, stderr
    assert [1, 2, 3, 4] == [json.loads(line)["seq"] for line in forward.read_text().splitlines()]
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        report = manager.verify_audit(heads=heads)
    assert (True, 4) == (report.ok, report.head_seq)
    assert 0o600 == stat.S_IMODE(forward.stat().st_mode)
