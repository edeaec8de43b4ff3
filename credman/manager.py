"""``CredentialManager``: the composition root and public facade.

It builds the services (operations, keys, credentials, refresher, probes, sweep, grants,
audit trail) from configuration and hands each its collaborators; every public method is a
short delegation. No service knows the manager.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar, overload

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from credman._integrity import RecordSeals
from credman._operation import Operations
from credman.access import AccessPolicy, Grant
from credman.audit import ArchiveReport, AuditEvent, AuditLog, AuditReport, audit_context
from credman.audit_export import (
    AuditForwarder,
    AuditHeadExporter,
    HeadSigner,
    JsonLinesSink,
    SyslogSink,
    last_exported_seq,
    load_private_key,
)
from credman.audit_trail import AuditTrail
from credman.clock import Clock, as_clock
from credman.config import Settings
from credman.connect import Connections, ConnectOutcome, ConnectSession
from credman.credentials import Credentials
from credman.crypto import EnvKeyProvider, KeyFileProvider, KeyProvider, Keyring
from credman.egress import EgressPolicy, EgressTransport
from credman.errors import CredentialError, CredentialValidationError, StorageError
from credman.grants import Grants
from credman.httpx_auth import AccessAuth
from credman.integrity import Integrity, IntegrityReport
from credman.keys import (
    DEFAULT_BATCH_SIZE,
    KeyManager,
    KeyStatus,
    Progress,
    RewrapReport,
    RotationReport,
)
from credman.lifecycle import Credential, Permission, RefreshPolicy, State
from credman.models import Access, CredentialInfo, Transition
from credman.notify import Hook, Notifier, WebhookNotifier
from credman.oauth.device import DeviceAuthorization
from credman.principals import PrincipalInfo, Principals
from credman.probes import ProbeResult, Probes
from credman.refresher import Refresher
from credman.storage import describe_failure, make_engine, migrate
from credman.sweep import Sweep, TickReport
from credman.validation import check_credential_id

__all__ = ["CredentialManager"]

C = TypeVar("C", bound=Credential)
T = TypeVar("T")
EVENTS_CLOSE_TIMEOUT = 5.0
"""How long ``close`` waits for queued events to reach the hooks."""


class CredentialManager:
    """Stores, serves, refreshes and revokes credentials; the embedded API."""

    def __init__(
        self,
        database_url: str | None = None,
        key_file: str | None = None,
        *,
        key_provider: KeyProvider | None = None,
        admins: Iterable[str] | None = None,
        refresh_policy: RefreshPolicy | None = None,
        clock: Clock | Callable[[], datetime] | None = None,
        synchronous: str = "FULL",
        migrate_schema: bool = True,
        hooks: Iterable[Hook] = (),
        http_client: httpx.Client | None = None,
        egress: EgressPolicy | None = None,
        notify_refreshed: bool = False,
        background_hooks: bool = True,
    ) -> None:
        settings = Settings.from_env(database_url=database_url, key_file=key_file)
        provider = key_provider or (
            EnvKeyProvider(settings.key_env)
            if settings.key_env
            else KeyFileProvider(settings.key_file)
        )
        keyring = provider.load()  # no key, no start
        self.policy = refresh_policy or RefreshPolicy()
        self.clock = as_clock(clock)
        self._engine = make_engine(
            settings.database_url, synchronous=synchronous, create=migrate_schema
        )
        self.database_url = self._engine.url.render_as_string(hide_password=True)
        self.egress = egress or EgressPolicy.from_env()
        self._http = http_client or httpx.Client(
            follow_redirects=False, transport=EgressTransport(self.egress)
        )
        self._owns_http = http_client is None
        try:
            self._prepare_schema(migrate_schema)
        except BaseException:
            self.close()
            raise
        seals = RecordSeals(
            credential_key=keyring.credential_record_key(), grant_key=keyring.grant_record_key()
        )
        access = AccessPolicy(settings.admins if admins is None else admins, seals=seals)
        ops = Operations(self._engine, AuditLog(keyring.audit_key()), access, self.clock)
        self._integrity = Integrity(ops)
        try:
            self._integrity.prepare(keyring)  # WrongKeyFile before anything else reads a row
        except BaseException:
            self.close()
            raise
        notifier = Notifier(hooks, refreshed_events=notify_refreshed, background=background_hooks)
        self._notifier = notifier
        self.keys = KeyManager(provider, keyring, ops)
        self._refresher = Refresher(ops, self.keys, notifier, self.policy, self._http)
        self._credentials = Credentials(ops, self.keys, self._refresher, notifier, self.policy)
        self._probes = Probes(
            ops, self._credentials, self._refresher, notifier, self.policy, self._http
        )
        self._sweep = Sweep(ops, self._refresher, self._probes, notifier)
        self._grants = Grants(ops)
        self._audit = AuditTrail(ops, HeadSigner(keyring.audit_head_key()))
        self._connections = Connections(ops, self.keys, notifier, self.policy, self._http)
        self._principals = Principals(
            ops,
            token_key=keyring.principal_token_key(),
            record_key=keyring.principal_record_key(),
        )

    @classmethod
    def from_env(
        cls,
        *,
        key_provider: KeyProvider | None = None,
        refresh_policy: RefreshPolicy | None = None,
        hooks: Iterable[Hook] = (),
        migrate_schema: bool = True,
    ) -> Self:
        """A manager configured from CREDMAN_* environment variables."""
        return cls(
            key_provider=key_provider,
            refresh_policy=refresh_policy,
            hooks=hooks,
            migrate_schema=migrate_schema,
        )

    def __repr__(self) -> str:
        return (
            f"CredentialManager(database_url={self.database_url!r}, keyring={self.keys.keyring!r})"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Deliver queued events (at most ``EVENTS_CLOSE_TIMEOUT`` seconds), then release
        database connections and the HTTP client."""
        notifier = getattr(self, "_notifier", None)  # absent when __init__ failed early
        if notifier is not None:
            notifier.close(EVENTS_CLOSE_TIMEOUT)
        self._engine.dispose()
        if self._owns_http:
            self._http.close()

    def flush_events(self, timeout: float | None = 10.0) -> bool:
        """Wait until every event emitted so far was handed to the hooks (they run in a
        background thread); False if ``timeout`` seconds ran out first."""
        return self._notifier.flush(timeout)

    @property
    def dropped_events(self) -> int:
        """Events the outbox dropped: it was full, or they were queued at ``close``."""
        return self._notifier.dropped

    # -- schema ---------------------------------------------------------------------------

    def _prepare_schema(self, migrate_schema: bool) -> None:
        if migrate_schema:
            self.migrate()
        else:
            self._storage_call(lambda: migrate.check_current(self._engine, self.database_url))

    def schema_revision(self) -> str | None:
        """The schema revision the database is at (None: not a credman database yet)."""
        return self._storage_call(lambda: migrate.current_revision(self._engine))

    def migrate(self) -> str:
        """Bring the database to this version's schema (safe in parallel); the revision."""
        head = migrate.head_revision()
        if self.schema_revision() != head:
            self._storage_call(lambda: migrate.upgrade(self._engine))
        return head

    def _storage_call(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except SQLAlchemyError as exc:
            raise StorageError(describe_failure(exc, self._engine)) from None
        except CredentialError:
            raise
        except Exception as exc:  # alembic: a revision this code does not know
            raise StorageError(
                "the database schema is not one this version of credman knows "
                f"({type(exc).__name__}); upgrade credman"
            ) from None

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for operators' tooling and tests that play an attacker)."""
        return self._engine

    # -- credentials ----------------------------------------------------------------------

    def store(
        self,
        credential_id: str,
        credential: Credential,
        *,
        principal: str,
        reason: str | None = None,
        create_only: bool = False,
        test: bool = False,
    ) -> CredentialInfo:
        """Validate, encrypt and upsert; a new credential ends ACTIVE, an update UPDATED.
        ``create_only`` refuses an id that exists (``CredentialValidationError``). ``test``
        first makes a live token request (refreshable types) and runs the probe, if any,
        and stores only what passed, with the tokens the request returned."""
        if test:
            credential = self._probes.trial(
                credential_id, credential, principal=principal, create_only=create_only
            )
        return self._credentials.store(
            credential_id, credential, principal=principal, reason=reason, create_only=create_only
        )

    @overload
    def get(self, credential_id: str, *, principal: str) -> Credential: ...
    @overload
    def get(self, credential_id: str, *, principal: str, as_type: type[C]) -> C: ...
    def get(
        self, credential_id: str, *, principal: str, as_type: type[Credential] | None = None
    ) -> Credential:
        """The whole decrypted credential (needs ``read``), refreshed first when due; audited.

        Secret fields are ``Secret`` values. ``as_type`` checks and narrows the type.
        """
        credential, _ = self._credentials.get(credential_id, principal=principal)
        if as_type is not None and not isinstance(credential, as_type):
            wanted = as_type.__name__
            message = f"as_type: credential {credential_id!r} is a {credential.kind}, not {wanted}"
            raise CredentialValidationError(
                message, fields=("as_type",), credential_id=credential_id
            )
        return credential

    def access(self, credential_id: str, *, principal: str, min_ttl: float = 0) -> Access:
        """Request material (needs ``use``), valid for at least ``min_ttl`` seconds; audited."""
        return self._credentials.access(credential_id, principal=principal, min_ttl=min_ttl)

    def auth(
        self,
        credential_id: str,
        *,
        principal: str,
        min_ttl: float = 0,
        origins: Iterable[str] | None = None,
    ) -> AccessAuth:
        """An ``httpx.Auth`` (sync and async) over :meth:`access`; on a 401 renews once.

        The material goes only to ``origins`` (e.g. ``["https://api.example"]``), or when
        none are given to the origin of the first request, never across a redirect to
        another origin.
        """
        credential_id = check_credential_id(credential_id)
        return AccessAuth(
            credential_id,
            lambda: self.access(credential_id, principal=principal, min_ttl=min_ttl),
            lambda version: self._refresher.renew(credential_id, principal, version),
            origins=origins,
        )

    def info(self, credential_id: str, *, principal: str) -> CredentialInfo:
        """Metadata and state; no secret values."""
        return self._credentials.info(credential_id, principal=principal)

    def history(self, credential_id: str, *, principal: str) -> builtins.list[Transition]:
        """Every transition of the credential, oldest first."""
        return self._credentials.history(credential_id, principal=principal)

    def list(
        self, *, principal: str, state: State | str | None = None
    ) -> builtins.list[CredentialInfo]:
        """The credentials ``principal`` may see (any grant on them), by id."""
        return self._credentials.list(principal=principal, state=state)

    def revoke(
        self, credential_id: str, *, principal: str, reason: str | None = None
    ) -> CredentialInfo:
        """Withdraw for good: REVOKED, secret material and data key destroyed; history kept."""
        return self._credentials.revoke(credential_id, principal=principal, reason=reason)

    def purge(self, credential_id: str, *, principal: str) -> None:
        """Remove a revoked credential so its id is free again; history and audit stay."""
        self._credentials.purge(credential_id, principal=principal)

    # -- connect and re-authorize ---------------------------------------------------------

    def connect(
        self,
        credential_id: str,
        *,
        redirect_uri: str,
        scope: str | None = None,
        principal: str,
        return_to: str | None = None,
    ) -> ConnectSession:
        """Open a connect (authorization code + PKCE S256): where to send the user (MANAGE).

        ``scope`` replaces the credential's own in the request; ``return_to`` is kept with
        the session for :meth:`complete_callback` (the HTTP service checks it first).
        """
        return self._connections.connect(
            credential_id,
            redirect_uri=redirect_uri,
            scope=scope,
            principal=principal,
            return_to=return_to,
        )

    def complete_connect(
        self,
        *,
        state: str,
        code: str | None,
        principal: str,
        redirect_uri: str | None = None,
        error: str | None = None,
    ) -> CredentialInfo:
        """Finish a connect from the callback: ACTIVE (first connect) or UPDATED (re-authorized).

        Raises ``AuthorizationFailed`` for a forged, replayed, expired or mismatched callback
        and for the provider's refusal (``error=access_denied``...); nothing changes then.
        """
        return self._connections.complete_connect(
            state=state, code=code, principal=principal, redirect_uri=redirect_uri, error=error
        )

    def complete_callback(
        self, *, state: str, code: str | None, redirect_uri: str, error: str | None = None
    ) -> ConnectOutcome:
        """Finish a connect from a browser's callback that carries only the state.

        The state is the authentication: the connect completes as the principal that opened
        the session (bound to ``redirect_uri``). Refusals are audited, change nothing and
        come back as the outcome's ``failure`` rather than raised.
        """
        return self._connections.complete_callback(
            state=state, code=code, redirect_uri=redirect_uri, error=error
        )

    def connect_device(
        self,
        credential_id: str,
        *,
        principal: str,
        show: Callable[[DeviceAuthorization], None],
        deadline: datetime | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> CredentialInfo:
        """Connect through the device grant (RFC 8628): ``show`` displays the user code."""
        return self._connections.connect_device(
            credential_id, principal=principal, show=show, deadline=deadline, sleep=sleep
        )

    def force_transition(
        self, credential_id: str, trigger: str, *, principal: str, reason: str | None = None
    ) -> CredentialInfo:
        """Fire one lifecycle trigger with no other change (repairs; guarded, audited, manage)."""
        return self._credentials.force_transition(
            credential_id, trigger, principal=principal, reason=reason
        )

    # -- freshness ------------------------------------------------------------------------

    def refresh(self, credential_id: str, *, principal: str, force: bool = False) -> CredentialInfo:
        """Refresh now (``force``) or only when due; raises RefreshFailed when it fails."""
        credential_id = check_credential_id(credential_id)
        self._refresher.refresh(credential_id, principal, force=force)
        return self.info(credential_id, principal=principal)

    def renew(self, credential_id: str, *, principal: str, rejected_version: int) -> bool:
        """The resource refused material of ``rejected_version``: refresh once unless the
        stored version already moved on (needs ``use``). Whether new material is worth a retry."""
        credential_id = check_credential_id(credential_id)
        return self._refresher.renew(credential_id, principal, rejected_version)

    def tick(
        self,
        now: datetime | None = None,
        *,
        limit: int = 1000,
        workers: int = 4,
        stop: threading.Event | None = None,
    ) -> TickReport:
        """Do the due work: refresh tokens in their margin, expire what cannot refresh,
        recover stale leases, re-run due probes. Safe in any number of processes at once.
        Once ``stop`` is set, no further credential is started (those in flight finish)."""
        return self._sweep.tick(now, limit=limit, workers=workers, stop=stop)

    def next_wakeup(self) -> datetime | None:
        """The earliest due time of any credential (for the scheduler's one-shot wake-up)."""
        return self._sweep.next_wakeup()

    def test(self, credential_id: str, *, principal: str) -> ProbeResult:
        """Apply the credential to its probe; record and audit the outcome (needs ``use``)."""
        return self._probes.test(credential_id, principal=principal)

    # -- access ---------------------------------------------------------------------------

    def grant(
        self, grantee: str, pattern: str, permissions: Iterable[str | Permission], *, principal: str
    ) -> Grant:
        """Give ``grantee`` permissions on credentials matching ``pattern`` (admin only)."""
        return self._grants.grant(grantee, pattern, permissions, principal=principal)

    def revoke_grant(self, grantee: str, pattern: str, *, principal: str) -> bool:
        """Remove ``grantee``'s grant on ``pattern`` (admin only); whether one existed."""
        return self._grants.revoke(grantee, pattern, principal=principal)

    def grants(self, *, principal: str, grantee: str | None = None) -> builtins.list[Grant]:
        """The grants in force (needs ``audit`` on ``*``)."""
        return self._grants.list(principal=principal, grantee=grantee)

    # -- keys -----------------------------------------------------------------------------

    def rotate_keys(
        self,
        *,
        principal: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
    ) -> RotationReport:
        """Add a new primary key version and re-wrap every data key under it (admin)."""
        return self.keys.rotate(principal=principal, batch_size=batch_size, progress=progress)

    def rewrap_keys(
        self,
        *,
        principal: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
    ) -> RewrapReport:
        """Re-wrap data keys not yet on the primary; finishes an interrupted rotation (admin)."""
        return self.keys.rewrap(principal=principal, batch_size=batch_size, progress=progress)

    def key_status(self, *, principal: str) -> KeyStatus:
        """Key versions, the primary, and how many credentials each protects (admin)."""
        return self.keys.status(principal=principal)

    def retire_key(self, version: int, *, principal: str) -> tuple[int, ...]:
        """Remove a key version for good; refused while any row uses it (admin)."""
        return self.keys.retire(version, principal=principal)

    def reload_keys(self) -> Keyring:
        """Re-read the keyring from its provider (e.g. after another process rotated it)."""
        return self.keys.reload()

    # -- audit ----------------------------------------------------------------------------

    def verify_audit(
        self,
        anchor: tuple[int, str] | None = None,
        *,
        heads: str | os.PathLike[str] | None = None,
        public_key: str | os.PathLike[str] | None = None,
    ) -> AuditReport:
        """Recompute the audit chain (and every history row it binds), then check every
        row's MAC and every credential's version against the chain; the report names the
        first bad row (``first_bad_seq``) or, when the chain holds, the rows that fail
        (``extra["integrity"]``).

        Pass an ``anchor`` (a head exported earlier) or ``heads``, a file of signed heads
        the service exported (:meth:`audit_head_exporter`), to detect a rewrite of the
        newest rows; each head's MAC is checked, and with ``public_key`` (PEM) its Ed25519
        signature.
        """
        report = self._audit.verify(anchor, heads=heads, public_key=public_key)
        rows = self._integrity.verify()  # also when the chain is broken: name every problem
        if rows.ok:
            return report
        extra = {**report.extra, "integrity": list(rows.problems)}
        if not report.ok:
            return dataclasses.replace(report, extra=extra)
        return dataclasses.replace(
            report,
            ok=False,
            problem=f"{len(rows.problems)} row(s) fail the integrity check: {rows.problems[0]}",
            extra=extra,
        )

    def verify_integrity(self) -> IntegrityReport:
        """Check every credential and grant row against its MAC, and every credential's
        version against the last one the audit chain recorded (``verify_audit`` includes it)."""
        return self._integrity.verify()

    def export_audit(
        self,
        write: Callable[[Mapping[str, Any]], None],
        *,
        principal: str,
        after: int = 0,
    ) -> tuple[int, int]:
        """Pass every audit row after ``after`` to ``write`` as a JSON-ready dict, oldest
        first, read a batch at a time (needs ``audit`` on ``*``); the count and last seq."""
        return self._audit.export(write, principal=principal, after=after)

    def audit_head_exporter(
        self,
        *,
        file: str | os.PathLike[str] | None = None,
        webhook_url: str | None = None,
        webhook_secret: bytes | None = None,
        interval: float = 300.0,
        signing_key: str | os.PathLike[str] | None = None,
    ) -> AuditHeadExporter:
        """An exporter of signed audit heads to ``file`` (JSON lines, 0600, fsynced) and/or
        POSTed to ``webhook_url`` (signed with ``webhook_secret`` like every webhook);
        ``signing_key`` (an Ed25519 PEM) adds a signature anyone with the public key can
        check. Call ``start()`` to export every ``interval`` seconds, ``stop()`` to end."""
        webhook = None
        if webhook_url is not None:
            if not webhook_secret:
                raise CredentialValidationError(
                    "head_webhook_url: needs the webhook secret (CREDMAN_WEBHOOK_SECRET or _FILE)",
                    fields=("webhook_secret",),
                )
            webhook = WebhookNotifier(webhook_url, webhook_secret, client=self._http)
        key = None if signing_key is None else load_private_key(signing_key)
        return AuditHeadExporter(
            self.audit_head,
            HeadSigner(self.keys.keyring.audit_head_key(), key),
            database=self.database_url,
            file=file,
            webhook=webhook,
            interval=interval,
            now=self._operations_now,
        )

    def audit_forwarder(
        self, *, file: str | None = None, syslog: str | None = None, interval: float = 5.0
    ) -> AuditForwarder:
        """A forwarder of new audit rows, as JSON lines appended to ``file`` (it resumes
        after the file's last row) or to ``syslog`` (``HOST:PORT`` or a socket path; it
        starts at the current head). For the service's own configuration: it reads the
        trail without a principal. Call ``start()``, then ``stop()``."""
        if (file is None) == (syslog is None):
            raise CredentialValidationError(
                "forward_file: give a file or a syslog address, one of them",
                fields=("forward_file",),
            )
        if file is not None:
            after = last_exported_seq(file)
            sink: JsonLinesSink | SyslogSink = JsonLinesSink(file)
        else:
            assert syslog is not None
            after = self.audit_head()[0]
            sink = SyslogSink(syslog)
        return AuditForwarder(self._audit.export_unchecked, sink, after=after, interval=interval)

    def _operations_now(self) -> datetime:
        return self.clock.now().astimezone(UTC)

    def archive_audit(
        self, *, before_seq: int, path: str | os.PathLike[str], principal: str
    ) -> ArchiveReport:
        """Move audit rows older than ``before_seq`` to a new JSON-lines file and prune them
        (admin, audited). Verification then starts at the anchor, the last archived row,
        which an ``audit_archive`` event on the chain vouches for; the file verifies on its
        own with :meth:`verify_audit_archive`."""
        return self._audit.archive(before_seq=before_seq, path=path, principal=principal)

    def verify_audit_archive(self, path: str | os.PathLike[str]) -> AuditReport:
        """Recompute the chain inside an archive written by :meth:`archive_audit`."""
        return self._audit.verify_archive(path)

    def audit_head(self) -> tuple[int, str]:
        """The audit chain's last sequence number and hash, for anchoring elsewhere."""
        return self._audit.head()

    def audit_events(
        self,
        *,
        principal: str,
        limit: int = 50,
        outcome: str | None = None,
        subject: str | None = None,
        credential_id: str | None = None,
    ) -> builtins.list[AuditEvent]:
        """The newest audit events (needs ``audit`` on ``*``), oldest first."""
        return self._audit.events(
            principal=principal,
            limit=limit,
            outcome=outcome,
            subject=subject,
            credential_id=credential_id,
        )

    # -- principals (component identity) --------------------------------------------------

    def add_principal(
        self,
        name: str,
        *,
        expires_in: timedelta | float | None = None,
        description: str | None = None,
        principal: str,
    ) -> tuple[PrincipalInfo, str]:
        """Create a principal (admin); its token is returned once and never stored."""
        return self._principals.add(
            name, expires_in=expires_in, description=description, principal=principal
        )

    def list_principals(self, *, principal: str) -> builtins.list[PrincipalInfo]:
        """Every principal, by name (admin); tokens are never shown, only their public ids."""
        return self._principals.list(principal=principal)

    def rotate_principal(
        self, name: str, *, principal: str, expires_in: timedelta | float | None = None
    ) -> tuple[PrincipalInfo, str]:
        """A new token for ``name`` (admin); the old token is refused from now on."""
        return self._principals.rotate(name, expires_in=expires_in, principal=principal)

    def revoke_principal(self, name: str, *, principal: str) -> PrincipalInfo:
        """Refuse ``name``'s token from the next request on (admin)."""
        return self._principals.revoke(name, principal=principal)

    def authenticate(self, token: str | None, *, source: str) -> str:
        """The principal holding ``token``; Unauthenticated (audited) or TooManyAttempts."""
        return self._principals.authenticate(token, source=source)

    def configure_auth_throttle(
        self, *, max_failures: int, lockout: float, source_max_failures: int | None = None
    ) -> None:
        """Set how many failed authentications lock a token id (and a source) for how long."""
        self._principals.configure(
            max_failures=max_failures, lockout=lockout, source_max_failures=source_max_failures
        )

    def request_context(
        self, *, request_id: str, peer: str | None = None
    ) -> AbstractContextManager[None]:
        """Every audit row written inside carries ``request_id`` and ``peer`` (for adapters)."""
        return audit_context(request_id=request_id, peer=peer)
