"""Key rotation: add a primary key version, re-wrap data keys under it in batches, retire old ones.

Theory of operation. Rotation first adds a new key version to the key provider durably
(the key file is rewritten atomically and fsynced) and only then lets any row use it, so a
crash can never leave a row wrapped under a key that was not kept. Re-wrapping then walks
the credentials not yet on the primary in id order (keyset pagination), one short write
transaction per batch: each data key is unwrapped with its old version and wrapped again
with the primary (no secret field is opened), and the row's ``key_version`` and
``wrapped_dek`` are replaced by compare-and-set on their old values, so a concurrent store
is never overwritten. A rewrap changes neither material nor state, so it bumps no
credential version and writes no history. Killed at any point, every row still opens with
some version in the ring, and :meth:`KeyManager.rewrap` finishes the job. Open connect
sessions seal their PKCE verifier under a data key of their own: the rewrap moves those
data keys too (bound to the session's state hash), after the credentials, in the same
batched compare-and-set way. A version can be retired only when no row references it
(credential or open connect session); retiring removes it from the provider for good, which
is what makes backups taken before a revoke unreadable (crypto-shredding).

Key changes and writers agree through a lock: :meth:`KeyManager.for_write` holds it shared
while a writer seals under the current primary, rotation and retirement hold it
exclusively (PostgreSQL advisory locks; SQLite's ``BEGIN IMMEDIATE`` already serialises
writers). Every operation here needs an admin principal and is audited, with version
numbers and counts only, never key material.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger
from sqlalchemy import Connection

from credman import _sealing
from credman._integrity import RecordSeals
from credman._operation import Act, Operations
from credman.access import Actor
from credman.crypto import KeyFileProvider, KeyProvider, Keyring, WrappedKey, envelope
from credman.errors import CredentialValidationError, DecryptionError, KeyringError
from credman.lifecycle import Credential
from credman.storage import CredentialRecord
from credman.storage import connect as session_rows
from credman.storage import keys as key_rows

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "KeyManager",
    "KeyStatus",
    "KeyVersionStatus",
    "Progress",
    "RewrapProgress",
    "RewrapReport",
    "RotationReport",
    "rewrap_rows",
]

DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class RewrapProgress:
    """Where a rewrap stands: sent before the first batch and after each committed one."""

    primary: int
    done: int
    total: int
    unreadable: int


@dataclass(frozen=True, slots=True)
class RewrapReport:
    """What one rewrap run did; ``remaining`` rows are still on an older version."""

    primary: int
    rewrapped: int
    batches: int
    remaining: int
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RotationReport:
    """A rotation: the version added and the rewrap that moved data keys onto it."""

    previous_primary: int
    primary: int
    rewrap: RewrapReport


@dataclass(frozen=True, slots=True)
class KeyVersionStatus:
    """One key version: whether it is primary, in the ring, and how many rows it protects."""

    version: int
    primary: bool
    in_ring: bool
    credentials: int


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """Every version in the ring or referenced by a row, and the revoked rows with no key."""

    primary: int
    versions: tuple[KeyVersionStatus, ...]
    shredded: int

    @property
    def pending(self) -> int:
        """Credentials not yet on the primary (a rewrap moves them)."""
        return sum(v.credentials for v in self.versions if v.version < self.primary)

    @property
    def missing(self) -> tuple[int, ...]:
        """Versions that rows reference but the ring lacks: those rows cannot be opened."""
        return tuple(v.version for v in self.versions if not v.in_ring)


@dataclass(frozen=True, slots=True)
class _Batch:
    """One committed rewrap batch."""

    last_id: str | None
    rewrapped: int
    unreadable: tuple[str, ...]


Progress = Callable[[RewrapProgress], None]
"""Called before the first rewrap batch and after each committed one."""


class KeyManager:
    """The keyring in use: sealing and opening credentials, rotation, rewrap and retirement."""

    def __init__(self, provider: KeyProvider, keyring: Keyring, operations: Operations) -> None:
        self.provider = provider
        self._keyring = keyring
        self._lock = threading.Lock()
        self._operations = operations

    def __repr__(self) -> str:
        return f"KeyManager({self._keyring!r})"

    @property
    def keyring(self) -> Keyring:
        """The ring as last loaded."""
        return self._keyring

    @property
    def seals(self) -> RecordSeals:
        """The record MACs a rewrap recomputes."""
        return self._operations.seals

    def reload(self) -> Keyring:
        """Re-read the keyring from its provider (e.g. after another process rotated it)."""
        with self._lock:
            self._keyring = self.provider.load()
        return self._keyring

    def for_write(self, connection: Connection) -> Keyring:
        """The current ring for sealing inside ``connection``'s write transaction.

        Holds the key-change lock shared until the transaction ends and reloads the ring, so
        a row is never sealed under a version that a concurrent retire is removing, and a
        process whose ring is stale writes under the primary another process rotated to. A
        ring that cannot be reloaded to it (``CREDMAN_KEY`` from before a rotation) is refused
        when rows already use a higher version than its primary.
        """
        highest = key_rows.lock_key_changes_shared_and_highest(connection)
        ring = self.reload()
        if highest is not None and ring.primary < highest:
            raise KeyringError(
                f"this process's keyring (primary version {ring.primary}) is older than the "
                f"database's (version {highest} in use): load the current key file or CREDMAN_KEY"
            )
        return ring

    def seal(
        self, connection: Connection, credential_id: str, credential: Credential
    ) -> dict[str, Any]:
        """The sealed columns of ``credential`` under the current primary (inside a write)."""
        return _sealing.seal(self.for_write(connection), credential_id, credential)

    def open(self, record: CredentialRecord) -> Credential:
        """The credential a record holds; IntegrityError when the row fails its MAC (it is
        never opened then), DecryptionError when anything does not open."""
        self._operations.seals.check_credential(record)
        return _sealing.open_row(self._keyring, record, reload=self.reload)

    # -- rotation -------------------------------------------------------------------------

    def add_version(self, *, principal: Actor) -> int:
        """Durably add a new primary key version that no row uses yet; the new version."""
        with self._operations.run("key_rotate", principal, None) as connection:
            act = self._operations.act_as_admin(connection, principal)
            key_rows.lock_key_changes(connection)
            ring = self._update(lambda current: current.with_new_version(), keep_previous=True)
            fingerprint = ring.key_checks()[ring.primary]
            key_rows.delete_key_check(connection, ring.primary)  # a version number reused
            key_rows.add_key_check(connection, ring.primary, fingerprint, act.now)
            self._operations.audit(act, "key_rotate", None, primary=ring.primary)
        self.reload()
        logger.info("added key version {} (now primary)", ring.primary)
        return ring.primary

    def rotate(
        self,
        *,
        principal: Actor,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
    ) -> RotationReport:
        """Add a new primary key version, then re-wrap every data key under it."""
        batch_size = _check_batch_size(batch_size)
        primary = self.add_version(principal=principal)
        report = self.rewrap(principal=principal, batch_size=batch_size, progress=progress)
        return RotationReport(primary - 1, primary, report)

    def rewrap(
        self,
        *,
        principal: Actor,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
    ) -> RewrapReport:
        """Re-wrap every data key not on the primary (finishes an interrupted rotation)."""
        batch_size = _check_batch_size(batch_size)
        ring = self.reload()
        total = self._pending(principal, ring.primary)
        done, batches, after = 0, 0, ""
        unreadable: tuple[str, ...] = ()
        _report(progress, RewrapProgress(ring.primary, done, total, 0))
        while (batch := self._rewrap_batch(principal, ring, after, batch_size)).last_id:
            done, batches, after = done + batch.rewrapped, batches + 1, batch.last_id
            unreadable += batch.unreadable
            _report(progress, RewrapProgress(ring.primary, done, total, len(unreadable)))
        self._rewrap_sessions(principal, ring, batch_size)
        remaining = self._pending(principal, ring.primary)
        return RewrapReport(ring.primary, done, batches, remaining, unreadable)

    def status(self, *, principal: Actor) -> KeyStatus:
        """The versions in the ring and used by rows, with how many credentials each protects."""
        ring = self.reload()
        with self._operations.run("key_status", principal, None, writes=False) as connection:
            self._operations.act_as_admin(connection, principal)
            counts = key_rows.count_by_key_version(connection)
        shredded = counts.pop(None, 0)
        versions = tuple(
            KeyVersionStatus(v, v == ring.primary, v in ring.keys, counts.get(v, 0))
            for v in sorted(set(ring.versions) | {v for v in counts if v is not None})
        )
        return KeyStatus(ring.primary, versions, shredded)

    def retire(self, version: int, *, principal: Actor) -> tuple[int, ...]:
        """Remove ``version`` from the ring for good; refused while any row references it.

        Returns the versions left in the ring.
        """
        if isinstance(version, bool) or not isinstance(version, int):
            raise CredentialValidationError("version: a key version number", fields=("version",))
        with self._operations.run("key_retire", principal, None) as connection:
            act = self._operations.act_as_admin(connection, principal)
            key_rows.lock_key_changes(connection)
            _check_retirable(self.reload(), version)
            in_use = key_rows.count_with_key_version(connection, version)
            sessions = session_rows.count_with_key_version(connection, version)
            if in_use or sessions:
                also = f" and {sessions} open connect session(s)" if sessions else ""
                raise KeyringError(
                    f"key version {version} still protects {in_use} credential(s){also}: "
                    "run 'credman keys rewrap' first"
                )
            ring = self.provider.update(lambda current: current.without_version(version))
            key_rows.delete_key_check(connection, version)
            self._operations.audit(act, "key_retire", None, version=version)
        self.reload()
        logger.info("retired key version {}", version)
        return ring.versions

    # -- one batch ------------------------------------------------------------------------

    def _rewrap_batch(self, principal: Actor, ring: Keyring, after: str, size: int) -> _Batch:
        """Re-wrap up to ``size`` rows after id ``after`` in one transaction."""
        with self._operations.run("key_rewrap", principal, None) as connection:
            act = self._operations.act_as_admin(connection, principal)
            rows = key_rows.rewrap_candidates(connection, ring.primary, after, size)
            if not rows:
                return _Batch(None, 0, ())
            moved, unreadable = rewrap_rows(connection, ring, rows, self.seals)
            detail = {"primary": ring.primary, "rewrapped": moved, "unreadable": len(unreadable)}
            self._audit(act, "key_rewrap", **detail)
        return _Batch(rows[-1].id, moved, unreadable)

    def _rewrap_sessions(self, principal: Actor, ring: Keyring, size: int) -> int:
        """Move open connect sessions' data keys onto the primary, one batch per transaction."""
        moved, after = 0, ""
        while True:
            with self._operations.run("key_rewrap", principal, None) as connection:
                act = self._operations.act_as_admin(connection, principal)
                rows = session_rows.rewrap_candidates(connection, ring.primary, after, size)
                if not rows:
                    break
                batch = session_rows.replace_wrapped_keys(connection, _session_changes(ring, rows))
                self._audit(act, "key_rewrap", primary=ring.primary, connect_sessions=batch)
                moved, after = moved + batch, rows[-1].state_hash
        if moved:
            logger.info(
                "key rewrap: moved {} connect session(s) to version {}", moved, ring.primary
            )
        return moved

    def _update(self, change: Callable[[Keyring], Keyring], *, keep_previous: bool) -> Keyring:
        """Apply ``change`` to the ring; a key file keeps its previous contents when asked."""
        if isinstance(self.provider, KeyFileProvider):
            return self.provider.update(change, keep_previous=keep_previous)
        return self.provider.update(change)

    def _audit(self, act: Act, action: str, **detail: Any) -> None:
        self._operations.audit(act, action, None, **detail)

    def _pending(self, principal: Actor, primary: int) -> int:
        with self._operations.run("key_rewrap", principal, None, writes=False) as connection:
            self._operations.act_as_admin(connection, principal)
            return key_rows.count_below(connection, primary)


