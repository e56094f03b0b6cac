"""Server side of Telegram's 2FA: SRP-6a over the 2048-bit MTProto group (sans-IO).

Spec: https://core.telegram.org/api/srp. The server never sees the password:

* Setting a password: ``account.getPassword`` offers ``new_algo`` (server salts,
  g, p); the client appends 32 random bytes of its own to ``salt1``, computes
  ``x = PH2(password, salt1, salt2)`` and sends ``new_password_hash = g^x mod p``
  (the verifier ``v``) with that extended algo. :func:`accept_new_password` checks
  both and returns the :class:`StoredPassword` the user service persists.
* Checking it: ``account.getPassword`` carries ``srp_id`` and
  ``srp_B = k*v + g^b`` (:meth:`SrpSessions.start`); the client answers
  ``inputCheckPasswordSRP(srp_id, A, M1)`` and :meth:`SrpSessions.verify` redoes
  the proof with ``b``. Each ``srp_id`` is single use.

Every number that goes into a hash is big-endian, padded to 256 bytes. Nothing here
does I/O or keeps anything but the pending challenges, in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from teamgram.errors import RpcError, bad_request
from teamgram.mtproto.crypto.dh import DH_G, DH_PRIME, DH_PRIME_BYTES, check_g_b
from teamgram.mtproto.crypto.modexp import powmod
from teamgram.tl import TLObject, types

__all__ = [
    "CLIENT_SALT1_LEN",
    "MAX_SALT_LEN",
    "SALT2_LEN",
    "SECURE_SALT_LEN",
    "SERVER_SALT1_LEN",
    "SRP_G",
    "SRP_P",
    "SRP_P_BYTES",
    "KdfAlgo",
    "SrpChallenge",
    "SrpSessions",
    "StoredPassword",
    "accept_new_password",
    "account_password",
    "check_proof",
    "check_verifier",
    "new_algo",
    "new_challenge",
]

SRP_P = DH_PRIME
"""p: the MTProto DH prime, the one clients whitelist (Telethon, tdlib skip the
safe-prime test only for it)."""
SRP_P_BYTES = DH_PRIME_BYTES
SRP_G = DH_G
"""g = 3: a quadratic residue mod p (p mod 3 = 2), so it generates the prime-order subgroup."""

SERVER_SALT1_LEN = 8
"""Bytes of salt1 the server offers; the client appends CLIENT_SALT1_LEN more (as Telegram)."""
CLIENT_SALT1_LEN = 32
SALT2_LEN = 16
SECURE_SALT_LEN = 8
"""Server part of the Telegram Passport salt (the client extends it as for salt1)."""
MAX_SALT_LEN = 512
"""Upper bound on salts we store: anything longer is a broken or hostile client."""

_SIZE = 256  # 2048 bits: the width of every number that is hashed
_Q = (SRP_P - 1) // 2  # order of the subgroup g generates (p is a safe prime)


def _h(*parts: bytes) -> bytes:
    """H := sha256 over the concatenation."""
    d = hashlib.sha256()
    for part in parts:
        d.update(part)
    return d.digest()


def _pad(n: int) -> bytes:
    return n.to_bytes(_SIZE, "big")


_G_PADDED = _pad(SRP_G)
_K = int.from_bytes(_h(SRP_P_BYTES, _G_PADDED), "big")
"""k := H(p | g): the SRP-6a multiplier, fixed because p and g are."""
_PG_XOR = bytes(a ^ b for a, b in zip(_h(SRP_P_BYTES), _h(_G_PADDED), strict=True))
"""H(p) xor H(g): the first block of M1."""


# --------------------------------------------------------------------------- algo


@dataclass(frozen=True, slots=True)
class KdfAlgo:
    """passwordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow as plain data.

    A dataclass rather than the TL object so it can be persisted, compared and hashed.
    """

    salt1: bytes
    salt2: bytes
    g: int = SRP_G
    p: bytes = SRP_P_BYTES

    def to_tl(self) -> types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow:
        return types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            salt1=self.salt1, salt2=self.salt2, g=self.g, p=self.p
        )

    @classmethod
    def from_tl(cls, obj: TLObject) -> KdfAlgo:
        """Read a client's PasswordKdfAlgo: only the ModPow one is usable (NEW_SETTINGS_INVALID)."""
        if not isinstance(
            obj, types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow
        ):
            raise bad_request("NEW_SETTINGS_INVALID")
        return cls(salt1=obj.salt1, salt2=obj.salt2, g=obj.g, p=obj.p)


