"""bff ``messages.*`` for private chats and Saved Messages: send, read, edit, delete, search.

Handlers check what the client sent (Telegram's error names), resolve peers with
the caller's access hashes, prepare the ``User`` objects each receiver's updates
carry, and hand the change to the msg service, which stores it and pushes the
updates after commit. The calling device gets the answer instead of a push
(its auth key is excluded), as Telegram does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from teamgram.bff.rpc import RequestContext, Router
from teamgram.errors import RpcError
from teamgram.messenger.msg.records import (
    FLAG_HAS_URL,
    FLAG_NO_WEBPAGE,
    FLAG_SILENT,
    MessageRecord,
    has_url,
    pack_vector,
    unpack,
)
from teamgram.messenger.msg.search import search_filters
from teamgram.messenger.msg.service import NewMessage
from teamgram.service.biz.contacts import contacts_hash
from teamgram.service.biz.peers import (
    PEER_CHANNEL,
    PEER_CHAT,
    PEER_USER,
    PeerKey,
    peer_key,
    peer_tl,
)
from teamgram.tl import functions as fn
from teamgram.tl import types

router = Router()

# getHistory / search: Telegram's largest page.
PAGE_MAX = 100
# Reactions a non-premium user may put on one message.
REACTIONS_MAX = 1


# ------------------------------------------------------------------ helpers
def _me(ctx: RequestContext) -> int:
    assert ctx.user_id is not None
    return ctx.user_id


def _key(ctx: RequestContext) -> int:
    return ctx.auth_key.effective_id


async def resolve_peer(ctx: RequestContext, input_peer: Any) -> PeerKey:
    """An InputPeer naming an existing user (or self), or a basic group the caller is
    or was in; PEER_ID_INVALID otherwise."""
    me = _me(ctx)
    if isinstance(input_peer, types.InputPeerChannel):
        rec = await ctx.server.channels.readable(me, input_peer)
        return PEER_CHANNEL, rec.id
    if isinstance(input_peer, types.InputPeerChat):
        chat = await ctx.server.chats.get(input_peer.chat_id)
        if chat is None or (
            me not in chat.members
            and await ctx.server.dialogs.get(me, (PEER_CHAT, chat.id)) is None
        ):
            raise RpcError(400, "PEER_ID_INVALID")
        return PEER_CHAT, chat.id
    peer = ctx.server.users.resolve_input_peer(me, input_peer)
    key = peer_key(peer)
    if key[0] != PEER_USER:
        raise RpcError(400, "PEER_ID_INVALID")
    if key[1] != me and await ctx.server.users.get(key[1]) is None:
        raise RpcError(400, "PEER_ID_INVALID")
    return key


def _dialog_input_peer(input_dialog_peer: Any) -> Any:
    if isinstance(input_dialog_peer, types.InputDialogPeer):
        return input_dialog_peer.peer
    raise RpcError(400, "PEER_ID_INVALID")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def check_text(ctx: RequestContext, text: str, allow_empty: bool = False) -> None:
    if not allow_empty and not text.strip():
        raise RpcError(400, "MESSAGE_EMPTY")
    if len(text) > ctx.server.config.messages.message_length_max:
        raise RpcError(400, "MESSAGE_TOO_LONG")


def clean_entities(ctx: RequestContext, text: str, entities: list[Any] | None) -> list[Any] | None:
    """Entities as stored: inside the text (ENTITY_BOUNDS_INVALID), mentions resolved."""
    if not entities:
        return None
    size = utf16_len(text)
    out: list[Any] = []
    for e in entities:
        offset, length = getattr(e, "offset", -1), getattr(e, "length", 0)
        if offset < 0 or length <= 0 or offset + length > size:
            raise RpcError(400, "ENTITY_BOUNDS_INVALID")
        if isinstance(e, types.InputMessageEntityMentionName):
            try:
                uid = ctx.server.users.resolve_input_user(_me(ctx), e.user_id)
            except RpcError:
                continue  # Telegram drops a mention of someone the sender cannot name
            e = types.MessageEntityMentionName(offset=offset, length=length, user_id=uid)
        out.append(e)
    return out or None


def check_flood(ctx: RequestContext, n: int = 1) -> None:
    wait = ctx.server.send_flood.take(_me(ctx), n)
    if wait:
        raise RpcError(420, f"FLOOD_WAIT_{wait}")


def reply_to_id(reply_to: Any) -> int | None:
    if isinstance(reply_to, types.InputReplyToMessage) and reply_to.reply_to_msg_id:
        return int(reply_to.reply_to_msg_id)
    return None


async def views_for(
    ctx: RequestContext,
    peer: PeerKey,
    extra: frozenset[int] | set[int] = frozenset(),
) -> dict[int, list[Any]]:  # type: ignore[assignment]
    """The User objects each receiver of a new message's update needs."""
    me = _me(ctx)
    if peer[0] == PEER_CHAT:
        chat = await ctx.server.chats.member_chat(peer[1], me)
        chat_ids = sorted({me, *extra})
        views: dict[int, list[Any]] = {}
        for n, member in enumerate(chat.members, 1):
            views[member] = await ctx.server.users.users_for(member, chat_ids)
            if n % 16 == 0:
                await asyncio.sleep(0)  # ~0.15 ms per member, all from caches: yield
        return views
    ids = sorted({me, *extra} | ({peer[1]} if peer[0] == PEER_USER else set()))
    receivers = {me} | ({peer[1]} if peer[0] == PEER_USER else set())
    return {u: await ctx.server.users.users_for(u, ids) for u in receivers}


