"""Private messaging, accepted through Telethon: a real client over a real socket.

Alice uses two devices (two clients, two auth keys), Bob one. What one device
does must reach every other device of both users live, through Telethon's event
API (which applies pts the way every Telegram client does), and what a device
missed while away must come back through ``updates.getDifference``.

Every check that a device did *not* get something looks at what the server
pushed to it (:class:`Seen.pushed`, taken from the client's update queue before
Telethon's own de-duplication), not only at the events Telethon dispatched.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from telethon import TelegramClient, errors, events, functions
from telethon.errors.rpcerrorlist import rpc_errors_dict
from telethon.network.connection import ConnectionTcpFull
from telethon.tl import types as tt
from telethon.tl.custom.message import Message

from teamgram.server import Server
from teamgram.service.biz.users import UserRecord
from tests.e2e.accounts import another_device, signed_in, wait_for

Factory = Callable[..., Awaitable[TelegramClient]]

# Enough sends for the bulk tests without meeting the default flood limit.
NO_FLOOD = {"messages": {"send_per_second": 1000, "send_burst": 1000}}
# After the last expected update: how long a stray duplicate gets to show up.
SETTLE = 0.25


# ------------------------------------------------------------------ helpers
def _flatten(obj: Any) -> list[Any]:
    """The single updates inside an ``Updates``-like object the server pushed."""
    if isinstance(obj, tt.Updates | tt.UpdatesCombined):
        return list(obj.updates)
    if isinstance(obj, tt.UpdateShort):
        return [obj.update]
    if isinstance(obj, tt.UpdatesTooLong):
        return []  # what client.catch_up() queues itself
    return [obj]  # updateShortMessage and friends


@dataclass(repr=False)
class Seen:
    """What one client got: Telethon events, and every update the server pushed to it."""

    client: TelegramClient
    new: list[Message] = field(default_factory=list)
    edited: list[Message] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    read: list[tuple[bool, int]] = field(default_factory=list)  # (outbox, max_id)
    raw: list[Any] = field(default_factory=list)
    pushed: list[Any] = field(default_factory=list)
    # The type of every getDifference answer: a device that applies live updates
    # without a gap never asks (so a wrong pts or pts_count shows up here).
    diffs: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        return [m.raw_text for m in self.new]

    def __repr__(self) -> str:
        return (
            f"Seen(new={[(m.id, m.raw_text, m.out) for m in self.new]}, "
            f"edited={[(m.id, m.raw_text) for m in self.edited]}, deleted={self.deleted}, "
            f"read={self.read}, raw={[type(u).__name__ for u in self.raw]}, "
            f"pushed={[type(u).__name__ for u in self.pushed]})"
        )

    def raw_of(self, kind: type) -> list[Any]:
        return [u for u in self.raw if isinstance(u, kind)]

    def pushed_new_ids(self) -> list[int]:
        out: list[int] = []
        for u in self.pushed:
            if isinstance(u, tt.UpdateNewMessage):
                out.append(u.message.id)
            elif isinstance(u, tt.UpdateShortMessage):
                out.append(u.id)
        return out

    def pushed_of(self, kind: type) -> list[Any]:
        return [u for u in self.pushed if isinstance(u, kind)]


def spy_differences(client: TelegramClient) -> list[str]:
    """The type of every updates.getDifference answer ``client`` gets, in order."""
    diffs: list[str] = []
    call = client._call

    async def spy(sender: Any, request: Any, ordered: bool = False, **kw: Any) -> Any:
        res = await call(sender, request, ordered=ordered, **kw)
        if isinstance(request, functions.updates.GetDifferenceRequest):
            diffs.append(type(res).__name__)
        return res

    setattr(client, "_call", spy)  # noqa: B010
    return diffs


def watch(client: TelegramClient) -> Seen:
    seen = Seen(client)

    async def on_new(e: events.NewMessage.Event) -> None:
        seen.new.append(e.message)

    async def on_edit(e: events.MessageEdited.Event) -> None:
        seen.edited.append(e.message)

    async def on_delete(e: events.MessageDeleted.Event) -> None:
        seen.deleted.extend(e.deleted_ids)

    async def on_read(e: events.MessageRead.Event) -> None:
        seen.read.append((bool(e.outbox), int(e.max_id)))

    async def on_raw(u: Any) -> None:
        seen.raw.append(u)

    client.add_event_handler(on_new, events.NewMessage())
    client.add_event_handler(on_edit, events.MessageEdited())
    client.add_event_handler(on_delete, events.MessageDeleted())
    # MessageRead() alone is outbox reads only.
    client.add_event_handler(on_read, events.MessageRead(inbox=False))
    client.add_event_handler(on_read, events.MessageRead(inbox=True))
    client.add_event_handler(on_raw, events.Raw())

    # Spy on the queue the network layer fills: answers to the client's own
    # requests are flagged ``_self_outgoing``; everything else was pushed.
    queue = client._updates_queue
    put = queue.put_nowait

    def spy(obj: Any) -> None:
        if not getattr(obj, "_self_outgoing", False):
            seen.pushed.extend(_flatten(obj))
        put(obj)

    setattr(queue, "put_nowait", spy)  # noqa: B010 (an instance attribute, on purpose)
    seen.diffs = spy_differences(client)
    return seen


async def contact(client: TelegramClient, user: UserRecord) -> tt.User:
    """``user`` as ``client`` sees it (with its access hash), by importing the phone."""
    res = await client(
        functions.contacts.ImportContactsRequest(
            [tt.InputPhoneContact(random.getrandbits(31), user.phone, user.first_name, "")]
        )
    )
    found = [u for u in res.users if u.id == user.id]
    assert found, f"user {user.id} not found by phone"
    return found[0]


async def pts(client: TelegramClient) -> int:
    return int((await client(functions.updates.GetStateRequest())).pts)


async def settle(*clients: TelegramClient) -> None:
    """A round trip on each client, then a short pause: pushes sent before have arrived."""
    await asyncio.gather(*(c(functions.updates.GetStateRequest()) for c in clients))
    await asyncio.sleep(SETTLE)


async def history(client: TelegramClient, peer: Any, limit: int = 100) -> list[tuple[int, str]]:
    """(id, text) of the dialog, newest first (service messages have text '')."""
    msgs = await client.get_messages(peer, limit=limit)
    return [(m.id, m.raw_text or "") for m in msgs]


@dataclass
class DialogRow:
    peer_id: int
    top_text: str
    top_id: int
    unread_count: int
    pinned: bool
    unread_mark: bool
    read_inbox_max_id: int
    read_outbox_max_id: int
    draft: str


async def dialog_rows(client: TelegramClient) -> list[DialogRow]:
    out: list[DialogRow] = []
    for d in await client.get_dialogs():
        raw = d.dialog
        out.append(
            DialogRow(
                peer_id=d.id,
                top_text=(d.message.raw_text or "") if d.message else "",
                top_id=raw.top_message,
                unread_count=d.unread_count,
                pinned=bool(d.pinned),
                unread_mark=bool(raw.unread_mark),
                read_inbox_max_id=raw.read_inbox_max_id,
                read_outbox_max_id=raw.read_outbox_max_id,
                draft=d.draft.raw_text or "",
            )
        )
    return out


def by_peer(rows: list[DialogRow], peer_id: int) -> DialogRow:
    found = [r for r in rows if r.peer_id == peer_id]
    assert len(found) == 1, f"dialog {peer_id}: {rows}"
    return found[0]


def send_req(peer: Any, text: str, **kw: Any) -> functions.messages.SendMessageRequest:
    return functions.messages.SendMessageRequest(
        peer=peer, message=text, random_id=random.getrandbits(63), **kw
    )


async def send_many(
    client: TelegramClient, peer: Any, texts: list[str], batch: int = 50
) -> list[tuple[int, str]]:
    """Send with raw requests, ``batch`` at a time; (box id, text) sorted by id."""
    out: list[tuple[int, str]] = []
    for i in range(0, len(texts), batch):
        part = texts[i : i + batch]
        answers = await asyncio.gather(*(client(send_req(peer, t)) for t in part))
        for a, t in zip(answers, part, strict=True):
            assert isinstance(a, tt.UpdateShortSentMessage), a
            out.append((a.id, t))
    return sorted(out)


@dataclass(repr=False)
class Chat:
    """Alice on two devices, Bob on one; each knows the other's access hash."""

    a1: TelegramClient
    a2: TelegramClient
    b: TelegramClient
    ua: UserRecord
    ub: UserRecord
    bob: tt.User  # as Alice sees him
    alice: tt.User  # as Bob sees her
    sa1: Seen
    sa2: Seen
    sb: Seen

    def __repr__(self) -> str:
        return f"\n a1: {self.sa1!r}\n a2: {self.sa2!r}\n b:  {self.sb!r}"

    def gaps(self) -> dict[str, list[str]]:
        """getDifference answers each device needed (live updates should leave none)."""
        return {"a1": self.sa1.diffs, "a2": self.sa2.diffs, "b": self.sb.diffs}