def new_algo() -> KdfAlgo:
    """The algo offered in account.password.new_algo: fresh server salts, our g and p.

    Only the server's part of salt1 (8 bytes, as Telegram): the spec has the *client*
    append 32 random bytes before hashing, so the stored salt1 mixes both sides'
    randomness and a weak client RNG alone cannot make two users' salts collide.
    """
    return KdfAlgo(salt1=os.urandom(SERVER_SALT1_LEN), salt2=os.urandom(SALT2_LEN))


# --------------------------------------------------------------------------- verifier


@dataclass(frozen=True, slots=True)
class StoredPassword:
    """What the user service persists for a set password: the client's final algo
    (salt1 with the client's 32 bytes) and the verifier v = g^x mod p (256 bytes)."""

    algo: KdfAlgo
    verifier: bytes = field(repr=False)


def check_verifier(new_password_hash: bytes) -> bool:
    """True if ``new_password_hash`` can be g^x mod p for some x.

    Beyond the spec's 256 bytes and 1 < v < p - 1, v must lie in the subgroup g
    generates (a quadratic residue): any other value matches no password, so storing
    it would lock the user out of their own account.
    """
    if len(new_password_hash) != _SIZE:
        return False
    v = int.from_bytes(new_password_hash, "big")
    return 1 < v < SRP_P - 1 and powmod(v, _Q, SRP_P) == 1


def _check_new_algo(algo: KdfAlgo, offered: KdfAlgo | None) -> None:
    if algo.g != SRP_G or algo.p != SRP_P_BYTES:
        raise bad_request("NEW_SETTINGS_INVALID")
    if len(algo.salt1) > MAX_SALT_LEN or len(algo.salt2) > MAX_SALT_LEN:
        raise bad_request("NEW_SALT_INVALID")
    if offered is None:
        # Stateless: we cannot tell which salts we offered, only that they look like ours.
        ok = len(algo.salt1) >= SERVER_SALT1_LEN + CLIENT_SALT1_LEN and len(algo.salt2) >= SALT2_LEN
    else:
        prefix = offered.salt1
        ok = (
            algo.salt1[: len(prefix)] == prefix
            and len(algo.salt1) >= len(prefix) + CLIENT_SALT1_LEN
            and algo.salt2 == offered.salt2
        )
    if not ok:
        raise bad_request("NEW_SALT_INVALID")


def accept_new_password(
    new_algo: TLObject | None,
    new_password_hash: bytes | None,
    *,
    offered: KdfAlgo | None = None,
) -> StoredPassword | None:
    """Validate the new_algo / new_password_hash of account.passwordInputSettings.

    Returns the password to persist, or None when the client asks to remove it (an
    empty hash, as the spec says; Telethon sends it with passwordKdfAlgoUnknown).
    ``offered`` is the new_algo this user was last offered, if the caller kept it:
    then salt1 must extend its salt1 and salt2 must be the same (NEW_SALT_INVALID),
    which stops a client from skipping the server's salt. Raises RpcError 400
    NEW_SETTINGS_INVALID for a foreign algo, g, p or a verifier no password can give.
    """
    if not new_password_hash:
        return None
    if new_algo is None:
        raise bad_request("NEW_SETTINGS_INVALID")
    algo = KdfAlgo.from_tl(new_algo)
    _check_new_algo(algo, offered)
    if not check_verifier(new_password_hash):
        raise bad_request("NEW_SETTINGS_INVALID")
    return StoredPassword(algo=algo, verifier=bytes(new_password_hash))


# --------------------------------------------------------------------------- SRP proof


@dataclass(frozen=True, slots=True)
class SrpChallenge:
    """One login attempt: the server's ephemeral secret b and what was sent for it.

    ``password`` is the snapshot B was computed from, so a password changed since
    getPassword is told apart (SRP_PASSWORD_CHANGED) instead of checked against v.
    """

    srp_id: int
    user_id: int
    password: StoredPassword
    B: bytes  # srp_B, 256 bytes
    expires_at: float
    b: int = field(repr=False)


def _new_srp_id() -> int:
    """A random TL long: srp_id must not be guessable, it names a pending secret."""
    return int.from_bytes(os.urandom(8), "little", signed=True)


