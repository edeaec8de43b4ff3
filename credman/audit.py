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
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, Engine

from credman.errors import AuditError, CredentialValidationError
from credman.storage import AuditHead, AuditRecord, read, write
from credman.storage import audit as chain

__all__ = [
    "ARCHIVE_ACTION",
    "ARCHIVE_FORMAT",
    "GENESIS",
    "HISTORY_DIGEST",
    "HISTORY_IDS",
    "ArchiveReport",
    "AuditEvent",
    "AuditLog",
    "AuditReport",
    "audit_context",
    "history_digest",
]

GENESIS = "0" * 64
ARCHIVE_FORMAT = "credman-audit-archive/1"
"""The header line of an archive file names this format and the anchor it continues from."""
ARCHIVE_ACTION = "audit_archive"
"""The event that moves the anchor; only the audit key can produce one, so it vouches for it."""
HISTORY_IDS = "history"
"""Detail key: the ids of the history rows an audit row binds (comma-separated)."""
HISTORY_DIGEST = "history_sha256"
"""Detail key: the SHA-256 of those history rows' fields (see :func:`history_digest`)."""
HISTORY_THROUGH = "history_through"
"""Archive event detail: the highest history row id the archived audit rows bind."""
_MAX_DETAIL_TEXT = 200
_PRUNE_BATCH = 10_000
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
    anchor_seq: int = 0
    """Where verification started: the last archived row (0: the chain's beginning)."""
    bad_history_id: int | None = None
    """The history row that does not match the chain (altered, deleted or inserted)."""
    history_checked: int = 0
    """History rows checked against the audit rows that bind them."""
    history_unchecked: int = 0
    """History rows older than the first one the chain (after its anchor) binds: written
    before history was bound, or bound by archived rows."""
    heads_checked: int = 0
    """Exported heads (``--heads``) found on the chain with their hashes."""


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    """What an archive run wrote and pruned; ``anchor_*`` is where verification now starts."""

    path: str
    rows: int
    first_seq: int
    anchor_seq: int
    anchor_hash: str
    sha256: str
    pruned: int


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


def history_digest(rows: Iterable[Mapping[str, Any]]) -> str:
    """The SHA-256 of history rows' fields, in the order given (canonical JSON).

    A plain digest is enough: it sits in an audit row's detail, which the chain's HMAC
    covers, so only the audit key can produce a row that vouches for a different one.
    """
    document = [
        [
            row["id"],
            row["credential_id"],
            None if row["from_state"] is None else str(row["from_state"]),
            str(row["to_state"]),
            row["trigger"],
            row["principal"],
            row["reason"],
            row["at"].astimezone(UTC).isoformat(),
            row["version"],
        ]
        for row in rows
    ]
    return hashlib.sha256(json.dumps(document, separators=(",", ":")).encode()).hexdigest()


