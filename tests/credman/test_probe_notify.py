"""Credential testing against a probe, periodic re-tests, and webhook notifications."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from freezegun import freeze_time

from credman import ApiKey, BasicAuth, CredentialManager, CredentialValidationError, OAuth2
from credman.notify import CredentialEvent, EventKind, WebhookNotifier
from credman.testing.provider import TokenServer

CLIENT, SECRET = "client-1", "client-secret-1"
START = datetime(2026, 3, 1, 10, tzinfo=UTC)


class _Recorder(BaseHTTPRequestHandler):
    """A loopback endpoint: answers with the next queued status, records what it got."""

    server: _RecordingServer

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *_: Any) -> None:
        """Quiet: requests carry secrets."""


class _RecordingServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.statuses: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def endpoint() -> Iterator[_RecordingServer]:
    server = _RecordingServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_probe_applies_the_credential_and_records_the_outcome(
    manager: CredentialManager, endpoint: _RecordingServer
) -> None:
    """test() sends the probe with the API key in place; the outcome is kept and audited."""
    probe = {"url": f"{endpoint.url}/me", "expect": [200, 204]}
    manager.store("k", ApiKey(key="sk-1", header="X-Key", probe=probe), principal="admin")
    version = manager.info("k", principal="admin").version
    result = manager.test("k", principal="admin")
    assert (True, 200) == (result.ok, result.status)
    assert ("GET", "/me", "sk-1") == (
        endpoint.requests[0][0],
        endpoint.requests[0][1],
        endpoint.requests[0][2]["X-Key"],
    )
    assert version == manager.info("k", principal="admin").version
    event = manager.audit_events(principal="admin", limit=1)[0]
    assert ("test", "ok", 200) == (event.action, event.outcome, event.detail["status"])


def test_failed_probe_is_reported(make_manager: Any, endpoint: _RecordingServer) -> None:
    """A probe answered 403 (a silently revoked key) fails, audits and notifies."""
    events: list[CredentialEvent] = []
    manager = make_manager(hooks=[events.append])
    manager.store(
        "b", BasicAuth(username="u", password="p", probe={"url": endpoint.url}), principal="admin"
    )
    endpoint.statuses.append(403)
    result = manager.test("b", principal="admin")
    assert (False, 403) == (result.ok, result.status)
    assert manager.flush_events()
    assert [(EventKind.PROBE_FAILED, "403")] == [(e.kind, e.error_code) for e in events]
    assert endpoint.requests[0][2]["Authorization"].startswith("Basic ")


def test_probe_401_refreshes_once_and_retests(manager: CredentialManager) -> None:
    """An OAuth credential whose token the resource rejects is refreshed and tested again."""
    with TokenServer(clients={CLIENT: SECRET}) as server:
        credential = OAuth2(
            token_url=server.url,
            client_id=CLIENT,
            client_secret=SECRET,
            refresh_token=server.grant(CLIENT),
            access_token="stale",
            expires_in=3600,
            probe={"url": server.resource_url},
        )
        manager.store("gh", credential, principal="admin")
        result = manager.test("gh", principal="admin")
        assert (True, 1) == (result.ok, server.refreshes)


def test_credential_without_probe_cannot_be_tested(manager: CredentialManager) -> None:
    """test() on a credential with no probe is a validation error naming 'probe'."""
    manager.store("k", ApiKey(key="x"), principal="admin")
    with pytest.raises(CredentialValidationError) as raised:
        manager.test("k", principal="admin")
    assert ("probe",) == raised.value.fields


def test_scheduler_retests_probes_periodically(
    manager: CredentialManager, endpoint: _RecordingServer
) -> None:
    """A never-expiring key with a probe is tested at once and then every probe interval."""
    with freeze_time(START) as frozen:
        manager.store("k", ApiKey(key="x", probe={"url": endpoint.url}), principal="admin")
        assert 1 == manager.tick().probed
        frozen.tick(timedelta(hours=5))
        assert 0 == manager.tick().probed
        frozen.tick(timedelta(hours=1))
        endpoint.statuses.append(401)
        report = manager.tick()
    assert (1, 1) == (report.probed, report.probe_failures)
    assert 2 == len(endpoint.requests)


def test_webhook_is_signed_and_retried(endpoint: _RecordingServer) -> None:
    """The webhook POSTs JSON signed with HMAC-SHA256 and retries a 5xx, within bounds."""
    notifier = WebhookNotifier(
        f"{endpoint.url}/hook", b"hook-secret", attempts=3, sleep=lambda _: None
    )
    endpoint.statuses.extend([503, 502])
    event = CredentialEvent(
        kind=EventKind.REAUTHORIZATION_REQUIRED,
        credential_id="gh",
        state="EXPIRED",
        at=START,
        attempts=1,
        error_code="invalid_grant",
    )
    notifier(event)
    assert 3 == len(endpoint.requests)
    _, path, headers, body = endpoint.requests[-1]
    expected = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    assert ("/hook", expected) == (path, headers["X-Credman-Signature"])
    assert {"kind": "reauthorization_required", "credential_id": "gh"}.items() <= json.loads(
        body
    ).items()


def test_webhook_gives_up_after_its_attempts(endpoint: _RecordingServer) -> None:
    """A receiver that keeps failing gets exactly `attempts` deliveries, then credman moves on."""
    notifier = WebhookNotifier(endpoint.url, b"k", attempts=2, sleep=lambda _: None)
    endpoint.statuses.extend([500, 500, 500])
    notifier(CredentialEvent(kind=EventKind.EXPIRED, credential_id="x", state="EXPIRED", at=START))
    assert 2 == len(endpoint.requests)


def test_a_failing_hook_does_not_fail_the_operation(make_manager: Any) -> None:
    """An exception in a hook is logged; the revoke it reports still succeeds."""

    def broken(event: CredentialEvent) -> None:
        raise RuntimeError("hook down")

    manager = make_manager(hooks=[broken])
    manager.store("k", ApiKey(key="x"), principal="admin")
    assert "REVOKED" == manager.revoke("k", principal="admin").state
    assert manager.flush_events()  # the hook ran (and failed) in the background
