"""The MTProto HTTP transport end to end: Telethon's ConnectionHttp, raw HTTP, raw MTProto.

Everything runs against a real :class:`Server` on 127.0.0.1 (port 0 for every
listener) in a temporary data directory; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telethon import TelegramClient
from telethon.crypto import rsa
from telethon.network.connection import ConnectionHttp
from telethon.network.connection.http import HttpPacketCodec
from telethon.sessions import MemorySession
from telethon.tl import functions as tl_functions

from teamgram.config import load_config
from teamgram.mtproto.client_handshake import HandshakeClient
from teamgram.mtproto.envelope import decrypt_server_message, encrypt_client_message
from teamgram.mtproto.session import parse_container
from teamgram.server import Server
from teamgram.tl import decode, types
from teamgram.tl import functions as fn
from teamgram.tl.core import GZIP_PACKED_ID, MSG_CONTAINER_ID

pytestmark = pytest.mark.timeout(120)

STEP = 10.0  # seconds any single exchange may take before the test fails


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    cfg = load_config(
        overrides={
            "data_dir": str(tmp_path),
            "gnetway": {"host": "127.0.0.1", "tcp_ports": [0], "ws_port": 0},
            "httpserver": {"host": "127.0.0.1", "port": 0},
        }
    )
    srv = Server(cfg)
    await srv.start()
    rsa.add_key(srv.server_keys[0].public_pem(), old=False)
    try:
        yield srv
    finally:
        await asyncio.wait_for(srv.stop(), STEP)


# ------------------------------------------------------------------ Telethon


class _Codec(HttpPacketCodec):
    """Telethon 1.45's reader compares ``line[-1]`` (an int) with ``b"\\n"``, so it
    cannot read any response; this is the same reader with the slice it meant."""

    async def read_packet(self, reader: Any) -> bytes:
        while True:
            line = await reader.readline()
            if not line or line[-1:] != b"\n":
                raise asyncio.IncompleteReadError(line, None)
            if line.lower().startswith(b"content-length: "):
                await reader.readexactly(2)
                return bytes(await reader.readexactly(int(line[16:-2])))


class _ConnectionHttp(ConnectionHttp):
    packet_codec = _Codec


async def _telethon(server: Server) -> TelegramClient:
    TelegramClient._config = None  # Telethon caches help.getConfig per process
    client = TelegramClient(
        MemorySession(), 1, "0" * 32, connection=_ConnectionHttp, timeout=STEP, connection_retries=2
    )
    assert server.http.port is not None
    client.session.set_dc(2, "127.0.0.1", server.http.port)
    await asyncio.wait_for(client.connect(), STEP)
    return client


async def test_telethon_requests_over_http(server: Server) -> None:
    client = await _telethon(server)
    try:
        for i in range(5):
            config = await asyncio.wait_for(client(tl_functions.help.GetConfigRequest()), STEP)
            assert config.this_dc == server.config.dc_id
            pong = await asyncio.wait_for(client(tl_functions.PingRequest(ping_id=1000 + i)), STEP)
            assert pong.ping_id == 1000 + i
        many = await asyncio.wait_for(
            asyncio.gather(
                *(client(tl_functions.PingRequest(ping_id=i)) for i in range(8)),
                client(tl_functions.help.GetConfigRequest()),
                client(tl_functions.help.GetConfigRequest()),
            ),
            STEP,
        )
        assert [p.ping_id for p in many[:8]] == list(range(8))
        assert all(c.this_dc == server.config.dc_id for c in many[8:])
        # One keep-alive connection carried it all.
        assert len(server.http.connections) == 1
    finally:
        await asyncio.wait_for(client.disconnect(), STEP)


async def test_telethon_survives_held_posts_timing_out(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Telethon's ack-only POSTs are held, then released with an empty msgs_ack."""
    from teamgram.interface.httpserver import connection as http_connection

    monkeypatch.setattr(http_connection, "DEFAULT_MAX_WAIT", 0.2)
    client = await _telethon(server)
    try:
        for i in range(3):
            pong = await asyncio.wait_for(client(tl_functions.PingRequest(ping_id=i)), STEP)
            assert pong.ping_id == i
            await asyncio.sleep(0.5)  # longer than the hold: the pending POST gets a filler
        config = await asyncio.wait_for(client(tl_functions.help.GetConfigRequest()), STEP)
        assert config.this_dc == server.config.dc_id
        assert len(server.http.connections) == 1  # no reconnect happened
    finally:
        await asyncio.wait_for(client.disconnect(), STEP)


