"""Cache invalidation: the drop log that guards loads, message batching and encoding,
self-ignore, and the load/drop race on real services (SQLite).

Redis itself is in tests/integration/test_invalidation.py; here its client is a
recorder, so what leaves a process in one loop tick can be counted exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from teamgram.infra import invalidation as inv
from teamgram.infra.database import open_database
from teamgram.infra.invalidation import (
    CacheTopic,
    DropLog,
    Key,
    LocalInvalidations,
    RedisInvalidations,
    decode,
    encode,
)
from teamgram.service.authsession.service import AuthKeyInfo, AuthSessionService
from teamgram.service.biz import privacy as pv
from teamgram.service.biz.chat import ChatService
from teamgram.service.biz.users import UserService
from teamgram.service.idgen.service import IdGenService
from teamgram.tl import types

pytestmark = pytest.mark.timeout(30)


class Recorder:
    """Stands in for redis.asyncio.Redis: records what is published."""

    def __init__(self, fail: int = 0) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.fail = fail

    async def publish(self, channel: str, message: bytes) -> int:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("redis is away")
        self.published.append((channel, message))
        return 1

    async def aclose(self) -> None:
        return None


def _topics(message: bytes) -> dict[str, list[Key] | None]:
    return decode(message)[1]


# ------------------------------------------------------------------- DropLog
def test_drop_log_clean_when_nothing_or_other_keys_dropped() -> None:
    log = DropLog()
    token = log.token()
    assert log.clean(token, [1, 2])
    log.dropped([3, 4])
    assert log.clean(token, [1, 2])
    assert not log.clean(token, [2, 3])
    assert log.clean(log.token(), [3])  # a load that began after the drop


def test_drop_log_everything_and_forgotten_history() -> None:
    log = DropLog(keep=4)
    token = log.token()
    log.dropped(None)
    assert not log.clean(token, [1])
    token = log.token()
    for k in range(10, 16):  # more drops than remembered
        log.dropped([k])
    assert not log.clean(token, [1])  # cannot tell: assumed raced
    token = log.token()
    log.dropped([7])
    assert log.clean(token, [1])


def test_cache_topic_local_changes_guard_loads_and_reach_invalidations() -> None:
    dropped: list[list[Key] | None] = []
    topic = CacheTopic("t", dropped.append)
    sent: list[tuple[str, list[Key]]] = []

    class Spy(LocalInvalidations):
        def publish(self, topic: str, keys: Any) -> None:
            sent.append((topic, list(keys)))

        def subscribe(self, topic: str, callback: Any) -> None:
            self.callback = callback

    spy = Spy()
    topic.attach(spy)
    token = topic.token()
    topic.changed([5])
    assert sent == [("t", [5])]
    assert dropped == []  # a local change updates the cache itself
    assert not topic.clean(token, [5])
    token = topic.token()
    spy.callback([6])  # another process's change
    assert dropped == [[6]]
    assert not topic.clean(token, [6]) and topic.clean(token, [5])
    topic.changed([])  # nothing to say: nothing sent
    assert len(sent) == 1


# ------------------------------------------------------------------ encoding
def test_encode_decode_round_trip_keeps_key_types() -> None:
    batch: dict[str, dict[Key, None] | None] = {
        "users": dict.fromkeys([1, 2**62, -5]),
        "names": dict.fromkeys(["a", "b"]),
        "all": None,
    }
    (message,) = encode("me", batch)
    sender, topics = decode(message)
    assert sender == "me"
    assert topics == {"users": [1, 2**62, -5], "names": ["a", "b"], "all": None}


def test_encode_splits_big_batches() -> None:
    n = inv.MESSAGE_KEYS_MAX * 2 + 10
    messages = encode("me", {"a": dict.fromkeys(range(n)), "b": dict.fromkeys([1])})
    assert len(messages) == 3
    got: dict[str, list[Key]] = {}
    for m in messages:
        for topic, keys in _topics(m).items():
            assert keys is not None
            got.setdefault(topic, []).extend(keys)
    assert got == {"a": list(range(n)), "b": [1]}
    assert all(
        sum(len(k or ()) for k in _topics(m).values()) <= inv.MESSAGE_KEYS_MAX for m in messages
    )


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[]", b'{"i": "x"}', b'{"i": "x", "t": {"a": [1.5]}}', b'{"t": {"a": 3}}'],
)
def test_decode_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)


# ----------------------------------------------------------- RedisInvalidations
async def _sender(invs: RedisInvalidations) -> asyncio.Task[None]:
    return asyncio.create_task(invs._sender())


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_keys_of_one_tick_leave_as_one_message() -> None:
    client = Recorder()
    invs = RedisInvalidations(client=client, prefix="p:")  # type: ignore[arg-type]
    task = await _sender(invs)
    try:
        invs.publish("users", [1, 2])
        invs.publish("users", [2, 3])
        invs.publish("chats", [9])
        invs.publish("empty", [])
        await invs.flush()
        assert len(client.published) == 1
        channel, message = client.published[0]
        assert channel == "p:invalidations"
        assert decode(message) == (invs.instance_id, {"users": [1, 2, 3], "chats": [9]})
        invs.publish("users", [4])  # a later tick: a message of its own
        await invs.flush()
        assert [_topics(m) for _, m in client.published[1:]] == [{"users": [4]}]
        assert invs.sent_messages == 2
    finally:
        await _stop(task)


async def test_publish_failures_are_retried_merged() -> None:
    client = Recorder(fail=1)
    invs = RedisInvalidations(client=client)  # type: ignore[arg-type]
    task = await _sender(invs)
    try:
        invs.publish("users", [1])
        await asyncio.sleep(0.02)  # the first attempt failed; retry after the backoff
        invs.publish("users", [2])
        await invs.flush()
        topics: dict[str, set[Key]] = {}
        for _, m in client.published:
            for t, keys in _topics(m).items():
                topics.setdefault(t, set()).update(keys or ())
        assert topics == {"users": {1, 2}}
    finally:
        await _stop(task)


async def test_too_many_pending_keys_become_drop_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inv, "PENDING_KEYS_MAX", 5)
    client = Recorder()
    invs = RedisInvalidations(client=client)  # type: ignore[arg-type]
    invs.publish("users", range(4))
    invs.publish("users", range(4, 10))
    invs.publish("users", [11])  # the whole topic goes already
    task = await _sender(invs)
    try:
        await invs.flush()
        assert [_topics(m) for _, m in client.published] == [{"users": None}]
    finally:
        await _stop(task)


def test_own_messages_are_ignored_others_delivered() -> None:
    invs = RedisInvalidations(client=Recorder())  # type: ignore[arg-type]
    other = RedisInvalidations(client=Recorder())  # type: ignore[arg-type]
    assert invs.instance_id != other.instance_id
    heard: list[tuple[str, list[Key] | None]] = []
    invs.subscribe("users", lambda keys: heard.append(("users", keys)))
    invs.subscribe("chats", lambda keys: heard.append(("chats", keys)))
    (mine,) = encode(invs.instance_id, {"users": dict.fromkeys([1])})
    (theirs,) = encode(other.instance_id, {"users": dict.fromkeys([2, "x"]), "chats": None})
    invs._deliver(mine)
    assert heard == []
    invs._deliver(theirs)
    assert heard == [("users", [2, "x"]), ("chats", None)]
    invs._deliver(b"garbage")  # logged, ignored
    assert invs.received_messages == 1


def test_a_failing_callback_does_not_stop_the_others() -> None:
    invs = RedisInvalidations(client=Recorder())  # type: ignore[arg-type]
    heard: list[list[Key] | None] = []

    def bad(keys: list[Key] | None) -> None:
        raise RuntimeError("boom")

    invs.subscribe("users", bad)
    invs.subscribe("users", heard.append)
    (msg,) = encode("someone", {"users": dict.fromkeys([1])})
    invs._deliver(msg)
    invs.drop_everything()
    assert heard == [[1], None]
    assert json.loads(msg)["i"] == "someone"


# ------------------------------------------------- the load/drop race, for real
@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = await open_database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        yield eng
    finally:
        await eng.dispose()


class Hub(LocalInvalidations):
    """Lets a test play "another process": fire the drops a service subscribed to."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Any]] = {}

    def subscribe(self, topic: str, callback: Any) -> None:
        self.callbacks.setdefault(topic, []).append(callback)

    def drop(self, topic: str, keys: list[Key] | None) -> None:
        for cb in self.callbacks[topic]:
            cb(keys)


