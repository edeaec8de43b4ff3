"""The scale run, stage by stage: seed, windows of 1/2/4 ``credman serve``, restart after
downtime, the tick's cost, audit throughput, and the end-of-run checks.

Everything happens in a fresh schema on the PostgreSQL server of
``CREDMAN_TEST_POSTGRES_URL`` and a temporary directory; both are removed at the end, and
every child process is stopped however the run ends.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, create_engine, func, select, text, update

from bench import postgres
from bench.machine import describe
from bench.scale import observe
from bench.scale.children import Child, Children, children, proc_sample
from bench.scale.plan import Plan
from bench.scale.reads import READER, Sampler
from bench.scale.seed import Partition, seed, seed_rate
from credman import ApiKey, CredentialManager, Permission
from credman.access import SYSTEM
from credman.crypto import KeyFileProvider
from credman.egress import EgressPolicy
from credman.storage.repository import CREDENTIALS

__all__ = ["run"]

ADMIN = "admin"
_STOP_GRACE = 300.0
"""A serve process stops after its current tick (up to 1,000 refreshes, a minute or more on a
loaded machine): killing it earlier would interrupt refreshes the provider has already
done, and their retry would replay a spent refresh token."""
_SETTLE = 5.0
"""Dues in a window's last seconds are not judged there (their sweep may run after it)."""


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _url(base: str, name: str) -> str:
    return f"{base}&application_name={name}"


