"""Every engine the server supports (SQLite, MariaDB, PostgreSQL), for real.

Per engine: the migrations run from an empty database to head (a second start is a
no-op) and give the schema the services' tables declare; the services' persistence
(authsession, idgen, users) behaves the same; and the real server runs on it:
Telethon connects, and after a restart on the same database it carries on with its
saved auth key, without a new handshake.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from telethon import errors, functions, types
from telethon.network.connection import ConnectionTcpFull
from telethon.sessions import StringSession

import teamgram.interface.gnetway.connection as gateway_connection
from teamgram.errors import RpcError
from teamgram.infra.database import (
    MYSQL_COLLATION,
    DatabaseError,
    alembic_config,
    make_engine,
    metadata,
    normalize_url,
    open_database,
)
from teamgram.mtproto.crypto.kdf import auth_key_id
from teamgram.service.authsession.service import AuthKeyInfo, AuthSessionService, ClientInfo
from teamgram.service.authsession.tables import KEY_TEMP, auth_keys
from teamgram.service.biz.users import UserService
from teamgram.service.idgen.service import USER_ID_START, IdGenService
from tests.e2e.conftest import make_telethon, running_server

CLIENT_TIMEOUT = 20.0
SECRET = b"s" * 32
# A name a MySQL utf8 (3-byte) column could not hold, and text in three scripts.
UNICODE_NAME = "Zoë 😀 Ωμέγα 漢字"

# Differences between the schema the migrations build and the one tables.py declares
# that are known and harmless; any other difference fails test_schema_matches_tables.
KNOWN_SCHEMA_DIFFS: set[tuple[str, str]] = set()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def new_key_id() -> int:
    return secrets.randbits(64) - 2**63


def new_phone() -> str:
    return "1555" + "".join(secrets.choice("0123456789") for _ in range(7))


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


# --------------------------------------------------------------------------- migrations


async def test_migrations_from_empty_to_head(
    engine_name: str, new_database: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    url = new_database()
    raw = make_engine(url)
    try:
        assert await table_names(raw) == set()
        if engine_name == "mariadb":
            # A database made with the server's old default charset: open_database
            # switches it to utf8mb4 before any table exists.
            async with raw.connect() as conn:
                name = make_url(url).database
                await conn.exec_driver_sql(f"ALTER DATABASE `{name}` CHARACTER SET latin1")
    finally:
        await raw.dispose()

    caplog.set_level(logging.INFO, logger="alembic.runtime.migration")
    engine = await open_database(url)
    try:
        ran = [r.getMessage() for r in caplog.records if "Running upgrade" in r.getMessage()]
        assert ran, "no migration ran on an empty database"
        tables = await table_names(engine)
        assert set(metadata.tables) <= tables
        assert "alembic_version" in tables
        async with engine.begin() as conn:
            version = (
                await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
            ).scalar_one()
            await conn.execute(
                auth_keys.insert().values(
                    auth_key_id=1, auth_key=b"k" * 256, key_type=0, created_at=1
                )
            )
        assert version == head_revision()
        if engine_name == "mariadb":
            async with engine.connect() as conn:
                collations = (
                    (
                        await conn.exec_driver_sql(
                            "SELECT DISTINCT TABLE_COLLATION FROM information_schema.TABLES "
                            "WHERE TABLE_SCHEMA = DATABASE()"
                        )
                    )
                    .scalars()
                    .all()
                )
                token_type = (
                    await conn.exec_driver_sql(
                        "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE "
                        "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'login_tokens' "
                        "AND COLUMN_NAME = 'token'"
                    )
                ).scalar_one()
            assert set(collations) == {MYSQL_COLLATION}
            assert token_type == "varbinary"
    finally:
        await engine.dispose()

    # A second start: nothing to do, nothing lost. On MariaDB through the driverless
    # mariadb:// spelling (the MariaDB dialect rather than the MySQL one).
    caplog.clear()
    again_url = url
    if engine_name == "mariadb":
        again_url = make_url(url).set(drivername="mariadb").render_as_string(False)
    again = await open_database(again_url)
    try:
        assert not [r for r in caplog.records if "Running upgrade" in r.getMessage()]
        async with again.connect() as conn:
            assert (
                await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
            ).scalar_one() == head_revision()
            count = (
                await conn.execute(sa.select(sa.func.count()).select_from(auth_keys))
            ).scalar_one()
        assert count == 1
    finally:
        await again.dispose()


async def test_schema_matches_tables(db: AsyncEngine) -> None:
    """What the migrations built is what the services' tables declare (per dialect)."""

    def compare(conn: sa.Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with db.connect() as conn:
        diffs = await conn.run_sync(compare)
    unexpected = []
    for diff in diffs:
        # Type changes come as a list of one tuple; the others as a tuple.
        op = diff[0] if isinstance(diff, list) else diff
        if op[0] == "modify_type":
            key = ("modify_type", f"{op[2]}.{op[3]}")
        elif op[0] in ("add_index", "remove_index"):
            key = (op[0], op[1].name)
        else:
            key = (op[0], repr(op[1:]))
        if key not in KNOWN_SCHEMA_DIFFS:
            unexpected.append(diff)
    assert unexpected == []


def test_driverless_urls_get_async_drivers() -> None:
    assert normalize_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("postgres://u@h/d").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+asyncpg"
    mysql = normalize_url("mysql://u:p@h/d")
    assert mysql.drivername == "mysql+asyncmy"
    assert mysql.query["charset"] == "utf8mb4"
    assert normalize_url("mariadb://u@h/d").drivername == "mariadb+asyncmy"
    assert normalize_url("mysql+aiomysql://u@h/d").drivername == "mysql+aiomysql"
    with pytest.raises(DatabaseError, match="utf8mb4"):
        normalize_url("mysql+asyncmy://u@h/d?charset=utf8")


# -------------------------------------------------------------------------- authsession


async def test_authsession_keys(db: AsyncEngine) -> None:
    svc = AuthSessionService(db)
    now = int(time.time())
    perm = AuthKeyInfo(auth_key_id=new_key_id(), auth_key=os.urandom(256), created_at=now, dc_id=2)
    assert await svc.create_key(perm)
    # The same id again (another instance: nothing cached) -> False, the handshake retries.
    assert not await AuthSessionService(db).create_key(
        AuthKeyInfo(auth_key_id=perm.auth_key_id, auth_key=os.urandom(256))
    )
    assert await svc.create_key(AuthKeyInfo(auth_key_id=new_key_id(), auth_key=os.urandom(256)))

    got = await AuthSessionService(db).get_key(perm.auth_key_id)
    assert got is not None
    assert (got.auth_key, got.key_type, got.created_at, got.dc_id) == (perm.auth_key, 0, now, 2)
    assert (got.expires_at, got.perm_auth_key_id, got.layer) == (None, None, 0)
    assert await AuthSessionService(db).key_exists(perm.auth_key_id)
    assert await AuthSessionService(db).get_key(new_key_id()) is None

    # The extremes of a signed 64-bit id.
    for extreme in (-(2**63), 2**63 - 1):
        assert await svc.create_key(AuthKeyInfo(auth_key_id=extreme, auth_key=b"\0" * 256))
        info = await AuthSessionService(db).get_key(extreme)
        assert info is not None and info.auth_key == b"\0" * 256

    # Temporary keys: bound to the permanent one; one temp key per perm key at a time.
    temp1 = AuthKeyInfo(new_key_id(), os.urandom(256), key_type=KEY_TEMP, expires_at=now + 60)
    temp2 = AuthKeyInfo(new_key_id(), os.urandom(256), key_type=KEY_TEMP, expires_at=now + 60)
    assert await svc.create_key(temp1)
    assert await svc.create_key(temp2)
    await svc.bind_temp_key(temp1.auth_key_id, perm.auth_key_id, now + 3600)
    fresh = await AuthSessionService(db).get_key(temp1.auth_key_id)
    assert fresh is not None and fresh.is_temp
    assert (fresh.perm_auth_key_id, fresh.expires_at) == (perm.auth_key_id, now + 3600)
    assert fresh.effective_id == perm.auth_key_id
    await svc.bind_temp_key(temp2.auth_key_id, perm.auth_key_id, now + 7200)
    reader = AuthSessionService(db)
    one, two = await reader.get_key(temp1.auth_key_id), await reader.get_key(temp2.auth_key_id)
    assert one is not None and one.perm_auth_key_id is None
    assert two is not None and two.perm_auth_key_id == perm.auth_key_id
    assert await AuthSessionService(db).get_key(temp2.auth_key_id, now=now + 7201) is None

    # Layer and client info.
    await svc.set_layer(perm.auth_key_id, 201)
    layered = await AuthSessionService(db).get_key(perm.auth_key_id)
    assert layered is not None and layered.layer == 201
    client = ClientInfo(
        api_id=12345,
        device_model=UNICODE_NAME + "x" * 300,
        system_version="Linux 6.1",
        app_version="1.45.0 😀",
        system_lang_code="en-US",
        lang_pack="tdesktop",
        lang_code="en",
        client_ip="2001:db8::1",
    )
    await svc.set_client_info(perm.auth_key_id, client)
    stored = await AuthSessionService(db).get_client_info(perm.auth_key_id)
    assert stored is not None
    assert stored.device_model == client.device_model[:255]  # 255 characters, emoji too
    assert stored == ClientInfo(**{**vars_of(client), "device_model": client.device_model[:255]})
    assert await AuthSessionService(db).get_client_info(new_key_id()) is None

    # Destroy.
    assert await svc.destroy_key(temp1.auth_key_id)
    assert await AuthSessionService(db).get_key(temp1.auth_key_id) is None
    assert not await AuthSessionService(db).key_exists(temp1.auth_key_id)
    assert not await svc.destroy_key(temp1.auth_key_id)


def vars_of(info: ClientInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in ClientInfo.__slots__}


async def test_authsession_authorizations(db: AsyncEngine) -> None:
    svc = AuthSessionService(db)
    key_a, key_b = new_key_id(), new_key_id()
    for key in (key_a, key_b):
        assert await svc.create_key(AuthKeyInfo(auth_key_id=key, auth_key=os.urandom(256)))
    assert await AuthSessionService(db).user_for_key(key_a) is None

    hash_a = await svc.bind_user(key_a, USER_ID_START + 1)
    hash_b = await svc.bind_user(key_b, USER_ID_START + 1)  # one user, two devices
    assert hash_a != hash_b
    assert await AuthSessionService(db).user_for_key(key_a) == USER_ID_START + 1
    assert await AuthSessionService(db).user_for_key(key_b) == USER_ID_START + 1

    # Signing in again on a key replaces its authorization.
    await svc.bind_user(key_a, USER_ID_START + 2)
    assert await AuthSessionService(db).user_for_key(key_a) == USER_ID_START + 2

    assert await svc.unbind_key(key_a) == USER_ID_START + 2
    assert await AuthSessionService(db).user_for_key(key_a) is None
    assert await AuthSessionService(db).user_for_key(key_b) == USER_ID_START + 1
    assert await AuthSessionService(db).unbind_key(key_a) is None


# -------------------------------------------------------------------------------- idgen


async def test_idgen_two_instances_stay_unique(db: AsyncEngine, database_url: str) -> None:
    """Two instances (here: two engines, as two server processes would have) interleaved."""
    other = await open_database(database_url)
    try:
        a, b = IdGenService(db, block=7), IdGenService(other, block=7)
        ids: list[int] = []
        for _ in range(30):
            ids.append(await a.next_id("it_seq", start=1000))
            ids.append(await b.next_id("it_seq", start=1000))
        assert len(set(ids)) == len(ids)
        assert min(ids) == 1000
        # Another sequence is independent; user ids start high.
        assert await a.next_id("it_other") == 1
        user_id = await b.next_user_id()
        assert user_id >= USER_ID_START
        # A restart skips the rest of the blocks but never hands out an id again.
        restarted = IdGenService(db, block=7)
        assert await restarted.next_id("it_seq", start=1000) > max(ids)
    finally:
        await other.dispose()


@pytest.mark.parametrize("first_use", [True, False], ids=["new-sequence", "existing"])
async def test_idgen_concurrent_instances_stay_unique(
    db: AsyncEngine, database_url: str, first_use: bool
) -> None:
    other = await open_database(database_url)
    try:
        a, b = IdGenService(db, block=5), IdGenService(other, block=5)
        name = f"race_{secrets.token_hex(4)}"
        if not first_use:
            await a.next_id(name)
            await b.next_id(name)
        calls = [svc.next_id(name) for _ in range(40) for svc in (a, b)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert len(set(results)) == len(results)
    finally:
        await other.dispose()


# -------------------------------------------------------------------------------- users


async def test_users(db: AsyncEngine) -> None:
    svc = UserService(db, IdGenService(db), SECRET)
    phone, phone2 = new_phone(), new_phone()
    ann = await svc.create(phone, UNICODE_NAME, "Lee")
    bob = await svc.create(phone2, "Bob")
    assert ann.id >= USER_ID_START and bob.id != ann.id

    with pytest.raises(RpcError) as info:
        await svc.create(phone, "Someone Else")
    assert (info.value.code, info.value.message) == (400, "PHONE_NUMBER_OCCUPIED")

    fresh = UserService(db, IdGenService(db), SECRET)  # nothing cached
    got = await fresh.get_many([ann.id, bob.id, 42])
    assert set(got) == {ann.id, bob.id}
    rec = got[ann.id]
    assert (rec.phone, rec.first_name, rec.last_name) == (phone, UNICODE_NAME, "Lee")
    assert rec.username is None and rec.about == ""
    assert rec.is_bot is False and rec.deleted is False  # Boolean, whatever the engine stores
    assert (rec.created_at, rec.last_seen_at) == (ann.created_at, 0)
    assert await fresh.get_many(set()) == {}

    by_phone = await UserService(db, IdGenService(db), SECRET).by_phone(phone)
    assert by_phone is not None and by_phone.id == ann.id
    assert by_phone.first_name == UNICODE_NAME  # the refused duplicate changed nothing
    assert await fresh.by_phone(new_phone()) is None
    assert (await fresh.get(bob.id)) == bob


# ------------------------------------------------------------------- the real server


@pytest.fixture
def handshakes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts auth-key handshakes the gateway starts (one list entry per handshake)."""
    started: list[int] = []
    real = gateway_connection.HandshakeServer

    def counting(*args: Any, **kwargs: Any) -> Any:
        started.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gateway_connection, "HandshakeServer", counting)
    return started


async def call(client: Any, request: Any) -> Any:
    return await asyncio.wait_for(client(request), CLIENT_TIMEOUT)


async def test_server_smoke(
    engine_name: str,
    database_url: str,
    tmp_path: Path,
    server_key_pem: bytes,
    handshakes: list[int],
) -> None:
    """The real server on this engine; its auth key outlives a restart."""
    data_dir = tmp_path / "server"
    overrides = {"database": {"url": database_url}}
    async with running_server(data_dir, server_key_pem, overrides) as srv:
        assert srv.engine is not None
        expected_dialects = {
            "sqlite": {"sqlite"},
            "mariadb": {"mysql", "mariadb"},
            "postgresql": {"postgresql"},
        }[engine_name]
        assert srv.engine.dialect.name in expected_dialects
        client = make_telethon(srv, ConnectionTcpFull)
        try:
            await asyncio.wait_for(client.connect(), CLIENT_TIMEOUT)
            config = await call(client, functions.help.GetConfigRequest())
            assert isinstance(config, types.Config) and config.this_dc == srv.config.dc_id
            assert (await call(client, functions.PingRequest(ping_id=1))).ping_id == 1
            key = client.session.auth_key.key
            saved = client.session.save()
        finally:
            await asyncio.wait_for(client.disconnect(), 5)
    assert len(handshakes) == 1

    # The key is in that engine's database, not somewhere else.
    reader = await open_database(database_url)
    try:
        stored = await AuthSessionService(reader).get_key(auth_key_id(key))
        assert stored is not None and stored.auth_key == key
    finally:
        await reader.dispose()

    async with running_server(data_dir, server_key_pem, overrides) as srv:
        session = StringSession(saved)
        session.set_dc(srv.config.dc_id, "127.0.0.1", srv.gateway.tcp_ports[0])
        client = make_telethon(srv, ConnectionTcpFull, session.save())
        try:
            await asyncio.wait_for(client.connect(), CLIENT_TIMEOUT)
            assert (await call(client, functions.PingRequest(ping_id=2))).ping_id == 2
            config = await call(client, functions.help.GetConfigRequest())
            assert config.this_dc == srv.config.dc_id
            assert client.session.auth_key.key == key
        finally:
            await asyncio.wait_for(client.disconnect(), 5)
    assert len(handshakes) == 1, "the restarted server did not know the saved auth key"


DEV_CODE = "24680"


async def _sign_up(client: Any, phone: str, first_name: str) -> Any:
    """Telethon's sign-up dance: signIn, then signUp for a new phone."""
    sent = await client.send_code_request(phone)
    try:
        await client.sign_in(phone, DEV_CODE, phone_code_hash=sent.phone_code_hash)
    except errors.PhoneNumberUnoccupiedError:
        auth = await call(
            client, functions.auth.SignUpRequest(phone, sent.phone_code_hash, first_name, "")
        )
        await client._on_login(auth.user)
    return await client.get_me()


async def test_accounts_persist_on_engine(
    database_url: str, tmp_path: Path, server_key_pem: bytes
) -> None:
    """Sign-up, username, contacts, privacy and blocks on this engine, across a restart."""
    data_dir = tmp_path / "accounts"
    overrides = {"database": {"url": database_url}, "dev_login_code": DEV_CODE}
    alice_phone, bob_phone = "15550001001", "15550001002"
    async with running_server(data_dir, server_key_pem, overrides) as srv:
        alice = make_telethon(srv, ConnectionTcpFull)
        bob = make_telethon(srv, ConnectionTcpFull)
        try:
            await asyncio.wait_for(alice.connect(), CLIENT_TIMEOUT)
            await asyncio.wait_for(bob.connect(), CLIENT_TIMEOUT)
            me = await asyncio.wait_for(_sign_up(alice, alice_phone, "Alice"), CLIENT_TIMEOUT)
            bob_me = await asyncio.wait_for(_sign_up(bob, bob_phone, "Bob"), CLIENT_TIMEOUT)
            assert me.phone == alice_phone and bob_me.first_name == "Bob"
            await call(alice, functions.account.UpdateUsernameRequest("alice_engine"))
            imported = await call(
                alice,
                functions.contacts.ImportContactsRequest(
                    [types.InputPhoneContact(1, bob_phone, "Bobby", "")]
                ),
            )
            assert [u.id for u in imported.users] == [bob_me.id]
            await call(
                alice,
                functions.account.SetPrivacyRequest(
                    types.InputPrivacyKeyPhoneNumber(), [types.InputPrivacyValueDisallowAll()]
                ),
            )
            await call(
                alice,
                functions.account.UpdateNotifySettingsRequest(
                    types.InputNotifyPeer(
                        types.InputPeerUser(bob_me.id, imported.users[0].access_hash)
                    ),
                    types.InputPeerNotifySettings(mute_until=2_000_000_000, show_previews=False),
                ),
            )
            await call(alice, functions.contacts.BlockRequest(types.InputPeerUser(
                bob_me.id, imported.users[0].access_hash
            )))  # fmt: skip
            saved = alice.session.save()
        finally:
            await asyncio.wait_for(alice.disconnect(), 5)
            await asyncio.wait_for(bob.disconnect(), 5)

    async with running_server(data_dir, server_key_pem, overrides) as srv:
        session = StringSession(saved)
        session.set_dc(srv.config.dc_id, "127.0.0.1", srv.gateway.tcp_ports[0])
        alice = make_telethon(srv, ConnectionTcpFull, session.save())
        try:
            await asyncio.wait_for(alice.connect(), CLIENT_TIMEOUT)
            me = await asyncio.wait_for(alice.get_me(), CLIENT_TIMEOUT)  # still signed in
            assert me is not None and me.username == "alice_engine"
            contacts = await call(alice, functions.contacts.GetContactsRequest(hash=0))
            assert [u.id for u in contacts.users] == [bob_me.id]
            rules = await call(
                alice, functions.account.GetPrivacyRequest(types.InputPrivacyKeyPhoneNumber())
            )
            assert [type(r) for r in rules.rules] == [types.PrivacyValueDisallowAll]
            blocked = await call(alice, functions.contacts.GetBlockedRequest(offset=0, limit=10))
            assert [b.peer_id.user_id for b in blocked.blocked] == [bob_me.id]
            resolved = await call(alice, functions.contacts.ResolveUsernameRequest("alice_engine"))
            assert resolved.peer.user_id == me.id
            bob_peer = types.InputPeerUser(bob_me.id, contacts.users[0].access_hash)
            muted = await call(
                alice,
                functions.account.GetNotifySettingsRequest(types.InputNotifyPeer(bob_peer)),
            )
            assert muted.mute_until.timestamp() == 2_000_000_000 and muted.show_previews is False
        finally:
            await asyncio.wait_for(alice.disconnect(), 5)
