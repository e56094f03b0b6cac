"""The MTProto HTTP transport, one keep-alive TCP connection at a time.

Each ``POST /api`` body is one raw MTProto packet and each response body is one
raw packet: HTTP itself is the framing. The HTTP/1.1 reader is our own (sans-IO
:class:`RequestParser`) because clients pipeline their POSTs on one connection
(Telethon does) and a held POST must not stop the next request from being read,
which a one-request-at-a-time server such as aiohttp's would do.

Answering rules (:class:`HttpConnection`):

* Responses leave strictly in request order and every POST gets exactly one.
* A POST is answered once it is *ripe*: the queries it carried have finished
  (so the session sends them in one container with the acks and the
  ``new_session_created``: a client that only POSTs when it has something to
  say, like Telethon, would otherwise never see its answer) and, if it carried
  ``http_wait``, a real message (not just an ack) is waiting.
* A POST with nothing to answer is held until output arrives, a newer request
  arrives behind it, or ``max_wait`` (the client's ``http_wait``, else 25 s)
  passes; released without output it gets an empty ``msgs_ack`` of its session,
  never an empty body (clients read that as a broken buffer).
* The session host flushes to a connection only while it is ``writable``: an
  HTTP connection whose oldest request is not ripe reads False, so the output
  stays in the session (which batches it) until a request can carry it.
* Several connections may carry one session (browsers open up to six): when the
  connection that last sent a request has nothing left to answer and output is
  waiting, the session is handed to another of its connections that holds a
  ripe request (a long poll).

Transport errors (-404, -429) are a response with that HTTP status (as tdesktop
reads them) whose body is the 4-byte little-endian code (as Telethon reads them).
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from teamgram.interface.gnetway.connection import GatewayConnection
from teamgram.mtproto.crypto.aes import decrypt_ige
from teamgram.mtproto.crypto.kdf import X_CLIENT, aes_key_iv_v2
from teamgram.mtproto.envelope import encrypt_server_message
from teamgram.tl import types

if TYPE_CHECKING:
    from teamgram.interface.httpserver.server import HttpServer
    from teamgram.interface.session.host import HostedSession

log = logging.getLogger(__name__)

API_PATHS = frozenset({"/api", "/apiw", "/apiw1"})  # /apiw1: the path web clients use
MAX_HEADER = 16 * 1024
DEFAULT_MAX_WAIT = 25.0  # seconds a POST is held without output (http_wait's default)
_MAX_HOLD_MS = 120_000  # cap on a client's http_wait max_wait
_MAX_PIPELINE = 64  # requests owed an answer on one connection before it gets -429
_IDLE_TIMEOUT = 300.0  # a keep-alive connection with no request in flight for this long closes
_MAX_SESSIONS = 16  # sessions remembered per connection (for fillers and hand-over)
_ZERO_KEY = bytes(8)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/\d\.\d")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_LIST = re.compile(r"[A-Za-z0-9\-_]+(?:\s*,\s*[A-Za-z0-9\-_]+)*")
_CORS = (
    "Access-Control-Allow-Origin: *\r\n"
    "Access-Control-Allow-Methods: POST, OPTIONS\r\n"
    "Access-Control-Expose-Headers: Content-Length\r\n"
)
_DEFAULT_ALLOW_HEADERS = "origin, content-type, accept, connection, keep-alive"


# ------------------------------------------------------------------ HTTP/1.1 reading


class HttpError(Exception):
    """The bytes are not a request we serve: answer ``status`` and close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class HttpRequest:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


