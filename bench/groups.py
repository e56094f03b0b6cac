"""One sender into a supergroup: message rate, delivery latency to the online members.

    .venv/bin/python bench/groups.py [--sizes 1000:100,200:20] [--seconds 5]
        [--in-flight 2] [--client-procs 2] [--expire-offline]

For each size ``MEMBERS:ONLINE`` a fresh ``teamgramd serve`` starts as its own
process on free loopback ports (SQLite in a temporary data directory). Member
client processes (``--client-procs``) sign up MEMBERS users over the real protocol,
each one TCP connection (intermediate framing) and one auth key: handshake,
``invokeWithLayer(initConnection(auth.sendCode))``, ``auth.signIn`` with the dev
login code, ``auth.signUp``. ONLINE of them keep their connection open; the others
close it right after signing up, so they are members that are offline. A separate
sender process signs up one more user, the sender, who learns every member's
access hash with ``contacts.importContacts`` of their phones, creates a megagroup
(``channels.createChannel(megagroup=True)``) and adds all MEMBERS with
``channels.inviteToChannel`` in chunks of 200 (invites, not ``joinChannel``: the
offline members never need to connect again, and no public username is needed).
A session whose connection closed stays attached to its user on the server for
``session.resend_window_seconds`` (600 s by default, so that a quick reconnect
misses nothing), but channel messages are pushed only to members connected now
(the others catch up with getChannelDifference): the offline members just
disconnected and cost nothing. ``--expire-offline`` lowers that linger to 5 s and
waits (at most 37 s) until the server's session janitor has dropped them, for
comparison. The sender then sends one
untimed warm-up message and the bench waits (at most 15 s) until the online
members have it. None of that is timed.

Then, for ``--seconds``, the sender keeps ``--in-flight`` ``messages.sendMessage``
requests to ``inputPeerChannel`` outstanding, each text holding a sequence number
and the send time. Every online member should get each message pushed as
``updates`` carrying ``updateNewChannelMessage``; after the sender stops, the bench
waits (at most 15 s) until every online member has every answered message.

Columns (one row per size):

  members            users in the group besides the sender (the group has members+1)
  online             members with an open connection: the receivers (the sender is
                     connected too, but not counted here)
  sent               sendMessage requests answered in the window
  msg/s              sent / the sender's window (from "go" until its last answer)
  deliveries         measured messages decoded at the online members (each message
                     counted once per member)
  deliveries/s       deliveries / (from "go" until the last delivery at any member)
  e2e p50/p99 ms     delivery latency: the sender starts sendMessage -> an online
                     member's connection has decoded the pushed update
  answer p50/p99 ms  the sender's round trip: sendMessage -> its answer (``updates``)
  srv CPU us/msg     server process CPU (user+sys) / sent, from "go" until the last
                     member stopped waiting (so it includes the fan-out)
  srv CPU            server CPU seconds per wall second of that window (1.0 = a core)
  srv RSS MiB        server resident memory at the end of the run
  lost               expected deliveries (sent x online) not received within the wait
  dup/misrouted      messages a member got twice / messages that arrived with the
                     wrong channel, the wrong sender or the ``out`` flag set
  errors             failed sends (rpc errors such as FLOOD_WAIT, timeouts) and closed
                     connections (sender or online members)

Below the table, per size: how long the untimed sign-up and group setup took
(a default run takes about 2 minutes on 2 cores), the wait for the offline
sessions to expire, the warm-up delivery, the window, the slowest delivery, client
and other CPU, and anything odd: other updates pushed to the members during the
run (e.g. ``updateChannelTooLong``), channel pts gaps or reorderings at a member
(a real client would call ``updates.getChannelDifference``), unexpected answers,
deliveries of sends that were not answered, server warnings, a saturated sender
(when the answer latency exceeds the send window).

Sign-up limits, the per-account send rate, the per-IP connection cap and the
per-connection packet flood limit are raised (one loopback address, thousands of
sign-ups and messages), exactly as in bench/messaging.py, and the session linger
is lowered (above); everything else is the server's default. Client and server
share this machine's cores, so on small machines the rates are machine-bound.
Every process stops by itself: the workers exit when the bench's pipe closes, the
server gets SIGTERM (see bench/_server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import random
import resource
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _accounts import DEV_CODE, sign_up
from _server import (
    ServerError,
    ServerProcess,
    install_sigterm,
    machine_busy_s,
    machine_note,
    percentile,
    table,
)

from teamgram.testing.mtclient import MTClient, RpcErrorReply, load_public_key
from teamgram.tl import functions, types

CLIENT_TIMEOUT = 60.0  # one request (sign-up steps can queue behind 1,000 handshakes)
CONNECT_ATTEMPTS = 3
SIGNUP_CONCURRENCY = 32  # clients signing up at once per client process
DRAIN_TIMEOUT = 15.0  # after the sender stops: how long to wait for the last deliveries
WARM_TIMEOUT = 15.0
IMPORT_CHUNK = 500  # phones per contacts.importContacts
INVITE_CHUNK = 200  # users per channels.inviteToChannel (Telegram's limit)
IDLE_TIMEOUT = 900.0  # a worker waiting this long for a command gives up and exits
BENCH_ENV = {
    "TEAMGRAM_DEV_LOGIN_CODE": DEV_CODE,
    "TEAMGRAM_AUTH_SEND_CODE_PER_IP": "1000000",
    "TEAMGRAM_MESSAGES_SEND_PER_SECOND": "1000000",
    "TEAMGRAM_MESSAGES_SEND_BURST": "1000000",
    "TEAMGRAM_GNETWAY_MAX_CONNECTIONS_PER_IP": "100000",
    "TEAMGRAM_GNETWAY_FLOOD_PACKETS_PER_SECOND": "10000000",
}
# A session whose connection closed stays attached to its user (and keeps getting
# pushes, for a quick reconnect) for session.resend_window_seconds (600 by default);
# the server's janitor drops such sessions every 30 s. Lowered, so that the members
# who disconnected are gone from the server too, with --expire-offline.
SESSION_LINGER_S = 5
JANITOR_PERIOD_S = 30.0  # teamgram/interface/session/host.py: _expire_loop
EXPIRY_ENV = {"TEAMGRAM_SESSION_RESEND_WINDOW_SECONDS": str(SESSION_LINGER_S)}
WARM, MEASURED = "w", "m"  # first word of a message's text
SENDER_PROC = 99  # the sender's phone: prefix + "99" + "0000"


# --------------------------------------------------------------------------- client side


def _own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _connect(spec: dict[str, Any], opened: list[MTClient]) -> MTClient:
    keys = load_public_key(spec["key_pem"])
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            c = await MTClient.connect(spec["host"], spec["port"], keys, timeout=CLIENT_TIMEOUT)
        except (OSError, TimeoutError, AssertionError, ValueError):
            if attempt == CONNECT_ATTEMPTS:
                raise
            continue
        opened.append(c)
        return c
    raise AssertionError("unreachable")


def _updates_of(obj: Any) -> list[Any] | None:
    """The update list of a pushed ``Updates`` object; None for other constructors."""
    if isinstance(obj, types.Updates | types.UpdatesCombined):
        return list(obj.updates)
    if isinstance(obj, types.UpdateShort):
        return [obj.update]
    return None


@dataclass(eq=False)
class Member:
    """One online member's connection and what it received."""

    client: MTClient
    user_id: int
    seen: dict[str, set[int]] = field(default_factory=lambda: {WARM: set(), MEASURED: set()})
    pts: int = 0  # the channel pts of the last updateNewChannelMessage


