"""attributes: the values of EC2 attributes set away from their defaults (VPC DNS settings,
subnet launch settings, instance metadata options and credit specifications, ...)

Revision ID: 0003s
Revises: 0002
Create Date: 2026-12-03 16:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003s"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attributes",
        sa.Column("resource_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("attributes")
