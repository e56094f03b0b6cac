"""Service discovery (#9): StaticDiscovery's contract, and EtcdDiscovery against a
real etcd on loopback (tests/etcd_server.py): registrations under leases, a watched
instance table, dead instances dropped within the ttl, recovery from etcd restarts.

Each test on the shared etcd uses a key prefix of its own. Lease ttl is 2 s (etcd's
minimum with its default timing), so "within ttl + 2 s" is 4 s.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import etcd3aio
import pytest

from teamgram.infra.discovery import (
    Change,
    ChangeKind,
    DiscoveryError,
    EtcdDiscovery,
    EtcdRegistration,
    Instance,
    NoInstanceError,
    StaticDiscovery,
)
from teamgram.testing.children import free_ports
from tests.etcd_server import EtcdProcess, etcd_fixture, etcd_private_fixture  # noqa: F401

TTL = 2
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


async def eventually(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition()`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def ids(instances: list[Instance]) -> list[str]:
    return [i.instance_id for i in instances]


@pytest.fixture
def prefix() -> str:
    return f"/teamgram-test-{secrets.token_hex(4)}/"


@pytest.fixture
async def make_discovery(
    etcd: EtcdProcess, prefix: str
) -> AsyncIterator[Callable[[], EtcdDiscovery]]:
    """Unstarted EtcdDiscovery clients on the shared etcd, closed at the end."""
    made: list[EtcdDiscovery] = []

    def make() -> EtcdDiscovery:
        d = EtcdDiscovery([etcd.endpoint], ttl=TTL, prefix=prefix)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


class Collector:
    """Gathers what one watch() yields, in the background."""

    def __init__(self, stream: AsyncIterator[Change]) -> None:
        self.changes: list[tuple[ChangeKind, str]] = []
        self.ended = False
        self._task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: AsyncIterator[Change]) -> None:
        async for change in stream:
            self.changes.append((change.kind, change.instance.instance_id))
        self.ended = True

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# -- StaticDiscovery ---------------------------------------------------------------


async def test_static_contract() -> None:
    d = StaticDiscovery({"service.idgen": ["10.0.0.2:20660", "10.0.0.1:20660"]})
    assert d.services() == ["service.idgen"]
    assert ids(d.instances("service.idgen")) == ["10.0.0.1:20660", "10.0.0.2:20660"]
    picks = [d.pick("service.idgen").address for _ in range(4)]
    assert picks == ["10.0.0.1:20660", "10.0.0.2:20660"] * 2
    with pytest.raises(NoInstanceError, match=r"messenger\.msg.*service\.idgen"):
        d.pick("messenger.msg")
    assert d.instances("messenger.msg") == []

    collector = Collector(d.watch("messenger.msg"))
    reg = await d.register("messenger.msg", "msg-1", "127.0.0.1:20030", {"zone": "a"})
    assert d.pick("messenger.msg") == Instance(
        "messenger.msg", "msg-1", "127.0.0.1:20030", {"zone": "a"}
    )
    assert await d.wait_for("messenger.msg", 1, timeout=1) == [reg.instance]
    await reg.close()
    assert d.instances("messenger.msg") == []
    with pytest.raises(NoInstanceError):
        await d.wait_for("messenger.msg", 1, timeout=0.1)
    await eventually(lambda: len(collector.changes) == 2, 1, "two changes")
    assert collector.changes == [(ChangeKind.ADDED, "msg-1"), (ChangeKind.REMOVED, "msg-1")]

    # A watch starts with what is there; close() ends every watch.
    async with d:
        snapshot = Collector(d.watch("service.idgen"))
        await eventually(lambda: len(snapshot.changes) == 2, 1, "snapshot")
    await eventually(lambda: collector.ended and snapshot.ended, 1, "watches end on close")
    with pytest.raises(DiscoveryError, match="closed"):
        await d.register("messenger.msg", "msg-2", "127.0.0.1:20031")
    with pytest.raises(ValueError):
        StaticDiscovery({"bad/name": ["x:1"]})


# -- EtcdDiscovery -------------------------------------------------------------------


async def test_two_instances_seen_by_another_client(
    make_discovery: Callable[[], EtcdDiscovery], etcd: EtcdProcess, prefix: str
) -> None:
    a, b, reader = make_discovery(), make_discovery(), make_discovery()
    await reader.start()
    assert reader.instances("service.idgen") == []
    await a.register("service.idgen", "idgen-a", "127.0.0.1:20661", {"version": "1"})
    await b.register("service.idgen", "idgen-b", "127.0.0.1:20662")
    await eventually(lambda: len(reader.instances("service.idgen")) == 2, 2, "both listed")
    assert reader.instances("service.idgen") == [
        Instance("service.idgen", "idgen-a", "127.0.0.1:20661", {"version": "1"}),
        Instance("service.idgen", "idgen-b", "127.0.0.1:20662", {}),
    ]
    # The registrants see each other too (one table per client, whole prefix).
    await eventually(lambda: len(a.instances("service.idgen")) == 2, 2, "a sees b")
    # Keys as documented, JSON values.
    async with etcd3aio.Etcd3Client([etcd.endpoint]) as raw:
        assert raw.kv is not None
        got = await raw.kv.get(f"{prefix}service.idgen/idgen-a")
        assert got.kvs[0].value == b'{"address": "127.0.0.1:20661", "meta": {"version": "1"}}'
        assert got.kvs[0].lease != 0
    # A client started later lists what is there.
    late = make_discovery()
    await late.start()
    assert ids(late.instances("service.idgen")) == ["idgen-a", "idgen-b"]


async def test_close_removes_promptly(make_discovery: Callable[[], EtcdDiscovery]) -> None:
    a, reader = make_discovery(), make_discovery()
    await reader.start()
    keep = await a.register("messenger.msg", "msg-1", "127.0.0.1:20030")
    gone = await a.register("messenger.msg", "msg-2", "127.0.0.1:20031")
    await eventually(lambda: len(reader.instances("messenger.msg")) == 2, 2, "listed")
    await gone.close()
    took = await eventually(
        lambda: ids(reader.instances("messenger.msg")) == ["msg-1"], 1, "closed one removed"
    )
    assert took < 0.5
    # Closing the discovery withdraws what it still has registered.
    await a.close()
    await eventually(lambda: reader.instances("messenger.msg") == [], 1, "all removed")
    await keep.close()  # already withdrawn: harmless


DYING_INSTANCE = """
import asyncio, sys
from teamgram.infra.discovery import EtcdDiscovery

