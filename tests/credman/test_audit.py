"""The audit trail: the exact rows each operation writes, a hash chain that names the first
row an attacker with raw database access edited, deleted, inserted or reordered, append-only
triggers on both engines, the CLI, and fail-closed operations when an audit write fails."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError

from credman import (
    AccessDenied,
    AuditError,
    BasicAuth,
    CredentialError,
    CredentialManager,
    NotFound,
    State,
)
from credman.audit import GENESIS, AuditLog
from credman.storage.tables import AuditEventRow

EVENTS = AuditEventRow.__table__  # type: ignore[attr-defined]
FORGED_HASH = hashlib.sha256(b"forged").hexdigest()


def _basic(word: str = "pw") -> BasicAuth:
    return BasicAuth(username="svc", password=word)


def _rows(manager: CredentialManager) -> list[tuple[Any, ...]]:
    return [
        (e.action, e.outcome, e.principal, e.credential_id, dict(e.detail))
        for e in manager.audit_events(principal="admin", limit=1000)
    ]


def _five_events(manager: CredentialManager) -> None:
    """A chain of five rows: create, read, denied read, grant, revoke."""
    manager.store("c", _basic(), principal="admin")
    manager.get("c", principal="admin")
    with pytest.raises(AccessDenied):
        manager.get("c", principal="mallory")
    manager.grant("bob", "c", ["use"], principal="admin")
    manager.revoke("c", principal="admin", reason="rotated")


# -- what is recorded ---------------------------------------------------------------------


def test_each_operation_writes_exactly_its_audit_rows(manager: CredentialManager) -> None:
    """Store, update, read, grant, denials, failures, ungrant and revoke: one row each."""
    manager.store("c", _basic(), principal="admin")
    manager.store("c", _basic("new"), principal="admin")
    manager.get("c", principal="admin")
    manager.info("c", principal="admin")  # metadata reads are not audited on success
    manager.history("c", principal="admin")
    manager.grant("bob", "c*", ["read"], principal="admin")
    manager.get("c", principal="bob")
    with pytest.raises(AccessDenied):
        manager.revoke("c", principal="bob")
    with pytest.raises(AccessDenied):
        manager.grant("eve", "*", ["admin"], principal="bob")
    with pytest.raises(NotFound):
        manager.get("missing", principal="admin")
    manager.revoke_grant("bob", "c*", principal="admin")
    manager.revoke("c", principal="admin", reason="rotated")
    rows = _rows(manager)
    digests = [detail.pop("history_sha256", None) for *_, detail in rows]
    assert 3 == len({d for d in digests if d is not None})  # one per change, all differ
    assert [
        ("create", "ok", "admin", "c", {"type": "basic", "version": 1, "history": "1,2"}),
        ("update", "ok", "admin", "c", {"type": "basic", "version": 2, "history": "3"}),
        ("read", "ok", "admin", "c", {"version": 2}),
        ("grant", "ok", "admin", None, {"grantee": "bob", "pattern": "c*", "permissions": "read"}),
        ("read", "ok", "bob", "c", {"version": 2}),
        ("revoke", "denied", "bob", "c", {"error": "AccessDenied", "permission": "manage"}),
        ("grant", "denied", "bob", None, {"error": "AccessDenied", "permission": "admin"}),
        ("read", "failed", "admin", "missing", {"error": "NotFound"}),
        ("revoke_grant", "ok", "admin", None, {"grantee": "bob", "pattern": "c*", "removed": True}),
        ("revoke", "ok", "admin", "c", {"version": 3, "history": "4"}),
    ] == rows


def test_an_untouched_chain_verifies(manager: CredentialManager) -> None:
    """verify_audit() on an untouched trail: ok, every row checked, head = last row."""
    _five_events(manager)
    report = manager.verify_audit()
    assert (True, 5, 5, None) == (
        report.ok,
        report.rows_checked,
        report.head_seq,
        report.first_bad_seq,
    )
    assert (5, report.head_hash) == manager.audit_head()


# -- tampering ----------------------------------------------------------------------------


@contextmanager
def _attacker(manager: CredentialManager) -> Iterator[Connection]:
    """A raw connection to the database with the audit table's append-only triggers off."""
    engine = create_engine(manager.engine.url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":  # a superuser may
                connection.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER USER")
            else:
                connection.exec_driver_sql("DROP TRIGGER audit_event_no_update")
                connection.exec_driver_sql("DROP TRIGGER audit_event_no_delete")
            yield connection
    finally:
        engine.dispose()


def _row(connection: Connection, seq: int) -> dict[str, Any]:
    return dict(connection.execute(select(EVENTS).where(EVENTS.c.seq == seq)).mappings().one())


def _edit(connection: Connection, seq: int) -> None:
    connection.execute(update(EVENTS).where(EVENTS.c.seq == seq).values(principal="someone"))


def _delete(connection: Connection, seq: int) -> None:
    connection.execute(delete(EVENTS).where(EVENTS.c.seq == seq))


def _insert(connection: Connection, seq: int) -> None:
    """Renumber the rows from ``seq`` on and put a forged grant event at ``seq``."""
    forged = _row(connection, 1) | {
        "seq": seq,
        "action": "grant",
        "detail": {"grantee": "mallory", "pattern": "*", "permissions": "admin"},
        "prev_hash": _row(connection, seq - 1)["hash"] if seq > 1 else GENESIS,
        "hash": FORGED_HASH,
    }
    last = connection.execute(select(func.max(EVENTS.c.seq))).scalar_one()
    for moved in range(last, seq - 1, -1):  # from the end, so numbers stay unique
        connection.execute(update(EVENTS).where(EVENTS.c.seq == moved).values(seq=moved + 1))
    connection.execute(insert(EVENTS).values(**forged))


def _swap_with_next(connection: Connection, seq: int) -> None:
    """Swap the contents of row ``seq`` and the row after it (the numbers stay in place)."""
    first, second = _row(connection, seq), _row(connection, seq + 1)
    for target, source in ((seq, second), (seq + 1, first)):
        values = {k: v for k, v in source.items() if k != "seq"}
        connection.execute(update(EVENTS).where(EVENTS.c.seq == target).values(**values))


TAMPERING: dict[str, Callable[[Connection, int], None]] = {
    "edit": _edit,
    "delete": _delete,
    "insert": _insert,
    "reorder": _swap_with_next,
}


@pytest.mark.parametrize(
    ("tampering", "seq", "first_bad_seq"),
    [
        ("edit", 1, 1),
        ("edit", 3, 3),
        ("edit", 5, 5),
        ("delete", 1, 1),
        ("delete", 3, 3),
        ("delete", 5, 5),  # the last row: the head still names it
        ("insert", 1, 1),
        ("insert", 3, 3),
        ("insert", 6, 6),  # appended after the last row
        ("reorder", 1, 1),  # rows 1 and 2 swapped
        ("reorder", 3, 3),
        ("reorder", 4, 4),  # the last row moved up one
    ],
    ids=lambda value: str(value),
)
def test_tampering_is_detected_at_that_row(
    manager: CredentialManager, tampering: str, seq: int, first_bad_seq: int
) -> None:
    """Editing, deleting, inserting or reordering a row: verify names that row."""
    _five_events(manager)
    with _attacker(manager) as connection:
        TAMPERING[tampering](connection, seq)
    report = manager.verify_audit()
    assert (False, first_bad_seq) == (report.ok, report.first_bad_seq), report.problem


def test_deleting_the_last_rows_is_detected_by_the_head(manager: CredentialManager) -> None:
    """Truncating the trail leaves the head pointing past the end: named at the first gap."""
    _five_events(manager)
    with _attacker(manager) as connection:
        connection.execute(delete(EVENTS).where(EVENTS.c.seq >= 4))
    report = manager.verify_audit()
    assert (False, 4, "the chain ends at row 3 but the head says row 5") == (
        report.ok,
        report.first_bad_seq,
        report.problem,
    )


def test_a_row_numbered_before_the_first_is_detected(manager: CredentialManager) -> None:
    """A forged row numbered 0 (outside the chain's numbering) is found and named."""
    _five_events(manager)
    with _attacker(manager) as connection:
        forged = _row(connection, 1) | {"seq": 0, "hash": FORGED_HASH}
        connection.execute(insert(EVENTS).values(**forged))
    assert 0 == manager.verify_audit().first_bad_seq


@pytest.mark.parametrize("table", ["audit_event", "credential_history"])
@pytest.mark.parametrize(
    "statement", ["UPDATE {table} SET principal = 'someone'", "DELETE FROM {table}"]
)
def test_append_only_tables_reject_changes(
    manager: CredentialManager, table: str, statement: str
) -> None:
    """Without disabling the triggers, UPDATE and DELETE on history and audit are refused."""
    manager.store("c", _basic(), principal="admin")
    engine = create_engine(manager.engine.url)
    try:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement.format(table=table)))
    finally:
        engine.dispose()
    assert manager.verify_audit().ok


