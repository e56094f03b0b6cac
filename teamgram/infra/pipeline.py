"""Event pipeline: durable topics between msg, inbox fan-out and sync (issue #9).

One small interface, :class:`Pipeline`, with two bindings: :class:`MemoryPipeline`
(the embedded default, asyncio only) and :class:`JetStreamPipeline` (NATS
JetStream). A Kafka binding (aiokafka) fits the same shape: a topic is a Kafka
topic, a partition a Kafka partition, a group a consumer group.

The contract, the same on every binding:

- ``publish(topic, key, payload)`` returns the event's id once the event is
  stored (on JetStream: on disk, acknowledged by the server). Publishing again
  with the same ``event_id`` within the duplicate window stores nothing new, so
  a publisher that crashed before it saw the answer can simply publish again.
- ``key % partitions`` picks the partition. A group consumes each partition with
  one consumer, one event at a time, so the events of one key (a user) are
  handled in publish order, and different keys run in parallel on their
  partitions. Every group sees every event. ``subscribe_batches`` hands a
  handler the events of a partition that are at hand, up to a bound, in one
  call (acknowledged together), for handlers with a cost per call.
- An event is acknowledged only after its handler returned. A handler that
  raises gets the same event again, in place, after a backoff (the key's later
  events wait behind it, as in a Kafka consumer) up to ``max_attempts`` times;
  then the event goes to the dead-letter topic (``<topic>-dead``, with the
  group and the error in its headers) and to the log, and the group moves on.
- A consumer that stops without acknowledging (a crash, a cancelled
  subscription) loses nothing: the next subscriber in the same group gets the
  unacknowledged events again, in order, before newer ones (on JetStream it
  waits ``ack_wait`` for them when its consumer had some pending at start).
  ``Event.seq`` orders a partition's events. Delivery is at least once; a handler
  makes it exactly once by being idempotent (:class:`IdempotentHandler` for the
  in-memory part; the durable part is the database transaction the handler
  commits, which records the ids it applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

log = logging.getLogger(__name__)

# Topic, group and stream prefix names: one NATS subject token, a valid stream,
# consumer and Kafka topic name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_EMPTY: Mapping[str, str] = MappingProxyType({})
DEAD_LETTER_SUFFIX = "-dead"
# Headers of a dead letter (besides the original event's own).
DEAD_GROUP = "Tg-Dead-Group"
DEAD_ERROR = "Tg-Dead-Error"
DEAD_ATTEMPTS = "Tg-Dead-Attempts"
DEAD_ID = "Tg-Dead-Id"


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a handler sees it."""

    topic: str
    key: int
    id: str  # unique per event: what an idempotent consumer remembers
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    # How many times the pipeline handed this event to this group: >1 after a
    # crash or a lost acknowledgement.
    delivery: int = 1
    # Handler calls within this delivery: >1 when the previous call raised.
    attempt: int = 1
    # The event's position in its partition, increasing in publish order (JetStream:
    # the stream sequence; memory: the offset, from 1). A consumer that records the
    # last position it applied per partition can tell a redelivered event it already
    # applied without remembering ids.
    seq: int = 0

    @property
    def redelivered(self) -> bool:
        """The group may have seen (even applied) this event before."""
        return self.delivery > 1 or self.attempt > 1


Handler = Callable[[Event], Awaitable[None]]
# Consecutive events of one partition, in order (subscribe_batches).
BatchHandler = Callable[[list[Event]], Awaitable[None]]
# What a subscription calls with the events it takes from one partition at a time.
_Dispatch = Callable[[list[Event]], Awaitable[None]]


class PipelineError(RuntimeError):
    """The pipeline cannot do what was asked (the message says why)."""


class PipelineClosed(PipelineError):
    """The pipeline was closed."""


def dead_letter_topic(topic: str) -> str:
    """Where the events of ``topic`` go when a group's handler keeps failing on them."""
    return topic + DEAD_LETTER_SUFFIX


def new_event_id() -> str:
    return uuid.uuid4().hex


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{kind} {name!r}: use 1-100 of A-Z a-z 0-9 _ -")


class Subscription(ABC):
    """One group's consumption of one topic, on some or all of its partitions."""

    topic: str
    group: str
    partitions: tuple[int, ...]

    @abstractmethod
    async def close(self) -> None:
        """Stop: running handlers are cancelled and the events this subscriber held
        stay unacknowledged, so the group's next subscriber gets them again, in
        order (in memory at once; on JetStream after ``ack_wait``, as after a crash)."""


