"""``credman serve``: the scheduler daemon that keeps tokens fresh."""

from __future__ import annotations

import os
import signal
import threading
from typing import Annotated

import typer
from loguru import logger

from credman.cli.context import open_manager
from credman.logs import configure_logging

__all__ = ["register"]


def serve(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(help="Seconds between sweeps.")] = 30.0,
    workers: Annotated[int, typer.Option(help="Refreshes in parallel.")] = 4,
    once: Annotated[bool, typer.Option("--once", help="Sweep once and exit.")] = False,
) -> None:
    """Run the scheduler daemon in the foreground until SIGINT/SIGTERM: keeps tokens fresh."""
    from credman.scheduler import CredentialScheduler

    configure_logging(level="INFO")
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    with open_manager(ctx) as manager:
        scheduler = CredentialScheduler(manager, interval=interval, workers=workers)
        if once:
            scheduler.sweep()
            return
        scheduler.start()
        logger.info("credman serve: sweeping every {}s (pid {})", interval, os.getpid())
        while not stop.wait(1.0):
            pass
        logger.info("credman serve: stopping")
        scheduler.shutdown(wait=True)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command()(serve)
