"""Component identity: principal records, their tokens, and authenticating a request by token.

A principal is a named record holding the public id and the keyed hash of its current
token (``cmp_<id>_<secret>_<crc32>``, see :mod:`credman.crypto.tokens`); the token itself
is shown once and never stored. Every field but ``last_used_at`` is covered by a MAC under
a keyring-derived key, so a database writer without the key cannot add, extend or revive a
principal. Authentication looks the record up by the token's public id and compares hashes
in constant time; revocation and expiry are read from the row on every request.

Failed authentications are counted per source address and per token id; past a limit the
key is locked for a while (:class:`AuthThrottle`) and :class:`TooManyAttempts` says when to
retry. Every failure is audited under the pseudo-principal ``anonymous``, with the reason,
the token's public id (when it has one) and the source. The throttle lives in this process:
each ``serve`` process counts its own failures.

No SQL here: records come from :mod:`credman.storage.principals`.
"""

from __future__ import annotations

import hmac
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from loguru import logger
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from credman._operation import Operations
from credman.access import Actor, check_principal
from credman.crypto.records import RecordMac
from credman.crypto.tokens import new_token, parse_token, token_digest, token_id_of
from credman.errors import (
    CredentialValidationError,
    NotFound,
    StorageError,
    TooManyAttempts,
    Unauthenticated,
)
from credman.storage import PrincipalRecord, read, write
from credman.storage import principals as rows

__all__ = [
    "ANONYMOUS",
    "AuthThrottle",
    "PrincipalInfo",
    "Principals",
    "check_description",
    "check_expires_in",
    "parse_duration",
]

ANONYMOUS = "anonymous"
"""The principal failed authentications are audited under."""
_MAX_DESCRIPTION = 256
_MAX_EXPIRES_IN = timedelta(days=3650)
_TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most once a minute
_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_REFUSED = "invalid, expired or revoked principal token"


