"""Where a command's work goes: the local database (the facade) or a running service.

The commands that make sense on both sides call a :class:`Backend`. ``open_backend(ctx)``
gives :class:`LocalBackend` (a ``CredentialManager`` over the database and key file, acting
as the CLI's principal) or, with ``--server URL`` (``CREDMAN_URL``) and ``CREDMAN_TOKEN``,
:class:`RemoteBackend` (a :class:`credman.client.Client`, acting as the token's principal;
``CREDMAN_CA`` names a private CA). Commands that need the key file and the database
themselves (init, migrate, keys, audit, diagram, serve, demo, principal, test) refuse
``--server`` with one line: ``open_manager`` does.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import typer

from credman import (
    Access,
    Credential,
    CredentialInfo,
    CredentialManager,
    Grant,
    Permission,
    Transition,
)
from credman.cli.context import open_manager, options
from credman.client import Client
from credman.errors import CredentialValidationError

__all__ = ["Backend", "LocalBackend", "RemoteBackend", "open_backend"]


class Backend(Protocol):
    """What the credential and grant commands ask, locally or of a service."""

    def list(self, *, state: str | None = None) -> builtins.list[CredentialInfo]: ...
    def info(self, credential_id: str) -> CredentialInfo: ...
    def history(self, credential_id: str) -> builtins.list[Transition]: ...
    def access(self, credential_id: str) -> Access: ...
    def store(self, credential_id: str, credential: Credential) -> CredentialInfo: ...
    def refresh(self, credential_id: str, *, force: bool) -> CredentialInfo: ...
    def revoke(self, credential_id: str, *, reason: str | None) -> CredentialInfo: ...
    def grants(self, grantee: str | None = None) -> builtins.list[Grant]: ...
    def grant(
        self, grantee: str, pattern: str, permissions: Iterable[str | Permission]
    ) -> Grant: ...
    def ungrant(self, grantee: str, pattern: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class LocalBackend:
    """The facade over the local database, acting as ``principal``."""

    manager: CredentialManager
    principal: str

    def list(self, *, state: str | None = None) -> builtins.list[CredentialInfo]:
        return self.manager.list(principal=self.principal, state=state)

    def info(self, credential_id: str) -> CredentialInfo:
        return self.manager.info(credential_id, principal=self.principal)

    def history(self, credential_id: str) -> builtins.list[Transition]:
        return self.manager.history(credential_id, principal=self.principal)

    def access(self, credential_id: str) -> Access:
        return self.manager.access(credential_id, principal=self.principal)

    def store(self, credential_id: str, credential: Credential) -> CredentialInfo:
        return self.manager.store(credential_id, credential, principal=self.principal)

    def refresh(self, credential_id: str, *, force: bool) -> CredentialInfo:
        return self.manager.refresh(credential_id, principal=self.principal, force=force)

    def revoke(self, credential_id: str, *, reason: str | None) -> CredentialInfo:
        return self.manager.revoke(credential_id, principal=self.principal, reason=reason)

    def grants(self, grantee: str | None = None) -> builtins.list[Grant]:
        return self.manager.grants(principal=self.principal, grantee=grantee)

    def grant(self, grantee: str, pattern: str, permissions: Iterable[str | Permission]) -> Grant:
        return self.manager.grant(grantee, pattern, permissions, principal=self.principal)

    def ungrant(self, grantee: str, pattern: str) -> bool:
        return self.manager.revoke_grant(grantee, pattern, principal=self.principal)


@dataclass(frozen=True, slots=True)
class RemoteBackend:
    """A running service, through the client, acting as the token's principal."""

    client: Client

    def list(self, *, state: str | None = None) -> builtins.list[CredentialInfo]:
        infos = self.client.list()
        return infos if state is None else [i for i in infos if i.state.value == state]

    def info(self, credential_id: str) -> CredentialInfo:
        return self.client.info(credential_id)

    def history(self, credential_id: str) -> builtins.list[Transition]:
        return self.client.history(credential_id)

    def access(self, credential_id: str) -> Access:
        return self.client.access(credential_id)

    def store(self, credential_id: str, credential: Credential) -> CredentialInfo:
        return self.client.store(credential_id, credential)

    def refresh(self, credential_id: str, *, force: bool) -> CredentialInfo:
        return self.client.refresh(credential_id, force=force)

    def revoke(self, credential_id: str, *, reason: str | None) -> CredentialInfo:
        return self.client.revoke(credential_id, reason=reason)

    def grants(self, grantee: str | None = None) -> builtins.list[Grant]:
        return self.client.grants(grantee)

    def grant(self, grantee: str, pattern: str, permissions: Iterable[str | Permission]) -> Grant:
        return self.client.grant(grantee, pattern, permissions)

    def ungrant(self, grantee: str, pattern: str) -> bool:
        return self.client.ungrant(grantee, pattern)


def _remote(server: str, acting_as: str | None) -> Client:
    if acting_as is not None:
        raise CredentialValidationError(
            "--as: with --server you act as the principal of CREDMAN_TOKEN", fields=("as",)
        )
    token = os.environ.get("CREDMAN_TOKEN")
    if not token:
        raise CredentialValidationError(
            "CREDMAN_TOKEN: set it to your principal token to use --server",
            fields=("CREDMAN_TOKEN",),
        )
    verify = os.environ.get("CREDMAN_CA") or True
    return Client(server, token=token, verify=verify, cache=False)


@contextmanager
def open_backend(ctx: typer.Context) -> Iterator[Backend]:
    """The service named by ``--server`` (``CREDMAN_URL``) if any, else the local database."""
    chosen = options(ctx)
    if chosen.server:
        with _remote(chosen.server, chosen.acting_as) as client:
            yield RemoteBackend(client)
        return
    with open_manager(ctx) as manager:
        yield LocalBackend(manager, chosen.principal)
