"""Findings of the adversarial review (issue 16): each test failed before its fix."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from credman import AccessDenied, ApiKey, BasicAuth, CredentialManager, NotFound, OAuth2
from credman.access import pattern_covers, pattern_warning
from credman.crypto import EnvKeyProvider, KeyFileProvider
from credman.egress import EgressPolicy
from credman.errors import KeyringError
from credman.logs import redact
from credman.oauth import parse_token_response
from credman.testing.provider import TokenServer

NOW = datetime(2026, 3, 1, 10, tzinfo=UTC)
BIG_BODY = 128 * 1024 * 1024
OTHER_UID = 65534
"""nobody: the tests that plant a file for another user need root (the container's user)."""
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's file needs root")


@pytest.fixture
def httpx_records() -> Iterator[list[logging.LogRecord]]:
    """Every record httpx's standard-library logger emits while the test runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, httpx_logger = Keep(level=logging.DEBUG), logging.getLogger("httpx")
    level = httpx_logger.level
    httpx_logger.addHandler(handler)
    httpx_logger.setLevel(logging.INFO)
    yield records
    httpx_logger.removeHandler(handler)
    httpx_logger.setLevel(level)


class Origin:
    """A loopback web server that records what reached it; ``/to?url=U`` redirects to U."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.body_bytes_sent = 0
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                parts = urlsplit(self.path)
                if parts.path == "/big":
                    self._big()
                    return
                target = parse_qs(parts.query).get("url")
                status = 302 if parts.path == "/to" and target else 403
                status = 401 if parts.path == "/401" else status
                self.send_response(status)
                if status == 302 and target:
                    self.send_header("Location", target[0])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _big(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(BIG_BODY))
                self.end_headers()
                chunk = b"x" * 65_536
                try:
                    while origin.body_bytes_sent < BIG_BODY:
                        self.wfile.write(chunk)
                        origin.body_bytes_sent += len(chunk)
                except OSError:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def origins() -> Iterator[tuple[Origin, Origin]]:
    """Two loopback origins (two ports): the credential's own and another one."""
    own, other = Origin(), Origin()
    yield own, other
    own.close()
    other.close()


# -- 9: secrets in logs ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hapikey", "apiToken", "appid", "sig", "code", "auth"])
def test_redactor_masks_more_secret_parameter_names(name: str) -> None:
    """Query and form parameters named like HubSpot's hapikey, apiToken, sig, code... are masked."""
    assert f"https://api.example/v1?{name}=***&page=2" == redact(
        f"https://api.example/v1?{name}=s3cr3tvalue&page=2"
    )


# -- 10: dumps of a credential --------------------------------------------------------------


def test_model_dump_masks_secret_fields() -> None:
    """model_dump() and model_dump_json() show secret fields masked, never the plaintext."""
    credential = BasicAuth(username="svc", password="hunter2-plaintext")
    dumped, as_json = credential.model_dump(), credential.model_dump_json()
    assert "**********" == dumped["password"]
    assert "hunter2-plaintext" not in as_json
    assert "**********" == json.loads(as_json)["password"]


def test_model_dump_reveals_only_when_asked() -> None:
    """The plaintext comes out of a dump only with context={'reveal_secrets': True}."""
    credential = ApiKey(key="sk_live_plain")
    revealed = credential.model_dump(mode="json", context={"reveal_secrets": True})
    assert "sk_live_plain" == revealed["key"]


def test_masked_dump_does_not_round_trip_into_a_credential() -> None:
    """A masked dump is not mistaken for material: rebuilding it keeps the mask, not a secret."""
    credential = OAuth2(token_url="https://idp.example/token", client_id="c", refresh_token="r-1")
    assert "**********" == credential.model_dump()["refresh_token"]


# -- 12: the provider's error member ------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("invalid_grant", "invalid_grant"),
        ("slow_down", "slow_down"),
        ("rt_7f3a9c1b2d4e5f60718293a4b5c6d7e8", "invalid_response"),
        ("ghr_EchoedRefreshToken123", "invalid_response"),
    ],
)
def test_provider_error_code_is_mapped_to_the_registry(error: str, expected: str) -> None:
    """Only registered error codes are kept; an echoed token in ``error`` becomes invalid_response."""
    body = json.dumps({"error": error}).encode()
    with pytest.raises(Exception) as caught:
        parse_token_response(400, {}, body, now=NOW)
    assert expected == caught.value.error_code  # type: ignore[attr-defined]
    assert error not in str(caught.value) or error == expected


