"""rpc: a toy service over gRPC on loopback behaves as the object itself would."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from teamgram.errors import RpcError
from teamgram.infra import rpc, wire
from teamgram.infra.rpc import RemoteCallError, RemoteService, RpcServer, idempotent
from teamgram.tl import types

pytestmark = pytest.mark.timeout(60)


@wire.register(name="test.rpc.Draft")
@dataclasses.dataclass(frozen=True)
class Draft:
    peer: Any
    text: str
    reply_to: int | None = None


class Toy:
    """The service under test: counts how often each method really ran."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.cancelled = asyncio.Event()

    def _ran(self, name: str) -> None:
        self.runs[name] = self.runs.get(name, 0) + 1

    async def echo(self, value: Any, *, twice: bool = False) -> Any:
        self._ran("echo")
        return (value, value) if twice else value

    async def save(self, draft: Draft) -> Draft:
        self._ran("save")
        return dataclasses.replace(draft, text=draft.text.upper())

    async def refuse(self, name: str) -> None:
        raise RpcError(400, name)

    async def crash(self) -> None:
        raise KeyError("not for the caller's eyes")

    async def unencodable(self) -> object:
        return object()

    async def sleep(self, seconds: float) -> float:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return seconds

    @idempotent
    async def get(self, key: int) -> int:
        self._ran("get")
        return key * 2

    async def send(self, key: int) -> int:
        self._ran("send")
        return key

    async def remaining(self, nested: RemoteService) -> float:
        """The deadline a nested call from inside this one gets (inherited)."""
        return float(await nested.deadline_left())

    async def deadline_left(self) -> float:
        end = rpc._deadline.get()
        return -1.0 if end is None else end - time.monotonic()


METHODS = [n for n, f in inspect.getmembers(Toy, inspect.iscoroutinefunction) if n[0] != "_"]
METHODS.remove("remaining")  # needs a RemoteService argument: served by its own test


@pytest.fixture
async def served() -> AsyncIterator[tuple[Toy, RpcServer]]:
    toy = Toy()
    server = RpcServer("127.0.0.1", 0)
    server.add("toy", toy, METHODS)
    await server.start()
    try:
        yield toy, server
    finally:
        await server.stop(0)


@pytest.fixture
async def client(served: tuple[Toy, RpcServer]) -> AsyncIterator[RemoteService]:
    svc = RemoteService("toy", served[1].address, interface=Toy, deadline=5.0)
    try:
        yield svc
    finally:
        await svc.close()


async def test_plain_tl_and_dataclass_values(client: RemoteService) -> None:
    assert await client.echo(7) == 7
    assert await client.echo({"a": [1, (2, 3)]}, twice=True) == ({"a": [1, (2, 3)]},) * 2
    msg = types.Message(
        id=1, peer_id=types.PeerUser(user_id=5), date=1, message="x" * 1000, out=True
    )
    assert await client.echo([msg]) == [msg]
    saved = await client.save(Draft(types.InputPeerUser(user_id=5, access_hash=-1), "hi", 3))
    assert saved == Draft(types.InputPeerUser(user_id=5, access_hash=-1), "HI", 3)
    assert await client.call("echo", b"by name") == b"by name"


async def test_signature_checked_at_the_caller(client: RemoteService, served: Any) -> None:
    toy, _ = served
    assert (
        str(inspect.signature(client.echo)) == "(value: 'Any', *, twice: 'bool' = False) -> 'Any'"
    )
    with pytest.raises(TypeError):
        await client.echo(1, 2)
    with pytest.raises(AttributeError):
        _ = client.not_a_method
    assert toy.runs == {}
    with pytest.raises(TypeError):  # not encodable: refused before anything is sent
        await client.echo(object())


async def test_rpc_error_keeps_its_name(client: RemoteService) -> None:
    with pytest.raises(RpcError) as info:
        await client.refuse("PEER_ID_INVALID")
    assert type(info.value) is RpcError
    assert (info.value.code, info.value.message) == (400, "PEER_ID_INVALID")


async def test_unexpected_exception_is_internal(
    client: RemoteService, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="teamgram.infra.rpc"):
        with pytest.raises(RpcError) as info:
            await client.crash()
        assert (info.value.code, info.value.message) == (500, "INTERNAL")
        assert "not for the caller" not in str(info.value)
        with pytest.raises(RpcError) as info:
            await client.unencodable()
        assert (info.value.code, info.value.message) == (500, "INTERNAL")
    logged = [r for r in caplog.records if r.exc_info]
    assert [r.exc_info[0] for r in logged if r.exc_info] == [KeyError, TypeError]
    assert "toy.crash" in logged[0].getMessage()


