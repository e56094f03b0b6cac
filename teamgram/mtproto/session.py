"""The MTProto session state machine (sans-IO).

One :class:`MTProtoSession` per (auth key, session id). It takes decrypted
client messages and the server's clock, and produces:

* events for the host (:class:`RpcCall`: a query to run), and
* outgoing messages it queues itself (service answers such as pong,
  bad_msg_notification, new_session_created, msgs_state_info...).

The host runs queries, hands results back with :meth:`add_result` and pulls the
bytes to encrypt with :meth:`flush`. Nothing here touches sockets or clocks:
``now`` is always passed in, so tests drive it with plain values.

Rules implemented follow https://core.telegram.org/mtproto/service_messages and
/mtproto/description (msg_id and seqno checks, acks, containers, resend).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from teamgram.tl import TLDecodeError, TLFunction, UnknownConstructorError, types
from teamgram.tl import functions as fn
from teamgram.tl.core import (
    GZIP_PACKED_ID,
    MSG_CONTAINER_ID,
    RPC_RESULT_ID,
    Reader,
    decode,
    gzip_packed,
    pack_I,
    pack_i,
    pack_q,
    write_string,
)

# bad_msg_notification error codes
MSG_ID_TOO_LOW = 16
MSG_ID_TOO_HIGH = 17
MSG_ID_BAD_BITS = 18
CONTAINER_ID_REUSED = 19
MSG_TOO_OLD = 20
SEQNO_TOO_LOW = 32
SEQNO_TOO_HIGH = 33
SEQNO_EXPECTED_EVEN = 34
SEQNO_EXPECTED_ODD = 35
BAD_SERVER_SALT = 48
BAD_CONTAINER = 64

# Messages that are not "content-related" (no ack needed, even seqno).
_NOT_CONTENT = frozenset(
    {
        types.MsgsAck.CONSTRUCTOR_ID,
        MSG_CONTAINER_ID,
    }
)
_MAX_CONTAINER_ITEMS = 1024
_MAX_SEEN = 1024  # remembered received msg_ids per session (older: msg_id too low)
# File payloads, sent as they are: gzip cannot shrink them.
_NEVER_GZIP = frozenset(
    {
        GZIP_PACKED_ID,
        types.upload.File.CONSTRUCTOR_ID,
        types.upload.CdnFile.CONSTRUCTOR_ID,
        types.upload.WebFile.CONSTRUCTOR_ID,
    }
)
_MAX_CACHED_ANSWERS = 512
# Answers kept for duplicate requests: at most this many bytes per session, and
# none bigger than _MAX_CACHED_ANSWER (a file chunk is re-sent from the unacked set
# after a reconnect, not from here).
_MAX_CACHED_ANSWER_BYTES = 1 << 20
_MAX_CACHED_ANSWER = 64 << 10
_CONTAINER_LIMIT = 1 << 20  # don't pack answers into a container beyond ~1 MiB


@dataclass(frozen=True, slots=True)
class RpcCall:
    """A query for the host to run; answer with :meth:`MTProtoSession.add_result`."""

    msg_id: int
    query: TLFunction
    # invokeAfterMsg(s): msg_ids whose processing must finish first.
    after: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """A message whose body could not be read (already answered with rpc_error)."""

    msg_id: int
    error: str


@dataclass(frozen=True, slots=True)
class CloseAfter:
    """``ping_delay_disconnect``: close the connection after ``seconds`` of silence."""

    seconds: int


@dataclass(frozen=True, slots=True)
class SessionDestroyed:
    """``destroy_session`` named this other session of the same key."""

    session_id: int


@dataclass(frozen=True, slots=True)
class HttpWait:
    max_delay: int
    wait_after: int
    max_wait: int


Event = RpcCall | DecodeFailure | CloseAfter | SessionDestroyed | HttpWait


@dataclass(slots=True)
class OutMessage:
    msg_id: int
    seqno: int
    body: bytes
    content_related: bool
    sent_at: float = 0.0


# Received-message record, packed in one small int (a busy session keeps up to
# _MAX_SEEN of them): the low 2 bits are the state, bit 2 "content-related".
_PROCESSING, _ANSWERED, _SERVICE = 1, 2, 3
_CONTENT = 4


def _rec(seqno: int, state: int) -> int:
    return state | (_CONTENT if seqno & 1 else 0)


class MsgIdClock:
    """Server msg_ids: ~unixtime*2^32, strictly increasing, ≡1 (answers) or 3 mod 4."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def next(self, now: float, answer: bool) -> int:
        mid = int(now * 4294967296.0) & ~3
        mid |= 1 if answer else 3
        if mid <= self.last:
            mid = (self.last & ~3) + 4 + (1 if answer else 3)
        self.last = mid
        return mid


