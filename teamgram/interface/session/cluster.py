"""Split mode's side of the session directory: reaching session processes other than ours.

Several gateway+session processes ("instances") serve one user base, so a push
for a user must reach every instance holding one of the user's connected auth
keys. The pieces, each small:

* :class:`RouteRecorder` (on every session instance) keeps this instance's entries
  in :mod:`teamgram.service.status.routes` in step with its host: a signed-in key
  with a live connection here is announced (and refreshed before its ttl); when
  its last connection closes, or it is signed out or destroyed, it is withdrawn.
  A session kept only for resending (its connection gone) is not routed.
* :class:`SessionPeer` (on every session instance) is what the instance serves
  over rpc as ``interface.session``: batched deliveries, bind and revoke of a
  key, a key's activity.
* :class:`SessionPeers` (any process: an edge, the sync process) finds the
  instances (routes in Redis, addresses in discovery) and calls them: one call
  per instance per batch, every instance concurrently.
* With a NATS connection, batches of pushes skip gRPC: each instance subscribes
  to its own subject (:func:`session_subject`, NATS core, no JetStream) and a
  batch is one publish of the wire-encoded list (a gRPC call costs ~0.25 ms of
  CPU on the caller and ~0.4 ms on the callee; a publish a fraction of that).
  Key operations stay on gRPC: rare, and key_activity needs an answer.
* :class:`ClusterDirectory` is the :class:`~.directory.SessionDirectory` of an
  edge: the local host at once, other instances in the background, batched per
  event-loop tick and sent in order (per instance) by one sender per instance.

Delivery is best effort across processes: an instance that is down or slow is
logged and skipped, never holding up the others. Nothing is lost for good:
updates are durable before they are pushed, and a client that missed one finds
the gap (pts/qts/seq) and fetches it with updates.getDifference (or
getChannelDifference), as after any reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import nats.errors

from teamgram.errors import RpcError
from teamgram.infra import rpc, wire
from teamgram.infra.discovery import Discovery
from teamgram.infra.rpc import Channels, RpcServer, idempotent
from teamgram.service.status.routes import ROUTE_TTL, Refresher, Routes, SessionRoutes
from teamgram.tl import TLObject

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

# The rpc service every session instance serves (and registers in discovery under
# its instance id, the same id its route entries carry).
SERVICE = "interface.session"
# A call to one instance: a slow instance is given up on this soon (its updates
# are recovered by the clients' getDifference).
CALL_DEADLINE = 2.0
# Deliveries per call: bounds a call's size and the receiver's decoding time.
MAX_BATCH = 500
# Deliveries queued for one instance before the oldest are dropped (it is too slow).
MAX_QUEUED = 100_000
# Users per routes lookup: redis-py spends ~20 us of CPU per user of a pipeline
# without yielding, so a big audience is looked up in parts (~4 ms each).
LOOKUP_CHUNK = 200
# The receiver yields to its loop after this many pushes of one call.
DELIVER_YIELD = 200
# Route changes handled between yields to the loop.
RECORD_YIELD = 500
# A key's route outlives its last connection this long (a quick reconnect is no change).
ROUTE_LINGER = 2.0
# A failing instance is logged at most this often (with a count of what was not).
FAIL_LOG_SECONDS = 10.0
# Messages waiting on a session instance's subscription before NATS drops them
# (a slow consumer: best effort, as a failed call).
SUBSCRIPTION_PENDING = 10_000
SUBSCRIPTION_PENDING_BYTES = 256 * 1024 * 1024

_SUBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9-]")


def session_subject(prefix: str, instance_id: str) -> str:
    """The NATS subject of one instance's pushes: ``<prefix>.session.<token>``.

    Instance ids are often addresses (``10.0.0.5:4001``), and ``.``, ``*``, ``>``
    and spaces mean something in a subject, so every other character than
    ``[A-Za-z0-9-]`` (``_`` included) is written ``_xx`` (its UTF-8 bytes in hex):
    two ids never share a subject.
    """
    token = _SUBJECT_UNSAFE.sub(
        lambda m: "".join(f"_{b:02x}" for b in m.group().encode()), instance_id
    )
    return f"{prefix}.session.{token or '_'}"


async def connect_nats(
    servers: str | list[str], *, name: str = "teamgram-session", timeout: float = 5.0
) -> NatsClient:
    """A NATS connection for pushes: the first connection bounded by ``timeout``,
    reconnections forever (what is published meanwhile is buffered, then dropped)."""
    from nats.aio.client import Client

    nc = Client()
    last_error = ""

    async def error(exc: Exception) -> None:
        nonlocal last_error
        if repr(exc) != last_error:  # not once per reconnect attempt
            last_error = repr(exc)
            log.warning("session nats: %s", last_error)

    async def reconnected() -> None:
        nonlocal last_error
        last_error = ""
        log.warning("session nats: reconnected to %s", nc.connected_url)

    try:
        options: dict[str, Any] = {
            "name": name,
            "connect_timeout": min(2, max(1, int(timeout))),
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,  # typed int in nats-py, a float is fine
            "error_cb": error,
            "reconnected_cb": reconnected,
        }
        await asyncio.wait_for(nc.connect(servers, **options), timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    return nc


def decode_batch(data: bytes) -> list[Delivery]:
    """A published batch, checked: a list of Delivery with int ids and a TL object
    (anything else is a :class:`~teamgram.infra.wire.WireError`)."""
    items = wire.loads(data)
    if type(items) is not list:
        raise wire.WireError(f"a batch is a list, not {type(items).__name__}")
    for d in items:
        if (
            type(d) is not Delivery
            or type(d.user_id) is not int
            or type(d.auth_key_id) is not int
            or type(d.exclude_key) is not int
            or not isinstance(d.updates, TLObject)
            or not (d.user_id or d.auth_key_id)
        ):
            raise wire.WireError(f"not a delivery: {d!r:.200}")
    return items


@wire.register(name="session.Delivery")
@dataclass(frozen=True, slots=True)
class Delivery:
    """One push: to a user's sessions (``user_id``) or to one key's (``auth_key_id``)."""

    user_id: int  # 0 when by key
    auth_key_id: int  # 0 when to a user
    updates: TLObject  # an Updates constructor
    exclude_key: int = 0  # a user's device (effective key) that already knows


class LocalSessions(Protocol):
    """What this module needs of a session host (:class:`.host.SessionHost` has it)."""

    on_key_routes: list[Callable[[int, int], None]]

    def push_to_user(
        self, user_id: int, updates: Any, exclude: Any = None, exclude_key: int | None = None
    ) -> None: ...

    def push_to_key(self, auth_key_id: int, updates: Any) -> None: ...

    def bind_user(self, auth_key_id: int, user_id: int | None) -> None: ...

    def revoke_key(self, auth_key_id: int) -> None: ...

    async def online(self, user_id: int) -> bool: ...

    def connected_among_now(self, user_ids: Iterable[int]) -> list[int]: ...

    def key_activity_now(self, auth_key_id: int) -> tuple[float, str] | None: ...

    def key_connected(self, user_id: int, auth_key_id: int) -> bool: ...

    def connected_keys(self) -> list[tuple[int, int]]: ...


# ------------------------------------------------------------------ server side
class SessionPeer:
    """One session instance's rpc face (``interface.session``): hands work to its host."""

    METHODS = ("deliver", "bind_user", "revoke_key", "key_activity")

    def __init__(self, host: LocalSessions) -> None:
        self.host = host
        self._subscription: Subscription | None = None
        self._malformed: tuple[float, int] = (-FAIL_LOG_SECONDS, 0)  # (logged at, quiet)

    def serve(self, server: RpcServer, name: str = SERVICE) -> None:
        server.add(name, self, self.METHODS)

    async def subscribe(self, nc: NatsClient, subject: str) -> None:
        """Take pushes published to ``subject`` (:func:`session_subject` of this
        instance's id) as well: one message per batch, handled in order."""
        if self._subscription is not None:
            raise RuntimeError("already subscribed")
        with rpc.detached():  # the subscription's task must not keep a call's deadline
            self._subscription = await nc.subscribe(
                subject,
                cb=self._on_message,
                pending_msgs_limit=SUBSCRIPTION_PENDING,
                pending_bytes_limit=SUBSCRIPTION_PENDING_BYTES,
            )

    async def close(self) -> None:
        """Stop taking published pushes (the connection is the caller's)."""
        sub, self._subscription = self._subscription, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        try:
            items = decode_batch(msg.data)
        except wire.WireError as exc:
            now = time.monotonic()
            last, quiet = self._malformed
            if now - last < FAIL_LOG_SECONDS:
                self._malformed = (last, quiet + 1)
                return
            self._malformed = (now, 0)
            more = f" (and {quiet} more since)" if quiet else ""
            log.warning(
                "session peer: dropped a malformed batch of %d bytes on %s: %s%s",
                len(msg.data),
                msg.subject,
                exc,
                more,
            )
            return
        try:
            await self.deliver(items)
        except Exception:
            log.exception("session peer: a batch of %d pushes failed", len(items))

    async def deliver(self, items: list[Delivery]) -> None:
        """Queue each push on this instance's sessions (not idempotent: twice, twice)."""
        host = self.host
        for n, d in enumerate(items, 1):
            if d.user_id:
                host.push_to_user(d.user_id, d.updates, exclude_key=d.exclude_key or None)
            else:
                host.push_to_key(d.auth_key_id, d.updates)
            if n % DELIVER_YIELD == 0:
                await asyncio.sleep(0)  # encoding per session is the cost: let others run

    @idempotent
    async def bind_user(self, auth_key_id: int, user_id: int | None) -> None:
        self.host.bind_user(auth_key_id, user_id)

    @idempotent
    async def revoke_key(self, auth_key_id: int) -> None:
        self.host.revoke_key(auth_key_id)

    @idempotent
    async def key_activity(self, auth_key_id: int) -> tuple[float, str] | None:
        return self.host.key_activity_now(auth_key_id)


