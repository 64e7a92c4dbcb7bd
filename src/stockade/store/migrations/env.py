"""Alembic environment: runs against the connection Stockade hands in (or a URL)."""

from alembic import context
from sqlalchemy import create_engine

from stockade.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    with create_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