async def chat(server: Server, telethon_for: Factory, **client_kwargs: Any) -> Chat:
    a1, ua = await signed_in(server, telethon_for, "Alice", **client_kwargs)
    b, ub = await signed_in(server, telethon_for, "Bob", **client_kwargs)
    a2 = await another_device(server, telethon_for, ua.id, **client_kwargs)
    bob = await contact(a1, ub)
    alice = await contact(b, ua)
    return Chat(a1, a2, b, ua, ub, bob, alice, watch(a1), watch(a2), watch(b))


_ERROR_NAMES: dict[type, str] = {cls: name for name, cls in rpc_errors_dict.items()}


def error_name(e: errors.RPCError) -> str:
    """The server's error name: Telethon turns known ones into classes and drops it."""
    if isinstance(e, errors.FloodWaitError):
        return f"FLOOD_WAIT_{e.seconds}"
    return _ERROR_NAMES.get(type(e), str(e.message))


def rpc_error(exc: pytest.ExceptionInfo[errors.RPCError]) -> str:
    return error_name(exc.value)


async def until(predicate: Callable[[], Any], *show: Any, timeout: float = 5.0) -> None:
    """``wait_for``, failing with what was seen instead (``show``: Seen objects or callables)."""
    try:
        await wait_for(predicate, timeout)
    except AssertionError:
        parts = [s() if callable(s) else s for s in show]
        raise AssertionError(f"condition not met in time; seen: {parts!r}") from None


# --------------------------------------------------------- 1. live, devices
async def test_live_updates_reach_every_device(server: Server, telethon_for: Factory) -> None:
    c = await chat(server, telethon_for)

    # Alice's first device -> Bob: Bob gets it incoming, her second device outgoing.
    m1 = await c.a1.send_message(c.bob, "hello from a1")
    await until(lambda: c.sb.texts() == ["hello from a1"] and c.sa2.texts() == ["hello from a1"], c)
    b_m1 = c.sb.new[0]
    assert not b_m1.out and b_m1.sender_id == c.ua.id and b_m1.chat_id == c.ua.id
    a2_m1 = c.sa2.new[0]
    assert a2_m1.out and a2_m1.id == m1.id and a2_m1.chat_id == c.ub.id

    # Bob -> Alice: both of her devices, the same box id.
    r = await c.b.send_message(c.alice, "hi from b")
    await until(lambda: "hi from b" in c.sa1.texts() and "hi from b" in c.sa2.texts(), c)
    a1_r = next(m for m in c.sa1.new if m.raw_text == "hi from b")
    a2_r = next(m for m in c.sa2.new if m.raw_text == "hi from b")
    assert a1_r.id == a2_r.id and not a1_r.out and a1_r.sender_id == c.ub.id

    # Alice's second device -> Bob: her first device gets it as outgoing.
    m3 = await c.a2.send_message(c.ub.id, "second from a2")
    await until(lambda: "second from a2" in c.sa1.texts() and "second from a2" in c.sb.texts(), c)
    a1_m3 = next(m for m in c.sa1.new if m.raw_text == "second from a2")
    assert a1_m3.out and a1_m3.id == m3.id
    b_m3 = next(m for m in c.sb.new if m.raw_text == "second from a2")

    await settle(c.a1, c.a2, c.b)
    # No device got its own message back, as an event or as a push.
    assert c.sa1.texts() == ["hi from b", "second from a2"]
    assert c.sa2.texts() == ["hello from a1", "hi from b"]
    assert c.sb.texts() == ["hello from a1", "second from a2"]
    assert m1.id not in c.sa1.pushed_new_ids()
    assert m3.id not in c.sa2.pushed_new_ids()
    assert r.id not in c.sb.pushed_new_ids()
    # ... and every other device got each message exactly once.
    assert sorted(c.sa1.pushed_new_ids()) == sorted([a1_r.id, m3.id])
    assert sorted(c.sa2.pushed_new_ids()) == sorted([m1.id, a1_r.id])
    assert sorted(c.sb.pushed_new_ids()) == sorted([b_m1.id, b_m3.id])

    # Edit on device 1: Bob and device 2 see the new text; device 1 gets no push.
    await c.a1.edit_message(c.bob, m1.id, "hello from a1 (edited)")
    await until(lambda: c.sb.edited and c.sa2.edited, c)
    assert [(m.id, m.raw_text) for m in c.sb.edited] == [(b_m1.id, "hello from a1 (edited)")]
    assert [(m.id, m.raw_text) for m in c.sa2.edited] == [(m1.id, "hello from a1 (edited)")]
    assert c.sb.edited[0].edit_date is not None

    # Bob reads: both of Alice's devices learn her messages were read (outbox).
    await c.b.send_read_acknowledge(c.alice)
    await until(lambda: c.sa1.read and c.sa2.read, c)
    assert c.sa1.read == [(True, m3.id)]
    assert c.sa2.read == [(True, m3.id)]

    # Alice reads on device 1: Bob gets the outbox receipt, device 2 the inbox read.
    await c.a1.send_read_acknowledge(c.bob)
    await until(lambda: c.sb.read and c.sa2.read[1:], c)
    assert c.sb.read == [(True, r.id)]
    # (read up to the dialog's top message, Alice's own "second from a2", as Telegram does)
    assert c.sa2.read[1:] == [(False, m3.id)]

    # Delete for both: Bob and device 2 get their own box's ids.
    await c.a1.delete_messages(c.bob, [m1.id], revoke=True)
    await until(lambda: c.sb.deleted and c.sa2.deleted, c)
    assert c.sb.deleted == [b_m1.id]
    assert c.sa2.deleted == [m1.id]

    await settle(c.a1, c.a2, c.b)
    assert c.sa1.edited == [] and c.sa1.deleted == []
    assert c.sa1.read == [(True, m3.id)]  # not its own inbox read back
    assert c.sb.read == [(True, r.id)]  # not its own inbox read back
    assert c.sb.texts() == ["hello from a1", "second from a2"]
    assert [t for _, t in await history(c.b, c.alice)] == ["second from a2", "hi from b"]
    assert [t for _, t in await history(c.a2, c.bob)] == ["second from a2", "hi from b"]
    # The sender's own changes were never pushed back to it.
    for kind in (tt.UpdateEditMessage, tt.UpdateDeleteMessages, tt.UpdateReadHistoryInbox):
        assert c.sa1.pushed_of(kind) == [], kind
    assert c.sb.pushed_of(tt.UpdateReadHistoryInbox) == []
    assert c.gaps() == {"a1": [], "a2": [], "b": []}


