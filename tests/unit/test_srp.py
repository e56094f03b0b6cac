"""Server-side SRP 2FA against an independent client: Telethon 1.45.0's ``password`` module.

Every exchange goes over the wire format: our account.password is serialized and read
back by Telethon, Telethon's answers (passwordInputSettings, inputCheckPasswordSRP) are
serialized and decoded by us. A small client written here from core.telegram.org/api/srp
forges the proofs Telethon would never send (A = 0, A = p...).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import gmpy2
import pytest

pytest.importorskip("telethon")

from telethon import password as tpw
from telethon.extensions import BinaryReader
from telethon.tl import types as tty

from teamgram.errors import RpcError
from teamgram.mtproto.crypto.dh import DH_PRIME, DH_PRIME_BYTES
from teamgram.mtproto.crypto.modexp import powmod
from teamgram.service.authsession.srp import (
    CLIENT_SALT1_LEN,
    SALT2_LEN,
    SECURE_SALT_LEN,
    SERVER_SALT1_LEN,
    SRP_G,
    SRP_P,
    SRP_P_BYTES,
    KdfAlgo,
    SrpChallenge,
    SrpSessions,
    StoredPassword,
    accept_new_password,
    account_password,
    check_proof,
    check_verifier,
    new_algo,
    new_challenge,
)
from teamgram.tl import TLObject, decode, types

USER = 777
OTHER = 778
PASSWORD = "correct horse battery staple ✓"
MARGIN = 1 << (2048 - 64)


# --------------------------------------------------------------------------- helpers


def to_telethon(obj: TLObject) -> Any:
    return BinaryReader(obj.to_bytes()).tgread_object()


def from_telethon(obj: Any) -> Any:
    return decode(bytes(obj))


def H(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def pad(n: int) -> bytes:
    return n.to_bytes(256, "big")


@cache
def spec_ph2(password: str, salt1: bytes, salt2: bytes) -> bytes:
    """PH2 exactly as the docs define it (independent of Telethon's helper); cached: slow."""

    def sh(data: bytes, salt: bytes) -> bytes:
        return H(salt, data, salt)

    ph1 = sh(sh(password.encode(), salt1), salt2)
    return sh(hashlib.pbkdf2_hmac("sha512", ph1, salt1, 100000), salt2)


def spec_m1(algo: KdfAlgo, a_pad: bytes, b_pad: bytes, s: int) -> bytes:
    pg = bytes(x ^ y for x, y in zip(H(algo.p), H(pad(algo.g)), strict=True))
    return H(pg, H(algo.salt1), H(algo.salt2), a_pad, b_pad, H(pad(s)))


def spec_client_proof(algo: KdfAlgo, password: str, srp_b: bytes, a: int) -> tuple[int, bytes]:
    """The client side of the docs for a chosen secret ``a``: returns (A, M1)."""
    p, g = int.from_bytes(algo.p, "big"), algo.g
    x = int.from_bytes(spec_ph2(password, algo.salt1, algo.salt2), "big")
    k = int.from_bytes(H(algo.p, pad(g)), "big")
    big_a = powmod(g, a, p)
    u = int.from_bytes(H(pad(big_a), srp_b), "big")
    t = (int.from_bytes(srp_b, "big") - k * powmod(g, x, p)) % p
    s = powmod(t, a + u * x, p)
    return big_a, spec_m1(algo, pad(big_a), srp_b, s)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def telethon_set_password(password: str, offered: KdfAlgo | None = None) -> tuple[Any, Any]:
    """What Telethon's edit_2fa sends for a new password: (new_algo, new_password_hash)."""
    offered = offered or new_algo()
    pwd = to_telethon(account_password(offered=offered))
    pwd.new_algo.salt1 += os.urandom(32)  # the client's part of salt1, as edit_2fa does
    digest = tpw.compute_digest(pwd.new_algo, password)
    settings = tty.account.PasswordInputSettings(
        new_algo=pwd.new_algo, new_password_hash=digest, hint="horse"
    )
    ours = from_telethon(settings)
    assert isinstance(ours, types.account.PasswordInputSettings)
    return ours.new_algo, ours.new_password_hash


@pytest.fixture(scope="module")
def stored() -> StoredPassword:
    """One password set through Telethon (PBKDF2 is slow: share it)."""
    offered = new_algo()
    algo, digest = telethon_set_password(PASSWORD, offered)
    result = accept_new_password(algo, digest, offered=offered)
    assert result is not None
    return result


def telethon_check(challenge: SrpChallenge, password: str) -> types.InputCheckPasswordSRP:
    """Telethon's answer to our account.password, decoded by us."""
    pwd = to_telethon(account_password(challenge, hint="horse"))
    answer = from_telethon(tpw.compute_check(pwd, password))
    assert isinstance(answer, types.InputCheckPasswordSRP)
    return answer


def error_of(sessions: SrpSessions, check: TLObject, current: StoredPassword | None) -> str | None:
    try:
        sessions.check(check, user_id=USER, current=current)
    except RpcError as exc:
        assert exc.code == 400
        return exc.message
    return None


# --------------------------------------------------------------------------- group


def test_group_is_telegrams() -> None:
    assert SRP_P == DH_PRIME and SRP_P_BYTES == DH_PRIME_BYTES and SRP_G == 3
    assert len(SRP_P_BYTES) == 256 and SRP_P.bit_length() == 2048
    tpw.check_prime_and_good(SRP_P_BYTES, SRP_G)  # Telethon's whitelist
    # Safe prime, and 3 is a quadratic residue (p mod 3 = 2), as the docs ask clients to check.
    assert gmpy2.is_prime(SRP_P, 50) and gmpy2.is_prime((SRP_P - 1) // 2, 50)
    assert SRP_P % 3 == 2 and pow(SRP_G, (SRP_P - 1) // 2, SRP_P) == 1


# --------------------------------------------------------------------------- account.password


def test_account_password_without_password() -> None:
    ours = account_password()
    assert not ours.has_password
    assert ours.current_algo is None and ours.srp_B is None and ours.srp_id is None
    assert len(ours.secure_random) == 256
    algo = ours.new_algo
    assert isinstance(algo, types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow)
    assert len(algo.salt1) == SERVER_SALT1_LEN and len(algo.salt2) == SALT2_LEN
    assert algo.g == SRP_G and algo.p == SRP_P_BYTES
    secure = ours.new_secure_algo
    assert isinstance(secure, types.SecurePasswordKdfAlgoPBKDF2HMACSHA512iter100000)
    assert len(secure.salt) == SECURE_SALT_LEN

    t = to_telethon(ours)
    assert isinstance(t, tty.account.Password)
    assert not t.has_password and t.srp_B is None
    assert t.new_algo.salt1 == algo.salt1 and t.new_algo.p == SRP_P_BYTES
    assert t.secure_random == ours.secure_random
    # Fresh randomness on each call.
    again = account_password()
    assert again.new_algo != algo and again.secure_random != ours.secure_random


def test_account_password_with_password(stored: StoredPassword) -> None:
    offered = new_algo()
    challenge = new_challenge(USER, stored, expires_at=0.0)
    ours = account_password(
        challenge,
        offered=offered,
        hint="horse",
        has_recovery=True,
        email_unconfirmed_pattern="a***@example.com",
    )
    t = to_telethon(ours)
    assert t.has_password and t.has_recovery
    assert t.srp_id == challenge.srp_id and t.srp_B == challenge.B
    assert t.hint == "horse" and t.email_unconfirmed_pattern == "a***@example.com"
    assert t.current_algo.salt1 == stored.algo.salt1
    assert t.current_algo.salt2 == stored.algo.salt2
    assert t.new_algo.salt1 == offered.salt1
    assert from_telethon(t) == ours


# --------------------------------------------------------------------------- setting a password


def test_new_password_roundtrips_through_telethon_compute_hash() -> None:
    offered = new_algo()
    algo_tl, digest = telethon_set_password(PASSWORD, offered)
    result = accept_new_password(algo_tl, digest, offered=offered)
    assert result is not None
    algo = result.algo
    # The client extended the offered salt1 by 32 bytes; salt2, g, p are as offered.
    assert algo.salt1[:SERVER_SALT1_LEN] == offered.salt1
    assert len(algo.salt1) == SERVER_SALT1_LEN + CLIENT_SALT1_LEN
    assert (algo.salt2, algo.g, algo.p) == (offered.salt2, offered.g, offered.p)
    # Telethon's x is the spec's PH2, and the verifier is g^x padded to 256 bytes.
    x = tpw.compute_hash(algo.to_tl(), PASSWORD)  # type: ignore[arg-type]
    assert x == spec_ph2(PASSWORD, algo.salt1, algo.salt2)
    assert result.verifier == pad(pow(SRP_G, int.from_bytes(x, "big"), SRP_P))
    assert check_verifier(result.verifier)


def test_remove_password() -> None:
    assert accept_new_password(types.PasswordKdfAlgoUnknown(), b"") is None
    assert accept_new_password(None, None) is None


def _valid_v() -> bytes:
    return pad(powmod(SRP_G, int.from_bytes(os.urandom(32), "big"), SRP_P))


@pytest.mark.parametrize(
    "verifier",
    [
        pad(0),
        pad(1),
        pad(SRP_P - 1),
        pad(SRP_P),
        b"\xff" * 256,
        b"\x01" * 255,
        b"\x00" + b"\x01" * 256,
        b"",
    ],
)
def test_verifier_out_of_range(verifier: bytes) -> None:
    assert not check_verifier(verifier)


def test_verifier_must_be_in_g_subgroup() -> None:
    v = _valid_v()
    assert check_verifier(v)
    # p = 3 (mod 4), so -1 is a non-residue: p - v is no power of g.
    assert not check_verifier(pad(SRP_P - int.from_bytes(v, "big")))


def _algo_tl(offered: KdfAlgo, **changes: Any) -> TLObject:
    fields: dict[str, Any] = {
        "salt1": offered.salt1 + os.urandom(CLIENT_SALT1_LEN),
        "salt2": offered.salt2,
        "g": offered.g,
        "p": offered.p,
    }
    fields.update(changes)
    return types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(**fields)


def test_new_settings_accepted_with_and_without_offered() -> None:
    offered = new_algo()
    got = accept_new_password(_algo_tl(offered), _valid_v(), offered=offered)
    assert got is not None
    assert accept_new_password(_algo_tl(offered), _valid_v()) is not None  # stateless mode


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"g": 2}, "NEW_SETTINGS_INVALID"),
        ({"p": bytes(reversed(DH_PRIME_BYTES))}, "NEW_SETTINGS_INVALID"),
        ({"salt1": os.urandom(SERVER_SALT1_LEN + CLIENT_SALT1_LEN)}, "NEW_SALT_INVALID"),
        ({"salt1": b""}, "NEW_SALT_INVALID"),
        ("short_suffix", "NEW_SALT_INVALID"),
        ({"salt2": os.urandom(SALT2_LEN)}, "NEW_SALT_INVALID"),
        ("huge_salt", "NEW_SALT_INVALID"),
    ],
)
def test_new_settings_rejected(change: Any, error: str) -> None:
    offered = new_algo()
    if change == "short_suffix":
        change = {"salt1": offered.salt1 + os.urandom(CLIENT_SALT1_LEN - 1)}
    elif change == "huge_salt":
        change = {"salt1": offered.salt1 + os.urandom(4096)}
    with pytest.raises(RpcError) as exc:
        accept_new_password(_algo_tl(offered, **change), _valid_v(), offered=offered)
    assert exc.value.code == 400 and exc.value.message == error


