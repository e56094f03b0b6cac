"""bff basic groups: create, members in and out, title, and the group's info.

Every change to a group is also a service message in every member's box
(``messageActionChatCreate``, ``...AddUser``, ``...DeleteUser``, ``...EditTitle``),
sent through msg like any message, so every member's devices learn of it live
or through getDifference, in pts order with the group's other messages.
"""

from __future__ import annotations

import time
from typing import Any

from teamgram.bff import channels
from teamgram.bff.messages import _key, _me, views_for
from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.messenger.msg.service import NewMessage
from teamgram.service.biz.chat import ChatRecord
from teamgram.service.biz.peers import PEER_CHANNEL, PEER_CHAT
from teamgram.tl import TLObject, types
from teamgram.tl import functions as fn

router = Router()


async def _announce(
    ctx: RequestContext,
    chat: ChatRecord,
    action: TLObject,
    extra_users: set[int],
    media_id: int | None = None,
) -> types.Updates:
    """Send the service message ``action`` to the group; the caller's Updates answer.

    ``media_id``: the photo the action carries (members may download it)."""
    me = _me(ctx)
    peer = (PEER_CHAT, chat.id)
    views = await views_for(ctx, peer, extra_users)
    chats = [chat.chat_for(me)]
    item = NewMessage(action=action.to_bytes(), media_id=media_id)
    sent = await ctx.server.msg.send(me, peer, [item], views, _key(ctx))
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


async def _chat_of_peer(ctx: RequestContext, peer: Any) -> ChatRecord:
    if not isinstance(peer, types.InputPeerChat):
        raise RpcError(400, "PEER_ID_INVALID")  # channels: their own service
    return await ctx.server.chats.member_chat(peer.chat_id, _me(ctx))


@router(fn.messages.ExportChatInvite)
async def export_chat_invite(ctx: RequestContext, req: fn.messages.ExportChatInvite) -> Any:
    if isinstance(req.peer, types.InputPeerChannel):
        rec = await channels.member_of(ctx, req.peer)
        ctx.server.channels.check_admin(rec, _me(ctx), "invite_users")
        return await ctx.server.chats.store_invite(
            rec.id, PEER_CHANNEL, _me(ctx), req.expire_date, req.usage_limit, req.title
        )
    chat = await _chat_of_peer(ctx, req.peer)
    if req.request_needed or req.subscription_pricing is not None:
        # Join requests and paid subscriptions belong to channels.
        raise RpcError(400, "CHAT_INVALID")
    return await ctx.server.chats.export_invite(
        chat.id, _me(ctx), req.expire_date, req.usage_limit, req.title
    )


@router(fn.messages.CheckChatInvite)
async def check_chat_invite(ctx: RequestContext, req: fn.messages.CheckChatInvite) -> Any:
    me = _me(ctx)
    row = await ctx.server.chats.invite_row(req.hash)
    if row.peer_type == PEER_CHANNEL:
        return await _check_channel_invite(ctx, row)
    chat, _row = await ctx.server.chats.invite(req.hash, member_id=me)
    if me in chat.members:
        return types.ChatInviteAlready(chat=chat.chat_for(me))
    photo: Any = types.PhotoEmpty(id=0)
    if chat.photo_id is not None:
        rec = await ctx.server.media.photo(chat.photo_id)
        if rec is not None:
            photo = ctx.server.media.photo_tl(rec)
    return types.ChatInvite(
        title=chat.title,
        photo=photo,
        participants_count=len(chat.members),
        color=chat.id % 7,
        participants=await ctx.server.users.users_for(me, sorted(chat.members)[:10]),
    )


