"""Private text messages between signed-in users: rate, delivery latency, server cost.

    .venv/bin/python bench/messaging.py [--sizes 10,100,1000] [--seconds 5]
        [--in-flight 1] [--client-procs 2] [--no-commit-stats]

For each size (a number of connected clients, even) a fresh ``teamgramd serve``
starts as its own process on free loopback ports (SQLite in a temporary data
directory), and client processes sign up size/2 pairs of users over the real
protocol, each client one TCP connection (intermediate framing) and one auth key:
handshake, ``invokeWithLayer(initConnection(auth.sendCode))``, ``auth.signIn``
with the dev login code, ``auth.signUp``. The two users of a pair import each
other's phone (``contacts.importContacts``, for the access hash) and exchange one
message each way. None of that is timed.

Then, for ``--seconds``, every client keeps ``--in-flight`` ``messages.sendMessage``
requests to its partner outstanding (both users of a pair send), each text holding
the send time; after that, the bench waits (at most 15 s) for the last deliveries.
The recipient's connection gets each message pushed as ``updates`` carrying
``updateNewMessage``.

Columns (one row per size):

  clients            connected, signed-in clients (= users = auth keys = connections)
  delivered          messages the recipients received in the run (each counted once)
  msg/s              delivered / the whole run: from "go" until every client process
                     has its last delivery (or gave up waiting)
  e2e p50/p99 ms     delivery latency: sender starts sendMessage -> the recipient's
                     connection has decoded the pushed update
  answer p50/p99 ms  the sender's round trip: sendMessage -> updateShortSentMessage
  srv CPU us/msg     server process CPU (user+sys) / delivered
  srv CPU            server CPU seconds per wall second (1.0 = one core busy)
  cli CPU us/msg     CPU of all client processes / delivered (they share the machine)
  srv RSS MiB        server resident memory at the end of the run
  commits            group-commit transactions in the run; ops/commit: writes per
                     transaction (the server's GroupCommit counters, read through
                     bench/_commit_stats.py; "-" with --no-commit-stats)
  lost               answered sends never delivered (within the wait)
  errors             failed sends (rpc errors such as FLOOD_WAIT, timeouts) and lost
                     connections

Below the table, per size: how long the untimed sign-up took (about a minute for
1,000 clients on 2 cores; the default run takes about 2 minutes), answered vs
delivered counts, the slowest delivery, CPU used by other programs meanwhile
("other CPU": noise), and anything odd: FLOOD_WAITs, duplicate or misrouted
deliveries, other pushed updates, server warnings, a saturated server (when the
answer latency exceeds the send window, each client gets about one message through
and the row shows one burst of simultaneous sends, not a steady state).

Sign-up limits, the per-account send rate, the per-IP connection cap and the
per-connection packet flood limit are raised (one loopback address, thousands of
sign-ups and messages); everything else is the server's default. Client and server
share this machine's cores, so on small machines the rates are machine-bound.
``--no-commit-stats`` runs the server as plain ``python -m teamgram.cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _accounts import DEV_CODE, sign_up
from _server import (
    ServerProcess,
    install_sigterm,
    machine_note,
    percentile,
    run_clients,
    split,
    table,
    worker_main,
)

from teamgram.testing.mtclient import MTClient, RpcErrorReply, load_public_key
from teamgram.tl import functions, types

HERE = Path(__file__).resolve().parent
CLIENT_TIMEOUT = 60.0  # one request (sign-up steps can queue behind 1,000 handshakes)
CONNECT_ATTEMPTS = 3
SIGNUP_CONCURRENCY = 32  # clients signing up at once per client process
DRAIN_TIMEOUT = 15.0  # after the senders stop: how long to wait for the last deliveries
BENCH_ENV = {
    "TEAMGRAM_DEV_LOGIN_CODE": DEV_CODE,
    "TEAMGRAM_AUTH_SEND_CODE_PER_IP": "1000000",
    "TEAMGRAM_MESSAGES_SEND_PER_SECOND": "1000000",
    "TEAMGRAM_MESSAGES_SEND_BURST": "1000000",
    "TEAMGRAM_GNETWAY_MAX_CONNECTIONS_PER_IP": "100000",
    "TEAMGRAM_GNETWAY_FLOOD_PACKETS_PER_SECOND": "10000000",
}
COMMIT_STATS_ENV = "BENCH_COMMIT_STATS_FILE"  # read by bench/_commit_stats.py
WARM, MEASURED = "w", "m"  # first word of a message's text


# --------------------------------------------------------------------------- client side


@dataclass(eq=False)
class Endpoint:
    """One signed-in client and what it needs to message its partner."""

    client: MTClient
    user_id: int
    phone: str
    partner_id: int = 0
    peer: types.InputPeerUser | None = None  # the partner, with this user's access hash


@dataclass
class Tally:
    """What one client process saw: sends, answers, deliveries, oddities."""

    answer_ns: list[int] = field(default_factory=list)
    delivery_ns: list[int] = field(default_factory=list)
    sent: set[tuple[int, int]] = field(default_factory=set)  # answered (sender, seq)
    delivered: dict[str, set[tuple[int, int]]] = field(
        default_factory=lambda: {WARM: set(), MEASURED: set()}
    )
    duplicates: int = 0
    misrouted: int = 0
    other_updates: Counter[str] = field(default_factory=Counter)
    other_answers: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    flood_waits: int = 0
    warm_sent: int = 0  # the untimed message each way: answered, delivered
    warm_delivered: int = 0
    prepare_s: float = 0.0

    def error(self, what: str) -> None:
        self.error_count += 1
        if len(self.errors) < 5:
            self.errors.append(what[:200])

    def on_update(self, ep: Endpoint) -> Callable[[Any], None]:
        """The MTClient hook for ``ep``'s connection: note every message pushed to it."""

        def on_update(obj: Any) -> None:
            now = time.monotonic_ns()
            if isinstance(obj, types.Updates | types.UpdatesCombined):
                items: list[Any] = list(obj.updates)
            elif isinstance(obj, types.UpdateShort):
                items = [obj.update]
            elif isinstance(obj, types.UpdateShortMessage):
                self._message(ep, obj.message, obj.out, now)
                return
            else:
                self.other_updates[type(obj).__name__] += 1
                return
            for u in items:
                if isinstance(u, types.UpdateNewMessage) and isinstance(u.message, types.Message):
                    self._message(ep, u.message.message, u.message.out, now)
                else:
                    self.other_updates[type(u).__name__] += 1

        return on_update

    def _message(self, ep: Endpoint, text: str, out: bool, now: int) -> None:
        parts = text.split()
        if out or len(parts) != 4 or parts[0] not in self.delivered:
            self.other_updates["updateNewMessage (not the partner's)"] += 1
            return
        tag, sender, seq, sent_at = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
        if sender != ep.partner_id:
            self.misrouted += 1
        seen = self.delivered[tag]
        if (sender, seq) in seen:
            self.duplicates += 1
            return
        seen.add((sender, seq))
        if tag == MEASURED:
            self.delivery_ns.append(now - sent_at)


