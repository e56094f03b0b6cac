"""biz/chat: basic groups (Telegram's "chats"): members, title, and the Chat each member sees.

A basic group keeps its messages in every member's own box (msg fans each one
out, as Telegram does for groups of up to 200 members); this service only knows
who is in the group and what it is called. ``version`` grows with every change
of the member list, as in ``chatParticipants.version``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.infra.invalidation import (
    CacheTopic,
    Invalidations,
    Key,
    LocalInvalidations,
    drop_keys,
)
from teamgram.service.biz.peer_ids import new_peer_id
from teamgram.service.biz.peers import PEER_CHAT
from teamgram.service.biz.tables import chat_invites, chat_participants, chats
from teamgram.tl import decode, types

# Cache invalidation topic (split mode): ids of chats whose record changed.
TOPIC_CHATS = "chats"

# Telegram's limits for basic groups.
CHAT_MEMBERS_MAX = 200
TITLE_MAX = 128


@dataclass(slots=True)
class Member:
    user_id: int
    inviter_id: int
    date: int
    admin: bool = False


@dataclass(slots=True)
class ChatRecord:
    id: int
    title: str
    creator_id: int
    date: int
    version: int
    members: dict[int, Member] = field(default_factory=dict)
    deactivated: bool = False
    photo_id: int | None = None
    photo_stripped: bytes | None = None
    banned_rights: Any = None  # ChatBannedRights for members who are not admins
    dc_id: int = 2
    migrated_to: int | None = None  # the supergroup it became
    # (viewer, channel) -> access hash, for ``migrated_to`` (biz/channel's).
    channel_hash: Callable[[int, int], int] | None = None

    def is_admin(self, user_id: int) -> bool:
        m = self.members.get(user_id)
        return user_id == self.creator_id or (m is not None and m.admin)

    def photo_tl(self) -> Any:
        if self.photo_id is None:
            return types.ChatPhotoEmpty()
        return types.ChatPhoto(
            photo_id=self.photo_id, dc_id=self.dc_id, stripped_thumb=self.photo_stripped
        )

    def default_rights(self) -> Any:
        return self.banned_rights or types.ChatBannedRights(until_date=2147483647)

    def chat_for(self, viewer_id: int) -> Any:
        """The Chat a user sees: ``chatForbidden`` once they are no longer a member."""
        if viewer_id not in self.members:
            return types.ChatForbidden(id=self.id, title=self.title)
        member = self.members[viewer_id]
        migrated: Any = None
        if self.migrated_to is not None and self.channel_hash is not None:
            migrated = types.InputChannel(
                channel_id=self.migrated_to,
                access_hash=self.channel_hash(viewer_id, self.migrated_to),
            )
        return types.Chat(
            migrated_to=migrated,
            id=self.id,
            title=self.title,
            photo=self.photo_tl(),
            participants_count=len(self.members),
            date=self.date,
            version=self.version,
            creator=viewer_id == self.creator_id,
            deactivated=self.deactivated,
            admin_rights=_admin_rights() if member.admin or viewer_id == self.creator_id else None,
            default_banned_rights=self.default_rights(),
        )

    def participants(self) -> types.ChatParticipants:
        out: list[Any] = []
        for m in sorted(self.members.values(), key=lambda m: (m.date, m.user_id)):
            if m.user_id == self.creator_id:
                out.append(types.ChatParticipantCreator(user_id=m.user_id))
            elif m.admin:
                out.append(
                    types.ChatParticipantAdmin(
                        user_id=m.user_id, inviter_id=m.inviter_id, date=m.date
                    )
                )
            else:
                out.append(
                    types.ChatParticipant(user_id=m.user_id, inviter_id=m.inviter_id, date=m.date)
                )
        return types.ChatParticipants(chat_id=self.id, participants=out, version=self.version)


def _admin_rights() -> types.ChatAdminRights:
    return types.ChatAdminRights(
        change_info=True,
        delete_messages=True,
        ban_users=True,
        invite_users=True,
        pin_messages=True,
        add_admins=True,
        manage_call=True,
        other=True,
    )


def check_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise RpcError(400, "CHAT_TITLE_EMPTY")
    return title[:TITLE_MAX]  # Telegram keeps the first 128 characters


class ChatService:
    def __init__(self, engine: AsyncEngine, dc_id: int = 2) -> None:
        self.engine = engine
        self.dc_id = dc_id
        self._cache: dict[int, ChatRecord] = {}
        self.channel_hash: Callable[[int, int], int] | None = None
        # Other processes' changes drop cached records (split mode; see use_invalidations).
        self.invalidations: Invalidations = LocalInvalidations()
        self._records = CacheTopic(TOPIC_CHATS, self._drop_records)

    def use_invalidations(self, invalidations: Invalidations) -> None:
        """Publish this process's changes there, and drop what other processes change."""
        self.invalidations = invalidations
        self._records.attach(invalidations)

    def _drop_records(self, ids: list[Key] | None) -> None:
        drop_keys(self._cache, ids)

    async def create(self, creator_id: int, title: str, member_ids: list[int]) -> ChatRecord:
        title = check_title(title)
        ids = [u for u in dict.fromkeys(member_ids) if u != creator_id]
        if len(ids) + 1 > CHAT_MEMBERS_MAX:
            raise RpcError(400, "USERS_TOO_MUCH")
        now = int(time.time())
        rec = ChatRecord(
            id=new_peer_id(),
            title=title,
            creator_id=creator_id,
            date=now,
            version=1,
            dc_id=self.dc_id,
            channel_hash=self.channel_hash,
        )
        rec.members[creator_id] = Member(creator_id, creator_id, now, admin=True)
        for u in ids:
            rec.members[u] = Member(u, creator_id, now)
        async with self.engine.begin() as conn:
            await conn.execute(
                chats.insert().values(
                    id=rec.id, title=title, creator_id=creator_id, date=now, version=1
                )
            )
            await conn.execute(
                chat_participants.insert(),
                [
                    {
                        "chat_id": rec.id,
                        "user_id": m.user_id,
                        "inviter_id": m.inviter_id,
                        "date": m.date,
                        "admin": m.admin,
                    }
                    for m in rec.members.values()
                ],
            )
        self._cache[rec.id] = rec
        return rec

    async def common(self, a: int, b: int, max_id: int = 0, limit: int = 100) -> list[ChatRecord]:
        """Groups both users are in, by id (``max_id``: only ids above it, Telegram's paging)."""
        p = chat_participants
        q = (
            sa.select(p.c.chat_id)
            .where(p.c.user_id.in_([a, b]))
            .group_by(p.c.chat_id)
            .having(sa.func.count() == 2)
            .order_by(p.c.chat_id)
            .limit(limit)
        )
        if max_id:
            q = q.where(p.c.chat_id > max_id)
        async with self.engine.connect() as conn:
            ids = [r.chat_id for r in await conn.execute(q)]
        return await self.get_many(ids)

    def cached(self, chat_id: int) -> ChatRecord | None:
        return self._cache.get(chat_id)

    async def get(self, chat_id: int) -> ChatRecord | None:
        rec = self._cache.get(chat_id)
        if rec is not None:
            return rec
        token = self._records.token()
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(chats).where(chats.c.id == chat_id))).first()
            if row is None:
                return None
            rec = ChatRecord(
                id=row.id,
                title=row.title,
                creator_id=row.creator_id,
                date=row.date,
                version=row.version,
                deactivated=bool(row.deactivated),
                photo_id=row.photo_id,
                photo_stripped=row.photo_stripped,
                banned_rights=decode(row.banned_rights) if row.banned_rights else None,
                dc_id=self.dc_id,
                migrated_to=row.migrated_to,
                channel_hash=self.channel_hash,
            )
            members = await conn.execute(
                sa.select(chat_participants).where(chat_participants.c.chat_id == chat_id)
            )
            for m in members:
                rec.members[m.user_id] = Member(m.user_id, m.inviter_id, m.date, bool(m.admin))
        if self._records.clean(token, [chat_id]):  # else a change raced the read
            self._cache[chat_id] = rec
        return rec

    async def get_many(self, ids: list[int]) -> list[ChatRecord]:
        out = []
        for i in dict.fromkeys(ids):
            rec = await self.get(i)
            if rec is not None:
                out.append(rec)
        return out

    async def member_chat(self, chat_id: int, user_id: int) -> ChatRecord:
        """The chat, if ``user_id`` is in it; CHAT_ID_INVALID otherwise."""
        rec = await self.get(chat_id)
        if rec is None or user_id not in rec.members:
            raise RpcError(400, "CHAT_ID_INVALID")
        return rec

    async def add_member(self, chat_id: int, user_id: int, inviter_id: int) -> ChatRecord:
        rec = await self.member_chat(chat_id, inviter_id)
        self.check_right(rec, inviter_id, "invite_users")
        if user_id in rec.members:
            raise RpcError(400, "USER_ALREADY_PARTICIPANT")
        if len(rec.members) >= CHAT_MEMBERS_MAX:
            raise RpcError(400, "USERS_TOO_MUCH")
        now = int(time.time())
        async with self.engine.begin() as conn:
            await conn.execute(
                chat_participants.insert().values(
                    chat_id=chat_id, user_id=user_id, inviter_id=inviter_id, date=now, admin=False
                )
            )
            await conn.execute(
                chats.update().where(chats.c.id == chat_id).values(version=chats.c.version + 1)
            )
        rec.members[user_id] = Member(user_id, inviter_id, now)
        rec.version += 1
        self._records.changed([chat_id])
        return rec

    async def remove_member(self, chat_id: int, user_id: int, by_id: int) -> ChatRecord:
        """Leave (by_id == user_id), or kick: only the creator, admins, or who invited them."""
        rec = await self.member_chat(chat_id, by_id)
        target = rec.members.get(user_id)
        if target is None:
            raise RpcError(400, "USER_NOT_PARTICIPANT")
        if by_id != user_id:
            actor = rec.members[by_id]
            if not (by_id == rec.creator_id or actor.admin or target.inviter_id == by_id):
                raise RpcError(400, "CHAT_ADMIN_REQUIRED")
            if user_id == rec.creator_id:
                raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        async with self.engine.begin() as conn:
            await conn.execute(
                chat_participants.delete().where(
                    chat_participants.c.chat_id == chat_id,
                    chat_participants.c.user_id == user_id,
                )
            )
            await conn.execute(
                chats.update().where(chats.c.id == chat_id).values(version=chats.c.version + 1)
            )
        del rec.members[user_id]
        rec.version += 1
        self._records.changed([chat_id])
        return rec

    async def set_title(self, chat_id: int, title: str, by_id: int) -> ChatRecord:
        rec = await self.member_chat(chat_id, by_id)
        self.check_right(rec, by_id, "change_info")
        title = check_title(title)
        if title == rec.title:
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        async with self.engine.begin() as conn:
            await conn.execute(chats.update().where(chats.c.id == chat_id).values(title=title))
        rec.title = title
        self._records.changed([chat_id])
        return rec

    async def _set(self, rec: ChatRecord, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(chats.update().where(chats.c.id == rec.id).values(**values))
        self._records.changed([rec.id])  # the caller updates rec at once, no await between

    async def set_admin(self, chat_id: int, user_id: int, is_admin: bool, by_id: int) -> ChatRecord:
        """Only the creator names admins (Telegram's rule for basic groups)."""
        rec = await self.member_chat(chat_id, by_id)
        if by_id != rec.creator_id:
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        member = rec.members.get(user_id)
        if member is None:
            raise RpcError(400, "USER_NOT_PARTICIPANT")
        if user_id == rec.creator_id or member.admin == is_admin:
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        async with self.engine.begin() as conn:
            await conn.execute(
                chat_participants.update()
                .where(
                    chat_participants.c.chat_id == chat_id, chat_participants.c.user_id == user_id
                )
                .values(admin=is_admin)
            )
            await conn.execute(
                chats.update().where(chats.c.id == chat_id).values(version=chats.c.version + 1)
            )
        member.admin = is_admin
        rec.version += 1
        self._records.changed([chat_id])
        return rec

    async def set_banned_rights(self, chat_id: int, rights: Any, by_id: int) -> ChatRecord:
        rec = await self.member_chat(chat_id, by_id)
        if not rec.is_admin(by_id):
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        if not isinstance(rights, types.ChatBannedRights):
            raise RpcError(400, "BANNED_RIGHTS_INVALID")
        rights.until_date = 2147483647  # defaults never expire
        if rec.banned_rights is not None and rec.banned_rights.to_bytes() == rights.to_bytes():
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        await self._set(rec, banned_rights=rights.to_bytes(), version=chats.c.version + 1)
        rec.banned_rights = rights
        rec.version += 1
        return rec

    async def set_photo(
        self, chat_id: int, photo_id: int | None, stripped: bytes | None, by_id: int
    ) -> ChatRecord:
        rec = await self.member_chat(chat_id, by_id)
        self.check_right(rec, by_id, "change_info")
        await self._set(rec, photo_id=photo_id, photo_stripped=stripped)
        rec.photo_id, rec.photo_stripped = photo_id, stripped
        return rec

    def check_right(self, rec: ChatRecord, user_id: int, right: str) -> None:
        """A member may do what the group's default rights do not take away (admins: all)."""
        if rec.is_admin(user_id):
            return
        if rec.banned_rights is not None and getattr(rec.banned_rights, right, False):
            if right.startswith("send"):
                raise RpcError(403, "CHAT_WRITE_FORBIDDEN")
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")

    # -------------------------------------------------------------- invites
    async def export_invite(
        self,
        chat_id: int,
        by_id: int,
        expire_date: int | None,
        usage_limit: int | None,
        title: str | None,
    ) -> Any:
        rec = await self.member_chat(chat_id, by_id)
        self.check_right(rec, by_id, "invite_users")
        return await self.store_invite(chat_id, PEER_CHAT, by_id, expire_date, usage_limit, title)

    async def store_invite(
        self,
        target_id: int,
        peer_type: int,
        by_id: int,
        expire_date: int | None,
        usage_limit: int | None,
        title: str | None,
    ) -> Any:
        """A new link to a basic group or (``peer_type`` 3) a channel; rights checked by
        the caller."""
        if usage_limit is not None and not 1 <= usage_limit <= 99999:
            raise RpcError(400, "USAGE_LIMIT_INVALID")
        now = int(time.time())
        if expire_date is not None and expire_date <= now:
            raise RpcError(400, "EXPIRE_DATE_INVALID")
        invite_hash = secrets.token_urlsafe(12)
        async with self.engine.begin() as conn:
            await conn.execute(
                chat_invites.insert().values(
                    hash=invite_hash,
                    chat_id=target_id,
                    peer_type=peer_type,
                    admin_id=by_id,
                    date=now,
                    expire_date=expire_date,
                    usage_limit=usage_limit,
                    usage=0,
                    revoked=False,
                    title=(title or None) and title[:255],
                )
            )
        return _invite_tl(
            invite_hash, by_id, now, expire_date, usage_limit, 0, False, title or None
        )

    async def invite_row(self, invite_hash: str) -> Any:
        """The stored link (any kind), usable or not; INVITE_HASH_INVALID when unknown."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(chat_invites).where(chat_invites.c.hash == invite_hash)
                )
            ).first()
        if row is None:
            raise RpcError(400, "INVITE_HASH_INVALID")
        return row

    @staticmethod
    def check_usable(row: Any) -> None:
        if (
            row.revoked
            or (row.expire_date is not None and row.expire_date <= time.time())
            or (row.usage_limit is not None and row.usage >= row.usage_limit)
        ):
            raise RpcError(400, "INVITE_HASH_EXPIRED")

    async def count_use(self, invite_hash: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                chat_invites.update()
                .where(chat_invites.c.hash == invite_hash)
                .values(usage=chat_invites.c.usage + 1)
            )

    async def invites_of(
        self, target_id: int, peer_type: int, admin_id: int, revoked: bool, limit: int
    ) -> list[Any]:
        t = chat_invites
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(t)
                .where(
                    t.c.chat_id == target_id,
                    t.c.peer_type == peer_type,
                    t.c.admin_id == admin_id,
                    t.c.revoked == revoked,
                )
                .order_by(t.c.date.desc(), t.c.hash)
                .limit(limit)
            )
            return list(rows)

    async def edit_invite(
        self,
        row: Any,
        revoke: bool,
        expire_date: int | None,
        usage_limit: int | None,
        title: str | None,
    ) -> Any:
        """Change or revoke a link; returns the row as it is now."""
        values: dict[str, Any] = {}
        if revoke:
            values["revoked"] = True
        if expire_date is not None:
            values["expire_date"] = expire_date or None
        if usage_limit is not None:
            if usage_limit and not 1 <= usage_limit <= 99999:
                raise RpcError(400, "USAGE_LIMIT_INVALID")
            values["usage_limit"] = usage_limit or None
        if title is not None:
            values["title"] = title[:255] or None
        if values:
            async with self.engine.begin() as conn:
                await conn.execute(
                    chat_invites.update().where(chat_invites.c.hash == row.hash).values(**values)
                )
        return await self.invite_row(row.hash)

    async def delete_invite(self, row: Any) -> None:
        if not row.revoked:
            raise RpcError(400, "INVITE_REVOKED_MISSING")
        async with self.engine.begin() as conn:
            await conn.execute(chat_invites.delete().where(chat_invites.c.hash == row.hash))

    def invite_tl(self, row: Any) -> Any:
        return _invite_tl(
            row.hash,
            row.admin_id,
            row.date,
            row.expire_date,
            row.usage_limit,
            row.usage,
            bool(row.revoked),
            row.title,
        )

    async def deactivate(self, chat_id: int, migrated_to: int) -> None:
        """messages.migrateChat: the group is read-only and points at its supergroup."""
        rec = await self.get(chat_id)
        if rec is None:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                chats.update()
                .where(chats.c.id == chat_id)
                .values(deactivated=True, migrated_to=migrated_to, version=chats.c.version + 1)
            )
        rec.deactivated = True
        rec.migrated_to = migrated_to
        rec.version += 1
        self._records.changed([chat_id])

    async def invite(
        self, invite_hash: str, member_id: int | None = None
    ) -> tuple[ChatRecord, Any]:
        """The group an invite link leads to; INVITE_HASH_INVALID / _EXPIRED otherwise.

        For ``member_id`` already in the group a used-up link still names it."""
        row = await self.invite_row(invite_hash)
        if row.peer_type != PEER_CHAT:
            raise RpcError(400, "INVITE_HASH_INVALID")
        if member_id is not None:
            known = await self.get(row.chat_id)
            if known is not None and member_id in known.members:
                return known, row
        self.check_usable(row)
        rec = await self.get(row.chat_id)
        if rec is None or rec.deactivated:
            raise RpcError(400, "INVITE_HASH_INVALID")
        return rec, row

    async def join_by_invite(self, invite_hash: str, user_id: int) -> tuple[ChatRecord, int]:
        """Join through a link; returns the group and who made the link."""
        rec, row = await self.invite(invite_hash)
        if user_id in rec.members:
            raise RpcError(400, "USER_ALREADY_PARTICIPANT")
        if len(rec.members) >= CHAT_MEMBERS_MAX:
            raise RpcError(400, "USERS_TOO_MUCH")
        now = int(time.time())
        async with self.engine.begin() as conn:
            await conn.execute(
                chat_participants.insert().values(
                    chat_id=rec.id, user_id=user_id, inviter_id=row.admin_id, date=now, admin=False
                )
            )
            await conn.execute(
                chats.update().where(chats.c.id == rec.id).values(version=chats.c.version + 1)
            )
            await conn.execute(
                chat_invites.update()
                .where(chat_invites.c.hash == invite_hash)
                .values(usage=chat_invites.c.usage + 1)
            )
        rec.members[user_id] = Member(user_id, row.admin_id, now)
        rec.version += 1
        self._records.changed([rec.id])
        return rec, row.admin_id


def _invite_tl(
    invite_hash: str,
    admin_id: int,
    date: int,
    expire_date: int | None,
    usage_limit: int | None,
    usage: int,
    revoked: bool,
    title: str | None,
) -> Any:
    return types.ChatInviteExported(
        link=f"https://t.me/+{invite_hash}",
        admin_id=admin_id,
        date=date,
        revoked=revoked,
        expire_date=expire_date,
        usage_limit=usage_limit,
        usage=usage or None,
        title=title,
    )
