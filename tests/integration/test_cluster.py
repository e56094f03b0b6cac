"""The split mode for real: ``teamgramd cluster`` with two gateway/session pairs.

Two edge processes (gnetway, session, bff, httpserver) and a sync process run as
children of the supervisor on the real engines: a new MariaDB database, Redis,
NATS JetStream, etcd and SeaweedFS (S3). Telethon users sign in through the
normal auth flow on different gateways and chat: private chats, a basic group, a
supergroup, files. The fault tests kill -9 processes in the middle of a burst of
1,000 messages: the sync process (the supervisor restarts it), and a gateway
(its clients reconnect through a balancer to the other and catch up). Every test
runs twice: with pushes through JetStream and the sync process ("pipeline"), and
sent by the writing edge itself ("direct", where killing sync must change nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from telethon import TelegramClient, errors, events, functions
from telethon import utils as telethon_utils
from telethon.crypto import rsa as telethon_rsa
from telethon.network.connection import ConnectionTcpFull
from telethon.sessions import StringSession
from telethon.tl import types as tt

from teamgram.mtproto.crypto.rsa import load_server_key
from teamgram.testing.cluster import Balancer, Cluster
from tests.etcd_server import etcd_fixture  # noqa: F401
from tests.integration.conftest import (
    check_reachable,
    create_database,
    drop_database,
    run_private,
)
from tests.seaweedfs import s3_store_config_fixture, seaweedfs_fixture  # noqa: F401

API_ID = 12345
API_HASH = "0123456789abcdef0123456789abcdef"
REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"
BURST = 1000

pytestmark = pytest.mark.timeout(300)


def _check_redis_and_nats() -> None:
    import socket

    from tests.integration.conftest import unavailable

    for name, port in (("redis", 6379), ("nats", 4222)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError as exc:
            unavailable(name, f"127.0.0.1:{port}: {exc}")


@pytest.fixture(scope="module", params=["pipeline", "direct"])
def cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    etcd: Any,
    seaweedfs: Any,
) -> Iterator[Cluster]:
    """The cluster, once per delivery mode: through JetStream and the sync process,
    or straight from the writing edge to the others."""
    check_reachable("mariadb")
    _check_redis_and_nats()
    url = create_database("mariadb")
    workdir = tmp_path_factory.mktemp("cluster")
    files = {
        "storage": "s3",
        "s3_endpoint": seaweedfs.endpoint,
        "s3_region": seaweedfs.region,
        "s3_access_key": seaweedfs.access_key,
        "s3_secret_key": seaweedfs.secret_key,
        "s3_bucket_prefix": f"c{secrets.token_hex(3)}-",
    }
    c = Cluster(
        workdir,
        database_url=url.render_as_string(hide_password=False),
        redis_url=REDIS_URL,
        nats_url=NATS_URL,
        etcd_endpoints=[etcd.endpoint],
        files=files,
        delivery=request.param,
    )
    try:
        run_private(c.start())
        pem = load_server_key(c.data_dir / "server_key.pem").public_pem()
        telethon_rsa.add_key(pem, old=False)
        yield c
    finally:
        code = run_private(c.stop())
        drop_database(url)
    assert code == 0, f"the supervisor exited with {code}:\n{c.log_text()[-4000:]}"


_phones = iter(range(1, 100_000))


class User:
    """One device of a user: a Telethon client on one gateway, and what it saw."""

    def __init__(self, client: TelegramClient) -> None:
        self.client = client
        self.me: Any = None
        self.incoming: list[Any] = []  # every NewMessage event, as dispatched

        @client.on(events.NewMessage())
        async def on_message(event: Any) -> None:
            self.incoming.append(event.message)

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [
            m.message
            for m in self.incoming
            if chat_id is None or telethon_utils.get_peer_id(m.peer_id) == chat_id
        ]


async def device(port: int, session: str = "", *, reconnect: bool = False) -> User:
    TelegramClient._config = None
    client = TelegramClient(
        StringSession(session),
        API_ID,
        API_HASH,
        connection=ConnectionTcpFull,
        timeout=10,
        request_retries=5 if reconnect else 1,
        connection_retries=10 if reconnect else 2,
        retry_delay=0.2,
        auto_reconnect=reconnect,
        flood_sleep_threshold=0,
    )
    if not session:
        client.session.set_dc(2, "127.0.0.1", port)
    for attempt in range(3):  # Telethon's 1-in-256 handshake quirk
        try:
            await asyncio.wait_for(client.connect(), 15)
            break
        except ConnectionError:
            if attempt == 2:
                raise
    return User(client)


async def sign_up(user: User, code: str, phone: str | None = None, name: str = "U") -> Any:
    phone = phone or f"15557{next(_phones):06d}"
    client = user.client
    sent = await client.send_code_request(phone)
    try:
        me = await client.sign_in(phone, code, phone_code_hash=sent.phone_code_hash)
    except errors.PhoneNumberUnoccupiedError:
        auth = await client(
            functions.auth.SignUpRequest(phone, sent.phone_code_hash, name, "Cluster")
        )
        me = await client._on_login(auth.user)
    user.me = me
    user.phone = phone  # type: ignore[attr-defined]
    return me


async def know(user: User, *others: User) -> None:
    """Add ``others`` to ``user``'s contacts (access hashes are per viewer)."""
    contacts = [
        tt.InputPhoneContact(client_id=i, phone=o.phone, first_name="C", last_name="")  # type: ignore[attr-defined]
        for i, o in enumerate(others)
    ]
    got = await user.client(functions.contacts.ImportContactsRequest(contacts))
    assert {u.id for u in got.users} >= {o.me.id for o in others}


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not in {timeout} s: {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def devices(*ports: int, reconnect: bool = False) -> AsyncIterator[list[User]]:
    made: list[User] = []
    try:
        for p in ports:
            made.append(await device(p, reconnect=reconnect))
        yield made
    finally:
        for u in made:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(u.client.disconnect(), 5)


async def second_device(cluster: Cluster, user: User, port: int) -> User:
    other = await device(port)
    await sign_up(other, cluster.login_code, phone=user.phone)  # type: ignore[attr-defined]
    return other


async def test_private_chat_across_gateways(cluster: Cluster) -> None:
    p0, p1 = cluster.tcp_ports
    async with devices(p0, p1) as (alice, bob):
        a = await sign_up(alice, cluster.login_code, name="Alice")
        b = await sign_up(bob, cluster.login_code, name="Bob")
        alice2 = await second_device(cluster, alice, p1)
        await know(alice, bob)
        await know(bob, alice)
        try:
            sent = [f"hello {i}" for i in range(20)]
            for text in sent:
                await alice.client.send_message(b.id, text)
            await wait_for(lambda: len(bob.texts(a.id)) >= 20, what="bob gets 20")
            await wait_for(lambda: len(alice2.texts(b.id)) >= 20, what="alice2 sees 20")
            await bob.client.send_message(a.id, "hi back")
            await wait_for(lambda: "hi back" in alice.texts(b.id), what="alice gets reply")
            await asyncio.sleep(0.3)
            assert bob.texts(a.id) == sent
            assert alice2.texts(b.id) == [*sent, "hi back"]
            assert alice.texts(b.id) == ["hi back"]
            history = await bob.client.get_messages(a.id, limit=30)
            assert [m.message for m in reversed(history)] == [*sent, "hi back"]

            # Presence is shared: alice goes online on edge 0, bob reads it on edge 1.
            peer = await bob.client.get_input_entity(a.id)

            async def status_of_alice() -> Any:
                got = await bob.client(functions.users.GetUsersRequest([peer]))
                return got[0].status

            await alice.client(functions.account.UpdateStatusRequest(offline=False))
            for _ in range(50):
                if isinstance(await status_of_alice(), tt.UserStatusOnline):
                    break
                await asyncio.sleep(0.1)
            assert isinstance(await status_of_alice(), tt.UserStatusOnline)
            await alice.client(functions.account.UpdateStatusRequest(offline=True))
            for _ in range(50):
                if isinstance(await status_of_alice(), tt.UserStatusOffline):
                    break
                await asyncio.sleep(0.1)
            assert isinstance(await status_of_alice(), tt.UserStatusOffline)
        finally:
            await alice2.client.disconnect()


async def test_groups_across_gateways(cluster: Cluster) -> None:
    p0, p1 = cluster.tcp_ports
    async with devices(p0, p1, p1) as (alice, bob, carol):
        await sign_up(alice, cluster.login_code, name="Alice")
        b = await sign_up(bob, cluster.login_code, name="Bob")
        c = await sign_up(carol, cluster.login_code, name="Carol")
        await know(alice, bob, carol)
        await know(bob, alice)
        await know(carol, alice)
        created = await alice.client(
            functions.messages.CreateChatRequest(users=[b.id, c.id], title="Basic")
        )
        chat_id = -created.updates.chats[0].id if hasattr(created, "updates") else None
        if chat_id is None:
            chat_id = -created.chats[0].id
        await alice.client.send_message(chat_id, "basic from alice")
        await wait_for(
            lambda: (
                "basic from alice" in bob.texts(chat_id)
                and "basic from alice" in carol.texts(chat_id)
            ),
            what="basic group message on the other gateway",
        )
        await carol.client.send_message(chat_id, "basic from carol")
        await wait_for(lambda: "basic from carol" in alice.texts(chat_id), what="carol to alice")

        made = await alice.client(
            functions.channels.CreateChannelRequest(title="Super", about="", megagroup=True)
        )
        channel = made.chats[0]
        await alice.client(
            functions.channels.InviteToChannelRequest(
                channel,
                [
                    await alice.client.get_input_entity(b.id),
                    await alice.client.get_input_entity(c.id),
                ],
            )
        )
        peer_id = telethon_utils.get_peer_id(tt.PeerChannel(channel.id))
        await alice.client.send_message(channel, "super from alice")
        await wait_for(
            lambda: (
                "super from alice" in bob.texts(peer_id)
                and "super from alice" in carol.texts(peer_id)
            ),
            what="supergroup message on the other gateway",
        )
        await bob.client.send_message(peer_id, "super from bob")
        await wait_for(lambda: "super from bob" in alice.texts(peer_id), what="bob to alice")
        await asyncio.sleep(0.3)
        assert bob.texts(peer_id).count("super from alice") == 1
        assert alice.texts(peer_id).count("super from bob") == 1


async def test_files_across_gateways(cluster: Cluster, tmp_path: Path) -> None:
    p0, p1 = cluster.tcp_ports
    async with devices(p0, p1) as (alice, bob):
        a = await sign_up(alice, cluster.login_code, name="Alice")
        b = await sign_up(bob, cluster.login_code, name="Bob")
        await know(alice, bob)
        data = os.urandom(700_000)
        path = tmp_path / "blob.bin"
        path.write_bytes(data)
        await alice.client.send_file(b.id, path, force_document=True)
        await wait_for(lambda: any(m.media for m in bob.incoming), what="document arrives")
        msg = next(m for m in bob.incoming if m.media)
        got = await bob.client.download_media(msg, file=bytes)
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert telethon_utils.get_peer_id(msg.peer_id) == a.id


async def _burst(sender: TelegramClient, to: int, count: int, in_flight: int = 8) -> None:
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await sender.send_message(to, f"burst {i}")

    await asyncio.gather(*(worker() for _ in range(in_flight)))


def _burst_numbers(user: User, chat: int) -> list[int]:
    return [int(t.split()[1]) for t in user.texts(chat) if t.startswith("burst ")]


async def test_kill_sync_mid_burst(cluster: Cluster) -> None:
    """kill -9 the sync process during 1,000 messages: each arrives exactly once."""
    p0, p1 = cluster.tcp_ports
    async with devices(p0, p1) as (alice, bob):
        a = await sign_up(alice, cluster.login_code, name="Alice")
        b = await sign_up(bob, cluster.login_code, name="Bob")
        alice2 = await second_device(cluster, alice, p1)
        await know(alice, bob)
        try:
            sending = asyncio.ensure_future(_burst(alice.client, b.id, BURST))
            await wait_for(lambda: len(_burst_numbers(bob, a.id)) >= BURST // 4, 30, "a quarter")
            before = await cluster.kill("sync")
            await sending
            await cluster.wait_ready(["sync"], timeout=30, after=before)
            await wait_for(
                lambda: (
                    len(set(_burst_numbers(bob, a.id))) >= BURST
                    and len(set(_burst_numbers(alice2, b.id))) >= BURST
                ),
                60,
                "every message at both devices",
            )
            await asyncio.sleep(1.0)
            for who, chat in ((bob, a.id), (alice2, b.id)):
                got = _burst_numbers(who, chat)
                assert sorted(got) == list(range(BURST)), "each message exactly once"
        finally:
            await alice2.client.disconnect()


async def test_kill_gateway_mid_burst(cluster: Cluster) -> None:
    """kill -9 the sender's gateway (and its msg, in-process) mid-burst: the clients
    reconnect through the balancer to the other gateway, resend what was unanswered
    and catch up; every message arrives exactly once."""
    p0, p1 = cluster.tcp_ports
    balancer = Balancer([p0, p1])
    port = await balancer.start()
    try:
        alice = await device(port, reconnect=True)
        alice_backend = balancer.connections[-1]
        victim, other = ("edge0", p1) if alice_backend == p0 else ("edge1", p0)
        bob = await device(other)
        watcher: User | None = None
        try:
            a_id = (await sign_up(alice, cluster.login_code, name="Alice")).id
            b = await sign_up(bob, cluster.login_code, name="Bob")
            watcher = await device(port, reconnect=True)  # bob's second device
            await sign_up(watcher, cluster.login_code, phone=bob.phone)  # type: ignore[attr-defined]
            await know(alice, bob)
            sending = asyncio.ensure_future(_burst(alice.client, b.id, BURST))
            await wait_for(lambda: len(_burst_numbers(bob, a_id)) >= BURST // 4, 30, "1/4")
            before = await cluster.kill(victim)
            await sending
            await cluster.wait_ready([victim], timeout=30, after=before)
            seen = watcher
            await wait_for(
                lambda: (
                    len(set(_burst_numbers(bob, a_id))) >= BURST
                    and len(set(_burst_numbers(seen, a_id))) >= BURST
                ),
                60,
                "every message at both of bob's devices",
            )
            await asyncio.sleep(1.0)
            for who in (bob, watcher):
                assert sorted(_burst_numbers(who, a_id)) == list(range(BURST))
            history = await bob.client.get_messages(a_id, limit=BURST + 10)
            numbers = [int(m.message.split()[1]) for m in history if m.message]
            assert sorted(numbers) == list(range(BURST)), "stored exactly once"
        finally:
            for u in (alice, bob, watcher):
                if u is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(u.client.disconnect(), 5)
    finally:
        await balancer.close()
