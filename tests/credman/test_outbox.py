"""The notification outbox: hooks run after the commit in one background thread per manager,
in order, bounded, drained with a deadline on close (issue #16, item 18)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from credman import ApiKey, CredentialManager, WebhookNotifier
from credman.notify import CredentialEvent, EventKind, Notifier

SECRET = b"outbox-webhook-secret"


class _Handler(BaseHTTPRequestHandler):
    server: _SlowReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        receiver = self.server
        receiver.arrived.set()
        receiver.release.wait(receiver.hold_seconds)  # a receiver that takes its time
        status = receiver.statuses.pop(0) if receiver.statuses else 200
        receiver.requests.append((dict(self.headers), body, status))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        """Quiet."""


class _SlowReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.statuses: list[int] = []
        self.hold_seconds = 0.0
        self.arrived = threading.Event()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[_SlowReceiver]:
    server = _SlowReceiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def _event(n: int, credential_id: str = "c") -> CredentialEvent:
    return CredentialEvent(
        kind=EventKind.REVOKED, credential_id=credential_id, state="REVOKED",
        at=datetime(2026, 1, 1, tzinfo=UTC), attempts=n,
    )  # fmt: skip


def test_revoke_returns_at_once_while_a_webhook_takes_20_seconds(
    make_manager: Callable[..., CredentialManager], receiver: _SlowReceiver
) -> None:
    """The webhook holds the request for up to 20 s: revoke() returns in milliseconds, and
    the signed event arrives once the receiver answers."""
    receiver.hold_seconds = 20.0
    webhook = WebhookNotifier(receiver.url, SECRET, attempts=1, timeout=25.0, total=25.0)
    manager = make_manager(hooks=[webhook])
    manager.store("k", ApiKey(key="x"), principal="admin")
    started = time.monotonic()
    info = manager.revoke("k", principal="admin")
    took = time.monotonic() - started
    assert "REVOKED" == info.state
    assert took < 1.0, f"revoke waited {took:.2f} s for the webhook"
    assert receiver.arrived.wait(5.0), "the webhook was never called"
    assert not manager.flush_events(0.2)  # still in the receiver's hands
    receiver.release.set()
    assert manager.flush_events(10.0)
    headers, body, _ = receiver.requests[0]
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert (expected, "revoked", "k") == (
        headers["X-Credman-Signature"],
        json.loads(body)["kind"],
        json.loads(body)["credential_id"],
    )


def test_a_webhook_failing_twice_is_retried_in_the_background(
    make_manager: Callable[..., CredentialManager], receiver: _SlowReceiver
) -> None:
    """503, 503, then 200: the delivery thread retries with backoff; revoke never waits."""
    receiver.statuses = [503, 503]
    webhook = WebhookNotifier(receiver.url, SECRET, attempts=3, timeout=2.0, total=10.0)
    manager = make_manager(hooks=[webhook])
    manager.store("k", ApiKey(key="x"), principal="admin")
    started = time.monotonic()
    manager.revoke("k", principal="admin")
    assert time.monotonic() - started < 1.0
    assert manager.flush_events(10.0)
    assert [503, 503, 200] == [status for _, _, status in receiver.requests]


def test_hooks_receive_events_in_order_per_credential(
    make_manager: Callable[..., CredentialManager],
) -> None:
    """A slow hook still sees every credential's events in the order they happened."""
    seen: list[tuple[str, str]] = []

    def slow(event: CredentialEvent) -> None:
        time.sleep(0.005)
        seen.append((event.credential_id, event.kind.value))

    manager = make_manager(hooks=[slow])
    names = [f"c{n}" for n in range(8)]
    for name in names:
        manager.store(name, ApiKey(key="x"), principal="admin")
    for name in names:
        manager.revoke(name, principal="admin")
    assert manager.flush_events(10.0)
    assert [(name, "revoked") for name in names] == seen


def test_a_full_outbox_drops_the_oldest_never_blocks_and_counts(log_lines: list[str]) -> None:
    """Capacity 3 and a stuck hook: emit returns at once, the oldest queued events go, the
    count and a warning say so, and the newest are delivered once the hook moves again."""
    entered, release = threading.Event(), threading.Event()
    delivered: list[int] = []

    def stuck(event: CredentialEvent) -> None:
        entered.set()
        release.wait(10.0)
        delivered.append(event.attempts)

    notifier = Notifier([stuck], max_queued=3)
    notifier.emit(_event(0))
    assert entered.wait(5.0)  # event 0 is in the hook; the queue is empty
    before = len(log_lines)
    started = time.monotonic()
    notifier.emit(*(_event(n) for n in range(1, 6)))
    assert time.monotonic() - started < 0.1
    release.set()
    assert notifier.flush(5.0)
    assert ([0, 3, 4, 5], 2) == (delivered, notifier.dropped)
    assert any("dropped 1 event(s), 2 dropped so far" in line for line in log_lines[before:])
    notifier.close(1.0)


def test_close_delivers_what_is_queued(make_manager: Callable[..., CredentialManager]) -> None:
    """close() waits for the queued events (within its deadline) before it returns."""
    seen: list[str] = []

    def slow(event: CredentialEvent) -> None:
        time.sleep(0.05)
        seen.append(event.credential_id)

    manager = make_manager(hooks=[slow])
    for name in ("a", "b", "c"):
        manager.store(name, ApiKey(key="x"), principal="admin")
        manager.revoke(name, principal="admin")
    assert len(seen) < 3  # still queued: delivery is not in the caller's thread
    manager.close()
    assert ["a", "b", "c"] == seen


def test_close_gives_up_at_its_deadline_and_counts_the_rest() -> None:
    """A hook that never returns cannot hold close() past its deadline; queued events
    are counted as dropped and later emits are refused, not queued."""
    entered, release = threading.Event(), threading.Event()

    def never_returns(_: CredentialEvent) -> None:
        entered.set()
        release.wait(10.0)

    notifier = Notifier([never_returns])
    notifier.emit(_event(0), _event(1), _event(2))
    assert entered.wait(5.0)
    started = time.monotonic()
    assert not notifier.close(0.3)
    took = time.monotonic() - started
    notifier.emit(_event(3))
    release.set()
    assert (True, 3) == (0.3 <= took < 1.5, notifier.dropped)


def test_inline_delivery_when_asked(make_manager: Callable[..., CredentialManager]) -> None:
    """background_hooks=False runs hooks in the caller's thread, before revoke() returns."""
    threads: list[str] = []
    manager = make_manager(
        hooks=[lambda _: threads.append(threading.current_thread().name)], background_hooks=False
    )
    manager.store("k", ApiKey(key="x"), principal="admin")
    manager.revoke("k", principal="admin")
    assert [threading.current_thread().name] == threads


def test_time_machine_hands_over_the_events_of_its_sweep(
    make_manager: Callable[..., CredentialManager],
) -> None:
    """credman.testing's advance() returns once the hooks have the sweep's events, so a
    downstream test may assert on hooks=[events.append] straight after it."""
    from credman import BearerToken
    from credman.testing import time_machine

    events: list[CredentialEvent] = []

    def slow(event: CredentialEvent) -> None:
        time.sleep(0.2)  # real time: freezegun does not stop a sleep
        events.append(event)

    manager = make_manager(hooks=[slow])
    with time_machine(manager, "2026-01-01 00:00:00") as clock:
        manager.store("b", BearerToken(token="t", expires_in=60), principal="admin")
        report = clock.advance(minutes=5)
    assert (1, [EventKind.EXPIRED]) == (report.expired, [e.kind for e in events])
