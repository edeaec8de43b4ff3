"""connect return_to: where the service sends the browser after the OAuth callback

A nullable column on connect sessions; existing sessions keep None (the callback answers
its own page).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connect_session", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("return_to", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("connect_session", schema=None) as batch_op:
        batch_op.drop_column("return_to")
