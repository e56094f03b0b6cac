"""Writers sharing one database (#9): messages/s with one writer process and with two.

    .venv/bin/python bench/shared_writers.py [--engines mariadb,postgresql]
        [--messages 6000] [--in-flight 64] [--workloads hot,spread,wide] [--repeat 3]

Each run is a fresh database and N private messages stored through ``MsgService``
(with its GroupCommit, SyncService, dialogs: what ``messages.sendMessage`` costs
the storage side, without the protocol and the pushes to connections), sent with
``--in-flight`` requests outstanding per process. A row is the median of
``--repeat`` runs (by msg/s: a small shared machine is noisy). Columns:

  mode       "cache": one process, counters cached in memory (the embedded
             default's mode, here on the server engine); "shared": counters read
             under row locks (``shared=True``), in 1 or 2 processes at once
  procs      writer processes (each its own engine, GroupCommit and services)
  msg/s      messages stored / wall time from "go" to the last commit
  batches    transactions committed; ops/batch: sends per transaction
  retries    batches run again after a deadlock or lock timeout
  p50/p99 ms one send, request to answer

Workloads: "hot": 4 users all writing to each other (every batch of both
processes wants the same rows: they take turns); "spread": 200 users in random
pairs (a batch of 64 sends touches ~100 of them: the two processes' batches
still overlap); "wide": 20,000 users in random pairs (batches rarely share a
row: the processes write side by side; most users' first rows are created
during the run). The database server runs on the same machine and shares its
cores with the writers.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import secrets
import sys
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import percentile, table

ADMIN_URLS = {
    "mariadb": os.environ.get("TEAMGRAM_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/"),
    "postgresql": os.environ.get(
        "TEAMGRAM_TEST_POSTGRESQL_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    ),
}
WORKLOADS = {"hot": 4, "spread": 200, "wide": 20_000}  # users
WARM_USERS = 200
FIRST_USER = 100_000_000


async def _admin(admin_url: str, statement: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from teamgram.infra.database import normalize_url

    engine = create_async_engine(
        normalize_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


async def _create(engine: str) -> str:
    from teamgram.infra.database import normalize_url, open_database

    name = f"tg_bench_{secrets.token_hex(6)}"
    if engine == "mariadb":
        sql = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    else:
        sql = f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"
    await _admin(ADMIN_URLS[engine], sql)
    url = normalize_url(ADMIN_URLS[engine]).set(database=name).render_as_string(False)
    migrated = await open_database(url)  # once, before the writers start
    await migrated.dispose()
    return url


async def _drop(engine: str, url: str) -> None:
    name = url.rsplit("/", 1)[1].split("?")[0]
    if engine == "mariadb":
        await _admin(ADMIN_URLS[engine], f"DROP DATABASE IF EXISTS `{name}`")
    else:
        await _admin(ADMIN_URLS[engine], f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _worker(
    url: str,
    shared: bool,
    users: int,
    count: int,
    in_flight: int,
    seed: int,
    barrier: Barrier,
    out: Any,
) -> None:
    out.put(asyncio.run(_work(url, shared, users, count, in_flight, seed, barrier)))


async def _work(
    url: str, shared: bool, users: int, count: int, in_flight: int, seed: int, barrier: Barrier
) -> dict[str, Any]:
    from teamgram.infra.database import make_engine
    from teamgram.infra.group_commit import GroupCommit
    from teamgram.messenger.msg.service import MsgService, NewMessage
    from teamgram.messenger.sync.service import SyncService
    from teamgram.service.biz.dialog import DialogService
    from teamgram.service.biz.peers import PEER_USER

    engine = make_engine(url)
    writer = GroupCommit(engine, shared=shared)
    sync = SyncService(engine, lambda _u, _x, _k: None, shared=shared)
    msg = MsgService(engine, writer, sync, DialogService(engine), shared=shared)
    writer.start()
    rng = random.Random(seed)
    ids = [FIRST_USER + i for i in range(users)]
    pairs = [rng.sample(ids, 2) for _ in range(count)]
    latencies: list[float] = []

    async def send(pair: list[int], text: str) -> None:
        t0 = time.perf_counter()
        await msg.send(pair[0], (PEER_USER, pair[1]), [NewMessage(text=text)], {}, None)
        latencies.append(time.perf_counter() - t0)

    async def run(todo: list[list[int]]) -> None:
        it = iter(todo)

        async def lane() -> None:
            for pair in it:
                await send(pair, "hello there, a message of ordinary length")

        await asyncio.gather(*(lane() for _ in range(in_flight)))

    # Warm (not timed): connections open; with few users, every user's rows exist.
    await run([[ids[i], ids[(i + 1) % users]] for i in range(0, min(users, WARM_USERS), 2)])
    latencies.clear()
    b0, o0, r0 = writer.batches, writer.operations, writer.retries
    await asyncio.to_thread(barrier.wait)
    start = time.time()
    await run(pairs)
    end = time.time()
    result = {
        "start": start,
        "end": end,
        "count": count,
        "batches": writer.batches - b0,
        "ops": writer.operations - o0,
        "retries": writer.retries - r0,
        "latencies": latencies,
    }
    await writer.stop()
    await engine.dispose()
    return result


def _scenario(
    engine: str, shared: bool, procs: int, users: int, total: int, in_flight: int
) -> list[object]:
    url = asyncio.run(_create(engine))
    try:
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(procs)
        out = ctx.Queue()
        workers = [
            ctx.Process(
                target=_worker,
                args=(url, shared, users, total // procs, in_flight, 7 + p, barrier, out),
            )
            for p in range(procs)
        ]
        for w in workers:
            w.start()
        results = [out.get(timeout=600) for _ in workers]
        for w in workers:
            w.join(30)
    finally:
        asyncio.run(_drop(engine, url))
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    count = sum(r["count"] for r in results)
    batches = sum(r["batches"] for r in results)
    lat = [x * 1000 for r in results for x in r["latencies"]]
    return [
        engine,
        "shared" if shared else "cache",
        procs,
        count,
        count / wall,
        batches,
        sum(r["ops"] for r in results) / max(1, batches),
        sum(r["retries"] for r in results),
        percentile(lat, 50),
        percentile(lat, 99),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--engines", default="mariadb")
    ap.add_argument("--messages", type=int, default=6000, help="per row, over all processes")
    ap.add_argument("--in-flight", type=int, default=64, help="outstanding sends per process")
    ap.add_argument("--workloads", default="hot,spread,wide")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    args = ap.parse_args()
    headers = [
        "engine",
        "mode",
        "procs",
        "messages",
        "msg/s",
        "batches",
        "ops/batch",
        "retries",
        "p50 ms",
        "p99 ms",
    ]
    for workload in args.workloads.split(","):
        users = WORKLOADS[workload]
        rows = []
        for engine in args.engines.split(","):
            for shared, procs in ((False, 1), (True, 1), (True, 2)):
                runs = []
                for _ in range(args.repeat):
                    runs.append(
                        _scenario(engine, shared, procs, users, args.messages, args.in_flight)
                    )
                    print(f"  {workload}: {runs[-1][:5]}", file=sys.stderr, flush=True)
                runs.sort(key=lambda r: float(r[4]))  # type: ignore[arg-type]
                rows.append(runs[len(runs) // 2])
        print(f"\n{workload}: {users} users, {args.messages} messages per row\n")
        print(table(headers, rows))
    print(f"\n{os.cpu_count()} CPUs; the database server shares them.")


if __name__ == "__main__":
    main()
