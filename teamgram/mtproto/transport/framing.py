"""MTProto TCP framings: abridged, intermediate, padded intermediate and full.

Each framing turns payloads into frames and frames back into payloads, for one
direction of one connection. Decoders are told which side sent the bytes,
because the two directions differ: a client marks a frame as wanting a quick
ack, while a server sends the quick-ack answer itself (in abridged and
intermediate as a bare 4-byte token with no length in front).

Nothing here knows about sockets, obfuscation or detection; see ``server.py``
and ``client.py`` for those. Spec: https://core.telegram.org/mtproto/mtproto-transports
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "DEFAULT_MAX_PACKET",
    "ERROR_NOT_FOUND",
    "FRAMINGS",
    "AbridgedFraming",
    "Framing",
    "FullFraming",
    "IntermediateFraming",
    "Packet",
    "PaddedFraming",
    "TransportError",
    "feed",
    "make_framing",
]

#: Largest payload a decoder accepts unless told otherwise.
DEFAULT_MAX_PACKET = 4 * 1024 * 1024

#: The transport error a server sends for malformed input (-404, per the docs).
ERROR_NOT_FOUND = -404

_QUICK_ACK_BIT = 0x80000000
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_FULL_HEADER = struct.Struct("<iI")
_ABRIDGED_MAX_WORDS = 0xFFFFFF  # 3 length bytes
_INTERMEDIATE_MAX = 0x7FFFFFFF  # the top bit is the quick-ack flag


class TransportError(Exception):
    """The peer's bytes (or a payload we were asked to frame) break the framing.

    ``code`` is the transport error a server should answer with (-404) before
    closing; the connection cannot be resynchronised after this.
    """

    def __init__(self, message: str, code: int = ERROR_NOT_FOUND) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded frame.

    On the server side ``quick_ack`` means the client asked for a quick ack of
    this payload, and a padded-intermediate payload still carries its padding
    (the MTProto layer knows its real length). On the client side it means
    the packet *is* a quick-ack answer and ``payload`` is the 4-byte token,
    little-endian.
    """

    payload: bytes
    quick_ack: bool = False


def _quick_ack_token(token: int) -> int:
    """Validate a token and force its top bit, which is what marks it on the wire."""
    if not 0 <= token <= 0xFFFFFFFF:
        raise ValueError(f"quick ack token out of range: {token!r}")
    return token | _QUICK_ACK_BIT


class Framing:
    """Base of the four framings. One instance serves one connection side.

    ``server_side`` is true for the server's end of a connection: it decodes
    frames from a client and encodes frames for a client. The two directions
    differ only in quick acks (and padding length), hence one flag.
    ``max_packet`` bounds the payload length a decoder accepts, so a buffer
    never grows past ``max_packet`` plus a frame header.
    """

    kind: ClassVar[str]
    #: The 4-byte protocol tag at offset 56 of an obfuscated2 header.
    obfuscation_tag: ClassVar[bytes]
    #: What a client sends first on a plain (not obfuscated) connection.
    plain_tag: ClassVar[bytes]

    __slots__ = ("max_packet", "server_side")

    def __init__(self, *, server_side: bool, max_packet: int) -> None:
        if max_packet <= 0:
            raise ValueError("max_packet must be positive")
        self.server_side = server_side
        self.max_packet = max_packet

    def encode(self, payload: bytes, quick_ack: bool = False) -> bytes:
        """Frame one payload; ``quick_ack`` (client side only) asks for a quick ack."""
        raise NotImplementedError

    def encode_quick_ack(self, token: int) -> bytes:
        """Frame a server's quick-ack answer for ``token``."""
        raise NotImplementedError

    def encode_error(self, code: int) -> bytes:
        """Frame a transport error: a 4-byte signed little-endian int as a payload."""
        return self.encode(_I32.pack(code))

    def decode(self, data: memoryview, out: list[Packet]) -> int:
        """Append every complete frame in ``data`` to ``out``; return bytes consumed.

        An incomplete frame at the end is left unconsumed. Raises
        :class:`TransportError` on a malformed frame.
        """
        raise NotImplementedError


