"""Split-mode session directory, without sockets: batching, ordering, routing choices.

Routes in memory, discovery static, the calls to other instances recorded instead
of sent, NATS a fake (the gRPC, NATS and Redis paths are in
tests/integration/test_session_cluster.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import nats.errors
import pytest

from teamgram.infra import wire
from teamgram.infra.discovery import StaticDiscovery
from teamgram.interface.session.cluster import (
    DELIVER_YIELD,
    MAX_BATCH,
    SERVICE,
    ClusterDirectory,
    Delivery,
    RouteRecorder,
    SessionPeer,
    SessionPeers,
    decode_batch,
    latest_activity,
    session_subject,
)
from teamgram.service.status.routes import MemoryRoutes, Routes
from teamgram.tl import types

pytestmark = pytest.mark.timeout(30)


def mark(n: int) -> types.UpdateShort:
    return types.UpdateShort(update=types.UpdatePtsChanged(), date=n)


class FakeHost:
    """The host's side of LocalSessions: who is connected, and what was pushed."""

    def __init__(self) -> None:
        self.on_key_routes: list[Callable[[int, int], None]] = []
        self.connected: set[tuple[int, int]] = set()  # (user, key)
        self.pushed: list[tuple[str, int, Any, int | None]] = []
        self.bound: list[tuple[int, int | None]] = []

    def connect(self, user_id: int, key_id: int) -> None:
        self.connected.add((user_id, key_id))
        for f in self.on_key_routes:
            f(user_id, key_id)

    def disconnect(self, user_id: int, key_id: int) -> None:
        self.connected.discard((user_id, key_id))
        for f in self.on_key_routes:
            f(user_id, key_id)

    def push_to_user(
        self, user_id: int, updates: Any, exclude: Any = None, exclude_key: int | None = None
    ) -> None:
        self.pushed.append(("user", user_id, updates, exclude_key))

    def push_to_key(self, auth_key_id: int, updates: Any) -> None:
        self.pushed.append(("key", auth_key_id, updates, None))

    def bind_user(self, auth_key_id: int, user_id: int | None) -> None:
        self.bound.append((auth_key_id, user_id))

    def revoke_key(self, auth_key_id: int) -> None:
        self.bound.append((auth_key_id, None))

    async def online(self, user_id: int) -> bool:
        return any(u == user_id for u, _ in self.connected)

    def connected_among_now(self, user_ids: Iterable[int]) -> list[int]:
        users = {u for u, _ in self.connected}
        return [u for u in user_ids if u in users]

    def key_activity_now(self, auth_key_id: int) -> tuple[float, str] | None:
        return (100.0, "1.2.3.4") if any(k == auth_key_id for _, k in self.connected) else None

    def key_connected(self, user_id: int, auth_key_id: int) -> bool:
        return (user_id, auth_key_id) in self.connected

    def connected_keys(self) -> list[tuple[int, int]]:
        return list(self.connected)


class RecordingPeers(SessionPeers):
    """Calls recorded in order instead of sent; ``gate`` holds sends back."""

    def __init__(self, routes: Any, discovery: StaticDiscovery) -> None:
        super().__init__(routes, discovery)
        self.log: list[tuple[str, str, Any]] = []
        self.gate: asyncio.Event | None = None

    async def send(self, instance_id: str, items: Sequence[Delivery]) -> bool:
        if self.gate is not None:
            await self.gate.wait()
        self.log.append((instance_id, "deliver", [d.updates.date for d in items]))
        return True

    async def call(self, instance_id: str, method: str, *args: Any) -> Any:
        self.log.append((instance_id, method, args))
        return (50.0, "5.6.7.8") if method == "key_activity" else None


async def edge() -> tuple[FakeHost, MemoryRoutes, RecordingPeers, ClusterDirectory]:
    routes = MemoryRoutes()
    discovery = StaticDiscovery()
    for name in ("a", "b", "c"):
        await discovery.register(SERVICE, name, f"127.0.0.1:{ord(name)}")
    host = FakeHost()
    peers = RecordingPeers(routes, discovery)
    return host, routes, peers, ClusterDirectory(host, peers, "a")


