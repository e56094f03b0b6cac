"""Telethon 1.45 (the reference client) against the live server over every TCP transport.

Full, intermediate, abridged, obfuscated abridged, obfuscated intermediate and
obfuscated padded intermediate: connect (auth-key handshake + initConnection),
help.getConfig, ping; reconnect with a saved session (no second handshake); a
forged auth key is refused with -404.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from telethon import TelegramClient, functions, types
from telethon.crypto import AuthKey
from telethon.errors import AuthKeyNotFound
from telethon.network.connection import (
    Connection,
    ConnectionTcpAbridged,
    ConnectionTcpFull,
    ConnectionTcpIntermediate,
    ConnectionTcpObfuscated,
)
from telethon.network.connection.tcpintermediate import (
    IntermediatePacketCodec,
    RandomizedIntermediatePacketCodec,
)
from telethon.sessions import StringSession

import teamgram.interface.gnetway.connection as gateway_connection
from teamgram.server import Server

CLIENT_TIMEOUT = 20.0
TelethonFactory = Callable[..., Awaitable[TelegramClient]]


class ConnectionTcpObfuscatedIntermediate(ConnectionTcpObfuscated):
    """obfuscated2 carrying intermediate frames (tag 0xeeeeeeee)."""

    packet_codec = IntermediatePacketCodec


class ConnectionTcpObfuscatedPadded(ConnectionTcpObfuscated):
    """obfuscated2 carrying padded intermediate frames (tag 0xdddddddd, 0..3 random bytes)."""

    packet_codec = RandomizedIntermediatePacketCodec


CONNECTIONS: list[type[Connection]] = [
    ConnectionTcpFull,
    ConnectionTcpIntermediate,
    ConnectionTcpAbridged,
    ConnectionTcpObfuscated,
    ConnectionTcpObfuscatedIntermediate,
    ConnectionTcpObfuscatedPadded,
]
IDS = [
    "full",
    "intermediate",
    "abridged",
    "obfuscated",
    "obfuscated-intermediate",
    "obfuscated-padded",
]


async def call(client: TelegramClient, request: Any) -> Any:
    return await asyncio.wait_for(client(request), CLIENT_TIMEOUT)


@pytest.fixture
def handshakes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts auth-key handshakes the gateway starts (one list entry per handshake)."""
    started: list[int] = []
    real = gateway_connection.HandshakeServer

    def counting(*args: Any, **kwargs: Any) -> Any:
        started.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gateway_connection, "HandshakeServer", counting)
    return started


@pytest.mark.parametrize("connection", CONNECTIONS, ids=IDS)
async def test_connect_get_config_and_ping(
    server: Server, telethon_client: TelethonFactory, connection: type[Connection]
) -> None:
    client = await telethon_client(connection)
    assert client.is_connected()
    # Several rounds: a framing bug that hits only some packets (padding, lengths) shows up.
    for i in range(4):
        config = await call(client, functions.help.GetConfigRequest())
        assert isinstance(config, types.Config)
        assert config.this_dc == server.config.dc_id == 2
        assert {o.id for o in config.dc_options} >= {1, 2, 3, 4, 5}
        assert all(o.ip_address == "127.0.0.1" for o in config.dc_options)
        pong = await call(client, functions.PingRequest(ping_id=1000 + i))
        assert isinstance(pong, types.Pong)
        assert pong.ping_id == 1000 + i
    nearest = await call(client, functions.help.GetNearestDcRequest())
    assert nearest.this_dc == 2


async def test_dc_options_advertise_the_listening_port(
    server: Server, telethon_client: TelethonFactory
) -> None:
    """With tcp_ports: [0] the advertised port must be the one actually bound."""
    client = await telethon_client(ConnectionTcpIntermediate)
    config = await call(client, functions.help.GetConfigRequest())
    port = server.gateway.tcp_ports[0]
    for dc in (1, 2, 3, 4, 5):
        options = [o for o in config.dc_options if o.id == dc]
        assert options, f"no dc_option for DC {dc}"
        assert any(o.ip_address == "127.0.0.1" and o.port == port for o in options), options


async def test_ping_without_updates(telethon_client: TelethonFactory) -> None:
    """receive_updates=False wraps every request in invokeWithoutUpdates, ping included."""
    client = await telethon_client(ConnectionTcpAbridged, receive_updates=False)
    config = await call(client, functions.help.GetConfigRequest())
    assert config.this_dc == 2
    pong = await call(client, functions.PingRequest(ping_id=77))
    assert pong.ping_id == 77


@pytest.mark.parametrize("connection", CONNECTIONS, ids=IDS)
async def test_reconnect_reuses_auth_key(
    server: Server,
    telethon_client: TelethonFactory,
    handshakes: list[int],
    connection: type[Connection],
) -> None:
    first = await telethon_client(connection)
    await call(first, functions.PingRequest(ping_id=1))
    assert len(handshakes) == 1
    key = first.session.auth_key.key
    saved = first.session.save()
    await asyncio.wait_for(first.disconnect(), 5)

    second = await telethon_client(connection, session=saved)
    pong = await call(second, functions.PingRequest(ping_id=2))
    assert pong.ping_id == 2
    config = await call(second, functions.help.GetConfigRequest())
    assert config.this_dc == 2
    assert second.session.auth_key.key == key
    assert len(handshakes) == 1, "the saved auth key was not reused"


@pytest.mark.parametrize("connection", CONNECTIONS, ids=IDS)
async def test_unknown_auth_key_is_refused_with_404(
    server: Server,
    telethon_client: TelethonFactory,
    handshakes: list[int],
    connection: type[Connection],
) -> None:
    session = StringSession()
    session.set_dc(server.config.dc_id, "127.0.0.1", server.gateway.tcp_ports[0])
    session.auth_key = AuthKey(os.urandom(256))
    forged = await telethon_client(connection, session=session.save(), connect=False)
    with pytest.raises((AuthKeyNotFound, ConnectionError)) as info:
        await asyncio.wait_for(forged.connect(), CLIENT_TIMEOUT)
    assert isinstance(info.value, AuthKeyNotFound), repr(info.value)
    await asyncio.wait_for(forged.disconnect(), 5)
    assert handshakes == []
    # The server is fine afterwards: a fresh client gets a new key and an answer.
    fresh = await telethon_client(connection)
    assert (await call(fresh, functions.PingRequest(ping_id=3))).ping_id == 3
    assert len(handshakes) == 1
