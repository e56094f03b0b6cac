"""Cache invalidation between processes, on real Redis and a real shared database.

Two "processes" (A and B) are two sets of the cached services, each over its own
engine on one database (SQLite file, MariaDB, PostgreSQL) and its own
:class:`RedisInvalidations` on one channel prefix. A changes a record B has
cached; B must read the new value within a bounded wait (:data:`WAIT`). Killing
B's pub/sub connection (``CLIENT KILL``) must make B drop everything it cached.

Redis is this machine's (``TEAMGRAM_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``); each test uses a channel prefix of its own.
Unreachable Redis fails the tests when ``CI=true`` and skips them anywhere else.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from teamgram.infra.database import open_database
from teamgram.infra.group_commit import GroupCommit
from teamgram.infra.invalidation import RedisInvalidations, decode
from teamgram.service.authsession.service import (
    AuthKeyInfo,
    AuthSessionService,
    PasswordRecord,
)
from teamgram.service.authsession.srp import KdfAlgo, StoredPassword
from teamgram.service.biz import privacy as pv
from teamgram.service.biz.channel import ChannelService, full_admin_rights
from teamgram.service.biz.chat import ChatService
from teamgram.service.biz.contacts import ContactService
from teamgram.service.biz.users import UserService
from teamgram.service.idgen.service import IdGenService
from teamgram.tl import types
from tests.integration.conftest import unavailable

pytestmark = pytest.mark.timeout(120)

REDIS_URL = os.environ.get("TEAMGRAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# How long B may take to see A's change (a publish, a pub/sub hop, a drop, a read).
WAIT = 2.0
SECRET = b"x" * 32
FOREVER = 2**31 - 1

_redis_unreachable: list[str] = []


async def _check_redis() -> None:
    if not _redis_unreachable:
        client = Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        try:
            await client.ping()
            _redis_unreachable.append("")
        except Exception as exc:
            _redis_unreachable.append(f"{REDIS_URL}: {type(exc).__name__}: {exc}")
        finally:
            await client.aclose()
    if _redis_unreachable[0]:
        unavailable("redis", _redis_unreachable[0])


@dataclass
class Side:
    """One process's cached services over its own engine and its own invalidations."""

    engine: Any
    invalidations: RedisInvalidations
    users: UserService
    chats: ChatService
    channels: ChannelService
    privacy: pv.PrivacyService
    contacts: ContactService
    auth: AuthSessionService
    writers: list[GroupCommit] = field(default_factory=list)

    async def close(self) -> None:
        for w in self.writers:
            await w.stop()
        await self.invalidations.close()
        await self.auth.close()
        await self.engine.dispose()


async def _side(url: str, prefix: str) -> Side:
    engine = await open_database(url)
    invs = RedisInvalidations(REDIS_URL, prefix=prefix)
    side = Side(
        engine=engine,
        invalidations=invs,
        users=UserService(engine, IdGenService(engine), SECRET),
        chats=ChatService(engine),
        channels=ChannelService(engine, SECRET),
        privacy=pv.PrivacyService(engine),
        contacts=ContactService(engine),
        auth=AuthSessionService(engine),
    )
    for svc in (side.users, side.chats, side.channels, side.privacy, side.contacts, side.auth):
        svc.use_invalidations(invs)
    await invs.start()
    return side


@pytest.fixture
async def sides(database_url: str) -> AsyncIterator[tuple[Side, Side]]:
    await _check_redis()
    prefix = f"tg_test_{secrets.token_hex(6)}:"
    a = await _side(database_url, prefix)
    try:
        b = await _side(database_url, prefix)
        try:
            yield a, b
        finally:
            await b.close()
    finally:
        await a.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Poll ``check`` until true (at most :data:`WAIT` seconds); returns the wait."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await check():
        if loop.time() - start > WAIT:
            raise AssertionError(f"B did not see {what} within {WAIT} s")
        await asyncio.sleep(0.01)
    return loop.time() - start


def _phone() -> str:
    return str(secrets.randbelow(10**9) + 10**9)