class Pipeline(ABC):
    """Durable, partitioned topics; see the module docstring for the contract."""

    def __init__(
        self,
        partitions: int,
        *,
        max_attempts: int = 5,
        retry_delay: float = 0.05,
        max_retry_delay: float = 2.0,
        max_deliver: int = 10,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        # Handler calls per delivery before the event is dead-lettered.
        self.max_attempts = max(1, max_attempts)
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        # Deliveries without an acknowledgement (crashes) before the event is
        # dead-lettered unhandled: a poison event that kills the process each time.
        self.max_deliver = max(1, max_deliver)
        self._closed = False
        self._subscriptions: set[Subscription] = set()

    def partition(self, key: int) -> int:
        return key % self.partitions

    @abstractmethod
    async def publish(
        self,
        topic: str,
        key: int,
        payload: bytes,
        event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Store an event; returns its id once it is stored. A repeated ``event_id``
        (within the duplicate window) is stored once."""

    async def subscribe(
        self,
        topic: str,
        group: str,
        handler: Handler,
        concurrency: int | None = None,
        assigned: Collection[int] | None = None,
    ) -> Subscription:
        """Consume ``topic`` as ``group``: ``handler`` runs once per event (at least).

        ``assigned`` names the partitions this subscriber owns (default: all); each
        (group, partition) must have one live subscriber, or order is lost.
        ``concurrency`` caps handlers running at once (default: one per partition).
        """
        limit = self._limit(topic, group, concurrency)

        async def dispatch(events: list[Event]) -> None:
            await self._handle(events[0], group, handler, limit)

        return await self._subscribe(topic, group, dispatch, 1, self._assigned(assigned))

    async def subscribe_batches(
        self,
        topic: str,
        group: str,
        handler: BatchHandler,
        max_batch: int = 256,
        concurrency: int | None = None,
        assigned: Collection[int] | None = None,
    ) -> Subscription:
        """Like :meth:`subscribe`, but ``handler`` gets the events of one partition that
        are at hand (1 to ``max_batch``, consecutive, in order) in one call, and they
        are acknowledged together when it returns: one call per fetch, not per event,
        for a consumer whose work has a fixed cost per call (a network round trip).

        A batch that raises is retried whole, in place; when its attempts run out,
        its events are handled one per call, so only the event that keeps failing
        is dead-lettered.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        limit = self._limit(topic, group, concurrency)

        async def dispatch(events: list[Event]) -> None:
            await self._handle_batch(events, group, handler, limit)

        return await self._subscribe(topic, group, dispatch, max_batch, self._assigned(assigned))

    @abstractmethod
    async def _subscribe(
        self,
        topic: str,
        group: str,
        dispatch: _Dispatch,
        max_batch: int,
        partitions: tuple[int, ...],
    ) -> Subscription:
        """Start consuming: ``dispatch`` gets 1 to ``max_batch`` consecutive events of
        one partition and returns when they may be acknowledged."""

    def _limit(self, topic: str, group: str, concurrency: int | None) -> asyncio.Semaphore | None:
        self._check_open()
        _check_name("topic", topic)
        _check_name("group", group)
        return asyncio.Semaphore(concurrency) if concurrency else None

    async def close(self) -> None:
        """Close every subscription, then the pipeline; publishing afterwards fails."""
        self._closed = True
        for sub in list(self._subscriptions):
            await sub.close()

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise PipelineClosed("the pipeline is closed")

    def _assigned(self, assigned: Collection[int] | None) -> tuple[int, ...]:
        if assigned is None:
            return tuple(range(self.partitions))
        parts = tuple(sorted(set(assigned)))
        if not parts or parts[0] < 0 or parts[-1] >= self.partitions:
            raise ValueError(f"assigned partitions must be within 0..{self.partitions - 1}")
        return parts

    async def _handle(
        self,
        event: Event,
        group: str,
        handler: Handler,
        limit: asyncio.Semaphore | None,
        first_attempt: int = 1,
    ) -> None:
        """Run ``handler`` until it returns or its attempts run out (then dead-letter).

        Returns when the event may be acknowledged. Retrying in place, not through
        a redelivery behind later events, is what keeps the key's order.
        """
        if event.delivery > self.max_deliver:
            await self._dead_letter(event, group, "delivered without an acknowledgement", 0)
            return
        delay = self.retry_delay
        last = first_attempt + self.max_attempts - 1
        for attempt in range(first_attempt, last + 1):
            try:
                if limit is None:
                    await handler(replace(event, attempt=attempt))
                else:
                    async with limit:
                        await handler(replace(event, attempt=attempt))
                return
            except Exception as exc:
                if attempt == last:
                    log.error(
                        "%s/%s: event %s failed %d times",
                        event.topic,
                        group,
                        event.id,
                        attempt,
                        exc_info=True,
                    )
                    await self._dead_letter(event, group, f"{type(exc).__name__}: {exc}", attempt)
                    return
                log.warning(
                    "%s/%s: event %s failed (attempt %d): %r",
                    event.topic,
                    group,
                    event.id,
                    attempt,
                    exc,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _handle_batch(
        self,
        events: list[Event],
        group: str,
        handler: BatchHandler,
        limit: asyncio.Semaphore | None,
    ) -> None:
        """:meth:`_handle` for a batch: retried whole, then one event at a time."""
        live = []
        for event in events:
            if event.delivery > self.max_deliver:
                await self._dead_letter(event, group, "delivered without an acknowledgement", 0)
            else:
                live.append(event)

        async def one(event: Event) -> None:
            await handler([event])

        if len(live) == 1:
            await self._handle(live[0], group, one, limit)
        if len(live) <= 1:
            return
        delay = self.retry_delay
        for attempt in range(1, self.max_attempts + 1):
            batch = live if attempt == 1 else [replace(e, attempt=attempt) for e in live]
            try:
                if limit is None:
                    await handler(batch)
                else:
                    async with limit:
                        await handler(batch)
                return
            except Exception as exc:
                log.warning(
                    "%s/%s: batch of %d events from %s failed (attempt %d): %r",
                    live[0].topic,
                    group,
                    len(live),
                    live[0].id,
                    attempt,
                    exc,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)
        # One event at a time: the ones that work go through, the one that does not
        # is dead-lettered alone.
        for event in live:
            await self._handle(event, group, one, limit, first_attempt=self.max_attempts + 1)

    async def _dead_letter(self, event: Event, group: str, error: str, attempts: int) -> None:
        """Record ``event`` on the dead-letter topic; retried until stored (or cancelled),
        since acknowledging it unrecorded would lose it."""
        headers = dict(event.headers)
        headers.update(
            {
                DEAD_GROUP: group,
                # One header line: no CR/LF, and bounded.
                DEAD_ERROR: " ".join(error.split())[:500] or "error",
                DEAD_ATTEMPTS: str(attempts),
                DEAD_ID: event.id,
            }
        )
        topic = dead_letter_topic(event.topic)
        log.error(
            "%s/%s: event %s (key %d, delivery %d) dead-lettered to %s: %s",
            event.topic,
            group,
            event.id,
            event.key,
            event.delivery,
            topic,
            error,
        )
        delay = self.retry_delay
        while True:
            try:
                await self.publish(topic, event.key, event.payload, f"{event.id}.{group}", headers)
                return
            except PipelineClosed:
                raise
            except Exception:
                log.exception("%s/%s: dead letter %s not stored yet", event.topic, group, event.id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)


class IdempotentHandler:
    """Wraps a handler so an event id it already applied is not applied again.

    Remembers the last ``capacity`` applied ids, in memory: that covers the
    redeliveries of one process's lifetime (a lost acknowledgement, a retried
    publish). Across restarts the handler's own transaction must make the event's
    effect idempotent (a processed-ids row, or state such as pts it checks).
    A second delivery of an id that is running right now waits for the first.
    """

    def __init__(self, handler: Handler, capacity: int = 100_000) -> None:
        self._handler = handler
        self._capacity = capacity
        self._done: OrderedDict[str, None] = OrderedDict()
        self._running: dict[str, asyncio.Future[bool]] = {}
        self.applied = 0
        self.skipped = 0

    def seen(self, event_id: str) -> bool:
        return event_id in self._done

    async def __call__(self, event: Event) -> None:
        while True:
            if event.id in self._done:
                self._done.move_to_end(event.id)
                self.skipped += 1
                return
            running = self._running.get(event.id)
            if running is None:
                break
            await asyncio.shield(running)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running[event.id] = fut
        ok = False
        try:
            await self._handler(event)
            ok = True
            self.applied += 1
            self._done[event.id] = None
            if len(self._done) > self._capacity:
                self._done.popitem(last=False)
        finally:
            del self._running[event.id]
            fut.set_result(ok)


# --- in-process binding ---------------------------------------------------------------


class _Log:
    """One partition of one topic in memory: events and every group's position."""

    __slots__ = ("base", "cursors", "deliveries", "events", "owners", "wake")

    def __init__(self) -> None:
        self.base = 0  # offset of events[0]
        self.events: deque[Event] = deque()
        self.cursors: dict[str, int] = {}  # group -> next offset to handle
        self.deliveries: dict[str, int] = {}  # group -> deliveries of the event at its cursor
        self.owners: set[str] = set()  # groups with a live consumer
        self.wake = asyncio.Event()

    def append(self, event: Event, limit: int) -> None:
        self.events.append(event)
        if len(self.events) > limit:
            self.events.popleft()
            self.base += 1
            if self.base % 10_000 == 1:
                log.warning(
                    "%s: more than %d events unconsumed: dropping the oldest", event.topic, limit
                )
        wake, self.wake = self.wake, asyncio.Event()
        wake.set()

    def trim(self) -> None:
        low = min(self.cursors.values())
        while self.base < low and self.events:
            self.events.popleft()
            self.base += 1


class _MemorySubscription(Subscription):
    def __init__(
        self,
        pipeline: MemoryPipeline,
        topic: str,
        group: str,
        partitions: tuple[int, ...],
        dispatch: _Dispatch,
        max_batch: int,
    ) -> None:
        self.topic, self.group, self.partitions = topic, group, partitions
        self._pipeline = pipeline
        self._max_batch = max_batch
        self._logs = [pipeline._log(topic, p) for p in partitions]
        for plog in self._logs:
            if group in plog.owners:
                raise PipelineError(f"{topic}/{group}: a partition already has a live subscriber")
        for plog in self._logs:
            plog.owners.add(group)
            plog.cursors.setdefault(group, plog.base)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._consume(plog, dispatch), name=f"pipeline-{topic}-{group}-{p}")
            for p, plog in zip(partitions, self._logs, strict=True)
        ]

    async def _consume(self, plog: _Log, dispatch: _Dispatch) -> None:
        group = self.group
        while True:
            wake = plog.wake
            cursor = max(plog.cursors[group], plog.base)
            first = cursor - plog.base
            count = min(len(plog.events) - first, self._max_batch)
            if count <= 0:
                await wake.wait()
                continue
            # Counted for the batch at the cursor: an event of a batch handed out
            # before counts as redelivered even if that batch was shorter.
            delivery = plog.deliveries.get(group, 0) + 1
            plog.deliveries[group] = delivery
            batch = [
                replace(plog.events[first + n], delivery=delivery, seq=cursor + n + 1)
                for n in range(count)
            ]
            await dispatch(batch)
            # Acknowledge: the group's position moves past the events.
            plog.deliveries.pop(group, None)
            plog.cursors[group] = cursor + count
            plog.trim()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for plog in self._logs:
            plog.owners.discard(self.group)
        self._pipeline._subscriptions.discard(self)


class MemoryPipeline(Pipeline):
    """The embedded default: the same contract within one process, on asyncio alone.

    Nothing survives the process: "stored" means held in memory. Events stay until
    every group that ever subscribed to the topic handled them (at most
    ``max_retained`` per partition; older ones are dropped with a warning); a group
    that subscribes later starts at the oldest event still held.
    """

    def __init__(
        self,
        partitions: int = 16,
        *,
        duplicate_window: float = 120.0,
        max_retained: int = 1_000_000,
        **retry: Any,
    ) -> None:
        super().__init__(partitions, **retry)
        self.duplicate_window = duplicate_window
        self.max_retained = max_retained
        self._logs: dict[tuple[str, int], _Log] = {}
        self._recent: OrderedDict[tuple[str, str], float] = OrderedDict()

    def _log(self, topic: str, partition: int) -> _Log:
        plog = self._logs.get((topic, partition))
        if plog is None:
            plog = self._logs[(topic, partition)] = _Log()
        return plog

    async def publish(
        self,
        topic: str,
        key: int,
        payload: bytes,
        event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        self._check_open()
        _check_name("topic", topic)
        event_id = event_id or new_event_id()
        now = time.monotonic()
        recent = self._recent
        while recent:
            first = next(iter(recent.values()))
            if now - first < self.duplicate_window:
                break
            recent.popitem(last=False)
        if (topic, event_id) in recent:
            return event_id
        recent[(topic, event_id)] = now
        event = Event(topic, key, event_id, payload, MappingProxyType(dict(headers or {})))
        self._log(topic, self.partition(key)).append(event, self.max_retained)
        await asyncio.sleep(0)  # a loop turn: a tight publisher cannot starve the consumers
        return event_id

    async def _subscribe(
        self,
        topic: str,
        group: str,
        dispatch: _Dispatch,
        max_batch: int,
        partitions: tuple[int, ...],
    ) -> Subscription:
        sub = _MemorySubscription(self, topic, group, partitions, dispatch, max_batch)
        self._subscriptions.add(sub)
        return sub


# --- NATS JetStream binding -----------------------------------------------------------

KEY_HEADER = "Tg-Key"
_MSG_ID = "Nats-Msg-Id"
_PARTITIONS_NOTE = re.compile(r"partitions=(\d+)")


def _header(headers: Mapping[Any, str], name: str) -> str:
    # nats-py keys status headers with a str Enum, which hashes unlike the str.
    for key, value in headers.items():
        if key == name:
            return value
    return ""


class _JetStreamPartition:
    """One durable pull consumer: pull requests stream events in, handled in order,
    one at a time or (subscribe_batches) as many as have arrived.

    One pull request (up to ``batch`` events) is outstanding at a time; the server
    sends each event as soon as it is stored, so an idle partition answers at once.
    """

    def __init__(self, sub: _JetStreamSubscription, partition: int) -> None:
        self.sub = sub
        self.partition = partition
        self.consumer = f"{sub.group}_{partition}"
        self.queue: deque[Any] = deque()  # nats Msg (events and status messages)
        self.wake = asyncio.Event()
        self.owed = 0  # events the outstanding pull request may still bring
        self.deadline = 0.0  # when it expires (monotonic)
        self.current: list[Any] = []  # the Msgs being handled
        self.inbox: Any = None  # nats Subscription
        # Events a previous subscriber of this consumer left unacknowledged when we
        # started (it crashed or closed while holding them).
        self.inherited = 0

    async def open(self) -> None:
        nc = self.sub.pipeline._nc
        assert nc is not None
        self.inbox = await nc.subscribe(nc.new_inbox(), cb=self._on_msg)

    async def _on_msg(self, msg: Any) -> None:
        self.queue.append(msg)
        self.wake.set()

    def reset(self) -> None:
        """After a reconnect: the outstanding pull request may be gone; ask again."""
        self.owed = 0
        self.wake.set()

    async def _request(self) -> None:
        pipeline = self.sub.pipeline
        now = time.monotonic()
        if (self.owed > 0 and now < self.deadline) or len(self.queue) >= pipeline.batch // 2 + 1:
            return
        body = b'{"batch":%d,"expires":%d}' % (pipeline.batch, int(pipeline.pull_expires * 1e9))
        assert pipeline._nc is not None
        await pipeline._nc.publish(
            self.sub.next_subject(self.consumer), body, reply=self.inbox.subject
        )
        self.owed = pipeline.batch
        self.deadline = now + pipeline.pull_expires + 1.0

    async def run(self) -> None:
        if self.inherited:
            # The server hands events a previous subscriber held back to the next
            # pull only after their ack_wait, but newer events at once: asking now
            # would handle a key's later events before its earlier ones.
            wait = self.sub.pipeline.ack_wait * 1.1 + 0.2
            log.info(
                "%s/%s: %d events left unacknowledged by a previous subscriber; "
                "waiting %.1f s for their redelivery",
                self.sub.topic,
                self.consumer,
                self.inherited,
                wait,
            )
            await asyncio.sleep(wait)
        while not self.sub.closed:
            try:
                await self._run()
            except Exception:
                # Whatever we held comes back after ack_wait, ahead of newer events,
                # but only if we ask for nothing before then.
                log.exception(
                    "%s/%s: consumer failed; resuming after ack_wait", self.sub.topic, self.consumer
                )
                self.queue.clear()
                self.current = []
                self.owed = 0
                await asyncio.sleep(self.sub.pipeline.ack_wait + 0.5)

    async def _run(self) -> None:
        while True:
            if not self.queue:
                try:
                    await self._request()
                except Exception as exc:  # closed or reconnecting: try again shortly
                    log.warning("%s: pull request failed: %r", self.consumer, exc)
                    await asyncio.sleep(0.5)
                    continue
                self.wake.clear()
                timeout = max(0.05, self.deadline - time.monotonic())
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancellation that lands as the wait completes, and close() would hang.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self.wake.wait()
                continue
            msg = self.queue.popleft()
            if await self._status(msg):
                continue
            batch = [msg]
            self.owed -= 1
            while len(batch) < self.sub.max_batch and self.queue:
                msg = self.queue.popleft()
                if not await self._status(msg):
                    self.owed -= 1
                    batch.append(msg)
            with contextlib.suppress(Exception):
                await self._request()  # top up while this batch is handled
            self.current = batch
            await self.sub.dispatch([self._event(m) for m in batch])
            self.current = []
            self.sub.ack(batch)

    async def _status(self, msg: Any) -> bool:
        """Handle a status message of the pull request; False for an event."""
        headers = msg.headers or {}
        status = headers.get("Status")
        if not status:
            return False
        # 408: the request expired; 409: the server ended it (consumer deleted,
        # leadership change, too many waiting); either way ask again.
        if status != "100":
            self.owed = 0
        if status == "409" and "deleted" in _header(headers, "Description").lower():
            with contextlib.suppress(Exception):
                await self.sub.ensure_consumer(self.partition)
        return True

    def _event(self, msg: Any) -> Event:
        headers = msg.headers or {}
        meta = msg.metadata
        return Event(
            self.sub.topic,
            int(headers.get(KEY_HEADER, "0")),
            headers.get(_MSG_ID) or f"seq-{meta.sequence.stream}",
            msg.data,
            MappingProxyType(
                {k: v for k, v in headers.items() if k != KEY_HEADER and not k.startswith("Nats-")}
            ),
            delivery=meta.num_delivered,
            seq=meta.sequence.stream,
        )

    def held(self) -> list[Any]:
        """Delivered, unacknowledged events this consumer holds."""
        held = [m for m in self.queue if not (m.headers and m.headers.get("Status"))]
        return self.current + held


class _JetStreamSubscription(Subscription):
    def __init__(
        self,
        pipeline: JetStreamPipeline,
        topic: str,
        group: str,
        partitions: tuple[int, ...],
        dispatch: _Dispatch,
        max_batch: int,
    ) -> None:
        self.topic, self.group, self.partitions = topic, group, partitions
        self.pipeline = pipeline
        self.dispatch = dispatch
        self.max_batch = max_batch
        self.stream = pipeline.stream_name(topic)
        self._parts = [_JetStreamPartition(self, p) for p in partitions]
        self._tasks: list[asyncio.Task[None]] = []
        self._acks: set[asyncio.Task[None]] = set()
        self.closed = False

    def next_subject(self, consumer: str) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{consumer}"

    async def ensure_consumer(self, partition: int) -> Any:
        """Create the durable consumer if it is not there; returns its ConsumerInfo."""
        from nats.js import api

        p = self.pipeline
        assert p._js is not None
        config = api.ConsumerConfig(
            durable_name=f"{self.group}_{partition}",
            filter_subject=p.subject(self.topic, partition),
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=p.ack_wait,
            # A backstop past our own bound (Pipeline.max_deliver dead-letters first):
            # an event the server stops delivering is skipped without a trace.
            max_deliver=p.max_deliver + 3,
            max_ack_pending=p.batch * 4,
        )
        return await p._js.add_consumer(self.stream, config)

    async def start(self) -> None:
        for part in self._parts:
            info = await self.ensure_consumer(part.partition)
            part.inherited = int(getattr(info, "num_ack_pending", 0) or 0)
            await part.open()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                part.run(), name=f"pipeline-{self.topic}-{self.group}-{part.partition}"
            )
            for part in self._parts
        ]
        self._tasks.append(
            loop.create_task(self._keepalive(), name=f"pipeline-{self.topic}-keepalive")
        )

    def reset(self) -> None:
        for part in self._parts:
            part.reset()

    def ack(self, msgs: list[Any]) -> None:
        """Acknowledge and have the server confirm it, without holding up the next
        event: :meth:`close` waits for every confirmation still travelling."""
        task = asyncio.get_running_loop().create_task(self._confirm(msgs))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _confirm(self, msgs: list[Any]) -> None:
        try:
            # A batch: the server handles one connection's acks in order, so the
            # last one's confirmation covers the others.
            for msg in msgs[:-1]:
                await msg.ack()
            await msgs[-1].ack_sync(timeout=self.pipeline.ack_timeout)
        except Exception as exc:
            # Not lost: the server redelivers it after ack_wait, and the group's
            # idempotent handler skips it.
            log.warning(
                "%s/%s: ack not confirmed (%r); will be redelivered", self.topic, self.group, exc
            )

    async def _keepalive(self) -> None:
        """Tell the server the events we hold are being worked on, so a slow handler
        does not get them (and the ones queued behind it) redelivered meanwhile."""
        while True:
            await asyncio.sleep(self.pipeline.ack_wait / 3)
            for part in self._parts:
                for msg in part.held():
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._acks:
            await asyncio.wait(list(self._acks), timeout=self.pipeline.ack_timeout + 1)
        # What we hold stays unacknowledged: the server gives it to the group's next
        # subscriber after ack_wait, in order. (Not nak'ed: our pull request may
        # still be open on the server, which would send it straight back to this
        # dead inbox; on nats-server 2.9.10 that also lost one event's delivery
        # count and delivered another twice.)
        for part in self._parts:
            if part.inbox is not None:
                with contextlib.suppress(Exception):
                    await part.inbox.unsubscribe()
        nc = self.pipeline._nc
        if nc is not None and nc.is_connected:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
        self.pipeline._subscriptions.discard(self)