def _bound_ids(detail: Mapping[str, Any]) -> list[int] | None:
    """The history ids an audit row's detail binds (None: it binds none)."""
    text = detail.get(HISTORY_IDS)
    if not isinstance(text, str):
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        return []


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
        chain.append_event(connection, event)
        return seq

    def append_many(self, connection: Connection, events: Sequence[Mapping[str, Any]]) -> int:
        """Append ``events`` (each: ``at``, ``principal``, ``action``, ``credential_id``,
        optional ``outcome`` and ``detail``) in order inside the caller's transaction: one
        head lock, one multi-row insert and one head move for all of them (bulk imports);
        the last sequence number."""
        head_seq, head_hash = chain.lock_head(connection)
        rows = []
        for event in events:
            detail = _check_detail({**_CONTEXT.get(), **(event.get("detail") or {})})
            at = event["at"].astimezone(UTC)
            seq, outcome = head_seq + 1, event.get("outcome", "ok")
            canonical = _canonical(
                seq,
                at,
                event["principal"],
                event["action"],
                event["credential_id"],
                outcome,
                detail,
            )
            digest = self._hash(head_hash, canonical)
            rows.append(
                {
                    "seq": seq,
                    "at": at,
                    "principal": event["principal"],
                    "action": event["action"],
                    "credential_id": event["credential_id"],
                    "outcome": outcome,
                    "detail": detail,
                    "prev_hash": head_hash,
                    "hash": digest,
                }
            )
            head_seq, head_hash = seq, digest
        if rows:
            chain.insert_events(connection, rows)
            chain.move_head(connection, head_seq, head_hash)
        return head_seq

    def head(self, engine: Engine) -> tuple[int, str]:
        """The last sequence number and hash, for anchoring outside the database."""
        with read(engine) as connection:
            return chain.read_head(connection)

    def verify(
        self,
        engine: Engine,
        *,
        batch: int = 5000,
        anchor: tuple[int, str] | None = None,
        anchors: Iterable[tuple[int, str]] = (),
    ) -> AuditReport:
        """Recompute the chain from the start; report the first row that does not fit.

        ``anchor`` (and each of ``anchors``) is a (seq, hash) head exported earlier
        (``credman audit head``, the service's signed heads) and kept outside the database:
        the chain must still contain that row with that hash, which catches a rewrite of
        the newest rows together with the head. Every history row the chain binds must
        still be there with the fields it had, and every newer history row must be bound.
        """
        wanted = dict(anchors)
        if anchor is not None:
            wanted[anchor[0]] = anchor[1]
        with read(engine) as connection:
            head = chain.read_anchored_head(connection)
            start = head.anchor_seq
            previous, expected_seq, checked = head.anchor_hash, start + 1, 0
            # an external anchor at or before the archive anchor is checked in the archive
            missing = {seq: digest for seq, digest in wanted.items() if seq > start}
            archived: tuple[Any, Any] | None = None
            history = _HistoryCheck(connection, batch)

            def failed(bad: int | None, problem: str, **more: Any) -> AuditReport:
                return AuditReport(
                    False, checked, head.seq, head.hash, bad, problem, anchor_seq=start, **more
                )

            for row in chain.stream_events(connection, batch, after=start):
                problem = self._problem(row, previous, expected_seq)
                if problem:
                    # a missing row is named by the number it should have had
                    return failed(min(row.seq, expected_seq), problem)
                if missing.get(row.seq) == row.hash:
                    del missing[row.seq]
                if row.action == ARCHIVE_ACTION:
                    archived = (row.detail.get("anchor_seq"), row.detail.get("anchor_hash"))
                    history.archived_through(row.detail.get(HISTORY_THROUGH))
                bad_history = history.bind(row.seq, row.detail)
                if bad_history:
                    return failed(bad_history[0], bad_history[1], bad_history_id=bad_history[2])
                previous, expected_seq, checked = row.hash, row.seq + 1, checked + 1
            bad_history = history.finish()  # reported after the chain's own problems
        if start and archived != (start, head.anchor_hash):
            problem = f"the chain starts after row {start}, but no archive event says so"
            return failed(start + 1, problem)
        if missing:
            seq = min(missing)
            newer = " (newer than the chain's head)" if seq > expected_seq - 1 else ""
            problem = (
                f"the anchored row {seq} is missing or differs{newer}: "
                "rows were deleted or history rewritten"
            )
            return failed(seq, problem)
        last = expected_seq - 1
        if head.seq != last:
            problem = f"the chain ends at row {last} but the head says row {head.seq}"
            return failed(min(head.seq, last) + 1, problem)
        if head.hash != previous:
            return failed(last, f"the head's hash does not match row {last}")
        if bad_history:
            return failed(bad_history[0], bad_history[1], bad_history_id=bad_history[2])
        return AuditReport(
            True,
            checked,
            head.seq,
            head.hash,
            anchor_seq=start,
            history_checked=history.checked,
            history_unchecked=history.unchecked,
            heads_checked=len([seq for seq in wanted if seq > start]),
        )

    # -- retention ------------------------------------------------------------------------

    def archive(
        self,
        engine: Engine,
        *,
        before_seq: int,
        path: Path,
        principal: str,
        at: datetime,
    ) -> ArchiveReport:
        """Write the rows after the anchor and before ``before_seq`` to ``path``, then prune.

        The file (JSON lines: a header naming the anchor it continues from, then one row
        per line) is written, each row verified on the way, and flushed to disk before
        anything changes. One short transaction then appends an ``audit_archive`` event
        naming the new anchor (the last archived row) and the file's SHA-256, and moves the
        anchor; the archived rows are deleted after it, in batches. Verification starts at
        the anchor, and the archive event, which only the audit key can produce, vouches
        for it.
        """
        with read(engine) as connection:
            head = chain.read_anchored_head(connection)
        _check_before(before_seq, head)
        header = {
            "format": ARCHIVE_FORMAT,
            "anchor_seq": head.anchor_seq,
            "anchor_hash": head.anchor_hash,
        }
        last_seq, last_hash, rows, digest, through = _write_archive(
            engine, path, header, before_seq, self._problem
        )
        with write(engine) as connection:
            current = chain.read_anchored_head(connection, lock=True)
            if current.anchor_seq != head.anchor_seq:
                raise AuditError("another archive ran at the same time; nothing was pruned")
            self.append(
                connection,
                at=at,
                principal=principal,
                action=ARCHIVE_ACTION,
                credential_id=None,
                detail={
                    "anchor_seq": last_seq,
                    "anchor_hash": last_hash,
                    "previous_anchor_seq": head.anchor_seq,
                    "rows": rows,
                    "sha256": digest,
                    HISTORY_THROUGH: through,
                },
            )
            chain.move_anchor(connection, last_seq, last_hash)
        pruned = 0
        while True:
            with write(engine) as connection:
                deleted = chain.prune_archived(connection, last_seq, _PRUNE_BATCH)
            if not deleted:
                break
            pruned += deleted
        return ArchiveReport(
            str(path), rows, head.anchor_seq + 1, last_seq, last_hash, digest, pruned
        )

    def verify_archive(self, path: Path) -> AuditReport:
        """Recompute the chain inside an archive file, from the anchor its header names."""
        with path.open(encoding="utf-8") as lines:
            try:
                header = json.loads(next(lines))
                if header.get("format") != ARCHIVE_FORMAT:
                    raise ValueError("format")
                previous, expected_seq = header["anchor_hash"], header["anchor_seq"] + 1
            except (StopIteration, ValueError, KeyError, TypeError, AttributeError):
                raise AuditError(f"{path.name}: not a credman audit archive") from None
            checked = 0
            for line in lines:
                row = _archived_row(line)
                problem = "the line is not an audit row" if row is None else None
                if row is not None:
                    problem = self._problem(row, previous, expected_seq)
                if problem:
                    bad = expected_seq if row is None else min(row.seq, expected_seq)
                    return AuditReport(False, checked, expected_seq - 1, previous, bad, problem)
                assert row is not None
                previous, expected_seq, checked = row.hash, row.seq + 1, checked + 1
        return AuditReport(
            True, checked, expected_seq - 1, previous, anchor_seq=header["anchor_seq"]
        )

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

    def export_batches(
        self, engine: Engine, *, after: int = 0, batch: int = 1000
    ) -> Iterator[list[dict[str, Any]]]:
        """The rows after ``after`` in the archive's line format, ``batch`` at a time, each
        batch read in a read transaction of its own (closed before the batch is yielded)."""
        while True:
            with read(engine) as connection:
                rows = chain.events_after(connection, after, batch)
            if not rows:
                return
            yield [_archive_line(row) for row in rows]
            after = rows[-1].seq

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


