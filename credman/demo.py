"""``credman demo``: the end-to-end walkthrough on an embedded default, told step by step.

Everything is real: a SQLite database and a 0600 key file in the demo folder, an OAuth2
token endpoint on loopback (:class:`~credman.testing.provider.TokenServer`), APScheduler running
the sweep, httpx calling a protected resource. Token lifetimes are a few seconds so that
refreshes and an expiry happen while you watch.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.table import Table

from credman.crypto import KeyFileProvider
from credman.diagrams import write_credential_path, write_lifecycle_diagrams
from credman.egress import EgressPolicy
from credman.errors import AccessDenied, CredentialUnusable
from credman.lifecycle import ApiKey, BasicAuth, BearerToken, JWTBearer, OAuth2, Permission
from credman.manager import CredentialManager
from credman.scheduler import CredentialScheduler
from credman.testing.provider import TokenServer

__all__ = ["run_demo"]

CLIENT, SECRET = "demo-client", "demo-client-secret"


class _Story:
    """Numbered steps on a rich console."""

    def __init__(self, console: Console) -> None:
        self.console, self.number = console, 0

    def step(self, title: str) -> None:
        self.number += 1
        self.console.rule(f"[bold]{self.number}. {title}")

    def say(self, text: str) -> None:
        self.console.print(text)


def _ec_key() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private.decode(), public.decode()


def _credentials(server: TokenServer, private_pem: str, lifetime: float) -> dict[str, object]:
    return {
        "github-prod": OAuth2(
            token_url=server.url,
            client_id=CLIENT,
            client_secret=SECRET,
            refresh_token=server.grant(CLIENT),
            scope="repo",
        ),
        "erp": OAuth2(
            token_url=server.url,
            client_id=CLIENT,
            client_secret=SECRET,
            grant_type="client_credentials",
            client_auth="client_secret_basic",
        ),
        "gcp": JWTBearer(
            token_url=server.url,
            issuer="demo@svc",
            subject="demo@svc",
            audience=server.url,
            private_key=private_pem,
            algorithm="ES256",
        ),
        "stripe": ApiKey(
            key="sk_demo_4eC39HqLyjWDarjtT1zdp7dc", header="Authorization", prefix="Bearer "
        ),
        "legacy-ftp": BasicAuth(username="svc-sync", password="correct horse battery staple"),
        "partner-feed": BearerToken(token="partner-demo-token", expires_in=int(lifetime * 2)),
    }


def _state_table(manager: CredentialManager) -> Table:
    table = Table("credential", "type", "state", "version", "expires in", "attempts")
    now = time.time()
    for info in manager.list(principal="admin"):
        left = f"{info.expires_at.timestamp() - now:5.1f} s" if info.expires_at else "-"
        table.add_row(
            info.credential_id,
            info.type,
            info.state.value,
            str(info.version),
            left,
            str(info.attempts),
        )
    return table


def run_demo(
    directory: Path, *, lifetime: float = 3.0, watch: float = 7.0, console: Console | None = None
) -> int:
    """Run the walkthrough in ``directory`` (recreated); return the exit code."""
    console = console or Console(highlight=False)
    story = _Story(console)
    started = time.monotonic()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    key_file, database = directory / "credman.key", directory / "credman.db"
    private_pem, public_pem = _ec_key()
    with TokenServer(
        clients={CLIENT: SECRET},
        access_token_lifetime=lifetime,
        jwt_keys={"demo@svc": (public_pem, "ES256")},
    ) as server:
        story.step("Set up: a key file (0600) and a SQLite database")
        KeyFileProvider(key_file).create()
        loopback = EgressPolicy(allow_loopback=True)  # the demo's provider is on loopback
        with CredentialManager(f"sqlite:///{database}", str(key_file), egress=loopback) as manager:
            story.say(f"key file {key_file} (mode 0600), database {database}")
            story.say(f"embedded OAuth2 provider at {server.url} (tokens live {lifetime:g} s)")
            _walk(story, manager, server, private_pem, lifetime, watch, directory)
    story.step("Done")
    left = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    story.say(
        f"finished in {time.monotonic() - started:.1f} s; left behind in {directory}: "
        + ", ".join(left)
    )
    return 0


def _walk(
    story: _Story,
    manager: CredentialManager,
    server: TokenServer,
    private_pem: str,
    lifetime: float,
    watch: float,
    directory: Path,
) -> None:
    story.step("Store one credential of each type (validated, encrypted, audited)")
    for name, credential in _credentials(server, private_pem, lifetime).items():
        info = manager.store(name, credential, principal="admin")  # type: ignore[arg-type]
        story.say(f"stored {info.type:<10} {name!r:<15} -> {info.state.value}")
    story.say(
        "CREATED -> ACTIVE: each is usable as stored. A credential whose material credman "
        "later replaces (a refresh, an update) moves to UPDATED, which is just as usable."
    )
    secret = manager.get("stripe", principal="admin", as_type=ApiKey).key
    story.say(f"a secret read back prints as {secret!r}: only .reveal() shows it")

    story.step("Least privilege: grants, and a denial")
    manager.grant("sync-worker", "github-*", {Permission.USE}, principal="admin")
    manager.grant("billing", "stripe", {Permission.USE}, principal="admin")
    story.say("sync-worker may use github-*; billing may use stripe; nothing else (default deny)")
    try:
        manager.access("stripe", principal="sync-worker")
    except AccessDenied as denied:
        story.say(f"[red]refused[/red]: {denied} (recorded in the audit trail)")

    story.step("A component calls an API: credman's httpx.Auth adds the token")
    with httpx.Client(auth=manager.auth("github-prod", principal="sync-worker")) as client:
        response = client.get(server.resource_url)
    story.say(
        f"sync-worker GET {server.resource_url} -> HTTP {response.status_code}. github-prod "
        "was stored with a refresh token only, so this first use fetched an access token."
    )

    story.step(f"Time passes: the scheduler refreshes ahead of expiry ({watch:g} s)")
    story.say(
        f"tokens live {lifetime:g} s here; the scheduler renews each shortly before it expires. "
        "'expires in' counts down, 'version' goes up with every new token."
    )
    _watch(story, manager, watch)
    refreshed = sum(
        1
        for event in manager.audit_events(principal="admin", limit=10_000)
        if event.action == "refresh" and event.outcome == "ok"
    )
    story.say(
        f"credman got new tokens {refreshed} times for github-prod, erp and gcp together; "
        f"the provider answered {server.token_requests} token requests, {server.refreshes} "
        "of them with github-prod's refresh token (erp uses client credentials and gcp a "
        "signed JWT: they get new tokens without one). Each refresh token was used once: "
        f"the provider revoked {len(server.revoked_grants)} grants for a replayed one."
    )
    try:
        manager.access("partner-feed", principal="admin")
    except CredentialUnusable:
        story.say(
            "partner-feed is a static bearer token: nothing can refresh it, so once it "
            "expired credman moved it to EXPIRED and refuses to hand it out until someone "
            "stores a new token (credman update partner-feed ...)."
        )

    story.step("Revoke a credential: material destroyed, history kept")
    manager.revoke("legacy-ftp", principal="admin", reason="vendor offboarded")
    story.say(
        "legacy-ftp -> REVOKED: its encrypted password and its data key are deleted, so no "
        "key can open it again; its history and audit rows stay."
    )
    _history(story, manager, "github-prod")

    story.step("Verify the tamper-evident audit chain")
    report = manager.verify_audit()
    story.say(
        f"audit chain {'[green]ok[/green]' if report.ok else '[red]BROKEN[/red]'}: "
        f"{report.rows_checked} rows, each chained to the one before by an HMAC"
    )
    events = manager.audit_events(principal="admin", limit=10_000)
    counts = Counter(f"{e.action}/{e.outcome}" for e in events)
    story.say(
        "what they record (action/outcome x count): "
        + ", ".join(f"{name} x{count}" for name, count in sorted(counts.items()))
    )

    story.step("Diagrams generated from the one transition table")
    steps = [
        (s.from_state, s.to_state, s.trigger)
        for s in manager.history("github-prod", principal="admin")
    ]
    written = [
        *write_lifecycle_diagrams(directory / "diagrams"),
        *write_credential_path(directory / "diagrams", "github-prod", steps, steps[-1][1]),
    ]
    story.say("wrote " + ", ".join(str(p) for p in written))
    story.say(
        "lifecycle.svg is every state and transition; credential-github-prod.svg is the "
        "path github-prod took, its arrows numbered by history step "
        "(credman diagram github-prod -o DIR draws the same for any credential)."
    )


def _watch(story: _Story, manager: CredentialManager, seconds: float) -> None:
    scheduler = CredentialScheduler(manager, interval=0.25)
    scheduler.start()
    try:
        for _ in range(2):
            time.sleep(seconds / 2)  # real time: the scheduler works while we wait
            story.console.print(_state_table(manager))
    finally:
        scheduler.shutdown()
    story.say(f"the scheduler swept {scheduler.sweeps} times")


def _history(story: _Story, manager: CredentialManager, credential_id: str) -> None:
    table = Table(
        "from", "to", "trigger", "principal", "version", title=f"history of {credential_id}"
    )
    for step in manager.history(credential_id, principal="admin"):
        table.add_row(
            step.from_state or "-", step.to_state, step.trigger, step.principal, str(step.version)
        )
    story.console.print(table)
