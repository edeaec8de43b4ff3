"""The report as Markdown (for people and the README) and JSON (for tools), written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.cases import BURST_COUNT, HIDDEN, ROTATION_BATCH
from bench.model import FLAT_LIMIT, MemoryScale, Ratio, Report, Row, ScalePair
from bench.postgres import DEFAULT_URL

__all__ = ["RESULTS", "markdown", "to_json", "write"]

RESULTS = Path(__file__).resolve().parent / "results"

_HOW = (
    "Each operation is called after a warm-up, then timed call by call with "
    "`time.perf_counter_ns` (garbage collector on); times are microseconds per call, "
    "percentiles by nearest rank. Operations compared with each other (get and the floor, "
    "the three crypto rows, the two OAuth clients, each scaled operation on both tables, "
    "each PostgreSQL operation and the same on SQLite, the two rotations) are timed "
    "interleaved, in ten alternating chunks. The refresh / Authlib ratio is not: "
    "Authlib is timed once, during the FULL stage.",
    "Python peak: tracemalloc's peak over a separate pass (tracing slows code, so it never "
    "runs while timing), above what was allocated before it; it sees every thread, so the "
    "in-process token server counts for HTTP rows. Max RSS: the process's `ru_maxrss` when "
    "the row finished, a high-water mark over the whole run.",
    "Reads go by a component holding `use` on `*` (its grant lookup is part of every read), "
    "writes by a configured admin; reads pick ids in one fixed pseudo-random order, the "
    "same for credman and the floor. The credential is OAuth2 with three secret fields (an "
    "800-character access token, a refresh token, a client secret).",
    "The floor is hand-written SQLAlchemy Core on the same file and pragmas: one "
    "`BEGIN IMMEDIATE` transaction that selects the row, opens one field with AES-GCM "
    "(data key unwrapped beforehand), inserts an audit row and commits.",
    "The large table is a second FULL database: the same credentials stored for real, then "
    "sealed copies (each for its own id) inserted by executemany in one transaction, with "
    "no history or audit rows (the audit head is checked unchanged). Each scaled operation "
    "is timed on it interleaved with the same operation on the small database, so their "
    "ratio does not depend on when each ran; those small-table timings appear only in the "
    "Scale table.",
    "The sweep row calls `tick` at moments two token lifetimes apart, so the same "
    "credentials fall due each time and are refreshed against the loopback token server "
    "(tick's own defaults for batch size and worker threads).",
    "OAuth rows talk HTTP/1.0 to credman's loopback token server in this process (a new "
    "connection per request, refresh tokens rotating); every client keeps its newest "
    "refresh token. Authlib runs on httpx 0.28, as credman does. `refresh` is the whole "
    "manager call: claim transaction, token request, commit transaction, and the "
    "`info` it returns.",
    "PostgreSQL rows: credman on the server at `CREDMAN_TEST_POSTGRES_URL` (default "
    f"`{DEFAULT_URL}`; the machine table names the server used; psycopg 3, credman's "
    "pool of 5), in a "
    "schema created empty for the run (`search_path` in the URL) and dropped after it, "
    "seeded like the small SQLite database. Each PostgreSQL operation is timed interleaved "
    "with the same operation on the small FULL SQLite database, re-timed beside it: those "
    "SQLite timings appear only in the ratio table. With no server answering, the rows say "
    "skipped and why; the run goes on.",
    f"Key rotation: `rotate_keys(principal=admin, batch_size={ROTATION_BATCH})` on two FULL "
    "databases (the smaller and larger rotation size; a few credentials stored for real, the "
    "rest sealed copies bulk-filled as for the large table), each with its own key file. "
    "Every call is a whole rotation: a new primary key version, then every data key "
    "re-wrapped under it in batches. The two sizes are timed interleaved after a warm-up; "
    "Python peak is one more rotation traced by tracemalloc. Time should grow with the "
    "table, peak memory should not (flat: within "
    f"{FLAT_LIMIT}x).",
    f"The burst row: {BURST_COUNT:,} OAuth2 credentials stored with access tokens expiring "
    "evenly over one minute, ten minutes ahead (all inside their refresh margin, none "
    "expired), on a FULL database with a loopback token server of its own. Then this one "
    "process calls `tick(now=start of that minute, limit=1000)` (tick's default 4 worker "
    "threads) until a sweep finds nothing due; the whole loop is timed once (it uses up "
    "the due set, so no warm-up and no memory pass). Provider token requests must equal "
    "the credentials (none refreshed twice), and no grant may be revoked (a replayed "
    "refresh token revokes its grant); the check is under Checks.",
    f"Scale verdict: flat when the large table's p50 is within {FLAT_LIMIT}x of the small's.",
)


def _us(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _table(header: Sequence[str], lines: Iterable[Sequence[str]]) -> list[str]:
    rows = [header, ["---"] * len(header), *lines]
    return ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def _operation_line(row: Row) -> list[str]:
    stats, memory = row.stats, row.memory
    measured = [
        f"{stats.iterations:,}" if stats else "",
        _us(stats.mean_us) if stats else "",
        _us(stats.p50_us) if stats else "",
        _us(stats.p99_us) if stats else "",
        f"{memory.python_peak_kib:,.1f}" if memory else "",
        f"{memory.max_rss_mib:,.0f}" if memory else "",
    ]
    target = row.target.describe() if row.target else ""
    head = [row.label, row.synchronous or "", _count(row.credentials)]
    return [*head, *measured, target, row.verdict(), row.note]


def _ratio_line(ratio: Ratio) -> list[str]:
    subject, reference = ratio.subject.stats, ratio.reference.stats
    return [
        ratio.label,
        ratio.synchronous or "",
        _us(subject.p50_us) if subject else "",
        _us(reference.p50_us) if reference else "",
        "" if ratio.value is None else f"{ratio.value:.2f}x",
        "" if ratio.limit is None else f"≤ {ratio.limit:g}x",
        ratio.verdict(),
    ]


def _scale_line(pair: ScalePair) -> list[str]:
    cells = [pair.label]
    for row in (pair.small, pair.large):
        cells += [_us(row.stats.p50_us), _us(row.stats.p99_us)] if row.stats else ["", ""]
    for metric in ("p50", "p99"):
        ratio = pair.ratio(metric)
        cells.append("" if ratio is None else f"{ratio:.2f}x")
    return [*cells, pair.verdict()]


def _ratio_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _memory_scale_lines(pair: MemoryScale) -> list[list[str]]:
    """Wall time, time per credential and Python peak at both sizes, with their ratios."""
    small, large = pair.small, pair.large

    def per_credential(row: Row) -> float | None:
        if row.stats is None or not row.credentials:
            return None
        return row.stats.p50_us / row.credentials

    def ms(row: Row) -> str:
        return "" if row.stats is None else f"{row.stats.p50_us / 1000:,.0f}"

    def per(row: Row) -> str:
        value = per_credential(row)
        return "" if value is None else f"{value:.1f}"

    def peak(row: Row) -> str:
        return "" if row.memory is None else f"{row.memory.python_peak_kib:,.0f}"

    small_per, large_per = per_credential(small), per_credential(large)
    per_ratio = None if small_per is None or large_per is None else large_per / small_per
    return [
        [
            "credentials",
            _count(small.credentials),
            _count(large.credentials),
            _ratio_cell(pair.size_ratio()),
            "",
        ],
        ["wall time p50 ms", ms(small), ms(large), _ratio_cell(pair.time_ratio()), ""],
        [
            "µs per credential",
            per(small),
            per(large),
            _ratio_cell(per_ratio),
            "" if per_ratio is None else ("flat" if per_ratio <= FLAT_LIMIT else "grows"),
        ],
        [
            "Python peak KiB",
            peak(small),
            peak(large),
            _ratio_cell(pair.memory_ratio()),
            pair.verdict(),
        ],
    ]


def _memory_scale_section(report: Report) -> list[str]:
    lines: list[str] = []
    for pair in report.memory_scale:
        small, large = _count(pair.small.credentials), _count(pair.large.credentials)
        lines += [
            f"## Key rotation: {small} vs {large} credentials (synchronous FULL, "
            f"batch {ROTATION_BATCH})",
            "",
            *_table(
                [pair.label, f"@ {small}", f"@ {large}", "ratio", "verdict"],
                _memory_scale_lines(pair),
            ),
            "",
        ]
    return lines


def _busy_warning(machine: dict[str, Any]) -> str:
    """A warning when other processes loaded the machine during the run."""
    load = machine["load_average"]
    busiest = max(load["start"][0], load["end"][0])
    if busiest <= 0.5 * (machine["cores"] or 1):
        return ""
    return (
        f" Other processes were busy during this run (1-minute load up to {busiest:.1f} on "
        f"{machine['cores']} cores), so absolute times are pessimistic; operations compared "
        "side by side were timed interleaved, so their ratios stay fair."
    )


def _load(averages: Sequence[float]) -> str:
    return " / ".join(f"{value:.2f}" for value in averages)


def _machine_lines(report: Report) -> list[str]:
    machine = report.machine
    libraries = ", ".join(f"{name} {version}" for name, version in machine["libraries"].items())
    sqlite = (
        f"{machine['sqlite']}: WAL, BEGIN IMMEDIATE for writes; synchronous FULL (credman's "
        f"default) and NORMAL as marked per row; files on {machine.get('temp_filesystem', '?')}"
    )
    cpu = f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB memory"
    load = machine["load_average"]
    facts = [
        ("CPU", cpu),
        (
            "load average (1/5/15 min)",
            f"{_load(load['start'])} at start, {_load(load['end'])} at the end",
        ),
        ("OS", machine["os"]),
        ("Python", machine["python"]),
        ("SQLite", sqlite),
        ("PostgreSQL", machine.get("postgresql", "not tried")),
        ("libraries", libraries),
        ("credman commit", machine["commit"]),
    ]
    return _table(["machine", ""], ([name, value] for name, value in facts))


def markdown(report: Report) -> str:
    """The whole report as Markdown."""
    small, large = report.sizes
    when = f"{report.started_at:%Y-%m-%d %H:%M} UTC"
    busy = _busy_warning(report.machine)
    lines = [
        "# credman benchmarks",
        "",
        f"Measured {when}, {report.plan} run, {report.duration_s:,.0f} s. "
        "Targets are issue 9's goals, not assertions." + busy,
        "",
        *_machine_lines(report),
        "",
        "## Operations",
        "",
        *_table(
            [
                "operation",
                "sync",
                "credentials",
                "calls",
                "mean µs",
                "p50 µs",
                "p99 µs",
                "Python peak KiB",
                "max RSS MiB",
                "target",
                "verdict",
                "note",
            ],
            (_operation_line(row) for row in report.rows if row.stage not in HIDDEN),
        ),
        "",
        "## Side by side (ratios of p50, same run)",
        "",
        *_table(
            [
                "comparison",
                "sync",
                "credman p50 µs",
                "reference p50 µs",
                "ratio",
                "target",
                "verdict",
            ],
            map(_ratio_line, report.ratios),
        ),
        "",
        f"## Scale: {small:,} vs {large:,} credentials (synchronous FULL)",
        "",
        *_table(
            [
                "operation",
                f"p50 µs @ {small:,}",
                f"p99 µs @ {small:,}",
                f"p50 µs @ {large:,}",
                f"p99 µs @ {large:,}",
                "p50 ratio",
                "p99 ratio",
                "verdict",
            ],
            map(_scale_line, report.scale),
        ),
        "",
        *_memory_scale_section(report),
        "## Checks",
        "",
        *(f"- {check}" for check in report.checks),
        "",
        "## How this was measured",
        "",
        *(f"- {point}" for point in _HOW),
        "",
    ]
    return "\n".join(lines)


def _row_json(row: Row) -> dict[str, Any]:
    return {**asdict(row), "verdict": row.verdict()}


def _ratio_json(ratio: Ratio) -> dict[str, Any]:
    return {
        "label": ratio.label,
        "synchronous": ratio.synchronous,
        "subject": ratio.subject.key,
        "reference": ratio.reference.key,
        "subject_p50_us": ratio.subject.stats.p50_us if ratio.subject.stats else None,
        "reference_p50_us": ratio.reference.stats.p50_us if ratio.reference.stats else None,
        "ratio": None if ratio.value is None else round(ratio.value, 3),
        "limit": ratio.limit,
        "verdict": ratio.verdict(),
    }


def _scale_json(pair: ScalePair) -> dict[str, Any]:
    ratios = {metric: pair.ratio(metric) for metric in ("p50", "p99")}
    return {
        "label": pair.label,
        "key": pair.small.key,
        "small": _row_json(pair.small),
        "large": _row_json(pair.large),
        "ratio": {k: None if v is None else round(v, 3) for k, v in ratios.items()},
        "verdict": pair.verdict(),
    }


def _memory_scale_json(pair: MemoryScale) -> dict[str, Any]:
    ratios = {
        "credentials": pair.size_ratio(),
        "time_p50": pair.time_ratio(),
        "python_peak": pair.memory_ratio(),
    }
    return {
        "label": pair.label,
        "key": pair.small.key,
        "small": _row_json(pair.small),
        "large": _row_json(pair.large),
        "ratio": {k: None if v is None else round(v, 3) for k, v in ratios.items()},
        "verdict": pair.verdict(),
    }


def to_json(report: Report) -> str:
    """The whole report as JSON."""
    document = {
        "started_at": report.started_at.isoformat(),
        "plan": report.plan,
        "duration_s": report.duration_s,
        "sizes": {"small": report.sizes[0], "large": report.sizes[1]},
        "machine": report.machine,
        "operations": [_row_json(row) for row in report.rows],
        "ratios": [_ratio_json(ratio) for ratio in report.ratios],
        "scale": [_scale_json(pair) for pair in report.scale],
        "memory_scale": [_memory_scale_json(pair) for pair in report.memory_scale],
        "checks": report.checks,
        "method": list(_HOW),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write(path: Path, text: str) -> Path:
    """Replace ``path`` with ``text`` atomically (through ``path.tmp``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path
