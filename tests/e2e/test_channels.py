"""Supergroups and broadcast channels, driven by real Telethon clients.

Every client is watched (:func:`watch`): the Telethon events it dispatched (after
its own pts checks, the way every Telegram client applies updates), every update
the server pushed to it (taken from the client's update queue before Telethon's
de-duplication), the access hash of every channel it was given, and the answers
to the ``updates.getDifference`` / ``updates.getChannelDifference`` calls Telethon
made by itself. A member that applies live channel updates without a gap never
has to call ``getChannelDifference``.

Requests are raw (``functions.channels.*``, ``functions.messages.*``) with keyword
arguments; each viewer uses the access hash it was given itself.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from telethon import TelegramClient, errors, events, functions, utils
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
SETTLE = 0.3


# ------------------------------------------------------------------ helpers
def _flatten(obj: Any) -> list[Any]:
    """The single updates inside an ``Updates``-like object."""
    obj = _unwrap(obj)
    if isinstance(obj, tt.Updates | tt.UpdatesCombined):
        return list(obj.updates)
    if isinstance(obj, tt.UpdateShort):
        return [obj.update]
    if isinstance(obj, tt.UpdatesTooLong):
        return []
    return [obj]


def _unwrap(obj: Any) -> Any:
    """The ``Updates`` inside messages.invitedUsers / messages.chatInviteJoinResultOk."""
    if isinstance(obj, tt.messages.InvitedUsers | tt.messages.ChatInviteJoinResultOk):
        return obj.updates
    return obj


def _channel_of(msg: Any) -> int | None:
    peer = getattr(msg, "peer_id", None)
    return peer.channel_id if isinstance(peer, tt.PeerChannel) else None


@dataclass(repr=False)
class Feed:
    """What one client got from the server (see the module docstring)."""

    client: TelegramClient
    new: list[Message] = field(default_factory=list)
    edited: list[Message] = field(default_factory=list)
    actions: list[Any] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)
    pushed: list[Any] = field(default_factory=list)
    hashes: dict[int, int] = field(default_factory=dict)
    chats: dict[int, Any] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    trail: list[tuple[Any, bool]] = field(default_factory=list)  # (update, pushed) in order

    def __repr__(self) -> str:
        return (
            f"Feed(new={[(_channel_of(m), m.id, m.message) for m in self.new]}, "
            f"raw={[type(u).__name__ for u in self.raw]}, "
            f"pushed={[type(u).__name__ for u in self.pushed]}, "
            f"calls={[(n, type(r).__name__) for n, r in self.calls]})"
        )

    def remember(self, chats: Iterable[Any]) -> None:
        for ch in chats:
            if isinstance(ch, tt.Channel | tt.ChannelForbidden):
                self.chats[ch.id] = ch
                if not getattr(ch, "min", False) and ch.access_hash is not None:
                    self.hashes[ch.id] = ch.access_hash

    # What Telethon dispatched.
    def messages(self, cid: int) -> list[Message]:
        return [m for m in self.new if _channel_of(m) == cid]

    def texts(self, cid: int) -> list[str]:
        return [m.message for m in self.messages(cid)]

    def raw_of(self, kind: type) -> list[Any]:
        return [u for u in self.raw if isinstance(u, kind)]

    def service(self, cid: int) -> list[tt.MessageService]:
        """Service messages of the channel Telethon dispatched (from the raw updates)."""
        return [
            u.message
            for u in self.raw_of(tt.UpdateNewChannelMessage)
            if isinstance(u.message, tt.MessageService) and _channel_of(u.message) == cid
        ]

    def actions_of(self, cid: int, kind: type) -> list[Any]:
        return [m.action for m in self.service(cid) if isinstance(m.action, kind)]

    def received_ids(self, cid: int) -> list[int]:
        """Ids of every message (plain or service) of the channel dispatched, in order."""
        return [
            u.message.id
            for u in self.raw_of(tt.UpdateNewChannelMessage)
            if _channel_of(u.message) == cid
        ]

    def deleted(self, cid: int) -> list[int]:
        return [
            i
            for u in self.raw_of(tt.UpdateDeleteChannelMessages)
            if u.channel_id == cid
            for i in u.messages
        ]

    # What the server pushed.
    def pushed_of(self, kind: type) -> list[Any]:
        return [u for u in self.pushed if isinstance(u, kind)]

    def pushed_ids(self, cid: int) -> list[int]:
        return [
            u.message.id
            for u in self.pushed_of(tt.UpdateNewChannelMessage)
            if _channel_of(u.message) == cid
        ]

    def channel_diffs(self) -> list[str]:
        return [type(r).__name__ for n, r in self.calls if n == "GetChannelDifferenceRequest"]

    # This viewer's own access hash.
    async def input_channel(self, cid: int) -> tt.InputChannel:
        if cid in self.hashes:
            return tt.InputChannel(channel_id=cid, access_hash=self.hashes[cid])
        return utils.get_input_channel(await self.client.get_input_entity(tt.PeerChannel(cid)))

    async def peer(self, cid: int) -> tt.InputPeerChannel:
        ch = await self.input_channel(cid)
        return tt.InputPeerChannel(channel_id=ch.channel_id, access_hash=ch.access_hash)


def pts_trail(feed: Feed, cid: int) -> list[tuple[str, int, int, bool]]:
    """(update, pts, pts_count, pushed) of every channel update the client got, in order."""
    return [
        (type(u).__name__, u.pts, u.pts_count, pushed)
        for u, pushed in feed.trail
        if getattr(u, "pts", None) is not None
        and (
            getattr(u, "channel_id", None) == cid or _channel_of(getattr(u, "message", None)) == cid
        )
    ]


def watch(client: TelegramClient) -> Feed:
    feed = Feed(client)

    async def on_new(e: events.NewMessage.Event) -> None:
        feed.new.append(e.message)

    async def on_edit(e: events.MessageEdited.Event) -> None:
        feed.edited.append(e.message)

    async def on_action(e: events.ChatAction.Event) -> None:
        feed.actions.append(e)

    async def on_raw(u: Any) -> None:
        feed.raw.append(u)

    client.add_event_handler(on_new, events.NewMessage())
    client.add_event_handler(on_edit, events.MessageEdited())
    client.add_event_handler(on_action, events.ChatAction())
    client.add_event_handler(on_raw, events.Raw())

    # Answers to the client's own requests are flagged ``_self_outgoing``;
    # everything else on the queue was pushed by the server.
    queue = client._updates_queue
    put = queue.put_nowait

    def spy_queue(obj: Any) -> None:
        feed.remember(getattr(obj, "chats", None) or [])
        own = getattr(obj, "_self_outgoing", False)
        feed.trail.extend((u, not own) for u in _flatten(obj))
        if not own:
            feed.pushed.extend(_flatten(obj))
        put(obj)

    setattr(queue, "put_nowait", spy_queue)  # noqa: B010 (an instance attribute, on purpose)

    call = client._call

    async def spy_call(sender: Any, request: Any, ordered: bool = False, **kw: Any) -> Any:
        res = await call(sender, request, ordered=ordered, **kw)
        if isinstance(
            request,
            functions.updates.GetDifferenceRequest | functions.updates.GetChannelDifferenceRequest,
        ):
            feed.calls.append((type(request).__name__, res))
        feed.remember(getattr(res, "chats", None) or [])
        return res

    setattr(client, "_call", spy_call)  # noqa: B010
    return feed


async def knows(client: TelegramClient, *users: UserRecord) -> list[tt.User]:
    """The others as ``client`` sees them (with its access hashes), by importing phones."""
    got = await client(
        functions.contacts.ImportContactsRequest(
            contacts=[
                tt.InputPhoneContact(
                    client_id=random.getrandbits(31),
                    phone=u.phone,
                    first_name=u.first_name,
                    last_name="",
                )
                for u in users
            ]
        )
    )
    by_id = {u.id: u for u in got.users}
    return [by_id[u.id] for u in users]


def ich(ch: tt.Channel) -> tt.InputChannel:
    return tt.InputChannel(channel_id=ch.id, access_hash=ch.access_hash)


def ipeer(ch: tt.Channel) -> tt.InputPeerChannel:
    return tt.InputPeerChannel(channel_id=ch.id, access_hash=ch.access_hash)


def ich_of(feed: Feed, cid: int) -> tt.InputChannel:
    """The InputChannel with the access hash ``feed``'s client was given (no network)."""
    return tt.InputChannel(channel_id=cid, access_hash=feed.hashes[cid])


def the_channel(res: Any) -> tt.Channel:
    """The one Channel of an ``Updates`` answer."""
    res = _unwrap(res)
    found = [c for c in res.chats if isinstance(c, tt.Channel)]
    assert len(found) == 1, res.chats
    return found[0]


def channel_messages(res: Any) -> list[Any]:
    """The messages of the ``updateNewChannelMessage`` updates of an answer."""
    return [u.message for u in _flatten(res) if isinstance(u, tt.UpdateNewChannelMessage)]


def actions(res: Any) -> list[Any]:
    return [m.action for m in channel_messages(res) if isinstance(m, tt.MessageService)]


async def create(
    client: TelegramClient, title: str, about: str = "", broadcast: bool = False
) -> tt.Channel:
    res = await client(
        functions.channels.CreateChannelRequest(
            title=title,
            about=about,
            broadcast=True if broadcast else None,
            megagroup=None if broadcast else True,
        )
    )
    return the_channel(res)


async def invite(client: TelegramClient, ch: tt.Channel, *users: tt.User) -> list[Any]:
    """Invite ``users``; returns the service messages of the answer."""
    res = await client(
        functions.channels.InviteToChannelRequest(
            channel=ich(ch), users=[utils.get_input_user(u) for u in users]
        )
    )
    assert isinstance(res, tt.messages.InvitedUsers), res
    assert list(res.missing_invitees) == []
    return [m for m in channel_messages(res) if isinstance(m, tt.MessageService)]


async def send(client: TelegramClient, peer: tt.InputPeerChannel, text: str) -> tt.Message:
    """messages.sendMessage; the stored message (checked against updateMessageID)."""
    rid = random.getrandbits(63)
    res = await client(
        functions.messages.SendMessageRequest(peer=peer, message=text, random_id=rid)
    )
    msgs = channel_messages(res)
    assert len(msgs) == 1, res
    mapped = [u.id for u in _flatten(res) if isinstance(u, tt.UpdateMessageID)]
    assert mapped == [msgs[0].id]
    assert msgs[0].message == text and msgs[0].out
    return msgs[0]


async def history(client: TelegramClient, peer: Any, limit: int = 100) -> Any:
    """messages.getHistory (newest first)."""
    return await client(
        functions.messages.GetHistoryRequest(
            peer=peer,
            offset_id=0,
            offset_date=None,
            add_offset=0,
            limit=limit,
            max_id=0,
            min_id=0,
            hash=0,
        )
    )


async def full(client: TelegramClient, channel: tt.InputChannel) -> tt.ChannelFull:
    res = await client(functions.channels.GetFullChannelRequest(channel=channel))
    assert isinstance(res.full_chat, tt.ChannelFull)
    return res.full_chat


async def participants(
    client: TelegramClient, channel: tt.InputChannel, flt: Any, offset: int = 0, limit: int = 100
) -> Any:
    return await client(
        functions.channels.GetParticipantsRequest(
            channel=channel, filter=flt, offset=offset, limit=limit, hash=0
        )
    )


def ids_of(res: Any) -> dict[int, type]:
    """user id -> participant type of a channels.channelParticipants answer."""
    return {utils.get_peer_id(p.peer) if hasattr(p, "peer") else p.user_id: type(p) for p in res}


async def settle(*clients: TelegramClient) -> None:
    """A round trip on each client, then a short pause: pushes sent before have arrived."""
    await asyncio.gather(*(c(functions.updates.GetStateRequest()) for c in clients))
    await asyncio.sleep(SETTLE)


def jpeg(color: tuple[int, int, int] = (30, 120, 200), size: int = 320) -> bytes:
    from PIL import Image

    raw = io.BytesIO()
    Image.new("RGB", (size, size), color).save(raw, "JPEG")
    return raw.getvalue()


def invite_hash(link: str) -> str:
    tail = link.rstrip("/").rsplit("/", 1)[1]
    return tail.removeprefix("+")


NO_RIGHTS = tt.ChatBannedRights(until_date=None)


