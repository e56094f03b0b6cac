"""biz/users: accounts, profiles, usernames, and the User objects each viewer sees.

Access hashes are per viewer (Telegram's model): HMAC(secret, viewer | user), so
they need no storage and a hash obtained by one user is useless to another; a
user returned by any answer (an import by phone among them) is addressable by
its viewer at once. Every handler turns ``InputUser``/``InputPeer`` into ids
through :meth:`UserService.resolve_input_user` / :meth:`resolve_input_peer`, so a
wrong hash is USER_ID_INVALID / PEER_ID_INVALID everywhere.

What a viewer sees of a user (:meth:`UserService.users_for`) is decided here:
contact flags and the names the viewer saved, the phone and last seen as the
user's privacy rules allow (contacts and privacy services plug in), and the
online state the status service keeps.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.infra.database import upsert
from teamgram.infra.invalidation import (
    LOAD_TRIES,
    CacheTopic,
    Invalidations,
    Key,
    LocalInvalidations,
    drop_keys,
)
from teamgram.service.biz import privacy as pv
from teamgram.service.biz.contacts import ContactRecord, ContactService
from teamgram.service.biz.tables import notify_settings, users
from teamgram.service.idgen.service import IdGenService
from teamgram.tl import TLObject, decode, types

# Telegram's official notifications account ("Telegram", login codes).
SERVICE_USER_ID = 777000
SERVICE_PHONE = "42777"

# Telegram's limits for a non-premium account.
NAME_MAX = 64
ABOUT_MAX = 70
USERNAME_MIN = 5
USERNAME_MAX = 32
# Starts with a letter, ends with a letter or digit; letters, digits and "_".
_USERNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*[A-Za-z0-9]")
# What contacts.resolveUsername accepts before looking (short collectible names too).
_RESOLVABLE_RE = re.compile(r"[A-Za-z0-9_]{1,32}")

# Cache invalidation topics (split mode): user ids whose record / notify settings changed.
TOPIC_USERS = "users"
TOPIC_NOTIFY = "users.notify"

# How a hidden last seen is rounded (Telegram's buckets), in seconds.
RECENTLY = 3 * 86400
LAST_WEEK = 7 * 86400
LAST_MONTH = 30 * 86400


def valid_username(name: str) -> bool:
    """Telegram's rules: 5-32 characters, a letter first, no trailing or double "_"."""
    return (
        USERNAME_MIN <= len(name) <= USERNAME_MAX
        and _USERNAME_RE.fullmatch(name) is not None
        and "__" not in name
    )


def normalize_phone(phone: str) -> str:
    """Digits only, as Telegram stores and returns phone numbers (no "+")."""
    return "".join(ch for ch in phone if "0" <= ch <= "9")


def approximate_status(last_active: int, now: int, by_me: bool = False) -> TLObject:
    """The rounded last seen shown when the exact time is hidden."""
    if last_active <= 0:
        return types.UserStatusEmpty()
    age = now - last_active
    if age <= RECENTLY:
        return types.UserStatusRecently(by_me=by_me)
    if age <= LAST_WEEK:
        return types.UserStatusLastWeek(by_me=by_me)
    if age <= LAST_MONTH:
        return types.UserStatusLastMonth(by_me=by_me)
    return types.UserStatusEmpty()


def exact_status(online_until: int, last_seen: int, now: int) -> TLObject:
    if online_until > now:
        return types.UserStatusOnline(expires=online_until)
    if last_seen > 0:
        return types.UserStatusOffline(was_online=last_seen)
    return types.UserStatusEmpty()


def default_notify_settings() -> TLObject:
    return types.PeerNotifySettings(show_previews=True, silent=False, mute_until=0)


class Presence(Protocol):
    """What views need of the status service."""

    def online_until(self, user_id: int) -> int:
        """Unix time the user's online status expires (0 or past: offline)."""
        ...


@dataclass(slots=True)
class _Viewing:
    """What one viewer's view of several users depends on, fetched once."""

    viewer_id: int
    viewer_is_bot: bool = False
    my_contacts: dict[int, ContactRecord] = field(default_factory=dict)
    my_blocked: dict[int, int] = field(default_factory=dict)
    has_me: set[int] = field(default_factory=set)  # owners with the viewer as a contact
    blocked_me: set[int] = field(default_factory=set)
    phone_rules: dict[int, list[TLObject]] = field(default_factory=dict)
    status_rules: dict[int, list[TLObject]] = field(default_factory=dict)
    my_status_rules: list[TLObject] = field(default_factory=list)
    photo_rules: dict[int, list[TLObject]] = field(default_factory=dict)
    now: int = 0


