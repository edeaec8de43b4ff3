"""Encryption at rest: the versioned keyring, envelope AES-256-GCM, key providers, ``Secret``."""

from credman.crypto.envelope import (
    WrappedKey,
    new_data_key,
    open_field,
    rewrap,
    seal_field,
    unwrap,
    wrap,
)
from credman.crypto.keyring import (
    EnvKeyProvider,
    KeyFileProvider,
    KeyProvider,
    Keyring,
    KmsKeyProvider,
    encode_keyring,
    generate_keyring,
)
from credman.crypto.secret import Secret

__all__ = [
    "EnvKeyProvider",
    "KeyFileProvider",
    "KeyProvider",
    "Keyring",
    "KmsKeyProvider",
    "Secret",
    "WrappedKey",
    "encode_keyring",
    "generate_keyring",
    "new_data_key",
    "open_field",
    "rewrap",
    "seal_field",
    "unwrap",
    "wrap",
]
