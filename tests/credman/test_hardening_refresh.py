"""Findings of the adversarial review (issue 16) about refresh and the sweep: each failed before."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from credman import BearerToken, CredentialManager, State
from credman.lifecycle import RefreshPolicy
from credman.notify import CredentialEvent, EventKind, WebhookNotifier
from credman.testing.provider import TokenServer

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


# -- 1: a deadline on the whole token exchange -------------------------------------------------


def test_a_dripping_token_endpoint_is_cut_off_at_the_deadline(
    make_manager: Any, server: TokenServer, oauth_credential: Any
) -> None:
    """One byte every 0.2 s, each well inside the per-read timeout, still ends at the deadline:
    a recorded transient 'timeout', the credential still usable, well before the lease ends."""
    manager: CredentialManager = make_manager(refresh_policy=RefreshPolicy(timeout=0.5))
    manager.store(
        "gh", oauth_credential(server, access_token="at-old", expires_in=3600), principal="admin"
    )
    server.drip_seconds = 0.2  # the 48-byte body would take about 10 s
    server.mode = "drip"
    info = manager.refresh("gh", principal="admin", force=True)
    assert ("timeout", 1, State.ACTIVE) == (info.last_error, info.attempts, info.state)


# -- 2: a 200 credman cannot accept is a recorded failure ----------------------------------------


@pytest.mark.parametrize("mode", ["huge_access_token", "crlf_token_type"])
def test_a_rejected_200_is_recorded_and_its_rotated_refresh_token_kept(
    manager: CredentialManager, server: TokenServer, mode: str, oauth_credential: Any
) -> None:
    """A 200 with a 20,000-character token or a CR/LF token_type is a recorded failure; the
    refresh token it rotated to is kept, so the next refresh works instead of a replay."""
    manager.store(
        "gh", oauth_credential(server, access_token="at-old", expires_in=3600), principal="admin"
    )
    server.fail_next(1, mode)
    info = manager.refresh("gh", principal="admin", force=True)
    assert ("invalid_response", 1, State.ACTIVE) == (info.last_error, info.attempts, info.state)
    stored = manager.get("gh", principal="admin").refresh_token.reveal()  # type: ignore[attr-defined]
    assert server.is_valid_refresh_token(stored)
    manager.refresh("gh", principal="admin", force=True)
    assert [] == server.revoked_grants
    token_type = manager.get("gh", principal="admin").token_type  # type: ignore[attr-defined]
    assert "Bearer" == token_type


# -- issue 17, events: expired, refreshed (opt-in), de-duplicated failures ---------------------


def test_an_outage_sends_one_failure_then_summaries_expired_once_and_recovered(
    make_manager: Any, server: TokenServer, oauth_credential: Any
) -> None:
    """Provider down for an hour: refresh_failed once, a summary at most every 15 minutes,
    expired when the token runs out, recovered at the end; refreshed only on request."""
    events: list[CredentialEvent] = []
    now = [START]
    manager: CredentialManager = make_manager(
        hooks=[events.append], clock=lambda: now[0], notify_refreshed=True
    )
    credential = oauth_credential(server, access_token="at-old", expires_in=600)
    manager.store("gh", credential, principal="admin")
    server.mode = "500"
    for minute in range(9, 70):
        now[0] = START + timedelta(minutes=minute)
        manager.tick(now[0])
    server.mode = "ok"
    now[0] = START + timedelta(minutes=90)
    manager.tick(now[0])
    assert manager.flush_events()
    kinds = [event.kind.value for event in events]
    failures = [e for e in events if e.kind is EventKind.REFRESH_FAILED]
    assert 1 == kinds.count("expired")
    assert 2 <= len(failures) <= 5
    gaps = [b.at - a.at for a, b in itertools.pairwise(failures)]
    assert all(gap >= timedelta(minutes=15) for gap in gaps)
    assert ["recovered", "refreshed"] == sorted(kinds[-2:])


def test_a_dripping_webhook_is_cut_off_at_its_deadline(server: TokenServer) -> None:
    """A receiver that drips its answer costs one attempt's timeout, not its per-read time."""
    server.drip_seconds = 0.2  # the whole answer would take about 10 s
    server.mode = "drip"
    notifier = WebhookNotifier(server.url, b"k", attempts=1, timeout=0.5, total=1.0)
    event = CredentialEvent(kind=EventKind.EXPIRED, credential_id="x", state="EXPIRED", at=START)
    started = time.monotonic()
    notifier(event)
    assert time.monotonic() - started < 5.0
