"""``credman serve``: the scheduler daemon that keeps tokens fresh, and the HTTP service.

With ``--http``, ``--uds`` or ``--config`` it runs :func:`credman.server.serve` (uvicorn and
the sweep in one process, see docs/server.md); without them, the scheduler alone.
It says what it does when it starts (database without its password, how many credentials,
the next due time) and then one summary line per ``--summary-every`` seconds. SIGTERM and
SIGINT always end it: the first lets the refreshes in flight finish and starts no more (at
most ``--grace`` seconds); a second one, or the grace running out, ends the process at once.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from loguru import logger

from credman.audit_export import check_forwarding, check_head_export
from credman.cli.context import open_manager, operator_principal, options
from credman.cli.output import ago, when
from credman.config import Settings
from credman.errors import CredentialError, CredentialValidationError
from credman.logs import configure_logging
from credman.manager import CredentialManager

__all__ = ["register"]

MAX_INTERVAL = 86_400.0
DEFAULT_INTERVAL = 30.0
MAX_WORKERS = 64

SIGNAL_POLL = 0.5
"""Seconds the main thread waits at a time. Python runs signal handlers in the main thread
only, and a signal the kernel delivers to another thread does not wake a main thread
blocked on a lock: without a short wait, a SIGTERM could go unnoticed for a whole summary
interval."""


def _finite(value: float) -> float:
    """Ranges let NaN through (every comparison with it is false): refuse it here."""
    if not math.isfinite(value):
        raise typer.BadParameter("must be a finite number of seconds")
    return value


def serve(
    ctx: typer.Context,
    interval: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            callback=_finite,
            min=0.1,
            max=MAX_INTERVAL,
            help="Seconds between sweeps (0.1 to 86400).",
        ),
    ] = DEFAULT_INTERVAL,
    workers: Annotated[
        int,
        typer.Option(metavar="N", min=1, max=MAX_WORKERS, help="Refreshes in parallel (1-64)."),
    ] = 4,
    summary_every: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            callback=_finite,
            min=1.0,
            max=MAX_INTERVAL,
            help="Seconds between summary lines.",
        ),
    ] = 300.0,
    grace: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            callback=_finite,
            min=0.0,
            max=600.0,
            help="How long a stop waits for a sweep.",
        ),
    ] = 10.0,
    once: Annotated[bool, typer.Option("--once", help="Sweep once and exit.")] = False,
    http: Annotated[
        str | None, typer.Option(metavar="HOST:PORT", help="Serve the HTTP API here.")
    ] = None,
    tls_cert: Annotated[str | None, typer.Option(metavar="PEM", help="TLS certificate.")] = None,
    tls_key: Annotated[str | None, typer.Option(metavar="PEM", help="TLS private key.")] = None,
    uds: Annotated[str | None, typer.Option(metavar="PATH", help="Serve on a Unix socket.")] = None,
    config: Annotated[
        Path | None, typer.Option(metavar="TOML", help="Service configuration file.")
    ] = None,
    no_scheduler: Annotated[
        bool, typer.Option("--no-scheduler", help="API only: no sweep in this process.")
    ] = False,
) -> None:
    """Run until SIGINT/SIGTERM: the sweep and, with --http/--uds/--config, the HTTP API."""
    from credman.scheduler import CredentialScheduler

    verbose = options(ctx).verbose
    configure_logging(level="DEBUG" if verbose else "INFO", source=verbose)
    stop = threading.Event()
    _on_stop_signals(stop)
    if not once and (http or uds or config or no_scheduler or tls_cert or tls_key):
        flags: dict[str, Any] = {"http": http, "tls_cert": tls_cert, "tls_key": tls_key}
        flags["uds"] = uds
        flags["scheduler"] = False if no_scheduler else None
        flags["interval"] = None if interval == DEFAULT_INTERVAL else interval
        raise typer.Exit(_serve_http(ctx, config, flags, workers, stop))
    with open_manager(ctx) as manager:
        scheduler = CredentialScheduler(manager, interval=interval, workers=workers)
        _announce(manager, options(ctx).principal, interval, workers)
        if once:
            report = scheduler.sweep()
            logger.info("credman serve: swept once: {}", _report(report))
            return
        exporters = [_head_exporter(manager, os.environ), _forwarder(manager, os.environ)]
        running = [exporter for exporter in exporters if exporter is not None]
        for exporter in running:
            exporter.start()
        scheduler.start()
        summary_at = time.monotonic() + summary_every
        while not stop.wait(SIGNAL_POLL):
            if time.monotonic() >= summary_at:
                summary_at += summary_every
                logger.info(
                    "credman serve: {}", _summary(manager, options(ctx).principal, scheduler)
                )
        logger.info("credman serve: stopping (waiting up to {:g} s for a sweep)", grace)
        _shutdown(scheduler, grace)
        for exporter in running:
            exporter.stop(grace)
    logger.info("credman serve: stopped")


def _seconds(env: Mapping[str, str], variable: str, default: float, name: str) -> float:
    try:
        return float(env.get(variable) or default)
    except ValueError:
        raise CredentialValidationError(
            f"{name}: not a number of seconds", fields=(name,)
        ) from None


def _forwarder(manager: CredentialManager, env: Mapping[str, str]) -> Any:
    """The forwarder of new audit rows CREDMAN_AUDIT_FORWARD_* ask for (None: not asked)."""
    file = env.get("CREDMAN_AUDIT_FORWARD_FILE") or None
    syslog = env.get("CREDMAN_AUDIT_FORWARD_SYSLOG") or None
    if file is None and syslog is None:
        return None
    interval = _seconds(env, "CREDMAN_AUDIT_FORWARD_INTERVAL", 5.0, "forward_interval")
    check_forwarding(file, syslog, interval)
    logger.info(
        "credman serve: forwarding new audit rows every {:g} s to {}",
        interval,
        file or f"syslog {syslog}",
    )
    return manager.audit_forwarder(file=file, syslog=syslog, interval=interval)


def _head_exporter(manager: CredentialManager, env: Mapping[str, str]) -> Any:
    """The signed-head exporter CREDMAN_AUDIT_HEAD_* ask for (None: not configured); the
    same settings as ``[audit]`` of the service's configuration file."""
    file = env.get("CREDMAN_AUDIT_HEAD_FILE") or None
    url = env.get("CREDMAN_AUDIT_HEAD_WEBHOOK_URL") or None
    if file is None and url is None:
        return None
    interval = _seconds(env, "CREDMAN_AUDIT_HEAD_INTERVAL", 300.0, "head_interval")
    check_head_export(file, url, interval)
    secret = env.get("CREDMAN_WEBHOOK_SECRET") or None
    secret_file = env.get("CREDMAN_WEBHOOK_SECRET_FILE")
    if secret_file:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            raise CredentialValidationError(
                f"webhook_secret_file: cannot read {secret_file}", fields=("webhook_secret_file",)
            ) from None
    logger.info(
        "credman serve: exporting signed audit heads every {:g} s to {}",
        interval,
        " and ".join(x for x in (file, url) if x),
    )
    return manager.audit_head_exporter(
        file=file,
        webhook_url=url,
        webhook_secret=None if secret is None else secret.encode(),
        interval=interval,
        signing_key=env.get("CREDMAN_AUDIT_HEAD_SIGNING_KEY") or None,
    )


