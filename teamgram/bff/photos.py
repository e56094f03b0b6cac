"""bff ``photos.*``: profile photos.

A profile photo is a photo (media) made with the profile ladder (a/b/c) and
marked as one of the owner's profile photos; the user row points at the current
one (biz/users shows it as ``UserProfilePhoto`` to those its privacy allows).
The owner's other devices get ``updateUser`` with the new self object.
"""

from __future__ import annotations

import time
from typing import Any

from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.tl import functions as fn
from teamgram.tl import types

router = Router()

PAGE_MAX = 100


def _me(ctx: RequestContext) -> int:
    assert ctx.user_id is not None
    return ctx.user_id


async def _announce(ctx: RequestContext) -> None:
    """The owner's other devices learn the new photo."""
    me = _me(ctx)
    user = await ctx.server.users.user_for(me, me)
    updates = types.Updates(
        updates=[types.UpdateUser(user_id=me)],
        users=[user],
        chats=[],
        date=int(time.time()),
        seq=0,
    )
    ctx.server.sessions.push_to_user(me, updates, exclude_key=ctx.auth_key.effective_id)


@router(fn.photos.UploadProfilePhoto)
async def upload_profile_photo(ctx: RequestContext, req: fn.photos.UploadProfilePhoto) -> Any:
    me = _me(ctx)
    if req.bot is not None:
        raise RpcError(400, "BOT_INVALID")
    if req.file is None:
        # Video avatars and emoji markups need video processing this server lacks.
        raise RpcError(400, "PHOTO_FILE_MISSING")
    rec = await ctx.server.media.upload_photo(me, req.file, profile=True)
    await ctx.server.users.set_photo(me, rec.id, rec.stripped)
    await _announce(ctx)
    return types.photos.Photo(
        photo=ctx.server.media.photo_tl(rec), users=[await ctx.server.users.user_for(me, me)]
    )


@router(fn.photos.UpdateProfilePhoto)
async def update_profile_photo(ctx: RequestContext, req: fn.photos.UpdateProfilePhoto) -> Any:
    me = _me(ctx)
    if req.bot is not None:
        raise RpcError(400, "BOT_INVALID")
    if isinstance(req.id, types.InputPhotoEmpty):
        await ctx.server.users.set_photo(me, None, None)
        await _announce(ctx)
        return types.photos.Photo(
            photo=types.PhotoEmpty(id=0), users=[await ctx.server.users.user_for(me, me)]
        )
    rec = await ctx.server.media.resolve_input_photo(req.id)
    if rec.owner_id != me:
        raise RpcError(400, "PHOTO_INVALID")
    if not rec.profile:
        await ctx.server.media.set_profile([rec.id], True)
    await ctx.server.users.set_photo(me, rec.id, rec.stripped)
    await _announce(ctx)
    return types.photos.Photo(
        photo=ctx.server.media.photo_tl(rec), users=[await ctx.server.users.user_for(me, me)]
    )


@router(fn.photos.DeletePhotos)
async def delete_photos(ctx: RequestContext, req: fn.photos.DeletePhotos) -> list[int]:
    me = _me(ctx)
    deleted: list[int] = []
    for p in req.id:
        try:
            rec = await ctx.server.media.resolve_input_photo(p, check_ref=False)
        except RpcError:
            continue
        if rec.owner_id == me and rec.profile:
            deleted.append(rec.id)
    if not deleted:
        return []
    await ctx.server.media.set_profile(deleted, False)
    current = await ctx.server.users.get(me)
    if current is not None and current.photo_id in deleted:
        # Telegram falls back to the newest remaining profile photo.
        remaining, _ = await ctx.server.media.profile_photos(me, 0, 0, 1)
        if remaining:
            await ctx.server.users.set_photo(me, remaining[0].id, remaining[0].stripped)
        else:
            await ctx.server.users.set_photo(me, None, None)
        await _announce(ctx)
    return deleted


@router(fn.photos.GetUserPhotos)
async def get_user_photos(ctx: RequestContext, req: fn.photos.GetUserPhotos) -> Any:
    me = _me(ctx)
    user_id = ctx.server.users.resolve_input_user(me, req.user_id)
    user = await ctx.server.users.user_for(me, user_id)
    if user.photo is None or isinstance(user.photo, types.UserProfilePhotoEmpty):
        return types.photos.Photos(photos=[], users=[user])  # none, or hidden from this viewer
    limit = max(0, min(req.limit or PAGE_MAX, PAGE_MAX))
    recs, total = await ctx.server.media.profile_photos(user_id, req.offset, req.max_id, limit)
    photos = [ctx.server.media.photo_tl(r) for r in recs]
    if total <= len(recs) and not req.offset:
        return types.photos.Photos(photos=photos, users=[user])
    return types.photos.PhotosSlice(count=total, photos=photos, users=[user])
