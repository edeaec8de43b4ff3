"""Least privilege: default deny, grants by exact id or glob, admins from configuration, and
every refusal on record as a committed security event."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credman import (
    AccessDenied,
    AuditEvent,
    BasicAuth,
    CredentialManager,
    CredentialValidationError,
    NotFound,
    Permission,
)
from credman.access import SYSTEM

SYSTEM_PRINCIPAL = SYSTEM.name

P = Permission
NAMES = ("github-prod", "github-dev", "erp-a", "erp-b", "stripe")
GLOBS: dict[str, frozenset[str]] = {  # each pattern and the names it matches, by hand
    "github-prod": frozenset({"github-prod"}),
    "github-*": frozenset({"github-prod", "github-dev"}),
    "*-prod": frozenset({"github-prod"}),
    "erp-?": frozenset({"erp-a", "erp-b"}),
    "erp-[ab]": frozenset({"erp-a", "erp-b"}),
    "erp-[b]": frozenset({"erp-b"}),
    "erp-[!a]": frozenset({"erp-b"}),
    "?tripe": frozenset({"stripe"}),
    "stripe?": frozenset(),
    "GITHUB-*": frozenset(),  # patterns are case-sensitive
    "*": frozenset(NAMES),
}
EVERYTHING = None
"""A grant on the bare pattern ``*``: every credential, and the right to grant if ``admin``."""


@dataclass(frozen=True)
class Operation:
    """One public operation: the permissions that allow it, and how a refusal is audited."""

    action: str  # the audit row's action when it is refused
    allowed_by: frozenset[Permission]
    denied_for: str  # the permission named in the AccessDenied and its audit row


OPERATIONS: dict[str, Operation] = {
    "get": Operation("read", frozenset({P.READ}), "read"),
    "access": Operation("access", frozenset({P.USE, P.READ}), "use"),
    "info": Operation(
        "info", frozenset({P.USE, P.READ, P.MANAGE, P.AUDIT}), "audit|manage|read|use"
    ),
    "history": Operation("history", frozenset({P.MANAGE, P.AUDIT}), "audit|manage"),
    "store": Operation("store", frozenset({P.MANAGE}), "manage"),  # a new credential
    "update": Operation("store", frozenset({P.MANAGE}), "manage"),
    "grant": Operation("grant", frozenset({P.ADMIN}), "admin"),  # needs admin on `*` itself
    "revoke": Operation("revoke", frozenset({P.MANAGE}), "manage"),  # last: the end of the line
}

Grants = list[tuple[str | None, frozenset[Permission]]]


def _held(grants: Grants, name: str) -> frozenset[Permission]:
    held: set[Permission] = set()
    for glob, permissions in grants:
        if glob is EVERYTHING or name in GLOBS[glob]:
            held |= permissions
    return frozenset(Permission) if P.ADMIN in held else frozenset(held)


def _allowed(operation: str, grants: Grants, name: str) -> bool:
    if operation == "grant":
        return any(glob is EVERYTHING and P.ADMIN in perms for glob, perms in grants)
    return bool(_held(grants, name) & OPERATIONS[operation].allowed_by)


def _basic(word: str = "pw") -> BasicAuth:
    return BasicAuth(username="svc", password=word)


def _events_after(manager: CredentialManager, seq: int) -> list[AuditEvent]:
    return [e for e in manager.audit_events(principal="admin", limit=10) if e.seq > seq]


@dataclass(frozen=True)
class Case:
    """One example: a fresh principal and credential ids, so examples never interfere."""

    run: int
    principal: str
    target: str  # exists before the operations run
    fresh: str  # does not exist; the "store" operation creates it

    def call(self, manager: CredentialManager, operation: str) -> object:
        """Run ``operation`` as this case's principal."""
        who, target = self.principal, self.target
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: manager.get(target, principal=who),
            "access": lambda: manager.access(target, principal=who),
            "info": lambda: manager.info(target, principal=who),
            "history": lambda: manager.history(target, principal=who),
            "store": lambda: manager.store(self.fresh, _basic(), principal=who),
            "update": lambda: manager.store(target, _basic("new"), principal=who),
            "grant": lambda: manager.grant("peer", f"r{self.run}/*", ["use"], principal=who),
            "revoke": lambda: manager.revoke(target, principal=who, reason="test"),
        }
        return calls[operation]()

    def credential_of(self, operation: str) -> str | None:
        """The credential id the operation's audit row names."""
        return {"store": self.fresh, "grant": None}.get(operation, self.target)