def test_new_settings_stateless_salt_lengths() -> None:
    offered = new_algo()
    with pytest.raises(RpcError, match="NEW_SALT_INVALID"):
        accept_new_password(_algo_tl(offered, salt1=offered.salt1), _valid_v())
    with pytest.raises(RpcError, match="NEW_SALT_INVALID"):
        accept_new_password(_algo_tl(offered, salt2=b"x"), _valid_v())


def test_new_settings_rejects_bad_algo_and_verifier() -> None:
    offered = new_algo()
    with pytest.raises(RpcError, match="NEW_SETTINGS_INVALID"):
        accept_new_password(types.PasswordKdfAlgoUnknown(), _valid_v(), offered=offered)
    with pytest.raises(RpcError, match="NEW_SETTINGS_INVALID"):
        accept_new_password(None, _valid_v(), offered=offered)
    with pytest.raises(RpcError, match="NEW_SETTINGS_INVALID"):
        accept_new_password(_algo_tl(offered), pad(1), offered=offered)


# --------------------------------------------------------------------------- checking it


def test_challenge_values_satisfy_client_checks(stored: StoredPassword) -> None:
    k = int.from_bytes(H(SRP_P_BYTES, pad(SRP_G)), "big")
    v = int.from_bytes(stored.verifier, "big")
    ids = set()
    for _ in range(5):
        ch = new_challenge(USER, stored, expires_at=0.0)
        big_b = int.from_bytes(ch.B, "big")
        assert len(ch.B) == 256 and 0 < big_b < SRP_P
        g_b = (big_b - k * v) % SRP_P
        assert g_b == pow(SRP_G, ch.b, SRP_P)
        assert tpw.is_good_mod_exp_first(g_b, SRP_P)
        # The secrets never show in logs: neither b nor the verifier is in the repr.
        assert str(ch.b) not in repr(ch) and repr(ch.password.verifier) not in repr(ch)
        ids.add(ch.srp_id)
        assert -(1 << 63) <= ch.srp_id < (1 << 63)
    assert len(ids) == 5


