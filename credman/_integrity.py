"""MACs over credential and grant rows: what a database writer without the key cannot forge.

A credential row's MAC covers every column that decides what credman does with it: id,
type, state, version, the key version and wrapped data key, the sealed ciphertexts (so the
set of sealed field names too), the public fields, the expiry and due times, the refresh
lease, the attempt count and ``last_error``, and the creation and update times. Only the
probe columns (the last probe's outcome and when to probe next, informational and written
without a version bump) are left out. A grant row's MAC covers principal, pattern,
permissions, ``created_at`` and ``created_by``.

Both keys are derived from the keyring's audit seed (their own HKDF labels), which key
rotation keeps, so no retired key version is ever needed to verify a row. The version is
inside the MAC, so a row cannot be moved to another version; an older authentic row put
back (a rollback) still carries a valid MAC: :func:`check_credential` compares its version
with the credential's newest history row, and ``audit verify`` with the audit chain.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from credman.crypto.records import RecordMac
from credman.errors import IntegrityError
from credman.storage import CredentialRecord, GrantRecord

__all__ = ["CREDENTIAL_MAC_FIELDS", "GRANT_MAC_FIELDS", "RecordSeals"]

CREDENTIAL_MAC_FIELDS = (
    "id",
    "type",
    "state",
    "version",
    "key_version",
    "wrapped_dek",
    "sealed",
    "public",
    "expires_at",
    "material_at",
    "next_due_at",
    "lease_owner",
    "lease_until",
    "attempts",
    "last_error",
    "created_at",
    "updated_at",
)
"""The credential columns the record MAC covers (all but the probe columns and the MAC)."""
GRANT_MAC_FIELDS = ("principal", "pattern", "permissions", "created_at", "created_by")


class RecordSeals:
    """Computes and checks the MACs of credential and grant rows."""

    def __init__(self, *, credential_key: bytes, grant_key: bytes) -> None:
        self._credential = RecordMac(credential_key, "credential")
        self._grant = RecordMac(grant_key, "grant")
        self._checked = threading.local()

    def __repr__(self) -> str:
        return "RecordSeals()"

    # -- credentials ----------------------------------------------------------------------

    def credential_mac(self, columns: Mapping[str, Any]) -> str:
        """The MAC of a credential row given as its column values."""
        return self._credential.mac({name: columns[name] for name in CREDENTIAL_MAC_FIELDS})

    def credential_authentic(self, record: CredentialRecord) -> bool:
        """Whether the row carries the MAC of its own columns (a NULL MAC is not)."""
        if record.record_mac is None:
            return False
        fields = {name: getattr(record, name) for name in CREDENTIAL_MAC_FIELDS}
        return self._credential.verify(fields, record.record_mac)

    def check_credential(
        self, record: CredentialRecord, history_version: int | None = None
    ) -> CredentialRecord:
        """``record`` if it is authentic and not older than its history; IntegrityError else.

        ``history_version`` is the version of the credential's newest history row: an older
        authentic row put back is behind it. The last record checked in this thread is
        remembered, so checking it again (before it is opened) costs nothing.
        """
        last: CredentialRecord | None = getattr(self._checked, "record", None)
        if last is record:
            return record  # checked a moment ago, before it is opened
        if not self.credential_authentic(record):
            why = "has no MAC" if record.record_mac is None else "fails its MAC"
            raise IntegrityError(
                f"credential {record.id!r}: the stored row {why} (written without the key); "
                "refused",
                credential_id=record.id,
            )
        if history_version is not None and history_version > record.version:
            raise IntegrityError(
                f"credential {record.id!r}: the stored row is version {record.version} but its "
                f"history reached version {history_version} (an older row was restored); refused",
                credential_id=record.id,
            )
        self._checked.record = record
        return record

    # -- grants ---------------------------------------------------------------------------

    def grant_mac(self, columns: Mapping[str, Any]) -> str:
        """The MAC of a grant row given as its column values."""
        return self._grant.mac({name: columns[name] for name in GRANT_MAC_FIELDS})

    def grant_authentic(self, record: GrantRecord) -> bool:
        """Whether the grant row carries the MAC of its own columns (a NULL MAC is not)."""
        if record.record_mac is None:
            return False
        fields = {name: getattr(record, name) for name in GRANT_MAC_FIELDS}
        return self._grant.verify(fields, record.record_mac)