def rpc_error(code: int, message: str) -> bytes:
    b = bytearray(pack_I(types.RpcError.CONSTRUCTOR_ID))
    b += pack_i(code)
    write_string(b, message)
    return bytes(b)


_RPC_ERROR_HEAD = pack_I(types.RpcError.CONSTRUCTOR_ID)


def _is_rpc_error(body: bytes) -> bool:
    return body[12:16] == _RPC_ERROR_HEAD and body[:4] == pack_I(RPC_RESULT_ID)


def rpc_result(req_msg_id: int, result: bytes, gzip_threshold: int) -> bytes:
    """rpc_result, gzip-packed when that is smaller; file bytes are never compressed
    (random or already compressed: ~25 ms of CPU per 512 KiB for nothing)."""
    if len(result) > gzip_threshold and struct.unpack_from("<I", result)[0] not in _NEVER_GZIP:
        packed = gzip_packed(result)
        if len(packed) < len(result):
            result = packed
    return pack_I(RPC_RESULT_ID) + pack_q(req_msg_id) + result


@dataclass
class SessionLimits:
    msg_id_past: int = 300
    msg_id_future: int = 30
    resend_window: float = 600.0
    max_pending: int = 4096
    # Bytes of unacknowledged messages kept per session for a reconnect (a client
    # that never acks cannot pin more; updates lost this way come back through
    # getDifference).
    max_pending_bytes: int = 8 << 20
    gzip_threshold: int = 1024


def parse_container(body: bytes) -> list[tuple[int, int, bytes]]:
    """Split a msg_container into (msg_id, seqno, body) triples; ValueError if invalid."""
    r = Reader(body)
    try:
        if r.uint() != MSG_CONTAINER_ID:
            raise ValueError("not a container")
        n = r.int()
        if n < 0 or n > _MAX_CONTAINER_ITEMS:
            raise ValueError(f"container holds {n} messages")
        items = []
        for _ in range(n):
            msg_id = r.long()
            seqno = r.int()
            length = r.int()
            if length < 4 or length % 4:
                raise ValueError("bad inner length")
            items.append((msg_id, seqno, r.raw(length)))
        if r.pos != len(body):
            raise ValueError("trailing bytes after container")
        return items
    except TLDecodeError as exc:
        raise ValueError(str(exc)) from exc


def build_container(messages: list[OutMessage]) -> bytes:
    b = bytearray(pack_I(MSG_CONTAINER_ID))
    b += pack_i(len(messages))
    for m in messages:
        b += struct.pack("<qii", m.msg_id, m.seqno, len(m.body))
        b += m.body
    return bytes(b)


