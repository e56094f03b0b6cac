"""Split-mode session directory: pushes and key operations between session instances.

Two (or three) session instances run in this process, each a real
:class:`SessionHost` with its :class:`SessionPeer` served by a real
:class:`RpcServer` on loopback, its :class:`RouteRecorder` writing the routes into
this machine's Redis (``TEAMGRAM_TEST_REDIS_URL``, keys under a prefix of the
test's own), and the instances found through one :class:`StaticDiscovery`.
Devices are fake connections fed real encrypted MTProto packets; what a host
pushes is decrypted back, so "reached the device" means it really left the
session layer. Unreachable Redis fails under ``CI=true`` and skips elsewhere.

Tests parametrized with ``cluster`` = ``nats`` run the same cluster with pushes
published over this machine's NATS (``TEAMGRAM_TEST_NATS_URL``, core pub/sub,
subjects under a namespace of the test's own) instead of gRPC calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from redis.asyncio import Redis

from teamgram.bff.rpc import Dispatcher
from teamgram.config import ServerConfig
from teamgram.infra import wire
from teamgram.infra.discovery import StaticDiscovery
from teamgram.infra.rpc import Channels, RpcServer
from teamgram.interface.session.cluster import (
    SERVICE,
    ClusterDirectory,
    Delivery,
    RouteRecorder,
    SessionPeer,
    SessionPeers,
    connect_nats,
    session_subject,
)
from teamgram.interface.session.host import SessionHost
from teamgram.mtproto.envelope import decrypt_server_message, encrypt_client_message
from teamgram.mtproto.session import MSG_CONTAINER_ID, parse_container
from teamgram.service.authsession.service import AuthKeyInfo
from teamgram.service.status.routes import RedisRoutes
from teamgram.tl import decode, functions, types
from tests.integration.conftest import unavailable

pytestmark = pytest.mark.timeout(60)

REDIS_URL = os.environ.get("TEAMGRAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("TEAMGRAM_TEST_NATS_URL", "nats://127.0.0.1:4222")
_redis_unreachable: list[str] = []
_ids = itertools.count(1)

log = logging.getLogger(__name__)


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


async def _connect_nats() -> Any:
    try:
        return await connect_nats(NATS_URL, name="test-session-cluster", timeout=3.0)
    except Exception as exc:
        unavailable("nats", f"{NATS_URL}: {type(exc).__name__}: {exc}")


both = pytest.mark.parametrize("cluster", ["grpc", "nats"], indirect=True)


# ------------------------------------------------------------------ fake edges
class FakeAuth:
    """The authsession a host asks for keys and their users: all in memory."""

    def __init__(self) -> None:
        self.keys: dict[int, AuthKeyInfo] = {}
        self.users: dict[int, int | None] = {}

    def cached_key(self, auth_key_id: int) -> AuthKeyInfo | None:
        return self.keys.get(auth_key_id)

    async def get_key(self, auth_key_id: int, now: float | None = None) -> AuthKeyInfo | None:
        return self.keys.get(auth_key_id)

    def cached_user(self, auth_key_id: int) -> int | None:
        return self.users.get(auth_key_id)

    async def user_for_key(self, auth_key_id: int) -> int | None:
        return self.users.get(auth_key_id)


class FakeConn:
    """A gateway connection that keeps what the host sends it."""

    def __init__(self, ip: str) -> None:
        self.conn_id = next(_ids)
        self.client_ip = ip
        self.closed = False
        self.writable = True
        self.packets: list[bytes] = []

    def send_packets(self, packets: list[bytes]) -> None:
        self.packets.extend(packets)

    def send_quick_ack(self, token: int) -> None:
        pass

    def send_transport_error(self, code: int) -> None:
        raise AssertionError(f"transport error {code}")

    def close_after(self, seconds: float) -> None:
        pass

    def http_wait(self, max_delay: int, wait_after: int, max_wait: int) -> None:
        pass


@dataclass
class Device:
    """A client device: an auth key, a session on it, and its current connection."""

    key: AuthKeyInfo
    session_id: int = field(default_factory=lambda: secrets.randbits(63))
    conn: FakeConn | None = None
    host: SessionHost | None = None
    seqno: int = 0

    @classmethod
    def new(cls) -> Device:
        auth_key = os.urandom(256)
        key_id = struct.unpack("<q", hashlib.sha1(auth_key).digest()[-8:])[0]
        return cls(AuthKeyInfo(auth_key_id=key_id, auth_key=auth_key))

    @property
    def key_id(self) -> int:
        return self.key.auth_key_id

    def connect(self, node: Node) -> None:
        """A new connection to ``node``, announced by a ping (as a client would)."""
        now = time.time()
        self.host = node.host
        self.conn = FakeConn(f"10.0.0.{next(_ids) % 250}")
        salt = node.host.salts.current(self.key_id, now)
        msg_id = (int(now * 2**32) & ~3) + 4 * next(_ids)
        body = functions.Ping(ping_id=next(_ids)).to_bytes()
        seqno = self.seqno * 2 + 1  # content-related
        self.seqno += 1
        packet = encrypt_client_message(
            self.key.auth_key, self.key.id_bytes, salt, self.session_id, msg_id, seqno, body
        )
        assert node.host.try_packet(self.conn, packet, False)

    def disconnect(self) -> None:
        assert self.conn is not None and self.host is not None
        self.conn.closed = True
        self.host.connection_lost(self.conn)

    def received(self) -> list[Any]:
        """Every TL object pushed to this device so far (containers opened)."""
        out: list[Any] = []
        for packet in self.conn.packets if self.conn else []:
            dec = decrypt_server_message(self.key.auth_key, packet)
            assert dec is not None
            bodies = (
                [b for _, _, b in parse_container(dec.body)]
                if struct.unpack_from("<I", dec.body)[0] == MSG_CONTAINER_ID
                else [dec.body]
            )
            out += [decode(b) for b in bodies]
        return out

    def marks(self) -> list[int]:
        """The ``date`` of every test push received (the tests number pushes so)."""
        return [
            u.date
            for u in self.received()
            if isinstance(u, types.UpdateShort) and isinstance(u.update, types.UpdatePtsChanged)
        ]


def mark(n: int) -> types.UpdateShort:
    return types.UpdateShort(update=types.UpdatePtsChanged(), date=n)


@dataclass(eq=False)
class Node:
    """One session instance: host, served peer, route recorder, directory."""

    instance_id: str
    host: SessionHost
    auth: FakeAuth
    rpc: RpcServer
    recorder: RouteRecorder
    peers: SessionPeers
    directory: ClusterDirectory
    peer: SessionPeer

    def know(self, device: Device, user_id: int | None) -> None:
        """The key exists (and is signed in as ``user_id``) in this instance's authsession."""
        self.auth.keys[device.key_id] = device.key
        self.auth.users[device.key_id] = user_id


