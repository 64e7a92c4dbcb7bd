"""Engine, migrations and transactions.

A write transaction first takes the lock on the ``counters`` row (an UPDATE: a row lock on
PostgreSQL, the database write lock on SQLite), so writers are serialised: quota checks
cannot race, and change-log revisions are handed out in commit order.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Table,
    create_engine,
    delete,
    event,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from stockade.store import schema

log = logging.getLogger("stockade.store")

MIGRATIONS = Path(__file__).with_name("migrations")


_second: tuple[int, str] = (-1, "")  # the last whole second utcnow() formatted, and its text


def utcnow() -> str:
    """``datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")``, formatting each second once."""
    global _second
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second  # one read: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{micros:06d}Z"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # reads come straight from the mapped file (no read() per page), and a larger page
    # cache: at 10,000 groups this kept reads 8-19% faster (docs/benchmarks.md, 1)
    cur.execute("PRAGMA mmap_size=268435456")
    cur.execute("PRAGMA cache_size=-32768")
    cur.close()


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            **({} if pooled else {"poolclass": NullPool}),
        )
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
        command.upgrade(cfg, "heads")


# --- statements run directly on the DBAPI connection --------------------------------------
#
# Building and executing a SQLAlchemy Core statement costs tens of microseconds (clause
# construction, cache key, compiled-parameter processing, result metadata); SQLite answers
# an indexed lookup in a few. The request hot paths therefore run fixed SQL text on the
# connection's DBAPI connection (the same connection, so the same transaction).


class Sql:
    """A fixed statement written with ``?`` placeholders (SQLite's style).

    ``{in}`` in the text stands for a list of placeholders: :meth:`expand` fills it for
    ``n`` values. The PostgreSQL text (psycopg's ``%s`` style) is derived unless given.
    """

    __slots__ = ("_expanded", "pg", "sqlite")

    def __init__(self, sqlite: str, pg: str | None = None) -> None:
        self.sqlite = sqlite
        self.pg = pg if pg is not None else sqlite.replace("?", "%s")
        self._expanded: dict[int, Sql] = {}

    def expand(self, n: int) -> Sql:
        """This statement with ``{in}`` replaced by ``n`` placeholders."""
        done = self._expanded.get(n)
        if done is None:
            marks = ", ".join(["?"] * n)
            done = Sql(
                self.sqlite.replace("{in}", marks),
                self.pg.replace("{in}", marks.replace("?", "%s")),
            )
            if n <= 64:  # bounded: larger lists are rare
                self._expanded[n] = done
        return done


def execute(conn: Connection, sql: Sql, params: Sequence[Any] = ()) -> Any:
    """Run ``sql`` on ``conn``'s DBAPI connection; returns the DBAPI cursor."""
    raw = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        return raw.execute(sql.sqlite, params)
    return raw.execute(sql.pg, params)