@router(fn.messages.ImportChatInvite)
async def import_chat_invite(ctx: RequestContext, req: fn.messages.ImportChatInvite) -> Any:
    me = _me(ctx)
    row = await ctx.server.chats.invite_row(req.hash)
    if row.peer_type == PEER_CHANNEL:
        ctx.server.chats.check_usable(row)
        updates = await channels.join_by_invite(
            ctx, row.chat_id, row.admin_id, ctx.server.chats.invite_tl(row)
        )
        await ctx.server.chats.count_use(req.hash)
        return types.messages.ChatInviteJoinResultOk(updates=updates)
    chat, inviter = await ctx.server.chats.join_by_invite(req.hash, me)
    updates = await _announce(
        ctx, chat, types.MessageActionChatJoinedByLink(inviter_id=inviter), {inviter}
    )
    return types.messages.ChatInviteJoinResultOk(updates=updates)


async def _check_channel_invite(ctx: RequestContext, row: Any) -> Any:
    me = _me(ctx)
    rec = await ctx.server.channels.get(row.chat_id)
    if rec is None or rec.deleted:
        raise RpcError(400, "INVITE_HASH_INVALID")
    if rec.is_member(me):
        return types.ChatInviteAlready(chat=channels.view(ctx, rec))
    ctx.server.chats.check_usable(row)
    photo: Any = types.PhotoEmpty(id=0)
    if rec.photo_id is not None:
        p = await ctx.server.media.photo(rec.photo_id)
        if p is not None:
            photo = ctx.server.media.photo_tl(p)
    return types.ChatInvite(
        title=rec.title,
        about=rec.about or None,
        photo=photo,
        participants_count=len(rec.members),
        color=rec.id % 7,
        channel=True,
        broadcast=rec.broadcast,
        megagroup=rec.megagroup,
        public=rec.username is not None,
    )


@router(fn.messages.EditChatAdmin)
async def edit_chat_admin(ctx: RequestContext, req: fn.messages.EditChatAdmin) -> bool:
    me = _me(ctx)
    uid = ctx.server.users.resolve_input_user(me, req.user_id)
    chat = await ctx.server.chats.set_admin(req.chat_id, uid, req.is_admin, me)
    update = types.UpdateShort(
        update=types.UpdateChatParticipantAdmin(
            chat_id=chat.id, user_id=uid, is_admin=req.is_admin, version=chat.version
        ),
        date=int(time.time()),
    )
    for member in chat.members:
        ctx.server.sync.push_now(member, update)
    return True


@router(fn.messages.EditChatDefaultBannedRights)
async def edit_chat_default_banned_rights(
    ctx: RequestContext, req: fn.messages.EditChatDefaultBannedRights
) -> Any:
    me = _me(ctx)
    if isinstance(req.peer, types.InputPeerChannel):
        return await channels.edit_default_rights(ctx, req)
    chat = await _chat_of_peer(ctx, req.peer)
    chat = await ctx.server.chats.set_banned_rights(chat.id, req.banned_rights, me)
    update = types.UpdateChatDefaultBannedRights(
        peer=types.PeerChat(chat_id=chat.id),
        default_banned_rights=chat.default_rights(),
        version=chat.version,
    )
    answer = types.Updates(
        updates=[update], users=[], chats=[chat.chat_for(me)], date=int(time.time()), seq=0
    )
    for member in chat.members:
        if member != me:
            ctx.server.sync.push_now(
                member,
                types.Updates(
                    updates=[update],
                    users=[],
                    chats=[chat.chat_for(member)],
                    date=int(time.time()),
                    seq=0,
                ),
            )
    return answer


