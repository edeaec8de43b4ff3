"""The peers credman is compared with: Fernet (as Airflow encrypts) and Authlib's OAuth2 client.

Builders for each peer's operation and for credman's equivalent, timed in the same run:
Fernet encrypt+decrypt against credman's envelope seal+open of the same token-sized value,
and an Authlib refresh-token round trip against ``credman.oauth.request_token``, both
against the same loopback token server with rotating refresh tokens.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import httpx
from cryptography.fernet import Fernet

from bench.measure import Operation
from bench.phase import Phase
from bench.workload import ACCESS_TOKEN, AUTHLIB_CLIENT, CLIENT_SECRETS, CREDMAN_CLIENT
from credman import OAuth2
from credman.crypto import new_data_key, open_field, seal_field, unwrap, wrap
from credman.oauth import request_token

with warnings.catch_warnings(record=True):  # Authlib 1.9 warns that it prefers httpx2
    from authlib.integrations.httpx_client import OAuth2Client

__all__ = [
    "authlib_refresh",
    "credman_request_token",
    "envelope_round_trip",
    "fernet_round_trip",
    "field_round_trip",
]

_ID = "bench-crypto"
_FIELD = "access_token"


def fernet_round_trip(_phase: Phase) -> Operation:
    """Fernet encrypt then decrypt of the token-sized value, one key (Airflow's recipe)."""
    fernet = Fernet(Fernet.generate_key())
    value = ACCESS_TOKEN.encode()
    return lambda: fernet.decrypt(fernet.encrypt(value))


def envelope_round_trip(phase: Phase) -> Operation:
    """credman's envelope for one field: new data key, wrap, seal, then unwrap and open."""
    keyring = phase.keyring

    def round_trip() -> str:
        data_key = new_data_key()
        wrapped = wrap(keyring, data_key, credential_id=_ID)
        blob = seal_field(data_key, ACCESS_TOKEN, credential_id=_ID, field=_FIELD)
        opened_key = unwrap(keyring, wrapped, credential_id=_ID)
        return open_field(opened_key, blob, credential_id=_ID, field=_FIELD)

    return round_trip


def field_round_trip(_phase: Phase) -> Operation:
    """Only the AES-GCM seal and open of one field under a data key already at hand."""
    data_key = new_data_key()

    def round_trip() -> str:
        blob = seal_field(data_key, ACCESS_TOKEN, credential_id=_ID, field=_FIELD)
        return open_field(data_key, blob, credential_id=_ID, field=_FIELD)

    return round_trip


def authlib_refresh(phase: Phase) -> Operation:
    """Authlib's ``OAuth2Client.refresh_token``, always with its newest refresh token."""
    client = OAuth2Client(
        client_id=AUTHLIB_CLIENT,
        client_secret=CLIENT_SECRETS[AUTHLIB_CLIENT],
        token_endpoint_auth_method="client_secret_post",
        trust_env=False,  # loopback only, whatever proxy the environment names
    )
    phase.closers.callback(client.close)
    client.token = {
        "access_token": "bench-initial-access-token",
        "token_type": "Bearer",
        "refresh_token": phase.server.grant(AUTHLIB_CLIENT),
    }
    url = phase.server.url
    return lambda: client.refresh_token(url, refresh_token=client.token["refresh_token"])


class _RotatingRequest:
    """``request_token`` with an httpx client, keeping the newest tokens as a caller must."""

    def __init__(self, client: httpx.Client, credential: OAuth2) -> None:
        self._client = client
        self._credential = credential

    def __call__(self) -> None:
        current = self._credential
        grant = request_token(self._client, current, now=datetime.now(UTC))
        self._credential = current.with_material(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token or current.refresh_token,
        )


def credman_request_token(phase: Phase) -> Operation:
    """credman's token request (build, send, parse) against the same server as Authlib."""
    client = httpx.Client(trust_env=False)
    phase.closers.callback(client.close)
    credential = OAuth2(
        token_url=phase.server.url,
        client_id=CREDMAN_CLIENT,
        client_secret=CLIENT_SECRETS[CREDMAN_CLIENT],
        refresh_token=phase.server.grant(CREDMAN_CLIENT),
    )
    return _RotatingRequest(client, credential)
