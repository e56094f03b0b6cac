"""Auth-key handshake: HandshakeServer against our HandshakeClient and Telethon's real client.

Covers both RSA schemes (RSA_PAD and the old SHA1 one), every p_q_inner_data
variant, dh_gen_retry, cached answers to repeated requests, and the ways a
hostile or broken client can get it wrong (each must end in ``error=True`` or,
for a bad g_b, dh_gen_fail).
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha1
from typing import Any

import pytest
from telethon.crypto import rsa as tl_rsa
from telethon.extensions import BinaryReader
from telethon.network.authenticator import do_authentication

from teamgram.mtproto.client_handshake import (
    HandshakeClient,
    HandshakeError,
    rsa_encrypt_old,
    rsa_encrypt_pad,
)
from teamgram.mtproto.crypto.aes import encrypt_ige
from teamgram.mtproto.crypto.dh import DH_PRIME, generate_dh_pair
from teamgram.mtproto.crypto.kdf import auth_key_id, new_nonce_hash
from teamgram.mtproto.crypto.pq import int_to_bytes_be
from teamgram.mtproto.crypto.rsa import ServerKey, generate_server_key
from teamgram.mtproto.handshake import (
    HANDSHAKE_TTL,
    MAX_DH_RETRIES,
    HandshakeServer,
    HandshakeStep,
    NewAuthKey,
    pack_plain,
    unpack_plain,
)
from teamgram.tl import decode, functions, types

NOW = 1_700_000_000.0
U64 = (1 << 64) - 1


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def key() -> ServerKey:
    return generate_server_key()


@pytest.fixture(scope="module")
def other_key() -> ServerKey:
    return generate_server_key()


def new_pair(
    key: ServerKey, *, now: float = NOW, **kwargs: Any
) -> tuple[HandshakeClient, HandshakeServer]:
    return HandshakeClient({key.fingerprint: key}, **kwargs), HandshakeServer([key], now=now)


def body(packet: bytes) -> bytes:
    plain = unpack_plain(packet)
    assert plain is not None
    return plain[1]


def answer(step: HandshakeStep) -> Any:
    assert not step.error, step.reason
    assert step.reply is not None
    return decode(body(step.reply))


def run(
    client: HandshakeClient,
    server: HandshakeServer,
    *,
    now: float = NOW,
    taken: Iterator[bool] | None = None,
) -> list[NewAuthKey]:
    """Drive a full handshake; ``taken`` answers each confirm() (default: never taken)."""
    candidates: list[NewAuthKey] = []
    out: bytes | None = client.start(now)
    while out is not None:
        step = server.receive(out, now)
        assert not step.error, step.reason
        if step.candidate is not None:
            candidates.append(step.candidate)
            step = server.confirm(next(taken, False) if taken else False, now)
            assert not step.error, step.reason
        assert step.reply is not None
        out = client.receive(step.reply, now)
    return candidates


def to_dh_params(client: HandshakeClient, server: HandshakeServer) -> bytes:
    """Run up to the req_DH_params packet and return it (not yet sent)."""
    step = server.receive(client.start(NOW), NOW)
    out = client.receive(step.reply or b"", NOW)
    assert out is not None
    return out


def to_client_dh(client: HandshakeClient, server: HandshakeServer) -> bytes:
    """Run up to the set_client_DH_params packet and return it (not yet sent)."""
    step = server.receive(to_dh_params(client, server), NOW)
    out = client.receive(step.reply or b"", NOW)
    assert out is not None
    return out


def replace(packet: bytes, client: HandshakeClient, **changes: Any) -> bytes:
    """Re-pack a request packet with some fields changed."""
    req = decode(body(packet))
    fields = {f: getattr(req, f) for f in req.__slots__}
    fields.update(changes)
    return client.pack(type(req)(**fields), NOW)


def assert_error(step: HandshakeStep, reason: str = "") -> None:
    assert step.error and step.reply is None and step.candidate is None
    assert reason in step.reason


# --------------------------------------------------------------------------- happy paths

VARIANTS = {
    "plain": {},
    "dc": {"dc_id": 2},
    "temp": {"temp_expires_in": 86400},
    "temp_dc": {"temp_expires_in": 3600, "dc_id": -4},
}


@pytest.mark.parametrize("rsa_pad", [False, True], ids=["old", "rsa_pad"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_handshake_roundtrip(key: ServerKey, rsa_pad: bool, variant: str) -> None:
    opts = VARIANTS[variant]
    client, server = new_pair(key, rsa_pad=rsa_pad, **opts)
    (cand,) = run(client, server)
    res = client.result
    assert res is not None
    assert res.auth_key == cand.auth_key and len(cand.auth_key) == 256
    assert res.auth_key_id == cand.auth_key_id == auth_key_id(cand.auth_key)
    assert res.server_salt == cand.server_salt
    salt = bytes(a ^ b for a, b in zip(client.new_nonce[:8], client.server_nonce[:8], strict=True))
    assert cand.server_salt == struct.unpack("<q", salt)[0]
    assert res.time_offset == 0 and res.retries == 0
    expires_in = opts.get("temp_expires_in")
    assert cand.expires_at == (None if expires_in is None else int(NOW) + expires_in)
    assert cand.is_temp == (expires_in is not None)
    assert cand.dc_id == opts.get("dc_id")


def test_keys_differ_between_handshakes(key: ServerKey) -> None:
    (a,) = run(*new_pair(key))
    (b,) = run(*new_pair(key))
    assert a.auth_key != b.auth_key and a.server_salt != b.server_salt


def test_several_server_keys(key: ServerKey, other_key: ServerKey) -> None:
    """resPQ lists every key; the client picks the one it knows."""
    server = HandshakeServer([other_key, key], now=NOW)
    assert server.fingerprints == [other_key.fingerprint, key.fingerprint]
    client = HandshakeClient({key.fingerprint: key}, rsa_pad=True)
    (cand,) = run(client, server)
    assert client.fingerprint == key.fingerprint
    assert client.result is not None and client.result.auth_key == cand.auth_key


def test_res_pq_contents(key: ServerKey) -> None:
    client, server = new_pair(key)
    step = server.receive(client.start(NOW), NOW)
    res = answer(step)
    assert isinstance(res, types.ResPQ)
    assert res.nonce == client.nonce and len(res.server_nonce) == 16
    assert res.server_public_key_fingerprints == [key.fingerprint]
    pq = int.from_bytes(res.pq, "big")
    assert len(res.pq) == 8 and pq < 1 << 63
    # req_pq (the old request) is answered the same way
    res2 = answer(server.receive(client.pack(functions.ReqPq(os.urandom(16)), NOW), NOW))
    assert isinstance(res2, types.ResPQ) and res2.server_nonce != res.server_nonce


def test_server_dh_inner_data(key: ServerKey) -> None:
    client, server = new_pair(key)
    to_client_dh(client, server)
    assert client.server_time == int(NOW)
    assert 1 << 1984 <= client.g_a <= DH_PRIME - (1 << 1984)


def test_message_ids(key: ServerKey) -> None:
    """Server message_ids are ~ now * 2^32, 1 mod 4 and strictly increasing."""
    server = HandshakeServer([key], now=NOW)
    client = HandshakeClient({key.fingerprint: key})
    ids = []
    for _ in range(5):
        reply = server.receive(client.start(NOW), NOW).reply
        assert reply is not None
        msg_id = struct.unpack_from("<q", reply, 8)[0]
        ids.append(msg_id)
    assert all(i % 4 == 1 for i in ids)
    assert ids == sorted(set(ids))
    assert abs((ids[0] >> 32) - int(NOW)) <= 1


def test_padded_transport_trailing_bytes(key: ServerKey) -> None:
    """padded intermediate hands up to 15 random bytes after the packet to MTProto."""
    client, server = new_pair(key)
    step = server.receive(client.start(NOW) + os.urandom(15), NOW)
    assert isinstance(answer(step), types.ResPQ)
    assert_error(server.receive(client.start(NOW) + os.urandom(16), NOW))


# --------------------------------------------------------------------------- retry


def test_dh_gen_retry(key: ServerKey) -> None:
    client, server = new_pair(key, rsa_pad=True)
    cands = run(client, server, taken=iter([True, True, False]))
    assert len(cands) == 3
    assert len({c.auth_key for c in cands}) == 3
    assert client.result is not None and client.result.retries == 2
    assert client.result.auth_key == cands[-1].auth_key
    # same salt: it depends on the nonces only
    assert len({c.server_salt for c in cands}) == 1


def test_retry_needs_retry_id(key: ServerKey) -> None:
    client, server = new_pair(key)
    step = server.receive(to_client_dh(client, server), NOW)
    assert step.candidate is not None
    retry = server.confirm(True, NOW)
    assert isinstance(answer(retry), types.DhGenRetry)
    assert retry.reply is not None
    client.receive(retry.reply, NOW)  # client moves to retry_id = aux hash of the key
    assert client.retry_id != 0
    _, g_b = generate_dh_pair()
    assert_error(server.receive(client.pack(client.client_dh_params(g_b, 0), NOW), NOW), "retry")
    # and a first attempt must carry retry_id 0
    client2, server2 = new_pair(key)
    to_client_dh(client2, server2)
    bad = client2.pack(client2.client_dh_params(g_b, 12345), NOW)
    assert_error(server2.receive(bad, NOW), "retry_id")


def test_too_many_retries(key: ServerKey) -> None:
    client, server = new_pair(key)
    out: bytes | None = to_client_dh(client, server)
    for _ in range(MAX_DH_RETRIES):
        assert out is not None
        step = server.receive(out, NOW)
        assert step.candidate is not None
        retry = server.confirm(True, NOW)
        assert retry.reply is not None
        out = client.receive(retry.reply, NOW)
    assert out is not None
    assert server.receive(out, NOW).candidate is not None
    assert_error(server.confirm(True, NOW), "too many")


def test_confirm_without_candidate(key: ServerKey) -> None:
    client, server = new_pair(key)
    with pytest.raises(RuntimeError):
        server.confirm(False, NOW)
    server.receive(client.start(NOW), NOW)
    with pytest.raises(RuntimeError):
        server.confirm(False, NOW)


# --------------------------------------------------------------------------- cached answers


def test_identical_requests_get_identical_answers(key: ServerKey) -> None:
    client, server = new_pair(key)
    first = client.start(NOW)
    r1 = server.receive(first, NOW).reply
    # resent with a new message_id: same body, new (larger) server message_id
    again = pack_plain(client.message_id(NOW), body(first))
    r2 = server.receive(again, NOW + 1).reply
    assert r1 is not None and r2 is not None
    assert body(r1) == body(r2) and r1[8:16] != r2[8:16]

    dh_req = client.receive(r1, NOW)
    assert dh_req is not None
    d1 = server.receive(dh_req, NOW).reply
    d2 = server.receive(dh_req, NOW).reply
    assert d1 is not None and d2 is not None and body(d1) == body(d2)
    # the resPQ is still answered from the cache after the handshake moved on
    r3 = server.receive(first, NOW).reply
    assert r3 is not None and body(r3) == body(r1)

    set_req = client.receive(d1, NOW)
    assert set_req is not None
    step = server.receive(set_req, NOW)
    assert step.candidate is not None and server.awaiting_confirm
    # a resend while the host checks the key: nothing to send yet, no second candidate
    assert server.receive(set_req, NOW) == HandshakeStep()
    ok = server.confirm(False, NOW)
    assert ok.reply is not None
    again_ok = server.receive(set_req, NOW)
    assert again_ok.candidate is None and again_ok.reply is not None
    assert body(again_ok.reply) == body(ok.reply)
    assert client.receive(ok.reply, NOW) is None
    assert client.result is not None and client.result.auth_key == step.candidate.auth_key


def test_different_request_in_answered_step_is_an_error(key: ServerKey) -> None:
    """Only an exact repeat is answered again; a changed req_DH_params is refused."""
    client, server = new_pair(key)
    dh_req = to_dh_params(client, server)
    assert not server.receive(dh_req, NOW).error
    again = client.encrypt_inner_data(client.inner_data())  # new random padding
    assert_error(server.receive(replace(dh_req, client, encrypted_data=again), NOW), "order")


def test_request_while_awaiting_confirm(key: ServerKey) -> None:
    client, server = new_pair(key)
    step = server.receive(to_client_dh(client, server), NOW)
    assert step.candidate is not None
    assert_error(server.receive(client.pack(functions.ReqPqMulti(os.urandom(16)), NOW), NOW))


def test_new_req_pq_restarts(key: ServerKey) -> None:
    client, server = new_pair(key)
    dh_req = to_dh_params(client, server)
    client2 = HandshakeClient({key.fingerprint: key})
    assert not server.receive(client2.start(NOW), NOW).error
    assert_error(server.receive(dh_req, NOW), "nonce")
    # more keys on the same connection, one after the other (perm, then temp)
    client3 = HandshakeClient({key.fingerprint: key}, temp_expires_in=60)
    (cand,) = run(client3, server)
    client4 = HandshakeClient({key.fingerprint: key})
    (cand2,) = run(client4, server)
    assert cand.is_temp and not cand2.is_temp


def test_handshake_expires(key: ServerKey) -> None:
    client, server = new_pair(key)
    dh_req = to_dh_params(client, server)
    assert_error(server.receive(dh_req, NOW + HANDSHAKE_TTL + 1), "no handshake")


# --------------------------------------------------------------------------- req_DH_params errors


@pytest.mark.parametrize("rsa_pad", [False, True], ids=["old", "rsa_pad"])
def test_wrong_nonces(key: ServerKey, rsa_pad: bool) -> None:
    client, server = new_pair(key, rsa_pad=rsa_pad)
    dh_req = to_dh_params(client, server)
    assert_error(server.receive(replace(dh_req, client, nonce=os.urandom(16)), NOW), "nonce")
    bad = replace(dh_req, client, server_nonce=os.urandom(16))
    assert_error(server.receive(bad, NOW), "nonce")
    assert not server.receive(dh_req, NOW).error  # the real one still works


def test_wrong_p_q(key: ServerKey) -> None:
    client, server = new_pair(key)
    dh_req = to_dh_params(client, server)
    p, q = int_to_bytes_be(client.p), int_to_bytes_be(client.q)
    assert_error(server.receive(replace(dh_req, client, p=q, q=p), NOW), "p/q")
    p2 = int_to_bytes_be(client.p + 2)
    assert_error(server.receive(replace(dh_req, client, p=p2), NOW), "p/q")
    assert_error(server.receive(replace(dh_req, client, q=b""), NOW), "p/q")


def test_unknown_fingerprint(key: ServerKey, other_key: ServerKey) -> None:
    client, server = new_pair(key)
    dh_req = to_dh_params(client, server)
    bad = replace(dh_req, client, public_key_fingerprint=other_key.fingerprint)
    assert_error(server.receive(bad, NOW), "fingerprint")


def test_encrypted_with_another_key(key: ServerKey, other_key: ServerKey) -> None:
    client, server = new_pair(key)
    dh_req = to_dh_params(client, server)
    enc = rsa_encrypt_old(other_key, client.inner_data())
    while int.from_bytes(enc, "big") >= key.n:  # keep it a valid input for our modulus
        enc = rsa_encrypt_old(other_key, client.inner_data())
    assert_error(server.receive(replace(dh_req, client, encrypted_data=enc), NOW))


@pytest.mark.parametrize("rsa_pad", [False, True], ids=["old", "rsa_pad"])
def test_tampered_encrypted_data(key: ServerKey, rsa_pad: bool) -> None:
    client, server = new_pair(key, rsa_pad=rsa_pad)
    dh_req = to_dh_params(client, server)
    enc = bytearray(decode(body(dh_req)).encrypted_data)
    for pos in (1, 100, 255):
        bad = bytearray(enc)
        bad[pos] ^= 0x01
        assert_error(server.receive(replace(dh_req, client, encrypted_data=bytes(bad)), NOW))
    for bad_len in (b"", bytes(enc[:255]), bytes(enc) + b"\0", b"\xff" * 256):
        assert_error(server.receive(replace(dh_req, client, encrypted_data=bad_len), NOW))
    assert not server.receive(dh_req, NOW).error


def _old_scheme_raw(key: ServerKey, block: bytes) -> bytes:
    assert len(block) == 255
    return pow(int.from_bytes(block, "big"), key.e, key.n).to_bytes(256, "big")


def test_old_scheme_hash_must_cover_exactly_the_object(key: ServerKey) -> None:
    """SHA1 over object + padding (or a prefix) must not pass: the object's length is parsed."""
    client, server = new_pair(key)
    dh_req = to_dh_params(client, server)
    data = client.inner_data()
    pad = os.urandom(235 - len(data))
    for hashed in (data + pad, data + pad[:4], data[:-4]):
        enc = _old_scheme_raw(key, sha1(hashed).digest() + data + pad)
        assert_error(server.receive(replace(dh_req, client, encrypted_data=enc), NOW), "hash")
    good = _old_scheme_raw(key, sha1(data).digest() + data + pad)
    assert not server.receive(replace(dh_req, client, encrypted_data=good), NOW).error


