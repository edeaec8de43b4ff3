"""connect sessions: authorization-code + PKCE connects in progress (hashed state, sealed verifier)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connect_session",
        sa.Column("state_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("credential_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("principal", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("redirect_uri", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("sealed_verifier", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=True),
        sa.Column("key_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("used_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("state_hash"),
    )
    with op.batch_alter_table("connect_session", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_connect_session_credential_id"), ["credential_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_connect_session_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("connect_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connect_session_expires_at"))
        batch_op.drop_index(batch_op.f("ix_connect_session_credential_id"))
    op.drop_table("connect_session")
