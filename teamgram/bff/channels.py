"""bff ``channels.*`` and channel peers in ``messages.*``: supergroups and broadcast channels.

biz/channel knows who is in a channel and with which rights; msg stores its
messages once (the channel's own ids and pts) and pushes each change to the
members online now (the ``audience`` built here, each with their own User and
Channel views). Members who were away catch up with ``updates.getChannelDifference``.
Admin actions are written to the admin log (``channels.getAdminLog``); membership
and rights changes reach the user concerned as ``updateChannel``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from teamgram.bff.messages import (
    PAGE_MAX,
    _key,
    _me,
    check_flood,
    check_text,
    clean_entities,
    history_hash,
    reply_to_id,
)
from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.infra.group_commit import Tx
from teamgram.messenger.msg.channel import Audience, ChannelMessageRecord, InTx, SentChannel
from teamgram.messenger.msg.records import (
    FLAG_HAS_URL,
    FLAG_NO_WEBPAGE,
    FLAG_SILENT,
    MessageRecord,
    has_url,
    pack_vector,
)
from teamgram.messenger.msg.search import search_filters
from teamgram.messenger.msg.service import NewMessage
from teamgram.messenger.msg.tables import channel_messages
from teamgram.service.biz.channel import (
    ROLE_BANNED,
    ChannelRecord,
    Participant,
)
from teamgram.service.biz.peers import PEER_CHANNEL, PEER_CHAT
from teamgram.tl import TLObject, types
from teamgram.tl import functions as fn

router = Router()

# channels.getParticipants: Telegram's largest page.
PARTICIPANTS_PAGE_MAX = 200
# inviteToChannel: users per call.
INVITE_MAX = 200
# getChannelDifference: entries per answer for a user (Telegram's default limit).
CHANNEL_DIFF_LIMIT = 100
# Seconds a client waits before asking for a channel's difference again.
CHANNEL_DIFF_TIMEOUT = 30
# Online members whose views are built before yielding to the loop.
YIELD_EVERY = 16
# How long a member's view of a sender and of the channel is reused, and how many.
VIEW_CACHE_SECONDS = 1.0
VIEW_CACHE_MAX = 100_000


# ------------------------------------------------------------------ helpers
def view(ctx: RequestContext, rec: ChannelRecord, viewer: int | None = None) -> Any:
    return ctx.server.channels.view(rec, _me(ctx) if viewer is None else viewer)


async def readable(ctx: RequestContext, input_channel: Any) -> ChannelRecord:
    return await ctx.server.channels.readable(_me(ctx), input_channel)


async def member_of(ctx: RequestContext, input_channel: Any) -> ChannelRecord:
    return await ctx.server.channels.member_of(_me(ctx), input_channel)


def is_channel_peer(input_peer: Any) -> bool:
    return isinstance(input_peer, types.InputPeerChannel)


async def online_members(
    ctx: RequestContext, rec: ChannelRecord, also: Iterable[int] = ()
) -> list[int]:
    """Members connected now (the only ones a change is pushed to: the others catch up
    with getChannelDifference, so nothing is queued for a session that went away)."""
    directory = ctx.server.sessions
    ids = await directory.connected_among(rec.members)
    others = [u for u in also if u not in rec.members]
    if others:
        ids += await directory.connected_among(others)
    return ids


async def audience(
    ctx: RequestContext,
    rec: ChannelRecord,
    extra_users: Iterable[int] = (),
    also: Iterable[int] = (),
) -> Audience:
    """Online members and the (users, chats) their updates carry; ``also``: users who
    are not (or no longer) members but must hear of this change."""
    me = _me(ctx)
    # A broadcast post names no sender: its updates need no User unless others are named.
    user_ids = sorted({*extra_users} if rec.broadcast else {me, *extra_users})
    out: dict[int, tuple[list[Any], list[Any]]] = {}
    cache = ctx.server.channel_views
    now = time.monotonic()
    if len(cache) > VIEW_CACHE_MAX:
        cache.clear()
    key_ids = tuple(user_ids)
    for n, uid in enumerate(await online_members(ctx, rec, also), 1):
        # A sender's burst into a big group: each member's view of the sender and of
        # the channel is built once a second, not once a message.
        key = (uid, rec.id, key_ids)
        hit = cache.get(key)
        if hit is not None and hit[0] > now and hit[1] == rec.version:
            out[uid] = hit[2]
            continue
        users = await ctx.server.users.users_for(uid, user_ids) if user_ids else []
        out[uid] = (users, [view(ctx, rec, uid)])
        cache[key] = (now + VIEW_CACHE_SECONDS, rec.version, out[uid])
        if n % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    return out


def _now() -> int:
    return int(time.time())


def updates_answer(
    ctx: RequestContext, rec: ChannelRecord, updates: list[Any], users: list[Any]
) -> types.Updates:
    return types.Updates(updates=updates, users=users, chats=[view(ctx, rec)], date=_now(), seq=0)


def channel_updated(ctx: RequestContext, rec: ChannelRecord, user_ids: Iterable[int]) -> None:
    """``updateChannel`` to users whose view of the channel changed (they refetch it)."""
    for uid in user_ids:
        ctx.server.sync.push_now(
            uid,
            types.Updates(
                updates=[types.UpdateChannel(channel_id=rec.id)],
                users=[],
                chats=[view(ctx, rec, uid)],
                date=_now(),
                seq=0,
            ),
        )


async def send_items(
    ctx: RequestContext,
    rec: ChannelRecord,
    items: list[NewMessage],
    extra_users: Iterable[int] = (),
    new_members: list[int] | None = None,
    also: Iterable[int] = (),
    before: InTx | None = None,
) -> tuple[list[SentChannel], list[Any]]:
    """Store messages in the channel and push them; (sent, the caller's users)."""
    me = _me(ctx)
    author: str | None = None
    if rec.broadcast and rec.signatures:
        user = await ctx.server.users.get(me)
        if user is not None:
            author = " ".join(p for p in (user.first_name, user.last_name) if p)
    aud = await audience(ctx, rec, extra_users, also)
    sent = await ctx.server.channel_msgs.send(
        me,
        rec.id,
        rec.broadcast,
        items,
        aud,
        _key(ctx),
        post_author=author,
        new_members=new_members,
        before=before,
    )
    mine = aud.get(me)
    users = mine[0] if mine else await ctx.server.users.users_for(me, sorted({me, *extra_users}))
    return sent, users


def sent_updates(
    ctx: RequestContext, rec: ChannelRecord, sent: list[SentChannel], random_ids: list[int | None]
) -> list[Any]:
    me = _me(ctx)
    out: list[Any] = [
        types.UpdateMessageID(id=s.record.id, random_id=r)
        for s, r in zip(sent, random_ids, strict=True)
        if r is not None
    ]
    out += [
        types.UpdateNewChannelMessage(
            message=ctx.server.channel_msgs.render(s.record, me, rec.broadcast),
            pts=s.pts,
            pts_count=1,
        )
        for s in sent
    ]
    return out


async def announce(
    ctx: RequestContext,
    rec: ChannelRecord,
    action: TLObject,
    extra_users: Iterable[int] = (),
    new_members: list[int] | None = None,
    media_id: int | None = None,
    also: Iterable[int] = (),
    before: InTx | None = None,
) -> types.Updates:
    """A service message in the channel; the caller's Updates. ``before``: the
    change it announces, committed with it."""
    item = NewMessage(action=action.to_bytes(), media_id=media_id)
    sent, users = await send_items(ctx, rec, [item], extra_users, new_members, also, before)
    return updates_answer(ctx, rec, sent_updates(ctx, rec, sent, [None]), users)


async def log(ctx: RequestContext, rec: ChannelRecord, action: TLObject) -> None:
    await ctx.server.channels.log(rec, _me(ctx), action)


def check_slowmode(ctx: RequestContext, rec: ChannelRecord, n: int = 1) -> None:
    """SLOWMODE_WAIT_X: a non-admin member of a slow supergroup sends once per interval."""
    if not rec.megagroup or not rec.slowmode_seconds or rec.is_admin(_me(ctx)):
        return
    last = ctx.server.slowmode.get((rec.id, _me(ctx)))
    now = time.monotonic()
    if n > 1 and rec.slowmode_seconds:
        raise RpcError(400, "SLOWMODE_MULTI_MSGS_DISABLED")
    if last is not None and now - last < rec.slowmode_seconds:
        raise RpcError(420, f"SLOWMODE_WAIT_{int(rec.slowmode_seconds - (now - last)) + 1}")
    ctx.server.slowmode[(rec.id, _me(ctx))] = now


async def users_of(
    ctx: RequestContext, recs: list[ChannelMessageRecord], more: Iterable[int] = ()
) -> list[Any]:
    ids: set[int] = set(more)
    for r in recs:
        ids |= r.user_ids()
    return await ctx.server.users.users_for(_me(ctx), sorted(ids))


async def channel_messages_answer(
    ctx: RequestContext, rec: ChannelRecord, recs: list[ChannelMessageRecord], total: int
) -> Any:
    me = _me(ctx)
    msgs = await ctx.server.channel_msgs.views(me, rec.broadcast, recs)
    state = await ctx.server.channel_sync.state(rec.id)
    return types.messages.ChannelMessages(
        pts=state.pts,
        count=total,
        messages=msgs,
        topics=[],
        chats=[view(ctx, rec)],
        users=await users_of(ctx, recs),
    )


# ------------------------------------------------------------ messages.* peers
async def send_message(ctx: RequestContext, req: fn.messages.SendMessage) -> Any:
    me = _me(ctx)
    rec = await readable(ctx, req.peer)
    check_text(ctx, req.message)
    entities = clean_entities(ctx, req.message, req.entities)
    ctx.server.channels.check_send(rec, me)
    check_slowmode(ctx, rec)
    check_flood(ctx)
    flags = (FLAG_SILENT if req.silent else 0) | (FLAG_NO_WEBPAGE if req.no_webpage else 0)
    if has_url(req.message, entities):
        flags |= FLAG_HAS_URL
    item = NewMessage(
        text=req.message,
        entities=pack_vector(entities),
        random_id=req.random_id,
        reply_to_id=reply_to_id(req.reply_to),
        flags=flags,
    )
    sent, users = await send_items(ctx, rec, [item])
    if req.clear_draft:
        await ctx.server.msg.save_draft(me, (PEER_CHANNEL, rec.id), None, _key(ctx))
    return updates_answer(ctx, rec, sent_updates(ctx, rec, sent, [req.random_id]), users)


async def send_stored(
    ctx: RequestContext,
    input_peer: Any,
    items: list[NewMessage],
    right: str = "send_media",
    extra_users: Iterable[int] = (),
) -> Any:
    """sendMedia / sendMultiMedia / forwardMessages into a channel."""
    me = _me(ctx)
    rec = await readable(ctx, input_peer)
    ctx.server.channels.check_send(rec, me, right)
    check_slowmode(ctx, rec, len(items))
    check_flood(ctx, len(items))
    sent, users = await send_items(ctx, rec, items, extra_users)
    return updates_answer(
        ctx, rec, sent_updates(ctx, rec, sent, [i.random_id for i in items]), users
    )


async def forward_source(
    ctx: RequestContext, input_peer: Any, ids: list[int]
) -> tuple[ChannelRecord, dict[int, ChannelMessageRecord]]:
    rec = await readable(ctx, input_peer)
    return rec, await ctx.server.channel_msgs.get(rec.id, ids)


def as_box_record(rec: ChannelRecord, m: ChannelMessageRecord, viewer: int) -> MessageRecord:
    """A channel message in the shape forwarding reads (a post: forwarded from the channel)."""
    fwd = m.fwd_from
    if fwd is None and rec.broadcast:
        fwd = types.MessageFwdHeader(
            date=m.date,
            from_id=types.PeerChannel(channel_id=rec.id),
            channel_post=m.id,
            post_author=m.post_author,
        ).to_bytes()
    return MessageRecord(
        user_id=viewer,
        id=m.id,
        peer_type=PEER_CHANNEL,
        peer_id=rec.id,
        from_id=m.from_id,
        out=m.from_id == viewer,
        date=m.date,
        shared_id=m.shared_id,
        text=m.text,
        entities=m.entities,
        fwd_from=fwd,
        media=m.media,
        media_kind=m.media_kind,
        action=m.action,
        flags=m.flags,
        grouped_id=m.grouped_id,
        media_id=m.media_id,
    )


async def get_history(ctx: RequestContext, req: fn.messages.GetHistory) -> Any:
    rec = await readable(ctx, req.peer)
    limit = max(0, min(req.limit or PAGE_MAX, PAGE_MAX))
    recs, total = await ctx.server.channel_msgs.history(
        rec.id,
        offset_id=req.offset_id,
        offset_date=req.offset_date,
        add_offset=req.add_offset,
        limit=limit,
        max_id=req.max_id,
        min_id=req.min_id,
    )
    if req.hash and req.hash == history_hash(recs):  # type: ignore[arg-type]
        return types.messages.MessagesNotModified(count=total)
    return await channel_messages_answer(ctx, rec, recs, total)


async def search(ctx: RequestContext, req: fn.messages.Search, from_id: int | None) -> Any:
    rec = await readable(ctx, req.peer)
    limit = max(0, min(req.limit or PAGE_MAX, PAGE_MAX))
    recs, total = await ctx.server.channel_msgs.history(
        rec.id,
        offset_id=req.offset_id,
        add_offset=req.add_offset,
        limit=limit,
        max_id=req.max_id,
        min_id=req.min_id,
        where=search_filters(
            req.q, req.filter, req.min_date, req.max_date, from_id, channel_messages
        ),
    )
    return await channel_messages_answer(ctx, rec, recs, total)


async def edit_message(ctx: RequestContext, req: fn.messages.EditMessage) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.peer)
    if req.media is not None:
        raise RpcError(400, "MEDIA_INVALID")
    text, entities, flags = req.message, None, 0
    if text is not None:
        check_text(ctx, text)
        ents = clean_entities(ctx, text, req.entities)
        entities = pack_vector(ents)
        flags = FLAG_HAS_URL if has_url(text, ents) else 0
    if rec.broadcast and not (
        rec.has_right(me, "edit_messages") or rec.has_right(me, "post_messages")
    ):
        raise RpcError(400, "CHAT_ADMIN_REQUIRED")
    before = (await ctx.server.channel_msgs.get(rec.id, [req.id])).get(req.id)
    aud = await audience(ctx, rec)
    after, update = await ctx.server.channel_msgs.edit(
        me,
        rec.id,
        rec.broadcast,
        req.id,
        text,
        entities,
        rec.broadcast and rec.has_right(me, "edit_messages"),
        aud,
        _key(ctx),
        flags,
    )
    if before is not None and before.from_id != me:  # an admin edited someone's post
        render = ctx.server.channel_msgs.render
        await log(
            ctx,
            rec,
            types.ChannelAdminLogEventActionEditMessage(
                prev_message=render(before, me, rec.broadcast),
                new_message=render(after, me, rec.broadcast),
            ),
        )
    return updates_answer(ctx, rec, [update], await ctx.server.users.users_for(me, [me]))


