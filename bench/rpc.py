"""Service call cost: a direct call vs RemoteService over gRPC on loopback (split mode, #9).

    .venv/bin/python bench/rpc.py [--seconds 2] [--uvloop]

Serves a toy service from a child process (as split mode does) and calls it:

  ping   an int in, the int back (the fixed cost of a call)
  echo   a ~1 KiB TL object (a channel message) in, the same object back

each as a direct call on a local object, as a local call through the wire codec
(``rpc.local(obj, through_wire=True)``: the encoding cost alone) and over gRPC,
with 1 and 32 callers (tasks) at once. Prints latency p50/p99 in microseconds,
calls per second, and the CPU time per call of this process and of the server's
(all threads; the server's is 0 for the local rows). Each row runs ``--seconds``
after a short warm-up; the server's CPU is read from /proc (Linux), in clock ticks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _server import percentile, sample_process, table

from teamgram.infra import rpc
from teamgram.tl import types

WARMUP_S = 0.3


class Bench:
    async def ping(self, x: int) -> int:
        return x

    async def echo(self, message: Any) -> Any:
        return message


def message() -> Any:
    """A channel message of about 1 KiB serialized."""
    return types.Message(
        id=123_456,
        peer_id=types.PeerChannel(channel_id=1_234_567_890),
        date=1_700_000_000,
        message="A fairly ordinary chat message, repeated to make it long. " * 15,
        from_id=types.PeerUser(user_id=777_000),
        entities=[types.MessageEntityBold(offset=0, length=8)],
        views=1234,
        forwards=5,
    )


async def serve(use_uvloop: bool) -> None:
    server = rpc.RpcServer("127.0.0.1", 0)
    server.add("bench", Bench(), ["ping", "echo"])
    port = await server.start()
    print(port, flush=True)
    # Until the parent closes our stdin (or dies).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


async def measure(
    call: Callable[[], Awaitable[Any]], callers: int, seconds: float, server_pid: int
) -> tuple[float, ...]:
    """p50 and p99 (us), calls/s, and CPU us per call here and in the server, of
    ``call`` run by ``callers`` tasks for ``seconds``."""
    latencies: list[float] = []
    stop_at = 0.0
    record = False

    async def caller() -> None:
        clock = time.perf_counter
        while clock() < stop_at:
            t0 = clock()
            await call()
            if record:
                latencies.append(clock() - t0)

    stop_at = time.perf_counter() + WARMUP_S
    await asyncio.gather(*(caller() for _ in range(callers)))
    record = True
    server0, cpu0 = sample_process(server_pid), time.process_time()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    cpu, server = time.process_time() - cpu0, sample_process(server_pid) - server0
    n = len(latencies)
    return (
        percentile(latencies, 50) * 1e6,
        percentile(latencies, 99) * 1e6,
        n / elapsed,
        cpu / n * 1e6,
        server.cpu_s / n * 1e6,
    )


async def run(seconds: float, use_uvloop: bool) -> None:
    cmd = [sys.executable, __file__, "--serve"] + (["--uvloop"] if use_uvloop else [])
    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    remote: rpc.RemoteService | None = None
    try:
        port = int(child.stdout.readline())
        remote = rpc.RemoteService("bench", f"127.0.0.1:{port}", interface=Bench)
        msg = message()
        direct = Bench()
        copied = rpc.local(direct, through_wire=True)
        paths: list[tuple[str, Any]] = [
            ("direct", direct),
            ("direct + wire", copied),
            ("gRPC loopback", remote),
        ]
        calls: list[tuple[str, Callable[[Any], Callable[[], Awaitable[Any]]]]] = [
            ("ping(int)", lambda svc: lambda: svc.ping(1)),
            (f"echo({len(msg.to_bytes())} B TL)", lambda svc: lambda: svc.echo(msg)),
        ]
        rows = []
        for name, make in calls:
            for callers in (1, 32):
                for path, svc in paths:
                    row = await measure(make(svc), callers, seconds, child.pid)
                    rows.append((name, path, callers, *row))
        loop = "uvloop" if use_uvloop else "asyncio"
        print(f"# {loop}, {seconds:g} s per row, server in a child process, {os.cpu_count()} CPUs")
        headers = ["call", "path", "callers", "p50 us", "p99 us", "calls/s"]
        print(table([*headers, "client CPU us/call", "server CPU us/call"], rows))
    finally:
        if remote is not None:
            await remote.close()
        child.stdin.close()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--uvloop", action="store_true", help="run both sides on uvloop")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.uvloop) if args.serve else run(args.seconds, args.uvloop))


if __name__ == "__main__":
    main()
