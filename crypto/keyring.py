"""The versioned keyring of key-encryption keys, and the providers it is loaded from.

A keyring holds one or more 256-bit key-encryption keys (KEKs) by version; the highest
version is primary and wraps every new data key. Older versions stay until nothing
references them. A separate audit HMAC key is derived with HKDF from dedicated key
material, so audit integrity never shares a key with data.

Providers implement :class:`KeyProvider`. The key file (default) is JSON, created 0600
and refused when group or others may read it; it is rewritten atomically under a lock so
processes sharing it see each other's rotations. ``EnvKeyProvider`` reads a read-only ring
from an environment variable; :class:`KmsKeyProvider` shows where a cloud KMS plugs in.
The file and KMS providers remember the last ring they decoded and return it again while
the stored bytes are unchanged, so a caller may reload before every write for the price
of one small read (and no KMS call).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credman.errors import KeyringError

__all__ = [
    "KEY_BYTES",
    "EnvKeyProvider",
    "KeyFileProvider",
    "KeyProvider",
    "Keyring",
    "KmsKeyProvider",
    "encode_keyring",
    "generate_keyring",
]

KEY_BYTES = 32
_FORMAT = "credman-keyring/1"
_AUDIT_INFO = b"credman/audit-hmac/v1"
_PRINCIPAL_TOKEN_INFO = b"credman/principal-token-hmac/v1"
_PRINCIPAL_RECORD_INFO = b"credman/principal-record-mac/v1"
_CREDENTIAL_RECORD_INFO = b"credman/credential-record-mac/v1"
_GRANT_RECORD_INFO = b"credman/grant-record-mac/v1"
_KEY_CHECK_INFO = b"credman/key-check/v1"
_AUDIT_HEAD_INFO = b"credman/audit-head-mac/v1"


@dataclass(frozen=True, slots=True)
class Keyring:
    """An immutable snapshot of the key versions; the highest is primary."""

    keys: Mapping[int, bytes]
    audit_seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("the keyring holds no key")
        for version, key in self.keys.items():
            if version < 1:
                raise KeyringError(f"key version {version} is not a positive integer")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key version {version} is {len(key)} bytes, not {KEY_BYTES}")
        if len(self.audit_seed) != KEY_BYTES:
            raise KeyringError(f"the audit seed is not {KEY_BYTES} bytes")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def __repr__(self) -> str:
        return f"Keyring(versions={self.versions}, primary={self.primary})"

    @property
    def primary(self) -> int:
        """The version that wraps new data keys."""
        return max(self.keys)

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version in the ring, oldest first."""
        return tuple(sorted(self.keys))

    def kek(self, version: int) -> bytes:
        """The key of ``version``; a clear error names a version the ring lacks."""
        try:
            return self.keys[version]
        except KeyError:
            have = ", ".join(map(str, self.versions))
            raise KeyringError(
                f"key version {version} is not in the keyring (it has {have}): "
                "load the key file the data was written with"
            ) from None

    def audit_key(self) -> bytes:
        """The HMAC key of the audit chain, derived from the audit seed (never a data key)."""
        return self._derive(_AUDIT_INFO)

    def principal_token_key(self) -> bytes:
        """The HMAC key principal tokens are stored under (their own HKDF label).

        Derived from the audit seed, which key rotation keeps, so tokens outlive rotations.
        """
        return self._derive(_PRINCIPAL_TOKEN_INFO)

    def principal_record_key(self) -> bytes:
        """The MAC key that authenticates principal rows (their own HKDF label)."""
        return self._derive(_PRINCIPAL_RECORD_INFO)

    def credential_record_key(self) -> bytes:
        """The MAC key that authenticates credential rows (their own HKDF label).

        Derived from the audit seed, which rotation keeps, so a rotation re-MACs rows under
        the same key and no retired key version is ever needed to verify one.
        """
        return self._derive(_CREDENTIAL_RECORD_INFO)

    def grant_record_key(self) -> bytes:
        """The MAC key that authenticates grant rows (their own HKDF label)."""
        return self._derive(_GRANT_RECORD_INFO)

    def key_checks(self) -> dict[int, str]:
        """A fingerprint per key version (0: the audit seed) to store beside the data.

        Each is an HMAC of a constant under a key derived from that version's key (or the
        seed), so it shows which key file wrote a database without revealing any key.
        """
        checks = {0: _fingerprint(self._derive(_KEY_CHECK_INFO))}
        for version, key in self.keys.items():
            checks[version] = _fingerprint(key)
        return checks

    def audit_head_key(self) -> bytes:
        """The MAC key that signs exported audit heads (their own HKDF label)."""
        return self._derive(_AUDIT_HEAD_INFO)

    def _derive(self, info: bytes) -> bytes:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info)
        return hkdf.derive(self.audit_seed)

    def with_new_version(self) -> Keyring:
        """This ring plus a fresh random primary version."""
        keys = dict(self.keys)
        keys[self.primary + 1] = secrets.token_bytes(KEY_BYTES)
        return Keyring(keys, self.audit_seed)

    def without_version(self, version: int) -> Keyring:
        """This ring with ``version`` removed; the primary cannot be removed."""
        self.kek(version)
        if version == self.primary:
            raise KeyringError(f"key version {version} is primary and cannot be retired")
        return Keyring({v: k for v, k in self.keys.items() if v != version}, self.audit_seed)


