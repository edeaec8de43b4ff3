"""``credman serve``: uvicorn (HTTPS or a Unix socket) and the APScheduler sweep, one process.

On SIGTERM or SIGINT uvicorn stops accepting, lets in-flight requests finish (up to
``graceful_timeout`` seconds; each is one database transaction, so one cut short rolls
back whole), then the scheduler finishes a running sweep and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from loguru import logger

from credman.manager import CredentialManager
from credman.notify import WebhookNotifier
from credman.server.app import create_app
from credman.server.settings import ServerSettings

__all__ = ["serve"]

GRACEFUL_TIMEOUT = 20


def serve(
    settings: ServerSettings,
    make_manager: Callable[..., CredentialManager],
    *,
    workers: int = 4,
    ready: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; ``make_manager(**options)`` builds the manager (0 on exit).

    The manager gets the configured admins and, with a webhook URL, the webhook notifier.
    ``stop`` is an event the caller's own early signal handlers set (so a signal that
    arrives while the process is still starting is not lost); one is made if not given.
    """
    stop = stop or _stop_on_signals()
    settings = settings.validated()
    options: dict[str, Any] = {}
    if settings.admins is not None:
        options["admins"] = settings.admins
    if settings.webhook_url is not None and settings.webhook_secret is not None:
        secret = settings.webhook_secret.reveal().encode()
        options["hooks"] = [WebhookNotifier(settings.webhook_url, secret)]
    with make_manager(**options) as manager:
        manager.configure_auth_throttle(
            max_failures=settings.auth_max_failures, lockout=settings.auth_lockout
        )
        exporters = [_head_exporter(manager, settings), _forwarder(manager, settings)]
        running = [e for e in exporters if e is not None]
        for exporter in running:
            exporter.start()
        try:
            return _run(manager, settings, workers, ready, stop)
        finally:
            for exporter in running:
                exporter.stop()  # one last head and forward: where the service stopped


def _forwarder(manager: CredentialManager, settings: ServerSettings) -> Any:
    """The forwarder of new audit rows ``[audit] forward_*`` asks for (None: not asked)."""
    if settings.forward_file is None and settings.forward_syslog is None:
        return None
    logger.info(
        "credman serve: forwarding new audit rows every {:g} s to {}",
        settings.forward_interval,
        settings.forward_file or f"syslog {settings.forward_syslog}",
    )
    return manager.audit_forwarder(
        file=settings.forward_file,
        syslog=settings.forward_syslog,
        interval=settings.forward_interval,
    )


def _head_exporter(manager: CredentialManager, settings: ServerSettings) -> Any:
    """The signed-head exporter ``[audit]`` asks for (None: not configured)."""
    if settings.head_file is None and settings.head_webhook_url is None:
        return None
    secret = settings.webhook_secret
    logger.info(
        "credman serve: exporting signed audit heads every {:g} s to {}",
        settings.head_interval,
        " and ".join(x for x in (settings.head_file, settings.head_webhook_url) if x),
    )
    return manager.audit_head_exporter(
        file=settings.head_file,
        webhook_url=settings.head_webhook_url,
        webhook_secret=None if secret is None else secret.reveal().encode(),
        interval=settings.head_interval,
        signing_key=settings.head_signing_key,
    )


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    return stop


def _run(
    manager: CredentialManager,
    settings: ServerSettings,
    workers: int,
    ready: Callable[[], None] | None,
    stop: threading.Event,
) -> int:
    from credman.scheduler import CredentialScheduler

    app = create_app(manager, settings)
    scheduler = None
    if settings.scheduler:
        metrics = app.state.metrics
        scheduler = CredentialScheduler(
            manager,
            interval=settings.interval,
            workers=workers,
            on_report=lambda r: metrics.observe_sweep(
                due=r.due,
                refreshed=r.refreshed,
                expired=r.expired,
                failed=r.failed,
                lateness=r.lateness,
            ),
        )
        scheduler.start()
    _describe(manager, settings)
    servers = [_Server(config) for config in _configs(app, settings)]
    try:
        if servers:
            asyncio.run(_serve_all(servers, ready, stop))
        else:
            _wait_for_signal(ready, stop)
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        logger.info("credman serve: stopped (pid {})", os.getpid())
    return 0


def _describe(manager: CredentialManager, settings: ServerSettings) -> None:
    """One line at start: what this process works on (no password, no secret)."""
    due = manager.next_wakeup()
    sweep = f"sweeping every {settings.interval:g} s" if settings.scheduler else "no sweep"
    logger.info(
        "credman serve: pid {}, database {}, next due {}, {}, webhook {}",
        os.getpid(),
        manager.database_url,
        due.isoformat(timespec="seconds") if due else "never",
        sweep,
        _origin(settings.webhook_url) if settings.webhook_url else "none",
    )


def _origin(url: str) -> str:
    """scheme://host[:port] only: a webhook's path may be its secret (Slack's are)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") + "/..."


def _configs(app: Any, settings: ServerSettings) -> list[uvicorn.Config]:
    common: dict[str, Any] = {
        "access_log": False,  # it prints query strings; the app logs its own lines
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_TIMEOUT,
        "log_level": "info",
        "proxy_headers": False,
    }
    configs = []
    bind = settings.bind
    if bind is not None:
        tls: dict[str, Any] = {}
        if settings.tls_cert is not None:
            tls = {
                "ssl_certfile": settings.tls_cert,
                "ssl_keyfile": settings.tls_key,
            }
        configs.append(uvicorn.Config(app, host=bind[0], port=bind[1], **tls, **common))
    if settings.uds is not None:
        configs.append(uvicorn.Config(app, uds=settings.uds, **common))
    return configs


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` stops every listener at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_all(
    servers: Sequence[uvicorn.Server], ready: Callable[[], None] | None, stop: threading.Event
) -> None:
    loop = asyncio.get_running_loop()

    def shut_down() -> None:
        logger.info("credman serve: stopping (finishing in-flight requests)")
        for server in servers:
            server.should_exit = True

    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, shut_down)
    if stop.is_set():  # a signal came while starting
        shut_down()
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            break
        await asyncio.sleep(0.05)
    else:
        _announce(servers)
        if ready is not None:
            ready()
    await asyncio.gather(*tasks)


def _announce(servers: Sequence[uvicorn.Server]) -> None:
    for server in servers:
        for listener in server.servers:
            for sock in listener.sockets:
                logger.info("credman serve: listening on {}", sock.getsockname())


def _wait_for_signal(ready: Callable[[], None] | None, stop: threading.Event) -> None:
    if ready is not None:
        ready()
    logger.info("credman serve: sweeping only (pid {})", os.getpid())
    while not stop.wait(1.0):
        pass
    logger.info("credman serve: stopping")