@dataclass(slots=True)
class UserRecord:
    id: int
    phone: str
    first_name: str = ""
    last_name: str = ""
    username: str | None = None
    about: str = ""
    is_bot: bool = False
    deleted: bool = False
    created_at: int = 0
    last_seen_at: int = 0
    photo_id: int | None = None  # the current profile photo (media)
    photo_stripped: bytes | None = None  # its stripped thumbnail, shown inline


def _record(row: Any) -> UserRecord:
    return UserRecord(
        id=row.id,
        phone=row.phone,
        first_name=row.first_name,
        last_name=row.last_name,
        username=row.username,
        about=row.about,
        is_bot=row.is_bot,
        deleted=row.deleted,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        photo_id=row.photo_id,
        photo_stripped=row.photo_stripped,
    )


def load_secret(data_dir: Path, name: str = "access_hash_secret") -> bytes:
    path = data_dir / name
    if not path.exists():
        # Processes of a cluster sharing the directory may start together: the
        # first link wins and every process reads that one secret.
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        tmp.write_bytes(os.urandom(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_bytes()


class UserService:
    """The users part of biz. Contacts, privacy and status plug in for views."""

    def __init__(self, engine: AsyncEngine, idgen: IdGenService, secret: bytes) -> None:
        self.engine = engine
        self.idgen = idgen
        self.secret = secret
        self._cache: dict[int, UserRecord] = {}
        # Other processes' changes drop cached records (split mode; see use_invalidations).
        self.invalidations: Invalidations = LocalInvalidations()
        self._records = CacheTopic(TOPIC_USERS, self._drop_records)
        self._notify_topic = CacheTopic(TOPIC_NOTIFY, self._drop_notify)
        self.contacts: ContactService | None = None
        self.privacy: pv.PrivacyService | None = None
        self.presence: Presence | None = None
        # user -> notify peer key -> PeerNotifySettings, for users loaded from the
        # notify_settings table
        self._notify: dict[int, dict[str, TLObject]] = {}
        # The data center photos are served from (help.getConfig's this_dc).
        self.dc_id = 2
        # photo id -> the Photo object (media plugs in; UserFull.profile_photo)
        self.photo_of: Callable[[int], Awaitable[TLObject | None]] | None = None
        # Usernames are one namespace with channels' (biz/channel plugs in).
        self.username_taken_elsewhere: Callable[[str], Awaitable[bool]] | None = None

    def plug(
        self,
        contacts: ContactService | None = None,
        privacy: pv.PrivacyService | None = None,
        presence: Presence | None = None,
    ) -> None:
        """Attach the services views consult; without them views are plain."""
        self.contacts = contacts or self.contacts
        self.privacy = privacy or self.privacy
        self.presence = presence or self.presence

    def use_invalidations(self, invalidations: Invalidations) -> None:
        """Publish this process's changes there, and drop what other processes change."""
        self.invalidations = invalidations
        self._records.attach(invalidations)
        self._notify_topic.attach(invalidations)

    def _drop_records(self, ids: list[Key] | None) -> None:
        drop_keys(self._cache, ids)

    def _drop_notify(self, ids: list[Key] | None) -> None:
        drop_keys(self._notify, ids)

    # ------------------------------------------------------------ access hashes
    def access_hash(self, viewer_id: int, user_id: int) -> int:
        digest = hmac.new(self.secret, struct.pack("<qq", viewer_id, user_id), hashlib.sha256)
        return struct.unpack_from("<q", digest.digest())[0]

    def check_access_hash(self, viewer_id: int, user_id: int, access_hash: int) -> bool:
        return viewer_id == user_id or hmac.compare_digest(
            struct.pack("<q", self.access_hash(viewer_id, user_id)),
            struct.pack("<q", access_hash),
        )

    # ------------------------------------------------------------------ records
    async def create(
        self, phone: str, first_name: str, last_name: str = "", user_id: int | None = None
    ) -> UserRecord:
        """A new account; PHONE_NUMBER_OCCUPIED if the phone already has one.

        ``user_id``: a fixed id (the service account); otherwise the next one.
        """
        rec = UserRecord(
            id=user_id if user_id is not None else await self.idgen.next_user_id(),
            phone=phone,
            first_name=first_name,
            last_name=last_name,
            created_at=int(time.time()),
        )
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    users.insert().values(
                        id=rec.id,
                        phone=rec.phone,
                        first_name=rec.first_name,
                        last_name=rec.last_name,
                        created_at=rec.created_at,
                    )
                )
        except IntegrityError as exc:
            raise RpcError(400, "PHONE_NUMBER_OCCUPIED") from exc
        self._cache[rec.id] = rec
        return rec

    async def ensure_service_user(self) -> UserRecord:
        """Telegram's notifications account (777000), made on first use."""
        rec = await self.get(SERVICE_USER_ID)
        if rec is None:
            try:
                rec = await self.create(SERVICE_PHONE, "Telegram", user_id=SERVICE_USER_ID)
            except RpcError:  # made meanwhile by another process
                rec = await self.get(SERVICE_USER_ID)
                assert rec is not None
        return rec

    async def get(self, user_id: int) -> UserRecord | None:
        return (await self.get_many([user_id])).get(user_id)

    async def get_many(self, ids: list[int] | set[int]) -> dict[int, UserRecord]:
        out = {i: self._cache[i] for i in ids if i in self._cache}
        missing = [i for i in ids if i not in out]
        if missing:
            token = self._records.token()
            async with self.engine.connect() as conn:
                rows = await conn.execute(sa.select(users).where(users.c.id.in_(missing)))
                loaded = [_record(row) for row in rows]
            keep = self._records.clean(token, missing)  # else a change raced the read
            for rec in loaded:
                if keep:
                    self._cache[rec.id] = rec
                out[rec.id] = rec
        return out

    async def by_phone(self, phone: str) -> UserRecord | None:
        token = self._records.token()
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.phone == phone))).first()
        if row is None:
            return None
        rec = _record(row)
        if self._records.clean(token, [rec.id]):
            self._cache[rec.id] = rec
        return rec

    async def by_username(self, username: str) -> UserRecord | None:
        """The account holding ``username`` (case-insensitive)."""
        token = self._records.token()
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(users).where(users.c.username_lower == username.lower())
                )
            ).first()
        if row is None:
            return None
        rec = self._cache.get(row.id)
        if rec is None:
            rec = _record(row)
            if self._records.clean(token, [rec.id]):
                self._cache[rec.id] = rec
        return rec

    async def resolve_username(self, username: str) -> UserRecord:
        """For contacts.resolveUsername: USERNAME_INVALID / USERNAME_NOT_OCCUPIED."""
        name = username.strip().lstrip("@")
        if _RESOLVABLE_RE.fullmatch(name) is None:
            raise RpcError(400, "USERNAME_INVALID")
        rec = await self.by_username(name)
        if rec is None or rec.deleted:
            raise RpcError(400, "USERNAME_NOT_OCCUPIED")
        return rec

    async def search(self, query: str, limit: int, exclude: Iterable[int] = ()) -> list[UserRecord]:
        """Users found by username prefix, or by name among those with a username.

        Only users with a public username are found by name: Telegram does not
        let a stranger find an account by name alone.
        """
        q = query.strip().lstrip("@").lower()
        if not q or limit <= 0:
            return []
        like = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        word = "% " + like
        skip = set(exclude)
        token = self._records.token()
        cond = sa.or_(
            users.c.username_lower.like(like, escape="\\"),
            sa.and_(
                users.c.username_lower.is_not(None),
                sa.or_(
                    sa.func.lower(users.c.first_name).like(like, escape="\\"),
                    sa.func.lower(users.c.last_name).like(like, escape="\\"),
                    sa.func.lower(users.c.first_name).like(word, escape="\\"),
                ),
            ),
        )
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(users)
                .where(cond, users.c.deleted == sa.false())
                .order_by(users.c.username_lower, users.c.id)
                .limit(limit + len(skip))
            )
            found = [_record(r) for r in rows]
        keep = self._records.clean(token, [rec.id for rec in found])
        out: list[UserRecord] = []
        for rec in found:
            if rec.id in skip:
                continue
            out.append(self._cache.setdefault(rec.id, rec) if keep else rec)
            if len(out) >= limit:
                break
        return out

    # ------------------------------------------------------------ input peers
    def resolve_input_user(self, viewer_id: int, input_user: TLObject) -> int:
        """The user id an ``InputUser`` names for this viewer; USER_ID_INVALID otherwise.

        The access hash must be the one this viewer was given (no I/O: it is an HMAC).
        """
        if isinstance(input_user, types.InputUserSelf):
            return viewer_id
        if isinstance(input_user, types.InputUser) and self.check_access_hash(
            viewer_id, input_user.user_id, input_user.access_hash
        ):
            return int(input_user.user_id)
        # inputUserFromMessage needs min users, which this server does not send yet.
        raise RpcError(400, "USER_ID_INVALID")

    def resolve_input_peer(self, viewer_id: int, input_peer: TLObject) -> TLObject:
        """The ``Peer`` an ``InputPeer`` names for this viewer; PEER_ID_INVALID otherwise.

        Users only for now: chats and channels are checked by their services when
        those arrive (until then no such peer exists).
        """
        if isinstance(input_peer, types.InputPeerSelf):
            return types.PeerUser(user_id=viewer_id)
        if isinstance(input_peer, types.InputPeerUser) and self.check_access_hash(
            viewer_id, input_peer.user_id, input_peer.access_hash
        ):
            return types.PeerUser(user_id=input_peer.user_id)
        raise RpcError(400, "PEER_ID_INVALID")

    def resolve_input_peer_user(self, viewer_id: int, input_peer: TLObject) -> int:
        """A user id from an ``InputPeer`` that must name a user; PEER_ID_INVALID otherwise."""
        peer = self.resolve_input_peer(viewer_id, input_peer)
        if not isinstance(peer, types.PeerUser):
            raise RpcError(400, "PEER_ID_INVALID")
        return int(peer.user_id)

    # ---------------------------------------------------------------- profile
    async def _update_row(self, user_id: int, **values: Any) -> UserRecord:
        rec = await self.get(user_id)
        if rec is None:
            raise RpcError(400, "USER_ID_INVALID")
        async with self.engine.begin() as conn:
            await conn.execute(users.update().where(users.c.id == user_id).values(**values))
        for k, v in values.items():
            if hasattr(rec, k):
                setattr(rec, k, v)
        self._records.changed([user_id])
        return rec

    async def update_profile(
        self,
        user_id: int,
        first_name: str | None = None,
        last_name: str | None = None,
        about: str | None = None,
    ) -> UserRecord:
        """account.updateProfile: FIRSTNAME_INVALID, LASTNAME_INVALID, ABOUT_TOO_LONG."""
        values: dict[str, str] = {}
        if first_name is not None:
            first = " ".join(first_name.split())
            if not first or len(first) > NAME_MAX:
                raise RpcError(400, "FIRSTNAME_INVALID")
            values["first_name"] = first
        if last_name is not None:
            last = " ".join(last_name.split())
            if len(last) > NAME_MAX:
                raise RpcError(400, "LASTNAME_INVALID")
            values["last_name"] = last
        if about is not None:
            text = about.strip()
            if len(text) > ABOUT_MAX:
                raise RpcError(400, "ABOUT_TOO_LONG")
            values["about"] = text
        if not values:
            rec = await self.get(user_id)
            if rec is None:
                raise RpcError(400, "USER_ID_INVALID")
            return rec
        return await self._update_row(user_id, **values)

    async def check_username(self, user_id: int, username: str) -> bool:
        """account.checkUsername: False when someone else holds it."""
        if not valid_username(username):
            raise RpcError(400, "USERNAME_INVALID")
        holder = await self.by_username(username)
        if holder is not None and holder.id != user_id:
            return False
        return not (self.username_taken_elsewhere and await self.username_taken_elsewhere(username))

    async def set_username(self, user_id: int, username: str) -> UserRecord:
        """account.updateUsername ("" removes it): USERNAME_INVALID / _OCCUPIED / _NOT_MODIFIED."""
        rec = await self.get(user_id)
        if rec is None:
            raise RpcError(400, "USER_ID_INVALID")
        name = username.strip()
        if name and not valid_username(name):
            raise RpcError(400, "USERNAME_INVALID")
        if (rec.username or "") == name:
            raise RpcError(400, "USERNAME_NOT_MODIFIED")
        if name:
            holder = await self.by_username(name)
            if holder is not None and holder.id != user_id:
                raise RpcError(400, "USERNAME_OCCUPIED")
            if self.username_taken_elsewhere and await self.username_taken_elsewhere(name):
                raise RpcError(400, "USERNAME_OCCUPIED")  # a channel's
        try:
            return await self._update_row(
                user_id, username=name or None, username_lower=name.lower() or None
            )
        except IntegrityError as exc:  # taken between the check and the write
            raise RpcError(400, "USERNAME_OCCUPIED") from exc

    async def idle_since(self, cutoff: int, limit: int) -> list[UserRecord]:
        """Live accounts with no activity (last seen, or sign-up) since ``cutoff``."""
        u = users
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(u)
                .where(
                    u.c.deleted == sa.false(),
                    u.c.id != SERVICE_USER_ID,
                    u.c.last_seen_at < cutoff,
                    u.c.created_at < cutoff,
                )
                .order_by(u.c.last_seen_at)
                .limit(limit)
            )
            return [_record(r) for r in rows]

    async def delete_account(self, user_id: int) -> UserRecord:
        """Empty the profile, mark it deleted and free the phone number and username."""
        return await self._update_row(
            user_id,
            deleted=True,
            phone=f"deleted-{user_id}"[:32],
            first_name="",
            last_name="",
            username=None,
            username_lower=None,
            about="",
            photo_id=None,
            photo_stripped=None,
        )

    async def set_last_seen(self, user_id: int, when: int) -> None:
        """Persist the time the user was last online (the status service calls this)."""
        rec = await self.get(user_id)
        if rec is None or rec.last_seen_at >= when:
            return
        await self._update_row(user_id, last_seen_at=when)

    # -------------------------------------------------------- notify settings
    def notify_settings(self, user_id: int, key: str) -> TLObject:
        """``key``: "peer:<id>", "users", "chats" or "broadcasts" (after :meth:`load_notify`)."""
        return self._notify.get(user_id, {}).get(key) or default_notify_settings()

    async def load_notify(self, user_id: int) -> None:
        """Bring the user's notification settings into memory (once)."""
        for _ in range(LOAD_TRIES):
            if user_id in self._notify:
                return
            token = self._notify_topic.token()
            async with self.engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(notify_settings).where(notify_settings.c.user_id == user_id)
                )
                got = {r.peer_key: decode(r.settings) for r in rows}
            if self._notify_topic.clean(token, [user_id]):
                self._notify[user_id] = got
                return

    async def get_notify_settings(self, user_id: int, key: str) -> TLObject:
        await self.load_notify(user_id)
        return self.notify_settings(user_id, key)

    async def set_notify_settings(self, user_id: int, key: str, settings: TLObject) -> None:
        await self.load_notify(user_id)
        async with self.engine.begin() as conn:
            await conn.execute(
                upsert(
                    conn.dialect.name,
                    notify_settings,
                    {"user_id": user_id, "peer_key": key, "settings": settings.to_bytes()},
                    {"settings": settings.to_bytes()},
                )
            )
        mine = self._notify.get(user_id)
        if mine is not None:
            mine[key] = settings
        self._notify_topic.changed([user_id])

    # ------------------------------------------------------------------ views
    async def _viewing(self, viewer_id: int, others: list[int]) -> _Viewing:
        v = _Viewing(viewer_id=viewer_id, now=int(time.time()))
        me = await self.get(viewer_id)
        v.viewer_is_bot = bool(me and me.is_bot)
        if self.contacts is not None:
            v.my_contacts = await self.contacts.contacts_of(viewer_id)
            v.my_blocked = await self.contacts.blocked_of(viewer_id)
            if others:
                v.has_me = await self.contacts.owners_having(viewer_id, others)
                v.blocked_me = await self.contacts.blockers_of(viewer_id, others)
        if self.privacy is not None:
            v.phone_rules = await self.privacy.rules_of_many(others, pv.PHONE_NUMBER)
            v.status_rules = await self.privacy.rules_of_many(others, pv.STATUS_TIMESTAMP)
            v.my_status_rules = await self.privacy.get_rules(viewer_id, pv.STATUS_TIMESTAMP)
            v.photo_rules = await self.privacy.rules_of_many(others, pv.PROFILE_PHOTO)
        else:
            v.phone_rules = {u: pv.DEFAULTS[pv.PHONE_NUMBER]() for u in others}
            v.status_rules = {u: pv.DEFAULTS[pv.STATUS_TIMESTAMP]() for u in others}
            v.my_status_rules = pv.DEFAULTS[pv.STATUS_TIMESTAMP]()
            v.photo_rules = {u: pv.DEFAULTS[pv.PROFILE_PHOTO]() for u in others}
        return v

    def _online_until(self, user_id: int) -> int:
        return self.presence.online_until(user_id) if self.presence is not None else 0

    def _status(self, rec: UserRecord, v: _Viewing) -> TLObject | None:
        if rec.is_bot:
            return None
        online_until = self._online_until(rec.id)
        if rec.id == v.viewer_id:
            return exact_status(online_until, rec.last_seen_at, v.now)
        if rec.id in v.blocked_me:
            return types.UserStatusEmpty()  # Telegram shows "a long time ago"
        allowed = pv.evaluate(
            v.status_rules.get(rec.id, ()),
            v.viewer_id,
            pv.Relation(is_contact=rec.id in v.has_me, is_bot=v.viewer_is_bot),
        )
        # Reciprocity: who hides their own last seen from someone sees theirs rounded.
        shares = pv.evaluate(
            v.my_status_rules,
            rec.id,
            pv.Relation(is_contact=rec.id in v.my_contacts, is_bot=rec.is_bot),
        )
        if allowed and shares:
            return exact_status(online_until, rec.last_seen_at, v.now)
        last = v.now if online_until > v.now else rec.last_seen_at
        return approximate_status(last, v.now, by_me=allowed and not shares)

    def _view(self, rec: UserRecord, v: _Viewing) -> types.User:
        is_self = rec.id == v.viewer_id
        contact = None if is_self else v.my_contacts.get(rec.id)
        first, last = rec.first_name, rec.last_name
        if contact is not None and (contact.first_name or contact.last_name):
            first, last = contact.first_name, contact.last_name
        phone: str | None = None
        if is_self:
            phone = rec.phone
        elif rec.id not in v.blocked_me and (
            pv.evaluate(
                v.phone_rules.get(rec.id, ()),
                v.viewer_id,
                pv.Relation(is_contact=rec.id in v.has_me, is_bot=v.viewer_is_bot),
            )
            # Telegram: who already saved the number keeps seeing it.
            or (contact is not None and normalize_phone(contact.phone) == rec.phone)
        ):
            phone = rec.phone
        return types.User(
            id=rec.id,
            self=is_self,
            contact=contact is not None,
            mutual_contact=contact is not None and rec.id in v.has_me,
            access_hash=self.access_hash(v.viewer_id, rec.id),
            first_name=first or None,
            last_name=last or None,
            username=rec.username,
            phone=phone or None,
            status=self._status(rec, v),
            deleted=rec.deleted,
            bot=rec.is_bot,
            photo=self._photo(rec, v, is_self),
            verified=rec.id == SERVICE_USER_ID,
            support=rec.id == SERVICE_USER_ID,
        )

    def _photo(self, rec: UserRecord, v: _Viewing, is_self: bool) -> TLObject | None:
        if rec.photo_id is None:
            return None
        if not is_self and (
            rec.id in v.blocked_me
            or not pv.evaluate(
                v.photo_rules.get(rec.id, ()),
                v.viewer_id,
                pv.Relation(is_contact=rec.id in v.has_me, is_bot=v.viewer_is_bot),
            )
        ):
            return None
        return types.UserProfilePhoto(
            photo_id=rec.photo_id, dc_id=self.dc_id, stripped_thumb=rec.photo_stripped
        )

    async def set_photo(
        self, user_id: int, photo_id: int | None, stripped: bytes | None
    ) -> UserRecord:
        """The current profile photo (None: none)."""
        return await self._update_row(user_id, photo_id=photo_id, photo_stripped=stripped)

    async def users_for(self, viewer_id: int, ids: list[int]) -> list[types.User]:
        """The User objects ``viewer_id`` may see, in the order asked (unknown ids skipped).

        Per-viewer access hash and ``self`` flag; contact / mutual_contact flags and
        the names the viewer saved; phone and last seen as the owner's privacy
        allows; what someone who blocked the viewer hides.
        """
        recs = await self.get_many(ids)
        others = [u for u in dict.fromkeys(ids) if u in recs and u != viewer_id]
        v = await self._viewing(viewer_id, others)
        return [self._view(recs[u], v) for u in ids if u in recs]

    async def user_for(self, viewer_id: int, user_id: int) -> types.User:
        """One view; USER_ID_INVALID if the user does not exist."""
        got = await self.users_for(viewer_id, [user_id])
        if not got:
            raise RpcError(400, "USER_ID_INVALID")
        return got[0]

    async def status_views(
        self, owner_id: int, viewer_ids: Iterable[int]
    ) -> dict[int, tuple[TLObject, bool]]:
        """How each viewer sees the owner's status, and whether that view is exact.

        For pushing ``updateUserStatus``: only exact views change when the owner
        goes online or offline (a rounded one would leak the change).
        """
        rec = await self.get(owner_id)
        viewers = [u for u in dict.fromkeys(viewer_ids) if u != owner_id]
        if rec is None or rec.is_bot or not viewers:
            return {}
        now = int(time.time())
        online_until = self._online_until(owner_id)
        owner_contacts: dict[int, ContactRecord] = {}
        owner_blocked: dict[int, int] = {}
        have_owner: set[int] = set()  # viewers with the owner in their contacts
        if self.contacts is not None:
            owner_contacts = await self.contacts.contacts_of(owner_id)
            owner_blocked = await self.contacts.blocked_of(owner_id)
            have_owner = await self.contacts.owners_having(owner_id, viewers)
        if self.privacy is not None:
            rules = await self.privacy.get_rules(owner_id, pv.STATUS_TIMESTAMP)
            theirs = await self.privacy.rules_of_many(viewers, pv.STATUS_TIMESTAMP)
        else:
            rules = pv.DEFAULTS[pv.STATUS_TIMESTAMP]()
            theirs = {u: rules for u in viewers}
        viewer_recs = await self.get_many(viewers)
        out: dict[int, tuple[TLObject, bool]] = {}
        for u in viewers:
            if u in owner_blocked:
                out[u] = (types.UserStatusEmpty(), False)
                continue
            vrec = viewer_recs.get(u)
            allowed = pv.evaluate(
                rules,
                u,
                pv.Relation(is_contact=u in owner_contacts, is_bot=bool(vrec and vrec.is_bot)),
            )
            shares = pv.evaluate(
                theirs.get(u, ()),
                owner_id,
                pv.Relation(is_contact=u in have_owner),
            )
            if allowed and shares:
                out[u] = (exact_status(online_until, rec.last_seen_at, now), True)
            else:
                last = now if online_until > now else rec.last_seen_at
                out[u] = (approximate_status(last, now, by_me=allowed and not shares), False)
        return out

    async def full_user_for(self, viewer_id: int, user_id: int) -> types.users.UserFull:
        """users.getFullUser: the profile's about (as privacy allows), blocked flag..."""
        user = await self.user_for(viewer_id, user_id)
        rec = await self.get(user_id)
        assert rec is not None
        about: str | None = rec.about or None
        blocked = False
        if user_id != viewer_id:
            owner_has_viewer = False
            if self.contacts is not None:
                blocked = await self.contacts.is_blocked(viewer_id, user_id)
                owner_has_viewer = await self.contacts.is_contact(user_id, viewer_id)
                if await self.contacts.is_blocked(user_id, viewer_id):
                    about = None
            rules = (
                await self.privacy.get_rules(user_id, pv.ABOUT)
                if self.privacy is not None
                else pv.DEFAULTS[pv.ABOUT]()
            )
            if not pv.evaluate(rules, viewer_id, pv.Relation(is_contact=owner_has_viewer)):
                about = None
        profile_photo = None
        if isinstance(user.photo, types.UserProfilePhoto) and self.photo_of is not None:
            profile_photo = await self.photo_of(user.photo.photo_id)
        await self.load_notify(viewer_id)
        full = types.UserFull(
            id=user_id,
            about=about,
            profile_photo=profile_photo,
            blocked=blocked,
            settings=types.PeerSettings(),
            notify_settings=self.notify_settings(viewer_id, f"peer:{user_id}"),
            common_chats_count=0,
        )
        return types.users.UserFull(full_user=full, chats=[], users=[user])
