"""sync for supergroups and channels: one pts per channel and the channel's update log.

A channel's messages live once, in the channel's own box, so its updates are
numbered by the channel's pts (not each member's): every member's device keeps
one pts per channel, applies ``updateNewChannelMessage`` & co. when
``local_pts + pts_count == pts``, and calls ``updates.getChannelDifference`` on a
gap or after being away. Every entry of the log advances the pts; the log is
written in the same transaction as the change (:meth:`ChannelSync.append`, inside
the msg writer), and pushes go out only after commit.

Per-user channel state that does not change the channel (read positions) is not
logged here: it goes to the reader's own log (SyncService, pts_count 0).

With ``shared=True`` (several processes write one database, #9) states are not
cached: a change locks the channel's state row (``"channel"`` rows of the
writer, before any user's), see :meth:`ChannelSync.lock_channels`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.infra.group_commit import Conflict, Tx
from teamgram.messenger.rowlocks import lock_rows, mysql_rewrite, rewrite_rows
from teamgram.messenger.sync.tables import channel_update_state, channel_updates
from teamgram.tl import decode

# A channel's pts before its first update (the creation message gets 2, as Telegram).
INITIAL_CHANNEL_PTS = 1
# Telegram's rule of thumb: further behind than this, channelDifferenceTooLong.
CHANNEL_TOO_LONG_GAP = 100_000
# Shared writers: a channel's state row is the mutex of its counters (pts, message
# ids); channels are locked before users.
CHANNEL_LOCK = "channel"
CHANNEL_LOCK_RANK = 10


@dataclass(slots=True)
class ChannelState:
    pts: int = INITIAL_CHANNEL_PTS
    date: int = 0
    stored: bool = False


@dataclass(slots=True)
class ChannelDifference:
    """Log entries after a device's pts (oldest first), and the pts to continue from."""

    pts: int
    entries: list[tuple[int, int, Any]] = field(default_factory=list)  # (pts, count, update)
    final: bool = True
    too_long: bool = False


