"""idgen: ids and per-owner sequences.

Sequences are reserved from the database in blocks, so handing out an id usually
costs no I/O; a restart skips the rest of a block (ids stay unique, not dense).
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.service.idgen.tables import id_sequences

# Telegram user ids of real people are far above the service accounts (777000).
USER_ID_START = 100_000_000


class IdGenService:
    def __init__(self, engine: AsyncEngine, block: int = 100) -> None:
        self.engine = engine
        self.block = block
        self._next: dict[str, int] = {}
        self._limit: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def next_id(self, name: str, start: int = 1) -> int:
        async with self._lock:
            nxt = self._next.get(name, 0)
            if nxt == 0 or nxt >= self._limit[name]:
                nxt = await self._reserve(name, start)
            self._next[name] = nxt + 1
            return nxt

    async def next_user_id(self) -> int:
        return await self.next_id("user_id", USER_ID_START)

    async def _reserve(self, name: str, start: int) -> int:
        """Take the next block atomically: safe with several processes on one database."""
        while True:
            async with self.engine.begin() as conn:
                # The increment locks the row, so concurrent reservations serialise.
                bumped = await conn.execute(
                    id_sequences.update()
                    .where(id_sequences.c.name == name)
                    .values(value=id_sequences.c.value + self.block)
                )
                if bumped.rowcount:
                    value = (
                        await conn.execute(
                            sa.select(id_sequences.c.value).where(id_sequences.c.name == name)
                        )
                    ).scalar_one()
                    first = value - self.block
                    break
            try:  # a new sequence, in its own transaction (MariaDB gap locks)
                async with self.engine.begin() as conn:
                    await conn.execute(
                        id_sequences.insert().values(name=name, value=start + self.block)
                    )
            except IntegrityError:
                continue  # another process created it first: take a block from it
            first = start
            break
        self._limit[name] = first + self.block
        return first
