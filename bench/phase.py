"""One benchmark database: a seeded SQLite file in one ``synchronous`` mode, and its helpers.

A :class:`Phase` owns the manager, a second engine on the same file (for counting and the
bulk fill), the ids that reads pick from, and everything the cases open (closed with it).
Given a PostgreSQL ``url``, it runs there instead; its rows then say ``PostgreSQL`` where
SQLite's say their ``synchronous`` mode.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import func, insert, select

from bench.workload import (
    ADMIN,
    CLIENT_SECRETS,
    MANAGER_CLIENT,
    TOKEN_LIFETIME,
    WORKER,
    sample_credential,
)
from credman import CredentialManager, OAuth2, Permission
from credman import _sealing as _material
from credman.crypto import KeyFileProvider, Keyring
from credman.egress import EgressPolicy
from credman.storage.engine import make_engine, write
from credman.storage.repository import CREDENTIALS
from credman.testing.provider import TokenServer

__all__ = ["POSTGRESQL", "Phase"]

POSTGRESQL = "PostgreSQL"
"""What a PostgreSQL phase's rows show in place of a ``synchronous`` mode."""

_PICK_SEED = 9
_PICKS = 8192
_FILL_BATCH = 5000


class Phase:
    """A credman database in one ``synchronous`` mode (or on PostgreSQL), with a manager."""

    def __init__(
        self,
        directory: Path,
        synchronous: str,
        server: TokenServer,
        key_file: Path,
        *,
        name: str = "",
        url: str | None = None,
    ) -> None:
        if url is None:
            self.synchronous = synchronous
            self.file_name = f"credman-{synchronous.lower()}{'-' + name if name else ''}.db"
            self.url = f"sqlite:///{directory / self.file_name}"
            self.where = f"synchronous {synchronous}"
        else:  # ``synchronous`` only concerns SQLite; make_engine ignores it here
            self.synchronous = POSTGRESQL
            self.file_name = f"PostgreSQL schema {name}"
            self.url = url
            self.where = POSTGRESQL
        self.server = server
        self.keyring: Keyring = KeyFileProvider(key_file).load()
        self.closers = ExitStack()
        self.manager = CredentialManager(
            self.url,
            str(key_file),
            admins=(ADMIN,),
            synchronous=synchronous,
            egress=EgressPolicy(allow_loopback=True),  # the benchmark's provider is on loopback
        )
        self.closers.callback(self.manager.close)
        self.engine = make_engine(self.url, synchronous=synchronous)
        self.closers.callback(self.engine.dispose)
        self.pool: list[str] = []
        self.oauth_ids: list[str] = []
        self._serial = itertools.count()
        self._template: Mapping[str, Any] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.closers.close()

    def seed(self, count: int) -> None:
        """Grant the worker ``use`` on everything and store ``count`` credentials for real."""
        self.manager.grant(WORKER, "*", {Permission.USE, Permission.READ}, principal=ADMIN)
        credential = sample_credential()
        for number in range(count):
            self.manager.store(_seed_id(number), credential, principal=ADMIN)
        self.pool = [_seed_id(number) for number in range(count)]
        self._template = self._row(self.pool[0])

    def picks(self) -> Callable[[], str]:
        """Existing ids in a fixed pseudo-random order: every reader sees the same order."""
        order = random.Random(_PICK_SEED).choices(self.pool, k=_PICKS)
        return itertools.cycle(order).__next__

    def new_id(self, prefix: str = "new") -> str:
        """An id never used in this database."""
        return f"{prefix}-{next(self._serial):07d}"

    def count(self) -> int:
        """How many credentials the table holds."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(CREDENTIALS)).scalar())

    def _row(self, credential_id: str) -> Mapping[str, Any]:
        query = select(CREDENTIALS).where(CREDENTIALS.c.id == credential_id)
        with self.engine.connect() as connection:
            return dict(connection.execute(query).one()._mapping)

    def fill(self, total: int) -> int:
        """Bulk-insert sealed copies of a seeded credential until the table holds ``total``.

        Each copy is sealed for its own id (ciphertexts are bound to it), carries the row MAC
        store would compute, and is inserted by
        executemany in one transaction; no history rows, no audit rows: the audit head
        must not move. Returns how many rows were inserted.
        """
        start = len(self.pool)
        ids = [_seed_id(number) for number in range(start, start + total - self.count())]
        if not ids:
            return 0
        head = self.manager.audit_head()
        with write(self.engine) as connection:
            for batch in _batches(ids, _FILL_BATCH):
                connection.execute(insert(CREDENTIALS), [self._copy(cid) for cid in batch])
        if self.manager.audit_head() != head:
            raise RuntimeError("the bulk fill moved the audit head")
        self.pool.extend(ids)
        self.manager.get(ids[-1], principal=WORKER)  # a copy opens like a stored credential
        return len(ids)

    def _copy(self, credential_id: str) -> dict[str, Any]:
        if self._template is None:
            raise RuntimeError("seed the phase before filling it")
        sealed = _material.seal(self.keyring, credential_id, sample_credential())
        row = {**self._template, **sealed, "id": credential_id}
        row["record_mac"] = self.manager.keys.seals.credential_mac(row)  # as store computes it
        return row

    def oauth_credential(self, expires_at: datetime | None = None) -> str:
        """Store a refreshable credential whose provider is the loopback token server.

        Its access token expires ``TOKEN_LIFETIME`` from now, or at ``expires_at``.
        """
        credential_id = self.new_id("oauth")
        expiry: dict[str, Any] = (
            {"expires_in": TOKEN_LIFETIME} if expires_at is None else {"expires_at": expires_at}
        )
        credential = OAuth2(
            token_url=self.server.url,
            client_id=MANAGER_CLIENT,
            client_secret=CLIENT_SECRETS[MANAGER_CLIENT],
            access_token="bench-initial-access-token",
            refresh_token=self.server.grant(MANAGER_CLIENT),
            **expiry,
        )
        self.manager.store(credential_id, credential, principal=ADMIN)
        self.oauth_ids.append(credential_id)
        return credential_id

    def audit_check(self) -> str:
        """One line saying whether the audit chain still verifies after everything ran."""
        report = self.manager.verify_audit()
        problems = list(report.extra.get("integrity", ()))
        copies = [p for p in problems if p.endswith("was never audited")]
        rows = [p for p in problems if p not in copies]
        chain_ok = report.ok or (problems and report.problem and "integrity" in report.problem)
        verdict = (
            "intact" if chain_ok else f"BROKEN at row {report.first_bad_seq}: {report.problem}"
        )
        if rows:
            verdict += f"; {len(rows)} rows FAIL the integrity check: {rows[0]}"
        elif copies:  # bulk-filled copies bypass store, so no audit row vouches for them
            verdict += f"; every row authentic ({len(copies):,} bulk-filled copies never audited)"
        return (
            f"{self.file_name} ({self.where}, {self.count():,} credentials): "
            f"audit chain {verdict}, {report.rows_checked:,} rows verified after the run"
        )


def _seed_id(number: int) -> str:
    return f"cred-{number:06d}"


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