class Run:
    """One scale run's shared state: where things are and what was measured."""

    def __init__(self, plan: Plan, base_url: str, work: Path, kids: Children) -> None:
        self.plan, self.base_url, self.work, self.kids = plan, base_url, work, kids
        self.key_file = work / "credman.key"
        KeyFileProvider(self.key_file).create()
        self.engine: Engine = create_engine(_url(base_url, "bench-harness"))
        self.manager = CredentialManager(
            _url(base_url, "bench-manager"),
            str(self.key_file),
            egress=EgressPolicy(allow_loopback=True),  # the provider farm is on loopback
        )
        self.farm: list[Child] = []
        self.partitions: list[Partition] = []
        self.resource_urls: list[str] = []
        self.results: dict[str, Any] = {"plan": _plan_facts(plan)}

    def close(self) -> None:
        self.manager.close()
        self.engine.dispose()

    # -- set-up -----------------------------------------------------------------------

    def start_farm(self) -> None:
        for number in range(self.plan.farm):
            secret_file = self.work / f"farm-{number}.secret"
            secret_file.write_text(os.urandom(18).hex())
            secret_file.chmod(0o600)
            client_id = f"bench-p{number}"
            argv = [sys.executable, "-m", "bench.scale.farm", client_id, str(secret_file)]
            child = self.kids.start(f"farm-{number}", [*argv, repr(self.plan.lifetime)], talk=True)
            where = child.read_line(timeout=60)
            self.farm.append(child)
            self.resource_urls.append(where["resource_url"])
            self.partitions.append(
                Partition(
                    where["url"],
                    client_id,
                    secret_file.read_text(),
                    self.work / f"farm-{number}.grants",
                )
            )

    def prepare(self) -> None:
        observe.install_claim_log(self.engine)
        self.manager.grant(READER, "bench-*", {Permission.USE}, principal=ADMIN)
        self.manager.grant(READER, "static-*", {Permission.USE}, principal=ADMIN)
        for number in range(self.plan.static_credentials):
            self.manager.store(
                f"static-{number:04d}", ApiKey(key=os.urandom(16).hex()), principal=ADMIN
            )

    def seed(self) -> None:
        rate = seed_rate(self.manager_keyring(), self.partitions[0])
        load = 8e-6 * self.plan.rows  # the farm's grant loading, measured ~5 us a grant
        first_due = datetime.now(UTC) + timedelta(seconds=rate * self.plan.rows * 1.25 + load + 20)
        say(f"seeding {self.plan.rows:,} credentials (~{rate * 1e6:.0f} us each)")
        report = seed(self.engine, self.manager_keyring(), self.plan, self.partitions, first_due)
        for child, part in zip(self.farm, self.partitions, strict=True):
            child.ask({"load": str(part.grants)}, timeout=600)
            part.grants.unlink()
        self.results["seed"] = {
            "rows": report.rows,
            "seconds": round(report.seconds, 1),
            "seal_us_per_credential": round(report.seal_us, 1),
            "first_due": report.first_due.isoformat(),
            "sizes": observe.sizes(self.engine),
        }
        self.first_due = first_due
        say(f"seeded in {report.seconds:.0f} s; first due {first_due:%H:%M:%S}")

    def manager_keyring(self) -> Any:
        return KeyFileProvider(self.key_file).load()

    # -- serve windows ------------------------------------------------------------------

    def serve(self, count: int, label: str) -> list[Child]:
        """Start ``count`` serve processes and wait until each is sweeping."""
        started = []
        for number in range(count):
            env = dict(os.environ)
            env["CREDMAN_DATABASE_URL"] = _url(self.base_url, f"bench-serve-{number}")
            env["CREDMAN_KEY_FILE"] = str(self.key_file)
            env["CREDMAN_EGRESS_ALLOW_LOOPBACK"] = "1"  # the provider farm is on loopback
            argv = [str(Path(sys.executable).parent / "credman"), "serve"]
            argv += ["--interval", str(self.plan.interval)]
            started.append(self.kids.start(f"{label}-serve-{number}", argv, env=env))
        for child in started:
            _wait_for_log(self.kids.logs / f"{child.name}.log", "sweeping every", 120)
        return started

    def window(self, count: int) -> dict[str, Any]:
        """Run ``count`` serve processes for the plan's window; what they did."""
        label = f"window-{count}"
        wait = (self.first_due - datetime.now(UTC)).total_seconds()
        if wait > 0 and count == self.plan.processes[0]:
            say(f"waiting {wait:.0f} s for the first due time")
            time.sleep(wait)
        serving = self.serve(count, label)
        start, before = datetime.now(UTC), self.snapshot(serving)
        say(f"{count} serve process(es) for {self.plan.window:.0f} s")
        sampler = Sampler(self.manager, self._resource_of, self.plan.rows, self.plan.sample_every)
        with sampler as s, _wait_events(self.engine, "bench-serve-%") as waits:
            peak = _watch(serving, self.plan.window)
        end, after = datetime.now(UTC), self.snapshot(serving)
        self.kids.stop(serving, grace=_STOP_GRACE)
        stopped = datetime.now(UTC)
        judged_end = end - timedelta(seconds=_SETTLE)
        with self.engine.connect() as connection:
            lateness = observe.claims_between(connection, start, judged_end)
            events = observe.audit_counts(
                connection, before["sizes"]["audit_rows"], after["sizes"]["audit_rows"]
            )
        by_principal = {
            principal: count
            for (action, outcome, principal), count in events.items()
            if action == "refresh" and outcome == "ok"
        }
        refreshed = by_principal.get(str(SYSTEM), 0)
        lease = {
            "lease_recovered": sum(
                n for (action, _, _), n in events.items() if action == "lease_recovered"
            ),
            "lease_lost": sum(
                n for (action, outcome, _), n in events.items() if outcome == "lease_lost"
            ),
        }
        seconds = (end - start).total_seconds()
        per_process = _per_process(before["procs"], after["procs"], peak)
        serve_cores = sum(p["cpu_cores"] for n, p in per_process.items() if "-serve-" in n)
        farm_cores = sum(p["cpu_cores"] for n, p in per_process.items() if n.startswith("farm"))
        pg_cores = sum(p["cpu_cores"] for n, p in per_process.items() if n.startswith("pg-"))
        return {
            "processes": count,
            "load_average": [round(v, 1) for v in os.getloadavg()],
            "seconds": round(seconds, 1),
            "stop_seconds": round((stopped - end).total_seconds(), 1),
            "refreshes": refreshed,
            "refreshes_by_principal": by_principal,
            "leases": lease,
            "refreshes_per_minute": round(refreshed / seconds * 60),
            "provider": _delta(before["farm"], after["farm"]),
            "lateness": _lateness_facts(lateness),
            "sampled_reads": s.tally.summary(),
            "per_process": per_process,
            "serve_cpu_ms_per_refresh": round(serve_cores * seconds / refreshed * 1000, 1)
            if refreshed
            else None,
            "farm_cpu_ms_per_refresh": round(farm_cores * seconds / refreshed * 1000, 1)
            if refreshed
            else None,
            "postgres_cpu_ms_per_refresh": round(pg_cores * seconds / refreshed * 1000, 1)
            if refreshed
            else None,
            "serve_backends_seen": waits,
            "growth": _growth(before["sizes"], after["sizes"], seconds, refreshed),
        }

    def _resource_of(self, index: int) -> str:
        return self.resource_urls[index % len(self.resource_urls)]

    def snapshot(self, serving: Sequence[Child]) -> dict[str, Any]:
        with self.engine.connect() as connection:
            backends = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'bench-serve-%'")
            ).scalars()
            procs = {f"pg-backend-{pid}": proc_sample(pid) for pid in backends}
        procs |= {c.name: proc_sample(c.pid) for c in [*serving, *self.farm]}
        return {
            "farm": self.farm_stats(),
            "procs": procs,
            "sizes": observe.sizes(self.engine),
        }

    def farm_stats(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for child in self.farm:
            total.update(child.ask({"stats": True}))
        return dict(total)

    # -- restart after downtime --------------------------------------------------------

    def restart(self, count: int) -> dict[str, Any]:
        """Make a share of the rows overdue (a simulated hour down), start, time the catch-up."""
        overdue = self.plan.overdue
        with self.engine.begin() as connection:
            down_at = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
            self._move_due(
                connection,
                overdue,
                lambda: down_at - timedelta(seconds=3600 * random.random()),
            )
            backlog = observe.overdue(connection, down_at)
        say(f"restart: {backlog:,} overdue ({overdue:,} moved an hour back); {count} processes")
        began = time.monotonic()
        serving = self.serve(count, "restart")
        ready = time.monotonic() - began
        cleared = self._until_clear(down_at, limit=self.plan.restart_limit)
        time.sleep(_SETTLE)
        self.kids.stop(serving, grace=_STOP_GRACE)
        with self.engine.connect() as connection:
            claims = connection.execute(
                text(
                    "SELECT credential_id, count(*) FROM bench_claim WHERE kind = 'claim' "
                    "AND due_at <= :down AND at > :down GROUP BY credential_id"
                ),
                {"down": down_at},
            ).all()
            last_done = connection.execute(
                text(
                    "SELECT extract(epoch FROM max(d.at) - :down) FROM bench_claim d "
                    "WHERE d.kind <> 'claim' AND d.at > :down AND EXISTS (SELECT 1 FROM "
                    "bench_claim c WHERE c.kind = 'claim' AND c.credential_id = d.credential_id "
                    "AND c.due_at <= :down AND c.at > :down AND c.n < d.n)"
                ),
                {"down": down_at},
            ).scalar_one()
        handled = Counter(count for _, count in claims)
        return {
            "processes": count,
            "overdue": backlog,
            "moved_back": overdue,
            "startup_seconds": round(ready, 1),
            "seconds_until_none_overdue": None if cleared is None else round(cleared - began, 1),
            "handled": len(claims),
            "handled_once": handled.get(1, 0),
            "handled_more_than_once": sum(v for k, v in handled.items() if k > 1),
            "last_commit_after_restart_s": None
            if last_done is None
            else round(float(last_done) - 0, 1),
        }

    def _move_due(self, connection: Any, count: int, due: Callable[[], datetime]) -> None:
        """Give ``count`` random seeded rows (not mid-refresh) a new due time, as the key
        holder would: each row's MAC is recomputed (a raw UPDATE would make it a forged row
        that credman refuses)."""
        rows = connection.execute(
            select(CREDENTIALS)
            .where(CREDENTIALS.c.id.like("bench-%"), CREDENTIALS.c.state != "REFRESHING")
            .order_by(func.random())
            .limit(count)
            .with_for_update()
        ).all()
        seals = self.manager.keys.seals
        changes = []
        for row in rows:
            columns = dict(row._mapping) | {"next_due_at": due()}
            changes.append(
                {
                    "b_id": columns["id"],
                    "next_due_at": columns["next_due_at"],
                    "record_mac": seals.credential_mac(columns),
                }
            )
        if changes:
            connection.execute(
                update(CREDENTIALS)
                .where(CREDENTIALS.c.id == bindparam("b_id"))
                .values(next_due_at=bindparam("next_due_at"), record_mac=bindparam("record_mac")),
                changes,
            )

    def _until_clear(self, down_at: datetime, limit: float) -> float | None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.engine.connect() as connection:
                if observe.overdue(connection, down_at) == 0:
                    return time.monotonic()
            time.sleep(0.5)
        return None

    # -- the tick's cost ----------------------------------------------------------------

    def tick_cost(self) -> dict[str, Any]:
        """A tick over ``tick_due`` due rows in this process, and the due query's plan."""
        due = self.plan.tick_due
        with self.engine.begin() as connection:
            moment = datetime.now(UTC) - timedelta(seconds=1)
            self._move_due(connection, due, lambda: moment)
        with self.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE credential")
        now = datetime.now(UTC)
        plan, query_ms = observe.explain_due(self.engine, now, 1000)
        started = time.perf_counter()
        report = self.manager.tick(limit=1000, workers=4)
        seconds = time.perf_counter() - started
        _, query_ms_after = observe.explain_due(self.engine, datetime.now(UTC), 1000)
        return {
            "rows": self.plan.rows,
            "due": report.due,
            "refreshed": report.refreshed,
            "skipped": report.skipped,
            "failed": report.failed,
            "tick_seconds": round(seconds, 2),
            "per_due_ms": round(seconds / max(1, report.due) * 1000, 2),
            "due_query_ms": query_ms,
            "due_query_ms_after_tick": query_ms_after,
            "plan": plan,
            "seq_scan": "Seq Scan on credential" in plan,
            "index_scan": "ix_credential_next_due_at" in plan,
        }

    # -- the audit head -----------------------------------------------------------------

    def audit_throughput(self) -> dict[str, Any]:
        """Audited reads (access) and unaudited ones (info) per second, by reader count."""
        readers = []
        for number in range(max(self.plan.readers)):
            argv = [sys.executable, "-m", "bench.scale.reads"]
            argv += [_url(self.base_url, f"bench-reader-{number}"), str(self.key_file)]
            readers.append(self.kids.start(f"reader-{number}", argv, talk=True))
        for reader in readers:
            reader.read_line(timeout=120)
        ids = [f"static-{n:04d}" for n in range(self.plan.static_credentials)]
        out: dict[str, Any] = {}
        for op in ("access", "info"):
            for count in self.plan.readers:
                before = observe.sizes(self.engine)
                result = self._read_together(readers[:count], op, ids)
                after = observe.sizes(self.engine)
                ops = sum(r["ops"] for r in result["readers"])
                audit_bytes = after["bytes"]["audit_event"] - before["bytes"]["audit_event"]
                result["ops"] = ops
                result["ops_per_second"] = round(ops / self.plan.audit_window, 1)
                result["audit_rows"] = after["audit_rows"] - before["audit_rows"]
                result["audit_bytes_per_op"] = round(audit_bytes / ops, 1) if ops else None
                out[f"{op}-{count}"] = result
                say(f"audit: {op} x{count}: {result['ops_per_second']} /s")
        self.kids.stop(readers)
        return out

    def _read_together(self, readers: Sequence[Child], op: str, ids: list[str]) -> dict[str, Any]:
        start_at = time.time() + 1.0
        command = {"run": self.plan.audit_window, "op": op, "ids": ids, "start_at": start_at}
        for reader in readers:
            assert reader.process.stdin is not None
            reader.process.stdin.write(json.dumps(command) + "\n")
            reader.process.stdin.flush()
        with _wait_events(self.engine) as waits:
            answers = [r.read_line(timeout=self.plan.audit_window + 120) for r in readers]
        return {"readers": answers, "wait_events": waits}

    # -- the end ------------------------------------------------------------------------

    def final_checks(self, started: datetime) -> dict[str, Any]:
        """Provider-side counts against history; the audit chain; the farm's revoked grants."""
        provider: Counter[str] = Counter()
        revoked: list[str] = []
        for number, child in enumerate(self.farm):
            path = self.work / f"farm-{number}.dump"
            child.ask({"dump": str(path)}, timeout=600)
            dumped = json.loads(path.read_text())
            provider.update(dumped["counts"])
            revoked += dumped["revoked"]
        with self.engine.connect() as connection:
            recorded = observe.refreshed_counts(connection, started, datetime.now(UTC))
        differ = sorted(
            cid for cid in set(provider) | set(recorded) if provider[cid] != recorded.get(cid, 0)
        )
        report = self.manager.verify_audit()
        return {
            "provider_refreshes": sum(provider.values()),
            "history_refreshes": sum(recorded.values()),
            "credentials_where_provider_and_history_differ": len(differ),
            "examples_differing": differ[:5],
            "revoked_grants": len(revoked),
            "bytes_per_row": _bytes_per_row(observe.sizes(self.engine)),
            "audit_verify": {
                "ok": report.ok,
                "rows_checked": report.rows_checked,
                "problem": report.problem,
                "integrity": list(report.extra.get("integrity", ()))[:5],
            },
            "sizes": observe.sizes(self.engine),
        }


def _bytes_per_row(sizes: dict[str, Any]) -> dict[str, float]:
    """Average bytes (with indexes) of an audit row and of a history row."""
    return {
        "audit_event": round(sizes["bytes"]["audit_event"] / max(1, sizes["audit_rows"]), 1),
        "credential_history": round(
            sizes["bytes"]["credential_history"] / max(1, sizes["history_rows"]), 1
        ),
    }


def _plan_facts(plan: Plan) -> dict[str, Any]:
    return {
        "rows": plan.rows,
        "window_seconds": plan.window,
        "processes": list(plan.processes),
        "due_per_minute": plan.due_per_minute,
        "token_lifetime_seconds": round(plan.lifetime, 1),
        "refresh_margin_seconds": round(plan.margin, 1),
        "farm_processes": plan.farm,
        "interval": plan.interval,
    }


def _wait_for_log(path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{path.name}: no {needle!r} within {timeout:.0f} s")


def _watch(serving: Sequence[Child], seconds: float) -> dict[str, float]:
    """Wait out the window, sampling each process's memory; the peak RSS by name."""
    peak: dict[str, float] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for child in serving:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}")
            sample = proc_sample(child.pid)
            if sample is not None:
                peak[child.name] = max(peak.get(child.name, 0.0), sample.rss_mib)
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
    return peak


def _per_process(before: dict[str, Any], after: dict[str, Any], peak: dict[str, float]) -> Any:
    out = {}
    for name, first in before.items():
        last = after.get(name)
        if first is None or last is None:
            continue
        elapsed = max(1e-9, last.at - first.at)
        cores = (last.cpu_seconds - first.cpu_seconds) / elapsed
        waiting = (last.runqueue_seconds - first.runqueue_seconds) / elapsed
        out[name] = {
            "cpu_cores": round(cores, 3),
            "runqueue_cores": round(waiting, 3),
            "rss_mib": round(last.rss_mib, 1),
            "peak_rss_mib": round(peak.get(name, last.rss_mib), 1),
        }
    return out


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}


