"""MTProto 2.0 encrypted message envelope (sans-IO).

Client packet: auth_key_id (8) | msg_key (16) | AES-256-IGE(salt, session_id,
msg_id, seqno, length, data, padding 12..1024). Every check that can fail
before msg_key is verified gives the same answer (None), so nothing leaks which
one failed; the caller answers -404.

Hash budget per message: decrypt = 2 SHA-256 (key/iv) + 1 (msg_key, whose first
4 bytes are also the quick-ack token); encrypt = 1 + 2.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from hashlib import sha256

from teamgram.mtproto.crypto.aes import decrypt_ige, encrypt_ige
from teamgram.mtproto.crypto.kdf import (
    X_CLIENT,
    X_SERVER,
    aes_key_iv_v1,
    aes_key_iv_v2,
    ct_eq,
    msg_key_v1,
)

_HEADER = struct.Struct("<qqqii")  # salt, session_id, msg_id, seqno, length
_MIN_PACKET = 8 + 16 + 32 + 16  # key id, msg_key, header, at least 12 bytes of padding
_MIN_PAD, _MAX_PAD = 12, 1024


@dataclass(frozen=True, slots=True)
class Decrypted:
    salt: int
    session_id: int
    msg_id: int
    seqno: int
    body: bytes
    quick_ack_token: int  # what to send back if the transport asked for a quick ack


def decrypt_client_message(auth_key: bytes, packet: bytes) -> Decrypted | None:
    """Decrypt and verify a client packet; None for any failure (answer -404)."""
    n = len(packet)
    if n < _MIN_PACKET or (n - 24) % 16:
        return None
    msg_key = packet[8:24]
    key, iv = aes_key_iv_v2(auth_key, msg_key, X_CLIENT)
    plain = decrypt_ige(packet[24:], key, iv)
    digest = sha256(auth_key[88:120] + plain).digest()
    ok = ct_eq(digest[8:24], msg_key)
    salt, session_id, msg_id, seqno, length = _HEADER.unpack_from(plain)
    pad = len(plain) - 32 - length
    # Evaluate every condition before deciding, so timing does not tell them apart.
    ok &= length >= 0
    ok &= length % 4 == 0
    ok &= _MIN_PAD <= pad <= _MAX_PAD
    if not ok:
        return None
    token = struct.unpack_from("<I", digest)[0] | 0x80000000
    return Decrypted(salt, session_id, msg_id, seqno, plain[32 : 32 + length], token)


def _encrypt(
    auth_key: bytes,
    auth_key_id_bytes: bytes,
    x: int,
    salt: int,
    session_id: int,
    msg_id: int,
    seqno: int,
    body: bytes,
) -> bytes:
    n = 32 + len(body)
    pad = _MIN_PAD + ((-(n + _MIN_PAD)) % 16)
    plain = _HEADER.pack(salt, session_id, msg_id, seqno, len(body)) + body + os.urandom(pad)
    msg_key = sha256(auth_key[88 + x : 120 + x] + plain).digest()[8:24]
    key, iv = aes_key_iv_v2(auth_key, msg_key, x)
    return auth_key_id_bytes + msg_key + encrypt_ige(plain, key, iv)


def encrypt_server_message(
    auth_key: bytes,
    auth_key_id_bytes: bytes,
    salt: int,
    session_id: int,
    msg_id: int,
    seqno: int,
    body: bytes,
) -> bytes:
    """Encrypt one server message (body may be a container) for the client."""
    return _encrypt(auth_key, auth_key_id_bytes, X_SERVER, salt, session_id, msg_id, seqno, body)


def encrypt_client_message(
    auth_key: bytes,
    auth_key_id_bytes: bytes,
    salt: int,
    session_id: int,
    msg_id: int,
    seqno: int,
    body: bytes,
) -> bytes:
    """The client side of the envelope, for our own test clients and benches."""
    return _encrypt(auth_key, auth_key_id_bytes, X_CLIENT, salt, session_id, msg_id, seqno, body)


def decrypt_server_message(auth_key: bytes, packet: bytes) -> Decrypted | None:
    """The client side of decryption, for our own test clients and benches."""
    if len(packet) < _MIN_PACKET or (len(packet) - 24) % 16:
        return None
    msg_key = packet[8:24]
    key, iv = aes_key_iv_v2(auth_key, msg_key, X_SERVER)
    plain = decrypt_ige(packet[24:], key, iv)
    if not ct_eq(sha256(auth_key[88 + X_SERVER : 120 + X_SERVER] + plain).digest()[8:24], msg_key):
        return None
    salt, session_id, msg_id, seqno, length = _HEADER.unpack_from(plain)
    if length < 0 or length > len(plain) - 32:
        return None
    return Decrypted(salt, session_id, msg_id, seqno, plain[32 : 32 + length], 0)


def decrypt_binding_message(perm_key: bytes, data: bytes) -> tuple[int, int, bytes] | None:
    """Decrypt auth.bindTempAuthKey's encrypted_message with the permanent key.

    Clients use MTProto 1.0 (SHA-1 msg_key over the unpadded plaintext; mtcute) or
    2.0; both are accepted. Returns (msg_id, seqno, body) or None.
    """
    if len(data) < 24 + 48 or (len(data) - 24) % 16:
        return None
    msg_key = data[8:24]
    # MTProto 1.0
    key, iv = aes_key_iv_v1(perm_key, msg_key, X_CLIENT)
    plain = decrypt_ige(data[24:], key, iv)
    _, _, msg_id, seqno, length = _HEADER.unpack_from(plain)
    if 0 <= length <= len(plain) - 32 and ct_eq(msg_key_v1(plain[: 32 + length]), msg_key):
        return msg_id, seqno, plain[32 : 32 + length]
    # MTProto 2.0
    dec = decrypt_client_message(perm_key, data)
    if dec is not None:
        return dec.msg_id, dec.seqno, dec.body
    return None
