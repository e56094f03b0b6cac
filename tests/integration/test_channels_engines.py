"""Supergroups and broadcast channels on each engine: ids, pts, members, logs across a restart.

A channel keeps one copy of each message with ids and a pts of its own, its
participants with their rights, an admin log, a public username and invite links;
their upserts, bulk inserts and unique indexes (random_id) and the utf8mb4 text
only show on the engine itself. So on SQLite, MariaDB and PostgreSQL four
accounts use a supergroup and a broadcast channel over a real socket, the server
restarts on the same data directory and database, and ids, pts, the update log,
history, dialogs, the username, participants, rights and the admin log continue
where they were.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telethon import TelegramClient, functions, types
from telethon.network.connection import ConnectionTcpFull

from tests.e2e.conftest import make_telethon, running_server
from tests.integration.test_engines import CLIENT_TIMEOUT, DEV_CODE, _sign_up, call
from tests.integration.test_messaging_engines import TEXT, _reconnect

BOB_TEXT = "Bob 🐙 here — 日本語"  # four-byte UTF-8 from the other side
RANK = "mod 🦊"  # a custom title with a four-byte character
USERNAME = "engine_news"
MEGA_RIGHTS = types.ChatAdminRights(delete_messages=True, pin_messages=True, ban_users=True)
NEWS_RIGHTS = types.ChatAdminRights(post_messages=True, edit_messages=True)
PHONES = {
    "alice": "15550003001",
    "bob": "15550003002",
    "carol": "15550003003",
    "dave": "15550003004",
}


def _once(client: TelegramClient) -> TelegramClient:
    """No retry after a server error: a 500 fails the step that caused it (a retry of
    a half-done invite or ban would fail with a misleading error of its own)."""
    client._request_retries = 0
    client._raise_last_call_error = True  # the server's error, not "unsuccessful 1 time(s)"
    return client


@dataclass
class Sent:
    """A channel message as its sender's answer reported it."""

    id: int
    pts: int
    message: Any


def _unwrap(answer: Any) -> Any:
    """The Updates inside messages.invitedUsers / messages.chatInviteJoinResultOk."""
    if isinstance(answer, types.messages.InvitedUsers | types.messages.ChatInviteJoinResultOk):
        return answer.updates
    return answer


def _channel(answer: Any) -> types.Channel:
    (channel,) = [c for c in _unwrap(answer).chats if isinstance(c, types.Channel)]
    return channel


def _new(answer: Any) -> list[Sent]:
    """The UpdateNewChannelMessage entries of an Updates answer, in order."""
    updates = _unwrap(answer)
    assert isinstance(updates, types.Updates), updates
    return [
        Sent(u.message.id, u.pts, u.message)
        for u in updates.updates
        if isinstance(u, types.UpdateNewChannelMessage)
    ]


def _one(answer: Any) -> Sent:
    (sent,) = _new(answer)
    return sent


def _input(channel: Any) -> types.InputChannel:
    return types.InputChannel(channel_id=channel.id, access_hash=channel.access_hash)


def _peer(channel: Any) -> types.InputPeerChannel:
    return types.InputPeerChannel(channel_id=channel.id, access_hash=channel.access_hash)


async def _send(
    client: TelegramClient, channel: Any, text: str, random_id: int, shown: str | None = None
) -> Sent:
    """Send ``text``; ``shown``: the text the answer carries (a resent, since edited one)."""
    answer = await call(
        client,
        functions.messages.SendMessageRequest(
            peer=_peer(channel), message=text, random_id=random_id
        ),
    )
    ids = [u for u in answer.updates if isinstance(u, types.UpdateMessageID)]
    assert [u.random_id for u in ids] == [random_id]
    sent = _one(answer)
    assert ids[0].id == sent.id and sent.message.message == (shown or text)
    return sent


async def _pts(client: TelegramClient, channel: Any) -> int:
    full = await call(client, functions.channels.GetFullChannelRequest(channel=_input(channel)))
    pts: int = full.full_chat.pts
    return pts


async def _history(client: TelegramClient, channel: Any) -> Any:
    return await call(
        client,
        functions.messages.GetHistoryRequest(
            peer=_peer(channel),
            offset_id=0,
            offset_date=None,
            add_offset=0,
            limit=50,
            max_id=0,
            min_id=0,
            hash=0,
        ),
    )