def test_delivery_crosses_the_wire() -> None:
    d = Delivery(7, 0, mark(3), exclude_key=-5)
    assert wire.loads(wire.dumps([d])) == [d]
    assert wire.registered_name(Delivery) == "session.Delivery"


def test_targets() -> None:
    routes: dict[int, Routes] = {1: {"a": {10}, "b": {11}, "c": {12, 13}}}
    everyone = ["a", "b", "c"]
    t = SessionPeers.targets
    assert t(Delivery(1, 0, mark(0)), routes, everyone, None) == ["a", "b", "c"]
    assert t(Delivery(1, 0, mark(0)), routes, everyone, "a") == ["b", "c"]
    # The excluded device's instance is skipped unless another key of the user is there.
    assert t(Delivery(1, 0, mark(0), exclude_key=12), routes, everyone, "a") == ["b", "c"]
    assert t(Delivery(1, 0, mark(0), exclude_key=11), routes, everyone, "a") == ["c"]
    assert t(Delivery(2, 0, mark(0)), routes, everyone, None) == []
    assert t(Delivery(0, 99, mark(0)), routes, everyone, "b") == ["a", "c"]


def test_latest_activity() -> None:
    assert latest_activity([None, None]) is None
    assert latest_activity([(5.0, "x"), None, (9.0, "y")]) == (9.0, "y")
    assert latest_activity([(5.0, "x"), (9.0, "")]) == (9.0, "x")


async def test_one_call_per_instance_per_tick_in_order() -> None:
    host, routes, peers, directory = await edge()
    await routes.online(1, 10, "b", 30)
    await routes.online(2, 20, "c", 30)
    await routes.online(3, 30, "a", 30)  # only here: no call
    for n in range(100):
        directory.push_to_user(1 + n % 3, mark(n))
    assert len(host.pushed) == 100  # the local host has them at once
    await directory.drain()
    assert sorted(peers.log) == [
        ("b", "deliver", list(range(0, 100, 3))),
        ("c", "deliver", list(range(1, 100, 3))),
    ]
    await directory.close()


async def test_key_operations_keep_their_place_among_pushes() -> None:
    host, routes, peers, directory = await edge()
    await routes.online(1, 10, "b", 30)
    directory.push_to_user(1, mark(1))
    directory.bind_user(10, None)
    directory.push_to_key(10, mark(2))
    directory.push_to_user(1, mark(3))
    directory.revoke_key(11)
    assert host.bound == [(10, None), (11, None)]
    await directory.drain()
    to_b = [(m, a) for i, m, a in peers.log if i == "b"]
    assert to_b == [
        ("deliver", [1]),
        ("bind_user", (10, None)),
        ("deliver", [2, 3]),
        ("revoke_key", (11,)),
    ]
    to_c = [(m, a) for i, m, a in peers.log if i == "c"]
    assert to_c == [("bind_user", (10, None)), ("deliver", [2]), ("revoke_key", (11,))]
    await directory.close()


async def test_a_slow_instance_does_not_delay_another_and_its_backlog_is_bounded() -> None:
    _host, routes, peers, directory = await edge()
    directory.max_queued = 50
    await routes.online(1, 10, "b", 30)
    await routes.online(2, 20, "c", 30)
    slow = asyncio.Event()
    real_send = peers.send

    async def send(instance_id: str, items: Sequence[Delivery]) -> bool:
        if instance_id == "c":
            await slow.wait()
        return await real_send(instance_id, items)

    peers.send = send  # type: ignore[method-assign]
    for n in range(300):
        directory.push_to_user(1 + n % 2, mark(n))
        if n % 10 == 9:
            await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)
    got_b = [d for i, _, ds in peers.log if i == "b" for d in ds]
    assert got_b == list(range(0, 300, 2))  # b got all, while c's sender waits
    slow.set()
    await directory.drain()
    got_c = [d for i, _, ds in peers.log if i == "c" for d in ds]
    # c's first batch was taken before the backlog grew; then only the newest 50 kept.
    assert got_c[-50:] == list(range(201, 300, 2))
    assert len(got_c) < 150
    await directory.close()


