"""The root ``credman`` app: global options, every command group, and the entry point.

A ``CredentialError`` ends the command with one line on stderr and exit code 1, never a
traceback; ``-v`` adds the state machine's words (trigger, state, guard) to that line.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, NoReturn

import typer
import typer.core

from credman.cli import (
    add,
    audit,
    connect,
    credentials,
    database,
    demo,
    diagram,
    grants,
    keys,
    principals,
    providers,
    serve,
    update,
)
from credman.cli.context import Options
from credman.cli.output import err, out
from credman.errors import CredentialError, InvalidTransition
from credman.logs import configure_logging
from credman.terminal import visible

__all__ = ["app", "main"]

app = typer.Typer(
    name="credman",
    help="Credential manager for integration services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a traceback with locals could show secrets
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _readable_help() -> None:
    """Help shows METAVARs, not Python types: typer 0.29 prints ``<bool>`` beside every flag
    and ``<list[str]>`` beside arguments. Applied to typer's parameter classes, in the CLI
    process only (this module is imported only by the command line)."""

    def option_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return self.metavar or (self.name or "value").upper()

    def argument_type(self: typer.core.TyperArgument, ctx: Any) -> str | None:
        return None

    typer.core.TyperOption.display_type_rich = option_type  # type: ignore[method-assign]
    typer.core.TyperArgument.display_type_rich = argument_type  # type: ignore[method-assign,assignment]


_readable_help()


def _version(value: bool) -> None:
    if value:
        try:
            out.print(f"credman {version('credman')}")
        except PackageNotFoundError:  # running from a checkout that is not installed
            out.print("credman (not installed)")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(envvar="CREDMAN_DATABASE_URL", metavar="URL", help="Database URL."),
    ] = None,
    key_file: Annotated[
        str | None,
        typer.Option(envvar="CREDMAN_KEY_FILE", metavar="PATH", help="Keyring file."),
    ] = None,
    acting_as: Annotated[
        str | None,
        typer.Option(
            "--as",
            envvar="CREDMAN_AS",
            metavar="PRINCIPAL",
            help="Act as this principal, to try its grants (audited as it). "
            "Default: you, as operator:<os user>, with full power.",
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            envvar="CREDMAN_URL",
            metavar="URL",
            help="Talk to this running service (with CREDMAN_TOKEN, and CREDMAN_CA for a "
            "private CA) instead of the local database.",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Logs with their source; error details.")
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Credential manager for integration services."""
    ctx.obj = Options(
        database_url=database_url,
        key_file=key_file,
        acting_as=acting_as,
        verbose=verbose,
        server=server,
    )
    if verbose:
        configure_logging(level="DEBUG", source=True)


_GROUPS = (database, add, update, credentials, grants, audit, keys, principals)
for _group in (*_GROUPS, connect, providers, diagram, serve, demo):
    _group.register(app)


def _fail(message: str, code: int) -> NoReturn:
    # one line, and nothing in it (a path, an id, a provider's words) can drive the terminal
    err.print(f"error: {visible(' '.join(message.split()))}", markup=False, highlight=False)
    sys.exit(code)


def _details(exc: CredentialError) -> str:
    """The machine's words, for ``-v``: trigger, state and guard of a refused transition."""
    if isinstance(exc, InvalidTransition):
        guard = f", guard {exc.guard!r}" if exc.guard else ""
        return f" (trigger {exc.trigger!r} in state {exc.state}{guard})"
    return f" ({type(exc).__name__})"


def main() -> None:
    """Entry point: run the app; a CredentialError is one line on stderr and exit 1."""
    verbose = any(arg in ("-v", "--verbose") for arg in sys.argv[1:])
    try:
        app()
    except CredentialError as exc:
        _fail(str(exc) + (_details(exc) if verbose else ""), 1)
    except OSError as exc:  # e.g. an output folder that cannot be written
        _fail(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}", 1)
    except Exception as exc:  # never a traceback: it could carry secrets in locals
        _fail(f"internal error ({type(exc).__name__}); run with -v for logs", 2)
