"""Envelope encryption: per-credential data keys sealed under AES-256-GCM, wrapped by the keyring.

Each credential gets a fresh random data key (DEK) whenever its material is written. Every
secret field is sealed under the DEK with a fresh 96-bit nonce; the DEK is wrapped by the
keyring's primary key-encryption key. Associated data binds each blob to where it belongs
(credential id and field, or credential id and KEK version for a wrapped DEK), so a blob
moved to another row, field or version fails to open. Every failure to open is one opaque
:class:`~credman.errors.DecryptionError`. There are no algorithm knobs.

Blob layout: ``format byte (1) || nonce (12) || ciphertext || tag (16)``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from credman.crypto.keyring import KEY_BYTES, Keyring
from credman.errors import DecryptionError

__all__ = ["WrappedKey", "new_data_key", "open_field", "rewrap", "seal_field", "unwrap", "wrap"]

_FORMAT = b"\x01"
_NONCE_BYTES = 12
_TAG_BYTES = 16


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key wrapped under keyring version ``version``."""

    version: int
    blob: bytes

    def __repr__(self) -> str:
        return f"WrappedKey(version={self.version}, blob=<{len(self.blob)} bytes>)"


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return secrets.token_bytes(KEY_BYTES)


def _dek_context(credential_id: str, version: int) -> bytes:
    return b"credman/dek/v1\x00" + credential_id.encode() + b"\x00" + str(version).encode()


def _field_context(credential_id: str, field: str, bound: bytes) -> bytes:
    head = b"credman/field/v1\x00" + credential_id.encode() + b"\x00" + field.encode()
    return head + b"\x00" + bound


def _seal(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _FORMAT + nonce + AESGCM(key).encrypt(nonce, plaintext, _FORMAT + context)


def _open(key: bytes, blob: bytes, context: bytes, credential_id: str) -> bytes:
    if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[:1] != _FORMAT:
        raise DecryptionError(_failure(credential_id), credential_id=credential_id)
    nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, _FORMAT + context)
    except InvalidTag:
        pass
    raise DecryptionError(_failure(credential_id), credential_id=credential_id)


def _failure(credential_id: str) -> str:
    return f"credential {credential_id!r}: stored ciphertext failed to open (tampered or misplaced)"


def wrap(keyring: Keyring, data_key: bytes, *, credential_id: str) -> WrappedKey:
    """Wrap ``data_key`` under the primary version, bound to the credential."""
    version = keyring.primary
    blob = _seal(keyring.kek(version), data_key, _dek_context(credential_id, version))
    return WrappedKey(version, blob)


def unwrap(keyring: Keyring, wrapped: WrappedKey, *, credential_id: str) -> bytes:
    """Recover the data key; KeyringError names a missing version, else DecryptionError."""
    kek = keyring.kek(wrapped.version)
    context = _dek_context(credential_id, wrapped.version)
    data_key = _open(kek, wrapped.blob, context, credential_id)
    if len(data_key) != KEY_BYTES:
        raise DecryptionError(_failure(credential_id), credential_id=credential_id)
    return data_key


def rewrap(keyring: Keyring, wrapped: WrappedKey, *, credential_id: str) -> WrappedKey:
    """Re-wrap a data key under the primary version; no secret field is opened."""
    if wrapped.version == keyring.primary:
        return wrapped
    return wrap(
        keyring, unwrap(keyring, wrapped, credential_id=credential_id), credential_id=credential_id
    )


def seal_field(
    data_key: bytes, plaintext: str, *, credential_id: str, field: str, bound: bytes = b""
) -> bytes:
    """Encrypt one secret field of one credential.

    ``bound`` is further associated data the ciphertext is tied to (credman passes a digest
    of the credential's non-secret fields, so editing them in the database breaks opening).
    """
    return _seal(data_key, plaintext.encode(), _field_context(credential_id, field, bound))


def open_field(
    data_key: bytes, blob: bytes, *, credential_id: str, field: str, bound: bytes = b""
) -> str:
    """Decrypt one secret field; any mismatch or tampering is DecryptionError."""
    context = _field_context(credential_id, field, bound)
    plaintext = _open(data_key, blob, context, credential_id)
    try:
        return plaintext.decode()
    except UnicodeDecodeError:
        pass
    raise DecryptionError(_failure(credential_id), credential_id=credential_id)
