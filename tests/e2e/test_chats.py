"""Basic groups with Telethon: create, talk, members in and out, title, catch-up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from telethon import TelegramClient, errors, events, functions
from telethon.tl import types as tt

from teamgram.server import Server
from tests.e2e.accounts import signed_in, wait_for

Factory = Callable[..., Awaitable[TelegramClient]]


async def knows(client: TelegramClient, *phones: str) -> list[tt.User]:
    """Import the others as contacts: their users with this client's access hashes."""
    got = await client(
        functions.contacts.ImportContactsRequest(
            [tt.InputPhoneContact(i, p, f"U{i}", "") for i, p in enumerate(phones)]
        )
    )
    by_phone = {u.phone: u for u in got.users}
    return [by_phone[p] for p in phones]


async def test_a_basic_group_from_creation_to_leaving(
    server: Server, telethon_for: Factory
) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    d, ud = await signed_in(server, telethon_for, "Dave")
    bob, carol, dave = await knows(a, ub.phone, uc.phone, ud.phone)
    seen: dict[str, list[Any]] = {"b": [], "c": [], "d": []}
    actions: dict[str, list[Any]] = {"b": [], "c": [], "d": []}
    for name, client in (("b", b), ("c", c), ("d", d)):
        client.add_event_handler(
            lambda e, n=name: seen[n].append(e.message), events.NewMessage(incoming=True)
        )
        client.add_event_handler(lambda e, n=name: actions[n].append(e), events.ChatAction())

    invited = await a(functions.messages.CreateChatRequest(users=[bob, carol], title="Trio"))
    chat = invited.updates.chats[0]
    assert isinstance(chat, tt.Chat) and chat.title == "Trio" and chat.participants_count == 3
    assert chat.creator
    await wait_for(lambda: actions["b"] and actions["c"])
    assert actions["b"][0].created and actions["b"][0].chat_id == -chat.id  # marked id

    # Everyone sees everyone's messages, once, as sent by the right person.
    await a.send_message(tt.PeerChat(chat.id), "hello group")
    await wait_for(lambda: seen["b"] and seen["c"])
    assert [m.message for m in seen["b"]] == ["hello group"]
    assert seen["b"][0].sender_id == ua.id and seen["c"][0].sender_id == ua.id
    await b.send_message(tt.PeerChat(chat.id), "hi from bob")
    await wait_for(lambda: len(seen["c"]) == 2)
    assert seen["c"][1].sender_id == ub.id

    full = await b(functions.messages.GetFullChatRequest(chat.id))
    kinds = {p.user_id: type(p) for p in full.full_chat.participants.participants}
    assert kinds == {
        ua.id: tt.ChatParticipantCreator,
        ub.id: tt.ChatParticipant,
        uc.id: tt.ChatParticipant,
    }
    assert {u.id for u in full.users} == {ua.id, ub.id, uc.id}

    # A title change reaches everyone as a service message.
    await a(functions.messages.EditChatTitleRequest(chat.id, "Quartet"))
    await wait_for(lambda: any(x.new_title == "Quartet" for x in actions["c"]))
    with pytest.raises(errors.ChatNotModifiedError):
        await a(functions.messages.EditChatTitleRequest(chat.id, "Quartet"))

    # Dave joins: he gets what is said from now on, not before.
    await a(functions.messages.AddChatUserRequest(chat.id, dave, fwd_limit=0))
    await wait_for(lambda: any(x.user_joined or x.user_added for x in actions["d"]))
    await c.send_message(tt.PeerChat(chat.id), "welcome dave")
    await wait_for(lambda: any(m.message == "welcome dave" for m in seen["d"]))
    d_history = await d.get_messages(tt.PeerChat(chat.id), limit=20)
    assert "hello group" not in [m.message for m in d_history]

    # Alice removes Carol: Carol is told, then hears nothing more and cannot write.
    await a(functions.messages.DeleteChatUserRequest(chat.id, carol))
    await wait_for(lambda: any(x.user_kicked for x in actions["c"]))
    await a.send_message(tt.PeerChat(chat.id), "after carol")
    await wait_for(lambda: any(m.message == "after carol" for m in seen["b"]))
    assert all(m.message != "after carol" for m in seen["c"])
    with pytest.raises(errors.RPCError):
        await c.send_message(tt.PeerChat(chat.id), "let me back")
    gone = await c(functions.messages.GetChatsRequest([chat.id]))
    assert isinstance(gone.chats[0], tt.ChatForbidden)

    # Read receipts: Bob reads, the sender's outbox moves.
    await b.send_read_acknowledge(tt.PeerChat(chat.id))
    dialogs = await a(
        functions.messages.GetPeerDialogsRequest([tt.InputDialogPeer(tt.InputPeerChat(chat.id))])
    )
    assert dialogs.dialogs[0].read_outbox_max_id > 0

    # Bob leaves by himself.
    await b(functions.messages.DeleteChatUserRequest(chat.id, tt.InputUserSelf()))
    full = await a(functions.messages.GetFullChatRequest(chat.id))
    assert {p.user_id for p in full.full_chat.participants.participants} == {ua.id, ud.id}

    # The group shows in Alice's dialogs with its title.
    names = [dlg.name for dlg in await a.get_dialogs()]
    assert "Quartet" in names


