"""A downstream project's code, type-checked with ``mypy --strict`` against the installed wheel
(``make downstream``): the README's example and the idioms users write."""

from __future__ import annotations

import httpx

from credman import ApiKey, BasicAuth, CredentialManager, OAuth2, Permission
from credman.notify import CredentialEvent

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

cred = mgr.get("github-prod", principal="sync-worker", as_type=OAuth2)  # refreshed first if due
token: str | None = cred.access_token.reveal() if cred.access_token else None

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

# configuration from the environment takes only the constructor's keywords
CredentialManager.from_env(bogus=1)  # type: ignore[call-arg]
