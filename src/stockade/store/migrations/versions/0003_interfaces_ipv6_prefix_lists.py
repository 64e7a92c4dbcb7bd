"""several addresses per interface, IPv6 blocks of VPCs and subnets, managed prefix lists

- ``network_interfaces.secondary_ips`` / ``ipv6_addresses``: JSON lists of text;
- ``cidr_blocks``: the blocks associated with a VPC or subnet beyond its primary IPv4 one
  (the VPC's IPv6 /56, a subnet's /64, secondary IPv4 blocks), keyed by association id;
- ``managed_prefix_lists`` and ``prefix_list_entries``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 16:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("network_interfaces") as batch:
        batch.add_column(sa.Column("secondary_ips", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("ipv6_addresses", sa.JSON(), nullable=True))
    op.create_table(
        "cidr_blocks",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(32), nullable=False),
        sa.Column("cidr", sa.String(64), nullable=False),
        sa.Column("ipv6", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_cidr_blocks_resource_id", "cidr_blocks", ["resource_id"])
    op.create_table(
        "managed_prefix_lists",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("address_family", sa.String(8), nullable=False),
        sa.Column("max_entries", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_prefix_lists_owner", "managed_prefix_lists", ["account_id", "region"])
    op.create_table(
        "prefix_list_entries",
        sa.Column(
            "prefix_list_id",
            sa.String(32),
            sa.ForeignKey("managed_prefix_lists.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("cidr", sa.String(64), primary_key=True),
        sa.Column("description", sa.String(255), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("prefix_list_entries")
    op.drop_index("ix_prefix_lists_owner", table_name="managed_prefix_lists")
    op.drop_table("managed_prefix_lists")
    op.drop_index("ix_cidr_blocks_resource_id", table_name="cidr_blocks")
    op.drop_table("cidr_blocks")
    with op.batch_alter_table("network_interfaces") as batch:
        batch.drop_column("ipv6_addresses")
        batch.drop_column("secondary_ips")
