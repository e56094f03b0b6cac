"""GroupCommit: one transaction per batch, a failing operation fails alone, delivery order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from teamgram.errors import RpcError
from teamgram.infra.group_commit import GroupCommit, Tx

meta = sa.MetaData()
rows = sa.Table("rows", meta, sa.Column("k", sa.Integer, primary_key=True))


async def _engine(tmp_path: Path) -> AsyncEngine:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'gc.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    return engine


async def _keys(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return sorted(r.k for r in await conn.execute(sa.select(rows)))


async def test_batches_commit_together_and_a_failure_fails_alone(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    writer = GroupCommit(engine)
    events: list[str] = []

    def insert(k: int, fail: bool = False) -> Callable[[Tx], Awaitable[int]]:
        async def op(tx: Tx) -> int:
            await tx.conn.execute(rows.insert().values(k=k))
            tx.after_commit(lambda: events.append(f"push{k}"))
            if fail:
                raise RpcError(400, "BAD")
            return k

        return op

    async def call(k: int, fail: bool = False) -> int:
        result = await writer.run(insert(k, fail))
        events.append(f"answer{k}")
        return result

    try:
        results = await asyncio.gather(
            call(1), call(2), call(3, fail=True), call(4), return_exceptions=True
        )
        assert results[:2] == [1, 2] and results[3] == 4
        assert isinstance(results[2], RpcError) and results[2].message == "BAD"
        assert await _keys(engine) == [1, 2, 4]  # nothing of the failed one
        # Each operation's pushes come right before its caller resumes.
        assert events == ["push1", "answer1", "push2", "answer2", "push4", "answer4"]
        assert writer.operations == 3 and writer.batches >= 3
    finally:
        await writer.stop()
        await engine.dispose()


async def test_bulk_rows_and_hooks(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    writer = GroupCommit(engine)
    seen: list[str] = []

    async def op(tx: Tx) -> None:
        tx.insert_later(rows, {"k": 10})
        tx.insert_later(rows, {"k": 11})

        async def before(t: Tx) -> None:
            seen.append("before")

        tx.before_commit(before)
        tx.on_commit(lambda: seen.append("committed"))
        tx.on_rollback(lambda: seen.append("rolled back"))

    try:
        await writer.run(op)
        await asyncio.sleep(0)
        assert seen == ["before", "committed"]
        assert await _keys(engine) == [10, 11]

        seen.clear()
        with pytest.raises(sa.exc.IntegrityError):
            await writer.run(op)  # the same keys again: the bulk insert fails at commit
        assert seen == ["rolled back"]  # the staged rows failed before the hooks ran
        assert await _keys(engine) == [10, 11]
    finally:
        await writer.stop()
        await engine.dispose()
