"""Tampering with stored ciphertexts: every change is refused with DecryptionError, and audited.

These tests test the envelope layer on its own: each edit is followed by recomputing the
row's MAC (as if the record MAC key had leaked but not the key-encryption keys), so the
ciphertext checks are what refuses. Edits without the MAC key are refused earlier, by the
row MAC (tests/credman/test_integrity.py).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update

from credman import BasicAuth, CredentialManager, DecryptionError, KeyringError, OAuth2
from credman.storage.repository import CREDENTIALS

URL = "https://provider.example/token"


def _raw(manager: CredentialManager) -> Any:
    return create_engine(manager.engine.url)


def _row(manager: CredentialManager, credential_id: str) -> Any:
    engine = _raw(manager)
    with engine.connect() as connection:
        row = connection.execute(select(CREDENTIALS).where(CREDENTIALS.c.id == credential_id)).one()
    engine.dispose()
    return row


def _write(manager: CredentialManager, credential_id: str, **values: Any) -> None:
    """Edit the row, then recompute its MAC (so the envelope layer is what is tested)."""
    engine = _raw(manager)
    where = CREDENTIALS.c.id == credential_id
    with engine.begin() as connection:
        connection.execute(update(CREDENTIALS).where(where).values(**values))
        row = connection.execute(select(CREDENTIALS).where(where)).one()
        mac = manager.keys.seals.credential_mac(row._mapping)
        connection.execute(update(CREDENTIALS).where(where).values(record_mac=mac))
    engine.dispose()


def _refused(manager: CredentialManager, credential_id: str) -> None:
    with pytest.raises(DecryptionError):
        manager.get(credential_id, principal="admin")


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


def test_every_byte_of_a_sealed_field_is_protected(manager: CredentialManager) -> None:
    """Flipping any single byte of a stored field ciphertext makes get() raise."""
    manager.store("c", BasicAuth(username="u", password="pw"), principal="admin")
    original = _row(manager, "c").sealed
    blob = base64.b64decode(original["password"])
    for index in range(len(blob)):
        tampered = base64.b64encode(_flip(blob, index)).decode()
        _write(manager, "c", sealed={"password": tampered})
        _refused(manager, "c")
    _write(manager, "c", sealed=original)
    assert "pw" == manager.get("c", principal="admin").password.reveal()  # type: ignore[attr-defined]


def test_every_byte_of_the_wrapped_data_key_is_protected(manager: CredentialManager) -> None:
    """Flipping any byte of the wrapped data key makes get() raise."""
    manager.store("c", BasicAuth(username="u", password="pw"), principal="admin")
    wrapped = _row(manager, "c").wrapped_dek
    for index in range(len(wrapped)):
        _write(manager, "c", wrapped_dek=_flip(wrapped, index))
        _refused(manager, "c")


@pytest.mark.parametrize(
    "damage",
    [
        {"sealed": {"password": "!!not base64!!"}},
        {"sealed": {"password": ""}},
        {"sealed": {"password": base64.b64encode(b"\x01short").decode()}},
        {"sealed": {"username": "AAAA"}},
        {"wrapped_dek": b""},
        {"wrapped_dek": None},
        {"type": "api_key"},
        {"type": "kerberos"},
        {"public": {"username": "mallory"}},
    ],
    ids=lambda d: f"{next(iter(d))}={next(iter(d.values()))!r}"[:40],
)
def test_malformed_or_edited_rows_are_refused(
    manager: CredentialManager, damage: dict[str, Any]
) -> None:
    """Truncated, malformed, retyped or re-labelled rows never yield a credential."""
    manager.store("c", BasicAuth(username="u", password="pw"), principal="admin")
    _write(manager, "c", **damage)
    _refused(manager, "c")


def test_unknown_key_version_is_named(manager: CredentialManager) -> None:
    """A row under a key version the ring lacks says which version is missing."""
    manager.store("c", BasicAuth(username="u", password="pw"), principal="admin")
    _write(manager, "c", key_version=99)
    with pytest.raises(KeyringError, match="key version 99 is not in the keyring"):
        manager.get("c", principal="admin")


def test_ciphertext_copied_into_another_row_is_refused(manager: CredentialManager) -> None:
    """One credential's sealed field and data key copied into another row do not open there."""
    manager.store("a", BasicAuth(username="u", password="pw-a"), principal="admin")
    manager.store("b", BasicAuth(username="u", password="pw-b"), principal="admin")
    source = _row(manager, "a")
    _write(manager, "b", sealed=source.sealed)
    _refused(manager, "b")
    _write(manager, "b", wrapped_dek=source.wrapped_dek)
    _refused(manager, "b")


def test_ciphertext_swapped_between_fields_is_refused(manager: CredentialManager) -> None:
    """Swapping the access and refresh token ciphertexts of one row is detected."""
    oauth = OAuth2(token_url=URL, client_id="c", access_token="AT", refresh_token="RT")
    manager.store("o", oauth, principal="admin")
    sealed = dict(_row(manager, "o").sealed)
    sealed["access_token"], sealed["refresh_token"] = (
        sealed["refresh_token"],
        sealed["access_token"],
    )
    _write(manager, "o", sealed=sealed)
    _refused(manager, "o")


def test_rolled_back_ciphertext_is_refused(manager: CredentialManager) -> None:
    """An older ciphertext of the same field, restored after an update, does not open."""
    manager.store("c", BasicAuth(username="u", password="old"), principal="admin")
    old = _row(manager, "c").sealed
    manager.store("c", BasicAuth(username="u", password="new"), principal="admin")
    _write(manager, "c", sealed=old)
    _refused(manager, "c")


def test_redirected_token_url_is_refused(manager: CredentialManager) -> None:
    """Editing the stored token URL (to steal the refresh token) breaks decryption."""
    oauth = OAuth2(token_url=URL, client_id="c", refresh_token="RT")
    manager.store("o", oauth, principal="admin")
    public = dict(_row(manager, "o").public) | {"token_url": "https://attacker.example/t"}
    _write(manager, "o", public=public)
    _refused(manager, "o")


def test_decryption_failure_is_audited(manager: CredentialManager) -> None:
    """A refused decryption leaves a 'failed' audit event naming DecryptionError."""
    manager.store("c", BasicAuth(username="u", password="pw"), principal="admin")
    _write(manager, "c", sealed={"password": base64.b64encode(bytes(40)).decode()})
    _refused(manager, "c")
    event = manager.audit_events(principal="admin", limit=1)[0]
    assert ("read", "failed", "DecryptionError") == (
        event.action,
        event.outcome,
        event.detail["error"],
    )
    assert json.dumps(dict(event.detail))  # detail is plain data