async def users_of(
    ctx: RequestContext,
    recs: list[MessageRecord],
    more: frozenset[int] | set[int] = frozenset(),
) -> list[Any]:  # type: ignore[assignment]
    ids: set[int] = set(more)
    for r in recs:
        ids |= r.user_ids()
    return await ctx.server.users.users_for(_me(ctx), sorted(ids))


async def chats_of(ctx: RequestContext, recs: list[MessageRecord]) -> list[Any]:
    """The Chat objects (as the caller sees them) of the basic groups ``recs`` are in,
    and of the channels their posts were forwarded from (the client needs their
    access hash to open them)."""
    me = _me(ctx)
    ids = sorted({r.peer_id for r in recs if r.peer_type == PEER_CHAT})
    out: list[Any] = [c.chat_for(me) for c in await ctx.server.chats.get_many(ids)]
    channel_ids: set[int] = set()
    for r in recs:
        fwd = unpack(r.fwd_from)
        if fwd is not None and isinstance(fwd.from_id, types.PeerChannel):
            channel_ids.add(fwd.from_id.channel_id)
    for c in await ctx.server.channels.get_many(sorted(channel_ids)):
        out.append(ctx.server.channels.view(c, me))
    return out


async def check_can_send(ctx: RequestContext, peer: PeerKey, right: str = "send_messages") -> None:
    """In a basic group, the group's default rights may forbid members to send."""
    if peer[0] == PEER_CHAT:
        chat = await ctx.server.chats.member_chat(peer[1], _me(ctx))
        if chat.deactivated:  # migrated to a supergroup: read-only
            raise RpcError(403, "CHAT_WRITE_FORBIDDEN")
        ctx.server.chats.check_right(chat, _me(ctx), right)


async def peer_blocked_me(ctx: RequestContext, peer: PeerKey) -> bool:
    """The other user of a private chat blocked the caller (their copy is not made)."""
    me = _me(ctx)
    return (
        peer[0] == PEER_USER
        and peer[1] != me
        and me in await ctx.server.contacts.blocked_of(peer[1])
    )


async def peer_chats(ctx: RequestContext, peer: PeerKey) -> list[Any]:
    """``[Chat]`` for a basic-group peer (as the caller sees it), else ``[]``."""
    if peer[0] != PEER_CHAT:
        return []
    chat = await ctx.server.chats.get(peer[1])
    return [chat.chat_for(_me(ctx))] if chat is not None else []