# ------------------------------------------- 1. a megagroup of three members
async def test_megagroup_every_member_sees_every_message_once(
    server: Server, telethon_for: Factory
) -> None:
    a1, ua = await signed_in(server, telethon_for, "Alice")
    a2 = await another_device(server, telethon_for, ua.id)
    b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    feeds = {"a1": watch(a1), "a2": watch(a2), "b": watch(b), "c": watch(c)}
    fa1, fa2, fb, fc = feeds.values()
    bob, carol = await knows(a1, ub, uc)
    made: dict[str, set[int]] = {k: set() for k in feeds}  # what each device did itself

    created = await a1(
        functions.channels.CreateChannelRequest(title="Team", about="our team", megagroup=True)
    )
    ch = the_channel(created)
    assert ch.id > 0 and ch.access_hash is not None
    assert ch.megagroup and not ch.broadcast and ch.creator and not ch.left
    assert ch.title == "Team"
    (first,) = channel_messages(created)
    assert isinstance(first.action, tt.MessageActionChannelCreate)
    assert first.action.title == "Team" and first.id == 1
    assert first.peer_id == tt.PeerChannel(ch.id)
    made["a1"].add(first.id)
    # Alice's other device learns the new group, with the service message once.
    await wait_for(lambda: fa2.service(ch.id))
    assert any(e.created for e in fa2.actions)

    added = await invite(a1, ch, bob, carol)
    assert added and all(isinstance(m.action, tt.MessageActionChatAddUser) for m in added)
    assert sorted(u for m in added for u in m.action.users) == sorted([ub.id, uc.id])
    assert all(m.from_id == tt.PeerUser(ua.id) for m in added)
    add_ids = {m.id for m in added}
    made["a1"] |= add_ids
    await wait_for(lambda: ch.id in fb.hashes and ch.id in fc.hashes)
    for f in (fb, fc):
        seen = f.chats[ch.id]
        assert isinstance(seen, tt.Channel) and seen.megagroup
        assert not seen.creator and not seen.left and seen.title == "Team"
        # Told of the membership by updateChannel.
        await wait_for(lambda f=f: any(u.channel_id == ch.id for u in f.raw_of(tt.UpdateChannel)))
    # Access hashes are per user (the same on all of one user's devices).
    assert fa2.hashes[ch.id] == ch.access_hash
    assert len({ch.access_hash, fb.hashes[ch.id], fc.hashes[ch.id]}) == 3

    # Everyone talks, from every device.
    peers = {k: await f.peer(ch.id) for k, f in feeds.items()}
    m_a = await send(a1, peers["a1"], "hello from alice")
    made["a1"].add(m_a.id)
    await wait_for(lambda: "hello from alice" in fb.texts(ch.id) + fc.texts(ch.id))
    m_b = await send(b, peers["b"], "hello from bob")
    made["b"].add(m_b.id)
    m_c = await send(c, peers["c"], "hello from carol")
    made["c"].add(m_c.id)
    m_a2 = await send(a2, peers["a2"], "alice's phone")
    made["a2"].add(m_a2.id)
    assert [m_a.from_id, m_b.from_id, m_c.from_id, m_a2.from_id] == [
        tt.PeerUser(ua.id),
        tt.PeerUser(ub.id),
        tt.PeerUser(uc.id),
        tt.PeerUser(ua.id),
    ]
    ids = [first.id, *sorted(add_ids), m_a.id, m_b.id, m_c.id, m_a2.id]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # A title change is a service message everyone gets.
    res = await a1(functions.channels.EditTitleRequest(channel=ich(ch), title="Team 2"))
    (title_msg,) = channel_messages(res)
    assert isinstance(title_msg.action, tt.MessageActionChatEditTitle)
    assert title_msg.action.title == "Team 2" and the_channel(res).title == "Team 2"
    made["a1"].add(title_msg.id)
    all_ids = {*ids, title_msg.id}

    def expected(name: str) -> set[int]:
        if name in ("b", "c"):  # members from their invitation on
            return all_ids - made[name] - add_ids - {first.id}
        return all_ids - made[name]

    await wait_for(
        lambda: all(expected(k).issubset(f.received_ids(ch.id)) for k, f in feeds.items())
    )
    await settle(a1, a2, b, c)
    for name, f in feeds.items():
        got = f.received_ids(ch.id)
        assert got == sorted(got), (name, f)
        assert len(got) == len(set(got)), (name, f)
        optional = add_ids if name in ("b", "c") else set()
        assert expected(name) <= set(got) <= expected(name) | optional, (name, f)
        # Pushed once, and never what the device did itself (that came in the answer).
        counts = Counter(f.pushed_ids(ch.id))
        assert all(n == 1 for n in counts.values()), (name, counts)
        assert not set(counts) & made[name], (name, counts)
    assert fb.texts(ch.id) == ["hello from alice", "hello from carol", "alice's phone"]
    assert [m.sender_id for m in fc.messages(ch.id)] == [ua.id, ub.id, ua.id]
    assert [m.out for m in fa2.messages(ch.id)] == [True, False, False]
    for f in (fa2, fb, fc):
        assert [a.title for a in f.actions_of(ch.id, tt.MessageActionChatEditTitle)] == ["Team 2"]

    # Members applying live updates never had a gap to fill (Telethon asks for
    # the difference 0.5 s after it sees one).
    await asyncio.sleep(0.6)
    for name, f in feeds.items():
        assert f.channel_diffs() == [], f"{name} {pts_trail(f, ch.id)} {f.calls}"

    # Bob edits his message; Carol deletes hers.
    await b(functions.messages.EditMessageRequest(peer=peers["b"], id=m_b.id, message="bob, v2"))
    aff = await c(functions.channels.DeleteMessagesRequest(channel=ich_of(fc, ch.id), id=[m_c.id]))
    assert isinstance(aff, tt.messages.AffectedMessages) and aff.pts_count == 1
    await wait_for(lambda: all(f.edited for f in (fa1, fa2, fc)))
    await wait_for(lambda: all(f.deleted(ch.id) for f in (fa1, fa2, fb)))
    await settle(a1, a2, b, c)
    for name in ("a1", "a2", "c"):
        assert [(m.id, m.message) for m in feeds[name].edited] == [(m_b.id, "bob, v2")], name
        assert len(feeds[name].pushed_of(tt.UpdateEditChannelMessage)) == 1, name
    assert fb.edited == [] and fb.pushed_of(tt.UpdateEditChannelMessage) == []
    for name in ("a1", "a2", "b"):
        assert feeds[name].deleted(ch.id) == [m_c.id], name
        upd = feeds[name].pushed_of(tt.UpdateDeleteChannelMessages)
        assert [(u.channel_id, u.messages, u.pts) for u in upd] == [(ch.id, [m_c.id], aff.pts)]
    # Carol's own deletion came back in her answer (affectedMessages with the
    # channel's pts); the server may also push it to her (Telethon does not file
    # that pts under the channel), but once at most.
    assert len(fc.pushed_of(tt.UpdateDeleteChannelMessages)) <= 1, pts_trail(fc, ch.id)

    # Every member reads the same history (a new member sees the earlier messages:
    # supergroups show the history to new members unless it is hidden).
    want = sorted(all_ids - {m_c.id}, reverse=True)
    for name, f in feeds.items():
        got = await history(f.client, peers[name])
        assert isinstance(got, tt.messages.ChannelMessages)
        assert [m.id for m in got.messages] == want, name
        assert got.pts == aff.pts
        texts = {m.id: m.message for m in got.messages if isinstance(m, tt.Message)}
        assert texts == {m_a.id: "hello from alice", m_b.id: "bob, v2", m_a2.id: "alice's phone"}
        outs = {m.id for m in got.messages if isinstance(m, tt.Message) and m.out}
        mine = {"a1": {m_a.id, m_a2.id}, "a2": {m_a.id, m_a2.id}, "b": {m_b.id}, "c": set()}
        assert outs == mine[name], name

    info = await full(b, await fb.input_channel(ch.id))
    assert info.participants_count == 3 and info.about == "our team"
    assert info.pts == aff.pts
    # Still no gap for the others. (Carol's device may ask: Telethon files the
    # pts of the messages.affectedMessages answering channels.deleteMessages under
    # the account's pts, sees a gap there and asks getDifference.)
    await asyncio.sleep(0.6)
    for name in ("a1", "a2", "b"):
        f = feeds[name]
        assert f.channel_diffs() == [], f"{name} {pts_trail(f, ch.id)} {f.calls}"


# ---------------------------------------------- 2. basic group -> supergroup
async def test_migrating_a_basic_group_keeps_members_and_history(
    server: Server, telethon_for: Factory
) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    fa, fb, fc = watch(a), watch(b), watch(c)
    bob, carol = await knows(a, ub, uc)
    made = await a(functions.messages.CreateChatRequest(users=[bob, carol], title="Old group"))
    chat = made.updates.chats[0]
    old_peer = tt.InputPeerChat(chat_id=chat.id)
    o1 = await a.send_message(tt.PeerChat(chat.id), "old one")
    o2 = await b.send_message(tt.PeerChat(chat.id), "old two")
    # Carol is an admin of the basic group: she stays one in the supergroup.
    assert await a(
        functions.messages.EditChatAdminRequest(chat_id=chat.id, user_id=carol, is_admin=True)
    )

    # Only the creator migrates.
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.messages.MigrateChatRequest(chat_id=chat.id))

    res = await a(functions.messages.MigrateChatRequest(chat_id=chat.id))
    ch = the_channel(res)
    assert ch.megagroup and ch.creator and ch.title == "Old group"
    (old,) = [x for x in res.chats if isinstance(x, tt.Chat)]
    assert old.id == chat.id and old.deactivated
    assert isinstance(old.migrated_to, tt.InputChannel) and old.migrated_to.channel_id == ch.id
    moved_to = [
        u.message
        for u in _flatten(res)
        if isinstance(u, tt.UpdateNewMessage)
        and isinstance(getattr(u.message, "action", None), tt.MessageActionChatMigrateTo)
    ]
    assert [m.action.channel_id for m in moved_to] == [ch.id]
    assert moved_to[0].peer_id == tt.PeerChat(chat.id)
    moved_from = [x for x in actions(res) if isinstance(x, tt.MessageActionChannelMigrateFrom)]
    assert [(x.title, x.chat_id) for x in moved_from] == [("Old group", chat.id)]

    # The members are members of the supergroup, and told so.
    await wait_for(lambda: ch.id in fb.hashes and ch.id in fc.hashes)
    gone = await b(functions.messages.GetChatsRequest(id=[chat.id]))
    (old_b,) = gone.chats
    assert isinstance(old_b, tt.Chat) and old_b.deactivated
    assert old_b.migrated_to is not None and old_b.migrated_to.channel_id == ch.id
    assert old_b.migrated_to.access_hash == fb.hashes[ch.id]  # Bob's own access hash
    await wait_for(
        lambda: any(
            isinstance(getattr(u.message, "action", None), tt.MessageActionChatMigrateTo)
            for u in fb.raw_of(tt.UpdateNewMessage)
        )
    )

    # The old history stays where it was, ending with the migration message.
    for client in (a, b):
        got = await history(client, old_peer)
        texts = [m.message for m in got.messages if isinstance(m, tt.Message)]
        assert texts == ["old two", "old one"]
        assert isinstance(got.messages[0], tt.MessageService)
        assert isinstance(got.messages[0].action, tt.MessageActionChatMigrateTo)

    # The new group starts with its own history and says where it came from.
    new_hist = await history(b, await fb.peer(ch.id))
    assert [type(m.action) for m in new_hist.messages] == [tt.MessageActionChannelMigrateFrom]
    info = await full(b, await fb.input_channel(ch.id))
    assert info.migrated_from_chat_id == chat.id
    assert info.migrated_from_max_id is not None
    assert o2.id <= info.migrated_from_max_id <= moved_to[0].id
    assert info.participants_count == 3
    members = await participants(a, ich(ch), tt.ChannelParticipantsRecent())
    assert members.count == 3
    assert ids_of(members.participants) == {
        ua.id: tt.ChannelParticipantCreator,
        ub.id: tt.ChannelParticipant,
        uc.id: tt.ChannelParticipantAdmin,
    }
    assert o1.id < o2.id

    # Talking goes on in the supergroup; the old group takes nothing more.
    await send(b, await fb.peer(ch.id), "new era")
    await wait_for(lambda: "new era" in fa.texts(ch.id) and "new era" in fc.texts(ch.id))
    with pytest.raises(errors.RPCError):
        await a.send_message(tt.PeerChat(chat.id), "still here?")
    with pytest.raises(errors.RPCError):
        await a(functions.messages.MigrateChatRequest(chat_id=chat.id))


