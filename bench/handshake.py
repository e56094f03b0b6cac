"""Auth-key creation: keys per second and latency at 1, 10 and 100 concurrent clients.

    .venv/bin/python bench/handshake.py [--seconds 5] [--client-procs 1] [--levels 1,10,100]

Starts ``teamgramd serve`` as a separate process on free loopback ports. For each
concurrency level, client processes run that many loops of: connect (TCP,
intermediate framing), full auth-key handshake (RSA_PAD + DH), close. Prints keys
created per second, handshake latency (connect to dh_gen_ok) p50/p99, and the
server's CPU per handshake, CPU share (1.0 = one core) and memory. Clients do
RSA and DH work too; on a small machine they compete with the server for cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import (
    ServerProcess,
    install_sigterm,
    percentile,
    run_clients,
    split,
    table,
    worker_main,
)

CLIENT_TIMEOUT = 20.0


def handshake_worker(conn: Connection, spec: dict[str, Any]) -> None:
    """Client process: ``spec["concurrency"]`` loops of connect + handshake + close."""
    from teamgram.testing import MTClient
    from teamgram.testing.mtclient import load_public_key

    keys = load_public_key(spec["key_pem"])
    host, port = spec["host"], spec["port"]

    async def prepare() -> None:
        # One handshake first: imports and lazy crypto setup stay out of the timing.
        c = await MTClient.connect(host, port, keys, timeout=CLIENT_TIMEOUT)
        await c.close()

    async def loop(deadline: float, lat: list[float], errors: list[str]) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                c = await MTClient.connect(host, port, keys, timeout=CLIENT_TIMEOUT)
            except Exception as exc:  # counted, and the loop goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)
                continue
            lat.append(time.perf_counter() - t0)
            await c.close()

    async def run(_: None) -> dict[str, Any]:
        lat: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        deadline = start + spec["seconds"]
        tasks = [loop(deadline, lat, errors) for _ in range(spec["concurrency"])]
        await asyncio.wait_for(asyncio.gather(*tasks), spec["seconds"] + CLIENT_TIMEOUT + 10)
        return {
            "latencies": lat,
            "errors": errors[:5],
            "error_count": len(errors),
            "wall_s": time.perf_counter() - start,
        }

    async def cleanup(_: None) -> None:
        return None

    worker_main(conn, prepare, run, cleanup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency level")
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--levels", default="1,10,100", help="concurrent clients per row")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    install_sigterm()

    rows = []
    errors: list[str] = []
    with ServerProcess() as srv:
        base = {"host": srv.host, "port": srv.tcp_port, "key_pem": srv.key_pem}
        print(srv.describe(args.client_procs))
        for level in levels:
            procs = min(args.client_procs, level)
            specs = [
                {**base, "concurrency": n, "seconds": args.seconds} for n in split(level, procs)
            ]
            run = run_clients(
                handshake_worker, specs, srv, run_timeout=args.seconds + CLIENT_TIMEOUT + 30
            )
            lat = [x * 1000 for r in run.results for x in r["latencies"]]
            n = len(lat)
            client_cpu = run.client_cpu_s
            for r in run.results:
                errors += r["errors"]
            s = run.server
            rows.append(
                [
                    level,
                    n,
                    n / s.wall_s,
                    percentile(lat, 50),
                    percentile(lat, 99),
                    s.cpu_s * 1000 / n if n else float("nan"),
                    client_cpu * 1000 / n if n else float("nan"),
                    s.cpu_share,
                    run.other_cpu_share,
                    s.rss_kib / 1024,
                    sum(r["error_count"] for r in run.results),
                ]
            )
        hwm = srv.sample().hwm_kib / 1024
        warnings = srv.log_counts.get("WARNING", 0) + srv.log_counts.get("ERROR", 0)

    print()
    print(
        table(
            [
                "clients",
                "keys",
                "keys/s",
                "p50 ms",
                "p99 ms",
                "srv CPU ms/key",
                "cli CPU ms/key",
                "srv CPU share",
                "other CPU",
                "srv RSS MiB",
                "errors",
            ],
            rows,
        )
    )
    print()
    print(f"server peak RSS {hwm:.1f} MiB; server warnings/errors logged: {warnings}")
    print(
        "keys/s = keys created / wall time; CPU share = server CPU seconds per wall second "
        "(1.0 = one core); "
        "other CPU = cores busy with anything but this bench (noise)"
    )
    for e in errors[:5]:
        print(f"client error: {e}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
