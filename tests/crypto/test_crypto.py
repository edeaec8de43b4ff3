"""Keyring, key providers and envelope encryption."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from credman import CredentialManager
from credman.crypto import (
    EnvKeyProvider,
    KeyFileProvider,
    Keyring,
    KmsKeyProvider,
    WrappedKey,
    encode_keyring,
    generate_keyring,
    new_data_key,
    open_field,
    rewrap,
    seal_field,
    unwrap,
    wrap,
)
from credman.errors import DecryptionError, KeyringError


def test_created_key_file_is_private(tmp_path: Path) -> None:
    """`create` writes a 0600 file and refuses to overwrite one."""
    provider = KeyFileProvider(tmp_path / "k.key")
    provider.create()
    assert 0o600 == stat.S_IMODE(os.stat(provider.path).st_mode)
    with pytest.raises(KeyringError, match="already exists"):
        provider.create()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A key file group or others can read is refused, with the chmod to fix it."""
    provider = KeyFileProvider(tmp_path / "k.key")
    provider.create()
    os.chmod(provider.path, mode)
    with pytest.raises(KeyringError, match="chmod 600"):
        provider.load()


def test_missing_key_means_no_start(tmp_path: Path) -> None:
    """Without a key file the manager does not start (there is no plaintext mode)."""
    with pytest.raises(KeyringError, match="credman init"):
        CredentialManager(f"sqlite:///{tmp_path / 'db'}", str(tmp_path / "absent.key"))
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not JSON"),
        (b"not json", "not JSON"),
        (b'{"format": "other"}', "format"),
        (b'{"format": "credman-keyring/1", "keys": {}}', "no keys"),
        (b'{"format": "credman-keyring/1", "keys": {"1": "!!!"}, "audit_seed": "x"}', "base64"),
        (
            b'{"format": "credman-keyring/1", "keys": {"1": "'
            + base64.b64encode(b"short")
            + b'"}, "audit_seed": "'
            + base64.b64encode(bytes(32))
            + b'"}',
            "not 32",
        ),
        (
            b'{"format": "credman-keyring/1", "keys": {"one": "'
            + base64.b64encode(bytes(32))
            + b'"}, "audit_seed": "'
            + base64.b64encode(bytes(32))
            + b'"}',
            "positive integer",
        ),
    ],
)
def test_malformed_key_files_are_refused_clearly(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """Empty, malformed, wrong-length keys are refused at start with a clear message."""
    path = tmp_path / "k.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyringError, match=message):
        KeyFileProvider(path).load()


def test_env_provider_reads_base64_ring_and_is_read_only() -> None:
    """The environment provider decodes a base64 key file and refuses rotation."""
    ring = generate_keyring()
    provider = EnvKeyProvider(
        environ={"CREDMAN_KEY": base64.b64encode(encode_keyring(ring)).decode()}
    )
    assert ring.keys == provider.load().keys
    with pytest.raises(KeyringError, match="read-only"):
        provider.update(lambda current: current.with_new_version())
    with pytest.raises(KeyringError, match="not set"):
        EnvKeyProvider(environ={}).load()


def test_kms_provider_keeps_only_the_wrapped_ring() -> None:
    """The KMS adapter stores what the KMS encrypted and loads through its decrypt."""
    store: dict[str, bytes] = {"blob": b""}  # a byte permutation stands in for the KMS cipher
    table = bytes((b + 1) % 256 for b in range(256))
    untable = bytes((b - 1) % 256 for b in range(256))
    provider = KmsKeyProvider(
        encrypt=lambda data: data.translate(table),
        decrypt=lambda data: data.translate(untable),
        read=lambda: store["blob"],
        write=lambda data: store.__setitem__("blob", data),
    )
    ring = generate_keyring()
    store["blob"] = encode_keyring(ring).translate(table)
    assert b"credman-keyring" not in store["blob"]
    assert 2 == provider.update(lambda current: current.with_new_version()).primary
    assert (1, 2) == provider.load().versions


def test_file_provider_update_is_seen_by_another_reader(tmp_path: Path) -> None:
    """A version added through one provider object is loaded by another on the same file."""
    first, second = KeyFileProvider(tmp_path / "k.key"), KeyFileProvider(tmp_path / "k.key")
    first.create()
    first.update(lambda ring: ring.with_new_version())
    assert (1, 2) == second.load().versions
    assert 0o600 == stat.S_IMODE(os.stat(first.path).st_mode)


def test_field_roundtrip_and_binding() -> None:
    """A sealed field opens only with the same key, credential, field and bound data."""
    key = new_data_key()
    blob = seal_field(key, "s3cret", credential_id="a", field="password", bound=b"meta")
    assert "s3cret" == open_field(key, blob, credential_id="a", field="password", bound=b"meta")
    for kwargs in (
        {"credential_id": "b", "field": "password", "bound": b"meta"},
        {"credential_id": "a", "field": "token", "bound": b"meta"},
        {"credential_id": "a", "field": "password", "bound": b"other"},
    ):
        with pytest.raises(DecryptionError):
            open_field(key, blob, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(DecryptionError):
        open_field(new_data_key(), blob, credential_id="a", field="password", bound=b"meta")


def test_nonces_are_fresh() -> None:
    """Sealing the same value twice gives different ciphertexts."""
    key = new_data_key()
    assert seal_field(key, "v", credential_id="a", field="f") != seal_field(
        key, "v", credential_id="a", field="f"
    )


def test_wrapped_key_is_bound_to_credential_and_version() -> None:
    """A wrapped data key opens only for its credential and its key version."""
    ring = generate_keyring().with_new_version()
    data_key = new_data_key()
    wrapped = wrap(ring, data_key, credential_id="a")
    assert 2 == wrapped.version
    assert data_key == unwrap(ring, wrapped, credential_id="a")
    with pytest.raises(DecryptionError):
        unwrap(ring, wrapped, credential_id="b")
    with pytest.raises(DecryptionError):
        unwrap(ring, WrappedKey(1, wrapped.blob), credential_id="a")


def test_missing_key_version_is_named() -> None:
    """Data under a version the ring lacks says which version is missing."""
    old = generate_keyring()
    wrapped = wrap(old, new_data_key(), credential_id="a")
    other = Keyring({7: bytes(32)}, bytes(32))
    with pytest.raises(KeyringError, match="key version 1 is not in the keyring"):
        unwrap(other, wrapped, credential_id="a")


def test_rewrap_moves_to_primary_without_changing_the_data_key() -> None:
    """Rewrap yields the same data key under the primary version."""
    ring = generate_keyring()
    data_key = new_data_key()
    wrapped = wrap(ring, data_key, credential_id="a")
    newer = ring.with_new_version()
    moved = rewrap(newer, wrapped, credential_id="a")
    assert (2, data_key) == (moved.version, unwrap(newer, moved, credential_id="a"))


def test_audit_key_is_not_a_data_key() -> None:
    """The audit HMAC key is derived, stable, and differs from every data key."""
    ring = generate_keyring().with_new_version()
    assert ring.audit_key() == ring.audit_key()
    assert ring.audit_key() not in set(ring.keys.values())


def test_keyring_repr_shows_no_key_material() -> None:
    """A keyring prints its versions, never its keys."""
    ring = generate_keyring()
    text = repr(ring) + str(ring)
    for key in (*ring.keys.values(), ring.audit_seed):
        assert base64.b64encode(key).decode() not in text
        assert key.hex() not in text


def test_primary_cannot_be_retired() -> None:
    """Removing the primary version is refused."""
    ring = generate_keyring().with_new_version()
    assert (2,) == ring.without_version(1).versions
    with pytest.raises(KeyringError, match="primary"):
        ring.without_version(2)


def test_key_file_is_json_with_versions(tmp_path: Path) -> None:
    """The key file format is documented JSON: format, keys by version, audit seed."""
    provider = KeyFileProvider(tmp_path / "k.key")
    provider.create()
    document = json.loads(provider.path.read_text())
    assert {"format", "keys", "audit_seed"} == set(document)
    assert ["1"] == list(document["keys"])