@dataclass(frozen=True, slots=True)
class PrincipalInfo:
    """A principal as listed: never its token, only the token's public id."""

    name: str
    token_id: str
    description: str | None
    created_at: datetime
    created_by: str
    token_issued_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def active(self, now: datetime) -> bool:
        """Whether its token is accepted at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (or a number of seconds) as a timedelta."""
    value = text.strip() if isinstance(text, str) else ""
    if value.isdigit():
        return timedelta(seconds=int(value))
    match = _DURATION.fullmatch(value)
    if match is None:
        raise CredentialValidationError(
            "expires_in: a duration such as 90d, 12h, 30m or a number of seconds",
            fields=("expires_in",),
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def check_expires_in(expires_in: timedelta | float | None) -> timedelta | None:
    """Validate a token lifetime: positive, at most ten years."""
    if expires_in is None:
        return None
    if isinstance(expires_in, bool) or not isinstance(expires_in, timedelta | int | float):
        raise CredentialValidationError(
            "expires_in: seconds or a timedelta", fields=("expires_in",)
        )
    delta = expires_in if isinstance(expires_in, timedelta) else timedelta(seconds=expires_in)
    if not timedelta(0) < delta <= _MAX_EXPIRES_IN:
        raise CredentialValidationError(
            "expires_in: more than 0 and at most 3650 days", fields=("expires_in",)
        )
    return delta


def check_description(description: str | None) -> str | None:
    """Validate a description: printable text of at most 256 characters."""
    if description is None:
        return None
    if (
        not isinstance(description, str)
        or len(description) > _MAX_DESCRIPTION
        or not description.isprintable()
    ):
        raise CredentialValidationError(
            f"description: printable text of at most {_MAX_DESCRIPTION} characters",
            fields=("description",),
        )
    return description


class AuthThrottle:
    """Failed authentications per key (a source, a token id); too many lock the key.

    ``max_failures`` failures within ``window`` seconds lock the key for ``lockout``
    seconds. At most ``capacity`` keys are tracked (the oldest are forgotten first), so a
    flood of distinct sources cannot exhaust memory.
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 300.0,
        lockout: float = 300.0,
        capacity: int = 10_000,
    ) -> None:
        if max_failures < 1 or window <= 0 or lockout <= 0:
            raise CredentialValidationError(
                "auth limits: max_failures >= 1, window and lockout > 0",
                fields=("max_failures", "window", "lockout"),
            )
        self.max_failures, self.window, self.lockout = max_failures, window, lockout
        self._capacity = capacity
        self._failures: OrderedDict[str, list[datetime]] = OrderedDict()
        self._locked_until: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"AuthThrottle(max_failures={self.max_failures}, window={self.window}, "
            f"lockout={self.lockout})"
        )

    def retry_after(self, keys: tuple[str, ...], now: datetime) -> float | None:
        """Seconds until the longest lock among ``keys`` ends; None when none is locked."""
        with self._lock:
            waits = [
                (until - now).total_seconds()
                for key in keys
                if (until := self._locked_until.get(key)) is not None and until > now
            ]
        return max(waits) if waits else None

    def fail(self, keys: tuple[str, ...], now: datetime) -> tuple[str, ...]:
        """Count a failure for each key; the keys this failure locked."""
        locked = []
        with self._lock:
            for key in keys:
                recent = [t for t in self._failures.pop(key, []) if now - t < self._window()]
                recent.append(now)
                if len(recent) >= self.max_failures:
                    self._locked_until[key] = now + timedelta(seconds=self.lockout)
                    locked.append(key)
                    recent = []
                self._failures[key] = recent
            self._forget_oldest(now)
        return tuple(locked)

    def _window(self) -> timedelta:
        return timedelta(seconds=self.window)

    def _forget_oldest(self, now: datetime) -> None:
        while len(self._failures) > self._capacity:
            self._failures.popitem(last=False)
        if len(self._locked_until) > self._capacity:
            self._locked_until = {k: t for k, t in self._locked_until.items() if t > now}


class Principals:
    """Creates, lists, rotates and revokes principals (admin, audited), authenticates tokens."""

    def __init__(
        self,
        operations: Operations,
        *,
        token_key: bytes,
        record_key: bytes,
        throttle: AuthThrottle | None = None,
        source_throttle: AuthThrottle | None = None,
    ) -> None:
        self._operations = operations
        self._token_key = token_key
        self._mac = RecordMac(record_key, "principal")
        self.throttle = throttle or AuthThrottle()
        self.source_throttle = source_throttle or AuthThrottle(
            max_failures=30, window=60.0, lockout=60.0
        )

    def __repr__(self) -> str:
        return "Principals()"

    # -- management ---------------------------------------------------------------------------

    def add(
        self,
        name: str,
        *,
        expires_in: timedelta | float | None,
        description: str | None,
        principal: Actor,
    ) -> tuple[PrincipalInfo, str]:
        """A new principal and its token (shown once); a taken name is a validation error."""
        check_principal(name)
        lifetime = check_expires_in(expires_in)
        description = check_description(description)
        ops = self._operations
        with ops.run("principal_add", principal, None) as connection:
            act = ops.act_as_admin(connection, principal)
            if rows.load_principal(connection, name) is not None:
                raise CredentialValidationError(
                    f"name: a principal called {name!r} exists (rotate or revoke it)",
                    fields=("name",),
                )
            now = act.now.replace(microsecond=0)
            token_id, token = new_token()
            fields: dict[str, Any] = {
                "name": name,
                "token_id": token_id,
                "token_hash": token_digest(self._token_key, token),
                "description": description,
                "created_at": now,
                "created_by": act.name,
                "token_issued_at": now,
                "expires_at": now + lifetime if lifetime else None,
                "revoked_at": None,
            }
            rows.insert_principal(connection, {**fields, "record_mac": self._mac.mac(fields)})
            ops.audit(act, "principal_add", None, subject=name, token_id=token_id)
        logger.info("added principal {!r} (token id {})", name, token_id)
        return _info({**fields, "last_used_at": None}), token

    def list(self, *, principal: Actor) -> list[PrincipalInfo]:
        """Every principal whose record is authentic (a forged row is logged and left out)."""
        ops = self._operations
        with ops.run("principal_list", principal, None, writes=False) as connection:
            ops.act_as_admin(connection, principal)
            records = rows.list_principals(connection)
        found = []
        for record in records:
            if self._authentic(record):
                found.append(_info(_fields(record)))
            else:
                logger.error("principal record {!r} fails its MAC: ignored", record.name)
        return found

    def rotate(
        self, name: str, *, expires_in: timedelta | float | None, principal: Actor
    ) -> tuple[PrincipalInfo, str]:
        """A new token for ``name``; the old one stops working at once."""
        check_principal(name)
        lifetime = check_expires_in(expires_in)
        ops = self._operations
        with ops.run("principal_rotate", principal, None) as connection:
            act = ops.act_as_admin(connection, principal)
            record = self._load_for_change(connection, name)
            now = act.now.replace(microsecond=0)
            token_id, token = new_token()
            lifetime = lifetime or _lifetime(record)
            changes = {
                "token_id": token_id,
                "token_hash": token_digest(self._token_key, token),
                "token_issued_at": now,
                "expires_at": now + lifetime if lifetime else None,
                "revoked_at": None,
            }
            info = self._write(connection, record, changes)
            ops.audit(act, "principal_rotate", None, subject=name, token_id=token_id)
        logger.info("rotated the token of principal {!r}", name)
        return info, token

    def revoke(self, name: str, *, principal: Actor) -> PrincipalInfo:
        """Refuse ``name``'s token from the next request on (idempotent)."""
        check_principal(name)
        ops = self._operations
        with ops.run("principal_revoke", principal, None) as connection:
            act = ops.act_as_admin(connection, principal)
            record = self._load_for_change(connection, name)
            if record.revoked_at is None:
                changes = {"revoked_at": act.now.replace(microsecond=0)}
                info = self._write(connection, record, changes)
            else:
                info = _info(_fields(record))
            ops.audit(act, "principal_revoke", None, subject=name)
        logger.info("revoked principal {!r}", name)
        return info

    def _load_for_change(self, connection: Connection, name: str) -> PrincipalRecord:
        record = rows.load_principal(connection, name, for_update=True)
        if record is None or not self._authentic(record):
            raise NotFound(f"no principal {name!r}")
        return record

    def _write(
        self, connection: Connection, record: PrincipalRecord, changes: dict[str, Any]
    ) -> PrincipalInfo:
        fields = record.authenticated_fields() | changes
        rows.update_principal(
            connection, record.name, {**changes, "record_mac": self._mac.mac(fields)}
        )
        return _info({**fields, "last_used_at": record.last_used_at})

    def _authentic(self, record: PrincipalRecord) -> bool:
        return self._mac.verify(record.authenticated_fields(), record.record_mac)

    # -- authentication ---------------------------------------------------------------------

    def authenticate(self, token: str | None, *, source: str) -> str:
        """The name of the principal holding ``token``; Unauthenticated (audited) otherwise."""
        now = self._operations.now()
        source = source[:100]
        parts = parse_token(token) if token else None
        shaped_id = token_id_of(token)
        keys = (f"source:{source}",) + ((f"token:{shaped_id}",) if shaped_id else ())
        self._check_throttles(keys, now)
        if token is None or parts is None:
            why = "missing" if not token else "malformed"
            self._refuse(keys, why, shaped_id, now)
        engine = self._operations.engine
        try:
            with read(engine) as connection:  # no write lock unless last_used_at is due
                record = rows.load_principal_by_token_id(connection, parts.token_id)
            reason = self._check(record, token, now)
            if reason is None and record is not None:
                last = record.last_used_at
                if last is None or now - last >= _TOUCH_EVERY:
                    with write(engine) as connection:
                        rows.touch_principal(connection, record.name, now)
                return record.name
        except SQLAlchemyError as exc:
            message = f"database error during authenticate: {type(exc).__name__}"
            raise StorageError(message) from None
        self._refuse(keys, reason or "unknown", parts.token_id, now)

    def _check_throttles(self, keys: tuple[str, ...], now: datetime) -> None:
        waits = [
            wait
            for wait in (
                self.source_throttle.retry_after(keys[:1], now),
                self.throttle.retry_after(keys[1:], now),
            )
            if wait is not None
        ]
        if waits:
            message = "too many failed authentications; retry later"
            raise TooManyAttempts(message, retry_after=max(waits))

    def _check(self, record: PrincipalRecord | None, token: str, now: datetime) -> str | None:
        """Why ``record`` does not accept ``token`` at ``now``; None when it does."""
        if record is None:
            return "unknown"
        if not self._authentic(record):
            logger.error("principal record {!r} fails its MAC: refused", record.name)
            return "tampered"
        if not _equal(token_digest(self._token_key, token), record.token_hash):
            return "wrong_secret"
        if record.revoked_at is not None:
            return "revoked"
        if record.expires_at is not None and now >= record.expires_at:
            return "expired"
        return None

    def _refuse(
        self, keys: tuple[str, ...], reason: str, token_id: str | None, now: datetime
    ) -> NoReturn:
        locked = self.source_throttle.fail(keys[:1], now) + self.throttle.fail(keys[1:], now)
        detail = {"reason": reason, "token_id": token_id, "source": keys[0][len("source:") :]}
        audit = self._operations.audit_log
        try:
            with write(self._operations.engine) as connection:
                audit.append(
                    connection,
                    at=now,
                    principal=ANONYMOUS,
                    action="authenticate",
                    credential_id=None,
                    outcome="denied",
                    detail=detail,
                )
                for key in locked:
                    audit.append(
                        connection,
                        at=now,
                        principal=ANONYMOUS,
                        action="lockout",
                        credential_id=None,
                        outcome="denied",
                        detail={"key": key[:120]},
                    )
        except SQLAlchemyError as exc:
            message = f"database error during authenticate: {type(exc).__name__}"
            raise StorageError(message) from None
        logger.warning("authentication refused: {} (token id {})", reason, token_id)
        raise Unauthenticated(_REFUSED)

    def configure(
        self, *, max_failures: int, lockout: float, source_max_failures: int | None = None
    ) -> None:
        """How many failures lock a token id (and a source), and for how long."""
        self.throttle = AuthThrottle(max_failures=max_failures, window=lockout, lockout=lockout)
        self.source_throttle = AuthThrottle(
            max_failures=source_max_failures or max_failures * 6, window=60.0, lockout=lockout
        )


def _equal(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())


def _lifetime(record: PrincipalRecord) -> timedelta | None:
    if record.expires_at is None:
        return None
    return record.expires_at - record.token_issued_at


def _fields(record: PrincipalRecord) -> dict[str, Any]:
    return {**record.authenticated_fields(), "last_used_at": record.last_used_at}


def _info(fields: dict[str, Any]) -> PrincipalInfo:
    return PrincipalInfo(**{k: v for k, v in fields.items() if k != "token_hash"})
