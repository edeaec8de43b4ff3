"""The audit trail outside the database: signed heads and event export.

**Signed heads** (like CloudTrail digest files). The service writes the chain's head, its
sequence number and hash, the time and the database (without its password) at an
interval, to a JSON-lines file (appended, fsynced, mode 0600) and/or POSTs it to a webhook.
Each head is signed twice over the same canonical bytes (:func:`head_payload`):

- ``mac``: HMAC-SHA256 under a key derived from the keyring (its own HKDF label), always;
  ``credman audit verify --heads FILE`` checks it, so a head needs the keyring to forge.
- ``ed25519``: with a configured Ed25519 private key, optionally; anyone holding the public
  key verifies it without the keyring (and without trusting credman's host afterwards).

``credman audit verify --heads FILE`` then requires every exported head to still be on the
chain with its hash: rows deleted from the tail and the head moved back to match, or rows
rewritten, are detected as long as one head newer than the change was exported.

**Event export**: every audit row after a sequence number as one JSON line (the archive's
row format, ``prev_hash`` and ``hash`` included, so a receiver holding the audit key can
re-verify), to a file, a stream or syslog (RFC 5424 over UDP or a Unix socket). Rows are
read a batch at a time in short read transactions; nothing is written while one is open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import logging.handlers
import os
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from loguru import logger

from credman.errors import CredentialValidationError
from credman.notify import WebhookNotifier

__all__ = [
    "HEAD_EVENT",
    "HEAD_FORMAT",
    "AuditForwarder",
    "AuditHeadExporter",
    "HeadSigner",
    "JsonLinesSink",
    "SyslogSink",
    "check_forwarding",
    "check_head_export",
    "head_payload",
    "load_private_key",
    "load_public_key",
    "read_heads",
]

HEAD_FORMAT = "credman-audit-head/1"
HEAD_EVENT = "audit_head"
"""The ``X-Credman-Event`` of a head POSTed to the webhook."""
_SIGNED = ("format", "seq", "hash", "at", "database")


def head_payload(head: Mapping[str, Any]) -> bytes:
    """The bytes both signatures cover: the signed fields as canonical JSON.

    ``json.dumps({k: head[k] for k in ("format", "seq", "hash", "at", "database")},
    sort_keys=True, separators=(",", ":"))`` encoded as UTF-8.
    """
    return json.dumps(
        {name: head[name] for name in _SIGNED}, sort_keys=True, separators=(",", ":")
    ).encode()


class HeadSigner:
    """Signs heads with the keyring's head key and, if given, an Ed25519 private key."""

    def __init__(self, mac_key: bytes, private_key: Ed25519PrivateKey | None = None) -> None:
        self._mac_key = mac_key
        self._private_key = private_key

    def __repr__(self) -> str:
        return f"HeadSigner(ed25519={self._private_key is not None})"

    def mac(self, payload: bytes) -> str:
        """The HMAC-SHA256 of ``payload`` under the head key (hex)."""
        return hmac.new(self._mac_key, payload, hashlib.sha256).hexdigest()

    def sign(self, seq: int, digest: str, at: datetime, database: str) -> dict[str, Any]:
        """The head record: the signed fields plus ``mac`` (and ``ed25519``, base64)."""
        head: dict[str, Any] = {
            "format": HEAD_FORMAT,
            "seq": seq,
            "hash": digest,
            "at": at.astimezone(UTC).isoformat(),
            "database": database,
        }
        payload = head_payload(head)
        head["mac"] = self.mac(payload)
        if self._private_key is not None:
            head["ed25519"] = base64.b64encode(self._private_key.sign(payload)).decode()
        return head


def _load_pem(
    path: str | os.PathLike[str], what: str, load: Callable[[bytes], Any], kind: str
) -> Any:
    """``load`` applied to the PEM file at ``path``; one-line errors naming ``what``."""
    try:
        return load(Path(path).read_bytes())
    except OSError as exc:
        raise CredentialValidationError(
            f"{what}: cannot read {path} ({exc.strerror})", fields=(what,)
        ) from None
    except (ValueError, TypeError):
        raise CredentialValidationError(f"{what}: {path} is not {kind}", fields=(what,)) from None


