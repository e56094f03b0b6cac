"""The MTProto 2.0 message envelope (teamgram.mtproto.envelope).

Packets that should be rejected are crafted by hand with the real KDF
(:mod:`teamgram.mtproto.crypto.kdf`) so that the msg_key is valid and only the
one property under test is wrong. Telethon 1.45.0's ``MTProtoState`` is the
independent client: it must parse what the server encrypts, and the server
must accept what it encrypts.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import struct
import time
from hashlib import sha1, sha256

import pytest
from telethon.crypto import AuthKey
from telethon.errors import SecurityError
from telethon.network.mtprotostate import MTProtoState
from telethon.tl.core import MessageContainer
from telethon.tl.types import Pong as TelethonPong

from teamgram.mtproto.crypto.aes import decrypt_ige, encrypt_ige
from teamgram.mtproto.crypto.kdf import X_CLIENT, X_SERVER, aes_key_iv_v2, msg_key_v2
from teamgram.mtproto.envelope import (
    Decrypted,
    decrypt_client_message,
    decrypt_server_message,
    encrypt_client_message,
    encrypt_server_message,
)
from teamgram.mtproto.session import MsgIdClock, MTProtoSession
from teamgram.tl import functions as fn
from teamgram.tl import types

_rng = random.Random(20240601)
AUTH_KEY = _rng.randbytes(256)
OTHER_KEY = _rng.randbytes(256)
KEY_ID = sha1(AUTH_KEY).digest()[12:20]
SALT = 0x0102030405060708
SESSION_ID = -0x1122334455667788
MSG_ID = 0x6553F10000000004
SEQNO = 7
HEADER = struct.Struct("<qqqii")


# --------------------------------------------------------------------------- helpers


def plaintext(body: bytes, pad: int, length: int | None = None) -> bytes:
    """salt, session_id, msg_id, seqno, length, body and ``pad`` random bytes."""
    n = len(body) if length is None else length
    return HEADER.pack(SALT, SESSION_ID, MSG_ID, SEQNO, n) + body + os.urandom(pad)


def seal(plain: bytes, x: int = X_CLIENT, auth_key: bytes = AUTH_KEY) -> bytes:
    """Encrypt ``plain`` as is (no checks), with a correct msg_key for direction ``x``."""
    assert len(plain) % 16 == 0
    msg_key = msg_key_v2(auth_key, plain, x)
    key, iv = aes_key_iv_v2(auth_key, msg_key, x)
    return KEY_ID + msg_key + encrypt_ige(plain, key, iv)


def open_packet(packet: bytes, x: int, auth_key: bytes = AUTH_KEY) -> bytes:
    """Decrypt without any check: the plaintext with its padding."""
    key, iv = aes_key_iv_v2(auth_key, packet[8:24], x)
    return decrypt_ige(packet[24:], key, iv)


def quick_ack(plain: bytes, auth_key: bytes = AUTH_KEY) -> int:
    digest = sha256(auth_key[88:120] + plain).digest()
    return struct.unpack("<I", digest[:4])[0] | 0x80000000


def flip(packet: bytes, bit: int) -> bytes:
    b = bytearray(packet)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def telethon_state(auth_key: bytes = AUTH_KEY, session_id: int = SESSION_ID) -> MTProtoState:
    loggers: collections.defaultdict[str, logging.Logger] = collections.defaultdict(
        lambda: logging.getLogger("telethon-envelope-test")
    )
    state = MTProtoState(AuthKey(auth_key), loggers)
    state.id = session_id
    return state


BODY = fn.Ping(ping_id=0x0102030405).to_bytes()


# --------------------------------------------------------------------------- client -> server


@pytest.mark.parametrize("size", [0, 4, 12, 16, 100, 1020, 4096, 65536])
def test_client_round_trip(size: int) -> None:
    body = os.urandom(size)
    packet = encrypt_client_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, body)
    assert packet[:8] == KEY_ID
    assert (len(packet) - 24) % 16 == 0
    d = decrypt_client_message(AUTH_KEY, packet)
    assert d is not None
    assert (d.salt, d.session_id, d.msg_id, d.seqno, d.body) == (
        SALT,
        SESSION_ID,
        MSG_ID,
        SEQNO,
        body,
    )
    plain = open_packet(packet, X_CLIENT)
    assert 12 <= len(plain) - 32 - size <= 1024
    assert d.quick_ack_token == quick_ack(plain)


def test_round_trip_is_randomized() -> None:
    a = encrypt_client_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, BODY)
    b = encrypt_client_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, BODY)
    assert a[8:24] != b[8:24]  # random padding: a new msg_key every time
    da, db = decrypt_client_message(AUTH_KEY, a), decrypt_client_message(AUTH_KEY, b)
    assert da is not None and db is not None
    assert da.body == db.body == BODY


@pytest.mark.parametrize(("body_len", "pad"), [(4, 12), (16, 1024), (0, 16), (100, 28)])
def test_crafted_packet_accepted(body_len: int, pad: int) -> None:
    """The hand-made packets below are sound: the same recipe with a legal padding passes."""
    body = os.urandom(body_len)
    plain = plaintext(body, pad)
    d = decrypt_client_message(AUTH_KEY, seal(plain))
    assert d == Decrypted(SALT, SESSION_ID, MSG_ID, SEQNO, body, quick_ack(plain))


def test_quick_ack_token() -> None:
    for _ in range(50):
        plain = plaintext(os.urandom(_rng.randrange(0, 64) * 4), 12 + 4 * _rng.randrange(4))
        plain += os.urandom(-len(plain) % 16)
        d = decrypt_client_message(AUTH_KEY, seal(plain))
        assert d is not None
        digest = sha256(AUTH_KEY[88:120] + plain).digest()
        assert d.quick_ack_token == int.from_bytes(digest[:4], "little") | (1 << 31)
        assert d.quick_ack_token & 0x80000000
        assert d.quick_ack_token < 1 << 32


def test_forged_msg_key() -> None:
    packet = encrypt_client_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, BODY)
    for _ in range(20):
        forged = packet[:8] + os.urandom(16) + packet[24:]
        assert decrypt_client_message(AUTH_KEY, forged) is None
    # A msg_key valid for the same plaintext in the other direction.
    plain = open_packet(packet, X_CLIENT)
    other = packet[:8] + msg_key_v2(AUTH_KEY, plain, X_SERVER) + packet[24:]
    assert decrypt_client_message(AUTH_KEY, other) is None


def test_flipped_bits() -> None:
    packet = encrypt_client_message(
        AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, os.urandom(256)
    )
    positions = [64, 64 + 7, 100, 8 * 24 + 3, 8 * 40, 8 * 56 + 1, 8 * len(packet) - 1]
    positions += [_rng.randrange(64, 8 * len(packet)) for _ in range(40)]
    for bit in positions:
        assert decrypt_client_message(AUTH_KEY, flip(packet, bit)) is None, bit


@pytest.mark.parametrize("cut", [1, 4, 15, 16, 32])
def test_truncated_packet(cut: int) -> None:
    packet = encrypt_client_message(
        AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, os.urandom(100)
    )
    assert decrypt_client_message(AUTH_KEY, packet[:-cut]) is None


@pytest.mark.parametrize("size", [0, 1, 8, 23, 24, 40, 56, 71])
def test_too_short_packet(size: int) -> None:
    packet = encrypt_client_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, b"")
    assert len(packet) == 72  # the smallest legal packet
    assert decrypt_client_message(AUTH_KEY, packet[:size]) is None
    assert decrypt_client_message(AUTH_KEY, os.urandom(size)) is None


def test_wrong_auth_key() -> None:
    packet = encrypt_client_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, BODY)
    assert decrypt_client_message(OTHER_KEY, packet) is None
    # A key differing only in the bytes that feed the msg_key (88..120).
    near = bytearray(AUTH_KEY)
    near[100] ^= 1
    assert decrypt_client_message(bytes(near), packet) is None
    # ...or only in the bytes that feed the AES key/iv.
    near = bytearray(AUTH_KEY)
    near[5] ^= 1
    assert decrypt_client_message(bytes(near), packet) is None


@pytest.mark.parametrize("extra", [1, 2, 4, 8, 12, 15])
def test_length_not_multiple_of_16(extra: int) -> None:
    packet = encrypt_client_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, BODY)
    assert decrypt_client_message(AUTH_KEY, packet + os.urandom(extra)) is None
    assert decrypt_client_message(AUTH_KEY, packet[:-extra]) is None


@pytest.mark.parametrize(
    ("body_len", "pad"),
    [
        (16, 0),  # no padding at all
        (12, 4),
        (8, 8),
        (28, 4),
        (0, 1040),  # one block too many
        (12, 1028),
        (0, 2048),
    ],
)
def test_padding_outside_12_to_1024(body_len: int, pad: int) -> None:
    assert pad < 12 or pad > 1024
    plain = plaintext(os.urandom(body_len), pad)
    assert len(plain) % 16 == 0
    assert decrypt_client_message(AUTH_KEY, seal(plain)) is None


@pytest.mark.parametrize("length", [1, 2, 3, 5, 7, 13])
def test_data_length_not_multiple_of_4(length: int) -> None:
    plain = plaintext(os.urandom(16), 16, length=length)
    assert 12 <= len(plain) - 32 - length <= 1024  # only the alignment is wrong
    assert decrypt_client_message(AUTH_KEY, seal(plain)) is None


@pytest.mark.parametrize("length", [-4, -(1 << 31), 1 << 20, 48, (1 << 31) - 4])
def test_data_length_out_of_range(length: int) -> None:
    plain = plaintext(os.urandom(32), 16, length=length)
    assert decrypt_client_message(AUTH_KEY, seal(plain)) is None


def test_server_message_is_not_a_client_message() -> None:
    packet = encrypt_server_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID | 1, 1, BODY)
    assert decrypt_client_message(AUTH_KEY, packet) is None
    packet = encrypt_client_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID, SEQNO, BODY)
    assert decrypt_server_message(AUTH_KEY, packet) is None


def test_client_message_from_telethon() -> None:
    state = telethon_state()
    state.salt = SALT
    body = types.MsgsAck(msg_ids=[MSG_ID - 4]).to_bytes()
    packet = state.encrypt_message_data(struct.pack("<qii", MSG_ID, 2, len(body)) + body)
    assert packet[:8] == KEY_ID
    d = decrypt_client_message(AUTH_KEY, packet)
    assert d is not None
    assert (d.salt, d.session_id, d.msg_id, d.seqno, d.body) == (
        SALT,
        SESSION_ID,
        MSG_ID,
        2,
        body,
    )
    assert d.quick_ack_token == quick_ack(open_packet(packet, X_CLIENT))


# --------------------------------------------------------------------------- server -> client


@pytest.mark.parametrize("size", [0, 4, 28, 1024, 65536])
def test_server_round_trip(size: int) -> None:
    body = os.urandom(size)
    packet = encrypt_server_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID | 1, 3, body)
    assert packet[:8] == KEY_ID and (len(packet) - 24) % 16 == 0
    d = decrypt_server_message(AUTH_KEY, packet)
    assert d is not None
    assert (d.salt, d.session_id, d.msg_id, d.seqno, d.body) == (
        SALT,
        SESSION_ID,
        MSG_ID | 1,
        3,
        body,
    )
    plain = open_packet(packet, X_SERVER)
    assert 12 <= len(plain) - 32 - size <= 1024
    assert packet[8:24] == msg_key_v2(AUTH_KEY, plain, X_SERVER)


def test_server_message_rejects_tampering() -> None:
    packet = encrypt_server_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, MSG_ID | 1, 3, BODY)
    assert decrypt_server_message(OTHER_KEY, packet) is None
    for bit in [64, 8 * 30, 8 * len(packet) - 1]:
        assert decrypt_server_message(AUTH_KEY, flip(packet, bit)) is None
    assert decrypt_server_message(AUTH_KEY, packet[:-16]) is None
    assert decrypt_server_message(AUTH_KEY, packet[:-1]) is None
    assert decrypt_server_message(AUTH_KEY, packet[:40]) is None


def test_server_message_parsed_by_telethon() -> None:
    state = telethon_state()
    msg_id = MsgIdClock().next(time.time(), True)
    body = types.Pong(msg_id=MSG_ID, ping_id=0x0102030405).to_bytes()
    packet = encrypt_server_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, msg_id, 5, body)
    message = state.decrypt_message_data(packet)
    assert message is not None
    assert (message.msg_id, message.seq_no) == (msg_id, 5)
    assert isinstance(message.obj, TelethonPong)
    assert (message.obj.msg_id, message.obj.ping_id) == (MSG_ID, 0x0102030405)


def test_session_container_parsed_by_telethon() -> None:
    """A whole flush (new_session_created and pong in one container) through Telethon."""
    now = time.time()
    session = MTProtoSession(
        session_id=SESSION_ID,
        auth_key_id=struct.unpack("<q", KEY_ID)[0],
        clock=MsgIdClock(),
        salt_ok=lambda salt, t: salt == SALT,
        current_salt=lambda t: SALT,
        future_salts=lambda t, n: [],
    )
    ping_id = int(now * 4294967296) & ~3
    session.receive(SALT, ping_id, 1, fn.Ping(ping_id=99).to_bytes(), now)
    (out,) = session.flush(now)
    packet = encrypt_server_message(
        AUTH_KEY, KEY_ID, SALT, SESSION_ID, out.msg_id, out.seqno, out.body
    )
    message = telethon_state().decrypt_message_data(packet)
    assert message is not None
    assert (message.msg_id, message.seq_no) == (out.msg_id, out.seqno)
    assert isinstance(message.obj, MessageContainer)
    names = [type(m.obj).__name__ for m in message.obj.messages]
    assert names == ["NewSessionCreated", "Pong"]  # the pong acknowledges the ping
    pong = message.obj.messages[1].obj
    assert (pong.msg_id, pong.ping_id) == (ping_id, 99)


def test_telethon_rejects_wrong_session_or_key() -> None:
    msg_id = MsgIdClock().next(time.time(), True)
    body = types.Pong(msg_id=MSG_ID, ping_id=1).to_bytes()
    packet = encrypt_server_message(AUTH_KEY, KEY_ID, SALT, SESSION_ID, msg_id, 1, body)
    with pytest.raises(SecurityError):
        telethon_state(session_id=SESSION_ID + 1).decrypt_message_data(packet)
    with pytest.raises(SecurityError):
        telethon_state().decrypt_message_data(flip(packet, 8 * 40))
    forged = seal(open_packet(packet, X_SERVER), X_CLIENT)  # client direction
    with pytest.raises(SecurityError):
        telethon_state().decrypt_message_data(forged)
