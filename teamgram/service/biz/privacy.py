"""biz/privacy: who may see what of a user (phone, last seen, photo, about...).

Rules are kept exactly as Telegram states them: a ``Vector<PrivacyRule>`` per
(user, key), serialized, so every rule kind a client sets round-trips even where
this server cannot yet evaluate it (close friends, premium). A user who never set
a key has Telegram's defaults, which are not stored (a later change of default
reaches every such user).

Evaluation (:func:`evaluate`) follows Telegram's precedence: a rule naming the
viewer wins over a rule naming a chat the viewer is in, which wins over a
category (bots, contacts, close friends, premium), which wins over everybody /
nobody. Within a level, disallow wins. Nothing matching means "not allowed".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.infra.invalidation import (
    LOAD_TRIES,
    CacheTopic,
    Invalidations,
    Key,
    LocalInvalidations,
)
from teamgram.service.biz.tables import user_privacy
from teamgram.tl import TLDecodeError, TLObject, decode, types
from teamgram.tl.core import write_vector_objects

# Key names as stored, with the input and output constructors of each.
KEYS: dict[str, tuple[type[TLObject], type[TLObject]]] = {
    "status_timestamp": (types.InputPrivacyKeyStatusTimestamp, types.PrivacyKeyStatusTimestamp),
    "chat_invite": (types.InputPrivacyKeyChatInvite, types.PrivacyKeyChatInvite),
    "phone_call": (types.InputPrivacyKeyPhoneCall, types.PrivacyKeyPhoneCall),
    "phone_p2p": (types.InputPrivacyKeyPhoneP2P, types.PrivacyKeyPhoneP2P),
    "forwards": (types.InputPrivacyKeyForwards, types.PrivacyKeyForwards),
    "profile_photo": (types.InputPrivacyKeyProfilePhoto, types.PrivacyKeyProfilePhoto),
    "phone_number": (types.InputPrivacyKeyPhoneNumber, types.PrivacyKeyPhoneNumber),
    "added_by_phone": (types.InputPrivacyKeyAddedByPhone, types.PrivacyKeyAddedByPhone),
    "voice_messages": (types.InputPrivacyKeyVoiceMessages, types.PrivacyKeyVoiceMessages),
    "about": (types.InputPrivacyKeyAbout, types.PrivacyKeyAbout),
    "birthday": (types.InputPrivacyKeyBirthday, types.PrivacyKeyBirthday),
    "star_gifts_auto_save": (
        types.InputPrivacyKeyStarGiftsAutoSave,
        types.PrivacyKeyStarGiftsAutoSave,
    ),
    "no_paid_messages": (types.InputPrivacyKeyNoPaidMessages, types.PrivacyKeyNoPaidMessages),
    "saved_music": (types.InputPrivacyKeySavedMusic, types.PrivacyKeySavedMusic),
}
_BY_INPUT: dict[type[TLObject], str] = {inp: name for name, (inp, _out) in KEYS.items()}

# Cache invalidation topic (split mode): ids of users whose rules changed.
TOPIC_PRIVACY = "privacy"

PHONE_NUMBER = "phone_number"
STATUS_TIMESTAMP = "status_timestamp"
PROFILE_PHOTO = "profile_photo"
ABOUT = "about"


def _everybody() -> list[TLObject]:
    return [types.PrivacyValueAllowAll()]


def _contacts_only() -> list[TLObject]:
    return [types.PrivacyValueAllowContacts(), types.PrivacyValueDisallowAll()]


# Telegram's defaults for a new account: the phone number (and birthday, and
# peer-to-peer calls) only for contacts; everything else for everybody.
_SHARED_DEFAULTS: dict[str, list[TLObject]] = {}

DEFAULTS: dict[str, Callable[[], list[TLObject]]] = {
    "status_timestamp": _everybody,
    "chat_invite": _everybody,
    "phone_call": _everybody,
    "phone_p2p": _contacts_only,
    "forwards": _everybody,
    "profile_photo": _everybody,
    "phone_number": _contacts_only,
    "added_by_phone": _everybody,
    "voice_messages": _everybody,
    "about": _everybody,
    "birthday": _contacts_only,
    "star_gifts_auto_save": _everybody,
    "no_paid_messages": _contacts_only,
    "saved_music": _everybody,
}


def key_name(input_key: TLObject) -> str:
    """The stored name of an ``InputPrivacyKey``; PRIVACY_KEY_INVALID if unknown."""
    name = _BY_INPUT.get(type(input_key))
    if name is None:
        raise RpcError(400, "PRIVACY_KEY_INVALID")
    return name


def key_object(name: str) -> TLObject:
    """The ``PrivacyKey`` constructor clients get back for a stored key name."""
    return KEYS[name][1]()


@dataclass(frozen=True, slots=True)
class Relation:
    """What the owner's rules may ask about a viewer."""

    is_contact: bool = False  # the owner has the viewer in their contacts
    is_close_friend: bool = False
    is_premium: bool = False
    is_bot: bool = False
    chat_ids: frozenset[int] = frozenset()  # chats the viewer shares with the owner