class ChannelSync:
    def __init__(
        self, engine: AsyncEngine, cache_states: bool = True, shared: bool = False
    ) -> None:
        self.engine = engine
        # Other processes write the same database: lock instead of caching.
        self.shared = shared
        self.cache_states = cache_states and not shared
        self._states: dict[int, ChannelState] = {}

    # ----------------------------------------------------------- in the writer
    async def append(self, tx: Tx, channel_id: int, update: Any, pts_count: int = 1) -> int:
        """Log ``update`` (its ``pts`` / ``pts_count`` are set here); returns the new pts."""
        st = await self._working(tx, channel_id)
        st.pts += pts_count
        st.date = int(time.time())
        update.pts = st.pts
        update.pts_count = pts_count
        tx.insert_later(
            channel_updates,
            {
                "channel_id": channel_id,
                "pts": st.pts,
                "pts_count": pts_count,
                "date": st.date,
                "body": update.to_bytes(),
            },
        )
        return st.pts

    async def current_pts_in(self, tx: Tx, channel_id: int) -> int:
        """The channel's pts as ``tx`` sees it. Shared writers: a channel this
        transaction does not change is read without a lock (the value only informs)."""
        if self.shared and not tx.holds(CHANNEL_LOCK, channel_id):
            t = channel_update_state
            pts = (
                await tx.conn.execute(sa.select(t.c.pts).where(t.c.channel_id == channel_id))
            ).scalar()
            return INITIAL_CHANNEL_PTS if pts is None else int(pts)
        return (await self._working(tx, channel_id)).pts

    async def lock_channels(self, tx: Tx, channel_ids: list[int]) -> None:
        """Lock these channels' state rows (creating a new channel's first) and keep
        what they hold for this transaction: the locker of ``"channel"`` rows."""
        t = channel_update_state
        now = int(time.time())
        rows = await lock_rows(
            tx,
            t.c.channel_id,
            (t.c.pts, t.c.date),
            channel_ids,
            lambda c: {"channel_id": c, "pts": INITIAL_CHANNEL_PTS, "date": now},
        )
        loaded: dict[int, ChannelState] = tx.scratch.setdefault("sync.channels.locked", {})
        for c in channel_ids:
            r = rows.get(c)
            if r is None:
                raise Conflict(f"update state row of channel {c} vanished")
            loaded[c] = ChannelState(r.pts, r.date, True)

    async def _working(self, tx: Tx, channel_id: int) -> ChannelState:
        dirty: dict[int, ChannelState] | None = tx.scratch.get("sync.channels")
        if dirty is None:
            dirty = tx.scratch["sync.channels"] = {}
            tx.before_commit(self._write)
            tx.on_commit(lambda: self._committed(dirty))
        st = dirty.get(channel_id)
        if st is not None:
            return st
        cached = self._states.get(channel_id) if self.cache_states else None
        if self.shared:
            loaded: dict[int, ChannelState] | None = tx.scratch.get("sync.channels.locked")
            if loaded is None or channel_id not in loaded:
                await tx.lock(CHANNEL_LOCK, [channel_id])
                loaded = tx.scratch["sync.channels.locked"]
            cached = loaded[channel_id]
        elif cached is None:
            t = channel_update_state
            q = sa.select(t.c.pts, t.c.date).where(t.c.channel_id == channel_id)
            if not self.cache_states:
                q = q.with_for_update()
            row = (await tx.conn.execute(q)).first()
            cached = ChannelState(row.pts, row.date, True) if row else ChannelState()
        st = dirty[channel_id] = ChannelState(cached.pts, cached.date, cached.stored)
        return st

    async def _write(self, tx: Tx) -> None:
        dirty: dict[int, ChannelState] = tx.scratch["sync.channels"]
        t = channel_update_state
        new = [
            {"channel_id": c, "pts": s.pts, "date": s.date}
            for c, s in dirty.items()
            if not s.stored
        ]
        old = [{"cid": c, "p": s.pts, "d": s.date} for c, s in dirty.items() if s.stored]
        if new:
            try:
                await tx.conn.execute(t.insert(), new)
            except IntegrityError as exc:  # another writer's first row: run again
                raise Conflict("channel_update_state: first row written elsewhere") from exc
        if old and mysql_rewrite(tx):
            rows = [
                {"channel_id": c, "pts": s.pts, "date": s.date}
                for c, s in dirty.items()
                if s.stored
            ]
            await rewrite_rows(tx, t, ("pts", "date"), rows)
        elif old:
            await tx.conn.execute(
                t.update()
                .where(t.c.channel_id == sa.bindparam("cid"))
                .values(pts=sa.bindparam("p"), date=sa.bindparam("d")),
                old,
            )

    def _committed(self, dirty: dict[int, ChannelState]) -> None:
        if not self.cache_states:
            return
        for channel_id, st in dirty.items():
            st.stored = True
            self._states[channel_id] = st

    # ------------------------------------------------------------------ reads
    async def state(self, channel_id: int) -> ChannelState:
        """The committed state (cached: the embedded default has one writer; read
        each time with shared writers)."""
        st = self._states.get(channel_id) if self.cache_states else None
        if st is not None:
            return st
        t = channel_update_state
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(t.c.pts, t.c.date).where(t.c.channel_id == channel_id))
            ).first()
        st = ChannelState(row.pts, row.date, True) if row else ChannelState()
        if self.cache_states and row is not None:
            self._states[channel_id] = st
        return st

    async def states(self, channel_ids: list[int]) -> dict[int, ChannelState]:
        out: dict[int, ChannelState] = {}
        missing: list[int] = []
        for c in channel_ids:
            st = self._states.get(c) if self.cache_states else None
            if st is None:
                missing.append(c)
            else:
                out[c] = st
        if missing:
            t = channel_update_state
            async with self.engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(t.c.channel_id, t.c.pts, t.c.date).where(t.c.channel_id.in_(missing))
                )
                for r in rows:
                    out[r.channel_id] = st = ChannelState(r.pts, r.date, True)
                    if self.cache_states:
                        self._states[r.channel_id] = st
        for c in missing:
            out.setdefault(c, ChannelState())
        return out

    async def difference(self, channel_id: int, pts: int, limit: int) -> ChannelDifference:
        """What a device at ``pts`` missed, at most ``limit`` entries (``final`` False: more).

        ``too_long``: the device is further behind than the log can replay (or the
        entries right after its pts were trimmed, or it claims a future pts).
        """
        state = await self.state(channel_id)
        gap = state.pts - pts
        if gap == 0:
            return ChannelDifference(state.pts)
        if gap < 0 or gap > CHANNEL_TOO_LONG_GAP:
            return ChannelDifference(state.pts, too_long=True)
        t = channel_updates
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.c.pts, t.c.pts_count, t.c.body)
                    .where(t.c.channel_id == channel_id, t.c.pts > pts, t.c.pts <= state.pts)
                    .order_by(t.c.pts)
                    .limit(limit + 1)
                )
            ).all()
        if not rows or rows[0].pts - rows[0].pts_count != pts:
            return ChannelDifference(state.pts, too_long=True)  # trimmed away
        final = len(rows) <= limit
        rows = rows[:limit]
        return ChannelDifference(
            rows[-1].pts if not final else state.pts,
            [(r.pts, r.pts_count, decode(r.body)) for r in rows],
            final=final,
        )

    async def trim(self, older_than: int) -> int:
        """Delete log entries dated before ``older_than``; returns how many went."""
        t = channel_updates
        async with self.engine.begin() as conn:
            res = await conn.execute(t.delete().where(t.c.date < older_than))
        return int(res.rowcount or 0)