async def set_typing(ctx: RequestContext, req: fn.messages.SetTyping) -> bool:
    me = _me(ctx)
    rec = await member_of(ctx, req.peer)
    if rec.broadcast:
        return True
    update = types.UpdateShort(
        update=types.UpdateChannelUserTyping(
            channel_id=rec.id, from_id=types.PeerUser(user_id=me), action=req.action
        ),
        date=_now(),
    )
    for uid in await online_members(ctx, rec):
        if uid != me:
            ctx.server.sync.push_now(uid, update)
    return True


async def update_pinned(ctx: RequestContext, req: fn.messages.UpdatePinnedMessage) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.peer)
    ctx.server.channels.check_admin(rec, me, "pin_messages")
    aud = await audience(ctx, rec)
    updates, msg = await ctx.server.channel_msgs.set_pinned(
        me, rec.id, rec.broadcast, req.id, req.unpin, req.silent, aud, _key(ctx)
    )
    if not req.unpin:
        await log(
            ctx,
            rec,
            types.ChannelAdminLogEventActionUpdatePinned(
                message=ctx.server.channel_msgs.render(msg, me, rec.broadcast)
            ),
        )
    return updates_answer(ctx, rec, updates, await ctx.server.users.users_for(me, [me]))


@router(fn.messages.GetMessagesViews)
async def get_messages_views(ctx: RequestContext, req: fn.messages.GetMessagesViews) -> Any:
    me = _me(ctx)
    if not is_channel_peer(req.peer):
        # Private chats and basic groups have no view counters.
        return types.messages.MessageViews(
            views=[types.MessageViews() for _ in req.id], chats=[], users=[]
        )
    rec = await readable(ctx, req.peer)
    counts = await ctx.server.channel_msgs.count_views(
        me, rec.id, list(req.id), bool(req.increment) and rec.broadcast
    )
    return types.messages.MessageViews(
        views=[
            types.MessageViews(views=counts[i][0], forwards=counts[i][1])
            if rec.broadcast and i in counts
            else types.MessageViews()
            for i in req.id
        ],
        chats=[view(ctx, rec)],
        users=[],
    )


