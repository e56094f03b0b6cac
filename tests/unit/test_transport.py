"""Tests for the sans-IO MTProto transports (teamgram.mtproto.transport)."""

from __future__ import annotations

import asyncio
import os
import random
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from telethon.crypto import AESModeCTR
from telethon.network.connection.tcpabridged import AbridgedPacketCodec
from telethon.network.connection.tcpfull import FullPacketCodec
from telethon.network.connection.tcpintermediate import (
    IntermediatePacketCodec,
    RandomizedIntermediatePacketCodec,
)
from telethon.network.connection.tcpobfuscated import ObfuscatedIO

from teamgram.mtproto.transport import (
    ClientTransport,
    Packet,
    ServerTransport,
    TransportError,
)
from teamgram.mtproto.transport.obfuscated import (
    HEADER_SIZE,
    check_header,
    client_handshake,
    server_handshake,
)

T = TypeVar("T")
P8 = bytes(range(1, 9))
KINDS = ["abridged", "intermediate", "padded", "full"]
COMBOS = [(k, False) for k in KINDS] + [(k, True) for k in KINDS if k != "full"]
COMBO_IDS = [("obf-" if o else "") + k for k, o in COMBOS]


def payload(words: int, seed: int = 0) -> bytes:
    return random.Random(seed * 7919 + words).randbytes(4 * words)


def feed_server(server: ServerTransport, data: bytes, step: int | None = None) -> list[Packet]:
    if step is None:
        return server.receive_data(data)
    out: list[Packet] = []
    for i in range(0, len(data), step):
        out += server.receive_data(data[i : i + step])
    return out


def feed_random_chunks(receive: Callable[[bytes], list[T]], data: bytes, seed: int) -> list[T]:
    rng = random.Random(seed)
    out: list[T] = []
    i = 0
    while i < len(data):
        n = rng.choice((1, 2, 3, 5, 7, 64, 500, 4096))
        out += receive(data[i : i + n])
        i += n
    return out


def strip_padding(kind: str, got: bytes, sent: bytes) -> bytes:
    """A server hands padded frames on with their padding; check and cut it."""
    if kind == "padded":
        assert got[: len(sent)] == sent
        assert len(got) - len(sent) <= 15
        return got[: len(sent)]
    return got


# --------------------------------------------------------------------------- byte vectors


class TestAbridgedVectors:
    def test_client_encode(self) -> None:
        c = ClientTransport("abridged")
        assert c.connect_bytes() == b"\xef"
        assert c.encode(P8) == b"\x02" + P8
        assert c.encode(P8, quick_ack=True) == b"\x82" + P8
        big = bytes(508)  # 127 words: the long form
        assert c.encode(big) == b"\x7f\x7f\x00\x00" + big
        assert c.encode(big, quick_ack=True) == b"\xff\x7f\x00\x00" + big
        assert c.encode(bytes(504)) == b"\x7e" + bytes(504)
        assert c.encode(bytes(4 * 0x10203)) == b"\x7f\x03\x02\x01" + bytes(4 * 0x10203)

    def test_server_decode(self) -> None:
        s = ServerTransport()
        assert s.kind is None
        got = s.receive_data(b"\xef\x02" + P8 + b"\x82" + P8)
        assert s.kind == "abridged"
        assert got == [Packet(P8), Packet(P8, quick_ack=True)]
        big = bytes(range(256)) * 2  # 512 bytes = 128 words
        assert s.receive_data(b"\xff\x80\x00\x00" + big) == [Packet(big, True)]
        # A long form announcing a short length is accepted too.
        assert s.receive_data(b"\x7f\x02\x00\x00" + P8) == [Packet(P8)]

    def test_server_encode(self) -> None:
        s = ServerTransport()
        s.receive_data(b"\xef")
        assert s.encode(P8) == b"\x02" + P8
        assert s.encode(bytes(508)) == b"\x7f\x7f\x00\x00" + bytes(508)
        assert s.encode_quick_ack(0x80ABCDEF) == b"\x80\xab\xcd\xef"
        assert s.encode_quick_ack(0x01020304) == b"\x81\x02\x03\x04"  # top bit forced
        assert s.encode_error(-404) == b"\x01\x6c\xfe\xff\xff"
        assert s.encode_error(-429) == b"\x01\x53\xfe\xff\xff"