@dataclass
class MemberTally:
    """What one member process saw since the last reset."""

    delivery_ns: list[int] = field(default_factory=list)
    last_delivery_ns: int = 0
    duplicates: int = 0
    misrouted: int = 0
    other_updates: Counter[str] = field(default_factory=Counter)
    pts_gaps: int = 0  # pts != previous pts + pts_count (a real client would fetch a diff)


class MemberWorker:
    """Member process: sign up users, keep some online, record channel messages."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.opened: list[MTClient] = []
        self.online: list[Member] = []
        self.channel_id = 0
        self.sender_id = 0
        self.tally = MemberTally()

    async def cmd_signup(self, arg: None) -> dict[str, Any]:
        """Sign up ``online + offline`` users; the offline ones disconnect at once."""
        started = time.monotonic()
        gate = asyncio.Semaphore(SIGNUP_CONCURRENCY)
        prefix, n_online = self.spec["phone_prefix"], self.spec["online"]

        async def one(i: int) -> tuple[str, int, MTClient | None]:
            phone = f"{prefix}{i:04d}"
            async with gate:
                c = await _connect(self.spec, self.opened)
                uid = await sign_up(c, phone)
                if i >= n_online:
                    await c.close()
                    return phone, uid, None
                return phone, uid, c

        got = await asyncio.gather(*(one(i) for i in range(n_online + self.spec["offline"])))
        self.online = [Member(c, uid) for _, uid, c in got if c is not None]
        return {
            "phones": [p for p, _, _ in got],
            "user_ids": [uid for _, uid, _ in got],
            "signup_s": time.monotonic() - started,
        }

    async def cmd_arm(self, arg: dict[str, int]) -> None:
        """From now on, decode every channel message pushed to an online member."""
        self.channel_id, self.sender_id = arg["channel_id"], arg["sender_id"]
        for m in self.online:
            m.client.on_update = self._hook(m)
            for obj in m.client.stats.other:  # pushed before: the invite, mostly
                items = _updates_of(obj)
                for u in items if items is not None else [obj]:
                    self.tally.other_updates[type(u).__name__] += 1

    def _hook(self, m: Member) -> Callable[[Any], None]:
        def on_update(obj: Any) -> None:
            now = time.monotonic_ns()
            items = _updates_of(obj)
            if items is None:
                self.tally.other_updates[type(obj).__name__] += 1
                return
            for u in items:
                if isinstance(u, types.UpdateNewChannelMessage):
                    if m.pts and u.pts != m.pts + u.pts_count:
                        self.tally.pts_gaps += 1
                    m.pts = max(m.pts, u.pts)
                if isinstance(u, types.UpdateNewChannelMessage) and isinstance(
                    u.message, types.Message
                ):
                    self._message(m, u.message, now)
                else:
                    self.tally.other_updates[type(u).__name__] += 1

        return on_update

    def _message(self, m: Member, msg: types.Message, now: int) -> None:
        parts = msg.message.split()
        if len(parts) != 3 or parts[0] not in m.seen:
            self.tally.other_updates["updateNewChannelMessage (not the bench's)"] += 1
            return
        tag, seq, sent_at = parts[0], int(parts[1]), int(parts[2])
        peer, sender = msg.peer_id, msg.from_id
        if (
            msg.out
            or not isinstance(peer, types.PeerChannel)
            or peer.channel_id != self.channel_id
            or not isinstance(sender, types.PeerUser)
            or sender.user_id != self.sender_id
        ):
            self.tally.misrouted += 1
            return
        seen = m.seen[tag]
        if seq in seen:
            self.tally.duplicates += 1
            return
        seen.add(seq)
        if tag == MEASURED:
            self.tally.delivery_ns.append(now - sent_at)
            self.tally.last_delivery_ns = now

    async def cmd_wait_warm(self, arg: dict[str, float]) -> dict[str, Any]:
        """Wait until every online member has the warm-up message (seq 0); then reset."""
        deadline = time.monotonic() + arg["timeout"]
        while time.monotonic() < deadline and not all(0 in m.seen[WARM] for m in self.online):
            await asyncio.sleep(0.01)
        got = sum(0 in m.seen[WARM] for m in self.online)
        before = dict(self.tally.other_updates)
        self.tally = MemberTally()
        return {"warm_delivered": got, "other_updates": before}

    async def cmd_drain(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Wait (until ``until_ns``) for every expected message at every online member."""
        expected: set[int] = set(arg["expected"])
        pending = list(self.online)
        while pending and time.monotonic_ns() < arg["until_ns"]:
            pending = [
                m
                for m in pending
                if not m.client.closed
                and (len(m.seen[MEASURED]) < len(expected) or not expected <= m.seen[MEASURED])
            ]
            if pending:
                await asyncio.sleep(0.02)
        t = self.tally
        got = [m.seen[MEASURED] for m in self.online]
        return {
            "delivery_ms": [x / 1e6 for x in t.delivery_ns],
            "deliveries": sum(len(s & expected) for s in got),
            "unanswered_delivered": sum(len(s - expected) for s in got),
            "lost": sum(len(expected - s) for s in got),
            "members_missing_some": sum(1 for s in got if not expected <= s),
            "last_delivery_ns": t.last_delivery_ns,
            "duplicates": t.duplicates,
            "misrouted": t.misrouted,
            "pts_gaps": t.pts_gaps,
            "other_updates": dict(t.other_updates),
            "closed": sum(m.client.closed for m in self.online),
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.opened), return_exceptions=True)


