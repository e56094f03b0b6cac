"""bff ``updates.*``: the state a device starts from, and what it missed.

Both read sync's committed state and log (see teamgram.messenger.sync).
getDifference returns the logged updates after the device's pts in log order:
new messages in ``new_messages``, everything else in ``other_updates``, with the
users they mention; a long gap comes in slices (``differenceSlice``), a gap too
long to replay as ``differenceTooLong`` (the device reloads its dialogs).
"""

from __future__ import annotations

import time
from typing import Any

from teamgram.bff.rpc import RequestContext, Router
from teamgram.messenger.sync.service import state_tl
from teamgram.tl import functions as fn
from teamgram.tl import types

router = Router()


def _me(ctx: RequestContext) -> int:
    assert ctx.user_id is not None
    return ctx.user_id


@router(fn.updates.GetState)
async def get_state(ctx: RequestContext, req: fn.updates.GetState) -> types.updates.State:
    me = _me(ctx)
    state = await ctx.server.sync.get_state(me)
    return state_tl(state, await ctx.server.dialogs.unread_total(me))


def _peer_users(
    obj: Any, out: set[int], chats: set[int] | None = None, channels: set[int] | None = None
) -> None:
    """User ids (basic-group and channel ids) a client needs to show ``obj`` (Message or
    Update)."""
    for name in ("from_id", "peer_id", "peer"):
        p = getattr(obj, name, None)
        if isinstance(p, types.DialogPeer):
            p = p.peer
        if isinstance(p, types.PeerUser):
            out.add(p.user_id)
        elif isinstance(p, types.PeerChat) and chats is not None:
            chats.add(p.chat_id)
        elif isinstance(p, types.PeerChannel) and channels is not None:
            channels.add(p.channel_id)
    channel_id = getattr(obj, "channel_id", None)
    if isinstance(channel_id, int) and channels is not None:
        channels.add(channel_id)
    fwd = getattr(obj, "fwd_from", None)
    if fwd is not None:
        for p in (fwd.from_id, fwd.saved_from_peer):
            if isinstance(p, types.PeerUser):
                out.add(p.user_id)
            elif isinstance(p, types.PeerChannel) and channels is not None:
                channels.add(p.channel_id)
    user_id = getattr(obj, "user_id", None)
    if isinstance(user_id, int):
        out.add(user_id)
    message = getattr(obj, "message", None)
    if message is not None and not isinstance(message, str):
        _peer_users(message, out, chats, channels)
    action = getattr(obj, "action", None)
    for uid in getattr(action, "users", None) or ():
        out.add(uid)


@router(fn.updates.GetDifference)
async def get_difference(ctx: RequestContext, req: fn.updates.GetDifference) -> Any:
    me = _me(ctx)
    limit = ctx.server.config.messages.difference_limit
    if req.pts_limit:
        limit = max(1, min(limit, req.pts_limit))
    diff = await ctx.server.sync.difference(
        me, req.pts, req.date, limit=limit, total_limit=req.pts_total_limit
    )
    if diff.too_long:
        return types.updates.DifferenceTooLong(pts=diff.state.pts)
    # Channels keep their own pts: the device is told which changed since its state,
    # and fetches them with getChannelDifference.
    from teamgram.bff.channels import channels_changed_since

    channel_news = [] if diff.partial else await channels_changed_since(ctx, req.date)
    if not diff.updates and not channel_news:
        if req.pts < diff.state.pts:  # entries gone (never, unless trimmed): start over
            return types.updates.DifferenceTooLong(pts=diff.state.pts)
        return types.updates.DifferenceEmpty(date=int(time.time()), seq=diff.state.seq)
    new_messages: list[Any] = []
    other: list[Any] = []
    ids: set[int] = {me}
    chat_ids: set[int] = set()
    channel_ids: set[int] = {u.channel_id for u in channel_news}
    for entry in diff.updates:
        upd = entry.update
        if isinstance(upd, types.UpdateNewMessage):
            new_messages.append(upd.message)
        else:
            other.append(upd)
        _peer_users(upd, ids, chat_ids, channel_ids)
    other += channel_news
    users = await ctx.server.users.users_for(me, sorted(ids))
    chats = [c.chat_for(me) for c in await ctx.server.chats.get_many(sorted(chat_ids))]
    chats += [
        ctx.server.channels.view(c, me)
        for c in await ctx.server.channels.get_many(sorted(channel_ids))
    ]
    state = state_tl(diff.state, await ctx.server.dialogs.unread_total(me))
    if channel_news:
        state.date = max(state.date, int(time.time()))  # channels are covered up to now
    if diff.partial:
        return types.updates.DifferenceSlice(
            new_messages=new_messages,
            new_encrypted_messages=[],
            other_updates=other,
            chats=chats,
            users=users,
            intermediate_state=state,
        )
    return types.updates.Difference(
        new_messages=new_messages,
        new_encrypted_messages=[],
        other_updates=other,
        chats=chats,
        users=users,
        state=state,
    )