_runs = itertools.count()
grant_lists = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(list(GLOBS)), st.just(EVERYTHING)),  # half of them global
        st.frozensets(st.sampled_from(list(Permission)), min_size=1, max_size=2),
    ),
    max_size=3,
)


@pytest.fixture
def sqlite_manager(sqlite_url: str, key_file: Path) -> Iterator[CredentialManager]:
    """A SQLite manager, for checks that do not depend on the engine; the hypothesis test
    shares one across its examples (fresh ids per example keep them apart)."""
    with CredentialManager(sqlite_url, str(key_file), synchronous="NORMAL") as manager:
        yield manager


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # shared on purpose, see Case
)
@given(
    grants=grant_lists,
    names=st.lists(st.sampled_from(NAMES), min_size=2, max_size=2, unique=True),
)
def test_exactly_the_granted_operations_succeed_and_every_refusal_is_audited(
    sqlite_manager: CredentialManager, grants: Grants, names: list[str]
) -> None:
    """For random grants, each operation succeeds iff granted; each refusal is one audit row."""
    manager, run = sqlite_manager, next(_runs)
    target, fresh = names
    case = Case(run, f"svc-{run}", f"r{run}/{target}", f"r{run}/{fresh}")
    manager.store(case.target, _basic(), principal="admin")
    for glob, permissions in grants:
        pattern = "*" if glob is EVERYTHING else f"r{run}/{glob}"
        manager.grant(case.principal, pattern, permissions, principal="admin")
    for operation, spec in OPERATIONS.items():
        name = fresh if operation == "store" else target
        before = manager.audit_head()[0]
        if _allowed(operation, grants, name):
            case.call(manager, operation)
            assert [] == [e for e in _events_after(manager, before) if e.outcome != "ok"]
            continue
        with pytest.raises(AccessDenied):
            case.call(manager, operation)
        [event] = _events_after(manager, before)
        assert (
            spec.action,
            "denied",
            case.principal,
            case.credential_of(operation),
            spec.denied_for,
        ) == (
            event.action,
            event.outcome,
            event.principal,
            event.credential_id,
            event.detail["permission"],
        )


def test_default_deny_does_not_reveal_whether_a_credential_exists(
    manager: CredentialManager,
) -> None:
    """A principal without grants is denied alike on an existing and a missing id."""
    manager.store("real", _basic(), principal="admin")
    for credential_id in ("real", "missing"):
        with pytest.raises(AccessDenied):
            manager.get(credential_id, principal="stranger")


def test_admins_come_from_the_admins_argument(
    make_manager: Callable[..., CredentialManager],
) -> None:
    """With admins=["ops"], ops may store and grant, and the default 'admin' may not."""
    manager = make_manager(admins=["ops"])
    manager.store("c", _basic(), principal="ops")
    manager.grant("bob", "c", ["use"], principal="ops")
    with pytest.raises(AccessDenied):
        manager.get("c", principal="admin")


