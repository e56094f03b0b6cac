"""Several writers on one database (#9): counters stay unique, gap-free and in commit order.

Two independent stacks (each its own engine, GroupCommit, SyncService, MsgService,
ChannelSync and ChannelMessages, all ``shared=True``) write the same MariaDB or
PostgreSQL database at once, as two edge processes of a cluster do: private
messages both ways between the same users, posts into one channel, reads,
drafts, then edits and revoking deletes. Checked afterwards, per user: the update
log's pts are 1..N without gap or repeat, every box's ids are 1..last, a
getDifference from the start returns every message once; per channel the same;
a random_id sent through both stacks stores one message. Checked during the
run by pollers: no reader ever sees an entry whose predecessor is not committed
yet (a gap that would fill later), through getDifference and on the raw log.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.infra.database import open_database
from teamgram.infra.group_commit import GroupCommit, Tx
from teamgram.messenger.msg.channel import ChannelMessages, SentChannel
from teamgram.messenger.msg.service import MsgService, NewMessage, Sent
from teamgram.messenger.msg.tables import channel_boxes, channel_messages, message_boxes, messages
from teamgram.messenger.sync.channel import INITIAL_CHANNEL_PTS, ChannelSync
from teamgram.messenger.sync.service import INITIAL_PTS, USER_LOCK, SyncService
from teamgram.messenger.sync.tables import (
    channel_update_state,
    channel_updates,
    user_update_state,
    user_updates,
)
from teamgram.service.biz.dialog import DialogService
from teamgram.service.biz.peers import PEER_USER
from teamgram.service.idgen.service import IdGenService
from teamgram.tl import types
from tests.integration.conftest import check_reachable

pytestmark = pytest.mark.timeout(180)

USERS = [1001, 1002, 1003, 1004]
CHANNEL = 5_000_001
PRIVATE = 400
POSTS = 200
DUPLICATES = (
    20  # random_ids sent through both stacks at once (private; half as many in the channel)
)
IN_FLIGHT = 24  # requests outstanding per stack


@pytest.fixture(scope="module", params=["mariadb", "postgresql"])
def engine_name(request: pytest.FixtureRequest) -> str:
    """Only the server engines: several processes never share one SQLite file here."""
    name: str = request.param
    check_reachable(name)
    return name


@dataclass
class Stack:
    """What one edge process builds of msg and sync (server.py's graph, biz hooks faked)."""

    engine: AsyncEngine
    writer: GroupCommit
    sync: SyncService
    msg: MsgService
    channel_sync: ChannelSync
    channels: ChannelMessages
    pushes: list[tuple[int, Any]] = field(default_factory=list)

    async def close(self) -> None:
        await self.writer.stop()
        await self.engine.dispose()


async def _stack(url: str) -> Stack:
    engine = await open_database(url)
    writer = GroupCommit(engine, shared=True)
    pushes: list[tuple[int, Any]] = []
    sync = SyncService(engine, lambda user, upd, _key: pushes.append((user, upd)), shared=True)
    dialogs = DialogService(engine)
    msg = MsgService(engine, writer, sync, dialogs, shared=True)
    channel_sync = ChannelSync(engine, shared=True)
    sync.channels = channel_sync
    channels = ChannelMessages(engine, writer, sync, channel_sync, dialogs, shared=True)
    writer.start()
    return Stack(engine, writer, sync, msg, channel_sync, channels, pushes)


@pytest.fixture
async def stacks(new_database: Callable[[], str]) -> AsyncIterator[list[Stack]]:
    url = new_database()
    built = [await _stack(url), await _stack(url)]
    try:
        yield built
    finally:
        for s in built:
            await s.close()


async def _bounded(jobs: list[tuple[int, Callable[[], Awaitable[Any]]]]) -> list[Any]:
    """Run (stack index, job) pairs, at most IN_FLIGHT per stack at a time, all at once."""
    gates = [asyncio.Semaphore(IN_FLIGHT), asyncio.Semaphore(IN_FLIGHT)]

    async def one(k: int, job: Callable[[], Awaitable[Any]]) -> Any:
        async with gates[k]:
            return await job()

    return await asyncio.wait_for(asyncio.gather(*(one(k, j) for k, j in jobs)), 120)


# ------------------------------------------------------------------ pollers
@dataclass
class Pollers:
    """Readers that run during the writes and fail on any gap they see."""

    stacks: list[Stack]
    users: list[int]
    channel: int | None
    problems: list[str] = field(default_factory=list)
    # Per user: the (pts, pts_count) of every pts-advancing entry getDifference returned.
    seen: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    channel_seen: list[tuple[int, int]] = field(default_factory=list)
    polls: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._difference()), loop.create_task(self._raw())]
        if self.channel is not None:
            self._tasks.append(loop.create_task(self._channel()))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 30)
        for u in self.users:  # the rest, after the writes
            await self._difference_once(0, u)
        if self.channel is not None:
            await self._channel_once(0)

    async def _difference(self) -> None:
        n = 0
        while not self._stop.is_set():
            for u in self.users:
                await self._difference_once(n % 2, u)
                n += 1
            await asyncio.sleep(0.003)

    async def _difference_once(self, k: int, user: int) -> None:
        """getDifference from where this reader is, until it has everything committed."""
        got = self.seen.setdefault(user, [])
        while True:
            cursor = got[-1][0] if got else INITIAL_PTS
            diff = await self.stacks[k].sync.difference(user, cursor, 0)
            self.polls += 1
            if diff.too_long:
                self.problems.append(f"user {user}: differenceTooLong from pts {cursor}")
                return
            for e in diff.updates:
                if not e.pts_count:
                    continue
                if e.pts - e.pts_count != cursor:
                    self.problems.append(
                        f"user {user}: getDifference from {cursor} gave pts {e.pts} "
                        f"(count {e.pts_count}): a gap"
                    )
                got.append((e.pts, e.pts_count))
                cursor = e.pts
            if diff.state.pts != cursor:
                self.problems.append(
                    f"user {user}: state pts {diff.state.pts}, entries to {cursor}"
                )
            if not diff.partial:
                return

    async def _raw(self) -> None:
        """The log itself, read with one statement: ids must be contiguous from the cursor."""
        cursor = dict.fromkeys(self.users, 0)
        n = 0
        t = user_updates
        while not self._stop.is_set():
            k = n % 2
            n += 1
            async with self.stacks[k].engine.connect() as conn:
                for u in self.users:
                    ids = (
                        await conn.scalars(
                            sa.select(t.c.log_id)
                            .where(t.c.user_id == u, t.c.log_id > cursor[u])
                            .order_by(t.c.log_id)
                        )
                    ).all()
                    want = list(range(cursor[u] + 1, cursor[u] + 1 + len(ids)))
                    if list(ids) != want:
                        self.problems.append(f"user {u}: log after {cursor[u]} reads {ids[:5]}...")
                    if ids:
                        cursor[u] = ids[-1]
            await asyncio.sleep(0.002)

    async def _channel(self) -> None:
        n = 0
        while not self._stop.is_set():
            await self._channel_once(n % 2)
            n += 1
            await asyncio.sleep(0.003)

    async def _channel_once(self, k: int) -> None:
        assert self.channel is not None
        got = self.channel_seen
        while True:
            cursor = got[-1][0] if got else INITIAL_CHANNEL_PTS
            diff = await self.stacks[k].channel_sync.difference(self.channel, cursor, 100)
            if diff.too_long:
                self.problems.append(f"channel: too long from {cursor}")
                return
            for pts, count, _upd in diff.entries:
                if pts - count != cursor:
                    self.problems.append(f"channel: from {cursor} came pts {pts}: a gap")
                got.append((pts, count))
                cursor = pts
            # Raw: everything committed after the cursor is contiguous.
            t = channel_updates
            async with self.stacks[1 - k].engine.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(t.c.pts, t.c.pts_count)
                        .where(t.c.channel_id == self.channel, t.c.pts > cursor)
                        .order_by(t.c.pts)
                    )
                ).all()
            at = cursor
            for r in rows:
                if r.pts - r.pts_count != at:
                    self.problems.append(f"channel: after {cursor} the log reads {r.pts}: a gap")
                    break
                at = r.pts
            if diff.final:
                return