def new_challenge(user_id: int, password: StoredPassword, *, expires_at: float) -> SrpChallenge:
    """Draw b and compute B = (k*v + g^b) mod p for one check of ``password``.

    Clients (Telethon, tdlib) recover g^b = B - k*v and refuse it unless it is at
    least 2^(2048-64) away from 0 and p, and refuse B outside (0, p): b is redrawn
    until both hold (a redraw happens with probability ~2^-63).
    """
    v = int.from_bytes(password.verifier, "big")
    kv = _K * v % SRP_P
    while True:
        b = int.from_bytes(os.urandom(_SIZE), "big")
        g_b = powmod(SRP_G, b, SRP_P)
        B = (kv + g_b) % SRP_P
        if check_g_b(g_b) and 0 < B < SRP_P:
            return SrpChallenge(
                srp_id=_new_srp_id(),
                user_id=user_id,
                password=password,
                B=_pad(B),
                expires_at=expires_at,
                b=b,
            )


def check_proof(challenge: SrpChallenge, A: bytes, M1: bytes) -> bool:
    """True if (A, M1) proves knowledge of the password behind ``challenge``.

    Rejects u = 0 and A outside [2^(2048-64), p - 2^(2048-64)]: that covers SRP-6a's
    A mod p != 0 (A = 0 or p forces S = 0, so M1 could be forged without the
    password) and is the margin honest clients draw A within (the MTProto DH rule).
    A shorter than 256 bytes is read as the same number left-padded; M1 is compared
    in constant time.
    """
    if not 0 < len(A) <= _SIZE:
        return False
    a_num = int.from_bytes(A, "big")
    if not check_g_b(a_num):
        return False
    a_pad = _pad(a_num)
    u = int.from_bytes(_h(a_pad, challenge.B), "big")
    if u == 0:
        return False
    v = int.from_bytes(challenge.password.verifier, "big")
    s = powmod(a_num * powmod(v, u, SRP_P) % SRP_P, challenge.b, SRP_P)
    k_b = _h(_pad(s))
    algo = challenge.password.algo
    expected = _h(_PG_XOR, _h(algo.salt1), _h(algo.salt2), a_pad, challenge.B, k_b)
    return hmac.compare_digest(expected, M1)


