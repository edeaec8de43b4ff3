"""The scale run as Markdown (and JSON): every figure, with the machine and the goals."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["markdown", "to_json"]

GOALS = {
    "refreshes_per_minute_4": 10_000,
    "lateness_p99_s": 5.0,
    "tick_flat_ratio": 1.25,
}


def to_json(results: dict[str, Any]) -> str:
    return json.dumps(results, indent=2, default=str) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The report a reader compares runs with."""
    plan, machine = results["plan"], results.get("machine", {})
    out = [
        f"# credman at scale: {plan['rows']:,} OAuth2 credentials on PostgreSQL",
        "",
        f"Run {results.get('started', '?')} to {results.get('finished', 'unfinished')} UTC on "
        f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{machine.get('memory_gib', '?')} GiB RAM, PostgreSQL {machine.get('postgresql', '?')}, "
        f"{machine.get('python', '?')}, commit {machine.get('commit', '?')}. "
        "The machine is shared with other work (load was not controlled).",
        "",
        f"Plan: {plan['rows']:,} rows, {plan['due_per_minute']:,} due a minute "
        f"(token lifetime {plan['token_lifetime_seconds']} s, refreshed "
        f"{plan['refresh_margin_seconds']} s before expiry + up to 20 % jitter), "
        f"windows of {plan['window_seconds']:.0f} s with {plan['processes']} "
        f"`credman serve --interval {plan['interval']:g}` processes, "
        f"{plan['farm_processes']} provider farm processes.",
        "",
    ]
    out += _seed(results)
    out += _windows(results)
    out += _restart(results)
    out += _tick(results)
    out += _audit(results)
    out += _checks(results)
    return "\n".join(out) + "\n"


def _seed(results: dict[str, Any]) -> list[str]:
    seed = results.get("seed")
    if not seed:
        return []
    sizes = seed["sizes"]
    return [
        "## Seed",
        "",
        f"{seed['rows']:,} credentials sealed for real and copied in {seed['seconds']} s "
        f"({seed['seal_us_per_credential']} us of sealing each); schema "
        f"{sizes['schema_bytes'] / 2**20:,.1f} MiB "
        f"(credential {sizes['bytes']['credential'] / 2**20:,.1f} MiB).",
        "",
    ]


def _windows(results: dict[str, Any]) -> list[str]:
    windows = results.get("windows") or []
    if not windows:
        return []
    rows = []
    for w in windows:
        late, reads, provider = w["lateness"], w["sampled_reads"], w["provider"]
        serve = [p for name, p in w["per_process"].items() if "-serve-" in name]
        # PostgreSQL backends are summed in the CPU-per-refresh line, not listed one by one
        leases = w.get("leases", {})
        rows.append(
            [
                w["processes"],
                w["seconds"],
                w["refreshes_per_minute"],
                late["claim_p50_s"],
                late["claim_p99_s"],
                late["claim_max_s"],
                late["commit_p99_s"],
                late["claimed_twice_same_due"],
                f"{leases.get('lease_recovered', 0)}/{leases.get('lease_lost', 0)}",
                late["unclaimed_at_end"],
                provider.get("revoked", 0),
                f"{reads['expired_handed_out']}/{reads['reads']}",
                reads["read_ms_p50"],
                reads["read_ms_p99"],
                " ".join(f"{p['cpu_cores']:.2f}" for p in serve),
                " ".join(f"{p.get('runqueue_cores', 0):.2f}" for p in serve),
                " ".join(f"{p['peak_rss_mib']:.0f}" for p in serve),
            ]
        )
    loads = ", ".join(f"{w['processes']}: {w['load_average'][0]}" for w in windows)
    out = ["## Serve windows", "", f"1-minute load average at each window's end ({loads}).", ""]
    out += _table(
        [
            "processes",
            "s",
            "refreshes/min",
            "late p50 s",
            "late p99 s",
            "late max s",
            "commit p99 s",
            "twice",
            "leases recovered/lost",
            "unclaimed",
            "revoked",
            "expired/reads",
            "read p50 ms",
            "read p99 ms",
            "CPU cores each",
            "waiting for CPU each",
            "peak RSS MiB each",
        ],
        rows,
    )
    for w in windows:
        out += [
            "",
            f"{w['processes']} process(es): {_fmt(w.get('serve_cpu_ms_per_refresh'))} ms of "
            f"serve CPU, {_fmt(w.get('postgres_cpu_ms_per_refresh'))} ms of their PostgreSQL "
            f"backends' CPU and {_fmt(w.get('farm_cpu_ms_per_refresh'))} ms of provider CPU "
            "per refresh.",
        ]
        seen = w.get("serve_backends_seen") or {}
        total = sum(seen.values()) or 1
        shares = ", ".join(f"{k} {v / total:.0%}" for k, v in seen.items())
        out += ["", f"{w['processes']} process(es), their PostgreSQL backends: {shares}."]
    out += [
        "",
        "Refreshes a minute count the sweep's (the scheduler principal's) refreshes only; "
        "a sampled read of a due credential refreshes it itself and is not counted. "
        "Lateness is claim time minus the due time the claim replaced, over dues inside the "
        "window (its last 5 s excluded); commit is when the new token was stored. `twice`: "
        "credentials claimed twice for one due time; `revoked`: grants the provider revoked "
        "(a replayed refresh token); `expired/reads`: sampled reads whose token the provider "
        "(or, for seeded tokens, the seed's expiry) says was dead; `leases recovered/lost`: "
        "claims another process took back as stale / refreshes whose commit found the lease "
        "gone (each is a refresh token presented twice if the first call reached the "
        "provider); `waiting for CPU`: time "
        "its threads were runnable but not running (/proc schedstat), in cores.",
        "",
    ]
    growth = [
        [
            w["processes"],
            w["growth"]["audit_event"]["mib_per_hour"],
            w["growth"]["credential_history"]["mib_per_hour"],
            w["growth"]["audit_event"]["bytes_per_refresh"],
            w["growth"]["credential_history"]["bytes_per_refresh"],
            w["growth"]["audit_rows_per_refresh"],
            w["growth"]["history_rows_per_refresh"],
        ]
        for w in windows
    ]
    out += ["Growth while serving:", ""]
    out += _table(
        [
            "processes",
            "audit MiB/h",
            "history MiB/h",
            "audit B/refresh",
            "history B/refresh",
            "audit rows/refresh",
            "history rows/refresh",
        ],
        growth,
    )
    farm = [
        [name, p["cpu_cores"], p["peak_rss_mib"]]
        for w in windows[-1:]
        for name, p in w["per_process"].items()
        if name.startswith("farm")
    ]
    out += ["", "Provider farm (last window):", ""]
    out += _table(["process", "CPU cores", "RSS MiB"], farm)
    out.append("")
    return out


