"""bff media in messages: ``messages.sendMedia``, ``uploadMedia``, ``sendMultiMedia``.

Uploaded files become photos or documents in the media service; existing ones
(``inputMediaPhoto`` / ``inputMediaDocument``) are reused when the sender may see
them. The message stores the ``MessageMedia`` (file references are refreshed
whenever a message is shown) and the media id, which is what lets each box's
owner download the file.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from teamgram.bff import channels
from teamgram.bff.messages import (
    _key,
    _me,
    check_can_send,
    check_flood,
    clean_entities,
    peer_blocked_me,
    peer_chats,
    reply_to_id,
    resolve_peer,
    views_for,
)
from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.messenger.msg.records import (
    FLAG_HAS_URL,
    FLAG_SILENT,
    MEDIA_PHOTO,
    has_url,
    pack_vector,
)
from teamgram.messenger.msg.service import NewMessage
from teamgram.service.biz.peers import PEER_CHANNEL
from teamgram.tl import TLObject, types
from teamgram.tl import functions as fn

router = Router()

# help.getConfig's caption_length_max for a regular account.
CAPTION_MAX = 1024
# An album holds 2 to 10 items.
ALBUM_MAX = 10


@dataclass(slots=True)
class StoredMedia:
    media: TLObject  # MessageMedia with fresh file references (for answers)
    blob: bytes  # what the message row keeps
    kind: int
    media_id: int


async def _may_use(ctx: RequestContext, owner_id: int, media_id: int) -> bool:
    me = _me(ctx)
    return owner_id == me or await ctx.server.can_see_media(me, media_id)


async def store_media(ctx: RequestContext, media: Any) -> StoredMedia:
    """A photo or document from an InputMedia (uploaded now, or one the sender can see)."""
    me = _me(ctx)
    svc = ctx.server.media
    if isinstance(media, types.InputMediaUploadedPhoto):
        photo = await svc.upload_photo(me, media.file)
        out: TLObject = svc.message_media_photo(photo)
        return StoredMedia(out, out.to_bytes(), MEDIA_PHOTO, photo.id)
    if isinstance(media, types.InputMediaPhoto):
        photo = await svc.resolve_input_photo(media.id)
        if not (photo.profile or await _may_use(ctx, photo.owner_id, photo.id)):
            raise RpcError(400, "PHOTO_INVALID")
        out = svc.message_media_photo(photo)
        return StoredMedia(out, out.to_bytes(), MEDIA_PHOTO, photo.id)
    if isinstance(media, types.InputMediaUploadedDocument):
        doc = await svc.upload_document(
            me, media.file, media.mime_type, list(media.attributes), media.thumb
        )
        out = svc.message_media_document(doc)
        return StoredMedia(out, out.to_bytes(), doc.media_kind, doc.id)
    if isinstance(media, types.InputMediaDocument):
        doc = await svc.resolve_input_document(media.id)
        if not await _may_use(ctx, doc.owner_id, doc.id):
            raise RpcError(400, "DOCUMENT_INVALID")
        out = svc.message_media_document(doc)
        return StoredMedia(out, out.to_bytes(), doc.media_kind, doc.id)
    # Geo points, contacts, polls, dice, games...: not served by this server yet.
    raise RpcError(400, "MEDIA_INVALID")


def _caption(
    ctx: RequestContext, text: str, entities: list[Any] | None
) -> tuple[bytes | None, int]:
    if len(text) > CAPTION_MAX:
        raise RpcError(400, "MEDIA_CAPTION_TOO_LONG")
    ents = clean_entities(ctx, text, entities) if text else None
    return pack_vector(ents), FLAG_HAS_URL if text and has_url(text, ents) else 0


def _answer(
    ctx: RequestContext,
    sent: list[Any],
    random_ids: list[int],
    users: list[Any],
    chats: list[Any],
) -> Any:
    updates: list[Any] = [
        types.UpdateMessageID(id=s.record.id, random_id=r)
        for s, r in zip(sent, random_ids, strict=True)
    ]
    updates += [
        types.UpdateNewMessage(message=ctx.server.msg.render(s.record), pts=s.pts, pts_count=1)
        for s in sent
    ]
    return types.Updates(updates=updates, users=users, chats=chats, date=int(time.time()), seq=0)


@router(fn.messages.SendMedia)
async def send_media(ctx: RequestContext, req: fn.messages.SendMedia) -> Any:
    me = _me(ctx)
    peer = await resolve_peer(ctx, req.peer)
    entities, url_flag = _caption(ctx, req.message, req.entities)
    if peer[0] != PEER_CHANNEL:
        await check_can_send(ctx, peer, "send_media")
        check_flood(ctx)
    stored = await store_media(ctx, req.media)
    item = NewMessage(
        text=req.message,
        entities=entities,
        random_id=req.random_id,
        reply_to_id=reply_to_id(req.reply_to),
        media=stored.blob,
        media_kind=stored.kind,
        media_id=stored.media_id,
        flags=(FLAG_SILENT if req.silent else 0) | url_flag,
    )
    if peer[0] == PEER_CHANNEL:
        return await channels.send_stored(ctx, req.peer, [item])
    blocked = await peer_blocked_me(ctx, peer)
    views = await views_for(ctx, peer)
    chats = await peer_chats(ctx, peer)
    sent = await ctx.server.msg.send(
        me, peer, [item], views, _key(ctx), clear_draft=req.clear_draft, deliver_to_peer=not blocked
    )
    return _answer(ctx, sent, [req.random_id], views.get(me, []), chats)


@router(fn.messages.SendMultiMedia)
async def send_multi_media(ctx: RequestContext, req: fn.messages.SendMultiMedia) -> Any:
    me = _me(ctx)
    peer = await resolve_peer(ctx, req.peer)
    if not req.multi_media:
        raise RpcError(400, "MEDIA_EMPTY")
    if len(req.multi_media) > ALBUM_MAX:
        raise RpcError(400, "MULTI_MEDIA_TOO_LONG")
    if peer[0] != PEER_CHANNEL:
        await check_can_send(ctx, peer, "send_media")
        check_flood(ctx, len(req.multi_media))
    grouped_id = secrets.randbits(62) + 1
    items: list[NewMessage] = []
    random_ids: list[int] = []
    for single in req.multi_media:
        if not isinstance(single, types.InputSingleMedia):
            raise RpcError(400, "MEDIA_INVALID")
        entities, url_flag = _caption(ctx, single.message, single.entities)
        stored = await store_media(ctx, single.media)
        random_ids.append(single.random_id)
        items.append(
            NewMessage(
                text=single.message,
                entities=entities,
                random_id=single.random_id,
                reply_to_id=reply_to_id(req.reply_to),
                media=stored.blob,
                media_kind=stored.kind,
                media_id=stored.media_id,
                flags=(FLAG_SILENT if req.silent else 0) | url_flag,
                grouped_id=grouped_id,
            )
        )
    if peer[0] == PEER_CHANNEL:
        return await channels.send_stored(ctx, req.peer, items)
    blocked = await peer_blocked_me(ctx, peer)
    views = await views_for(ctx, peer)
    chats = await peer_chats(ctx, peer)
    sent = await ctx.server.msg.send(
        me, peer, items, views, _key(ctx), clear_draft=req.clear_draft, deliver_to_peer=not blocked
    )
    return _answer(ctx, sent, random_ids, views.get(me, []), chats)


@router(fn.messages.UploadMedia)
async def upload_media(ctx: RequestContext, req: fn.messages.UploadMedia) -> Any:
    await resolve_peer(ctx, req.peer)
    return (await store_media(ctx, req.media)).media