# ------------------------------------------------------------------------ users
async def test_user_profile_username_and_photo(sides: tuple[Side, Side]) -> None:
    a, b = sides
    rec = await a.users.create(_phone(), "Ann")
    seen = await b.users.get(rec.id)
    assert seen is not None and seen.first_name == "Ann"
    assert b.users._cache[rec.id] is seen  # cached in B

    await a.users.update_profile(rec.id, first_name="Bea", about="hi")

    async def renamed() -> bool:
        got = await b.users.get(rec.id)
        return got is not None and got.first_name == "Bea" and got.about == "hi"

    await eventually(renamed, "the new name")

    name = f"user{secrets.token_hex(4)}"
    await a.users.set_username(rec.id, name)

    async def named() -> bool:
        got = await b.users.get(rec.id)
        return got is not None and got.username == name

    await eventually(named, "the username")
    holder = await b.users.by_username(name)
    assert holder is not None and holder.id == rec.id

    await a.users.set_photo(rec.id, 555, b"\x01\x02")

    async def photo() -> bool:
        got = await b.users.get(rec.id)
        return got is not None and got.photo_id == 555

    await eventually(photo, "the photo")

    await b.users.load_notify(rec.id)
    await a.users.set_notify_settings(rec.id, "users", types.PeerNotifySettings(mute_until=FOREVER))

    async def muted() -> bool:
        return (await b.users.get_notify_settings(rec.id, "users")).mute_until == FOREVER

    await eventually(muted, "the notify settings")


# ------------------------------------------------------------------------ chats
async def test_chat_title_and_members(sides: tuple[Side, Side]) -> None:
    a, b = sides
    chat = await a.chats.create(1, "one", [2])
    seen = await b.chats.get(chat.id)
    assert seen is not None and set(seen.members) == {1, 2}

    await a.chats.set_title(chat.id, "two", 1)

    async def titled() -> bool:
        got = await b.chats.get(chat.id)
        return got is not None and got.title == "two"

    await eventually(titled, "the chat title")

    await a.chats.add_member(chat.id, 3, 1)

    async def added() -> bool:
        got = await b.chats.get(chat.id)
        return got is not None and 3 in got.members and got.version == chat.version

    await eventually(added, "the new member")

    await a.chats.remove_member(chat.id, 2, 1)

    async def removed() -> bool:
        got = await b.chats.get(chat.id)
        return got is not None and 2 not in got.members

    await eventually(removed, "the member gone")


# --------------------------------------------------------------------- channels
async def test_channel_title_participants_admins_and_bans(sides: tuple[Side, Side]) -> None:
    a, b = sides
    writer = GroupCommit(a.engine)
    a.writers.append(writer)
    rec = await a.channels.create(1, "news", "", broadcast=False)
    seen = await b.channels.get(rec.id)
    assert seen is not None and seen.members == {1}
    assert await b.channels.channels_of(2) == set()  # cached: not a member
    version = seen.version

    await a.channels.set_title(rec, "more news", 1)

    async def titled() -> bool:
        got = await b.channels.get(rec.id)
        return got is not None and got.title == "more news"

    await eventually(titled, "the channel title")
    reloaded = await b.channels.get(rec.id)
    assert reloaded is not None and reloaded.version != version  # views built before are stale

    added = a.channels.plan_members(rec, [2, 3], 1)
    await writer.run(lambda tx: a.channels.write_in(tx, rec, add=added))

    async def joined() -> bool:
        got = await b.channels.get(rec.id)
        return (
            got is not None and {2, 3} <= got.members and rec.id in await b.channels.channels_of(2)
        )

    await eventually(joined, "the new participants")

    await a.channels.edit_admin(rec, 1, 2, full_admin_rights(False), "boss")

    async def promoted() -> bool:
        got = await b.channels.get(rec.id)
        return got is not None and got.is_admin(2) and "ban_users" in got.admin_rights_of(2)

    await eventually(promoted, "the admin rights")

    _, after = a.channels.plan_banned(
        rec, 1, 3, types.ChatBannedRights(until_date=0, view_messages=True)
    )
    assert after is not None
    await writer.run(lambda tx: a.channels.write_in(tx, rec, add=[after]))

    async def banned() -> bool:
        got = await b.channels.get(rec.id)
        return (
            got is not None
            and 3 not in got.members
            and not got.readable_by(3)
            and rec.id not in await b.channels.channels_of(3)
        )

    await eventually(banned, "the ban")

    await a.channels.set_default_rights(
        rec, 1, types.ChatBannedRights(until_date=0, send_media=True)
    )

    async def restricted() -> bool:
        got = await b.channels.get(rec.id)
        return got is not None and "send_media" in got.restrictions_of(2 + 100)

    await eventually(restricted, "the default rights")