def _fingerprint(key: bytes) -> str:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_KEY_CHECK_INFO)
    return hmac.new(hkdf.derive(key), b"credman key check", hashlib.sha256).hexdigest()


def generate_keyring() -> Keyring:
    """A new ring with one random version and a random audit seed."""
    return Keyring({1: secrets.token_bytes(KEY_BYTES)}, secrets.token_bytes(KEY_BYTES))


@runtime_checkable
class KeyProvider(Protocol):
    """Where the keyring comes from and, if it can, where new versions are kept."""

    def load(self) -> Keyring:
        """Read the current keyring; raise KeyringError when it is missing or unsafe."""
        ...

    def update(self, change: Callable[[Keyring], Keyring]) -> Keyring:
        """Apply ``change`` to the current ring durably and atomically; return the new ring."""
        ...


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise KeyringError(f"{what} is missing or not a string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{what} is not valid base64") from None


def _encode(ring: Keyring) -> bytes:
    document = {
        "format": _FORMAT,
        "keys": {str(v): base64.b64encode(k).decode() for v, k in sorted(ring.keys.items())},
        "audit_seed": base64.b64encode(ring.audit_seed).decode(),
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def _decode(raw: bytes, source: str) -> Keyring:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyringError(f"{source} is not a credman key file (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise KeyringError(f"{source} is not a credman key file (format {_FORMAT!r} expected)")
    keys = document.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise KeyringError(f"{source} holds no keys")
    ring: dict[int, bytes] = {}
    for version, text in keys.items():
        if not str(version).isdigit():
            raise KeyringError(f"{source}: key version {version!r} is not a positive integer")
        ring[int(version)] = _b64(text, f"{source}: key version {version}")
    return Keyring(ring, _b64(document.get("audit_seed"), f"{source}: audit_seed"))


def _check_private(status: os.stat_result, what: str, *, fix: str) -> None:
    """Refuse a file that is not a regular file of this user's with no group/other access."""
    if not stat.S_ISREG(status.st_mode):
        raise KeyringError(f"{what} is not a regular file")
    if status.st_uid != os.geteuid():
        raise KeyringError(
            f"{what} is owned by uid {status.st_uid}, not by this user (uid {os.geteuid()}): "
            "someone else may have planted it; remove it and run 'credman init'"
        )
    if status.st_mode & 0o077:
        raise KeyringError(
            f"{what} is readable by group or others "
            f"(mode {stat.S_IMODE(status.st_mode):04o}); run '{fix}'"
        )


def _check_folder(path: Path) -> None:
    """Refuse a key file in a folder anyone may write without the sticky bit (it could be
    swapped at any time)."""
    folder = path.parent
    mode = folder.stat().st_mode
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise KeyringError(
            f"the folder {folder} of key file {path} is writable by everyone; "
            f"run 'chmod o-w {folder}'"
        )


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class KeyFileProvider:
    """A JSON key file: created 0600; refused when it is a symlink, not this user's, readable
    by group or others, or in a folder everyone may write (without the sticky bit)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._last: tuple[bytes, Keyring] | None = None

    def __repr__(self) -> str:
        return f"KeyFileProvider({str(self.path)!r})"

    def create(self) -> Keyring:
        """Write a new key file (never overwriting one) and return its ring."""
        ring = generate_keyring()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyringError(f"key file {self.path} already exists; not overwriting it") from None
        except OSError as exc:
            raise KeyringError(f"cannot create key file {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(_encode(ring))
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_directory(self.path.parent.resolve())
        return ring

    def load(self) -> Keyring:
        """Read and validate the key file.

        One descriptor, opened without following a symlink (and without blocking on a FIFO),
        is both checked (``fstat``: a regular file, owned by this user, no group or other
        access) and read, so the file checked is the file read.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyringError(
                f"no key file at {self.path}: run 'credman init' or set CREDMAN_KEY_FILE"
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KeyringError(f"key file {self.path} is a symlink; refusing it") from None
            raise KeyringError(f"cannot read key file {self.path}: {exc.strerror}") from None
        try:
            raw = self._checked_read(fd)
        finally:
            os.close(fd)
        if self._last is None or self._last[0] != raw:
            self._last = raw, _decode(raw, f"key file {self.path}")
        return self._last[1]

    def _checked_read(self, fd: int) -> bytes:
        status = os.fstat(fd)
        _check_private(status, f"key file {self.path}", fix=f"chmod 600 {self.path}")
        _check_folder(self.path)
        chunks: list[bytes] = []
        while chunk := os.read(fd, 65_536):
            chunks.append(chunk)
        return b"".join(chunks)

    def update(
        self, change: Callable[[Keyring], Keyring], *, keep_previous: bool = False
    ) -> Keyring:
        """Apply ``change`` under an exclusive lock; the file is replaced atomically.

        ``keep_previous`` keeps the file as it was beside it, 0600, as
        ``NAME.vPRIMARY.bak`` (never overwriting one): a rotation can be undone by hand.
        """
        with self._locked():
            before = self.load()
            ring = change(before)
            if keep_previous:
                self._keep(before)
            temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(_encode(ring))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            _fsync_directory(self.path.parent.resolve())
            return ring

    def _keep(self, ring: Keyring) -> None:
        backup = self.path.with_name(f"{self.path.name}.v{ring.primary}.bak")
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return  # the first copy of that ring is kept
        with os.fdopen(fd, "wb") as handle:
            handle.write(_encode(ring))
            handle.flush()
            os.fsync(handle.fileno())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(lock_path, flags, 0o600)
        except OSError as exc:
            what = (
                "is a symlink" if exc.errno == errno.ELOOP else f"cannot be opened ({exc.strerror})"
            )
            raise KeyringError(f"lock file {lock_path} {what}; refusing it") from None
        try:
            _check_private(os.fstat(fd), f"lock file {lock_path}", fix=f"rm {lock_path}")
        except KeyringError:
            os.close(fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class EnvKeyProvider:
    """A read-only ring from an environment variable: a key file's JSON, base64-encoded.

    ``credman keys export-env`` style: ``base64 -w0 credman.key``. Rotation needs a
    writable provider, so ``update`` refuses.
    """

    def __init__(self, variable: str = "CREDMAN_KEY", environ: Mapping[str, str] | None = None):
        self.variable = variable
        self._environ = os.environ if environ is None else environ

    def __repr__(self) -> str:
        return f"EnvKeyProvider({self.variable!r})"

    def load(self) -> Keyring:
        """Decode the ring from the variable."""
        raw = self._environ.get(self.variable)
        if not raw:
            raise KeyringError(f"environment variable {self.variable} is not set or empty")
        return _decode(_b64(raw.strip(), f"${self.variable}"), f"${self.variable}")

    def update(self, change: Callable[[Keyring], Keyring]) -> Keyring:
        """Refuse: an environment variable cannot be rewritten durably."""
        raise KeyringError(
            f"keys from ${self.variable} are read-only: rotate with a key file or a KMS provider"
        )


class KmsKeyProvider:
    """Where a cloud KMS plugs in: the key file's bytes are kept wrapped by the KMS.

    ``decrypt``/``encrypt`` are the KMS client's calls (e.g. AWS KMS ``Decrypt`` and
    ``Encrypt``, GCP ``decrypt``/``encrypt``); ``read``/``write`` keep the wrapped blob
    (a file, a secret store). Only the KMS can open it, so a stolen disk yields nothing.
    """

    def __init__(
        self,
        *,
        decrypt: Callable[[bytes], bytes],
        encrypt: Callable[[bytes], bytes],
        read: Callable[[], bytes],
        write: Callable[[bytes], None],
    ) -> None:
        self._decrypt, self._encrypt, self._read, self._write = decrypt, encrypt, read, write
        self._last: tuple[bytes, Keyring] | None = None

    def __repr__(self) -> str:
        return "KmsKeyProvider()"

    def load(self) -> Keyring:
        """Unwrap the ring through the KMS (only when the stored blob changed)."""
        blob = self._read()
        if self._last is None or self._last[0] != blob:
            self._last = blob, _decode(self._decrypt(blob), "the KMS-wrapped keyring")
        return self._last[1]

    def update(self, change: Callable[[Keyring], Keyring]) -> Keyring:
        """Apply ``change`` and store the ring wrapped again by the KMS."""
        ring = change(self.load())
        self._write(self._encrypt(_encode(ring)))
        return ring


def encode_keyring(ring: Keyring) -> bytes:
    """The key-file bytes of ``ring`` (for providers that store it elsewhere)."""
    return _encode(ring)