def test_consumer_httpx_errors_and_logs_omit_a_query_api_key(
    manager: CredentialManager,
    origins: tuple[Origin, Origin],
    httpx_records: list[logging.LogRecord],
) -> None:
    """A key put in the query by auth() reaches the server but not raise_for_status or httpx's log."""
    own, _ = origins
    manager.store("q", ApiKey(key="sk_query_secret_1", query_param="k"), principal="admin")
    with httpx.Client(auth=manager.auth("q", principal="admin")) as client:
        response = client.get(f"{own.url}/api?page=1")
    with pytest.raises(httpx.HTTPStatusError) as caught:
        response.raise_for_status()
    assert "k=sk_query_secret_1" in own.seen[0][0]
    assert "sk_query_secret_1" not in str(caught.value)
    assert "sk_query_secret_1" not in str(caught.value.request.url)
    assert [] == [r.getMessage() for r in httpx_records if "sk_query" in r.getMessage()]


def test_credmans_own_probe_is_not_logged_with_its_query_key(
    manager: CredentialManager,
    origins: tuple[Origin, Origin],
    httpx_records: list[logging.LogRecord],
) -> None:
    """credman's own probe of a query-placed key leaves no key in httpx's standard log."""
    own, _ = origins
    probe = {"url": f"{own.url}/me", "expect": [403]}
    manager.store(
        "q", ApiKey(key="sk_probe_secret_2", query_param="k", probe=probe), principal="admin"
    )
    assert manager.test("q", principal="admin").ok
    assert httpx_records, "httpx logged the probe request"
    assert [] == [r.getMessage() for r in httpx_records if "sk_probe" in r.getMessage()]


# -- 11: injected material bound to the credential's origin --------------------------------


def test_custom_header_does_not_follow_a_redirect_to_another_origin(
    manager: CredentialManager, origins: tuple[Origin, Origin]
) -> None:
    """X-API-Key reaches the credential's origin but not the origin a redirect leads to."""
    own, other = origins
    manager.store("h", ApiKey(key="sk_header_secret_3"), principal="admin")
    auth = manager.auth("h", principal="admin")
    with httpx.Client(auth=auth, follow_redirects=True) as client:
        client.get(f"{own.url}/to", params={"url": f"{other.url}/landing"})
    assert "sk_header_secret_3" == own.seen[0][1].get("x-api-key")
    assert None is other.seen[0][1].get("x-api-key")


def test_auth_injects_nothing_for_an_origin_it_is_not_bound_to(
    manager: CredentialManager, origins: tuple[Origin, Origin]
) -> None:
    """auth(origins=[...]) leaves a request to any other origin untouched."""
    own, other = origins
    manager.store("h", ApiKey(key="sk_header_secret_4"), principal="admin")
    auth = manager.auth("h", principal="admin", origins=[own.url])
    with httpx.Client(auth=auth) as client:
        client.get(f"{other.url}/x")
        client.get(f"{own.url}/x")
    assert None is other.seen[0][1].get("x-api-key")
    assert "sk_header_secret_4" == own.seen[0][1].get("x-api-key")


# -- 14: probe responses are bounded -------------------------------------------------------


def test_probe_does_not_read_a_huge_response_body(
    manager: CredentialManager, origins: tuple[Origin, Origin]
) -> None:
    """A probe whose endpoint answers 128 MiB reads the status, not the body (RSS stays flat)."""
    own, _ = origins
    probe = {"url": f"{own.url}/big", "expect": [200]}
    manager.store("big", ApiKey(key="sk_big", probe=probe), principal="admin")
    assert manager.test("big", principal="admin").ok
    own.close()  # waits for the handler: the count is final
    assert own.body_bytes_sent < 16 * 1024 * 1024


# -- 16: grant patterns ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "credential_id", "expected"),
    [
        ("team-a/*", "team-a/db", True),
        ("team-a/*", "team-a/x/db", False),
        ("team-a/**", "team-a/x/db", True),
        ("*/db", "team-a/db", True),
        ("*/db", "team-a/x/db", False),
        ("team-?/db", "team-a/db", True),
        ("team-[!b]?db", "team-a/db", False),
        ("*", "team-a/x/db", True),
        ("github-*", "github-prod", True),
    ],
)
def test_grant_patterns_are_segment_aware(pattern: str, credential_id: str, expected: bool) -> None:
    """Wildcards stop at '/', '**' crosses it, and the bare '*' still covers everything."""
    assert expected == pattern_covers(pattern, credential_id)


def test_a_segment_wildcard_grant_does_not_reach_deeper_credentials(
    manager: CredentialManager,
) -> None:
    """A grant on 'team-a/*' lets bob read team-a/db but not team-a/admin/root."""
    manager.store("team-a/db", ApiKey(key="sk_a"), principal="admin")
    manager.store("team-a/admin/root", ApiKey(key="sk_root"), principal="admin")
    manager.grant("bob", "team-a/*", ["read"], principal="admin")
    assert "sk_a" == manager.get("team-a/db", principal="bob").key.reveal()  # type: ignore[attr-defined]
    with pytest.raises(AccessDenied):
        manager.get("team-a/admin/root", principal="bob")