# ------------------------------------------------------------------ checks
async def _check_user_logs(engine: AsyncEngine, users: list[int]) -> dict[int, int]:
    """Each user's log: log ids 1..L, pts advancing by exactly pts_count from INITIAL_PTS,
    the state row at the end of it. Returns the final pts per user."""
    final: dict[int, int] = {}
    async with engine.connect() as conn:
        for u in users:
            rows = (
                await conn.execute(
                    sa.select(user_updates.c.log_id, user_updates.c.pts, user_updates.c.pts_count)
                    .where(user_updates.c.user_id == u)
                    .order_by(user_updates.c.log_id)
                )
            ).all()
            assert [r.log_id for r in rows] == list(range(1, len(rows) + 1)), u
            pts = INITIAL_PTS
            for r in rows:
                assert r.pts == pts + r.pts_count, (u, r)
                pts = r.pts
            st = (
                await conn.execute(
                    sa.select(user_update_state).where(user_update_state.c.user_id == u)
                )
            ).one()
            assert (st.pts, st.log_id) == (pts, len(rows)), u
            final[u] = pts
    return final


async def _check_boxes(engine: AsyncEngine, users: list[int]) -> dict[int, list[int]]:
    """Each box: ids unique and 1..last_id (nothing deleted yet), one pts per copy."""
    boxes: dict[int, list[int]] = {}
    async with engine.connect() as conn:
        for u in users:
            rows = (
                await conn.execute(
                    sa.select(messages.c.id, messages.c.pts)
                    .where(messages.c.user_id == u)
                    .order_by(messages.c.id)
                )
            ).all()
            last = (
                await conn.scalar(
                    sa.select(message_boxes.c.last_id).where(message_boxes.c.user_id == u)
                )
            ) or 0
            ids = [r.id for r in rows]
            assert ids == list(range(1, last + 1)), (u, last, len(ids))
            assert len({r.pts for r in rows}) == len(rows), u
            boxes[u] = ids
    return boxes


