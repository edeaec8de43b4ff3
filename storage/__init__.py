"""All of credman's SQL: tables, engines and transactions, typed records, migrations.

Nothing outside this package builds a query; services call these modules inside the
transactions that :mod:`credman.storage.engine` opens.
"""

from credman.storage import audit, connect, engine, grants, keys, migrate, principals, repository
from credman.storage.engine import (
    checkpoint,
    describe_failure,
    is_sqlite,
    make_engine,
    read,
    write,
)
from credman.storage.records import (
    AuditHead,
    AuditRecord,
    ConnectSessionRecord,
    CredentialRecord,
    DueCredential,
    GrantRecord,
    HistoryRecord,
    PrincipalRecord,
)

__all__ = [
    "AuditHead",
    "AuditRecord",
    "ConnectSessionRecord",
    "CredentialRecord",
    "DueCredential",
    "GrantRecord",
    "HistoryRecord",
    "PrincipalRecord",
    "audit",
    "checkpoint",
    "connect",
    "describe_failure",
    "engine",
    "grants",
    "is_sqlite",
    "keys",
    "make_engine",
    "migrate",
    "principals",
    "read",
    "repository",
    "write",
]
