"""Private text messages between signed-in users: rate, delivery latency, server cost.

    .venv/bin/python bench/messaging.py [--sizes 10,100,1000] [--seconds 5]
        [--in-flight 1] [--client-procs 2] [--no-commit-stats]
        [--mariadb | --cluster [--delivery pipeline|direct] | --modes M1,M2,...]
        [--same-edge]
        [--database-url URL]

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

Modes (where the server runs; the load is the same):

  sqlite             the default: ``teamgramd serve``, SQLite in its data directory
  mariadb            ``--mariadb``: the same on a fresh MariaDB database
                     (root@127.0.0.1:3306, or TEAMGRAM_TEST_MARIADB_URL), dropped after
  cluster-pipeline   ``--cluster``: ``teamgramd cluster`` (teamgram.testing.Cluster): a
                     supervisor, two edge processes (gnetway, session, bff, httpserver)
                     and a sync process, on a fresh MariaDB database, Redis
                     127.0.0.1:6379, NATS JetStream 127.0.0.1:4222, static discovery
                     and files in a local directory; pushes to the other edge go
                     through JetStream and the sync process
  cluster-direct     ``--cluster --delivery direct``: the writing edge calls the other
                     edge's session over gRPC

``--database-url URL`` replaces the fresh MariaDB database (kept, not dropped) in
the mariadb and cluster modes. ``--modes sqlite,mariadb,cluster-pipeline,
cluster-direct`` runs each size in each mode (a fresh server and database each)
and prints, below the table, each mode's ratios to the first one per size. In
the cluster modes the clients connect round robin to the two gateways, so the two
users of every pair are on different edges: each message crosses processes
(``--same-edge``: on one edge, pairs alternating, so nothing crosses but the
shared database).

Columns (one row per size and mode):

  mode               as above (embedded-sqlite, embedded-mariadb, cluster-...)
  clients            connected, signed-in clients (= users = auth keys = connections)
  delivered          messages the recipients received in the run (each counted once)
  msg/s              delivered / the whole run: from "go" until every client process
                     has its last delivery (or gave up waiting)
  e2e p50/p99 ms     delivery latency: sender starts sendMessage -> the recipient's
                     connection has decoded the pushed update
  answer p50/p99 ms  the sender's round trip: sendMessage -> updateShortSentMessage
  srv CPU us/msg     server process CPU (user+sys) / delivered; a cluster's is the sum
                     over the supervisor and every process below it
  srv CPU            server CPU seconds per wall second (1.0 = one core busy)
  eng CPU            the same for the engine processes the mode uses (mariadbd,
                     redis-server, nats-server: found by name, so anything else using
                     them meanwhile counts too); "-" for SQLite
  cli CPU us/msg     CPU of all client processes / delivered (they share the machine)
  srv RSS MiB        server resident memory at the end of the run (summed in a cluster)
  commits            group-commit transactions in the run; ops/commit: writes per
                     transaction (the server's GroupCommit counters, read through
                     bench/_commit_stats.py, summed over a cluster's processes; "-"
                     with --no-commit-stats)
  lost               answered sends never delivered (within the wait)
  errors             failed sends (rpc errors such as FLOOD_WAIT, timeouts) and lost
                     connections

Below the table, per size: how long the untimed sign-up took (about a minute for
1,000 clients on 2 cores; the default run takes about 2 minutes), answered vs
delivered counts, the slowest delivery, CPU used by other programs meanwhile
("other CPU": noise, without the engines' CPU), and anything odd: FLOOD_WAITs,
duplicate or misrouted deliveries, other pushed updates, server warnings, INTERNAL
answers retried during the untimed sign-up, in a cluster the CPU of each process
and the kept cluster log, a saturated server (when the answer latency exceeds the
send window, each client gets about one message through
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
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _accounts import DEV_CODE, sign_up
from _server import (
    ROOT,
    ProcSample,
    ServerError,
    ServerProcess,
    install_sigterm,
    machine_note,
    percentile,
    run_clients,
    sample_process,
    split,
    table,
    use_bytecode_cache,
    worker_main,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from teamgram.infra.database import normalize_url
from teamgram.testing.cluster import Cluster
from teamgram.testing.mtclient import MTClient, RpcErrorReply, load_public_key
from teamgram.tl import functions, types

HERE = Path(__file__).resolve().parent
CLIENT_TIMEOUT = 60.0  # one request (sign-up steps can queue behind 1,000 handshakes)
CONNECT_ATTEMPTS = 3
INTERNAL_ATTEMPTS = 5
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
T = TypeVar("T")
MODES = ("sqlite", "mariadb", "cluster-pipeline", "cluster-direct")
MARIADB_ADMIN_URL = os.environ.get(
    "TEAMGRAM_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/"
)
REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"
CLUSTER_START_TIMEOUT = 120.0  # four processes compiling and connecting on 2 cores


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
    internal_retries: Counter[str] = field(default_factory=Counter)  # untimed steps redone

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
    host, ports = spec["host"], spec["ports"]
    tally = Tally()
    seqs = itertools.count(1)
    opened: list[MTClient] = []

    async def connect(port: int) -> MTClient:
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

    async def again_on_internal(what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again after an INTERNAL answer: on MariaDB, concurrent sign-ups
        and contact imports can deadlock in the server (InnoDB 1213, answered as
        INTERNAL). Untimed preparation, so the bench tries again and counts it."""
        for attempt in range(1, INTERNAL_ATTEMPTS + 1):
            try:
                return await call()
            except RpcErrorReply as exc:
                if exc.message != "INTERNAL" or attempt == INTERNAL_ATTEMPTS:
                    raise
                tally.internal_retries[what] += 1
        raise AssertionError("unreachable")

    async def sign_up_endpoint(phone: str, port: int) -> Endpoint:
        c = await connect(port)
        return Endpoint(c, await again_on_internal("sign-up", lambda: sign_up(c, phone)), phone)

    async def meet(a: Endpoint, b: Endpoint) -> None:
        """``a`` learns ``b``'s access hash by importing ``b``'s phone."""
        contact = types.InputPhoneContact(client_id=0, phone=b.phone, first_name="P", last_name="")
        found = await again_on_internal(
            "contacts.importContacts",
            lambda: a.client.invoke(functions.contacts.ImportContacts(contacts=[contact])),
        )
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
                # Round robin over the gateways: the two users of a pair (i, i+1)
                # are on different ones when there are two (--same-edge: one each).
                turn = i // 2 if spec["same_edge"] else i
                return await sign_up_endpoint(f"{prefix}{i:04d}", ports[turn % len(ports)])

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
        for pid in spec.get("signal_pids", ()):  # the servers' commit counters, at "go"
            os.kill(pid, signal.SIGUSR1)
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
            "internal_retries": dict(tally.internal_retries),
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


