"""`credman providers list/show`: the catalogue on the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from credman.cli import app
from credman.oauth import catalogue

runner = CliRunner()


def test_providers_list_names_every_profile() -> None:
    """The table lists every built-in profile."""
    result = runner.invoke(app, ["providers", "list"], env={"COLUMNS": "200"})
    assert (0, True) == (result.exit_code, all(name in result.stdout for name in catalogue()))


def test_providers_list_json_is_one_object_per_profile() -> None:
    """--json prints one parseable profile per line."""
    result = runner.invoke(app, ["providers", "list", "--json"])
    names = [json.loads(line)["name"] for line in result.stdout.splitlines()]
    assert sorted(catalogue()) == names


def test_providers_show_prints_the_profile() -> None:
    """show NAME prints the profile's URLs, auth method and quirks."""
    result = runner.invoke(app, ["providers", "show", "salesforce"])
    shown = json.loads(result.stdout)
    assert (["instance_url", "id"], "absent") == (
        shown["response"]["keep_fields"],
        shown["response"]["expires_in"],
    )


def test_providers_show_unknown_is_an_error() -> None:
    """An unknown profile fails with the names of the known ones."""
    result = runner.invoke(app, ["providers", "show", "nope"])
    assert (True, True) == (result.exit_code != 0, "github" in str(result.exception))
