"""The event pipeline contract, the same on every binding: MemoryPipeline and
JetStreamPipeline on a real NATS server.

Where NATS is (default: this machine's)::

    TEAMGRAM_TEST_NATS_URL  nats://127.0.0.1:4222

Each test's streams carry a random prefix and are deleted afterwards. A NATS
server that cannot be reached (or has no JetStream) fails the JetStream tests
when ``CI=true`` and skips them anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import textwrap
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from teamgram.infra.pipeline import (
    DEAD_ATTEMPTS,
    DEAD_GROUP,
    DEAD_ID,
    Event,
    IdempotentHandler,
    JetStreamPipeline,
    MemoryPipeline,
    Pipeline,
    PipelineClosed,
    PipelineError,
    dead_letter_topic,
)
from tests.integration.conftest import unavailable

pytestmark = pytest.mark.timeout(90)

NATS_URL = os.environ.get("TEAMGRAM_TEST_NATS_URL", "nats://127.0.0.1:4222")
ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0  # seconds any one expectation may take

_nats_problem: dict[str, str] = {}


async def raw_connect() -> Any:
    """A plain nats-py connection that gives up at once when NATS is not there."""
    import nats

    async def quiet(exc: Exception) -> None:
        pass

    # max_reconnect_attempts=0 would mean "forever" to nats-py's server selection.
    return await nats.connect(
        NATS_URL,
        connect_timeout=3,
        allow_reconnect=False,
        max_reconnect_attempts=1,
        error_cb=quiet,
    )


async def nats_problem() -> str:
    """Why NATS JetStream cannot be used here ("" if it can); asked once per run."""
    if "nats" not in _nats_problem:
        try:
            nc = await asyncio.wait_for(raw_connect(), 10)
            try:
                await nc.jetstream().account_info()
            finally:
                await nc.close()
            _nats_problem["nats"] = ""
        except Exception as exc:
            _nats_problem["nats"] = f"{NATS_URL}: {type(exc).__name__}: {exc}"
    return _nats_problem["nats"]


async def delete_streams(prefix: str) -> None:
    nc = await raw_connect()
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            if info.config.name.startswith(prefix + "_"):
                await js.delete_stream(info.config.name)
    finally:
        await nc.close()


async def stored_messages(prefix: str, topic: str) -> int:
    nc = await raw_connect()
    try:
        info = await nc.jetstream().stream_info(f"{prefix}_{topic}")
        return int(info.state.messages)
    finally:
        await nc.close()


class Harness:
    """Makes pipelines of one binding; everything made is closed (and its streams
    deleted) after the test."""

    def __init__(self, binding: str) -> None:
        self.binding = binding
        self.prefix = f"tgtest{secrets.token_hex(4)}"
        self.made: list[Pipeline] = []

    def __call__(self, partitions: int = 4, **kwargs: Any) -> Pipeline:
        kwargs = {"retry_delay": 0.01, "max_retry_delay": 0.05, **kwargs}
        pipeline: Pipeline
        if self.binding == "memory":
            pipeline = MemoryPipeline(partitions, **kwargs)
        else:
            kwargs.setdefault("ack_wait", 1.0)
            pipeline = JetStreamPipeline(
                NATS_URL, stream_prefix=self.prefix, partitions=partitions, **kwargs
            )
        self.made.append(pipeline)
        return pipeline


@contextlib.asynccontextmanager
async def harness(binding: str) -> AsyncIterator[Harness]:
    made = Harness(binding)
    if binding == "jetstream":
        problem = await nats_problem()
        if problem:
            unavailable("nats", problem)
    try:
        yield made
    finally:
        for pipeline in made.made:
            await pipeline.close()
        if binding == "jetstream":
            await delete_streams(made.prefix)


@pytest.fixture(params=["memory", "jetstream"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with harness(request.param) as made:
        yield made


@pytest.fixture
async def jetstream() -> AsyncIterator[Harness]:
    async with harness("jetstream") as made:
        yield made


async def until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def topic() -> str:
    return f"t{secrets.token_hex(3)}"


async def test_order_per_key_and_parallel_keys(make: Harness) -> None:
    pipeline = make(partitions=4)
    t = topic()
    keys, per_key = 24, 40
    seen: dict[int, list[int]] = defaultdict(list)
    active: set[int] = set()
    running = 0
    most_running = 0

    async def handler(event: Event) -> None:
        nonlocal running, most_running
        assert event.key not in active, "two events of one key at once"
        active.add(event.key)
        running += 1
        most_running = max(most_running, running)
        try:
            if int(event.payload) % 7 == 0:
                await asyncio.sleep(0.002)
            await asyncio.sleep(0)
            seen[event.key].append(int(event.payload))
        finally:
            running -= 1
            active.discard(event.key)

    await pipeline.subscribe(t, "inbox", handler)

    async def publish_key(key: int) -> None:
        for n in range(per_key):
            await pipeline.publish(t, key, b"%d" % n)

    await asyncio.gather(*(publish_key(k) for k in range(keys)))
    await until(lambda: sum(map(len, seen.values())) >= keys * per_key, "every event")
    assert {k: v for k, v in seen.items()} == {k: list(range(per_key)) for k in range(keys)}
    assert most_running > 1, "different partitions never ran in parallel"


async def test_every_group_sees_every_event(make: Harness) -> None:
    pipeline = make(partitions=2)
    t = topic()
    got: dict[str, list[bytes]] = defaultdict(list)

    def collect(group: str) -> Callable[[Event], Awaitable[None]]:
        async def handler(event: Event) -> None:
            got[group].append(event.payload)

        return handler

    await pipeline.subscribe(t, "inbox", collect("inbox"))
    await pipeline.subscribe(t, "sync", collect("sync"))
    for n in range(10):
        await pipeline.publish(t, 5, b"%d" % n)
    await until(lambda: len(got["inbox"]) == len(got["sync"]) == 10, "both groups")
    assert got["inbox"] == got["sync"] == [b"%d" % n for n in range(10)]


async def test_idempotent_handler_applies_exactly_once(make: Harness) -> None:
    pipeline = make(partitions=3)
    t = topic()
    applied: Counter[str] = Counter()
    calls: Counter[str] = Counter()

    async def apply(event: Event) -> None:
        applied[event.id] += 1

    idem = IdempotentHandler(apply)
    ids = [f"ev{n}" for n in range(60)]
    flaky = set(ids[::5])

    async def handler(event: Event) -> None:
        calls[event.id] += 1
        await idem(event)
        # Applied, then "the acknowledgement is lost": the event comes again.
        if event.id in flaky and event.attempt == 1:
            raise RuntimeError("lost ack")

    await pipeline.subscribe(t, "sync", handler)
    for n, event_id in enumerate(ids):
        await pipeline.publish(t, n, b"x", event_id=event_id)
    await until(lambda: len(applied) == len(ids) and sum(calls.values()) >= 72, "every event")
    assert set(applied) == set(ids)
    assert all(n == 1 for n in applied.values()), applied
    assert all(calls[i] == 2 for i in flaky) and idem.skipped == len(flaky)
    assert idem.applied == len(ids)


async def test_exception_retries_in_place_then_dead_letters(make: Harness) -> None:
    pipeline = make(partitions=2, max_attempts=3)
    t = topic()
    attempts: dict[bytes, list[int]] = defaultdict(list)
    order: list[bytes] = []

    async def handler(event: Event) -> None:
        attempts[event.payload].append(event.attempt)
        if event.payload == b"twice" and event.attempt <= 2:
            raise RuntimeError("transient")
        if event.payload == b"poison":
            raise ValueError("never works")
        order.append(event.payload)

    dead: list[Event] = []

    async def dead_handler(event: Event) -> None:
        dead.append(event)

    await pipeline.subscribe(t, "inbox", handler)
    await pipeline.subscribe(dead_letter_topic(t), "ops", dead_handler)
    for payload in (b"first", b"twice", b"after", b"poison", b"last"):
        await pipeline.publish(t, 7, payload)
    await until(lambda: order[-1:] == [b"last"] and dead, "the last event and the dead letter")
    # The failing event held its key's later events back until it went through.
    assert order == [b"first", b"twice", b"after", b"last"]
    assert attempts[b"twice"] == [1, 2, 3]
    assert attempts[b"poison"] == [1, 2, 3]
    [letter] = dead
    assert letter.payload == b"poison" and letter.key == 7
    assert letter.headers[DEAD_GROUP] == "inbox"
    assert letter.headers[DEAD_ATTEMPTS] == "3"
    assert letter.headers[DEAD_ID] != letter.id


async def test_unacked_events_go_to_the_next_subscriber(make: Harness) -> None:
    pipeline = make(partitions=1)
    t = topic()
    started = asyncio.Event()
    first_seen: list[Event] = []

    async def stuck(event: Event) -> None:
        first_seen.append(event)
        started.set()
        await asyncio.Event().wait()  # never returns: "crashes" mid-event

    sub = await pipeline.subscribe(t, "sync", stuck)
    ids = [await pipeline.publish(t, 1, b"%d" % n) for n in range(5)]
    await asyncio.wait_for(started.wait(), WAIT)
    await sub.close()
    assert [e.id for e in first_seen] == ids[:1]

    second: list[Event] = []

    async def works(event: Event) -> None:
        second.append(event)

    # Memory: at once; JetStream: after ack_wait (1 s here), as after a crash.
    await pipeline.subscribe(t, "sync", works)
    await until(lambda: len(second) >= 5, "the unacknowledged events")
    assert [e.id for e in second] == ids
    # The first was handed out before; the rest may have been too (prefetched).
    assert second[0].delivery == 2 and second[0].redelivered


async def test_duplicate_publish_is_stored_once(make: Harness) -> None:
    pipeline = make(partitions=2)
    t = topic()
    got: list[str] = []

    async def handler(event: Event) -> None:
        got.append(event.id)

    # The publisher "crashed" after sending and sends the same event again.
    for _ in range(3):
        assert await pipeline.publish(t, 3, b"once", event_id="same-id") == "same-id"
    other = await pipeline.publish(t, 3, b"other")
    await pipeline.publish(t, 3, b"once", event_id="same-id")
    await pipeline.subscribe(t, "inbox", handler)
    await until(lambda: other in got, "the later event")
    await asyncio.sleep(0.2)
    assert got == ["same-id", other]
    if isinstance(pipeline, JetStreamPipeline):
        assert await stored_messages(make.prefix, t) == 2


async def test_close_stops_everything(make: Harness) -> None:
    pipeline = make(partitions=4)
    t = topic()
    got: list[bytes] = []

    async def handler(event: Event) -> None:
        got.append(event.payload)

    await pipeline.subscribe(t, "inbox", handler)
    await pipeline.subscribe(t, "sync", handler)
    await pipeline.publish(t, 1, b"before")
    await until(lambda: len(got) == 2, "both groups")
    await pipeline.close()
    await pipeline.close()  # twice is fine
    with pytest.raises(PipelineClosed):
        await pipeline.publish(t, 1, b"after")
    with pytest.raises(PipelineClosed):
        await pipeline.subscribe(t, "other", handler)
    left = [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("pipeline-") and not task.done()
    ]
    assert not left, left
    if isinstance(pipeline, JetStreamPipeline):
        # Events published elsewhere do not reach the closed pipeline's handlers.
        other = make(partitions=4)
        await other.publish(t, 1, b"elsewhere")
    await asyncio.sleep(0.3)
    assert got == [b"before", b"before"]


async def test_idempotent_handler_waits_for_a_running_duplicate() -> None:
    gate = asyncio.Event()
    runs = 0

    async def slow(event: Event) -> None:
        nonlocal runs
        runs += 1
        await gate.wait()

    idem = IdempotentHandler(slow, capacity=2)
    event = Event("t", 1, "a", b"")
    first = asyncio.ensure_future(idem(event))
    second = asyncio.ensure_future(idem(event))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, second)
    assert runs == 1 and idem.skipped == 1
    for other in ("b", "c"):
        await idem(Event("t", 1, other, b""))
    assert not idem.seen("a") and idem.seen("c")  # the oldest id was forgotten


# --- JetStream only -------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from teamgram.infra.pipeline import JetStreamPipeline

    async def main(url, prefix, topic):
        pipeline = JetStreamPipeline(url, stream_prefix=prefix, partitions=2, ack_wait=1.0)

        async def handler(event):
            print("got", event.id, flush=True)
            await asyncio.Event().wait()

        await pipeline.subscribe(topic, "sync", handler)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_killed_consumer_events_are_redelivered(jetstream: Harness) -> None:
    """A consumer process killed (SIGKILL) mid-event: nothing is acknowledged or
    given back, and after ack_wait the group's next subscriber gets it all."""
    pipeline = jetstream(partitions=2)
    t = topic()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        NATS_URL,
        jetstream.prefix,
        t,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), WAIT)
        assert line.strip() == b"ready", line
        ids = [await pipeline.publish(t, 4, b"%d" % n) for n in range(3)]
        line = await asyncio.wait_for(child.stdout.readline(), WAIT)
        assert line.split() == [b"got", ids[0].encode()], line
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        await child.wait()

    got: list[Event] = []

    async def handler(event: Event) -> None:
        got.append(event)

    killed_at = time.monotonic()
    await pipeline.subscribe(t, "sync", handler)
    await until(lambda: len(got) >= 3, "the killed consumer's events")
    assert [e.id for e in got] == ids
    assert got[0].delivery == 2
    assert time.monotonic() - killed_at < WAIT