class JetStreamPipeline(Pipeline):
    """The pipeline on NATS JetStream (server 2.9+).

    One stream per topic, ``<prefix>_<topic>``, file storage, subjects
    ``<prefix>.<topic>.<partition>``; events are kept ``max_age`` seconds (limits
    retention: every group reads every event, and a group that subscribes later
    starts at the oldest one kept). A group is one durable pull consumer per
    partition, ``<group>_<partition>``, explicit acks. The publish sets
    ``Nats-Msg-Id`` to the event id, so the stream's duplicate window makes a
    retried publish a no-op. ``partitions`` is fixed for a stream's life (it is
    written in the stream's description and checked).

    The client reconnects forever; publishes in flight during a reconnect are
    retried, with the same id, until ``publish_timeout``.
    """

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        stream_prefix: str = "teamgram",
        partitions: int = 16,
        *,
        ack_wait: float = 30.0,
        max_age: float = 7 * 86400.0,
        duplicate_window: float = 120.0,
        batch: int = 256,
        pull_expires: float = 10.0,
        publish_timeout: float = 10.0,
        ack_timeout: float = 2.0,
        connect_timeout: float = 5.0,
        name: str = "teamgram",
        **retry: Any,
    ) -> None:
        super().__init__(partitions, **retry)
        _check_name("stream prefix", stream_prefix)
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.stream_prefix = stream_prefix
        self.ack_wait = ack_wait
        self.max_age = max_age
        self.duplicate_window = duplicate_window
        self.batch = max(1, batch)
        self.pull_expires = pull_expires
        self.publish_timeout = publish_timeout
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.name = name
        self._nc: Any = None  # nats.aio.client.Client
        self._js: Any = None  # nats.js.JetStreamContext
        self._ready: set[str] = set()  # topics whose stream is known to exist
        self._lock = asyncio.Lock()

    def stream_name(self, topic: str) -> str:
        return f"{self.stream_prefix}_{topic}"

    def subject(self, topic: str, partition: int) -> str:
        return f"{self.stream_prefix}.{topic}.{partition}"

    async def start(self) -> None:
        """Connect (done by the first publish or subscribe otherwise)."""
        self._check_open()
        if self._nc is not None:
            return
        async with self._lock:
            if self._nc is None:
                await self._connect()

    async def _connect(self) -> None:
        from nats.aio.client import Client

        nc = Client()
        last_error = ""

        async def disconnected() -> None:
            if not self._closed:
                log.warning("nats: disconnected")

        async def reconnected() -> None:
            nonlocal last_error
            last_error = ""
            log.warning("nats: reconnected to %s", nc.connected_url)
            for sub in list(self._subscriptions):
                if isinstance(sub, _JetStreamSubscription):
                    sub.reset()

        async def error(exc: Exception) -> None:
            nonlocal last_error
            if repr(exc) != last_error:  # not once per reconnect attempt
                last_error = repr(exc)
                log.warning("nats: %s", last_error)

        try:
            # Reconnect forever once connected; the first connection is bounded here
            # (nats-py would otherwise retry it forever as well).
            options: dict[str, Any] = {
                "name": self.name,
                "connect_timeout": min(2.0, self.connect_timeout),
                "max_reconnect_attempts": -1,
                "reconnect_time_wait": 0.5,
                "disconnected_cb": disconnected,
                "reconnected_cb": reconnected,
                "error_cb": error,
            }
            await asyncio.wait_for(nc.connect(self.servers, **options), self.connect_timeout)
        except (Exception, asyncio.CancelledError) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise PipelineError(f"nats {', '.join(self.servers)}: cannot connect: {exc!r}") from exc
        self._nc = nc
        self._js = nc.jetstream(timeout=5.0)

    async def _ensure_stream(self, topic: str) -> None:
        if topic in self._ready:
            return
        from nats.js import api
        from nats.js.errors import NotFoundError

        async with self._lock:
            if topic in self._ready:
                return
            name = self.stream_name(topic)
            config = api.StreamConfig(
                name=name,
                description=f"teamgram events: topic={topic} partitions={self.partitions}",
                subjects=[f"{self.stream_prefix}.{topic}.*"],
                storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS,
                discard=api.DiscardPolicy.OLD,
                max_age=self.max_age,
                duplicate_window=self.duplicate_window,
            )
            try:
                info = await self._js.stream_info(name)
            except NotFoundError:
                await self._js.add_stream(config)
            else:
                have = _PARTITIONS_NOTE.search(info.config.description or "")
                if have and int(have.group(1)) != self.partitions:
                    raise PipelineError(
                        f"stream {name} has {have.group(1)} partitions, not {self.partitions}: "
                        "changing it would reorder keys; use a new stream prefix"
                    )
                if (
                    info.config.subjects != config.subjects
                    or info.config.max_age != config.max_age
                    or info.config.duplicate_window != config.duplicate_window
                    or info.config.description != config.description
                ):
                    await self._js.update_stream(config)
            self._ready.add(topic)

    async def publish(
        self,
        topic: str,
        key: int,
        payload: bytes,
        event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        import nats.errors
        from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

        _check_name("topic", topic)
        await self.start()
        await self._ensure_stream(topic)
        event_id = event_id or new_event_id()
        subject = self.subject(topic, self.partition(key))
        deadline = time.monotonic() + self.publish_timeout
        delay = 0.05
        while True:
            self._check_open()
            hdrs = {**(headers or {}), KEY_HEADER: str(key), _MSG_ID: event_id}
            timeout = max(0.1, min(2.0, deadline - time.monotonic()))
            try:
                await self._js.publish(subject, payload, timeout=timeout, headers=hdrs)
                return event_id
            except NoStreamResponseError as exc:
                # The stream is gone (deleted under us) or JetStream is restarting.
                self._ready.discard(topic)
                error: Exception = exc
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.OutboundBufferLimitError,
                ServiceUnavailableError,
            ) as exc:
                error = exc
            if time.monotonic() + delay > deadline:
                raise PipelineError(f"publish to {subject} not acknowledged: {error!r}") from error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            with contextlib.suppress(Exception):
                await self._ensure_stream(topic)

    async def _subscribe(
        self,
        topic: str,
        group: str,
        dispatch: _Dispatch,
        max_batch: int,
        partitions: tuple[int, ...],
    ) -> Subscription:
        await self.start()
        await self._ensure_stream(topic)
        sub = _JetStreamSubscription(self, topic, group, partitions, dispatch, max_batch)
        self._subscriptions.add(sub)
        try:
            await sub.start()
        except BaseException:
            await sub.close()
            raise
        return sub

    async def delete_topic(self, topic: str) -> None:
        """Delete the topic's stream, its events and its groups' positions (tests, tools)."""
        from nats.js.errors import NotFoundError

        await self.start()
        for sub in list(self._subscriptions):
            if sub.topic == topic:
                await sub.close()
        self._ready.discard(topic)
        with contextlib.suppress(NotFoundError):
            await self._js.delete_stream(self.stream_name(topic))

    async def close(self) -> None:
        await super().close()
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            await nc.close()