def _growth(before: dict[str, Any], after: dict[str, Any], seconds: float, refreshes: int) -> Any:
    out: dict[str, Any] = {}
    for table in ("audit_event", "credential_history", "credential"):
        grown = after["bytes"][table] - before["bytes"][table]
        out[table] = {
            "bytes": grown,
            "mib_per_hour": round(grown / seconds * 3600 / 2**20, 1),
            "bytes_per_refresh": round(grown / refreshes, 1) if refreshes else None,
        }
    out["audit_rows_per_refresh"] = (
        round((after["audit_rows"] - before["audit_rows"]) / refreshes, 2) if refreshes else None
    )
    out["history_rows_per_refresh"] = (
        round((after["history_rows"] - before["history_rows"]) / refreshes, 2)
        if refreshes
        else None
    )
    return out


def _lateness_facts(lateness: observe.Lateness) -> dict[str, Any]:
    return {
        "dues_judged": lateness.claims,
        "claim_p50_s": lateness.p50,
        "claim_p99_s": lateness.p99,
        "claim_max_s": lateness.max,
        "commit_p50_s": lateness.done_p50,
        "commit_p99_s": lateness.done_p99,
        "commit_max_s": lateness.done_max,
        "outcomes": dict(lateness.outcomes),
        "claimed_twice_same_due": lateness.twice,
        "unclaimed_at_end": lateness.unclaimed,
    }


