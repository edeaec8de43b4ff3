"""Where commands write (stdout for results, stderr for problems) and how values look.

Tables are for people and fit 80 columns (times are shown relative, ``in 7h59m``);
``--json`` is for programs: one JSON document on stdout with the field names of
``docs/cli.md``, timestamps in ISO 8601 UTC, and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from credman.models import CredentialInfo

__all__ = [
    "JsonFlag",
    "ago",
    "err",
    "info_record",
    "out",
    "print_json",
    "table",
    "when",
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (field names in docs/cli.md).")]


def when(value: datetime | None) -> str:
    """A timestamp to the second, or ``-``."""
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else "-"


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """A time relative to now, short enough for a table: ``in 7h59m``, ``3m ago``, ``-``."""
    if value is None:
        return "-"
    seconds = int((value - (now or datetime.now(UTC))).total_seconds())
    text = _span(abs(seconds))
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def table(*columns: str) -> Table:
    """A compact table: no outer box, one space between columns, headers in capitals."""
    return Table(
        *(column.upper() for column in columns),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        show_edge=False,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_plain(v) for v in value]
        return sorted(items) if isinstance(value, set | frozenset) else items
    if hasattr(value, "value") and isinstance(value.value, str):  # enums
        return value.value
    return value


def print_json(document: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
    """One JSON document on stdout (datetimes as ISO 8601 UTC, enums as their value)."""
    typer.echo(json.dumps(_plain(document), indent=2, sort_keys=False))


def info_record(info: CredentialInfo) -> dict[str, Any]:
    """A ``CredentialInfo`` as the stable JSON record of ``list``/``status``."""
    return {
        "credential_id": info.credential_id,
        "type": info.type,
        "state": info.state,
        "version": info.version,
        "expires_at": info.expires_at,
        "next_due_at": info.next_due_at,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "attempts": info.attempts,
        "last_error": info.last_error,
        "key_version": info.key_version,
        "metadata": dict(info.metadata),
    }
