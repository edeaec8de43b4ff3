"""Operational logs: `redact` masks every secret shape, and `configure_logging` writes only
redacted lines.

The secrets logged here on purpose are not registered as session canaries: the session's
raw capture (conftest) sees every record before any sink redacts it, by design.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger

from credman import BasicAuth, CredentialManager
from credman.logs import MASK, configure_logging, is_secret_name, redact, redact_value

PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"


def _secret() -> str:
    return f"CANARY-logs-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2", "password=***"),
        ("login user=bob password=hunter2 ok", "login user=bob password=*** ok"),
        ("client_secret=abc&scope=read", "client_secret=***&scope=read"),
        ("https://x/cb?access_token=abc&state=1", "https://x/cb?access_token=***&state=1"),
        (
            '{"access_token": "abc", "expires_in": 3600}',
            '{"access_token": "***", "expires_in": 3600}',
        ),
        ('{"refresh_token":"abc"}', '{"refresh_token":"***"}'),
        ("{'refresh_token': 'abc'}", "{'refresh_token': '***'}"),
        ("PASSWORD = 'p w'", "PASSWORD = '***'"),
        ('token="a\\"b" next', 'token="***" next'),
        ("token: abc", "token: ***"),
        ("key=abc", "key=***"),
        ("private_key=abc", "private_key=***"),
        ("assertion=abc", "assertion=***"),
        ("apiKey=abc accessToken=def", "apiKey=*** accessToken=***"),
        ("X-API-Key: abc123", "X-API-Key: ***"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("authorization=Basic dXNlcjpwYXNz", "authorization=Basic ***"),
        ("Authorization: sk_live_1 was refused", "Authorization: *** was refused"),
        ("{'authorization': 'Bearer abc'}", "{'authorization': 'Bearer ***'}"),
        ("sent Bearer abc.def", "sent Bearer ***"),
        ("sent Basic dXNlcjpwYXNz==", "sent Basic ***"),
        (f"got {JWT} back", "got *** back"),
        (f"token={JWT}", "token=***"),
        (
            f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY----- done",
            "*** done",
        ),
        (f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY} (cut)", "***"),
        (
            f"private_key='-----BEGIN EC PRIVATE KEY-----\\n{PEM_BODY}\\n-----END EC PRIVATE KEY-----'",
            "private_key='***'",
        ),
        ("postgresql://app:s3cret@db/credman", "postgresql://app:***@db/credman"),
        ("stored basic 'github-prod' (version 3)", "stored basic 'github-prod' (version 3)"),
        ("key_version=3 token_url=https://x/token", "key_version=3 token_url=https://x/token"),
        ("token_type=bearer expires_in=3600", "token_type=bearer expires_in=3600"),
        ("monkey=banana", "monkey=banana"),
        ("access denied: 'bob' lacks 'use' on 'x'", "access denied: 'bob' lacks 'use' on 'x'"),
        (
            "refresh of 'x' failed (invalid_grant, attempt 2)",
            "refresh of 'x' failed (invalid_grant, attempt 2)",
        ),
    ],
)
def test_redact_masks_secret_shapes_and_nothing_else(text: str, expected: str) -> None:
    """Each known secret shape is masked; ordinary operational text passes unchanged."""
    assert expected == redact(text)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_redact_is_idempotent(text: str) -> None:
    """Redacting twice gives the same text as redacting once."""
    once = redact(text)
    assert once == redact(once)


SECRET_NAMES = [
    "password",
    "client_secret",
    "access_token",
    "refresh_token",
    "token",
    "key",
    "private_key",
    "assertion",
    "api_key",
    "apiKey",
    "X-Api-Key",
    "PASSWORD",
]
SHAPES = [
    "{name}={secret}",
    "{name} = {secret}",
    "?{name}={secret}&scope=read",
    '{name}="{secret}"',
    '"{name}": "{secret}"',
    '"{name}":"{secret}"',
    "'{name}': '{secret}'",
    "{name}: {secret}",
    "Authorization: Bearer {secret}",
    "authorization: basic {secret}",
    '"Authorization": "Bearer {secret}"',
    "Authorization={secret}",
    "Bearer {secret}",
    "Basic {secret}",
    "eyJhbGciOiJub25lIn0.{secret}.c2ln",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.{secret}",
    "-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----\n{secret}",
    "https://user:{secret}@host/path",
]


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(SECRET_NAMES),
    shape=st.sampled_from(SHAPES),
    before=st.text(max_size=20),
    after=st.text(max_size=20),
    tail=st.text(alphabet="abcdefXYZ0123456789-_", min_size=1, max_size=16),
)
def test_a_canary_in_any_shape_never_survives(
    name: str, shape: str, before: str, after: str, tail: str
) -> None:
    """Whatever surrounds it, a secret in a known shape is gone after redaction."""
    secret = f"CANARY-{tail}"
    text = f"{before} {shape.format(name=name, secret=secret)} {after}"
    assert secret not in redact(text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("password", True),
        ("client_secret", True),
        ("Authorization", True),
        ("x-api-key", True),
        ("refreshToken", True),
        ("token_url", False),
        ("key_version", False),
        ("monkey", False),
        ("credential_id", False),
    ],
)
def test_secret_names(name: str, expected: bool) -> None:
    """Names ending in a secret word are secret; names that merely contain one are not."""
    assert expected == is_secret_name(name)


def test_redact_value_masks_secret_keys_whole_and_redacts_text() -> None:
    """Values under secret keys are masked whatever their type; other strings are redacted."""
    value = {
        "token": 12345,
        "nested": {"password": ["a", "b"], "count": 3},
        "note": "client_secret=abc",
        "items": ("Bearer abc", None, True),
    }
    assert {
        "token": MASK,
        "nested": {"password": MASK, "count": 3},
        "note": "client_secret=***",
        "items": ["Bearer ***", None, True],
    } == redact_value(value)


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """What a configure_logging sink (DEBUG, text) writes; the session's sinks stay."""
    written: list[str] = []
    handler_id = configure_logging("DEBUG", written.append, replace_default=False)
    yield written
    logger.remove(handler_id)


