"""Principal tokens: ``cmp_<public id>_<secret>_<crc32>``, generated, parsed and hashed.

The public id (12 base62 characters, ~71 bits) finds the record in O(1); the secret (22
base62 characters, ~131 bits) is what proves possession; the CRC32 of everything before it
(6 base62 characters) lets a secret scanner recognise a real token offline, as GitHub's
``ghp_`` tokens do. Only an HMAC-SHA256 of the whole token under a keyring-derived key is
stored, never the token: for a random 131-bit secret a keyed hash is enough, and it costs
microseconds, where a slow KDF on every request would not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

__all__ = ["PREFIX", "TokenParts", "new_token", "parse_token", "token_digest", "token_id_of"]

PREFIX = "cmp"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_CHARS, _SECRET_CHARS, _CRC_CHARS = 12, 22, 6
_SHAPE = re.compile(
    rf"{PREFIX}_([0-9A-Za-z]{{{_ID_CHARS}}})_([0-9A-Za-z]{{{_SECRET_CHARS}}})_([0-9A-Za-z]{{{_CRC_CHARS}}})"
)


@dataclass(frozen=True, slots=True)
class TokenParts:
    """A token that has the right shape and checksum; ``token_id`` is public."""

    token_id: str


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _base62(number: int, length: int) -> str:
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CRC_CHARS)


def new_token() -> tuple[str, str]:
    """A fresh ``(token_id, token)``; the token is shown once and never stored."""
    token_id = _random(_ID_CHARS)
    body = f"{PREFIX}_{token_id}_{_random(_SECRET_CHARS)}"
    return token_id, f"{body}_{_checksum(body)}"


def parse_token(text: object) -> TokenParts | None:
    """The public parts of a well-formed token with a valid checksum; None otherwise."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    match = _SHAPE.fullmatch(text)
    if match is None:
        return None
    body = text[: -(_CRC_CHARS + 1)]
    if not hmac.compare_digest(_checksum(body), match.group(3)):
        return None
    return TokenParts(match.group(1))


def token_id_of(text: object) -> str | None:
    """The public id of anything shaped like a token, checksum or not (to throttle by id)."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    match = _SHAPE.fullmatch(text)
    return None if match is None else match.group(1)


def token_digest(key: bytes, token: str) -> str:
    """The stored form of ``token``: hex HMAC-SHA256 under ``key``."""
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