async def _difference_ids(sync: SyncService, user: int) -> list[int]:
    """getDifference from the very start, slice after slice: the new messages' ids."""
    ids: list[int] = []
    pts = INITIAL_PTS
    while True:
        diff = await sync.difference(user, pts, 0)
        assert not diff.too_long
        ids += [
            e.update.message.id
            for e in diff.updates
            if isinstance(e.update, types.UpdateNewMessage)
        ]
        pts = diff.state.pts
        if not diff.partial:
            return ids


def _check_push_order(stack: Stack) -> None:
    """One stack's pushes to a user carry rising pts (commit order, per process)."""
    last: dict[int, int] = {}
    for user, upd in stack.pushes:
        for u in upd.updates:
            if getattr(u, "pts_count", 0) and isinstance(u, types.UpdateNewMessage):
                assert u.pts > last.get(user, 0), (user, u.pts, last.get(user))
                last[user] = u.pts


# ------------------------------------------------------------------- tests
async def test_two_writers_keep_counters_gap_free_and_in_order(stacks: list[Stack]) -> None:
    rng = random.Random(9)
    one, two = stacks
    polls = Pollers(stacks, USERS, CHANNEL)
    polls.start()
    jobs: list[tuple[int, Callable[[], Awaitable[Any]]]] = []

    def send(k: int, sender: int, to: int, text: str, random_id: int) -> None:
        jobs.append(
            (
                k,
                lambda: stacks[k].msg.send(
                    sender, (PEER_USER, to), [NewMessage(text=text, random_id=random_id)], {}, None
                ),
            )
        )

    def post(k: int, sender: int, text: str, random_id: int) -> None:
        jobs.append(
            (
                k,
                lambda: stacks[k].channels.send(
                    sender, CHANNEL, False, [NewMessage(text=text, random_id=random_id)], {}, None
                ),
            )
        )

    for i in range(PRIVATE):
        sender, to = rng.sample(USERS, 2)
        send(i % 2, sender, to, f"m{i}", 1_000_000 + i)
    for i in range(POSTS):
        post(i % 2, rng.choice(USERS), f"c{i}", 2_000_000 + i)
    dup_private = [(*rng.sample(USERS, 2), 3_000_000 + i) for i in range(DUPLICATES)]
    for sender, to, rid in dup_private:
        send(0, sender, to, f"d{rid}", rid)
        send(1, sender, to, f"d{rid}", rid)
    dup_posts = [(rng.choice(USERS), 4_000_000 + i) for i in range(DUPLICATES // 2)]
    for sender, rid in dup_posts:
        post(0, sender, f"e{rid}", rid)
        post(1, sender, f"e{rid}", rid)
    for i in range(40):  # reads lock the reader and, for the receipt, the other user
        reader, peer = rng.sample(USERS, 2)
        jobs.append(
            (
                i % 2,
                lambda k=i % 2, r=reader, p=peer: stacks[k].msg.read_history(
                    r, (PEER_USER, p), 0, None
                ),
            )
        )
    for i in range(20):  # drafts: entries without pts in the middle of the log
        user, peer = rng.sample(USERS, 2)
        draft = types.DraftMessage(message=f"draft {i}", date=0)
        jobs.append(
            (
                i % 2,
                lambda k=i % 2, u=user, p=peer, d=draft: stacks[k].msg.save_draft(
                    u, (PEER_USER, p), d, None
                ),
            )
        )
    rng.shuffle(jobs)

    results = await _bounded(jobs)
    await polls.stop()
    assert polls.problems == []

    # random_id through both stacks: one message, both answers name it.
    sent = [r for r in results if isinstance(r, list) and r and isinstance(r[0], Sent)]
    by_random: dict[int, list[Sent]] = {}
    for r in sent:
        by_random.setdefault(r[0].record.random_id or 0, []).append(r[0])
    for _sender, _to, rid in dup_private:
        a, b = by_random[rid]
        assert a.record.id == b.record.id and a.pts == b.pts
        assert sorted([a.duplicate, b.duplicate]) == [False, True]
    posted = [r for r in results if isinstance(r, list) and r and isinstance(r[0], SentChannel)]
    by_post: dict[int, list[SentChannel]] = {}
    for r in posted:
        by_post.setdefault(r[0].record.random_id or 0, []).append(r[0])
    for _sender, rid in dup_posts:
        a2, b2 = by_post[rid]
        assert a2.record.id == b2.record.id and sorted([a2.duplicate, b2.duplicate]) == [
            False,
            True,
        ]
    async with one.engine.connect() as conn:
        for sender, _to, rid in dup_private:
            n = await conn.scalar(
                sa.select(sa.func.count()).where(
                    messages.c.user_id == sender, messages.c.random_id == rid
                )
            )
            assert n == 1
        stored_posts = await conn.scalar(
            sa.select(sa.func.count()).where(channel_messages.c.channel_id == CHANNEL)
        )
    assert stored_posts == POSTS + len(dup_posts)

    # Per user: the log is 1..N; boxes are 1..last; the copies add up.
    final = await _check_user_logs(two.engine, USERS)
    boxes = await _check_boxes(one.engine, USERS)
    assert sum(len(ids) for ids in boxes.values()) == 2 * (PRIVATE + DUPLICATES)
    for u in USERS:
        # getDifference from the start returns every message of the box exactly once.
        got = await _difference_ids(stacks[u % 2].sync, u)
        assert sorted(got) == boxes[u] and len(got) == len(set(got)), u
        # The pollers saw the same pts-advancing entries the log holds, in order.
        seen = polls.seen[u]
        assert seen and seen[-1][0] == final[u], u
        assert [p for p, _ in seen] == sorted({p for p, _ in seen}), u

    # The channel: pts 2..N+1, ids 1..N, getChannelDifference returns every post once.
    async with one.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(channel_updates.c.pts, channel_updates.c.pts_count)
                .where(channel_updates.c.channel_id == CHANNEL)
                .order_by(channel_updates.c.pts)
            )
        ).all()
        ids = (
            await conn.scalars(
                sa.select(channel_messages.c.id)
                .where(channel_messages.c.channel_id == CHANNEL)
                .order_by(channel_messages.c.id)
            )
        ).all()
        last = await conn.scalar(
            sa.select(channel_boxes.c.last_id).where(channel_boxes.c.channel_id == CHANNEL)
        )
        state_pts = await conn.scalar(
            sa.select(channel_update_state.c.pts).where(
                channel_update_state.c.channel_id == CHANNEL
            )
        )
    assert [r.pts for r in rows] == list(
        range(INITIAL_CHANNEL_PTS + 1, INITIAL_CHANNEL_PTS + 1 + stored_posts)
    )
    assert list(ids) == list(range(1, stored_posts + 1)) and last == stored_posts
    assert state_pts == INITIAL_CHANNEL_PTS + stored_posts
    assert [p for p, _ in polls.channel_seen] == [r.pts for r in rows]
    diff_ids: list[int] = []
    pts = INITIAL_CHANNEL_PTS
    while True:
        diff, new, _other, _recs = await two.channels.difference(USERS[0], CHANNEL, False, pts, 100)
        diff_ids += [m.id for m in new]
        pts = diff.pts
        if diff.final:
            break
    assert sorted(diff_ids) == list(ids) and len(diff_ids) == len(set(diff_ids))

    for s in stacks:
        _check_push_order(s)
    print(  # shown with -s: how often the writers collided
        f"retries: {one.writer.retries} + {two.writer.retries}; "
        f"batches {one.writer.batches} + {two.writer.batches}; polls {polls.polls}"
    )

    # Edits and revoking deletes from both stacks at once: logs stay gap-free.
    jobs = []
    for i in range(60):
        u = rng.choice(USERS)
        mine = rng.sample(boxes[u], 3)
        k = i % 2
        if i % 3:
            jobs.append((k, lambda k=k, u=u, ids=mine: stacks[k].msg.delete(u, ids, True, None)))
        else:
            jobs.append((k, lambda k=k, u=u, m=mine[0], n=i: _edit(stacks[k].msg, u, m, n)))
    for i in range(20):
        k = i % 2
        jobs.append(
            (
                k,
                lambda k=k, i=i: stacks[k].channels.delete(
                    USERS[0], CHANNEL, [i + 1], True, {}, None
                ),
            )
        )
    polls2 = Pollers(stacks, USERS, CHANNEL, seen=polls.seen, channel_seen=polls.channel_seen)
    polls2.start()
    await _bounded(jobs)
    await polls2.stop()
    assert polls2.problems == []
    await _check_user_logs(one.engine, USERS)
    async with two.engine.connect() as conn:
        left = await conn.scalar(
            sa.select(sa.func.count()).where(channel_messages.c.channel_id == CHANNEL)
        )
    assert left == stored_posts - 20