class TestIntermediateVectors:
    def test_client_encode(self) -> None:
        c = ClientTransport("intermediate")
        assert c.connect_bytes() == b"\xee\xee\xee\xee"
        assert c.encode(P8) == b"\x08\x00\x00\x00" + P8
        assert c.encode(P8, quick_ack=True) == b"\x08\x00\x00\x80" + P8

    def test_server_decode(self) -> None:
        s = ServerTransport()
        data = b"\xee\xee\xee\xee" + b"\x08\x00\x00\x00" + P8 + b"\x08\x00\x00\x80" + P8
        assert s.receive_data(data) == [Packet(P8), Packet(P8, True)]
        assert s.kind == "intermediate"

    def test_server_encode(self) -> None:
        s = ServerTransport()
        s.receive_data(b"\xee\xee\xee\xee")
        assert s.encode(P8) == b"\x08\x00\x00\x00" + P8
        # The bare token, little-endian, no length in front.
        assert s.encode_quick_ack(0x80ABCDEF) == b"\xef\xcd\xab\x80"
        assert s.encode_quick_ack(0x01020304) == b"\x04\x03\x02\x81"
        assert s.encode_error(-404) == b"\x04\x00\x00\x00\x6c\xfe\xff\xff"
        assert s.encode_error(-429) == b"\x04\x00\x00\x00\x53\xfe\xff\xff"


class TestPaddedVectors:
    def test_client_encode(self) -> None:
        c = ClientTransport("padded")
        assert c.connect_bytes() == b"\xdd\xdd\xdd\xdd"
        for _ in range(50):
            frame = c.encode(P8)
            (size,) = struct.unpack_from("<I", frame)
            assert 8 <= size <= 8 + 15 and len(frame) == 4 + size
            assert frame[4:12] == P8
            (flagged,) = struct.unpack_from("<I", c.encode(P8, quick_ack=True))
            assert flagged & 0x80000000 and 8 <= flagged & 0x7FFFFFFF <= 23

    def test_server_decode_keeps_padding(self) -> None:
        s = ServerTransport()
        data = b"\xdd\xdd\xdd\xdd" + b"\x0b\x00\x00\x00" + P8 + b"xyz" + b"\x08\x00\x00\x80" + P8
        assert s.receive_data(data) == [Packet(P8 + b"xyz"), Packet(P8, True)]
        assert s.kind == "padded"

    def test_server_encode(self) -> None:
        s = ServerTransport()
        s.receive_data(b"\xdd\xdd\xdd\xdd")
        for _ in range(50):
            frame = s.encode(P8)
            (size,) = struct.unpack_from("<I", frame)
            assert 8 <= size <= 11 and frame[4:12] == P8 and len(frame) == 4 + size
            ack = s.encode_quick_ack(0x80ABCDEF)
            (size,) = struct.unpack_from("<I", ack)
            assert 8 <= size <= 16 and len(ack) == 4 + size
            assert ack[4:12] == b"\xff\xff\xff\xff\xef\xcd\xab\x80"
        assert s.encode_error(-404) == b"\x04\x00\x00\x00\x6c\xfe\xff\xff"


class TestFullVectors:
    FIRST = bytes.fromhex("14000000000000000102030405060708e06e4584")
    SECOND = bytes.fromhex("140000000100000001020304050607088f22e01f")

    def test_client_encode(self) -> None:
        c = ClientTransport("full")
        assert c.connect_bytes() == b""
        assert c.encode(P8) == self.FIRST
        assert c.encode(P8) == self.SECOND
        with pytest.raises(TransportError):
            c.encode(P8, quick_ack=True)

    def test_server_decode(self) -> None:
        s = ServerTransport()
        assert s.receive_data(self.FIRST + self.SECOND) == [Packet(P8), Packet(P8)]
        assert s.kind == "full"

    def test_server_encode_seqno_starts_at_zero(self) -> None:
        s = ServerTransport()
        s.receive_data(self.FIRST)
        assert s.encode(P8) == self.FIRST
        assert s.encode(P8) == self.SECOND
        err = s.encode_error(-404)
        assert err[:8] == b"\x10\x00\x00\x00\x02\x00\x00\x00"
        assert err[8:12] == b"\x6c\xfe\xff\xff" and len(err) == 16
        with pytest.raises(TransportError):
            s.encode_quick_ack(0x80000001)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("kind", "obfuscated"), COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("step", [None, 1, 3, 1000])
