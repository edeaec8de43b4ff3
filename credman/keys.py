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
some version in the ring, and :func:`rewrap` finishes the job. A version can be retired
only when no row references it; retiring removes it from the provider for good, which is
what makes backups taken before a revoke unreadable (crypto-shredding).

Key changes and writers agree through a lock: :func:`keyring_for_write` holds it shared
while a writer seals under the current primary, rotation and retirement hold it
exclusively (PostgreSQL advisory locks; SQLite's ``BEGIN IMMEDIATE`` already serialises
writers). Every operation here needs an admin principal and is audited, with version
numbers and counts only, never key material.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger
from sqlalchemy import Connection, bindparam, func, select, update

from credman.crypto import KeyFileProvider, Keyring, WrappedKey, envelope
from credman.errors import CredentialValidationError, DecryptionError, KeyringError
from credman.storage import repository
from credman.storage.repository import CREDENTIALS

if TYPE_CHECKING:
    from credman._base import ManagerBase
    from credman.manager import CredentialManager

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "KeyStatus",
    "KeyVersionStatus",
    "RewrapProgress",
    "RewrapReport",
    "RotationReport",
    "add_key_version",
    "key_status",
    "keyring_for_write",
    "retire_key",
    "rewrap",
    "rotate_keys",
]

DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000
_KEYRING_LOCK = 0x637265646B657973  # "credkeys": the PostgreSQL advisory lock of key changes


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


def keyring_for_write(manager: ManagerBase, connection: Connection) -> Keyring:
    """The current ring for sealing inside ``connection``'s write transaction.

    Holds the key-change lock shared until the transaction ends and reloads the ring, so
    a row is never sealed under a version that a concurrent retire is removing, and a
    process whose ring is stale writes under the primary another process rotated to. A
    ring that cannot be reloaded to it (``CREDMAN_KEY`` from before a rotation) is refused
    when rows already use a higher version than its primary.
    """
    _lock_key_changes(connection, exclusive=False)
    ring = manager.reload_keys()
    highest = repository.highest_key_version(connection)
    if highest is not None and ring.primary < highest:
        raise KeyringError(
            f"this process's keyring (primary version {ring.primary}) is older than the "
            f"database's (version {highest} in use): load the current key file or CREDMAN_KEY"
        )
    return ring


def add_key_version(manager: CredentialManager, *, principal: str) -> int:
    """Durably add a new primary key version that no row uses yet; the new version."""
    with manager._operation("key_rotate", principal, None) as connection:
        manager._require_admin(connection, principal)
        _lock_key_changes(connection, exclusive=True)
        ring = _update(manager, lambda current: current.with_new_version(), keep_previous=True)
        _audit(manager, connection, principal, "key_rotate", primary=ring.primary)
    manager.reload_keys()
    logger.info("added key version {} (now primary)", ring.primary)
    return ring.primary