_HistoryProblem = tuple[int | None, str, int | None]
"""The audit row that binds the bad history row (if any), the problem, the history row."""


class _HistoryCheck:
    """Checks history rows against the audit rows that bind them, a batch at a time."""

    def __init__(self, connection: Connection, batch: int) -> None:
        self._connection = connection
        self._batch = batch
        self._pending: list[tuple[int, list[int], Any]] = []
        self._bound: set[int] = set()
        self._through = 0  # history rows up to here are bound by archived audit rows
        self.checked = 0
        self.unchecked = 0

    def archived_through(self, value: object) -> None:
        if isinstance(value, int) and not isinstance(value, bool):
            self._through = max(self._through, value)

    def bind(self, seq: int, detail: Mapping[str, Any]) -> _HistoryProblem | None:
        ids = _bound_ids(detail)
        if ids is None:
            return None
        if not ids:
            return seq, f"audit row {seq} names history rows it cannot", None
        self._pending.append((seq, ids, detail.get(HISTORY_DIGEST)))
        return self._check() if len(self._pending) >= self._batch else None

    def _check(self) -> _HistoryProblem | None:
        pending, self._pending = self._pending, []
        found = chain.history_by_id(self._connection, [i for _, ids, _ in pending for i in ids])
        for seq, ids, digest in pending:
            absent = [i for i in ids if i not in found]
            if absent:
                return (
                    seq,
                    f"history row {absent[0]}, bound by audit row {seq}, is deleted",
                    absent[0],
                )
            if history_digest(found[i] for i in ids) != digest:
                named = ",".join(map(str, ids))
                problem = f"history row(s) {named} differ from what audit row {seq} bound (altered)"
                return seq, problem, ids[0]
            self._bound.update(ids)
            self.checked += len(ids)
        return None

    def finish(self) -> _HistoryProblem | None:
        """Check what is pending, then that every history row newer than the oldest bound
        one (and newer than the archived ones) is bound: an unbound one was inserted."""
        bad = self._check()
        if bad:
            return bad
        oldest = min(self._bound, default=None)
        for row_id in chain.history_ids(self._connection, self._batch):
            if row_id in self._bound:
                continue
            if row_id > 0 and (oldest is None or row_id < oldest or row_id <= self._through):
                self.unchecked += 1
                continue
            return None, f"history row {row_id} is bound by no audit row (inserted)", row_id
        return None


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


