"""Notifications: frozen events passed to hooks after the change they describe is committed.

A hook is any callable taking a :class:`CredentialEvent`. Hooks run after the commit,
outside any transaction; an exception in a hook is logged and never undoes or fails the
operation. ``refreshed`` events are sent only when asked for (``refreshed_events``).
Repeated ``refresh_failed`` events of one credential are de-duplicated: the first is sent,
then at most one summary (its ``attempts`` says how many so far) every
``failure_summary_every``, until ``recovered``, ``reauthorization_required`` or ``revoked``
ends the streak. De-duplication is per process. :class:`WebhookNotifier` is the built-in
hook: it POSTs the event as JSON with an HMAC-SHA256 signature header and retries a bounded
number of times.

Delivery runs in the background: :meth:`Notifier.emit` puts the events on a bounded
in-process outbox and returns at once, and one delivery thread per notifier (started with
the first event) hands them to the hooks in the order they were emitted, so a slow webhook
never holds the operation that reported it. A full outbox drops its oldest event, counted
and logged, and never blocks the caller. :meth:`Notifier.flush` waits until everything
emitted so far was delivered; :meth:`Notifier.close` drains with a deadline and stops the
thread. The outbox is not durable: events still queued when the process dies are lost (the
audit trail, written in the change's own transaction, still has every change). With
``background=False`` hooks run in the caller's thread, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

import httpx
from loguru import logger

from credman.deadline import Deadline
from credman.logs import own_requests
from credman.oauth import backoff_delay

__all__ = ["CredentialEvent", "EventKind", "Hook", "Notifier", "WebhookNotifier"]


class EventKind(StrEnum):
    """What happened to a credential."""

    REFRESH_FAILED = "refresh_failed"  # a transient failure; retried with backoff
    REAUTHORIZATION_REQUIRED = "reauthorization_required"  # the provider refused the grant
    RECOVERED = "recovered"  # a refresh succeeded after failures
    REFRESHED = "refreshed"  # a refresh succeeded (sent only to notifiers that ask for it)
    EXPIRED = "expired"
    REVOKED = "revoked"
    PROBE_FAILED = "probe_failed"  # the credential no longer works against its probe
    CONNECTED = "connected"  # a connect (first or re-authorisation) stored new tokens
    CONNECT_FAILED = "connect_failed"  # a connect was refused: provider, user or callback


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialEvent:
    """One notification; carries ids, states and error codes, never a secret."""

    kind: EventKind
    credential_id: str
    state: str
    at: datetime
    attempts: int = 0
    error_code: str | None = None
    retry_at: datetime | None = None

    def to_json(self) -> bytes:
        """The canonical JSON body of this event."""
        document = {
            k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class Hook(Protocol):
    """Receives events after the change is committed: any callable taking one event
    positionally (a function, a bound method such as ``events.append``); its result is
    ignored."""

    def __call__(self, event: CredentialEvent, /) -> object:
        """Handle one event; exceptions are logged, not raised."""


class Notifier:
    """Passes committed events to every hook through a bounded outbox, in order; a failing
    hook is logged and skipped."""

    def __init__(
        self,
        hooks: Iterable[Hook] = (),
        *,
        refreshed_events: bool = False,
        failure_summary_every: timedelta = timedelta(minutes=15),
        background: bool = True,
        max_queued: int = 10_000,
    ) -> None:
        if max_queued < 1:
            raise ValueError("max_queued: at least 1")
        self.hooks = tuple(hooks)
        self.refreshed_events = refreshed_events
        self.failure_summary_every = failure_summary_every
        self.background = background
        self.max_queued = max_queued
        self.dropped = 0
        """Events dropped because the outbox was full (or still queued at ``close``)."""
        self._last_failure_sent: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._outbox: deque[CredentialEvent] = deque()
        self._changed = threading.Condition(threading.Lock())
        self._unfinished = 0  # queued plus the one being delivered
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Notifier({len(self.hooks)} hooks)"

    def emit(self, *events: CredentialEvent) -> None:
        """Queue ``events`` for every hook (call only after the change committed); returns
        at once. Without ``background``, deliver them here instead."""
        wanted = [event for event in events if self._wanted(event)]
        if not wanted or not self.hooks:
            return
        if not self.background:
            for event in wanted:
                self._deliver(event)
            return
        with self._changed:
            if self._closed:
                self._drop(len(wanted), "the notifier is closed")
                return
            for event in wanted:
                if len(self._outbox) >= self.max_queued:
                    self._outbox.popleft()
                    self._unfinished -= 1
                    self._drop(1, f"the outbox is full ({self.max_queued} events)")
                self._outbox.append(event)
                self._unfinished += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="credman-notify", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted so far was handed to the hooks; False if
        ``timeout`` seconds ran out first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued for at most ``timeout`` seconds, then stop the thread;
        events still queued are dropped (counted, logged). True if all were delivered."""
        delivered = self.flush(timeout)
        with self._changed:
            self._closed = True
            left = len(self._outbox)
            self._outbox.clear()
            self._unfinished -= left
            if left:
                self._drop(left, f"they were not delivered within {timeout:g} s of closing")
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(0.0 if not delivered else max(timeout, 0.0))
        return delivered

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        logger.warning(
            "notifications: dropped {} event(s), {} dropped so far: {}", count, self.dropped, why
        )

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._outbox or self._closed)
                if not self._outbox:
                    return  # closed and drained
                event = self._outbox.popleft()
            try:
                self._deliver(event)
            finally:
                with self._changed:
                    self._unfinished -= 1
                    self._changed.notify_all()

    def _deliver(self, event: CredentialEvent) -> None:
        for hook in self.hooks:
            try:
                hook(event)
            except Exception as exc:  # a hook never undoes or fails a committed change
                logger.error("notification hook failed: {}", type(exc).__name__)

    def _wanted(self, event: CredentialEvent) -> bool:
        """Whether ``event`` goes out: opt-in kinds and the failure de-duplication."""
        if event.kind is EventKind.REFRESHED:
            return self.refreshed_events
        with self._lock:
            if event.kind in _ENDS_STREAK:
                self._last_failure_sent.pop(event.credential_id, None)
                return True
            if event.kind is not EventKind.REFRESH_FAILED:
                return True
            last = self._last_failure_sent.get(event.credential_id)
            if last is not None and event.at - last < self.failure_summary_every:
                return False
            self._last_failure_sent[event.credential_id] = event.at
            return True


