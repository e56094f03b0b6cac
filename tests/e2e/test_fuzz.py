"""Hostile input against the live TCP listener, and transport-level flood control.

The fuzz test feeds well over 10,000 random and mutated frames over many short
connections (20 at a time) while Telethon keeps pinging on its own connection;
every ping must be answered, the server must still accept new clients, log no
error and keep its memory and connection tables bounded.

The flood test sends packets far faster than ``gnetway.flood_packets_per_second``
on one connection, which must get -429 and be closed while another client
carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import resource
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from telethon import TelegramClient, functions
from telethon.network.connection import ConnectionTcpFull

from teamgram.mtproto.handshake import pack_plain
from teamgram.mtproto.transport import ClientTransport
from teamgram.server import Server
from teamgram.testing import MTClient, TransportErrorReply
from teamgram.tl import functions as tl_functions

MTClientFor = Callable[..., Awaitable[MTClient]]
TelethonFor = Callable[..., Awaitable[TelegramClient]]
ServerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Server]]
ServerErrors = Callable[[], list[logging.LogRecord]]

FRAMES = 15_000
CONCURRENCY = 20
SEED = 20240611
MAX_RSS_GROWTH = 50 * 1024 * 1024
KINDS = [
    ("abridged", False),
    ("intermediate", False),
    ("padded", False),
    ("full", False),
    ("abridged", True),
    ("intermediate", True),
    ("padded", True),
]


@dataclass
class Case:
    """Bytes for one connection; ``frames`` counts the frames (or blobs) in them."""

    name: str
    data: bytes
    frames: int
    read: float = 0.5  # how long to wait for the server's answer / close
    pieces: int = 1  # written in this many separate writes
    expect_reply: bool = False


@dataclass
class FuzzStats:
    frames: int = 0
    connections: int = 0
    by_case: Counter[str] = field(default_factory=Counter)
    closed_by_server: Counter[str] = field(default_factory=Counter)
    replied: Counter[str] = field(default_factory=Counter)


def req_pq_multi() -> bytes:
    """A valid unencrypted req_pq_multi packet."""
    msg_id = int(time.time() * 4294967296.0) & ~3
    return pack_plain(msg_id, tl_functions.ReqPqMulti(os.urandom(16)).to_bytes())


def max_rss() -> int:
    """Peak resident set size of this process (server and clients), bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Fuzzer:
    """Makes the hostile connections' bytes; ``victim`` lends a real auth key."""

    def __init__(self, rng: random.Random, victim: MTClient) -> None:
        self.rng = rng
        self.victim = victim
        self.cases: list[Callable[[], Case]] = [
            self.random_bytes,
            self.random_payloads,
            self.mutated_frames,
            self.truncated_obfuscated_header,
            self.flipped_encrypted,
            self.oversized_length,
            self.plain_garbage,
            self.zero_length,
            self.other_protocols,
            self.fragmented,
        ]

    def next_case(self) -> Case:
        return self.rng.choice(self.cases)()

    def transport(self) -> ClientTransport:
        kind, obfuscated = self.rng.choice(KINDS)
        return ClientTransport(kind, obfuscated, dc_id=self.rng.choice([2, -2, 0, 99]))

    def payload(self) -> bytes:
        return self.rng.randbytes(4 * self.rng.randint(1, 256))

    def frames(self, payloads: list[bytes]) -> bytes:
        t = self.transport()
        return t.connect_bytes() + b"".join(t.encode(p) for p in payloads)

    def flip(self, data: bytes, start: int = 0, count: int | None = None) -> bytes:
        out = bytearray(data)
        for _ in range(count or self.rng.randint(1, 4)):
            i = self.rng.randrange(start, len(out))
            out[i] ^= 1 << self.rng.randrange(8)
        return bytes(out)

    # ----------------------------------------------------------------- cases

    def random_bytes(self) -> Case:
        n = self.rng.randint(1, 3)
        blobs = [self.rng.randbytes(self.rng.randint(1, 4096)) for _ in range(n)]
        return Case("random_bytes", b"".join(blobs), n, read=0.1)

    def random_payloads(self) -> Case:
        """Well-framed packets whose contents are noise (unknown auth_key_id)."""
        n = self.rng.randint(1, 8)
        return Case("random_payloads", self.frames([self.payload() for _ in range(n)]), n)

    def mutated_frames(self) -> Case:
        """Valid frames of every framing, then bits flipped or a length overwritten."""
        n = self.rng.randint(1, 8)
        payloads = [req_pq_multi() if self.rng.random() < 0.3 else self.payload() for _ in range(n)]
        t = self.transport()
        head = t.connect_bytes()
        body = bytearray(b"".join(t.encode(p) for p in payloads))
        if self.rng.random() < 0.5:
            body = bytearray(self.flip(bytes(body)))
        else:  # overwrite a length prefix (the first frame's, or anywhere)
            at = 0 if self.rng.random() < 0.5 else self.rng.randrange(len(body))
            body[at : at + 4] = self.rng.randbytes(4)
        return Case("mutated_frames", head + bytes(body), n, read=0.1)

    def truncated_obfuscated_header(self) -> Case:
        kind, _ = self.rng.choice([k for k in KINDS if k[1]])
        header = ClientTransport(kind, True).connect_bytes()
        return Case("truncated_header", header[: self.rng.randint(1, 63)], 1, read=0.05)

    def flipped_encrypted(self) -> Case:
        """Real encrypted requests under the victim's key, each with bits flipped."""
        n = self.rng.randint(1, 4)
        bodies = [
            tl_functions.Ping(ping_id=self.rng.getrandbits(63)).to_bytes(),
            tl_functions.help.GetConfig().to_bytes(),
        ]
        packets = [self.flip(self.victim.encrypt(self.rng.choice(bodies))[1]) for _ in range(n)]
        return Case("flipped_encrypted", self.frames(packets), n)

    def oversized_length(self) -> Case:
        kind, obfuscated = self.rng.choice(KINDS)
        t = ClientTransport(kind, obfuscated)
        huge = self.rng.choice([4 * 1024 * 1024 + 16, 0x40000000, 0x7FFFFFF0, 0x7FFFFFFF])
        if kind == "abridged":
            frame = b"\x7f" + self.rng.choice([b"\xff\xff\xff", b"\x01\x00\x10"])
        elif kind == "full":
            frame = struct.pack("<iI", huge, 0)
        else:
            frame = struct.pack("<I", huge)
        frame += self.rng.randbytes(self.rng.randint(0, 512))
        if obfuscated:  # encrypt the frame with the connection's own stream
            frame = t._encryptor.update(frame) if t._encryptor else frame
        return Case("oversized_length", t.connect_bytes() + frame, 1)

    def plain_garbage(self) -> Case:
        """auth_key_id 0 with noise, bad lengths or a mutated req_pq_multi."""
        n = self.rng.randint(1, 4)
        out = []
        for _ in range(n):
            real = req_pq_multi()
            choice = self.rng.randrange(3)
            if choice == 0:
                out.append(bytes(8) + self.rng.randbytes(4 * self.rng.randint(1, 64)))
            elif choice == 1:
                out.append(self.flip(real, start=8))
            else:
                out.append(real[:8] + self.rng.randbytes(12) + real[20:])
        return Case("plain_garbage", self.frames(out), n)

    def zero_length(self) -> Case:
        kind, obfuscated = self.rng.choice(KINDS)
        t = ClientTransport(kind, obfuscated)
        frame = {"abridged": b"\x00", "full": struct.pack("<iI", 0, 0)}.get(kind, bytes(4))
        frame += bytes(self.rng.randint(0, 16))
        if obfuscated and t._encryptor:
            frame = t._encryptor.update(frame)
        return Case("zero_length", t.connect_bytes() + frame, 1)

    def other_protocols(self) -> Case:
        data = self.rng.choice(
            [
                b"GET /apiws HTTP/1.1\r\nHost: x\r\n\r\n",
                b"POST /api HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
                b"HEAD / HTTP/1.0\r\n\r\n",
                b"OPTIONS * HTTP/1.1\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + self.rng.randbytes(64),
                b"\xee\xee\xee\xee" * 20,
                b"\xdd\xdd\xdd\xdd" + bytes(60),
            ]
        )
        return Case("other_protocols", data, 1)

    def fragmented(self) -> Case:
        """A valid req_pq_multi written a few bytes at a time: it must still be answered."""
        data = self.frames([req_pq_multi()])
        return Case("fragmented", data, 1, read=5.0, pieces=len(data) // 4, expect_reply=True)


async def run_case(host: str, port: int, case: Case, stats: FuzzStats) -> None:
    """One short connection: write the case, listen briefly, close."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except OSError as exc:
        raise AssertionError(f"server refused a connection: {exc!r}") from exc
    stats.connections += 1
    stats.by_case[case.name] += 1
    try:
        step = -(-len(case.data) // case.pieces)
        for at in range(0, len(case.data), step):
            writer.write(case.data[at : at + step])
            await asyncio.wait_for(writer.drain(), 5)
            if case.pieces > 1:
                await asyncio.sleep(0)
        stats.frames += case.frames
        deadline = time.monotonic() + case.read
        replied = False
        while (left := deadline - time.monotonic()) > 0:
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                stats.closed_by_server[case.name] += 1
                break
            if not replied:
                replied = True
                stats.replied[case.name] += 1
            if case.expect_reply:
                break
    except ConnectionError:
        stats.closed_by_server[case.name] += 1  # reset: it hung up while we wrote
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (TimeoutError, ConnectionError, OSError):
            pass


async def keep_pinging(
    client: TelegramClient, stop: asyncio.Event, failures: list[str], answered: list[int]
) -> None:
    """Ping until told to stop; every ping must come back within 10 s."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            pong = await asyncio.wait_for(client(functions.PingRequest(ping_id=i)), 10)
            if pong.ping_id != i:
                failures.append(f"ping {i}: got {pong!r}")
            else:
                answered.append(i)
        except Exception as exc:
            failures.append(f"ping {i}: {type(exc).__name__}: {exc}")
            return
        await asyncio.sleep(0.02)


async def test_fuzz_tcp_listener(
    server: Server,
    telethon_for: TelethonFor,
    mtclient_for: MTClientFor,
    server_errors: ServerErrors,
) -> None:
    host, port = "127.0.0.1", server.gateway.tcp_ports[0]
    pinger = await telethon_for(server, ConnectionTcpFull)
    victim = await mtclient_for(server, "abridged")
    await victim.ping()
    gc.collect()
    rss_before = max_rss()

    stop = asyncio.Event()
    failures: list[str] = []
    answered: list[int] = []
    ping_task = asyncio.create_task(keep_pinging(pinger, stop, failures, answered))

    fuzzer = Fuzzer(random.Random(SEED), victim)
    stats = FuzzStats()
    planned = 0
    slots = asyncio.Semaphore(CONCURRENCY)
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()

    async def guarded(case: Case) -> None:
        try:
            await run_case(host, port, case, stats)
        finally:
            slots.release()

    try:
        while planned < FRAMES:
            await asyncio.wait_for(slots.acquire(), 30)
            case = fuzzer.next_case()
            planned += case.frames
            task = asyncio.create_task(guarded(case))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            assert time.monotonic() - started < 90, "fuzzing takes too long"
        if tasks:
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(ping_task, *tasks, return_exceptions=True), 15)
    errors = server_errors()
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
    assert not failures, failures
    assert len(answered) >= 10, f"only {len(answered)} pings in {elapsed:.1f} s"
    assert stats.frames >= FRAMES, stats
    assert stats.connections >= 1000, stats

    assert stats.replied["fragmented"] == stats.by_case["fragmented"] > 0, stats
    # Garbage that declares itself broken gets the connection closed by the server.
    for name in ("random_payloads", "flipped_encrypted", "oversized_length", "zero_length"):
        assert stats.closed_by_server[name] >= stats.by_case[name] * 0.9, (name, stats)

    # The server forgets the hostile connections and still serves newcomers.
    deadline = time.monotonic() + 10
    while len(server.gateway.connections) > 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(server.gateway.connections) <= 2, len(server.gateway.connections)
    assert sum(server.gateway._per_ip.values()) <= 2, server.gateway._per_ip
    assert len(server.session_host.sessions) <= 4, len(server.session_host.sessions)
    fresh = await mtclient_for(server, "intermediate", obfuscated=True)
    await fresh.ping()
    assert (await fresh.invoke(tl_functions.help.GetConfig())).this_dc == 2
    await asyncio.wait_for(pinger(functions.PingRequest(ping_id=-1)), 10)

    gc.collect()
    growth = max_rss() - rss_before
    assert growth < MAX_RSS_GROWTH, f"peak RSS grew by {growth / 2**20:.1f} MiB"
    errors = server_errors()
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


