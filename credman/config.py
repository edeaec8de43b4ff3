"""Configuration from arguments and the environment, with the embedded defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_DATABASE_URL", "DEFAULT_KEY_FILE", "Settings"]

DEFAULT_DATABASE_URL = "sqlite:///./credman.db"
DEFAULT_KEY_FILE = "./credman.key"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Where the database and keys are, and who the admins are."""

    database_url: str = DEFAULT_DATABASE_URL
    key_file: str = DEFAULT_KEY_FILE
    key_env: str | None = None
    admins: tuple[str, ...] = ("admin",)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from CREDMAN_* variables; explicit overrides (not None) win.

        CREDMAN_DATABASE_URL, CREDMAN_KEY_FILE, CREDMAN_KEY (a base64 keyring, read-only;
        used when no key file is named), CREDMAN_ADMINS (comma-separated principals).
        """
        env = os.environ if environ is None else environ
        admins = tuple(
            a.strip() for a in env.get("CREDMAN_ADMINS", "admin").split(",") if a.strip()
        )
        values: dict[str, object] = {
            "database_url": env.get("CREDMAN_DATABASE_URL") or DEFAULT_DATABASE_URL,
            "key_file": env.get("CREDMAN_KEY_FILE") or DEFAULT_KEY_FILE,
            "key_env": "CREDMAN_KEY"
            if env.get("CREDMAN_KEY") and not env.get("CREDMAN_KEY_FILE")
            else None,
            "admins": admins,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("key_file") is not None:
            values["key_env"] = None
        return cls(**values)  # type: ignore[arg-type]