# ------------------------------------------------------ 2. offline catch-up
async def test_offline_device_catches_up_500_messages(
    start_server: Callable[..., Any], telethon_for: Factory
) -> None:
    async with start_server(**NO_FLOOD) as srv:
        a, ua = await signed_in(srv, telethon_for, "Alice")
        b, ub = await signed_in(srv, telethon_for, "Bob")
        bob = await contact(a, ub)
        await a.send_message(bob, "before")
        target = await pts(b)
        await wait_for(lambda: b._message_box.session_state()[0]["pts"] == target)

        # Bob goes offline, keeping what a persistent session keeps: key and update state.
        key = b.session.save()
        state = tt.updates.State(**b._message_box.session_state()[0], unread_count=0)
        await b.disconnect()
        sent = await send_many(a, bob, [f"bulk {i:03d}" for i in range(500)])
        assert len({i for i, _ in sent}) == 500

        # Back with a new client object (a new MTProto session, so nothing is
        # resent by the old one): only getDifference can bring the 500 back.
        # catch_up=True: start from the session's update state (not a fresh getState).
        # Sequential dispatch: the handler sees updates in the order Telethon applies them.
        b2 = await telethon_for(
            srv,
            ConnectionTcpFull,
            session=key,
            connect=False,
            catch_up=True,
            sequential_updates=True,
        )
        b2.session.set_update_state(0, state)
        seen = watch(b2)
        diffs = seen.diffs
        await asyncio.wait_for(b2.connect(), 10)
        await b2.catch_up()
        await until(lambda: len(seen.new) >= 500, lambda: (len(seen.new), diffs), timeout=30)
        await settle(b2)

        got = [m.raw_text for m in seen.new]
        assert len(got) == 500, f"{len(got)} events, {len(set(got))} distinct"
        assert got == [t for _, t in sent]  # exactly once each, in the order stored
        ids = [m.id for m in seen.new]
        assert ids == sorted(ids) and len(set(ids)) == 500
        assert all(not m.out and m.sender_id == ua.id for m in seen.new)
        assert diffs.count("DifferenceSlice") >= 4, diffs  # 100 updates a slice
        assert diffs[-1] in ("Difference", "DifferenceEmpty"), diffs
        assert b2._message_box.session_state()[0]["pts"] == await pts(b2)
        row = by_peer(await dialog_rows(b2), ua.id)
        assert (row.top_text, row.unread_count) == (sent[-1][1], 501)

        # Offline again, then the same client object connects again: whether the
        # server's session resends or getDifference fills the gap, each arrives once.
        await b2.disconnect()
        more = await send_many(a, bob, [f"more {i:03d}" for i in range(150)])
        await asyncio.wait_for(b2.connect(), 10)
        await b2.catch_up()
        await until(lambda: len(seen.new) >= 650, lambda: (len(seen.new), diffs), timeout=30)
        await settle(b2)
        got = [m.raw_text for m in seen.new[500:]]
        assert got == [t for _, t in more], f"{len(got)} events, {len(set(got))} distinct"
        assert b2._message_box.session_state()[0]["pts"] == await pts(b2)


# ---------------------------------------------------------- 3. random_id
async def test_same_random_id_stores_one_message(server: Server, telethon_for: Factory) -> None:
    c = await chat(server, telethon_for)
    peer = await c.a1.get_input_entity(c.bob)
    rid = random.getrandbits(63)
    first = await c.a1(functions.messages.SendMessageRequest(peer, "only once", random_id=rid))
    again = await c.a1(functions.messages.SendMessageRequest(peer, "only once", random_id=rid))
    assert isinstance(first, tt.UpdateShortSentMessage)
    assert isinstance(again, tt.UpdateShortSentMessage)
    assert again.id == first.id
    assert again.pts == first.pts

    await until(lambda: c.sb.new and c.sa2.new, c)
    await settle(c.a1, c.a2, c.b)
    assert await history(c.a1, c.bob) == [(first.id, "only once")]
    assert [t for _, t in await history(c.b, c.alice)] == ["only once"]
    assert c.sb.texts() == ["only once"]
    assert c.sa2.texts() == ["only once"]
    assert len(c.sb.pushed_new_ids()) == 1
    assert c.gaps() == {"a1": [], "a2": [], "b": []}
    # The same random_id from another sender is another message.
    other = await c.b(
        functions.messages.SendMessageRequest(
            await c.b.get_input_entity(c.alice), "mine", random_id=rid
        )
    )
    assert isinstance(other, tt.UpdateShortSentMessage)
    assert [t for _, t in await history(c.b, c.alice)] == ["mine", "only once"]


