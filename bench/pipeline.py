"""Event pipeline throughput and latency: MemoryPipeline and JetStreamPipeline.

    .venv/bin/python bench/pipeline.py [--seconds 3] [--nats nats://127.0.0.1:4222]
                                       [--keys 1000] [--inflight 256] [--size 128]

For each binding with 1 and 16 partitions, one group consumes while publishers
keep ``--inflight`` publishes outstanding (random keys out of ``--keys``, payloads
of ``--size`` bytes) for ``--seconds``; then the backlog drains. events/s counts
events handled from the first publish to the last one handled; latency runs from
the publish call to the handler (p50/p99, milliseconds). "idle" is the same
latency with one event at a time. Publisher and consumer share this one process
(and one NATS connection), as msg and its inbox fan-out do in the all-in-one
server. JetStream streams get a random prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import percentile, table

from teamgram.infra.pipeline import Event, JetStreamPipeline, MemoryPipeline, Pipeline

IDLE_EVENTS = 200
DRAIN_TIMEOUT = 60.0


async def measure(
    pipeline: Pipeline, topic: str, seconds: float, keys: int, inflight: int, size: int
) -> list[object]:
    latencies: list[float] = []
    handled = 0
    last_handled = 0.0
    idle: asyncio.Future[None] | None = None

    async def handler(event: Event) -> None:
        nonlocal handled, last_handled
        now = time.perf_counter()
        latencies.append(now - struct.unpack_from("d", event.payload)[0])
        handled += 1
        last_handled = now
        if idle is not None and not idle.done():
            idle.set_result(None)

    await pipeline.subscribe(topic, "bench", handler)
    pad = b"\0" * max(0, size - 8)
    published = 0
    stop = time.perf_counter() + seconds

    async def publisher() -> None:
        nonlocal published
        while time.perf_counter() < stop:
            payload = struct.pack("d", time.perf_counter()) + pad
            await pipeline.publish(topic, random.randrange(keys), payload)
            published += 1

    start = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(inflight)))
    drain_until = time.monotonic() + DRAIN_TIMEOUT
    while handled < published and time.monotonic() < drain_until:
        await asyncio.sleep(0.005)
    rate = handled / (last_handled - start) if handled else float("nan")
    loaded = sorted(latencies)

    latencies.clear()
    loop = asyncio.get_running_loop()
    for n in range(IDLE_EVENTS):
        idle = loop.create_future()
        await pipeline.publish(topic, n, struct.pack("d", time.perf_counter()) + pad)
        await asyncio.wait_for(idle, 10)
    return [
        published,
        rate,
        percentile(loaded, 50) * 1e3,
        percentile(loaded, 99) * 1e3,
        percentile(latencies, 50) * 1e3,
        percentile(latencies, 99) * 1e3,
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--inflight", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--only", default="memory,jetstream")
    args = parser.parse_args()

    rows = []
    for binding in args.only.split(","):
        for partitions in (1, 16):
            prefix = f"tgbench{secrets.token_hex(4)}"
            pipeline: Pipeline
            if binding == "memory":
                pipeline = MemoryPipeline(partitions)
            else:
                pipeline = JetStreamPipeline(args.nats, stream_prefix=prefix, partitions=partitions)
            topic = "events"
            try:
                figures = await measure(
                    pipeline, topic, args.seconds, args.keys, args.inflight, args.size
                )
            finally:
                if isinstance(pipeline, JetStreamPipeline):
                    await pipeline.delete_topic(topic)
                await pipeline.close()
            rows.append([binding, partitions, *figures])
            print(f"{binding} x{partitions}: done", file=sys.stderr)
    print(
        table(
            [
                "binding",
                "partitions",
                "events",
                "events/s",
                "p50 ms",
                "p99 ms",
                "idle p50 ms",
                "idle p99 ms",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
