"""msg: message boxes, and every change to them with the updates it causes.

Each write is one operation on the shared :class:`GroupCommit` writer: the
message rows, the dialogs (biz/dialog) and the update log entries (sync) of every
box it touches commit together, and the updates are pushed only after that
commit, in pts order. Answers for the calling device come back from the
operation; its own auth key is excluded from the pushes (it gets the answer).

Handlers in bff validate input, resolve peers and prepare the ``User`` objects
each receiver needs (``views``) before calling in here: an operation does no
other service's I/O, so the writer never waits on anything but its own
transaction.

With ``shared=True`` (several processes write one database, #9; the writer and
sync must be shared too) every operation names the users whose counters it will
advance (:meth:`MsgService._users_of`): the writer locks their state rows in
order before the batch runs, box ids are read under those locks, and a resent
random_id is looked up in the database under the sender's lock.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.infra.group_commit import GroupCommit, Tx
from teamgram.messenger.msg.box_ids import BoxIds
from teamgram.messenger.msg.paging import history_page
from teamgram.messenger.msg.records import (
    FLAG_HAS_URL,
    FLAG_PINNED,
    FLAG_REACTIONS,
    MediaHook,
    MessageRecord,
    record_from_row,
)
from teamgram.messenger.msg.tables import message_boxes, message_reactions, messages
from teamgram.messenger.sync.service import USER_LOCK, USER_LOCK_RANK, SyncService
from teamgram.service.biz.dialog import PINNED_MAX, DialogService
from teamgram.service.biz.peers import PEER_CHAT, PEER_USER, PeerKey, peer_tl
from teamgram.tl import TLObject, types

# Telegram: messages in private chats can be edited for 48 hours (not in Saved Messages).
EDIT_TIME_LIMIT = 48 * 3600
# A group message makes one copy per member: every this many, other tasks get the
# event loop (~0.13 ms of work per copy).
YIELD_EVERY = 16
# How long committed random_ids stay in memory for deduplication (a client resends
# an unanswered request within seconds; the database catches anything older).
RECENT_RANDOM_SECONDS = 300
# deleteHistory removes this many messages per call (the answer's offset asks for more).
DELETE_HISTORY_CHUNK = 1000
# A query's IN list is split so no database meets its parameter limit.
_CHUNK = 500

# Built once: statement construction costs more than running it on SQLite.
_BY_RANDOM_ID = sa.select(messages).where(
    messages.c.user_id == sa.bindparam("user_id"),
    messages.c.random_id.in_(sa.bindparam("random_ids", expanding=True)),
)

Views = Mapping[int, list[Any]]  # receiver user id -> the User objects its updates carry


@dataclass(slots=True)
class NewMessage:
    """What a sender asks to store (text or media, or a service action)."""

    text: str = ""
    entities: bytes | None = None
    random_id: int | None = None
    reply_to_id: int | None = None
    fwd_from: bytes | None = None
    media: bytes | None = None
    media_kind: int = 0
    action: bytes | None = None
    flags: int = 0
    grouped_id: int | None = None
    media_id: int | None = None


@dataclass(slots=True)
class Sent:
    """The sender's copy of a stored message, with the pts its box got."""

    record: MessageRecord
    pts: int
    duplicate: bool = False  # random_id seen before: this is the first message


@dataclass(slots=True)
class Affected:
    """``messages.affectedMessages``-style answer: the caller's pts after the change."""

    pts: int
    pts_count: int
    updates: list[Any] = field(default_factory=list)  # what the caller's box logged
    more: bool = False  # deleteHistory: call again


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _updates(
    updates: list[Any], users: list[Any] | None = None, chats: list[Any] | None = None
) -> types.Updates:
    return types.Updates(
        updates=updates,
        users=list(users or ()),
        chats=list(chats or ()),
        date=int(time.time()),
        seq=0,
    )


def _dialog_peer(peer: PeerKey) -> types.DialogPeer:
    return types.DialogPeer(peer=peer_tl(*peer))


