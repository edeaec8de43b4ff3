"""A deadline on a whole HTTP exchange, connect to last byte (httpx bounds each read only).

httpx's ``Timeout`` applies to every socket operation on its own, so a peer that sends one
byte just inside the read timeout keeps a request alive for ever. :class:`Deadline` is a
``trace`` extension for the request plus a watchdog timer: httpcore hands the trace the
socket it connects, and when the deadline passes the watchdog shuts that socket down, which
ends any read or write in progress at once. Between body chunks :meth:`Deadline.check` stops
a drip that arrives over a reused (pooled) connection, whose socket the trace never sees.
Either way the exchange fails as an ``httpx.ReadTimeout``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx

__all__ = ["Deadline"]


class Deadline:
    """``seconds`` for one exchange, counted from ``__enter__``."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError("a deadline must be positive")
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._ends = 0.0
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Deadline:
        self._ends = time.monotonic() + self.seconds
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def remaining(self) -> float:
        """Seconds left (never below a millisecond, so it can be a timeout)."""
        return max(self._ends - time.monotonic(), 0.001)

    def timeout(self) -> httpx.Timeout:
        """Per-operation timeouts that never outlast the deadline."""
        return httpx.Timeout(self.remaining())

    def check(self) -> None:
        """Raise ``httpx.ReadTimeout`` once the deadline has passed."""
        if self.expired or time.monotonic() >= self._ends:
            self.expired = True
            raise httpx.ReadTimeout(f"the exchange took longer than {self.seconds:g} s")

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """The httpcore ``trace`` extension: remembers the socket of a new connection."""
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                with self._lock:
                    self._sockets.append(sock)
                    expired = self.expired
                if expired:
                    self._shutdown(sock)

    async def atrace(self, event: str, info: dict[str, Any]) -> None:
        """The same ``trace`` for httpx's async interface (which wants a coroutine)."""
        self.trace(event, info)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)