@dataclass
class Cluster:
    discovery: StaticDiscovery
    prefix: str
    routes: RedisRoutes
    nodes: list[Node] = field(default_factory=list)
    namespace: str = ""  # the NATS subjects' prefix ("" over gRPC)
    nats: Any = None  # the NATS connection the senders publish on

    async def settle(self) -> None:
        for node in self.nodes:
            await node.recorder.settle()


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.fixture
async def cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[str], Any]]:
    """``await make(name)``: a new session instance in one cluster (Redis prefix,
    discovery); pushes over gRPC, or over NATS when parametrized ``"nats"``."""
    await _check_redis()
    transport = getattr(request, "param", "grpc")
    prefix = f"tg_test_{secrets.token_hex(6)}:"
    discovery = StaticDiscovery()
    channels = Channels()
    shared = RedisRoutes(REDIS_URL, prefix=prefix)
    c = Cluster(discovery, prefix, shared)
    closers: list[Callable[[], Any]] = []
    if transport == "nats":
        c.namespace = f"tgtest{secrets.token_hex(6)}"
        c.nats = await _connect_nats()
        closers.append(c.nats.close)

    async def make(name: str) -> Node:
        instance_id = f"{name}-{secrets.token_hex(3)}"
        auth = FakeAuth()
        config = ServerConfig(data_dir=tmp_path / name)
        server: Any = SimpleNamespace(config=config, authsession=auth)
        host = SessionHost(server, Dispatcher())
        routes = RedisRoutes(REDIS_URL, prefix=prefix)
        closers.append(routes.close)
        rpc = RpcServer("127.0.0.1", 0)
        peer = SessionPeer(host)
        peer.serve(rpc)
        await rpc.start()
        closers.append(rpc.stop)
        nc = None
        if c.nats is not None:
            # Each instance its own connection (as its own process would have).
            nc = await _connect_nats()
            closers.append(nc.close)
            await peer.subscribe(nc, session_subject(c.namespace, instance_id))
            closers.append(peer.close)
            await nc.flush()  # subscribed at the server before anyone publishes
        recorder = RouteRecorder(host, routes, instance_id, ttl=30, linger=0)
        recorder.start()
        closers.append(recorder.stop)
        registration = await discovery.register(SERVICE, instance_id, rpc.address)
        closers.append(registration.close)
        peers = SessionPeers(
            routes, discovery, channels, nats=nc, subject_prefix=c.namespace or "teamgram"
        )
        directory = ClusterDirectory(host, peers, instance_id)
        closers.append(directory.close)
        node = Node(instance_id, host, auth, rpc, recorder, peers, directory, peer)
        c.nodes.append(node)
        return node

    make.cluster = c  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                await closer()
        await channels.close()
        await discovery.close()
        async for k in shared.redis.scan_iter(match=f"{prefix}*"):
            await shared.redis.delete(k)
        await shared.close()


