"""The manager over a real database: store, get, info, history, list, revoke, persisted transitions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from credman import (
    AccessDenied,
    ApiKey,
    BasicAuth,
    BearerToken,
    CredentialManager,
    CredentialUnusable,
    CredentialValidationError,
    InvalidTransition,
    NotFound,
    OAuth2,
    Permission,
    State,
)
from credman.lifecycle import EDGES, target_of

URL = "https://provider.example/token"
TRIGGERS = sorted({edge.trigger for edge in EDGES})


def _oauth(**overrides: Any) -> OAuth2:
    values: dict[str, Any] = {
        "token_url": URL,
        "client_id": "cid",
        "access_token": "at-1",
        "refresh_token": "rt-1",
    }
    values.update(overrides)
    return OAuth2(**values)


def test_new_credential_ends_active_with_history(manager: CredentialManager) -> None:
    """store() of a new credential: ACTIVE, version 1, create and activate recorded."""
    info = manager.store("gh", _oauth(expires_in=3600), principal="admin")
    assert (State.ACTIVE, 1) == (info.state, info.version)
    steps = [
        (s.from_state, s.to_state, s.trigger) for s in manager.history("gh", principal="admin")
    ]
    assert [(None, State.CREATED, "create"), (State.CREATED, State.ACTIVE, "activate")] == steps


def test_update_moves_to_updated_and_bumps_version(manager: CredentialManager) -> None:
    """Storing over an existing credential moves it to UPDATED and bumps the version by one."""
    manager.store("gh", _oauth(), principal="admin")
    info = manager.store("gh", _oauth(access_token="at-2"), principal="admin", reason="rotated")
    assert (State.UPDATED, 2) == (info.state, info.version)
    last = manager.history("gh", principal="admin")[-1]
    assert ("update", "rotated", 2) == (last.trigger, last.reason, last.version)
    assert "at-2" == manager.get("gh", principal="admin").access_token.reveal()  # type: ignore[attr-defined]


def test_get_returns_decrypted_secrets(manager: CredentialManager) -> None:
    """get() returns the credential with its secrets behind Secret."""
    manager.store(
        "stripe",
        ApiKey(key="sk_live_1", header="Authorization", prefix="Bearer "),
        principal="admin",
    )
    credential = manager.get("stripe", principal="admin")
    assert isinstance(credential, ApiKey)
    assert ("sk_live_1", "Authorization", "Bearer ") == (
        credential.key.reveal(),
        credential.header,
        credential.prefix,
    )


def test_info_and_list_carry_no_secret(manager: CredentialManager) -> None:
    """info() and list() show metadata and state, never a secret value."""
    manager.store("legacy", BasicAuth(username="u", password="pw-secret"), principal="admin")
    info = manager.info("legacy", principal="admin")
    assert {"username": "u"} == dict(info.metadata)
    assert "pw-secret" not in repr(info) + repr(manager.list(principal="admin"))


def test_list_shows_only_what_the_principal_may_see(manager: CredentialManager) -> None:
    """A principal lists only the credentials it holds a grant on."""
    for name in ("github-a", "github-b", "erp"):
        manager.store(name, BasicAuth(username="u", password="p"), principal="admin")
    manager.grant("worker", "github-*", {Permission.USE}, principal="admin")
    assert ["github-a", "github-b"] == [i.credential_id for i in manager.list(principal="worker")]
    assert [] == manager.list(principal="nobody")


def test_unknown_credential_is_not_found(manager: CredentialManager) -> None:
    """Reading an id that does not exist raises NotFound."""
    with pytest.raises(NotFound):
        manager.get("missing", principal="admin")


@pytest.mark.parametrize("bad_id", ["", " x", "a" * 129, "a b", "../etc", "é", 7])
def test_bad_credential_id_is_a_validation_error(manager: CredentialManager, bad_id: Any) -> None:
    """Ids outside the documented alphabet are refused naming credential_id."""
    with pytest.raises(CredentialValidationError) as raised:
        manager.store(bad_id, BasicAuth(username="u", password="p"), principal="admin")
    assert ("credential_id",) == raised.value.fields


def test_store_refuses_non_credentials(manager: CredentialManager) -> None:
    """store() of something that is not a credential type is a validation error."""
    with pytest.raises(CredentialValidationError, match="credential"):
        manager.store("x", {"username": "u"}, principal="admin")  # type: ignore[arg-type]


def test_revoke_destroys_material_and_keeps_history(manager: CredentialManager) -> None:
    """revoke(): REVOKED, no key or ciphertext left, history kept; get() then refuses."""
    manager.store("gh", _oauth(), principal="admin")
    info = manager.revoke("gh", principal="admin", reason="offboarded")
    assert (State.REVOKED, None) == (info.state, info.key_version)
    with pytest.raises(CredentialUnusable, match="revoked"):
        manager.get("gh", principal="admin")
    assert ("revoke", "offboarded") == (
        manager.history("gh", principal="admin")[-1].trigger,
        manager.history("gh", principal="admin")[-1].reason,
    )


def test_revoked_credential_cannot_be_stored_again(manager: CredentialManager) -> None:
    """REVOKED is terminal: storing under its id raises InvalidTransition."""
    manager.store("gh", _oauth(), principal="admin")
    manager.revoke("gh", principal="admin")
    with pytest.raises(InvalidTransition, match="is revoked") as refused:
        manager.store("gh", _oauth(), principal="admin")
    assert ("update", "REVOKED") == (refused.value.trigger, refused.value.state)


def test_expired_material_moves_to_expired_on_read(manager: CredentialManager) -> None:
    """A non-refreshable token read after its expiry is moved to EXPIRED and refused."""
    with freeze_time("2026-01-01 00:00:00"):
        manager.store("tok", BearerToken(token="t", expires_in=60), principal="admin")
        assert "t" == manager.get("tok", principal="admin").token.reveal()  # type: ignore[attr-defined]
    with freeze_time("2026-01-01 00:01:00"), pytest.raises(CredentialUnusable):
        manager.get("tok", principal="admin")
    assert State.EXPIRED == manager.info("tok", principal="admin").state
    assert "expire" == manager.history("tok", principal="admin")[-1].trigger


def test_expired_credential_is_reauthorized_by_store(manager: CredentialManager) -> None:
    """Storing new material on an EXPIRED credential brings it back (UPDATED)."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    manager.store("tok", BearerToken(token="t", expires_at=past), principal="admin")
    with pytest.raises(CredentialUnusable):
        manager.get("tok", principal="admin")
    info = manager.store("tok", BearerToken(token="t2", expires_in=60), principal="admin")
    assert State.UPDATED == info.state
    assert "t2" == manager.get("tok", principal="admin").token.reveal()  # type: ignore[attr-defined]