def rotate_keys(
    manager: CredentialManager,
    *,
    principal: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> RotationReport:
    """Add a new primary key version, then re-wrap every data key under it."""
    batch_size = _check_batch_size(batch_size)
    primary = add_key_version(manager, principal=principal)
    report = rewrap(manager, principal=principal, batch_size=batch_size, progress=progress)
    return RotationReport(primary - 1, primary, report)


def rewrap(
    manager: CredentialManager,
    *,
    principal: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> RewrapReport:
    """Re-wrap every data key not on the primary (finishes an interrupted rotation)."""
    batch_size = _check_batch_size(batch_size)
    ring = manager.reload_keys()
    total = _pending(manager, principal, ring.primary)
    done, batches, after = 0, 0, ""
    unreadable: tuple[str, ...] = ()
    _report(progress, RewrapProgress(ring.primary, done, total, 0))
    while (batch := _rewrap_batch(manager, principal, ring, after, batch_size)).last_id:
        done, batches, after = done + batch.rewrapped, batches + 1, batch.last_id
        unreadable += batch.unreadable
        _report(progress, RewrapProgress(ring.primary, done, total, len(unreadable)))
    remaining = _pending(manager, principal, ring.primary)
    return RewrapReport(ring.primary, done, batches, remaining, unreadable)


def key_status(manager: CredentialManager, *, principal: str) -> KeyStatus:
    """The versions in the ring and referenced by rows, with how many credentials each protects."""
    ring = manager.reload_keys()
    with manager._operation("key_status", principal, None, writes=False) as connection:
        manager._require_admin(connection, principal)
        query = select(CREDENTIALS.c.key_version, func.count()).group_by(CREDENTIALS.c.key_version)
        counts: dict[int | None, int] = {v: n for v, n in connection.execute(query)}
    shredded = counts.pop(None, 0)
    versions = tuple(
        KeyVersionStatus(v, v == ring.primary, v in ring.keys, counts.get(v, 0))
        for v in sorted(set(ring.versions) | {v for v in counts if v is not None})
    )
    return KeyStatus(ring.primary, versions, shredded)


def retire_key(manager: CredentialManager, version: int, *, principal: str) -> tuple[int, ...]:
    """Remove ``version`` from the ring for good; refused while any row references it.

    Returns the versions left in the ring.
    """
    if isinstance(version, bool) or not isinstance(version, int):
        raise CredentialValidationError("version: a key version number", fields=("version",))
    with manager._operation("key_retire", principal, None) as connection:
        manager._require_admin(connection, principal)
        _lock_key_changes(connection, exclusive=True)
        _check_retirable(manager.reload_keys(), version)
        in_use = _count(connection, CREDENTIALS.c.key_version == version)
        if in_use:
            raise KeyringError(
                f"key version {version} still protects {in_use} credential(s): "
                "run 'credman keys rewrap' first"
            )
        ring = manager._provider.update(lambda current: current.without_version(version))
        _audit(manager, connection, principal, "key_retire", version=version)
    manager.reload_keys()
    logger.info("retired key version {}", version)
    return ring.versions


def _check_retirable(ring: Keyring, version: int) -> None:
    if version not in ring.keys:
        have = ", ".join(map(str, ring.versions))
        raise KeyringError(f"key version {version} is not in the keyring (it has {have})")
    if version == ring.primary:
        raise KeyringError(f"key version {version} is primary: rotate before retiring it")


# -- one batch ------------------------------------------------------------------------------

_COMPARE_AND_SET = (
    update(CREDENTIALS)
    .where(
        CREDENTIALS.c.id == bindparam("row_id"),
        CREDENTIALS.c.key_version == bindparam("old_version"),
        CREDENTIALS.c.wrapped_dek == bindparam("old_blob"),
    )
    .values(key_version=bindparam("new_version"), wrapped_dek=bindparam("new_blob"))
)
"""Replace a wrapped data key only if the row still holds the one that was re-wrapped."""


def _rewrap_batch(
    manager: CredentialManager, principal: str, ring: Keyring, after: str, size: int
) -> _Batch:
    """Re-wrap up to ``size`` rows after id ``after`` in one transaction."""
    with manager._operation("key_rewrap", principal, None) as connection:
        manager._require_admin(connection, principal)
        rows = connection.execute(
            select(CREDENTIALS.c.id, CREDENTIALS.c.key_version, CREDENTIALS.c.wrapped_dek)
            .where(CREDENTIALS.c.key_version < ring.primary, CREDENTIALS.c.id > after)
            .order_by(CREDENTIALS.c.id)
            .limit(size)
            .with_for_update()
        ).all()
        if not rows:
            return _Batch(None, 0, ())
        moved, unreadable = _rewrap_rows(connection, ring, rows)
        detail = {"primary": ring.primary, "rewrapped": moved, "unreadable": len(unreadable)}
        _audit(manager, connection, principal, "key_rewrap", **detail)
    return _Batch(rows[-1].id, moved, unreadable)


def _rewrap_rows(
    connection: Connection, ring: Keyring, rows: Sequence[Any]
) -> tuple[int, tuple[str, ...]]:
    """Write the re-wrapped data keys; how many rows moved, and which did not open."""
    changes: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for row in rows:
        old = WrappedKey(row.key_version, row.wrapped_dek)
        try:
            new = envelope.rewrap(ring, old, credential_id=row.id)
        except (DecryptionError, KeyringError):
            logger.warning(
                "key rewrap: data key of {!r} (version {}) did not open", row.id, old.version
            )
            unreadable.append(row.id)
            continue
        changes.append(
            {
                "row_id": row.id,
                "old_version": old.version,
                "old_blob": old.blob,
                "new_version": new.version,
                "new_blob": new.blob,
            }
        )
    moved = connection.execute(_COMPARE_AND_SET, changes).rowcount if changes else 0
    return moved, tuple(unreadable)


# -- plumbing -------------------------------------------------------------------------------


def _update(
    manager: CredentialManager, change: Callable[[Keyring], Keyring], *, keep_previous: bool
) -> Keyring:
    """Apply ``change`` to the ring; a key file keeps its previous contents when asked."""
    provider = manager._provider
    if isinstance(provider, KeyFileProvider):
        return provider.update(change, keep_previous=keep_previous)
    return provider.update(change)


def _lock_key_changes(connection: Connection, *, exclusive: bool) -> None:
    if connection.dialect.name != "postgresql":
        return  # SQLite: BEGIN IMMEDIATE already holds the database's single write lock
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    connection.execute(select(getattr(func, function)(_KEYRING_LOCK)))


def _pending(manager: CredentialManager, principal: str, primary: int) -> int:
    with manager._operation("key_rewrap", principal, None, writes=False) as connection:
        manager._require_admin(connection, principal)
        return _count(connection, CREDENTIALS.c.key_version < primary)


def _count(connection: Connection, condition: Any) -> int:
    return int(connection.execute(select(func.count()).where(condition)).scalar_one())


def _audit(
    manager: CredentialManager, connection: Connection, principal: str, action: str, **detail: Any
) -> None:
    manager._audit.append(
        connection,
        at=manager._now(),
        principal=principal,
        action=action,
        credential_id=None,
        detail=detail,
    )


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