# ------------------------------------------------------- 4. edit and delete
async def test_edit_and_delete_reach_both_sides(server: Server, telethon_for: Factory) -> None:
    c = await chat(server, telethon_for)
    m1 = await c.a1.send_message(c.bob, "first")
    m2 = await c.a1.send_message(c.bob, "second")
    await until(lambda: len(c.sb.new) == 2, c)
    b1, b2 = c.sb.new
    r1 = await c.b.send_message(c.alice, "reply")
    await until(lambda: "reply" in c.sa1.texts(), c)
    a_r1 = next(m for m in c.sa1.new if m.raw_text == "reply")

    # Alice edits: Bob's copy changes.
    await c.a1.edit_message(c.bob, m1.id, "first, edited")
    await until(lambda: c.sb.edited, c)
    assert (c.sb.edited[0].id, c.sb.edited[0].raw_text) == (b1.id, "first, edited")
    b_copy = await c.b.get_messages(c.alice, ids=b1.id)
    assert b_copy.raw_text == "first, edited" and b_copy.edit_date is not None

    # Bob edits his: Alice's devices see it.
    await c.b.edit_message(c.alice, r1.id, "reply, edited")
    await until(lambda: c.sa1.edited and len(c.sa2.edited) == 2, c)
    assert [(x.id, x.raw_text) for x in c.sa1.edited] == [(a_r1.id, "reply, edited")]
    assert [(x.id, x.raw_text) for x in c.sa2.edited] == [
        (m1.id, "first, edited"),
        (a_r1.id, "reply, edited"),
    ]

    # Bob may not edit Alice's message (his incoming copy).
    with pytest.raises(errors.RPCError) as exc:
        await c.b.edit_message(c.alice, b2.id, "not mine")
    assert rpc_error(exc) == "MESSAGE_AUTHOR_REQUIRED"

    # Delete for both (revoke) by Alice.
    before_b = await pts(c.b)
    res = await c.a1(functions.messages.DeleteMessagesRequest([m2.id], revoke=True))
    assert res.pts_count == 1
    await until(lambda: c.sb.deleted and c.sa2.deleted, c)
    assert c.sb.deleted == [b2.id] and c.sa2.deleted == [m2.id]
    assert await pts(c.b) == before_b + 1
    assert [t for _, t in await history(c.a1, c.bob)] == ["reply, edited", "first, edited"]
    assert [t for _, t in await history(c.b, c.alice)] == ["reply, edited", "first, edited"]

    # Delete without revoke by Bob: only his copy goes.
    before_a = await pts(c.a1)
    res = await c.b(functions.messages.DeleteMessagesRequest([b1.id], revoke=False))
    assert res.pts_count == 1
    await settle(c.a1, c.a2, c.b)
    assert [t for _, t in await history(c.b, c.alice)] == ["reply, edited"]
    assert [t for _, t in await history(c.a1, c.bob)] == ["reply, edited", "first, edited"]
    assert await pts(c.a1) == before_a
    assert c.sa1.deleted == [] and c.sa2.deleted == [m2.id]
    assert not c.sa1.pushed_of(tt.UpdateDeleteMessages)

    # The dialogs follow: Bob's top message is what is left.
    b_rows = await dialog_rows(c.b)
    assert by_peer(b_rows, c.ua.id).top_text == "reply, edited"
    # Deleting everything leaves Alice's dialog without a top message.
    res = await c.a1(functions.messages.DeleteMessagesRequest([m1.id, a_r1.id], revoke=True))
    assert res.pts_count == 2
    await until(lambda: len(c.sa2.deleted) == 3, c)
    assert await history(c.a1, c.bob) == [] and await history(c.b, c.alice) == []
    assert c.gaps() == {"a1": [], "a2": [], "b": []}


# --------------------------------------------------------------- 5. drafts
async def test_drafts_sync_between_devices(server: Server, telethon_for: Factory) -> None:
    c = await chat(server, telethon_for)
    await c.a1.send_message(c.bob, "so it has a dialog")
    await until(lambda: c.sa2.new, c)
    peer = await c.a1.get_input_entity(c.bob)

    await c.a1(functions.messages.SaveDraftRequest(peer=peer, message="half-typed"))
    await until(lambda: c.sa2.raw_of(tt.UpdateDraftMessage), c)
    upd = c.sa2.raw_of(tt.UpdateDraftMessage)[0]
    assert upd.peer == tt.PeerUser(c.ub.id)
    assert isinstance(upd.draft, tt.DraftMessage) and upd.draft.message == "half-typed"

    for dev in (c.a1, c.a2):
        drafts = await dev(functions.messages.GetAllDraftsRequest())
        found = [u for u in drafts.updates if isinstance(u, tt.UpdateDraftMessage)]
        assert [(u.peer, u.draft.message) for u in found] == [(tt.PeerUser(c.ub.id), "half-typed")]
        assert by_peer(await dialog_rows(dev), c.ub.id).draft == "half-typed"

    # Bob sees nothing of it.
    assert by_peer(await dialog_rows(c.b), c.ua.id).draft == ""

    # Sending with clear_draft clears it everywhere.
    await c.a1.send_message(c.bob, "sent", clear_draft=True)
    await until(lambda: len(c.sa2.raw_of(tt.UpdateDraftMessage)) == 2, c)
    cleared = c.sa2.raw_of(tt.UpdateDraftMessage)[1]
    assert isinstance(cleared.draft, tt.DraftMessageEmpty)
    for dev in (c.a1, c.a2):
        drafts = await dev(functions.messages.GetAllDraftsRequest())
        assert [u for u in drafts.updates if isinstance(u, tt.UpdateDraftMessage)] == []
        assert by_peer(await dialog_rows(dev), c.ub.id).draft == ""

    await settle(c.a1, c.a2)
    # The saving device got its own draft back neither time.
    assert c.sa1.pushed_of(tt.UpdateDraftMessage) == []

    assert c.gaps() == {"a1": [], "a2": [], "b": []}

    # A draft saved while device 2 was away comes back through getDifference.
    await c.a2.disconnect()
    await c.a1(functions.messages.SaveDraftRequest(peer=peer, message="while away"))
    await asyncio.wait_for(c.a2.connect(), 10)
    await c.a2.catch_up()
    await until(
        lambda: any(
            isinstance(u.draft, tt.DraftMessage) and u.draft.message == "while away"
            for u in c.sa2.raw_of(tt.UpdateDraftMessage)
        ),
        c,
    )


