"""The last message id handed out in each box (a user's or a channel's).

Ids are taken inside the writer's transaction; the new last ids of a whole batch
are written in two statements just before commit, and cached once committed (the
embedded default has one writer). Without the cache the row is read ``FOR
UPDATE``. With ``lock_kind`` (shared writers, #9) the box's owner is locked
through the writer first (a user's or channel's state row is the mutex of all its
counters) and the rows of every owner a batch locks are read in one statement
(:meth:`BoxIds.load`, registered as a locker of that kind).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from teamgram.infra.group_commit import Conflict, Tx
from teamgram.messenger.rowlocks import lock_rows, mysql_rewrite, rewrite_rows


class BoxIds:
    def __init__(
        self, table: sa.Table, key: str, cache: bool = True, lock_kind: str | None = None
    ) -> None:
        self.table = table
        self.key = key
        self.lock_kind = lock_kind
        self.cache = cache and lock_kind is None
        self._scratch = f"box_ids.{table.name}"
        self._loaded = f"box_ids.{table.name}.locked"
        self._last: dict[int, int] = {}

    async def next(self, tx: Tx, owner: int) -> int:
        work: dict[int, list[int]] | None = tx.scratch.get(self._scratch)
        if work is None:
            work = tx.scratch[self._scratch] = {}
            tx.before_commit(self._write)
            tx.on_commit(lambda: self._committed(work))
        slot = work.get(owner)
        if slot is None:
            if self.lock_kind is not None:
                slot = work[owner] = await self._locked(tx, owner)
            else:
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

    async def load(self, tx: Tx, owners: list[int]) -> None:
        """Read (and lock) the boxes of owners ``tx`` just locked: a locker."""
        t = self.table
        rows = await lock_rows(tx, t.c[self.key], (t.c.last_id,), owners)
        loaded: dict[int, list[int]] = tx.scratch.setdefault(self._loaded, {})
        for o in owners:
            r = rows.get(o)
            loaded[o] = [r.last_id, 1] if r is not None else [0, 0]

    async def _locked(self, tx: Tx, owner: int) -> list[int]:
        assert self.lock_kind is not None
        loaded: dict[int, list[int]] | None = tx.scratch.get(self._loaded)
        if loaded is None or owner not in loaded:
            await tx.lock(self.lock_kind, [owner])  # not declared up front: locked now
            loaded = tx.scratch[self._loaded]
        return list(loaded[owner])

    async def _write(self, tx: Tx) -> None:
        work: dict[int, list[int]] = tx.scratch[self._scratch]
        t = self.table
        new = [{self.key: o, "last_id": s[0]} for o, s in work.items() if not s[1]]
        old = [{"owner": o, "v": s[0]} for o, s in work.items() if s[1]]
        if new:
            try:
                await tx.conn.execute(t.insert(), new)
            except IntegrityError as exc:  # another writer's first row: run again
                raise Conflict(f"{t.name}: first row written by another writer") from exc
        if old and mysql_rewrite(tx):
            rows = [{self.key: o, "last_id": s[0]} for o, s in work.items() if s[1]]
            await rewrite_rows(tx, t, ("last_id",), rows)
        elif old:
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