class AbridgedFraming(Framing):
    """Abridged: length/4 in one byte, or 0x7f and three little-endian bytes."""

    kind = "abridged"
    obfuscation_tag = b"\xef\xef\xef\xef"
    plain_tag = b"\xef"
    __slots__ = ()

    def encode(self, payload: bytes, quick_ack: bool = False) -> bytes:
        size = len(payload)
        if size == 0 or size & 3:
            raise TransportError(f"abridged payload length {size} is not a positive multiple of 4")
        words = size >> 2
        flag = 0x80 if quick_ack else 0
        if words < 0x7F:
            return bytes((words | flag,)) + payload
        if words > _ABRIDGED_MAX_WORDS:
            raise TransportError(f"abridged payload too long: {size}")
        return _U32.pack((words << 8) | 0x7F | flag) + payload

    def encode_quick_ack(self, token: int) -> bytes:
        # The docs: the token is byte-swapped, so its top bit lands in the first
        # byte, which a client tells apart from a length byte (always < 0x80).
        return _quick_ack_token(token).to_bytes(4, "big")

    def decode(self, data: memoryview, out: list[Packet]) -> int:
        end = len(data)
        off = 0
        max_words = self.max_packet >> 2
        server_side = self.server_side
        while off < end:
            first = data[off]
            if first & 0x80 and not server_side:
                # A server's quick-ack answer: a bare byte-swapped token.
                if end - off < 4:
                    break
                out.append(Packet(bytes(data[off : off + 4])[::-1], True))
                off += 4
                continue
            words = first & 0x7F
            if words == 0x7F:
                if end - off < 4:
                    break
                words = _U32.unpack_from(data, off)[0] >> 8
                start = off + 4
            else:
                start = off + 1
            if words == 0:
                raise TransportError("abridged frame of length 0")
            if words > max_words:
                raise TransportError(f"abridged frame too long: {words << 2} bytes")
            stop = start + (words << 2)
            if stop > end:
                break
            out.append(Packet(bytes(data[start:stop]), bool(first & 0x80)))
            off = stop
        return off


class IntermediateFraming(Framing):
    """Intermediate: a 4-byte little-endian length whose top bit asks for a quick ack."""

    kind = "intermediate"
    obfuscation_tag = b"\xee\xee\xee\xee"
    plain_tag = obfuscation_tag
    __slots__ = ()

    def _limit(self) -> int:
        return self.max_packet

    def _padding(self) -> bytes:
        return b""

    def encode(self, payload: bytes, quick_ack: bool = False) -> bytes:
        padding = self._padding()
        size = len(payload) + len(padding)
        if not payload:
            raise TransportError("cannot frame an empty payload")
        if size > _INTERMEDIATE_MAX:
            raise TransportError(f"payload too long: {size}")
        header = _U32.pack(size | _QUICK_ACK_BIT if quick_ack else size)
        return b"".join((header, payload, padding)) if padding else header + payload

    def encode_quick_ack(self, token: int) -> bytes:
        # The docs: the token alone, no length; its top bit (in the last byte,
        # little-endian) can never be set in a real length.
        return _U32.pack(_quick_ack_token(token))

    def encode_error(self, code: int) -> bytes:
        # Never padded, so the payload is exactly the 4-byte code for any client.
        return _U32.pack(4) + _I32.pack(code)

    def _frame_payload(self, payload: bytes) -> Packet:
        """Client side: turn a frame payload into a packet (padded overrides)."""
        return Packet(payload)

    def decode(self, data: memoryview, out: list[Packet]) -> int:
        end = len(data)
        off = 0
        limit = self._limit()
        server_side = self.server_side
        while end - off >= 4:
            size = _U32.unpack_from(data, off)[0]
            quick = size >= _QUICK_ACK_BIT
            if quick:
                if not server_side:
                    # A server's quick-ack answer: the bare token.
                    out.append(Packet(bytes(data[off : off + 4]), True))
                    off += 4
                    continue
                size ^= _QUICK_ACK_BIT
            if size == 0:
                raise TransportError(f"{self.kind} frame of length 0")
            if size > limit:
                raise TransportError(f"{self.kind} frame too long: {size} bytes")
            start = off + 4
            stop = start + size
            if stop > end:
                break
            payload = bytes(data[start:stop])
            out.append(Packet(payload, quick) if server_side else self._frame_payload(payload))
            off = stop
        return off


