"""biz/users: accounts, profiles, usernames, and the User objects each viewer sees.

Access hashes are per viewer (Telegram's model): HMAC(secret, viewer | user), so
they need no storage and a hash obtained by one user is useless to another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.errors import RpcError
from teamgram.service.biz.tables import users
from teamgram.service.idgen.service import IdGenService
from teamgram.tl import types

# Telegram's official notifications account ("Telegram", login codes).
SERVICE_USER_ID = 777000


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
    )


def load_secret(data_dir: Path, name: str = "access_hash_secret") -> bytes:
    path = data_dir / name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(os.urandom(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_bytes()


class UserService:
    """The users part of biz. Contacts, privacy and status plug in for views."""

    def __init__(self, engine: AsyncEngine, idgen: IdGenService, secret: bytes) -> None:
        self.engine = engine
        self.idgen = idgen
        self.secret = secret
        self._cache: dict[int, UserRecord] = {}

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
    async def create(self, phone: str, first_name: str, last_name: str = "") -> UserRecord:
        """A new account; PHONE_NUMBER_OCCUPIED if the phone already has one."""
        rec = UserRecord(
            id=await self.idgen.next_user_id(),
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

    async def get(self, user_id: int) -> UserRecord | None:
        return (await self.get_many([user_id])).get(user_id)

    async def get_many(self, ids: list[int] | set[int]) -> dict[int, UserRecord]:
        out = {i: self._cache[i] for i in ids if i in self._cache}
        missing = [i for i in ids if i not in out]
        if missing:
            async with self.engine.connect() as conn:
                rows = await conn.execute(sa.select(users).where(users.c.id.in_(missing)))
                for row in rows:
                    rec = _record(row)
                    self._cache[rec.id] = rec
                    out[rec.id] = rec
        return out

    async def by_phone(self, phone: str) -> UserRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.phone == phone))).first()
        if row is None:
            return None
        rec = _record(row)
        self._cache[rec.id] = rec
        return rec

    # -------------------------------------------------------------------- views
    async def users_for(self, viewer_id: int, ids: list[int]) -> list[types.User]:
        """The User objects ``viewer_id`` may see (per-viewer access hash, self flag).

        Privacy (phone, status, photo), contact flags and status are applied here
        as those services are plugged in.
        """
        recs = await self.get_many(ids)
        out: list[types.User] = []
        for uid in ids:
            rec = recs.get(uid)
            if rec is None:
                continue
            is_self = uid == viewer_id
            out.append(
                types.User(
                    id=rec.id,
                    self=is_self,
                    access_hash=self.access_hash(viewer_id, uid),
                    first_name=rec.first_name or None,
                    last_name=rec.last_name or None,
                    username=rec.username,
                    phone=rec.phone if is_self else None,
                    status=None if is_self else types.UserStatusRecently(),
                    deleted=rec.deleted,
                    bot=rec.is_bot,
                )
            )
        return out
