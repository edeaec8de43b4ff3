"""The ``credman providers`` commands: the built-in OAuth2 provider catalogue.

Registered on the root app by :func:`register` as ``credman providers``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from credman.cli.output import out, table
from credman.oauth.profiles import ProviderProfile, catalogue, profile

__all__ = ["providers_app", "register"]

providers_app = typer.Typer(help="The built-in OAuth2 provider profiles.", no_args_is_help=True)


def _quirks(entry: ProviderProfile) -> str:
    response = entry.response
    flags = [
        "errors with HTTP 200" if response.errors_with_http_200 else "",
        "ok:false" if response.ok_field else "",
        f"expires_in {response.expires_in}" if response.expires_in != "seconds" else "",
        f"keeps {', '.join(response.keep_fields)}" if response.keep_fields else "",
    ]
    return "; ".join(flag for flag in flags if flag) or "-"


@providers_app.command("list")
def providers_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per profile.")] = False,
) -> None:
    """List the provider profiles."""
    entries = sorted(catalogue().values(), key=lambda entry: entry.name)
    if as_json:
        for entry in entries:
            out.print(json.dumps(entry.model_dump(mode="json"), sort_keys=True), markup=False)
        return
    listing = table("name", "provider", "client auth", "rotates", "needs", "quirks")
    for entry in entries:
        listing.add_row(
            entry.name,
            entry.display_name,
            entry.token.client_auth,
            "yes" if entry.refresh.rotates_refresh_token else "no",
            ", ".join(entry.variables) or "-",
            _quirks(entry),
        )
    out.print(listing)


@providers_app.command("show")
def providers_show(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Show one provider profile as JSON."""
    document = profile(name).model_dump(mode="json")
    out.print(json.dumps(document, indent=2, sort_keys=True), markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``providers`` group to the root app."""
    app.add_typer(providers_app, name="providers")