@dataclass
class MTProtoSession:
    """State of one client session; see the module docstring."""

    session_id: int
    auth_key_id: int
    clock: MsgIdClock
    salt_ok: Callable[[int, float], bool]
    current_salt: Callable[[float], int]
    future_salts: Callable[[float, int], list[tuple[int, int, int]]]
    limits: SessionLimits = field(default_factory=SessionLimits)
    decoder: Callable[[bytes], Any] = decode

    created: bool = False
    out_seq: int = 0  # content-related messages sent so far
    last_seen: float = 0.0
    no_updates: bool = False
    # msg_id -> received-state, bounded, in arrival order
    _seen: dict[int, int] = field(default_factory=dict)
    _min_seen: int = 0  # msg_ids below this are "too old to tell"
    _max_in_msg_id: int = 0
    _max_in_seqno: int = -1
    # content-related msg_ids to acknowledge; an answer acknowledges its request
    _pending_acks: dict[int, None] = field(default_factory=dict)
    _queue: list[OutMessage] = field(default_factory=list)  # ready to send
    # sent, content-related, not yet acknowledged by the client
    _unacked: OrderedDict[int, OutMessage] = field(default_factory=OrderedDict)
    # req_msg_id -> serialized rpc_result, for duplicates of answered queries
    _answers: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    # req_msg_id -> the message that carried its answer (for rpc_drop_answer)
    _answer_msgs: OrderedDict[int, OutMessage] = field(default_factory=OrderedDict)
    _answer_bytes: int = 0  # bytes in _answers
    _answer_msg_bytes: int = 0  # bytes of the messages in _answer_msgs
    _unacked_bytes: int = 0  # bytes in _unacked

    # ------------------------------------------------------------------ inbound
    def receive(self, salt: int, msg_id: int, seqno: int, body: bytes, now: float) -> list[Event]:
        """Handle one decrypted message (possibly a container)."""
        self.last_seen = now
        events: list[Event] = []
        code = self._check_msg_id(msg_id, now)
        if code:
            self._bad_msg(msg_id, seqno, code, now)
            return events
        is_container = len(body) >= 4 and struct.unpack_from("<I", body)[0] == MSG_CONTAINER_ID
        if not self.created:
            # Only a message that passed the clock check opens the session, and a
            # container's first message is its lowest inner one.
            self.created = True
            first = msg_id
            if is_container:
                try:
                    first = min((i for i, _, _ in parse_container(body)), default=msg_id)
                except ValueError:
                    pass
            self._min_seen = first
            self._send(
                types.NewSessionCreated(
                    first_msg_id=first,
                    unique_id=self.session_id ^ self.auth_key_id,
                    server_salt=self.current_salt(now),
                ).to_bytes(),
                content=True,
                answer=False,
                now=now,
            )
        content = not is_container and not self._is_ack(body)
        if content and not seqno & 1:
            self._bad_msg(msg_id, seqno, SEQNO_EXPECTED_ODD, now)
            return events
        if not content and seqno & 1:
            self._bad_msg(msg_id, seqno, SEQNO_EXPECTED_EVEN, now)
            return events
        if not self.salt_ok(salt, now):
            # Not processed (and not counted for seqno order): the client resends it
            # with the new salt, under a new msg_id.
            self._send(
                types.BadServerSalt(
                    bad_msg_id=msg_id,
                    bad_msg_seqno=seqno,
                    error_code=BAD_SERVER_SALT,
                    new_server_salt=self.current_salt(now),
                ).to_bytes(),
                content=False,
                answer=True,
                now=now,
            )
            return events
        code = self._check_seqno(msg_id, seqno, content=content)
        if code:
            self._bad_msg(msg_id, seqno, code, now)
            return events
        if is_container:
            if msg_id in self._seen:
                self._bad_msg(msg_id, seqno, CONTAINER_ID_REUSED, now)
                return events
            try:
                items = parse_container(body)
            except ValueError:
                self._bad_msg(msg_id, seqno, BAD_CONTAINER, now)
                return events
            if any(inner_id >= msg_id for inner_id, _, _ in items):
                self._bad_msg(msg_id, seqno, BAD_CONTAINER, now)
                return events
            self._seen[msg_id] = _rec(seqno, _SERVICE)
            for inner_id, inner_seq, inner_body in items:
                if len(inner_body) >= 4 and struct.unpack_from("<I", inner_body)[0] in (
                    MSG_CONTAINER_ID,
                ):
                    self._bad_msg(inner_id, inner_seq, BAD_CONTAINER, now)
                    continue
                code = self._check_msg_id(inner_id, now)
                if code:
                    self._bad_msg(inner_id, inner_seq, code, now)
                    continue
                code = self._check_seqno(inner_id, inner_seq, content=not self._is_ack(inner_body))
                if code:
                    self._bad_msg(inner_id, inner_seq, code, now)
                    continue
                self._one(inner_id, inner_seq, inner_body, now, events)
        else:
            self._one(msg_id, seqno, body, now, events)
        self._trim_seen()
        return events

    @staticmethod
    def _is_ack(body: bytes) -> bool:
        return len(body) >= 4 and struct.unpack_from("<I", body)[0] in _NOT_CONTENT

    def _check_msg_id(self, msg_id: int, now: float) -> int:
        if msg_id & 3:
            return MSG_ID_BAD_BITS
        t = msg_id / 4294967296.0
        if t < now - self.limits.msg_id_past:
            return MSG_ID_TOO_LOW
        if t > now + self.limits.msg_id_future:
            return MSG_ID_TOO_HIGH
        return 0

    def _check_seqno(self, msg_id: int, seqno: int, content: bool) -> int:
        if content and not seqno & 1:
            return SEQNO_EXPECTED_ODD
        if not content and seqno & 1:
            return SEQNO_EXPECTED_EVEN
        if msg_id in self._seen:
            return 0  # a duplicate: answered from the cache, not an ordering error
        if msg_id > self._max_in_msg_id:
            if seqno < self._max_in_seqno or (
                content and seqno == self._max_in_seqno and seqno & 1
            ):
                return SEQNO_TOO_LOW
            self._max_in_msg_id, self._max_in_seqno = msg_id, seqno
        elif seqno > self._max_in_seqno or (content and seqno == self._max_in_seqno):
            return SEQNO_TOO_HIGH
        return 0

    def _bad_msg(self, msg_id: int, seqno: int, code: int, now: float) -> None:
        self._send(
            types.BadMsgNotification(
                bad_msg_id=msg_id, bad_msg_seqno=seqno, error_code=code
            ).to_bytes(),
            content=False,
            answer=True,
            now=now,
        )

    def _one(self, msg_id: int, seqno: int, body: bytes, now: float, events: list[Event]) -> None:
        seen = self._seen.get(msg_id)
        if seen is not None:
            # A duplicate: re-send a cached answer; otherwise it is still running.
            cached = self._answers.get(msg_id)
            if cached:  # b"" marks an answer dropped by rpc_drop_answer
                self._send(cached, content=True, answer=True, now=now)
            return
        if msg_id < self._min_seen and seqno & 1:
            # Older than anything remembered: cannot tell whether it was processed.
            self._bad_msg(msg_id, seqno, MSG_TOO_OLD, now)
            return
        content = bool(seqno & 1)
        if content:
            self._pending_acks[msg_id] = None
        try:
            obj = self.decoder(body)
        except UnknownConstructorError as exc:
            self._seen[msg_id] = _rec(seqno, _ANSWERED)
            if exc.offset == 0 or exc.function:
                err = f"INPUT_METHOD_INVALID_{exc.constructor_id}"
            else:
                err = "INPUT_CONSTRUCTOR_INVALID"
            self.add_error(msg_id, 400, err, now)
            events.append(DecodeFailure(msg_id, err))
            return
        except TLDecodeError:
            self._seen[msg_id] = _rec(seqno, _ANSWERED)
            self.add_error(msg_id, 400, "INPUT_FETCH_ERROR", now)
            events.append(DecodeFailure(msg_id, "INPUT_FETCH_ERROR"))
            return
        self._seen[msg_id] = _rec(seqno, _SERVICE)
        self._service_or_call(msg_id, obj, now, events)

    def _service_or_call(self, msg_id: int, obj: Any, now: float, events: list[Event]) -> None:
        t = type(obj)
        if t is types.MsgsAck:
            for mid in obj.msg_ids:
                self._forget_unacked(mid)
            return
        if t is fn.Ping or t is fn.PingDelayDisconnect:
            self._pending_acks.pop(msg_id, None)  # the pong acknowledges the ping
            self._send(
                types.Pong(msg_id=msg_id, ping_id=obj.ping_id).to_bytes(),
                content=True,
                answer=True,
                now=now,
            )
            if t is fn.PingDelayDisconnect:
                events.append(CloseAfter(obj.disconnect_delay))
            return
        if t is fn.GetFutureSalts:
            num = max(1, min(64, obj.num))
            salts: list[Any] = [
                types.FutureSalt(valid_since=a, valid_until=b, salt=s)
                for a, b, s in self.future_salts(now, num)
            ]
            # Answered bare (not inside rpc_result), as Telegram and mtcute expect.
            self._send(
                types.FutureSalts(req_msg_id=msg_id, now=int(now), salts=salts).to_bytes(),
                content=True,
                answer=True,
                now=now,
            )
            return
        if t is types.MsgsStateReq:
            info: Any = self._states(obj.msg_ids, now)  # raw bytes in a TL string
            self._send(
                types.MsgsStateInfo(req_msg_id=msg_id, info=info).to_bytes(),
                content=True,
                answer=True,
                now=now,
            )
            return
        if t is types.MsgResendReq or t is types.MsgResendAnsReq:
            for mid in obj.msg_ids:
                out = self._forget_unacked(mid)
                if out is not None:
                    self._send(out.body, content=True, answer=bool(out.msg_id & 2 == 0), now=now)
            return
        if t is types.MsgsAllInfo or t is types.MsgsStateInfo:
            return  # informational; acknowledged like any content message
        if t is types.MsgDetailedInfo or t is types.MsgNewDetailedInfo:
            return
        if t is fn.DestroySession:
            events.append(SessionDestroyed(obj.session_id))
            return
        if t is types.HttpWait:
            events.append(HttpWait(obj.max_delay, obj.wait_after, obj.max_wait))
            return
        if t is fn.RpcDropAnswer:
            self._drop_answer(msg_id, obj.req_msg_id, now)
            return
        if isinstance(obj, TLFunction):
            self._set_state(msg_id, _PROCESSING)
            after: tuple[int, ...] = ()
            if isinstance(obj, fn.InvokeAfterMsg):
                after, obj = (obj.msg_id,), obj.query
            elif isinstance(obj, fn.InvokeAfterMsgs):
                after, obj = tuple(obj.msg_ids), obj.query
            if not isinstance(obj, TLFunction):
                self.add_error(msg_id, 400, "INPUT_METHOD_INVALID", now)
                return
            events.append(RpcCall(msg_id, obj, after))
            return
        # A type where a request was expected.
        self.add_error(msg_id, 400, f"INPUT_METHOD_INVALID_{t.CONSTRUCTOR_ID}", now)

    def _states(self, msg_ids: list[int], now: float) -> bytes:
        out = bytearray()
        for mid in msg_ids:
            rec = self._seen.get(mid)
            if rec is not None:
                v = 4
                if rec & 3 == _PROCESSING:
                    v |= 32
                elif rec & 3 == _ANSWERED:
                    v |= 32 | 64
                if not rec & _CONTENT:
                    v |= 16
                out.append(v)
            elif mid < self._min_seen:
                out.append(1)
            elif mid / 4294967296.0 > now + self.limits.msg_id_future:
                out.append(3)
            else:
                out.append(2)
        return bytes(out)

    def _drop_answer(self, msg_id: int, req_msg_id: int, now: float) -> None:
        rec = self._seen.get(req_msg_id)
        if rec is None:
            ans: Any = types.RpcAnswerUnknown()
        elif rec & 3 == _PROCESSING:
            ans = types.RpcAnswerDroppedRunning()
            self._set_state(req_msg_id, _ANSWERED)  # its answer, when it comes, is dropped
            self._mark_dropped(req_msg_id)
        else:
            out = self._answer_msgs.pop(req_msg_id, None)
            if out is not None:
                self._answer_msg_bytes -= len(out.body)
            if out is None:
                ans = types.RpcAnswerUnknown()
            else:
                # Cancel it: not sent if still queued, not re-sent after a reconnect.
                self._queue = [m for m in self._queue if m is not out]
                self._forget_unacked(out.msg_id)
                self._mark_dropped(req_msg_id)
                ans = types.RpcAnswerDropped(
                    msg_id=out.msg_id, seq_no=out.seqno, bytes=len(out.body)
                )
        self._send(
            rpc_result(msg_id, ans.to_bytes(), self.limits.gzip_threshold),
            content=True,
            answer=True,
            now=now,
        )

    def _set_state(self, msg_id: int, state: int) -> None:
        rec = self._seen.get(msg_id)
        if rec is not None:
            self._seen[msg_id] = (rec & _CONTENT) | state

    def _trim_seen(self) -> None:
        seen = self._seen
        while len(seen) > _MAX_SEEN:
            mid = next(iter(seen))
            del seen[mid]
            if mid > self._min_seen:
                self._min_seen = mid

    # ----------------------------------------------------------------- outbound
    def add_result(self, req_msg_id: int, result: bytes, now: float) -> None:
        """Queue the serialized result of a query (any TL object or value bytes)."""
        if self._answers.get(req_msg_id) == b"":
            return  # dropped by rpc_drop_answer
        body = rpc_result(req_msg_id, result, self.limits.gzip_threshold)
        self._remember_answer(
            req_msg_id, body, self._send(body, content=True, answer=True, now=now)
        )

    def add_error(self, req_msg_id: int, code: int, message: str, now: float) -> None:
        body = rpc_result(req_msg_id, rpc_error(code, message), self.limits.gzip_threshold)
        self._remember_answer(
            req_msg_id, body, self._send(body, content=True, answer=True, now=now)
        )

    def add_bare(self, body: bytes, now: float) -> None:
        """Queue a service answer sent outside rpc_result (destroy_session_ok...)."""
        self._send(body, content=True, answer=True, now=now)

    def add_update(self, body: bytes, now: float) -> None:
        """Queue a pushed update (``Updates`` constructor bytes)."""
        self._send(body, content=True, answer=False, now=now)

    def _remember_answer(self, req_msg_id: int, body: bytes, out: OutMessage) -> None:
        self._set_state(req_msg_id, _ANSWERED)
        # The answer acknowledges the request: no separate msgs_ack for it.
        self._pending_acks.pop(req_msg_id, None)
        self._answer_msgs[req_msg_id] = out
        self._answer_msg_bytes += len(out.body)
        while len(self._answer_msgs) > _MAX_CACHED_ANSWERS or (
            self._answer_msg_bytes > _MAX_CACHED_ANSWER_BYTES and len(self._answer_msgs) > 1
        ):
            self._answer_msg_bytes -= len(self._answer_msgs.popitem(last=False)[1].body)
        if len(body) <= _MAX_CACHED_ANSWER:
            self._answers[req_msg_id] = body
            self._answer_bytes += len(body)
        while len(self._answers) > _MAX_CACHED_ANSWERS or (
            self._answer_bytes > _MAX_CACHED_ANSWER_BYTES and len(self._answers) > 1
        ):
            self._answer_bytes -= len(self._answers.popitem(last=False)[1])

    def _forget_unacked(self, msg_id: int) -> OutMessage | None:
        out = self._unacked.pop(msg_id, None)
        if out is not None:
            self._unacked_bytes -= len(out.body)
        return out

    def _mark_dropped(self, req_msg_id: int) -> None:
        """b"" marks an answer dropped by rpc_drop_answer."""
        self._answer_bytes -= len(self._answers.get(req_msg_id, b""))
        self._answers[req_msg_id] = b""

    def _send(self, body: bytes, content: bool, answer: bool, now: float) -> OutMessage:
        seqno = self.out_seq * 2 + (1 if content else 0)
        if content:
            self.out_seq += 1
        out = OutMessage(self.clock.next(now, answer), seqno, body, content, sent_at=now)
        self._queue.append(out)
        return out

    def has_output(self) -> bool:
        return bool(self._queue or self._pending_acks)

    def has_messages(self) -> bool:
        """Real messages are queued (not just acks): what a long poll waits for."""
        return bool(self._queue)

    def flush(self, now: float) -> list[OutMessage]:
        """Messages to encrypt and send now: one container where several are queued.

        Content-related messages stay in the unacked set until the client acks
        them, so a reconnecting client can get them again (:meth:`resend_unacked`).
        """
        if self._pending_acks:
            ids = list(self._pending_acks)[:8192]
            for mid in ids:
                del self._pending_acks[mid]
            acks = types.MsgsAck(msg_ids=ids).to_bytes()
            self._queue.append(
                OutMessage(self.clock.next(now, False), self.out_seq * 2, acks, False, now)
            )
        if not self._queue:
            return []
        queue, self._queue = self._queue, []
        for m in queue:
            if m.content_related:
                self._unacked[m.msg_id] = m
                self._unacked_bytes += len(m.body)
        while len(self._unacked) > self.limits.max_pending or (
            self._unacked_bytes > self.limits.max_pending_bytes and len(self._unacked) > 1
        ):
            self._unacked_bytes -= len(self._unacked.popitem(last=False)[1].body)
        if len(queue) == 1:
            return queue
        packets: list[OutMessage] = []
        batch: list[OutMessage] = []
        size = 0
        for m in queue:
            if len(m.body) > _CONTAINER_LIMIT:
                packets.append(m)
                continue
            if batch and size + len(m.body) > _CONTAINER_LIMIT:
                packets.append(self._wrap(batch, now))
                batch, size = [], 0
            batch.append(m)
            size += len(m.body) + 16
            if _is_rpc_error(m.body):
                # GramJS stops reading a container at the first rpc_error (it throws
                # after rejecting that request): an error always ends its container.
                packets.append(self._wrap(batch, now) if len(batch) > 1 else batch[0])
                batch, size = [], 0
        if len(batch) == 1:
            packets.append(batch[0])
        elif batch:
            packets.append(self._wrap(batch, now))
        return packets

    def _wrap(self, batch: list[OutMessage], now: float) -> OutMessage:
        return OutMessage(
            self.clock.next(now, False), self.out_seq * 2, build_container(batch), False, now
        )

    def resend_unacked(self, now: float) -> None:
        """A new connection took over this session: queue what the client never acked.

        Re-sent under fresh msg_ids (clients drop msg_ids older than ~300 s); the
        payloads carry their own identity (req_msg_id, pts) for deduplication.
        """
        cutoff = now - self.limits.resend_window
        old, self._unacked = self._unacked, OrderedDict()
        self._unacked_bytes = 0
        for m in old.values():
            if m.sent_at >= cutoff:
                self._send(m.body, content=True, answer=bool(m.msg_id & 2 == 0), now=now)

    def unacked_count(self) -> int:
        return len(self._unacked)
