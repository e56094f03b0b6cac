"""The client's end of an MTProto TCP connection, sans-IO.

Used by tests, benchmarks and fuzzers to talk to :class:`ServerTransport`
(or a real server) in every framing, plain or obfuscated2.
"""

from __future__ import annotations

from .framing import DEFAULT_MAX_PACKET, FRAMINGS, Packet, feed, make_framing
from .obfuscated import CtrStream, client_handshake

__all__ = ["ClientTransport"]


class ClientTransport:
    """Frame a client's payloads and decode the server's replies.

    ``kind`` is 'abridged', 'intermediate', 'padded' or 'full'. With
    ``obfuscated`` a 64-byte obfuscated2 header replaces the plain tag; the
    full framing has no obfuscation tag and cannot be obfuscated. ``dc_id``
    goes into the obfuscated header; ``seed`` (64 bytes) fixes its random part.
    """

    __slots__ = ("_buf", "_connect", "_decryptor", "_encryptor", "_framing", "obfuscated")

    def __init__(
        self,
        kind: str,
        obfuscated: bool = False,
        *,
        dc_id: int = 0,
        max_packet: int = DEFAULT_MAX_PACKET,
        seed: bytes | None = None,
    ) -> None:
        if kind not in FRAMINGS:
            raise ValueError(f"unknown transport kind {kind!r}")
        self._framing = make_framing(kind, server_side=False, max_packet=max_packet)
        self._buf = bytearray()
        self.obfuscated = obfuscated
        self._encryptor: CtrStream | None = None
        self._decryptor: CtrStream | None = None
        if obfuscated:
            tag = self._framing.obfuscation_tag
            if not tag:
                raise ValueError(f"the {kind} framing cannot be obfuscated")
            self._connect, self._encryptor, self._decryptor = client_handshake(tag, dc_id, seed)
        else:
            self._connect = self._framing.plain_tag

    @property
    def kind(self) -> str:
        """The framing, prefixed 'obfuscated2/' when obfuscated (as the server reports it)."""
        name = self._framing.kind
        return "obfuscated2/" + name if self.obfuscated else name

    def connect_bytes(self) -> bytes:
        """What to send before any packet: the tag byte(s) or the 64-byte header.

        Computed once; calling again returns the same bytes.
        """
        return self._connect

    def encode(self, payload: bytes, quick_ack: bool = False) -> bytes:
        """Frame (and obfuscate) one payload; ``quick_ack`` sets the framing's flag."""
        frame = self._framing.encode(payload, quick_ack)
        return frame if self._encryptor is None else self._encryptor.update(frame)

    def receive_packets(self, data: bytes) -> list[Packet]:
        """Decode the server's bytes; ``quick_ack`` marks quick-ack answers.

        A quick-ack answer's payload is the 4-byte token, little-endian; padding
        of the padded framing is stripped (down to a multiple of 4 bytes).
        """
        if self._decryptor is not None:
            data = self._decryptor.update(data)
        return feed(self._framing, self._buf, data)

    def receive_data(self, data: bytes) -> list[bytes]:
        """Decode the server's bytes into payloads.

        Quick-ack answers and transport errors both come out as 4-byte
        payloads; use :meth:`receive_packets` to tell them apart.
        """
        return [packet.payload for packet in self.receive_packets(data)]
