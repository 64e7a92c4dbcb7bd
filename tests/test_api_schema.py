"""The Alembic migrations build exactly the schema ``stockade.store.schema`` declares."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from stockade.store import schema
from stockade.store.db import Store


def _differences(url: str) -> list:
    store = Store(url)
    try:
        store.migrate()
        with store.engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), schema.metadata)
    finally:
        store.dispose()


def test_migrations_match_the_schema_on_sqlite(tmp_path):
    assert _differences(f"sqlite:///{tmp_path}/stockade.db") == []


@pytest.mark.postgres
def test_migrations_match_the_schema_on_postgres(postgres_url):
    assert _differences(postgres_url) == []


def test_sqlite_layout_of_rules_and_changes(tmp_path):
    """What migration 0002 is for: a group's rules in seq order from an index, the rule
    references indexed only where there is one, and the change log keyed by the rowid."""
    store = Store(f"sqlite:///{tmp_path}/stockade.db")
    try:
        store.migrate()
        with store.engine.connect() as conn:
            indexes = {ix["name"]: ix for ix in inspect(conn).get_indexes("sg_rules")}
            assert indexes["ix_sg_rules_group_seq"]["column_names"] == ["group_id", "seq"]
            assert "ix_sg_rules_group_id" not in indexes
            partial = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'ix_sg_rules_ref_group_id'")
            ).scalar_one()
            assert partial.endswith("WHERE ref_group_id IS NOT NULL")
            plan = conn.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT * FROM sg_rules WHERE group_id = 'sg-1' ORDER BY seq"
                )
            ).all()
            assert not any("TEMP B-TREE" in row[-1] for row in plan)
            # no autoindex beside the table: revision is the rowid
            autoindexes = conn.execute(
                text("SELECT name FROM sqlite_master WHERE tbl_name = 'changes' AND type = 'index'")
            ).all()
            assert autoindexes == []
    finally:
        store.dispose()
