"""MTProto key derivation: msg_key, AES key/IV, auth_key_id and handshake hashes.

Direction selector ``x`` (both protocol versions): ``X_CLIENT`` (0) for
client->server messages, ``X_SERVER`` (8) for server->client messages.

MTProto 2.0 (https://core.telegram.org/mtproto/description) is on every
message's path, and about half of the per-message crypto cost is the fixed
overhead of each hashlib call, so each function makes exactly the hash calls
the spec requires (one for msg_key, two for key+IV) and nothing more.

MTProto 1.0 (SHA-1) is kept only because ``auth.bindTempAuthKey`` carries a
binding message encrypted with the permanent key in the 1.0 scheme.
"""

from __future__ import annotations

import hmac
from hashlib import sha1, sha256

__all__ = [
    "X_CLIENT",
    "X_SERVER",
    "aes_key_iv_v1",
    "aes_key_iv_v2",
    "auth_key_aux_hash",
    "auth_key_id",
    "ct_eq",
    "msg_key_v1",
    "msg_key_v2",
    "new_nonce_hash",
    "tmp_aes_key_iv",
]

X_CLIENT = 0
"""``x`` for messages sent by the client (the server decrypts with it)."""
X_SERVER = 8
"""``x`` for messages sent by the server (the server encrypts with it)."""

_from_bytes = int.from_bytes


def ct_eq(a: bytes, b: bytes) -> bool:
    """Constant-time equality for MACs/hashes, so a mismatch position does not leak by timing."""
    return hmac.compare_digest(a, b)


# --------------------------------------------------------------------------- MTProto 2.0


def msg_key_v2(auth_key: bytes, plaintext_with_padding: bytes, x: int) -> bytes:
    """msg_key = SHA256(auth_key[88+x : 120+x] + plaintext + padding)[8:24].

    The padding is part of the hash in 2.0, so pass the whole decrypted buffer.
    """
    h = sha256(auth_key[88 + x : 120 + x])
    # update() instead of concatenation: same cost at 1 KiB, avoids a copy of big uploads.
    h.update(plaintext_with_padding)
    return h.digest()[8:24]


def aes_key_iv_v2(auth_key: bytes, msg_key: bytes, x: int) -> tuple[bytes, bytes]:
    """Derive the (aes_key, aes_iv) pair of MTProto 2.0 from auth_key and msg_key (2 SHA-256)."""
    a = sha256(msg_key + auth_key[x : x + 36]).digest()
    b = sha256(auth_key[40 + x : 76 + x] + msg_key).digest()
    return a[:8] + b[8:24] + a[24:], b[:8] + a[8:24] + b[24:]


# --------------------------------------------------------------------------- MTProto 1.0


def msg_key_v1(plaintext_without_padding: bytes) -> bytes:
    """msg_key of MTProto 1.0: the lower 128 bits of SHA1(plaintext), padding excluded.

    The 1.0 padding (0..15 bytes) is not hashed, so the caller must cut the
    plaintext at 32 + message_data_length before calling this.
    """
    return sha1(plaintext_without_padding).digest()[4:]


def aes_key_iv_v1(auth_key: bytes, msg_key: bytes, x: int) -> tuple[bytes, bytes]:
    """Derive the (aes_key, aes_iv) pair of MTProto 1.0 (4 SHA-1), e.g. for bindTempAuthKey."""
    a = sha1(msg_key + auth_key[x : x + 32]).digest()
    b = sha1(auth_key[32 + x : 48 + x] + msg_key + auth_key[48 + x : 64 + x]).digest()
    c = sha1(auth_key[64 + x : 96 + x] + msg_key).digest()
    d = sha1(msg_key + auth_key[96 + x : 128 + x]).digest()
    key = a[:8] + b[8:20] + c[4:16]
    iv = a[8:20] + b[:8] + c[16:20] + d[:8]
    return key, iv


# --------------------------------------------------------------------------- auth key ids


def auth_key_id(auth_key: bytes) -> int:
    """auth_key_id as the wire carries it: SHA1(auth_key)[-8:] read as little-endian *signed* int64.

    Signed so it compares equal to a TL ``long`` parsed from a packet header;
    mask with ``& 0xFFFFFFFFFFFFFFFF`` for the unsigned form.
    """
    return _from_bytes(sha1(auth_key).digest()[12:], "little", signed=True)


def auth_key_aux_hash(auth_key: bytes) -> bytes:
    """auth_key_aux_hash: the 8 raw high-order bytes SHA1(auth_key)[:8] (used by new_nonce_hash)."""
    return sha1(auth_key).digest()[:8]


# --------------------------------------------------------------------------- handshake


def tmp_aes_key_iv(new_nonce: bytes, server_nonce: bytes) -> tuple[bytes, bytes]:
    """Temporary AES key/IV that protect server_DH_inner_data / client_DH_inner_data.

    ``new_nonce`` (int256) and ``server_nonce`` (int128) are the raw
    little-endian wire bytes, 32 and 16 bytes long.
    """
    if len(new_nonce) != 32 or len(server_nonce) != 16:
        raise ValueError("new_nonce must be 32 bytes and server_nonce 16 bytes")
    h1 = sha1(new_nonce + server_nonce).digest()
    h2 = sha1(server_nonce + new_nonce).digest()
    h3 = sha1(new_nonce + new_nonce).digest()
    return h1 + h2[:12], h2[12:] + h3 + new_nonce[:4]


def new_nonce_hash(new_nonce: bytes, auth_key: bytes, number: int) -> bytes:
    """new_nonce_hash{1,2,3} for dh_gen_ok/retry/fail (number = 1, 2, 3).

    SHA1(new_nonce + byte(number) + auth_key_aux_hash)[4:20], returned as the
    16 raw bytes that appear on the wire (TL int128).
    """
    if len(new_nonce) != 32:
        raise ValueError("new_nonce must be 32 bytes")
    if number not in (1, 2, 3):
        raise ValueError("number must be 1 (ok), 2 (retry) or 3 (fail)")
    return sha1(new_nonce + bytes((number,)) + auth_key_aux_hash(auth_key)).digest()[4:]
