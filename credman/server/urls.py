"""The URL rules of connect over HTTP: the public base URL, the return_to allow-list.

A base URL is absolute, https (plain http only on a loopback host), with no user info,
query or fragment. A ``return_to`` is allowed when its origin (scheme, host, port) equals an
allow-list entry's and its path is that entry's path or lies under it (segment-wise: the
entry ``/app`` allows ``/app`` and ``/app/x``, not ``/apps``); dot segments, backslashes and
encoded slashes are refused outright, so no browser can resolve an allowed-looking URL
somewhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, unquote, urlencode, urlsplit

from credman.errors import CredentialValidationError

__all__ = ["allowed_return_to", "check_base_url", "with_query"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_MAX_LENGTH = 2048


def check_base_url(url: object, name: str) -> str:
    """``url`` when it is a valid base URL, else a validation error naming ``name``."""
    parts = _parts(url)
    if parts is None or parts.query or parts.fragment:
        raise CredentialValidationError(
            f"{name}: an https URL (http only on loopback) without user info, query or fragment",
            fields=(name,),
        )
    return str(url)


def allowed_return_to(url: object, allow: Iterable[str]) -> str | None:
    """``url`` when it falls under one of the ``allow`` entries, else None."""
    parts = _parts(url)
    if parts is None or parts.fragment:
        return None
    for entry in allow:
        base = urlsplit(entry)
        if _origin(parts) == _origin(base) and _under(parts.path or "/", base.path or "/"):
            return str(url)
    return None


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return parts._replace(query=query).geturl()


def _parts(url: object) -> SplitResult | None:
    if not isinstance(url, str) or not url or len(url) > _MAX_LENGTH or "\\" in url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return None
    segments = unquote(parts.path).split("/")
    if any(segment in (".", "..") for segment in segments) or "%2f" in parts.path.lower():
        return None
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")