class PaddedFraming(IntermediateFraming):
    """Padded intermediate: intermediate with 0..15 random bytes after the payload.

    A server passes the whole frame payload, padding included, to the MTProto
    layer, which knows its own lengths. A server pads its own frames with only
    0..3 bytes: clients such as Telethon strip ``len % 4`` bytes and would
    choke on more, and 0..3 is within what the docs allow.
    """

    kind = "padded"
    obfuscation_tag = b"\xdd\xdd\xdd\xdd"
    plain_tag = obfuscation_tag
    __slots__ = ()

    def _limit(self) -> int:
        return self.max_packet + 15

    def _padding(self) -> bytes:
        count = random.getrandbits(2) if self.server_side else random.getrandbits(4)
        return os.urandom(count) if count else b""

    def encode_quick_ack(self, token: int) -> bytes:
        # The docs: a normal frame of 8..16 bytes, 0xffffffff, the token, then
        # 0..8 random bytes; 0xffffffff is no valid transport error code.
        extra = random.randrange(9)
        body = b"\xff\xff\xff\xff" + _U32.pack(_quick_ack_token(token)) + os.urandom(extra)
        return _U32.pack(len(body)) + body

    def _frame_payload(self, payload: bytes) -> Packet:
        if 8 <= len(payload) <= 16 and payload[:4] == b"\xff\xff\xff\xff":
            return Packet(payload[4:8], True)
        # Our server pads by 0..3 bytes and MTProto payloads are 4-aligned.
        cut = len(payload) & 3
        return Packet(payload[:-cut] if cut else payload)


class FullFraming(Framing):
    """Full: len:int32 seqno:int32 payload crc32:int32, seqno counting from 0 per side."""

    kind = "full"
    obfuscation_tag = b""  # the docs define no tag: full cannot be obfuscated here
    plain_tag = b""
    __slots__ = ("_recv_seqno", "_send_seqno")

    def __init__(self, *, server_side: bool, max_packet: int) -> None:
        super().__init__(server_side=server_side, max_packet=max_packet)
        self._send_seqno = 0
        self._recv_seqno = 0

    def encode(self, payload: bytes, quick_ack: bool = False) -> bytes:
        if quick_ack:
            raise TransportError("the full transport has no quick ack")
        if not payload:
            raise TransportError("cannot frame an empty payload")
        size = len(payload) + 12
        if size > _INTERMEDIATE_MAX:
            raise TransportError(f"payload too long: {len(payload)}")
        header = _FULL_HEADER.pack(size, self._send_seqno)
        self._send_seqno = (self._send_seqno + 1) & 0xFFFFFFFF
        crc = zlib.crc32(payload, zlib.crc32(header))
        return b"".join((header, payload, _U32.pack(crc)))

    def encode_quick_ack(self, token: int) -> bytes:
        raise TransportError("the full transport has no quick ack")

    def decode(self, data: memoryview, out: list[Packet]) -> int:
        end = len(data)
        off = 0
        limit = self.max_packet + 12
        while end - off >= 8:
            size, seqno = _FULL_HEADER.unpack_from(data, off)
            if size <= 12:
                raise TransportError(f"full frame of length {size}")
            if size > limit:
                raise TransportError(f"full frame too long: {size} bytes")
            if seqno != self._recv_seqno:
                raise TransportError(f"full frame seqno {seqno}, expected {self._recv_seqno}")
            stop = off + size
            if stop > end:
                break
            crc_at = stop - 4
            if zlib.crc32(data[off:crc_at]) != _U32.unpack_from(data, crc_at)[0]:
                raise TransportError("full frame CRC32 mismatch")
            out.append(Packet(bytes(data[off + 8 : crc_at])))
            self._recv_seqno = (seqno + 1) & 0xFFFFFFFF
            off = stop
        return off


FRAMINGS: dict[str, type[Framing]] = {
    cls.kind: cls for cls in (AbridgedFraming, IntermediateFraming, PaddedFraming, FullFraming)
}


def make_framing(kind: str, *, server_side: bool, max_packet: int) -> Framing:
    """Build the framing called ``kind`` ('abridged', 'intermediate', 'padded', 'full')."""
    try:
        cls = FRAMINGS[kind]
    except KeyError:
        raise ValueError(f"unknown transport kind {kind!r}") from None
    return cls(server_side=server_side, max_packet=max_packet)


def feed(framing: Framing, buf: bytearray, data: bytes | bytearray | memoryview) -> list[Packet]:
    """Decode ``data`` after whatever ``buf`` holds; leave the unfinished tail in ``buf``.

    When ``buf`` is empty (the usual case) frames are cut straight out of
    ``data``, so each payload is copied exactly once. The tail kept is at most
    one frame header plus ``max_packet``, since lengths are checked before
    waiting for a body.
    """
    out: list[Packet] = []
    if buf:
        buf += data
        with memoryview(buf) as view:
            used = framing.decode(view, out)
        del buf[:used]
    else:
        with memoryview(data) as view:
            used = framing.decode(view, out)
            if used < len(view):
                buf += view[used:]
    return out