async def main() -> None:
    d = EtcdDiscovery([sys.argv[1]], ttl=int(sys.argv[2]), prefix=sys.argv[3])
    await d.register("service.idgen", "idgen-doomed", "127.0.0.1:20669")
    print("registered", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_killed_instance_disappears_within_ttl(
    make_discovery: Callable[[], EtcdDiscovery], etcd: EtcdProcess, prefix: str
) -> None:
    reader = make_discovery()
    await reader.start()
    proc = subprocess.Popen(
        [sys.executable, "-c", DYING_INSTANCE, etcd.endpoint, str(TTL), prefix],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line == b"registered\n"
        await eventually(lambda: len(reader.instances("service.idgen")) == 1, 2, "listed")
        # Alive for longer than the ttl: the keep-alive works.
        await asyncio.sleep(TTL + 1)
        assert ids(reader.instances("service.idgen")) == ["idgen-doomed"]
        proc.send_signal(signal.SIGKILL)  # no revoke, no goodbye
        took = await eventually(
            lambda: reader.instances("service.idgen") == [], TTL + 2, "dead instance dropped"
        )
        print(f"killed instance dropped after {took:.2f} s (ttl {TTL} s)")
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_pick_round_robin(make_discovery: Callable[[], EtcdDiscovery]) -> None:
    a, reader = make_discovery(), make_discovery()
    await reader.start()
    with pytest.raises(NoInstanceError, match=r"service\.authsession"):
        reader.pick("service.authsession")
    for n in (3, 1, 2):
        await a.register("service.authsession", f"as-{n}", f"127.0.0.1:2045{n}")
    await eventually(lambda: len(reader.instances("service.authsession")) == 3, 2, "3 listed")
    picks = [reader.pick("service.authsession").instance_id for _ in range(6)]
    assert picks == ["as-1", "as-2", "as-3"] * 2


async def test_watch_sees_adds_updates_and_removes(
    make_discovery: Callable[[], EtcdDiscovery],
) -> None:
    a, reader = make_discovery(), make_discovery()
    await a.register("biz.users", "u-0", "127.0.0.1:20100")
    await reader.start()
    collector = Collector(reader.watch("biz.users"))
    other = Collector(reader.watch("biz.chats"))  # another service: sees nothing
    await eventually(lambda: collector.changes == [(ChangeKind.ADDED, "u-0")], 2, "snapshot")
    r1 = await a.register("biz.users", "u-1", "127.0.0.1:20101")
    await a.register("biz.users", "u-0", "127.0.0.1:20199")  # same id, new address
    await r1.close()
    expected = [
        (ChangeKind.ADDED, "u-0"),
        (ChangeKind.ADDED, "u-1"),
        (ChangeKind.UPDATED, "u-0"),
        (ChangeKind.REMOVED, "u-1"),
    ]
    await eventually(lambda: collector.changes == expected, 2, f"changes {expected}")
    assert reader.pick("biz.users").address == "127.0.0.1:20199"
    assert other.changes == []
    await reader.close()
    await eventually(lambda: collector.ended and other.ended, 1, "watches end on close")


async def test_lost_lease_is_recreated(
    make_discovery: Callable[[], EtcdDiscovery], etcd: EtcdProcess, prefix: str
) -> None:
    a, reader = make_discovery(), make_discovery()
    await reader.start()
    reg = await a.register("service.media", "m-1", "127.0.0.1:20700")
    assert isinstance(reg, EtcdRegistration)
    first_lease = reg.lease_id
    await eventually(lambda: len(reader.instances("service.media")) == 1, 2, "listed")
    collector = Collector(reader.watch("service.media"))
    async with etcd3aio.Etcd3Client([etcd.endpoint]) as raw:
        assert raw.lease is not None and raw.kv is not None
        await raw.lease.revoke(first_lease)  # as if it had expired
        took = await eventually(
            lambda: (
                (ChangeKind.REMOVED, "m-1") in collector.changes
                and len(reader.instances("service.media")) == 1
            ),
            TTL + 2,
            "back under a new lease",
        )
        assert reg.lease_id not in (0, first_lease)
        print(f"entry back {took:.2f} s after its lease was revoked")
        # Deleted by hand while the lease lives: put back too.
        await raw.kv.delete(reg.key)
        await eventually(lambda: len(collector.changes) == 5, TTL + 2, "put back after delete")
        assert collector.changes[-2:] == [(ChangeKind.REMOVED, "m-1"), (ChangeKind.ADDED, "m-1")]


async def test_compaction_relists(
    make_discovery: Callable[[], EtcdDiscovery],
    etcd: EtcdProcess,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch resumes from a revision that was compacted away: re-list, go on."""
    writer, reader = make_discovery(), make_discovery()
    await writer.register("service.status", "s-1", "127.0.0.1:20800")
    real_watch_from = EtcdDiscovery._watch_from
    compacted: list[int] = []

    async def watch_after_compaction(self: EtcdDiscovery, revision: int) -> None:
        if not compacted:  # between the list and the watch: a change, then compaction
            await writer.register("service.status", "s-2", "127.0.0.1:20801")
            async with etcd3aio.Etcd3Client([etcd.endpoint]) as raw:
                assert raw.kv is not None
                # Watching from revision + 1 must fail: compact past it.
                head = (await raw.kv.put(f"{prefix}unrelated", "x")).header.revision
                await raw.kv.compact(head, physical=True)
                compacted.append(head)
        await real_watch_from(self, revision)

    monkeypatch.setattr(EtcdDiscovery, "_watch_from", watch_after_compaction)
    await reader.start()
    assert ids(reader.instances("service.status")) == ["s-1"]
    await eventually(
        lambda: ids(reader.instances("service.status")) == ["s-1", "s-2"], 3, "re-listed"
    )
    assert reader.resyncs >= 2 and compacted
    await writer.register("service.status", "s-3", "127.0.0.1:20802")
    await eventually(lambda: len(reader.instances("service.status")) == 3, 2, "watching again")


async def test_periodic_relist(etcd: EtcdProcess, prefix: str) -> None:
    reader = EtcdDiscovery([etcd.endpoint], ttl=TTL, prefix=prefix, resync_interval=0.2)
    async with reader:
        await eventually(lambda: reader.resyncs >= 3, 2, "re-listed twice more")
        writer = EtcdDiscovery([etcd.endpoint], ttl=TTL, prefix=prefix)
        async with writer:
            await writer.register("service.idgen", "i", "127.0.0.1:20660")
            await eventually(lambda: len(reader.instances("service.idgen")) == 1, 2, "listed")


async def test_start_fails_clearly_without_etcd() -> None:
    (port,) = free_ports(1)
    d = EtcdDiscovery([f"127.0.0.1:{port}"], ttl=TTL, start_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match=rf"127\.0\.0\.1:{port}.*did not answer"):
        await d.start()
    assert time.monotonic() - started < 5
    with pytest.raises(DiscoveryError, match="not started"):
        d.pick("service.idgen")
    await d.close()


# -- etcd restarts ---------------------------------------------------------------------


async def _restart_scenario(etcd_private: EtcdProcess, wipe: bool) -> None:
    prefix = "/teamgram/"
    a = EtcdDiscovery([etcd_private.endpoint], ttl=TTL, prefix=prefix)
    reader = EtcdDiscovery([etcd_private.endpoint], ttl=TTL, prefix=prefix)
    try:
        r1 = await a.register("service.idgen", "idgen-1", "127.0.0.1:20661")
        await a.register("service.idgen", "idgen-2", "127.0.0.1:20662")
        await reader.start()
        assert len(reader.instances("service.idgen")) == 2
        # The reader's watch is up once a change reaches it (a listing would not).
        marker = await a.register("service.marker", "m", "127.0.0.1:1")
        await eventually(lambda: reader.services() == ["service.idgen", "service.marker"], 2, "")
        await marker.close()
        assert isinstance(r1, EtcdRegistration)
        lease_before = r1.lease_id
        resyncs_before = reader.resyncs

        stopped = time.monotonic()
        etcd_private.stop()
        await asyncio.sleep(1.0)  # clients notice: keep-alives and the watch fail
        # Meanwhile the table keeps what it knew.
        assert len(reader.instances("service.idgen")) == 2
        if wipe:
            etcd_private.wipe()
        await asyncio.to_thread(etcd_private.start)
        up = time.monotonic()
        print(f"etcd down {up - stopped:.2f} s (wipe={wipe})")

        # The registrations are there (kept, or put back under new leases) ...
        async with etcd3aio.Etcd3Client([etcd_private.endpoint]) as raw:
            assert raw.kv is not None

            async def count_keys() -> int:
                """(-1 while this client cannot reach etcd yet.)"""
                assert raw.kv is not None
                try:
                    got = await raw.kv.get(prefix, etcd3aio.prefix_range_end(prefix))
                except etcd3aio.EtcdError:
                    return -1
                return len(got.kvs)

            deadline = time.monotonic() + TTL + 8
            while await count_keys() != 2:
                assert time.monotonic() < deadline, "registrations did not come back"
                await asyncio.sleep(0.05)
        print(f"registrations back {time.monotonic() - up:.2f} s after etcd was up")
        if wipe:
            assert r1.lease_id not in (0, lease_before)
        # ... the watcher recovered (re-listed) and follows new changes.
        took = await eventually(lambda: reader.resyncs > resyncs_before, 10, "re-listed")
        print(f"watcher re-listed {took:.2f} s after the registrations were back")
        await a.register("service.idgen", "idgen-3", "127.0.0.1:20663")
        await r1.close()
        await eventually(
            lambda: ids(reader.instances("service.idgen")) == ["idgen-2", "idgen-3"],
            5,
            "watcher follows changes after the restart",
        )
        # No stale keep-alive failures left behind: the lease stays up past a ttl.
        await asyncio.sleep(TTL + 1)
        assert ids(reader.instances("service.idgen")) == ["idgen-2", "idgen-3"]
    finally:
        await a.close()
        await reader.close()


async def test_etcd_restart_same_data(etcd_private: EtcdProcess) -> None:
    await _restart_scenario(etcd_private, wipe=False)


async def test_etcd_restart_lost_data(etcd_private: EtcdProcess) -> None:
    await _restart_scenario(etcd_private, wipe=True)
