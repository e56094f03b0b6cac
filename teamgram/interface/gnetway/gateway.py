"""gnetway: the client-facing listeners (TCP on 10443/5222, WebSocket on 11443)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from aiohttp import WSMsgType, web

from teamgram.config import GnetwayConfig
from teamgram.interface.gnetway.connection import GatewayConnection
from teamgram.mtproto.crypto.rsa import ServerKey

if TYPE_CHECKING:
    from teamgram.interface.session.host import SessionHost
    from teamgram.service.authsession.service import AuthSessionService

log = logging.getLogger(__name__)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.conn: GatewayConnection | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        transport = self.transport = cast(asyncio.Transport, base)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        if not self.gateway.admit(ip):
            transport.close()
            return
        self.conn = GatewayConnection(self.gateway, transport.write, transport.close, ip)
        self.gateway.connections.add(self.conn)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.connection_lost()
            self.gateway.forget(self.conn)


class Gateway:
    def __init__(
        self,
        config: GnetwayConfig,
        server_keys: list[ServerKey],
        session_host: SessionHost,
        authsession: AuthSessionService,
    ) -> None:
        self.config = config
        self.server_keys = server_keys
        self.session_host = session_host
        self.authsession = authsession
        self.connections: set[GatewayConnection] = set()
        self._per_ip: dict[str, int] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._ws_runner: web.AppRunner | None = None
        self.tcp_ports: list[int] = []
        self.ws_port: int | None = None

    def admit(self, ip: str) -> bool:
        n = self._per_ip.get(ip, 0)
        if n >= self.config.max_connections_per_ip:
            log.warning("refusing connection from %s: %d already open", ip, n)
            return False
        self._per_ip[ip] = n + 1
        return True

    def forget(self, conn: GatewayConnection) -> None:
        self.connections.discard(conn)
        n = self._per_ip.get(conn.client_ip, 1) - 1
        if n <= 0:
            self._per_ip.pop(conn.client_ip, None)
        else:
            self._per_ip[conn.client_ip] = n

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for port in self.config.tcp_ports:
            srv = await loop.create_server(
                lambda: _TcpProtocol(self), self.config.host, port, reuse_address=True
            )
            self._servers.append(srv)
            self.tcp_ports.append(srv.sockets[0].getsockname()[1])
        if self.config.ws_port >= 0:
            app = web.Application()
            app.router.add_get(self.config.ws_path, self._ws_handler)
            self._ws_runner = web.AppRunner(app, access_log=None)
            await self._ws_runner.setup()
            site = web.TCPSite(self._ws_runner, self.config.host, self.config.ws_port)
            await site.start()
            server = site._server
            assert server is not None and server.sockets  # type: ignore[attr-defined]
            self.ws_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=self.config.max_packet * 2)
        await ws.prepare(request)
        ip = request.remote or ""
        if not self.admit(ip):
            await ws.close()
            return ws
        # One writer task per socket keeps frames in order; write() never blocks the caller.
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def writer() -> None:
            while (data := await outbox.get()) is not None:
                if ws.closed:
                    break
                await ws.send_bytes(data)
            await ws.close()

        writer_task = asyncio.get_running_loop().create_task(writer())
        conn = GatewayConnection(self, outbox.put_nowait, lambda: outbox.put_nowait(None), ip)
        self.connections.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    conn.data_received(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    conn.fail(-404)
                    break
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            conn.connection_lost()
            self.forget(conn)
            outbox.put_nowait(None)
            await asyncio.wait([writer_task], timeout=5)
        return ws

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        for conn in list(self.connections):
            conn.close()
        for srv in self._servers:
            await srv.wait_closed()
        if self._ws_runner is not None:
            await self._ws_runner.cleanup()
