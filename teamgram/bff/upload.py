"""bff ``upload.*``: parts in (dfs), bytes out (media, with access checks).

Parts go to the dfs spool as they come; a file becomes a photo or document only
when a later call uses it (sendMedia, uploadMedia, uploadProfilePhoto).
``upload.getFile`` serves photo sizes, document bytes and thumbnails, and
profile photos, to users who may see them, with Telegram's alignment rules.
"""

from __future__ import annotations

from typing import Any

from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.tl import functions as fn
from teamgram.tl import types

router = Router()


def _me(ctx: RequestContext) -> int:
    assert ctx.user_id is not None
    return ctx.user_id


@router(fn.upload.SaveFilePart)
async def save_file_part(ctx: RequestContext, req: fn.upload.SaveFilePart) -> bool:
    await ctx.server.uploads.save_part(_me(ctx), req.file_id, req.file_part, req.bytes)
    return True


@router(fn.upload.SaveBigFilePart)
async def save_big_file_part(ctx: RequestContext, req: fn.upload.SaveBigFilePart) -> bool:
    await ctx.server.uploads.save_part(
        _me(ctx), req.file_id, req.file_part, req.bytes, total_parts=req.file_total_parts
    )
    return True


@router(fn.upload.GetFile)
async def get_file(ctx: RequestContext, req: fn.upload.GetFile) -> Any:
    me = _me(ctx)
    media = ctx.server.media
    loc = req.location
    if isinstance(loc, types.InputPhotoFileLocation):
        return await media.read_photo(me, loc, req.offset, req.limit, req.precise)
    if isinstance(loc, types.InputDocumentFileLocation):
        return await media.read_document(me, loc, req.offset, req.limit, req.precise)
    if isinstance(loc, types.InputPeerPhotoFileLocation) and isinstance(
        loc.peer, types.InputPeerChat
    ):
        chat = await ctx.server.chats.member_chat(loc.peer.chat_id, me)
        rec = await media.photo(loc.photo_id) if chat.photo_id == loc.photo_id else None
        if rec is None:
            raise RpcError(400, "LOCATION_INVALID")
        return await media.read_profile_photo(rec, loc.big, req.offset, req.limit, req.precise)
    if isinstance(loc, types.InputPeerPhotoFileLocation):
        user_id = ctx.server.users.resolve_input_peer_user(me, loc.peer)
        user = await ctx.server.users.user_for(me, user_id)
        photo = user.photo
        if not isinstance(photo, types.UserProfilePhoto) or photo.photo_id != loc.photo_id:
            # Not (or no longer) the photo this viewer may see on that profile.
            rec = await media.photo(loc.photo_id)
            if rec is None or rec.owner_id != user_id or not rec.profile or photo is None:
                raise RpcError(400, "LOCATION_INVALID")
        else:
            rec = await media.photo(loc.photo_id)
            if rec is None:
                raise RpcError(400, "LOCATION_INVALID")
        return await media.read_profile_photo(rec, loc.big, req.offset, req.limit, req.precise)
    raise RpcError(400, "LOCATION_INVALID")


@router(fn.upload.GetFileHashes)
async def get_file_hashes(ctx: RequestContext, req: fn.upload.GetFileHashes) -> list[Any]:
    if not isinstance(req.location, types.InputDocumentFileLocation):
        raise RpcError(400, "LOCATION_INVALID")
    return await ctx.server.media.document_hashes(_me(ctx), req.location, req.offset)
