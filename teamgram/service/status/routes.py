"""Session routes: which session process holds each connected auth key of a user.

Gateways and sessions scale out: several gnetway+session process pairs serve one
user base, so an update for a user must reach every session process ("instance")
holding one of the user's connected auth keys. Each instance announces the keys it
holds with :meth:`SessionRoutes.online` and a time to live, re-announces them
(:class:`Refresher`, every ``ttl / 3``) while it holds them, and withdraws them with
:meth:`SessionRoutes.offline`. An instance that dies without withdrawing stops
refreshing, and its entries expire by themselves: updates are never routed to a
dead process for longer than ``ttl``. Instance ids should be unique per process
start (host, pid and a random part), so a restarted process does not inherit the
entries of its previous life.

Two bindings:

* :class:`MemoryRoutes`: in process, the embedded default (one process holds every
  key). Expiry by :func:`time.monotonic`.
* :class:`RedisRoutes`: shared by every process through Redis (6.2+); expiry by the
  Redis server's clock, so the processes' clocks do not matter.

Redis data layout (``prefix`` defaults to ``tg:``)::

    {prefix}routes:{user_id}   sorted set, one member per (auth key, instance):
                               member "{auth_key_id}@{instance_id}" (decimal key id;
                               the instance id is everything after the first "@"),
                               score  the entry's expiry, Unix time in milliseconds
                               (server clock). Entries at or below "now" are dead:
                               reads skip them, writes (online) delete them. The key
                               itself expires (PEXPIREAT) at its latest entry's
                               expiry, so users nobody refreshes vanish entirely.

    {prefix}ctr:{namespace}:{owner}
                               string, a counter (:class:`RedisCounters`): no expiry.

Every routes operation is one Lua script per user (atomic, and it reads the server's
``TIME``); calls for many users go in one pipeline, one round trip, each script
touching one key (so the layout also suits Redis Cluster).

Counters (pts, message ids) are per owner and shared by every writer: ``next`` is an
atomic ``INCRBY``. A counter that does not exist is never started from zero (after
a Redis restart without persistence, or an eviction, that would hand out used
values again): ``next`` raises :class:`CounterUnset` and the owner's service sets it
from its database with ``set_at_least`` (a max, so racing initialisers and writers
never lower it). Keep Redis persistent (AOF) and under a ``noeviction`` or
``volatile-*`` policy all the same: counters carry no TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

log = logging.getLogger(__name__)

# How long an announced key stays routed without a refresh (the Refresher renews it
# every third of this): a dead session process stops receiving updates this soon.
ROUTE_TTL = 60.0
# Users per pipeline in the *_many calls: one round trip each, bounded memory.
PIPELINE_BATCH = 5000
# Redis connection: fail a call rather than hang the caller on a dead server.
REDIS_TIMEOUT = 5.0

Routes = dict[str, set[int]]  # instance id -> auth key ids it holds


class CounterUnset(KeyError):
    """The counter has no value (new owner, or lost): set it from the database first."""


class SessionRoutes(Protocol):
    """Where each user's connected auth keys are held (see the module docstring)."""

    async def online(self, user_id: int, auth_key_id: int, instance_id: str, ttl: float) -> bool:
        """``instance_id`` holds the user's connected ``auth_key_id`` for ``ttl`` more
        seconds. True when this made the user online: no live entry before."""
        ...

    async def online_many(
        self, instance_id: str, entries: Iterable[tuple[int, int]], ttl: float
    ) -> set[int]:
        """:meth:`online` for many ``(user_id, auth_key_id)`` at once (a refresh);
        returns the users it made online."""
        ...

    async def offline(self, user_id: int, auth_key_id: int, instance_id: str) -> bool:
        """``instance_id`` no longer holds ``auth_key_id``. True when the user is left
        with no live entry anywhere (offline on every instance)."""
        ...

    async def offline_many(self, instance_id: str, entries: Iterable[tuple[int, int]]) -> set[int]:
        """:meth:`offline` for many ``(user_id, auth_key_id)``; returns the users left
        with no live entry."""
        ...

    async def instances_of(self, user_id: int) -> Routes:
        """The instances holding the user's live keys: instance id -> auth key ids."""
        ...

    async def instances_of_many(self, user_ids: Iterable[int]) -> dict[int, Routes]:
        """:meth:`instances_of` for many users in one round trip (a chat's members);
        users with no live entry are absent."""
        ...

    async def online_users(self, user_ids: Iterable[int]) -> set[int]:
        """Those of ``user_ids`` with at least one live entry."""
        ...

    async def close(self) -> None: ...


