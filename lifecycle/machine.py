"""Everything that affects the credential state machine lives here: the one edge table,
its guards, and the `transitions` machine built from it.

Theory of operation. ``EDGES`` is the single source of truth: the runtime machine, the
permission each edge needs, and the generated diagrams all come from it. One
``transitions.Machine`` is built at import with no models; a transition is fired on a
short-lived :class:`Subject` (a plain holder, never a database row) through
``machine.events[trigger].trigger(subject)``. Nothing here does I/O: the caller loads the
row, fires the trigger, and writes state, history and audit in one database transaction,
rolling it back if anything raises. An illegal (state, trigger) pair raises
:class:`~credman.errors.InvalidTransition` before the machine is touched; a guard that
refuses raises too (``transitions`` would only return ``False``) and names itself, and the
subject's state is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from transitions import EventData, Machine

from credman.errors import AccessDenied, InvalidTransition
from credman.lifecycle import decisions
from credman.lifecycle.states import Permission, State

__all__ = ["EDGES", "GUARDS", "Edge", "Subject", "fire", "legal_triggers", "target_of"]

S = State


@dataclass(slots=True)
class Subject:
    """What the guards may look at while one transition is decided."""

    credential_id: str
    state: State
    now: datetime
    principal: str
    may: Callable[[Permission], bool]
    refreshable: bool = False
    expires_at: datetime | None = None
    lease_until: datetime | None = None
    refused_by: str | None = field(default=None, init=False)


GUARDS: dict[str, Callable[[Subject], bool]] = {
    "refreshable": lambda subject: subject.refreshable,
    "past_expiry": lambda subject: decisions.past_expiry(subject.expires_at, subject.now),
    "token_valid": lambda subject: decisions.token_valid(subject.expires_at, subject.now),
    "lease_stale": lambda subject: decisions.lease_stale(subject.lease_until, subject.now),
}
"""Guards by name; each is a pure predicate of the subject."""


@dataclass(frozen=True, slots=True)
class Edge:
    """One trigger: the states it leaves, the state it enters, what it needs."""

    trigger: str
    sources: tuple[State, ...]
    dest: State
    permission: Permission
    guards: tuple[str, ...] = ()
    doc: str = ""


EDGES: tuple[Edge, ...] = (
    Edge("activate", (S.CREATED,), S.ACTIVE, Permission.MANAGE,
         doc="a validated, encrypted credential becomes usable (also a first connect)"),
    Edge("update", (S.ACTIVE, S.UPDATED, S.EXPIRED, S.REFRESHING), S.UPDATED, Permission.MANAGE,
         doc="new material stored by an operator (also re-authorization of an EXPIRED one)"),
    Edge("start_refresh", (S.ACTIVE, S.UPDATED, S.EXPIRED), S.REFRESHING, Permission.USE,
         ("refreshable",), doc="a refresh claims the credential with a lease"),
    Edge("refresh_succeeded", (S.REFRESHING,), S.UPDATED, Permission.USE,
         doc="the provider issued new tokens"),
    Edge("refresh_deferred", (S.REFRESHING,), S.ACTIVE, Permission.USE, ("token_valid",),
         doc="a transient failure while the current token still works; retried with backoff"),
    Edge("refresh_failed", (S.REFRESHING,), S.EXPIRED, Permission.USE,
         doc="the grant was refused, or the token ran out while failing"),
    Edge("lease_expired", (S.REFRESHING,), S.ACTIVE, Permission.USE, ("lease_stale",),
         doc="a refresher died holding the lease; the sweep takes it back"),
    Edge("expire", (S.ACTIVE, S.UPDATED), S.EXPIRED, Permission.USE, ("past_expiry",),
         doc="the material passed its expiry without a refresh"),
    Edge("reauthorize", (S.ACTIVE, S.UPDATED, S.EXPIRED), S.UPDATED, Permission.MANAGE,
         doc="a connect obtained new tokens from the provider (re-authorisation)"),
    Edge("revoke", (S.CREATED, S.ACTIVE, S.UPDATED, S.EXPIRED, S.REFRESHING), S.REVOKED,
         Permission.MANAGE,
         doc="withdrawn for good; the secret material is destroyed"),
)  # fmt: skip

_BY_PAIR: dict[tuple[State, str], Edge] = {
    (source, edge.trigger): edge for edge in EDGES for source in edge.sources
}
_BY_TRIGGER: dict[str, Edge] = {edge.trigger: edge for edge in EDGES}


def _condition(name: str) -> Callable[[EventData], bool]:
    predicate = GUARDS[name]

    def check(event: EventData) -> bool:
        subject = cast(Subject, event.model)
        if predicate(subject):
            return True
        subject.refused_by = name
        return False

    check.__name__ = name
    return check


def _permitted(event: EventData) -> bool:
    subject = cast(Subject, event.model)
    if subject.may(_BY_TRIGGER[event.event.name].permission):
        return True
    subject.refused_by = "permitted"
    return False


def _build_machine() -> Machine:
    spec: list[dict[str, Any]] = [
        {
            "trigger": edge.trigger,
            "source": list(edge.sources),
            "dest": edge.dest,
            "conditions": [_permitted, *(_condition(name) for name in edge.guards)],
        }
        for edge in EDGES
    ]
    return Machine(
        model=None,
        states=State,
        transitions=spec,
        initial=None,
        auto_transitions=False,
        send_event=True,
        name="credential",
    )


MACHINE = _build_machine()


def target_of(state: State, trigger: str) -> State | None:
    """Where ``trigger`` leads from ``state``, or None when the pair is illegal."""
    edge = _BY_PAIR.get((state, trigger))
    return edge.dest if edge else None


def legal_triggers(state: State) -> tuple[str, ...]:
    """The triggers that have an edge out of ``state``, in table order."""
    return tuple(edge.trigger for edge in EDGES if state in edge.sources)


def fire(subject: Subject, trigger: str) -> State:
    """Move ``subject`` along ``trigger`` and return the new state, or raise and change nothing.

    Raises ``InvalidTransition`` for an unknown or illegal pair or a refusing guard, and
    ``AccessDenied`` when the principal lacks the edge's permission.
    """
    if (subject.state, trigger) not in _BY_PAIR:
        raise InvalidTransition(subject.credential_id, subject.state, trigger)
    before = subject.state
    if MACHINE.events[trigger].trigger(subject):
        return subject.state
    subject.state = before
    if subject.refused_by == "permitted":
        permission = _BY_TRIGGER[trigger].permission
        raise AccessDenied(subject.principal, permission, subject.credential_id)
    raise InvalidTransition(subject.credential_id, before, trigger, guard=subject.refused_by)