@pytest.mark.parametrize("rsa_pad", [False, True], ids=["old", "rsa_pad"])
@pytest.mark.parametrize("field", ["pq", "p", "q", "nonce", "server_nonce"])
def test_inner_data_must_match(key: ServerKey, rsa_pad: bool, field: str) -> None:
    client, server = new_pair(key, rsa_pad=rsa_pad)
    dh_req = to_dh_params(client, server)
    inner = decode(client.inner_data())
    setattr(inner, field, os.urandom(16) if "nonce" in field else int_to_bytes_be(12345))
    enc = client.encrypt_inner_data(inner.to_bytes())
    assert_error(server.receive(replace(dh_req, client, encrypted_data=enc), NOW), "match")


@pytest.mark.parametrize("expires_in", [0, -1])
def test_bad_expires_in(key: ServerKey, expires_in: int) -> None:
    client, server = new_pair(key, temp_expires_in=expires_in)
    assert_error(server.receive(to_dh_params(client, server), NOW), "expires_in")


def test_encrypted_data_not_inner_data(key: ServerKey) -> None:
    """A validly encrypted object of another type (here a gzip_packed) is refused unread."""
    client, server = new_pair(key, rsa_pad=True)
    dh_req = to_dh_params(client, server)
    for obj in (types.ClientDHInnerData(client.nonce, client.server_nonce, 0, b"x"),):
        enc = rsa_encrypt_pad(key, obj.to_bytes())
        assert_error(server.receive(replace(dh_req, client, encrypted_data=enc), NOW), "p_q_inner")
    gz = struct.pack("<I", 0x3072CFA1) + bytes([8]) + os.urandom(8) + bytes(3)
    enc = rsa_encrypt_old(key, gz)
    assert_error(server.receive(replace(dh_req, client, encrypted_data=enc), NOW), "p_q_inner")


