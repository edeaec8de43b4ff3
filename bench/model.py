"""What a run produces: measured rows, ratios between rows, scale pairs, and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.measure import Memory, Stats

__all__ = ["FLAT_LIMIT", "MemoryScale", "Ratio", "Report", "Row", "ScalePair", "Target"]

FLAT_LIMIT = 1.25
"""A cost is called flat when the large table's p50 is within this factor of the small's."""


@dataclass(frozen=True, slots=True)
class Target:
    """A goal from issue 9: statistic ``metric`` (``p50``/``p99``, in us) at most ``limit``."""

    metric: str
    limit: float

    def met(self, value: float) -> bool:
        """Whether ``value`` reaches the goal."""
        return value <= self.limit

    def describe(self) -> str:
        """The goal as the table shows it."""
        limit = f"{self.limit / 1000:g} ms" if self.limit >= 100 else f"{self.limit:g} us"
        return f"{self.metric} ≤ {limit}"


@dataclass(frozen=True, slots=True)
class Row:
    """One operation measured (or skipped) in one stage and ``synchronous`` mode."""

    key: str
    label: str
    stage: str
    synchronous: str | None
    credentials: int | None
    stats: Stats | None = None
    memory: Memory | None = None
    target: Target | None = None
    status: str = "measured"
    note: str = ""
    figures: dict[str, float] = field(default_factory=dict)
    """What the operation itself reported (counts, rates), for the JSON."""

    def verdict(self) -> str:
        """``met``/``missed`` against the target, the status when not measured, else empty."""
        if self.stats is None:
            return self.status
        if self.target is None:
            return ""
        return "met" if self.target.met(self.stats.value(self.target.metric)) else "missed"


@dataclass(frozen=True, slots=True)
class Ratio:
    """credman's p50 over a reference's p50, measured in the same run."""

    label: str
    synchronous: str | None
    subject: Row
    reference: Row
    limit: float | None = None

    @property
    def value(self) -> float | None:
        """The ratio, or None when either side was not measured."""
        if self.subject.stats is None or self.reference.stats is None:
            return None
        return self.subject.stats.p50_us / self.reference.stats.p50_us

    def verdict(self) -> str:
        """``met``/``missed`` against the limit; why not, when a side is missing."""
        value = self.value
        if value is None:
            missing = self.subject if self.subject.stats is None else self.reference
            return f"{missing.status}: {missing.label}"
        if self.limit is None:
            return ""
        return "met" if value <= self.limit else "missed"


@dataclass(frozen=True, slots=True)
class ScalePair:
    """The same operation on a small and a large table."""

    label: str
    small: Row
    large: Row

    def ratio(self, metric: str) -> float | None:
        """large / small for ``p50`` or ``p99``; None when either was not measured."""
        if self.small.stats is None or self.large.stats is None:
            return None
        return self.large.stats.value(metric) / self.small.stats.value(metric)

    def verdict(self) -> str:
        """``flat`` when the p50 does not grow beyond FLAT_LIMIT, else ``grows``."""
        ratio = self.ratio("p50")
        if ratio is None:
            return self.large.status if self.large.stats is None else self.small.status
        return "flat" if ratio <= FLAT_LIMIT else "grows"


@dataclass(frozen=True, slots=True)
class MemoryScale:
    """A whole-table operation at two sizes: its time should grow, its peak memory not."""

    label: str
    small: Row
    large: Row

    def time_ratio(self) -> float | None:
        """large / small p50 time; None when either was not measured."""
        if self.small.stats is None or self.large.stats is None:
            return None
        return self.large.stats.p50_us / self.small.stats.p50_us

    def size_ratio(self) -> float | None:
        """large / small table size."""
        if not self.small.credentials or self.large.credentials is None:
            return None
        return self.large.credentials / self.small.credentials

    def memory_ratio(self) -> float | None:
        """large / small Python peak; None when either was not traced."""
        if self.small.memory is None or self.large.memory is None:
            return None
        return self.large.memory.python_peak_kib / self.small.memory.python_peak_kib

    def verdict(self) -> str:
        """``flat`` when the peak does not grow beyond FLAT_LIMIT, else ``grows``."""
        ratio = self.memory_ratio()
        if ratio is None:
            return self.large.status if self.large.memory is None else self.small.status
        return "flat" if ratio <= FLAT_LIMIT else "grows"


@dataclass(slots=True)
class Report:
    """Everything one run measured, with where and when."""

    started_at: datetime
    plan: str
    sizes: tuple[int, int]
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    scale: list[ScalePair] = field(default_factory=list)
    memory_scale: list[MemoryScale] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    duration_s: float = 0.0