class RequestParser:
    """Strict HTTP/1.x request reader (sans-IO): head up to ``max_header``, Content-Length bodies.

    Chunked bodies are refused (501): no MTProto client sends them, and a body
    size known up front is what lets the limit be enforced before buffering.
    """

    def __init__(self, max_body: int, max_header: int = MAX_HEADER) -> None:
        self.max_body = max_body
        self.max_header = max_header
        self._buf = bytearray()
        self._scan = 0  # where to resume looking for the end of the head
        self._pending: HttpRequest | None = None  # head read, body incomplete
        self._need = 0
        # Set when a head asked for "Expect: 100-continue" and its body is not here yet.
        self.expect_continue = False

    def feed(self, data: bytes) -> list[HttpRequest]:
        """Take bytes; return the requests they complete. Raises :class:`HttpError`."""
        self._buf += data
        out: list[HttpRequest] = []
        while True:
            if self._pending is None:
                # RFC 9112 2.2: ignore empty lines before a request line.
                while self._buf[:2] == b"\r\n":
                    del self._buf[:2]
                end = self._buf.find(b"\r\n\r\n", self._scan)
                if end < 0:
                    if len(self._buf) > self.max_header:
                        raise HttpError(431, "request head too large")
                    self._scan = max(0, len(self._buf) - 3)
                    break
                if end + 4 > self.max_header:
                    raise HttpError(431, "request head too large")
                head = bytes(self._buf[:end])
                del self._buf[: end + 4]
                self._scan = 0
                self._pending, self._need = self._parse_head(head)
                continue_wanted = self._pending.headers.get("expect", "").lower() == "100-continue"
                if continue_wanted and len(self._buf) < self._need:
                    self.expect_continue = True
            if len(self._buf) < self._need:
                break
            req = self._pending
            req.body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            self._pending, self._need = None, 0
            out.append(req)
        return out

    def _parse_head(self, head: bytes) -> tuple[HttpRequest, int]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        if not _TOKEN.fullmatch(method) or not target or _CTL.search(target) or "\t" in target:
            raise HttpError(400, "malformed request line")
        if not _VERSION.fullmatch(version):
            raise HttpError(400, "malformed HTTP version")
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
        if target.startswith(("http://", "https://")):  # absolute-form (RFC 9112 3.2.2)
            parsed = urlsplit(target)
            target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        elif not target.startswith("/") and not (target == "*" and method == "OPTIONS"):
            raise HttpError(400, "bad request target")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.fullmatch(name):  # also refuses obs-fold and bare CR/LF
                raise HttpError(400, "malformed header field")
            value = value.strip(" \t")
            if _CTL.search(value):
                raise HttpError(400, "control character in a header value")
            key = name.lower()
            if key in headers:
                if key == "host":
                    raise HttpError(400, "repeated Host")
                headers[key] = f"{headers[key]}, {value}"
            else:
                headers[key] = value
        if version == "HTTP/1.1" and "host" not in headers:
            raise HttpError(400, "missing Host")
        if "transfer-encoding" in headers:
            raise HttpError(501, "Transfer-Encoding is not supported; send Content-Length")
        expect = headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            raise HttpError(417, "unsupported expectation")
        length = 0
        if "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            if len(values) != 1:
                raise HttpError(400, "conflicting Content-Length")
            (raw,) = values
            if not raw.isdigit() or len(raw) > 12:
                raise HttpError(400, "malformed Content-Length")
            length = int(raw)
        elif method == "POST":
            raise HttpError(411, "Content-Length required")
        if length > self.max_body:
            raise HttpError(413, "request body too large")
        return HttpRequest(method, target, version, headers), length


# ------------------------------------------------------------------ HTTP/1.1 writing


def build_response(
    status: int,
    body: bytes = b"",
    *,
    keep_alive: bool,
    content_type: str = "application/octet-stream",
    extra: str = "",
    head_only: bool = False,
) -> bytes:
    """A complete response; Content-Length is the last header (Telethon stops reading there)."""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"{_CORS}{extra}"
        "Cache-Control: no-store\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


def transport_error_response(code: int) -> bytes:
    """-404/-429 as HTTP status 404/429 with the 4-byte code as the body."""
    try:
        status = HTTPStatus(abs(code)).value
    except ValueError:
        status = 400
    return build_response(status, struct.pack("<i", code), keep_alive=False)


def error_response(exc: HttpError) -> bytes:
    return build_response(
        exc.status,
        f"{exc.detail}\n".encode(),
        keep_alive=False,
        content_type="text/plain; charset=utf-8",
    )


def other_response(req: HttpRequest) -> bytes:
    """Everything but ``POST /api``: CORS preflight, 405 and 404."""
    keep = req.keep_alive
    if req.method == "OPTIONS":
        asked = req.headers.get("access-control-request-headers", "")
        allow = asked if _HEADER_LIST.fullmatch(asked) else _DEFAULT_ALLOW_HEADERS
        extra = f"Access-Control-Allow-Headers: {allow}\r\nAccess-Control-Max-Age: 1728000\r\n"
        return build_response(200, keep_alive=keep, extra=extra)
    head_only = req.method == "HEAD"
    text = "text/plain; charset=utf-8"
    if req.path in API_PATHS:
        return build_response(
            405,
            b"POST an MTProto packet here\n",
            keep_alive=keep,
            content_type=text,
            extra="Allow: POST, OPTIONS\r\n",
            head_only=head_only,
        )
    return build_response(
        404, b"not found\n", keep_alive=keep, content_type=text, head_only=head_only
    )