async def _difference(client: TelegramClient, channel: Any, pts: int) -> Any:
    return await call(
        client,
        functions.updates.GetChannelDifferenceRequest(
            channel=_input(channel),
            filter=types.ChannelMessagesFilterEmpty(),
            pts=pts,
            limit=100,
        ),
    )


async def _dialogs(client: TelegramClient) -> dict[int, Any]:
    """The client's channel dialogs by channel id."""
    answer = await call(
        client,
        functions.messages.GetDialogsRequest(
            offset_date=None, offset_id=0, offset_peer=types.InputPeerEmpty(), limit=50, hash=0
        ),
    )
    return {d.peer.channel_id: d for d in answer.dialogs if isinstance(d.peer, types.PeerChannel)}


async def _participants(client: TelegramClient, channel: Any, flt: Any) -> Any:
    return await call(
        client,
        functions.channels.GetParticipantsRequest(
            channel=_input(channel), filter=flt, offset=0, limit=100, hash=0
        ),
    )


async def _admin_log(client: TelegramClient, channel: Any) -> list[tuple[int, str, int]]:
    """(event id, action type, acting user) of the whole log, newest first."""
    answer = await call(
        client,
        functions.channels.GetAdminLogRequest(
            channel=_input(channel), q="", max_id=0, min_id=0, limit=100
        ),
    )
    return [(e.id, type(e.action).__name__, e.user_id) for e in answer.events]


def _roles(answer: Any) -> dict[int, tuple[str, Any, str | None]]:
    """user id -> (participant type, admin rights, rank)."""
    out: dict[int, tuple[str, Any, str | None]] = {}
    for p in answer.participants:
        uid = p.peer.user_id if isinstance(p, types.ChannelParticipantBanned) else p.user_id
        out[uid] = (type(p).__name__, getattr(p, "admin_rights", None), getattr(p, "rank", None))
    return out


def _rights(rights: Any) -> set[str]:
    return {k for k, v in rights.to_dict().items() if v is True}