# --------------------------------------------------------------- set_client_DH_params errors


@pytest.mark.parametrize(
    "g_b",
    [
        0,
        1,
        2,
        DH_PRIME - 1,
        DH_PRIME,
        DH_PRIME + 5,
        (1 << 1984) - 1,
        DH_PRIME - (1 << 1984) + 1,
    ],
    ids=["0", "1", "2", "p-1", "p", "p+5", "low-margin", "high-margin"],
)
def test_g_b_out_of_range_dh_gen_fail(key: ServerKey, g_b: int) -> None:
    client, server = new_pair(key)
    to_client_dh(client, server)
    forged = client.pack(client.client_dh_params(g_b), NOW)
    step = server.receive(forged, NOW)
    assert step.candidate is None and not step.error
    fail = answer(step)
    assert isinstance(fail, types.DhGenFail)
    assert fail.nonce == client.nonce and fail.server_nonce == client.server_nonce
    if g_b in (0, 1):  # g_b^a is then known without a
        shared = g_b.to_bytes(256, "big")
        assert fail.new_nonce_hash3 == new_nonce_hash(client.new_nonce, shared, 3)
    # the handshake is over: only the cached answer comes back
    again = server.receive(forged, NOW)
    assert again.reply is not None and step.reply is not None
    assert body(again.reply) == body(step.reply)
    _, good = generate_dh_pair()
    assert_error(server.receive(client.pack(client.client_dh_params(good), NOW), NOW), "order")


