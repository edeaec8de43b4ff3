"""Seeding: N OAuth2 credentials sealed for real, bulk-copied into the bench schema.

Each credential is sealed by the project's own sealing code (a fresh data key per
credential, every secret field bound to its id, field and public fields), exactly the
columns ``store`` writes, and its two history rows (create, activate) as ``store`` records
them, with the row MAC ``store`` computes. Rows go in with ``COPY`` through psycopg inside
one transaction per batch, and each credential gets its ``create`` event (version 1) on the
real chain, appended in bulk (:meth:`AuditLog.append_many`), so ``verify_audit`` holds over
a seeded database: the chain, every row's MAC, and every version against the chain.

Due times are spread evenly over :attr:`Plan.period` from ``first_due`` on, so the wanted
number fall due each minute; each expiry is what the refresh policy would put there
(``due + margin * (1 + 0.2 * jitter)``). Credential ``i`` belongs to farm partition
``i % farm``, whose token URL it carries.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from psycopg.types.json import Json
from sqlalchemy import Engine, bindparam, select

from bench.scale.plan import SPREAD, Plan
from credman import OAuth2
from credman._integrity import CREDENTIAL_MAC_FIELDS, RecordSeals
from credman._sealing import seal
from credman.audit import HISTORY_DIGEST, HISTORY_IDS, AuditLog, history_digest
from credman.crypto import Keyring
from credman.storage.repository import HISTORY

__all__ = ["SEED_PRINCIPAL", "Partition", "SeedReport", "credential_id", "seed"]

SEED_PRINCIPAL = "bench-seed"
BATCH = 5000
_COLUMNS = (*CREDENTIAL_MAC_FIELDS, "record_mac")
"""What COPY writes: every column the row MAC covers, and the MAC."""
_HISTORY = ("credential_id", "from_state", "to_state", "trigger", "principal", "at", "version")
_BATCH_HISTORY = (
    select(HISTORY)
    .where(HISTORY.c.credential_id.in_(bindparam("ids", expanding=True)))
    .order_by(HISTORY.c.id)
)


@dataclass(frozen=True, slots=True)
class Partition:
    """One farm process: its token URL and the OAuth client its credentials use."""

    token_url: str
    client_id: str
    client_secret: str
    grants: Path
    """Where the seed writes "credential_id<TAB>refresh_token" lines for the farm."""


@dataclass(frozen=True, slots=True)
class SeedReport:
    rows: int
    seconds: float
    seal_us: float
    """Sealing cost per credential (microseconds), the rest is COPY and the audit event."""
    first_due: datetime
    last_due: datetime


def credential_id(index: int) -> str:
    return f"bench-{index:07d}"


def seed_rate(keyring: Keyring, partition: Partition, count: int = 300) -> float:
    """Seconds per credential to build and seal (to place the first due time after the seed)."""
    now = datetime.now(UTC)
    started = time.perf_counter()
    for index in range(count):
        _sealed(keyring, partition, index, now, now)
    return (time.perf_counter() - started) / count


def _credential(partition: Partition, expires_at: datetime) -> tuple[OAuth2, str]:
    refresh_token = "rt_" + secrets.token_urlsafe(24)
    credential = OAuth2(
        token_url=partition.token_url,
        client_id=partition.client_id,
        client_secret=partition.client_secret,
        access_token="seed-" + secrets.token_urlsafe(24),
        refresh_token=refresh_token,
        expires_at=expires_at,
    )
    return credential, refresh_token


def _sealed(
    keyring: Keyring, partition: Partition, index: int, expires_at: datetime, now: datetime
) -> tuple[dict[str, Any], str]:
    credential, refresh_token = _credential(partition, expires_at)
    return seal(keyring, credential_id(index), credential), refresh_token


def seed(
    engine: Engine,
    keyring: Keyring,
    plan: Plan,
    partitions: Sequence[Partition],
    first_due: datetime,
) -> SeedReport:
    """Insert ``plan.rows`` credentials; grants files for the farm are written alongside."""
    started = time.perf_counter()
    sealing = 0.0
    audit = AuditLog(keyring.audit_key())
    seals = RecordSeals(
        credential_key=keyring.credential_record_key(), grant_key=keyring.grant_record_key()
    )
    files = [p.grants.open("w") for p in partitions]
    try:
        for batch in _batches(plan.rows):
            rows, history, spent = _build(keyring, seals, plan, partitions, files, batch, first_due)
            sealing += spent
            _copy(engine, audit, batch, rows, history)
    finally:
        for file in files:
            file.close()
    return SeedReport(
        rows=plan.rows,
        seconds=time.perf_counter() - started,
        seal_us=sealing / plan.rows * 1e6,
        first_due=first_due,
        last_due=first_due + timedelta(seconds=plan.period * (plan.rows - 1) / plan.rows),
    )


def _batches(rows: int) -> Iterator[range]:
    for start in range(0, rows, BATCH):
        yield range(start, min(rows, start + BATCH))


def _build(
    keyring: Keyring,
    seals: RecordSeals,
    plan: Plan,
    partitions: Sequence[Partition],
    files: Sequence[TextIO],
    batch: range,
    first_due: datetime,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], float]:
    now = datetime.now(UTC)
    rows, history = [], []
    started = time.perf_counter()
    for index in batch:
        due = first_due + timedelta(seconds=plan.period * index / plan.rows)
        expires = due + timedelta(seconds=plan.margin * (1 + SPREAD * random.random()))
        part = index % len(partitions)
        values, refresh_token = _sealed(keyring, partitions[part], index, expires, now)
        files[part].write(f"{credential_id(index)}\t{refresh_token}\n")
        issued = expires - timedelta(seconds=plan.lifetime)
        rows.append(_row(seals, credential_id(index), values, expires, issued, due, now))
        history.append((credential_id(index), None, "CREATED", "create", SEED_PRINCIPAL, now, 1))
        history.append(
            (credential_id(index), "CREATED", "ACTIVE", "activate", SEED_PRINCIPAL, now, 1)
        )
    return rows, history, time.perf_counter() - started


def _row(
    seals: RecordSeals,
    cid: str,
    values: dict[str, Any],
    expires: datetime,
    issued: datetime,
    due: datetime,
    now: datetime,
) -> tuple[Any, ...]:
    columns: dict[str, Any] = {
        "id": cid,
        "type": values["type"],
        "state": "ACTIVE",
        "version": 1,
        "key_version": values["key_version"],
        "wrapped_dek": values["wrapped_dek"],
        "sealed": values["sealed"],
        "public": values["public"],
        "expires_at": expires,
        "material_at": issued,
        "next_due_at": due,
        "lease_owner": None,
        "lease_until": None,
        "attempts": 0,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }
    columns["record_mac"] = seals.credential_mac(columns)  # what store would compute
    return tuple(
        Json(columns[name]) if name in ("sealed", "public") else columns[name] for name in _COLUMNS
    )


def _copy(
    engine: Engine,
    audit: AuditLog,
    batch: range,
    rows: list[tuple[Any, ...]],
    history: list[tuple[Any, ...]],
) -> None:
    """One transaction: the credentials, their history, and a create event for each."""
    with engine.begin() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY credential ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            with cursor.copy(f"COPY credential_history ({', '.join(_HISTORY)}) FROM STDIN") as copy:
                for row in history:
                    copy.write_row(row)
        ids = [credential_id(index) for index in batch]
        bound: dict[str, list[dict[str, Any]]] = {cid: [] for cid in ids}
        for row in connection.execute(_BATCH_HISTORY, {"ids": ids}):
            bound[row.credential_id].append(dict(row._mapping))
        at = datetime.now(UTC)
        audit.append_many(  # each create event binds its history rows, as store's does
            connection,
            [
                {
                    "at": at,
                    "principal": SEED_PRINCIPAL,
                    "action": "create",
                    "credential_id": cid,
                    "detail": {
                        "type": "oauth2",
                        "version": 1,
                        "bench_seed": True,
                        HISTORY_IDS: ",".join(str(row["id"]) for row in bound[cid]),
                        HISTORY_DIGEST: history_digest(bound[cid]),
                    },
                }
                for cid in ids
            ],
        )
