"""Engine, migrations and transactions.

A write transaction first takes the lock on the ``counters`` row (an UPDATE: a row lock on
PostgreSQL, the database write lock on SQLite), so writers are serialised: quota checks
cannot race, and change-log revisions are handed out in commit order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, insert, select, update
from sqlalchemy.engine import Engine

from stockade.store import schema

MIGRATIONS = Path(__file__).with_name("migrations")


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=10, max_overflow=20)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@dataclass
class Tx:
    """One request's write transaction: a connection plus the change-log cursor."""

    conn: Connection
    revision: int
    appended: list[int] = field(default_factory=list)

    def log(self, account_id: str, region: str, kind: str, resource_id: str, **data: Any) -> int:
        self.revision += 1
        self.conn.execute(
            insert(schema.changes).values(
                revision=self.revision,
                account_id=account_id,
                region=region,
                kind=kind,
                resource_id=resource_id,
                data=data or None,
                at=utcnow(),
            )
        )
        self.appended.append(self.revision)
        return self.revision


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = url.startswith("sqlite")
        # SQLite's own lock waits by sleeping (busy_timeout), which costs writers up to
        # 100 ms each under contention; queue this process's writers on a mutex instead.
        self._write_mutex = threading.Lock() if self.is_sqlite else None

    def migrate(self) -> None:
        migrate(self.engine)
        with self.engine.begin() as conn:
            have = conn.execute(
                select(schema.counters.c.name).where(schema.counters.c.name == "revision")
            ).first()
            if have is None:
                conn.execute(insert(schema.counters).values(name="revision", value=0))

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A serialised write transaction; commits on success, rolls back on any error."""
        with self._write_mutex or contextlib.nullcontext(), self.engine.begin() as conn:
            counter = schema.counters.c
            conn.execute(
                update(schema.counters)
                .where(counter.name == "revision")
                .values(value=counter.value)
            )
            rev = conn.execute(select(counter.value).where(counter.name == "revision")).scalar_one()
            tx = Tx(conn, rev)
            yield tx
            if tx.revision != rev:
                conn.execute(
                    update(schema.counters)
                    .where(counter.name == "revision")
                    .values(value=tx.revision)
                )

    def setting(self, key: str, default: Callable[[], str]) -> str:
        """A stored setting, created from ``default()`` the first time it is asked for."""
        t = schema.settings.c
        with self.read() as conn:
            value = conn.execute(select(t.value).where(t.key == key)).scalar()
        if value is not None:
            return value
        with self.write() as tx:
            value = tx.conn.execute(select(t.value).where(t.key == key)).scalar()
            if value is None:
                value = default()
                tx.conn.execute(insert(schema.settings).values(key=key, value=value))
        return value

    def revision(self) -> int:
        with self.read() as conn:
            return conn.execute(
                select(schema.counters.c.value).where(schema.counters.c.name == "revision")
            ).scalar_one()

    def dispose(self) -> None:
        self.engine.dispose()


def agent_token(store: Store) -> str:
    """The bearer token data-plane agents present to read the change log."""
    return store.setting("agent_token", lambda: secrets.token_urlsafe(32))


def read_changes(store: Store, since: int, limit: int) -> list[dict[str, Any]]:
    c = schema.changes.c
    with store.read() as conn:
        rows = conn.execute(
            select(c.revision, c.account_id, c.region, c.kind, c.resource_id, c.data, c.at)
            .where(c.revision > since)
            .order_by(c.revision)
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]