# -------------------------------------------------------------- create, join
@router(fn.channels.CreateChannel)
async def create_channel(ctx: RequestContext, req: fn.channels.CreateChannel) -> Any:
    me = _me(ctx)
    if bool(req.broadcast) == bool(req.megagroup):
        # Telegram: exactly one of the two (a plain call makes a broadcast channel).
        if req.broadcast:
            raise RpcError(400, "CHANNEL_INVALID")
    rec = await ctx.server.channels.create(me, req.title, req.about, broadcast=not req.megagroup)
    return await announce(
        ctx, rec, types.MessageActionChannelCreate(title=rec.title), new_members=[me]
    )


async def _add(
    ctx: RequestContext,
    rec: ChannelRecord,
    added: list[Participant],
    log: list[tuple[int, TLObject]],
    by_link: int | None = None,
) -> types.Updates:
    """New members, their admin-log entries and (in a supergroup) the service message
    that opens their dialogs commit together; in a broadcast channel their dialog
    opens at the newest post."""
    me = _me(ctx)
    user_ids = [p.user_id for p in added]

    async def write(tx: Tx) -> None:
        await ctx.server.channels.write_in(tx, rec, add=added, log=log)

    if rec.megagroup:
        action: TLObject = (
            types.MessageActionChatJoinedByLink(inviter_id=by_link)
            if by_link is not None
            else types.MessageActionChatAddUser(users=user_ids)
        )
        answer = await announce(
            ctx, rec, action, user_ids, new_members=user_ids, also=user_ids, before=write
        )
    else:
        await ctx.server.channel_msgs.open_dialogs(rec.id, user_ids, before=write)
        answer = updates_answer(ctx, rec, [], [])
    channel_updated(ctx, rec, [u for u in user_ids if u != me])
    return answer


