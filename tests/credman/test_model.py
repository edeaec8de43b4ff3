"""Model-based test: random sequences of API calls, time jumps, provider faults and grants
against a small reference model of the lifecycle. After every step the database agrees
with the model (state, version, schedule), history is one unbroken path, every read is
audited, and the audit chain verifies."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from credman import (
    AccessDenied,
    ApiKey,
    BasicAuth,
    BearerToken,
    CredentialManager,
    CredentialUnusable,
    InvalidTransition,
    NotFound,
    OAuth2,
    Permission,
    RefreshFailed,
    State,
)
from credman.crypto import KeyFileProvider
from credman.lifecycle import RefreshPolicy
from credman.testing.provider import TokenServer

CLIENT, SECRET = "client-1", "client-secret-1"
START = datetime(2026, 3, 1, 10, tzinfo=UTC)
SERVER_LIFETIME = 600
POLICY = RefreshPolicy(backoff_base=1.0, backoff_cap=1.0, cooldown=30.0, timeout=5.0, spread=0.0)
"""Backoff capped below the cooldown (and every Retry-After below it too): each retry is
exactly ``RETRY`` after the failure, so the model knows when it is due; no random spread,
so due times are ones the model can compute."""
RETRY = timedelta(seconds=POLICY.cooldown)
IDS = ("a", "b", "c")
REVOCABLE = ("c",)
"""Revoking is for good: only "c" may be revoked, so "a" and "b" stay alive to refresh."""
OAUTH_KINDS = (("oauth", None), ("oauth", 120), ("oauth", 3600))
KINDS = (("basic", None), ("api_key", None), ("bearer", 60), ("bearer", 3600), *OAUTH_KINDS * 2)
"""What a store may put in place; OAuth twice as often, as it has the most to explore."""
"""(type, lifetime in seconds of the stored token; None: no expiry, or no access token)."""
SUCCESS = frozenset({"ok", "no_expires_in", "negative_expires_in"})
MODES = (
    *SUCCESS,
    "500",
    "503_retry_after",
    "429",
    "reset",
    "html",
    "error_body_200",
    "no_access_token",
    "invalid_grant",
    "lost_response",
)
JUMPS = (1, 10, 29, 31, 60, 89, 91, 149, 151, 299, 301, 600, 3599, 3601, 7200)


def _refresh_due(expires_at: datetime, issued_at: datetime) -> datetime:
    """When a token is due for refresh, without jitter (see lifecycle.timing)."""
    lifetime = max(expires_at - issued_at, timedelta(0))
    return expires_at - min(POLICY.margin, lifetime * POLICY.lifetime_fraction)


@dataclass
class Expected:
    """What the model says about one credential."""

    kind: str
    state: State
    version: int
    expires_at: datetime | None
    next_due_at: datetime | None
    has_token: bool = True
    attempts: int = 0
    grant_spent: bool = False
    reads: int = 0

    @property
    def refreshable(self) -> bool:
        return self.kind == "oauth"

    def due(self, now: datetime) -> bool:
        return self.next_due_at is not None and now >= self.next_due_at

    def past_expiry(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def token_valid(self, now: datetime) -> bool:
        return self.has_token and not self.past_expiry(now)


def _material(kind: str, lifetime: int | None, now: datetime) -> dict[str, Any]:
    """The model's columns for freshly stored material of ``kind``."""
    expires_at = None if lifetime is None else now + timedelta(seconds=lifetime)
    if kind == "bearer":
        return {"expires_at": expires_at, "next_due_at": expires_at}
    if kind == "oauth" and expires_at is None:
        return {"expires_at": None, "next_due_at": now, "has_token": False}
    if kind == "oauth":
        assert expires_at is not None
        return {"expires_at": expires_at, "next_due_at": _refresh_due(expires_at, now)}
    return {"expires_at": None, "next_due_at": None}


