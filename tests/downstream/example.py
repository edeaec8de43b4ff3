"""A downstream project's code, type-checked with ``mypy --strict`` against the installed wheel
(``make downstream``): the README's example and the idioms users write."""

from __future__ import annotations

import httpx

from credman import (
    Access,
    ApiKey,
    BasicAuth,
    CredentialEvent,
    CredentialManager,
    OAuth2,
    Permission,
    WebhookNotifier,
)
from credman.testing import time_machine

mgr = CredentialManager(
    "sqlite:///./credman.db", "./credman.key"
)  # or CredentialManager.from_env()

mgr.store(
    "github-prod",
    OAuth2(
        token_url="https://github.com/login/oauth/access_token",
        client_id="Iv1.abc",
        client_secret="...",
        access_token="gho_...",
        refresh_token="ghr_...",
        expires_in=28800,
    ),
    principal="admin",
)
mgr.store(
    "erp",
    OAuth2(
        token_url="https://erp.example/oauth/token",
        client_id="svc",
        client_secret="...",
        grant_type="client_credentials",
        client_auth="client_secret_basic",
    ),
    principal="admin",
)
mgr.store(
    "stripe", ApiKey(key="sk_live_...", header="Authorization", prefix="Bearer "), principal="admin"
)
mgr.store("legacy", BasicAuth(username="svc", password="..."), principal="admin")
mgr.grant("sync-worker", "github-*", {Permission.USE}, principal="admin")

cred = mgr.get("github-prod", principal="admin", as_type=OAuth2)  # READ: the whole credential
token: str | None = cred.access_token.reveal() if cred.access_token else None

access: Access = mgr.access("github-prod", principal="sync-worker", min_ttl=30)
headers: dict[str, str] = dict(access.headers)
with httpx.Client(auth=mgr.auth("github-prod", principal="sync-worker")) as client:
    client.get("https://api.github.com/user")  # injected; a 401 refreshes once and retries

info = mgr.info("github-prod", principal="sync-worker")
print(info.state, info.version, info.expires_at)
history = mgr.history("github-prod", principal="admin")
mgr.refresh("github-prod", principal="admin", force=True)
mgr.revoke("github-prod", principal="admin", reason="offboarded")
report = mgr.tick()
mgr.rotate_keys(principal="admin")
ok: bool = mgr.verify_audit().ok

# hooks: any callable taking a CredentialEvent, e.g. a list's append
events: list[CredentialEvent] = []
with CredentialManager("sqlite:///./other.db", "./credman.key", hooks=[events.append]) as other:
    other.tick()
    delivered: bool = other.flush_events(timeout=5.0)  # hooks run in the background

# configuration from the environment takes only the constructor's keywords
CredentialManager.from_env(bogus=1)  # type: ignore[call-arg]

# a credential test, as the README shows it
mgr.store(
    "api",
    ApiKey(key="k", probe={"url": "https://api.example/me", "expect": [200]}),
    principal="admin",
)

# notifications: the built-in webhook is a hook too
hooked = CredentialManager(
    "sqlite:///./hooked.db",
    "./credman.key",
    hooks=[WebhookNotifier("https://hooks.example/credman", b"shared-secret"), print],
)

# time-frozen tests of your own code
with time_machine(mgr, "2026-01-01 00:00:00") as clock:
    refreshed: int = clock.advance(minutes=56).refreshed
