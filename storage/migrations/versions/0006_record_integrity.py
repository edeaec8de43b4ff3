"""record integrity: MACs on credential and grant rows, key fingerprints, a history index

``credential.record_mac`` and ``access_grant.record_mac`` authenticate each row under a
keyring-derived key. The migration has no key, so existing rows get NULL: the manager MACs
them when it first opens the database (and records the key fingerprints in ``key_check``
in the same transaction); from then on a NULL MAC is refused like a wrong one.
``key_check`` holds one fingerprint per key version (0: the audit seed). The index on
``credential_history (credential_id, id)`` makes the read-time rollback check (the newest
history row of a credential) one index probe.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("record_mac", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("record_mac", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
    op.create_table(
        "key_check",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    # not in batch mode: recreating credential_history would drop its append-only triggers
    op.create_index(
        "ix_credential_history_credential_id_id",
        "credential_history",
        ["credential_id", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_credential_history_credential_id_id", table_name="credential_history")
    op.drop_table("key_check")
    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.drop_column("record_mac")
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.drop_column("record_mac")
