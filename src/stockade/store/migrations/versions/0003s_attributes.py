"""attributes: the values of EC2 attributes set away from their defaults (VPC DNS settings,
subnet launch settings, instance metadata options and credit specifications, ...), and
subnet CIDR reservations

Revision ID: 0003s
Revises: 0003i
Create Date: 2026-12-03 16:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003s"
down_revision = "0003i"
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
    op.create_table(
        "subnet_cidr_reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("subnet_id", sa.String(32), nullable=False),
        sa.Column("cidr", sa.String(64), nullable=False),
        sa.Column("reservation_type", sa.String(16), nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
    )
    op.create_index(
        "ix_subnet_cidr_reservations_subnet_id", "subnet_cidr_reservations", ["subnet_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_subnet_cidr_reservations_subnet_id", "subnet_cidr_reservations")
    op.drop_table("subnet_cidr_reservations")
    op.drop_table("attributes")