class SenderWorker:
    """Sender process: sign up, build the group, send."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.opened: list[MTClient] = []
        self.client: MTClient | None = None
        self.user_id = 0
        self.peer: types.InputPeerChannel | None = None
        self.errors: list[str] = []
        self.error_count = 0
        self.flood_waits = 0
        self.pushed: Counter[str] = Counter()

    def _error(self, what: str) -> None:
        self.error_count += 1
        if len(self.errors) < 5:
            self.errors.append(what[:200])

    async def cmd_setup(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Sign up, import the members' phones, create the megagroup, invite everyone."""
        started = time.monotonic()
        c = self.client = await _connect(self.spec, self.opened)
        self.user_id = await sign_up(c, f"{self.spec['phone_prefix']}{SENDER_PROC:02d}0000")
        c.on_update = self._on_push
        signed_up = time.monotonic()

        phones: list[str] = arg["phones"]
        wanted = set(arg["user_ids"])
        hashes: dict[int, int] = {}
        for i in range(0, len(phones), IMPORT_CHUNK):
            contacts = [
                types.InputPhoneContact(client_id=n, phone=p, first_name="M", last_name=str(n))
                for n, p in enumerate(phones[i : i + IMPORT_CHUNK], start=i)
            ]
            found = await c.invoke(
                functions.contacts.ImportContacts(contacts=contacts), timeout=CLIENT_TIMEOUT
            )
            for u in found.users:
                if isinstance(u, types.User) and u.id in wanted and u.access_hash is not None:
                    hashes[u.id] = u.access_hash
        if len(hashes) != len(wanted):
            raise RuntimeError(
                f"importContacts gave access hashes for {len(hashes)} of {len(wanted)} members"
            )
        imported = time.monotonic()

        created = await c.invoke(
            functions.channels.CreateChannel(
                title="bench group", about="", megagroup=True, broadcast=False
            ),
            timeout=CLIENT_TIMEOUT,
        )
        chats = [ch for ch in getattr(created, "chats", []) if isinstance(ch, types.Channel)]
        if len(chats) != 1 or chats[0].access_hash is None or not chats[0].megagroup:
            raise RuntimeError(f"createChannel: unexpected answer {created!r}"[:400])
        channel = chats[0]
        assert channel.access_hash is not None
        input_channel = types.InputChannel(channel_id=channel.id, access_hash=channel.access_hash)
        self.peer = types.InputPeerChannel(channel_id=channel.id, access_hash=channel.access_hash)
        created_at = time.monotonic()

        ids = list(arg["user_ids"])
        missing = 0
        answers: Counter[str] = Counter()
        for i in range(0, len(ids), INVITE_CHUNK):
            users = [
                types.InputUser(user_id=uid, access_hash=hashes[uid])
                for uid in ids[i : i + INVITE_CHUNK]
            ]
            invited = await c.invoke(
                functions.channels.InviteToChannel(channel=input_channel, users=users),
                timeout=CLIENT_TIMEOUT,
            )
            answers[type(invited).__name__] += 1
            missing += len(getattr(invited, "missing_invitees", []) or [])
        if missing:
            raise RuntimeError(f"inviteToChannel: {missing} missing invitees")
        invited_at = time.monotonic()

        participants: int | None = None
        note = ""
        try:
            full = await c.invoke(
                functions.channels.GetFullChannel(channel=input_channel), timeout=CLIENT_TIMEOUT
            )
            participants = getattr(full.full_chat, "participants_count", None)
        except (RpcErrorReply, TimeoutError) as exc:
            note = f"channels.getFullChannel failed: {exc}"
        return {
            "sender_id": self.user_id,
            "channel_id": channel.id,
            "signup_s": signed_up - started,
            "import_s": imported - signed_up,
            "create_s": created_at - imported,
            "invite_s": invited_at - created_at,
            "invite_answers": dict(answers),
            "participants": participants,
            "note": note,
        }

    def _on_push(self, obj: Any) -> None:
        items = _updates_of(obj)
        for u in items if items is not None else [obj]:
            self.pushed[type(u).__name__] += 1

    async def _send(self, tag: str, seq: int) -> tuple[int, Any] | None:
        """One sendMessage; (answer latency ns, answer) or None on failure."""
        assert self.client is not None and self.peer is not None, "setup first"
        t0 = time.monotonic_ns()
        request = functions.messages.SendMessage(
            peer=self.peer, message=f"{tag} {seq} {t0}", random_id=random.getrandbits(63)
        )
        try:
            answer = await self.client.invoke(request, timeout=CLIENT_TIMEOUT)
        except RpcErrorReply as exc:
            self._error(f"sendMessage: {exc}")
            if exc.message.startswith("FLOOD_WAIT"):
                self.flood_waits += 1
                await asyncio.sleep(0.05)  # not a hot loop; the limits are raised anyway
            return None
        except (TimeoutError, ConnectionError) as exc:
            self._error(f"sendMessage: {type(exc).__name__}: {exc}")
            return None
        return time.monotonic_ns() - t0, answer

    async def cmd_warm(self, arg: None) -> dict[str, Any]:
        got = await self._send(WARM, 0)
        return {"answered": got is not None, "errors": list(self.errors)}

    async def cmd_send(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Keep ``inflight`` sends outstanding for ``seconds``; what was answered."""
        assert self.client is not None
        self.errors, self.error_count, self.flood_waits = [], 0, 0
        self.pushed.clear()
        cpu0 = _own_cpu()
        start = time.monotonic_ns()
        deadline = start + int(arg["seconds"] * 1e9)
        seqs = iter(range(1, 1 << 62))
        answered: list[int] = []
        answer_ns: list[int] = []
        other_answers: Counter[str] = Counter()
        last_answer = start

        async def loop() -> None:
            nonlocal last_answer
            assert self.client is not None
            while time.monotonic_ns() < deadline and not self.client.closed:
                seq = next(seqs)
                got = await self._send(MEASURED, seq)
                if got is None:
                    continue
                answer_ns.append(got[0])
                answered.append(seq)
                last_answer = time.monotonic_ns()
                if not isinstance(got[1], types.Updates):
                    other_answers[type(got[1]).__name__] += 1

        await asyncio.gather(*(loop() for _ in range(arg["inflight"])))
        end = time.monotonic_ns()
        return {
            "start_ns": start,
            "end_ns": end,
            "last_answer_ns": last_answer,
            "attempted": next(seqs) - 1,
            "answered": answered,
            "answer_ms": [x / 1e6 for x in answer_ns],
            "other_answers": dict(other_answers),
            "pushed": dict(self.pushed),
            "errors": list(self.errors),
            "error_count": self.error_count,
            "flood_waits": self.flood_waits,
            "closed": int(self.client.closed),
            "cpu_s": _own_cpu() - cpu0,
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.opened), return_exceptions=True)


def _next_command(conn: Connection) -> tuple[str, Any]:
    if not conn.poll(IDLE_TIMEOUT):
        return "exit", None
    try:
        kind, arg = conn.recv()
    except (EOFError, OSError):  # the bench is gone
        return "exit", None
    return str(kind), arg


def worker(conn: Connection, spec: dict[str, Any]) -> None:
    """Client process body: run commands (``cmd_<name>``) until "exit" or EOF."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        state: MemberWorker | SenderWorker = (
            SenderWorker(spec) if spec["role"] == "sender" else MemberWorker(spec)
        )
        try:
            while True:
                kind, arg = await loop.run_in_executor(None, _next_command, conn)
                if kind == "exit":
                    return
                result = await getattr(state, f"cmd_{kind}")(arg)
                conn.send(("ok", {"value": result, "cpu_s": _own_cpu()}))
        finally:
            await asyncio.wait_for(state.close(), 30)

    try:
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
        asyncio.run(main())
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise
    finally:
        conn.close()