@router(fn.channels.InviteToChannel)
async def invite_to_channel(ctx: RequestContext, req: fn.channels.InviteToChannel) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.channel)
    if not req.users:
        raise RpcError(400, "USERS_TOO_FEW")
    if len(req.users) > INVITE_MAX:
        raise RpcError(400, "USERS_TOO_MUCH")
    ids: list[int] = []
    for u in req.users:
        uid = ctx.server.users.resolve_input_user(me, u)
        user = await ctx.server.users.get(uid)
        if user is None or user.deleted:
            raise RpcError(400, "USER_ID_INVALID")
        if uid != me:
            ids.append(uid)
    added = ctx.server.channels.plan_members(rec, ids, me)
    if not added:
        if ids and all(rec.is_member(u) for u in ids):
            raise RpcError(400, "USER_ALREADY_PARTICIPANT")
        raise RpcError(400, "USERS_TOO_FEW")
    log: list[tuple[int, TLObject]] = [
        (me, types.ChannelAdminLogEventActionParticipantInvite(participant=p.tl())) for p in added
    ]
    updates = await _add(ctx, rec, added, log)
    return types.messages.InvitedUsers(updates=updates, missing_invitees=[])


@router(fn.channels.JoinChannel)
async def join_channel(ctx: RequestContext, req: fn.channels.JoinChannel) -> Any:
    me = _me(ctx)
    rec = await ctx.server.channels.resolve(me, req.channel)
    p = ctx.server.channels.plan_join(rec, me)
    updates = await _add(ctx, rec, [p], [(me, types.ChannelAdminLogEventActionParticipantJoin())])
    return types.messages.ChatInviteJoinResultOk(updates=updates)


async def join_by_invite(
    ctx: RequestContext, channel_id: int, inviter_id: int, invite: Any
) -> types.Updates:
    """messages.importChatInvite for a channel's link."""
    me = _me(ctx)
    rec = await ctx.server.channels.get(channel_id)
    if rec is None or rec.deleted:
        raise RpcError(400, "INVITE_HASH_INVALID")
    p = ctx.server.channels.plan_join(rec, me, inviter_id)
    log: list[tuple[int, TLObject]] = [
        (me, types.ChannelAdminLogEventActionParticipantJoinByInvite(invite=invite))
    ]
    return await _add(ctx, rec, [p], log, by_link=inviter_id)


@router(fn.channels.LeaveChannel)
async def leave_channel(ctx: RequestContext, req: fn.channels.LeaveChannel) -> Any:
    me = _me(ctx)
    rec = await ctx.server.channels.resolve(me, req.channel)
    ctx.server.channels.plan_leave(rec, me)

    async def write(tx: Tx) -> None:
        await ctx.server.channels.write_in(
            tx, rec, drop=[me], log=[(me, types.ChannelAdminLogEventActionParticipantLeave())]
        )
        await ctx.server.dialogs.delete_in(tx, me, (PEER_CHANNEL, rec.id))

    if rec.megagroup:  # the goodbye is the member's last message there
        await announce(ctx, rec, types.MessageActionChatDeleteUser(user_id=me), before=write)
    else:
        await ctx.server.channel_msgs.close_dialogs(rec.id, [], before=write)
    channel_updated(ctx, rec, [me])
    return updates_answer(ctx, rec, [types.UpdateChannel(channel_id=rec.id)], [])


@router(fn.channels.DeleteChannel)
async def delete_channel(ctx: RequestContext, req: fn.channels.DeleteChannel) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.channel)
    members = await ctx.server.channels.delete(rec, me)
    await ctx.server.channel_msgs.close_dialogs(rec.id, sorted(members))
    channel_updated(ctx, rec, [u for u in members if u != me])
    return updates_answer(ctx, rec, [types.UpdateChannel(channel_id=rec.id)], [])


# -------------------------------------------------------------- read, info
@router(fn.channels.GetChannels)
async def get_channels(ctx: RequestContext, req: fn.channels.GetChannels) -> Any:
    me = _me(ctx)
    out: list[Any] = []
    for ic in req.id:
        rec = await ctx.server.channels.resolve(me, ic)
        out.append(view(ctx, rec))
    return types.messages.Chats(chats=out)