class LifecycleModel(RuleBasedStateMachine):
    """Drives one manager, one provider and a frozen clock; mirrors them in ``expected``."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="credman-model-"))
        key_file = self.directory / "credman.key"
        KeyFileProvider(key_file).create()
        self.freezer = freeze_time(START)
        self.clock = self.freezer.start()
        self.server = TokenServer(clients={CLIENT: SECRET}, access_token_lifetime=SERVER_LIFETIME)
        self.server.start()
        self.manager = CredentialManager(
            f"sqlite:///{self.directory / 'credman.db'}", str(key_file), refresh_policy=POLICY
        )
        self.expected: dict[str, Expected] = {}
        self.granted: set[str] = set()
        self.denials: Counter[str] = Counter()

    def teardown(self) -> None:
        self.manager.close()
        self.server.stop()
        self.freezer.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def now(self) -> datetime:
        return datetime.now(UTC)

    # -- the model's refresh --------------------------------------------------------------

    def _attempt(self, model: Expected) -> str:
        """One refresh against the provider as it is set now: "refreshed", "deferred",
        "transient" or "permanent" (claim and outcome are two committed changes)."""
        mode, replay = self.server.mode, model.grant_spent
        outcome = self._outcome(model, mode, self.now)
        event(f"refresh in mode {mode}{' (replay)' if replay else ''}: {outcome}")
        return outcome

    def _outcome(self, model: Expected, mode: str, now: datetime) -> str:
        model.version += 2
        model.attempts += 1
        if mode == "invalid_grant" or (model.grant_spent and mode in {*SUCCESS, "lost_response"}):
            model.state, model.next_due_at = State.EXPIRED, None
            return "permanent"
        if mode in SUCCESS:
            # credman counts a refreshed token's life from the request, less 1 s for the
            # provider's whole-second truncation
            lifetime = SERVER_LIFETIME - 1 if mode == "ok" else None
            model.__dict__.update(_material("oauth", lifetime, now), has_token=True, attempts=0)
            if lifetime is None:
                model.next_due_at = now + POLICY.default_lifetime
            model.state = State.UPDATED
            return "refreshed"
        model.grant_spent |= mode == "lost_response"  # rotated, but the answer never came
        model.next_due_at = now + RETRY
        if model.token_valid(now):
            model.state = State.ACTIVE
            return "deferred"
        model.state = State.EXPIRED
        return "transient"

    def _expect_failure(self, outcome: str, call: Callable[[], object]) -> None:
        with pytest.raises(RefreshFailed) as raised:
            call()
        assert (outcome == "permanent") is raised.value.permanent

    # -- rules ----------------------------------------------------------------------------

    @initialize(first=st.sampled_from(OAUTH_KINDS), second=st.sampled_from(OAUTH_KINDS))
    def store_two_oauth_credentials(
        self, first: tuple[str, int | None], second: tuple[str, int | None]
    ) -> None:
        """Start with OAuth credentials, the ones with the most lifecycle to explore."""
        self.store("a", first)
        self.store("b", second)

    @rule(credential_id=st.sampled_from(IDS), kind=st.sampled_from(KINDS))
    def store(self, credential_id: str, kind: tuple[str, int | None]) -> None:
        """Store new material (create, update, or re-authorize)."""
        name, lifetime = kind
        model = self.expected.get(credential_id)
        credential = self._credential(name, lifetime)
        if model is not None and model.state == State.REVOKED:
            with pytest.raises(InvalidTransition):
                self.manager.store(credential_id, credential, principal="admin")
            return
        self.manager.store(credential_id, credential, principal="admin")
        material = _material(name, lifetime, self.now)
        if model is None:
            self.expected[credential_id] = Expected(name, State.ACTIVE, 1, **material)
            return
        model.__dict__.update(material, kind=name, has_token=material.get("has_token", True))
        model.state, model.version, model.attempts = State.UPDATED, model.version + 1, 0
        model.grant_spent = False

    def _credential(self, name: str, lifetime: int | None) -> Any:
        if name == "basic":
            return BasicAuth(username="u", password="pw")
        if name == "api_key":
            return ApiKey(key="key")
        if name == "bearer":
            return BearerToken(token="bt", expires_in=lifetime)
        tokens = {} if lifetime is None else {"access_token": "at", "expires_in": lifetime}
        return OAuth2(
            token_url=self.server.url,
            client_id=CLIENT,
            client_secret=SECRET,
            refresh_token=self.server.grant(CLIENT),
            **tokens,
        )

    @rule(credential_id=st.sampled_from(IDS), principal=st.sampled_from(["admin", "worker"]))
    def get(self, credential_id: str, principal: str) -> None:
        """Read the credential (refreshing first when due)."""
        model = self.expected.get(credential_id)
        call = lambda: self.manager.get(credential_id, principal=principal)  # noqa: E731
        if principal == "worker" and credential_id not in self.granted:
            with pytest.raises(AccessDenied):
                call()
            self.denials[credential_id] += 1
            return
        if model is None:
            with pytest.raises(NotFound):
                call()
            return
        self._read(model, call)

    def _read(self, model: Expected, call: Callable[[], object]) -> None:
        """What get does: refuse, refresh first, expire, or read."""
        now = self.now
        if model.state == State.REVOKED:
            with pytest.raises(CredentialUnusable):
                call()
            return
        if model.refreshable and model.due(now):
            outcome = self._attempt(model)
            if outcome in ("transient", "permanent"):
                self._expect_failure(outcome, call)
                return
        elif model.refreshable and model.state == State.EXPIRED:
            self._expect_failure("transient" if model.next_due_at else "permanent", call)
            return
        elif model.refreshable and model.past_expiry(now):
            # never served once expired: EXPIRED (one more version, retry time kept)
            model.state = State.EXPIRED
            model.version += 1
            event("an expired OAuth token during backoff was refused")
            with pytest.raises(RefreshFailed) as raised:
                call()
            assert raised.value.permanent is False
            return
        elif model.state == State.EXPIRED or model.past_expiry(now):
            if model.state != State.EXPIRED:
                model.state, model.next_due_at = State.EXPIRED, None
                model.version += 1
            with pytest.raises(CredentialUnusable):
                call()
            return
        call()
        model.reads += 1

    @rule(
        credential_id=st.sampled_from(IDS),
        force=st.booleans(),
        mode=st.none() | st.sampled_from(MODES),
    )
    def refresh(self, credential_id: str, force: bool, mode: str | None) -> None:
        """Ask for a refresh, forced or only if due (maybe with the provider in a new mode)."""
        if mode is not None:
            self.server.mode = mode
        model = self.expected.get(credential_id)
        call = lambda: self.manager.refresh(credential_id, principal="admin", force=force)  # noqa: E731
        if model is None:
            with pytest.raises(NotFound):
                call()
        elif model.state == State.REVOKED:
            with pytest.raises(CredentialUnusable):
                call()
        elif not model.refreshable:
            with pytest.raises(InvalidTransition) if force else nullcontext():
                call()
        elif not force and model.state == State.EXPIRED and model.next_due_at is None:
            self._expect_failure("permanent", call)
        elif force or model.due(self.now):
            outcome = self._attempt(model)
            if outcome in ("transient", "permanent"):
                self._expect_failure(outcome, call)
            else:
                call()
        else:
            call()

    @rule()
    def tick(self) -> None:
        """Run the sweep at the current time."""
        now = self.now
        for model in self.expected.values():
            if not model.due(now):
                continue
            if model.refreshable:
                self._attempt(model)
            elif model.past_expiry(now) and model.state in (State.ACTIVE, State.UPDATED):
                model.state, model.version, model.next_due_at = (
                    State.EXPIRED,
                    model.version + 1,
                    None,
                )
        assert [] == self.manager.tick().errors

    @rule(credential_id=st.sampled_from(REVOCABLE))
    def revoke(self, credential_id: str) -> None:
        """Revoke the credential."""
        model = self.expected.get(credential_id)
        call = lambda: self.manager.revoke(credential_id, principal="admin", reason="model")  # noqa: E731
        if model is None:
            with pytest.raises(NotFound):
                call()
        elif model.state == State.REVOKED:
            with pytest.raises(InvalidTransition):
                call()
        else:
            call()
            model.state, model.version, model.next_due_at = State.REVOKED, model.version + 1, None

    @rule(seconds=st.sampled_from(JUMPS))
    def wait(self, seconds: int) -> None:
        """Let time pass."""
        self.clock.tick(timedelta(seconds=seconds))

    @rule(mode=st.sampled_from(MODES))
    def provider(self, mode: str) -> None:
        """Make the provider answer in ``mode`` from now on."""
        self.server.mode = mode

    @rule(credential_id=st.sampled_from(IDS), allow=st.booleans())
    def grant(self, credential_id: str, allow: bool) -> None:
        """Grant the worker use of the credential, or take it away."""
        if allow:
            self.manager.grant("worker", credential_id, {Permission.READ}, principal="admin")
            self.granted.add(credential_id)
        else:
            self.manager.revoke_grant("worker", credential_id, principal="admin")
            self.granted.discard(credential_id)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        """State, version, schedule and attempts are the model's."""
        for credential_id, model in self.expected.items():
            info = self.manager.info(credential_id, principal="admin")
            assert (model.state, model.version, model.next_due_at) == (
                info.state,
                info.version,
                info.next_due_at,
            ), credential_id
            if model.state != State.REVOKED:
                assert model.attempts == info.attempts

    @invariant()
    def history_is_one_unbroken_path(self) -> None:
        """Each step starts where the last ended; versions count every change."""
        for credential_id, model in self.expected.items():
            steps = self.manager.history(credential_id, principal="admin")
            assert [
                ("create", None, State.CREATED, 1),
                ("activate", State.CREATED, State.ACTIVE, 1),
            ] == [(s.trigger, s.from_state, s.to_state, s.version) for s in steps[:2]]
            for before, after in pairwise(steps[1:]):
                assert (before.to_state, before.version + 1) == (after.from_state, after.version)
            assert (model.state, model.version) == (steps[-1].to_state, steps[-1].version)

    @invariant()
    def every_read_and_denial_is_audited(self) -> None:
        """Each successful read has an 'ok' read event, each denied one a 'denied' event."""
        for credential_id, model in self.expected.items():
            events = self.manager.audit_events(
                principal="admin", limit=100_000, credential_id=credential_id
            )
            reads = [e.outcome for e in events if e.action == "read"]
            denials = self.denials[credential_id]
            assert (model.reads, denials) == (reads.count("ok"), reads.count("denied"))

    @invariant()
    def audit_chain_verifies(self) -> None:
        """The audit chain verifies after every step."""
        assert self.manager.verify_audit().ok


def test_lifecycle_matches_the_model() -> None:
    """Random API calls, time jumps, faults and grants never make credman and the model
    disagree."""
    run_state_machine_as_test(
        LifecycleModel,
        settings=settings(
            max_examples=30,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_every_transition_has_an_audit_event(sqlite_url: str, key_file: Path) -> None:
    """Each version in a credential's history is named by an audit event (DESIGN §7: no
    transition without an audit record)."""
    with (
        TokenServer(clients={CLIENT: SECRET}) as server,
        CredentialManager(sqlite_url, str(key_file)) as manager,
    ):
        credential = OAuth2(
            token_url=server.url,
            client_id=CLIENT,
            client_secret=SECRET,
            refresh_token=server.grant(CLIENT),
        )
        manager.store("gh", credential, principal="admin")
        manager.get("gh", principal="admin")
        versions = {step.version for step in manager.history("gh", principal="admin")}
        events = manager.audit_events(principal="admin", credential_id="gh")
    assert versions <= {event.detail.get("version") for event in events}