def test_client_sees_dh_gen_fail(key: ServerKey) -> None:
    """Our client checks hash3 against the key it derived and reports dh_gen_fail."""
    client, server = new_pair(key)
    to_client_dh(client, server)
    forged = client.pack(client.client_dh_params(1), NOW)
    reply = server.receive(forged, NOW).reply
    assert reply is not None
    client.auth_key = bytes(255) + b"\x01"  # the key a client sending g_b=1 would "derive"
    with pytest.raises(HandshakeError, match="dh_gen_fail"):
        client.receive(reply, NOW)


def test_set_client_dh_params_tampered(key: ServerKey) -> None:
    client, server = new_pair(key)
    set_req = to_client_dh(client, server)
    enc = decode(body(set_req)).encrypted_data
    for bad in (
        enc[:-16],
        enc + bytes(16),
        enc[:-1],
        bytes([enc[0] ^ 1]) + enc[1:],
        enc[:40] + bytes([enc[40] ^ 1]) + enc[41:],
        b"",
        bytes(1024),
    ):
        assert_error(server.receive(replace(set_req, client, encrypted_data=bad), NOW))
    bad_nonce = replace(set_req, client, server_nonce=os.urandom(16))
    assert_error(server.receive(bad_nonce, NOW), "nonce")
    assert server.receive(set_req, NOW).candidate is not None


