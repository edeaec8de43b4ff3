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

No SQL here: rows come from :mod:`credman.storage.principals`.
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

from credman.access import check_principal
from credman.audit import AuditLog
from credman.crypto.records import RecordMac
from credman.crypto.tokens import new_token, parse_token, token_digest, token_id_of
from credman.errors import (
    CredentialValidationError,
    NotFound,
    TooManyAttempts,
    Unauthenticated,
)
from credman.storage import principals as rows

__all__ = [
    "ANONYMOUS",
    "AuthThrottle",
    "PrincipalInfo",
    "PrincipalService",
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


class PrincipalService:
    """Creates, lists, rotates and revokes principals, and authenticates tokens.

    Methods that change principals run inside the caller's transaction (the facade checks
    ``admin`` and audits); :meth:`authenticate` runs its own short transactions.
    """

    def __init__(
        self,
        *,
        token_key: bytes,
        record_key: bytes,
        audit: AuditLog,
        throttle: AuthThrottle | None = None,
        source_throttle: AuthThrottle | None = None,
    ) -> None:
        self._token_key = token_key
        self._mac = RecordMac(record_key, "principal")
        self._audit = audit
        self.throttle = throttle or AuthThrottle()
        self.source_throttle = source_throttle or AuthThrottle(
            max_failures=30, window=60.0, lockout=60.0
        )

    def __repr__(self) -> str:
        return "PrincipalService()"

    # -- management (inside the facade's audited transaction) ------------------------------

    def add(
        self,
        connection: Connection,
        name: str,
        *,
        expires_in: timedelta | None,
        description: str | None,
        by: str,
        now: datetime,
    ) -> tuple[PrincipalInfo, str]:
        """A new principal and its token (shown once); a taken name is a validation error."""
        check_principal(name)
        if rows.load_principal(connection, name) is not None:
            raise CredentialValidationError(
                f"name: a principal called {name!r} exists (rotate or revoke it)",
                fields=("name",),
            )
        now = now.replace(microsecond=0)
        token_id, token = new_token()
        record = {
            "name": name,
            "token_id": token_id,
            "token_hash": token_digest(self._token_key, token),
            "description": description,
            "created_at": now,
            "created_by": by,
            "token_issued_at": now,
            "expires_at": now + expires_in if expires_in else None,
            "revoked_at": None,
        }
        rows.insert_principal(connection, {**record, "record_mac": self._mac.mac(record)})
        return _info({**record, "last_used_at": None}), token

    def list(self, connection: Connection) -> list[PrincipalInfo]:
        """Every principal whose record is authentic (a forged row is logged and left out)."""
        found = []
        for record in rows.list_principals(connection):
            if self._authentic(record):
                found.append(_info(record))
            else:
                logger.error("principal record {!r} fails its MAC: ignored", record["name"])
        return found

    def rotate(
        self,
        connection: Connection,
        name: str,
        *,
        expires_in: timedelta | None,
        now: datetime,
    ) -> tuple[PrincipalInfo, str]:
        """A new token for ``name``; the old one stops working at once."""
        record = self._load_for_change(connection, name)
        now = now.replace(microsecond=0)
        token_id, token = new_token()
        lifetime = expires_in or _lifetime(record)
        changes = {
            "token_id": token_id,
            "token_hash": token_digest(self._token_key, token),
            "token_issued_at": now,
            "expires_at": now + lifetime if lifetime else None,
            "revoked_at": None,
        }
        return self._write(connection, record, changes), token

    def revoke(self, connection: Connection, name: str, *, now: datetime) -> PrincipalInfo:
        """Refuse ``name``'s token from the next request on (idempotent)."""
        record = self._load_for_change(connection, name)
        if record["revoked_at"] is not None:
            return _info(record)
        return self._write(connection, record, {"revoked_at": now.replace(microsecond=0)})

    def _load_for_change(self, connection: Connection, name: str) -> rows.PrincipalRecord:
        check_principal(name)
        record = rows.load_principal(connection, name, for_update=True)
        if record is None or not self._authentic(record):
            raise NotFound(f"no principal {name!r}")
        return record

    def _write(
        self, connection: Connection, record: rows.PrincipalRecord, changes: dict[str, Any]
    ) -> PrincipalInfo:
        fields = {k: changes.get(k, record[k]) for k in rows.PRINCIPAL_FIELDS}
        rows.update_principal(
            connection, record["name"], {**changes, "record_mac": self._mac.mac(fields)}
        )
        return _info({**fields, "last_used_at": record["last_used_at"]})

    def _authentic(self, record: rows.PrincipalRecord) -> bool:
        return self._mac.verify({k: record[k] for k in rows.PRINCIPAL_FIELDS}, record["record_mac"])

    # -- authentication ---------------------------------------------------------------------

    def authenticate(
        self,
        engine_write: Any,
        token: str | None,
        *,
        source: str,
        now: datetime,
    ) -> str:
        """The name of the principal holding ``token``; Unauthenticated (audited) otherwise.

        ``engine_write`` opens a write transaction (``storage.engine.write`` bound to the
        engine).
        """
        parts = parse_token(token) if token else None
        shaped_id = token_id_of(token)
        keys = (f"source:{source}",) + ((f"token:{shaped_id}",) if shaped_id else ())
        self._check_throttles(keys, now)
        if token is None or parts is None:
            why = "missing" if not token else "malformed"
            self._refuse(engine_write, keys, why, shaped_id, now)
        with engine_write() as connection:
            record = rows.load_principal_by_token_id(connection, parts.token_id)
            reason = self._check(record, token, now)
            if reason is None:
                assert record is not None
                last = record["last_used_at"]
                if last is None or now - last >= _TOUCH_EVERY:
                    rows.touch_principal(connection, record["name"], now)
                return str(record["name"])
        self._refuse(engine_write, keys, reason, parts.token_id, now)

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

    def _check(self, record: rows.PrincipalRecord | None, token: str, now: datetime) -> str | None:
        """Why ``record`` does not accept ``token`` at ``now``; None when it does."""
        if record is None:
            return "unknown"
        if not self._authentic(record):
            logger.error("principal record {!r} fails its MAC: refused", record["name"])
            return "tampered"
        expected = token_digest(self._token_key, token)
        if not _equal(expected, record["token_hash"]):
            return "wrong_secret"
        if record["revoked_at"] is not None:
            return "revoked"
        if record["expires_at"] is not None and now >= record["expires_at"]:
            return "expired"
        return None

    def _refuse(
        self,
        engine_write: Any,
        keys: tuple[str, ...],
        reason: str,
        token_id: str | None,
        now: datetime,
    ) -> NoReturn:
        locked = self.source_throttle.fail(keys[:1], now) + self.throttle.fail(keys[1:], now)
        detail = {"reason": reason, "token_id": token_id, "source": keys[0][len("source:") :]}
        with engine_write() as connection:
            self._audit.append(
                connection,
                at=now,
                principal=ANONYMOUS,
                action="authenticate",
                credential_id=None,
                outcome="denied",
                detail=detail,
            )
            for key in locked:
                self._audit.append(
                    connection,
                    at=now,
                    principal=ANONYMOUS,
                    action="lockout",
                    credential_id=None,
                    outcome="denied",
                    detail={"key": key[:120]},
                )
        logger.warning("authentication refused: {} (token id {})", reason, token_id)
        raise Unauthenticated(_REFUSED)


def _equal(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode(), right.encode())


def _lifetime(record: rows.PrincipalRecord) -> timedelta | None:
    if record["expires_at"] is None:
        return None
    return record["expires_at"] - record["token_issued_at"]  # type: ignore[no-any-return]


def _info(record: rows.PrincipalRecord) -> PrincipalInfo:
    return PrincipalInfo(
        name=record["name"],
        token_id=record["token_id"],
        description=record["description"],
        created_at=record["created_at"],
        created_by=record["created_by"],
        token_issued_at=record["token_issued_at"],
        expires_at=record["expires_at"],
        revoked_at=record["revoked_at"],
        last_used_at=record["last_used_at"],
    )