def load_private_key(
    path: str | os.PathLike[str], what: str = "head_signing_key"
) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (PKCS#8, unencrypted); one-line errors."""
    key = _load_pem(
        path,
        what,
        lambda data: serialization.load_pem_private_key(data, password=None),
        "an unencrypted PEM private key",
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialValidationError(f"{what}: {path} is not an Ed25519 key", fields=(what,))
    return key


def load_public_key(path: str | os.PathLike[str], what: str = "public_key") -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; one-line errors."""
    key = _load_pem(path, what, serialization.load_pem_public_key, "a PEM public key")
    if not isinstance(key, Ed25519PublicKey):
        raise CredentialValidationError(f"{what}: {path} is not an Ed25519 key", fields=(what,))
    return key


def read_heads(
    path: str | os.PathLike[str], signer: HeadSigner, public_key: Ed25519PublicKey | None = None
) -> tuple[dict[int, str], int, str | None]:
    """The (seq -> hash) of every head in an exported file, their count, and the first
    problem (a line that does not parse or whose signature does not check), if any.

    Two heads naming one row with different hashes are a problem too.
    """
    anchors: dict[int, str] = {}
    count = 0
    try:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                problem = _head_problem(line, signer, public_key)
                if isinstance(problem, str):
                    return anchors, count, f"exported head on line {number}: {problem}"
                seq, digest = problem
                if anchors.get(seq, digest) != digest:
                    why = f"exported head on line {number} contradicts an earlier one"
                    return anchors, count, why
                anchors[seq] = digest
                count += 1
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise CredentialValidationError(
            f"heads: cannot read {path} ({why})", fields=("heads",)
        ) from None
    return anchors, count, None


def _head_problem(
    line: str, signer: HeadSigner, public_key: Ed25519PublicKey | None
) -> str | tuple[int, str]:
    try:
        head = json.loads(line)
        payload = head_payload(head)
        seq, digest, mac = head["seq"], head["hash"], head["mac"]
    except (ValueError, KeyError, TypeError):
        return "not a credman audit head"
    if head.get("format") != HEAD_FORMAT or not isinstance(seq, int) or isinstance(seq, bool):
        return "not a credman audit head"
    if not isinstance(digest, str) or not isinstance(mac, str):
        return "not a credman audit head"
    if not hmac.compare_digest(signer.mac(payload), mac):
        return "its MAC does not match (forged, edited, or another keyring's)"
    if public_key is not None:
        try:
            public_key.verify(base64.b64decode(head["ed25519"], validate=True), payload)
        except (KeyError, TypeError, ValueError, InvalidSignature):
            return "its Ed25519 signature is missing or does not match the public key"
    return seq, digest


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path`` (created 0600), flushed to disk before returning."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def check_head_export(file: str | None, webhook_url: str | None, interval: float) -> None:
    """The head-export settings, checked: one-line errors naming the setting."""
    if webhook_url is not None and not webhook_url.startswith(("https://", "http://")):
        raise CredentialValidationError(
            "head_webhook_url: an http(s) URL", fields=("head_webhook_url",)
        )
    if not 1 <= interval <= 86400:
        raise CredentialValidationError(
            "head_interval: seconds between exported heads, from 1 to 86400",
            fields=("head_interval",),
        )
    if file is not None and not Path(file).parent.is_dir():
        raise CredentialValidationError(
            f"head_file: no directory {Path(file).parent} to write it in", fields=("head_file",)
        )


def check_forwarding(file: str | None, syslog: str | None, interval: float) -> None:
    """The forwarding settings, checked: one-line errors naming the setting."""
    if file is not None and syslog is not None:
        raise CredentialValidationError(
            "forward_file: forward to a file or to syslog, not both", fields=("forward_file",)
        )
    if not 0.1 <= interval <= 86400:
        raise CredentialValidationError(
            "forward_interval: seconds between forwards, from 0.1 to 86400",
            fields=("forward_interval",),
        )
    if file is not None and not Path(file).parent.is_dir():
        raise CredentialValidationError(
            f"forward_file: no directory {Path(file).parent} to write it in",
            fields=("forward_file",),
        )


class _Periodic:
    """Runs :meth:`_tick` now, then every ``interval`` seconds in a daemon thread of its
    own, and once more when :meth:`stop` is called; a failing tick is logged and retried
    at the next interval (the database or a receiver may be away for a while)."""

    interval: float
    _stop: threading.Event
    _thread: threading.Thread | None
    _thread_name = "credman-periodic"
    _what = "periodic work"

    def _tick(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Run now, then every ``interval`` seconds until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after one last run."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                self._tick()
            except Exception as exc:
                logger.error("{} failed: {}", self._what, type(exc).__name__)
            if self._stop.is_set():
                return
            self._stop.wait(self.interval)


class AuditHeadExporter(_Periodic):
    """Exports a signed head now, and every ``interval`` seconds in a thread of its own."""

    _thread_name = "credman-audit-head"
    _what = "audit head export"

    def __init__(
        self,
        read_head: Callable[[], tuple[int, str]],
        signer: HeadSigner,
        *,
        database: str,
        file: str | os.PathLike[str] | None = None,
        webhook: WebhookNotifier | None = None,
        interval: float = 300.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if file is None and webhook is None:
            raise CredentialValidationError(
                "head_file: give a file or a webhook to export heads to", fields=("head_file",)
            )
        self._read_head = read_head
        self._signer = signer
        self._database = database
        self._file = None if file is None else Path(file)
        self._webhook = webhook
        self.interval = interval
        self._now = now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.exported = 0

    def __repr__(self) -> str:
        return f"AuditHeadExporter(file={self._file!s}, webhook={self._webhook!r})"

    def export(self) -> dict[str, Any]:
        """Sign the current head and write/POST it; the head record. A failed write or
        POST is logged (the next interval tries again), not raised."""
        seq, digest = self._read_head()
        head = self._signer.sign(seq, digest, self._now(), self._database)
        line = json.dumps(head, sort_keys=True, separators=(",", ":")) + "\n"
        if self._file is not None:
            try:
                append_line(self._file, line)
            except OSError as exc:
                logger.error("audit head export: cannot write {}: {}", self._file, exc.strerror)
        if self._webhook is not None and not self._webhook.send(line.encode(), HEAD_EVENT):
            logger.warning("audit head export: the webhook did not take head {}", seq)
        self.exported += 1
        return head

    def _tick(self) -> None:
        head = self.export()  # the last one, at stop, is the head at shutdown
        logger.debug("audit head {} exported", head["seq"])


# -- event export --------------------------------------------------------------------------


class JsonLinesSink:
    """Writes each exported row as one JSON line to a stream, or appends to a file (0600)."""

    def __init__(self, target: str | os.PathLike[str] | IO[str]) -> None:
        if isinstance(target, str | os.PathLike):
            try:
                fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                raise CredentialValidationError(
                    f"output: cannot open {target} ({exc.strerror})", fields=("output",)
                ) from None
            self._stream: IO[str] = os.fdopen(fd, "a", encoding="utf-8")
            self._owned = True
        else:
            self._stream, self._owned = target, False

    def __call__(self, row: Mapping[str, Any]) -> None:
        self._stream.write(json.dumps(row, sort_keys=True, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        """Flush (and fsync a file this sink opened)."""
        self._stream.flush()
        if self._owned:
            os.fsync(self._stream.fileno())

    def close(self) -> None:
        """Flush, and close a file this sink opened."""
        self.flush()
        if self._owned:
            self._stream.close()


class _RaisingSyslogHandler(logging.handlers.SysLogHandler):
    def handleError(self, record: logging.LogRecord) -> None:
        raise  # re-raise the send error: the stdlib would print it and go on


class SyslogSink:
    """Sends each exported row to syslog as an RFC 5424 message whose MSG is the JSON line.

    ``address``: ``HOST:PORT`` (UDP) or the path of a Unix socket such as ``/dev/log``.
    Facility ``auth`` (4), severity ``info``, APP-NAME ``credman``, MSGID ``audit``.
    """

    def __init__(self, address: str) -> None:
        target: str | tuple[str, int]
        if address.startswith("/"):
            target = address
        else:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise CredentialValidationError(
                    "syslog: HOST:PORT (UDP) or the path of a Unix socket", fields=("syslog",)
                )
            target = (host.strip("[]"), int(port))
        try:
            self._handler = _RaisingSyslogHandler(
                address=target,
                facility=logging.handlers.SysLogHandler.LOG_AUTH,
                socktype=socket.SOCK_DGRAM if isinstance(target, tuple) else None,
            )
        except OSError as exc:
            raise CredentialValidationError(
                f"syslog: cannot reach {address} ({exc.strerror or type(exc).__name__})",
                fields=("syslog",),
            ) from None
        self._handler.append_nul = False
        self._host = socket.gethostname() or "-"
        self._pid = os.getpid()

    def __call__(self, row: Mapping[str, Any]) -> None:
        body = json.dumps(row, sort_keys=True, separators=(",", ":"))
        stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        # the handler prefixes <PRI>; "1" is the RFC 5424 version, "-": no structured data
        message = f"1 {stamp} {self._host} credman {self._pid} audit - {body}"
        record = logging.makeLogRecord({"msg": message, "levelname": "INFO", "levelno": 20})
        self._handler.emit(record)

    def flush(self) -> None:
        """Nothing is buffered: each row was sent as it came."""

    def close(self) -> None:
        """Close the socket."""
        self._handler.close()


def last_exported_seq(path: str | os.PathLike[str]) -> int:
    """The ``seq`` of the last JSON line of an export file (0: no file, or no row yet)."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - 65536))
            lines = [line for line in file.read().splitlines() if line.strip()]
    except FileNotFoundError:
        return 0
    if not lines:
        return 0
    try:
        seq = json.loads(lines[-1])["seq"]
    except (ValueError, KeyError, TypeError):
        raise CredentialValidationError(
            f"forward_file: the last line of {path} is not an exported audit row",
            fields=("forward_file",),
        ) from None
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise CredentialValidationError(
            f"forward_file: the last line of {path} is not an exported audit row",
            fields=("forward_file",),
        )
    return seq


class AuditForwarder(_Periodic):
    """Forwards new audit rows to a sink every ``interval`` seconds, in a thread of its own.

    ``export(write, after)`` passes the rows after ``after`` to ``write`` and returns the
    count and the last seq; the forwarder remembers where it got to (in memory: a file
    sink resumes from its last line, see :func:`last_exported_seq`).
    """

    _thread_name = "credman-audit-fwd"
    _what = "audit forwarding"

    def __init__(
        self,
        export: Callable[[Callable[[Mapping[str, Any]], None], int], tuple[int, int]],
        sink: JsonLinesSink | SyslogSink,
        *,
        after: int,
        interval: float = 5.0,
    ) -> None:
        self._export = export
        self._sink = sink
        self.after = after
        self.interval = interval
        self.forwarded = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"AuditForwarder(after={self.after})"

    def forward(self) -> int:
        """Forward the rows written since the last call; how many."""
        count, self.after = self._export(self._sink, self.after)
        self._sink.flush()
        self.forwarded += count
        return count

    def _tick(self) -> None:
        self.forward()

    def stop(self, timeout: float = 10.0) -> None:
        """Forward what is new one last time, then stop and close the sink."""
        super().stop(timeout)
        self._sink.close()
