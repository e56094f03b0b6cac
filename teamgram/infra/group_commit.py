"""Group commit: many small write operations, one database transaction.

Every message touches several rows (two message boxes, two dialogs, two update
logs, two pts counters); committing each on its own makes the commit (an fsync
on SQLite, a round trip on a server) the cost of a message. :class:`GroupCommit`
queues operations and runs whatever is waiting in one transaction, one after
another, so a burst of N sends costs one commit.

An operation is ``async def op(tx) -> result``. It reads and writes through
``tx.conn`` (its writes are visible to the operations after it in the batch),
may queue rows for one bulk insert at commit (:meth:`Tx.insert_later`), and
registers what must happen only once the data is durable
(:meth:`Tx.after_commit`: pushing updates). If any operation raises, the batch
is rolled back, :meth:`Tx.on_rollback` hooks run (caches drop what they staged)
and each operation is retried alone, so one bad request fails alone and leaves
nothing half-written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

# Operations per transaction: bounds a batch's latency and its lock time.
MAX_BATCH = 200


@dataclass(slots=True)
class Tx:
    """The transaction one batch of operations shares."""

    conn: AsyncConnection
    _inserts: dict[sa.Table, list[dict[str, Any]]] = field(default_factory=dict)
    _before: list[Callable[[Tx], Awaitable[None]]] = field(default_factory=list)
    _after: list[Callable[[], None]] = field(default_factory=list)
    _rollback: list[Callable[[], None]] = field(default_factory=list)
    _marks: list[int] = field(default_factory=list)  # len(_after) after each operation
    _committed: list[Callable[[], None]] = field(default_factory=list)
    _flushers: dict[str, Callable[[Tx], Awaitable[None]]] = field(default_factory=dict)
    # Free space for services to keep per-transaction state (e.g. dirty counters).
    scratch: dict[str, Any] = field(default_factory=dict)

    def insert_later(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Queue a row: inserted in bulk by :meth:`flush` (at the latest before commit)."""
        self._inserts.setdefault(table, []).append(row)

    def add_flusher(self, key: str, hook: Callable[[Tx], Awaitable[None]]) -> None:
        """Register (once per ``key``) a writer of state staged in memory, run by :meth:`flush`."""
        if key not in self._flushers:
            self._flushers[key] = hook

    async def flush(self) -> None:
        """Write what is staged: call before reading rows this batch may have staged."""
        for hook in list(self._flushers.values()):
            await hook(self)
        inserts, self._inserts = self._inserts, {}
        for table, rows in inserts.items():
            if rows:
                await self.conn.execute(table.insert(), rows)

    def before_commit(self, hook: Callable[[Tx], Awaitable[None]]) -> None:
        self._before.append(hook)

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Runs once the batch is durable, in the order registered (delivery order)."""
        self._after.append(hook)

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Runs right after the commit, before anything else (caches take the new values)."""
        self._committed.append(hook)

    def on_rollback(self, hook: Callable[[], None]) -> None:
        self._rollback.append(hook)

    async def _finish(self) -> None:
        await self.flush()
        for hook in self._before:
            await hook(self)
        await self.flush()


@dataclass(slots=True)
class _Op(Generic[T]):
    fn: Callable[[Tx], Awaitable[T]]
    future: asyncio.Future[T]


class GroupCommit:
    """One writer task per database; see the module docstring."""

    def __init__(self, engine: AsyncEngine, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Op[Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # Figures for benchmarks: batches committed and operations in them.
        self.batches = 0
        self.operations = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        while not self._queue.empty():
            await asyncio.sleep(0.01)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def run(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``fn`` in the next batch; returns after the batch committed."""
        if self._task is None:
            self.start()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(fn, fut))
        # Not shielded: a cancelled caller cancels only its wait (the operation
        # still runs), and the result reaches the caller one loop turn sooner.
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                for op in batch:
                    if not op.future.done():
                        op.future.cancel()
                raise
            except Exception:  # pragma: no cover - _commit settles every future itself
                log.exception("group commit failed")

    async def _commit(self, batch: list[_Op[Any]]) -> None:
        try:
            results, tx = await self._attempt(batch)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # Someone in the batch failed: each alone, so only that one fails.
            for op in batch:
                await self._commit([op])
            return
        self.batches += 1
        self.operations += len(batch)
        _run_hooks(tx._committed)
        # Pushes and answers leave in operation order, all on the next turns of the
        # loop: op i's pushes, then op i's caller wakes (a handler that builds its
        # answer without awaiting again queues it at once), then op i+1's... So a
        # device never sees pts N+1 before the answer carrying its own N.
        loop = asyncio.get_running_loop()
        start = 0
        for op, result, end in zip(batch, results, tx._marks, strict=True):
            loop.call_soon(_run_hooks, tx._after[start:end])
            start = end
            if not op.future.done():
                op.future.set_result(result)

    async def _attempt(self, batch: list[_Op[Any]]) -> tuple[list[Any], Tx]:
        tx: Tx | None = None
        try:
            async with self.engine.begin() as conn:
                tx = Tx(conn)
                results = []
                for op in batch:
                    results.append(await op.fn(tx))
                    tx._marks.append(len(tx._after))
                await tx._finish()
            return results, tx
        except BaseException:
            if tx is not None:
                for hook in tx._rollback:
                    try:
                        hook()
                    except Exception:
                        log.exception("rollback hook failed")
            raise


def _run_hooks(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("after-commit hook failed")
