"""``credman update ID`` (change named fields, keep the rest) and ``credman purge ID``.

``update`` reads the whole credential, replaces only the fields named on the command line
(public ones with ``--set NAME=VALUE``, secrets with ``--secret-env NAME=VAR`` or
``--secret-file NAME=PATH``, ``-`` for stdin) and stores it again as a new version;
the type cannot change. Both are audited like every write.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from credman.cli.add import ProbeExpect, ProbeUrl, probe_of
from credman.cli.context import open_manager, options
from credman.cli.output import out
from credman.cli.secret_input import read_secret
from credman.errors import CredentialValidationError

__all__ = ["register"]

Pairs = list[str] | None


def update(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID", help="The credential id.")],
    set_fields: Annotated[
        Pairs, typer.Option("--set", metavar="NAME=VALUE", help="Change a public field.")
    ] = None,
    unset_fields: Annotated[
        Pairs, typer.Option("--unset", metavar="NAME", help="Clear an optional field.")
    ] = None,
    secret_env: Annotated[
        Pairs, typer.Option("--secret-env", metavar="NAME=VAR", help="A secret from env.")
    ] = None,
    secret_file: Annotated[
        Pairs,
        typer.Option("--secret-file", metavar="NAME=PATH", help="A secret from a file, - stdin."),
    ] = None,
    probe_url: ProbeUrl = None,
    probe_expect: ProbeExpect = "200",
    no_probe: Annotated[bool, typer.Option("--no-probe", help="Remove the probe.")] = False,
    reason: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Why (recorded in history).")
    ] = None,
) -> None:
    """Change the named fields of a credential and keep the rest (a new version)."""
    principal = options(ctx).principal
    with open_manager(ctx) as manager:
        current = manager.get(credential_id, principal=principal)
        kind = type(current)
        # the stored values, secrets included: the new version keeps every field not named
        data: dict[str, Any] = current.model_dump(
            exclude_none=True, context={"reveal_secrets": True}
        )
        secrets = set(kind.secret_fields)
        changes = _public_changes(set_fields or [], secrets, kind.model_fields)
        for name in unset_fields or []:
            _known(name, kind.model_fields)
            changes[name] = None
        for pair in secret_env or []:
            name, var = _pair(pair, "secret-env")
            changes[_secret_name(name, secrets)] = read_secret(name, var, None, required=True)
        for pair in secret_file or []:
            name, path = _pair(pair, "secret-file")
            changes[_secret_name(name, secrets)] = read_secret(name, None, path, required=True)
        if probe_url is not None or no_probe:
            changes["probe"] = None if no_probe else probe_of(probe_url, probe_expect)
        if not changes:
            raise CredentialValidationError(
                "update: name at least one field (--set, --unset, --secret-env, "
                "--secret-file, --probe-url, --no-probe)"
            )
        data.update(changes)
        info = manager.store(
            credential_id,
            kind(**{k: v for k, v in data.items() if v is not None}),
            principal=principal,
            reason=reason,
        )
    names = ", ".join(sorted(changes))
    out.print(f"updated {credential_id!r} ({names}): version {info.version}")


def _pair(text: str, option: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CredentialValidationError(f"{option}: NAME=VALUE, got no '='", fields=(option,))
    return name.strip().replace("-", "_"), value


def _known(name: str, fields: dict[str, Any]) -> str:
    if name not in fields:
        known = ", ".join(sorted(fields))
        raise CredentialValidationError(f"{name}: not a field of this credential ({known})")
    return name


def _public_changes(pairs: list[str], secrets: set[str], fields: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for pair in pairs:
        name, value = _pair(pair, "set")
        if name in secrets:
            raise CredentialValidationError(
                f"{name}: a secret; use --secret-env {name}=VAR or --secret-file {name}=PATH",
                fields=(name,),
            )
        changes[_known(name, fields)] = value
    return changes


def _secret_name(name: str, secrets: set[str]) -> str:
    if name not in secrets:
        raise CredentialValidationError(
            f"{name}: not a secret field (secrets here: {', '.join(sorted(secrets))})",
            fields=(name,),
        )
    return name


def purge(
    ctx: typer.Context,
    credential_id: Annotated[str, typer.Argument(metavar="ID", help="A revoked credential.")],
) -> None:
    """Remove a revoked credential's row so its id can be used again (history and audit stay)."""
    with open_manager(ctx) as manager:
        manager.purge(credential_id, principal=options(ctx).principal)
    out.print(f"purged {credential_id!r}: the id is free; its history and audit trail remain")


def register(app: typer.Typer) -> None:
    """Add ``update`` and ``purge`` to the root app."""
    app.command()(update)
    app.command()(purge)
