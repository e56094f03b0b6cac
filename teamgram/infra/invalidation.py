"""Cache invalidation between processes that write the same database.

Services keep whole records in memory (users, chats, channels, privacy rules, auth
keys...). In the embedded default one process writes everything and updates its
caches in place, so they are always right. In split mode several processes write
the same rows: after a write commits, the writer names the records it changed
(:meth:`Invalidations.publish`, a topic and keys), and every other process drops
them from its caches (the callbacks given to :meth:`Invalidations.subscribe`), so
its next read goes to the database.

Two bindings:

* :class:`LocalInvalidations`: the embedded default; one process, nothing to tell.
* :class:`RedisInvalidations`: Redis pub/sub on one channel per cluster
  (``{prefix}invalidations``). Keys published in one loop tick leave as one
  message (JSON ``{"i": instance, "t": {topic: [keys] | null}}``); a process
  ignores its own messages. Pub/sub is fire-and-forget: a subscriber that was
  disconnected may have missed messages, so whenever the subscription is lost and
  whenever it is (re)established every callback is called with ``None`` (drop
  everything). While Redis is unreachable that repeats at every reconnection
  attempt, so nothing stays cached for longer than the retry backoff
  (:data:`BACKOFF_MAX`).

The race a subscriber must guard against: it starts loading a row, the writer
commits and publishes, the drop arrives (nothing to drop yet), then the load
stores the row it read before the commit. :class:`DropLog` answers "was any of
these keys dropped since this load began?"; a load stores only if not.
:class:`CacheTopic` bundles a cache's topic, its drop callback and its log; local
writes go through it too, so a load of this process that began before one of its
own commits does not store the older row either.

Topics (keys are ints), each owned by one service (``use_invalidations``)::

    users             user ids: UserService records (profile, username, photo, last seen)
    users.notify      user ids: their notification settings
    chats             chat ids: ChatService records (title, members, rights, photo)
    channels          channel ids: ChannelService records (participants included)
    channels.members  user ids whose channel memberships changed (channels_of)
    privacy           user ids: PrivacyService rules
    contacts          owner ids: ContactService contact lists
    blocked           owner ids: ContactService block lists
    auth.keys         auth key ids: AuthSessionService keys (temp binding, layer, deletion)
    auth.users        permanent auth key ids whose sign-in changed
    auth.passwords    user ids whose 2FA password changed
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections import deque
from collections.abc import Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the embedded default never loads redis-py
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

Key = int | str
# Called with the keys another process changed, or None: drop everything.
Callback = Callable[[list[Key] | None], None]

# Keys per message: one message stays small (a big channel's members go in several).
MESSAGE_KEYS_MAX = 2000
# Past this many keys waiting for one topic (Redis unreachable for long), the topic
# is sent as "drop everything" instead: bounded memory.
PENDING_KEYS_MAX = 100_000
# Redis calls fail rather than hang on a dead server.
REDIS_TIMEOUT = 5.0
# The subscription is checked with a PING after this much silence, and given up
# (then re-established) when the answer takes longer than PING_TIMEOUT.
PING_EVERY = 5.0
PING_TIMEOUT = 5.0
# Reconnection backoff, doubling from BACKOFF_MIN.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
# How long start() waits for the first subscription.
START_TIMEOUT = 10.0


class Invalidations(Protocol):
    """Tells other processes which cached records changed, and hears what they changed."""

    def publish(self, topic: str, keys: Iterable[Key]) -> None:
        """After a commit: other processes drop ``keys`` of ``topic``. Never blocks
        (queued, sent in the background)."""
        ...

    def subscribe(self, topic: str, callback: Callback) -> None:
        """Call ``callback`` (on the event loop, synchronously: keep it short) with the
        keys other processes publish on ``topic``, or with None: drop everything."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def drop_keys(cache: MutableMapping[int, Any], keys: list[Key] | None) -> None:
    """What a cache keyed by ids does with a drop: forget ``keys`` (None: all)."""
    if keys is None:
        cache.clear()
    else:
        for k in keys:
            cache.pop(int(k), None)


