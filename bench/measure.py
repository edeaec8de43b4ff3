"""Timing and memory of one operation: per-call nanosecond samples, then a traced pass."""

from __future__ import annotations

import math
import resource
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "Budget",
    "Memory",
    "Operation",
    "Stats",
    "max_rss_mib",
    "time_calls",
    "time_interleaved",
    "trace_memory",
]

Operation = Callable[[], object]
"""One call of the thing measured; its result is ignored."""


@dataclass(frozen=True, slots=True)
class Budget:
    """How many calls: warm-up (untimed), timed, and the separate memory pass."""

    iterations: int
    warmup: int
    memory_calls: int


@dataclass(frozen=True, slots=True)
class Stats:
    """The timed calls summarised, in microseconds (percentiles by nearest rank)."""

    iterations: int
    warmup: int
    mean_us: float
    p50_us: float
    p99_us: float
    min_us: float
    max_us: float

    @classmethod
    def of(cls, samples_ns: list[int], warmup: int) -> Stats:
        """Summarise per-call durations in nanoseconds."""
        ordered = sorted(samples_ns)
        return cls(
            iterations=len(ordered),
            warmup=warmup,
            mean_us=_us(sum(ordered) / len(ordered)),
            p50_us=_us(_percentile(ordered, 50)),
            p99_us=_us(_percentile(ordered, 99)),
            min_us=_us(ordered[0]),
            max_us=_us(ordered[-1]),
        )

    def value(self, metric: str) -> float:
        """The statistic named ``mean``, ``p50`` or ``p99``."""
        return float(getattr(self, f"{metric}_us"))


@dataclass(frozen=True, slots=True)
class Memory:
    """Python allocations over the memory pass, and the process's resident high-water mark."""

    calls: int
    python_peak_kib: float
    python_retained_kib: float
    max_rss_mib: float


def _us(nanoseconds: float) -> float:
    return round(nanoseconds / 1000, 1)


def _percentile(ordered: list[int], percent: float) -> int:
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _time_into(operation: Operation, calls: int, samples: list[int]) -> None:
    clock, record = time.perf_counter_ns, samples.append
    for _ in range(calls):
        start = clock()
        operation()
        record(clock() - start)


def time_interleaved(
    operations: Sequence[Operation], budget: Budget, rounds: int = 10
) -> list[Stats]:
    """Warm each up, then time them in alternating chunks, each call on its own.

    Alternating means a change in the machine's load during the run (this machine is
    shared) weighs on every operation alike, so their ratios stay fair. The garbage
    collector stays on: its pauses are part of what a caller waits for.
    """
    for operation in operations:
        for _ in range(budget.warmup):
            operation()
    samples: list[list[int]] = [[] for _ in operations]
    chunk = max(1, math.ceil(budget.iterations / rounds))
    for _ in range(rounds):
        for operation, bucket in zip(operations, samples, strict=True):
            _time_into(operation, min(chunk, budget.iterations - len(bucket)), bucket)
    return [Stats.of(bucket, budget.warmup) for bucket in samples]


def time_calls(operation: Operation, budget: Budget) -> Stats:
    """Warm up, then time each call on its own with ``perf_counter_ns``."""
    return time_interleaved([operation], budget)[0]


def trace_memory(operation: Operation, calls: int) -> Memory:
    """Peak and retained Python allocations over ``calls`` calls, traced by tracemalloc.

    Tracing slows allocation severalfold, so it runs apart from the timed calls. It sees
    every thread, so the in-process token server's allocations count for HTTP operations.
    """
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(calls):
            operation()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Memory(calls, _kib(peak - base), _kib(current - base), max_rss_mib())


def _kib(size: int) -> float:
    return round(size / 1024, 1)


def max_rss_mib() -> float:
    """The process's peak resident set so far (``ru_maxrss`` is in KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