def _restart(results: dict[str, Any]) -> list[str]:
    r = results.get("restart")
    if not r:
        return []
    return [
        "## Restart after downtime",
        "",
        f"{r['overdue']:,} credentials overdue ({r['moved_back']:,} moved up to an hour back, "
        f"the rest fell due while stopped); {r['processes']} processes started "
        f"({r['startup_seconds']} s until all were sweeping); nothing overdue after "
        f"{_fmt(r['seconds_until_none_overdue'])} s; last overdue refresh committed "
        f"{_fmt(r['last_commit_after_restart_s'])} s after the downtime began. Handled: "
        f"{r['handled']:,}, once each: {r['handled_once']:,}, more than once: "
        f"{r['handled_more_than_once']}.",
        "",
    ]


def _tick(results: dict[str, Any]) -> list[str]:
    t = results.get("tick")
    if not t:
        return []
    return [
        "## One tick and the due query",
        "",
        f"A tick in the harness over {t['due']:,} due rows: {t['tick_seconds']} s "
        f"({t['per_due_ms']} ms a due row; refreshed {t['refreshed']:,}, skipped "
        f"{t['skipped']:,}, failed {t['failed']:,}). The due query took {t['due_query_ms']} ms "
        f"with {t['due']:,} due ({t['due_query_ms_after_tick']} ms right after the tick); "
        f"index scan on next_due_at: {t['index_scan']}, sequential scan: {t['seq_scan']}.",
        "",
        "```",
        t["plan"],
        "```",
        "",
    ]


def _audit(results: dict[str, Any]) -> list[str]:
    audit = results.get("audit")
    if not audit:
        return []
    rows = [
        [
            name,
            a["ops_per_second"],
            " ".join(str(r["ms_p50"]) for r in a["readers"]),
            " ".join(str(r["ms_p99"]) for r in a["readers"]),
            a["audit_bytes_per_op"],
            ", ".join(f"{k} {v}" for k, v in list(a["wait_events"].items())[:4]),
        ]
        for name, a in audit.items()
    ]
    out = ["## Audited operations against process count", ""]
    out += _table(
        ["op-readers", "ops/s", "p50 ms each", "p99 ms each", "audit B/op", "backends seen"],
        rows,
    )
    out += [
        "",
        "`access` is audited (it locks the audit head; in runs before the new layout the "
        "readers called `get`, the same audited read); `info` is not. `backends seen`: the "
        "readers' PostgreSQL backends sampled every 50 ms (CPU = running, Lock:* = waiting "
        "for a lock such as the audit head's row, IO:WALSync = commit flush, `idle in "
        "transaction` = waiting for the Python process in the middle of a transaction, "
        "holding its locks).",
        "",
    ]
    return out


def _checks(results: dict[str, Any]) -> list[str]:
    c = results.get("checks")
    if not c:
        return []
    return [
        "## End-of-run checks",
        "",
        f"Provider refreshes {c['provider_refreshes']:,}, refreshes in history "
        f"{c['history_refreshes']:,}, credentials where they differ: "
        f"{c['credentials_where_provider_and_history_differ']}; grants revoked at the "
        f"provider: {c['revoked_grants']}; audit chain verified: {c['audit_verify']['ok']} "
        f"({c['audit_verify']['rows_checked']:,} rows); schema size at the end "
        f"{c['sizes']['schema_bytes'] / 2**20:,.1f} MiB; an audit row takes "
        f"{c['bytes_per_row']['audit_event']} bytes and a history row "
        f"{c['bytes_per_row']['credential_history']} bytes on average (with indexes).",
        "",
    ]
