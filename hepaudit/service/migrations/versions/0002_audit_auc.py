"""Audits keep their AUC (and its interval), for the history pages without opening reports.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.add_column(sa.Column("auc", sa.Float))
        batch.add_column(sa.Column("auc_low", sa.Float))
        batch.add_column(sa.Column("auc_high", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("audits") as batch:
        batch.drop_column("auc_high")
        batch.drop_column("auc_low")
        batch.drop_column("auc")
