"""bff dialogs: the conversation list, pinned dialogs and unread marks.

The list comes from biz/dialog; each dialog's top message from the caller's
box. Pins and unread marks change through the msg writer so that the caller's
other devices hear of them (``updateDialogPinned``, ``updateDialogUnreadMark``)
and a device that was away catches up through getDifference.
"""

from __future__ import annotations

from typing import Any

from teamgram.bff.messages import _dialog_input_peer, _key, _me, resolve_peer
from teamgram.bff.rpc import RequestContext, Router
from teamgram.messenger.sync.service import state_tl
from teamgram.service.biz.dialog import DialogRecord
from teamgram.service.biz.peers import PEER_CHANNEL, PEER_CHAT, PEER_USER, PeerKey, peer_tl
from teamgram.tl import functions as fn
from teamgram.tl import types

router = Router()

DIALOGS_PAGE_MAX = 100


def dialog_tl(ctx: RequestContext, d: DialogRecord, pts: int | None = None) -> types.Dialog:
    return types.Dialog(
        pts=pts,
        peer=peer_tl(*d.peer),
        top_message=d.top_message,
        read_inbox_max_id=d.read_inbox_max_id,
        read_outbox_max_id=d.read_outbox_max_id,
        unread_count=d.unread_count,
        unread_mentions_count=0,
        unread_reactions_count=0,
        unread_poll_votes_count=0,
        notify_settings=ctx.server.users.notify_settings(_me(ctx), f"peer:{d.peer_id}"),
        pinned=d.pinned > 0,
        unread_mark=d.unread_mark,
        draft=d.draft_tl(),
    )


async def dialogs_parts(
    ctx: RequestContext, dialogs: list[DialogRecord]
) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """(dialogs, top messages, users, chats) for an answer.

    A channel dialog takes its top message, unread count and pts from the channel."""
    me = _me(ctx)
    await ctx.server.users.load_notify(me)
    boxed = [d for d in dialogs if d.peer_type != PEER_CHANNEL]
    found = await ctx.server.msg.get(me, [d.top_message for d in boxed if d.top_message])
    recs = [found[d.top_message] for d in boxed if d.top_message in found]
    msgs = await ctx.server.msg.views(me, recs)
    ids: set[int] = {d.peer_id for d in dialogs if d.peer_type == PEER_USER}
    for r in recs:
        ids |= r.user_ids()
    chat_ids = [d.peer_id for d in dialogs if d.peer_type == PEER_CHAT]
    chats = [c.chat_for(me) for c in await ctx.server.chats.get_many(chat_ids)]
    channel_ids = [d.peer_id for d in dialogs if d.peer_type == PEER_CHANNEL]
    pts: dict[int, int] = {}
    if channel_ids:
        states = await ctx.server.channel_sync.states(channel_ids)
        tops = await ctx.server.channel_msgs.tops(channel_ids)
        for rec in await ctx.server.channels.get_many(channel_ids):
            chats.append(ctx.server.channels.view(rec, me))
            pts[rec.id] = states[rec.id].pts
            top = tops.get(rec.id)
            if top is None:
                continue
            posts = await ctx.server.channel_msgs.get(rec.id, [top.id])
            if top.id in posts:
                post = posts[top.id]
                msgs += await ctx.server.channel_msgs.views(me, rec.broadcast, [post])
                ids |= post.user_ids() if rec.megagroup else set()
        for d in dialogs:
            if d.peer_type == PEER_CHANNEL:
                top = tops.get(d.peer_id)
                if top is not None:
                    d.top_message, d.top_date = top.id, top.date
                d.unread_count = await ctx.server.channel_msgs.unread_count(
                    d.peer_id, d.read_inbox_max_id, me
                )
    users = await ctx.server.users.users_for(me, sorted(ids))
    out = [
        dialog_tl(ctx, d, pts.get(d.peer_id) if d.peer_type == PEER_CHANNEL else None)
        for d in dialogs
    ]
    return out, msgs, users, chats