@router(fn.channels.GetFullChannel)
async def get_full_channel(ctx: RequestContext, req: fn.channels.GetFullChannel) -> Any:
    me = _me(ctx)
    rec = await readable(ctx, req.channel)
    admins, kicked, banned = rec.counts()
    state = await ctx.server.channel_sync.state(rec.id)
    d = await ctx.server.dialogs.get(me, (PEER_CHANNEL, rec.id))
    read_in = d.read_inbox_max_id if d else 0
    unread = await ctx.server.channel_msgs.unread_count(rec.id, read_in, me) if d else 0
    photo: Any = types.PhotoEmpty(id=0)
    if rec.photo_id is not None:
        p = await ctx.server.media.photo(rec.photo_id)
        if p is not None:
            photo = ctx.server.media.photo_tl(p)
    await ctx.server.users.load_notify(me)
    can_admin = rec.is_admin(me)
    old_max = rec.migrated_from_max_id
    if rec.migrated_from_chat_id:  # the ids of the viewer's own box
        old_dialog = await ctx.server.dialogs.get(me, (PEER_CHAT, rec.migrated_from_chat_id))
        old_max = old_dialog.top_message if old_dialog else old_max
    full = types.ChannelFull(
        id=rec.id,
        about=rec.about,
        participants_count=len(rec.members),
        admins_count=admins,
        kicked_count=kicked if can_admin else None,
        banned_count=banned if can_admin else None,
        read_inbox_max_id=read_in,
        read_outbox_max_id=d.read_outbox_max_id if d else 0,
        unread_count=unread,
        chat_photo=photo,
        notify_settings=ctx.server.users.notify_settings(me, f"peer:{rec.id}"),
        bot_info=[],
        pts=state.pts,
        can_view_participants=rec.megagroup or can_admin,
        can_set_username=me == rec.creator_id,
        can_delete_channel=me == rec.creator_id,
        migrated_from_chat_id=rec.migrated_from_chat_id,
        migrated_from_max_id=old_max,
        pinned_msg_id=await ctx.server.channel_msgs.pinned_top(rec.id),
        slowmode_seconds=rec.slowmode_seconds or None,
    )
    chats: list[Any] = [view(ctx, rec)]
    if rec.migrated_from_chat_id:
        old = await ctx.server.chats.get(rec.migrated_from_chat_id)
        if old is not None:
            chats.append(old.chat_for(me))
    return types.messages.ChatFull(
        full_chat=full, chats=chats, users=await ctx.server.users.users_for(me, [me])
    )


@router(fn.channels.GetMessages)
async def get_messages(ctx: RequestContext, req: fn.channels.GetMessages) -> Any:
    rec = await readable(ctx, req.channel)
    wanted: list[int] = []
    for m in req.id:
        if isinstance(m, types.InputMessageID):
            wanted.append(m.id)
        elif isinstance(m, types.InputMessagePinned):
            top = await ctx.server.channel_msgs.pinned_top(rec.id)
            wanted.append(top or 0)
        else:
            wanted.append(0)
    found = await ctx.server.channel_msgs.get(rec.id, [w for w in wanted if w])
    recs = [found[w] for w in wanted if w in found]
    rendered = dict(
        zip(
            [r.id for r in recs],
            await ctx.server.channel_msgs.views(_me(ctx), rec.broadcast, recs),
            strict=True,
        )
    )
    state = await ctx.server.channel_sync.state(rec.id)
    return types.messages.ChannelMessages(
        pts=state.pts,
        count=len(recs),
        messages=[rendered.get(w) or types.MessageEmpty(id=w) for w in wanted],
        topics=[],
        chats=[view(ctx, rec)],
        users=await users_of(ctx, recs),
    )


@router(fn.channels.DeleteMessages)
async def delete_messages(ctx: RequestContext, req: fn.channels.DeleteMessages) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.channel)
    if rec.broadcast and not rec.is_admin(me):
        raise RpcError(403, "MESSAGE_DELETE_FORBIDDEN")
    may_others = rec.has_right(me, "delete_messages")
    aud = await audience(ctx, rec)
    pts, count, gone = await ctx.server.channel_msgs.delete(
        me, rec.id, list(req.id), may_others, aud, _key(ctx)
    )
    for r in gone:
        if r.from_id != me:
            await log(
                ctx,
                rec,
                types.ChannelAdminLogEventActionDeleteMessage(
                    message=ctx.server.channel_msgs.render(r, me, rec.broadcast)
                ),
            )
    return types.messages.AffectedMessages(pts=pts, pts_count=count)


@router(fn.channels.ReadHistory)
async def read_history(ctx: RequestContext, req: fn.channels.ReadHistory) -> bool:
    await read(ctx, req.channel, req.max_id)
    return True


async def read(ctx: RequestContext, input_channel: Any, max_id: int) -> None:
    """The reader's position moves; in a supergroup the last read message's sender
    hears of it (updateReadChannelOutbox)."""
    me = _me(ctx)
    rec = await member_of(ctx, input_channel)
    moved = await ctx.server.channel_msgs.read_history(me, rec.id, max_id, _key(ctx))
    if moved is not None and rec.megagroup:
        upto, sender = moved
        if sender and sender != me and rec.is_member(sender):
            await ctx.server.channel_msgs.outbox_read(sender, rec.id, upto)


async def send_reaction(
    ctx: RequestContext, req: fn.messages.SendReaction, emoticons: list[str]
) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.peer)
    if emoticons and "send_reactions" in rec.restrictions_of(me):
        raise RpcError(403, "CHAT_WRITE_FORBIDDEN")
    aud = await audience(ctx, rec)
    update = await ctx.server.channel_msgs.react(me, rec.id, req.msg_id, emoticons, aud, _key(ctx))
    return updates_answer(ctx, rec, [update], await ctx.server.users.users_for(me, [me]))


@router(fn.channels.ReadMessageContents)
async def read_message_contents(ctx: RequestContext, req: fn.channels.ReadMessageContents) -> bool:
    await member_of(ctx, req.channel)
    return True  # no voice notes or mentions to mark yet