# ------------------------------------------ 3. a public channel by username
async def test_public_channel_found_by_username_read_then_joined(
    server: Server, telethon_for: Factory
) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    d, _ud = await signed_in(server, telethon_for, "Dave")
    e, _ue = await signed_in(server, telethon_for, "Eve")
    fd = watch(d)
    ch = await create(a, "Daily news", about="news every day", broadcast=True)
    assert ch.broadcast and not ch.megagroup and ch.creator

    assert await a(functions.channels.CheckUsernameRequest(channel=ich(ch), username="news_daily"))
    assert await a(functions.channels.UpdateUsernameRequest(channel=ich(ch), username="news_daily"))
    p1 = await send(a, ipeer(ch), "post one")
    p2 = await send(a, ipeer(ch), "post two")
    assert p1.post and p2.post and p1.from_id is None

    # A non-member finds it (case does not matter) and reads it without joining.
    found = await d(functions.contacts.ResolveUsernameRequest(username="NEWS_Daily"))
    assert found.peer == tt.PeerChannel(ch.id)
    (seen,) = found.chats
    assert isinstance(seen, tt.Channel) and seen.id == ch.id and seen.username == "news_daily"
    assert seen.left and seen.broadcast and not seen.creator and seen.access_hash is not None
    d_peer = tt.InputPeerChannel(channel_id=ch.id, access_hash=seen.access_hash)
    d_chan = tt.InputChannel(channel_id=ch.id, access_hash=seen.access_hash)
    got = await history(d, d_peer)
    assert [m.message for m in got.messages if isinstance(m, tt.Message)] == [
        "post two",
        "post one",
    ]
    info = await full(d, d_chan)
    assert info.about == "news every day" and info.participants_count == 1
    # ... but cannot post in it.
    with pytest.raises((errors.ChatWriteForbiddenError, errors.ChannelPrivateError)):
        await d(functions.messages.SendMessageRequest(peer=d_peer, message="hi", random_id=1))

    # Eve also remembers it while it is public.
    e_found = await e(functions.contacts.ResolveUsernameRequest(username="news_daily"))
    e_chan = tt.InputChannel(channel_id=ch.id, access_hash=e_found.chats[0].access_hash)

    joined = await d(functions.channels.JoinChannelRequest(channel=d_chan))
    mine = the_channel(joined)
    assert mine.id == ch.id and not mine.left
    # No service message for subscribers joining a broadcast channel.
    assert channel_messages(joined) == []
    p3 = await send(a, ipeer(ch), "post three")
    await wait_for(lambda: fd.texts(ch.id) == ["post three"])
    (m,) = fd.messages(ch.id)
    assert m.id == p3.id and m.post and m.from_id is None and not m.out
    got = await history(d, d_peer)
    assert [m.message for m in got.messages if isinstance(m, tt.Message)] == [
        "post three",
        "post two",
        "post one",
    ]
    assert (await full(a, ich(ch))).participants_count == 2

    # Usernames are shared with users, whichever came first.
    await e(functions.account.UpdateUsernameRequest(username="eve_owns_this"))
    assert not await a(
        functions.channels.CheckUsernameRequest(channel=ich(ch), username="eve_owns_this")
    )
    with pytest.raises(errors.UsernameOccupiedError):
        await a(functions.channels.UpdateUsernameRequest(channel=ich(ch), username="eve_owns_this"))
    with pytest.raises(errors.UsernameOccupiedError):
        await e(functions.account.UpdateUsernameRequest(username="News_Daily"))
    for bad in ("ab", "bad name!", "9starts_with_digit"):
        with pytest.raises(errors.UsernameInvalidError):
            await a(functions.channels.UpdateUsernameRequest(channel=ich(ch), username=bad))
    # A plain member may not rename it.
    with pytest.raises(errors.ChatAdminRequiredError):
        await d(functions.channels.UpdateUsernameRequest(channel=d_chan, username="dave_news"))

    # Without its username the channel is private: strangers are turned away.
    assert await a(functions.channels.UpdateUsernameRequest(channel=ich(ch), username=""))
    with pytest.raises(errors.UsernameNotOccupiedError):
        await e(functions.contacts.ResolveUsernameRequest(username="news_daily"))
    with pytest.raises(errors.ChannelPrivateError):
        await history(e, tt.InputPeerChannel(channel_id=ch.id, access_hash=e_chan.access_hash))
    with pytest.raises(errors.ChannelPrivateError):
        await e(functions.channels.JoinChannelRequest(channel=e_chan))
    # The name is free again, for a user too.
    await e(functions.account.UpdateUsernameRequest(username="news_daily"))


# ------------------------------------- 4. catching up after being offline
async def test_member_offline_catches_up_through_channel_difference(
    start_server: Callable[..., Any], telethon_for: Factory
) -> None:
    async with start_server(**NO_FLOOD) as srv:
        a, ua = await signed_in(srv, telethon_for, "Alice")
        b, ub = await signed_in(srv, telethon_for, "Bob")
        fb = watch(b)
        (bob,) = await knows(a, ub)
        ch = await create(a, "Away")
        other = await create(a, "Away too", broadcast=True)
        await invite(a, ch, bob)
        await invite(a, other, bob)
        await wait_for(lambda: ch.id in fb.hashes and other.id in fb.hashes)
        before = await send(a, ipeer(ch), "before")
        await send(a, ipeer(other), "other before")
        await wait_for(lambda: fb.texts(ch.id) == ["before"] and fb.texts(other.id))
        await settle(b)
        b_chan = await fb.input_channel(ch.id)
        pts_before = (await full(b, b_chan)).pts
        other_before = (await full(b, await fb.input_channel(other.id))).pts
        # Telethon knows the channels' pts from the live updates.
        assert b._message_box.map[ch.id].pts == pts_before
        assert b._message_box.map[other.id].pts == other_before

        # Bob goes offline, keeping what a persistent session keeps: his key, his
        # update state, the channel's pts and access hash.
        key = b.session.save()
        state = tt.updates.State(**b._message_box.session_state()[0], unread_count=0)
        seen_channel, seen_other = fb.chats[ch.id], fb.chats[other.id]
        await b.disconnect()
        sent = []
        for i in range(30):
            sent.append(await send(a, ipeer(ch), f"away {i:02d}"))
            if i % 10 == 0:
                await send(a, ipeer(other), f"post {i:02d}")
        await a(functions.messages.EditMessageRequest(peer=ipeer(ch), id=before.id, message="b4"))
        await a(functions.channels.DeleteMessagesRequest(channel=ich(ch), id=[sent[5].id]))
        kept = [m for m in sent if m.id != sent[5].id]
        pts_now = (await full(a, ich(ch))).pts
        assert pts_now >= pts_before + 32

        # Back with a new client object (a new MTProto session: nothing is resent):
        # getDifference says the channel changed, Telethon asks getChannelDifference.
        b2 = await telethon_for(srv, ConnectionTcpFull, session=key, connect=False, catch_up=True)
        b2.session.set_update_state(0, state)
        b2.session.set_update_state(
            ch.id,
            tt.updates.State(pts=pts_before, qts=0, date=state.date, seq=0, unread_count=0),
        )
        b2.session.set_update_state(
            other.id,
            tt.updates.State(pts=other_before, qts=0, date=state.date, seq=0, unread_count=0),
        )
        b2.session.process_entities(
            tt.contacts.ResolvedPeer(
                peer=tt.PeerChannel(ch.id), chats=[seen_channel, seen_other], users=[]
            )
        )
        fb2 = watch(b2)
        await asyncio.wait_for(b2.connect(), 10)
        await b2.catch_up()
        await wait_for(
            lambda: len(fb2.texts(ch.id)) >= 29 and len(fb2.texts(other.id)) >= 3, timeout=10
        )
        await settle(b2)
        # Each once, in order, and not the one deleted meanwhile.
        assert fb2.texts(ch.id) == [m.message for m in kept], fb2
        assert [m.id for m in fb2.messages(ch.id)] == [m.id for m in kept]
        # (The edit comes in the difference's other_updates, checked below: Telethon
        # sets the channel's pts before applying them, so it drops them.)
        too_long = [
            u
            for n, r in fb2.calls
            if n == "GetDifferenceRequest"
            for u in getattr(r, "other_updates", [])
            if isinstance(u, tt.UpdateChannelTooLong)
        ]
        assert {u.channel_id for u in too_long} == {ch.id, other.id}, fb2
        assert fb2.channel_diffs().count("ChannelDifference") >= 2, fb2
        assert fb2.texts(other.id) == ["post 00", "post 10", "post 20"]
        assert all(m.post for m in fb2.messages(other.id))
        assert fb2.pushed_ids(ch.id) == [], fb2
        assert b2._message_box.map[ch.id].pts == pts_now
        b = b2  # Bob, back online

        # The same difference, asked for explicitly.
        diff = await b(
            functions.updates.GetChannelDifferenceRequest(
                channel=b_chan,
                filter=tt.ChannelMessagesFilterEmpty(),
                pts=pts_before,
                limit=100,
            )
        )
        assert isinstance(diff, tt.updates.ChannelDifference) and diff.final
        assert diff.pts == pts_now
        assert [m.message for m in diff.new_messages] == [m.message for m in kept]
        assert all(m.from_id == tt.PeerUser(ua.id) for m in diff.new_messages)
        edits = [u for u in diff.other_updates if isinstance(u, tt.UpdateEditChannelMessage)]
        assert [(u.message.id, u.message.message) for u in edits] == [(before.id, "b4")]
        assert any(isinstance(c, tt.Channel) and c.id == ch.id for c in diff.chats)
        empty = await b(
            functions.updates.GetChannelDifferenceRequest(
                channel=b_chan, filter=tt.ChannelMessagesFilterEmpty(), pts=diff.pts, limit=100
            )
        )
        assert isinstance(empty, tt.updates.ChannelDifferenceEmpty)
        assert empty.final and empty.pts == pts_now

        # Asked for fewer than are missing: slices in order, or "too long" with the
        # latest messages and the pts to go on from.
        part = await b(
            functions.updates.GetChannelDifferenceRequest(
                channel=b_chan, filter=tt.ChannelMessagesFilterEmpty(), pts=pts_before, limit=10
            )
        )
        if isinstance(part, tt.updates.ChannelDifferenceTooLong):
            assert part.dialog.pts == pts_now
            assert "away 29" in [getattr(m, "message", None) for m in part.messages]
        else:
            assert isinstance(part, tt.updates.ChannelDifference) and not part.final
            texts = [m.message for m in part.new_messages]
            pts = part.pts
            for _ in range(10):
                nxt = await b(
                    functions.updates.GetChannelDifferenceRequest(
                        channel=b_chan, filter=tt.ChannelMessagesFilterEmpty(), pts=pts, limit=10
                    )
                )
                if isinstance(nxt, tt.updates.ChannelDifferenceEmpty):
                    break
                assert isinstance(nxt, tt.updates.ChannelDifference)
                texts += [m.message for m in nxt.new_messages]
                pts = nxt.pts
                if nxt.final:
                    break
            assert texts == [m.message for m in kept]
            assert pts == pts_now


# ------------------------------------------------------ 5. banned users
async def test_restricted_and_kicked_members_are_refused(
    server: Server, telethon_for: Factory
) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    fb, fc = watch(b), watch(c)
    bob, carol = await knows(a, ub, uc)
    ch = await create(a, "Strict")
    await invite(a, ch, bob, carol)
    await wait_for(lambda: ch.id in fb.hashes and ch.id in fc.hashes)
    pb, pc = await fb.peer(ch.id), await fc.peer(ch.id)
    await send(b, pb, "bob speaks")

    # Bob may no longer send: told by updateChannel, refused on sending, still reads.
    await a(
        functions.channels.EditBannedRequest(
            channel=ich(ch),
            participant=utils.get_input_peer(bob),
            banned_rights=tt.ChatBannedRights(until_date=None, send_messages=True),
        )
    )
    await wait_for(lambda: any(u.channel_id == ch.id for u in fb.raw_of(tt.UpdateChannel)))
    with pytest.raises(errors.UserBannedInChannelError):
        await b(functions.messages.SendMessageRequest(peer=pb, message="let me", random_id=7))
    got = await history(b, pb)
    assert "bob speaks" in [getattr(m, "message", None) for m in got.messages]
    (mine,) = (
        await b(functions.channels.GetChannelsRequest(id=[await fb.input_channel(ch.id)]))
    ).chats
    assert isinstance(mine, tt.Channel) and mine.banned_rights is not None
    assert mine.banned_rights.send_messages
    part = await a(
        functions.channels.GetParticipantRequest(
            channel=ich(ch), participant=utils.get_input_peer(bob)
        )
    )
    assert isinstance(part.participant, tt.ChannelParticipantBanned)
    assert part.participant.banned_rights.send_messages
    assert not part.participant.banned_rights.view_messages
    assert part.participant.kicked_by == ua.id and not part.participant.left

    # Lifting the restriction lets him talk again.
    await a(
        functions.channels.EditBannedRequest(
            channel=ich(ch), participant=utils.get_input_peer(bob), banned_rights=NO_RIGHTS
        )
    )
    await send(b, pb, "thanks")
    part = await a(
        functions.channels.GetParticipantRequest(
            channel=ich(ch), participant=utils.get_input_peer(bob)
        )
    )
    assert isinstance(part.participant, tt.ChannelParticipant)

    # Carol is kicked: a service message for the others, updateChannel for her,
    # and the private group is closed to her.
    res = await a(
        functions.channels.EditBannedRequest(
            channel=ich(ch),
            participant=utils.get_input_peer(carol),
            banned_rights=tt.ChatBannedRights(until_date=None, view_messages=True),
        )
    )
    kicked = [x for x in actions(res) if isinstance(x, tt.MessageActionChatDeleteUser)]
    assert [x.user_id for x in kicked] == [uc.id]
    await wait_for(lambda: fb.actions_of(ch.id, tt.MessageActionChatDeleteUser))
    await wait_for(lambda: any(u.channel_id == ch.id for u in fc.raw_of(tt.UpdateChannel)))
    with pytest.raises(errors.ChannelPrivateError):
        await history(c, pc)
    with pytest.raises(errors.ChannelPrivateError):
        await c(functions.messages.SendMessageRequest(peer=pc, message="hey", random_id=8))
    with pytest.raises(errors.ChannelPrivateError):
        await c(functions.channels.GetFullChannelRequest(channel=ich_of(fc, ch.id)))
    with pytest.raises(errors.ChannelPrivateError):
        await c(
            functions.updates.GetChannelDifferenceRequest(
                channel=ich_of(fc, ch.id),
                filter=tt.ChannelMessagesFilterEmpty(),
                pts=1,
                limit=10,
            )
        )
    (forbidden,) = (await c(functions.channels.GetChannelsRequest(id=[ich_of(fc, ch.id)]))).chats
    assert isinstance(forbidden, tt.ChannelForbidden) and forbidden.id == ch.id
    # What is said now does not reach her.
    await send(a, ipeer(ch), "after carol")
    await wait_for(lambda: "after carol" in fb.texts(ch.id))
    await settle(c)
    assert "after carol" not in fc.texts(ch.id)
    assert not any(
        getattr(u.message, "message", None) == "after carol"
        for u in fc.pushed_of(tt.UpdateNewChannelMessage)
    )
    part = await a(
        functions.channels.GetParticipantRequest(
            channel=ich(ch), participant=utils.get_input_peer(carol)
        )
    )
    assert isinstance(part.participant, tt.ChannelParticipantBanned)
    assert part.participant.banned_rights.view_messages and part.participant.left
    # Unkicking does not bring her back by itself; inviting does.
    await a(
        functions.channels.EditBannedRequest(
            channel=ich(ch), participant=utils.get_input_peer(carol), banned_rights=NO_RIGHTS
        )
    )
    with pytest.raises(errors.ChannelPrivateError):
        await history(c, pc)
    await invite(a, ch, carol)
    got = await history(c, pc)
    assert "after carol" in [getattr(m, "message", None) for m in got.messages]

    # Bob leaves the private group: the others are told, and he is out.
    fc.raw.clear()
    left = await b(functions.channels.LeaveChannelRequest(channel=ich_of(fb, ch.id)))
    (gone,) = [x for x in left.chats if x.id == ch.id]
    # A private group is out of sight once left.
    assert isinstance(gone, tt.ChannelForbidden) or gone.left
    await wait_for(lambda: fc.actions_of(ch.id, tt.MessageActionChatDeleteUser))
    assert [x.user_id for x in fc.actions_of(ch.id, tt.MessageActionChatDeleteUser)] == [ub.id]
    with pytest.raises(errors.ChannelPrivateError):
        await history(b, pb)
    with pytest.raises(errors.ChannelPrivateError):
        await b(functions.messages.SendMessageRequest(peer=pb, message="back?", random_id=12))
    assert (await full(a, ich(ch))).participants_count == 2