def test_round_trip(kind: str, obfuscated: bool, step: int | None) -> None:
    client = ClientTransport(kind, obfuscated)
    server = ServerTransport()
    sizes = [1, 2, 126, 127, 128, 300, 5000]
    sent = [payload(n) for n in sizes]
    quick = [kind != "full" and i % 2 == 1 for i in range(len(sent))]
    stream = client.connect_bytes() + b"".join(
        client.encode(p, q) for p, q in zip(sent, quick, strict=True)
    )
    got = feed_server(server, stream, step)
    assert server.kind == client.kind
    assert [strip_padding(kind, g.payload, p) for g, p in zip(got, sent, strict=True)] == sent
    assert [g.quick_ack for g in got] == quick

    back = b"".join(server.encode(p) for p in sent)
    if kind != "full":
        back += server.encode_quick_ack(0x12345678)
    back += server.encode_error(-429)
    if step is None:
        received = client.receive_packets(back)
    else:
        received = []
        for i in range(0, len(back), step):
            received += client.receive_packets(back[i : i + step])
    expected = [Packet(p) for p in sent]
    if kind != "full":
        expected.append(Packet(struct.pack("<I", 0x92345678), quick_ack=True))
    expected.append(Packet(struct.pack("<i", -429)))
    assert received == expected


@pytest.mark.parametrize(("kind", "obfuscated"), COMBOS, ids=COMBO_IDS)
def test_random_chunking_both_ways(kind: str, obfuscated: bool) -> None:
    client = ClientTransport(kind, obfuscated)
    server = ServerTransport()
    rng = random.Random(kind)
    sent = [payload(rng.randrange(1, 700), i) for i in range(60)]
    stream = client.connect_bytes() + b"".join(client.encode(p) for p in sent)
    got = feed_random_chunks(server.receive_data, stream, 1)
    assert [strip_padding(kind, g.payload, p) for g, p in zip(got, sent, strict=True)] == sent
    back = b"".join(server.encode(p) for p in sent)
    assert feed_random_chunks(client.receive_data, back, 2) == sent


@pytest.mark.parametrize(("kind", "obfuscated"), COMBOS, ids=COMBO_IDS)
def test_many_packets_in_one_chunk(kind: str, obfuscated: bool) -> None:
    client = ClientTransport(kind, obfuscated)
    server = ServerTransport()
    sent = [payload(1 + i % 40, i) for i in range(500)]
    stream = client.connect_bytes() + b"".join(client.encode(p) for p in sent)
    got = server.receive_data(stream)
    assert len(got) == 500
    assert [strip_padding(kind, g.payload, p) for g, p in zip(got, sent, strict=True)] == sent
    # Half a frame more is kept back until its end arrives.
    extra = client.encode(payload(10))
    assert server.receive_data(extra[:5]) == []
    assert len(server.receive_data(extra[5:])) == 1


def test_client_receive_data_returns_bare_payloads() -> None:
    client = ClientTransport("intermediate")
    server = ServerTransport()
    server.receive_data(client.connect_bytes())
    out = server.encode(P8) + server.encode_quick_ack(0x80000001) + server.encode_error(-404)
    assert client.receive_data(out) == [P8, b"\x01\x00\x00\x80", b"\x6c\xfe\xff\xff"]


