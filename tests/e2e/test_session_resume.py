"""A session outlives its connection: answers survive a disconnect, acks stop resends.

A client that loses its connection comes back with the same auth key and the
same session id (and carries on with its msg_id/seqno counters); the server then
re-sends, under new msg_ids, every content-related message the client never
acknowledged, e.g. the ``rpc_result`` of a request whose answer it never read,
so the client need not send the request again. What the client acknowledged is
not sent again.

Also ``ping_delay_disconnect``: the server closes the connection
``disconnect_delay`` seconds after the last one, unless another comes first
(other traffic does not reset the timer; https://core.telegram.org/mtproto/service_messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from teamgram.interface.session.host import HostedSession
from teamgram.server import Server
from teamgram.testing import AuthState, MTClient, public_keys
from teamgram.tl import Reader, decode, functions, types
from teamgram.tl.core import GZIP_PACKED_ID, MSG_CONTAINER_ID, RPC_RESULT_ID

CLIENT_TIMEOUT = 20.0
DISCONNECT_DELAY = 2


@dataclass(frozen=True)
class Received:
    """One message from the server (containers unpacked, gzip_packed opened)."""

    msg_id: int
    seqno: int
    body: bytes

    @property
    def constructor(self) -> int:
        return struct.unpack_from("<I", self.body)[0] if len(self.body) >= 4 else 0

    @property
    def req_msg_id(self) -> int | None:
        """For an rpc_result: the msg_id of the request it answers."""
        if self.constructor != RPC_RESULT_ID:
            return None
        return int(struct.unpack_from("<q", self.body, 4)[0])

    @property
    def result(self) -> bytes:
        """For an rpc_result: the result bytes, gzip_packed opened."""
        data = self.body[12:]
        if data[:4] == struct.pack("<I", GZIP_PACKED_ID):
            data = zlib.decompress(Reader(data, 4).bytes(), wbits=zlib.MAX_WBITS | 32)
        return data

    def decoded(self) -> Any:
        return decode(self.body)


class SessionClient(MTClient):
    """MTClient that records what the server sends and can take over another's session."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[Received] = []

    def _on_message(self, msg_id: int, seqno: int, body: bytes) -> None:
        cid = struct.unpack_from("<I", body)[0] if len(body) >= 4 else 0
        if cid not in (MSG_CONTAINER_ID, GZIP_PACKED_ID):
            self.received.append(Received(msg_id, seqno, body))
        super()._on_message(msg_id, seqno, body)

    async def stop_reading(self) -> None:
        """Read nothing more (the socket stays open): answers pile up unread."""
        assert self._reader is not None
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    def take_over(self, old: MTClient) -> None:
        """Speak in ``old``'s session, as a client does after reconnecting."""
        self.session_id = old.session_id
        self._seq = old._seq
        self._last_msg_id = max(self._last_msg_id, old._last_msg_id)

    def answers(self, req_msg_id: int) -> list[Received]:
        return [r for r in self.received if r.req_msg_id == req_msg_id]

    def pongs(self, ping_id: int) -> list[Received]:
        return [
            r
            for r in self.received
            if r.constructor == types.Pong.CONSTRUCTOR_ID and r.decoded().ping_id == ping_id
        ]

    def of_type(self, cls: type[Any]) -> list[Received]:
        return [r for r in self.received if r.constructor == cls.CONSTRUCTOR_ID]


Connect = Callable[..., Awaitable[SessionClient]]


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Connect]:
    """``await connect(auth=None)``: a SessionClient on ``server``, closed after."""
    clients: list[SessionClient] = []

    async def factory(auth: AuthState | None = None) -> SessionClient:
        client = await asyncio.wait_for(
            SessionClient.connect(
                "127.0.0.1",
                server.gateway.tcp_ports[0],
                public_keys(server.server_keys),
                auth=auth,
                timeout=CLIENT_TIMEOUT,
            ),
            CLIENT_TIMEOUT,
        )
        assert isinstance(client, SessionClient)
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def hosted(server: Server, client: MTClient) -> HostedSession:
    assert client.auth is not None
    return server.session_host.sessions[(client.auth.auth_key_id, client.session_id)]


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def resume(connect: Connect, old: SessionClient) -> SessionClient:
    """A new connection with ``old``'s key, salt, clock offset and session."""
    assert old.auth is not None
    await old.close()
    new = await connect(auth=old.auth)
    new.take_over(old)
    return new


# --------------------------------------------------------------------------- resume


async def test_unread_answer_is_delivered_after_reconnect(server: Server, connect: Connect) -> None:
    first = await connect()
    await first.ping(1)  # opens the session and learns the salt
    session = hosted(server, first)
    await until(lambda: not session.mt.has_output())
    baseline = session.mt.unacked_count()

    # help.getConfig, then the answer is never read.
    await first.stop_reading()
    req_msg_id, packet = first.encrypt(functions.help.GetConfig().to_bytes())
    await first.send_payloads([packet])
    await until(
        lambda: (
            session.mt.unacked_count() > baseline
            and not session.running
            and not session.mt.has_output()
        )
    )
    assert not first.answers(req_msg_id)

    resumed_at = time.time()
    second = await resume(connect, first)
    assert second.session_id == first.session_id
    assert await second.ping(2) == 2  # any message brings the session over
    await until(lambda: bool(second.answers(req_msg_id)))

    [answer] = second.answers(req_msg_id)
    config = functions.help.GetConfig.read_result(answer.result)
    assert isinstance(config, types.Config)
    assert answer.msg_id & 3 == 1 and answer.seqno & 1  # a content-related answer
    assert answer.msg_id >> 32 >= int(resumed_at) - 1  # a fresh msg_id
    assert second.stats.new_sessions == 0  # the same session, not a new one
    assert not second.of_type(types.BadMsgNotification)
    assert second.pongs(1)  # never acknowledged either
    assert second.error_code is None