def test_a_prefix_wildcard_grant_is_warned_about() -> None:
    """'team-a*' covers team-admin-root too: the warning says so and suggests 'team-a/*'."""
    warning = pattern_warning("team-a*")
    assert warning is not None and "'team-a/*'" in warning
    assert None is pattern_warning("team-a/*")


# -- 13: the key file and the database file ---------------------------------------------------


def test_a_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    """The key file is opened without following a symlink: a link planted at the path is refused."""
    real = tmp_path / "real.key"
    KeyFileProvider(real).create()
    (tmp_path / "credman.key").symlink_to(real)
    with pytest.raises(KeyringError, match="symlink"):
        KeyFileProvider(tmp_path / "credman.key").load()


@as_root
def test_a_key_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """A 0600 key file that belongs to someone else (planted) is refused, naming the owner."""
    path = tmp_path / "credman.key"
    KeyFileProvider(path).create()
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(KeyringError, match="owned by"):
        KeyFileProvider(path).load()


@as_root
def test_init_refuses_a_planted_key_file(tmp_path: Path) -> None:
    """credman init does not keep and use a key file another user put there first."""
    path = tmp_path / "credman.key"
    KeyFileProvider(path).create()
    os.chown(path, OTHER_UID, OTHER_UID)
    result = _cli(tmp_path, "init")
    assert 1 == result.returncode
    assert "owned by" in result.stderr
    assert not (tmp_path / "credman.db").exists()


def test_the_lock_file_is_not_opened_through_a_symlink(tmp_path: Path) -> None:
    """A symlink planted at the lock path makes rotation refuse; the link's target is not created."""
    path = tmp_path / "credman.key"
    provider = KeyFileProvider(path)
    provider.create()
    victim = tmp_path / "victim"
    (tmp_path / ".credman.key.lock").symlink_to(victim)
    with pytest.raises(KeyringError, match="lock"):
        provider.update(lambda ring: ring.with_new_version())
    assert not victim.exists()
    assert (1,) == provider.load().versions


