"""Encrypted ping round trips: rate, latency, and the server's CPU per round trip.

    .venv/bin/python bench/ping.py [--seconds 5] [--client-procs 1] [--only a,b,c]

Starts ``teamgramd serve`` as a separate process on free loopback ports, creates
one auth key per client process, then measures ``ping`` -> ``pong`` (an encrypted
MTProto service message both ways; TCP, intermediate framing) in three shapes:

  (a) 1 connection, 1 ping at a time (sequential latency)
  (b) 10 connections x 32 pings in flight each (pipelined)
  (c) 1,000 connections x 1 ping in flight each (opened and warmed up first)

Every connection has its own session (sharing its process's auth key), and is
used for one ping before the clock starts, so session creation is not timed.
Prints round trips per second, p50/p99 latency, the server's CPU microseconds per
round trip, its CPU share (1.0 = one core busy) and RSS, plus the clients' CPU.

``--client raw`` (default) drives the load with a lean asyncio.Protocol pinger so
the server, not the client, is what runs out of CPU; ``--client mtclient`` uses
``teamgram.testing.MTClient`` (futures, tasks and timeouts per request). The
server runs with its flood limit and per-IP connection cap raised (one loopback
address, thousands of packets per second per connection); ``--default-limits``
keeps them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import struct
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

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

from teamgram.mtproto.envelope import decrypt_server_message, encrypt_client_message
from teamgram.mtproto.session import parse_container
from teamgram.mtproto.transport import ClientTransport
from teamgram.testing import MTClient
from teamgram.testing.mtclient import AuthState, load_public_key
from teamgram.tl import decode, functions, types
from teamgram.tl.core import MSG_CONTAINER_ID

CLIENT_TIMEOUT = 20.0
OPEN_CONCURRENCY = 100  # connections being opened at once per client process
BENCH_LIMITS = {
    "TEAMGRAM_GNETWAY_FLOOD_PACKETS_PER_SECOND": "10000000",
    "TEAMGRAM_GNETWAY_MAX_CONNECTIONS_PER_IP": "100000",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    conns: int
    inflight: int
    max_procs: int | None = None  # None: --client-procs


SCENARIOS = {
    "a": Scenario("(a) 1 conn, sequential", 1, 1, max_procs=1),
    "b": Scenario("(b) 10 conns x 32 in flight", 10, 32),
    "c": Scenario("(c) 1,000 conns x 1 in flight", 1000, 1),
}


class RawPinger(asyncio.Protocol):
    """A lean pipelining client for one connection: pings only, no tasks or futures.

    Keeps ``inflight`` pings outstanding until ``deadline``: every pong is answered
    with the next ping, and all pings provoked by one read leave in one write (with
    a msgs_ack for every 16 server messages, as MTClient does). Handles
    new_session_created, bad_server_salt and clock corrections; anything else
    unexpected counts as an error.
    """

    def __init__(self, auth: AuthState, lat: list[float], errors: list[str]) -> None:
        self.auth_key = auth.auth_key
        self.key_id = struct.pack("<q", auth.auth_key_id)
        self.salt = auth.server_salt
        self.time_offset = auth.time_offset
        self.session_id = int.from_bytes(os.urandom(8), "little", signed=True)
        self.lat = lat
        self.errors = errors
        self.framing = ClientTransport("intermediate")
        self.transport: asyncio.Transport | None = None
        self.outstanding: dict[int, tuple[float, int]] = {}  # msg_id -> (sent at, ping_id)
        self.deadline = float("inf")
        self.closed = False
        self._acks: list[int] = []
        self._out: list[bytes] = []
        self._last_msg_id = 0
        self._seq = 0
        self._ping_ids = itertools.count(1)
        self._waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.framing.connect_bytes())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.outstanding:
            self.errors.append(f"connection lost with {len(self.outstanding)} pings in flight")
            self.outstanding.clear()
        self._wake()

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.framing.receive_packets(data)
        except Exception as exc:
            self._fail(f"bad framing: {exc}")
            return
        for packet in packets:
            payload = packet.payload
            if len(payload) == 4:
                self._fail(f"transport error {struct.unpack('<i', payload)[0]}")
                return
            dec = decrypt_server_message(self.auth_key, payload)
            if dec is None or dec.session_id != self.session_id:
                self._fail("undecryptable or foreign packet")
                return
            self._message(dec.msg_id, dec.seqno, dec.body)
        self._flush()
        if not self.outstanding:
            self._wake()

    # ----------------------------------------------------------------- protocol
    def _message(self, msg_id: int, seqno: int, body: bytes) -> None:
        if seqno & 1:
            self._acks.append(msg_id)
        cid = _U32.unpack_from(body)[0]
        if cid == _PONG_ID:
            _, req_msg_id, _ = _PONG.unpack_from(body)
            sent = self.outstanding.pop(req_msg_id, None)
            if sent is None:
                return
            now = time.perf_counter()
            self.lat.append(now - sent[0])
            if now < self.deadline:
                self._ping()
        elif cid == MSG_CONTAINER_ID:
            for inner in parse_container(body):
                self._message(*inner)
        elif cid == _MSGS_ACK_ID:
            pass
        else:
            self._service(msg_id, decode(body))

    def _service(self, server_msg_id: int, obj: Any) -> None:
        if isinstance(obj, types.NewSessionCreated):
            self.salt = obj.server_salt
        elif isinstance(obj, types.BadServerSalt):
            self.salt = obj.new_server_salt
            self._resend(obj.bad_msg_id)
        elif isinstance(obj, types.BadMsgNotification) and obj.error_code in (16, 17):
            self.time_offset = (server_msg_id >> 32) - time.time()
            self._resend(obj.bad_msg_id)
        else:
            self.errors.append(f"unexpected {type(obj).__name__}: {obj!r}"[:200])

    def _resend(self, bad_msg_id: int) -> None:
        sent = self.outstanding.pop(bad_msg_id, None)
        if sent is not None:
            self._ping(*sent)

    def _next_msg_id(self) -> int:
        msg_id = int((time.time() + self.time_offset) * 4294967296.0) & ~3
        if msg_id <= self._last_msg_id:
            msg_id = self._last_msg_id + 4
        self._last_msg_id = msg_id
        return msg_id

    def _encrypt(self, body: bytes, content: bool) -> int:
        """Queue ``body`` encrypted and framed; returns its msg_id."""
        msg_id = self._next_msg_id()
        if content:
            self._seq += 1
            seqno = self._seq * 2 - 1
        else:
            seqno = self._seq * 2
        packet = encrypt_client_message(
            self.auth_key, self.key_id, self.salt, self.session_id, msg_id, seqno, body
        )
        self._out.append(self.framing.encode(packet))
        return msg_id

    def _ping(self, sent_at: float | None = None, ping_id: int | None = None) -> None:
        pid = next(self._ping_ids) if ping_id is None else ping_id
        msg_id = self._encrypt(_PING.pack(_PING_ID, pid), content=True)
        self.outstanding[msg_id] = (time.perf_counter() if sent_at is None else sent_at, pid)

    def _flush(self) -> None:
        if len(self._acks) >= _ACK_EVERY:  # as MTClient: one msgs_ack per 16 messages
            self._encrypt(types.MsgsAck(msg_ids=self._acks).to_bytes(), content=False)
            self._acks = []
        if self._out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _fail(self, why: str) -> None:
        self.errors.append(why)
        if self.transport is not None:
            self.transport.close()
        self.closed = True
        self.outstanding.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ---------------------------------------------------------------------- API
    def start(self, inflight: int, deadline: float) -> None:
        """Put ``inflight`` pings on the wire; each pong sends the next until ``deadline``."""
        self.deadline = deadline
        for _ in range(inflight):
            self._ping()
        self._flush()

    async def drained(self, timeout: float) -> None:
        """Wait until no ping is outstanding (or the connection is gone)."""
        if self.outstanding and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waiter, timeout)
            self._waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_U32 = struct.Struct("<I")
_PING = struct.Struct("<Iq")
_PONG = struct.Struct("<Iqq")
_PING_ID = functions.Ping.CONSTRUCTOR_ID
_PONG_ID = types.Pong.CONSTRUCTOR_ID
_MSGS_ACK_ID = types.MsgsAck.CONSTRUCTOR_ID
_ACK_EVERY = 16


def ping_worker(conn: Connection, spec: dict[str, Any]) -> None:
    """Client process: open ``conns`` connections, then keep ``inflight`` pings on each."""
    if spec["client"] == "mtclient":
        mtclient_worker(conn, spec)
        return
    keys = load_public_key(spec["key_pem"])
    host, port = spec["host"], spec["port"]
    lat: list[float] = []
    errors: list[str] = []

    async def prepare() -> list[RawPinger]:
        loop = asyncio.get_running_loop()
        first = await MTClient.connect(host, port, keys, timeout=CLIENT_TIMEOUT)
        assert first.auth is not None
        auth = first.auth
        await first.close()
        pingers: list[RawPinger] = []
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def open_one() -> None:
            async with gate:
                _, p = await asyncio.wait_for(
                    loop.create_connection(lambda: RawPinger(auth, lat, errors), host, port),
                    CLIENT_TIMEOUT,
                )
                pingers.append(p)
                p.start(1, 0.0)  # one ping opens the session, out of the timing
                await p.drained(CLIENT_TIMEOUT)
                if p.closed or p.outstanding:
                    raise ConnectionError(f"warm-up ping failed: {errors[-1:]}")

        try:
            await asyncio.gather(*(open_one() for _ in range(spec["conns"])))
        except BaseException:
            await cleanup(pingers)
            raise
        lat.clear()
        errors.clear()
        return pingers

    async def run(pingers: list[RawPinger]) -> dict[str, Any]:
        start = time.perf_counter()
        deadline = start + spec["seconds"]
        for p in pingers:
            p.start(spec["inflight"], deadline)
        await asyncio.sleep(spec["seconds"])
        await asyncio.gather(*(p.drained(CLIENT_TIMEOUT) for p in pingers))
        lost = sum(len(p.outstanding) for p in pingers)
        return {
            "latencies": lat,
            "errors": errors[:5],
            "error_count": len(errors) + lost,
            "closed": sum(p.closed for p in pingers),
            "wall_s": time.perf_counter() - start,
        }

    async def cleanup(pingers: list[RawPinger]) -> None:
        for p in pingers:
            p.close()
        await asyncio.sleep(0.1)

    worker_main(conn, prepare, run, cleanup)


def mtclient_worker(conn: Connection, spec: dict[str, Any]) -> None:
    """The same load through :class:`MTClient` (the full client: tasks, futures, timeouts)."""
    keys = load_public_key(spec["key_pem"])
    host, port = spec["host"], spec["port"]

    async def prepare() -> list[MTClient]:
        clients: list[MTClient] = []
        first = await MTClient.connect(host, port, keys, timeout=CLIENT_TIMEOUT)
        clients.append(first)
        assert first.auth is not None
        auth = first.auth
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def open_one() -> None:
            async with gate:
                c = await MTClient.connect(
                    host, port, keys, auth=replace(auth), timeout=CLIENT_TIMEOUT
                )
                clients.append(c)
                await c.ping()  # new session: new_session_created, out of the timing

        try:
            await first.ping()
            await asyncio.gather(*(open_one() for _ in range(spec["conns"] - 1)))
        except BaseException:
            await cleanup(clients)
            raise
        return clients

    async def pinger(c: MTClient, deadline: float, lat: list[float], errors: list[str]) -> None:
        perf = time.perf_counter
        while perf() < deadline:
            t0 = perf()
            try:
                await c.ping(timeout=CLIENT_TIMEOUT)
            except Exception as exc:  # counted, and the loop goes on
                errors.append(f"{type(exc).__name__}: {exc}")
                if c.closed:
                    return
                continue
            lat.append(perf() - t0)

    async def run(clients: list[MTClient]) -> dict[str, Any]:
        lat: list[float] = []
        errors: list[str] = []
        start = time.perf_counter()
        deadline = start + spec["seconds"]
        tasks = [pinger(c, deadline, lat, errors) for c in clients for _ in range(spec["inflight"])]
        await asyncio.wait_for(asyncio.gather(*tasks), spec["seconds"] + CLIENT_TIMEOUT + 10)
        return {
            "latencies": lat,
            "errors": errors[:5],
            "error_count": len(errors),
            "closed": sum(c.closed for c in clients),
            "wall_s": time.perf_counter() - start,
        }

    async def cleanup(clients: list[MTClient]) -> None:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    worker_main(conn, prepare, run, cleanup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per scenario")
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--only", default="a,b,c", help="scenarios to run (a, b, c)")
    parser.add_argument(
        "--client",
        choices=["raw", "mtclient"],
        default="raw",
        help="raw: a lean pinger (so the server, not the client, is the limit); "
        "mtclient: teamgram.testing.MTClient (the full test client)",
    )
    parser.add_argument(
        "--default-limits",
        action="store_true",
        help="keep the server's per-connection flood limit and per-IP connection cap",
    )
    args = parser.parse_args(argv)
    chosen = [SCENARIOS[k.strip()] for k in args.only.split(",") if k.strip()]
    install_sigterm()

    rows = []
    errors: list[str] = []
    # One loopback client is every connection's "IP", and a pipelining bench sends far
    # more than the 2,000 packets/s per connection the flood control allows.
    env = {} if args.default_limits else BENCH_LIMITS
    with ServerProcess(env=env) as srv:
        base = {
            "host": srv.host,
            "port": srv.tcp_port,
            "key_pem": srv.key_pem,
            "client": args.client,
        }
        print(srv.describe(args.client_procs))
        print(f"client: {args.client}; server settings changed: {env or 'none'}")
        for sc in chosen:
            procs = min(args.client_procs, sc.max_procs or args.client_procs, sc.conns)
            specs = [
                {**base, "conns": n, "inflight": sc.inflight, "seconds": args.seconds}
                for n in split(sc.conns, procs)
            ]
            run = run_clients(
                ping_worker,
                specs,
                srv,
                prepare_timeout=60 + sc.conns / 20,
                run_timeout=args.seconds + CLIENT_TIMEOUT + 30,
            )
            lat = [x * 1000 for r in run.results for x in r["latencies"]]
            n = len(lat)
            client_cpu = run.client_cpu_s
            for r in run.results:
                errors += r["errors"]
            s = run.server
            rows.append(
                [
                    sc.name,
                    procs,
                    n,
                    n / s.wall_s,
                    percentile(lat, 50),
                    percentile(lat, 99),
                    s.cpu_s * 1e6 / n if n else float("nan"),
                    client_cpu * 1e6 / n if n else float("nan"),
                    s.cpu_share,
                    run.other_cpu_share,
                    s.rss_kib / 1024,
                    sum(r["error_count"] + r["closed"] for r in run.results),
                ]
            )
        hwm = srv.sample().hwm_kib / 1024
        warnings = srv.log_counts.get("WARNING", 0) + srv.log_counts.get("ERROR", 0)
        flood = len(srv.log_lines("flood, closing"))

    print()
    print(
        table(
            [
                "scenario",
                "procs",
                "round trips",
                "rt/s",
                "p50 ms",
                "p99 ms",
                "srv CPU us/rt",
                "cli CPU us/rt",
                "srv CPU share",
                "other CPU",
                "srv RSS MiB",
                "errors",
            ],
            rows,
        )
    )
    print()
    print(
        f"server peak RSS {hwm:.1f} MiB; server warnings/errors logged: {warnings}; "
        f"flood closes (-429): {flood}"
    )
    print(
        "rt/s = pongs received / wall time; CPU share = server CPU seconds per wall second "
        "(1.0 = one core); other CPU = cores busy with anything but this bench (noise); "
        "errors = failed pings + connections lost"
    )
    for e in errors[:5]:
        print(f"client error: {e}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
