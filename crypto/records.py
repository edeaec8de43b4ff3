"""MACs over database records, so a writer without the key cannot forge or alter a row.

The record's fields are put in a canonical JSON form (sorted keys, no whitespace, datetimes
as ISO 8601 in UTC) and authenticated with HMAC-SHA256 under a key derived from the keyring
for that kind of record. Verification is in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = ["RecordMac"]

Field = str | int | bool | datetime | None


class RecordMac:
    """Computes and checks the MAC of one kind of record (``kind`` is bound into it)."""

    def __init__(self, key: bytes, kind: str) -> None:
        self._key = key
        self._kind = kind

    def __repr__(self) -> str:
        return f"RecordMac({self._kind!r})"

    def mac(self, fields: Mapping[str, Field]) -> str:
        """The hex MAC of ``fields``."""
        document = {k: _canonical(v) for k, v in fields.items()}
        body = json.dumps([self._kind, document], sort_keys=True, separators=(",", ":"))
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def verify(self, fields: Mapping[str, Field], tag: str) -> bool:
        """Whether ``tag`` is the MAC of ``fields``."""
        return hmac.compare_digest(self.mac(fields), tag)


def _canonical(value: Field) -> str | int | bool | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value
