"""Twenty components behind two ``credman serve --http`` processes sharing PostgreSQL: a 401
at the resource causes exactly one token request at the provider."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from _service import serve_process
from conftest import CLIENT, SECRET
from servicekit import issue_tls

from credman import CredentialManager, OAuth2, Permission
from credman.client import Client
from credman.tokenserver import TokenServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

COMPONENTS = 20


def test_one_refresh_for_twenty_components_on_two_server_processes(
    postgres_url: str, key_file: Path, tmp_path: Path
) -> None:
    """20 clients on 2 server processes report the same rejected version; the provider sees
    one token request and every retry succeeds."""
    with TokenServer(clients={CLIENT: SECRET}, access_token_lifetime=3600) as provider:
        with CredentialManager(postgres_url, str(key_file)) as manager:
            manager.store(
                "github-x",
                OAuth2(
                    token_url=provider.url,
                    client_id=CLIENT,
                    client_secret=SECRET,
                    access_token="revoked-at-the-provider",
                    refresh_token=provider.grant(CLIENT),
                    expires_in=3600,
                ),
                principal="admin",
            )
            _, token = manager.add_principal("sync-worker", principal="admin")
            manager.grant("sync-worker", "github-*", {Permission.USE}, principal="admin")
        tls = issue_tls(tmp_path)
        with ExitStack() as stack:
            urls = [stack.enter_context(serve_process(postgres_url, key_file, tls)) for _ in "ab"]
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