async def _edit(msg: MsgService, user: int, msg_id: int, n: int) -> Any:
    rec = (await msg.get(user, [msg_id])).get(msg_id)
    if rec is None or not rec.out:
        return None  # deleted meanwhile, or not the user's to edit
    try:
        return await msg.edit(user, rec.peer, msg_id, f"edited {n}", None, {}, None)
    except RpcError as exc:
        assert exc.message == "MESSAGE_ID_INVALID"  # deleted by the other side meanwhile
        return None


async def test_first_rows_of_new_users_race(stacks: list[Stack]) -> None:
    """Two writers create the same users' first state and box rows at once: both
    messages land, nothing fails on a duplicate key."""
    pairs = [(2_000 + 2 * i, 2_001 + 2 * i) for i in range(60)]
    jobs: list[tuple[int, Callable[[], Awaitable[Any]]]] = []
    for a, b in pairs:
        jobs.append(
            (
                0,
                lambda a=a, b=b: stacks[0].msg.send(
                    a, (PEER_USER, b), [NewMessage(text="hi")], {}, None
                ),
            )
        )
        jobs.append(
            (
                1,
                lambda a=a, b=b: stacks[1].msg.send(
                    b, (PEER_USER, a), [NewMessage(text="hi")], {}, None
                ),
            )
        )
    for i in range(20):  # new channels too
        cid = 6_000_000 + i
        for k in (0, 1):
            jobs.append(
                (
                    k,
                    lambda k=k, c=cid: stacks[k].channels.send(
                        7, c, True, [NewMessage(text="p")], {}, None
                    ),
                )
            )
    await _bounded(jobs)
    users = [u for pair in pairs for u in pair]
    final = await _check_user_logs(stacks[0].engine, users)
    assert set(final.values()) == {INITIAL_PTS + 2}
    boxes = await _check_boxes(stacks[1].engine, users)
    assert all(ids == [1, 2] for ids in boxes.values())
    async with stacks[0].engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(channel_boxes.c.channel_id, channel_boxes.c.last_id).where(
                    channel_boxes.c.channel_id >= 6_000_000
                )
            )
        ).all()
    assert sorted(r.last_id for r in rows) == [2] * 20


