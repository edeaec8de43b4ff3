"""Connect and re-authorise: the manager's side of the authorization-code and device grants.

Theory of operation. ``connect`` opens a session in the database: 256 random bits of
state (only their SHA-256 is stored), the principal, the credential and the exact
redirect URI it is bound to, a 10-minute expiry, and the PKCE verifier sealed under its
own data key. ``complete_connect`` spends the session in a transaction of its own first
(single use: a replay, however it ends, finds it spent), refuses what does not match,
exchanges the code outside any transaction, then stores the tokens in a second short
transaction that fires ``activate`` (a CREATED credential's first connect) or
``reauthorize``. Every refusal is audited, sends ``connect_failed``, and changes no
credential; success sends ``connected``. The device grant skips the session: it polls in
the caller's thread and stores the same way.

``complete_callback`` is the entry for a browser that comes back to the HTTP service with
no credentials of its own: the state is the authentication. It learns from the session
which principal opened it (and where to send the browser afterwards, ``return_to``) and
completes as that principal; a callback whose state names no live session is refused and
audited as :data:`CALLBACK`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from loguru import logger
from sqlalchemy.exc import SQLAlchemyError

from credman._operation import Act, Operations
from credman.access import Actor, SystemPrincipal
from credman.crypto import WrappedKey, new_data_key, open_field, seal_field, unwrap, wrap
from credman.crypto.secret import Secret
from credman.errors import AuthorizationFailed, CredentialError, CredentialValidationError
from credman.keys import KeyManager
from credman.lifecycle import OAuth2, Permission, RefreshPolicy, State, next_due_at
from credman.lifecycle.decisions import ensure_not_revoked
from credman.models import CredentialInfo, info_of
from credman.notify import CredentialEvent, EventKind, Notifier
from credman.oauth.authorize import authorization_url, exchange_code, new_pkce, new_state
from credman.oauth.device import DeviceAuthorization, poll_device, start_device_authorization
from credman.oauth.token import TokenGrant
from credman.refresher import jitter, merged
from credman.storage import connect as sessions
from credman.storage import read, repository
from credman.validation import check_credential_id

__all__ = [
    "CALLBACK",
    "SESSION_LIFETIME",
    "ConnectOutcome",
    "ConnectSession",
    "Connections",
    "check_redirect_uri",
]

SESSION_LIFETIME: Final = timedelta(minutes=10)
_VERIFIER_FIELD: Final = "pkce_verifier"
_MANAGE: Final = frozenset({Permission.MANAGE})
CALLBACK: Final = SystemPrincipal("system:oauth-callback")
"""Who a callback acts as before its state is known to name a live session (audit only)."""


@dataclass(frozen=True, slots=True)
class ConnectSession:
    """A connect in progress: send the user to ``authorization_url`` before ``expires_at``.

    The URL carries the state (a one-time secret): its repr leaves the query out.
    """

    credential_id: str
    authorization_url: str
    redirect_uri: str
    expires_at: datetime

    def __repr__(self) -> str:
        base = self.authorization_url.split("?", 1)[0]
        return (
            f"ConnectSession(credential_id={self.credential_id!r}, authorization_url="
            f"'{base}?...', redirect_uri={self.redirect_uri!r}, expires_at={self.expires_at!r})"
        )


@dataclass(frozen=True, slots=True)
class ConnectOutcome:
    """How a provider's callback ended: ``info`` when connected, else ``failure``.

    ``credential_id`` and ``return_to`` come from the session the state named (None when it
    named none); neither the state nor the code is kept.
    """

    credential_id: str | None
    return_to: str | None
    info: CredentialInfo | None = None
    failure: CredentialError | None = None

    @property
    def ok(self) -> bool:
        """Whether the credential is now connected."""
        return self.failure is None


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8", "surrogatepass")).hexdigest()


def check_redirect_uri(redirect_uri: object, name: str = "redirect_uri") -> str:
    """An absolute http(s) URL without fragment or user info; plain http only on loopback."""
    ok = isinstance(redirect_uri, str) and len(redirect_uri) <= 2048
    parts = urlsplit(redirect_uri) if ok and isinstance(redirect_uri, str) else None
    if parts is not None and parts.hostname and not (parts.fragment or parts.username):
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
        if parts.scheme == "https" or (parts.scheme == "http" and loopback):
            return str(redirect_uri)
    raise CredentialValidationError(
        f"{name}: an https URL (http only on loopback) without fragment or user info",
        fields=(name,),
    )


@dataclass(frozen=True, slots=True)
class _Spent:
    """A session just spent: what it was bound to and the verifier it sealed."""

    credential_id: str
    principal: Actor
    redirect_uri: str
    verifier: Secret
    credential: OAuth2


class Connections:
    """``connect``, ``complete_connect`` and ``connect_device``."""

    def __init__(
        self,
        operations: Operations,
        keys: KeyManager,
        notifier: Notifier,
        policy: RefreshPolicy,
        http: httpx.Client,
    ) -> None:
        self._operations = operations
        self._keys = keys
        self._notifier = notifier
        self._policy = policy
        self._http = http

    def __repr__(self) -> str:
        return "Connections()"

    def connect(
        self,
        credential_id: str,
        *,
        redirect_uri: str,
        scope: str | None = None,
        principal: Actor,
        return_to: str | None = None,
    ) -> ConnectSession:
        """Open a connect session for an OAuth2 credential with an ``authorization_url``.

        ``scope`` replaces the credential's scope in the authorization request;
        ``return_to`` is kept with the session for :meth:`complete_callback`.
        """
        credential_id = check_credential_id(credential_id)
        redirect_uri = check_redirect_uri(redirect_uri)
        if return_to is not None:
            return_to = check_redirect_uri(return_to, "return_to")
        if scope is not None and (not isinstance(scope, str) or not 0 < len(scope) <= 2048):
            raise CredentialValidationError("scope: 1 to 2048 characters", fields=("scope",))
        with self._operations.run("connect", principal, credential_id) as connection:
            act = self._operations.act(connection, principal, credential_id, _MANAGE)
            credential = self._connectable(act, credential_id)
            pkce, state = new_pkce(), new_state()
            url = authorization_url(
                credential,
                redirect_uri=redirect_uri,
                state=state,
                code_challenge=pkce.challenge,
                scope=scope,
            )
            expires_at = act.now + SESSION_LIFETIME
            bindings = {"redirect_uri": redirect_uri, "scope": scope, "return_to": return_to}
            self._open_session(act, credential_id, state, pkce.verifier, bindings)
            self._operations.audit(act, "connect", credential_id, stage="started")
        return ConnectSession(credential_id, url, redirect_uri, expires_at)

    def _connectable(self, act: Act, credential_id: str) -> OAuth2:
        row = self._operations.load(act.connection, credential_id)
        ensure_not_revoked(row)
        credential = self._keys.open(row)
        if not isinstance(credential, OAuth2) or credential.authorization_url is None:
            raise CredentialValidationError(
                "credential: only an OAuth2 credential with an authorization_url can connect",
                fields=("authorization_url",),
                credential_id=credential_id,
            )
        return credential

    def _open_session(
        self,
        act: Act,
        credential_id: str,
        state: str,
        verifier: Secret,
        bindings: dict[str, str | None],
    ) -> None:
        state_hash = _state_hash(state)
        data_key = new_data_key()
        wrapped = wrap(self._keys.for_write(act.connection), data_key, credential_id=state_hash)
        sealed = seal_field(
            data_key,
            verifier.reveal(),
            credential_id=credential_id,
            field=_VERIFIER_FIELD,
            bound=state_hash.encode(),
        )
        sessions.insert_session(
            act.connection,
            {
                "state_hash": state_hash,
                "credential_id": credential_id,
                "principal": act.principal,
                **bindings,
                "sealed_verifier": base64.b64encode(sealed).decode(),
                "wrapped_dek": wrapped.blob,
                "key_version": wrapped.version,
                "created_at": act.now,
                "expires_at": act.now + SESSION_LIFETIME,
            },
        )

    def complete_connect(
        self,
        *,
        state: str,
        code: str | None,
        principal: Actor,
        redirect_uri: str | None = None,
        error: str | None = None,
    ) -> CredentialInfo:
        """Finish a connect from the provider's callback: exchange the code, store the tokens.

        ``redirect_uri``, when given, is where the callback arrived: it must be the session's
        exactly. ``error`` is the callback's ``error`` parameter (``access_denied``...).
        Raises ``AuthorizationFailed`` for a forged, replayed, expired or mismatched
        callback and for a refusal by the provider; nothing about the credential changes.
        """
        spent = self._spend(state, principal, redirect_uri, error, code)
        sent_at = self._operations.now()
        try:
            grant = exchange_code(
                self._http,
                spent.credential,
                code=Secret(code or ""),
                redirect_uri=spent.redirect_uri,
                verifier=spent.verifier,
                now=sent_at,
                timeout=self._policy.timeout,
            )
        except AuthorizationFailed as failure:
            raise self._refused(principal, spent.credential_id, failure) from None
        return self._store_connected(spent.credential_id, grant, sent_at, principal)

    def complete_callback(
        self,
        *,
        state: str,
        code: str | None,
        redirect_uri: str,
        error: str | None = None,
    ) -> ConnectOutcome:
        """Finish a connect from a callback that carries no credentials but the state.

        Completes as the principal that opened the session, which must have been opened for
        ``redirect_uri``. Every refusal is audited (as :data:`CALLBACK` while the state
        names no live session) and comes back as the outcome's ``failure``.
        """
        valid = isinstance(state, str) and 0 < len(state) <= 512
        with read(self._operations.engine) as connection:
            row = sessions.peek_session(connection, _state_hash(state)) if valid else None
        if row is None:
            unknown = _failure("unknown state: not from a connect of ours", "invalid_state")
            return ConnectOutcome(None, None, failure=self._refused(CALLBACK, None, unknown))
        outcome = functools.partial(ConnectOutcome, row.credential_id, row.return_to)
        if row.used_at is not None:
            reused = _failure("this connect was already completed or refused", "state_reused")
            return outcome(failure=self._refused(CALLBACK, row.credential_id, reused))
        try:
            info = self.complete_connect(
                state=state,
                code=code,
                principal=row.principal,
                redirect_uri=redirect_uri,
                error=error,
            )
        except CredentialError as failure:
            return outcome(failure=failure)
        return outcome(info=info)

    def _spend(
        self,
        state: str,
        principal: Actor,
        redirect_uri: str | None,
        error: str | None,
        code: str | None,
    ) -> _Spent:
        """Spend the session in its own transaction, then refuse what does not match."""
        if not isinstance(state, str) or not state or len(state) > 512:
            raise self._refused(principal, None, _failure("unknown state", "invalid_state"))
        with self._operations.run("connect", principal, None) as connection:
            row = sessions.load_session(connection, _state_hash(state))
            if row is None:
                refusal = _failure("unknown state: not from a connect of ours", "invalid_state")
            elif row.used_at is not None:
                refusal = _failure("this connect was already completed or refused", "state_reused")
            else:
                sessions.spend(connection, row.state_hash, self._operations.now())
                refusal = None
                spent = self._unsealed(connection, row, principal)
        if refusal is not None:
            credential_id = None if row is None else row.credential_id
            raise self._refused(principal, credential_id, refusal)
        assert row is not None  # a missing session was refused above
        mismatch = _mismatch(row, self._operations.now(), principal, redirect_uri, error, code)
        if mismatch is not None:
            raise self._refused(principal, row.credential_id, mismatch)
        return spent

    def _unsealed(self, connection: Any, row: Any, principal: Actor) -> _Spent:
        act = self._operations.act(connection, principal, row.credential_id, _MANAGE)
        credential = self._connectable(act, row.credential_id)
        data_key = unwrap(
            self._keys.keyring,
            WrappedKey(row.key_version, row.wrapped_dek),
            credential_id=row.state_hash,
        )
        try:
            blob = base64.b64decode(row.sealed_verifier, validate=True)
        except (binascii.Error, ValueError, TypeError):
            blob = b""
        verifier = open_field(
            data_key,
            blob,
            credential_id=row.credential_id,
            field=_VERIFIER_FIELD,
            bound=row.state_hash.encode(),
        )
        return _Spent(
            row.credential_id, row.principal, row.redirect_uri, Secret(verifier), credential
        )

    def _refused(
        self, principal: Actor, credential_id: str | None, failure: AuthorizationFailed
    ) -> AuthorizationFailed:
        """Audit the refusal (its own transaction), notify, and hand back the error to raise."""
        failure.credential_id = credential_id
        self._operations.record_refusal("connect", principal, credential_id, failure)
        logger.warning("connect refused ({}) for {!r}", failure.error_code, credential_id)
        if credential_id is not None:
            self._notifier.emit(
                CredentialEvent(
                    kind=EventKind.CONNECT_FAILED,
                    credential_id=credential_id,
                    state=self._state_of(credential_id),
                    at=self._operations.now(),
                    error_code=failure.error_code,
                )
            )
        return failure

    def _state_of(self, credential_id: str) -> str:
        try:
            with read(self._operations.engine) as connection:
                return str(repository.load_credential(connection, credential_id).state)
        except (CredentialError, SQLAlchemyError):
            return "unknown"

    def _store_connected(
        self, credential_id: str, grant: TokenGrant, sent_at: datetime, principal: Actor
    ) -> CredentialInfo:
        """Store the granted tokens: ``activate`` a CREATED credential, else ``reauthorize``."""
        with self._operations.run("connect", principal, credential_id) as connection:
            act = self._operations.act(connection, principal, credential_id, _MANAGE, now=sent_at)
            row = self._operations.load(connection, credential_id, for_update=True)
            current = self._keys.open(row)
            assert isinstance(current, OAuth2)  # checked when the connect started
            credential = merged(current, grant, sent_at, self._policy.clock_skew)
            values = self._keys.seal(connection, row.id, credential)
            values |= {
                "expires_at": credential.expires_at_or_none,
                "material_at": sent_at,
                "next_due_at": next_due_at(credential, sent_at, self._policy, jitter()),
                "lease_owner": None,
                "lease_until": None,
                "attempts": 0,
                "last_error": None,
            }
            trigger = "activate" if row.state == State.CREATED else "reauthorize"
            version = self._operations.change(act, row, trigger, values)
            ops = self._operations
            ops.audit(act, "connect", credential_id, stage="completed", version=version)
            info = info_of(repository.load_credential(connection, credential_id))
        logger.info("connected {!r} (version {})", credential_id, info.version)
        self._notifier.emit(
            CredentialEvent(
                kind=EventKind.CONNECTED,
                credential_id=credential_id,
                state=info.state,
                at=sent_at,
            )
        )
        return info

    def connect_device(
        self,
        credential_id: str,
        *,
        principal: Actor,
        show: Callable[[DeviceAuthorization], None],
        deadline: datetime | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> CredentialInfo:
        """Connect through the device grant (RFC 8628): ``show`` gets the user code to
        display; polling honours the provider's interval and ``slow_down``, and stops at the
        device code's expiry or ``deadline``. Refusals are audited and notified."""
        credential_id = check_credential_id(credential_id)
        with self._operations.run("connect", principal, credential_id) as connection:
            act = self._operations.act(connection, principal, credential_id, _MANAGE)
            credential = self._keys.open(self._operations.load(connection, credential_id))
            if not isinstance(credential, OAuth2) or credential.device_authorization_url is None:
                raise CredentialValidationError(
                    "credential: the device grant needs an OAuth2 device_authorization_url",
                    fields=("device_authorization_url",),
                    credential_id=credential_id,
                )
            self._operations.audit(act, "connect", credential_id, stage="device_started")
        try:
            started = start_device_authorization(
                self._http, credential, now=self._operations.now(), timeout=self._policy.timeout
            )
            show(started)
            sent_at = self._operations.now()
            grant = poll_device(
                self._http,
                credential,
                started,
                now=self._operations.now,
                sleep=sleep,
                deadline=deadline,
                timeout=self._policy.timeout,
            )
        except AuthorizationFailed as failure:
            raise self._refused(principal, credential_id, failure) from None
        sent_at = min(sent_at, self._operations.now())
        return self._store_connected(credential_id, grant, sent_at, principal)


def _failure(message: str, code: str) -> AuthorizationFailed:
    return AuthorizationFailed(f"connect refused: {message}", error_code=code)


def _mismatch(
    row: Any,
    now: datetime,
    principal: Actor,
    redirect_uri: str | None,
    error: str | None,
    code: str | None,
) -> AuthorizationFailed | None:
    """Why a spent session cannot complete, or None."""
    if now >= row.expires_at:
        return _failure("the connect session expired; start again", "session_expired")
    if principal != row.principal:
        return _failure("the connect was started by another principal", "principal_mismatch")
    if redirect_uri is not None and redirect_uri != row.redirect_uri:
        return _failure("the callback arrived at another redirect_uri", "redirect_uri_mismatch")
    if error is not None:
        code_name = error if error.isidentifier() and len(error) <= 64 else "invalid_callback"
        if code_name == "access_denied":
            return _failure("the user or the provider denied access (access_denied)", code_name)
        return _failure(f"the provider answered {code_name}", code_name)
    if not code:
        return _failure("the callback carries no code", "invalid_callback")
    return None
