"""One client connection at the gateway, whatever carries its bytes (TCP or WebSocket).

The framing is detected from the first bytes (sans-IO ``ServerTransport``);
unencrypted packets go to this connection's auth-key handshake, encrypted ones to
the session service. Packets are handled in order; every answer produced while
handling one read leaves in one write.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from teamgram.mtproto.handshake import HandshakeServer, HandshakeStep
from teamgram.mtproto.transport import Packet, ServerTransport, TransportError
from teamgram.service.authsession.service import AuthKeyInfo
from teamgram.service.authsession.tables import KEY_PERM, KEY_TEMP

if TYPE_CHECKING:
    from teamgram.interface.gnetway.gateway import Gateway

log = logging.getLogger(__name__)
_ids = itertools.count(1)
# packets waiting to be handled before the client is told to slow down
_MAX_INBOX = 1024
_PLAIN = b"\0" * 8  # auth_key_id of unencrypted (handshake) packets


class GatewayConnection:
    def __init__(
        self,
        gateway: Gateway,
        write: Callable[[bytes], None],
        close: Callable[[], None],
        client_ip: str,
    ) -> None:
        self.gateway = gateway
        self.conn_id = next(_ids)
        self.client_ip = client_ip
        self._write = write
        self._close = close
        self.transport = ServerTransport(gateway.config.max_packet)
        self._handshake: HandshakeServer | None = None
        self._inbox: deque[Packet] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._close_timer: asyncio.TimerHandle | None = None
        # flood control: a token bucket of packets
        self._rate = float(gateway.config.flood_packets_per_second)
        self._tokens = self._rate
        self._last = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def writable(self) -> bool:
        return not self._closed

    # ------------------------------------------------------------------ inbound
    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            packets = self.transport.receive_data(data)
        except TransportError as exc:
            log.debug("conn %d: transport error: %s", self.conn_id, exc)
            self.fail(exc.code)
            return
        if not packets:
            return
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= len(packets)
        if self._tokens < 0 or len(self._inbox) + len(packets) > _MAX_INBOX:
            log.info("conn %d from %s: flood, closing with -429", self.conn_id, self.client_ip)
            self.fail(-429)
            return
        if self._worker is None or self._worker.done():
            # Fast path: nothing queued before these, so packets whose key is cached
            # are handled right here, in order, without a task.
            host = self.gateway.session_host
            i = 0
            for p in packets:
                payload = p.payload
                if payload[:8] == _PLAIN or not host.try_packet(self, payload, p.quick_ack):
                    break
                i += 1
                if self._closed:
                    return
            if i == len(packets):
                return
            self._inbox.extend(packets[i:])
            self._worker = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._inbox.extend(packets)

    async def _drain(self) -> None:
        try:
            while self._inbox and not self._closed:
                p = self._inbox.popleft()
                payload = p.payload
                if len(payload) >= 8 and payload[:8] == _PLAIN:
                    await self._on_plain(payload)
                else:
                    await self.gateway.session_host.on_packet(self, payload, p.quick_ack)
        except Exception:
            log.exception("conn %d: unexpected error", self.conn_id)
            self.fail(-404)

    async def _on_plain(self, payload: bytes) -> None:
        if self._handshake is None:
            self._handshake = HandshakeServer(self.gateway.server_keys, now=time.time())
        hs = self._handshake
        # RSA and DH take milliseconds (GMP releases the GIL): keep them off the loop.
        step: HandshakeStep = await asyncio.to_thread(hs.receive, payload, time.time())
        if step.candidate is not None:
            c = step.candidate
            info = AuthKeyInfo(
                auth_key_id=c.auth_key_id,
                auth_key=c.auth_key,
                key_type=KEY_TEMP if c.expires_at is not None else KEY_PERM,
                created_at=int(time.time()),
                expires_at=c.expires_at,
                dc_id=c.dc_id,
            )
            stored = await self.gateway.authsession.create_key(info)
            step = hs.confirm(taken=not stored, now=time.time())
        if step.reply is not None:
            self.send_packets([step.reply])
        if step.error:
            self.fail(-404)

    # ----------------------------------------------------------------- outbound
    def send_packets(self, packets: list[bytes]) -> None:
        if self._closed:
            return
        enc = self.transport.encode
        self._write(b"".join([enc(p) for p in packets]))

    def send_quick_ack(self, token: int) -> None:
        if self._closed:
            return
        try:
            self._write(self.transport.encode_quick_ack(token))
        except TransportError:
            pass  # the framing has no quick ack (full)

    def send_transport_error(self, code: int) -> None:
        self.fail(code)

    def fail(self, code: int) -> None:
        """Answer a transport error (-404, -429) and close cleanly."""
        if self._closed:
            return
        if self.transport.kind is not None:
            try:
                self._write(self.transport.encode_error(code))
            except (TransportError, RuntimeError):
                pass
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.clear()
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close()
        self.gateway.session_host.connection_lost(self)

    def connection_lost(self) -> None:
        if not self._closed:
            self._closed = True
            if self._close_timer is not None:
                self._close_timer.cancel()
            self.gateway.session_host.connection_lost(self)

    def close_after(self, seconds: float) -> None:
        """ping_delay_disconnect: close unless another ping comes within ``seconds``."""
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._close_timer = asyncio.get_running_loop().call_later(
            max(1.0, float(seconds)), self.close
        )

    def http_wait(self, max_delay: int, wait_after: int, max_wait: int) -> None:
        """Only meaningful on the HTTP transport."""
