"""The client side of auth-key creation, sans-IO: for our tests, benches and fuzzers.

Real users bring their own clients; this one exists so the server can be
exercised without a third-party library, including the paths some clients
never take (RSA_PAD vs the old SHA1 scheme, temp/dc inner data, dh_gen_retry)::

    client = HandshakeClient({key.fingerprint: key}, rsa_pad=True)
    out = client.start()
    while out is not None:
        out = client.receive(exchange(out))   # send, wait for the answer
    client.result.auth_key

Anything wrong in a server answer raises :class:`HandshakeError`. ``now``
arguments default to ``time.time()`` (this is test tooling, not the server).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from hashlib import sha1, sha256
from typing import Protocol

import cryptg

from teamgram.mtproto.crypto.aes import decrypt_ige, encrypt_ige
from teamgram.mtproto.crypto.dh import (
    DH_G,
    DH_PRIME,
    check_g_b,
    compute_auth_key,
    generate_dh_pair,
)
from teamgram.mtproto.crypto.kdf import (
    auth_key_aux_hash,
    auth_key_id,
    new_nonce_hash,
    tmp_aes_key_iv,
)
from teamgram.mtproto.crypto.pq import bytes_to_int_be, int_to_bytes_be
from teamgram.mtproto.handshake import pack_plain, unpack_plain
from teamgram.tl import TLDecodeError, TLFunction, TLObject, decode, decode_prefix, functions, types

__all__ = [
    "ClientResult",
    "HandshakeClient",
    "HandshakeError",
    "PublicKey",
    "factorize_pq",
    "rsa_encrypt_old",
    "rsa_encrypt_pad",
]

_ZERO_IV = bytes(32)


class PublicKey(Protocol):
    """Anything with RSA ``n`` and ``e`` (``ServerKey``, ``RSAPublicNumbers``)."""

    @property
    def n(self) -> int: ...

    @property
    def e(self) -> int: ...


class HandshakeError(Exception):
    """The server's answer is wrong (or the server refused with dh_gen_fail)."""


@dataclass(frozen=True, slots=True)
class ClientResult:
    """What the client holds after dh_gen_ok."""

    auth_key: bytes
    auth_key_id: int
    server_salt: int
    time_offset: int
    """server_time - local time, in whole seconds."""
    retries: int
    """How many dh_gen_retry answers it took."""


# --------------------------------------------------------------------------- primitives


def factorize_pq(pq: int) -> tuple[int, int]:
    """Split the resPQ challenge into (p, q), p < q (cryptg's C Pollard-rho)."""
    p, q = cryptg.factorize_pq_pair(pq)
    p, q = min(p, q), max(p, q)
    if p <= 1 or p * q != pq:
        raise HandshakeError(f"cannot factorize pq={pq}")
    return p, q


def _rsa_public(key: PublicKey, block: bytes) -> bytes:
    return pow(int.from_bytes(block, "big"), key.e, key.n).to_bytes(256, "big")


def rsa_encrypt_old(key: PublicKey, data: bytes) -> bytes:
    """The old scheme: RSA(SHA1(data) + data + random padding to 255 bytes)."""
    if len(data) > 235:
        raise ValueError("inner data too long for the old RSA scheme")
    block = sha1(data).digest() + data + os.urandom(235 - len(data))
    return _rsa_public(key, block)


def rsa_encrypt_pad(key: PublicKey, data: bytes) -> bytes:
    """RSA_PAD (auth_key step 4.1): AES-wrapped, reversed, SHA-256-checked data under RSA."""
    if len(data) > 144:
        raise ValueError("inner data too long for RSA_PAD")
    data_with_padding = data + os.urandom(192 - len(data))
    reversed_data = data_with_padding[::-1]
    while True:
        temp_key = os.urandom(32)
        data_with_hash = reversed_data + sha256(temp_key + data_with_padding).digest()
        aes_encrypted = encrypt_ige(data_with_hash, temp_key, _ZERO_IV)
        xor = int.from_bytes(temp_key, "big") ^ int.from_bytes(
            sha256(aes_encrypted).digest(), "big"
        )
        block = xor.to_bytes(32, "big") + aes_encrypted
        if int.from_bytes(block, "big") < key.n:  # else retry with another temp_key
            return _rsa_public(key, block)


# --------------------------------------------------------------------------- client


