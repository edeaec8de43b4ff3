"""``Access``: the request material a component receives (until the core exports its own)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["Access"]


@dataclass(frozen=True, slots=True)
class Access:
    """What to put on a request: headers and query parameters, with the version and expiry."""

    credential_id: str
    version: int
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    params: Mapping[str, str] = field(default_factory=dict, repr=False)
    expires_at: datetime | None = None
