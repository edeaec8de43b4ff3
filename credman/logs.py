"""Operational logging for the CLI and the daemon: one loguru sink whose lines carry no secret.

credman logs ids, states, versions and error class names, never a secret value; this module
is the defence in depth for the day one slips through. :func:`configure_logging` adds a
sink that renders each record itself from a redacted copy: the message and every ``extra``
value pass through :func:`redact`, an ``extra`` value under a secret-looking key is masked
whole, and exceptions are rendered without local variables (loguru's ``diagnose`` would
print them). The redaction happens inside the sink, not in a global patcher: loguru offers
no public way to remove a patcher, and other sinks in the process (a test session's raw
capture, for one) must keep seeing what credman actually emitted.

:func:`redact` masks, in this order: PEM private key blocks, JWTs, the password in a URL's
``user:password@``, the credentials of an ``Authorization`` header (keeping its scheme),
the value of a field whose name ends in a secret word (``password``, ``client_secret``,
``access_token``, ``private_key``, ``apiKey``, ... in ``name=value``, ``name: value``,
``"name": "value"`` and ``'name': 'value'`` shapes) and whatever follows ``Bearer`` or
``Basic``. It is idempotent: the mask itself is left alone.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

__all__ = ["MASK", "configure_logging", "is_secret_name", "redact", "redact_value"]

MASK = "***"

_VALUE_END = r"\s\"',;&()\[\]{}<>"
_BARE = rf"[^{_VALUE_END}]+"  # an unquoted value runs to whitespace, a quote or a delimiter
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"
_SECRET_WORDS = (
    "password|passwd|passphrase|secret|token|key|apikey|assertion|"
    "accesstoken|refreshtoken|idtoken|clientsecret|privatekey"  # the camelCase spellings
)
_PREFIX = r"(?<![\w-])(?:[\w-]*[_-])?"  # "client_", "x-api-", ...: a word ending in _ or -
_FIELD_NAME = rf"{_PREFIX}(?:{_SECRET_WORDS})(?![\w-])"
_AUTH_NAME = rf"{_PREFIX}authorization(?![\w-])"
_SCHEMES = "bearer|basic|digest|negotiate|token|dpop"

_PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----.*?"
    r"(?:-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|\Z)",  # a truncated block is masked to the end
    re.DOTALL,
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]+:)[^\s/@]+(?=@)")
_AUTHORIZATION = re.compile(
    rf"({_AUTH_NAME}[\"']?\s*[:=]\s*[\"']?)(?:((?:{_SCHEMES})\s+)(?=[^{_VALUE_END}]))?{_BARE}",
    re.IGNORECASE,
)
_FIELD = re.compile(rf"({_FIELD_NAME}[\"']?\s*[:=]\s*)({_QUOTED}|[\"']?{_BARE})", re.IGNORECASE)
_SCHEME = re.compile(rf"\b(Bearer|Basic)(\s+){_BARE}")
_SECRET_NAME = re.compile(rf"(?:[\w-]*[_-])?(?:{_SECRET_WORDS}|authorization)", re.IGNORECASE)


def _mask_field(match: re.Match[str]) -> str:
    value = match[2]
    quoted = len(value) > 1 and value[0] in "\"'" and value[-1] == value[0]
    return match[1] + (value[0] + MASK + value[0] if quoted else MASK)


_RULES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (_PEM, MASK),
    (_JWT, MASK),
    (_URL_PASSWORD, rf"\g<1>{MASK}"),
    (_AUTHORIZATION, lambda match: match[1] + (match[2] or "") + MASK),
    (_FIELD, _mask_field),
    (_SCHEME, rf"\g<1>\g<2>{MASK}"),
)


def redact(text: str) -> str:
    """``text`` with every secret-looking value replaced by ``***``."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (``token``, ``client_secret``, ...)."""
    return _SECRET_NAME.fullmatch(name) is not None


def redact_value(value: Any) -> Any:
    """A copy of ``value`` with strings redacted and values under secret keys masked whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            str(key): MASK if is_secret_name(str(key)) else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _exception_text(record: Record) -> str | None:
    exception = record["exception"]
    if exception is None:
        return None
    lines = traceback.format_exception(exception.type, exception.value, exception.traceback)
    return redact("".join(lines))  # standard tracebacks show code, never local values


def _render(record: Record, *, serialize: bool, source: bool = False) -> str:
    message = redact(record["message"])
    extra = redact_value(record["extra"])
    exception = _exception_text(record)
    if serialize:
        document = {
            "time": record["time"].isoformat(),
            "level": record["level"].name,
            "name": record["name"],
            "function": record["function"],
            "line": record["line"],
            "message": message,
            "extra": extra,
            "exception": exception,
        }
        return json.dumps(document, ensure_ascii=False, default=str) + "\n"
    time = record["time"].isoformat(timespec="milliseconds")
    where = f"{record['name']}:{record['function']}:{record['line']} - " if source else ""
    fields = "".join(f" {key}={value}" for key, value in extra.items())
    line = f"{time} | {record['level'].name:<8} | {where}{message}{fields}\n"
    return line + (exception or "")


class _RedactingSink:
    """A loguru sink that writes each record, rendered from a redacted copy, to a target."""

    def __init__(
        self, target: TextIO | Callable[[str], object] | None, *, serialize: bool, source: bool
    ) -> None:
        self._target = target
        self._serialize = serialize
        self._source = source

    def __call__(self, message: Message) -> None:
        try:
            self._write(_render(message.record, serialize=self._serialize, source=self._source))
        except Exception as exc:  # loguru's own error report would print the raw record
            with suppress(Exception):
                sys.stderr.write(f"credman: a log line was dropped ({type(exc).__name__})\n")

    def _write(self, text: str) -> None:
        target = sys.stderr if self._target is None else self._target
        if callable(target):
            target(text)
            return
        target.write(text)
        target.flush()


_LOGURU_DEFAULT_HANDLER = 0
_installed: list[int] = []


def configure_logging(
    level: str | int = "INFO",
    sink: TextIO | Callable[[str], object] | None = None,
    serialize: bool = False,
    *,
    replace_default: bool = True,
    source: bool = False,
) -> int:
    """Enable the ``credman`` logger and send records at ``level`` and above to ``sink``,
    redacted, as text lines or JSON lines (``serialize``); returns the loguru handler id.

    ``sink`` is a stream or a callable taking one line; the default is ``sys.stderr`` as it
    is when each line is written. The sink installed by an earlier call is replaced, and so
    (``replace_default``) is loguru's default stderr handler, which prints raw messages and
    traceback locals. Sinks added by anyone else are left alone. Text lines name the
    emitting ``module:function:line`` only with ``source``.
    """
    handler_id = logger.add(  # first, so a bad argument leaves the old setup in place
        _RedactingSink(sink, serialize=serialize, source=source),
        level=level,
        format="{message}",
        colorize=False,
        backtrace=False,
        diagnose=False,
        catch=False,  # the sink never raises; loguru's catch would print the raw record
    )
    stale = [*_installed, _LOGURU_DEFAULT_HANDLER] if replace_default else [*_installed]
    for stale_id in stale:
        with suppress(ValueError):  # already removed
            logger.remove(stale_id)
    _installed[:] = [handler_id]
    logger.enable("credman")
    return handler_id