async def test_a_member_who_was_away_catches_up(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    (bob,) = await knows(a, ub.phone)
    invited = await a(functions.messages.CreateChatRequest(users=[bob], title="Two"))
    chat = invited.updates.chats[0]
    state = await b(functions.updates.GetStateRequest())
    await b.disconnect()
    for i in range(30):
        await a.send_message(tt.PeerChat(chat.id), f"m{i}")
    await b.connect()
    diff = await b(functions.updates.GetDifferenceRequest(pts=state.pts, date=state.date, qts=0))
    assert [m.message for m in diff.new_messages] == [f"m{i}" for i in range(30)]
    assert [c.id for c in diff.chats] == [chat.id]


async def test_strangers_cannot_reach_a_group(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    _b, ub = await signed_in(server, telethon_for, "Bob")
    eve, _ue = await signed_in(server, telethon_for, "Eve")
    (bob,) = await knows(a, ub.phone)
    invited = await a(functions.messages.CreateChatRequest(users=[bob], title="Private"))
    chat = invited.updates.chats[0]
    with pytest.raises(errors.RPCError):
        await eve(
            functions.messages.GetHistoryRequest(tt.InputPeerChat(chat.id), 0, 0, 0, 10, 0, 0, 0)
        )
    with pytest.raises(errors.RPCError):
        await eve(functions.messages.SendMessageRequest(tt.InputPeerChat(chat.id), "hi"))
    with pytest.raises(errors.RPCError):
        await eve(functions.messages.AddChatUserRequest(chat.id, tt.InputUserSelf(), 0))
    with pytest.raises(errors.ChatTitleEmptyError):
        await a(functions.messages.CreateChatRequest(users=[bob], title="   "))


async def test_invite_links_admins_rights_and_photo(
    server: Server, telethon_for: Factory, tmp_path: Any
) -> None:
    import io

    from PIL import Image

    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    (bob,) = await knows(a, ub.phone)
    invited = await a(functions.messages.CreateChatRequest(users=[bob], title="Club"))
    chat = invited.updates.chats[0]
    peer = tt.InputPeerChat(chat.id)

    # A link with one use: Carol looks, joins, and the next one gets EXPIRED.
    link = await a(functions.messages.ExportChatInviteRequest(peer, usage_limit=1, title="one"))
    invite_hash = link.link.rsplit("+", 1)[1]
    info = await c(functions.messages.CheckChatInviteRequest(invite_hash))
    assert isinstance(info, tt.ChatInvite) and info.title == "Club"
    assert info.participants_count == 2
    joined = await c(functions.messages.ImportChatInviteRequest(invite_hash))
    action = joined.updates.updates[0].message.action
    assert isinstance(action, tt.MessageActionChatJoinedByLink) and action.inviter_id == ua.id
    again = await c(functions.messages.CheckChatInviteRequest(invite_hash))
    assert isinstance(again, tt.ChatInviteAlready)
    with pytest.raises(errors.InviteHashInvalidError):
        await b(functions.messages.CheckChatInviteRequest("nosuchlink"))
    d, _ud = await signed_in(server, telethon_for, "Dave")
    with pytest.raises(errors.InviteHashExpiredError):
        await d(functions.messages.ImportChatInviteRequest(invite_hash))

    # Only the creator names admins; members without the right cannot invite by link.
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.messages.EditChatAdminRequest(chat.id, tt.InputUserSelf(), True))
    carol_for_a = (await knows(a, uc.phone))[0]
    assert await a(functions.messages.EditChatAdminRequest(chat.id, carol_for_a, True))
    full = await a(functions.messages.GetFullChatRequest(chat.id))
    kinds = {p.user_id: type(p) for p in full.full_chat.participants.participants}
    assert kinds[uc.id] is tt.ChatParticipantAdmin

    # Default rights: members may not send; admins still may.
    rights = tt.ChatBannedRights(until_date=0, send_messages=True)
    await c(functions.messages.EditChatDefaultBannedRightsRequest(peer, rights))
    with pytest.raises(errors.ChatWriteForbiddenError):
        await b.send_message(tt.PeerChat(chat.id), "may I?")
    await c.send_message(tt.PeerChat(chat.id), "admins may")
    locked = tt.ChatBannedRights(until_date=0, change_info=True, invite_users=True)
    await a(functions.messages.EditChatDefaultBannedRightsRequest(peer, locked))
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.messages.EditChatTitleRequest(chat.id, "Bob's club"))
    with pytest.raises(errors.ChatAdminRequiredError):
        await b(functions.messages.AddChatUserRequest(chat.id, tt.InputUserSelf(), 0))
    await a(
        functions.messages.EditChatDefaultBannedRightsRequest(
            peer, tt.ChatBannedRights(until_date=0)
        )
    )
    await b.send_message(tt.PeerChat(chat.id), "now I may")

    # A group photo: set, seen and downloaded by a member, then removed.
    raw = io.BytesIO()
    Image.new("RGB", (500, 500), (200, 40, 40)).save(raw, "JPEG")
    path = tmp_path / "club.jpg"
    path.write_bytes(raw.getvalue())
    uploaded = await a.upload_file(str(path))
    await a(
        functions.messages.EditChatPhotoRequest(chat.id, tt.InputChatUploadedPhoto(file=uploaded))
    )
    seen = (await b(functions.messages.GetChatsRequest([chat.id]))).chats[0]
    assert isinstance(seen.photo, tt.ChatPhoto) and seen.photo.stripped_thumb
    big = await b.download_profile_photo(seen, file=bytes, download_big=True)
    assert Image.open(io.BytesIO(big)).size == (500, 500)
    await a(functions.messages.EditChatPhotoRequest(chat.id, tt.InputChatPhotoEmpty()))
    seen = (await b(functions.messages.GetChatsRequest([chat.id]))).chats[0]
    assert isinstance(seen.photo, tt.ChatPhotoEmpty)


