"""MACs over database records, so a writer without the key cannot forge or alter a row.

The record's fields are put in a canonical JSON form (sorted keys, no whitespace, datetimes
as ISO 8601 in UTC, bytes as base64, JSON documents such as a row's JSON columns as they
are) and authenticated with HMAC-SHA256 under a key derived from the keyring for that kind
of record. Verification is in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = ["RecordMac"]

Field = str | int | bool | datetime | bytes | Mapping[str, object] | None


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


_PLAIN = (str, int, bool, type(None))


def _canonical(value: Field) -> object:
    if type(value) in _PLAIN:  # the common case first: an ABC isinstance costs a microsecond
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return dict(value)
    return value
