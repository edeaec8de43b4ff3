"""Stored text made safe for a terminal: no Rich markup, no escape sequences, no bidi tricks.

Whatever credman prints from the database (scopes, reasons, errors, metadata, audit
details) may have been written by someone else. :func:`inert` turns it into a Rich ``Text``
(so ``[/]`` or ``[link=...]`` is shown, not interpreted) in which every control character
(ESC and so OSC-8 hyperlinks and cursor moves, C1 controls, DEL) and every bidirectional
override is shown as a visible ``\\xNN``/``\\uNNNN`` escape. :class:`SafeTable` is a Rich
table whose string cells all go through it.
"""

from __future__ import annotations

import re
from typing import Any

from rich.table import Table
from rich.text import Text

__all__ = ["SafeTable", "inert", "visible"]

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``value`` as text with every control and bidi character shown as an escape."""
    return _UNSAFE.sub(_escape, str(value))


def inert(value: object) -> Text:
    """``value`` as a Rich ``Text``: printed literally, markup and controls made visible."""
    return Text(visible(value))


class SafeTable(Table):
    """A Rich ``Table`` whose string cells are :func:`inert`: rows never carry markup."""

    def add_row(self, *renderables: Any, **options: Any) -> None:
        """Add a row, each string cell made inert."""
        cells = [inert(cell) if isinstance(cell, str) else cell for cell in renderables]
        super().add_row(*cells, **options)
