"""The provider catalogue: every profile validates against the schema and drives a token
request and its provider's quirky response through the loopback provider."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import httpx
import pytest

from credman import CredentialValidationError, NotFound, RefreshFailed
from credman.oauth import (
    ProviderProfile,
    ResponseQuirks,
    catalogue,
    parse_token_response,
    profile,
    request_token,
)
from credman.oauth.profiles import load_profile
from credman.testing.provider import TokenServer

CLIENT, SECRET = "client-1", "profile-secret-canary-aa01"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
REQUIRED = {"github", "google", "microsoft", "slack", "salesforce", "atlassian", "hubspot", "xero"}
VARIABLES = {"tenant": "common", "my_domain": "acme"}


def catalogue_files() -> list[Any]:
    folder = resources.files("credman.oauth") / "catalogue"
    return sorted((e for e in folder.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)


@pytest.mark.parametrize("entry", catalogue_files(), ids=lambda e: e.name)
def test_every_catalogue_file_validates_against_the_schema(entry: Any) -> None:
    """Each data file is a valid ProviderProfile named after its file."""
    checked = ProviderProfile.model_validate(tomllib.loads(entry.read_text()))
    assert entry.name.removesuffix(".toml") == checked.name


def test_the_catalogue_has_the_providers_integrations_need() -> None:
    """GitHub, Google, Microsoft, Slack, Salesforce, Atlassian, HubSpot and Xero are there."""
    assert REQUIRED <= set(catalogue())


def test_the_schema_exports_as_json_schema() -> None:
    """The pydantic schema can be published as JSON Schema and requires the essentials."""
    schema = ProviderProfile.model_json_schema()
    assert {"name", "display_name", "docs", "authorize", "token"} <= set(schema["required"])
    json.dumps(schema)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            'name = "x"\ndisplay_name = "X"\ndocs = "https://d"\n[token]\nurl = "https://t"',
            "authorize",
        ),
        (
            'name = "x"\ndisplay_name = "X"\ndocs = "https://d"\nsurprise = 1\n'
            '[authorize]\nurl = "https://a"\n[token]\nurl = "https://t"',
            "surprise",
        ),
        (
            'name = "x"\ndisplay_name = "X"\ndocs = "https://d"\n'
            '[authorize]\nurl = "http://a"\n[token]\nurl = "https://t"',
            "authorize.url",
        ),
        (
            'name = "x"\ndisplay_name = "X"\ndocs = "https://d"\n[authorize]\nurl = "https://a"\n'
            '[token]\nurl = "https://t"\nclient_auth = "tls_client_auth"',
            "token.client_auth",
        ),
        ("name = ", "TOML"),
    ],
)
def test_a_bad_profile_is_refused_naming_the_problem(text: str, field: str) -> None:
    """A missing section, an unknown key, plain http or an unknown auth method is refused."""
    with pytest.raises(CredentialValidationError, match=field.replace(".", r"\.")):
        load_profile(text)


def test_templated_urls_fill_the_tenant() -> None:
    """Microsoft's URLs take the tenant."""
    urls = profile("microsoft").endpoints({"tenant": "contoso.onmicrosoft.com"})
    assert (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        == urls.token_url
    )


def test_a_missing_template_variable_is_named() -> None:
    """Salesforce without my_domain says what is missing."""
    with pytest.raises(CredentialValidationError) as raised:
        profile("salesforce").endpoints({})
    assert ("my_domain",) == raised.value.fields


@pytest.mark.parametrize("value", ["evil.example/x", "a@b", "", "x" * 80, "-lead"])
def test_a_template_variable_cannot_change_the_host_shape(value: str) -> None:
    """A variable is one host label: no slashes, user info or empty values."""
    with pytest.raises(CredentialValidationError):
        profile("salesforce").endpoints({"my_domain": value})


def test_unknown_profile_names_the_known_ones() -> None:
    """Asking for a profile that does not exist lists the catalogue."""
    with pytest.raises(NotFound, match="github"):
        profile("nope")


def test_google_asks_for_offline_access_and_consent() -> None:
    """Google's credential carries access_type=offline and prompt=consent."""
    credential = profile("google").credential(client_id="c", client_secret="s")
    assert {"access_type": "offline", "prompt": "consent"} == credential.authorize_params


def test_slack_joins_scopes_with_commas() -> None:
    """Slack's scope separator is a comma."""
    assert "chat:write,channels:read" == profile("slack").scope(["chat:write", "channels:read"])