async def test_telethon_two_clients(server: Server) -> None:
    a, b = await _telethon(server), await _telethon(server)
    try:
        pongs = await asyncio.wait_for(
            asyncio.gather(
                a(tl_functions.PingRequest(ping_id=1)), b(tl_functions.PingRequest(ping_id=2))
            ),
            STEP,
        )
        assert [p.ping_id for p in pongs] == [1, 2]
    finally:
        await asyncio.wait_for(asyncio.gather(a.disconnect(), b.disconnect()), STEP)


# ------------------------------------------------------------------ raw HTTP


class RawHttp:
    """One keep-alive HTTP/1.1 connection; responses are read in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: Server) -> RawHttp:
        assert server.http.port is not None
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.http.port), STEP)
        return cls(r, w)

    @staticmethod
    def request(body: bytes, path: str = "/api") -> bytes:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def post(self, body: bytes) -> None:
        self.send(self.request(body))

    async def response(self, timeout: float = STEP) -> tuple[int, dict[str, str], bytes, list[str]]:
        """(status, headers, body, header names in order)."""

        async def read() -> tuple[int, dict[str, str], bytes, list[str]]:
            status_line = await self.reader.readuntil(b"\r\n")
            status = int(status_line.split(b" ")[1])
            headers: dict[str, str] = {}
            order: list[str] = []
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.lower()] = value.strip()
                order.append(name.lower())
            body = await self.reader.readexactly(int(headers["content-length"]))
            return status, headers, body, order

        return await asyncio.wait_for(read(), timeout)

    async def at_eof(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), STEP) == b""
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), STEP)
        except ConnectionError:
            pass


def _garbage_key_packet() -> bytes:
    key_id = os.urandom(8)
    if key_id == bytes(8):
        key_id = b"\1" * 8
    return key_id + os.urandom(16 + 48)


@pytest.mark.parametrize("packet", [b"hello", _garbage_key_packet()], ids=["garbage", "unknown"])
async def test_transport_error_is_404_with_4_byte_body(server: Server, packet: bytes) -> None:
    conn = await RawHttp.open(server)
    try:
        conn.post(packet)
        status, headers, body, order = await conn.response()
        assert status == 404
        assert body == struct.pack("<i", -404)
        assert order[-1] == "content-length"
        assert headers["access-control-allow-origin"] == "*"
        assert await conn.at_eof()
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nBad Header: 1\r\n\r\n", 400),
        (b"POST /api HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /api HTTP/1.1\r\nHost: x\r\n\r\n", 411),
        (b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"POST /api HTTP/2.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 505),
        (b"POST /api HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    ],
    ids=["garbage", "space-in-name", "no-host", "bad-length", "no-length", "chunked", "too-big",
         "http2", "huge-head"],
)  # fmt: skip
async def test_malformed_http_gets_an_error_and_the_server_survives(
    server: Server, raw: bytes, status: int
) -> None:
    conn = await RawHttp.open(server)
    try:
        conn.send(raw)
        got, headers, _, _ = await conn.response()
        assert got == status
        assert headers["connection"] == "close"
        assert await conn.at_eof()
    finally:
        await conn.close()
    # The server still answers a handshake on a new connection.
    conn = await RawHttp.open(server)
    try:
        key = server.server_keys[0]
        conn.post(HandshakeClient({key.fingerprint: key}).start())
        got, _, body, _ = await conn.response()
        assert got == 200 and body[:8] == bytes(8)
    finally:
        await conn.close()


async def test_preflight_and_other_requests_are_answered_in_order(server: Server) -> None:
    conn = await RawHttp.open(server)
    key = server.server_keys[0]
    try:
        conn.send(
            b"OPTIONS /api HTTP/1.1\r\nHost: x\r\nOrigin: http://web.example\r\n"
            b"Access-Control-Request-Method: POST\r\n"
            b"Access-Control-Request-Headers: content-type\r\n\r\n"
            b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n"
            + RawHttp.request(HandshakeClient({key.fingerprint: key}).start(), path="/apiw1")
        )
        status, headers, body, _ = await conn.response()
        assert status == 200 and body == b""
        assert headers["access-control-allow-origin"] == "*"
        assert "POST" in headers["access-control-allow-methods"]
        assert headers["access-control-allow-headers"] == "content-type"
        status, headers, _, _ = await conn.response()
        assert status == 405 and "POST" in headers["allow"]
        status, _, _, _ = await conn.response()
        assert status == 404
        status, headers, body, _ = await conn.response()
        assert status == 200 and body[:8] == bytes(8)  # resPQ
        assert headers["access-control-allow-origin"] == "*"
    finally:
        await conn.close()


async def test_expect_100_continue(server: Server) -> None:
    conn = await RawHttp.open(server)
    try:
        conn.send(
            b"POST /api HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        interim = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), STEP)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.send(b"hello")
        status, _, body, _ = await conn.response()
        assert status == 404 and body == struct.pack("<i", -404)
    finally:
        await conn.close()


async def test_connection_close_is_honoured(server: Server) -> None:
    conn = await RawHttp.open(server)
    try:
        conn.send(b"GET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, _, _ = await conn.response()
        assert status == 405 and headers["connection"] == "close"
        assert await conn.at_eof()
    finally:
        await conn.close()


# ------------------------------------------------------------------ raw MTProto over HTTP


class RawSession:
    """A minimal MTProto client session over :class:`RawHttp` (auth key from our handshake)."""

    def __init__(self, auth_key: bytes, auth_key_id: int, salt: int) -> None:
        self.auth_key = auth_key
        self.key_id = auth_key_id
        self.id_bytes = struct.pack("<q", auth_key_id)
        self.salt = salt
        self.session_id = struct.unpack("<q", os.urandom(8))[0]
        self.seq = 0
        self.last_msg_id = 0

    @classmethod
    async def create(cls, server: Server, conn: RawHttp) -> RawSession:
        key = server.server_keys[0]
        hc = HandshakeClient({key.fingerprint: key})
        out: bytes | None = hc.start()
        while out is not None:
            conn.post(out)
            status, _, body, _ = await conn.response()
            assert status == 200
            out = hc.receive(body)
        assert hc.result is not None
        return cls(hc.result.auth_key, hc.result.auth_key_id, hc.result.server_salt)

    def msg_id(self) -> int:
        mid = int(time.time() * 4294967296.0) & ~3
        if mid <= self.last_msg_id:
            mid = self.last_msg_id + 4
        self.last_msg_id = mid
        return mid

    def pack(self, body: bytes, content: bool = True) -> tuple[int, bytes]:
        seqno = self.seq * 2 + 1 if content else self.seq * 2
        if content:
            self.seq += 1
        mid = self.msg_id()
        packet = encrypt_client_message(
            self.auth_key, self.id_bytes, self.salt, self.session_id, mid, seqno, body
        )
        return mid, packet

    def open(self, packet: bytes) -> list[tuple[int, Any]]:
        """The (msg_id, object) messages of a server packet, containers unpacked."""
        dec = decrypt_server_message(self.auth_key, packet)
        assert dec is not None, f"not a valid encrypted message: {packet[:16].hex()}"
        assert dec.session_id == self.session_id
        if struct.unpack_from("<I", dec.body)[0] == MSG_CONTAINER_ID:
            items = [(mid, body) for mid, _, body in parse_container(dec.body)]
        else:
            items = [(dec.msg_id, dec.body)]
        out = []
        for mid, body in items:
            assert struct.unpack_from("<I", body)[0] != GZIP_PACKED_ID  # small answers only
            out.append((mid, decode(body)))
        return out

    async def start(self, conn: RawHttp) -> list[Any]:
        """Ping until the salt is right; return the objects of the successful answer."""
        for _ in range(3):
            _, packet = self.pack(fn.Ping(ping_id=1).to_bytes())
            conn.post(packet)
            _, _, body, _ = await conn.response()
            objs = [o for _, o in self.open(body)]
            bad = [o for o in objs if isinstance(o, types.BadServerSalt)]
            if not bad:
                return objs
            self.salt = bad[0].new_server_salt
        raise AssertionError("server salt never accepted")


async def _raw_session(server: Server) -> tuple[RawHttp, RawSession]:
    conn = await RawHttp.open(server)
    sess = await RawSession.create(server, conn)
    objs = await sess.start(conn)
    assert any(isinstance(o, types.Pong) for o in objs)
    return conn, sess


async def test_pipelined_ack_then_request_is_not_delayed(server: Server) -> None:
    conn, sess = await _raw_session(server)
    try:
        _, ack = sess.pack(types.MsgsAck(msg_ids=[]).to_bytes(), content=False)
        ping_id, ping = sess.pack(fn.Ping(ping_id=77).to_bytes())
        t0 = time.monotonic()
        conn.send(RawHttp.request(ack) + RawHttp.request(ping))
        status1, _, first, _ = await conn.response(timeout=2)
        status2, _, second, _ = await conn.response(timeout=2)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, f"pipelined request delayed {elapsed:.2f}s"
        assert status1 == status2 == 200
        # The ack-only POST got a valid (empty) message, never an empty body.
        assert [type(o) for _, o in sess.open(first)] == [types.MsgsAck]
        pongs = [o for _, o in sess.open(second) if isinstance(o, types.Pong)]
        assert pongs and pongs[0].ping_id == 77 and pongs[0].msg_id == ping_id
    finally:
        await conn.close()


async def test_http_wait_holds_until_max_wait(server: Server) -> None:
    conn, sess = await _raw_session(server)
    try:
        wait = types.HttpWait(max_delay=0, wait_after=0, max_wait=400)
        wait_id, packet = sess.pack(wait.to_bytes())
        t0 = time.monotonic()
        conn.post(packet)
        status, _, body, _ = await conn.response(timeout=5)
        elapsed = time.monotonic() - t0
        assert status == 200
        assert 0.3 <= elapsed < 3.0, f"answered after {elapsed:.2f}s"
        objs = [o for _, o in sess.open(body)]
        # Only the ack of http_wait was pending: it is what the released POST carries.
        assert [type(o) for o in objs] == [types.MsgsAck]
        assert wait_id in objs[0].msg_ids
    finally:
        await conn.close()


async def test_http_wait_is_answered_by_a_pushed_update(server: Server) -> None:
    conn, sess = await _raw_session(server)
    try:
        _, packet = sess.pack(types.HttpWait(max_delay=0, wait_after=0, max_wait=8000).to_bytes())
        conn.post(packet)
        await asyncio.sleep(0.2)
        hosted = server.session_host.sessions[(sess.key_id, sess.session_id)]
        t0 = time.monotonic()
        server.session_host.push(hosted, types.UpdatesTooLong().to_bytes())
        status, _, body, _ = await conn.response(timeout=3)
        assert status == 200 and time.monotonic() - t0 < 1.0
        assert any(isinstance(o, types.UpdatesTooLong) for _, o in sess.open(body))
    finally:
        await conn.close()


async def test_update_goes_to_the_connection_holding_a_long_poll(server: Server) -> None:
    """Browsers keep a long poll on one connection and send requests on others."""
    poll, sess = await _raw_session(server)
    other = await RawHttp.open(server)
    try:
        _, packet = sess.pack(types.HttpWait(max_delay=0, wait_after=0, max_wait=8000).to_bytes())
        poll.post(packet)
        await asyncio.sleep(0.2)
        # A request on the other connection: the session now follows that one.
        _, ping = sess.pack(fn.Ping(ping_id=5).to_bytes())
        other.post(ping)
        _, _, body, _ = await other.response()
        assert any(isinstance(o, types.Pong) for _, o in sess.open(body))
        hosted = server.session_host.sessions[(sess.key_id, sess.session_id)]
        t0 = time.monotonic()
        server.session_host.push(hosted, types.UpdatesTooLong().to_bytes())
        status, _, body, _ = await poll.response(timeout=3)
        assert status == 200 and time.monotonic() - t0 < 1.0
        assert any(isinstance(o, types.UpdatesTooLong) for _, o in sess.open(body))
    finally:
        await poll.close()
        await other.close()


async def test_held_post_is_released_with_a_filler_after_the_default_wait(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from teamgram.interface.httpserver import connection as http_connection

    monkeypatch.setattr(http_connection, "DEFAULT_MAX_WAIT", 0.3)
    conn, sess = await _raw_session(server)
    try:
        _, ack = sess.pack(types.MsgsAck(msg_ids=[]).to_bytes(), content=False)
        t0 = time.monotonic()
        conn.post(ack)
        status, _, body, _ = await conn.response(timeout=5)
        assert status == 200 and 0.2 <= time.monotonic() - t0 < 3.0
        assert [type(o) for _, o in sess.open(body)] == [types.MsgsAck]
    finally:
        await conn.close()
