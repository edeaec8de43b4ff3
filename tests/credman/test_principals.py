"""Component identity: principal records, tokens, authenticated rows, lockout."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from credman import (
    AccessDenied,
    CredentialManager,
    CredentialValidationError,
    NotFound,
    TooManyAttempts,
    Unauthenticated,
)
from credman.crypto.tokens import new_token, parse_token
from credman.principals import parse_duration

ADMIN = "admin"


def _tamper(database_url: str, sql: str, **params: object) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(sql), params)
    engine.dispose()


def test_token_has_prefix_id_secret_and_checksum() -> None:
    """cmp_<12>_<22>_<6>: a scanner can validate the checksum offline."""
    token_id, token = new_token()
    prefix, public, secret, checksum = token.split("_")
    assert ("cmp", token_id, 22, 6) == (prefix, public, len(secret), len(checksum))
    assert token_id == parse_token(token).token_id  # type: ignore[union-attr]


def test_every_single_character_change_breaks_the_checksum_or_the_secret() -> None:
    """Changing any one character of the checksum or id part makes parse_token refuse it."""
    _, token = new_token()
    for position in [4, 10, len(token) - 1]:
        changed = (
            token[:position] + ("x" if token[position] != "x" else "y") + token[position + 1 :]
        )
        assert parse_token(changed) is None


def test_authenticate_returns_the_name_and_records_last_use(manager: CredentialManager) -> None:
    """A fresh token authenticates as its principal; last_used_at is set."""
    _, token = manager.add_principal("etl", description="nightly ETL", principal=ADMIN)
    assert "etl" == manager.authenticate(token, source="127.0.0.1")
    (info,) = manager.list_principals(principal=ADMIN)
    assert ("etl", "nightly ETL") == (info.name, info.description)
    assert info.last_used_at is not None


def test_the_database_holds_no_token(manager: CredentialManager, database_url: str) -> None:
    """Neither the token nor its secret part is stored, only a keyed hash."""
    _, token = manager.add_principal("etl", principal=ADMIN)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = [str(tuple(row)) for row in connection.execute(text("SELECT * FROM principal"))]
    engine.dispose()
    secret = token.split("_")[2]
    assert [] == [row for row in rows if secret in row]


def test_a_database_writer_cannot_extend_or_revive_a_principal(
    manager: CredentialManager, database_url: str
) -> None:
    """Clearing revoked_at behind credman's back does not bring the token back."""
    _, token = manager.add_principal("etl", principal=ADMIN)
    manager.revoke_principal("etl", principal=ADMIN)
    _tamper(database_url, "UPDATE principal SET revoked_at = NULL")
    with pytest.raises(Unauthenticated):
        manager.authenticate(token, source="127.0.0.1")
    (event,) = manager.audit_events(principal=ADMIN, subject="anonymous")
    assert "tampered" == event.detail["reason"]


def test_a_forged_principal_row_is_refused_and_not_listed(
    manager: CredentialManager, database_url: str
) -> None:
    """A row copied with another name fails its MAC: no login, not listed."""
    manager.add_principal("etl", principal=ADMIN)
    _tamper(database_url, "UPDATE principal SET name = 'admin'")
    assert [] == manager.list_principals(principal=ADMIN)


def test_only_admins_manage_principals(manager: CredentialManager) -> None:
    """A non-admin cannot add principals; the denial is audited."""
    with pytest.raises(AccessDenied):
        manager.add_principal("etl", principal="intruder")
    denied = manager.audit_events(principal=ADMIN, outcome="denied")
    assert [("intruder", "principal_add")] == [(e.principal, e.action) for e in denied]


def test_names_are_unique_and_validated(manager: CredentialManager) -> None:
    """A taken name and a bad name are validation errors naming the field."""
    manager.add_principal("etl", principal=ADMIN)
    with pytest.raises(CredentialValidationError) as taken:
        manager.add_principal("etl", principal=ADMIN)
    with pytest.raises(CredentialValidationError) as bad:
        manager.add_principal("system:scheduler", principal=ADMIN)
    assert (("name",), ("principal",)) == (taken.value.fields, bad.value.fields)


def test_rotate_keeps_the_lifetime_and_unknown_names_are_not_found(
    manager: CredentialManager,
) -> None:
    """rotate gives the same lifetime from now; rotating a stranger is NotFound."""
    info, _ = manager.add_principal("etl", expires_in=timedelta(days=90), principal=ADMIN)
    rotated, _ = manager.rotate_principal("etl", principal=ADMIN)
    assert rotated.expires_at is not None and info.expires_at is not None
    assert timedelta(days=90) == rotated.expires_at - rotated.token_issued_at
    with pytest.raises(NotFound):
        manager.rotate_principal("nobody", principal=ADMIN)


def test_tokens_survive_key_rotation(manager: CredentialManager) -> None:
    """Rotating the keyring does not invalidate principal tokens."""
    _, token = manager.add_principal("etl", principal=ADMIN)
    manager.rotate_keys(principal=ADMIN)
    assert "etl" == manager.authenticate(token, source="127.0.0.1")


def test_expiry_is_checked_against_the_managers_clock(
    make_manager: Callable[..., CredentialManager],
) -> None:
    """A token is refused from the moment its expiry passes."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    manager = make_manager(clock=lambda: now[0])
    _, token = manager.add_principal("etl", expires_in=60, principal=ADMIN)
    now[0] += timedelta(seconds=59)
    assert "etl" == manager.authenticate(token, source="127.0.0.1")
    now[0] += timedelta(seconds=1)
    with pytest.raises(Unauthenticated):
        manager.authenticate(token, source="127.0.0.1")


def test_a_source_is_locked_after_many_failures(manager: CredentialManager) -> None:
    """Failures from one address lock that address, whatever tokens it tries."""
    manager.configure_auth_throttle(max_failures=2, lockout=60, source_max_failures=3)
    _, token = manager.add_principal("etl", principal=ADMIN)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            manager.authenticate("garbage", source="10.9.9.9")
    with pytest.raises(TooManyAttempts):
        manager.authenticate(token, source="10.9.9.9")
    assert "etl" == manager.authenticate(token, source="127.0.0.1")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45", 45), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    """parse_duration reads the CLI's --expires-in forms."""
    assert timedelta(seconds=seconds) == parse_duration(text)


def test_bad_duration_names_expires_in() -> None:
    """A duration that is not one is a validation error naming expires_in."""
    with pytest.raises(CredentialValidationError) as caught:
        parse_duration("soon")
    assert ("expires_in",) == caught.value.fields
