"""``python -m bench``: run the benchmarks (or profile one operation) and print the report."""

from __future__ import annotations

import argparse

from bench.profiling import PROFILABLE, profile
from bench.report import RESULTS, markdown, to_json, write
from bench.run import FULL, QUICK, run, say


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark credman side by side with a hand-written floor and its peers.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: few calls, a 10,000-credential large table; "
        "writes results/quick.md and quick.json instead of latest.*",
    )
    parser.add_argument(
        "--profile",
        choices=PROFILABLE,
        metavar="OPERATION",
        help=f"profile one operation with pyinstrument instead ({', '.join(PROFILABLE)})",
    )
    parser.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="SQLite synchronous mode for --profile (default FULL, credman's default)",
    )
    return parser.parse_args()


def main() -> int:
    """Run what the command line asks; the report goes to stdout and bench/results/."""
    options = _arguments()
    plan = QUICK if options.quick else FULL
    if options.profile:
        print(profile(options.profile, plan, options.synchronous))
        return 0
    report = run(plan)
    name = "quick" if options.quick else "latest"
    text = markdown(report)
    write(RESULTS / f"{name}.md", text)
    write(RESULTS / f"{name}.json", to_json(report))
    say(f"wrote {RESULTS / name}.md and .json")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
