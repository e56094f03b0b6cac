"""sync: per-user pts, the update log, and delivery to every online device.

Telegram's contract with a device: every update that changes what the user's
message box holds carries ``pts`` (the box's version after it) and
``pts_count`` (how much it advanced); a device applies an update when
``local_pts + pts_count == pts``, skips it when already applied, and asks
``updates.getDifference`` when it sees a gap. So the server must

* advance a user's pts in the same transaction as the change it describes
  (:meth:`SyncService.append`, called inside the msg writer's transaction),
* log every such update so getDifference returns exactly what a device missed,
  in order (:meth:`SyncService.difference`),
* and push updates to online devices only after they are durable, in pts order
  (:meth:`SyncService.push_later` runs after commit; the writer is sequential).

Updates that carry no pts but must still reach a device that was away (drafts,
pinned dialogs, unread marks) are logged with ``pts_count`` 0 at the current
pts; they are idempotent, so returning one twice is harmless. ``seq`` stays 0:
every container this server sends is ``seq=0``, which clients apply without a
seq check. ``qts`` is 0 (no secret chats or bot updates yet).

States are cached after the first read (the embedded default has one writer).
With ``shared=True`` (several processes write one database, #9) nothing is
cached: a transaction locks the state rows of the users it touches (``"user"``
rows of :class:`~teamgram.infra.group_commit.GroupCommit`, see
:meth:`SyncService.lock_users`), so a user's pts are handed out and committed in
order whichever process writes, and getDifference never sees pts N+1 while N is
still to come.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.infra.group_commit import Conflict, Tx
from teamgram.messenger.rowlocks import lock_rows, mysql_rewrite, rewrite_rows
from teamgram.messenger.sync.tables import user_update_state, user_updates
from teamgram.tl import TLObject, decode, types

log = logging.getLogger(__name__)

# The pts of a user with no updates yet. Not 0: Telethon treats pts 0 as "no
# state" and fetches it again on every connect.
INITIAL_PTS = 1
# Log entries per getDifference answer before it becomes a differenceSlice.
DIFFERENCE_LIMIT = 100
# A device further behind than this gets differenceTooLong (re-sync from history).
TOO_LONG_GAP = 100_000
# Users whose old log entries one retention pass deletes per transaction.
TRIM_BATCH = 500
# Shared writers: the kind of row (a user's state row, the mutex of all the user's
# counters) and its place in the lock order (after channels: an operation that
# touches both locks the channel first).
USER_LOCK = "user"
USER_LOCK_RANK = 20

# (user_id, Updates, auth key to skip or None): to every live session of the user.
Push = Callable[[int, TLObject, "int | None"], None]


@dataclass(slots=True)
class UpdateState:
    pts: int = INITIAL_PTS
    qts: int = 0
    seq: int = 0
    log_id: int = 0
    date: int = 0
    stored: bool = False  # the row exists


@dataclass(slots=True)
class LoggedUpdate:
    pts: int
    pts_count: int
    date: int
    update: Any


@dataclass(slots=True)
class Difference:
    """What a device missed: updates in log order and the state to continue from."""

    updates: list[LoggedUpdate]
    state: UpdateState
    # More entries follow: the client asks again from ``state`` (differenceSlice).
    partial: bool = False
    # Too far behind (or ahead): the client restarts from ``state`` and its history.
    too_long: bool = False


class SyncService:
    def __init__(
        self, engine: AsyncEngine, push: Push, cache_states: bool = True, shared: bool = False
    ) -> None:
        self.engine = engine
        self._push = push
        # Other processes write the same database: lock instead of caching.
        self.shared = shared
        self.cache_states = cache_states and not shared
        self._states: dict[int, UpdateState] = {}
        self._retention: asyncio.Task[None] | None = None
        # Channels' logs are trimmed with the users' (the channel sync plugs in).
        self.channels: Any = None

    # ----------------------------------------------------------- in the writer
    async def append(self, tx: Tx, user_id: int, update: Any, pts_count: int = 1) -> int:
        """Log ``update`` for ``user_id`` in ``tx``; returns the pts it got.

        With ``pts_count`` > 0 the update's ``pts`` / ``pts_count`` fields are set
        here: the caller builds the update and this service numbers it.
        """
        st = await self._working_state(tx, user_id)
        now = int(time.time())
        st.pts += pts_count
        st.log_id += 1
        st.date = now
        if pts_count:
            update.pts = st.pts
            update.pts_count = pts_count
        tx.insert_later(
            user_updates,
            {
                "user_id": user_id,
                "log_id": st.log_id,
                "pts": st.pts,
                "pts_count": pts_count,
                "date": now,
                "body": update.to_bytes(),
            },
        )
        return st.pts

    async def current_pts(self, tx: Tx, user_id: int) -> int:
        """The user's pts as this transaction sees it (for answers that change nothing)."""
        return (await self._working_state(tx, user_id)).pts

    def push_later(
        self, tx: Tx, user_id: int, updates: TLObject, exclude_key: int | None = None
    ) -> None:
        """Send ``updates`` to the user's live sessions once ``tx`` is committed."""
        tx.after_commit(lambda: self._push(user_id, updates, exclude_key))

    def push_now(self, user_id: int, updates: TLObject, exclude_key: int | None = None) -> None:
        """An ephemeral update (typing, status): nothing to log."""
        self._push(user_id, updates, exclude_key)

    async def _working_state(self, tx: Tx, user_id: int) -> UpdateState:
        dirty: dict[int, UpdateState] | None = tx.scratch.get("sync.states")
        if dirty is None:
            dirty = tx.scratch["sync.states"] = {}
            tx.before_commit(self._write_states)
            tx.on_commit(lambda: self._committed(dirty))
        st = dirty.get(user_id)
        if st is not None:
            return st
        cached: UpdateState | None = None
        if self.shared:
            cached = await self._locked_state(tx, user_id)
        elif self.cache_states:
            cached = self._states.get(user_id)
        if cached is None:
            cached = await self._load(tx, user_id)
        # A copy: the cache changes only once the transaction has committed.
        st = dirty[user_id] = replace(cached)
        return st

    # ------------------------------------------------------- shared writers
    async def lock_users(self, tx: Tx, user_ids: list[int]) -> None:
        """Lock these users' state rows (creating the first one of a new user) and
        keep what they hold for this transaction: the locker of ``"user"`` rows."""
        t = user_update_state
        now = int(time.time())
        rows = await lock_rows(
            tx,
            t.c.user_id,
            (t.c.pts, t.c.qts, t.c.seq, t.c.log_id, t.c.date),
            user_ids,
            lambda u: {
                "user_id": u,
                "pts": INITIAL_PTS,
                "qts": 0,
                "seq": 0,
                "log_id": 0,
                "date": now,
            },
        )
        loaded: dict[int, UpdateState] = tx.scratch.setdefault("sync.locked", {})
        for u in user_ids:
            r = rows.get(u)
            if r is None:  # created and gone again: cannot happen, but never guess
                raise Conflict(f"update state row of user {u} vanished")
            loaded[u] = UpdateState(r.pts, r.qts, r.seq, r.log_id, r.date, stored=True)

    async def _locked_state(self, tx: Tx, user_id: int) -> UpdateState:
        loaded: dict[int, UpdateState] | None = tx.scratch.get("sync.locked")
        if loaded is None or user_id not in loaded:
            await tx.lock(USER_LOCK, [user_id])  # not declared up front: locked now
            loaded = tx.scratch["sync.locked"]
        return loaded[user_id]

    async def _load(self, tx: Tx, user_id: int) -> UpdateState:
        t = user_update_state
        q = sa.select(t.c.pts, t.c.qts, t.c.seq, t.c.log_id, t.c.date).where(t.c.user_id == user_id)
        if not self.cache_states:
            q = q.with_for_update()
        row = (await tx.conn.execute(q)).first()
        if row is None:
            return UpdateState()
        return UpdateState(row.pts, row.qts, row.seq, row.log_id, row.date, stored=True)

    async def _write_states(self, tx: Tx) -> None:
        dirty: dict[int, UpdateState] = tx.scratch["sync.states"]
        t = user_update_state
        new = [
            {
                "user_id": u,
                "pts": s.pts,
                "qts": s.qts,
                "seq": s.seq,
                "log_id": s.log_id,
                "date": s.date,
            }
            for u, s in dirty.items()
            if not s.stored
        ]
        old = [
            {"uid": u, "p": s.pts, "q": s.qts, "s": s.seq, "l": s.log_id, "d": s.date}
            for u, s in dirty.items()
            if s.stored
        ]
        if new:
            await _insert_counters(tx, t, new)
        if old and mysql_rewrite(tx):
            rows = [
                {
                    "user_id": u,
                    "pts": s.pts,
                    "qts": s.qts,
                    "seq": s.seq,
                    "log_id": s.log_id,
                    "date": s.date,
                }
                for u, s in dirty.items()
                if s.stored
            ]
            await rewrite_rows(tx, t, ("pts", "qts", "seq", "log_id", "date"), rows)
        elif old:
            await tx.conn.execute(
                t.update()
                .where(t.c.user_id == sa.bindparam("uid"))
                .values(
                    pts=sa.bindparam("p"),
                    qts=sa.bindparam("q"),
                    seq=sa.bindparam("s"),
                    log_id=sa.bindparam("l"),
                    date=sa.bindparam("d"),
                ),
                old,
            )

    def _committed(self, dirty: dict[int, UpdateState]) -> None:
        if not self.cache_states:
            return
        for user_id, st in dirty.items():
            st.stored = True
            self._states[user_id] = st

    # ---------------------------------------------------------------- retention
    async def trim(self, older_than: int, batch: int = TRIM_BATCH) -> int:
        """Delete log entries dated before ``older_than``, for at most ``batch`` users;
        returns how many users had some. Per user, entries are in date order by
        log_id, so one range delete on the primary key does it.

        A device whose pts falls in the trimmed part gets differenceTooLong.
        """
        t = user_updates
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.c.user_id, sa.func.max(t.c.log_id).label("upto"))
                    .where(t.c.date < older_than)
                    .group_by(t.c.user_id)
                    .limit(batch)
                )
            ).all()
            for r in rows:
                await conn.execute(t.delete().where(t.c.user_id == r.user_id, t.c.log_id <= r.upto))
        return len(rows)

    def start_retention(self, days: int, interval: float = 3600.0) -> None:
        """Trim entries older than ``days`` every ``interval`` seconds (0 days: never)."""
        if days <= 0:
            return

        async def loop() -> None:
            while True:
                try:
                    cutoff = int(time.time()) - days * 86400
                    while await self.trim(cutoff) == TRIM_BATCH:
                        await asyncio.sleep(0)
                    if self.channels is not None:
                        await self.channels.trim(cutoff)
                except Exception:
                    log.exception("trimming the update log failed")
                await asyncio.sleep(interval)

        self._retention = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            with suppress(asyncio.CancelledError):
                await self._retention
            self._retention = None

    # ------------------------------------------------------------------ reads
    async def get_state(self, user_id: int) -> UpdateState:
        """The committed state (never one a running transaction may still undo)."""
        async with self.engine.connect() as conn:
            return await self._read_state(conn, user_id)

    async def _read_state(self, conn: Any, user_id: int) -> UpdateState:
        t = user_update_state
        row = (
            await conn.execute(
                sa.select(t.c.pts, t.c.qts, t.c.seq, t.c.log_id, t.c.date).where(
                    t.c.user_id == user_id
                )
            )
        ).first()
        if row is None:
            return UpdateState(date=int(time.time()))
        return UpdateState(row.pts, row.qts, row.seq, row.log_id, row.date, stored=True)

    async def difference(
        self,
        user_id: int,
        pts: int,
        date: int,
        limit: int = DIFFERENCE_LIMIT,
        total_limit: int | None = None,
    ) -> Difference:
        """What a device at ``pts`` (and ``date``) has not seen, oldest first.

        The state is read before the entries, and only entries up to it are
        returned: an entry committed in between is left for the next call, never
        skipped.
        """
        t = user_updates
        async with self.engine.connect() as conn:
            state = await self._read_state(conn, user_id)
            gap = state.pts - pts
            if gap < 0 or gap > min(TOO_LONG_GAP, total_limit or TOO_LONG_GAP):
                return Difference([], state, too_long=True)
            rows = (
                await conn.execute(
                    sa.select(t.c.log_id, t.c.pts, t.c.pts_count, t.c.date, t.c.body)
                    .where(
                        t.c.user_id == user_id,
                        t.c.log_id <= state.log_id,
                        sa.or_(
                            t.c.pts > pts,
                            sa.and_(t.c.pts == pts, t.c.pts_count == 0, t.c.date >= date),
                        ),
                    )
                    .order_by(t.c.log_id)
                    .limit(limit + 1)
                )
            ).all()
        if rows and _starts_after_gap(rows[0], pts):
            # The entries right after the device's pts were trimmed (older than the
            # log keeps): it cannot be brought up to date one update at a time.
            return Difference([], state, too_long=True)
        partial = len(rows) > limit
        if partial:
            rows = rows[:limit]
            last = rows[-1]
            state = UpdateState(pts=last.pts, qts=state.qts, seq=state.seq, date=last.date)
        updates = [LoggedUpdate(r.pts, r.pts_count, r.date, decode(r.body)) for r in rows]
        return Difference(updates, state, partial=partial)


async def _insert_counters(tx: Tx, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """First rows of counters (one writer: no row was read): a duplicate key means
    another writer created the row meanwhile, and the operation must run again."""
    try:
        await tx.conn.execute(table.insert(), rows)
    except IntegrityError as exc:
        raise Conflict(f"{table.name}: first row written by another writer") from exc


def _starts_after_gap(first: Any, pts: int) -> bool:
    """Whether the first entry after ``pts`` does not follow it directly."""
    if first.pts_count:
        return first.pts - first.pts_count != pts
    return first.pts != pts


def state_tl(state: UpdateState, unread_count: int = 0) -> types.updates.State:
    return types.updates.State(
        pts=state.pts,
        qts=state.qts,
        date=state.date or int(time.time()),
        seq=state.seq,
        unread_count=unread_count,
    )
