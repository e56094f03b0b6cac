"""sync's push path in split mode: committed updates -> event pipeline -> the sync
process -> the session instances holding each user's connected keys.

The writer (msg, in an edge process) commits an update, then hands the push to
:class:`PipelinePublisher` (the ``push`` callable :class:`~.service.SyncService`
takes). The publisher stores it on the event pipeline (NATS JetStream) in the
background, so the writer never waits for a device; the sync process runs
:class:`DeliveryWorker`, which takes the pushes off the pipeline and hands them,
in batches, to a :class:`Deliverer` (in production
:class:`~teamgram.interface.session.cluster.SessionPeers`: a routes lookup in
Redis, then one gRPC call per session instance). :class:`DirectPublisher` is the
same callable without a broker: the writing process calls the deliverer itself.

Events (topic :data:`TOPIC`, key: the user id, or the auth key id of a push by
key): the payload is ``wire.dumps((FORMAT, origin, [wire.dumps(Delivery), ...]))``.
A publisher puts the pushes of one partition that queued up while its previous
publish was in flight into one event, so a busy partition costs one publish (and
one acknowledgement) per round trip, not per push. Each push is encoded on its
own so a worker skips one it cannot read (another version's class) and keeps
the rest. ``origin`` is the instance id of an edge that pushed to its own
sessions already (the worker skips that instance), or "".

Order: a user's pushes keep their order end to end. A publisher has at most one
publish in flight per partition (a retried publish cannot land behind a later
one), the pipeline hands a partition's events to one consumer in order, and a
worker waits for a batch's delivery before it takes the partition's next one.
Two publishers (two edges writing for one user) are not ordered between them:
a device may see pts N+1 before N, and fills the gap as after any gap.

Exactly once, as a device sees it: updates carry pts, and a client ignores an
update whose pts it has; duplicates are still kept rare. The pipeline is at
least once: a worker that dies after delivering a batch but before its
acknowledgement reached the server has that batch redelivered. A worker records
the position (stream sequence) of the last event it delivered per partition in a
:class:`Dedup` (Redis, so the next worker process sees it; memory otherwise) and
skips redelivered events at or below it. One number per partition: a partition
is consumed by one worker, in order, so nothing below the mark is undelivered.

Failures: a deliverer that cannot reach a session instance drops that instance's
part (the device catches up with updates.getDifference); that is no reason to
redeliver, and :class:`~.cluster.SessionPeers` logs it and returns. A failure to
find where to deliver (Redis down) is retried in place, with backoff, for as
long as it lasts: the partition's later events wait behind it, kept by the
pipeline. Anything else (a bug) is retried by the pipeline and, when it keeps
failing, dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from teamgram.errors import RpcError
from teamgram.infra import rpc, wire
from teamgram.infra.pipeline import (
    Event,
    JetStreamPipeline,
    Pipeline,
    PipelineClosed,
    Subscription,
    new_event_id,
)
from teamgram.interface.session.cluster import Delivery
from teamgram.tl import TLObject

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "GROUP",
    "TOPIC",
    "Dedup",
    "Deliverer",
    "DeliveryWorker",
    "DirectPublisher",
    "MemoryDedup",
    "PipelinePublisher",
    "RedisDedup",
    "decode_event",
    "encode_event",
    "is_retryable",
    "is_unreachable",
    "open_dedup",
]

TOPIC = "updates"
GROUP = "sync"
# The payload's layout version (first element of the tuple).
FORMAT = 1
# One event carries at most this many pushes and bytes (JetStream's default
# max_payload is 1 MB; a worker decodes an event in one go).
EVENT_ITEMS = 256
EVENT_BYTES = 256 * 1024
# Publishes a publisher has in flight at once (one per partition at most). Fewer
# than the partitions: under load, partitions waiting for a slot gather more
# pushes per event (fewer events to store, hand out and acknowledge); when idle a
# push finds a slot at once.
PUBLISH_SLOTS = 4
# Pushes queued in a publisher before the oldest are dropped (the broker is down
# for long: the devices recover the dropped ones with getDifference).
MAX_QUEUED = 100_000
# Events a worker takes from one partition per call.
WORKER_BATCH = 64
# Pushes per deliver call (bounds one call's size and its time on the loop).
DELIVER_CHUNK = 2000
# Seconds between repeated warnings of one ongoing failure.
WARN_EVERY = 30.0
# How long a worker's delivery marks outlive their last update (Redis): longer
# than any event waits for a redelivery.
DEDUP_TTL = 7 * 86400


class Deliverer(Protocol):
    """Where a worker or a :class:`DirectPublisher` hands pushes: one call per batch.

    :class:`~teamgram.interface.session.cluster.SessionPeers` is one. It should
    return once every instance was served or given up on (unreachable instances
    are not the caller's to retry) and raise when it could not find the targets
    (routes lookup), which the caller retries.
    """

    async def deliver(self, items: list[Delivery], skip_instance: str | None = None) -> None: ...


def is_unreachable(exc: BaseException) -> bool:
    """A failure to reach a session instance: retrying would not help the device,
    which recovers through getDifference."""
    return isinstance(exc, RpcError)


def is_retryable(exc: BaseException) -> bool:
    """A failure of the routing lookup or of a connection: it passes; retry."""
    return isinstance(exc, RedisError | OSError | TimeoutError)


def encode_event(origin: str, items: Sequence[bytes]) -> bytes:
    """The payload of one event: pushes already encoded with ``wire.dumps``."""
    return wire.dumps((FORMAT, origin, list(items)))


def decode_event(payload: bytes) -> tuple[str, list[Delivery]]:
    """(origin, pushes) of an event; a push that cannot be read is logged and
    skipped (WireError for a payload that is not an event at all)."""
    value = wire.loads(payload)
    if not (
        type(value) is tuple
        and len(value) == 3
        and value[0] == FORMAT
        and type(value[1]) is str
        and type(value[2]) is list
    ):
        raise wire.WireError(f"delivery event: unknown layout {type(value).__name__}")
    items: list[Delivery] = []
    for n, data in enumerate(value[2]):
        try:
            item = wire.loads(data) if type(data) is bytes else None
        except wire.WireError as exc:
            log.error("delivery event: push %d unreadable, skipped: %s", n, exc)
            continue
        if isinstance(item, Delivery):
            items.append(item)
        else:
            log.error("delivery event: push %d is %s, skipped", n, type(item).__name__)
    return value[1], items


class _Warner:
    """Logs the first failure of a streak and then one per WARN_EVERY seconds."""

    def __init__(self) -> None:
        self.failures = 0
        self._last = 0.0

    def failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.failures == 1 or now - self._last >= WARN_EVERY:
            self._last = now
            log.warning("%s (failure %d in a row): %r", what, self.failures, exc)

    def ok(self, what: str) -> None:
        if self.failures:
            log.warning("%s: works again after %d failures", what, self.failures)
            self.failures = 0


# ------------------------------------------------------------------ publishers
@dataclass(slots=True)
class _Outbox:
    """One partition's pushes not yet published, and the task publishing them."""

    items: deque[tuple[int, bytes]] = field(default_factory=deque)  # (key, Delivery)
    task: asyncio.Task[None] | None = None


class PipelinePublisher:
    """The ``push`` callable for :class:`~.service.SyncService` in split mode: stores
    each push on the pipeline in the background, in order per partition.

    Calling it costs the encoding of the push (a snapshot: the caller may reuse
    its objects); a task per busy partition publishes what is queued, one event
    per round trip, with at most ``max_in_flight`` publishes at once (partitions
    waiting for a slot gather more per event). A publish that fails (broker down for longer than the
    pipeline's own retries) is tried again, with the same event id, until it
    works; meanwhile pushes queue, up to ``max_queued`` (then the oldest are
    dropped, and counted in ``dropped``).

    ``origin``: set it to this process's session instance id when the caller also
    pushes to its own sessions directly; the worker then skips this instance.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        topic: str = TOPIC,
        *,
        origin: str = "",
        event_items: int = EVENT_ITEMS,
        event_bytes: int = EVENT_BYTES,
        max_in_flight: int = PUBLISH_SLOTS,
        max_queued: int = MAX_QUEUED,
        retry_delay: float = 0.1,
        max_retry_delay: float = 5.0,
    ) -> None:
        self.pipeline = pipeline
        self.topic = topic
        self.origin = origin
        self.event_items = max(1, event_items)
        self.event_bytes = event_bytes
        self.max_queued = max_queued
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.pushed = 0  # pushes accepted
        self.published = 0  # pushes stored on the pipeline
        self.events = 0  # events stored
        self.dropped = 0  # pushes given up on
        self._boxes: dict[int, _Outbox] = {}
        self._slots = asyncio.Semaphore(max(1, max_in_flight))
        self._queued = 0
        self._closed = False
        self._warn = _Warner()

    def __call__(self, user_id: int, updates: TLObject, exclude_key: int | None = None) -> None:
        self.push(user_id, updates, exclude_key)

    def push(self, user_id: int, updates: TLObject, exclude_key: int | None = None) -> None:
        """To every connected session of ``user_id`` (but the device ``exclude_key``)."""
        self._queue(user_id, Delivery(user_id, 0, updates, exclude_key or 0))

    def push_to_key(self, auth_key_id: int, updates: TLObject) -> None:
        """To the sessions of one auth key, wherever they are."""
        self._queue(auth_key_id, Delivery(0, auth_key_id, updates))

    @property
    def queued(self) -> int:
        """Pushes accepted and not yet stored (or dropped)."""
        return self._queued

    def _queue(self, key: int, delivery: Delivery) -> None:
        if self._closed:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("delivery publisher is closed: pushes are dropped")
            return
        try:
            data = wire.dumps(delivery)
        except Exception:
            self.dropped += 1
            log.exception("delivery publisher: push for %d cannot be encoded", key)
            return
        if len(data) > self.event_bytes:
            self.dropped += 1
            log.error("delivery publisher: push for %d is %d bytes, dropped", key, len(data))
            return
        self.pushed += 1
        part = self.pipeline.partition(key)
        box = self._boxes.get(part)
        if box is None:
            box = self._boxes[part] = _Outbox()
        box.items.append((key, data))
        self._queued += 1
        if self._queued > self.max_queued:
            self._drop_oldest(box)
        if box.task is None:
            with rpc.detached():
                box.task = asyncio.get_running_loop().create_task(
                    self._send(part, box), name=f"delivery-publish-{part}"
                )

    def _drop_oldest(self, box: _Outbox) -> None:
        # From the fullest outbox: the partition that is furthest behind.
        fullest = max(self._boxes.values(), key=lambda b: len(b.items), default=box)
        if fullest.items:
            fullest.items.popleft()
            self._queued -= 1
            self.dropped += 1
            if self.dropped % 10_000 == 1:
                log.warning("delivery publisher: queue full, dropped %d pushes", self.dropped)

    def _take(self, box: _Outbox) -> list[tuple[int, bytes]]:
        """The head of the outbox, as much as one event carries."""
        items = box.items
        taken = [items.popleft()]
        size = len(taken[0][1])
        while items and len(taken) < self.event_items:
            size += len(items[0][1])
            if size > self.event_bytes:
                break
            taken.append(items.popleft())
        return taken

    async def _send(self, part: int, box: _Outbox) -> None:
        taken: list[tuple[int, bytes]] = []
        try:
            while box.items:
                # The event is made when a slot is free: a partition that waited for
                # one sends all it gathered meanwhile in one event.
                async with self._slots:
                    taken = self._take(box)
                    payload = encode_event(self.origin, [data for _, data in taken])
                    await self._publish(taken[0][0], payload)
                self._queued -= len(taken)
                self.published += len(taken)
                self.events += 1
                taken = []
        except (asyncio.CancelledError, PipelineClosed) as exc:
            # Closed, or close() gave up waiting: what was queued here is lost.
            lost = len(taken) + len(box.items)
            self._queued -= lost
            self.dropped += lost
            box.items.clear()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("delivery publisher: pipeline closed, %d pushes dropped", lost)
        finally:
            box.task = None
            if not box.items and self._boxes.get(part) is box:
                del self._boxes[part]

    async def _publish(self, key: int, payload: bytes) -> None:
        event_id = new_event_id()  # the same id on every try: the stream stores it once
        delay = self.retry_delay
        while True:
            try:
                await self.pipeline.publish(self.topic, key, payload, event_id)
                self._warn.ok("delivery publisher")
                return
            except PipelineClosed:
                raise
            except Exception as exc:
                self._warn.failed(f"delivery publisher: publish to {self.topic} failed", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every push accepted so far is stored (TimeoutError past ``timeout``)."""
        async with asyncio.timeout(timeout):
            while True:
                tasks = [b.task for b in self._boxes.values() if b.task is not None]
                if not tasks:
                    return
                await asyncio.wait(tasks)

    async def close(self, timeout: float = 10.0) -> None:
        """Refuse new pushes, store the queued ones (within ``timeout``), then stop."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await self.flush(timeout)
        tasks = [b.task for b in self._boxes.values() if b.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.dropped:
            log.warning("delivery publisher closed; %d pushes were dropped", self.dropped)


class DirectPublisher:
    """The ``push`` callable without a broker: hands the pushes of each loop tick to
    ``deliverer`` in one call (cluster delivery mode "direct").

    One call is in flight at a time, so a user's pushes arrive in order; pushes
    made meanwhile go in the next call. A failed routes lookup is retried
    ``attempts`` times, then the batch is dropped (nothing durable holds it; the
    devices recover it with getDifference).
    """

    def __init__(
        self,
        deliverer: Deliverer,
        *,
        origin: str = "",
        max_queued: int = MAX_QUEUED,
        attempts: int = 3,
        retry_delay: float = 0.05,
        retryable: Callable[[BaseException], bool] = is_retryable,
    ) -> None:
        self.deliverer = deliverer
        self.origin = origin
        self.max_queued = max_queued
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        self.retryable = retryable
        self.pushed = 0
        self.delivered = 0  # pushes handed to the deliverer (and accepted)
        self.calls = 0
        self.dropped = 0
        self._pending: deque[Delivery] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._warn = _Warner()

    def __call__(self, user_id: int, updates: TLObject, exclude_key: int | None = None) -> None:
        self.push(user_id, updates, exclude_key)

    def push(self, user_id: int, updates: TLObject, exclude_key: int | None = None) -> None:
        self._queue(Delivery(user_id, 0, updates, exclude_key or 0))

    def push_to_key(self, auth_key_id: int, updates: TLObject) -> None:
        self._queue(Delivery(0, auth_key_id, updates))

    def _queue(self, item: Delivery) -> None:
        if self._closed:
            self.dropped += 1
            return
        self.pushed += 1
        self._pending.append(item)
        if len(self._pending) > self.max_queued:
            self._pending.popleft()
            self.dropped += 1
        if self._task is None:
            with rpc.detached():
                self._task = asyncio.get_running_loop().create_task(
                    self._send(), name="delivery-direct"
                )

    async def _send(self) -> None:
        try:
            while self._pending:
                pending = self._pending
                n = min(len(pending), DELIVER_CHUNK)
                batch = [pending.popleft() for _ in range(n)]
                await self._deliver(batch)
        finally:
            self._task = None

    async def _deliver(self, batch: list[Delivery]) -> None:
        delay = self.retry_delay
        for attempt in range(1, self.attempts + 1):
            try:
                self.calls += 1
                await self.deliverer.deliver(batch, skip_instance=self.origin or None)
                self.delivered += len(batch)
                self._warn.ok("direct delivery")
                return
            except Exception as exc:
                if attempt == self.attempts or not self.retryable(exc):
                    self.dropped += len(batch)
                    log.warning(
                        "direct delivery: %d pushes dropped after %d attempts: %r",
                        len(batch),
                        attempt,
                        exc,
                    )
                    return
                self._warn.failed("direct delivery", exc)
            await asyncio.sleep(delay)
            delay *= 2

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every push made so far was handed over (or dropped)."""
        async with asyncio.timeout(timeout):
            while self._task is not None:
                await asyncio.wait([self._task])

    async def close(self, timeout: float = 5.0) -> None:
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await self.flush(timeout)
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.dropped += len(self._pending)
        self._pending.clear()


# ----------------------------------------------------------------------- dedup
class Dedup(Protocol):
    """The last event position a worker delivered, per partition of a topic/group."""

    async def applied(self, scope: str, partition: int) -> int:
        """The last recorded position (0: none)."""
        ...

    async def record(self, scope: str, partition: int, seq: int) -> None: ...

    async def close(self) -> None: ...


class MemoryDedup:
    """Within one process: covers redeliveries of lost acknowledgements."""

    def __init__(self) -> None:
        self._marks: dict[tuple[str, int], int] = {}

    async def applied(self, scope: str, partition: int) -> int:
        return self._marks.get((scope, partition), 0)

    async def record(self, scope: str, partition: int, seq: int) -> None:
        key = (scope, partition)
        if seq > self._marks.get(key, 0):
            self._marks[key] = seq

    async def close(self) -> None:
        pass


class RedisDedup:
    """Shared through Redis: the next worker process (after a crash) sees the marks.

    One string per partition, ``{prefix}delivered:{scope}:{partition}``, holding
    the position, expiring ``ttl`` seconds after its last write. This process's
    own marks are kept in memory too, so only the first redelivered batch of a
    partition after a start reads Redis.
    """

    def __init__(
        self,
        url: str | None = None,
        prefix: str = "tg:",
        *,
        client: Redis | None = None,
        ttl: int = DEDUP_TTL,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("a Redis url or client is needed")
            client = Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
            self._owned = True
        else:
            self._owned = False
        self.redis = client
        self.prefix = prefix
        self.ttl = ttl
        self._local = MemoryDedup()
        self._loaded: set[tuple[str, int]] = set()

    def key(self, scope: str, partition: int) -> str:
        return f"{self.prefix}delivered:{scope}:{partition}"

    async def applied(self, scope: str, partition: int) -> int:
        if (scope, partition) not in self._loaded:
            stored = await self.redis.get(self.key(scope, partition))
            if stored is not None:
                await self._local.record(scope, partition, int(stored))
            self._loaded.add((scope, partition))
        return await self._local.applied(scope, partition)

    async def record(self, scope: str, partition: int, seq: int) -> None:
        await self._local.record(scope, partition, seq)
        await self.redis.set(self.key(scope, partition), seq, ex=self.ttl)

    async def close(self) -> None:
        if self._owned:
            self._owned = False
            await self.redis.aclose()


def open_dedup(redis_url: str | None, prefix: str = "tg:") -> Dedup:
    """Redis marks for a URL (what a sync process uses), memory for None."""
    return MemoryDedup() if not redis_url else RedisDedup(redis_url, prefix)


# ---------------------------------------------------------------------- worker
_Run = tuple[str, list[Delivery]]  # (origin, pushes) of one event


class DeliveryWorker:
    """Takes pushes off the pipeline and hands them to ``deliverer`` (the sync process).

    Each partition's events come in batches (up to ``max_batch``, all that have
    arrived); the batches of every partition that arrive in one loop tick go to
    the deliverer in one call (one per origin), and are acknowledged once it
    returned. See the module docstring for order, duplicates and failures.

    ``assigned``: the partitions this worker consumes (default: all). Several
    sync processes must split the partitions between them (a partition consumed
    by two at once loses its order). ``dedup`` (default: in memory) is the
    caller's to close.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        deliverer: Deliverer,
        *,
        topic: str = TOPIC,
        group: str = GROUP,
        dedup: Dedup | None = None,
        assigned: Collection[int] | None = None,
        max_batch: int = WORKER_BATCH,
        retry_delay: float = 0.05,
        max_retry_delay: float = 5.0,
        retryable: Callable[[BaseException], bool] = is_retryable,
        unreachable: Callable[[BaseException], bool] = is_unreachable,
    ) -> None:
        self.pipeline = pipeline
        self.deliverer = deliverer
        self.topic = topic
        self.group = group
        # Whose marks these are: another cluster's stream may share the Redis.
        stream = pipeline.stream_name(topic) if isinstance(pipeline, JetStreamPipeline) else topic
        self.scope = f"{stream}:{group}"
        # A dedup given is the caller's to close.
        self.dedup: Dedup = dedup if dedup is not None else MemoryDedup()
        self.assigned = assigned
        self.max_batch = max_batch
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.retryable = retryable
        self.unreachable = unreachable
        self.events = 0  # events handled (duplicates included)
        self.delivered = 0  # pushes handed to the deliverer and accepted
        self.duplicates = 0  # redelivered events skipped
        self.dropped = 0  # pushes given up on (unreachable, unreadable)
        self.calls = 0  # deliver calls
        self.retries = 0  # deliver calls retried after a routing failure
        self._sub: Subscription | None = None
        self._pending: list[tuple[list[_Run], asyncio.Future[None]]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._wanted: dict[int, int] = {}  # partition -> position to record
        self._marking: dict[int, asyncio.Task[None]] = {}
        self._warn = _Warner()

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self.pipeline.subscribe_batches(
                self.topic,
                self.group,
                self._handle,
                max_batch=self.max_batch,
                assigned=self.assigned,
            )

    async def close(self) -> None:
        """Stop consuming; what is not acknowledged yet goes to the next worker."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.close()
        for task in list(self._flushes):
            task.cancel()
        await asyncio.gather(*self._flushes, return_exceptions=True)
        marking = list(self._marking.values())
        if marking:
            await asyncio.wait(marking, timeout=2.0)
        for task in marking:
            task.cancel()
        await asyncio.gather(*marking, return_exceptions=True)

    async def __aenter__(self) -> DeliveryWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one partition's batch ---------------------------------------------------------
    async def _handle(self, events: list[Event]) -> None:
        self.events += len(events)
        partition = self.pipeline.partition(events[0].key)
        fresh = await self._fresh(events, partition)
        runs: list[_Run] = []
        for event in fresh:
            try:
                origin, items = decode_event(event.payload)
            except wire.WireError as exc:
                log.error("delivery worker: event %s unreadable, skipped: %s", event.id, exc)
                continue
            if items:
                runs.append((origin, items))
        if runs:
            await self._deliver(runs)
        last = max(e.seq for e in events)
        if last:
            self._mark(partition, last)

    def _mark(self, partition: int, seq: int) -> None:
        """Record the partition's position in the background (the batch is acknowledged
        without waiting for Redis), one write in flight per partition, the latest
        position winning. A mark that lags only costs duplicates after a crash."""
        if seq <= self._wanted.get(partition, 0):
            return
        self._wanted[partition] = seq
        if partition not in self._marking:
            with rpc.detached():
                self._marking[partition] = asyncio.get_running_loop().create_task(
                    self._write_marks(partition), name=f"delivery-mark-{partition}"
                )

    async def _write_marks(self, partition: int) -> None:
        written = 0
        try:
            while (seq := self._wanted[partition]) > written:
                try:
                    await self.dedup.record(self.scope, partition, seq)
                except Exception as exc:  # the next batch tries again
                    log.warning("delivery worker: recording partition %d: %r", partition, exc)
                    return
                written = seq
        finally:
            self._marking.pop(partition, None)

    async def _fresh(self, events: list[Event], partition: int) -> list[Event]:
        """The events not delivered before (redelivered ones at or below the mark are)."""
        if not any(e.redelivered and e.seq for e in events):
            return events
        try:
            mark = await self.dedup.applied(self.scope, partition)
        except Exception as exc:
            log.warning("delivery worker: dedup lookup failed, delivering anyway: %r", exc)
            return events
        fresh = [e for e in events if not (e.redelivered and 0 < e.seq <= mark)]
        if len(fresh) < len(events):
            self.duplicates += len(events) - len(fresh)
            log.info(
                "delivery worker: %d redelivered events of partition %d skipped (delivered before)",
                len(events) - len(fresh),
                partition,
            )
        return fresh

    async def _deliver(self, runs: list[_Run]) -> None:
        """Hand ``runs`` over (joined with other partitions' of this tick), retrying
        routing failures until they pass."""
        delay = self.retry_delay
        while True:
            try:
                await self._join(runs)
                self._warn.ok("delivery worker")
                return
            except Exception as exc:
                if self.unreachable(exc):
                    n = sum(len(items) for _, items in runs)
                    self.dropped += n
                    log.warning("delivery worker: %d pushes not delivered: %r", n, exc)
                    return
                if not self.retryable(exc):
                    raise  # the pipeline retries, then dead-letters
                self.retries += 1
                self._warn.failed("delivery worker: deliver failed, retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    # -- joining the partitions' batches of one loop tick -------------------------------
    async def _join(self, runs: list[_Run]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._start_flush)
        self._pending.append((runs, fut))
        await fut

    def _start_flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        with rpc.detached():
            task = asyncio.get_running_loop().create_task(
                self._flush(pending), name="delivery-flush"
            )
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, pending: list[tuple[list[_Run], asyncio.Future[None]]]) -> None:
        runs = [run for part, _ in pending for run in part]
        try:
            await self._call_runs(runs)
        except BaseException as exc:
            for _, fut in pending:
                if not fut.done():
                    if isinstance(exc, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for _, fut in pending:
                if not fut.done():
                    fut.set_result(None)

    async def _call_runs(self, runs: list[_Run]) -> None:
        by_origin: dict[str, list[Delivery]] = {}
        for origin, items in runs:
            by_origin.setdefault(origin, []).extend(items)
        if len(by_origin) == 1:
            [(origin, items)] = by_origin.items()
            await self._call(origin, items)
            return
        owners: dict[tuple[int, int], str] = {}
        shared = False
        for origin, items in by_origin.items():
            for d in items:
                if owners.setdefault((d.user_id, d.auth_key_id), origin) != origin:
                    shared = True
        if not shared:
            # Different origins, different users: no order between them to keep.
            results = await asyncio.gather(
                *(self._call(o, items) for o, items in by_origin.items()), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return
        # A user's pushes from two origins: in the order they came, one run at a time.
        merged: list[_Run] = []
        for origin, items in runs:
            if merged and merged[-1][0] == origin:
                merged[-1][1].extend(items)
            else:
                merged.append((origin, list(items)))
        for origin, items in merged:
            await self._call(origin, items)

    async def _call(self, origin: str, items: list[Delivery]) -> None:
        for start in range(0, len(items), DELIVER_CHUNK):
            chunk = items[start : start + DELIVER_CHUNK]
            self.calls += 1
            await self.deliverer.deliver(chunk, skip_instance=origin or None)
            self.delivered += len(chunk)

    def stats(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "dropped": self.dropped,
            "calls": self.calls,
            "retries": self.retries,
        }
