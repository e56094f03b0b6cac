"""The last message id handed out in each box (a user's or a channel's).

Ids are taken inside the writer's transaction; the new last ids of a whole batch
are written in two statements just before commit, and cached once committed (the
embedded default has one writer). Without the cache (several writers, #9) the row
is read ``FOR UPDATE``.
"""

from __future__ import annotations

import sqlalchemy as sa

from teamgram.infra.group_commit import Tx


class BoxIds:
    def __init__(self, table: sa.Table, key: str, cache: bool = True) -> None:
        self.table = table
        self.key = key
        self.cache = cache
        self._scratch = f"box_ids.{table.name}"
        self._last: dict[int, int] = {}

    async def next(self, tx: Tx, owner: int) -> int:
        work: dict[int, list[int]] | None = tx.scratch.get(self._scratch)
        if work is None:
            work = tx.scratch[self._scratch] = {}
            tx.before_commit(self._write)
            tx.on_commit(lambda: self._committed(work))
        slot = work.get(owner)
        if slot is None:
            last = self._last.get(owner) if self.cache else None
            stored = True
            if last is None:
                q = sa.select(self.table.c.last_id).where(self.table.c[self.key] == owner)
                if not self.cache:
                    q = q.with_for_update()
                last = (await tx.conn.execute(q)).scalar()
                stored = last is not None
                last = last or 0
            slot = work[owner] = [last, int(stored)]
        slot[0] += 1
        return slot[0]

    async def _write(self, tx: Tx) -> None:
        work: dict[int, list[int]] = tx.scratch[self._scratch]
        t = self.table
        new = [{self.key: o, "last_id": s[0]} for o, s in work.items() if not s[1]]
        old = [{"owner": o, "v": s[0]} for o, s in work.items() if s[1]]
        if new:
            await tx.conn.execute(t.insert(), new)
        if old:
            await tx.conn.execute(
                t.update()
                .where(t.c[self.key] == sa.bindparam("owner"))
                .values(last_id=sa.bindparam("v")),
                old,
            )

    def _committed(self, work: dict[int, list[int]]) -> None:
        if self.cache:
            for owner, slot in work.items():
                self._last[owner] = slot[0]
