"""``python -m bench.service``: the service and its client, measured (``make bench-service``).

In a temporary directory (removed at the end): a key file, a test CA and a certificate for
127.0.0.1 (trustme), a SQLite database with one API key and a principal allowed to use it,
and ``credman serve --http`` processes on loopback TLS. Measured:

- the client's cached ``access()`` (a hit: no I/O);
- the uncached remote ``access()`` (``cache=False``, one keep-alive TLS connection), timed
  interleaved with the in-process ``mgr.access()`` on the same database;
- principal-token verification (``mgr.authenticate``) per request;
- throughput of 16 concurrent uncached clients (a load process of their own) against one
  server process and against two, on PostgreSQL when it answers (else SQLite).

Results go to ``bench/results/service.md`` and ``service.json``. The whole run takes about
a minute; ``--quick`` shortens every stage for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import trustme

from bench import postgres
from bench.machine import describe
from bench.measure import Budget, Stats, time_calls, time_interleaved
from credman import ApiKey, CredentialManager, Permission
from credman.client import Client
from credman.crypto import KeyFileProvider

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN, COMPONENT, CREDENTIAL = "admin", "bench-component", "bench-api"


@dataclass(frozen=True)
class Plan:
    """How long each stage runs."""

    cached: Budget
    remote: Budget
    verify: Budget
    load_seconds: float
    clients: int = 16


FULL = Plan(Budget(50_000, 5_000, 0), Budget(2_000, 200, 0), Budget(5_000, 500, 0), 10.0)
QUICK = Plan(Budget(2_000, 200, 0), Budget(100, 20, 0), Budget(200, 20, 0), 2.0)


@dataclass(frozen=True)
class Site:
    """What a server process needs: database, key file, TLS files."""

    database_url: str
    key_file: Path
    ca_file: Path
    cert_file: Path
    key_pem: Path


def _fsync_ms(directory: Path, samples: int = 50) -> dict[str, float]:
    """How long an fsync takes on this disk now (each commit waits for one or more)."""
    path = directory / "fsync-probe"
    times = []
    with path.open("wb") as handle:
        for _ in range(samples):
            handle.write(b"x" * 128)
            handle.flush()
            start = time.perf_counter()
            os.fsync(handle.fileno())
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50": round(times[samples // 2], 2), "p90": round(times[samples * 9 // 10], 2)}


def _tls(directory: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    files = tuple(directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(files[0]))
    issued.cert_chain_pems[0].write_to_path(str(files[1]))
    issued.private_key_pem.write_to_path(str(files[2]))
    return files  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, ca_file: Path, process: subprocess.Popen[bytes]) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"credman serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", verify=context, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("credman serve did not become ready in 60 s")


@contextmanager
def _server(site: Site) -> Iterator[str]:
    """One ``credman serve --http`` process on loopback TLS, no scheduler; its URL."""
    port = _free_port()
    env = os.environ | {
        "CREDMAN_DATABASE_URL": site.database_url,
        "CREDMAN_KEY_FILE": str(site.key_file),
    }
    command = [
        *(str(Path(sys.executable).parent / "credman"), "serve", "--no-scheduler"),
        *("--http", f"127.0.0.1:{port}"),
        *("--tls-cert", str(site.cert_file), "--tls-key", str(site.key_pem)),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"https://127.0.0.1:{port}"
    try:
        _wait_ready(url, site.ca_file, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _seed(manager: CredentialManager) -> str:
    """One API key, one principal allowed to use it; the principal's token."""
    manager.store(CREDENTIAL, ApiKey(key="bench-key-value"), principal=ADMIN)
    _, token = manager.add_principal(COMPONENT, principal=ADMIN)
    manager.grant(COMPONENT, "bench-*", {Permission.USE}, principal=ADMIN)
    return token


def _load(urls: list[str], token: str, site: Site, plan: Plan) -> dict[str, float]:
    command = [
        *(sys.executable, "-m", "bench.service_load", ",".join(urls)),
        *(str(plan.load_seconds), str(plan.clients), CREDENTIAL),
    ]
    env = os.environ | {"CREDMAN_TOKEN": token, "CREDMAN_CA": str(site.ca_file)}
    done = subprocess.run(command, env=env, capture_output=True, check=True, timeout=300)
    return dict(json.loads(done.stdout))


def _in_process(manager: CredentialManager) -> Callable[[], object]:
    """``mgr.access()`` where the facade has it, else ``mgr.get()`` (the same audited read)."""
    access = getattr(manager, "access", None) or manager.get
    return lambda: access(CREDENTIAL, principal=COMPONENT)