# --------------------------------------------------------------------------- bench side


class WorkerError(RuntimeError):
    """A client process failed, or missed a deadline."""


class Fleet:
    """Client processes driven step by step over pipes; always stopped on exit."""

    def __init__(self, specs: Sequence[dict[str, Any]]) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[tuple[Any, Connection]] = []
        self.cpu_s: dict[int, float] = {}  # each process's CPU so far, as of its last answer
        try:
            for i, spec in enumerate(specs):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=worker, args=(child, spec), name=f"bench-client-{i}")
                p.daemon = True
                p.start()
                child.close()
                self.procs.append((p, parent))
        except BaseException:
            self.stop(clean=False)
            raise

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, et: type[BaseException] | None, *rest: object) -> None:
        self.stop(clean=et is None)

    def call(self, which: Sequence[int], kind: str, arg: Any, timeout: float) -> list[Any]:
        """Send a command to the processes ``which``; their answers, in order."""
        for i in which:
            self.procs[i][1].send((kind, arg))
        deadline = time.monotonic() + timeout
        out = []
        for i in which:
            conn = self.procs[i][1]
            who = f"client process {i} ({kind})"
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise WorkerError(f"{who}: no answer in {timeout:.0f} s")
            try:
                status, value = conn.recv()
            except EOFError:
                raise WorkerError(f"{who}: exited without an answer") from None
            if status == "error":
                raise WorkerError(f"{who} failed:\n{value}")
            self.cpu_s[i] = value["cpu_s"]
            out.append(value["value"])
        return out

    def stop(self, clean: bool) -> None:
        for _, conn in self.procs:
            with contextlib.suppress(Exception):
                conn.send(("exit", None))
        for p, conn in self.procs:
            p.join(35 if clean else 2)  # clean: let them close their connections
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
            conn.close()
        self.procs = []