def test_text_lines_redact_the_message_and_extra(lines: list[str]) -> None:
    """A secret in the message or in bound extra values never reaches the line."""
    secret = _secret()
    logger.bind(access_token=secret, note=f"password={secret}", attempt=2).info(
        "login with password={} for {}", secret, "github-prod"
    )
    assert 1 == len(lines)
    assert secret not in lines[0]
    assert "login with password=*** for github-prod" in lines[0]
    assert "access_token=*** note=password=*** attempt=2" in lines[0]


def test_json_lines_redact_the_message_and_extra() -> None:
    """serialize=True writes one JSON document per record, redacted like text lines."""
    secret, stream = _secret(), io.StringIO()
    handler_id = configure_logging("INFO", stream, serialize=True, replace_default=False)
    try:
        logger.bind(refresh_token=secret).warning('body {{"access_token": "{}"}}', secret)
    finally:
        logger.remove(handler_id)
    document = json.loads(stream.getvalue())
    assert secret not in stream.getvalue()
    assert ("WARNING", 'body {"access_token": "***"}', {"refresh_token": MASK}) == (
        document["level"],
        document["message"],
        document["extra"],
    )


def test_tracebacks_show_no_local_values_and_are_redacted(lines: list[str]) -> None:
    """An exception is logged with its traceback, but neither locals nor its secret text."""
    secret = _secret()
    try:
        password = secret
        raise ValueError(f"rejected password={password}")
    except ValueError:
        logger.exception("login failed")
    text = "".join(lines)
    assert ("Traceback" in text, "ValueError: rejected password=***" in text) == (True, True)
    assert secret not in text


def test_records_below_the_level_are_not_written() -> None:
    """At INFO, debug records are dropped."""
    written: list[str] = []
    handler_id = configure_logging("INFO", written.append, replace_default=False)
    try:
        logger.debug("noise")
        logger.info("signal")
    finally:
        logger.remove(handler_id)
    assert ["signal"] == [line.rsplit(" | ", 1)[1].strip() for line in written]


def test_a_second_call_replaces_the_first_sink() -> None:
    """configure_logging twice leaves only the second sink installed."""
    first: list[str] = []
    second: list[str] = []
    configure_logging("INFO", first.append, replace_default=False)
    handler_id = configure_logging("INFO", second.append, replace_default=False)
    try:
        logger.info("once")
    finally:
        logger.remove(handler_id)
    assert (0, 1) == (len(first), len(second))


@pytest.fixture
def library_default() -> Iterator[None]:
    """credman's logger disabled, as the library leaves it; enabled again for the session."""
    logger.disable("credman")
    yield
    logger.enable("credman")


def test_credman_logs_are_enabled(library_default: None, sqlite_url: str, key_file: Path) -> None:
    """configure_logging enables the credman logger that the library disables by default."""
    written: list[str] = []
    handler_id = configure_logging("INFO", written.append, replace_default=False)
    try:
        with CredentialManager(sqlite_url, str(key_file)) as manager:
            manager.store("c", BasicAuth(username="u", password="p"), principal="admin")
    finally:
        logger.remove(handler_id)
    assert any("stored basic 'c' (version 1)" in line for line in written)


def test_a_failing_sink_drops_the_line_without_printing_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """If the target raises, the record is dropped with a one-line notice, never echoed."""
    secret = _secret()

    def broken(_: str) -> None:
        raise OSError("disk full")

    handler_id = configure_logging("INFO", broken, replace_default=False)
    try:
        logger.info("password={}", secret)
    finally:
        logger.remove(handler_id)
    assert "credman: a log line was dropped (OSError)\n" == capsys.readouterr().err