def _check_before(before_seq: object, head: AuditHead) -> None:
    if (
        not isinstance(before_seq, int)
        or isinstance(before_seq, bool)
        or not head.anchor_seq + 1 < before_seq <= head.seq + 1
    ):
        raise CredentialValidationError(
            f"before_seq: a row number from {head.anchor_seq + 2} to {head.seq + 1} "
            "(at least one row after the current anchor is archived)",
            fields=("before_seq",),
        )


def _write_archive(
    engine: Engine,
    path: Path,
    header: dict[str, Any],
    before_seq: int,
    problem: Callable[[AuditRecord, str, int], str | None],
) -> tuple[int, str, int, str, int]:
    """Write the header and the rows after its anchor and before ``before_seq`` to a new file.

    Each row is verified on the way (``problem``): a chain that is already broken is not
    archived, the file is removed and nothing is pruned. Returns the last row's seq and
    hash, the row count, the file's SHA-256 and the highest history id the rows bind.
    """
    digest = hashlib.sha256()
    last_seq, last_hash, rows = header["anchor_seq"], header["anchor_hash"], 0
    through = 0
    try:
        out = path.open("x", encoding="utf-8")  # never overwrite an earlier archive
    except OSError as exc:
        raise AuditError(f"cannot create the archive {path.name}: {exc.strerror}") from None
    try:
        with out, read(engine) as connection:
            line = json.dumps(header, sort_keys=True) + "\n"
            out.write(line)
            digest.update(line.encode())
            for row in chain.events_between(connection, last_seq, before_seq):
                broken = problem(row, last_hash, last_seq + 1)
                if broken:
                    raise AuditError(f"audit row {min(row.seq, last_seq + 1)}: {broken}")
                line = json.dumps(_archive_line(row), sort_keys=True) + "\n"
                out.write(line)
                digest.update(line.encode())
                last_seq, last_hash, rows = row.seq, row.hash, rows + 1
                through = max([through, *(_bound_ids(row.detail) or ())])
                if row.action == ARCHIVE_ACTION:  # an earlier archive's, archived in turn
                    earlier = row.detail.get(HISTORY_THROUGH)
                    through = max(through, earlier if isinstance(earlier, int) else 0)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return last_seq, last_hash, rows, digest.hexdigest(), through


def _archive_line(row: AuditRecord) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": row.at.astimezone(UTC).isoformat(),
        "principal": row.principal,
        "action": row.action,
        "credential_id": row.credential_id,
        "outcome": row.outcome,
        "detail": dict(row.detail),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def _archived_row(line: str) -> AuditRecord | None:
    """One archive line as a record; None when it does not parse as one."""
    try:
        data = json.loads(line)
        data["at"] = datetime.fromisoformat(data["at"])
        record = AuditRecord.from_row(data)
    except (ValueError, KeyError, TypeError):
        return None
    numbered = isinstance(record.seq, int) and not isinstance(record.seq, bool)
    return record if numbered else None