class SrpSessions:
    """Pending SRP challenges (srp_id -> b) between account.getPassword and the check.

    In memory, bounded and single use: each srp_id is consumed by its first check,
    right or wrong, so a captured (A, M1) cannot be replayed and a guess costs a new
    getPassword. Clients fetch account.password before each attempt (Telethon,
    tdlib) or re-fetch on SRP_ID_INVALID (tdesktop). ``clock`` is injectable for
    tests; the default is time.monotonic. Safe to call from several threads.
    """

    def __init__(
        self,
        *,
        ttl: float = 600.0,
        max_pending: int = 50_000,
        max_per_user: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_pending < 1 or max_per_user < 1:
            raise ValueError("ttl, max_pending and max_per_user must be positive")
        self._ttl = ttl
        self._max_pending = max_pending
        self._max_per_user = max_per_user
        self._clock = clock
        # A lock, not asyncio: the host may run the modexps in threads (gmpy2 drops the GIL).
        self._lock = threading.Lock()
        self._pending: dict[int, SrpChallenge] = {}  # insertion order = expiry order
        self._by_user: dict[int, deque[int]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, user_id: int, password: StoredPassword) -> SrpChallenge:
        """A fresh challenge for ``user_id``'s current password, remembered until used.

        The oldest pending one is dropped when the user (or everyone) has too many,
        so a flood of getPassword calls cannot grow memory or evict other users'.
        """
        challenge = new_challenge(user_id, password, expires_at=0.0)  # the slow part: unlocked
        with self._lock:
            now = self._clock()  # read under the lock: insertion order stays expiry order
            challenge = replace(challenge, expires_at=now + self._ttl)
            self._expire(now)
            while challenge.srp_id in self._pending:  # 2^-64, but never overwrite a secret
                challenge = replace(challenge, srp_id=_new_srp_id())
            ids = self._by_user.setdefault(user_id, deque())
            if len(ids) >= self._max_per_user:
                self._drop(ids[0])
            if len(self._pending) >= self._max_pending:
                self._drop(next(iter(self._pending)))
            self._pending[challenge.srp_id] = challenge
            self._by_user.setdefault(user_id, ids).append(challenge.srp_id)
        return challenge

    def verify(
        self, srp_id: int, A: bytes, M1: bytes, *, user_id: int, current: StoredPassword | None
    ) -> bool:
        """True if the proof is right for ``user_id``'s ``current`` password; consumes srp_id."""
        return self._outcome(srp_id, A, M1, user_id=user_id, current=current) is None

    def check(self, password: TLObject, *, user_id: int, current: StoredPassword | None) -> None:
        """Check an InputCheckPasswordSRP as received; raise RpcError 400 with Telegram's name.

        inputCheckPasswordEmpty passes only when no password is set. Errors:
        SRP_ID_INVALID (unknown, expired, used or another user's srp_id),
        SRP_PASSWORD_CHANGED (password set/changed/removed since getPassword),
        PASSWORD_HASH_INVALID (wrong password or malformed A/M1).
        """
        if isinstance(password, types.InputCheckPasswordEmpty):
            if current is not None:
                raise bad_request("PASSWORD_HASH_INVALID")
            return
        if not isinstance(password, types.InputCheckPasswordSRP):
            raise bad_request("PASSWORD_HASH_INVALID")
        error = self._outcome(
            password.srp_id, password.A, password.M1, user_id=user_id, current=current
        )
        if error is not None:
            raise error

    def forget_user(self, user_id: int) -> None:
        """Drop a user's pending challenges (e.g. right after their password changed)."""
        with self._lock:
            for srp_id in list(self._by_user.get(user_id, ())):
                self._drop(srp_id)

    def _outcome(
        self, srp_id: int, A: bytes, M1: bytes, *, user_id: int, current: StoredPassword | None
    ) -> RpcError | None:
        with self._lock:  # look up and consume at once: two racing checks get one challenge
            challenge = self._pending.get(srp_id)
            if challenge is None or challenge.user_id != user_id:
                # Another user's srp_id is left alone: guessing one must not burn it.
                return bad_request("SRP_ID_INVALID")
            self._drop(srp_id)
        if self._clock() >= challenge.expires_at:
            return bad_request("SRP_ID_INVALID")
        if challenge.password != current:
            return bad_request("SRP_PASSWORD_CHANGED")
        if not check_proof(challenge, A, M1):
            return bad_request("PASSWORD_HASH_INVALID")
        return None

    def _drop(self, srp_id: int) -> None:
        challenge = self._pending.pop(srp_id, None)
        if challenge is None:
            return
        ids = self._by_user.get(challenge.user_id)
        if ids is not None:
            ids.remove(srp_id)
            if not ids:
                del self._by_user[challenge.user_id]

    def _expire(self, now: float) -> None:
        """Drop expired challenges: they are the oldest, at the front (amortised O(1))."""
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.expires_at > now:
                return
            self._drop(oldest.srp_id)


# --------------------------------------------------------------------------- account.password


def account_password(
    challenge: SrpChallenge | None = None,
    *,
    offered: KdfAlgo | None = None,
    hint: str | None = None,
    has_recovery: bool = False,
    has_secure_values: bool = False,
    email_unconfirmed_pattern: str | None = None,
    pending_reset_date: int | None = None,
    login_email_pattern: str | None = None,
) -> types.account.Password:
    """account.password for getPassword: with ``challenge`` when a password is set.

    Always offers a new_algo (``offered``, or a fresh :func:`new_algo`; pass one in
    to keep it for :func:`accept_new_password`), a Passport algo with a fresh salt
    and 256 random bytes of secure_random (extra seed for clients with weak RNGs).
    """
    current_algo: TLObject | None = None
    srp_B: bytes | None = None
    srp_id: int | None = None
    if challenge is not None:
        current_algo = challenge.password.algo.to_tl()
        srp_B = challenge.B
        srp_id = challenge.srp_id
    return types.account.Password(
        new_algo=(offered or new_algo()).to_tl(),
        new_secure_algo=types.SecurePasswordKdfAlgoPBKDF2HMACSHA512iter100000(
            salt=os.urandom(SECURE_SALT_LEN)
        ),
        secure_random=os.urandom(_SIZE),
        has_recovery=has_recovery,
        has_secure_values=has_secure_values,
        has_password=challenge is not None,
        current_algo=current_algo,
        srp_B=srp_B,
        srp_id=srp_id,
        hint=hint,
        email_unconfirmed_pattern=email_unconfirmed_pattern,
        pending_reset_date=pending_reset_date,
        login_email_pattern=login_email_pattern,
    )