async def test_questions_combine_host_and_routes() -> None:
    host, routes, peers, directory = await edge()
    host.connect(1, 10)
    await routes.online(2, 20, "b", 30)
    assert await directory.connected_among([3, 2, 1, 2]) == [1, 2]
    assert await directory.online(1) and await directory.online(2)
    assert not await directory.online(3)
    # key_activity: this host's (100, 1.2.3.4) is later than the others' (50, ...).
    assert await directory.key_activity(10) == (100.0, "1.2.3.4")
    assert await directory.key_activity(99) == (50.0, "5.6.7.8")
    assert {i for i, m, _ in peers.log if m == "key_activity"} == {"b", "c"}


async def test_a_failing_routes_store_drops_user_pushes_only() -> None:
    host, routes, peers, directory = await edge()

    async def broken(user_ids: Iterable[int]) -> dict[int, Routes]:
        raise ConnectionError("redis is down")

    routes.instances_of_many = broken  # type: ignore[method-assign]
    routes.online_users = broken  # type: ignore[assignment, method-assign]
    directory.push_to_user(1, mark(1))
    directory.push_to_key(5, mark(2))
    directory.bind_user(5, 1)
    await directory.drain()
    assert sorted((i, m) for i, m, _ in peers.log) == [
        ("b", "bind_user"),
        ("b", "deliver"),
        ("c", "bind_user"),
        ("c", "deliver"),
    ]
    host.connect(1, 10)
    assert await directory.connected_among([1, 2]) == [1]  # what this process knows
    assert not await directory.online(2)


async def test_peer_hands_deliveries_to_its_host() -> None:
    host = FakeHost()
    peer = SessionPeer(host)
    await peer.deliver([Delivery(1, 0, mark(1), exclude_key=9), Delivery(0, 5, mark(2))])
    assert [(k, i, u.date, x) for k, i, u, x in host.pushed] == [
        ("user", 1, 1, 9),
        ("key", 5, 2, None),
    ]
    await peer.bind_user(5, 1)
    await peer.revoke_key(5)
    assert host.bound == [(5, 1), (5, None)]
    host.connect(1, 5)
    assert await peer.key_activity(5) == (100.0, "1.2.3.4")


async def test_route_recorder_follows_the_host() -> None:
    host = FakeHost()
    routes = MemoryRoutes()
    host.connect(1, 10)  # before start: picked up by start()
    recorder = RouteRecorder(host, routes, "a", ttl=0.3, linger=0)
    offline: list[int] = []
    recorder.on_user_offline.append(offline.append)
    recorder.start()
    await recorder.settle()
    assert await routes.instances_of(1) == {"a": {10}}
    host.connect(1, 11)
    host.connect(2, 20)
    host.disconnect(2, 20)  # cancels out before the task runs: nothing written
    await recorder.settle()
    assert await routes.instances_of_many([1, 2]) == {1: {"a": {10, 11}}}
    await routes.online(1, 12, "b", 30)  # the user is on another instance too
    host.disconnect(1, 10)
    host.disconnect(1, 11)
    await recorder.settle()
    assert await routes.instances_of(1) == {"b": {12}}
    assert offline == []
    await routes.offline(1, 12, "b")
    host.connect(3, 30)
    await recorder.settle()
    host.disconnect(3, 30)
    await recorder.settle()
    assert offline == [3]
    # A change the host forgot to tell: the periodic check (every ttl) catches it.
    host.connect(4, 40)
    await recorder.settle()
    host.connected.discard((4, 40))
    await asyncio.sleep(0.5)
    await recorder.settle()
    assert await routes.instances_of(4) == {}
    await recorder.stop()
    assert host.on_key_routes == []


