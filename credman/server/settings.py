"""The service's settings: a TOML file, CREDMAN_* variables and flags, validated at start.

Precedence: flags, then the environment, then the file, then the defaults. Every error is
one line naming the setting (a :class:`CredentialValidationError`), never a secret value.

```toml
[server]
http = "127.0.0.1:8443"        # CREDMAN_HTTP
uds = "/run/credman.sock"      # CREDMAN_UDS
tls_cert = "server.pem"        # CREDMAN_TLS_CERT
tls_key = "server.key"         # CREDMAN_TLS_KEY
public_url = "https://credman.example"  # CREDMAN_PUBLIC_URL (OAuth callbacks come back here)
return_to = ["https://app.example/connected"]  # CREDMAN_RETURN_TO (comma-separated)
[scheduler]
enabled = true                 # CREDMAN_SCHEDULER
interval = 30                  # CREDMAN_INTERVAL (seconds)
[access]
admins = ["ops"]               # CREDMAN_ADMINS (comma-separated)
[notify]
webhook_url = "https://hooks.example/credman"   # CREDMAN_WEBHOOK_URL
webhook_secret_file = "webhook.secret"  # CREDMAN_WEBHOOK_SECRET_FILE or _SECRET
[audit]
head_file = "/var/lib/credman/heads.jsonl"  # CREDMAN_AUDIT_HEAD_FILE: signed heads appended
head_webhook_url = "https://anchor.example/h"  # CREDMAN_AUDIT_HEAD_WEBHOOK_URL (notify secret)
head_interval = 300            # CREDMAN_AUDIT_HEAD_INTERVAL (seconds)
head_signing_key = "head.key"  # CREDMAN_AUDIT_HEAD_SIGNING_KEY: Ed25519 PEM (optional)
forward_file = "audit.jsonl"    # CREDMAN_AUDIT_FORWARD_FILE: new rows appended as JSON lines
forward_syslog = "/dev/log"    # CREDMAN_AUDIT_FORWARD_SYSLOG: or HOST:PORT (UDP), RFC 5424
forward_interval = 5           # CREDMAN_AUDIT_FORWARD_INTERVAL (seconds)
[limits]
max_body_bytes = 65536         # CREDMAN_MAX_BODY_BYTES
auth_max_failures = 5          # CREDMAN_AUTH_MAX_FAILURES (per token id; x6 per source)
auth_lockout = 300             # CREDMAN_AUTH_LOCKOUT (seconds)
```
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from credman.audit_export import check_forwarding, check_head_export
from credman.crypto import Secret
from credman.errors import CredentialValidationError
from credman.server.urls import check_base_url

__all__ = ["ServerSettings", "is_loopback", "load_settings"]

# setting -> (TOML section, key, environment variable)
_SOURCES: dict[str, tuple[str, str, str]] = {
    "http": ("server", "http", "CREDMAN_HTTP"),
    "uds": ("server", "uds", "CREDMAN_UDS"),
    "tls_cert": ("server", "tls_cert", "CREDMAN_TLS_CERT"),
    "tls_key": ("server", "tls_key", "CREDMAN_TLS_KEY"),
    "public_url": ("server", "public_url", "CREDMAN_PUBLIC_URL"),
    "return_to": ("server", "return_to", "CREDMAN_RETURN_TO"),
    "scheduler": ("scheduler", "enabled", "CREDMAN_SCHEDULER"),
    "interval": ("scheduler", "interval", "CREDMAN_INTERVAL"),
    "admins": ("access", "admins", "CREDMAN_ADMINS"),
    "webhook_url": ("notify", "webhook_url", "CREDMAN_WEBHOOK_URL"),
    "webhook_secret_file": ("notify", "webhook_secret_file", "CREDMAN_WEBHOOK_SECRET_FILE"),
    "head_file": ("audit", "head_file", "CREDMAN_AUDIT_HEAD_FILE"),
    "head_webhook_url": ("audit", "head_webhook_url", "CREDMAN_AUDIT_HEAD_WEBHOOK_URL"),
    "head_interval": ("audit", "head_interval", "CREDMAN_AUDIT_HEAD_INTERVAL"),
    "head_signing_key": ("audit", "head_signing_key", "CREDMAN_AUDIT_HEAD_SIGNING_KEY"),
    "forward_file": ("audit", "forward_file", "CREDMAN_AUDIT_FORWARD_FILE"),
    "forward_syslog": ("audit", "forward_syslog", "CREDMAN_AUDIT_FORWARD_SYSLOG"),
    "forward_interval": ("audit", "forward_interval", "CREDMAN_AUDIT_FORWARD_INTERVAL"),
    "max_body_bytes": ("limits", "max_body_bytes", "CREDMAN_MAX_BODY_BYTES"),
    "auth_max_failures": ("limits", "auth_max_failures", "CREDMAN_AUTH_MAX_FAILURES"),
    "auth_lockout": ("limits", "auth_lockout", "CREDMAN_AUTH_LOCKOUT"),
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """Where and how ``credman serve`` listens, sweeps and limits."""

    http: str | None = None
    uds: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    scheduler: bool = True
    interval: float = 30.0
    admins: tuple[str, ...] | None = None
    webhook_url: str | None = None
    webhook_secret_file: str | None = None
    webhook_secret: Secret | None = field(default=None, repr=False)
    head_file: str | None = None
    head_webhook_url: str | None = None
    head_interval: float = 300.0
    head_signing_key: str | None = None
    forward_file: str | None = None
    forward_syslog: str | None = None
    forward_interval: float = 5.0
    max_body_bytes: int = 64 * 1024
    auth_max_failures: int = 5
    auth_lockout: float = 300.0
    public_url: str | None = None
    return_to: tuple[str, ...] = ()

    @property
    def bind(self) -> tuple[str, int] | None:
        """The (host, port) of ``http``, or None."""
        return None if self.http is None else _host_port(self.http)

    def validated(self) -> ServerSettings:
        """These settings, checked as a whole; the first problem is a one-line error."""
        if self.http is None and self.uds is None and not self.scheduler:
            _bad("http", "nothing to run: give --http or --uds, or keep the scheduler on")
        if (self.tls_cert is None) != (self.tls_key is None):
            _bad("tls_cert", "give --tls-cert and --tls-key together")
        for name in ("tls_cert", "tls_key", "webhook_secret_file", "head_signing_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                _bad(name, f"no readable file at {path}")
        bind = self.bind
        if bind is not None and self.tls_cert is None and not is_loopback(bind[0]):
            _bad(
                "http",
                f"{bind[0]} is not a loopback address: serving it needs --tls-cert/--tls-key",
            )
        if not 0.1 <= self.interval <= 86400:
            _bad("interval", "seconds between sweeps, from 0.1 to 86400")
        if not 1024 <= self.max_body_bytes <= 16 * 1024 * 1024:
            _bad("max_body_bytes", "from 1024 to 16777216 bytes")
        if not 1 <= self.auth_max_failures <= 1000:
            _bad("auth_max_failures", "from 1 to 1000")
        if not 1 <= self.auth_lockout <= 86400:
            _bad("auth_lockout", "seconds, from 1 to 86400")
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("https://", "http://")
        ):
            _bad("webhook_url", "an http(s) URL")
        if self.webhook_url is not None and self.webhook_secret is None:
            _bad("webhook_secret", "a webhook URL needs a secret (CREDMAN_WEBHOOK_SECRET or _FILE)")
        _check_connect_urls(self.public_url, self.return_to)
        check_head_export(self.head_file, self.head_webhook_url, self.head_interval)
        if self.head_webhook_url is not None and self.webhook_secret is None:
            _bad("webhook_secret", "a head webhook needs the webhook secret (..._SECRET or _FILE)")
        check_forwarding(self.forward_file, self.forward_syslog, self.forward_interval)
        if self.head_signing_key is not None and self.head_file is self.head_webhook_url is None:
            _bad("head_signing_key", "signs exported heads: give head_file or head_webhook_url")
        return self


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP literal."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **flags: Any,
) -> ServerSettings:
    """Settings from the TOML file, the environment and ``flags`` (None means not given)."""
    env = os.environ if environ is None else environ
    document = _read_toml(config) if config is not None else {}
    values: dict[str, Any] = {}
    for name, (section, key, variable) in _SOURCES.items():
        table = document.get(section, {})
        if key in table:
            values[name] = _coerce(name, table[key])
        if env.get(variable):
            values[name] = _coerce(name, env[variable])
        if flags.get(name) is not None:
            values[name] = _coerce(name, flags[name])
    unknown = set(flags) - set(_SOURCES)
    if unknown:
        _bad(sorted(unknown)[0], "not a setting")
    settings = replace(ServerSettings(), **values)
    return replace(settings, webhook_secret=_webhook_secret(settings, env)).validated()


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        _bad("config", f"no config file at {path}")
    except (OSError, UnicodeDecodeError):
        _bad("config", f"cannot read {path}")
    except tomllib.TOMLDecodeError as exc:
        _bad("config", f"{path} is not valid TOML ({str(exc).splitlines()[0]})")
    known = {section for section, _, _ in _SOURCES.values()}
    for section, table in document.items():
        if section not in known or not isinstance(table, dict):
            _bad("config", f"unknown section [{section}] in {path}")
        keys = {key for s, key, _ in _SOURCES.values() if s == section}
        for key in table:
            if key not in keys:
                _bad("config", f"unknown setting {section}.{key} in {path}")
    return document


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(ServerSettings)}[name]
    try:
        if name in ("admins", "return_to"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if kind == "bool":
            return _bool(value)
        if kind == "float":
            return float(value)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if not isinstance(value, str) or not value:
            raise ValueError
        if name == "http":
            _host_port(value)
        return value
    except (TypeError, ValueError):
        _bad(name, "not a valid value")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        _bad("http", "HOST:PORT, e.g. 127.0.0.1:8443")
    return host.strip("[]"), int(port)


def _webhook_secret(settings: ServerSettings, env: Mapping[str, str]) -> Secret | None:
    if settings.webhook_secret_file is not None:
        try:
            text = Path(settings.webhook_secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            _bad("webhook_secret_file", f"cannot read {settings.webhook_secret_file}")
        return Secret(text) if text else None
    text = env.get("CREDMAN_WEBHOOK_SECRET", "")
    return Secret(text) if text else None


def _check_connect_urls(public_url: str | None, return_to: tuple[str, ...]) -> None:
    if public_url is not None:
        check_base_url(public_url, "public_url")
    for url in return_to:
        check_base_url(url, "return_to")


def _bad(name: str, why: str) -> Any:
    raise CredentialValidationError(f"{name}: {why}", fields=(name,))