_ENDS_STREAK = frozenset(
    {EventKind.RECOVERED, EventKind.REAUTHORIZATION_REQUIRED, EventKind.REVOKED}
)


class WebhookNotifier:
    """POSTs events as JSON, signed ``X-Credman-Signature: sha256=<hex HMAC of the body>``."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        attempts: int = 3,
        timeout: float = 5.0,
        total: float = 15.0,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self._secret = secret
        self._attempts = attempts
        self._timeout = timeout
        self._total = total
        self._client = client or httpx.Client()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r})"

    def signature(self, body: bytes) -> str:
        """The signature header value for ``body``."""
        return "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    def __call__(self, event: CredentialEvent) -> None:
        """Deliver ``event``; retry 5xx and transport errors up to ``attempts`` times.

        ``timeout`` bounds each attempt as a whole (connect to last byte, not per read) and
        ``total`` all attempts and pauses together, so a slow receiver costs at most that.
        """
        if not self.send(event.to_json(), event.kind.value):
            logger.warning("webhook gave up on {} for {!r}", event.kind.value, event.credential_id)

    def send(self, body: bytes, kind: str) -> bool:
        """POST ``body`` (JSON) as event ``kind``, signed, with the retries and deadlines
        of ``__call__``; whether the receiver took it."""
        headers = {
            "Content-Type": "application/json",
            "X-Credman-Event": kind,
            "X-Credman-Signature": self.signature(body),
        }
        ends = time.monotonic() + self._total
        for attempt in range(self._attempts):
            left = ends - time.monotonic()
            if left <= 0:
                break
            if self._deliver(body, headers, min(self._timeout, left)):
                return True
            pause = backoff_delay(attempt, base=0.2, cap=2.0)
            if attempt + 1 < self._attempts and time.monotonic() + pause < ends:
                self._sleep(pause)
        return False

    def _deliver(self, body: bytes, headers: dict[str, str], seconds: float) -> bool:
        deadline = Deadline(seconds)
        try:
            with own_requests(), deadline:
                request = self._client.build_request(
                    "POST",
                    self.url,
                    content=body,
                    headers=headers,
                    timeout=deadline.timeout(),
                    extensions={"trace": deadline.trace},
                )
                response = self._client.send(request, stream=True)
                response.close()  # the status is the answer; the body is not read
        except httpx.HTTPError as exc:
            logger.info("webhook delivery failed: {}", type(exc).__name__)
            return False
        if response.status_code < 500:
            return True
        logger.info("webhook answered HTTP {}", response.status_code)
        return False