@router(fn.messages.EditChatPhoto)
async def edit_chat_photo(ctx: RequestContext, req: fn.messages.EditChatPhoto) -> Any:
    me = _me(ctx)
    chat = await ctx.server.chats.member_chat(req.chat_id, me)
    ctx.server.chats.check_right(chat, me, "change_info")
    photo = req.photo
    media = ctx.server.media
    if isinstance(photo, types.InputChatPhotoEmpty):
        if chat.photo_id is None:
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        chat = await ctx.server.chats.set_photo(chat.id, None, None, me)
        return await _announce(ctx, chat, types.MessageActionChatDeletePhoto(), set())
    if isinstance(photo, types.InputChatUploadedPhoto):
        if photo.file is None:
            raise RpcError(400, "PHOTO_FILE_MISSING")
        rec = await media.upload_photo(me, photo.file, profile=True)
    elif isinstance(photo, types.InputChatPhoto):
        rec = await media.resolve_input_photo(photo.id)
        if rec.owner_id != me and not await ctx.server.msg.has_media(me, rec.id):
            raise RpcError(400, "PHOTO_INVALID")
    else:
        raise RpcError(400, "PHOTO_INVALID")
    # Not one of the caller's own profile photos, though made the same way.
    await media.set_profile([rec.id], False)
    chat = await ctx.server.chats.set_photo(chat.id, rec.id, rec.stripped, me)
    action = types.MessageActionChatEditPhoto(photo=media.photo_tl(rec))
    return await _announce(ctx, chat, action, set(), media_id=rec.id)


@router(fn.messages.GetCommonChats)
async def get_common_chats(ctx: RequestContext, req: fn.messages.GetCommonChats) -> Any:
    me = _me(ctx)
    other = ctx.server.users.resolve_input_user(me, req.user_id)
    limit = max(0, min(req.limit or 100, 100))
    found = await ctx.server.chats.common(me, other, req.max_id, limit)
    return types.messages.Chats(chats=[c.chat_for(me) for c in found])


# Rights an admin of a basic group keeps in the supergroup it becomes.
_MIGRATED_ADMIN = types.ChatAdminRights(
    change_info=True,
    delete_messages=True,
    ban_users=True,
    invite_users=True,
    pin_messages=True,
    manage_call=True,
    other=True,
)


@router(fn.messages.MigrateChat)
async def migrate_chat(ctx: RequestContext, req: fn.messages.MigrateChat) -> Any:
    """A basic group becomes a supergroup: same title, members and admins. The group
    gets ``messageActionChatMigrateTo`` and goes read-only (``migrated_to``); the
    supergroup starts with ``messageActionChannelMigrateFrom``; old history stays in
    each member's box, reachable through the old chat."""
    me = _me(ctx)
    chat = await ctx.server.chats.member_chat(req.chat_id, me)
    if me != chat.creator_id:
        raise RpcError(400, "CHAT_ADMIN_REQUIRED")
    if chat.deactivated:
        raise RpcError(400, "CHAT_INVALID")
    d = await ctx.server.dialogs.get(me, (PEER_CHAT, chat.id))
    rec = await ctx.server.channels.create(
        me, chat.title, "", broadcast=False, migrated_from=(chat.id, d.top_message if d else 0)
    )
    others = [u for u in chat.members if u != me]
    if others:
        await ctx.server.channels.add_members(rec, others, me)
    for uid, member in chat.members.items():
        if member.admin and uid != me:
            await ctx.server.channels.edit_admin(rec, me, uid, _MIGRATED_ADMIN, None)
    if chat.photo_id is not None:
        await ctx.server.channels.set_photo(rec, chat.photo_id, chat.photo_stripped, me)
    # The old group's last word points at the supergroup; then it goes read-only.
    old = await _announce(ctx, chat, types.MessageActionChatMigrateTo(channel_id=rec.id), set())
    await ctx.server.chats.deactivate(chat.id, rec.id)
    new = await channels.announce(
        ctx,
        rec,
        types.MessageActionChannelMigrateFrom(title=chat.title, chat_id=chat.id),
        new_members=sorted(rec.members),
    )
    channels.channel_updated(ctx, rec, others)
    for uid in others:
        ctx.server.sync.push_now(
            uid,
            types.Updates(
                updates=[],
                users=[],
                chats=[chat.chat_for(uid)],
                date=int(time.time()),
                seq=0,
            ),
        )
    return types.Updates(
        updates=[*old.updates, *new.updates],
        users=new.users,
        chats=[chat.chat_for(me), channels.view(ctx, rec)],
        date=int(time.time()),
        seq=0,
    )


