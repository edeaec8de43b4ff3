"""``python -m bench.scale``: the scale run (``make bench-scale``); writes bench/results/scale-*."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.scale.plan import Plan
from bench.scale.report import markdown, to_json
from bench.scale.run import run, say

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description="N OAuth2 credentials on PostgreSQL kept fresh by 1, 2 and 4 credman serve "
        "processes against a loopback provider farm; writes bench/results/scale-<rows>.md/.json.",
    )
    parser.add_argument("--rows", type=int, default=10_000, help="credentials (default 10,000)")
    parser.add_argument(
        "--window", type=float, default=60.0, help="seconds per process count (default 60)"
    )
    parser.add_argument(
        "--processes", default="1,2,4", help="serve process counts, in order (default 1,2,4)"
    )
    parser.add_argument("--due-per-minute", type=int, default=10_000)
    parser.add_argument("--farm", type=int, default=2, help="provider farm processes")
    parser.add_argument("--audit-window", type=float, default=15.0)
    parser.add_argument(
        "--overdue", type=int, default=None, help="restart: rows made overdue (default 6 %%)"
    )
    parser.add_argument(
        "--restart-limit", type=float, default=300.0, help="restart: seconds to wait at most"
    )
    parser.add_argument("--tick-due", type=int, default=1000, help="due rows in the timed tick")
    parser.add_argument(
        "--skip", default="", help="comma-separated stages to leave out: restart, audit"
    )
    parser.add_argument("--name", default=None, help="results file stem (default scale-<rows>)")
    return parser.parse_args()


def main() -> int:
    options = _arguments()
    plan = Plan(
        rows=options.rows,
        window=options.window,
        processes=tuple(int(n) for n in options.processes.split(",")),
        due_per_minute=options.due_per_minute,
        farm=options.farm,
        audit_window=options.audit_window,
        tick_due=options.tick_due,
        overdue_count=options.overdue,
        restart_limit=options.restart_limit,
        skip=frozenset(s for s in options.skip.split(",") if s),
    )
    stem = options.name or f"scale-{plan.rows}"

    def record(results: dict[str, Any]) -> None:
        (RESULTS / f"{stem}.json").write_text(to_json(results))
        (RESULTS / f"{stem}.md").write_text(markdown(results))

    results = run(plan, record)
    say(f"wrote {RESULTS / stem}.md and .json")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