# ---------------------------------------------------------------- participants
def _filter_kind(flt: Any) -> tuple[str, str]:
    if isinstance(flt, types.ChannelParticipantsAdmins):
        return "admins", ""
    if isinstance(flt, types.ChannelParticipantsKicked):
        return "kicked", flt.q
    if isinstance(flt, types.ChannelParticipantsBanned):
        return "banned", flt.q
    if isinstance(flt, types.ChannelParticipantsSearch | types.ChannelParticipantsContacts):
        return "recent", flt.q
    if isinstance(flt, types.ChannelParticipantsBots):
        return "bots", ""
    return "recent", ""


@router(fn.channels.GetParticipants)
async def get_participants(ctx: RequestContext, req: fn.channels.GetParticipants) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.channel)
    kind, q = _filter_kind(req.filter)
    if rec.broadcast and not rec.is_admin(me):
        raise RpcError(400, "CHAT_ADMIN_REQUIRED")
    if kind in ("kicked", "banned") and not rec.has_right(me, "ban_users"):
        raise RpcError(400, "CHAT_ADMIN_REQUIRED")
    if kind == "bots":
        return types.channels.ChannelParticipants(count=0, participants=[], chats=[], users=[])
    names: dict[int, str] = {}
    if q:
        for uid in list(rec.participants):
            u = await ctx.server.users.get(uid)
            if u is not None:
                names[uid] = " ".join(x for x in (u.first_name, u.last_name, u.username) if x)
    found = ctx.server.channels.participants(rec, kind, q, lambda uid: names.get(uid, ""))
    if isinstance(req.filter, types.ChannelParticipantsContacts):
        contacts = set(await ctx.server.contacts.contacts_of(me))
        found = [p for p in found if p.user_id in contacts]
    limit = max(0, min(req.limit or PARTICIPANTS_PAGE_MAX, PARTICIPANTS_PAGE_MAX))
    page = found[max(req.offset, 0) : max(req.offset, 0) + limit]
    ids = sorted({p.user_id for p in page} | {p.kicked_by or 0 for p in page} - {0})
    return types.channels.ChannelParticipants(
        count=len(found),
        participants=[p.tl(me, rec.broadcast) for p in page],
        chats=[],
        users=await ctx.server.users.users_for(me, ids),
    )


@router(fn.channels.GetParticipant)
async def get_participant(ctx: RequestContext, req: fn.channels.GetParticipant) -> Any:
    me = _me(ctx)
    rec = await readable(ctx, req.channel)
    uid = ctx.server.users.resolve_input_peer_user(me, req.participant)
    p = rec.participants.get(uid)
    if p is None:
        raise RpcError(400, "USER_NOT_PARTICIPANT")
    if uid != me and rec.broadcast and not rec.is_admin(me):
        raise RpcError(400, "CHAT_ADMIN_REQUIRED")
    return types.channels.ChannelParticipant(
        participant=p.tl(me, rec.broadcast),
        chats=[],
        users=await ctx.server.users.users_for(me, sorted({uid, me})),
    )


@router(fn.channels.EditAdmin)
async def edit_admin(ctx: RequestContext, req: fn.channels.EditAdmin) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.channel)
    uid = ctx.server.users.resolve_input_user(me, req.user_id)
    if await ctx.server.users.get(uid) is None:
        raise RpcError(400, "USER_ID_INVALID")
    joined = not rec.is_member(uid)
    before, after = await ctx.server.channels.edit_admin(rec, me, uid, req.admin_rights, req.rank)
    prev = (
        before.tl(None, rec.broadcast)
        if before
        else types.ChannelParticipantLeft(peer=types.PeerUser(user_id=uid))
    )
    await log(
        ctx,
        rec,
        types.ChannelAdminLogEventActionParticipantToggleAdmin(
            prev_participant=prev, new_participant=after.tl(None, rec.broadcast)
        ),
    )
    if joined:  # promoted straight in: the group hears of the new member
        await announce(
            ctx, rec, types.MessageActionChatAddUser(users=[uid]), [uid], new_members=[uid]
        )
    channel_updated(ctx, rec, [uid])
    return updates_answer(ctx, rec, [types.UpdateChannel(channel_id=rec.id)], [])


def _peer_user(ctx: RequestContext, input_peer: Any) -> int:
    return ctx.server.users.resolve_input_peer_user(_me(ctx), input_peer)


@router(fn.channels.EditBanned)
async def edit_banned(ctx: RequestContext, req: fn.channels.EditBanned) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.channel)
    uid = _peer_user(ctx, req.participant)
    was_member = rec.is_member(uid)
    before, after = ctx.server.channels.plan_banned(rec, me, uid, req.banned_rights)
    left = types.ChannelParticipantLeft(peer=types.PeerUser(user_id=uid))
    action = types.ChannelAdminLogEventActionParticipantToggleBan(
        prev_participant=before.tl(None, rec.broadcast) if before is not None else left,
        new_participant=after.tl(None, rec.broadcast) if after is not None else left,
    )
    kicked = after is not None and after.role == ROLE_BANNED and was_member

    async def write(tx: Tx) -> None:
        await ctx.server.channels.write_in(
            tx,
            rec,
            add=[after] if after is not None else [],
            drop=[uid] if after is None else [],
            log=[(me, action)],
        )
        if kicked:  # the channel leaves the kicked user's dialog list
            await ctx.server.dialogs.delete_in(tx, uid, (PEER_CHANNEL, rec.id))

    updates: list[Any] = []
    if kicked and rec.megagroup:  # the group (and the kicked user) see them go
        answer = await announce(
            ctx, rec, types.MessageActionChatDeleteUser(user_id=uid), [uid], before=write
        )
        updates = list(answer.updates)
    else:
        await ctx.server.channel_msgs.close_dialogs(rec.id, [], before=write)
    channel_updated(ctx, rec, [uid])
    return updates_answer(
        ctx,
        rec,
        [*updates, types.UpdateChannel(channel_id=rec.id)],
        await ctx.server.users.users_for(me, sorted({me, uid})),
    )


