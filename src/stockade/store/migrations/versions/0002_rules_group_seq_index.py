"""fewer pages per write: rules indexed by (group_id, seq), a partial index on ref_group_id,
the change log keyed by its rowid on SQLite

Every write transaction appends each page it changed to SQLite's WAL, so every index a
write touches costs it a page:

- ``ix_sg_rules_group_seq`` (group_id, seq) replaces ``ix_sg_rules_group_id``: a group's
  rules are always read in ``seq`` order, and now come out of the index in it (no sort); it
  still serves every lookup by ``group_id`` (and the foreign key from ``security_groups``).
- ``ix_sg_rules_ref_group_id`` holds only the rules that reference a group (every query on
  it asks for one): CIDR rules no longer touch it.
- ``changes.revision`` becomes SQLite's INTEGER PRIMARY KEY, the table's own rowid, instead
  of a BIGINT key with an index of its own beside the table (PostgreSQL keeps BIGINT).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 14:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_REFERENCES = sa.text("ref_group_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_sg_rules_group_seq", "sg_rules", ["group_id", "seq"], unique=False)
    op.drop_index("ix_sg_rules_group_id", table_name="sg_rules")
    op.drop_index("ix_sg_rules_ref_group_id", table_name="sg_rules")
    op.create_index(
        "ix_sg_rules_ref_group_id",
        "sg_rules",
        ["ref_group_id"],
        unique=False,
        sqlite_where=_REFERENCES,
        postgresql_where=_REFERENCES,
    )
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("changes", recreate="always") as batch_op:
            batch_op.alter_column(
                "revision",
                existing_type=sa.BigInteger(),
                type_=sa.Integer(),
                existing_nullable=False,
                autoincrement=False,
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("changes", recreate="always") as batch_op:
            batch_op.alter_column(
                "revision",
                existing_type=sa.Integer(),
                type_=sa.BigInteger(),
                existing_nullable=False,
                autoincrement=False,
            )
    op.drop_index("ix_sg_rules_ref_group_id", table_name="sg_rules")
    op.create_index("ix_sg_rules_ref_group_id", "sg_rules", ["ref_group_id"], unique=False)
    op.create_index("ix_sg_rules_group_id", "sg_rules", ["group_id"], unique=False)
    op.drop_index("ix_sg_rules_group_seq", table_name="sg_rules")
