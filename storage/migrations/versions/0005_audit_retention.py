"""audit retention: an anchor the chain is verified from, and pruning of archived rows

The head row gains the anchor (the sequence number and hash of the last archived row).
Rows at or before the anchor may be deleted; every other row stays append-only, and
TRUNCATE stays refused.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(sa.Column("anchor_seq", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column(
                "anchor_hash",
                sqlmodel.sql.sqltypes.AutoString(length=64),
                nullable=False,
                server_default=GENESIS,
            )
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION credman_audit_prunable() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN "
            "IF TG_OP = 'DELETE' AND OLD.seq BETWEEN 1 AND "
            "(SELECT anchor_seq FROM audit_head WHERE id = 1) THEN RETURN OLD; END IF; "
            "RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        op.execute("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event")
        op.execute(
            "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
            "FOR EACH ROW EXECUTE FUNCTION credman_audit_prunable()"
        )
        return
    op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
    op.execute(
        "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
        "WHEN NOT (OLD.seq BETWEEN 1 AND (SELECT anchor_seq FROM audit_head WHERE id = 1)) "
        "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event")
        op.execute(
            "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
            "FOR EACH ROW EXECUTE FUNCTION credman_append_only()"
        )
        op.execute("DROP FUNCTION IF EXISTS credman_audit_prunable()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
        op.execute(
            "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
            "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END"
        )
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("anchor_hash")
        batch_op.drop_column("anchor_seq")