def even(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` (zeros allowed)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class SizeResult:
    row: list[object]
    notes: list[str]
    errors: list[str]


def run_size(members: int, online: int, args: argparse.Namespace, prefix: str) -> SizeResult:
    """One fresh server, ``members`` signed up, ``online`` of them listening."""
    procs = max(1, min(args.client_procs, online, members))
    notes: list[str] = []
    label = f"{members:,}:{online:,}"
    env = dict(BENCH_ENV) if (not args.expire_offline) else {**BENCH_ENV, **EXPIRY_ENV}
    with ServerProcess(env=env) as srv:
        base = {"host": srv.host, "port": srv.tcp_port, "key_pem": srv.key_pem}
        on, off = even(online, procs), even(members - online, procs)
        specs: list[dict[str, Any]] = [
            {
                **base,
                "role": "member",
                "online": on[i],
                "offline": off[i],
                "phone_prefix": f"{prefix}{i:02d}",
            }
            for i in range(procs)
        ]
        specs.append({**base, "role": "sender", "phone_prefix": prefix})
        member_procs, sender = list(range(procs)), [procs]
        print(
            f"{label}: server pid {srv.pid}; signing up {members:,} members "
            f"({online:,} stay online) and the sender...",
            flush=True,
        )
        with Fleet(specs) as fleet:
            signed = fleet.call(member_procs, "signup", None, 120 + members * 0.3)
            offline_since = time.monotonic()  # every offline member has disconnected
            phones = [p for r in signed for p in r["phones"]]
            user_ids = [u for r in signed for u in r["user_ids"]]
            setup = fleet.call(
                sender,
                "setup",
                {"phones": phones, "user_ids": user_ids},
                120 + members * 0.1,
            )[0]
            arm = {"channel_id": setup["channel_id"], "sender_id": setup["sender_id"]}
            fleet.call(member_procs, "arm", arm, 30)
            expired_wait = 0.0
            if members > online and not (not args.expire_offline):  # until the janitor dropped them
                expired_wait = offline_since + SESSION_LINGER_S + JANITOR_PERIOD_S + 2
                expired_wait = max(0.0, expired_wait - time.monotonic())
                time.sleep(expired_wait)
            warm = fleet.call(sender, "warm", None, CLIENT_TIMEOUT + 5)[0]
            warmed = fleet.call(
                member_procs, "wait_warm", {"timeout": WARM_TIMEOUT}, WARM_TIMEOUT + 10
            )
            srv.check_alive()
            busy = machine_busy_s()
            before = srv.sample()
            cpu_before = sum(fleet.cpu_s.values())
            sent = fleet.call(
                sender,
                "send",
                {"seconds": args.seconds, "inflight": args.in_flight},
                args.seconds + CLIENT_TIMEOUT + 30,
            )[0]
            until_ns = sent["end_ns"] + int(DRAIN_TIMEOUT * 1e9)
            drained = fleet.call(
                member_procs,
                "drain",
                {"expected": sent["answered"], "until_ns": until_ns},
                DRAIN_TIMEOUT + 30,
            )
            used = srv.sample() - before
            busy = machine_busy_s() - busy
            client_cpu = sum(fleet.cpu_s.values()) - cpu_before
        warnings = srv.log_counts.get("WARNING", 0) + srv.log_counts.get("ERROR", 0)
        warning_lines = [line for line in srv.log_tail if " WARNING " in line or " ERROR " in line]

    answered = len(sent["answered"])
    answer = sent["answer_ms"]
    delivery = [x for r in drained for x in r["delivery_ms"]]
    deliveries = sum(r["deliveries"] for r in drained)
    lost = sum(r["lost"] for r in drained)
    dups = sum(r["duplicates"] for r in drained)
    misrouted = sum(r["misrouted"] for r in drained)
    closed = sent["closed"] + sum(r["closed"] for r in drained)
    errors = sent["error_count"] + closed
    window_s = (sent["last_answer_ns"] - sent["start_ns"]) / 1e9
    last_delivery = max((r["last_delivery_ns"] for r in drained), default=0)
    delivery_s = (last_delivery - sent["start_ns"]) / 1e9 if last_delivery else float("nan")
    nan = float("nan")
    row: list[object] = [
        members,
        online,
        answered,
        answered / window_s if window_s > 0 else nan,
        deliveries,
        deliveries / delivery_s if delivery_s > 0 else nan,
        percentile(delivery, 50),
        percentile(delivery, 99),
        percentile(answer, 50),
        percentile(answer, 99),
        used.cpu_s * 1e6 / answered if answered else nan,
        used.cpu_share,
        used.rss_kib / 1024,
        lost,
        f"{dups}/{misrouted}",
        errors,
    ]

    signup_s = max(r["signup_s"] for r in signed)
    notes.append(
        f"sign-up of the members took {signup_s:.1f} s; the sender's sign-up "
        f"{setup['signup_s']:.1f} s, importContacts {setup['import_s']:.1f} s, createChannel "
        f"{setup['create_s']:.2f} s, inviteToChannel x{-(-members // INVITE_CHUNK)} "
        f"{setup['invite_s']:.1f} s (answers {setup['invite_answers']}); participants_count "
        f"{setup['participants']} (expected {members + 1})"
        + (f"; {setup['note']}" if setup["note"] else "")
    )
    if members == online:
        pass
    elif not args.expire_offline:
        notes.append(
            f"the {members - online:,} offline members disconnected less than "
            "session.resend_window_seconds (600) before the run: their sessions were still "
            "attached, not connected"
        )
    else:
        notes.append(
            f"waited {expired_wait:.1f} s more (untimed) so that the offline members' sessions "
            f"had expired (resend_window_seconds={SESSION_LINGER_S} + the 30 s janitor)"
        )
    warm_got = sum(r["warm_delivered"] for r in warmed)
    prep_updates: Counter[str] = Counter()
    for r in warmed:
        prep_updates.update(r["other_updates"])
    notes.append(
        f"warm-up message answered: {warm['answered']}, at {warm_got:,}/{online:,} online "
        f"members within {WARM_TIMEOUT:g} s; updates pushed to the online members during setup: "
        f"{dict(prep_updates) or 'none'}"
    )
    notes.append(
        f"sender window {window_s:.2f} s ({sent['attempted']:,} sends started, {answered:,} "
        f"answered), last delivery {delivery_s:.2f} s after go; expected deliveries "
        f"{answered * online:,}, got {deliveries:,}, lost {lost:,} "
        f"(members missing some: {sum(r['members_missing_some'] for r in drained):,}); "
        f"max e2e {max(delivery, default=nan):.1f} ms, max answer {max(answer, default=nan):.1f} "
        f"ms; client CPU {client_cpu:.1f} s (sender {sent['cpu_s']:.1f} s), other CPU "
        f"{max(0.0, busy - used.cpu_s - client_cpu) / used.wall_s:.2f} cores"
    )
    if answer and percentile(answer, 50) > args.seconds * 1000:
        notes.append(
            "the server is saturated: the answer p50 exceeds the send window, so this row "
            "is one wave of simultaneous sends, not a steady state"
        )
    unanswered = sum(r["unanswered_delivered"] for r in drained)
    if unanswered:
        notes.append(f"deliveries of sends that were not answered: {unanswered:,}")
    if sent["flood_waits"] or dups or misrouted or closed:
        notes.append(
            f"FLOOD_WAIT {sent['flood_waits']:,}, duplicates {dups:,}, misrouted {misrouted:,}, "
            f"closed connections {closed:,}"
        )
    gaps = sum(r["pts_gaps"] for r in drained)
    if gaps:
        notes.append(
            f"pts gaps or reorderings seen by the members: {gaps:,} (updateNewChannelMessage "
            "whose pts is not the previous one + pts_count)"
        )
    run_updates: Counter[str] = Counter()
    for r in drained:
        run_updates.update(r["other_updates"])
    if run_updates:
        notes.append(f"other updates pushed to members during the run: {dict(run_updates)}")
    if sent["other_answers"]:
        notes.append(f"unexpected sendMessage answers: {sent['other_answers']}")
    if warnings:
        notes.append(f"server warnings/errors logged: {warnings}")
        notes += [f"  {line[:240]}" for line in warning_lines[:3]]
    return SizeResult(row, notes, sent["errors"][:5])


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        if not item.strip():
            continue
        members, _, online = item.partition(":")
        m, o = int(members), int(online or members)
        if m < 1 or not 1 <= o <= m:
            raise argparse.ArgumentTypeError(f"MEMBERS:ONLINE with 1 <= ONLINE <= MEMBERS: {item}")
        sizes.append((m, o))
    return sizes


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=[(1000, 100)],
        help="MEMBERS:ONLINE[,MEMBERS:ONLINE...] (default 1000:100)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="sending time per size")
    parser.add_argument(
        "--in-flight", type=positive_int, default=2, help="sendMessage requests outstanding"
    )
    parser.add_argument(
        "--client-procs", type=positive_int, default=2, help="member client processes"
    )
    parser.add_argument(
        "--expire-offline",
        action="store_true",
        help="lower the server's session linger to 5 s and wait until the offline "
        "members' detached sessions are gone before sending",
    )
    args = parser.parse_args(argv)
    install_sigterm()

    prefix = f"43{random.randrange(10**6):06d}"  # phones: prefix + process (2) + index (4)
    rows: list[list[object]] = []
    notes: list[str] = []
    errors: list[str] = []
    print(machine_note(args.client_procs + 1))
    changed = BENCH_ENV if (not args.expire_offline) else {**BENCH_ENV, **EXPIRY_ENV}
    print(f"server settings changed: {changed}")
    failed = 0
    for members, online in args.sizes:
        try:
            res = run_size(members, online, args, prefix)
        except (WorkerError, ServerError) as exc:
            failed += 1
            print(f"{members:,}:{online:,}: FAILED: {exc}", flush=True)
            last = str(exc).strip().splitlines()
            notes.append(f"{members:,}:{online:,}: FAILED: {last[0]} ... {last[-1]}")
            continue
        rows.append(res.row)
        notes += [f"{members:,}:{online:,}: {n}" for n in res.notes]
        errors += res.errors

    print()
    print(
        table(
            [
                "members",
                "online",
                "sent",
                "msg/s",
                "deliveries",
                "deliveries/s",
                "e2e p50 ms",
                "e2e p99 ms",
                "answer p50 ms",
                "answer p99 ms",
                "srv CPU us/msg",
                "srv CPU",
                "srv RSS MiB",
                "lost",
                "dup/misrouted",
                "errors",
            ],
            rows,
        )
    )
    print()
    print(
        f"one sender, {args.in_flight} sendMessage in flight, {args.seconds:g} s per size, "
        "a fresh server each"
    )
    for n in notes:
        print(n)
    for e in errors[:5]:
        print(f"sender error: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