async def test_idgen_blocks_are_unique_across_processes(stacks: list[Stack]) -> None:
    """Ids from two idgen instances (small blocks, a new sequence raced) never repeat."""
    gens = [IdGenService(s.engine, block=7) for s in stacks]
    ids = await asyncio.wait_for(
        asyncio.gather(*(gens[i % 2].next_id("shared_test", 10) for i in range(600))), 60
    )
    assert len(set(ids)) == 600 and min(ids) >= 10


async def test_a_deadlock_is_run_again_and_its_effects_happen_once(stacks: list[Stack]) -> None:
    """Locks taken late, in opposite orders by the two writers: the database picks a
    victim, whose writer runs the whole operation again; the failed attempt leaves
    nothing behind and after-commit effects run once per operation."""
    a, b = 7_001, 7_002
    holding = [asyncio.Event(), asyncio.Event()]
    attempts = [0, 0]
    effects: list[int] = []

    def op(k: int, first: int, second: int) -> Callable[[Tx], Awaitable[int]]:
        async def fn(tx: Tx) -> int:
            attempts[k] += 1
            await tx.lock(USER_LOCK, [first])  # not declared: taken here, in this order
            if attempts[k] == 1:
                holding[k].set()
                await asyncio.wait_for(holding[1 - k].wait(), 10)
            await tx.lock(USER_LOCK, [second])
            for user in (first, second):
                upd = types.UpdateReadHistoryInbox(
                    peer=types.PeerUser(user_id=user),
                    max_id=0,
                    still_unread_count=0,
                    pts=0,
                    pts_count=1,
                )
                await stacks[k].sync.append(tx, user, upd)
            tx.after_commit(lambda: effects.append(k))
            return k

        return fn

    done = await asyncio.wait_for(
        asyncio.gather(stacks[0].writer.run(op(0, a, b)), stacks[1].writer.run(op(1, b, a))), 60
    )
    await asyncio.sleep(0)
    assert done == [0, 1] and sorted(effects) == [0, 1]
    assert sum(s.writer.retries for s in stacks) >= 1 and sorted(attempts) == [1, 2]
    final = await _check_user_logs(stacks[0].engine, [a, b])
    assert final == {a: INITIAL_PTS + 2, b: INITIAL_PTS + 2}
