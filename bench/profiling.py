"""Profiling one operation's hot path with pyinstrument, on the same database as the benchmark.

Writes ``bench/results/profile-<operation>.txt`` (the flat list of self time, then the call
tree, both as percentages of the profiled time) and ``.html`` (pyinstrument's viewer); in
NORMAL mode the names end in ``-normal``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from pyinstrument import Profiler
from pyinstrument.renderers import HTMLRenderer

from bench.cases import BASE, CASES, Builder, Case
from bench.measure import Budget, Operation
from bench.phase import Phase
from bench.report import RESULTS, write
from bench.run import Plan, say
from bench.workload import token_server
from credman.crypto import KeyFileProvider

__all__ = ["PROFILABLE", "profile"]

PROFILABLE = tuple(case.key for case in CASES if BASE in case.stages)
_INTERVAL = 0.0002  # 200 us: operations take a few hundred us to a few ms
_HTML_INTERVAL = 0.01  # the HTML viewer embeds every stack: resampled, it stays a few MB
_FLAT_LINES = 45


def _case(key: str) -> tuple[Case, Builder]:
    case = next(case for case in CASES if case.key == key)
    reason = case.skip_reason()
    if reason is not None or case.build is None:
        raise SystemExit(f"cannot profile {key}: {reason}")
    return case, case.build


def _record(operation: Operation, calls: int) -> tuple[Profiler, float]:
    profiler = Profiler(interval=_INTERVAL, async_mode="disabled")
    started = time.perf_counter_ns()
    profiler.start()
    for _ in range(calls):
        operation()
    profiler.stop()
    per_call_us = (time.perf_counter_ns() - started) / calls / 1000
    return profiler, per_call_us


def _text(profiler: Profiler, header: str) -> str:
    flat = profiler.output_text(unicode=True, flat=True, time="percent_of_total")
    tree = profiler.output_text(unicode=True, time="percent_of_total")
    top = "\n".join(flat.strip("\n").splitlines()[:_FLAT_LINES])
    return f"{header}\n\n## Self time, top functions\n{top}\n\n## Call tree\n{tree}"


def _html(profiler: Profiler) -> str:
    """pyinstrument's HTML viewer over the session resampled (it embeds every stack)."""
    session = profiler.last_session
    if session is None:
        return ""
    return HTMLRenderer().render(session.resample(interval=_HTML_INTERVAL))


def _profile_fresh(
    build: Builder, budget: Budget, plan: Plan, synchronous: str
) -> tuple[Profiler, float]:
    """Seed a fresh database, warm the operation up, then profile ``budget``'s calls."""
    with tempfile.TemporaryDirectory(prefix="credman-profile-") as tmp, token_server() as server:
        key_file = Path(tmp) / "credman.key"
        KeyFileProvider(key_file).create()
        with Phase(Path(tmp), synchronous, server, key_file) as phase:
            say(f"storing {plan.base_credentials:,} credentials")
            phase.seed(plan.base_credentials)
            operation = build(phase)
            for _ in range(budget.warmup):
                operation()
            say(f"profiling {budget.iterations:,} calls")
            return _record(operation, budget.iterations)


def profile(key: str, plan: Plan, synchronous: str = "FULL") -> str:
    """Profile ``key``'s operation; write the text and HTML profiles; return the text."""
    case, build = _case(key)
    full = plan.budgets[case.budget]
    budget = Budget(min(full.iterations, 3000), full.warmup, 0)
    profiler, per_call_us = _profile_fresh(build, budget, plan, synchronous)
    header = (
        f"# profile of {case.label}: {budget.iterations:,} calls after {budget.warmup:,} "
        f"warm-up, synchronous {synchronous}, {plan.base_credentials:,} credentials, "
        f"{per_call_us:,.0f} us per call while profiled (sampling every {_INTERVAL * 1e6:g} us)"
    )
    text = _text(profiler, header)
    name = f"profile-{key}" if synchronous == "FULL" else f"profile-{key}-{synchronous.lower()}"
    write(RESULTS / f"{name}.txt", text)
    write(RESULTS / f"{name}.html", _html(profiler))
    return text