# --------------------------------------------------------- 6. admin log
async def test_admin_log_lists_the_actions(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    fb, fc = watch(b), watch(c)
    bob, carol = await knows(a, ub, uc)
    ch = await create(a, "Logged")
    await invite(a, ch, bob, carol)
    await wait_for(lambda: ch.id in fb.hashes and ch.id in fc.hashes)
    to_pin = await send(a, ipeer(ch), "read the rules")
    carols = await send(c, await fc.peer(ch.id), "spam spam")

    await a(functions.channels.EditTitleRequest(channel=ich(ch), title="Logged 2"))
    await a(functions.channels.UpdateUsernameRequest(channel=ich(ch), username="logged_group"))
    uploaded = await a.upload_file(jpeg(), file_name="logo.jpg")
    res = await a(
        functions.channels.EditPhotoRequest(
            channel=ich(ch), photo=tt.InputChatUploadedPhoto(file=uploaded)
        )
    )
    (photo_act,) = actions(res)
    assert isinstance(photo_act, tt.MessageActionChatEditPhoto)
    assert isinstance(photo_act.photo, tt.Photo)
    assert isinstance(the_channel(res).photo, tt.ChatPhoto)
    # Members get the service message, and see the photo.
    await wait_for(lambda: fb.actions_of(ch.id, tt.MessageActionChatEditPhoto))
    (with_photo,) = (await b(functions.channels.GetChannelsRequest(id=[ich_of(fb, ch.id)]))).chats
    assert isinstance(with_photo.photo, tt.ChatPhoto)
    assert with_photo.photo.photo_id == photo_act.photo.id
    mod = tt.ChatAdminRights(delete_messages=True, ban_users=True, pin_messages=True)
    await a(
        functions.channels.EditAdminRequest(
            channel=ich(ch), user_id=utils.get_input_user(bob), admin_rights=mod, rank="mod"
        )
    )
    await a(functions.channels.ToggleSlowModeRequest(channel=ich(ch), seconds=30))
    # Bob (admin) deletes Carol's message, then restricts her.
    b_chan = await fb.input_channel(ch.id)
    (carol_for_b,) = await knows(b, uc)
    await b(functions.channels.DeleteMessagesRequest(channel=b_chan, id=[carols.id]))
    await b(
        functions.channels.EditBannedRequest(
            channel=b_chan,
            participant=utils.get_input_peer(carol_for_b),
            banned_rights=tt.ChatBannedRights(until_date=None, send_messages=True),
        )
    )
    await a(functions.messages.UpdatePinnedMessageRequest(peer=ipeer(ch), id=to_pin.id))

    async def log(client: TelegramClient, chan: tt.InputChannel, **kw: Any) -> Any:
        args: dict[str, Any] = {"q": "", "max_id": 0, "min_id": 0, "limit": 100, **kw}
        return await client(functions.channels.GetAdminLogRequest(channel=chan, **args))

    res = await log(a, ich(ch))
    kinds = [type(e.action) for e in res.events]
    want = [
        tt.ChannelAdminLogEventActionUpdatePinned,
        tt.ChannelAdminLogEventActionParticipantToggleBan,
        tt.ChannelAdminLogEventActionDeleteMessage,
        tt.ChannelAdminLogEventActionToggleSlowMode,
        tt.ChannelAdminLogEventActionParticipantToggleAdmin,
        tt.ChannelAdminLogEventActionChangePhoto,
        tt.ChannelAdminLogEventActionChangeUsername,
        tt.ChannelAdminLogEventActionChangeTitle,
    ]
    # Newest first; the invitations and posts may be logged too.
    other = (
        tt.ChannelAdminLogEventActionParticipantInvite,
        tt.ChannelAdminLogEventActionSendMessage,
    )
    assert [k for k in kinds if k not in other] == want
    ids = [e.id for e in res.events]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    by_kind = {type(e.action): e for e in res.events}
    title = by_kind[tt.ChannelAdminLogEventActionChangeTitle]
    assert (title.action.prev_value, title.action.new_value) == ("Logged", "Logged 2")
    assert title.user_id == ua.id
    uname = by_kind[tt.ChannelAdminLogEventActionChangeUsername].action
    assert (uname.prev_value, uname.new_value) == ("", "logged_group")
    photo = by_kind[tt.ChannelAdminLogEventActionChangePhoto].action
    assert isinstance(photo.prev_photo, tt.PhotoEmpty) and isinstance(photo.new_photo, tt.Photo)
    promo = by_kind[tt.ChannelAdminLogEventActionParticipantToggleAdmin].action
    assert isinstance(promo.prev_participant, tt.ChannelParticipant)
    assert isinstance(promo.new_participant, tt.ChannelParticipantAdmin)
    assert promo.new_participant.user_id == ub.id and promo.new_participant.rank == "mod"
    assert promo.new_participant.admin_rights.delete_messages
    slow = by_kind[tt.ChannelAdminLogEventActionToggleSlowMode].action
    assert (slow.prev_value, slow.new_value) == (0, 30)
    deleted = by_kind[tt.ChannelAdminLogEventActionDeleteMessage]
    assert deleted.user_id == ub.id and deleted.action.message.message == "spam spam"
    ban = by_kind[tt.ChannelAdminLogEventActionParticipantToggleBan]
    assert ban.user_id == ub.id
    assert utils.get_peer_id(ban.action.new_participant.peer) == uc.id
    assert ban.action.new_participant.banned_rights.send_messages
    pin = by_kind[tt.ChannelAdminLogEventActionUpdatePinned].action
    assert pin.message.id == to_pin.id
    assert {u.id for u in res.users} >= {ua.id, ub.id, uc.id}

    # Filters: by kind of event, by admin, by id range.
    promoted = await log(a, ich(ch), events_filter=tt.ChannelAdminLogEventsFilter(promote=True))
    assert [type(e.action) for e in promoted.events] == [
        tt.ChannelAdminLogEventActionParticipantToggleAdmin
    ]
    bans = await log(a, ich(ch), events_filter=tt.ChannelAdminLogEventsFilter(ban=True, kick=True))
    assert [type(e.action) for e in bans.events] == [
        tt.ChannelAdminLogEventActionParticipantToggleBan
    ]
    dels = await log(a, ich(ch), events_filter=tt.ChannelAdminLogEventsFilter(delete=True))
    assert [e.action.message.id for e in dels.events] == [carols.id]
    pins = await log(a, ich(ch), events_filter=tt.ChannelAdminLogEventsFilter(pinned=True))
    assert len(pins.events) == 1
    by_bob = await log(a, ich(ch), admins=[utils.get_input_user(bob)])
    assert [type(e.action) for e in by_bob.events] == [
        tt.ChannelAdminLogEventActionParticipantToggleBan,
        tt.ChannelAdminLogEventActionDeleteMessage,
    ]
    older = await log(a, ich(ch), max_id=ids[0])
    assert [e.id for e in older.events] == ids[1:]
    # Admins read the log; members do not.
    assert len((await log(b, b_chan)).events) == len(res.events)
    with pytest.raises(errors.ChatAdminRequiredError):
        await log(c, ich_of(fc, ch.id))
    # "info": title, about, username, photo, slow mode... (channelAdminLogEventsFilter).
    info = await log(a, ich(ch), events_filter=tt.ChannelAdminLogEventsFilter(info=True))
    assert {type(e.action) for e in info.events} == {
        tt.ChannelAdminLogEventActionChangeTitle,
        tt.ChannelAdminLogEventActionChangeUsername,
        tt.ChannelAdminLogEventActionChangePhoto,
        tt.ChannelAdminLogEventActionToggleSlowMode,
    }


# -------------------------------------------------- 7. admin rights enforced
async def test_admin_rights_are_enforced(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    _d, ud = await signed_in(server, telethon_for, "Dave")
    fb, fc = watch(b), watch(c)
    bob, carol = await knows(a, ub, uc)
    ch = await create(a, "Ruled")
    await invite(a, ch, bob, carol)
    await wait_for(lambda: ch.id in fb.hashes and ch.id in fc.hashes)
    b_chan, b_peer = await fb.input_channel(ch.id), await fb.peer(ch.id)
    carols = await send(c, await fc.peer(ch.id), "carol's words")
    carol_for_b, dave_for_b, alice_for_b = await knows(b, uc, ud, ua)

    # A plain member: no title, no deleting others' messages, no bans, no admins,
    # no admin log.
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.channels.EditTitleRequest(channel=b_chan, title="Bob's"))
    with pytest.raises((errors.ChatAdminRequiredError, errors.MessageDeleteForbiddenError)):
        await b(functions.channels.DeleteMessagesRequest(channel=b_chan, id=[carols.id]))
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(
            functions.channels.EditBannedRequest(
                channel=b_chan,
                participant=utils.get_input_peer(carol_for_b),
                banned_rights=tt.ChatBannedRights(until_date=None, view_messages=True),
            )
        )
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(
            functions.channels.EditAdminRequest(
                channel=b_chan,
                user_id=utils.get_input_user(carol_for_b),
                admin_rights=tt.ChatAdminRights(change_info=True),
                rank="",
            )
        )
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.channels.ToggleSlowModeRequest(channel=b_chan, seconds=10))
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.channels.DeleteChannelRequest(channel=b_chan))
    # Nobody edits another member's message in a supergroup, not even the creator.
    with pytest.raises(errors.MessageAuthorRequiredError):
        await b(functions.messages.EditMessageRequest(peer=b_peer, id=carols.id, message="x"))
    with pytest.raises(errors.MessageAuthorRequiredError):
        await a(functions.messages.EditMessageRequest(peer=ipeer(ch), id=carols.id, message="x"))
    got = await history(b, b_peer)
    assert "carol's words" in [getattr(m, "message", None) for m in got.messages]

    # Alice makes Bob an admin who may change info, delete, ban, invite and add
    # admins (but not pin): Bob is told by updateChannel and sees his rights.
    rights = tt.ChatAdminRights(
        change_info=True, delete_messages=True, ban_users=True, invite_users=True, add_admins=True
    )
    await a(
        functions.channels.EditAdminRequest(
            channel=ich(ch), user_id=utils.get_input_user(bob), admin_rights=rights, rank="boss"
        )
    )
    await wait_for(lambda: any(u.channel_id == ch.id for u in fb.raw_of(tt.UpdateChannel)))
    (mine,) = (await b(functions.channels.GetChannelsRequest(id=[b_chan]))).chats
    assert mine.admin_rights is not None and mine.admin_rights.ban_users
    assert not mine.admin_rights.pin_messages and not mine.creator
    me = await b(
        functions.channels.GetParticipantRequest(channel=b_chan, participant=tt.InputPeerSelf())
    )
    assert isinstance(me.participant, tt.ChannelParticipantAdmin)
    assert me.participant.rank == "boss" and me.participant.promoted_by == ua.id

    await b(functions.channels.EditTitleRequest(channel=b_chan, title="Bob's"))
    aff = await b(functions.channels.DeleteMessagesRequest(channel=b_chan, id=[carols.id]))
    assert aff.pts_count == 1
    got = await history(a, ipeer(ch))
    assert "carol's words" not in [getattr(m, "message", None) for m in got.messages]
    # He cannot hand out a right he does not have, nor touch the creator.
    with pytest.raises(errors.RightForbiddenError):
        await b(
            functions.channels.EditAdminRequest(
                channel=b_chan,
                user_id=utils.get_input_user(carol_for_b),
                admin_rights=tt.ChatAdminRights(pin_messages=True),
                rank="",
            )
        )
    with pytest.raises(errors.RPCError):
        await b(
            functions.channels.EditBannedRequest(
                channel=b_chan,
                participant=utils.get_input_peer(alice_for_b),
                banned_rights=tt.ChatBannedRights(until_date=None, view_messages=True),
            )
        )
    with pytest.raises(errors.RPCError):
        await b(
            functions.channels.EditAdminRequest(
                channel=b_chan,
                user_id=utils.get_input_user(alice_for_b),
                admin_rights=tt.ChatAdminRights(),
                rank="",
            )
        )
    # He can invite (admins may) and ban.
    await b(functions.channels.InviteToChannelRequest(channel=b_chan, users=[dave_for_b]))
    await b(
        functions.channels.EditBannedRequest(
            channel=b_chan,
            participant=utils.get_input_peer(dave_for_b),
            banned_rights=tt.ChatBannedRights(until_date=None, view_messages=True),
        )
    )
    kicked = await participants(a, ich(ch), tt.ChannelParticipantsKicked(q=""))
    assert list(ids_of(kicked.participants)) == [ud.id]
    # Pinning is not among his rights.
    bobs = await send(b, b_peer, "pin me")
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.messages.UpdatePinnedMessageRequest(peer=b_peer, id=bobs.id))

    # Demoted, he is a plain member again.
    fb.raw.clear()
    await a(
        functions.channels.EditAdminRequest(
            channel=ich(ch),
            user_id=utils.get_input_user(bob),
            admin_rights=tt.ChatAdminRights(),
            rank="",
        )
    )
    await wait_for(lambda: any(u.channel_id == ch.id for u in fb.raw_of(tt.UpdateChannel)))
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.channels.EditTitleRequest(channel=b_chan, title="Bob's again"))
    me = await b(
        functions.channels.GetParticipantRequest(channel=b_chan, participant=tt.InputPeerSelf())
    )
    assert isinstance(me.participant, tt.ChannelParticipantSelf | tt.ChannelParticipant)


