"""Running EC2 actions: the action table, DryRun, on or off the event loop, group commit.

:class:`Dispatch` runs an action in a transaction of its own (:meth:`Dispatch.run`), queues
SQLite writes into one group commit (:meth:`Dispatch.run_on_loop`), and sends costly
filtered reads to a worker thread (:meth:`Dispatch.run_off_loop`). ``on_commit`` is called
after every commit that appended to the change log (the change feed wakes long polls).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from stockade.api.actions import ACTIONS
from stockade.errors import ApiError
from stockade.service.common import Config, Ctx
from stockade.service.vpcs import ensure_region
from stockade.store.db import Store, Tx

# one account's reads with filters running at once (the others wait for a turn)
FILTERED_READS_PER_ACCOUNT = 2


class _DryRunOk(Exception):
    """Raised inside the transaction so a DryRun request rolls back after validating."""


@dataclass
class Dispatch:
    store: Store
    config: Config
    on_commit: Callable[[], None] = lambda: None
    # per account with filtered reads in hand: [the semaphore they share, how many]
    _filtered: dict[str, list[Any]] = field(default_factory=dict)
    _ready: set[tuple[str, str]] = field(default_factory=set)
    # writes waiting for :meth:`_flush`: (action, params, account id, region, answer)
    _queue: list[tuple[str, dict[str, Any], str, str, asyncio.Future[dict]]] = field(
        default_factory=list
    )

    def ensure_region(self, account_id: str, region: str) -> None:
        if (account_id, region) in self._ready:
            return
        with self.store.read() as conn:
            ready = _region_ready(conn, account_id, region, self.config)
        if not ready:
            with self.store.write() as tx:
                ensure_region(Ctx(tx.conn, account_id, region, self.config, tx))
        self._ready.add((account_id, region))

    def run(self, action: str, params: dict[str, Any], account_id: str, region: str) -> dict:
        """Run an action in a transaction of its own (answer when this returns)."""
        return self._run(action, params, account_id, region)

    async def run_on_loop(
        self, action: str, params: dict[str, Any], account_id: str, region: str
    ) -> dict:
        """Run an action on the event loop's thread (SQLite). A write is queued and run by
        :meth:`_flush` with the other writes the loop has in hand (group commit, see
        store.db.Batch); this returns once their transaction has committed."""
        spec = ACTIONS[action]
        if not ((spec.write or params.get("dry_run")) and self.store.batches):
            return self._run(action, params, account_id, region)
        self.ensure_region(account_id, region)  # a write of its own, never inside a batch
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((action, params, account_id, region, done))
        return await done

    async def run_off_loop(
        self, action: str, params: dict[str, Any], account_id: str, region: str
    ) -> dict:
        """Run a read with filters on a worker thread: the loop goes on serving meanwhile
        (between the thread's turns at the GIL). At most :data:`FILTERED_READS_PER_ACCOUNT`
        of one account's run at once, the rest wait their turn: one account cannot take
        every worker thread (and so every other account's turn, all requests' with
        PostgreSQL). With SQLite the account's region is set up first, on the loop, so that
        the thread only reads."""
        if self.store.is_sqlite:
            self.ensure_region(account_id, region)
        entry = self._filtered.get(account_id)
        if entry is None:
            entry = self._filtered[account_id] = [asyncio.Semaphore(FILTERED_READS_PER_ACCOUNT), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                return await run_in_threadpool(self._run, action, params, account_id, region)
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._filtered[account_id]

    def _flush(self) -> None:
        """Run the queued writes in one transaction, each in a savepoint of its own, commit
        it, then answer them all (a failed commit fails each of them).

        The writer lock is held only while this runs, never across a turn of the loop: with
        ``serve --workers N``, another process's flush waits for this one callback at most
        (its loop stops for that long), not for this loop's other requests."""
        queue, self._queue = self._queue, []
        outcomes: list[tuple[asyncio.Future[dict], dict | None, BaseException | None]] = []
        for action, params, account_id, region, done in queue:
            if done.cancelled():
                continue
            try:
                with self.store.write_in_batch() as (tx, _):
                    result = self._handle(action, params, account_id, region, tx)
            except Exception as err:  # noqa: BLE001 - handed to the request that raised it
                outcomes.append((done, None, _answer_of(err)))
            else:
                outcomes.append((done, result, None))
        batch = self.store.commit_batch()
        if batch is not None and batch.error is not None:
            failed = RuntimeError("the group commit failed")
            failed.__cause__ = batch.error
            outcomes = [(done, None, err or failed) for done, _, err in outcomes]
        for done, result, err in outcomes:
            if done.done():
                continue
            if err is not None:
                done.set_exception(err)
            else:
                done.set_result(result)  # type: ignore[arg-type]
        if batch is not None and batch.appended:
            self.on_commit()

    def _run(self, action: str, params: dict[str, Any], account_id: str, region: str) -> dict:
        self.ensure_region(account_id, region)
        spec = ACTIONS[action]
        try:
            if spec.write or params.get("dry_run"):
                with self.store.write() as tx:
                    result = self._handle(action, params, account_id, region, tx)
                if tx.appended:
                    self.on_commit()
                return result
            params.pop("dry_run", None)
            with self.store.read() as conn:
                return spec.handler(Ctx(conn, account_id, region, self.config), params)
        except _DryRunOk as err:
            raise _answer_of(err) from None

    def _handle(
        self, action: str, params: dict[str, Any], account_id: str, region: str, tx: Tx
    ) -> dict:
        """Run a write's handler in ``tx``; a DryRun raises :class:`_DryRunOk` once it has
        validated, so that what it did is rolled back."""
        dry_run = bool(params.pop("dry_run", False))
        result = ACTIONS[action].handler(Ctx(tx.conn, account_id, region, self.config, tx), params)
        if dry_run:
            raise _DryRunOk
        return result


# a read with more filter values than this runs on a worker thread even without wildcards
OFF_LOOP_FILTER_VALUES = 16


def _filtered_read(action: str, params: dict[str, Any]) -> bool:
    """A read whose filters may cost much: wildcard values (each matched against every
    item it lists) or many values (up to 200). It runs on a worker thread rather than on
    the event loop, where every other request would wait for it. A few exact values cost
    a string comparison per item and stay on the loop: a thread hop would cost more (the
    filtered describe of the capacity benchmark ran at less than half its rate when every
    filtered read took one)."""
    filters = params.get("filters")
    if not filters or ACTIONS[action].write or params.get("dry_run"):
        return False
    values = [v for f in filters for v in (f.get("values") or ())]
    return len(values) > OFF_LOOP_FILTER_VALUES or any(
        isinstance(v, str) and ("*" in v or "?" in v) for v in values
    )


def _answer_of(err: BaseException) -> BaseException:
    """What a request is answered with for an exception its handler raised."""
    if isinstance(err, _DryRunOk):
        return ApiError(
            "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412
        )
    return err


def _region_ready(conn: Any, account_id: str, region: str, config: Config) -> bool:
    from stockade.service.vpcs import region_ready

    return region_ready(Ctx(conn, account_id, region, config))