async def messages_answer(
    ctx: RequestContext, recs: list[MessageRecord], total: int | None = None
) -> Any:
    msgs = await ctx.server.msg.views(_me(ctx), recs)
    users = await users_of(ctx, recs)
    chats = await chats_of(ctx, recs)
    if total is None or total <= len(recs):
        return types.messages.Messages(topics=[], messages=msgs, chats=chats, users=users)
    return types.messages.MessagesSlice(
        topics=[], count=total, messages=msgs, chats=chats, users=users
    )


def history_hash(recs: list[MessageRecord]) -> int:
    """Telegram's hash over the ids (and edit dates) of a page, as clients compute it."""
    values: list[int] = []
    for r in recs:
        values.append(r.id)
        values.append(r.edit_date or 0)
    return contacts_hash(values)


# -------------------------------------------------------------------- send
@router(fn.messages.SendMessage)
async def send_message(ctx: RequestContext, req: fn.messages.SendMessage) -> Any:
    if isinstance(req.peer, types.InputPeerChannel):
        from teamgram.bff import channels

        return await channels.send_message(ctx, req)
    me = _me(ctx)
    peer = await resolve_peer(ctx, req.peer)
    check_text(ctx, req.message)
    entities = clean_entities(ctx, req.message, req.entities)
    await check_can_send(ctx, peer)
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
    blocked = await peer_blocked_me(ctx, peer)
    sent = await ctx.server.msg.send(
        me,
        peer,
        [item],
        await views_for(ctx, peer),
        _key(ctx),
        clear_draft=req.clear_draft,
        deliver_to_peer=not blocked,
    )
    s = sent[0]
    return types.UpdateShortSentMessage(
        out=True,
        id=s.record.id,
        pts=s.pts,
        pts_count=1,
        date=s.record.date,
        entities=unpack(s.record.entities),
    )


@router(fn.messages.ForwardMessages)
async def forward_messages(ctx: RequestContext, req: fn.messages.ForwardMessages) -> Any:
    from teamgram.bff import channels

    me = _me(ctx)
    from_peer = await resolve_peer(ctx, req.from_peer)
    to_peer = await resolve_peer(ctx, req.to_peer)
    if not req.id or len(req.id) != len(req.random_id) or len(req.id) > PAGE_MAX:
        raise RpcError(400, "RANDOM_ID_INVALID" if req.id else "MESSAGE_IDS_EMPTY")
    found: dict[int, Any]
    if from_peer[0] == PEER_CHANNEL:
        source, posts = await channels.forward_source(ctx, req.from_peer, list(req.id))
        found = {i: channels.as_box_record(source, r, me) for i, r in posts.items()}
    else:
        found = await ctx.server.msg.get(me, list(req.id))
    items: list[NewMessage] = []
    for msg_id, random_id in zip(req.id, req.random_id, strict=True):
        rec = found.get(msg_id)
        if rec is None or rec.peer != from_peer or rec.action is not None:
            continue
        items.append(_forwarded(rec, from_peer, to_peer, me, random_id, req))
    if not items:
        raise RpcError(400, "MESSAGE_ID_INVALID")
    extra = set().union(*(r.user_ids() for r in found.values()))
    forwarded = [r.id for r in found.values() if r.action is None]
    if to_peer[0] == PEER_CHANNEL:
        answer = await channels.send_stored(ctx, req.to_peer, items, "send_messages", extra)
        if from_peer[0] == PEER_CHANNEL and forwarded:
            await ctx.server.channel_msgs.count_forwards(from_peer[1], forwarded)
        return answer
    await check_can_send(ctx, to_peer)
    check_flood(ctx, len(items))
    blocked = await peer_blocked_me(ctx, to_peer)
    views = await views_for(ctx, to_peer, extra)
    chats = await peer_chats(ctx, to_peer)
    sent = await ctx.server.msg.send(
        me, to_peer, items, views, _key(ctx), deliver_to_peer=not blocked
    )
    if from_peer[0] == PEER_CHANNEL and forwarded:  # a post's forwards counter
        await ctx.server.channel_msgs.count_forwards(from_peer[1], forwarded)
    updates: list[Any] = []
    for s, item in zip(sent, items, strict=True):
        updates.append(types.UpdateMessageID(id=s.record.id, random_id=item.random_id or 0))
    for s in sent:
        updates.append(
            types.UpdateNewMessage(message=ctx.server.msg.render(s.record), pts=s.pts, pts_count=1)
        )
    return types.Updates(
        updates=updates,
        users=views.get(me, []),
        chats=chats,
        date=int(time.time()),
        seq=0,
    )