async def test_common_chats(server: Server, telethon_for: Factory) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    _b, ub = await signed_in(server, telethon_for, "Bob")
    (bob,) = await knows(a, ub.phone)
    first = (await a(functions.messages.CreateChatRequest(users=[bob], title="One"))).updates
    second = (await a(functions.messages.CreateChatRequest(users=[bob], title="Two"))).updates
    common = await a(functions.messages.GetCommonChatsRequest(bob, 0, 10))
    assert sorted(c.title for c in common.chats) == ["One", "Two"]
    assert {c.id for c in common.chats} == {first.chats[0].id, second.chats[0].id}
    full = await a(functions.users.GetFullUserRequest(bob))
    assert full.full_user.common_chats_count == 2


async def test_deleting_for_everyone_in_a_group(server: Server, telethon_for: Factory) -> None:
    """Members revoke their own messages; only admins revoke other people's."""
    a, _ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    c, uc = await signed_in(server, telethon_for, "Carol")
    bob, carol = await knows(a, ub.phone, uc.phone)
    chat = (
        await a(functions.messages.CreateChatRequest(users=[bob, carol], title="Del"))
    ).updates.chats[0]
    peer = tt.PeerChat(chat.id)
    from_alice = await a.send_message(peer, "alice's")
    from_bob = await b.send_message(peer, "bob's")

    async def texts(client: TelegramClient) -> list[str]:
        return sorted(m.message for m in await client.get_messages(peer, limit=10) if m.message)

    # Carol (a member) tries to revoke Alice's message: it goes from her box only.
    carol_copy = next(m for m in await c.get_messages(peer, limit=10) if m.message == "alice's")
    await c.delete_messages(peer, [carol_copy.id], revoke=True)
    assert await texts(c) == ["bob's"]
    assert await texts(b) == ["alice's", "bob's"]
    # Bob revokes his own: gone for everyone.
    await b.delete_messages(peer, [from_bob.id], revoke=True)
    assert await texts(a) == ["alice's"]
    # Alice (creator) revokes anyone's: gone everywhere.
    await a.delete_messages(peer, [from_alice.id], revoke=True)
    assert await texts(b) == []