# -------------------------------------------------------------- 6. dialogs
async def test_dialog_list_after_each_step(server: Server, telethon_for: Factory) -> None:
    c = await chat(server, telethon_for)
    cc, uc = await signed_in(server, telethon_for, "Carol")
    alice_for_c = await contact(cc, c.ua)
    a_peer = tt.InputDialogPeer(await c.a1.get_input_entity(c.bob))

    # 1. Alice -> Bob.
    m1 = await c.a1.send_message(c.bob, "one")
    await until(lambda: c.sb.new and c.sa2.new, c)
    for dev in (c.a1, c.a2):
        rows = await dialog_rows(dev)
        assert [(r.peer_id, r.top_text, r.top_id, r.unread_count) for r in rows] == [
            (c.ub.id, "one", m1.id, 0)
        ]
    (b_row,) = await dialog_rows(c.b)
    assert (b_row.peer_id, b_row.top_text, b_row.unread_count) == (c.ua.id, "one", 1)
    assert b_row.read_inbox_max_id == 0
    assert (await c.b(functions.updates.GetStateRequest())).unread_count == 1

    # 2. Bob reads: his unread count drops, Alice's outbox is read.
    await c.b.send_read_acknowledge(c.alice)
    await until(lambda: c.sa1.read and c.sa2.read, c)
    (b_row,) = await dialog_rows(c.b)
    assert b_row.unread_count == 0 and b_row.read_inbox_max_id == b_row.top_id
    for dev in (c.a1, c.a2):
        (row,) = await dialog_rows(dev)
        assert row.read_outbox_max_id == m1.id and row.unread_count == 0

    # 3. Bob writes twice.
    await c.b.send_message(c.alice, "two")
    three = await c.b.send_message(c.alice, "three")
    await until(lambda: c.sa1.texts()[-1:] == c.sa2.texts()[-1:] == ["three"], c)
    for dev in (c.a1, c.a2):
        (row,) = await dialog_rows(dev)
        assert (row.top_text, row.unread_count, row.read_inbox_max_id) == ("three", 2, 0)
    (b_row,) = await dialog_rows(c.b)
    assert (b_row.top_text, b_row.top_id, b_row.unread_count) == ("three", three.id, 0)

    # 4. Carol writes: her dialog is newer, so first.
    await cc.send_message(alice_for_c, "from carol")
    await until(lambda: c.sa1.texts()[-1:] == c.sa2.texts()[-1:] == ["from carol"], c)
    rows = await dialog_rows(c.a1)
    assert [(r.peer_id, r.top_text, r.unread_count) for r in rows] == [
        (uc.id, "from carol", 1),
        (c.ub.id, "three", 2),
    ]
    assert (await c.a1(functions.updates.GetStateRequest())).unread_count == 3

    # 5. Alice pins Bob: first again, on both devices.
    assert await c.a1(functions.messages.ToggleDialogPinRequest(a_peer, pinned=True))
    await until(lambda: c.sa2.raw_of(tt.UpdateDialogPinned), c)
    upd = c.sa2.raw_of(tt.UpdateDialogPinned)[0]
    assert upd.pinned and upd.peer == tt.DialogPeer(tt.PeerUser(c.ub.id))
    for dev in (c.a1, c.a2):
        rows = await dialog_rows(dev)
        assert [(r.peer_id, r.pinned) for r in rows] == [(c.ub.id, True), (uc.id, False)]
    pinned = await c.a2(functions.messages.GetPinnedDialogsRequest(folder_id=0))
    assert [d.peer for d in pinned.dialogs] == [tt.PeerUser(c.ub.id)]

    # 6. Alice reads Bob's messages.
    await c.a1.send_read_acknowledge(c.bob)
    await until(lambda: c.sb.read, c)
    assert c.sb.read == [(True, three.id)]
    for dev in (c.a1, c.a2):
        row = by_peer(await dialog_rows(dev), c.ub.id)
        assert row.unread_count == 0 and row.read_inbox_max_id == row.top_id
    assert (await c.a1(functions.updates.GetStateRequest())).unread_count == 1

    # 7. ... and marks the dialog unread again.
    assert await c.a1(functions.messages.MarkDialogUnreadRequest(a_peer, unread=True))
    await until(lambda: c.sa2.raw_of(tt.UpdateDialogUnreadMark), c)
    mark = c.sa2.raw_of(tt.UpdateDialogUnreadMark)[0]
    assert mark.unread and mark.peer == tt.DialogPeer(tt.PeerUser(c.ub.id))
    for dev in (c.a1, c.a2):
        row = by_peer(await dialog_rows(dev), c.ub.id)
        assert row.unread_mark and row.unread_count == 0
    marks = await c.a2(functions.messages.GetDialogUnreadMarksRequest())
    assert marks == [tt.DialogPeer(tt.PeerUser(c.ub.id))]

    # 8. Reading it clears the mark.
    await c.a1.send_read_acknowledge(c.bob)
    await until(lambda: len(c.sa2.raw_of(tt.UpdateDialogUnreadMark)) == 2, c)
    assert not c.sa2.raw_of(tt.UpdateDialogUnreadMark)[1].unread
    assert not by_peer(await dialog_rows(c.a2), c.ub.id).unread_mark
    assert await c.a2(functions.messages.GetDialogUnreadMarksRequest()) == []

    # 9. Unpinned: back in date order.
    assert await c.a1(functions.messages.ToggleDialogPinRequest(a_peer, pinned=False))
    await until(lambda: len(c.sa2.raw_of(tt.UpdateDialogPinned)) == 2, c)
    rows = await dialog_rows(c.a2)
    assert [(r.peer_id, r.pinned) for r in rows] == [(uc.id, False), (c.ub.id, False)]
    await settle(c.a1)
    assert c.sa1.pushed_of(tt.UpdateDialogPinned) == []
    assert c.sa1.pushed_of(tt.UpdateDialogUnreadMark) == []
    assert c.gaps() == {"a1": [], "a2": [], "b": []}


# ------------------------------------------------------------ 7. pagination
@dataclass
class Box:
    """Alice and Bob with 250 messages between them (200 hers, then 50 his)."""

    a: TelegramClient
    b: TelegramClient
    bob: tt.User
    alice: tt.User
    sent: list[tuple[int, str]]  # (id in the sender's box, text)


async def filled_box(srv: Server, telethon_for: Factory) -> Box:
    a, ua = await signed_in(srv, telethon_for, "Alice")
    b, ub = await signed_in(srv, telethon_for, "Bob")
    bob = await contact(a, ub)
    alice = await contact(b, ua)
    sent = await send_many(a, bob, [f"page {i:03d}" for i in range(200)])
    sent += await send_many(b, alice, [f"back {i:03d}" for i in range(50)])
    return Box(a, b, bob, alice, sent)


def desc(xs: Iterable[int]) -> list[int]:
    return sorted(xs, reverse=True)