async def two(make: Any) -> tuple[Node, Node]:
    return await make("a"), await make("b")


# ------------------------------------------------------------------------ tests
@both
async def test_push_to_other_instance_once_and_in_order(cluster: Any) -> None:
    a, b = await two(cluster)
    user = 1001
    dev = Device.new()
    b.know(dev, user)
    dev.connect(b)
    await b.recorder.settle()
    assert await cluster.cluster.routes.instances_of(user) == {b.instance_id: {dev.key_id}}

    sent = {"n": 0}
    real_send = a.peers.send

    async def counting_send(instance_id: str, items: Any) -> bool:
        sent["n"] += 1
        return await real_send(instance_id, items)

    a.peers.send = counting_send  # type: ignore[method-assign]
    for n in range(500):
        a.directory.push_to_user(user, mark(n))
        if n % 50 == 49:
            await asyncio.sleep(0)  # several ticks: several batches, one order
    await a.directory.drain()
    await wait_for(lambda: len(dev.marks()) >= 500)
    await asyncio.sleep(0.05)
    assert dev.marks() == list(range(500))
    assert sent["n"] <= 10  # batched: not one call per push
    assert a.host.sessions_of_user(user) == []


@both
async def test_user_on_both_instances_gets_each_push_on_both(cluster: Any) -> None:
    a, b = await two(cluster)
    user = 1002
    phone, laptop = Device.new(), Device.new()
    a.know(phone, user)
    b.know(laptop, user)
    phone.connect(a)
    laptop.connect(b)
    await cluster.cluster.settle()
    assert await cluster.cluster.routes.instances_of(user) == {
        a.instance_id: {phone.key_id},
        b.instance_id: {laptop.key_id},
    }
    for n in range(20):
        a.directory.push_to_user(user, mark(n))
    await a.directory.drain()
    await wait_for(lambda: len(phone.marks()) >= 20 and len(laptop.marks()) >= 20)
    await asyncio.sleep(0.05)
    assert phone.marks() == list(range(20))
    assert laptop.marks() == list(range(20))

    # The device that made the change is skipped, wherever it is connected.
    b.directory.push_to_user(user, mark(100), exclude_key=phone.key_id)
    a.directory.push_to_user(user, mark(101), exclude_key=laptop.key_id)
    await a.directory.drain()
    await b.directory.drain()
    await wait_for(lambda: 101 in phone.marks() and 100 in laptop.marks())
    await asyncio.sleep(0.05)
    assert phone.marks()[20:] == [101]
    assert laptop.marks()[20:] == [100]