@contextmanager
def _wait_events(engine: Engine, who: str = "bench-reader-%") -> Iterator[dict[str, int]]:
    """What the backends of ``who`` (application names) were doing, sampled every 50 ms."""
    seen: Counter[str] = Counter()
    stop = threading.Event()

    def sample() -> None:
        query = text(
            "SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type, 'CPU') || ':' "
            "|| coalesce(wait_event, '-') ELSE state END "
            "FROM pg_stat_activity WHERE application_name LIKE :who AND state <> 'idle'"
        )
        with engine.connect() as connection:
            while not stop.wait(0.05):
                seen.update(connection.execute(query, {"who": who}).scalars())
                connection.rollback()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    waits: dict[str, int] = {}
    try:
        yield waits
    finally:
        stop.set()
        thread.join(timeout=10)
        waits.update(seen.most_common(8))


def run(plan: Plan, record: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Every stage of ``plan``; ``record`` gets the results after each stage."""
    problem, version = postgres.unreachable()
    if problem:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory(prefix="credman-scale-") as folder:
        work = Path(folder)
        with postgres.fresh_schema() as (schema, base_url), children(work) as kids:
            say(f"schema {schema}, work in {work}")
            current = Run(plan, base_url, work, kids)
            results = current.results
            results["machine"] = describe() | {"postgresql": version}
            results["started"] = datetime.now(UTC).isoformat(timespec="seconds")
            started = datetime.now(UTC)
            try:
                _stages(current, plan, record, started)
            finally:
                kids.stop_all()
                current.close()
                _keep_logs(work)
            results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
            record(results)
            return results


def _stages(current: Run, plan: Plan, record: Callable[[dict[str, Any]], None], t0: Any) -> None:
    results = current.results
    current.start_farm()
    current.prepare()
    current.seed()
    record(results)
    results["windows"] = []
    for count in plan.processes:
        results["windows"].append(current.window(count))
        record(results)
    if "restart" not in plan.skip:
        results["restart"] = current.restart(max(plan.processes))
        record(results)
    results["tick"] = current.tick_cost()
    record(results)
    if "audit" not in plan.skip:
        results["audit"] = current.audit_throughput()
        record(results)
    results["checks"] = current.final_checks(t0)


def _keep_logs(work: Path) -> None:
    """Copy the children's logs' error lines to the results (the folder is removed)."""
    target = Path(__file__).resolve().parent.parent / "results" / "scale-logs.tmp"
    lines = []
    for log in sorted(work.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "ERROR" in line or "Traceback" in line or "WARNING" in line:
                lines.append(f"{log.name}: {line}")
    target.write_text("\n".join(lines[-500:]) + "\n")