def _serve_http(
    ctx: typer.Context,
    config: Path | None,
    flags: dict[str, Any],
    workers: int,
    stop: threading.Event,
) -> int:
    """The HTTP service: settings from the file, CREDMAN_* and the flags; one-line errors."""
    try:
        from credman.server import load_settings
        from credman.server import serve as run_service
    except ImportError:
        raise CredentialError(
            "the HTTP service needs the 'server' extra: pip install 'credman[server]'"
        ) from None

    settings = load_settings(config, **flags)
    given = options(ctx)
    defaults = Settings.from_env(database_url=given.database_url, key_file=given.key_file)

    def make_manager(**overrides: Any) -> CredentialManager:
        overrides.setdefault("admins", (*defaults.admins, operator_principal()))
        return CredentialManager(
            given.database_url, given.key_file, migrate_schema=False, **overrides
        )

    return run_service(settings, make_manager, workers=workers, stop=stop)


def _on_stop_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop``; a second one ends the process at once."""

    def handle(number: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            os._exit(128 + number)  # asked twice: do not wait any longer
        stop.set()

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, handle)


def _shutdown(scheduler: object, grace: float) -> None:
    """Stop the scheduler, waiting at most ``grace`` seconds for a running sweep."""
    done = threading.Thread(target=scheduler.shutdown, daemon=True)  # type: ignore[attr-defined]
    done.start()
    done.join(grace)
    if done.is_alive():
        logger.warning("credman serve: a sweep did not finish within {:g} s; exiting", grace)
        os._exit(1)


def _announce(manager: CredentialManager, principal: str, interval: float, workers: int) -> None:
    counts = Counter(info.state.value for info in manager.list(principal=principal))
    states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())) or "none"
    due = manager.next_wakeup()
    logger.info(
        "credman serve: pid {}, database {}, {} credentials ({}), next due {}, "
        "sweeping every {:g} s with {} workers; no HTTP listener (the scheduler only)",
        os.getpid(),
        manager.database_url,
        sum(counts.values()),
        states,
        f"{when(due)} ({ago(due)})" if due else "never",
        interval,
        workers,
    )


def _summary(manager: CredentialManager, principal: str, scheduler: object) -> str:
    counts = Counter(info.state.value for info in manager.list(principal=principal))
    due = manager.next_wakeup()
    sweeps = getattr(scheduler, "sweeps", 0)
    last = _report(getattr(scheduler, "last_report", None))
    states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())) or "none"
    return (
        f"{datetime.now(UTC):%H:%M:%S}: {sweeps} sweeps, last: {last}; credentials: {states}; "
        f"next due {ago(due) if due else 'never'}"
    )


def _report(report: object) -> str:
    if report is None:
        return "nothing yet"
    names = ("due", "refreshed", "expired", "failed", "skipped")
    return ", ".join(f"{getattr(report, name)} {name}" for name in names)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command()(serve)
