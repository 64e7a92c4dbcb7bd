"""insights: Reachability Analyzer paths and analyses, Network Access Analyzer scopes and
their analyses (one table: what each is lives in ``data``, its id prefix says its kind)

Revision ID: 0003i
Revises: 0003
Create Date: 2026-12-03 16:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003i"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insights",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.String(48), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_insights_owner", "insights", ["account_id", "region", "kind"])


def downgrade() -> None:
    op.drop_index("ix_insights_owner", "insights")
    op.drop_table("insights")