async def test_routes_follow_connections_and_sign_out(cluster: Any) -> None:
    a, b = await two(cluster)
    routes = cluster.cluster.routes
    user = 1003
    gone: list[int] = []
    b.recorder.on_user_offline.append(gone.append)
    d1, d2 = Device.new(), Device.new()
    b.know(d1, user)
    b.know(d2, user)
    d1.connect(b)
    d2.connect(b)
    await b.recorder.settle()
    assert await routes.instances_of(user) == {b.instance_id: {d1.key_id, d2.key_id}}
    assert await a.directory.online(user)
    assert await a.directory.connected_among([user]) == [user]

    d1.disconnect()  # its session is kept for resending: not routed
    await b.recorder.settle()
    assert await routes.instances_of(user) == {b.instance_id: {d2.key_id}}
    assert gone == []

    d1.connect(b)  # the client comes back on a new connection
    await b.recorder.settle()
    assert await routes.instances_of(user) == {b.instance_id: {d1.key_id, d2.key_id}}

    b.host.bind_user(d1.key_id, None)  # signed out: no route, though connected
    d2.disconnect()
    await b.recorder.settle()
    assert await routes.instances_of(user) == {}
    assert gone == [user]
    assert not await a.directory.online(user)
    assert await a.directory.connected_among([user]) == []


hung_calls: list[int] = []


class HungPeer:
    """A session instance that takes calls and never answers them (overloaded, stopped)."""

    async def deliver(self, items: list[Delivery]) -> None:
        hung_calls.append(len(items))
        await asyncio.sleep(60)

    async def bind_user(self, auth_key_id: int, user_id: int | None) -> None:
        await asyncio.sleep(60)

    async def revoke_key(self, auth_key_id: int) -> None:
        await asyncio.sleep(60)

    async def key_activity(self, auth_key_id: int) -> None:
        await asyncio.sleep(60)


async def test_instance_down_or_hung_does_not_hold_up_the_others(cluster: Any) -> None:
    a, b = await two(cluster)
    c = cluster.cluster
    # A registered instance nothing listens on, and one whose calls never end.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_address = f"127.0.0.1:{s.getsockname()[1]}"
    hung = RpcServer("127.0.0.1", 0)
    hung.add(SERVICE, HungPeer(), SessionPeer.METHODS)
    await hung.start()
    hung_address = hung.address
    await c.discovery.register(SERVICE, "dead", dead_address)
    await c.discovery.register(SERVICE, "hung", hung_address)
    user = 1004
    dev = Device.new()
    b.know(dev, user)
    dev.connect(b)
    await b.recorder.settle()
    # The user is routed to every instance (a dead one's entries linger until their ttl).
    await c.routes.online(user, 7, "dead", 30)
    await c.routes.online(user, 8, "hung", 30)
    try:
        start = time.monotonic()
        for n in range(10):
            a.directory.push_to_user(user, mark(n))
            await asyncio.sleep(0.01)
        await wait_for(lambda: len(dev.marks()) >= 10, timeout=1.5)
        delivered = time.monotonic() - start
        assert dev.marks() == list(range(10))
        assert delivered < 1.0, delivered  # not behind the hung one's 2 s deadline
        # The directory gives the hung instance up after its deadline and carries on.
        await a.directory.drain(timeout=10)
        assert time.monotonic() - start < 8
        # SessionPeers (the sync process's way) delivers to the live one, and survives
        # the others (both calls concurrent: the whole costs about one deadline).
        start = time.monotonic()
        await a.peers.deliver([Delivery(user, 0, mark(99))])
        assert time.monotonic() - start < 3.5
        await wait_for(lambda: 99 in dev.marks())
        assert hung_calls, "the hung instance was called"
    finally:
        await hung.stop(grace=None)