# ---------------------------------------------------------- privacy and contacts
async def test_privacy_rules_contacts_and_blocks(sides: tuple[Side, Side]) -> None:
    a, b = sides
    user = 4242
    assert await b.privacy.get_rules(user, pv.PHONE_NUMBER) == pv.DEFAULTS[pv.PHONE_NUMBER]()
    rules = [types.PrivacyValueDisallowAll()]
    await a.privacy.set_rules(user, pv.PHONE_NUMBER, rules)

    async def hidden() -> bool:
        got = await b.privacy.rules_of_many([user, user + 1], pv.PHONE_NUMBER)
        return got[user] == rules

    await eventually(hidden, "the privacy rules")

    assert await b.contacts.contacts_of(user) == {}
    assert not await b.contacts.is_blocked(user, 7)
    await a.contacts.add(user, 7, "Seven", "", "777")
    await a.contacts.block(user, 8)

    async def listed() -> bool:
        return await b.contacts.is_contact(user, 7) and await b.contacts.is_blocked(user, 8)

    await eventually(listed, "the contact and the block")
    await a.contacts.delete(user, [7])
    await a.contacts.unblock(user, 8)

    async def unlisted() -> bool:
        return not await b.contacts.is_contact(user, 7) and not await b.contacts.is_blocked(user, 8)

    await eventually(unlisted, "the contact and the block gone")


# ------------------------------------------------------------------- auth keys
def _key_id() -> int:
    return secrets.randbits(63)


async def test_sign_in_sign_out_and_temp_key_binding(sides: tuple[Side, Side]) -> None:
    a, b = sides
    perm = AuthKeyInfo(auth_key_id=_key_id(), auth_key=secrets.token_bytes(256))
    temp = AuthKeyInfo(
        auth_key_id=_key_id(), auth_key=secrets.token_bytes(256), key_type=1, expires_at=FOREVER
    )
    assert await a.auth.create_key(perm) and await a.auth.create_key(temp)
    held = await b.auth.get_key(temp.auth_key_id)  # B hosts a session on the temp key
    assert held is not None and held.perm_auth_key_id is None
    assert await b.auth.user_for_key(perm.auth_key_id) is None  # cached: signed out

    # Sign-in on A.
    await a.auth.bind_user(perm.auth_key_id, 77)

    async def signed_in() -> bool:
        return await b.auth.user_for_key(perm.auth_key_id) == 77

    await eventually(signed_in, "the sign-in")

    # Temp key bound on A: B's cached key and the copy its session holds.
    await a.auth.bind_temp_key(temp.auth_key_id, perm.auth_key_id, FOREVER)

    async def bound() -> bool:
        got = await b.auth.get_key(temp.auth_key_id)
        return got is not None and got.perm_auth_key_id == perm.auth_key_id

    await eventually(bound, "the temp key binding")

    async def held_bound() -> bool:
        return held.perm_auth_key_id == perm.auth_key_id

    await eventually(held_bound, "the binding in the held copy")

    # A second temp key bound on A unbinds the first, in B too.
    temp2 = AuthKeyInfo(
        auth_key_id=_key_id(), auth_key=secrets.token_bytes(256), key_type=1, expires_at=FOREVER
    )
    assert await a.auth.create_key(temp2)
    await a.auth.bind_temp_key(temp2.auth_key_id, perm.auth_key_id, FOREVER)

    async def unbound() -> bool:
        got = await b.auth.get_key(temp.auth_key_id)
        return got is not None and got.perm_auth_key_id is None and held.perm_auth_key_id is None

    await eventually(unbound, "the old temp key unbound")

    # Sign-out on A.
    await a.auth.unbind_key(perm.auth_key_id)

    async def signed_out() -> bool:
        return await b.auth.user_for_key(perm.auth_key_id) is None

    await eventually(signed_out, "the sign-out")

    # A 2FA password set on A.
    assert await b.auth.get_password(77) is None
    pw = PasswordRecord(
        password=StoredPassword(algo=KdfAlgo(salt1=b"1" * 40, salt2=b"2" * 16), verifier=b"v" * 256)
    )
    await a.auth.set_password(77, pw)

    async def password() -> bool:
        got = await b.auth.get_password(77)
        return got is not None and got.password.verifier == b"v" * 256

    await eventually(password, "the password")

    # The key destroyed on A: gone in B, and expired in the copy B's session holds.
    held_perm = await b.auth.get_key(perm.auth_key_id)
    assert held_perm is not None
    await a.auth.destroy_key(perm.auth_key_id)

    async def destroyed() -> bool:
        return await b.auth.get_key(perm.auth_key_id) is None and held_perm.expires_at == 0

    await eventually(destroyed, "the key destroyed")