# -- modes: where the server runs and on what ------------------------------------------


@dataclass(frozen=True)
class Mode:
    """One way of running the server; ``database_url`` empty: a fresh one (or SQLite)."""

    name: str  # one of MODES
    database_url: str = ""

    @property
    def cluster(self) -> bool:
        return self.name.startswith("cluster-")

    @property
    def delivery(self) -> str:
        return self.name.removeprefix("cluster-")

    @property
    def label(self) -> str:
        if self.name == "sqlite":
            return "embedded-sqlite"
        if self.name == "mariadb":
            if self.database_url:
                return f"embedded-{make_url(self.database_url).get_backend_name()}"
            return "embedded-mariadb"
        return self.name

    @property
    def engines(self) -> tuple[str, ...]:
        """Process names (/proc/PID/comm) of the engines this mode leans on."""
        if self.name == "sqlite":
            return ()
        backend = make_url(self.database_url).get_backend_name() if self.database_url else ""
        db = ("postgres",) if backend == "postgresql" else ("mariadbd", "mysqld")
        return db + (("redis-server", "nats-server") if self.cluster else ())


def fresh_database() -> str:
    """A new empty MariaDB database (as the integration tests make them); its URL."""
    admin = normalize_url(MARIADB_ADMIN_URL)
    name = f"tg_bench_{secrets.token_hex(6)}"
    asyncio.run(
        _admin(admin, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    )
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    name = make_url(url).database
    assert name is not None and name.startswith("tg_bench_"), name
    asyncio.run(_admin(normalize_url(MARIADB_ADMIN_URL), f"DROP DATABASE IF EXISTS `{name}`"))


async def _admin(admin: Any, statement: str) -> None:
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await asyncio.wait_for(conn.exec_driver_sql(statement), 60)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def database_for(mode: Mode) -> Iterator[str]:
    """The mode's database URL ("" for SQLite); a fresh one is dropped afterwards."""
    if mode.name == "sqlite":
        yield ""
    elif mode.database_url:
        yield mode.database_url
    else:
        url = fresh_database()
        try:
            yield url
        finally:
            drop_database(url)


class EngineCpu:
    """CPU of the engine processes (MariaDB, Redis, NATS) a mode uses: outside the
    server, but part of what the load costs; noted at every server sample."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.pids: list[int] = []
        for comm in Path("/proc").glob("[0-9]*/comm"):
            with contextlib.suppress(OSError):
                if comm.read_text().strip() in names:
                    self.pids.append(int(comm.parent.name))
        self.marks: list[float] = []

    def note(self) -> None:
        cpu = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError, ValueError):
                cpu += sample_process(pid).cpu_s
        self.marks.append(cpu)

    def used_s(self) -> float:
        """CPU seconds between the last two notes: run_clients samples the server right
        before "go" and right after the last result, and nothing samples it after."""
        if not self.pids or len(self.marks) < 2:
            return float("nan")
        return self.marks[-1] - self.marks[-2]


class EmbeddedServer(ServerProcess):
    """``teamgramd serve`` (SQLite or a shared database), engines' CPU noted too."""

    def __init__(self, *, engines: EngineCpu, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engines = engines

    def sample(self) -> ProcSample:
        got = super().sample()
        self.engines.note()
        return got

    def commit_pids(self) -> dict[str, int]:
        return {"server": self.pid}


class ClusterServer(ServerProcess):
    """``teamgramd cluster`` (two edges and a sync, teamgram.testing.Cluster) standing
    in for the one server process: its pid is the supervisor's, a sample adds up
    the supervisor and every process below it, and the log is the cluster's."""

    def __init__(
        self,
        *,
        engines: EngineCpu,
        database_url: str,
        delivery: str,
        env: dict[str, str],
        python_flags: tuple[str, ...],
        process_env: dict[str, dict[str, str]],
    ) -> None:
        super().__init__(env=env, python_flags=python_flags, start_timeout=CLUSTER_START_TIMEOUT)
        self.engines = engines
        self.database_url = database_url
        self.delivery = delivery
        self.process_env = process_env
        self.cluster: Cluster | None = None
        self.workdir: Path | None = None
        self.tcp_ports: list[int] = []
        self.kept_log: Path | None = None
        self.per_process: list[dict[int, float]] = []  # CPU seconds per pid, per sample

    @property
    def pid(self) -> int:
        if self.cluster is None:
            raise ServerError("cluster not started")
        return self.cluster.supervisor_pid

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="teamgram-bench-cluster-"))
        use_bytecode_cache()
        env = dict(self.env_overrides)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        for flags, module in ((self.python_flags, "teamgram.cli"), ([], "teamgram.testing")):
            subprocess.run(  # compile once, outside the timing (as ServerProcess does)
                [sys.executable, *flags, "-c", f"import {module}, teamgram.server"],
                cwd=ROOT,
                env={**os.environ, **env},
                check=True,
                timeout=self.start_timeout,
            )
        self.cluster = Cluster(
            self.workdir,
            database_url=self.database_url,
            redis_url=REDIS_URL,
            nats_url=NATS_URL,
            etcd_endpoints=[],  # static discovery: the rpc addresses, listed
            files=None,  # a local directory: text needs no object store
            delivery=self.delivery,
            login_code=DEV_CODE,
            env=env,
            python_flags=self.python_flags,
            process_env=self.process_env,
        )
        try:
            asyncio.run(self.cluster.start(timeout=self.start_timeout))
        except (RuntimeError, TimeoutError) as exc:
            raise ServerError(str(exc)) from exc
        self.tcp_ports = list(self.cluster.tcp_ports)
        self.tcp_port = self.tcp_ports[0]
        self.key_pem = (self.cluster.data_dir / "server_key.pem").read_bytes()

    def sample(self) -> ProcSample:
        c = self.cluster
        if c is None or c.proc is None or c.proc.poll() is not None:
            raise ServerError(f"the cluster is not running:\n{self.log()}")
        at = time.perf_counter()
        cpu = 0.0
        rss = hwm = 0
        per: dict[int, float] = {}
        for pid in c.pids():
            with contextlib.suppress(OSError, ValueError):  # gone meanwhile
                s = sample_process(pid)
                per[pid] = s.cpu_s
                cpu += s.cpu_s
                rss += s.rss_kib
                hwm += s.hwm_kib
        self.per_process.append(per)
        self.engines.note()
        return ProcSample(at, cpu, rss, hwm)

    def commit_pids(self) -> dict[str, int]:
        assert self.cluster is not None
        return {name: self.cluster.pid(name) for name in self.process_env}

    def collect_log(self) -> None:
        """The cluster log's level counts and last lines, as ServerProcess keeps them."""
        if self.cluster is None:
            return
        level = re.compile(r" (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
        self.log_counts = {}
        self.log_tail.clear()
        for line in self.cluster.log_text().splitlines():
            self.log_tail.append(line)
            m = level.search(line)
            if m:
                self.log_counts[m.group(1)] = self.log_counts.get(m.group(1), 0) + 1

    def process_shares(self, wall_s: float) -> str:
        """Cores used by each process between the last two samples."""
        if self.cluster is None or len(self.per_process) < 2 or wall_s <= 0:
            return ""
        names = {self.cluster.supervisor_pid: "supervisor"}
        for name, pids in self.cluster.ready_pids().items():
            names.update(dict.fromkeys(pids, name))
        before, after = self.per_process[-2], self.per_process[-1]
        parts = [
            f"{names.get(pid, str(pid))} {(cpu - before.get(pid, 0.0)) / wall_s:.2f}"
            for pid, cpu in after.items()
        ]
        return ", ".join(parts)

    def restarts(self) -> dict[str, int]:
        if self.cluster is None:
            return {}
        return {n: len(p) - 1 for n, p in self.cluster.ready_pids().items() if len(p) > 1}

    def stop(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            asyncio.run(cluster.stop())
            if cluster.log_path.exists():
                fd, name = tempfile.mkstemp(prefix="teamgram-bench-cluster-", suffix=".log")
                os.close(fd)
                shutil.copyfile(cluster.log_path, name)
                self.kept_log = Path(name)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


# -- one size in one mode ---------------------------------------------------------------


@dataclass
class SizeResult:
    row: list[object]
    notes: list[str]
    errors: list[str]


def start_server(
    mode: Mode, database_url: str, counters: dict[str, CommitCounters]
) -> EmbeddedServer | ClusterServer:
    """The mode's server, not yet started; ``counters`` names its processes."""
    engines = EngineCpu(mode.engines)
    env = dict(BENCH_ENV)
    flags: tuple[str, ...] = (str(HERE / "_commit_stats.py"),) if counters else ()
    if mode.cluster:
        return ClusterServer(
            engines=engines,
            database_url=database_url,
            delivery=mode.delivery,
            env=env,
            python_flags=flags,
            process_env={n: {COMMIT_STATS_ENV: str(c.path)} for n, c in counters.items()},
        )
    if database_url:
        env["TEAMGRAM_DATABASE_URL"] = database_url
    if counters:
        env[COMMIT_STATS_ENV] = str(counters["server"].path)
    return EmbeddedServer(engines=engines, env=env, python_flags=flags)


def run_size(size: int, args: argparse.Namespace, mode: Mode) -> SizeResult:
    """One fresh server (and database), ``size`` clients signed up, ``args.seconds``
    of messaging."""
    pairs = size // 2
    procs = max(1, min(args.client_procs, pairs))
    prefix = f"42{random.randrange(10**6):06d}"  # phones: prefix + process (2) + index (4)
    names = ["edge0", "edge1", "sync"] if mode.cluster else ["server"]
    counters = {} if args.no_commit_stats else {n: CommitCounters() for n in names}
    notes: list[str] = []
    try:
        with database_for(mode) as url:
            srv = start_server(mode, url, counters)
            with srv:
                ports = srv.tcp_ports if isinstance(srv, ClusterServer) else [srv.tcp_port]
                commit_pids = srv.commit_pids() if counters else {}
                specs = [
                    {
                        "host": srv.host,
                        "ports": ports,
                        "key_pem": srv.key_pem,
                        "pairs": n,
                        "same_edge": args.same_edge,
                        "seconds": args.seconds,
                        "inflight": args.in_flight,
                        "phone_prefix": f"{prefix}{i:02d}",
                        "signal_pids": list(commit_pids.values()) if i == 0 else [],
                    }
                    for i, n in enumerate(split(pairs, procs))
                ]
                before = {n: len(c.lines()) for n, c in counters.items()}
                print(
                    f"{mode.label}, {size:,} clients: server pid {srv.pid}, gateways {ports}; "
                    f"signing up {size:,} users...",
                    flush=True,
                )
                run = run_clients(
                    message_worker,
                    specs,
                    srv,
                    prepare_timeout=120 + size * 0.3,
                    run_timeout=args.seconds + DRAIN_TIMEOUT + CLIENT_TIMEOUT + 30,
                )
                commits, per_commit = read_commits(counters, commit_pids, before, notes)
                if isinstance(srv, ClusterServer):
                    srv.collect_log()
                    notes.append(
                        f"CPU per process (cores): {srv.process_shares(run.server.wall_s)}"
                    )
                    if restarted := srv.restarts():
                        notes.append(f"processes restarted: {restarted}")
                warnings = srv.log_counts.get("WARNING", 0) + srv.log_counts.get("ERROR", 0)
                warning_lines = [
                    line for line in srv.log_tail if " WARNING " in line or " ERROR " in line
                ][:3]
                engine_s = srv.engines.used_s()
    finally:
        for c in counters.values():
            c.close()
    if isinstance(srv, ClusterServer) and srv.kept_log is not None:
        notes.append(f"cluster log kept in {srv.kept_log}")

    results = run.results
    delivery = [x for r in results for x in r["delivery_ms"]]
    answer = [x for r in results for x in r["answer_ms"]]
    delivered = sum(r["delivered"] for r in results)
    lost = sum(r["lost"] for r in results)
    errors = sum(r["error_count"] + r["closed"] for r in results)
    s = run.server
    per_msg = 1e6 / delivered if delivered else float("nan")
    engine_share = engine_s / s.wall_s if s.wall_s > 0 else float("nan")
    row: list[object] = [
        mode.label,
        size,
        delivered,
        delivered / s.wall_s if s.wall_s > 0 else float("nan"),
        percentile(delivery, 50),
        percentile(delivery, 99),
        percentile(answer, 50),
        percentile(answer, 99),
        s.cpu_s * per_msg,
        s.cpu_share,
        engine_share,
        run.client_cpu_s * per_msg,
        s.rss_kib / 1024,
        commits,
        per_commit,
        lost,
        errors,
    ]
    other = run.other_cpu_share - (engine_share if engine_share == engine_share else 0.0)
    warm_sent = sum(r["warm"][0] for r in results)
    warm_got = sum(r["warm"][1] for r in results)
    prepare_s = max(r["prepare_s"] for r in results)
    notes.append(
        f"sign-up, contacts and warm-up (untimed) took {prepare_s:.1f} s; warm-up messages "
        f"answered {warm_sent:,}/{size:,}, delivered {warm_got:,}"
    )
    retries: Counter[str] = Counter()
    for r in results:
        retries.update(r["internal_retries"])
    if retries:
        notes.append(
            f"answered INTERNAL during the untimed preparation, tried again: {dict(retries)} "
            "(see the server log: database deadlocks?)"
        )
    sent = sum(r["sent"] for r in results)
    notes.append(
        f"run {s.wall_s:.1f} s (senders stopped after {max(r['sent_s'] for r in results):.1f} s); "
        f"answered {sent:,}, delivered {delivered:,}, lost {lost:,}; "
        f"max e2e {max(delivery, default=float('nan')):.1f} ms, "
        f"max answer {max(answer, default=float('nan')):.1f} ms; "
        f"other CPU {max(0.0, other):.2f} cores"
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


def read_commits(
    counters: dict[str, CommitCounters],
    pids: dict[str, int],
    before: dict[str, int],
    notes: list[str],
) -> tuple[float, float]:
    """Group commits and writes per commit since "go", summed over the processes."""
    if not counters:
        return float("nan"), float("nan")
    for pid in pids.values():
        os.kill(pid, signal.SIGUSR1)
    batches = ops = 0
    for name, c in counters.items():
        got = c.wait(before[name] + 2)
        if got is None:
            notes.append(f"group-commit counters: no answer from {name}")
            return float("nan"), float("nan")
        (b0, o0), (b1, o1) = got[before[name]], got[before[name] + 1]
        batches += b1 - b0
        ops += o1 - o0
    return float(batches), ops / batches if batches else float("nan")


# -- command line -------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    sizes = [int(x) for x in text.split(",") if x.strip()]
    for n in sizes:
        if n < 2 or n % 2:
            raise argparse.ArgumentTypeError(f"a size is an even number of clients >= 2: {n}")
    return sizes


def parse_modes(text: str) -> list[str]:
    modes = [x.strip() for x in text.split(",") if x.strip()]
    for m in modes:
        if m not in MODES:
            raise argparse.ArgumentTypeError(f"a mode is one of {', '.join(MODES)}: {m}")
    return modes


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {n}")
    return n


def chosen_modes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Mode]:
    if args.delivery and not args.cluster:
        parser.error("--delivery goes with --cluster (or name cluster-direct in --modes)")
    if args.modes:
        if args.cluster or args.mariadb:
            parser.error("--modes replaces --cluster and --mariadb")
        names = args.modes
    elif args.cluster:
        names = [f"cluster-{args.delivery or 'pipeline'}"]
    elif args.mariadb or args.database_url:
        names = ["mariadb"]
    else:
        names = ["sqlite"]
    return [Mode(n, args.database_url) for n in names]


def ratios(rows: list[list[object]]) -> list[str]:
    """Each mode against the first one, per size: msg/s and e2e/answer percentiles."""
    out = []
    first: dict[object, list[object]] = {}
    for row in rows:
        first.setdefault(row[1], row)
    for row in rows:
        base = first[row[1]]
        if row is base:
            continue

        def r(i: int, row: list[object] = row, base: list[object] = base) -> str:
            a, b = row[i], base[i]
            assert isinstance(a, int | float) and isinstance(b, int | float)
            return f"x{a / b:.2f}" if b else "-"

        out.append(
            f"{row[0]} / {base[0]} at {row[1]:,} clients: msg/s {r(3)}, e2e p50 {r(4)}, "
            f"e2e p99 {r(5)}, answer p50 {r(6)}, answer p99 {r(7)}, srv CPU us/msg {r(8)}"
        )
    return out


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
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="teamgramd cluster: two edges and a sync on MariaDB, Redis, NATS",
    )
    parser.add_argument(
        "--delivery", choices=("pipeline", "direct"), help="the cluster's delivery (pipeline)"
    )
    parser.add_argument(
        "--same-edge",
        action="store_true",
        help="cluster: both users of a pair on one edge (pairs alternate between edges)",
    )
    parser.add_argument(
        "--mariadb", action="store_true", help="the embedded server on a fresh MariaDB database"
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="this database (kept) instead of a fresh MariaDB one, embedded or cluster",
    )
    parser.add_argument(
        "--modes",
        type=parse_modes,
        help=f"several modes, each size in each (ratios against the first): {','.join(MODES)}",
    )
    args = parser.parse_args(argv)
    modes = chosen_modes(args, parser)
    install_sigterm()

    rows: list[list[object]] = []
    notes: list[str] = []
    errors: list[str] = []
    print(machine_note(args.client_procs))
    if any(m.cluster for m in modes):
        print(
            "cluster: the server is 4 processes (supervisor, edge0 and edge1 each gnetway+"
            "session+bff+httpserver, sync); the two users of a pair are on "
            + ("one edge (--same-edge)" if args.same_edge else "different edges")
        )
    print(f"server settings changed: {BENCH_ENV}")
    for size in args.sizes:
        for mode in modes:
            res = run_size(size, args, mode)
            rows.append(res.row)
            notes += [f"{mode.label}, {size:,} clients: {n}" for n in res.notes]
            errors += res.errors

    print()
    print(
        table(
            [
                "mode",
                "clients",
                "delivered",
                "msg/s",
                "e2e p50 ms",
                "e2e p99 ms",
                "answer p50 ms",
                "answer p99 ms",
                "srv CPU us/msg",
                "srv CPU",
                "eng CPU",
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
    for line in ratios(rows):
        print(line)
    for n in notes:
        print(n)
    for e in errors[:5]:
        print(f"client error: {e}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