# -- every profile through the loopback provider --------------------------------------------

QUIRK_MODE = {
    "github": "bad_refresh_token_200",
    "slack": "ok_false_200",
    "salesforce": "instance_url",
    "paypal": "expires_in_string",
}
"""The provider mode that answers the way that provider does (default: a plain success)."""


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(clients={CLIENT: SECRET}) as running:
        yield running


def drive(server: TokenServer, name: str, mode: str) -> Any:
    """One refresh with the profile's credential against the provider in ``mode``."""
    chosen = profile(name)
    server.rotate_refresh_tokens = chosen.refresh.rotates_refresh_token
    server.mode = mode
    credential = chosen.credential(
        client_id=CLIENT,
        client_secret=SECRET,
        variables=VARIABLES,
        token_url=server.url,
        refresh_token=server.grant(CLIENT),
    )
    with httpx.Client() as http:
        try:
            return request_token(http, credential, now=NOW)
        except RefreshFailed as failure:
            return failure


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_each_profile_authenticates_its_way(server: TokenServer, name: str) -> None:
    """The token request uses the profile's client authentication method."""
    drive(server, name, "ok")
    assert [profile(name).token.client_auth] == server.client_auth_methods


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_each_profile_reads_its_providers_success(server: TokenServer, name: str) -> None:
    """A plain success gives a token, and a new refresh token only where the provider rotates."""
    grant = drive(server, name, "ok")
    rotates = profile(name).refresh.rotates_refresh_token
    assert (True, rotates) == (
        server.is_valid(grant.access_token.reveal()),
        grant.refresh_token is not None,
    )


@pytest.mark.parametrize("name", sorted(QUIRK_MODE))
def test_each_quirky_profile_reads_its_quirky_response(server: TokenServer, name: str) -> None:
    """GitHub's and Slack's 200 errors are permanent; Salesforce keeps instance_url with no
    expiry; PayPal's string expires_in is read."""
    outcome = drive(server, name, QUIRK_MODE[name])
    expected: dict[str, Any] = {
        "github": (True, "bad_refresh_token"),
        "slack": (True, "invalid_refresh_token"),
        "salesforce": (None, server.base_url + "/instance"),
        "paypal": (3600, None),
    }
    if isinstance(outcome, RefreshFailed):
        observed: Any = (outcome.permanent, outcome.error_code)
    else:
        observed = (outcome.expires_in, outcome.metadata.get("instance_url"))
    assert expected[name] == observed


def test_slack_success_with_ok_true_is_a_grant(server: TokenServer) -> None:
    """Slack's {"ok": true, ...} success parses as a grant."""
    grant = drive(server, "slack", "ok_true")
    assert 3600 == grant.expires_in


def test_milliseconds_quirk_converts_expires_in() -> None:
    """A profile in milliseconds turns 3,600,000 into 3600 seconds."""
    body = json.dumps({"access_token": "at", "expires_in": 3_600_000}).encode()
    grant = parse_token_response(
        200, {}, body, now=NOW, quirks=ResponseQuirks(expires_in_unit=0.001)
    )
    assert 3600 == grant.expires_in


@pytest.mark.parametrize(
    ("status", "code", "permanent"),
    [
        (200, "invalid_grant", True),
        (200, "invalid_client", True),
        (500, "invalid_grant", True),
        (400, "temporarily_unavailable", False),
        (200, "server_error", False),
    ],
)
def test_the_error_code_decides_permanence_whatever_the_status(
    status: int, code: str, permanent: bool
) -> None:
    """invalid_grant is permanent even with 200 or 500; server_error is transient even with 4xx."""
    with pytest.raises(RefreshFailed) as raised:
        parse_token_response(status, {}, json.dumps({"error": code}).encode(), now=NOW)
    assert (permanent, code) == (raised.value.permanent, raised.value.error_code)


def test_a_profile_error_is_permanent_only_with_that_profile() -> None:
    """bad_refresh_token is GitHub's word: permanent with its quirks, transient without."""
    body = json.dumps({"error": "bad_refresh_token"}).encode()
    with pytest.raises(RefreshFailed) as plain:
        parse_token_response(200, {}, body, now=NOW)
    with pytest.raises(RefreshFailed) as github:
        parse_token_response(200, {}, body, now=NOW, quirks=profile("github").quirks)
    assert (False, True) == (plain.value.permanent, github.value.permanent)
