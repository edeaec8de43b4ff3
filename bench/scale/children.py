"""The harness's child processes: started in sessions of their own, always stopped.

Every child is started with ``start_new_session=True`` and remembered; :class:`Children`
stops them (SIGTERM, then SIGKILL after a grace period) when its block ends, however it
ends, and on SIGTERM/SIGINT to the harness. CPU and memory come from ``/proc`` (no extra
dependency): user+system clock ticks and the resident set size.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

__all__ = ["Child", "Children", "ProcSample", "children", "proc_sample"]

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU seconds used so far and resident memory of one process, at ``at``."""

    at: float
    cpu_seconds: float
    rss_mib: float
    runqueue_seconds: float
    """Time its threads spent runnable but waiting for a CPU (``/proc/PID/task/*/schedstat``)."""


def proc_sample(pid: int) -> ProcSample | None:
    """A /proc reading of ``pid``; None when it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    rss_kib = next(
        (int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:"), 0
    )
    return ProcSample(time.monotonic(), cpu, rss_kib / 1024, _runqueue_wait(pid))


def _runqueue_wait(pid: int) -> float:
    waited = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with suppress(OSError, ValueError, IndexError):
            waited += int(task.read_text().split()[1])
    return waited / 1e9


@dataclass(slots=True)
class Child:
    """One started process; ``log`` receives its stderr (and stdout unless piped)."""

    name: str
    process: subprocess.Popen[str]
    log: IO[str] | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, command: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Send one JSON command line and read one JSON answer line (farm and readers)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.read_line(timeout)

    def read_line(self, timeout: float = 120.0) -> dict[str, Any]:
        """The next JSON line the child prints; RuntimeError if it exits first."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.process.stdout.readline()
        if not line or time.monotonic() > deadline:
            raise RuntimeError(f"{self.name} (pid {self.pid}) stopped answering")
        answer: dict[str, Any] = json.loads(line)
        return answer


class Children:
    """Starts processes and guarantees they are gone when the block ends."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        talk: bool = False,
    ) -> Child:
        """Start ``argv``; with ``talk``, stdin/stdout are pipes for JSON lines."""
        log = (self.logs / f"{name}.log").open("a")
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
            stdout=subprocess.PIPE if talk else log,
            stderr=log,
            text=True,
            env=env,
            start_new_session=True,
        )
        child = Child(name, process, log)
        self.started.append(child)
        return child

    def stop(self, children: Sequence[Child], *, grace: float = 60.0) -> None:
        """SIGTERM each, wait up to ``grace`` seconds for all, SIGKILL what is left."""
        for child in children:
            _signal(child, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(child, signal.SIGKILL)
                child.process.wait(timeout=10)
            if child.log is not None:
                child.log.close()
                child.log = None
            if child in self.started:
                self.started.remove(child)

    def stop_all(self) -> None:
        self.stop(list(self.started), grace=30.0)


def _signal(child: Child, number: int) -> None:
    if child.process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(child.pid, number)  # the child's own session: it and its children only


@contextmanager
def children(logs: Path) -> Iterator[Children]:
    """A :class:`Children` whose processes are stopped on exit and on SIGTERM/SIGINT."""
    started = Children(logs)

    def _interrupted(number: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {number}")

    previous = {n: signal.signal(n, _interrupted) for n in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield started
    finally:
        started.stop_all()
        for number, handler in previous.items():
            signal.signal(number, handler)