# ------------------------------------------------------------------ the MTProto side


@dataclass(eq=False, slots=True)
class _Exchange:
    """One request and, once decided, its complete response."""

    packet: bytes | None  # the MTProto packet of a POST /api; None for other requests
    keep_alive: bool
    response: bytes | None = None
    handled: bool = False  # the packet went through the handshake or the session host
    forced: bool = False  # answer now with whatever there is (timeout, newer request)
    session: HostedSession | None = None
    waits: frozenset[int] = field(default_factory=frozenset)  # msg_ids of queries it carried
    poll_seq: int | None = None  # http_wait: hold until the session's out_seq passes this
    timer: asyncio.TimerHandle | None = None


class HttpConnection(GatewayConnection):
    """One HTTP keep-alive connection, seen by the session host as a gateway connection.

    The handshake and session routing are the gateway's (``_on_plain``,
    ``session_host.on_packet``); what changes is when output may leave.
    """

    def __init__(self, server: HttpServer, transport: asyncio.Transport, client_ip: str) -> None:
        super().__init__(server.gateway, transport.write, transport.close, client_ip)
        self.http = server
        self._tp = transport
        self._loop = asyncio.get_running_loop()
        self._exchanges: deque[_Exchange] = deque()  # in request order, answered or not
        self._unhandled: deque[_Exchange] = deque()  # POSTs whose packet is not processed yet
        self._outbox: deque[bytes] = deque()  # packets from the session host, not yet sent
        self._sessions: dict[tuple[int, int], HostedSession] = {}
        self._max_wait = DEFAULT_MAX_WAIT
        self._polled = False  # the packet being handled carried http_wait
        self._handshaking: _Exchange | None = None
        self._advancing = False
        self._handback_scheduled = False
        self._eof = False
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._arm_idle()

    # ---------------------------------------------------------- seen by the host
    @property
    def writable(self) -> bool:
        """False while no request can carry output: it stays queued in the session."""
        if self._closed:
            return False
        if self._writable():
            return True
        self._schedule_handback()
        return False

    def send_packets(self, packets: list[bytes]) -> None:
        if self._closed:
            return
        hs = self._handshaking
        for p in packets:
            if hs is not None and hs.response is None and p[:8] == _ZERO_KEY:
                hs.response = build_response(200, p, keep_alive=hs.keep_alive)
            else:
                self._outbox.append(p)
        self._advance()

    def send_quick_ack(self, token: int) -> None:
        """HTTP has no quick acks: the response itself is the acknowledgement."""

    def http_wait(self, max_delay: int, wait_after: int, max_wait: int) -> None:
        """Remember the client's long-poll limit; the current POST waits for a real message."""
        self._polled = True
        self._max_wait = min(max(int(max_wait), 0), _MAX_HOLD_MS) / 1000.0

    def fail(self, code: int) -> None:
        """Answer every open request with the transport error, then close."""
        if self._closed:
            return
        resp = transport_error_response(code)
        for ex in self._exchanges:
            if ex.response is None:
                ex.response = resp
                ex.keep_alive = False
        self._pump()
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._teardown()
        super().close()

    def connection_lost(self) -> None:
        self._teardown()
        super().connection_lost()

    # ---------------------------------------------------------- seen by the server
    def carried(self) -> list[tuple[int, int]]:
        """The sessions (auth_key_id, session_id) this connection has carried."""
        return list(self._sessions)

    def can_take_output(self) -> bool:
        return not self._closed and self._writable()

    # ---------------------------------------------------------- fed by the protocol
    def on_request(self, req: HttpRequest) -> None:
        if self._closed:
            return
        self._cancel_idle()
        is_api = req.method == "POST" and req.path in API_PATHS
        if len(self._exchanges) >= _MAX_PIPELINE or (is_api and self._flooded()):
            log.info("http conn %d from %s: flood, -429", self.conn_id, self.client_ip)
            self._exchanges.append(_Exchange(None, False))
            self.fail(-429)
            return
        if is_api:
            ex = _Exchange(req.body, req.keep_alive)
            self._exchanges.append(ex)
            self._unhandled.append(ex)
            if self._task is None or self._task.done():
                self._task = self._loop.create_task(self._work())
        else:
            self._exchanges.append(_Exchange(None, req.keep_alive, other_response(req)))
        self._advance()

    def on_bad_request(self, exc: HttpError) -> None:
        """A malformed request: answered (after the ones before it), then the connection closes."""
        if self._closed:
            return
        log.debug("http conn %d: %d %s", self.conn_id, exc.status, exc.detail)
        self._cancel_idle()
        self._exchanges.append(_Exchange(None, False, error_response(exc)))
        self._advance()

    def on_eof(self) -> None:
        """The client stopped sending: answer what is open, then close."""
        self._eof = True
        if not self._exchanges:
            self.close()

    def send_continue(self) -> None:
        """``Expect: 100-continue``, when no earlier response is still owed."""
        if not self._closed and not self._exchanges:
            self._tp.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # ---------------------------------------------------------- inbound packets
    async def _work(self) -> None:
        try:
            while self._unhandled and not self._closed:
                ex = self._unhandled[0]
                await self._handle(ex)
                if self._closed:
                    return
                self._unhandled.popleft()
                ex.handled = True
                if ex.response is None:
                    ex.timer = self._loop.call_later(self._max_wait, self._expire, ex)
                self._advance()
        except Exception:
            log.exception("http conn %d: unexpected error", self.conn_id)
            self.fail(-404)

    async def _handle(self, ex: _Exchange) -> None:
        packet = ex.packet
        assert packet is not None
        if len(packet) >= 8 and packet[:8] == _ZERO_KEY:
            self._handshaking = ex  # its reply answers this POST, whatever else is queued
            try:
                await self._on_plain(packet)
            finally:
                self._handshaking = None
            if ex.response is None:
                self.fail(-404)  # no unencrypted answer: nothing valid to send back
            return
        host = self.gateway.session_host
        sk = await self._session_key(packet)
        before = host.sessions.get(sk) if sk is not None else None
        running = set(before.running) if before is not None else set()
        out_seq = before.mt.out_seq if before is not None else 0
        self._polled = False
        await host.on_packet(self, packet, False)
        hosted = host.sessions.get(sk) if sk is not None else None
        if self._closed or sk is None or hosted is None or hosted.conn is not self:
            return
        ex.session = hosted
        ex.waits = frozenset(hosted.running.keys() - running)
        if self._polled:
            ex.poll_seq = out_seq
        self._remember(sk, hosted)

    async def _session_key(self, packet: bytes) -> tuple[int, int] | None:
        """(auth_key_id, session_id) of an encrypted packet, from its first two AES blocks.

        Only used to find the session the host is about to update (the host
        verifies the packet itself): it lets us tell which queries this POST
        carried and which session can give it a filler.
        """
        if len(packet) < 56:
            return None
        key_id = struct.unpack_from("<q", packet)[0]
        key = await self.gateway.authsession.get_key(key_id, time.time())
        if key is None:
            return None
        aes_key, aes_iv = aes_key_iv_v2(key.auth_key, packet[8:24], X_CLIENT)
        head = decrypt_ige(packet[24:56], aes_key, aes_iv)
        return key_id, struct.unpack_from("<q", head, 8)[0]

    def _remember(self, sk: tuple[int, int], hosted: HostedSession) -> None:
        if self._sessions.get(sk) is hosted:
            return
        self._sessions.pop(sk, None)
        self._sessions[sk] = hosted
        self.http.carry(sk, self)
        while len(self._sessions) > _MAX_SESSIONS:
            old = next(iter(self._sessions))
            del self._sessions[old]
            self.http.uncarry(old, self)

    def _flooded(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1
        return self._tokens < 0

    # ---------------------------------------------------------- answering
    def _first_open(self) -> _Exchange | None:
        for ex in self._exchanges:
            if ex.response is None:
                return ex
        return None

    def _writable(self) -> bool:
        ex = self._first_open()
        return ex is not None and self._ripe(ex)

    @staticmethod
    def _queries_done(ex: _Exchange) -> bool:
        s = ex.session
        return s is None or ex.waits.isdisjoint(s.running)

    def _ripe(self, ex: _Exchange) -> bool:
        if not ex.handled or ex.response is not None:
            return False
        if ex.forced:
            return True
        if not self._queries_done(ex):
            return False
        s = ex.session
        return ex.poll_seq is None or s is None or s.mt.out_seq > ex.poll_seq

    def _advance(self) -> None:
        """Answer what can be answered, in order, then write the answered prefix."""
        if self._closed or self._advancing:
            return
        self._advancing = True
        try:
            while (ex := self._first_open()) is not None and ex.handled:
                if not ex.forced and ex is not self._exchanges[-1] and self._queries_done(ex):
                    ex.forced = True  # a newer request is queued behind it: release it
                if not self._ripe(ex):
                    break
                if not self._outbox:
                    self._pull(ex)
                if self._outbox:
                    packet: bytes | None = self._outbox.popleft()
                elif ex.forced:
                    packet = self._filler(ex)
                    if packet is None:
                        log.warning("http conn %d: no session for a filler", self.conn_id)
                        self.close()
                        return
                else:
                    break
                assert packet is not None
                ex.response = build_response(200, packet, keep_alive=ex.keep_alive)
                if ex.timer is not None:
                    ex.timer.cancel()
                    ex.timer = None
        finally:
            self._advancing = False
        self._pump()

    def _pull(self, ex: _Exchange) -> None:
        """Have the host flush a session of ours that has output (it was held back for us)."""
        host = self.gateway.session_host
        first = ex.session
        order = [first] if first is not None else []
        order += [s for s in self._sessions.values() if s is not first]
        for s in order:
            if s.conn is self and s.mt.has_output():
                # The host's own flush (private for now; a public one is proposed for host.py).
                host.flush(s)
                if self._outbox or self._closed:
                    return

    def _filler(self, ex: _Exchange) -> bytes | None:
        """An empty msgs_ack of the request's session: a valid answer carrying nothing."""
        s = ex.session
        if s is None and self._sessions:
            s = next(reversed(self._sessions.values()))
        if s is None:
            return None
        now = time.time()
        mt = s.mt
        return encrypt_server_message(
            s.key.auth_key,
            s.key.id_bytes,
            mt.current_salt(now),
            mt.session_id,
            self.gateway.session_host.clock.next(now, False),
            mt.out_seq * 2,  # not content-related
            types.MsgsAck(msg_ids=[]).to_bytes(),
        )

    def _pump(self) -> None:
        while self._exchanges and self._exchanges[0].response is not None:
            ex = self._exchanges.popleft()
            if ex.timer is not None:
                ex.timer.cancel()
            assert ex.response is not None
            self._tp.write(ex.response)
            if not ex.keep_alive:
                self.close()
                return
        if not self._exchanges and not self._closed:
            if self._eof:
                self.close()
                return
            self._arm_idle()
            self._schedule_handback()

    def _expire(self, ex: _Exchange) -> None:
        ex.timer = None
        for e in self._exchanges:
            if e.response is None:
                e.forced = True
            if e is ex:
                break
        self._advance()

    # ---------------------------------------------------------- hand-over
    def _schedule_handback(self) -> None:
        if not self._handback_scheduled and self._sessions:
            self._handback_scheduled = True
            self._loop.call_soon(self._handback)

    def _handback(self) -> None:
        """Output waits for us but we cannot carry it: give the session to a waiting connection."""
        self._handback_scheduled = False
        if self._closed or self._writable():
            return
        for sk, s in list(self._sessions.items()):
            if s.conn is self and s.mt.has_output():
                other = self.http.carrier(sk, exclude=self)
                if other is not None:
                    s.conn = other
                    other._advance()

    # ---------------------------------------------------------- timers
    def _arm_idle(self) -> None:
        self._cancel_idle()
        self._idle = self._loop.call_later(_IDLE_TIMEOUT, self._on_idle)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _on_idle(self) -> None:
        self._idle = None
        if not self._exchanges:
            self.close()

    def _teardown(self) -> None:
        self._cancel_idle()
        for ex in self._exchanges:
            if ex.timer is not None:
                ex.timer.cancel()
                ex.timer = None
        self.http.forget(self)
