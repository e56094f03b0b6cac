"""bff drafts: a draft typed on one device appears on the others.

A draft is kept on the dialog (biz/dialog); saving or clearing one goes
through the msg writer, which logs ``updateDraftMessage`` for the user's other
devices (pushed live, and returned by getDifference to a device that was away).
"""

from __future__ import annotations

import time
from typing import Any

from teamgram.bff.messages import _key, _me, check_text, clean_entities, resolve_peer
from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.service.biz.peers import PEER_USER, peer_tl
from teamgram.tl import functions as fn
from teamgram.tl import types

router = Router()


@router(fn.messages.SaveDraft)
async def save_draft(ctx: RequestContext, req: fn.messages.SaveDraft) -> bool:
    peer = await resolve_peer(ctx, req.peer)
    if req.media is not None:
        raise RpcError(400, "MEDIA_INVALID")
    check_text(ctx, req.message, allow_empty=True)
    entities = clean_entities(ctx, req.message, req.entities)
    reply_to = None
    if isinstance(req.reply_to, types.InputReplyToMessage) and req.reply_to.reply_to_msg_id:
        reply_to = types.InputReplyToMessage(reply_to_msg_id=req.reply_to.reply_to_msg_id)
    draft: Any = None
    if req.message or reply_to is not None:
        draft = types.DraftMessage(
            message=req.message,
            date=int(time.time()),
            no_webpage=req.no_webpage,
            invert_media=req.invert_media,
            reply_to=reply_to,
            entities=entities,
        )
    await ctx.server.msg.save_draft(_me(ctx), peer, draft, _key(ctx))
    return True


@router(fn.messages.GetAllDrafts)
async def get_all_drafts(ctx: RequestContext, req: fn.messages.GetAllDrafts) -> Any:
    me = _me(ctx)
    dialogs = await ctx.server.dialogs.with_drafts(me)
    updates = [types.UpdateDraftMessage(peer=peer_tl(*d.peer), draft=d.draft_tl()) for d in dialogs]
    ids = sorted({d.peer_id for d in dialogs if d.peer_type == PEER_USER})
    users = await ctx.server.users.users_for(me, ids)
    return types.Updates(updates=updates, users=users, chats=[], date=int(time.time()), seq=0)


@router(fn.messages.ClearAllDrafts)
async def clear_all_drafts(ctx: RequestContext, req: fn.messages.ClearAllDrafts) -> bool:
    await ctx.server.msg.clear_all_drafts(_me(ctx), _key(ctx))
    return True
