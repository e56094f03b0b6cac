"""httpserver: the MTProto HTTP transport (``POST /api``) on port 8801.

A plain asyncio server with its own small HTTP/1.1 reader (see
:mod:`teamgram.interface.httpserver.connection` for why and for the answering
rules). Connections share the gateway's per-address limit, maximum packet size
and flood limit, and its auth-key handshake and session routing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from teamgram.config import HttpServerConfig
from teamgram.interface.httpserver.connection import HttpConnection, HttpError, RequestParser

if TYPE_CHECKING:
    from teamgram.interface.gnetway.gateway import Gateway
    from teamgram.server import Server

log = logging.getLogger(__name__)


class _HttpProtocol(asyncio.Protocol):
    """Bytes in, requests out; stops reading after a malformed or last (``close``) request."""

    def __init__(self, http: HttpServer) -> None:
        self.http = http
        self.conn: HttpConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser(http.gateway.config.max_packet)
        self._reading = False

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        transport = self.transport = cast(asyncio.Transport, base)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        if not self.http.gateway.admit(ip):
            transport.close()
            return
        self.conn = HttpConnection(self.http, transport, ip)
        self.http.connections.add(self.conn)
        self._reading = True

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or not self._reading:
            return
        try:
            requests = self.parser.feed(data)
        except HttpError as exc:
            self._reading = False
            conn.on_bad_request(exc)
            return
        for req in requests:
            conn.on_request(req)
            if not req.keep_alive:
                self._reading = False  # anything after "Connection: close" is ignored
                return
        if self.parser.expect_continue:
            self.parser.expect_continue = False
            conn.send_continue()

    # A client that does not read its answers stops being read (pipelined POSTs
    # would otherwise pile responses up in the write buffer).
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        if self.conn is not None:
            self._reading = False
            self.conn.on_eof()
        return True  # keep the socket open to write what is still owed

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.connection_lost()
            self.http.gateway.forget(conn)


class HttpServer:
    def __init__(self, config: HttpServerConfig, server: Server) -> None:
        self.config = config
        self.server = server
        self.port: int | None = None
        self.connections: set[HttpConnection] = set()
        # (auth_key_id, session_id) -> the HTTP connections that carried it
        self._carriers: dict[tuple[int, int], set[HttpConnection]] = {}
        self._listener: asyncio.Server | None = None

    @property
    def gateway(self) -> Gateway:
        gateway = self.server.gateway
        assert gateway is not None, "the server builds a gateway wherever HTTP runs"
        return gateway

    async def start(self) -> None:
        """Listen; a negative port leaves the transport off (``port`` stays None)."""
        if self.config.port < 0:
            return
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: _HttpProtocol(self), self.config.host, self.config.port, reuse_address=True
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.close()
        for conn in list(self.connections):
            conn.close()
        await listener.wait_closed()

    # ------------------------------------------------- sessions carried by several connections
    def carry(self, key: tuple[int, int], conn: HttpConnection) -> None:
        self._carriers.setdefault(key, set()).add(conn)

    def uncarry(self, key: tuple[int, int], conn: HttpConnection) -> None:
        conns = self._carriers.get(key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._carriers[key]

    def forget(self, conn: HttpConnection) -> None:
        """The connection is gone (called once it closes)."""
        self.connections.discard(conn)
        for key in list(conn.carried()):
            self.uncarry(key, conn)

    def carrier(self, key: tuple[int, int], exclude: HttpConnection) -> HttpConnection | None:
        """Another open connection of this session holding a request that can take output now."""
        for conn in self._carriers.get(key, ()):
            if conn is not exclude and conn.can_take_output():
                return conn
        return None
