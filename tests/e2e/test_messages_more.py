"""The rest of the messaging RPCs through Telethon: forward, typing, deleteHistory,
reorderPinnedDialogs, clearAllDrafts, readMessageContents, receivedMessages,
uploadMedia, updateProfilePhoto."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

from PIL import Image
from telethon import TelegramClient, events, functions
from telethon.tl import types as tt

from teamgram.server import Server
from tests.e2e.accounts import signed_in, wait_for

Factory = Callable[..., Awaitable[TelegramClient]]


async def test_forward_typing_and_delete_history(server: Server, telethon_for: Factory) -> None:
    a, ua = await signed_in(server, telethon_for, "Alice")
    b, ub = await signed_in(server, telethon_for, "Bob")
    bob = (
        await a(
            functions.contacts.ImportContactsRequest([tt.InputPhoneContact(0, ub.phone, "B", "")])
        )
    ).users[0]
    typing: list[Any] = []
    b.add_event_handler(lambda e: typing.append(e), events.UserUpdate())
    async with a.action(bob, "typing"):
        await wait_for(lambda: typing)
    assert typing[0].user_id == ua.id and typing[0].typing

    note = await a.send_message("me", "to forward")
    fwd = await a.forward_messages(bob, note)
    assert fwd.fwd_from is not None and fwd.fwd_from.from_id.user_id == ua.id
    alice_for_b = (await b.get_dialogs())[0].entity
    (got,) = await b.get_messages(alice_for_b, limit=1)
    assert got.message == "to forward" and got.fwd_from is not None

    result = await a(functions.messages.DeleteHistoryRequest(bob, max_id=0, revoke=True))
    assert result.pts_count == 1 and result.offset == 0
    assert list(await a.get_messages(bob, limit=10)) == []
    assert list(await b.get_messages(alice_for_b, limit=10)) == []
    assert bob.id not in [d.entity.id for d in await a.get_dialogs()]

    read = await b(functions.messages.ReadMessageContentsRequest(id=[1]))
    assert read.pts_count == 0
    assert await b(functions.messages.ReceivedMessagesRequest(max_id=10)) == []


async def test_pins_drafts_upload_media_and_profile_photo_switch(
    server: Server, telethon_for: Factory, tmp_path: Any
) -> None:
    a, _ua = await signed_in(server, telethon_for, "Alice")
    users = []
    for name in ("B", "C"):
        _c, u = await signed_in(server, telethon_for, name)
        users.append(u)
    peers = (
        await a(
            functions.contacts.ImportContactsRequest(
                [tt.InputPhoneContact(i, u.phone, "x", "") for i, u in enumerate(users)]
            )
        )
    ).users
    for p in peers:
        await a.send_message(p, "hi")
        await a(functions.messages.ToggleDialogPinRequest(tt.InputDialogPeer(p), pinned=True))
    order = [tt.InputDialogPeer(p) for p in peers]  # oldest pin first now
    assert await a(
        functions.messages.ReorderPinnedDialogsRequest(folder_id=0, order=order, force=True)
    )
    pinned = await a(functions.messages.GetPinnedDialogsRequest(folder_id=0))
    assert [d.peer.user_id for d in pinned.dialogs] == [p.id for p in peers]

    for p in peers:
        await a(functions.messages.SaveDraftRequest(peer=p, message="later"))
    assert await a(functions.messages.ClearAllDraftsRequest())
    drafts = await a(functions.messages.GetAllDraftsRequest())
    assert (
        all(isinstance(u.draft, tt.DraftMessageEmpty) for u in drafts.updates) or not drafts.updates
    )

    raw = io.BytesIO()
    Image.new("RGB", (300, 200), (1, 2, 3)).save(raw, "JPEG")
    path = tmp_path / "p.jpg"
    path.write_bytes(raw.getvalue())
    media = await a(
        functions.messages.UploadMediaRequest(
            peer=tt.InputPeerSelf(),
            media=tt.InputMediaUploadedPhoto(file=await a.upload_file(str(path))),
        )
    )
    assert isinstance(media, tt.MessageMediaPhoto) and media.photo.sizes
    first = await a(functions.photos.UploadProfilePhotoRequest(file=await a.upload_file(str(path))))
    second = await a(
        functions.photos.UploadProfilePhotoRequest(file=await a.upload_file(str(path)))
    )
    back = tt.InputPhoto(first.photo.id, first.photo.access_hash, first.photo.file_reference)
    await a(functions.photos.UpdateProfilePhotoRequest(id=back))
    me = await a.get_me()
    assert me.photo.photo_id == first.photo.id != second.photo.id
    await a(functions.photos.UpdateProfilePhotoRequest(id=tt.InputPhotoEmpty()))
    me = await a.get_me()
    assert me.photo is None or isinstance(me.photo, tt.UserProfilePhotoEmpty)