def _latency(site: Site, plan: Plan) -> dict[str, Stats]:
    with CredentialManager(site.database_url, str(site.key_file)) as manager:
        token = _seed(manager)
        with _server(site) as url, ExitStack() as stack:
            cached = stack.enter_context(Client(url, token=token, verify=site.ca_file))
            remote = stack.enter_context(Client(url, token=token, verify=site.ca_file, cache=False))
            cached.access(CREDENTIAL)
            hit = time_calls(lambda: cached.access(CREDENTIAL), plan.cached)
            uncached, local = time_interleaved(
                [
                    lambda: remote.access(CREDENTIAL),
                    _in_process(manager),
                ],
                plan.remote,
            )
        verify = time_calls(lambda: manager.authenticate(token, source="127.0.0.1"), plan.verify)
    return {"cached": hit, "remote": uncached, "in_process": local, "verify": verify}


def _throughput(site: Site, plan: Plan) -> dict[str, dict[str, float]]:
    with CredentialManager(site.database_url, str(site.key_file)) as manager:
        token = _seed(manager)
    results = {}
    with _server(site) as first:
        results["one_process"] = _load([first], token, site, plan)
        with _server(site) as second:
            results["two_processes"] = _load([first, second], token, site, plan)
    return results


def _machine(facts: object) -> str:
    if not isinstance(facts, dict):
        return str(facts)
    return ", ".join(f"{k}: {v}" for k, v in facts.items() if not isinstance(v, dict))


def _markdown(report: dict[str, object]) -> str:
    latency: dict[str, dict[str, float]] = report["latency"]  # type: ignore[assignment]
    load: dict[str, dict[str, float]] = report["throughput"]  # type: ignore[assignment]
    rows = [
        ("client cached `access()` (hit, no I/O)", "cached", "≤ 0.05 ms"),
        ("remote uncached `access()`, loopback TLS keep-alive", "remote", "≤ 3 ms"),
        ("in-process `mgr.access()` (same database)", "in_process", ""),
        ("principal-token verification (`mgr.authenticate`)", "verify", ""),
    ]
    lines = [
        f"# Service benchmark, {report['date']}",
        "",
        f"Machine: {_machine(report['machine'])}",
        "",
        f"At the start: 1-minute load average {report['load_average_1min']} (2 cores, shared), "
        f"fsync p50 / p90 {report['fsync_ms']['p50']} / {report['fsync_ms']['p90']} ms "
        "(every audited access commits).",
        "",
        "| operation | p50 | p99 | goal (p99) |",
        "|---|---|---|---|",
    ]
    for label, key, goal in rows:
        stats = latency[key]
        lines.append(
            f"| {label} | {stats['p50_us'] / 1000:.4f} ms | {stats['p99_us'] / 1000:.4f} ms "
            f"| {goal} |"
        )
    lines += [
        "",
        f"Throughput, {report['clients']} concurrent uncached clients "
        f"({report['load_seconds']:g} s, database: {report['throughput_engine']}):",
        "",
        "| server processes | requests/s | p50 | p99 | errors |",
        "|---|---|---|---|---|",
    ]
    for label, key in (("1", "one_process"), ("2", "two_processes")):
        row = load[key]
        lines.append(
            f"| {label} | {row['per_second']:.0f} | {row['p50_us'] / 1000:.2f} ms "
            f"| {row['p99_us'] / 1000:.2f} ms | {row['errors']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def run(plan: Plan) -> dict[str, object]:
    """Every stage, in a temporary directory; the report as a dictionary."""
    with tempfile.TemporaryDirectory(prefix="credman-bench-service-") as scratch:
        directory = Path(scratch)
        key_file = directory / "credman.key"
        KeyFileProvider(key_file).create()
        ca_file, cert_file, key_pem = _tls(directory)
        sqlite = Site(f"sqlite:///{directory / 'bench.db'}", key_file, ca_file, cert_file, key_pem)
        fsync = _fsync_ms(directory)
        load_average = os.getloadavg()[0]
        latency = _latency(sqlite, plan)
        problem, version = postgres.unreachable()
        with ExitStack() as stack:
            if problem is None:
                _, url = stack.enter_context(postgres.fresh_schema())
                shared = Site(url, key_file, ca_file, cert_file, key_pem)
                engine = f"PostgreSQL {version}"
            else:
                shared = Site(
                    f"sqlite:///{directory / 'load.db'}", key_file, ca_file, cert_file, key_pem
                )
                engine = f"SQLite ({problem})"
            throughput = _throughput(shared, plan)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": describe(),
        "clients": plan.clients,
        "load_seconds": plan.load_seconds,
        "throughput_engine": engine,
        "fsync_ms": fsync,
        "load_average_1min": round(load_average, 1),
        "latency": {name: asdict(stats) for name, stats in latency.items()},
        "throughput": throughput,
    }


def main() -> int:
    """Run the benchmark and write bench/results/service.{md,json}."""
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    quick = parser.parse_args().quick
    report = run(QUICK if quick else FULL)
    name = "service-quick" if quick else "service"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = _markdown(report)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