# ----------------------------------------------------- the channel and reconnects
async def test_one_tick_is_one_message_and_own_messages_are_ignored(
    sides: tuple[Side, Side],
) -> None:
    a, b = sides
    raw = b.invalidations.redis.pubsub()
    await raw.subscribe(a.invalidations.channel)
    try:
        assert (await raw.get_message(timeout=2.0) or {}).get("type") == "subscribe"
        heard: list[Any] = []
        b.invalidations.subscribe("t", heard.append)
        a.invalidations.subscribe("t", heard.append)  # A never hears itself
        a.invalidations.publish("t", [1, 2])
        a.invalidations.publish("t", ["x"])
        a.invalidations.publish("u", [3])
        msg = await raw.get_message(timeout=2.0)
        assert msg is not None and msg["type"] == "message"
        assert decode(msg["data"]) == (a.invalidations.instance_id, {"t": [1, 2, "x"], "u": [3]})
        assert await raw.get_message(timeout=0.2) is None  # one message for the tick

        async def delivered() -> bool:
            return heard == [[1, 2, "x"]]

        await eventually(delivered, "the keys")
        await asyncio.sleep(0.1)
        assert heard == [[1, 2, "x"]]
    finally:
        await raw.aclose()


async def _kill_subscription(side: Side) -> None:
    """Close B's pub/sub connection on the server side, as a network failure would."""
    admin = Redis.from_url(REDIS_URL)
    try:
        name = f"tg-inval-{side.invalidations.instance_id}"
        clients = await admin.client_list(_type="pubsub")
        ids = [c["id"] for c in clients if c.get("name") == name]
        assert ids, f"no pub/sub connection named {name}"
        for cid in ids:
            await admin.client_kill_filter(_id=cid)
    finally:
        await admin.aclose()


async def test_a_lost_subscription_drops_everything(sides: tuple[Side, Side]) -> None:
    a, b = sides
    rec = await a.users.create(_phone(), "Ann")
    assert await b.users.get(rec.id) is not None
    chat = await a.chats.create(1, "c", [])
    assert await b.chats.get(chat.id) is not None
    key = AuthKeyInfo(auth_key_id=_key_id(), auth_key=secrets.token_bytes(256))
    assert await a.auth.create_key(key)
    assert await b.auth.get_key(key.auth_key_id) is not None
    await b.privacy.get_rules(rec.id, pv.PHONE_NUMBER)
    drops = b.invalidations.full_drops

    await _kill_subscription(b)

    async def dropped() -> bool:
        return b.invalidations.full_drops > drops and b.invalidations.subscribed

    waited = await eventually(dropped, "a full drop after the reconnection")
    assert rec.id not in b.users._cache
    assert chat.id not in b.chats._cache
    assert b.auth.cached_key(key.auth_key_id) is None
    assert not b.privacy._loaded
    # Subscribed again: changes reach B as before.
    assert await b.users.get(rec.id) is not None
    await a.users.update_profile(rec.id, first_name="Bea")

    async def renamed() -> bool:
        got = await b.users.get(rec.id)
        return got is not None and got.first_name == "Bea"

    await eventually(renamed, "a change after the reconnection")
    assert waited < WAIT


async def test_latency_of_a_change(sides: tuple[Side, Side]) -> None:
    """How long a change takes to reach the other process (printed, bounded): from
    the writer's commit to the drop in the reader."""
    a, b = sides
    rec = await a.users.create(_phone(), "n0")
    arrived: list[float] = []
    b.invalidations.subscribe("users", lambda keys: arrived.append(time.perf_counter()))
    waits = []
    for i in range(1, 51):
        assert await b.users.get(rec.id) is not None
        arrived.clear()
        await a.users.update_profile(rec.id, first_name=f"n{i}")
        start = time.perf_counter()

        async def dropped() -> bool:
            return bool(arrived)

        await eventually(dropped, f"change {i}")
        waits.append(arrived[0] - start)
        got = await b.users.get(rec.id)
        assert got is not None and got.first_name == f"n{i}"
    waits.sort()
    print(
        f"invalidation latency ({b.engine.dialect.name}): median {waits[25] * 1e3:.2f} ms, "
        f"p90 {waits[45] * 1e3:.2f} ms, max {waits[-1] * 1e3:.2f} ms"
    )
    assert waits[-1] < WAIT
