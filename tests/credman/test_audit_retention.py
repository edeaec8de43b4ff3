"""Audit retention: archive old rows to JSON lines, prune them, verify from the anchor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from credman import (
    AccessDenied,
    AuditError,
    BasicAuth,
    CredentialManager,
    CredentialValidationError,
)
from credman.storage.engine import make_engine, write


def _fill(manager: CredentialManager, count: int) -> None:
    for number in range(count):
        manager.store(f"svc-{number}", BasicAuth(username="u", password="p"), principal="admin")


def _rows(database_url: str) -> list[int]:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        seqs = list(connection.execute(text("SELECT seq FROM audit_event ORDER BY seq")).scalars())
    engine.dispose()
    return seqs


@pytest.fixture
def filled(manager: CredentialManager) -> CredentialManager:
    """A manager whose chain holds 4 rows (one create each)."""
    _fill(manager, 4)
    return manager


def test_archive_prunes_old_rows_and_the_chain_still_verifies(
    filled: CredentialManager, database_url: str, tmp_path: Path
) -> None:
    """Rows before before_seq leave the database; verification starts at the anchor."""
    report = filled.archive_audit(before_seq=3, path=tmp_path / "a.jsonl", principal="admin")
    verified = filled.verify_audit()
    assert (2, 2, 2) == (report.rows, report.anchor_seq, report.pruned)
    assert (True, 2, 3) == (verified.ok, verified.anchor_seq, verified.rows_checked)
    assert [3, 4, 5] == _rows(database_url)


def test_the_archive_verifies_on_its_own_and_ends_at_the_anchor(
    filled: CredentialManager, tmp_path: Path
) -> None:
    """The archive's last row hash is the anchor the database now verifies from."""
    path = tmp_path / "a.jsonl"
    report = filled.archive_audit(before_seq=4, path=path, principal="admin")
    archived = filled.verify_audit_archive(path)
    assert (True, 3, 3, report.anchor_hash) == (
        archived.ok,
        archived.rows_checked,
        archived.head_seq,
        archived.head_hash,
    )


def test_archives_chain_one_after_another(filled: CredentialManager, tmp_path: Path) -> None:
    """A second archive continues from the first one's anchor, and both verify."""
    first = filled.archive_audit(before_seq=3, path=tmp_path / "1.jsonl", principal="admin")
    filled.archive_audit(before_seq=5, path=tmp_path / "2.jsonl", principal="admin")
    header = json.loads((tmp_path / "2.jsonl").read_text().splitlines()[0])
    second = filled.verify_audit_archive(tmp_path / "2.jsonl")
    assert (first.anchor_seq, first.anchor_hash, True) == (
        header["anchor_seq"],
        header["anchor_hash"],
        second.ok,
    )
    assert filled.verify_audit().ok


def test_an_edited_archive_fails_verification_at_the_edited_row(
    filled: CredentialManager, tmp_path: Path
) -> None:
    """Changing a row in the archive file is found, named by its sequence number."""
    path = tmp_path / "a.jsonl"
    filled.archive_audit(before_seq=4, path=path, principal="admin")
    lines = path.read_text().splitlines()
    row = json.loads(lines[2])
    row["principal"] = "someone-else"
    lines[2] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    report = filled.verify_audit_archive(path)
    assert (False, 2) == (report.ok, report.first_bad_seq)


def test_rows_after_the_anchor_stay_append_only(
    filled: CredentialManager, database_url: str, tmp_path: Path
) -> None:
    """The database still refuses to delete a row the archive did not cover."""
    filled.archive_audit(before_seq=3, path=tmp_path / "a.jsonl", principal="admin")
    engine = make_engine(database_url)
    try:
        with pytest.raises(Exception, match="append-only"), write(engine) as connection:
            connection.execute(text("DELETE FROM audit_event WHERE seq = 3"))
    finally:
        engine.dispose()
    assert [3, 4, 5] == _rows(database_url)


def test_moving_the_anchor_by_hand_is_detected(
    filled: CredentialManager, database_url: str
) -> None:
    """An anchor no archive event vouches for (rows deleted by a writer) fails verification."""
    engine = make_engine(database_url)
    with write(engine) as connection:
        row = connection.execute(text("SELECT seq, hash FROM audit_event WHERE seq = 2")).one()
        connection.execute(
            text("UPDATE audit_head SET anchor_seq = :s, anchor_hash = :h"),
            {"s": row.seq, "h": row.hash},
        )
        connection.execute(text("DELETE FROM audit_event WHERE seq <= 2"))
    engine.dispose()
    report = filled.verify_audit()
    assert (False, 3) == (report.ok, report.first_bad_seq)


def test_archiving_needs_admin_and_a_denial_is_audited(
    filled: CredentialManager, tmp_path: Path
) -> None:
    """A principal without admin cannot archive; the refusal is on the chain; no file."""
    with pytest.raises(AccessDenied):
        filled.archive_audit(before_seq=3, path=tmp_path / "a.jsonl", principal="intruder")
    last = filled.audit_events(principal="admin", limit=1)[0]
    assert ("audit_archive", "denied", False) == (
        last.action,
        last.outcome,
        (tmp_path / "a.jsonl").exists(),
    )


@pytest.mark.parametrize("before_seq", [0, 1, 6, "3", True])
def test_before_seq_out_of_range_is_refused_naming_the_field(
    filled: CredentialManager, tmp_path: Path, before_seq: object
) -> None:
    """before_seq must archive at least one row and no more than the chain holds."""
    with pytest.raises(CredentialValidationError, match="before_seq"):
        filled.archive_audit(
            before_seq=before_seq,  # type: ignore[arg-type]
            path=tmp_path / "a.jsonl",
            principal="admin",
        )


def test_an_existing_archive_file_is_never_overwritten(
    filled: CredentialManager, database_url: str, tmp_path: Path
) -> None:
    """Archiving into an existing file fails before anything is pruned."""
    path = tmp_path / "a.jsonl"
    path.write_text("keep me\n")
    with pytest.raises(AuditError):
        filled.archive_audit(before_seq=3, path=path, principal="admin")
    assert ("keep me\n", [1, 2, 3, 4]) == (path.read_text(), _rows(database_url))


def test_a_broken_chain_is_not_archived(
    filled: CredentialManager, database_url: str, tmp_path: Path
) -> None:
    """An edited row stops the archive: no file is left and nothing is pruned."""
    engine = make_engine(database_url)
    with write(engine) as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
            connection.execute(text("UPDATE audit_event SET principal = 'x' WHERE seq = 2"))
            connection.execute(text("ALTER TABLE audit_event ENABLE TRIGGER USER"))
        else:
            connection.execute(text("DROP TRIGGER audit_event_no_update"))
            connection.execute(text("UPDATE audit_event SET principal = 'x' WHERE seq = 2"))
    engine.dispose()
    with pytest.raises(AuditError, match="audit row 2"):
        filled.archive_audit(before_seq=4, path=tmp_path / "a.jsonl", principal="admin")
    assert (False, [1, 2, 3, 4]) == ((tmp_path / "a.jsonl").exists(), _rows(database_url))
