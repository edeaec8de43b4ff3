"""Findings of the adversarial review (issue 16) about refresh and the sweep: each failed before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, text

from credman import BearerToken, CredentialManager, State

START = datetime(2026, 3, 1, 10, tzinfo=UTC)


def _raw(database_url: str, statement: str, **values: Any) -> None:
    """Write to the database as an attacker (or a bug) would: without credman."""
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(statement), values)
    engine.dispose()


# -- 3: one malformed row never stops a tick ---------------------------------------------------


def test_a_malformed_row_is_skipped_and_reported_while_the_tick_goes_on(
    database_url: str, make_manager: Any
) -> None:
    """A due row whose sealed column is JSON null is reported and skipped; the healthy one expires."""
    manager: CredentialManager = make_manager(clock=lambda: START)
    for name in ("broken", "healthy"):
        token = BearerToken(token=f"t-{name}", expires_at=START + timedelta(seconds=5))
        manager.store(name, token, principal="admin")
    _raw(database_url, "UPDATE credential SET sealed = 'null' WHERE id = 'broken'")
    report = manager.tick(START + timedelta(minutes=1))
    assert (1, ["error:broken_row"]) == (report.expired, report.errors)
    assert State.EXPIRED == manager.info("healthy", principal="admin").state
    failed = [e for e in manager.audit_events(principal="admin", limit=5) if e.outcome == "failed"]
    assert ["broken"] == [e.credential_id for e in failed]
