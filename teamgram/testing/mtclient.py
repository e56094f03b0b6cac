"""A small asyncio MTProto 2.0 client for tests, benches and operators' smoke checks.

Not for end users: it speaks just enough of the protocol to drive the server
over TCP (every framing, plain or obfuscated2) or WebSocket (obfuscated2 in
binary frames), create an auth key with :class:`HandshakeClient`, and run
encrypted requests::

    keys = public_keys(server.server_keys)
    async with await MTClient.connect("127.0.0.1", port, keys, kind="abridged") as c:
        config = await c.invoke(functions.help.GetConfig())
        await c.ping()

It handles msg_id/seqno rules, bad_server_salt (adopt and resend), bad_msg
time corrections, new_session_created, msgs_ack (both ways), containers,
rpc_result (gzip_packed too), rpc_error and pong. Pushed updates (any ``Updates``
constructor) go to :attr:`MTClient.on_update` when it is set. Raw helpers
(:meth:`MTClient.send_raw`, :meth:`MTClient.encrypt`) let fuzzers inject bytes.

Operators can run it against a live server (the key is the server's PEM, public
or private)::

    python -m teamgram.testing.mtclient --port 10443 --key data/server_key.pem
    python -m teamgram.testing.mtclient --ws ws://127.0.0.1:11443/apiws --key key.pub
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from teamgram.mtproto.client_handshake import HandshakeClient, PublicKey
from teamgram.mtproto.crypto.kdf import auth_key_id
from teamgram.mtproto.crypto.rsa import compute_fingerprint
from teamgram.mtproto.envelope import decrypt_server_message, encrypt_client_message
from teamgram.mtproto.session import parse_container
from teamgram.mtproto.transport import ClientTransport
from teamgram.tl import Reader, TLDecodeError, TLFunction, decode, functions, types
from teamgram.tl.core import GZIP_PACKED_ID, MSG_CONTAINER_ID, RPC_RESULT_ID

__all__ = [
    "AuthState",
    "BadMessageError",
    "ClientStats",
    "MTClient",
    "RpcErrorReply",
    "TransportErrorReply",
    "public_keys",
]

log = logging.getLogger(__name__)

_RPC_ERROR_ID = types.RpcError.CONSTRUCTOR_ID
_ACK_FLUSH = 16  # pending acks that trigger a standalone msgs_ack


class KeyWithFingerprint(PublicKey, Protocol):
    @property
    def fingerprint(self) -> int: ...


def public_keys(keys: Iterable[KeyWithFingerprint]) -> dict[int, PublicKey]:
    """``{fingerprint: key}`` for :class:`HandshakeClient` from e.g. ``server.server_keys``."""
    return {k.fingerprint: k for k in keys}


class TransportErrorReply(ConnectionError):
    """The server answered a transport error (-404, -429...) and closed."""

    def __init__(self, code: int) -> None:
        super().__init__(f"transport error {code}")
        self.code = code


class RpcErrorReply(Exception):
    """The server answered ``rpc_error``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class BadMessageError(Exception):
    """``bad_msg_notification`` the client cannot fix by itself."""

    def __init__(self, error_code: int) -> None:
        super().__init__(f"bad_msg_notification {error_code}")
        self.error_code = error_code


@dataclass
class AuthState:
    """What a reconnecting client keeps: the key, the last salt and the clock offset."""

    auth_key: bytes
    server_salt: int
    time_offset: float = 0.0

    @property
    def auth_key_id(self) -> int:
        return auth_key_id(self.auth_key)


@dataclass(eq=False)
class _Pending:
    body: bytes
    future: asyncio.Future[Any]
    read: Callable[[bytes], Any] | None


@dataclass
class ClientStats:
    """Counters for tests; ``other`` keeps the last messages nothing was waiting for."""

    new_sessions: int = 0
    bad_salts: int = 0
    quick_acks: int = 0
    acks_sent: int = 0
    resent: int = 0
    other: deque[Any] = field(default_factory=lambda: deque(maxlen=256))


# --------------------------------------------------------------------------- links