def execute_many(conn: Connection, sql: Sql, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` once per row of parameters, in one call to the driver."""
    raw = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        raw.executemany(sql.sqlite, rows)
    else:
        raw.cursor().executemany(sql.pg, rows)


class RowType:
    """Rows of one table as named tuples (attribute access like SQLAlchemy's ``Row``)."""

    __slots__ = ("columns", "make", "sqlite_make", "tuple_type")

    def __init__(self, table: Table) -> None:
        names = [c.name for c in table.columns]
        self.columns = ", ".join(names)
        self.tuple_type = collections.namedtuple(f"{table.name}_row", names)  # type: ignore[misc]
        self.make: Callable[[Sequence[Any]], Any] = self.tuple_type._make
        # SQLite hands back booleans as 0/1 and JSON as text; SQLAlchemy converts them. The
        # converter is generated per table: one expression per column, no loops per row.
        bools = {i for i, c in enumerate(table.columns) if isinstance(c.type, Boolean)}
        jsons = {i for i, c in enumerate(table.columns) if isinstance(c.type, JSON)}
        if not bools and not jsons:
            self.sqlite_make = self.make
            return
        values = []
        for i in range(len(names)):
            if i in bools:
                values.append(f"(None if v[{i}] is None else bool(v[{i}]))")
            elif i in jsons:
                values.append(f"(None if v[{i}] is None else loads(v[{i}]))")
            else:
                values.append(f"v[{i}]")
        namespace: dict[str, Any] = {
            "new": tuple.__new__,
            "cls": self.tuple_type,
            "loads": json.loads,
        }
        source = f"def sqlite_make(v):\n    return new(cls, ({', '.join(values)},))"
        exec(source, namespace)  # noqa: S102 - built above from the table's columns
        self.sqlite_make = namespace["sqlite_make"]

    def rows(self, conn: Connection, sql: Sql, params: Sequence[Any] = ()) -> list[Any]:
        """Run ``sql`` (which selects :attr:`columns`) and return its rows."""
        raw = conn.connection.driver_connection
        if conn.dialect.name == "sqlite":
            return list(map(self.sqlite_make, raw.execute(sql.sqlite, params).fetchall()))
        return list(map(self.make, raw.execute(sql.pg, params).fetchall()))


@functools.cache
def row_type(table: Table) -> RowType:
    return RowType(table)


_MAX_READERS = 4  # other threads than the main one that keep a reading connection

_LOCK_REVISION = Sql("UPDATE counters SET value = value WHERE name = 'revision' RETURNING value")
# SQLite: the write lock taken outright (BEGIN IMMEDIATE), then the revision read: cheaper
# than the UPDATE above, which has to begin a transaction, lock and rewrite the row
_BEGIN_IMMEDIATE = "BEGIN IMMEDIATE"
_READ_REVISION = "SELECT value FROM counters WHERE name = 'revision'"
_NOTIFY = Sql("SELECT pg_notify('stockade_changes', ?)")
_SET_REVISION = Sql("UPDATE counters SET value = ? WHERE name = 'revision'")
_LOG = Sql(
    "INSERT INTO changes (revision, account_id, region, kind, resource_id, data, at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)",
    "INSERT INTO changes (revision, account_id, region, kind, resource_id, data, at) "
    "VALUES (%s, %s, %s, %s, %s, CAST(%s AS JSON), %s)",
)


@dataclass
class Tx:
    """One request's write transaction: a connection plus the change-log cursor."""

    conn: Connection
    revision: int
    appended: list[int] = field(default_factory=list)

    def log(self, account_id: str, region: str, kind: str, resource_id: str, **data: Any) -> int:
        self.revision += 1
        execute(
            self.conn,
            _LOG,
            (
                self.revision,
                account_id,
                region,
                kind,
                resource_id,
                json.dumps(data) if data else "null",  # as SQLAlchemy's JSON stores None
                utcnow(),
            ),
        )
        self.appended.append(self.revision)
        return self.revision


class _WriterLock:
    """Serialises this store's writers: a mutex in the process, ``flock`` across processes.

    SQLite's own lock waits by sleeping (busy_timeout), which costs writers 1-100 ms each
    under contention; a writer queued here is woken as soon as the previous one commits.
    The lock file sits next to the database, so ``serve --workers N`` processes share it.
    """

    def __init__(self, database: str | None) -> None:
        self._mutex = threading.Lock()
        self._path = f"{database}.writelock" if database else None
        self._fd: int | None = None

    def _file(self) -> int | None:
        if self._fd is None and self._path is not None:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                self._path = None  # a read-only directory: SQLite's busy_timeout remains
        return self._fd

    def acquire(self) -> None:
        self._mutex.acquire()
        try:
            fd = self._file()
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._mutex.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._mutex.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        """Close the lock file (it is opened again by the next writer)."""
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _NoLock:
    def acquire(self) -> None:
        return None

    def release(self) -> None:
        return None

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


class Batch:
    """Several requests' writes committed together (group commit, SQLite files only).

    A commit appends every page the transaction changed to the WAL: about 60 us for one
    small write here, most of a write's time in the database. Requests that arrive
    together (the server's event loop runs them one after the other) therefore share one
    transaction, each inside its own savepoint, so a request that fails still changes
    nothing; the transaction commits once they have all run (:meth:`Store.commit_batch`),
    and each is answered only after that commit.
    """

    __slots__ = ("appended", "error", "open", "start", "thread", "trans", "tx")

    def __init__(self, tx: Tx, trans: Any) -> None:
        self.tx = tx
        self.trans = trans  # the SQLAlchemy transaction on the writer connection
        self.start = tx.revision
        self.thread = threading.get_ident()
        self.open = True
        self.appended = False  # whether the committed batch logged any change
        self.error: BaseException | None = None

    def _finish(self, error: BaseException | None) -> None:
        self.open = False
        self.error = error
        self.appended = error is None and bool(self.tx.appended)


_SAVEPOINT = "SAVEPOINT request"
_RELEASE = "RELEASE request"
_ROLLBACK_TO = "ROLLBACK TO request"


# SQLite checkpoints (copying the WAL back into the database file, with an fsync of each)
# run on the writer's commit by default: one commit in a hundred or so then takes
# milliseconds. Stockade's writer leaves them to a thread (the I/O waits without the GIL);
# the writer's own automatic checkpoint stays as a backstop if that thread falls behind.
_NO_AUTOCHECKPOINT = Sql("PRAGMA wal_autocheckpoint = 20000")
_CHECKPOINT = Sql("PRAGMA wal_checkpoint(PASSIVE)")
CHECKPOINT_INTERVAL = 0.1  # seconds between background checkpoints (when there were commits)


class _Checkpointer:
    """The thread that checkpoints a SQLite store's WAL while writers keep committing."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.commits = 0
        self._done = 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name="stockade-checkpoint", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def _run(self) -> None:
        conn = None
        try:
            while not self._stopping.wait(CHECKPOINT_INTERVAL):
                if self.commits == self._done:
                    continue
                self._done = self.commits
                if conn is None:
                    conn = self.store._own_engine().connect()
                try:
                    execute(conn, _CHECKPOINT).fetchall()
                except Exception:  # busy, or the store is going away: next time
                    log.debug("background checkpoint failed", exc_info=True)
                    conn.invalidate()
                    conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = url.startswith("sqlite")
        database = self.engine.url.database if self.is_sqlite else None
        # a file (an in-memory database is private to its connection)
        self._file = bool(database) and database != ":memory:" and "mode=memory" not in self.url
        self.path: str | None = database if self._file else None  # the SQLite file, if any
        self._readers: dict[int, Connection] = {}
        self._readers_lock = threading.RLock()
        self._reader_engine: Engine | None = None
        self._writer: Connection | None = None
        self._batch: Batch | None = None
        self._checkpointer = _Checkpointer(self)
        # PostgreSQL queues writers on the counters row lock itself
        self._write_lock: _WriterLock | _NoLock = (
            _WriterLock(database if self._file else None) if self.is_sqlite else _NoLock()
        )

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
        conn = self._reader() if self._file else None
        if conn is None:
            with self.engine.connect() as conn:
                yield conn
            return
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()

    def _reader(self) -> Connection | None:
        """This thread's own SQLite reading connection (the main thread's and a few more).

        Checking a connection out of the pool and back costs more than the lookups a read
        request makes; the event loop's thread (the main one), which runs SQLite requests,
        keeps one. They come from an engine of their own, so they never starve the pool.
        """
        ident = threading.get_ident()
        conn = self._readers.get(ident)
        if conn is not None and not conn.closed and not conn.invalidated:
            return conn
        with self._readers_lock:
            main = ident == threading.main_thread().ident
            others = len(self._readers) - (threading.main_thread().ident in self._readers)
            if conn is None and not main and others >= _MAX_READERS:
                return None
            conn = self._readers[ident] = self._own_engine().connect()
        return conn

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A serialised write transaction; commits on success, rolls back on any error."""
        batch = self._batch
        if batch is not None and batch.thread == threading.get_ident():
            self.commit_batch()  # this thread's batch holds the writer lock: finish it first
        with self._write_lock:
            if not self._file:
                with self.engine.begin() as conn:
                    yield from self._write_in(conn)
                return
            conn = self._writer_connection()
            with conn.begin():
                yield from self._write_in(conn)
            self._checkpointer.commits += 1

    def _writer_connection(self) -> Connection:
        # writers take turns (the writer lock), so one connection serves them all
        conn = self._writer
        if conn is None or conn.closed or conn.invalidated:
            conn = self._writer = self._own_engine().connect()
            # checkpoints are the background thread's job (see _Checkpointer)
            execute(conn, _NO_AUTOCHECKPOINT)
            self._checkpointer.start()
        return conn

    @property
    def batches(self) -> bool:
        """Whether writes can share a transaction (:meth:`write_in_batch`): SQLite files."""
        return self._file

    @contextmanager
    def write_in_batch(self) -> Iterator[tuple[Tx, Batch]]:
        """One request's writes in the open :class:`Batch` (opening one if there is none),
        inside a savepoint: released when the block succeeds, rolled back when it raises.

        The batch belongs to the thread that opened it (the event loop's) and holds the
        writer lock until :meth:`commit_batch`; a :meth:`write` on that thread commits it
        first, one on another thread waits for it. Nothing is visible to other connections,
        so nothing may be answered, before the batch commits.
        """
        batch = self._batch
        if batch is None:
            self._write_lock.acquire()
            try:
                conn = self._writer_connection()
                trans = conn.begin()
                try:
                    tx = self._begin(conn)
                except BaseException:
                    trans.rollback()
                    raise
            except BaseException:
                self._write_lock.release()
                raise
            batch = self._batch = Batch(tx, trans)
        tx = batch.tx
        raw = tx.conn.connection.driver_connection
        revision, appended = tx.revision, len(tx.appended)
        raw.execute(_SAVEPOINT)
        try:
            yield tx, batch
        except BaseException:
            raw.execute(_ROLLBACK_TO)
            raw.execute(_RELEASE)
            tx.revision = revision
            del tx.appended[appended:]
            raise
        raw.execute(_RELEASE)

    def commit_batch(self) -> Batch | None:
        """Commit the open batch, if there is one; a failed commit is rolled back and kept
        in ``batch.error`` (each of its requests then fails)."""
        batch, self._batch = self._batch, None
        if batch is None:
            return None
        error: BaseException | None = None
        try:
            tx = batch.tx
            if tx.revision != batch.start:
                execute(tx.conn, _SET_REVISION, (tx.revision,))
            batch.trans.commit()
        except BaseException as err:  # noqa: BLE001 - handed to every request of the batch
            error = err
            with contextlib.suppress(Exception):
                batch.trans.rollback()
        finally:
            self._write_lock.release()
        self._checkpointer.commits += 1
        batch._finish(error)
        return batch

    @staticmethod
    def _begin(conn: Connection) -> Tx:
        # taking the counters row first: the row lock on PostgreSQL, the write lock on
        # SQLite, and the revision to continue from
        if conn.dialect.name == "sqlite":
            raw = conn.connection.driver_connection
            raw.execute(_BEGIN_IMMEDIATE)
            (rev,) = raw.execute(_READ_REVISION).fetchall()[0]
        else:
            (rev,) = execute(conn, _LOCK_REVISION).fetchall()[0]
        return Tx(conn, rev)

    @classmethod
    def _write_in(cls, conn: Connection) -> Iterator[Tx]:
        tx = cls._begin(conn)
        rev = tx.revision
        yield tx
        if tx.revision != rev:
            execute(conn, _SET_REVISION, (tx.revision,))
            if conn.dialect.name != "sqlite":
                # delivered to every LISTENing server when (and only if) this commits
                execute(conn, _NOTIFY, (str(tx.revision),))

    def _own_engine(self) -> Engine:
        """The engine of the connections this store keeps (not pooled: they are never
        returned, and must not take the pool's places)."""
        with self._readers_lock:
            if self._reader_engine is None:
                self._reader_engine = make_engine(self.url, pooled=False)
            return self._reader_engine

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

    def put_setting(self, key: str, value: str) -> None:
        """Set a stored setting (replacing its value)."""
        t = schema.settings
        with self.write() as tx:
            tx.conn.execute(delete(t).where(t.c.key == key))
            tx.conn.execute(insert(t).values(key=key, value=value))

    def settings_under(self, prefix: str) -> dict[str, str]:
        """The stored settings whose keys start with ``prefix``."""
        t = schema.settings.c
        with self.read() as conn:
            rows = conn.execute(
                select(t.key, t.value).where(t.key.startswith(prefix, autoescape=True))
            )
            return dict(rows.tuples().all())

    def revision(self) -> int:
        with self.read() as conn:
            return conn.execute(
                select(schema.counters.c.value).where(schema.counters.c.name == "revision")
            ).scalar_one()

    def dispose(self) -> None:
        self.commit_batch()
        self._checkpointer.stop()
        with self._write_lock:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()
                self._writer = None
        with self._readers_lock:
            for conn in self._readers.values():
                with contextlib.suppress(Exception):
                    conn.close()
            self._readers.clear()
            if self._reader_engine is not None:
                self._reader_engine.dispose()
                self._reader_engine = None
        self.engine.dispose()
        self._write_lock.close()


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
