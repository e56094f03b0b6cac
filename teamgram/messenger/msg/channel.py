"""msg for supergroups and channels: one message box per channel, shared by all members.

Unlike a basic group (one copy per member's box), a channel's message is written
once, numbered by the channel (its own message ids and pts, see
:mod:`teamgram.messenger.sync.channel`), so a post to 200,000 members costs one
row. Live delivery goes only to members online now (``audience``, prepared by the
caller): everyone else learns of it through ``updates.getChannelDifference``,
as Telegram clients do. Changes run on the shared :class:`GroupCommit` writer,
pushes go out after commit in pts order.

What differs per member is kept in their own dialog row (biz/dialog): read
position, pin, draft. The dialog list takes each channel's top message from here
(:meth:`ChannelMessages.tops`) instead of writing it into every member's row.

With ``shared=True`` (several processes write one database, #9; the writer and
both syncs must be shared too) a change to a channel locks its state row before
anything else (its pts and message ids are read under that lock), a resent
random_id is caught by the unique index (and the first copy looked up then), and
the channels' top messages are read from the database, not remembered.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.infra.group_commit import GroupCommit, Tx
from teamgram.messenger.msg.box_ids import BoxIds
from teamgram.messenger.msg.paging import history_page
from teamgram.messenger.msg.records import (
    FLAG_PINNED,
    FLAG_REACTIONS,
    FLAG_SILENT,
    MEDIA_NONE,
    MediaHook,
    unpack,
)
from teamgram.messenger.msg.service import EDIT_TIME_LIMIT, NewMessage, _reactions
from teamgram.messenger.msg.tables import channel_boxes, channel_messages, message_reactions
from teamgram.messenger.sync.channel import CHANNEL_LOCK, CHANNEL_LOCK_RANK, ChannelSync
from teamgram.messenger.sync.service import USER_LOCK, USER_LOCK_RANK, SyncService
from teamgram.service.biz.dialog import DialogService
from teamgram.service.biz.peers import PEER_CHANNEL
from teamgram.tl import TLObject, types

# Who gets a live push, and what it carries: user id -> (users, chats) of their Updates.
Audience = Mapping[int, tuple[list[Any], list[Any]]]
# Writes of another service that must commit together with a channel change.
InTx = Callable[[Tx], Awaitable[None]]

_CHUNK = 500
RECENT_RANDOM_SECONDS = 300
# Views counted per (channel, post, viewer) in memory, at most this many.
VIEWED_MAX = 1_000_000

_BY_RANDOM_ID = sa.select(channel_messages).where(
    channel_messages.c.channel_id == sa.bindparam("channel_id"),
    channel_messages.c.from_id == sa.bindparam("from_id"),
    channel_messages.c.random_id.in_(sa.bindparam("random_ids", expanding=True)),
)


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _updates(updates: list[Any], users: list[Any], chats: list[Any]) -> types.Updates:
    return types.Updates(
        updates=updates, users=list(users), chats=list(chats), date=int(time.time()), seq=0
    )


@dataclass(slots=True)
class ChannelMessageRecord:
    channel_id: int
    id: int
    from_id: int
    date: int
    shared_id: int
    pts: int = 0
    text: str = ""
    entities: bytes | None = None
    reply_to_id: int | None = None
    fwd_from: bytes | None = None
    media: bytes | None = None
    media_kind: int = MEDIA_NONE
    action: bytes | None = None
    edit_date: int | None = None
    flags: int = 0
    grouped_id: int | None = None
    media_id: int | None = None
    views: int = 0
    forwards: int = 0
    post_author: str | None = None
    random_id: int | None = None

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def user_ids(self) -> set[int]:
        ids = {self.from_id}
        if self.fwd_from:
            fwd = unpack(self.fwd_from)
            for p in (fwd.from_id, fwd.saved_from_peer):
                if isinstance(p, types.PeerUser):
                    ids.add(p.user_id)
        if self.action:
            action = unpack(self.action)
            ids.update(getattr(action, "users", None) or ())
            for name in ("user_id", "inviter_id"):
                v = getattr(action, name, None)
                if isinstance(v, int):
                    ids.add(v)
        return ids

    def to_tl(
        self,
        viewer_id: int,
        broadcast: bool,
        reactions: TLObject | None = None,
        media_hook: MediaHook | None = None,
    ) -> TLObject:
        """The Message as ``viewer_id`` sees it: ``out`` for their own; a broadcast post
        has no sender (its author's name with signatures on) but a view count."""
        peer = types.PeerChannel(channel_id=self.channel_id)
        from_peer = None if broadcast else types.PeerUser(user_id=self.from_id)
        reply_to = (
            types.MessageReplyHeader(reply_to_msg_id=self.reply_to_id) if self.reply_to_id else None
        )
        out = self.from_id == viewer_id
        if self.action is not None:
            return types.MessageService(
                id=self.id,
                peer_id=peer,
                date=self.date,
                action=unpack(self.action),
                out=out,
                post=broadcast,
                silent=bool(self.flags & FLAG_SILENT),
                from_id=from_peer,
                reply_to=reply_to,
            )
        media = unpack(self.media)
        if media is not None and media_hook is not None:
            media = media_hook(media)
        return types.Message(
            id=self.id,
            peer_id=peer,
            date=self.date,
            message=self.text,
            out=out,
            post=broadcast,
            silent=bool(self.flags & FLAG_SILENT),
            pinned=bool(self.flags & FLAG_PINNED),
            from_id=from_peer,
            fwd_from=unpack(self.fwd_from),
            reply_to=reply_to,
            media=media,
            entities=unpack(self.entities),
            edit_date=self.edit_date,
            grouped_id=self.grouped_id,
            reactions=reactions,
            views=self.views if broadcast else None,
            forwards=self.forwards if broadcast else None,  # shares its flag with views
            post_author=self.post_author if broadcast else None,
        )


def _message_id(update: Any) -> int:
    return int(update.message.id)


def _record(row: Any) -> ChannelMessageRecord:
    return ChannelMessageRecord(
        **{name: getattr(row, name) for name in ChannelMessageRecord.__slots__}
    )


@dataclass(slots=True)
class SentChannel:
    record: ChannelMessageRecord
    pts: int
    duplicate: bool = False


@dataclass(slots=True)
class Top:
    id: int
    date: int


class ChannelMessages:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: GroupCommit,
        sync: SyncService,
        channel_sync: ChannelSync,
        dialogs: DialogService,
        shared: bool = False,
    ) -> None:
        if shared and not (writer.shared and sync.shared and channel_sync.shared):
            raise ValueError("shared ChannelMessages needs the writer and both syncs shared")
        self.engine = engine
        self.writer = writer
        self.sync = sync
        self.channel_sync = channel_sync
        self.dialogs = dialogs
        # Other processes write the same database: lock counters, never cache them.
        self.shared = shared
        self.media_hook: MediaHook | None = None
        self._ids = BoxIds(channel_boxes, "channel_id", lock_kind=CHANNEL_LOCK if shared else None)
        if shared:
            # A channel's state row is the mutex of its pts and message ids; read
            # positions go to the reader's own log (a user row).
            writer.add_locker(CHANNEL_LOCK, CHANNEL_LOCK_RANK, channel_sync.lock_channels)
            writer.add_locker(CHANNEL_LOCK, CHANNEL_LOCK_RANK, self._ids.load)
            writer.add_locker(USER_LOCK, USER_LOCK_RANK, sync.lock_users)
        self._tops: dict[int, Top] = {}
        self._recent_random: dict[tuple[int, int, int], ChannelMessageRecord] = {}
        self._recent_order: deque[tuple[float, tuple[int, int, int]]] = deque()
        # (channel, message, viewer) already counted by getMessagesViews.
        self._viewed: set[tuple[int, int, int]] = set()

    # ------------------------------------------------------------ rendering
    def render(
        self,
        rec: ChannelMessageRecord,
        viewer_id: int,
        broadcast: bool,
        reactions: TLObject | None = None,
    ) -> TLObject:
        return rec.to_tl(viewer_id, broadcast, reactions, self.media_hook)

    async def views(
        self, viewer_id: int, broadcast: bool, recs: list[ChannelMessageRecord]
    ) -> list[TLObject]:
        reactions: dict[int, TLObject] = {}
        if any(r.flags & FLAG_REACTIONS for r in recs):
            async with self.engine.connect() as conn:
                reactions = await _reactions(conn, viewer_id, recs)
        return [self.render(r, viewer_id, broadcast, reactions.get(r.shared_id)) for r in recs]

    def _push_later(
        self,
        tx: Tx,
        audience: Audience,
        build: Any,
        sender_id: int,
        exclude_key: int | None,
    ) -> None:
        """After commit: ``build(viewer)`` -> the updates each online member gets."""

        def push() -> None:
            for user_id, (users, chats) in audience.items():
                self.sync.push_now(
                    user_id,
                    _updates(build(user_id), users, chats),
                    exclude_key if user_id == sender_id else None,
                )

        tx.after_commit(push)

    # ---------------------------------------------------------------- ids
    async def _next_id(self, tx: Tx, channel_id: int) -> int:
        return await self._ids.next(tx, channel_id)

    def _channel(self, channel_id: int) -> list[tuple[str, int]]:
        """The lock an operation that advances the channel's pts declares (shared writers)."""
        return [(CHANNEL_LOCK, channel_id)] if self.shared else []

    def _user(self, user_id: int) -> list[tuple[str, int]]:
        return [(USER_LOCK, user_id)] if self.shared else []

    # ---------------------------------------------------------------- send
    async def send(
        self,
        sender_id: int,
        channel_id: int,
        broadcast: bool,
        items: list[NewMessage],
        audience: Audience,
        exclude_key: int | None,
        post_author: str | None = None,
        new_members: list[int] | None = None,
        before: InTx | None = None,
    ) -> list[SentChannel]:
        """Store ``items`` in the channel and push them to ``audience``.

        ``new_members``: users who just joined (their dialog starts here, read up to
        this message: it is what they see first). ``before``: other writes that
        commit with the message (the membership change it announces)."""
        known: dict[int, ChannelMessageRecord] = {}

        async def op(tx: Tx) -> list[SentChannel]:
            if before is not None:
                await before(tx)
            sent = await self._send_in(
                tx,
                sender_id,
                channel_id,
                broadcast,
                items,
                audience,
                exclude_key,
                post_author,
                known,
            )
            if new_members and sent:
                top = sent[-1].record
                for uid in new_members:
                    await self._open_dialog_in(tx, uid, channel_id, top.id, top.date)
            return sent

        try:
            return await self.writer.run(op, self._channel(channel_id))
        except IntegrityError:
            ids = [i.random_id for i in items if i.random_id is not None]
            async with self.engine.connect() as conn:
                for part in _chunks(ids):
                    rows = await conn.execute(
                        _BY_RANDOM_ID,
                        {"channel_id": channel_id, "from_id": sender_id, "random_ids": part},
                    )
                    known.update({r.random_id: _record(r) for r in rows})
            if not known:
                raise
            return await self.writer.run(op, self._channel(channel_id))

    async def _send_in(
        self,
        tx: Tx,
        sender_id: int,
        channel_id: int,
        broadcast: bool,
        items: list[NewMessage],
        audience: Audience,
        exclude_key: int | None,
        post_author: str | None,
        known: dict[int, ChannelMessageRecord],
    ) -> list[SentChannel]:
        staged: dict[tuple[int, int, int], ChannelMessageRecord] | None = tx.scratch.get(
            "chmsg.random"
        )
        if staged is None:
            staged = tx.scratch["chmsg.random"] = {}
            tx.on_commit(lambda: self._remember_random(staged))
        # A random_id another process stored (shared writers: committed before our
        # lock on the channel was granted) fails the insert on the unique index,
        # and send() comes back with it looked up, as for an older one here.
        now = int(time.time())
        sent: list[SentChannel] = []
        new: list[ChannelMessageRecord] = []
        for item in items:
            key = (channel_id, sender_id, item.random_id or 0)
            dup = (
                (known.get(item.random_id) or staged.get(key) or self._recent_random.get(key))
                if item.random_id is not None
                else None
            )
            if dup is not None:
                sent.append(SentChannel(dup, dup.pts, duplicate=True))
                continue
            reply_to = item.reply_to_id
            if reply_to and await self._get_in(tx, channel_id, reply_to) is None:
                reply_to = None
            rec = ChannelMessageRecord(
                channel_id=channel_id,
                id=await self._next_id(tx, channel_id),
                from_id=sender_id,
                date=now,
                shared_id=secrets.randbits(62) + 1,
                random_id=item.random_id,
                text=item.text,
                entities=item.entities,
                reply_to_id=reply_to,
                fwd_from=item.fwd_from,
                media=item.media,
                media_kind=item.media_kind,
                action=item.action,
                flags=item.flags,
                grouped_id=item.grouped_id,
                media_id=item.media_id,
                post_author=post_author,
            )
            upd = types.UpdateNewChannelMessage(
                message=self.render(rec, 0, broadcast), pts=0, pts_count=1
            )
            rec.pts = await self.channel_sync.append(tx, channel_id, upd)
            tx.insert_later(channel_messages, rec.row())
            if item.random_id is not None:
                staged[key] = rec
            new.append(rec)
            sent.append(SentChannel(rec, rec.pts))
        if new:
            last = new[-1]
            tx.on_commit(lambda: self._set_top(channel_id, last.id, last.date))

            def build(viewer: int) -> list[Any]:
                return [
                    types.UpdateNewChannelMessage(
                        message=self.render(r, viewer, broadcast), pts=r.pts, pts_count=1
                    )
                    for r in new
                ]

            self._push_later(tx, audience, build, sender_id, exclude_key)
        return sent

    def _remember_random(self, staged: dict[tuple[int, int, int], ChannelMessageRecord]) -> None:
        now = time.monotonic()
        for key, rec in staged.items():
            self._recent_random[key] = rec
            self._recent_order.append((now, key))
        cutoff = now - RECENT_RANDOM_SECONDS
        while self._recent_order and self._recent_order[0][0] < cutoff:
            _, key = self._recent_order.popleft()
            self._recent_random.pop(key, None)

    def _set_top(self, channel_id: int, msg_id: int, date: int) -> None:
        if self.shared:
            return  # other processes post too: read from the database each time
        top = self._tops.get(channel_id)
        if top is None or msg_id >= top.id:
            self._tops[channel_id] = Top(msg_id, date)

    async def _open_dialog_in(
        self, tx: Tx, user_id: int, channel_id: int, top_id: int, top_date: int
    ) -> None:
        await self.dialogs.ensure_in(
            tx,
            user_id,
            (PEER_CHANNEL, channel_id),
            top_message=top_id,
            top_date=top_date,
            read_inbox_max_id=top_id,
            read_outbox_max_id=0,
            unread_count=0,
        )

    async def open_dialogs(
        self, channel_id: int, user_ids: list[int], before: InTx | None = None
    ) -> None:
        """Members who joined without a service message (broadcast channels)."""
        tops = await self.tops([channel_id])
        top = tops.get(channel_id, Top(0, int(time.time())))

        async def op(tx: Tx) -> None:
            if before is not None:
                await before(tx)
            for uid in user_ids:
                await self._open_dialog_in(tx, uid, channel_id, top.id, top.date)

        await self.writer.run(op)

    async def close_dialogs(
        self, channel_id: int, user_ids: list[int], before: InTx | None = None
    ) -> None:
        """Members who left or were kicked: the channel leaves their dialog list."""

        async def op(tx: Tx) -> None:
            if before is not None:
                await before(tx)
            for uid in user_ids:
                await self.dialogs.delete_in(tx, uid, (PEER_CHANNEL, channel_id))

        await self.writer.run(op)

    # ---------------------------------------------------------------- reads
    async def _get_in(self, tx: Tx, channel_id: int, msg_id: int) -> ChannelMessageRecord | None:
        await tx.flush()
        row = (
            await tx.conn.execute(
                sa.select(channel_messages).where(
                    channel_messages.c.channel_id == channel_id, channel_messages.c.id == msg_id
                )
            )
        ).first()
        return _record(row) if row is not None else None

    async def _many_in(self, tx: Tx, channel_id: int, ids: list[int]) -> list[ChannelMessageRecord]:
        await tx.flush()
        out: list[ChannelMessageRecord] = []
        for part in _chunks(sorted(set(ids))):
            rows = await tx.conn.execute(
                sa.select(channel_messages).where(
                    channel_messages.c.channel_id == channel_id, channel_messages.c.id.in_(part)
                )
            )
            out.extend(_record(r) for r in rows)
        return out

    async def get(self, channel_id: int, ids: list[int]) -> dict[int, ChannelMessageRecord]:
        out: dict[int, ChannelMessageRecord] = {}
        async with self.engine.connect() as conn:
            for part in _chunks(sorted(set(ids))):
                rows = await conn.execute(
                    sa.select(channel_messages).where(
                        channel_messages.c.channel_id == channel_id,
                        channel_messages.c.id.in_(part),
                    )
                )
                out.update({r.id: _record(r) for r in rows})
        return out

    async def history(
        self,
        channel_id: int,
        *,
        offset_id: int = 0,
        offset_date: int = 0,
        add_offset: int = 0,
        limit: int = 100,
        max_id: int = 0,
        min_id: int = 0,
        where: list[Any] | None = None,
    ) -> tuple[list[ChannelMessageRecord], int]:
        m = channel_messages
        base = [m.c.channel_id == channel_id, *(where or ())]
        async with self.engine.connect() as conn:
            rows, total = await history_page(
                conn,
                m,
                base,
                offset_id=offset_id,
                offset_date=offset_date,
                add_offset=add_offset,
                limit=limit,
                max_id=max_id,
                min_id=min_id,
            )
        return [_record(r) for r in rows], total

    async def tops(self, channel_ids: list[int]) -> dict[int, Top]:
        """Each channel's newest message (the dialog list orders channels by it)."""
        out: dict[int, Top] = {}
        missing = []
        for c in channel_ids:
            top = self._tops.get(c)
            if top is None:
                missing.append(c)
            else:
                out[c] = top
        if missing:
            m = channel_messages
            newest = (
                sa.select(m.c.channel_id, sa.func.max(m.c.id).label("top"))
                .where(m.c.channel_id.in_(missing))
                .group_by(m.c.channel_id)
                .subquery()
            )
            async with self.engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(m.c.channel_id, m.c.id, m.c.date).join(
                        newest,
                        sa.and_(m.c.channel_id == newest.c.channel_id, m.c.id == newest.c.top),
                    )
                )
                for r in rows:
                    out[r.channel_id] = Top(r.id, r.date)
                    self._set_top(r.channel_id, r.id, r.date)
        return out

    async def unread_count(self, channel_id: int, after_id: int, viewer_id: int) -> int:
        m = channel_messages
        async with self.engine.connect() as conn:
            n = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(m)
                    .where(
                        m.c.channel_id == channel_id, m.c.id > after_id, m.c.from_id != viewer_id
                    )
                )
            ).scalar_one()
        return int(n)

    async def has_media(self, channel_id: int, media_id: int) -> bool:
        m = channel_messages
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(m.c.id)
                    .where(m.c.channel_id == channel_id, m.c.media_id == media_id)
                    .limit(1)
                )
            ).first()
        return row is not None

    async def channels_with_media(self, media_id: int, limit: int = 20) -> list[int]:
        """Channels with a message carrying this photo or document (download access)."""
        m = channel_messages
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(m.c.channel_id).where(m.c.media_id == media_id).distinct().limit(limit)
            )
            return [r.channel_id for r in rows]

    async def pinned_top(self, channel_id: int) -> int | None:
        m = channel_messages
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(sa.func.max(m.c.id)).where(
                        m.c.channel_id == channel_id, m.c.flags.op("&")(FLAG_PINNED) != 0
                    )
                )
            ).scalar()

    async def difference(
        self, viewer_id: int, channel_id: int, broadcast: bool, pts: int, limit: int
    ) -> tuple[Any, list[Any], list[Any], list[ChannelMessageRecord]]:
        """(ChannelDifference state, new messages, other updates, their records).

        Messages come as they are now (an edited message once, in its new form; a
        deleted one not at all: its deletion follows in ``other_updates``)."""
        diff = await self.channel_sync.difference(channel_id, pts, limit)
        if diff.too_long or not diff.entries:
            return diff, [], [], []
        ids: set[int] = set()
        entries: list[tuple[int, int, Any]] = diff.entries
        for _pts, _count, upd in entries:
            if isinstance(upd, types.UpdateNewChannelMessage | types.UpdateEditChannelMessage):
                ids.add(_message_id(upd))
        current = await self.get(channel_id, sorted(ids))
        new_messages: list[Any] = []
        other: list[Any] = []
        done: set[int] = set()
        for _pts, _count, upd in entries:
            if isinstance(upd, types.UpdateNewChannelMessage | types.UpdateEditChannelMessage):
                msg_id = _message_id(upd)
                rec = current.get(msg_id)
                if rec is None or msg_id in done:
                    continue
                done.add(msg_id)
                if isinstance(upd, types.UpdateNewChannelMessage):
                    new_messages.append(self.render(rec, viewer_id, broadcast))
                else:
                    upd.message = self.render(rec, viewer_id, broadcast)
                    other.append(upd)
            else:
                other.append(upd)
        recs = [current[i] for i in sorted(done)]
        return diff, new_messages, other, recs

    # ---------------------------------------------------------------- edit
    async def edit(
        self,
        user_id: int,
        channel_id: int,
        broadcast: bool,
        msg_id: int,
        text: str | None,
        entities: bytes | None,
        may_edit_others: bool,
        audience: Audience,
        exclude_key: int | None,
        flags_url: int = 0,
    ) -> tuple[ChannelMessageRecord, Any]:
        async def op(tx: Tx) -> tuple[ChannelMessageRecord, Any]:
            rec = await self._get_in(tx, channel_id, msg_id)
            if rec is None or rec.action is not None:
                raise RpcError(400, "MESSAGE_ID_INVALID")
            if rec.from_id != user_id and not may_edit_others:
                raise RpcError(403, "MESSAGE_AUTHOR_REQUIRED")
            now = int(time.time())
            if not broadcast and now - rec.date > EDIT_TIME_LIMIT:
                raise RpcError(400, "MESSAGE_EDIT_TIME_EXPIRED")
            new_text = rec.text if text is None else text
            new_entities = rec.entities if text is None and entities is None else entities
            if new_text == rec.text and new_entities == rec.entities:
                raise RpcError(400, "MESSAGE_NOT_MODIFIED")
            rec.text, rec.entities, rec.edit_date = new_text, new_entities, now
            rec.flags = (rec.flags & ~4) | flags_url
            await tx.conn.execute(
                channel_messages.update()
                .where(channel_messages.c.channel_id == channel_id, channel_messages.c.id == msg_id)
                .values(text=rec.text, entities=rec.entities, edit_date=now, flags=rec.flags)
            )
            upd = types.UpdateEditChannelMessage(
                message=self.render(rec, 0, broadcast), pts=0, pts_count=1
            )
            pts = await self.channel_sync.append(tx, channel_id, upd)

            def build(viewer: int) -> list[Any]:
                return [
                    types.UpdateEditChannelMessage(
                        message=self.render(rec, viewer, broadcast), pts=pts, pts_count=1
                    )
                ]

            self._push_later(tx, audience, build, user_id, exclude_key)
            return rec, build(user_id)[0]

        return await self.writer.run(op, self._channel(channel_id))

    # -------------------------------------------------------------- delete
    async def delete(
        self,
        user_id: int,
        channel_id: int,
        ids: list[int],
        may_delete_others: bool,
        audience: Audience,
        exclude_key: int | None,
    ) -> tuple[int, int, list[ChannelMessageRecord]]:
        """Delete for everyone; (pts, pts_count, deleted records). Others' messages need
        ``may_delete_others`` (MESSAGE_DELETE_FORBIDDEN)."""

        async def op(tx: Tx) -> tuple[int, int, list[ChannelMessageRecord]]:
            found = await self._many_in(tx, channel_id, ids)
            if not found:
                return await self.channel_sync.current_pts_in(tx, channel_id), 0, []
            if not may_delete_others and any(r.from_id != user_id for r in found):
                raise RpcError(403, "MESSAGE_DELETE_FORBIDDEN")
            gone = sorted(r.id for r in found)
            for part in _chunks(gone):
                await tx.conn.execute(
                    channel_messages.delete().where(
                        channel_messages.c.channel_id == channel_id,
                        channel_messages.c.id.in_(part),
                    )
                )
            upd = types.UpdateDeleteChannelMessages(
                channel_id=channel_id, messages=gone, pts=0, pts_count=len(gone)
            )
            pts = await self.channel_sync.append(tx, channel_id, upd, pts_count=len(gone))
            top = self._tops.get(channel_id)
            if top is not None and top.id in gone:

                def forget_top() -> None:
                    self._tops.pop(channel_id, None)

                tx.on_commit(forget_top)
            # The caller's device too: its answer (affectedMessages) names no channel.
            self._push_later(tx, audience, lambda _v: [upd], user_id, None)
            return pts, len(gone), found

        return await self.writer.run(op, self._channel(channel_id))

    # ----------------------------------------------------------------- pin
    async def set_pinned(
        self,
        user_id: int,
        channel_id: int,
        broadcast: bool,
        msg_id: int,
        unpin: bool,
        silent: bool,
        audience: Audience,
        exclude_key: int | None,
    ) -> tuple[list[Any], ChannelMessageRecord]:
        """Pin (with its service message) or unpin; the caller's updates and the message."""

        async def op(tx: Tx) -> tuple[list[Any], ChannelMessageRecord]:
            rec = await self._get_in(tx, channel_id, msg_id)
            if rec is None:
                raise RpcError(400, "MESSAGE_ID_INVALID")
            flags = rec.flags & ~FLAG_PINNED if unpin else rec.flags | FLAG_PINNED
            if flags == rec.flags:
                raise RpcError(
                    400, "MESSAGE_NOT_MODIFIED" if unpin else "PINNED_MESSAGE_NOT_MODIFIED"
                )
            rec.flags = flags
            await tx.conn.execute(
                channel_messages.update()
                .where(channel_messages.c.channel_id == channel_id, channel_messages.c.id == msg_id)
                .values(flags=flags)
            )
            upd = types.UpdatePinnedChannelMessages(
                channel_id=channel_id, messages=[msg_id], pts=0, pts_count=1, pinned=not unpin
            )
            await self.channel_sync.append(tx, channel_id, upd)
            self._push_later(tx, audience, lambda _v: [upd], user_id, exclude_key)
            mine: list[Any] = [upd]
            if not unpin:
                action = types.MessageActionPinMessage().to_bytes()
                sent = await self._send_in(
                    tx,
                    user_id,
                    channel_id,
                    broadcast,
                    [NewMessage(action=action, reply_to_id=msg_id, flags=1 if silent else 0)],
                    audience,
                    exclude_key,
                    None,
                    {},
                )
                mine.append(
                    types.UpdateNewChannelMessage(
                        message=self.render(sent[0].record, user_id, broadcast),
                        pts=sent[0].pts,
                        pts_count=1,
                    )
                )
            return mine, rec

        return await self.writer.run(op, self._channel(channel_id))

    # ---------------------------------------------------------------- read
    async def read_history(
        self, user_id: int, channel_id: int, max_id: int, exclude_key: int | None
    ) -> tuple[int, int] | None:
        """Move the reader's inbox position; (max_id, sender of the last read message)
        when it moved. The reader's devices get updateReadChannelInbox (logged in the
        reader's own log, pts_count 0: it does not change the channel)."""
        peer = (PEER_CHANNEL, channel_id)
        tops = await self.tops([channel_id])
        top = tops.get(channel_id)
        if top is None:
            return None

        async def op(tx: Tx) -> tuple[int, int] | None:
            d = await self.dialogs.get_in(tx, user_id, peer)
            if d is None:
                return None
            upto = top.id if max_id <= 0 else min(max_id, top.id)
            if upto <= d.read_inbox_max_id:
                return None
            m = channel_messages
            unread = (
                await tx.conn.execute(
                    sa.select(sa.func.count())
                    .select_from(m)
                    .where(m.c.channel_id == channel_id, m.c.id > upto, m.c.from_id != user_id)
                )
            ).scalar_one()
            last = (
                await tx.conn.execute(
                    sa.select(m.c.from_id)
                    .where(m.c.channel_id == channel_id, m.c.id <= upto)
                    .order_by(m.c.id.desc())
                    .limit(1)
                )
            ).first()
            await self.dialogs.update_in(
                tx, user_id, peer, read_inbox_max_id=upto, unread_count=unread, unread_mark=False
            )
            pts = await self.channel_sync.current_pts_in(tx, channel_id)
            upd = types.UpdateReadChannelInbox(
                channel_id=channel_id, max_id=upto, still_unread_count=unread, pts=pts
            )
            await self.sync.append(tx, user_id, upd, pts_count=0)
            self.sync.push_later(tx, user_id, _updates([upd], [], []), exclude_key)
            return upto, last.from_id if last is not None else 0

        return await self.writer.run(op, self._user(user_id))

    async def outbox_read(self, sender_id: int, channel_id: int, max_id: int) -> None:
        """The sender's devices learn their messages up to ``max_id`` were read."""
        peer = (PEER_CHANNEL, channel_id)

        async def op(tx: Tx) -> None:
            d = await self.dialogs.get_in(tx, sender_id, peer)
            if d is None or max_id <= d.read_outbox_max_id:
                return
            await self.dialogs.update_in(tx, sender_id, peer, read_outbox_max_id=max_id)
            upd = types.UpdateReadChannelOutbox(channel_id=channel_id, max_id=max_id)
            await self.sync.append(tx, sender_id, upd, pts_count=0)
            self.sync.push_later(tx, sender_id, _updates([upd], [], []))

        await self.writer.run(op, self._user(sender_id))

    # ----------------------------------------------------------- reactions
    async def react(
        self,
        user_id: int,
        channel_id: int,
        msg_id: int,
        emoticons: list[str],
        audience: Audience,
        exclude_key: int | None,
    ) -> Any:
        """Set the user's reactions on a post; every online member sees the new counts
        (``updateMessageReactions``: no pts, a refetched message carries them too)."""

        async def op(tx: Tx) -> Any:
            rec = await self._get_in(tx, channel_id, msg_id)
            if rec is None:
                raise RpcError(400, "MESSAGE_ID_INVALID")
            t = message_reactions
            await tx.conn.execute(
                t.delete().where(t.c.shared_id == rec.shared_id, t.c.user_id == user_id)
            )
            now = int(time.time())
            for e in emoticons:
                await tx.conn.execute(
                    t.insert().values(
                        shared_id=rec.shared_id, user_id=user_id, emoticon=e, date=now
                    )
                )
            if not rec.flags & FLAG_REACTIONS:
                rec.flags |= FLAG_REACTIONS
                await tx.conn.execute(
                    channel_messages.update()
                    .where(
                        channel_messages.c.channel_id == channel_id, channel_messages.c.id == msg_id
                    )
                    .values(flags=rec.flags)
                )
            counted: dict[int, Any] = {}
            viewers = set(audience) | {user_id}
            for viewer in viewers:
                got = await _reactions(tx.conn, viewer, [rec])
                counted[viewer] = got.get(rec.shared_id) or types.MessageReactions(
                    results=[], can_see_list=True, recent_reactions=[]
                )

            def build(viewer: int) -> list[Any]:
                return [
                    types.UpdateMessageReactions(
                        peer=types.PeerChannel(channel_id=channel_id),
                        msg_id=msg_id,
                        reactions=counted[viewer],
                    )
                ]

            self._push_later(tx, audience, build, user_id, exclude_key)
            return build(user_id)[0]

        return await self.writer.run(op)

    # --------------------------------------------------------------- views
    async def count_forwards(self, channel_id: int, ids: list[int]) -> None:
        """Posts forwarded elsewhere (their ``forwards`` counter)."""
        m = channel_messages

        async def op(tx: Tx) -> None:
            await tx.conn.execute(
                m.update()
                .where(m.c.channel_id == channel_id, m.c.id.in_(ids))
                .values(forwards=m.c.forwards + 1)
            )

        await self.writer.run(op)

    async def count_views(
        self, viewer_id: int, channel_id: int, ids: list[int], increment: bool
    ) -> dict[int, tuple[int, int]]:
        """(views, forwards) of posts; ``increment`` counts this viewer once per post."""
        if increment:
            fresh = [i for i in ids if (channel_id, i, viewer_id) not in self._viewed]
            if fresh:
                m = channel_messages

                async def op(tx: Tx) -> None:
                    await tx.conn.execute(
                        m.update()
                        .where(m.c.channel_id == channel_id, m.c.id.in_(fresh))
                        .values(views=m.c.views + 1)
                    )

                await self.writer.run(op)
                if len(self._viewed) > VIEWED_MAX:
                    self._viewed.clear()  # bounded memory: a rare recount is harmless
                self._viewed.update((channel_id, i, viewer_id) for i in fresh)
        found = await self.get(channel_id, ids)
        return {i: (r.views, r.forwards) for i, r in found.items()}