async def test_default_banned_rights_of_a_megagroup(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    fb = watch(b)
    (bob,) = await knows(a, ub)
    ch = await create(a, "Quiet")
    await invite(a, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)
    b_chan, b_peer = await fb.input_channel(ch.id), await fb.peer(ch.id)

    quiet = tt.ChatBannedRights(
        until_date=None, send_messages=True, change_info=True, pin_messages=True
    )
    res = await a(
        functions.messages.EditChatDefaultBannedRightsRequest(peer=ipeer(ch), banned_rights=quiet)
    )
    assert the_channel(res).default_banned_rights.send_messages
    (seen,) = (await b(functions.channels.GetChannelsRequest(id=[b_chan]))).chats
    assert seen.default_banned_rights.send_messages and seen.default_banned_rights.change_info
    with pytest.raises((errors.ChatWriteForbiddenError, errors.ChatSendPlainForbiddenError)):
        await b(functions.messages.SendMessageRequest(peer=b_peer, message="psst", random_id=3))
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.channels.EditTitleRequest(channel=b_chan, title="Loud"))
    await send(a, ipeer(ch), "admins still talk")
    await a(
        functions.messages.EditChatDefaultBannedRightsRequest(
            peer=ipeer(ch), banned_rights=NO_RIGHTS
        )
    )
    await send(b, b_peer, "free again")