def evaluate(rules: Iterable[TLObject], viewer_id: int, rel: Relation) -> bool:
    """Whether ``rules`` (``PrivacyRule`` objects) let ``viewer_id`` see the item."""
    rules = list(rules)
    # 1. The viewer named in person.
    for r in rules:
        if isinstance(r, types.PrivacyValueDisallowUsers) and viewer_id in r.users:
            return False
    for r in rules:
        if isinstance(r, types.PrivacyValueAllowUsers) and viewer_id in r.users:
            return True
    # 2. A chat the viewer is in.
    if rel.chat_ids:
        for r in rules:
            if isinstance(r, types.PrivacyValueDisallowChatParticipants) and rel.chat_ids & set(
                r.chats
            ):
                return False
        for r in rules:
            if isinstance(r, types.PrivacyValueAllowChatParticipants) and rel.chat_ids & set(
                r.chats
            ):
                return True
    # 3. Categories.
    kinds = {type(r) for r in rules}
    if rel.is_bot and types.PrivacyValueDisallowBots in kinds:
        return False
    if rel.is_contact and types.PrivacyValueDisallowContacts in kinds:
        return False
    if rel.is_bot and types.PrivacyValueAllowBots in kinds:
        return True
    if rel.is_contact and types.PrivacyValueAllowContacts in kinds:
        return True
    if rel.is_close_friend and types.PrivacyValueAllowCloseFriends in kinds:
        return True
    if rel.is_premium and types.PrivacyValueAllowPremium in kinds:
        return True
    # 4. Everybody / nobody.
    if types.PrivacyValueDisallowAll in kinds:
        return False
    return types.PrivacyValueAllowAll in kinds


def from_input_rules(
    rules: Iterable[TLObject], resolve_user: Callable[[TLObject], int]
) -> list[TLObject]:
    """``InputPrivacyRule`` objects to stored ``PrivacyRule`` ones (users by id).

    ``resolve_user`` turns an ``InputUser`` into an id or raises USER_ID_INVALID.
    """
    out: list[TLObject] = []
    for r in rules:
        if isinstance(r, types.InputPrivacyValueAllowUsers):
            out.append(types.PrivacyValueAllowUsers(users=_ids(r.users, resolve_user)))
        elif isinstance(r, types.InputPrivacyValueDisallowUsers):
            out.append(types.PrivacyValueDisallowUsers(users=_ids(r.users, resolve_user)))
        elif isinstance(r, types.InputPrivacyValueAllowChatParticipants):
            out.append(types.PrivacyValueAllowChatParticipants(chats=list(r.chats)))
        elif isinstance(r, types.InputPrivacyValueDisallowChatParticipants):
            out.append(types.PrivacyValueDisallowChatParticipants(chats=list(r.chats)))
        else:
            simple = _SIMPLE.get(type(r))
            if simple is None:
                raise RpcError(400, "PRIVACY_VALUE_INVALID")
            out.append(simple())
    return out


def _ids(users: Iterable[TLObject], resolve_user: Callable[[TLObject], int]) -> list[int]:
    return list(dict.fromkeys(resolve_user(u) for u in users))


_SIMPLE: dict[type[TLObject], Callable[[], TLObject]] = {
    types.InputPrivacyValueAllowContacts: types.PrivacyValueAllowContacts,
    types.InputPrivacyValueAllowAll: types.PrivacyValueAllowAll,
    types.InputPrivacyValueDisallowContacts: types.PrivacyValueDisallowContacts,
    types.InputPrivacyValueDisallowAll: types.PrivacyValueDisallowAll,
    types.InputPrivacyValueAllowCloseFriends: types.PrivacyValueAllowCloseFriends,
    types.InputPrivacyValueAllowPremium: types.PrivacyValueAllowPremium,
    types.InputPrivacyValueAllowBots: types.PrivacyValueAllowBots,
    types.InputPrivacyValueDisallowBots: types.PrivacyValueDisallowBots,
}


def mentioned_users(rules: Iterable[TLObject]) -> list[int]:
    """User ids the rules name (account.privacyRules carries their User objects)."""
    out: dict[int, None] = {}
    for r in rules:
        if isinstance(r, types.PrivacyValueAllowUsers | types.PrivacyValueDisallowUsers):
            out.update(dict.fromkeys(r.users))
    return list(out)


def with_user_allowed(rules: list[TLObject], user_id: int) -> list[TLObject]:
    """``rules`` changed so ``user_id`` is allowed by name (addContact's phone exception)."""
    out: list[TLObject] = []
    added = False
    for r in rules:
        if isinstance(r, types.PrivacyValueDisallowUsers):
            rest = [u for u in r.users if u != user_id]
            if rest:
                out.append(types.PrivacyValueDisallowUsers(users=rest))
        elif isinstance(r, types.PrivacyValueAllowUsers):
            users = list(r.users) if user_id in r.users else [*r.users, user_id]
            out.append(types.PrivacyValueAllowUsers(users=users))
            added = True
        else:
            out.append(r)
    if not added:
        out.insert(0, types.PrivacyValueAllowUsers(users=[user_id]))
    return out