def test_set_client_dh_params_bad_inner(key: ServerKey) -> None:
    """Correctly encrypted, but wrong hash / nonces / type inside."""
    client, server = new_pair(key)
    to_client_dh(client, server)
    _, g_b = generate_dh_pair()
    g_b_bytes = int_to_bytes_be(g_b)

    def send_inner(inner: bytes, digest: bytes | None = None) -> HandshakeStep:
        data = (sha1(inner).digest() if digest is None else digest) + inner
        data += os.urandom(-len(data) % 16)
        enc = encrypt_ige(data, client.tmp_key, client.tmp_iv)
        req = functions.SetClientDHParams(client.nonce, client.server_nonce, enc)
        return server.receive(client.pack(req, NOW), NOW)

    good = types.ClientDHInnerData(client.nonce, client.server_nonce, 0, g_b_bytes).to_bytes()
    assert_error(send_inner(good, bytes(20)), "hash")
    assert_error(send_inner(good + bytes(16)), "hash")  # 16 bytes of "padding" is too many
    wrong = types.ClientDHInnerData(os.urandom(16), client.server_nonce, 0, g_b_bytes)
    assert_error(send_inner(wrong.to_bytes()), "nonce")
    other = types.ServerDHParamsFail(client.nonce, client.server_nonce, bytes(16))
    assert_error(send_inner(other.to_bytes()), "client_DH_inner_data")
    assert send_inner(good).candidate is not None