# ---------------------------------------------------------------- invite links
def _link_hash(link: str) -> str:
    """The hash of https://t.me/+HASH, t.me/joinchat/HASH or a bare hash."""
    tail = link.rstrip("/").rsplit("/", 1)[-1]
    return tail.removeprefix("+")


async def _managed_invite(ctx: RequestContext, peer: Any, link: str) -> Any:
    """The link row, if the caller may manage the peer's links (its admins with
    invite_users; a link's own maker); INVITE_HASH_EXPIRED for another peer's link."""
    me = _me(ctx)
    row = await ctx.server.chats.invite_row(_link_hash(link))
    target, peer_type = await _invite_target(ctx, peer)
    if row.chat_id != target or row.peer_type != peer_type:
        raise RpcError(400, "INVITE_HASH_EXPIRED")
    return row if row.admin_id == me else await _require_invite_admin(ctx, peer, row)


async def _invite_target(ctx: RequestContext, peer: Any) -> tuple[int, int]:
    if isinstance(peer, types.InputPeerChannel):
        rec = await channels.member_of(ctx, peer)
        ctx.server.channels.check_admin(rec, _me(ctx), "invite_users")
        return rec.id, PEER_CHANNEL
    chat = await _chat_of_peer(ctx, peer)
    ctx.server.chats.check_right(chat, _me(ctx), "invite_users")
    return chat.id, PEER_CHAT


async def _require_invite_admin(ctx: RequestContext, peer: Any, row: Any) -> Any:
    """Someone else's link: only the creator (channels: admins who may add admins)."""
    me = _me(ctx)
    if isinstance(peer, types.InputPeerChannel):
        rec = await channels.member_of(ctx, peer)
        if not rec.has_right(me, "add_admins"):
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
    else:
        chat = await _chat_of_peer(ctx, peer)
        if me != chat.creator_id:
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
    return row


@router(fn.messages.EditExportedChatInvite)
async def edit_exported_chat_invite(
    ctx: RequestContext, req: fn.messages.EditExportedChatInvite
) -> Any:
    row = await _managed_invite(ctx, req.peer, req.link)
    if row.revoked:
        raise RpcError(400, "INVITE_HASH_EXPIRED")
    row = await ctx.server.chats.edit_invite(
        row, bool(req.revoked), req.expire_date, req.usage_limit, req.title
    )
    return types.messages.ExportedChatInvite(
        invite=ctx.server.chats.invite_tl(row),
        users=await ctx.server.users.users_for(_me(ctx), [row.admin_id]),
    )


@router(fn.messages.GetExportedChatInvite)
async def get_exported_chat_invite(
    ctx: RequestContext, req: fn.messages.GetExportedChatInvite
) -> Any:
    row = await _managed_invite(ctx, req.peer, req.link)
    return types.messages.ExportedChatInvite(
        invite=ctx.server.chats.invite_tl(row),
        users=await ctx.server.users.users_for(_me(ctx), [row.admin_id]),
    )


@router(fn.messages.GetExportedChatInvites)
async def get_exported_chat_invites(
    ctx: RequestContext, req: fn.messages.GetExportedChatInvites
) -> Any:
    me = _me(ctx)
    target, peer_type = await _invite_target(ctx, req.peer)
    admin = ctx.server.users.resolve_input_user(me, req.admin_id)
    limit = max(0, min(req.limit or 50, 100))
    rows = await ctx.server.chats.invites_of(target, peer_type, admin, bool(req.revoked), limit)
    return types.messages.ExportedChatInvites(
        count=len(rows),
        invites=[ctx.server.chats.invite_tl(r) for r in rows],
        users=await ctx.server.users.users_for(me, [admin]),
    )


@router(fn.messages.DeleteExportedChatInvite)
async def delete_exported_chat_invite(
    ctx: RequestContext, req: fn.messages.DeleteExportedChatInvite
) -> bool:
    row = await _managed_invite(ctx, req.peer, req.link)
    await ctx.server.chats.delete_invite(row)
    return True