@pytest.mark.parametrize("cluster", ["nats"], indirect=True)
async def test_nats_instance_down_or_hung_does_not_hold_up_the_others(cluster: Any) -> None:
    a, b = await two(cluster)
    c = cluster.cluster
    # "dead": in discovery, nobody subscribed (its pushes go nowhere). "hung": subscribed,
    # never done with a message (its subscription's queue grows until NATS drops).
    taken: list[int] = []

    async def hang(msg: Any) -> None:
        taken.append(len(msg.data))
        await asyncio.sleep(60)

    hung_nc = await _connect_nats()
    await hung_nc.subscribe(session_subject(c.namespace, "hung"), cb=hang)
    await hung_nc.flush()
    await c.discovery.register(SERVICE, "dead", "127.0.0.1:9")
    await c.discovery.register(SERVICE, "hung", "127.0.0.1:9")
    user = 1005
    dev = Device.new()
    b.know(dev, user)
    dev.connect(b)
    await b.recorder.settle()
    await c.routes.online(user, 7, "dead", 30)
    await c.routes.online(user, 8, "hung", 30)
    try:
        start = time.monotonic()
        for n in range(10):
            a.directory.push_to_user(user, mark(n))
            await asyncio.sleep(0.01)
        await wait_for(lambda: len(dev.marks()) >= 10, timeout=1.5)
        assert dev.marks() == list(range(10))
        await a.directory.drain(timeout=2)
        assert time.monotonic() - start < 1.0  # a publish waits for no receiver
        start = time.monotonic()
        await a.peers.deliver([Delivery(user, 0, mark(99))])
        assert time.monotonic() - start < 0.5
        await wait_for(lambda: 99 in dev.marks())
        await wait_for(lambda: bool(taken))  # the hung one was published to
    finally:
        await hung_nc.close()


@pytest.mark.parametrize("cluster", ["nats"], indirect=True)
async def test_nats_malformed_batches_are_dropped(cluster: Any, caplog: Any) -> None:
    """Garbage on an instance's subject is logged and dropped; what follows arrives."""
    a, b = await two(cluster)
    c = cluster.cluster
    user = 1006
    dev = Device.new()
    b.know(dev, user)
    dev.connect(b)
    await b.recorder.settle()
    subject = session_subject(c.namespace, b.instance_id)
    with caplog.at_level(logging.WARNING, logger="teamgram.interface.session.cluster"):
        for junk in (b"", b"\xff\x00", wire.dumps([1, 2]), wire.dumps({"user_id": user})):
            await c.nats.publish(subject, junk)
        await c.nats.flush()
        await a.peers.deliver([Delivery(user, 0, mark(1)), Delivery(user, 0, mark(2))])
        await wait_for(lambda: dev.marks() == [1, 2])
    assert "malformed batch" in caplog.text


async def test_connected_among_and_online_across_instances(cluster: Any) -> None:
    a, b = await two(cluster)
    on_a, on_b, kept, absent = 2001, 2002, 2003, 2004
    da, db, dk = Device.new(), Device.new(), Device.new()
    a.know(da, on_a)
    b.know(db, on_b)
    b.know(dk, kept)
    da.connect(a)
    db.connect(b)
    dk.connect(b)
    dk.disconnect()
    await cluster.cluster.settle()
    for node in (a, b):
        got = await node.directory.connected_among([absent, on_b, kept, on_a, on_b])
        assert sorted(got) == [on_a, on_b]
        assert await node.directory.online(on_a)
        assert await node.directory.online(on_b)
        assert not await node.directory.online(absent)
    # "Kept for resending" is online on its own instance only (the embedded meaning).
    assert await b.directory.online(kept)
    assert not await a.directory.online(kept)


