"""authsession: auth keys, authorizations (signed-in devices), login codes, QR login
tokens, 2FA passwords and the flood limits that guard them.

Every encrypted packet needs its key, so keys are cached in memory after the first
read; writes go straight to the database (a key is durable before dh_gen_ok). Sign-in
state is persisted the same way, so a restart keeps every device signed in; the
in-memory maps are caches only (and the pending SRP challenges, which are
single-use secrets that a restart may safely forget).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from teamgram.config import AuthConfig
from teamgram.errors import RpcError, flood_wait
from teamgram.infra.invalidation import (
    LOAD_TRIES,
    CacheTopic,
    Invalidations,
    Key,
    LocalInvalidations,
    drop_keys,
)
from teamgram.service.authsession.codes import CodeDelivery, choose_code, codes_match
from teamgram.service.authsession.srp import (
    KdfAlgo,
    SrpSessions,
    StoredPassword,
    accept_new_password,
    account_password,
    new_algo,
)
from teamgram.service.authsession.tables import (
    KEY_PERM,
    KEY_TEMP,
    account_ttl,
    auth_floods,
    auth_keys,
    authorizations,
    login_tokens,
    phone_codes,
    user_passwords,
)
from teamgram.tl import TLObject, types

log = logging.getLogger(__name__)

_CACHE_MAX = 100_000
# Cache invalidation topics (split mode): auth key ids whose row changed (temp key
# binding, layer, deletion); permanent key ids whose sign-in changed; user ids whose
# 2FA password changed.
TOPIC_AUTH_KEYS = "auth.keys"
TOPIC_AUTH_USERS = "auth.users"
TOPIC_PASSWORDS = "auth.passwords"
# Keys re-read per query when other processes changed keys sessions hold here.
_REFRESH_CHUNK = 500
LOGIN_TOKEN_BYTES = 32
ACCOUNT_TTL_MIN_DAYS = 30
ACCOUNT_TTL_MAX_DAYS = 730
PASSWORD_HINT_MAX = 128
_CLIENT_COLUMNS = (
    "api_id",
    "device_model",
    "system_version",
    "app_version",
    "system_lang_code",
    "lang_pack",
    "lang_code",
    "client_ip",
)


@dataclass(slots=True, weakref_slot=True)
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


@dataclass(slots=True)
class PhoneCode:
    """A login code sent by auth.sendCode (a phone_codes row)."""

    phone_code_hash: str
    phone: str
    code: str
    auth_key_id: int
    created_at: int
    expires_at: int
    attempts: int = 0
    canceled: bool = False
    verified: bool = False


@dataclass(slots=True)
class AuthorizationRecord:
    """A signed-in device: the permanent key, its user, and when it signed in."""

    auth_key_id: int
    user_id: int
    hash: int
    created_at: int
    active_at: int
    password_pending: bool = False


@dataclass(slots=True)
class PasswordRecord:
    """A user's 2FA password (SRP verifier and algo), hint and recovery email."""

    password: StoredPassword
    hint: str = ""
    email: str = ""


@dataclass(slots=True)
class LoginToken:
    """A QR login token exported by a new device, accepted by a signed-in one."""

    token: bytes
    auth_key_id: int
    expires_at: int
    accepted_user_id: int | None = None


def _phone_code(row: Any) -> PhoneCode:
    return PhoneCode(
        phone_code_hash=row.phone_code_hash,
        phone=row.phone,
        code=row.code,
        auth_key_id=row.auth_key_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        attempts=row.attempts,
        canceled=bool(row.canceled),
        verified=bool(row.verified),
    )


def _authorization(row: Any) -> AuthorizationRecord:
    return AuthorizationRecord(
        auth_key_id=row.auth_key_id,
        user_id=row.user_id,
        hash=row.hash,
        created_at=row.created_at,
        active_at=row.active_at,
        password_pending=bool(row.password_pending),
    )


def _login_token(row: Any) -> LoginToken:
    return LoginToken(
        token=bytes(row.token),
        auth_key_id=row.auth_key_id,
        expires_at=row.expires_at,
        accepted_user_id=row.accepted_user_id,
    )