async def test_partition_count_is_fixed_per_stream(jetstream: Harness) -> None:
    t = topic()
    await jetstream(partitions=4).publish(t, 1, b"x")
    with pytest.raises(PipelineError, match="partitions"):
        await jetstream(partitions=8).publish(t, 1, b"x")


class CuttableProxy:
    """A loopback TCP proxy in front of NATS whose connections can all be cut."""

    def __init__(self) -> None:
        url = urllib.parse.urlsplit(NATS_URL)
        self.upstream = (url.hostname or "127.0.0.1", url.port or 4222)
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"nats://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self.writers -= {writer, up_writer}

    def cut(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_reconnect_loses_nothing(jetstream: Harness) -> None:
    """The connection drops twice mid-stream: publishes in flight are retried with
    their ids, the consumer asks again, and every event is applied once, in order."""
    proxy = CuttableProxy()
    await proxy.start()
    try:
        pipeline = JetStreamPipeline(
            proxy.url, stream_prefix=jetstream.prefix, partitions=2, ack_wait=1.0
        )
        jetstream.made.append(pipeline)
        t = topic()
        applied: list[str] = []

        async def apply(event: Event) -> None:
            applied.append(event.id)

        await pipeline.subscribe(t, "sync", IdempotentHandler(apply))
        ids = []
        for n in range(60):
            if n in (20, 40):
                proxy.cut()
            ids.append(await pipeline.publish(t, 9, b"%d" % n, event_id=f"r{n}"))
        await until(lambda: len(applied) >= 60, "every event after the reconnects")
        assert applied == ids
    finally:
        await proxy.close()