def test_detection_waits_for_enough_bytes() -> None:
    s = ServerTransport()
    assert s.receive_data(b"") == []
    assert s.receive_data(b"\xee\xee") == [] and s.kind is None
    assert s.receive_data(b"\xee\xee") == [] and s.kind == "intermediate"
    s = ServerTransport()
    header = ClientTransport("padded", obfuscated=True).connect_bytes()
    assert s.receive_data(header[:63]) == [] and s.kind is None
    assert s.receive_data(header[63:]) == [] and s.kind == "obfuscated2/padded"


def test_encode_before_detection_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        ServerTransport().encode(P8)


def test_bad_client_arguments() -> None:
    with pytest.raises(ValueError):
        ClientTransport("http")
    with pytest.raises(ValueError):
        ClientTransport("full", obfuscated=True)
    with pytest.raises(ValueError):
        ServerTransport(max_packet=0)


# --------------------------------------------------------------------------- obfuscation


SEED = bytes(range(100, 164))


def test_obfuscated_header_keys_match_an_independent_aes() -> None:
    header, encryptor, decryptor = client_handshake(b"\xdd\xdd\xdd\xdd", dc_id=-2, seed=SEED)
    assert len(header) == HEADER_SIZE and header[:56] == SEED[:56]
    # pyaes (via Telethon) with the documented key/iv decrypts the tag and dc id.
    plain = AESModeCTR(SEED[8:40], SEED[40:56]).encrypt(header)
    assert plain[56:60] == b"\xdd\xdd\xdd\xdd"
    assert plain[60:62] == struct.pack("<h", -2)
    kind, server_dec, server_enc = server_handshake(header)
    assert kind == "padded"
    # Both directions continue the header's CTR streams.
    assert server_dec.update(encryptor.update(b"hello, world")) == b"hello, world"
    reverse = SEED[8:56][::-1]
    reply = server_enc.update(b"a reply")
    assert AESModeCTR(reverse[:32], reverse[32:48]).encrypt(reply) == b"a reply"
    assert decryptor.update(reply) == b"a reply"


def test_fixed_seed_client_is_reproducible() -> None:
    a = ClientTransport("abridged", obfuscated=True, seed=SEED)
    b = ClientTransport("abridged", obfuscated=True, seed=SEED)
    assert a.connect_bytes() == b.connect_bytes()
    assert a.encode(P8) == b.encode(P8) != b"\x02" + P8


@pytest.mark.parametrize(
    "opening",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(64),
        b"POST /api HTTP/1.1\r\n" + bytes(64),
        b"HEAD / HTTP/1.1\r\n" + bytes(64),
        b"OPTIONS * HTTP/1.1\r\n" + bytes(64),
        b"\x16\x03\x01\x02\x00\x01\x00\x01" + os.urandom(56),  # TLS ClientHello
    ],
    ids=["GET", "POST", "HEAD", "OPTIONS", "TLS"],
)
def test_forbidden_openings(opening: bytes) -> None:
    s = ServerTransport()
    with pytest.raises(TransportError) as info:
        s.receive_data(opening)
    assert info.value.code == -404
    # Rejected as soon as the first int is in, without waiting for 64 bytes.
    with pytest.raises(TransportError):
        ServerTransport().receive_data(opening[:4])


@pytest.mark.parametrize(
    "first", [b"\xef\x01\x02\x03", b"\xee\xee\xee\xee", b"\xdd\xdd\xdd\xdd", b"GET ", b"OPTI"]
)
def test_check_header_rejects_forbidden_first_ints(first: bytes) -> None:
    with pytest.raises(TransportError):
        check_header(first + bytes(range(1, 61)))
    with pytest.raises(TransportError):
        server_handshake(first + bytes(range(1, 61)))


def test_obfuscated_header_with_zero_seqno_bytes_is_rejected() -> None:
    with pytest.raises(TransportError):
        check_header(b"abcd\0\0\0\0" + bytes(56))


def test_obfuscated_header_with_unknown_tag() -> None:
    # Random bytes decrypt to a random tag: not one of the three known ones.
    header = b"\x01\x02\x03\x04\x05\x06\x07\x08" + bytes(range(56))
    with pytest.raises(TransportError):
        ServerTransport().receive_data(header)


