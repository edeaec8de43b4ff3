"""credential probes: last outcome of testing a credential against its probe, next re-test

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.add_column(sa.Column("probe_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("probe_status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("probe_ok", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("probe_due_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index("ix_credential_probe_due_at", ["probe_due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("credential", schema=None) as batch_op:
        batch_op.drop_index("ix_credential_probe_due_at")
        batch_op.drop_column("probe_due_at")
        batch_op.drop_column("probe_ok")
        batch_op.drop_column("probe_status")
        batch_op.drop_column("probe_at")
