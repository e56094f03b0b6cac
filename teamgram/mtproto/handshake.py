"""The server side of auth-key creation (https://core.telegram.org/mtproto/auth_key), sans-IO.

One :class:`HandshakeServer` per connection takes the unencrypted packets
(``auth_key_id = 0 | message_id | message_data_length | message_data``) and
answers them::

    req_pq_multi / req_pq     -> resPQ                (fresh server_nonce and pq)
    req_DH_params             -> server_DH_params_ok  (RSA decrypt, g_a)
    set_client_DH_params      -> candidate key        (host checks auth_key_id is free)
    confirm(taken)            -> dh_gen_ok / dh_gen_retry

Nothing here does I/O or reads a clock: ``now`` (unix seconds) is passed in.
Each instance owns all of its state (the RSA keys are immutable), so a host may
run :meth:`HandshakeServer.receive` in a thread pool; the two heavy steps are
req_DH_params (RSA private op + g^a) and set_client_DH_params (g_b^a).

Every protocol violation (wrong nonces, bad p/q, unknown fingerprint, bad
padding or hash, a step out of order) yields ``HandshakeStep(error=True)``;
the host answers -404 and closes. ``receive`` never raises on hostile input.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha1
from typing import Any

from teamgram.mtproto.crypto.aes import decrypt_ige, encrypt_ige
from teamgram.mtproto.crypto.dh import DH_G, DH_PRIME, DH_PRIME_BYTES, check_g_b, generate_dh_pair
from teamgram.mtproto.crypto.kdf import (
    auth_key_aux_hash,
    auth_key_id,
    ct_eq,
    new_nonce_hash,
    tmp_aes_key_iv,
)
from teamgram.mtproto.crypto.modexp import powmod
from teamgram.mtproto.crypto.pq import bytes_to_int_be, generate_pq, int_to_bytes_be
from teamgram.mtproto.crypto.rsa import ServerKey, decrypt_inner_data
from teamgram.tl import TLDecodeError, decode_prefix, functions, types

__all__ = [
    "HANDSHAKE_TTL",
    "MAX_DH_RETRIES",
    "HandshakeServer",
    "HandshakeStep",
    "NewAuthKey",
    "pack_plain",
    "unpack_plain",
]

HANDSHAKE_TTL = 600.0
"""Seconds a handshake (and its cached answers) lives after req_pq; the spec's 10 minutes."""
MAX_DH_RETRIES = 3
"""dh_gen_retry answers per handshake; a 64-bit auth_key_id collision twice is not chance."""
MAX_PLAIN_PACKET = 1024
"""Largest unencrypted packet accepted: req_DH_params, the biggest request, is ~340 bytes."""
_MAX_TRAILING = 15  # padded intermediate appends 0..15 random bytes after the packet

_PLAIN_HEADER = struct.Struct("<qqi")  # auth_key_id, message_id, message_data_length
_U64 = 1 << 64

_REQ_PQ_MULTI = functions.ReqPqMulti.CONSTRUCTOR_ID
_REQ_PQ = functions.ReqPq.CONSTRUCTOR_ID
_REQ_DH_PARAMS = functions.ReqDHParams.CONSTRUCTOR_ID
_SET_CLIENT_DH = functions.SetClientDHParams.CONSTRUCTOR_ID
_REQUESTS = frozenset({_REQ_PQ_MULTI, _REQ_PQ, _REQ_DH_PARAMS, _SET_CLIENT_DH})
_INNER_DATA = frozenset(
    {
        types.PQInnerData.CONSTRUCTOR_ID,
        types.PQInnerDataDc.CONSTRUCTOR_ID,
        types.PQInnerDataTemp.CONSTRUCTOR_ID,
        types.PQInnerDataTempDc.CONSTRUCTOR_ID,
    }
)
_CLIENT_DH_INNER = types.ClientDHInnerData.CONSTRUCTOR_ID
_CID = struct.Struct("<I")


# --------------------------------------------------------------------------- envelope