class Counters(Protocol):
    """Atomic per-owner counters shared by every writer (pts, message ids)."""

    async def next(self, owner: int | str, n: int = 1) -> int:
        """Reserve ``n`` new values; returns the last (they are ``last - n + 1 .. last``).

        Raises :class:`CounterUnset` when the owner's counter has no value."""
        ...

    async def get(self, owner: int | str) -> int | None:
        """The last value handed out, or None when the counter has no value."""
        ...

    async def set_at_least(self, owner: int | str, value: int) -> int:
        """Raise the counter to ``value`` unless it is higher already (never lowers it);
        returns its value afterwards."""
        ...

    async def close(self) -> None: ...


def _ttl_ms(ttl: float) -> int:
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, not {ttl!r}")
    return max(1, round(ttl * 1000))


def _check_instance(instance_id: str) -> str:
    if not instance_id:
        raise ValueError("instance_id must not be empty")
    return instance_id


# ---------------------------------------------------------------------------- memory
class MemoryRoutes(SessionRoutes):
    """In-process routes: the embedded default, where one process holds every key."""

    # Sweep users nobody refreshes at most this often (reads and writes skip the dead).
    SWEEP_SECONDS = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # user -> (instance, auth key) -> expiry on self._clock
        self._users: dict[int, dict[tuple[str, int], float]] = {}
        self._swept = clock()

    def _live(self, user_id: int, now: float) -> dict[tuple[str, int], float]:
        """The user's entries with the dead ones dropped (and the user, if none left)."""
        entries = self._users.get(user_id)
        if entries is None:
            return {}
        dead = [e for e, until in entries.items() if until <= now]
        for e in dead:
            del entries[e]
        if not entries:
            del self._users[user_id]
        return entries

    def _sweep(self, now: float) -> None:
        if now - self._swept >= self.SWEEP_SECONDS:
            self._swept = now
            for user_id in list(self._users):
                self._live(user_id, now)

    async def online(self, user_id: int, auth_key_id: int, instance_id: str, ttl: float) -> bool:
        return bool(await self.online_many(instance_id, [(user_id, auth_key_id)], ttl))

    async def online_many(
        self, instance_id: str, entries: Iterable[tuple[int, int]], ttl: float
    ) -> set[int]:
        _check_instance(instance_id)
        now = self._clock()
        until = now + _ttl_ms(ttl) / 1000
        self._sweep(now)
        became: set[int] = set()
        for user_id, auth_key_id in entries:
            live = self._live(user_id, now)
            if not live:
                became.add(user_id)
                live = self._users[user_id] = {}
            live[(instance_id, auth_key_id)] = until
        return became

    async def offline(self, user_id: int, auth_key_id: int, instance_id: str) -> bool:
        return bool(await self.offline_many(instance_id, [(user_id, auth_key_id)]))

    async def offline_many(self, instance_id: str, entries: Iterable[tuple[int, int]]) -> set[int]:
        _check_instance(instance_id)
        now = self._clock()
        gone: set[int] = set()
        for user_id, auth_key_id in entries:
            self._users.get(user_id, {}).pop((instance_id, auth_key_id), None)
            if not self._live(user_id, now):
                gone.add(user_id)
        return gone

    async def instances_of(self, user_id: int) -> Routes:
        return (await self.instances_of_many([user_id])).get(user_id, {})

    async def instances_of_many(self, user_ids: Iterable[int]) -> dict[int, Routes]:
        now = self._clock()
        out: dict[int, Routes] = {}
        for user_id in user_ids:
            for (instance_id, auth_key_id), until in self._users.get(user_id, {}).items():
                if until > now:
                    out.setdefault(user_id, {}).setdefault(instance_id, set()).add(auth_key_id)
        return out

    async def online_users(self, user_ids: Iterable[int]) -> set[int]:
        now = self._clock()
        users = self._users
        return {u for u in user_ids if any(t > now for t in users.get(u, {}).values())}

    async def close(self) -> None:
        self._users.clear()


class MemoryCounters(Counters):
    """In-process counters: the embedded default (one writer process)."""

    def __init__(self) -> None:
        # keyed by str(owner), as in Redis: owner 42 and "42" are one counter
        self._values: dict[str, int] = {}

    async def next(self, owner: int | str, n: int = 1) -> int:
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n!r}")
        key = str(owner)
        if key not in self._values:
            raise CounterUnset(owner)
        self._values[key] += n
        return self._values[key]

    async def get(self, owner: int | str) -> int | None:
        return self._values.get(str(owner))

    async def set_at_least(self, owner: int | str, value: int) -> int:
        key = str(owner)
        current = max(self._values.get(key, value), int(value))
        self._values[key] = current
        return current

    async def close(self) -> None:
        self._values.clear()


# ----------------------------------------------------------------------------- redis
# Every script starts from the server's clock, in milliseconds (exact in a double).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] routes key; ARGV[1] member, ARGV[2] ttl ms. Returns 1 if the user had no
# live entry before. Drops dead entries, keeps the key until its latest entry dies.
_ONLINE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local before = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
if before == 0 then return 1 end
return 0
"""
)

# KEYS[1] routes key; ARGV[1] member. Returns 1 if the user has no live entry left.
_OFFLINE = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('ZCOUNT', KEYS[1], string.format('(%d', now), '+inf') == 0 then return 1 end
return 0
"""
)