# -- the command line ---------------------------------------------------------------------


def _cli(sqlite_url: str, key_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {
        "CREDMAN_DATABASE_URL": sqlite_url,
        "CREDMAN_KEY_FILE": str(key_file),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "credman", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_audit_verify_fails_naming_the_row(sqlite_url: str, key_file: Path) -> None:
    """`credman audit verify` on an edited trail exits 1 and names the edited row."""
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        _five_events(manager)
        with _attacker(manager) as connection:
            _edit(connection, 3)
    result = _cli(sqlite_url, key_file, "audit", "verify")
    assert (1, "audit chain BROKEN at row 3: hash does not match the row's content (edited)") == (
        result.returncode,
        result.stderr.strip(),
    )


def test_cli_audit_head_prints_seq_and_hash(sqlite_url: str, key_file: Path) -> None:
    """`credman audit head` prints the head as seq:hash, as audit_head() returns it."""
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        _five_events(manager)
        seq, digest = manager.audit_head()
    result = _cli(sqlite_url, key_file, "audit", "head")
    assert (0, f"{seq}:{digest}") == (result.returncode, result.stdout.strip())


# -- fail closed --------------------------------------------------------------------------

FAILURES: dict[str, Callable[[], Exception]] = {
    "AuditError": lambda: AuditError("the audit trail cannot be written"),
    "OperationalError": lambda: OperationalError("INSERT", {}, Exception("disk I/O error")),
}


@pytest.fixture(params=list(FAILURES))
def audit_fails(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], None]:
    """Make the audit append for one action raise, as a failed write would."""
    append, failure = AuditLog.append, FAILURES[request.param]

    def fail_for(action: str) -> None:
        def failing(self: AuditLog, connection: Connection, **event: Any) -> int:
            if event["action"] == action:
                raise failure()
            return append(self, connection, **event)

        monkeypatch.setattr(AuditLog, "append", failing)

    return fail_for


def _snapshot(manager: CredentialManager, credential_id: str) -> tuple[Any, ...]:
    info = manager.info(credential_id, principal="admin")
    steps = [(t.to_state, t.version) for t in manager.history(credential_id, principal="admin")]
    return info.state, info.version, info.updated_at, steps


def _password(manager: CredentialManager, credential_id: str) -> str:
    return manager.get(credential_id, principal="admin").password.reveal()  # type: ignore[attr-defined,no-any-return]


def test_a_new_credential_is_not_stored_without_its_audit_row(
    manager: CredentialManager, audit_fails: Callable[[str], None]
) -> None:
    """store() of a new credential whose audit write fails raises; the credential never was."""
    audit_fails("create")
    with pytest.raises(CredentialError):
        manager.store("c", _basic(), principal="admin")
    with pytest.raises(NotFound):
        manager.info("c", principal="admin")
    assert manager.verify_audit().ok


def test_an_update_is_not_stored_without_its_audit_row(
    manager: CredentialManager, audit_fails: Callable[[str], None]
) -> None:
    """An update whose audit write fails leaves state, version, history and material as they were."""
    manager.store("c", _basic("old"), principal="admin")
    before = _snapshot(manager, "c")
    audit_fails("update")
    with pytest.raises(CredentialError):
        manager.store("c", _basic("new"), principal="admin")
    assert (before, "old") == (_snapshot(manager, "c"), _password(manager, "c"))


def test_no_secret_is_returned_without_its_audit_row(
    manager: CredentialManager, audit_fails: Callable[[str], None]
) -> None:
    """get() whose read audit fails raises instead of returning, and changes nothing."""
    manager.store("c", _basic(), principal="admin")
    before = _snapshot(manager, "c")
    audit_fails("read")
    with pytest.raises(CredentialError):
        manager.get("c", principal="admin")
    assert before == _snapshot(manager, "c")


def test_a_revocation_does_not_happen_without_its_audit_row(
    manager: CredentialManager, audit_fails: Callable[[str], None]
) -> None:
    """revoke() whose audit write fails leaves the credential ACTIVE with its material."""
    manager.store("c", _basic("kept"), principal="admin")
    before = _snapshot(manager, "c")
    audit_fails("revoke")
    with pytest.raises(CredentialError):
        manager.revoke("c", principal="admin", reason="rotated")
    assert State.ACTIVE == before[0]
    assert (before, "kept") == (_snapshot(manager, "c"), _password(manager, "c"))


def test_a_grant_does_not_happen_without_its_audit_row(
    manager: CredentialManager, audit_fails: Callable[[str], None]
) -> None:
    """grant() whose audit write fails raises, and the grantee is still denied."""
    manager.store("c", _basic(), principal="admin")
    audit_fails("grant")
    with pytest.raises(CredentialError):
        manager.grant("bob", "c", ["read"], principal="admin")
    with pytest.raises(AccessDenied):
        manager.get("c", principal="bob")


def test_an_ungrant_does_not_happen_without_its_audit_row(
    manager: CredentialManager, audit_fails: Callable[[str], None]
) -> None:
    """revoke_grant() whose audit write fails raises, and the grant stays in force."""
    manager.store("c", _basic("pw"), principal="admin")
    manager.grant("bob", "c", ["read"], principal="admin")
    audit_fails("revoke_grant")
    with pytest.raises(CredentialError):
        manager.revoke_grant("bob", "c", principal="admin")
    assert "pw" == manager.get("c", principal="bob").password.reveal()  # type: ignore[attr-defined]


def test_anchor_catches_a_rewritten_tail(sqlite_url: str, key_file: Path) -> None:
    """Rows deleted after an exported head, with the head rewritten to match, fail the anchor."""
    manager = CredentialManager(sqlite_url, str(key_file))
    manager.store("c", BasicAuth(username="u", password="p"), principal="admin")
    manager.get("c", principal="admin")
    anchor = manager.audit_head()
    manager.get("c", principal="admin")
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER audit_event_no_delete"))
        connection.execute(text(f"DELETE FROM audit_event WHERE seq >= {anchor[0]}"))
        previous = connection.execute(
            text(f"SELECT hash FROM audit_event WHERE seq = {anchor[0] - 1}")
        ).scalar()
        connection.execute(
            text(f"UPDATE audit_head SET seq = {anchor[0] - 1}, hash = '{previous}'")
        )
    engine.dispose()
    assert manager.verify_audit().ok
    report = manager.verify_audit(anchor)
    assert (False, anchor[0]) == (report.ok, report.first_bad_seq)
    manager.close()


def test_a_bulk_append_chains_like_single_appends(manager: CredentialManager) -> None:
    """``AuditLog.append_many`` (bulk imports, the scale seed) takes the head once and
    chains every event in order: the chain verifies, the head moved by the count, and an
    edited bulk row is found like any other."""
    from datetime import UTC, datetime

    from credman.storage import write

    log = AuditLog(manager.keys.keyring.audit_key())
    before = manager.audit_head()[0]
    events = [
        {
            "at": datetime.now(UTC),
            "principal": "importer",
            "action": "import",
            "credential_id": None,
            "detail": {"batch": n},
        }
        for n in range(3)
    ]
    with write(manager.engine) as connection:
        last = log.append_many(connection, events)
    assert (before + 3, before + 3) == (last, manager.audit_head()[0])
    assert manager.verify_audit().ok
    with _attacker(manager) as connection:
        _edit(connection, before + 2)
    assert before + 2 == manager.verify_audit().first_bad_seq