def test_next_due_is_set_from_expiry(manager: CredentialManager) -> None:
    """A refreshable token is due in its margin (spread up to 20% earlier); a static one at expiry."""
    with freeze_time("2026-01-01 00:00:00"):
        oauth = manager.store("o", _oauth(expires_in=3600), principal="admin")
        bearer = manager.store("b", BearerToken(token="t", expires_in=3600), principal="admin")
    hour = datetime(2026, 1, 1, 1, tzinfo=UTC)
    assert oauth.next_due_at is not None
    assert hour - timedelta(minutes=6) <= oauth.next_due_at <= hour - timedelta(minutes=5)
    assert hour == bearer.next_due_at


def test_oauth_token_without_expiry_is_still_due(manager: CredentialManager) -> None:
    """A refreshable token without expires_in is checked again after the default lifetime."""
    with freeze_time("2026-01-01 00:00:00"):
        info = manager.store("o", _oauth(), principal="admin")
    assert datetime(2026, 1, 1, 1, tzinfo=UTC) == info.next_due_at


# -- every (state, trigger) pair, persisted ------------------------------------------------

REACH: dict[State, list[str]] = {
    State.ACTIVE: [],
    State.UPDATED: ["update"],
    State.REFRESHING: ["start_refresh"],
    State.EXPIRED: ["expire"],
    State.REVOKED: ["revoke"],
}


def _in_state(manager: CredentialManager, state: State) -> None:
    with freeze_time("2026-01-01 00:00:00"):
        manager.store("c", _oauth(expires_in=60), principal="admin")
    with freeze_time("2026-01-01 00:02:00"):
        for trigger in REACH[state]:
            manager.force_transition("c", trigger, principal="admin")


@pytest.mark.parametrize("state", list(REACH))
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_every_pair_persists_or_changes_nothing(
    make_manager: Callable[..., CredentialManager], state: State, trigger: str
) -> None:
    """Legal pairs move and record history; illegal ones leave state, version, history alone."""
    manager = make_manager()
    _in_state(manager, state)
    before = manager.info("c", principal="admin")
    steps = manager.history("c", principal="admin")
    expected = target_of(state, trigger)
    with freeze_time("2026-01-01 00:02:00"):
        # refresh_deferred's guard (token still valid) refuses: the token expired at 00:01
        if expected is None or trigger == "refresh_deferred":
            with pytest.raises(InvalidTransition):
                manager.force_transition("c", trigger, principal="admin")
            after = manager.info("c", principal="admin")
            assert (state, before.version) == (after.state, after.version)
            assert steps == manager.history("c", principal="admin")
            return
        info = manager.force_transition("c", trigger, principal="admin")
    assert (expected, before.version + 1) == (info.state, info.version)
    last = manager.history("c", principal="admin")[-1]
    assert (state, expected, trigger, info.version) == (
        last.from_state,
        last.to_state,
        last.trigger,
        last.version,
    )


def test_denied_transition_changes_nothing(manager: CredentialManager) -> None:
    """A principal without manage cannot revoke; state, version and history stay."""
    manager.store("c", _oauth(), principal="admin")
    manager.grant("reader", "c", {Permission.USE}, principal="admin")
    with pytest.raises(AccessDenied):
        manager.revoke("c", principal="reader")
    assert (State.ACTIVE, 1) == (
        manager.info("c", principal="admin").state,
        manager.info("c", principal="admin").version,
    )
    assert 2 == len(manager.history("c", principal="admin"))
