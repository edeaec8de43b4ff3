"""The root ``credman`` app: global options, every command group, and the entry point.

A ``CredentialError`` ends the command with one line on stderr and exit code 1, never a
traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from credman.cli import add, audit, credentials, database, demo, diagram, grants, keys, serve
from credman.cli.context import Options
from credman.cli.output import err
from credman.errors import CredentialError
from credman.logs import configure_logging

__all__ = ["app", "main"]

app = typer.Typer(
    name="credman",
    help="Credential manager for integration services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a traceback with locals could show secrets
    add_completion=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    database_url: Annotated[
        str | None, typer.Option(envvar="CREDMAN_DATABASE_URL", help="Database URL.")
    ] = None,
    key_file: Annotated[
        str | None, typer.Option(envvar="CREDMAN_KEY_FILE", help="Key file path.")
    ] = None,
    principal: Annotated[
        str, typer.Option(envvar="CREDMAN_PRINCIPAL", help="Who is acting.")
    ] = "admin",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Operational logs.")] = False,
) -> None:
    """Credential manager for integration services."""
    ctx.obj = Options(database_url, key_file, principal)
    if verbose:
        configure_logging(level="DEBUG")


for _group in (database, add, credentials, grants, audit, keys, diagram, serve, demo):
    _group.register(app)


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"error: {' '.join(message.split())}", markup=False)
    sys.exit(code)


def main() -> None:
    """Entry point: run the app; a CredentialError is one line on stderr and exit 1."""
    try:
        app()
    except CredentialError as exc:
        _fail(str(exc), 1)
    except OSError as exc:  # e.g. an output folder that cannot be written
        _fail(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}", 1)
    except Exception as exc:  # never a traceback: it could carry secrets in locals
        _fail(f"internal error ({type(exc).__name__}); run with -v for logs", 2)
