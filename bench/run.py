"""Running the registry: the plan (how many calls), the stages, and what is derived after.

The run opens one loopback token server and, in a temporary directory removed at the end,
one seeded SQLite database per ``synchronous`` mode, plus (FULL, credman's default) a
second one bulk-filled to the large size, measured side by side with the small one. The
cases that need no database run once, during the FULL stage. While the small FULL
database is open, the PostgreSQL stage runs in a fresh schema on the server of
``CREDMAN_TEST_POSTGRES_URL`` (skipped, with the reason in its rows, when none answers),
each case timed beside the same case on the small FULL database. Last come two FULL
databases of the rotation sizes (key rotation, side by side) and the burst: many tokens
expiring in the same minute, swept by this one process against a token server of its own.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bench import postgres
from bench.cases import (
    BASE,
    BESIDE,
    BURST,
    CASES,
    LARGE,
    ONCE,
    POSTGRES,
    ROTATION,
    SMALL,
    Case,
)
from bench.machine import describe
from bench.measure import Budget, Operation, time_interleaved, trace_memory
from bench.model import MemoryScale, Ratio, Report, Row, ScalePair
from bench.phase import POSTGRESQL, Phase
from bench.workload import token_server
from credman.crypto import KeyFileProvider
from credman.testing.provider import TokenServer

__all__ = ["FULL", "QUICK", "Plan", "run", "run_together"]

MODES = ("FULL", "NORMAL")
STAGE_ORDER = (SMALL, BESIDE, BASE, ONCE, POSTGRES, LARGE, ROTATION, BURST)
ROTATION_SEED = 100
"""Credentials stored for real in each rotation database; the rest are bulk-filled."""


@dataclass(frozen=True, slots=True)
class Plan:
    """How big a run is: table sizes and the call budgets by kind of operation."""

    name: str
    base_credentials: int
    large_credentials: int
    rotation_credentials: tuple[int, int]
    budgets: Mapping[str, Budget]


FULL = Plan(
    "full",
    base_credentials=1_000,
    large_credentials=100_000,
    rotation_credentials=(2_000, 10_000),
    budgets={
        "read": Budget(iterations=5000, warmup=300, memory_calls=300),
        "write": Budget(iterations=2000, warmup=200, memory_calls=200),
        "crypto": Budget(iterations=20_000, warmup=2000, memory_calls=2000),
        "http": Budget(iterations=2000, warmup=100, memory_calls=100),
        "sweep": Budget(iterations=5, warmup=1, memory_calls=1),
        "rotation": Budget(iterations=10, warmup=2, memory_calls=1),
        "burst": Budget(iterations=1, warmup=0, memory_calls=0),
    },
)
QUICK = Plan(
    "quick",
    base_credentials=1_000,
    large_credentials=10_000,
    rotation_credentials=(2_000, 10_000),
    budgets={
        "read": Budget(iterations=300, warmup=30, memory_calls=30),
        "write": Budget(iterations=200, warmup=20, memory_calls=20),
        "crypto": Budget(iterations=2000, warmup=100, memory_calls=100),
        "http": Budget(iterations=150, warmup=20, memory_calls=20),
        "sweep": Budget(iterations=2, warmup=1, memory_calls=1),
        "rotation": Budget(iterations=1, warmup=0, memory_calls=1),
        "burst": Budget(iterations=1, warmup=0, memory_calls=0),
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
        memory = [  # no memory pass when the operation can only run once (the burst)
            trace_memory(operation, budget.memory_calls) if budget.memory_calls else None
            for operation in operations
        ]
    except Exception as exc:  # an operation still being built must not sink the whole run
        for i, _ in ready:
            rows[i] = _failed(rows[i], exc)
        return
    for (i, operation), timed, traced in zip(ready, stats, memory, strict=True):
        rows[i] = replace(
            rows[i],
            stats=timed,
            memory=traced,
            note=getattr(operation, "note", ""),
            figures=dict(getattr(operation, "figures", {})),
        )


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
            continue
        if rows[i].credentials is not None:  # building may have stored some
            rows[i] = replace(rows[i], credentials=phase.count())
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


def _not_run(case: Case, stage: str, synchronous: str, status: str, note: str) -> Row:
    return Row(
        key=case.key,
        label=case.label,
        stage=stage,
        synchronous=synchronous,
        credentials=None,
        target=case.target,
        status=status,
        note=note,
    )


def _run_postgres(
    directory: Path, small: Phase, server: TokenServer, plan: Plan, report: Report
) -> None:
    """The PostgreSQL cases in a fresh schema seeded like ``small``, each timed interleaved
    with the same case on ``small``; rows say why when the server does not answer."""
    cases = [case for case in CASES if POSTGRES in case.stages]
    problem, version = postgres.unreachable()
    report.machine["postgresql"] = problem or f"{version} at {postgres.shown()}"
    if problem is not None:
        say(f"PostgreSQL stage skipped: {problem}")
        for case in cases:
            report.rows.append(_not_run(case, BESIDE, small.synchronous, "skipped", problem))
            report.rows.append(_not_run(case, POSTGRES, POSTGRESQL, "skipped", problem))
        return
    rows: list[Row] = []
    try:
        with postgres.fresh_schema() as (schema, url):
            key_file = directory / "credman.key"
            with Phase(directory, "FULL", server, key_file, name=schema, url=url) as phase:
                say(f"PostgreSQL {version}, schema {schema}: storing {plan.base_credentials:,}")
                phase.seed(plan.base_credentials)
                for case in cases:
                    rows += run_together([(case, small, BESIDE), (case, phase, POSTGRES)], plan)
                report.checks.append(phase.audit_check())
    except Exception as exc:  # a server that fails mid-stage must not sink the whole run
        note = f"PostgreSQL stage failed: {type(exc).__name__}: {exc}"[:300]
        say(note)
        rows = [_not_run(case, POSTGRES, POSTGRESQL, "error", note) for case in cases]
        rows += [_not_run(case, BESIDE, small.synchronous, "error", note) for case in cases]
    report.rows += rows


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
        _run_postgres(directory, small, server, plan, report)
        report.checks.append(small.audit_check())


def _run_normal(directory: Path, server: TokenServer, plan: Plan, report: Report) -> None:
    with _open(directory, "NORMAL", server) as phase:
        say(f"synchronous NORMAL: storing {plan.base_credentials:,} credentials")
        phase.seed(plan.base_credentials)
        report.rows += _run_stage(phase, BASE, plan)
        report.checks.append(phase.audit_check())


def _run_rotation(directory: Path, server: TokenServer, plan: Plan, report: Report) -> None:
    """Key rotation on FULL tables of the two rotation sizes, side by side. Each database
    has its own key file: a rotation rewrites the file, no other database shares it."""
    cases = [case for case in CASES if ROTATION in case.stages]
    with ExitStack() as stack:
        phases: list[Phase] = []
        for size in plan.rotation_credentials:
            key_file = directory / f"rotation-{size}.key"
            KeyFileProvider(key_file).create()
            phase = Phase(directory, "FULL", server, key_file, name=f"rotation-{size}")
            phases.append(stack.enter_context(phase))
            say(f"rotation table: storing {ROTATION_SEED:,}, bulk-filling to {size:,}")
            phase.seed(ROTATION_SEED)
            phase.fill(size)
        for case in cases:
            report.rows += run_together([(case, phase, ROTATION) for phase in phases], plan)
        report.checks += [phase.audit_check() for phase in phases]


def _run_burst(directory: Path, plan: Plan, report: Report) -> None:
    """The burst case on a FULL database and a token server of its own, so that the
    server's counts are the burst's alone."""
    cases = [case for case in CASES if BURST in case.stages]
    with token_server() as server, _open(directory, "FULL", server, name="burst") as phase:
        for case in cases:
            say(f"burst: storing the credentials of {case.label}")
            rows = run_together([(case, phase, BURST)], plan)
            report.rows += rows
            report.checks += [_burst_check(row) for row in rows if row.figures]
        report.checks.append(phase.audit_check())


def _burst_check(row: Row) -> str:
    """Whether the burst refreshed each credential exactly once and broke no grant."""
    f = row.figures
    count, requests, revoked = int(f["credentials"]), int(f["token_requests"]), f["grants_revoked"]
    ok = requests == count and f["refreshed"] == count and revoked == 0
    return (
        f"{row.label}: {int(f['refreshed']):,} refreshed with {requests:,} provider token "
        f"requests for {count:,} credentials "
        f"({'none twice' if requests == count else 'NOT one each'}), {int(revoked)} grants "
        f"revoked: {'ok' if ok else 'FAILED'}"
    )


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
        _run_rotation(directory, server, plan, report)
        _run_burst(directory, plan, report)
    report.machine["load_average"] = {"start": load_at_start, "end": os.getloadavg()}
    report.rows.sort(key=_display_order)
    report.ratios = ratios(report.rows)
    report.scale = scale_pairs(report.rows)
    report.memory_scale = memory_scales(report.rows)
    report.duration_s = round(time.perf_counter() - clock, 1)
    return report


def _display_order(row: Row) -> tuple[int, int, int]:
    """By operation as registered, then small table before PostgreSQL before large, then
    FULL before NORMAL (rows that tie keep the order they ran in)."""
    case = next(i for i, case in enumerate(CASES) if case.key == row.key)
    mode = MODES.index(row.synchronous) if row.synchronous in MODES else -1
    return case, STAGE_ORDER.index(row.stage), mode


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
    found += [
        Ratio("envelope / Fernet", None, once["envelope"], once["fernet"]),
        Ratio("one field seal+open / Fernet", None, once["field"], once["fernet"]),
        Ratio("request_token / Authlib", None, once["request_token"], once["authlib_refresh"]),
    ]
    beside = {row.key: row for row in rows if row.stage == BESIDE}
    return found + [
        Ratio(f"{row.label}: PostgreSQL / SQLite FULL", None, row, beside[row.key])
        for row in rows
        if row.stage == POSTGRES and row.key in beside
    ]


def scale_pairs(rows: list[Row]) -> list[ScalePair]:
    """Each operation timed on the small and the large table side by side (FULL)."""
    small = {row.key: row for row in rows if row.stage == SMALL}
    return [
        ScalePair(row.label, small[row.key], row)
        for row in rows
        if row.stage == LARGE and row.key in small
    ]


def memory_scales(rows: list[Row]) -> list[MemoryScale]:
    """Each rotation-stage case at the plan's two sizes: smaller first."""
    found: list[MemoryScale] = []
    for case in (case for case in CASES if ROTATION in case.stages):
        pair = sorted(
            (row for row in rows if row.key == case.key and row.stage == ROTATION),
            key=lambda row: row.credentials or 0,
        )
        if len(pair) == 2:
            found.append(MemoryScale(case.label, pair[0], pair[1]))
    return found


def _filesystem(path: Path) -> str:
    """The mount point and filesystem type holding ``path`` (fsync cost depends on it)."""
    mount, kind = "/", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and path.is_relative_to(parts[1]) and len(parts[1]) >= len(mount):
            mount, kind = parts[1], parts[2]
    return f"{kind} at {mount}"
