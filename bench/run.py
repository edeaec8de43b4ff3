"""Running the registry: the plan (how many calls), the stages, and what is derived after.

The run opens one loopback token server and, in a temporary directory removed at the end,
one seeded SQLite database per ``synchronous`` mode, plus (FULL, credman's default) a
second one bulk-filled to the large size, measured side by side with the small one. The
cases that need no database run once, during the FULL stage.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench.cases import BASE, CASES, LARGE, ONCE, SMALL, Case
from bench.machine import describe
from bench.measure import Budget, Operation, time_interleaved, trace_memory
from bench.model import Ratio, Report, Row, ScalePair
from bench.phase import Phase
from bench.workload import token_server
from credman.crypto import KeyFileProvider
from credman.tokenserver import TokenServer

__all__ = ["FULL", "QUICK", "Plan", "run", "run_together"]

MODES = ("FULL", "NORMAL")


@dataclass(frozen=True, slots=True)
class Plan:
    """How big a run is: table sizes and the call budgets by kind of operation."""

    name: str
    base_credentials: int
    large_credentials: int
    budgets: Mapping[str, Budget]


FULL = Plan(
    "full",
    base_credentials=1_000,
    large_credentials=100_000,
    budgets={
        "read": Budget(iterations=5000, warmup=300, memory_calls=300),
        "write": Budget(iterations=2000, warmup=200, memory_calls=200),
        "crypto": Budget(iterations=20_000, warmup=2000, memory_calls=2000),
        "http": Budget(iterations=2000, warmup=100, memory_calls=100),
        "sweep": Budget(iterations=5, warmup=1, memory_calls=1),
    },
)
QUICK = Plan(
    "quick",
    base_credentials=1_000,
    large_credentials=10_000,
    budgets={
        "read": Budget(iterations=300, warmup=30, memory_calls=30),
        "write": Budget(iterations=200, warmup=20, memory_calls=20),
        "crypto": Budget(iterations=2000, warmup=100, memory_calls=100),
        "http": Budget(iterations=150, warmup=20, memory_calls=20),
        "sweep": Budget(iterations=2, warmup=1, memory_calls=1),
    },
)


def say(message: str) -> None:
    """Progress on stderr; stdout carries only the report."""
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


Entry = tuple[Case, Phase, str]
"""A case, the database it runs on, and the stage its row is filed under."""


def _blank(case: Case, phase: Phase, stage: str) -> Row:
    on_db = stage != ONCE
    return Row(
        key=case.key,
        label=case.label,
        stage=stage,
        synchronous=phase.synchronous if on_db else None,
        credentials=phase.count() if on_db else None,
        target=case.target,
    )


def _failed(row: Row, exc: Exception) -> Row:
    return replace(row, status="error", note=f"{type(exc).__name__}: {exc}"[:300])


def _progress(row: Row) -> str:
    where = f"{row.synchronous}, {row.credentials:,} credentials" if row.synchronous else "-"
    return f"{row.label} [{where}]"


def _measure(rows: list[Row], ready: list[tuple[int, Operation]], budget: Budget) -> None:
    """Time the built operations interleaved, then trace each one's memory; fill ``rows``."""
    say(" + ".join(_progress(rows[i]) for i, _ in ready))
    operations = [operation for _, operation in ready]
    try:
        stats = time_interleaved(operations, budget)
        memory = [trace_memory(operation, budget.memory_calls) for operation in operations]
    except Exception as exc:  # an operation still being built must not sink the whole run
        for i, _ in ready:
            rows[i] = _failed(rows[i], exc)
        return
    for (i, operation), timed, traced in zip(ready, stats, memory, strict=True):
        rows[i] = replace(rows[i], stats=timed, memory=traced, note=getattr(operation, "note", ""))


def run_together(entries: list[Entry], plan: Plan) -> list[Row]:
    """Measure entries side by side (with the first one's budget); skips and failures
    become rows saying why."""
    rows = [_blank(case, phase, stage) for case, phase, stage in entries]
    ready: list[tuple[int, Operation]] = []
    for i, (case, phase, _) in enumerate(entries):
        reason = case.skip_reason()
        if reason is not None or case.build is None:
            rows[i] = replace(rows[i], status="skipped", note=reason or "")
            continue
        try:
            ready.append((i, case.build(phase)))
        except Exception as exc:  # as above: report it and go on
            rows[i] = _failed(rows[i], exc)
    if ready:
        _measure(rows, ready, plan.budgets[entries[0][0].budget])
    return rows


def _run_stage(phase: Phase, stage: str, plan: Plan) -> list[Row]:
    """The stage's cases on one database; consecutive cases of a group run together."""
    cases = [case for case in CASES if stage in case.stages]
    rows: list[Row] = []
    for _, group in itertools.groupby(cases, key=lambda case: case.group or case.key):
        rows += run_together([(case, phase, stage) for case in group], plan)
    return rows


