"""authsession: auth keys (permanent, temporary, bindings) and per-key client info.

Every encrypted packet needs its key, so keys are cached in memory after the first
read; writes go straight to the database (a key is durable before dh_gen_ok).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.service.authsession.tables import KEY_PERM, KEY_TEMP, auth_keys, authorizations

_CACHE_MAX = 100_000


@dataclass(slots=True)
class AuthKeyInfo:
    auth_key_id: int
    auth_key: bytes
    key_type: int = KEY_PERM
    created_at: int = 0
    expires_at: int | None = None
    perm_auth_key_id: int | None = None
    dc_id: int | None = None
    layer: int = 0

    @property
    def id_bytes(self) -> bytes:
        return self.auth_key_id.to_bytes(8, "little", signed=True)

    @property
    def is_temp(self) -> bool:
        return self.key_type == KEY_TEMP

    @property
    def effective_id(self) -> int:
        """The key authorizations hang on: the bound permanent key for a temp key."""
        return self.perm_auth_key_id if self.is_temp and self.perm_auth_key_id else self.auth_key_id


@dataclass(slots=True)
class ClientInfo:
    api_id: int = 0
    device_model: str = ""
    system_version: str = ""
    app_version: str = ""
    system_lang_code: str = ""
    lang_pack: str = ""
    lang_code: str = ""
    client_ip: str = ""


class AuthSessionService:
    """The authsession service's one async interface."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._cache: dict[int, AuthKeyInfo] = {}
        # permanent auth_key_id -> signed-in user (None: known to be signed out)
        self._users: dict[int, int | None] = {}

    def _row_to_info(self, row: Any) -> AuthKeyInfo:
        return AuthKeyInfo(
            auth_key_id=row.auth_key_id,
            auth_key=bytes(row.auth_key),
            key_type=row.key_type,
            created_at=row.created_at,
            expires_at=row.expires_at,
            perm_auth_key_id=row.perm_auth_key_id,
            dc_id=row.dc_id,
            layer=row.layer,
        )

    def cached_key(self, auth_key_id: int) -> AuthKeyInfo | None:
        """The key if it is in memory (expiry is the caller's check); no I/O."""
        return self._cache.get(auth_key_id)

    async def get_key(self, auth_key_id: int, now: float | None = None) -> AuthKeyInfo | None:
        """The key, or None if unknown or an expired temporary key."""
        info = self._cache.get(auth_key_id)
        if info is None:
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        sa.select(auth_keys).where(auth_keys.c.auth_key_id == auth_key_id)
                    )
                ).first()
            if row is None:
                return None
            info = self._row_to_info(row)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.pop(next(iter(self._cache)))
            self._cache[auth_key_id] = info
        if info.expires_at is not None and info.expires_at < (now or time.time()):
            return None
        return info

    async def key_exists(self, auth_key_id: int) -> bool:
        if auth_key_id in self._cache:
            return True
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(auth_keys.c.auth_key_id).where(auth_keys.c.auth_key_id == auth_key_id)
                )
            ).first()
        return row is not None

    async def create_key(self, info: AuthKeyInfo) -> bool:
        """Store a new key; False if its id is taken (the handshake answers dh_gen_retry)."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    auth_keys.insert().values(
                        auth_key_id=info.auth_key_id,
                        auth_key=info.auth_key,
                        key_type=info.key_type,
                        dc_id=info.dc_id,
                        created_at=info.created_at or int(time.time()),
                        expires_at=info.expires_at,
                    )
                )
        except IntegrityError:
            return False
        self._cache[info.auth_key_id] = info
        return True

    async def _update(self, auth_key_id: int, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                auth_keys.update().where(auth_keys.c.auth_key_id == auth_key_id).values(**values)
            )

    async def bind_temp_key(self, temp_id: int, perm_id: int, expires_at: int) -> None:
        """Bind; a permanent key has one temporary key at a time (the new one wins)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                auth_keys.update()
                .where(auth_keys.c.perm_auth_key_id == perm_id)
                .where(auth_keys.c.auth_key_id != temp_id)
                .values(perm_auth_key_id=None)
            )
            await conn.execute(
                auth_keys.update()
                .where(auth_keys.c.auth_key_id == temp_id)
                .values(perm_auth_key_id=perm_id, expires_at=expires_at)
            )
        for other in self._cache.values():
            if other.perm_auth_key_id == perm_id and other.auth_key_id != temp_id:
                other.perm_auth_key_id = None
        info = self._cache.get(temp_id)
        if info is not None:
            info.perm_auth_key_id = perm_id
            info.expires_at = expires_at

    async def set_layer(self, auth_key_id: int, layer: int) -> None:
        info = self._cache.get(auth_key_id)
        if info is not None and info.layer == layer:
            return
        await self._update(auth_key_id, layer=layer)
        if info is not None:
            info.layer = layer

    async def set_client_info(self, auth_key_id: int, client: ClientInfo) -> None:
        await self._update(
            auth_key_id,
            api_id=client.api_id,
            device_model=client.device_model[:255],
            system_version=client.system_version[:255],
            app_version=client.app_version[:255],
            system_lang_code=client.system_lang_code[:64],
            lang_pack=client.lang_pack[:64],
            lang_code=client.lang_code[:64],
            client_ip=client.client_ip[:64],
        )

    async def get_client_info(self, auth_key_id: int) -> ClientInfo | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(auth_keys).where(auth_keys.c.auth_key_id == auth_key_id)
                )
            ).first()
        if row is None:
            return None
        return ClientInfo(
            api_id=row.api_id,
            device_model=row.device_model,
            system_version=row.system_version,
            app_version=row.app_version,
            system_lang_code=row.system_lang_code,
            lang_pack=row.lang_pack,
            lang_code=row.lang_code,
            client_ip=row.client_ip,
        )

    async def destroy_key(self, auth_key_id: int) -> bool:
        self._cache.pop(auth_key_id, None)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                auth_keys.delete().where(auth_keys.c.auth_key_id == auth_key_id)
            )
        return bool(result.rowcount)

    # ----------------------------------------------------------- authorizations
    def cached_user(self, auth_key_id: int) -> int | None:
        """The signed-in user if already known in memory (no I/O)."""
        return self._users.get(auth_key_id)

    async def user_for_key(self, auth_key_id: int) -> int | None:
        """The user signed in on this (permanent) key, or None."""
        if auth_key_id in self._users:
            return self._users[auth_key_id]
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(authorizations.c.user_id).where(
                        authorizations.c.auth_key_id == auth_key_id
                    )
                )
            ).first()
        user_id = row.user_id if row is not None else None
        self._users[auth_key_id] = user_id
        return user_id

    async def bind_user(self, auth_key_id: int, user_id: int, now: int | None = None) -> int:
        """Record a sign-in on this key; returns the authorization's hash."""
        now = now or int(time.time())
        auth_hash = secrets.randbits(63) or 1
        async with self.engine.begin() as conn:
            await conn.execute(
                authorizations.delete().where(authorizations.c.auth_key_id == auth_key_id)
            )
            await conn.execute(
                authorizations.insert().values(
                    auth_key_id=auth_key_id,
                    user_id=user_id,
                    hash=auth_hash,
                    created_at=now,
                    active_at=now,
                )
            )
        self._users[auth_key_id] = user_id
        return auth_hash

    async def unbind_key(self, auth_key_id: int) -> int | None:
        """Sign out this key; returns the user it was signed in as."""
        user_id = await self.user_for_key(auth_key_id)
        async with self.engine.begin() as conn:
            await conn.execute(
                authorizations.delete().where(authorizations.c.auth_key_id == auth_key_id)
            )
        self._users[auth_key_id] = None
        return user_id