def test_seed_must_be_a_valid_header() -> None:
    with pytest.raises(TransportError):
        client_handshake(b"\xef\xef\xef\xef", seed=b"POST" + bytes(60))
    with pytest.raises(ValueError):
        client_handshake(b"\x00\x00\x00\x00")


# --------------------------------------------------------------------------- malformed input


def expect_error(opening: bytes, data: bytes, max_packet: int = 4 * 1024 * 1024) -> None:
    """Malformed ``data`` raises TransportError, whole or one byte at a time."""
    for step in (None, 1):
        s = ServerTransport(max_packet=max_packet)
        s.receive_data(opening)
        with pytest.raises(TransportError) as info:
            feed_server(s, data, step)
        assert info.value.code == -404
        assert isinstance(info.value, Exception)
        # A failed transport stays failed.
        with pytest.raises(TransportError):
            s.receive_data(b"\x02" + P8)


FULL = ClientTransport("full")


class TestMalformed:
    def test_zero_length(self) -> None:
        expect_error(b"\xef", b"\x00")
        expect_error(b"\xef", b"\x80")
        expect_error(b"\xef", b"\x7f\x00\x00\x00")
        expect_error(b"\xee\xee\xee\xee", b"\x00\x00\x00\x00")
        expect_error(b"\xee\xee\xee\xee", b"\x00\x00\x00\x80")
        expect_error(b"\xdd\xdd\xdd\xdd", b"\x00\x00\x00\x00")
        # Full: 12 is the envelope alone; a payload of 0 bytes.
        frame = struct.pack("<ii", 12, 0)
        expect_error(b"", frame + struct.pack("<I", 0) + bytes(8))

    def test_oversized_length(self) -> None:
        expect_error(b"\xef", b"\x7f\xff\xff\xff")
        expect_error(b"\xef", b"\x05", max_packet=16)
        expect_error(b"\xee\xee\xee\xee", struct.pack("<I", 4 * 1024 * 1024 + 4))
        expect_error(b"\xee\xee\xee\xee", struct.pack("<I", 20), max_packet=16)
        expect_error(b"\xdd\xdd\xdd\xdd", struct.pack("<I", 0x7FFFFFFF))
        expect_error(b"", struct.pack("<ii", 4 * 1024 * 1024 + 13, 0))

    def test_full_short_or_negative_length(self) -> None:
        expect_error(b"", struct.pack("<ii", 8, 0) + bytes(8))
        expect_error(b"", struct.pack("<ii", -404, 0) + bytes(8))
        expect_error(b"", struct.pack("<ii", -1, 0) + bytes(8))

    def test_full_bad_crc(self) -> None:
        frame = bytearray(TestFullVectors.FIRST)
        frame[-1] ^= 0x01
        expect_error(b"", bytes(frame))
        frame = bytearray(TestFullVectors.FIRST)
        frame[9] ^= 0x40  # corrupt the payload
        expect_error(b"", bytes(frame))

    def test_full_bad_seqno(self) -> None:
        # A first frame with seqno 1 does not look like full at all (bytes 4:8
        # are not zero), so detection takes it for an obfuscated2 header and
        # rejects it once 64 bytes are in: no known protocol tag.
        expect_error(b"", TestFullVectors.SECOND * 4)
        expect_error(b"", TestFullVectors.FIRST + TestFullVectors.FIRST)  # must increment
        skip = ClientTransport("full")
        frames = [skip.encode(P8) for _ in range(3)]
        expect_error(b"", frames[0] + frames[2])

    def test_abridged_length_not_multiple_of_four(self) -> None:
        # The wire counts words, so only our own encoders can get it wrong.
        with pytest.raises(TransportError):
            ClientTransport("abridged").encode(b"abc")
        s = ServerTransport()
        s.receive_data(b"\xef")
        with pytest.raises(TransportError):
            s.encode(b"abcde")

    def test_empty_payload_cannot_be_encoded(self) -> None:
        for kind in KINDS:
            with pytest.raises(TransportError):
                ClientTransport(kind).encode(b"")

    @pytest.mark.parametrize("seed", range(20))
    def test_garbage_only_raises_transport_error(self, seed: int) -> None:
        rng = random.Random(seed)
        for opening in (b"\xef", b"\xee\xee\xee\xee", b"\xdd\xdd\xdd\xdd", b"", None):
            garbage = rng.randbytes(rng.randrange(1, 3000))
            if opening is None:
                data = garbage  # whatever detection makes of it
            elif opening == b"":
                data = struct.pack("<ii", rng.randrange(13, 4000), 0) + garbage
            else:
                data = opening + garbage
            s = ServerTransport(max_packet=rng.choice((64, 1024, 4 * 1024 * 1024)))
            try:
                feed_random_chunks(s.receive_data, data, seed)
            except TransportError:
                pass


