"""sync's push path in split mode on real engines: PipelinePublisher -> NATS JetStream
-> DeliveryWorker -> a deliverer (a fake, or SessionPeers over gRPC with routes in
Redis); the pipeline's batch consumption and takeover order it relies on.

NATS and Redis are this machine's (``TEAMGRAM_TEST_NATS_URL``,
``TEAMGRAM_TEST_REDIS_URL``). Streams and Redis keys carry a random prefix per
test and are deleted afterwards. An engine that cannot be reached fails the tests
that need it when ``CI=true`` and skips them anywhere else.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from teamgram.infra import wire
from teamgram.infra.discovery import StaticDiscovery
from teamgram.infra.pipeline import (
    DEAD_GROUP,
    Event,
    JetStreamPipeline,
    dead_letter_topic,
)
from teamgram.infra.rpc import RemoteCallError, RpcServer
from teamgram.interface.session.cluster import SERVICE, Delivery, SessionPeer, SessionPeers
from teamgram.messenger.sync.delivery import (
    TOPIC,
    DeliveryWorker,
    MemoryDedup,
    PipelinePublisher,
    RedisDedup,
    decode_event,
    encode_event,
)
from teamgram.service.status.routes import RedisRoutes
from teamgram.tl import TLObject, types
from tests.integration.conftest import unavailable
from tests.integration.test_pipeline import (
    NATS_URL,
    ROOT,
    CuttableProxy,
    Harness,
    harness,
    raw_connect,
    topic,
    until,
)

pytestmark = pytest.mark.timeout(120)

REDIS_URL = os.environ.get("TEAMGRAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = 30.0

_redis_problem: list[str] = []


async def need_redis() -> None:
    if not _redis_problem:
        client = Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        try:
            await client.ping()
            _redis_problem.append("")
        except Exception as exc:
            _redis_problem.append(f"{REDIS_URL}: {type(exc).__name__}: {exc}")
        finally:
            await client.aclose()
    if _redis_problem[0]:
        unavailable("redis", _redis_problem[0])


@pytest.fixture(params=["memory", "jetstream"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with harness(request.param) as made:
        yield made


@pytest.fixture
async def jetstream() -> AsyncIterator[Harness]:
    async with harness("jetstream") as made:
        yield made


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    await need_redis()
    prefix = f"tg_test_{secrets.token_hex(4)}:"
    yield prefix
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def update(user_id: int, n: int, sent: float = 0.0) -> TLObject:
    """A push that says whose it is and its number (``id``); ``message`` may carry
    the time it was made."""
    return types.UpdateShortMessage(
        id=n, user_id=user_id, message=repr(sent), pts=n + 1, pts_count=1, date=1_700_000_000
    )


class FakeDeliverer:
    """Records every push handed over, as (user_id, id), and the calls."""

    def __init__(self) -> None:
        self.got: list[tuple[int, int]] = []
        self.calls: list[int] = []  # pushes per call
        self.skips: list[str | None] = []

    async def deliver(self, items: list[Delivery], skip_instance: str | None = None) -> None:
        self.calls.append(len(items))
        self.skips.append(skip_instance)
        self.got.extend((d.user_id, d.updates.id) for d in items)  # type: ignore[attr-defined]


def per_user(got: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for user, n in got:
        out[user].append(n)
    return dict(out)


def first_seen(seq: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for n in seq:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


# --- the pipeline's batch consumption (what the worker relies on) ------------------


async def test_event_format_round_trips() -> None:
    items = [
        wire.dumps(Delivery(7, 0, update(7, 1), 99)),
        wire.dumps(Delivery(0, -5, update(0, 2))),
        b"\xffnot wire",  # another version's push: skipped, the rest kept
        wire.dumps(("not", "a delivery")),
    ]
    origin, got = decode_event(encode_event("edge-1", items))
    assert origin == "edge-1"
    assert got == [Delivery(7, 0, update(7, 1), 99), Delivery(0, -5, update(0, 2))]
    with pytest.raises(wire.WireError):
        decode_event(wire.dumps((99, "", [])))


async def test_batches_are_consecutive_events_of_one_partition(make: Harness) -> None:
    pipeline = make(partitions=3)
    t = topic()
    for n in range(300):
        await pipeline.publish(t, n % 7, b"%d" % n)
    batches: list[list[Event]] = []

    async def handler(events: list[Event]) -> None:
        batches.append(events)

    await pipeline.subscribe_batches(t, "sync", handler, max_batch=40)
    await until(lambda: sum(map(len, batches)) >= 300, "every event")
    assert all(1 <= len(b) <= 40 for b in batches)
    assert len(batches) < 150, "events came one per call"
    seen: dict[int, list[int]] = defaultdict(list)
    last_seq: dict[int, int] = {}
    for batch in batches:
        [part] = {pipeline.partition(e.key) for e in batch}
        for e in batch:
            assert e.seq > last_seq.get(part, 0)
            last_seq[part] = e.seq
            seen[e.key].append(int(e.payload))
    assert seen == {k: list(range(k, 300, 7)) for k in range(7)}


async def test_failing_batch_retries_then_isolates_the_bad_event(make: Harness) -> None:
    pipeline = make(partitions=1, max_attempts=2)
    t = topic()
    for payload in (b"a", b"b", b"poison", b"c"):
        await pipeline.publish(t, 1, payload)
    calls: list[list[bytes]] = []
    done: list[bytes] = []

    async def handler(events: list[Event]) -> None:
        calls.append([e.payload for e in events])
        if any(e.payload == b"poison" for e in events):
            raise ValueError("cannot")
        done.extend(e.payload for e in events)

    dead: list[Event] = []

    async def on_dead(event: Event) -> None:
        dead.append(event)

    await pipeline.subscribe(dead_letter_topic(t), "ops", on_dead)
    await pipeline.subscribe_batches(t, "sync", handler)
    await until(lambda: b"c" in done and bool(dead), "the good events and the dead letter")
    assert done == [b"a", b"b", b"c"]
    assert [e.payload for e in dead] == [b"poison"]
    assert dead[0].headers[DEAD_GROUP] == "sync"
    # The batch with the bad event: whole (2 attempts), then one event at a time
    # (the bad one twice). How the events fall into batches depends on arrival.
    first = next(i for i, c in enumerate(calls) if b"poison" in c)
    batch = calls[first]
    assert calls[first + 1] == batch
    if len(batch) > 1:
        singles = [[p] for p in batch]
        singles.insert(batch.index(b"poison"), [b"poison"])
        assert calls[first + 2 : first + 2 + len(singles)] == singles


async def test_next_subscriber_gets_held_events_before_newer_ones(jetstream: Harness) -> None:
    """A subscriber dies holding events; newer ones are published before the next
    subscriber starts: it must not handle the newer ones first (the server would
    hand them out at once and the held ones only after ack_wait)."""
    pipeline = jetstream(partitions=1)
    t = topic()
    held = asyncio.Event()

    async def stuck(events: list[Event]) -> None:
        held.set()
        await asyncio.Event().wait()

    sub = await pipeline.subscribe_batches(t, "sync", stuck)
    for n in range(5):
        await pipeline.publish(t, 1, b"%d" % n)
    await asyncio.wait_for(held.wait(), WAIT)
    await sub.close()
    for n in range(5, 10):
        await pipeline.publish(t, 1, b"%d" % n)
    got: list[Event] = []

    async def works(events: list[Event]) -> None:
        got.extend(events)

    await pipeline.subscribe_batches(t, "sync", works)
    await until(lambda: len(got) >= 10, "every event")
    assert [int(e.payload) for e in got] == list(range(10))
    assert got[0].redelivered and not got[-1].redelivered


# --- publisher -> JetStream -> worker -------------------------------------------------


async def test_thousand_pushes_for_twenty_users_in_order_once(jetstream: Harness) -> None:
    pipeline = jetstream(partitions=4)
    fake = FakeDeliverer()
    worker = DeliveryWorker(pipeline, fake)
    await worker.start()
    publisher = PipelinePublisher(pipeline)
    try:
        for n in range(1000):
            publisher(n % 20, update(n % 20, n // 20), None if n % 3 else 1234)
            if n % 50 == 0:
                await asyncio.sleep(0)  # a writer commits in bursts
        await publisher.flush(WAIT)
        await until(lambda: len(fake.got) >= 1000, "every push")
        await asyncio.sleep(0.2)
    finally:
        await publisher.close()
        await worker.close()
    assert per_user(fake.got) == {u: list(range(50)) for u in range(20)}
    assert publisher.published == 1000 and publisher.dropped == 0
    assert publisher.events < 1000, "one event per push: no batching"
    assert worker.delivered == 1000 and worker.duplicates == 0
    assert len(fake.calls) <= publisher.events
    assert set(fake.skips) == {None}


async def test_publisher_survives_a_connection_drop(jetstream: Harness) -> None:
    proxy = CuttableProxy()
    await proxy.start()
    try:
        publishing = JetStreamPipeline(proxy.url, stream_prefix=jetstream.prefix, partitions=4)
        jetstream.made.append(publishing)
        consuming = jetstream(partitions=4)
        fake = FakeDeliverer()
        worker = DeliveryWorker(consuming, fake)
        await worker.start()
        publisher = PipelinePublisher(publishing)
        for n in range(600):
            if n in (200, 400):
                proxy.cut()
            publisher(n % 10, update(n % 10, n // 10))
            if n % 20 == 0:
                await asyncio.sleep(0.01)
        await publisher.flush(WAIT)
        await until(lambda: len(fake.got) >= 600, "every push after the drops")
        await asyncio.sleep(0.3)
        await publisher.close()
        await worker.close()
        assert per_user(fake.got) == {u: list(range(60)) for u in range(10)}
        assert publisher.dropped == 0
    finally:
        await proxy.close()


async def test_routing_failures_are_retried_unreachable_instances_are_not(
    jetstream: Harness,
) -> None:
    pipeline = jetstream(partitions=2)
    got: list[tuple[int, int]] = []
    failures = {"routing": 3, "unreachable": 0}

    class Flaky:
        async def deliver(self, items: list[Delivery], skip_instance: str | None = None) -> None:
            if failures["routing"]:
                failures["routing"] -= 1
                raise RedisConnectionError("redis is down")
            if any(d.user_id == 666 for d in items):
                failures["unreachable"] += 1
                raise RemoteCallError("RPC_UNAVAILABLE", "instance gone")
            got.extend((d.user_id, d.updates.id) for d in items)  # type: ignore[attr-defined]

    worker = DeliveryWorker(pipeline, Flaky(), retry_delay=0.01, max_retry_delay=0.05)
    await worker.start()
    publisher = PipelinePublisher(pipeline)
    for n in range(30):
        publisher(n % 3, update(n % 3, n // 3))
    await publisher.flush(WAIT)
    await until(lambda: len(got) >= 30, "the pushes after the routing failures")
    assert per_user(got) == {u: list(range(10)) for u in range(3)}
    assert worker.retries >= 3
    publisher(666, update(666, 0))
    await publisher.flush(WAIT)
    await until(lambda: failures["unreachable"] > 0, "the push to an unreachable instance")
    publisher(1, update(1, 10))
    await publisher.flush(WAIT)
    await until(lambda: (1, 10) in got, "the push after the unreachable one")
    # Not redelivered: acknowledged although its instance was unreachable.
    await asyncio.sleep(pipeline.ack_wait * 1.5)  # type: ignore[attr-defined]
    assert failures["unreachable"] == 1 and worker.dropped == 1
    await publisher.close()
    await worker.close()


async def test_through_session_peers_over_grpc(jetstream: Harness, redis_prefix: str) -> None:
    """The real deliverer: routes in Redis, two session instances served over gRPC;
    each gets its users' pushes once and in order, the origin's own are skipped."""

    class Host:
        def __init__(self) -> None:
            self.got: list[tuple[int, int, int | None]] = []

        def push_to_user(
            self, user_id: int, updates: Any, exclude: Any = None, exclude_key: int | None = None
        ) -> None:
            self.got.append((user_id, updates.id, exclude_key))

        def push_to_key(self, auth_key_id: int, updates: Any) -> None:
            self.got.append((-auth_key_id, updates.id, None))

    hosts = {"edge-a": Host(), "edge-b": Host()}
    servers: list[RpcServer] = []
    discovery = StaticDiscovery()
    routes = RedisRoutes(REDIS_URL, prefix=redis_prefix)
    peers = SessionPeers(routes, discovery)
    pipeline = jetstream(partitions=4)
    dedup = RedisDedup(REDIS_URL, redis_prefix)
    worker = DeliveryWorker(pipeline, peers, dedup=dedup)
    try:
        for instance_id, host in hosts.items():
            server = RpcServer()
            SessionPeer(host).serve(server)  # type: ignore[arg-type]
            await server.start()
            servers.append(server)
            await discovery.register(SERVICE, instance_id, server.address)
        # Users 1-14 on edge-a, 15-29 on edge-b, 6-14 on both (two devices).
        await routes.online_many("edge-a", [(u, 1000 + u) for u in range(1, 15)], 60)
        await routes.online_many("edge-b", [(u, 2000 + u) for u in range(6, 30)], 60)
        await worker.start()
        publisher = PipelinePublisher(pipeline)
        from_a = PipelinePublisher(pipeline, origin="edge-a")
        for n in range(580):
            user = n % 29 + 1
            # Users 20-29 push from their only device on edge-b: nothing to send
            # there; the others from a device not connected now (3000+).
            exclude = 2000 + user if user >= 20 else 3000 + user
            (from_a if user == 3 else publisher)(user, update(user, n // 29), exclude)
        publisher.push_to_key(77, update(0, 999))
        await publisher.flush(WAIT)
        await from_a.flush(WAIT)
        # User 3's pushes come from edge-a, which served them itself.
        want_a = {u: list(range(20)) for u in range(1, 15) if u != 3} | {-77: [999]}
        want_b = {u: list(range(20)) for u in range(6, 20)} | {-77: [999]}

        def arrived() -> bool:
            a = per_user((u, n) for u, n, _ in hosts["edge-a"].got)
            b = per_user((u, n) for u, n, _ in hosts["edge-b"].got)
            return a == want_a and b == want_b

        await until(arrived, "every push on its instances")
        await asyncio.sleep(0.2)
        assert arrived()
        for host in hosts.values():
            assert {k for u, _, k in host.got if u >= 0} <= {3000 + u for u in range(20)}
        await publisher.close()
        await from_a.close()
    finally:
        await worker.close()
        await dedup.close()
        await peers.close()
        await routes.close()
        for server in servers:
            await server.stop(0)


# --- worker processes killed ------------------------------------------------------------


class WorkerProcess:
    """tests/integration/delivery_worker.py in a child process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, prefix: str, partitions: int, ack_wait: float, out: Path, *extra: str
    ) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.delivery_worker",
            NATS_URL,
            prefix,
            str(partitions),
            str(ack_wait),
            str(out),
            *extra,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert line.strip() == b"ready", line
        return cls(proc)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