def _forwarded(
    rec: MessageRecord,
    from_peer: PeerKey,
    to_peer: PeerKey,
    me: int,
    random_id: int,
    req: fn.messages.ForwardMessages,
) -> NewMessage:
    fwd: bytes | None = None
    if not req.drop_author:
        header = unpack(rec.fwd_from)
        if header is None:
            header = types.MessageFwdHeader(
                date=rec.date, from_id=types.PeerUser(user_id=rec.from_id)
            )
        if to_peer == (PEER_USER, me):  # Saved Messages remember where it came from
            header.saved_from_peer = peer_tl(*from_peer)
            header.saved_from_msg_id = rec.id
        fwd = header.to_bytes()
    text, entities = rec.text, rec.entities
    if req.drop_media_captions and rec.media is not None:
        text, entities = "", None
    flags = rec.flags & FLAG_HAS_URL
    if req.silent:
        flags |= FLAG_SILENT
    return NewMessage(
        text=text,
        entities=entities,
        random_id=random_id,
        fwd_from=fwd,
        media=rec.media,
        media_kind=rec.media_kind,
        flags=flags,
        grouped_id=rec.grouped_id,
        media_id=rec.media_id,
    )


@router(fn.messages.SetTyping)
async def set_typing(ctx: RequestContext, req: fn.messages.SetTyping) -> bool:
    if isinstance(req.peer, types.InputPeerChannel):
        from teamgram.bff import channels

        return await channels.set_typing(ctx, req)
    me = _me(ctx)
    peer = await resolve_peer(ctx, req.peer)
    now = int(time.time())
    if peer[0] == PEER_CHAT:
        chat = await ctx.server.chats.member_chat(peer[1], me)
        update = types.UpdateShort(
            update=types.UpdateChatUserTyping(
                chat_id=chat.id, from_id=types.PeerUser(user_id=me), action=req.action
            ),
            date=now,
        )
        for member in chat.members:
            if member != me:
                ctx.server.sync.push_now(member, update)
    elif peer[1] != me and not await peer_blocked_me(ctx, peer):
        update = types.UpdateShort(
            update=types.UpdateUserTyping(user_id=me, action=req.action), date=now
        )
        ctx.server.sync.push_now(peer[1], update)
    return True


# -------------------------------------------------------------------- read
@router(fn.messages.GetHistory)
async def get_history(ctx: RequestContext, req: fn.messages.GetHistory) -> Any:
    if isinstance(req.peer, types.InputPeerChannel):
        from teamgram.bff import channels

        return await channels.get_history(ctx, req)
    peer = await resolve_peer(ctx, req.peer)
    limit = max(0, min(req.limit or PAGE_MAX, PAGE_MAX))
    recs, total = await ctx.server.msg.history(
        _me(ctx),
        peer,
        offset_id=req.offset_id,
        offset_date=req.offset_date,
        add_offset=req.add_offset,
        limit=limit,
        max_id=req.max_id,
        min_id=req.min_id,
    )
    if req.hash and req.hash == history_hash(recs):
        return types.messages.MessagesNotModified(count=total)
    return await messages_answer(ctx, recs, total)