@pytest.mark.parametrize(("kind", "obfuscated"), COMBOS, ids=COMBO_IDS)
def test_buffer_stays_bounded(kind: str, obfuscated: bool) -> None:
    max_packet = 1024
    client = ClientTransport(kind, obfuscated, max_packet=max_packet)
    server = ServerTransport(max_packet=max_packet)
    big = payload(max_packet // 4)
    stream = client.connect_bytes() + client.encode(big)
    largest = 0
    got: list[Packet] = []
    for i in range(len(stream)):
        got += server.receive_data(stream[i : i + 1])
        largest = max(largest, len(server._buf))
    assert len(got) == 1 and got[0].payload[:max_packet] == big
    assert largest <= max_packet + 15 + 12  # payload, padding, biggest header
    assert len(server._buf) == 0


# --------------------------------------------------------------------------- Telethon interop


def telethon_read_all(codec: Any, data: bytes, count: int) -> list[bytes]:
    async def run() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return [await codec.read_packet(reader) for _ in range(count)]

    return asyncio.run(run())


TELETHON_PLAIN = [
    ("abridged", AbridgedPacketCodec),
    ("intermediate", IntermediatePacketCodec),
    ("full", FullPacketCodec),
]


@pytest.mark.parametrize(("kind", "codec_cls"), TELETHON_PLAIN, ids=[k for k, _ in TELETHON_PLAIN])
def test_telethon_plain_codecs_interoperate(kind: str, codec_cls: type) -> None:
    sent = [payload(n, 3) for n in (1, 2, 126, 127, 128, 2000)]
    encoder = codec_cls(None)
    stream = (encoder.tag or b"") + b"".join(encoder.encode_packet(p) for p in sent)
    server = ServerTransport()
    assert feed_server(server, stream, 7) == [Packet(p) for p in sent]
    assert server.kind == kind

    back = b"".join(server.encode(p) for p in sent) + server.encode_error(-404)
    received = telethon_read_all(codec_cls(None), back, len(sent) + 1)
    assert received == [*sent, struct.pack("<i", -404)]


TELETHON_OBFUSCATED = [
    ("abridged", AbridgedPacketCodec),
    ("intermediate", IntermediatePacketCodec),
    ("padded", RandomizedIntermediatePacketCodec),
]


@pytest.mark.parametrize(
    ("kind", "codec_cls"), TELETHON_OBFUSCATED, ids=[k for k, _ in TELETHON_OBFUSCATED]
)
def test_telethon_obfuscated_codecs_interoperate(kind: str, codec_cls: type) -> None:
    sent = [payload(n, 4) for n in (1, 5, 127, 300)] * 8
    header, encryptor, decryptor = ObfuscatedIO.init_header(codec_cls)
    codec = codec_cls(None)
    stream = bytes(header) + encryptor.encrypt(b"".join(codec.encode_packet(p) for p in sent))
    server = ServerTransport()
    got = feed_server(server, stream, 61)
    assert server.kind == "obfuscated2/" + kind
    assert [strip_padding(kind, g.payload, p) for g, p in zip(got, sent, strict=True)] == sent

    # Telethon strips len % 4 bytes of padding, so this also checks the
    # server pads its own padded frames by no more than 3 bytes.
    back = b"".join(server.encode(p) for p in sent) + server.encode_error(-444)
    received = telethon_read_all(codec_cls(None), decryptor.encrypt(back), len(sent) + 1)
    assert received == [*sent, struct.pack("<i", -444)]