def read_lines(path: Path) -> list[tuple[int, int, int, int]]:
    """(pid, call, user, id) per push delivered, in file order."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, call, user, n = map(int, line.split())
        out.append((pid, call, user, n))
    return out


async def test_killed_worker_process_loses_nothing_and_keeps_order(
    jetstream: Harness, redis_prefix: str, tmp_path: Path
) -> None:
    """kill -9 of the sync process mid-stream, pushes going on; a new one starts:
    every push arrives, each user's in order; the only repeats are of what the
    killed one delivered last, unacknowledged."""
    partitions, ack_wait, users, per = 4, 1.0, 20, 50
    pipeline = jetstream(partitions=partitions)
    out = tmp_path / "delivered.txt"
    redis = ("--redis", REDIS_URL, redis_prefix)
    first = await WorkerProcess.start(
        jetstream.prefix, partitions, ack_wait, out, *redis, "--delay", "0.003"
    )
    publisher = PipelinePublisher(pipeline)
    second: WorkerProcess | None = None

    async def produce() -> None:
        # A round of one push per user every 20 ms: about a second in all.
        for n in range(users * per):
            publisher(n % users, update(n % users, n // users))
            if n % users == users - 1:
                await asyncio.sleep(0.02)

    producing = asyncio.create_task(produce())
    try:
        await until(lambda: len(read_lines(out)) >= 300, "the first worker at work")
        await first.kill()
        killed = read_lines(out)
        assert not producing.done(), "killed after the last push: not in the middle"
        second = await WorkerProcess.start(jetstream.prefix, partitions, ack_wait, out, *redis)
        await producing
        await publisher.flush(WAIT)

        def complete() -> bool:
            return {(u, n) for _, _, u, n in read_lines(out)} >= {
                (u, n) for u in range(users) for n in range(per)
            }

        await until(complete, "every push after the restart")
        await asyncio.sleep(ack_wait)  # nothing else comes
    finally:
        producing.cancel()
        await first.kill()
        if second is not None:
            await second.kill()
        await publisher.close()
    lines = read_lines(out)
    by_user = per_user((u, n) for _, _, u, n in lines)
    assert {u: first_seen(seq) for u, seq in by_user.items()} == {
        u: list(range(per)) for u in range(users)
    }
    repeats = Counter((u, n) for _, _, u, n in lines) - Counter(
        {(u, n): 1 for u in range(users) for n in range(per)}
    )
    # Only the killed worker's last calls (at most one batch per partition in
    # flight, and the one before it whose acknowledgements may not have landed).
    last_calls = sorted({c for _, c, _, _ in killed})[-2 * partitions :]
    window = {(u, n) for _, c, u, n in killed if c in last_calls}
    assert set(repeats) <= window, (sorted(repeats), sorted(window))
    # Once repeated, a user's pushes go on in order: each repeat run re-sends a
    # tail of what came before, then continues.
    for seq in by_user.values():
        top = -1
        for n in seq:
            assert n <= top + 1, seq
            top = max(top, n)


@pytest.mark.parametrize("dedup", ["redis", "memory"])
async def test_redelivered_batches_are_suppressed_by_redis_dedup(
    jetstream: Harness, redis_prefix: str, tmp_path: Path, dedup: str
) -> None:
    """A worker delivers (and records) everything but its acknowledgements never
    reach the server, then is killed: the next worker gets it all again. With the
    marks in Redis it skips every one; with memory marks (a new process) it
    delivers them again."""
    partitions, ack_wait = 2, 1.0
    pipeline = jetstream(partitions=partitions)
    out = tmp_path / "delivered.txt"
    first = await WorkerProcess.start(
        jetstream.prefix,
        partitions,
        ack_wait,
        out,
        "--redis",
        REDIS_URL,
        redis_prefix,
        "--drop-acks",
    )
    publisher = PipelinePublisher(pipeline)
    try:
        for n in range(100):
            publisher(n % 5, update(n % 5, n // 5))
            if n % 10 == 9:
                await asyncio.sleep(0.01)
        await publisher.flush(WAIT)
        await until(lambda: len(read_lines(out)) >= 100, "the first worker's deliveries")
        await asyncio.sleep(0.2)  # and its marks
    finally:
        await first.kill()
        await publisher.close()
    stored = publisher.events
    fake = FakeDeliverer()
    marks = RedisDedup(REDIS_URL, redis_prefix) if dedup == "redis" else MemoryDedup()
    worker = DeliveryWorker(jetstream(partitions=partitions), fake, dedup=marks)
    await worker.start()
    try:
        await until(lambda: worker.events >= stored, "the redelivered events")
        await asyncio.sleep(0.3)
        if dedup == "redis":
            assert fake.got == [] and worker.duplicates == worker.events
        else:
            assert per_user(fake.got) == {u: list(range(20)) for u in range(5)}
            assert worker.duplicates == 0
    finally:
        await worker.close()
        await marks.close()


async def test_worker_stream_prefix_and_topic_defaults(jetstream: Harness) -> None:
    """What ``teamgramd run sync`` consumes: stream <prefix>_updates, group sync."""
    pipeline = jetstream(partitions=2)
    worker = DeliveryWorker(pipeline, FakeDeliverer())
    await worker.start()
    await worker.close()
    nc = await raw_connect()
    try:
        js = nc.jetstream()
        info = await js.stream_info(f"{jetstream.prefix}_{TOPIC}")
        assert info.config.name == f"{jetstream.prefix}_updates"
        names = {c.name for c in await js.consumers_info(info.config.name)}
        assert names == {"sync_0", "sync_1"}
    finally:
        await nc.close()
