"""How a provider's token responses differ from RFC 6749, as data the parser applies."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["STANDARD", "ResponseQuirks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseQuirks:
    """Flags, not code branches: each one names a way a provider's response is peculiar."""

    ok_field: bool = False
    """Slack: ``"ok": false`` means the request failed, whatever the HTTP status."""
    expires_in_unit: float = 1.0
    """Seconds per unit of ``expires_in`` (0.001 for providers that send milliseconds)."""
    permanent_errors: frozenset[str] = field(default_factory=frozenset)
    """Error codes (beyond RFC 6749's) that mean the grant is gone, e.g. GitHub's
    ``bad_refresh_token``: permanent whatever the HTTP status."""
    keep_fields: tuple[str, ...] = ()
    """Non-secret response fields kept as the credential's metadata (``instance_url``)."""


STANDARD = ResponseQuirks()
"""A provider that follows RFC 6749 to the letter."""
