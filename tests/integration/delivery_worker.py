"""A sync process for tests/integration/test_delivery.py: a DeliveryWorker whose
deliverer appends one line per push to a file, so a test can kill it (SIGKILL)
and read what it delivered.

    python -m tests.integration.delivery_worker NATS_URL STREAM_PREFIX PARTITIONS
        ACK_WAIT OUT_FILE [--redis URL PREFIX] [--delay SECONDS] [--drop-acks]

Each deliver call appends, in one write, ``<pid> <call> <user_id> <id>`` per push
(``id`` is the pushed updateShortMessage's id). ``--delay`` sleeps after the
write, like a gRPC call waiting for its answer; ``--drop-acks`` never
acknowledges (a worker that dies after delivering and recording, before its
acknowledgements reach the server). Prints ``ready`` once subscribed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from teamgram.infra import pipeline as pipeline_module
from teamgram.infra.pipeline import JetStreamPipeline
from teamgram.interface.session.cluster import Delivery
from teamgram.messenger.sync.delivery import Dedup, DeliveryWorker, MemoryDedup, RedisDedup


class FileDeliverer:
    def __init__(self, path: str, delay: float) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.delay = delay
        self.calls = 0
        self.pid = os.getpid()

    async def deliver(self, items: list[Delivery], skip_instance: str | None = None) -> None:
        self.calls += 1
        lines = "".join(
            f"{self.pid} {self.calls} {d.user_id} {d.updates.id}\n"  # type: ignore[attr-defined]
            for d in items
        )
        os.write(self.fd, lines.encode())
        if self.delay:
            await asyncio.sleep(self.delay)


async def main(args: argparse.Namespace) -> None:
    if args.drop_acks:

        def no_ack(self: Any, msgs: list[Any]) -> None:
            pass

        pipeline_module._JetStreamSubscription.ack = no_ack  # type: ignore[method-assign,assignment]
    pipeline = JetStreamPipeline(
        args.nats_url,
        stream_prefix=args.prefix,
        partitions=args.partitions,
        ack_wait=args.ack_wait,
    )
    dedup: Dedup = RedisDedup(args.redis[0], args.redis[1]) if args.redis else MemoryDedup()
    worker = DeliveryWorker(pipeline, FileDeliverer(args.out, args.delay), dedup=dedup)
    await worker.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("nats_url")
    parser.add_argument("prefix")
    parser.add_argument("partitions", type=int)
    parser.add_argument("ack_wait", type=float)
    parser.add_argument("out")
    parser.add_argument("--redis", nargs=2, metavar=("URL", "PREFIX"))
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--drop-acks", action="store_true")
    asyncio.run(main(parser.parse_args()))
