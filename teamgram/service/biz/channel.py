"""biz/channel: supergroups and broadcast channels: who is in them, with which rights.

A channel's messages are stored once, by msg, in the channel's own box with the
channel's own pts; this service keeps the rest: title, about, username, photo,
settings, and one participant row per member, admin, creator, restricted or
kicked user. Rights follow Telegram:

* the creator can do everything; admins what their ``ChatAdminRights`` say, and
  they may only hand out rights they hold themselves;
* members of a supergroup what the default banned rights and their own
  restrictions leave them; members of a broadcast channel only read;
* a kicked user (``view_messages`` banned) is no longer a member and, in a private
  channel, cannot read it (CHANNEL_PRIVATE).

Records are cached whole (members included) after the first read. In split mode
several processes write the same rows: each change is published after its commit,
and other processes drop their copies (``teamgram.infra.invalidation``, #9).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.infra.group_commit import Tx
from teamgram.infra.invalidation import (
    LOAD_TRIES,
    CacheTopic,
    Invalidations,
    Key,
    LocalInvalidations,
    drop_keys,
)
from teamgram.service.biz.chat import check_title
from teamgram.service.biz.peer_ids import new_peer_id
from teamgram.service.biz.tables import channel_admin_log, channel_participants, channels
from teamgram.service.biz.users import valid_username
from teamgram.tl import TLObject, decode, types

# Cache invalidation topics (split mode): ids of channels whose record changed, and
# ids of users whose channel memberships changed.
TOPIC_CHANNELS = "channels"
TOPIC_CHANNEL_MEMBERS = "channels.members"

ROLE_MEMBER = 0
ROLE_ADMIN = 1
ROLE_CREATOR = 2
ROLE_BANNED = 3  # kicked: banned from viewing messages, not a member

# Telegram's limits.
MEMBERS_MAX = 200_000
ADMINS_MAX = 50
ABOUT_MAX = 255
RANK_MAX = 16
SLOWMODE_VALUES = (0, 10, 30, 60, 300, 900, 3600)
FOREVER = 2147483647

# The rights that mean "may post" in a broadcast channel, and all of an owner's.
_ADMIN_FLAGS = (
    "change_info",
    "post_messages",
    "edit_messages",
    "delete_messages",
    "ban_users",
    "invite_users",
    "pin_messages",
    "add_admins",
    "anonymous",
    "manage_call",
    "other",
)


def full_admin_rights(broadcast: bool) -> types.ChatAdminRights:
    rights = types.ChatAdminRights(
        change_info=True,
        delete_messages=True,
        ban_users=True,
        invite_users=True,
        pin_messages=True,
        add_admins=True,
        manage_call=True,
        other=True,
    )
    if broadcast:
        rights.post_messages = True
        rights.edit_messages = True
    return rights


def _rights_set(rights: Any) -> set[str]:
    return {f for f in _ADMIN_FLAGS if rights is not None and getattr(rights, f, False)}


def _banned_set(rights: Any) -> set[str]:
    if rights is None:
        return set()
    return {
        f
        for f in rights.__slots__
        if f not in ("until_date",)
        and isinstance(getattr(rights, f, None), bool)
        and getattr(rights, f)
    }


# What sending a kind of content answers when the member may not.
_SEND_FORBIDDEN = {
    "send_media": "CHAT_SEND_MEDIA_FORBIDDEN",
    "send_photos": "CHAT_SEND_PHOTOS_FORBIDDEN",
    "send_stickers": "CHAT_SEND_STICKERS_FORBIDDEN",
    "send_gifs": "CHAT_SEND_GIFS_FORBIDDEN",
    "send_polls": "CHAT_SEND_POLL_FORBIDDEN",
}


@dataclass(slots=True)
class Participant:
    user_id: int
    role: int
    inviter_id: int
    date: int
    admin_rights: Any = None  # ChatAdminRights (admins)
    rank: str | None = None
    promoted_by: int | None = None
    banned_rights: Any = None  # ChatBannedRights (restricted members, kicked users)
    kicked_by: int | None = None

    @property
    def is_member(self) -> bool:
        return self.role != ROLE_BANNED

    def row(self, channel_id: int) -> dict[str, Any]:
        return {
            "channel_id": channel_id,
            "user_id": self.user_id,
            "role": self.role,
            "inviter_id": self.inviter_id,
            "date": self.date,
            "admin_rights": self.admin_rights.to_bytes() if self.admin_rights else None,
            "rank": self.rank,
            "promoted_by": self.promoted_by,
            "banned_rights": self.banned_rights.to_bytes() if self.banned_rights else None,
            "kicked_by": self.kicked_by,
        }

    def tl(self, viewer_id: int | None = None, broadcast: bool = False) -> TLObject:
        """The ChannelParticipant (``viewer_id``: self forms for the viewer's own row)."""
        if self.role == ROLE_CREATOR:
            return types.ChannelParticipantCreator(
                user_id=self.user_id,
                admin_rights=self.admin_rights or full_admin_rights(broadcast),
                rank=self.rank,
            )
        if self.role == ROLE_ADMIN:
            mine = self.user_id == viewer_id  # "self" and inviter_id share one flag
            return types.ChannelParticipantAdmin(
                user_id=self.user_id,
                promoted_by=self.promoted_by or self.inviter_id,
                date=self.date,
                admin_rights=self.admin_rights,
                rank=self.rank,
                inviter_id=self.inviter_id if mine else None,
                can_edit=False,
                **{"self": mine},
            )
        if self.banned_rights is not None:
            return types.ChannelParticipantBanned(
                peer=types.PeerUser(user_id=self.user_id),
                kicked_by=self.kicked_by or 0,
                date=self.date,
                banned_rights=self.banned_rights,
                left=self.role == ROLE_BANNED,
            )
        if self.user_id == viewer_id:
            return types.ChannelParticipantSelf(
                user_id=self.user_id, inviter_id=self.inviter_id, date=self.date
            )
        return types.ChannelParticipant(user_id=self.user_id, date=self.date)


@dataclass(slots=True)
class ChannelRecord:
    id: int
    title: str
    creator_id: int
    date: int
    broadcast: bool
    megagroup: bool
    about: str = ""
    username: str | None = None
    photo_id: int | None = None
    photo_stripped: bytes | None = None
    signatures: bool = False
    slowmode_seconds: int = 0
    banned_rights: Any = None  # default ChatBannedRights of a supergroup
    deleted: bool = False
    migrated_from_chat_id: int | None = None
    migrated_from_max_id: int | None = None
    dc_id: int = 2
    # Grows with every change in memory: views built from an older one are stale.
    version: int = 0
    participants: dict[int, Participant] = field(default_factory=dict)
    members: set[int] = field(default_factory=set)  # participants who are members

    # ------------------------------------------------------------ membership
    def is_member(self, user_id: int) -> bool:
        return user_id in self.members

    def is_admin(self, user_id: int) -> bool:
        p = self.participants.get(user_id)
        return p is not None and p.role in (ROLE_ADMIN, ROLE_CREATOR)

    def admin_rights_of(self, user_id: int) -> set[str]:
        p = self.participants.get(user_id)
        if p is None or p.role not in (ROLE_ADMIN, ROLE_CREATOR):
            return set()
        if p.role == ROLE_CREATOR:
            return set(_ADMIN_FLAGS)
        return _rights_set(p.admin_rights)

    def has_right(self, user_id: int, right: str) -> bool:
        return right in self.admin_rights_of(user_id)

    def restrictions_of(self, user_id: int) -> set[str]:
        """What a member may not do: the defaults and their own restrictions (admins: none)."""
        if self.is_admin(user_id):
            return set()
        out = _banned_set(self.default_rights()) if self.megagroup else set()
        p = self.participants.get(user_id)
        if p is not None:
            out |= _banned_set(p.banned_rights)
        return out

    def readable_by(self, user_id: int) -> bool:
        """Public channels can be read by anyone not kicked; private ones by members."""
        if self.deleted:
            return False
        p = self.participants.get(user_id)
        if p is not None and p.role == ROLE_BANNED:
            return False
        return self.username is not None or user_id in self.members

    def counts(self) -> tuple[int, int, int]:
        """(admins, kicked, restricted)."""
        admins = kicked = banned = 0
        for p in self.participants.values():
            if p.role in (ROLE_ADMIN, ROLE_CREATOR):
                admins += 1
            elif p.role == ROLE_BANNED:
                kicked += 1
            elif p.banned_rights is not None:
                banned += 1
        return admins, kicked, banned

    # ------------------------------------------------------------ TL views
    def photo_tl(self) -> Any:
        if self.photo_id is None:
            return types.ChatPhotoEmpty()
        return types.ChatPhoto(
            photo_id=self.photo_id, dc_id=self.dc_id, stripped_thumb=self.photo_stripped
        )

    def default_rights(self) -> Any:
        """A new supergroup's members may invite but not change its info or pin (until
        an admin allows it), as Telegram starts them."""
        return self.banned_rights or types.ChatBannedRights(
            until_date=FOREVER, change_info=True, pin_messages=True
        )

    def channel_for(self, viewer_id: int, access_hash: int) -> Any:
        """The Chat a user sees: ``channelForbidden`` when kicked, gone, or shut out."""
        p = self.participants.get(viewer_id)
        if (
            self.deleted
            or (p is not None and p.role == ROLE_BANNED)
            or not (self.username is not None or viewer_id in self.members)
        ):
            return types.ChannelForbidden(
                id=self.id,
                access_hash=access_hash,
                title=self.title,
                broadcast=self.broadcast,
                megagroup=self.megagroup,
            )
        member = p is not None and p.is_member
        admin: Any = None
        if p is not None and p.role == ROLE_CREATOR:
            admin = p.admin_rights or full_admin_rights(self.broadcast)
        elif p is not None and p.role == ROLE_ADMIN:
            admin = p.admin_rights
        return types.Channel(
            id=self.id,
            access_hash=access_hash,
            title=self.title,
            username=self.username,
            photo=self.photo_tl(),
            date=p.date if member and p is not None else self.date,
            creator=viewer_id == self.creator_id,
            left=not member,
            broadcast=self.broadcast,
            megagroup=self.megagroup,
            signatures=self.signatures,
            slowmode_enabled=self.slowmode_seconds > 0,
            admin_rights=admin,
            banned_rights=p.banned_rights if p is not None and member else None,
            default_banned_rights=self.default_rights() if self.megagroup else None,
            participants_count=len(self.members),
        )


class ChannelService:
    def __init__(self, engine: AsyncEngine, secret: bytes, dc_id: int = 2) -> None:
        self.engine = engine
        self.secret = secret
        self.dc_id = dc_id
        self._cache: dict[int, ChannelRecord] = {}
        self._by_user: dict[int, set[int]] = {}  # user -> channels they are a member of
        self._users_loaded: set[int] = set()
        # Usernames are one namespace with users' (the users service plugs in).
        self.username_taken_by_user: Callable[[str], Awaitable[bool]] | None = None
        # Other processes' changes drop cached records (split mode; see use_invalidations).
        self.invalidations: Invalidations = LocalInvalidations()
        self._records = CacheTopic(TOPIC_CHANNELS, self._drop_records)
        self._memberships = CacheTopic(TOPIC_CHANNEL_MEMBERS, self._drop_memberships)
        # A loaded record's first version: above any version an earlier copy of the
        # same channel reached, so views cached from that copy are not taken for its.
        self._loads = itertools.count(1)

    def use_invalidations(self, invalidations: Invalidations) -> None:
        """Publish this process's changes there, and drop what other processes change."""
        self.invalidations = invalidations
        self._records.attach(invalidations)
        self._memberships.attach(invalidations)

    def _drop_records(self, ids: list[Key] | None) -> None:
        drop_keys(self._cache, ids)

    def _drop_memberships(self, user_ids: list[Key] | None) -> None:
        if user_ids is None:
            self._by_user.clear()
            self._users_loaded.clear()
        else:
            for u in user_ids:
                self._by_user.pop(int(u), None)
                self._users_loaded.discard(int(u))

    def _changed(self, rec: ChannelRecord, members: Iterable[int] = ()) -> None:
        """After a commit: the record changed (and these users' memberships may have)."""
        self._records.changed([rec.id])
        self._memberships.changed(members)

    # --------------------------------------------------------- access hashes
    def access_hash(self, viewer_id: int, channel_id: int) -> int:
        msg = b"channel" + struct.pack("<qq", viewer_id, channel_id)
        digest = hmac.new(self.secret, msg, hashlib.sha256).digest()
        return struct.unpack_from("<q", digest)[0]

    def check_access_hash(self, viewer_id: int, channel_id: int, access_hash: int) -> bool:
        return hmac.compare_digest(
            struct.pack("<q", self.access_hash(viewer_id, channel_id)),
            struct.pack("<q", access_hash),
        )

    def view(self, rec: ChannelRecord, viewer_id: int) -> Any:
        return rec.channel_for(viewer_id, self.access_hash(viewer_id, rec.id))

    async def resolve(self, viewer_id: int, input_channel: Any) -> ChannelRecord:
        """The channel an InputChannel / InputPeerChannel names: CHANNEL_INVALID otherwise."""
        if not isinstance(input_channel, types.InputChannel | types.InputPeerChannel):
            raise RpcError(400, "CHANNEL_INVALID")
        if not self.check_access_hash(
            viewer_id, input_channel.channel_id, input_channel.access_hash
        ):
            raise RpcError(400, "CHANNEL_INVALID")
        rec = await self.get(input_channel.channel_id)
        if rec is None:
            raise RpcError(400, "CHANNEL_INVALID")
        return rec

    async def readable(self, viewer_id: int, input_channel: Any) -> ChannelRecord:
        """As :meth:`resolve`, and the viewer may read it (CHANNEL_PRIVATE otherwise)."""
        rec = await self.resolve(viewer_id, input_channel)
        if not rec.readable_by(viewer_id):
            raise RpcError(400, "CHANNEL_PRIVATE")
        return rec

    async def member_of(self, viewer_id: int, input_channel: Any) -> ChannelRecord:
        rec = await self.readable(viewer_id, input_channel)
        if not rec.is_member(viewer_id):
            raise RpcError(
                400, "CHANNEL_PRIVATE" if rec.username is None else "USER_NOT_PARTICIPANT"
            )
        return rec

    # ----------------------------------------------------------------- reads
    def cached(self, channel_id: int) -> ChannelRecord | None:
        return self._cache.get(channel_id)

    async def get(self, channel_id: int) -> ChannelRecord | None:
        rec = self._cache.get(channel_id)
        if rec is not None:
            return rec
        token = self._records.token()
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(channels).where(channels.c.id == channel_id))
            ).first()
            if row is None:
                return None
            rec = ChannelRecord(
                id=row.id,
                title=row.title,
                creator_id=row.creator_id,
                date=row.date,
                broadcast=bool(row.broadcast),
                megagroup=bool(row.megagroup),
                about=row.about,
                username=row.username,
                photo_id=row.photo_id,
                photo_stripped=row.photo_stripped,
                signatures=bool(row.signatures),
                slowmode_seconds=row.slowmode_seconds,
                banned_rights=decode(row.banned_rights) if row.banned_rights else None,
                deleted=bool(row.deleted),
                migrated_from_chat_id=row.migrated_from_chat_id,
                migrated_from_max_id=row.migrated_from_max_id,
                dc_id=self.dc_id,
                version=next(self._loads) << 32,
            )
            t = channel_participants
            for p in await conn.execute(sa.select(t).where(t.c.channel_id == channel_id)):
                part = Participant(
                    user_id=p.user_id,
                    role=p.role,
                    inviter_id=p.inviter_id,
                    date=p.date,
                    admin_rights=decode(p.admin_rights) if p.admin_rights else None,
                    rank=p.rank,
                    promoted_by=p.promoted_by,
                    banned_rights=decode(p.banned_rights) if p.banned_rights else None,
                    kicked_by=p.kicked_by,
                )
                rec.participants[p.user_id] = part
                if part.is_member:
                    rec.members.add(p.user_id)
        if self._records.clean(token, [channel_id]):  # else a change raced the read
            self._cache[channel_id] = rec
        return rec

    async def get_many(self, ids: list[int]) -> list[ChannelRecord]:
        out = []
        for i in dict.fromkeys(ids):
            rec = await self.get(i)
            if rec is not None:
                out.append(rec)
        return out

    async def channels_of(self, user_id: int) -> set[int]:
        """Channels the user is a member of (for getDifference and the dialog list)."""
        mine: set[int] = set()
        for _ in range(LOAD_TRIES):
            if user_id in self._users_loaded:
                return set(self._by_user.get(user_id, ()))
            token = self._memberships.token()
            t = channel_participants
            async with self.engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(t.c.channel_id).where(t.c.user_id == user_id, t.c.role != ROLE_BANNED)
                )
                ids = {r.channel_id for r in rows}
            mine = {c.id for c in await self.get_many(sorted(ids)) if not c.deleted}
            if self._memberships.clean(token, [user_id]):  # else a change raced the read
                if mine:
                    self._by_user[user_id] = mine
                self._users_loaded.add(user_id)
                return set(mine)
        return mine

    async def by_username(self, username: str) -> ChannelRecord | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(channels.c.id).where(
                        channels.c.username_lower == username.lower(),
                        channels.c.deleted == sa.false(),
                    )
                )
            ).first()
        return await self.get(row.id) if row is not None else None

    async def search_public(self, q: str, limit: int) -> list[ChannelRecord]:
        """Public channels whose username starts with ``q`` or whose title holds it."""
        escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        c = channels
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(c.c.id)
                .where(
                    c.c.deleted == sa.false(),
                    c.c.username_lower.is_not(None),
                    sa.or_(
                        c.c.username_lower.like(f"{escaped}%", escape="\\"),
                        sa.func.lower(c.c.title).like(f"%{escaped}%", escape="\\"),
                    ),
                )
                .order_by(c.c.username_lower)
                .limit(limit)
            )
            ids = [r.id for r in rows]
        return await self.get_many(ids)

    # ---------------------------------------------------------------- writes
    def _track(self, rec: ChannelRecord, user_id: int, member: bool) -> None:
        rec.version += 1
        if member:
            rec.members.add(user_id)
            if user_id in self._users_loaded:
                self._by_user.setdefault(user_id, set()).add(rec.id)
        else:
            rec.members.discard(user_id)
            self._by_user.get(user_id, set()).discard(rec.id)

    async def create(
        self,
        creator_id: int,
        title: str,
        about: str,
        broadcast: bool,
        migrated_from: tuple[int, int] | None = None,
    ) -> ChannelRecord:
        title = check_title(title)
        if len(about) > ABOUT_MAX:
            raise RpcError(400, "CHAT_ABOUT_TOO_LONG")
        now = int(time.time())
        rec = ChannelRecord(
            id=new_peer_id(),
            title=title,
            creator_id=creator_id,
            date=now,
            broadcast=broadcast,
            megagroup=not broadcast,
            about=about,
            dc_id=self.dc_id,
            migrated_from_chat_id=migrated_from[0] if migrated_from else None,
            migrated_from_max_id=migrated_from[1] if migrated_from else None,
        )
        creator = Participant(creator_id, ROLE_CREATOR, creator_id, now)
        async with self.engine.begin() as conn:
            await conn.execute(
                channels.insert().values(
                    id=rec.id,
                    title=title,
                    about=about,
                    creator_id=creator_id,
                    date=now,
                    broadcast=broadcast,
                    megagroup=not broadcast,
                    migrated_from_chat_id=rec.migrated_from_chat_id,
                    migrated_from_max_id=rec.migrated_from_max_id,
                )
            )
            await conn.execute(channel_participants.insert().values(**creator.row(rec.id)))
        rec.participants[creator_id] = creator
        self._cache[rec.id] = rec
        self._track(rec, creator_id, True)
        self._memberships.changed([creator_id])
        return rec

    async def _save_participant(self, rec: ChannelRecord, p: Participant) -> None:
        t = channel_participants
        async with self.engine.begin() as conn:
            await conn.execute(t.delete().where(t.c.channel_id == rec.id, t.c.user_id == p.user_id))
            await conn.execute(t.insert().values(**p.row(rec.id)))
        rec.participants[p.user_id] = p
        self._track(rec, p.user_id, p.is_member)
        self._changed(rec, [p.user_id])

    def plan_members(
        self, rec: ChannelRecord, user_ids: list[int], inviter_id: int
    ) -> list[Participant]:
        """Who an invitation adds (the inviter needs invite_users; an admin with
        ban_users may bring back a kicked user); members already in are skipped."""
        if not rec.has_right(inviter_id, "invite_users") and not (
            rec.megagroup
            and rec.is_member(inviter_id)
            and "invite_users" not in rec.restrictions_of(inviter_id)
        ):
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        added: list[Participant] = []
        now = int(time.time())
        for uid in dict.fromkeys(user_ids):
            p = rec.participants.get(uid)
            if p is not None and p.is_member:
                continue
            if (
                p is not None
                and p.role == ROLE_BANNED
                and not rec.has_right(inviter_id, "ban_users")
            ):
                raise RpcError(400, "USER_KICKED")
            if len(rec.members) + len(added) >= MEMBERS_MAX:
                raise RpcError(400, "USERS_TOO_MUCH")
            added.append(Participant(uid, ROLE_MEMBER, inviter_id, now))
        return added

    def plan_join(
        self, rec: ChannelRecord, user_id: int, inviter_id: int | None = None
    ) -> Participant:
        """Joining a public channel (or a private one through a link: ``inviter_id``)."""
        p = rec.participants.get(user_id)
        if rec.deleted or (p is not None and p.role == ROLE_BANNED):
            raise RpcError(400, "CHANNEL_PRIVATE")
        if p is not None:
            raise RpcError(400, "USER_ALREADY_PARTICIPANT")
        if rec.username is None and inviter_id is None:
            raise RpcError(400, "CHANNEL_PRIVATE")
        if len(rec.members) >= MEMBERS_MAX:
            raise RpcError(400, "CHANNELS_TOO_MUCH")
        return Participant(user_id, ROLE_MEMBER, inviter_id or user_id, int(time.time()))

    def plan_leave(self, rec: ChannelRecord, user_id: int) -> Participant:
        p = rec.participants.get(user_id)
        if p is None or not p.is_member:
            raise RpcError(400, "USER_NOT_PARTICIPANT")
        if p.role == ROLE_CREATOR:
            raise RpcError(400, "USER_CREATOR")
        return p

    async def write_in(
        self,
        tx: Tx,
        rec: ChannelRecord,
        add: list[Participant] = (),  # type: ignore[assignment]
        drop: list[int] = (),  # type: ignore[assignment]
        log: list[tuple[int, TLObject]] = (),  # type: ignore[assignment]
    ) -> None:
        """Membership changes and their admin-log entries inside ``tx`` (the msg writer's
        transaction with the service message that announces them): all or nothing."""
        await self._write(tx.conn, rec, add, drop, log)
        tx.on_commit(lambda: self._applied(rec, add, drop))

    async def _write(
        self,
        conn: Any,
        rec: ChannelRecord,
        add: list[Participant],
        drop: list[int],
        log: list[tuple[int, TLObject]],
    ) -> None:
        t = channel_participants
        gone = [p.user_id for p in add] + list(drop)
        if gone:
            await conn.execute(t.delete().where(t.c.channel_id == rec.id, t.c.user_id.in_(gone)))
        if add:
            await conn.execute(t.insert(), [p.row(rec.id) for p in add])
        if log:
            now = int(time.time())
            await conn.execute(
                channel_admin_log.insert(),
                [
                    {
                        "channel_id": rec.id,
                        "user_id": uid,
                        "date": now,
                        "kind": type(action).__name__,
                        "action": action.to_bytes(),
                    }
                    for uid, action in log
                ],
            )

    def _applied(self, rec: ChannelRecord, add: list[Participant], drop: list[int]) -> None:
        for uid in drop:
            rec.participants.pop(uid, None)
            self._track(rec, uid, False)
        for p in add:
            rec.participants[p.user_id] = p
            self._track(rec, p.user_id, p.is_member)
        self._changed(rec, [*drop, *(p.user_id for p in add)])

    async def add_members(
        self, rec: ChannelRecord, user_ids: list[int], inviter_id: int
    ) -> list[int]:
        """:meth:`plan_members`, written at once (no service message to go with it)."""
        added = self.plan_members(rec, user_ids, inviter_id)
        if added:
            async with self.engine.begin() as conn:
                await self._write(conn, rec, added, [], [])
            self._applied(rec, added, [])
        return [p.user_id for p in added]

    async def edit_admin(
        self, rec: ChannelRecord, by_id: int, user_id: int, rights: Any, rank: str | None
    ) -> tuple[Participant | None, Participant]:
        """Promote, change or demote (no rights) an admin; (before, after)."""
        if not isinstance(rights, types.ChatAdminRights):
            raise RpcError(400, "ADMIN_RIGHTS_EMPTY")
        mine = rec.admin_rights_of(by_id)
        if "add_admins" not in mine:
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        if rank is not None and len(rank) > RANK_MAX:
            raise RpcError(400, "ADMIN_RANK_INVALID")
        wanted = _rights_set(rights)
        if not wanted <= mine:
            raise RpcError(400, "RIGHT_FORBIDDEN")
        before = rec.participants.get(user_id)
        if before is not None and before.role == ROLE_CREATOR:
            raise RpcError(400, "USER_CREATOR")
        if (
            before is not None
            and before.role == ROLE_ADMIN
            and by_id != rec.creator_id
            and before.promoted_by != by_id
        ):
            raise RpcError(400, "RIGHT_FORBIDDEN")  # only who promoted them, or the owner
        if before is None or not before.is_member:
            if rec.broadcast or not wanted:
                raise RpcError(400, "USER_NOT_PARTICIPANT")
        now = int(time.time())
        if wanted:
            admins = sum(1 for p in rec.participants.values() if p.role == ROLE_ADMIN)
            if (before is None or before.role != ROLE_ADMIN) and admins >= ADMINS_MAX:
                raise RpcError(400, "ADMINS_TOO_MUCH")
            after = Participant(
                user_id,
                ROLE_ADMIN,
                before.inviter_id if before else by_id,
                before.date if before else now,
                admin_rights=rights,
                rank=rank,
                promoted_by=by_id,
            )
        else:
            if before is None or before.role != ROLE_ADMIN:
                raise RpcError(400, "USER_NOT_PARTICIPANT")
            after = Participant(user_id, ROLE_MEMBER, before.inviter_id, before.date)
        await self._save_participant(rec, after)
        return before, after

    def plan_banned(
        self, rec: ChannelRecord, by_id: int, user_id: int, rights: Any
    ) -> tuple[Participant | None, Participant | None]:
        """Restrict, kick (view_messages) or lift both (no flags): (before, after), after
        None when the row goes. Written by :meth:`write_in` with what announces it."""
        if not isinstance(rights, types.ChatBannedRights):
            raise RpcError(400, "BANNED_RIGHTS_INVALID")
        if "ban_users" not in rec.admin_rights_of(by_id):
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        if user_id == by_id:
            raise RpcError(400, "USER_ADMIN_INVALID")
        before = rec.participants.get(user_id)
        if before is not None and before.role in (ROLE_ADMIN, ROLE_CREATOR):
            raise RpcError(400, "USER_ADMIN_INVALID")
        flags = _banned_set(rights)
        now = int(time.time())
        if not flags:
            if before is None or before.banned_rights is None:
                raise RpcError(400, "USER_NOT_PARTICIPANT")
            if before.role == ROLE_BANNED:
                return before, None
            after = Participant(user_id, ROLE_MEMBER, before.inviter_id, before.date)
        else:
            if not rights.until_date or rights.until_date < now + 30:
                rights.until_date = FOREVER  # Telegram: under 30 s means forever
            kicked = "view_messages" in flags
            if not kicked and (before is None or not before.is_member):
                raise RpcError(400, "USER_NOT_PARTICIPANT")
            after = Participant(
                user_id,
                ROLE_BANNED if kicked else ROLE_MEMBER,
                before.inviter_id if before else by_id,
                before.date if before else now,
                banned_rights=rights,
                kicked_by=by_id,
            )
        return before, after

    async def _set(self, rec: ChannelRecord, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(channels.update().where(channels.c.id == rec.id).values(**values))
        rec.version += 1
        for k, v in values.items():
            if k == "banned_rights":
                v = decode(v) if v else None
            if hasattr(rec, k):
                setattr(rec, k, v)
        self._changed(rec)

    def check_admin(self, rec: ChannelRecord, user_id: int, right: str) -> None:
        """Admin actions: CHAT_ADMIN_REQUIRED without the right. In a supergroup, members
        may change info, invite and pin unless the default rights take it away."""
        if rec.has_right(user_id, right):
            return
        member_right = {
            "change_info": "change_info",
            "invite_users": "invite_users",
            "pin_messages": "pin_messages",
        }.get(right)
        if (
            rec.megagroup
            and member_right is not None
            and rec.is_member(user_id)
            and member_right not in rec.restrictions_of(user_id)
            # An admin without the right has what every member has, no more.
            and member_right not in _banned_set(rec.default_rights())
        ):
            return
        raise RpcError(400, "CHAT_ADMIN_REQUIRED")

    def check_send(self, rec: ChannelRecord, user_id: int, right: str = "send_messages") -> None:
        """Posting: admins with post_messages in a broadcast channel; members of a
        supergroup unless restricted."""
        if rec.deleted:
            raise RpcError(400, "CHANNEL_PRIVATE")
        p = rec.participants.get(user_id)
        if p is not None and p.role == ROLE_BANNED:
            raise RpcError(400, "CHANNEL_PRIVATE")
        if rec.broadcast:
            if not rec.has_right(user_id, "post_messages"):
                raise RpcError(403, "CHAT_WRITE_FORBIDDEN")
            return
        if not rec.is_member(user_id):
            raise RpcError(403, "CHAT_WRITE_FORBIDDEN")
        restricted = rec.restrictions_of(user_id)
        own = _banned_set(p.banned_rights) if p is not None else set()
        if "send_messages" in restricted:
            # Telegram: a member's own ban names the channel; the group's defaults don't.
            raise RpcError(
                403, "USER_BANNED_IN_CHANNEL" if "send_messages" in own else "CHAT_WRITE_FORBIDDEN"
            )
        if right in restricted:
            raise RpcError(403, _SEND_FORBIDDEN.get(right, "CHAT_WRITE_FORBIDDEN"))

    async def set_title(self, rec: ChannelRecord, title: str, by_id: int) -> str:
        self.check_admin(rec, by_id, "change_info")
        title = check_title(title)
        if title == rec.title:
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        old = rec.title
        await self._set(rec, title=title)
        return old

    async def set_about(self, rec: ChannelRecord, about: str, by_id: int) -> str:
        self.check_admin(rec, by_id, "change_info")
        if len(about) > ABOUT_MAX:
            raise RpcError(400, "CHAT_ABOUT_TOO_LONG")
        if about == rec.about:
            raise RpcError(400, "CHAT_ABOUT_NOT_MODIFIED")
        old = rec.about
        await self._set(rec, about=about)
        return old

    async def set_photo(
        self, rec: ChannelRecord, photo_id: int | None, stripped: bytes | None, by_id: int
    ) -> int | None:
        self.check_admin(rec, by_id, "change_info")
        old = rec.photo_id
        await self._set(rec, photo_id=photo_id, photo_stripped=stripped)
        return old

    async def username_free(self, rec: ChannelRecord | None, name: str) -> bool:
        holder = await self.by_username(name)
        if holder is not None and (rec is None or holder.id != rec.id):
            return False
        return not (self.username_taken_by_user and await self.username_taken_by_user(name))

    async def check_username(self, rec: ChannelRecord, by_id: int, name: str) -> bool:
        self.check_admin(rec, by_id, "change_info")
        if not valid_username(name):
            raise RpcError(400, "USERNAME_INVALID")
        return await self.username_free(rec, name)

    async def set_username(self, rec: ChannelRecord, by_id: int, name: str) -> str | None:
        if by_id != rec.creator_id:
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        name = name.strip()
        if name and not valid_username(name):
            raise RpcError(400, "USERNAME_INVALID")
        if (rec.username or "") == name:
            raise RpcError(400, "USERNAME_NOT_MODIFIED")
        if name and not await self.username_free(rec, name):
            raise RpcError(400, "USERNAME_OCCUPIED")
        old = rec.username
        try:
            await self._set(rec, username=name or None, username_lower=name.lower() or None)
        except IntegrityError as exc:
            raise RpcError(400, "USERNAME_OCCUPIED") from exc
        return old

    async def toggle_signatures(self, rec: ChannelRecord, by_id: int, enabled: bool) -> None:
        self.check_admin(rec, by_id, "change_info")
        if not rec.broadcast:
            raise RpcError(400, "CHANNEL_INVALID")
        if rec.signatures == enabled:
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        await self._set(rec, signatures=enabled)

    async def set_slowmode(self, rec: ChannelRecord, by_id: int, seconds: int) -> int:
        if not rec.megagroup:
            raise RpcError(400, "CHANNEL_INVALID")
        if "ban_users" not in rec.admin_rights_of(by_id):
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        if seconds not in SLOWMODE_VALUES:
            raise RpcError(400, "SECONDS_INVALID")
        if seconds == rec.slowmode_seconds:
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        old = rec.slowmode_seconds
        await self._set(rec, slowmode_seconds=seconds)
        return old

    async def set_default_rights(self, rec: ChannelRecord, by_id: int, rights: Any) -> Any:
        if not rec.megagroup:
            raise RpcError(400, "CHANNEL_INVALID")
        if "ban_users" not in rec.admin_rights_of(by_id):
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        if not isinstance(rights, types.ChatBannedRights):
            raise RpcError(400, "BANNED_RIGHTS_INVALID")
        rights.until_date = FOREVER
        old = rec.default_rights()
        if old.to_bytes() == rights.to_bytes():
            raise RpcError(400, "CHAT_NOT_MODIFIED")
        await self._set(rec, banned_rights=rights.to_bytes())
        return old

    async def delete(self, rec: ChannelRecord, by_id: int) -> set[int]:
        """Only the creator deletes; returns who were members."""
        if by_id != rec.creator_id:
            raise RpcError(400, "CHAT_ADMIN_REQUIRED")
        members = set(rec.members)
        await self._set(rec, deleted=True, username=None, username_lower=None)
        for uid in members:
            self._by_user.get(uid, set()).discard(rec.id)
        self._memberships.changed(members)
        return members

    # ------------------------------------------------------------ participants
    def participants(
        self, rec: ChannelRecord, kind: str, q: str, names: Callable[[int], str]
    ) -> list[Participant]:
        """Participants for a filter: recent (members, newest first), admins, kicked,
        banned (restricted), search (members whose name matches ``q``)."""
        ps = list(rec.participants.values())
        if kind == "admins":
            ps = [p for p in ps if p.role in (ROLE_ADMIN, ROLE_CREATOR)]
        elif kind == "kicked":
            ps = [p for p in ps if p.role == ROLE_BANNED]
        elif kind == "banned":
            ps = [p for p in ps if p.role != ROLE_BANNED and p.banned_rights is not None]
        else:
            ps = [p for p in ps if p.is_member]
        if q:
            ql = q.lower()
            ps = [p for p in ps if ql in names(p.user_id).lower()]
        ps.sort(key=lambda p: (p.role != ROLE_CREATOR, -p.date, p.user_id))
        return ps

    # ------------------------------------------------------------- admin log
    async def log(self, rec: ChannelRecord, user_id: int, action: TLObject) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                channel_admin_log.insert().values(
                    channel_id=rec.id,
                    user_id=user_id,
                    date=int(time.time()),
                    kind=type(action).__name__,
                    action=action.to_bytes(),
                )
            )

    async def admin_log(
        self,
        rec: ChannelRecord,
        kinds: set[str] | None,
        admins: set[int] | None,
        max_id: int,
        min_id: int,
        limit: int,
    ) -> list[TLObject]:
        t = channel_admin_log
        q = sa.select(t).where(t.c.channel_id == rec.id).order_by(t.c.id.desc()).limit(limit)
        if kinds is not None:
            q = q.where(t.c.kind.in_(sorted(kinds)))
        if admins:
            q = q.where(t.c.user_id.in_(sorted(admins)))
        if max_id:
            q = q.where(t.c.id < max_id)
        if min_id:
            q = q.where(t.c.id > min_id)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(q))
        return [
            types.ChannelAdminLogEvent(
                id=r.id, date=r.date, user_id=r.user_id, action=decode(r.action)
            )
            for r in rows
        ]
