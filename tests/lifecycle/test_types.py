"""Credential type schemas: validation names the field and never echoes input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from credman import (
    ApiKey,
    BasicAuth,
    BearerToken,
    CredentialValidationError,
    JWTBearer,
    OAuth2,
    Secret,
)
from credman.lifecycle import credential_from_parts
from credman.lifecycle.types import MAX_SECRET_LENGTH, MAX_TEXT_LENGTH

CANARY = "canary-5ecret-value"
URL = "https://provider.example/token"


def _oauth(**overrides: object) -> OAuth2:
    values: dict[str, object] = {"token_url": URL, "client_id": "cid", "refresh_token": CANARY}
    values.update(overrides)
    return OAuth2(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: BasicAuth(username="u"), "password"),
        (lambda: BasicAuth(username="u", password=""), "password"),
        (lambda: BasicAuth(username="u", password="   "), "password"),
        (lambda: BasicAuth(username=5, password=CANARY), "username"),
        (lambda: BasicAuth(username="", password=CANARY), "username"),
        (lambda: ApiKey(key=CANARY * 10_000), "key"),
        (lambda: ApiKey(key=12345), "key"),
        (lambda: ApiKey(key=CANARY, header="h" * (MAX_TEXT_LENGTH + 1)), "header"),
        (lambda: BearerToken(token=CANARY, expires_at=datetime(2030, 1, 1)), "expires_at"),
        (lambda: BearerToken(token=CANARY, expires_in=-5), "expires_in"),
        (lambda: BearerToken(token=CANARY, expires_in="soon"), "expires_in"),
        (lambda: _oauth(token_url="ftp://x.example/t"), "token_url"),
        (lambda: _oauth(token_url="http://provider.example/t"), "token_url"),
        (lambda: _oauth(token_url=f"https://user:{CANARY}@x.example/t"), "token_url"),
        (lambda: _oauth(grant_type="password"), "grant_type"),
        (lambda: _oauth(client_auth="tls_client_auth"), "client_auth"),
        (lambda: _oauth(unknown_field=CANARY), "unknown_field"),
        (lambda: OAuth2(client_id="cid", refresh_token=CANARY), "token_url"),
    ],
)
def test_malformed_input_names_the_field(build: object, field: str) -> None:
    """Missing, mistyped, naive, empty or oversized input raises naming the field, no input."""
    with pytest.raises(CredentialValidationError) as raised:
        build()  # type: ignore[operator]
    assert field in raised.value.fields
    assert field in str(raised.value)
    assert CANARY not in str(raised.value)
    assert raised.value.__context__ is None
    assert raised.value.__cause__ is None


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: _oauth(refresh_token=None), "access_token"),
        (lambda: _oauth(grant_type="client_credentials"), "client_secret"),
        (lambda: _oauth(client_auth="client_secret_basic"), "client_secret"),
        (lambda: _oauth(expires_in=60, expires_at=datetime(2030, 1, 1, tzinfo=UTC)), "expires_in"),
        (lambda: BasicAuth(username="a:b", password=CANARY), "username"),
        (lambda: ApiKey(key=CANARY, header="X", query_param="k"), "query_param"),
        (lambda: JWTBearer(**_JWT, private_key="not-a-pem"), "private_key"),
        (lambda: JWTBearer(**_JWT, private_key="-----BEGIN junk"), "private_key"),
    ],
)
def test_cross_field_rules_name_the_fields(build: object, field: str) -> None:
    """Rules across fields say which field is wrong, in the message and in ``fields``
    (not the model's name)."""
    with pytest.raises(CredentialValidationError) as raised:
        build()  # type: ignore[operator]
    assert field in str(raised.value)
    assert (field,) == raised.value.fields
    assert CANARY not in str(raised.value)


_JWT = {"token_url": "https://idp.example/token", "issuer": "i", "subject": "s", "audience": "a"}


def test_unknown_type_is_a_validation_error() -> None:
    """Rebuilding an unknown stored type is a clean validation error naming 'type'."""
    with pytest.raises(CredentialValidationError) as raised:
        credential_from_parts("kerberos", {}, {})
    assert ("type",) == raised.value.fields


def test_secret_fields_are_masked_in_repr_and_str() -> None:
    """A credential's repr and str show no secret value."""
    credential = _oauth(client_secret=CANARY + "1", access_token=CANARY + "2")
    assert CANARY not in repr(credential)
    assert CANARY not in str(credential)
    assert f"{CANARY}2" == credential.access_token.reveal()  # type: ignore[union-attr]


def test_secret_reveals_only_on_request() -> None:
    """Secret masks repr, str and format; reveal() returns the value; it cannot be pickled."""
    import pickle

    secret = Secret(CANARY)
    assert CANARY not in f"{secret!r} {secret} {secret:>30}"
    assert CANARY == secret.reveal()
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_secret_fields_are_declared_per_type() -> None:
    """Each type knows which of its fields are secret."""
    assert ("client_secret", "client_key", "access_token", "refresh_token") == OAuth2.secret_fields
    assert ("password",) == BasicAuth.secret_fields
    assert ("private_key", "access_token") == JWTBearer.secret_fields


def test_expires_in_resolves_against_the_given_now() -> None:
    """expires_in becomes expires_at = now + seconds, with no clock read."""
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    resolved = _oauth(expires_in=3600).resolved(now)
    assert now + timedelta(hours=1) == resolved.expires_at
    assert resolved.expires_in is None


def test_aware_datetimes_are_normalised_to_utc() -> None:
    """An expiry in another zone is stored as the same instant in UTC."""
    from datetime import timezone

    zoned = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    token = BearerToken(token=CANARY, expires_at=zoned)
    assert datetime(2030, 1, 1, 10, tzinfo=UTC) == token.expires_at
    assert UTC == token.expires_at.tzinfo  # type: ignore[union-attr]


def test_loopback_http_token_url_is_allowed() -> None:
    """Plain http is accepted only on loopback (local test servers)."""
    assert (
        "http://127.0.0.1:8080/token" == _oauth(token_url="http://127.0.0.1:8080/token").token_url
    )


def test_refreshable_follows_the_grant() -> None:
    """Refresh-token grants refresh only with a refresh token; client credentials always."""
    assert _oauth().refreshable
    assert not _oauth(refresh_token=None, access_token=CANARY).refreshable
    assert _oauth(
        grant_type="client_credentials", client_secret=CANARY, refresh_token=None
    ).refreshable
    assert not BasicAuth(username="u", password=CANARY).refreshable


def test_jwt_bearer_key_must_fit_the_algorithm() -> None:
    """An RS256 assertion needs a PEM key; HS256 a shared secret."""
    with pytest.raises(CredentialValidationError):
        JWTBearer(token_url=URL, issuer="i", subject="s", audience="a", private_key=CANARY)
    assert JWTBearer(
        token_url=URL,
        issuer="i",
        subject="s",
        audience="a",
        private_key=CANARY,
        algorithm="HS256",
    ).refreshable


def test_secret_length_limit_is_inclusive() -> None:
    """A secret of exactly the maximum length is accepted."""
    assert MAX_SECRET_LENGTH == len(ApiKey(key="k" * MAX_SECRET_LENGTH).key)
