"""biz/contacts: each user's contact list and block list.

A contact row keeps the name and phone the owner saved: Telegram shows a
contact under the owner's name for them, and a phone the owner already knows is
shown even when the contact's privacy hides it. A user's own lists are cached
after the first read (every User view consults them); questions the other way
round ("who has me as a contact", "who blocked me") go to the database, where
``ix_contacts_contact`` and the primary keys answer them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.infra.invalidation import (
    CacheTopic,
    Invalidations,
    Key,
    LocalInvalidations,
    drop_keys,
)
from teamgram.service.biz.tables import blocked, contacts

# Cache invalidation topics (split mode): owners whose contact / block list changed.
TOPIC_CONTACTS = "contacts"
TOPIC_BLOCKED = "blocked"

# Owners whose lists stay in memory; the oldest is forgotten past this.
_CACHE_MAX = 50_000
# A query's IN list is split so no database meets its parameter limit.
_CHUNK = 500
# Questions about this few owners are answered from their cached lists (the
# users of one message or one answer); more go to the database in one query.
_FROM_CACHE_MAX = 8


@dataclass(slots=True)
class ContactRecord:
    owner_id: int
    contact_id: int
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    created_at: int = 0


def contacts_hash(values: Iterable[int]) -> int:
    """Telegram's 64-bit list hash (the one clients compute for ``hash`` arguments)."""
    mask = (1 << 64) - 1
    h = 0
    for v in values:
        h ^= h >> 21
        h ^= (h << 35) & mask
        h ^= h >> 4
        h = (h + (v & mask)) & mask
    return h - (1 << 64) if h >> 63 else h


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


