"""End-to-end fixtures: a live :class:`Server` on ephemeral loopback ports, and clients for it.

Every listener binds 127.0.0.1 port 0; the RSA key is generated once per test
session and copied into each server's data directory (key generation takes a
second). Servers and clients are always stopped, even when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from telethon import TelegramClient
from telethon.crypto import rsa as telethon_rsa
from telethon.network.connection import Connection
from telethon.sessions import StringSession

from teamgram.config import load_config
from teamgram.mtproto.crypto.rsa import generate_server_key
from teamgram.server import Server
from teamgram.testing import MTClient, public_keys

API_ID = 12345
API_HASH = "0123456789abcdef0123456789abcdef"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLIENT_TIMEOUT = 20.0

ServerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Server]]
TelethonFactory = Callable[..., Awaitable[TelegramClient]]
MTClientFactory = Callable[..., Awaitable[MTClient]]


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and k in out else v
    return out


@contextlib.asynccontextmanager
async def running_server(
    data_dir: Path, key_pem: bytes, overrides: Mapping[str, Any] | None = None
) -> AsyncIterator[Server]:
    """Start a server in ``data_dir`` on ephemeral loopback ports; stop it on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "server_key.pem"
    if not key_file.exists():
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)
    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "gnetway": {"host": "127.0.0.1", "tcp_ports": [0], "ws_port": 0},
        "httpserver": {"host": "127.0.0.1", "port": 0},
    }
    cfg = load_config(env={}, overrides=_merge(base, overrides or {}))
    server = Server(cfg)
    try:
        await asyncio.wait_for(server.start(), START_TIMEOUT)
        yield server
    finally:
        await asyncio.wait_for(server.stop(), STOP_TIMEOUT)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep the garbage collector out of failure reports.

    Telethon leaves futures whose exception nobody retrieved; their finalizers log
    from inside a GC pass. On Python 3.11.7 a GC pass that runs Python code while
    pytest parses a source file for the traceback makes ``ast.parse`` fail with
    "AST constructor recursion depth mismatch" (an INTERNALERROR ending the run).
    """
    gc.collect()
    gc.disable()
    try:
        return (yield)
    finally:
        gc.enable()


@pytest.fixture(scope="session")
def server_key_pem() -> bytes:
    """One RSA key for every server of the session (PEM, private)."""
    return generate_server_key().private_pem()


@pytest.fixture
def start_server(tmp_path: Path, server_key_pem: bytes) -> ServerFactory:
    """``async with start_server(gnetway={...}) as srv:`` for tests needing their own config."""
    counter = iter(range(1_000_000))

    def factory(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Server]:
        return running_server(tmp_path / f"server{next(counter)}", server_key_pem, overrides)

    return factory


@pytest.fixture
async def server(start_server: ServerFactory) -> AsyncIterator[Server]:
    """A live server with the default configuration."""
    async with start_server() as srv:
        yield srv


def register_telethon_key(srv: Server) -> int:
    """Make Telethon trust ``srv``'s RSA key (as a new, RSA_PAD key); returns its fingerprint."""
    key = srv.server_keys[0]
    telethon_rsa.add_key(key.public_pem(), old=False)
    return key.fingerprint


@pytest.fixture
def telethon_key(server: Server) -> int:
    """The default server's key, registered with Telethon; the value is its fingerprint."""
    return register_telethon_key(server)


def make_telethon(
    srv: Server, connection: type[Connection], session: str = "", **kwargs: Any
) -> TelegramClient:
    """An unconnected Telethon client pointed at ``srv``'s first TCP port."""
    register_telethon_key(srv)
    TelegramClient._config = None  # help.getConfig is cached per process otherwise
    client = TelegramClient(
        StringSession(session),
        API_ID,
        API_HASH,
        connection=connection,
        timeout=10,
        request_retries=1,
        # Telethon drops leading zero bytes of g_ab, so about 1 handshake in 256
        # fails on its side ("invalid new nonce hash"); in normal use it retries.
        connection_retries=2,
        retry_delay=0,
        auto_reconnect=False,
        **kwargs,
    )
    if not session:
        client.session.set_dc(srv.config.dc_id, "127.0.0.1", srv.gateway.tcp_ports[0])
    return client


@pytest.fixture
async def telethon_for() -> AsyncIterator[Callable[..., Awaitable[TelegramClient]]]:
    """``await telethon_for(srv, ConnectionTcpFull, session="")``: connected, closed after.

    ``connect=False`` returns the client unconnected; other keyword arguments go to
    ``TelegramClient``.
    """
    clients: list[TelegramClient] = []

    async def factory(
        srv: Server,
        connection: type[Connection],
        session: str = "",
        connect: bool = True,
        **kwargs: Any,
    ) -> TelegramClient:
        client = make_telethon(srv, connection, session, **kwargs)
        clients.append(client)
        if connect:
            await asyncio.wait_for(client.connect(), CLIENT_TIMEOUT)
        return client

    try:
        yield factory
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.disconnect(), 5)


@pytest.fixture
def telethon_client(
    server: Server, telethon_for: Callable[..., Awaitable[TelegramClient]]
) -> TelethonFactory:
    """``await telethon_client(ConnectionTcpFull)``: connected to the default server."""

    async def factory(
        connection: type[Connection], session: str = "", connect: bool = True, **kwargs: Any
    ) -> TelegramClient:
        return await telethon_for(server, connection, session, connect, **kwargs)

    return factory


@pytest.fixture
async def mtclient_for() -> AsyncIterator[Callable[..., Awaitable[MTClient]]]:
    """``await mtclient_for(srv, kind=..., obfuscated=..., ws=False)``; closed after."""
    clients: list[MTClient] = []

    async def factory(
        srv: Server,
        kind: str = "intermediate",
        obfuscated: bool = False,
        ws: bool = False,
        **kw: Any,
    ) -> MTClient:
        keys = public_keys(srv.server_keys)
        if ws:
            url = f"ws://127.0.0.1:{srv.gateway.ws_port}{srv.config.gnetway.ws_path}"
            coro = MTClient.connect_ws(url, keys, kind=kind, **kw)
        else:
            port = srv.gateway.tcp_ports[0]
            coro = MTClient.connect("127.0.0.1", port, keys, kind=kind, obfuscated=obfuscated, **kw)
        client = await asyncio.wait_for(coro, CLIENT_TIMEOUT)
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


@pytest.fixture
def mtclient(server: Server, mtclient_for: Callable[..., Awaitable[MTClient]]) -> MTClientFactory:
    """``await mtclient(kind=..., obfuscated=..., ws=...)`` against the default server."""

    async def factory(*args: Any, **kw: Any) -> MTClient:
        return await mtclient_for(server, *args, **kw)

    return factory


@pytest.fixture
def server_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    """Call it at the end of a test: the ERROR records logged by teamgram or asyncio."""
    caplog.set_level(logging.WARNING)

    def errors() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("teamgram", "asyncio")
        ]

    return errors
