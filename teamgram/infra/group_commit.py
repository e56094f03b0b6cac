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

Shared writers (split mode, #9): several processes, each with its own
``GroupCommit(shared=True)``, write one MariaDB/PostgreSQL database. Counters
(pts, box ids) are then read under row locks instead of cached, and two rules
keep that safe:

* locks are taken in one global order. An operation declares the rows it will
  lock (``run(fn, locks=[("user", 5), ...])``); a batch takes the union of its
  operations' locks first, sorted by kind rank then id, through the lockers the
  services registered (:meth:`GroupCommit.add_locker`). A lock an operation
  finds it needs later (:meth:`Tx.lock`) is taken then, out of order: that can
  deadlock, which the next rule handles;
* a batch that fails with a deadlock, a lock wait timeout, a serialization
  failure or a :class:`Conflict` (a counter's own row raced another writer) runs
  again from the start in a new transaction, a bounded number of times with
  jittered backoff. Nothing of a failed attempt leaks: its after-commit hooks
  are dropped with it, only the attempt that commits runs them.

MariaDB's writer transactions run READ COMMITTED in this mode: no gap locks
(fewer deadlocks between writers inserting new rows), and every statement sees
what the previous holder of a lock committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

# Operations per transaction: bounds a batch's latency and its lock time.
MAX_BATCH = 200
# Shared writers: attempts of a batch that keeps meeting deadlocks or lock timeouts
# (then each operation alone gets as many), and the backoff between attempts.
ATTEMPTS = 8
BACKOFF_FIRST = 0.002
BACKOFF_MAX = 0.2
# stop(): how long the queue gets to drain.
STOP_TIMEOUT = 30.0

# Errors after which the same transaction, run again, may well succeed.
# MariaDB/MySQL: deadlock, lock wait timeout, "record changed since last read"
# (MariaDB 11 snapshot isolation). PostgreSQL: deadlock, serialization
# failure, lock not available (lock_timeout).
_RETRY_MYSQL = frozenset({1213, 1205, 1020})
_RETRY_SQLSTATE = frozenset({"40P01", "40001", "55P03"})

# ``async def locker(tx, ids)``: lock these rows (ids sorted, none locked yet in tx).
Locker = Callable[["Tx", list[int]], Awaitable[None]]
LockKey = tuple[str, int]


class Conflict(Exception):
    """A write raced another writer's (two first inserts of one counter row): the
    whole operation can run again and will see the other's row."""


def retryable(exc: BaseException) -> bool:
    """Whether ``exc`` says "another writer got in the way", not "this is wrong"."""
    if isinstance(exc, Conflict):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state in _RETRY_SQLSTATE:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _RETRY_MYSQL


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: doubling, jittered (two writers
    that collided should not collide again in step)."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)


@dataclass(slots=True)
class _Kind:
    rank: int
    lockers: list[Locker]


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
    # Shared writers: who locks each kind of row, and what this transaction holds.
    _kinds: dict[str, _Kind] = field(default_factory=dict)
    _locked: dict[str, set[int]] = field(default_factory=dict)
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

    async def lock(self, kind: str, ids: Iterable[int]) -> None:
        """Hold the ``kind`` rows of ``ids`` until the end of the transaction (shared
        writers; a no-op for one writer). Rows already held are skipped; the rest are
        locked in id order."""
        if not self._kinds:
            return
        entry = self._kinds.get(kind)
        if entry is None:
            raise RuntimeError(f"no locker registered for {kind!r} rows")
        held = self._locked.setdefault(kind, set())
        fresh = sorted(set(ids) - held)
        if not fresh:
            return
        held.update(fresh)
        for locker in entry.lockers:
            await locker(self, fresh)

    def holds(self, kind: str, row_id: int) -> bool:
        return row_id in self._locked.get(kind, ())

    async def _finish(self) -> None:
        await self.flush()
        for hook in self._before:
            await hook(self)
        await self.flush()


@dataclass(slots=True)
class _Op(Generic[T]):
    fn: Callable[[Tx], Awaitable[T]]
    future: asyncio.Future[T]
    locks: tuple[LockKey, ...] = ()


class GroupCommit:
    """One writer task per database (per process, with ``shared``); see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        max_batch: int = MAX_BATCH,
        shared: bool = False,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.shared = shared
        self.attempts = max(1, attempts)
        self._tx_engine = engine
        if shared and engine.dialect.name in ("mysql", "mariadb"):
            self._tx_engine = engine.execution_options(isolation_level="READ COMMITTED")
        self._kinds: dict[str, _Kind] = {}
        self._queue: asyncio.Queue[_Op[Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        # Figures for benchmarks: batches committed and operations in them, and
        # attempts run again (shared writers: deadlocks, lock timeouts, conflicts).
        self.batches = 0
        self.operations = 0
        self.retries = 0

    def add_locker(self, kind: str, rank: int, locker: Locker) -> None:
        """Shared writers: ``locker`` locks rows of ``kind`` (several per kind run in
        the order added; the same one twice is kept once). Kinds are locked in
        ``rank`` order, lowest first, at the start of every batch."""
        if not self.shared:
            raise RuntimeError("lockers are for shared writers (GroupCommit(shared=True))")
        entry = self._kinds.get(kind)
        if entry is None:
            entry = self._kinds[kind] = _Kind(rank, [])
        elif entry.rank != rank:
            raise ValueError(f"{kind!r} rows registered with ranks {entry.rank} and {rank}")
        if locker not in entry.lockers:
            entry.lockers.append(locker)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Finish what is queued (and the batch in progress, retries included), then
        stop; after ``timeout`` seconds, whatever is left is cancelled."""
        if self._task is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while (not self._queue.empty() or self._busy) and not self._task.done():
            if asyncio.get_running_loop().time() > deadline:
                log.warning(
                    "group commit: stopping with work left (%d queued)", self._queue.qsize()
                )
                break
            await asyncio.sleep(0.01)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        while not self._queue.empty():  # left after the timeout: their callers must not hang
            self._queue.get_nowait().future.cancel()

    async def run(self, fn: Callable[[Tx], Awaitable[T]], locks: Iterable[LockKey] = ()) -> T:
        """Run ``fn`` in the next batch; returns after the batch committed.

        ``locks``: the rows ``fn`` will lock, as (kind, id) (shared writers take
        them up front, in order; one writer ignores them).
        """
        if self._task is None:
            self.start()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(fn, fut, tuple(locks) if self.shared else ()))
        # Not shielded: a cancelled caller cancels only its wait (the operation
        # still runs), and the result reaches the caller one loop turn sooner.
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._busy = True
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                for op in batch:
                    if not op.future.done():
                        op.future.cancel()
                raise
            except Exception:  # pragma: no cover - _commit settles every future itself
                log.exception("group commit failed")
            finally:
                self._busy = False

    async def _commit(self, batch: list[_Op[Any]]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                results, tx = await self._attempt(batch)
                break
            except Exception as exc:
                if attempt < self.attempts and retryable(exc):
                    # Another writer got in the way: the same batch again, later.
                    self.retries += 1
                    log.debug("batch of %d, attempt %d: %s", len(batch), attempt, exc)
                    await asyncio.sleep(backoff(attempt))
                    continue
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
            async with self._tx_engine.begin() as conn:
                tx = Tx(conn, _kinds=self._kinds)
                if self._kinds:
                    await self._lock_declared(tx, batch)
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

    async def _lock_declared(self, tx: Tx, batch: list[_Op[Any]]) -> None:
        """Every lock the batch's operations declared, before any of them runs: kinds
        in rank order, ids ascending (the order every writer uses)."""
        wanted: dict[str, set[int]] = {}
        for op in batch:
            for kind, row_id in op.locks:
                wanted.setdefault(kind, set()).add(row_id)
        for kind in sorted(wanted, key=lambda k: self._kinds[k].rank if k in self._kinds else 0):
            await tx.lock(kind, wanted[kind])


def _run_hooks(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("after-commit hook failed")
