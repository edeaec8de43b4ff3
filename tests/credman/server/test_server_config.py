"""The service's settings and published contract: TOML, environment, validation, OpenAPI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from credman import CredentialValidationError
from credman.server import load_settings
from credman.server.app import openapi_document

DOCS = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def test_docs_openapi_json_is_current() -> None:
    """docs/openapi.json is what the app publishes at /openapi.json (run make openapi)."""
    assert openapi_document() == json.loads(DOCS.read_text())


def test_every_api_route_is_published() -> None:
    """The document has every route of the HTTP API table."""
    paths = set(openapi_document()["paths"])
    expected = {
        "/v1/credentials",
        "/v1/credentials/{credential_id}",
        "/v1/credentials/{credential_id}/access",
        "/v1/credentials/{credential_id}/history",
        "/v1/credentials/{credential_id}/refresh",
        "/v1/credentials/{credential_id}/revoke",
        "/v1/credentials/{credential_id}/connect",
        "/v1/oauth/callback",
        "/v1/grants",
        "/v1/audit",
        "/v1/audit/verify",
        "/v1/audit/head",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert expected <= paths


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    """A flag beats the environment, which beats the file."""
    config = tmp_path / "credman.toml"
    config.write_text('[server]\nhttp = "127.0.0.1:1"\n[scheduler]\ninterval = 5\n')
    settings = load_settings(
        config, environ={"CREDMAN_INTERVAL": "7", "CREDMAN_HTTP": "127.0.0.1:2"}, http="[::1]:3"
    )
    assert ("::1", 3, 7.0) == (*settings.bind, settings.interval)  # type: ignore[misc]


def test_admins_from_the_file(tmp_path: Path) -> None:
    """[access] admins bootstraps the admin principals."""
    config = tmp_path / "credman.toml"
    config.write_text('[access]\nadmins = ["ops", "sre"]\n')
    assert ("ops", "sre") == load_settings(config, environ={}).admins


def test_non_loopback_bind_without_tls_is_refused() -> None:
    """0.0.0.0 without a certificate is a one-line error naming http."""
    with pytest.raises(CredentialValidationError) as caught:
        load_settings(environ={}, http="0.0.0.0:8443")
    assert ("http",) == caught.value.fields
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[server]\nhttp = "nohost"\n', "http"),
        ("[scheduler]\ninterval = 0\n", "interval"),
        ('[scheduler]\nenabled = "perhaps"\n', "scheduler"),
        ("[limits]\nmax_body_bytes = 10\n", "max_body_bytes"),
        ("[limits]\nauth_max_failures = 0\n", "auth_max_failures"),
        ("[limits]\nsurprise = 1\n", "config"),
        ("[nowhere]\nx = 1\n", "config"),
        ("not toml at all = = =\n", "config"),
        ('[server]\ntls_cert = "/nonexistent.pem"\ntls_key = "/nonexistent.key"\n', "tls_cert"),
        ('[server]\ntls_cert = "/nonexistent.pem"\n', "tls_cert"),
        ('[notify]\nwebhook_url = "https://hooks.example/x"\n', "webhook_secret"),
    ],
)
def test_bad_config_is_one_line_naming_the_setting(tmp_path: Path, text: str, field: str) -> None:
    """Each bad setting is a CredentialValidationError naming it, on one line."""
    config = tmp_path / "credman.toml"
    config.write_text(text)
    with pytest.raises(CredentialValidationError) as caught:
        load_settings(config, environ={})
    assert (field,) == caught.value.fields
    assert "\n" not in str(caught.value)


def test_environment_values_are_validated() -> None:
    """CREDMAN_AUTH_LOCKOUT that is not a number is an error naming auth_lockout."""
    with pytest.raises(CredentialValidationError) as caught:
        load_settings(environ={"CREDMAN_AUTH_LOCKOUT": "long", "CREDMAN_HTTP": "127.0.0.1:1"})
    assert ("auth_lockout",) == caught.value.fields


def test_webhook_secret_never_in_repr(tmp_path: Path) -> None:
    """The webhook secret is read from its file and kept out of the settings' repr."""
    secret = tmp_path / "webhook.secret"
    secret.write_text("CANARY-webhook-0123456789\n")
    settings = load_settings(
        environ={},
        webhook_url="https://hooks.example/x",
        webhook_secret_file=str(secret),
    )
    assert settings.webhook_secret is not None
    assert "CANARY-webhook-0123456789" == settings.webhook_secret.reveal()
    assert "CANARY" not in repr(settings)


def test_public_url_and_return_to_from_file_and_environment(tmp_path: Path) -> None:
    """[server] public_url and a return_to list from the file; CREDMAN_RETURN_TO is comma-separated."""
    config = tmp_path / "credman.toml"
    config.write_text(
        '[server]\npublic_url = "https://credman.example"\nreturn_to = ["https://a.example/x"]\n'
    )
    from_file = load_settings(config, environ={})
    from_env = load_settings(
        config, environ={"CREDMAN_RETURN_TO": "https://b.example/y, https://c.example/"}
    )
    assert (
        "https://credman.example",
        ("https://a.example/x",),
        ("https://b.example/y", "https://c.example/"),
    ) == (from_file.public_url, from_file.return_to, from_env.return_to)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CREDMAN_PUBLIC_URL", "http://credman.example"),
        ("CREDMAN_PUBLIC_URL", "https://credman.example/?x=1"),
        ("CREDMAN_PUBLIC_URL", "credman.example"),
        ("CREDMAN_RETURN_TO", "https://ok.example/,http://app.example/"),
        ("CREDMAN_RETURN_TO", "https://app.example/#top"),
    ],
)
def test_connect_urls_must_be_https_without_query_or_fragment(variable: str, value: str) -> None:
    """Plain http off loopback, a query, a fragment or no scheme: one line naming the setting."""
    name = variable.removeprefix("CREDMAN_").lower()
    with pytest.raises(CredentialValidationError, match=f"^{name}: an https URL"):
        load_settings(environ={variable: value, "CREDMAN_HTTP": "127.0.0.1:0"})


def test_plain_http_public_url_is_allowed_on_loopback() -> None:
    """http://127.0.0.1:8080 is a valid public_url (a local service)."""
    settings = load_settings(environ={"CREDMAN_PUBLIC_URL": "http://127.0.0.1:8080"})
    assert "http://127.0.0.1:8080" == settings.public_url