def pack_plain(message_id: int, message_data: bytes) -> bytes:
    """An unencrypted MTProto packet: auth_key_id 0, message_id, length, data."""
    return _PLAIN_HEADER.pack(0, message_id, len(message_data)) + message_data


def unpack_plain(packet: bytes) -> tuple[int, bytes] | None:
    """(message_id, message_data) of an unencrypted packet, or None if it is malformed.

    Up to 15 trailing bytes are ignored: the padded-intermediate transport
    hands its random padding to the MTProto layer.
    """
    n = len(packet)
    if n < _PLAIN_HEADER.size or n > MAX_PLAIN_PACKET:
        return None
    key_id, message_id, length = _PLAIN_HEADER.unpack_from(packet)
    if key_id != 0 or length <= 0 or length & 3:
        return None
    extra = n - _PLAIN_HEADER.size - length
    if not 0 <= extra <= _MAX_TRAILING:
        return None
    return message_id, packet[_PLAIN_HEADER.size : _PLAIN_HEADER.size + length]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class NewAuthKey:
    """A freshly agreed key, not yet in use: the host must check ``auth_key_id`` is free."""

    auth_key: bytes
    """256 bytes."""
    auth_key_id: int
    """Signed int64, as in the header of encrypted packets."""
    expires_at: int | None
    """Temp keys (p_q_inner_data_temp*): unix time the key dies; None for a permanent key."""
    dc_id: int | None
    """DC the client meant (``*_dc`` inner data; negative for test/media DCs), else None."""
    server_salt: int
    """First salt: new_nonce[0:8] XOR server_nonce[0:8], signed LE int64."""

    @property
    def is_temp(self) -> bool:
        """True for a temporary key (to be bound with auth.bindTempAuthKey)."""
        return self.expires_at is not None


@dataclass(frozen=True, slots=True)
class HandshakeStep:
    """What the host does after :meth:`HandshakeServer.receive` or ``confirm``."""

    reply: bytes | None = None
    """A complete unencrypted packet to send back (before transport framing)."""
    candidate: NewAuthKey | None = None
    """set_client_DH_params succeeded: check ``auth_key_id`` is not taken, then confirm()."""
    error: bool = False
    """Protocol violation: answer -404 and close the connection."""
    reason: str = ""
    """Why ``error`` is set (for logs and tests; never sent to the client)."""


class _Reject(Exception):
    """Internal: the packet breaks the protocol; ``args[0]`` is the reason."""


class _Stage(enum.Enum):
    AWAIT_DH_PARAMS = enum.auto()  # resPQ sent
    AWAIT_CLIENT_DH = enum.auto()  # server_DH_params_ok (or dh_gen_retry) sent
    AWAIT_CONFIRM = enum.auto()  # candidate handed to the host
    DONE = enum.auto()  # dh_gen_ok or dh_gen_fail sent: only cached repeats are answered


class _Handshake:
    """State of the one handshake a connection may run at a time."""

    __slots__ = (
        "a",
        "answers",
        "candidate",
        "dc_id",
        "expires_in",
        "new_nonce",
        "nonce",
        "pending_request",
        "pq",
        "retries",
        "retry_id",
        "server_nonce",
        "stage",
        "started",
        "tmp_iv",
        "tmp_key",
    )

    def __init__(self, nonce: bytes, started: float) -> None:
        self.nonce = nonce
        self.server_nonce = os.urandom(16)
        self.pq = generate_pq()
        self.started = started
        self.stage = _Stage.AWAIT_DH_PARAMS
        # message_data of each answered request -> the answer's message_data
        self.answers: dict[bytes, bytes] = {}
        self.new_nonce = b""
        self.tmp_key = b""
        self.tmp_iv = b""
        self.a = 0
        self.expires_in: int | None = None
        self.dc_id: int | None = None
        self.retry_id = 0  # what the next client_DH_inner_data.retry_id must be
        self.retries = 0
        self.candidate: NewAuthKey | None = None
        self.pending_request = b""  # set_client_DH_params awaiting confirm()

    def finish(self) -> None:
        """dh_gen_ok/fail sent: keep only the cached answers, drop the secrets early."""
        self.stage = _Stage.DONE
        self.a = 0
        self.tmp_key = self.tmp_iv = self.new_nonce = b""


