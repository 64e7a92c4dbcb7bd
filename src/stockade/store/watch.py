"""Commits by other processes, seen as they happen: inotify on a SQLite database's WAL.

A SQLite commit appends to the ``-wal`` file next to the database, whichever process makes
it. ``serve --workers N`` runs N processes on one database, and an agent's long poll waits
in one of them; without this, that process noticed the other processes' commits only at its
next poll. The watch is on the database's directory (the WAL file may not exist yet, and
SQLite truncates or recreates it), filtered by the WAL's name.

A commit writes its last WAL frame and only then publishes itself in the shared-memory
WAL index (a write to a mapping, which inotify does not see). The event can therefore come
just before the commit is visible; so after the last event the watch calls back a few more
times, 5, 50 and 500 ms later (seen here: about one wake in ten came too early).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import struct
from collections.abc import Callable

log = logging.getLogger("stockade.store")

_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
_LOOK_AGAIN = (0.005, 0.045, 0.45)  # seconds between the calls after the last event


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


class WalWatch:
    """Calls ``on_commit()`` on ``loop`` after writes to ``database``'s WAL file.

    Several writes in one turn of the loop give one call. :meth:`start` returns False where
    inotify is missing (not Linux, or the per-user limit of watches is reached); callers
    then poll as before.
    """

    def __init__(self, database: str, on_commit: Callable[[], None]) -> None:
        self.directory = os.path.dirname(os.path.abspath(database))
        self.wal_name = os.path.basename(database) + "-wal"
        self.on_commit = on_commit
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._again: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        libc = _libc()
        if libc is None or not hasattr(libc, "inotify_init1"):
            return False
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            log.info("no inotify (%s): other processes' commits are polled for", _errno())
            return False
        wd = libc.inotify_add_watch(fd, os.fsencode(self.directory), _IN_MODIFY | _IN_CREATE)
        if wd < 0:
            log.info("cannot watch %s (%s): polling instead", self.directory, _errno())
            os.close(fd)
            return False
        self._fd, self._loop = fd, loop
        loop.add_reader(fd, self._readable)
        return True

    def _readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        wal = os.fsencode(self.wal_name)
        hit = False
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                log.exception("reading inotify events failed; polling instead")
                self.close()
                return
            at = 0
            while at + _EVENT.size <= len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size : at + _EVENT.size + length].rstrip(b"\0")
                hit = hit or name == wal
                at += _EVENT.size + length
        if hit:
            self.on_commit()
            self._look_again(0)

    def _look_again(self, step: int) -> None:
        if self._again is not None:
            self._again.cancel()
            self._again = None
        if step < len(_LOOK_AGAIN) and self._loop is not None:
            self._again = self._loop.call_later(_LOOK_AGAIN[step], self._again_due, step)

    def _again_due(self, step: int) -> None:
        self._again = None
        self.on_commit()
        self._look_again(step + 1)

    def close(self) -> None:
        if self._again is not None:
            self._again.cancel()
            self._again = None
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        os.close(fd)


def _errno() -> str:
    return os.strerror(ctypes.get_errno())


# the channel every PostgreSQL write transaction that appends to the change log notifies
# (store/db.py), with its last revision as the payload
PG_CHANNEL = "stockade_changes"


class PgListen:
    """Calls ``on_notify(revision)`` (on its own thread) for each ``NOTIFY`` on
    :data:`PG_CHANNEL`, and ``on_notify(None)`` each time it (re)connects (a notification
    sent while it was away is lost: the callback then looks for itself).

    A daemon thread holds one autocommit psycopg connection, blocked in ``notifies()``:
    idle, it costs nothing. On an error it reconnects with exponential backoff (up to
    :attr:`MAX_BACKOFF` seconds); :attr:`up` says whether it is listening now.
    """

    MAX_BACKOFF = 2.0

    def __init__(self, url: str, on_notify: Callable[[int | None], None]) -> None:
        from sqlalchemy.engine import make_url

        sa = make_url(url)
        self.dsn = sa.set(drivername="postgresql").render_as_string(hide_password=False)
        self.on_notify = on_notify
        self.up = False
        self._closed = False
        self._conn: object | None = None
        self._thread: object | None = None

    def start(self) -> None:
        import threading

        self._thread = threading.Thread(target=self._run, name="stockade-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import random
        import time

        import psycopg

        backoff = 0.05
        while not self._closed:
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    self._conn = conn
                    conn.execute(f"LISTEN {PG_CHANNEL}")
                    self.up = True
                    backoff = 0.05
                    self.on_notify(None)
                    while not self._closed:
                        # a timeout of a second, only so that close() is seen
                        for note in conn.notifies(timeout=1.0):
                            try:
                                self.on_notify(int(note.payload))
                            except ValueError:
                                self.on_notify(None)
            except Exception as err:  # noqa: BLE001 - the database went away: reconnect
                if self._closed:
                    break
                log.info("LISTEN %s lost (%s): reconnecting", PG_CHANNEL, err)
            finally:
                self.up = False
                self._conn = None
            if self._closed:
                break
            time.sleep(backoff * (0.5 + random.random()))  # backoff with jitter
            backoff = min(backoff * 2, self.MAX_BACKOFF)

    def close(self) -> None:
        self._closed = True  # the thread ends within a second
