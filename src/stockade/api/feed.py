"""The change feed: what wakes agents' long polls, and the deltas they are answered with.

A long poll (:meth:`Feed.wait_for_revision`) waits on one :class:`asyncio.Event` shared by
every waiter; it is set when a revision may have been committed:

- by this process (:meth:`Feed.committed`, called after each commit);
- by another process on the same SQLite file (``serve --workers N``): the WAL watch
  (store/watch.py);
- by another server on the same PostgreSQL database: ``LISTEN stockade_changes`` on a
  connection of its own (store/watch.py, :class:`~stockade.store.watch.PgListen`); each
  write transaction that appends to the change log sends ``NOTIFY`` in the transaction,
  which PostgreSQL delivers when (and only if) it commits.

On a wake, the newest revision is read once for all the waiters (one query, not one per
agent), and only the waiters behind it return. An idle long poll is a coroutine waiting on
the event: it costs no CPU. A safety poll (:attr:`Feed.poll_interval`, seconds) covers a
notification lost while the listening connection was down.

:meth:`Feed.delta` computes what changed after a revision once per (since, revision, scope)
and hands the same encoded answer to every agent asking for it (the fan-out cache).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from stockade.store.db import Store
from stockade.store.watch import PgListen, WalWatch

# encoded deltas kept (a few revisions' worth for every ``since`` agents are at)
DELTA_CACHE_SIZE = 256


@dataclass
class Feed:
    store: Store
    # one of several processes serving the same database: other processes' commits wake
    # long polls through the WAL watch (SQLite) or LISTEN/NOTIFY (PostgreSQL)
    shared: bool = False
    # set when the server is asked to exit: long polls answer at once, so shutdown does not
    # wait for them (uvicorn waits for every open request to finish)
    closing: bool = False
    # the newest revision this process knows of (-1: not read yet)
    latest: int = -1
    _loop: asyncio.AbstractEventLoop | None = None
    _event: asyncio.Event | None = None
    _watch: WalWatch | None = None
    _listen: PgListen | None = None
    _reading: asyncio.Future[int] | None = None
    _deltas: collections.OrderedDict[Hashable, asyncio.Future[bytes]] = field(
        default_factory=collections.OrderedDict
    )
    _synced: bool = False
    _resync: asyncio.Future[None] | None = None
    wakes: int = 0  # how many times waiters were woken (for the benchmarks)
    waiting: int = 0  # long polls waiting now (health shows it)

    @property
    def poll_interval(self) -> float:
        """How often a long poll looks for commits it was not woken for (other processes').

        With the WAL watch or LISTEN, the other processes' commits wake the loop, so the
        poll is only a safety net; without them, a shared SQLite file is polled often."""
        if self._listen is not None:
            return 2.0 if self._listen.up else 0.25
        if self.shared:
            return 0.1 if self._watch is None else 5.0
        return 1.0

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        if self.shared and self.store.path is not None:
            watch = WalWatch(self.store.path, self._wake)
            if watch.start(loop):
                self._watch = watch
        if not self.store.is_sqlite:
            self._listen = PgListen(self.store.url, self._notified)
            self._listen.start()

    def unbind_loop(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._listen is not None:
            self._listen.close()
            self._listen = None

    def changed_event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def _wake(self) -> None:
        self.wakes += 1
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    def _notified(self, revision: int | None) -> None:
        """A NOTIFY arrived (on the listener's thread): ``revision`` is the one committed,
        None when the listener (re)connected and may have missed some."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._seen, revision)

    @property
    def trusted(self) -> bool:
        """Whether :attr:`latest` is known to be current without asking the database:
        LISTEN is up and the revision was read after it (re)connected, so every later
        commit's NOTIFY updates it."""
        return self._synced and self._listen is not None and self._listen.up

    def _seen(self, revision: int | None) -> None:
        if revision is None:  # (re)connected: read the revision once, then trust NOTIFYs
            self._synced = False
            self._resync = asyncio.ensure_future(self._sync())
            return
        if revision <= self.latest:
            return  # this process's own commit, or one it knows of already
        if revision is not None:
            self.latest = revision
        self._wake()

    async def _sync(self) -> None:
        with contextlib.suppress(Exception):
            await self.newest()
            self._synced = True
            self._wake()

    async def current(self) -> int:
        """The newest revision: :attr:`latest` when it is :attr:`trusted`, else read."""
        if self.trusted:
            return self.latest
        return await self.newest()

    async def newest(self) -> int:
        """The newest committed revision, read once for every caller waiting at the time."""
        reading = self._reading
        if reading is None:
            reading = self._reading = asyncio.ensure_future(self._read_revision())
            reading.add_done_callback(self._read_done)
        return await asyncio.shield(reading)

    async def _read_revision(self) -> int:
        if self.store.is_sqlite:
            rev = self.store.revision()
        else:
            rev = await run_in_threadpool(self.store.revision)
        self.latest = max(self.latest, rev)
        return rev

    def _read_done(self, fut: asyncio.Future[int]) -> None:
        if self._reading is fut:
            self._reading = None
        if not fut.cancelled():
            fut.exception()  # retrieved: the callers see it

    async def wait_for_revision(self, since: int, wait: float) -> None:
        """Return once a revision after ``since`` is committed, or after ``wait`` seconds
        (the long poll of the agent-facing endpoints)."""
        self.waiting += 1
        try:
            await self._wait_for_revision(since, wait)
        finally:
            self.waiting -= 1

    async def _wait_for_revision(self, since: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        checked = False
        while True:
            event = self.changed_event()
            if self.trusted:
                newest = self.latest  # kept current by NOTIFY: no query per long poll
            elif self.latest <= since or not checked:
                newest = await self.newest()
                checked = True
            else:
                newest = self.latest
            remaining = deadline - time.monotonic()
            if newest > since or remaining <= 0 or self.closing:
                return
            try:
                await asyncio.wait_for(event.wait(), min(remaining, self.poll_interval))
            except TimeoutError:
                checked = False  # the safety poll: read the revision again
            else:
                checked = self.latest > since  # a NOTIFY named a newer revision

    def end_long_polls(self) -> None:
        """The server is exiting: answer every long poll now (callable from a signal
        handler or any thread)."""
        self.closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake)

    def committed(self, revision: int | None = None) -> None:
        """Called after a write commits (on the loop or a worker thread): wake long-polling
        agents."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # a worker thread
            running = None
        if running is loop:
            loop.call_soon(self._wake)  # on the loop already: no need to wake it up
        else:
            loop.call_soon_threadsafe(self._wake)

    async def delta(
        self, since: int, scope: Hashable, compute: Callable[[], dict[str, Any]]
    ) -> bytes:
        """The JSON answer of ``compute()`` (what changed after ``since`` for ``scope``,
        None for anything not host-scoped), computed once for every agent asking while it
        is the newest: keyed by ``(since, newest revision, scope)`` (the newest revision is read
        once for every agent asking at the time)."""
        key = (since, await self.current(), scope)
        hit = self._deltas.get(key)
        if hit is None or (hit.done() and hit.exception() is not None):
            loop = asyncio.get_running_loop()
            hit = loop.create_future()
            self._deltas[key] = hit
            while len(self._deltas) > DELTA_CACHE_SIZE:
                self._deltas.popitem(last=False)
            try:
                found = await run_in_threadpool(compute)
                hit.set_result(json.dumps(found, separators=(",", ":")).encode())
            except BaseException as err:
                self._deltas.pop(key, None)
                hit.set_exception(err)
                hit.exception()
                raise
        return await asyncio.shield(hit)