class _Link(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes:
        """The next chunk; b'' at end of stream."""
        ...

    async def close(self) -> None: ...


class _TcpLink:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> bytes:
        return await self.reader.read(1 << 16)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


class _WsLink:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session, self.ws = session, ws

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def recv(self) -> bytes:
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY:
                return b""  # close, error or an (unexpected) text frame
            if msg.data:
                return bytes(msg.data)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)
        await self.session.close()


# --------------------------------------------------------------------------- client


class MTClient:
    """One connection, one session; build it with :meth:`connect` or :meth:`connect_ws`."""

    def __init__(
        self,
        link: _Link,
        transport: ClientTransport,
        keys: Mapping[int, PublicKey],
        *,
        timeout: float = 10.0,
    ) -> None:
        self._link = link
        self.transport = transport
        self.keys = dict(keys)
        self.timeout = timeout
        self.auth: AuthState | None = None
        self.session_id = int.from_bytes(os.urandom(8), "little", signed=True)
        self.stats = ClientStats()
        self.error_code: int | None = None
        # Called (in the read loop) with every pushed ``Updates`` object (updates,
        # updateShort, updateShortMessage...); None: they go to ``stats.other``.
        self.on_update: Callable[[Any], None] | None = None
        self._key_id = b""
        self._last_msg_id = 0
        self._seq = 0
        self._acks: list[int] = []
        self._pending: dict[int, _Pending] = {}
        self._containers: dict[int, list[int]] = {}
        self._plain: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._send_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- opening

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        keys: Mapping[int, PublicKey],
        *,
        kind: str = "intermediate",
        obfuscated: bool = False,
        auth: AuthState | None = None,
        dc_id: int = 2,
        rsa_pad: bool = True,
        timeout: float = 10.0,
    ) -> MTClient:
        """Open a TCP connection in ``kind`` framing and create (or reuse) an auth key."""
        transport = ClientTransport(kind, obfuscated, dc_id=dc_id)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        client = cls(_TcpLink(reader, writer), transport, keys, timeout=timeout)
        await client._open(auth, rsa_pad)
        return client

    @classmethod
    async def connect_ws(
        cls,
        url: str,
        keys: Mapping[int, PublicKey],
        *,
        kind: str = "abridged",
        auth: AuthState | None = None,
        dc_id: int = 2,
        rsa_pad: bool = True,
        timeout: float = 10.0,
    ) -> MTClient:
        """Open ``ws://host:port/apiws`` (subprotocol "binary", obfuscated2 inside)."""
        transport = ClientTransport(kind, True, dc_id=dc_id)
        session = aiohttp.ClientSession()
        try:
            ws = await asyncio.wait_for(
                session.ws_connect(
                    url, protocols=("binary",), timeout=aiohttp.ClientWSTimeout(ws_close=2)
                ),
                timeout,
            )
        except BaseException:
            await session.close()
            raise
        client = cls(_WsLink(session, ws), transport, keys, timeout=timeout)
        await client._open(auth, rsa_pad)
        return client

    async def _open(self, auth: AuthState | None, rsa_pad: bool) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        try:
            await self.send_raw(self.transport.connect_bytes())
            if auth is None:
                auth = await asyncio.wait_for(self._handshake(rsa_pad), self.timeout)
            self.auth = auth
            self._key_id = struct.pack("<q", auth.auth_key_id)
        except BaseException:
            await self.close()
            raise

    async def _handshake(self, rsa_pad: bool) -> AuthState:
        hs = HandshakeClient(self.keys, rsa_pad=rsa_pad)
        out: bytes | None = hs.start()
        while out is not None:
            await self.send_payloads([out])
            answer = await self._plain.get()
            if answer is None:
                raise self._failure()
            out = await asyncio.to_thread(hs.receive, answer)
        assert hs.result is not None
        r = hs.result
        return AuthState(r.auth_key, r.server_salt, float(r.time_offset))

    async def __aenter__(self) -> MTClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def close(self) -> None:
        """Close the connection; pending requests fail with ConnectionError."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        await self._link.close()
        self._shutdown()

    async def wait_closed(self, timeout: float | None = None) -> int | None:
        """Wait until the server closes; return its transport error code, if any."""
        await asyncio.wait_for(self._closed.wait(), timeout or self.timeout)
        return self.error_code

    # ----------------------------------------------------------------- requests

    async def invoke(
        self, request: TLFunction, *, timeout: float | None = None, quick_ack: bool = False
    ) -> Any:
        """Send ``request`` and return its decoded result (raises :class:`RpcErrorReply`)."""
        fut = await self._send_request(request, quick_ack)
        try:
            return await asyncio.wait_for(fut, timeout or self.timeout)
        except TimeoutError:
            self._pending = {k: p for k, p in self._pending.items() if p.future is not fut}
            raise

    async def invoke_many(
        self, requests: list[TLFunction], *, timeout: float | None = None
    ) -> list[Any]:
        """Send several requests in one msg_container; results in order (errors as values)."""
        futs: list[asyncio.Future[Any]] = []
        items: list[tuple[int, int, bytes]] = []
        for req in requests:
            body = req.to_bytes()
            msg_id, seqno = self._next_msg_id(), self._next_seqno(True)
            futs.append(self._track(msg_id, body, _reader_of(req)))
            items.append((msg_id, seqno, body))
        container = _build_container(items)
        cid = self._next_msg_id()
        self._containers[cid] = [i[0] for i in items]
        await self._send_encrypted([(cid, self._next_seqno(False), container)])
        done = await asyncio.wait_for(
            asyncio.gather(*futs, return_exceptions=True), timeout or self.timeout
        )
        return list(done)

    async def ping(self, ping_id: int | None = None, *, timeout: float | None = None) -> int:
        """Send ``ping`` and wait for its ``pong``; returns the ping_id echoed back."""
        pid = int.from_bytes(os.urandom(8), "little", signed=True) if ping_id is None else ping_id
        pong = await self.invoke(functions.Ping(ping_id=pid), timeout=timeout)
        if not isinstance(pong, types.Pong) or pong.ping_id != pid:
            raise AssertionError(f"unexpected answer to ping: {pong!r}")
        return int(pong.ping_id)

    async def _send_request(self, request: TLFunction, quick_ack: bool) -> asyncio.Future[Any]:
        if self.closed:
            raise self._failure()
        body = request.to_bytes()
        msg_id = self._next_msg_id()
        fut = self._track(msg_id, body, _reader_of(request))
        try:
            await self._send_encrypted([(msg_id, self._next_seqno(True), body)], quick_ack)
        except BaseException:
            self._pending.pop(msg_id, None)
            fut.cancel()
            raise
        return fut

    def _track(self, msg_id: int, body: bytes, read: Callable[[bytes], Any] | None) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = _Pending(body, fut, read)
        return fut

    # ----------------------------------------------------------------- low level

    def _next_msg_id(self) -> int:
        offset = self.auth.time_offset if self.auth else 0.0
        msg_id = int((time.time() + offset) * 4294967296.0) & ~3
        if msg_id <= self._last_msg_id:
            msg_id = self._last_msg_id + 4
        self._last_msg_id = msg_id
        return msg_id

    def _next_seqno(self, content: bool) -> int:
        if not content:
            return self._seq * 2
        self._seq += 1
        return self._seq * 2 - 1

    def encrypt(self, body: bytes, *, content: bool = True) -> tuple[int, bytes]:
        """(msg_id, encrypted packet) for ``body``: for fuzzers that frame it themselves."""
        msg_id = self._next_msg_id()
        return msg_id, self._encrypt(msg_id, self._next_seqno(content), body)

    def _encrypt(self, msg_id: int, seqno: int, body: bytes) -> bytes:
        if self.auth is None:
            raise RuntimeError("no auth key yet")
        a = self.auth
        return encrypt_client_message(
            a.auth_key, self._key_id, a.server_salt, self.session_id, msg_id, seqno, body
        )

    async def _send_encrypted(
        self, messages: list[tuple[int, int, bytes]], quick_ack: bool = False
    ) -> None:
        payloads = [self._encrypt(*m) for m in self._take_acks()]
        payloads += [self._encrypt(*m) for m in messages]
        await self.send_payloads(payloads, quick_ack)

    def _take_acks(self) -> list[tuple[int, int, bytes]]:
        if not self._acks:
            return []
        body = types.MsgsAck(msg_ids=self._acks).to_bytes()
        self._acks = []
        self.stats.acks_sent += 1
        return [(self._next_msg_id(), self._next_seqno(False), body)]

    async def send_payloads(self, payloads: list[bytes], quick_ack: bool = False) -> None:
        """Frame (and obfuscate) payloads and write them in one go."""
        async with self._send_lock:
            data = b"".join(self.transport.encode(p, quick_ack) for p in payloads)
            await asyncio.wait_for(self._link.send(data), self.timeout)

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are, under the framing and obfuscation."""
        async with self._send_lock:
            await asyncio.wait_for(self._link.send(data), self.timeout)

    # ----------------------------------------------------------------- inbound

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._link.recv()
                if not data:
                    break
                for packet in self.transport.receive_packets(data):
                    if packet.quick_ack:
                        self.stats.quick_acks += 1
                    elif len(packet.payload) == 4:
                        self.error_code = struct.unpack("<i", packet.payload)[0]
                        return
                    elif packet.payload[:8] == bytes(8):
                        self._plain.put_nowait(packet.payload)
                    else:
                        self._on_encrypted(packet.payload)
                if len(self._acks) >= _ACK_FLUSH:
                    await self._send_encrypted([])
        except (OSError, aiohttp.ClientError) as exc:
            log.debug("read loop ended: %r", exc)
        except Exception:
            log.exception("mtclient read loop failed")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._plain.put_nowait(None)
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(self._failure())
        self._pending.clear()

    def _failure(self) -> ConnectionError:
        if self.error_code is not None:
            return TransportErrorReply(self.error_code)
        return ConnectionError("connection closed")

    def _on_encrypted(self, payload: bytes) -> None:
        if self.auth is None:
            return
        dec = decrypt_server_message(self.auth.auth_key, payload)
        if dec is None or dec.session_id != self.session_id or dec.msg_id & 3 not in (1, 3):
            log.warning("dropping an undecryptable or foreign server packet")
            return
        self._on_message(dec.msg_id, dec.seqno, dec.body)

    def _on_message(self, msg_id: int, seqno: int, body: bytes) -> None:
        if seqno & 1:
            self._acks.append(msg_id)
        cid = struct.unpack_from("<I", body)[0] if len(body) >= 4 else 0
        if cid == MSG_CONTAINER_ID:
            for inner in parse_container(body):
                self._on_message(*inner)
        elif cid == RPC_RESULT_ID:
            req_msg_id = struct.unpack_from("<q", body, 4)[0]
            self._on_result(req_msg_id, _gunzip(body[12:]))
        elif cid == GZIP_PACKED_ID:
            self._on_message(msg_id, seqno & ~1, _gunzip(body))
        else:
            try:
                obj = decode(body)
            except TLDecodeError as exc:
                log.warning("undecodable server message: %s", exc)
                return
            self._on_service(msg_id, obj)

    def _on_result(self, req_msg_id: int, data: bytes) -> None:
        p = self._pending.pop(req_msg_id, None)
        if p is None or p.future.done():
            return
        try:
            if data[:4] == struct.pack("<I", _RPC_ERROR_ID):
                err = decode(data)
                p.future.set_exception(RpcErrorReply(err.error_code, err.error_message))
            else:
                p.future.set_result(p.read(data) if p.read else decode(data))
        except TLDecodeError as exc:
            p.future.set_exception(exc)

    def _resolve(self, req_msg_id: int, obj: Any) -> None:
        p = self._pending.pop(req_msg_id, None)
        if p is not None and not p.future.done():
            p.future.set_result(obj)

    def _on_service(self, server_msg_id: int, obj: Any) -> None:
        if isinstance(obj, types.Pong):
            self._resolve(obj.msg_id, obj)
        elif isinstance(obj, types.FutureSalts | types.MsgsStateInfo):
            self._resolve(obj.req_msg_id, obj)
        elif isinstance(obj, types.BadServerSalt):
            assert self.auth is not None
            self.stats.bad_salts += 1
            self.auth.server_salt = obj.new_server_salt
            self._resend(obj.bad_msg_id)
        elif isinstance(obj, types.BadMsgNotification):
            if obj.error_code in (16, 17):  # our clock is off: take the server's
                assert self.auth is not None
                self.auth.time_offset = (server_msg_id >> 32) - time.time()
                self._resend(obj.bad_msg_id)
            else:
                for mid in self._containers.pop(obj.bad_msg_id, [obj.bad_msg_id]):
                    p = self._pending.pop(mid, None)
                    if p is not None and not p.future.done():
                        p.future.set_exception(BadMessageError(obj.error_code))
        elif isinstance(obj, types.NewSessionCreated):
            assert self.auth is not None
            self.stats.new_sessions += 1
            self.auth.server_salt = obj.server_salt
        elif self.on_update is not None and getattr(obj, "TL_TYPE", None) == "Updates":
            try:
                self.on_update(obj)
            except Exception:
                log.exception("on_update failed")
        elif not isinstance(obj, types.MsgsAck):
            self.stats.other.append(obj)

    def _resend(self, bad_msg_id: int) -> None:
        """Send again, under new msg_ids, whatever ``bad_msg_id`` carried."""
        messages = []
        for mid in self._containers.pop(bad_msg_id, [bad_msg_id]):
            p = self._pending.pop(mid, None)
            if p is None:
                continue
            new_id = self._next_msg_id()
            self._pending[new_id] = p
            messages.append((new_id, self._next_seqno(True), p.body))
        if messages:
            self.stats.resent += len(messages)
            task = asyncio.get_running_loop().create_task(self._send_encrypted(messages))
            task.add_done_callback(_ignore_result)


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("resend failed: %r", task.exception())