class HandshakeClient:
    """Client end of one auth-key handshake (see the module doc)."""

    def __init__(
        self,
        server_public_keys: dict[int, PublicKey],
        *,
        temp_expires_in: int | None = None,
        dc_id: int | None = None,
        rsa_pad: bool = False,
    ) -> None:
        if not server_public_keys:
            raise ValueError("at least one server public key is required")
        self.server_public_keys = dict(server_public_keys)
        self.temp_expires_in = temp_expires_in
        self.dc_id = dc_id
        self.rsa_pad = rsa_pad
        self.result: ClientResult | None = None
        # Handshake values, public so tests and fuzzers can forge their own packets.
        self.nonce = b""
        self.server_nonce = b""
        self.new_nonce = b""
        self.pq = 0
        self.p = 0
        self.q = 0
        self.fingerprint = 0
        self.tmp_key = b""
        self.tmp_iv = b""
        self.g_a = 0
        self.server_time = 0
        self._time_offset = 0
        self.retry_id = 0
        self.retries = 0
        self.auth_key = b""  # the key offered in the last set_client_DH_params
        self._stage = "new"
        self._last_msg_id = 0

    # ----------------------------------------------------------------- packets

    def message_id(self, now: float | None = None) -> int:
        """A client message_id: ~ now * 2^32, divisible by 4, strictly increasing."""
        t = time.time() if now is None else now
        msg_id = int(t * 4294967296.0) & ~3
        if msg_id <= self._last_msg_id:
            msg_id = self._last_msg_id + 4
        self._last_msg_id = msg_id
        return msg_id

    def pack(self, request: TLFunction | bytes, now: float | None = None) -> bytes:
        """Wrap a request (or raw message_data) in an unencrypted packet."""
        data = request if isinstance(request, bytes) else request.to_bytes()
        return pack_plain(self.message_id(now), data)

    def start(self, now: float | None = None) -> bytes:
        """The req_pq_multi packet that opens the handshake."""
        self.nonce = os.urandom(16)
        self._stage = "res_pq"
        return self.pack(functions.ReqPqMulti(self.nonce), now)

    def receive(self, packet: bytes, now: float | None = None) -> bytes | None:
        """Take the server's answer; return the next packet, or None once ``result`` is set."""
        plain = unpack_plain(packet)
        if plain is None:
            raise HandshakeError("malformed unencrypted packet")
        message_id, data = plain
        if message_id & 3 != 1:
            raise HandshakeError("server message_id is not 1 mod 4")
        try:
            answer = decode(data)
        except TLDecodeError as exc:
            raise HandshakeError(f"undecodable answer: {exc}") from exc
        t = time.time() if now is None else now
        if self._stage == "res_pq" and isinstance(answer, types.ResPQ):
            return self._on_res_pq(answer, t)
        if self._stage == "dh_params" and isinstance(answer, types.ServerDHParamsOk):
            return self._on_server_dh_params(answer, t)
        if self._stage == "dh_gen" and isinstance(
            answer, types.DhGenOk | types.DhGenRetry | types.DhGenFail
        ):
            return self._on_dh_gen(answer, t)
        raise HandshakeError(f"unexpected {type(answer).__name__} in stage {self._stage}")

    # ----------------------------------------------------------------- inner data

    def inner_data(self) -> bytes:
        """The p_q_inner_data* variant chosen by ``temp_expires_in`` / ``dc_id``."""
        pq, p, q = int_to_bytes_be(self.pq), int_to_bytes_be(self.p), int_to_bytes_be(self.q)
        args = (pq, p, q, self.nonce, self.server_nonce, self.new_nonce)
        obj: TLObject
        if self.temp_expires_in is not None and self.dc_id is not None:
            obj = types.PQInnerDataTempDc(*args, self.dc_id, self.temp_expires_in)
        elif self.temp_expires_in is not None:
            obj = types.PQInnerDataTemp(*args, self.temp_expires_in)
        elif self.dc_id is not None:
            obj = types.PQInnerDataDc(*args, self.dc_id)
        else:
            obj = types.PQInnerData(*args)
        return obj.to_bytes()

    def encrypt_inner_data(self, data: bytes) -> bytes:
        """RSA-encrypt p_q_inner_data with the chosen key and scheme."""
        key = self.server_public_keys[self.fingerprint]
        return rsa_encrypt_pad(key, data) if self.rsa_pad else rsa_encrypt_old(key, data)

    def client_dh_params(
        self, g_b: int, retry_id: int | None = None
    ) -> functions.SetClientDHParams:
        """set_client_DH_params carrying ``g_b`` (any value: fuzzers send bad ones on purpose)."""
        inner = types.ClientDHInnerData(
            self.nonce,
            self.server_nonce,
            self.retry_id if retry_id is None else retry_id,
            int_to_bytes_be(g_b),
        ).to_bytes()
        with_hash = sha1(inner).digest() + inner
        with_hash += os.urandom(-len(with_hash) % 16)
        encrypted = encrypt_ige(with_hash, self.tmp_key, self.tmp_iv)
        return functions.SetClientDHParams(self.nonce, self.server_nonce, encrypted)

    # ----------------------------------------------------------------- steps

    def _on_res_pq(self, res: types.ResPQ, now: float) -> bytes:
        if res.nonce != self.nonce:
            raise HandshakeError("resPQ nonce mismatch")
        for fp in res.server_public_key_fingerprints:
            if fp in self.server_public_keys:
                self.fingerprint = fp
                break
        else:
            raise HandshakeError("no known RSA key among the server's fingerprints")
        self.server_nonce = res.server_nonce
        self.pq = bytes_to_int_be(res.pq)
        self.p, self.q = factorize_pq(self.pq)
        self.new_nonce = os.urandom(32)
        encrypted = self.encrypt_inner_data(self.inner_data())
        self._stage = "dh_params"
        request = functions.ReqDHParams(
            self.nonce,
            self.server_nonce,
            int_to_bytes_be(self.p),
            int_to_bytes_be(self.q),
            self.fingerprint,
            encrypted,
        )
        return self.pack(request, now)

    def _on_server_dh_params(self, res: types.ServerDHParamsOk, now: float) -> bytes:
        if res.nonce != self.nonce or res.server_nonce != self.server_nonce:
            raise HandshakeError("server_DH_params_ok nonce mismatch")
        enc = res.encrypted_answer
        if not enc or len(enc) % 16:
            raise HandshakeError("encrypted_answer is not a multiple of 16 bytes")
        self.tmp_key, self.tmp_iv = tmp_aes_key_iv(self.new_nonce, self.server_nonce)
        plain = decrypt_ige(enc, self.tmp_key, self.tmp_iv)
        try:
            inner, end = decode_prefix(plain, 20)
        except TLDecodeError as exc:
            raise HandshakeError(f"undecodable server_DH_inner_data: {exc}") from exc
        if not isinstance(inner, types.ServerDHInnerData):
            raise HandshakeError("encrypted_answer is not server_DH_inner_data")
        if len(plain) - end > 15 or sha1(plain[20:end]).digest() != plain[:20]:
            raise HandshakeError("server_DH_inner_data hash mismatch")
        if inner.nonce != self.nonce or inner.server_nonce != self.server_nonce:
            raise HandshakeError("server_DH_inner_data nonce mismatch")
        if inner.g != DH_G or bytes_to_int_be(inner.dh_prime) != DH_PRIME:
            raise HandshakeError("unexpected DH group")
        g_a = bytes_to_int_be(inner.g_a)
        if not check_g_b(g_a):
            raise HandshakeError("g_a out of range")
        self.g_a = g_a
        self.server_time = inner.server_time
        self._time_offset = inner.server_time - int(now)
        return self._send_g_b(now)

    def _send_g_b(self, now: float) -> bytes:
        b, g_b = generate_dh_pair()  # same group and range rules as the server's a, g_a
        self.auth_key = compute_auth_key(self.g_a, b)
        self._stage = "dh_gen"
        return self.pack(self.client_dh_params(g_b), now)

    def _on_dh_gen(
        self, res: types.DhGenOk | types.DhGenRetry | types.DhGenFail, now: float
    ) -> bytes | None:
        if res.nonce != self.nonce or res.server_nonce != self.server_nonce:
            raise HandshakeError("dh_gen nonce mismatch")
        if isinstance(res, types.DhGenOk):
            if res.new_nonce_hash1 != new_nonce_hash(self.new_nonce, self.auth_key, 1):
                raise HandshakeError("dh_gen_ok new_nonce_hash1 mismatch")
            salt = int.from_bytes(self.new_nonce[:8], "little") ^ int.from_bytes(
                self.server_nonce[:8], "little"
            )
            self.result = ClientResult(
                auth_key=self.auth_key,
                auth_key_id=auth_key_id(self.auth_key),
                server_salt=salt - (1 << 64) if salt >= 1 << 63 else salt,
                time_offset=self._time_offset,
                retries=self.retries,
            )
            self._stage = "done"
            return None
        if isinstance(res, types.DhGenRetry):
            if res.new_nonce_hash2 != new_nonce_hash(self.new_nonce, self.auth_key, 2):
                raise HandshakeError("dh_gen_retry new_nonce_hash2 mismatch")
            self.retry_id = int.from_bytes(auth_key_aux_hash(self.auth_key), "little", signed=True)
            self.retries += 1
            return self._send_g_b(now)
        if res.new_nonce_hash3 != new_nonce_hash(self.new_nonce, self.auth_key, 3):
            raise HandshakeError("dh_gen_fail new_nonce_hash3 mismatch")
        raise HandshakeError("server answered dh_gen_fail")