@both
async def test_bind_revoke_push_to_key_and_activity_reach_other_instance(cluster: Any) -> None:
    a, b = await two(cluster)
    routes = cluster.cluster.routes
    user = 3001
    dev = Device.new()  # connected to B, not signed in yet (a QR login screen, say)
    b.know(dev, None)
    dev.connect(b)
    await b.recorder.settle()

    # The key's pushes by key reach it wherever it is connected.
    a.directory.push_to_key(dev.key_id, mark(1))
    await a.directory.drain()
    await wait_for(lambda: dev.marks() == [1])

    # Signed in through A (the sign-in request came on another connection).
    a.directory.bind_user(dev.key_id, user)
    await a.directory.drain()
    await b.recorder.settle()
    assert [s.user_id for s in b.host.sessions.values()] == [user]
    assert await routes.instances_of(user) == {b.instance_id: {dev.key_id}}
    a.directory.push_to_user(user, mark(2))
    await a.directory.drain()
    await wait_for(lambda: dev.marks() == [1, 2])

    activity = await a.directory.key_activity(dev.key_id)
    assert activity is not None
    assert abs(activity[0] - time.time()) < 60 and activity[1] == dev.conn.client_ip  # type: ignore[union-attr]
    assert await a.directory.key_activity(12345) is None

    # Reset from A: B's sessions are signed out and the route goes.
    a.directory.revoke_key(dev.key_id)
    await a.directory.drain()
    await b.recorder.settle()
    assert [s.user_id for s in b.host.sessions.values()] == [None]
    assert await routes.instances_of(user) == {}


@both
async def test_session_peers_deliver_groups_per_instance(cluster: Any) -> None:
    """The sync process's way: no local host, one call per instance per batch."""
    a, b = await two(cluster)
    users = {a: 4001, b: 4002}
    devices = {}
    for node, user in users.items():
        d = Device.new()
        node.know(d, user)
        d.connect(node)
        devices[node] = d
    await cluster.cluster.settle()
    calls: list[tuple[str, int]] = []
    real_send = a.peers.send

    async def counting_send(instance_id: str, items: Any) -> bool:
        calls.append((instance_id, len(items)))
        return await real_send(instance_id, items)

    a.peers.send = counting_send  # type: ignore[method-assign]
    items = [Delivery(users[a if n % 2 else b], 0, mark(n)) for n in range(100)]
    items.append(Delivery(9999, 0, mark(1000)))  # nobody: goes nowhere
    await a.peers.deliver(items)
    assert sorted(calls) == sorted([(a.instance_id, 50), (b.instance_id, 50)])
    await wait_for(lambda: len(devices[a].marks()) == 50 and len(devices[b].marks()) == 50)
    assert devices[a].marks() == list(range(1, 100, 2))
    assert devices[b].marks() == list(range(0, 100, 2))


async def test_deliver_cost(cluster: Any) -> None:
    """Measures a batched deliver call of 1 and of 100 pushes (logged, loosely bounded)."""
    a, b = await two(cluster)
    user = 5001
    dev = Device.new()
    b.know(dev, user)
    dev.connect(b)
    await b.recorder.settle()
    peer = a.peers.peer(b.instance_id)
    assert peer is not None
    for size in (1, 100):
        batch = [Delivery(user, 0, mark(n)) for n in range(size)]
        await peer.deliver(batch)  # warm the channel
        rounds = 200 if size == 1 else 50
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            await peer.deliver(batch)
        wall = (time.perf_counter() - wall) / rounds * 1e6
        cpu = (time.process_time() - cpu) / rounds * 1e6
        log.warning(
            "deliver of %d: %.0f us wall, %.0f us CPU (both ends) per call", size, wall, cpu
        )
        assert wall < 100_000
