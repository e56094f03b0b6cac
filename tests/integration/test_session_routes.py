"""Session routes and counters: one contract, run on the in-memory and the Redis binding.

Redis is this machine's (``TEAMGRAM_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``). Every test uses keys under a prefix of its own
(``tg_test_<random>:``) and deletes them at the end. Unreachable Redis fails the
tests when ``CI=true`` and skips them anywhere else.

"Another process" is another client object on the same store: for Redis a second
connection with the same prefix, in memory the same object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from teamgram.service.status.routes import (
    _LIVE,
    Counters,
    CounterUnset,
    MemoryCounters,
    MemoryRoutes,
    RedisCounters,
    RedisRoutes,
    Refresher,
    SessionRoutes,
    _Script,
)
from tests.integration.conftest import unavailable

pytestmark = pytest.mark.timeout(60)

REDIS_URL = os.environ.get("TEAMGRAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BINDINGS = ["memory", "redis"]

# Why Redis could not be used ("" when it could), so a dead server costs one timeout.
_redis_unreachable: list[str] = []


async def _check_redis() -> None:
    if not _redis_unreachable:
        client = Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        try:
            await client.ping()
            _redis_unreachable.append("")
        except Exception as exc:
            _redis_unreachable.append(f"{REDIS_URL}: {type(exc).__name__}: {exc}")
        finally:
            await client.aclose()
    if _redis_unreachable[0]:
        unavailable("redis", _redis_unreachable[0])


@dataclass
class Store:
    """Views onto one store: ``routes()`` / ``counters()`` as another process sees it."""

    binding: str
    prefix: str
    opened: list[SessionRoutes | Counters] = field(default_factory=list)
    _memory_routes: MemoryRoutes = field(default_factory=MemoryRoutes)
    _memory_counters: dict[str, MemoryCounters] = field(default_factory=dict)

    def routes(self) -> SessionRoutes:
        if self.binding == "memory":
            return self._memory_routes
        r = RedisRoutes(REDIS_URL, prefix=self.prefix)
        self.opened.append(r)
        return r

    def counters(self, namespace: str = "pts") -> Counters:
        if self.binding == "memory":
            return self._memory_counters.setdefault(namespace, MemoryCounters())
        c = RedisCounters(REDIS_URL, namespace, prefix=self.prefix)
        self.opened.append(c)
        return c


@pytest.fixture(params=BINDINGS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    binding: str = request.param
    if binding == "redis":
        await _check_redis()
    s = Store(binding, f"tg_test_{secrets.token_hex(6)}:")
    try:
        yield s
    finally:
        for o in s.opened:
            await o.close()
        if binding == "redis":
            client = Redis.from_url(REDIS_URL, socket_timeout=5)
            try:
                keys = [k async for k in client.scan_iter(match=f"{s.prefix}*", count=1000)]
                if keys:
                    await client.delete(*keys)
                assert [k async for k in client.scan_iter(match=f"{s.prefix}*")] == []
            finally:
                await client.aclose()


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------ routes
async def test_online_offline(store: Store) -> None:
    r = store.routes()
    low, high = -(2**63), 2**63 - 1  # auth key ids are signed 64-bit
    inst = "host-1:20120@pid 7"  # any text, "@" and ":" included
    assert await r.instances_of(1) == {}
    assert await r.online(1, low, inst, 30) is True  # the user came online
    assert await r.online(1, high, inst, 30) is False  # already was
    assert await r.online(1, high, inst, 30) is False  # refresh of the same entry
    assert await r.instances_of(1) == {inst: {low, high}}
    assert await r.online_users([1, 2, 3]) == {1}
    assert await r.offline(1, low, inst) is False  # one key left
    assert await r.instances_of(1) == {inst: {high}}
    assert await r.offline(1, high, inst) is True  # none left anywhere
    assert await r.offline(1, high, inst) is True  # idempotent
    assert await r.instances_of(1) == {}
    assert await r.online_users([1]) == set()
    assert await r.instances_of_many([1, 2]) == {}


async def test_expiry_without_refresh(store: Store) -> None:
    r = store.routes()
    await r.online(1, 11, "a", 1.0)
    await r.online(2, 22, "a", 30.0)
    await r.online(3, 33, "a", 1.0)
    await r.online(3, 34, "b", 30.0)
    assert await r.online_users([1, 2, 3]) == {1, 2, 3}
    await asyncio.sleep(1.2)
    assert await r.instances_of(1) == {}
    assert await r.online_users([1, 2, 3]) == {2, 3}
    assert await r.instances_of_many([1, 2, 3]) == {2: {"a": {22}}, 3: {"b": {34}}}
    assert await r.online(1, 11, "a", 30.0) is True  # online again after expiring
    if isinstance(r, RedisRoutes):
        # the user's key expired as a whole: nothing left behind for abandoned users
        await r.online(4, 44, "a", 0.3)
        assert await r.redis.exists(r.key(4)) == 1

        async def gone() -> bool:
            return await r.redis.exists(r.key(4)) == 0

        await _eventually(gone)
        assert 0 < await r.redis.pttl(r.key(3)) <= 30_000  # the longest entry's life
        # a write drops dead members of the user's set
        await r.online(3, 35, "b", 30.0)
        members = {str(m, "ascii") for m in await r.redis.zrange(r.key(3), 0, -1)}  # type: ignore[arg-type]
        assert members == {"34@b", "35@b"}


async def test_refresh_keeps_it(store: Store) -> None:
    r = store.routes()
    await r.online(1, 11, "a", 1.0)
    for _ in range(3):
        await asyncio.sleep(0.5)
        assert await r.online(1, 11, "a", 1.0) is False  # still online: refreshed in time
    assert await r.instances_of(1) == {"a": {11}}

    refresher = Refresher(r, "b", ttl=1.0)
    refresher.start()
    try:
        assert await refresher.add(2, 21) is True
        await asyncio.sleep(2.2)  # more than twice the ttl
        assert await r.instances_of(2) == {"b": {21}}
    finally:
        await refresher.stop()
    assert await r.instances_of(2) == {}


async def test_two_instances(store: Store) -> None:
    a, b = store.routes(), store.routes()  # two session processes
    assert await a.online(1, 10, "a", 30) is True
    assert await b.online(1, 11, "b", 30) is False
    assert await b.online(1, 12, "b", 30) is False
    expected = {"a": {10}, "b": {11, 12}}
    assert await a.instances_of(1) == expected
    assert await b.instances_of(1) == expected
    assert await a.instances_of_many([1]) == {1: expected}
    # the same key id on another instance is another entry (a key moved over)
    await b.online(1, 10, "b", 30)
    assert await a.instances_of(1) == {"a": {10}, "b": {10, 11, 12}}
    assert await a.offline(1, 10, "a") is False
    assert await b.offline_many("b", [(1, 10), (1, 11)]) == set()
    assert await a.instances_of(1) == {"b": {12}}
    assert await b.offline(1, 12, "b") is True
    assert await a.online_users([1]) == set()


async def test_dead_holder_expires(store: Store) -> None:
    view = store.routes()
    alive = Refresher(store.routes(), "alive", ttl=1.0)
    dying = Refresher(store.routes(), "dying", ttl=1.0)
    alive.start()
    dying.start()
    task = dying._task
    assert task is not None
    try:
        await alive.add(1, 11)
        await dying.add(1, 12)
        await dying.add(2, 22)
        assert await view.instances_of(1) == {"alive": {11}, "dying": {12}}
        task.cancel()  # the process dies: no refresh, no withdrawal
        await asyncio.sleep(1.5)
        assert await view.instances_of_many([1, 2]) == {1: {"alive": {11}}}
        assert await view.online_users([1, 2]) == {1}
    finally:
        await alive.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        dying._task = None


async def test_instances_of_many_1000_users(store: Store) -> None:
    a, b = store.routes(), store.routes()
    users = list(range(1_000_000, 1_001_000))
    on_a = [(u, u * 10) for u in users[::2]]  # even users: one key on a
    on_b = [(u, u * 10 + 1) for u in users[::3]]  # every third: one key on b
    assert await a.online_many("a", on_a, 30) == {u for u, _ in on_a}
    assert await b.online_many("b", on_b, 30) == {u for u, _ in on_b} - {u for u, _ in on_a}
    asked = [*users, *range(2_000_000, 2_001_000)]  # and 1,000 nobody announced

    start = time.perf_counter()
    got = await b.instances_of_many(asked)
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    online = await b.online_users(asked)
    elapsed_online = time.perf_counter() - start
    print(
        f"\n[{store.binding}] instances_of_many({len(asked)} users, {len(got)} online): "
        f"{elapsed * 1000:.1f} ms; online_users: {elapsed_online * 1000:.1f} ms"
    )

    expected: dict[int, dict[str, set[int]]] = {}
    for u, k in on_a:
        expected.setdefault(u, {}).setdefault("a", set()).add(k)
    for u, k in on_b:
        expected.setdefault(u, {}).setdefault("b", set()).add(k)
    assert got == expected
    assert online == set(expected)
    assert await a.offline_many("a", on_a) == {u for u, _ in on_a} - {u for u, _ in on_b}


async def test_clean_stop_removes_all(store: Store) -> None:
    view = store.routes()
    other = Refresher(store.routes(), "other", ttl=30)
    holder = Refresher(store.routes(), "holder", ttl=30)
    holder.start()
    entries = [(u, u + 500) for u in range(1, 301)] + [(1, 999)]
    for u, k in entries:
        await holder.add(u, k)
    await other.add(1, 7)
    assert await holder.remove(2, 502) is True
    assert await view.online_users(range(1, 301)) == set(range(1, 301)) - {2}
    await holder.stop()
    assert holder.held == set()
    assert await view.instances_of_many(range(1, 301)) == {1: {"other": {7}}}
    await other.stop()
    assert await view.online_users([1]) == set()


async def test_refresher_orders_add_and_remove(store: Store) -> None:
    """A refresh in flight never brings back a key removed meanwhile."""
    view = store.routes()
    holder = Refresher(store.routes(), "h", ttl=30)
    for u in range(200):
        await holder.add(u, u)
    for _ in range(5):
        refresh = asyncio.ensure_future(holder.refresh())
        await asyncio.sleep(0)
        await holder.remove(7, 7)
        await refresh
        assert await view.instances_of(7) == {}
        await holder.add(7, 7)
    await holder.stop()
    assert await view.online_users(range(200)) == set()


async def test_redis_reloads_flushed_scripts(store: Store) -> None:
    if store.binding != "redis":
        pytest.skip("Redis only: scripts missing from the server's cache")
    r = store.routes()
    assert isinstance(r, RedisRoutes)
    await r.online(5, 50, "a", 30)
    # a script the server has never seen (as after a restart): NOSCRIPT, load, retry
    r._live = _Script(f"{_LIVE}-- {secrets.token_hex(8)}\n")
    assert await r.instances_of(5) == {"a": {50}}
    r._live = _Script(f"{_LIVE}-- {secrets.token_hex(8)}\n")
    assert await r.instances_of_many([5, 6]) == {5: {"a": {50}}}


# ---------------------------------------------------------------------------- counters
async def test_counter_unset_and_set_at_least(store: Store) -> None:
    c = store.counters()
    with pytest.raises(CounterUnset):
        await c.next(42)
    assert await c.get(42) is None
    assert await c.set_at_least(42, 5) == 5  # initialised from "the database"
    assert await c.set_at_least(42, 3) == 5  # never lowers
    assert await c.get(42) == 5
    assert await c.next(42) == 6
    assert await c.next(42, 4) == 10  # reserved 7..10
    assert await c.set_at_least(42, 10) == 10
    assert await c.set_at_least(42, 100) == 100
    assert await c.next(42) == 101
    # namespaces and owners are separate counters
    assert await store.counters("msg_id").get(42) is None
    assert await c.get("42:other") is None
    with pytest.raises(ValueError):
        await c.next(42, 0)


async def test_counter_concurrent_next(store: Store) -> None:
    views = [store.counters() for _ in range(4)]  # four writer processes
    owner = 7
    await views[0].set_at_least(owner, 0)

    async def writer(i: int) -> list[int]:
        c = views[i % len(views)]
        return [await c.next(owner) for _ in range(25)]

    start = time.perf_counter()
    results = await asyncio.gather(*(writer(i) for i in range(40)))
    elapsed = time.perf_counter() - start
    print(f"\n[{store.binding}] 1000 concurrent next() from 40 tasks: {elapsed * 1000:.1f} ms")
    values = sorted(v for r in results for v in r)
    assert values == list(range(1, 1001))  # unique and consecutive
    for r in results:
        assert r == sorted(r)  # each writer sees its own values increase

    # batches: disjoint ranges, no gaps
    lasts = await asyncio.gather(*(views[i % 4].next(owner, 5) for i in range(20)))
    values = sorted(v for last in lasts for v in range(last - 4, last + 1))
    assert values == list(range(1001, 1101))


async def test_counter_set_at_least_never_lowers(store: Store) -> None:
    views = [store.counters() for _ in range(3)]
    owner = "channel:9"
    await views[0].set_at_least(owner, 1000)

    async def initialiser(i: int) -> None:  # late starters with stale database values
        for v in range(900 + i, 1200, 37):
            await views[i % 3].set_at_least(owner, v)

    async def writer(i: int) -> list[int]:
        return [await views[i % 3].next(owner) for _ in range(50)]

    tasks = [initialiser(i) for i in range(5)]
    written = await asyncio.gather(*(writer(i) for i in range(5)), *tasks)
    seen = [v for r in written[:5] if r is not None for v in r]
    assert len(seen) == len(set(seen)) == 250  # no value handed out twice
    for r in written[:5]:
        assert r is not None and r == sorted(r)
    highest_initial = max(v for i in range(5) for v in range(900 + i, 1200, 37))
    final = await views[1].get(owner)
    assert final is not None and final >= max(*seen, highest_initial)
    assert await views[2].set_at_least(owner, 0) == final
