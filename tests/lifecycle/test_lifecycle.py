"""The transition table and machine, pure: every (state, trigger) pair, guards, permissions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from credman.errors import AccessDenied, InvalidTransition
from credman.lifecycle import EDGES, Permission, State, Subject, fire, legal_triggers, target_of
from credman.lifecycle.machine import MACHINE

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TRIGGERS = sorted({edge.trigger for edge in EDGES})
SEED_EDGES = {
    (State.CREATED, State.ACTIVE),
    (State.ACTIVE, State.REFRESHING),
    (State.REFRESHING, State.UPDATED),
    (State.ACTIVE, State.EXPIRED),
    (State.EXPIRED, State.REVOKED),
    (State.UPDATED, State.REVOKED),
}


def _subject(state: State, **overrides: object) -> Subject:
    """A subject for which every guard passes unless overridden."""
    values: dict[str, object] = {
        "credential_id": "c1",
        "state": state,
        "now": NOW,
        "principal": "p",
        "may": lambda permission: True,
        "refreshable": True,
        "expires_at": None,
        "lease_until": None,
    }
    values.update(overrides)
    subject = Subject(**values)  # type: ignore[arg-type]
    if state in (State.ACTIVE, State.UPDATED) and "expires_at" not in overrides:
        subject.expires_at = NOW  # expiry guard satisfied; token_valid checked on REFRESHING only
    return subject


def test_table_contains_the_seed_edges() -> None:
    """Every edge of the seed's diagram exists in the one table."""
    edges = {(source, edge.dest) for edge in EDGES for source in edge.sources}
    assert set() == SEED_EDGES - edges


def test_revoked_is_terminal() -> None:
    """Nothing leaves REVOKED: no trigger has an edge out of it."""
    assert () == legal_triggers(State.REVOKED)
    assert all(State.REVOKED not in edge.sources for edge in EDGES)


def test_machine_has_no_auto_transitions() -> None:
    """Only the table's triggers exist: no to_<state> shortcuts that bypass it."""
    assert set(TRIGGERS) == set(MACHINE.events)


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_every_state_trigger_pair(state: State, trigger: str) -> None:
    """Legal pairs move to the table's target; illegal ones raise and change nothing."""
    subject = _subject(state)
    expected = target_of(state, trigger)
    if expected is None:
        with pytest.raises(InvalidTransition) as raised:
            fire(subject, trigger)
        assert (state, trigger) == (raised.value.state, raised.value.trigger)
        assert state == subject.state
    else:
        assert expected == fire(subject, trigger)
        assert expected == subject.state


@pytest.mark.parametrize(
    ("state", "trigger", "overrides", "guard"),
    [
        (State.ACTIVE, "start_refresh", {"refreshable": False}, "refreshable"),
        (State.ACTIVE, "expire", {"expires_at": NOW + timedelta(seconds=1)}, "past_expiry"),
        (State.UPDATED, "expire", {"expires_at": None}, "past_expiry"),
        (State.REFRESHING, "refresh_deferred", {"expires_at": NOW}, "token_valid"),
        (State.REFRESHING, "lease_expired", {"lease_until": NOW + timedelta(1)}, "lease_stale"),
    ],
)
def test_refusing_guard_names_itself_and_changes_nothing(
    state: State, trigger: str, overrides: dict[str, object], guard: str
) -> None:
    """A guard that refuses raises InvalidTransition naming it; the state is unchanged."""
    subject = _subject(state, **overrides)
    with pytest.raises(InvalidTransition) as raised:
        fire(subject, trigger)
    assert guard == raised.value.guard
    assert state == subject.state


@pytest.mark.parametrize("edge", EDGES, ids=lambda edge: edge.trigger)
def test_every_edge_needs_its_permission(edge: object) -> None:
    """Without the edge's permission the machine refuses with AccessDenied."""
    assert hasattr(edge, "permission")
    source = edge.sources[0]  # type: ignore[attr-defined]
    subject = _subject(source, may=lambda permission: permission != edge.permission)  # type: ignore[attr-defined]
    with pytest.raises(AccessDenied):
        fire(subject, edge.trigger)  # type: ignore[attr-defined]
    assert source == subject.state


def test_consumer_maintenance_needs_only_use() -> None:
    """Refresh and expiry edges need USE, so a consumer's read can keep its token fresh."""
    maintenance = {"start_refresh", "refresh_succeeded", "refresh_failed", "expire"}
    permissions = {edge.trigger: edge.permission for edge in EDGES}
    assert {Permission.USE} == {permissions[trigger] for trigger in maintenance}


def test_operator_edges_need_manage() -> None:
    """Storing, updating and revoking need MANAGE."""
    permissions = {edge.trigger: edge.permission for edge in EDGES}
    assert {Permission.MANAGE} == {permissions[t] for t in ("activate", "update", "revoke")}
