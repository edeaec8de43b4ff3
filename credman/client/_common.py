"""What both clients share: the default clock, the cache from settings, reading answers."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx

from credman import Clock
from credman.client import _wire as wire
from credman.client._cache import AccessCache
from credman.client._config import BearerAuth, check_token, seconds
from credman.clock import as_clock
from credman.crypto import Secret
from credman.errors import CredentialError

__all__ = [
    "DEFAULT_MIN_TTL",
    "ClockLike",
    "http_options",
    "new_cache",
    "read_answer",
    "unreachable",
]

T = TypeVar("T")
ClockLike = Clock | Callable[[], datetime]
"""A :class:`credman.Clock` or a function returning aware datetimes."""
DEFAULT_MIN_TTL = 30.0
"""Seconds of validity asked for when the caller does not say."""


def new_cache(
    *, cache: bool, max_age: float | timedelta, headroom: float | timedelta, clock: ClockLike | None
) -> AccessCache:
    """The access cache both clients use, from their keyword settings."""
    return AccessCache(
        max_age=seconds(max_age, "max_age"),
        headroom=seconds(headroom, "headroom"),
        clock=as_clock(clock),
        enabled=cache,
    )


def read_answer(call: wire.Call[T], response: httpx.Response) -> T:
    """The parsed answer of ``call``, or the credman error its problem details describe."""
    try:
        data: Any = response.json() if response.content else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if response.is_success:
        return call.parse(data)
    problem = data if isinstance(data, Mapping) else {}
    raise wire.error_for(response.status_code, response.headers, problem, call.credential_id)


def unreachable(url: str, exc: httpx.TransportError) -> CredentialError:
    """A transport failure, named without anything the request carried."""
    return wire.ServiceError(f"credman service at {url} unreachable ({type(exc).__name__})")


def http_options(token: str | Secret, timeout: float) -> dict[str, Any]:
    """The httpx client options both clients use: the token as auth, JSON, a timeout."""
    return {
        "auth": BearerAuth(check_token(token)),
        "timeout": timeout,
        "headers": {"Accept": "application/json"},
    }