async def test_a_quick_reconnect_keeps_the_route() -> None:
    host = FakeHost()
    routes = MemoryRoutes()
    recorder = RouteRecorder(host, routes, "a", ttl=30, linger=0.2)
    offline: list[int] = []
    recorder.on_user_offline.append(offline.append)
    writes: list[str] = []
    real_offline = routes.offline

    async def counting_offline(user_id: int, auth_key_id: int, instance_id: str) -> bool:
        writes.append("offline")
        return await real_offline(user_id, auth_key_id, instance_id)

    routes.offline = counting_offline  # type: ignore[method-assign]
    recorder.start()
    host.connect(1, 10)
    await recorder.settle()
    host.disconnect(1, 10)
    await recorder.settle()
    await asyncio.sleep(0.1)
    host.connect(1, 10)  # back within the linger: nothing written, nobody told
    await recorder.settle()
    await asyncio.sleep(0.2)
    await recorder.settle()
    assert writes == [] and offline == []
    assert await routes.instances_of(1) == {"a": {10}}
    host.disconnect(1, 10)  # gone for good: withdrawn once the linger is over
    await recorder.settle()
    assert await routes.instances_of(1) == {"a": {10}}
    await asyncio.sleep(0.3)
    await recorder.settle()
    assert await routes.instances_of(1) == {}
    assert writes == ["offline"] and offline == [1]
    await recorder.stop()


# ------------------------------------------------------------ the NATS transport
class FakeNats:
    """What SessionPeers and SessionPeer use of a nats-py client, in memory."""

    def __init__(self, max_payload: int = 1 << 20) -> None:
        self.max_payload = max_payload
        self.published: list[tuple[str, bytes]] = []
        self.events: list[str] = []  # "publish" / "flush", in order
        self.fail: Exception | None = None
        self.subscribed: dict[str, Any] = {}

    async def publish(self, subject: str, payload: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append((subject, payload))
        self.events.append("publish")

    async def flush(self, timeout: int = 10) -> None:
        self.events.append("flush")

    async def subscribe(self, subject: str, **kw: Any) -> Any:
        self.subscribed[subject] = kw["cb"]
        nc = self

        class Sub:
            async def unsubscribe(self) -> None:
                del nc.subscribed[subject]

        return Sub()

    def dates(self, subject: str) -> list[list[int]]:
        return [
            [d.updates.date for d in decode_batch(p)] for s, p in self.published if s == subject
        ]


def test_session_subject_is_a_valid_token_and_one_per_instance() -> None:
    assert session_subject("tg", "edge-1") == "tg.session.edge-1"
    ids = ["10.0.0.5:4001", "10_2e0", "a.b", "a_b", "a_2eb", "*", ">", "a b", "é", "", "x" * 9]
    subjects = [session_subject("tg", i) for i in ids]
    assert len(set(subjects)) == len(ids)
    for s in subjects:
        token = s.removeprefix("tg.session.")
        assert token and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in token), s


def test_decode_batch_is_strict() -> None:
    good = [Delivery(1, 0, mark(1)), Delivery(0, 5, mark(2), exclude_key=0)]
    assert decode_batch(wire.dumps(good)) == good
    bad = [
        b"",
        b"\xff",
        wire.dumps(good)[:-1],
        wire.dumps(good) + b"\x00",
        wire.dumps(tuple(good)),
        wire.dumps([1]),
        wire.dumps([Delivery(0, 0, mark(1))]),  # to nobody
        wire.dumps([Delivery(True, 0, mark(1))]),  # type: ignore[arg-type]
        wire.dumps([Delivery(1, 0, "not TL")]),  # type: ignore[arg-type]
    ]
    for data in bad:
        with pytest.raises(wire.WireError):
            decode_batch(data)


async def nats_edge() -> tuple[FakeHost, MemoryRoutes, SessionPeers, FakeNats, ClusterDirectory]:
    routes = MemoryRoutes()
    discovery = StaticDiscovery()
    for name in ("a", "b", "c"):
        await discovery.register(SERVICE, name, f"127.0.0.1:{ord(name)}")
    nc = FakeNats()
    peers = SessionPeers(routes, discovery, nats=nc, subject_prefix="ns")  # type: ignore[arg-type]
    calls: list[tuple[str, str, Any]] = []

    async def call(instance_id: str, method: str, *args: Any) -> Any:
        nc.events.append(f"{method}@{instance_id}")
        calls.append((instance_id, method, args))

    peers.call = call  # type: ignore[method-assign]
    host = FakeHost()
    return host, routes, peers, nc, ClusterDirectory(host, peers, "a")