def _signed64(x: int) -> int:
    return x - _U64 if x >= 1 << 63 else x


def _server_salt(new_nonce: bytes, server_nonce: bytes) -> int:
    x = int.from_bytes(new_nonce[:8], "little") ^ int.from_bytes(server_nonce[:8], "little")
    return _signed64(x)


def _retry_id(auth_key: bytes) -> int:
    """retry_id after dh_gen_retry: auth_key_aux_hash of the rejected key as LE int64."""
    return int.from_bytes(auth_key_aux_hash(auth_key), "little", signed=True)


def _decode_exact(data: bytes, allowed: frozenset[int], what: str) -> Any:
    """Decode one object that must fill ``data``; the id is checked first (no gzip detours)."""
    if len(data) < 4 or _CID.unpack_from(data)[0] not in allowed:
        raise _Reject(f"unexpected {what}")
    obj, end = decode_prefix(data)
    if end != len(data):
        raise _Reject(f"trailing bytes after {what}")
    return obj


class HandshakeServer:
    """Server end of the auth-key handshake for one connection (see the module doc)."""

    __slots__ = ("_hs", "_keys", "_last_msg_id")

    def __init__(self, keys: Sequence[ServerKey], *, now: float) -> None:
        if not keys:
            raise ValueError("at least one server RSA key is required")
        self._keys = {k.fingerprint: k for k in keys}
        self._hs: _Handshake | None = None
        self._last_msg_id = self._msg_id_floor(now) - 4

    # ----------------------------------------------------------------- public

    @property
    def fingerprints(self) -> list[int]:
        """Fingerprints announced in resPQ (signed int64)."""
        return list(self._keys)

    @property
    def awaiting_confirm(self) -> bool:
        """True between a ``candidate`` step and :meth:`confirm`."""
        return self._hs is not None and self._hs.stage is _Stage.AWAIT_CONFIRM

    def receive(self, packet: bytes, now: float) -> HandshakeStep:
        """Handle one unencrypted packet (auth_key_id 0); never raises on bad input."""
        try:
            return self._receive(packet, now)
        except _Reject as exc:
            return HandshakeStep(error=True, reason=str(exc.args[0]))
        except (TLDecodeError, ValueError, struct.error) as exc:
            return HandshakeStep(error=True, reason=f"malformed: {exc}")

    def confirm(self, taken: bool, now: float) -> HandshakeStep:
        """Finish set_client_DH_params after the host looked the candidate's auth_key_id up.

        ``taken=False``: the key is the client's, answer dh_gen_ok.
        ``taken=True``: answer dh_gen_retry; the client retries with a new g_b
        (and retry_id = auth_key_aux_hash of this key), we keep ``a``.
        Raises ``RuntimeError`` if no candidate is pending (a host bug).
        """
        hs = self._hs
        if hs is None or hs.stage is not _Stage.AWAIT_CONFIRM or hs.candidate is None:
            raise RuntimeError("confirm() without a pending candidate")
        key = hs.candidate.auth_key
        request = hs.pending_request
        hs.candidate = None
        hs.pending_request = b""
        answer: types.DhGenOk | types.DhGenRetry
        if not taken:
            answer = types.DhGenOk(hs.nonce, hs.server_nonce, new_nonce_hash(hs.new_nonce, key, 1))
            hs.finish()
        else:
            if hs.retries >= MAX_DH_RETRIES:
                self._hs = None
                return HandshakeStep(error=True, reason="too many dh_gen_retry")
            hs.retries += 1
            hs.retry_id = _retry_id(key)
            answer = types.DhGenRetry(
                hs.nonce, hs.server_nonce, new_nonce_hash(hs.new_nonce, key, 2)
            )
            hs.stage = _Stage.AWAIT_CLIENT_DH
        body = answer.to_bytes()
        hs.answers[request] = body
        return HandshakeStep(reply=self._pack(body, now))

    # ----------------------------------------------------------------- dispatch

    def _receive(self, packet: bytes, now: float) -> HandshakeStep:
        plain = unpack_plain(packet)
        if plain is None:
            raise _Reject("bad unencrypted packet")
        message_id, data = plain
        if message_id == 0 or message_id & 3:
            raise _Reject("bad client message_id")

        hs = self._hs
        if hs is not None and now - hs.started > HANDSHAKE_TTL:
            hs = self._hs = None  # forgotten, like the spec's 10-minute memory
        if hs is not None:
            cached = hs.answers.get(data)
            if cached is not None:
                return HandshakeStep(reply=self._pack(cached, now))
            if hs.stage is _Stage.AWAIT_CONFIRM:
                if data == hs.pending_request:
                    return HandshakeStep()  # a resend: the answer goes out with confirm()
                raise _Reject("request while a key awaits confirm()")

        request = _decode_exact(data, _REQUESTS, "request")
        if isinstance(request, functions.ReqPqMulti | functions.ReqPq):
            return self._req_pq(request.nonce, data, now)
        if hs is None:
            raise _Reject("no handshake in progress")
        if request.nonce != hs.nonce or request.server_nonce != hs.server_nonce:
            raise _Reject("nonce mismatch")
        if isinstance(request, functions.ReqDHParams):
            if hs.stage is not _Stage.AWAIT_DH_PARAMS:
                raise _Reject("req_DH_params out of order")
            return self._req_dh_params(hs, request, data, now)
        assert isinstance(request, functions.SetClientDHParams)
        if hs.stage is not _Stage.AWAIT_CLIENT_DH:
            raise _Reject("set_client_DH_params out of order")
        return self._set_client_dh_params(hs, request, data, now)

    # ----------------------------------------------------------------- steps

    def _req_pq(self, nonce: bytes, data: bytes, now: float) -> HandshakeStep:
        """Start a new handshake (dropping any previous one) and answer resPQ."""
        hs = self._hs = _Handshake(nonce, now)
        pq, _, _ = hs.pq
        body = types.ResPQ(nonce, hs.server_nonce, int_to_bytes_be(pq), self.fingerprints)
        hs.answers[data] = raw = body.to_bytes()
        return HandshakeStep(reply=self._pack(raw, now))

    def _req_dh_params(
        self, hs: _Handshake, req: functions.ReqDHParams, data: bytes, now: float
    ) -> HandshakeStep:
        """Check the pq proof of work, decrypt p_q_inner_data*, answer server_DH_params_ok."""
        pq, p, q = hs.pq
        if bytes_to_int_be(req.p) != p or bytes_to_int_be(req.q) != q:
            raise _Reject("wrong p/q")
        key = self._keys.get(req.public_key_fingerprint)
        if key is None:
            raise _Reject("unknown RSA fingerprint")
        inner = decrypt_inner_data(key, req.encrypted_data)
        if inner is None:
            raise _Reject("cannot decrypt encrypted_data")
        if len(inner.data) < 4 or _CID.unpack_from(inner.data)[0] not in _INNER_DATA:
            raise _Reject("encrypted_data is not p_q_inner_data")
        obj, end = decode_prefix(inner.data)
        if not inner.verify(end):
            raise _Reject("p_q_inner_data hash mismatch")
        if (
            bytes_to_int_be(obj.pq) != pq
            or bytes_to_int_be(obj.p) != p
            or bytes_to_int_be(obj.q) != q
            or obj.nonce != hs.nonce
            or obj.server_nonce != hs.server_nonce
        ):
            raise _Reject("p_q_inner_data does not match the handshake")
        expires_in: int | None = getattr(obj, "expires_in", None)
        if expires_in is not None and expires_in <= 0:
            raise _Reject("bad expires_in")

        hs.new_nonce = obj.new_nonce
        hs.expires_in = expires_in
        hs.dc_id = getattr(obj, "dc", None)
        hs.tmp_key, hs.tmp_iv = tmp_aes_key_iv(hs.new_nonce, hs.server_nonce)
        hs.a, g_a = generate_dh_pair()

        answer = types.ServerDHInnerData(
            hs.nonce, hs.server_nonce, DH_G, DH_PRIME_BYTES, g_a.to_bytes(256, "big"), int(now)
        ).to_bytes()
        with_hash = sha1(answer).digest() + answer
        with_hash += os.urandom(-len(with_hash) % 16)
        encrypted = encrypt_ige(with_hash, hs.tmp_key, hs.tmp_iv)
        body = types.ServerDHParamsOk(hs.nonce, hs.server_nonce, encrypted).to_bytes()
        hs.answers[data] = body
        hs.stage = _Stage.AWAIT_CLIENT_DH
        return HandshakeStep(reply=self._pack(body, now))

    def _set_client_dh_params(
        self, hs: _Handshake, req: functions.SetClientDHParams, data: bytes, now: float
    ) -> HandshakeStep:
        """Decrypt client_DH_inner_data, check g_b, derive the key (or answer dh_gen_fail)."""
        enc = req.encrypted_data
        if not enc or len(enc) % 16 or len(enc) > 512:
            raise _Reject("bad encrypted_data length")
        plain = decrypt_ige(enc, hs.tmp_key, hs.tmp_iv)
        digest, body = plain[:20], plain[20:]
        if len(body) < 4 or _CID.unpack_from(body)[0] != _CLIENT_DH_INNER:
            raise _Reject("encrypted_data is not client_DH_inner_data")
        inner, end = decode_prefix(body)
        if len(body) - end > _MAX_TRAILING or not ct_eq(sha1(body[:end]).digest(), digest):
            raise _Reject("client_DH_inner_data hash mismatch")
        if inner.nonce != hs.nonce or inner.server_nonce != hs.server_nonce:
            raise _Reject("client_DH_inner_data nonce mismatch")
        if inner.retry_id != hs.retry_id:
            raise _Reject("wrong retry_id")

        g_b = bytes_to_int_be(inner.g_b)
        if not check_g_b(g_b):
            # The client derives its key as g_a^b = g_b^a (mod p): hash3 proves we saw its g_b.
            shared = powmod(g_b, hs.a, DH_PRIME).to_bytes(256, "big")
            fail = types.DhGenFail(
                hs.nonce, hs.server_nonce, new_nonce_hash(hs.new_nonce, shared, 3)
            )
            raw = fail.to_bytes()
            hs.answers[data] = raw
            hs.finish()
            return HandshakeStep(reply=self._pack(raw, now))

        auth_key = powmod(g_b, hs.a, DH_PRIME).to_bytes(256, "big")
        candidate = NewAuthKey(
            auth_key=auth_key,
            auth_key_id=auth_key_id(auth_key),
            expires_at=None if hs.expires_in is None else int(now) + hs.expires_in,
            dc_id=hs.dc_id,
            server_salt=_server_salt(hs.new_nonce, hs.server_nonce),
        )
        hs.candidate = candidate
        hs.pending_request = data
        hs.stage = _Stage.AWAIT_CONFIRM
        return HandshakeStep(candidate=candidate)

    # ----------------------------------------------------------------- envelope

    @staticmethod
    def _msg_id_floor(now: float) -> int:
        return (int(now * 4294967296.0) & ~3) | 1

    def _pack(self, body: bytes, now: float) -> bytes:
        """Wrap an answer with a fresh server message_id (~ now * 2^32, 1 mod 4, increasing)."""
        msg_id = self._msg_id_floor(now)
        if msg_id <= self._last_msg_id:
            msg_id = self._last_msg_id + 4
        self._last_msg_id = msg_id
        return pack_plain(msg_id, body)