class LocalInvalidations:
    """The embedded default: one process writes everything, nobody else to tell."""

    def publish(self, topic: str, keys: Iterable[Key]) -> None:
        return None

    def subscribe(self, topic: str, callback: Callback) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class DropLog:
    """Which keys were dropped lately, so a load can tell whether what it read may
    predate a change (then it must not be cached).

    ``token()`` before the read; ``clean(token, keys)`` after it: False when one of
    ``keys`` (or everything) was dropped in between. The last ``keep`` drops are
    remembered; a load older than that is assumed to have raced one.
    """

    __slots__ = ("_recent", "generation")

    def __init__(self, keep: int = 256) -> None:
        self.generation = 0
        self._recent: deque[tuple[int, frozenset[Key] | None]] = deque(maxlen=keep)

    def token(self) -> int:
        return self.generation

    def dropped(self, keys: Iterable[Key] | None) -> None:
        """``keys`` (None: every key) changed or were dropped just now."""
        self.generation += 1
        self._recent.append((self.generation, None if keys is None else frozenset(keys)))

    def clean(self, token: int, keys: Iterable[Key]) -> bool:
        """None of ``keys`` was dropped since ``token`` was taken."""
        if token == self.generation:
            return True
        if not self._recent or self._recent[0][0] > token + 1:
            return False  # the drops since then are no longer all remembered
        wanted = keys if isinstance(keys, set | frozenset) else set(keys)
        for generation, dropped in reversed(self._recent):
            if generation <= token:
                break
            if dropped is None or not dropped.isdisjoint(wanted):
                return False
        return True


# How many times a load is retried when a drop races it, before it answers from
# what it read without caching it.
LOAD_TRIES = 3


class CacheTopic:
    """One cache's side of invalidation: the topic it publishes its changes on, the
    drops it hears, and the :class:`DropLog` its loads check.

    ``drop`` empties the cache of the keys named (None: of everything). Local
    writes call :meth:`changed` after they commit: other processes drop the keys,
    and loads of this process that began before the commit do not cache what they
    read.
    """

    __slots__ = ("_drop", "invalidations", "log", "topic")

    def __init__(self, topic: str, drop: Callback) -> None:
        self.topic = topic
        self._drop = drop
        self.log = DropLog()
        self.invalidations: Invalidations = LocalInvalidations()

    def attach(self, invalidations: Invalidations) -> None:
        self.invalidations = invalidations
        invalidations.subscribe(self.topic, self._dropped)

    def _dropped(self, keys: list[Key] | None) -> None:
        self.log.dropped(keys)
        self._drop(keys)

    def changed(self, keys: Iterable[Key]) -> None:
        """After a commit that changed the records of ``keys``."""
        keys = list(keys)
        if keys:
            self.log.dropped(keys)
            self.invalidations.publish(self.topic, keys)

    def token(self) -> int:
        return self.log.generation

    def clean(self, token: int, keys: Iterable[Key]) -> bool:
        """A load that took ``token`` before reading ``keys`` may cache what it read."""
        return self.log.clean(token, keys)


def new_instance_id(label: str = "") -> str:
    """Unique per object (host, pid and a random part): two in one process differ too."""
    base = label or f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{secrets.token_hex(4)}"


def encode(instance_id: str, batch: dict[str, dict[Key, None] | None]) -> list[bytes]:
    """The messages for ``batch`` (topic -> keys, None: everything), each under
    :data:`MESSAGE_KEYS_MAX` keys."""
    out: list[bytes] = []
    topics: dict[str, list[Key] | None] = {}
    size = 0
    for topic, keys in batch.items():
        if keys is None:
            topics[topic] = None
            continue
        items = list(keys)
        while items:
            room = MESSAGE_KEYS_MAX - size
            if room <= 0:
                out.append(_dump(instance_id, topics))
                topics, size = {}, 0
                room = MESSAGE_KEYS_MAX
            part, items = items[:room], items[room:]
            existing = topics.get(topic)
            if existing is None:
                topics[topic] = part
            else:
                existing.extend(part)
            size += len(part)
    if topics:
        out.append(_dump(instance_id, topics))
    return out


def _dump(instance_id: str, topics: dict[str, list[Key] | None]) -> bytes:
    return json.dumps({"i": instance_id, "t": topics}, separators=(",", ":")).encode()


def decode(data: bytes | str) -> tuple[str, dict[str, list[Key] | None]]:
    """(sender instance, topic -> keys or None); ValueError for a malformed message."""
    msg = json.loads(data)
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), dict):
        raise ValueError("not an invalidation message")
    topics: dict[str, list[Key] | None] = {}
    for topic, keys in msg["t"].items():
        if keys is not None and not (
            isinstance(keys, list) and all(isinstance(k, int | str) for k in keys)
        ):
            raise ValueError(f"bad keys for topic {topic!r}")
        topics[str(topic)] = keys
    return str(msg.get("i", "")), topics