def message_worker(conn: Connection, spec: dict[str, Any]) -> None:
    """Client process: sign up ``pairs`` pairs, then message partners for ``seconds``."""
    keys = load_public_key(spec["key_pem"])
    host, port = spec["host"], spec["port"]
    tally = Tally()
    seqs = itertools.count(1)
    opened: list[MTClient] = []

    async def connect() -> MTClient:
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                c = await MTClient.connect(host, port, keys, timeout=CLIENT_TIMEOUT)
            except (OSError, TimeoutError, AssertionError, ValueError):
                if attempt == CONNECT_ATTEMPTS:
                    raise
                continue
            opened.append(c)
            return c
        raise AssertionError("unreachable")

    async def sign_up_endpoint(phone: str) -> Endpoint:
        c = await connect()
        return Endpoint(c, await sign_up(c, phone), phone)

    async def meet(a: Endpoint, b: Endpoint) -> None:
        """``a`` learns ``b``'s access hash by importing ``b``'s phone."""
        contact = types.InputPhoneContact(client_id=0, phone=b.phone, first_name="P", last_name="")
        found = await a.client.invoke(functions.contacts.ImportContacts(contacts=[contact]))
        users = [u for u in found.users if isinstance(u, types.User) and u.id == b.user_id]
        if not users or users[0].access_hash is None:
            raise RuntimeError(f"importContacts({b.phone}) gave no access hash: {found!r}"[:300])
        a.partner_id = b.user_id
        a.peer = types.InputPeerUser(user_id=b.user_id, access_hash=users[0].access_hash)

    async def send(ep: Endpoint, tag: str) -> bool:
        """One sendMessage to ep's partner; True when answered."""
        assert ep.peer is not None, "meet() first"
        seq = next(seqs)
        t0 = time.monotonic_ns()
        request = functions.messages.SendMessage(
            peer=ep.peer,
            message=f"{tag} {ep.user_id} {seq} {t0}",
            random_id=random.getrandbits(63),
        )
        try:
            answer = await ep.client.invoke(request, timeout=CLIENT_TIMEOUT)
        except RpcErrorReply as exc:
            tally.error(f"sendMessage: {exc}")
            if exc.message.startswith("FLOOD_WAIT"):
                tally.flood_waits += 1
                await asyncio.sleep(0.05)  # not a hot loop; the limits are raised anyway
            return False
        except (TimeoutError, ConnectionError) as exc:
            tally.error(f"sendMessage: {type(exc).__name__}: {exc}")
            return False
        if tag == MEASURED:
            tally.answer_ns.append(time.monotonic_ns() - t0)
            tally.sent.add((ep.user_id, seq))
        if not isinstance(answer, types.UpdateShortSentMessage):
            tally.other_answers[type(answer).__name__] += 1
        return True

    async def wait_delivered(tag: str, expected: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(tally.delivered[tag]) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def prepare() -> list[Endpoint]:
        started = time.monotonic()
        gate = asyncio.Semaphore(SIGNUP_CONCURRENCY)
        prefix = spec["phone_prefix"]

        async def one(i: int) -> Endpoint:
            async with gate:
                return await sign_up_endpoint(f"{prefix}{i:04d}")

        try:
            eps = list(await asyncio.gather(*(one(i) for i in range(2 * spec["pairs"]))))
            pairs = list(zip(eps[0::2], eps[1::2], strict=True))
            await asyncio.gather(*(meet(a, b) for x, y in pairs for a, b in ((x, y), (y, x))))
            for ep in eps:
                ep.client.on_update = tally.on_update(ep)
            # One message each way, untimed: the dialogs exist before the clock starts.
            warm = await asyncio.gather(*(send(ep, WARM) for ep in eps))
            await wait_delivered(WARM, sum(warm), DRAIN_TIMEOUT)
        except BaseException:
            await cleanup([])
            raise
        tally.warm_sent, tally.warm_delivered = sum(warm), len(tally.delivered[WARM])
        tally.prepare_s = time.monotonic() - started
        return eps

    async def run(eps: list[Endpoint]) -> dict[str, Any]:
        if spec.get("signal_pid"):  # the server's commit counters, as the clock starts
            os.kill(spec["signal_pid"], signal.SIGUSR1)
        start = time.monotonic()
        deadline = start + spec["seconds"]

        async def sender(ep: Endpoint) -> None:
            while time.monotonic() < deadline and not ep.client.closed:
                await send(ep, MEASURED)

        await asyncio.gather(*(sender(ep) for ep in eps for _ in range(spec["inflight"])))
        sent_s = time.monotonic() - start
        await wait_delivered(MEASURED, len(tally.sent), DRAIN_TIMEOUT)
        got = tally.delivered[MEASURED]
        return {
            "answer_ms": [x / 1e6 for x in tally.answer_ns],
            "delivery_ms": [x / 1e6 for x in tally.delivery_ns],
            "sent": len(tally.sent),
            "delivered": len(got),
            "lost": len(tally.sent - got),
            "duplicates": tally.duplicates,
            "misrouted": tally.misrouted,
            "other_updates": dict(tally.other_updates),
            "other_answers": dict(tally.other_answers),
            "errors": tally.errors,
            "error_count": tally.error_count,
            "flood_waits": tally.flood_waits,
            "closed": sum(ep.client.closed for ep in eps),
            "warm": (tally.warm_sent, tally.warm_delivered),
            "prepare_s": tally.prepare_s,
            "sent_s": sent_s,
            "wall_s": time.monotonic() - start,
        }

    async def cleanup(eps: list[Endpoint]) -> None:
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)

    worker_main(conn, prepare, run, cleanup)


