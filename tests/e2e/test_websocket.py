"""Our MTProto test client over the WebSocket listener (ws://host:port/apiws, obfuscated2).

Obfuscated abridged, intermediate and padded intermediate: handshake,
help.getConfig, ping, a container of requests, a reconnect reusing the key;
then several clients at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from teamgram.server import Server
from teamgram.testing import MTClient
from teamgram.tl import functions, types

MTClientFactory = Callable[..., Awaitable[MTClient]]
MTClientFor = Callable[..., Awaitable[MTClient]]
ServerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Server]]
KINDS = ["abridged", "intermediate", "padded"]


async def check_client(client: MTClient, rounds: int = 3) -> None:
    """help.getConfig and ping, a few times (framing bugs may hit only some packets)."""
    for i in range(rounds):
        config = await client.invoke(functions.help.GetConfig())
        assert isinstance(config, types.Config)
        assert config.this_dc == 2
        assert {o.id for o in config.dc_options} >= {1, 2, 3, 4, 5}
        assert await client.ping(i + 1) == i + 1


@pytest.mark.parametrize("kind", KINDS)
async def test_handshake_config_ping(mtclient: MTClientFactory, kind: str) -> None:
    client = await mtclient(kind, ws=True)
    assert client.transport.kind == f"obfuscated2/{kind}"
    assert client.auth is not None and len(client.auth.auth_key) == 256
    await check_client(client)
    assert client.stats.new_sessions == 1
    assert client.stats.resent == client.stats.bad_salts  # the handshake salt is replaced
    results = await client.invoke_many(
        [functions.help.GetNearestDc(), functions.Ping(ping_id=9), functions.help.GetConfig()]
    )
    assert isinstance(results[0], types.NearestDc) and results[0].this_dc == 2
    assert isinstance(results[1], types.Pong) and results[1].ping_id == 9
    assert isinstance(results[2], types.Config)
    assert client.error_code is None and not client.closed


@pytest.mark.parametrize("kind", KINDS)
async def test_reconnect_with_same_key(mtclient: MTClientFactory, kind: str) -> None:
    first = await mtclient(kind, ws=True)
    await first.ping()
    auth = first.auth
    await first.close()
    second = await mtclient(kind, ws=True, auth=auth)
    assert second.auth is auth
    await check_client(second, rounds=1)


async def test_many_clients_at_once(server: Server, mtclient: MTClientFactory) -> None:
    # Padded is left out: its own tests cover it, this one is about concurrency.
    clients = await asyncio.gather(*(mtclient(KINDS[i % 2], ws=True) for i in range(12)))
    assert len({c.auth.auth_key for c in clients if c.auth}) == 12
    await asyncio.wait_for(asyncio.gather(*(check_client(c, rounds=2) for c in clients)), 60)
    # And all of them pinging together, many times each.
    await asyncio.wait_for(asyncio.gather(*(c.ping(n) for c in clients for n in range(20))), 60)
    assert all(not c.closed for c in clients)
    assert len(server.gateway.connections) >= 12


async def test_gzip_packed_results_and_quick_acks(
    start_server: ServerFactory, mtclient_for: MTClientFor
) -> None:
    """With a tiny gzip threshold every answer comes gzip_packed; quick acks come back too."""
    async with start_server(session={"gzip_threshold": 32}) as srv:
        client = await mtclient_for(srv, "intermediate", ws=True)
        config = await client.invoke(functions.help.GetConfig(), quick_ack=True)
        assert isinstance(config, types.Config) and config.this_dc == 2
        results = await client.invoke_many([functions.help.GetConfig()] * 3)
        assert all(isinstance(r, types.Config) for r in results)
        assert client.stats.quick_acks >= 1


async def test_text_frame_is_refused(server: Server) -> None:
    """A text frame is not MTProto: the server closes the socket."""
    url = f"ws://127.0.0.1:{server.gateway.ws_port}{server.config.gnetway.ws_path}"
    async with aiohttp.ClientSession() as session:
        ws = await asyncio.wait_for(session.ws_connect(url, protocols=("binary",)), 10)
        assert ws.protocol == "binary"
        await ws.send_str("hello")
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        await ws.close()