# ------------------------------------------------------------------ settings
@router(fn.channels.EditTitle)
async def edit_title(ctx: RequestContext, req: fn.channels.EditTitle) -> Any:
    rec = await member_of(ctx, req.channel)
    old = await ctx.server.channels.set_title(rec, req.title, _me(ctx))
    await log(
        ctx, rec, types.ChannelAdminLogEventActionChangeTitle(prev_value=old, new_value=rec.title)
    )
    return await announce(ctx, rec, types.MessageActionChatEditTitle(title=rec.title))


@router(fn.messages.EditChatAbout)
async def edit_chat_about(ctx: RequestContext, req: fn.messages.EditChatAbout) -> bool:
    if not is_channel_peer(req.peer):
        raise RpcError(400, "PEER_ID_INVALID")  # basic groups keep no description here
    rec = await member_of(ctx, req.peer)
    old = await ctx.server.channels.set_about(rec, req.about, _me(ctx))
    await log(
        ctx, rec, types.ChannelAdminLogEventActionChangeAbout(prev_value=old, new_value=rec.about)
    )
    channel_updated(ctx, rec, await online_members(ctx, rec))
    return True


@router(fn.channels.EditPhoto)
async def edit_photo(ctx: RequestContext, req: fn.channels.EditPhoto) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.channel)
    ctx.server.channels.check_admin(rec, me, "change_info")
    media = ctx.server.media
    photo = req.photo
    empty = types.PhotoEmpty(id=0)
    old_tl: Any = empty
    if rec.photo_id is not None:
        old = await media.photo(rec.photo_id)
        old_tl = media.photo_tl(old) if old is not None else empty
    if isinstance(photo, types.InputChatPhotoEmpty):
        if rec.photo_id is None:
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        await ctx.server.channels.set_photo(rec, None, None, me)
        await log(
            ctx,
            rec,
            types.ChannelAdminLogEventActionChangePhoto(prev_photo=old_tl, new_photo=empty),
        )
        return await announce(ctx, rec, types.MessageActionChatDeletePhoto())
    if isinstance(photo, types.InputChatUploadedPhoto):
        if photo.file is None:
            raise RpcError(400, "PHOTO_FILE_MISSING")
        p = await media.upload_photo(me, photo.file, profile=True)
    elif isinstance(photo, types.InputChatPhoto):
        p = await media.resolve_input_photo(photo.id)
        if p.owner_id != me:
            raise RpcError(400, "PHOTO_INVALID")
    else:
        raise RpcError(400, "PHOTO_INVALID")
    await media.set_profile([p.id], False)
    await ctx.server.channels.set_photo(rec, p.id, p.stripped, me)
    new_tl = media.photo_tl(p)
    await log(
        ctx, rec, types.ChannelAdminLogEventActionChangePhoto(prev_photo=old_tl, new_photo=new_tl)
    )
    return await announce(ctx, rec, types.MessageActionChatEditPhoto(photo=new_tl), media_id=p.id)


@router(fn.channels.CheckUsername)
async def check_username(ctx: RequestContext, req: fn.channels.CheckUsername) -> bool:
    me = _me(ctx)
    if isinstance(req.channel, types.InputChannelEmpty):
        # Choosing a name for a channel about to be created.
        from teamgram.service.biz.users import valid_username

        if not valid_username(req.username):
            raise RpcError(400, "USERNAME_INVALID")
        return await ctx.server.channels.username_free(None, req.username)
    rec = await member_of(ctx, req.channel)
    return await ctx.server.channels.check_username(rec, me, req.username)


@router(fn.channels.UpdateUsername)
async def update_username(ctx: RequestContext, req: fn.channels.UpdateUsername) -> bool:
    rec = await member_of(ctx, req.channel)
    old = await ctx.server.channels.set_username(rec, _me(ctx), req.username)
    await log(
        ctx,
        rec,
        types.ChannelAdminLogEventActionChangeUsername(
            prev_value=old or "", new_value=rec.username or ""
        ),
    )
    channel_updated(ctx, rec, await online_members(ctx, rec))
    return True


@router(fn.channels.ToggleSignatures)
async def toggle_signatures(ctx: RequestContext, req: fn.channels.ToggleSignatures) -> Any:
    rec = await member_of(ctx, req.channel)
    enabled = bool(req.signatures_enabled)
    await ctx.server.channels.toggle_signatures(rec, _me(ctx), enabled)
    await log(ctx, rec, types.ChannelAdminLogEventActionToggleSignatures(new_value=enabled))
    channel_updated(ctx, rec, [u for u in await online_members(ctx, rec) if u != _me(ctx)])
    return updates_answer(ctx, rec, [types.UpdateChannel(channel_id=rec.id)], [])


@router(fn.channels.ToggleSlowMode)
async def toggle_slow_mode(ctx: RequestContext, req: fn.channels.ToggleSlowMode) -> Any:
    rec = await member_of(ctx, req.channel)
    old = await ctx.server.channels.set_slowmode(rec, _me(ctx), req.seconds)
    await log(
        ctx,
        rec,
        types.ChannelAdminLogEventActionToggleSlowMode(prev_value=old, new_value=req.seconds),
    )
    channel_updated(ctx, rec, [u for u in await online_members(ctx, rec) if u != _me(ctx)])
    return updates_answer(ctx, rec, [types.UpdateChannel(channel_id=rec.id)], [])


async def edit_default_rights(
    ctx: RequestContext, req: fn.messages.EditChatDefaultBannedRights
) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.peer)
    old = await ctx.server.channels.set_default_rights(rec, me, req.banned_rights)
    await log(
        ctx,
        rec,
        types.ChannelAdminLogEventActionDefaultBannedRights(
            prev_banned_rights=old, new_banned_rights=rec.default_rights()
        ),
    )
    channel_updated(ctx, rec, [u for u in await online_members(ctx, rec) if u != me])
    return updates_answer(ctx, rec, [types.UpdateChannel(channel_id=rec.id)], [])