class RedisInvalidations:
    """Invalidations over Redis pub/sub (see the module docstring).

    ``url`` opens a client this object owns and closes; ``client`` shares one (left
    open on :meth:`close`). ``prefix`` names the cluster (``tg:`` ->
    channel ``tg:invalidations``); ``instance_id`` defaults to a fresh unique one.
    """

    def __init__(
        self,
        url: str | None = None,
        prefix: str = "tg:",
        *,
        client: Redis | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.instance_id = instance_id or new_instance_id()
        if client is None:
            if url is None:
                raise ValueError("a Redis url or client is needed")
            from redis.asyncio import Redis

            client = Redis.from_url(
                url,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                socket_keepalive=True,
                client_name=f"tg-inval-{self.instance_id}"[:64].replace(" ", "_"),
            )
            self._owned = True
        else:
            self._owned = False
        self.redis = client
        self.channel = f"{prefix}invalidations"
        self._callbacks: dict[str, list[Callback]] = {}
        self._pending: dict[str, dict[Key, None] | None] = {}
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._sending = False
        # Counters (tests, metrics).
        self.sent_messages = 0
        self.received_messages = 0
        self.full_drops = 0  # times every callback was called with None

    # ------------------------------------------------------------------ publish
    def publish(self, topic: str, keys: Iterable[Key]) -> None:
        waiting = self._pending.get(topic, {})
        if waiting is None:
            return  # the whole topic goes already
        before = len(waiting)
        waiting.update(dict.fromkeys(keys))
        if len(waiting) == before:
            return
        self._pending[topic] = None if len(waiting) > PENDING_KEYS_MAX else waiting
        self._wake.set()

    async def _sender(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, {}
            if not batch:
                continue
            self._sending = True
            try:
                for message in encode(self.instance_id, batch):
                    await self.redis.publish(self.channel, message)
                    self.sent_messages += 1
                backoff = BACKOFF_MIN
            except asyncio.CancelledError:
                self._merge_back(batch)
                raise
            except Exception as exc:
                # Sent again, whole (a drop twice is harmless), once Redis answers.
                log.warning("invalidations: publish failed (%s); retrying", exc)
                self._merge_back(batch)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self._wake.set()
            finally:
                self._sending = False

    def _merge_back(self, batch: dict[str, dict[Key, None] | None]) -> None:
        for topic, keys in batch.items():
            if keys is None:
                self._pending[topic] = None
            else:
                self.publish(topic, keys)

    # ---------------------------------------------------------------- subscribe
    def subscribe(self, topic: str, callback: Callback) -> None:
        self._callbacks.setdefault(topic, []).append(callback)

    def _call(self, topic: str, keys: list[Key] | None) -> None:
        for callback in self._callbacks.get(topic, ()):
            try:
                callback(keys)
            except Exception:
                log.exception("invalidations: callback for %s failed", topic)

    def drop_everything(self) -> None:
        """Every callback with None: what this process missed cannot be known."""
        self.full_drops += 1
        for topic in list(self._callbacks):
            self._call(topic, None)

    def _deliver(self, data: bytes | str) -> None:
        try:
            sender, topics = decode(data)
        except ValueError as exc:
            log.warning("invalidations: ignored a malformed message (%s)", exc)
            return
        if sender == self.instance_id:
            return
        self.received_messages += 1
        for topic, keys in topics.items():
            if keys is None or keys:
                self._call(topic, keys)

    async def _listener(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                heard = loop.time()
                pinged: float | None = None
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    now = loop.time()
                    if msg is None:
                        if pinged is None and now - heard > PING_EVERY:
                            await pubsub.ping()
                            pinged = now
                        elif pinged is not None and now - pinged > PING_TIMEOUT:
                            raise ConnectionError("no answer to PING")
                        continue
                    heard, pinged = now, None
                    kind = msg["type"]
                    if kind == "message":
                        self._deliver(msg["data"])
                    elif kind == "subscribe":
                        # First subscription, or redis-py's own reconnection: what
                        # was published meanwhile is lost.
                        self.drop_everything()
                        self._ready.set()
                        backoff = BACKOFF_MIN
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._closing:
                    log.warning("invalidations: subscription lost (%s); reconnecting", exc)
            finally:
                self._ready.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if self._closing:
                return
            # Unsubscribed: messages may be missed from now on, and caches filled
            # meanwhile may go stale; dropped again at every attempt.
            self.drop_everything()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    @property
    def subscribed(self) -> bool:
        return self._ready.is_set()

    async def wait_subscribed(self, timeout: float = START_TIMEOUT) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Subscribe (waits for the subscription: ConnectionError if Redis does not
        answer within :data:`START_TIMEOUT`) and start sending."""
        if self._tasks:
            return
        self._closing = False
        self._tasks = [
            asyncio.create_task(self._listener(), name="invalidations-listener"),
            asyncio.create_task(self._sender(), name="invalidations-sender"),
        ]
        if self._pending:
            self._wake.set()
        try:
            await self.wait_subscribed()
        except TimeoutError as exc:
            await self.close()
            raise ConnectionError(f"invalidations: cannot subscribe to {self.channel}") from exc

    async def flush(self, timeout: float = REDIS_TIMEOUT) -> None:
        """Wait until what was published so far is sent (best effort, bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._pending or self._sending) and loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        if self._tasks:
            await self.flush(timeout=1.0)
        self._closing = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._owned:
            await self.redis.aclose()