def _reader_of(request: TLFunction) -> Callable[[bytes], Any] | None:
    if isinstance(request, functions.Ping | functions.PingDelayDisconnect):
        return None  # answered by a bare pong
    return type(request).read_result


def _gunzip(data: bytes) -> bytes:
    """Unwrap gzip_packed (if ``data`` is one), else return ``data``."""
    if data[:4] != struct.pack("<I", GZIP_PACKED_ID):
        return data
    packed = Reader(data, 4).bytes()
    return zlib.decompress(packed, wbits=zlib.MAX_WBITS | 32)


def _build_container(items: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(struct.pack("<Ii", MSG_CONTAINER_ID, len(items)))
    for msg_id, seqno, body in items:
        out += struct.pack("<qii", msg_id, seqno, len(body))
        out += body
    return bytes(out)


# --------------------------------------------------------------------------- smoke check


def load_public_key(pem: bytes) -> dict[int, PublicKey]:
    """``{fingerprint: numbers}`` from an RSA PEM, public (PKCS#1 or SPKI) or private."""
    if b"PRIVATE KEY" in pem:
        key: Any = serialization.load_pem_private_key(pem, password=None).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    numbers = key.public_numbers()
    return {compute_fingerprint(numbers.n, numbers.e): numbers}


async def smoke_check(args: argparse.Namespace) -> None:
    """Handshake, help.getConfig and a few pings; prints what it saw."""
    with open(args.key, "rb") as f:
        keys = load_public_key(f.read())
    started = time.perf_counter()
    if args.ws:
        client = await MTClient.connect_ws(args.ws, keys, kind=args.kind, timeout=args.timeout)
    else:
        client = await MTClient.connect(
            args.host,
            args.port,
            keys,
            kind=args.kind,
            obfuscated=args.obfuscated,
            timeout=args.timeout,
        )
    async with client:
        handshake = time.perf_counter() - started
        config = await client.invoke(functions.help.GetConfig())
        rtts = []
        for _ in range(args.pings):
            t = time.perf_counter()
            await client.ping()
            rtts.append((time.perf_counter() - t) * 1000)
    dcs = sorted({(o.id, o.ip_address, o.port) for o in config.dc_options})
    print(f"transport {client.transport.kind}: handshake {handshake * 1000:.0f} ms")
    print(f"this_dc {config.this_dc}, dc_options {dcs}")
    if rtts:
        print(f"{len(rtts)} pings: min {min(rtts):.1f} ms, max {max(rtts):.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10443)
    parser.add_argument("--ws", help="ws://host:port/apiws instead of TCP")
    parser.add_argument("--key", required=True, help="the server's RSA key (PEM)")
    parser.add_argument(
        "--kind", default="intermediate", choices=["abridged", "intermediate", "padded", "full"]
    )
    parser.add_argument("--obfuscated", action="store_true")
    parser.add_argument("--pings", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(smoke_check(args))
    except (OSError, TransportErrorReply, RpcErrorReply, BadMessageError, ValueError) as exc:
        print(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
