"""Turning a credential into sealed row columns and back.

Secret fields are sealed one by one under a fresh data key, each bound to the credential
id, its field name and a digest of the non-secret fields: editing a token URL or client id
in the database, or moving a ciphertext to another row or field, makes opening fail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from credman.crypto import Keyring, WrappedKey, new_data_key, open_field, seal_field, unwrap, wrap
from credman.errors import DecryptionError, KeyringError
from credman.lifecycle import CREDENTIAL_TYPES, Credential
from credman.storage import CredentialRecord

__all__ = ["SHREDDED", "binding", "open_row", "seal"]

SHREDDED: Mapping[str, Any] = {
    "sealed": {},
    "wrapped_dek": None,
    "key_version": None,
    "next_due_at": None,
    "lease_owner": None,
    "lease_until": None,
    "probe_due_at": None,
}
"""The material columns of a revoked credential: ciphertexts and data key destroyed."""


def binding(kind: str, public: Mapping[str, Any]) -> bytes:
    canonical = json.dumps([kind, dict(public)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def seal(keyring: Keyring, credential_id: str, credential: Credential) -> dict[str, Any]:
    """The row columns holding ``credential``: type, public fields, sealed secrets, wrapped key."""
    public = credential.public_fields()
    bound = binding(credential.kind, public)
    data_key = new_data_key()
    wrapped = wrap(keyring, data_key, credential_id=credential_id)
    sealed = {
        name: base64.b64encode(
            seal_field(data_key, value, credential_id=credential_id, field=name, bound=bound)
        ).decode()
        for name, value in credential.secret_values().items()
    }
    return {
        "type": credential.kind,
        "public": public,
        "sealed": sealed,
        "key_version": wrapped.version,
        "wrapped_dek": wrapped.blob,
    }


def _unreadable(credential_id: str) -> DecryptionError:
    message = f"credential {credential_id!r}: stored material is not openable"
    return DecryptionError(message, credential_id=credential_id)


def open_row(
    keyring: Keyring, row: CredentialRecord, *, reload: Callable[[], Keyring]
) -> Credential:
    """The credential a row holds; DecryptionError when anything does not open.

    ``reload`` re-reads the keyring once when the row's key version is missing (another
    process may have rotated).
    """
    kind = CREDENTIAL_TYPES.get(row.type)
    if kind is None or row.wrapped_dek is None or row.key_version is None:
        raise _unreadable(row.id)
    if not set(row.sealed) <= set(kind.secret_fields):
        raise _unreadable(row.id)
    wrapped = WrappedKey(row.key_version, row.wrapped_dek)
    try:
        data_key = unwrap(keyring, wrapped, credential_id=row.id)
    except KeyringError:
        data_key = unwrap(reload(), wrapped, credential_id=row.id)
    bound = binding(row.type, row.public)
    secrets = {
        name: open_field(
            data_key, _b64(text, row.id), credential_id=row.id, field=name, bound=bound
        )
        for name, text in row.sealed.items()
    }
    return kind(**row.public, **secrets)


def _b64(text: object, credential_id: str) -> bytes:
    try:
        if isinstance(text, str):
            return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    raise _unreadable(credential_id)