# ---------------------------------------------------------------------- routes
class RouteRecorder:
    """Announces this instance's connected signed-in keys in the session routes.

    The host tells it which (user, key) may have changed (``on_key_routes``); one
    task looks at the host's state then and applies the difference through a
    :class:`Refresher` (which re-announces held keys before their ttl runs out).
    ``instance_id`` is this instance's id in the routes and in discovery.
    Changes that cancel out before the task gets to them cost nothing. Every
    ``ttl`` the held keys are checked again, so a missed hook cannot leave a
    route behind for longer than that.

    A key that lost its connection keeps its route ``linger`` seconds more: a
    client that comes straight back (HTTP transport, a network switch) costs no
    Redis writes and no offline/online flap, and what is pushed meanwhile waits
    in its session here, re-sent when it reconnects.

    ``on_user_offline`` listeners hear of a user whose last connected key on every
    instance is gone (split mode's status service wants this one, not the host's,
    which only knows of this instance).
    """

    def __init__(
        self,
        host: LocalSessions,
        routes: SessionRoutes,
        instance_id: str,
        ttl: float = ROUTE_TTL,
        linger: float = ROUTE_LINGER,
    ) -> None:
        self.host = host
        self.refresher = Refresher(routes, instance_id, ttl)
        self.linger = linger
        self._lingering: dict[tuple[int, int], float] = {}  # -> loop time it ends
        self.on_user_offline: list[Callable[[int], None]] = []
        self._pending: set[tuple[int, int]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def instance_id(self) -> str:
        return self.refresher.instance_id

    def start(self) -> None:
        if self._task is not None:
            return
        self.host.on_key_routes.append(self.changed)
        for pair in self.host.connected_keys():
            self.changed(*pair)
        self.refresher.start()
        with rpc.detached():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def changed(self, user_id: int, auth_key_id: int) -> None:
        """Host hook: this key of this user may have gained or lost its connections."""
        self._pending.add((user_id, auth_key_id))
        self._idle.clear()
        self._wake.set()

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until every change heard so far is applied (tests, shutdown)."""
        async with asyncio.timeout(timeout):
            while self._pending or not self._idle.is_set():
                await self._idle.wait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        check_at = loop.time() + self.refresher.ttl
        while True:
            try:
                async with asyncio.timeout(max(0.0, check_at - loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if loop.time() >= check_at:  # the periodic check, busy or not
                check_at = loop.time() + self.refresher.ttl
                self._pending |= self.refresher.held
            self._wake.clear()
            await self._apply()
            if not self._pending:
                self._idle.set()

    async def _apply(self) -> None:
        pending, self._pending = self._pending, set()
        host, refresher, lingering = self.host, self.refresher, self._lingering
        loop = asyncio.get_running_loop()
        for n, (user_id, key_id) in enumerate(pending, 1):
            if n % RECORD_YIELD == 0:
                await asyncio.sleep(0)
            pair = (user_id, key_id)
            want = host.key_connected(user_id, key_id)
            if want:
                lingering.pop(pair, None)
            if want == (pair in refresher.held):
                continue
            if not want and self.linger > 0:
                until = lingering.get(pair)
                if until is None:
                    lingering[pair] = loop.time() + self.linger
                    loop.call_later(self.linger, self.changed, user_id, key_id)
                    continue
                if loop.time() < until - 0.01:  # an earlier change; the timer comes
                    continue
                del lingering[pair]
            gone = False
            try:
                if want:
                    await refresher.add(user_id, key_id)
                else:
                    gone = await refresher.remove(user_id, key_id)
            except Exception:
                # add: held anyway, the next refresh announces it; remove: the entry
                # expires by itself within the ttl (pushes to it find no session).
                log.warning(
                    "session routes: %s of user %d key %d failed",
                    "announcing" if want else "withdrawing",
                    user_id,
                    key_id,
                    exc_info=True,
                )
            if gone:
                for listener in self.on_user_offline:
                    listener(user_id)

    async def stop(self) -> None:
        """Stop recording and withdraw every route this instance announced."""
        with contextlib.suppress(ValueError):
            self.host.on_key_routes.remove(self.changed)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pending.clear()
        self._lingering.clear()
        self._idle.set()
        await self.refresher.stop()


# ----------------------------------------------------------------- client side
@dataclass(frozen=True, slots=True)
class _KeyOp:
    """bind_user / revoke_key for another instance, queued in order with the pushes."""

    method: str
    args: tuple[Any, ...]


class SessionPeers:
    """Calls the session instances: finds them through ``routes`` (who holds which
    user's keys) and ``discovery`` (their addresses, by instance id).

    An instance that cannot be reached is logged and skipped; the others are
    served all the same (clients recover missed updates with getDifference).

    With ``nats`` (a connected client) pushes are published to each instance's
    subject under ``subject_prefix`` (see :meth:`SessionPeer.subscribe`) instead
    of called: per instance in order (one connection, one subject), best effort
    (an instance that is not subscribed misses them, as a failed call would).
    """

    def __init__(
        self,
        routes: SessionRoutes,
        discovery: Discovery,
        channels: Channels | None = None,
        *,
        service: str = SERVICE,
        deadline: float = CALL_DEADLINE,
        nats: NatsClient | None = None,
        subject_prefix: str = "teamgram",
    ) -> None:
        self.routes = routes
        self.discovery = discovery
        self.service = service
        self.deadline = deadline
        self.nats = nats
        self.subject_prefix = subject_prefix
        self._subjects: dict[str, str] = {}  # instance id -> its subject
        self._unflushed = False  # published since the last flush
        self._own_channels = channels is None
        self.channels = Channels() if channels is None else channels
        self._stubs: dict[str, SessionPeer] = {}  # address -> remote
        self._fail_log: dict[str, tuple[float, int]] = {}  # instance -> (logged at, quiet)

    # -- where ---------------------------------------------------------------------
    def addresses(self, skip_instance: str | None = None) -> dict[str, str]:
        """Instance id -> address of every live session instance (discovery, memory)."""
        return {
            i.instance_id: i.address
            for i in self.discovery.instances(self.service)
            if i.instance_id != skip_instance
        }

    async def routes_of(self, user_ids: Iterable[int]) -> dict[int, Routes]:
        """user -> {instance id: auth key ids} for the connected ones (a round trip
        per LOOKUP_CHUNK users)."""
        users = list(dict.fromkeys(user_ids))
        out: dict[int, Routes] = {}
        for start in range(0, len(users), LOOKUP_CHUNK):
            out.update(await self.routes.instances_of_many(users[start : start + LOOKUP_CHUNK]))
        return out

    @staticmethod
    def targets(
        d: Delivery, routes: dict[int, Routes], everyone: Iterable[str], skip: str | None
    ) -> list[str]:
        """The instances one delivery goes to: those holding the user's keys (but not
        only the excluded one), or every instance for a push by key."""
        if not d.user_id:
            return [i for i in everyone if i != skip]
        out = []
        for instance_id, keys in routes.get(d.user_id, {}).items():
            if instance_id == skip or (d.exclude_key and keys <= {d.exclude_key}):
                continue
            out.append(instance_id)
        return out

    async def plan(
        self, items: Sequence[Delivery], skip_instance: str | None = None
    ) -> dict[str, list[Delivery]]:
        """instance id -> its deliveries, in the order given."""
        routes = await self.routes_of(d.user_id for d in items if d.user_id)
        everyone = list(self.addresses()) if any(not d.user_id for d in items) else []
        out: dict[str, list[Delivery]] = {}
        for d in items:
            for instance_id in self.targets(d, routes, everyone, skip_instance):
                out.setdefault(instance_id, []).append(d)
        return out

    def _peer(self, address: str) -> SessionPeer:
        peer = self._stubs.get(address)
        if peer is None:
            peer = self._stubs[address] = rpc.remote(
                SessionPeer,
                self.service,
                address,
                channels=self.channels,
                deadline=self.deadline,
            )
        return peer

    def peer(self, instance_id: str) -> SessionPeer | None:
        """The instance's remote, or None when discovery does not know it (gone)."""
        addresses = self.addresses()
        address = addresses.get(instance_id)
        if address is None:
            return None
        if len(self._stubs) > len(addresses) + 8:  # instances came and went: forget those
            live = set(addresses.values())
            for old in [a for a in self._stubs if a not in live]:
                del self._stubs[old]
        return self._peer(address)

    # -- calls ---------------------------------------------------------------------
    async def send(self, instance_id: str, items: Sequence[Delivery]) -> bool:
        """Deliver to one instance, MAX_BATCH per call; False if (part of) it failed."""
        if self.nats is not None:
            return await self._publish(self.nats, instance_id, items)
        peer = self.peer(instance_id)
        if peer is None:
            log.debug("session peers: %s is gone; %d pushes dropped", instance_id, len(items))
            return False
        for start in range(0, len(items), MAX_BATCH):
            chunk = list(items[start : start + MAX_BATCH])
            try:
                await peer.deliver(chunk)
            except Exception as exc:
                self._failed(instance_id, f"deliver of {len(chunk)} pushes", exc)
                return False
        return True

    def subject(self, instance_id: str) -> str:
        subject = self._subjects.get(instance_id)
        if subject is None:
            if len(self._subjects) > 1024:  # instances came and went
                self._subjects.clear()
            subject = self._subjects[instance_id] = session_subject(
                self.subject_prefix, instance_id
            )
        return subject

    async def _publish(self, nc: NatsClient, instance_id: str, items: Sequence[Delivery]) -> bool:
        """One publish per MAX_BATCH pushes (fewer if that is over the server's
        max_payload); returns once buffered, not once delivered."""
        if instance_id not in self.addresses():
            log.debug("session peers: %s is gone; %d pushes dropped", instance_id, len(items))
            return False
        subject = self.subject(instance_id)
        ok = True
        for start in range(0, len(items), MAX_BATCH):
            for payload, n in self._payloads(list(items[start : start + MAX_BATCH]), nc):
                if payload is None:
                    log.error(
                        "session peers: a push to %s is over the %d bytes NATS takes; dropped",
                        instance_id,
                        nc.max_payload,
                    )
                    ok = False
                    continue
                try:
                    await nc.publish(subject, payload)
                except Exception as exc:
                    self._failed(instance_id, f"publish of {n} pushes", exc)
                    return False
                self._unflushed = True
        return ok

    @staticmethod
    def _payloads(chunk: list[Delivery], nc: NatsClient) -> Iterable[tuple[bytes | None, int]]:
        """(payload, count) of ``chunk`` in order, halved until each fits (None: one
        push alone does not)."""
        data = wire.dumps(chunk)
        limit = nc.max_payload
        if len(data) <= limit or not limit:
            yield data, len(chunk)
        elif len(chunk) == 1:
            yield None, 1
        else:
            half = len(chunk) // 2
            yield from SessionPeers._payloads(chunk[:half], nc)
            yield from SessionPeers._payloads(chunk[half:], nc)

    async def flush(self) -> None:
        """Wait until what was published has reached the NATS server (before a key
        operation goes by gRPC: it should not overtake the pushes queued before it)."""
        if self.nats is None or not self._unflushed:
            return
        self._unflushed = False
        try:
            await self.nats.flush(max(1, int(self.deadline)))
        except Exception as exc:
            self._failed("nats", "flush", exc)

    async def call(self, instance_id: str, method: str, *args: Any) -> Any:
        """One key operation on one instance; None (logged) when it fails."""
        peer = self.peer(instance_id)
        if peer is None:
            return None
        try:
            return await getattr(peer, method)(*args)
        except Exception as exc:
            self._failed(instance_id, method, exc)
            return None

    def _failed(self, instance_id: str, what: str, exc: Exception) -> None:
        """Log a failed call; an instance that keeps failing, once per FAIL_LOG_SECONDS."""
        if not isinstance(exc, (RpcError, nats.errors.Error)):
            log.error("session peers: %s on %s failed", what, instance_id, exc_info=exc)
            return
        now = time.monotonic()
        last, quiet = self._fail_log.get(instance_id, (-FAIL_LOG_SECONDS, 0))
        if now - last < FAIL_LOG_SECONDS:
            self._fail_log[instance_id] = (last, quiet + 1)
            return
        self._fail_log[instance_id] = (now, 0)
        more = f" (and {quiet} more failures since)" if quiet else ""
        log.warning("session peers: %s on %s failed: %s%s", what, instance_id, exc, more)

    async def deliver(self, items: Sequence[Delivery], skip_instance: str | None = None) -> None:
        """Each push to the instances that hold its user's keys (by key: to all):
        one routes lookup, then one call per instance, all instances at once."""
        if not items:
            return
        plan = await self.plan(items, skip_instance)
        await asyncio.gather(*(self.send(i, batch) for i, batch in plan.items()))

    async def _broadcast(self, method: str, *args: Any, skip_instance: str | None) -> list[Any]:
        ids = list(self.addresses(skip_instance))
        return await asyncio.gather(*(self.call(i, method, *args) for i in ids))

    async def bind_user(
        self, auth_key_id: int, user_id: int | None, skip_instance: str | None = None
    ) -> None:
        """Every instance: a key may be connected to several, signed in or not."""
        await self._broadcast("bind_user", auth_key_id, user_id, skip_instance=skip_instance)

    async def revoke_key(self, auth_key_id: int, skip_instance: str | None = None) -> None:
        """Every instance (routes are per user; a key's holders are not indexed)."""
        await self._broadcast("revoke_key", auth_key_id, skip_instance=skip_instance)

    async def key_activity(
        self, auth_key_id: int, skip_instance: str | None = None
    ) -> tuple[float, str] | None:
        """The latest activity any instance knows of (None: none has the key)."""
        found = await self._broadcast("key_activity", auth_key_id, skip_instance=skip_instance)
        return latest_activity(found)

    async def connected_among(self, user_ids: Iterable[int]) -> list[int]:
        """Those of ``user_ids`` connected on some instance, in the order given."""
        users = list(dict.fromkeys(user_ids))
        found: set[int] = set()
        for start in range(0, len(users), LOOKUP_CHUNK):
            found |= await self.routes.online_users(users[start : start + LOOKUP_CHUNK])
        return [u for u in users if u in found]

    async def online(self, user_id: int) -> bool:
        return bool(await self.routes.online_users([user_id]))

    async def close(self) -> None:
        self._stubs.clear()
        await self.flush()  # the connection is the caller's; what is published goes out
        if self._own_channels:
            await self.channels.close()


def latest_activity(found: Iterable[tuple[float, str] | None]) -> tuple[float, str] | None:
    """The most recent (time, address); the address of the latest that has one."""
    seen = sorted((f for f in found if f is not None), key=lambda f: f[0], reverse=True)
    if not seen:
        return None
    return seen[0][0], next((ip for _, ip in seen if ip), "")


# ------------------------------------------------------------------- directory
class ClusterDirectory:
    """The session directory of an edge process (split mode).

    This process's sessions are served by its host at once; the rest is queued
    and sent by a background task, batched per event-loop tick (one routes lookup
    per batch), then per instance by a sender of its own (one call per batch, in
    the order queued: a user's pushes arrive in order). Questions (who is online,
    a key's activity) ask the host and the routes (or the other instances); when
    Redis or an instance fails they answer with what this process knows.
    """

    def __init__(
        self,
        host: LocalSessions,
        peers: SessionPeers,
        instance_id: str,
        *,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.host = host
        self.peers = peers
        self.instance_id = instance_id
        self.max_queued = max_queued
        self._pending: list[Delivery | _KeyOp] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._routing = False
        self._outboxes: dict[str, deque[Delivery | _KeyOp]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._dropped: dict[str, int] = {}
        self._closed = False

    # -- SessionDirectory ------------------------------------------------------------
    def push_to_user(
        self,
        user_id: int,
        updates: Any,
        exclude: Any = None,
        exclude_key: int | None = None,
    ) -> None:
        self.host.push_to_user(user_id, updates, exclude=exclude, exclude_key=exclude_key)
        self._queue(Delivery(user_id, 0, updates, exclude_key or 0))

    def push_to_key(self, auth_key_id: int, updates: Any) -> None:
        self.host.push_to_key(auth_key_id, updates)
        self._queue(Delivery(0, auth_key_id, updates))

    def bind_user(self, auth_key_id: int, user_id: int | None) -> None:
        self.host.bind_user(auth_key_id, user_id)
        self._queue(_KeyOp("bind_user", (auth_key_id, user_id)))

    def revoke_key(self, auth_key_id: int) -> None:
        self.host.revoke_key(auth_key_id)
        self._queue(_KeyOp("revoke_key", (auth_key_id,)))

    async def online(self, user_id: int) -> bool:
        if await self.host.online(user_id):
            return True
        try:
            return await self.peers.online(user_id)
        except Exception:
            log.warning("session routes: online(%d) failed", user_id, exc_info=True)
            return False

    async def connected_among(self, user_ids: Iterable[int]) -> list[int]:
        users = list(dict.fromkeys(user_ids))
        here = self.host.connected_among_now(users)
        local = set(here)
        rest = [u for u in users if u not in local]
        if not rest:
            return here
        try:
            return here + await self.peers.connected_among(rest)
        except Exception:
            log.warning("session routes: connected_among failed", exc_info=True)
            return here

    async def key_activity(self, auth_key_id: int) -> tuple[float, str] | None:
        here = self.host.key_activity_now(auth_key_id)
        try:
            there = await self.peers.key_activity(auth_key_id, skip_instance=self.instance_id)
        except Exception:
            log.warning("session peers: key_activity failed", exc_info=True)
            there = None
        return latest_activity([here, there])

    # -- the queue -------------------------------------------------------------------
    def _queue(self, item: Delivery | _KeyOp) -> None:
        if self._closed:
            return
        self._pending.append(item)
        if self._flusher is None:
            with rpc.detached():  # a task started while serving a call keeps no deadline
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            self._routing = True
            try:
                await self._route(batch)
            except Exception:
                log.exception("session peers: routing %d items failed", len(batch))
            finally:
                self._routing = False

    async def _route(self, batch: list[Delivery | _KeyOp]) -> None:
        """Hand each item to the outboxes of the instances it goes to, in order."""
        peers = self.peers
        everyone = list(peers.addresses(self.instance_id))
        users = [d.user_id for d in batch if isinstance(d, Delivery) and d.user_id]
        try:
            routes = await peers.routes_of(users)
        except Exception:
            # The users' pushes are dropped (getDifference recovers them); pushes by
            # key and key operations go to every instance all the same.
            log.warning("session routes: lookup of %d users failed", len(set(users)), exc_info=True)
            routes = {}
            batch = [d for d in batch if not (isinstance(d, Delivery) and d.user_id)]
        skip = self.instance_id
        for item in batch:
            if isinstance(item, Delivery):
                targets = peers.targets(item, routes, everyone, skip)
            else:
                targets = everyone
            for instance_id in targets:
                self._post(instance_id, item)

    def _post(self, instance_id: str, item: Delivery | _KeyOp) -> None:
        box = self._outboxes.get(instance_id)
        if box is None:
            box = self._outboxes[instance_id] = deque()
        box.append(item)
        if len(box) > self.max_queued:
            box.popleft()  # the oldest: the instance is too slow to keep up
            n = self._dropped[instance_id] = self._dropped.get(instance_id, 0) + 1
            if n == 1:
                log.warning("session peers: %s falls behind; dropping its oldest", instance_id)
        if instance_id not in self._senders:
            with rpc.detached():
                task = asyncio.get_running_loop().create_task(self._send_loop(instance_id, box))
            self._senders[instance_id] = task

    async def _send_loop(self, instance_id: str, box: deque[Delivery | _KeyOp]) -> None:
        try:
            while box:
                head = box.popleft()
                if isinstance(head, _KeyOp):
                    await self.peers.flush()  # the pushes queued before it go first
                    await self.peers.call(instance_id, head.method, *head.args)
                    continue
                run = [head]
                while box and len(run) < MAX_BATCH:
                    item = box[0]
                    if not isinstance(item, Delivery):
                        break
                    run.append(item)
                    box.popleft()
                await self.peers.send(instance_id, run)
        finally:
            # No await between the loop's last check and here: nothing slips in unsent.
            self._senders.pop(instance_id, None)
            if not box:
                self._outboxes.pop(instance_id, None)
            dropped = self._dropped.pop(instance_id, 0)
            if dropped:
                log.warning("session peers: %d pushes to %s dropped", dropped, instance_id)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far has been sent (or given up on)."""
        async with asyncio.timeout(timeout):
            while self._pending or self._routing or self._senders:
                if self._senders:
                    await asyncio.wait(list(self._senders.values()))
                else:
                    await asyncio.sleep(0.001)

    async def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (within ``timeout``), then stop."""
        with contextlib.suppress(TimeoutError):
            await self.drain(timeout)
        self._closed = True
        tasks = [t for t in (self._flusher, *self._senders.values()) if t is not None]
        self._flusher = None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._senders.clear()
        self._outboxes.clear()
        self._pending.clear()