async def test_deadline(served: tuple[Toy, RpcServer]) -> None:
    toy, server = served
    svc = RemoteService("toy", server.address, interface=Toy, deadline=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(RemoteCallError) as info:
            await svc.sleep(5)
        assert 0.15 < time.monotonic() - started < 2
        assert (info.value.code, info.value.message) == (500, "RPC_TIMEOUT")
        await asyncio.wait_for(toy.cancelled.wait(), 2)  # the server gave up on it too
        with rpc.deadline(0.05):  # a tighter one for a block
            with pytest.raises(RemoteCallError, match="RPC_TIMEOUT"):
                await svc.sleep(1)
        assert await svc.sleep(0.01) == 0.01
    finally:
        await svc.close()


async def test_deadline_inherited_by_nested_calls() -> None:
    toy = Toy()
    server = RpcServer("127.0.0.1", 0)
    server.add("toy", toy, [*METHODS])
    await server.start()
    outer = Toy()
    front = RpcServer("127.0.0.1", 0)
    nested = RemoteService("toy", server.address, interface=Toy, deadline=30)

    class Front:
        async def remaining(self) -> float:
            return await outer.remaining(nested)

    front.add("front", Front(), ["remaining"])
    await front.start()
    caller = RemoteService("front", front.address, deadline=1.0)
    try:
        left = await caller.remaining()
        assert 0.5 < left < 1.1  # the front call's 1 s, not the nested client's 30 s
    finally:
        await caller.close()
        await nested.close()
        await front.stop(0)
        await server.stop(0)


async def test_large_payload(client: RemoteService) -> None:
    blob = bytes(range(256)) * (6 * 4096)  # 6 MiB: past gRPC's default 4 MiB limit
    assert await client.echo(blob) == blob


async def test_detached_drops_the_inherited_deadline(client: RemoteService) -> None:
    with rpc.deadline(0.5):
        assert 0 < await client.deadline_left() < 0.6
        with rpc.detached():
            assert 4 < await client.deadline_left() < 5.1  # the client's own 5 s


async def test_unknown_method_and_service(served: tuple[Toy, RpcServer]) -> None:
    _, server = served
    svc = RemoteService("toy", server.address)
    other = RemoteService("nope", server.address)
    try:
        with pytest.raises(RemoteCallError, match="RPC_METHOD_INVALID"):
            await svc.call("missing")
        with pytest.raises(RemoteCallError, match="RPC_METHOD_INVALID"):
            await other.echo(1)
        assert await svc.describe() == {"methods": sorted(METHODS), "idempotent": ["get"]}
    finally:
        await svc.close()
        await other.close()


async def test_idempotent_retried_across_a_restart(unused_tcp_port: int) -> None:
    toy = Toy()
    server = RpcServer("127.0.0.1", unused_tcp_port)
    server.add("toy", toy, METHODS)
    await server.start()
    # 6 retries: at least 1.2 s of backoff, room for a restart on a busy machine
    svc = RemoteService("toy", server.address, interface=Toy, deadline=5.0, retries=6)
    try:
        assert await svc.get(1) == 2 and await svc.send(1) == 1
        await server.stop(0)

        # Down: the non-idempotent call fails at once, and never ran.
        started = time.monotonic()
        with pytest.raises(RemoteCallError) as info:
            await svc.send(2)
        assert (info.value.code, info.value.message) == (500, "RPC_UNAVAILABLE")
        assert time.monotonic() - started < 1.0

        # The idempotent one waits out a restart on the same port.
        async def restart() -> None:
            await asyncio.sleep(0.3)
            await server.start()

        restarting = asyncio.create_task(restart())
        started = time.monotonic()
        assert await svc.get(21) == 42
        assert time.monotonic() - started >= 0.25
        await restarting
        assert server.port == unused_tcp_port
        assert toy.runs == {"get": 2, "send": 1}
    finally:
        await svc.close()
        await server.stop(0)


async def test_retries_are_bounded(unused_tcp_port: int) -> None:
    svc = RemoteService(
        "toy", f"127.0.0.1:{unused_tcp_port}", interface=Toy, deadline=30, retries=3
    )
    try:
        started = time.monotonic()
        with pytest.raises(RemoteCallError, match="RPC_UNAVAILABLE"):
            await svc.get(1)
        assert time.monotonic() - started < 5  # 3 short backoffs, not the 30 s deadline
    finally:
        await svc.close()


async def test_picker_and_target_list(served: tuple[Toy, RpcServer], unused_tcp_port: int) -> None:
    _, server = served
    dead = f"127.0.0.1:{unused_tcp_port}"
    picks: list[str] = []
    addresses = [dead, server.address]

    def picker() -> str:
        picks.append(addresses[len(picks) % 2])
        return picks[-1]

    svc = RemoteService("toy", picker, interface=Toy)
    listed = RemoteService("toy", [dead, server.address], interface=Toy)
    nobody = RemoteService("toy", lambda: None, interface=Toy)
    try:
        assert await svc.get(2) == 4  # the dead address first, retried on the live one
        assert picks == [dead, server.address]
        assert await listed.get(3) == 6
        with pytest.raises(RemoteCallError, match="RPC_UNAVAILABLE"):
            await svc.send(1)  # the dead one again: not retried
        with pytest.raises(RemoteCallError, match="RPC_UNAVAILABLE"):
            await nobody.send(1)
    finally:
        for s in (svc, listed, nobody):
            await s.close()


async def test_concurrent_calls(served: tuple[Toy, RpcServer], client: RemoteService) -> None:
    toy, _ = served
    results = await asyncio.gather(*(client.get(i) for i in range(500)))
    assert results == [2 * i for i in range(500)]
    slow = await asyncio.gather(*(client.sleep(0.2) for _ in range(50)))
    assert slow == [0.2] * 50
    assert toy.runs["get"] == 500


async def test_local_and_remote_refs(served: tuple[Toy, RpcServer]) -> None:
    toy, server = served
    direct = rpc.local(toy)
    assert direct is toy
    copied = rpc.local(toy, through_wire=True)
    far = rpc.remote(Toy, "toy", server.address)
    try:
        for ref in (direct, copied, far):
            assert await ref.get(4) == 8
            with pytest.raises(RpcError, match="USER_ID_INVALID"):
                await ref.refuse("USER_ID_INVALID")
        with pytest.raises(TypeError):  # the embedded wire-copy mode catches it too
            await copied.echo(object())
    finally:
        await rpc.close_ref(far)
        await rpc.close_ref(direct)