@router(fn.messages.GetMessages)
async def get_messages(ctx: RequestContext, req: fn.messages.GetMessages) -> Any:
    me = _me(ctx)
    wanted: list[int | None] = []
    for m in req.id:
        if isinstance(m, types.InputMessageID):
            wanted.append(m.id)
        else:
            wanted.append(None)
    found = await ctx.server.msg.get(me, [w for w in wanted if w is not None])
    replies: dict[int, int] = {}
    for m in req.id:
        if isinstance(m, types.InputMessageReplyTo):
            base = (await ctx.server.msg.get(me, [m.id])).get(m.id)
            if base is not None and base.reply_to_id:
                replies[m.id] = base.reply_to_id
    if replies:
        found.update(await ctx.server.msg.get(me, list(replies.values())))
    recs: list[MessageRecord] = []
    out: list[Any] = []
    views = {
        r.id: v
        for r, v in zip(
            found.values(), await ctx.server.msg.views(me, list(found.values())), strict=True
        )
    }
    for m, w in zip(req.id, wanted, strict=True):
        if isinstance(m, types.InputMessageReplyTo):
            w = replies.get(m.id)
        if w is not None and w in found:
            recs.append(found[w])
            out.append(views[w])
        else:
            out.append(types.MessageEmpty(id=int(w or getattr(m, "id", 0) or 0)))
    return types.messages.Messages(
        topics=[], messages=out, chats=await chats_of(ctx, recs), users=await users_of(ctx, recs)
    )


@router(fn.messages.Search)
async def search(ctx: RequestContext, req: fn.messages.Search) -> Any:
    me = _me(ctx)
    peer: PeerKey | None = None
    from_id = None
    if req.from_id is not None:
        from_id = peer_key(ctx.server.users.resolve_input_peer(me, req.from_id))[1]
    if isinstance(req.peer, types.InputPeerChannel):
        from teamgram.bff import channels

        return await channels.search(ctx, req, from_id)
    if not isinstance(req.peer, types.InputPeerEmpty):
        peer = await resolve_peer(ctx, req.peer)
    limit = max(0, min(req.limit or PAGE_MAX, PAGE_MAX))
    recs, total = await ctx.server.msg.history(
        me,
        peer,
        offset_id=req.offset_id,
        add_offset=req.add_offset,
        limit=limit,
        max_id=req.max_id,
        min_id=req.min_id,
        where=search_filters(req.q, req.filter, req.min_date, req.max_date, from_id),
    )
    return await messages_answer(ctx, recs, total)


@router(fn.messages.SearchGlobal)
async def search_global(ctx: RequestContext, req: fn.messages.SearchGlobal) -> Any:
    if req.broadcasts_only or req.groups_only:
        return types.messages.Messages(topics=[], messages=[], chats=[], users=[])
    limit = max(0, min(req.limit or PAGE_MAX, PAGE_MAX))
    recs, total = await ctx.server.msg.history(
        _me(ctx),
        None,
        offset_id=req.offset_id,
        limit=limit,
        where=search_filters(req.q, req.filter, req.min_date, req.max_date, None),
    )
    msgs = await ctx.server.msg.views(_me(ctx), recs)
    users = await users_of(ctx, recs)
    return types.messages.MessagesSlice(
        topics=[],
        count=total,
        messages=msgs,
        chats=await chats_of(ctx, recs),
        users=users,
        next_rate=recs[-1].date if len(recs) == limit and recs else None,
    )


# -------------------------------------------------------------- edit, delete
@router(fn.messages.EditMessage)
async def edit_message(ctx: RequestContext, req: fn.messages.EditMessage) -> Any:
    if isinstance(req.peer, types.InputPeerChannel):
        from teamgram.bff import channels

        return await channels.edit_message(ctx, req)
    me = _me(ctx)
    peer = await resolve_peer(ctx, req.peer)
    if req.media is not None:
        raise RpcError(400, "MEDIA_INVALID")  # editing media comes with files and media
    text = req.message
    entities = None
    flags = 0
    if text is not None:
        check_text(ctx, text)
        ents = clean_entities(ctx, text, req.entities)
        entities = pack_vector(ents)
        flags = FLAG_HAS_URL if has_url(text, ents) else 0
    views = await views_for(ctx, peer)
    chats = await peer_chats(ctx, peer)
    _, update = await ctx.server.msg.edit(
        me, peer, req.id, text, entities, views, _key(ctx), flags_set=flags
    )
    return types.Updates(
        updates=[update], users=views.get(me, []), chats=chats, date=int(time.time()), seq=0
    )


@router(fn.messages.DeleteMessages)
async def delete_messages(ctx: RequestContext, req: fn.messages.DeleteMessages) -> Any:
    res = await ctx.server.msg.delete(_me(ctx), list(req.id), req.revoke, _key(ctx))
    return types.messages.AffectedMessages(pts=res.pts, pts_count=res.pts_count)


