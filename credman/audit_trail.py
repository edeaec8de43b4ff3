"""Reading the audit trail: verify the chain (against exported heads too), export its head
and its rows, list events (audit only), and archive old rows (admin)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loguru import logger
from sqlalchemy.exc import SQLAlchemyError

from credman._operation import Operations
from credman.access import EVERY_CREDENTIAL, Actor, check_principal
from credman.audit import ARCHIVE_ACTION, ArchiveReport, AuditEvent, AuditReport
from credman.audit_export import HeadSigner, load_public_key, read_heads
from credman.errors import CredentialValidationError, StorageError
from credman.lifecycle import Permission
from credman.validation import check_credential_id, check_limit

__all__ = ["MAX_AUDIT_LIMIT", "AuditTrail"]

MAX_AUDIT_LIMIT = 100_000
_AUDIT = frozenset({Permission.AUDIT})


class AuditTrail:
    """What operators and auditors read of the chain."""

    def __init__(self, operations: Operations, head_signer: HeadSigner) -> None:
        self._operations = operations
        self.head_signer = head_signer

    def __repr__(self) -> str:
        return "AuditTrail()"

    def verify(
        self,
        anchor: tuple[int, str] | None = None,
        *,
        heads: str | os.PathLike[str] | None = None,
        public_key: str | os.PathLike[str] | None = None,
    ) -> AuditReport:
        """Recompute the chain, against ``anchor`` and every head in the ``heads`` file
        (whose MACs, and with ``public_key`` Ed25519 signatures, are checked first)."""
        ops = self._operations
        anchors: dict[int, str] = {}
        problem = None
        if heads is not None:
            key = None if public_key is None else load_public_key(public_key)
            anchors, _, problem = read_heads(heads, self.head_signer, key)
        elif public_key is not None:
            raise CredentialValidationError(
                "public_key: checks the heads of --heads FILE; give one", fields=("public_key",)
            )
        try:
            if problem is not None:
                seq, digest = ops.audit_log.head(ops.engine)
                return AuditReport(False, 0, seq, digest, None, problem)
            return ops.audit_log.verify(ops.engine, anchor=anchor, anchors=anchors.items())
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the audit trail: {type(exc).__name__}") from None

    def export(
        self,
        write: Callable[[Mapping[str, Any]], None],
        *,
        principal: Actor,
        after: int = 0,
    ) -> tuple[int, int]:
        """Pass every row after ``after`` to ``write``, oldest first (needs ``audit`` on
        ``*``); how many rows and the last one's seq (``after`` if none)."""
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise CredentialValidationError("after: a row number, 0 or more", fields=("after",))
        ops = self._operations
        with ops.run("audit_read", principal, None, writes=False) as connection:
            ops.act(connection, principal, EVERY_CREDENTIAL, _AUDIT)
        return self.export_unchecked(write, after)

    def export_unchecked(
        self, write: Callable[[Mapping[str, Any]], None], after: int
    ) -> tuple[int, int]:
        """:meth:`export` without the access check (the service's own forwarder)."""
        ops = self._operations
        count, last = 0, after
        try:
            for batch in ops.audit_log.export_batches(ops.engine, after=after):
                for row in batch:
                    write(row)
                count, last = count + len(batch), batch[-1]["seq"]
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the audit trail: {type(exc).__name__}") from None
        return count, last

    def archive(
        self, *, before_seq: int, path: str | os.PathLike[str], principal: Actor
    ) -> ArchiveReport:
        """Archive rows before ``before_seq`` to a JSON-lines file and prune them (admin)."""
        ops = self._operations
        with ops.run(ARCHIVE_ACTION, principal, None, writes=False) as connection:
            act = ops.act_as_admin(connection, principal)
        try:
            report = ops.audit_log.archive(
                ops.engine,
                before_seq=before_seq,
                path=Path(path),
                principal=str(principal),
                at=act.now,
            )
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot archive the audit trail: {type(exc).__name__}") from None
        logger.info("archived {} audit rows up to row {}", report.rows, report.anchor_seq)
        return report

    def verify_archive(self, path: str | os.PathLike[str]) -> AuditReport:
        """Recompute the chain inside an archive file."""
        try:
            return self._operations.audit_log.verify_archive(Path(path))
        except (OSError, UnicodeDecodeError) as exc:
            message = f"path: cannot read the archive ({type(exc).__name__})"
            raise CredentialValidationError(message, fields=("path",)) from None

    def head(self) -> tuple[int, str]:
        """The chain's last sequence number and hash, for anchoring elsewhere."""
        ops = self._operations
        try:
            return ops.audit_log.head(ops.engine)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the audit trail: {type(exc).__name__}") from None

    def events(
        self,
        *,
        principal: Actor,
        limit: int = 50,
        outcome: str | None = None,
        subject: str | None = None,
        credential_id: str | None = None,
    ) -> list[AuditEvent]:
        """The newest audit events (needs ``audit`` on ``*``), oldest first."""
        check_limit("limit", limit, MAX_AUDIT_LIMIT)
        if subject is not None:
            check_principal(subject)
        if credential_id is not None:
            check_credential_id(credential_id)
        ops = self._operations
        with ops.run("audit_read", principal, None, writes=False) as connection:
            ops.act(connection, principal, EVERY_CREDENTIAL, _AUDIT)
        try:
            return ops.audit_log.events(
                ops.engine,
                limit=limit,
                principal=subject,
                outcome=outcome,
                credential_id=credential_id,
            )
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the audit trail: {type(exc).__name__}") from None
