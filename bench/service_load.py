"""Load for the service benchmark, in a process of its own: N concurrent uncached clients.

``python -m bench.service_load URLS SECONDS CLIENTS CREDENTIAL`` (the token in
``CREDMAN_TOKEN`` and the CA file in ``CREDMAN_CA``, never on the command line) runs ``CLIENTS``
AsyncClients (``cache=False``, one keep-alive connection each, spread over the
comma-separated ``URLS``) that call ``access()`` back to back for ``SECONDS``, then prints
one JSON line: requests, errors, elapsed seconds and per-request p50/p99 in microseconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time

from credman.client import AsyncClient
from credman.errors import CredentialError


async def _worker(client: AsyncClient, credential_id: str, until: float, samples: list[int]) -> int:
    errors = 0
    while time.monotonic() < until:
        start = time.perf_counter_ns()
        try:
            await client.access(credential_id)
        except CredentialError:
            errors += 1
        samples.append(time.perf_counter_ns() - start)
    return errors


def _percentile(ordered: list[int], percent: float) -> float:
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return round(ordered[rank - 1] / 1000, 1)


async def _run(
    urls: list[str], token: str, ca: str, seconds: float, clients: int, credential_id: str
) -> dict[str, float]:
    pool = [
        AsyncClient(urls[i % len(urls)], token=token, verify=ca, cache=False)
        for i in range(clients)
    ]
    for client in pool:  # connect (TLS handshake) before the clock starts
        await client.access(credential_id)
    samples: list[int] = []
    started = time.monotonic()
    until = started + seconds
    errors = await asyncio.gather(*(_worker(c, credential_id, until, samples) for c in pool))
    elapsed = time.monotonic() - started
    for client in pool:
        await client.aclose()
    ordered = sorted(samples)
    return {
        "requests": len(ordered),
        "errors": sum(errors),
        "seconds": round(elapsed, 2),
        "per_second": round(len(ordered) / elapsed, 1),
        "p50_us": _percentile(ordered, 50),
        "p99_us": _percentile(ordered, 99),
    }


def main() -> None:
    """Parse the arguments, run the load, print the JSON line."""
    urls, seconds, clients, credential_id = sys.argv[1:5]
    token, ca = os.environ["CREDMAN_TOKEN"], os.environ["CREDMAN_CA"]
    result = asyncio.run(
        _run(urls.split(","), token, ca, float(seconds), int(clients), credential_id)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
