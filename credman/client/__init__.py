"""The components' client for ``credman serve --http``: ``Client`` and ``AsyncClient``.

    from credman.client import Client

    with Client.from_env() as client:          # CREDMAN_URL, CREDMAN_TOKEN, CREDMAN_CA
        acc = client.access("github-prod")     # Access, cached up to max_age (30 s)
        with httpx.Client(auth=client.auth("github-prod")) as http:
            http.get("https://api.github.com/user")   # a 401 asks for a fresh version once

A component holds only its principal token: never the key file or the database URL.
"""

from credman.client._async import AsyncClient
from credman.client._cache import ClientStats
from credman.client._sync import Client
from credman.client._wire import ServiceError

__all__ = ["AsyncClient", "Client", "ClientStats", "ServiceError"]
