"""sync's push path (teamgram/messenger/sync/delivery.py) on the in-memory pipeline:
batching, order, origins, failures, dedup. The same path on NATS JetStream, with
worker processes killed, is tests/integration/test_delivery.py."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from teamgram.infra.pipeline import Event, MemoryPipeline, PipelineError, Subscription
from teamgram.infra.rpc import RemoteCallError
from teamgram.interface.session.cluster import Delivery
from teamgram.messenger.sync.delivery import (
    DeliveryWorker,
    DirectPublisher,
    MemoryDedup,
    PipelinePublisher,
)
from teamgram.tl import TLObject, types

pytestmark = pytest.mark.timeout(30)


def update(user_id: int, n: int) -> TLObject:
    return types.UpdateShortMessage(
        id=n, user_id=user_id, message="m", pts=n + 1, pts_count=1, date=1_700_000_000
    )


class Recorder:
    """A deliverer: (skip, user, id) per push; calls; optionally slow or failing."""

    def __init__(self, delay: float = 0.0) -> None:
        self.got: list[tuple[str | None, int, int]] = []
        self.calls: list[list[tuple[int, int]]] = []
        self.delay = delay
        self.running = 0
        self.most_running = 0
        self.fail: list[BaseException] = []  # raised by the next calls, in turn

    async def deliver(self, items: list[Delivery], skip_instance: str | None = None) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.fail:
                raise self.fail.pop(0)
            self.calls.append([(d.user_id, d.updates.id) for d in items])  # type: ignore[attr-defined]
            if self.delay:
                await asyncio.sleep(self.delay)
            self.got.extend((skip_instance, d.user_id, d.updates.id) for d in items)  # type: ignore[attr-defined]
        finally:
            self.running -= 1


def per_user(got: Iterable[tuple[str | None, int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for _, user, n in got:
        out[user].append(n)
    return dict(out)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


# --- DirectPublisher -------------------------------------------------------------------


async def test_direct_one_call_per_tick_and_one_in_flight() -> None:
    rec = Recorder(delay=0.01)
    direct = DirectPublisher(rec, origin="edge-1")
    for n in range(50):
        direct(n % 5 + 1, update(n % 5 + 1, n // 5), None)
    await asyncio.sleep(0.001)  # the first call is running; these wait for it
    for n in range(50, 100):
        direct(n % 5 + 1, update(n % 5 + 1, n // 5), 7)
    await direct.flush(5)
    assert [len(c) for c in rec.calls] == [50, 50]
    assert rec.most_running == 1
    assert per_user(rec.got) == {u: list(range(20)) for u in range(1, 6)}
    assert {skip for skip, _, _ in rec.got} == {"edge-1"}
    await direct.close()
    direct(1, update(1, 99))  # closed: dropped
    assert direct.dropped == 1 and direct.delivered == 100


async def test_direct_retries_routing_failures_then_drops() -> None:
    rec = Recorder()
    direct = DirectPublisher(rec, attempts=3, retry_delay=0.001)
    rec.fail = [RedisConnectionError("down"), RedisConnectionError("down")]
    direct(1, update(1, 0))
    await direct.flush(5)
    assert per_user(rec.got) == {1: [0]}
    rec.fail = [RedisConnectionError("down")] * 3
    direct(1, update(1, 1))
    await direct.flush(5)
    rec.fail = [ValueError("a bug")]  # not retried
    direct(1, update(1, 2))
    await direct.flush(5)
    direct(1, update(1, 3))
    await direct.flush(5)
    assert per_user(rec.got) == {1: [0, 3]}
    assert direct.dropped == 2
    await direct.close()


# --- PipelinePublisher ------------------------------------------------------------------


class FlakyPipeline(MemoryPipeline):
    """Fails the first ``failures`` publishes; records the ids tried."""

    def __init__(self, partitions: int, failures: int) -> None:
        super().__init__(partitions)
        self.failures = failures
        self.tried: list[str] = []

    async def publish(
        self,
        topic: str,
        key: int,
        payload: bytes,
        event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        self.tried.append(event_id or "")
        if self.failures:
            self.failures -= 1
            raise PipelineError("broker down")
        return await super().publish(topic, key, payload, event_id, headers)


async def test_publisher_retries_with_the_same_event_id() -> None:
    pipeline = FlakyPipeline(2, failures=3)
    rec = Recorder()
    worker = DeliveryWorker(pipeline, rec)
    await worker.start()
    publisher = PipelinePublisher(pipeline, retry_delay=0.001)
    for n in range(40):
        publisher(n % 4 + 1, update(n % 4 + 1, n // 4))
    await publisher.flush(5)
    await until(lambda: len(rec.got) >= 40)
    assert per_user(rec.got) == {u: list(range(10)) for u in range(1, 5)}
    # The failed tries of one event were retried under its id.
    assert len(set(pipeline.tried)) == publisher.events < len(pipeline.tried)
    assert publisher.published == 40 and publisher.queued == 0
    await publisher.close()
    await worker.close()
    await pipeline.close()


async def test_publisher_batches_a_partition_while_its_publish_is_in_flight() -> None:
    pipeline = MemoryPipeline(1)
    publisher = PipelinePublisher(pipeline, event_items=30)
    for n in range(100):
        publisher(n + 1, update(n + 1, 0))
    await publisher.flush(5)
    # Everything queued before the first publish ran: events of at most 30 pushes.
    assert publisher.events == 4 and publisher.published == 100
    await publisher.close()
    await pipeline.close()


async def test_publisher_drops_what_it_cannot_carry() -> None:
    pipeline = MemoryPipeline(2)
    publisher = PipelinePublisher(pipeline, event_bytes=200, max_queued=10)
    big = types.UpdateShortMessage(id=1, user_id=1, message="x" * 500, pts=1, pts_count=1, date=0)
    publisher(1, big)  # larger than an event
    publisher(1, "not a TL object")  # type: ignore[arg-type]
    for n in range(15):  # 5 more than it queues
        publisher(2, update(2, n))
    assert publisher.dropped == 7 and publisher.queued == 10
    await publisher.flush(5)
    await publisher.close()
    publisher(2, update(2, 99))
    assert publisher.dropped == 8
    await pipeline.close()


# --- DeliveryWorker ---------------------------------------------------------------------


async def test_worker_joins_partitions_per_tick_and_keeps_order() -> None:
    pipeline = MemoryPipeline(8)
    publisher = PipelinePublisher(pipeline)
    for n in range(800):
        publisher(n % 40 + 1, update(n % 40 + 1, n // 40))
    await publisher.flush(5)
    rec = Recorder()
    worker = DeliveryWorker(pipeline, rec, max_batch=4)
    await worker.start()
    await until(lambda: len(rec.got) >= 800)
    assert per_user(rec.got) == {u: list(range(20)) for u in range(1, 41)}
    assert len(rec.calls) < worker.events, "one call per event"
    await worker.close()
    await publisher.close()
    await pipeline.close()


async def test_worker_calls_per_origin_in_order_when_users_are_shared() -> None:
    pipeline = MemoryPipeline(1)
    rec = Recorder()
    a = PipelinePublisher(pipeline, origin="edge-a")
    b = PipelinePublisher(pipeline, origin="edge-b")
    # Disjoint users: one call per origin.
    a(1, update(1, 0))
    b(2, update(2, 0))
    await a.flush(5)
    await b.flush(5)
    worker = DeliveryWorker(pipeline, rec)
    await worker.start()
    await until(lambda: len(rec.got) >= 2)
    assert sorted(rec.got, key=str) == [("edge-a", 1, 0), ("edge-b", 2, 0)]
    await worker.close()
    # User 1 from both origins: in publish order, one run at a time.
    rec.got.clear()
    for n in range(1, 7):
        (a if n % 2 else b)(1, update(1, n))
        await (a if n % 2 else b).flush(5)
    worker = DeliveryWorker(pipeline, rec)
    await worker.start()
    await until(lambda: len(rec.got) >= 6)
    assert rec.got == [("edge-a" if n % 2 else "edge-b", 1, n) for n in range(1, 7)]
    await worker.close()
    await a.close()
    await b.close()
    await pipeline.close()


async def test_worker_routing_failures_wait_in_place() -> None:
    pipeline = MemoryPipeline(1)
    rec = Recorder()
    rec.fail = [RedisConnectionError("down")] * 4
    worker = DeliveryWorker(pipeline, rec, retry_delay=0.001, max_retry_delay=0.002)
    await worker.start()
    publisher = PipelinePublisher(pipeline)
    for n in range(10):
        publisher(5, update(5, n))
        await publisher.flush(5)
    await until(lambda: len(rec.got) >= 10)
    assert per_user(rec.got) == {5: list(range(10))}
    assert worker.retries == 4 and worker.dropped == 0
    rec.fail = [RemoteCallError("RPC_UNAVAILABLE", "gone")]
    publisher(5, update(5, 10))
    publisher(6, update(6, 0))
    await publisher.flush(5)
    await until(lambda: worker.dropped == 2)
    publisher(5, update(5, 11))
    await publisher.flush(5)
    await until(lambda: len(rec.got) >= 11)
    assert rec.got[-1] == (None, 5, 11)
    await worker.close()
    await publisher.close()
    await pipeline.close()


class AckLosingPipeline(MemoryPipeline):
    """Handles a batch, then never acknowledges it while ``lose`` is set (as a
    process that dies after delivering, before its acknowledgement lands)."""

    lose = True

    async def _handle_batch(self, events: list[Event], *args: Any) -> None:
        await super()._handle_batch(events, *args)
        while self.lose:
            await asyncio.sleep(3600)


async def test_worker_skips_what_it_delivered_before_a_redelivery() -> None:
    """A worker stops after delivering and recording, before acknowledging: the
    next one skips those events (the marks it shares); one without them does not."""
    pipeline = AckLosingPipeline(1)
    rec = Recorder()
    dedup = MemoryDedup()
    worker = DeliveryWorker(pipeline, rec, dedup=dedup)
    publisher = PipelinePublisher(pipeline)
    for n in range(5):
        publisher(9, update(9, n))
        await publisher.flush(5)  # an event each
    await worker.start()
    await until(lambda: len(rec.got) >= 5)
    await until(lambda: not worker._marking)
    assert await dedup.applied(worker.scope, 0) == 5
    sub: Subscription | None = worker._sub
    assert sub is not None
    await sub.close()
    pipeline.lose = False

    again = DeliveryWorker(pipeline, rec, dedup=dedup)
    await again.start()
    await until(lambda: again.events >= 5)
    publisher(9, update(9, 5))
    await publisher.flush(5)
    await until(lambda: len(rec.got) >= 6)
    await asyncio.sleep(0.05)  # and acknowledged
    assert per_user(rec.got) == {9: [0, 1, 2, 3, 4, 5]}
    assert again.duplicates == 5
    await again.close()

    # Without the marks (another process's memory): delivered again.
    fresh = DeliveryWorker(pipeline, rec, dedup=MemoryDedup())
    pipeline.lose = True
    await fresh.start()
    publisher(9, update(9, 6))
    await publisher.flush(5)
    await until(lambda: len(rec.got) >= 7)
    sub = fresh._sub
    assert sub is not None
    await sub.close()
    pipeline.lose = False
    last = DeliveryWorker(pipeline, rec, dedup=MemoryDedup())
    await last.start()
    await until(lambda: len(rec.got) >= 8)
    assert per_user(rec.got) == {9: [0, 1, 2, 3, 4, 5, 6, 6]}
    await last.close()
    await publisher.close()
    await pipeline.close()
