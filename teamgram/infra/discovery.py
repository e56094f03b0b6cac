"""Service discovery: which instances of a service (``service.idgen``,
``messenger.msg``...) are alive, and where they listen.

Two implementations of :class:`Discovery`:

* :class:`StaticDiscovery`: a fixed mapping service -> addresses (the embedded
  default, or the ``discovery`` section of the YAML config), plus whatever this
  process registers itself. No network, nothing expires.
* :class:`EtcdDiscovery`: etcd v3 (split mode). Every instance puts
  ``<prefix><service>/<instance_id>`` = ``{"address": ..., "meta": {...}}`` under a
  lease of its own that it keeps alive every ``ttl / 3`` seconds; one prefix watch
  keeps an in-memory table of every service's instances up to date, so
  :meth:`~Discovery.instances` and :meth:`~Discovery.pick` never make a request.
  An instance whose process dies stops renewing its lease: etcd deletes its key
  within ``ttl`` seconds and every watcher drops it.

While etcd cannot be reached the table keeps what it last knew (callers keep
working with the instances they had), the watch is re-established and the table
re-listed once etcd answers again, and a registration whose lease expired
meanwhile (etcd restarted without its data, or this process was paused for longer
than ``ttl``) is put back under a new lease.

Instance ids must be unique per service: registering an id that exists replaces
that entry (a restarted instance reusing its id takes its place at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, cast

import etcd3aio
import grpc.aio

log = logging.getLogger("teamgram.discovery")

# etcd's mvccpb.Event.EventType (PUT is 0).
_EVENT_DELETE = 1
# Re-list and re-watch after a failure: first retry after this many seconds, doubling.
RETRY_MIN_SECONDS = 0.2
RETRY_MAX_SECONDS = 3.0
GRPC_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class DiscoveryError(RuntimeError):
    """Discovery cannot do what was asked (the message says why)."""


class NoInstanceError(DiscoveryError, LookupError):
    """No live instance of the service is known (none registered, or all died)."""


@dataclass(frozen=True)
class Instance:
    """One live instance of a service: where to reach it, and what it says of itself."""

    service: str
    instance_id: str
    address: str
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)


class ChangeKind(StrEnum):
    ADDED = "added"
    UPDATED = "updated"  # same instance id, new address or meta
    REMOVED = "removed"


@dataclass(frozen=True)
class Change:
    """What :meth:`Discovery.watch` yields; ``instance`` is the old one on REMOVED."""

    kind: ChangeKind
    instance: Instance


class Registration(ABC):
    """This process's own entry; it stays listed until :meth:`close`."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    @abstractmethod
    async def close(self) -> None:
        """Withdraw the entry now (watchers drop it at once, not after a ttl)."""

    async def __aenter__(self) -> Registration:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _brief(exc: BaseException) -> str:
    """One line for a log (a gRPC error's repr spans several)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"gRPC {exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def _bound_reconnect_backoff(client: etcd3aio.Etcd3Client) -> None:
    """Cap gRPC's reconnect backoff (before ``connect()``).

    By default gRPC waits up to 120 s between attempts to reach a server that went
    away, and shares that state between every channel of the process with the same
    target and options (a fresh channel does not help): after an etcd outage,
    keep-alives and the watch would stay failing long after etcd is back, and the
    leases would expire. etcd3aio has no parameter for channel options, hence its
    (private) ``_manager.grpc_options``; without it, gRPC's defaults apply.
    """
    options = getattr(getattr(client, "_manager", None), "grpc_options", None)
    if isinstance(options, list):
        options.extend(GRPC_RECONNECT_OPTIONS)
    else:
        log.warning("etcd3aio changed: gRPC reconnect backoff left at its default (120 s)")


def _check_names(service: str, instance_id: str, address: str) -> None:
    if not service or "/" in service:
        raise ValueError(f"service name {service!r}: must be non-empty, without '/'")
    if not instance_id:
        raise ValueError("instance id must be non-empty")
    if not address:
        raise ValueError(f"{service}/{instance_id}: address must be non-empty")


class Watch:
    """An async iterator of one service's :class:`Change` s (see :meth:`Discovery.watch`)."""

    def __init__(self, owner: Discovery, service: str) -> None:
        self.service = service
        self._owner = owner
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()
        for instance in owner._live(service):
            self._queue.put_nowait(Change(ChangeKind.ADDED, instance))
        self._ended = False

    def _push(self, change: Change | None) -> None:
        self._queue.put_nowait(change)

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Change:
        if self._ended:
            raise StopAsyncIteration
        change = await self._queue.get()
        if change is None:
            self._ended = True
            raise StopAsyncIteration
        return change

    def close(self) -> None:
        """Stop receiving changes (iteration ends after what is queued)."""
        watches = self._owner._subscribers.get(self.service)
        if watches is not None:
            watches.discard(self)
        self._push(None)

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Discovery(ABC):
    """The instance table, its watchers and :meth:`pick`; subclasses fill the table.

    :meth:`instances`, :meth:`pick` and :meth:`watch` read memory only. Use as
    ``async with`` (or :meth:`start` then :meth:`close`).
    """

    def __init__(self) -> None:
        self._table: dict[str, dict[str, Instance]] = {}
        self._sorted: dict[str, list[Instance]] = {}  # service -> by instance id (cache)
        self._cursor: dict[str, int] = {}  # service -> next pick (round robin)
        # Weak: a watch its reader dropped without closing it goes with the garbage.
        self._subscribers: dict[str, weakref.WeakSet[Watch]] = {}
        self._started = False
        self._closed = False

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Be ready to answer (for etcd: connected, table listed, watch running)."""
        if self._closed:
            raise DiscoveryError(f"{self.describe()}: closed")
        self._started = True

    async def close(self) -> None:
        """Withdraw this process's registrations and end every :meth:`watch`."""
        self._closed = True
        for watches in self._subscribers.values():
            for watch in watches:
                watch._push(None)
        self._subscribers.clear()

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    def describe(self) -> str:
        """Where instances come from, for error messages and logs."""

    # -- the contract ---------------------------------------------------------------

    @abstractmethod
    async def register(
        self,
        service: str,
        instance_id: str,
        address: str,
        meta: Mapping[str, str] | None = None,
    ) -> Registration:
        """List this process as ``instance_id`` of ``service`` at ``address``."""

    def instances(self, service: str) -> list[Instance]:
        """The live instances of ``service`` now, by instance id (a copy)."""
        self._check_started()
        return list(self._live(service))

    def services(self) -> list[str]:
        """Every service with at least one live instance."""
        self._check_started()
        return sorted(s for s, table in self._table.items() if table)

    def pick(self, service: str) -> Instance:
        """The next live instance of ``service``, round robin.

        Raises :class:`NoInstanceError` when there is none.
        """
        self._check_started()
        live = self._live(service)
        if not live:
            known = ", ".join(self.services()) or "none"
            raise NoInstanceError(
                f"no live instance of service {service!r} in {self.describe()} "
                f"(services with instances: {known})"
            )
        n = self._cursor.get(service, 0)
        self._cursor[service] = n + 1
        return live[n % len(live)]

    def watch(self, service: str) -> Watch:
        """The instances of ``service`` now, as ADDED changes, then every change as
        it happens, until :meth:`close` or :meth:`Watch.close`.

        Subscribed on return (not on first iteration): nothing falls in between.
        """
        self._check_started()
        watch = Watch(self, service)
        if self._closed:
            watch._push(None)
        else:
            self._subscribers.setdefault(service, weakref.WeakSet()).add(watch)
        return watch

    async def wait_for(self, service: str, count: int = 1, timeout: float = 10.0) -> list[Instance]:
        """Wait until ``service`` has at least ``count`` live instances (for startup
        ordering); :class:`NoInstanceError` after ``timeout`` seconds."""
        if len(self.instances(service)) >= count:
            return self.instances(service)
        try:
            async with asyncio.timeout(timeout), self.watch(service) as changes:
                async for _ in changes:
                    if len(self._live(service)) >= count:
                        return self.instances(service)
        except TimeoutError:
            pass
        raise NoInstanceError(
            f"service {service!r} has {len(self._live(service))} live instance(s) in "
            f"{self.describe()}, not {count}, after {timeout:g} s"
        )

    # -- for subclasses ---------------------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            raise DiscoveryError(f"{self.describe()}: not started (await start() first)")

    def _live(self, service: str) -> list[Instance]:
        cached = self._sorted.get(service)
        if cached is None:
            table = self._table.get(service, {})
            cached = self._sorted[service] = [table[k] for k in sorted(table)]
        return cached

    def _set(self, service: str, instance_id: str, instance: Instance | None) -> None:
        """Put (``instance``) or remove (None) one entry, telling the watchers."""
        table = self._table.setdefault(service, {})
        old = table.get(instance_id)
        if instance is None:
            if old is None:
                return
            del table[instance_id]
            change = Change(ChangeKind.REMOVED, old)
        else:
            if old == instance:
                return
            table[instance_id] = instance
            change = Change(ChangeKind.ADDED if old is None else ChangeKind.UPDATED, instance)
        self._sorted.pop(service, None)
        for watch in self._subscribers.get(service, ()):
            watch._push(change)

    def _replace_all(self, instances: Sequence[Instance]) -> None:
        """Make the table exactly ``instances`` (after a re-list), telling the
        watchers only what differs."""
        fresh: dict[tuple[str, str], Instance] = {(i.service, i.instance_id): i for i in instances}
        for service, table in self._table.items():
            for instance_id in list(table):
                if (service, instance_id) not in fresh:
                    self._set(service, instance_id, None)
        for (service, instance_id), instance in fresh.items():
            self._set(service, instance_id, instance)


