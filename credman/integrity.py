"""The database's side of record integrity: key fingerprints at open, sealing legacy rows,
and the offline check ``audit verify`` runs over every row.

At open, :meth:`Integrity.prepare` compares the keyring's fingerprints (one per key version,
0 for the audit seed) with those the database recorded: a mismatch is ``WrongKeyFile``. The
first open of a database without the seed's fingerprint (a new one, or one migrated from
before 0006) records the fingerprints and MACs the rows that have none, in one transaction,
audited as ``integrity_sealed`` when it sealed any. From then on a row without a MAC is
refused like a forged one. A database that has MACs but lost its fingerprints is refused
rather than sealed again.

:meth:`Integrity.verify` checks what the read path cannot afford to: every credential and
grant row against its MAC, and every credential's version against the last version the
audit chain recorded for it (a row restored from an older copy carries a valid MAC but an
older version; a row deleted outside credman is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from credman._operation import Operations
from credman.access import SYSTEM
from credman.crypto import Keyring, WrappedKey, unwrap
from credman.errors import DecryptionError, IntegrityError, KeyringError, StorageError, WrongKeyFile
from credman.storage import audit as chain
from credman.storage import grants as grant_rows
from credman.storage import keys as key_rows
from credman.storage import read, repository, write

__all__ = ["SEALED_ACTION", "Integrity", "IntegrityReport"]

SEALED_ACTION = "integrity_sealed"
"""The audit event of the one-time sealing of rows from before migration 0006."""
_WRONG_KEY = (
    "wrong key file for this database: its fingerprints do not match the key {what}; "
    "load the key file (or CREDMAN_KEY) this database was written with"
)


@dataclass(frozen=True, slots=True)
class IntegrityReport:
    """What :meth:`Integrity.verify` found; ``problems`` name rows, never their content."""

    credentials_checked: int
    grants_checked: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether every row is authentic and as new as the audit trail says."""
        return not self.problems


class Integrity:
    """Key fingerprints and legacy sealing at open; the full check for ``audit verify``."""

    def __init__(self, operations: Operations) -> None:
        self._operations = operations

    def __repr__(self) -> str:
        return "Integrity()"

    # -- at open --------------------------------------------------------------------------

    def prepare(self, keyring: Keyring) -> None:
        """Check the key fingerprints (``WrongKeyFile``); seal rows from before 0006."""
        ops = self._operations
        try:
            with read(ops.engine) as connection:
                recorded = key_rows.key_checks(connection)
            _check_fingerprints(recorded, keyring)
            if set(keyring.key_checks()) <= set(recorded):
                return  # the common case: one small read
            with write(ops.engine) as connection:
                key_rows.lock_key_changes(connection)
                recorded = key_rows.key_checks(connection)
                _check_fingerprints(recorded, keyring)
                sealed = None if 0 in recorded else self._seal_legacy(connection, keyring)
                now = ops.now()
                for version, fingerprint in keyring.key_checks().items():
                    if version not in recorded:
                        key_rows.add_key_check(connection, version, fingerprint, now)
                if sealed is not None and any(sealed):
                    ops.audit_log.append(
                        connection,
                        at=now,
                        principal=str(SYSTEM),
                        action=SEALED_ACTION,
                        credential_id=None,
                        detail={"credentials": sealed[0], "grants": sealed[1]},
                    )
        except SQLAlchemyError as exc:
            message = f"cannot check the key fingerprints: {type(exc).__name__}"
            raise StorageError(message) from None

    def _seal_legacy(self, connection: Connection, keyring: Keyring) -> tuple[int, int]:
        """MAC the rows written before migration 0006; how many credentials and grants."""
        seals = self._operations.seals
        credentials = repository.unsealed_credentials(connection)
        grants = grant_rows.unsealed_grants(connection)
        if _has_sealed_rows(connection):
            raise IntegrityError(
                "the database's key fingerprints are missing but its rows carry MACs: they "
                "were removed outside credman; restore them from a backup"
            )
        _check_opens(keyring, credentials)
        for record in credentials:
            repository.set_record_mac(
                connection, record.id, record.version, seals.credential_mac(record.columns())
            )
        for grant in grants:
            columns = {name: getattr(grant, name) for name in grant.column_names()}
            grant_rows.set_grant_mac(connection, grant.id, seals.grant_mac(columns))
        return len(credentials), len(grants)

    # -- offline check ----------------------------------------------------------------------

    def verify(self) -> IntegrityReport:
        """Every row against its MAC, every credential's version against the audit chain."""
        ops = self._operations
        problems: list[str] = []
        try:
            with read(ops.engine) as connection:
                audited, anchored, sealings = _audited_versions(connection)
                credentials = 0
                seen: set[str] = set()
                for record in repository.iter_credentials(connection):
                    credentials += 1
                    seen.add(record.id)
                    problem = _credential_problem(ops, record, audited.get(record.id), anchored)
                    if problem:
                        problems.append(problem)
                grants = grant_rows.list_grants(connection)
        except SQLAlchemyError as exc:
            message = f"cannot read the database for its integrity: {type(exc).__name__}"
            raise StorageError(message) from None
        for grant in grants:
            if not ops.seals.grant_authentic(grant):
                problems.append(
                    f"grant ({grant.principal[:128]!r}, {grant.pattern[:128]!r}) fails its MAC "
                    "(forged or altered without the key)"
                )
        for credential_id, (version, action) in sorted(audited.items()):
            if credential_id not in seen and action != "purge":
                problems.append(
                    f"credential {credential_id!r}: the audit trail recorded version {version} "
                    "but the row is missing (deleted outside credman)"
                )
        if sealings > 1:
            problems.append(
                f"rows were sealed {sealings} times ({SEALED_ACTION}): MACs or key fingerprints "
                "were removed outside credman after the first sealing"
            )
        return IntegrityReport(credentials, len(grants), tuple(problems))