class MsgService:
    def __init__(
        self,
        engine: AsyncEngine,
        writer: GroupCommit,
        sync: SyncService,
        dialogs: DialogService,
        cache_counters: bool = True,
        shared: bool = False,
    ) -> None:
        if shared and not (writer.shared and sync.shared):
            raise ValueError("shared MsgService needs GroupCommit and SyncService shared too")
        self.engine = engine
        self.writer = writer
        self.sync = sync
        self.dialogs = dialogs
        # Other processes write the same database: lock counters, never cache them.
        self.shared = shared
        self.cache_counters = cache_counters and not shared
        # Refreshes file references in stored media (the media service plugs in).
        self.media_hook: MediaHook | None = None
        # Basic groups (biz/chat plugs in): the members of a chat, and the Chat a
        # member sees (for the ``chats`` of pushed updates).
        self.chat_members: Callable[[int], Awaitable[list[int]]] | None = None
        self.chat_view: Callable[[int, int], Any] | None = None
        self.chat_is_admin: Callable[[int, int], bool] | None = None
        self._ids = BoxIds(
            message_boxes, "user_id", cache=cache_counters, lock_kind=USER_LOCK if shared else None
        )
        if shared:
            # A user's state row is the mutex of the user's pts and box ids.
            writer.add_locker(USER_LOCK, USER_LOCK_RANK, sync.lock_users)
            writer.add_locker(USER_LOCK, USER_LOCK_RANK, self._ids.load)
        # random_ids committed lately: a resend that raced its first copy's commit
        # (looked up before it was there) is still caught.
        self._recent_random: dict[tuple[int, int], MessageRecord] = {}
        self._recent_order: deque[tuple[float, tuple[int, int]]] = deque()

    # ---------------------------------------------------------------- box ids
    async def _next_id(self, tx: Tx, user_id: int) -> int:
        return await self._ids.next(tx, user_id)

    # --------------------------------------------------------- shared writers
    async def _users_of(self, user_id: int, peer: PeerKey | None = None) -> list[tuple[str, int]]:
        """The user rows an operation of ``user_id`` in the dialog with ``peer`` locks:
        the user, and whoever else holds a copy of its messages (the other user, the
        chat's members). Only shared writers lock; a miss is locked late (and may
        deadlock, which the writer retries)."""
        if not self.shared:
            return []
        users = {user_id}
        if peer is not None and peer[0] == PEER_USER:
            users.add(peer[1])
        elif peer is not None and peer[0] == PEER_CHAT and self.chat_members is not None:
            users.update(await self.chat_members(peer[1]))
        return [(USER_LOCK, u) for u in users]

    async def _users_of_messages(self, user_id: int, ids: list[int]) -> list[tuple[str, int]]:
        """:meth:`_users_of` every dialog the user's messages ``ids`` are in."""
        if not self.shared:
            return []
        m = messages
        peers: set[PeerKey] = set()
        async with self.engine.connect() as conn:
            for part in _chunks(sorted(set(ids))):
                rows = await conn.execute(
                    sa.select(m.c.peer_type, m.c.peer_id)
                    .where(m.c.user_id == user_id, m.c.id.in_(part))
                    .distinct()
                )
                peers.update((r.peer_type, r.peer_id) for r in rows)
        locks = set(await self._users_of(user_id))
        for peer in peers:
            locks.update(await self._users_of(user_id, peer))
        return sorted(locks)

    # ------------------------------------------------------------- reads (tx)
    async def _get_in(self, tx: Tx, user_id: int, msg_id: int) -> MessageRecord | None:
        await tx.flush()
        row = (
            await tx.conn.execute(
                sa.select(messages).where(messages.c.user_id == user_id, messages.c.id == msg_id)
            )
        ).first()
        return record_from_row(row) if row is not None else None

    async def _many_in(self, tx: Tx, user_id: int, ids: list[int]) -> list[MessageRecord]:
        await tx.flush()
        out: list[MessageRecord] = []
        for part in _chunks(sorted(set(ids))):
            rows = await tx.conn.execute(
                sa.select(messages).where(messages.c.user_id == user_id, messages.c.id.in_(part))
            )
            out.extend(record_from_row(r) for r in rows)
        return out

    async def _copies_in(
        self, tx: Tx, shared_ids: list[int], exclude_user: int | None = None
    ) -> list[MessageRecord]:
        await tx.flush()
        out: list[MessageRecord] = []
        for part in _chunks(sorted(set(shared_ids))):
            q = sa.select(messages).where(messages.c.shared_id.in_(part))
            if exclude_user is not None:
                q = q.where(messages.c.user_id != exclude_user)
            out.extend(record_from_row(r) for r in await tx.conn.execute(q))
        return out

    async def _insert(self, tx: Tx, rec: MessageRecord) -> None:
        """Staged for the batch's bulk insert; reads in this module flush first."""
        tx.insert_later(messages, rec.row())
        if rec.random_id is not None:
            staged = tx.scratch.get("msg.random")
            if staged is None:
                staged = tx.scratch["msg.random"] = {}
                tx.on_commit(lambda: self._remember_random(staged))
            staged[(rec.user_id, rec.random_id)] = rec

    def _remember_random(self, staged: dict[tuple[int, int], MessageRecord]) -> None:
        now = time.monotonic()
        recent = self._recent_random
        for key, rec in staged.items():
            recent[key] = rec
            self._recent_order.append((now, key))
        cutoff = now - RECENT_RANDOM_SECONDS
        while self._recent_order and self._recent_order[0][0] < cutoff:
            _, key = self._recent_order.popleft()
            recent.pop(key, None)

    async def _sent_by_random(
        self, sender_id: int, random_ids: list[int]
    ) -> dict[int, MessageRecord]:
        """Messages the sender already sent with these random_ids."""
        found: dict[int, MessageRecord] = {}
        if not random_ids:
            return found
        async with self.engine.connect() as conn:
            for part in _chunks(random_ids):
                rows = await conn.execute(_BY_RANDOM_ID, {"user_id": sender_id, "random_ids": part})
                for r in rows:
                    found[r.random_id] = record_from_row(r)
        return found

    async def _refresh_top(self, tx: Tx, user_id: int, peer: PeerKey) -> None:
        """After deletions: the dialog's top message and unread count again."""
        await tx.flush()
        d = await self.dialogs.get_in(tx, user_id, peer)
        if d is None:
            return
        m = messages
        in_dialog = sa.and_(
            m.c.user_id == user_id, m.c.peer_type == peer[0], m.c.peer_id == peer[1]
        )
        top = (
            await tx.conn.execute(
                sa.select(m.c.id, m.c.date).where(in_dialog).order_by(m.c.id.desc()).limit(1)
            )
        ).first()
        unread = (
            await tx.conn.execute(
                sa.select(sa.func.count())
                .select_from(m)
                .where(in_dialog, m.c.out == sa.false(), m.c.id > d.read_inbox_max_id)
            )
        ).scalar_one()
        await self.dialogs.update_in(
            tx,
            user_id,
            peer,
            top_message=top.id if top else 0,
            top_date=top.date if top else d.top_date,
            unread_count=unread,
        )

    # ------------------------------------------------------------------ send
    async def send(
        self,
        sender_id: int,
        peer: PeerKey,
        items: list[NewMessage],
        views: Views,
        exclude_key: int | None,
        clear_draft: bool = False,
        deliver_to_peer: bool = True,
    ) -> list[Sent]:
        """Store ``items`` from ``sender_id`` to ``peer`` (a user, or the sender: Saved Messages).

        ``deliver_to_peer`` False: only the sender's copy (the recipient blocked the sender).
        """

        known: dict[int, MessageRecord] = {}

        async def op(tx: Tx) -> list[Sent]:
            out = await self._send_in(
                tx, sender_id, peer, items, views, exclude_key, deliver_to_peer, known
            )
            if clear_draft:
                await self._set_draft_in(tx, sender_id, peer, None, exclude_key, only_if_set=True)
            return out

        locks = await self._users_of(sender_id, peer if deliver_to_peer else None)
        try:
            return await self.writer.run(op, locks)
        except IntegrityError:
            # A random_id stored before (the unique index said so, not a lookup on
            # every send): find the first message and answer with it.
            known.update(
                await self._sent_by_random(
                    sender_id, [i.random_id for i in items if i.random_id is not None]
                )
            )
            if not known:
                raise
            return await self.writer.run(op, locks)

    async def _send_in(
        self,
        tx: Tx,
        sender_id: int,
        peer: PeerKey,
        items: list[NewMessage],
        views: Views,
        exclude_key: int | None,
        deliver_to_peer: bool = True,
        known: dict[int, MessageRecord] | None = None,
    ) -> list[Sent]:
        # Who else gets a copy, and under which dialog: the other user (private), or
        # every other member (basic group: one copy per member's box, as Telegram).
        if peer[0] == PEER_USER:
            recipients = [peer[1]] if peer[1] != sender_id and deliver_to_peer else []
            recipient_peer: PeerKey = (PEER_USER, sender_id)
        elif peer[0] == PEER_CHAT and self.chat_members is not None:
            members = await self.chat_members(peer[1])
            if sender_id not in members:
                raise RpcError(400, "CHAT_ID_INVALID")
            recipients = [u for u in members if u != sender_id]
            recipient_peer = peer
        else:
            raise RpcError(400, "PEER_ID_INVALID")  # channels: their own service
        # random_id seen before? In this batch (staged) or lately (recent, in
        # memory); an older one, or one another process stored (shared writers:
        # it committed before our lock on the sender was granted), makes the
        # insert fail on uq_messages_random and send() comes back with it looked
        # up (known). Asking the database on every send instead cost a query per
        # message (measured: a third of shared mode's extra CPU per message).
        staged: dict[tuple[int, int], MessageRecord] = tx.scratch.get("msg.random", {})
        seen: dict[int, MessageRecord] = dict(known or {})
        for i in items:
            if i.random_id is None or i.random_id in seen:
                continue
            rec = staged.get((sender_id, i.random_id)) or self._recent_random.get(
                (sender_id, i.random_id)
            )
            if rec is not None:
                seen[i.random_id] = rec
        now = int(time.time())
        sent: list[Sent] = []
        sender_updates: list[Any] = []
        recipient_updates: dict[int, list[Any]] = {}
        for item in items:
            dup = seen.get(item.random_id) if item.random_id is not None else None
            if dup is not None:
                sent.append(Sent(dup, dup.pts, duplicate=True))
                continue
            shared_id = secrets.randbits(62) + 1
            reply_shared: int | None = None
            reply_to = item.reply_to_id
            if reply_to:
                target = await self._get_in(tx, sender_id, reply_to)
                if target is None or target.peer != peer:
                    reply_to = None  # Telegram drops a reply to a message that is gone
                else:
                    reply_shared = target.shared_id
            rec = MessageRecord(
                user_id=sender_id,
                id=await self._next_id(tx, sender_id),
                peer_type=peer[0],
                peer_id=peer[1],
                from_id=sender_id,
                out=True,
                date=now,
                shared_id=shared_id,
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
            )
            upd = types.UpdateNewMessage(message=self.render(rec), pts=0, pts_count=1)
            rec.pts = await self.sync.append(tx, sender_id, upd)
            await self._insert(tx, rec)
            await self.dialogs.on_message(tx, sender_id, peer, rec.id, now, incoming=False)
            sender_updates.append(upd)
            sent.append(Sent(rec, rec.pts))
            for n, recipient in enumerate(recipients, 1):
                await self._copy_in(
                    tx, rec, recipient, recipient_peer, reply_shared, now, recipient_updates
                )
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a big group: let the loop breathe
        if sender_updates:
            self.sync.push_later(
                tx,
                sender_id,
                _updates(sender_updates, views.get(sender_id), self._chats_view(peer, sender_id)),
                exclude_key,
            )
        for recipient, updates in recipient_updates.items():
            self.sync.push_later(
                tx,
                recipient,
                _updates(updates, views.get(recipient), self._chats_view(peer, recipient)),
            )
        return sent

    def _chats_view(self, peer: PeerKey, viewer: int) -> list[Any]:
        if peer[0] == PEER_CHAT and self.chat_view is not None:
            return [self.chat_view(peer[1], viewer)]
        return []

    async def _copy_in(
        self,
        tx: Tx,
        rec: MessageRecord,
        recipient: int,
        recipient_peer: PeerKey,
        reply_shared: int | None,
        now: int,
        out: dict[int, list[Any]],
    ) -> None:
        """The recipient's copy of a message just stored in the sender's box."""
        copy = replace(
            rec,
            user_id=recipient,
            id=await self._next_id(tx, recipient),
            peer_type=recipient_peer[0],
            peer_id=recipient_peer[1],
            out=False,
            random_id=None,
            reply_to_id=None,
        )
        if reply_shared is not None:
            row = (
                await tx.conn.execute(
                    sa.select(messages.c.id).where(
                        messages.c.user_id == recipient, messages.c.shared_id == reply_shared
                    )
                )
            ).first()
            copy.reply_to_id = row.id if row else None
        upd = types.UpdateNewMessage(message=self.render(copy), pts=0, pts_count=1)
        copy.pts = await self.sync.append(tx, recipient, upd)
        await self._insert(tx, copy)
        await self.dialogs.on_message(tx, recipient, recipient_peer, copy.id, now, True)
        out.setdefault(recipient, []).append(upd)

    # ------------------------------------------------------------------ edit
    async def edit(
        self,
        user_id: int,
        peer: PeerKey,
        msg_id: int,
        text: str | None,
        entities: bytes | None,
        views: Views,
        exclude_key: int | None,
        flags_set: int = 0,
    ) -> tuple[MessageRecord, Any]:
        """Change the text of an own message in every box; returns (record, its update)."""

        async def op(tx: Tx) -> tuple[MessageRecord, Any]:
            rec = await self._get_in(tx, user_id, msg_id)
            if rec is None or rec.peer != peer or rec.action is not None:
                raise RpcError(400, "MESSAGE_ID_INVALID")
            saved = peer == (PEER_USER, user_id)
            if not rec.out and not saved:
                raise RpcError(403, "MESSAGE_AUTHOR_REQUIRED")
            now = int(time.time())
            if not saved and now - rec.date > EDIT_TIME_LIMIT:
                raise RpcError(400, "MESSAGE_EDIT_TIME_EXPIRED")
            new_text = rec.text if text is None else text
            new_entities = rec.entities if text is None and entities is None else entities
            if new_text == rec.text and new_entities == rec.entities:
                raise RpcError(400, "MESSAGE_NOT_MODIFIED")
            flags_url = FLAG_HAS_URL if flags_set & FLAG_HAS_URL else 0
            mine: Any = None
            for copy in [rec, *await self._copies_in(tx, [rec.shared_id], exclude_user=user_id)]:
                copy.text = new_text
                copy.entities = new_entities
                copy.edit_date = now
                copy.flags = (copy.flags & ~FLAG_HAS_URL) | flags_url
                await tx.conn.execute(
                    messages.update()
                    .where(messages.c.user_id == copy.user_id, messages.c.id == copy.id)
                    .values(
                        text=copy.text,
                        entities=copy.entities,
                        edit_date=now,
                        flags=copy.flags,
                    )
                )
                reactions = await self._reactions_in(tx, copy.user_id, [copy])
                upd = types.UpdateEditMessage(
                    message=self.render(copy, reactions.get(copy.shared_id)), pts=0, pts_count=1
                )
                await self.sync.append(tx, copy.user_id, upd)
                self.sync.push_later(
                    tx,
                    copy.user_id,
                    _updates([upd], views.get(copy.user_id)),
                    exclude_key if copy.user_id == user_id else None,
                )
                if copy.user_id == user_id:
                    mine = upd
            return rec, mine

        return await self.writer.run(op, await self._users_of(user_id, peer))

    # ---------------------------------------------------------------- delete
    async def delete(
        self, user_id: int, ids: list[int], revoke: bool, exclude_key: int | None
    ) -> Affected:
        """Delete messages of the user's box (and, with ``revoke``, their other copies)."""

        async def op(tx: Tx) -> Affected:
            own = await self._many_in(tx, user_id, ids)
            if not own:
                return Affected(await self.sync.current_pts(tx, user_id), 0)
            victims = list(own)
            if revoke:
                shared = [r.shared_id for r in own if self._may_revoke(user_id, r)]
                victims += await self._copies_in(tx, shared, exclude_user=user_id)
            return await self._delete_in(tx, user_id, victims, exclude_key)

        if revoke:
            locks = await self._users_of_messages(user_id, ids)
        else:
            locks = await self._users_of(user_id)
        return await self.writer.run(op, locks)

    def _may_revoke(self, user_id: int, rec: MessageRecord) -> bool:
        """Deleting for everyone: any message of a private chat (Telegram allows it),
        in a group one's own messages, or anyone's for its admins; otherwise the
        message goes from the caller's box only."""
        if rec.peer_type != PEER_CHAT or rec.from_id == user_id:
            return True
        return self.chat_is_admin is not None and self.chat_is_admin(rec.peer_id, user_id)

    async def _delete_in(
        self, tx: Tx, user_id: int, victims: list[MessageRecord], exclude_key: int | None
    ) -> Affected:
        by_owner: dict[int, list[MessageRecord]] = {}
        for r in victims:
            by_owner.setdefault(r.user_id, []).append(r)
        result = Affected(await self.sync.current_pts(tx, user_id), 0)
        for owner, recs in by_owner.items():
            ids = sorted(r.id for r in recs)
            for part in _chunks(ids):
                await tx.conn.execute(
                    messages.delete().where(messages.c.user_id == owner, messages.c.id.in_(part))
                )
            for peer in {r.peer for r in recs}:
                await self._refresh_top(tx, owner, peer)
            upd = types.UpdateDeleteMessages(messages=ids, pts=0, pts_count=len(ids))
            pts = await self.sync.append(tx, owner, upd, pts_count=len(ids))
            self.sync.push_later(
                tx, owner, _updates([upd]), exclude_key if owner == user_id else None
            )
            if owner == user_id:
                result = Affected(pts, len(ids), [upd])
        return result

    async def delete_history(
        self,
        user_id: int,
        peer: PeerKey,
        max_id: int,
        revoke: bool,
        just_clear: bool,
        exclude_key: int | None,
    ) -> Affected:
        async def op(tx: Tx) -> Affected:
            await tx.flush()
            m = messages
            q = (
                sa.select(m)
                .where(m.c.user_id == user_id, m.c.peer_type == peer[0], m.c.peer_id == peer[1])
                .order_by(m.c.id.desc())
                .limit(DELETE_HISTORY_CHUNK + 1)
            )
            if max_id:
                q = q.where(m.c.id <= max_id)
            own = [record_from_row(r) for r in await tx.conn.execute(q)]
            more = len(own) > DELETE_HISTORY_CHUNK
            own = own[:DELETE_HISTORY_CHUNK]
            if not own:
                result = Affected(await self.sync.current_pts(tx, user_id), 0)
            else:
                victims = list(own)
                if revoke and peer != (PEER_USER, user_id):
                    victims += await self._copies_in(
                        tx, [r.shared_id for r in own], exclude_user=user_id
                    )
                result = await self._delete_in(tx, user_id, victims, exclude_key)
            if not more and not just_clear:
                d = await self.dialogs.get_in(tx, user_id, peer)
                if d is not None and d.top_message == 0:
                    await self.dialogs.delete_in(tx, user_id, peer)
            result.more = more
            return result

        return await self.writer.run(op, await self._users_of(user_id, peer if revoke else None))

    # ------------------------------------------------------------------ read
    async def read_history(
        self, user_id: int, peer: PeerKey, max_id: int, exclude_key: int | None
    ) -> Affected:
        """Mark incoming messages up to ``max_id`` read; the sender's side learns of it."""

        async def op(tx: Tx) -> Affected:
            d = await self.dialogs.get_in(tx, user_id, peer)
            if d is None or d.top_message == 0:
                return Affected(await self.sync.current_pts(tx, user_id), 0)
            upto = d.top_message if max_id <= 0 else min(max_id, d.top_message)
            if upto <= d.read_inbox_max_id:
                if d.unread_mark:
                    await self._mark_unread_in(tx, user_id, peer, False, exclude_key)
                return Affected(await self.sync.current_pts(tx, user_id), 0)
            m = messages
            in_dialog = sa.and_(
                m.c.user_id == user_id, m.c.peer_type == peer[0], m.c.peer_id == peer[1]
            )
            unread = (
                await tx.conn.execute(
                    sa.select(sa.func.count())
                    .select_from(m)
                    .where(in_dialog, m.c.out == sa.false(), m.c.id > upto)
                )
            ).scalar_one()
            await self.dialogs.update_in(
                tx, user_id, peer, read_inbox_max_id=upto, unread_count=unread, unread_mark=False
            )
            upd = types.UpdateReadHistoryInbox(
                peer=peer_tl(*peer), max_id=upto, still_unread_count=unread, pts=0, pts_count=1
            )
            pts = await self.sync.append(tx, user_id, upd)
            self.sync.push_later(tx, user_id, _updates([upd]), exclude_key)
            if peer != (PEER_USER, user_id):
                await self._receipt_in(tx, user_id, peer, in_dialog, upto)
            return Affected(pts, 1, [upd])

        return await self.writer.run(op, await self._read_locks(user_id, peer, max_id))

    async def _read_locks(self, user_id: int, peer: PeerKey, max_id: int) -> list[tuple[str, int]]:
        """The reader, and who gets the receipt: the other user of a private chat,
        the sender of the last message read in a group (looked up ahead: a guess,
        locked late if it changed meanwhile)."""
        if not self.shared or peer[0] != PEER_CHAT:
            return await self._users_of(user_id, peer)
        m = messages
        q = (
            sa.select(m.c.from_id)
            .where(
                m.c.user_id == user_id,
                m.c.peer_type == peer[0],
                m.c.peer_id == peer[1],
                m.c.out == sa.false(),
            )
            .order_by(m.c.id.desc())
            .limit(1)
        )
        if max_id > 0:
            q = q.where(m.c.id <= max_id)
        async with self.engine.connect() as conn:
            sender = (await conn.execute(q)).scalar()
        return [(USER_LOCK, u) for u in {user_id, sender or user_id}]

    async def _receipt_in(
        self, tx: Tx, reader: int, peer: PeerKey, in_dialog: Any, upto: int
    ) -> None:
        """The sender of the last message read learns it (updateReadHistoryOutbox): the
        other user in a private chat, whoever wrote it in a group."""
        m = messages
        last = (
            await tx.conn.execute(
                sa.select(m.c.shared_id, m.c.from_id)
                .where(in_dialog, m.c.out == sa.false(), m.c.id <= upto)
                .order_by(m.c.id.desc())
                .limit(1)
            )
        ).first()
        if last is None:
            return
        sender = last.from_id
        theirs = (
            await tx.conn.execute(
                sa.select(m.c.id).where(m.c.user_id == sender, m.c.shared_id == last.shared_id)
            )
        ).first()
        if theirs is None:
            return
        their_peer = (PEER_USER, reader) if peer[0] == PEER_USER else peer
        d = await self.dialogs.get_in(tx, sender, their_peer)
        if d is None or theirs.id <= d.read_outbox_max_id:
            return
        await self.dialogs.update_in(tx, sender, their_peer, read_outbox_max_id=theirs.id)
        upd = types.UpdateReadHistoryOutbox(
            peer=peer_tl(*their_peer), max_id=theirs.id, pts=0, pts_count=1
        )
        await self.sync.append(tx, sender, upd)
        self.sync.push_later(tx, sender, _updates([upd]))

    # ------------------------------------------------------------------- pin
    async def set_pinned(
        self,
        user_id: int,
        peer: PeerKey,
        msg_id: int,
        unpin: bool,
        one_side: bool,
        silent: bool,
        views: Views,
        exclude_key: int | None,
    ) -> list[Any]:
        """Pin or unpin a message (for both sides unless ``one_side``); the caller's updates."""

        async def op(tx: Tx) -> list[Any]:
            rec = await self._get_in(tx, user_id, msg_id)
            if rec is None or rec.peer != peer:
                raise RpcError(400, "MESSAGE_ID_INVALID")
            copies = [rec]
            if not one_side and peer != (PEER_USER, user_id):
                copies += await self._copies_in(tx, [rec.shared_id], exclude_user=user_id)
            mine: list[Any] = []
            for copy in copies:
                flags = copy.flags & ~FLAG_PINNED if unpin else copy.flags | FLAG_PINNED
                if flags == copy.flags:
                    continue
                await tx.conn.execute(
                    messages.update()
                    .where(messages.c.user_id == copy.user_id, messages.c.id == copy.id)
                    .values(flags=flags)
                )
                upd = types.UpdatePinnedMessages(
                    peer=peer_tl(*copy.peer),
                    messages=[copy.id],
                    pts=0,
                    pts_count=1,
                    pinned=not unpin,
                )
                await self.sync.append(tx, copy.user_id, upd)
                self.sync.push_later(
                    tx,
                    copy.user_id,
                    _updates([upd]),
                    exclude_key if copy.user_id == user_id else None,
                )
                if copy.user_id == user_id:
                    mine.append(upd)
            if not unpin and mine:
                action = types.MessageActionPinMessage().to_bytes()
                sent = await self._send_in(
                    tx,
                    user_id,
                    peer,
                    [NewMessage(action=action, reply_to_id=msg_id, flags=1 if silent else 0)],
                    views if not one_side else {user_id: list(views.get(user_id, ()))},
                    exclude_key,
                    deliver_to_peer=not one_side,
                )
                mine.append(
                    types.UpdateNewMessage(
                        message=self.render(sent[0].record), pts=sent[0].pts, pts_count=1
                    )
                )
            return mine

        return await self.writer.run(op, await self._users_of(user_id, None if one_side else peer))

    # ------------------------------------------------------------- reactions
    async def react(
        self,
        user_id: int,
        peer: PeerKey,
        msg_id: int,
        emoticons: list[str],
        exclude_key: int | None,
    ) -> Any:
        """Set the user's reactions on a message (all copies); returns the caller's update."""

        async def op(tx: Tx) -> Any:
            rec = await self._get_in(tx, user_id, msg_id)
            if rec is None or rec.peer != peer:
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
            copies = [rec, *await self._copies_in(tx, [rec.shared_id], exclude_user=user_id)]
            mine: Any = None
            for copy in copies:
                if not copy.flags & FLAG_REACTIONS:
                    copy.flags |= FLAG_REACTIONS
                    await tx.conn.execute(
                        messages.update()
                        .where(messages.c.user_id == copy.user_id, messages.c.id == copy.id)
                        .values(flags=copy.flags)
                    )
                reactions = (await self._reactions_in(tx, copy.user_id, [copy])).get(
                    copy.shared_id
                ) or types.MessageReactions(results=[], can_see_list=True, recent_reactions=[])
                upd = types.UpdateMessageReactions(
                    peer=peer_tl(*copy.peer), msg_id=copy.id, reactions=reactions
                )
                await self.sync.append(tx, copy.user_id, upd, pts_count=0)
                self.sync.push_later(
                    tx,
                    copy.user_id,
                    _updates([upd]),
                    exclude_key if copy.user_id == user_id else None,
                )
                if copy.user_id == user_id:
                    mine = upd
            return mine

        return await self.writer.run(op, await self._users_of(user_id, peer))

    async def _reactions_in(
        self, tx: Tx, viewer: int, recs: list[MessageRecord]
    ) -> dict[int, TLObject]:
        return await _reactions(tx.conn, viewer, recs)

    # ---------------------------------------------------------------- dialogs
    async def save_draft(
        self, user_id: int, peer: PeerKey, draft: TLObject | None, exclude_key: int | None
    ) -> None:
        async def op(tx: Tx) -> None:
            await self._set_draft_in(tx, user_id, peer, draft, exclude_key)

        await self.writer.run(op, await self._users_of(user_id))

    async def _set_draft_in(
        self,
        tx: Tx,
        user_id: int,
        peer: PeerKey,
        draft: TLObject | None,
        exclude_key: int | None,
        only_if_set: bool = False,
    ) -> None:
        if only_if_set:
            d = await self.dialogs.get_in(tx, user_id, peer)
            if d is None or d.draft is None:
                return
        await self.dialogs.ensure_in(
            tx, user_id, peer, draft=draft.to_bytes() if draft is not None else None
        )
        upd = types.UpdateDraftMessage(
            peer=peer_tl(*peer), draft=draft if draft is not None else types.DraftMessageEmpty()
        )
        await self.sync.append(tx, user_id, upd, pts_count=0)
        self.sync.push_later(tx, user_id, _updates([upd]), exclude_key)

    async def clear_all_drafts(self, user_id: int, exclude_key: int | None) -> None:
        async def op(tx: Tx) -> None:
            for d in await self.dialogs.with_drafts(user_id):
                await self._set_draft_in(tx, user_id, d.peer, None, exclude_key)

        await self.writer.run(op, await self._users_of(user_id))

    async def toggle_dialog_pin(
        self, user_id: int, peer: PeerKey, pinned: bool, exclude_key: int | None
    ) -> None:
        async def op(tx: Tx) -> None:
            d = await self.dialogs.get_in(tx, user_id, peer)
            if bool(d and d.pinned) == pinned:
                return
            current = [p for p in await self.dialogs.pinned_in(tx, user_id) if p.peer != peer]
            if pinned and len(current) >= PINNED_MAX:
                raise RpcError(400, "PINNED_DIALOGS_TOO_MUCH")
            order = [peer, *(p.peer for p in current)] if pinned else [p.peer for p in current]
            await self._write_pins(tx, user_id, order, unpin=[] if pinned else [peer])
            upd = types.UpdateDialogPinned(peer=_dialog_peer(peer), pinned=pinned)
            await self.sync.append(tx, user_id, upd, pts_count=0)
            self.sync.push_later(tx, user_id, _updates([upd]), exclude_key)

        await self.writer.run(op, await self._users_of(user_id))

    async def reorder_pins(
        self, user_id: int, order: list[PeerKey], force: bool, exclude_key: int | None
    ) -> None:
        async def op(tx: Tx) -> None:
            current = [p.peer for p in await self.dialogs.pinned_in(tx, user_id)]
            wanted = list(dict.fromkeys(order))
            if len(wanted) > PINNED_MAX:
                raise RpcError(400, "PINNED_DIALOGS_TOO_MUCH")
            if not force:
                wanted = [p for p in wanted if p in current] + [
                    p for p in current if p not in wanted
                ]
            unpin = [p for p in current if p not in wanted]
            await self._write_pins(tx, user_id, wanted, unpin)
            upd = types.UpdatePinnedDialogs(order=[_dialog_peer(p) for p in wanted])
            await self.sync.append(tx, user_id, upd, pts_count=0)
            self.sync.push_later(tx, user_id, _updates([upd]), exclude_key)

        await self.writer.run(op, await self._users_of(user_id))

    async def _write_pins(
        self, tx: Tx, user_id: int, order: list[PeerKey], unpin: list[PeerKey]
    ) -> None:
        for pos, p in enumerate(order, start=1):
            await self.dialogs.ensure_in(tx, user_id, p, pinned=pos)
        for p in unpin:
            await self.dialogs.update_in(tx, user_id, p, pinned=0)

    async def mark_unread(
        self, user_id: int, peer: PeerKey, unread: bool, exclude_key: int | None
    ) -> None:
        async def op(tx: Tx) -> None:
            await self._mark_unread_in(tx, user_id, peer, unread, exclude_key)

        await self.writer.run(op, await self._users_of(user_id))

    async def _mark_unread_in(
        self, tx: Tx, user_id: int, peer: PeerKey, unread: bool, exclude_key: int | None
    ) -> None:
        if not await self.dialogs.update_in(tx, user_id, peer, unread_mark=unread):
            raise RpcError(400, "PEER_ID_INVALID")
        upd = types.UpdateDialogUnreadMark(peer=_dialog_peer(peer), unread=unread)
        await self.sync.append(tx, user_id, upd, pts_count=0)
        self.sync.push_later(tx, user_id, _updates([upd]), exclude_key)

    # ------------------------------------------------------------------ reads
    async def get(self, user_id: int, ids: list[int]) -> dict[int, MessageRecord]:
        out: dict[int, MessageRecord] = {}
        async with self.engine.connect() as conn:
            for part in _chunks(sorted(set(ids))):
                rows = await conn.execute(
                    sa.select(messages).where(
                        messages.c.user_id == user_id, messages.c.id.in_(part)
                    )
                )
                for r in rows:
                    out[r.id] = record_from_row(r)
        return out

    async def history(
        self,
        user_id: int,
        peer: PeerKey | None,
        *,
        offset_id: int = 0,
        offset_date: int = 0,
        add_offset: int = 0,
        limit: int = 100,
        max_id: int = 0,
        min_id: int = 0,
        where: list[Any] | None = None,
    ) -> tuple[list[MessageRecord], int]:
        """A page of the box, newest first, with Telegram's offset rules; and the total.

        ``peer`` None: the whole box (global search). ``where``: extra filters (search).
        Messages "before" the offset have ids below ``offset_id`` (dates below
        ``offset_date``); a negative ``add_offset`` starts that many messages after it.
        """
        m = messages
        base = [m.c.user_id == user_id, *(where or ())]
        if peer is not None:
            base += [m.c.peer_type == peer[0], m.c.peer_id == peer[1]]
        async with self.engine.connect() as conn:
            page, total = await history_page(
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
        return [record_from_row(r) for r in page], int(total)

    async def views(self, viewer: int, recs: list[MessageRecord]) -> list[TLObject]:
        """The Message objects of the viewer's own copies (with reactions)."""
        reactions: dict[int, TLObject] = {}
        if any(r.flags & FLAG_REACTIONS for r in recs):
            async with self.engine.connect() as conn:
                reactions = await _reactions(conn, viewer, recs)
        return [self.render(r, reactions.get(r.shared_id)) for r in recs]

    def render(self, rec: MessageRecord, reactions: TLObject | None = None) -> TLObject:
        """A copy as its owner sees it now (fresh file references on its media)."""
        return rec.to_tl(reactions, self.media_hook)

    async def has_media(self, user_id: int, media_id: int) -> bool:
        """Whether the user's box holds a message with this photo or document."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(messages.c.id)
                    .where(messages.c.user_id == user_id, messages.c.media_id == media_id)
                    .limit(1)
                )
            ).first()
        return row is not None


async def _reactions(conn: Any, viewer: int, recs: Sequence[Any]) -> dict[int, TLObject]:
    """``MessageReactions`` per shared id, as ``viewer`` sees them (``chosen_order`` is theirs)."""
    wanted = [r.shared_id for r in recs if r.flags & FLAG_REACTIONS]
    if not wanted:
        return {}
    t = message_reactions
    rows: list[Any] = []
    for part in _chunks(sorted(set(wanted))):
        rows.extend(
            await conn.execute(
                sa.select(t).where(t.c.shared_id.in_(part)).order_by(t.c.date, t.c.user_id)
            )
        )
    grouped: dict[int, list[Any]] = {}
    for r in rows:
        grouped.setdefault(r.shared_id, []).append(r)
    out: dict[int, TLObject] = {}
    for shared_id, rs in grouped.items():
        counts: dict[str, int] = {}
        mine: list[str] = []
        for r in rs:
            counts[r.emoticon] = counts.get(r.emoticon, 0) + 1
            if r.user_id == viewer:
                mine.append(r.emoticon)
        out[shared_id] = types.MessageReactions(
            results=[
                types.ReactionCount(
                    reaction=types.ReactionEmoji(emoticon=e),
                    count=n,
                    chosen_order=mine.index(e) if e in mine else None,
                )
                for e, n in counts.items()
            ],
            can_see_list=True,
            recent_reactions=[
                types.MessagePeerReaction(
                    peer_id=types.PeerUser(user_id=r.user_id),
                    date=r.date,
                    reaction=types.ReactionEmoji(emoticon=r.emoticon),
                    my=r.user_id == viewer,
                )
                for r in rs
            ],
        )
    return out
