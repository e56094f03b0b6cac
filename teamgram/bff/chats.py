"""bff basic groups: create, members in and out, title, and the group's info.

Every change to a group is also a service message in every member's box
(``messageActionChatCreate``, ``...AddUser``, ``...DeleteUser``, ``...EditTitle``),
sent through msg like any message, so every member's devices learn of it live
or through getDifference, in pts order with the group's other messages.
"""

from __future__ import annotations

import time
from typing import Any

from teamgram.bff.messages import _key, _me, views_for
from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.messenger.msg.service import NewMessage
from teamgram.service.biz.chat import ChatRecord
from teamgram.service.biz.peers import PEER_CHAT
from teamgram.tl import TLObject, types
from teamgram.tl import functions as fn

router = Router()


async def _announce(
    ctx: RequestContext, chat: ChatRecord, action: TLObject, extra_users: set[int]
) -> types.Updates:
    """Send the service message ``action`` to the group; the caller's Updates answer."""
    me = _me(ctx)
    peer = (PEER_CHAT, chat.id)
    views = await views_for(ctx, peer, extra_users)
    chats = [chat.chat_for(me)]
    sent = await ctx.server.msg.send(
        me, peer, [NewMessage(action=action.to_bytes())], views, _key(ctx)
    )
    s = sent[0]
    return types.Updates(
        updates=[
            types.UpdateNewMessage(message=ctx.server.msg.render(s.record), pts=s.pts, pts_count=1)
        ],
        users=views.get(me, []),
        chats=chats,
        date=int(time.time()),
        seq=0,
    )


@router(fn.messages.CreateChat)
async def create_chat(ctx: RequestContext, req: fn.messages.CreateChat) -> Any:
    me = _me(ctx)
    members: list[int] = []
    for u in req.users:
        uid = ctx.server.users.resolve_input_user(me, u)
        if await ctx.server.users.get(uid) is None:
            raise RpcError(400, "USER_ID_INVALID")
        members.append(uid)
    chat = await ctx.server.chats.create(me, req.title, members)
    action = types.MessageActionChatCreate(title=chat.title, users=sorted(chat.members))
    updates = await _announce(ctx, chat, action, set(chat.members))
    return types.messages.InvitedUsers(updates=updates, missing_invitees=[])


@router(fn.messages.AddChatUser)
async def add_chat_user(ctx: RequestContext, req: fn.messages.AddChatUser) -> Any:
    me = _me(ctx)
    uid = ctx.server.users.resolve_input_user(me, req.user_id)
    if await ctx.server.users.get(uid) is None:
        raise RpcError(400, "USER_ID_INVALID")
    chat = await ctx.server.chats.add_member(req.chat_id, uid, me)
    updates = await _announce(ctx, chat, types.MessageActionChatAddUser(users=[uid]), {uid})
    return types.messages.InvitedUsers(updates=updates, missing_invitees=[])


@router(fn.messages.DeleteChatUser)
async def delete_chat_user(ctx: RequestContext, req: fn.messages.DeleteChatUser) -> Any:
    """Leave (the caller) or remove someone; the one who goes gets the notice too."""
    me = _me(ctx)
    uid = ctx.server.users.resolve_input_user(me, req.user_id)
    chat = await ctx.server.chats.member_chat(req.chat_id, me)
    if uid not in chat.members:
        raise RpcError(400, "USER_NOT_PARTICIPANT")
    if uid != me:  # rights are checked before anything is announced
        actor = chat.members[me]
        if not (me == chat.creator_id or actor.admin or chat.members[uid].inviter_id == me):
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        if uid == chat.creator_id:
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
    updates = await _announce(ctx, chat, types.MessageActionChatDeleteUser(user_id=uid), {uid})
    chat = await ctx.server.chats.remove_member(req.chat_id, uid, me)
    updates.chats = [chat.chat_for(me)]
    if uid == me and req.revoke_history:
        await ctx.server.msg.delete_history(me, (PEER_CHAT, chat.id), 0, False, False, _key(ctx))
    return updates


@router(fn.messages.EditChatTitle)
async def edit_chat_title(ctx: RequestContext, req: fn.messages.EditChatTitle) -> Any:
    chat = await ctx.server.chats.set_title(req.chat_id, req.title, _me(ctx))
    return await _announce(ctx, chat, types.MessageActionChatEditTitle(title=chat.title), set())


@router(fn.messages.GetChats)
async def get_chats(ctx: RequestContext, req: fn.messages.GetChats) -> Any:
    me = _me(ctx)
    found = await ctx.server.chats.get_many(list(req.id))
    return types.messages.Chats(chats=[c.chat_for(me) for c in found])


@router(fn.messages.GetFullChat)
async def get_full_chat(ctx: RequestContext, req: fn.messages.GetFullChat) -> Any:
    me = _me(ctx)
    chat = await ctx.server.chats.get(req.chat_id)
    if chat is None:
        raise RpcError(400, "CHAT_ID_INVALID")
    if me not in chat.members:
        participants: Any = types.ChatParticipantsForbidden(chat_id=chat.id)
        user_ids: list[int] = []
    else:
        participants = chat.participants()
        user_ids = sorted(chat.members)
    await ctx.server.users.load_notify(me)
    full = types.ChatFull(
        id=chat.id,
        about="",
        participants=participants,
        notify_settings=ctx.server.users.notify_settings(me, f"chat:{chat.id}"),
    )
    return types.messages.ChatFull(
        full_chat=full,
        chats=[chat.chat_for(me)],
        users=await ctx.server.users.users_for(me, user_ids),
    )
