"""``store(..., test=True)``: a live token request and the probe before anything is stored.

What passed is stored, with the tokens the test obtained (a rotating provider has spent the
refresh token the caller gave); what failed leaves no row, no history and an audited
``test`` failure. Everything runs against the strict loopback provider on both engines.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from credman import (
    AccessDenied,
    ApiKey,
    BearerToken,
    CredentialManager,
    CredentialValidationError,
    NotFound,
    OAuth2,
    Probe,
    RefreshFailed,
    State,
)
from credman.testing.provider import TokenServer


def test_a_tested_oauth_credential_is_stored_with_the_tokens_the_test_obtained(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    given = server.grant("client-1")
    info = manager.store(
        "crm", oauth_credential(server, refresh_token=given), principal="admin", test=True
    )
    assert (State.ACTIVE, 1) == (info.state, info.version)
    assert 1 == server.refreshes
    stored = manager.get("crm", principal="admin")
    assert isinstance(stored, OAuth2)
    assert stored.access_token is not None and stored.refresh_token is not None
    assert server.is_valid(stored.access_token.reveal())
    # the provider rotated the refresh token: the one given is spent, the new one is kept
    assert not server.is_valid_refresh_token(given)
    assert server.is_valid_refresh_token(stored.refresh_token.reveal())
    assert stored.expires_at is not None
    tests = [e for e in manager.audit_events(principal="admin") if e.action == "test"]
    assert [("ok", True)] == [(e.outcome, e.detail["exchanged"]) for e in tests]


def test_a_refused_token_request_stores_nothing(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    credential = oauth_credential(server, refresh_token="rt_never-issued")
    with pytest.raises(RefreshFailed) as raised:
        manager.store("crm", credential, principal="admin", test=True)
    assert raised.value.permanent and "nothing stored" in str(raised.value)
    for look in (manager.info, manager.history):
        with pytest.raises(NotFound):
            look("crm", principal="admin")
    failed = [e for e in manager.audit_events(principal="admin") if e.action == "test"]
    assert [("failed", "invalid_grant")] == [(e.outcome, e.detail["error"]) for e in failed]


def test_the_probe_runs_with_the_material_the_exchange_returned(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    credential = oauth_credential(server, probe=Probe(url=server.resource_url))
    manager.store("crm", credential, principal="admin", test=True)
    assert (1, 1) == (server.refreshes, server.resource_requests)


def test_a_static_credential_the_probe_refuses_is_not_stored(
    manager: CredentialManager, server: TokenServer
) -> None:
    bad = BearerToken(token="not-issued-by-the-provider", probe=Probe(url=server.resource_url))
    with pytest.raises(CredentialValidationError, match="probe answered HTTP 401, expected 200"):
        manager.store("api", bad, principal="admin", test=True)
    with pytest.raises(NotFound):
        manager.info("api", principal="admin")
    assert 1 == server.resource_requests


def test_a_static_credential_without_a_probe_cannot_be_tested(
    manager: CredentialManager,
) -> None:
    with pytest.raises(CredentialValidationError, match="probe") as raised:
        manager.store("k", ApiKey(key="sk_test_1"), principal="admin", test=True)
    assert ("probe",) == raised.value.fields
    with pytest.raises(NotFound):
        manager.info("k", principal="admin")


def test_nothing_leaves_the_process_for_a_taken_id_or_a_caller_who_may_not_store(
    manager: CredentialManager,
    server: TokenServer,
    oauth_credential: Callable[..., OAuth2],
) -> None:
    manager.store("crm", oauth_credential(server), principal="admin")
    with pytest.raises(CredentialValidationError, match="exists"):
        manager.store(
            "crm", oauth_credential(server), principal="admin", test=True, create_only=True
        )
    with pytest.raises(AccessDenied):
        manager.store("other", oauth_credential(server), principal="mallory", test=True)
    assert 0 == server.token_requests
