"""Migration 0006 (record integrity): rows from before it are sealed once, at the first open
under the key; after that a row without a MAC is refused. On both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, select, update

from credman import BasicAuth, CredentialManager, IntegrityError
from credman.storage import migrate
from credman.storage.engine import make_engine, read, write
from credman.storage.migrate import _config
from credman.storage.repository import CREDENTIALS
from credman.storage.tables import GrantRow, KeyCheckRow

GRANTS = GrantRow.__table__  # type: ignore[attr-defined]
KEY_CHECKS = KeyCheckRow.__table__  # type: ignore[attr-defined]


def _to_0005_and_back(database_url: str) -> None:
    """Take the database down to 0005 (dropping the MAC columns and fingerprints) and up to
    head again: exactly what an upgrade from 0005 leaves (NULL MACs, no fingerprints)."""
    engine = make_engine(database_url)
    with write(engine) as connection:
        command.downgrade(_config(connection), "0005")
    assert "0005" == migrate.current_revision(engine)
    migrate.upgrade(engine)
    with read(engine) as connection:
        macs = connection.execute(select(CREDENTIALS.c.record_mac)).scalars().all()
        grant_macs = connection.execute(select(GRANTS.c.record_mac)).scalars().all()
        checks = connection.execute(select(KEY_CHECKS)).all()
    engine.dispose()
    assert ([None, None], [None], []) == (macs, grant_macs, checks)


def test_rows_from_before_0006_are_sealed_at_the_first_open(
    database_url: str, key_file: Path
) -> None:
    """After an upgrade from 0005, the first open MACs the old rows (audited once), and they
    read, grant and verify as before."""
    with CredentialManager(database_url, str(key_file)) as manager:
        manager.store("a", BasicAuth(username="u", password="pw-a"), principal="admin")
        manager.store("b", BasicAuth(username="u", password="pw-b"), principal="admin")
        manager.grant("bob", "a", ["read"], principal="admin")
    _to_0005_and_back(database_url)
    with CredentialManager(database_url, str(key_file)) as manager:
        assert "pw-a" == manager.get("a", principal="bob").password.reveal()  # type: ignore[attr-defined]
        assert "pw-b" == manager.get("b", principal="admin").password.reveal()  # type: ignore[attr-defined]
        sealed = [
            e for e in manager.audit_events(principal="admin") if e.action == "integrity_sealed"
        ]
        assert [{"credentials": 2, "grants": 1}] == [dict(e.detail) for e in sealed]
        assert manager.verify_audit().ok
    with CredentialManager(database_url, str(key_file)) as manager:  # sealed once only
        sealed = [
            e for e in manager.audit_events(principal="admin") if e.action == "integrity_sealed"
        ]
        assert 1 == len(sealed)


def test_after_sealing_a_missing_mac_is_refused(database_url: str, key_file: Path) -> None:
    """Once the database is sealed, clearing a row's MAC does not make it 'legacy' again."""
    with CredentialManager(database_url, str(key_file)) as manager:
        manager.store("a", BasicAuth(username="u", password="pw"), principal="admin")
    engine = make_engine(database_url)
    with write(engine) as connection:
        connection.execute(update(CREDENTIALS).values(record_mac=None, attempts=5))
    engine.dispose()
    with (
        CredentialManager(database_url, str(key_file)) as manager,
        pytest.raises(IntegrityError, match="has no MAC"),
    ):
        manager.get("a", principal="admin")


def test_the_downgrade_removes_what_0006_added(database_url: str) -> None:
    """0006 down and up again is clean (its downgrade drops exactly its columns and table)."""
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    with write(engine) as connection:
        command.downgrade(_config(connection), "0005")
    with read(engine) as connection:
        schema = inspect(connection)
        columns = {c["name"] for c in schema.get_columns("credential")}
        tables = set(schema.get_table_names())
    migrate.upgrade(engine)
    engine.dispose()
    assert "record_mac" not in columns and "key_check" not in tables


def test_a_second_sealing_is_reported_by_audit_verify(database_url: str, key_file: Path) -> None:
    """Clearing every MAC and the fingerprints gets the next open to seal the rows again;
    that second integrity_sealed event is what audit verify reports."""
    with CredentialManager(database_url, str(key_file)) as manager:
        manager.store("a", BasicAuth(username="u", password="pw"), principal="admin")
    _to_0005_and_back_with_one_row(database_url)
    with CredentialManager(database_url, str(key_file)) as manager:
        assert manager.verify_audit().ok
    engine = make_engine(database_url)
    with write(engine) as connection:
        connection.execute(update(CREDENTIALS).values(record_mac=None, attempts=9))
        connection.execute(KEY_CHECKS.delete())
    engine.dispose()
    with CredentialManager(database_url, str(key_file)) as manager:
        report = manager.verify_audit()
    assert not report.ok
    assert any("sealed 2 times" in problem for problem in report.extra["integrity"])


def _to_0005_and_back_with_one_row(database_url: str) -> None:
    engine = make_engine(database_url)
    with write(engine) as connection:
        command.downgrade(_config(connection), "0005")
    migrate.upgrade(engine)
    engine.dispose()