# --------------------------------------------------------------------------- order and framing


def test_out_of_order(key: ServerKey) -> None:
    client = HandshakeClient({key.fingerprint: key})
    set_req = to_client_dh(client, HandshakeServer([key], now=NOW))
    assert_error(HandshakeServer([key], now=NOW).receive(set_req, NOW), "no handshake")

    client, server = new_pair(key)
    dh_req = to_dh_params(client, server)
    assert_error(HandshakeServer([key], now=NOW).receive(dh_req, NOW), "no handshake")
    # set_client_DH_params right after resPQ
    forged = functions.SetClientDHParams(client.nonce, client.server_nonce, bytes(336))
    assert_error(server.receive(client.pack(forged, NOW), NOW), "order")
    # answers and other functions are not handshake requests
    res = types.ResPQ(client.nonce, client.server_nonce, b"\x01", [1])
    assert_error(server.receive(client.pack(res.to_bytes(), NOW), NOW), "request")
    assert_error(server.receive(client.pack(functions.Ping(1), NOW), NOW), "request")
    assert not server.receive(dh_req, NOW).error


def test_bad_envelopes(key: ServerKey) -> None:
    server = HandshakeServer([key], now=NOW)
    data = functions.ReqPqMulti(os.urandom(16)).to_bytes()
    msg_id = int(NOW * 2**32) & ~3
    cases = {
        "msg_id 0": struct.pack("<qqi", 0, 0, len(data)) + data,
        "msg_id odd": struct.pack("<qqi", 0, msg_id | 1, len(data)) + data,
        "msg_id 2 mod 4": struct.pack("<qqi", 0, msg_id | 2, len(data)) + data,
        "auth_key_id": struct.pack("<qqi", 7, msg_id, len(data)) + data,
        "short length": struct.pack("<qqi", 0, msg_id, len(data) - 4) + data,
        "long length": struct.pack("<qqi", 0, msg_id, len(data) + 4) + data,
        "zero length": struct.pack("<qqi", 0, msg_id, 0),
        "negative length": struct.pack("<qqi", 0, msg_id, -4) + data,
        "unaligned": struct.pack("<qqi", 0, msg_id, len(data) - 1) + data,
        "truncated header": bytes(19),
        "empty": b"",
        "huge": struct.pack("<qqi", 0, msg_id, 2000) + bytes(2000),
        "truncated body": struct.pack("<qqi", 0, msg_id, 16) + data[:16],
        "trailing in body": struct.pack("<qqi", 0, msg_id, len(data) + 4) + data + bytes(4),
    }
    for name, packet in cases.items():
        step = server.receive(packet, NOW)
        assert step.error and step.reply is None, name
    ok = struct.pack("<qqi", 0, msg_id, len(data)) + data
    assert not server.receive(ok, NOW).error


