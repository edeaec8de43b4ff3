"""Twenty components behind two ``credman serve --http`` processes sharing PostgreSQL: a 401
at the resource causes exactly one token request at the provider."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from credman import CredentialManager, Permission
from credman.client import Client

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import TLS

    from credman import OAuth2
    from credman.testing.provider import TokenServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

COMPONENTS = 20


def test_one_refresh_for_twenty_components_on_two_server_processes(
    postgres_url: str,
    key_file: Path,
    tls: TLS,
    provider: TokenServer,
    stale_oauth: OAuth2,
    service_process: Callable[[str], str],
) -> None:
    """20 clients on 2 server processes report the same rejected version; the provider sees
    one token request and every retry succeeds."""
    with CredentialManager(postgres_url, str(key_file)) as manager:
        manager.store("github-x", stale_oauth, principal="admin")
        _, token = manager.add_principal("sync-worker", principal="admin")
        manager.grant("sync-worker", "github-*", {Permission.USE}, principal="admin")
    urls = [service_process(postgres_url), service_process(postgres_url)]
    with ExitStack() as stack:
        clients = [
            stack.enter_context(Client(urls[i % 2], token=token, verify=tls[0]))
            for i in range(COMPONENTS)
        ]
        for client in clients:  # every component holds version 1 before the 401s
            client.access("github-x")
        barrier = threading.Barrier(COMPONENTS)
        statuses: list[int] = []

        def call(client: Client) -> None:
            with httpx.Client(auth=client.auth("github-x")) as http:
                barrier.wait()
                statuses.append(http.get(provider.resource_url).status_code)

        threads = [threading.Thread(target=call, args=(c,)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert ([200] * COMPONENTS, 1) == (statuses, provider.token_requests)
    assert COMPONENTS == sum(c.stats.refreshes_requested for c in clients)