async def test_nats_one_publish_per_instance_per_tick_in_order() -> None:
    _host, routes, peers, nc, directory = await nats_edge()
    await routes.online(1, 10, "b", 30)
    await routes.online(2, 20, "c", 30)
    for n in range(100):
        directory.push_to_user(1 + n % 2, mark(n))
    await directory.drain()
    assert nc.dates("ns.session.b") == [list(range(0, 100, 2))]
    assert nc.dates("ns.session.c") == [list(range(1, 100, 2))]
    # A big run is cut at MAX_BATCH, and further where the server's max_payload is.
    nc.published.clear()
    await peers.deliver([Delivery(1, 0, mark(n)) for n in range(MAX_BATCH + 10)])
    assert [len(x) for x in nc.dates("ns.session.b")] == [MAX_BATCH, 10]
    nc.published.clear()
    nc.max_payload = len(wire.dumps([Delivery(1, 0, mark(0))] * 30))
    await peers.deliver([Delivery(1, 0, mark(n)) for n in range(100)])
    got = nc.dates("ns.session.b")
    assert [d for batch in got for d in batch] == list(range(100))
    assert all(len(p) <= nc.max_payload for _, p in nc.published)
    await directory.close()


async def test_nats_key_operations_wait_for_the_pushes_before_them() -> None:
    _host, routes, _peers, nc, directory = await nats_edge()
    await routes.online(1, 10, "b", 30)
    directory.push_to_user(1, mark(1))
    directory.bind_user(10, 1)
    directory.push_to_user(1, mark(2))
    await directory.drain()
    ev = nc.events
    # b's first batch is published, then flushed, before b is told of the bind.
    assert ev.index("publish") < ev.index("flush") < ev.index("bind_user@b")
    publishes = [i for i, e in enumerate(ev) if e == "publish"]
    assert len(publishes) == 2 and publishes[1] > ev.index("bind_user@b")
    assert nc.dates("ns.session.b") == [[1], [2]]
    await directory.close()


async def test_nats_gone_or_failing_instances_are_skipped(caplog: Any) -> None:
    _host, routes, peers, nc, directory = await nats_edge()
    await routes.online(1, 10, "gone", 30)  # a route left behind: not in discovery
    await routes.online(1, 11, "b", 30)
    await peers.deliver([Delivery(1, 0, mark(1))])
    assert [s for s, _ in nc.published] == ["ns.session.b"]
    nc.fail = nats.errors.OutboundBufferLimitError()
    assert not await peers.send("b", [Delivery(1, 0, mark(2))])
    assert not await peers.send("b", [Delivery(1, 0, mark(3))])
    assert caplog.text.count("publish of 1 pushes on b failed") == 1  # then quiet
    await directory.close()


async def test_nats_peer_takes_its_subject_in_order_and_drops_garbage(caplog: Any) -> None:
    host = FakeHost()
    peer = SessionPeer(host)
    nc = FakeNats()
    await peer.subscribe(nc, "ns.session.b")  # type: ignore[arg-type]
    cb = nc.subscribed["ns.session.b"]

    def msg(data: bytes) -> Any:
        return SimpleNamespace(subject="ns.session.b", data=data)

    await cb(msg(wire.dumps([Delivery(1, 0, mark(n)) for n in range(DELIVER_YIELD * 2 + 1)])))
    await cb(msg(b"\x00junk"))
    await cb(msg(wire.dumps([Delivery(0, 5, mark(-1))])))
    assert [u.date for _, _, u, _ in host.pushed] == [*range(DELIVER_YIELD * 2 + 1), -1]
    assert "malformed batch" in caplog.text
    await peer.close()
    assert nc.subscribed == {}