class _StaticRegistration(Registration):
    def __init__(self, owner: StaticDiscovery, instance: Instance) -> None:
        super().__init__(instance)
        self._owner = owner

    async def close(self) -> None:
        i = self.instance
        if self._owner._table.get(i.service, {}).get(i.instance_id) == i:
            self._owner._set(i.service, i.instance_id, None)


class StaticDiscovery(Discovery):
    """Fixed addresses (the embedded default and YAML), plus in-process registrations.

    A static address's instance id is the address itself. Nothing expires: a
    listed address that does not answer stays listed.
    """

    def __init__(self, services: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        for service, addresses in (services or {}).items():
            for address in addresses:
                _check_names(service, address, address)
                self._set(service, address, Instance(service, address, address))
        self._started = True  # nothing to connect to

    def describe(self) -> str:
        return "static discovery"

    async def register(
        self,
        service: str,
        instance_id: str,
        address: str,
        meta: Mapping[str, str] | None = None,
    ) -> Registration:
        _check_names(service, instance_id, address)
        if self._closed:
            raise DiscoveryError(f"{self.describe()}: closed")
        instance = Instance(service, instance_id, address, dict(meta or {}))
        self._set(service, instance_id, instance)
        return _StaticRegistration(self, instance)


class EtcdRegistration(Registration):
    """An entry under a lease of its own, renewed in the background; if the lease is
    lost (expired, revoked, or etcd lost its data) the entry is put back under a
    new one."""

    def __init__(self, owner: EtcdDiscovery, instance: Instance, key: str) -> None:
        super().__init__(instance)
        self._owner = owner
        self._key = key
        self._value = json.dumps({"address": instance.address, "meta": dict(instance.meta)})
        self._ttl = owner.ttl
        self._lease_id = 0  # 0: no lease holds the entry now
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def key(self) -> str:
        return self._key

    @property
    def lease_id(self) -> int:
        """The lease holding the entry now (it changes when the entry is put back)."""
        return self._lease_id

    async def _establish(self) -> None:
        """Grant a lease and put the entry under it."""
        client = self._owner._connected()
        timeout = self._owner.rpc_timeout
        assert client.lease is not None and client.kv is not None
        lease = await client.lease.grant(self._owner.ttl, timeout=timeout)
        await client.kv.put(self._key, self._value, lease=lease.ID, timeout=timeout)
        self._lease_id = lease.ID
        self._ttl = max(1, lease.TTL)  # etcd may raise a ttl below its minimum

    def _start(self) -> None:
        self._task = asyncio.create_task(self._keep_alive(), name=f"discovery-lease:{self._key}")

    def poke(self) -> None:
        """The entry vanished while this process still wants it: check it now."""
        self._poked.set()

    async def _renew(self) -> int:
        """One keep-alive; the lease's remaining ttl (0: the lease is gone)."""
        client = self._owner._connected()
        assert client.lease is not None
        call = client.lease.keep_alive(self._lease_id)
        try:
            async with asyncio.timeout(max(1.0, self._ttl / 3)):
                async for response in call:
                    return int(response.TTL)
        finally:
            call.cancel()
        raise DiscoveryError("etcd closed the keep-alive stream without an answer")

    async def _keep_alive(self) -> None:
        delay = self._ttl / 3
        failing = False  # log an outage once, and its end
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._poked.wait()
            poked = self._poked.is_set()
            self._poked.clear()
            try:
                if self._lease_id and await self._renew() <= 0:
                    log.warning(
                        "%s: lease %x expired (etcd restarted without its data, or this "
                        "process stalled): registering again",
                        self._key,
                        self._lease_id,
                    )
                    self._lease_id = 0
                if not self._lease_id:
                    await self._establish()
                    log.info("%s: registered again under lease %x", self._key, self._lease_id)
                elif poked:
                    # The lease lives but the key went (deleted by hand): put it back.
                    client = self._owner._connected()
                    assert client.kv is not None
                    await client.kv.put(
                        self._key,
                        self._value,
                        lease=self._lease_id,
                        timeout=self._owner.rpc_timeout,
                    )
                delay = self._ttl / 3
                if failing:
                    failing = False
                    log.info("%s: keep-alive works again", self._key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep trying, faster than the ttl, so a short outage loses nothing.
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "%s: keep-alive failed (retrying until etcd answers): %s",
                    self._key,
                    _brief(exc),
                )
                failing = True
                delay = min(self._ttl / 3, 0.5)

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._owner._owned.pop(self._key, None)
        await self._stop()
        lease_id, self._lease_id = self._lease_id, 0
        client = self._owner._client
        if lease_id and client is not None and client.lease is not None:
            try:
                await client.lease.revoke(lease_id, timeout=self._owner.rpc_timeout)
            except Exception as exc:  # the lease expires by itself within the ttl
                log.warning("%s: revoking lease %x failed: %s", self._key, lease_id, _brief(exc))


class EtcdDiscovery(Discovery):
    """Discovery through etcd v3; see the module docstring.

    ``ttl`` (seconds; etcd's minimum is 2 with its default timing) is how long a
    dead instance stays listed. ``rpc_timeout`` bounds each request to etcd;
    ``start_timeout`` how long :meth:`start` waits for etcd. Every
    ``resync_interval`` seconds the table is listed afresh, in case a watch
    resumed after etcd lost its data missed something (see :meth:`_must_relist`).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        ttl: int = 5,
        prefix: str = "/teamgram/",
        *,
        rpc_timeout: float = 5.0,
        start_timeout: float = 10.0,
        resync_interval: float = 60.0,
    ) -> None:
        super().__init__()
        if not endpoints:
            raise ValueError("etcd discovery needs at least one endpoint (host:port)")
        if ttl < 1:
            raise ValueError(f"lease ttl {ttl}: must be at least 1 second")
        self.endpoints = [e.removeprefix("http://") for e in endpoints]
        self.ttl = ttl
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.rpc_timeout = rpc_timeout
        self.start_timeout = start_timeout
        self.resync_interval = resync_interval
        self._client: etcd3aio.Etcd3Client | None = None
        self._follower: asyncio.Task[None] | None = None
        self._owned: dict[str, EtcdRegistration] = {}  # key -> this process's entry
        self._lock = asyncio.Lock()
        self.resyncs = 0  # full re-lists so far (the first one included)

    def describe(self) -> str:
        return f"etcd {','.join(self.endpoints)} under {self.prefix!r}"

    def _connected(self) -> etcd3aio.Etcd3Client:
        if self._client is None:
            raise DiscoveryError(f"{self.describe()}: not started or closed")
        return self._client

    async def start(self) -> None:
        """Connect, list every instance and start the watch; :class:`DiscoveryError`
        if etcd does not answer within ``start_timeout`` seconds."""
        async with self._lock:
            if self._started:
                return
            if self._closed:
                raise DiscoveryError(f"{self.describe()}: closed")
            client = etcd3aio.Etcd3Client(
                self.endpoints,
                watch_reconnect_backoff_seconds=RETRY_MIN_SECONDS,
                watch_max_reconnect_backoff_seconds=RETRY_MAX_SECONDS,
            )
            _bound_reconnect_backoff(client)
            await client.connect()
            self._client = client
            try:
                revision = await self._first_list()
            except BaseException:
                self._client = None
                await client.close()
                raise
            self._started = True
            self._follower = asyncio.create_task(self._follow(revision), name="discovery-watch")

    async def _first_list(self) -> int:
        last: Exception | None = None
        delay = RETRY_MIN_SECONDS
        try:
            async with asyncio.timeout(self.start_timeout):
                while True:
                    try:
                        return await self._resync()
                    except (etcd3aio.EtcdError, OSError) as exc:
                        last = exc
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_SECONDS)
        except TimeoutError:
            pass
        raise DiscoveryError(
            f"{self.describe()}: etcd did not answer within {self.start_timeout:g} s ({last})"
        )

    async def close(self) -> None:
        if self._closed:
            return
        # Together: with etcd unreachable each revoke waits up to rpc_timeout.
        await asyncio.gather(*(r.close() for r in list(self._owned.values())))
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        await super().close()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def register(
        self,
        service: str,
        instance_id: str,
        address: str,
        meta: Mapping[str, str] | None = None,
    ) -> Registration:
        _check_names(service, instance_id, address)
        await self.start()
        instance = Instance(service, instance_id, address, dict(meta or {}))
        key = f"{self.prefix}{service}/{instance_id}"
        registration = EtcdRegistration(self, instance, key)
        try:
            async with asyncio.timeout(self.rpc_timeout):
                await registration._establish()
        except TimeoutError:
            raise DiscoveryError(
                f"{self.describe()}: registering {key} took over {self.rpc_timeout:g} s"
            ) from None
        previous = self._owned.get(key)
        if previous is not None:
            # The key moved to the new lease (watchers saw an update): revoking the
            # old lease deletes nothing.
            await previous.close()
        self._owned[key] = registration
        registration._start()
        return registration

    # -- the watch ------------------------------------------------------------------

    def _parse(self, key: bytes, value: bytes | None) -> tuple[str, str, Instance | None] | None:
        """(service, instance id, instance or None for a removal); None: not ours."""
        try:
            path = key.decode()
        except UnicodeDecodeError:
            return None
        service, _, instance_id = path.removeprefix(self.prefix).partition("/")
        if not service or not instance_id:
            return None
        if value is None:
            return service, instance_id, None
        try:
            data: Any = json.loads(value)
            address = data["address"]
            meta = data.get("meta") or {}
            if not isinstance(address, str) or not isinstance(meta, dict):
                raise TypeError("address must be a string, meta an object")
            meta = {str(k): str(v) for k, v in meta.items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("%s: ignored, not a discovery entry (%s)", path, exc)
            return None
        return service, instance_id, Instance(service, instance_id, address, meta)

    async def _resync(self) -> int:
        """Re-list the whole prefix into the table; the revision it was read at."""
        client = self._connected()
        assert client.kv is not None
        response = await client.kv.get(
            self.prefix, range_end=etcd3aio.prefix_range_end(self.prefix), timeout=self.rpc_timeout
        )
        found = []
        for kv in response.kvs:
            parsed = self._parse(kv.key, kv.value)
            if parsed is not None and parsed[2] is not None:
                found.append(parsed[2])
        before = {key for key in self._owned if self._present(key)}
        self._replace_all(found)
        self.resyncs += 1
        for key in before:
            if not self._present(key):
                self._owned[key].poke()
        return int(response.header.revision)

    def _present(self, key: str) -> bool:
        service, _, instance_id = key.removeprefix(self.prefix).partition("/")
        return instance_id in self._table.get(service, {})

    def _apply(self, key: bytes, value: bytes | None) -> None:
        parsed = self._parse(key, value)
        if parsed is None:
            return
        service, instance_id, instance = parsed
        self._set(service, instance_id, instance)
        if instance is None:
            owned = self._owned.get(key.decode())
            if owned is not None:
                owned.poke()

    async def _follow(self, revision: int | None) -> None:
        """Keep the table current forever: watch from ``revision``; whenever the
        watch must start over, re-list first."""
        delay = RETRY_MIN_SECONDS
        while True:
            try:
                if revision is None:
                    revision = await self._resync()
                    delay = RETRY_MIN_SECONDS
                await self._watch_from(revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "%s: watch failed (%s), re-listing in %.1f s",
                    self.describe(),
                    _brief(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            revision = None

    async def _watch_from(self, revision: int) -> None:
        """Apply events after ``revision``; returns when a re-list is needed (and
        after ``resync_interval`` seconds anyway: a safety net that costs one range
        request)."""
        client = self._connected()
        assert client.watch is not None
        # An async generator (typed as an iterator): closed on the way out, so the
        # gRPC stream ends now rather than whenever it is garbage-collected.
        stream = cast(
            "AsyncGenerator[Any, None]",
            client.watch.watch(
                self.prefix,
                range_end=etcd3aio.prefix_range_end(self.prefix),
                start_revision=revision + 1,
            ),
        )
        created = False
        seen = revision  # the store's revision never goes back while it keeps its data
        try:
            async with asyncio.timeout(self.resync_interval), contextlib.aclosing(stream):
                async for response in stream:
                    if self._must_relist(response, created, seen):
                        return
                    created = True
                    seen = max(seen, int(response.header.revision))
                    for event in response.events:
                        deleted = event.type == _EVENT_DELETE
                        self._apply(event.kv.key, None if deleted else event.kv.value)
        except TimeoutError:
            log.debug("%s: periodic re-list", self.describe())
            return
        raise DiscoveryError("the watch stream ended")

    def _must_relist(self, response: Any, created: bool, seen: int) -> bool:
        """Whether this watch response means the table may have missed changes."""
        where = self.describe()
        if response.compact_revision:
            log.info(
                "%s: history compacted up to revision %d: re-listing",
                where,
                response.compact_revision,
            )
            return True
        if response.canceled:
            reason = response.cancel_reason or "no reason given"
            log.warning("%s: etcd cancelled the watch (%s): re-listing", where, reason)
            return True
        if response.created and created:
            # etcd3aio re-opened the stream after a connection loss, from the revision
            # it had; etcd may have restarted without its data: list afresh.
            log.info("%s: watch reconnected: re-listing", where)
            return True
        if response.header.revision < seen:
            log.warning(
                "%s: etcd's revision went back from %d to %d (its data was lost or "
                "replaced): re-listing",
                where,
                seen,
                response.header.revision,
            )
            return True
        return False