def _dump(rules: list[TLObject]) -> bytes:
    b = bytearray()
    write_vector_objects(b, rules)
    return bytes(b)


def _load(data: bytes) -> list[TLObject] | None:
    try:
        value = decode(data)
    except TLDecodeError:
        return None
    return list(value) if isinstance(value, list) else None


class PrivacyService:
    """Stored privacy rules per (user, key), cached after the first read."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # (user_id, key) -> rules; a user's keys are read together on first use
        self._cache: dict[tuple[int, str], list[TLObject]] = {}
        self._loaded: set[int] = set()
        # Other processes' changes drop cached rules (split mode; see use_invalidations).
        self.invalidations: Invalidations = LocalInvalidations()
        self._rules = CacheTopic(TOPIC_PRIVACY, self._drop_users)

    def use_invalidations(self, invalidations: Invalidations) -> None:
        """Publish this process's changes there, and drop what other processes change."""
        self.invalidations = invalidations
        self._rules.attach(invalidations)

    def _drop_users(self, user_ids: list[Key] | None) -> None:
        if user_ids is None:
            self._cache.clear()
            self._loaded.clear()
            return
        for u in user_ids:
            self._loaded.discard(int(u))
            for key in KEYS:
                self._cache.pop((int(u), key), None)

    async def _fetch(self, user_ids: list[int]) -> dict[tuple[int, str], list[TLObject]]:
        out: dict[tuple[int, str], list[TLObject]] = {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(user_privacy).where(user_privacy.c.user_id.in_(user_ids))
            )
            for row in rows:
                rules = _load(bytes(row.rules))
                if rules is not None and row.key in KEYS:
                    out[(row.user_id, row.key)] = rules
        return out

    async def _load_users(self, user_ids: Iterable[int], key: str) -> dict[int, list[TLObject]]:
        """The users' rules for ``key``, those not in memory read (and kept) first.

        A read that a change raced (another process's, or this one's) is not kept:
        read again, and after :data:`LOAD_TRIES` answered from the database alone.
        """
        ids = list(dict.fromkeys(user_ids))
        missing = [u for u in ids if u not in self._loaded]
        for _ in range(LOAD_TRIES):
            if not missing:
                return {u: self._cached(u, key) for u in ids}
            token = self._rules.token()
            fetched = await self._fetch(missing)
            if self._rules.clean(token, missing):
                self._cache.update(fetched)
                self._loaded.update(missing)
            # Users kept before the read may have been dropped during it: again.
            missing = [u for u in ids if u not in self._loaded]
        if not missing:
            return {u: self._cached(u, key) for u in ids}
        fetched = await self._fetch(ids)
        return {u: fetched.get((u, key)) or self._default(key) for u in ids}

    async def get_rules(self, user_id: int, key: str) -> list[TLObject]:
        """The user's rules for ``key`` (Telegram's default when never set)."""
        return (await self._load_users([user_id], key))[user_id]

    async def rules_of_many(self, user_ids: Iterable[int], key: str) -> dict[int, list[TLObject]]:
        """Rules of many owners at once (one query for those not cached yet)."""
        return await self._load_users(user_ids, key)

    def _cached(self, user_id: int, key: str) -> list[TLObject]:
        rules = self._cache.get((user_id, key))
        if rules is not None:
            return rules
        return self._default(key)

    @staticmethod
    def _default(key: str) -> list[TLObject]:
        # Shared like the cached lists (nobody changes them in place): building the
        # defaults anew for every owner of every User view was a hot spot.
        default = _SHARED_DEFAULTS.get(key)
        if default is None:
            default = _SHARED_DEFAULTS[key] = DEFAULTS[key]()
        return default

    async def set_rules(self, user_id: int, key: str, rules: list[TLObject]) -> list[TLObject]:
        await self._load_users([user_id], key)
        data = _dump(rules)
        async with self.engine.begin() as conn:
            done = await conn.execute(
                user_privacy.update()
                .where(user_privacy.c.user_id == user_id, user_privacy.c.key == key)
                .values(rules=data)
            )
            if not done.rowcount:
                await conn.execute(
                    user_privacy.insert().values(user_id=user_id, key=key, rules=data)
                )
        self._cache[(user_id, key)] = list(rules)
        self._rules.changed([user_id])
        return list(rules)

    async def allow_user(self, user_id: int, key: str, other_id: int) -> list[TLObject]:
        """Add ``other_id`` to the key's exceptions (allowed by name)."""
        rules = await self.get_rules(user_id, key)
        return await self.set_rules(user_id, key, with_user_allowed(rules, other_id))
