"""The server's end of an MTProto TCP connection, sans-IO.

Feed it whatever the socket delivered with :meth:`ServerTransport.receive_data`
and get decoded packets back; frame replies with :meth:`ServerTransport.encode`
and write the bytes yourself. The framing is detected from the first bytes:

* ``0xef``            -> abridged
* ``0xeeeeeeee``      -> intermediate
* ``0xdddddddd``      -> padded intermediate
* bytes 4:8 all zero  -> full (the first int is a length, the second seqno 0)
* anything else       -> an obfuscated2 header (64 bytes), whose tag names
  abridged, intermediate or padded; HTTP and TLS openings are rejected.
"""

from __future__ import annotations

from .framing import DEFAULT_MAX_PACKET, Framing, Packet, TransportError, feed, make_framing
from .obfuscated import HEADER_SIZE, CtrStream, header_problem, server_handshake

__all__ = ["ServerTransport"]

_PLAIN_TAGS = {b"\xee\xee\xee\xee": "intermediate", b"\xdd\xdd\xdd\xdd": "padded"}


class ServerTransport:
    """Decode a client's byte stream and frame the server's replies.

    After a :class:`TransportError` the stream cannot be resynchronised: every
    later :meth:`receive_data` raises again. The caller should send
    :meth:`encode_error` (when :attr:`kind` is known) and close.
    """

    __slots__ = ("_buf", "_decryptor", "_encryptor", "_failed", "_framing", "max_packet")

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        if max_packet <= 0:
            raise ValueError("max_packet must be positive")
        self.max_packet = max_packet
        self._buf = bytearray()
        self._framing: Framing | None = None
        self._decryptor: CtrStream | None = None
        self._encryptor: CtrStream | None = None
        self._failed: str | None = None

    @property
    def kind(self) -> str | None:
        """'abridged', 'intermediate', 'padded' or 'full', prefixed 'obfuscated2/'
        when obfuscated; None until enough bytes arrived to tell."""
        if self._framing is None:
            return None
        if self._decryptor is not None:
            return "obfuscated2/" + self._framing.kind
        return self._framing.kind

    def receive_data(self, data: bytes) -> list[Packet]:
        """Take the next bytes from the client, in chunks of any size.

        Returns the packets completed by them (often none). Raises
        :class:`TransportError` on malformed input.
        """
        if self._failed is not None:
            raise TransportError(f"transport already failed: {self._failed}")
        try:
            if self._framing is None:
                return self._detect(data)
            if self._decryptor is not None:
                data = self._decryptor.update(data)
            return feed(self._framing, self._buf, data)
        except TransportError as exc:
            self._failed = str(exc)
            self._buf = bytearray()
            raise

    def _detect(self, data: bytes) -> list[Packet]:
        """Buffer the opening bytes until the framing is known, then decode the rest."""
        buf = self._buf
        buf += data
        size = len(buf)
        if size == 0:
            return []
        used = 0
        if buf[0] == 0xEF:
            kind, used = "abridged", 1
        elif size < 4:
            return []
        else:
            first = bytes(buf[:4])
            plain = _PLAIN_TAGS.get(first)
            if plain is not None:
                kind, used = plain, 4
            elif size < 8:
                problem = header_problem(first)
                if problem is not None:
                    raise TransportError(problem)
                return []
            elif buf[4:8] == b"\0\0\0\0":
                kind = "full"
            elif size < HEADER_SIZE:
                problem = header_problem(bytes(buf[:8]))
                if problem is not None:
                    raise TransportError(problem)
                return []
            else:
                kind, self._decryptor, self._encryptor = server_handshake(bytes(buf[:HEADER_SIZE]))
                used = HEADER_SIZE
        self._framing = make_framing(kind, server_side=True, max_packet=self.max_packet)
        rest = bytes(buf[used:])
        self._buf = bytearray()
        if not rest:
            return []
        if self._decryptor is not None:
            rest = self._decryptor.update(rest)
        return feed(self._framing, self._buf, rest)

    def _out(self, frame: bytes) -> bytes:
        return frame if self._encryptor is None else self._encryptor.update(frame)

    def _known(self) -> Framing:
        if self._framing is None:
            raise RuntimeError(
                "no framing yet: nothing can be sent before the client's first bytes"
            )
        return self._framing

    def encode(self, payload: bytes) -> bytes:
        """Frame (and obfuscate, if the client did) one outgoing payload."""
        return self._out(self._known().encode(payload))

    def encode_quick_ack(self, token: int) -> bytes:
        """The quick-ack answer for ``token`` in this framing's own form.

        Abridged: the token byte-swapped; intermediate: the bare token;
        padded: a short frame of 0xffffffff, the token and random bytes. The
        top bit of ``token`` is set if it is not already. The full framing has
        no quick ack and raises :class:`TransportError`.
        """
        return self._out(self._known().encode_quick_ack(token))

    def encode_error(self, code: int) -> bytes:
        """Frame a transport error such as -404 or -429 as a 4-byte payload."""
        return self._out(self._known().encode_error(code))