def test_admins_come_from_the_environment(
    make_manager: Callable[..., CredentialManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CREDMAN_ADMINS names the admins, comma-separated."""
    monkeypatch.setenv("CREDMAN_ADMINS", "ops, root")
    manager = make_manager()
    manager.store("c", _basic(), principal="root")
    manager.grant("bob", "c", ["use"], principal="ops")
    with pytest.raises(AccessDenied):
        manager.store("d", _basic(), principal="admin")


def test_admin_in_a_grant_implies_every_permission_on_its_pattern(
    manager: CredentialManager,
) -> None:
    """admin on team-* allows use, manage and audit there, and nothing elsewhere."""
    manager.store("other", _basic(), principal="admin")
    manager.grant("lead", "team-*", ["admin"], principal="admin")
    manager.store("team-a", _basic("one"), principal="lead")
    assert "one" == manager.get("team-a", principal="lead").password.reveal()  # type: ignore[attr-defined]
    assert 2 == len(manager.history("team-a", principal="lead"))
    manager.revoke("team-a", principal="lead", reason="done")
    with pytest.raises(AccessDenied):
        manager.get("other", principal="lead")


def test_only_admin_on_every_credential_may_grant(manager: CredentialManager) -> None:
    """admin on team-* cannot grant; admin on * can."""
    manager.grant("lead", "team-*", ["admin"], principal="admin")
    with pytest.raises(AccessDenied):
        manager.grant("bob", "team-a", ["use"], principal="lead")
    manager.grant("lead", "*", ["admin"], principal="admin")
    assert {P.USE} == manager.grant("bob", "team-a", ["use"], principal="lead").permissions


@pytest.mark.parametrize("pattern", ["?", "[*]", "[!a]"])
def test_a_pattern_that_only_matches_the_text_star_gives_no_global_rights(
    manager: CredentialManager, pattern: str
) -> None:
    """audit on a pattern for some ids does not open the whole audit trail or the grant list."""
    manager.grant("auditor", pattern, ["audit"], principal="admin")
    with pytest.raises(AccessDenied):
        manager.audit_events(principal="auditor")
    with pytest.raises(AccessDenied):
        manager.grants(principal="auditor")


def test_audit_on_every_credential_reads_the_trail_and_the_grants(
    manager: CredentialManager,
) -> None:
    """audit on * lets a principal read the audit trail and the grants in force."""
    manager.grant("auditor", "*", ["audit"], principal="admin")
    assert ["grant"] == [e.action for e in manager.audit_events(principal="auditor")]
    assert ["auditor"] == [g.principal for g in manager.grants(principal="auditor")]


def test_revoking_a_grant_takes_effect_immediately(manager: CredentialManager) -> None:
    """The next call after revoke_grant is denied, on the same manager."""
    manager.store("c", _basic(), principal="admin")
    manager.grant("bob", "c", ["use"], principal="admin")
    manager.access("c", principal="bob")
    assert manager.revoke_grant("bob", "c", principal="admin")
    with pytest.raises(AccessDenied):
        manager.access("c", principal="bob")


@pytest.mark.parametrize(
    "name", ["", "a b", "-bob", "bob:x", "b" * 129, "bøb"], ids=lambda name: repr(name)[:12]
)
def test_malformed_principal_names_are_refused(
    sqlite_manager: CredentialManager, name: str
) -> None:
    """A principal name outside the documented alphabet is a validation error naming it."""
    with pytest.raises(CredentialValidationError) as refused:
        sqlite_manager.info("c", principal=name)
    assert ("principal",) == refused.value.fields


def test_the_system_principal_cannot_be_granted_anything(manager: CredentialManager) -> None:
    """grant() refuses system:scheduler as a grantee."""
    with pytest.raises(CredentialValidationError):
        manager.grant(SYSTEM_PRINCIPAL, "*", ["use"], principal="admin")


@pytest.mark.parametrize("operation", ["get", "store"])
def test_callers_cannot_act_as_the_system_principal(
    sqlite_manager: CredentialManager, operation: str
) -> None:
    """The scheduler's reserved name is refused as a principal in public calls."""
    manager = sqlite_manager
    manager.store("c", _basic(), principal="admin")
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: manager.get("c", principal=SYSTEM_PRINCIPAL),
        "store": lambda: manager.store("c", _basic(), principal=SYSTEM_PRINCIPAL),
    }
    with pytest.raises(CredentialValidationError):
        calls[operation]()


def test_a_denial_is_committed_although_the_operation_fails(
    make_manager: Callable[..., CredentialManager],
) -> None:
    """store() by an intruder raises AccessDenied, writes nothing, and the denial persists."""
    manager = make_manager()
    with pytest.raises(AccessDenied):
        manager.store("c", _basic(), principal="intruder")
    reopened = make_manager()
    with pytest.raises(NotFound):
        reopened.info("c", principal="admin")
    [event] = reopened.audit_events(principal="admin", outcome="denied")
    assert ("store", "intruder", "c", "manage") == (
        event.action,
        event.principal,
        event.credential_id,
        event.detail["permission"],
    )
