"""obfuscated2: the 64-byte random header and AES-256-CTR in both directions.

The client sends 64 random bytes first. Bytes 8:40 and 40:56 are the key and
IV of the client->server stream; the same 48 bytes reversed give the key and
IV of the server->client stream. The client encrypts the header itself with
its stream and sends bytes 56:64 encrypted, so after decrypting the header the
server finds the protocol tag at 56:60 and a dc id at 60:62. Both CTR streams
then run on for the life of the connection.

No MTProxy secret is supported: a plain obfuscated2 header carries no usable
dc id, and this server is not a proxy. Spec:
https://core.telegram.org/mtproto/mtproto-transports#transport-obfuscation
"""

from __future__ import annotations

import os
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .framing import TransportError

__all__ = [
    "HEADER_SIZE",
    "TAGS",
    "CtrStream",
    "check_header",
    "client_handshake",
    "header_problem",
    "server_handshake",
]

HEADER_SIZE = 64

#: Protocol tags an obfuscated2 header may carry, mapped to framing kinds.
TAGS: dict[bytes, str] = {
    b"\xef\xef\xef\xef": "abridged",
    b"\xee\xee\xee\xee": "intermediate",
    b"\xdd\xdd\xdd\xdd": "padded",
}

# First ints a random header must not start with: they are other protocols
# (HTTP methods, a TLS ClientHello, the plain intermediate tags).
_FORBIDDEN_FIRST_INTS = frozenset(
    (
        b"HEAD",
        b"POST",
        b"GET ",
        b"OPTI",
        b"\x16\x03\x01\x02",  # 0x02010316 little-endian: TLS handshake record
        b"\xdd\xdd\xdd\xdd",
        b"\xee\xee\xee\xee",
    )
)


class CtrStream(Protocol):
    """An AES-CTR context: ``update`` both encrypts and decrypts, keeping the counter."""

    def update(self, data: bytes) -> bytes: ...


def _ctr(key: bytes, iv: bytes) -> CtrStream:
    # CTR is symmetric, so an encryptor context serves either direction.
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()


def _streams(header: bytes) -> tuple[CtrStream, CtrStream]:
    """(client->server stream, server->client stream) for a raw 64-byte header."""
    reverse = header[55:7:-1]  # header[8:56] reversed
    return _ctr(header[8:40], header[40:56]), _ctr(reverse[:32], reverse[32:48])


def header_problem(header: bytes | bytearray) -> str | None:
    """Why ``header`` (its first 8 bytes suffice) cannot start an obfuscated2 stream."""
    first = bytes(header[:4])
    if first[:1] == b"\xef":
        return "obfuscated header starts with 0xef (abridged)"
    if first in _FORBIDDEN_FIRST_INTS:
        return f"obfuscated header starts with forbidden int {first!r}"
    if len(header) >= 8 and header[4:8] == b"\0\0\0\0":
        return "obfuscated header has zero bytes 4:8 (full transport)"
    return None


def check_header(header: bytes) -> None:
    """Raise :class:`TransportError` if ``header`` must not start an obfuscated2 stream."""
    problem = header_problem(header)
    if problem is not None:
        raise TransportError(problem)


def server_handshake(header: bytes) -> tuple[str, CtrStream, CtrStream]:
    """Accept a client's 64-byte header: return (framing kind, decryptor, encryptor).

    The decryptor has already consumed the header, so it continues exactly
    where the client's stream does. Raises :class:`TransportError` for a
    forbidden header or an unknown protocol tag.
    """
    if len(header) != HEADER_SIZE:
        raise TransportError(f"obfuscated header must be {HEADER_SIZE} bytes")
    check_header(header)
    decryptor, encryptor = _streams(header)
    plain = decryptor.update(header)
    kind = TAGS.get(plain[56:60])
    if kind is None:
        raise TransportError(f"unknown obfuscated protocol tag {plain[56:60].hex()}")
    return kind, decryptor, encryptor


def client_handshake(
    tag: bytes, dc_id: int = 0, seed: bytes | None = None
) -> tuple[bytes, CtrStream, CtrStream]:
    """Make a client's header: return (64 bytes to send, encryptor, decryptor).

    ``seed`` (64 bytes) fixes the random part for reproducible tests; it must
    pass :func:`check_header`. Without it, random bytes are drawn until one does.
    """
    if tag not in TAGS:
        raise ValueError(f"no obfuscated2 tag {tag.hex()}")
    if seed is not None:
        if len(seed) != HEADER_SIZE:
            raise ValueError(f"seed must be {HEADER_SIZE} bytes")
        check_header(seed)
        raw = bytearray(seed)
    else:
        raw = bytearray(os.urandom(HEADER_SIZE))
        while header_problem(raw) is not None:
            raw[:] = os.urandom(HEADER_SIZE)
    raw[56:60] = tag
    raw[60:62] = dc_id.to_bytes(2, "little", signed=True)
    encryptor, decryptor = _streams(bytes(raw))
    encrypted = encryptor.update(bytes(raw))
    raw[56:64] = encrypted[56:64]
    return bytes(raw), encryptor, decryptor