def _check_fingerprints(recorded: dict[int, str], keyring: Keyring) -> None:
    for version, fingerprint in keyring.key_checks().items():
        stored = recorded.get(version)
        if stored is not None and stored != fingerprint:
            what = "seed" if version == 0 else f"version {version}"
            raise WrongKeyFile(_WRONG_KEY.format(what=what))


def _has_sealed_rows(connection: Connection) -> bool:
    return repository.any_sealed_credential(connection) or grant_rows.any_sealed_grant(connection)


def _check_opens(keyring: Keyring, records: list[Any]) -> None:
    """Refuse to seal legacy rows under a key that cannot open them (another key file)."""
    for record in records:
        if record.wrapped_dek is None or record.key_version is None:
            continue
        wrapped = WrappedKey(record.key_version, record.wrapped_dek)
        try:
            unwrap(keyring, wrapped, credential_id=record.id)
        except (DecryptionError, KeyringError):
            raise WrongKeyFile(_WRONG_KEY.format(what=f"version {record.key_version}")) from None
        return  # one data key that opens is enough to know the key file


def _audited_versions(connection: Connection) -> tuple[dict[str, tuple[int, str]], bool, int]:
    """The highest version (and the last action) the audit chain recorded per credential
    since its last purge, whether the chain was pruned (older rows archived), and how many
    times rows were sealed. Versions only grow (a purge starts an id again), so a read
    audited at a restored row's older version does not lower what the chain vouches for."""
    head = chain.read_anchored_head(connection)
    last: dict[str, tuple[int, str]] = {}
    sealings = 0
    for row in chain.stream_events(connection, 5000, after=head.anchor_seq):
        if row.action == SEALED_ACTION:
            sealings += 1
        version = row.detail.get("version")
        if row.credential_id is None or isinstance(version, bool) or not isinstance(version, int):
            continue
        before = last.get(row.credential_id)
        if before is not None and before[1] != "purge" and row.action != "purge":
            version = max(version, before[0])  # a read of a restored row lowers nothing
        last[row.credential_id] = (version, row.action)
    return last, head.anchor_seq > 0, sealings


def _credential_problem(
    ops: Operations, record: Any, audited: tuple[int, str] | None, anchored: bool
) -> str | None:
    if not ops.seals.credential_authentic(record):
        why = "has no MAC" if record.record_mac is None else "fails its MAC"
        return f"credential {record.id!r}: the row {why} (forged or altered without the key)"
    if audited is None:
        if anchored:
            return None  # its events may all be in an archive
        return f"credential {record.id!r}: version {record.version} was never audited"
    version, action = audited
    if action == "purge":
        version = 0  # purged, and no create since: any row there was written outside credman
    if record.version < version:
        return (
            f"credential {record.id!r}: the row is version {record.version} but the audit "
            f"trail recorded version {version} (an older row was restored)"
        )
    if record.version > version:
        return (
            f"credential {record.id!r}: the row is version {record.version} but the audit "
            f"trail recorded only version {version} (written outside credman)"
        )
    return None
