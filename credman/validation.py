"""Checks of the plain values callers pass: credential ids, reasons, states, limits."""

from __future__ import annotations

import re

from credman.errors import CredentialValidationError
from credman.lifecycle import State

__all__ = ["check_credential_id", "check_limit", "check_min_ttl", "check_reason", "check_state"]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_MAX_REASON = 512


def check_credential_id(credential_id: object) -> str:
    """Validate a credential id: 1-128 of letters, digits and ``._:@/-``."""
    if not isinstance(credential_id, str) or not _ID.fullmatch(credential_id):
        raise CredentialValidationError(
            "credential_id: 1-128 characters of letters, digits and ._:@/- "
            "(starting with a letter or digit)",
            fields=("credential_id",),
        )
    return credential_id


def check_reason(reason: str | None) -> str | None:
    """Validate an optional free-text reason (UTF-8, no NUL, at most 512 characters)."""
    if reason is not None and not (
        isinstance(reason, str) and len(reason) <= _MAX_REASON and _is_text(reason)
    ):
        raise CredentialValidationError(
            f"reason: UTF-8 text of at most {_MAX_REASON} characters", fields=("reason",)
        )
    return reason


def check_state(state: State | str) -> str:
    """A lifecycle state's name, or a validation error listing the states."""
    try:
        return State(state).value
    except ValueError:
        names = ", ".join(s.value for s in State)
        raise CredentialValidationError(f"state: one of {names}", fields=("state",)) from None


def check_limit(name: str, value: object, maximum: int) -> int:
    """A whole number from 1 to ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        message = f"{name}: a whole number from 1 to {maximum}"
        raise CredentialValidationError(message, fields=(name,))
    return value


def check_min_ttl(min_ttl: object) -> float:
    """Seconds of life the caller needs left on handed-out material: 0 to 86400."""
    if (
        isinstance(min_ttl, bool)
        or not isinstance(min_ttl, int | float)
        or not 0 <= min_ttl <= 86400
    ):
        raise CredentialValidationError(
            "min_ttl: a number of seconds from 0 to 86400", fields=("min_ttl",)
        )
    return float(min_ttl)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value