async def test_history_get_history_offsets(
    start_server: Callable[..., Any], telethon_for: Factory
) -> None:
    async with start_server(**NO_FLOOD) as srv:
        box = await filled_box(srv, telethon_for)
        a, bob = box.a, box.bob
        peer = await a.get_input_entity(bob)

        async def get(
            offset_id: int = 0,
            add_offset: int = 0,
            limit: int = 20,
            max_id: int = 0,
            min_id: int = 0,
            offset_date: Any = None,
        ) -> list[int]:
            res = await a(
                functions.messages.GetHistoryRequest(
                    peer, offset_id, offset_date, add_offset, limit, max_id, min_id, 0
                )
            )
            return [m.id for m in res.messages]

        first = await a(functions.messages.GetHistoryRequest(peer, 0, None, 0, 100, 0, 0, 0))
        assert isinstance(first, tt.messages.MessagesSlice) and first.count == 250
        ids_desc = [m.id for m in first.messages]

        # Small pages by offset_id alone: every message once, newest first.
        paged: list[int] = []
        offset = 0
        while True:
            page = await get(offset_id=offset, limit=33)
            if not page:
                break
            paged += page
            offset = page[-1]
        assert len(paged) == 250 and len(set(paged)) == 250
        assert paged == desc(paged) and paged[:100] == ids_desc
        ids = paged[::-1]  # ascending

        x = ids[100]
        assert await get(offset_id=x) == desc(ids[80:100])  # older than x
        assert await get(offset_id=x, add_offset=10) == desc(ids[70:90])
        assert await get(offset_id=x, add_offset=-10) == desc(ids[90:110])  # around x
        assert await get(offset_id=x, add_offset=-20) == desc(ids[100:120])  # from x up
        assert await get(offset_id=ids[-1] + 1, add_offset=-5, limit=10) == desc(ids[-5:])
        assert await get(min_id=ids[10], max_id=ids[30], limit=100) == desc(ids[11:30])
        assert await get(offset_id=x, min_id=ids[95], limit=100) == desc(ids[96:100])
        assert await get(limit=100) == desc(ids[150:])
        assert await get(offset_id=ids[0]) == []
        # Telethon's reverse paging: offset_id + 1 and add_offset -limit, ascending pages.
        assert await get(offset_id=1, add_offset=-100, limit=100) == desc(ids[:100])
        assert await get(offset_id=ids[99] + 1, add_offset=-100, limit=100) == desc(ids[100:200])

        # Bob's side: the same 250, each once.
        texts_b: list[str] = []
        offset = 0
        peer_b = await box.b.get_input_entity(box.alice)
        while True:
            res = await box.b(
                functions.messages.GetHistoryRequest(peer_b, offset, None, 0, 40, 0, 0, 0)
            )
            if not res.messages:
                break
            texts_b += [m.message for m in res.messages]
            offset = res.messages[-1].id
        assert sorted(texts_b) == sorted(t for _, t in box.sent)

        # offset_id with the offset_date of the same message (what Telethon sends on its
        # second page): the id decides; messages sent in the same second are not skipped.
        dates = {m.id: m.date for m in first.messages}
        y = next(i for i in ids_desc if dates.get(i - 1) == dates[i])  # not alone in its second
        older = desc(i for i in ids if i < y)[:100]
        got = await get(offset_id=y, offset_date=dates[y], limit=100)
        assert got == older, (
            f"offset_id={y} + its offset_date: got {len(got)} messages from {got[:1]}, "
            f"expected {len(older)} from {older[:1]}"
        )


async def test_history_iter_messages(
    start_server: Callable[..., Any], telethon_for: Factory
) -> None:
    async with start_server(**NO_FLOOD) as srv:
        box = await filled_box(srv, telethon_for)
        a, bob = box.a, box.bob
        top = await history(a, bob, limit=1)

        # Oldest first (pages by offset_id + 1 and a negative add_offset).
        ids = [m.id async for m in a.iter_messages(bob, wait_time=0, reverse=True)]
        assert len(ids) == 250 and ids == sorted(set(ids)) and ids[-1] == top[0][0]

        x = ids[100]
        win = [
            m.id async for m in a.iter_messages(bob, wait_time=0, min_id=ids[10], max_id=ids[30])
        ]
        assert win == desc(ids[11:30])
        win = [
            m.id
            async for m in a.iter_messages(
                bob, wait_time=0, min_id=ids[10], max_id=ids[30], reverse=True
            )
        ]
        assert win == ids[11:30]
        win = [m.id async for m in a.iter_messages(bob, wait_time=0, offset_id=x, limit=150)]
        assert win == desc(ids[:100])
        win = [m.id async for m in a.iter_messages(bob, wait_time=0, offset_id=x, reverse=True)]
        assert win == ids[101:]
        total = await a.get_messages(bob, limit=0)
        assert total.total == 250

        # Newest first, the default: Telethon's later pages send offset_id *and*
        # offset_date (of the last message it got).
        ids_desc = [m.id async for m in a.iter_messages(bob, wait_time=0)]
        missing = sorted(set(ids) - set(ids_desc))
        assert ids_desc == ids[::-1], (
            f"{len(ids_desc)} of 250 ({len(set(ids_desc))} distinct); "
            f"missing {len(missing)}: {missing[:3]}..{missing[-3:]}"
        )
        texts_b = [m.raw_text async for m in box.b.iter_messages(box.alice, wait_time=0)]
        assert sorted(texts_b) == sorted(t for _, t in box.sent), f"Bob got {len(texts_b)} of 250"


# --------------------------------------------------------------- 8. search
async def test_search(server: Server, telethon_for: Factory) -> None:
    c = await chat(server, telethon_for)
    cc, uc = await signed_in(server, telethon_for, "Carol")
    carol = await contact(c.a1, uc)
    await contact(cc, c.ua)
    for text in (
        "apple pie",
        "banana split",
        "see https://example.com",
        "Apple juice",
        "100% sure",
    ):
        await c.a1.send_message(c.bob, text)
    await c.b.send_message(c.alice, "an apple from bob")
    await c.b.send_message(c.alice, "go to www.teamgram.net now")
    await c.a1(
        functions.messages.SendMessageRequest(
            await c.a1.get_input_entity(c.bob),
            "click here",
            random_id=random.getrandbits(63),
            entities=[tt.MessageEntityTextUrl(0, 5, "https://example.org")],
        )
    )
    await c.a1.send_message(carol, "apple for carol")
    await c.a1.send_message(carol, "1000 sure")

    found = [m.raw_text for m in await c.a1.get_messages(c.bob, search="apple", limit=50)]
    assert found == ["an apple from bob", "Apple juice", "apple pie"]
    found = [m.raw_text for m in await c.b.get_messages(c.alice, search="APPLE", limit=50)]
    assert found == ["an apple from bob", "Apple juice", "apple pie"]
    found = [m.raw_text for m in await c.a1.get_messages(c.bob, search="100%", limit=50)]
    assert found == ["100% sure"]
    found = [m.raw_text for m in await c.a1.get_messages(c.bob, search="nothing", limit=50)]
    assert found == []

    urls = await c.a1.get_messages(c.bob, filter=tt.InputMessagesFilterUrl, limit=50)
    assert [m.raw_text for m in urls] == [
        "click here",
        "go to www.teamgram.net now",
        "see https://example.com",
    ]
    raw = await c.a1(
        functions.messages.SearchRequest(
            peer=await c.a1.get_input_entity(c.bob),
            q="example",
            filter=tt.InputMessagesFilterUrl(),
            min_date=None,
            max_date=None,
            offset_id=0,
            add_offset=0,
            limit=10,
            max_id=0,
            min_id=0,
            hash=0,
        )
    )
    assert [m.message for m in raw.messages] == ["see https://example.com"]

    glob = [m.raw_text for m in await c.a1.get_messages(None, search="apple", limit=50)]
    assert glob == ["apple for carol", "an apple from bob", "Apple juice", "apple pie"]
    res = await c.a1(
        functions.messages.SearchGlobalRequest(
            q="sure",
            filter=tt.InputMessagesFilterEmpty(),
            min_date=None,
            max_date=None,
            offset_rate=0,
            offset_peer=tt.InputPeerEmpty(),
            offset_id=0,
            limit=10,
        )
    )
    assert sorted(m.message for m in res.messages) == ["100% sure", "1000 sure"]
    assert {u.id for u in res.users} >= {c.ub.id, uc.id}
    # Carol's box is hers: her global search does not see Alice and Bob's chat.
    assert [m.raw_text for m in await cc.get_messages(None, search="apple", limit=50)] == [
        "apple for carol"
    ]