# KEYS[1] routes key. The live members.
_LIVE = (
    _NOW
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%d', now), '+inf')
"""
)

# KEYS[1] routes key. How many live members.
_COUNT = (
    _NOW
    + """
return redis.call('ZCOUNT', KEYS[1], string.format('(%d', now), '+inf')
"""
)

# KEYS[1] counter; ARGV[1] n. The new value, or false (nil) when the counter is unset.
_NEXT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""

# KEYS[1] counter; ARGV[1] value. Raises the counter to the value; returns the result.
_SET_AT_LEAST = """
local v = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]))
if cur ~= nil and cur >= v then return cur end
redis.call('SET', KEYS[1], ARGV[1])
return v
"""


class _Script:
    """A Lua script run by its SHA1 (EVALSHA), loaded on the first NOSCRIPT."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _RedisClient:
    """The Redis connection and the script plumbing the bindings share."""

    def __init__(self, url: str | None, client: Redis | None) -> None:
        if client is None:
            if url is None:
                raise ValueError("a Redis url or client is needed")
            client = Redis.from_url(
                url,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                health_check_interval=30,
            )
            self._owned = True
        else:
            self._owned = False
        self.redis = client

    async def _run(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(script.source)
            return await self.redis.evalsha(script.sha, len(keys), *keys, *args)

    async def _run_many(
        self, script: _Script, calls: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[Any]:
        """``script`` once per (key, args), pipelined: one round trip per PIPELINE_BATCH."""
        results: list[Any] = []
        for start in range(0, len(calls), PIPELINE_BATCH):
            batch = calls[start : start + PIPELINE_BATCH]
            part = await self._pipeline(script, batch)
            missing = [i for i, r in enumerate(part) if isinstance(r, NoScriptError)]
            if missing:  # the server restarted or flushed its scripts: load, redo those
                await self.redis.script_load(script.source)
                again = await self._pipeline(script, [batch[i] for i in missing])
                for i, r in zip(missing, again, strict=True):
                    part[i] = r
            for r in part:
                if isinstance(r, Exception):
                    raise r
            results.extend(part)
        return results

    async def _pipeline(
        self, script: _Script, calls: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, args in calls:
                pipe.evalsha(script.sha, 1, key, *args)
            return await pipe.execute(raise_on_error=False)

    async def close(self) -> None:
        if self._owned:
            await self.redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisRoutes(_RedisClient, SessionRoutes):
    """Routes shared by every process through Redis (layout: the module docstring).

    ``url`` (``redis://host:6379/0``) opens a client this object owns and closes;
    ``client`` shares one (left open on :meth:`close`).
    """

    _online = _Script(_ONLINE)
    _offline = _Script(_OFFLINE)
    _live = _Script(_LIVE)
    _count = _Script(_COUNT)

    def __init__(
        self, url: str | None = None, prefix: str = "tg:", *, client: Redis | None = None
    ) -> None:
        super().__init__(url, client)
        self.prefix = prefix

    def key(self, user_id: int) -> str:
        return f"{self.prefix}routes:{int(user_id)}"

    @staticmethod
    def member(auth_key_id: int, instance_id: str) -> str:
        return f"{int(auth_key_id)}@{_check_instance(instance_id)}"

    @staticmethod
    def _routes(members: Iterable[bytes | str]) -> Routes:
        routes: Routes = {}
        for m in members:
            key_id, _, instance_id = _text(m).partition("@")
            routes.setdefault(instance_id, set()).add(int(key_id))
        return routes

    async def online(self, user_id: int, auth_key_id: int, instance_id: str, ttl: float) -> bool:
        member = self.member(auth_key_id, instance_id)
        return bool(await self._run(self._online, [self.key(user_id)], [member, _ttl_ms(ttl)]))

    async def online_many(
        self, instance_id: str, entries: Iterable[tuple[int, int]], ttl: float
    ) -> set[int]:
        ms = _ttl_ms(ttl)
        pairs = list(entries)
        calls = [(self.key(u), [self.member(k, instance_id), ms]) for u, k in pairs]
        results = await self._run_many(self._online, calls)
        return {u for (u, _), became in zip(pairs, results, strict=True) if became}

    async def offline(self, user_id: int, auth_key_id: int, instance_id: str) -> bool:
        member = self.member(auth_key_id, instance_id)
        return bool(await self._run(self._offline, [self.key(user_id)], [member]))

    async def offline_many(self, instance_id: str, entries: Iterable[tuple[int, int]]) -> set[int]:
        pairs = list(entries)
        calls = [(self.key(u), [self.member(k, instance_id)]) for u, k in pairs]
        results = await self._run_many(self._offline, calls)
        return {u for (u, _), gone in zip(pairs, results, strict=True) if gone}

    async def instances_of(self, user_id: int) -> Routes:
        return self._routes(await self._run(self._live, [self.key(user_id)], []))

    async def instances_of_many(self, user_ids: Iterable[int]) -> dict[int, Routes]:
        users = list(dict.fromkeys(user_ids))
        results = await self._run_many(self._live, [(self.key(u), []) for u in users])
        return {u: self._routes(ms) for u, ms in zip(users, results, strict=True) if ms}

    async def online_users(self, user_ids: Iterable[int]) -> set[int]:
        users = list(dict.fromkeys(user_ids))
        results = await self._run_many(self._count, [(self.key(u), []) for u in users])
        return {u for u, n in zip(users, results, strict=True) if n}


class RedisCounters(_RedisClient, Counters):
    """Counters shared by every writer through Redis: ``{prefix}ctr:{namespace}:{owner}``.

    One namespace per kind of counter (``pts``, ``channel_pts``, ``msg_id``...), so
    owners of different kinds never share a counter.
    """

    _next = _Script(_NEXT)
    _set_at_least = _Script(_SET_AT_LEAST)

    def __init__(
        self,
        url: str | None = None,
        namespace: str = "default",
        prefix: str = "tg:",
        *,
        client: Redis | None = None,
    ) -> None:
        super().__init__(url, client)
        self.prefix = prefix
        self.namespace = namespace

    def key(self, owner: int | str) -> str:
        return f"{self.prefix}ctr:{self.namespace}:{owner}"

    async def next(self, owner: int | str, n: int = 1) -> int:
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n!r}")
        value = await self._run(self._next, [self.key(owner)], [n])
        if value is None:
            raise CounterUnset(owner)
        return int(value)

    async def get(self, owner: int | str) -> int | None:
        value = await self.redis.get(self.key(owner))
        return None if value is None else int(value)

    async def set_at_least(self, owner: int | str, value: int) -> int:
        return int(await self._run(self._set_at_least, [self.key(owner)], [int(value)]))


# --------------------------------------------------------------------------- refresh
class Refresher:
    """Keeps one session instance's announced keys alive, and withdraws them on stop.

    The session host calls :meth:`add` when a signed-in key gets a connection and
    :meth:`remove` when it has none left; a task re-announces every held key each
    ``ttl / 3`` (so two missed refreshes in a row are survived). Calls are applied
    in order (a lock): a refresh in flight never brings back a key removed meanwhile.
    A failed refresh is logged and retried at the next tick.
    """

    def __init__(self, routes: SessionRoutes, instance_id: str, ttl: float = ROUTE_TTL) -> None:
        _ttl_ms(ttl)
        self.routes = routes
        self.instance_id = _check_instance(instance_id)
        self.ttl = ttl
        self.held: set[tuple[int, int]] = set()  # (user_id, auth_key_id)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def add(self, user_id: int, auth_key_id: int) -> bool:
        """Hold and announce a key; True when this made the user online.

        Held even if announcing fails (the error propagates): the next tick retries.
        """
        async with self._lock:
            self.held.add((user_id, auth_key_id))
            return await self.routes.online(user_id, auth_key_id, self.instance_id, self.ttl)

    async def remove(self, user_id: int, auth_key_id: int) -> bool:
        """Withdraw a key; True when the user has no live entry left anywhere."""
        async with self._lock:
            self.held.discard((user_id, auth_key_id))
            return await self.routes.offline(user_id, auth_key_id, self.instance_id)

    async def refresh(self) -> None:
        """Re-announce every held key now."""
        async with self._lock:
            if self.held:
                await self.routes.online_many(self.instance_id, list(self.held), self.ttl)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.refresh()
            except Exception:
                log.warning(
                    "session routes: refresh of %d keys failed", len(self.held), exc_info=True
                )

    async def stop(self) -> None:
        """Stop refreshing and withdraw every held key (a clean shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock:
            held, self.held = list(self.held), set()
            if held:
                try:
                    await self.routes.offline_many(self.instance_id, held)
                except Exception:  # they expire by themselves within ttl
                    log.warning(
                        "session routes: withdrawing %d keys failed", len(held), exc_info=True
                    )


def open_routes(url: str | None, prefix: str = "tg:") -> SessionRoutes:
    """Redis routes for a ``redis://`` / ``rediss://`` / ``unix://`` URL; in memory for None."""
    return MemoryRoutes() if url is None else RedisRoutes(url, prefix)


def open_counters(url: str | None, namespace: str, prefix: str = "tg:") -> Counters:
    """Redis counters for a URL; in memory for None."""
    return MemoryCounters() if url is None else RedisCounters(url, namespace, prefix)
