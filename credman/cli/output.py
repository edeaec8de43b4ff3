"""Where commands write (stdout for results, stderr for problems) and how values look."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console

__all__ = ["err", "out", "when"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def when(value: datetime | None) -> str:
    """A timestamp to the second, or ``-``."""
    return value.isoformat(timespec="seconds") if value else "-"