class ContactService:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._contacts: dict[int, dict[int, ContactRecord]] = {}
        self._blocked: dict[int, dict[int, int]] = {}  # owner -> peer -> date
        # Other processes' changes drop cached lists (split mode; see use_invalidations).
        self.invalidations: Invalidations = LocalInvalidations()
        self._contacts_topic = CacheTopic(TOPIC_CONTACTS, self._drop_contacts)
        self._blocked_topic = CacheTopic(TOPIC_BLOCKED, self._drop_blocked)

    def use_invalidations(self, invalidations: Invalidations) -> None:
        """Publish this process's changes there, and drop what other processes change."""
        self.invalidations = invalidations
        self._contacts_topic.attach(invalidations)
        self._blocked_topic.attach(invalidations)

    def _drop_contacts(self, owners: list[Key] | None) -> None:
        drop_keys(self._contacts, owners)

    def _drop_blocked(self, owners: list[Key] | None) -> None:
        drop_keys(self._blocked, owners)

    # ----------------------------------------------------------------- contacts
    async def contacts_of(self, owner_id: int) -> dict[int, ContactRecord]:
        """The owner's contacts by user id (the cached dict: do not change it)."""
        got = self._contacts.get(owner_id)
        if got is not None:
            return got
        token = self._contacts_topic.token()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(contacts)
                .where(contacts.c.owner_id == owner_id)
                .order_by(contacts.c.created_at, contacts.c.contact_id)
            )
            got = {
                r.contact_id: ContactRecord(
                    r.owner_id, r.contact_id, r.first_name, r.last_name, r.phone, r.created_at
                )
                for r in rows
            }
        if not self._contacts_topic.clean(token, [owner_id]):
            return got  # a change raced the read: not kept
        if len(self._contacts) >= _CACHE_MAX:
            self._contacts.pop(next(iter(self._contacts)))
        self._contacts[owner_id] = got
        return got

    async def is_contact(self, owner_id: int, other_id: int) -> bool:
        return other_id in await self.contacts_of(owner_id)

    async def owners_having(self, contact_id: int, among: Iterable[int] | None = None) -> set[int]:
        """Users who have ``contact_id`` in their contacts (restricted to ``among``)."""
        if among is not None:
            ids = list(dict.fromkeys(among))
            if len(ids) <= _FROM_CACHE_MAX:  # a message's few users: their cached lists
                return {o for o in ids if contact_id in await self.contacts_of(o)}
        query = sa.select(contacts.c.owner_id).where(contacts.c.contact_id == contact_id)
        if among is None:
            async with self.engine.connect() as conn:
                return {r.owner_id for r in await conn.execute(query)}
        ids = list(dict.fromkeys(among))
        out: set[int] = set()
        if not ids:
            return out
        async with self.engine.connect() as conn:
            for part in _chunks(ids):
                rows = await conn.execute(query.where(contacts.c.owner_id.in_(part)))
                out.update(r.owner_id for r in rows)
        return out

    async def add(
        self, owner_id: int, contact_id: int, first_name: str, last_name: str, phone: str
    ) -> ContactRecord:
        """Add or rename a contact (the row keeps its first date)."""
        mine = await self.contacts_of(owner_id)
        old = mine.get(contact_id)
        rec = ContactRecord(
            owner_id,
            contact_id,
            first_name,
            last_name,
            phone,
            old.created_at if old else int(time.time()),
        )
        values = {"first_name": first_name, "last_name": last_name, "phone": phone}
        update = (
            contacts.update()
            .where(contacts.c.owner_id == owner_id, contacts.c.contact_id == contact_id)
            .values(**values)
        )
        try:
            async with self.engine.begin() as conn:
                if not (await conn.execute(update)).rowcount:
                    await conn.execute(
                        contacts.insert().values(
                            owner_id=owner_id,
                            contact_id=contact_id,
                            created_at=rec.created_at,
                            **values,
                        )
                    )
        except IntegrityError:  # a concurrent add inserted it first
            async with self.engine.begin() as conn:
                await conn.execute(update)
        mine[contact_id] = rec
        self._contacts_topic.changed([owner_id])
        return rec

    async def delete(self, owner_id: int, contact_ids: Iterable[int]) -> list[int]:
        """Remove contacts; returns the ids that were contacts."""
        mine = await self.contacts_of(owner_id)
        gone = [c for c in dict.fromkeys(contact_ids) if c in mine]
        if not gone:
            return []
        async with self.engine.begin() as conn:
            for part in _chunks(gone):
                await conn.execute(
                    contacts.delete().where(
                        contacts.c.owner_id == owner_id, contacts.c.contact_id.in_(part)
                    )
                )
        for c in gone:
            mine.pop(c, None)
        self._contacts_topic.changed([owner_id])
        return gone

    # ------------------------------------------------------------------- blocks
    async def blocked_of(self, owner_id: int) -> dict[int, int]:
        """Peers the owner blocked, with the date (the cached dict: do not change it)."""
        got = self._blocked.get(owner_id)
        if got is not None:
            return got
        token = self._blocked_topic.token()
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(blocked).where(blocked.c.owner_id == owner_id))
            got = {r.peer_id: r.created_at for r in rows}
        if not self._blocked_topic.clean(token, [owner_id]):
            return got  # a change raced the read: not kept
        if len(self._blocked) >= _CACHE_MAX:
            self._blocked.pop(next(iter(self._blocked)))
        self._blocked[owner_id] = got
        return got

    async def is_blocked(self, owner_id: int, peer_id: int) -> bool:
        return peer_id in await self.blocked_of(owner_id)

    async def blockers_of(self, peer_id: int, among: Iterable[int]) -> set[int]:
        """Those of ``among`` who blocked ``peer_id``."""
        ids = list(dict.fromkeys(among))
        out: set[int] = set()
        if not ids:
            return out
        if len(ids) <= _FROM_CACHE_MAX:
            return {o for o in ids if peer_id in await self.blocked_of(o)}
        async with self.engine.connect() as conn:
            for part in _chunks(ids):
                rows = await conn.execute(
                    sa.select(blocked.c.owner_id).where(
                        blocked.c.peer_id == peer_id, blocked.c.owner_id.in_(part)
                    )
                )
                out.update(r.owner_id for r in rows)
        return out

    async def block(self, owner_id: int, peer_id: int) -> bool:
        """Block; False if already blocked."""
        mine = await self.blocked_of(owner_id)
        if peer_id in mine:
            return False
        now = int(time.time())
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    blocked.insert().values(owner_id=owner_id, peer_id=peer_id, created_at=now)
                )
        except IntegrityError:  # a concurrent block got there first
            return False
        mine[peer_id] = now
        self._blocked_topic.changed([owner_id])
        return True

    async def unblock(self, owner_id: int, peer_id: int) -> bool:
        """Unblock; False if it was not blocked."""
        mine = await self.blocked_of(owner_id)
        if peer_id not in mine:
            return False
        async with self.engine.begin() as conn:
            await conn.execute(
                blocked.delete().where(blocked.c.owner_id == owner_id, blocked.c.peer_id == peer_id)
            )
        mine.pop(peer_id, None)
        self._blocked_topic.changed([owner_id])
        return True

    async def blocked_page(
        self, owner_id: int, offset: int, limit: int
    ) -> tuple[int, list[tuple[int, int]]]:
        """(total, [(peer_id, date)]) newest first, for contacts.getBlocked."""
        mine = await self.blocked_of(owner_id)
        ordered = sorted(mine.items(), key=lambda kv: (-kv[1], -kv[0]))
        return len(ordered), ordered[max(offset, 0) : max(offset, 0) + max(limit, 0)]