class Gate:
    """An engine whose reads, once ``hold()`` is called, wait after reading: the
    test changes the row meanwhile, then lets the read (of the old row) finish."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.held = False
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    def hold(self) -> None:
        self.held = True
        self.reading.clear()
        self.release.clear()

    def begin(self) -> Any:
        return self.engine.begin()

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        async with self.engine.connect() as conn:
            yield _HeldConnection(conn, self)


class _HeldConnection:
    def __init__(self, conn: Any, gate: Gate) -> None:
        self.conn = conn
        self.gate = gate

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.conn.execute(*args, **kwargs)  # buffered: rows are read
        if self.gate.held:
            self.gate.held = False  # only the first read of the load waits
            self.gate.reading.set()
            await self.gate.release.wait()
        return result


async def test_user_load_raced_by_a_drop_is_not_cached(engine: AsyncEngine) -> None:
    users = UserService(engine, IdGenService(engine), b"s" * 32)
    gate = Gate(engine)
    users.engine = gate  # type: ignore[assignment]
    hub = Hub()
    users.use_invalidations(hub)
    writer = UserService(engine, IdGenService(engine), b"s" * 32)
    rec = await writer.create("100", "Ann")
    gate.hold()
    load = asyncio.create_task(users.get(rec.id))
    await gate.reading.wait()  # read "Ann"; now another process renames her
    await writer.update_profile(rec.id, first_name="Bea")
    hub.drop("users", [rec.id])
    gate.release.set()
    got = await load
    assert got is not None and got.first_name == "Ann"  # as read: not wrong, but old
    assert rec.id not in users._cache  # so not kept
    again = await users.get(rec.id)  # a load after the drop is kept
    assert again is not None and again.first_name == "Bea" and users._cache[rec.id] is again
    # A drop of another user does not stop a load from being kept.
    users._cache.clear()
    gate.hold()
    load = asyncio.create_task(users.get(rec.id))
    await gate.reading.wait()
    hub.drop("users", [rec.id + 1])
    gate.release.set()
    await load
    assert rec.id in users._cache


async def test_drops_empty_user_caches(engine: AsyncEngine) -> None:
    users = UserService(engine, IdGenService(engine), b"s" * 32)
    hub = Hub()
    users.use_invalidations(hub)
    a = await users.create("101", "A")
    b = await users.create("102", "B")
    await users.load_notify(a.id)
    assert a.id in users._cache and a.id in users._notify
    hub.drop("users", [a.id])
    hub.drop("users.notify", [a.id])
    assert a.id not in users._cache and b.id in users._cache and a.id not in users._notify
    hub.drop("users", None)
    assert not users._cache


async def test_privacy_load_raced_by_a_drop_reads_again(engine: AsyncEngine) -> None:
    writer = pv.PrivacyService(engine)
    reader = pv.PrivacyService(engine)
    gate = Gate(engine)
    reader.engine = gate  # type: ignore[assignment]
    hub = Hub()
    reader.use_invalidations(hub)
    await writer.set_rules(7, pv.PHONE_NUMBER, [types.PrivacyValueDisallowAll()])
    gate.hold()
    load = asyncio.create_task(reader.get_rules(7, pv.PHONE_NUMBER))
    await gate.reading.wait()
    await writer.set_rules(7, pv.PHONE_NUMBER, [types.PrivacyValueAllowAll()])
    hub.drop("privacy", [7])
    gate.release.set()
    got = await load
    # Read again after the drop: the new rules, and those are kept.
    assert got == [types.PrivacyValueAllowAll()]
    assert reader._cache[(7, pv.PHONE_NUMBER)] == got
    assert await reader.get_rules(7, pv.PHONE_NUMBER) == got


async def test_local_write_stops_an_older_load_from_caching(engine: AsyncEngine) -> None:
    chats = ChatService(engine)
    rec = await chats.create(1, "old", [2])
    chats._cache.clear()
    gate = Gate(engine)
    chats.engine = gate  # type: ignore[assignment]
    gate.hold()
    load = asyncio.create_task(chats.get(rec.id))
    await gate.reading.wait()
    # The same process renames the chat while its own older load is in flight (the
    # rename loads the chat too: a read of its own, after the old one).
    await chats.set_title(rec.id, "new", 1)
    gate.release.set()
    old = await load
    assert old is not None and old.title == "old"
    got = await chats.get(rec.id)
    assert got is not None and got.title == "new"


async def test_auth_key_copies_held_elsewhere_are_refreshed(engine: AsyncEngine) -> None:
    auth = AuthSessionService(engine)
    hub = Hub()
    auth.use_invalidations(hub)
    other = AuthSessionService(engine)
    try:
        temp = AuthKeyInfo(auth_key_id=11, auth_key=b"k" * 256, key_type=1, expires_at=2**31 - 1)
        perm = AuthKeyInfo(auth_key_id=12, auth_key=b"p" * 256)
        assert await auth.create_key(temp) and await auth.create_key(perm)
        await auth.bind_temp_key(11, 12, 2**31 - 1)
        held = await auth.get_key(11)  # a session keeps this object
        assert held is temp and held.perm_auth_key_id == 12
        auth._cache.clear()  # evicted: the session still holds it
        # Another process binds a new temp key to the permanent one.
        newer = AuthKeyInfo(auth_key_id=13, auth_key=b"n" * 256, key_type=1, expires_at=2**31 - 1)
        assert await other.create_key(newer)
        await other.bind_temp_key(13, 12, 2**31 - 1)
        hub.drop("auth.keys", [11, 13])
        for _ in range(200):
            if held.perm_auth_key_id is None:
                break
            await asyncio.sleep(0.01)
        assert held.perm_auth_key_id is None  # unbound, in the copy the session holds
        await other.destroy_key(12)
        hub.drop("auth.keys", [12])
        assert await auth.get_key(12) is None
        for _ in range(200):
            if perm.expires_at == 0:
                break
            await asyncio.sleep(0.01)
        assert perm.expires_at == 0  # destroyed: expired where it is held
        # Destroyed here: every copy handed out here expires at once.
        assert await auth.destroy_key(11)
        assert held.expires_at == 0
    finally:
        await auth.close()
        await other.close()
