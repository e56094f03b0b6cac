"""biz/chat: basic groups (Telegram's "chats"): members, title, and the Chat each member sees.

A basic group keeps its messages in every member's own box (msg fans each one
out, as Telegram does for groups of up to 200 members); this service only knows
who is in the group and what it is called. ``version`` grows with every change
of the member list, as in ``chatParticipants.version``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.service.biz.tables import chat_participants, chats
from teamgram.tl import types

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

    def chat_for(self, viewer_id: int) -> Any:
        """The Chat a user sees: ``chatForbidden`` once they are no longer a member."""
        if viewer_id not in self.members:
            return types.ChatForbidden(id=self.id, title=self.title)
        member = self.members[viewer_id]
        return types.Chat(
            id=self.id,
            title=self.title,
            photo=types.ChatPhotoEmpty(),
            participants_count=len(self.members),
            date=self.date,
            version=self.version,
            creator=viewer_id == self.creator_id,
            deactivated=self.deactivated,
            admin_rights=_admin_rights() if member.admin or viewer_id == self.creator_id else None,
            default_banned_rights=types.ChatBannedRights(until_date=2147483647),
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
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._cache: dict[int, ChatRecord] = {}

    async def create(self, creator_id: int, title: str, member_ids: list[int]) -> ChatRecord:
        title = check_title(title)
        ids = [u for u in dict.fromkeys(member_ids) if u != creator_id]
        if len(ids) + 1 > CHAT_MEMBERS_MAX:
            raise RpcError(400, "USERS_TOO_MUCH")
        now = int(time.time())
        rec = ChatRecord(
            id=secrets.randbelow(1 << 40) + 1,
            title=title,
            creator_id=creator_id,
            date=now,
            version=1,
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

    def cached(self, chat_id: int) -> ChatRecord | None:
        return self._cache.get(chat_id)

    async def get(self, chat_id: int) -> ChatRecord | None:
        rec = self._cache.get(chat_id)
        if rec is not None:
            return rec
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
            )
            members = await conn.execute(
                sa.select(chat_participants).where(chat_participants.c.chat_id == chat_id)
            )
            for m in members:
                rec.members[m.user_id] = Member(m.user_id, m.inviter_id, m.date, bool(m.admin))
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
                chats.update().where(chats.c.id == chat_id).values(version=rec.version + 1)
            )
        rec.members[user_id] = Member(user_id, inviter_id, now)
        rec.version += 1
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
                chats.update().where(chats.c.id == chat_id).values(version=rec.version + 1)
            )
        del rec.members[user_id]
        rec.version += 1
        return rec

    async def set_title(self, chat_id: int, title: str, by_id: int) -> ChatRecord:
        rec = await self.member_chat(chat_id, by_id)
        title = check_title(title)
        if title == rec.title:
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        async with self.engine.begin() as conn:
            await conn.execute(chats.update().where(chats.c.id == chat_id).values(title=title))
        rec.title = title
        return rec