def test_right_password_is_accepted(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    challenge = sessions.start(USER, stored)
    answer = telethon_check(challenge, PASSWORD)
    assert len(answer.A) == 256 and len(answer.M1) == 32
    assert sessions.verify(answer.srp_id, answer.A, answer.M1, user_id=USER, current=stored)
    assert len(sessions) == 0

    challenge = sessions.start(USER, stored)
    assert error_of(sessions, telethon_check(challenge, PASSWORD), stored) is None


def test_wrong_password_is_rejected(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    challenge = sessions.start(USER, stored)
    answer = telethon_check(challenge, PASSWORD + "!")
    assert not sessions.verify(answer.srp_id, answer.A, answer.M1, user_id=USER, current=stored)

    challenge = sessions.start(USER, stored)
    assert error_of(sessions, telethon_check(challenge, "hunter2"), stored) == (
        "PASSWORD_HASH_INVALID"
    )


def test_srp_id_is_single_use(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    challenge = sessions.start(USER, stored)
    answer = telethon_check(challenge, PASSWORD)
    assert error_of(sessions, answer, stored) is None
    assert error_of(sessions, answer, stored) == "SRP_ID_INVALID"  # replayed
    assert not sessions.verify(answer.srp_id, answer.A, answer.M1, user_id=USER, current=stored)


def test_failed_attempt_burns_srp_id(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    challenge = sessions.start(USER, stored)
    wrong = telethon_check(challenge, "guess")
    assert error_of(sessions, wrong, stored) == "PASSWORD_HASH_INVALID"
    # The right proof for the same srp_id no longer counts: one guess per getPassword.
    a, m1 = spec_client_proof(stored.algo, PASSWORD, challenge.B, int.from_bytes(os.urandom(256)))
    assert not sessions.verify(challenge.srp_id, pad(a), m1, user_id=USER, current=stored)


def test_tampered_m1_is_rejected(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    for tamper in (
        lambda m: bytes([m[0] ^ 1]) + m[1:],
        lambda m: m[:-1],
        lambda m: m + b"\x00",
        lambda m: b"",
    ):
        challenge = sessions.start(USER, stored)
        answer = telethon_check(challenge, PASSWORD)
        assert not sessions.verify(
            answer.srp_id, answer.A, tamper(answer.M1), user_id=USER, current=stored
        )


def test_proof_for_another_challenge_is_rejected(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    first = sessions.start(USER, stored)
    second = sessions.start(USER, stored)
    answer = telethon_check(first, PASSWORD)
    assert not sessions.verify(second.srp_id, answer.A, answer.M1, user_id=USER, current=stored)


@pytest.mark.parametrize("big_a", [0, SRP_P])
def test_a_zero_mod_p_is_rejected(stored: StoredPassword, big_a: int) -> None:
    """A = 0 (mod p) forces S = 0, so M1 can be forged without the password; refuse it."""
    sessions = SrpSessions()
    challenge = sessions.start(USER, stored)
    forged_m1 = spec_m1(stored.algo, pad(big_a), challenge.B, 0)
    assert not sessions.verify(
        challenge.srp_id, pad(big_a), forged_m1, user_id=USER, current=stored
    )


@pytest.mark.parametrize(
    "big_a",
    [1, 2, SRP_P - 1, SRP_P + 1, MARGIN - 1, SRP_P - MARGIN + 1, (1 << 2048) - 1],
)
def test_a_out_of_range_is_rejected(stored: StoredPassword, big_a: int) -> None:
    sessions = SrpSessions()
    challenge = sessions.start(USER, stored)
    answer = telethon_check(challenge, PASSWORD)
    assert not sessions.verify(
        challenge.srp_id, pad(big_a), answer.M1, user_id=USER, current=stored
    )


@pytest.mark.parametrize("a_bytes", [b"", b"\x00" * 257, b"\x01" + bytes(256)])
def test_a_bad_length_is_rejected(stored: StoredPassword, a_bytes: bytes) -> None:
    challenge = new_challenge(USER, stored, expires_at=0.0)
    assert not check_proof(challenge, a_bytes, b"\x00" * 32)


def test_spec_client_agrees_and_short_a_is_padded(stored: StoredPassword) -> None:
    """Our spec client matches Telethon; an A sent without leading zero bytes still works."""
    challenge = new_challenge(USER, stored, expires_at=0.0)
    a, m1 = spec_client_proof(stored.algo, PASSWORD, challenge.B, int.from_bytes(os.urandom(256)))
    assert check_proof(challenge, pad(a), m1)
    while True:  # ~1 in 256 secrets gives an A whose top byte is zero (within the margin)
        secret = int.from_bytes(os.urandom(256))
        big_a = powmod(SRP_G, secret, SRP_P)
        if big_a < 1 << 2040 and big_a >= MARGIN:
            break
    a, m1 = spec_client_proof(stored.algo, PASSWORD, challenge.B, secret)
    short = a.to_bytes((a.bit_length() + 7) // 8, "big")
    assert len(short) < 256
    assert check_proof(challenge, short, m1)
    assert check_proof(challenge, pad(a), m1)


def test_other_users_srp_id_is_refused_and_not_burned(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    challenge = sessions.start(USER, stored)
    answer = telethon_check(challenge, PASSWORD)
    try:
        sessions.check(answer, user_id=OTHER, current=stored)
    except RpcError as exc:
        assert exc.message == "SRP_ID_INVALID"
    else:  # pragma: no cover
        pytest.fail("another user's srp_id was accepted")
    assert sessions.verify(answer.srp_id, answer.A, answer.M1, user_id=USER, current=stored)


def test_expired_srp_id(stored: StoredPassword) -> None:
    clock = FakeClock()
    sessions = SrpSessions(ttl=60.0, clock=clock)
    challenge = sessions.start(USER, stored)
    answer = telethon_check(challenge, PASSWORD)
    clock.now += 60.0
    assert error_of(sessions, answer, stored) == "SRP_ID_INVALID"
    # Expired ones are also swept when a new challenge is made.
    sessions.start(USER, stored)
    clock.now += 61.0
    sessions.start(OTHER, stored)
    assert len(sessions) == 1


def test_password_changed_since_get_password(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    changed = StoredPassword(algo=stored.algo, verifier=_valid_v())
    challenge = sessions.start(USER, stored)
    answer = telethon_check(challenge, PASSWORD)
    assert error_of(sessions, answer, changed) == "SRP_PASSWORD_CHANGED"
    challenge = sessions.start(USER, stored)
    answer = telethon_check(challenge, PASSWORD)
    assert error_of(sessions, answer, None) == "SRP_PASSWORD_CHANGED"  # password removed
    challenge = sessions.start(USER, stored)
    sessions.forget_user(USER)
    assert error_of(sessions, telethon_check(challenge, PASSWORD), stored) == "SRP_ID_INVALID"


def test_input_check_password_empty(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    assert error_of(sessions, types.InputCheckPasswordEmpty(), None) is None
    assert error_of(sessions, types.InputCheckPasswordEmpty(), stored) == "PASSWORD_HASH_INVALID"
    assert error_of(sessions, types.InputCheckPasswordSRP(srp_id=1, A=b"", M1=b""), None) == (
        "SRP_ID_INVALID"
    )


def test_pending_challenges_are_bounded(stored: StoredPassword) -> None:
    sessions = SrpSessions(max_pending=5, max_per_user=3)
    first = sessions.start(USER, stored)
    mine = [sessions.start(USER, stored) for _ in range(3)]
    assert len(sessions) == 3  # the user's oldest was dropped
    assert not sessions.verify(first.srp_id, b"", b"", user_id=USER, current=stored)
    others = [sessions.start(OTHER, stored) for _ in range(3)]
    assert len(sessions) == 5  # global cap: the oldest pending overall went
    assert error_of(sessions, types.InputCheckPasswordSRP(mine[0].srp_id, b"", b""), stored) == (
        "SRP_ID_INVALID"
    )
    answer = telethon_check(mine[-1], PASSWORD)
    assert sessions.verify(answer.srp_id, answer.A, answer.M1, user_id=USER, current=stored)
    answer = telethon_check(others[-1], PASSWORD)
    assert sessions.verify(answer.srp_id, answer.A, answer.M1, user_id=OTHER, current=stored)


def test_racing_checks_consume_one_challenge(stored: StoredPassword) -> None:
    sessions = SrpSessions()
    answer = telethon_check(sessions.start(USER, stored), PASSWORD)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda _: sessions.verify(
                    answer.srp_id, answer.A, answer.M1, user_id=USER, current=stored
                ),
                range(16),
            )
        )
    assert results.count(True) == 1


@pytest.mark.parametrize("kwargs", [{"ttl": 0.0}, {"max_pending": 0}, {"max_per_user": 0}])
def test_sessions_reject_nonsense_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SrpSessions(**kwargs)