async def _channel_tops(ctx: RequestContext, ids: list[int]) -> dict[int, tuple[int, int]]:
    tops = await ctx.server.channel_msgs.tops(ids)
    return {c: (t.id, t.date) for c, t in tops.items()}


@router(fn.messages.GetDialogs)
async def get_dialogs(ctx: RequestContext, req: fn.messages.GetDialogs) -> Any:
    limit = max(0, min(req.limit or DIALOGS_PAGE_MAX, DIALOGS_PAGE_MAX))
    offset_id = req.offset_id
    page, total = await ctx.server.dialogs.page(
        _me(ctx),
        req.folder_id or 0,
        req.offset_date,
        offset_id,
        limit,
        req.exclude_pinned,
        lambda ids: _channel_tops(ctx, ids),
    )
    dialogs, msgs, users, chats = await dialogs_parts(ctx, page)
    if len(page) >= total and not req.offset_date and not offset_id:
        return types.messages.Dialogs(dialogs=dialogs, messages=msgs, chats=chats, users=users)
    return types.messages.DialogsSlice(
        count=total, dialogs=dialogs, messages=msgs, chats=chats, users=users
    )


async def _peer_dialogs(ctx: RequestContext, records: list[DialogRecord]) -> Any:
    dialogs, msgs, users, chats = await dialogs_parts(ctx, records)
    me = _me(ctx)
    state = await ctx.server.sync.get_state(me)
    unread = await ctx.server.dialogs.unread_total(me)
    return types.messages.PeerDialogs(
        dialogs=dialogs, messages=msgs, chats=chats, users=users, state=state_tl(state, unread)
    )


@router(fn.messages.GetPeerDialogs)
async def get_peer_dialogs(ctx: RequestContext, req: fn.messages.GetPeerDialogs) -> Any:
    me = _me(ctx)
    peers: list[PeerKey] = [await resolve_peer(ctx, _dialog_input_peer(p)) for p in req.peers]
    found = await ctx.server.dialogs.get_many(me, peers)
    records = [found.get(p) or DialogRecord(me, p[0], p[1]) for p in dict.fromkeys(peers)]
    return await _peer_dialogs(ctx, records)


@router(fn.messages.GetPinnedDialogs)
async def get_pinned_dialogs(ctx: RequestContext, req: fn.messages.GetPinnedDialogs) -> Any:
    return await _peer_dialogs(ctx, await ctx.server.dialogs.pinned(_me(ctx), req.folder_id))


@router(fn.messages.ToggleDialogPin)
async def toggle_dialog_pin(ctx: RequestContext, req: fn.messages.ToggleDialogPin) -> bool:
    peer = await resolve_peer(ctx, _dialog_input_peer(req.peer))
    await ctx.server.msg.toggle_dialog_pin(_me(ctx), peer, req.pinned, _key(ctx))
    return True


@router(fn.messages.ReorderPinnedDialogs)
async def reorder_pinned_dialogs(
    ctx: RequestContext, req: fn.messages.ReorderPinnedDialogs
) -> bool:
    order = [await resolve_peer(ctx, _dialog_input_peer(p)) for p in req.order]
    await ctx.server.msg.reorder_pins(_me(ctx), order, req.force, _key(ctx))
    return True


@router(fn.messages.MarkDialogUnread)
async def mark_dialog_unread(ctx: RequestContext, req: fn.messages.MarkDialogUnread) -> bool:
    peer = await resolve_peer(ctx, _dialog_input_peer(req.peer))
    await ctx.server.msg.mark_unread(_me(ctx), peer, req.unread, _key(ctx))
    return True


@router(fn.messages.GetDialogUnreadMarks)
async def get_dialog_unread_marks(
    ctx: RequestContext, req: fn.messages.GetDialogUnreadMarks
) -> list[Any]:
    marked = await ctx.server.dialogs.unread_marked(_me(ctx))
    return [types.DialogPeer(peer=peer_tl(*d.peer)) for d in marked]