# ----------------------------------------------------- 9. pins and reactions
async def test_pinned_messages_and_reactions(server: Server, telethon_for: Factory) -> None:
    c = await chat(server, telethon_for)
    m = await c.a1.send_message(c.bob, "pin me")
    await until(lambda: c.sb.new, c)
    b_id = c.sb.new[0].id
    peer_for_a = await c.a1.get_input_entity(c.bob)
    peer_for_b = await c.b.get_input_entity(c.alice)

    await c.a1(functions.messages.UpdatePinnedMessageRequest(peer_for_a, m.id))
    await until(
        lambda: c.sb.raw_of(tt.UpdatePinnedMessages) and c.sa2.raw_of(tt.UpdatePinnedMessages), c
    )
    ub_pin = c.sb.raw_of(tt.UpdatePinnedMessages)[0]
    assert ub_pin.pinned and ub_pin.messages == [b_id]
    assert ub_pin.peer == tt.PeerUser(c.ua.id)
    ua_pin = c.sa2.raw_of(tt.UpdatePinnedMessages)[0]
    assert ua_pin.pinned and ua_pin.messages == [m.id]

    # The "pinned a message" service message, on both sides (a raw update:
    # Telethon's NewMessage event skips service messages).
    def pin_services(seen: Seen) -> list[Any]:
        return [
            u.message
            for u in seen.raw_of(tt.UpdateNewMessage)
            if isinstance(u.message, tt.MessageService)
            and isinstance(u.message.action, tt.MessageActionPinMessage)
        ]

    await until(lambda: pin_services(c.sb) and pin_services(c.sa2), c)
    (service,) = pin_services(c.sb)
    assert service.reply_to.reply_to_msg_id == b_id and not service.out
    (service_a,) = pin_services(c.sa2)
    assert service_a.reply_to.reply_to_msg_id == m.id and service_a.out
    assert (await c.b.get_messages(c.alice, ids=b_id)).pinned
    pinned = await c.b.get_messages(c.alice, filter=tt.InputMessagesFilterPinned, limit=10)
    assert [x.id for x in pinned] == [b_id]

    # Bob unpins: both of Alice's devices hear of it.
    await c.b(functions.messages.UpdatePinnedMessageRequest(peer_for_b, b_id, unpin=True))
    await until(lambda: len(c.sa1.raw_of(tt.UpdatePinnedMessages)) == 1, c)
    await until(lambda: len(c.sa2.raw_of(tt.UpdatePinnedMessages)) == 2, c)
    un = c.sa1.raw_of(tt.UpdatePinnedMessages)[0]
    assert not un.pinned and un.messages == [m.id]
    assert not (await c.a1.get_messages(c.bob, ids=m.id)).pinned

    # Reactions: Bob likes it, Alice's devices see the count.
    thumbs, heart = "\N{THUMBS UP SIGN}", "\N{HEAVY BLACK HEART}"
    await c.b(
        functions.messages.SendReactionRequest(
            peer_for_b, b_id, reaction=[tt.ReactionEmoji(thumbs)]
        )
    )
    await until(
        lambda: c.sa1.raw_of(tt.UpdateMessageReactions) and c.sa2.raw_of(tt.UpdateMessageReactions),
        c,
    )
    for seen in (c.sa1, c.sa2):
        upd = seen.raw_of(tt.UpdateMessageReactions)[0]
        assert upd.msg_id == m.id and upd.peer == tt.PeerUser(c.ub.id)
        assert [(r.reaction.emoticon, r.count, r.chosen_order) for r in upd.reactions.results] == [
            (thumbs, 1, None)
        ]
    mine = (await c.b.get_messages(c.alice, ids=b_id)).reactions
    assert [(r.reaction.emoticon, r.count, r.chosen_order) for r in mine.results] == [
        (thumbs, 1, 0)
    ]

    # Alice reacts too; then Bob takes his back.
    await c.a1(
        functions.messages.SendReactionRequest(peer_for_a, m.id, reaction=[tt.ReactionEmoji(heart)])
    )
    await until(lambda: c.sb.raw_of(tt.UpdateMessageReactions), c)
    counts = {
        r.reaction.emoticon: r.count
        for r in c.sb.raw_of(tt.UpdateMessageReactions)[0].reactions.results
    }
    assert counts == {thumbs: 1, heart: 1}
    await c.b(functions.messages.SendReactionRequest(peer_for_b, b_id, reaction=[]))
    await until(lambda: len(c.sa1.raw_of(tt.UpdateMessageReactions)) == 2, c)
    last = c.sa1.raw_of(tt.UpdateMessageReactions)[1]
    assert [(r.reaction.emoticon, r.count) for r in last.reactions.results] == [(heart, 1)]
    got = (await c.a2.get_messages(c.bob, ids=m.id)).reactions
    assert [(r.reaction.emoticon, r.count, r.chosen_order) for r in got.results] == [(heart, 1, 0)]
    await settle(c.a1, c.b)
    assert len(c.sa1.pushed_of(tt.UpdateMessageReactions)) == 2  # Bob's two, not her own
    assert len(c.sb.pushed_of(tt.UpdateMessageReactions)) == 1  # Alice's, not his own
    assert c.gaps() == {"a1": [], "a2": [], "b": []}


