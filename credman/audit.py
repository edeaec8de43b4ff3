"""The tamper-evident audit trail: append-only rows, each HMAC-chained to the one before.

``hash_n = HMAC-SHA256(audit_key, hash_{n-1} || canonical(row_n))`` with the audit key
derived from the keyring (never a data key). Appending locks the single ``audit_head`` row
(``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so
the chain has one order across processes. Rows are written in the same transaction as the
change they describe: no audit row, no change. Detail values are checked to be short
scalars; callers put ids, states, versions and error class names there, never a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, Engine

from credman.errors import AuditError
from credman.storage import AuditRecord, read
from credman.storage import audit as chain

__all__ = ["GENESIS", "AuditEvent", "AuditLog", "AuditReport", "audit_context"]

GENESIS = "0" * 64
_MAX_DETAIL_TEXT = 200
_NO_CONTEXT: Mapping[str, Any] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar("credman_audit_context", default=_NO_CONTEXT)


@contextmanager
def audit_context(**detail: str | int | None) -> Iterator[None]:
    """Add ``detail`` (e.g. ``request_id``, ``peer``) to every audit row written inside.

    A context variable, so it follows the request into the threads that serve it.
    """
    token = _CONTEXT.set({**_CONTEXT.get(), **_check_detail(detail)})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit row as read back."""

    seq: int
    at: datetime
    principal: str
    action: str
    credential_id: str | None
    outcome: str
    detail: Mapping[str, Any]
    hash: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of verifying the chain; ``first_bad_seq`` names where it breaks."""

    ok: bool
    rows_checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _canonical(
    seq: int,
    at: datetime,
    principal: str,
    action: str,
    credential_id: str | None,
    outcome: str,
    detail: Mapping[str, Any],
) -> bytes:
    document = [seq, at.isoformat(), principal, action, credential_id, outcome, dict(detail)]
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _check_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in detail.items():
        if not isinstance(value, str | int | float | bool | type(None)):
            raise AuditError(f"audit detail {key!r} must be a scalar")
        if isinstance(value, str) and len(value) > _MAX_DETAIL_TEXT:
            raise AuditError(f"audit detail {key!r} is too long")
    return dict(detail)


class AuditLog:
    """Appends to and verifies the HMAC chain."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "AuditLog()"

    def _hash(self, previous: str, canonical: bytes) -> str:
        return hmac.new(self._key, previous.encode() + canonical, hashlib.sha256).hexdigest()

    def append(
        self,
        connection: Connection,
        *,
        at: datetime,
        principal: str,
        action: str,
        credential_id: str | None,
        outcome: str = "ok",
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one event inside the caller's transaction; return its sequence number."""
        detail = _check_detail({**_CONTEXT.get(), **(detail or {})})
        at = at.astimezone(UTC)
        head_seq, head_hash = chain.lock_head(connection)
        seq = head_seq + 1
        digest = self._hash(
            head_hash, _canonical(seq, at, principal, action, credential_id, outcome, detail)
        )
        event = {
            "seq": seq,
            "at": at,
            "principal": principal,
            "action": action,
            "credential_id": credential_id,
            "outcome": outcome,
            "detail": detail,
            "prev_hash": head_hash,
            "hash": digest,
        }
        chain.insert_event(connection, event)
        chain.move_head(connection, seq, digest)
        return seq

    def head(self, engine: Engine) -> tuple[int, str]:
        """The last sequence number and hash, for anchoring outside the database."""
        with read(engine) as connection:
            return chain.read_head(connection)

    def verify(
        self, engine: Engine, *, batch: int = 5000, anchor: tuple[int, str] | None = None
    ) -> AuditReport:
        """Recompute the chain from the start; report the first row that does not fit.

        ``anchor`` is a (seq, hash) head exported earlier (``credman audit head``) and kept
        outside the database: the chain must still contain that row with that hash, which
        catches a rewrite of the newest rows together with the head.
        """
        previous, expected_seq, checked = GENESIS, 1, 0
        anchored = anchor is None
        with read(engine) as connection:
            head_seq, head_hash = chain.read_head(connection)
            for row in chain.stream_events(connection, batch):
                problem = self._problem(row, previous, expected_seq)
                if problem:
                    # a missing row is named by the number it should have had
                    bad = min(row.seq, expected_seq)
                    return AuditReport(False, checked, head_seq, head_hash, bad, problem)
                anchored = anchored or (row.seq, row.hash) == anchor
                previous, expected_seq, checked = row.hash, row.seq + 1, checked + 1
        if not anchored and anchor is not None:
            problem = f"the anchored row {anchor[0]} is missing or differs (history rewritten)"
            return AuditReport(False, checked, head_seq, head_hash, anchor[0], problem)
        last = expected_seq - 1
        if head_seq != last:
            problem = f"the chain ends at row {last} but the head says row {head_seq}"
            bad = min(head_seq, last) + 1
            return AuditReport(False, checked, head_seq, head_hash, bad, problem)
        if head_hash != previous:
            problem = f"the head's hash does not match row {last}"
            return AuditReport(False, checked, head_seq, head_hash, last, problem)
        return AuditReport(True, checked, head_seq, head_hash)

    def _problem(self, row: AuditRecord, previous: str, expected_seq: int) -> str | None:
        if row.seq != expected_seq:
            return f"expected row {expected_seq}, found {row.seq} (rows missing or inserted)"
        if row.prev_hash != previous:
            return "prev_hash does not match the row before (reordered, inserted or deleted)"
        canonical = _canonical(
            row.seq, row.at, row.principal, row.action, row.credential_id, row.outcome, row.detail
        )
        if not hmac.compare_digest(self._hash(previous, canonical), row.hash):
            return "hash does not match the row's content (edited)"
        return None

    def events(
        self,
        engine: Engine,
        *,
        limit: int = 50,
        principal: str | None = None,
        outcome: str | None = None,
        credential_id: str | None = None,
    ) -> list[AuditEvent]:
        """The newest events matching the filters, oldest first."""
        with read(engine) as connection:
            rows = chain.newest_events(
                connection,
                limit=limit,
                principal=principal,
                outcome=outcome,
                credential_id=credential_id,
            )
        return [_event(row) for row in rows]


def _event(row: AuditRecord) -> AuditEvent:
    return AuditEvent(
        row.seq,
        row.at,
        row.principal,
        row.action,
        row.credential_id,
        row.outcome,
        row.detail,
        row.hash,
    )