async def test_channels_persist_on_engine(
    database_url: str, tmp_path: Path, server_key_pem: bytes
) -> None:
    data_dir = tmp_path / "channels"
    overrides = {"database": {"url": database_url}, "dev_login_code": DEV_CODE}
    # ------------------------------------------------------------ before the restart
    async with running_server(data_dir, server_key_pem, overrides) as srv:
        names = ("alice", "bob", "carol", "dave")
        clients = {n: _once(make_telethon(srv, ConnectionTcpFull)) for n in names}
        try:
            for c in clients.values():
                await asyncio.wait_for(c.connect(), CLIENT_TIMEOUT)
            me = {
                n: await asyncio.wait_for(
                    _sign_up(clients[n], PHONES[n], n.title()), CLIENT_TIMEOUT
                )
                for n in names
            }
            alice, bob, carol, dave = (clients[n] for n in names)
            imported = await call(
                alice,
                functions.contacts.ImportContactsRequest(
                    contacts=[
                        types.InputPhoneContact(
                            client_id=i, phone=PHONES[n], first_name=n.title(), last_name=""
                        )
                        for i, n in enumerate(("bob", "carol", "dave"), 1)
                    ]
                ),
            )
            hashes = {u.id: u.access_hash for u in imported.users}
            user = {
                n: types.InputUser(user_id=me[n].id, access_hash=hashes[me[n].id])
                for n in ("bob", "carol", "dave")
            }

            # A supergroup: created, Bob and Dave invited.
            created = await call(
                alice,
                functions.channels.CreateChannelRequest(
                    title="Club 🎲", about=TEXT, megagroup=True
                ),
            )
            mega = _channel(created)
            assert mega.megagroup and not mega.broadcast and mega.creator
            create_msg = _one(created)
            assert (create_msg.id, create_msg.pts) == (1, 2)  # pts 1: before the first update
            invited = await call(
                alice,
                functions.channels.InviteToChannelRequest(
                    channel=_input(mega), users=[user["bob"], user["dave"]]
                ),
            )
            add_msg = _one(invited)
            assert isinstance(add_msg.message.action, types.MessageActionChatAddUser)
            assert (add_msg.id, add_msg.pts) == (2, create_msg.pts + 1)
            bob_mega = (await _dialogs(bob))[mega.id]
            assert bob_mega.top_message == add_msg.id
            bob_dialogs = await call(
                bob,
                functions.messages.GetDialogsRequest(
                    offset_date=None,
                    offset_id=0,
                    offset_peer=types.InputPeerEmpty(),
                    limit=50,
                    hash=0,
                ),
            )
            mega_b = next(c for c in bob_dialogs.chats if c.id == mega.id)
            assert mega_b.access_hash != mega.access_hash  # each viewer's own hash

            # Both talk; Bob's resend with the same random_id is the same message.
            a1 = await _send(alice, mega, TEXT, random_id=1001)
            b1 = await _send(bob, mega_b, BOB_TEXT, random_id=2001)
            b1_again = await _send(bob, mega_b, BOB_TEXT, random_id=2001)
            assert (a1.id, b1.id) == (3, 4) and (a1.pts, b1.pts) == (
                add_msg.pts + 1,
                add_msg.pts + 2,
            )
            assert (b1_again.id, b1_again.pts) == (b1.id, b1.pts)
            mid_pts = b1.pts
            # Edits by each author; Bob's slip, deleted by Alice (an admin action).
            edited = await call(
                alice,
                functions.messages.EditMessageRequest(
                    peer=_peer(mega), id=a1.id, message="edited ✏️ 🎉"
                ),
            )
            (edit_upd,) = [
                u for u in edited.updates if isinstance(u, types.UpdateEditChannelMessage)
            ]
            assert edit_upd.pts == mid_pts + 1 and edit_upd.message.message == "edited ✏️ 🎉"
            await call(
                bob,
                functions.messages.EditMessageRequest(
                    peer=_peer(mega_b), id=b1.id, message=BOB_TEXT + " (2)"
                ),
            )
            oops = await _send(bob, mega_b, "oops 🙈", random_id=2002)
            assert oops.id == b1.id + 1
            affected = await call(
                alice, functions.channels.DeleteMessagesRequest(channel=_input(mega), id=[oops.id])
            )
            assert (affected.pts, affected.pts_count) == (oops.pts + 1, 1)
            # A pin: the pinned-messages update and a service message.
            pinned = await call(
                alice, functions.messages.UpdatePinnedMessageRequest(peer=_peer(mega), id=a1.id)
            )
            pin_msg = _one(pinned)
            assert isinstance(pin_msg.message.action, types.MessageActionPinMessage)
            assert pin_msg.id == oops.id + 1 and pin_msg.pts == affected.pts + 2
            # Bob becomes an admin with a title; Dave is banned (kicked).
            await call(
                alice,
                functions.channels.EditAdminRequest(
                    channel=_input(mega), user_id=user["bob"], admin_rights=MEGA_RIGHTS, rank=RANK
                ),
            )
            banned = await call(
                alice,
                functions.channels.EditBannedRequest(
                    channel=_input(mega),
                    participant=types.InputPeerUser(
                        user_id=me["dave"].id, access_hash=hashes[me["dave"].id]
                    ),
                    banned_rights=types.ChatBannedRights(until_date=None, view_messages=True),
                ),
            )
            kick_msg = _one(banned)
            assert isinstance(kick_msg.message.action, types.MessageActionChatDeleteUser)
            assert kick_msg.message.action.user_id == me["dave"].id
            # An invite link; Carol joins through it.
            exported = await call(
                alice, functions.messages.ExportChatInviteRequest(peer=_peer(mega))
            )
            invite_hash = exported.link.split("/+", 1)[1]
            joined = await call(carol, functions.messages.ImportChatInviteRequest(hash=invite_hash))
            mega_c = _channel(joined)
            join_msg = _one(joined)
            assert isinstance(join_msg.message.action, types.MessageActionChatJoinedByLink)
            assert join_msg.id == kick_msg.id + 1 and join_msg.pts == kick_msg.pts + 1
            c1 = await _send(carol, mega_c, "Carol 🌵", random_id=3001)
            mega_last, mega_pts = c1, c1.pts
            assert await _pts(alice, mega) == mega_pts
            mega_log = await _admin_log(alice, mega)
            assert [kind for _i, kind, _u in mega_log] == [
                "ChannelAdminLogEventActionParticipantJoinByInvite",
                "ChannelAdminLogEventActionParticipantToggleBan",
                "ChannelAdminLogEventActionParticipantToggleAdmin",
                "ChannelAdminLogEventActionUpdatePinned",
                "ChannelAdminLogEventActionDeleteMessage",
                "ChannelAdminLogEventActionParticipantInvite",
                "ChannelAdminLogEventActionParticipantInvite",
            ]

            # A broadcast channel with a public username; Bob joins as a poster.
            created = await call(
                alice,
                functions.channels.CreateChannelRequest(
                    title="News 📰", about=TEXT, broadcast=True
                ),
            )
            news = _channel(created)
            assert news.broadcast and not news.megagroup
            assert await call(
                alice,
                functions.channels.UpdateUsernameRequest(channel=_input(news), username=USERNAME),
            )
            await call(
                alice,
                functions.channels.InviteToChannelRequest(
                    channel=_input(news), users=[user["bob"]]
                ),
            )
            await call(
                alice,
                functions.channels.EditAdminRequest(
                    channel=_input(news), user_id=user["bob"], admin_rights=NEWS_RIGHTS, rank=""
                ),
            )
            news_b = _channel(
                await call(bob, functions.contacts.ResolveUsernameRequest(username=USERNAME))
            )
            p1 = await _send(alice, news, TEXT, random_id=4001)
            p1_again = await _send(alice, news, TEXT, random_id=4001)
            assert (p1_again.id, p1_again.pts) == (p1.id, p1.pts) and p1.id == 2
            p2 = await _send(bob, news_b, BOB_TEXT, random_id=5001)
            assert p2.id == p1.id + 1 and p2.pts == p1.pts + 1
            await call(
                alice,
                functions.messages.EditMessageRequest(
                    peer=_peer(news), id=p1.id, message="news ✏️ 📰"
                ),
            )
            news_last, news_pts = p2, await _pts(alice, news)
            assert news_pts == p2.pts + 1
            news_log = await _admin_log(alice, news)
            assert [kind for _i, kind, _u in news_log] == [
                "ChannelAdminLogEventActionParticipantToggleAdmin",
                "ChannelAdminLogEventActionParticipantInvite",
                "ChannelAdminLogEventActionChangeUsername",
            ]
            saved = {n: clients[n].session.save() for n in names}
        finally:
            for c in clients.values():
                await asyncio.wait_for(c.disconnect(), 5)

    # ------------------------------------------------------------- after the restart
    async with running_server(data_dir, server_key_pem, overrides) as srv:
        clients = {n: _once(await _reconnect(srv, saved[n])) for n in names}
        alice, bob, carol, dave = (clients[n] for n in names)
        try:
            # Ids and pts continue; the pre-restart random_id finds the stored message.
            assert await _pts(bob, mega_b) == mega_pts
            a2 = await _send(alice, mega, "after 🔁", random_id=1002)
            assert (a2.id, a2.pts) == (mega_last.id + 1, mega_pts + 1)
            late = await _send(bob, mega_b, BOB_TEXT, random_id=2001, shown=BOB_TEXT + " (2)")
            assert (late.id, late.pts) == (b1.id, b1.pts)
            b2 = await _send(bob, mega_b, "Bob after 🐙", random_id=2003)
            assert (b2.id, b2.pts) == (a2.id + 1, a2.pts + 1)

            # The difference from the old pts: exactly the messages since.
            diff = await _difference(bob, mega_b, mega_pts)
            assert isinstance(diff, types.updates.ChannelDifference), diff
            assert diff.final and diff.pts == b2.pts
            assert [(m.id, m.message) for m in diff.new_messages] == [
                (a2.id, "after 🔁"),
                (b2.id, "Bob after 🐙"),
            ]
            assert diff.other_updates == []
            # From before the edits: edits come as updates, the deleted message not at all.
            diff = await _difference(carol, mega_c, mid_pts)
            assert isinstance(diff, types.updates.ChannelDifference), diff
            new_ids = [m.id for m in diff.new_messages]
            assert new_ids == [pin_msg.id, kick_msg.id, join_msg.id, c1.id, a2.id, b2.id]
            assert oops.id not in new_ids
            kinds = [type(u).__name__ for u in diff.other_updates]
            assert kinds == [
                "UpdateEditChannelMessage",
                "UpdateEditChannelMessage",
                "UpdateDeleteChannelMessages",
                "UpdatePinnedChannelMessages",
            ]
            assert [u.message.message for u in diff.other_updates[:2]] == [
                "edited ✏️ 🎉",
                BOB_TEXT + " (2)",
            ]
            assert diff.other_updates[2].messages == [oops.id]
            assert diff.other_updates[3].messages == [a1.id] and diff.other_updates[3].pinned

            # History: texts, edits, the pin, no deleted message.
            history = await _history(bob, mega_b)
            assert history.pts == b2.pts and history.count == b2.id - 1
            by_id = {m.id: m for m in history.messages}
            assert sorted(by_id, reverse=True) == [m.id for m in history.messages]
            assert set(by_id) == set(range(1, b2.id + 1)) - {oops.id}
            assert by_id[a1.id].message == "edited ✏️ 🎉" and by_id[a1.id].edit_date
            assert by_id[a1.id].pinned
            assert by_id[b1.id].message == BOB_TEXT + " (2)"
            assert by_id[c1.id].message == "Carol 🌵"
            assert by_id[pin_msg.id].reply_to.reply_to_msg_id == a1.id
            mega_full = await call(
                bob, functions.channels.GetFullChannelRequest(channel=_input(mega_b))
            )
            assert mega_full.full_chat.pinned_msg_id == a1.id
            assert mega_full.full_chat.participants_count == 3  # Alice, Bob, Carol

            # A post after the restart continues the broadcast channel too.
            p3 = await _send(alice, news, "news after 🔁", random_id=4002)
            assert (p3.id, p3.pts) == (news_last.id + 1, news_pts + 1)
            late = await _send(alice, news, TEXT, random_id=4001, shown="news ✏️ 📰")
            assert (late.id, late.pts) == (p1.id, p1.pts)

            # Dialogs: both channels with the right top message and pts.
            dialogs = await _dialogs(alice)
            assert set(dialogs) == {mega.id, news.id}
            assert dialogs[mega.id].top_message == b2.id and dialogs[mega.id].pts == b2.pts
            assert dialogs[news.id].top_message == p3.id and dialogs[news.id].pts == p3.pts
            dialogs = await _dialogs(bob)
            assert {c: d.top_message for c, d in dialogs.items()} == {
                mega.id: b2.id,
                news.id: p3.id,
            }
            assert mega.id not in await _dialogs(dave)  # kicked: the dialog is closed

            # The username resolves, for a non-member too; the public channel reads.
            resolved = await call(
                carol, functions.contacts.ResolveUsernameRequest(username=USERNAME)
            )
            assert resolved.peer == types.PeerChannel(channel_id=news.id)
            news_c = _channel(resolved)
            assert news_c.username == USERNAME and news_c.left
            history = await _history(carol, news_c)
            assert [m.message for m in history.messages if isinstance(m, types.Message)] == [
                "news after 🔁",
                BOB_TEXT,
                "news ✏️ 📰",
            ]
            assert history.messages[-1].id == 1  # the creation message
            assert history.pts == p3.pts

            # Participants and rights.
            admins = _roles(await _participants(alice, mega, types.ChannelParticipantsAdmins()))
            assert set(admins) == {me["alice"].id, me["bob"].id}
            assert admins[me["alice"].id][0] == "ChannelParticipantCreator"
            kind, rights, rank = admins[me["bob"].id]
            assert kind == "ChannelParticipantAdmin" and rank == RANK
            assert _rights(rights) == _rights(MEGA_RIGHTS)
            kicked = await _participants(alice, mega, types.ChannelParticipantsKicked(q=""))
            (ban,) = kicked.participants
            assert isinstance(ban, types.ChannelParticipantBanned) and ban.left
            assert ban.peer == types.PeerUser(user_id=me["dave"].id)
            assert ban.banned_rights.view_messages and ban.kicked_by == me["alice"].id
            # Bob's rights still work: he may read the kicked list (ban_users) and pin.
            kicked = await _participants(bob, mega_b, types.ChannelParticipantsKicked(q=""))
            assert [p.peer.user_id for p in kicked.participants] == [me["dave"].id]
            recent = _roles(await _participants(carol, mega_c, types.ChannelParticipantsRecent()))
            assert set(recent) == {me["alice"].id, me["bob"].id, me["carol"].id}
            admins = _roles(await _participants(alice, news, types.ChannelParticipantsAdmins()))
            assert _rights(admins[me["bob"].id][1]) == _rights(NEWS_RIGHTS)
            # The invite link is still there: Carol is already in.
            check = await call(carol, functions.messages.CheckChatInviteRequest(hash=invite_hash))
            assert isinstance(check, types.ChatInviteAlready) and check.chat.id == mega.id

            # The admin logs survived as they were.
            assert await _admin_log(alice, mega) == mega_log
            assert await _admin_log(alice, news) == news_log
            assert {u for _i, _k, u in mega_log} == {me["alice"].id, me["carol"].id}
        finally:
            for c in clients.values():
                await asyncio.wait_for(c.disconnect(), 5)
