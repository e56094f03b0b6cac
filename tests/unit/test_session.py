"""The sans-IO MTProto session state machine, driven with plain values.

Every test builds the client side by hand (msg_ids, seqnos, containers as byte
vectors), feeds :meth:`MTProtoSession.receive` and reads back what
:meth:`MTProtoSession.flush` produced, decoding containers with
:func:`parse_container`. Rules checked are those of
https://core.telegram.org/mtproto/service_messages,
/mtproto/service_messages_about_messages and /mtproto/description.

Bugs these tests found in ``session.py`` are fixed; each keeps its regression test.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from typing import Any, NamedTuple

import pytest

from teamgram.mtproto.session import (
    BAD_CONTAINER,
    BAD_SERVER_SALT,
    CONTAINER_ID_REUSED,
    MSG_ID_BAD_BITS,
    MSG_ID_TOO_HIGH,
    MSG_ID_TOO_LOW,
    MSG_TOO_OLD,
    SEQNO_EXPECTED_EVEN,
    SEQNO_EXPECTED_ODD,
    SEQNO_TOO_HIGH,
    SEQNO_TOO_LOW,
    CloseAfter,
    DecodeFailure,
    Event,
    HttpWait,
    MsgIdClock,
    MTProtoSession,
    OutMessage,
    RpcCall,
    SessionDestroyed,
    SessionLimits,
    build_container,
    parse_container,
)
from teamgram.tl import Reader, TLObject, decode, types
from teamgram.tl import functions as fn
from teamgram.tl.core import (
    BOOL_TRUE_BYTES,
    GZIP_PACKED_ID,
    MSG_CONTAINER_ID,
    READERS,
    RPC_RESULT_ID,
    gzip_packed,
    pack_I,
    pack_i,
    pack_q,
)

NOW = 1_700_000_000.0
SALT = 0x0102030405060708
WRONG_SALT = 0x0A0B0C0D0E0F1011
SESSION_ID = 0x1122334455667788
AUTH_KEY_ID = -0x2233445566778899
UNKNOWN_ID = 0x12345678  # a constructor id no layer defines
TWO32 = 4294967296


# --------------------------------------------------------------------------- helpers


def client_msg_id(t: float) -> int:
    """The msg_id a client with an exact clock would give a message sent at ``t``."""
    return int(t * TWO32) & ~3


def is_container(body: bytes) -> bool:
    return len(body) >= 4 and struct.unpack_from("<I", body)[0] == MSG_CONTAINER_ID


def raw_inner(msg_id: int, seqno: int, body: bytes) -> bytes:
    return struct.pack("<qii", msg_id, seqno, len(body)) + body


def update(i: int) -> bytes:
    """A small, distinct, decodable ``Updates`` body."""
    return types.UpdateShort(update=types.UpdateConfig(), date=int(NOW) + i).to_bytes()


class Out(NamedTuple):
    """One server message as the client sees it (container contents flattened)."""

    msg_id: int
    seqno: int
    body: bytes
    obj: Any
    packet: int  # index of the OutMessage it came in
    in_container: bool


def flatten(packets: list[OutMessage]) -> list[Out]:
    outs: list[Out] = []
    for i, p in enumerate(packets):
        if is_container(p.body):
            for mid, seq, body in parse_container(p.body):
                outs.append(Out(mid, seq, body, decode(body), i, True))
        else:
            outs.append(Out(p.msg_id, p.seqno, p.body, decode(p.body), i, False))
    return outs


def of_type(outs: list[Out], cls: type) -> list[Any]:
    return [o.obj for o in outs if type(o.obj) is cls]


def bad_msgs(outs: list[Out]) -> list[tuple[int, int]]:
    return [(o.bad_msg_id, o.error_code) for o in of_type(outs, types.BadMsgNotification)]


def results(outs: list[Out]) -> dict[int, Any]:
    return {o.req_msg_id: o.result for o in of_type(outs, types.RpcResult)}


def acked(outs: list[Out]) -> list[int]:
    return [mid for a in of_type(outs, types.MsgsAck) for mid in a.msg_ids]


class Harness:
    """A session plus a well-behaved client clock (msg_ids and seqnos)."""

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.salt_requests: list[int] = []
        self.mt = MTProtoSession(
            session_id=SESSION_ID,
            auth_key_id=AUTH_KEY_ID,
            clock=MsgIdClock(),
            salt_ok=lambda salt, now: salt == SALT,
            current_salt=lambda now: SALT,
            future_salts=self._future_salts,
            limits=limits or SessionLimits(),
        )
        self.last_id = 0
        self.seq = 0  # content-related messages the client has sent

    def _future_salts(self, now: float, num: int) -> list[tuple[int, int, int]]:
        self.salt_requests.append(num)
        base = int(now)
        return [(base + 3600 * i, base + 3600 * (i + 1), SALT + i) for i in range(num)]

    def next_id(self, t: float = NOW) -> int:
        mid = max(client_msg_id(t), self.last_id + 4)
        self.last_id = mid
        return mid

    def next_seqno(self, content: bool) -> int:
        if content:
            self.seq += 1
            return self.seq * 2 - 1
        return self.seq * 2

    def send(
        self,
        msg: TLObject | bytes,
        *,
        content: bool = True,
        msg_id: int | None = None,
        seqno: int | None = None,
        salt: int = SALT,
        now: float = NOW,
        t: float | None = None,
    ) -> tuple[int, list[Event]]:
        body = msg if isinstance(msg, bytes) else msg.to_bytes()
        if msg_id is None:
            msg_id = self.next_id(now if t is None else t)
        if seqno is None:
            seqno = self.next_seqno(content)
        return msg_id, self.mt.receive(salt, msg_id, seqno, body, now)

    def inner(self, msg: TLObject | bytes, content: bool = True, now: float = NOW) -> OutMessage:
        body = msg if isinstance(msg, bytes) else msg.to_bytes()
        return OutMessage(self.next_id(now), self.next_seqno(content), body, content)

    def send_container(
        self, items: list[OutMessage], *, salt: int = SALT, now: float = NOW
    ) -> tuple[int, list[Event]]:
        cid = self.next_id(now)
        return cid, self.mt.receive(salt, cid, self.next_seqno(False), build_container(items), now)

    def flush(self, now: float = NOW) -> list[Out]:
        return flatten(self.mt.flush(now))

    def ack(self, ids: list[int], now: float = NOW) -> None:
        self.send(types.MsgsAck(msg_ids=ids), content=False, now=now)

    def open(self, at: float = NOW - 10) -> None:
        """Start the session with a ping at ``at``, ack everything: the session is idle."""
        self.send(fn.Ping(ping_id=1), now=at)
        outs = self.flush(at)
        self.ack([o.msg_id for o in outs if o.seqno & 1], now=at)
        assert self.flush(at) == []
        assert self.mt.unacked_count() == 0
        assert not self.mt.has_output()


@pytest.fixture
def h() -> Harness:
    s = Harness()
    s.open()
    return s


# --------------------------------------------------------------------------- new session


def test_new_session_created_on_first_message() -> None:
    h = Harness()
    first, events = h.send(fn.Ping(ping_id=42))
    assert events == []
    outs = h.flush()
    nsc = of_type(outs, types.NewSessionCreated)
    assert nsc == [
        types.NewSessionCreated(
            first_msg_id=first, unique_id=SESSION_ID ^ AUTH_KEY_ID, server_salt=SALT
        )
    ]
    msg = next(o for o in outs if type(o.obj) is types.NewSessionCreated)
    assert msg.msg_id % 4 == 3  # not an answer to a client message
    assert msg.seqno == 1  # the first content-related server message
    assert of_type(outs, types.Pong) == [types.Pong(msg_id=first, ping_id=42)]
    # Only once per session.
    h.send(fn.Ping(ping_id=43))
    assert of_type(h.flush(), types.NewSessionCreated) == []


# --------------------------------------------------------------------------- bad msg_id


@pytest.mark.parametrize(
    ("offset", "code"),
    [(-301, MSG_ID_TOO_LOW), (-86400, MSG_ID_TOO_LOW), (31, MSG_ID_TOO_HIGH), (3600, 17)],
)
def test_msg_id_out_of_window(h: Harness, offset: int, code: int) -> None:
    mid, events = h.send(fn.Ping(ping_id=5), msg_id=client_msg_id(NOW + offset))
    assert events == []
    outs = h.flush()
    assert bad_msgs(outs) == [(mid, code)]
    assert of_type(outs, types.Pong) == []
    assert acked(outs) == []  # a rejected message is not acknowledged
    note = next(o for o in outs if type(o.obj) is types.BadMsgNotification)
    assert note.obj.bad_msg_seqno == 2 * h.seq - 1
    assert note.msg_id % 4 == 1  # an answer to a client message


@pytest.mark.parametrize("offset", [-299, 0, 29])
def test_msg_id_inside_window_accepted(offset: int) -> None:
    h = Harness()
    h.open(at=NOW - 400)  # the session began long before: only the window matters
    mid, _ = h.send(fn.Ping(ping_id=5), t=NOW + offset)
    outs = h.flush()
    assert bad_msgs(outs) == []
    assert of_type(outs, types.Pong) == [types.Pong(msg_id=mid, ping_id=5)]


@pytest.mark.parametrize("low_bits", [1, 2, 3])
def test_msg_id_not_divisible_by_4(h: Harness, low_bits: int) -> None:
    mid = h.next_id() | low_bits
    h.send(fn.Ping(ping_id=5), msg_id=mid)
    outs = h.flush()
    assert bad_msgs(outs) == [(mid, MSG_ID_BAD_BITS)]
    assert of_type(outs, types.Pong) == []


def test_container_reusing_a_message_id(h: Harness) -> None:
    ping_id, _ = h.send(fn.Ping(ping_id=1))
    h.flush()
    items = [
        OutMessage(ping_id - 8, h.next_seqno(True), fn.Ping(ping_id=2).to_bytes(), True),
        OutMessage(ping_id - 4, h.next_seqno(True), fn.Ping(ping_id=3).to_bytes(), True),
    ]
    events = h.mt.receive(SALT, ping_id, h.next_seqno(False), build_container(items), NOW)
    assert events == []
    outs = h.flush()
    assert bad_msgs(outs) == [(ping_id, CONTAINER_ID_REUSED)]
    assert of_type(outs, types.Pong) == []


def test_container_resent_with_the_same_id(h: Harness) -> None:
    items = [h.inner(fn.Ping(ping_id=1)), h.inner(fn.Ping(ping_id=2))]
    cid = h.next_id()
    seq = h.next_seqno(False)
    h.mt.receive(SALT, cid, seq, build_container(items), NOW)
    assert len(of_type(h.flush(), types.Pong)) == 2
    h.mt.receive(SALT, cid, seq, build_container(items), NOW)
    outs = h.flush()
    assert bad_msgs(outs) == [(cid, CONTAINER_ID_REUSED)]
    assert of_type(outs, types.Pong) == []


def test_msg_too_old_once_forgotten() -> None:
    """A replay of an id that fell out of the remembered set: cannot tell, code 20."""
    h = Harness()
    first, _ = h.send(fn.GetFutureSalts(num=1), now=NOW - 100)
    h.flush(NOW - 100)
    for _ in range(2100):  # more than the session remembers
        h.ack([], now=NOW - 50)
    _, events = h.send(fn.GetFutureSalts(num=1), msg_id=first, seqno=1)
    assert events == []
    outs = h.flush()
    assert bad_msgs(outs) == [(first, MSG_TOO_OLD)]
    assert of_type(outs, types.FutureSalts) == []
    assert h.salt_requests == [1]


# --------------------------------------------------------------------------- bad seqno


def test_seqno_too_low(h: Harness) -> None:
    a, _ = h.send(fn.Ping(ping_id=1), seqno=7)
    b, _ = h.send(fn.Ping(ping_id=2), seqno=5)  # newer msg_id, lower seqno
    c, _ = h.send(fn.Ping(ping_id=3), seqno=7)  # newer msg_id, equal odd seqno
    outs = h.flush()
    assert bad_msgs(outs) == [(b, SEQNO_TOO_LOW), (c, SEQNO_TOO_LOW)]
    assert [p.msg_id for p in of_type(outs, types.Pong)] == [a]


def test_seqno_too_high(h: Harness) -> None:
    a, _ = h.send(fn.Ping(ping_id=1), seqno=7)
    b, _ = h.send(fn.Ping(ping_id=2), msg_id=a - 4, seqno=9)  # older msg_id, higher seqno
    outs = h.flush()
    assert bad_msgs(outs) == [(b, SEQNO_TOO_HIGH)]
    assert [p.msg_id for p in of_type(outs, types.Pong)] == [a]


def test_seqno_equal_odd_below_newer_message_is_too_high(h: Harness) -> None:
    a, _ = h.send(fn.Ping(ping_id=1), seqno=7)
    b, _ = h.send(fn.Ping(ping_id=2), msg_id=a - 4, seqno=7)
    outs = h.flush()
    assert bad_msgs(outs) == [(b, SEQNO_TOO_HIGH)]
    assert [p.msg_id for p in of_type(outs, types.Pong)] == [a]


def test_seqno_even_expected(h: Harness) -> None:
    ack_id, _ = h.send(types.MsgsAck(msg_ids=[]), seqno=2 * h.seq + 1)
    items = [h.inner(fn.Ping(ping_id=1))]
    cid = h.next_id()
    h.mt.receive(SALT, cid, 2 * h.seq + 1, build_container(items), NOW)
    outs = h.flush()
    assert bad_msgs(outs) == [(ack_id, SEQNO_EXPECTED_EVEN), (cid, SEQNO_EXPECTED_EVEN)]
    assert of_type(outs, types.Pong) == []


def test_seqno_odd_expected(h: Harness) -> None:
    mid, events = h.send(fn.Ping(ping_id=1), seqno=2 * h.seq)
    assert events == []
    mid2, events = h.send(fn.help.GetConfig(), seqno=2 * h.seq)
    assert events == []
    outs = h.flush()
    assert bad_msgs(outs) == [(mid, SEQNO_EXPECTED_ODD), (mid2, SEQNO_EXPECTED_ODD)]
    assert of_type(outs, types.Pong) == []


# --------------------------------------------------------------------------- bad salt


def test_bad_server_salt_then_resend(h: Harness) -> None:
    mid, events = h.send(fn.help.GetConfig(), salt=WRONG_SALT)
    assert events == []
    outs = h.flush()
    assert of_type(outs, types.BadServerSalt) == [
        types.BadServerSalt(
            bad_msg_id=mid,
            bad_msg_seqno=2 * h.seq - 1,
            error_code=BAD_SERVER_SALT,
            new_server_salt=SALT,
        )
    ]
    assert acked(outs) == []
    assert outs[0].msg_id % 4 == 1 and outs[0].seqno % 2 == 0
    # The client resends under a new msg_id with the new salt: now it runs.
    mid2, events = h.send(fn.help.GetConfig())
    assert events == [RpcCall(mid2, fn.help.GetConfig())]


def test_bad_server_salt_rejects_a_whole_container(h: Harness) -> None:
    items = [h.inner(fn.Ping(ping_id=1)), h.inner(fn.help.GetConfig())]
    cid, events = h.send_container(items, salt=WRONG_SALT)
    assert events == []
    outs = h.flush()
    assert [(o.bad_msg_id, o.error_code) for o in of_type(outs, types.BadServerSalt)] == [
        (cid, BAD_SERVER_SALT)
    ]
    assert of_type(outs, types.Pong) == []


# --------------------------------------------------------------------------- containers


def _malformed(kind: str, a: int, b: int) -> bytes:
    ping = fn.Ping(ping_id=9).to_bytes()
    head = pack_I(MSG_CONTAINER_ID)
    if kind == "count_beyond_data":
        return head + pack_i(2) + raw_inner(a, 1, ping)
    if kind == "trailing_bytes":
        return head + pack_i(1) + raw_inner(a, 1, ping) + b"\0\0\0\0"
    if kind == "inner_length_unaligned":
        return head + pack_i(1) + struct.pack("<qii", a, 1, 6) + ping[:6] + b"\0\0"
    if kind == "inner_length_zero":
        return head + pack_i(2) + struct.pack("<qii", a, 1, 0) + raw_inner(b, 3, ping)
    if kind == "inner_length_past_end":
        return head + pack_i(1) + struct.pack("<qii", a, 1, 4096) + ping
    if kind == "negative_count":
        return head + pack_i(-1) + raw_inner(a, 1, ping)
    if kind == "too_many_items":
        return head + pack_i(1025) + raw_inner(a, 1, ping) * 1025
    if kind == "cut_header":
        return head + pack_i(1) + pack_q(a)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "count_beyond_data",
        "trailing_bytes",
        "inner_length_unaligned",
        "inner_length_zero",
        "inner_length_past_end",
        "negative_count",
        "too_many_items",
        "cut_header",
    ],
)
def test_malformed_container(h: Harness, kind: str) -> None:
    a, b = h.next_id(), h.next_id()
    h.seq += 2
    cid = h.next_id()
    events = h.mt.receive(SALT, cid, h.next_seqno(False), _malformed(kind, a, b), NOW)
    assert events == []
    outs = h.flush()
    assert bad_msgs(outs) == [(cid, BAD_CONTAINER)]
    assert of_type(outs, types.Pong) == []


@pytest.mark.parametrize("delta", [0, 4, 400])
def test_container_inner_id_not_below_container(h: Harness, delta: int) -> None:
    ok = h.inner(fn.Ping(ping_id=1))
    cid = h.next_id()
    bad = OutMessage(cid + delta, h.next_seqno(True), fn.Ping(ping_id=2).to_bytes(), True)
    events = h.mt.receive(SALT, cid, h.next_seqno(False), build_container([ok, bad]), NOW)
    assert events == []
    outs = h.flush()
    assert bad_msgs(outs) == [(cid, BAD_CONTAINER)]
    assert of_type(outs, types.Pong) == []


def test_nested_container_rejected_siblings_processed(h: Harness) -> None:
    first = h.inner(fn.Ping(ping_id=1))
    deep = h.inner(fn.Ping(ping_id=2))
    nested_id = h.next_id()
    nested = OutMessage(nested_id, h.next_seqno(False), build_container([deep]), False)
    last = h.inner(fn.Ping(ping_id=3))
    _, events = h.send_container([first, nested, last])
    assert events == []
    outs = h.flush()
    assert bad_msgs(outs) == [(nested_id, BAD_CONTAINER)]
    assert [(p.msg_id, p.ping_id) for p in of_type(outs, types.Pong)] == [
        (first.msg_id, 1),
        (last.msg_id, 3),
    ]


def test_container_contents_processed_in_order(h: Harness) -> None:
    items = [
        h.inner(fn.help.GetConfig()),
        h.inner(types.MsgsAck(msg_ids=[]), content=False),
        h.inner(fn.Ping(ping_id=7)),
    ]
    _, events = h.send_container(items)
    assert events == [RpcCall(items[0].msg_id, fn.help.GetConfig())]
    outs = h.flush()
    assert of_type(outs, types.Pong) == [types.Pong(msg_id=items[2].msg_id, ping_id=7)]
    # The pending query is acknowledged; the ping by its pong; the ack by nothing.
    assert sorted(acked(outs)) == [items[0].msg_id]


def test_container_holding_a_duplicate_id(h: Harness) -> None:
    q = h.inner(fn.help.GetConfig())
    _, events = h.send_container([q, q])
    assert events == [RpcCall(q.msg_id, fn.help.GetConfig())]
    assert of_type(h.flush(), types.RpcResult) == []


def test_container_holding_an_answered_id(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    first = h.flush()
    answer = next(o for o in first if type(o.obj) is types.RpcResult)
    # The client resends the query, same msg_id and seqno, inside a new container.
    again = OutMessage(qid, 2 * h.seq - 1, fn.help.GetConfig().to_bytes(), True)
    cid = h.next_id()
    events = h.mt.receive(SALT, cid, h.next_seqno(False), build_container([again]), NOW)
    assert events == []  # not run twice
    outs = h.flush()
    replay = [o for o in outs if type(o.obj) is types.RpcResult]
    assert [o.body for o in replay] == [answer.body]
    assert replay[0].msg_id != answer.msg_id


# --------------------------------------------------------------------------- duplicates


def test_replayed_query_not_run_twice_and_answered_from_cache(h: Harness) -> None:
    qid, events = h.send(fn.help.GetConfig())
    seq = 2 * h.seq - 1
    assert events == [RpcCall(qid, fn.help.GetConfig())]
    # Still running: the duplicate is ignored.
    _, events = h.send(fn.help.GetConfig(), msg_id=qid, seqno=seq)
    assert events == []
    outs = h.flush()
    assert of_type(outs, types.RpcResult) == []
    assert bad_msgs(outs) == []
    # Answered: the duplicate gets the cached answer again, under a new msg_id.
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    answered = [o for o in h.flush() if type(o.obj) is types.RpcResult]
    assert results(answered) == {qid: True}
    _, events = h.send(fn.help.GetConfig(), msg_id=qid, seqno=seq, now=NOW + 1)
    assert events == []
    again = [o for o in h.flush(NOW + 1) if type(o.obj) is types.RpcResult]
    assert [o.body for o in again] == [answered[0].body]
    assert again[0].msg_id > answered[0].msg_id
    assert again[0].msg_id % 4 == 1


def test_replayed_failing_message_answered_with_cached_error(h: Harness) -> None:
    mid, events = h.send(pack_I(UNKNOWN_ID))
    assert events == [DecodeFailure(mid, f"INPUT_METHOD_INVALID_{UNKNOWN_ID}")]
    first = of_type(h.flush(), types.RpcResult)
    _, events = h.send(pack_I(UNKNOWN_ID), msg_id=mid, seqno=2 * h.seq - 1)
    assert events == []
    assert of_type(h.flush(), types.RpcResult) == first


# --------------------------------------------------------------------------- acks, resend


def test_msgs_ack_removes_unacked(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    h.mt.add_update(update(1), NOW)
    outs = h.flush()
    content = [o.msg_id for o in outs if o.seqno & 1]
    assert len(content) == 2
    assert h.mt.unacked_count() == 2  # the container and the ack are not tracked
    h.ack([content[0]])
    assert h.mt.unacked_count() == 1
    h.ack([content[1], 12345678 << 2])  # an unknown id is harmless
    assert h.mt.unacked_count() == 0
    assert h.flush() == []  # acks are not content-related: nothing to ack back


def test_resend_unacked_after_reconnect(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    h.mt.add_update(update(1), NOW)
    h.mt.add_update(update(2), NOW)
    outs = h.flush()
    sent = {o.body: o for o in outs if o.seqno & 1}
    assert len(sent) == 3
    h.ack([sent[update(1)].msg_id])

    h.mt.resend_unacked(NOW + 10)
    again = h.flush(NOW + 10)
    bodies = [o.body for o in again]
    assert sorted(bodies) == sorted(b for b in sent if b != update(1))
    old_ids = {o.msg_id for o in outs}
    for o in again:
        assert o.msg_id not in old_ids  # fresh msg_ids
        assert o.msg_id > max(old_ids)
        assert o.seqno & 1
        assert o.msg_id % 4 == sent[o.body].msg_id % 4  # answers stay ≡1, others ≡3
    assert h.mt.unacked_count() == 2
    # Once acked, nothing comes back on the next reconnect.
    h.ack([o.msg_id for o in again], now=NOW + 10)
    h.mt.resend_unacked(NOW + 20)
    assert h.flush(NOW + 20) == []


def test_resend_unacked_skips_messages_older_than_window(h: Harness) -> None:
    h.mt.add_update(update(1), NOW)
    h.flush()
    h.mt.add_update(update(2), NOW + 500)
    h.flush(NOW + 500)
    h.mt.resend_unacked(NOW + h.mt.limits.resend_window + 1)
    again = h.flush(NOW + h.mt.limits.resend_window + 1)
    assert [o.body for o in again] == [update(2)]


def test_acks_piggybacked_in_flush(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())  # still running: needs an ack
    info, _ = h.send(types.MsgsAllInfo(msg_ids=[], info=""))  # content, never answered
    h.mt.add_update(update(1), NOW)  # something to ride along with
    packets = h.mt.flush(NOW)
    assert len(packets) == 1 and is_container(packets[0].body)
    outs = flatten(packets)
    assert sorted(acked(outs)) == sorted([qid, info])
    ack = next(o for o in outs if type(o.obj) is types.MsgsAck)
    assert ack.seqno % 2 == 0 and ack.msg_id % 4 == 3


def test_answer_acknowledges_its_request(h: Harness) -> None:
    # The spec: a response to a request is its acknowledgment; no separate msgs_ack.
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    outs = h.flush()
    assert results(outs) == {qid: True}
    assert acked(outs) == []


def test_acks_alone_when_nothing_else_queued(h: Harness) -> None:
    mid, events = h.send(types.MsgsAllInfo(msg_ids=[], info=""))  # content, no answer
    assert events == []
    assert h.mt.has_output()
    packets = h.mt.flush(NOW)
    assert len(packets) == 1
    assert decode(packets[0].body) == types.MsgsAck(msg_ids=[mid])
    assert not packets[0].content_related and packets[0].seqno % 2 == 0
    assert h.mt.unacked_count() == 0


def test_several_queued_messages_come_out_as_one_container(h: Harness) -> None:
    bodies = [update(i) for i in range(3)]
    for b in bodies:
        h.mt.add_update(b, NOW)
    packets = h.mt.flush(NOW)
    assert len(packets) == 1
    c = packets[0]
    items = parse_container(c.body)
    assert [b for _, _, b in items] == bodies
    ids = [mid for mid, _, _ in items]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert c.msg_id > max(ids)
    assert not c.content_related and c.seqno % 2 == 0
    assert c.seqno == 2 * (items[-1][1] // 2 + 1)  # even: content messages sent so far
    assert [s for _, s, _ in items] == [items[0][1] + 2 * i for i in range(3)]
    assert h.mt.unacked_count() == 3  # the inner messages, not the container


def test_oversized_message_sent_outside_container(h: Harness) -> None:
    big = b"\x00" * ((1 << 20) + 16)
    h.mt.add_update(update(1), NOW)
    h.mt.add_update(big, NOW)
    h.mt.add_update(update(2), NOW)
    packets = h.mt.flush(NOW)
    assert [p.body for p in packets if p.body == big] == [big]
    containers = [p for p in packets if is_container(p.body)]
    assert len(containers) == 1
    assert [b for _, _, b in parse_container(containers[0].body)] == [update(1), update(2)]


# --------------------------------------------------------------------------- ids and seqnos


def test_msg_id_clock_strictly_increasing_and_parity() -> None:
    clock = MsgIdClock()
    times = [NOW, NOW, NOW, NOW - 5, NOW + 0.5, NOW + 0.5, NOW - 100, NOW + 1]
    ids = []
    for i, t in enumerate(times * 3):
        answer = i % 3 != 0
        mid = clock.next(t, answer)
        assert mid % 4 == (1 if answer else 3)
        ids.append(mid)
    assert all(b > a for a, b in itertools.pairwise(ids))
    assert clock.next(NOW + 10, True) >> 32 == int(NOW + 10)


def test_session_msg_ids_increase_and_parity(h: Harness) -> None:
    answers = (
        types.Pong,
        types.RpcResult,
        types.BadMsgNotification,
        types.BadServerSalt,
        types.MsgsStateInfo,
        types.FutureSalts,
    )
    last = 0
    for step in range(3):
        now = NOW + step
        qid, _ = h.send(fn.help.GetConfig(), now=now)
        h.send(fn.Ping(ping_id=step), now=now)
        h.send(fn.GetFutureSalts(num=1), now=now)
        h.send(types.MsgsStateReq(msg_ids=[qid]), now=now)
        h.send(fn.Ping(ping_id=0), msg_id=h.next_id(now) | 2, now=now)
        h.send(fn.Ping(ping_id=0), salt=WRONG_SALT, now=now)
        h.mt.add_update(update(step), now)
        h.mt.add_result(qid, BOOL_TRUE_BYTES, now)
        for p in h.mt.flush(now):
            if is_container(p.body):
                inner = parse_container(p.body)
                ids = [mid for mid, _, _ in inner]
                assert all(b > a for a, b in itertools.pairwise(ids))
                assert ids[0] > last and p.msg_id > ids[-1]
                assert p.msg_id % 4 == 3
                last = p.msg_id
                for mid, _, body in inner:
                    expected = 1 if type(decode(body)) in answers else 3
                    assert mid % 4 == expected, decode(body)
            else:
                assert p.msg_id > last
                last = p.msg_id


def test_server_seqno_rules() -> None:
    h = Harness()
    h.send(fn.Ping(ping_id=1))  # -> new_session_created (1), pong (3)
    h.mt.add_update(update(1), NOW)  # 5
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)  # 7
    packets = h.mt.flush(NOW)
    assert len(packets) == 1
    outs = flatten(packets)
    kinds = [(type(o.obj), o.seqno) for o in outs]
    assert kinds == [
        (types.NewSessionCreated, 1),
        (types.Pong, 3),
        (types.UpdateShort, 5),
        (types.RpcResult, 7),  # it acknowledges the query: no msgs_ack
    ]
    assert packets[0].seqno == 8  # the container: not content-related
    # A bad_msg_notification is not content-related either; the count goes on after it.
    h.send(fn.Ping(ping_id=2), msg_id=h.next_id() | 1)
    h.mt.add_update(update(2), NOW)
    outs = h.flush()
    assert [(type(o.obj), o.seqno) for o in outs] == [
        (types.BadMsgNotification, 8),
        (types.UpdateShort, 9),
    ]


# --------------------------------------------------------------------------- service queries


def test_ping_answered_with_bare_pong(h: Harness) -> None:
    pid, events = h.send(fn.Ping(ping_id=0x0123456789))
    assert events == []
    outs = h.flush()
    pongs = [o for o in outs if type(o.obj) is types.Pong]
    assert [o.obj for o in pongs] == [types.Pong(msg_id=pid, ping_id=0x0123456789)]
    assert pongs[0].body[:4] == pack_I(types.Pong.CONSTRUCTOR_ID)  # not inside rpc_result
    assert of_type(outs, types.RpcResult) == []
    assert pongs[0].msg_id % 4 == 1 and pongs[0].seqno & 1


def test_ping_delay_disconnect(h: Harness) -> None:
    pid, events = h.send(fn.PingDelayDisconnect(ping_id=77, disconnect_delay=75))
    assert events == [CloseAfter(75)]
    assert of_type(h.flush(), types.Pong) == [types.Pong(msg_id=pid, ping_id=77)]


@pytest.mark.parametrize(("asked", "given"), [(1, 1), (3, 3), (64, 64), (100, 64)])
def test_get_future_salts(h: Harness, asked: int, given: int) -> None:
    mid, events = h.send(fn.GetFutureSalts(num=asked))
    assert events == []
    outs = h.flush()
    assert h.salt_requests == [given]
    (fs,) = of_type(outs, types.FutureSalts)
    assert fs.req_msg_id == mid and fs.now == int(NOW)
    assert len(fs.salts) == given
    assert fs.salts[0] == types.FutureSalt(
        valid_since=int(NOW), valid_until=int(NOW) + 3600, salt=SALT
    )
    assert of_type(outs, types.RpcResult) == []  # bare, not inside rpc_result


def test_msgs_state_req(h: Harness) -> None:
    answered, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(answered, BOOL_TRUE_BYTES, NOW)
    running, _ = h.send(fn.help.GetConfig())
    ping, _ = h.send(fn.Ping(ping_id=1))
    ack, _ = h.send(types.MsgsAck(msg_ids=[]), content=False)
    never = h.next_id()  # inside the window, never received
    h.flush()
    queried = [
        answered,
        running,
        ping,
        ack,
        never,
        client_msg_id(NOW + 100),  # beyond the window
        client_msg_id(NOW - 200),  # older than the session
    ]
    mid, events = h.send(types.MsgsStateReq(msg_ids=queried))
    assert events == []
    outs = h.flush()
    (state,) = [o for o in outs if type(o.obj) is types.MsgsStateInfo]
    assert state.obj.req_msg_id == mid
    assert state.msg_id % 4 == 1
    # info is a TL string of raw bytes: read it as bytes, not as text.
    r = Reader(state.body)
    assert (r.uint(), r.long()) == (types.MsgsStateInfo.CONSTRUCTOR_ID, mid)
    info = r.bytes()
    assert len(info) == len(queried)  # one byte per queried id
    assert list(info) == [
        4 | 32 | 64,  # received, processed, answer generated
        4 | 32,  # received, being processed
        4,  # received
        4 | 16,  # received, no ack needed
        2,  # not received
        3,  # not received, id too high
        1,  # nothing known
    ]


def test_msg_resend_req(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    outs = h.flush()
    (answer,) = [o for o in outs if type(o.obj) is types.RpcResult]
    _, events = h.send(types.MsgResendReq(msg_ids=[answer.msg_id, client_msg_id(NOW) | 1]))
    assert events == []
    again = h.flush()
    resent = [o for o in again if type(o.obj) is types.RpcResult]
    assert [o.body for o in resent] == [answer.body]
    assert resent[0].msg_id != answer.msg_id and resent[0].msg_id % 4 == 1
    # The old id is no longer pending; the new one is.
    assert h.mt.unacked_count() == 1
    h.ack([answer.msg_id])
    assert h.mt.unacked_count() == 1
    h.ack([resent[0].msg_id])
    assert h.mt.unacked_count() == 0


def test_destroy_session(h: Harness) -> None:
    _, events = h.send(fn.DestroySession(session_id=0x55))
    assert events == [SessionDestroyed(0x55)]
    h.mt.add_bare(types.DestroySessionOk(session_id=0x55).to_bytes(), NOW)
    outs = h.flush()
    ok = [o for o in outs if type(o.obj) is types.DestroySessionOk]
    assert [o.obj.session_id for o in ok] == [0x55]
    assert ok[0].msg_id % 4 == 1 and ok[0].seqno & 1


def test_http_wait(h: Harness) -> None:
    _, events = h.send(types.HttpWait(max_delay=0, wait_after=10, max_wait=25000))
    assert events == [HttpWait(0, 10, 25000)]


# --------------------------------------------------------------------------- rpc_drop_answer


def test_drop_answer_unknown(h: Harness) -> None:
    did, events = h.send(fn.RpcDropAnswer(req_msg_id=client_msg_id(NOW - 5)))
    assert events == []
    assert results(h.flush()) == {did: types.RpcAnswerUnknown()}


def test_drop_answer_running(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())
    did, events = h.send(fn.RpcDropAnswer(req_msg_id=qid))
    assert events == []
    assert results(h.flush()) == {did: types.RpcAnswerDroppedRunning()}
    # The real result, when it comes, is not sent.
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    assert True not in results(h.flush()).values()


def test_drop_answer_running_leaves_original_unanswered(h: Harness) -> None:
    # The client cancelled it: the drop answer says dropped_running, and the
    # original query's result, when it comes, is not sent.
    qid, _ = h.send(fn.help.GetConfig())
    h.send(fn.RpcDropAnswer(req_msg_id=qid))
    h.flush()
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    assert qid not in results(h.flush())


def test_duplicate_of_dropped_running_query_sends_no_empty_message(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())
    seq = 2 * h.seq - 1
    h.send(fn.RpcDropAnswer(req_msg_id=qid))
    h.flush()
    h.send(fn.help.GetConfig(), msg_id=qid, seqno=seq)
    packets = h.mt.flush(NOW)
    bodies = [p.body for p in packets if not is_container(p.body)]
    bodies += [b for p in packets if is_container(p.body) for _, _, b in parse_container(p.body)]
    assert b"" not in bodies


def test_drop_answer_answered(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    h.flush()
    did, _ = h.send(fn.RpcDropAnswer(req_msg_id=qid))
    assert type(results(h.flush())[did]) is types.RpcAnswerDropped


def test_drop_answer_of_sent_answer_reports_it(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    (answer,) = [o for o in h.flush() if type(o.obj) is types.RpcResult]
    did, _ = h.send(fn.RpcDropAnswer(req_msg_id=qid))
    dropped = results(h.flush())[did]
    assert type(dropped) is types.RpcAnswerDropped
    assert (dropped.msg_id, dropped.seq_no) == (answer.msg_id, answer.seqno)
    assert dropped.bytes == len(answer.body)


def test_drop_answer_of_sent_answer_removes_it_from_outgoing_queue(h: Harness) -> None:
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, BOOL_TRUE_BYTES, NOW)
    (answer,) = [o for o in h.flush() if type(o.obj) is types.RpcResult]
    h.send(fn.RpcDropAnswer(req_msg_id=qid))
    h.flush()
    h.mt.resend_unacked(NOW + 1)
    assert answer.body not in [o.body for o in h.flush(NOW + 1)]


# --------------------------------------------------------------------------- queries


def test_plain_query_becomes_rpc_call(h: Harness) -> None:
    qid, events = h.send(fn.help.GetConfig())
    assert events == [RpcCall(qid, fn.help.GetConfig(), ())]


def test_invoke_after_msg(h: Harness) -> None:
    first, _ = h.send(fn.help.GetConfig())
    qid, events = h.send(fn.InvokeAfterMsg(msg_id=first, query=fn.help.GetConfig()))
    assert events == [RpcCall(qid, fn.help.GetConfig(), (first,))]
    qid2, events = h.send(fn.InvokeAfterMsgs(msg_ids=[first, qid], query=fn.help.GetConfig()))
    assert events == [RpcCall(qid2, fn.help.GetConfig(), (first, qid))]


def test_unknown_top_level_constructor(h: Harness) -> None:
    assert UNKNOWN_ID not in READERS
    mid, events = h.send(pack_I(UNKNOWN_ID) + b"\0" * 8)
    err = f"INPUT_METHOD_INVALID_{UNKNOWN_ID}"
    assert events == [DecodeFailure(mid, err)]
    outs = h.flush()
    assert results(outs) == {mid: types.RpcError(error_code=400, error_message=err)}
    assert acked(outs) == []  # the rpc_error answers (and so acknowledges) it


def test_unknown_nested_constructor(h: Harness) -> None:
    body = pack_I(fn.InvokeAfterMsg.CONSTRUCTOR_ID) + pack_q(h.last_id) + pack_I(UNKNOWN_ID)
    mid, events = h.send(body)
    assert events == [DecodeFailure(mid, "INPUT_CONSTRUCTOR_INVALID")]
    assert results(h.flush()) == {
        mid: types.RpcError(error_code=400, error_message="INPUT_CONSTRUCTOR_INVALID")
    }


def test_type_where_a_query_was_expected(h: Harness) -> None:
    mid, events = h.send(types.Pong(msg_id=1, ping_id=2))
    assert events == []
    err = f"INPUT_METHOD_INVALID_{types.Pong.CONSTRUCTOR_ID}"
    assert results(h.flush()) == {mid: types.RpcError(error_code=400, error_message=err)}


@pytest.mark.parametrize("cut", [4, 8, 12])
def test_truncated_body(h: Harness, cut: int) -> None:
    body = fn.PingDelayDisconnect(ping_id=1, disconnect_delay=2).to_bytes()[:-cut]
    mid, events = h.send(body)
    assert events == [DecodeFailure(mid, "INPUT_FETCH_ERROR")]
    outs = h.flush()
    assert results(outs) == {mid: types.RpcError(error_code=400, error_message="INPUT_FETCH_ERROR")}
    assert of_type(outs, types.Pong) == []


# --------------------------------------------------------------------------- results


def file_part(data: bytes) -> bytes:
    """An upload.file result (what upload.getFile answers) carrying ``data``."""
    return types.upload.File(type=types.storage.FilePartial(), mtime=0, bytes=data).to_bytes()


def _big_result() -> bytes:
    """A compressible answer bigger than the gzip threshold."""
    return types.DataJSON(data='{"k": "' + "v" * 5000 + '"}').to_bytes()


def test_file_parts_are_never_gzipped(h: Harness) -> None:
    result = file_part(b"\x04" * 5000)  # compressible, but file data is sent as it is
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, result, NOW)
    (answer,) = [o for o in h.flush() if type(o.obj) is types.RpcResult]
    assert answer.body[12:] == result


def test_answer_cache_and_unacked_set_are_bounded_in_bytes(h: Harness) -> None:
    big = file_part(b"\x05" * (512 * 1024))
    for _ in range(40):  # 20 MiB of answers the client never acknowledges
        qid, _ = h.send(fn.help.GetConfig())
        h.mt.add_result(qid, big, NOW)
        h.flush()
    assert h.mt._answer_bytes <= 1 << 20
    assert sum(len(m.body) for m in h.mt._answer_msgs.values()) <= 1 << 20
    assert sum(len(m.body) for m in h.mt._unacked.values()) <= h.mt.limits.max_pending_bytes
    assert h.mt._unacked_bytes == sum(len(m.body) for m in h.mt._unacked.values())


def test_big_result_gzip_packed(h: Harness) -> None:
    result = _big_result()
    assert len(result) > h.mt.limits.gzip_threshold
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, result, NOW)
    outs = h.flush()
    (answer,) = [o for o in outs if type(o.obj) is types.RpcResult]
    body = answer.body
    assert struct.unpack_from("<IqI", body) == (RPC_RESULT_ID, qid, GZIP_PACKED_ID)
    assert len(body) < len(result)
    # The gzip stream inflates back to exactly the result bytes...
    r = Reader(body, 16)
    assert zlib.decompress(r.bytes(), wbits=zlib.MAX_WBITS | 32) == result
    assert r.pos == len(body)
    # ...and the decoder sees through gzip_packed.
    assert answer.obj.result == decode(result)
    assert decode(body[12:]) == decode(result)


def test_small_result_not_gzipped(h: Harness) -> None:
    result = file_part(b"\x04" * 100)
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, result, NOW)
    (answer,) = [o for o in h.flush() if type(o.obj) is types.RpcResult]
    assert answer.body == pack_I(RPC_RESULT_ID) + pack_q(qid) + result


def test_incompressible_result_sent_plain(h: Harness) -> None:
    result = file_part(os.urandom(5000))
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, result, NOW)
    (answer,) = [o for o in h.flush() if type(o.obj) is types.RpcResult]
    assert answer.body[12:] == result


def test_already_gzipped_result_not_wrapped_twice(h: Harness) -> None:
    packed = gzip_packed(_big_result())
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, packed, NOW)
    (answer,) = [o for o in h.flush() if type(o.obj) is types.RpcResult]
    assert answer.body[12:] == packed


def test_gzip_threshold_is_configurable() -> None:
    h = Harness(SessionLimits(gzip_threshold=1 << 20))
    h.open()
    qid, _ = h.send(fn.help.GetConfig())
    h.mt.add_result(qid, _big_result(), NOW)
    (answer,) = [o for o in h.flush() if type(o.obj) is types.RpcResult]
    assert answer.body[12:] == _big_result()


# --------------------------------------------------------------------------- bugs: session start


def test_first_message_in_container_is_processed() -> None:
    h = Harness()
    items = [h.inner(fn.Ping(ping_id=1)), h.inner(fn.help.GetConfig())]
    _, events = h.send_container(items)
    outs = h.flush()
    assert bad_msgs(outs) == []
    assert of_type(outs, types.Pong) == [types.Pong(msg_id=items[0].msg_id, ping_id=1)]
    assert events == [RpcCall(items[1].msg_id, fn.help.GetConfig())]
    (nsc,) = of_type(outs, types.NewSessionCreated)
    assert nsc.first_msg_id == items[0].msg_id


def test_first_message_rejected_for_clock_skew_does_not_poison_session() -> None:
    h = Harness()
    skewed, _ = h.send(fn.Ping(ping_id=1), msg_id=client_msg_id(NOW + 120))
    assert bad_msgs(h.flush()) == [(skewed, MSG_ID_TOO_HIGH)]
    # The client syncs its clock from the server's msg_id and resends.
    mid, _ = h.send(fn.Ping(ping_id=1), msg_id=client_msg_id(NOW), seqno=3)
    outs = h.flush()
    assert bad_msgs(outs) == []
    assert of_type(outs, types.Pong) == [types.Pong(msg_id=mid, ping_id=1)]


def test_an_rpc_error_ends_its_container(h: Harness) -> None:
    """GramJS stops reading a container after the first rpc_error: nothing may follow one."""
    q1, _ = h.send(fn.updates.GetState())
    q2, _ = h.send(fn.help.GetConfig())
    q3, _ = h.send(fn.help.GetNearestDc())
    h.mt.add_error(q1, 401, "AUTH_KEY_UNREGISTERED", NOW)
    h.mt.add_error(q2, 401, "AUTH_KEY_UNREGISTERED", NOW)
    h.mt.add_result(q3, types.NearestDc(country="", this_dc=2, nearest_dc=2).to_bytes(), NOW)
    packets = h.mt.flush(NOW)
    for p in packets:
        if struct.unpack_from("<I", p.body)[0] == MSG_CONTAINER_ID:
            inner = parse_container(p.body)
            errors = [
                i
                for i, (_m, _s, b) in enumerate(inner)
                if b[12:16] == struct.pack("<I", types.RpcError.CONSTRUCTOR_ID)
            ]
            assert all(i == len(inner) - 1 for i in errors)
    answered = []
    for p in packets:
        bodies = (
            [b for _m, _s, b in parse_container(p.body)]
            if struct.unpack_from("<I", p.body)[0] == MSG_CONTAINER_ID
            else [p.body]
        )
        answered += [
            struct.unpack_from("<q", b, 4)[0]
            for b in bodies
            if b[:4] == struct.pack("<I", RPC_RESULT_ID)
        ]
    assert sorted(answered) == sorted([q1, q2, q3])