def test_garbage_never_raises(key: ServerKey) -> None:
    """Random and mutated packets give error steps (or answers), never exceptions."""
    rng = random.Random(1234)
    client, server = new_pair(key)
    valid = [client.start(NOW)]
    valid.append(client.receive(server.receive(valid[0], NOW).reply or b"", NOW) or b"")
    valid.append(client.receive(server.receive(valid[1], NOW).reply or b"", NOW) or b"")
    for i in range(600):
        base = valid[i % 3]
        mutated = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(20, len(mutated))] = rng.randrange(256)
        fresh = HandshakeServer([key], now=NOW)
        for pkt in valid[: i % 3]:
            fresh.receive(pkt, NOW)
        step = fresh.receive(bytes(mutated), NOW)
        assert isinstance(step, HandshakeStep)
        if i % 10 == 0:
            step = fresh.receive(rng.randbytes(rng.randrange(0, 400)), NOW)
            assert isinstance(step, HandshakeStep)


def test_parallel_servers_in_threads(key: ServerKey) -> None:
    """Instances share no mutable state, so hosts may run steps in an executor."""

    def one(i: int) -> bool:
        client, server = new_pair(key, rsa_pad=bool(i & 1))
        (cand,) = run(client, server)
        return client.result is not None and client.result.auth_key == cand.auth_key

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(16)))


# --------------------------------------------------------------------------- Telethon


class FakePlainSender:
    """Stands in for Telethon's MTProtoPlainSender, with HandshakeServer as the network."""

    def __init__(self, server: HandshakeServer, *, taken: bool = False) -> None:
        self.server = server
        self.taken = taken
        self.candidates: list[NewAuthKey] = []
        self.last_msg_id = 0

    async def send(self, request: Any) -> Any:
        data = bytes(request)
        now = time.time()
        msg_id = max(int(now * 2**32) & ~3, self.last_msg_id + 4)
        self.last_msg_id = msg_id
        step = self.server.receive(struct.pack("<qqi", 0, msg_id, len(data)) + data, now)
        assert not step.error, step.reason
        if step.candidate is not None:
            self.candidates.append(step.candidate)
            step = self.server.confirm(self.taken, now)
        assert step.reply is not None
        key_id, reply_id, length = struct.unpack_from("<qqi", step.reply)
        assert key_id == 0 and reply_id % 4 == 1 and length == len(step.reply) - 20
        return BinaryReader(step.reply[20 : 20 + length]).tgread_object()


@pytest.fixture
def telethon_key(key: ServerKey) -> Iterator[ServerKey]:
    tl_rsa.add_key(key.public_pem().encode(), old=False)
    try:
        yield key
    finally:
        tl_rsa._server_keys.pop(key.fingerprint, None)


async def test_telethon_handshake(telethon_key: ServerKey) -> None:
    for _ in range(3):
        server = HandshakeServer([telethon_key], now=time.time())
        sender = FakePlainSender(server)
        auth_key, time_offset = await do_authentication(sender)
        (cand,) = sender.candidates
        assert auth_key.key == cand.auth_key
        assert auth_key.key_id == cand.auth_key_id & U64
        assert abs(time_offset) <= 1
        assert cand.expires_at is None and cand.dc_id is None


async def test_telethon_rejects_retry(telethon_key: ServerKey) -> None:
    """Telethon has no dh_gen_retry support; it must still accept our hash2 as genuine."""
    server = HandshakeServer([telethon_key], now=time.time())
    with pytest.raises(AssertionError, match="DhGenRetry"):
        await do_authentication(FakePlainSender(server, taken=True))