@router(fn.messages.DeleteHistory)
async def delete_history(ctx: RequestContext, req: fn.messages.DeleteHistory) -> Any:
    peer = await resolve_peer(ctx, req.peer)
    if peer[0] == PEER_CHANNEL:
        raise RpcError(400, "PEER_ID_INVALID")  # Telegram: channels.deleteHistory
    res = await ctx.server.msg.delete_history(
        _me(ctx), peer, req.max_id, req.revoke, req.just_clear, _key(ctx)
    )
    return types.messages.AffectedHistory(
        pts=res.pts, pts_count=res.pts_count, offset=1 if res.more else 0
    )


@router(fn.messages.ReadHistory)
async def read_history(ctx: RequestContext, req: fn.messages.ReadHistory) -> Any:
    peer = await resolve_peer(ctx, req.peer)
    if peer[0] == PEER_CHANNEL:  # clients use channels.readHistory; this works the same
        from teamgram.bff import channels

        await channels.read(ctx, req.peer, req.max_id)
        state = await ctx.server.sync.get_state(_me(ctx))
        return types.messages.AffectedMessages(pts=state.pts, pts_count=0)
    res = await ctx.server.msg.read_history(_me(ctx), peer, req.max_id, _key(ctx))
    return types.messages.AffectedMessages(pts=res.pts, pts_count=res.pts_count)


@router(fn.messages.ReadMessageContents)
async def read_message_contents(ctx: RequestContext, req: fn.messages.ReadMessageContents) -> Any:
    # No voice notes or mentions to mark yet: nothing changes, the pts stays.
    state = await ctx.server.sync.get_state(_me(ctx))
    return types.messages.AffectedMessages(pts=state.pts, pts_count=0)


@router(fn.messages.ReceivedMessages)
async def received_messages(ctx: RequestContext, req: fn.messages.ReceivedMessages) -> list[Any]:
    return []


@router(fn.messages.UpdatePinnedMessage)
async def update_pinned_message(ctx: RequestContext, req: fn.messages.UpdatePinnedMessage) -> Any:
    if isinstance(req.peer, types.InputPeerChannel):
        from teamgram.bff import channels

        return await channels.update_pinned(ctx, req)
    me = _me(ctx)
    peer = await resolve_peer(ctx, req.peer)
    await check_can_send(ctx, peer, "pin_messages")
    views = await views_for(ctx, peer)
    chats = await peer_chats(ctx, peer)
    updates = await ctx.server.msg.set_pinned(
        me, peer, req.id, req.unpin, req.pm_oneside, req.silent, views, _key(ctx)
    )
    return types.Updates(
        updates=updates, users=views.get(me, []), chats=chats, date=int(time.time()), seq=0
    )


@router(fn.messages.SendReaction)
async def send_reaction(ctx: RequestContext, req: fn.messages.SendReaction) -> Any:
    me = _me(ctx)
    peer = await resolve_peer(ctx, req.peer)
    emoticons: list[str] = []
    for r in req.reaction or ():
        if not isinstance(r, types.ReactionEmoji) or not r.emoticon or len(r.emoticon) > 8:
            raise RpcError(400, "REACTION_INVALID")
        if r.emoticon not in emoticons:
            emoticons.append(r.emoticon)
    if len(emoticons) > REACTIONS_MAX:
        raise RpcError(400, "REACTIONS_TOO_MANY")
    if peer[0] == PEER_CHANNEL:
        from teamgram.bff import channels

        return await channels.send_reaction(ctx, req, emoticons)
    users = await ctx.server.users.users_for(
        me, sorted({me, peer[1]} if peer[0] == PEER_USER else {me})
    )
    chats = await peer_chats(ctx, peer)
    # Nothing awaited after the write: the answer leaves before any later push.
    update = await ctx.server.msg.react(me, peer, req.msg_id, emoticons, _key(ctx))
    return types.Updates(updates=[update], users=users, chats=chats, date=int(time.time()), seq=0)