class AuthSessionService:
    """The authsession service's one async interface."""

    def __init__(
        self, engine: AsyncEngine, config: AuthConfig | None = None, dev_login_code: str = ""
    ) -> None:
        self.engine = engine
        self.config = config or AuthConfig()
        self.dev_login_code = dev_login_code
        self.delivery = CodeDelivery(self.config)
        self.srp = SrpSessions()
        self._cache: dict[int, AuthKeyInfo] = {}
        # permanent auth_key_id -> signed-in user (None: known to be signed out, or
        # signed in with the 2FA password still to be checked)
        self._users: dict[int, int | None] = {}
        self._unbinding: set[int] = set()  # keys whose sign-out is being written
        # user -> password (None: none set); a cache of user_passwords
        self._passwords: OrderedDict[int, PasswordRecord | None] = OrderedDict()
        # user -> the new_algo last offered by account.getPassword, so a new password
        # must extend the salt this server chose (see srp.accept_new_password)
        self._offered: OrderedDict[int, KdfAlgo] = OrderedDict()
        # Flood counters are read-modified-written: one at a time within the process.
        self._flood_lock = asyncio.Lock()
        # Other processes' changes drop cached entries (split mode; see use_invalidations).
        self.invalidations: Invalidations = LocalInvalidations()
        self._keys_topic = CacheTopic(TOPIC_AUTH_KEYS, self._drop_keys)
        self._users_topic = CacheTopic(TOPIC_AUTH_USERS, self._drop_users)
        self._passwords_topic = CacheTopic(TOPIC_PASSWORDS, self._drop_passwords)
        # Every AuthKeyInfo handed out, by key id: sessions hold theirs past the cache,
        # so a key changed elsewhere is re-read into them (:meth:`_refresh_keys`).
        self._handed: dict[int, list[weakref.ref[AuthKeyInfo]]] = {}
        self._stale: dict[int, None] = {}  # handed-out key ids to re-read
        self._refresher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop background work (code deliveries in flight)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refresher
        await self.delivery.close()

    # ------------------------------------------------------------- invalidation
    def use_invalidations(self, invalidations: Invalidations) -> None:
        """Publish this process's changes there, and drop what other processes change."""
        self.invalidations = invalidations
        self._keys_topic.attach(invalidations)
        self._users_topic.attach(invalidations)
        self._passwords_topic.attach(invalidations)

    def _drop_keys(self, ids: list[Key] | None) -> None:
        if ids is None:
            self._cache.clear()
            self._refresh_later(list(self._handed))
        else:
            for i in ids:
                self._cache.pop(int(i), None)
            self._refresh_later(int(i) for i in ids)

    def _drop_users(self, ids: list[Key] | None) -> None:
        drop_keys(self._users, ids)

    def _drop_passwords(self, ids: list[Key] | None) -> None:
        # A challenge made for an old password fails its check (SRP_PASSWORD_CHANGED)
        # once the password is read again; a user's are dropped at once when named.
        drop_keys(self._passwords, ids)
        for i in ids or ():
            self.srp.forget_user(int(i))

    def _copies(self, auth_key_id: int) -> list[AuthKeyInfo]:
        """Every live copy of the key handed out here (the cached one among them)."""
        return [c for ref in list(self._handed.get(auth_key_id, ())) if (c := ref()) is not None]

    def _hand_out(self, info: AuthKeyInfo) -> AuthKeyInfo:
        refs = self._handed.setdefault(info.auth_key_id, [])
        refs.append(weakref.ref(info, partial(self._forget_copy, info.auth_key_id)))
        return info

    def _forget_copy(self, auth_key_id: int, ref: weakref.ref[AuthKeyInfo]) -> None:
        refs = self._handed.get(auth_key_id)
        if refs is not None:
            with contextlib.suppress(ValueError):
                refs.remove(ref)
            if not refs:
                del self._handed[auth_key_id]

    def _refresh_later(self, ids: Iterable[int]) -> None:
        for i in ids:
            if i in self._handed:
                self._stale[i] = None
        if self._stale and (self._refresher is None or self._refresher.done()):
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_keys())

    async def _refresh_keys(self) -> None:
        """Re-read the keys in ``_stale`` into every copy handed out (a session keeps
        its copy: a temp key unbound or a key destroyed elsewhere must show there)."""
        failures = 0
        while self._stale:
            ids = list(self._stale)[:_REFRESH_CHUNK]
            for i in ids:
                del self._stale[i]
            k = auth_keys.c
            token = self._keys_topic.token()
            try:
                async with self.engine.connect() as conn:
                    rows = {
                        r.auth_key_id: r
                        for r in await conn.execute(
                            sa.select(
                                k.auth_key_id, k.perm_auth_key_id, k.expires_at, k.layer
                            ).where(k.auth_key_id.in_(ids))
                        )
                    }
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("authsession: re-reading changed keys failed (%s); retrying", exc)
                self._stale.update(dict.fromkeys(ids))
                await asyncio.sleep(1.0)
                continue
            failures = 0
            for i in ids:
                if not self._keys_topic.clean(token, [i]):
                    self._stale[i] = None  # changed here or elsewhere meanwhile: again
                    continue
                row = rows.get(i)
                for info in self._copies(i):
                    if row is None:  # destroyed: expired, for every session holding it
                        info.expires_at = 0
                        info.perm_auth_key_id = None
                    else:
                        info.perm_auth_key_id = row.perm_auth_key_id
                        info.expires_at = row.expires_at
                        info.layer = row.layer

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
        info = self._cache.get(auth_key_id) or await self._load_key(auth_key_id)
        if info is None:
            return None
        if info.expires_at is not None and info.expires_at < (now or time.time()):
            return None
        return info

    async def _load_key(self, auth_key_id: int) -> AuthKeyInfo | None:
        """Read a key into the cache. A read that a change of the key raced is not
        cached but done again; the last one is used as read (and re-read soon)."""
        info: AuthKeyInfo | None = None
        for _ in range(LOAD_TRIES):
            token = self._keys_topic.token()
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        sa.select(auth_keys).where(auth_keys.c.auth_key_id == auth_key_id)
                    )
                ).first()
            cached = self._cache.get(auth_key_id)
            if cached is not None:  # loaded meanwhile: one copy
                return cached
            if row is None:
                return None
            info = self._hand_out(self._row_to_info(row))
            if self._keys_topic.clean(token, [auth_key_id]):
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[auth_key_id] = info
                return info
        self._refresh_later([auth_key_id])
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
        self._cache[info.auth_key_id] = self._hand_out(info)
        return True

    async def _update(self, auth_key_id: int, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                auth_keys.update().where(auth_keys.c.auth_key_id == auth_key_id).values(**values)
            )

    async def bind_temp_key(self, temp_id: int, perm_id: int, expires_at: int) -> None:
        """Bind; a permanent key has one temporary key at a time (the new one wins)."""
        async with self.engine.begin() as conn:
            # The temp keys that lose their binding: other processes must hear of them.
            unbound = [
                r.auth_key_id
                for r in await conn.execute(
                    sa.select(auth_keys.c.auth_key_id)
                    .where(auth_keys.c.perm_auth_key_id == perm_id)
                    .where(auth_keys.c.auth_key_id != temp_id)
                )
            ]
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
            # initConnection often rides on the temp key before it is bound: the
            # permanent key (the signed-in device) takes over its app info.
            temp = (
                await conn.execute(
                    sa.select(*(auth_keys.c[c] for c in _CLIENT_COLUMNS)).where(
                        auth_keys.c.auth_key_id == temp_id
                    )
                )
            ).first()
            if temp is not None and (temp.api_id or temp.device_model):
                await conn.execute(
                    auth_keys.update()
                    .where(auth_keys.c.auth_key_id == perm_id)
                    .values(**{c: getattr(temp, c) for c in _CLIENT_COLUMNS})
                )
        for other_id in unbound:
            for other in self._copies(other_id):
                other.perm_auth_key_id = None
        for info in self._copies(temp_id):
            info.perm_auth_key_id = perm_id
            info.expires_at = expires_at
        self._keys_topic.changed([temp_id, *unbound])

    async def set_layer(self, auth_key_id: int, layer: int) -> None:
        info = self._cache.get(auth_key_id)
        if info is not None and info.layer == layer:
            return
        await self._update(auth_key_id, layer=layer)
        for copy in self._copies(auth_key_id):
            copy.layer = layer
        self._keys_topic.changed([auth_key_id])

    async def set_client_info(self, auth_key_id: int, client: ClientInfo) -> None:
        """Remember initConnection's app info; a bound temp key's goes to its permanent
        key too, which is what account.getAuthorizations lists."""
        values = {
            "api_id": client.api_id,
            "device_model": client.device_model[:255],
            "system_version": client.system_version[:255],
            "app_version": client.app_version[:255],
            "system_lang_code": client.system_lang_code[:64],
            "lang_pack": client.lang_pack[:64],
            "lang_code": client.lang_code[:64],
            "client_ip": client.client_ip[:64],
        }
        await self._update(auth_key_id, **values)
        info = self._cache.get(auth_key_id)
        if info is not None and info.is_temp and info.perm_auth_key_id:
            await self._update(info.perm_auth_key_id, **values)

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
        """Delete the key; a device signed in with it is signed out (no ghost device)."""
        self._cache.pop(auth_key_id, None)
        async with self.engine.begin() as conn:
            result = await conn.execute(
                auth_keys.delete().where(auth_keys.c.auth_key_id == auth_key_id)
            )
            await conn.execute(
                authorizations.delete().where(authorizations.c.auth_key_id == auth_key_id)
            )
            await conn.execute(
                login_tokens.delete().where(login_tokens.c.auth_key_id == auth_key_id)
            )
        self._users[auth_key_id] = None
        for copy in self._copies(auth_key_id):  # a session may hold one: expired
            copy.expires_at = 0
            copy.perm_auth_key_id = None
        self._keys_topic.changed([auth_key_id])
        self._users_topic.changed([auth_key_id])
        return bool(result.rowcount)

    # ----------------------------------------------------------- authorizations
    def cached_user(self, auth_key_id: int) -> int | None:
        """The signed-in user if already known in memory (no I/O)."""
        return self._users.get(auth_key_id)

    async def user_for_key(self, auth_key_id: int) -> int | None:
        """The user signed in on this (permanent) key, or None.

        None too while the 2FA password is still to be checked: such a key may only
        finish signing in (account.getPassword, auth.checkPassword).
        """
        user_id: int | None = None
        for _ in range(LOAD_TRIES):
            if auth_key_id in self._users:
                return self._users[auth_key_id]
            token = self._users_topic.token()
            rec = await self.authorization_of_key(auth_key_id)
            user_id = rec.user_id if rec is not None and not rec.password_pending else None
            # A sign-in or sign-out that raced the read: not kept, read again.
            if self._users_topic.clean(token, [auth_key_id]):
                self._users[auth_key_id] = user_id
                return user_id
        return user_id

    async def bind_user(
        self,
        auth_key_id: int,
        user_id: int,
        now: int | None = None,
        *,
        password_pending: bool = False,
    ) -> int:
        """Record a sign-in on this key; returns the authorization's hash.

        ``password_pending``: the code was right but the account has a 2FA password;
        the key counts as signed out until :meth:`confirm_password`.
        """
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
                    password_pending=password_pending,
                )
            )
        self._users[auth_key_id] = None if password_pending else user_id
        self._users_topic.changed([auth_key_id])
        return auth_hash

    async def unbind_key(self, auth_key_id: int) -> int | None:
        """Sign out this key (or drop its half-finished 2FA sign-in); returns its user."""
        self._users[auth_key_id] = None  # at once, for sessions opened meanwhile
        # Also at once: a call right behind auth.logOut (Telethon answers logOut on
        # its ack) must not find a pending 2FA sign-in while the delete waits.
        self._unbinding.add(auth_key_id)
        try:
            async with self.engine.begin() as conn:
                row = (
                    await conn.execute(
                        sa.select(authorizations.c.user_id).where(
                            authorizations.c.auth_key_id == auth_key_id
                        )
                    )
                ).first()
                await conn.execute(
                    authorizations.delete().where(authorizations.c.auth_key_id == auth_key_id)
                )
        finally:
            self._unbinding.discard(auth_key_id)
        self._users[auth_key_id] = None
        self._users_topic.changed([auth_key_id])
        return row.user_id if row is not None else None

    async def unbind_others(self, user_id: int, keep_auth_key_id: int) -> list[int]:
        """auth.resetAuthorizations: sign out every device of the user but this one."""
        cond = sa.and_(
            authorizations.c.user_id == user_id,
            authorizations.c.auth_key_id != keep_auth_key_id,
        )
        async with self.engine.begin() as conn:
            keys = [
                r.auth_key_id
                for r in await conn.execute(sa.select(authorizations.c.auth_key_id).where(cond))
            ]
            await conn.execute(authorizations.delete().where(cond))
        for key in keys:
            self._users[key] = None
        self._users_topic.changed(keys)
        return keys

    async def authorization_of_key(self, auth_key_id: int) -> AuthorizationRecord | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(authorizations).where(authorizations.c.auth_key_id == auth_key_id)
                )
            ).first()
        return _authorization(row) if row is not None else None

    async def authorizations_of(self, user_id: int) -> list[AuthorizationRecord]:
        """Every device signed in as the user (2FA-pending ones included), oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(authorizations)
                .where(authorizations.c.user_id == user_id)
                .order_by(authorizations.c.created_at, authorizations.c.auth_key_id)
            )
            return [_authorization(r) for r in rows]

    async def pending_password_user(self, auth_key_id: int) -> int | None:
        """The user this key is signing in as while its 2FA password is unchecked."""
        if auth_key_id in self._unbinding:
            return None
        rec = await self.authorization_of_key(auth_key_id)
        if auth_key_id in self._unbinding:
            return None
        return rec.user_id if rec is not None and rec.password_pending else None

    async def confirm_password(self, auth_key_id: int, now: int | None = None) -> int | None:
        """The password was right: the key is signed in. Returns the user (None: no
        sign-in was pending on this key)."""
        user_id = await self.pending_password_user(auth_key_id)
        if user_id is None:
            return None
        async with self.engine.begin() as conn:
            await conn.execute(
                authorizations.update()
                .where(authorizations.c.auth_key_id == auth_key_id)
                .values(password_pending=False, active_at=now or int(time.time()))
            )
        self._users[auth_key_id] = user_id
        self._users_topic.changed([auth_key_id])
        return user_id

    # ------------------------------------------------------------------ login codes
    async def send_code(
        self, phone: str, auth_key_id: int, client_ip: str = "", now: int | None = None
    ) -> PhoneCode:
        """Issue a code for ``phone`` to this key and deliver it (auth.sendCode).

        FLOOD_WAIT while the phone is blocked for wrong codes, or past the send limits
        per phone and per client address. The key's earlier codes for the phone stop
        working; another device's do not (two devices may sign in at once).
        """
        now = now or int(time.time())
        cfg = self.config
        await self._check_blocked(f"code_fail:{phone}", now)
        await self._count(f"send:{phone}", cfg.send_code_per_phone, now)
        if client_ip:
            await self._count(f"send_ip:{client_ip}", cfg.send_code_per_ip, now)
        rec = PhoneCode(
            phone_code_hash=secrets.token_hex(9),
            phone=phone,
            code=choose_code(
                phone,
                length=cfg.code_length,
                dev_login_code=self.dev_login_code,
                test_numbers=cfg.test_phone_numbers,
            ),
            auth_key_id=auth_key_id,
            created_at=now,
            expires_at=now + cfg.code_ttl_seconds,
        )
        async with self.engine.begin() as conn:
            await conn.execute(phone_codes.delete().where(phone_codes.c.expires_at < now))
            await conn.execute(
                phone_codes.update()
                .where(phone_codes.c.phone == phone)
                .where(phone_codes.c.auth_key_id == auth_key_id)
                .values(canceled=True)
            )
            await conn.execute(
                phone_codes.insert().values(
                    phone_code_hash=rec.phone_code_hash,
                    phone=rec.phone,
                    code=rec.code,
                    auth_key_id=rec.auth_key_id,
                    created_at=rec.created_at,
                    expires_at=rec.expires_at,
                )
            )
        self.delivery.deliver(phone, rec.code)
        return rec

    async def resend_code(
        self,
        phone: str,
        phone_code_hash: str,
        auth_key_id: int,
        client_ip: str = "",
        now: int | None = None,
    ) -> PhoneCode:
        """Deliver the same code again (auth.resendCode), restarting its lifetime.

        FLOOD_WAIT before ``resend_timeout_seconds`` since the last send (the timeout
        sentCode announced) and past the send limits.
        """
        now = now or int(time.time())
        cfg = self.config
        await self._check_blocked(f"code_fail:{phone}", now)
        rec = await self._live_code(phone, phone_code_hash, auth_key_id, now)
        wait = rec.created_at + cfg.resend_timeout_seconds - now
        if wait > 0:
            raise flood_wait(wait)
        await self._count(f"send:{phone}", cfg.send_code_per_phone, now)
        if client_ip:
            await self._count(f"send_ip:{client_ip}", cfg.send_code_per_ip, now)
        rec.created_at, rec.expires_at = now, now + cfg.code_ttl_seconds
        async with self.engine.begin() as conn:
            await conn.execute(
                phone_codes.update()
                .where(phone_codes.c.phone_code_hash == rec.phone_code_hash)
                .values(created_at=rec.created_at, expires_at=rec.expires_at)
            )
        self.delivery.deliver(phone, rec.code)
        return rec

    async def cancel_code(self, phone: str, phone_code_hash: str, auth_key_id: int) -> bool:
        """auth.cancelCode: the code stops working; False if there was no such code."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                phone_codes.update()
                .where(phone_codes.c.phone_code_hash == phone_code_hash)
                .where(phone_codes.c.phone == phone)
                .where(phone_codes.c.auth_key_id == auth_key_id)
                .values(canceled=True)
            )
        return bool(result.rowcount)

    async def check_code(
        self,
        phone: str,
        phone_code_hash: str,
        code: str,
        auth_key_id: int,
        now: int | None = None,
    ) -> PhoneCode:
        """The code auth.signIn names, if ``code`` is right.

        PHONE_CODE_EXPIRED for an unknown, expired, canceled or foreign hash (another
        phone's, or one sent to another key); PHONE_CODE_INVALID for a wrong code.
        ``max_code_attempts`` wrong codes for one phone within the failure window
        burn the code and block the phone: FLOOD_WAIT for every attempt (and every
        sendCode) until the block ends.
        """
        now = now or int(time.time())
        cfg = self.config
        fail_key = f"code_fail:{phone}"
        await self._check_blocked(fail_key, now)
        rec = await self._live_code(phone, phone_code_hash, auth_key_id, now)
        if not codes_match(rec.code, code):
            async with self.engine.begin() as conn:
                await conn.execute(
                    phone_codes.update()
                    .where(phone_codes.c.phone_code_hash == rec.phone_code_hash)
                    .values(attempts=phone_codes.c.attempts + 1)
                )
            if await self._fail(fail_key, cfg.max_code_attempts, now):
                await self.cancel_code(phone, rec.phone_code_hash, auth_key_id)
                raise flood_wait(cfg.failure_flood_wait_seconds)
            raise RpcError(400, "PHONE_CODE_INVALID")
        await self._flood_clear(fail_key)
        return rec

    async def mark_code_verified(self, phone_code_hash: str) -> None:
        """auth.signIn accepted the code of a phone with no account: signUp may use it."""
        async with self.engine.begin() as conn:
            await conn.execute(
                phone_codes.update()
                .where(phone_codes.c.phone_code_hash == phone_code_hash)
                .values(verified=True)
            )

    async def verified_code(
        self, phone: str, phone_code_hash: str, auth_key_id: int, now: int | None = None
    ) -> PhoneCode:
        """The code auth.signUp names: signIn must have accepted it (PHONE_CODE_INVALID)."""
        rec = await self._live_code(phone, phone_code_hash, auth_key_id, now or int(time.time()))
        if not rec.verified:
            raise RpcError(400, "PHONE_CODE_INVALID")
        return rec

    async def consume_code(self, phone_code_hash: str) -> None:
        """The code signed someone in: it cannot be used again."""
        async with self.engine.begin() as conn:
            await conn.execute(
                phone_codes.delete().where(phone_codes.c.phone_code_hash == phone_code_hash)
            )

    async def _live_code(
        self, phone: str, phone_code_hash: str, auth_key_id: int, now: int
    ) -> PhoneCode:
        if not phone_code_hash:
            raise RpcError(400, "PHONE_CODE_HASH_EMPTY")
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(phone_codes).where(phone_codes.c.phone_code_hash == phone_code_hash)
                )
            ).first()
        if (
            row is None
            or row.phone != phone
            or row.auth_key_id != auth_key_id
            or row.canceled
            or row.expires_at <= now
        ):
            raise RpcError(400, "PHONE_CODE_EXPIRED")
        return _phone_code(row)

    # ----------------------------------------------------------------- flood control
    async def flood_blocked_for(self, key: str, now: int | None = None) -> int:
        """Seconds ``key`` stays blocked (0: not blocked)."""
        now = now or int(time.time())
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(auth_floods.c.blocked_until).where(
                        auth_floods.c.flood_key == key[:96]
                    )
                )
            ).first()
        return max(0, row.blocked_until - now) if row is not None else 0

    async def _check_blocked(self, key: str, now: int) -> None:
        wait = await self.flood_blocked_for(key, now)
        if wait > 0:
            raise flood_wait(wait)

    async def _hit(self, conn: AsyncConnection, key: str, window: int, now: int) -> tuple[int, int]:
        """Count one event for ``key`` in its fixed window; returns (hits, window start)."""
        row = (
            await conn.execute(sa.select(auth_floods).where(auth_floods.c.flood_key == key))
        ).first()
        if row is None:
            await conn.execute(
                auth_floods.insert().values(
                    flood_key=key, hits=1, window_start=now, blocked_until=0
                )
            )
            return 1, now
        hits, start = row.hits + 1, row.window_start
        if now >= start + window:
            hits, start = 1, now
        await conn.execute(
            auth_floods.update()
            .where(auth_floods.c.flood_key == key)
            .values(hits=hits, window_start=start)
        )
        return hits, start

    async def _count(self, key: str, limit: int, now: int) -> None:
        """A rate limit: more than ``limit`` events in the window gets FLOOD_WAIT until
        the window ends."""
        window = self.config.send_window_seconds
        async with self._flood_lock, self.engine.begin() as conn:
            hits, start = await self._hit(conn, key[:96], window, now)
        if hits > limit:
            raise flood_wait(start + window - now)

    async def _fail(self, key: str, limit: int, now: int) -> bool:
        """A failure limit: the ``limit``-th failure in the window blocks ``key`` for
        ``failure_flood_wait_seconds`` (and starts a fresh count for afterwards)."""
        cfg = self.config
        async with self._flood_lock, self.engine.begin() as conn:
            hits, _ = await self._hit(conn, key[:96], cfg.failure_window_seconds, now)
            if hits < limit:
                return False
            await conn.execute(
                auth_floods.update()
                .where(auth_floods.c.flood_key == key[:96])
                .values(
                    hits=0, window_start=now, blocked_until=now + cfg.failure_flood_wait_seconds
                )
            )
        return True

    async def _flood_clear(self, key: str) -> None:
        async with self._flood_lock, self.engine.begin() as conn:
            await conn.execute(auth_floods.delete().where(auth_floods.c.flood_key == key[:96]))

    # ------------------------------------------------------------------ 2FA passwords
    async def get_password(self, user_id: int) -> PasswordRecord | None:
        if user_id in self._passwords:
            return self._passwords[user_id]
        token = self._passwords_topic.token()
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(user_passwords).where(user_passwords.c.user_id == user_id)
                )
            ).first()
        rec = None
        if row is not None:
            rec = PasswordRecord(
                password=StoredPassword(
                    algo=KdfAlgo(salt1=bytes(row.salt1), salt2=bytes(row.salt2)),
                    verifier=bytes(row.verifier),
                ),
                hint=row.hint,
                email=row.email,
            )
        if self._passwords_topic.clean(token, [user_id]):  # else a change raced the read
            self._remember(self._passwords, user_id, rec)
        return rec

    async def set_password(self, user_id: int, rec: PasswordRecord | None) -> None:
        """Set, change (``rec``) or remove (None) the user's 2FA password."""
        async with self.engine.begin() as conn:
            await conn.execute(user_passwords.delete().where(user_passwords.c.user_id == user_id))
            if rec is not None:
                await conn.execute(
                    user_passwords.insert().values(
                        user_id=user_id,
                        salt1=rec.password.algo.salt1,
                        salt2=rec.password.algo.salt2,
                        verifier=rec.password.verifier,
                        hint=rec.hint,
                        email=rec.email,
                    )
                )
        self._remember(self._passwords, user_id, rec)
        # Challenges computed for the old password are useless now.
        self.srp.forget_user(user_id)
        self._offered.pop(user_id, None)
        self._passwords_topic.changed([user_id])

    async def password_info(self, user_id: int) -> types.account.Password:
        """account.getPassword: a fresh SRP challenge if a password is set, and the
        algo (with this server's salts) to set a new one with."""
        rec = await self.get_password(user_id)
        challenge = None
        if rec is not None:
            # Two 2048-bit modexps: off the event loop.
            challenge = await asyncio.to_thread(self.srp.start, user_id, rec.password)
        offered = new_algo()
        self._remember(self._offered, user_id, offered)
        return account_password(
            challenge, offered=offered, hint=(rec.hint or None) if rec else None
        )

    async def check_password(
        self, user_id: int, password: TLObject, now: int | None = None
    ) -> None:
        """Check an InputCheckPasswordSRP (srp.SrpSessions.check's errors).

        ``max_password_attempts`` wrong passwords within the failure window block the
        account's password checks: FLOOD_WAIT until the block ends.
        """
        now = now or int(time.time())
        fail_key = f"password_fail:{user_id}"
        await self._check_blocked(fail_key, now)
        rec = await self.get_password(user_id)
        current = rec.password if rec is not None else None
        try:
            await asyncio.to_thread(self.srp.check, password, user_id=user_id, current=current)
        except RpcError as exc:
            if exc.message == "PASSWORD_HASH_INVALID" and await self._fail(
                fail_key, self.config.max_password_attempts, now
            ):
                raise flood_wait(self.config.failure_flood_wait_seconds) from exc
            raise
        await self._flood_clear(fail_key)

    async def update_password(
        self, user_id: int, password: TLObject, new_settings: types.account.PasswordInputSettings
    ) -> None:
        """account.updatePasswordSettings: the current password (if any) must check out;
        then set, change or remove it, or change only the hint / email."""
        await self.check_password(user_id, password)
        rec = await self.get_password(user_id)
        hint = new_settings.hint
        if hint is not None and len(hint) > PASSWORD_HINT_MAX:
            raise RpcError(400, "NEW_SETTINGS_INVALID")
        if new_settings.new_algo is None and new_settings.new_password_hash is None:
            if rec is None:
                raise RpcError(400, "NEW_SETTINGS_EMPTY")
            new_rec: PasswordRecord | None = PasswordRecord(
                password=rec.password,
                hint=rec.hint if hint is None else hint,
                email=rec.email if new_settings.email is None else new_settings.email[:255],
            )
        else:
            stored = await asyncio.to_thread(
                accept_new_password,
                new_settings.new_algo,
                new_settings.new_password_hash,
                offered=self._offered.get(user_id),
            )
            new_rec = None
            if stored is not None:
                new_rec = PasswordRecord(
                    password=stored, hint=hint or "", email=(new_settings.email or "")[:255]
                )
        await self.set_password(user_id, new_rec)

    @staticmethod
    def _remember(cache: OrderedDict[int, Any], key: int, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > _CACHE_MAX:
            cache.popitem(last=False)

    # ------------------------------------------------------------------- QR login
    async def new_login_token(self, auth_key_id: int, now: int | None = None) -> LoginToken:
        """auth.exportLoginToken: a fresh token for this key (its older ones are void)."""
        now = now or int(time.time())
        tok = LoginToken(
            token=os.urandom(LOGIN_TOKEN_BYTES),
            auth_key_id=auth_key_id,
            expires_at=now + self.config.login_token_ttl_seconds,
        )
        async with self.engine.begin() as conn:
            await conn.execute(
                login_tokens.delete().where(
                    sa.or_(
                        login_tokens.c.auth_key_id == auth_key_id,
                        login_tokens.c.expires_at < now,
                    )
                )
            )
            await conn.execute(
                login_tokens.insert().values(
                    token=tok.token, auth_key_id=auth_key_id, expires_at=tok.expires_at
                )
            )
        return tok

    async def login_token(self, token: bytes) -> LoginToken | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(login_tokens).where(login_tokens.c.token == token))
            ).first()
        return _login_token(row) if row is not None else None

    async def accepted_login_token(
        self, auth_key_id: int, now: int | None = None
    ) -> LoginToken | None:
        """This key's token that a signed-in device accepted (and is still fresh)."""
        now = now or int(time.time())
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(login_tokens)
                    .where(login_tokens.c.auth_key_id == auth_key_id)
                    .where(login_tokens.c.accepted_user_id.is_not(None))
                    .where(login_tokens.c.expires_at >= now)
                )
            ).first()
        return _login_token(row) if row is not None else None

    async def accept_login_token(
        self, token: bytes, user_id: int, now: int | None = None
    ) -> LoginToken:
        """auth.acceptLoginToken by a signed-in device of ``user_id``.

        AUTH_TOKEN_INVALID (unknown), AUTH_TOKEN_EXPIRED, AUTH_TOKEN_ALREADY_ACCEPTED.
        The token stays valid one more lifetime for the new device to collect it.
        """
        now = now or int(time.time())
        tok = await self.login_token(token)
        if tok is None:
            raise RpcError(400, "AUTH_TOKEN_INVALID")
        if tok.accepted_user_id is not None:
            raise RpcError(400, "AUTH_TOKEN_ALREADY_ACCEPTED")
        if tok.expires_at < now:
            raise RpcError(400, "AUTH_TOKEN_EXPIRED")
        tok.accepted_user_id = user_id
        tok.expires_at = now + self.config.login_token_ttl_seconds
        async with self.engine.begin() as conn:
            result = await conn.execute(
                login_tokens.update()
                .where(login_tokens.c.token == token)
                .where(login_tokens.c.accepted_user_id.is_(None))
                .values(accepted_user_id=user_id, expires_at=tok.expires_at)
            )
        if not result.rowcount:  # another device accepted it in between
            raise RpcError(400, "AUTH_TOKEN_ALREADY_ACCEPTED")
        return tok

    async def drop_login_tokens(self, auth_key_id: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                login_tokens.delete().where(login_tokens.c.auth_key_id == auth_key_id)
            )

    # ------------------------------------------------------------------ account TTL
    async def get_account_ttl(self, user_id: int) -> int:
        """Days without activity after which the account may be deleted."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(account_ttl.c.days).where(account_ttl.c.user_id == user_id)
                )
            ).first()
        return row.days if row is not None else self.config.account_ttl_days

    async def set_account_ttl(self, user_id: int, days: int) -> None:
        """TTL_DAYS_INVALID outside Telegram's range (a month to two years)."""
        if not ACCOUNT_TTL_MIN_DAYS <= days <= ACCOUNT_TTL_MAX_DAYS:
            raise RpcError(400, "TTL_DAYS_INVALID")
        async with self.engine.begin() as conn:
            await conn.execute(account_ttl.delete().where(account_ttl.c.user_id == user_id))
            await conn.execute(account_ttl.insert().values(user_id=user_id, days=days))