async def test_flood_gets_429_and_others_carry_on(
    start_server: ServerFactory, mtclient_for: MTClientFor, server_errors: ServerErrors
) -> None:
    async with start_server(gnetway={"flood_packets_per_second": 200}) as srv:
        flooder = await mtclient_for(srv, "intermediate")
        calm = await mtclient_for(srv, "abridged", obfuscated=True)
        await flooder.ping()
        await calm.ping()

        async def flood() -> None:
            # ~10,000 packets a second in bursts of 50, until the server hangs up.
            while not flooder.closed:
                burst = [
                    flooder.encrypt(tl_functions.Ping(ping_id=n).to_bytes())[1] for n in range(50)
                ]
                try:
                    await flooder.send_payloads(burst)
                except (ConnectionError, OSError):
                    return
                await asyncio.sleep(0.005)

        async def stay_calm() -> int:
            # ~50 pings a second, well under the limit, all through the flood and after it.
            n = 0
            while not flooder.closed or n < 20:
                n += 1
                assert await calm.ping(n) == n
                await asyncio.sleep(0.02)
            return n

        calm_task = asyncio.create_task(stay_calm())
        flood_task = asyncio.create_task(flood())
        try:
            code = await flooder.wait_closed(10)
        finally:
            await asyncio.wait_for(flood_task, 10)
            calm_pings = await asyncio.wait_for(calm_task, 30)
        assert code == -429
        try:
            await flooder.ping(timeout=1)
        except TransportErrorReply as exc:
            assert exc.code == -429
        else:
            raise AssertionError("a flooder's connection answered after -429")
        # The other client never noticed.
        assert calm_pings >= 20
        assert not calm.closed and calm.error_code is None
        # Flood control is per connection: the same address may connect again.
        again = await mtclient_for(srv, "intermediate", auth=flooder.auth)
        assert await again.ping(5) == 5
        gc.collect()
        errors = server_errors()
        assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
