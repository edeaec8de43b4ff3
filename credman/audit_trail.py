"""Reading the audit trail: verify the chain, export its head, list events (audit only), and
archive old rows (admin)."""

from __future__ import annotations

import os
from pathlib import Path

from loguru import logger
from sqlalchemy.exc import SQLAlchemyError

from credman._operation import Operations
from credman.access import EVERY_CREDENTIAL, Actor, check_principal
from credman.audit import ARCHIVE_ACTION, ArchiveReport, AuditEvent, AuditReport
from credman.errors import CredentialValidationError, StorageError
from credman.lifecycle import Permission
from credman.validation import check_credential_id, check_limit

__all__ = ["MAX_AUDIT_LIMIT", "AuditTrail"]

MAX_AUDIT_LIMIT = 100_000
_AUDIT = frozenset({Permission.AUDIT})


class AuditTrail:
    """What operators and auditors read of the chain."""

    def __init__(self, operations: Operations) -> None:
        self._operations = operations

    def __repr__(self) -> str:
        return "AuditTrail()"

    def verify(self, anchor: tuple[int, str] | None = None) -> AuditReport:
        """Recompute the chain; the report names the first bad row."""
        ops = self._operations
        try:
            return ops.audit_log.verify(ops.engine, anchor=anchor)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read the audit trail: {type(exc).__name__}") from None

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