async def test_unacked_answer_is_resent_under_new_msg_id(server: Server, connect: Connect) -> None:
    first = await connect()
    await first.ping(1)
    config = await first.invoke(functions.help.GetConfig())
    assert isinstance(config, types.Config)
    [req_msg_id] = {r.req_msg_id for r in first.received if r.req_msg_id is not None}
    [original] = first.answers(req_msg_id)
    # Read, but not acknowledged: MTClient acks with its next outgoing message.

    second = await resume(connect, first)
    assert await second.ping(2) == 2
    await until(lambda: bool(second.answers(req_msg_id)))
    [again] = second.answers(req_msg_id)
    assert again.msg_id != original.msg_id
    assert again.msg_id > original.msg_id
    assert again.result == original.result
    assert second.stats.new_sessions == 0
    assert not second.of_type(types.BadMsgNotification)


async def test_acknowledged_messages_are_not_resent(server: Server, connect: Connect) -> None:
    first = await connect()
    await first.ping(1)
    assert isinstance(await first.invoke(functions.help.GetConfig()), types.Config)
    [req_msg_id] = {r.req_msg_id for r in first.received if r.req_msg_id is not None}
    acks_before = first.stats.acks_sent
    await first.ping(2)  # carries the acks for everything so far; pong 2 stays unacked
    assert first.stats.acks_sent > acks_before
    session = hosted(server, first)
    await until(lambda: session.mt.unacked_count() == 1)

    second = await resume(connect, first)
    assert await second.ping(3) == 3
    await until(lambda: bool(second.pongs(2)))
    await asyncio.sleep(0.3)  # anything else would have come in the same write
    assert len(second.pongs(2)) == 1  # the one unacknowledged message
    assert not second.answers(req_msg_id)
    assert not second.pongs(1)
    assert not second.of_type(types.NewSessionCreated)
    assert second.stats.new_sessions == 0
    assert not second.of_type(types.BadMsgNotification)


async def test_new_session_id_gets_nothing_old(server: Server, connect: Connect) -> None:
    """Same key, another session id: a new session, nothing of the old one's."""
    first = await connect()
    await first.ping(1)
    await first.stop_reading()
    req_msg_id, packet = first.encrypt(functions.help.GetConfig().to_bytes())
    await first.send_payloads([packet])
    session = hosted(server, first)
    await until(lambda: not session.running and session.mt.unacked_count() >= 2)
    assert first.auth is not None
    await first.close()

    other = await connect(auth=first.auth)
    assert other.session_id != first.session_id
    assert await other.ping(2) == 2
    await asyncio.sleep(0.3)
    assert other.stats.new_sessions == 1
    assert not other.answers(req_msg_id)
    assert not other.pongs(1)


# --------------------------------------------------------------------------- ping_delay_disconnect


async def ping_delay(client: MTClient, ping_id: int) -> None:
    pong = await client.invoke(
        functions.PingDelayDisconnect(ping_id=ping_id, disconnect_delay=DISCONNECT_DELAY)
    )
    assert isinstance(pong, types.Pong) and pong.ping_id == ping_id


async def closed_after(client: MTClient, since: float) -> float:
    """Wait for the server to close ``client``; seconds since ``since``."""
    code = await client.wait_closed(DISCONNECT_DELAY + 5)
    assert code is None  # a plain close, no transport error
    return time.monotonic() - since


async def test_ping_delay_disconnect_closes_after_silence(connect: Connect) -> None:
    client = await connect()
    await ping_delay(client, 1)
    elapsed = await closed_after(client, time.monotonic())
    assert DISCONNECT_DELAY - 0.5 <= elapsed <= DISCONNECT_DELAY + 1.5


async def test_ping_delay_disconnect_kept_open_by_pings(connect: Connect) -> None:
    client = await connect()
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 2.5 * DISCONNECT_DELAY:
        i += 1
        await ping_delay(client, i)
        await asyncio.sleep(DISCONNECT_DELAY * 0.4)
        assert not client.closed
    last = time.monotonic()
    await ping_delay(client, i + 1)
    elapsed = await closed_after(client, last)
    assert DISCONNECT_DELAY - 0.5 <= elapsed <= DISCONNECT_DELAY + 1.5


async def test_other_traffic_does_not_reset_the_timer(connect: Connect) -> None:
    client = await connect()
    await ping_delay(client, 1)
    armed = time.monotonic()

    async def chatter() -> None:
        i = 100
        while True:
            i += 1
            with contextlib.suppress(ConnectionError):
                await client.ping(i)
            await asyncio.sleep(0.3)

    task = asyncio.get_running_loop().create_task(chatter())
    try:
        elapsed = await closed_after(client, armed)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert DISCONNECT_DELAY - 0.5 <= elapsed <= DISCONNECT_DELAY + 1.5