def _run_large(small: Phase, large: Phase, plan: Plan) -> list[Row]:
    """The large-table cases; those also run on the small table are timed against it again,
    interleaved, so that their ratio does not depend on when each was measured."""
    rows: list[Row] = []
    for case in (case for case in CASES if LARGE in case.stages):
        pair = [(case, small, SMALL)] if BASE in case.stages else []
        rows += run_together([*pair, (case, large, LARGE)], plan)
    return rows


def _open(directory: Path, synchronous: str, server: TokenServer, name: str = "") -> Phase:
    return Phase(directory, synchronous, server, directory / "credman.key", name=name)


def _run_full(directory: Path, server: TokenServer, plan: Plan, report: Report) -> None:
    with _open(directory, "FULL", server) as small:
        say(f"synchronous FULL: storing {plan.base_credentials:,} credentials")
        small.seed(plan.base_credentials)
        report.rows += _run_stage(small, BASE, plan)
        report.rows += _run_stage(small, ONCE, plan)
        with _open(directory, "FULL", server, name="large") as large:
            say(f"large table: storing {plan.base_credentials:,}, bulk-filling the rest")
            large.seed(plan.base_credentials)
            large.fill(plan.large_credentials)
            report.rows += _run_large(small, large, plan)
            report.checks.append(large.audit_check())
        report.checks.append(small.audit_check())


def _run_normal(directory: Path, server: TokenServer, plan: Plan, report: Report) -> None:
    with _open(directory, "NORMAL", server) as phase:
        say(f"synchronous NORMAL: storing {plan.base_credentials:,} credentials")
        phase.seed(plan.base_credentials)
        report.rows += _run_stage(phase, BASE, plan)
        report.checks.append(phase.audit_check())


def run(plan: Plan) -> Report:
    """Measure everything in ``plan``; temporary files are gone when this returns."""
    started, clock, load_at_start = datetime.now(UTC), time.perf_counter(), os.getloadavg()
    sizes = (plan.base_credentials, plan.large_credentials)
    report = Report(started_at=started, plan=plan.name, sizes=sizes, machine=describe())
    with tempfile.TemporaryDirectory(prefix="credman-bench-") as tmp, token_server() as server:
        directory = Path(tmp)
        KeyFileProvider(directory / "credman.key").create()
        report.machine["temp_filesystem"] = _filesystem(directory)
        _run_full(directory, server, plan, report)
        _run_normal(directory, server, plan, report)
    report.machine["load_average"] = {"start": load_at_start, "end": os.getloadavg()}
    report.rows.sort(key=_display_order)
    report.ratios = ratios(report.rows)
    report.scale = scale_pairs(report.rows)
    report.duration_s = round(time.perf_counter() - clock, 1)
    return report


def _display_order(row: Row) -> tuple[int, int, int]:
    """By operation as registered, then small table before large, then FULL before NORMAL."""
    case = next(i for i, case in enumerate(CASES) if case.key == row.key)
    mode = MODES.index(row.synchronous) if row.synchronous in MODES else -1
    return case, [SMALL, BASE, ONCE, LARGE].index(row.stage), mode


def _find(rows: Iterable[Row], key: str, synchronous: str | None, stage: str = BASE) -> Row:
    return next(r for r in rows if (r.key, r.synchronous, r.stage) == (key, synchronous, stage))


def ratios(rows: list[Row]) -> list[Ratio]:
    """The side-by-side comparisons of issue 9, as ratios of p50s."""
    once = {row.key: row for row in rows if row.stage == ONCE}
    found = [
        Ratio("get / floor", mode, _find(rows, "get", mode), _find(rows, "floor", mode), 2.0)
        for mode in MODES
    ]
    found += [
        Ratio("refresh / Authlib", mode, _find(rows, "refresh", mode), once["authlib_refresh"], 1.3)
        for mode in MODES
    ]
    return [
        *found,
        Ratio("envelope / Fernet", None, once["envelope"], once["fernet"]),
        Ratio("one field seal+open / Fernet", None, once["field"], once["fernet"]),
        Ratio("request_token / Authlib", None, once["request_token"], once["authlib_refresh"]),
    ]


def scale_pairs(rows: list[Row]) -> list[ScalePair]:
    """Each operation timed on the small and the large table side by side (FULL)."""
    small = {row.key: row for row in rows if row.stage == SMALL}
    return [
        ScalePair(row.label, small[row.key], row)
        for row in rows
        if row.stage == LARGE and row.key in small
    ]


def _filesystem(path: Path) -> str:
    """The mount point and filesystem type holding ``path`` (fsync cost depends on it)."""
    mount, kind = "/", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and path.is_relative_to(parts[1]) and len(parts[1]) >= len(mount):
            mount, kind = parts[1], parts[2]
    return f"{kind} at {mount}"
