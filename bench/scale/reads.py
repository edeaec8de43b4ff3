"""Reads through the manager: the sampled check during a window, and the audit readers.

The sampler reads a random credential every few hundred milliseconds while the serve
processes run and asks the provider whether the token it was handed still works
(``GET /resource`` of the farm process that issued it answers 200 only for a live token
of a standing grant). A seeded token was never issued by the farm, so it is checked
against the expiry the seed gave it, which the harness knows.

``python -m bench.scale.reads DATABASE_URL KEY_FILE`` is one audit-throughput reader
process: told ``{"run": SECONDS, "op": "access"|"info", "ids": [...]}`` on stdin, it reads
as fast as it can and answers with its count and latencies.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from credman import CredentialManager

__all__ = ["READER", "Sampler", "main", "percentile"]

READER = "bench-reader"


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def read_headers(manager: CredentialManager, credential_id: str) -> tuple[dict[str, str], Any]:
    """What a component would put on its request, and the material's expiry."""
    material = manager.access(credential_id, principal=READER)
    return dict(material.headers), material.expires_at


@dataclass(slots=True)
class SampleTally:
    reads: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    expired: int = 0
    """Tokens handed out that the provider (or the seed's expiry) says are dead."""
    checked_at_provider: int = 0
    checked_against_seed: int = 0
    latency_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "reads": self.reads,
            "expired_handed_out": self.expired,
            "checked_at_provider": self.checked_at_provider,
            "checked_against_seed": self.checked_against_seed,
            "errors": self.errors,
            "read_ms_p50": _ms(percentile(self.latency_ms, 0.5)),
            "read_ms_p99": _ms(percentile(self.latency_ms, 0.99)),
            "read_ms_max": _ms(max(self.latency_ms, default=None)),
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Sampler:
    """A thread reading random credentials and checking each token at its provider."""

    def __init__(
        self,
        manager: CredentialManager,
        resource_url: Callable[[int], str],
        rows: int,
        every: float,
    ) -> None:
        self._manager, self._resource_url, self._rows, self._every = (
            manager,
            resource_url,
            rows,
            every,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self.tally = SampleTally()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.wait(self._every):
                self._sample(http, random.randrange(self._rows))

    def _sample(self, http: httpx.Client, index: int) -> None:
        from bench.scale.seed import credential_id

        started = time.perf_counter()
        try:
            headers, expires_at = read_headers(self._manager, credential_id(index))
        except Exception as exc:  # a refused read is counted, not fatal
            name = type(exc).__name__
            self.tally.errors[name] = self.tally.errors.get(name, 0) + 1
            return
        self.tally.latency_ms.append((time.perf_counter() - started) * 1000)
        self.tally.reads += 1
        if headers.get("Authorization", "").startswith("Bearer seed-"):
            self.tally.checked_against_seed += 1
            self.tally.expired += expires_at is None or datetime.now(UTC) >= expires_at
            return
        self.tally.checked_at_provider += 1
        answer = http.get(self._resource_url(index), headers=headers)
        self.tally.expired += answer.status_code != 200


def _read_for(
    manager: CredentialManager, op: str, ids: Sequence[str], seconds: float
) -> dict[str, Any]:
    call: Callable[[str], Any]
    if op == "info":
        call = lambda cid: manager.info(cid, principal=READER)  # noqa: E731
    else:  # "access": an audited read of the material, whatever the type
        call = lambda cid: manager.access(cid, principal=READER)  # noqa: E731
    latencies: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        call(random.choice(ids))
        latencies.append((time.perf_counter() - started) * 1000)
    return {
        "ops": len(latencies),
        "seconds": seconds,
        "ms_p50": _ms(percentile(latencies, 0.5)),
        "ms_p99": _ms(percentile(latencies, 0.99)),
    }


def main(argv: list[str]) -> int:
    """One reader process: waits for a run command, reads, answers; repeats until EOF."""
    database_url, key_file = argv
    with CredentialManager(database_url, key_file, migrate_schema=False) as manager:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if "quit" in command:
                break
            if "start_at" in command:  # all readers start together
                time.sleep(max(0.0, command["start_at"] - time.time()))
            print(
                json.dumps(_read_for(manager, command["op"], command["ids"], command["run"])),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