def test_the_database_and_its_folder_are_private_under_umask_000(
    tmp_path: Path, key_file: Path
) -> None:
    """With umask 000 the SQLite file is created 0600 and a new folder for it 0700."""
    old = os.umask(0)
    try:
        manager = CredentialManager(f"sqlite:///{tmp_path / 'new' / 'c.db'}", str(key_file))
        manager.store("x", ApiKey(key="sk_x"), principal="admin")
        manager.close()
    finally:
        os.umask(old)
    assert 0o700 == stat.S_IMODE((tmp_path / "new").stat().st_mode)
    assert 0o600 == stat.S_IMODE((tmp_path / "new" / "c.db").stat().st_mode)


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CREDMAN_DATABASE_URL": f"sqlite:///{folder / 'credman.db'}",
        "CREDMAN_KEY_FILE": str(folder / "credman.key"),
    }
    command = [sys.executable, "-m", "credman", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


# -- 15: stored text in the terminal -----------------------------------------------------------

HOSTILE = "[/] [bold]x[/bold] \x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ \x1b[2J"


@pytest.mark.parametrize("command", [("status", "t"), ("history", "t"), ("audit", "tail")])
def test_stored_markup_and_escapes_are_printed_inert(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Rich markup and ESC/OSC-8 sequences in a scope or reason are shown escaped, not obeyed."""
    KeyFileProvider(tmp_path / "credman.key").create()
    with CredentialManager(
        f"sqlite:///{tmp_path / 'credman.db'}", str(tmp_path / "credman.key")
    ) as manager:
        credential = OAuth2(
            token_url="https://idp.example/token", client_id="c", refresh_token="r", scope=HOSTILE
        )
        manager.store("t", credential, principal="admin")
        manager.revoke("t", principal="admin", reason=HOSTILE)
    result = _cli(tmp_path, *command)
    assert (0, "") == (result.returncode, result.stderr)
    assert "\x1b" not in result.stdout
    assert "\\x1b" in result.stdout or command[0] == "audit"
    assert "[/]" in result.stdout or command[0] == "audit"


# -- 17: key versions and destructive key operations ---------------------------------------------


def test_a_process_with_an_old_keyring_cannot_write_under_a_retired_version(
    make_manager: Any, key_file: Path
) -> None:
    """A process still holding the pre-rotation ring is refused writes; nothing is written."""
    old_ring = base64.b64encode(key_file.read_bytes()).decode()
    current = make_manager()
    current.store("a", ApiKey(key="sk_a"), principal="admin")
    current.rotate_keys(principal="admin")
    stale = make_manager(key_provider=EnvKeyProvider("OLD", environ={"OLD": old_ring}))
    with pytest.raises(KeyringError, match="older than"):
        stale.store("b", ApiKey(key="sk_b"), principal="admin")
    with pytest.raises(NotFound):
        current.info("b", principal="admin")


def test_keys_rotate_keeps_the_previous_key_file(tmp_path: Path) -> None:
    """After rotation the key file as it was before is kept beside it, 0600."""
    path = tmp_path / "credman.key"
    provider = KeyFileProvider(path)
    provider.create()
    before = path.read_bytes()
    provider.update(lambda ring: ring.with_new_version(), keep_previous=True)
    kept = tmp_path / "credman.key.v1.bak"
    assert before == kept.read_bytes()
    assert 0o600 == stat.S_IMODE(kept.stat().st_mode)


def test_keys_retire_asks_for_confirmation(tmp_path: Path) -> None:
    """'credman keys retire' without --yes (and no terminal to ask) refuses and retires nothing."""
    assert 0 == _cli(tmp_path, "init").returncode
    assert 0 == _cli(tmp_path, "keys", "rotate").returncode
    refused = _cli(tmp_path, "keys", "retire", "1")
    assert 1 == refused.returncode
    assert "--yes" in refused.stderr
    assert (1, 2) == KeyFileProvider(tmp_path / "credman.key").load().versions
    assert 0 == _cli(tmp_path, "keys", "retire", "1", "--yes").returncode
    assert (2,) == KeyFileProvider(tmp_path / "credman.key").load().versions


# -- 19: egress policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd00::1"]
)
def test_the_default_egress_policy_refuses_internal_addresses(host: str) -> None:
    """Link-local (metadata service), private, shared and ULA addresses are refused by default."""
    assert EgressPolicy().refusal(host) is not None


def test_egress_policy_allows_what_it_is_told_to() -> None:
    """An allowed network or host opens exactly that; public addresses stay allowed."""
    policy = EgressPolicy.of(["10.1.0.0/16", "*.corp.example"])
    assert (None, None, None) == (
        policy.refusal("10.1.2.3"),
        policy.refusal("idp.corp.example"),
        policy.refusal("8.8.8.8"),
    )
    assert policy.refusal("10.2.0.1") is not None


def test_a_probe_to_the_metadata_service_is_never_sent(sqlite_url: str, key_file: Path) -> None:
    """A probe URL at 169.254.169.254 is refused by the egress policy before any connection."""
    with CredentialManager(sqlite_url, str(key_file), egress=EgressPolicy()) as manager:
        probe = {"url": "https://169.254.169.254/latest/meta-data/", "expect": [200]}
        manager.store("m", ApiKey(key="sk_m", probe=probe), principal="admin")
        result = manager.test("m", principal="admin")
    assert (False, None, "egress_denied") == (result.ok, result.status, result.error)


def test_loopback_needs_an_explicit_allowance(
    sqlite_url: str, key_file: Path, origins: tuple[Origin, Origin]
) -> None:
    """Without allow_loopback a loopback probe is refused and the server sees nothing."""
    own, _ = origins
    with CredentialManager(sqlite_url, str(key_file), egress=EgressPolicy()) as manager:
        manager.store("l", ApiKey(key="sk_l", probe={"url": f"{own.url}/me"}), principal="admin")
        result = manager.test("l", principal="admin")
    assert ("egress_denied", []) == (result.error, own.seen)


def test_probe_errors_do_not_tell_a_closed_port_from_an_open_one(
    sqlite_url: str, key_file: Path
) -> None:
    """A refused port and a port whose listener hangs up report the same error."""
    listener = socket.create_server(("127.0.0.1", 0))
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True).start()
    with CredentialManager(sqlite_url, str(key_file)) as manager:
        for name, port in (("open", listener.getsockname()[1]), ("closed", closed_port)):
            probe = {"url": f"http://127.0.0.1:{port}/"}
            manager.store(name, ApiKey(key="sk_p", probe=probe), principal="admin")
        errors = {manager.test(name, principal="admin").error for name in ("open", "closed")}
    listener.close()
    assert {"unreachable"} == errors


# -- 4: forced refreshes are rate-limited ----------------------------------------------------------


def test_repeated_401s_do_not_refresh_again_and_again(
    manager: CredentialManager,
    server: TokenServer,
    origins: tuple[Origin, Origin],
    oauth_credential: Any,
) -> None:
    """Five requests answered 401 refresh the token once, not five times."""
    own, _ = origins
    credential = oauth_credential(server, access_token="at-old", expires_in=3600)
    manager.store("gh", credential, principal="admin")
    with httpx.Client(auth=manager.auth("gh", principal="admin")) as client:
        statuses = [client.get(f"{own.url}/401").status_code for _ in range(5)]
    assert ([401] * 5, 1) == (statuses, server.refreshes)