# ------------------------------------------------ 8. getParticipants filters
async def test_get_participants_filters(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice", "Anchor")
    _b, ub = await signed_in(server, telethon_for, "Bob", "Builder")
    _c, uc = await signed_in(server, telethon_for, "Carol", "Singer")
    _d, ud = await signed_in(server, telethon_for, "Dave", "Digger")
    e, ue = await signed_in(server, telethon_for, "Eve", "Smith")
    f, uf = await signed_in(server, telethon_for, "Frank", "Outsider")
    fe = watch(e)
    bob, carol, dave, eve = await knows(a, ub, uc, ud, ue)
    ch = await create(a, "Crowd")
    await invite(a, ch, bob, carol, dave, eve)
    chan = ich(ch)
    await a(
        functions.channels.EditAdminRequest(
            channel=chan,
            user_id=utils.get_input_user(bob),
            admin_rights=tt.ChatAdminRights(pin_messages=True),
            rank="pinner",
        )
    )
    await a(
        functions.channels.EditBannedRequest(
            channel=chan,
            participant=utils.get_input_peer(carol),
            banned_rights=tt.ChatBannedRights(until_date=None, send_messages=True),
        )
    )
    await a(
        functions.channels.EditBannedRequest(
            channel=chan,
            participant=utils.get_input_peer(dave),
            banned_rights=tt.ChatBannedRights(until_date=None, view_messages=True),
        )
    )

    recent = await participants(a, chan, tt.ChannelParticipantsRecent())
    assert isinstance(recent, tt.channels.ChannelParticipants)
    assert recent.count == 4
    assert ids_of(recent.participants) == {
        ua.id: tt.ChannelParticipantCreator,
        ub.id: tt.ChannelParticipantAdmin,
        uc.id: tt.ChannelParticipantBanned,
        ue.id: tt.ChannelParticipant,
    }
    assert {u.id for u in recent.users} >= {ua.id, ub.id, uc.id, ue.id}
    page = await participants(a, chan, tt.ChannelParticipantsRecent(), offset=1, limit=2)
    assert page.count == 4 and len(page.participants) == 2
    rest = await participants(a, chan, tt.ChannelParticipantsRecent(), offset=3, limit=2)
    assert len(rest.participants) == 1
    seen = {*ids_of(page.participants), *ids_of(rest.participants)}
    assert len(seen) == 3 and seen < set(ids_of(recent.participants))

    admins = await participants(a, chan, tt.ChannelParticipantsAdmins())
    assert ids_of(admins.participants) == {
        ua.id: tt.ChannelParticipantCreator,
        ub.id: tt.ChannelParticipantAdmin,
    }
    (bob_admin,) = [p for p in admins.participants if isinstance(p, tt.ChannelParticipantAdmin)]
    assert bob_admin.rank == "pinner" and bob_admin.promoted_by == ua.id
    assert bob_admin.admin_rights.pin_messages and not bob_admin.admin_rights.ban_users

    kicked = await participants(a, chan, tt.ChannelParticipantsKicked(q=""))
    assert ids_of(kicked.participants) == {ud.id: tt.ChannelParticipantBanned}
    assert kicked.participants[0].banned_rights.view_messages
    assert kicked.participants[0].kicked_by == ua.id
    assert ids_of(
        (await participants(a, chan, tt.ChannelParticipantsKicked(q="digg"))).participants
    ) == {ud.id: tt.ChannelParticipantBanned}
    assert (await participants(a, chan, tt.ChannelParticipantsKicked(q="bob"))).participants == []

    banned = await participants(a, chan, tt.ChannelParticipantsBanned(q=""))
    assert ids_of(banned.participants) == {uc.id: tt.ChannelParticipantBanned}
    assert banned.participants[0].banned_rights.send_messages
    assert not banned.participants[0].banned_rights.view_messages

    found = await participants(a, chan, tt.ChannelParticipantsSearch(q="carol"))
    assert list(ids_of(found.participants)) == [uc.id]
    found = await participants(a, chan, tt.ChannelParticipantsSearch(q="smith"))
    assert list(ids_of(found.participants)) == [ue.id]
    found = await participants(a, chan, tt.ChannelParticipantsSearch(q="dave"))
    assert found.participants == []  # kicked users are not members
    found = await participants(a, chan, tt.ChannelParticipantsSearch(q=""))
    assert set(ids_of(found.participants)) == {ua.id, ub.id, uc.id, ue.id}

    # getParticipant: as the others and as oneself.
    await wait_for(lambda: ch.id in fe.hashes)
    e_chan = await fe.input_channel(ch.id)
    me = await e(
        functions.channels.GetParticipantRequest(channel=e_chan, participant=tt.InputPeerSelf())
    )
    assert isinstance(me.participant, tt.ChannelParticipantSelf)
    assert me.participant.user_id == ue.id and me.participant.inviter_id == ua.id
    (alice_for_e,) = await knows(e, ua)
    creator = await e(
        functions.channels.GetParticipantRequest(
            channel=e_chan, participant=utils.get_input_peer(alice_for_e)
        )
    )
    assert isinstance(creator.participant, tt.ChannelParticipantCreator)
    (frank,) = await knows(a, uf)
    with pytest.raises(errors.UserNotParticipantError):
        await a(
            functions.channels.GetParticipantRequest(
                channel=chan, participant=utils.get_input_peer(frank)
            )
        )

    info = await full(a, chan)
    assert (info.participants_count, info.admins_count) == (4, 2)
    assert (info.kicked_count, info.banned_count) == (1, 1)
    assert info.can_view_participants
    # The admins list is open to members too; strangers see nothing of a private group.
    admins_e = await participants(e, e_chan, tt.ChannelParticipantsAdmins())
    assert set(ids_of(admins_e.participants)) == {ua.id, ub.id}
    with pytest.raises((errors.ChannelPrivateError, errors.ChannelInvalidError)):
        await participants(f, chan, tt.ChannelParticipantsRecent())


# ------------------------------------------------------------ 9. slow mode
async def test_slow_mode(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice", flood_sleep_threshold=0)
    b, ub = await signed_in(server, telethon_for, "Bob", flood_sleep_threshold=0)
    fb = watch(b)
    (bob,) = await knows(a, ub)
    ch = await create(a, "Slow")
    await invite(a, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)
    b_chan, b_peer = await fb.input_channel(ch.id), await fb.peer(ch.id)

    with pytest.raises(errors.SecondsInvalidError):
        await a(functions.channels.ToggleSlowModeRequest(channel=ich(ch), seconds=7))
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.channels.ToggleSlowModeRequest(channel=b_chan, seconds=10))
    res = await a(functions.channels.ToggleSlowModeRequest(channel=ich(ch), seconds=10))
    assert the_channel(res).slowmode_enabled
    assert (await full(b, b_chan)).slowmode_seconds == 10

    await send(b, b_peer, "one")
    with pytest.raises(errors.SlowModeWaitError) as waited:
        await b(functions.messages.SendMessageRequest(peer=b_peer, message="two", random_id=5))
    assert 0 < waited.value.seconds <= 10
    # Admins are not slowed down.
    await send(a, ipeer(ch), "admin one")
    await send(a, ipeer(ch), "admin two")
    got = await history(a, ipeer(ch))
    texts = [m.message for m in got.messages if isinstance(m, tt.Message)]
    assert texts == ["admin two", "admin one", "one"]

    res = await a(functions.channels.ToggleSlowModeRequest(channel=ich(ch), seconds=0))
    assert not the_channel(res).slowmode_enabled
    await send(b, b_peer, "two")
    await send(b, b_peer, "three")
    assert not (await full(b, b_chan)).slowmode_seconds


# -------------------------------------------------- 10. broadcast channels
async def test_broadcast_channel_posts_views_and_signatures(
    server: Server, telethon_for: Factory
) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    fb, fc = watch(b), watch(c)
    bob, carol = await knows(a, ub, uc)
    ch = await create(a, "Herald", about="the news", broadcast=True)
    assert ch.broadcast and not ch.megagroup and not ch.signatures
    service = await invite(a, ch, bob, carol)
    assert service == []  # joins are not announced in broadcast channels
    await wait_for(lambda: ch.id in fb.hashes and ch.id in fc.hashes)
    b_peer, c_peer = await fb.peer(ch.id), await fc.peer(ch.id)
    seen = fb.chats[ch.id]
    assert seen.broadcast and not seen.creator and seen.admin_rights is None

    # Only admins post; posts are the channel's, not their author's.
    with pytest.raises(errors.ChatWriteForbiddenError):
        await b(functions.messages.SendMessageRequest(peer=b_peer, message="me too", random_id=9))
    post = await send(a, ipeer(ch), "news one")
    assert post.post and post.from_id is None and post.peer_id == tt.PeerChannel(ch.id)
    assert post.post_author is None
    await wait_for(lambda: fb.texts(ch.id) == ["news one"] and fc.texts(ch.id) == ["news one"])
    (got,) = fb.messages(ch.id)
    assert got.post and got.from_id is None and not got.out
    assert got.views is not None

    # Views: each subscriber's view counts.
    async def views(client: TelegramClient, peer: Any, increment: bool) -> int:
        res = await client(
            functions.messages.GetMessagesViewsRequest(peer=peer, id=[post.id], increment=increment)
        )
        (v,) = res.views
        assert v.views is not None
        return int(v.views)

    v_b = await views(b, b_peer, True)
    assert v_b >= 1
    v_c = await views(c, c_peer, True)
    assert v_c == v_b + 1
    assert await views(a, ipeer(ch), False) == v_c
    hist = await history(b, b_peer)
    (stored,) = [m for m in hist.messages if isinstance(m, tt.Message)]
    assert stored.views == v_c
    assert not any(
        isinstance(getattr(m, "action", None), tt.MessageActionChatAddUser) for m in hist.messages
    )

    # Subscribers do not see who else is subscribed.
    b_chan = await fb.input_channel(ch.id)
    assert not (await full(b, b_chan)).can_view_participants
    with pytest.raises(errors.ChatAdminRequiredError):
        await participants(b, b_chan, tt.ChannelParticipantsRecent())
    with pytest.raises((errors.MessageAuthorRequiredError, errors.ChatAdminRequiredError)):
        await b(functions.messages.EditMessageRequest(peer=b_peer, id=post.id, message="hacked"))

    # Edits reach the subscribers.
    await a(functions.messages.EditMessageRequest(peer=ipeer(ch), id=post.id, message="news 1"))
    await wait_for(lambda: fb.edited)
    assert [(m.id, m.message, m.post) for m in fb.edited] == [(post.id, "news 1", True)]

    # Signatures: the author's name goes with each post.
    res = await a(
        functions.channels.ToggleSignaturesRequest(channel=ich(ch), signatures_enabled=True)
    )
    assert the_channel(res).signatures
    signed = await send(a, ipeer(ch), "signed news")
    assert signed.post and signed.post_author == "Alice" and signed.from_id is None
    await wait_for(lambda: "signed news" in fb.texts(ch.id))
    assert fb.messages(ch.id)[-1].post_author == "Alice"

    # An admin with post_messages posts too (signed with her name); Bob still cannot.
    await a(
        functions.channels.EditAdminRequest(
            channel=ich(ch),
            user_id=utils.get_input_user(carol),
            admin_rights=tt.ChatAdminRights(post_messages=True),
            rank="editor",
        )
    )
    by_carol = await send(c, c_peer, "carol reports")
    assert by_carol.post and by_carol.post_author == "Carol"
    # Without edit_messages she edits her own posts only.
    await c(functions.messages.EditMessageRequest(peer=c_peer, id=by_carol.id, message="carol: v2"))
    with pytest.raises((errors.MessageAuthorRequiredError, errors.ChatAdminRequiredError)):
        await c(functions.messages.EditMessageRequest(peer=c_peer, id=post.id, message="mine"))
    await wait_for(lambda: "carol reports" in fb.texts(ch.id))
    with pytest.raises(errors.ChatWriteForbiddenError):
        await b(functions.messages.SendMessageRequest(peer=b_peer, message="still me", random_id=2))
    await a(functions.channels.ToggleSignaturesRequest(channel=ich(ch), signatures_enabled=None))
    unsigned = await send(a, ipeer(ch), "unsigned again")
    assert unsigned.post_author is None
    # Signatures belong to broadcast channels.
    group = await create(a, "Not a channel")
    with pytest.raises(errors.RPCError):
        await a(
            functions.channels.ToggleSignaturesRequest(channel=ich(group), signatures_enabled=True)
        )

    # A subscriber forwards a post: it says where it came from.
    (alice_for_b,) = await knows(b, ua)
    fwd = await b(
        functions.messages.ForwardMessagesRequest(
            from_peer=b_peer,
            id=[post.id],
            to_peer=utils.get_input_peer(alice_for_b),
            random_id=[random.getrandbits(63)],
        )
    )
    (fm,) = [u.message for u in _flatten(fwd) if isinstance(u, tt.UpdateNewMessage)]
    assert fm.message == "news 1" and fm.fwd_from is not None
    assert fm.fwd_from.from_id == tt.PeerChannel(ch.id) and fm.fwd_from.channel_post == post.id

    # Searching the channel.
    found = await b(
        functions.messages.SearchRequest(
            peer=b_peer,
            q="news",
            filter=tt.InputMessagesFilterEmpty(),
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
    assert [m.message for m in found.messages] == ["signed news", "news 1"]
    info = await full(b, await fb.input_channel(ch.id))
    assert info.participants_count == 3 and info.about == "the news"
    # The post counts its forwards (Bob's, above).
    counted = await a(
        functions.messages.GetMessagesViewsRequest(peer=ipeer(ch), id=[post.id], increment=False)
    )
    assert counted.views[0].forwards == 1


# ---------------------------------------------------- 11. deleting channels
async def test_delete_channel(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    fb = watch(b)
    (bob,) = await knows(a, ub)
    ch = await create(a, "Doomed")
    await invite(a, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)
    b_chan, b_peer = await fb.input_channel(ch.id), await fb.peer(ch.id)
    await send(b, b_peer, "last words")
    assert ch.id in [utils.resolve_id(d.id)[0] for d in await b.get_dialogs()]

    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.channels.DeleteChannelRequest(channel=b_chan))
    fb.raw.clear()
    await a(functions.channels.DeleteChannelRequest(channel=ich(ch)))
    await wait_for(lambda: any(u.channel_id == ch.id for u in fb.raw_of(tt.UpdateChannel)))

    for client, chan, peer in ((a, ich(ch), ipeer(ch)), (b, b_chan, b_peer)):
        with pytest.raises(errors.ChannelPrivateError):
            await history(client, peer)
        with pytest.raises(errors.ChannelPrivateError):
            await client(functions.messages.SendMessageRequest(peer=peer, message="?", random_id=4))
        with pytest.raises(errors.ChannelPrivateError):
            await client(functions.channels.GetFullChannelRequest(channel=chan))
        try:
            got = await client(functions.channels.GetChannelsRequest(id=[chan]))
        except errors.ChannelPrivateError:
            pass
        else:
            assert [type(x) for x in got.chats] == [tt.ChannelForbidden]
    assert ch.id not in [utils.resolve_id(d.id)[0] for d in await b.get_dialogs()]
    assert ch.id not in [utils.resolve_id(d.id)[0] for d in await a.get_dialogs()]


# --------------------------------------------------- 12. channel invite links
async def test_channel_invite_links(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    d, _ud = await signed_in(server, telethon_for, "Dave")
    e, _ue = await signed_in(server, telethon_for, "Eve")
    f, _uf = await signed_in(server, telethon_for, "Frank")
    fa, fb, fd = watch(a), watch(b), watch(d)
    (bob,) = await knows(a, ub)
    ch = await create(a, "Secret club")
    await invite(a, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)

    link = await a(functions.messages.ExportChatInviteRequest(peer=ipeer(ch)))
    assert isinstance(link, tt.ChatInviteExported) and link.admin_id == ua.id
    code = invite_hash(link.link)
    info = await d(functions.messages.CheckChatInviteRequest(hash=code))
    assert isinstance(info, tt.ChatInvite)
    assert info.channel and info.megagroup and not info.broadcast and not info.public
    assert info.title == "Secret club" and info.participants_count == 2

    joined = await d(functions.messages.ImportChatInviteRequest(hash=code))
    mine = the_channel(joined)
    assert mine.id == ch.id and not mine.left and mine.megagroup
    (act,) = actions(joined)
    assert isinstance(act, tt.MessageActionChatJoinedByLink) and act.inviter_id == ua.id
    await wait_for(lambda: fa.actions_of(ch.id, tt.MessageActionChatJoinedByLink))
    await wait_for(lambda: fb.actions_of(ch.id, tt.MessageActionChatJoinedByLink))
    assert any(ev.user_joined or ev.user_added for ev in fb.actions)
    again = await d(functions.messages.CheckChatInviteRequest(hash=code))
    assert isinstance(again, tt.ChatInviteAlready)
    assert isinstance(again.chat, tt.Channel) and again.chat.id == ch.id
    with pytest.raises(errors.UserAlreadyParticipantError):
        await d(functions.messages.ImportChatInviteRequest(hash=code))
    d_peer = tt.InputPeerChannel(channel_id=ch.id, access_hash=mine.access_hash)
    await send(a, ipeer(ch), "welcome dave")
    await wait_for(lambda: "welcome dave" in fd.texts(ch.id))
    await send(d, d_peer, "glad to be here")
    assert (await full(a, ich(ch))).participants_count == 3

    # A link with one use; a plain member exports none.
    one = await a(functions.messages.ExportChatInviteRequest(peer=ipeer(ch), usage_limit=1))
    await e(functions.messages.ImportChatInviteRequest(hash=invite_hash(one.link)))
    with pytest.raises(errors.InviteHashExpiredError):
        await f(functions.messages.ImportChatInviteRequest(hash=invite_hash(one.link)))
    with pytest.raises(errors.InviteHashInvalidError):
        await f(functions.messages.CheckChatInviteRequest(hash="nosuchlinkatall"))

    # Broadcast channels too.
    news = await create(a, "Secret news", broadcast=True)
    nlink = await a(functions.messages.ExportChatInviteRequest(peer=ipeer(news)))
    ninfo = await f(functions.messages.CheckChatInviteRequest(hash=invite_hash(nlink.link)))
    assert isinstance(ninfo, tt.ChatInvite) and ninfo.channel and ninfo.broadcast
    assert not ninfo.megagroup and ninfo.title == "Secret news"
    njoined = await f(functions.messages.ImportChatInviteRequest(hash=invite_hash(nlink.link)))
    sub = the_channel(njoined)
    assert sub.broadcast and not sub.left
    f_chan = tt.InputChannel(channel_id=news.id, access_hash=sub.access_hash)
    with pytest.raises(errors.ChatAdminRequiredError):
        await f(
            functions.messages.ExportChatInviteRequest(
                peer=tt.InputPeerChannel(channel_id=news.id, access_hash=sub.access_hash)
            )
        )
    assert (await full(f, f_chan)).participants_count == 2


async def test_revoked_channel_invite_link(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    f, _uf = await signed_in(server, telethon_for, "Frank")
    ch = await create(a, "Closed club")
    link = await a(functions.messages.ExportChatInviteRequest(peer=ipeer(ch)))
    code = invite_hash(link.link)
    assert isinstance(await f(functions.messages.CheckChatInviteRequest(hash=code)), tt.ChatInvite)
    # A revoked link no longer lets anyone in.
    await a(
        functions.messages.EditExportedChatInviteRequest(
            peer=ipeer(ch), link=link.link, revoked=True
        )
    )
    with pytest.raises(errors.InviteHashExpiredError):
        await f(functions.messages.ImportChatInviteRequest(hash=code))


# ------------------------------- reads, pins, getMessages, media, full info
async def test_reads_pins_messages_and_full_channel(server: Server, telethon_for: Factory) -> None:
    a1, ua = await signed_in(server, telethon_for, "Alice")
    a2 = await another_device(server, telethon_for, ua.id)
    b, ub = await signed_in(server, telethon_for, "Bob")
    fa1, fa2, fb = watch(a1), watch(a2), watch(b)
    (bob,) = await knows(a1, ub)
    ch = await create(a1, "Reading club", about="we read")
    await invite(a1, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)
    b_chan, b_peer = await fb.input_channel(ch.id), await fb.peer(ch.id)
    m1 = await send(b, b_peer, "one")
    m2 = await send(b, b_peer, "two")
    m3 = await send(b, b_peer, "three")
    await wait_for(lambda: len(fa1.texts(ch.id)) == 3 and len(fa2.texts(ch.id)) == 3)

    info = await full(a1, ich(ch))
    assert info.about == "we read" and info.participants_count == 2
    assert info.read_inbox_max_id < m1.id
    dlg = await a1(
        functions.messages.GetPeerDialogsRequest(peers=[tt.InputDialogPeer(peer=ipeer(ch))])
    )
    (row,) = dlg.dialogs
    assert row.peer == tt.PeerChannel(ch.id) and row.top_message == m3.id
    assert row.unread_count == 3 and row.pts == info.pts

    # Alice reads on one device: her other device and the sender hear of it.
    assert await a1(functions.channels.ReadHistoryRequest(channel=ich(ch), max_id=m3.id)) is True
    await wait_for(lambda: fa2.raw_of(tt.UpdateReadChannelInbox))
    await wait_for(lambda: fb.raw_of(tt.UpdateReadChannelOutbox))
    (inbox,) = fa2.raw_of(tt.UpdateReadChannelInbox)
    assert (inbox.channel_id, inbox.max_id, inbox.still_unread_count) == (ch.id, m3.id, 0)
    (outbox,) = fb.raw_of(tt.UpdateReadChannelOutbox)
    assert (outbox.channel_id, outbox.max_id) == (ch.id, m3.id)
    await settle(a1)
    assert fa1.pushed_of(tt.UpdateReadChannelInbox) == []
    (row,) = (
        await a2(
            functions.messages.GetPeerDialogsRequest(
                peers=[tt.InputDialogPeer(peer=await fa2.peer(ch.id))]
            )
        )
    ).dialogs
    assert row.unread_count == 0 and row.read_inbox_max_id == m3.id
    (row_b,) = (
        await b(functions.messages.GetPeerDialogsRequest(peers=[tt.InputDialogPeer(peer=b_peer)]))
    ).dialogs
    assert row_b.read_outbox_max_id == m3.id
    assert (await full(a1, ich(ch))).read_inbox_max_id == m3.id

    # channels.getMessages / getChannels.
    got = await a1(
        functions.channels.GetMessagesRequest(
            channel=ich(ch),
            id=[
                tt.InputMessageID(id=m1.id),
                tt.InputMessageID(id=m3.id),
                tt.InputMessageID(id=m3.id + 1000),
            ],
        )
    )
    assert isinstance(got, tt.messages.ChannelMessages)
    by_id = {m.id: m for m in got.messages}
    assert by_id[m1.id].message == "one" and by_id[m3.id].message == "three"
    assert isinstance(by_id[m3.id + 1000], tt.MessageEmpty)
    assert all(m.from_id == tt.PeerUser(ub.id) for m in got.messages if isinstance(m, tt.Message))
    chans = await b(functions.channels.GetChannelsRequest(id=[b_chan]))
    assert [(x.id, x.title) for x in chans.chats] == [(ch.id, "Reading club")]

    # Pin and unpin.
    await a1(functions.messages.UpdatePinnedMessageRequest(peer=ipeer(ch), id=m2.id))
    await wait_for(lambda: fb.raw_of(tt.UpdatePinnedChannelMessages))
    (pinned,) = fb.raw_of(tt.UpdatePinnedChannelMessages)
    assert (pinned.channel_id, pinned.messages, pinned.pinned) == (ch.id, [m2.id], True)
    await wait_for(lambda: fb.actions_of(ch.id, tt.MessageActionPinMessage))
    (pin_msg,) = [m for m in fb.service(ch.id) if isinstance(m.action, tt.MessageActionPinMessage)]
    assert pin_msg.reply_to.reply_to_msg_id == m2.id
    assert (await full(b, b_chan)).pinned_msg_id == m2.id

    async def is_pinned(msg_id: int) -> bool:
        got = await b(
            functions.channels.GetMessagesRequest(channel=b_chan, id=[tt.InputMessageID(id=msg_id)])
        )
        return bool(got.messages[0].pinned)

    assert await is_pinned(m2.id) and not await is_pinned(m3.id)
    await a1(functions.messages.UpdatePinnedMessageRequest(peer=ipeer(ch), id=m2.id, unpin=True))
    await wait_for(lambda: len(fb.raw_of(tt.UpdatePinnedChannelMessages)) == 2)
    assert not fb.raw_of(tt.UpdatePinnedChannelMessages)[1].pinned
    assert not (await full(b, b_chan)).pinned_msg_id
    assert not await is_pinned(m2.id)

    await asyncio.sleep(0.6)  # no gap so far (see the end)
    for name, f in (("a1", fa1), ("a2", fa2), ("b", fb)):
        assert f.channel_diffs() == [], f"{name} {pts_trail(f, ch.id)} {f.calls}"

    # Edit and delete; the delete answer carries the channel's pts.
    await b(functions.messages.EditMessageRequest(peer=b_peer, id=m1.id, message="one!"))
    await wait_for(lambda: fa2.edited)
    assert [(m.id, m.message) for m in fa2.edited] == [(m1.id, "one!")]
    assert fa2.edited[0].edit_date is not None
    aff = await b(functions.channels.DeleteMessagesRequest(channel=b_chan, id=[m1.id]))
    assert isinstance(aff, tt.messages.AffectedMessages) and aff.pts_count == 1
    await wait_for(lambda: fa1.deleted(ch.id) == [m1.id] and fa2.deleted(ch.id) == [m1.id])
    assert (await full(a1, ich(ch))).pts == aff.pts
    with pytest.raises((errors.ChatAdminRequiredError, errors.MessageDeleteForbiddenError)):
        await b(functions.channels.DeleteMessagesRequest(channel=b_chan, id=[pin_msg.id]))

    # A photo, forwarded on to Saved Messages.
    up = await b.upload_file(jpeg(), file_name="pic.jpg")
    res = await b(
        functions.messages.SendMediaRequest(
            peer=b_peer,
            media=tt.InputMediaUploadedPhoto(file=up),
            message="a picture",
            random_id=random.getrandbits(63),
        )
    )
    (pic,) = channel_messages(res)
    assert isinstance(pic.media, tt.MessageMediaPhoto)
    await wait_for(lambda: "a picture" in fa1.texts(ch.id))
    assert isinstance(fa1.messages(ch.id)[-1].media, tt.MessageMediaPhoto)
    fwd = await a1(
        functions.messages.ForwardMessagesRequest(
            from_peer=ipeer(ch),
            id=[pic.id],
            to_peer=tt.InputPeerSelf(),
            random_id=[random.getrandbits(63)],
        )
    )
    (saved,) = [u.message for u in _flatten(fwd) if isinstance(u, tt.UpdateNewMessage)]
    assert isinstance(saved.media, tt.MessageMediaPhoto)
    assert saved.fwd_from is not None and saved.fwd_from.from_id == tt.PeerUser(ub.id)

    # Live members never needed getChannelDifference (Bob, who deleted with
    # channels.deleteMessages, may have: see the end of the first test).
    await asyncio.sleep(0.6)
    for name, f in (("a1", fa1), ("a2", fa2)):
        assert f.channel_diffs() == [], f"{name} {pts_trail(f, ch.id)} {f.calls}"


# -------------------------------------------------- joining and leaving
async def test_join_and_leave_a_public_megagroup(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    d, ud = await signed_in(server, telethon_for, "Dave")
    fa, fd = watch(a), watch(d)
    ch = await create(a, "Open talk")
    assert await a(functions.channels.UpdateUsernameRequest(channel=ich(ch), username="open_talk"))
    await send(a, ipeer(ch), "anyone here?")

    found = await d(functions.contacts.ResolveUsernameRequest(username="open_talk"))
    (seen,) = found.chats
    assert seen.megagroup and seen.left
    d_chan = tt.InputChannel(channel_id=ch.id, access_hash=seen.access_hash)
    d_peer = tt.InputPeerChannel(channel_id=ch.id, access_hash=seen.access_hash)
    with pytest.raises(errors.UserNotParticipantError):
        await d(functions.channels.LeaveChannelRequest(channel=d_chan))

    joined = await d(functions.channels.JoinChannelRequest(channel=d_chan))
    assert not the_channel(joined).left
    (act,) = actions(joined)
    assert isinstance(act, tt.MessageActionChatAddUser) and act.users == [ud.id]
    await wait_for(lambda: fa.actions_of(ch.id, tt.MessageActionChatAddUser))
    (msg,) = [m for m in fa.service(ch.id) if isinstance(m.action, tt.MessageActionChatAddUser)]
    assert msg.from_id == tt.PeerUser(ud.id)
    assert any(ev.user_joined for ev in fa.actions)
    await send(d, d_peer, "me!")
    await wait_for(lambda: "me!" in fa.texts(ch.id))
    assert (await full(a, ich(ch))).participants_count == 2

    with pytest.raises(errors.UserCreatorError):
        await a(functions.channels.LeaveChannelRequest(channel=ich(ch)))
    left = await d(functions.channels.LeaveChannelRequest(channel=d_chan))
    assert the_channel(left).left
    await wait_for(lambda: fa.actions_of(ch.id, tt.MessageActionChatDeleteUser))
    (gone,) = fa.actions_of(ch.id, tt.MessageActionChatDeleteUser)
    assert gone.user_id == ud.id
    assert any(ev.user_left for ev in fa.actions)
    with pytest.raises(errors.UserNotParticipantError):
        await d(functions.channels.LeaveChannelRequest(channel=d_chan))
    assert ch.id not in [utils.resolve_id(x.id)[0] for x in await d.get_dialogs()]
    (after,) = (await d(functions.channels.GetChannelsRequest(id=[d_chan]))).chats
    assert isinstance(after, tt.Channel) and after.left
    assert (await full(a, ich(ch))).participants_count == 1
    (dave,) = await knows(a, ud)
    with pytest.raises(errors.UserNotParticipantError):
        await a(
            functions.channels.GetParticipantRequest(
                channel=ich(ch), participant=utils.get_input_peer(dave)
            )
        )
    # The public group is still readable, and what is said no longer reaches him.
    await send(a, ipeer(ch), "bye dave")
    await settle(d)
    assert "bye dave" not in fd.texts(ch.id)
    got = await history(d, d_peer)
    assert "bye dave" in [getattr(m, "message", None) for m in got.messages]

    # Kicked from a public group, he can neither come back nor read it.
    await d(functions.channels.JoinChannelRequest(channel=d_chan))
    await a(
        functions.channels.EditBannedRequest(
            channel=ich(ch),
            participant=utils.get_input_peer(dave),
            banned_rights=tt.ChatBannedRights(until_date=None, view_messages=True),
        )
    )
    with pytest.raises(errors.ChannelPrivateError):
        await d(functions.channels.JoinChannelRequest(channel=d_chan))
    with pytest.raises(errors.ChannelPrivateError):
        await history(d, d_peer)
    assert (await full(a, ich(ch))).participants_count == 1


async def test_strangers_and_wrong_access_hashes(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    e, _ue = await signed_in(server, telethon_for, "Eve")
    ch = await create(a, "Hidden")
    await send(a, ipeer(ch), "secret")
    fake = tt.InputChannel(channel_id=ch.id, access_hash=ch.access_hash ^ 0x5A5A5A)
    # A made-up hash, and Alice's (access hashes are per user).
    for chan in (fake, ich(ch)):
        peer = tt.InputPeerChannel(channel_id=chan.channel_id, access_hash=chan.access_hash)
        with pytest.raises(errors.ChannelInvalidError):
            await e(functions.channels.GetFullChannelRequest(channel=chan))
        with pytest.raises(errors.ChannelInvalidError):
            await history(e, peer)
        with pytest.raises(errors.ChannelInvalidError):
            await e(functions.channels.JoinChannelRequest(channel=chan))
        with pytest.raises(errors.ChannelInvalidError):
            await e(functions.messages.SendMessageRequest(peer=peer, message="hi", random_id=11))
    with pytest.raises(errors.ChannelInvalidError):
        await a(functions.channels.GetFullChannelRequest(channel=fake))
    with pytest.raises(errors.ChannelInvalidError):
        await a(
            functions.channels.GetFullChannelRequest(
                channel=tt.InputChannel(channel_id=ch.id + 7777, access_hash=ch.access_hash)
            )
        )
    # Nothing of it shows in the stranger's dialogs.
    assert ch.id not in [utils.resolve_id(d.id)[0] for d in await e.get_dialogs()]


async def test_channel_history_paging_search_and_replies(
    server: Server, telethon_for: Factory
) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    fb = watch(b)
    (bob,) = await knows(a, ub)
    ch = await create(a, "Pages")
    await invite(a, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)
    b_peer = await fb.peer(ch.id)
    sent = []
    for i in range(25):
        client, peer = (a, ipeer(ch)) if i % 2 == 0 else (b, b_peer)
        sent.append(await send(client, peer, f"line {i:02d}"))
    ids = [m.id for m in sent]

    async def page(**kw: Any) -> Any:
        args: dict[str, Any] = {
            "offset_id": 0,
            "offset_date": None,
            "add_offset": 0,
            "limit": 10,
            "max_id": 0,
            "min_id": 0,
            "hash": 0,
            **kw,
        }
        return await b(functions.messages.GetHistoryRequest(peer=b_peer, **args))

    first = await page()
    assert isinstance(first, tt.messages.ChannelMessages)
    assert [m.id for m in first.messages] == ids[::-1][:10]
    assert first.count == len(ids) + 2  # with the creation and invitation messages
    second = await page(offset_id=first.messages[-1].id)
    assert [m.id for m in second.messages] == ids[::-1][10:20]
    window = await page(offset_id=ids[10], add_offset=-3, limit=6)
    assert [m.id for m in window.messages] == [ids[12], ids[11], ids[10], ids[9], ids[8], ids[7]]
    bounded = await page(min_id=ids[3], max_id=ids[8])
    assert [m.id for m in bounded.messages] == ids[7:3:-1]
    assert {u.id for u in first.users} >= {ua.id, ub.id}

    # A reply keeps what it answers.
    rid = random.getrandbits(63)
    res = await b(
        functions.messages.SendMessageRequest(
            peer=b_peer,
            message="replying",
            random_id=rid,
            reply_to=tt.InputReplyToMessage(reply_to_msg_id=ids[0]),
        )
    )
    (reply,) = channel_messages(res)
    assert reply.reply_to is not None and reply.reply_to.reply_to_msg_id == ids[0]
    (stored,) = (
        await a(
            functions.channels.GetMessagesRequest(
                channel=ich(ch), id=[tt.InputMessageID(id=reply.id)]
            )
        )
    ).messages
    assert stored.reply_to.reply_to_msg_id == ids[0] and stored.message == "replying"

    # Search, by text and by sender.
    async def search(q: str, **kw: Any) -> list[str]:
        args: dict[str, Any] = {
            "filter": tt.InputMessagesFilterEmpty(),
            "min_date": None,
            "max_date": None,
            "offset_id": 0,
            "add_offset": 0,
            "limit": 100,
            "max_id": 0,
            "min_id": 0,
            "hash": 0,
            **kw,
        }
        got = await a(functions.messages.SearchRequest(peer=ipeer(ch), q=q, **args))
        return [m.message for m in got.messages]

    assert await search("line 1") == [f"line {i}" for i in range(19, 9, -1)]
    (bob_for_a,) = await knows(a, ub)
    by_bob = await search("", from_id=utils.get_input_peer(bob_for_a))
    assert by_bob == ["replying"] + [f"line {i:02d}" for i in range(23, 0, -2)]


async def test_member_invited_while_offline_finds_the_group_in_dialogs(
    server: Server, telethon_for: Factory
) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    (bob,) = await knows(a, ub)
    (alice_for_b,) = await knows(b, ua)
    await b.send_message(alice_for_b, "hi alice")  # an older private dialog
    await b.disconnect()
    ch = await create(a, "Surprise")
    await invite(a, ch, bob)
    for i in range(3):
        await send(a, ipeer(ch), f"news {i}")
    info = await full(a, ich(ch))
    await asyncio.wait_for(b.connect(), 10)

    dialogs = await b.get_dialogs()
    assert [utils.resolve_id(d.id)[0] for d in dialogs][:2] == [ch.id, ua.id]
    top = dialogs[0]
    assert isinstance(top.entity, tt.Channel) and top.entity.megagroup
    assert top.message.message == "news 2" and top.dialog.pts == info.pts
    assert top.unread_count >= 3
    # Telethon now knows the channel's pts (from Dialog.pts) and follows it live.
    fb = watch(b)
    assert b._message_box.map[ch.id].pts == info.pts
    await send(a, ipeer(ch), "news 3")
    await wait_for(lambda: fb.texts(ch.id) == ["news 3"])
    await asyncio.sleep(0.6)
    assert fb.channel_diffs() == [], fb


async def test_about_is_edited_and_logged(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    fb = watch(b)
    (bob,) = await knows(a, ub)
    ch = await create(a, "Described", about="first words")
    await invite(a, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)
    assert await a(functions.messages.EditChatAboutRequest(peer=ipeer(ch), about="second words"))
    assert (await full(b, ich_of(fb, ch.id))).about == "second words"
    with pytest.raises(errors.ChatAboutNotModifiedError):
        await a(functions.messages.EditChatAboutRequest(peer=ipeer(ch), about="second words"))
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.messages.EditChatAboutRequest(peer=await fb.peer(ch.id), about="mine"))
    log = await a(
        functions.channels.GetAdminLogRequest(
            channel=ich(ch),
            q="",
            max_id=0,
            min_id=0,
            limit=10,
            events_filter=tt.ChannelAdminLogEventsFilter(info=True),
        )
    )
    (event,) = log.events
    assert isinstance(event.action, tt.ChannelAdminLogEventActionChangeAbout)
    assert (event.action.prev_value, event.action.new_value) == ("first words", "second words")
    assert event.user_id == ua.id


async def test_telethon_high_level_helpers(server: Server, telethon_for: Factory) -> None:
    """What Telethon users call: get_participants, edit_admin, edit_permissions,
    get_permissions, kick_participant, iter_admin_log, get_messages."""
    a, ua = await signed_in(server, telethon_for, "Alice")
    _b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    fc = watch(c)
    bob, carol = await knows(a, ub, uc)
    ch = await create(a, "Helpers")
    await invite(a, ch, bob, carol)
    await wait_for(lambda: ch.id in fc.hashes)
    c_peer = await fc.peer(ch.id)

    people = await a.get_participants(ch)
    assert {p.id for p in people} == {ua.id, ub.id, uc.id} and people.total == 3

    await a.edit_admin(ch, bob, change_info=True, delete_messages=True, title="helper")
    perms = await a.get_permissions(ch, bob)
    assert perms.is_admin and perms.change_info and perms.delete_messages
    assert not perms.ban_users and not perms.is_creator
    assert (await a.get_permissions(ch, ua.id)).is_creator
    admins = await a.get_participants(ch, filter=tt.ChannelParticipantsAdmins())
    assert {p.id for p in admins} == {ua.id, ub.id}

    await a.edit_permissions(ch, carol, send_messages=False)
    assert (await a.get_permissions(ch, carol)).is_banned
    with pytest.raises(errors.UserBannedInChannelError):
        await c(functions.messages.SendMessageRequest(peer=c_peer, message="x", random_id=13))
    await a.edit_permissions(ch, carol)
    await send(c, c_peer, "free")

    await a.kick_participant(ch, carol)  # ban, then unban: out, but may come back
    await wait_for(lambda: fc.raw_of(tt.UpdateChannel))
    assert {p.id for p in await a.get_participants(ch)} == {ua.id, ub.id}
    assert await a.get_participants(ch, filter=tt.ChannelParticipantsKicked(q="")) == []
    with pytest.raises(errors.ChannelPrivateError):
        await history(c, c_peer)

    # Sending, editing, pinning and deleting through Telethon's helpers.
    sent = await a.send_message(ch, "by helper")
    assert sent.id > 0 and sent.chat_id == utils.get_peer_id(tt.PeerChannel(ch.id))
    edited = await a.edit_message(ch, sent.id, "by helper, edited")
    assert edited.message == "by helper, edited"
    await a.pin_message(ch, sent.id, notify=False)
    assert (await full(a, ich(ch))).pinned_msg_id == sent.id
    gone = await a.send_message(ch, "short-lived")
    (affected,) = await a.delete_messages(ch, [gone.id])
    assert affected.pts_count == 1
    assert "short-lived" not in [m.message for m in await a.get_messages(ch, limit=10)]
    dialogs = [d for d in await a.get_dialogs() if d.is_channel]
    assert [(d.id, d.name) for d in dialogs] == [(sent.chat_id, "Helpers")]

    log = [e async for e in a.iter_admin_log(ch)]
    assert any(e.changed_admin for e in log)
    assert any(e.changed_restrictions for e in log)
    texts = [m.message for m in await a.get_messages(ch, limit=10) if m.message]
    assert texts == ["by helper, edited", "free"]


async def test_members_sending_at_once(
    start_server: Callable[..., Any], telethon_for: Factory
) -> None:
    """Three members send at the same time: every device gets every other message
    once, and ids and pts grow together (so every device sees them in one order)."""
    async with start_server(**NO_FLOOD) as srv:
        a, ua = await signed_in(srv, telethon_for, "Alice")
        b, ub = await signed_in(srv, telethon_for, "Bob")
        c, uc = await signed_in(srv, telethon_for, "Carol")
        feeds = {"a": watch(a), "b": watch(b), "c": watch(c)}
        bob, carol = await knows(a, ub, uc)
        ch = await create(a, "Rush")
        await invite(a, ch, bob, carol)
        await wait_for(lambda: all(ch.id in f.hashes for f in feeds.values()))
        peers = {k: await f.peer(ch.id) for k, f in feeds.items()}
        clients = {"a": a, "b": b, "c": c}
        n = 20

        async def talk(name: str) -> list[tt.Message]:
            return [await send(clients[name], peers[name], f"{name}{i:02d}") for i in range(n)]

        sent = dict(zip("abc", await asyncio.gather(*(talk(k) for k in "abc")), strict=True))
        mine = {k: {m.id for m in v} for k, v in sent.items()}
        all_ids = set().union(*mine.values())
        assert len(all_ids) == 3 * n
        await wait_for(
            lambda: all(len(f.messages(ch.id)) >= 2 * n for f in feeds.values()),
            timeout=15,
        )
        await settle(a, b, c)
        await asyncio.sleep(0.6)
        for name, f in feeds.items():
            got = [m.id for m in f.messages(ch.id)]
            assert len(got) == len(set(got)) == 2 * n, (name, f)
            assert set(got) == all_ids - mine[name], name
            assert got == sorted(got), (name, got)  # pts order is id order
            counts = Counter(f.pushed_ids(ch.id))
            assert all(v == 1 for v in counts.values()), (name, counts)
        # Every member reads the same history.
        hist = await history(a, peers["a"], limit=100)
        ids = [m.id for m in hist.messages if isinstance(m, tt.Message)]
        assert sorted(ids) == sorted(all_ids)
        senders = {m.id: m.from_id for m in hist.messages if isinstance(m, tt.Message)}
        for name, uid in (("a", ua.id), ("b", ub.id), ("c", uc.id)):
            assert all(senders[i] == tt.PeerUser(uid) for i in mine[name]), name


async def test_media_restriction_of_one_member(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    fb = watch(b)
    (bob,) = await knows(a, ub)
    ch = await create(a, "Text only")
    await invite(a, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)
    b_peer = await fb.peer(ch.id)
    until = int(time.time()) + 3600
    await a(
        functions.channels.EditBannedRequest(
            channel=ich(ch),
            participant=utils.get_input_peer(bob),
            banned_rights=tt.ChatBannedRights(until_date=until, send_media=True),
        )
    )
    part = await a(
        functions.channels.GetParticipantRequest(
            channel=ich(ch), participant=utils.get_input_peer(bob)
        )
    )
    banned = part.participant.banned_rights
    assert banned.send_media and not banned.send_messages
    assert abs(banned.until_date.timestamp() - until) <= 2
    up = await b.upload_file(jpeg(), file_name="p.jpg")
    with pytest.raises((errors.ChatSendMediaForbiddenError, errors.ChatSendPhotosForbiddenError)):
        await b(
            functions.messages.SendMediaRequest(
                peer=b_peer,
                media=tt.InputMediaUploadedPhoto(file=up),
                message="",
                random_id=random.getrandbits(63),
            )
        )
    await send(b, b_peer, "words are fine")


async def test_public_channel_found_by_contacts_search(
    server: Server, telethon_for: Factory
) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    d, _ud = await signed_in(server, telethon_for, "Dave")
    ch = await create(a, "Weather reports", broadcast=True)
    await a(functions.channels.UpdateUsernameRequest(channel=ich(ch), username="weather_now"))
    hidden = await create(a, "Weather secrets", broadcast=True)
    found = await d(functions.contacts.SearchRequest(q="weather_n", limit=10))
    assert tt.PeerChannel(ch.id) in list(found.results) + list(found.my_results)
    assert tt.PeerChannel(hidden.id) not in list(found.results) + list(found.my_results)
    (chan,) = [c for c in found.chats if c.id == ch.id]
    assert chan.username == "weather_now" and chan.access_hash is not None
    # The creator finds her own private channel by its title.
    mine = await a(functions.contacts.SearchRequest(q="Weather secrets", limit=10))
    assert tt.PeerChannel(hidden.id) in list(mine.my_results) + list(mine.results)


async def test_default_rights_agree_with_what_members_may_do(
    server: Server, telethon_for: Factory
) -> None:
    """Clients show a member what the group's default_banned_rights allow; the
    server must refuse exactly what they forbid (change_info, pin_messages,
    invite_users), whatever the defaults of a new supergroup are."""
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    _d, ud = await signed_in(server, telethon_for, "Dave")
    fb = watch(b)
    (bob,) = await knows(a, ub)
    ch = await create(a, "Defaults")
    await invite(a, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)
    b_chan, b_peer = await fb.input_channel(ch.id), await fb.peer(ch.id)
    (seen,) = (await b(functions.channels.GetChannelsRequest(id=[b_chan]))).chats
    rights = seen.default_banned_rights or tt.ChatBannedRights(until_date=None)
    msg = await send(b, b_peer, "pin me maybe")
    (dave,) = await knows(b, ud)
    attempts = {
        "change_info": functions.channels.EditTitleRequest(channel=b_chan, title="Bob's"),
        "pin_messages": functions.messages.UpdatePinnedMessageRequest(peer=b_peer, id=msg.id),
        "invite_users": functions.channels.InviteToChannelRequest(channel=b_chan, users=[dave]),
    }
    outcome = {}
    for right, request in attempts.items():
        try:
            await b(request)
            outcome[right] = "allowed"
        except errors.ChatAdminRequiredError:
            outcome[right] = "refused"
    shown = {r: "refused" if getattr(rights, r) else "allowed" for r in attempts}
    assert outcome == shown, f"server did {outcome}, default_banned_rights say {shown}"


async def test_link_management_reactions_typing_and_reads(
    server: Server, telethon_for: Factory
) -> None:
    """The channel RPCs the other tests do not reach: managing invite links (get, list,
    revoke, delete), a reaction on a post, typing, messages.readHistory on a channel
    peer, channels.readMessageContents."""
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    fa, fb = watch(a), watch(b)
    (bob,) = await knows(a, ub)
    ch = await create(a, "Links")
    await invite(a, ch, bob)
    await wait_for(lambda: ch.id in fb.hashes)
    b_peer = await fb.peer(ch.id)
    b_chan = await fb.input_channel(ch.id)

    # Invite links: made, read back, listed, revoked (then listed as revoked), deleted.
    made = await a(functions.messages.ExportChatInviteRequest(peer=ipeer(ch), title="team"))
    got = await a(functions.messages.GetExportedChatInviteRequest(peer=ipeer(ch), link=made.link))
    assert got.invite.link == made.link and got.invite.title == "team"
    listed = await a(
        functions.messages.GetExportedChatInvitesRequest(
            peer=ipeer(ch), admin_id=tt.InputUserSelf(), limit=10
        )
    )
    assert [i.link for i in listed.invites] == [made.link]
    with pytest.raises(errors.InviteRevokedMissingError):  # only revoked links go
        await a(functions.messages.DeleteExportedChatInviteRequest(peer=ipeer(ch), link=made.link))
    with pytest.raises(errors.ChatAdminRequiredError):  # a member manages no links
        await b(functions.messages.GetExportedChatInviteRequest(peer=b_peer, link=made.link))
    revoked = await a(
        functions.messages.EditExportedChatInviteRequest(
            peer=ipeer(ch), link=made.link, revoked=True
        )
    )
    assert revoked.invite.revoked
    gone = await a(
        functions.messages.GetExportedChatInvitesRequest(
            peer=ipeer(ch), admin_id=tt.InputUserSelf(), limit=10, revoked=True
        )
    )
    assert [i.link for i in gone.invites] == [made.link]
    assert await a(
        functions.messages.DeleteExportedChatInviteRequest(peer=ipeer(ch), link=made.link)
    )
    with pytest.raises(errors.InviteHashInvalidError):
        await b(functions.messages.CheckChatInviteRequest(hash=invite_hash(made.link)))

    # A reaction: the other member sees the new counts live; a refetch carries them.
    post = await send(a, ipeer(ch), "react to me")
    await wait_for(lambda: "react to me" in fb.texts(ch.id))
    await b(
        functions.messages.SendReactionRequest(
            peer=b_peer, msg_id=post.id, reaction=[tt.ReactionEmoji(emoticon="👍")]
        )
    )
    await wait_for(lambda: fa.raw_of(tt.UpdateMessageReactions))
    (upd,) = fa.raw_of(tt.UpdateMessageReactions)
    assert upd.msg_id == post.id and [r.count for r in upd.reactions.results] == [1]
    again = await a(functions.channels.GetMessagesRequest(channel=ich(ch), id=[post.id]))
    assert again.messages[0].reactions.results[0].reaction.emoticon == "👍"

    # Typing in a supergroup reaches the other members.
    await b(functions.messages.SetTypingRequest(peer=b_peer, action=tt.SendMessageTypingAction()))
    await wait_for(lambda: fa.raw_of(tt.UpdateChannelUserTyping))
    assert fa.raw_of(tt.UpdateChannelUserTyping)[0].from_id == tt.PeerUser(ub.id)

    # messages.readHistory on a channel peer reads like channels.readHistory.
    res = await b(functions.messages.ReadHistoryRequest(peer=b_peer, max_id=post.id))
    assert isinstance(res, tt.messages.AffectedMessages) and res.pts_count == 0
    (dialog,) = (
        await b(functions.messages.GetPeerDialogsRequest(peers=[tt.InputDialogPeer(peer=b_peer)]))
    ).dialogs
    assert dialog.read_inbox_max_id == post.id and dialog.unread_count == 0
    await wait_for(lambda: fa.raw_of(tt.UpdateReadChannelOutbox))
    assert fa.raw_of(tt.UpdateReadChannelOutbox)[-1].max_id == post.id
    assert await b(functions.channels.ReadMessageContentsRequest(channel=b_chan, id=[post.id]))
