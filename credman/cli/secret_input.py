"""Secrets from an environment variable or a file (``-`` is stdin), never from argv.

Every secret option comes as a pair: ``--NAME-env VAR`` and ``--NAME-file PATH``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from credman.errors import CredentialValidationError

__all__ = ["read_secret", "secret_options"]


def read_secret(name: str, env: str | None, file: str | None, *, required: bool) -> str | None:
    """A secret from an environment variable or a file ('-' is stdin), never from argv."""
    if env is not None and file is not None:
        raise CredentialValidationError(f"{name}: give --{name}-env or --{name}-file, not both")
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise CredentialValidationError(f"{name}: environment variable {env} is not set")
        return value
    if file is not None:
        return _read_file(name, file)
    if required:
        raise CredentialValidationError(
            f"{name}: required (--{name}-env VAR or --{name}-file PATH)"
        )
    return None


def _read_file(name: str, file: str) -> str:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not readable UTF-8 text"
        raise CredentialValidationError(f"{name}: cannot read {file}: {reason}") from None
    return text.removesuffix("\n").removesuffix("\r")


def secret_options(name: str) -> tuple[Any, Any]:
    """The ``--NAME-env`` and ``--NAME-file`` typer options for one secret."""
    env = typer.Option(f"--{name}-env", metavar="VAR", help=f"{name} from this env var.")
    file = typer.Option(f"--{name}-file", metavar="PATH", help=f"{name} from file, - stdin.")
    return env, file