# ------------------------------------------------------------ 10. bad input
async def test_bad_input_is_refused_without_partial_writes(
    server: Server, telethon_for: Factory
) -> None:
    c = await chat(server, telethon_for)
    _carol, uc = await signed_in(server, telethon_for, "Carol")
    carol_for_b = await contact(c.b, uc)
    carol_for_a = await contact(c.a1, uc)
    # Bob's box gets ids Alice's does not have: three messages to Carol first.
    for i in range(3):
        await c.b.send_message(carol_for_b, f"to carol {i}")
    mine = await c.a1.send_message(c.bob, "from alice")
    await until(lambda: c.sb.new, c)
    b_copy = c.sb.new[0].id
    theirs = await c.b.send_message(c.alice, "from bob")
    await until(lambda: "from bob" in c.sa1.texts(), c)
    a_theirs = next(x for x in c.sa1.new if x.raw_text == "from bob")
    assert theirs.id > mine.id and b_copy > mine.id  # ids only in Bob's box exist
    peer = await c.a1.get_input_entity(c.bob)

    async def snapshot() -> tuple[Any, ...]:
        return (
            await pts(c.a1),
            await pts(c.b),
            await history(c.a1, c.bob),
            await history(c.b, c.alice),
            [(r.peer_id, r.top_id, r.unread_count) for r in await dialog_rows(c.a1)],
            [(r.peer_id, r.top_id, r.unread_count) for r in await dialog_rows(c.b)],
        )

    before = await snapshot()

    async def refused(request: Any, name: str) -> None:
        with pytest.raises(errors.RPCError) as exc:
            await c.a1(request)
        assert rpc_error(exc) == name, f"{type(request).__name__}: {rpc_error(exc)}"

    await refused(send_req(peer, ""), "MESSAGE_EMPTY")
    await refused(send_req(peer, "  \n "), "MESSAGE_EMPTY")
    await refused(send_req(peer, "x" * 4097), "MESSAGE_TOO_LONG")
    bad_hash = tt.InputPeerUser(c.ub.id, c.bob.access_hash ^ 1)
    await refused(send_req(bad_hash, "wrong hash"), "PEER_ID_INVALID")
    await refused(send_req(tt.InputPeerUser(c.ub.id, 0), "no hash"), "PEER_ID_INVALID")
    await refused(send_req(tt.InputPeerUser(987654321, 0), "nobody"), "PEER_ID_INVALID")
    await refused(
        send_req(peer, "short", entities=[tt.MessageEntityBold(0, 100)]), "ENTITY_BOUNDS_INVALID"
    )
    # "👍ab" is 4 UTF-16 units long: an entity of 5 is outside.
    await refused(
        send_req(peer, "\N{THUMBS UP SIGN}ab", entities=[tt.MessageEntityBold(0, 5)]),
        "ENTITY_BOUNDS_INVALID",
    )
    await refused(
        send_req(peer, "short", entities=[tt.MessageEntityBold(-1, 2)]), "ENTITY_BOUNDS_INVALID"
    )
    # Editing: an id only Bob's box has, Bob's message in Alice's box, the wrong dialog.
    await refused(
        functions.messages.EditMessageRequest(peer, b_copy + 10, message="x"), "MESSAGE_ID_INVALID"
    )
    await refused(
        functions.messages.EditMessageRequest(peer, theirs.id + 5, message="x"),
        "MESSAGE_ID_INVALID",
    )
    await refused(
        functions.messages.EditMessageRequest(peer, a_theirs.id, message="x"),
        "MESSAGE_AUTHOR_REQUIRED",
    )
    await refused(
        functions.messages.EditMessageRequest(
            await c.a1.get_input_entity(carol_for_a), mine.id, message="x"
        ),
        "MESSAGE_ID_INVALID",
    )
    await refused(functions.messages.EditMessageRequest(peer, mine.id, message=""), "MESSAGE_EMPTY")
    await refused(
        functions.messages.EditMessageRequest(
            peer, mine.id, message="ab", entities=[tt.MessageEntityItalic(1, 2)]
        ),
        "ENTITY_BOUNDS_INVALID",
    )
    await refused(
        functions.messages.EditMessageRequest(peer, mine.id, message="x" * 4097),
        "MESSAGE_TOO_LONG",
    )
    # Deleting ids that are not in Alice's box deletes nothing.
    gone = await c.a1(
        functions.messages.DeleteMessagesRequest([b_copy + 10, theirs.id + 5], revoke=True)
    )
    assert gone.pts_count == 0
    assert gone.pts == before[0]

    await settle(c.a1, c.a2, c.b)
    assert await snapshot() == before
    assert c.sb.edited == [] and c.sb.deleted == [] and c.sa2.deleted == []

    # The boundary itself is fine.
    ok = await c.a1(send_req(peer, "y" * 4096))
    assert isinstance(ok, tt.UpdateShortSentMessage)
    assert await pts(c.a1) == before[0] + 1


async def test_send_flood_wait(start_server: Callable[..., Any], telethon_for: Factory) -> None:
    async with start_server(messages={"send_per_second": 0.1, "send_burst": 3}) as srv:
        a, ua = await signed_in(srv, telethon_for, "Alice", flood_sleep_threshold=0)
        b, ub = await signed_in(srv, telethon_for, "Bob")
        bob = await contact(a, ub)
        peer = await a.get_input_entity(bob)
        for i in range(3):
            await a(send_req(peer, f"burst {i}"))
        before = (await pts(a), await pts(b))
        with pytest.raises(errors.FloodWaitError) as exc:
            await a(send_req(peer, "one too many"))
        assert 1 <= exc.value.seconds <= 10  # 1 message at 0.1/s
        assert (await pts(a), await pts(b)) == before
        assert [t for _, t in await history(a, bob)] == ["burst 2", "burst 1", "burst 0"]
        assert [t for _, t in await history(b, ua.id)] == ["burst 2", "burst 1", "burst 0"]


# ------------------------------------------------------ 11. Saved Messages
async def test_saved_messages(server: Server, telethon_for: Factory) -> None:
    c = await chat(server, telethon_for)
    before_a, before_b = await pts(c.a1), await pts(c.b)
    note = await c.a1.send_message("me", "note to self")
    await until(lambda: c.sa2.new, c)
    await settle(c.a1, c.a2, c.b)
    (on_a2,) = c.sa2.new
    assert on_a2.id == note.id and on_a2.chat_id == c.ua.id and on_a2.raw_text == "note to self"
    assert c.sa1.new == [] and c.sb.new == []
    assert c.sa1.pushed_new_ids() == []
    assert await history(c.a1, "me") == [(note.id, "note to self")]
    assert await history(c.a2, "me") == [(note.id, "note to self")]
    assert await pts(c.a1) == before_a + 1
    assert await pts(c.b) == before_b
    for dev in (c.a1, c.a2):
        rows = await dialog_rows(dev)
        assert [(r.peer_id, r.top_text, r.unread_count) for r in rows] == [
            (c.ua.id, "note to self", 0)
        ]
    # Edit and delete in Saved Messages: one copy, one update each.
    await c.a1.edit_message("me", note.id, "note, edited")
    await until(lambda: c.sa2.edited, c)
    assert [(x.id, x.raw_text) for x in c.sa2.edited] == [(note.id, "note, edited")]
    await c.a1.delete_messages("me", [note.id])
    await until(lambda: c.sa2.deleted, c)
    assert c.sa2.deleted == [note.id]
    assert await history(c.a1, "me") == []
    assert await pts(c.a1) == before_a + 3
    await settle(c.a1, c.a2)
    assert c.gaps() == {"a1": [], "a2": [], "b": []}