def _check_retirable(ring: Keyring, version: int) -> None:
    if version not in ring.keys:
        have = ", ".join(map(str, ring.versions))
        raise KeyringError(f"key version {version} is not in the keyring (it has {have})")
    if version == ring.primary:
        raise KeyringError(f"key version {version} is primary: rotate before retiring it")


def rewrap_rows(
    connection: Connection, ring: Keyring, rows: Sequence[Any], seals: RecordSeals
) -> tuple[int, tuple[str, ...]]:
    """Write the re-wrapped data keys and the rows' new MACs; how many rows moved, and which
    did not open (a row failing its MAC is one: a rewrap never vouches for a forged row)."""
    changes: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for row in rows:
        record = CredentialRecord.from_row(row)
        old = WrappedKey(record.key_version, record.wrapped_dek)  # type: ignore[arg-type]
        try:
            if not seals.credential_authentic(record):
                raise DecryptionError("the row fails its MAC", credential_id=record.id)
            new = envelope.rewrap(ring, old, credential_id=record.id)
        except (DecryptionError, KeyringError):
            logger.warning(
                "key rewrap: data key of {!r} (version {}) did not open or the row fails its MAC",
                record.id,
                old.version,
            )
            unreadable.append(record.id)
            continue
        moved = record.columns() | {"key_version": new.version, "wrapped_dek": new.blob}
        changes.append(
            {
                "row_id": record.id,
                "old_version": old.version,
                "old_blob": old.blob,
                "new_version": new.version,
                "new_blob": new.blob,
                "new_mac": seals.credential_mac(moved),
            }
        )
    return key_rows.replace_wrapped_keys(connection, changes), tuple(unreadable)


def _session_changes(ring: Keyring, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The compare-and-set changes that move sessions' data keys onto the primary."""
    changes: list[dict[str, Any]] = []
    for row in rows:
        old = WrappedKey(row.key_version, row.wrapped_dek)
        try:
            new = envelope.rewrap(ring, old, credential_id=row.state_hash)
        except (DecryptionError, KeyringError):
            logger.warning("key rewrap: a connect session's data key did not open")
            continue
        changes.append(
            {"b_hash": row.state_hash, "old_version": old.version, "old_blob": old.blob}
            | {"new_version": new.version, "new_blob": new.blob}
        )
    return changes


def _report(progress: Progress | None, event: RewrapProgress) -> None:
    if progress is not None:
        progress(event)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise CredentialValidationError("batch_size: a whole number", fields=("batch_size",))
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise CredentialValidationError(
            f"batch_size: between 1 and {MAX_BATCH_SIZE}", fields=("batch_size",)
        )
    return batch_size