# --------------------------------------------------------------------------- bench side


class CommitCounters:
    """The server's group-commit counters, through bench/_commit_stats.py and SIGUSR1."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="teamgram-bench-commits-")
        os.close(fd)
        self.path = Path(name)

    def lines(self) -> list[tuple[int, int]]:
        out = []
        for line in self.path.read_text().splitlines():
            batches, ops = line.split()
            out.append((int(batches), int(ops)))
        return out

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[int, int]] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.lines()
            if len(got) >= count:
                return got
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class SizeResult:
    row: list[object]
    notes: list[str]
    errors: list[str]


def run_size(
    size: int, args: argparse.Namespace, prefix: str, counters: CommitCounters | None
) -> SizeResult:
    """One fresh server, ``size`` clients signed up, ``args.seconds`` of messaging."""
    pairs = size // 2
    procs = max(1, min(args.client_procs, pairs))
    env = dict(BENCH_ENV)
    flags: tuple[str, ...] = ()
    if counters is not None:
        env[COMMIT_STATS_ENV] = str(counters.path)
        flags = (str(HERE / "_commit_stats.py"),)
    notes: list[str] = []
    with ServerProcess(env=env, python_flags=flags) as srv:
        specs = [
            {
                "host": srv.host,
                "port": srv.tcp_port,
                "key_pem": srv.key_pem,
                "pairs": n,
                "seconds": args.seconds,
                "inflight": args.in_flight,
                "phone_prefix": f"{prefix}{i:02d}",
                "signal_pid": srv.pid if i == 0 and counters is not None else 0,
            }
            for i, n in enumerate(split(pairs, procs))
        ]
        before = len(counters.lines()) if counters is not None else 0
        print(f"{size:,} clients: server pid {srv.pid}; signing up {size:,} users...", flush=True)
        run = run_clients(
            message_worker,
            specs,
            srv,
            prepare_timeout=120 + size * 0.3,
            run_timeout=args.seconds + DRAIN_TIMEOUT + CLIENT_TIMEOUT + 30,
        )
        commits: float = float("nan")
        per_commit: float = float("nan")
        if counters is not None:
            os.kill(srv.pid, signal.SIGUSR1)
            got = counters.wait(before + 2)
            if got is None:
                notes.append("group-commit counters: no answer from the server")
            else:
                (b0, o0), (b1, o1) = got[before], got[before + 1]
                commits = float(b1 - b0)
                per_commit = (o1 - o0) / (b1 - b0) if b1 > b0 else float("nan")
        warnings = srv.log_counts.get("WARNING", 0) + srv.log_counts.get("ERROR", 0)
        warning_lines = [line for line in srv.log_tail if " WARNING " in line or " ERROR " in line][
            :3
        ]

    results = run.results
    delivery = [x for r in results for x in r["delivery_ms"]]
    answer = [x for r in results for x in r["answer_ms"]]
    delivered = sum(r["delivered"] for r in results)
    lost = sum(r["lost"] for r in results)
    errors = sum(r["error_count"] + r["closed"] for r in results)
    s = run.server
    per_msg = 1e6 / delivered if delivered else float("nan")
    row: list[object] = [
        size,
        delivered,
        delivered / s.wall_s if s.wall_s > 0 else float("nan"),
        percentile(delivery, 50),
        percentile(delivery, 99),
        percentile(answer, 50),
        percentile(answer, 99),
        s.cpu_s * per_msg,
        s.cpu_share,
        run.client_cpu_s * per_msg,
        s.rss_kib / 1024,
        commits,
        per_commit,
        lost,
        errors,
    ]
    warm_sent = sum(r["warm"][0] for r in results)
    warm_got = sum(r["warm"][1] for r in results)
    prepare_s = max(r["prepare_s"] for r in results)
    notes.append(
        f"sign-up, contacts and warm-up (untimed) took {prepare_s:.1f} s; warm-up messages "
        f"answered {warm_sent:,}/{size:,}, delivered {warm_got:,}"
    )
    sent = sum(r["sent"] for r in results)
    notes.append(
        f"run {s.wall_s:.1f} s (senders stopped after {max(r['sent_s'] for r in results):.1f} s); "
        f"answered {sent:,}, delivered {delivered:,}, lost {lost:,}; "
        f"max e2e {max(delivery, default=float('nan')):.1f} ms, "
        f"max answer {max(answer, default=float('nan')):.1f} ms; "
        f"other CPU {run.other_cpu_share:.2f} cores"
    )
    if sent < 2 * size:
        notes.append(
            f"the server is saturated: {sent / size:.1f} sends answered per client, so this "
            f"row is mostly one wave of {size * args.in_flight:,} simultaneous sends (answer "
            f"p50 {percentile(answer, 50) / 1000:.1f} s > the {args.seconds:g} s send window), "
            "not a steady state"
        )
    floods = sum(r["flood_waits"] for r in results)
    dups = sum(r["duplicates"] for r in results)
    misrouted = sum(r["misrouted"] for r in results)
    if floods or dups or misrouted:
        notes.append(f"FLOOD_WAIT {floods:,}, duplicates {dups:,}, misrouted {misrouted:,}")
    other_updates: Counter[str] = Counter()
    other_answers: Counter[str] = Counter()
    for r in results:
        other_updates.update(r["other_updates"])
        other_answers.update(r["other_answers"])
    if other_updates:
        notes.append(f"other updates pushed: {dict(other_updates)}")
    if other_answers:
        notes.append(f"unexpected sendMessage answers: {dict(other_answers)}")
    if warnings:
        notes.append(f"server warnings/errors logged: {warnings}")
        notes += [f"  {line[:240]}" for line in warning_lines]
    return SizeResult(row, notes, [e for r in results for e in r["errors"]][:5])


def parse_sizes(text: str) -> list[int]:
    sizes = [int(x) for x in text.split(",") if x.strip()]
    for n in sizes:
        if n < 2 or n % 2:
            raise argparse.ArgumentTypeError(f"a size is an even number of clients >= 2: {n}")
    return sizes


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=parse_sizes, default=[10, 100, 1000], help="connected clients (even)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="messaging time per size")
    parser.add_argument(
        "--in-flight",
        type=positive_int,
        default=1,
        help="sendMessage requests outstanding per client",
    )
    parser.add_argument("--client-procs", type=positive_int, default=2, help="client processes")
    parser.add_argument(
        "--no-commit-stats",
        action="store_true",
        help="run the server as `python -m teamgram.cli` (no group-commit counters)",
    )
    args = parser.parse_args(argv)
    install_sigterm()

    counters = None if args.no_commit_stats else CommitCounters()
    prefix = f"42{random.randrange(10**6):06d}"  # phones: prefix + process (2) + index (4)
    rows: list[list[object]] = []
    notes: list[str] = []
    errors: list[str] = []
    print(machine_note(args.client_procs))
    print(f"server settings changed: {BENCH_ENV}")
    try:
        for size in args.sizes:
            res = run_size(size, args, prefix, counters)
            rows.append(res.row)
            notes += [f"{size:,} clients: {n}" for n in res.notes]
            errors += res.errors
    finally:
        if counters is not None:
            counters.close()

    print()
    print(
        table(
            [
                "clients",
                "delivered",
                "msg/s",
                "e2e p50 ms",
                "e2e p99 ms",
                "answer p50 ms",
                "answer p99 ms",
                "srv CPU us/msg",
                "srv CPU",
                "cli CPU us/msg",
                "srv RSS MiB",
                "commits",
                "ops/commit",
                "lost",
                "errors",
            ],
            rows,
        )
    )
    print()
    print(
        f"{args.in_flight} sendMessage in flight per client, both users of a pair sending; "
        f"{args.seconds:g} s per size, a fresh server each"
    )
    for n in notes:
        print(n)
    for e in errors[:5]:
        print(f"client error: {e}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
