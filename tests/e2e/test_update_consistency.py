"""Every device's view, built only from updates and getDifference, equals the server's boxes.

A seeded random run: three accounts on five devices send, edit, delete (for
themselves or both sides) and read, a few operations at a time so the server's
writer interleaves them, while devices drop offline and come back. Each device
keeps what a real client keeps, its pts and the messages it knows, and follows
Telegram's rules: an update with ``local_pts + pts_count == pts`` applies, an
older one is a duplicate, a newer one waits briefly for the missing ones
(updates may overtake an answer) and otherwise is a gap, which getDifference
fills. At the end every device must hold exactly its account's box, and no
device may have waited in vain for a missing update (a false gap).

``TEAMGRAM_TEST_SEED`` replays a run.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from teamgram.server import Server
from teamgram.testing import MTClient, public_keys
from teamgram.testing.mtclient import RpcErrorReply
from teamgram.tl import functions as fn
from teamgram.tl import types

SEED = int(os.environ.get("TEAMGRAM_TEST_SEED", "20261124"))
OPERATIONS = 300
IN_FLIGHT = 4
# How long an update that arrived ahead of a missing one waits before it is a gap
# (Telethon waits 0.5 s).
GAP_WAIT = 0.5

Entry = tuple[int, str, bool]  # peer user id, text, out


def _pts_of(update: Any) -> tuple[int, int] | None:
    pts = getattr(update, "pts", None)
    count = getattr(update, "pts_count", None)
    if isinstance(pts, int) and isinstance(count, int):
        return pts, count
    return None


class Device:
    def __init__(self, name: str, user_id: int, server: Server) -> None:
        self.name = name
        self.user_id = user_id
        self.server = server
        self.client: MTClient | None = None
        self.auth: Any = None
        self.pts = 0
        self.date = 0
        self.box: dict[int, Entry] = {}
        self.held: list[tuple[int, int, Any]] = []
        self.false_gaps = 0
        self.differences = 0
        self.was_offline = False
        self.busy = 0  # operations in flight on this device
        self._gap_timer: asyncio.TimerHandle | None = None
        self._diff_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------- connection
    async def connect(self) -> None:
        srv = self.server
        client = await MTClient.connect(
            "127.0.0.1", srv.gateway.tcp_ports[0], public_keys(srv.server_keys), auth=self.auth
        )
        client.on_update = self.on_update
        if self.auth is None:
            self.auth = client.auth
            assert client.auth is not None
            key_id = client.auth.auth_key_id
            await srv.authsession.bind_user(key_id, self.user_id)
            srv.session_host.bind_user(key_id, self.user_id)
        self.client = client
        if self.pts == 0:
            state = await client.invoke(fn.updates.GetState())
            self.pts, self.date = state.pts, state.date
        else:
            await self.difference()

    async def disconnect(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            self.was_offline = True
            await client.close()

    async def invoke(self, request: Any) -> Any:
        assert self.client is not None
        return await self.client.invoke(request)

    # -------------------------------------------------------------- updates
    def on_update(self, obj: Any) -> None:
        if isinstance(obj, types.Updates | types.UpdatesCombined):
            for u in obj.updates:
                self.incoming(u)
        elif isinstance(obj, types.UpdateShort):
            self.incoming(obj.update)
        elif isinstance(obj, types.UpdatesTooLong):
            self._spawn(self.difference())

    def incoming(self, update: Any) -> None:
        got = _pts_of(update)
        if got is None:
            return  # typing, reactions, drafts: not part of the box
        self.held.append((got[0], got[1], update))
        self._drain()

    def _drain(self) -> None:
        progress = True
        while progress and self.held:
            progress = False
            for item in sorted(self.held, key=lambda h: h[0]):
                pts, count, update = item
                if pts <= self.pts:
                    self.held.remove(item)  # already applied
                    progress = True
                elif self.pts + count == pts:
                    self.held.remove(item)
                    self.apply(update)
                    self.pts = pts
                    progress = True
        if self.held and self._gap_timer is None:
            self._gap_timer = asyncio.get_running_loop().call_later(GAP_WAIT, self._gap_expired)
        elif not self.held and self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    def _gap_expired(self) -> None:
        self._gap_timer = None
        if self.held:
            self.false_gaps += 1
            self._spawn(self.difference())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def apply(self, update: Any) -> None:
        if isinstance(update, types.UpdateNewMessage | types.UpdateEditMessage):
            self.apply_message(update.message)
        elif isinstance(update, types.UpdateDeleteMessages):
            for msg_id in update.messages:
                self.box.pop(msg_id, None)

    def apply_message(self, m: Any) -> None:
        if isinstance(m, types.Message | types.MessageService):
            text = m.message if isinstance(m, types.Message) else "<service>"
            self.box[m.id] = (m.peer_id.user_id, text, m.out)

    async def difference(self) -> None:
        async with self._diff_lock:
            while self.client is not None:
                self.differences += 1
                d = await self.invoke(fn.updates.GetDifference(pts=self.pts, date=self.date, qts=0))
                if isinstance(d, types.updates.DifferenceEmpty):
                    self.date = d.date
                    break
                assert not isinstance(d, types.updates.DifferenceTooLong), self.name
                for m in d.new_messages:
                    self.apply_message(m)
                for u in d.other_updates:
                    self.apply(u)
                state = (
                    d.intermediate_state
                    if isinstance(d, types.updates.DifferenceSlice)
                    else d.state
                )
                self.pts, self.date = state.pts, state.date
                if isinstance(d, types.updates.Difference):
                    break
            self._drain()

    async def settle(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _peer(server: Server, viewer: int, user_id: int) -> Any:
    if user_id == viewer:
        return types.InputPeerSelf()
    return types.InputPeerUser(
        user_id=user_id, access_hash=server.users.access_hash(viewer, user_id)
    )


async def _operation(rnd: random.Random, devices: list[Device], users: list[int], n: int) -> None:
    online = [d for d in devices if d.client is not None]
    dev = rnd.choice(online)
    dev.busy += 1
    try:
        await _act(rnd, dev, devices, online, users, n)
    finally:
        dev.busy -= 1


async def _act(
    rnd: random.Random,
    dev: Device,
    devices: list[Device],
    online: list[Device],
    users: list[int],
    n: int,
) -> None:
    server = dev.server
    roll = rnd.random()
    own = [(i, e) for i, e in dev.box.items() if e[1] != "<service>"]
    try:
        if roll < 0.5 or not own:
            to = rnd.choice(users)
            text = f"m{n} {dev.name}->{to}"
            sent = await dev.invoke(
                fn.messages.SendMessage(
                    peer=_peer(server, dev.user_id, to),
                    message=text,
                    random_id=rnd.getrandbits(62),
                )
            )
            dev.incoming(
                types.UpdateNewMessage(
                    message=types.Message(
                        id=sent.id,
                        peer_id=types.PeerUser(user_id=to),
                        date=sent.date,
                        message=text,
                        out=True,
                    ),
                    pts=sent.pts,
                    pts_count=sent.pts_count,
                )
            )
        elif roll < 0.65:
            mine = [(i, e) for i, e in own if e[2]]
            if not mine:
                return
            msg_id, (peer, _text, _out) = rnd.choice(mine)
            answer = await dev.invoke(
                fn.messages.EditMessage(
                    peer=_peer(server, dev.user_id, peer), id=msg_id, message=f"e{n}"
                )
            )
            dev.on_update(answer)
        elif roll < 0.8:
            chosen = rnd.sample(own, k=min(len(own), rnd.randint(1, 3)))
            ids = [i for i, _ in chosen]
            affected = await dev.invoke(
                fn.messages.DeleteMessages(id=ids, revoke=rnd.random() < 0.6)
            )
            if affected.pts_count:
                dev.incoming(
                    types.UpdateDeleteMessages(
                        messages=ids, pts=affected.pts, pts_count=affected.pts_count
                    )
                )
        elif roll < 0.92:
            peer = rnd.choice(users)
            affected = await dev.invoke(
                fn.messages.ReadHistory(peer=_peer(server, dev.user_id, peer), max_id=0)
            )
            if affected.pts_count:
                dev.incoming(
                    types.UpdateReadHistoryInbox(
                        peer=types.PeerUser(user_id=peer),
                        max_id=0,
                        still_unread_count=0,
                        pts=affected.pts,
                        pts_count=affected.pts_count,
                    )
                )
        else:
            offline = [d for d in devices if d.client is None and not d.busy]
            idle = [d for d in online if not d.busy and d.name != "a1"]  # a1 stays online
            if offline and rnd.random() < 0.6:
                target = rnd.choice(offline)
                target.busy += 1
                try:
                    await target.connect()
                finally:
                    target.busy -= 1
            elif len(online) > 2 and idle:
                await rnd.choice(idle).disconnect()
    except RpcErrorReply as exc:
        # Racing another device's delete or edit: Telegram's answers for that.
        assert exc.message in ("MESSAGE_ID_INVALID", "MESSAGE_NOT_MODIFIED"), exc


async def test_every_device_converges_to_the_server_boxes(
    start_server: Callable[..., Any],
) -> None:
    rnd = random.Random(SEED)
    overrides = {"messages": {"send_per_second": 10_000, "send_burst": 10_000}}
    async with start_server(**overrides) as srv:
        accounts = [await srv.users.create(f"1555030{i:04d}", f"U{i}") for i in range(3)]
        users = [u.id for u in accounts]
        devices = [
            Device("a1", users[0], srv),
            Device("a2", users[0], srv),
            Device("b1", users[1], srv),
            Device("b2", users[1], srv),
            Device("c1", users[2], srv),
        ]
        try:
            for d in devices:
                await d.connect()
            started = time.monotonic()
            n = 0
            while n < OPERATIONS:
                batch = [_operation(rnd, devices, users, n + i) for i in range(IN_FLIGHT)]
                n += IN_FLIGHT
                await asyncio.wait_for(asyncio.gather(*batch), 30)
            for d in devices:
                if d.client is None:
                    await d.connect()
            await asyncio.sleep(GAP_WAIT * 2)  # let the last pushes land
            for d in devices:
                await d.settle()
                await d.difference()
            elapsed = time.monotonic() - started
            for d in devices:
                recs, _ = await srv.msg.history(d.user_id, None, limit=1_000_000)
                truth = {
                    r.id: (r.peer_id, r.text if r.action is None else "<service>", r.out)
                    for r in recs
                }
                assert d.box == truth, f"{d.name} differs from the server (seed {SEED})"
                assert not d.held, d.name
                assert d.false_gaps == 0, f"{d.name} saw a false gap (seed {SEED})"
            assert elapsed < 60
        finally:
            for d in devices:
                await d.disconnect()


async def test_invoke_without_updates_sessions_get_none(server: Server) -> None:
    """A session that wrapped its calls in invokeWithoutUpdates gets no pushes; others do."""
    alice = await server.users.create("15550310001", "Alice")
    bob = await server.users.create("15550310002", "Bob")
    quiet = Device("quiet", bob.id, server)
    loud = Device("loud", bob.id, server)
    sender = Device("alice", alice.id, server)
    try:
        for d in (quiet, loud, sender):
            await d.connect()
        assert quiet.client is not None
        pushed: list[Any] = []
        quiet.client.on_update = pushed.append
        await quiet.invoke(fn.InvokeWithoutUpdates(query=fn.updates.GetState()))
        await sender.invoke(
            fn.messages.SendMessage(
                peer=_peer(server, alice.id, bob.id), message="psst", random_id=1
            )
        )
        deadline = time.monotonic() + 5
        while not loud.box and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert [e[1] for e in loud.box.values()] == ["psst"]
        await asyncio.sleep(0.3)
        assert pushed == []
        await quiet.difference()  # it catches up on request instead
        assert [e[1] for e in quiet.box.values()] == ["psst"]
    finally:
        for d in (quiet, loud, sender):
            await d.disconnect()


async def test_trimmed_update_log_gives_difference_too_long(server: Server) -> None:
    """Entries older than the log keeps are deleted; a device behind them starts over."""
    import sqlalchemy as sa

    from teamgram.messenger.sync.tables import user_updates

    alice = await server.users.create("15550320001", "Alice")
    bob = await server.users.create("15550320002", "Bob")
    sender = Device("alice", alice.id, server)
    reader = Device("bob", bob.id, server)
    try:
        await sender.connect()
        await reader.connect()
        start = reader.pts
        for i in range(5):
            await sender.invoke(
                fn.messages.SendMessage(
                    peer=_peer(server, alice.id, bob.id), message=f"m{i}", random_id=100 + i
                )
            )
        long_ago = int(time.time()) - 60 * 86400
        assert server.engine is not None
        async with server.engine.begin() as conn:
            await conn.execute(
                user_updates.update()
                .where(user_updates.c.user_id == bob.id, user_updates.c.pts <= start + 3)
                .values(date=long_ago)
            )
        assert await server.sync.trim(int(time.time()) - 30 * 86400) == 1
        diff = await reader.invoke(fn.updates.GetDifference(pts=start, date=0, qts=0))
        assert isinstance(diff, types.updates.DifferenceTooLong) and diff.pts == start + 5
        diff = await reader.invoke(fn.updates.GetDifference(pts=start + 2, date=0, qts=0))
        assert isinstance(diff, types.updates.DifferenceTooLong)
        diff = await reader.invoke(fn.updates.GetDifference(pts=start + 3, date=0, qts=0))
        assert [m.message for m in diff.new_messages] == ["m3", "m4"]
        async with server.engine.connect() as conn:
            left = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(user_updates)
                    .where(user_updates.c.user_id == bob.id)
                )
            ).scalar_one()
        assert left == 2
    finally:
        await sender.disconnect()
        await reader.disconnect()