# ------------------------------------------------------------------ admin log
_LOG_KINDS: dict[str, tuple[str, ...]] = {
    "join": (
        "ChannelAdminLogEventActionParticipantJoin",
        "ChannelAdminLogEventActionParticipantJoinByInvite",
    ),
    "leave": ("ChannelAdminLogEventActionParticipantLeave",),
    "invite": ("ChannelAdminLogEventActionParticipantInvite",),
    "ban": ("ChannelAdminLogEventActionParticipantToggleBan",),
    "unban": ("ChannelAdminLogEventActionParticipantToggleBan",),
    "kick": ("ChannelAdminLogEventActionParticipantToggleBan",),
    "unkick": ("ChannelAdminLogEventActionParticipantToggleBan",),
    "promote": ("ChannelAdminLogEventActionParticipantToggleAdmin",),
    "demote": ("ChannelAdminLogEventActionParticipantToggleAdmin",),
    "info": (
        "ChannelAdminLogEventActionChangeTitle",
        "ChannelAdminLogEventActionChangeAbout",
        "ChannelAdminLogEventActionChangeUsername",
        "ChannelAdminLogEventActionChangePhoto",
        "ChannelAdminLogEventActionToggleSlowMode",
    ),
    "settings": (
        "ChannelAdminLogEventActionToggleSignatures",
        "ChannelAdminLogEventActionDefaultBannedRights",
        "ChannelAdminLogEventActionToggleInvites",
    ),
    "pinned": ("ChannelAdminLogEventActionUpdatePinned",),
    "edit": ("ChannelAdminLogEventActionEditMessage",),
    "delete": ("ChannelAdminLogEventActionDeleteMessage",),
}


@router(fn.channels.GetAdminLog)
async def get_admin_log(ctx: RequestContext, req: fn.channels.GetAdminLog) -> Any:
    me = _me(ctx)
    rec = await member_of(ctx, req.channel)
    if not rec.is_admin(me):
        raise RpcError(400, "CHAT_ADMIN_REQUIRED")
    kinds: set[str] | None = None
    if req.events_filter is not None:
        kinds = set()
        for flag, names in _LOG_KINDS.items():
            if getattr(req.events_filter, flag, False):
                kinds.update(names)
    admins: set[int] | None = None
    if req.admins:
        admins = {ctx.server.users.resolve_input_user(me, u) for u in req.admins}
    limit = max(0, min(req.limit or 100, 100))
    events: list[Any] = await ctx.server.channels.admin_log(
        rec, kinds, admins, req.max_id, req.min_id, limit
    )
    if req.q:
        q = req.q.lower()
        events = [e for e in events if q in repr(e.action.to_dict()).lower()]
    ids = {e.user_id for e in events}
    for e in events:
        for name in ("prev_participant", "new_participant", "participant"):
            p = getattr(e.action, name, None)
            uid = getattr(p, "user_id", None) or getattr(getattr(p, "peer", None), "user_id", None)
            if uid:
                ids.add(uid)
    return types.channels.AdminLogResults(
        events=events,
        chats=[view(ctx, rec)],
        users=await ctx.server.users.users_for(me, sorted(ids)),
    )


# ------------------------------------------------------------ channel updates
@router(fn.updates.GetChannelDifference)
async def get_channel_difference(ctx: RequestContext, req: fn.updates.GetChannelDifference) -> Any:
    me = _me(ctx)
    rec = await readable(ctx, req.channel)
    limit = max(1, min(req.limit or CHANNEL_DIFF_LIMIT, CHANNEL_DIFF_LIMIT))
    if req.pts <= 0:
        raise RpcError(400, "PERSISTENT_TIMESTAMP_EMPTY")
    diff, new_messages, other, recs = await ctx.server.channel_msgs.difference(
        me, rec.id, rec.broadcast, req.pts, limit
    )
    if diff.too_long:
        latest, _total = await ctx.server.channel_msgs.history(rec.id, limit=limit)
        d = await ctx.server.dialogs.get(me, (PEER_CHANNEL, rec.id))
        read_in = d.read_inbox_max_id if d else 0
        dialog = types.Dialog(
            peer=types.PeerChannel(channel_id=rec.id),
            top_message=latest[0].id if latest else 0,
            read_inbox_max_id=read_in,
            read_outbox_max_id=d.read_outbox_max_id if d else 0,
            unread_count=await ctx.server.channel_msgs.unread_count(rec.id, read_in, me),
            unread_mentions_count=0,
            unread_reactions_count=0,
            unread_poll_votes_count=0,
            notify_settings=types.PeerNotifySettings(),
            pts=diff.pts,
        )
        return types.updates.ChannelDifferenceTooLong(
            final=True,
            timeout=CHANNEL_DIFF_TIMEOUT,
            dialog=dialog,
            messages=await ctx.server.channel_msgs.views(me, rec.broadcast, latest),
            chats=[view(ctx, rec)],
            users=await users_of(ctx, latest),
        )
    if not new_messages and not other:
        return types.updates.ChannelDifferenceEmpty(
            final=diff.final, pts=diff.pts, timeout=CHANNEL_DIFF_TIMEOUT
        )
    return types.updates.ChannelDifference(
        final=diff.final,
        pts=diff.pts,
        timeout=CHANNEL_DIFF_TIMEOUT if diff.final else None,
        new_messages=new_messages,
        other_updates=other,
        chats=[view(ctx, rec)],
        users=await users_of(ctx, recs),
    )


async def channels_changed_since(ctx: RequestContext, date: int) -> list[Any]:
    """``updateChannelTooLong`` for the caller's channels with updates after ``date``:
    getDifference tells a device which channels to fetch with getChannelDifference."""
    me = _me(ctx)
    ids = sorted(await ctx.server.channels.channels_of(me))
    if not ids:
        return []
    states = await ctx.server.channel_sync.states(ids)
    return [
        types.UpdateChannelTooLong(channel_id=c, pts=st.pts)
        for c, st in states.items()
        if st.stored and st.date >= date
    ]
